//! Issue 37, sender-constrained tokens through the shipped Envoy 1.40 config: DPoP proofs minted
//! here (RFC 9449) over HTTP/1.1 and HTTP/2, certificate-bound tokens (RFC 8705) over a TLS
//! listener with real client certificates, and the replay cache shared by two replicas through
//! a real Redis.

use crate::support::envoy::{Upstream, start_envoy_from, wait_ready};
use crate::support::{Launch, Portcullis, RedisServer, corpus, now, raw_http, scratch};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{Jwk, ThumbprintHash};
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::path::Path;

/// Request headers: (name, value).
type Headers<'a> = Vec<(&'a str, String)>;

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn fixture_key(name: &str) -> Vec<u8> {
    std::fs::read(corpus::fixtures().join("keys").join(name)).expect("key")
}

/// A client's proof key: the signing key, its public JWK and thumbprint.
struct ClientKey {
    key: EncodingKey,
    alg: Algorithm,
    jwk: Value,
    jkt: String,
}

fn client_key(pem: &str, alg: Algorithm) -> ClientKey {
    let key = match alg {
        Algorithm::ES256 => EncodingKey::from_ec_pem(&fixture_key(pem)),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(&fixture_key(pem)),
        _ => EncodingKey::from_rsa_pem(&fixture_key(pem)),
    }
    .expect("key");
    let jwk = Jwk::from_encoding_key(&key, alg).expect("jwk");
    let jkt = jwk.thumbprint(ThumbprintHash::SHA256).expect("thumbprint");
    ClientKey { key, alg, jwk: serde_json::to_value(&jwk).expect("json"), jkt }
}

/// What a proof says, each field overridable to forge one.
struct ProofSpec<'a> {
    htm: &'a str,
    htu: String,
    iat: i64,
    jti: String,
    ath: String,
    nonce: Option<&'a str>,
    header: Value,
}

fn spec<'a>(key: &ClientKey, htm: &'a str, htu: String, token: &str) -> ProofSpec<'a> {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    ProofSpec {
        htm,
        htu,
        iat: now(),
        jti: format!("proof-{}-{n}", std::process::id()),
        ath: b64(&Sha256::digest(token.as_bytes())),
        nonce: None,
        header: json!({"typ": "dpop+jwt", "alg": format!("{:?}", key.alg), "jwk": key.jwk}),
    }
}

