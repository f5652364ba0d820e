//! The request path as one pure function: path, route, credential, token, requirements, answer.

use super::api_key::{ApiKey, ApiKeyPolicy, authenticate};
use super::claims::TimePolicy;
use super::credential::{Credential, CredentialPolicy, extract_credential};
use super::csrf::{CsrfPolicy, check_csrf};
use super::grammar::{Grammar, check_grammar};
use super::headers::{ResponsePolicy, header_plan};
use super::input::CheckInput;
use super::ip::{ClientIp, IpPolicy, client_ip, client_key};
use super::path::validate_path;
use super::reason::{Deny, DenyReason};
use super::requirements::{Requirements, check_source_principal};
use super::route::{Access, Route};
use super::semantics::{check_channels, check_method, parse_authority};
use super::session::SessionPolicy;
use super::tenant::{TenantPolicy, resolve_tenant};
use super::types::{RateKey, RateTier, Services, TokenError, UnixTime, VerifiedToken};
use sha2::{Digest, Sha256};
use std::sync::Arc;

use super::after::After;

pub use super::decision::{Decision, DecisionContext, Fingerprint, Outcome};

/// Per-issuer rules the core applies after verification.
#[derive(Debug, Clone)]
pub struct IssuerRules {
    pub time: TimePolicy,
    /// JSON Pointer to the roles claim.
    pub roles_pointer: String,
    /// Claim names (JSON Pointers without the leading `/`) this issuer is trusted for.
    pub trusted_claims: Vec<String>,
    /// How this issuer's tokens must be bound to their sender.
    pub sender_constraint: super::binding::SenderConstraint,
}

/// The immutable policy a decision is made against.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub routes: Vec<Route>,
    pub credentials: CredentialPolicy,
    pub response: ResponsePolicy,
    /// Indexed by [`super::IssuerId`].
    pub issuers: Vec<IssuerRules>,
    pub tenants: Option<TenantPolicy>,
    pub ip: IpPolicy,
    pub api_keys: Option<ApiKeyPolicy>,
    /// `None` with cookie credentials: state-changing cookie requests are refused.
    pub csrf: Option<CsrfPolicy>,
    pub sessions: Option<SessionPolicy>,
    pub on_stale: super::OnStale,
    /// Top-level `mode: dry_run`: requests no route matches are recorded, not denied.
    pub dry_run_unrouted: bool,
    /// `grammar:`: the refused forms this deployment's upstreams need.
    pub grammar: Grammar,
    /// Routes by host, built once per snapshot (`None`: every check scans every route).
    pub route_index: Option<super::route_index::RouteIndex>,
}

impl Policy {
    /// Headers whose underscore spelling a request may not carry (CGI/WSGI upstreams read
    /// `x_user_id` as `x-user-id`): every identity, strip, tenant, credential and route-matcher
    /// header.
    fn sensitive_headers(&self) -> impl Iterator<Item = &str> + Clone {
        let tenant_headers = self.tenants.iter().flat_map(|t| &t.sources).filter_map(|s| match s {
            super::tenant::TenantSource::Header(name) => Some(name.as_str()),
            _ => None,
        });
        self.response
            .identity_headers
            .iter()
            .map(|h| h.name.as_str())
            .chain(self.response.strip_headers.iter().map(String::as_str))
            .chain(tenant_headers)
            .chain(self.credentials.api_key_header.as_deref())
            .chain(self.csrf.iter().flat_map(|c| &c.double_submit).map(|d| d.header.as_str()))
            .chain(self.routes.iter().flat_map(|r| &r.matcher.headers).map(|m| m.name.as_str()))
    }
}

/// The rules API-key identities are held to (they carry no JWT time claims).
static API_KEY_RULES: std::sync::LazyLock<IssuerRules> = std::sync::LazyLock::new(|| IssuerRules {
    time: TimePolicy { leeway: 0, max_token_age: None },
    roles_pointer: "/roles".into(),
    trusted_claims: Vec::new(),
    sender_constraint: Default::default(),
});

/// Maps a verification failure to its deny; what counts toward auto-block is decided here (and
/// in [`Deny::bad_credential`]'s other callers): a forged or garbled token counts, a signed one
/// with wrong claims does not, and a remote issuer's key miss does not until a refetch has
/// confirmed it (the edge then marks it counted).
fn token_deny(err: TokenError, context: &mut DecisionContext) -> Deny {
    let detail = err.to_string();
    match err {
        TokenError::KeysUnavailable { .. } => Deny::new(DenyReason::KeysUnavailable, detail),
        TokenError::UnknownKey { issuer, remote: true, .. } | TokenError::Signature { issuer, remote: true } => {
            context.key_miss = Some(issuer);
            Deny::new(DenyReason::TokenInvalid, detail)
        }
        TokenError::Malformed(_)
        | TokenError::Header(_)
        | TokenError::Signature { remote: false, .. }
        | TokenError::UnknownKey { remote: false, .. } => Deny::bad_credential(DenyReason::TokenInvalid, detail),
        TokenError::Claims(_) => Deny::new(DenyReason::TokenInvalid, detail),
    }
}

