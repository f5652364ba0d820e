//! Portcullis inside Envoy (crates/portcullis-envoy, deploy/envoy/module.yaml) against the
//! ext_authz path on the same policy, upstream and requests: the same answers, the same
//! headers upstream, fleet state from the sidecar's stream, `on_stale` when the sidecar is gone.

use crate::support::attack_corpus::attacks;
use crate::support::corpus::{self, ISSUER};
use crate::support::envoy::{Envoy, Upstream, envoy_in_front, module_envoy, start_envoy_from, wait_ready};
use crate::support::{HttpResponse, Launch, Portcullis, raw_http, scratch, within};
use serde_json::Value;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs() as i64
}

/// Portcullis with its state stream, the ext_authz Envoy and the module Envoy, one upstream.
struct Pair {
    portcullis: Portcullis,
    ext_authz: Envoy,
    module: Envoy,
    upstream: Upstream,
    dir: std::path::PathBuf,
}

fn pair(name: &str) -> Pair {
    pair_with(name, &[])
}

/// [`pair`] with replacements in the test policy.
fn pair_with(name: &str, more: &[(&str, &str)]) -> Pair {
    let dir = scratch(name);
    let socket = dir.join("state.sock");
    let listen_extra = format!(", state_stream: \"unix:{}\"", socket.display());
    // One route more than the test policy: a deny route (route_denied).
    let public = "  - { name: public, match: { path_prefix: /public }, public: true }";
    let closed = format!("{public}\n  - {{ name: closed, match: {{ path_prefix: /closed }}, deny: true }}");
    let mut replace = vec![(public, closed.as_str())];
    replace.extend_from_slice(more);
    let portcullis =
        Portcullis::launch(&dir, Launch { listen_extra: &listen_extra, replace: &replace, ..Launch::default() });
    let upstream = Upstream::start();
    let ext_authz = envoy_in_front(&dir, &portcullis, &upstream);
    let module = module_envoy(&dir, "envoy-module", &portcullis.config, Some(&socket), upstream.addr, Vec::new());
    wait_ready(&module);
    Pair { portcullis, ext_authz, module, upstream, dir }
}

/// What a client and the upstream see of one answer, without what differs by nature between
/// two requests (request ids, dates, timings, lengths that carry the id).
fn observed(resp: &HttpResponse) -> String {
    let mut body: Value = serde_json::from_str(&resp.body).unwrap_or(Value::String(resp.body.clone()));
    if let Some(map) = body.as_object_mut() {
        map.remove("request_id");
        if let Some(headers) = map.get_mut("headers").and_then(Value::as_object_mut) {
            headers.retain(|k, _| k != "x-request-id" && !k.starts_with("x-envoy-"));
        }
    }
    let mut headers: Vec<String> = resp
        .headers
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "date" | "content-length" | "x-envoy-upstream-service-time"))
        .map(|(k, v)| format!("{k}: {v}"))
        .collect();
    headers.sort();
    format!("{} {body}\n  {}", resp.status, headers.join("\n  "))
}

