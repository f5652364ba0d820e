//! Arbitrary protobuf bytes as an Envoy CheckRequest: decode, decide, answer. Every deny must be
//! a PERMISSION_DENIED or UNAUTHENTICATED CheckResponse with a denied_response.
#![no_main]

#[path = "common.rs"]
mod common;

use common::snapshot;
use libfuzzer_sys::fuzz_target;
use portcullis::decision::*;
use portcullis::server::convert::{check_input, check_response};
use portcullis::server::proto::envoy::service::auth::v3::{CheckRequest, check_response::HttpResponse};
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(request) = CheckRequest::decode(data) else { return };
    let snap = snapshot();
    let input = check_input(request);
    let services = Services::stateless(&snap.verifier);
    let decision = decide(&input, &snap.policy, &services, UnixTime(1_790_000_000));
    let response = check_response(&decision, &input.request_id, &snap.policy.response);
    let code = response.status.as_ref().map(|s| s.code);
    match (&decision.outcome, &response.http_response) {
        (Outcome::Allow { set_headers, .. }, Some(HttpResponse::OkResponse(_))) => {
            assert_eq!(code, Some(0));
            for (_, value) in set_headers {
                assert!(value.bytes().all(|b| (0x21..0x7f).contains(&b)), "raw byte in an identity header");
            }
        }
        (Outcome::Deny(_), Some(HttpResponse::DeniedResponse(denied))) => {
            assert!(matches!(code, Some(7) | Some(16)), "deny with gRPC code {code:?}");
            assert!(denied.status.is_some());
        }
        (outcome, answer) => panic!("decision {outcome:?} answered as {answer:?}"),
    }
});
