//! The validated, typed configuration.

use super::listen::{CallerPolicy, ListenAddr, ListenOptions};
use crate::cache::CacheSettings;
use crate::decision::Policy;
use crate::jwt::Verifier;
use crate::jwt::fetch::JwksJob;
use crate::state::StateBackend;
use crate::telemetry::audit::AuditSettings;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use subtle::ConstantTimeEq;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

/// Everything a reload applies, swapped whole: the core's policy and the token verifier that
/// every decision is made against, and the admin token and revocation lifetimes the admin API
/// reads. Restart-only settings stay in [`Settings`] (see `server::reload`).
#[derive(Debug, Default)]
pub struct Snapshot {
    pub policy: Policy,
    pub verifier: Verifier,
    /// Counts successful loads (1 for the first); part of the claims cache key.
    pub generation: u64,
    /// The first 12 hex digits of the SHA-256 of the policy's text, the main file's and each
    /// fragment's (by name): which policy a pod runs (`/readyz`, `portcullis_policy_info`,
    /// every audit line).
    pub hash: Arc<str>,
    /// The admin API's token (`None`: no admin section, every admin request is refused).
    pub admin_token: Option<AdminToken>,
    pub revocation_lifetimes: Arc<RevocationLifetimes>,
    /// DPoP's settings when the policy speaks DPoP.
    pub dpop: Option<Arc<DpopSettings>>,
    /// `telemetry.rule_metrics`: decisions are counted per route too.
    pub rule_metrics: bool,
}

/// DPoP proofs (`dpop:`): what the edge's proof verifier holds proofs to.
#[derive(Clone, PartialEq, Eq)]
pub struct DpopSettings {
    pub algorithms: Vec<jsonwebtoken::Algorithm>,
    pub max_age_secs: i64,
    pub leeway_secs: i64,
    pub nonce: Option<DpopNonce>,
}

#[derive(Clone, PartialEq, Eq)]
pub struct DpopNonce {
    /// The fleet's shared secret (`secret_file`); `None`: the process's own. Never printed.
    pub secret: Option<Vec<u8>>,
    pub rotate_secs: i64,
}

impl std::fmt::Debug for DpopSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DpopSettings")
            .field("algorithms", &self.algorithms)
            .field("max_age_secs", &self.max_age_secs)
            .field("leeway_secs", &self.leeway_secs)
            .field("nonce_rotate_secs", &self.nonce.as_ref().map(|n| n.rotate_secs))
            .finish_non_exhaustive()
    }
}

/// How long a `jti` revocation must hold under this policy: per issuer, `max_token_age` plus
/// twice `leeway` plus the skew margin after it was written; `None` when the issuer sets no
/// `max_token_age` (nothing bounds its tokens, so the revocation holds for ever). Read when
/// revocations are purged, so a reload that raises `max_token_age` extends every revocation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RevocationLifetimes(pub Vec<(Arc<str>, Option<i64>)>);

impl crate::state::model::Lifetimes for RevocationLifetimes {
    /// An issuer this policy no longer names: unbounded (its tokens are refused anyway, and
    /// a reload may bring it back).
    fn jti_horizon(&self, iss: &str) -> Option<i64> {
        self.0.iter().find(|(i, _)| **i == *iss).and_then(|(_, secs)| *secs)
    }
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub grpc: ListenAddr,
    pub health: SocketAddr,
    /// Socket permissions, reflection and listener limits.
    pub listen: ListenOptions,
    /// Who may call Check.
    pub callers: CallerPolicy,
    pub max_inflight_checks: usize,
    pub dev: bool,
    /// The policy writes run-time state (admin API, auto-block, sessions) and has not
    /// acknowledged losing it: it needs `state.dir` or Redis, which only a start can open.
    pub needs_durable_state: bool,
    pub log_format: LogFormat,
    pub snapshot: Arc<Snapshot>,
    /// Remote key sets the server keeps fetched.
    pub jwks_jobs: Vec<JwksJob>,
    pub audit: AuditSettings,
    pub otlp_endpoint: Option<String>,
    pub drain_delay: Duration,
    pub drain_timeout: Duration,
    pub cache: CacheSettings,
    /// The admin listener, when configured (its token lives in the [`Snapshot`]).
    pub admin: Option<AdminSettings>,
    pub state: StateBackend,
    /// Every file this configuration was read from (the policy and the files it names), with
    /// the digest of what was read, for hot reload.
    pub sources: super::sources::Fingerprints,
    /// Fleet rate-limit tiers fall back to their rate divided by this when Redis is unavailable.
    pub fallback_replicas: u32,
    /// Valid settings that are probably a mistake (`path: message`); logged at start and
    /// printed by `check-config`.
    pub warnings: Vec<String>,
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
}
