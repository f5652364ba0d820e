//! Contract steps 8–13 once an identity is verified: times, sender constraint, revocation,
//! session, tenant, requirements, step-up, post-auth rate limits, the allow.

use super::claims::check_times;
use super::decide::{Identity, Policy, allow, limit, passed};
use super::decision::{Decision, DecisionContext};
use super::input::CheckInput;
use super::reason::{Deny, DenyReason};
use super::requirements::{Requirements, check_requirements, check_step_up};
use super::route::Route;
use super::session::check_session;
use super::tenant::membership;
use super::types::{RateKey, Services, TokenIds, UnixTime};

/// What the steps after verification need from the steps before it.
pub(super) struct After<'a> {
    pub(super) input: &'a CheckInput,
    pub(super) policy: &'a Policy,
    pub(super) route: &'a Route,
    pub(super) requirements: &'a Requirements,
    pub(super) requested_tenant: Option<String>,
    /// The request carries an `authorization` header that is not the verified credential.
    pub(super) unverified_authorization: bool,
    /// A JWT's sender binding: whether it came as `Authorization: DPoP`, and its proof as the
    /// edge found it. `None` for an API key (bound to nothing but itself).
    pub(super) binding: Option<(bool, super::binding::ProofOutcome)>,
}

impl After<'_> {
    /// Contract steps 9–13 for a verified identity: times, revocation, session, tenant,
    /// requirements, step-up, post-auth rate limits, the allow.
    pub(super) fn decide(
        self,
        identity: Identity,
        mut context: DecisionContext,
        services: &Services,
        now: UnixTime,
    ) -> Decision {
        let Identity { token, key, rules } = identity;
        let policy = self.policy;
        context.issuer = Some(token.shared_iss());
        context.subject = Some(token.shared_subject());
        passed(services, "verification");
        if let Err(deny) = check_times(&token, rules.time, now) {
            return Decision::deny(deny, context);
        }
        passed(services, "time");
        let constraint = rules.sender_constraint.stricter(self.requirements.sender_constraint);
        let bound = match &self.binding {
            Some((dpop_scheme, proof)) => {
                let certificate = self.input.peer_certificate.as_deref();
                super::binding::check_binding(&token, *dpop_scheme, proof.as_ref(), certificate, constraint)
            }
            // An API key is bound to no key or certificate: never where a route requires one.
            None if constraint != super::binding::SenderConstraint::default() => Err(Deny::new(
                DenyReason::TokenBindingMismatch,
                "this route requires a sender-constrained token; an API key is none",
            )),
            None => Ok(()),
        };
        if let Err(deny) = bound {
            return Decision::deny(deny, context);
        }
        passed(services, "sender constraint");
        // Checked on every request, cache hits included.
        let session_claim = policy.sessions.as_ref().map_or("/sid", |s| s.claim.as_str());
        if let Some(why) = services.revocations.revoked(&token, &TokenIds::of(&token, session_claim), now) {
            return Decision::deny(Deny::new(DenyReason::TokenRevoked, why), context);
        }
        passed(services, "revocation");
        if let Some(sessions) = &policy.sessions {
            match check_session(sessions, &token, services.sessions, now) {
                Ok(touch) => context.session_touch = touch,
                Err(refused) => {
                    context.session_idle = refused.judged;
                    return Decision::deny(refused.deny, context);
                }
            }
        }
        passed(services, "session");
        if let (Some(tenant), Some(tenants)) = (self.requested_tenant, &policy.tenants) {
            let claim_trusted = tenants
                .claim
                .as_deref()
                .is_some_and(|p| rules.trusted_claims.iter().any(|t| p.trim_start_matches('/') == t));
            // An API key's own tenant list is as trusted as the key file it came from.
            let by_key = key.as_ref().filter(|key| key.tenants.contains(&tenant)).map(|_| Ok(Vec::new()));
            let roles = match by_key
                .unwrap_or_else(|| membership(tenants, &token, &tenant, claim_trusted, services.memberships))
            {
                Ok(roles) => roles,
                Err(deny) => return Decision::deny(deny, context),
            };
            if services.revocations.tenant_revoked(&tenant, &token, now) {
                return Decision::deny(
                    Deny::new(DenyReason::TenantForbidden, "tokens for this tenant revoked"),
                    context,
                );
            }
            if !self.requirements.tenant_roles.is_empty()
                && !self.requirements.tenant_roles.iter().any(|r| roles.contains(r))
            {
                return Decision::deny(Deny::new(DenyReason::TenantForbidden, "tenant role required"), context);
            }
            context.tenant = Some(tenant);
        }
        passed(services, "tenant membership");
        if let Err(deny) = check_requirements(&token, self.requirements, &rules.roles_pointer) {
            return Decision::deny(deny, context);
        }
        passed(services, "requirements");
        if let Some(step_up) = &self.requirements.step_up
            && let Err(deny) = check_step_up(&token, step_up, now.0)
        {
            return Decision::deny(deny, context);
        }
        passed(services, "step-up");
        // Post-auth rate limits per subject (issuer-scoped) or per tenant (contract step 12).
        if let Some(tier) = &self.route.rate_limit {
            let key = match tier.key {
                RateKey::Ip => None,
                RateKey::Subject => Some(format!("{}\0{}", token.iss(), token.subject())),
                RateKey::Tenant => context.tenant.clone(),
            };
            if let Some(key) = key
                && let Err(deny) = limit(services, tier, &key, &mut context)
            {
                return Decision::deny(deny, context);
            }
        }
        passed(services, "rate limit");
        allow(self.input, policy, Some(&token), context, self.unverified_authorization)
    }
}
