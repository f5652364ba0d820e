//! Arbitrary text as an IP list file and as single CIDRs; lookups agree with membership.
#![no_main]

#[path = "targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::cidr_file(data));
