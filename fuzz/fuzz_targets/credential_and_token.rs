//! Credential extraction, API-key lookup and token verification on arbitrary header values.
#![no_main]

#[path = "targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::credential_and_token(data));
