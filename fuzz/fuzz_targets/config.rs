//! Arbitrary text as a policy file: parse and validate must answer, never panic.
#![no_main]

#[path = "targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::config(data));
