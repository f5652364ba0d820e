//! Tenant resolution and membership (docs/contract.md steps 6 and 10). A client-sent tenant id proves nothing:
//! the id is only requested by the request, and membership is proven from trusted claims, the
//! personal tenant rule or a membership store, on every request.

use super::input::CheckInput;
use super::reason::{Deny, DenyReason};
use super::semantics::Authority;
use super::types::VerifiedToken;
use regex::Regex;
use serde_json::Value;
use std::collections::HashMap;

/// Where a request names its tenant.
#[derive(Debug, Clone)]
pub enum TenantSource {
    Header(String),
    /// A regex with a named group `tenant`, matched against the path (without query).
    Path(Regex),
    /// The host (lowercased, port stripped) must end with this suffix; the single label before
    /// it is the tenant.
    HostSuffix(String),
    /// An Envoy `context_extensions` key, set by the proxy's own route configuration.
    ContextExtension(String),
}

/// The personal tenant: `prefix + sub + suffix`, only ever for that subject of one issuer.
#[derive(Debug, Clone)]
pub struct PersonalTenant {
    pub prefix: String,
    pub suffix: String,
    /// The issuer whose subjects own personal tenants.
    pub issuer: String,
}

impl PersonalTenant {
    fn is_personal(&self, tenant: &str) -> bool {
        tenant.len() > self.prefix.len() + self.suffix.len()
            && tenant.starts_with(&self.prefix)
            && tenant.ends_with(&self.suffix)
    }

    fn owner_of(&self, token: &VerifiedToken, tenant: &str) -> bool {
        token.iss() == &*self.issuer
            && tenant.strip_prefix(self.prefix.as_str()).and_then(|rest| rest.strip_suffix(self.suffix.as_str()))
                == Some(token.subject())
    }
}

/// Members listed in the policy's membership file: tenant → iss → sub → tenant roles, nested so
/// that a check looks a member up with borrowed strings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemberTable(HashMap<String, HashMap<String, HashMap<String, Vec<String>>>>);

impl MemberTable {
    pub fn insert(&mut self, tenant: String, iss: String, sub: String, roles: Vec<String>) {
        self.0.entry(tenant).or_default().entry(iss).or_default().insert(sub, roles);
    }

    pub fn get(&self, tenant: &str, iss: &str, sub: &str) -> Option<&[String]> {
        self.0.get(tenant)?.get(iss)?.get(sub).map(Vec::as_slice)
    }
}

impl FromIterator<((String, String, String), Vec<String>)> for MemberTable {
    fn from_iter<I: IntoIterator<Item = ((String, String, String), Vec<String>)>>(members: I) -> Self {
        let mut table = Self::default();
        for ((tenant, iss, sub), roles) in members {
            table.insert(tenant, iss, sub, roles);
        }
        table
    }
}

#[derive(Debug, Clone)]
pub struct TenantPolicy {
    pub sources: Vec<TenantSource>,
    pub id_pattern: Regex,
    /// JSON Pointer of the membership claim (array of ids, or map id → roles).
    pub claim: Option<String>,
    pub personal: Option<PersonalTenant>,
    pub file_members: MemberTable,
}

/// Dynamic membership (admin API, memory or Redis); read from local state only.
pub trait MembershipCheck {
    /// The member's tenant roles, or `None` when (iss, sub) is not a member of `tenant`.
    fn member_roles(&self, tenant: &str, iss: &str, sub: &str) -> Option<Vec<String>>;
}

pub struct NoMembers;

impl MembershipCheck for NoMembers {
    fn member_roles(&self, _tenant: &str, _iss: &str, _sub: &str) -> Option<Vec<String>> {
        None
    }
}

