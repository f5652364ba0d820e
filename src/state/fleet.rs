//! Every store of fleet state in one type: a write becomes an [`Entry`], is stored by the
//! backend ([`Persist`]: Redis, a journal file, or nothing when ephemeral state was
//! acknowledged), and only then merged into this replica's [`LocalState`] — one path for
//! revocations, blocks, members, API keys, key revocations and session last-seen.

use crate::clock::Clock;
use crate::config::schema::RawApiKeyEntry;
use crate::decision::{
    ApiKey, ApiKeyCheck, BlockCheck, KeyDigest, MembershipCheck, RevocationCheck, SessionCheck, TokenIds, UnixTime,
    VerifiedToken,
};
use crate::state::StoreError;
use crate::state::apikeys::ApiKeyStore;
use crate::state::blocks::{Block, BlockStore};
use crate::state::local::LocalState;
use crate::state::membership::{Member, MemberStore};
use crate::state::model::{Entry, Item, KeyRecord, Lifetimes};
use crate::state::revocation::{Revocation, RevocationStore};
use crate::state::sessions::SessionStore;
use std::sync::Arc;

/// Where entries are kept beyond this process.
#[async_trait::async_trait]
pub trait Persist: Send + Sync + 'static {
    /// Stores `entry`. An `acknowledged` write (the admin API, an auto-block) is stored with a
    /// write time past any entry of its identity the backend holds, so it wins; the returned
    /// entry is what was stored. A write-back is stored only if it is newer (`None` otherwise).
    async fn write(&self, entry: Entry, acknowledged: bool) -> Result<Option<Entry>, StoreError>;

    /// Shares one failure with the fleet; the fleet's count (0 for a backend with no fleet).
    async fn share_failure(&self, _key: &str, _now: UnixTime, _window_secs: i64) -> Result<u32, StoreError> {
        Ok(0)
    }

    /// Housekeeping after a purge (a journal's compaction).
    fn maintain(&self, _local: &LocalState, _now: UnixTime, _lifetimes: &dyn Lifetimes) {}

    /// Whether `key` is used for the first time fleet-wide within `ttl` (`true` for a backend
    /// with no fleet: the replica's own check is all there is).
    async fn first_use(&self, _key: &[u8; 32], _ttl: std::time::Duration) -> Result<bool, StoreError> {
        Ok(true)
    }

    /// What the backend holds for `probe`'s identity, for a kind this replica does not follow
    /// (sessions); `None` for a backend with no fleet (the replica holds all there is).
    async fn read(&self, _probe: &Entry) -> Result<Option<Entry>, StoreError> {
        Ok(None)
    }
}

/// The stores the server holds, as one object.
#[async_trait::async_trait]
pub trait StateStore: RevocationStore + MemberStore + BlockStore + ApiKeyStore + SessionStore {
    /// Forgets what no longer holds under the policy in force.
    fn purge(&self, now: UnixTime, lifetimes: Arc<dyn Lifetimes + Send + Sync>);

    /// A DPoP proof's first use fleet-wide (see [`Persist::first_use`]).
    async fn first_use(&self, key: &[u8; 32], ttl: std::time::Duration) -> Result<bool, StoreError>;
}

pub struct FleetState<P> {
    pub(crate) local: Arc<LocalState>,
    pub(crate) persist: P,
    pub(crate) clock: Arc<dyn Clock>,
}

impl<P> std::fmt::Debug for FleetState<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetState").field("local", &self.local).finish_non_exhaustive()
    }
}

impl<P: Persist> FleetState<P> {
    pub fn with(local: Arc<LocalState>, persist: P, clock: Arc<dyn Clock>) -> Self {
        Self { local, persist, clock }
    }

    pub fn local(&self) -> &Arc<LocalState> {
        &self.local
    }

    pub fn backend(&self) -> &P {
        &self.persist
    }

    fn now_ms(&self) -> i64 {
        self.clock.now_millis()
    }

