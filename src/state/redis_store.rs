//! The Redis state backend: write-through to Redis (one key per item plus a stream entry, in
//! one transaction), local reads, and the follower task that keeps every replica's local state
//! current. Holds revocations, tenant memberships, IP blocks, run-time API keys and their
//! revocations, and session last-seen times.

use super::StoreError;
use super::{RedisSettings, STREAM_LAG_SECONDS, StateHealth};
use crate::clock::Clock;
use crate::config::schema::RawApiKeyEntry;
use crate::decision::BlockCheck;
use crate::decision::parse_cidr;
use crate::decision::{
    ApiKey, ApiKeyCheck, KeyDigest, MembershipCheck, RevocationCheck, SessionCheck, TokenIds, UnixTime, VerifiedToken,
};
use crate::state::RedisTarget;
use crate::state::apikeys::{ApiKeyStore, MemoryApiKeys};
use crate::state::blocks::{Block, BlockStore, MemoryBlocks, canonical_cidr};
use crate::state::membership::{Member, MemberStore, MemoryMembers};
use crate::state::revocation::{MemoryRevocations, Revocation, RevocationStore};
use crate::state::sessions::{MemorySessions, SessionStore};
use redis::aio::MultiplexedConnection;
use redis::streams::{StreamRangeReply, StreamReadReply};
use redis::{AsyncConnectionConfig, Client, IntoConnectionInfo};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;

/// The streams keep about this many recent changes; a replica that falls further behind detects
/// the trimmed gap and resyncs.
const STREAM_MAXLEN: usize = 10_000;
pub const RESYNCS_TOTAL: &str = "portcullis_state_resyncs_total";
const TIMEOUT: Duration = Duration::from_secs(2);
const BLOCK_MS: u64 = 1_000;

/// One change on the stream (and, for additions, the value of its key).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Change {
    Revocation(Revocation),
    MemberPut(Member),
    MemberRemoved {
        tenant: String,
        iss: String,
        sub: String,
    },
    Block(Block),
    Unblock {
        cidr: String,
    },
    ApiKeyPut(KeyRecord),
    /// `sha256`: the revoked keys' digests (hex); empty in entries written before digests were
    /// kept, which revoke by name.
    ApiKeyRevoked {
        name: String,
        #[serde(default)]
        sha256: Vec<String>,
    },
    SessionSeen {
        iss: String,
        sid: String,
        at: i64,
    },
}

/// An API key as Redis stores it: a wire format of its own, apart from the policy file's
/// `RawApiKeyEntry`, so renaming a policy key never breaks a fleet of mixed versions. Unknown
/// fields (from a newer replica) are ignored rather than refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub name: String,
    pub sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default)]
    pub tenants: Vec<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
}

impl From<&RawApiKeyEntry> for KeyRecord {
    fn from(e: &RawApiKeyEntry) -> Self {
        Self {
            name: e.name.clone(),
            sha256: e.sha256.clone(),
            subject: e.subject.clone(),
            tenants: e.tenants.clone(),
            scopes: e.scopes.clone(),
            roles: e.roles.clone(),
            expires: e.expires.clone(),
        }
    }
}

impl From<KeyRecord> for RawApiKeyEntry {
    fn from(r: KeyRecord) -> Self {
        Self {
            name: r.name,
            sha256: r.sha256,
            subject: r.subject,
            tenants: r.tenants,
            scopes: r.scopes,
            roles: r.roles,
            expires: r.expires,
        }
    }
}

/// What a change does to its key.
enum KeyOp {
    Set { ttl: Option<i64> },
    Delete,
}

/// A key written in the same transaction: an unblock leaves a tombstone, a block clears it.
enum Companion {
    None,
    SetTombstone { key: String, cidr: String },
    ClearTombstone { key: String },
}

/// Whether two CIDR texts name one network (tombstones written before canonical spellings may
/// hold any spelling).
fn same_network(a: &str, b: &str) -> bool {
    matches!((parse_cidr(a), parse_cidr(b)), (Ok(a), Ok(b)) if a == b)
}

/// How long an unblock's tombstone outlives it: longer than any replica stays disconnected and
/// still holds the block (blocks themselves last hours at most in practice).
const TOMBSTONE_SECS: i64 = 7 * 86_400;

