//! Rate limiting state (governor, GCRA): per tier definition, one limiter per key in a bounded
//! cache, created on first use so a reloaded policy with new tiers just works. A key idle long
//! enough for its bucket to refill is forgotten (that changes nothing); past
//! [`MAX_RATE_KEYS`] keys the least recently used are evicted first and counted.

use crate::clock::Clock;
use crate::decision::{RateLimit, RateTier};
use crate::state::blocks::EVICTIONS_TOTAL;
use governor::Quota;
use governor::clock::Clock as _;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed};
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Most keys (clients, subjects, tenants) remembered per tier.
pub const MAX_RATE_KEYS: u64 = 100_000;

/// governor reading the one injected clock, so buckets refill as a test moves it.
#[derive(Clone)]
struct InjectedClock(Arc<dyn Clock>);

impl governor::clock::Clock for InjectedClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        Nanos::from(u64::try_from(self.0.now_millis()).unwrap_or(0).saturating_mul(1_000_000))
    }
}

type Limiter = governor::RateLimiter<NotKeyed, InMemoryState, InjectedClock, NoOpMiddleware<Nanos>>;
type Limiters = moka::sync::Cache<String, Arc<Limiter>>;

pub struct RateLimits {
    clock: InjectedClock,
    limiters: RwLock<HashMap<RateTier, Arc<(Quota, Limiters)>>>,
}

fn quota(tier: &RateTier) -> Option<Quota> {
    let amount = NonZeroU32::new(tier.amount)?;
    let burst = NonZeroU32::new(tier.burst).unwrap_or(amount);
    let base = if tier.period_secs >= 60 { Quota::per_minute(amount) } else { Quota::per_second(amount) };
    Some(base.allow_burst(burst))
}

/// How long until an untouched bucket is full again: forgetting it then changes nothing.
fn refill_time(tier: &RateTier) -> Duration {
    let per_token = f64::from(tier.period_secs.max(1)) / f64::from(tier.amount.max(1));
    Duration::from_secs_f64(per_token * f64::from(tier.burst.max(1))) + Duration::from_secs(1)
}

impl RateLimits {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self { clock: InjectedClock(clock), limiters: RwLock::default() }
    }

    fn limiters(&self, tier: &RateTier) -> Option<Arc<(Quota, Limiters)>> {
        if let Some(l) = self.limiters.read().ok()?.get(tier) {
            return Some(l.clone());
        }
        let mut map = self.limiters.write().ok()?;
        let evicted = metrics::counter!(EVICTIONS_TOTAL, "what" => "rate_limit_keys");
        let entry = map.entry(tier.clone()).or_insert_with(|| {
            let cache = moka::sync::Cache::builder()
                .max_capacity(MAX_RATE_KEYS)
                .eviction_policy(moka::policy::EvictionPolicy::lru())
                .time_to_idle(refill_time(tier))
                .eviction_listener(move |_, _, cause| {
                    if cause == moka::notification::RemovalCause::Size {
                        evicted.increment(1);
                    }
                })
                .build();
            Arc::new((quota(tier).unwrap_or(Quota::per_second(NonZeroU32::MIN)), cache))
        });
        Some(entry.clone())
    }

    /// Runs the caches' upkeep (idle keys expire on their own).
    pub fn evict_idle(&self) {
        if let Ok(map) = self.limiters.read() {
            for limiters in map.values() {
                limiters.1.run_pending_tasks();
            }
        }
    }
}

impl RateLimit for RateLimits {
    fn check(&self, tier: &RateTier, key: &str) -> Result<(), u32> {
        // Without a limiter (poisoned lock) the request is refused, briefly.
        let Some(limiters) = self.limiters(tier) else { return Err(1) };
        let (quota, cache) = &*limiters;
        let limiter = cache.get_with_by_ref(key, || Arc::new(Limiter::direct_with_clock(*quota, self.clock.clone())));
        limiter.check().map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            wait.as_secs_f64().ceil().max(1.0) as u32
        })
    }
}

