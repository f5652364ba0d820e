//! The real server on 127.0.0.1:0 (and a unix socket) with a tonic client: the corpus in both
//! header encodings, the response contract, health, reflection, the health listener and the
//! in-flight bound.

use crate::support::{InProcess, corpus, eventually, is, now};
use portcullis::config::{ListenAddr, Settings, parse_and_validate};
use portcullis::dev::request::{HeaderEncoding, check_request};
use portcullis::server::proto::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use portcullis::server::proto::envoy::service::auth::v3::{CheckResponse, check_response::HttpResponse};
use serde_json::Value;
use std::net::SocketAddr;

fn settings(grpc: &str) -> Settings {
    let text = crate::support::policy_with_ports(grpc, 0);
    parse_and_validate(&text, &corpus::fixtures()).expect("fixture policy")
}

async fn start(grpc: &str) -> InProcess {
    InProcess::start(&settings(grpc)).await
}

async fn start_with(settings: Settings) -> InProcess {
    InProcess::start(&settings).await
}

fn header<'a>(
    headers: &'a [portcullis::server::proto::envoy::config::core::v3::HeaderValueOption],
    name: &str,
) -> Option<&'a str> {
    headers.iter().filter_map(|h| h.header.as_ref()).find(|h| h.key == name).map(|h| h.value.as_str())
}

/// Checks one answer against the contract of docs/contract.md step 13; returns a failure description.
fn contract_failure(case: &corpus::Case, resp: &CheckResponse) -> Option<String> {
    let code = resp.status.as_ref().map(|s| s.code).unwrap_or(-1);
    match &resp.http_response {
        Some(HttpResponse::OkResponse(ok)) => {
            if case.status != 200 || code != 0 {
                return Some(format!("allowed (code {code}), want {} {}", case.status, case.reason));
            }
            let user = header(&ok.headers, "x-user-id").map(str::to_string);
            if user != case.user {
                return Some(format!("x-user-id {user:?} want {:?}", case.user));
            }
            for h in &ok.headers {
                let key = h.header.as_ref().map(|h| h.key.as_str()).unwrap_or_default();
                if ok.headers_to_remove.iter().any(|r| r == key) {
                    return Some(format!("{key} both set and removed"));
                }
                if h.append_action != 2 {
                    return Some(format!("{key} not OVERWRITE_IF_EXISTS_OR_ADD"));
                }
            }
            // A strip header the request carries is removed; one it does not carry is not named.
            let carried = case.headers.iter().any(|(h, _)| h == "x-customer-id");
            if ok.headers_to_remove.iter().any(|h| h == "x-customer-id") != carried {
                return Some(format!("x-customer-id removed: {}, sent: {carried}", !carried));
            }
            let md = resp.dynamic_metadata.as_ref().map(|m| m.fields.contains_key("rule")).unwrap_or(false);
            (!md).then(|| "dynamic_metadata lacks rule".to_string())
        }
        Some(HttpResponse::DeniedResponse(denied)) => {
            let want_code = if case.status == 401 { 16 } else { 7 };
            let status = denied.status.as_ref().map(|s| s.code).unwrap_or_default();
            if code != want_code || status != i32::from(case.status) {
                return Some(format!("denied code {code} status {status}, want {want_code} {}", case.status));
            }
            let body: Value = serde_json::from_str(&denied.body).unwrap_or(Value::Null);
            if body["reason"] != case.reason || body["request_id"] != "req-1" || body["error"].as_str().is_none() {
                return Some(format!("body {}", denied.body));
            }
            if header(&denied.headers, "cache-control") != Some("no-store") {
                return Some("no cache-control: no-store".into());
            }
            let challenge = header(&denied.headers, "www-authenticate");
            if case.status == 401 && !challenge.is_some_and(|c| c.starts_with("Bearer realm=\"portcullis\"")) {
                return Some(format!("www-authenticate {challenge:?}"));
            }
            if case.reason == "insufficient_scope"
                && !challenge.is_some_and(|c| c.contains("error=\"insufficient_scope\""))
            {
                return Some(format!("www-authenticate {challenge:?}"));
            }
            None
        }
        None => Some("no http_response".into()),
    }
}

