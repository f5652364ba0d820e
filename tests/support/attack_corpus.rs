//! The attack corpus of issue 11 (and the request-semantics tricks of issue 19): raw HTTP/1.1
//! requests through Envoy, each with the answer it must get from the test policy. Shared by
//! `attacks.rs` (expected answers) and `upstreams.rs` (real frameworks behind Envoy).
#![allow(dead_code)]

use super::corpus::{self, ISSUER};
use serde_json::{Value, json};

/// Envoy refuses the request itself (400, no Portcullis body): `path_with_escaped_slashes_action`.
pub const ENVOY_REJECTS: &str = "(envoy)";

/// A HEAD answer has no body: only the status is compared.
pub const NO_BODY: &str = "(no body)";

pub struct Attack {
    pub name: &'static str,
    pub request: String,
    pub status: u16,
    /// The deny reason, or for allows the `x-user-id` the upstream must see.
    pub expect: &'static str,
}

pub fn request(method: &str, path: &str, headers: &[(&str, String)]) -> String {
    let mut text = format!("{method} {path} HTTP/1.1\r\nhost: api.example.com\r\n");
    for (k, v) in headers {
        text.push_str(&format!("{k}: {v}\r\n"));
    }
    text + "connection: close\r\n\r\n"
}

pub fn attacks(now: i64) -> Vec<Attack> {
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
            "Basic scheme is no bearer credential",
            get("/api/items", vec![("authorization", "Basic YWRtaW46YWRtaW4=".to_string())]),
            401,
            "credential_missing",
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
        ("/PUBLIC selects another route than /public", get("/PUBLIC", vec![]), 400, "path_invalid"),
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
    let mut cases = cases;
    cases.extend(semantics_attacks(now));
    cases.into_iter().map(|(name, request, status, expect)| Attack { name, request, status, expect }).collect()
}

/// A request with the given `host` line(s) written as is.
fn on_host(method: &str, hosts: &[&str], path: &str, headers: &[(&str, String)]) -> String {
    let mut text = format!("{method} {path} HTTP/1.1\r\n");
    for host in hosts {
        text.push_str(&format!("host: {host}\r\n"));
    }
    for (k, v) in headers {
        text.push_str(&format!("{k}: {v}\r\n"));
    }
    text + "connection: close\r\n\r\n"
}

