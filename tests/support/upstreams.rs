//! The real-upstream harness (issues 19 and 31): Flask (Werkzeug), Express 5 (default and
//! `extended` query parser), Go net/http, Jetty 9.4, PHP with Symfony HttpFoundation and Rails
//! routing with Rack, plus nginx and HAProxy as name-based reverse proxies in front of the Go
//! app, each behind the shipped Envoy config (tests/upstreams/). Each app reports which of its
//! handlers ran, with the method, path and host its framework resolved, the identity headers,
//! cookie, `debug` query parameter and `x-debug` header it read.
//!
//! The oracle: when a handler ran, the request *as that framework understood it* (its method,
//! path, host, credential and what it read that a deny guard names) is checked against
//! Portcullis directly. It must be allowed by the handler's own route, and the identity headers
//! the handler saw must be those Portcullis sets for it. So no handler runs for a request
//! Portcullis' route for that handler's path and method would deny, and no handler sees an
//! identity other than the verified one. A request a framework refuses by itself counts as
//! covered. `tests/it/upstreams.rs` sends the tricks and the attack corpus through it,
//! `tests/it/differential.rs` generated requests.

use crate::support::corpus::{self, ISSUER};
use crate::support::envoy::{Envoy, module_envoy, start_envoy_from, wait_ready};
use crate::support::{Launch, Portcullis, Proc, free_port, raw_http, scratch};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use portcullis::dev::request::{HeaderEncoding, check_request};
use portcullis::server::proto::envoy::service::auth::v3::CheckResponse;
use portcullis::server::proto::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use portcullis::server::proto::envoy::service::auth::v3::check_response::HttpResponse as Answer;
use prost_types::value::Kind;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

pub type Client = AuthorizationClient<tonic::transport::Channel>;

pub const IDENTITY_HEADERS: [&str; 4] = ["x-user-id", "x-user-issuer", "x-user-roles", "x-tenant-id"];

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn python() -> PathBuf {
    std::env::var_os("PORTCULLIS_PYTHON").map(PathBuf::from).unwrap_or_else(|| root().join(".venv/bin/python"))
}

pub fn run(cmd: &mut Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e} (scripts/test.sh installs it)"));
    assert!(out.status.success(), "{what} failed:\n{}", String::from_utf8_lossy(&out.stderr));
}

/// One upstream: a framework app, or a proxy in front of the Go app.
pub struct Upstream {
    pub name: &'static str,
    pub port: u16,
    _procs: Vec<Proc>,
}

/// Waits until something answers HTTP on `port` (any status).
pub fn wait_listening(port: u16, proc: &Proc, what: &str) {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let request = "GET /public/ready HTTP/1.1\r\nhost: api.example.com\r\nconnection: close\r\n\r\n";
    let answered = crate::support::within(Duration::from_secs(60), || raw_http(addr, request).ok_or(()));
    assert!(answered.is_ok(), "{what} did not start:\n{}", proc.output());
}

pub fn app(dir: &Path, name: &'static str, cmd: &mut Command) -> Upstream {
    app_on(dir, name, free_port(), cmd)
}

/// An app on `port` (for servers that take it as an argument, also set as `PORT`).
pub fn app_on(dir: &Path, name: &'static str, port: u16, cmd: &mut Command) -> Upstream {
    cmd.env("PORT", port.to_string()).current_dir(root());
    let proc = Proc::spawn(cmd, dir, name);
    wait_listening(port, &proc, name);
    Upstream { name, port, _procs: vec![proc] }
}

pub fn go_app(dir: &Path) -> Upstream {
    let binary = dir.join("goapp");
    run(
        Command::new("go").args(["build", "-o"]).arg(&binary).arg(root().join("tests/upstreams/go/main.go")),
        "go build",
    );
    app(dir, "go", &mut Command::new(binary))
}

