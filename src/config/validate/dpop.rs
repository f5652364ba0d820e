//! `sender_constraint` (issuers, routes) and `dpop:` (proof algorithms, the `iat` window,
//! server nonces).

use super::Validator;
use crate::config::schema::{RawDpop, RawSenderConstraint};
use crate::config::settings::{DpopNonce, DpopSettings};
use crate::decision::{Constraint, SenderConstraint};
use std::time::Duration;

/// The proof algorithms accepted when `dpop.algorithms` names none.
const DEFAULT_ALGORITHMS: [&str; 5] = ["ES256", "ES384", "EdDSA", "PS256", "RS256"];

fn asymmetric(name: &str) -> Option<jsonwebtoken::Algorithm> {
    use jsonwebtoken::Algorithm::*;
    Some(match name {
        "ES256" => ES256,
        "ES384" => ES384,
        "EdDSA" => EdDSA,
        "PS256" => PS256,
        "PS384" => PS384,
        "PS512" => PS512,
        "RS256" => RS256,
        "RS384" => RS384,
        "RS512" => RS512,
        _ => return None,
    })
}

impl Validator {
    /// `dpop.authorities` as the `htu` check compares them: lowercase, default port dropped.
    pub(super) fn dpop_authorities(&mut self, raw: Option<&RawDpop>) -> Vec<String> {
        let mut out = Vec::new();
        for (j, authority) in raw.map(|r| r.authorities.as_slice()).unwrap_or_default().iter().enumerate() {
            match crate::decision::binding::normalize_htu(&format!("https://{authority}/")) {
                Some(_) if !authority.contains('/') => out.push(crate::decision::binding::bare_authority(authority)),
                _ => self
                    .problems
                    .add(format!("dpop.authorities[{j}]"), format!("\"{authority}\" is not host or host:port")),
            }
        }
        out
    }

    pub(super) fn sender_constraint(&mut self, p: &str, raw: Option<&RawSenderConstraint>) -> SenderConstraint {
        let Some(raw) = raw else { return SenderConstraint::default() };
        let mut one = |field: &str, value: Option<&str>| match value {
            None | Some("allowed") => Constraint::Allowed,
            Some("required") => Constraint::Required,
            Some(other) => {
                self.problems
                    .add(format!("{p}.sender_constraint.{field}"), format!("\"{other}\" is not required or allowed"));
                Constraint::Allowed
            }
        };
        SenderConstraint { dpop: one("dpop", raw.dpop.as_deref()), mtls: one("mtls", raw.mtls.as_deref()) }
    }

    /// DPoP's settings when the policy speaks DPoP (`dpop:` present, or `mentioned` by a
    /// `sender_constraint`).
    pub(super) fn dpop(&mut self, raw: Option<&RawDpop>, mentioned: bool) -> Option<DpopSettings> {
        if raw.is_none() && !mentioned {
            return None;
        }
        let default = RawDpop::default();
        let raw = raw.unwrap_or(&default);
        let names: Vec<String> = if raw.algorithms.is_empty() {
            DEFAULT_ALGORITHMS.iter().map(|a| a.to_string()).collect()
        } else {
            raw.algorithms.clone()
        };
        let mut algorithms = Vec::new();
        for (j, name) in names.iter().enumerate() {
            match asymmetric(name) {
                Some(alg) => algorithms.push(alg),
                None if name.starts_with("HS") => self.problems.add(
                    format!("dpop.algorithms[{j}]"),
                    format!("\"{name}\" is symmetric: a shared secret proves no possession of a key"),
                ),
                None => self.problems.add(format!("dpop.algorithms[{j}]"), format!("unknown algorithm \"{name}\"")),
            }
        }
        let max_age = self.duration("dpop.max_age", raw.max_age.as_deref(), Duration::from_secs(60));
        let leeway = self.duration("dpop.leeway", raw.leeway.as_deref(), Duration::from_secs(5));
        if max_age < Duration::from_secs(1) || max_age > Duration::from_secs(3600) {
            self.problems.add("dpop.max_age", "must be from 1s to 1h");
        }
        if leeway > Duration::from_secs(300) {
            self.problems.add("dpop.leeway", "must be at most 5m");
        }
        let nonce = raw.nonce.as_ref().map(|n| {
            let rotate = self.duration("dpop.nonce.rotate", n.rotate.as_deref(), Duration::from_secs(300));
            if rotate < Duration::from_secs(10) {
                self.problems.add("dpop.nonce.rotate", "must be at least 10s");
            }
            let secret =
                n.secret_file.as_ref().and_then(|f| self.read("dpop.nonce.secret_file", f)).and_then(|bytes| {
                    let trimmed = bytes.trim_ascii().to_vec();
                    if trimmed.len() < 32 {
                        self.problems.add("dpop.nonce.secret_file", "needs at least 32 bytes");
                        return None;
                    }
                    Some(trimmed)
                });
            DpopNonce { secret, rotate_secs: rotate.as_secs().max(1) as i64 }
        });
        Some(DpopSettings {
            algorithms,
            max_age_secs: max_age.as_secs() as i64,
            leeway_secs: leeway.as_secs() as i64,
            nonce,
        })
    }
}