    /// Stores an acknowledged write, then shows it here: it is newer than anything this
    /// replica holds for the identity, and the backend moves it past anything it holds.
    async fn commit(&self, mut entry: Entry) -> Result<(), StoreError> {
        if let Some(held) = self.local.held(&entry) {
            entry.written_ms = entry.written_ms.max(held.written_ms.saturating_add(1));
        }
        match self.persist.write(entry, true).await? {
            Some(stored) => {
                self.local.merge(stored);
                Ok(())
            }
            // An acknowledged write is always stored; a backend that did not is not trusted.
            None => Err(StoreError::Unavailable("the state backend did not keep the write".into())),
        }
    }
}

#[async_trait::async_trait]
impl<P: Persist> StateStore for FleetState<P> {
    fn purge(&self, now: UnixTime, lifetimes: Arc<dyn Lifetimes + Send + Sync>) {
        self.local.purge(now, lifetimes.clone());
        self.persist.maintain(&self.local, now, lifetimes.as_ref());
    }

    async fn first_use(&self, key: &[u8; 32], ttl: std::time::Duration) -> Result<bool, StoreError> {
        self.persist.first_use(key, ttl).await
    }
}

#[async_trait::async_trait]
impl<P: Persist> RevocationStore for FleetState<P> {
    async fn add(&self, revocation: Revocation) -> Result<(), StoreError> {
        let lifetimes = self.local.lifetimes();
        self.commit(Entry::revocation(self.now_ms(), revocation, lifetimes.as_ref())).await
    }

    fn list(&self, now: UnixTime) -> Vec<Revocation> {
        self.local.revocation_list(now)
    }

    fn listed(&self, now: UnixTime) -> Vec<(Revocation, i64)> {
        let mut out: Vec<(Revocation, i64)> = self
            .local
            .entries()
            .into_iter()
            .filter(|e| !e.is_removal())
            .filter_map(|e| match e.body.item {
                Item::Revocation(r) if r.expires_at() > now.0 => Some((r, e.written_ms / 1000)),
                _ => None,
            })
            .collect();
        out.sort_by(|a, b| format!("{:?}", a.0).cmp(&format!("{:?}", b.0)));
        out
    }
}

#[async_trait::async_trait]
impl<P: Persist> MemberStore for FleetState<P> {
    async fn put(&self, member: Member) -> Result<(), StoreError> {
        self.commit(Entry::new(self.now_ms(), Item::Member(member), None)).await
    }

    async fn remove(&self, tenant: &str, iss: &str, sub: &str) -> Result<(), StoreError> {
        let member = Member { tenant: tenant.into(), iss: iss.into(), sub: sub.into(), roles: Vec::new() };
        // A member never expires, so neither does its removal.
        self.commit(Entry::tombstone(self.now_ms(), Item::Member(member), None)).await
    }
}

#[async_trait::async_trait]
impl<P: Persist> BlockStore for FleetState<P> {
    async fn block(&self, block: Block) -> Result<(), StoreError> {
        let entry = Entry::block(self.now_ms(), &block.cidr, block.expires_at).map_err(StoreError::Invalid)?;
        self.commit(entry).await
    }

    fn block_locally(&self, block: &Block) {
        if let Ok(entry) = Entry::block(self.now_ms(), &block.cidr, block.expires_at) {
            self.local.merge(entry);
        }
    }

    async fn unblock(&self, cidr: &str) -> Result<(), StoreError> {
        let held = Entry::block(0, cidr, 0).ok().and_then(|probe| self.local.held(&probe));
        let held_until = held.filter(|e| !e.is_removal()).and_then(|e| e.body.until);
        let entry = Entry::unblock(self.now_ms(), cidr, held_until).map_err(StoreError::Invalid)?;
        self.commit(entry).await
    }

    fn list(&self, now: UnixTime) -> Vec<Block> {
        self.local.blocks.list(now)
    }

    fn count_failure(&self, key: &str, now: UnixTime, window_secs: i64) -> u32 {
        self.local.blocks.count_failure(key, now, window_secs)
    }

    async fn share_failure(&self, key: &str, now: UnixTime, window_secs: i64) -> Result<u32, StoreError> {
        self.persist.share_failure(key, now, window_secs).await
    }
}

