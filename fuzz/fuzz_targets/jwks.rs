//! Arbitrary text as a JWKS document, strict (files) and lenient (fetched) parsing.
#![no_main]

#[path = "targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::jwks(data));
