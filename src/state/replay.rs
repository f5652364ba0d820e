//! DPoP proof replay (RFC 9449 §11.1): a proof's `jti` is accepted once within its window.
//! Locally in a bounded cache; fleet-wide through the state backend when it has one (Redis
//! `SET NX`), so a proof replayed to another replica is refused too.

use std::sync::Arc;
use std::time::Duration;

/// Proofs remembered per replica. A full cache refuses new proofs (503) rather than forget one
/// still inside its window: a flood of proofs must not open a window for replays.
pub const MAX_REMEMBERED_PROOFS: u64 = 200_000;

struct Window;

impl moka::Expiry<[u8; 32], Duration> for Window {
    fn expire_after_create(&self, _key: &[u8; 32], ttl: &Duration, _now: std::time::Instant) -> Option<Duration> {
        Some(*ttl)
    }
}

/// The proofs this replica has seen, each for its window.
pub struct SeenProofs {
    seen: moka::sync::Cache<[u8; 32], Duration>,
}

impl Default for SeenProofs {
    fn default() -> Self {
        let seen = moka::sync::Cache::builder()
            .max_capacity(MAX_REMEMBERED_PROOFS + 1_000)
            // Every proof is used once: TinyLFU would refuse to admit new ones when full.
            .eviction_policy(moka::policy::EvictionPolicy::lru())
            .expire_after(Window)
            .build();
        Self { seen }
    }
}

impl SeenProofs {
    /// The key of a proof: its key's thumbprint and its `jti` (two clients may pick one jti).
    pub fn key(jkt: &str, jti: &str) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        Sha256::digest(format!("{jkt}\0{jti}").as_bytes()).into()
    }

    /// `true` the first time `key` is seen within `ttl`.
    pub fn first_use(&self, key: [u8; 32], ttl: Duration) -> bool {
        self.seen.entry(key).or_insert(ttl).is_fresh()
    }

    /// Whether the cache holds as many live proofs as it may (new ones are then refused).
    pub fn is_full(&self) -> bool {
        self.seen.entry_count() >= MAX_REMEMBERED_PROOFS
    }
}

impl std::fmt::Debug for SeenProofs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeenProofs").field("entries", &self.seen.entry_count()).finish()
    }
}

/// Shared by the server's checks.
pub type SharedSeenProofs = Arc<SeenProofs>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proof_is_accepted_once() {
        let seen = SeenProofs::default();
        let key = SeenProofs::key("thumb", "j1");
        assert!(seen.first_use(key, Duration::from_secs(60)));
        assert!(!seen.first_use(key, Duration::from_secs(60)), "replayed");
        assert!(seen.first_use(SeenProofs::key("other", "j1"), Duration::from_secs(60)), "another key's jti");
    }
}
