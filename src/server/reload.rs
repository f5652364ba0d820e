//! Hot reload: the policy file and every file it names are polled (and SIGHUP forces a
//! reload); a valid change is swapped in whole between checks, an invalid one is logged and
//! counted while the old policy keeps serving.

use super::authz::AppState;
use super::fetchers::Fetchers;
use crate::clock::Clock;
use crate::config::{self, Settings};
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const RELOAD_TOTAL: &str = "portcullis_config_reload_total";
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

type Fingerprints = Vec<(PathBuf, Option<[u8; 32]>)>;

fn fingerprints(paths: &[PathBuf]) -> Fingerprints {
    paths.iter().map(|p| (p.clone(), std::fs::read(p).ok().map(|bytes| Sha256::digest(&bytes).into()))).collect()
}

fn changed(old: &Fingerprints) -> bool {
    old.iter().any(|(path, digest)| std::fs::read(path).ok().map(|b| Sha256::digest(&b).into()) != *digest)
}

/// Settings that only take effect at start; a reload that changes them says so.
fn restart_only_differences(old: &Settings, new: &Settings) -> Vec<&'static str> {
    let mut out = Vec::new();
    if old.grpc != new.grpc || old.health != new.health {
        out.push("listen");
    }
    if old.max_inflight_checks != new.max_inflight_checks {
        out.push("limits.max_inflight_checks");
    }
    if old.audit != new.audit || old.otlp_endpoint != new.otlp_endpoint || old.log_format != new.log_format {
        out.push("telemetry");
    }
    out
}

pub struct Reloader {
    pub path: PathBuf,
    pub state: Arc<AppState>,
    pub fetchers: Arc<Mutex<Fetchers>>,
    pub clock: Arc<dyn Clock>,
    /// The settings the process started with (restart-only fields are compared to these).
    pub started_with: Settings,
}

impl Reloader {
    /// Runs until aborted.
    pub async fn run(self) {
        let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut watched = fingerprints(&self.started_with.sources);
        let mut generation = self.state.snapshot.load().generation;
        tracing::debug!(files = watched.len(), "watching the policy files for changes");
        loop {
            let forced = tokio::select! {
                _ = tokio::time::sleep(POLL_INTERVAL) => false,
                Some(_) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
            };
            if !forced && !changed(&watched) {
                continue;
            }
            match self.reload(generation + 1) {
                Ok(sources) => {
                    generation += 1;
                    watched = fingerprints(&sources);
                    metrics::counter!(RELOAD_TOTAL, "result" => "ok").increment(1);
                }
                Err(e) => {
                    // Remember the broken content so it is reported once, not every second.
                    let paths: Vec<PathBuf> = watched.iter().map(|(p, _)| p.clone()).collect();
                    watched = fingerprints(&paths);
                    metrics::counter!(RELOAD_TOTAL, "result" => "error").increment(1);
                    tracing::error!(file = %self.path.display(), error = %e, "policy reload rejected; the previous policy stays in force");
                }
            }
        }
    }

    fn reload(&self, generation: u64) -> Result<Vec<PathBuf>, String> {
        let mut settings = config::load_file(&self.path).map_err(|e| e.to_string())?;
        if let Some(snapshot) = Arc::get_mut(&mut settings.snapshot) {
            snapshot.generation = generation;
        }
        self.fetchers
            .lock()
            .map_err(|_| "fetcher registry poisoned".to_string())?
            .reconcile(&mut settings, &self.clock)?;
        for what in restart_only_differences(&self.started_with, &settings) {
            tracing::warn!(setting = what, "changed in the policy file; takes effect at the next restart");
        }
        self.state.snapshot.store(settings.snapshot.clone());
        tracing::info!(file = %self.path.display(), generation, "policy reloaded");
        Ok(settings.sources)
    }
}
