//! The Redis state backend: write-through to Redis (one key per item plus a stream entry, in
//! one transaction), local reads, and the follower task that keeps every replica's local state
//! current. Holds revocations, tenant memberships, IP blocks, run-time API keys and their
//! revocations, and session last-seen times.

use super::{RedisSettings, STREAM_LAG_SECONDS, StateHealth};
use crate::apikeys::{ApiKeyStore, MemoryApiKeys};
use crate::blocks::{Block, BlockStore, MemoryBlocks};
use crate::clock::unix_millis;
use crate::config::schema::RawApiKeyEntry;
use crate::decision::BlockCheck;
use crate::decision::{
    ApiKey, ApiKeyCheck, KeyDigest, MembershipCheck, RevocationCheck, SessionCheck, TokenIds, UnixTime, VerifiedToken,
};
use crate::membership::{Member, MemberStore, MemoryMembers};
use crate::revocation::{MemoryRevocations, Revocation, RevocationStore, StoreError};
use crate::sessions::{MemorySessions, SessionStore};
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

/// One change on the stream (and, for additions, the value of its key).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Change {
    Revocation(Revocation),
    MemberPut(Member),
    MemberRemoved { tenant: String, iss: String, sub: String },
    Block(Block),
    Unblock { cidr: String },
    ApiKeyPut(RawApiKeyEntry),
    ApiKeyRevoked { name: String },
    SessionSeen { iss: String, sid: String, at: i64 },
}

/// What a change does to its key.
enum KeyOp {
    Set { ttl: Option<i64> },
    Delete,
}

pub struct RedisState {
    revocations: MemoryRevocations,
    members: MemoryMembers,
    blocks: MemoryBlocks,
    api_keys: MemoryApiKeys,
    sessions: MemorySessions,
    client: Client,
    writer: Mutex<Option<MultiplexedConnection>>,
    prefix: String,
    health: Arc<StateHealth>,
}

impl std::fmt::Debug for RedisState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisState").field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

