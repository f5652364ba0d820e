//! Dynamic IP blocks (admin API and auto-block) and the failure counts behind auto-block.
//! Reads are local; writes go through a [`BlockStore`] (memory, or Redis for the fleet).

use crate::decision::{BlockCheck, UnixTime, parse_cidr};
use crate::state::StoreError;
use ip_network::IpNetwork;
use ip_network_table::IpNetworkTable;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};

pub const IP_BLOCKS_ACTIVE: &str = "portcullis_ip_blocks_active";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Block {
    pub cidr: String,
    pub expires_at: i64,
}

#[async_trait::async_trait]
pub trait BlockStore: BlockCheck + Send + Sync {
    /// Stores and applies a block (the admin API: stored before applied).
    async fn block(&self, block: Block) -> Result<(), StoreError>;
    /// Applies a block to local state at once (auto-block: protection never waits on a
    /// backend); a shared backend also gets [`BlockStore::block`], and writes back at its next
    /// resync what it could not store.
    fn block_locally(&self, block: &Block);
    async fn unblock(&self, cidr: &str) -> Result<(), StoreError>;
    fn list(&self, now: UnixTime) -> Vec<Block>;
    /// Counts one failure for `key` at `now` in this replica and returns the failures within
    /// `window_secs`.
    fn count_failure(&self, key: &str, now: UnixTime, window_secs: i64) -> u32;
    /// Shares one failure with the fleet and returns the fleet's count within `window_secs`
    /// (0 for a backend with no fleet).
    async fn share_failure(&self, key: &str, now: UnixTime, window_secs: i64) -> Result<u32, StoreError>;
}

/// Most clients whose recent failures are remembered; past it the least recently failing are
/// forgotten first (`portcullis_state_evictions_total{what="failure_windows"}`).
pub const MAX_FAILURE_KEYS: u64 = 100_000;
pub const EVICTIONS_TOTAL: &str = "portcullis_state_evictions_total";

/// One client's recent failure times; forgotten a window after its last failure.
#[derive(Debug)]
struct Window {
    window_secs: i64,
    times: VecDeque<i64>,
}

/// A window lives as long as it can still count: `window_secs` after its last failure.
struct WindowExpiry;

impl moka::Expiry<String, Arc<Mutex<Window>>> for WindowExpiry {
    fn expire_after_create(
        &self,
        _key: &String,
        value: &Arc<Mutex<Window>>,
        _now: std::time::Instant,
    ) -> Option<std::time::Duration> {
        let secs = value.lock().map(|w| w.window_secs).unwrap_or(1);
        Some(std::time::Duration::from_secs(secs.max(1) as u64))
    }

    fn expire_after_read(
        &self,
        key: &String,
        value: &Arc<Mutex<Window>>,
        now: std::time::Instant,
        _remaining: Option<std::time::Duration>,
        _last_modified_at: std::time::Instant,
    ) -> Option<std::time::Duration> {
        // Every read adds a failure: the window restarts from it.
        self.expire_after_create(key, value, now)
    }
}

/// The local block table and failure windows.
pub struct MemoryBlocks {
    table: RwLock<IpNetworkTable<i64>>,
    failures: moka::sync::Cache<String, Arc<Mutex<Window>>>,
    /// The latest time a caller passed in (the injected clock's), for the live-blocks gauge.
    seen_now: std::sync::atomic::AtomicI64,
}

impl Default for MemoryBlocks {
    fn default() -> Self {
        let evicted = metrics::counter!(EVICTIONS_TOTAL, "what" => "failure_windows");
        let failures = moka::sync::Cache::builder()
            .max_capacity(MAX_FAILURE_KEYS)
            .eviction_policy(moka::policy::EvictionPolicy::lru())
            .expire_after(WindowExpiry)
            .eviction_listener(move |_, _, cause| {
                if cause == moka::notification::RemovalCause::Size {
                    evicted.increment(1);
                }
            })
            .build();
        Self { table: RwLock::new(IpNetworkTable::new()), failures, seen_now: std::sync::atomic::AtomicI64::new(0) }
    }
}

