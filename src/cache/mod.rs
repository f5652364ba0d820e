//! The verified-claims cache (README "Claims cache, revocation and the admin API").
//!
//! It holds verified claims, never decisions. The key is the credential's SHA-256; each entry
//! remembers the fingerprint of the issuer that verified it (its settings and key source) and
//! that issuer's key-set generation, and a hit is served only while both are unchanged: a
//! reload that changes members, deny lists, routes or API keys keeps every entry, a change to
//! one issuer drops that issuer's entries only, a key rotation drops them too. Time claims are re-checked on
//! every hit by the core; revocations are checked on every request. Concurrent misses for one
//! key verify once, and the others await it without holding a thread (moka's
//! `or_try_insert_with`). Negative entries (at most 5 s) only for failures that no clock or key
//! rotation can change. Expiry is read against the injected clock when an entry is asked for.
//!
//! Architecture Invariant: nothing here decides; the cache only remembers what the verifier said.

use crate::decision::{IssuerId, TokenError, TokenVerifier, UnixTime, VerifiedToken};
use crate::jwt::Verifier;
use moka::future::Cache;
use std::sync::Arc;
use std::time::Duration;

pub const CACHE_REQUESTS_TOTAL: &str = "portcullis_cache_requests_total";
/// Longest a failure is remembered.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheSettings {
    pub ttl: Duration,
    pub max_entries: u64,
    /// The bound on the entries' own bytes (claims, subject, header values; moka's bookkeeping,
    /// ~300 bytes an entry, is on top).
    pub max_bytes: u64,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self { ttl: Duration::from_secs(30), max_entries: 100_000, max_bytes: 48 << 20 }
    }
}

type Key = [u8; 32];

/// Held by moka by value (no `Arc` of our own: moka's entry already is one, and a hit clones
/// the token's three shared pointers either way).
#[derive(Debug, Clone)]
struct Entry {
    /// The verifying issuer's fingerprint (for a failure: every issuer's together).
    fingerprint: u64,
    /// A verified token carries the key-set generation it was verified under.
    result: Result<VerifiedToken, TokenError>,
    /// First second (injected clock) at which this entry is no longer served. Expired entries
    /// are replaced when next asked for, or evicted by moka's own time-to-live (wall clock, a
    /// bound on memory only) or by newer ones.
    expires_at: UnixTime,
}

/// Failures that depend on neither the clock nor key rotation may be remembered.
fn cacheable_failure(err: &TokenError) -> bool {
    // A remote issuer's bad signature may be a rotation that reused the kid: not remembered.
    matches!(
        err,
        TokenError::Malformed(_)
            | TokenError::Header(_)
            | TokenError::Signature { remote: false, .. }
            | TokenError::Claims(_)
    )
}

/// Bytes an entry holds beyond moka's own: the entry, the token's claims and strings.
fn entry_bytes(result: &Result<VerifiedToken, TokenError>) -> usize {
    let base = std::mem::size_of::<Entry>() + std::mem::size_of::<Key>();
    match result {
        Ok(token) => base + token.heap_bytes(),
        Err(e) => base + e.to_string().len(),
    }
}

/// What the weigher charges: the entry's bytes, at least `max_bytes / max_entries`, so both
/// bounds hold with one weigher (worked out when inserted, not kept in the entry).
fn weight(settings: &CacheSettings, entry: &Entry) -> u32 {
    let floor = settings.max_bytes / settings.max_entries.max(1);
    u32::try_from((entry_bytes(&entry.result) as u64).max(floor)).unwrap_or(u32::MAX)
}

/// The claims cache on moka (ARCHITECTURE.md "Stack choices"): entries by value (a hit clones
/// the token's shared pointers), expiry by the injected clock inside the entry, a weigher for
/// `cache.max_bytes`.
pub struct ClaimsCache {
    entries: Cache<Key, Entry>,
    settings: CacheSettings,
    counts: Counts,
}

/// `portcullis_cache_requests_total` handles, taken once (taken before the recorder is
/// installed, they count nothing).
struct Counts {
    hit: metrics::Counter,
    negative_hit: metrics::Counter,
    miss: metrics::Counter,
}

