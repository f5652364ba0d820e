//! A real Envoy (deploy/envoy/envoy.yaml) in front of Portcullis, and an upstream that echoes
//! the headers it received.

use super::{Portcullis, Proc, free_port, raw_http};
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// An HTTP/1.1 upstream that answers every request with the headers it received, as JSON, and
/// remembers which test cases reached it.
pub struct Upstream {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
}

fn serve_connection(stream: std::net::TcpStream, seen: Arc<Mutex<Vec<String>>>) {
    let mut writer = match stream.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    let mut reader = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut headers = serde_json::Map::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), Value::String(v.trim().to_string()));
            }
        }
        if let Some(Value::String(id)) = headers.get("x-test-case") {
            seen.lock().expect("lock").push(id.clone());
        }
        let path = request_line.split(' ').nth(1).unwrap_or_default().to_string();
        let body = serde_json::json!({ "path": path, "headers": headers }).to_string();
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

impl Upstream {
    pub fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind upstream");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen_by_thread = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let seen = seen_by_thread.clone();
                std::thread::spawn(move || serve_connection(stream, seen));
            }
        });
        Upstream { addr, seen }
    }

    pub fn saw(&self, id: &str) -> bool {
        self.seen.lock().expect("lock").iter().any(|s| s == id)
    }
}

pub struct Envoy {
    pub proc: Proc,
    pub listener: SocketAddr,
    /// Envoy's admin listener (stats, clusters).
    pub admin: SocketAddr,
}

pub fn start_envoy(
    dir: &std::path::Path,
    name: &str,
    grpc_port: u16,
    upstream: SocketAddr,
    raw_headers: bool,
) -> Envoy {
    let replacements = vec![
        ("port_value: 9191", format!("port_value: {grpc_port}")),
        ("encode_raw_headers: false", format!("encode_raw_headers: {raw_headers}")),
    ];
    start_envoy_from(dir, name, "envoy.yaml", upstream, replacements)
}

/// Starts `deploy/envoy/<file>` on free loopback ports with `upstream` as the application and
/// `replacements` applied (each must match, so a drifting example fails loudly).
pub fn start_envoy_from(
    dir: &std::path::Path,
    name: &str,
    file: &str,
    upstream: SocketAddr,
    replacements: Vec<(&str, String)>,
) -> Envoy {
    start_envoy_as(dir, name, file, upstream, replacements, None)
}

/// [`start_envoy_from`], run as another user when `run_as` says so.
pub fn start_envoy_as(
    dir: &std::path::Path,
    name: &str,
    file: &str,
    upstream: SocketAddr,
    replacements: Vec<(&str, String)>,
    run_as: Option<&super::RunAs>,
) -> Envoy {
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/envoy").join(file);
    let mut config = std::fs::read_to_string(&source).expect("envoy config");
    let listen_port = free_port();
    let admin_port = free_port();
    let common = [
        ("port_value: 9901", format!("port_value: {admin_port}")),
        ("port_value: 10000", format!("port_value: {listen_port}")),
        ("port_value: 8080", format!("port_value: {}", upstream.port())),
    ];
    for (from, to) in common.into_iter().chain(replacements) {
        assert!(config.contains(from), "deploy/envoy/{file} no longer contains {from:?}");
        config = config.replace(from, &to);
    }
    // Tests listen on loopback whatever a config binds.
    config = config.replace("address: 0.0.0.0", "address: 127.0.0.1");
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, config).expect("write envoy config");
    let mut cmd = Command::new(super::envoy_binary());
    cmd.arg("-c").arg(&path).args(["--concurrency", "1", "--use-dynamic-base-id", "-l", "info"]);
    // Where `deploy/envoy/module.yaml` finds libportcullis_envoy.so (unused by other configs).
    cmd.env("ENVOY_DYNAMIC_MODULES_SEARCH_PATH", module_dir());
    let mut cmd = match run_as {
        Some(user) => user.wrap(&cmd),
        None => cmd,
    };
    let proc = Proc::spawn(&mut cmd, dir, name);
    Envoy {
        proc,
        listener: SocketAddr::from(([127, 0, 0, 1], listen_port)),
        admin: SocketAddr::from(([127, 0, 0, 1], admin_port)),
    }
}

/// The folder holding the dynamic module (`cargo build -p portcullis-envoy`, which
/// scripts/test.sh runs before the tests); `PORTCULLIS_MODULE_DIR` overrides it.
pub fn module_dir() -> std::path::PathBuf {
    let dir = std::env::var_os("PORTCULLIS_MODULE_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/debug"));
    assert!(
        dir.join("libportcullis_envoy.so").exists(),
        "no libportcullis_envoy.so in {}: run `cargo build -p portcullis-envoy` (scripts/test.sh does)",
        dir.display()
    );
    dir
}

/// Envoy running `deploy/envoy/module.yaml`: Portcullis inside Envoy with the policy file
/// `policy`, the sidecar's state stream when given, and `more` replacements in the shipped
/// config (not waited for: see [`wait_ready`]).
pub fn module_envoy(
    dir: &std::path::Path,
    name: &str,
    policy: &std::path::Path,
    state_socket: Option<&std::path::Path>,
    upstream: SocketAddr,
    more: Vec<(&str, String)>,
) -> Envoy {
    let mut config = format!("policy_file: {}", policy.display());
    if let Some(socket) = state_socket {
        let indent = " ".repeat(26);
        config.push_str(&format!("\n{indent}state_socket: {}\n{indent}stale_after: 3s", socket.display()));
    }
    let mut replacements = vec![("policy_file: /etc/portcullis/policy.yaml", config)];
    replacements.extend(more);
    start_envoy_from(dir, name, "module.yaml", upstream, replacements)
}

/// Starts Envoy in front of `portcullis` and waits until a public request passes.
pub fn envoy_in_front(dir: &std::path::Path, portcullis: &Portcullis, upstream: &Upstream) -> Envoy {
    let envoy = start_envoy(dir, "envoy", portcullis.grpc.port(), upstream.addr, false);
    wait_ready(&envoy);
    envoy
}

/// Waits (up to 20 s) until the authz cluster is healthy and a public request passes end to end.
pub fn wait_ready(envoy: &Envoy) {
    let request = "GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n";
    let ready = super::within(Duration::from_secs(20), || {
        super::is(raw_http(envoy.listener, request).map(|r| r.status), Some(200))
    });
    assert!(ready.is_ok(), "envoy never passed a public request:\n{}", envoy.proc.output());
}

/// GET `path` with `headers` through Envoy: the status and the JSON body (the upstream's echo on
/// allow, Portcullis' deny body otherwise).
pub fn get(envoy: &Envoy, path: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut request = format!("GET {path} HTTP/1.1\r\nhost: api.example.com\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("connection: close\r\n\r\n");
    let resp = raw_http(envoy.listener, &request).expect("response");
    (resp.status, serde_json::from_str(&resp.body).unwrap_or(Value::Null))
}
