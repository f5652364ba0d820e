//! Issue 33: one hostile peer cannot exhaust a listener. The hostile peer is 127.0.0.2 (or, on
//! the unix socket, the same uid before the admission deadline passes), the legit caller
//! 127.0.0.1; each test runs the attack and checks alongside, and the process's RSS against the
//! budget. BENCHMARKS.md records each attack's peak RSS and the legit caller's success rate.

use crate::mesh::callers::check_from;
use crate::support::{Launch, Portcullis, scratch};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// RSS must stay under this with the default limits (README "Listeners").
const RSS_BUDGET_KIB: u64 = 128 * 1024;

use crate::mesh::rss_kib;

/// A TCP connection to `addr` from loopback address `source` (a peer of its own).
async fn tcp_from(source: &str, addr: SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.bind(SocketAddr::new(source.parse().expect("ip"), 0)).expect("bind");
    socket.connect(addr).await.expect("connect")
}

/// An HTTP/2 client from `source` (its connection driven by a task the caller aborts).
async fn h2_from(
    source: &str,
    addr: SocketAddr,
) -> (h2::client::SendRequest<bytes::Bytes>, tokio::task::JoinHandle<Result<(), h2::Error>>) {
    let (client, connection) = h2::client::handshake(tcp_from(source, addr).await).await.expect("h2 handshake");
    (client, tokio::spawn(connection))
}

/// How many of 20 plain Checks the legit caller (127.0.0.1) gets answered.
async fn legit_checks(addr: SocketAddr) -> usize {
    let mut ok = 0;
    for _ in 0..20 {
        ok += usize::from(check_from(addr, "127.0.0.1".parse().expect("ip"), None).await.is_ok());
    }
    ok
}

fn counter(metrics: &str, prefix: &str) -> f64 {
    metrics.lines().find_map(|l| l.strip_prefix(prefix)).and_then(|v| v.trim().parse().ok()).unwrap_or(0.0)
}

/// `n` TCP connections from `source` to `addr` that send nothing (those refused at once
/// included: they are closed by the server).
fn silent(source: &str, addr: SocketAddr, n: usize) -> Vec<socket2::Socket> {
    let source: IpAddr = source.parse().expect("ip");
    (0..n)
        .filter_map(|_| {
            let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).ok()?;
            socket.bind(&SocketAddr::new(source, 0).into()).ok()?;
            socket.connect_timeout(&addr.into(), Duration::from_secs(2)).ok()?;
            Some(socket)
        })
        .collect()
}

/// How many of `sockets` the server has closed (a read sees EOF or a reset).
fn closed(sockets: &[socket2::Socket]) -> usize {
    sockets
        .iter()
        .filter(|s| {
            let _ = s.set_nonblocking(true);
            let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 1];
            match s.recv(&mut buf) {
                Ok(0) => true,
                Ok(_) => false,
                Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
            }
        })
        .count()
}

