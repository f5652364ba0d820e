//! The pure decision core: everything between a protocol-neutral [`CheckInput`] and a
//! [`Decision`].
//!
//! Architecture Invariant: no async runtime, gRPC, protobuf, Redis, HTTP or file and network I/O
//! in this crate; the current time comes in as an argument and token verification comes in
//! through [`TokenVerifier`]. Its dependency list says so, and CI checks it (`.ci/run`:
//! `cargo tree -p portcullis-core`).

mod after;
pub mod answer;
pub mod api_key;
pub mod binding;
mod claim_set;
mod claims;
mod claims_read;
mod credential;
pub mod csrf;
mod decide;
mod decision;
pub mod grammar;
mod headers;
mod input;
pub mod ip;
mod path;
mod reason;
pub mod request_match;
pub mod requirements;
pub mod route;
pub mod route_index;
pub mod semantics;
pub mod session;
pub mod tenant;
mod types;

pub use answer::{Answer, answer};
pub use api_key::{API_KEY_ISSUER, ApiKey, ApiKeyCheck, ApiKeyPolicy, KeyDigest, NoApiKeys};
pub use binding::{Constraint, Proof, ProofError, ProofOutcome, ProofRequest, ProofVerifier, SenderConstraint};
pub use claim_set::{Claims, Unpackable};
pub use claims::{TimePolicy, check_times};
pub use credential::{Credential, CredentialPolicy, extract_credential};
pub use csrf::{CsrfPolicy, DoubleSubmit};
pub use decide::{
    Decision, DecisionContext, Fingerprint, IssuerRules, Outcome, Pending, Policy, Progress, STEPS, begin, decide,
    finish,
};
pub use grammar::{Grammar, check_grammar};
pub use headers::{IdentityHeader, IdentitySource, IdentityValues, ResponsePolicy, encode_header_value, pack_token};
pub use input::CheckInput;
pub use ip::{AutoBlock, CidrSet, ClientIp, IpPolicy, client_ip, client_key, parse_cidr};
pub use path::validate_path;
pub use reason::{Challenge, Deny, DenyReason};
pub use request_match::{ValueMatcher, ValueTest};
pub use requirements::{ClaimMatcher, ClaimTest, Requirements, StepUp};
pub use route::{Access, HostMatch, PathMatch, Route, RouteMatch, find_route};
pub use semantics::{Authority, FORWARDED_HEADERS, OVERRIDE_HEADERS, check_method, parse_authority};
pub use session::{NoSessions, SessionCheck, SessionPolicy, SessionRefused, SessionTouch};
pub use tenant::{MemberTable, MembershipCheck, NoMembers, PersonalTenant, TenantPolicy, TenantSource, resolve_tenant};
pub use types::{
    BlockCheck, IssuerId, NoBlocks, NoRateLimits, NoRevocations, OnStale, OptionalTime, RateKey, RateLimit, RateScope,
    RateTier, RevocationCheck, Services, Subject, TokenError, TokenIds, TokenVerifier, Trace, UnixTime, VerifiedToken,
};

#[cfg(test)]
mod binding_tests;
#[cfg(test)]
mod controls_tests;
#[cfg(test)]
mod matcher_tests;
#[cfg(test)]
mod route_index_tests;
#[cfg(test)]
mod tests;
