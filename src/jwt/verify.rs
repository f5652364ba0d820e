//! The verifier: compact JWS parsing, key selection, signature, issuer, audience, token type and
//! required claims. Time claims are checked by the core (`crate::decision::check_times`).

use super::alg::Alg;
use super::header::{normalize_typ, parse_header};
use super::store::KeyStore;
use crate::decision::{IssuerId, TokenError, TokenVerifier, VerifiedToken, pack_token};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};
use std::sync::Arc;

/// Signature verifications by configured issuer and result (`ok`, `bad_signature`).
pub const VERIFICATIONS_TOTAL: &str = "portcullis_jwt_verifications_total";

/// `token_type: { claim, allowed }`: the claim must be present and one of `allowed`.
#[derive(Debug, Clone)]
pub struct TokenType {
    pub claim: String,
    pub allowed: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct IssuerVerifier {
    pub issuer: Arc<str>,
    pub audiences: Vec<String>,
    pub algorithms: Vec<Alg>,
    pub keys: Arc<KeyStore>,
    /// Readiness waits for this issuer's keys.
    pub required: bool,
    /// Claims that must be present (`sub` and `exp` always are).
    pub required_claims: Vec<String>,
    pub token_type: Option<TokenType>,
    /// Normalized allowed JOSE `typ` values; empty means any.
    pub header_typ: Vec<String>,
    /// `envoy_jwt_authn`: the keys under which Envoy's `jwt_authn` forwards the payload and the
    /// header it verified, taken instead of a signature check here (`verify_attested`).
    pub jwt_authn_payload: Option<JwtAuthnKeys>,
    /// Everything a verification by this issuer depends on besides its keys (the settings
    /// above; the keys are the store's generation): a cached token verified by it is served
    /// only while both are unchanged, so a reload that leaves the issuer alone keeps it.
    pub fingerprint: u64,
}

/// Where Envoy's `jwt_authn` writes what it verified (`payload_in_metadata`,
/// `header_in_metadata`).
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct JwtAuthnKeys {
    pub payload: String,
    pub header: String,
}

/// All configured issuers, selected by the token's exact `iss`.
#[derive(Debug, Clone, Default)]
pub struct Verifier {
    pub issuers: Vec<IssuerVerifier>,
    /// The claims a verified token keeps (sorted; [`crate::decision::Policy::claims_read`]):
    /// the policy reads no others, and the claims cache holds no others. `None` keeps all.
    pub kept_claims: Option<Arc<[String]>>,
    /// The policy's identity headers: their values are encoded at verification and packed with
    /// the token (`None`: worked out on each allow).
    pub identity_headers: Option<Arc<[crate::decision::IdentityHeader]>>,
}

impl Verifier {
    /// Every issuer's fingerprint and key-set generation together (what a failed verification
    /// depends on: a rotation of static keys must not leave a "bad signature" remembered).
    pub fn fingerprint(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for issuer in &self.issuers {
            (issuer.fingerprint, issuer.keys.generation()).hash(&mut h);
        }
        h.finish()
    }

    /// The issuer named `iss` now, with its fingerprint.
    pub fn find(&self, iss: &str) -> Option<(IssuerId, &IssuerVerifier)> {
        self.issuers.iter().enumerate().find(|(_, i)| *i.issuer == *iss).map(|(n, i)| (IssuerId(n), i))
    }

    /// Required issuers that have never had usable keys (readiness waits for them), and those
    /// whose keys were dropped past `max_stale` (named, but no reason to take the replica out:
    /// every replica loses them together, and public or API-key routes still work).
    pub fn issuers_without_keys(&self) -> (Vec<Arc<str>>, Vec<Arc<str>>) {
        let (mut never, mut dropped) = (Vec::new(), Vec::new());
        for i in self.issuers.iter().filter(|i| i.required && !i.keys.has_keys()) {
            if i.keys.confirmed_at() > 0 { dropped.push(i.issuer.clone()) } else { never.push(i.issuer.clone()) }
        }
        (never, dropped)
    }

    pub fn store(&self, issuer: IssuerId) -> Option<&Arc<KeyStore>> {
        self.issuers.get(issuer.0).map(|i| &i.keys)
    }
}

fn is_b64url(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn decode_segment(segment: &str) -> Result<Vec<u8>, TokenError> {
    URL_SAFE_NO_PAD.decode(segment).map_err(|_| TokenError::Malformed("segment is not base64url"))
}

/// A NumericDate claim: a JSON number (never a string), truncated to whole seconds.
fn numeric_date(claims: &Map<String, Value>, name: &str) -> Result<Option<i64>, TokenError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
            .map(Some)
            .ok_or_else(|| TokenError::Claims(format!("{name} is not a valid NumericDate"))),
        Some(_) => Err(TokenError::Claims(format!("{name} is not a number"))),
    }
}