impl std::fmt::Debug for MemoryBlocks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBlocks").finish_non_exhaustive()
    }
}

impl MemoryBlocks {
    pub fn new() -> Self {
        Self::default()
    }

    /// Shows `block` as the ledger holds it (its expiry exactly: the newest write won).
    pub fn set_block(&self, block: &Block) {
        let Ok(net) = parse_cidr(&block.cidr) else { return };
        if let Ok(mut t) = self.table.write() {
            t.insert(net, block.expires_at);
        }
        self.publish_count();
    }

    pub fn apply_unblock(&self, cidr: &str) {
        let Ok(net) = parse_cidr(cidr) else { return };
        if let Ok(mut t) = self.table.write() {
            t.remove(net);
        }
        self.publish_count();
    }

    fn publish_count(&self) {
        let now = self.seen_now.load(std::sync::atomic::Ordering::Relaxed);
        let live = self.table.read().map(|t| t.iter().filter(|(_, e)| **e > now).count()).unwrap_or(0);
        metrics::gauge!(IP_BLOCKS_ACTIVE).set(live as f64);
    }

    /// Local sliding-window count (the memory backend's; Redis also counts fleet-wide).
    pub fn count_failure(&self, key: &str, now: UnixTime, window_secs: i64) -> u32 {
        self.seen_now.fetch_max(now.0, std::sync::atomic::Ordering::Relaxed);
        let window =
            self.failures.get_with_by_ref(key, || Arc::new(Mutex::new(Window { window_secs, times: VecDeque::new() })));
        // A poisoned window: count the client as at the limit rather than never.
        let Ok(mut window) = window.lock() else { return u32::MAX };
        window.window_secs = window_secs;
        window.times.push_back(now.0);
        while window.times.front().is_some_and(|t| *t <= now.0 - window_secs) {
            window.times.pop_front();
        }
        u32::try_from(window.times.len()).unwrap_or(u32::MAX)
    }

    /// Every live block.
    pub fn list(&self, now: UnixTime) -> Vec<Block> {
        let Ok(t) = self.table.read() else { return Vec::new() };
        let mut out: Vec<Block> = t
            .iter()
            .filter(|(_, e)| **e > now.0)
            .map(|(net, e)| Block { cidr: network_text(net), expires_at: *e })
            .collect();
        out.sort_by(|a, b| a.cidr.cmp(&b.cidr));
        out
    }

    /// The failure windows' upkeep and the live-blocks gauge (expired blocks leave through
    /// the ledger's purge).
    pub fn upkeep(&self, now: UnixTime) {
        self.seen_now.fetch_max(now.0, std::sync::atomic::Ordering::Relaxed);
        self.failures.run_pending_tasks();
        self.publish_count();
    }
}

impl BlockCheck for MemoryBlocks {
    fn blocked(&self, ip: IpAddr, now: UnixTime) -> bool {
        self.seen_now.fetch_max(now.0, std::sync::atomic::Ordering::Relaxed);
        // A poisoned lock means a writer panicked: block rather than guess.
        let Ok(t) = self.table.read() else { return true };
        t.matches(ip.to_canonical()).any(|(_, expires_at)| *expires_at > now.0)
    }
}

/// `10.0.0.0/8`, and single addresses without a prefix.
/// The one spelling of a network, the identity blocks and their tombstones are keyed by:
/// `10.9.9.9/32`, `10.9.9.9` and `::ffff:10.9.9.9` are all `10.9.9.9`.
pub fn canonical_cidr(text: &str) -> Result<String, String> {
    parse_cidr(text).map(network_text)
}

pub fn network_text(net: IpNetwork) -> String {
    match net {
        IpNetwork::V4(n) if n.netmask() == 32 => n.network_address().to_string(),
        IpNetwork::V6(n) if n.netmask() == 128 => n.network_address().to_string(),
        other => other.to_string(),
    }
}