fn sign_proof(key: &ClientKey, spec: &ProofSpec) -> String {
    let mut claims = json!({"htm": spec.htm, "htu": spec.htu, "iat": spec.iat, "jti": spec.jti, "ath": spec.ath});
    if let Some(nonce) = spec.nonce {
        claims["nonce"] = json!(nonce);
    }
    let alg: Algorithm = spec.header["alg"].as_str().and_then(|a| a.parse().ok()).unwrap_or(key.alg);
    let input = format!("{}.{}", b64(spec.header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
    let signing = if alg == Algorithm::HS256 {
        EncodingKey::from_secret(b"a shared secret proves nothing!!")
    } else {
        key.key.clone()
    };
    let sig = jsonwebtoken::crypto::sign(input.as_bytes(), &signing, alg).expect("sign");
    format!("{input}.{sig}")
}

/// An access token of the test issuer with `cnf`.
fn token(sub: &str, cnf: Option<Value>) -> String {
    let mut claims = corpus::claims(corpus::ISSUER, sub, now());
    claims["jti"] = json!(format!("t-{sub}-{}", now()));
    if let Some(cnf) = cnf {
        claims["cnf"] = cnf;
    }
    corpus::sign(Algorithm::RS256, Some("rsa-1"), &claims)
}

/// The shipped Envoy config in front of `p`, ready, and the upstream it routes to.
fn envoy_in_front_of(dir: &Path, p: &Portcullis) -> (Upstream, crate::support::envoy::Envoy) {
    let upstream = Upstream::start();
    let envoy = start_envoy_from(
        dir,
        "envoy",
        "envoy.yaml",
        upstream.addr,
        vec![("port_value: 9191", format!("port_value: {}", p.grpc.port()))],
    );
    wait_ready(&envoy);
    (upstream, envoy)
}

/// Routes that ask for a binding, and `dpop:` settings.
const ROUTES: [(&str, &str); 1] = [(
    "routes:\n",
    "routes:\n  - { name: dpop-only, match: { path_prefix: /api/dpop }, require: { scopes: [read], sender_constraint: { dpop: required } } }\n  - { name: mtls-only, match: { path_prefix: /api/mtls }, require: { scopes: [read], sender_constraint: { mtls: required } } }\n",
)];

fn start(dir: &Path, extra: &str) -> Portcullis {
    Portcullis::launch(
        dir,
        Launch {
            fixture: "policy.yaml",
            grpc: None,
            listen_extra: "",
            extra,
            env: &[],
            run_as: None,
            replace: &ROUTES,
        },
    )
}

/// (status, reason, www-authenticate, dpop-nonce) of a request through Envoy over HTTP/1.1.
fn h1(listener: SocketAddr, method: &str, path: &str, headers: &[(&str, String)]) -> (u16, String, String, String) {
    let mut request = format!("{method} {path} HTTP/1.1\r\nhost: api.example.com\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("content-length: 0\r\nconnection: close\r\n\r\n");
    let resp = raw_http(listener, &request).expect("response");
    let body: Value = serde_json::from_str(&resp.body).unwrap_or(Value::Null);
    let reason = body["reason"].as_str().unwrap_or(if resp.status == 200 { "allowed" } else { "?" }).to_string();
    let header = |n: &str| resp.header(n).unwrap_or_default().to_string();
    (resp.status, reason, header("www-authenticate"), header("dpop-nonce"))
}

/// The same with curl: `version` is `--http2-prior-knowledge` (plain listener), `--http2` or
/// `--http1.1` (TLS, by ALPN) with the client certificate `client` from `tls`.
fn curl(url: &str, version: &str, headers: &[(&str, String)], tls: Option<(&Path, &str)>) -> (u16, String) {
    let mut cmd = std::process::Command::new("curl");
    cmd.args(["-sS", "-o", "-", "-w", "\n%{http_code}", version, url]);
    if let Some((fixtures, client)) = tls {
        cmd.arg("--cacert").arg(fixtures.join("ca.pem"));
        cmd.arg("--cert").arg(fixtures.join(format!("{client}.pem")));
        cmd.arg("--key").arg(fixtures.join(format!("{client}.key")));
    }
    for (k, v) in headers {
        cmd.arg("-H").arg(format!("{k}: {v}"));
    }
    let out = cmd.output().expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    let reason = serde_json::from_str::<Value>(body).ok().and_then(|b| b["reason"].as_str().map(str::to_string));
    let status = code.trim().parse().unwrap_or(0);
    (
        status,
        reason.unwrap_or_else(|| {
            if status == 200 { "allowed".into() } else { format!("? {}", String::from_utf8_lossy(&out.stderr)) }
        }),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dpop_proofs_through_envoy_over_http1_and_http2() {
    let dir = scratch("sender-dpop");
    let p = start(&dir, "dpop: { max_age: 60s }");
    let (_upstream, envoy) = envoy_in_front_of(&dir, &p);
    let ec = client_key("ec.pem", Algorithm::ES256);
    let ed = client_key("ed.pem", Algorithm::EdDSA);
    let bound = token("dpop-user", Some(json!({"jkt": ec.jkt})));
    let htu = "http://api.example.com/api/items".to_string();
    let dpop = |proof: String, token: &str| vec![("authorization", format!("DPoP {token}")), ("dpop", proof)];
    // HTTP/1.1 written by hand; HTTP/2 by curl (prior knowledge), the same `host`.
    let send = |version: &str, path: &str, headers: &[(&str, String)]| -> (u16, String, String) {
        if version == "1.1" {
            let got = h1(envoy.listener, "GET", path, headers);
            return (got.0, got.1, got.2);
        }
        let mut all = headers.to_vec();
        all.push(("host", "api.example.com".to_string()));
        let url = format!("http://127.0.0.1:{}{path}", envoy.listener.port());
        let got = curl(&url, "--http2-prior-knowledge", &all, None);
        (got.0, got.1, String::new())
    };
    for version in ["1.1", "2"] {
        // The happy path, and the same proof again (replayed).
        let proof = sign_proof(&ec, &spec(&ec, "GET", htu.clone(), &bound));
        assert_eq!(send(version, "/api/items", &dpop(proof.clone(), &bound)).0, 200, "HTTP/{version}: with its proof");
        let replayed = send(version, "/api/items", &dpop(proof, &bound));
        assert_eq!((replayed.0, replayed.1.as_str()), (401, "dpop_proof_invalid"), "HTTP/{version}: replayed");
        if version == "1.1" {
            let challenge = &replayed.2;
            assert!(
                challenge.starts_with("DPoP ") && challenge.contains("error=\"invalid_dpop_proof\""),
                "{challenge}"
            );
        }
        // Each forgery, refused with its reason.
        let forged = |edit: &dyn Fn(&mut ProofSpec), key: &ClientKey| {
            let mut s = spec(key, "GET", htu.clone(), &bound);
            edit(&mut s);
            sign_proof(key, &s)
        };
        let mut private_jwk = ec.jwk.clone();
        private_jwk["d"] = json!("AAAA");
        let unbound = token("plain", None);
        let cases: Vec<(&str, Headers, &str)> = vec![
            ("a stolen token as bearer", vec![("authorization", format!("Bearer {bound}"))], "token_binding_mismatch"),
            ("a stolen token without a proof", vec![("authorization", format!("DPoP {bound}"))], "dpop_proof_invalid"),
            ("a proof for another method", dpop(forged(&|s| s.htm = "POST", &ec), &bound), "dpop_proof_invalid"),
            (
                "a proof for another URL",
                dpop(forged(&|s| s.htu = "http://api.example.com/api/other".into(), &ec), &bound),
                "dpop_proof_invalid",
            ),
            ("a stale iat", dpop(forged(&|s| s.iat = now() - 600, &ec), &bound), "dpop_proof_invalid"),
            (
                "a wrong ath",
                dpop(forged(&|s| s.ath = b64(&Sha256::digest(b"another token")), &ec), &bound),
                "dpop_proof_invalid",
            ),
            ("HS256", dpop(forged(&|s| s.header["alg"] = json!("HS256"), &ec), &bound), "dpop_proof_invalid"),
            (
                "a private key in the jwk",
                dpop(forged(&|s| s.header["jwk"] = private_jwk.clone(), &ec), &bound),
                "dpop_proof_invalid",
            ),
            ("typ JWT", dpop(forged(&|s| s.header["typ"] = json!("JWT"), &ec), &bound), "dpop_proof_invalid"),
            ("a proof by another key", dpop(forged(&|_| {}, &ed), &bound), "token_binding_mismatch"),
            (
                "an unbound token as DPoP",
                dpop(sign_proof(&ec, &spec(&ec, "GET", htu.clone(), &unbound)), &unbound),
                "token_binding_mismatch",
            ),
            (
                "an unbound bearer on a DPoP-only route",
                vec![("authorization", format!("Bearer {unbound}"))],
                "token_binding_mismatch",
            ),
        ];
        for (case, headers, want) in cases {
            let path = if case.contains("DPoP-only") { "/api/dpop/x" } else { "/api/items" };
            let got = send(version, path, &headers);
            assert_eq!((got.0, got.1.as_str()), (401, want), "HTTP/{version}, {case}: {got:?}");
        }
        // An unbound bearer token still passes where DPoP is only allowed.
        assert_eq!(send(version, "/api/items", &[("authorization", format!("Bearer {unbound}"))]).0, 200);
    }
    drop((envoy, p));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Server nonces (RFC 9449 §8): a proof without one is answered 401 `use_dpop_nonce` with a
/// `DPoP-Nonce`; the same request with that nonce passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dpop_nonces_are_handed_out_and_required() {
    let dir = scratch("sender-nonce");
    let p = start(&dir, "dpop: { nonce: { rotate: 5m } }");
    let (_upstream, envoy) = envoy_in_front_of(&dir, &p);
    let ec = client_key("ec.pem", Algorithm::ES256);
    let bound = token("nonce-user", Some(json!({"jkt": ec.jkt})));
    let htu = "http://api.example.com/api/items".to_string();
    let first = sign_proof(&ec, &spec(&ec, "GET", htu.clone(), &bound));
    let headers = |proof: String| vec![("authorization", format!("DPoP {bound}")), ("dpop", proof)];
    let (status, reason, challenge, nonce) = h1(envoy.listener, "GET", "/api/items", &headers(first));
    assert_eq!((status, reason.as_str()), (401, "dpop_nonce_required"));
    assert!(challenge.contains("error=\"use_dpop_nonce\"") && !nonce.is_empty(), "{challenge} / {nonce}");
    let mut with = spec(&ec, "GET", htu, &bound);
    with.nonce = Some(&nonce);
    assert_eq!(h1(envoy.listener, "GET", "/api/items", &headers(sign_proof(&ec, &with))).0, 200);
    drop((envoy, p));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Certificate-bound tokens (RFC 8705) through a TLS listener that asks for client
/// certificates, over HTTP/1.1 and HTTP/2: the token's `cnf.x5t#S256` must be the certificate
/// Envoy forwards (`include_peer_certificate`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_bound_tokens_through_a_tls_listener() {
    let dir = scratch("sender-mtls");
    let p = start(&dir, "");
    let upstream = Upstream::start();
    let tls = corpus::fixtures().join("tls");
    let transport = format!(
        "      filter_chains:\n        - transport_socket:\n            name: envoy.transport_sockets.tls\n            typed_config:\n              \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext\n              require_client_certificate: true\n              common_tls_context:\n                alpn_protocols: [h2, http/1.1]\n                tls_certificates:\n                  - certificate_chain: {{ filename: {0}/server.pem }}\n                    private_key: {{ filename: {0}/server.key }}\n                validation_context:\n                  trusted_ca: {{ filename: {0}/ca.pem }}\n          filters:\n",
        tls.display()
    );
    let envoy = start_envoy_from(
        &dir,
        "envoy",
        "envoy.yaml",
        upstream.addr,
        vec![
            ("port_value: 9191", format!("port_value: {}", p.grpc.port())),
            ("      filter_chains:\n        - filters:\n", transport),
        ],
    );
    let cert_hash = |name: &str| {
        let pem = std::fs::read(tls.join(format!("{name}.pem"))).expect("cert");
        let der = pem::parse(pem).expect("pem");
        b64(&Sha256::digest(der.contents()))
    };
    let bound = token("mtls-user", Some(json!({"x5t#S256": cert_hash("client-gateway")})));
    let url = |path: &str| format!("https://127.0.0.1:{}{path}", envoy.listener.port());
    let ready = crate::support::within(std::time::Duration::from_secs(20), || {
        crate::support::is(curl(&url("/healthz"), "--http2", &[], Some((&tls, "client-gateway"))).0, 200)
    });
    assert!(ready.is_ok(), "envoy's TLS listener never passed a public request:\n{}", envoy.proc.output());
    let bearer = vec![("authorization", format!("Bearer {bound}"))];
    let unbound = vec![("authorization", format!("Bearer {}", token("plain", None)))];
    for version in ["--http1.1", "--http2"] {
        let run = |client: &str, path: &str, headers: &[(&str, String)]| {
            curl(&url(path), version, headers, Some((&tls, client)))
        };
        assert_eq!(
            run("client-gateway", "/api/items", &bearer),
            (200, "allowed".into()),
            "{version}: its own certificate"
        );
        assert_eq!(
            run("client-intruder", "/api/items", &bearer),
            (401, "token_binding_mismatch".into()),
            "{version}: another certificate"
        );
        assert_eq!(run("client-gateway", "/api/mtls/x", &bearer).0, 200, "{version}: mTLS required, bound");
        assert_eq!(
            run("client-gateway", "/api/mtls/x", &unbound),
            (401, "token_binding_mismatch".into()),
            "{version}: mTLS required, unbound"
        );
        assert_eq!(run("client-gateway", "/api/items", &unbound).0, 200, "{version}: unbound where allowed");
    }
    drop((envoy, p));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The replay cache is shared by two replicas through a real Redis: a proof accepted by A is
/// refused by B.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proof_replayed_to_another_replica_is_refused() {
    let dir = scratch("sender-replay");
    let redis = RedisServer::start(&dir);
    let state =
        format!("state: {{ backend: redis, url: \"{}\", max_staleness: 30s }}\ndpop: {{ max_age: 60s }}", redis.url());
    let start_in = |name: &str| {
        let sub = dir.join(name);
        std::fs::create_dir_all(&sub).expect("dir");
        start(&sub, &state)
    };
    let (a, b) = (start_in("a"), start_in("b"));
    let ec = client_key("ec.pem", Algorithm::ES256);
    let bound = token("replay-user", Some(json!({"jkt": ec.jkt})));
    let proof = sign_proof(&ec, &spec(&ec, "GET", "http://api.example.com/api/items".into(), &bound));
    let check = |p: &Portcullis| {
        let authorization = format!("DPoP {bound}");
        let request = portcullis::dev::request::check_request(
            "GET",
            "/api/items",
            &[("authorization", &authorization), ("dpop", &proof)],
            portcullis::dev::request::HeaderEncoding::Map,
        );
        let addr = p.grpc;
        async move {
            let mut client = portcullis::server::proto::envoy::service::auth::v3::authorization_client::AuthorizationClient::connect(format!("http://{addr}")).await.expect("connect");
            crate::support::outcome(&client.check(request).await.expect("check").into_inner())
        }
    };
    assert_eq!(check(&a).await, (200, "allowed".to_string()), "A accepts the proof");
    assert_eq!(check(&b).await, (401, "dpop_proof_invalid".to_string()), "B refuses its replay");
    assert_eq!(check(&a).await, (401, "dpop_proof_invalid".to_string()), "and so does A");
    drop((a, b, redis));
    let _ = std::fs::remove_dir_all(&dir);
}