fn audience_matches(claims: &Map<String, Value>, audiences: &[String]) -> bool {
    match claims.get("aud") {
        Some(Value::String(s)) => audiences.iter().any(|a| a == s),
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).any(|s| audiences.iter().any(|a| a == s)),
        _ => false,
    }
}

impl IssuerVerifier {
    fn check_claims(&self, claims: &Map<String, Value>) -> Result<(), TokenError> {
        if !audience_matches(claims, &self.audiences) {
            return Err(TokenError::Claims("audience not accepted".into()));
        }
        for name in ["sub", "exp"].iter().copied().chain(self.required_claims.iter().map(String::as_str)) {
            if claims.get(name).is_none_or(Value::is_null) {
                return Err(TokenError::Claims(format!("required claim {name} missing")));
            }
        }
        if let Some(tt) = &self.token_type {
            match claims.get(&tt.claim) {
                Some(Value::String(v)) if tt.allowed.iter().any(|a| a == v) => {}
                Some(_) => {
                    return Err(TokenError::Claims(format!("token type ({}) not accepted", tt.claim)));
                }
                None => {
                    return Err(TokenError::Claims(format!("token type claim {} missing", tt.claim)));
                }
            }
        }
        Ok(())
    }
}

/// Whose word a token's signature is taken on.
#[derive(Clone, Copy)]
enum Signature<'a> {
    /// Checked here against the issuer's keys.
    Checked,
    /// Envoy's `jwt_authn` verified it and forwarded this payload, found under the issuer's
    /// `envoy_jwt_authn` key; the token's own payload must be the same.
    Attested(&'a [(String, Map<String, Value>)]),
}

/// Largest integer a double holds exactly: Envoy's `Struct` carries every number as one.
const EXACT_IN_DOUBLE: u64 = 1 << 53;

/// `token` (from the token) and `forwarded` (from Envoy's `Struct`) are the same document: the
/// same members with the same values. A number in the token counts only when a double holds
/// it exactly (an integer up to 2^53): `9007199254740993` and `...992` are one double, and the
/// upstream would be told the one nobody verified. Such a token is not attested, so it is
/// verified here.
fn same_document(token: &Value, forwarded: &Value) -> bool {
    match (token, forwarded) {
        (Value::Number(x), Value::Number(y)) => {
            let exact =
                x.as_u64().map(|n| n <= EXACT_IN_DOUBLE).or(x.as_i64().map(|n| n.unsigned_abs() <= EXACT_IN_DOUBLE));
            exact == Some(true) && x.as_f64() == y.as_f64()
        }
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_document(x, y)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same_document(v, w)))
        }
        _ => token == forwarded,
    }
}

impl Verifier {
    /// `token` verified on the word of Envoy's `jwt_authn` (`attested`: its forwarded payloads
    /// by metadata key): only for an issuer whose `envoy_jwt_authn` names a key holding this
    /// token's own payload; then every check but the signature runs as in `verify`. `None`:
    /// not attested, and the caller verifies `token` itself.
    pub fn verify_attested(
        &self,
        token: &str,
        attested: &[(String, Map<String, Value>)],
    ) -> Option<Result<VerifiedToken, TokenError>> {
        if attested.is_empty() || self.issuers.iter().all(|i| i.jwt_authn_payload.is_none()) {
            return None;
        }
        match self.verify_as(token, Signature::Attested(attested)) {
            Ok(token) => Some(Ok(token)),
            Err(Refusal::NotAttested) => None,
            Err(Refusal::Token(e)) => Some(Err(e)),
        }
    }
}

/// Why `verify_as` returned no token.
enum Refusal {
    /// Asked to take `jwt_authn`'s word, there was none for this token and issuer.
    NotAttested,
    Token(TokenError),
}

impl From<TokenError> for Refusal {
    fn from(e: TokenError) -> Self {
        Refusal::Token(e)
    }
}

impl TokenVerifier for Verifier {
    fn verify(&self, token: &str) -> Result<VerifiedToken, TokenError> {
        self.verify_as(token, Signature::Checked).map_err(|refusal| match refusal {
            Refusal::Token(e) => e,
            // Only asked for an attested token; a checked one is never "not attested".
            Refusal::NotAttested => TokenError::Malformed("not verified"),
        })
    }
}

