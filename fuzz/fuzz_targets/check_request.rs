//! Arbitrary protobuf bytes as an Envoy CheckRequest: decode, decide, answer. Every deny must be
#![no_main]

#[path = "targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::check_request(data));