pub fn jetty_app(dir: &Path) -> Upstream {
    let out = Command::new(root().join("tests/upstreams/jetty/classpath.sh")).output().expect("jetty classpath");
    assert!(out.status.success(), "Jetty jars missing: {}", String::from_utf8_lossy(&out.stderr));
    let classpath = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let classes = dir.join("jetty-classes");
    run(
        Command::new("javac")
            .args(["-cp", &classpath, "-d"])
            .arg(&classes)
            .arg(root().join("tests/upstreams/jetty/JettyApp.java")),
        "javac",
    );
    let full = format!("{}:{classpath}", classes.display());
    app(dir, "jetty", Command::new("java").args(["-cp", &full, "JettyApp"]))
}

/// nginx or HAProxy from its template, in front of `target` (the Go app).
pub fn proxy(dir: &Path, name: &'static str, target: &Upstream) -> Upstream {
    let port = free_port();
    let work = dir.join(name);
    std::fs::create_dir_all(&work).expect("proxy dir");
    let template = if name == "nginx" { "nginx.conf.in" } else { "haproxy.cfg.in" };
    let text = std::fs::read_to_string(root().join("tests/upstreams").join(template))
        .expect("template")
        .replace("@LISTEN_PORT@", &port.to_string())
        .replace("@APP_PORT@", &target.port.to_string())
        .replace("@DIR@", &work.display().to_string());
    let config = work.join(template.trim_end_matches(".in"));
    std::fs::write(&config, text).expect("proxy config");
    let mut cmd = if name == "nginx" {
        let mut c = Command::new("nginx");
        c.arg("-p").arg(&work).arg("-e").arg(work.join("error.log")).arg("-c").arg(&config);
        c
    } else {
        let mut c = Command::new("haproxy");
        c.arg("-db").arg("-f").arg(&config);
        c
    };
    let proc = Proc::spawn(&mut cmd, dir, name);
    wait_listening(port, &proc, name);
    Upstream { name, port, _procs: vec![proc] }
}

pub fn envoy_for(dir: &Path, portcullis: &Portcullis, upstream: &Upstream, allow_underscores: bool) -> Envoy {
    let mut replacements = vec![("port_value: 9191", format!("port_value: {}", portcullis.grpc.port()))];
    if allow_underscores {
        // Istio's default: Portcullis itself must refuse the underscore twins.
        replacements
            .push(("headers_with_underscores_action: REJECT_REQUEST", "headers_with_underscores_action: ALLOW".into()));
    }
    let name = format!("envoy-{}{}", upstream.name, if allow_underscores { "-underscores" } else { "" });
    let addr = SocketAddr::from(([127, 0, 0, 1], upstream.port));
    start_envoy_from(dir, &name, "envoy.yaml", addr, replacements)
}

/// A request as sent to Envoy: over HTTP/1.1 as raw text (duplicate headers and odd hosts
/// exactly as written), or over HTTP/2 (where Envoy forwards a lowercase `:method`).
#[derive(Clone)]
pub struct Trick {
    pub name: String,
    pub method: String,
    pub hosts: Vec<String>,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub http2: bool,
}

pub fn trick(name: &str, method: &str, path: &str, headers: &[(&str, &str)]) -> Trick {
    Trick {
        name: name.into(),
        method: method.into(),
        hosts: vec!["api.example.com".into()],
        path: path.into(),
        headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        http2: false,
    }
}

impl Trick {
    pub fn on(mut self, hosts: &[&str]) -> Self {
        self.hosts = hosts.iter().map(|h| h.to_string()).collect();
        self
    }

