//! Session last-seen times (`sessions.idle_timeout`): a local table read on every request,
//! written coarsely after allows through a [`SessionStore`] (memory, or Redis for the fleet).

use crate::decision::SessionCheck;
use crate::state::StoreError;
use std::collections::HashMap;
use std::sync::RwLock;

#[async_trait::async_trait]
pub trait SessionStore: SessionCheck + Send + Sync {
    /// Records that session (iss, sid) was used at `at`; `keep_secs` is how long the record
    /// matters (idle timeout + granularity).
    async fn touch(&self, iss: &str, sid: &str, at: i64, keep_secs: i64) -> Result<(), StoreError>;

    /// Asks the fleet for session (iss, sid)'s last-seen time and keeps it here when it is newer
    /// than `judged_at` (the time this replica refused it by): `true` then. A replica holds only
    /// the sessions it has seen, so its times are lower bounds; a refusal is confirmed here.
    async fn refresh(&self, iss: &str, sid: &str, judged_at: i64) -> Result<bool, StoreError>;
}

#[derive(Debug, Default)]
pub struct MemorySessions {
    seen: RwLock<HashMap<(String, String), i64>>,
}

impl MemorySessions {
    pub fn new() -> Self {
        Self::default()
    }

    /// Shows the last-seen time the ledger holds (its newest write won).
    pub fn set(&self, iss: &str, sid: &str, at: i64) {
        if let Ok(mut seen) = self.seen.write() {
            seen.insert((iss.to_string(), sid.to_string()), at);
        }
    }

    pub fn remove(&self, iss: &str, sid: &str) {
        if let Ok(mut seen) = self.seen.write() {
            seen.remove(&(iss.to_string(), sid.to_string()));
        }
    }

    pub fn len(&self) -> usize {
        self.seen.read().map(|s| s.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl SessionCheck for MemorySessions {
    fn last_seen(&self, iss: &str, sid: &str) -> Option<i64> {
        // Lookup by borrowed pair would need a custom key type; sessions are checked once per
        // request, so two short allocations are acceptable here.
        self.seen.read().ok()?.get(&(iss.to_string(), sid.to_string())).copied()
    }
}
