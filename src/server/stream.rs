//! `listen.state_stream`: this replica's fleet state for Envoys deciding with the dynamic
//! module (crates/portcullis-envoy, `link.rs`). Each connection gets every entry the replica
//! holds, then `S`, then every entry that wins a merge here (admin API, Redis follower, journal,
//! auto-block) as it happens, and `H` every second. A reader that falls behind the change
//! backlog gets a fresh snapshot (entries merge idempotently by the state model's rule, so a
//! repeat is harmless); one that stops reading is dropped after [`WRITE_WAIT`].

use crate::state::local::LocalState;
use crate::state::model::Entry;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::broadcast::error::RecvError;

/// Readers at once; more are closed at accept (each holds a snapshot while it is written).
pub const MAX_READERS: usize = 64;
const HEARTBEAT: Duration = Duration::from_secs(1);
/// Longest one write may wait on a reader.
const WRITE_WAIT: Duration = Duration::from_secs(5);

/// Serves readers until `stop` says so.
pub async fn serve(listener: UnixListener, local: Arc<LocalState>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_READERS));
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    tracing::warn!(max = MAX_READERS, "state stream: too many readers; connection closed");
                    continue;
                };
                let (local, stop) = (local.clone(), stop.clone());
                tokio::spawn(async move {
                    if let Err(e) = follow(stream, local, stop).await {
                        tracing::info!(error = %e, "state stream reader gone");
                    }
                    drop(slot);
                });
            }
            _ = stop.changed() => return,
        }
    }
}

async fn write_line(out: &mut BufWriter<UnixStream>, line: &str) -> std::io::Result<()> {
    let write = async {
        out.write_all(line.as_bytes()).await?;
        out.write_all(b"\n").await
    };
    tokio::time::timeout(WRITE_WAIT, write).await.map_err(|_| std::io::Error::other("reader too slow"))?
}

async fn flush(out: &mut BufWriter<UnixStream>) -> std::io::Result<()> {
    tokio::time::timeout(WRITE_WAIT, out.flush()).await.map_err(|_| std::io::Error::other("reader too slow"))?
}

fn entry_line(entry: &Entry) -> String {
    format!("E {}", entry.encode())
}

async fn follow(
    stream: UnixStream,
    local: Arc<LocalState>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    let mut out = BufWriter::new(stream);
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    loop {
        let (snapshot, mut changes) = local.subscribe_with_snapshot();
        for entry in &snapshot {
            write_line(&mut out, &entry_line(entry)).await?;
        }
        drop(snapshot);
        write_line(&mut out, "S").await?;
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
                _ = heartbeat.tick() => {
                    write_line(&mut out, "H").await?;
                    flush(&mut out).await?;
                }
                _ = stop.changed() => return Ok(()),
            }
        }
    }
}