impl Verifier {
    fn verify_as(&self, token: &str, signature: Signature<'_>) -> Result<VerifiedToken, Refusal> {
        let mut parts = token.split('.');
        let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed("not a compact JWS").into());
        };
        if header_b64.is_empty() || payload_b64.is_empty() || signature_b64.is_empty() {
            return Err(TokenError::Malformed("empty segment").into());
        }
        if !is_b64url(header_b64) || !is_b64url(payload_b64) || !is_b64url(signature_b64) {
            return Err(TokenError::Malformed("segment is not base64url").into());
        }
        let header = parse_header(&decode_segment(header_b64)?)?;
        let claims: Map<String, Value> = super::json::unique_object(&decode_segment(payload_b64)?)
            .ok_or(TokenError::Malformed("payload is not a JSON object with unique member names"))?;

        // Unverified iss selects the issuer (and so the keys); nothing else is read before the
        // signature holds.
        let iss = claims.get("iss").and_then(Value::as_str).ok_or_else(|| TokenError::Claims("iss missing".into()))?;
        let (index, issuer) = self
            .issuers
            .iter()
            .enumerate()
            .find(|(_, i)| *i.issuer == *iss)
            .ok_or_else(|| TokenError::Claims("unknown issuer".into()))?;
        if !issuer.algorithms.contains(&header.alg) {
            return Err(TokenError::Header(format!("alg {} not allowed for this issuer", header.alg)).into());
        }
        if !issuer.header_typ.is_empty() {
            let typ = header.typ.as_deref().map(normalize_typ);
            if !typ.is_some_and(|t| issuer.header_typ.contains(&t)) {
                return Err(TokenError::Header("typ not accepted".into()).into());
            }
        }
        let issuer_id = IssuerId(index);
        // Read before the keys: keys swapped in meanwhile make this entry stale, never the
        // other way round.
        let key_generation = issuer.keys.generation();
        if let Signature::Attested(forwarded) = signature {
            let keys = issuer.jwt_authn_payload.as_ref().ok_or(Refusal::NotAttested)?;
            let forwarded_under = |key: &str| {
                forwarded.iter().find(|(k, _)| k == key).map(|(_, document)| Value::Object(document.clone()))
            };
            // The token Portcullis read must be the one jwt_authn verified, signature aside:
            // the same payload and the same header (so its `alg` and `typ` were checked above
            // on what was verified, never on a header made up around a verified payload).
            let header_json: Map<String, Value> = super::json::unique_object(&decode_segment(header_b64)?)
                .ok_or(TokenError::Malformed("header is not a JSON object with unique member names"))?;
            let same =
                |key: &str, ours: Value| forwarded_under(key).is_some_and(|theirs| same_document(&ours, &theirs));
            if !same(&keys.payload, Value::Object(claims.clone())) || !same(&keys.header, Value::Object(header_json)) {
                return Err(Refusal::NotAttested);
            }
            metrics::counter!(VERIFICATIONS_TOTAL, "issuer" => issuer.issuer.to_string(), "result" => "attested")
                .increment(1);
            return Ok(self.accept(issuer_id, issuer, claims, key_generation)?);
        }
        let remote = issuer.keys.is_remote();
        let keys = issuer.keys.keys().ok_or(TokenError::KeysUnavailable { issuer: issuer_id })?;
        let candidates = keys.candidates(header.kid.as_deref(), header.alg).map_err(|why| TokenError::UnknownKey {
            issuer: issuer_id,
            why,
            remote,
        })?;
        let signing_input_len = header_b64.len() + 1 + payload_b64.len();
        let signing_input = &token.as_bytes()[..signing_input_len];
        let valid = candidates.iter().any(|key| {
            jsonwebtoken::crypto::verify(signature_b64, signing_input, &key.decoding, header.alg.to_jsonwebtoken())
                .unwrap_or(false)
        });
        let result = if valid { "ok" } else { "bad_signature" };
        metrics::counter!(VERIFICATIONS_TOTAL, "issuer" => issuer.issuer.to_string(), "result" => result).increment(1);
        if !valid {
            return Err(TokenError::Signature { issuer: issuer_id, remote }.into());
        }
        Ok(self.accept(issuer_id, issuer, claims, key_generation)?)
    }

    /// Everything after the signature: the claims checks and what the cache keeps.
    fn accept(
        &self,
        issuer_id: IssuerId,
        issuer: &IssuerVerifier,
        claims: Map<String, Value>,
        key_generation: u64,
    ) -> Result<VerifiedToken, TokenError> {
        issuer.check_claims(&claims)?;
        let exp = numeric_date(&claims, "exp")?.ok_or_else(|| TokenError::Claims("exp missing".into()))?;
        let nbf = numeric_date(&claims, "nbf")?;
        let iat = numeric_date(&claims, "iat")?;
        let subject = match claims.get("sub") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => return Err(TokenError::Claims("sub is not a non-empty string".into())),
        };
        let claims = match &self.kept_claims {
            Some(kept) => claims.into_iter().filter(|(name, _)| kept.binary_search(name).is_ok()).collect(),
            None => claims,
        };
        // One allocation for what the cache keeps of the token: subject, header values, claims.
        let (claims, values_for) = pack_token(&issuer.issuer, &subject, claims, self.identity_headers.as_ref())
            .map_err(|_| TokenError::Claims("claims too long to keep".into()))?;
        VerifiedToken::new(issuer_id, claims, values_for, exp, nbf.into(), iat.into(), key_generation)
            .map_err(|_| TokenError::Claims("no issuer or subject to keep".into()))
    }
}
