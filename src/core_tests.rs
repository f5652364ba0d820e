//! The core's decisions through the real policy loader and verifier: the shared token corpus
//! and the one auto-block rule. (The core's own tables live in `portcullis-core`.)

use crate::config::parse_and_validate;
use crate::corpus;
use crate::decision::*;
use serde_json::json;
use std::path::Path;
use std::sync::Arc;

const NOW: i64 = 1_790_000_000;

fn snapshot() -> Arc<crate::config::Snapshot> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let text = std::fs::read_to_string(dir.join("policy.yaml")).expect("policy");
    match parse_and_validate(&text, &dir) {
        Ok(settings) => settings.snapshot,
        Err(e) => panic!("fixture policy invalid: {e}"),
    }
}

fn input(method: &str, path: &str, headers: &[(String, String)]) -> CheckInput {
    CheckInput {
        method: method.into(),
        host: "api.example.com".into(),
        path: path.into(),
        headers: headers.to_vec(),
        ..Default::default()
    }
}

fn prefix_route(name: &str, prefix: &str, access: Access) -> Route {
    Route {
        name: name.into(),
        matcher: RouteMatch {
            host: None,
            path: PathMatch::Prefix(prefix.into()),
            methods: Vec::new(),
            case_sensitive: false,
            strict_slash: false,
            strict_suffix: false,
            headers: Vec::new(),
            query: Vec::new(),
        },
        access,
        rate_limit: None,
        dry_run: false,
    }
}

#[test]
fn corpus_decisions() {
    let snap = snapshot();
    let cases = corpus::cases(NOW);
    assert!(cases.len() > 40, "corpus unexpectedly small: {}", cases.len());
    let services = Services::stateless(&snap.verifier);
    for case in &cases {
        let decision = decide(&input(case.method, &case.path, &case.headers), &snap.policy, &services, UnixTime(NOW));
        match &decision.outcome {
            Outcome::Allow { set_headers, remove_headers } => {
                assert_eq!(case.status, 200, "{}: allowed, expected {} {}", case.name, case.status, case.reason);
                let user = set_headers.iter().find(|(k, _)| k == "x-user-id").map(|(_, v)| v.clone());
                assert_eq!(user, case.user, "{}: x-user-id", case.name);
                // A header the request carries is set or removed; one it does not carry is not
                // removed (the answer holds only the mutations the request needs).
                let carried = |name: &str| case.headers.iter().any(|(h, _)| h == name);
                for name in ["x-tenant-id", "x-customer-id", "x-user-id"] {
                    let handled =
                        remove_headers.iter().any(|h| h == name) || set_headers.iter().any(|(h, _)| h == name);
                    assert!(handled || !carried(name), "{}: {name} neither set nor removed", case.name);
                    assert!(
                        carried(name) || !remove_headers.iter().any(|h| h == name),
                        "{}: {name} removed, not sent",
                        case.name
                    );
                }
                for (name, _) in set_headers {
                    assert!(!remove_headers.contains(name), "{}: {name} both set and removed", case.name);
                }
            }
            Outcome::Deny(deny) => {
                assert_eq!(
                    (deny.reason.http_status(), deny.reason.as_str()),
                    (case.status, case.reason),
                    "{}: denied ({})",
                    case.name,
                    deny.detail
                );
                if let Some(want) = case.challenge {
                    let params: Vec<String> =
                        deny.challenge_params.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
                    let error = deny.reason.challenge();
                    let text = format!("{error:?} {}", params.join(", "));
                    let found = text.contains(want) || matches!(error, Challenge::Error(e) if want.contains(e));
                    assert!(found, "{}: challenge {text} lacks {want}", case.name);
                }
            }
        }
    }
}

/// A verifier that always fails the same way (for a remote issuer's key misses).
struct Failing(TokenError);

impl TokenVerifier for Failing {
    fn verify(&self, _token: &str) -> Result<VerifiedToken, TokenError> {
        Err(self.0.clone())
    }
}

