//! The behaviour every revocation store must show. Each backend's test calls [`run`] with a
//! fresh, empty store.
#![allow(dead_code, non_snake_case)]

use portcullis::decision::{Claims, IssuerId, TokenIds, UnixTime, VerifiedToken};
use portcullis::state::fleet::StateStore;
use portcullis::state::revocation::{Revocation, RevocationStore};
use serde_json::json;
use std::sync::Arc;

const ISS: &str = "https://issuer.test/";
const OTHER: &str = "https://other.test/";

fn token(iss: &str, sub: &str, jti: Option<&str>, sid: Option<&str>, iat: Option<i64>) -> VerifiedToken {
    let mut claims = json!({ "iss": iss, "sub": sub });
    if let Some(jti) = jti {
        claims["jti"] = json!(jti);
    }
    if let Some(sid) = sid {
        claims["sid"] = json!(sid);
    }
    with_claims(iss, sub, claims, iat)
}

fn with_claims(iss: &str, sub: &str, claims: serde_json::Value, iat: Option<i64>) -> VerifiedToken {
    let exp = iat.unwrap_or(0) + 1_000_000_000;
    let claims = Claims::for_token(iss, sub, claims).expect("claims");
    VerifiedToken::new(IssuerId(0), claims, None, exp, None.into(), iat.into(), 0).expect("token")
}

fn revoked(store: &dyn RevocationStore, token: &VerifiedToken, at: UnixTime) -> Option<&'static str> {
    store.revoked(token, &TokenIds::of(token, "/sid"), at)
}

/// Runs the whole suite against `store`, which must start empty.
pub async fn run(all: &dyn StateStore) {
    let store: &dyn RevocationStore = all;
    // Wall-clock time: a backend may keep entries only as long as they are live.
    let NOW = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() as i64;
    let at = UnixTime(NOW);
    let alice = token(ISS, "alice", Some("j1"), Some("s1"), Some(NOW - 100));
    assert_eq!(revoked(store, &alice, at), None, "an empty store revokes nothing");
    assert!(store.list(at).is_empty());

    // jti: exact (iss, jti), until its expiry.
    store.add(Revocation::Jti { iss: ISS.into(), jti: "j1".into(), expires_at: NOW + 60 }).await.expect("add jti");
    assert!(revoked(store, &alice, at).is_some(), "revoked jti");
    assert_eq!(revoked(store, &token(ISS, "alice", Some("j2"), None, Some(NOW)), at), None, "other jti");
    assert_eq!(revoked(store, &token(OTHER, "alice", Some("j1"), None, Some(NOW)), at), None, "same jti, other issuer");
    assert_eq!(revoked(store, &alice, UnixTime(NOW + 61)), None, "a jti revocation ends at expires_at");

    // subject before T: older tokens and tokens without iat refused, newer ones pass.
    store
        .add(Revocation::Subject { iss: ISS.into(), sub: "bob".into(), before: NOW - 50, expires_at: NOW + 600 })
        .await
        .expect("add subject");
    assert!(revoked(store, &token(ISS, "bob", None, None, Some(NOW - 60)), at).is_some(), "issued before T");
    assert!(revoked(store, &token(ISS, "bob", None, None, Some(NOW - 50)), at).is_some(), "issued at T");
    assert!(revoked(store, &token(ISS, "bob", None, None, None), at).is_some(), "no iat while it lives");
    assert_eq!(revoked(store, &token(ISS, "bob", None, None, Some(NOW - 49)), at), None, "issued after T");
    assert_eq!(revoked(store, &token(OTHER, "bob", None, None, Some(NOW - 60)), at), None, "subjects are per issuer");
    assert_eq!(revoked(store, &token(ISS, "bobby", None, None, Some(NOW - 60)), at), None, "exact subject");

    // A later `before` for the same subject extends it; an earlier one never shortens it.
    store
        .add(Revocation::Subject { iss: ISS.into(), sub: "bob".into(), before: NOW - 10, expires_at: NOW + 600 })
        .await
        .expect("add subject again");
    assert!(revoked(store, &token(ISS, "bob", None, None, Some(NOW - 20)), at).is_some());
    store
        .add(Revocation::Subject { iss: ISS.into(), sub: "bob".into(), before: NOW - 500, expires_at: NOW + 600 })
        .await
        .expect("add older subject");
    assert!(revoked(store, &token(ISS, "bob", None, None, Some(NOW - 20)), at).is_some(), "not shortened");

    // session id.
    store.add(Revocation::Session { iss: ISS.into(), sid: "s9".into(), expires_at: NOW + 60 }).await.expect("add sid");
    assert!(revoked(store, &token(ISS, "carol", Some("j5"), Some("s9"), Some(NOW)), at).is_some(), "revoked session");
    assert_eq!(revoked(store, &token(ISS, "carol", Some("j5"), Some("s8"), Some(NOW)), at), None, "other session");

    // Listing shows live entries; purging forgets expired ones.
    assert_eq!(store.list(at).len(), 3, "{:?}", store.list(at));
    assert_eq!(store.list(UnixTime(NOW + 100)).len(), 1, "only the subject revocation outlives 100 s");
    all.purge(UnixTime(NOW + 100), Arc::new(portcullis::state::model::Unbounded));
    assert_eq!(store.list(at).len(), 1, "expired entries purged");
    assert!(revoked(store, &token(ISS, "bob", None, None, Some(NOW - 60)), at).is_some(), "live entries kept");

    // A numeric jti is revocable by its digits; a session id at a custom sessions.claim is read
    // there; a revocation without expiry (an issuer without max_token_age) never ends.
    let numeric =
        with_claims(ISS, "dave", json!({"iss": ISS, "sub": "dave", "jti": 123, "session": {"id": "s7"}}), Some(NOW));
    store.add(Revocation::Jti { iss: ISS.into(), jti: "123".into(), expires_at: i64::MAX }).await.expect("add jti");
    assert!(revoked(store, &numeric, at).is_some(), "numeric jti revoked");
    assert!(revoked(store, &numeric, UnixTime(NOW + 100 * 365 * 86_400)).is_some(), "no expiry");
    let numeric = with_claims(ISS, "dave", json!({"iss": ISS, "sub": "dave", "session": {"id": "s7"}}), Some(NOW));
    store.add(Revocation::Session { iss: ISS.into(), sid: "s7".into(), expires_at: NOW + 60 }).await.expect("add sid");
    assert!(store.revoked(&numeric, &TokenIds::of(&numeric, "/session/id"), at).is_some(), "sessions.claim read");
    assert_eq!(store.revoked(&numeric, &TokenIds::of(&numeric, "/sid"), at), None, "another claim is not the sid");
}
