//! The audit event: one structured line per decision (who, what, why), never the credential.

use crate::decision::{CheckInput, Decision, Outcome};
use std::time::Duration;

pub fn record(input: &CheckInput, decision: &Decision, latency: Duration) {
    let ctx = &decision.context;
    let verdict = if matches!(decision.outcome, Outcome::Allow { .. }) {
        "allow"
    } else {
        "deny"
    };
    let detail = match &decision.outcome {
        Outcome::Deny(d) => d.detail.as_str(),
        Outcome::Allow { .. } => "",
    };
    tracing::info!(
        target: "portcullis::audit",
        request_id = %input.request_id,
        decision = verdict,
        reason = decision.reason(),
        detail,
        rule = ctx.rule.as_deref().unwrap_or(""),
        issuer = ctx.issuer.as_deref().unwrap_or(""),
        subject = ctx.subject.as_ref().map(|s| s.0.as_str()).unwrap_or(""),
        tenant = ctx.tenant.as_deref().unwrap_or(""),
        client_ip = input.peer_ip.map(|ip| ip.to_string()).unwrap_or_default(),
        credential = ctx.credential_fingerprint.as_deref().unwrap_or(""),
        method = %input.method,
        latency_us = latency.as_micros() as u64,
        "decision"
    );
}