/// The one rule for auto-block: a deny counts only when the credential itself is bad (forged,
/// garbled, under keys no refetch changes, an API key that is not ours). A signed token with
/// the wrong claims, a valid token a route refuses, a missing, expired or revoked credential and
/// a remote issuer's key miss (a refetch may resolve it; the edge counts it only if the
/// refetched keys fail too) never count.
#[test]
fn what_counts_toward_auto_block() {
    use jsonwebtoken::Algorithm::RS256;
    let snap = snapshot();
    let mut policy = snap.policy.clone();
    let only_pem = Requirements { issuers: vec![corpus::PEM_ISSUER.into()], ..Default::default() };
    policy.routes.insert(0, prefix_route("only-pem", "/only-pem", Access::Required(only_pem)));
    let c = |sub: &str| corpus::claims(corpus::ISSUER, sub, NOW);
    let sign = |claims: &serde_json::Value| corpus::sign(RS256, Some("rsa-1"), claims);
    let good = sign(&c("alice"));
    let tampered = format!("{}x", &good[..good.len() - 1]);
    let none = corpus::with_raw_header(&json!({"alg": "none"}), &c("t"), Some(""));
    let unknown_kid = corpus::sign(RS256, Some("nope"), &c("t"));
    let mut expired = c("t");
    expired["exp"] = json!(NOW - 3600);
    let mut wrong_aud = c("t");
    wrong_aud["aud"] = json!("other");
    let mut refresh = c("t");
    refresh["token_use"] = json!("refresh");
    let mut future = c("t");
    future["nbf"] = json!(NOW + 3600);
    let bearer = |t: &str| vec![("authorization".to_string(), format!("Bearer {t}"))];
    let key = |k: &str| vec![("x-api-key".to_string(), k.to_string())];
    let unknown_key = format!("pk_{}", "A".repeat(43));
    type Case = (&'static str, &'static str, Vec<(String, String)>, DenyReason, bool);
    let cases: Vec<Case> = vec![
        ("bad signature", "/api/items", bearer(&tampered), DenyReason::TokenInvalid, true),
        ("not a JWS", "/api/items", bearer("a.b.c"), DenyReason::TokenInvalid, true),
        ("alg none", "/api/items", bearer(&none), DenyReason::TokenInvalid, true),
        ("unknown kid of a static issuer", "/api/items", bearer(&unknown_kid), DenyReason::TokenInvalid, true),
        ("oversized token", "/api/items", bearer(&"a".repeat(9000)), DenyReason::TokenInvalid, true),
        ("unknown API key", "/api/items", key(&unknown_key), DenyReason::ApiKeyInvalid, true),
        ("malformed API key", "/api/items", key("pk_short"), DenyReason::ApiKeyInvalid, true),
        ("expired API key", "/api/items", key(corpus::API_KEY_EXPIRED), DenyReason::ApiKeyInvalid, false),
        ("expired token", "/api/items", bearer(&sign(&expired)), DenyReason::TokenExpired, false),
        ("wrong audience", "/api/items", bearer(&sign(&wrong_aud)), DenyReason::TokenInvalid, false),
        ("refresh token", "/api/items", bearer(&sign(&refresh)), DenyReason::TokenInvalid, false),
        ("not yet valid", "/api/items", bearer(&sign(&future)), DenyReason::TokenInvalid, false),
        ("valid token, route's issuers rule", "/only-pem/x", bearer(&good), DenyReason::TokenInvalid, false),
        ("missing credential", "/api/items", vec![], DenyReason::CredentialMissing, false),
        (
            "two credentials",
            "/api/items",
            [bearer(&good), key(&unknown_key)].concat(),
            DenyReason::InvalidRequest,
            false,
        ),
    ];
    let services = Services::stateless(&snap.verifier);
    for (name, path, headers, reason, counted) in cases {
        let decision = decide(&input("GET", path, &headers), &policy, &services, UnixTime(NOW));
        match decision.outcome {
            Outcome::Deny(deny) => assert_eq!((deny.reason, deny.counts_as_failure), (reason, counted), "{name}"),
            Outcome::Allow { .. } => panic!("{name}: allowed"),
        }
    }
    let issuer = IssuerId(0);
    for err in [
        TokenError::UnknownKey { issuer, why: "unknown kid".into(), remote: true },
        TokenError::Signature { issuer, remote: true },
    ] {
        let verifier = Failing(err.clone());
        let decision = decide(
            &input("GET", "/api/items", &bearer(&good)),
            &policy,
            &Services::stateless(&verifier),
            UnixTime(NOW),
        );
        let Outcome::Deny(deny) = &decision.outcome else { panic!("{err}: allowed") };
        assert_eq!((deny.reason, deny.counts_as_failure), (DenyReason::TokenInvalid, false), "{err}");
        assert_eq!(decision.context.key_miss, Some(issuer), "{err}: the edge is asked to refetch");
    }
}