/// `unverified_authorization`: the request carries an `authorization` header that is not the
/// credential Portcullis verified (another scheme, or any on a public or anonymous allow). It is
/// removed, so the upstream never reads an identity nobody verified (`Token <jwt>`, a forged
/// bearer on a public route).
///
/// Only headers the request carries are removed: Envoy removes nothing else, and every removal
/// is bytes and work in each answer (the ext_authz filter must send the identity and strip
/// headers to Portcullis: no `allowed_headers` that leaves them out, README "Answers").
pub(super) fn allow(
    input: &CheckInput,
    policy: &Policy,
    token: Option<&VerifiedToken>,
    context: DecisionContext,
    unverified_authorization: bool,
) -> Decision {
    let values = match token.map(|t| t.identity_values(&policy.response)).transpose() {
        Ok(values) => values,
        Err(deny) => return Decision::deny(deny, context),
    };
    match header_plan(&policy.response, values.as_ref(), context.tenant.as_deref()) {
        Ok(mut plan) => {
            if unverified_authorization && !plan.remove.iter().any(|h| h == "authorization") {
                plan.remove.push("authorization".to_string());
            }
            plan.remove.retain(|name| input.header_values(name).next().is_some());
            Decision { outcome: Outcome::Allow { set_headers: plan.set, remove_headers: plan.remove }, context }
        }
        Err(deny) => Decision::deny(deny, context),
    }
}

pub(super) fn limit(
    services: &Services,
    tier: &RateTier,
    key: &str,
    context: &mut DecisionContext,
) -> Result<(), Deny> {
    if tier.scope.is_fleet() {
        context.fleet_limits.push((tier.clone(), key.to_string()));
        return Ok(());
    }
    services.rate_limits.check(tier, key).map_err(|retry| {
        let mut deny = Deny::new(DenyReason::RateLimited, format!("rate limit {}", tier.name));
        deny.retry_after = Some(retry.max(1));
        deny
    })
}

/// Static lists and dynamic blocks; trusted proxies are never blocked.
pub(crate) fn ip_deny(ip: &IpPolicy, client: Option<ClientIp>, services: &Services, now: UnixTime) -> Option<Deny> {
    let blocked = |why: &str| Some(Deny::new(DenyReason::IpBlocked, why));
    let Some(client) = client else {
        // No peer address at all: only an allow list can say anything, and it cannot pass.
        return if ip.allow.is_empty() { None } else { blocked("no client address for ip.allow") };
    };
    // The allow list holds for whoever the client is, a trusted proxy that forwards no client
    // included (a pod in trusted_cidrs must not pass it by sending no x-forwarded-for), unless
    // the policy exempts such proxies explicitly.
    let exempt = client.trusted && ip.allow_trusted_proxies;
    if !(ip.allow.is_empty() || ip.allow.contains(client.addr) || exempt) {
        return blocked("not in ip.allow");
    }
    if client.trusted {
        return None;
    }
    if ip.deny.contains(client.addr) {
        return blocked("in ip.deny");
    }
    if services.blocks.blocked(client.addr, now) {
        return blocked("blocked");
    }
    None
}

/// Who a credential proves: the verified token (or the identity an API key stands for), the
/// key itself for API keys, and the issuer rules the identity is held to.
pub(super) struct Identity<'p> {
    pub(super) token: VerifiedToken,
    pub(super) key: Option<Arc<ApiKey>>,
    pub(super) rules: &'p IssuerRules,
}

/// An API key's identity, by digest (contract step 8; a JWT goes through the verifier instead).
fn identify_key<'p>(
    policy: &'p Policy,
    services: &Services,
    value: &str,
    now: UnixTime,
    context: &mut DecisionContext,
) -> Result<Identity<'p>, Deny> {
    let api_keys =
        policy.api_keys.as_ref().ok_or_else(|| Deny::new(DenyReason::ApiKeyInvalid, "API keys are not configured"))?;
    match authenticate(api_keys, services.api_keys, value, now) {
        Ok((token, key)) => {
            context.api_key = Some(key.name.clone());
            Ok(Identity { token, key: Some(key), rules: &API_KEY_RULES })
        }
        Err((deny, name)) => {
            context.api_key = name;
            Err(deny)
        }
    }
}

