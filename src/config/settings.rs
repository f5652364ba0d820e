//! The validated, typed configuration.

use super::listen::ListenAddr;
use crate::decision::Policy;
use crate::jwt::Verifier;
use crate::jwt::fetch::JwksJob;
use std::net::SocketAddr;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

/// What one decision is made against: the core's policy and the token verifier.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub policy: Policy,
    pub verifier: Verifier,
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
}