/// Fleet tiers that fell back to the local limiter (Redis slow or down).
pub const FALLBACK_TOTAL: &str = "portcullis_rate_limit_fallback_total";

/// The longest a check waits for the fleet count before it falls back.
pub const FLEET_WAIT: Duration = Duration::from_millis(50);

/// Failed or too slow fleet checks in a row before the back-off.
pub const FLEET_FAILURES: u32 = 3;

/// How long the fleet count is skipped after [`FLEET_FAILURES`] failures in a row.
pub const FLEET_BACKOFF: Duration = Duration::from_secs(1);

/// Redis calls made for fleet tiers (leases, or one per request with `fleet_exact`).
pub const FLEET_CALLS_TOTAL: &str = "portcullis_rate_limit_fleet_calls_total";

/// A lease is spent within 1/`LEASE_SHARE` of the tier's period, or dropped. Every request a
/// replica admits was charged to GCRA when its lease was granted, at most that long before: what
/// the fleet admits in any window of length W is at most what GCRA charged in W plus one lease
/// lifetime, `rate × W + burst + amount / LEASE_SHARE` — an overshoot of at most 5 % of the
/// rate, whatever the number of replicas.
pub const LEASE_SHARE: u32 = 20;

/// The most one lease asks for: what the fleet earns in a lease lifetime (1/20 of the rate),
/// at least 1, at most the burst.
pub fn lease_size(tier: &RateTier) -> u32 {
    (tier.amount / LEASE_SHARE).clamp(1, tier.burst.max(1))
}

/// The next lease's size: doubled while leases run out before they expire, else what the last
/// one's lifetime used (a replica that sees few requests holds few, so leases below the rate
/// waste little of the budget the other replicas share).
fn next_size(lease: &Lease, now: i64, tier: &RateTier) -> u32 {
    let size = if lease.expires_ms == 0 {
        1
    } else if lease.remaining == 0 && now < lease.expires_ms {
        lease.size.saturating_mul(2)
    } else {
        lease.spent
    };
    size.clamp(1, lease_size(tier))
}

/// How long a lease may be spent: 1/20 of the tier's period.
pub fn lease_lifetime_ms(tier: &RateTier) -> i64 {
    i64::from(tier.period_secs.max(1)) * 1000 / i64::from(LEASE_SHARE)
}

/// One key's lease on one replica.
#[derive(Default)]
struct Lease {
    /// Requests granted and not yet spent, valid until `expires_ms`.
    remaining: u32,
    expires_ms: i64,
    /// What the current lease asked for, and how much of it was spent.
    size: u32,
    spent: u32,
    /// The fleet had fewer than a lease's worth: answer locally until then (no Redis call per
    /// denied request), with that as the Retry-After.
    denied_until_ms: i64,
}

type Leases = moka::sync::Cache<(RateTier, String), Arc<tokio::sync::Mutex<Lease>>>;

/// Rate limits held for the whole fleet in Redis (`scope: fleet`, leased; `fleet_exact`, one
/// call a request), with the local limiter as the fallback at the tier's rate divided by
/// `rate_limits.fallback_replicas`.
pub struct FleetLimits {
    store: Option<Arc<crate::state::redis_store::RedisState>>,
    fallback: RateLimits,
    replicas: u32,
    clock: Arc<dyn Clock>,
    /// After [`FLEET_FAILURES`] failures in a row, Redis is not asked again until then
    /// (injected clock, ms): a Redis that is down must not cost every limited check the whole
    /// wait, while one slow answer under load must not switch the fleet count off.
    retry_after_ms: AtomicI64,
    failures: AtomicU32,
    leases: Leases,
    calls: std::sync::atomic::AtomicU64,
}

fn seconds(ms: i64) -> u32 {
    u32::try_from((ms.max(0) + 999) / 1000).unwrap_or(u32::MAX).max(1)
}

