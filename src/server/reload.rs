//! Hot reload: the policy file and every file it names are polled (and SIGHUP forces a
//! reload); a valid change is swapped in whole between checks, an invalid one is logged and
//! counted while the old policy keeps serving.

use super::authz::AppState;
use super::fetchers::Fetchers;
use crate::clock::Clock;
use crate::config::sources::{Fingerprints, Watch};
use crate::config::{self, Settings};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use crate::telemetry::metrics::RELOAD_TOTAL;
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// The settings that only take effect at start, by name, that differ between `old` and `new`.
///
/// What a reload applies is the [`crate::config::Snapshot`] (policy, verifier, admin token,
/// revocation lifetimes), the JWKS fetchers (`jwks_jobs`), `listen.callers` (the gate) and the
/// watched files (`sources`);
/// everything else here needs a restart. Every field is named, without `..`: a new setting
/// cannot be added without deciding which side it is on.
fn restart_only_differences(old: &Settings, new: &Settings) -> Vec<&'static str> {
    let Settings {
        grpc,
        health,
        listen,
        callers: _,
        max_inflight_checks,
        dev,
        log_format,
        snapshot: _,
        jwks_jobs: _,
        audit,
        otlp_endpoint,
        drain_delay,
        drain_timeout,
        cache,
        admin,
        state,
        sources: _,
        warnings: _,
        fallback_replicas,
        // Checked against the running backend before a reload is applied (`Reloader::reload`).
        needs_durable_state: _,
    } = old;
    let changes = [
        (*grpc != new.grpc, "listen.grpc"),
        (*health != new.health, "listen.health"),
        (*listen != new.listen, "listen (socket, state_stream, reflection, limits)"),
        (*admin != new.admin, "listen.admin"),
        (*max_inflight_checks != new.max_inflight_checks, "limits.max_inflight_checks"),
        (*dev != new.dev, "dev"),
        (*log_format != new.log_format, "telemetry.log_format"),
        (*audit != new.audit, "telemetry.audit"),
        (*otlp_endpoint != new.otlp_endpoint, "telemetry.otlp_endpoint"),
        (*drain_delay != new.drain_delay, "shutdown.drain_delay"),
        (*drain_timeout != new.drain_timeout, "shutdown.drain_timeout"),
        (*cache != new.cache, "cache"),
        (*fallback_replicas != new.fallback_replicas, "rate_limits.fallback_replicas"),
        (*state != new.state, "state"),
    ];
    changes.into_iter().filter(|(changed, _)| *changed).map(|(_, name)| name).collect()
}

pub struct Reloader {
    pub path: PathBuf,
    pub state: Arc<AppState>,
    pub fetchers: Arc<Mutex<Fetchers>>,
    pub clock: Arc<dyn Clock>,
    /// The TCP gRPC listener's gate (`listen.callers` reloads into it).
    pub gate: Option<Arc<super::callers::CallerGate>>,
    /// The settings the process started with (restart-only fields are compared to these).
    pub started_with: Settings,
}

impl Reloader {
    /// Runs until aborted.
    pub async fn run(self) {
        let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        // What the running policy was read from, as that load read it: an edit made since is a
        // change at the first poll.
        let mut watch = Watch::new(self.started_with.sources.clone());
        let mut generation = self.state.snapshot.load().generation;
        tracing::debug!(files = watch.len(), "watching the policy files for changes");
        loop {
            let forced = tokio::select! {
                _ = tokio::time::sleep(POLL_INTERVAL) => false,
                Some(_) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
            };
            if !watch.due() && !forced {
                continue;
            }
            let before = watch.before();
            match self.reload(generation + 1) {
                Ok(sources) => {
                    generation += 1;
                    watch.loaded(sources);
                    metrics::counter!(RELOAD_TOTAL, "result" => "ok").increment(1);
                }
                Err(e) => {
                    // Counted and logged per rejected edit, not per silent retry of the same one.
                    if watch.failed(before, &e) || forced {
                        metrics::counter!(RELOAD_TOTAL, "result" => "error").increment(1);
                        tracing::error!(file = %self.path.display(), error = %e, "policy reload rejected; the previous policy stays in force");
                    }
                }
            }
        }
    }

    fn reload(&self, generation: u64) -> Result<Fingerprints, String> {
        let mut settings = config::load_file(&self.path).map_err(|e| e.to_string())?;
        if let Some(snapshot) = Arc::get_mut(&mut settings.snapshot) {
            snapshot.generation = generation;
        }
        self.fetchers
            .lock()
            .map_err(|_| "fetcher registry poisoned".to_string())?
            .reconcile(&mut settings, &self.clock)?;
        // The running backend is what a start opened: a policy that now writes run-time state
        // it has not acknowledged losing cannot run on memory alone (state.dir, Redis: restart).
        if matches!(self.started_with.state, crate::state::StateBackend::Memory { dir: None })
            && settings.needs_durable_state
        {
            return Err("the policy writes run-time state (admin API, auto-block or sessions) that this process keeps in memory only; state.dir and state.backend take effect at a restart: restart to apply it".into());
        }
        if let Some(gate) = &self.gate {
            gate.update(&settings.callers)?;
        }
        for what in restart_only_differences(&self.started_with, &settings) {
            tracing::warn!(setting = what, "changed in the policy file; takes effect at the next restart");
        }
        // Keys with a prefix added by this reload are redacted from every log line from now on.
        if let Some(api_keys) = &settings.snapshot.policy.api_keys {
            crate::telemetry::redact::register_api_key_prefix(&api_keys.prefix);
        }
        let replaced = self.state.replace_snapshot(settings.snapshot.clone());
        crate::telemetry::metrics::policy_info(
            Some((&replaced.hash, replaced.generation)),
            &settings.snapshot.hash,
            settings.snapshot.generation,
        );
        tracing::info!(file = %self.path.display(), generation, hash = %settings.snapshot.hash, "policy reloaded");
        Ok(settings.sources)
    }
}

#[cfg(test)]
mod tests {
    use super::restart_only_differences;
    use crate::config::parse_and_validate;

    #[test]
    fn restart_only_settings_are_named_one_by_one() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let base = std::fs::read_to_string(dir.join("policy.yaml")).expect("policy");
        let load = |text: &str| parse_and_validate(text, &dir).unwrap_or_else(|e| panic!("{e}"));
        let old = load(&base);
        let changed = load(&format!(
            "{}\ncache: {{ ttl: 10s }}\nshutdown: {{ drain_delay: 3s }}\n",
            base.replace("max_inflight_checks: 64", "max_inflight_checks: 65")
                .replace("127.0.0.1:9190", "127.0.0.1:9290")
                .replace("roles: [admin] } }", "roles: [root] } }")
        ));
        assert_eq!(
            restart_only_differences(&old, &changed),
            vec!["listen.health", "limits.max_inflight_checks", "shutdown.drain_delay", "cache"]
        );
        assert!(restart_only_differences(&old, &load(&base)).is_empty(), "a policy-only change needs no restart");
    }
}
