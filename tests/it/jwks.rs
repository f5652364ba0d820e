//! Keys from identity providers: a JWKS served by the test over HTTP on loopback, rotated,
//! broken and hung while Portcullis keeps answering.

use crate::support::{InProcess, corpus, eventually, is, now};
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use portcullis::config::{Settings, parse_and_validate};
use serde_json::json;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const ISSUER: &str = "https://idp.test/";

#[derive(Clone)]
enum Mode {
    Serve(String),
    Fail,
    Hang,
}

/// The test's identity provider: a JWKS (and discovery document) whose behaviour the test sets.
#[derive(Clone)]
struct Idp {
    mode: Arc<Mutex<Mode>>,
    fetches: Arc<AtomicUsize>,
    addr: SocketAddr,
    discovery_issuer: Arc<Mutex<String>>,
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(corpus::fixtures().join("keys").join(name)).expect("fixture")
}

async fn jwks(State(idp): State<Idp>) -> impl IntoResponse {
    idp.fetches.fetch_add(1, Ordering::SeqCst);
    let mode = idp.mode.lock().expect("lock").clone();
    match mode {
        Mode::Serve(body) => {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, "application/json".parse().expect("header"));
            (StatusCode::OK, headers, body)
        }
        Mode::Fail => (StatusCode::INTERNAL_SERVER_ERROR, HeaderMap::new(), "boom".to_string()),
        Mode::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            (StatusCode::OK, HeaderMap::new(), String::new())
        }
    }
}

async fn discovery(State(idp): State<Idp>) -> impl IntoResponse {
    let issuer = idp.discovery_issuer.lock().expect("lock").clone();
    axum::Json(json!({ "issuer": issuer, "jwks_uri": format!("http://{}/jwks", idp.addr) }))
}

impl Idp {
    async fn start(initial: Mode) -> Idp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind idp");
        let addr = listener.local_addr().expect("addr");
        let idp = Idp {
            mode: Arc::new(Mutex::new(initial)),
            fetches: Arc::new(AtomicUsize::new(0)),
            addr,
            discovery_issuer: Arc::new(Mutex::new(ISSUER.to_string())),
        };
        let app = Router::new()
            .route("/jwks", get(jwks))
            .route("/.well-known/openid-configuration", get(discovery))
            .with_state(idp.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        idp
    }

