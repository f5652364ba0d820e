//! The Prometheus registry and the contract metric names (docs/contract.md "Metric names").

use crate::decision::{DenyReason, Outcome};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

pub const DECISIONS_TOTAL: &str = "portcullis_decisions_total";
/// `telemetry.rule_metrics`: decisions by route name and verdict.
pub const RULE_DECISIONS_TOTAL: &str = "portcullis_rule_decisions_total";
pub const CHECK_DURATION_SECONDS: &str = "portcullis_check_duration_seconds";
pub const INFLIGHT_CHECKS: &str = "portcullis_inflight_checks";
pub const DEV_MODE: &str = "portcullis_dev_mode";
pub const BUILD_INFO: &str = "portcullis_build_info";
pub const POLICY_INFO: &str = "portcullis_policy_info";
/// 1 while `/readyz` answers 200 (for "pod not ready" alerts without scraping `/readyz`).
pub const READY: &str = "portcullis_ready";

/// `portcullis_policy_info{hash,generation}` is 1 for the policy in force and 0 for the one it
/// replaced (Prometheus keeps a series until the process ends).
pub fn policy_info(replaced: Option<(&str, u64)>, hash: &str, generation: u64) {
    if let Some((hash, generation)) = replaced {
        metrics::gauge!(POLICY_INFO, "hash" => hash.to_string(), "generation" => generation.to_string()).set(0.0);
    }
    metrics::gauge!(POLICY_INFO, "hash" => hash.to_string(), "generation" => generation.to_string()).set(1.0);
}
pub const RELOAD_TOTAL: &str = "portcullis_config_reload_total";
pub const STALE_DECISIONS_TOTAL: &str = "portcullis_state_stale_decisions_total";

/// Histogram buckets from 25 µs to 1 s.
const DURATION_BUCKETS: [f64; 14] =
    [0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// How often histogram samples are folded into their buckets.
const UPKEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// The installed recorder keeps every histogram sample until upkeep folds it into the buckets;
/// without it memory grows with every check when nobody scrapes `/metrics` (found by the soak).
fn spawn_upkeep(handle: PrometheusHandle) {
    let spawned = std::thread::Builder::new().name("metrics-upkeep".into()).spawn(move || {
        loop {
            std::thread::sleep(UPKEEP_INTERVAL);
            handle.run_upkeep();
        }
    });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "could not start the metrics upkeep thread; histograms grow until scraped");
    }
}

/// Installs the global recorder once per process and returns its handle; `None` only if another
/// recorder was installed first.
pub fn install() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(CHECK_DURATION_SECONDS.into()), &DURATION_BUCKETS)
                .ok()?;
            let handle = builder.install_recorder().ok()?;
            spawn_upkeep(handle.clone());
            metrics::describe_counter!(DECISIONS_TOTAL, "Check decisions by decision and reason");
            metrics::describe_histogram!(CHECK_DURATION_SECONDS, "Time to decide one Check");
            metrics::describe_gauge!(INFLIGHT_CHECKS, "Checks being decided now");
            metrics::describe_gauge!(DEV_MODE, "1 when running with the development issuer allowed");
            metrics::describe_gauge!(BUILD_INFO, "Always 1; the labels say which build runs");
            metrics::describe_gauge!(POLICY_INFO, "1 for the policy in force (hash of its text, load generation)");
            metrics::describe_gauge!(READY, "1 while /readyz answers 200");
            metrics::gauge!(READY).set(0.0);
            metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION"), "commit" => env!("PORTCULLIS_COMMIT"))
                .set(1.0);
            metrics::describe_counter!(RELOAD_TOTAL, "Policy reloads by result");
            // At zero from the start, so an alert on errors has a series to look at.
            for result in ["ok", "error"] {
                metrics::counter!(RELOAD_TOTAL, "result" => result).increment(0);
            }
            process_collector().describe();
            Some(handle)
        })
        .clone()
}

/// Process metrics (CPU seconds, resident memory, open descriptors, threads, start time),
/// collected on each scrape of `/metrics`.
pub fn process_collector() -> &'static metrics_process::Collector {
    static COLLECTOR: OnceLock<metrics_process::Collector> = OnceLock::new();
    COLLECTOR.get_or_init(metrics_process::Collector::default)
}

/// Handles of the metrics every check updates, registered once: a `counter!` call hashes its
/// name and labels and looks them up in the registry on every use. Registering also makes every
/// decision reason appear in `/metrics` from the start, at zero.
pub struct CheckMetrics {
    /// Decisions made from possibly outdated state (`state.on_stale: serve_local`).
    pub stale_decision: metrics::Counter,
    pub inflight: metrics::Gauge,
    pub duration: metrics::Histogram,
    allowed: metrics::Counter,
    /// In the order of [`DenyReason::ALL`].
    denied: Vec<metrics::Counter>,
    /// Denies recorded but not enforced (`mode: dry_run`), by reason, with `mode="dry_run"`.
    dry_run: Vec<metrics::Counter>,
}

impl CheckMetrics {
    /// Installs the recorder first if need be: handles taken before it exists record nothing.
    pub fn register() -> Self {
        let _ = install();
        let decision = |verdict: &'static str, reason: &'static str| metrics::counter!(DECISIONS_TOTAL, "decision" => verdict, "reason" => reason);
        let stale_decision = metrics::counter!(STALE_DECISIONS_TOTAL);
        stale_decision.increment(0);
        Self {
            stale_decision,
            inflight: metrics::gauge!(INFLIGHT_CHECKS),
            duration: metrics::histogram!(CHECK_DURATION_SECONDS),
            allowed: decision("allow", "allowed"),
            denied: DenyReason::ALL.iter().map(|r| decision("deny", r.as_str())).collect(),
            dry_run: DenyReason::ALL
                .iter()
                .map(|r| metrics::counter!(DECISIONS_TOTAL, "decision" => "deny", "reason" => r.as_str(), "mode" => "dry_run"))
                .collect(),
        }
    }

    /// A dry-run deny (allowed, recorded as the deny it would have been).
    pub fn dry_run(&self, reason: DenyReason) {
        if let Some(counter) = DenyReason::ALL.iter().position(|r| *r == reason).and_then(|i| self.dry_run.get(i)) {
            counter.increment(1);
        }
    }

    pub fn decided(&self, outcome: &Outcome) {
        let counter = match outcome {
            Outcome::Allow { .. } => Some(&self.allowed),
            Outcome::Deny(deny) => {
                DenyReason::ALL.iter().position(|r| *r == deny.reason).and_then(|i| self.denied.get(i))
            }
        };
        if let Some(counter) = counter {
            counter.increment(1);
        }
    }
}
