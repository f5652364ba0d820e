//! `portcullis test`: policy test files run through [`super::explain`] (the same pipeline as
//! `serve`). Tokens are minted in-process: for each issuer a case names, a key is generated for
//! the first algorithm the issuer accepts and installed as that issuer's keys for the run, so
//! test files carry claims, never secrets.

use super::explain::{ExplainRequest, OfflineState, explain_with};
use crate::config::{Settings, load_file};
use crate::decision::UnixTime;
use crate::jwt::{Alg, AlgFamily, KeySet, keys_from_hmac_secret, keys_from_jwks};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestFile {
    /// The policy under test, relative to the test file.
    pub policy: PathBuf,
    /// Unix seconds the cases are decided at (default: now).
    pub now: Option<i64>,
    pub cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub name: String,
    #[serde(default)]
    pub request: ExplainRequest,
    /// A token minted for this case.
    pub token: Option<TokenSpec>,
    /// An API key presented in the policy's API-key header.
    pub api_key: Option<ApiKeySpec>,
    /// Shared state this case is decided against (default: none).
    #[serde(default)]
    pub state: StateSpec,
    pub expect: Expect,
}

/// A key-file entry by name: a key is generated for the run and the entry's digest replaced by
/// its digest, so test files never hold a key. A name the file lacks sends an unknown key.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeySpec {
    pub name: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateSpec {
    #[serde(default)]
    pub revoked: Vec<RevokedSpec>,
    #[serde(default)]
    pub members: Vec<MemberSpec>,
    /// Blocked addresses or CIDRs.
    #[serde(default)]
    pub blocks: Vec<String>,
}

