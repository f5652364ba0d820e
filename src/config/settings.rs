//! The validated, typed configuration.

use super::listen::ListenAddr;
use crate::cache::CacheSettings;
use crate::decision::Policy;
use crate::jwt::Verifier;
use crate::jwt::fetch::JwksJob;
use crate::state::StateBackend;
use crate::telemetry::audit::AuditSettings;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use subtle::ConstantTimeEq;

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
    pub cache: CacheSettings,
    /// The admin listener, when configured.
    pub admin: Option<AdminSettings>,
    /// Default lifetime of a revocation: the longest any accepted token can live.
    pub longest_token_lifetime: Duration,
    pub state: StateBackend,
    /// Every file this configuration was read from (the policy and the files it names), for
    /// hot reload.
    pub sources: Vec<PathBuf>,
}

/// The admin API's bearer token. Compared in constant time; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(String);

impl AdminToken {
    pub fn new(token: String) -> Self {
        Self(token)
    }

    /// Constant-time comparison with a presented token.
    pub fn matches(&self, presented: &str) -> bool {
        self.0.as_bytes().ct_eq(presented.as_bytes()).into()
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken([redacted])")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSettings {
    pub addr: SocketAddr,
    pub token: AdminToken,
}
