//! Allocations per cached check (issue 36's hot path): the decode → decide → encode step of
//! `benches/check.rs` on a cached identity, every heap allocation counted. Deterministic, so
//! it runs in any profile:
//!
//!   cargo run --example allocs

#[path = "../tests/support/corpus.rs"]
mod corpus;
#[path = "counting.rs"]
mod counting;

use counting::{BYTES_MADE, MADE, read};
use jsonwebtoken::Algorithm;
use portcullis::cache::{CacheSettings, ClaimsCache};
use portcullis::config::{Snapshot, parse_and_validate};
use portcullis::decision::*;
use portcullis::dev::request::{HeaderEncoding, check_request};
use portcullis::server::convert::{check_input, check_response_owned};
use portcullis::server::proto::envoy::service::auth::v3::CheckRequest;
use prost::Message;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

#[global_allocator]
static ALLOCATOR: counting::Counting = counting::Counting;

fn snapshot() -> Result<Arc<Snapshot>, String> {
    let text = std::fs::read_to_string(corpus::fixtures().join("policy.yaml")).map_err(|e| e.to_string())?;
    Ok(parse_and_validate(&text, &corpus::fixtures()).map_err(|e| e.to_string())?.snapshot)
}

/// The serving path's order: the core up to the credential, the claims cache, the rest.
fn decide_with(snap: &Snapshot, cache: &ClaimsCache, input: &CheckInput, now: UnixTime) -> Result<Decision, String> {
    let services = Services::stateless(&snap.verifier);
    Ok(match begin(input, &snap.policy, &services, now) {
        Progress::Decided(decision) => decision,
        Progress::Verify(pending) => {
            let verify = cache.verify(&snap.verifier, pending.token(), pending.digest(), now);
            // A hit never waits: the future is ready on its first poll.
            let verified = futures_util::FutureExt::now_or_never(verify).ok_or("the cache made a hit wait")?;
            finish(&pending, verified, None, &services, now)
        }
    })
}

fn main() -> Result<(), String> {
    let snap = snapshot()?;
    let cache = ClaimsCache::new(CacheSettings::default());
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_err(|e| e.to_string())?.as_secs() as i64;
    let token = corpus::sign(Algorithm::EdDSA, Some("ed-1"), &corpus::claims(corpus::ISSUER, "bench", now));
    let bearer = format!("Bearer {token}");
    let request = check_request("GET", "/api/items", &[("authorization", bearer.as_str())], HeaderEncoding::Map);
    let bytes = request.encode_to_vec();
    let check = || -> Result<(usize, bool), String> {
        let request = CheckRequest::decode(bytes.as_slice()).map_err(|e| e.to_string())?;
        let input = check_input(request);
        let decision = decide_with(&snap, &cache, &input, UnixTime(now))?;
        let allowed = matches!(decision.outcome, Outcome::Allow { .. });
        Ok((check_response_owned(decision, &input.request_id, &snap.policy.response).encode_to_vec().len(), allowed))
    };
    let (_, allowed) = check()?;
    if !allowed {
        return Err("the bench request is not allowed".into());
    }
    // Where they are made, one check's phases apart.
    let count = || read(&MADE);
    let mut phases: Vec<(&str, usize)> = Vec::new();
    let mut mark = |name, start: usize| {
        let now = count();
        phases.push((name, now - start));
        now
    };
    let t = count();
    let request = CheckRequest::decode(bytes.as_slice()).map_err(|e| e.to_string())?;
    let t = mark("decode", t);
    let input = check_input(request);
    let t = mark("check_input", t);
    let services = Services::stateless(&snap.verifier);
    let Progress::Verify(pending) = begin(&input, &snap.policy, &services, UnixTime(now)) else {
        return Err("decided before the credential".into());
    };
    let t = mark("begin", t);
    let verify = cache.verify(&snap.verifier, pending.token(), pending.digest(), UnixTime(now));
    let verified = futures_util::FutureExt::now_or_never(verify).ok_or("the cache made a hit wait")?;
    let t = mark("cache hit", t);
    let decision = finish(&pending, verified, None, &services, UnixTime(now));
    let t = mark("finish", t);
    let response = check_response_owned(decision, &input.request_id, &snap.policy.response);
    let t = mark("response", t);
    let encoded = response.encode_to_vec();
    mark("encode", t);
    drop((encoded, pending));
    const ROUNDS: usize = 1_000;
    let (allocations, bytes) = (read(&MADE), read(&BYTES_MADE));
    for _ in 0..ROUNDS {
        check()?;
    }
    let per = |total: usize, before: usize| (total - before) as f64 / ROUNDS as f64;
    let phases: Vec<String> = phases.iter().map(|(name, n)| format!("\"{name}\": {n}")).collect();
    println!(
        "{{\"allocations_per_check\": {:.1}, \"bytes_allocated_per_check\": {:.0}, \"by_phase\": {{{}}}}}",
        per(read(&MADE), allocations),
        per(read(&BYTES_MADE), bytes),
        phases.join(", ")
    );
    Ok(())
}
