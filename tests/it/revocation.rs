//! The revocation behaviour suite on the memory store, the claims cache under concurrency and
//! a moving clock, and the admin API's refusals.

use crate::support::{InProcess, corpus, raw_http, scratch};
use portcullis::clock::Clock;
use portcullis::config::parse_and_validate;
use portcullis::dev::request::{HeaderEncoding, check_request};
use portcullis::server::AppState;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// The suite on the memory backend, ephemeral and journaled; a journaled store reopened
/// (a restart) holds what it held, and a second process cannot open the same folder.
#[tokio::test]
async fn memory_store_behaviour() {
    use portcullis::state::fleet::FleetState;
    use portcullis::state::journal::{Journal, MemoryPersist};
    use portcullis::state::local::LocalState;
    use portcullis::state::model::Unbounded;
    use portcullis::state::revocation::RevocationStore;
    let clock: Arc<dyn Clock> = Arc::new(portcullis::clock::SystemClock);
    let ephemeral = FleetState::with(Arc::new(LocalState::new()), MemoryPersist::Ephemeral, clock.clone());
    crate::support::revocation_suite::run(&ephemeral).await;
    let dir = scratch("journal-suite");
    let now = clock.now();
    let local = Arc::new(LocalState::new());
    let journal = Journal::open(&dir, local.clone(), now.0, &Unbounded).expect("journal");
    let journaled = FleetState::with(local, MemoryPersist::Journal(journal), clock.clone());
    crate::support::revocation_suite::run(&journaled).await;
    let held = journaled.list(now);
    assert_eq!(held.len(), 3, "{held:?}");
    let journaled_later = journaled.list(portcullis::decision::UnixTime(now.0 + 100));
    let second = Journal::open(&dir, Arc::new(LocalState::new()), now.0, &Unbounded);
    assert!(second.is_err_and(|e| e.to_string().contains("held by another process")));
    drop(journaled);
    let reopened = Arc::new(LocalState::new());
    let _journal = Journal::open(&dir, reopened.clone(), now.0, &Unbounded).expect("reopen");
    // The suite's purge ran at now + 100 s: compare there.
    let later = portcullis::decision::UnixTime(now.0 + 100);
    assert_eq!(reopened.revocation_list(later), journaled_later, "a restart replays the journal");
    let _ = std::fs::remove_dir_all(&dir);
}

const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

async fn start(extra: &str) -> InProcess {
    start_renamed(extra, &[]).await
}

/// Like [`start`], with issuer names replaced: a test that counts a global metric (one process
/// runs every integration test) gives its issuers names no other test uses.
async fn start_renamed(extra: &str, renames: &[(&str, &str)]) -> InProcess {
    InProcess::start_at_now(&settings_renamed(extra, renames)).await
}

fn settings_renamed(extra: &str, renames: &[(&str, &str)]) -> portcullis::config::Settings {
    let dir = scratch("rev");
    std::fs::write(dir.join("admin-token"), format!("{ADMIN_TOKEN}\n")).expect("token file");
    let mut policy = crate::support::policy_with_ports("127.0.0.1:0", 0)
        .replace("health: \"127.0.0.1:0\"", "health: \"127.0.0.1:0\", admin: \"127.0.0.1:0\"");
    for (from, to) in renames {
        policy = policy.replace(from, to);
    }
    // The server runs in this test only: its state may end with it.
    let state =
        if extra.contains("state:") { "" } else { "state: { backend: memory, acknowledge_ephemeral_state: true }" };
    let text = format!("{policy}\nadmin: {{ token_file: {} }}\n{extra}\n{state}\n", dir.join("admin-token").display());
    let settings = parse_and_validate(&text, &corpus::fixtures()).unwrap_or_else(|e| panic!("{e}"));
    // The token was read into the settings; nothing reads the folder again.
    let _ = std::fs::remove_dir_all(&dir);
    settings
}

async fn check(state: &AppState, token: &str) -> (u16, String) {
    let bearer = format!("Bearer {token}");
    crate::support::outcome(
        &state.check(check_request("GET", "/api/items", &[("authorization", &bearer)], HeaderEncoding::Map)).await,
    )
}

fn counter(metrics: &str, prefix: &str) -> f64 {
    metrics.lines().find_map(|l| l.strip_prefix(prefix)).and_then(|v| v.trim().parse().ok()).unwrap_or(0.0)
}

