//! Rate limiting state (governor, GCRA): one keyed limiter per tier definition, created on
//! first use so a reloaded policy with new tiers just works; idle keys are evicted.

use crate::decision::{RateLimit, RateTier};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, RwLock};

type Limiter = DefaultKeyedRateLimiter<String>;

#[derive(Default)]
pub struct RateLimits {
    limiters: RwLock<HashMap<RateTier, Arc<Limiter>>>,
}

fn quota(tier: &RateTier) -> Option<Quota> {
    let amount = NonZeroU32::new(tier.amount)?;
    let burst = NonZeroU32::new(tier.burst).unwrap_or(amount);
    let base = if tier.period_secs >= 60 { Quota::per_minute(amount) } else { Quota::per_second(amount) };
    Some(base.allow_burst(burst))
}

impl RateLimits {
    fn limiter(&self, tier: &RateTier) -> Option<Arc<Limiter>> {
        if let Some(l) = self.limiters.read().ok()?.get(tier) {
            return Some(l.clone());
        }
        let mut map = self.limiters.write().ok()?;
        let limiter = map
            .entry(tier.clone())
            .or_insert_with(|| Arc::new(Limiter::keyed(quota(tier).unwrap_or(Quota::per_second(NonZeroU32::MIN)))));
        Some(limiter.clone())
    }

    /// Forgets keys that are back to a full bucket, so memory follows the active clients.
    pub fn evict_idle(&self) {
        if let Ok(map) = self.limiters.read() {
            for limiter in map.values() {
                limiter.retain_recent();
                limiter.shrink_to_fit();
            }
        }
    }
}

impl RateLimit for RateLimits {
    fn check(&self, tier: &RateTier, key: &str) -> Result<(), u32> {
        // Without a limiter (poisoned lock) the request is refused, briefly.
        let Some(limiter) = self.limiter(tier) else { return Err(1) };
        limiter.check_key(&key.to_string()).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            wait.as_secs_f64().ceil().max(1.0) as u32
        })
    }
}
