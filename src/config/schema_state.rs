//! The policy file as written: `state` (the memory backend's journal, Redis and Sentinel).

use schemars::JsonSchema;
use serde::Deserialize;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawState {
    pub backend: String,
    /// Memory backend: a folder where every run-time write (admin API, auto-blocks, session
    /// times) is journaled, fsync'd before it is acknowledged, and replayed at start.
    pub dir: Option<String>,
    /// Memory backend without `dir`: `true` states that a restart may forget revocations,
    /// blocks, members and API keys written at run time (else such a policy is refused).
    pub acknowledge_ephemeral_state: Option<bool>,
    /// `redis://host:port/db` or `rediss://host:port/db` (TLS); not with `sentinel` or `cluster`.
    pub url: Option<String>,
    /// Redis Sentinel: the master is asked of the sentinels, and followed through a failover.
    pub sentinel: Option<RawSentinel>,
    /// Redis Cluster: the nodes to learn the cluster's slots from (MOVED and ASK are followed,
    /// and so is a failover). The change log and state keys share one hash slot (`{prefix}`).
    pub cluster: Option<RawCluster>,
    /// TLS to Redis (and to the sentinels): a CA to trust instead of the system roots, and a
    /// client certificate.
    pub tls: Option<RawRedisTls>,
    pub username: Option<String>,
    pub password_file: Option<String>,
    pub max_staleness: Option<String>,
    /// Past `max_staleness` without contact: `deny` (the default: non-public routes answer 503
    /// `state_stale`) or `serve_local` (decide from the last synced state).
    pub on_stale: Option<String>,
    /// Deprecated: `true` is `on_stale: serve_local`.
    pub fail_open_when_stale: Option<bool>,
    pub key_prefix: Option<String>,
    /// A full resync from the keys this often, besides the one a detected gap forces (default 5m).
    pub resync_interval: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSentinel {
    /// The master's name in the sentinels' configuration.
    pub master: String,
    /// `host:port` of each sentinel.
    pub nodes: Vec<String>,
    /// Credentials for the sentinels themselves (the master's are `state.username` /
    /// `state.password_file`).
    pub username: Option<String>,
    pub password_file: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    /// `host:port` of one or more cluster nodes (any of them; the rest are discovered).
    pub nodes: Vec<String>,
}

#[derive(Debug, Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRedisTls {
    /// PEM CA bundle to trust (default: the system roots).
    pub ca_file: Option<String>,
    /// PEM client certificate and key, for servers that require one (`tls-auth-clients`).
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
}
