//! The sidecar's state stream (`portcullis serve`, `listen.state_stream`; the line grammar is
//! in `src/server/stream.rs`). A reader thread merges every entry into this Envoy's replica by
//! the state model's one rule and installs the remote issuers' key sets, so a revocation, block,
//! member, API key or key rotation anywhere in the fleet is enforced here as soon as the sidecar
//! has it. Freshness comes from the sidecar's heartbeat only: `H` (in step with the fleet) every
//! second, `X` when the sidecar's own state is stale; silence past `stale_after` or an `X`
//! makes the state stale and the policy's `on_stale` decides.
//!
//! Writer threads send back audit lines (their own queue, so a flood of bad tokens cannot crowd
//! out the audit), invalid-credential counts and refetch requests, never making a request wait:
//! what cannot be sent is dropped and counted (logged every thousand). The socket's file mode
//! is the access control on both ends (the sidecar shares the pod).

use arc_swap::ArcSwap;
use portcullis::clock::Clock;
use portcullis::config::Snapshot;
use portcullis::state::local::LocalState;
use portcullis::state::model::Entry;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// How often the replica forgets what no longer holds.
const PURGE_EVERY_MS: i64 = 10_000;
/// Audit lines waiting to go to the sidecar; past it they are dropped.
const AUDIT_LINES: usize = 8192;
/// Failure counts and refetch requests waiting; past it they are dropped.
const CONTROL_LINES: usize = 1024;
/// Longest line the sidecar may send (a key set is within the fetcher's JWKS bound).
const MAX_LINE: usize = 2 << 20;
/// One refetch request per issuer per this long (the sidecar's fetcher has its own cooldown).
const REFETCH_EVERY_MS: i64 = 1_000;
/// "Never heard in step": stale, and nothing fleet-wide is known yet.
const NEVER: i64 = i64::MIN / 2;
/// Heard as stale (`X`): stale at once, but a snapshot has been merged.
const STALE: i64 = i64::MIN / 4;

/// This Envoy's end of the stream.
pub struct StateLink {
    heard_ms: Arc<AtomicI64>,
    stale_after_ms: i64,
    stop: Arc<AtomicBool>,
    control: SyncSender<String>,
    audit: SyncSender<String>,
    dropped: Arc<AtomicU64>,
    /// When a refetch was last asked for, per issuer.
    refetches: Mutex<HashMap<String, i64>>,
    clock: Arc<dyn Clock>,
    pub keys: Arc<KeyBook>,
}

/// The latest key set the sidecar sent for each remote issuer. A policy reload and a key-set
/// line both go through its lock, so a new policy never starts with keys older than the newest
/// sent (`Engine::replace_snapshot`).
#[derive(Default)]
pub struct KeyBook {
    latest: Mutex<HashMap<String, Option<Arc<String>>>>,
}

impl KeyBook {
    /// Records `jwks` (None: the issuer has no keys) for `issuer` and installs it in the
    /// snapshot in force.
    fn record(&self, issuer: String, jwks: Option<Arc<String>>, snapshot: &ArcSwap<Snapshot>, now: i64) {
        let Ok(mut latest) = self.latest.lock() else { return };
        install(&snapshot.load(), &issuer, jwks.as_deref().map(String::as_str), now);
        latest.insert(issuer, jwks);
    }

    /// Installs every recorded key set in `next`, then puts `next` in force; a key-set line
    /// waits for both.
    pub fn swap_in(&self, next: Arc<Snapshot>, snapshot: &ArcSwap<Snapshot>, now: i64) {
        let Ok(latest) = self.latest.lock() else { return };
        for (issuer, jwks) in latest.iter() {
            install(&next, issuer, jwks.as_deref().map(String::as_str), now);
        }
        snapshot.store(next);
    }
}

/// What the reader and writer threads share.
struct Shared {
    path: PathBuf,
    local: Arc<LocalState>,
    snapshot: Arc<ArcSwap<Snapshot>>,
    clock: Arc<dyn Clock>,
    heard_ms: Arc<AtomicI64>,
    stop: Arc<AtomicBool>,
    /// The connection the writers send on (set by the reader when it connects).
    connection: Mutex<Option<UnixStream>>,
    dropped: Arc<AtomicU64>,
    keys: Arc<KeyBook>,
}