pub struct RedisState {
    revocations: MemoryRevocations,
    members: MemoryMembers,
    blocks: MemoryBlocks,
    api_keys: MemoryApiKeys,
    sessions: MemorySessions,
    client: Connector,
    writer: Mutex<Option<MultiplexedConnection>>,
    prefix: String,
    health: Arc<StateHealth>,
    clock: Arc<dyn Clock>,
    resync_interval: Duration,
}

impl std::fmt::Debug for RedisState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisState").field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

fn connection_config() -> AsyncConnectionConfig {
    AsyncConnectionConfig::new().set_connection_timeout(Some(TIMEOUT)).set_response_timeout(Some(TIMEOUT))
}

/// How connections to the Redis master are made: one URL, or whatever master the sentinels
/// name now (asked on every connect, so a failover is followed at the next reconnect).
enum Connector {
    Direct(Client),
    Sentinel(tokio::sync::Mutex<redis::sentinel::SentinelClient>),
}

impl Connector {
    fn new(settings: &RedisSettings) -> Result<Self, String> {
        crate::jwt::fetch::install_crypto_provider();
        let certificates = settings.tls.as_ref().map(|tls| redis::TlsCertificates {
            client_tls: match (&tls.cert_pem, &tls.key_pem) {
                (Some(cert), Some(key)) => {
                    Some(redis::ClientTlsConfig { client_cert: cert.clone(), client_key: key.clone() })
                }
                _ => None,
            },
            root_cert: tls.ca_pem.clone(),
        });
        match &settings.target {
            RedisTarget::Url(url) => {
                let mut info = url.as_str().into_connection_info().map_err(|e| format!("state.url: {e}"))?;
                let mut redis = info.redis_settings().clone();
                if let Some(user) = &settings.username {
                    redis = redis.set_username(user);
                }
                if let Some(password) = &settings.password {
                    redis = redis.set_password(password.expose());
                }
                info = info.set_redis_settings(redis);
                let client = match certificates {
                    Some(certs) => Client::build_with_tls(info, certs),
                    None => Client::open(info),
                };
                client.map(Self::Direct).map_err(|e| format!("state.url: {e}"))
            }
            RedisTarget::Sentinel { master, nodes, username, password } => {
                use redis::sentinel::{SentinelClientBuilder, SentinelServerType};
                let addrs = nodes.iter().filter_map(|node| {
                    let (host, port) = node.rsplit_once(':')?;
                    Some(redis::ConnectionAddr::Tcp(host.trim_matches(['[', ']']).to_string(), port.parse().ok()?))
                });
                let mut builder = SentinelClientBuilder::new(addrs, master, SentinelServerType::Master)
                    .map_err(|e| format!("state.sentinel: {e}"))?;
                if let Some(user) = &settings.username {
                    builder = builder.set_client_to_redis_username(user);
                }
                if let Some(pw) = &settings.password {
                    builder = builder.set_client_to_redis_password(pw.expose());
                }
                if let Some(user) = username {
                    builder = builder.set_client_to_sentinel_username(user);
                }
                if let Some(pw) = password {
                    builder = builder.set_client_to_sentinel_password(pw.expose());
                }
                if let Some(certs) = certificates {
                    builder = builder
                        .set_client_to_redis_tls_mode(redis::TlsMode::Secure)
                        .set_client_to_sentinel_tls_mode(redis::TlsMode::Secure)
                        .set_client_to_redis_certificates(certs.clone())
                        .set_client_to_sentinel_certificates(certs);
                }
                let client = builder.build().map_err(|e| format!("state.sentinel: {e}"))?;
                Ok(Self::Sentinel(tokio::sync::Mutex::new(client)))
            }
        }
    }