impl Counts {
    fn register() -> Self {
        let count =
            |result: &'static str| metrics::counter!(CACHE_REQUESTS_TOTAL, "cache" => "claims", "result" => result);
        Self { hit: count("hit"), negative_hit: count("negative_hit"), miss: count("miss") }
    }
}

impl std::fmt::Debug for ClaimsCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClaimsCache").field("settings", &self.settings).finish_non_exhaustive()
    }
}

/// An entry's result, as the current issuers see it or not.
enum Served {
    /// Unexpired, its issuer unchanged: served (the issuer id remapped).
    Current(Result<VerifiedToken, TokenError>),
    /// Expired by the injected clock, or its issuer changed since.
    Stale(Result<VerifiedToken, TokenError>),
}

/// Why a verification left nothing in the cache: its result and the fingerprint it was made
/// under, handed to every waiter — which may hold another snapshot, so it serves the result
/// only if that snapshot would have verified it the same way (one snapshot per check).
#[derive(Debug)]
struct NotKept {
    fingerprint: u64,
    result: Result<VerifiedToken, TokenError>,
}

impl ClaimsCache {
    pub fn new(settings: CacheSettings) -> Self {
        let entries = Cache::builder()
            .max_capacity(settings.max_bytes.max(1))
            .weigher(move |_key: &Key, entry: &Entry| weight(&settings, entry))
            // No moka time-to-live: what is served is decided by `expires_at` and the injected
            // clock, and a TTL costs a write-order node per entry; expired entries leave when
            // asked for or evicted by the byte bound.
            .support_invalidation_closures()
            .build();
        Self { entries, settings, counts: Counts::register() }
    }

    /// Drops every entry.
    pub fn clear(&self) {
        self.entries.invalidate_all();
    }

    /// Drops the entries of one subject (`iss` optional: every issuer).
    pub fn invalidate_subject(&self, sub: &str, iss: Option<&str>) {
        let (sub, iss): (Arc<str>, Option<Arc<str>>) = (Arc::from(sub), iss.map(Arc::from));
        let dropped = self.entries.invalidate_entries_if(move |_, entry| match &entry.result {
            Ok(token) => token.subject() == &*sub && iss.as_deref().is_none_or(|i| i == token.iss()),
            Err(_) => false,
        });
        if dropped.is_err() {
            // Invalidation closures are enabled above; should moka refuse anyway, fail safe.
            self.entries.invalidate_all();
        }
    }

    /// Entries held once moka's pending work is done (expired ones not yet replaced included).
    pub async fn entry_count(&self) -> u64 {
        self.entries.run_pending_tasks().await;
        self.entries.entry_count()
    }

    /// The bytes charged for the entries held (see [`CacheSettings::max_bytes`]).
    pub async fn weighted_size(&self) -> u64 {
        self.entries.run_pending_tasks().await;
        self.entries.weighted_size()
    }

    fn ttl_for(&self, result: &Result<VerifiedToken, TokenError>, now: UnixTime) -> Option<Duration> {
        match result {
            Ok(token) => {
                let remaining = token.exp.saturating_sub(now.0);
                (remaining > 0).then(|| self.settings.ttl.min(Duration::from_secs(remaining as u64)))
            }
            Err(e) if cacheable_failure(e) => Some(self.settings.ttl.min(NEGATIVE_TTL)),
            Err(_) => None,
        }
    }

    /// The entry's result as the current issuers see it: unexpired, its issuer unchanged (same
    /// fingerprint, same key-set generation) and found at its current position.
    fn serve(inner: &Verifier, entry: Entry, now: UnixTime) -> Served {
        let seen = if now < entry.expires_at { Self::seen_as(inner, entry.fingerprint, &entry.result) } else { None };
        match seen {
            Some(id) => Served::Current(Self::remapped(entry.result, id)),
            None => Served::Stale(entry.result),
        }
    }