/// A JWT's identity from what the verifier said of it.
fn identify_jwt<'p>(
    policy: &'p Policy,
    verified: Result<VerifiedToken, TokenError>,
    context: &mut DecisionContext,
) -> Result<Identity<'p>, Deny> {
    let token = verified.map_err(|err| token_deny(err, context))?;
    let rules = policy
        .issuers
        .get(token.issuer.0)
        .ok_or_else(|| Deny::new(DenyReason::TokenInvalid, "issuer not in this policy"))?;
    Ok(Identity { token, key: None, rules })
}

/// A decision waiting for its JWT's verification: what [`begin`] learned so far. The edge
/// verifies (through its cache, awaiting without blocking a thread) and hands the result to
/// [`finish`]; [`decide`] does both in one go with [`Services::verifier`].
#[derive(Debug, Clone)]
pub struct Pending<'a> {
    input: &'a CheckInput,
    policy: &'a Policy,
    route: &'a Route,
    requirements: &'a Requirements,
    context: DecisionContext,
    token: &'a str,
    digest: [u8; 32],
    /// The request carries an `authorization` header that is not this (bearer) credential.
    unverified_authorization: bool,
    requested_tenant: Option<String>,
    /// `Authorization: DPoP`: the proof sent (if any) and the URI it must name.
    dpop: Option<(Option<&'a str>, String)>,
}

impl Pending<'_> {
    /// The compact JWS to verify.
    pub fn token(&self) -> &str {
        self.token
    }

    /// The DPoP proof to verify at the edge, with what it is checked against; `None` when the
    /// token did not come as `Authorization: DPoP` or came without a proof.
    pub fn dpop_proof(&self) -> Option<(&str, super::binding::ProofRequest<'_>)> {
        let (proof, htu) = self.dpop.as_ref()?;
        let request = super::binding::ProofRequest { method: &self.input.method, htu, token: self.token };
        Some(((*proof)?, request))
    }

    /// Its SHA-256 (the claims cache's key).
    pub fn digest(&self) -> &[u8; 32] {
        &self.digest
    }
}

/// How far [`begin`] got: a decision, or a JWT to verify first.
#[derive(Debug)]
pub enum Progress<'a> {
    Decided(Decision),
    Verify(Pending<'a>),
}

/// Policies with at most this many routes are matched by scanning them all.
const SCAN_BELOW: usize = 16;

/// The steps of the pipeline in order (docs/contract.md "The steps of one Check"), as
/// [`crate::Trace`] records them.
pub const STEPS: [&str; 23] = [
    "client address",
    "ip lists",
    "path",
    "method",
    "authority",
    "grammar",
    "request headers",
    "route",
    "peer principal",
    "ip rate limit",
    "state freshness",
    "tenant requested",
    "credential",
    "csrf",
    "verification",
    "time",
    "sender constraint",
    "revocation",
    "session",
    "tenant membership",
    "requirements",
    "step-up",
    "rate limit",
];

pub(super) fn passed(services: &Services, step: &'static str) {
    if let Some(trace) = services.trace {
        trace.passed(step);
    }
}

/// Decides one request. Pure: the same inputs always give the same decision. Under `mode:
/// dry_run` a deny that is not [`DenyReason::always_enforced`] becomes an allow without
/// identity (every identity and strip header removed), the deny kept in the context.
pub fn decide(input: &CheckInput, policy: &Policy, services: &Services, now: UnixTime) -> Decision {
    match begin(input, policy, services, now) {
        Progress::Decided(decision) => decision,
        Progress::Verify(pending) => {
            let verified = services.verifier.verify_digested(pending.token(), pending.digest());
            let proof = pending.dpop_proof().map(|(proof, request)| services.proofs.verify_proof(proof, &request, now));
            finish(&pending, verified, proof, services, now)
        }
    }
}

/// The decision up to the credential's verification: decided already (every deny before it,
/// public and anonymous allows, API keys), or a JWT to verify. Pure, like [`decide`].
pub fn begin<'a>(input: &'a CheckInput, policy: &'a Policy, services: &Services, now: UnixTime) -> Progress<'a> {
    match begin_enforced(input, policy, services, now) {
        Progress::Decided(decision) => Progress::Decided(with_mode(input, policy, decision)),
        verify => verify,
    }
}

