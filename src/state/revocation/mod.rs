//! Revocations: by `jti`, by subject issued at or before a time, by session id. Read on every
//! request from local memory; written through a [`RevocationStore`] (memory now, Redis later).

mod memory;

pub use memory::MemoryRevocations;

use crate::decision::{RevocationCheck, UnixTime};
use crate::state::StoreError;
use serde::{Deserialize, Serialize};

/// `expires_at` of a revocation that never ends (its issuer sets no `max_token_age`).
pub const NEVER: i64 = i64::MAX;

/// One revocation. Times are Unix seconds; `expires_at` is an explicit end ([`NEVER`] unless
/// the admin API was given one). How long a `jti` revocation is kept beyond that is read from
/// the policy in force when it is purged (`state::model::Lifetimes`); `sub`, `sid` and tenant
/// revocations hold until their explicit end or for ever.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Revocation {
    Jti {
        iss: String,
        jti: String,
        expires_at: i64,
    },
    /// Tokens of (iss, sub) with `iat <= before` (and tokens without `iat`) are refused.
    Subject {
        iss: String,
        sub: String,
        before: i64,
        expires_at: i64,
    },
    Session {
        iss: String,
        sid: String,
        expires_at: i64,
    },
    /// Tokens with `iat <= before` (and tokens without `iat`) are refused for this tenant.
    Tenant {
        tenant: String,
        before: i64,
        expires_at: i64,
    },
}

impl Revocation {
    pub fn expires_at(&self) -> i64 {
        match self {
            Self::Jti { expires_at, .. }
            | Self::Subject { expires_at, .. }
            | Self::Session { expires_at, .. }
            | Self::Tenant { expires_at, .. } => *expires_at,
        }
    }
}

/// Where revocations are written. Reads on the hot path go through [`RevocationCheck`] and
/// never wait on a backend.
#[async_trait::async_trait]
pub trait RevocationStore: RevocationCheck + Send + Sync {
    /// Persists and applies one revocation; returns only once it is durable for this backend.
    async fn add(&self, revocation: Revocation) -> Result<(), StoreError>;
    /// Every live revocation.
    fn list(&self, now: UnixTime) -> Vec<Revocation>;
    /// Every live revocation with when it was written (Unix seconds).
    fn listed(&self, now: UnixTime) -> Vec<(Revocation, i64)>;
}