/// 1,100 silent connections from one peer used to take every global slot (a freshly started
/// Envoy then answered 503 for every route). Now the peer holds its share at most, each for the
/// admission deadline at most, and never a global slot; the legit caller's Checks all succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_from_one_peer_lock_nobody_out() {
    let dir = scratch("abuse-silent");
    let portcullis =
        Portcullis::launch(&dir, Launch { listen_extra: ", limits: { admission_timeout: 1s }", ..Launch::default() });
    let pid = portcullis.proc.child.id();
    let hostile = silent("127.0.0.2", portcullis.grpc, 1100);
    assert!(hostile.len() > 1000, "only {} hostile connections opened", hostile.len());
    let ok = legit_checks(portcullis.grpc).await;
    let peak = rss_kib(pid);
    println!("silent connections: legit checks {ok}/20, RSS {peak} KiB");
    assert_eq!(ok, 20, "the legit caller was locked out");
    assert!(peak < RSS_BUDGET_KIB, "RSS {peak} KiB over the budget");
    // Past the admission deadline every silent connection is closed.
    let all_closed = crate::support::within(Duration::from_secs(10), || {
        let n = closed(&hostile);
        if n == hostile.len() { Ok(()) } else { Err(n) }
    });
    assert!(all_closed.is_ok(), "silent connections still open past the deadline: {all_closed:?}");
    let metrics = portcullis.get("/metrics").map(|r| r.body).unwrap_or_default();
    let peer = counter(&metrics, "portcullis_grpc_callers_refused_total{why=\"peer\"} ");
    let deadline = counter(&metrics, "portcullis_grpc_callers_refused_total{why=\"deadline\"} ");
    // Accepted as fast as the loop goes: each refused for its peer's share at once, or closed at
    // the deadline once it had a place in the share (64 at a time).
    assert!(peer + deadline >= 1100.0 - 256.0 && deadline >= 1.0, "refusals: peer {peer}, deadline {deadline}");
    // The refusals are counted one by one but logged once per peer and reason per interval.
    let lines = portcullis.proc.output().matches("gRPC caller refused").count();
    assert!(lines <= 4, "{lines} refusal log lines for {peer} refusals");
    drop(hostile);
    // What an admitted, idle HTTP/2 connection costs (README "Listeners" arithmetic): a peer's
    // whole share of them.
    let before = rss_kib(pid);
    let mut admitted = Vec::new();
    for _ in 0..64 {
        admitted.push(h2_from("127.0.0.3", portcullis.grpc).await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let per_connection = rss_kib(pid).saturating_sub(before) / 64;
    println!("admitted idle connections: ~{per_connection} KiB each");
    assert!(per_connection < 256, "{per_connection} KiB per idle connection");
    for (_, driver) in admitted {
        driver.abort();
    }
    drop(portcullis);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The unix socket had no cap at all (3,000 idle connections accepted): now one uid holds its
/// share, each connection for the admission deadline at most.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_unix_socket_holds_one_peer_to_its_share() {
    let dir = scratch("abuse-unix");
    let socket = dir.join("authz.sock");
    let grpc = format!("unix:{}", socket.display());
    let portcullis = Portcullis::launch(
        &dir,
        Launch { grpc: Some(&grpc), listen_extra: ", limits: { admission_timeout: 1s }", ..Launch::default() },
    );
    let idle: Vec<std::os::unix::net::UnixStream> =
        (0..3000).filter_map(|_| std::os::unix::net::UnixStream::connect(&socket).ok()).collect();
    let peak = rss_kib(portcullis.proc.child.id());
    let refusals = || {
        let metrics = portcullis.get("/metrics").map(|r| r.body).unwrap_or_default();
        let of = |why: &str| counter(&metrics, &format!("portcullis_grpc_callers_refused_total{{why=\"{why}\"}} "));
        (of("peer"), of("deadline"))
    };
    // Every idle connection is refused at once for the uid's share, or closed at the deadline.
    let settled = crate::support::within(Duration::from_secs(20), || {
        let (peer, deadline) = refusals();
        if peer + deadline >= idle.len() as f64 - 256.0 { Ok(()) } else { Err((peer, deadline)) }
    });
    let (peer, deadline) = refusals();
    println!(
        "unix: {} connections opened, {peer} refused for the share, {deadline} at the deadline, RSS {peak} KiB",
        idle.len()
    );
    assert!(settled.is_ok() && peer >= 1500.0, "idle unix connections held: {settled:?}");
    assert!(peak < RSS_BUDGET_KIB, "RSS {peak} KiB over the budget");
    // Once the deadline has closed the idle ones, the same uid is served again.
    drop(idle);
    let mut served = Err("never tried".to_string());
    for _ in 0..50 {
        served = uds_check(&socket).await;
        if served.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(served.is_ok(), "no Check over the socket after the idle connections went: {served:?}");
    drop(portcullis);
    let _ = std::fs::remove_dir_all(&dir);
}

/// One Check over the unix socket: the answer's reason, or the transport error.
async fn uds_check(socket: &std::path::Path) -> Result<String, String> {
    use portcullis::dev::request::{HeaderEncoding, check_request};
    use portcullis::server::proto::envoy::service::auth::v3::authorization_client::AuthorizationClient;
    let socket = socket.to_path_buf();
    let channel = tonic::transport::Endpoint::from_static("http://uds.invalid")
        .connect_timeout(Duration::from_secs(2))
        .connect_with_connector(tower::service_fn(move |_| {
            let socket = socket.clone();
            async move { tokio::net::UnixStream::connect(socket).await.map(hyper_util::rt::TokioIo::new) }
        }))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let mut client = AuthorizationClient::new(channel);
    let request = check_request("GET", "/api/items", &[], HeaderEncoding::Map);
    match tokio::time::timeout(Duration::from_secs(5), client.check(request)).await {
        Ok(Ok(resp)) => Ok(resp.into_inner().status.map(|s| s.message).unwrap_or_default()),
        Ok(Err(status)) => Err(format!("rpc: {status:?}")),
        Err(_) => Err("timed out".into()),
    }
}

/// 300 idle connections re-opened as they close kept `/livez` failing (the kubelet then
/// restarted the pod) and admin writes impossible; large unfinished headers took RSS to 217 MiB.
/// Now one peer holds its share of each listener, and heads are bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_admin_stay_reachable_while_one_peer_holds_connections() {
    use std::io::Write;
    let dir = scratch("abuse-http");
    let portcullis = Portcullis::launch(&dir, Launch::default());
    let pid = portcullis.proc.child.id();
    let mut held = Vec::new();
    for addr in [portcullis.health, portcullis.admin] {
        held.extend(silent("127.0.0.2", addr, 300));
    }
    // And heads that never end: ~400 KB of header lines on 256 connections (from another
    // address of the same kind of peer), which took RSS from 13 to 217 MiB.
    let mut heavy = silent("127.0.0.4", portcullis.health, 256);
    let pad = format!("x-pad: {}\r\n", "a".repeat(8 * 1024));
    for s in &mut heavy {
        let _ = s.set_write_timeout(Some(Duration::from_millis(200)));
        let _ = s.write_all(b"GET /livez HTTP/1.1\r\nhost: x\r\n");
        for _ in 0..50 {
            if s.write_all(pad.as_bytes()).is_err() {
                break;
            }
        }
    }
    let mut ok = 0;
    for i in 0..20 {
        let live = portcullis.get("/livez").is_some_and(|r| r.status == 200);
        let body = format!(r#"{{"jti":"abuse-{i}","iss":"{}"}}"#, crate::support::corpus::ISSUER);
        let revoked = portcullis.admin_request("POST", "/v1/revocations", &body).is_some_and(|r| r.status == 201);
        ok += usize::from(live && revoked);
    }
    let peak = rss_kib(pid);
    println!("health/admin: legit {ok}/20, RSS {peak} KiB");
    assert_eq!(ok, 20, "probes or admin writes failed while one peer held connections");
    assert!(peak < RSS_BUDGET_KIB, "RSS {peak} KiB over the budget");
    let metrics = portcullis.get("/metrics").map(|r| r.body).unwrap_or_default();
    assert!(
        metrics.contains("portcullis_http_connections_refused_total{listener=\"health\",why=\"peer\"}"),
        "{metrics}"
    );
    drop((held, heavy));
    drop(portcullis);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Each of 256 streams on 4 connections holding an unfinished message just under the message
/// limit took RSS to 276 MiB (OOM-killed under the chart's 256 MiB limit). The buffered bytes
/// are one budget now: the peer gets its share (16 MiB), the streams past it are ended, and a
/// legit caller's Checks go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_messages_on_every_stream_stay_within_the_peer_budget() {
    let dir = scratch("abuse-unfinished");
    let portcullis = Portcullis::launch(&dir, Launch::default());
    let pid = portcullis.proc.child.id();
    const MESSAGE: usize = 200 * 1024;
    let mut held = Vec::new();
    let mut drivers = Vec::new();
    for _ in 0..4 {
        let (client, driver) = h2_from("127.0.0.2", portcullis.grpc).await;
        drivers.push(driver);
        for _ in 0..256 {
            let Ok(mut client) = client.clone().ready().await else { break };
            let request = http::Request::post("http://portcullis/envoy.service.auth.v3.Authorization/Check")
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .body(())
                .expect("request");
            let Ok((response, mut body)) = client.send_request(request, false) else { break };
            // A length prefix one byte past what is sent, then the rest, never ending.
            let mut prefix = vec![0u8];
            prefix.extend_from_slice(&u32::try_from(MESSAGE + 1).expect("size").to_be_bytes());
            let _ = body.send_data(bytes::Bytes::from(prefix), false);
            body.reserve_capacity(MESSAGE);
            let _ = body.send_data(bytes::Bytes::from(vec![b'x'; MESSAGE]), false);
            held.push((response, body));
        }
    }
    // Let the server read what the windows let through.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ok = legit_checks(portcullis.grpc).await;
    let peak = rss_kib(pid);
    let metrics = portcullis.get("/metrics").map(|r| r.body).unwrap_or_default();
    let refused = counter(&metrics, "portcullis_grpc_buffer_refused_total ");
    println!("unfinished messages: {} streams, {refused} ended over budget, legit {ok}/20, RSS {peak} KiB", held.len());
    assert_eq!(ok, 20, "the legit caller failed while one peer held unfinished messages");
    assert!(peak < RSS_BUDGET_KIB, "RSS {peak} KiB over the budget");
    assert!(refused >= 1.0, "no stream was ended over the budget: {metrics}");
    for driver in drivers {
        driver.abort();
    }
    drop(held);
    drop(portcullis);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `grpc.health.v1.Health/Watch` streams never end by themselves (no request timeout applies):
/// 40 connections × 256 of them took 66 MiB. Now one peer holds its share (16) and the rest are
/// refused at once with RESOURCE_EXHAUSTED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_watch_streams_are_held_to_a_share_per_peer() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    let dir = scratch("abuse-watch");
    let portcullis = Portcullis::launch(&dir, Launch::default());
    let pid = portcullis.proc.child.id();
    let addr = portcullis.grpc;
    let (mut served, mut refused) = (Vec::new(), 0);
    for _ in 0..4 {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{}", addr.port()))
            .expect("endpoint")
            .connect_with_connector(tower::service_fn(move |_| async move {
                let socket = tokio::net::TcpSocket::new_v4()?;
                socket.bind(SocketAddr::new("127.0.0.2".parse().expect("ip"), 0))?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(socket.connect(addr).await?))
            }))
            .await
            .expect("connect");
        let mut client = HealthClient::new(channel);
        for _ in 0..64 {
            match client.watch(HealthCheckRequest { service: String::new() }).await {
                Ok(stream) => served.push(stream),
                Err(status) if status.code() == tonic::Code::ResourceExhausted => refused += 1,
                Err(status) => panic!("unexpected answer to Watch: {status:?}"),
            }
        }
    }
    let ok = legit_checks(addr).await;
    let peak = rss_kib(pid);
    println!("watch flood: {} served, {refused} refused, legit {ok}/20, RSS {peak} KiB", served.len());
    assert_eq!(served.len(), 16, "one peer's share of Watch streams");
    assert_eq!(refused, 240);
    assert_eq!(ok, 20);
    assert!(peak < RSS_BUDGET_KIB, "RSS {peak} KiB over the budget");
    drop(served);
    drop(portcullis);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A peer that never opens its flow-control window leaves every answer stalled on its stream:
/// 120 connections took RSS to 290 MiB, held while the peer answered PINGs. Now a peer holds at
/// most `max_streams_per_peer` (512) streams from request to the end of the answer, over all
/// its connections; more are refused at once (trailers only, which no window holds back), and
/// `max_connection_age` plus its grace ends such connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_stalled_behind_a_zero_window_are_held_to_the_peers_share() {
    use portcullis::dev::request::{HeaderEncoding, check_request};
    use prost::Message;
    let dir = scratch("abuse-zero-window");
    let portcullis = Portcullis::launch(&dir, Launch::default());
    let pid = portcullis.proc.child.id();
    let message = check_request("GET", "/api/items", &[], HeaderEncoding::Map).encode_to_vec();
    let mut framed = vec![0u8];
    framed.extend_from_slice(&u32::try_from(message.len()).expect("len").to_be_bytes());
    framed.extend_from_slice(&message);
    let framed = bytes::Bytes::from(framed);
    let (mut stalled, mut refused) = (0, 0);
    let (mut drivers, mut held, mut clients) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..8 {
        let tcp = tcp_from("127.0.0.2", portcullis.grpc).await;
        // A zero stream window: the server may send headers, never data.
        let (client, connection) =
            h2::client::Builder::new().initial_window_size(0).handshake::<_, bytes::Bytes>(tcp).await.expect("h2");
        drivers.push(tokio::spawn(connection));
        let mut pending = Vec::new();
        for _ in 0..256 {
            let Ok(mut client) = client.clone().ready().await else { break };
            let request = http::Request::post("http://portcullis/envoy.service.auth.v3.Authorization/Check")
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .body(())
                .expect("request");
            let Ok((response, mut body)) = client.send_request(request, false) else { break };
            let _ = body.send_data(framed.clone(), true);
            pending.push(response);
        }
        for response in pending {
            match tokio::time::timeout(Duration::from_secs(10), response).await {
                Ok(Ok(resp)) if resp.headers().get("grpc-status").is_some_and(|s| s == "8") => refused += 1,
                Ok(Ok(resp)) => {
                    stalled += 1;
                    held.push(resp);
                }
                other => panic!("a stream was neither answered nor refused: {other:?}"),
            }
        }
        clients.push(client);
    }
    let ok = legit_checks(portcullis.grpc).await;
    let peak = rss_kib(pid);
    println!("zero window: {stalled} answers stalled, {refused} refused, legit {ok}/20, RSS {peak} KiB");
    assert!(stalled <= 512, "{stalled} stalled answers held for one peer");
    assert!(refused >= 2048 - 512, "only {refused} refused");
    assert_eq!(ok, 20);
    assert!(peak < RSS_BUDGET_KIB, "RSS {peak} KiB over the budget");
    for driver in drivers {
        driver.abort();
    }
    drop((held, clients));
    drop(portcullis);
    let _ = std::fs::remove_dir_all(&dir);
}

/// With `listen.callers.tls`, a peer without any certificate re-opening connections as the
/// handshake timeout closed them kept the legit caller out (2 ok, 17 refused in 25 s) and wrote
/// a WARN line per refusal (2,341 in 25 s). Now it holds its share only, for the admission
/// deadline, and its refusals are logged once per reason per interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_without_certificates_locks_nobody_out_and_logs_little() {
    let tls = crate::support::corpus::fixtures().join("tls");
    let extra = format!(
        ", callers: {{ tls: {{ cert_file: {0}/server.pem, key_file: {0}/server.key, client_ca_file: {0}/ca.pem }}, spiffe_ids: [\"spiffe://cluster.local/ns/istio-system/*\"] }}",
        tls.display()
    );
    let dir = scratch("abuse-tls");
    let portcullis = Portcullis::launch(&dir, Launch { listen_extra: &extra, ..Launch::default() });
    let addr = portcullis.grpc;
    let hostile: IpAddr = "127.0.0.2".parse().expect("ip");
    // Silent connections that never say ClientHello, and handshakes without a certificate.
    let silent_ones = silent("127.0.0.2", addr, 1100);
    let mut no_cert = 0;
    for _ in 0..100 {
        no_cert += usize::from(check_from(addr, hostile, Some("")).await.is_err());
    }
    let mut ok = 0;
    for _ in 0..20 {
        if check_from(addr, "127.0.0.1".parse().expect("ip"), Some("client-gateway")).await.is_ok() {
            ok += 1;
        }
    }
    let peak = rss_kib(portcullis.proc.child.id());
    let lines = portcullis.proc.output().matches("gRPC caller refused").count();
    println!(
        "tls: {} silent, {no_cert} without a certificate refused, legit {ok}/20, {lines} log lines, RSS {peak} KiB",
        silent_ones.len()
    );
    assert_eq!(no_cert, 100, "a handshake without a certificate got through");
    assert_eq!(ok, 20, "the legit caller was locked out");
    assert!(lines <= 6, "{lines} refusal lines");
    assert!(peak < RSS_BUDGET_KIB, "RSS {peak} KiB over the budget");
    drop(silent_ones);
    drop(portcullis);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Rapid reset (CVE-2023-44487): streams opened and reset at once, thousands a second, on one
/// connection; and a CONTINUATION flood (CVE-2024-27316 class): one header block that never
/// ends. Each costs the hostile connection, not the process; the legit caller goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_and_continuation_floods_cost_only_the_attacker() {
    use tokio::io::AsyncWriteExt;
    let dir = scratch("abuse-reset");
    let portcullis = Portcullis::launch(&dir, Launch::default());
    let pid = portcullis.proc.child.id();
    // Rapid reset: 20,000 streams opened and cancelled.
    let (client, driver) = h2_from("127.0.0.2", portcullis.grpc).await;
    let mut opened = 0;
    for _ in 0..20_000 {
        let Ok(mut client) = client.clone().ready().await else { break };
        let request = http::Request::post("http://portcullis/envoy.service.auth.v3.Authorization/Check")
            .header("content-type", "application/grpc")
            .body(())
            .expect("request");
        let Ok((response, body)) = client.send_request(request, false) else { break };
        // Dropping both sends RST_STREAM(CANCEL).
        drop((response, body));
        opened += 1;
    }
    let ended = tokio::time::timeout(Duration::from_secs(10), driver).await;
    // CONTINUATION flood: HEADERS without END_HEADERS, then CONTINUATION frames for ever.
    let mut raw = tcp_from("127.0.0.2", portcullis.grpc).await;
    let frame = |kind: u8, flags: u8, stream: u32, payload: &[u8]| {
        let len = u32::try_from(payload.len()).expect("len").to_be_bytes();
        let mut f = vec![len[1], len[2], len[3], kind, flags];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    };
    let mut sent = 0usize;
    let mut head = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    head.extend(frame(0x4, 0, 0, &[])); // SETTINGS
    head.extend(frame(0x1, 0, 1, &[0x82])); // HEADERS (:method GET), no END_HEADERS
    let _ = raw.write_all(&head).await;
    // Literal header fields without indexing, 16 KiB of them a frame.
    let mut block = Vec::new();
    while block.len() < 16 * 1024 - 64 {
        block.extend_from_slice(&[0x00, 0x05]);
        block.extend_from_slice(b"x-pad");
        block.extend_from_slice(&[0x7f, 0x80, 0x01]);
        block.extend_from_slice(&[b'a'; 255]);
    }
    let continuation = frame(0x9, 0, 1, &block);
    for _ in 0..4096 {
        if raw.write_all(&continuation).await.is_err() {
            break;
        }
        sent += continuation.len();
    }
    let ok = legit_checks(portcullis.grpc).await;
    let peak = rss_kib(pid);
    println!(
        "rapid reset: {opened} streams opened and reset, connection ended: {}; continuation: {} KiB sent before the close; legit {ok}/20, RSS {peak} KiB",
        ended.is_ok(),
        sent / 1024
    );
    assert_eq!(ok, 20);
    assert!(opened < 20_000 && ended.is_ok(), "the resetting connection was not ended ({opened} streams)");
    assert!(peak < RSS_BUDGET_KIB, "RSS {peak} KiB over the budget");
    assert!(sent < 64 << 20, "64 MiB of one header block were read without the connection closing");
    drop(portcullis);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The call's HTTP/2 header list was outside every budget: 256 streams a connection, each with
/// a ~240 KB header block and no body, took one peer to 331 MiB. Now the list is at most 16 KiB
/// and its bytes are charged to the peer's budget until the Check is decoded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_call_headers_are_bounded_and_charged() {
    let dir = scratch("abuse-headers");
    // A peer budget of 1 MiB, so that header bytes alone reach it here.
    let portcullis = Portcullis::launch(
        &dir,
        Launch { listen_extra: ", limits: { max_buffered_bytes_per_peer: 1MiB }", ..Launch::default() },
    );
    let pid = portcullis.proc.child.id();
    let pad = "a".repeat(4 * 1024);
    let (mut accepted, mut refused, mut too_large, mut reset) = (0, 0, 0, 0);
    let mut held = Vec::new();
    let mut drivers = Vec::new();
    for _ in 0..4 {
        let (client, driver) = h2_from("127.0.0.2", portcullis.grpc).await;
        drivers.push(driver);
        let mut pending = Vec::new();
        for _ in 0..256 {
            let Ok(mut client) = client.clone().ready().await else { break };
            let request = http::Request::post("http://portcullis/envoy.service.auth.v3.Authorization/Check")
                .header("content-type", "application/grpc")
                .header("x-pad", pad.as_str())
                .body(())
                .expect("request");
            let Ok((response, body)) = client.send_request(request, false) else { break };
            pending.push(response);
            held.push(body);
        }
        for response in pending {
            match tokio::time::timeout(Duration::from_millis(20), response).await {
                Ok(Ok(resp)) if resp.headers().get("grpc-status").is_some_and(|s| s == "8") => refused += 1,
                Ok(Ok(_)) => accepted += 1,
                Ok(Err(_)) => reset += 1,
                // Waiting for a body that never comes: the headers are held, and charged.
                Err(_) => accepted += 1,
            }
        }
    }
    // What the peer holds is within its budget, whatever its streams do.
    let metrics = portcullis.get("/metrics").map(|r| r.body).unwrap_or_default();
    let buffered = counter(&metrics, "portcullis_grpc_buffered_bytes ");
    // A header list over 16 KiB ends its stream or its connection, before any handler.
    {
        let (client, driver) = h2_from("127.0.0.5", portcullis.grpc).await;
        drivers.push(driver);
        let request = http::Request::post("http://portcullis/envoy.service.auth.v3.Authorization/Check")
            .header("content-type", "application/grpc")
            .header("x-pad", "a".repeat(64 * 1024).as_str())
            .body(())
            .expect("request");
        if let Ok(mut client) = client.ready().await
            && let Ok((response, _body)) = client.send_request(request, false)
        {
            match tokio::time::timeout(Duration::from_secs(5), response).await {
                Ok(Ok(resp)) if resp.status() == 431 => too_large += 1,
                Ok(Err(_)) => too_large += 1,
                other => panic!("a 64 KiB header list was taken: {other:?}"),
            }
        } else {
            too_large += 1;
        }
    }
    let ok = legit_checks(portcullis.grpc).await;
    let peak = rss_kib(pid);
    println!(
        "large headers: {accepted} answered or waiting, {refused} refused over the budget, {too_large} over the list size, {reset} reset, {buffered} bytes buffered, legit {ok}/20, RSS {peak} KiB"
    );
    assert!(buffered <= (1 << 20) as f64, "{buffered} bytes buffered for a peer with a 1 MiB budget");
    assert!(refused >= 1 && too_large >= 1, "refused {refused}, too large {too_large}");
    assert_eq!(ok, 20);
    assert!(peak < RSS_BUDGET_KIB, "RSS {peak} KiB over the budget");
    for driver in drivers {
        driver.abort();
    }
    drop(held);
    drop(portcullis);
    let _ = std::fs::remove_dir_all(&dir);
}
