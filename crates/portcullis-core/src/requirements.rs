//! Route requirements on verified claims (docs/contract.md step 11): issuers, audiences, scopes, roles,
//! claim matchers.

use super::claim_set::Claims;
use super::reason::{Deny, DenyReason};
use super::types::VerifiedToken;
use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
pub enum ClaimTest {
    Equals(Value),
    OneOf(Vec<Value>),
    /// The claim is an array holding this value, or a space-separated string holding this word.
    Contains(Value),
    Present,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ClaimMatcher {
    /// JSON Pointer (RFC 6901) into the claim set.
    pub pointer: String,
    pub test: ClaimTest,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Requirements {
    /// Allowed `iss` values; empty means every configured issuer.
    pub issuers: Vec<String>,
    /// At least one of these must be in `aud`; empty means the issuer's audiences suffice.
    pub audiences: Vec<String>,
    pub scopes: Vec<String>,
    pub roles: Vec<String>,
    pub claims: Vec<ClaimMatcher>,
    /// A proven tenant is required.
    pub tenant: bool,
    /// One of these tenant roles is required (implies `tenant`).
    pub tenant_roles: Vec<String>,
    pub step_up: Option<StepUp>,
    /// SPIFFE ids (Envoy's `source.principal`) allowed to call; a trailing `*` matches a prefix.
    /// Empty means any peer.
    pub source_principals: Vec<String>,
    /// At least one of these must hold (each over issuers, audiences, scopes, roles, claims and
    /// nested `any_of`/`not`).
    pub any_of: Vec<Requirements>,
    /// This must not hold.
    pub not: Option<Box<Requirements>>,
    /// How the token must be bound to its sender (a route's own; the issuer's also holds).
    pub sender_constraint: super::binding::SenderConstraint,
}

/// RFC 9470 step-up: how recently and how strongly the user must have authenticated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepUp {
    /// The token's `acr` must be one of these.
    pub acr: Vec<String>,
    /// The token's `amr` must hold every one of these.
    pub amr: Vec<String>,
    /// Seconds since `auth_time`; a token without `auth_time` must step up.
    pub max_auth_age: Option<i64>,
}

/// Checks a step-up requirement at `now`; the deny carries the RFC 9470 challenge parameters.
pub fn check_step_up(token: &VerifiedToken, step_up: &StepUp, now: i64) -> Result<(), Deny> {
    let acr_ok = step_up.acr.is_empty()
        || token.claims.get("acr").and_then(Value::as_str).is_some_and(|acr| step_up.acr.iter().any(|a| a == acr));
    let amr = string_set(token.claims.get("amr"));
    let amr_ok = step_up.amr.iter().all(|m| amr.contains(&m.as_str()));
    let age_ok = step_up.max_auth_age.is_none_or(|max_age| {
        token.claims.get("auth_time").and_then(Value::as_i64).is_some_and(|at| at <= now && now - at <= max_age)
    });
    if acr_ok && amr_ok && age_ok {
        return Ok(());
    }
    let why = match (acr_ok, amr_ok) {
        (false, _) => "acr not accepted on this route",
        (_, false) => "authentication methods (amr) not accepted on this route",
        _ => "authentication older than max_auth_age",
    };
    let mut deny = Deny::new(DenyReason::StepUpRequired, why);
    deny.challenge_params.push(("error_description", "a stronger or more recent authentication is required".into()));
    if !step_up.acr.is_empty() {
        deny.challenge_params.push(("acr_values", step_up.acr.join(" ")));
    }
    if let Some(max_age) = step_up.max_auth_age {
        deny.challenge_params.push(("max_age", max_age.to_string()));
    }
    Err(deny)
}

/// Whether the calling peer's SPIFFE id is allowed by a route.
pub fn check_source_principal(principal: &str, allowed: &[String]) -> Result<(), Deny> {
    let matches = |pattern: &String| match pattern.strip_suffix('*') {
        Some(prefix) => principal.starts_with(prefix),
        None => principal == pattern,
    };
    if allowed.is_empty() || (!principal.is_empty() && allowed.iter().any(matches)) {
        return Ok(());
    }
    let why = if principal.is_empty() {
        "no peer principal (mTLS) for a route that names principals"
    } else {
        "peer principal not allowed on this route"
    };
    Err(Deny::new(DenyReason::PeerForbidden, why))
}

/// Strings of a claim that is an array of strings or a space-separated string.
fn string_set(value: Option<&Value>) -> Vec<&str> {
    match value {
        Some(Value::String(s)) => s.split(' ').filter(|w| !w.is_empty()).collect(),
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

fn scopes_of(claims: &Claims) -> Vec<&str> {
    let mut scopes = string_set(claims.get("scope"));
    scopes.extend(string_set(claims.get("scp")));
    scopes
}

fn claim_test_holds(value: Option<&Value>, test: &ClaimTest) -> bool {
    match (test, value) {
        (ClaimTest::Present, v) => v.is_some_and(|v| !v.is_null()),
        (_, None) => false,
        (ClaimTest::Equals(want), Some(v)) => v == want,
        (ClaimTest::OneOf(options), Some(v)) => options.contains(v),
        (ClaimTest::Contains(want), Some(Value::Array(items))) => items.contains(want),
        (ClaimTest::Contains(Value::String(word)), Some(Value::String(s))) => s.split(' ').any(|w| w == word),
        (ClaimTest::Contains(_), Some(_)) => false,
    }
}

/// Checks a verified token against a route's requirements. `roles_pointer` is the issuer's roles claim.
pub fn check_requirements(token: &VerifiedToken, req: &Requirements, roles_pointer: &str) -> Result<(), Deny> {
    if !req.issuers.is_empty() && !req.issuers.iter().any(|i| **i == *token.iss()) {
        return Err(Deny::new(DenyReason::TokenInvalid, "issuer not accepted on this route"));
    }
    if !req.audiences.is_empty() {
        let aud = match token.claims.get("aud") {
            Some(Value::String(s)) => vec![s.as_str()],
            Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        if !req.audiences.iter().any(|a| aud.contains(&a.as_str())) {
            return Err(Deny::new(DenyReason::TokenInvalid, "audience not accepted on this route"));
        }
    }
    let scopes = scopes_of(&token.claims);
    let missing: Vec<&str> = req.scopes.iter().map(String::as_str).filter(|s| !scopes.contains(s)).collect();
    if !missing.is_empty() {
        let mut deny = Deny::new(DenyReason::InsufficientScope, format!("missing scope {}", missing.join(" ")));
        deny.challenge_params.push(("scope", req.scopes.join(" ")));
        return Err(deny);
    }
    if !req.roles.is_empty() {
        let roles = string_set(token.claims.at(roles_pointer));
        if !req.roles.iter().any(|r| roles.contains(&r.as_str())) {
            return Err(Deny::new(DenyReason::RoleRequired, format!("one of roles {} required", req.roles.join(","))));
        }
    }
    for matcher in &req.claims {
        if !claim_test_holds(token.claims.at(&matcher.pointer), &matcher.test) {
            return Err(Deny::new(DenyReason::ClaimMismatch, format!("claim {} does not match", matcher.pointer)));
        }
    }
    if !req.any_of.is_empty() {
        let mut first = None;
        for alternative in &req.any_of {
            match check_requirements(token, alternative, roles_pointer) {
                Ok(()) => {
                    first = None;
                    break;
                }
                Err(deny) => {
                    first.get_or_insert(deny);
                }
            }
        }
        // None hold: the first alternative's reason, so a scope shortfall still says which.
        if let Some(mut deny) = first {
            deny.detail = format!("none of require.any_of holds (the first: {})", deny.detail);
            return Err(deny);
        }
    }
    if let Some(excluded) = &req.not
        && check_requirements(token, excluded, roles_pointer).is_ok()
    {
        return Err(Deny::new(DenyReason::ClaimMismatch, "the token matches require.not"));
    }
    Ok(())
}
