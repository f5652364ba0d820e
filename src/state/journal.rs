//! Durable fleet state for the memory backend (`state.dir`): every entry is appended to one
//! file, in the model's encoding, and fsync'd before the admin API answers; at start the file
//! is replayed through the model's merge and rewritten with what still holds.

use crate::state::StoreError;
use crate::state::fleet::Persist;
use crate::state::local::LocalState;
use crate::state::model::{Entry, Kind, Lifetimes};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
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
    /// What the journal holds, merged under the journal's lock right after each append, so a
    /// compaction never misses an entry it has already written.
    local: Arc<LocalState>,
    /// Held for the process' life: two processes appending to one file would interleave.
    _lock: File,
}

struct Inner {
    file: File,
    lines: usize,
    /// The length of the file's good prefix: an append that fails is cut back to it.
    len: u64,
    /// A failed append could not be cut back: nothing more is acknowledged.
    broken: bool,
}

/// Owner-only: the journal says who is blocked, revoked and a member.
fn private() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.mode(0o600);
    options
}

fn io(dir: &Path, e: impl std::fmt::Display) -> JournalError {
    JournalError::Io { dir: dir.display().to_string(), why: e.to_string() }
}

impl Journal {
    /// Opens (creating) the journal in `dir`, replays it into `local` and compacts it.
    pub fn open(dir: &Path, local: Arc<LocalState>, now: i64, lifetimes: &dyn Lifetimes) -> Result<Self, JournalError> {
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        let lock = private().create(true).truncate(false).write(true).open(dir.join(LOCK)).map_err(|e| io(dir, e))?;
        lock.try_lock().map_err(|e| io(dir, format!("held by another process ({e})")))?;
        let path = dir.join(FILE);
        let replayed = Self::replay(&path, &local)?;
        let live: Vec<Entry> = local.entries().into_iter().filter(|e| !e.expired(now, lifetimes)).collect();
        let (file, len) = Self::rewrite(dir, &live)?;
        tracing::info!(dir = %dir.display(), replayed, live = live.len(), "fleet state replayed from the journal");
        let inner = Inner { file, lines: live.len(), len, broken: false };
        Ok(Self { dir: dir.to_path_buf(), inner: Arc::new(Mutex::new(inner)), local, _lock: lock })
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

    /// Writes `entries` to a new file, syncs it and moves it in place; returns it (the handle
    /// written through, positioned at its end: the journal from then on) and its length. Any
    /// failure before the rename leaves the old file in force.
    fn rewrite(dir: &Path, entries: &[Entry]) -> Result<(File, u64), JournalError> {
        let tmp = dir.join(format!("{FILE}.tmp"));
        let created = private().create(true).truncate(true).write(true).open(&tmp).map_err(|e| io(dir, e))?;
        let mut out = std::io::BufWriter::new(created);
        for entry in entries {
            writeln!(out, "{}", entry.encode()).map_err(|e| io(dir, e))?;
        }
        let mut file = out.into_inner().map_err(|e| io(dir, e.error()))?;
        file.sync_all().map_err(|e| io(dir, e))?;
        let len = file.stream_position().map_err(|e| io(dir, e))?;
        std::fs::rename(&tmp, dir.join(FILE)).map_err(|e| io(dir, e))?;
        // The rename is done; if the folder cannot be synced a crash may undo it, which leaves
        // the old, longer journal: nothing acknowledged is lost either way.
        if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
            tracing::warn!(dir = %dir.display(), error = %e, "could not sync the state folder after compaction");
        }
        Ok((file, len))
    }

    /// Rewrites the file once it holds far more lines than live entries (session touches).
    /// Under the journal's lock: every appended entry is in `local` by then.
    pub fn compact(&self, now: i64, lifetimes: &dyn Lifetimes) {
        let Ok(mut inner) = self.inner.lock() else { return };
        if inner.broken {
            return;
        }
        let live: Vec<Entry> = self.local.entries().into_iter().filter(|e| !e.expired(now, lifetimes)).collect();
        if inner.lines < live.len().saturating_mul(4).max(live.len() + COMPACT_SLACK) {
            return;
        }
        match Self::rewrite(&self.dir, &live) {
            Ok((file, len)) => *inner = Inner { file, lines: live.len(), len, broken: false },
            Err(e) => tracing::warn!(error = %e, "could not compact the state journal"),
        }
    }
}

