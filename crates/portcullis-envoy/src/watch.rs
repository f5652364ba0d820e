//! Hot reload for a policy given as a file: the files it was read from are polled, and a
//! valid change is put in force (between requests, whole); an invalid one is logged and the
//! policy in force stays. (A policy inline in Envoy's configuration reloads with Envoy's own
//! configuration update: a new filter configuration, a new engine.)

use crate::engine::Engine;
use std::path::PathBuf;
use std::sync::Weak;
use std::time::{Duration, SystemTime};

const POLL: Duration = Duration::from_millis(500);

fn stamps(paths: &[PathBuf]) -> Vec<Option<SystemTime>> {
    paths.iter().map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok()).collect()
}

/// Watches `file` (and `sources`, the files it names) while `engine` lives.
pub fn watch_policy(engine: Weak<Engine>, file: PathBuf, sources: Vec<PathBuf>, has_sidecar: bool) {
    let mut paths = sources;
    if !paths.contains(&file) {
        paths.insert(0, file.clone());
    }
    let shown = file.display().to_string();
    let spawned = std::thread::Builder::new().name("portcullis-policy".into()).spawn(move || {
        let mut seen = stamps(&paths);
        loop {
            std::thread::sleep(POLL);
            let Some(engine) = engine.upgrade() else { return };
            let now = stamps(&paths);
            if now == seen {
                continue;
            }
            seen = now;
            match crate::settings::reload(&file, has_sidecar) {
                Ok(settings) => {
                    engine.replace_snapshot(settings.snapshot.clone());
                    paths = settings.sources.clone();
                    seen = stamps(&paths);
                    crate::log_info(&format!("portcullis: policy {} in force", settings.snapshot.hash));
                }
                Err(e) => crate::log_error(&format!("portcullis: policy change refused, the one in force stays:\n{e}")),
            }
        }
    });
    if let Err(e) = spawned {
        crate::log_error(&format!("portcullis: cannot watch {shown}: {e}; the policy will not reload"));
    }
}