impl StateLink {
    /// Starts the reader and the writers. Until the first snapshot is in, the state is stale.
    pub fn start(
        path: PathBuf,
        local: Arc<LocalState>,
        snapshot: Arc<ArcSwap<Snapshot>>,
        clock: Arc<dyn Clock>,
        stale_after: Duration,
    ) -> Self {
        let heard_ms = Arc::new(AtomicI64::new(NEVER));
        let stop = Arc::new(AtomicBool::new(false));
        let dropped = Arc::new(AtomicU64::new(0));
        let keys = Arc::new(KeyBook::default());
        let (control, control_lines) = std::sync::mpsc::sync_channel(CONTROL_LINES);
        let (audit, audit_lines) = std::sync::mpsc::sync_channel(AUDIT_LINES);
        let shared = Arc::new(Shared {
            path,
            local,
            snapshot,
            clock: clock.clone(),
            heard_ms: heard_ms.clone(),
            stop: stop.clone(),
            connection: Mutex::new(None),
            dropped: dropped.clone(),
            keys: keys.clone(),
        });
        let (reader, sender, auditor) = (shared.clone(), shared.clone(), shared);
        let spawn =
            |name: &str, run: Box<dyn FnOnce() + Send>| std::thread::Builder::new().name(name.into()).spawn(run);
        let started = spawn("portcullis-state", Box::new(move || reader.read()))
            .and_then(|_| spawn("portcullis-send", Box::new(move || sender.send(control_lines))))
            .and_then(|_| spawn("portcullis-audit", Box::new(move || auditor.send(audit_lines))));
        if let Err(e) = started {
            // No reader: the state stays stale and `on_stale` decides, which is the safe side.
            crate::log_error(&format!("portcullis: cannot start the state stream threads: {e}"));
        }
        let stale_after_ms = i64::try_from(stale_after.as_millis()).unwrap_or(i64::MAX);
        Self { heard_ms, stale_after_ms, stop, control, audit, dropped, refetches: Mutex::default(), clock, keys }
    }

    pub fn is_stale(&self, now_ms: i64) -> bool {
        now_ms.saturating_sub(self.heard_ms.load(Ordering::Acquire)) > self.stale_after_ms
    }

    /// No snapshot from the sidecar since the module loaded: nothing fleet-wide is known.
    pub fn never_synced(&self) -> bool {
        self.heard_ms.load(Ordering::Acquire) == NEVER
    }

    /// Queues one control line (`F`, `R`) for the sidecar; never waits.
    pub fn send(&self, line: String) {
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = self.control.try_send(line) {
            count_drop(&self.dropped);
        }
    }

    /// Asks the sidecar to refetch `issuer`'s keys, at most once a second per issuer.
    pub fn ask_refetch(&self, issuer: &str) {
        let now = self.clock.now_millis();
        let Ok(mut asked) = self.refetches.lock() else { return };
        if asked.get(issuer).is_some_and(|at| now - at < REFETCH_EVERY_MS) {
            return;
        }
        if asked.len() > 1024 {
            asked.clear();
        }
        asked.insert(issuer.to_string(), now);
        drop(asked);
        self.send(format!("R {issuer}"));
    }

    /// A writer for the audit sink: each line it is given goes to the sidecar as `A <line>`.
    pub fn audit_writer(&self) -> AuditToSidecar {
        AuditToSidecar { outgoing: self.audit.clone(), dropped: self.dropped.clone(), partial: Vec::new() }
    }
}

impl Drop for StateLink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

fn count_drop(dropped: &AtomicU64) {
    let n = dropped.fetch_add(1, Ordering::Relaxed) + 1;
    if n == 1 || n.is_multiple_of(1000) {
        crate::log_error(&format!("portcullis: {n} lines for the sidecar dropped (queue full or no connection)"));
    }
}

/// The audit sink's output when a sidecar is configured.
pub struct AuditToSidecar {
    outgoing: SyncSender<String>,
    dropped: Arc<AtomicU64>,
    partial: Vec<u8>,
}

