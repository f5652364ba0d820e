//! Identifiers and the seam between the core and token verification.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

/// Seconds since the Unix epoch. The core never reads a clock; callers pass this in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct UnixTime(pub i64);

/// An optional NumericDate in 8 bytes (`Option<i64>` takes 16, and every cached token holds
/// two): `i64::MIN` is "absent"; a claim of that very value, some 292 billion years before the
/// epoch, is kept as one second later, which no time rule tells apart.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct OptionalTime(i64);

impl OptionalTime {
    pub const NONE: Self = Self(i64::MIN);

    pub fn get(self) -> Option<i64> {
        (self.0 != i64::MIN).then_some(self.0)
    }
}

impl From<Option<i64>> for OptionalTime {
    fn from(time: Option<i64>) -> Self {
        time.map_or(Self::NONE, |t| Self(t.max(i64::MIN + 1)))
    }
}

impl fmt::Debug for OptionalTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.get().fmt(f)
    }
}

/// Index of a configured issuer in the policy snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IssuerId(pub usize);

/// The `sub` claim of a verified token (or an API key's subject). Subjects are always scoped
/// by their issuer. Shared, not copied: the decision keeps one, a view of the token's packed
/// text (see [`crate::pack_token`]).
#[derive(Clone)]
pub struct Subject {
    text: Arc<str>,
    len: usize,
}

impl Subject {
    pub fn new(subject: &str) -> Self {
        Self { text: subject.into(), len: subject.len() }
    }

    /// The first `len` bytes of `text` (a character boundary).
    pub(crate) fn prefix_of(text: Arc<str>, len: usize) -> Self {
        Self { text, len }
    }

    pub fn as_str(&self) -> &str {
        self.text.get(..self.len).unwrap_or_default()
    }
}

impl PartialEq for Subject {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Subject {}

impl std::hash::Hash for Subject {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl PartialEq<&str> for Subject {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl fmt::Debug for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Subject({:?})", self.as_str())
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A token whose signature, issuer, audience, type and required claims have been verified.
/// Time claims are re-checked by the core on every use (see [`crate::check_times`]).
#[derive(Debug, Clone)]
pub struct VerifiedToken {
    pub issuer: IssuerId,
    /// The kept claims, packed in one text with the subject and the identity header values,
    /// with the issuer's `iss` (see [`crate::pack_token`]). The token's identity lives here, so
    /// outside the core it is set only with a subject and an issuer ([`VerifiedToken::new`]).
    pub(crate) claims: super::claim_set::Claims,
    /// The identity header list the packed values were made for (`None`: none prepared, worked
    /// out on each allow; see [`VerifiedToken::identity_values`]).
    pub values_for: Option<Arc<[super::headers::IdentityHeader]>>,
    pub exp: i64,
    pub nbf: OptionalTime,
    pub iat: OptionalTime,
    /// Generation of the issuer's key set read before verification (cache entries carry it).
    pub key_generation: u64,
}

impl VerifiedToken {
    /// A token of `claims` (packed with [`crate::pack_token`] or [`Claims::for_token`]);
    /// refused when they name no issuer or no subject, which no verified token lacks.
    ///
    /// [`Claims::for_token`]: super::claim_set::Claims::for_token
    pub fn new(
        issuer: IssuerId,
        claims: super::claim_set::Claims,
        values_for: Option<Arc<[super::headers::IdentityHeader]>>,
        exp: i64,
        nbf: OptionalTime,
        iat: OptionalTime,
        key_generation: u64,
    ) -> Result<Self, super::claim_set::Unpackable> {
        if claims.iss().is_none() || claims.subject().is_empty() {
            return Err(super::claim_set::Unpackable);
        }
        Ok(Self { issuer, claims, values_for, exp, nbf, iat, key_generation })
    }

    /// The kept claims (with `sub` and `iss`).
    pub fn claims(&self) -> &super::claim_set::Claims {
        &self.claims
    }

    /// The `sub` claim. Subjects are always scoped by their issuer.
    pub fn subject(&self) -> &str {
        self.claims.subject()
    }

