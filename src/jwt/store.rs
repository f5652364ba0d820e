//! A per-issuer key store: the current key set (or none), its generation and when it was last
//! confirmed. Readers never block; the JWKS fetcher swaps whole sets in.

use super::keys::KeySet;
use arc_swap::ArcSwapOption;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use tokio::sync::{Notify, watch};

/// Key-set generations are unique across every store of the process: a cache entry verified by
/// one store never matches another store (an issuer removed and added back, a JWKS source
/// switched away and back) that happens to have reached the same count.
fn next_generation() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A static key set's generation follows from its keys (top bit set, apart from the counter):
/// a reload builds a new store with the same keys and the same generation, so tokens cached
/// under it stay servable; different keys give a different generation.
fn content_generation(keys: &KeySet) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for k in &keys.keys {
        (&k.kid, format!("{:?}", k.alg), &k.material).hash(&mut h);
    }
    h.finish() | (1 << 63)
}

#[derive(Debug)]
pub struct KeyStore {
    current: ArcSwapOption<KeySet>,
    /// The JWKS document the current remote keys were read from (compact JSON), for the state
    /// stream to Envoy modules, which parse it with the same parser.
    source: ArcSwapOption<String>,
    /// Bumped on every change of the key set; cached verifications carry it (issue: cache).
    generation: watch::Sender<u64>,
    /// Bumped on every successful fetch, changed keys or not: a check waiting on a refetch
    /// learns that the fetch completed.
    fetches: watch::Sender<u64>,
    /// Unix seconds of the last successful fetch (or load), 0 before any.
    confirmed_at: AtomicI64,
    /// Set for remote key sets: an unknown `kid` asks the fetcher for a refetch.
    remote: bool,
    refetch: Notify,
    /// Unix milliseconds before which the fetcher will not refetch (its `refetch_interval`).
    refetch_not_before_ms: AtomicI64,
}

impl KeyStore {
    /// A store that starts with `keys` (static sources) or empty (remote JWKS before the first fetch).
    pub fn fixed(keys: KeySet) -> Self {
        let generation = content_generation(&keys);
        let store = Self::build(Some(keys), 0, false);
        store.generation.send_replace(generation);
        store
    }

    /// An empty store that the JWKS fetcher fills.
    pub fn remote() -> Self {
        Self::build(None, 0, true)
    }

    fn build(keys: Option<KeySet>, now: i64, remote: bool) -> Self {
        Self {
            current: ArcSwapOption::new(keys.map(Arc::new)),
            source: ArcSwapOption::empty(),
            generation: watch::Sender::new(next_generation()),
            fetches: watch::Sender::new(0),
            confirmed_at: AtomicI64::new(now),
            remote,
            refetch: Notify::new(),
            refetch_not_before_ms: AtomicI64::new(0),
        }
    }

    pub fn is_remote(&self) -> bool {
        self.remote
    }

    /// Asks the fetcher for a refetch; many requests before it runs count as one. Returns
    /// false (and asks nothing) while the fetcher is cooling down, so callers need not wait.
    pub fn request_refetch(&self, now_ms: i64) -> bool {
        if !self.remote || now_ms < self.refetch_not_before_ms.load(Ordering::Acquire) {
            return false;
        }
        self.refetch.notify_one();
        true
    }

    /// The fetcher's side: no refetch before `not_before_ms`.
    pub fn set_refetch_not_before(&self, not_before_ms: i64) {
        self.refetch_not_before_ms.store(not_before_ms, Ordering::Release);
    }

    /// Completes when a refetch was requested (the fetcher's side).
    pub async fn refetch_requested(&self) {
        self.refetch.notified().await;
    }

    pub fn keys(&self) -> Option<Arc<KeySet>> {
        self.current.load_full()
    }

    pub fn has_keys(&self) -> bool {
        self.current.load().is_some()
    }

    pub fn generation(&self) -> u64 {
        *self.generation.borrow()
    }

    pub fn confirmed_at(&self) -> i64 {
        self.confirmed_at.load(Ordering::Acquire)
    }

    /// The JWKS document of the current keys, when they came from one.
    pub fn source(&self) -> Option<Arc<String>> {
        if self.current.load().is_none() {
            return None;
        }
        self.source.load_full()
    }

    /// [`KeyStore::replace`], remembering the JWKS document the keys were read from.
    pub fn replace_from(&self, keys: KeySet, source: Arc<String>, now: i64) {
        self.source.store(Some(source));
        self.replace(keys, now);
    }

    /// Installs a freshly fetched set; the generation changes only if the keys did.
    pub fn replace(&self, keys: KeySet, now: i64) {
        let changed = self.current.load().as_deref() != Some(&keys);
        if changed {
            self.current.store(Some(Arc::new(keys)));
            self.generation.send_modify(|g| *g = next_generation());
        }
        self.confirmed_at.store(now, Ordering::Release);
        self.fetches.send_modify(|f| *f += 1);
    }

    /// Drops the keys (past `max_stale`): the issuer's tokens then answer `keys_unavailable`.
    pub fn expire(&self) {
        self.source.store(None);
        if self.current.swap(None).is_some() {
            self.generation.send_modify(|g| *g = next_generation());
        }
    }

    /// A receiver that sees every later generation change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// A receiver that sees every later successful fetch.
    pub fn subscribe_fetches(&self) -> watch::Receiver<u64> {
        self.fetches.subscribe()
    }
}
