//! What a decision is: its outcome, and who and what it was about (for the answer's metadata
//! and the audit event).

use super::reason::Deny;
use super::session::SessionTouch;
use super::types::{IssuerId, RateTier, Subject};
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Allow { set_headers: Vec<(String, String)>, remove_headers: Vec<String> },
    Deny(Deny),
}

/// Who and what a decision was about, for the answer's metadata and the audit event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DecisionContext {
    pub rule: Option<String>,
    pub issuer: Option<Arc<str>>,
    pub subject: Option<Subject>,
    pub tenant: Option<String>,
    /// The start of the credential's SHA-256; never the credential.
    pub credential_fingerprint: Option<Fingerprint>,
    /// The client address (contract step 2), and whether it is a trusted proxy.
    pub client_ip: Option<std::net::IpAddr>,
    pub client_trusted: bool,
    /// Set when the token named a key its issuer does not have: the edge may refetch the
    /// issuer's keys and decide again.
    pub key_miss: Option<IssuerId>,
    /// The API key's name (never its value), when the credential was one.
    pub api_key: Option<String>,
    /// A session last-seen update for the edge to write after an allow.
    pub session_touch: Option<SessionTouch>,
    /// A session refused as idle by this replica's last-seen time (`at`): the edge may ask the
    /// fleet for a newer one and decide again.
    pub session_idle: Option<SessionTouch>,
    /// Decided from state that may be outdated (`state.on_stale: serve_local`).
    pub stale_state: bool,
    /// Fleet-wide rate-limit tiers (and keys) this request counts against: the edge checks them
    /// after an allow and turns the allow into 429 `rate_limited` when one is over.
    pub fleet_limits: Vec<(RateTier, String)>,
    /// `mode: dry_run`: the deny this request would have had; it was allowed without identity.
    pub would_deny: Option<Deny>,
    /// The matched route is in `mode: dry_run` (carried, never looked up by name: names are
    /// labels, and a label is not an identity).
    pub route_dry_run: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub outcome: Outcome,
    pub context: DecisionContext,
}

impl Decision {
    pub fn deny(deny: Deny, context: DecisionContext) -> Self {
        Self { outcome: Outcome::Deny(deny), context }
    }

    /// The reason string for metrics and audit (`allow` decisions report `allowed`).
    pub fn reason(&self) -> &'static str {
        match &self.outcome {
            Outcome::Allow { .. } => "allowed",
            Outcome::Deny(d) => d.reason.as_str(),
        }
    }
}

/// The first 6 bytes of a credential's SHA-256, shown as 12 hex digits: enough to tell
/// credentials apart in an audit trail, far too little to recover or replay one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint(pub [u8; 6]);

impl Fingerprint {
    pub fn of_digest(digest: &[u8; 32]) -> Self {
        let mut start = [0u8; 6];
        start.copy_from_slice(&digest[..6]);
        Self(start)
    }
}

impl std::fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl serde::Serialize for Fingerprint {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}
