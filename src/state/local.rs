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
    /// Every entry that won a merge, for the state stream to Envoy modules (`stream.rs`); a
    /// reader that falls behind is told so and starts over from a full snapshot.
    /// Made by the first subscriber: a replica without a state stream allocates no backlog.
    changes: std::sync::OnceLock<tokio::sync::broadcast::Sender<Entry>>,
}

/// Entries a stream reader may fall behind before it must start over.
const CHANGE_BACKLOG: usize = 4096;

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
            changes: std::sync::OnceLock::new(),
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

    /// The ledger. A poisoned lock means a writer panicked between the ledger and an index:
    /// neither can be trusted, and answering from them could let a revoked token in, so the
    /// process stops (a restart replays the journal or Redis).
    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        match self.ledger.lock() {
            Ok(ledger) => ledger,
            Err(_) => {
                tracing::error!("fleet state lock poisoned (a writer panicked mid-update); stopping");
                std::process::abort()
            }
        }
    }

    /// Session last-seen times this replica holds.
    pub fn sessions_held(&self) -> usize {
        self.sessions.len()
    }

    pub fn len(&self) -> usize {
        self.ledger().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Merges one entry by the model's rule; `true` when it won and the indices now show it.
    pub fn merge(&self, entry: Entry) -> bool {
        let mut ledger = self.ledger();
        match ledger.merge(entry.clone()) {
            Some(previous) => {
                // A revocation replaced in place (another end) is re-indexed exactly: the index
                // merges adds by the longest, which only a rebuild undoes.
                if previous.is_some() && matches!(entry.body.item, Item::Revocation(_)) {
                    self.rebuild_revocations(&ledger);
                } else {
                    self.apply(&entry, &ledger);
                }
                // Sent under the ledger's lock: a reader's snapshot and the changes after it
                // cannot miss an entry between them (see `subscribe_with_snapshot`).
                if let Some(changes) = self.changes.get().filter(|c| c.receiver_count() > 0) {
                    let _ = changes.send(entry);
                }
                true
            }
            None => false,
        }
    }

    /// The entry held for `entry`'s identity.
    pub fn held(&self, entry: &Entry) -> Option<Entry> {
        self.ledger().get(&entry.identity()).cloned()
    }

    /// Every entry held now and every entry that wins a merge from now on, with nothing
    /// between the two lost (taken under the ledger's lock, which every merge holds).
    pub fn subscribe_with_snapshot(&self) -> (Vec<Entry>, tokio::sync::broadcast::Receiver<Entry>) {
        let ledger = self.ledger();
        let changes = self.changes.get_or_init(|| tokio::sync::broadcast::channel(CHANGE_BACKLOG).0).subscribe();
        (ledger.entries().cloned().collect(), changes)
    }

    pub fn entries(&self) -> Vec<Entry> {
        self.ledger().entries().cloned().collect()
    }

    /// Compares this replica's view with another's (see [`Ledger::plan_resync`]).
    pub fn plan_resync(&self, other: Vec<Entry>, now: i64) -> ResyncPlan {
        let lifetimes = self.lifetimes();
        self.ledger().plan_resync(other, now, lifetimes.as_ref())
    }

    /// Sets the revocation lifetimes of the policy in force (at start; every purge tick too).
    pub fn set_lifetimes(&self, lifetimes: Arc<dyn Lifetimes + Send + Sync>) {
        if let Ok(mut held) = self.lifetimes.write() {
            *held = lifetimes;
        }
    }

    pub fn lifetimes(&self) -> Arc<dyn Lifetimes + Send + Sync> {
        self.lifetimes.read().map(|l| l.clone()).unwrap_or_else(|_| Arc::new(Unbounded))
    }

    /// Forgets what no longer holds under the policy in force (`lifetimes`, kept for resyncs).
    pub fn purge(&self, now: UnixTime, lifetimes: Arc<dyn Lifetimes + Send + Sync>) {
        self.set_lifetimes(lifetimes.clone());
        self.purge_ledger(now, lifetimes.as_ref());
        self.blocks.upkeep(now);
    }

    fn purge_ledger(&self, now: UnixTime, lifetimes: &dyn Lifetimes) {
        let mut ledger = self.ledger();
        let gone = ledger.purge(now.0, lifetimes);
        let mut revocations = false;
        for entry in gone.iter().filter(|e| !e.is_removal()) {
            match &entry.body.item {
                Item::Revocation(_) => revocations = true,
                Item::Block(b) => self.blocks.apply_unblock(&b.cidr),
                Item::Session { iss, sid, .. } => self.sessions.remove(iss, sid),
                Item::ApiKey(k) => self.api_keys.apply_remove(&k.sha256),
                Item::KeyRevocation { name, sha256 } => self.api_keys.apply_unrevoke(name, sha256),
                Item::Member(m) => self.members.apply_remove(&m.tenant, &m.iss, &m.sub),
            }
        }
        if revocations {
            self.rebuild_revocations(&ledger);
        }
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
            (Item::KeyRevocation { name, sha256 }, true) => self.api_keys.apply_unrevoke(name, sha256),
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
