//! The audit event: one JSON line per decision (who, what, why) to stdout or a file. Denies are
//! always written; allows are sampled at `allow_sample_rate`. Never the credential.
//!
//! Lines go through a bounded queue to one writer thread: a slow disk or log pipeline costs
//! audit lines (counted in `portcullis_audit_dropped_total`), never check latency.

use crate::decision::{CheckInput, Decision, Outcome};
use std::borrow::Cow;
use std::fs::OpenOptions;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const DROPPED_TOTAL: &str = "portcullis_audit_dropped_total";

/// Lines waiting for the writer thread at most…
pub const QUEUE_LINES: usize = 16_384;
/// …and bytes (a flood of long denied paths must not grow the queue past this).
pub const QUEUE_BYTES: usize = 8 * 1024 * 1024;
/// A value from outside is cut to this many bytes in the audit line.
pub const MAX_FIELD_BYTES: usize = 1024;

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
    /// `None` once closed.
    queue: Option<SyncSender<String>>,
    /// Signalled by the writer thread when it has written everything and stopped.
    finished: std::sync::Mutex<Receiver<()>>,
    rate: f64,
    /// Allows seen: deterministic sampling writes allow `n` when `floor(n × rate)` steps up.
    allows: AtomicU64,
    dropped: metrics::Counter,
    /// The same count as `dropped`, readable without the metrics recorder.
    dropped_here: AtomicU64,
    /// Bytes queued and not yet written.
    queued_bytes: Arc<AtomicUsize>,
}

impl std::fmt::Debug for AuditSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditSink").field("rate", &self.rate).finish_non_exhaustive()
    }
}

impl AuditSink {
    pub fn open(settings: &AuditSettings) -> io::Result<Self> {
        let out: Box<dyn Write + Send> = match &settings.file {
            Some(path) => Box::new(OpenOptions::new().create(true).append(true).open(path)?),
            None => Box::new(io::stdout()),
        };
        Self::with_writer(out, settings.allow_sample_rate)
    }

    /// A sink writing to `out` (tests give it a writer that never returns).
    pub fn with_writer(out: Box<dyn Write + Send>, allow_sample_rate: f64) -> io::Result<Self> {
        let (queue, lines) = std::sync::mpsc::sync_channel(QUEUE_LINES);
        let (done, finished) = std::sync::mpsc::sync_channel(1);
        let queued_bytes = Arc::new(AtomicUsize::new(0));
        let written = queued_bytes.clone();
        std::thread::Builder::new().name("audit-writer".into()).spawn(move || {
            write_lines(&lines, out, &written);
            let _ = done.send(());
        })?;
        let dropped = metrics::counter!(DROPPED_TOTAL);
        dropped.increment(0);
        Ok(Self {
            queue: Some(queue),
            finished: std::sync::Mutex::new(finished),
            rate: allow_sample_rate,
            allows: AtomicU64::new(0),
            dropped,
            dropped_here: AtomicU64::new(0),
            queued_bytes,
        })
    }

    fn sampled(&self) -> bool {
        if self.rate >= 1.0 {
            return true;
        }
        let n = self.allows.fetch_add(1, Ordering::Relaxed) as f64;
        ((n + 1.0) * self.rate).floor() > (n * self.rate).floor()
    }

    /// Queues the audit line of one decision made at `at_millis` (the injected clock).
    pub fn record(
        &self,
        input: &CheckInput,
        decision: &Decision,
        policy: Policy<'_>,
        latency: Duration,
        at_millis: i64,
    ) {
        let allowed = matches!(decision.outcome, Outcome::Allow { .. });
        if allowed && !self.sampled() {
            return;
        }
        let at = UNIX_EPOCH + Duration::from_millis(u64::try_from(at_millis).unwrap_or(0));
        let Some(line) = event(input, decision, policy, latency, at).line() else { return self.drop_line() };
        self.enqueue(line);
    }