/// Appends one line and syncs it (unless `sync` is false); on failure cuts the file back to
/// its good prefix, or marks the journal broken when even that fails.
fn append(inner: &mut Inner, line: &[u8], sync: bool) -> std::io::Result<()> {
    if inner.broken {
        return Err(std::io::Error::other("an earlier write could not be undone; restart to replay"));
    }
    let written = inner.file.write_all(line).and_then(|()| if sync { inner.file.sync_data() } else { Ok(()) });
    match written {
        Ok(()) => {
            inner.len += line.len() as u64;
            inner.lines += 1;
            Ok(())
        }
        Err(e) => {
            let good = inner.len;
            let undone = inner.file.set_len(good).and_then(|()| inner.file.seek(std::io::SeekFrom::Start(good)));
            if undone.is_err() {
                inner.broken = true;
            }
            Err(e)
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

    fn maintain(&self, _local: &LocalState, now: crate::decision::UnixTime, lifetimes: &dyn Lifetimes) {
        if let Self::Journal(journal) = self {
            journal.compact(now.0, lifetimes);
        }
    }
}

#[async_trait::async_trait]
impl Persist for Journal {
    async fn write(&self, entry: Entry, _acknowledged: bool) -> Result<Option<Entry>, StoreError> {
        let (inner, local) = (self.inner.clone(), self.local.clone());
        let line = format!("{}\n", entry.encode());
        // A lost session touch only makes a session look older: not worth an fsync each.
        let sync = entry.kind() != Kind::Session;
        let stored = entry.clone();
        let written = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let mut inner = inner.lock().map_err(|_| std::io::Error::other("journal lock poisoned"))?;
            append(&mut inner, line.as_bytes(), sync)?;
            // Still under the journal's lock: a compaction sees it (see `Journal::local`).
            local.merge(stored);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::model::{Item, Unbounded};
    use crate::state::revocation::{NEVER, Revocation};

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("portcullis-journal-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    /// Compaction keeps every acknowledged entry (written under the journal's lock, so a
    /// compaction's snapshot always holds it) and shrinks the file; a reopen replays it all;
    /// the files are the owner's only.
    #[tokio::test]
    async fn compaction_keeps_what_was_acknowledged() {
        use std::os::unix::fs::PermissionsExt;
        let dir = scratch("compact");
        let local = Arc::new(LocalState::new());
        let journal = Journal::open(&dir, local.clone(), 0, &Unbounded).expect("open");
        for at in 0..(COMPACT_SLACK as i64 + 10) {
            let touch = Item::Session { iss: "i".into(), sid: format!("s{}", at % 3), at };
            journal.write(Entry::new(at * 1000, touch, None), false).await.expect("touch");
        }
        let revoked = Revocation::Jti { iss: "i".into(), jti: "j".into(), expires_at: NEVER };
        journal.write(Entry::revocation(5, revoked, &Unbounded), true).await.expect("revoke");
        let before = std::fs::metadata(dir.join(FILE)).expect("journal").len();
        journal.compact(0, &Unbounded);
        let after = std::fs::metadata(dir.join(FILE)).expect("journal").len();
        assert!(after < before / 100, "{before} → {after} bytes");
        let mode = std::fs::metadata(dir.join(FILE)).expect("journal").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // Appends after a compaction land in the new file.
        let member = Item::Member(crate::state::membership::Member {
            tenant: "t".into(),
            iss: "i".into(),
            sub: "s".into(),
            roles: vec![],
        });
        journal.write(Entry::new(7, member, None), true).await.expect("member");
        drop(journal);
        let reopened = Arc::new(LocalState::new());
        let _journal = Journal::open(&dir, reopened.clone(), 0, &Unbounded).expect("reopen");
        assert_eq!(reopened.len(), 5, "3 sessions, the revocation and the member: {:?}", reopened.entries());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A torn last line (a crash mid-append) is dropped; an unreadable line before others
    /// refuses the start with its line number.
    #[test]
    fn torn_tails_are_dropped_and_corruption_refused() {
        let dir = scratch("torn");
        std::fs::create_dir_all(&dir).expect("dir");
        let good = Entry::new(1, Item::KeyRevocation { name: "n".into(), sha256: "ab".repeat(32) }, None).encode();
        std::fs::write(dir.join(FILE), format!("{good}\n{}", &good[..20])).expect("write");
        let local = Arc::new(LocalState::new());
        drop(Journal::open(&dir, local.clone(), 0, &Unbounded).expect("a torn tail is dropped"));
        assert_eq!(local.len(), 1);
        std::fs::write(dir.join(FILE), format!("garbage\n{good}\n")).expect("write");
        let refused = Journal::open(&dir, Arc::new(LocalState::new()), 0, &Unbounded).err().map(|e| e.to_string());
        assert!(refused.is_some_and(|e| e.contains(":1: unreadable entry")));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
