//! The memory test of issue 25: 100,000 identities through the real verifier and claims cache
//! (the bench policy, seed-shaped tokens), RSS read from /proc before and after. The server's
//! own figure (RSS of `portcullis serve` filled over gRPC) is the side-by-side run's memory step;
//! this one isolates the cache.
//!
//!   cargo run --release --example memory -- POLICY [COUNT]

#[path = "common.rs"]
mod common;

use portcullis::cache::{CacheSettings, ClaimsCache};
use portcullis::decision::UnixTime;
use sha2::{Digest, Sha256};
#[path = "counting.rs"]
mod counting;

use counting::{LIVE, LIVE_BYTES, read};

/// Counts live heap bytes and allocations, so the figure says what the entries ask for.
#[global_allocator]
static ALLOCATOR: counting::Counting = counting::Counting;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let policy = args.first().ok_or("usage: memory POLICY [COUNT]")?;
    let count: usize = args.get(1).map_or(Ok(100_000), |c| c.parse()).map_err(|e| format!("COUNT: {e}"))?;
    let settings = portcullis::config::load_file(std::path::Path::new(policy)).map_err(|e| e.to_string())?;
    let verifier = &settings.snapshot.verifier;
    let cache = ClaimsCache::new(CacheSettings { max_entries: u64::MAX, max_bytes: 1 << 40, ..settings.cache });
    let now = UnixTime(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_err(|e| e.to_string())?.as_secs() as i64,
    );
    // Tokens are minted in batches and dropped, so what stays is what the cache holds.
    let before = rss_kib();
    let (bytes_before, allocs_before) = (read(&LIVE_BYTES), read(&LIVE));
    for start in (0..count).step_by(10_000) {
        let batch = common::mint_range(start, (start + 10_000).min(count))?;
        for token in &batch {
            let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
            cache.verify(verifier, token, &digest, now).await.map_err(|e| format!("{e}"))?;
        }
    }
    let entries = cache.entry_count().await;
    let weighted = cache.weighted_size().await;
    let after = rss_kib();
    let per = (after.saturating_sub(before) * 1024) / entries.max(1);
    let n = entries.max(1) as usize;
    let requested = read(&LIVE_BYTES).saturating_sub(bytes_before) / n;
    let allocs = read(&LIVE).saturating_sub(allocs_before) as f64 / n as f64;
    println!(
        "{{\"identities\": {entries}, \"rss_kib_before\": {before}, \"rss_kib_after\": {after}, \"bytes_per_identity\": {per}, \"requested_bytes_per_identity\": {requested}, \"allocations_per_identity\": {allocs:.2}, \"weighted_bytes\": {weighted}}}"
    );
    Ok(())
}
