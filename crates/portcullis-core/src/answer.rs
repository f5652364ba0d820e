//! The one decision → HTTP answer mapping, protocol-free: what the client or the upstream sees
//! for every decision. The ext_authz adapter turns an [`Answer`] into a `CheckResponse`; the
//! Envoy module turns it into header mutations or a local reply. Both paths answer alike
//! because neither decides what to send.

use crate::{Challenge, Decision, Deny, Outcome, ResponsePolicy};

/// What a decision makes the proxy do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Forward the request with these header changes; `response_headers` go to the client.
    Allow { set_headers: Vec<(String, String)>, remove_headers: Vec<String>, response_headers: Vec<(String, String)> },
    /// Answer the client directly. `unauthenticated` marks a 401 (gRPC UNAUTHENTICATED in the
    /// ext_authz status; PERMISSION_DENIED otherwise).
    Deny { status: u16, unauthenticated: bool, reason: &'static str, headers: Vec<(String, String)>, body: String },
}

/// The proof algorithms the `DPoP` challenge names (RFC 9449 §7.1): every one Portcullis can
/// verify; a policy's `dpop.algorithms` may accept fewer, which a proof then hears about.
const DPOP_ALGS: &str = "ES256 ES384 EdDSA PS256 PS384 PS512 RS256 RS384 RS512";

/// Maps every decision to its answer. A deny always has a 4xx/5xx status, a JSON body and
/// `cache-control: no-store`; the header values come from the decision and the policy only.
pub fn answer(decision: Decision, request_id: &str, policy: &ResponsePolicy) -> Answer {
    let security_headers = policy.security_headers.iter().map(|(k, v)| (k.clone(), v.clone()));
    match decision.outcome {
        Outcome::Allow { set_headers, remove_headers } => {
            Answer::Allow { set_headers, remove_headers, response_headers: security_headers.collect() }
        }
        Outcome::Deny(deny) => {
            let status = deny.reason.http_status();
            let mut headers = vec![
                ("cache-control".to_string(), "no-store".to_string()),
                ("content-type".to_string(), "application/json".to_string()),
            ];
            headers.extend(security_headers);
            if let Some(value) = challenge(&deny, &policy.realm) {
                headers.push(("www-authenticate".into(), value));
            }
            if let Some(secs) = deny.retry_after.or(deny.reason.retry_after_secs()) {
                headers.push(("retry-after".into(), secs.to_string()));
            }
            headers.extend(deny.headers.iter().map(|(name, value)| ((*name).to_string(), value.clone())));
            let body = serde_json::json!({
                "error": error_word(status),
                "reason": deny.reason.as_str(),
                "request_id": safe_request_id(request_id),
            });
            Answer::Deny {
                status,
                unauthenticated: status == 401,
                reason: deny.reason.as_str(),
                headers,
                body: body.to_string(),
            }
        }
    }
}

/// The decision's facts for the proxy's metadata (access logs, later filters): decision and
/// reason always, rule, issuer, subject and tenant when known. Never a token or a claim value
/// the policy did not name.
pub fn metadata(decision: &Decision) -> Vec<(&'static str, &str)> {
    let ctx = &decision.context;
    let verdict = if matches!(decision.outcome, Outcome::Allow { .. }) { "allow" } else { "deny" };
    let mut fields = vec![("decision", verdict), ("reason", decision.reason())];
    let optional = [
        ("rule", ctx.rule.as_deref()),
        ("issuer", ctx.issuer.as_deref()),
        ("subject", ctx.subject.as_ref().map(|s| s.as_str())),
        ("tenant", ctx.tenant.as_deref()),
    ];
    fields.extend(optional.into_iter().filter_map(|(key, value)| value.map(|v| (key, v))));
    fields
}

/// Request ids are echoed only when they cannot carry anything surprising.
fn safe_request_id(id: &str) -> Option<&str> {
    let ok = (1..=128).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    ok.then_some(id)
}

fn error_word(status: u16) -> &'static str {
    match status {
        400 => "bad_request",
        401 => "unauthorized",
        403 => "forbidden",
        429 => "too_many_requests",
        _ => "unavailable",
    }
}

fn challenge(deny: &Deny, realm: &str) -> Option<String> {
    match deny.reason.challenge() {
        Challenge::None => None,
        Challenge::Bare => Some(format!("Bearer realm=\"{realm}\"")),
        Challenge::Error(error) => {
            let mut value = format!("Bearer realm=\"{realm}\", error=\"{error}\"");
            for (name, param) in &deny.challenge_params {
                value.push_str(&format!(", {name}=\"{param}\""));
            }
            Some(value)
        }
        Challenge::Dpop(error) => Some(format!("DPoP realm=\"{realm}\", error=\"{error}\", algs=\"{DPOP_ALGS}\"")),
    }
}