#[test]
fn the_module_answers_every_corpus_request_as_the_ext_authz_path_does() {
    let p = pair("module-parity");
    let now = now();
    let mut requests: Vec<(String, String)> =
        attacks(now).into_iter().map(|a| (format!("attack {}", a.name), a.request)).collect();
    for case in corpus::cases(now) {
        let mut text = format!("{} {} HTTP/1.1\r\nhost: api.example.com\r\n", case.method, case.path);
        for (k, v) in &case.headers {
            text.push_str(&format!("{k}: {v}\r\n"));
        }
        requests.push((format!("corpus {}", case.name), text + "connection: close\r\n\r\n"));
    }
    let differences = std::cell::RefCell::new(Vec::new());
    let reasons = std::cell::RefCell::new(std::collections::BTreeSet::new());
    let compare = |name: &str, request: &str| {
        let (Some(a), Some(b)) = (raw_http(p.ext_authz.listener, request), raw_http(p.module.listener, request)) else {
            differences.borrow_mut().push(format!("{name}: no answer from one path"));
            return;
        };
        if let Some(reason) =
            serde_json::from_str::<Value>(&a.body).ok().and_then(|v| v["reason"].as_str().map(String::from))
        {
            reasons.borrow_mut().insert(reason);
        }
        let (a, b) = (observed(&a), observed(&b));
        if a != b {
            differences.borrow_mut().push(format!("{name}:\n ext_authz {a}\n module    {b}"));
        }
    };
    for (name, request) in &requests {
        compare(name, request);
    }
    assert!(requests.len() > 80, "corpus unexpectedly small: {}", requests.len());

    // The deny reasons the corpus does not reach, each provoked through both paths.
    let token = |sub: &str, cnf: Option<Value>| {
        let mut claims = corpus::claims(ISSUER, sub, now);
        if let Some(cnf) = cnf {
            claims["cnf"] = cnf;
        }
        corpus::sign(jsonwebtoken::Algorithm::RS256, Some("rsa-1"), &claims)
    };
    let get = |path: &str, token: &str| {
        format!(
            "GET {path} HTTP/1.1\r\nhost: api.example.com\r\nauthorization: Bearer {token}\r\nconnection: close\r\n\r\n"
        )
    };
    let mut extra = vec![
        ("tenant missing", get("/tenants", &token("t", None))),
        ("route denied", get("/closed/x", &token("d", None))),
        (
            "certificate-bound token without a certificate",
            get("/api/x", &token("c", Some(serde_json::json!({"x5t#S256": "AAAA"})))),
        ),
    ];
    // per_user: 5 a minute; each path counts its own, so both answer the sixth alike.
    let limited = token("rl", None);
    extra.extend((0..6).map(|_| ("rate limit", get("/limited/x", &limited))));
    for (name, request) in &extra {
        compare(name, request);
    }
    // The acceptance corpus' own expectations, through the module.
    let failures = crate::envoy::run_corpus(&p.module, &p.upstream, &corpus::cases(now), "module");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Fleet state: written through the admin API, enforced by both once the stream has it.
    let revoked = token("revoked", None);
    let body = format!(r#"{{"sub":"revoked","iss":"{ISSUER}"}}"#);
    assert_eq!(p.portcullis.admin_request("POST", "/v1/revocations", &body).map(|r| r.status), Some(201));
    settle(&p.module, &get("/api/x", &revoked), 401);
    compare("revoked subject", &get("/api/x", &revoked));
    let block = r#"{"cidr":"127.0.0.1/32"}"#;
    assert_eq!(p.portcullis.admin_request("POST", "/v1/blocks", block).map(|r| r.status), Some(201));
    settle(&p.module, &get("/api/x", &limited), 403);
    compare("blocked client", &get("/api/x", &limited));
    let differences = differences.into_inner();
    assert!(differences.is_empty(), "{} answers differ:\n{}", differences.len(), differences.join("\n"));
    // Every deny reason is answered alike, but those the module cannot meet by design: it
    // refuses DPoP, sessions and remote key sets at load (settings::check_supported), leaves
    // overload to Envoy's own overload manager, and state_stale has its own test below.
    let not_inside_envoy =
        ["dpop_proof_invalid", "dpop_nonce_required", "session_idle", "keys_unavailable", "overloaded", "state_stale"];
    let reasons = reasons.into_inner();
    let unmet: Vec<&str> = portcullis::decision::DenyReason::ALL
        .iter()
        .map(|r| r.as_str())
        .filter(|r| !reasons.contains(*r) && !not_inside_envoy.contains(r))
        .collect();
    assert!(unmet.is_empty(), "deny reasons never compared: {unmet:?}");
    let _ = std::fs::remove_dir_all(&p.dir);
}

/// Waits (at most two seconds: a key refetch may wait out the fetcher's one-second cooldown)
/// until the module answers `request` with `status`: fleet state travels the stream first.
fn settle(module: &Envoy, request: &str, status: u16) {
    let reached = within(Duration::from_secs(2), || match raw_http(module.listener, request) {
        Some(r) if r.status == status => Ok(()),
        other => Err(other.map(|r| r.status)),
    });
    assert!(reached.is_ok(), "the module never answered {status}: {reached:?}");
}

/// `GET /api/items` with `token`: status and deny reason (envoy.rs' helper).
fn api(envoy: &Envoy, token: &str) -> (u16, String) {
    crate::envoy::get_with_token(envoy, token)
}

#[test]
fn a_revocation_through_the_admin_api_reaches_the_module_and_a_dead_sidecar_means_on_stale() {
    let mut p = pair("module-state");
    let sign =
        |sub: &str| corpus::sign(jsonwebtoken::Algorithm::RS256, Some("rsa-1"), &corpus::claims(ISSUER, sub, now()));
    let (alice, bob) = (sign("alice"), sign("bob"));
    assert_eq!(api(&p.module, &alice).0, 200);
    assert_eq!(api(&p.module, &bob).0, 200);

    let body = format!(r#"{{"sub":"alice","iss":"{ISSUER}"}}"#);
    let resp = p.portcullis.admin_request("POST", "/v1/revocations", &body).expect("admin");
    assert_eq!(resp.status, 201, "{}", resp.body);
    // The ext_authz path enforces it on the next request; the module once the stream carries
    // it, within the bound a Redis-fed replica has (a second), never after a cache window.
    assert_eq!(api(&p.ext_authz, &alice), (401, "token_revoked".into()));
    let revoked = within(Duration::from_secs(1), || {
        let got = api(&p.module, &alice);
        if got == (401, "token_revoked".to_string()) { Ok(()) } else { Err(got) }
    });
    assert!(revoked.is_ok(), "the module still lets a revoked subject in: {revoked:?}");
    assert_eq!(api(&p.module, &bob).0, 200, "only alice is revoked");

    // The sidecar gone: past stale_after (3 s here) the policy's on_stale (deny) decides; a
    // public route still passes, a revoked token never does.
    p.portcullis.proc.stop();
    let stale = within(Duration::from_secs(8), || {
        let got = api(&p.module, &bob);
        if got == (503, "state_stale".to_string()) { Ok(()) } else { Err(got) }
    });
    assert!(stale.is_ok(), "a module without its sidecar kept deciding from old state: {stale:?}");
    assert_ne!(api(&p.module, &alice).0, 200, "a revoked token is refused, stale or not");
    let public =
        raw_http(p.module.listener, "GET /public/x HTTP/1.1\r\nhost: api.example.com\r\nconnection: close\r\n\r\n")
            .expect("public");
    assert_eq!(public.status, 200, "public routes need no state");
    let _ = std::fs::remove_dir_all(&p.dir);
}

/// An identity provider on loopback serving whatever JWKS the test puts in `body`.
struct Idp {
    addr: std::net::SocketAddr,
    body: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Idp {
    fn start(jwks: &str) -> Idp {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind idp");
        let addr = listener.local_addr().expect("addr");
        let body = std::sync::Arc::new(std::sync::Mutex::new(jwks.to_string()));
        let served = body.clone();
        std::thread::spawn(move || {
            use std::io::{Read, Write};
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut request = [0u8; 4096];
                let _ = stream.read(&mut request);
                let body = served.lock().expect("lock").clone();
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Idp { addr, body }
    }
}

fn key_fixture(name: &str) -> String {
    std::fs::read_to_string(corpus::fixtures().join("keys").join(name)).expect("key fixture")
}

#[test]
fn remote_keys_audit_and_rotation_travel_between_the_module_and_its_sidecar() {
    let idp = Idp::start(&key_fixture("jwks-rsa1.json"));
    let file = format!("jwks: {{ file: {} }}", corpus::fixtures().join("keys/jwks.json").display());
    let url = format!("jwks: {{ url: \"http://{}/jwks\", refresh: 1h, refetch_interval: 1s }}", idp.addr);
    let p = pair_with("module-keys", &[(file.as_str(), url.as_str())]);
    let rsa1 = corpus::sign(jsonwebtoken::Algorithm::RS256, Some("rsa-1"), &corpus::claims(ISSUER, "alice", now()));
    let rsa2 = corpus::sign_rsa_other(Some("rsa-2"), &corpus::claims(ISSUER, "bob", now()));
    // The sidecar fetched the issuer's keys; the module has them from the stream.
    settle(&p.module, &get_items(&rsa1), 200);

    // A rotation: the first token with the new kid is refused (401: the module never waits on
    // its sidecar) and asks for a refetch; the new key set then reaches the module.
    *idp.body.lock().expect("lock") = key_fixture("jwks-rsa2.json");
    assert_eq!(api(&p.module, &rsa2), (401, "token_invalid".to_string()));
    settle(&p.module, &get_items(&rsa2), 200);
    assert_eq!(api(&p.ext_authz, &rsa2).0, 200, "the sidecar has the same keys");

    // The module's decisions are audited by the sidecar.
    // (Envoy at the edge replaces a client's x-request-id: the path marks the request.)
    let marked = "GET /api/module-audit-7 HTTP/1.1\r\nhost: api.example.com\r\nconnection: close\r\n\r\n";
    assert_eq!(raw_http(p.module.listener, marked).map(|r| r.status), Some(401));
    let audited = within(Duration::from_secs(2), || {
        let out = p.portcullis.proc.output();
        if out.lines().any(|l| l.contains("\"path\":\"/api/module-audit-7\"") && l.contains("credential_missing")) {
            Ok(())
        } else {
            Err(())
        }
    });
    assert!(audited.is_ok(), "the module's decision never reached the sidecar's audit");
    let _ = std::fs::remove_dir_all(&p.dir);
}

fn get_items(token: &str) -> String {
    format!(
        "GET /api/items HTTP/1.1\r\nhost: api.example.com\r\nauthorization: Bearer {token}\r\nconnection: close\r\n\r\n"
    )
}

/// An Envoy that is not the edge (`use_remote_address: false`) takes the client address from
/// `x-forwarded-for`. ext_authz sends Portcullis the connection's own peer regardless, and the
/// core trusts forwarded addresses only from `ip.trusted_cidrs`: the module must read the same
/// peer, or a client could name an address to dodge a block (or claim a trusted one).
#[test]
fn behind_another_proxy_the_module_reads_the_connection_peer_as_ext_authz_does() {
    let p = pair("module-xff");
    let not_edge = ("use_remote_address: true", "use_remote_address: false".to_string());
    let grpc = ("port_value: 9191", format!("port_value: {}", p.portcullis.grpc.port()));
    let ext_authz =
        start_envoy_from(&p.dir, "envoy-not-edge", "envoy.yaml", p.upstream.addr, vec![grpc, not_edge.clone()]);
    let socket = p.dir.join("state.sock");
    let module =
        module_envoy(&p.dir, "module-not-edge", &p.portcullis.config, Some(&socket), p.upstream.addr, vec![not_edge]);
    wait_ready(&ext_authz);
    wait_ready(&module);
    let block = r#"{"cidr":"203.0.113.9/32"}"#;
    assert_eq!(p.portcullis.admin_request("POST", "/v1/blocks", block).map(|r| r.status), Some(201));
    let spoofed =
        "GET /public/x HTTP/1.1\r\nhost: api.example.com\r\nx-forwarded-for: 203.0.113.9\r\nconnection: close\r\n\r\n";
    let honest = "GET /public/x HTTP/1.1\r\nhost: api.example.com\r\nconnection: close\r\n\r\n";
    // The stream is ordered: once a revocation written after the block reaches the module, the
    // block has too.
    let body = format!(r#"{{"sub":"xff-marker","iss":"{ISSUER}"}}"#);
    assert_eq!(p.portcullis.admin_request("POST", "/v1/revocations", &body).map(|r| r.status), Some(201));
    let marker =
        corpus::sign(jsonwebtoken::Algorithm::RS256, Some("rsa-1"), &corpus::claims(ISSUER, "xff-marker", now()));
    settle(&module, &get_items(&marker), 401);
    assert_eq!(raw_http(module.listener, honest).map(|r| r.status), Some(200));
    // Both paths answer alike: the named address is not the peer, so neither the block nor the
    // address applies to this client.
    let a = raw_http(ext_authz.listener, spoofed).map(|r| observed(&r));
    let b = raw_http(module.listener, spoofed).map(|r| observed(&r));
    assert_eq!(a, b, "the module read another client address than ext_authz");
    assert!(a.is_some_and(|a| a.starts_with("200 ")), "the connection peer (127.0.0.1) is not blocked");
    let _ = std::fs::remove_dir_all(&p.dir);
}

/// The module watches the policy file it was given: an invalid edit is refused (logged in
/// Envoy's log, the policy in force stays), a valid one is in force at the next requests.
#[test]
fn the_module_reloads_its_policy_file_and_keeps_it_on_a_bad_edit() {
    let p = pair("module-reload");
    let public = "GET /public/x HTTP/1.1\r\nhost: api.example.com\r\nconnection: close\r\n\r\n";
    assert_eq!(raw_http(p.module.listener, public).map(|r| r.status), Some(200));
    let text = std::fs::read_to_string(&p.portcullis.config).expect("policy");
    std::fs::write(&p.portcullis.config, format!("{text}\nissuers: 3\n")).expect("bad edit");
    let refused = within(Duration::from_secs(5), || {
        if p.module.proc.output().contains("policy change refused") { Ok(()) } else { Err(()) }
    });
    assert!(refused.is_ok(), "the module never reported the bad edit:\n{}", p.module.proc.output());
    assert_eq!(raw_http(p.module.listener, public).map(|r| r.status), Some(200), "the policy in force stays");
    let from = "{ name: public, match: { path_prefix: /public }, public: true }";
    assert!(text.contains(from), "the test policy's public route moved");
    let closed = text.replace(from, "{ name: public, match: { path_prefix: /public }, deny: true }");
    std::fs::write(&p.portcullis.config, closed).expect("edit");
    settle(&p.module, public, 403);
    let _ = std::fs::remove_dir_all(&p.dir);
}