    fn set(&self, mode: Mode) {
        *self.mode.lock().expect("lock") = mode;
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

fn policy_text(issuers: &str, grpc: &str, health: &str) -> String {
    format!(
        r#"
listen: {{ grpc: "{grpc}", health: "{health}" }}
issuers:
{issuers}
routes:
  - {{ match: {{ path_prefix: / }}, require: {{ scopes: [read] }} }}
"#
    )
}

fn policy(issuers: &str) -> Settings {
    let text = policy_text(issuers, "127.0.0.1:0", "127.0.0.1:0");
    match parse_and_validate(&text, &corpus::fixtures()) {
        Ok(s) => s,
        Err(e) => panic!("policy invalid: {e}\n{text}"),
    }
}

fn issuer_block(iss: &str, jwks: &str, extra: &str) -> String {
    format!("  - {{ issuer: \"{iss}\", audiences: [api], algorithms: [RS256], jwks: {jwks}{extra} }}\n")
}

fn rsa1_token(iss: &str) -> String {
    corpus::sign(jsonwebtoken::Algorithm::RS256, Some("rsa-1"), &corpus::claims(iss, "alice", now()))
}

fn rsa2_token(iss: &str) -> String {
    corpus::sign_rsa_other(Some("rsa-2"), &corpus::claims(iss, "bob", now()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_is_picked_up_and_unknown_kids_are_rate_limited() {
    let idp = Idp::start(Mode::Serve(fixture("jwks-rsa1.json"))).await;
    let jwks = format!("{{ url: \"http://{}/jwks\", refresh: 1h, refetch_interval: 2s }}", idp.addr);
    let server = InProcess::start(&policy(&issuer_block(ISSUER, &jwks, ""))).await;
    server.wait_ready(Duration::from_secs(10)).await;
    assert_eq!(server.bearer("/x", &rsa1_token(ISSUER)).await.0, 200);
    assert_eq!(server.bearer("/x", &rsa2_token(ISSUER)).await.0, 401, "rsa-2 is not published yet");

    idp.set(Mode::Serve(fixture("jwks-rotated.json")));
    let new_key = || async { is(server.bearer("/x", &rsa2_token(ISSUER)).await.0, 200) };
    let (_, accepted) = eventually(Duration::from_secs(10), "the rotated key was never accepted", new_key).await;
    println!("new kid accepted {:?} after the IdP started serving it", accepted);

    // 100 requests with random unknown kids over about 3 s: at most one fetch per 2 s interval.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = idp.fetches();
    let flood = Instant::now();
    for i in 0..100 {
        let token = corpus::sign(
            jsonwebtoken::Algorithm::RS256,
            Some(&format!("kid-{i}-{}", now())),
            &corpus::claims(ISSUER, "x", now()),
        );
        assert_eq!(server.bearer("/x", &token).await.0, 401);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = flood.elapsed();
    let fetched = idp.fetches() - before;
    let allowed = (elapsed.as_secs_f64() / 2.0).ceil() as usize + 1;
    println!("unknown-kid flood: {fetched} fetches in {elapsed:?} (bound {allowed})");
    assert!(fetched >= 1, "an unknown kid should trigger a refetch");
    assert!(fetched <= allowed, "{fetched} fetches in {elapsed:?} exceeds one per refetch_interval");
    let metrics = server.metrics().await;
    assert!(metrics.contains("portcullis_jwks_refresh_total{issuer=\"https://idp.test/\",result=\"ok\"}"), "{metrics}");
    assert!(metrics.contains("portcullis_jwks_keys_age_seconds{issuer=\"https://idp.test/\"}"), "{metrics}");
}

/// A rotation that reuses a `kid` (same kid, new key) is picked up by the first check signed
/// with the new key, not after the periodic refresh; bad signatures under a remote key during
/// the refetch cooldown never count toward auto-block, and are never remembered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_that_reuses_a_kid_takes_effect_at_once() {
    let rotated: serde_json::Value = serde_json::from_str(&fixture("jwks-rotated.json")).expect("json");
    let mut new_key =
        rotated["keys"].as_array().and_then(|k| k.iter().find(|k| k["kid"] == "rsa-2")).cloned().expect("rsa-2");
    new_key["kid"] = json!("rsa-1");
    let idp = Idp::start(Mode::Serve(fixture("jwks-rsa1.json"))).await;
    let jwks = format!("{{ url: \"http://{}/jwks\", refresh: 1h, refetch_interval: 1s }}", idp.addr);
    let extra = "ip: { auto_block: { failures: 2, window: 1h, block_for: 1h } }\nstate: { backend: memory, acknowledge_ephemeral_state: true }";
    let text = format!(
        "listen: {{ grpc: \"127.0.0.1:0\", health: \"127.0.0.1:0\" }}\nissuers:\n{}routes:\n  - {{ match: {{ path_prefix: / }}, require: {{ scopes: [read] }} }}\n{extra}\n",
        issuer_block(ISSUER, &jwks, "")
    );
    let settings = parse_and_validate(&text, &corpus::fixtures()).expect("policy with auto_block");
    let server = InProcess::start(&settings).await;
    server.wait_ready(Duration::from_secs(10)).await;
    let old = rsa1_token(ISSUER);
    let new = corpus::sign_rsa_other(Some("rsa-1"), &corpus::claims(ISSUER, "carol", now()));
    assert_eq!(server.bearer("/x", &old).await.0, 200);

    idp.set(Mode::Serve(json!({ "keys": [new_key] }).to_string()));
    tokio::time::sleep(Duration::from_millis(1100)).await; // past the start-up fetch's cooldown
    assert_eq!(server.bearer("/x", &new).await.0, 200, "the reused kid's new key verifies on the first check");
    // The old key's tokens now fail: the first refetches (a completed fetch that still fails
    // counts once), those during the cooldown count not at all, so two failures never add up.
    for _ in 0..5 {
        assert_eq!(server.bearer("/x", &old).await, (401, "token_invalid".to_string()));
    }
    assert_eq!(server.bearer("/x", &new).await.0, 200, "not blocked: cooldown misses are not counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outages_keep_last_good_keys_and_fallback_file_serves_a_restart() {
    let idp = Idp::start(Mode::Serve(fixture("jwks-rsa1.json"))).await;
    let jwks = format!("{{ url: \"http://{}/jwks\", refresh: 30s, refetch_interval: 1s }}", idp.addr);
    let server = InProcess::start_at_now(&policy(&issuer_block(ISSUER, &jwks, ""))).await;
    server.wait_ready(Duration::from_secs(10)).await;
    let good = rsa1_token(ISSUER);
    assert_eq!(server.bearer("/x", &good).await.0, 200);

    // 500s, a hang, and garbage bodies (not JSON, an HTML error page, a truncated document).
    let truncated = fixture("jwks-rsa1.json")[..40].to_string();
    let garbage = ["not json".to_string(), "<html><body>502 Bad Gateway</body></html>".to_string(), truncated];
    let modes = [Mode::Fail, Mode::Hang].into_iter().chain(garbage.into_iter().map(Mode::Serve));
    for mode in modes {
        idp.set(mode);
        let before = idp.fetches();
        // Time moves on while the test looks (a hung fetch schedules its retry from when it ends).
        let refreshed = || async {
            server.clock().advance(Duration::from_millis(500));
            if idp.fetches() > before { Ok(()) } else { Err(idp.fetches()) }
        };
        eventually(Duration::from_secs(15), "no refresh was attempted during the outage", refreshed).await;
        assert_eq!(server.bearer("/x", &good).await.0, 200, "a known key must keep passing during an IdP outage");
        assert_eq!(server.bearer("/x", &rsa2_token(ISSUER)).await.0, 401);
        assert_eq!(server.readyz().await, 200, "still ready with last good keys");
    }

    // A restart while the IdP hangs: the fallback file makes it ready.
    let extra = ", fallback_file: keys/jwks-rsa1.json";
    let jwks = format!("{{ url: \"http://{}/jwks\", refresh: 1h{extra} }}", idp.addr);
    let restarted = InProcess::start(&policy(&issuer_block(ISSUER, &jwks, ""))).await;
    restarted.wait_ready(Duration::from_secs(10)).await;
    assert_eq!(restarted.bearer("/x", &good).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_removed_from_the_jwks_stops_verifying() {
    let idp = Idp::start(Mode::Serve(fixture("jwks-rotated.json"))).await;
    let jwks = format!("{{ url: \"http://{}/jwks\", refresh: 1s, refetch_interval: 1s }}", idp.addr);
    let server = InProcess::start(&policy(&issuer_block(ISSUER, &jwks, ""))).await;
    server.wait_ready(Duration::from_secs(10)).await;
    let old = rsa1_token(ISSUER);
    assert_eq!(server.bearer("/x", &old).await.0, 200);
    assert_eq!(server.bearer("/x", &old).await.0, 200, "checked twice while its key is published");

    idp.set(Mode::Serve(fixture("jwks-rsa2.json")));
    let old_refused = || async { is(server.bearer("/x", &old).await.0, 401) };
    let (_, refused) =
        eventually(Duration::from_secs(10), "a token signed with a removed key was still accepted", old_refused).await;
    println!("removed key refused {refused:?} after the IdP dropped it");
    assert_eq!(server.bearer("/x", &rsa2_token(ISSUER)).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_required_issuers() {
    let up = Idp::start(Mode::Serve(fixture("jwks-rsa1.json"))).await;
    let down = Idp::start(Mode::Fail).await;
    let up_jwks = format!("{{ url: \"http://{}/jwks\" }}", up.addr);
    let down_jwks = format!("{{ url: \"http://{}/jwks\" }}", down.addr);
    const OTHER: &str = "https://other.test/";

    // A required issuer without keys: not ready.
    let blocked =
        InProcess::start(&policy(&(issuer_block(ISSUER, &up_jwks, "") + &issuer_block(OTHER, &down_jwks, "")))).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(blocked.readyz().await, 503, "a required issuer has no keys");
    drop(blocked);

    // The same issuer marked required: false: ready, and only its tokens answer 503.
    let optional = issuer_block(OTHER, &down_jwks, ", required: false");
    let server = InProcess::start(&policy(&(issuer_block(ISSUER, &up_jwks, "") + &optional))).await;
    server.wait_ready(Duration::from_secs(10)).await;
    assert_eq!(server.bearer("/x", &rsa1_token(ISSUER)).await.0, 200);
    let (status, reason) = server.bearer("/x", &rsa1_token(OTHER)).await;
    assert_eq!((status, reason.as_str()), (503, "keys_unavailable"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_requires_the_exact_issuer() {
    let idp = Idp::start(Mode::Serve(fixture("jwks-rsa1.json"))).await;
    let jwks = format!("{{ discovery: \"http://{}/\" }}", idp.addr);
    let server = InProcess::start(&policy(&issuer_block(ISSUER, &jwks, ""))).await;
    server.wait_ready(Duration::from_secs(10)).await;
    assert_eq!(server.bearer("/x", &rsa1_token(ISSUER)).await.0, 200);
    drop(server);

    *idp.discovery_issuer.lock().expect("lock") = "https://idp.test".to_string();
    let server = InProcess::start(&policy(&issuer_block(ISSUER, &jwks, ""))).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(server.readyz().await, 503, "a discovery document for another issuer must not be used");
    assert_eq!(server.bearer("/x", &rsa1_token(ISSUER)).await.0, 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_or_symmetric_jwks_are_refused() {
    let big = json!({"keys": (0..101).map(|i| json!({"kty": "EC", "kid": format!("k{i}"), "crv": "P-521"})).collect::<Vec<_>>()});
    let oct = json!({"keys": [{"kty": "oct", "kid": "s", "k": "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"}]});
    let huge = format!("{{\"keys\":[],\"pad\":\"{}\"}}", "x".repeat(300 * 1024));
    for body in [big.to_string(), oct.to_string(), huge] {
        let idp = Idp::start(Mode::Serve(body)).await;
        let jwks = format!("{{ url: \"http://{}/jwks\" }}", idp.addr);
        let server = InProcess::start(&policy(&issuer_block(ISSUER, &jwks, ""))).await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(idp.fetches() >= 1);
        assert_eq!(server.readyz().await, 503, "a refused JWKS must not make the issuer ready");
    }
}

/// Staleness runs on the injected clock: the test moves it past `max_stale` instead of waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_past_max_stale_are_dropped() {
    const STALE_ISSUER: &str = "https://idp-stale.test/";
    let idp = Idp::start(Mode::Serve(fixture("jwks-rsa1.json"))).await;
    let jwks = format!("{{ url: \"http://{}/jwks\", refresh: 10s, max_stale: 20s }}", idp.addr);
    let server = InProcess::start_at_now(&policy(&issuer_block(STALE_ISSUER, &jwks, ""))).await;
    server.wait_ready(Duration::from_secs(10)).await;
    let good = rsa1_token(STALE_ISSUER);
    assert_eq!(server.bearer("/x", &good).await.0, 200);
    idp.set(Mode::Fail);
    // Past the refresh, within max_stale: a refresh fails and the last good keys stay.
    server.clock().advance(Duration::from_secs(15));
    let failed = format!("portcullis_jwks_refresh_total{{issuer=\"{STALE_ISSUER}\",result=\"error\"}}");
    let refresh_failed = || async { if server.metrics().await.contains(&failed) { Ok(()) } else { Err(()) } };
    eventually(Duration::from_secs(10), "the refresh never failed", refresh_failed).await;
    assert_eq!(server.bearer("/x", &good).await.0, 200, "within max_stale the last good keys verify");
    assert_eq!(server.readyz().await, 200);
    // Past max_stale: dropped at the fetcher's next look (it looks at least once a second).
    server.clock().advance(Duration::from_secs(10));
    let unavailable = || async {
        let got = server.bearer("/x", &good).await;
        if got.0 == 200 { Err(got) } else { Ok(got) }
    };
    let (got, _) = eventually(Duration::from_secs(10), "keys were never dropped past max_stale", unavailable).await;
    assert_eq!((got.0, got.1.as_str()), (503, "keys_unavailable"));
    // Still ready: every replica lost them together, and unready replicas would take public
    // and API-key routes down too. /readyz names the issuer.
    let report = server.health_get("/readyz").await.expect("readyz");
    assert_eq!(report.status, 200, "{}", report.body);
    let report: serde_json::Value = serde_json::from_str(&report.body).expect("JSON");
    assert_eq!(report["issuers_past_max_stale"], json!([STALE_ISSUER]), "{report}");
    idp.set(Mode::Serve(fixture("jwks-rsa1.json")));
    server.clock().advance(Duration::from_secs(60)); // past the retry back-off
    let back = || async { is(server.bearer("/x", &good).await.0, 200) };
    eventually(Duration::from_secs(10), "never recovered when the IdP came back", back).await;
}

/// Serves `body` over HTTPS on loopback with the test server certificate (signed by the test CA).
async fn https_jwks(body: String) -> SocketAddr {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    portcullis::jwt::fetch::install_crypto_provider();
    let dir = corpus::fixtures().join("tls");
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(dir.join("server.pem"))
        .expect("cert file")
        .collect::<Result<_, _>>()
        .expect("certs");
    let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).expect("key");
    let config =
        rustls::ServerConfig::builder().with_no_client_auth().with_single_cert(certs, key).expect("tls config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (acceptor, body) = (acceptor.clone(), body.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(stream).await else { return };
                let mut buf = vec![0u8; 4096];
                let _ = tls.read(&mut buf).await;
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(response.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_jwks_needs_a_trusted_certificate() {
    let addr = https_jwks(fixture("jwks-rsa1.json")).await;
    let ca = corpus::fixtures().join("tls/ca.pem");
    let trusted = format!("{{ url: \"https://127.0.0.1:{}/jwks\", ca_file: {} }}", addr.port(), ca.display());
    let server = InProcess::start(&policy(&issuer_block(ISSUER, &trusted, ""))).await;
    server.wait_ready(Duration::from_secs(10)).await;
    assert_eq!(server.bearer("/x", &rsa1_token(ISSUER)).await.0, 200);
    drop(server);

    // Without the CA the certificate is not trusted: no keys, not ready.
    let untrusted = format!("{{ url: \"https://127.0.0.1:{}/jwks\" }}", addr.port());
    let server = InProcess::start(&policy(&issuer_block(ISSUER, &untrusted, ""))).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(server.readyz().await, 503, "an untrusted certificate must not provide keys");
    let report: serde_json::Value =
        serde_json::from_str(&server.health_get("/readyz").await.expect("readyz").body).expect("readyz is JSON");
    assert_eq!(report["issuers_without_keys"], json!([ISSUER]), "readyz names what is missing: {report}");
    assert_eq!(server.bearer("/x", &rsa1_token(ISSUER)).await, (503, "keys_unavailable".to_string()));
    drop(server);

    // The system trust store counts: a process told SSL_CERT_FILE=<the test CA> trusts the
    // IdP without any ca_file (cluster CAs are usually installed that way).
    let dir = crate::support::scratch("system-roots");
    let (grpc, health) = (crate::support::free_port(), crate::support::free_port());
    let text = policy_text(
        &issuer_block(ISSUER, &untrusted, ""),
        &format!("127.0.0.1:{grpc}"),
        &format!("127.0.0.1:{health}"),
    );
    std::fs::write(dir.join("policy.yaml"), text).expect("policy");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"));
    cmd.args(["serve", "--config"]).arg(dir.join("policy.yaml")).env("SSL_CERT_FILE", &ca);
    let proc = crate::support::Proc::spawn(&mut cmd, &dir, "portcullis");
    let health = SocketAddr::from(([127, 0, 0, 1], health));
    assert!(
        crate::support::wait_http_ok(health, "/readyz", Duration::from_secs(10)),
        "SSL_CERT_FILE was not trusted:\n{}",
        proc.output()
    );
    drop(proc);

    // Without it, the log says why, cause and all, with a hint (not just "error sending request").
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"));
    cmd.args(["serve", "--config"]).arg(dir.join("policy.yaml")).env_remove("SSL_CERT_FILE");
    let proc = crate::support::Proc::spawn(&mut cmd, &dir, "portcullis-untrusted");
    let logged = || {
        let out = proc.output();
        if out.contains("JWKS fetch failed") { Ok(out) } else { Err(out) }
    };
    let (out, _) = crate::support::eventually_blocking(Duration::from_secs(10), "no fetch failure logged", logged);
    let line = out.lines().find(|l| l.contains("JWKS fetch failed")).unwrap_or_default();
    assert!(line.contains("UnknownIssuer") && line.contains("hint:"), "{line}");
    drop(proc);
    let _ = std::fs::remove_dir_all(&dir);
}