/// One revocation: exactly one of `jti`, `sub` (tokens issued up to the case's `now`), `sid` or
/// `tenant`; `issuer` defaults to the policy's first.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokedSpec {
    pub issuer: Option<String>,
    pub jti: Option<String>,
    pub sub: Option<String>,
    pub sid: Option<String>,
    pub tenant: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberSpec {
    pub tenant: String,
    pub sub: String,
    /// Default: the policy's first issuer.
    pub issuer: Option<String>,
    #[serde(default)]
    pub roles: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSpec {
    /// The issuer (default: the policy's first); `iss`, `aud` (its first audience), `iat` and
    /// `exp` (an hour) are added unless `claims` sets them.
    pub issuer: Option<String>,
    #[serde(default)]
    pub claims: serde_json::Map<String, serde_json::Value>,
    /// Send it sender-constrained (README "Sender-constrained tokens").
    pub dpop: Option<super::policytest_dpop::DpopSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    pub decision: Option<String>,
    pub status: Option<u16>,
    pub reason: Option<String>,
    pub rule: Option<String>,
    /// Headers the upstream must receive with these values.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// One case's result: `None` passed, `Some(diff)` failed.
pub struct Outcome {
    pub name: String,
    pub failure: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum TestError {
    #[error("{0}: {1}")]
    File(PathBuf, String),
}

/// A signing key generated for one issuer.
struct Signer {
    alg: Alg,
    key: jsonwebtoken::EncodingKey,
}

fn pem(label: &str, der: &[u8]) -> String {
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = body.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap_or_default()).collect();
    format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", lines.join("\n"))
}

/// A fresh key for `alg` and the key set that verifies it.
fn generate(alg: Alg) -> Result<(Signer, KeySet), String> {
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::KeyPair;
    let rng = SystemRandom::new();
    let err = |e: &dyn std::fmt::Display| format!("cannot generate a {} test key: {e}", alg.name());
    let jwks =
        |jwk: serde_json::Value| keys_from_jwks(&serde_json::json!({ "keys": [jwk] }).to_string()).map_err(|e| err(&e));
    match alg.family() {
        AlgFamily::Hmac => {
            let mut secret = [0u8; 64];
            aws_lc_rs::rand::SecureRandom::fill(&rng, &mut secret).map_err(|e| err(&e))?;
            let keys = keys_from_hmac_secret(&secret, &[alg]).map_err(|e| err(&e))?;
            Ok((Signer { alg, key: jsonwebtoken::EncodingKey::from_secret(&secret) }, keys))
        }
        AlgFamily::Ed => {
            let pkcs8 = aws_lc_rs::signature::Ed25519KeyPair::generate_pkcs8(&rng).map_err(|e| err(&e))?;
            let pair = aws_lc_rs::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|e| err(&e))?;
            let x = B64.encode(pair.public_key().as_ref());
            let key = jsonwebtoken::EncodingKey::from_ed_der(pkcs8.as_ref());
            let keys = jwks(serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": x, "kid": "portcullis-test"}))?;
            Ok((Signer { alg, key }, keys))
        }
        AlgFamily::Ec => {
            let (curve, fixed, size) = match alg {
                Alg::ES384 => ("P-384", &aws_lc_rs::signature::ECDSA_P384_SHA384_FIXED_SIGNING, 48),
                _ => ("P-256", &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING, 32),
            };
            let pkcs8 = aws_lc_rs::signature::EcdsaKeyPair::generate_pkcs8(fixed, &rng).map_err(|e| err(&e))?;
            let pair = aws_lc_rs::signature::EcdsaKeyPair::from_pkcs8(fixed, pkcs8.as_ref()).map_err(|e| err(&e))?;
            let point = pair.public_key().as_ref();
            let (x, y) = (B64.encode(&point[1..1 + size]), B64.encode(&point[1 + size..]));
            let key = jsonwebtoken::EncodingKey::from_ec_pem(pem("PRIVATE KEY", pkcs8.as_ref()).as_bytes())
                .map_err(|e| err(&e))?;
            let keys = jwks(serde_json::json!({"kty": "EC", "crv": curve, "x": x, "y": y, "kid": "portcullis-test"}))?;
            Ok((Signer { alg, key }, keys))
        }
        AlgFamily::Rsa => {
            let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).map_err(|e| err(&e))?;
            let der: aws_lc_rs::encoding::Pkcs8V1Der = pair.as_der().map_err(|e| err(&e))?;
            let public = pair.public_key();
            let n = B64.encode(public.modulus().big_endian_without_leading_zero());
            let e = B64.encode(public.exponent().big_endian_without_leading_zero());
            let key = jsonwebtoken::EncodingKey::from_rsa_pem(pem("PRIVATE KEY", der.as_ref()).as_bytes())
                .map_err(|e| err(&e))?;
            let keys = jwks(serde_json::json!({"kty": "RSA", "n": n, "e": e, "kid": "portcullis-test"}))?;
            Ok((Signer { alg, key }, keys))
        }
    }
}

/// The state a case names, built in the server's own in-memory stores.
fn offline_state(spec: &StateSpec, settings: &Settings, now: UnixTime) -> Result<OfflineState, String> {
    use crate::state::blocks::Block;
    use crate::state::membership::Member;
    use crate::state::revocation::{NEVER, Revocation};
    let first = settings.snapshot.verifier.issuers.first().map(|i| i.issuer.to_string()).unwrap_or_default();
    let state = OfflineState::default();
    for r in &spec.revoked {
        let iss = r.issuer.clone().unwrap_or_else(|| first.clone());
        let revocation = match (&r.jti, &r.sub, &r.sid, &r.tenant) {
            (Some(jti), None, None, None) => Revocation::Jti { iss, jti: jti.clone(), expires_at: NEVER },
            (None, Some(sub), None, None) => {
                Revocation::Subject { iss, sub: sub.clone(), before: now.0, expires_at: NEVER }
            }
            (None, None, Some(sid), None) => Revocation::Session { iss, sid: sid.clone(), expires_at: NEVER },
            (None, None, None, Some(tenant)) => {
                Revocation::Tenant { tenant: tenant.clone(), before: now.0, expires_at: NEVER }
            }
            _ => return Err("a revocation names exactly one of jti, sub, sid or tenant".into()),
        };
        state.revocations.apply(revocation);
    }
    for m in &spec.members {
        let iss = m.issuer.clone().unwrap_or_else(|| first.clone());
        state.members.apply_put(Member { tenant: m.tenant.clone(), iss, sub: m.sub.clone(), roles: m.roles.clone() });
    }
    for cidr in &spec.blocks {
        crate::decision::parse_cidr(cidr).map_err(|e| format!("blocks: {cidr}: {e}"))?;
        state.blocks.set_block(&Block { cidr: cidr.clone(), expires_at: NEVER });
    }
    Ok(state)
}

/// A fresh key for the key-file entry `name` (its digest replaced for this run), or an unknown
/// key when the file has no such entry. Returns the header and the key.
fn api_key_for(settings: &mut Settings, name: &str) -> Result<(String, String), String> {
    let snapshot = std::sync::Arc::get_mut(&mut settings.snapshot).ok_or("the policy is shared")?;
    let api_keys = snapshot.policy.api_keys.as_mut().ok_or("the policy has no credentials.api_keys")?;
    let mut random = [0u8; 32];
    aws_lc_rs::rand::SecureRandom::fill(&aws_lc_rs::rand::SystemRandom::new(), &mut random)
        .map_err(|e| format!("cannot generate a test key: {e}"))?;
    let value = format!("{}{}", api_keys.prefix, B64.encode(random));
    let existing = api_keys.file_keys.iter().find(|(_, k)| k.name == name).map(|(d, k)| (*d, k.clone()));
    if let Some((digest, key)) = existing {
        api_keys.file_keys.remove(&digest);
        api_keys.file_keys.insert(crate::decision::api_key::digest(&value), key);
    }
    Ok((api_keys.header.clone(), value))
}

/// Runs every case of `file`.
pub fn run_file(file: &Path) -> Result<Vec<Outcome>, TestError> {
    let fail = |why: String| TestError::File(file.to_path_buf(), why);
    let text = std::fs::read_to_string(file).map_err(|e| fail(e.to_string()))?;
    let spec: TestFile = serde_saphyr::from_str(&text).map_err(|e| fail(e.to_string()))?;
    let base = file.parent().unwrap_or(Path::new("."));
    let mut settings: Settings = load_file(&base.join(&spec.policy)).map_err(|e| fail(e.to_string()))?;
    let now = UnixTime(spec.now.unwrap_or_else(|| crate::clock::Clock::now(&crate::clock::SystemClock).0));
    let mut signers: BTreeMap<String, Signer> = BTreeMap::new();
    let mut proof_key: Option<super::policytest_dpop::ProofKey> = None;
    let mut outcomes = Vec::new();
    for case in &spec.cases {
        let mut request = case.request.clone();
        if let Some(key) = &case.api_key {
            let (header, value) =
                api_key_for(&mut settings, &key.name).map_err(|e| fail(format!("{}: {e}", case.name)))?;
            request.headers.insert(header, super::explain::OneOrMany::One(value));
        }
        let state = offline_state(&case.state, &settings, now).map_err(|e| fail(format!("{}: {e}", case.name)))?;
        if let Some(token) = &case.token {
            let verifier = &settings.snapshot.verifier;
            let issuer = match &token.issuer {
                Some(name) => verifier.find(name).map(|(_, i)| i),
                None => verifier.issuers.first(),
            }
            .ok_or_else(|| fail(format!("{}: no such issuer", case.name)))?;
            if !signers.contains_key(&*issuer.issuer) {
                let alg = *issuer
                    .algorithms
                    .first()
                    .ok_or_else(|| fail(format!("{}: issuer has no algorithm", issuer.issuer)))?;
                let (signer, keys) = generate(alg).map_err(fail)?;
                issuer.keys.replace(keys, now.0);
                signers.insert(issuer.issuer.to_string(), signer);
            }
            let signer = &signers[&*issuer.issuer];
            let mut claims = token.claims.clone();
            claims.entry("iss").or_insert_with(|| issuer.issuer.to_string().into());
            if let Some(aud) = issuer.audiences.first() {
                claims.entry("aud").or_insert_with(|| aud.clone().into());
            }
            claims.entry("iat").or_insert_with(|| now.0.into());
            claims.entry("exp").or_insert_with(|| (now.0 + 3600).into());
            if let Some(dpop) = &token.dpop {
                if proof_key.is_none() {
                    proof_key = Some(super::policytest_dpop::ProofKey::generate().map_err(fail)?);
                }
                if let (true, Some(key)) = (dpop.bound, &proof_key) {
                    claims.entry("cnf").or_insert_with(|| serde_json::json!({"jkt": key.jkt}));
                }
            }
            let mut header = jsonwebtoken::Header::new(signer.alg.to_jsonwebtoken());
            if signer.alg.family() != AlgFamily::Hmac {
                header.kid = Some("portcullis-test".into());
            }
            let jwt =
                jsonwebtoken::encode(&header, &claims, &signer.key).map_err(|e| fail(format!("{}: {e}", case.name)))?;
            match (&token.dpop, &proof_key) {
                (Some(dpop), Some(key)) => {
                    key.present(dpop, jwt, &mut request, now).map_err(|e| fail(format!("{}: {e}", case.name)))?;
                }
                _ => request.token = Some(jwt),
            }
        }
        let got = explain_with(&settings, &request, now, &state);
        let mut diff = Vec::new();
        let mut compare = |what: &str, want: Option<String>, got: String| {
            if let Some(want) = want
                && want != got
            {
                diff.push(format!("  {what}: want {want}, got {got}"));
            }
        };
        compare("decision", case.expect.decision.clone(), got.decision.to_string());
        compare("status", case.expect.status.map(|s| s.to_string()), got.status.to_string());
        compare("reason", case.expect.reason.clone(), got.reason.to_string());
        compare("rule", case.expect.rule.clone(), got.rule.clone().unwrap_or_else(|| "(none)".into()));
        for (name, want) in &case.expect.headers {
            let value = got.upstream_set.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
            compare(&format!("header {name}"), Some(want.clone()), value.unwrap_or_else(|| "(not set)".into()));
        }
        if !diff.is_empty() && !got.detail.is_empty() {
            diff.push(format!("  (detail: {})", got.detail));
        }
        outcomes.push(Outcome { name: case.name.clone(), failure: (!diff.is_empty()).then(|| diff.join("\n")) });
    }
    Ok(outcomes)
}