/// Issue 19: requests that frameworks behind Envoy read differently from a naive judge.
fn semantics_attacks(now: i64) -> Vec<(&'static str, String, u16, &'static str)> {
    let claims = |sub: &str| corpus::claims(ISSUER, sub, now);
    let signed = |c: &Value| corpus::sign(jsonwebtoken::Algorithm::RS256, Some("rsa-1"), c);
    let bearer = |t: &str| vec![("authorization", format!("Bearer {t}"))];
    let get = |path: &str, headers: Vec<(&str, String)>| request("GET", path, &headers);
    let good = signed(&claims("mallory"));
    let mut admin = claims("root");
    admin["roles"] = json!(["admin"]);
    let admin = signed(&admin);
    let mut comma_role = claims("commas");
    comma_role["roles"] = json!(["viewer,admin"]);
    let mut map_false = claims("falsy");
    map_false["tenants"] = json!({"acme": false, "globex": null});
    let payload = claims("dup").to_string();
    let dup_sub = corpus::sign_raw(r#"{"alg":"RS256","kid":"rsa-1"}"#, &payload.replacen('{', r#"{"sub":"root","#, 1));
    let dup_alg = corpus::sign_raw(r#"{"alg":"none","alg":"RS256","kid":"rsa-1"}"#, &payload);
    let forged = corpus::with_raw_header(&json!({"alg": "RS256", "kid": "rsa-1"}), &claims("root"), Some("AAAA"));
    vec![
        ("path parameter before a prefix", get("/admin;x/panel", vec![]), 400, "path_invalid"),
        ("path parameter skips step-up", get("/admin/critical;x/rotate", bearer(&admin)), 400, "path_invalid"),
        ("..; is a dot-segment to Tomcat", get("/public/..;/admin/panel", vec![]), 400, "path_invalid"),
        (".; is a dot-segment to Tomcat", get("/public/.;/admin/panel", vec![]), 400, "path_invalid"),
        ("encoded path parameter", get("/admin%3Bx/panel", vec![]), 400, "path_invalid"),
        ("path case selects another route", get("/ADMIN/panel", bearer(&good)), 400, "path_invalid"),
        // Envoy's HTTP/1.1 codec refuses these itself; over HTTP/2 it forwards them (upstreams.rs).
        ("lowercase method", request("delete", "/api/items", &bearer(&good)), 400, ENVOY_REJECTS),
        ("mixed-case method", request("Delete", "/api/items", &bearer(&good)), 400, ENVOY_REJECTS),
        (
            "_method query override",
            request("POST", "/api/items?_method=DELETE", &bearer(&good)),
            400,
            "invalid_request",
        ),
        (
            "encoded _METHOD override",
            request("POST", "/api/items?%5FMETHOD=DELETE", &bearer(&good)),
            400,
            "invalid_request",
        ),
        (
            "x-forwarded-host is removed by Envoy",
            get("/api/items", [bearer(&good), vec![("x-forwarded-host", "evil.example.com".to_string())]].concat()),
            200,
            "mallory",
        ),
        (
            "forwarded host= is removed by Envoy",
            get("/api/items", [bearer(&good), vec![("forwarded", "host=evil.example.com".to_string())]].concat()),
            200,
            "mallory",
        ),
        (
            "underscore twin of x-user-id",
            get("/public/x", vec![("x_user_id", "admin".to_string())]),
            400,
            ENVOY_REJECTS,
        ),
        (
            "padded cookie name beside the real one",
            get("/api/items", vec![("cookie", format!("session_jwt ={forged}; session_jwt={good}"))]),
            400,
            "invalid_request",
        ),
        (
            "PHP twin of a credential cookie",
            get("/api/items", vec![("cookie", format!("session.jwt={forged}"))]),
            400,
            "invalid_request",
        ),
        ("trailing dot host", on_host("GET", &["api.example.com."], "/api/items", &bearer(&good)), 200, "mallory"),
        (
            "non-numeric port",
            on_host("GET", &["api.example.com:x"], "/api/items", &bearer(&good)),
            400,
            "invalid_request",
        ),
        (
            "userinfo in host",
            on_host("GET", &["u@api.example.com"], "/api/items", &bearer(&good)),
            400,
            "invalid_request",
        ),
        (
            "two host headers",
            on_host("GET", &["api.example.com", "admin.example.com"], "/api/items", &bearer(&good)),
            400,
            "invalid_request",
        ),
        ("comma inside a role is one role", get("/admin/panel", bearer(&signed(&comma_role))), 403, "role_required"),
        ("tenant map value false", get("/tenants/acme/x", bearer(&signed(&map_false))), 403, "tenant_forbidden"),
        ("tenant map value null", get("/tenants/globex/x", bearer(&signed(&map_false))), 403, "tenant_forbidden"),
        ("duplicate sub", get("/api/items", bearer(&dup_sub)), 401, "token_invalid"),
        ("duplicate alg", get("/api/items", bearer(&dup_alg)), 401, "token_invalid"),
        ("HEAD follows the GET route", request("HEAD", "/admin/panel", &[]), 401, NO_BODY),
        // From the adversarial review of the change.
        ("encoded ':' in a path", get("/api/items%3Apurge", bearer(&good)), 400, "path_invalid"),
        ("encoded '@' in a path", get("/api/%40me", bearer(&good)), 400, "path_invalid"),
        ("encoded '%' in a path", get("/%2561dmin/panel", vec![]), 400, "path_invalid"),
        ("trailing dot in a segment", get("/admin./panel", vec![]), 400, "path_invalid"),
        ("format suffix selects another route", get("/admin.json", bearer(&good)), 400, "path_invalid"),
        ("uppercase host", on_host("GET", &["API.example.com"], "/api/items", &bearer(&good)), 200, "mallory"),
        (
            "Basic and a forged Bearer joined",
            get(
                "/public/x",
                vec![("authorization", "Basic eDp5".into()), ("authorization", format!("Bearer {forged}"))],
            ),
            200,
            "",
        ),
        (
            "Basic and a forged Bearer joined, credentialed route",
            get(
                "/api/items",
                vec![("authorization", "Basic eDp5".into()), ("authorization", format!("Bearer {forged}"))],
            ),
            400,
            "invalid_request",
        ),
        (
            "JWT scheme on a public route is removed",
            get("/public/x", vec![("authorization", format!("JWT {forged}"))]),
            200,
            "",
        ),
        ("forged bearer on a public route is removed", get("/public/x", bearer(&forged)), 200, ""),
        (
            "Bearer: scheme",
            get("/api/items", vec![("authorization", format!("Bearer:{forged}"))]),
            400,
            "invalid_request",
        ),
        (
            "x-forwarded-server from the client",
            get("/api/items", [bearer(&good), vec![("x-forwarded-server", "admin.example.com".to_string())]].concat()),
            200,
            "mallory",
        ),
        (
            "SCRIPT-NAME header",
            get("/public/admin/x", vec![("script-name", "/public".to_string())]),
            400,
            "invalid_request",
        ),
        ("PHP-renamed _method", request("POST", "/api/items?.method=DELETE", &bearer(&good)), 400, "invalid_request"),
        (
            "cookie name in another case",
            get("/api/items", vec![("cookie", format!("session_jwt={good}; SESSION_JWT={forged}"))]),
            400,
            "invalid_request",
        ),
        (
            "cookie hidden in another cookie's value",
            get("/api/items", vec![("cookie", format!("a=b session_jwt={forged}; session_jwt={good}"))]),
            400,
            "invalid_request",
        ),
    ]
}
