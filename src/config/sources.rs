//! What a policy was read from, fingerprinted for hot reload (the server's `reload.rs` and the
//! Envoy module's policy watcher): a change is a change of content, not of modification time.
//!
//! A loaded policy's fingerprints are the digests of the bytes the load itself read (and of the
//! file lists its patterns matched), never a second read afterwards: an edit that lands while a
//! load runs is then a change at the next poll, not a change the watcher already believes it has.

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// One watched file, or `include` pattern, and the digest of what was read (`None`: unreadable).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fingerprint {
    pub path: PathBuf,
    /// A pattern: the digest is of the list of paths it matched.
    listing: bool,
    digest: Option<[u8; 32]>,
}
pub type Fingerprints = Vec<Fingerprint>;

/// The fingerprint of `bytes`, read from `path`.
pub fn of_content(path: &Path, bytes: Option<&[u8]>) -> Fingerprint {
    Fingerprint { path: path.to_path_buf(), listing: false, digest: bytes.map(|b| Sha256::digest(b).into()) }
}

/// The fingerprint of an `include` pattern: the list of what it matched, so a fragment added
/// or removed is a change.
pub fn of_listing(pattern: &Path, matched: &[PathBuf]) -> Fingerprint {
    let mut files: Vec<String> = matched.iter().map(|p| p.display().to_string()).collect();
    files.sort();
    Fingerprint {
        path: pattern.to_path_buf(),
        listing: true,
        digest: Some(Sha256::digest(files.join("\n").as_bytes()).into()),
    }
}

impl Fingerprint {
    /// What the same path holds now, fingerprinted as a load would.
    fn now(&self) -> Fingerprint {
        if !self.listing {
            return of_content(&self.path, std::fs::read(&self.path).ok().as_deref());
        }
        // Spelled as the load globbed it (lossy), so a non-UTF-8 path is not a change each poll.
        let matched: Option<Vec<PathBuf>> =
            glob::glob(&self.path.to_string_lossy()).ok().map(|paths| paths.filter_map(Result::ok).collect());
        match matched {
            Some(matched) => of_listing(&self.path, &matched),
            None => Fingerprint { digest: None, ..self.clone() },
        }
    }
}

/// The fingerprints of what the watched paths hold now. A watcher takes these *before* a load
/// that may fail, so an edit during that load is still a change afterwards.
pub fn fingerprints(watched: &[Fingerprint]) -> Fingerprints {
    watched.iter().map(Fingerprint::now).collect()
}

pub fn changed(old: &[Fingerprint]) -> bool {
    old.iter().any(|f| f.now() != *f)
}

/// A failed load is tried again after this many polls even when nothing it was known to read
/// changed: the failing edit may have named files (a fragment, a key, a secret) the watcher
/// never saw, and fixing one of those is a change too.
pub const RETRY_POLLS: u32 = 10;

/// What a hot-reload loop (the server's and the module's) watches, and when it loads again.
#[derive(Debug)]
pub struct Watch {
    watched: Fingerprints,
    /// The last load's error, while the policy in force is older than the files.
    failed: Option<String>,
    polls: u32,
}

impl Watch {
    /// Starts from what the policy in force was read from, as its load read it.
    pub fn new(sources: Fingerprints) -> Self {
        Self { watched: sources, failed: None, polls: 0 }
    }

    /// Called once per poll: whether to load now.
    pub fn due(&mut self) -> bool {
        self.polls = self.polls.saturating_add(1);
        changed(&self.watched) || (self.failed.is_some() && self.polls >= RETRY_POLLS)
    }

    /// What the watched files hold now: taken *before* a load, kept should it fail, so an edit
    /// made during the load is still a change afterwards.
    pub fn before(&self) -> Fingerprints {
        fingerprints(&self.watched)
    }

    /// A load succeeded: watch what it read.
    pub fn loaded(&mut self, sources: Fingerprints) {
        self.watched = sources;
        self.failed = None;
        self.polls = 0;
    }

    /// A load failed: watch `before`, retry in [`RETRY_POLLS`]. Returns whether the error is
    /// new (report it once, not at every retry).
    pub fn failed(&mut self, before: Fingerprints, error: &str) -> bool {
        self.watched = before;
        self.polls = 0;
        let new = self.failed.as_deref() != Some(error);
        self.failed = Some(error.to_string());
        new
    }

    pub fn len(&self) -> usize {
        self.watched.len()
    }

    pub fn is_empty(&self) -> bool {
        self.watched.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The race a watcher lost (the module's watcher, under load): the policy is read, then
    /// edited, then fingerprinted. Fingerprints of the bytes read see the edit as a change.
    #[test]
    fn an_edit_after_the_read_is_a_change() {
        let dir = std::env::temp_dir().join(format!("portcullis-sources-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("policy.yaml");
        std::fs::write(&file, "a: 1\n").expect("write");
        let read = std::fs::read(&file).expect("read");
        std::fs::write(&file, "a: 1\nb: 2\n").expect("edit");
        let loaded = vec![of_content(&file, Some(&read))];
        assert!(changed(&loaded), "an edit after the load read the file went unseen");
        assert!(!changed(&fingerprints(&loaded)), "nothing changed since these were taken");
        let pattern = dir.join("*.yaml");
        let listed = vec![of_listing(&pattern, std::slice::from_ref(&file))];
        assert!(!changed(&listed));
        std::fs::write(dir.join("new.yaml"), "").expect("new fragment");
        assert!(changed(&listed), "a fragment added to a pattern is a change");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A failed load is retried every RETRY_POLLS polls (its edit may name files never
    /// watched) and its error reported once.
    #[test]
    fn a_failed_load_is_retried_and_reported_once() {
        let dir = std::env::temp_dir().join(format!("portcullis-watch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("policy.yaml");
        std::fs::write(&file, "a: 1\n").expect("write");
        let mut watch = Watch::new(vec![of_content(&file, Some(b"a: 1\n"))]);
        assert!(!watch.due(), "nothing changed");
        std::fs::write(&file, "a: 2\n").expect("edit");
        assert!(watch.due());
        let before = watch.before();
        assert!(watch.failed(before.clone(), "broken"), "a new error is reported");
        let waits = (1..RETRY_POLLS).filter(|_| !watch.due()).count();
        assert_eq!(waits, (RETRY_POLLS - 1) as usize, "no retry before RETRY_POLLS polls");
        assert!(watch.due(), "retried after RETRY_POLLS polls");
        assert!(!watch.failed(before, "broken"), "the same error is not reported again");
        watch.loaded(vec![of_content(&file, Some(b"a: 2\n"))]);
        assert!((0..RETRY_POLLS * 2).all(|_| !watch.due()), "a good load is not retried");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