    async fn connect(&self, config: &AsyncConnectionConfig) -> redis::RedisResult<MultiplexedConnection> {
        match self {
            Self::Direct(client) => client.get_multiplexed_async_connection_with_config(config).await,
            Self::Sentinel(sentinel) => {
                let client = sentinel.lock().await.async_get_client().await?;
                client.get_multiplexed_async_connection_with_config(config).await
            }
        }
    }
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn digest(identity: &str) -> String {
    hex::encode(Sha256::digest(identity.as_bytes()))
}

impl RedisState {
    pub fn new(settings: &RedisSettings, health: Arc<StateHealth>, clock: Arc<dyn Clock>) -> Result<Self, String> {
        let client = Connector::new(settings)?;
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
            clock,
            resync_interval: settings.resync_interval,
        })
    }

    /// Revocations, blocks, members and API keys: a gap in it forces a resync.
    fn stream(&self) -> String {
        format!("{}:changes", self.prefix)
    }

    /// Session last-seen times: frequent and harmless to miss (a missed touch only makes a
    /// session look older), so they never push protective changes out of the main stream.
    fn sessions_stream(&self) -> String {
        format!("{}:sessions", self.prefix)
    }

    fn now_secs(&self) -> i64 {
        self.clock.now().0
    }

    /// Marks an unblocked CIDR so a replica that still holds the block (it missed the change)
    /// drops it at resync instead of writing it back.
    fn tombstone_key(&self, cidr: &str) -> String {
        let canonical = canonical_cidr(cidr).unwrap_or_else(|_| cidr.trim().to_string());
        format!("{}:unblocked:{}", self.prefix, digest(&canonical))
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
            // By what it revokes, not by name: a second revocation under one name (a key put back
            // under that name, then revoked) must not overwrite the first one's digests.
            Change::ApiKeyRevoked { name, sha256 } => {
                let mut digests = sha256.clone();
                digests.sort();
                format!("{}:apikeyrev:{}", self.prefix, digest(&format!("{name}\0{}", digests.join(","))))
            }
            Change::SessionSeen { iss, sid, .. } => {
                format!("{}:seen:{}", self.prefix, digest(&format!("{iss}\0{sid}")))
            }
        }
    }

    fn block_key(&self, cidr: &str) -> String {
        let canonical = canonical_cidr(cidr).unwrap_or_else(|_| cidr.trim().to_string());
        format!("{}:block:{}", self.prefix, digest(&canonical))
    }

    fn member_key(&self, tenant: &str, iss: &str, sub: &str) -> String {
        format!("{}:member:{}", self.prefix, digest(&format!("{tenant}\0{iss}\0{sub}")))
    }

    async fn connection(&self) -> Result<MultiplexedConnection, StoreError> {
        let mut writer = self.writer.lock().await;
        if let Some(conn) = writer.as_ref() {
            return Ok(conn.clone());
        }
        let conn = self.client.connect(&connection_config()).await.map_err(unavailable)?;
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
            Change::ApiKeyPut(record) => self.api_keys.apply_put(&record.into()),
            Change::ApiKeyRevoked { name, sha256 } => {
                let digests: Vec<KeyDigest> =
                    sha256.iter().filter_map(|h| hex::decode(h).ok()?.try_into().ok()).collect();
                self.api_keys.apply_revoke(&name, &digests);
            }
            Change::SessionSeen { iss, sid, at } => self.sessions.apply_touch(&iss, &sid, at),
        }
    }

    /// Writes `change` to its key and its stream in one transaction, then applies it locally.
    /// A connection broken by a Redis restart fails once; a fresh one then gets one more try
    /// (repeating is harmless: the key is overwritten, a duplicate stream entry re-applies).
    async fn publish(&self, change: Change, op: KeyOp) -> Result<(), StoreError> {
        self.store(&change, &op).await?;
        self.apply(change);
        Ok(())
    }

    /// Writes `change` without applying it (the write-back of state held locally).
    async fn store(&self, change: &Change, op: &KeyOp) -> Result<(), StoreError> {
        let json = serde_json::to_string(change).map_err(unavailable)?;
        let key = self.key(change);
        let stream = if matches!(change, Change::SessionSeen { .. }) { self.sessions_stream() } else { self.stream() };
        let companion = match change {
            Change::Unblock { cidr } => Companion::SetTombstone { key: self.tombstone_key(cidr), cidr: cidr.clone() },
            Change::Block(b) => Companion::ClearTombstone { key: self.tombstone_key(&b.cidr) },
            _ => Companion::None,
        };
        let mut last_error = None;
        for _ in 0..2 {
            match self.write(&key, &json, op, &stream, &companion).await {
                Ok(()) => {
                    self.health.contact();
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

    async fn write(
        &self,
        key: &str,
        json: &str,
        op: &KeyOp,
        stream: &str,
        companion: &Companion,
    ) -> Result<(), StoreError> {
        let mut conn = self.connection().await?;
        let mut pipe = redis::pipe();
        pipe.atomic();
        match op {
            KeyOp::Set { ttl: Some(ttl) } => pipe.cmd("SET").arg(key).arg(json).arg("EX").arg(*ttl).ignore(),
            KeyOp::Set { ttl: None } => pipe.cmd("SET").arg(key).arg(json).ignore(),
            KeyOp::Delete => pipe.cmd("DEL").arg(key).ignore(),
        };
        match companion {
            Companion::SetTombstone { key, cidr } => {
                pipe.cmd("SET").arg(key).arg(cidr).arg("EX").arg(TOMBSTONE_SECS).ignore()
            }
            Companion::ClearTombstone { key } => pipe.cmd("DEL").arg(key).ignore(),
            Companion::None => &mut pipe,
        };
        pipe.cmd("XADD")
            .arg(stream)
            .arg("MAXLEN")
            .arg("~")
            .arg(STREAM_MAXLEN)
            .arg("*")
            .arg("change")
            .arg(json)
            .ignore();
        pipe.query_async::<()>(&mut conn).await.map_err(unavailable)
    }

    /// Every change stored under `pattern` (unreadable entries are skipped with a warning).
    async fn scan_values(&self, conn: &mut MultiplexedConnection, pattern: String) -> redis::RedisResult<Vec<Change>> {
        let values = self.scan_strings(conn, pattern).await?;
        Ok(values
            .into_iter()
            .filter_map(|value| match serde_json::from_str::<Change>(&value) {
                Ok(change) => Some(change),
                Err(e) => {
                    tracing::warn!(error = %e, "ignoring an unreadable state entry");
                    None
                }
            })
            .collect())
    }

    /// The newest entry id of `stream` (`0-0` when empty or absent).
    async fn last_id(conn: &mut MultiplexedConnection, stream: String) -> redis::RedisResult<String> {
        let last: StreamRangeReply =
            redis::cmd("XREVRANGE").arg(stream).arg("+").arg("-").arg("COUNT").arg(1).query_async(conn).await?;
        Ok(last.ids.first().map(|e| e.id.clone()).unwrap_or_else(|| "0-0".to_string()))
    }

    /// Loads the stored state into local state and writes back the protective state Redis no
    /// longer holds (a Redis restarted empty, a block decided while Redis was down): the union
    /// of revocations and blocks survives, and only the admin API removes a block (its
    /// tombstone). Memberships are replaced, since a removal missed while disconnected must not
    /// leave a member in. Returns the positions to follow the two streams from.
    async fn resync(
        &self,
        conn: &mut MultiplexedConnection,
        reason: &'static str,
    ) -> redis::RedisResult<(String, String)> {
        metrics::counter!(RESYNCS_TOTAL, "reason" => reason).increment(1);
        // Positions first: anything written during the scan is then also replayed (idempotent).
        let position = Self::last_id(conn, self.stream()).await?;
        let sessions_position = Self::last_id(conn, self.sessions_stream()).await?;
        let revocations: Vec<Revocation> = self
            .scan_values(conn, format!("{}:rev:*", self.prefix))
            .await?
            .into_iter()
            .filter_map(|c| match c {
                Change::Revocation(r) => Some(r),
                _ => None,
            })
            .collect();
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
        let unblocked = self.scan_strings(conn, format!("{}:unblocked:*", self.prefix)).await?;
        let counts = (revocations.len(), members.len(), blocks.len());
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
        // API-key revocations are protective like revocations and blocks: the union survives.
        let held_key_revocations: std::collections::HashSet<String> = others
            .iter()
            .filter_map(|c| match c {
                Change::ApiKeyRevoked { sha256, .. } => Some(sha256.iter().cloned()),
                _ => None,
            })
            .flatten()
            .collect();
        let missing_key_revocations: Vec<Change> = self
            .api_keys
            .revoked_digests()
            .into_iter()
            .filter(|(d, _)| !held_key_revocations.contains(&hex::encode(d)))
            .map(|(d, name)| Change::ApiKeyRevoked { name, sha256: vec![hex::encode(d)] })
            .collect();

        // What Redis holds, to compare local state with before merging it in.
        let held = MemoryRevocations::new();
        for r in &revocations {
            held.apply(r.clone());
        }
        let held_blocks = MemoryBlocks::new();
        held_blocks.replace_all(&blocks);
        let now = self.clock.now();
        let missing_revocations: Vec<Revocation> =
            self.revocations.list(now).into_iter().filter(|r| !held.covers(r)).collect();
        let missing_blocks: Vec<Block> = self
            .blocks
            .list(now)
            .into_iter()
            .filter(|b| !held_blocks.covers(b) && !unblocked.iter().any(|c| same_network(c, &b.cidr)))
            .collect();

        for r in revocations {
            self.revocations.apply(r);
        }
        for b in &blocks {
            self.blocks.apply_block(b);
        }
        for cidr in &unblocked {
            self.blocks.apply_unblock(cidr);
        }
        for change in others {
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
        let written_back = missing_revocations.len() + missing_blocks.len() + missing_key_revocations.len();
        for change in missing_key_revocations {
            if let Err(e) = self.store(&change, &KeyOp::Set { ttl: None }).await {
                tracing::warn!(error = %e, "could not write an API-key revocation back to Redis");
            }
        }
        for r in missing_revocations {
            let op = self.revocation_op(&r);
            if let Err(e) = self.store(&Change::Revocation(r), &op).await {
                tracing::warn!(error = %e, "could not write a revocation back to Redis");
            }
        }
        for b in missing_blocks {
            let ttl = (b.expires_at - now.0).max(1);
            if let Err(e) = self.store(&Change::Block(b), &KeyOp::Set { ttl: Some(ttl) }).await {
                tracing::warn!(error = %e, "could not write a block back to Redis");
            }
        }
        tracing::info!(
            reason,
            revocations = counts.0,
            members = counts.1,
            blocks = counts.2,
            written_back,
            position = %position,
            "state resynced from Redis"
        );
        Ok((position, sessions_position))
    }

    /// Every string value under `pattern` (tombstones hold the CIDR they cover).
    async fn scan_strings(&self, conn: &mut MultiplexedConnection, pattern: String) -> redis::RedisResult<Vec<String>> {
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
                out.extend(values.into_iter().flatten());
            }
            cursor = next;
            if cursor == 0 {
                return Ok(out);
            }
        }
    }

    fn revocation_op(&self, revocation: &Revocation) -> KeyOp {
        let expires_at = revocation.expires_at();
        KeyOp::Set {
            ttl: (expires_at != crate::state::revocation::NEVER).then(|| (expires_at - self.now_secs()).max(1)),
        }
    }

    /// Whether entries after `position` on the main stream may have been trimmed away (or the
    /// stream lost), asked after reading from it. Trimming removes the oldest entries first, so
    /// while `position` itself is still there nothing after it was removed before the read; once
    /// it is gone, the read may have missed entries (a rare false alarm costs one resync). With
    /// nothing read yet (`0-0`), any entry ever removed was one this replica never saw.
    async fn gap_after(conn: &mut MultiplexedConnection, stream: &str, position: &str) -> redis::RedisResult<bool> {
        if position == "0-0" {
            let info: redis::RedisResult<redis::Value> =
                redis::cmd("XINFO").arg("STREAM").arg(stream).query_async(conn).await;
            let Ok(info) = info else { return Ok(false) }; // no stream yet: nothing was removed
            let number = |name| info_field(&info, name).and_then(|v| v.parse::<u64>().ok());
            return Ok(matches!((number("entries-added"), number("length")), (Some(added), Some(len)) if added > len));
        }
        let still: StreamRangeReply =
            redis::cmd("XRANGE").arg(stream).arg(position).arg(position).query_async(conn).await?;
        Ok(still.ids.is_empty())
    }

    /// Follows the change streams forever: connect (with backoff), resync, then apply every new
    /// change; a trimmed gap or the periodic backstop resyncs in place; any error drops the
    /// connection and starts over with a resync.
    pub async fn follow(self: Arc<Self>) {
        let mut backoff = Duration::from_millis(100);
        let mut reason = "start";
        loop {
            if let Err(e) = self.follow_once(reason).await {
                self.health.lost();
                let error = crate::telemetry::error_chain(&e);
                tracing::warn!(%error, retry_in = ?backoff, "state backend unreachable; answering from local state");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                reason = "reconnect";
                continue;
            }
            backoff = Duration::from_millis(100);
        }
    }

    async fn follow_once(&self, reason: &'static str) -> redis::RedisResult<()> {
        let config = connection_config().set_response_timeout(Some(TIMEOUT + Duration::from_millis(BLOCK_MS)));
        let mut conn = self.client.connect(&config).await?;
        let (mut position, mut sessions_position) = self.resync(&mut conn, reason).await?;
        let mut last_full = self.clock.now_millis();
        self.health.mark_synced();
        self.health.heard(self.clock.now_millis());
        let (stream, sessions) = (self.stream(), self.sessions_stream());
        loop {
            let interval = i64::try_from(self.resync_interval.as_millis()).unwrap_or(i64::MAX);
            if self.clock.now_millis().saturating_sub(last_full) >= interval {
                (position, sessions_position) = self.resync(&mut conn, "periodic").await?;
                last_full = self.clock.now_millis();
            }
            let reply: Option<StreamReadReply> = redis::cmd("XREAD")
                .arg("BLOCK")
                .arg(BLOCK_MS)
                .arg("COUNT")
                .arg(500)
                .arg("STREAMS")
                .arg(&stream)
                .arg(&sessions)
                .arg(&position)
                .arg(&sessions_position)
                .query_async(&mut conn)
                .await?;
            let now = self.clock.now_millis();
            self.health.heard(now);
            let read_from = position.clone();
            let mut lag = None;
            for key in reply.map(|r| r.keys).unwrap_or_default() {
                let main = key.key == stream;
                for entry in key.ids {
                    if let Some(text) = entry.get::<String>("change") {
                        match serde_json::from_str::<Change>(&text) {
                            Ok(change) => self.apply(change),
                            Err(e) => tracing::warn!(error = %e, id = %entry.id, "ignoring an unreadable change"),
                        }
                    }
                    let written_ms = entry.id.split('-').next().and_then(|ms| ms.parse::<i64>().ok()).unwrap_or(now);
                    lag = Some((now - written_ms).max(0));
                    if main { position = entry.id } else { sessions_position = entry.id }
                }
            }
            metrics::gauge!(STREAM_LAG_SECONDS).set(lag.unwrap_or(0) as f64 / 1000.0);
            // Entries between our position and what we read were trimmed (we were paused or
            // slow): only the keys still hold what they said.
            if Self::gap_after(&mut conn, &stream, &read_from).await? {
                tracing::warn!(position = %read_from, "the change stream was trimmed past this replica's position; resyncing");
                (position, sessions_position) = self.resync(&mut conn, "trimmed").await?;
                last_full = self.clock.now_millis();
            }
        }
    }
}

/// The value of `name` in an `XINFO STREAM` reply (a flat list or a map, by protocol version).
fn info_field(info: &redis::Value, name: &str) -> Option<String> {
    let text = |v: &redis::Value| match v {
        redis::Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        redis::Value::SimpleString(s) => Some(s.clone()),
        redis::Value::Int(n) => Some(n.to_string()),
        _ => None,
    };
    match info {
        redis::Value::Array(items) => {
            items.chunks(2).find(|kv| text(&kv[0]).as_deref() == Some(name)).and_then(|kv| kv.get(1)).and_then(text)
        }
        redis::Value::Map(pairs) => {
            pairs.iter().find(|(k, _)| text(k).as_deref() == Some(name)).and_then(|(_, v)| text(v))
        }
        _ => None,
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
        let op = self.revocation_op(&revocation);
        self.publish(Change::Revocation(revocation), op).await
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

    fn revoked(&self, digest: &KeyDigest, name: &str) -> bool {
        self.api_keys.revoked(digest, name)
    }
}

#[async_trait::async_trait]
impl ApiKeyStore for RedisState {
    async fn put(&self, entry: RawApiKeyEntry) -> Result<(), StoreError> {
        self.publish(Change::ApiKeyPut(KeyRecord::from(&entry)), KeyOp::Set { ttl: None }).await
    }

    async fn revoke(&self, name: &str, digests: Vec<KeyDigest>) -> Result<(), StoreError> {
        let change =
            Change::ApiKeyRevoked { name: name.to_string(), sha256: digests.iter().map(hex::encode).collect() };
        self.publish(change, KeyOp::Set { ttl: None }).await
    }

    fn digests_named(&self, name: &str) -> Vec<KeyDigest> {
        self.api_keys.digests_named(name)
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
        let ttl = (block.expires_at - self.now_secs()).max(1);
        self.publish(Change::Block(block), KeyOp::Set { ttl: Some(ttl) }).await
    }

    fn block_locally(&self, block: &Block) {
        self.blocks.apply_block(block);
    }

    async fn unblock(&self, cidr: &str) -> Result<(), StoreError> {
        self.publish(Change::Unblock { cidr: cidr.trim().to_string() }, KeyOp::Delete).await
    }

    fn list(&self, now: UnixTime) -> Vec<Block> {
        self.blocks.list(now)
    }

    fn count_failure(&self, key: &str, now: UnixTime, window_secs: i64) -> u32 {
        self.blocks.count_failure(key, now, window_secs)
    }

    /// Fleet-wide sliding window: one sorted set per client key, scored by time, expiring with
    /// the window.
    async fn share_failure(&self, key: &str, now: UnixTime, window_secs: i64) -> Result<u32, StoreError> {
        static SEQUENCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let ms = now.0.saturating_mul(1000).max(self.clock.now_millis());
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
                self.health.contact();
                Ok(count)
            }
            Err(e) => {
                self.forget_connection().await;
                Err(unavailable(e))
            }
        }
    }

    fn purge_expired(&self, now: UnixTime) {
        self.blocks.purge_expired(now);
    }
}

/// GCRA in one script, on Redis's own clock (replicas' clocks may differ), in microseconds (a
/// millisecond interval would round 600/s up to 1000/s): the key holds the theoretical arrival
/// time; a request is admitted when that is at most `interval × (burst − 1)` ahead of now. One
/// key per client, O(1), the same algorithm as the local governor limiter. Lua numbers are
/// doubles: microseconds since 1970 stay exact (< 2^53).
const GCRA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - interval * burst
if allow_at > now then
  return {0, math.ceil((allow_at - now) / 1000)}
end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1000)
return {1, 0}
"#;

