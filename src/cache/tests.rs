//! Cache rules without sockets: what is remembered, for how long, and what invalidates it.

use super::*;
use crate::config::parse_and_validate;
use crate::corpus;
use crate::jwt::{KeyStore, keys_from_jwks};

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
    let cache = ClaimsCache::new(CacheSettings { ttl: Duration::from_secs(30), max_entries: 10 });
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

#[test]
fn hits_misses_and_generations() {
    let v = verifier();
    let cache = ClaimsCache::new(CacheSettings::default());
    let t = token(600);
    let cached = cache.verifier(&v, UnixTime(NOW));
    assert!(cached.verify(&t).is_ok());
    assert!(cached.verify(&t).is_ok());
    assert_eq!(cache.entry_count(), 1);
    // The issuer's keys change: the entry no longer counts, and the new keys decide.
    let rotated =
        keys_from_jwks(&std::fs::read_to_string(corpus::fixtures().join("keys/jwks-rsa2.json")).expect("jwks"))
            .expect("keys");
    let store: &KeyStore = v.store(crate::decision::IssuerId(0)).expect("store");
    store.replace(rotated, NOW);
    assert!(matches!(cached.verify(&t), Err(TokenError::UnknownKey { .. })), "a removed key stops verifying at once");
    cache.clear();
    assert_eq!(cache.entry_count(), 0);
}

#[test]
fn invalidate_by_subject() {
    let v = verifier();
    let cache = ClaimsCache::new(CacheSettings::default());
    let cached = cache.verifier(&v, UnixTime(NOW));
    let bob = corpus::sign(jsonwebtoken::Algorithm::RS256, Some("rsa-1"), &corpus::claims(corpus::ISSUER, "bob", NOW));
    assert!(cached.verify(&token(600)).is_ok());
    assert!(cached.verify(&bob).is_ok());
    cache.invalidate_subject("alice", Some(corpus::ISSUER));
    assert_eq!(cache.entry_count(), 1, "only alice's entry is dropped");
}

/// The entry held for `token` (kept alive by the caller, so a refill
/// cannot reuse its address).
fn held(cache: &ClaimsCache, token: &str) -> Option<Arc<Entry>> {
    let key: Key = Sha256::digest(token.as_bytes()).into();
    cache.entries.get(&key)
}

fn same(a: Option<Arc<Entry>>, b: &Arc<Entry>) -> bool {
    a.is_some_and(|a| Arc::ptr_eq(&a, b))
}

#[test]
fn entries_expire_by_the_injected_clock() {
    let v = verifier();
    let cache = ClaimsCache::new(CacheSettings { ttl: Duration::from_secs(30), max_entries: 10 });
    let t = token(600);
    assert!(cache.verifier(&v, UnixTime(NOW)).verify(&t).is_ok());
    let first = held(&cache, &t).expect("cached");
    assert!(cache.verifier(&v, UnixTime(NOW + 29)).verify(&t).is_ok());
    assert!(same(held(&cache, &t), &first), "served from the cache within the ttl");
    assert!(cache.verifier(&v, UnixTime(NOW + 30)).verify(&t).is_ok());
    assert!(held(&cache, &t).is_some(), "cached again");
    assert!(!same(held(&cache, &t), &first), "at the ttl the token is verified again");

    // A token about to expire is kept only until its exp, and an expired one not at all.
    let short = token(3);
    assert!(cache.verifier(&v, UnixTime(NOW)).verify(&short).is_ok());
    let kept = held(&cache, &short).expect("cached");
    assert!(cache.verifier(&v, UnixTime(NOW + 3)).verify(&short).is_ok(), "time claims are the core's to check");
    assert!(!same(held(&cache, &short), &kept), "not served past its exp");
    assert!(cache.verifier(&v, UnixTime(NOW + 10)).verify(&short).is_ok());
    assert!(held(&cache, &short).is_none(), "an expired token is not remembered");
}

#[test]
fn a_zero_ttl_remembers_nothing_and_failures_only_briefly() {
    let v = verifier();
    let off = ClaimsCache::new(CacheSettings { ttl: Duration::ZERO, max_entries: 10 });
    let t = token(600);
    assert!(off.verifier(&v, UnixTime(NOW)).verify(&t).is_ok());
    assert_eq!(off.entry_count(), 0, "ttl 0s disables caching");

    let cache = ClaimsCache::new(CacheSettings::default());
    let forged = format!("{}x", &t[..t.len() - 1]);
    let cached = cache.verifier(&v, UnixTime(NOW));
    assert_eq!(
        cached.verify(&forged).err(),
        Some(TokenError::Signature { issuer: crate::decision::IssuerId(0), remote: false })
    );
    let negative = held(&cache, &forged).expect("a bad signature is remembered");
    let later = cache.verifier(&v, UnixTime(NOW + NEGATIVE_TTL.as_secs() as i64));
    assert_eq!(
        later.verify(&forged).err(),
        Some(TokenError::Signature { issuer: crate::decision::IssuerId(0), remote: false })
    );
    assert!(!same(held(&cache, &forged), &negative), "for at most NEGATIVE_TTL");
}

#[test]
fn any_configured_capacity_is_usable() {
    // `cache.max_entries` is any u64 from 1: neither end may panic or allocate up front.
    let v = verifier();
    for max_entries in [1, u64::MAX] {
        let cache = ClaimsCache::new(CacheSettings { ttl: Duration::from_secs(30), max_entries });
        let cached = cache.verifier(&v, UnixTime(NOW));
        assert!(cached.verify(&token(600)).is_ok());
        assert!(cached.verify(&token(600)).is_ok());
        assert_eq!(cache.entry_count(), 1, "max_entries {max_entries}");
    }
}

/// A reload that leaves an issuer alone keeps its entries (members, routes, deny lists and
/// API-key files do not touch verification); a change to that issuer drops its entries only;
/// an issuer moved to another position is still found.
#[test]
fn entries_survive_reloads_that_leave_their_issuer_alone() {
    let hits = |cache: &ClaimsCache, v: &Verifier, t: &str| {
        let before = cache.entry_count();
        let result = cache.verifier(v, UnixTime(NOW)).verify(t);
        (result.is_ok(), cache.entry_count() == before)
    };
    let cache = ClaimsCache::new(CacheSettings::default());
    let t = token(600);
    let first = verifier();
    assert!(cache.verifier(&first, UnixTime(NOW)).verify(&t).is_ok());
    // Same issuers, other routes: a hit (no new entry, the same result).
    let routes_changed = verifier_with(|p| p.replace("require: { roles: [admin] } }", "require: { roles: [root] } }"));
    assert_eq!(hits(&cache, &routes_changed, &t), (true, true));
    // The issuer's audiences changed: its entry is not served (verified again and replaced).
    let issuer_changed = verifier_with(|p| p.replacen("audiences: [api]", "audiences: [api, other]", 1));
    let served = cache.verifier(&issuer_changed, UnixTime(NOW));
    assert!(served.serve_for_test(&t).is_none(), "an entry of a changed issuer must not be served");
    assert!(served.verify(&t).is_ok());
    // Reordered issuers: the token's issuer is found at its new position.
    let v = verifier();
    let mut reordered = verifier();
    reordered.issuers.reverse();
    let token_issuer = cache.verifier(&v, UnixTime(NOW)).verify(&t).expect("ok").issuer;
    let moved = cache.verifier(&reordered, UnixTime(NOW)).verify(&t).expect("ok").issuer;
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