fn verifications(issuer: &str, result: &str) -> f64 {
    let handle = portcullis::telemetry::metrics::install().expect("recorder");
    counter(
        &handle.render(),
        &format!("portcullis_jwt_verifications_total{{issuer=\"{issuer}\",result=\"{result}\"}} "),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_identical_checks_verify_once_and_tampered_floods_once_per_negative_ttl() {
    portcullis::telemetry::metrics::install();
    // Issuer names of this test's own: the verification counters are global to the process.
    const PEM: &str = "https://pem-single-flight.test/";
    const HMAC: &str = "https://hmac-negative-ttl.test/";
    let server = start_renamed("", &[(corpus::PEM_ISSUER, PEM), (corpus::HMAC_ISSUER, HMAC)]).await;
    let now = server.clock().now().0;
    let token = corpus::sign_pem_issuer(&corpus::claims(PEM, "flash", now));
    let before = verifications(PEM, "ok");
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let (state, token) = (server.state.clone(), token.clone());
        tasks.push(tokio::spawn(async move { check(&state, &token).await.0 }));
    }
    for t in tasks {
        assert_eq!(t.await.expect("task"), 200);
    }
    let verified = verifications(PEM, "ok") - before;
    println!("200 concurrent identical checks: {verified} signature verification(s)");
    assert_eq!(verified, 1.0);

    let good = corpus::sign(jsonwebtoken::Algorithm::HS256, None, &corpus::claims(HMAC, "x", now));
    let parts: Vec<&str> = good.split('.').collect();
    let forged_payload = corpus::claims(HMAC, "root", now).to_string();
    use base64::Engine;
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(forged_payload),
        parts[2]
    );
    // A flood over 6.5 s of the injected clock: verified at 0 s and again once the 5 s
    // negative entry has expired, never in between.
    let before = verifications(HMAC, "bad_signature");
    for _ in 0..13 {
        for _ in 0..20 {
            assert_eq!(check(&server.state, &tampered).await, (401, "token_invalid".to_string()));
        }
        server.clock().advance(Duration::from_millis(500));
    }
    let verified = verifications(HMAC, "bad_signature") - before;
    println!("tampered flood: 260 checks over 6.5 s of clock, {verified} verifications");
    assert_eq!(verified, 2.0, "one verification per 5 s negative TTL");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_entry_is_refused_once_exp_passes() {
    let server = start("cache: { ttl: 10m, max_entries: 1000 }").await;
    let now = server.clock().now().0;
    let mut claims = corpus::claims(corpus::ISSUER, "short-lived", now);
    claims["exp"] = serde_json::json!(now + 60);
    let token = corpus::sign(jsonwebtoken::Algorithm::EdDSA, Some("ed-1"), &claims);
    assert_eq!(check(&server.state, &token).await.0, 200);
    assert_eq!(check(&server.state, &token).await.0, 200, "served from the cache");
    // Past exp and the 30 s leeway on the injected clock; the cache entry's own TTL has not run out.
    server.clock().set_secs(now + 60 + 31);
    assert_eq!(check(&server.state, &token).await, (401, "token_expired".to_string()));
}

fn admin(addr: SocketAddr, method: &str, path: &str, token: Option<&str>, body: &str) -> crate::support::HttpResponse {
    let auth = token.map(|t| format!("authorization: Bearer {t}\r\n")).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nhost: admin\r\n{auth}content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    raw_http(addr, &request).expect("admin response")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_refuses_without_the_token_and_rejects_malformed_bodies() {
    let server = start("").await;
    let addr = server.admin.expect("admin listener");
    let list = move |token| {
        let r = admin(addr, "GET", "/v1/revocations", token, "");
        (r.status, r.body)
    };
    let valid = format!(r#"{{"jti":"j-admin","iss":"{}"}}"#, corpus::ISSUER);
    let results = tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        for token in [None, Some("wrong-token-wrong-token"), Some(&ADMIN_TOKEN[..ADMIN_TOKEN.len() - 1])] {
            out.push(("unauthorized POST", admin(addr, "POST", "/v1/revocations", token, &valid).status, 401));
            out.push(("unauthorized DELETE", admin(addr, "DELETE", "/v1/cache", token, "").status, 401));
        }
        out.push(("empty list", list(Some(ADMIN_TOKEN)).0, 200));
        let t = Some(ADMIN_TOKEN);
        let bad = [
            "not json",
            "{}",
            r#"{"jti":"a","sub":"b"}"#,
            r#"{"jti":"a","iss":"https://unknown.test/"}"#,
            r#"{"jti":"a"}"#,
            r#"{"sub":"a","iss":"https://issuer.test/","before":"yesterday"}"#,
            r#"{"jti":"a","iss":"https://issuer.test/","expires_at":"2001-01-01T00:00:00Z"}"#,
            r#"{"jti":"a","iss":"https://issuer.test/","surprise":1}"#,
            r#"{"jti":"","iss":"https://issuer.test/"}"#,
            r#"{"sid":"a","iss":"https://issuer.test/","before":"2030-01-01T00:00:00Z"}"#,
        ];
        for body in bad {
            out.push(("malformed", admin(addr, "POST", "/v1/revocations", t, body).status, 400));
        }
        out.push(("bad cache query", admin(addr, "DELETE", "/v1/cache?iss=x", t, "").status, 400));
        out.push(("created", admin(addr, "POST", "/v1/revocations", t, &valid).status, 201));
        out.push(("clear cache", admin(addr, "DELETE", "/v1/cache", t, "").status, 200));
        out.push((
            "clear subject",
            admin(addr, "DELETE", "/v1/cache?sub=alice&iss=https://issuer.test/", t, "").status,
            200,
        ));
        (out, list(Some(ADMIN_TOKEN)))
    })
    .await
    .expect("admin calls");
    let (calls, (status, body)) = results;
    for (what, got, want) in calls {
        assert_eq!(got, want, "{what}");
    }
    assert_eq!(status, 200);
    let listed: serde_json::Value = serde_json::from_str(&body).expect("json");
    let items = listed["revocations"].as_array().expect("array");
    assert_eq!(items.len(), 1, "only the authorized, well-formed revocation was stored: {body}");
    assert_eq!(items[0]["jti"], "j-admin");
    assert!(items[0]["holds_until"].as_str().is_some_and(|t| t.ends_with('Z')), "RFC 3339: {body}");
}

#[test]
fn the_openapi_file_documents_every_admin_route() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/admin-openapi.yaml")).expect("openapi");
    let doc: serde_json::Value = serde_saphyr::from_str(&text).expect("YAML");
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
    for (path, method) in [
        ("/v1/revocations", "get"),
        ("/v1/revocations", "post"),
        ("/v1/cache", "delete"),
        ("/v1/tenants/{tenant}/members", "put"),
        ("/v1/tenants/{tenant}/members", "delete"),
        ("/v1/blocks", "get"),
        ("/v1/blocks", "post"),
        ("/v1/blocks", "delete"),
        ("/v1/api-keys", "get"),
        ("/v1/api-keys", "put"),
        ("/v1/api-keys/revocations", "get"),
        ("/v1/api-keys/revocations", "post"),
    ] {
        assert!(doc["paths"][path][method].is_object(), "{method} {path} undocumented");
        assert!(doc["paths"][path][method]["responses"]["401"].is_object(), "{method} {path}: 401 undocumented");
    }
}

