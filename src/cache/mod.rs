//! The verified-claims cache (DESIGN "Cache and invalidation").
//!
//! It holds verified claims, never decisions. The key is the credential's SHA-256 and the
//! policy generation; each entry remembers the key-set generation of the issuer that verified
//! it, and a hit whose issuer has rotated keys since is a miss. Time claims are re-checked on
//! every hit by the core; revocations are checked on every request. Concurrent misses for one
//! key verify once. Negative entries (at most 5 s) only for failures that no clock or key
//! rotation can change.
//!
//! Architecture Invariant: nothing here decides; the cache only remembers what the verifier said.

use crate::decision::{TokenError, TokenVerifier, UnixTime, VerifiedToken};
use crate::jwt::Verifier;
use moka::sync::Cache;
use sha2::{Digest, Sha256};
use std::time::{Duration, Instant};

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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    digest: [u8; 32],
    policy_generation: u64,
}

#[derive(Debug, Clone)]
struct Entry {
    result: Result<VerifiedToken, TokenError>,
    /// Generation of the verifying issuer's key set when this was verified.
    key_generation: Option<u64>,
    ttl: Duration,
}

struct EntryTtl;

impl moka::Expiry<Key, Entry> for EntryTtl {
    fn expire_after_create(&self, _key: &Key, entry: &Entry, _created: Instant) -> Option<Duration> {
        Some(entry.ttl)
    }
}

/// Failures that depend on neither the clock nor key rotation may be remembered.
fn cacheable_failure(err: &TokenError) -> bool {
    matches!(err, TokenError::Malformed(_) | TokenError::Header(_) | TokenError::Signature | TokenError::Claims(_))
}

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

impl ClaimsCache {
    pub fn new(settings: CacheSettings) -> Self {
        let entries = Cache::builder()
            .max_capacity(settings.max_entries)
            .expire_after(EntryTtl)
            .support_invalidation_closures()
            .build();
        Self { entries, settings, counts: Counts::register() }
    }

    /// A verifier that answers from this cache for one policy generation at time `now`.
    pub fn verifier<'a>(&'a self, inner: &'a Verifier, policy_generation: u64, now: UnixTime) -> CachedVerifier<'a> {
        CachedVerifier { cache: self, inner, policy_generation, now }
    }

    /// Drops every entry.
    pub fn clear(&self) {
        self.entries.invalidate_all();
    }

    /// Drops the entries of one subject (`iss` optional: every issuer).
    pub fn invalidate_subject(&self, sub: &str, iss: Option<&str>) -> Result<(), String> {
        let (sub, iss) = (sub.to_string(), iss.map(str::to_string));
        self.entries
            .invalidate_entries_if(move |_, entry| match &entry.result {
                Ok(token) => *token.subject.0 == *sub && iss.as_deref().is_none_or(|i| i == &*token.iss),
                Err(_) => false,
            })
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    pub fn entry_count(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.entry_count()
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
    policy_generation: u64,
    now: UnixTime,
}

impl CachedVerifier<'_> {
    fn key_generation(&self, result: &Result<VerifiedToken, TokenError>) -> Option<u64> {
        let token = result.as_ref().ok()?;
        self.inner.store(token.issuer).map(|s| s.generation())
    }

    fn still_valid(&self, entry: &Entry) -> bool {
        entry.key_generation == self.key_generation(&entry.result)
    }

    fn fresh(&self) -> impl Fn(&Result<VerifiedToken, TokenError>) -> Entry + '_ {
        move |result| Entry {
            result: result.clone(),
            key_generation: self.key_generation(result),
            ttl: self.cache.ttl_for(result, self.now).unwrap_or(Duration::ZERO),
        }
    }
}

impl TokenVerifier for CachedVerifier<'_> {
    fn verify(&self, token: &str) -> Result<VerifiedToken, TokenError> {
        self.verify_digested(token, &Sha256::digest(token.as_bytes()).into())
    }

    fn verify_digested(&self, token: &str, digest: &[u8; 32]) -> Result<VerifiedToken, TokenError> {
        let key = Key { digest: *digest, policy_generation: self.policy_generation };
        if let Some(entry) = self.cache.entries.get(&key) {
            if self.still_valid(&entry) {
                let counts = &self.cache.counts;
                (if entry.result.is_ok() { &counts.hit } else { &counts.negative_hit }).increment(1);
                return entry.result;
            }
            self.cache.entries.invalidate(&key);
        }
        // Concurrent misses for one key run the verifier once; the others wait for its entry.
        let mut computed = false;
        let entry = self.cache.entries.get_with(key, || {
            computed = true;
            (self.fresh())(&self.inner.verify(token))
        });
        (if computed { &self.cache.counts.miss } else { &self.cache.counts.hit }).increment(1);
        if entry.ttl.is_zero() {
            // Not cacheable (unknown kid, keys unavailable, already expired): forget it now.
            self.cache.entries.invalidate(&key);
        }
        entry.result
    }
}

#[cfg(test)]
mod tests;
