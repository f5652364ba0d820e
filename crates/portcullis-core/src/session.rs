//! Session idle timeout: a session (the token's session-id claim) unused for longer than
//! `idle_timeout` is refused. Last-seen starts at max(iat, auth_time) and is written coarsely,
//! at most once per `granularity`, so the stored value lags the truth by less than that: a
//! session idle for longer than timeout + granularity is always refused, and one used within
//! timeout - granularity always passes.

use super::reason::{Deny, DenyReason};
use super::types::{UnixTime, VerifiedToken};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionPolicy {
    /// JSON Pointer of the session-id claim.
    pub claim: String,
    pub idle_timeout_secs: i64,
    pub granularity_secs: i64,
    /// Refuse tokens without the session claim (otherwise they are not sessions).
    pub required: bool,
}

/// Last-seen times from local state (memory, or followed from Redis).
pub trait SessionCheck {
    fn last_seen(&self, iss: &str, sid: &str) -> Option<i64>;
}

pub struct NoSessions;

impl SessionCheck for NoSessions {
    fn last_seen(&self, _iss: &str, _sid: &str) -> Option<i64> {
        None
    }
}

/// A last-seen write the edge performs after an allow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionTouch {
    pub iss: String,
    pub sid: String,
    pub at: i64,
}

fn idle() -> impl FnOnce(&'static str) -> Deny {
    |why| Deny::new(DenyReason::SessionIdle, why)
}

/// A session refused as idle: the deny, and (when the refusal rests on a last-seen time) the
/// session and the time it was judged by. Local last-seen times are lower bounds (another
/// replica may have seen the session since), so the edge may ask the fleet before it answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRefused {
    pub deny: Deny,
    pub judged: Option<SessionTouch>,
}

/// Checks the token's session; `Ok(Some(touch))` when last-seen is due an update.
pub fn check_session(
    policy: &SessionPolicy,
    token: &VerifiedToken,
    store: &dyn SessionCheck,
    now: UnixTime,
) -> Result<Option<SessionTouch>, Box<SessionRefused>> {
    let refused = |why| Box::new(SessionRefused { deny: idle()(why), judged: None });
    let sid = match token.claims.at(&policy.claim) {
        Some(Value::String(s)) if !s.is_empty() => s.as_str(),
        None if !policy.required => return Ok(None),
        None => return Err(refused("token without a session id")),
        Some(_) => return Err(refused("session id claim is not a string")),
    };
    let auth_time = token.claims.get("auth_time").and_then(Value::as_i64);
    let seed = token.iat.get().max(auth_time);
    let Some(last) = store.last_seen(token.iss(), sid).max(seed) else {
        return Err(refused("session without iat or auth_time to start its idle clock"));
    };
    let idle_for = now.0.saturating_sub(last);
    if idle_for > policy.idle_timeout_secs {
        let judged = SessionTouch { iss: token.iss().to_string(), sid: sid.to_string(), at: last };
        return Err(Box::new(SessionRefused {
            deny: idle()("session idle for longer than sessions.idle_timeout"),
            judged: Some(judged),
        }));
    }
    let touch = (idle_for >= policy.granularity_secs).then(|| SessionTouch {
        iss: token.iss().to_string(),
        sid: sid.to_string(),
        at: now.0,
    });
    Ok(touch)
}
