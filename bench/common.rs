#![allow(dead_code)] // each example uses part of it
//! What the load generator and the floor share: the bench tokens and the bench request, so the
//! floor's answer-equivalent mode answers exactly what Portcullis answers for them.

use portcullis::dev::request::{HeaderEncoding, check_request};
use portcullis::server::proto::envoy::service::auth::v3::CheckRequest;
use std::time::{SystemTime, UNIX_EPOCH};

/// `count` EdDSA tokens of the test issuer, shaped like the seeds' (`iss`, `sub`, `aud`, `exp`,
/// `iat`, `nbf`, `jti`, `scope`, `roles`, `tenants`, `token_use`, `email`); token `i` is for
/// subject `load-i`.
pub fn mint(count: usize) -> Result<Vec<String>, String> {
    mint_range(0, count)
}

/// Tokens `start..end` of [`mint`].
pub fn mint_range(start: usize, end: usize) -> Result<Vec<String>, String> {
    let pem =
        std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/keys/ed.pem")).map_err(|e| e.to_string())?;
    let key = jsonwebtoken::EncodingKey::from_ed_pem(&pem).map_err(|e| e.to_string())?;
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some("ed-1".into());
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_err(|e| e.to_string())?.as_secs() as i64;
    (start..end)
        .map(|i| {
            let claims = serde_json::json!({
                "iss": "https://issuer.test/", "sub": format!("load-{i}"), "aud": "api", "iat": now - 5,
                "nbf": now - 5, "exp": now + 6 * 3600, "jti": format!("load-{i}"), "token_use": "access",
                "scope": "read", "roles": ["viewer"], "tenants": ["acme"],
                "email": format!("load-{i}@example.com"),
            });
            jsonwebtoken::encode(&header, &claims, &key).map_err(|e| e.to_string())
        })
        .collect()
}

/// What Envoy sends for a plain GET of `path`, so direct and proxied checks decide alike.
pub fn request(path: &str, bearer: Option<&str>) -> CheckRequest {
    let mut headers = vec![
        (":authority", "api.example.com"),
        (":method", "GET"),
        (":path", path),
        (":scheme", "http"),
        ("user-agent", "load/1"),
        ("accept", "*/*"),
        ("x-forwarded-proto", "http"),
        ("x-request-id", "9d1c9e4e-0b7e-4c5e-8f5e-3f1f0c2a7b11"),
    ];
    if let Some(bearer) = bearer {
        headers.push(("authorization", bearer));
    }
    check_request("GET", path, &headers, HeaderEncoding::Map)
}