/// The rest of the decision once the verifier has answered for [`Pending::token`].
pub fn finish(
    pending: &Pending,
    verified: Result<VerifiedToken, TokenError>,
    proof: super::binding::ProofOutcome,
    services: &Services,
    now: UnixTime,
) -> Decision {
    let mut context = pending.context.clone();
    let decision = match identify_jwt(pending.policy, verified, &mut context) {
        Ok(identity) => {
            let after = After {
                input: pending.input,
                policy: pending.policy,
                route: pending.route,
                requirements: pending.requirements,
                requested_tenant: pending.requested_tenant.clone(),
                unverified_authorization: pending.unverified_authorization,
                binding: Some((pending.dpop.is_some(), proof)),
            };
            after.decide(identity, context, services, now)
        }
        Err(deny) => Decision::deny(deny, context),
    };
    with_mode(pending.input, pending.policy, decision)
}

/// `mode: dry_run`: a deny that is not always enforced becomes an allow without identity.
fn with_mode(input: &CheckInput, policy: &Policy, decision: Decision) -> Decision {
    let Outcome::Deny(deny) = &decision.outcome else { return decision };
    let dry_run = match decision.context.rule {
        Some(_) => decision.context.route_dry_run,
        None => policy.dry_run_unrouted && deny.reason == DenyReason::NoRoute,
    };
    if !dry_run || deny.reason.always_enforced() {
        return decision;
    }
    let deny = deny.clone();
    let mut context = decision.context;
    context.would_deny = Some(deny);
    let has_authorization = input.header_values("authorization").next().is_some();
    allow(input, policy, None, context, has_authorization)
}

