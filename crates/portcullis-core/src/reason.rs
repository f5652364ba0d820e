//! Deny reasons: one variant per reason of the status contract, with its HTTP status.

/// Every reason Portcullis can deny for. The string form is a contract (metrics, audit, body).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DenyReason {
    CredentialMissing,
    TokenInvalid,
    TokenExpired,
    TokenRevoked,
    ApiKeyInvalid,
    SessionIdle,
    StepUpRequired,
    DpopProofInvalid,
    DpopNonceRequired,
    TokenBindingMismatch,
    InvalidRequest,
    PathInvalid,
    TenantConflict,
    TenantMissing,
    InsufficientScope,
    RoleRequired,
    ClaimMismatch,
    TenantForbidden,
    IpBlocked,
    CsrfRejected,
    PeerForbidden,
    NoRoute,
    RouteDenied,
    RateLimited,
    KeysUnavailable,
    StateStale,
    Overloaded,
}

impl DenyReason {
    pub const ALL: [DenyReason; 27] = [
        Self::CredentialMissing,
        Self::TokenInvalid,
        Self::TokenExpired,
        Self::TokenRevoked,
        Self::ApiKeyInvalid,
        Self::SessionIdle,
        Self::StepUpRequired,
        Self::DpopProofInvalid,
        Self::DpopNonceRequired,
        Self::TokenBindingMismatch,
        Self::InvalidRequest,
        Self::PathInvalid,
        Self::TenantConflict,
        Self::TenantMissing,
        Self::InsufficientScope,
        Self::RoleRequired,
        Self::ClaimMismatch,
        Self::TenantForbidden,
        Self::IpBlocked,
        Self::CsrfRejected,
        Self::PeerForbidden,
        Self::NoRoute,
        Self::RouteDenied,
        Self::RateLimited,
        Self::KeysUnavailable,
        Self::StateStale,
        Self::Overloaded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::CredentialMissing => "credential_missing",
            Self::TokenInvalid => "token_invalid",
            Self::TokenExpired => "token_expired",
            Self::TokenRevoked => "token_revoked",
            Self::ApiKeyInvalid => "api_key_invalid",
            Self::SessionIdle => "session_idle",
            Self::StepUpRequired => "step_up_required",
            Self::DpopProofInvalid => "dpop_proof_invalid",
            Self::DpopNonceRequired => "dpop_nonce_required",
            Self::TokenBindingMismatch => "token_binding_mismatch",
            Self::InvalidRequest => "invalid_request",
            Self::PathInvalid => "path_invalid",
            Self::TenantConflict => "tenant_conflict",
            Self::TenantMissing => "tenant_missing",
            Self::InsufficientScope => "insufficient_scope",
            Self::RoleRequired => "role_required",
            Self::ClaimMismatch => "claim_mismatch",
            Self::TenantForbidden => "tenant_forbidden",
            Self::IpBlocked => "ip_blocked",
            Self::CsrfRejected => "csrf_rejected",
            Self::PeerForbidden => "peer_forbidden",
            Self::NoRoute => "no_route",
            Self::RouteDenied => "route_denied",
            Self::RateLimited => "rate_limited",
            Self::KeysUnavailable => "keys_unavailable",
            Self::StateStale => "state_stale",
            Self::Overloaded => "overloaded",
        }
    }

    /// Denies `mode: dry_run` never lifts: malformed or ambiguous requests, overload, blocked
    /// addresses and rate limits protect the mesh and the upstream, not a policy being tried.
    pub fn always_enforced(self) -> bool {
        matches!(
            self,
            Self::InvalidRequest
                | Self::PathInvalid
                | Self::TenantConflict
                | Self::Overloaded
                | Self::IpBlocked
                | Self::RateLimited
        )
    }

    pub fn http_status(self) -> u16 {
        match self {
            Self::CredentialMissing
            | Self::TokenInvalid
            | Self::TokenExpired
            | Self::TokenRevoked
            | Self::ApiKeyInvalid
            | Self::SessionIdle
            | Self::StepUpRequired
            | Self::DpopProofInvalid
            | Self::DpopNonceRequired
            | Self::TokenBindingMismatch => 401,
            Self::InvalidRequest | Self::PathInvalid | Self::TenantConflict | Self::TenantMissing => 400,
            Self::InsufficientScope
            | Self::RoleRequired
            | Self::ClaimMismatch
            | Self::TenantForbidden
            | Self::IpBlocked
            | Self::CsrfRejected
            | Self::PeerForbidden
            | Self::NoRoute
            | Self::RouteDenied => 403,
            Self::RateLimited => 429,
            Self::KeysUnavailable | Self::StateStale | Self::Overloaded => 503,
        }
    }

    /// The RFC 6750 / RFC 9470 challenge this reason carries, if any.
    pub fn challenge(self) -> Challenge {
        match self {
            Self::CredentialMissing => Challenge::Bare,
            Self::TokenInvalid
            | Self::TokenExpired
            | Self::TokenRevoked
            | Self::ApiKeyInvalid
            | Self::SessionIdle
            | Self::TokenBindingMismatch => Challenge::Error("invalid_token"),
            // RFC 9449 §7.1, §8: the DPoP scheme's own errors.
            Self::DpopProofInvalid => Challenge::Dpop("invalid_dpop_proof"),
            Self::DpopNonceRequired => Challenge::Dpop("use_dpop_nonce"),
            Self::StepUpRequired => Challenge::Error("insufficient_user_authentication"),
            Self::InvalidRequest | Self::TenantConflict | Self::TenantMissing => Challenge::Error("invalid_request"),
            Self::InsufficientScope | Self::RoleRequired | Self::ClaimMismatch => {
                Challenge::Error("insufficient_scope")
            }
            _ => Challenge::None,
        }
    }

    /// Whether the answer carries `retry-after`.
    pub fn retry_after_secs(self) -> Option<u32> {
        match self {
            Self::RateLimited | Self::KeysUnavailable | Self::StateStale | Self::Overloaded => Some(1),
            _ => None,
        }
    }
}