fn connection_config() -> AsyncConnectionConfig {
    AsyncConnectionConfig::new().set_connection_timeout(Some(TIMEOUT)).set_response_timeout(Some(TIMEOUT))
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn digest(identity: &str) -> String {
    hex::encode(Sha256::digest(identity.as_bytes()))
}

impl RedisState {
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
            revocations: MemoryRevocations::new(),
            members: MemoryMembers::new(),
            blocks: MemoryBlocks::new(),
            api_keys: MemoryApiKeys::new(),
            sessions: MemorySessions::new(),
            client,
            writer: Mutex::new(None),
            prefix: settings.key_prefix.clone(),
            health,
        })
    }

    fn stream(&self) -> String {
        format!("{}:changes", self.prefix)
    }

    /// One key per item identity, so repeating a change overwrites rather than adds.
    fn key(&self, change: &Change) -> String {
        match change {
            Change::Revocation(r) => {
                let identity = match r {
                    Revocation::Jti { iss, jti, .. } => format!("jti\0{iss}\0{jti}"),
                    Revocation::Subject { iss, sub, before, .. } => format!("sub\0{iss}\0{sub}\0{before}"),
                    Revocation::Session { iss, sid, .. } => format!("sid\0{iss}\0{sid}"),
                    Revocation::Tenant { tenant, before, .. } => format!("tenant\0{tenant}\0{before}"),
                };
                format!("{}:rev:{}", self.prefix, digest(&identity))
            }
            Change::MemberPut(m) => self.member_key(&m.tenant, &m.iss, &m.sub),
            Change::MemberRemoved { tenant, iss, sub } => self.member_key(tenant, iss, sub),
            Change::Block(b) => self.block_key(&b.cidr),
            Change::Unblock { cidr } => self.block_key(cidr),
            Change::ApiKeyPut(entry) => format!("{}:apikey:{}", self.prefix, digest(&entry.name)),
            Change::ApiKeyRevoked { name } => format!("{}:apikeyrev:{}", self.prefix, digest(name)),
            Change::SessionSeen { iss, sid, .. } => {
                format!("{}:seen:{}", self.prefix, digest(&format!("{iss}\0{sid}")))
            }
        }
    }

    fn block_key(&self, cidr: &str) -> String {
        format!("{}:block:{}", self.prefix, digest(cidr.trim()))
    }

    fn member_key(&self, tenant: &str, iss: &str, sub: &str) -> String {
        format!("{}:member:{}", self.prefix, digest(&format!("{tenant}\0{iss}\0{sub}")))
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
            Change::Revocation(r) => self.revocations.apply(r),
            Change::MemberPut(m) => self.members.apply_put(m),
            Change::MemberRemoved { tenant, iss, sub } => self.members.apply_remove(&tenant, &iss, &sub),
            Change::Block(b) => self.blocks.apply_block(&b),
            Change::Unblock { cidr } => self.blocks.apply_unblock(&cidr),
            Change::ApiKeyPut(entry) => self.api_keys.apply_put(&entry),
            Change::ApiKeyRevoked { name } => self.api_keys.apply_revoke(&name),
            Change::SessionSeen { iss, sid, at } => self.sessions.apply_touch(&iss, &sid, at),
        }
    }

    /// Writes `change` to its key and the stream in one transaction, then applies it locally.
    /// A connection broken by a Redis restart fails once; a fresh one then gets one more try
    /// (repeating is harmless: the key is overwritten, a duplicate stream entry re-applies).
    async fn publish(&self, change: Change, op: KeyOp) -> Result<(), StoreError> {
        let json = serde_json::to_string(&change).map_err(unavailable)?;
        let key = self.key(&change);
        let mut last_error = None;
        for _ in 0..2 {
            match self.write(&key, &json, &op).await {
                Ok(()) => {
                    self.health.contact(unix_millis());
                    self.apply(change);
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

    async fn write(&self, key: &str, json: &str, op: &KeyOp) -> Result<(), StoreError> {
        let mut conn = self.connection().await?;
        let mut pipe = redis::pipe();
        pipe.atomic();
        match op {
            KeyOp::Set { ttl: Some(ttl) } => pipe.cmd("SET").arg(key).arg(json).arg("EX").arg(*ttl).ignore(),
            KeyOp::Set { ttl: None } => pipe.cmd("SET").arg(key).arg(json).ignore(),
            KeyOp::Delete => pipe.cmd("DEL").arg(key).ignore(),
        };
        pipe.cmd("XADD")
            .arg(self.stream())
            .arg("MAXLEN")
            .arg("~")
            .arg(STREAM_MAXLEN)
            .arg("*")
            .arg("change")
            .arg(json)
            .ignore();
        pipe.query_async::<()>(&mut conn).await.map_err(unavailable)
    }

    async fn scan_values(&self, conn: &mut MultiplexedConnection, pattern: String) -> redis::RedisResult<Vec<Change>> {
        let mut out = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(500)
                .query_async(conn)
                .await?;
            if !keys.is_empty() {
                let values: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query_async(conn).await?;
                for value in values.into_iter().flatten() {
                    match serde_json::from_str::<Change>(&value) {
                        Ok(change) => out.push(change),
                        Err(e) => tracing::warn!(error = %e, "ignoring an unreadable state entry"),
                    }
                }
            }
            cursor = next;
            if cursor == 0 {
                return Ok(out);
            }
        }
    }

    /// Loads the stored state into local state; returns the stream position to follow from.
    /// Revocations are added (local ones are never dropped); memberships are replaced, since
    /// a removal missed while disconnected must not leave a member in.
    async fn resync(&self, conn: &mut MultiplexedConnection) -> redis::RedisResult<String> {
        // Position first: anything written during the scan is then also replayed (idempotent).
        let last: StreamRangeReply =
            redis::cmd("XREVRANGE").arg(self.stream()).arg("+").arg("-").arg("COUNT").arg(1).query_async(conn).await?;
        let position = last.ids.first().map(|e| e.id.clone()).unwrap_or_else(|| "0-0".to_string());
        let revocations = self.scan_values(conn, format!("{}:rev:*", self.prefix)).await?;
        let members = self.scan_values(conn, format!("{}:member:*", self.prefix)).await?;
        let blocks: Vec<Block> = self
            .scan_values(conn, format!("{}:block:*", self.prefix))
            .await?
            .into_iter()
            .filter_map(|c| match c {
                Change::Block(b) => Some(b),
                _ => None,
            })
            .collect();
        self.blocks.replace_all(&blocks);
        let counts = (revocations.len(), members.len());
        // Additive like revocations: a key, a key revocation or a newer last-seen never undoes
        // anything local.
        let additive = [
            format!("{}:apikey:*", self.prefix),
            format!("{}:apikeyrev:*", self.prefix),
            format!("{}:seen:*", self.prefix),
        ];
        let mut others = Vec::new();
        for pattern in additive {
            others.extend(self.scan_values(conn, pattern).await?);
        }
        for change in revocations.into_iter().chain(others) {
            self.apply(change);
        }
        self.members.replace_all(
            members
                .into_iter()
                .filter_map(|c| match c {
                    Change::MemberPut(m) => Some(m),
                    _ => None,
                })
                .collect(),
        );
        tracing::info!(revocations = counts.0, members = counts.1, position = %position, "state resynced from Redis");
        Ok(position)
    }

    /// Follows the change stream forever: connect (with backoff), resync, then apply every new
    /// change; any error drops the connection and starts over with a resync.
    pub async fn follow(self: Arc<Self>) {
        let mut backoff = Duration::from_millis(100);
        loop {
            if let Err(e) = self.follow_once().await {
                self.health.lost();
                tracing::warn!(error = %e, retry_in = ?backoff, "state backend unreachable; answering from local state");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
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

impl RevocationCheck for RedisState {
    fn revoked(&self, token: &VerifiedToken, ids: &TokenIds, now: UnixTime) -> Option<&'static str> {
        self.revocations.revoked(token, ids, now)
    }

    fn tenant_revoked(&self, tenant: &str, token: &VerifiedToken, now: UnixTime) -> bool {
        self.revocations.tenant_revoked(tenant, token, now)
    }
}

#[async_trait::async_trait]
impl RevocationStore for RedisState {
    async fn add(&self, revocation: Revocation) -> Result<(), StoreError> {
        let expires_at = revocation.expires_at();
        let ttl = (expires_at != crate::revocation::NEVER).then(|| (expires_at - unix_millis() / 1000).max(1));
        self.publish(Change::Revocation(revocation), KeyOp::Set { ttl }).await
    }

    fn list(&self, now: UnixTime) -> Vec<Revocation> {
        self.revocations.list(now)
    }

    fn purge_expired(&self, now: UnixTime) {
        self.revocations.purge_expired(now);
    }
}

impl MembershipCheck for RedisState {
    fn member_roles(&self, tenant: &str, iss: &str, sub: &str) -> Option<Vec<String>> {
        self.members.member_roles(tenant, iss, sub)
    }
}

#[async_trait::async_trait]
impl MemberStore for RedisState {
    async fn put(&self, member: Member) -> Result<(), StoreError> {
        self.publish(Change::MemberPut(member), KeyOp::Set { ttl: None }).await
    }

    async fn remove(&self, tenant: &str, iss: &str, sub: &str) -> Result<(), StoreError> {
        let change = Change::MemberRemoved { tenant: tenant.into(), iss: iss.into(), sub: sub.into() };
        self.publish(change, KeyOp::Delete).await
    }
}

impl ApiKeyCheck for RedisState {
    fn find(&self, digest: &KeyDigest) -> Option<Arc<ApiKey>> {
        self.api_keys.find(digest)
    }

    fn revoked(&self, name: &str) -> bool {
        self.api_keys.revoked(name)
    }
}

#[async_trait::async_trait]
impl ApiKeyStore for RedisState {
    async fn put(&self, entry: RawApiKeyEntry) -> Result<(), StoreError> {
        self.publish(Change::ApiKeyPut(entry), KeyOp::Set { ttl: None }).await
    }

    async fn revoke(&self, name: &str) -> Result<(), StoreError> {
        self.publish(Change::ApiKeyRevoked { name: name.to_string() }, KeyOp::Set { ttl: None }).await
    }

    fn names(&self) -> Vec<String> {
        self.api_keys.names()
    }

    fn revoked_names(&self) -> Vec<String> {
        self.api_keys.revoked_names()
    }
}

impl SessionCheck for RedisState {
    fn last_seen(&self, iss: &str, sid: &str) -> Option<i64> {
        self.sessions.last_seen(iss, sid)
    }
}

#[async_trait::async_trait]
impl SessionStore for RedisState {
    /// Applied locally first so this replica does not write again within the granularity
    /// while Redis is slow; the key's TTL drops sessions nobody has used for a whole timeout.
    async fn touch(&self, iss: &str, sid: &str, at: i64, keep_secs: i64) -> Result<(), StoreError> {
        self.sessions.apply_touch(iss, sid, at);
        let change = Change::SessionSeen { iss: iss.to_string(), sid: sid.to_string(), at };
        self.publish(change, KeyOp::Set { ttl: Some(keep_secs.max(1)) }).await
    }

    fn purge_older_than(&self, oldest: UnixTime) {
        self.sessions.purge_older_than(oldest);
    }
}

impl BlockCheck for RedisState {
    fn blocked(&self, ip: std::net::IpAddr, now: UnixTime) -> bool {
        self.blocks.blocked(ip, now)
    }
}

#[async_trait::async_trait]
impl BlockStore for RedisState {
    async fn block(&self, block: Block) -> Result<(), StoreError> {
        let ttl = (block.expires_at - unix_millis() / 1000).max(1);
        self.publish(Change::Block(block), KeyOp::Set { ttl: Some(ttl) }).await
    }

    async fn unblock(&self, cidr: &str) -> Result<(), StoreError> {
        self.publish(Change::Unblock { cidr: cidr.trim().to_string() }, KeyOp::Delete).await
    }

    fn list(&self, now: UnixTime) -> Vec<Block> {
        self.blocks.list(now)
    }

    /// Fleet-wide sliding window: one sorted set per client key, scored by time.
    async fn record_failure(&self, key: &str, now: UnixTime, window_secs: i64) -> Result<u32, StoreError> {
        static SEQUENCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let ms = unix_millis();
        let member =
            format!("{ms}-{}-{}", std::process::id(), SEQUENCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        let zkey = format!("{}:fail:{}", self.prefix, digest(key));
        let mut conn = self.connection().await?;
        let result: redis::RedisResult<(u32,)> = redis::pipe()
            .atomic()
            .cmd("ZADD")
            .arg(&zkey)
            .arg(ms)
            .arg(&member)
            .ignore()
            .cmd("ZREMRANGEBYSCORE")
            .arg(&zkey)
            .arg("-inf")
            .arg(ms - window_secs * 1000)
            .ignore()
            .cmd("ZCARD")
            .arg(&zkey)
            .cmd("EXPIRE")
            .arg(&zkey)
            .arg(window_secs.max(1))
            .ignore()
            .query_async(&mut conn)
            .await;
        match result {
            Ok((count,)) => {
                self.health.contact(unix_millis());
                Ok(count)
            }
            Err(e) => {
                self.forget_connection().await;
                // Still count locally, so one replica keeps its own guard while Redis is away.
                tracing::warn!(error = %e, "failure count not shared: state backend unreachable");
                Ok(self.blocks.count_failure(key, now, window_secs))
            }
        }
    }

    fn purge_expired(&self, now: UnixTime) {
        self.blocks.purge_expired(now);
    }
}
