//! Composing with Envoy's own `jwt_authn` (issue 35): with `issuers[].envoy_jwt_authn`, a token
//! whose payload `jwt_authn` verified and forwarded (`metadata_context_namespaces`) is taken on
//! its word; without that opt-in, or without the metadata, Portcullis verifies as always.

use crate::support::corpus::{self, ISSUER};
use crate::support::envoy::{Upstream, envoy_in_front, get, start_envoy_from, wait_ready};
use crate::support::{Launch, Portcullis, scratch};

/// `deploy/envoy/envoy.yaml` with a `jwt_authn` provider for the test issuer (the fixture's
/// full key set, the token kept for Portcullis, its payload in metadata) ahead of ext_authz,
/// and ext_authz forwarding that metadata.
fn jwt_authn_first(portcullis: &Portcullis) -> Vec<(&'static str, String)> {
    let jwks = std::fs::read_to_string(corpus::fixtures().join("keys/jwks.json")).expect("jwks");
    let jwks: serde_json::Value = serde_json::from_str(&jwks).expect("jwks json");
    let inline = serde_json::to_string(&jwks.to_string()).expect("quoted");
    let indent = " ".repeat(18);
    let filter = format!(
        "{indent}- name: envoy.filters.http.jwt_authn
{indent}  typed_config:
{indent}    \"@type\": type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication
{indent}    providers:
{indent}      test:
{indent}        issuer: {ISSUER}
{indent}        audiences: [api]
{indent}        local_jwks: {{ inline_string: {inline} }}
{indent}        forward: true
{indent}        payload_in_metadata: jwt_payload
{indent}        header_in_metadata: jwt_header
{indent}        from_headers: [ {{ name: authorization, value_prefix: \"Bearer \" }} ]
{indent}    rules:
{indent}      - match: {{ prefix: / }}
{indent}        requires: {{ requires_any: {{ requirements: [ {{ provider_name: test }}, {{ allow_missing: {{}} }} ] }} }}
{indent}- name: envoy.filters.http.ext_authz"
    );
    vec![
        ("port_value: 9191", format!("port_value: {}", portcullis.grpc.port())),
        ("                  - name: envoy.filters.http.ext_authz", filter),
        (
            "transport_api_version: V3",
            "transport_api_version: V3\n                      metadata_context_namespaces: [envoy.filters.http.jwt_authn]"
                .to_string(),
        ),
    ]
}

#[test]
fn a_token_jwt_authn_verified_is_taken_on_its_word_only_where_the_policy_says_so() {
    let dir = scratch("compose-jwt-authn");
    let upstream = Upstream::start();
    // Portcullis' own keys for the issuer lack rsa-1: only jwt_authn can verify the token.
    let own = format!("jwks: {{ file: {} }}", corpus::fixtures().join("keys/jwks.json").display());
    let other = format!(
        "jwks: {{ file: {} }}\n    envoy_jwt_authn: {{ payload_in_metadata: jwt_payload, header_in_metadata: jwt_header }}",
        corpus::fixtures().join("keys/jwks-rsa2.json").display()
    );
    let replace = [(own.as_str(), other.as_str()), ("algorithms: [RS256, ES256, EdDSA]", "algorithms: [RS256]")];
    let portcullis = Portcullis::launch(&dir, Launch { replace: &replace, ..Launch::default() });
    let composed = start_envoy_from(&dir, "envoy-jwt-authn", "envoy.yaml", upstream.addr, jwt_authn_first(&portcullis));
    wait_ready(&composed);
    let plain = envoy_in_front(&dir, &portcullis, &upstream);
    let now = crate::support::now();
    let token = corpus::sign(jsonwebtoken::Algorithm::RS256, Some("rsa-1"), &corpus::claims(ISSUER, "alice", now));
    let bearer = format!("Bearer {token}");
    let auth = [("authorization", bearer.as_str())];

    // jwt_authn verified it and forwarded its payload: Portcullis takes its word and still
    // decides the rest (identity headers, the route's scope).
    let (status, body) = get(&composed, "/api/items", &auth);
    assert_eq!((status, body["headers"]["x-user-id"].as_str()), (200, Some("alice")), "{body}");
    // Without jwt_authn in front there is no word to take: Portcullis verifies, and cannot.
    let (status, body) = get(&plain, "/api/items", &auth);
    assert_eq!((status, body["reason"].as_str()), (401, Some("token_invalid")), "{body}");
    // Every other check still runs on an attested token: an expired one is refused by
    // jwt_authn itself, and a token for another audience by Portcullis' own rules.
    let mut expired = corpus::claims(ISSUER, "bob", now);
    expired["exp"] = serde_json::json!(now - 3600);
    let expired = format!("Bearer {}", corpus::sign(jsonwebtoken::Algorithm::RS256, Some("rsa-1"), &expired));
    assert_eq!(get(&composed, "/api/items", &[("authorization", expired.as_str())]).0, 401);
    // A token signed by a key jwt_authn does not have never reaches Portcullis as attested.
    let forged = corpus::sign_rsa_other(Some("rsa-1"), &corpus::claims(ISSUER, "mallory", now));
    let forged = format!("Bearer {forged}");
    assert_eq!(get(&composed, "/api/items", &[("authorization", forged.as_str())]).0, 401);
    let _ = std::fs::remove_dir_all(&dir);
}
