//! Time checks on verified claims, run on every request against the caller's clock.

use super::reason::{Deny, DenyReason};
use super::types::{UnixTime, VerifiedToken};

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
    if let Some(nbf) = token.nbf
        && now.saturating_add(policy.leeway) < nbf
    {
        return Err(Deny::new(DenyReason::TokenInvalid, "token not yet valid (nbf)"));
    }
    if let Some(iat) = token.iat
        && now.saturating_add(policy.leeway) < iat
    {
        return Err(Deny::new(DenyReason::TokenInvalid, "token issued in the future (iat)"));
    }
    if let Some(max_age) = policy.max_token_age {
        let Some(iat) = token.iat else {
            return Err(Deny::new(DenyReason::TokenInvalid, "iat required by max_token_age"));
        };
        if now.saturating_sub(iat) > max_age.saturating_add(policy.leeway) {
            return Err(Deny::new(DenyReason::TokenExpired, "token older than max_token_age"));
        }
    }
    Ok(())
}
