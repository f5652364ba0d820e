//! Fleet rate limits (issue 23): the latency one `scope: fleet` check adds (one GCRA script
//! round trip to Redis), and how close two replicas sharing a tier stay to its limit.
//!
//!   redis-server --port 6399 --save '' &
//!   cargo run --release --example fleet_rate -- redis://127.0.0.1:6399 60
//!
//! Two `RedisState`s (two replicas) ask for the same key as fast as they can for the given
//! seconds against a tier of 600 per minute with a burst of 10; the report gives admitted vs
//! the limit (burst + rate × time) and the latency distribution of the script calls.

use portcullis::clock::{Clock, SystemClock};
use portcullis::state::redis_store::RedisState;
use portcullis::state::{RedisSettings, RedisTarget, StateHealth};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PER_MINUTE: u64 = 600;
const BURST: u32 = 10;

#[tokio::main]
async fn main() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let url = args.next().unwrap_or_else(|| "redis://127.0.0.1:6399".into());
    let seconds: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(60);
    let settings = RedisSettings {
        target: RedisTarget::Url(url),
        tls: None,
        username: None,
        password: None,
        key_prefix: format!("bench-{}", std::process::id()),
        max_staleness: Duration::from_secs(30),
        resync_interval: Duration::from_secs(300),
    };
    let replica = || {
        let health = Arc::new(StateHealth::new(Duration::from_secs(30), SystemClock.now_millis()));
        RedisState::new(&settings, health, Arc::new(SystemClock)).map(Arc::new)
    };
    let replicas = [replica()?, replica()?];
    let interval_us = 60_000_000 / PER_MINUTE;
    let until = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for store in replicas {
        tasks.push(tokio::spawn(async move {
            let (mut admitted, mut refused, mut latencies) = (0u64, 0u64, Vec::new());
            while Instant::now() < until {
                let started = Instant::now();
                match store.gcra("bench", "one-client", interval_us, BURST).await {
                    Ok(Ok(())) => admitted += 1,
                    Ok(Err(_)) => refused += 1,
                    Err(e) => return Err(e.to_string()),
                }
                latencies.push(started.elapsed().as_micros() as u64);
            }
            Ok((admitted, refused, latencies))
        }));
    }
    let (mut admitted, mut refused, mut latencies) = (0, 0, Vec::new());
    for task in tasks {
        let (a, r, l) = task.await.map_err(|e| e.to_string())??;
        admitted += a;
        refused += r;
        latencies.extend(l);
    }
    latencies.sort_unstable();
    let pct = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p) as usize];
    let limit = u64::from(BURST) + PER_MINUTE * seconds / 60;
    println!(
        "two replicas, {seconds} s, {PER_MINUTE}/min burst {BURST}: admitted {admitted} (limit {limit}, {:+.2}%), refused {refused}",
        (admitted as f64 - limit as f64) * 100.0 / limit as f64
    );
    println!(
        "GCRA round trip: {} calls, p50 {} µs, p90 {} µs, p99 {} µs, max {} µs",
        latencies.len(),
        pct(0.5),
        pct(0.9),
        pct(0.99),
        latencies.last().copied().unwrap_or(0)
    );
    Ok(())
}
