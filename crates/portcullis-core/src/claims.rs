//! Time checks on verified claims, run on every request against the caller's clock, and claim
//! lookups by JSON Pointer.

use super::reason::{Deny, DenyReason};
use super::types::{UnixTime, VerifiedToken};
use serde_json::Value;

/// An issuer's time rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimePolicy {
    /// Allowed clock skew in seconds (validated <= 300).
    pub leeway: i64,
    /// Maximum seconds since `iat`; when set, `iat` is required.
    pub max_token_age: Option<i64>,
}

pub fn check_times(token: &VerifiedToken, policy: TimePolicy, now: UnixTime) -> Result<(), Deny> {
    let now = now.0;
    if now >= token.exp.saturating_add(policy.leeway) {
        return Err(Deny::new(DenyReason::TokenExpired, "token expired"));
    }
    if let Some(nbf) = token.nbf.get()
        && now.saturating_add(policy.leeway) < nbf
    {
        return Err(Deny::new(DenyReason::TokenInvalid, "token not yet valid (nbf)"));
    }
    if let Some(iat) = token.iat.get()
        && now.saturating_add(policy.leeway) < iat
    {
        return Err(Deny::new(DenyReason::TokenInvalid, "token issued in the future (iat)"));
    }
    if let Some(max_age) = policy.max_token_age {
        let Some(iat) = token.iat.get() else {
            return Err(Deny::new(DenyReason::TokenInvalid, "iat required by max_token_age"));
        };
        if now.saturating_sub(iat) > max_age.saturating_add(policy.leeway) {
            return Err(Deny::new(DenyReason::TokenExpired, "token older than max_token_age"));
        }
    }
    Ok(())
}

/// `claims.pointer(pointer)` (RFC 6901) without its allocation of a `String` per reference
/// token; pointers holding an escape (`~0`, `~1`) take serde_json's path.
pub fn claim_at<'a>(claims: &'a Value, pointer: &str) -> Option<&'a Value> {
    if pointer.is_empty() || pointer.contains('~') {
        return claims.pointer(pointer);
    }
    pointer.strip_prefix('/')?.split('/').try_fold(claims, |value, token| match value {
        Value::Object(map) => map.get(token),
        Value::Array(items) => array_index(token).and_then(|i| items.get(i)),
        _ => None,
    })
}

/// An array index as RFC 6901 writes it: digits, no sign, no leading zero.
fn array_index(token: &str) -> Option<usize> {
    if token.starts_with('+') || (token.starts_with('0') && token.len() > 1) {
        return None;
    }
    token.parse().ok()
}

#[cfg(test)]
pub(super) mod pointer_tests {
    use super::claim_at;
    use serde_json::{Value, json};

    /// A claim set with escapes, array indexes and look-alike names, and pointers into it.
    pub(crate) fn document() -> Value {
        json!({
            "sub": "u1", "roles": ["a", "b"], "org": {"id": 7, "teams": [{"name": "x"}]},
            "a/b": 1, "m~n": 2, "": 3, "01": 4, "tenants": {"acme": ["admin"]}, "zz_custom": true
        })
    }

    pub(crate) const POINTERS: &[&str] = &[
        "",
        "/",
        "/sub",
        "/roles",
        "/roles/0",
        "/roles/1",
        "/roles/2",
        "/roles/01",
        "/roles/+1",
        "/roles/-",
        "/org/id",
        "/org/teams/0/name",
        "/org/teams/0/name/x",
        "/a~1b",
        "/m~0n",
        "/01",
        "/tenants/acme",
        "/zz_custom",
        "sub",
        "/missing",
        "/sub/0",
        "//",
        "/org/",
    ];

    #[test]
    fn claim_at_agrees_with_serde_json_pointer() {
        let claims = document();
        for pointer in POINTERS {
            assert_eq!(claim_at(&claims, pointer), claims.pointer(pointer), "pointer {pointer:?}");
        }
    }
}
