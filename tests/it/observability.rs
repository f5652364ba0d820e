//! Audit, metrics, traces, hot reload and drain, against the real binary.

use crate::support::now;
use crate::support::{Portcullis, corpus, eventually, scratch};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use portcullis::dev::request::{HeaderEncoding, check_request};
use portcullis::server::proto::envoy::service::auth::v3::CheckResponse;
use portcullis::server::proto::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use portcullis::server::proto::envoy::service::auth::v3::check_response::HttpResponse;
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

fn status(resp: &CheckResponse) -> u16 {
    match &resp.http_response {
        Some(HttpResponse::OkResponse(_)) => 200,
        Some(HttpResponse::DeniedResponse(d)) => d.status.as_ref().map(|s| s.code as u16).unwrap_or(0),
        None => 0,
    }
}

async fn client(p: &Portcullis) -> AuthorizationClient<Channel> {
    AuthorizationClient::connect(format!("http://{}", p.grpc)).await.expect("connect")
}

/// Spans received by the test's OTLP collector: (trace id hex, span name, attributes).
type Spans = Arc<Mutex<Vec<(String, String, BTreeMap<String, String>)>>>;

struct Collector(Spans);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.0.lock().expect("lock");
        for rs in request.into_inner().resource_spans {
            for ss in rs.scope_spans {
                for span in ss.spans {
                    let attrs = span
                        .attributes
                        .iter()
                        .map(|kv| {
                            let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                                Some(AnyValue::StringValue(s)) => s.clone(),
                                Some(other) => format!("{other:?}"),
                                None => String::new(),
                            };
                            (kv.key.clone(), v)
                        })
                        .collect();
                    spans.push((hex::encode(&span.trace_id), span.name.clone(), attrs));
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

async fn start_collector() -> (std::net::SocketAddr, Spans) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind collector");
    let addr = listener.local_addr().expect("addr");
    let spans: Spans = Arc::default();
    let service = TraceServiceServer::new(Collector(spans.clone()));
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await;
    });
    (addr, spans)
}

