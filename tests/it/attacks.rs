//! The attack corpus of issue 11 through a real Envoy, each case with the answer it must get, and
//! proof that no raw CR, LF or NUL ever reaches the upstream.

use crate::support::attack_corpus::{ENVOY_REJECTS, NO_BODY, attacks};
use crate::support::envoy::{Upstream, envoy_in_front};
use crate::support::{Portcullis, raw_http, scratch};
use serde_json::Value;
use std::time::{SystemTime, UNIX_EPOCH};

#[test]
fn attack_corpus_through_envoy() {
    let dir = scratch("attacks");
    let upstream = Upstream::start();
    let portcullis = Portcullis::start(&dir, "", &[]);
    let envoy = envoy_in_front(&dir, &portcullis, &upstream);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs() as i64;
    let cases = attacks(now);
    let mut failures = Vec::new();
    for case in &cases {
        let Some(resp) = raw_http(envoy.listener, &case.request) else {
            failures.push(format!("{}: no response", case.name));
            continue;
        };
        let body: Value = serde_json::from_str(&resp.body).unwrap_or(Value::Null);
        let got = if resp.status == 200 { &body["headers"]["x-user-id"] } else { &body["reason"] };
        // An empty expectation is an anonymous allow: the upstream sees no x-user-id.
        let want = (case.expect != ENVOY_REJECTS && !case.expect.is_empty()).then_some(case.expect);
        if resp.status != case.status || (case.expect != NO_BODY && got.as_str() != want) {
            failures.push(format!("{}: got {} {got}, want {} {}", case.name, resp.status, case.status, case.expect));
        }
        if resp.status == 200 {
            let headers = body["headers"].as_object().cloned().unwrap_or_default();
            for (name, value) in &headers {
                let raw = value.as_str().unwrap_or_default();
                if raw.contains(['\r', '\n', '\0']) || name.contains(['\r', '\n', '\0']) {
                    failures.push(format!("{}: raw CR/LF/NUL reached the upstream in {name}", case.name));
                }
            }
            if headers.contains_key("x-admin") {
                failures.push(format!("{}: an injected header reached the upstream", case.name));
            }
            // The upstream only ever sees an authorization value Portcullis verified.
            if headers.contains_key("authorization") && !headers.contains_key("x-user-id") {
                failures.push(format!("{}: an unverified authorization reached the upstream", case.name));
            }
            for name in portcullis::decision::FORWARDED_HEADERS {
                if headers.contains_key(name) {
                    failures.push(format!("{}: the client's {name} reached the upstream", case.name));
                }
            }
        }
    }
    assert!(cases.len() >= 35, "attack corpus unexpectedly small");
    assert!(
        failures.is_empty(),
        "{} of {} attacks answered wrongly:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    let _ = std::fs::remove_dir_all(&dir);
}