/// Revocations live until no token they can match is still acceptable: an issuer's
/// `max_token_age` plus its `leeway`; for an issuer without `max_token_age`, forever. A numeric
/// `jti` is revocable (sent as a number or as its digits).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_outlive_every_token_they_cover() {
    let server = start("").await;
    let addr = server.admin.expect("admin listener");
    let now = server.clock().now().0;
    let post = move |body: String| {
        let r = admin(addr, "POST", "/v1/revocations", Some(ADMIN_TOKEN), &body);
        (r.status, serde_json::from_str::<serde_json::Value>(&r.body).unwrap_or_default())
    };
    let (timed, never, numeric, tenant) = tokio::task::spawn_blocking(move || {
        (
            post(format!(r#"{{"jti":"bounded","iss":"{}"}}"#, corpus::ISSUER)),
            post(format!(r#"{{"jti":"unbounded","iss":"{}"}}"#, corpus::HMAC_ISSUER)),
            post(format!(r#"{{"jti":4711,"iss":"{}"}}"#, corpus::HMAC_ISSUER)),
            post(r#"{"tenant":"acme"}"#.to_string()),
        )
    })
    .await
    .expect("admin calls");
    assert_eq!(timed.0, 201, "{:?}", timed.1);
    // issuer.test: max_token_age 12h, leeway 30s.
    let until = time::OffsetDateTime::parse(
        timed.1["holds_until"].as_str().expect("expiry"),
        &time::format_description::well_known::Rfc3339,
    )
    .expect("RFC 3339")
    .unix_timestamp();
    assert_eq!(timed.1["expires_at"], serde_json::Value::Null, "no explicit end: {:?}", timed.1);
    assert_eq!(until - now, 12 * 3600 + 2 * 30 + 60, "max_token_age + 2 × leeway + the skew margin");
    assert_eq!((never.0, &never.1["holds_until"]), (201, &serde_json::Value::Null), "no max_token_age: never");
    assert_eq!((numeric.0, &numeric.1["jti"]), (201, &serde_json::json!("4711")));
    assert_eq!(tenant.1["holds_until"], serde_json::Value::Null, "a tenant revocation holds until its end or for ever");

    let mut claims = corpus::claims(corpus::HMAC_ISSUER, "numeric", now);
    claims["jti"] = serde_json::json!(4711);
    claims["exp"] = serde_json::json!(now + 90 * 86_400);
    let token = corpus::sign(jsonwebtoken::Algorithm::HS256, None, &claims);
    assert_eq!(check(&server.state, &token).await, (401, "token_revoked".into()));
    server.clock().advance(std::time::Duration::from_secs(30 * 86_400));
    server.state.purge_expired();
    assert_eq!(check(&server.state, &token).await, (401, "token_revoked".into()), "still revoked a month later");
}

/// Issue 32: a revocation's lifetime is read from the policy in force, not fixed when it was
/// written. Revoked under `max_token_age: 12h`, then a reload raises it to 48h: 13 hours later
/// (past the old bound) the revoked token — 13 h old, acceptable under 48h — is still refused.
/// Before, its expiry had been fixed at 12h30s and the token was accepted again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_raises_max_token_age_extends_revocations() {
    let server = start("").await;
    let addr = server.admin.expect("admin listener");
    let now = server.clock().now().0;
    let mut claims = corpus::claims(corpus::ISSUER, "late", now);
    claims["jti"] = serde_json::json!("raised");
    claims["exp"] = serde_json::json!(now + 10 * 86_400);
    let token = corpus::sign(jsonwebtoken::Algorithm::RS256, Some("rsa-1"), &claims);
    let posted = tokio::task::spawn_blocking(move || {
        let body = format!(r#"{{"jti":"raised","iss":"{}"}}"#, corpus::ISSUER);
        admin(addr, "POST", "/v1/revocations", Some(ADMIN_TOKEN), &body).status
    });
    assert_eq!(posted.await.expect("admin"), 201);
    assert_eq!(check(&server.state, &token).await, (401, "token_revoked".into()));
    let raised = settings_renamed("", &[("max_token_age: 12h", "max_token_age: 48h")]);
    server.state.replace_snapshot(raised.snapshot.clone());
    server.clock().advance(std::time::Duration::from_secs(13 * 3600));
    server.state.purge_expired();
    assert_eq!(check(&server.state, &token).await, (401, "token_revoked".into()), "past the old bound, still revoked");
    // Past the new bound the revocation is forgotten — and the token is too old anyway.
    server.clock().advance(std::time::Duration::from_secs(36 * 3600));
    server.state.purge_expired();
    assert_eq!(check(&server.state, &token).await, (401, "token_expired".into()));
}

/// An API-key revocation holds the key's digest: a revoked run-time key put back under another
/// name (admin API) is still refused (a revocation by name let it in again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_api_key_stays_revoked_under_any_name() {
    use sha2::Digest;
    let server = start("").await;
    let addr = server.admin.expect("admin listener");
    let key = portcullis::state::apikeys::new_key("pk_").expect("key");
    let sha = hex::encode(sha2::Sha256::digest(key.as_bytes()));
    let put = move |name: &'static str| {
        let body = format!(r#"{{"name":"{name}","sha256":"{sha}","scopes":["read"]}}"#);
        move || admin(addr, "PUT", "/v1/api-keys", Some(ADMIN_TOKEN), &body).status
    };
    let check_key = |state: Arc<AppState>, key: String| async move {
        let request = check_request("GET", "/api/items", &[("x-api-key", &key)], HeaderEncoding::Map);
        crate::support::outcome(&state.check(request).await)
    };
    assert_eq!(tokio::task::spawn_blocking(put("temp-a")).await.expect("put"), 201);
    assert_eq!(check_key(server.state.clone(), key.clone()).await.0, 200);
    let revoked = tokio::task::spawn_blocking(move || {
        admin(addr, "POST", "/v1/api-keys/revocations", Some(ADMIN_TOKEN), r#"{"name":"temp-a"}"#).status
    });
    assert_eq!(revoked.await.expect("revoke"), 201);
    assert_eq!(check_key(server.state.clone(), key.clone()).await, (401, "api_key_invalid".into()));
    assert_eq!(tokio::task::spawn_blocking(put("temp-b")).await.expect("put"), 201);
    assert_eq!(
        check_key(server.state.clone(), key).await,
        (401, "api_key_invalid".into()),
        "revoked under its new name too"
    );
    // Issue 32: the listing shows it revoked under its new name too (it showed `false`).
    let listed = tokio::task::spawn_blocking(move || admin(addr, "GET", "/v1/api-keys", Some(ADMIN_TOKEN), "").body);
    let listed: serde_json::Value = serde_json::from_str(&listed.await.expect("list")).expect("json");
    let keys = listed["keys"].as_array().expect("keys");
    let temp_b = keys.iter().find(|k| k["name"] == "temp-b").expect("temp-b listed");
    assert_eq!(temp_b["revoked"], true, "{listed}");
}