/// Every 16-character window of every secret, scanned for in `text`.
fn leaks(secrets: &[String], text: &str) -> usize {
    let windows: HashSet<&[u8]> = secrets.iter().flat_map(|s| s.as_bytes().windows(16)).collect();
    text.as_bytes().windows(16).filter(|w| windows.contains(w)).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_metrics_and_audit_over_the_corpus() {
    let dir = scratch("obs");
    let (collector, spans) = start_collector().await;
    let audit = dir.join("audit.log");
    let extra = format!(
        "telemetry: {{ otlp_endpoint: \"http://{collector}\", audit: {{ file: \"{}\", allow_sample_rate: 1.0 }} }}",
        audit.display()
    );
    let p = Portcullis::start(&dir, &extra, &[("RUST_LOG", "trace"), ("OTEL_BSP_SCHEDULE_DELAY", "100")]);
    let mut c = client(&p).await;

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let traceparent = format!("00-{trace_id}-00f067aa0ba902b7-01");
    let token =
        corpus::sign(jsonwebtoken::Algorithm::RS256, Some("rsa-1"), &corpus::claims(corpus::ISSUER, "traced", now()));
    let bearer = format!("Bearer {token}");
    let headers =
        [("authorization", bearer.as_str()), ("traceparent", traceparent.as_str()), ("x-request-id", "join-me-42")];
    let resp =
        c.check(check_request("GET", "/api/items", &headers, HeaderEncoding::Map)).await.expect("check").into_inner();
    assert_eq!(status(&resp), 200);

    // The corpus: every reason it exercises must be counted in /metrics and audited.
    let cases = corpus::cases(now());
    let mut expected: BTreeMap<(String, String), usize> = BTreeMap::new();
    for case in &cases {
        let h: Vec<(&str, &str)> = case.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let resp =
            c.check(check_request(case.method, &case.path, &h, HeaderEncoding::Raw)).await.expect("check").into_inner();
        assert_eq!(status(&resp), case.status, "{}", case.name);
        let decision = if case.status == 200 { "allow" } else { "deny" };
        *expected.entry((decision.to_string(), case.reason.to_string())).or_default() += 1;
    }

    // The Check span arrives with the caller's trace id and the decision attributes.
    let arrived = || async { spans.lock().expect("lock").iter().find(|(t, _, _)| t == trace_id).cloned().ok_or(()) };
    let (traced, _) = eventually(
        Duration::from_secs(20),
        &format!("no span with trace id {trace_id} reached the collector"),
        arrived,
    )
    .await;
    assert_eq!(traced.1, "Check");
    assert_eq!(traced.2.get("decision").map(String::as_str), Some("allow"), "{:?}", traced.2);
    assert_eq!(traced.2.get("reason").map(String::as_str), Some("allowed"));
    assert_eq!(traced.2.get("rule").map(String::as_str), Some("api"));

    // /metrics is Prometheus text and counts each reason exercised.
    let metrics = p.get("/metrics").expect("metrics").body;
    let sample = regex::Regex::new(
        r#"^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="[^"]*",?)*\})? -?[0-9.eE+-]+|NaN|\+Inf$"#,
    )
    .expect("re");
    for line in metrics.lines().filter(|l| !l.is_empty() && !l.starts_with('#')) {
        assert!(sample.is_match(line), "not Prometheus text: {line}");
    }
    for ((decision, reason), count) in &expected {
        let prefix = format!("portcullis_decisions_total{{decision=\"{decision}\",reason=\"{reason}\"}} ");
        let value: f64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{prefix} missing from /metrics"));
        assert!(value >= *count as f64, "{prefix}{value} < {count}");
    }
    for name in [
        "portcullis_check_duration_seconds_bucket",
        "portcullis_inflight_checks",
        "portcullis_dev_mode 0",
        "portcullis_jwt_verifications_total{issuer=\"https://issuer.test/\",result=\"ok\"}",
        "portcullis_jwt_verifications_total{issuer=\"https://issuer.test/\",result=\"bad_signature\"}",
    ] {
        assert!(metrics.contains(name), "{name} missing");
    }

    // Audit: one JSON line per decision with the contract fields, fingerprints only. Lines leave
    // through the writer thread, so they arrive shortly after the answers.
    let all_written = || async {
        let text = std::fs::read_to_string(&audit).unwrap_or_default();
        if text.lines().count() > cases.len() { Ok(text) } else { Err(text.lines().count()) }
    };
    let (audit_text, _) = eventually(Duration::from_secs(10), "audit lines missing", all_written).await;
    let lines: Vec<serde_json::Value> =
        audit_text.lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect();
    assert_eq!(lines.len(), cases.len() + 1, "one audit line per decision");
    for field in [
        "time",
        "request_id",
        "decision",
        "reason",
        "rule",
        "issuer",
        "subject",
        "tenant",
        "client_ip",
        "credential",
        "latency_us",
        "path",
        "host",
        "trace_id",
        "policy",
        "policy_generation",
    ] {
        assert!(lines.iter().all(|l| l.get(field).is_some()), "audit lines lack {field}");
    }
    // Every line names the policy that decided (one here: no reload).
    assert!(lines.iter().all(|l| l["policy"].as_str().is_some_and(|h| h.len() == 12) && l["policy_generation"] == 1));
    // Joinable with Envoy's access log and the trace: x-request-id and the traceparent's id.
    let traced_line = lines.iter().find(|l| l["subject"] == "traced").expect("the traced check's line");
    assert_eq!(traced_line["request_id"], "join-me-42");
    assert_eq!(traced_line["trace_id"].as_str(), Some(trace_id));
    assert_eq!((traced_line["path"].as_str(), traced_line["method"].as_str()), (Some("/api/items"), Some("GET")));
    assert!(traced_line["host"].as_str().is_some_and(|h| !h.is_empty()));
    assert!(lines.iter().any(|l| l["credential"].as_str().is_some_and(|c| c.len() == 12)));

    // No token material in the audit file, the spans or any output at trace level.
    let mut secrets = corpus::secrets(&cases);
    secrets.extend(token.split('.').map(str::to_string));
    let span_dump = format!("{:?}", spans.lock().expect("lock"));
    let output = p.proc.output();
    assert!(output.lines().count() > 100, "trace-level output expected");
    for (name, text) in [("audit file", &audit_text), ("spans", &span_dump), ("process output", &output)] {
        assert_eq!(leaks(&secrets, text), 0, "token material in the {name}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_swaps_atomically_and_keeps_the_old_policy_on_error() {
    let dir = scratch("reload");
    let p = Portcullis::start(&dir, "", &[]);
    let original = std::fs::read_to_string(&p.config).expect("policy");
    let token =
        corpus::sign(jsonwebtoken::Algorithm::RS256, Some("rsa-1"), &corpus::claims(corpus::ISSUER, "loader", now()));
    let bearer = format!("Bearer {token}");

    // Steady load: every answer must be 200 (old policy) or 403 (new policy), and once a
    // worker has seen the new policy it never sees the old one again.
    let stop = Arc::new(AtomicBool::new(false));
    let unexpected = Arc::new(Mutex::new(Vec::<String>::new()));
    let sent = Arc::new(AtomicUsize::new(0));
    let new_seen = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let mut c = client(&p).await;
        let (stop, unexpected, sent, new_seen, bearer) =
            (stop.clone(), unexpected.clone(), sent.clone(), new_seen.clone(), bearer.clone());
        workers.push(tokio::spawn(async move {
            let mut mine_new = false;
            while !stop.load(Ordering::Acquire) {
                let req = check_request("GET", "/api/items", &[("authorization", &bearer)], HeaderEncoding::Map);
                match c.check(req).await {
                    Ok(r) => match (status(&r.into_inner()), mine_new) {
                        (200, false) => {}
                        (403, _) => {
                            mine_new = true;
                            new_seen.store(true, Ordering::Release);
                        }
                        (s, _) => {
                            unexpected.lock().expect("lock").push(format!("status {s} (after new policy: {mine_new})"))
                        }
                    },
                    Err(e) => unexpected.lock().expect("lock").push(format!("transport: {e}")),
                }
                sent.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let changed = original.replace("require: { scopes: [read] }", "require: { scopes: [write] }");
    assert_ne!(changed, original);
    std::fs::write(&p.config, &changed).expect("write");
    let seen = || async { if new_seen.load(Ordering::Acquire) { Ok(()) } else { Err(()) } };
    let (_, took) = eventually(Duration::from_secs(15), "the valid change never took effect", seen).await;
    println!("reload took effect after {took:?}");

    // An invalid change: logged, counted, and the new-but-valid policy keeps answering 403.
    std::fs::write(&p.config, changed.replace("algorithms: [RS256]", "algorithms: [RS999]")).expect("write");
    let counted = || async {
        let metrics = p.get("/metrics").map(|r| r.body).unwrap_or_default();
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("portcullis_config_reload_total{result=\"error\"} "))
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|errors| *errors >= 1.0)
            .ok_or(())
    };
    eventually(Duration::from_secs(15), "the invalid change was never counted", counted).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Release);
    for w in workers {
        w.await.expect("worker");
    }
    let unexpected = unexpected.lock().expect("lock").clone();
    println!("{} checks under reload", sent.load(Ordering::Relaxed));
    assert!(
        unexpected.is_empty(),
        "{} unexpected answers: {:?}",
        unexpected.len(),
        &unexpected[..unexpected.len().min(5)]
    );
    let mut c = client(&p).await;
    let req = check_request("GET", "/api/items", &[("authorization", &bearer)], HeaderEncoding::Map);
    assert_eq!(status(&c.check(req).await.expect("check").into_inner()), 403, "old (valid) policy still in force");

    // SIGHUP reloads on demand (here: back to the original policy).
    std::fs::write(&p.config, &original).expect("write");
    p.signal("HUP");
    wait_for_status(&c, &bearer, 200).await;
    let ok = p.get("/metrics").map(|r| r.body).unwrap_or_default();
    assert!(ok.contains("portcullis_config_reload_total{result=\"ok\"}"), "{ok}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_drains_without_transport_errors() {
    let dir = scratch("drain");
    let mut p = Portcullis::start(&dir, "shutdown: { drain_delay: 1500ms, drain_timeout: 5s }", &[]);
    let token =
        corpus::sign(jsonwebtoken::Algorithm::EdDSA, Some("ed-1"), &corpus::claims(corpus::ISSUER, "drain", now()));
    let bearer = format!("Bearer {token}");
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let answered = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let mut c = client(&p).await;
        let (stop, errors, answered, bearer) = (stop.clone(), errors.clone(), answered.clone(), bearer.clone());
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Acquire) {
                let req = check_request("GET", "/api/items", &[("authorization", &bearer)], HeaderEncoding::Map);
                match c.check(req).await {
                    Ok(r) if status(r.get_ref()) == 200 => {
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => errors.lock().expect("lock").push(format!("status {}", status(r.get_ref()))),
                    Err(e) => errors.lock().expect("lock").push(format!("transport: {e}")),
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = answered.load(Ordering::Relaxed);
    p.signal("TERM");
    let term = Instant::now();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(p.get("/readyz").map(|r| r.status), Some(503), "not ready while draining");
    // Keep the load on through most of the drain delay, as a caller would until it notices.
    tokio::time::sleep(Duration::from_millis(900)).await;
    stop.store(true, Ordering::Release);
    for w in workers {
        w.await.expect("worker");
    }
    let during = answered.load(Ordering::Relaxed) - before;
    let errors = errors.lock().expect("lock").clone();
    assert!(errors.is_empty(), "{} errors during the drain: {:?}", errors.len(), &errors[..errors.len().min(5)]);
    assert!(during > 10, "the load kept being answered during the drain ({during})");
    // The load is over: a blocking poll on this thread holds nothing up.
    let exited = || match p.proc.child.try_wait() {
        Ok(Some(status)) => Ok(status.code()),
        other => Err(other.map(|_| ())),
    };
    let (code, _) = crate::support::eventually_blocking(Duration::from_secs(10), "did not exit after drain", exited);
    assert_eq!(code, Some(0));
    assert!(term.elapsed() >= Duration::from_millis(1400), "exited before the drain delay");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_key_file_reloads_too() {
    let dir = scratch("keyfile");
    std::fs::copy(corpus::fixtures().join("keys/jwks-rsa1.json"), dir.join("idp.json")).expect("copy");
    let p = Portcullis::start(&dir, "", &[]);
    // Point the first issuer at a key file of its own (RS256 only), then change that file only.
    let policy = std::fs::read_to_string(&p.config).expect("policy");
    let jwks_line = policy.lines().find(|l| l.contains("jwks: { file:")).expect("jwks line").to_string();
    let own = policy
        .replace(&jwks_line, &format!("    jwks: {{ file: {} }}", dir.join("idp.json").display()))
        .replacen("algorithms: [RS256, ES256, EdDSA]", "algorithms: [RS256]", 1);
    std::fs::write(&p.config, own).expect("write");
    let c = client(&p).await;
    let token =
        |alg, kid| format!("Bearer {}", corpus::sign(alg, Some(kid), &corpus::claims(corpus::ISSUER, "k", now())));
    let rsa1 = token(jsonwebtoken::Algorithm::RS256, "rsa-1");
    let es = token(jsonwebtoken::Algorithm::ES256, "ec-1");
    // The policy change: ES256 is no longer allowed.
    wait_for_status(&c, &es, 401).await;
    wait_for_status(&c, &rsa1, 200).await;
    // The key file change alone: rsa-1 replaced by rsa-2.
    std::fs::copy(corpus::fixtures().join("keys/jwks-rsa2.json"), dir.join("idp.json")).expect("copy");
    wait_for_status(&c, &rsa1, 401).await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 24: a team fragment added to an `include` folder is served after one poll, and a
/// change to it reloads too; the main file is not touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn team_fragments_are_picked_up_and_reloaded() {
    let dir = scratch("fragments");
    std::fs::create_dir_all(dir.join("teams")).expect("teams");
    let p = Portcullis::start(&dir, "", &[]);
    let policy = std::fs::read_to_string(&p.config).expect("policy");
    std::fs::write(&p.config, policy.replacen("routes:", "include: [teams/*.yaml]\nroutes:", 1)).expect("write");
    let c = client(&p).await;
    let bearer = format!(
        "Bearer {}",
        corpus::sign(jsonwebtoken::Algorithm::RS256, Some("rsa-1"), &corpus::claims(corpus::ISSUER, "t", now()))
    );
    let on_payments = |bearer: String| {
        let c = c.clone();
        async move {
            let headers: Vec<(&str, &str)> =
                if bearer.is_empty() { Vec::new() } else { vec![("authorization", bearer.as_str())] };
            let mut req = check_request("GET", "/api/items", &headers, HeaderEncoding::Map);
            if let Some(http) = req.attributes.as_mut().and_then(|a| a.request.as_mut()).and_then(|r| r.http.as_mut()) {
                http.host = "payments.example.com".into();
            }
            status(&c.clone().check(req).await.expect("check").into_inner())
        }
    };
    assert_eq!(on_payments(bearer.clone()).await, 200, "the main file's /api route before any fragment");
    let fragment = "hosts: [payments.example.com]\nroutes:\n  - { match: { host: payments.example.com, path_prefix: /api }, deny: true, reason: payments is closed }\n";
    std::fs::write(dir.join("teams/payments.yaml"), fragment).expect("fragment");
    eventually(Duration::from_secs(15), "the new fragment was never served", || {
        let call = on_payments(bearer.clone());
        async move { crate::support::is(call.await, 403) }
    })
    .await;
    std::fs::write(
        dir.join("teams/payments.yaml"),
        fragment.replace("deny: true, reason: payments is closed", "public: true"),
    )
    .expect("fragment");
    eventually(Duration::from_secs(15), "the changed fragment was never served", || {
        let call = on_payments(String::new());
        async move { crate::support::is(call.await, 200) }
    })
    .await;
    // Which policy runs (issue 35): the hash covers the fragment's text and the generation
    // counts loads, in /readyz and in portcullis_policy_info (the replaced one at 0).
    let ready: serde_json::Value = serde_json::from_str(&p.get("/readyz").expect("readyz").body).expect("JSON");
    let (hash, generation) = (ready["policy"]["hash"].as_str().expect("hash"), ready["policy"]["generation"].as_u64());
    assert_eq!(hash.len(), 12, "{ready}");
    assert!(generation.is_some_and(|g| g >= 3), "{ready}");
    let metrics = p.get("/metrics").expect("metrics").body;
    let current = format!("portcullis_policy_info{{hash=\"{hash}\",generation=\"{}\"}} 1", generation.unwrap_or(0));
    assert!(metrics.contains(&current), "{current} missing from\n{metrics}");
    assert!(metrics.contains("portcullis_policy_info{") && metrics.contains("} 0"), "{metrics}");
    let _ = std::fs::remove_dir_all(&dir);
}

async fn wait_for_status(c: &AuthorizationClient<Channel>, bearer: &str, want: u16) {
    let answered = || async {
        let req = check_request("GET", "/api/items", &[("authorization", bearer)], HeaderEncoding::Map);
        crate::support::is(status(&c.clone().check(req).await.expect("check").into_inner()), want)
    };
    eventually(Duration::from_secs(15), &format!("never answered {want}"), answered).await;
}

/// Reload rotates the admin token: within one reload poll the old token is refused and the new
/// one accepted (only the policy snapshot used to be swapped, so the old token kept working).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_rotates_the_admin_token() {
    let dir = scratch("admin-rotation");
    let p = Portcullis::start(&dir, "", &[]);
    let admin = p.admin;
    let list = move |token: &str| {
        let request = format!(
            "GET /v1/revocations HTTP/1.1\r\nhost: admin\r\nauthorization: Bearer {token}\r\nconnection: close\r\n\r\n"
        );
        crate::support::raw_http(admin, &request).map(|r| r.status).unwrap_or(0)
    };
    let new_token = "rotated-admin-token-9876543210";
    let (before, after_old, after_new) = tokio::task::spawn_blocking(move || {
        let before = (list(crate::support::ADMIN_TOKEN), list(new_token));
        std::fs::write(dir.join("admin-token"), new_token).expect("rotate");
        let rotated = || crate::support::is(list(new_token), 200);
        let (_, took) =
            crate::support::eventually_blocking(Duration::from_secs(15), "the new token never worked", rotated);
        let _ = std::fs::remove_dir_all(&dir);
        (before, (list(crate::support::ADMIN_TOKEN), took), list(new_token))
    })
    .await
    .expect("admin calls");
    assert_eq!(before, (200, 401));
    assert_eq!(after_new, 200, "the new token works after one poll");
    assert_eq!(after_old.0, 401, "the old token is refused");
    println!("the rotated admin token took effect after {:?} (reload polls every second)", after_old.1);
}

/// Issue 23: a reload that changes only a data file (members) keeps the claims cache: under
/// load, the verification counter does not move across the reload (every check stays a hit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_members_reload_keeps_cached_claims() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = scratch("members-reload");
    let p = Portcullis::start(&dir, "", &[]);
    let c = client(&p).await;
    let token =
        corpus::sign(jsonwebtoken::Algorithm::RS256, Some("rsa-1"), &corpus::claims(corpus::ISSUER, "kept", now()));
    let bearer = format!("Bearer {token}");
    let check = |c: AuthorizationClient<Channel>, bearer: String| async move {
        let req = check_request("GET", "/api/items", &[("authorization", &bearer)], HeaderEncoding::Map);
        status(&c.clone().check(req).await.expect("check").into_inner())
    };
    assert_eq!(check(c.clone(), bearer.clone()).await, 200);
    let metric = |name: &str| {
        let metrics = p.get("/metrics").map(|r| r.body).unwrap_or_default();
        metrics.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.trim().parse::<f64>().ok()).unwrap_or(0.0)
    };
    let verified = "portcullis_jwt_verifications_total{issuer=\"https://issuer.test/\",result=\"ok\"} ";
    let reloads = "portcullis_config_reload_total{result=\"ok\"} ";
    let (before, reloads_before) = (metric(verified), metric(reloads));
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (c, bearer, stop) = (c.clone(), bearer.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Acquire) {
                    assert_eq!(check(c.clone(), bearer.clone()).await, 200);
                }
            })
        })
        .collect();
    let members = dir.join("members.yaml");
    let text = std::fs::read_to_string(&members).expect("members");
    std::fs::write(&members, format!("{text}\n# edited by the test\n")).expect("write");
    let reloaded = || async { if metric(reloads) > reloads_before { Ok(()) } else { Err(()) } };
    eventually(Duration::from_secs(15), "the members change was never reloaded", reloaded).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Release);
    for w in workers {
        w.await.expect("worker");
    }
    assert_eq!(metric(verified), before, "the reload must not flush the claims cache");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 35: `telemetry.rule_metrics` counts decisions per route (a series per route name and
/// verdict, `(none)` for requests no route matched); without it there is no such series.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_are_counted_per_route_when_asked() {
    let dir = scratch("rule-metrics");
    let p = Portcullis::start(&dir, "telemetry: { rule_metrics: true }", &[]);
    let token =
        corpus::sign(jsonwebtoken::Algorithm::RS256, Some("rsa-1"), &corpus::claims(corpus::ISSUER, "ruler", now()));
    let mut c = client(&p).await;
    for (path, auth) in [("/api/items", Some(&token)), ("/api/items", None), ("/healthz", None)] {
        let bearer = auth.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = bearer.iter().map(|b| ("authorization", b.as_str())).collect();
        c.check(check_request("GET", path, &headers, HeaderEncoding::Map)).await.expect("check");
    }
    let counted = || async {
        let metrics = p.get("/metrics").map(|r| r.body).unwrap_or_default();
        let want = [
            r#"portcullis_rule_decisions_total{rule="api",decision="allow"} 1"#,
            r#"portcullis_rule_decisions_total{rule="api",decision="deny"} 1"#,
            r#"portcullis_rule_decisions_total{rule="healthz",decision="allow"} 1"#,
        ];
        let missing: Vec<&str> = want.iter().copied().filter(|w| !metrics.contains(w)).collect();
        if missing.is_empty() { Ok(()) } else { Err(missing) }
    };
    eventually(Duration::from_secs(5), "per-route counts missing", counted).await;
    drop(p);
    let _ = std::fs::remove_dir_all(&dir);
}
