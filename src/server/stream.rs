//! `listen.state_stream`: this replica's fleet state for Envoys deciding with the dynamic
//! module (crates/portcullis-envoy, `link.rs`), and what the modules send back.
//!
//! To the module, lines: `E <entry>` for every entry the replica holds, the key set of every
//! remote issuer (`K {"issuer":…,"jwks":…}`, `jwks` null when the issuer has none), then `S`;
//! after that every entry that wins a merge here (admin API, Redis follower, journal,
//! auto-block) and every key-set change as it happens, and every second `H` while this replica
//! is in step with the fleet or `X` while its own state is stale or not yet synced (the module
//! is then stale too: `on_stale` decides there as here). A reader that
//! falls behind the change backlog gets a fresh snapshot (entries merge idempotently by the
//! state model's rule, so a repeat is harmless); one that stops reading is dropped after
//! [`WRITE_WAIT`].
//!
//! From the module: `A <json>` an audit line (written to this process' audit sink, marked
//! `"via":"envoy-module"`), `F <client>` an invalid credential (counted toward auto-block here and
//! in the fleet; only a client key Portcullis itself makes: one address, or an IPv6 /64),
//! `R <issuer>` a token named a key its remote issuer lacks (a refetch is asked for). The
//! socket's file mode says who may connect (`listen.socket`).

use super::authz::AppState;
use crate::state::local::LocalState;
use crate::state::model::Entry;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::broadcast::error::RecvError;

/// Readers at once; more are closed at accept (each holds a snapshot while it is written).
pub const MAX_READERS: usize = 64;
const HEARTBEAT: Duration = Duration::from_secs(1);
/// How often key sets are compared with what a reader was sent (a rotation reaches the modules
/// within it; an unknown `kid` asks for the refetch that makes one).
const KEY_CHECK: Duration = Duration::from_millis(100);
/// Longest one write may wait on a reader.
const WRITE_WAIT: Duration = Duration::from_secs(5);
/// Longest line a module may send (an audit line is well under it).
const MAX_LINE: u64 = 64 * 1024;

/// Serves readers until `stop` says so.
pub async fn serve(
    listener: UnixListener,
    local: Arc<LocalState>,
    app: Arc<AppState>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_READERS));
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    tracing::warn!(max = MAX_READERS, "state stream: too many readers; connection closed");
                    continue;
                };
                let (local, app, stop) = (local.clone(), app.clone(), stop.clone());
                tokio::spawn(async move {
                    connection(stream, local, app, stop).await;
                    drop(slot);
                });
            }
            _ = stop.changed() => return,
        }
    }
}

async fn connection(
    stream: UnixStream,
    local: Arc<LocalState>,
    app: Arc<AppState>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let (read, write) = stream.into_split();
    let from_module = tokio::spawn(read_module(read, app.clone()));
    if let Err(e) = follow(write, local, app, stop).await {
        tracing::info!(error = %e, "state stream reader gone");
    }
    from_module.abort();
}

/// What a module sends back, line by line, until it closes or sends a line past [`MAX_LINE`].
async fn read_module(read: OwnedReadHalf, app: Arc<AppState>) {
    let mut lines = BufReader::new(read);
    let mut line = Vec::new();
    loop {
        line.clear();
        match (&mut lines).take(MAX_LINE).read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) if line.last() != Some(&b'\n') => {
                tracing::warn!("state stream: a module sent a line past 64 KiB; connection closed");
                return;
            }
            Ok(_) => {}
        }
        let Ok(text) = std::str::from_utf8(&line[..line.len() - 1]) else { continue };
        match text.split_once(' ') {
            Some(("A", audit)) => app.audit.record_forwarded(audit, "envoy-module"),
            Some(("F", client)) => {
                let rule = app.snapshot.load().policy.ip.auto_block;
                if let (Some(rule), true) = (rule, is_client_key(client)) {
                    app.count_failure_of(client.to_string(), rule).await;
                }
            }
            Some(("R", issuer)) => {
                let snapshot = app.snapshot.load();
                if let Some(store) = snapshot.verifier.find(issuer).and_then(|(id, _)| snapshot.verifier.store(id)) {
                    store.request_refetch(app.clock.now_millis());
                }
            }
            _ => tracing::debug!("state stream: unknown line from a module"),
        }
    }
}

