//! The bodies of the fuzz targets, shared by the cargo-fuzz binaries (`fuzz/fuzz_targets/*.rs`)
//! and the integration test that replays every committed corpus file through them
//! (`tests/it/fuzz_corpus.rs`). Each asserts what must hold for any input.
#![allow(dead_code)]

use portcullis::decision::*;
use portcullis::server::convert::{check_input, check_response};
use portcullis::server::proto::envoy::service::auth::v3::{CheckRequest, check_response::HttpResponse};
use prost::Message;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// `tests/fixtures`, whether compiled in the fuzz crate or in the main one.
pub fn fixtures() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = if here.ends_with("fuzz") { here.parent().unwrap_or(here) } else { here };
    root.join("tests/fixtures")
}

/// The test policy, loaded once.
pub fn snapshot() -> &'static portcullis::config::Snapshot {
    static SNAPSHOT: OnceLock<Arc<portcullis::config::Snapshot>> = OnceLock::new();
    SNAPSHOT.get_or_init(|| match portcullis::config::load_file(&fixtures().join("policy.yaml")) {
        Ok(settings) => settings.snapshot,
        Err(e) => panic!("fixture policy: {e}"),
    })
}

const NOW: UnixTime = UnixTime(1_790_000_000);

/// Only visible ASCII is ever forwarded in an identity header.
fn visible(set_headers: &[(String, String)]) {
    for (_, v) in set_headers {
        assert!(v.bytes().all(|b| (0x21..0x7f).contains(&b)), "raw byte in an identity header");
    }
}

/// Credential extraction, API-key lookup and token verification on arbitrary header values.
pub fn credential_and_token(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else { return };
    let value = String::from_utf8_lossy(rest).into_owned();
    let snap = snapshot();
    let _ = snap.verifier.verify(&value);
    let (name, header) = match selector % 4 {
        0 => ("authorization", format!("Bearer {value}")),
        1 => ("authorization", value.clone()),
        2 => ("cookie", format!("session_jwt={value}")),
        _ => ("x-api-key", value.clone()),
    };
    let input = CheckInput {
        method: if selector & 0x80 == 0 { "GET".into() } else { "POST".into() },
        host: "api.example.com".into(),
        path: "/api/items".into(),
        headers: vec![(name.to_string(), header)],
        ..Default::default()
    };
    let services = Services::stateless(&snap.verifier);
    // An allow (seeds hold valid test tokens) only ever forwards visible ASCII.
    if let Outcome::Allow { set_headers, .. } = &decide(&input, &snap.policy, &services, NOW).outcome {
        visible(set_headers);
    }
}

/// Arbitrary protobuf bytes as an Envoy CheckRequest: decode, decide, answer. Every deny must be
/// a PERMISSION_DENIED or UNAUTHENTICATED CheckResponse with a denied_response.
pub fn check_request(data: &[u8]) {
    let Ok(request) = CheckRequest::decode(data) else { return };
    let snap = snapshot();
    let input = check_input(request);
    let services = Services::stateless(&snap.verifier);
    let decision = decide(&input, &snap.policy, &services, NOW);
    let response = check_response(&decision, &input.request_id, &snap.policy.response);
    let code = response.status.as_ref().map(|s| s.code);
    match (&decision.outcome, &response.http_response) {
        (Outcome::Allow { set_headers, .. }, Some(HttpResponse::OkResponse(_))) => {
            assert_eq!(code, Some(0));
            visible(set_headers);
        }
        (Outcome::Deny(_), Some(HttpResponse::DeniedResponse(denied))) => {
            assert!(matches!(code, Some(7) | Some(16)), "deny with gRPC code {code:?}");
            assert!(denied.status.is_some());
        }
        (outcome, answer) => panic!("decision {outcome:?} answered as {answer:?}"),
    }
}

/// Arbitrary text as a policy file: parse and validate must answer, never panic.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = portcullis::config::parse_and_validate(text, &fixtures());
}

/// Arbitrary text as a JWKS document, strict (files) and lenient (fetched) parsing.
pub fn jwks(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = portcullis::jwt::keys_from_jwks(&text);
    if let Ok((set, _skipped)) = portcullis::jwt::keys_from_remote_jwks(&text) {
        // A fetched key set never carries a symmetric key.
        assert!(
            set.keys.iter().all(|k| k.family != portcullis::jwt::AlgFamily::Hmac),
            "symmetric key accepted from a JWKS"
        );
    }
}

/// Arbitrary text as an IP list file and as single CIDRs; lookups agree with membership.
pub fn cidr_file(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut set = CidrSet::default();
    if set.extend_from_lines(&text).is_ok() {
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("").trim();
            if let Ok(net) = parse_cidr(line) {
                assert!(set.contains(net.network_address()), "{line} loaded but its address is not in the set");
            }
        }
    }
}

/// A target's body.
pub type Target = fn(&[u8]);

/// Every target by name, for the corpus replay.
pub const TARGETS: [(&str, Target); 5] = [
    ("credential_and_token", credential_and_token),
    ("check_request", check_request),
    ("config", config),
    ("jwks", jwks),
    ("cidr_file", cidr_file),
];