    /// Queues an audit line an Envoy module decided and sent over the state stream
    /// (`server/stream.rs`), marked `"via": via`. Only a JSON object is taken, written again
    /// compactly (one line, nothing the module sent can start another); anything else is
    /// counted as dropped.
    pub fn record_forwarded(&self, line: &str, via: &str) {
        let Ok(mut object) = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(line) else {
            return self.drop_line();
        };
        object.insert("via".into(), via.into());
        match serde_json::to_string(&object) {
            Ok(line) => self.enqueue(line),
            Err(_) => self.drop_line(),
        }
    }

    /// Queues one line (without its newline) within the sink's byte and line budget.
    fn enqueue(&self, mut line: String) {
        line.push('\n');
        let Some(queue) = &self.queue else { return };
        let len = line.len();
        if self.queued_bytes.fetch_add(len, Ordering::AcqRel) + len > QUEUE_BYTES {
            self.queued_bytes.fetch_sub(len, Ordering::AcqRel);
            return self.drop_line();
        }
        match queue.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.queued_bytes.fetch_sub(len, Ordering::AcqRel);
                self.drop_line();
            }
            Err(TrySendError::Disconnected(_)) => {
                self.queued_bytes.fetch_sub(len, Ordering::AcqRel);
                self.drop_line();
                tracing::error!("the audit writer stopped; audit lines are lost");
            }
        }
    }
}

impl Drop for AuditSink {
    /// Lets the writer finish what is queued (at most a few seconds: a stuck log pipeline must
    /// not hold the process after its drain).
    fn drop(&mut self) {
        self.queue = None;
        if let Ok(finished) = self.finished.lock() {
            let _ = finished.recv_timeout(Duration::from_secs(3));
        }
    }
}

impl AuditSink {
    fn drop_line(&self) {
        self.dropped.increment(1);
        self.dropped_here.fetch_add(1, Ordering::Relaxed);
    }

    /// Lines dropped because the writer could not keep up.
    pub fn dropped(&self) -> u64 {
        self.dropped_here.load(Ordering::Relaxed)
    }
}

/// How long the writer lets lines gather after a batch. Waking the writer for each line costs
/// a context switch per check on a busy CPU; a batch per few milliseconds costs one.
const BATCH_WAIT: Duration = Duration::from_millis(2);

/// The writer thread: buffered, flushed whenever the queue runs dry, then resting
/// [`BATCH_WAIT`] so that under load lines are written in batches (an idle writer blocks and the
/// next line wakes it). Lines leave within a few milliseconds. Ends when the sink is dropped.
fn write_lines(lines: &Receiver<String>, out: Box<dyn Write + Send>, queued_bytes: &AtomicUsize) {
    let mut out = BufWriter::with_capacity(64 * 1024, out);
    let mut failing = false;
    while let Ok(first) = lines.recv() {
        queued_bytes.fetch_sub(first.len(), Ordering::AcqRel);
        let mut result = out.write_all(first.as_bytes());
        while let Ok(more) = lines.try_recv() {
            queued_bytes.fetch_sub(more.len(), Ordering::AcqRel);
            result = result.and_then(|()| out.write_all(more.as_bytes()));
        }
        result = result.and_then(|()| out.flush());
        match result {
            Err(e) if !failing => {
                failing = true;
                tracing::error!(error = %e, "cannot write the audit log");
            }
            Err(_) => {}
            Ok(()) => failing = false,
        }
        std::thread::sleep(BATCH_WAIT);
    }
    let _ = out.flush();
}

