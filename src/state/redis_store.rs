//! The Redis state backend for revocations: write-through to Redis (key with TTL + stream
//! entry, atomically), local reads, and the follower task that keeps every replica's local
//! state current.

use super::{RedisSettings, STREAM_LAG_SECONDS, StateHealth};
use crate::clock::unix_millis;
use crate::decision::{RevocationCheck, UnixTime, VerifiedToken};
use crate::revocation::{MemoryRevocations, Revocation, RevocationStore, StoreError};
use redis::aio::MultiplexedConnection;
use redis::streams::{StreamRangeReply, StreamReadReply};
use redis::{AsyncConnectionConfig, Client, IntoConnectionInfo};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;

/// The stream keeps about this many recent changes; a replica that falls further behind resyncs.
const STREAM_MAXLEN: usize = 10_000;
const TIMEOUT: Duration = Duration::from_secs(2);
const BLOCK_MS: u64 = 1_000;

/// One change on the stream. Later issues add variants (blocks, memberships, counters).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Change {
    Revocation(Revocation),
}

pub struct RedisRevocations {
    local: MemoryRevocations,
    client: Client,
    writer: Mutex<Option<MultiplexedConnection>>,
    prefix: String,
    health: Arc<StateHealth>,
}

impl std::fmt::Debug for RedisRevocations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisRevocations").field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

fn connection_config() -> AsyncConnectionConfig {
    AsyncConnectionConfig::new().set_connection_timeout(Some(TIMEOUT)).set_response_timeout(Some(TIMEOUT))
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl RedisRevocations {
    pub fn new(settings: &RedisSettings, health: Arc<StateHealth>) -> Result<Self, String> {
        crate::jwt::fetch::install_crypto_provider();
        let mut info = settings.url.as_str().into_connection_info().map_err(|e| format!("state.url: {e}"))?;
        let mut redis = info.redis_settings().clone();
        if let Some(user) = &settings.username {
            redis = redis.set_username(user);
        }
        if let Some(password) = &settings.password {
            redis = redis.set_password(password.expose());
        }
        info = info.set_redis_settings(redis);
        let client = Client::open(info).map_err(|e| format!("state.url: {e}"))?;
        Ok(Self {
            local: MemoryRevocations::new(),
            client,
            writer: Mutex::new(None),
            prefix: settings.key_prefix.clone(),
            health,
        })
    }

    fn stream(&self) -> String {
        format!("{}:changes", self.prefix)
    }

    /// One key per revocation identity, so a repeated revocation overwrites rather than adds.
    fn key(&self, revocation: &Revocation) -> String {
        let identity = match revocation {
            Revocation::Jti { iss, jti, .. } => format!("jti\0{iss}\0{jti}"),
            Revocation::Subject { iss, sub, before, .. } => format!("sub\0{iss}\0{sub}\0{before}"),
            Revocation::Session { iss, sid, .. } => format!("sid\0{iss}\0{sid}"),
        };
        format!("{}:rev:{}", self.prefix, hex::encode(Sha256::digest(identity.as_bytes())))
    }

    async fn connection(&self) -> Result<MultiplexedConnection, StoreError> {
        let mut writer = self.writer.lock().await;
        if let Some(conn) = writer.as_ref() {
            return Ok(conn.clone());
        }
        let conn = self
            .client
            .get_multiplexed_async_connection_with_config(&connection_config())
            .await
            .map_err(unavailable)?;
        *writer = Some(conn.clone());
        Ok(conn)
    }

    async fn forget_connection(&self) {
        *self.writer.lock().await = None;
    }

    fn apply(&self, change: Change) {
        match change {
            Change::Revocation(r) => self.local.apply(r),
        }
    }

    /// Loads every stored change into local state; returns the stream position to follow from.
    async fn resync(&self, conn: &mut MultiplexedConnection) -> redis::RedisResult<String> {
        // Position first: anything written during the scan is then also replayed (idempotent).
        let last: StreamRangeReply =
            redis::cmd("XREVRANGE").arg(self.stream()).arg("+").arg("-").arg("COUNT").arg(1).query_async(conn).await?;
        let position = last.ids.first().map(|e| e.id.clone()).unwrap_or_else(|| "0-0".to_string());
        let mut cursor: u64 = 0;
        let mut loaded = 0usize;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{}:rev:*", self.prefix))
                .arg("COUNT")
                .arg(500)
                .query_async(conn)
                .await?;
            if !keys.is_empty() {
                let values: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query_async(conn).await?;
                for value in values.into_iter().flatten() {
                    match serde_json::from_str::<Change>(&value) {
                        Ok(change) => {
                            self.apply(change);
                            loaded += 1;
                        }
                        Err(e) => tracing::warn!(error = %e, "ignoring an unreadable state entry"),
                    }
                }
            }
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        tracing::info!(entries = loaded, position = %position, "state resynced from Redis");
        Ok(position)
    }

    /// Follows the change stream forever: connect (with backoff), resync, then apply every new
    /// change; any error drops the connection and starts over with a resync.
    pub async fn follow(self: Arc<Self>) {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.follow_once().await {
                Ok(()) => {}
                Err(e) => {
                    self.health.lost();
                    tracing::warn!(error = %e, retry_in = ?backoff, "state backend unreachable; answering from local state");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            }
            backoff = Duration::from_millis(100);
        }
    }

    async fn follow_once(&self) -> redis::RedisResult<()> {
        let config = connection_config().set_response_timeout(Some(TIMEOUT + Duration::from_millis(BLOCK_MS)));
        let mut conn = self.client.get_multiplexed_async_connection_with_config(&config).await?;
        let mut position = self.resync(&mut conn).await?;
        self.health.contact(unix_millis());
        self.health.mark_synced();
        loop {
            let reply: Option<StreamReadReply> = redis::cmd("XREAD")
                .arg("BLOCK")
                .arg(BLOCK_MS)
                .arg("COUNT")
                .arg(500)
                .arg("STREAMS")
                .arg(self.stream())
                .arg(&position)
                .query_async(&mut conn)
                .await?;
            let now = unix_millis();
            self.health.contact(now);
            let entries = reply.map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect::<Vec<_>>()).unwrap_or_default();
            if entries.is_empty() {
                metrics::gauge!(STREAM_LAG_SECONDS).set(0.0);
            }
            for entry in entries {
                if let Some(text) = entry.get::<String>("change") {
                    match serde_json::from_str::<Change>(&text) {
                        Ok(change) => self.apply(change),
                        Err(e) => tracing::warn!(error = %e, id = %entry.id, "ignoring an unreadable change"),
                    }
                }
                let written_ms = entry.id.split('-').next().and_then(|ms| ms.parse::<i64>().ok()).unwrap_or(now);
                metrics::gauge!(STREAM_LAG_SECONDS).set((now - written_ms).max(0) as f64 / 1000.0);
                position = entry.id;
            }
        }
    }
}

