//! The claims a policy can read: what a verified token keeps (the claims cache holds only
//! these, so an identity costs what the policy uses of it, not what the IdP put in it).
//!
//! Architecture Invariant: every claim reader of the core is listed here. Enforced by the
//! decision tests running through the real verifier with this filter on (`src/core_tests.rs`,
//! `tests/it/grpc.rs`) and `claims_read::tests`.

use super::decide::Policy;
use super::headers::IdentitySource;
use super::requirements::Requirements;
use super::route::Access;
use std::collections::BTreeSet;

/// The top-level claim a JSON Pointer starts in (`/realm_access/roles` → `realm_access`).
fn top_level(pointer: &str) -> Option<String> {
    let first = pointer.strip_prefix('/')?.split('/').next()?;
    Some(first.replace("~1", "/").replace("~0", "~"))
}

fn requirements(req: &Requirements, out: &mut BTreeSet<String>) {
    if !req.scopes.is_empty() {
        out.extend(["scope".to_string(), "scp".to_string()]);
    }
    if !req.audiences.is_empty() {
        out.insert("aud".into());
    }
    out.extend(req.claims.iter().filter_map(|m| top_level(&m.pointer)));
    if req.step_up.is_some() {
        out.extend(["acr".to_string(), "amr".to_string(), "auth_time".to_string()]);
    }
    for alternative in req.any_of.iter().chain(req.not.as_deref()) {
        requirements(alternative, out);
    }
}

impl Policy {
    /// Top-level names of every claim a decision under this policy can read, sorted: identity
    /// headers, requirements (scopes, audiences, claim matchers, step-up, alternatives), each
    /// issuer's roles claim, the tenant membership claim, the session claim and the
    /// revocation ids (`jti`, the session claim). `iss`, `sub`, `exp`, `nbf` and `iat` are
    /// kept apart by the verifier: a verified token's `sub` and `iss` read back whatever this
    /// list says (the packed token restores them), so they need not be listed.
    pub fn claims_read(&self) -> Vec<String> {
        // `cnf`: a token bound to a key or certificate is refused unless proven, whatever the
        // policy asks (RFC 9449 §7.2, RFC 8705), so its binding is always kept.
        let mut out = BTreeSet::from(["cnf".to_string(), "jti".to_string(), "sid".to_string()]);
        for header in self.response.identity_headers.iter() {
            if let IdentitySource::Claim(pointer) = &header.source {
                out.extend(top_level(pointer));
            }
        }
        for route in &self.routes {
            if let Access::Optional(req) | Access::Required(req) = &route.access {
                requirements(req, &mut out);
            }
        }
        out.extend(self.issuers.iter().filter_map(|i| top_level(&i.roles_pointer)));
        out.extend(self.tenants.iter().filter_map(|t| t.claim.as_deref()).filter_map(top_level));
        out.extend(self.sessions.iter().filter_map(|s| top_level(&s.claim)));
        // Session last-seen is max(stored, iat, auth_time): whatever routes ask for.
        if self.sessions.is_some() {
            out.insert("auth_time".into());
        }
        out.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointers_name_their_top_level_claim() {
        assert_eq!(top_level("/realm_access/roles").as_deref(), Some("realm_access"));
        assert_eq!(top_level("/a~1b/c").as_deref(), Some("a/b"));
        assert_eq!(top_level("/sub").as_deref(), Some("sub"));
        assert_eq!(top_level("sub"), None);
    }

    #[test]
    fn an_empty_policy_keeps_the_revocation_ids_only() {
        assert_eq!(Policy::default().claims_read(), ["cnf", "jti", "sid"]);
    }

    /// Issue 32: sessions read `auth_time` whether or not some route asks for step-up.
    #[test]
    fn sessions_keep_auth_time() {
        let policy = Policy {
            sessions: Some(crate::SessionPolicy {
                claim: "/sid".into(),
                idle_timeout_secs: 600,
                granularity_secs: 60,
                required: false,
            }),
            ..Policy::default()
        };
        assert_eq!(policy.claims_read(), ["auth_time", "cnf", "jti", "sid"]);
    }
}