    /// The verifying issuer's `iss`.
    pub fn iss(&self) -> &str {
        self.claims.iss().map_or("", |iss| iss)
    }

    /// The `iss`, shared (what a decision keeps).
    pub fn shared_iss(&self) -> Arc<str> {
        self.claims.iss().cloned().unwrap_or_else(|| Arc::from(""))
    }

    /// The subject, shared with the token's text (what a decision keeps).
    pub fn shared_subject(&self) -> Subject {
        self.claims.shared_subject()
    }

    /// Heap bytes this token holds beyond its own size: its packed text.
    pub fn heap_bytes(&self) -> usize {
        self.claims.heap_bytes()
    }
}

/// Why a token was refused before any time check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a well-formed compact JWS or its JSON is unusable.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// A JOSE header rule was broken (`crit`, `jku`, disallowed `alg`, bad `typ`, ...).
    #[error("header rejected: {0}")]
    Header(String),
    /// No key for this issuer, `kid` and `alg`. `remote`: the issuer's keys come from a JWKS
    /// URL, so a refetch may learn it.
    #[error("no matching key: {why}")]
    UnknownKey { issuer: IssuerId, why: String, remote: bool },
    /// The issuer has no usable key set at all (never fetched, or past `max_stale`).
    #[error("keys unavailable for this issuer")]
    KeysUnavailable { issuer: IssuerId },
    /// The signature does not verify under the selected key. `remote`: the key came from a
    /// JWKS URL and a rotation that reused its `kid` would look exactly like this.
    #[error("bad signature")]
    Signature { issuer: IssuerId, remote: bool },
    /// `iss`, `aud`, token type or a required claim is wrong.
    #[error("claims rejected: {0}")]
    Claims(String),
}

/// The identifiers of a token that a revocation can name: `jti` (a string or a number, as
/// written) and the session id at the policy's `sessions.claim` (default `/sid`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenIds<'a> {
    pub jti: Option<Cow<'a, str>>,
    pub sid: Option<Cow<'a, str>>,
}

impl<'a> TokenIds<'a> {
    pub fn of(token: &'a VerifiedToken, session_claim: &str) -> Self {
        let id = |value: Option<&'a serde_json::Value>| match value? {
            serde_json::Value::String(s) => Some(Cow::Borrowed(s.as_str())),
            serde_json::Value::Number(n) => Some(Cow::Owned(n.to_string())),
            _ => None,
        };
        Self { jti: id(token.claims.get("jti")), sid: id(token.claims.at(session_claim)) }
    }
}

/// Answers whether a verified token has been revoked (local state only; never waits).
pub trait RevocationCheck {
    /// `Some(why)` when revoked.
    fn revoked(&self, token: &VerifiedToken, ids: &TokenIds, now: UnixTime) -> Option<&'static str>;

    /// Whether tokens like `token` are revoked for `tenant` (issued at or before a tenant
    /// revocation's time).
    fn tenant_revoked(&self, _tenant: &str, _token: &VerifiedToken, _now: UnixTime) -> bool {
        false
    }
}

/// For policies and tests without revocation state.
pub struct NoRevocations;

impl RevocationCheck for NoRevocations {
    fn revoked(&self, _token: &VerifiedToken, _ids: &TokenIds, _now: UnixTime) -> Option<&'static str> {
        None
    }
}

/// Dynamic IP blocks (auto-block and admin), read from local state.
pub trait BlockCheck {
    fn blocked(&self, ip: std::net::IpAddr, now: UnixTime) -> bool;
}

pub struct NoBlocks;

impl BlockCheck for NoBlocks {
    fn blocked(&self, _ip: std::net::IpAddr, _now: UnixTime) -> bool {
        false
    }
}

/// What a rate-limit tier counts by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RateKey {
    Ip,
    Subject,
    Tenant,
}

/// A named rate: `amount` per `period_secs` (1 or 60), with `burst`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RateTier {
    pub name: String,
    pub key: RateKey,
    pub amount: u32,
    pub period_secs: u32,
    pub burst: u32,
    pub scope: RateScope,
}

