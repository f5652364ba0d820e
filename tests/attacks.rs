//! The attack corpus of issue 11 through a real Envoy, each case with the answer it must get, and
//! proof that no raw CR, LF or NUL ever reaches the upstream.

mod support;

use serde_json::{Value, json};
use std::time::{SystemTime, UNIX_EPOCH};
use support::corpus::{self, ISSUER};
use support::envoy::{Upstream, envoy_in_front};
use support::{Portcullis, raw_http, scratch};

/// Envoy refuses the request itself (400, no Portcullis body): `path_with_escaped_slashes_action`.
const ENVOY_REJECTS: &str = "(envoy)";

struct Attack {
    name: &'static str,
    request: String,
    status: u16,
    /// The deny reason, or for allows the `x-user-id` the upstream must see.
    expect: &'static str,
}

fn request(method: &str, path: &str, headers: &[(&str, String)]) -> String {
    let mut text = format!("{method} {path} HTTP/1.1\r\nhost: api.example.com\r\n");
    for (k, v) in headers {
        text.push_str(&format!("{k}: {v}\r\n"));
    }
    text + "connection: close\r\n\r\n"
}

fn attacks(now: i64) -> Vec<Attack> {
    let claims = |sub: &str| corpus::claims(ISSUER, sub, now);
    let signed = |c: &Value| corpus::sign(jsonwebtoken::Algorithm::RS256, Some("rsa-1"), c);
    let with_header = |header: Value, c: &Value| corpus::with_raw_header(&header, c, None);
    let bearer = |t: &str| vec![("authorization", format!("Bearer {t}"))];
    let get = |path: &str, headers: Vec<(&str, String)>| request("GET", path, &headers);
    let good = signed(&claims("mallory"));
    let deep_raw = {
        // serde_json refuses nesting deeper than 128 while parsing: built as text, signed as is.
        let payload = format!(
            r#"{{"iss":"{ISSUER}","sub":"deep","aud":"api","iat":{},"exp":{},"jti":"d","token_use":"access","scope":"read","n":{}{}}}"#,
            now - 10,
            now + 600,
            "[".repeat(300),
            "]".repeat(300)
        );
        corpus::sign_raw_payload(&payload)
    };
    let mut string_exp = claims("string-exp");
    string_exp["exp"] = json!((now + 600).to_string());
    let mut string_iat = claims("string-iat");
    string_iat["iat"] = json!((now - 10).to_string());
    let mut object_sub = claims("x");
    object_sub["sub"] = json!({"id": "admin"});
    let mut admin_in_string = claims("y");
    admin_in_string["roles"] = json!("admin");
    let mut long = claims("x");
    long["sub"] = json!("a".repeat(2000));
    let jwk = json!({"kty": "RSA", "n": "AQAB", "e": "AQAB"});
    let cases = vec![
        (
            "CR LF in sub is percent-encoded",
            get("/api/items", bearer(&signed(&claims("eve\r\nx-admin: true")))),
            200,
            "eve%0D%0Ax-admin:%20true",
        ),
        (
            "NUL in sub is percent-encoded",
            get("/api/items", bearer(&signed(&claims("eve\u{0}root")))),
            200,
            "eve%00root",
        ),
        (
            "non-ASCII sub is percent-encoded",
            get("/api/items", bearer(&signed(&claims("\u{1eb9}ve")))),
            200,
            "%E1%BA%B9ve",
        ),
        ("2000-character sub is not forwarded", get("/api/items", bearer(&signed(&long))), 403, "claim_mismatch"),
        ("object sub", get("/api/items", bearer(&signed(&object_sub))), 401, "token_invalid"),
        (
            "two authorization headers",
            get(
                "/api/items",
                vec![("authorization", format!("Bearer {good}")), ("authorization", format!("Bearer {good}"))],
            ),
            400,
            "invalid_request",
        ),
        (
            "two cookie headers",
            get(
                "/api/items",
                vec![("cookie", format!("session_jwt={good}")), ("cookie", format!("session_jwt={good}"))],
            ),
            400,
            "invalid_request",
        ),
        ("mixed-case scheme", get("/api/items", vec![("authorization", format!("BeArEr {good}"))]), 200, "mallory"),
        (
            "tab after scheme",
            get("/api/items", vec![("authorization", format!("Bearer\t{good}"))]),
            400,
            "invalid_request",
        ),
        (
            "Basic scheme",
            get("/api/items", vec![("authorization", "Basic YWRtaW46YWRtaW4=".to_string())]),
            400,
            "invalid_request",
        ),
        ("access_token in query", get(&format!("/api/items?access_token={good}"), vec![]), 401, "credential_missing"),
        ("token in query and header", get(&format!("/api/items?token={good}"), bearer(&good)), 200, "mallory"),
        (
            "kid path traversal",
            get(
                "/api/items",
                bearer(&with_header(json!({"alg": "RS256", "kid": "../../../../etc/passwd"}), &claims("t"))),
            ),
            401,
            "token_invalid",
        ),
        (
            "kid SQL",
            get("/api/items", bearer(&with_header(json!({"alg": "RS256", "kid": "' OR '1'='1' --"}), &claims("t")))),
            401,
            "token_invalid",
        ),
        (
            "kid with NUL",
            get("/api/items", bearer(&with_header(json!({"alg": "RS256", "kid": "rsa-1\u{0}"}), &claims("t")))),
            401,
            "token_invalid",
        ),
        (
            "jku header",
            get(
                "/api/items",
                bearer(&with_header(
                    json!({"alg": "RS256", "kid": "rsa-1", "jku": "https://evil.example/jwks"}),
                    &claims("t"),
                )),
            ),
            401,
            "token_invalid",
        ),
        (
            "x5u header",
            get(
                "/api/items",
                bearer(&with_header(
                    json!({"alg": "RS256", "kid": "rsa-1", "x5u": "https://evil.example/cert"}),
                    &claims("t"),
                )),
            ),
            401,
            "token_invalid",
        ),
        (
            "embedded jwk",
            get("/api/items", bearer(&with_header(json!({"alg": "RS256", "kid": "rsa-1", "jwk": jwk}), &claims("t")))),
            401,
            "token_invalid",
        ),
        (
            "x5c chain",
            get(
                "/api/items",
                bearer(&with_header(json!({"alg": "RS256", "kid": "rsa-1", "x5c": ["MIIB"]}), &claims("t"))),
            ),
            401,
            "token_invalid",
        ),
        (
            "crit header",
            get(
                "/api/items",
                bearer(&with_header(json!({"alg": "RS256", "kid": "rsa-1", "crit": ["exp"]}), &claims("t"))),
            ),
            401,
            "token_invalid",
        ),
        (
            "alg none",
            get("/api/items", bearer(&corpus::with_raw_header(&json!({"alg": "none"}), &claims("t"), Some("")))),
            401,
            "token_invalid",
        ),
        ("Cyrillic a in tenant path", get("/tenants/%D0%B0cme/x", bearer(&good)), 400, "invalid_request"),
        ("nested claims (300 deep)", get("/api/items", bearer(&deep_raw)), 401, "token_invalid"),
        ("exp as a string", get("/api/items", bearer(&signed(&string_exp))), 401, "token_invalid"),
        ("iat as a string", get("/api/items", bearer(&signed(&string_iat))), 401, "token_invalid"),
        ("roles as a space-separated string", get("/admin/panel", bearer(&signed(&admin_in_string))), 200, "y"),
        (
            "Cyrillic a in tenant header",
            get("/api/items", [bearer(&good), vec![("x-tenant-id", "\u{430}cme".to_string())]].concat()),
            400,
            "invalid_request",
        ),
        (
            "Cyrillic a against the path's tenant",
            get("/tenants/acme/x", [bearer(&good), vec![("x-tenant-id", "\u{430}cme".to_string())]].concat()),
            400,
            "tenant_conflict",
        ),
        (
            "fullwidth tenant header",
            get("/api/items", [bearer(&good), vec![("x-tenant-id", "\u{ff41}cme".to_string())]].concat()),
            400,
            "invalid_request",
        ),
        ("/public/../admin", get("/public/../admin", bearer(&good)), 400, "path_invalid"),
        ("/public/%2e%2e/admin", get("/public/%2e%2e/admin", bearer(&good)), 400, "path_invalid"),
        ("//admin", get("//admin", bearer(&good)), 400, "path_invalid"),
        ("/PUBLIC is not /public", get("/PUBLIC", vec![]), 403, "no_route"),
        ("/public%2f..%2fadmin", get("/public%2f..%2fadmin", vec![]), 400, ENVOY_REJECTS),
        (
            "x-original-url override",
            get("/public/x", vec![("x-original-url", "/admin/panel".to_string())]),
            400,
            "invalid_request",
        ),
        (
            "x-rewrite-url override",
            get("/public/x", vec![("x-rewrite-url", "/admin/panel".to_string())]),
            400,
            "invalid_request",
        ),
        (
            "method override header",
            request(
                "POST",
                "/api/items",
                &[("authorization", format!("Bearer {good}")), ("x-http-method-override", "DELETE".to_string())],
            ),
            400,
            "invalid_request",
        ),
        ("9 KiB bearer", get("/api/items", bearer(&"a".repeat(9 * 1024))), 401, "token_invalid"),
    ];
    cases.into_iter().map(|(name, request, status, expect)| Attack { name, request, status, expect }).collect()
}

