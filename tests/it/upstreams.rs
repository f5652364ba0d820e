//! Real upstream frameworks behind the shipped Envoy config and Portcullis (issue 19): Flask
//! (Werkzeug), Express 5, Go net/http and Jetty 9.4, plus nginx and HAProxy as name-based
//! reverse proxies in front of the Go app. Every trick request and the whole attack corpus go
//! to every framework; each app reports which of its handlers ran, with the method, path and host
//! its framework resolved and the identity headers and cookie it read (tests/upstreams/).
//!
//! The oracle: when a handler ran, the request *as that framework understood it* (its method,
//! path, host and credential) is checked against Portcullis directly. It must be allowed, and
//! the identity headers the handler saw must be those Portcullis sets for it. So no handler runs
//! for a request Portcullis' route for that handler's path and method would deny, and no
//! handler sees an identity other than the verified one. A request a framework refuses by
//! itself counts as covered.

use crate::support::attack_corpus::attacks;
use crate::support::corpus::{self, ISSUER};
use crate::support::envoy::{Envoy, start_envoy_from, wait_ready};
use crate::support::now;
use crate::support::{Portcullis, Proc, free_port, raw_http, scratch};
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

type Client = AuthorizationClient<tonic::transport::Channel>;

const IDENTITY_HEADERS: [&str; 4] = ["x-user-id", "x-user-issuer", "x-user-roles", "x-tenant-id"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn python() -> PathBuf {
    std::env::var_os("PORTCULLIS_PYTHON").map(PathBuf::from).unwrap_or_else(|| root().join(".venv/bin/python"))
}

fn run(cmd: &mut Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e} (scripts/test.sh installs it)"));
    assert!(out.status.success(), "{what} failed:\n{}", String::from_utf8_lossy(&out.stderr));
}

/// One upstream: a framework app, or a proxy in front of the Go app.
struct Upstream {
    name: &'static str,
    port: u16,
    _procs: Vec<Proc>,
}

/// Waits until something answers HTTP on `port` (any status).
fn wait_listening(port: u16, proc: &Proc, what: &str) {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let request = "GET /public/ready HTTP/1.1\r\nhost: api.example.com\r\nconnection: close\r\n\r\n";
    let answered = crate::support::within(Duration::from_secs(60), || raw_http(addr, request).ok_or(()));
    assert!(answered.is_ok(), "{what} did not start:\n{}", proc.output());
}

fn app(dir: &Path, name: &'static str, cmd: &mut Command) -> Upstream {
    let port = free_port();
    cmd.env("PORT", port.to_string()).current_dir(root());
    let proc = Proc::spawn(cmd, dir, name);
    wait_listening(port, &proc, name);
    Upstream { name, port, _procs: vec![proc] }
}

fn go_app(dir: &Path) -> Upstream {
    let binary = dir.join("goapp");
    run(
        Command::new("go").args(["build", "-o"]).arg(&binary).arg(root().join("tests/upstreams/go/main.go")),
        "go build",
    );
    app(dir, "go", &mut Command::new(binary))
}

