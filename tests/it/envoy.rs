//! End to end through a real Envoy 1.40 (deploy/envoy/envoy.yaml) with a header-echo upstream:
//! the issue's acceptance corpus with both header encodings, fail-closed when Portcullis is
//! down, and the leak check over every byte the processes printed.

use crate::support::corpus::{self, Case};
use crate::support::envoy::{Envoy, Upstream, envoy_in_front, start_envoy};
use crate::support::{Portcullis, leaked_windows, raw_http, scratch};
use serde_json::Value;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn request_text(case: &Case, id: &str) -> String {
    let mut text = format!("{} {} HTTP/1.1\r\nhost: api.example.com\r\nx-test-case: {id}\r\n", case.method, case.path);
    for (k, v) in &case.headers {
        text.push_str(&format!("{k}: {v}\r\n"));
    }
    text.push_str("connection: close\r\n\r\n");
    text
}

pub(crate) fn run_corpus(envoy: &Envoy, upstream: &Upstream, cases: &[Case], mode: &str) -> Vec<String> {
    let mut failures = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let id = format!("{mode}-{i}");
        let Some(resp) = raw_http(envoy.listener, &request_text(case, &id)) else {
            failures.push(format!("[{mode}] {}: no HTTP response", case.name));
            continue;
        };
        if resp.status != case.status {
            failures.push(format!(
                "[{mode}] {}: status {} want {} body {}",
                case.name, resp.status, case.status, resp.body
            ));
            continue;
        }
        // The fixture turns on response.security_headers: the client sees them on every answer.
        if resp.header("x-content-type-options") != Some("nosniff") || resp.header("x-frame-options") != Some("DENY") {
            failures.push(format!("[{mode}] {}: security headers missing", case.name));
        }
        if case.status == 200 {
            let echoed: Value = serde_json::from_str(&resp.body).unwrap_or(Value::Null);
            let user = echoed["headers"]["x-user-id"].as_str().map(str::to_string);
            if user != case.user {
                failures.push(format!("[{mode}] {}: upstream saw x-user-id {user:?}, want {:?}", case.name, case.user));
            }
            // The issuer header travels in the cached token as a marker for its `iss` (written
            // once): the upstream must see the issuer itself, and only with an identity.
            let issuer = echoed["headers"]["x-user-issuer"].as_str();
            let known = [corpus::ISSUER, corpus::PEM_ISSUER, corpus::HMAC_ISSUER, "urn:portcullis:api-key"];
            if issuer.is_some() != user.is_some() || issuer.is_some_and(|i| !known.contains(&i)) {
                failures.push(format!("[{mode}] {}: upstream saw x-user-issuer {issuer:?}", case.name));
            }
            if !upstream.saw(&id) {
                failures.push(format!("[{mode}] {}: allowed but upstream not called", case.name));
            }
            continue;
        }
        if upstream.saw(&id) {
            failures.push(format!("[{mode}] {}: denied but the upstream was called", case.name));
        }
        let body: Value = serde_json::from_str(&resp.body).unwrap_or(Value::Null);
        if body["reason"] != case.reason {
            failures.push(format!("[{mode}] {}: reason {} want {}", case.name, body["reason"], case.reason));
        }
        if resp.header("cache-control") != Some("no-store") {
            failures.push(format!("[{mode}] {}: cache-control {:?}", case.name, resp.header("cache-control")));
        }
        if case.status == 401 && !resp.header("www-authenticate").is_some_and(|v| v.starts_with("Bearer realm=")) {
            failures.push(format!("[{mode}] {}: www-authenticate {:?}", case.name, resp.header("www-authenticate")));
        }
        if let Some(want) = case.challenge
            && !resp.header("www-authenticate").is_some_and(|v| v.contains(want))
        {
            failures.push(format!(
                "[{mode}] {}: www-authenticate {:?} lacks {want}",
                case.name,
                resp.header("www-authenticate")
            ));
        }
    }
    failures
}

