//! The Redis state backend: every kind of fleet state in one hash per kind
//! (`{prefix}:state:{kind}`, field = the identity's digest, value = the model's encoded entry),
//! written by one script that keeps the newer entry and appends it to the change stream; the
//! follower task that merges the streams into this replica's [`LocalState`]; and the resync
//! (on start, reconnect, a trimmed gap and periodically) that reads the hashes with `HSCAN`,
//! merges them in and writes back what Redis lost — all through the model's one merge rule.

use super::StoreError;
use super::redis_connect::{Conn, Connector, TIMEOUT, info_field};
use super::redis_migrate;
use super::{RedisSettings, STREAM_LAG_SECONDS, StateHealth};
use crate::clock::Clock;
use crate::decision::UnixTime;
use crate::state::fleet::{FleetState, Persist};
use crate::state::local::LocalState;
use crate::state::model::{Entry, Kind, MAX_FUTURE_MS};
use redis::streams::{StreamRangeReply, StreamReadReply};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;

/// The streams keep about this many recent changes; a replica that falls further behind detects
/// the trimmed gap and resyncs.
const STREAM_MAXLEN: usize = 10_000;
pub const RESYNCS_TOTAL: &str = "portcullis_state_resyncs_total";
const BLOCK_MS: u64 = 1_000;
const HSCAN_COUNT: usize = 1_000;

/// Stores an entry if it beats what is held — the model's order, `(written, rank, tiebreak)`,
/// compared as numbers — and appends it to the stream. An acknowledged write (`ARGV[6] == '1'`)
/// that does not beat it is moved one millisecond past it instead, so what the admin API
/// acknowledged wins. Followed kinds live in their kind's hash (`KEYS[1]`, field `ARGV[1]`) and
/// are appended to the stream `KEYS[2]` (`ARGV[7]` its length). A kind read on demand
/// (sessions) is one key of its own (`KEYS[1]`) expiring in `ARGV[8]` ms, never streamed
/// (`ARGV[7] == '0'`, no `KEYS[2]`): it spreads over a cluster and Redis forgets it by itself.
/// Returns the stored value, or nil.
const WRITE: &str = r#"
local own_key = ARGV[8] ~= ''
local w, r, h = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4], 16)
local cur
if own_key then cur = redis.call('GET', KEYS[1]) else cur = redis.call('HGET', KEYS[1], ARGV[1]) end
if cur then
  local cw, cr, ch = string.match(cur, '^(%d+):(%d+):(%x+):')
  cw, cr, ch = tonumber(cw), tonumber(cr), tonumber(ch or '0', 16)
  if cw and not (w > cw or (w == cw and (r > cr or (r == cr and h > ch)))) then
    if ARGV[6] ~= '1' then return false end
    w = cw + 1
  end
end
local value = string.format('%.0f', w) .. ':' .. ARGV[3] .. ':' .. ARGV[4] .. ':' .. ARGV[5]
if own_key then
  redis.call('SET', KEYS[1], value, 'PX', ARGV[8])
else
  redis.call('HSET', KEYS[1], ARGV[1], value)
end
if ARGV[7] ~= '0' then redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[7], '*', 'change', value) end
return value
"#;

/// Deletes a field only if it still holds the expired value a resync saw.
const DELETE_IF: &str = r#"
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then return redis.call('HDEL', KEYS[1], ARGV[1]) end
return 0
"#;

/// Records one failure at `ARGV[1]` ms and counts those inside the window.
const FAILURE: &str = r#"
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
local n = redis.call('ZCARD', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[4])
return n
"#;

static FAILURE_SCRIPT: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| redis::Script::new(FAILURE));
static WRITE_SCRIPT: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| redis::Script::new(WRITE));
static DELETE_SCRIPT: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| redis::Script::new(DELETE_IF));