impl FleetLimits {
    pub fn new(
        store: Option<Arc<crate::state::redis_store::RedisState>>,
        clock: Arc<dyn Clock>,
        replicas: u32,
    ) -> Self {
        Self {
            store,
            fallback: RateLimits::new(clock.clone()),
            replicas: replicas.max(1),
            clock,
            retry_after_ms: AtomicI64::new(0),
            failures: AtomicU32::new(0),
            // A lease lives at most 1/20 of a period and a denial until the budget refills:
            // an entry idle for a minute holds nothing.
            leases: moka::sync::Cache::builder()
                .max_capacity(MAX_RATE_KEYS)
                .time_to_idle(Duration::from_secs(61))
                .build(),
            calls: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Redis calls made for fleet tiers since start.
    pub fn redis_calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// `Err(seconds)` when `key` is over `tier`'s fleet-wide rate.
    pub async fn check(&self, tier: &RateTier, key: &str) -> Result<(), u32> {
        let asking = self.clock.now_millis() >= self.retry_after_ms.load(Ordering::Acquire);
        if let Some(store) = self.store.as_ref().filter(|_| asking) {
            // One budget for queueing behind this key's own lease call and for the call.
            let queued = std::sync::atomic::AtomicBool::new(true);
            match tokio::time::timeout(FLEET_WAIT, self.leased(store, tier, key, &queued)).await {
                Ok(Ok(result)) => {
                    self.failures.store(0, Ordering::Relaxed);
                    return result;
                }
                // Still behind this replica's own call for the key: that call is what is slow
                // (and is counted once, by its own request); this one is limited locally.
                Err(_) if queued.load(Ordering::Relaxed) => {
                    tracing::debug!(tier = %tier.name, "fleet rate limit busy for this key; limiting locally");
                    return self.local_fallback(tier, key);
                }
                Ok(Err(e)) => {
                    tracing::debug!(tier = %tier.name, error = %e, "fleet rate limit unavailable; limiting locally")
                }
                Err(_) => tracing::debug!(tier = %tier.name, "fleet rate limit too slow; limiting locally"),
            }
            if self.failures.fetch_add(1, Ordering::Relaxed) + 1 >= FLEET_FAILURES {
                self.failures.store(0, Ordering::Relaxed);
                let backoff = i64::try_from(FLEET_BACKOFF.as_millis()).unwrap_or(i64::MAX);
                self.retry_after_ms.store(self.clock.now_millis().saturating_add(backoff), Ordering::Release);
            }
        }
        self.local_fallback(tier, key)
    }

    /// The tier at its rate divided by `rate_limits.fallback_replicas`, on this replica alone.
    fn local_fallback(&self, tier: &RateTier, key: &str) -> Result<(), u32> {
        metrics::counter!(FALLBACK_TOTAL, "tier" => tier.name.clone()).increment(1);
        let share = |n: u32| (n / self.replicas).max(1);
        let local = RateTier {
            amount: share(tier.amount),
            burst: share(tier.burst),
            scope: crate::decision::RateScope::Local,
            ..tier.clone()
        };
        RateLimit::check(&self.fallback, &local, key)
    }

    /// Spends this replica's lease of `key`, or asks Redis for a new one (requests for one key
    /// on one replica wait for that one call; `queued` is cleared once this one holds the key).
    /// The call runs in its own task, bounded by [`FLEET_WAIT`] too (the key's lock is never
    /// held longer), that keeps what Redis granted in the lease even when this request stops
    /// waiting. `fleet_exact` asks for one request each time and keeps nothing: a grant that
    /// arrives after its request gave up is lost (the fleet under-admits, never over).
    async fn leased(
        &self,
        store: &Arc<crate::state::redis_store::RedisState>,
        tier: &RateTier,
        key: &str,
        queued: &std::sync::atomic::AtomicBool,
    ) -> Result<Result<(), u32>, crate::state::StoreError> {
        // Microseconds: a millisecond interval would round 600/s up to 1000/s.
        let interval_us = (u64::from(tier.period_secs) * 1_000_000 / u64::from(tier.amount.max(1))).max(1);
        let burst = tier.burst.max(1);
        let exact = tier.scope == crate::decision::RateScope::FleetExact;
        let cell: Arc<tokio::sync::Mutex<Lease>> =
            if exact { Arc::default() } else { self.leases.get_with((tier.clone(), key.to_string()), Arc::default) };
        let mut lease = cell.lock_owned().await;
        queued.store(false, Ordering::Relaxed);
        let now = self.clock.now_millis();
        if lease.remaining > 0 && now < lease.expires_ms {
            lease.remaining -= 1;
            lease.spent += 1;
            return Ok(Ok(()));
        }
        if now < lease.denied_until_ms {
            return Ok(Err(seconds(lease.denied_until_ms - now)));
        }
        let want = if exact { 1 } else { next_size(&lease, now, tier) };
        self.calls.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(FLEET_CALLS_TOTAL, "tier" => tier.name.clone()).increment(1);
        let (store, name, key, clock, lifetime) =
            (store.clone(), tier.name.clone(), key.to_string(), self.clock.clone(), lease_lifetime_ms(tier));
        let call = tokio::spawn(async move {
            let grant = match tokio::time::timeout(FLEET_WAIT, store.lease(&name, &key, interval_us, burst, want)).await
            {
                Ok(grant) => grant,
                Err(_) => Err(crate::state::StoreError::Unavailable("the lease call timed out".into())),
            };
            if let Ok(grant) = &grant {
                let now = clock.now_millis();
                let after = |ms: u64| now.saturating_add(i64::try_from(ms).unwrap_or(i64::MAX));
                *lease = if grant.granted > 0 {
                    Lease { remaining: grant.granted, expires_ms: now + lifetime, size: want, ..Lease::default() }
                } else {
                    // Refused until a whole lease is there: the client is told that long.
                    Lease {
                        denied_until_ms: after(grant.next_all_ms.max(grant.next_one_ms)),
                        ..std::mem::take(&mut *lease)
                    }
                };
            }
            (grant.map(|g| g.granted), lease)
        });
        let (granted, mut lease) = call.await.map_err(|e| crate::state::StoreError::Unavailable(e.to_string()))?;
        if granted? > 0 {
            lease.remaining -= 1;
            lease.spent += 1;
            return Ok(Ok(()));
        }
        Ok(Err(seconds(lease.denied_until_ms - self.clock.now_millis())))
    }

    pub fn evict_idle(&self) {
        self.fallback.evict_idle();
        self.leases.run_pending_tasks();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::RateKey;

    #[test]
    fn keys_are_limited_apart_and_bounded() {
        let tier = RateTier {
            name: "t".into(),
            key: RateKey::Ip,
            amount: 2,
            period_secs: 60,
            burst: 2,
            scope: crate::decision::RateScope::Local,
        };
        let clock = Arc::new(crate::clock::ManualClock::at(1_700_000_000));
        let limits = RateLimits::new(clock.clone());
        assert!(limits.check(&tier, "a").is_ok());
        assert!(limits.check(&tier, "a").is_ok());
        assert_eq!(limits.check(&tier, "a"), Err(30), "a's burst is spent; one more in 30 s");
        clock.advance(Duration::from_secs(29));
        assert!(limits.check(&tier, "a").is_err(), "not yet");
        clock.advance(Duration::from_secs(1));
        assert!(limits.check(&tier, "a").is_ok(), "refilled by the moved clock");
        assert!(limits.check(&tier, "b").is_ok(), "b has its own bucket");
        assert_eq!(refill_time(&tier), Duration::from_secs(61));
        let (_, cache) = &*limits.limiters(&tier).expect("limiters");
        cache.run_pending_tasks();
        assert_eq!(cache.entry_count(), 2);
        assert_eq!(cache.policy().max_capacity(), Some(MAX_RATE_KEYS));
    }
}
