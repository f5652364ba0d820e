//! Ready for a real mesh (issue 22): the sidecar socket between processes of different users,
//! listener limits against slow and greedy peers, and rollouts without failed requests.

use crate::support::envoy::{Upstream, get, start_envoy_as, wait_ready};
use crate::support::{Launch, Portcullis, RunAs, corpus, now, scratch};
use std::os::unix::fs::{MetadataExt, PermissionsExt};

/// The chart's users: Envoy as 101, Portcullis as 65532, sharing only the socket's group.
const SOCKET_GROUP: u32 = 4242;

#[test]
fn the_sidecar_socket_admits_the_proxy_user_through_its_group_only() {
    let dir = scratch("uds-uids");
    // Both users create files here (the socket; Envoy's nothing), as in a shared emptyDir.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let socket = dir.join("authz.sock");
    let grpc = format!("unix:{}", socket.display());
    let portcullis = Portcullis::launch(
        &dir,
        Launch {
            grpc: Some(&grpc),
            listen_extra: &format!(", socket: {{ group: \"{SOCKET_GROUP}\" }}"),
            run_as: Some(RunAs { uid: 65532, gid: 65532, groups: vec![SOCKET_GROUP] }),
            ..Launch::default()
        },
    );
    let meta = std::fs::metadata(&socket).expect("socket exists");
    assert_eq!(meta.mode() & 0o777, 0o660, "owner and group only");
    assert_eq!((meta.uid(), meta.gid()), (65532, SOCKET_GROUP));

    let upstream = Upstream::start();
    let token =
        corpus::sign(jsonwebtoken::Algorithm::RS256, Some("rsa-1"), &corpus::claims(corpus::ISSUER, "uds-user", now()));
    let bearer = format!("Bearer {token}");
    let envoy_as = |name: &str, groups: Vec<u32>| {
        start_envoy_as(
            &dir,
            name,
            "sidecar-uds.yaml",
            upstream.addr,
            vec![("path: /var/run/portcullis/authz.sock", format!("path: {}", socket.display()))],
            Some(&RunAs { uid: 101, gid: 101, groups }),
        )
    };
    // Envoy in the socket's group: allow and deny as usual.
    let envoy = envoy_as("envoy-in-group", vec![SOCKET_GROUP]);
    wait_ready(&envoy);
    let (status, body) = get(&envoy, "/api/items", &[("authorization", &bearer)]);
    assert_eq!((status, body["headers"]["x-user-id"].as_str()), (200, Some("uds-user")), "{}", envoy.proc.output());
    let (status, body) = get(&envoy, "/api/items", &[]);
    assert_eq!((status, body["reason"].as_str()), (401, Some("credential_missing")));
    drop(envoy);

    // Another user outside the group cannot connect: Envoy fails closed (403/503), never allows.
    let outsider = envoy_as("envoy-outsider", vec![]);
    let (status, _) = crate::support::eventually_blocking(
        std::time::Duration::from_secs(20),
        "the outsider Envoy never answered",
        || {
            crate::support::raw_http(outsider.listener, "GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                .map(|r| r.status)
                .ok_or(())
        },
    );
    assert_ne!(status, 200, "a public route through an unreachable authz service must not pass");
    let (status, _) = get(&outsider, "/api/items", &[("authorization", &bearer)]);
    assert!(matches!(status, 403 | 503), "denied without the socket: {status}\n{}", outsider.proc.output());
    drop(portcullis);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Resident memory of `pid` in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

/// The reproduced attack: one connection, 80 streams, each announcing a 4 MiB Check and
/// sending all but its end. With the message limit (256 KiB) each stream is answered with an
/// error or reset as soon as its length prefix is read; the server's memory barely moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eighty_streams_holding_back_4_mib_messages_are_reset_and_cost_little_memory() {
    use std::time::Duration;
    let dir = scratch("h2-flood");
    let portcullis = Portcullis::launch(&dir, Launch::default());
    let pid = portcullis.proc.child.id();
    let before = rss_kib(pid);

    let tcp = tokio::net::TcpStream::connect(portcullis.grpc).await.expect("connect");
    let (client, connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
    let driver = tokio::spawn(connection);
    const MESSAGE: usize = 4 * 1024 * 1024;
    let mut streams = Vec::new();
    for _ in 0..80 {
        let mut client = client.clone().ready().await.expect("stream slot");
        let request = http::Request::post("http://portcullis/envoy.service.auth.v3.Authorization/Check")
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .expect("request");
        let (response, mut body) = client.send_request(request, false).expect("send");
        // Length prefix for 4 MiB, then all of it but the last byte, never ending the stream.
        let mut prefix = vec![0u8];
        prefix.extend_from_slice(&u32::try_from(MESSAGE).expect("size").to_be_bytes());
        let _ = body.send_data(bytes::Bytes::from(prefix), false);
        let _ = body.send_data(bytes::Bytes::from(vec![b'x'; MESSAGE - 1]), false);
        streams.push((response, body));
    }
    let mut ended = 0;
    for (response, _body) in &mut streams {
        match tokio::time::timeout(Duration::from_secs(10), response).await {
            Ok(Ok(resp)) => {
                let status = resp.headers().get("grpc-status").and_then(|v| v.to_str().ok()).unwrap_or("");
                assert!(
                    !status.is_empty() && status != "0",
                    "an oversized Check must fail, got grpc-status {status:?}"
                );
                ended += 1;
            }
            Ok(Err(_reset)) => ended += 1,
            Err(_) => panic!("a stream holding back a 4 MiB message was neither answered nor reset within 10 s"),
        }
    }
    assert_eq!(ended, 80);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = rss_kib(pid);
    let grew_mib = after.saturating_sub(before) / 1024;
    println!("RSS {before} KiB -> {after} KiB with 80 streams of 4 MiB held open");
    assert!(grew_mib < 64, "RSS grew {grew_mib} MiB (from {before} to {after} KiB)");
    driver.abort();
    drop(streams);
    drop(portcullis);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A peer that sends part of a request head and then nothing: the health and admin listeners
/// close it after `http_header_read_timeout`, and a listener at its connection cap refuses more.
#[test]
fn slow_header_senders_are_closed_and_connections_are_capped() {
    use std::io::{Read, Write};
    use std::time::{Duration, Instant};
    let dir = scratch("slowloris");
    let portcullis = Portcullis::launch(
        &dir,
        Launch {
            listen_extra: ", limits: { http_header_read_timeout: 1s, http_max_connections: 4 }",
            ..Launch::default()
        },
    );
    for addr in [portcullis.health, portcullis.admin] {
        let mut slow = std::net::TcpStream::connect(addr).expect("connect");
        slow.write_all(b"GET /livez HTTP/1.1\r\nhost: x\r\nx-slow: ").expect("partial head");
        slow.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        let started = Instant::now();
        let mut buf = [0u8; 256];
        let n = slow.read(&mut buf).unwrap_or(0);
        let took = started.elapsed();
        // Closed (0 bytes) or answered with an error status, well before our 10 s read timeout.
        let head = String::from_utf8_lossy(&buf[..n]).to_string();
        assert!(n == 0 || head.starts_with("HTTP/1.1 408"), "{addr}: {head}");
        assert!(took < Duration::from_secs(8), "{addr}: a slow header sender was held {took:?}");
    }
    // Four idle connections fill the health listener; a fifth is closed at once; health is
    // back once they go.
    let held: Vec<_> = (0..4).map(|_| std::net::TcpStream::connect(portcullis.health).expect("connect")).collect();
    std::thread::sleep(Duration::from_millis(100));
    let refused =
        crate::support::raw_http(portcullis.health, "GET /livez HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
    assert!(refused.is_none(), "a fifth connection was served: {refused:?}");
    drop(held);
    let ok = crate::support::wait_http_ok(portcullis.health, "/livez", Duration::from_secs(5));
    assert!(ok, "health did not come back after the idle connections closed");
    let metrics = portcullis.get("/metrics").map(|r| r.body).unwrap_or_default();
    assert!(
        metrics.contains("portcullis_http_connections_refused_total{listener=\"health\",why=\"connections\"}"),
        "{metrics}"
    );
    drop(portcullis);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A rollout: one of two replicas behind Envoy gets SIGTERM while load goes through. With the
/// default drain delay (5 s) it stays answering until Envoy's health check (1 s × 2) has moved
/// the traffic to the other replica: not one request fails.
#[test]
fn sigterm_during_load_through_envoy_fails_no_request() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::time::{Duration, Instant};
    let dir = scratch("rollout");
    let (dir_a, dir_b) = (dir.join("a"), dir.join("b"));
    std::fs::create_dir_all(&dir_a).expect("dir a");
    std::fs::create_dir_all(&dir_b).expect("dir b");
    let mut a = Portcullis::launch(&dir_a, Launch::default());
    let b = Portcullis::launch(&dir_b, Launch::default());
    let upstream = Upstream::start();
    let endpoint = |port: u16| {
        format!(
            "              - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }} }}"
        )
    };
    let envoy = crate::support::envoy::start_envoy_from(
        &dir,
        "envoy",
        "envoy.yaml",
        upstream.addr,
        vec![(
            "              - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: 9191 } } }",
            format!("{}\n{}", endpoint(a.grpc.port()), endpoint(b.grpc.port())),
        )],
    );
    wait_ready(&envoy);
    let token =
        corpus::sign(jsonwebtoken::Algorithm::RS256, Some("rsa-1"), &corpus::claims(corpus::ISSUER, "roll", now()));
    let bearer = format!("Bearer {token}");
    // Both replicas healthy in Envoy before the rollout starts.
    let metrics_of = |p: &Portcullis| p.get("/metrics").map(|r| r.body).unwrap_or_default();
    crate::support::eventually_blocking(Duration::from_secs(15), "both replicas never took traffic", || {
        for _ in 0..10 {
            assert_eq!(get(&envoy, "/api/items", &[("authorization", &bearer)]).0, 200);
        }
        let took = |p: &Portcullis| metrics_of(p).contains("decision=\"allow\"");
        if took(&a) && took(&b) { Ok(()) } else { Err(()) }
    });

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(std::sync::Mutex::new(Vec::new())));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (stop, ok, failed, bearer, listener) =
                (stop.clone(), ok.clone(), failed.clone(), bearer.clone(), envoy.listener);
            std::thread::spawn(move || {
                let request = format!(
                    "GET /api/items HTTP/1.1\r\nhost: api.example.com\r\nauthorization: {bearer}\r\nconnection: close\r\n\r\n"
                );
                while !stop.load(Ordering::Acquire) {
                    match crate::support::raw_http(listener, &request).map(|r| (r.status, r.body)) {
                        Some((200, _)) => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        other => failed.lock().expect("lock").push(format!("{other:?}")),
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let before = ok.load(Ordering::Relaxed);
    let term = Instant::now();
    a.signal("TERM");
    let (code, _) =
        crate::support::eventually_blocking(Duration::from_secs(30), "replica a never exited", || {
            match a.proc.child.try_wait() {
                Ok(Some(status)) => Ok(status.code()),
                other => Err(other.map(|_| ())),
            }
        });
    let drained = term.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Release);
    for w in workers {
        w.join().expect("worker");
    }
    let failed = failed.lock().expect("lock").clone();
    let during = ok.load(Ordering::Relaxed) - before;
    println!("rollout: {during} requests passed during and after the drain ({drained:?}); {} failed", failed.len());
    assert!(
        failed.is_empty(),
        "{} requests failed during the rollout: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert_eq!(code, Some(0), "the stopped replica exits 0");
    assert!(drained >= Duration::from_secs(5), "exited before the default drain delay: {drained:?}");
    assert!(during > 20, "load kept going through the rollout ({during})");
    drop((a, b, envoy));
    let _ = std::fs::remove_dir_all(&dir);
}

pub mod callers {
    use crate::support::{InProcess, corpus, is};
    use portcullis::config::parse_and_validate;
    use portcullis::dev::request::{HeaderEncoding, check_request};
    use portcullis::server::proto::envoy::service::auth::v3::authorization_client::AuthorizationClient;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use std::net::{IpAddr, SocketAddr};
    use std::sync::Arc;
    use std::time::Duration;

    fn settings(callers: &str) -> portcullis::config::Settings {
        let text = crate::support::policy_with_ports("127.0.0.1:0", 0)
            .replace("health: \"127.0.0.1:0\"", &format!("health: \"127.0.0.1:0\", callers: {callers}"));
        parse_and_validate(&text, &corpus::fixtures()).unwrap_or_else(|e| panic!("{e}"))
    }

    /// One Check over a connection from `source` (plain) or with the client certificate
    /// `client` (TLS): the answer's reason, or the transport error.
    pub async fn check_from(addr: SocketAddr, source: IpAddr, client: Option<&str>) -> Result<String, String> {
        let tls = client.map(|name| {
            let dir = corpus::fixtures().join("tls");
            let mut roots = rustls::RootCertStore::empty();
            for ca in CertificateDer::pem_file_iter(dir.join("ca.pem")).expect("ca") {
                roots.add(ca.expect("ca cert")).expect("root");
            }
            let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
            let mut config = if name.is_empty() {
                builder.with_no_client_auth()
            } else {
                let certs = CertificateDer::pem_file_iter(dir.join(format!("{name}.pem")))
                    .expect("cert")
                    .collect::<Result<Vec<_>, _>>()
                    .expect("certs");
                let key = PrivateKeyDer::from_pem_file(dir.join(format!("{name}.key"))).expect("key");
                builder.with_client_auth_cert(certs, key).expect("client auth")
            };
            config.alpn_protocols = vec![b"h2".to_vec()];
            tokio_rustls::TlsConnector::from(Arc::new(config))
        });
        let scheme = if tls.is_some() { "https" } else { "http" };
        let channel = tonic::transport::Endpoint::from_shared(format!("{scheme}://127.0.0.1:{}", addr.port()))
            .map_err(|e| e.to_string())?
            .connect_timeout(Duration::from_secs(5))
            .connect_with_connector(tower::service_fn(move |_| {
                let tls = tls.clone();
                async move {
                    let socket = tokio::net::TcpSocket::new_v4()?;
                    socket.bind(SocketAddr::new(source, 0))?;
                    let tcp = socket.connect(addr).await?;
                    let io: Box<dyn crate::mesh::callers::Io> = match tls {
                        Some(tls) => {
                            let name = ServerName::IpAddress(addr.ip().into());
                            Box::new(tls.connect(name, tcp).await?)
                        }
                        None => Box::new(tcp),
                    };
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(io))
                }
            }))
            .await
            .map_err(|e| format!("connect: {e:?}"))?;
        let mut client = AuthorizationClient::new(channel);
        let request = check_request("GET", "/api/items", &[], HeaderEncoding::Map);
        match tokio::time::timeout(Duration::from_secs(5), client.check(request)).await {
            Ok(Ok(resp)) => Ok(resp.into_inner().status.map(|s| s.message).unwrap_or_default()),
            Ok(Err(status)) => Err(format!("rpc: {status:?}")),
            Err(_) => Err("timed out".into()),
        }
    }

    pub trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
    impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Io for T {}

    fn refused(metrics: &str, why: &str) -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("portcullis_grpc_callers_refused_total{{why=\"{why}\"}} ")))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn only_listed_peer_networks_reach_check() {
        let server = InProcess::start(&settings("{ cidrs: [127.0.0.2/32] }")).await;
        let addr = server.grpc_tcp();
        let before = refused(&server.metrics().await, "cidr");
        let listed = check_from(addr, [127, 0, 0, 2].into(), None).await;
        assert_eq!(listed, Ok("credential_missing".to_string()), "a listed peer is decided as usual");
        let other = check_from(addr, [127, 0, 0, 1].into(), None).await;
        assert!(other.is_err(), "a peer outside the list must not reach Check: {other:?}");
        let counted = || async { is(refused(&server.metrics().await, "cidr") > before, true) };
        crate::support::eventually(Duration::from_secs(5), "refusal not counted", counted).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tls_callers_need_a_listed_spiffe_id_from_the_caller_ca() {
        let tls = corpus::fixtures().join("tls");
        let callers = format!(
            "{{ tls: {{ cert_file: {0}/server.pem, key_file: {0}/server.key, client_ca_file: {0}/ca.pem }}, spiffe_ids: [\"spiffe://cluster.local/ns/istio-system/*\"] }}",
            tls.display()
        );
        let server = InProcess::start(&settings(&callers)).await;
        let addr = server.grpc_tcp();
        let local: IpAddr = [127, 0, 0, 1].into();
        assert_eq!(
            check_from(addr, local, Some("client-gateway")).await,
            Ok("credential_missing".to_string()),
            "the gateway's identity is on the list"
        );
        for (client, why) in [("client-intruder", "identity"), ("client-untrusted", "tls"), ("", "tls")] {
            let before = refused(&server.metrics().await, why);
            let got = check_from(addr, local, Some(client)).await;
            assert!(got.is_err(), "{client:?} must not reach Check: {got:?}");
            let counted = || async { is(refused(&server.metrics().await, why) > before, true) };
            crate::support::eventually(Duration::from_secs(5), &format!("{client:?} not counted as {why}"), counted)
                .await;
        }
        // Plain HTTP/2 to a TLS listener gets nowhere either.
        assert!(check_from(addr, local, None).await.is_err());
    }

    #[test]
    fn caller_settings_are_validated() {
        let text = crate::support::policy_with_ports("127.0.0.1:0", 0).replace(
            "health: \"127.0.0.1:0\"",
            "health: \"127.0.0.1:0\", callers: { cidrs: [not-a-cidr], spiffe_ids: [\"cluster.local/x\"] }",
        );
        let err = parse_and_validate(&text, &corpus::fixtures()).expect_err("invalid").to_string();
        for want in [
            "listen.callers.cidrs[0]",
            "listen.callers.spiffe_ids: needs listen.callers.tls",
            "listen.callers.spiffe_ids[0]",
        ] {
            assert!(err.contains(want), "{want}: {err}");
        }
    }
}

/// `[::]` (the chart's default) serves IPv4 clients, and IPv6 ones where the host has IPv6.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_on_the_ipv6_wildcard_take_both_families() {
    let text = crate::support::policy_with_ports("[::]:0", 0).replace("health: \"127.0.0.1:0\"", "health: \"[::]:0\"");
    let settings = portcullis::config::parse_and_validate(&text, &corpus::fixtures()).expect("policy");
    let server = crate::support::InProcess::start(&settings).await;
    let port = server.health.port();
    let v4 = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let get = |addr| async move {
        tokio::task::spawn_blocking(move || {
            crate::support::raw_http(addr, "GET /livez HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                .map(|r| r.status)
        })
        .await
        .expect("join")
    };
    assert_eq!(get(v4).await, Some(200), "IPv4 through the IPv6 wildcard");
    if std::net::TcpListener::bind("[::1]:0").is_ok() {
        let v6 = std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port));
        assert_eq!(get(v6).await, Some(200), "IPv6");
    }
    server.shutdown().await;
}

/// `listen.callers` is applied at reload, for new connections: a list edited in the mounted
/// policy (or a rotated certificate) needs no restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_lists_reload_without_a_restart() {
    use crate::support::{Launch, Portcullis, eventually, scratch};
    use std::time::Duration;
    let dir = scratch("callers-reload");
    let p =
        Portcullis::launch(&dir, Launch { listen_extra: ", callers: { cidrs: [127.0.0.2/32] }", ..Launch::default() });
    let local: std::net::IpAddr = [127, 0, 0, 1].into();
    assert!(callers::check_from(p.grpc, local, None).await.is_err(), "127.0.0.1 is not listed yet");
    let policy = std::fs::read_to_string(&p.config).expect("policy");
    std::fs::write(&p.config, policy.replace("cidrs: [127.0.0.2/32]", "cidrs: [127.0.0.0/8]")).expect("write");
    let admitted = || async { callers::check_from(p.grpc, local, None).await };
    let (reason, _) = eventually(Duration::from_secs(15), "the new caller list never applied", admitted).await;
    assert_eq!(reason, "credential_missing");
    drop(p);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `listen.callers` through a real Envoy: an Envoy whose address is not listed gets no
/// decision at all and fails closed (never an allow); a listed one is served as usual.
#[test]
fn envoy_outside_the_caller_list_fails_closed() {
    use crate::support::envoy::start_envoy;
    let dir = scratch("callers-envoy");
    let upstream = Upstream::start();
    let token =
        corpus::sign(jsonwebtoken::Algorithm::RS256, Some("rsa-1"), &corpus::claims(corpus::ISSUER, "c", now()));
    let bearer = format!("Bearer {token}");
    for (cidrs, listed) in [("127.0.0.2/32", false), ("127.0.0.0/8", true)] {
        let sub = dir.join(if listed { "listed" } else { "unlisted" });
        std::fs::create_dir_all(&sub).expect("dir");
        let extra = format!(", callers: {{ cidrs: [{cidrs}] }}");
        let portcullis = Portcullis::launch(&sub, Launch { listen_extra: &extra, ..Launch::default() });
        let envoy = start_envoy(&sub, "envoy", portcullis.grpc.port(), upstream.addr, false);
        let request = format!(
            "GET /api/items HTTP/1.1\r\nhost: api.example.com\r\nauthorization: {bearer}\r\nconnection: close\r\n\r\n"
        );
        // Until Envoy listens there is no answer; then the answer must settle as expected.
        let answered = || match crate::support::raw_http(envoy.listener, &request).map(|r| r.status) {
            Some(status) if (status == 200) == listed => Ok(status),
            other => Err(other),
        };
        let (status, _) = crate::support::eventually_blocking(std::time::Duration::from_secs(20), cidrs, answered);
        if !listed {
            assert!(matches!(status, 403 | 503), "an unlisted proxy must fail closed, got {status}");
            let metrics = portcullis.get("/metrics").map(|r| r.body).unwrap_or_default();
            assert!(metrics.contains("portcullis_grpc_callers_refused_total{why=\"cidr\"}"), "{metrics}");
        }
        drop(envoy);
        drop(portcullis);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