#[async_trait::async_trait]
impl<P: Persist> ApiKeyStore for FleetState<P> {
    async fn put(&self, entry: RawApiKeyEntry) -> Result<(), StoreError> {
        let now = self.now_ms();
        // A key put under a name replaces the keys of that name: their tombstones first.
        for digest in self.local.api_keys.digests_named(&entry.name) {
            let sha256 = hex::encode(digest);
            if sha256 != entry.sha256 {
                let old = KeyRecord { name: entry.name.clone(), sha256, ..KeyRecord::from(&entry) };
                self.commit(Entry::tombstone(now, Item::ApiKey(old), None)).await?;
            }
        }
        self.commit(Entry::new(now, Item::ApiKey(KeyRecord::from(&entry)), None)).await
    }

    async fn revoke(&self, name: &str, digests: Vec<KeyDigest>) -> Result<(), StoreError> {
        let now = self.now_ms();
        for digest in digests {
            let item = Item::KeyRevocation { name: name.to_string(), sha256: hex::encode(digest) };
            self.commit(Entry::new(now, item, None)).await?;
        }
        Ok(())
    }

    fn names(&self) -> Vec<String> {
        self.local.api_keys.names()
    }

    fn digests_named(&self, name: &str) -> Vec<KeyDigest> {
        self.local.api_keys.digests_named(name)
    }

    fn revoked_names(&self) -> Vec<String> {
        self.local.api_keys.revoked_names()
    }

    fn digest_revoked(&self, digest: &KeyDigest) -> bool {
        self.local.api_keys.is_revoked(digest)
    }
}

#[async_trait::async_trait]
impl<P: Persist> SessionStore for FleetState<P> {
    async fn touch(&self, iss: &str, sid: &str, at: i64, keep_secs: i64) -> Result<(), StoreError> {
        let item = Item::Session { iss: iss.to_string(), sid: sid.to_string(), at };
        let entry = Entry::new(at.saturating_mul(1000), item, Some(at.saturating_add(keep_secs)));
        // Last-seen only moves forward: an older touch loses to what is held, here and there.
        if self.local.held(&entry).is_some_and(|held| !entry.beats(&held)) {
            return Ok(());
        }
        if let Some(stored) = self.persist.write(entry, false).await? {
            self.local.merge(stored);
        }
        Ok(())
    }

    async fn refresh(&self, iss: &str, sid: &str, judged_at: i64) -> Result<bool, StoreError> {
        let probe = Entry::new(0, Item::Session { iss: iss.to_string(), sid: sid.to_string(), at: 0 }, None);
        let Some(held) = self.persist.read(&probe).await? else { return Ok(false) };
        let newer = matches!(&held.body.item, Item::Session { at, .. } if *at > judged_at) && !held.is_removal();
        if newer {
            self.local.merge(held);
        }
        Ok(newer)
    }
}

impl<P: Persist> RevocationCheck for FleetState<P> {
    fn revoked(&self, token: &VerifiedToken, ids: &TokenIds, now: UnixTime) -> Option<&'static str> {
        RevocationCheck::revoked(self.local.as_ref(), token, ids, now)
    }

    fn tenant_revoked(&self, tenant: &str, token: &VerifiedToken, now: UnixTime) -> bool {
        self.local.tenant_revoked(tenant, token, now)
    }
}

impl<P: Persist> MembershipCheck for FleetState<P> {
    fn member_roles(&self, tenant: &str, iss: &str, sub: &str) -> Option<Vec<String>> {
        self.local.member_roles(tenant, iss, sub)
    }
}

impl<P: Persist> BlockCheck for FleetState<P> {
    fn blocked(&self, ip: std::net::IpAddr, now: UnixTime) -> bool {
        self.local.blocked(ip, now)
    }
}

impl<P: Persist> ApiKeyCheck for FleetState<P> {
    fn find(&self, digest: &KeyDigest) -> Option<Arc<ApiKey>> {
        self.local.find(digest)
    }

    fn revoked(&self, digest: &KeyDigest, name: &str) -> bool {
        ApiKeyCheck::revoked(self.local.as_ref(), digest, name)
    }
}

impl<P: Persist> SessionCheck for FleetState<P> {
    fn last_seen(&self, iss: &str, sid: &str) -> Option<i64> {
        self.local.last_seen(iss, sid)
    }
}