#[test]
fn envoy_end_to_end() {
    let dir = scratch("envoy");
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs() as i64;
    let cases = corpus::cases(now);
    let upstream = Upstream::start();

    let mut portcullis = Portcullis::start(&dir, "", &[("RUST_LOG", "trace")]);
    let grpc_port = portcullis.grpc.port();

    let mut envoys = Vec::new();
    let mut failures = Vec::new();
    for (mode, raw) in [("map", false), ("raw", true)] {
        let envoy = start_envoy(&dir, &format!("envoy-{mode}"), grpc_port, upstream.addr, raw);
        // Ready once the authz cluster is healthy and a public route passes end to end.
        crate::support::envoy::wait_ready(&envoy);
        failures.extend(run_corpus(&envoy, &upstream, &cases, mode));
        envoys.push(envoy);
    }
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));

    // Portcullis stopped: Envoy fails closed with 503 and never calls the upstream.
    portcullis.proc.stop();
    for envoy in &envoys {
        let case = &cases[0];
        for attempt in 0..3 {
            let id = format!("down-{}-{attempt}", envoy.listener.port());
            let resp = raw_http(envoy.listener, &request_text(case, &id)).expect("response while portcullis is down");
            assert_eq!(resp.status, 503, "with Portcullis stopped: {}", resp.body);
            assert!(!upstream.saw(&id), "upstream called while Portcullis was down");
        }
    }

    let secrets = corpus::secrets(&cases);
    assert!(secrets.len() > 40, "leak test needs the corpus tokens");
    let mut outputs = vec![("portcullis", portcullis.proc.output())];
    for envoy in &envoys {
        outputs.push(("envoy", envoy.proc.output()));
    }
    let trace_lines = outputs[0].1.lines().count();
    assert!(trace_lines > 100, "portcullis ran at trace level but printed only {trace_lines} lines");
    for (name, output) in &outputs {
        let hits = leaked_windows(&secrets, output);
        assert!(hits.is_empty(), "{name} output contains token material: {:?}", &hits[..hits.len().min(5)]);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn deploy_envoy_configs_validate() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/envoy");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("deploy/envoy") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        // module.yaml names its policy; validation runs the module's configuration check.
        let path = if path.ends_with("module.yaml") { module_config_for(&path, &dev_policy()) } else { path };
        let out = validate(&path);
        assert!(
            out.status.success(),
            "{} failed validation:\n{}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        checked += 1;
    }
    assert!(checked >= 3, "deploy/envoy has fewer configs than expected");
    // A policy with problems makes Envoy refuse the module's configuration, with the
    // check-config messages in Envoy's log.
    let scratch = crate::support::scratch("envoy-validate");
    let bad = scratch.join("bad-policy.yaml");
    std::fs::write(&bad, "issuers: 3\n").expect("bad policy");
    let out = validate(&module_config_for(&dir.join("module.yaml"), &bad));
    let log = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a bad policy validated:\n{log}");
    assert!(log.contains("bad-policy.yaml:1:1: issuers: invalid type"), "no check-config message:\n{log}");
    let _ = std::fs::remove_dir_all(&scratch);
}

fn validate(config: &std::path::Path) -> std::process::Output {
    Command::new(crate::support::envoy_binary())
        .args(["--mode", "validate", "--use-dynamic-base-id", "-c"])
        .arg(config)
        .env("ENVOY_DYNAMIC_MODULES_SEARCH_PATH", crate::support::envoy::module_dir())
        .output()
        .expect("run envoy --mode validate")
}

fn dev_policy() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/dev/policy.yaml")
}

/// deploy/envoy/module.yaml with its policy file replaced by `policy`, beside `policy`.
fn module_config_for(module_yaml: &std::path::Path, policy: &std::path::Path) -> std::path::PathBuf {
    let text = std::fs::read_to_string(module_yaml).expect("module.yaml");
    let from = "policy_file: /etc/portcullis/policy.yaml";
    assert!(text.contains(from), "module.yaml no longer names /etc/portcullis/policy.yaml");
    let out = std::env::temp_dir().join(format!(
        "portcullis-module-{}-{}.yaml",
        std::process::id(),
        crate::support::free_port()
    ));
    std::fs::write(&out, text.replace(from, &format!("policy_file: {}", policy.display()))).expect("write");
    out
}

pub(crate) fn get_with_token(envoy: &Envoy, token: &str) -> (u16, String) {
    let request = format!(
        "GET /api/items HTTP/1.1\r\nhost: api.example.com\r\nauthorization: Bearer {token}\r\nconnection: close\r\n\r\n"
    );
    let resp = raw_http(envoy.listener, &request).expect("response");
    let reason = serde_json::from_str::<Value>(&resp.body).ok().and_then(|b| b["reason"].as_str().map(str::to_string));
    (resp.status, reason.unwrap_or_default())
}

