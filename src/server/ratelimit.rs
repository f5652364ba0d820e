//! Rate limiting state (governor, GCRA): per tier definition, one limiter per key in a bounded
//! cache, created on first use so a reloaded policy with new tiers just works. A key idle long
//! enough for its bucket to refill is forgotten (that changes nothing); past
//! [`MAX_RATE_KEYS`] keys the least recently used are evicted first and counted.

use crate::blocks::EVICTIONS_TOTAL;
use crate::decision::{RateLimit, RateTier};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota};
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Most keys (clients, subjects, tenants) remembered per tier.
pub const MAX_RATE_KEYS: u64 = 100_000;

type Limiters = moka::sync::Cache<String, Arc<DefaultDirectRateLimiter>>;

#[derive(Default)]
pub struct RateLimits {
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
        let limiter = cache.get_with_by_ref(key, || Arc::new(DefaultDirectRateLimiter::direct(*quota)));
        limiter.check().map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            wait.as_secs_f64().ceil().max(1.0) as u32
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::RateKey;

    #[test]
    fn keys_are_limited_apart_and_bounded() {
        let tier = RateTier { name: "t".into(), key: RateKey::Ip, amount: 2, period_secs: 60, burst: 2 };
        let limits = RateLimits::default();
        assert!(limits.check(&tier, "a").is_ok());
        assert!(limits.check(&tier, "a").is_ok());
        assert!(limits.check(&tier, "a").is_err(), "a's burst is spent");
        assert!(limits.check(&tier, "b").is_ok(), "b has its own bucket");
        assert_eq!(refill_time(&tier), Duration::from_secs(61));
        let (_, cache) = &*limits.limiters(&tier).expect("limiters");
        cache.run_pending_tasks();
        assert_eq!(cache.entry_count(), 2);
        assert_eq!(cache.policy().max_capacity(), Some(MAX_RATE_KEYS));
    }
}
