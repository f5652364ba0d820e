//! API keys (docs/contract.md steps 7 and 8): a configured prefix and >= 128 random bits, looked up by SHA-256
//! digest. Only digests are ever held; the key itself is hashed and dropped.

use super::claim_set::Claims;
use super::reason::{Deny, DenyReason};
use super::types::{IssuerId, UnixTime, VerifiedToken};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;

/// The `iss` of every API-key identity (revocations by subject and memberships use it).
pub const API_KEY_ISSUER: &str = "urn:portcullis:api-key";

/// The placeholder issuer index of API-key identities (they have no entry in `Policy::issuers`).
pub const API_KEY_ISSUER_ID: IssuerId = IssuerId(usize::MAX);

/// Fewest characters after the prefix: 22 base64url characters carry 132 bits.
pub const MIN_KEY_CHARS: usize = 22;
const MAX_KEY_CHARS: usize = 256;

/// A SHA-256 digest of an API key.
pub type KeyDigest = [u8; 32];

/// What a key proves. Loaded from the key file or the state backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// Unique name; what audit events and revocations use.
    pub name: String,
    pub subject: String,
    /// Tenants this key is a member of.
    pub tenants: Vec<String>,
    pub scopes: Vec<String>,
    pub roles: Vec<String>,
    /// Unix seconds; `None` never expires.
    pub expires: Option<i64>,
}

#[derive(Debug, Clone, Default)]
pub struct ApiKeyPolicy {
    /// Lowercase header carrying the key.
    pub header: String,
    pub prefix: String,
    /// Keys from `credentials.api_keys.file`, by digest.
    pub file_keys: HashMap<KeyDigest, Arc<ApiKey>>,
}

/// Keys added and keys revoked at run time (admin API, Redis); local reads only.
pub trait ApiKeyCheck {
    fn find(&self, digest: &KeyDigest) -> Option<Arc<ApiKey>>;
    /// A revocation holds the key's digest, so a revoked key stays revoked under any name;
    /// `name` matches revocations recorded by name before digests were kept.
    fn revoked(&self, digest: &KeyDigest, name: &str) -> bool;
}

pub struct NoApiKeys;

impl ApiKeyCheck for NoApiKeys {
    fn find(&self, _digest: &KeyDigest) -> Option<Arc<ApiKey>> {
        None
    }

    fn revoked(&self, _digest: &KeyDigest, _name: &str) -> bool {
        false
    }
}

pub fn digest(key: &str) -> KeyDigest {
    Sha256::digest(key.as_bytes()).into()
}

/// Why a value is not shaped like one of our keys, if it is not.
pub fn shape_problem(prefix: &str, value: &str) -> Option<&'static str> {
    if value.starts_with("eyJ") && value.contains('.') {
        return Some("a JWT is not an API key (send it as Authorization: Bearer)");
    }
    let Some(body) = value.strip_prefix(prefix) else {
        return Some("API key without the configured prefix");
    };
    if !(MIN_KEY_CHARS..=MAX_KEY_CHARS).contains(&body.len()) {
        return Some("API key of the wrong length");
    }
    if !body.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_')) {
        return Some("API key with characters outside base64url");
    }
    None
}

/// A refused key, with the key's name when it was one of ours (for the audit event).
pub type KeyRefusal = (Deny, Option<String>);

/// Authenticates an API key into the identity the rest of the request path works on.
pub fn authenticate(
    policy: &ApiKeyPolicy,
    store: &dyn ApiKeyCheck,
    value: &str,
    now: UnixTime,
) -> Result<(VerifiedToken, Arc<ApiKey>), KeyRefusal> {
    if let Some(problem) = shape_problem(&policy.prefix, value) {
        return Err((Deny::bad_credential(DenyReason::ApiKeyInvalid, problem), None));
    }
    let digest = digest(value);
    let Some(key) = policy.file_keys.get(&digest).cloned().or_else(|| store.find(&digest)) else {
        return Err((Deny::bad_credential(DenyReason::ApiKeyInvalid, "unknown API key"), None));
    };
    let refuse = |why: &str| Err((Deny::new(DenyReason::ApiKeyInvalid, why), Some(key.name.clone())));
    if store.revoked(&digest, &key.name) {
        return refuse("API key revoked");
    }
    if key.expires.is_some_and(|at| now.0 >= at) {
        return refuse("API key expired");
    }
    let claims = serde_json::json!({
        "iss": API_KEY_ISSUER,
        "sub": key.subject,
        "scope": key.scopes.join(" "),
        "roles": key.roles,
        "api_key": key.name,
    });
    // A subject no token could carry (empty, or past 4 GiB) is no identity: refused.
    let Ok(claims) = Claims::for_token(API_KEY_ISSUER, &key.subject, claims) else {
        return refuse("API key subject unusable");
    };
    let token = VerifiedToken {
        issuer: API_KEY_ISSUER_ID,
        claims,
        exp: key.expires.unwrap_or(i64::MAX),
        nbf: None.into(),
        iat: None.into(),
        key_generation: 0,
        values_for: None,
    };
    Ok((token, key))
}