impl RedisState {
    /// Opens the connection writes and fleet rate limits share, so the first limited check
    /// does not pay for the connect inside its 50 ms budget.
    pub async fn warm(&self) {
        if let Err(e) = self.connection().await {
            tracing::debug!(error = %e, "state backend not reachable yet; the first write connects");
        }
    }

    /// One fleet-wide rate-limit decision for `key` in `tier` (`rate_limits.tiers.*.scope:
    /// fleet`), one request every `interval_us` with `burst`: `Ok(Err(seconds))` when over.
    pub async fn gcra(
        &self,
        tier: &str,
        key: &str,
        interval_us: u64,
        burst: u32,
    ) -> Result<Result<(), u32>, StoreError> {
        static SCRIPT: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| redis::Script::new(GCRA));
        let rkey = format!("{}:rl:{}:{}", self.prefix, digest(tier), digest(key));
        let mut conn = self.connection().await?;
        let result: redis::RedisResult<(i64, i64)> =
            SCRIPT.key(&rkey).arg(interval_us).arg(burst).invoke_async(&mut conn).await;
        match result {
            Ok((admitted, wait_ms)) => {
                self.health.contact();
                if admitted == 1 {
                    Ok(Ok(()))
                } else {
                    let secs = u32::try_from((wait_ms.max(0) + 999) / 1000).unwrap_or(u32::MAX).max(1);
                    Ok(Err(secs))
                }
            }
            Err(e) => {
                // Only a broken connection is dropped (admin writes share it); a script or
                // permission error leaves it be.
                if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() {
                    self.forget_connection().await;
                }
                Err(unavailable(e))
            }
        }
    }
}
