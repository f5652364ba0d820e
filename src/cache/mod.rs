//! The verified-claims cache (README "Claims cache, revocation and the admin API").
//!
//! It holds verified claims, never decisions. The key is the credential's SHA-256; each entry
//! remembers the fingerprint of the issuer that verified it (its settings and key source) and
//! that issuer's key-set generation, and a hit is served only while both are unchanged: a
//! reload that changes members, deny lists, routes or API keys keeps every entry, a change to
//! one issuer drops that issuer's entries only, a key rotation drops them too. Time claims are re-checked on
//! every hit by the core; revocations are checked on every request. Concurrent misses for one
//! key verify once. Negative entries (at most 5 s) only for failures that no clock or key
//! rotation can change. Expiry is read against the injected clock when an entry is asked for.
//!
//! Architecture Invariant: nothing here decides; the cache only remembers what the verifier said.

use crate::decision::{TokenError, TokenVerifier, UnixTime, VerifiedToken};
use crate::jwt::Verifier;
use quick_cache::sync::{Cache, GuardResult};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;

pub const CACHE_REQUESTS_TOTAL: &str = "portcullis_cache_requests_total";
/// Longest a failure is remembered.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheSettings {
    pub ttl: Duration,
    pub max_entries: u64,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self { ttl: Duration::from_secs(30), max_entries: 100_000 }
    }
}

type Key = [u8; 32];

#[derive(Debug)]
struct Entry {
    /// The verifying issuer's fingerprint (for a failure: every issuer's together).
    fingerprint: u64,
    /// A verified token carries the key-set generation it was verified under.
    result: Result<VerifiedToken, TokenError>,
    /// First second (injected clock) at which this entry is no longer served. Expired entries
    /// are replaced when next asked for, or evicted by newer ones.
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

/// quick_cache rather than moka: its per-entry bookkeeping is tens of bytes where moka's is
/// about 300 (measured), which is most of a cached identity's budget (ARCHITECTURE.md).
/// Entries sit behind an `Arc` so a slot stays small and a hit clones one pointer.
pub struct ClaimsCache {
    entries: Cache<Key, Arc<Entry>>,
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

impl ClaimsCache {
    pub fn new(settings: CacheSettings) -> Self {
        let capacity = usize::try_from(settings.max_entries).unwrap_or(usize::MAX).max(1);
        Self { entries: Cache::new(capacity), settings, counts: Counts::register() }
    }

    /// A verifier that answers from this cache for the issuers of `inner` at time `now`.
    pub fn verifier<'a>(&'a self, inner: &'a Verifier, now: UnixTime) -> CachedVerifier<'a> {
        CachedVerifier { cache: self, inner, now, failure_fingerprint: std::sync::OnceLock::new() }
    }

    /// Drops every entry.
    pub fn clear(&self) {
        self.entries.clear();
    }

    /// Drops the entries of one subject (`iss` optional: every issuer).
    pub fn invalidate_subject(&self, sub: &str, iss: Option<&str>) {
        self.entries.retain(|_, entry| match &entry.result {
            Ok(token) => !(*token.subject.0 == *sub && iss.is_none_or(|i| i == &*token.iss)),
            Err(_) => true,
        });
    }

    /// Entries held, expired ones not yet replaced included.
    pub fn entry_count(&self) -> u64 {
        self.entries.len() as u64
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
}

/// [`TokenVerifier`] through the cache.
pub struct CachedVerifier<'a> {
    cache: &'a ClaimsCache,
    inner: &'a Verifier,
    now: UnixTime,
    /// Every issuer's fingerprint together, worked out at most once per check.
    failure_fingerprint: std::sync::OnceLock<u64>,
}

impl CachedVerifier<'_> {
    fn failure_fingerprint(&self) -> u64 {
        *self.failure_fingerprint.get_or_init(|| self.inner.fingerprint())
    }

    /// The entry's result as the current issuers see it: unexpired, its issuer unchanged (same
    /// fingerprint, same key-set generation) and found at its current position; `None`: stale.
    fn serve(&self, entry: &Entry) -> Option<Result<VerifiedToken, TokenError>> {
        if self.now >= entry.expires_at {
            return None;
        }
        match &entry.result {
            Ok(token) => {
                let (id, issuer) = self.inner.find(&token.iss)?;
                if issuer.fingerprint != entry.fingerprint || issuer.keys.generation() != token.key_generation {
                    return None;
                }
                let mut token = token.clone();
                token.issuer = id;
                Some(Ok(token))
            }
            Err(e) => (entry.fingerprint == self.failure_fingerprint()).then(|| Err(e.clone())),
        }
    }

    /// What to remember of a verification, if anything: nothing for a failure a key refetch or
    /// the clock may change, an expired token or a TTL under a second.
    fn entry_for(&self, result: &Result<VerifiedToken, TokenError>) -> Option<Entry> {
        let ttl = self.cache.ttl_for(result, self.now)?.as_secs();
        let fingerprint = match result {
            Ok(token) => self.inner.issuers.get(token.issuer.0)?.fingerprint,
            Err(_) => self.failure_fingerprint(),
        };
        (ttl > 0).then(|| Entry {
            fingerprint,
            result: result.clone(),
            expires_at: UnixTime(self.now.0.saturating_add(i64::try_from(ttl).unwrap_or(i64::MAX))),
        })
    }

    /// What a lookup of `token` would serve from the cache now (tests).
    #[cfg(test)]
    pub fn serve_for_test(&self, token: &str) -> Option<Result<VerifiedToken, TokenError>> {
        let key: Key = Sha256::digest(token.as_bytes()).into();
        self.cache.entries.get(&key).and_then(|entry| self.serve(&entry))
    }

    fn count_hit(&self, entry: &Entry) {
        let counts = &self.cache.counts;
        (if entry.result.is_ok() { &counts.hit } else { &counts.negative_hit }).increment(1);
    }
}

impl TokenVerifier for CachedVerifier<'_> {
    fn verify(&self, token: &str) -> Result<VerifiedToken, TokenError> {
        self.verify_digested(token, &Sha256::digest(token.as_bytes()).into())
    }

    fn verify_digested(&self, token: &str, digest: &[u8; 32]) -> Result<VerifiedToken, TokenError> {
        let key: Key = *digest;
        let entries = &self.cache.entries;
        if let Some(entry) = entries.get(&key) {
            if let Some(result) = self.serve(&entry) {
                self.count_hit(&entry);
                return result;
            }
            // Stale: drop it unless another request has replaced it meanwhile.
            entries.remove_if(&key, |current| Arc::ptr_eq(current, &entry));
        }
        // Concurrent misses for one key verify once: the others wait on this guard, then read
        // its entry (or verify themselves when nothing was worth remembering).
        match entries.get_value_or_guard(&key, None) {
            GuardResult::Value(entry) if self.serve(&entry).is_some() => {
                self.count_hit(&entry);
                self.serve(&entry).unwrap_or_else(|| entry.result.clone())
            }
            GuardResult::Guard(guard) => {
                self.cache.counts.miss.increment(1);
                let result = self.inner.verify(token);
                if let Some(entry) = self.entry_for(&result) {
                    let _ = guard.insert(Arc::new(entry));
                }
                result
            }
            GuardResult::Value(_) | GuardResult::Timeout => {
                self.cache.counts.miss.increment(1);
                self.inner.verify(token)
            }
        }
    }
}

#[cfg(test)]
mod tests;