    /// How `inner` sees `result`, made under `fingerprint`: `None` when it would not have made
    /// it the same way (it must verify itself); else a token's issuer id there (`Some(None)`
    /// for a failure made under the same issuers and key sets). One issuer lookup a hit.
    fn seen_as(
        inner: &Verifier,
        fingerprint: u64,
        result: &Result<VerifiedToken, TokenError>,
    ) -> Option<Option<IssuerId>> {
        match result {
            Ok(token) => {
                let (id, issuer) = inner.find(token.iss())?;
                (issuer.fingerprint == fingerprint && issuer.keys.generation() == token.key_generation)
                    .then_some(Some(id))
            }
            Err(_) => (fingerprint == inner.fingerprint()).then_some(None),
        }
    }

    /// `result` with its token's issuer id `id` (the position in the snapshot serving it).
    fn remapped(result: Result<VerifiedToken, TokenError>, id: Option<IssuerId>) -> Result<VerifiedToken, TokenError> {
        result.map(|mut token| {
            if let Some(id) = id {
                token.issuer = id;
            }
            token
        })
    }

    /// The fingerprint a result depends on: its issuer's, or (a failure) every issuer's.
    fn fingerprint_of(inner: &Verifier, result: &Result<VerifiedToken, TokenError>) -> Option<u64> {
        match result {
            Ok(token) => Some(inner.issuers.get(token.issuer.0)?.fingerprint),
            Err(_) => Some(inner.fingerprint()),
        }
    }

    /// What to remember of a verification, if anything: nothing for a failure a key refetch or
    /// the clock may change, an expired token or a TTL under a second.
    fn entry_for(&self, inner: &Verifier, result: &Result<VerifiedToken, TokenError>, now: UnixTime) -> Option<Entry> {
        let ttl = self.ttl_for(result, now)?.as_secs();
        let fingerprint = Self::fingerprint_of(inner, result)?;
        (ttl > 0).then(|| Entry {
            fingerprint,
            result: result.clone(),
            expires_at: UnixTime(now.0.saturating_add(i64::try_from(ttl).unwrap_or(i64::MAX))),
        })
    }

    fn count_hit(&self, positive: bool) {
        (if positive { &self.counts.hit } else { &self.counts.negative_hit }).increment(1);
    }

    /// Verifies `token` (whose SHA-256 is `digest`) through the cache at `now`. Concurrent
    /// misses for one key verify once; the others await that verification (they hold no
    /// thread) and read its entry, or its result when nothing was worth keeping.
    pub async fn verify(
        &self,
        inner: &Verifier,
        token: &str,
        digest: &[u8; 32],
        now: UnixTime,
    ) -> Result<VerifiedToken, TokenError> {
        for _ in 0..2 {
            let init = async {
                self.counts.miss.increment(1);
                let result = inner.verify(token);
                match self.entry_for(inner, &result, now) {
                    Some(entry) => Ok(entry),
                    // A fingerprint no issuer has (u64::MAX) makes every waiter verify itself.
                    None => {
                        Err(NotKept { fingerprint: Self::fingerprint_of(inner, &result).unwrap_or(u64::MAX), result })
                    }
                }
            };
            match self.entries.entry_by_ref(digest).or_try_insert_with(init).await {
                Ok(entry) => {
                    let fresh = entry.is_fresh();
                    let entry = entry.into_value();
                    let positive = entry.result.is_ok();
                    match Self::serve(inner, entry, now) {
                        Served::Current(result) => {
                            if !fresh {
                                self.count_hit(positive);
                            }
                            return result;
                        }
                        // Stale (expired by the injected clock, or its issuer changed): drop
                        // it, unless it was just made, and look again.
                        Served::Stale(result) if fresh => return result,
                        Served::Stale(_) => self.entries.invalidate(digest).await,
                    }
                }
                // The verification that ran (this check's, or another's under the same
                // snapshot) decides; a waiter on another snapshot verifies for itself.
                Err(not_kept) => match Self::seen_as(inner, not_kept.fingerprint, &not_kept.result) {
                    Some(id) => return Self::remapped(not_kept.result.clone(), id),
                    None => break,
                },
            }
        }
        // Replaced by a stale entry twice in a row (reloads racing this check), or handed a
        // result made under another snapshot: no cache.
        self.counts.miss.increment(1);
        inner.verify(token)
    }
}

#[cfg(test)]
mod tests;
