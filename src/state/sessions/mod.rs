//! Session last-seen times (`sessions.idle_timeout`): a local table read on every request,
//! written coarsely after allows through a [`SessionStore`] (memory, or Redis for the fleet).

use crate::decision::{SessionCheck, UnixTime};
use crate::state::StoreError;
use std::collections::HashMap;
use std::sync::RwLock;

#[async_trait::async_trait]
pub trait SessionStore: SessionCheck + Send + Sync {
    /// Records that session (iss, sid) was used at `at`; `keep_secs` is how long the record
    /// matters (idle timeout + granularity).
    async fn touch(&self, iss: &str, sid: &str, at: i64, keep_secs: i64) -> Result<(), StoreError>;
    /// Forgets sessions last seen before `oldest`.
    fn purge_older_than(&self, oldest: UnixTime);
}

#[derive(Debug, Default)]
pub struct MemorySessions {
    seen: RwLock<HashMap<(String, String), i64>>,
}

impl MemorySessions {
    pub fn new() -> Self {
        Self::default()
    }

    /// Last-seen only moves forward, so replaying an old change never revives a session.
    pub fn apply_touch(&self, iss: &str, sid: &str, at: i64) {
        if let Ok(mut seen) = self.seen.write() {
            let entry = seen.entry((iss.to_string(), sid.to_string())).or_insert(at);
            *entry = (*entry).max(at);
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

#[async_trait::async_trait]
impl SessionStore for MemorySessions {
    async fn touch(&self, iss: &str, sid: &str, at: i64, _keep_secs: i64) -> Result<(), StoreError> {
        self.apply_touch(iss, sid, at);
        Ok(())
    }

    fn purge_older_than(&self, oldest: UnixTime) {
        if let Ok(mut seen) = self.seen.write() {
            seen.retain(|_, at| *at >= oldest.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_seen_only_moves_forward_and_purges() {
        let s = MemorySessions::new();
        s.apply_touch("iss", "a", 100);
        s.apply_touch("iss", "a", 90);
        assert_eq!(s.last_seen("iss", "a"), Some(100));
        assert_eq!(s.last_seen("other", "a"), None);
        s.apply_touch("iss", "b", 50);
        s.purge_older_than(UnixTime(60));
        assert_eq!((s.last_seen("iss", "a"), s.last_seen("iss", "b")), (Some(100), None));
    }
}