/// The Redis half of [`RedisState`]: connections, names, and what the follower needs.
pub struct RedisBackend {
    client: Connector,
    writer: Mutex<Option<Conn>>,
    /// The bare prefix, for per-client keys (spread over a cluster's slots).
    prefix: String,
    /// The prefix of the keys this deployment shares as one unit (one slot in a cluster).
    shared: String,
    health: Arc<StateHealth>,
    clock: Arc<dyn Clock>,
    resync_interval: Duration,
    local: Arc<LocalState>,
    /// Entries read on demand (sessions), for a second: a flood of refused sessions costs Redis
    /// one read each per second, not one per request. Bounded.
    recent_reads: moka::sync::Cache<String, Option<Entry>>,
    /// The earlier release's session hash and stream were dropped (or tried) by this process.
    legacy_dropped: std::sync::atomic::AtomicBool,
}

/// How long an on-demand read is reused, and how many are kept.
const READ_REUSE: Duration = Duration::from_secs(1);
const READS_KEPT: u64 = 10_000;

/// Fleet state kept in Redis and followed by every replica.
pub type RedisState = FleetState<RedisBackend>;

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn digest(identity: &str) -> String {
    hex::encode(Sha256::digest(identity.as_bytes()))
}

impl FleetState<RedisBackend> {
    pub fn new(settings: &RedisSettings, health: Arc<StateHealth>, clock: Arc<dyn Clock>) -> Result<Self, String> {
        let local = Arc::new(LocalState::new());
        let client = Connector::new(settings)?;
        let backend = RedisBackend {
            shared: client.shared_prefix(&settings.key_prefix),
            client,
            writer: Mutex::new(None),
            prefix: settings.key_prefix.clone(),
            health,
            clock: clock.clone(),
            resync_interval: settings.resync_interval,
            local: local.clone(),
            recent_reads: moka::sync::Cache::builder().max_capacity(READS_KEPT).time_to_live(READ_REUSE).build(),
            legacy_dropped: std::sync::atomic::AtomicBool::new(false),
        };
        Ok(Self::with(local, backend, clock))
    }

    /// Follows the change streams forever (see [`RedisBackend::follow_once`]).
    pub async fn follow(self: Arc<Self>) {
        self.persist.follow().await
    }

    /// Opens the connection writes and fleet rate limits share, so the first limited check
    /// does not pay for the connect inside its 50 ms budget.
    pub async fn warm(&self) {
        self.persist.warm().await
    }

    /// A lease of a fleet-wide rate-limit budget (see [`RedisBackend::lease`]).
    pub async fn lease(
        &self,
        tier: &str,
        key: &str,
        interval_us: u64,
        burst: u32,
        want: u32,
    ) -> Result<Grant, StoreError> {
        self.persist.lease(tier, key, interval_us, burst, want).await
    }
}

impl RedisBackend {
    /// Revocations, blocks, members and API keys: a gap in it forces a resync. Session
    /// last-seen times are not streamed: each replica holds the sessions it has seen and reads
    /// another's from the hash when it would refuse it ([`Persist::read`]), so its memory
    /// follows its own traffic, not the fleet's.
    fn stream(&self) -> String {
        format!("{}:changes", self.shared)
    }

    /// A session's own key (the bare prefix: sessions spread over a cluster's slots).
    fn session_key(&self, field: &str) -> String {
        format!("{}:session:{field}", self.prefix)
    }

    /// The one hash of a kind.
    fn hash(&self, kind: Kind) -> String {
        format!("{}:state:{}", self.shared, kind.name())
    }

    async fn connection(&self) -> Result<Conn, StoreError> {
        let mut writer = self.writer.lock().await;
        if let Some(conn) = writer.as_ref() {
            return Ok(conn.clone());
        }
        let conn = self.client.connect(TIMEOUT).await.map_err(unavailable)?;
        *writer = Some(conn.clone());
        Ok(conn)
    }

    async fn forget_connection(&self) {
        *self.writer.lock().await = None;
    }

