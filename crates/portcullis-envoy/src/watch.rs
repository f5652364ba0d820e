//! Hot reload for a policy given as a file: the files it was read from (fragments and include
//! patterns too) are fingerprinted by content, as `portcullis serve` does, and a valid change is
//! put in force (between requests, whole); an invalid one is logged and the policy in force
//! stays. (A policy inline in Envoy's configuration reloads with Envoy's own configuration
//! update: a new filter configuration, a new engine.)

use crate::engine::Engine;
use portcullis::config::sources::{Fingerprints, Watch};
use std::path::PathBuf;
use std::sync::Weak;
use std::time::Duration;

const POLL: Duration = Duration::from_millis(500);

/// Watches `file` and `sources` while `engine` lives. `sources` are the fingerprints of what
/// the engine's policy was read from, taken by that load: an edit made after it read a file is
/// a change at the first poll, however late this thread starts.
pub fn watch_policy(engine: Weak<Engine>, file: PathBuf, sources: Fingerprints, has_sidecar: bool) {
    let shown = file.display().to_string();
    let spawned = std::thread::Builder::new().name("portcullis-policy".into()).spawn(move || {
        let mut watch = Watch::new(sources);
        loop {
            std::thread::sleep(POLL);
            let Some(engine) = engine.upgrade() else { return };
            if !watch.due() {
                continue;
            }
            let before = watch.before();
            match crate::settings::reload(&file, has_sidecar) {
                Ok(settings) => {
                    watch.loaded(settings.sources.clone());
                    crate::log_info(&format!("portcullis: policy {} in force", settings.snapshot.hash));
                    engine.replace_snapshot(settings.snapshot.clone());
                }
                Err(e) => {
                    if watch.failed(before, &e.to_string()) {
                        crate::log_error(&format!("portcullis: policy change refused, the one in force stays:\n{e}"));
                    }
                }
            }
        }
    });
    if let Err(e) = spawned {
        crate::log_error(&format!("portcullis: cannot watch {shown}: {e}; the policy will not reload"));
    }
}