fn begin_enforced<'a>(input: &'a CheckInput, policy: &'a Policy, services: &Services, now: UnixTime) -> Progress<'a> {
    let mut context = DecisionContext::default();
    let client = match input.peer_ip.map(|peer| {
        let xff: Vec<&str> = input.header_values("x-forwarded-for").collect();
        client_ip(peer, &xff, &policy.ip.trusted)
    }) {
        Some(Ok(client)) => Some(client),
        None => None,
        Some(Err(deny)) => return Progress::Decided(Decision::deny(deny, context)),
    };
    context.client_ip = client.map(|c| c.addr);
    context.client_trusted = client.is_some_and(|c| c.trusted);
    passed(services, "client address");
    if let Some(deny) = ip_deny(&policy.ip, client, services, now) {
        return Progress::Decided(Decision::deny(deny, context));
    }
    passed(services, "ip lists");
    let path = match validate_path(&input.path) {
        Ok(path) => path,
        Err(why) => return Progress::Decided(Decision::deny(Deny::new(DenyReason::PathInvalid, why), context)),
    };
    passed(services, "path");
    if let Err(deny) = check_method(&input.method) {
        return Progress::Decided(Decision::deny(deny, context));
    }
    passed(services, "method");
    let host = match parse_authority(&input.host) {
        Ok(host) => host,
        Err(deny) => return Progress::Decided(Decision::deny(deny, context)),
    };
    passed(services, "authority");
    if let Err(deny) = check_grammar(input, policy.grammar) {
        return Progress::Decided(Decision::deny(deny, context));
    }
    passed(services, "grammar");
    let peer_trusted = input.peer_ip.is_some_and(|peer| policy.ip.trusted.contains(peer));
    if let Err(deny) = check_channels(input, peer_trusted, policy.sensitive_headers()) {
        return Progress::Decided(Decision::deny(deny, context));
    }
    passed(services, "request headers");
    let has_authorization = input.header_values("authorization").next().is_some();
    // A few routes are scanned faster than looked up (BENCHMARKS.md "Route index").
    let index = policy.route_index.as_ref().filter(|_| policy.routes.len() > SCAN_BELOW);
    let route = match super::route::find_route_indexed(&policy.routes, index, &host, path, input) {
        Ok(Some(route)) => route,
        Ok(None) => {
            return Progress::Decided(Decision::deny(Deny::new(DenyReason::NoRoute, "no route matches"), context));
        }
        Err(deny) => return Progress::Decided(Decision::deny(deny, context)),
    };
    context.rule = Some(route.name.clone());
    context.route_dry_run = route.dry_run;
    if let Access::Deny(why) = &route.access {
        return Progress::Decided(Decision::deny(Deny::new(DenyReason::RouteDenied, why.clone()), context));
    }
    passed(services, "route");
    if let Access::Optional(req) | Access::Required(req) = &route.access
        && let Err(deny) = check_source_principal(&input.peer_principal, &req.source_principals)
    {
        return Progress::Decided(Decision::deny(deny, context));
    }
    passed(services, "peer principal");
    // Pre-auth rate limit per client IP (contract step 5); trusted proxies are never limited.
    if let Some(tier) = route.rate_limit.as_ref().filter(|t| t.key == RateKey::Ip)
        && let Some(ip) = context.client_ip.filter(|_| !context.client_trusted)
        && let Err(deny) = limit(services, tier, &client_key(ip), &mut context)
    {
        return Progress::Decided(Decision::deny(deny, context));
    }
    passed(services, "ip rate limit");
    let (requirements, credential_required): (&Requirements, bool) = match &route.access {
        Access::Public => return Progress::Decided(allow(input, policy, None, context, has_authorization)),
        // Refused above, at the route; kept closed here too.
        Access::Deny(why) => {
            return Progress::Decided(Decision::deny(Deny::new(DenyReason::RouteDenied, why.clone()), context));
        }
        Access::Optional(req) => (req, false),
        Access::Required(req) => (req, true),
    };
    // Past here revocations, members and blocks matter: outdated state is refused or flagged.
    if services.state_stale {
        if policy.on_stale == super::OnStale::Deny {
            let why = "no contact with the state backend for longer than state.max_staleness";
            return Progress::Decided(Decision::deny(Deny::new(DenyReason::StateStale, why), context));
        }
        context.stale_state = true;
    }
    passed(services, "state freshness");
    // The tenant the request asks for (not yet proven): malformed or conflicting asks are 400.
    let requested_tenant = match &policy.tenants {
        Some(tenants) => match resolve_tenant(tenants, input, &host, path) {
            Ok(tenant) => tenant,
            Err(deny) => return Progress::Decided(Decision::deny(deny, context)),
        },
        None => None,
    };
    if requirements.tenant && requested_tenant.is_none() {
        return Progress::Decided(Decision::deny(
            Deny::new(DenyReason::TenantMissing, "this route needs a tenant"),
            context,
        ));
    }
    passed(services, "tenant requested");
    let credential = match extract_credential(input, &policy.credentials) {
        Ok(Some(credential)) => credential,
        Ok(None) if credential_required => {
            return Progress::Decided(Decision::deny(
                Deny::new(DenyReason::CredentialMissing, "no credential"),
                context,
            ));
        }
        Ok(None) => return Progress::Decided(allow(input, policy, None, context, has_authorization)),
        Err(deny) => return Progress::Decided(Decision::deny(deny, context)),
    };
    passed(services, "credential");
    // Hashed once: the fingerprint for the audit, the key for the claims cache.
    let digest: [u8; 32] = Sha256::digest(credential.token().as_bytes()).into();
    context.credential_fingerprint = Some(Fingerprint::of_digest(&digest));
    if let Credential::Cookie { .. } = credential
        && let Err(deny) = check_csrf(input, policy.csrf.as_ref())
    {
        return Progress::Decided(Decision::deny(deny, context));
    }
    passed(services, "csrf");
    let dpop = match credential {
        Credential::Dpop(_) => {
            let peer_trusted = input.peer_ip.is_some_and(|peer| policy.ip.trusted.contains(peer));
            let proof = match super::binding::dpop_header(input) {
                Ok(proof) => proof,
                Err(deny) => return Progress::Decided(Decision::deny(deny, context)),
            };
            match super::binding::request_htu(input, peer_trusted, &policy.credentials.dpop_authorities) {
                Ok(htu) => Some((proof, htu)),
                Err(deny) => return Progress::Decided(Decision::deny(deny, context)),
            }
        }
        _ => None,
    };
    // A verified bearer token is the `authorization` header; any other credential leaves one
    // sent beside it unverified (removed on an allow).
    let unverified_authorization =
        has_authorization && !matches!(credential, Credential::Bearer(_) | Credential::Dpop(_));
    if let Credential::ApiKey(value) = credential {
        let after =
            After { input, policy, route, requirements, requested_tenant, unverified_authorization, binding: None };
        return Progress::Decided(with_identity(
            identify_key(policy, services, value, now, &mut context),
            after,
            context,
            services,
            now,
        ));
    }
    Progress::Verify(Pending {
        input,
        policy,
        route,
        requirements,
        context,
        token: credential.token(),
        digest,
        unverified_authorization,
        requested_tenant,
        dpop,
    })
}

fn with_identity(
    identity: Result<Identity, Deny>,
    after: After,
    context: DecisionContext,
    services: &Services,
    now: UnixTime,
) -> Decision {
    match identity {
        Ok(identity) => after.decide(identity, context, services, now),
        Err(deny) => Decision::deny(deny, context),
    }
}