/// Where a tier's count lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RateScope {
    /// In each replica ([`RateLimit`], checked during the decision).
    #[default]
    Local,
    /// Across the fleet: the decision names the tier and key in
    /// [`crate::DecisionContext::fleet_limits`] and the edge checks them against the shared
    /// store after an allow (the core does no I/O). Each replica leases a share of the budget
    /// in batches.
    Fleet,
    /// [`RateScope::Fleet`] with one call to the shared store per request (no leases).
    FleetExact,
}

impl RateScope {
    /// Whether the count is shared by the fleet (checked at the edge, not in the core).
    pub fn is_fleet(self) -> bool {
        matches!(self, Self::Fleet | Self::FleetExact)
    }
}

/// Rate limiting state (implemented at the edge); `Err(seconds)` means over the limit, retry
/// after that long.
pub trait RateLimit {
    fn check(&self, tier: &RateTier, key: &str) -> Result<(), u32>;
}

pub struct NoRateLimits;

impl RateLimit for NoRateLimits {
    fn check(&self, _tier: &RateTier, _key: &str) -> Result<(), u32> {
        Ok(())
    }
}

/// What a decision consults besides the policy.
pub struct Services<'a> {
    pub verifier: &'a dyn TokenVerifier,
    pub revocations: &'a dyn RevocationCheck,
    pub memberships: &'a dyn super::tenant::MembershipCheck,
    pub blocks: &'a dyn BlockCheck,
    pub rate_limits: &'a dyn RateLimit,
    pub api_keys: &'a dyn super::api_key::ApiKeyCheck,
    pub sessions: &'a dyn super::session::SessionCheck,
    /// DPoP proofs (`Services::decide` only; the server verifies them at its edge).
    pub proofs: &'a dyn super::binding::ProofVerifier,
    /// The shared state (revocations, blocks, members) may be outdated: no contact with its
    /// backend for longer than `state.max_staleness`. [`OnStale`] says what follows.
    pub state_stale: bool,
    /// Records each pipeline step the request passed (`portcullis explain`); `None` on the
    /// serving path.
    pub trace: Option<&'a Trace>,
}

/// The pipeline steps a decision passed, in order (names from [`crate::STEPS`]).
#[derive(Debug, Default)]
pub struct Trace(std::cell::RefCell<Vec<&'static str>>);

impl Trace {
    pub fn passed(&self, step: &'static str) {
        self.0.borrow_mut().push(step);
    }

    pub fn steps(&self) -> Vec<&'static str> {
        self.0.borrow().clone()
    }
}

/// What a replica does while its shared state may be outdated (`state.on_stale`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnStale {
    /// Refuse every non-public route with 503 `state_stale`: a revocation it has not heard of
    /// cannot let a token in. Public routes need no state and still pass.
    #[default]
    Deny,
    /// Keep deciding from the last synced state (counted; the alert fires).
    ServeLocal,
}

impl<'a> Services<'a> {
    /// Services with no revocations, members, blocks, rate limits, run-time keys or sessions:
    /// for tests, fuzzing and benchmarks of the policy alone.
    pub fn stateless(verifier: &'a dyn TokenVerifier) -> Self {
        Self {
            verifier,
            revocations: &NoRevocations,
            memberships: &super::tenant::NoMembers,
            blocks: &NoBlocks,
            rate_limits: &NoRateLimits,
            api_keys: &super::api_key::NoApiKeys,
            sessions: &super::session::NoSessions,
            proofs: &super::binding::NoProofs,
            state_stale: false,
            trace: None,
        }
    }
}

/// Verifies a bearer token's cryptography and static claims. Implemented by the server crate's `jwt` module.
pub trait TokenVerifier {
    fn verify(&self, token: &str) -> Result<VerifiedToken, TokenError>;

    /// The same, for a caller that already holds the token's SHA-256 (a cache keyed by it
    /// need not hash the token twice).
    fn verify_digested(&self, token: &str, _digest: &[u8; 32]) -> Result<VerifiedToken, TokenError> {
        self.verify(token)
    }
}
