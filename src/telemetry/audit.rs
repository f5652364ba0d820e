//! The audit event: one JSON line per decision (who, what, why) to stdout or a file. Denies are
//! always written; allows are sampled at `allow_sample_rate`. Never the credential.

use crate::decision::{CheckInput, Decision, Outcome};
use std::fs::OpenOptions;
use std::io::{self, LineWriter, Write};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Where audit lines go and how allows are sampled.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditSettings {
    /// `None`: stdout.
    pub file: Option<PathBuf>,
    /// 0.0 to 1.0.
    pub allow_sample_rate: f64,
}

impl Default for AuditSettings {
    fn default() -> Self {
        Self { file: None, allow_sample_rate: 1.0 }
    }
}

pub struct AuditSink {
    out: Mutex<Box<dyn Write + Send>>,
    rate: f64,
    /// Deterministic sampling: accumulate the rate, write when it reaches one.
    credit: Mutex<f64>,
}

impl std::fmt::Debug for AuditSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditSink").field("rate", &self.rate).finish_non_exhaustive()
    }
}

impl AuditSink {
    pub fn open(settings: &AuditSettings) -> io::Result<Self> {
        let out: Box<dyn Write + Send> = match &settings.file {
            Some(path) => Box::new(LineWriter::new(OpenOptions::new().create(true).append(true).open(path)?)),
            None => Box::new(LineWriter::new(io::stdout())),
        };
        Ok(Self { out: Mutex::new(out), rate: settings.allow_sample_rate, credit: Mutex::new(0.0) })
    }

    fn sampled(&self) -> bool {
        if self.rate >= 1.0 {
            return true;
        }
        let Ok(mut credit) = self.credit.lock() else {
            return true;
        };
        *credit += self.rate;
        if *credit >= 1.0 {
            *credit -= 1.0;
            true
        } else {
            false
        }
    }

    /// Writes the audit line of one decision made at `at_millis` (the injected clock).
    pub fn record(&self, input: &CheckInput, decision: &Decision, latency: Duration, at_millis: i64) {
        let allowed = matches!(decision.outcome, Outcome::Allow { .. });
        if allowed && !self.sampled() {
            return;
        }
        let at = UNIX_EPOCH + Duration::from_millis(u64::try_from(at_millis).unwrap_or(0));
        let line = format!("{}\n", event(input, decision, latency, at));
        // Belt and braces: the event never holds a credential, and the line is scrubbed anyway.
        let line = super::redact::scrub(&line);
        if let Ok(mut out) = self.out.lock()
            && let Err(e) = out.write_all(line.as_bytes())
        {
            tracing::error!(error = %e, "cannot write the audit log");
        }
    }
}

/// The audit event for one decision.
pub fn event(input: &CheckInput, decision: &Decision, latency: Duration, at: SystemTime) -> serde_json::Value {
    let ctx = &decision.context;
    let (verdict, detail) = match &decision.outcome {
        Outcome::Allow { .. } => ("allow", ""),
        Outcome::Deny(d) => ("deny", d.detail.as_str()),
    };
    serde_json::json!({
        "time": humantime::format_rfc3339_micros(at).to_string(),
        "request_id": input.request_id,
        "decision": verdict,
        "reason": decision.reason(),
        "detail": detail,
        "rule": ctx.rule,
        "issuer": ctx.issuer.as_deref(),
        "subject": ctx.subject.as_ref().map(|s| &*s.0),
        "tenant": ctx.tenant,
        "client_ip": ctx.client_ip.or(input.peer_ip).map(|ip| ip.to_string()),
        "credential": ctx.credential_fingerprint,
        "api_key": ctx.api_key,
        "method": input.method,
        "latency_us": latency.as_micros() as u64,
    })
}
