//! The sidecar's state stream (`portcullis serve`, `state.stream_socket`): a thread reads it
//! and merges every entry into this Envoy's replica by the state model's one rule, so a
//! revocation, block, member or API key written anywhere in the fleet is enforced here as soon
//! as the sidecar has it. Silence past `stale_after` makes the state stale and the policy's
//! `on_stale` decides.
//!
//! The stream is lines: `E <entry>` (the model's encoding), `S` once the snapshot that opens
//! every connection has been sent (only then is the replica in step), `H` a heartbeat (the
//! sidecar sends one every second).

use portcullis::clock::Clock;
use portcullis::state::local::LocalState;
use portcullis::state::model::Entry;
use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// How often the replica forgets what no longer holds.
const PURGE_EVERY_MS: i64 = 10_000;

/// The reader's shared view: when the sidecar was last heard in step.
pub struct StateLink {
    heard_ms: Arc<AtomicI64>,
    stale_after_ms: i64,
    stop: Arc<AtomicBool>,
}

impl StateLink {
    /// Starts the reader. Until the first snapshot is in, the state is stale.
    pub fn start(path: PathBuf, local: Arc<LocalState>, clock: Arc<dyn Clock>, stale_after: Duration) -> Self {
        let heard_ms = Arc::new(AtomicI64::new(i64::MIN / 2));
        let stop = Arc::new(AtomicBool::new(false));
        let reader = Reader { path, local, clock, heard_ms: heard_ms.clone(), stop: stop.clone() };
        let spawned = std::thread::Builder::new().name("portcullis-state".into()).spawn(move || reader.run());
        if let Err(e) = spawned {
            // No reader: the state stays stale and `on_stale` decides, which is the safe side.
            crate::log_error(&format!("portcullis: cannot start the state reader: {e}"));
        }
        let stale_after_ms = i64::try_from(stale_after.as_millis()).unwrap_or(i64::MAX);
        Self { heard_ms, stale_after_ms, stop }
    }

    pub fn is_stale(&self, now_ms: i64) -> bool {
        now_ms.saturating_sub(self.heard_ms.load(Ordering::Acquire)) > self.stale_after_ms
    }
}

impl Drop for StateLink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

struct Reader {
    path: PathBuf,
    local: Arc<LocalState>,
    clock: Arc<dyn Clock>,
    heard_ms: Arc<AtomicI64>,
    stop: Arc<AtomicBool>,
}

impl Reader {
    fn run(self) {
        let mut backoff = Duration::from_millis(50);
        let mut purged_at = self.clock.now_millis();
        while !self.stop.load(Ordering::Acquire) {
            match UnixStream::connect(&self.path) {
                Ok(stream) => {
                    backoff = Duration::from_millis(50);
                    if let Err(e) = self.follow(stream, &mut purged_at) {
                        crate::log_error(&format!("portcullis: state stream {}: {e}", self.path.display()));
                    }
                }
                Err(e) => {
                    if backoff >= MAX_BACKOFF {
                        crate::log_error(&format!(
                            "portcullis: cannot reach the state stream {}: {e}",
                            self.path.display()
                        ));
                    }
                }
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Reads one connection until it ends, the module is unloaded or a line cannot be read.
    fn follow(&self, stream: UnixStream, purged_at: &mut i64) -> std::io::Result<()> {
        // Wakes the reader to notice an unload even when the sidecar is silent.
        stream.set_read_timeout(Some(Duration::from_millis(500)))?;
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
}