    pub fn h2(mut self) -> Self {
        self.http2 = true;
        self
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn raw(&self) -> String {
        let mut text = format!("{} {} HTTP/1.1\r\n", self.method, self.path);
        for host in &self.hosts {
            text.push_str(&format!("host: {host}\r\n"));
        }
        for (k, v) in &self.headers {
            text.push_str(&format!("{k}: {v}\r\n"));
        }
        text + "connection: close\r\n\r\n"
    }

    /// The attack corpus' raw requests, with their method, path and headers parsed back.
    pub fn from_raw(name: &str, raw: &str) -> Option<Trick> {
        let (head, _) = raw.split_once("\r\n\r\n")?;
        let mut lines = head.split("\r\n");
        let mut request_line = lines.next()?.split(' ');
        let (method, path) = (request_line.next()?.to_string(), request_line.next()?.to_string());
        let mut t =
            Trick { name: format!("corpus: {name}"), method, hosts: vec![], path, headers: vec![], http2: false };
        for line in lines {
            let (k, v) = line.split_once(':')?;
            let (k, v) = (k.trim().to_string(), v.trim().to_string());
            match k.as_str() {
                "host" => t.hosts.push(v),
                "connection" => {}
                _ => t.headers.push((k, v)),
            }
        }
        Some(t)
    }
}

/// Sends `trick` through `envoy`: the status and the body as JSON (`Null` when not JSON).
pub fn send(rt: &tokio::runtime::Runtime, envoy: &Envoy, trick: &Trick) -> Option<(u16, Value)> {
    let (status, body) = if trick.http2 {
        rt.block_on(h2_request(envoy.listener, trick))?
    } else {
        let resp = raw_http(envoy.listener, &trick.raw())?;
        (resp.status, resp.body)
    };
    Some((status, serde_json::from_str(&body).unwrap_or(Value::Null)))
}

pub async fn h2_request(addr: SocketAddr, trick: &Trick) -> Option<(u16, String)> {
    let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
    let (client, connection) = h2::client::handshake(tcp).await.ok()?;
    tokio::spawn(connection);
    let mut client = client.ready().await.ok()?;
    let method = http::Method::from_bytes(trick.method.as_bytes()).ok()?;
    let uri = http::Uri::builder()
        .scheme("http")
        .authority(trick.hosts.first()?.as_str())
        .path_and_query(trick.path.as_str())
        .build()
        .ok()?;
    let mut request = http::Request::builder().method(method).uri(uri);
    for (k, v) in &trick.headers {
        request = request.header(k.as_str(), v.as_str());
    }
    let (response, _) = client.send_request(request.body(()).ok()?, true).ok()?;
    let response = tokio::time::timeout(Duration::from_secs(10), response).await.ok()?.ok()?;
    let status = response.status().as_u16();
    let mut body = response.into_body();
    let mut bytes = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.ok()?;
        let _ = body.flow_control().release_capacity(chunk.len());
        bytes.extend_from_slice(&chunk);
    }
    Some((status, String::from_utf8_lossy(&bytes).into_owned()))
}

/// A path as a framework decoded it (or kept it), encoded for a request line (`;` stays raw, so a
/// framework that kept a path parameter is judged with it; an escape a framework kept stays).
pub fn encode_path(path: &str) -> String {
    let mut out = String::new();
    let bytes = path.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        // Express, PHP and Rails report the path undecoded: an escape stays one.
        let escape = b == b'%' && bytes.get(i + 1..i + 3).is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit));
        if escape || b.is_ascii_alphanumeric() || b"-._~!$&'()*+,=:@/;".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The roles a token's payload carries (read without verification: only to compare).
pub fn token_roles(token: &str) -> Vec<String> {
    let payload = token.split('.').nth(1).and_then(|p| URL_SAFE_NO_PAD.decode(p).ok());
    let claims: Value = payload.and_then(|p| serde_json::from_slice(&p).ok()).unwrap_or(Value::Null);
    match &claims["roles"] {
        Value::Array(roles) => roles.iter().filter_map(|v| v.as_str().map(str::to_string)).collect(),
        Value::String(one) => vec![one.clone()],
        _ => Vec::new(),
    }
}

pub fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(v) =
                bytes.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Portcullis' route(s) for an app handler (the apps and the policy share the route shapes).
pub fn handler_routes(handler: &str, method: &str) -> Vec<&'static str> {
    let own = match handler {
        "admin-critical" => "admin-critical",
        "admin" => "admin",
        "tenant-admin" => "tenant-admin",
        "tenant" => "tenants",
        "items" if method == "DELETE" => "items-delete",
        "items" => "items",
        "reports" => "reports",
        "me" => "me",
        "public" => "public",
        "orders-refund" => "orders-refund",
        "orders" => "orders",
        _ => "everything-else",
    };
    vec![own, "admin-vhost"]
}