impl Write for AuditToSidecar {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.partial.extend_from_slice(buf);
        while let Some(end) = self.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            let text = String::from_utf8_lossy(&line[..line.len() - 1]);
            if self.outgoing.try_send(format!("A {text}")).is_err() {
                count_drop(&self.dropped);
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Shared {
    fn read(self: Arc<Self>) {
        let mut backoff = Duration::from_millis(50);
        let mut purged_at = self.clock.now_millis();
        let mut reported = false;
        while !self.stop.load(Ordering::Acquire) {
            match UnixStream::connect(&self.path) {
                Ok(stream) => {
                    backoff = Duration::from_millis(50);
                    reported = false;
                    if let Err(e) = self.follow(stream, &mut purged_at) {
                        crate::log_error(&format!("portcullis: state stream {}: {e}", self.path.display()));
                    }
                    self.set_connection(None);
                }
                Err(e) if !reported => {
                    reported = true;
                    crate::log_error(&format!(
                        "portcullis: cannot reach the state stream {}: {e}",
                        self.path.display()
                    ));
                }
                Err(_) => {}
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    fn set_connection(&self, stream: Option<UnixStream>) {
        if let Ok(mut held) = self.connection.lock() {
            *held = stream;
        }
    }

    /// Reads one connection until it ends, the module is unloaded or a line cannot be read.
    fn follow(&self, stream: UnixStream, purged_at: &mut i64) -> std::io::Result<()> {
        // Wakes the reader to notice an unload even when the sidecar is silent.
        stream.set_read_timeout(Some(Duration::from_millis(500)))?;
        let writer = stream.try_clone()?;
        writer.set_write_timeout(Some(Duration::from_secs(1)))?;
        self.set_connection(Some(writer));
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        let mut in_step = false;
        loop {
            if self.stop.load(Ordering::Acquire) {
                return Ok(());
            }
            let room = (MAX_LINE + 1).saturating_sub(line.len()) as u64;
            match (&mut reader).take(room).read_line(&mut line) {
                Ok(_) if line.len() > MAX_LINE => return Err(std::io::Error::other("a line past 2 MiB")),
                Ok(0) => return Err(std::io::Error::other("the sidecar closed the stream")),
                Ok(_) if line.ends_with('\n') => {}
                Ok(_) => continue,
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => continue,
                Err(e) => return Err(e),
            }
            let now = self.clock.now_millis();
            match line.trim_end_matches('\n') {
                "S" => in_step = true,
                // The sidecar in step with the fleet: fresh until `stale_after` passes without one.
                "H" if in_step => self.heard_ms.store(now, Ordering::Release),
                "H" => {}
                // The sidecar's own state is stale (its Redis unreachable): so is this replica.
                "X" if in_step => self.heard_ms.store(STALE, Ordering::Release),
                "X" => {}
                text if text.starts_with("E ") => {
                    let entry = Entry::decode(&text[2..]).map_err(std::io::Error::other)?;
                    self.local.merge(entry);
                }
                text if text.starts_with("K ") => self.install_keys(&text[2..])?,
                other => {
                    let shown = other.get(..40).unwrap_or(other);
                    return Err(std::io::Error::other(format!("unexpected line {shown:?}")));
                }
            }
            line.clear();
            if now - *purged_at > PURGE_EVERY_MS {
                *purged_at = now;
                self.local.purge(self.clock.now(), self.local.lifetimes());
            }
        }
    }

    /// A remote issuer's key set, parsed as the sidecar's fetcher parses a JWKS.
    fn install_keys(&self, text: &str) -> std::io::Result<()> {
        #[derive(serde::Deserialize)]
        struct Keys {
            issuer: String,
            jwks: Option<serde_json::Value>,
        }
        let keys: Keys = serde_json::from_str(text).map_err(std::io::Error::other)?;
        let jwks = keys.jwks.map(|v| Arc::new(v.to_string()));
        self.keys.record(keys.issuer, jwks, &self.snapshot, self.clock.now().0);
        Ok(())
    }

    /// Sends queued lines on the current connection; without one they are dropped.
    fn send(self: Arc<Self>, lines: Receiver<String>) {
        while !self.stop.load(Ordering::Acquire) {
            let Ok(line) = lines.recv_timeout(Duration::from_millis(500)) else { continue };
            let sent = match self.connection.lock() {
                Ok(mut held) => match held.as_mut() {
                    Some(stream) => writeln!(stream, "{line}").is_ok(),
                    None => false,
                },
                Err(_) => false,
            };
            if !sent {
                count_drop(&self.dropped);
            }
        }
    }
}

/// Installs `jwks` (None: no keys) for `issuer` in `snapshot`'s verifier: only in a remote
/// issuer's store (keys the policy pins in a file are never replaced from the stream). A key set
/// the parser refuses leaves the issuer without keys (its tokens get 503 keys_unavailable),
/// never with the keys it had.
fn install(snapshot: &Snapshot, issuer: &str, jwks: Option<&str>, now: i64) {
    let Some(store) = snapshot.verifier.find(issuer).and_then(|(id, _)| snapshot.verifier.store(id)) else { return };
    if !store.is_remote() {
        return;
    }
    let Some(jwks) = jwks else { return store.expire() };
    match portcullis::jwt::keys_from_remote_jwks(jwks) {
        Ok((keys, _skipped)) if !keys.keys.is_empty() => store.replace_from(keys, Arc::new(jwks.to_string()), now),
        Ok(_) => {
            crate::log_error(&format!("portcullis: the sidecar sent an empty key set for {issuer}"));
            store.expire();
        }
        Err(e) => {
            crate::log_error(&format!("portcullis: the sidecar sent an unusable key set for {issuer}: {e}"));
            store.expire();
        }
    }
}
