//! Cache rules without sockets: what is remembered, for how long, and what invalidates it.

use super::*;
use crate::config::parse_and_validate;
use crate::corpus;
use crate::jwt::{KeyStore, keys_from_jwks};
use sha2::{Digest, Sha256};

/// `token` through `cache` at `now`.
async fn through(cache: &ClaimsCache, v: &Verifier, token: &str, now: i64) -> Result<VerifiedToken, TokenError> {
    let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    cache.verify(v, token, &digest, UnixTime(now)).await
}

const NOW: i64 = 1_790_000_000;

fn verifier() -> Verifier {
    let dir = corpus::fixtures();
    let text = std::fs::read_to_string(dir.join("policy.yaml")).expect("policy");
    parse_and_validate(&text, &dir).expect("valid").snapshot.verifier.clone()
}

fn token(exp_in: i64) -> String {
    let mut claims = corpus::claims(corpus::ISSUER, "alice", NOW);
    claims["exp"] = serde_json::json!(NOW + exp_in);
    corpus::sign(jsonwebtoken::Algorithm::RS256, Some("rsa-1"), &claims)
}

#[test]
fn positive_entries_live_at_most_until_exp() {
    let cache =
        ClaimsCache::new(CacheSettings { ttl: Duration::from_secs(30), max_entries: 10, ..CacheSettings::default() });
    let ok = verifier().verify(&token(600));
    assert_eq!(cache.ttl_for(&ok, UnixTime(NOW)), Some(Duration::from_secs(30)));
    let short = verifier().verify(&token(5));
    assert_eq!(cache.ttl_for(&short, UnixTime(NOW)), Some(Duration::from_secs(5)));
    let expired = verifier().verify(&token(-1));
    assert_eq!(cache.ttl_for(&expired, UnixTime(NOW)), None, "an expired token is not cached");
}

#[test]
fn only_time_and_rotation_independent_failures_are_remembered() {
    let cache = ClaimsCache::new(CacheSettings::default());
    let issuer = crate::decision::IssuerId(0);
    let cases = [
        (TokenError::Malformed("x"), Some(NEGATIVE_TTL)),
        (TokenError::Header("crit".into()), Some(NEGATIVE_TTL)),
        (TokenError::Signature { issuer, remote: false }, Some(NEGATIVE_TTL)),
        (TokenError::Signature { issuer, remote: true }, None),
        (TokenError::Claims("aud".into()), Some(NEGATIVE_TTL)),
        (TokenError::UnknownKey { issuer, why: "kid".into(), remote: false }, None),
        (TokenError::UnknownKey { issuer, why: "kid".into(), remote: true }, None),
        (TokenError::KeysUnavailable { issuer }, None),
    ];
    for (err, want) in cases {
        assert_eq!(cache.ttl_for(&Err(err.clone()), UnixTime(NOW)), want, "{err}");
    }
}

/// The verifier of the fixture policy with `edit` applied to its text.
fn verifier_with(edit: impl Fn(String) -> String) -> Verifier {
    let dir = corpus::fixtures();
    let text = edit(std::fs::read_to_string(dir.join("policy.yaml")).expect("policy"));
    parse_and_validate(&text, &dir).expect("valid").snapshot.verifier.clone()
}

#[tokio::test]
async fn hits_misses_and_generations() {
    let v = verifier();
    let cache = ClaimsCache::new(CacheSettings::default());
    let t = token(600);
    assert!(through(&cache, &v, &t, NOW).await.is_ok());
    assert!(through(&cache, &v, &t, NOW).await.is_ok());
    assert_eq!(cache.entry_count().await, 1);
    // The issuer's keys change: the entry no longer counts, and the new keys decide.
    let rotated =
        keys_from_jwks(&std::fs::read_to_string(corpus::fixtures().join("keys/jwks-rsa2.json")).expect("jwks"))
            .expect("keys");
    let store: &KeyStore = v.store(crate::decision::IssuerId(0)).expect("store");
    store.replace(rotated, NOW);
    assert!(
        matches!(through(&cache, &v, &t, NOW).await, Err(TokenError::UnknownKey { .. })),
        "a removed key stops verifying at once"
    );
    cache.clear();
    assert_eq!(cache.entry_count().await, 0);
}