/// Checks what a handler saw against Portcullis' own answer for the request as the framework
/// understood it. Returns the violations.
pub fn oracle(rt: &tokio::runtime::Runtime, grpc: &Client, trick: &Trick, seen: &Value) -> Vec<String> {
    let method = seen["method"].as_str().unwrap_or_default().to_ascii_uppercase();
    let path = encode_path(seen["path"].as_str().unwrap_or_default());
    let host = match seen["vhost"].as_str() {
        Some("admin") => "admin.example.com".to_string(),
        _ => seen["host"].as_str().unwrap_or_default().to_string(),
    };
    let mut headers: Vec<(String, String)> = Vec::new();
    let bearer = trick.header("authorization").map(str::to_string);
    if let Some(bearer) = &bearer {
        headers.push(("authorization".into(), bearer.clone()));
    }
    let cookie = seen["cookie_session_jwt"].as_str().filter(|c| !c.is_empty()).map(str::to_string);
    if let Some(cookie) = &cookie {
        headers.push(("cookie".into(), format!("session_jwt={cookie}")));
        headers.push(("origin".into(), "https://app.example.com".into()));
    }
    if let Some(tenant) = seen["headers"]["x-tenant-id"].as_str() {
        headers.push(("x-tenant-id".into(), tenant.to_string()));
    }
    // What the handler read that a deny guard names: a `debug` query parameter, an `x-debug`
    // header, in whatever spelling the framework took them from.
    if !seen["header_debug"].is_null() {
        headers.push(("x-debug".into(), "1".into()));
    }
    let query = if seen["query_debug"].is_null() { "" } else { "?debug=1" };
    let pairs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let check = |path: &str| {
        let target = format!("{path}{query}");
        let mut request = check_request(&method, &target, &pairs, HeaderEncoding::Raw);
        if let Some(http) = request.attributes.as_mut().and_then(|a| a.request.as_mut()).and_then(|r| r.http.as_mut()) {
            http.host = host.clone();
        }
        let mut client = grpc.clone();
        rt.block_on(async move { client.check(request).await.expect("check").into_inner() })
    };
    // Judge the handler by Portcullis' route for *that handler*: a case-insensitive or
    // slash-tolerant framework ran it for a path whose folded reading is that route's path.
    let expected = handler_routes(seen["handler"].as_str().unwrap_or_default(), &method);
    let trimmed = path.strip_suffix('/').filter(|p| !p.is_empty()).unwrap_or(&path).to_string();
    let mut readings = vec![path.clone(), path.to_ascii_lowercase(), trimmed.clone(), trimmed.to_ascii_lowercase()];
    // The handler's own reading of its parameters: the order number it refunds (as the
    // framework's integer converter parsed it), the path without the format Rails took off.
    if let Some(order) = seen["order"].as_i64() {
        readings.push(format!("/orders/{order}/refund"));
    }
    if let Some(format) = seen["format"].as_str()
        && let Some(bare) = trimmed.strip_suffix(&format!(".{format}"))
    {
        readings.push(bare.to_string());
    }
    readings.dedup();
    let answers: Vec<_> = readings.iter().map(|p| (p.clone(), check(p))).collect();
    let rule = |a: &CheckResponse| {
        a.dynamic_metadata.as_ref().and_then(|m| m.fields.get("rule")).and_then(|v| match &v.kind {
            Some(Kind::StringValue(s)) => Some(s.clone()),
            _ => None,
        })
    };
    let chosen = answers.iter().position(|(_, a)| rule(a).is_some_and(|r| expected.contains(&r.as_str()))).unwrap_or(0);
    let Some((path, answer)) = answers.into_iter().nth(chosen) else { return vec!["no answer".into()] };
    let handler = seen["handler"].as_str().unwrap_or("?");
    let as_seen = format!("{method} {host}{path}{query}");
    let mut violations = Vec::new();
    let judged_by = rule(&answer);
    match answer.http_response {
        // The fallback handler's own route is the catch-all: any route that judged it is one a
        // framework did not route (a method it has no handler for, say), never a weaker one.
        Some(Answer::OkResponse(_))
            if !expected.contains(&"everything-else")
                && !judged_by.as_deref().is_some_and(|r| expected.contains(&r)) =>
        {
            violations.push(format!(
                "handler {handler} ran for {as_seen}, which Portcullis judged by route {judged_by:?}, not the handler's own ({expected:?})"
            ));
        }
        Some(Answer::OkResponse(ok)) => {
            let set = |name: &str| {
                ok.headers.iter().filter_map(|h| h.header.as_ref()).find(|h| h.key == name).map(|h| h.value.clone())
            };
            for name in IDENTITY_HEADERS {
                let saw = seen["headers"][name].as_str().map(str::to_string);
                if saw != set(name) {
                    violations.push(format!(
                        "handler {handler} ({as_seen}) saw {name} {saw:?}, Portcullis sets {:?}",
                        set(name)
                    ));
                }
            }
            if let Some(tenant) = seen["tenant"].as_str().filter(|_| handler.starts_with("tenant"))
                && seen["headers"]["x-tenant-id"].as_str() != Some(tenant)
            {
                violations.push(format!(
                    "handler {handler} serves tenant {tenant:?}, Portcullis proved {:?}",
                    seen["headers"]["x-tenant-id"]
                ));
            }
            if let (Some(roles), Some(token)) = (
                seen["headers"]["x-user-roles"].as_str(),
                cookie.as_deref().or(bearer.as_deref().and_then(|b| b.get(7..))),
            ) {
                let split: Vec<String> = roles.split(',').map(percent_decode).collect();
                if split != token_roles(token) {
                    violations.push(format!("handler {handler}: x-user-roles {roles:?} splits into {split:?}"));
                }
            }
        }
        _ => {
            let reason = answer.status.map(|s| s.message).unwrap_or_default();
            violations.push(format!("handler {handler} ran for {as_seen}, which Portcullis denies ({reason})"));
        }
    }
    violations
}