    /// Runs the write script on `conn`: the stored entry, or `None` when Redis holds a newer one.
    async fn write_on(&self, conn: &mut Conn, entry: &Entry, acknowledged: bool) -> redis::RedisResult<Option<Entry>> {
        let (_, rank, tiebreak) = entry.order();
        let mut invocation = WRITE_SCRIPT.prepare_invoke();
        let session = entry.kind() == Kind::Session;
        if session {
            invocation.key(self.session_key(&entry.field()));
        } else {
            invocation.key(self.hash(entry.kind())).key(self.stream());
        }
        invocation.arg(entry.field()).arg(entry.written_ms).arg(rank).arg(format!("{tiebreak:012x}"));
        invocation.arg(entry.encode_body()).arg(if acknowledged { "1" } else { "0" });
        if session {
            // Its own key, never streamed, kept as long as the entry holds: at least a second,
            // at most a year (a touch always names its end; the cap keeps PX valid regardless).
            const YEAR_MS: i64 = 366 * 86_400_000;
            let left_ms =
                entry.body.until.map_or(YEAR_MS, |until| until.saturating_mul(1000) - self.clock.now_millis());
            invocation.arg(0).arg(left_ms.clamp(1000, YEAR_MS));
        } else {
            invocation.arg(STREAM_MAXLEN).arg("");
        }
        let stored: Option<String> = invocation.invoke_async(conn).await?;
        Ok(stored.and_then(|text| match Entry::decode(&text) {
            Ok(entry) => Some(entry),
            Err(e) => {
                tracing::warn!(error = %e, "Redis answered an unreadable entry");
                None
            }
        }))
    }

