//! Development mode: an embedded policy, a dev key set and a token minter, so a newcomer sees
//! an allow and a deny within a minute. The dev issuer is refused unless a policy says `dev: true`.

pub mod explain;
pub mod flood;
pub mod policytest;
mod policytest_dpop;
pub mod request;

use crate::config::{ConfigError, DEV_ISSUER, Settings, parse_and_validate};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use std::path::Path;

/// The embedded development policy.
pub const POLICY: &str = include_str!("policy.yaml");
/// The development signing key. Public in this repository by design: dev tokens prove nothing.
const SIGNING_KEY: &str = include_str!("dev-ed25519.pem");
const KID: &str = "dev-1";
pub const AUDIENCE: &str = "dev-api";

#[derive(Debug, thiserror::Error)]
pub enum DevError {
    #[error("dev signing key unusable: {0}")]
    Key(jsonwebtoken::errors::Error),
    #[error("cannot sign: {0}")]
    Sign(jsonwebtoken::errors::Error),
}

/// What a minted dev token says.
#[derive(Debug, Clone)]
pub struct DevToken {
    pub subject: String,
    pub scopes: Vec<String>,
    pub roles: Vec<String>,
    pub ttl_secs: i64,
}

/// The embedded policy, validated like any other.
pub fn settings() -> Result<Settings, ConfigError> {
    parse_and_validate(POLICY, Path::new("."))
}

/// Signs a dev token valid from `now` for `ttl_secs`.
pub fn mint(token: &DevToken, now: i64) -> Result<String, DevError> {
    let key = EncodingKey::from_ed_pem(SIGNING_KEY.as_bytes()).map_err(DevError::Key)?;
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(KID.to_string());
    let claims = serde_json::json!({
        "iss": DEV_ISSUER,
        "aud": AUDIENCE,
        "sub": token.subject,
        "iat": now,
        "exp": now + token.ttl_secs,
        "jti": format!("dev-{now}-{}", token.subject),
        "token_use": "access",
        "scope": token.scopes.join(" "),
        "roles": token.roles,
    });
    jsonwebtoken::encode(&header, &claims, &key).map_err(DevError::Sign)
}