#[tokio::test]
async fn invalidate_by_subject() {
    let v = verifier();
    let cache = ClaimsCache::new(CacheSettings::default());
    let bob = corpus::sign(jsonwebtoken::Algorithm::RS256, Some("rsa-1"), &corpus::claims(corpus::ISSUER, "bob", NOW));
    assert!(through(&cache, &v, &token(600), NOW).await.is_ok());
    assert!(through(&cache, &v, &bob, NOW).await.is_ok());
    cache.invalidate_subject("alice", Some(corpus::ISSUER));
    assert_eq!(cache.entry_count().await, 1, "only alice's entry is dropped");
}

/// The entry held for `token` (kept alive by the caller, so a refill cannot reuse its text's
/// address).
async fn held(cache: &ClaimsCache, token: &str) -> Option<Entry> {
    let key: Key = Sha256::digest(token.as_bytes()).into();
    cache.entries.get(&key).await
}

/// Whether `a` is `b` (not a verification made again): their tokens share one packed text.
fn same(a: Option<Entry>, b: &Entry) -> bool {
    let text = |e: &Entry| e.result.as_ref().ok().map(|t| t.subject().as_ptr());
    a.is_some_and(|a| text(&a).is_some() && text(&a) == text(b))
}

#[tokio::test]
async fn entries_expire_by_the_injected_clock() {
    let v = verifier();
    let cache =
        ClaimsCache::new(CacheSettings { ttl: Duration::from_secs(30), max_entries: 10, ..CacheSettings::default() });
    let t = token(600);
    assert!(through(&cache, &v, &t, NOW).await.is_ok());
    let first = held(&cache, &t).await.expect("cached");
    assert!(through(&cache, &v, &t, NOW + 29).await.is_ok());
    assert!(same(held(&cache, &t).await, &first), "served from the cache within the ttl");
    assert!(through(&cache, &v, &t, NOW + 30).await.is_ok());
    assert!(held(&cache, &t).await.is_some(), "cached again");
    assert!(!same(held(&cache, &t).await, &first), "at the ttl the token is verified again");

    // A token about to expire is kept only until its exp, and an expired one not at all.
    let short = token(3);
    assert!(through(&cache, &v, &short, NOW).await.is_ok());
    let kept = held(&cache, &short).await.expect("cached");
    assert!(through(&cache, &v, &short, NOW + 3).await.is_ok(), "time claims are the core's to check");
    assert!(!same(held(&cache, &short).await, &kept), "not served past its exp");
    assert!(through(&cache, &v, &short, NOW + 10).await.is_ok());
    assert!(held(&cache, &short).await.is_none(), "an expired token is not remembered");
}

#[tokio::test]
async fn a_zero_ttl_remembers_nothing_and_failures_only_briefly() {
    let v = verifier();
    let off = ClaimsCache::new(CacheSettings { ttl: Duration::ZERO, max_entries: 10, ..CacheSettings::default() });
    let t = token(600);
    assert!(through(&off, &v, &t, NOW).await.is_ok());
    assert_eq!(off.entry_count().await, 0, "ttl 0s disables caching");

    let cache = ClaimsCache::new(CacheSettings::default());
    let forged = format!("{}x", &t[..t.len() - 1]);
    let bad = Some(TokenError::Signature { issuer: crate::decision::IssuerId(0), remote: false });
    assert_eq!(through(&cache, &v, &forged, NOW).await.err(), bad);
    let negative = held(&cache, &forged).await.expect("a bad signature is remembered");
    assert_eq!(through(&cache, &v, &forged, NOW + NEGATIVE_TTL.as_secs() as i64).await.err(), bad);
    assert!(!same(held(&cache, &forged).await, &negative), "for at most NEGATIVE_TTL");
}

#[tokio::test]
async fn any_configured_capacity_is_usable() {
    // `cache.max_entries` is any u64 from 1: neither end may panic or allocate up front.
    let v = verifier();
    for max_entries in [1, u64::MAX] {
        let cache =
            ClaimsCache::new(CacheSettings { ttl: Duration::from_secs(30), max_entries, ..CacheSettings::default() });
        assert!(through(&cache, &v, &token(600), NOW).await.is_ok());
        assert!(through(&cache, &v, &token(600), NOW).await.is_ok());
        assert_eq!(cache.entry_count().await, 1, "max_entries {max_entries}");
    }
}

