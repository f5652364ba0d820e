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
        (TokenError::Signature, Some(NEGATIVE_TTL)),
        (TokenError::Claims("aud".into()), Some(NEGATIVE_TTL)),
        (TokenError::UnknownKey { issuer, why: "kid".into() }, None),
        (TokenError::KeysUnavailable { issuer }, None),
    ];
    for (err, want) in cases {
        assert_eq!(cache.ttl_for(&Err(err.clone()), UnixTime(NOW)), want, "{err}");
    }
}

#[test]
fn hits_misses_and_generations() {
    let v = verifier();
    let cache = ClaimsCache::new(CacheSettings::default());
    let t = token(600);
    let cached = cache.verifier(&v, 1, UnixTime(NOW));
    assert!(cached.verify(&t).is_ok());
    assert!(cached.verify(&t).is_ok());
    assert_eq!(cache.entry_count(), 1);
    // Another policy generation never sees this entry.
    let other = cache.verifier(&v, 2, UnixTime(NOW));
    assert!(other.verify(&t).is_ok());
    assert_eq!(cache.entry_count(), 2);
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
    let cached = cache.verifier(&v, 1, UnixTime(NOW));
    let bob = corpus::sign(jsonwebtoken::Algorithm::RS256, Some("rsa-1"), &corpus::claims(corpus::ISSUER, "bob", NOW));
    assert!(cached.verify(&token(600)).is_ok());
    assert!(cached.verify(&bob).is_ok());
    cache.invalidate_subject("alice", Some(corpus::ISSUER)).expect("invalidate");
    assert_eq!(cache.entry_count(), 1, "only alice's entry is dropped");
}
