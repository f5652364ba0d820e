//! The token and request corpus shared by the pure-core table test (compiled into the library's
//! unit tests via `#[path]`) and the gRPC and Envoy tests. Uses only public crates, so the same
//! file compiles in both places.
#![allow(dead_code)]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use std::path::PathBuf;

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn read(name: &str) -> Vec<u8> {
    let path = fixtures().join("keys").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

pub const ISSUER: &str = "https://issuer.test/";

/// Test API keys (their digests are in fixtures/api-keys.yaml): `ci-bot` (subject svc-ci,
/// tenant acme, scope read), `old-bot` (expired in 2020), `doomed-bot` (for revocation tests).
pub const API_KEY_CI: &str = "pk_502mB-a4yrtY8suTh2QihmkMDyEI5Gz0dtXjPNWoDkI";
pub const API_KEY_EXPIRED: &str = "pk_S3CTs9MyzkwyxeNDpDd7AdDrIPNEdrqMbz-efdwPnVI";
pub const API_KEY_DOOMED: &str = "pk_frVlNEiiwSQyeVSpjiLX9QmfFkEV1xf2RF1vvO6TKeQ";
pub const PEM_ISSUER: &str = "https://pem.test/";
pub const HMAC_ISSUER: &str = "https://hmac.test/";

/// Standard valid claims for `sub` at time `now`.
pub fn claims(iss: &str, sub: &str, now: i64) -> Value {
    json!({
        "iss": iss, "sub": sub, "aud": "api", "iat": now - 10, "exp": now + 600,
        "jti": format!("jti-{sub}"), "token_use": "access", "scope": "read",
    })
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn sign(alg: Algorithm, kid: Option<&str>, claims: &Value) -> String {
    let key = match alg {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(&read("rsa.pem")),
        Algorithm::ES256 => EncodingKey::from_ec_pem(&read("ec.pem")),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(&read("ed.pem")),
        Algorithm::HS256 => {
            let secret = read("hmac.secret");
            let secret = secret.strip_suffix(b"\n").unwrap_or(&secret).to_vec();
            Ok(EncodingKey::from_secret(&secret))
        }
        other => panic!("corpus does not sign {other:?}"),
    }
    .expect("fixture key");
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&header, claims, &key).expect("sign")
}

pub fn sign_pem_issuer(claims: &Value) -> String {
    sign_rsa_other(None, claims)
}

/// RS256 with the second RSA key (`rsa-other.pem`, published as `rsa-2` in the rotation fixtures).
pub fn sign_rsa_other(kid: Option<&str>, claims: &Value) -> String {
    let key = EncodingKey::from_rsa_pem(&read("rsa-other.pem")).expect("fixture key");
    let mut header = Header::new(Algorithm::RS256);
    header.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&header, claims, &key).expect("sign")
}

/// A token with an arbitrary JOSE header, signed over that header with `alg` under the RSA key
/// (or unsigned when `signature` is given).
pub fn with_raw_header(header: &Value, claims: &Value, signature: Option<&str>) -> String {
    let input = format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
    let sig = match signature {
        Some(s) => s.to_string(),
        None => {
            let key = EncodingKey::from_rsa_pem(&read("rsa.pem")).expect("fixture key");
            jsonwebtoken::crypto::sign(input.as_bytes(), &key, Algorithm::RS256).expect("sign")
        }
    };
    format!("{input}.{sig}")
}

/// An RS256 (kid rsa-1) token over `payload` exactly as given (for JSON serde_json would not build).
pub fn sign_raw_payload(payload: &str) -> String {
    let header = json!({"alg": "RS256", "kid": "rsa-1"});
    let input = format!("{}.{}", b64(header.to_string().as_bytes()), b64(payload.as_bytes()));
    let key = EncodingKey::from_rsa_pem(&read("rsa.pem")).expect("fixture key");
    let sig = jsonwebtoken::crypto::sign(input.as_bytes(), &key, Algorithm::RS256).expect("sign");
    format!("{input}.{sig}")
}

