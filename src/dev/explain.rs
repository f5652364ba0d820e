//! `portcullis explain`: one request through the pure core, offline, with every pipeline step
//! and its outcome, the rule that matched and the headers the upstream would receive. The
//! request goes through the same conversion (`server::convert::check_input`) and the same
//! `decide` as a served Check, so the two cannot disagree; only shared state is empty (no
//! revocations, blocks or run-time members) and rate limits are not counted.

use crate::config::Settings;
use crate::decision::{Decision, Outcome, STEPS, Services, Trace, UnixTime, decide};
use crate::dev::request::{HeaderEncoding, check_request};
use crate::server::proto::envoy::config::core::v3::{Address, SocketAddress, address};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A request to explain (flags, or a JSON/YAML request file).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExplainRequest {
    #[serde(default = "default_method")]
    pub method: String,
    #[serde(default = "default_path")]
    pub path: String,
    #[serde(default = "default_host")]
    pub host: String,
    /// Header name → value (a list for a header sent more than once).
    #[serde(default)]
    pub headers: BTreeMap<String, OneOrMany>,
    /// The connecting peer's address (default 127.0.0.1).
    pub peer: Option<String>,
    /// A bearer token, sent as `authorization: Bearer …`.
    pub token: Option<String>,
}

impl Default for ExplainRequest {
    fn default() -> Self {
        Self {
            method: default_method(),
            path: default_path(),
            host: default_host(),
            headers: BTreeMap::new(),
            peer: None,
            token: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

fn default_method() -> String {
    "GET".into()
}
fn default_path() -> String {
    "/".into()
}
fn default_host() -> String {
    "api.example.com".into()
}

/// One pipeline step and what happened there.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Step {
    pub step: &'static str,
    /// `passed`, `denied`, `not reached` or `not needed` (an allow that needed no more steps).
    pub outcome: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    pub decision: &'static str,
    pub status: u16,
    pub reason: &'static str,
    pub detail: String,
    pub rule: Option<String>,
    /// What the matched route matches and asks for.
    pub route: Option<String>,
    pub issuer: Option<String>,
    pub subject: Option<String>,
    pub tenant: Option<String>,
    pub steps: Vec<Step>,
    /// Headers set on the request the upstream receives (allow only).
    pub upstream_set: Vec<(String, String)>,
    /// Headers removed from it (allow only).
    pub upstream_remove: Vec<String>,
    /// Headers of the answer the client gets on a deny (challenge, retry-after, security
    /// headers), as Envoy sends them.
    pub deny_headers: Vec<(String, String)>,
}

/// Decides `request` under `settings` at `now`, recording the steps.
/// Shared state for an offline decision (`portcullis test` cases fill it); empty for `explain`.
#[derive(Debug, Default)]
pub struct OfflineState {
    pub revocations: crate::state::revocation::MemoryRevocations,
    pub members: crate::state::membership::MemoryMembers,
    pub blocks: crate::state::blocks::MemoryBlocks,
}

pub fn explain(settings: &Settings, request: &ExplainRequest, now: UnixTime) -> Explanation {
    explain_with(settings, request, now, &OfflineState::default())
}

/// [`explain`] against `state` (revocations, members, blocks) instead of none.
pub fn explain_with(settings: &Settings, request: &ExplainRequest, now: UnixTime, state: &OfflineState) -> Explanation {
    let mut headers: Vec<(String, String)> = Vec::new();
    for (name, value) in &request.headers {
        match value {
            OneOrMany::One(v) => headers.push((name.clone(), v.clone())),
            OneOrMany::Many(vs) => headers.extend(vs.iter().map(|v| (name.clone(), v.clone()))),
        }
    }
    if let Some(token) = &request.token {
        headers.push(("authorization".into(), format!("Bearer {token}")));
    }
    let pairs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut check = check_request(&request.method, &request.path, &pairs, HeaderEncoding::Raw);
    if let Some(attributes) = check.attributes.as_mut() {
        if let Some(http) = attributes.request.as_mut().and_then(|r| r.http.as_mut()) {
            http.host = request.host.clone();
        }
        if let (Some(peer), Some(source)) = (&request.peer, attributes.source.as_mut()) {
            source.address = Some(Address {
                address: Some(address::Address::SocketAddress(SocketAddress {
                    address: peer.clone(),
                    ..Default::default()
                })),
            });
        }
    }
    let input = crate::server::convert::check_input(check);
    let trace = Trace::default();
    // DPoP proofs are checked as the server checks them, but for replay (one request here).
    let nonces = crate::jwt::dpop::Nonces::new().ok();
    let dpop = settings
        .snapshot
        .dpop
        .as_deref()
        .zip(nonces.as_ref())
        .map(|(settings, nonces)| crate::jwt::dpop::DpopVerifier { settings, nonces });
    let proofs: &dyn crate::decision::ProofVerifier = match &dpop {
        Some(verifier) => verifier,
        None => &crate::decision::binding::NoProofs,
    };
    let services = Services {
        trace: Some(&trace),
        proofs,
        revocations: &state.revocations,
        memberships: &state.members,
        blocks: &state.blocks,
        ..Services::stateless(&settings.snapshot.verifier)
    };
    let decision = decide(&input, &settings.snapshot.policy, &services, now);
    let mut explanation = describe(&decision, &trace.steps());
    // The deny's headers from the one decision → response mapping the server uses.
    let answer =
        crate::server::convert::check_response(&decision, &input.request_id, &settings.snapshot.policy.response);
    if let Some(crate::server::proto::envoy::service::auth::v3::check_response::HttpResponse::DeniedResponse(denied)) =
        answer.http_response
    {
        explanation.deny_headers =
            denied.headers.iter().filter_map(|h| h.header.as_ref()).map(|h| (h.key.clone(), h.value.clone())).collect();
    }
    let policy = &settings.snapshot.policy;
    explanation.route = decision
        .context
        .rule
        .as_ref()
        .and_then(|name| policy.routes.iter().find(|r| &r.name == name))
        .map(route_summary);
    explanation
}

fn test_summary(test: &crate::decision::ValueTest) -> String {
    match test {
        crate::decision::ValueTest::Present => "present".into(),
        crate::decision::ValueTest::Equals(v) => format!("= {v:?}"),
        crate::decision::ValueTest::Regex(re) => format!("~ {}", re.as_str()),
    }
}

/// One line: host, path, methods, header and query tests, then the access.
fn route_summary(route: &crate::decision::Route) -> String {
    use crate::decision::{Access, HostMatch, PathMatch};
    let m = &route.matcher;
    let mut parts = Vec::new();
    match &m.host {
        Some(HostMatch::Exact(h)) => parts.push(format!("host {h}")),
        Some(HostMatch::Suffix(s)) => parts.push(format!("host *{s}")),
        None => {}
    }
    parts.push(match &m.path {
        PathMatch::Prefix(p) => format!("path_prefix {p}"),
        PathMatch::Exact(p) => format!("path_exact {p}"),
        PathMatch::Regex { strict, .. } => format!("path_regex {}", strict.as_str()),
    });
    if !m.methods.is_empty() {
        parts.push(format!("methods {}", m.methods.join(",")));
    }
    parts.extend(m.headers.iter().map(|t| format!("header {} {}", t.name, test_summary(&t.test))));
    parts.extend(m.query.iter().map(|t| format!("query {} {}", t.name, test_summary(&t.test))));
    let access = match &route.access {
        Access::Public => "public".to_string(),
        Access::Optional(_) => "optional credential".to_string(),
        Access::Required(_) => "credential required".to_string(),
        Access::Deny(why) => format!("deny ({why})"),
    };
    let mode = if route.dry_run { ", dry run" } else { "" };
    format!("{} → {access}{mode}", parts.join(", "))
}

fn describe(decision: &Decision, passed: &[&'static str]) -> Explanation {
    let denied = matches!(decision.outcome, Outcome::Deny(_));
    let mut stopped = false;
    let steps = STEPS
        .iter()
        .map(|step| {
            let outcome = if passed.contains(step) {
                "passed"
            } else if !stopped {
                stopped = true;
                if denied { "denied" } else { "not needed" }
            } else if denied {
                "not reached"
            } else {
                "not needed"
            };
            Step { step, outcome }
        })
        .collect();
    let ctx = &decision.context;
    let (status, detail, set, remove) = match &decision.outcome {
        Outcome::Allow { set_headers, remove_headers } => {
            (200, String::new(), set_headers.clone(), remove_headers.clone())
        }
        Outcome::Deny(deny) => (deny.reason.http_status(), deny.detail.clone(), Vec::new(), Vec::new()),
    };
    Explanation {
        decision: if denied { "deny" } else { "allow" },
        status,
        reason: decision.reason(),
        detail,
        rule: ctx.rule.clone(),
        route: None,
        issuer: ctx.issuer.as_deref().map(str::to_string),
        subject: ctx.subject.as_ref().map(|s| s.to_string()),
        tenant: ctx.tenant.clone(),
        steps,
        upstream_set: set,
        upstream_remove: remove,
        deny_headers: Vec::new(),
    }
}

impl std::fmt::Display for Explanation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {}", self.decision, self.status, self.reason)?;
        if let Some(rule) = &self.rule {
            write!(f, " (rule {rule})")?;
        }
        writeln!(f)?;
        if let Some(route) = &self.route {
            writeln!(f, "  route: {route}")?;
        }
        if !self.detail.is_empty() {
            writeln!(f, "  why: {}", self.detail)?;
        }
        if let Some(subject) = &self.subject {
            writeln!(f, "  identity: {} from {}", subject, self.issuer.as_deref().unwrap_or("?"))?;
        }
        if let Some(tenant) = &self.tenant {
            writeln!(f, "  tenant: {tenant}")?;
        }
        writeln!(f, "steps:")?;
        for step in &self.steps {
            let mark = match step.outcome {
                "passed" => "ok  ",
                "denied" => "DENY",
                _ => "    ",
            };
            let note = if step.outcome == "denied" { format!(": {}", self.reason) } else { String::new() };
            let tail = if matches!(step.outcome, "not reached" | "not needed") {
                format!(" ({})", step.outcome)
            } else {
                String::new()
            };
            writeln!(f, "  {mark} {}{note}{tail}", step.step)?;
        }
        if self.decision == "allow" {
            writeln!(f, "upstream receives:")?;
            for (k, v) in &self.upstream_set {
                writeln!(f, "  set    {k}: {v}")?;
            }
            for k in &self.upstream_remove {
                writeln!(f, "  remove {k}")?;
            }
        } else if !self.deny_headers.is_empty() {
            writeln!(f, "client receives:")?;
            for (k, v) in &self.deny_headers {
                writeln!(f, "  {k}: {v}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `explain` shows the matched route's header and query tests, and a deny route or an
    /// ambiguous copy is refused at the route step.
    #[test]
    fn explain_shows_matchers_and_denies_at_the_route() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let policy = format!(
            "issuers:\n  - {{ issuer: https://issuer.test/, audiences: [api], algorithms: [RS256], jwks: {{ file: {} }} }}\nroutes:\n  - {{ name: no-debug, match: {{ path_prefix: /, query: {{ debug: {{ present: true }} }} }}, deny: true, reason: no debug here }}\n  - {{ name: canary, match: {{ path_prefix: /, headers: {{ x-env: {{ equals: canary }} }} }}, public: true }}\n  - {{ name: rest, match: {{ path_prefix: / }}, require: {{ scopes: [read] }} }}\n",
            dir.join("keys/jwks.json").display()
        );
        let settings = crate::config::parse_and_validate(&policy, &dir).unwrap_or_else(|e| panic!("{e}"));
        let ask = |path: &str, headers: &[(&str, &str)]| {
            let mut request = ExplainRequest { path: path.into(), ..ExplainRequest::default() };
            for (k, v) in headers {
                request.headers.insert(k.to_string(), OneOrMany::One(v.to_string()));
            }
            explain(&settings, &request, UnixTime(1_790_000_000))
        };
        let denied = ask("/x?debug=1", &[]);
        assert_eq!((denied.status, denied.reason, denied.detail.as_str()), (403, "route_denied", "no debug here"));
        assert_eq!(denied.route.as_deref(), Some("path_prefix /, query debug present → deny (no debug here)"));
        let at = denied.steps.iter().find(|s| s.outcome == "denied").map(|s| s.step);
        assert_eq!(at, Some("route"));
        let canary = ask("/x", &[("x-env", "canary")]);
        assert_eq!(
            (canary.decision, canary.route.as_deref()),
            ("allow", Some("path_prefix /, header x-env = \"canary\" → public"))
        );
        let ambiguous = ask("/x", &[("x-env", "canary, stable")]);
        assert_eq!((ambiguous.status, ambiguous.reason), (400, "invalid_request"));
        assert_eq!(ambiguous.steps.iter().find(|s| s.outcome == "denied").map(|s| s.step), Some("route"));
        assert!(format!("{denied}").contains("  route: path_prefix /, query debug present → deny (no debug here)"));
    }
}
