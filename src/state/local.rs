//! This replica's fleet state: the [`Ledger`] of winning entries and the indices the hot path
//! reads, changed together under one lock so an index never shows what the ledger lost.

use crate::decision::{
    ApiKey, ApiKeyCheck, BlockCheck, KeyDigest, MembershipCheck, RevocationCheck, SessionCheck, TokenIds, UnixTime,
    VerifiedToken,
};
use crate::state::apikeys::MemoryApiKeys;
use crate::state::blocks::MemoryBlocks;
use crate::state::membership::MemoryMembers;
use crate::state::model::{Entry, Item, Ledger, Lifetimes, ResyncPlan, Unbounded};
use crate::state::revocation::{MemoryRevocations, Revocation};
use crate::state::sessions::MemorySessions;
use std::sync::{Arc, Mutex, RwLock};

pub struct LocalState {
    ledger: Mutex<Ledger>,
    pub(crate) revocations: MemoryRevocations,
    pub(crate) members: MemoryMembers,
    pub(crate) blocks: MemoryBlocks,
    pub(crate) api_keys: MemoryApiKeys,
    pub(crate) sessions: MemorySessions,
    /// The revocation lifetimes of the policy in force (set at every purge tick).
    lifetimes: RwLock<Arc<dyn Lifetimes + Send + Sync>>,
}

impl Default for LocalState {
    fn default() -> Self {
        Self {
            ledger: Mutex::new(Ledger::new()),
            revocations: MemoryRevocations::new(),
            members: MemoryMembers::new(),
            blocks: MemoryBlocks::new(),
            api_keys: MemoryApiKeys::new(),
            sessions: MemorySessions::new(),
            lifetimes: RwLock::new(Arc::new(Unbounded)),
        }
    }
}

impl std::fmt::Debug for LocalState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalState").field("entries", &self.len()).finish_non_exhaustive()
    }
}

impl LocalState {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.ledger.lock().map(|l| l.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Merges one entry by the model's rule; `true` when it won and the indices now show it.
    pub fn merge(&self, entry: Entry) -> bool {
        let Ok(mut ledger) = self.ledger.lock() else { return false };
        match ledger.merge(entry.clone()) {
            Some(_previous) => {
                self.apply(&entry, &ledger);
                true
            }
            None => false,
        }
    }

    /// The entry held for `entry`'s identity.
    pub fn held(&self, entry: &Entry) -> Option<Entry> {
        self.ledger.lock().ok()?.get(&entry.identity()).cloned()
    }

    pub fn entries(&self) -> Vec<Entry> {
        self.ledger.lock().map(|l| l.entries().cloned().collect()).unwrap_or_default()
    }

    /// Compares this replica's view with another's (see [`Ledger::plan_resync`]).
    pub fn plan_resync(&self, other: Vec<Entry>, now: i64) -> ResyncPlan {
        let lifetimes = self.lifetimes();
        match self.ledger.lock() {
            Ok(ledger) => ledger.plan_resync(other, now, lifetimes.as_ref()),
            Err(_) => ResyncPlan::default(),
        }
    }

    pub fn lifetimes(&self) -> Arc<dyn Lifetimes + Send + Sync> {
        self.lifetimes.read().map(|l| l.clone()).unwrap_or_else(|_| Arc::new(Unbounded))
    }

    /// Forgets what no longer holds under the policy in force (`lifetimes`, kept for resyncs).
    pub fn purge(&self, now: UnixTime, lifetimes: Arc<dyn Lifetimes + Send + Sync>) {
        if let Ok(mut held) = self.lifetimes.write() {
            *held = lifetimes.clone();
        }
        let Ok(mut ledger) = self.ledger.lock() else { return };
        let gone = ledger.purge(now.0, lifetimes.as_ref());
        let mut revocations = false;
        for entry in gone.iter().filter(|e| !e.is_removal()) {
            match &entry.body.item {
                Item::Revocation(_) => revocations = true,
                Item::Block(b) => self.blocks.apply_unblock(&b.cidr),
                Item::Session { iss, sid, .. } => self.sessions.remove(iss, sid),
                Item::ApiKey(k) => self.api_keys.apply_remove(&k.sha256),
                Item::KeyRevocation { sha256, .. } => self.api_keys.apply_unrevoke(sha256),
                Item::Member(m) => self.members.apply_remove(&m.tenant, &m.iss, &m.sub),
            }
        }
        if revocations {
            self.rebuild_revocations(&ledger);
        }
        self.blocks.upkeep(now);
    }

    fn rebuild_revocations(&self, ledger: &Ledger) {
        let live = ledger.entries().filter(|e| !e.is_removal()).filter_map(|e| match &e.body.item {
            Item::Revocation(r) => Some(r.clone()),
            _ => None,
        });
        self.revocations.replace_all(live);
    }

    /// Shows the winning `entry` in its index (called with the ledger locked).
    fn apply(&self, entry: &Entry, ledger: &Ledger) {
        match (&entry.body.item, entry.is_removal()) {
            (Item::Revocation(r), false) => self.revocations.apply(r.clone()),
            (Item::Revocation(_), true) => self.rebuild_revocations(ledger),
            (Item::Block(b), false) => self.blocks.set_block(b),
            (Item::Block(b), true) => self.blocks.apply_unblock(&b.cidr),
            (Item::Member(m), false) => self.members.apply_put(m.clone()),
            (Item::Member(m), true) => self.members.apply_remove(&m.tenant, &m.iss, &m.sub),
            (Item::ApiKey(k), false) => self.api_keys.apply_put(&k.clone().into()),
            (Item::ApiKey(k), true) => self.api_keys.apply_remove(&k.sha256),
            (Item::KeyRevocation { name, sha256 }, false) => self.api_keys.apply_revoke(name, sha256),
            (Item::KeyRevocation { sha256, .. }, true) => self.api_keys.apply_unrevoke(sha256),
            (Item::Session { iss, sid, at }, false) => self.sessions.set(iss, sid, *at),
            (Item::Session { iss, sid, .. }, true) => self.sessions.remove(iss, sid),
        }
    }

    pub fn revocation_list(&self, now: UnixTime) -> Vec<Revocation> {
        self.revocations.list(now)
    }
}

impl RevocationCheck for LocalState {
    fn revoked(&self, token: &VerifiedToken, ids: &TokenIds, now: UnixTime) -> Option<&'static str> {
        self.revocations.revoked(token, ids, now)
    }

    fn tenant_revoked(&self, tenant: &str, token: &VerifiedToken, now: UnixTime) -> bool {
        self.revocations.tenant_revoked(tenant, token, now)
    }
}

impl MembershipCheck for LocalState {
    fn member_roles(&self, tenant: &str, iss: &str, sub: &str) -> Option<Vec<String>> {
        self.members.member_roles(tenant, iss, sub)
    }
}

impl BlockCheck for LocalState {
    fn blocked(&self, ip: std::net::IpAddr, now: UnixTime) -> bool {
        self.blocks.blocked(ip, now)
    }
}

impl ApiKeyCheck for LocalState {
    fn find(&self, digest: &KeyDigest) -> Option<Arc<ApiKey>> {
        self.api_keys.find(digest)
    }

    fn revoked(&self, digest: &KeyDigest, name: &str) -> bool {
        self.api_keys.revoked(digest, name)
    }
}

impl SessionCheck for LocalState {
    fn last_seen(&self, iss: &str, sid: &str) -> Option<i64> {
        self.sessions.last_seen(iss, sid)
    }
}