/// `cache.max_bytes` and `max_entries` both bound the cache through one weigher: an entry is
/// charged its bytes, and at least `max_bytes / max_entries`.
#[tokio::test]
async fn entries_are_weighed_in_bytes() {
    let v = verifier();
    let settings = CacheSettings { ttl: Duration::from_secs(30), max_entries: 1_000, max_bytes: 1 << 20 };
    let cache = ClaimsCache::new(settings);
    let t = token(600);
    assert!(through(&cache, &v, &t, NOW).await.is_ok());
    let entry = held(&cache, &t).await.expect("cached");
    let charged = weight(&settings, &entry);
    assert!(u64::from(charged) >= settings.max_bytes / settings.max_entries, "the floor keeps max_entries");
    let bytes = weight(&CacheSettings { max_entries: u64::MAX, ..settings }, &entry);
    assert!(bytes > 200 && bytes < 4096, "a token's bytes: {bytes}");
    assert_eq!(cache.weighted_size().await, u64::from(charged));
    // Fill past max_bytes: the weighted size stays within it.
    let few = ClaimsCache::new(CacheSettings { max_entries: 1_000_000, max_bytes: 64 * 1024, ..settings });
    for i in 0..400 {
        let sub = format!("user-{i}");
        let t = corpus::sign(jsonwebtoken::Algorithm::RS256, Some("rsa-1"), &corpus::claims(corpus::ISSUER, &sub, NOW));
        assert!(through(&few, &v, &t, NOW).await.is_ok());
    }
    let size = few.weighted_size().await;
    assert!(size <= 64 * 1024 && few.entry_count().await < 400, "{size} bytes held");
}

/// Concurrent misses for one token verify once; the others wait without a thread of their own.
#[tokio::test(flavor = "current_thread")]
async fn concurrent_misses_verify_once() {
    let v = verifier();
    let cache = ClaimsCache::new(CacheSettings::default());
    let t = token(600);
    let digest: [u8; 32] = Sha256::digest(t.as_bytes()).into();
    // On one thread: if a waiter blocked it, this would never finish.
    let all = futures_util::future::join_all((0..16).map(|_| cache.verify(&v, &t, &digest, UnixTime(NOW)))).await;
    assert!(all.iter().all(Result::is_ok));
    assert_eq!(cache.entry_count().await, 1);
}

/// A reload that leaves an issuer alone keeps its entries (members, routes, deny lists and
/// API-key files do not touch verification); a change to that issuer drops its entries only;
/// an issuer moved to another position is still found.
#[tokio::test]
async fn entries_survive_reloads_that_leave_their_issuer_alone() {
    let cache = ClaimsCache::new(CacheSettings::default());
    let t = token(600);
    let first = verifier();
    assert!(through(&cache, &first, &t, NOW).await.is_ok());
    let entry = held(&cache, &t).await.expect("cached");
    // Same issuers, other routes: served from the same entry.
    let routes_changed = verifier_with(|p| p.replace("require: { roles: [admin] } }", "require: { roles: [root] } }"));
    assert!(matches!(ClaimsCache::serve(&routes_changed, entry.clone(), UnixTime(NOW)), Served::Current(Ok(_))));
    assert!(through(&cache, &routes_changed, &t, NOW).await.is_ok());
    assert!(same(held(&cache, &t).await, &entry), "a hit");
    // The issuer's audiences changed: its entry is not served (verified again and replaced).
    let issuer_changed = verifier_with(|p| p.replacen("audiences: [api]", "audiences: [api, other]", 1));
    assert!(
        matches!(ClaimsCache::serve(&issuer_changed, entry.clone(), UnixTime(NOW)), Served::Stale(_)),
        "a changed issuer's entry is stale"
    );
    assert!(through(&cache, &issuer_changed, &t, NOW).await.is_ok());
    assert!(!same(held(&cache, &t).await, &entry), "verified again");
    // Reordered issuers: the token's issuer is found at its new position.
    let v = verifier();
    let mut reordered = verifier();
    reordered.issuers.reverse();
    let token_issuer = through(&cache, &v, &t, NOW).await.expect("ok").issuer;
    let moved = through(&cache, &reordered, &t, NOW).await.expect("ok").issuer;
    assert_eq!(&*reordered.issuers[moved.0].issuer, &*v.issuers[token_issuer.0].issuer);
}

/// Key-set generations are unique across stores: an issuer removed and added back (a new
/// store) never matches entries verified by the old one.
#[test]
fn key_set_generations_never_repeat_across_stores() {
    let keys = || {
        keys_from_jwks(&std::fs::read_to_string(corpus::fixtures().join("keys/jwks-rsa1.json")).expect("jwks"))
            .expect("keys")
    };
    // The same static keys (a reload) keep their generation; a fetched store gets its own.
    let (a, b) = (KeyStore::fixed(keys()), KeyStore::fixed(keys()));
    assert_eq!(a.generation(), b.generation());
    let remote = KeyStore::remote();
    let before = remote.generation();
    remote.replace(keys(), NOW);
    assert!(
        remote.generation() != before && remote.generation() != a.generation() && remote.generation() != b.generation()
    );
}

