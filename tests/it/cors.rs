//! Issue 35: CORS preflights through the shipped Envoy config are answered by Envoy's CORS
//! filter before ext_authz — a browser's OPTIONS carries no credential and must not become a
//! 401 — for listed origins only.

use crate::support::envoy::{Upstream, envoy_in_front};
use crate::support::{Portcullis, corpus, now, raw_http, scratch};

fn preflight(envoy: &crate::support::envoy::Envoy, origin: &str) -> crate::support::HttpResponse {
    let request = format!(
        "OPTIONS /api/items HTTP/1.1\r\nhost: api.example.com\r\norigin: {origin}\r\naccess-control-request-method: GET\r\naccess-control-request-headers: authorization\r\nconnection: close\r\n\r\n"
    );
    raw_http(envoy.listener, &request).expect("response")
}

#[test]
fn preflights_from_listed_origins_are_answered_by_envoy() {
    let dir = scratch("cors");
    let p = Portcullis::start(&dir, "", &[]);
    let upstream = Upstream::start();
    let envoy = envoy_in_front(&dir, &p, &upstream);
    let answered = preflight(&envoy, "https://app.example.com");
    assert_eq!(answered.status, 200, "{:?}", answered.headers);
    assert_eq!(answered.header("access-control-allow-origin"), Some("https://app.example.com"));
    assert!(answered.header("access-control-allow-headers").is_some_and(|h| h.contains("authorization")));
    assert!(answered.header("www-authenticate").is_none(), "not Portcullis' 401");
    // Another origin gets no CORS answer: the request goes on to ext_authz like any other.
    let other = preflight(&envoy, "https://evil.example");
    assert_eq!(other.status, 401);
    assert!(other.header("access-control-allow-origin").is_none());
    // The actual request from the listed origin is authorized as usual and carries the header.
    let token =
        corpus::sign(jsonwebtoken::Algorithm::RS256, Some("rsa-1"), &corpus::claims(corpus::ISSUER, "cors", now()));
    let request = format!(
        "GET /api/items HTTP/1.1\r\nhost: api.example.com\r\norigin: https://app.example.com\r\nauthorization: Bearer {token}\r\nconnection: close\r\n\r\n"
    );
    let allowed = raw_http(envoy.listener, &request).expect("response");
    assert_eq!(allowed.status, 200);
    assert_eq!(allowed.header("access-control-allow-origin"), Some("https://app.example.com"));
    drop((envoy, p));
    let _ = std::fs::remove_dir_all(&dir);
}
