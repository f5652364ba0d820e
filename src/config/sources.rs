//! What a policy was read from, fingerprinted for hot reload (the server's `reload.rs` and the
//! Envoy module's policy watcher): a change is a change of content, not of modification time.

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

pub type Fingerprints = Vec<(PathBuf, Option<[u8; 32]>)>;

/// A file's content digest; for an `include` pattern (no such file), the digest of the list of
/// files it matches, so a fragment added or removed is a change.
fn digest(path: &Path) -> Option<[u8; 32]> {
    if let Ok(bytes) = std::fs::read(path) {
        return Some(Sha256::digest(&bytes).into());
    }
    let pattern = path.to_str().filter(|p| p.contains(['*', '?', '[']))?;
    let mut files: Vec<String> =
        glob::glob(pattern).ok()?.filter_map(Result::ok).map(|p| p.display().to_string()).collect();
    files.sort();
    Some(Sha256::digest(files.join("\n").as_bytes()).into())
}

pub fn fingerprints(paths: &[PathBuf]) -> Fingerprints {
    paths.iter().map(|p| (p.clone(), digest(p))).collect()
}

pub fn changed(old: &Fingerprints) -> bool {
    old.iter().any(|(path, was)| digest(path) != *was)
}
