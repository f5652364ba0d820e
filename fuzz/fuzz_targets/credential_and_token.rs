//! Credential extraction, API-key lookup and token verification on arbitrary header values.
#![no_main]

#[path = "common.rs"]
mod common;

use common::snapshot;
use libfuzzer_sys::fuzz_target;
use portcullis::decision::*;

fuzz_target!(|data: &[u8]| {
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
    let decision = decide(&input, &snap.policy, &services, UnixTime(1_790_000_000));
    // An allow (seeds hold valid test tokens) only ever forwards visible ASCII.
    if let Outcome::Allow { set_headers, .. } = &decision.outcome {
        for (_, v) in set_headers {
            assert!(v.bytes().all(|b| (0x21..0x7f).contains(&b)), "raw byte in an identity header");
        }
    }
});