pub fn tokens(now: i64) -> (String, String, String, String, String, String) {
    let sign = |c: &Value| corpus::sign(jsonwebtoken::Algorithm::RS256, Some("rsa-1"), c);
    let mut viewer = corpus::claims(ISSUER, "viewer", now);
    viewer["roles"] = json!(["viewer"]);
    viewer["tenants"] = json!({"acme": ["viewer"], "globex": false, "initech": null});
    viewer["email_verified"] = json!(false);
    let mut admin = corpus::claims(ISSUER, "root", now);
    admin["roles"] = json!(["admin"]);
    admin["tenants"] = json!({"acme": ["admin"]});
    admin["email_verified"] = json!(true);
    let mut commas = corpus::claims(ISSUER, "commas", now);
    commas["roles"] = json!(["viewer,admin", "a;b"]);
    let mut forged = admin.clone();
    forged["sub"] = json!("root-forged");
    let forged = corpus::with_raw_header(&json!({"alg": "RS256", "kid": "rsa-1"}), &forged, Some("AAAA"));
    let payload = corpus::claims(ISSUER, "dup", now).to_string();
    let dup_sub = corpus::sign_raw(r#"{"alg":"RS256","kid":"rsa-1"}"#, &payload.replacen('{', r#"{"sub":"root","#, 1));
    (sign(&viewer), sign(&admin), sign(&commas), forged, dup_sub, sign(&corpus::claims(ISSUER, "plain", now)))
}

/// Portcullis with the upstreams policy, every framework and proxy of `tests/upstreams/` and one
/// shipped-config Envoy in front of each (plus one allowing underscores, as Istio does, in front
/// of Flask). Everything is stopped when the fleet is dropped.
pub struct Fleet {
    pub rt: tokio::runtime::Runtime,
    pub grpc: Client,
    /// (upstream name, its Envoy), every framework and proxy.
    pub envoys: Vec<(&'static str, Envoy)>,
    /// Flask behind an Envoy that forwards underscores in header names.
    pub lenient: Envoy,
    /// (upstream name, an Envoy deciding with the dynamic module), every framework and proxy.
    pub modules: Vec<(&'static str, Envoy)>,
    _upstreams: Vec<Upstream>,
    _portcullis: Portcullis,
    dir: PathBuf,
}

impl Fleet {
    pub fn start(name: &str) -> Fleet {
        let dir = scratch(name);
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        let socket = dir.join("state.sock");
        let listen_extra = format!(", state_stream: \"unix:{}\"", socket.display());
        let launch = Launch { fixture: "upstreams-policy.yaml", listen_extra: &listen_extra, ..Launch::default() };
        let portcullis = Portcullis::launch(&dir, launch);
        let grpc = rt.block_on(AuthorizationClient::connect(format!("http://{}", portcullis.grpc))).expect("grpc");
        let go = go_app(&dir);
        let php = root().join("tests/upstreams/php/index.php");
        let php_port = free_port();
        let mut upstreams = vec![
            app(&dir, "flask", Command::new(python()).arg("tests/upstreams/flask_app.py")),
            app(&dir, "express", Command::new("node").arg("tests/upstreams/express/app.js")),
            app(
                &dir,
                "express-extended",
                Command::new("node").arg("tests/upstreams/express/app.js").env("QUERY_PARSER", "extended"),
            ),
            jetty_app(&dir),
            app_on(&dir, "php", php_port, Command::new("php").arg("-S").arg(format!("127.0.0.1:{php_port}")).arg(&php)),
            app(&dir, "rails", Command::new("ruby").arg("tests/upstreams/rails/app.rb")),
        ];
        let nginx = proxy(&dir, "nginx", &go);
        let haproxy = proxy(&dir, "haproxy", &go);
        upstreams.extend([go, nginx, haproxy]);
        let envoys: Vec<(&str, Envoy)> =
            upstreams.iter().map(|u| (u.name, envoy_for(&dir, &portcullis, u, false))).collect();
        // Istio allows underscores in header names: Portcullis itself must refuse them there.
        let lenient = envoy_for(&dir, &portcullis, &upstreams[0], true);
        let modules: Vec<(&str, Envoy)> = upstreams
            .iter()
            .map(|u| {
                let addr = SocketAddr::from(([127, 0, 0, 1], u.port));
                let name = format!("module-{}", u.name);
                (u.name, module_envoy(&dir, &name, &portcullis.config, Some(&socket), addr, Vec::new()))
            })
            .collect();
        for (_, envoy) in envoys.iter().chain(&modules) {
            wait_ready(envoy);
        }
        wait_ready(&lenient);
        Fleet { rt, grpc, envoys, lenient, modules, _upstreams: upstreams, _portcullis: portcullis, dir }
    }

    /// Sends `t` through the Envoy in front of upstream `name`; when a handler ran, the oracle's
    /// violations (prefixed with the upstream and the trick). `ran` counts handlers that ran.
    pub fn judge(&self, name: &str, envoy: &Envoy, t: &Trick, ran: &mut usize) -> Vec<String> {
        let Some((status, body)) = send(&self.rt, envoy, t) else { return Vec::new() };
        let mut violations = Vec::new();
        if t.method == "HEAD" && (200..300).contains(&status) {
            // No body to report from: every framework ran its GET handler for this path.
            let seen = json!({"handler": "(GET handler, for HEAD)", "method": "GET", "path": t.path.split('?').next(),
                "host": t.hosts.first(), "headers": {}});
            let denied = oracle(&self.rt, &self.grpc, t, &seen).into_iter().filter(|v| v.contains("denies"));
            violations.extend(denied.map(|v| format!("{name}: {}: {v}", t.name)));
        }
        if status == 200 && body["handler"].is_string() {
            *ran += 1;
            for v in oracle(&self.rt, &self.grpc, t, &body) {
                violations.push(format!("{name}: {}: {v}", t.name));
            }
        }
        violations
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
