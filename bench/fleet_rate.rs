//! Fleet rate limits (issues 23 and 36): three replicas (three `FleetLimits`, each with its own
//! Redis connection) ask for one key of a fleet tier as fast as they can, first leased
//! (`scope: fleet`), then with one script call a request (`scope: fleet_exact`). The report
//! gives what the fleet admitted against GCRA's limit (burst + rate × time), the overshoot, and
//! the Redis calls per 1,000 requests.
//!
//!   redis-server --port 6399 --save '' &
//!   cargo run --release --example fleet_rate -- redis://127.0.0.1:6399 10 10000
//!
//! Arguments: the Redis URL, seconds per mode, the tier's rate per second (burst: 1/10 of it).

use portcullis::clock::{Clock, SystemClock};
use portcullis::decision::{RateKey, RateScope, RateTier};
use portcullis::dev::flood::{Flood, fleet_flood};
use portcullis::state::ratelimit::FleetLimits;
use portcullis::state::redis_store::RedisState;
use portcullis::state::{RedisSettings, RedisTarget, StateHealth};
use std::sync::Arc;
use std::time::Duration;

const REPLICAS: usize = 3;

#[tokio::main]
async fn main() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let url = args.next().unwrap_or_else(|| "redis://127.0.0.1:6399".into());
    let seconds: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(10);
    let rate: u32 = args.next().and_then(|s| s.parse().ok()).unwrap_or(10_000);
    for (scope, mode) in [(RateScope::Fleet, "leased"), (RateScope::FleetExact, "exact")] {
        let settings = RedisSettings {
            target: RedisTarget::Url(url.clone()),
            tls: None,
            username: None,
            password: None,
            key_prefix: format!("bench-{}-{mode}", std::process::id()),
            max_staleness: Duration::from_secs(30),
            resync_interval: Duration::from_secs(300),
        };
        let replica = || {
            let health = Arc::new(StateHealth::new(Duration::from_secs(30), SystemClock.now_millis()));
            let store = RedisState::new(&settings, health, Arc::new(SystemClock)).map(Arc::new)?;
            Ok::<_, String>(Arc::new(FleetLimits::new(Some(store), Arc::new(SystemClock), REPLICAS as u32)))
        };
        let replicas = (0..REPLICAS).map(|_| replica()).collect::<Result<Vec<_>, _>>()?;
        let tier = RateTier {
            name: "bench".into(),
            key: RateKey::Tenant,
            amount: rate,
            period_secs: 1,
            burst: rate / 10,
            scope,
        };
        let flood =
            fleet_flood(&replicas, &tier, "one-tenant", Duration::from_secs(seconds), Arc::new(SystemClock)).await;
        let Flood { admitted, asked, calls, elapsed } = flood;
        let elapsed = elapsed.as_secs_f64();
        let limit = f64::from(tier.burst) + f64::from(rate) * elapsed;
        println!(
            "{mode}: {REPLICAS} replicas, {elapsed:.1} s, {rate}/s burst {}: admitted {admitted} (limit {limit:.0}, \
             overshoot {:+.2}% of the rate), {asked} requests, {calls} Redis calls ({:.2} per 1,000 requests, \
             one per {:.0})",
            tier.burst,
            (admitted as f64 - limit) * 100.0 / (f64::from(rate) * elapsed),
            calls as f64 * 1000.0 / asked as f64,
            asked as f64 / calls.max(1) as f64
        );
    }
    Ok(())
}