#[test]
fn revocations_take_effect_on_the_next_request_through_envoy() {
    let dir = scratch("envoy-revoke");
    let upstream = Upstream::start();
    let portcullis = Portcullis::start(&dir, "", &[]);
    let envoy = envoy_in_front(&dir, &portcullis, &upstream);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs() as i64;
    let sign = |claims: &Value| corpus::sign(jsonwebtoken::Algorithm::RS256, Some("rsa-1"), claims);
    let revoke = |body: String| {
        let resp = portcullis.admin_request("POST", "/v1/revocations", &body).expect("admin");
        assert_eq!(resp.status, 201, "{}", resp.body);
    };
    let revoked = (401, "token_revoked".to_string());

    // By jti.
    let mut by_jti = corpus::claims(corpus::ISSUER, "jti-user", now);
    by_jti["jti"] = serde_json::json!("jti-to-revoke");
    let token = sign(&by_jti);
    assert_eq!(get_with_token(&envoy, &token).0, 200);
    assert_eq!(get_with_token(&envoy, &token).0, 200, "cached");
    revoke(format!(r#"{{"jti":"jti-to-revoke","iss":"{}"}}"#, corpus::ISSUER));
    assert_eq!(get_with_token(&envoy, &token), revoked, "jti revocation on the very next request");

    // By subject before T: the older token is refused, a newer one of the subject passes.
    let mut older = corpus::claims(corpus::ISSUER, "sub-user", now);
    older["iat"] = serde_json::json!(now - 20);
    let older = sign(&older);
    assert_eq!(get_with_token(&envoy, &older).0, 200);
    let before = time::OffsetDateTime::from_unix_timestamp(now - 10)
        .expect("time")
        .format(&time::format_description::well_known::Rfc3339)
        .expect("format");
    revoke(format!(r#"{{"sub":"sub-user","iss":"{}","before":"{before}"}}"#, corpus::ISSUER));
    assert_eq!(get_with_token(&envoy, &older), revoked, "subject revocation on the very next request");
    let mut newer = corpus::claims(corpus::ISSUER, "sub-user", now);
    newer["iat"] = serde_json::json!(now);
    newer["jti"] = serde_json::json!("newer");
    assert_eq!(get_with_token(&envoy, &sign(&newer)).0, 200, "a token issued after T still passes");

    // By session id.
    let mut session = corpus::claims(corpus::ISSUER, "sid-user", now);
    session["sid"] = serde_json::json!("session-42");
    let token = sign(&session);
    assert_eq!(get_with_token(&envoy, &token).0, 200);
    revoke(format!(r#"{{"sid":"session-42","iss":"{}"}}"#, corpus::ISSUER));
    assert_eq!(get_with_token(&envoy, &token), revoked, "session revocation on the very next request");

    let list = portcullis.admin_request("GET", "/v1/revocations", "").expect("list");
    assert_eq!(
        serde_json::from_str::<Value>(&list.body).expect("json")["revocations"].as_array().map(Vec::len),
        Some(3)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// GET `path` with `headers` through Envoy: (status, reason or upstream's x-tenant-id).
fn through(envoy: &Envoy, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let (status, body) = crate::support::envoy::get(envoy, path, headers);
    let detail = if status == 200 {
        body["headers"]["x-tenant-id"].as_str().unwrap_or("<none>").to_string()
    } else {
        body["reason"].as_str().unwrap_or_default().to_string()
    };
    (status, detail)
}

#[test]
fn tenant_isolation_through_envoy() {
    let dir = scratch("envoy-tenants");
    let upstream = Upstream::start();
    let portcullis = Portcullis::start(&dir, "", &[]);
    let envoy = envoy_in_front(&dir, &portcullis, &upstream);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs() as i64;
    let sign = |sub: &str, tenants: Value| {
        let mut claims = corpus::claims(corpus::ISSUER, sub, now);
        claims["tenants"] = tenants;
        format!("Bearer {}", corpus::sign(jsonwebtoken::Algorithm::RS256, Some("rsa-1"), &claims))
    };
    let alice = sign("alice", serde_json::json!(["acme", "globex"]));
    let bob = sign("bob", serde_json::json!([]));
    let carol = sign("carol", serde_json::json!([]));
    let a = |extra: &[(&'static str, &'static str)]| {
        let mut h = vec![("authorization", alice.as_str())];
        h.extend_from_slice(extra);
        h
    };
    type Case<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>, (u16, &'a str));
    let cases: Vec<Case> = vec![
        ("member via claim", "/tenants/acme/x", a(&[]), (200, "acme")),
        ("client header cannot add a tenant", "/tenants/acme/x", a(&[("x-tenant-id", "acme")]), (200, "acme")),
        ("not a member", "/tenants/initech/x", a(&[]), (403, "tenant_forbidden")),
        ("header disagrees with path", "/tenants/acme/x", a(&[("x-tenant-id", "initech")]), (400, "tenant_conflict")),
        ("spoofed header alone, non-member", "/api/items", a(&[("x-tenant-id", "initech")]), (403, "tenant_forbidden")),
        ("spoofed x-customer-id is dropped", "/api/items", a(&[("x-customer-id", "initech")]), (200, "<none>")),
        ("upper case id", "/tenants/ACME/x", a(&[]), (400, "invalid_request")),
        ("percent-encoded id", "/tenants/ac%6De/x", a(&[]), (400, "path_invalid")),
        ("tenant route without a tenant", "/tenants", a(&[]), (400, "tenant_missing")),
        ("personal tenant, owner", "/tenants/user:alice/x", a(&[]), (200, "user:alice")),
        (
            "personal tenant, listed in the file",
            "/tenants/user:alice/x",
            vec![("authorization", bob.as_str())],
            (403, "tenant_forbidden"),
        ),
        (
            "file member with role",
            "/tenants/globex-eu/admin",
            vec![("authorization", carol.as_str())],
            (200, "globex-eu"),
        ),
        ("tenant role missing", "/tenants/acme/admin", a(&[]), (403, "tenant_forbidden")),
    ];
    let mut failures = Vec::new();
    for (name, path, headers, want) in cases {
        let got = through(&envoy, path, &headers);
        if (got.0, got.1.as_str()) != want {
            failures.push(format!("{name}: {path} -> {got:?}, want {want:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Revocation by tenant: tokens issued at or before T are refused for that tenant only.
    let resp = portcullis.admin_request("POST", "/v1/revocations", r#"{"tenant":"acme"}"#).expect("admin");
    assert_eq!(resp.status, 201, "{}", resp.body);
    assert_eq!(through(&envoy, "/tenants/acme/x", &a(&[])), (403, "tenant_forbidden".to_string()));
    assert_eq!(through(&envoy, "/tenants/globex/x", &a(&[])), (200, "globex".to_string()));
    let _ = std::fs::remove_dir_all(&dir);
}

fn from(envoy: &Envoy, client: [u8; 4], token: &str, xff: Option<&str>) -> (u16, String) {
    from_with(envoy, client, "GET", Some(token), xff)
}

fn from_with(envoy: &Envoy, client: [u8; 4], method: &str, token: Option<&str>, xff: Option<&str>) -> (u16, String) {
    let xff = xff.map(|x| format!("x-forwarded-for: {x}\r\n")).unwrap_or_default();
    let auth = token.map(|t| format!("authorization: Bearer {t}\r\n")).unwrap_or_default();
    let request = format!(
        "{method} /api/items HTTP/1.1\r\nhost: api.example.com\r\n{auth}{xff}origin: https://other.example\r\naccess-control-request-method: POST\r\nconnection: close\r\n\r\n"
    );
    let resp = crate::support::raw_http_from(client.into(), envoy.listener, &request).expect("response");
    let reason = serde_json::from_str::<Value>(&resp.body).ok().and_then(|b| b["reason"].as_str().map(str::to_string));
    (resp.status, reason.unwrap_or_default())
}

#[test]
fn auto_block_and_client_ip_through_envoy() {
    let dir = scratch("envoy-ip");
    let upstream = Upstream::start();
    let extra = "ip: { trusted_cidrs: [127.0.0.9], deny: [127.0.0.66], auto_block: { failures: 5, window: 15m, block_for: 3s } }";
    let portcullis = Portcullis::start(&dir, extra, &[]);
    let envoy = envoy_in_front(&dir, &portcullis, &upstream);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs() as i64;
    let valid =
        corpus::sign(jsonwebtoken::Algorithm::RS256, Some("rsa-1"), &corpus::claims(corpus::ISSUER, "ip-user", now));
    let parts: Vec<&str> = valid.split('.').collect();
    let forged = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        corpus::claims(corpus::ISSUER, "root", now).to_string(),
    );
    let tampered = format!("{}.{}.{}", parts[0], forged, parts[2]);
    let mut old = corpus::claims(corpus::ISSUER, "ip-user", now);
    old["exp"] = serde_json::json!(now - 600);
    let expired = corpus::sign(jsonwebtoken::Algorithm::RS256, Some("rsa-1"), &old);
    let blocked = (403, "ip_blocked".to_string());

    // Static deny list.
    assert_eq!(from(&envoy, [127, 0, 0, 66], &valid, None), blocked);
    // 5 expired tokens never block.
    for _ in 0..6 {
        assert_eq!(from(&envoy, [127, 0, 0, 4], &expired, None).1, "token_expired");
    }
    assert_eq!(from(&envoy, [127, 0, 0, 4], &valid, None).0, 200);
    // 5 tampered tokens block that client, even with a valid token; others are unaffected.
    for _ in 0..5 {
        assert_eq!(from(&envoy, [127, 0, 0, 2], &tampered, None).1, "token_invalid");
    }
    assert_eq!(from(&envoy, [127, 0, 0, 2], &valid, None), blocked);
    assert_eq!(from(&envoy, [127, 0, 0, 3], &valid, None).0, 200, "another client is unaffected");
    // Preflights from an origin the CORS policy does not list reach Portcullis: they carry no
    // credential and never count; credential guessing over OPTIONS does.
    for _ in 0..6 {
        assert_eq!(from_with(&envoy, [127, 0, 0, 7], "OPTIONS", None, None).1, "credential_missing");
    }
    assert_eq!(from(&envoy, [127, 0, 0, 7], &valid, None).0, 200, "preflights are not failures");
    for _ in 0..5 {
        assert_eq!(from_with(&envoy, [127, 0, 0, 8], "OPTIONS", Some(&tampered), None).1, "token_invalid");
    }
    assert_eq!(from(&envoy, [127, 0, 0, 8], &valid, None), blocked, "bad tokens over OPTIONS count");
    let list = portcullis.admin_request("GET", "/v1/blocks", "").expect("blocks");
    assert!(list.body.contains("127.0.0.2"), "{}", list.body);
    let metrics = portcullis.get("/metrics").map(|r| r.body).unwrap_or_default();
    assert!(metrics.contains("portcullis_ip_blocks_active 2"), "{metrics}");
    // The block expires after block_for (3 s).
    std::thread::sleep(Duration::from_millis(3200));
    assert_eq!(from(&envoy, [127, 0, 0, 2], &valid, None).0, 200, "block expired");

    // An untrusted peer's forged x-forwarded-for changes nothing: the peer is counted.
    for _ in 0..5 {
        from(&envoy, [127, 0, 0, 5], &tampered, Some("198.51.100.7"));
    }
    assert_eq!(from(&envoy, [127, 0, 0, 5], &valid, None), blocked, "the peer was blocked, not the forged address");
    // Behind a trusted proxy (127.0.0.9) the XFF client is counted and blocked, the proxy never.
    for _ in 0..5 {
        from(&envoy, [127, 0, 0, 9], &tampered, Some("198.51.100.8"));
    }
    assert_eq!(from(&envoy, [127, 0, 0, 9], &valid, Some("198.51.100.8")), blocked, "XFF client blocked");
    assert_eq!(from(&envoy, [127, 0, 0, 9], &valid, Some("198.51.100.9")).0, 200, "the trusted proxy itself never");
    assert_eq!(from(&envoy, [127, 0, 0, 9], &valid, None).0, 200);
    // Admin unblock.
    let resp = portcullis.admin_request("DELETE", "/v1/blocks", r#"{"cidr":"198.51.100.8"}"#).expect("unblock");
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_eq!(from(&envoy, [127, 0, 0, 9], &valid, Some("198.51.100.8")).0, 200);
    let _ = std::fs::remove_dir_all(&dir);
}

fn send_from(
    envoy: &Envoy,
    client: [u8; 4],
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> crate::support::HttpResponse {
    let mut request = format!("{method} {path} HTTP/1.1\r\nhost: api.example.com\r\ncontent-length: 0\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("connection: close\r\n\r\n");
    crate::support::raw_http_from(client.into(), envoy.listener, &request).expect("response")
}

#[test]
fn rate_limits_through_envoy() {
    let dir = scratch("envoy-rate");
    let upstream = Upstream::start();
    let portcullis = Portcullis::start(&dir, "", &[]);
    let envoy = envoy_in_front(&dir, &portcullis, &upstream);
    // `auth` tier: 5 per minute per client IP on POST /login.
    for i in 0..5 {
        assert_eq!(send_from(&envoy, [127, 0, 0, 20], "POST", "/login", &[]).status, 200, "login {i}");
    }
    let sixth = send_from(&envoy, [127, 0, 0, 20], "POST", "/login", &[]);
    assert_eq!(sixth.status, 429, "{}", sixth.body);
    assert!(sixth.body.contains("rate_limited"), "{}", sixth.body);
    let retry: u32 = sixth.header("retry-after").and_then(|v| v.parse().ok()).expect("retry-after");
    assert!((1..=60).contains(&retry), "retry-after {retry}");
    assert_eq!(send_from(&envoy, [127, 0, 0, 21], "POST", "/login", &[]).status, 200, "another client passes");

    // `per_user` tier: two users behind one IP are limited separately.
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs() as i64;
    let bearer = |sub: &str| {
        format!(
            "Bearer {}",
            corpus::sign(jsonwebtoken::Algorithm::RS256, Some("rsa-1"), &corpus::claims(corpus::ISSUER, sub, now))
        )
    };
    let (alice, bob) = (bearer("rate-alice"), bearer("rate-bob"));
    for i in 0..5 {
        let r = send_from(&envoy, [127, 0, 0, 22], "GET", "/limited/x", &[("authorization", &alice)]);
        assert_eq!(r.status, 200, "alice {i}: {}", r.body);
    }
    assert_eq!(send_from(&envoy, [127, 0, 0, 22], "GET", "/limited/x", &[("authorization", &alice)]).status, 429);
    assert_eq!(
        send_from(&envoy, [127, 0, 0, 22], "GET", "/limited/x", &[("authorization", &bob)]).status,
        200,
        "bob has his own bucket"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sidecar_example_over_a_unix_socket_serves_allow_and_deny() {
    let dir = scratch("sidecar-uds");
    let socket = dir.join("authz.sock");
    let upstream = Upstream::start();
    let portcullis = Portcullis::start_on(&dir, Some(&format!("unix:{}", socket.display())), "", &[]);
    let envoy = crate::support::envoy::start_envoy_from(
        &dir,
        "envoy-sidecar",
        "sidecar-uds.yaml",
        upstream.addr,
        vec![("path: /var/run/portcullis/authz.sock", format!("path: {}", socket.display()))],
    );
    crate::support::envoy::wait_ready(&envoy);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs() as i64;
    let token =
        corpus::sign(jsonwebtoken::Algorithm::RS256, Some("rsa-1"), &corpus::claims(corpus::ISSUER, "uds-user", now));
    let (status, body) =
        crate::support::envoy::get(&envoy, "/api/items", &[("authorization", &format!("Bearer {token}"))]);
    assert_eq!((status, body["headers"]["x-user-id"].as_str()), (200, Some("uds-user")));
    let (status, body) = crate::support::envoy::get(&envoy, "/api/items", &[]);
    assert_eq!((status, body["reason"].as_str()), (401, Some("credential_missing")));
    drop(portcullis);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `mode: dry_run` through a real Envoy: a request the route would deny reaches the upstream
/// without identity, and is counted and audited as the deny it would have been; the enforced
/// route beside it still denies.
#[test]
fn a_dry_run_route_records_instead_of_denying() {
    use crate::support::Launch;
    let dir = scratch("envoy-dry-run");
    let upstream = Upstream::start();
    let portcullis = Portcullis::launch(
        &dir,
        Launch {
            replace: &[(
                "{ name: admin, match: { path_prefix: /admin }, require: { roles: [admin] } }",
                "{ name: admin, match: { path_prefix: /admin }, require: { roles: [admin] }, mode: dry_run }",
            )],
            ..Launch::default()
        },
    );
    let envoy = envoy_in_front(&dir, &portcullis, &upstream);
    let token = corpus::sign(
        jsonwebtoken::Algorithm::RS256,
        Some("rsa-1"),
        &corpus::claims(corpus::ISSUER, "dry", crate::support::now()),
    );
    let bearer = format!("Bearer {token}");
    let (status, body) =
        crate::support::envoy::get(&envoy, "/admin/users", &[("authorization", &bearer), ("x-user-id", "root")]);
    assert_eq!(status, 200, "a would-deny request reaches the upstream: {body}");
    assert_eq!(
        body["headers"]["x-user-id"],
        serde_json::Value::Null,
        "without identity (the forged one removed): {body}"
    );
    // The token was not accepted for this route, so the upstream must not get it to trust.
    assert_eq!(body["headers"]["authorization"], serde_json::Value::Null, "{body}");
    let (status, _) = crate::support::envoy::get(&envoy, "/admin/critical/keys", &[("authorization", &bearer)]);
    assert_eq!(status, 403, "the enforced route beside it still denies");
    let metrics = portcullis.get("/metrics").map(|r| r.body).unwrap_or_default();
    let counted = metrics.lines().any(|l| {
        l.contains("portcullis_decisions_total")
            && l.contains("mode=\"dry_run\"")
            && l.contains("reason=\"role_required\"")
            && l.ends_with(" 1")
    });
    assert!(counted, "{metrics}");
    let audited = || {
        let out = portcullis.proc.output();
        let line = out.lines().find(|l| l.contains("\"enforced\":false")).map(str::to_string);
        line.ok_or(())
    };
    let (line, _) =
        crate::support::eventually_blocking(std::time::Duration::from_secs(5), "no dry-run audit line", audited);
    assert!(line.contains("\"reason\":\"role_required\"") && line.contains("\"decision\":\"deny\""), "{line}");
    drop(envoy);
    drop(portcullis);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 24 through a real Envoy: a `deny: true` route selected by a query parameter, and one
/// selected by a header. What Envoy hands Portcullis (the raw query, a header sent twice) is what
/// the upstream gets, so any spelling or copy some framework would read differently is refused.
#[test]
fn header_and_query_matchers_select_deny_routes_through_envoy() {
    use crate::support::Launch;
    let dir = scratch("envoy-matchers");
    let upstream = Upstream::start();
    let guards = "  - { name: no-debug, match: { path_prefix: /, query: { debug: { present: true } } }, deny: true, reason: no debug mode }\n  - { name: no-canary, match: { path_prefix: /api, headers: { x-canary: { equals: \"1\" } } }, deny: true }\n  - { name: admin, match: { path_prefix: /admin }";
    let portcullis = Portcullis::launch(
        &dir,
        Launch { replace: &[("  - { name: admin, match: { path_prefix: /admin }", guards)], ..Launch::default() },
    );
    let envoy = envoy_in_front(&dir, &portcullis, &upstream);
    let token = corpus::sign(
        jsonwebtoken::Algorithm::RS256,
        Some("rsa-1"),
        &corpus::claims(corpus::ISSUER, "m", crate::support::now()),
    );
    let bearer = format!("Bearer {token}");
    let auth = ("authorization", bearer.as_str());
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], u16);
    let cases: &[Case] = &[
        ("/api/items", &[auth], 200),
        ("/api/items?debug=1", &[auth], 403),
        ("/api/items?page=2&debug", &[auth], 403),
        // Other spellings of the key (ASP.NET folds case; qs, Rack and PHP read `debug[]`) and a
        // `;`-joined pair (one parameter to Werkzeug, two to a `;`-splitting parser).
        ("/api/items?Debug=1", &[auth], 400),
        ("/api/items?debug%5B%5D=1", &[auth], 400),
        ("/api/items?page=2;debug=1", &[auth], 400),
        ("/api/items", &[auth, ("x-canary", "1")], 403),
        ("/api/items", &[auth, ("x-canary", "0")], 200),
        // Sent twice: Flask reads the first, others the last or both.
        ("/api/items", &[auth, ("x-canary", "0"), ("x-canary", "1")], 400),
        ("/api/items", &[auth, ("x-canary", "0, 1")], 400),
        // The underscore twin a CGI upstream reads as `x-canary`.
        ("/api/items", &[auth, ("x_canary", "1")], 400),
    ];
    let mut failures = Vec::new();
    for (path, headers, want) in cases {
        let (status, body) = crate::support::envoy::get(&envoy, path, headers);
        if status != *want {
            failures.push(format!("{path} {headers:?}: {status}, want {want}: {body}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    drop(envoy);
    drop(portcullis);
    let _ = std::fs::remove_dir_all(&dir);
}
