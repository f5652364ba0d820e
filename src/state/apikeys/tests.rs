//! Key minting, entry checks and the run-time key table.
use super::*;
use crate::decision::api_key::{digest, shape_problem};

#[test]
fn new_keys_have_the_documented_shape_and_differ() {
    let a = new_key("pk_").expect("key");
    let b = new_key("pk_").expect("key");
    assert_ne!(a, b);
    assert_eq!(a.len(), 3 + 43);
    assert_eq!(shape_problem("pk_", &a), None);
}

#[test]
fn entries_are_checked_field_by_field() {
    let key = new_key("pk_").expect("key");
    let good = RawApiKeyEntry {
        name: "ci-bot".into(),
        sha256: hex::encode(digest(&key)),
        expires: Some("2027-01-01T00:00:00Z".into()),
        ..Default::default()
    };
    let (d, parsed) = key_from_entry(&good).expect("valid");
    assert_eq!(d, digest(&key));
    assert_eq!(parsed.subject, "ci-bot");
    assert_eq!(parsed.expires, Some(1_798_761_600));
    let bad = RawApiKeyEntry {
        name: "ci bot".into(),
        sha256: hex::encode(digest(&key)).to_uppercase(),
        expires: Some("tomorrow".into()),
        scopes: vec!["".into()],
        ..Default::default()
    };
    let fields: Vec<&str> = key_from_entry(&bad).expect_err("invalid").into_iter().map(|(f, _)| f).collect();
    assert_eq!(fields, ["name", "sha256", "expires", "tenants"]);
}

#[test]
fn revocations_are_by_digest() {
    let store = MemoryApiKeys::new();
    let (one, two) = (new_key("pk_").expect("key"), new_key("pk_").expect("key"));
    let entry = |key: &str| RawApiKeyEntry { name: "k".into(), sha256: hex::encode(digest(key)), ..Default::default() };
    store.apply_put(&entry(&one));
    store.apply_put(&entry(&two));
    assert!(store.find(&digest(&one)).is_some() && store.find(&digest(&two)).is_some());
    store.apply_revoke("k", &hex::encode(digest(&two)));
    assert!(store.revoked(&digest(&two), "another-name"), "a revoked key stays revoked under any name");
    assert!(!store.revoked(&digest(&one), "k"), "the digest, not the name, is revoked");
    assert_eq!(store.revoked_names(), ["k"]);
    store.apply_remove(&hex::encode(digest(&one)));
    assert!(store.find(&digest(&one)).is_none());
}
