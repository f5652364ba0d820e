//! The health listener: `/livez`, `/readyz`, `/metrics`. Read-only by construction.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::Arc;

/// Whether the server is ready to take traffic, and if not, what is missing.
pub type Readiness = Arc<dyn Fn() -> ReadyReport + Send + Sync>;

/// The `/readyz` body: every reason for not being ready, by name.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReadyReport {
    pub ready: bool,
    /// Stopping: answering checks until the drain delay ends, but taking no new traffic.
    pub draining: bool,
    /// Required issuers whose keys were never fetched (not ready until they are).
    pub issuers_without_keys: Vec<String>,
    /// Required issuers whose keys were dropped past `max_stale`: their tokens answer 503
    /// `keys_unavailable`, but the replica stays ready (the others are in the same state).
    pub issuers_past_max_stale: Vec<String>,
    /// `memory`, or for Redis: `synced`, `not_synced` (no first resync yet) or `stale` (no
    /// contact for longer than `state.max_staleness`).
    pub state: &'static str,
    /// Milliseconds since the last contact with Redis (Redis backend only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_contact_age_ms: Option<i64>,
    /// The policy in force: which one a pod runs, after a rollout.
    pub policy: PolicyId,
}

/// A policy snapshot's identity: its text's hash and how many loads it took to get here.
#[derive(Debug, Clone, serde::Serialize, PartialEq, Eq)]
pub struct PolicyId {
    pub hash: String,
    pub generation: u64,
}

#[derive(Clone)]
pub struct HealthState {
    pub ready: Readiness,
    pub metrics: Option<PrometheusHandle>,
}

async fn livez() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<HealthState>) -> impl IntoResponse {
    let report = (state.ready)();
    let status = if report.ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, axum::Json(report))
}

async fn metrics(State(state): State<HealthState>) -> impl IntoResponse {
    match &state.metrics {
        Some(handle) => {
            crate::telemetry::metrics::process_collector().collect();
            (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; version=0.0.4")], handle.render())
        }
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "text/plain")],
            "metrics recorder unavailable\n".to_string(),
        ),
    }
}

pub fn router(state: HealthState) -> Router {
    Router::new()
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}