fn jetty_app(dir: &Path) -> Upstream {
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
fn proxy(dir: &Path, name: &'static str, target: &Upstream) -> Upstream {
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

fn envoy_for(dir: &Path, portcullis: &Portcullis, upstream: &Upstream, allow_underscores: bool) -> Envoy {
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
struct Trick {
    name: String,
    method: String,
    hosts: Vec<String>,
    path: String,
    headers: Vec<(String, String)>,
    http2: bool,
}

fn trick(name: &str, method: &str, path: &str, headers: &[(&str, &str)]) -> Trick {
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
    fn on(mut self, hosts: &[&str]) -> Self {
        self.hosts = hosts.iter().map(|h| h.to_string()).collect();
        self
    }

    fn h2(mut self) -> Self {
        self.http2 = true;
        self
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn raw(&self) -> String {
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
    fn from_raw(name: &str, raw: &str) -> Option<Trick> {
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
fn send(rt: &tokio::runtime::Runtime, envoy: &Envoy, trick: &Trick) -> Option<(u16, Value)> {
    let (status, body) = if trick.http2 {
        rt.block_on(h2_request(envoy.listener, trick))?
    } else {
        let resp = raw_http(envoy.listener, &trick.raw())?;
        (resp.status, resp.body)
    };
    Some((status, serde_json::from_str(&body).unwrap_or(Value::Null)))
}

async fn h2_request(addr: SocketAddr, trick: &Trick) -> Option<(u16, String)> {
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

/// A path as a framework decoded it, encoded back for a request line (`;` stays raw, so a
/// framework that kept a path parameter is judged with it).
fn encode_path(path: &str) -> String {
    let mut out = String::new();
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,=:@/;".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The roles a token's payload carries (read without verification: only to compare).
fn token_roles(token: &str) -> Vec<String> {
    let payload = token.split('.').nth(1).and_then(|p| URL_SAFE_NO_PAD.decode(p).ok());
    let claims: Value = payload.and_then(|p| serde_json::from_slice(&p).ok()).unwrap_or(Value::Null);
    match &claims["roles"] {
        Value::Array(roles) => roles.iter().filter_map(|v| v.as_str().map(str::to_string)).collect(),
        Value::String(one) => vec![one.clone()],
        _ => Vec::new(),
    }
}

fn percent_decode(text: &str) -> String {
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
fn handler_routes(handler: &str, method: &str) -> Vec<&'static str> {
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
        _ => "everything-else",
    };
    vec![own, "admin-vhost"]
}

/// Checks what a handler saw against Portcullis' own answer for the request as the framework
/// understood it. Returns the violations.
fn oracle(rt: &tokio::runtime::Runtime, grpc: &Client, trick: &Trick, seen: &Value) -> Vec<String> {
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
    let pairs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let check = |path: &str| {
        let mut request = check_request(&method, path, &pairs, HeaderEncoding::Raw);
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
    let as_seen = format!("{method} {host}{path}");
    let mut violations = Vec::new();
    match answer.http_response {
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

fn tokens(now: i64) -> (String, String, String, String, String, String) {
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

/// Every trick of issue 19's "Why", plus requests that must reach their handler (controls).
fn tricks(now: i64) -> (Vec<Trick>, Vec<(Trick, &'static str)>) {
    let (viewer, admin, commas, forged, dup_sub, plain) = tokens(now);
    let b = |t: &str| format!("Bearer {t}");
    let (viewer_b, admin_b) = (b(&viewer), b(&admin));
    let cookie_twin = format!("session_jwt ={forged}; session_jwt={viewer}");
    let tricks = vec![
        trick("path parameter skips step-up", "GET", "/admin/critical;x/rotate-keys", &[("authorization", &admin_b)]),
        trick(
            "path parameter skips tenant roles",
            "GET",
            "/tenants/acme/admin;x/users",
            &[("authorization", &viewer_b)],
        ),
        trick("anonymous path parameter past a catch-all", "GET", "/admin;x/users", &[]),
        trick("..; dot-segment", "GET", "/public/..;/admin/users", &[]),
        trick(".; dot-segment", "GET", "/public/.;/admin/users", &[]),
        trick("encoded path parameter", "GET", "/admin%3Bx/users", &[]),
        trick("lowercase method over HTTP/2", "delete", "/items", &[("authorization", &viewer_b)]).h2(),
        trick("mixed-case method over HTTP/2", "Delete", "/items", &[("authorization", &viewer_b)]).h2(),
        trick("lowercase method over HTTP/1.1", "delete", "/items", &[("authorization", &viewer_b)]),
        trick("path case", "GET", "/ADMIN/users", &[("authorization", &viewer_b)]),
        trick("path case, anonymous", "GET", "/Admin/users", &[]),
        trick(
            "X-Forwarded-Host switches the tenant",
            "GET",
            "/whoami",
            &[("authorization", &viewer_b), ("x-forwarded-host", "globex.tenants.example.com")],
        )
        .on(&["acme.tenants.example.com"]),
        trick(
            "Forwarded host= switches the tenant",
            "GET",
            "/whoami",
            &[("authorization", &viewer_b), ("forwarded", "host=globex.tenants.example.com")],
        )
        .on(&["acme.tenants.example.com"]),
        trick(
            "X-Forwarded-Host onto the admin vhost",
            "GET",
            "/",
            &[("authorization", &viewer_b), ("x-forwarded-host", "admin.example.com")],
        ),
        trick("_method override", "POST", "/items?_method=DELETE", &[("authorization", &viewer_b)]),
        trick("_METHOD override, encoded", "POST", "/items?%5Fmethod=DELETE", &[("authorization", &viewer_b)]),
        trick("underscore twin on a public route", "GET", "/public/x", &[("x_user_id", "admin")]),
        trick(
            "underscore twin beside the real header",
            "GET",
            "/items",
            &[("authorization", &viewer_b), ("x_user_id", "admin")],
        ),
        trick("padded cookie name", "GET", "/items", &[("cookie", &cookie_twin)]),
        trick("trailing-dot host", "GET", "/", &[("authorization", &viewer_b)]).on(&["admin.example.com."]),
        trick("trailing-dot tenant host", "GET", "/whoami", &[("authorization", &viewer_b)])
            .on(&["globex.tenants.example.com."]),
        trick("non-numeric port", "GET", "/", &[("authorization", &viewer_b)]).on(&["admin.example.com:x"]),
        trick("userinfo", "GET", "/", &[("authorization", &viewer_b)]).on(&["u@admin.example.com"]),
        trick("two Host headers", "GET", "/", &[("authorization", &viewer_b)])
            .on(&["api.example.com", "admin.example.com"]),
        trick("two Host headers, admin first", "GET", "/", &[("authorization", &viewer_b)])
            .on(&["admin.example.com", "api.example.com"]),
        trick("trailing slash on an exact route", "GET", "/me/", &[("authorization", &viewer_b)]),
        trick("comma inside a role", "GET", "/items", &[("authorization", &b(&commas))]),
        trick("tenant map value false", "GET", "/tenants/globex/x", &[("authorization", &viewer_b)]),
        trick("tenant map value null", "GET", "/tenants/initech/x", &[("authorization", &viewer_b)]),
        trick("Basic scheme", "GET", "/items", &[("authorization", "Basic YWRtaW46YWRtaW4=")]),
        trick("duplicate sub", "GET", "/items", &[("authorization", &b(&dup_sub))]),
        trick("HEAD on a GET-only route", "HEAD", "/reports", &[]),
        trick("OPTIONS with a forged token", "OPTIONS", "/items", &[("authorization", &b(&forged))]),
        // From the adversarial review of this change.
        trick(
            "path tenant without a trailing slash",
            "GET",
            "/tenants/globex",
            &[("authorization", &viewer_b), ("x-tenant-id", "acme")],
        ),
        trick(
            "case-folded path tenant",
            "GET",
            "/TENANTS/globex/x",
            &[("authorization", &viewer_b), ("x-tenant-id", "acme")],
        ),
        trick("format suffix", "GET", "/reports.json", &[]),
        trick("format suffix on an exact route", "GET", "/me.json", &[("authorization", &viewer_b)]),
        trick(
            "X-Forwarded-Server onto the admin vhost",
            "GET",
            "/items",
            &[("authorization", &viewer_b), ("x-forwarded-server", "admin.example.com")],
        ),
        trick("encoded ':' and '@'", "GET", "/admin%3Ax/%40users", &[]),
        trick(
            "Basic joined with a forged Bearer",
            "GET",
            "/elsewhere",
            &[("authorization", "Basic eDp5"), ("authorization", &b(&forged))],
        ),
    ];
    let controls = vec![
        (trick("control: items", "GET", "/items", &[("authorization", &viewer_b)]), "items"),
        (trick("control: admin", "GET", "/admin/users", &[("authorization", &admin_b)]), "admin"),
        (trick("control: tenant", "GET", "/tenants/acme/docs", &[("authorization", &viewer_b)]), "tenant"),
        (
            trick("control: tenant admin", "GET", "/tenants/acme/admin/users", &[("authorization", &admin_b)]),
            "tenant-admin",
        ),
        (trick("control: me", "GET", "/me", &[("authorization", &admin_b)]), "me"),
        (trick("control: public", "GET", "/public/x", &[]), "public"),
        (trick("control: anonymous fallback", "GET", "/elsewhere", &[]), "fallback"),
        (trick("control: plain token, HTTP/2", "GET", "/items", &[("authorization", &b(&plain))]).h2(), "items"),
        (
            trick("control: admin vhost", "GET", "/", &[("authorization", &admin_b)]).on(&["admin.example.com"]),
            "fallback",
        ),
    ];
    (tricks, controls)
}

#[test]
fn real_frameworks_behind_envoy_never_run_what_portcullis_would_deny() {
    let dir = scratch("upstreams");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let portcullis = Portcullis::start_fixture(&dir, "upstreams-policy.yaml", None, "", &[]);
    let grpc = rt.block_on(AuthorizationClient::connect(format!("http://{}", portcullis.grpc))).expect("grpc");
    let go = go_app(&dir);
    let mut frameworks = vec![
        app(&dir, "flask", Command::new(python()).arg("tests/upstreams/flask_app.py")),
        app(&dir, "express", Command::new("node").arg("tests/upstreams/express/app.js")),
        jetty_app(&dir),
    ];
    let nginx = proxy(&dir, "nginx", &go);
    let haproxy = proxy(&dir, "haproxy", &go);
    frameworks.push(go);
    frameworks.push(nginx);
    frameworks.push(haproxy);
    let envoys: Vec<(&str, Envoy)> =
        frameworks.iter().map(|u| (u.name, envoy_for(&dir, &portcullis, u, false))).collect();
    // Istio allows underscores in header names: Portcullis itself refuses the twins there.
    let flask = &frameworks[0];
    let lenient = envoy_for(&dir, &portcullis, flask, true);
    for (_, envoy) in &envoys {
        wait_ready(envoy);
    }
    wait_ready(&lenient);

    let now = now();
    let (mut all, controls) = tricks(now);
    all.extend(attacks(now).iter().filter_map(|a| Trick::from_raw(a.name, &a.request)));
    let mut violations = Vec::new();
    let mut ran = 0;
    for (name, envoy) in &envoys {
        for t in &all {
            let Some((status, body)) = send(&rt, envoy, t) else { continue };
            if t.method == "HEAD" && (200..300).contains(&status) {
                // No body to report from: every framework ran its GET handler for this path.
                let seen = json!({"handler": "(GET handler, for HEAD)", "method": "GET", "path": t.path,
                    "host": t.hosts.first(), "headers": {}});
                let denied = oracle(&rt, &grpc, t, &seen).into_iter().filter(|v| v.contains("denies"));
                violations.extend(denied.map(|v| format!("{name}: {}: {v}", t.name)));
            }
            if status == 200 && body["handler"].is_string() {
                ran += 1;
                for v in oracle(&rt, &grpc, t, &body) {
                    violations.push(format!("{name}: {}: {v}", t.name));
                }
            }
        }
        for (t, handler) in &controls {
            match send(&rt, envoy, t) {
                Some((200, body)) if body["handler"] == *handler => {
                    for v in oracle(&rt, &grpc, t, &body) {
                        violations.push(format!("{name}: {}: {v}", t.name));
                    }
                }
                other => violations.push(format!("{name}: {} did not reach {handler}: {other:?}", t.name)),
            }
        }
    }
    for t in all.iter().filter(|t| t.name.contains("underscore")) {
        match send(&rt, &lenient, t) {
            Some((400, body)) if body["reason"] == "invalid_request" => {}
            other => violations.push(format!("envoy allowing underscores: {}: {other:?}", t.name)),
        }
    }
    assert!(ran > 50, "the corpus reached only {ran} handlers: the oracle was barely exercised");
    assert!(violations.is_empty(), "{} violations:\n{}", violations.len(), violations.join("\n"));
    drop(envoys);
    let _ = std::fs::remove_dir_all(&dir);
}