impl RevocationCheck for RedisRevocations {
    fn revoked(&self, token: &VerifiedToken, now: UnixTime) -> Option<&'static str> {
        self.local.revoked(token, now)
    }
}

#[async_trait::async_trait]
impl RevocationStore for RedisRevocations {
    async fn add(&self, revocation: Revocation) -> Result<(), StoreError> {
        let now_secs = unix_millis() / 1000;
        let ttl = (revocation.expires_at() - now_secs).max(1);
        let change = serde_json::to_string(&Change::Revocation(revocation.clone())).map_err(unavailable)?;
        // A connection broken by a Redis restart fails once; a fresh one then gets one more try.
        // Both commands are idempotent to repeat (the key is overwritten, a stream duplicate
        // applies the same revocation again).
        let mut last_error = None;
        for _ in 0..2 {
            match self.write(&revocation, &change, ttl).await {
                Ok(()) => {
                    self.health.contact(unix_millis());
                    self.local.apply(revocation);
                    return Ok(());
                }
                Err(e) => {
                    self.forget_connection().await;
                    last_error = Some(e);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| unavailable("no attempt made")))
    }

    fn list(&self, now: UnixTime) -> Vec<Revocation> {
        self.local.list(now)
    }

    fn purge_expired(&self, now: UnixTime) {
        self.local.purge_expired(now);
    }
}

impl RedisRevocations {
    async fn write(&self, revocation: &Revocation, change: &str, ttl: i64) -> Result<(), StoreError> {
        let mut conn = self.connection().await?;
        redis::pipe()
            .atomic()
            .cmd("SET")
            .arg(self.key(revocation))
            .arg(change)
            .arg("EX")
            .arg(ttl)
            .ignore()
            .cmd("XADD")
            .arg(self.stream())
            .arg("MAXLEN")
            .arg("~")
            .arg(STREAM_MAXLEN)
            .arg("*")
            .arg("change")
            .arg(change)
            .ignore()
            .query_async::<()>(&mut conn)
            .await
            .map_err(unavailable)
    }
}