/// A client key as `client_key` makes it (one address, or an IPv6 /64), never a wider network:
/// a module must not get `0.0.0.0/0` blocked.
fn is_client_key(text: &str) -> bool {
    let address = text.strip_suffix("/64").unwrap_or(text);
    address.parse::<std::net::IpAddr>().is_ok_and(|ip| crate::decision::client_key(ip) == text)
}

/// `H` while this replica is in step with the fleet, `X` while its state is stale or not yet
/// synced (memory state is always in step).
fn heartbeat_line(app: &AppState) -> &'static str {
    let now = app.clock.now_millis();
    match &app.state_health {
        Some(health) if !health.synced() || health.is_stale(now) => "X",
        _ => "H",
    }
}

async fn write_line(out: &mut BufWriter<OwnedWriteHalf>, line: &str) -> std::io::Result<()> {
    let write = async {
        out.write_all(line.as_bytes()).await?;
        out.write_all(b"\n").await
    };
    tokio::time::timeout(WRITE_WAIT, write).await.map_err(|_| std::io::Error::other("reader too slow"))?
}

async fn flush(out: &mut BufWriter<OwnedWriteHalf>) -> std::io::Result<()> {
    tokio::time::timeout(WRITE_WAIT, out.flush()).await.map_err(|_| std::io::Error::other("reader too slow"))?
}

fn entry_line(entry: &Entry) -> String {
    format!("E {}", entry.encode())
}

/// The `K` lines for every remote issuer whose key set differs from what `sent` holds.
fn key_lines(app: &AppState, sent: &mut HashMap<Arc<str>, u64>) -> Vec<String> {
    let snapshot = app.snapshot.load();
    let mut lines = Vec::new();
    for issuer in &snapshot.verifier.issuers {
        let store = &issuer.keys;
        if !store.is_remote() {
            continue;
        }
        let generation = store.generation();
        if sent.get(&issuer.issuer) == Some(&generation) {
            continue;
        }
        sent.insert(issuer.issuer.clone(), generation);
        let jwks = store.source().and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok());
        let line = serde_json::json!({ "issuer": issuer.issuer.as_ref(), "jwks": jwks });
        lines.push(format!("K {line}"));
    }
    lines
}

async fn follow(
    write: OwnedWriteHalf,
    local: Arc<LocalState>,
    app: Arc<AppState>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    let mut out = BufWriter::new(write);
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    let mut key_check = tokio::time::interval(KEY_CHECK);
    loop {
        let (snapshot, mut changes) = local.subscribe_with_snapshot();
        for entry in &snapshot {
            write_line(&mut out, &entry_line(entry)).await?;
        }
        drop(snapshot);
        let mut sent = HashMap::new();
        for line in key_lines(&app, &mut sent) {
            write_line(&mut out, &line).await?;
        }
        write_line(&mut out, "S").await?;
        write_line(&mut out, heartbeat_line(&app)).await?;
        flush(&mut out).await?;
        loop {
            tokio::select! {
                change = changes.recv() => match change {
                    Ok(entry) => {
                        write_line(&mut out, &entry_line(&entry)).await?;
                        flush(&mut out).await?;
                    }
                    Err(RecvError::Lagged(_)) => break,
                    Err(RecvError::Closed) => return Ok(()),
                },
                _ = key_check.tick() => {
                    let lines = key_lines(&app, &mut sent);
                    for line in &lines {
                        write_line(&mut out, line).await?;
                    }
                    if !lines.is_empty() {
                        flush(&mut out).await?;
                    }
                }
                _ = heartbeat.tick() => {
                    write_line(&mut out, heartbeat_line(&app)).await?;
                    flush(&mut out).await?;
                }
                _ = stop.changed() => return Ok(()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_client_keys_portcullis_makes_are_counted() {
        for ok in ["10.1.2.3", "2001:db8:1:2::/64"] {
            assert!(super::is_client_key(ok), "{ok}");
        }
        for refused in ["0.0.0.0/0", "10.0.0.0/8", "2001:db8:1:2::5", "2001:db8::/32", "x", "10.1.2.3/32", ""] {
            assert!(!super::is_client_key(refused), "{refused}");
        }
    }
}