/// The trace id of a W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`), if well-formed.
fn trace_id(input: &CheckInput) -> Option<&str> {
    let value = input.header_values("traceparent").next()?;
    let mut parts = value.trim().split('-');
    let (_version, trace, span) = (parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
    (hex(trace, 32) && hex(span, 16) && trace.bytes().any(|b| b != b'0')).then_some(trace)
}

/// A value from the request or a token, cut to [`MAX_FIELD_BYTES`] and scrubbed of anything
/// shaped like a credential before it is encoded (so the JSON encoder, not a regex, has the
/// last word on escaping).
fn outside(value: &str) -> Cow<'_, str> {
    if value.len() <= MAX_FIELD_BYTES {
        return super::redact::scrub_value(value);
    }
    let mut cut = MAX_FIELD_BYTES;
    while !value.is_char_boundary(cut) {
        cut -= 1;
    }
    Cow::Owned(format!("{}…", super::redact::scrub_value(&value[..cut])))
}

/// The audit event of one decision: borrowed fields in a struct serde writes straight out (no
/// JSON tree is built per check). Members are in name order, as readers have always seen them.
#[derive(Debug, serde::Serialize)]
pub struct AuditEvent<'a> {
    api_key: Option<&'a str>,
    client_ip: Option<std::net::IpAddr>,
    credential: Option<crate::decision::Fingerprint>,
    decision: &'static str,
    detail: Cow<'a, str>,
    enforced: bool,
    host: Cow<'a, str>,
    issuer: Option<Cow<'a, str>>,
    latency_us: u64,
    method: Cow<'a, str>,
    path: Cow<'a, str>,
    /// The hash of the policy that decided, and its load generation.
    policy: &'a str,
    policy_generation: u64,
    reason: &'a str,
    request_id: Cow<'a, str>,
    rule: Option<&'a str>,
    subject: Option<Cow<'a, str>>,
    tenant: Option<Cow<'a, str>>,
    #[serde(serialize_with = "rfc3339_micros")]
    time: SystemTime,
    trace_id: Option<&'a str>,
}

fn rfc3339_micros<S: serde::Serializer>(at: &SystemTime, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&humantime::format_rfc3339_micros(*at))
}

impl AuditEvent<'_> {
    /// The event as one JSON line (without its newline); `None` only if serde refuses it.
    pub fn line(&self) -> Option<String> {
        serde_json::to_string(self).ok()
    }
}

/// The audit event for one decision. Fields that can carry what a client or a token said
/// (subject, tenant, path, host, request id, detail) are scrubbed; the rest are ours.
/// Which policy decided: its hash and load generation (`config::Snapshot`).
#[derive(Debug, Clone, Copy)]
pub struct Policy<'a> {
    pub hash: &'a str,
    pub generation: u64,
}

pub fn event<'a>(
    input: &'a CheckInput,
    decision: &'a Decision,
    policy: Policy<'a>,
    latency: Duration,
    at: SystemTime,
) -> AuditEvent<'a> {
    let ctx = &decision.context;
    // A dry run is audited as the deny it would have been, marked not enforced.
    let (verdict, reason, detail) = match (&decision.outcome, &ctx.would_deny) {
        (_, Some(d)) => ("deny", d.reason.as_str(), d.detail.as_str()),
        (Outcome::Allow { .. }, None) => ("allow", decision.reason(), ""),
        (Outcome::Deny(d), None) => ("deny", decision.reason(), d.detail.as_str()),
    };
    let path = input.path.split('?').next().unwrap_or_default();
    AuditEvent {
        api_key: ctx.api_key.as_deref(),
        client_ip: ctx.client_ip.or(input.peer_ip),
        credential: ctx.credential_fingerprint,
        decision: verdict,
        detail: outside(detail),
        enforced: ctx.would_deny.is_none(),
        host: outside(&input.host),
        issuer: ctx.issuer.as_deref().map(outside),
        latency_us: latency.as_micros() as u64,
        method: outside(&input.method),
        path: outside(path),
        policy: policy.hash,
        policy_generation: policy.generation,
        reason,
        request_id: outside(&input.request_id),
        rule: ctx.rule.as_deref(),
        subject: ctx.subject.as_ref().map(|s| outside(s.as_str())),
        tenant: ctx.tenant.as_deref().map(outside),
        time: at,
        trace_id: trace_id(input),
    }
}
