//! The validated, typed configuration.

use super::listen::ListenAddr;
use crate::decision::Policy;
use crate::jwt::Verifier;
use crate::jwt::fetch::JwksJob;
use crate::telemetry::audit::AuditSettings;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

/// What one decision is made against: the core's policy and the token verifier. Swapped whole
/// on reload.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub policy: Policy,
    pub verifier: Verifier,
    /// Counts successful loads (1 for the first); part of future cache keys.
    pub generation: u64,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub grpc: ListenAddr,
    pub health: SocketAddr,
    pub max_inflight_checks: usize,
    pub dev: bool,
    pub log_format: LogFormat,
    pub snapshot: Arc<Snapshot>,
    /// Remote key sets the server keeps fetched.
    pub jwks_jobs: Vec<JwksJob>,
    pub audit: AuditSettings,
    pub otlp_endpoint: Option<String>,
    pub drain_delay: Duration,
    pub drain_timeout: Duration,
    /// Every file this configuration was read from (the policy and the files it names), for
    /// hot reload.
    pub sources: Vec<PathBuf>,
}
