//! Audit sink tests.

use super::audit::*;
use crate::decision::{CheckInput, Decision, Outcome};
use crate::decision::{Deny, DenyReason};
use std::time::Duration;

const POLICY: Policy<'static> = Policy { hash: "0123456789ab", generation: 1 };

fn sink(rate: f64, file: &std::path::Path) -> AuditSink {
    AuditSink::open(&AuditSettings { file: Some(file.to_path_buf()), allow_sample_rate: rate }).expect("open")
}

#[test]
fn allows_are_sampled_denies_never() {
    let file = std::env::temp_dir().join(format!("portcullis-audit-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&file);
    let audit = sink(0.25, &file);
    let input = CheckInput { request_id: "r".into(), ..Default::default() };
    let allow = Decision {
        outcome: Outcome::Allow { set_headers: vec![], remove_headers: vec![] },
        context: Default::default(),
    };
    let deny = Decision::deny(Deny::new(DenyReason::NoRoute, "x"), Default::default());
    for _ in 0..100 {
        audit.record(&input, &allow, POLICY, Duration::from_micros(5), 1_790_000_000_000);
        audit.record(&input, &deny, POLICY, Duration::from_micros(5), 1_790_000_000_000);
    }
    drop(audit); // waits for the writer thread
    let text = std::fs::read_to_string(&file).expect("audit");
    let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).expect("json")).collect();
    let allows = lines.iter().filter(|l| l["decision"] == "allow").count();
    let denies = lines.iter().filter(|l| l["decision"] == "deny").count();
    assert_eq!((allows, denies), (25, 100));
    assert!(lines.iter().all(|l| l["time"] == "2026-09-21T14:13:20.000000Z"), "time from the injected clock");
    let _ = std::fs::remove_file(&file);
}

#[test]
fn error_chains_keep_every_cause_and_hint_at_an_unknown_ca() {
    #[derive(Debug, thiserror::Error)]
    #[error("error sending request for url (https://idp/jwks)")]
    struct Outer(#[source] std::io::Error);
    let e = Outer(std::io::Error::other("invalid peer certificate: UnknownIssuer"));
    let text = super::error_chain(&e);
    assert!(text.starts_with("error sending request for url (https://idp/jwks): invalid peer certificate"), "{text}");
    assert!(text.contains("hint:") && text.contains("ca_file"), "{text}");
    let plain = super::error_chain(&std::io::Error::other("connection refused"));
    assert_eq!(plain, "connection refused");
}

/// Audit lines stay valid JSON, one per line, whatever a client or token puts in the fields
/// that come from outside; credentials in them are scrubbed before encoding.
mod hostile_fields {
    use super::*;
    use crate::decision::{DecisionContext, Subject};
    use proptest::prelude::*;

    fn hostile() -> impl Strategy<Value = String> {
        prop_oneof![
            ".{0,40}",
            "[\\x00-\\x1f\"\\\\]{1,10}",
            Just("bearer x\"".to_string()),
            Just("Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.\\\"".to_string()),
            Just("\u{1b}[2J\r\nfake line".to_string()),
        ]
    }

    proptest! {
        #[test]
        fn every_audit_line_is_valid_json(sub in hostile(), rid in hostile(), path in hostile(), host in hostile()) {
            let input = CheckInput {
                request_id: rid.clone(),
                path: format!("/{path}?token=eyJhbGciOiJub25lIn0.e30."),
                host: host.clone(),
                method: "GET".into(),
                ..Default::default()
            };
            let context = DecisionContext { subject: Some(Subject::new(&sub)), ..Default::default() };
            let decision = Decision::deny(Deny::new(DenyReason::NoRoute, "x"), context);
            let line = event(&input, &decision, POLICY, Duration::from_micros(1), std::time::UNIX_EPOCH).line().expect("a line");
            prop_assert!(!line.chars().any(|c| c < ' '), "a raw control character: {}", line);
            let back: serde_json::Value = serde_json::from_str(&line).expect("valid JSON");
            prop_assert!(!line.contains("eyJhbGciOiJub25lIn0"), "a token reached the line: {}", line);
            prop_assert!(back["path"].as_str().is_some_and(|p| !p.contains('?')), "the query is dropped");
            if !sub.to_ascii_lowercase().contains("bearer") && !sub.contains("eyJ") {
                prop_assert_eq!(back["subject"].as_str(), Some(sub.as_str()));
            }
            prop_assert_eq!(back["host"].as_str().is_some(), true);
        }

        #[test]
        fn long_outside_values_are_cut(len in 1_000usize..20_000) {
            let input = CheckInput { path: format!("/{}", "é".repeat(len)), ..Default::default() };
            let decision = Decision::deny(Deny::new(DenyReason::NoRoute, "x"), Default::default());
            let line = event(&input, &decision, POLICY, Duration::from_micros(1), std::time::UNIX_EPOCH).line().expect("a line");
            prop_assert!(line.len() < 2 * MAX_FIELD_BYTES, "{} bytes", line.len());
        }
    }
}

/// A log consumer that stops reading (a full pipe, a stuck disk) costs audit lines, counted,
/// never a check: `record` never waits on the writer.
#[test]
fn a_stuck_audit_consumer_drops_lines_instead_of_blocking_checks() {
    struct Stuck(std::sync::mpsc::Receiver<()>);
    impl std::io::Write for Stuck {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            let _ = self.0.recv(); // blocks until the test lets go
            Err(std::io::Error::other("released"))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let (release, stuck) = std::sync::mpsc::channel();
    let audit = AuditSink::with_writer(Box::new(Stuck(stuck)), 1.0).expect("sink");
    let input = CheckInput { request_id: "r".into(), ..Default::default() };
    let deny = Decision::deny(Deny::new(DenyReason::NoRoute, "x"), Default::default());
    let extra = 1_000;
    for _ in 0..QUEUE_LINES + extra {
        audit.record(&input, &deny, POLICY, Duration::from_micros(5), 1_790_000_000_000);
    }
    // Every call returned. The queue holds QUEUE_LINES and the writer's 64 KiB buffer some
    // hundreds more; the rest were dropped and counted.
    assert!(audit.dropped() >= extra as u64 / 2, "dropped {}", audit.dropped());
    drop(release);
    drop(audit);
}
