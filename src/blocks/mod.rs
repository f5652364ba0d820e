//! Dynamic IP blocks (admin API and auto-block) and the failure counts behind auto-block.
//! Reads are local; writes go through a [`BlockStore`] (memory, or Redis for the fleet).

use crate::decision::{BlockCheck, UnixTime, parse_cidr};
use crate::revocation::StoreError;
use ip_network::IpNetwork;
use ip_network_table::IpNetworkTable;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Mutex, RwLock};

pub const IP_BLOCKS_ACTIVE: &str = "portcullis_ip_blocks_active";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Block {
    pub cidr: String,
    pub expires_at: i64,
}

#[async_trait::async_trait]
pub trait BlockStore: BlockCheck + Send + Sync {
    async fn block(&self, block: Block) -> Result<(), StoreError>;
    async fn unblock(&self, cidr: &str) -> Result<(), StoreError>;
    fn list(&self, now: UnixTime) -> Vec<Block>;
    /// Counts one failure for `key` at `now` and returns the failures within `window_secs`
    /// (fleet-wide for a shared backend).
    async fn record_failure(&self, key: &str, now: UnixTime, window_secs: i64) -> Result<u32, StoreError>;
    fn purge_expired(&self, now: UnixTime);
}

/// The local block table and failure windows.
#[derive(Default)]
pub struct MemoryBlocks {
    table: RwLock<IpNetworkTable<i64>>,
    failures: Mutex<HashMap<String, VecDeque<i64>>>,
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

    pub fn apply_block(&self, block: &Block) {
        let Ok(net) = parse_cidr(&block.cidr) else { return };
        if let Ok(mut t) = self.table.write() {
            let e = t.exact_match(net).copied().unwrap_or(i64::MIN);
            t.insert(net, e.max(block.expires_at));
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

    /// Replaces every block (a resync from the backend's authoritative copy).
    pub fn replace_all(&self, blocks: &[Block]) {
        if let Ok(mut t) = self.table.write() {
            *t = IpNetworkTable::new();
            for b in blocks {
                if let Ok(net) = parse_cidr(&b.cidr) {
                    t.insert(net, b.expires_at);
                }
            }
        }
        self.publish_count();
    }

    fn publish_count(&self) {
        let now = crate::clock::unix_millis() / 1000;
        let live = self.table.read().map(|t| t.iter().filter(|(_, e)| **e > now).count()).unwrap_or(0);
        metrics::gauge!(IP_BLOCKS_ACTIVE).set(live as f64);
    }

    /// Local sliding-window count (the memory backend's; Redis counts fleet-wide).
    pub fn count_failure(&self, key: &str, now: UnixTime, window_secs: i64) -> u32 {
        let Ok(mut failures) = self.failures.lock() else { return 0 };
        let times = failures.entry(key.to_string()).or_default();
        times.push_back(now.0);
        while times.front().is_some_and(|t| *t <= now.0 - window_secs) {
            times.pop_front();
        }
        times.len() as u32
    }
}

impl BlockCheck for MemoryBlocks {
    fn blocked(&self, ip: IpAddr, now: UnixTime) -> bool {
        // A poisoned lock means a writer panicked: block rather than guess.
        let Ok(t) = self.table.read() else { return true };
        t.matches(ip.to_canonical()).any(|(_, expires_at)| *expires_at > now.0)
    }
}

#[async_trait::async_trait]
impl BlockStore for MemoryBlocks {
    async fn block(&self, block: Block) -> Result<(), StoreError> {
        self.apply_block(&block);
        Ok(())
    }

    async fn unblock(&self, cidr: &str) -> Result<(), StoreError> {
        self.apply_unblock(cidr);
        Ok(())
    }

    fn list(&self, now: UnixTime) -> Vec<Block> {
        let Ok(t) = self.table.read() else { return Vec::new() };
        let mut out: Vec<Block> = t
            .iter()
            .filter(|(_, e)| **e > now.0)
            .map(|(net, e)| Block { cidr: network_text(net), expires_at: *e })
            .collect();
        out.sort_by(|a, b| a.cidr.cmp(&b.cidr));
        out
    }

    async fn record_failure(&self, key: &str, now: UnixTime, window_secs: i64) -> Result<u32, StoreError> {
        Ok(self.count_failure(key, now, window_secs))
    }

    fn purge_expired(&self, now: UnixTime) {
        if let Ok(mut t) = self.table.write() {
            let expired: Vec<IpNetwork> = t.iter().filter(|(_, e)| **e <= now.0).map(|(n, _)| n).collect();
            for net in expired {
                t.remove(net);
            }
        }
        if let Ok(mut failures) = self.failures.lock() {
            // Idle keys go, so memory stays bounded by recent failures.
            failures.retain(|_, times| times.back().is_some_and(|t| *t > now.0 - 86_400));
        }
        self.publish_count();
    }
}

/// `10.0.0.0/8`, and single addresses without a prefix.
pub fn network_text(net: IpNetwork) -> String {
    match net {
        IpNetwork::V4(n) if n.netmask() == 32 => n.network_address().to_string(),
        IpNetwork::V6(n) if n.netmask() == 128 => n.network_address().to_string(),
        other => other.to_string(),
    }
}