    /// Reads every entry of every followed kind's hash, `HSCAN` by `HSCAN` (never a keyspace
    /// `SCAN`: the cost is the state's size, not the database's). Sessions are read one by one,
    /// on demand.
    async fn read_all(&self, conn: &mut Conn) -> redis::RedisResult<Vec<(String, Entry)>> {
        let mut out = Vec::new();
        for kind in Kind::ALL.into_iter().filter(|k| *k != Kind::Session) {
            let hash = self.hash(kind);
            let mut cursor: u64 = 0;
            loop {
                let (next, flat): (u64, Vec<String>) =
                    redis::cmd("HSCAN").arg(&hash).arg(cursor).arg("COUNT").arg(HSCAN_COUNT).query_async(conn).await?;
                let latest = self.clock.now_millis().saturating_add(MAX_FUTURE_MS);
                for pair in flat.chunks(2) {
                    let [field, value] = pair else { continue };
                    match Entry::decode(value) {
                        Ok(entry) if entry.written_ms > latest => {
                            tracing::warn!(hash = %hash, written_ms = entry.written_ms, "ignoring a state entry written in the future");
                        }
                        Ok(entry) if entry.field() != *field => {
                            tracing::warn!(hash = %hash, "ignoring a state entry stored under another identity");
                        }
                        Ok(entry) if entry.kind() == kind => out.push((value.clone(), entry)),
                        Ok(_) => tracing::warn!(hash = %hash, "ignoring an entry of another kind"),
                        Err(e) => tracing::warn!(error = %e, hash = %hash, "ignoring an unreadable state entry"),
                    }
                }
                cursor = next;
                if cursor == 0 {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// The newest entry id of `stream` (`0-0` when empty or absent).
    async fn last_id(conn: &mut Conn, stream: String) -> redis::RedisResult<String> {
        let last: StreamRangeReply =
            redis::cmd("XREVRANGE").arg(stream).arg("+").arg("-").arg("COUNT").arg(1).query_async(conn).await?;
        Ok(last.ids.first().map(|e| e.id.clone()).unwrap_or_else(|| "0-0".to_string()))
    }

    /// Merges Redis' view into this replica's and writes back what Redis lacks or holds older
    /// (a Redis restarted empty, a failover that lost writes, a block decided while Redis was
    /// down): the model's plan, for every followed kind alike (sessions are written by their
    /// touches and read on demand). Returns the stream position to follow from.
    async fn resync(&self, conn: &mut Conn, reason: &'static str) -> redis::RedisResult<String> {
        metrics::counter!(RESYNCS_TOTAL, "reason" => reason).increment(1);
        // Position first: anything written during the read is then also replayed (idempotent).
        let position = Self::last_id(conn, self.stream()).await?;
        // No release before this one ran on a cluster: there is nothing to migrate there (and
        // the old per-item keys would need a keyspace scan of every node).
        if !self.client.is_cluster()
            && let Some(migrated) = redis_migrate::old_entries(conn, &self.prefix, self.clock.now_millis()).await?
        {
            for entry in &migrated {
                self.write_on(conn, entry, false).await?;
            }
            redis_migrate::mark(conn, &self.prefix).await?;
        }
        // Session times of the release before this one (one hash, one stream, followed by
        // every replica) are no longer read: dropped, in the background of Redis' own thread.
        // Once a process, and best effort: an ACL user without UNLINK must not fail every resync.
        if !self.legacy_dropped.swap(true, std::sync::atomic::Ordering::Relaxed) {
            let legacy = (format!("{}:state:session", self.shared), format!("{}:sessions", self.shared));
            let dropped: redis::RedisResult<i64> =
                redis::cmd("UNLINK").arg(&legacy.0).arg(&legacy.1).query_async(conn).await;
            if let Err(e) = dropped {
                tracing::info!(error = %e, "could not drop the earlier release's session hash and stream; they are unused");
            }
        }
        let held = self.read_all(conn).await?;
        let now = self.clock.now().0;
        let texts: std::collections::HashMap<(Kind, String), String> =
            held.iter().map(|(text, e)| ((e.kind(), e.field()), text.clone())).collect();
        let mut plan = self.local.plan_resync(held.into_iter().map(|(_, e)| e).collect(), now);
        plan.give.retain(|e| e.kind() != Kind::Session);
        let (taken, given, expired) = (plan.take.len(), plan.give.len(), plan.expired.len());
        for entry in plan.take {
            self.local.merge(entry);
        }
        for entry in plan.give {
            self.write_on(conn, &entry, false).await?;
        }
        for entry in plan.expired {
            if let Some(text) = texts.get(&(entry.kind(), entry.field())) {
                let _: i64 =
                    DELETE_SCRIPT.key(self.hash(entry.kind())).arg(entry.field()).arg(text).invoke_async(conn).await?;
            }
        }
        tracing::info!(
            reason,
            taken,
            written_back = given,
            expired,
            entries = self.local.len(),
            position = %position,
            "state resynced from Redis"
        );
        Ok(position)
    }

    /// Whether entries after `position` on the main stream may have been trimmed away (or the
    /// stream lost), asked after reading from it. Trimming removes the oldest entries first, so
    /// while `position` itself is still there nothing after it was removed before the read; once
    /// it is gone, the read may have missed entries (a rare false alarm costs one resync). With
    /// nothing read yet (`0-0`), any entry ever removed was one this replica never saw.
    async fn gap_after(conn: &mut Conn, stream: &str, position: &str) -> redis::RedisResult<bool> {
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

    /// Follows the change streams forever: connect (with backoff), resync, then merge every new
    /// entry; a trimmed gap or the periodic backstop resyncs in place; any error drops the
    /// connection and starts over with a resync.
    async fn follow(&self) {
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
        let mut conn = self.client.connect(TIMEOUT + Duration::from_millis(BLOCK_MS)).await?;
        let mut position = self.resync(&mut conn, reason).await?;
        let mut last_full = self.clock.now_millis();
        self.health.mark_synced();
        self.health.heard(self.clock.now_millis());
        let stream = self.stream();
        loop {
            let interval = i64::try_from(self.resync_interval.as_millis()).unwrap_or(i64::MAX);
            if self.clock.now_millis().saturating_sub(last_full) >= interval {
                position = self.resync(&mut conn, "periodic").await?;
                last_full = self.clock.now_millis();
            }
            let reply: Option<StreamReadReply> = redis::cmd("XREAD")
                .arg("BLOCK")
                .arg(BLOCK_MS)
                .arg("COUNT")
                .arg(500)
                .arg("STREAMS")
                .arg(&stream)
                .arg(&position)
                .query_async(&mut conn)
                .await?;
            let now = self.clock.now_millis();
            self.health.heard(now);
            let read_from = position.clone();
            let mut lag = None;
            for key in reply.map(|r| r.keys).unwrap_or_default() {
                for entry in key.ids {
                    if let Some(text) = entry.get::<String>("change") {
                        match Entry::decode(&text) {
                            Ok(change) if change.written_ms > now.saturating_add(MAX_FUTURE_MS) => {
                                tracing::warn!(id = %entry.id, "ignoring a change written in the future");
                            }
                            Ok(change) => {
                                self.local.merge(change);
                            }
                            Err(e) => tracing::warn!(error = %e, id = %entry.id, "ignoring an unreadable change"),
                        }
                    }
                    let written_ms = entry.id.split('-').next().and_then(|ms| ms.parse::<i64>().ok()).unwrap_or(now);
                    lag = Some((now - written_ms).max(0));
                    position = entry.id;
                }
            }
            metrics::gauge!(STREAM_LAG_SECONDS).set(lag.unwrap_or(0) as f64 / 1000.0);
            // Entries between our position and what we read were trimmed (we were paused or
            // slow): only the hashes still hold what they said.
            if Self::gap_after(&mut conn, &stream, &read_from).await? {
                tracing::warn!(position = %read_from, "the change stream was trimmed past this replica's position; resyncing");
                position = self.resync(&mut conn, "trimmed").await?;
                last_full = self.clock.now_millis();
            }
        }
    }
}

#[async_trait::async_trait]
impl Persist for RedisBackend {
    /// One script per entry; a connection broken by a Redis restart fails once, a fresh one
    /// then gets one more try (repeating is harmless: the newer entry is kept either way).
    async fn write(&self, entry: Entry, acknowledged: bool) -> Result<Option<Entry>, StoreError> {
        let mut last_error = None;
        for _ in 0..2 {
            let mut conn = self.connection().await?;
            match self.write_on(&mut conn, &entry, acknowledged).await {
                Ok(stored) => {
                    self.health.contact();
                    return Ok(stored);
                }
                Err(e) => {
                    self.forget_connection().await;
                    last_error = Some(unavailable(e));
                }
            }
        }
        Err(last_error.unwrap_or_else(|| unavailable("no attempt made")))
    }

    /// One read of the identity (a session's own key, else its field), checked as a resync
    /// checks what it reads.
    async fn read(&self, probe: &Entry) -> Result<Option<Entry>, StoreError> {
        let (kind, field) = (probe.kind(), probe.field());
        let cache_key = format!("{}\0{field}", kind.name());
        if let Some(recent) = self.recent_reads.get(&cache_key) {
            return Ok(recent);
        }
        let mut conn = self.connection().await?;
        let value: redis::RedisResult<Option<String>> = if kind == Kind::Session {
            redis::cmd("GET").arg(self.session_key(&field)).query_async(&mut conn).await
        } else {
            redis::cmd("HGET").arg(self.hash(kind)).arg(&field).query_async(&mut conn).await
        };
        let value = match value {
            Ok(value) => value,
            Err(e) => {
                if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() {
                    self.forget_connection().await;
                }
                return Err(unavailable(e));
            }
        };
        self.health.contact();
        let latest = self.clock.now_millis().saturating_add(MAX_FUTURE_MS);
        let entry = value
            .and_then(|text| Entry::decode(&text).ok())
            .filter(|entry| entry.kind() == kind && entry.field() == field && entry.written_ms <= latest);
        self.recent_reads.insert(cache_key, entry.clone());
        Ok(entry)
    }

    /// `SET NX` with the proof's window: only the first replica to see it succeeds.
    async fn first_use(&self, key: &[u8; 32], ttl: Duration) -> Result<bool, StoreError> {
        let rkey = format!("{}:dpop:{}", self.prefix, hex::encode(key));
        let mut conn = self.connection().await?;
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let set: redis::RedisResult<Option<String>> =
            redis::cmd("SET").arg(&rkey).arg(1).arg("NX").arg("PX").arg(ms).query_async(&mut conn).await;
        match set {
            Ok(reply) => {
                self.health.contact();
                Ok(reply.is_some())
            }
            Err(e) => {
                self.forget_connection().await;
                Err(unavailable(e))
            }
        }
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
        // One script (not MULTI): the same on one Redis and in a cluster.
        let result: redis::RedisResult<u32> = FAILURE_SCRIPT
            .key(&zkey)
            .arg(ms)
            .arg(&member)
            .arg(ms - window_secs * 1000)
            .arg(window_secs.max(1))
            .invoke_async(&mut conn)
            .await;
        match result {
            Ok(count) => {
                self.health.contact();
                Ok(count)
            }
            Err(e) => {
                self.forget_connection().await;
                Err(unavailable(e))
            }
        }
    }
}

/// GCRA in one script, on Redis's own clock (replicas' clocks may differ), in microseconds (a
/// millisecond interval would round 600/s up to 1000/s): the key holds the theoretical arrival
/// time (TAT); a request is admitted when the TAT it leaves is at most `interval × burst` ahead
/// of now. A lease asks for `want` requests at once: as many as GCRA admits now are granted and
/// charged (the TAT moves by `granted × interval`), so a granted request is always one the
/// fleet's one count allowed. Returns `{granted, ms until one more could be admitted, ms until
/// `want` more could be}`. One key per client, O(1). Lua numbers are doubles: microseconds since
/// 1970 stay exact (< 2^53).
const LEASE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local admissible = math.floor((now + interval * burst - tat) / interval)
local granted = math.min(want, math.max(admissible, 0))
if granted > 0 then
  tat = tat + granted * interval
  redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 1000)
end
local one = math.max(0, tat + interval - interval * burst - now)
local all = math.max(0, tat + want * interval - interval * burst - now)
return {granted, math.ceil(one / 1000), math.ceil(all / 1000)}
"#;

/// What one lease call returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    pub granted: u32,
    /// Until one more request could be admitted (the client's Retry-After when none was).
    pub next_one_ms: u64,
    /// Until as many as were asked for could be.
    pub next_all_ms: u64,
}

impl RedisBackend {
    /// Opens the connection writes and fleet rate limits share, so the first limited check
    /// does not pay for the connect inside its 50 ms budget.
    pub async fn warm(&self) {
        if let Err(e) = self.connection().await {
            tracing::debug!(error = %e, "state backend not reachable yet; the first write connects");
        }
    }

    /// Leases up to `want` requests of `key`'s fleet-wide budget in `tier` (one request every
    /// `interval_us`, `burst`) in one script call.
    pub async fn lease(
        &self,
        tier: &str,
        key: &str,
        interval_us: u64,
        burst: u32,
        want: u32,
    ) -> Result<Grant, StoreError> {
        static SCRIPT: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| redis::Script::new(LEASE));
        let rkey = format!("{}:rl:{}:{}", self.prefix, digest(tier), digest(key));
        let mut conn = self.connection().await?;
        let result: redis::RedisResult<(i64, i64, i64)> =
            SCRIPT.key(&rkey).arg(interval_us).arg(burst).arg(want.max(1)).invoke_async(&mut conn).await;
        match result {
            Ok((granted, one, all)) => {
                self.health.contact();
                let ms = |v: i64| u64::try_from(v).unwrap_or(0);
                Ok(Grant { granted: u32::try_from(granted).unwrap_or(0), next_one_ms: ms(one), next_all_ms: ms(all) })
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