/// A path source's capture, which must not depend on how the upstream reads the path: the
/// capture of the exact path and of its case-folded, trailing-slash and format readings must agree
/// (`/TENANTS/globex/x` under a case-insensitive router, `/tenants/globex` under one that
/// ignores a missing slash), or the request names its tenant ambiguously.
fn path_capture(re: &Regex, path: &str) -> Result<Option<String>, Deny> {
    let capture = |p: &str| re.captures(p).and_then(|c| c.name("tenant")).map(|m| m.as_str().to_string());
    let exact = capture(path);
    let slashed = if path.ends_with('/') { capture(path.trim_end_matches('/')) } else { capture(&format!("{path}/")) };
    let folded = path.bytes().any(|b| b.is_ascii_uppercase()).then(|| capture(&path.to_ascii_lowercase()));
    // Rails' and Spring's format readings (`/tenants/acme.json` is tenant `acme` to Rails).
    let formats = super::route::format_readings(path).map(|bare| bare.map(&capture));
    let same = |other: &Option<String>| match (&exact, other) {
        (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
        (None, None) => true,
        _ => false,
    };
    if !same(&slashed) || folded.as_ref().is_some_and(|f| !same(f)) || formats.iter().flatten().any(|f| !same(f)) {
        return Err(Deny::new(DenyReason::TenantConflict, "the path names a tenant only in some readings of it"));
    }
    Ok(exact)
}

fn source_value(
    source: &TenantSource,
    input: &CheckInput,
    host: &Authority,
    path: &str,
) -> Result<Option<String>, Deny> {
    Ok(match source {
        TenantSource::Header(name) => {
            let mut values = input.header_values(name);
            let first = values.next();
            if values.next().is_some() {
                return Err(Deny::new(DenyReason::TenantConflict, format!("{name} sent more than once")));
            }
            first.map(str::to_string)
        }
        TenantSource::Path(re) => path_capture(re, path)?,
        TenantSource::HostSuffix(suffix) => {
            let label = |host: &str| {
                host.strip_suffix(suffix.as_str()).filter(|l| !l.is_empty() && !l.contains('.')).map(str::to_string)
            };
            let (exact, folded) = (label(host.name), label(&host.folded));
            if exact != folded {
                return Err(Deny::new(DenyReason::TenantConflict, "the host names its tenant only once lowercased"));
            }
            exact
        }
        TenantSource::ContextExtension(key) => input.context_extensions.get(key).cloned(),
    })
}

/// The tenant the request asks for: every present source must agree byte for byte, and the id
/// must match `id_pattern` as sent (no case folding, no decoding). `host` is the normalized
/// authority ([`super::semantics::parse_authority`]). `Ok(None)`: none asked.
pub fn resolve_tenant(
    policy: &TenantPolicy,
    input: &CheckInput,
    host: &Authority,
    path: &str,
) -> Result<Option<String>, Deny> {
    let mut found: Option<String> = None;
    for source in &policy.sources {
        let Some(value) = source_value(source, input, host, path)? else { continue };
        match &found {
            Some(existing) if *existing != value => {
                return Err(Deny::new(DenyReason::TenantConflict, "tenant sources disagree"));
            }
            _ => found = Some(value),
        }
    }
    if let Some(tenant) = &found
        && !policy.id_pattern.is_match(tenant)
    {
        return Err(Deny::new(DenyReason::InvalidRequest, "tenant id does not match tenants.id_pattern"));
    }
    Ok(found)
}

/// Roles carried by the membership claim for `tenant`, if the claim makes it a member: an array
/// of ids listing it, or a map whose value for it is `true` or a list of roles. `false`, `null`,
/// strings and numbers are not membership (`{"acme": false}` must not admit anyone to acme).
fn claim_roles(claim: Option<&Value>, tenant: &str) -> Option<Vec<String>> {
    match claim? {
        Value::Array(ids) => ids.iter().any(|id| id.as_str() == Some(tenant)).then(Vec::new),
        Value::Object(map) => match map.get(tenant)? {
            Value::Bool(true) => Some(Vec::new()),
            Value::Array(items) => Some(items.iter().filter_map(Value::as_str).map(str::to_string).collect()),
            _ => None,
        },
        _ => None,
    }
}

/// Proves that the token's subject belongs to `tenant`; returns its tenant roles.
/// `claim_trusted`: the token's issuer lists the membership claim in `trusted_claims`.
pub fn membership(
    policy: &TenantPolicy,
    token: &VerifiedToken,
    tenant: &str,
    claim_trusted: bool,
    store: &dyn MembershipCheck,
) -> Result<Vec<String>, Deny> {
    let forbidden = || Deny::new(DenyReason::TenantForbidden, "not a member of the requested tenant");
    if let Some(personal) = &policy.personal
        && personal.is_personal(tenant)
    {
        // Whatever any claim or store says: a personal tenant belongs to its subject alone.
        return if personal.owner_of(token, tenant) { Ok(vec!["owner".to_string()]) } else { Err(forbidden()) };
    }
    if claim_trusted
        && let Some(pointer) = &policy.claim
        && let Some(roles) = claim_roles(token.claims.at(pointer), tenant)
    {
        return Ok(roles);
    }
    if let Some(roles) = policy.file_members.get(tenant, token.iss(), token.subject()) {
        return Ok(roles.to_vec());
    }
    store.member_roles(tenant, token.iss(), token.subject()).ok_or_else(forbidden)
}