/// The `www-authenticate` challenge kind for a deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Challenge {
    None,
    /// `Bearer realm="..."` alone (no credential was presented).
    Bare,
    /// `Bearer realm="...", error="..."`.
    Error(&'static str),
    /// `DPoP algs="...", error="..."` (RFC 9449 §7.1).
    Dpop(&'static str),
}

/// A deny with its reason and a short operator-facing detail (never the credential).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deny {
    pub reason: DenyReason,
    pub detail: String,
    /// Extra `www-authenticate` parameters: `scope` for `insufficient_scope`, `acr_values` and
    /// `max_age` for an RFC 9470 step-up challenge. Values never come from the request.
    pub challenge_params: Vec<(&'static str, String)>,
    /// Seconds for `retry-after`, when the reason's default does not fit (rate limits).
    pub retry_after: Option<u32>,
    /// Whether this deny counts toward auto-block: only a credential that is itself bad (see
    /// [`Deny::bad_credential`]). Never a missing, expired or revoked credential, a valid token a
    /// route refuses, or a remote issuer's key miss that a refetch may still resolve.
    pub counts_as_failure: bool,
    /// Headers of the deny answer beyond the challenge (`DPoP-Nonce`); values never come from
    /// the request.
    pub headers: Vec<(&'static str, String)>,
}

impl Deny {
    /// A deny that does not count toward auto-block.
    pub fn new(reason: DenyReason, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: detail.into(),
            challenge_params: Vec::new(),
            retry_after: None,
            counts_as_failure: false,
            headers: Vec::new(),
        }
    }

    /// A deny for a credential that says something about the client: malformed or oversized,
    /// a forged or disallowed JOSE header, a bad signature or unknown key under keys that no
    /// refetch will change, an API key that is not one of ours. These count toward auto-block.
    pub fn bad_credential(reason: DenyReason, detail: impl Into<String>) -> Self {
        Self { counts_as_failure: true, ..Self::new(reason, detail) }
    }
}