/// `state.on_stale`: with outdated shared state, `deny` refuses every non-public route with
/// 503 `state_stale` and lets public ones through; `serve_local` decides as usual and flags it.
#[test]
fn stale_state_is_refused_or_flagged_never_on_public_routes() {
    let snap = snapshot();
    let token = corpus::sign(jsonwebtoken::Algorithm::RS256, Some("rsa-1"), &corpus::claims(corpus::ISSUER, "s", NOW));
    let bearer = vec![("authorization".to_string(), format!("Bearer {token}"))];
    let stale = Services { state_stale: true, ..Services::stateless(&snap.verifier) };
    let mut serve_local = snap.policy.clone();
    serve_local.on_stale = OnStale::ServeLocal;
    type Case<'a> = (&'a str, &'a [(String, String)], OnStale, &'a str, bool);
    let cases: &[Case] = &[
        ("/public/x", &[], OnStale::Deny, "allowed", false),
        ("/api/items", &bearer, OnStale::Deny, "state_stale", false),
        ("/api/items", &[], OnStale::Deny, "state_stale", false),
        ("/api/items", &bearer, OnStale::ServeLocal, "allowed", true),
        ("/api/items", &[], OnStale::ServeLocal, "credential_missing", true),
    ];
    for (path, headers, on_stale, want, flagged) in cases {
        let policy = if *on_stale == OnStale::Deny { &snap.policy } else { &serve_local };
        let decision = decide(&input("GET", path, headers), policy, &stale, UnixTime(NOW));
        assert_eq!((decision.reason(), decision.context.stale_state), (*want, *flagged), "{path} {on_stale:?}");
    }
    let fresh =
        decide(&input("GET", "/api/items", &bearer), &snap.policy, &Services::stateless(&snap.verifier), UnixTime(NOW));
    assert_eq!(fresh.reason(), "allowed");
}

/// `mode: dry_run`: a policy deny becomes an allow without identity, the deny kept for the
/// audit and metrics; malformed requests stay refused.
#[test]
fn dry_run_records_policy_denies_and_enforces_the_rest() {
    let snap = snapshot();
    let mut policy = snap.policy.clone();
    for route in &mut policy.routes {
        route.dry_run = route.name == "admin";
    }
    let services = Services::stateless(&snap.verifier);
    let token = corpus::sign(jsonwebtoken::Algorithm::RS256, Some("rsa-1"), &corpus::claims(corpus::ISSUER, "s", NOW));
    let bearer = vec![("authorization".to_string(), format!("Bearer {token}"))];
    let forged = vec![("x-user-id".to_string(), "root".to_string())];
    type Case<'a> = (&'a str, &'a [(String, String)], &'a str, Option<&'a str>);
    let cases: &[Case] = &[
        ("/admin/users", &bearer, "allowed", Some("role_required")),
        ("/admin/users", &forged, "allowed", Some("credential_missing")),
        ("/admin/critical/x", &bearer, "role_required", None),
        ("/admin/users;x", &bearer, "path_invalid", None),
    ];
    for (path, headers, reason, would) in cases {
        let decision = decide(&input("GET", path, headers), &policy, &services, UnixTime(NOW));
        assert_eq!(decision.reason(), *reason, "{path}");
        assert_eq!(decision.context.would_deny.as_ref().map(|d| d.reason.as_str()), *would, "{path}");
        if let Outcome::Allow { set_headers, remove_headers } = &decision.outcome {
            assert!(set_headers.is_empty(), "no identity under a dry run: {set_headers:?}");
            let forged = headers.iter().any(|(h, _)| h == "x-user-id");
            assert_eq!(remove_headers.iter().any(|h| h == "x-user-id"), forged, "a forged identity (only) is removed");
        }
    }
}