#[test]
fn attack_corpus_through_envoy() {
    let dir = scratch("attacks");
    let upstream = Upstream::start();
    let portcullis = Portcullis::start(&dir, "", &[]);
    let envoy = envoy_in_front(&dir, &portcullis, &upstream);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs() as i64;
    let cases = attacks(now);
    let mut failures = Vec::new();
    for case in &cases {
        let Some(resp) = raw_http(envoy.listener, &case.request) else {
            failures.push(format!("{}: no response", case.name));
            continue;
        };
        let body: Value = serde_json::from_str(&resp.body).unwrap_or(Value::Null);
        let got = if resp.status == 200 { &body["headers"]["x-user-id"] } else { &body["reason"] };
        let want = (case.expect != ENVOY_REJECTS).then_some(case.expect);
        if resp.status != case.status || got.as_str() != want {
            failures.push(format!("{}: got {} {got}, want {} {}", case.name, resp.status, case.status, case.expect));
        }
        if resp.status == 200 {
            let headers = body["headers"].as_object().cloned().unwrap_or_default();
            for (name, value) in &headers {
                let raw = value.as_str().unwrap_or_default();
                if raw.contains(['\r', '\n', '\0']) || name.contains(['\r', '\n', '\0']) {
                    failures.push(format!("{}: raw CR/LF/NUL reached the upstream in {name}", case.name));
                }
            }
            if headers.contains_key("x-admin") {
                failures.push(format!("{}: an injected header reached the upstream", case.name));
            }
        }
    }
    assert!(cases.len() >= 35, "attack corpus unexpectedly small");
    assert!(
        failures.is_empty(),
        "{} of {} attacks answered wrongly:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    let _ = std::fs::remove_dir_all(&dir);
}