/// RS256 (rsa-1 key) over a header and payload given as JSON text (duplicate members and all).
pub fn sign_raw(header: &str, payload: &str) -> String {
    let input = format!("{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()));
    let key = EncodingKey::from_rsa_pem(&read("rsa.pem")).expect("fixture key");
    let sig = jsonwebtoken::crypto::sign(input.as_bytes(), &key, Algorithm::RS256).expect("sign");
    format!("{input}.{sig}")
}

/// HS256 keyed with the RSA public key's PEM text: the classic algorithm-confusion attack.
pub fn hs256_with_public_key(claims: &Value) -> String {
    let header = json!({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"});
    let input = format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
    let key = EncodingKey::from_secret(&read("rsa.pub.pem"));
    let sig = jsonwebtoken::crypto::sign(input.as_bytes(), &key, Algorithm::HS256).expect("sign");
    format!("{input}.{sig}")
}

/// One request and the answer Portcullis must give.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    pub method: &'static str,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub status: u16,
    pub reason: &'static str,
    /// For allows: the `x-user-id` the upstream must see (`None`: must see none).
    pub user: Option<String>,
    /// For denies: text the `www-authenticate` challenge must contain.
    pub challenge: Option<&'static str>,
}

fn case(name: &str, path: &str, headers: Vec<(String, String)>, status: u16, reason: &'static str) -> Case {
    Case { name: name.into(), method: "GET", path: path.into(), headers, status, reason, user: None, challenge: None }
}

fn post(mut case: Case) -> Case {
    case.method = "POST";
    case
}

fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// API keys, CSRF, step-up and peer principals (issue 9).
fn control_cases(now: i64, out: &mut Vec<Case>) {
    let allow = |name: &str, method: &'static str, path: &str, h: Vec<(String, String)>, user: &str| {
        let mut k = case(name, path, spoofed(h), 200, "allowed");
        k.method = method;
        k.user = Some(user.into());
        k
    };
    let key = |k: &str| headers(&[("x-api-key", k)]);
    out.push(allow("api key", "GET", "/api/items", key(API_KEY_CI), "svc-ci"));
    out.push(allow("api key, its tenant", "GET", "/tenants/acme/x", key(API_KEY_CI), "svc-ci"));
    out.push(case("api key, other tenant", "/tenants/initech/x", key(API_KEY_CI), 403, "tenant_forbidden"));
    let unknown = format!("pk_{}", "A".repeat(43));
    out.push(case("unknown api key", "/api/items", key(&unknown), 401, "api_key_invalid"));
    out.push(case("expired api key", "/api/items", key(API_KEY_EXPIRED), 401, "api_key_invalid"));
    let jwt = sign(Algorithm::RS256, Some("rsa-1"), &claims(ISSUER, "bob", now));
    out.push(case("jwt sent as api key", "/api/items", key(&jwt), 401, "api_key_invalid"));
    out.push(case("short api key", "/api/items", key("pk_tooShort123"), 401, "api_key_invalid"));
    out.push(case(
        "api key, other prefix",
        "/api/items",
        key(&format!("sk_{}", "A".repeat(43))),
        401,
        "api_key_invalid",
    ));
    let mut both = key(API_KEY_CI);
    both.extend(bearer(&jwt));
    out.push(case("api key and bearer", "/api/items", both, 400, "invalid_request"));

    let cookie = format!(
        "session_jwt={}; csrf_token=tok-123456",
        sign(Algorithm::RS256, Some("rsa-1"), &claims(ISSUER, "cookie-csrf", now))
    );
    let with_cookie = |extra: &[(&str, &str)]| {
        let mut h = headers(&[("cookie", cookie.as_str())]);
        h.extend(headers(extra));
        h
    };
    out.push(post(case(
        "cookie POST, foreign origin",
        "/api/items",
        with_cookie(&[("origin", "https://evil.example")]),
        403,
        "csrf_rejected",
    )));
    out.push(post(case("cookie POST, no origin", "/api/items", with_cookie(&[]), 403, "csrf_rejected")));
    out.push(allow(
        "cookie POST, allowed origin",
        "POST",
        "/api/items",
        with_cookie(&[("origin", "https://app.example.com")]),
        "cookie-csrf",
    ));
    out.push(allow(
        "cookie DELETE, allowed referer",
        "DELETE",
        "/api/items",
        with_cookie(&[("referer", "https://app.example.com/page?x=1")]),
        "cookie-csrf",
    ));
    out.push(allow(
        "cookie POST, double submit",
        "POST",
        "/api/items",
        with_cookie(&[("x-csrf-token", "tok-123456")]),
        "cookie-csrf",
    ));
    out.push(post(case(
        "cookie POST, double submit mismatch",
        "/api/items",
        with_cookie(&[("x-csrf-token", "tok-654321")]),
        403,
        "csrf_rejected",
    )));
    out.push(allow(
        "cookie GET, foreign origin",
        "GET",
        "/api/items",
        with_cookie(&[("origin", "https://evil.example")]),
        "cookie-csrf",
    ));
    out.push(allow("bearer POST, no origin", "POST", "/api/items", bearer(&jwt), "bob"));
    out.push(allow(
        "api key POST, foreign origin",
        "POST",
        "/api/items",
        {
            let mut h = key(API_KEY_CI);
            h.extend(headers(&[("origin", "https://evil.example")]));
            h
        },
        "svc-ci",
    ));

    let admin = |sub: &str, amr: Option<Value>, auth_age: Option<i64>| {
        let mut c = claims(ISSUER, sub, now);
        c["roles"] = json!(["admin"]);
        if let Some(amr) = amr {
            c["amr"] = amr;
        }
        if let Some(age) = auth_age {
            c["auth_time"] = json!(now - age);
        }
        bearer(&sign(Algorithm::RS256, Some("rsa-1"), &c))
    };
    let step_up = |name: &str, h| {
        let mut k = case(name, "/admin/critical", h, 401, "step_up_required");
        k.challenge = Some("error=\"insufficient_user_authentication\"");
        k
    };
    out.push(step_up("step-up, no amr", admin("root-pw", Some(json!(["pwd"])), Some(10))));
    let mut old = step_up("step-up, auth too old", admin("root-old", Some(json!(["pwd", "mfa"])), Some(600)));
    old.challenge = Some("max_age=\"300\"");
    out.push(old);
    out.push(step_up("step-up, no auth_time", admin("root-nat", Some(json!(["mfa"])), None)));
    out.push(allow(
        "step-up, mfa just now",
        "GET",
        "/admin/critical",
        admin("root-mfa", Some(json!(["pwd", "mfa"])), Some(10)),
        "root-mfa",
    ));
    out.push(case("step-up needs the role first", "/admin/critical", bearer(&jwt), 403, "role_required"));
    out.push(case("no peer principal", "/internal/x", bearer(&jwt), 403, "peer_forbidden"));
}

fn bearer(token: &str) -> Vec<(String, String)> {
    vec![("authorization".into(), format!("Bearer {token}"))]
}

fn spoofed(mut headers: Vec<(String, String)>) -> Vec<(String, String)> {
    headers.push(("x-user-id".into(), "admin".into()));
    headers.push(("x-customer-id".into(), "other-co".into()));
    headers
}

/// Every case of the issue's acceptance list, at time `now`.
pub fn cases(now: i64) -> Vec<Case> {
    let c = |sub: &str| claims(ISSUER, sub, now);
    let mut out = Vec::new();
    let allow = |name: &str, path: &str, headers, user: &str| {
        let mut k = case(name, path, spoofed(headers), 200, "allowed");
        k.user = Some(user.into());
        k
    };
    out.push(allow("rs256", "/api/items", bearer(&sign(Algorithm::RS256, Some("rsa-1"), &c("alice-rs"))), "alice-rs"));
    out.push(allow("es256", "/api/items", bearer(&sign(Algorithm::ES256, Some("ec-1"), &c("alice-es"))), "alice-es"));
    out.push(allow("eddsa", "/api/items", bearer(&sign(Algorithm::EdDSA, Some("ed-1"), &c("alice-ed"))), "alice-ed"));
    out.push(allow(
        "pem issuer",
        "/api/items",
        bearer(&sign_pem_issuer(&claims(PEM_ISSUER, "pem-user", now))),
        "pem-user",
    ));
    out.push(allow(
        "hmac issuer",
        "/api/items",
        bearer(&sign(Algorithm::HS256, None, &claims(HMAC_ISSUER, "hmac-user", now))),
        "hmac-user",
    ));
    let mut admin = c("root");
    admin["roles"] = json!(["admin"]);
    out.push(allow("admin role", "/admin/panel", bearer(&sign(Algorithm::RS256, Some("rsa-1"), &admin)), "root"));
    let cookie = vec![(
        "cookie".into(),
        format!("theme=dark; session_jwt={}", sign(Algorithm::EdDSA, Some("ed-1"), &c("cookie-user"))),
    )];
    out.push(allow("cookie", "/api/items", cookie, "cookie-user"));
    let mut public = case("public route strips identity", "/public/page", spoofed(vec![]), 200, "allowed");
    public.user = None;
    out.push(public);
    let mut public_with_token =
        case("public route ignores token", "/public/page", spoofed(bearer("garbage")), 200, "allowed");
    public_with_token.user = None;
    out.push(public_with_token);

    out.push(case("no token", "/api/items", vec![], 401, "credential_missing"));
    let mut expired = c("bob");
    expired["exp"] = json!(now - 120);
    out.push(case(
        "expired",
        "/api/items",
        bearer(&sign(Algorithm::RS256, Some("rsa-1"), &expired)),
        401,
        "token_expired",
    ));
    let mut future = c("bob");
    future["nbf"] = json!(now + 3600);
    out.push(case(
        "future nbf",
        "/api/items",
        bearer(&sign(Algorithm::RS256, Some("rsa-1"), &future)),
        401,
        "token_invalid",
    ));
    let mut old = c("bob");
    old["iat"] = json!(now - 13 * 3600);
    out.push(case(
        "older than max_token_age",
        "/api/items",
        bearer(&sign(Algorithm::RS256, Some("rsa-1"), &old)),
        401,
        "token_expired",
    ));
    let mut aud = c("bob");
    aud["aud"] = json!("other-api");
    out.push(case(
        "wrong aud",
        "/api/items",
        bearer(&sign(Algorithm::RS256, Some("rsa-1"), &aud)),
        401,
        "token_invalid",
    ));
    let mut iss = c("bob");
    iss["iss"] = json!("https://evil.test/");
    out.push(case(
        "wrong iss",
        "/api/items",
        bearer(&sign(Algorithm::RS256, Some("rsa-1"), &iss)),
        401,
        "token_invalid",
    ));
    let mut iss_slash = c("bob");
    iss_slash["iss"] = json!("https://issuer.test");
    out.push(case(
        "iss without trailing slash",
        "/api/items",
        bearer(&sign(Algorithm::RS256, Some("rsa-1"), &iss_slash)),
        401,
        "token_invalid",
    ));
    for alg in ["none", "None", "NONE", "nOnE"] {
        let token = with_raw_header(&json!({"alg": alg, "typ": "JWT"}), &c("bob"), Some(""));
        out.push(case(&format!("alg {alg} empty signature"), "/api/items", bearer(&token), 401, "token_invalid"));
        let token = with_raw_header(&json!({"alg": alg, "typ": "JWT"}), &c("bob"), Some("c2ln"));
        out.push(case(&format!("alg {alg}"), "/api/items", bearer(&token), 401, "token_invalid"));
    }
    out.push(case(
        "HS256 keyed with the RSA public key",
        "/api/items",
        bearer(&hs256_with_public_key(&c("bob"))),
        401,
        "token_invalid",
    ));
    let good = sign(Algorithm::RS256, Some("rsa-1"), &c("bob"));
    let parts: Vec<&str> = good.split('.').collect();
    let tampered = format!("{}.{}.{}", parts[0], b64(c("root").to_string().as_bytes()), parts[2]);
    out.push(case("tampered payload", "/api/items", bearer(&tampered), 401, "token_invalid"));
    out.push(case(
        "unknown kid",
        "/api/items",
        bearer(&sign(Algorithm::RS256, Some("rsa-9"), &c("bob"))),
        401,
        "token_invalid",
    ));
    let mut refresh = c("bob");
    refresh["token_use"] = json!("refresh");
    out.push(case(
        "refresh token",
        "/api/items",
        bearer(&sign(Algorithm::RS256, Some("rsa-1"), &refresh)),
        401,
        "token_invalid",
    ));
    let mut untyped = c("bob");
    untyped.as_object_mut().map(|m| m.remove("token_use"));
    out.push(case(
        "absent token type",
        "/api/items",
        bearer(&sign(Algorithm::RS256, Some("rsa-1"), &untyped)),
        401,
        "token_invalid",
    ));
    let crit = with_raw_header(&json!({"alg": "RS256", "kid": "rsa-1", "crit": ["exp"], "exp": 1}), &c("bob"), None);
    out.push(case("crit header", "/api/items", bearer(&crit), 401, "token_invalid"));
    let jku = with_raw_header(
        &json!({"alg": "RS256", "kid": "rsa-1", "jku": "https://evil.test/jwks.json"}),
        &c("bob"),
        None,
    );
    out.push(case("jku header", "/api/items", bearer(&jku), 401, "token_invalid"));
    let mut huge = c("bob");
    huge["padding"] = json!("x".repeat(12 * 1024));
    out.push(case(
        "16 KiB token",
        "/api/items",
        bearer(&sign(Algorithm::RS256, Some("rsa-1"), &huge)),
        401,
        "token_invalid",
    ));
    let mut no_scope = c("bob");
    no_scope["scope"] = json!("write");
    out.push(case(
        "missing scope",
        "/api/items",
        bearer(&sign(Algorithm::RS256, Some("rsa-1"), &no_scope)),
        403,
        "insufficient_scope",
    ));
    out.push(case(
        "missing role",
        "/admin/panel",
        bearer(&sign(Algorithm::RS256, Some("rsa-1"), &c("bob"))),
        403,
        "role_required",
    ));
    out.push(case("unmatched path", "/other", bearer(&good), 403, "no_route"));
    out.push(case("prefix bounded at a segment", "/apiX", bearer(&good), 403, "no_route"));
    for path in ["/public/../admin", "/public/%2e%2e/admin", "//admin", "/public/./x", "/%61dmin/panel"] {
        out.push(case(&format!("path {path}"), path, bearer(&good), 400, "path_invalid"));
    }
    let two =
        vec![("authorization".into(), format!("Bearer {good}")), ("authorization".into(), format!("Bearer {good}"))];
    out.push(case("two authorization headers", "/api/items", two, 400, "invalid_request"));
    let mixed =
        vec![("authorization".into(), format!("Bearer {good}")), ("cookie".into(), format!("session_jwt={good}"))];
    out.push(case("bearer and cookie", "/api/items", mixed, 400, "invalid_request"));
    let two_cookies = vec![("cookie".into(), format!("session_jwt={good}; session_jwt={good}"))];
    out.push(case("two cookies of one name", "/api/items", two_cookies, 400, "invalid_request"));
    let mut lower = case(
        "lowercase scheme",
        "/api/items",
        vec![("authorization".into(), format!("bEaReR {good}"))],
        200,
        "allowed",
    );
    lower.user = Some("bob".into());
    out.push(lower);
    out.push(case(
        "two spaces after scheme",
        "/api/items",
        vec![("authorization".into(), format!("Bearer  {good}"))],
        400,
        "invalid_request",
    ));
    out.push(case(
        "token in query string",
        &format!("/api/items?access_token={good}"),
        vec![],
        401,
        "credential_missing",
    ));
    control_cases(now, &mut out);
    out
}

/// Every token segment in the corpus, for the leak test.
pub fn secrets(cases: &[Case]) -> Vec<String> {
    let mut out = Vec::new();
    for case in cases {
        if let Some((_, query)) = case.path.split_once('?') {
            out.extend(query.split(['.', '=']).filter(|p| p.len() >= 16).map(str::to_string));
        }
        for (name, value) in &case.headers {
            if name == "authorization" || name == "cookie" || name == "x-api-key" {
                for part in value.split(['.', ' ', '=', ';']) {
                    if part.len() >= 16 {
                        out.push(part.to_string());
                    }
                }
            }
        }
    }
    out
}
