//! A flood of one fleet tier's key from several replicas, for the lease test and the
//! `fleet_rate` benchmark (the same measurement in both).

use crate::clock::Clock;
use crate::decision::RateTier;
use crate::state::ratelimit::FleetLimits;
use std::sync::Arc;
use std::time::Duration;

/// What the replicas did together.
#[derive(Debug, Clone, Copy)]
pub struct Flood {
    pub admitted: u64,
    pub asked: u64,
    /// Redis calls made during the flood (not the warm-up's).
    pub calls: u64,
    pub elapsed: Duration,
}

/// Each replica asks for `key` of `tier` as fast as it can for `run_for` on `clock` (the one
/// the replicas were given), after one warm-up check of another tier (so connecting is not
/// measured).
pub async fn fleet_flood(
    replicas: &[Arc<FleetLimits>],
    tier: &RateTier,
    key: &str,
    run_for: Duration,
    clock: Arc<dyn Clock>,
) -> Flood {
    for r in replicas {
        let _ = r.check(&RateTier { name: format!("{}-warm", tier.name), ..tier.clone() }, "warm").await;
    }
    let warm: u64 = replicas.iter().map(|r| r.redis_calls()).sum();
    let started = clock.now_millis();
    let until = started.saturating_add(i64::try_from(run_for.as_millis()).unwrap_or(i64::MAX));
    let tasks: Vec<_> = replicas
        .iter()
        .map(|r| {
            let (r, tier, key, clock) = (r.clone(), tier.clone(), key.to_string(), clock.clone());
            tokio::spawn(async move {
                let (mut admitted, mut asked) = (0u64, 0u64);
                while clock.now_millis() < until {
                    asked += 1;
                    if r.check(&tier, &key).await.is_ok() {
                        admitted += 1;
                    }
                    tokio::task::yield_now().await;
                }
                (admitted, asked)
            })
        })
        .collect();
    let (mut admitted, mut asked) = (0, 0);
    for t in tasks {
        // A replica task that panicked counts nothing (the caller's bounds then fail).
        let (a, b) = t.await.unwrap_or((0, 0));
        admitted += a;
        asked += b;
    }
    let elapsed = Duration::from_millis(u64::try_from(clock.now_millis() - started).unwrap_or(0));
    let calls = replicas.iter().map(|r| r.redis_calls()).sum::<u64>().saturating_sub(warm);
    Flood { admitted, asked, calls, elapsed }
}
