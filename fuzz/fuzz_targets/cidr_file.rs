//! Arbitrary text as an IP list file and as single CIDRs; lookups agree with membership.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::decision::{CidrSet, parse_cidr};

fuzz_target!(|data: &[u8]| {
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
});
