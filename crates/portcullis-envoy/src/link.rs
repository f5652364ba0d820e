//! The sidecar's state stream (`portcullis serve`, `listen.state_stream`; the line grammar is
//! in `src/server/stream.rs`). A reader thread merges every entry into this Envoy's replica by
//! the state model's one rule and installs the remote issuers' key sets, so a revocation, block,
//! member, API key or key rotation anywhere in the fleet is enforced here as soon as the sidecar
//! has it. Silence past `stale_after` makes the state stale and the policy's `on_stale` decides.
//! A writer thread sends back audit lines, invalid-credential counts and refetch requests,
//! never making a request wait: what cannot be sent is dropped and counted.

use arc_swap::ArcSwap;
use portcullis::clock::Clock;
use portcullis::config::Snapshot;
use portcullis::state::local::LocalState;
use portcullis::state::model::Entry;
use std::io::{BufRead, BufReader, Write};
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
/// Lines waiting to go to the sidecar; past it they are dropped.
const OUTGOING_LINES: usize = 8192;

/// This Envoy's end of the stream.
pub struct StateLink {
    heard_ms: Arc<AtomicI64>,
    stale_after_ms: i64,
    stop: Arc<AtomicBool>,
    outgoing: SyncSender<String>,
    dropped: Arc<AtomicU64>,
}

/// What the reader and writer threads share.
struct Shared {
    path: PathBuf,
    local: Arc<LocalState>,
    snapshot: Arc<ArcSwap<Snapshot>>,
    clock: Arc<dyn Clock>,
    heard_ms: Arc<AtomicI64>,
    stop: Arc<AtomicBool>,
    /// The connection the writer sends on (set by the reader when it connects).
    connection: Mutex<Option<UnixStream>>,
    dropped: Arc<AtomicU64>,
}

impl StateLink {
    /// Starts the reader and the writer. Until the first snapshot is in, the state is stale.
    pub fn start(
        path: PathBuf,
        local: Arc<LocalState>,
        snapshot: Arc<ArcSwap<Snapshot>>,
        clock: Arc<dyn Clock>,
        stale_after: Duration,
    ) -> Self {
        let heard_ms = Arc::new(AtomicI64::new(i64::MIN / 2));
        let stop = Arc::new(AtomicBool::new(false));
        let dropped = Arc::new(AtomicU64::new(0));
        let (outgoing, lines) = std::sync::mpsc::sync_channel(OUTGOING_LINES);
        let shared = Arc::new(Shared {
            path,
            local,
            snapshot,
            clock,
            heard_ms: heard_ms.clone(),
            stop: stop.clone(),
            connection: Mutex::new(None),
            dropped: dropped.clone(),
        });
        let reader = shared.clone();
        let started = std::thread::Builder::new()
            .name("portcullis-state".into())
            .spawn(move || reader.read())
            .and_then(|_| std::thread::Builder::new().name("portcullis-send".into()).spawn(move || shared.send(lines)));
        if let Err(e) = started {
            // No reader: the state stays stale and `on_stale` decides, which is the safe side.
            crate::log_error(&format!("portcullis: cannot start the state stream threads: {e}"));
        }
        let stale_after_ms = i64::try_from(stale_after.as_millis()).unwrap_or(i64::MAX);
        Self { heard_ms, stale_after_ms, stop, outgoing, dropped }
    }

    pub fn is_stale(&self, now_ms: i64) -> bool {
        now_ms.saturating_sub(self.heard_ms.load(Ordering::Acquire)) > self.stale_after_ms
    }

    /// Queues one line for the sidecar; never waits.
    pub fn send(&self, line: String) {
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = self.outgoing.try_send(line) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A writer for the audit sink: each line it is given goes to the sidecar as `A <line>`.
    pub fn audit_writer(&self) -> AuditToSidecar {
        AuditToSidecar { outgoing: self.outgoing.clone(), dropped: self.dropped.clone(), partial: Vec::new() }
    }
}

impl Drop for StateLink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
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
                self.dropped.fetch_add(1, Ordering::Relaxed);
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
            match reader.read_line(&mut line) {
                Ok(0) => return Err(std::io::Error::other("the sidecar closed the stream")),
                Ok(_) if line.ends_with('\n') => {}
                Ok(_) => continue,
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => continue,
                Err(e) => return Err(e),
            }
            let now = self.clock.now_millis();
            match line.trim_end_matches('\n') {
                "S" => in_step = true,
                "H" => {}
                text if text.starts_with("E ") => {
                    let entry = Entry::decode(&text[2..]).map_err(std::io::Error::other)?;
                    self.local.merge(entry);
                }
                text if text.starts_with("K ") => self.install_keys(&text[2..])?,
                other => {
                    return Err(std::io::Error::other(format!(
                        "unexpected line {:?}",
                        other.get(..40).unwrap_or(other)
                    )));
                }
            }
            line.clear();
            if in_step {
                self.heard_ms.store(now, Ordering::Release);
            }
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
        let snapshot = self.snapshot.load();
        let Some(store) = snapshot.verifier.find(&keys.issuer).and_then(|(id, _)| snapshot.verifier.store(id)) else {
            return Ok(()); // an issuer this policy does not have (the sidecar's policy differs)
        };
        match keys.jwks {
            None => store.expire(),
            Some(jwks) => install(store, &jwks.to_string(), self.clock.now().0),
        }
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
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Installs a JWKS document in `store`; one the parser refuses leaves the store as it was.
pub fn install(store: &portcullis::jwt::KeyStore, jwks: &str, now: i64) {
    match portcullis::jwt::keys_from_remote_jwks(jwks) {
        Ok((keys, _skipped)) if !keys.keys.is_empty() => store.replace_from(keys, Arc::new(jwks.to_string()), now),
        Ok(_) => crate::log_error("portcullis: the sidecar sent an empty key set; keys unchanged"),
        Err(e) => crate::log_error(&format!("portcullis: the sidecar sent an unusable key set: {e}")),
    }
}