#[tokio::test]
async fn corpus_over_grpc_in_both_encodings() {
    let server = start("127.0.0.1:0").await;
    let ListenAddr::Tcp(addr) = server.grpc else { panic!("tcp expected") };
    let mut client = AuthorizationClient::connect(format!("http://{addr}")).await.expect("connect");
    let cases = corpus::cases(now());
    let mut failures = Vec::new();
    for encoding in [HeaderEncoding::Map, HeaderEncoding::Raw] {
        for case in &cases {
            let headers: Vec<(&str, &str)> = case.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let resp = client
                .check(check_request(case.method, &case.path, &headers, encoding))
                .await
                .expect("Check never fails at the transport level")
                .into_inner();
            if let Some(f) = contract_failure(case, &resp) {
                failures.push(format!("[{encoding:?}] {}: {f}", case.name));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    server.shutdown().await;
}

/// Reflection answers only when asked for (`listen.reflection: true`; on by default under `dev`).
async fn reflection_answers(addr: std::net::SocketAddr) -> Result<Vec<String>, tonic::Status> {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut reflection = ServerReflectionClient::new(channel);
    let request = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = reflection.server_reflection_info(tokio_stream::iter(vec![request])).await?.into_inner();
    let reply = stream.message().await?.expect("one reply");
    let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
        panic!("unexpected reflection reply")
    };
    Ok(list.service.into_iter().map(|s| s.name).collect())
}

#[tokio::test]
async fn reflection_is_off_unless_enabled() {
    let server = start("127.0.0.1:0").await;
    let refused = reflection_answers(server.grpc_tcp()).await.expect_err("reflection must be off by default");
    assert_eq!(refused.code(), tonic::Code::Unimplemented, "{refused:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn health_reflection_and_http_listener() {
    let text = crate::support::policy_with_ports("127.0.0.1:0", 0)
        .replace("health: \"127.0.0.1:0\"", "health: \"127.0.0.1:0\", reflection: true");
    let server = start_with(parse_and_validate(&text, &corpus::fixtures()).expect("policy")).await;
    let ListenAddr::Tcp(addr) = server.grpc else { panic!("tcp expected") };
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");

    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    for service in ["envoy.service.auth.v3.Authorization", ""] {
        let resp = health
            .check(tonic_health::pb::HealthCheckRequest { service: service.into() })
            .await
            .expect("health")
            .into_inner();
        assert_eq!(resp.status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32, "{service:?}");
    }

    let names = reflection_answers(addr).await.expect("reflection when enabled");
    assert!(names.contains(&"envoy.service.auth.v3.Authorization".to_string()), "{names:?}");
    assert!(names.contains(&"grpc.health.v1.Health".to_string()), "{names:?}");

    // The health listener: read-only, three paths.
    let health_addr = server.health;
    let answers = tokio::task::spawn_blocking(move || {
        let get = |path: &str| {
            crate::support::raw_http(
                health_addr,
                &format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"),
            )
            .map(|r| r.status)
        };
        let post = crate::support::raw_http(
            health_addr,
            "POST /readyz HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        )
        .map(|r| r.status);
        (get("/livez"), get("/readyz"), get("/metrics"), get("/admin"), post)
    })
    .await
    .expect("health requests");
    assert_eq!(answers, (Some(200), Some(200), Some(200), Some(404), Some(405)), "livez, readyz, metrics, admin, POST");
    server.shutdown().await;
}

#[tokio::test]
async fn beyond_max_inflight_checks_is_an_immediate_503() {
    let server = start("127.0.0.1:0").await;
    let state = server.state.clone();
    // Hold every permit, as if that many checks were in flight.
    let held = state.hold_every_permit().expect("permits");
    let resp = state.check(check_request("GET", "/api/items", &[], HeaderEncoding::Map)).await;
    let Some(HttpResponse::DeniedResponse(denied)) = &resp.http_response else { panic!("expected a deny") };
    assert_eq!(resp.status.as_ref().map(|s| s.code), Some(7), "PERMISSION_DENIED, never an error code");
    assert_eq!(denied.status.as_ref().map(|s| s.code), Some(503));
    assert_eq!(header(&denied.headers, "retry-after"), Some("1"));
    assert!(denied.body.contains("\"overloaded\""), "{}", denied.body);
    drop(held);
    let resp = state.check(check_request("GET", "/api/items", &[], HeaderEncoding::Map)).await;
    assert!(resp.status.as_ref().is_some_and(|s| s.message == "credential_missing"), "permits are back");
    server.shutdown().await;
}

#[tokio::test]
async fn unix_socket_listener() {
    let dir = crate::support::scratch("uds");
    let path = dir.join("authz.sock");
    let server = start(&format!("unix:{}", path.display())).await;
    let socket = path.clone();
    let channel = tonic::transport::Endpoint::from_static("http://uds.invalid")
        .connect_with_connector(tower::service_fn(move |_| {
            let socket = socket.clone();
            async move { tokio::net::UnixStream::connect(socket).await.map(hyper_util::rt::TokioIo::new) }
        }))
        .await
        .expect("connect over uds");
    let mut client = AuthorizationClient::new(channel);
    let token =
        corpus::sign(jsonwebtoken::Algorithm::EdDSA, Some("ed-1"), &corpus::claims(corpus::ISSUER, "uds-user", now()));
    let bearer = format!("Bearer {token}");
    let resp = client
        .check(check_request("GET", "/api/x", &[("authorization", &bearer)], HeaderEncoding::Raw))
        .await
        .expect("check")
        .into_inner();
    assert!(matches!(resp.http_response, Some(HttpResponse::OkResponse(_))), "{resp:?}");
    server.shutdown().await;
    assert!(!path.exists(), "socket file removed on shutdown");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 11: far more concurrent checks than `limits.max_inflight_checks`. Every answer is a
/// decision (an allow, or 503 `overloaded` with retry-after), never an RPC error that Envoy
/// could treat as a failure and fail open on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn load_beyond_max_inflight_is_refused_with_503_never_an_rpc_error() {
    let mut settings = settings("127.0.0.1:0");
    settings.max_inflight_checks = 1;
    let server = start_with(settings).await;
    let ListenAddr::Tcp(addr) = server.grpc.clone() else { panic!("tcp") };
    let mut tasks = Vec::new();
    for worker in 0..32 {
        tasks.push(tokio::spawn(async move {
            let mut client = AuthorizationClient::connect(format!("http://{addr}")).await.expect("connect");
            let mut seen = (0u32, 0u32, Vec::new());
            for i in 0..40 {
                // Unique tokens: every check is a cache miss with a signature to verify.
                let token = corpus::sign(
                    jsonwebtoken::Algorithm::EdDSA,
                    Some("ed-1"),
                    &corpus::claims(corpus::ISSUER, &format!("load-{worker}-{i}"), now()),
                );
                let bearer = format!("Bearer {token}");
                match client
                    .check(check_request("GET", "/api/items", &[("authorization", &bearer)], HeaderEncoding::Map))
                    .await
                {
                    Ok(resp) => match crate::support::outcome(&resp.into_inner()) {
                        (200, _) => seen.0 += 1,
                        (503, reason) if reason == "overloaded" => seen.1 += 1,
                        other => seen.2.push(format!("{other:?}")),
                    },
                    Err(status) => seen.2.push(format!("rpc error {status}")),
                }
            }
            seen
        }));
    }
    let (mut allowed, mut overloaded, mut wrong) = (0, 0, Vec::new());
    for task in tasks {
        let (a, o, w) = task.await.expect("task");
        allowed += a;
        overloaded += o;
        wrong.extend(w);
    }
    assert!(wrong.is_empty(), "answers other than allow or 503 overloaded: {:?}", &wrong[..wrong.len().min(5)]);
    assert!(allowed > 0, "nothing was allowed");
    assert!(overloaded > 0, "1280 checks from 32 clients never exceeded one in flight");
    println!("allowed {allowed}, overloaded {overloaded}");
    server.shutdown().await;
}

/// Issue 20: gRPC health (what Envoy's health check reads) says SERVING exactly when `/readyz`
/// is 200, on the TCP and the Unix socket listener: a replica that has not synced its state
/// from Redis yet takes no traffic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_health_follows_readiness_on_tcp_and_uds() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let dir = crate::support::scratch("health-readiness");
    let mut redis = crate::support::RedisServer::unstarted(&dir);
    let with_redis = |grpc: &str| {
        let text = format!(
            "{}\nstate: {{ backend: redis, url: \"{}\" }}\n",
            crate::support::policy_with_ports(grpc, 0),
            redis.url()
        );
        parse_and_validate(&text, &corpus::fixtures()).expect("policy")
    };
    let socket = dir.join("authz.sock");
    let tcp = start_with(with_redis("127.0.0.1:0")).await;
    let uds = start_with(with_redis(&format!("unix:{}", socket.display()))).await;
    let ListenAddr::Tcp(tcp_addr) = tcp.grpc else { panic!("tcp listener") };
    let tcp_channel =
        tonic::transport::Endpoint::from_shared(format!("http://{tcp_addr}")).expect("uri").connect_lazy();
    let uds_channel = tonic::transport::Endpoint::from_static("http://uds.invalid").connect_with_connector_lazy(
        tower::service_fn(move |_| {
            let socket = socket.clone();
            async move { tokio::net::UnixStream::connect(socket).await.map(hyper_util::rt::TokioIo::new) }
        }),
    );
    let status = |channel: tonic::transport::Channel| async move {
        let request = HealthCheckRequest { service: "envoy.service.auth.v3.Authorization".into() };
        HealthClient::new(channel).check(request).await.map(|r| r.into_inner().status).unwrap_or(-1)
    };
    let readyz = |addr: SocketAddr| async move {
        tokio::task::spawn_blocking(move || {
            crate::support::raw_http(addr, "GET /readyz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                .map(|r| r.status)
        })
        .await
        .ok()
        .flatten()
        .unwrap_or(0)
    };
    let serving = ServingStatus::Serving as i32;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    for (running, channel) in [(&tcp, tcp_channel.clone()), (&uds, uds_channel.clone())] {
        assert_eq!(readyz(running.health).await, 503, "no first sync: not ready");
        assert_eq!(status(channel).await, ServingStatus::NotServing as i32, "gRPC health agrees");
    }
    let redis = tokio::task::spawn_blocking(move || {
        redis.restart();
        redis
    })
    .await
    .expect("start redis");
    for (running, channel) in [(&tcp, tcp_channel), (&uds, uds_channel)] {
        let both = || async { is((readyz(running.health).await, status(channel.clone()).await), (200, serving)) };
        eventually(std::time::Duration::from_secs(15), "never ready and SERVING after Redis came up", both).await;
    }
    tcp.shutdown().await;
    uds.shutdown().await;
    drop(redis);
    let _ = std::fs::remove_dir_all(&dir);
}