/// `deny: true`: refused 403 `route_denied` with its stated reason, before any credential is
/// read; under `mode: dry_run` recorded instead, like any policy deny.
#[test]
fn a_deny_route_refuses_with_its_reason_and_dry_runs_like_any_policy_deny() {
    let snap = snapshot();
    let mut policy = snap.policy.clone();
    let mut debug = prefix_route("no-debug", "/", Access::Deny("debug mode is off".into()));
    debug.matcher.query.push(ValueMatcher { name: "debug".into(), test: ValueTest::Present });
    policy.routes.insert(0, debug);
    let services = Services::stateless(&snap.verifier);
    let token = corpus::sign(jsonwebtoken::Algorithm::RS256, Some("rsa-1"), &corpus::claims(corpus::ISSUER, "s", NOW));
    let bearer = vec![("authorization".to_string(), format!("Bearer {token}"))];
    let denied = decide(&input("GET", "/admin/users?debug=1", &bearer), &policy, &services, UnixTime(NOW));
    let Outcome::Deny(deny) = &denied.outcome else { panic!("allowed: {denied:?}") };
    assert_eq!(
        (deny.reason.as_str(), deny.reason.http_status(), deny.detail.as_str()),
        ("route_denied", 403, "debug mode is off")
    );
    assert_eq!(denied.context.rule.as_deref(), Some("no-debug"));
    let plain = decide(&input("GET", "/healthz", &[]), &policy, &services, UnixTime(NOW));
    assert_eq!(plain.reason(), "allowed", "without ?debug the route does not match");
    policy.routes[0].dry_run = true;
    let dry = decide(&input("GET", "/healthz?debug", &[]), &policy, &services, UnixTime(NOW));
    assert_eq!(dry.reason(), "allowed");
    assert_eq!(dry.context.would_deny.map(|d| d.reason), Some(DenyReason::RouteDenied));
}

/// Issue 25: a verified token keeps only the claims the policy reads (and the revocation ids):
/// the IdP's other claims never reach the claims cache. Every decision test here and over gRPC
/// runs with this filter, so a claim the core reads but the list misses fails them.
#[test]
fn verified_tokens_keep_only_the_claims_the_policy_reads() {
    let snap = snapshot();
    let kept = snap.policy.claims_read();
    for name in ["jti", "sid", "scope", "scp", "roles", "tenants", "acr", "amr", "auth_time"] {
        assert!(kept.iter().any(|k| k == name), "{name} is read by the fixture policy: {kept:?}");
    }
    for name in ["email", "name", "token_use", "nonce"] {
        assert!(!kept.iter().any(|k| k == name), "{name} is not read: {kept:?}");
    }
    let mut claims = corpus::claims(corpus::ISSUER, "kept", NOW);
    claims["email"] = json!("kept@example.com");
    claims["scope"] = json!("read");
    claims["profile"] = json!({"bio": "x".repeat(500)});
    let token = corpus::sign(jsonwebtoken::Algorithm::RS256, Some("rsa-1"), &claims);
    let verified = snap.verifier.verify(&token).expect("verifies");
    let names: Vec<&str> = verified.claims().iter().map(|(n, _)| n).collect();
    assert!(names.iter().all(|n| kept.iter().any(|k| k == n)), "{names:?}");
    assert!(names.contains(&"scope") && !names.contains(&"email") && !names.contains(&"profile"), "{names:?}");
    assert_eq!(verified.subject(), "kept");
}
