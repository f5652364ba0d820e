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
    pub issuer: Option<String>,
    pub subject: Option<String>,
    pub tenant: Option<String>,
    pub steps: Vec<Step>,
    /// Headers set on the request the upstream receives (allow only).
    pub upstream_set: Vec<(String, String)>,
    /// Headers removed from it (allow only).
    pub upstream_remove: Vec<String>,
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
    let services = Services {
        trace: Some(&trace),
        revocations: &state.revocations,
        memberships: &state.members,
        blocks: &state.blocks,
        ..Services::stateless(&settings.snapshot.verifier)
    };
    let decision = decide(&input, &settings.snapshot.policy, &services, now);
    describe(&decision, &trace.steps())
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
        issuer: ctx.issuer.as_deref().map(str::to_string),
        subject: ctx.subject.as_ref().map(|s| s.0.to_string()),
        tenant: ctx.tenant.clone(),
        steps,
        upstream_set: set,
        upstream_remove: remove,
    }
}

impl std::fmt::Display for Explanation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {}", self.decision, self.status, self.reason)?;
        if let Some(rule) = &self.rule {
            write!(f, " (rule {rule})")?;
        }
        writeln!(f)?;
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
        }
        Ok(())
    }
}
