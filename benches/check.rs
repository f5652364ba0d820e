//! The hot path in isolation (issue 12): one decision on a cached identity, the whole
//! decode → decide → encode step, and token verification per algorithm against the crypto
//! backend's raw verify of the same signature. Run: `cargo bench --bench check`.

#[path = "../tests/support/corpus.rs"]
mod corpus;

use criterion::{Criterion, criterion_group, criterion_main};
use jsonwebtoken::{Algorithm, DecodingKey};
use portcullis::cache::{CacheSettings, ClaimsCache};
use portcullis::config::{Snapshot, parse_and_validate};
use portcullis::decision::*;
use portcullis::dev::request::{HeaderEncoding, check_request};
use portcullis::server::convert::{check_input, check_response};
use portcullis::server::proto::envoy::service::auth::v3::CheckRequest;
use prost::Message;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

fn snapshot() -> Arc<Snapshot> {
    let text = std::fs::read_to_string(corpus::fixtures().join("policy.yaml")).expect("policy");
    parse_and_validate(&text, &corpus::fixtures()).expect("fixture policy").snapshot
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs() as i64
}

/// The serving path's order: the core up to the credential, the claims cache, the rest.
fn decide_with(snap: &Snapshot, cache: &ClaimsCache, input: &CheckInput, now: UnixTime) -> Decision {
    let services = Services::stateless(&snap.verifier);
    match begin(input, &snap.policy, &services, now) {
        Progress::Decided(decision) => decision,
        Progress::Verify(pending) => {
            let verify = cache.verify(&snap.verifier, pending.token(), pending.digest(), now);
            // A hit never waits: the future is ready on its first poll.
            let verified = futures_util::FutureExt::now_or_never(verify).unwrap_or_else(|| {
                tokio::runtime::Builder::new_current_thread().build().expect("runtime").block_on(cache.verify(
                    &snap.verifier,
                    pending.token(),
                    pending.digest(),
                    now,
                ))
            });
            finish(&pending, verified, None, &services, now)
        }
    }
}

fn hot_path(c: &mut Criterion) {
    let snap = snapshot();
    let cache = ClaimsCache::new(CacheSettings::default());
    let now = now();
    let token = corpus::sign(Algorithm::EdDSA, Some("ed-1"), &corpus::claims(corpus::ISSUER, "bench", now));
    let bearer = format!("Bearer {token}");
    let request = check_request("GET", "/api/items", &[("authorization", bearer.as_str())], HeaderEncoding::Map);
    let bytes = request.encode_to_vec();
    let input = check_input(request);
    let first = decide_with(&snap, &cache, &input, UnixTime(now));
    assert!(matches!(first.outcome, Outcome::Allow { .. }), "{first:?}");

    c.bench_function("decide/cached_allow", |b| {
        b.iter(|| black_box(decide_with(&snap, &cache, black_box(&input), UnixTime(now))))
    });
    c.bench_function("check/decode_decide_encode_cached", |b| {
        b.iter(|| {
            let request = CheckRequest::decode(black_box(bytes.as_slice())).expect("decode");
            let input = check_input(request);
            let decision = decide_with(&snap, &cache, &input, UnixTime(now));
            black_box(check_response(&decision, &input.request_id, &snap.policy.response).encode_to_vec())
        })
    });
}

/// Issue 36: host-scoped routes (the shape team fragments produce), `n` of them, each owning
/// its host, ahead of the fixture's routes; a request for a host in the middle.
fn routes(c: &mut Criterion) {
    let fixture = std::fs::read_to_string(corpus::fixtures().join("policy.yaml")).expect("policy");
    let now = UnixTime(now());
    for n in [10usize, 5_000] {
        let mut team_routes = String::from("routes:\n");
        for i in 0..n {
            team_routes
                .push_str(&format!("  - {{ match: {{ host: team{i}.example.com, path_prefix: / }}, public: true }}\n"));
        }
        let text = fixture.replacen("routes:\n", &team_routes, 1);
        let snap = parse_and_validate(&text, &corpus::fixtures()).expect("policy").snapshot;
        let mut request = check_request("GET", "/orders/7", &[], HeaderEncoding::Map);
        if let Some(http) = request.attributes.as_mut().and_then(|a| a.request.as_mut()).and_then(|r| r.http.as_mut()) {
            http.host = format!("team{}.example.com", n / 2);
        }
        let input = check_input(request);
        let services = Services::stateless(&snap.verifier);
        let first = decide(&input, &snap.policy, &services, now);
        assert!(matches!(first.outcome, Outcome::Allow { .. }), "{first:?}");
        c.bench_function(&format!("routes/host_scoped_{n}_indexed"), |b| {
            b.iter(|| black_box(decide(black_box(&input), &snap.policy, &services, now)))
        });
        let mut scanned = snap.policy.clone();
        scanned.route_index = None;
        c.bench_function(&format!("routes/host_scoped_{n}_scanned"), |b| {
            b.iter(|| black_box(decide(black_box(&input), &scanned, &services, now)))
        });
    }
}

fn verification(c: &mut Criterion) {
    let snap = snapshot();
    let now = now();
    let read = |name: &str| std::fs::read(corpus::fixtures().join("keys").join(name)).expect("key");
    let cases = [
        (Algorithm::RS256, "rsa-1", DecodingKey::from_rsa_pem(&read("rsa.pub.pem")).expect("rsa")),
        (Algorithm::ES256, "ec-1", DecodingKey::from_ec_pem(&read("ec.pub.pem")).expect("ec")),
        (Algorithm::EdDSA, "ed-1", DecodingKey::from_ed_pem(&read("ed.pub.pem")).expect("ed")),
    ];
    for (alg, kid, key) in cases {
        let token = corpus::sign(alg, Some(kid), &corpus::claims(corpus::ISSUER, "bench", now));
        snap.verifier.verify(&token).expect("verifies");
        let (message, signature) = token.rsplit_once('.').expect("jws");
        c.bench_function(&format!("verify/{alg:?}/portcullis"), |b| {
            b.iter(|| black_box(snap.verifier.verify(black_box(&token)).is_ok()))
        });
        c.bench_function(&format!("verify/{alg:?}/raw"), |b| {
            b.iter(|| {
                black_box(jsonwebtoken::crypto::verify(signature, message.as_bytes(), &key, alg).unwrap_or(false))
            })
        });
    }
}

criterion_group!(benches, hot_path, routes, verification);
criterion_main!(benches);
