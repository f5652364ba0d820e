//! Hot reload for a policy given as a file: the files it was read from (fragments and include
//! patterns too) are fingerprinted by content, as `portcullis serve` does, and a valid change is
//! put in force (between requests, whole); an invalid one is logged and the policy in force
//! stays. (A policy inline in Envoy's configuration reloads with Envoy's own configuration
//! update: a new filter configuration, a new engine.)

use crate::engine::Engine;
use portcullis::config::sources::{changed, fingerprints};
use std::path::PathBuf;
use std::sync::Weak;
use std::time::Duration;

const POLL: Duration = Duration::from_millis(500);

/// Watches `file` (and `sources`, the files it names) while `engine` lives. `loaded` is the
/// hash of the policy the engine started with: an edit between that load and the first
/// fingerprints is caught by comparing it once.
pub fn watch_policy(engine: Weak<Engine>, file: PathBuf, sources: Vec<PathBuf>, has_sidecar: bool) {
    let mut paths = sources;
    if !paths.contains(&file) {
        paths.insert(0, file.clone());
    }
    let shown = file.display().to_string();
    let spawned = std::thread::Builder::new().name("portcullis-policy".into()).spawn(move || {
        let mut watched = fingerprints(&paths);
        let mut first = true;
        loop {
            if !first {
                std::thread::sleep(POLL);
            }
            let Some(engine) = engine.upgrade() else { return };
            if !first && !changed(&watched) {
                continue;
            }
            let check_only = std::mem::replace(&mut first, false);
            match crate::settings::reload(&file, has_sidecar) {
                Ok(settings) => {
                    paths = settings.sources.clone();
                    watched = fingerprints(&paths);
                    if check_only && settings.snapshot.hash == engine.policy_hash() {
                        continue;
                    }
                    crate::log_info(&format!("portcullis: policy {} in force", settings.snapshot.hash));
                    engine.replace_snapshot(settings.snapshot.clone());
                }
                Err(e) => {
                    watched = fingerprints(&paths);
                    crate::log_error(&format!("portcullis: policy change refused, the one in force stays:\n{e}"));
                }
            }
        }
    });
    if let Err(e) = spawned {
        crate::log_error(&format!("portcullis: cannot watch {shown}: {e}; the policy will not reload"));
    }
}