/// Issue 32: a verification the cache does not keep (TTL 0, a token inside its leeway) is
/// handed to coalesced waiters, which may decide under another snapshot. A waiter serves it
/// only if its own snapshot would have verified the token the same way; otherwise it verifies
/// for itself. Here the same token is refused by the newer policy (another audience).
#[test]
fn a_result_not_kept_is_served_only_under_the_snapshot_that_made_it() {
    let old = verifier();
    let new = verifier_with(|p| p.replacen("audiences: [api]", "audiences: [other]", 1));
    let t = token(600);
    let made = old.verify(&t);
    assert!(made.is_ok());
    let fingerprint = ClaimsCache::fingerprint_of(&old, &made).expect("issuer");
    assert!(ClaimsCache::seen_as(&old, fingerprint, &made).is_some(), "same snapshot: served");
    assert!(ClaimsCache::seen_as(&new, fingerprint, &made).is_none(), "another snapshot verifies itself");
    let refused = new.verify(&t);
    let fingerprint = ClaimsCache::fingerprint_of(&new, &refused).expect("fingerprint");
    assert!(ClaimsCache::seen_as(&old, fingerprint, &refused).is_none(), "a failure is not shared either");
}

/// The same race under load: checks on two snapshots at once, nothing cached; every answer is
/// its own snapshot's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_checks_on_two_snapshots_each_get_their_own_verification() {
    let old = Arc::new(verifier());
    let new = Arc::new(verifier_with(|p| p.replacen("audiences: [api]", "audiences: [other]", 1)));
    let cache = Arc::new(ClaimsCache::new(CacheSettings { ttl: Duration::ZERO, ..CacheSettings::default() }));
    let t = Arc::new(token(600));
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let (cache, t) = (cache.clone(), t.clone());
            let v = if i % 2 == 0 { old.clone() } else { new.clone() };
            tokio::spawn(async move {
                for _ in 0..300 {
                    let got = through(&cache, &v, &t, NOW).await;
                    assert_eq!(got.is_ok(), i % 2 == 0, "a check decided on the other snapshot's verification");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
}

/// Issue 32: a remembered "bad signature" depends on every issuer's keys. A static key file
/// rotated in place and reloaded (the token's `kid` now names the key that signed it) verifies
/// at once; the failure remembered under the old keys is not served for its 5 s.
#[tokio::test]
async fn a_static_key_rotation_drops_a_remembered_bad_signature() {
    let cache = ClaimsCache::new(CacheSettings::default());
    let mut claims = corpus::claims(corpus::ISSUER, "rotated", NOW);
    claims["exp"] = serde_json::json!(NOW + 600);
    let token = corpus::sign_rsa_other(Some("rsa-1"), &claims);
    let read = |name: &str| -> serde_json::Value {
        let text = std::fs::read_to_string(corpus::fixtures().join("keys").join(name)).expect("jwks");
        serde_json::from_str(&text).expect("json")
    };
    let dir = std::env::temp_dir().join(format!("portcullis-rotation-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("jwks.json");
    let policy =
        |t: String| t.replace("jwks: { file: keys/jwks.json }", &format!("jwks: {{ file: \"{}\" }}", file.display()));
    std::fs::write(&file, read("jwks.json").to_string()).expect("write");
    let before = verifier_with(policy);
    assert!(matches!(through(&cache, &before, &token, NOW).await, Err(TokenError::Signature { .. })));
    assert!(matches!(through(&cache, &before, &token, NOW).await, Err(TokenError::Signature { .. })), "remembered");
    // The same file, rsa-1 now the key that signed the token; the policy reloaded.
    let (mut jwks, mut other) = (read("jwks.json"), read("jwks-rsa2.json")["keys"][0].clone());
    other["kid"] = serde_json::json!("rsa-1");
    if let Some(keys) = jwks["keys"].as_array_mut() {
        keys.retain(|k| k["kid"] != "rsa-1");
        keys.push(other);
    }
    std::fs::write(&file, jwks.to_string()).expect("write");
    let after = verifier_with(policy);
    assert!(through(&cache, &after, &token, NOW + 1).await.is_ok(), "the rotated key verifies at once");
    let _ = std::fs::remove_dir_all(&dir);
}
