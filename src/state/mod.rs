//! Run-time state: revocations, IP blocks and failure counts, tenant members, API keys,
//! session last-seen times and rate-limit buckets. Each store has an in-process (local) form
//! the hot path reads; with `state.backend: redis`, [`redis_store`] stores every change in Redis
//! with a TTL, appends it to one trimmed stream that every replica follows into its local
//! state, and resyncs from the keys at start, after any reconnect and on a gap.

pub mod apikeys;
pub mod blocks;
pub mod fleet;
pub mod journal;
pub mod local;
pub mod membership;
pub mod model;
pub mod ratelimit;
mod redis_connect;
mod redis_migrate;
pub mod redis_store;
pub mod replay;
pub mod revocation;
pub mod sessions;

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

/// Why a store (revocations, blocks, members, API keys, sessions) could not take a write.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend could not persist the change; nothing was applied.
    #[error("state backend unavailable: {0}")]
    Unavailable(String),
    /// The write itself is malformed (a text that is no network); nothing was stored.
    #[error("{0}")]
    Invalid(String),
}

pub const BACKEND_UP: &str = "portcullis_state_backend_up";
pub const STREAM_LAG_SECONDS: &str = "portcullis_state_stream_lag_seconds";

/// A secret read from a file; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Self(value)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// Where Redis is: one server, or the master a set of sentinels names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// `redis://host:port/db` or `rediss://...`; credentials come from the settings.
    Url(String),
    Sentinel {
        master: String,
        /// `host:port` of each sentinel.
        nodes: Vec<String>,
        username: Option<String>,
        password: Option<Secret>,
    },
    /// Redis Cluster, from one or more `host:port` seed nodes.
    Cluster { nodes: Vec<String> },
}

/// TLS material for Redis connections, as PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisTls {
    pub ca_pem: Option<Vec<u8>>,
    pub cert_pem: Option<Vec<u8>>,
    /// Never printed.
    pub key_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for RedisTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTls")
            .field("ca", &self.ca_pem.is_some())
            .field("client_cert", &self.cert_pem.is_some())
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSettings {
    pub target: RedisTarget,
    /// TLS (always with `rediss://`; with Sentinel when set).
    pub tls: Option<RedisTls>,
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// Prefix of every key and of the stream.
    pub key_prefix: String,
    pub max_staleness: Duration,
    /// A full resync from the keys this often, as a backstop to gap detection.
    pub resync_interval: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateBackend {
    /// In this process; with `dir`, journaled there and replayed at start.
    Memory {
        dir: Option<std::path::PathBuf>,
    },
    Redis(Box<RedisSettings>),
}

impl Default for StateBackend {
    fn default() -> Self {
        Self::Memory { dir: None }
    }
}

/// Contact bookkeeping between the Redis follower and the hot path.
#[derive(Debug)]
pub struct StateHealth {
    /// Last time the follower read the change stream (or resynced): what staleness means. A
    /// write or a rate-limit call that reaches Redis does not count: it says nothing about
    /// whether this replica still hears the others' changes.
    last_heard_ms: AtomicI64,
    synced: AtomicBool,
    max_staleness_ms: i64,
}

impl StateHealth {
    pub fn new(max_staleness: Duration, now_ms: i64) -> Self {
        metrics::gauge!(BACKEND_UP).set(0.0);
        Self {
            // Start counting from launch: a replica that never reaches Redis goes stale too.
            last_heard_ms: AtomicI64::new(now_ms),
            synced: AtomicBool::new(false),
            max_staleness_ms: max_staleness.as_millis() as i64,
        }
    }

    /// Any successful round trip to the backend (it is up).
    pub fn contact(&self) {
        metrics::gauge!(BACKEND_UP).set(1.0);
    }

    /// The follower read the change stream or resynced: this replica's state is current.
    pub fn heard(&self, now_ms: i64) {
        self.last_heard_ms.fetch_max(now_ms, Ordering::AcqRel);
        self.contact();
    }

    pub fn lost(&self) {
        metrics::gauge!(BACKEND_UP).set(0.0);
    }

    pub fn mark_synced(&self) {
        self.synced.store(true, Ordering::Release);
    }

    /// Whether the first full resync has completed (readiness waits for it).
    pub fn synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    /// Milliseconds since the follower last heard the change stream.
    pub fn since_heard_ms(&self, now_ms: i64) -> i64 {
        now_ms.saturating_sub(self.last_heard_ms.load(Ordering::Acquire))
    }

    /// Possibly outdated: not synced yet, or nothing heard for longer than `max_staleness`.
    pub fn is_stale(&self, now_ms: i64) -> bool {
        !self.synced() || self.since_heard_ms(now_ms) > self.max_staleness_ms
    }
}

#[cfg(test)]
mod tests {
    use super::StateHealth;
    use std::time::Duration;

    /// Staleness is about hearing the change stream: writes or rate-limit calls that reach
    /// Redis do not make a replica whose follower is stuck look current, and a replica that has
    /// never synced is stale.
    #[test]
    fn only_the_follower_makes_state_current() {
        let health = StateHealth::new(Duration::from_secs(30), 0);
        assert!(health.is_stale(1_000), "never synced");
        health.mark_synced();
        health.heard(1_000);
        assert!(!health.is_stale(20_000));
        health.contact(); // a write or a fleet rate-limit call succeeded
        assert!(health.is_stale(40_000), "contact alone is not hearing the stream");
        health.heard(40_000);
        assert!(!health.is_stale(40_001));
    }
}
