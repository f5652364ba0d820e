//! Durable fleet state for the memory backend (`state.dir`): every entry is appended to one
//! file, in the model's encoding, and fsync'd before the admin API answers; at start the file
//! is replayed through the model's merge and rewritten with what still holds.

use crate::state::StoreError;
use crate::state::fleet::Persist;
use crate::state::local::LocalState;
use crate::state::model::{Entry, Kind, Lifetimes};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

const FILE: &str = "fleet-state.journal";
const LOCK: &str = "fleet-state.lock";

/// Compaction runs when the file holds this many more lines than live entries (and 4x them).
const COMPACT_SLACK: usize = 10_000;

/// Why the journal could not be opened or replayed.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("state.dir {dir}: {why}")]
    Io { dir: String, why: String },
    #[error("state.dir {file}:{line}: unreadable entry ({why}); move the file aside to start without it")]
    Corrupt { file: String, line: usize, why: String },
}

pub struct Journal {
    dir: PathBuf,
    inner: Arc<Mutex<Inner>>,
    /// Held for the process' life: two processes appending to one file would interleave.
    _lock: File,
}

struct Inner {
    file: File,
    lines: usize,
}

fn io(dir: &Path, e: impl std::fmt::Display) -> JournalError {
    JournalError::Io { dir: dir.display().to_string(), why: e.to_string() }
}

impl Journal {
    /// Opens (creating) the journal in `dir`, replays it into `local` and compacts it.
    pub fn open(dir: &Path, local: &LocalState, now: i64, lifetimes: &dyn Lifetimes) -> Result<Self, JournalError> {
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        let lock =
            OpenOptions::new().create(true).truncate(false).write(true).open(dir.join(LOCK)).map_err(|e| io(dir, e))?;
        lock.try_lock().map_err(|e| io(dir, format!("held by another process ({e})")))?;
        let path = dir.join(FILE);
        let replayed = Self::replay(&path, local)?;
        let live: Vec<Entry> = local.entries().into_iter().filter(|e| !e.expired(now, lifetimes)).collect();
        let file = Self::rewrite(dir, &live)?;
        tracing::info!(dir = %dir.display(), replayed, live = live.len(), "fleet state replayed from the journal");
        Ok(Self { dir: dir.to_path_buf(), inner: Arc::new(Mutex::new(Inner { file, lines: live.len() })), _lock: lock })
    }

    /// Merges every line; a torn last line (a crash mid-append) is dropped, any other
    /// unreadable line refuses the start (what follows it may depend on it).
    fn replay(path: &Path, local: &LocalState) -> Result<usize, JournalError> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(io(path, e)),
        };
        let lines: Vec<Vec<u8>> =
            BufReader::new(file).split(b'\n').collect::<Result<_, _>>().map_err(|e| io(path, e))?;
        let count = lines.len();
        for (n, line) in lines.into_iter().enumerate() {
            let text = String::from_utf8_lossy(&line);
            match Entry::decode(&text) {
                Ok(entry) => {
                    local.merge(entry);
                }
                Err(_) if n + 1 == count => {
                    tracing::warn!(file = %path.display(), line = n + 1, "dropping a torn last journal line");
                }
                Err(why) => {
                    return Err(JournalError::Corrupt { file: path.display().to_string(), line: n + 1, why });
                }
            }
        }
        Ok(count)
    }

    /// Writes `entries` to a new file, syncs it and moves it in place; returns it open for
    /// appending.
    fn rewrite(dir: &Path, entries: &[Entry]) -> Result<File, JournalError> {
        let tmp = dir.join(format!("{FILE}.tmp"));
        let mut out = std::io::BufWriter::new(File::create(&tmp).map_err(|e| io(dir, e))?);
        for entry in entries {
            writeln!(out, "{}", entry.encode()).map_err(|e| io(dir, e))?;
        }
        let file = out.into_inner().map_err(|e| io(dir, e.error()))?;
        file.sync_all().map_err(|e| io(dir, e))?;
        std::fs::rename(&tmp, dir.join(FILE)).map_err(|e| io(dir, e))?;
        File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io(dir, e))?;
        OpenOptions::new().append(true).open(dir.join(FILE)).map_err(|e| io(dir, e))
    }

    /// Rewrites the file once it holds far more lines than live entries (session touches).
    pub fn compact(&self, local: &LocalState, now: i64, lifetimes: &dyn Lifetimes) {
        let Ok(mut inner) = self.inner.lock() else { return };
        let live: Vec<Entry> = local.entries().into_iter().filter(|e| !e.expired(now, lifetimes)).collect();
        if inner.lines < live.len().saturating_mul(4).max(live.len() + COMPACT_SLACK) {
            return;
        }
        match Self::rewrite(&self.dir, &live) {
            Ok(file) => *inner = Inner { file, lines: live.len() },
            Err(e) => tracing::warn!(error = %e, "could not compact the state journal"),
        }
    }
}

/// The memory backend's persistence: a journal under `state.dir`, or none when the policy
/// acknowledged that run-time state ends with the process.
pub enum MemoryPersist {
    Ephemeral,
    Journal(Journal),
}

#[async_trait::async_trait]
impl Persist for MemoryPersist {
    async fn write(&self, entry: Entry, acknowledged: bool) -> Result<Option<Entry>, StoreError> {
        match self {
            Self::Ephemeral => Ok(Some(entry)),
            Self::Journal(journal) => journal.write(entry, acknowledged).await,
        }
    }

    fn maintain(&self, local: &LocalState, now: crate::decision::UnixTime, lifetimes: &dyn Lifetimes) {
        if let Self::Journal(journal) = self {
            journal.compact(local, now.0, lifetimes);
        }
    }
}

#[async_trait::async_trait]
impl Persist for Journal {
    async fn write(&self, entry: Entry, _acknowledged: bool) -> Result<Option<Entry>, StoreError> {
        let inner = self.inner.clone();
        let line = format!("{}\n", entry.encode());
        // A lost session touch only makes a session look older: not worth an fsync each.
        let sync = entry.kind() != Kind::Session;
        let written = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let mut inner = inner.lock().map_err(|_| std::io::Error::other("journal lock poisoned"))?;
            inner.file.write_all(line.as_bytes())?;
            if sync {
                inner.file.sync_data()?;
            }
            inner.lines += 1;
            Ok(())
        })
        .await;
        match written {
            Ok(Ok(())) => Ok(Some(entry)),
            Ok(Err(e)) => Err(StoreError::Unavailable(format!("state journal: {e}"))),
            Err(e) => Err(StoreError::Unavailable(format!("state journal: {e}"))),
        }
    }
}
