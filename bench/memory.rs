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
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Counts live heap bytes and allocations, so the figure says what the entries ask for, apart
/// from the allocator's rounding and fragmentation that RSS adds.
struct Counting;

static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);
static LIVE_ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed on to the system allocator unchanged; only counters are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        LIVE_ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract is System's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        LIVE_ALLOCS.fetch_sub(1, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(new_size, Ordering::Relaxed);
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

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
    let (bytes_before, allocs_before) = (LIVE_BYTES.load(Ordering::Relaxed), LIVE_ALLOCS.load(Ordering::Relaxed));
    for start in (0..count).step_by(10_000) {
        let batch = common::mint_range(start, (start + 10_000).min(count))?;
        for token in &batch {
            let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
            cache.verify(verifier, token, &digest, now).await.map_err(|e| format!("{e}"))?;
        }
    }
    if std::env::var_os("MEMORY_PEEK").is_some() {
        let batch = common::mint_range(0, 1)?;
        let digest: [u8; 32] = Sha256::digest(batch[0].as_bytes()).into();
        let t = cache.verify(verifier, &batch[0], &digest, now).await.map_err(|e| format!("{e}"))?;
        eprintln!("{:?} size_of token {}", t.claims(), std::mem::size_of_val(&t));
    }
    let entries = cache.entry_count().await;
    let weighted = cache.weighted_size().await;
    let after = rss_kib();
    let per = (after.saturating_sub(before) * 1024) / entries.max(1);
    let n = entries.max(1) as usize;
    let requested = LIVE_BYTES.load(Ordering::Relaxed).saturating_sub(bytes_before) / n;
    let allocs = LIVE_ALLOCS.load(Ordering::Relaxed).saturating_sub(allocs_before) as f64 / n as f64;
    println!(
        "{{\"identities\": {entries}, \"rss_kib_before\": {before}, \"rss_kib_after\": {after}, \"bytes_per_identity\": {per}, \"requested_bytes_per_identity\": {requested}, \"allocations_per_identity\": {allocs:.2}, \"weighted_bytes\": {weighted}}}"
    );
    Ok(())
}
