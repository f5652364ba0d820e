//! The health listener: `/livez`, `/readyz`, `/metrics`. Read-only by construction.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::Arc;

/// Answers whether the server is ready to take traffic.
pub type Readiness = Arc<dyn Fn() -> bool + Send + Sync>;

#[derive(Clone)]
pub struct HealthState {
    pub ready: Readiness,
    pub metrics: Option<PrometheusHandle>,
}

async fn livez() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<HealthState>) -> impl IntoResponse {
    if (state.ready)() { (StatusCode::OK, "ready\n") } else { (StatusCode::SERVICE_UNAVAILABLE, "not ready\n") }
}

async fn metrics(State(state): State<HealthState>) -> impl IntoResponse {
    match &state.metrics {
        Some(handle) => (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; version=0.0.4")], handle.render()),
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
