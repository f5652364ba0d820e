//! Raw tree → [`Settings`], collecting every problem with its path; one file per section of
//! the policy, each an `impl Validator` block.

mod credentials;
mod dpop;
pub(super) mod hosts;
mod ip_limits;
mod issuers;
mod listen;
mod response;
mod routes;
mod runtime;
mod tenants;

use super::listen::ListenAddr;
use super::schema::*;
use super::settings::{LogFormat, RevocationLifetimes, Settings, Snapshot};
use super::{ConfigError, Problems};
use crate::cache::CacheSettings;
use crate::config::settings::{AdminSettings, AdminToken};
use crate::decision::{
    Access, ApiKeyPolicy, AutoBlock, CidrSet, ClaimMatcher, ClaimTest, CredentialPolicy, CsrfPolicy, DoubleSubmit,
    HostMatch, IdentityHeader, IdentitySource, IpPolicy, IssuerRules, MemberTable, OnStale, PathMatch, PersonalTenant,
    Policy, RateKey, RateScope, RateTier, Requirements, ResponsePolicy, Route, RouteMatch, SessionPolicy, StepUp,
    TenantPolicy, TenantSource, TimePolicy, ValueMatcher, ValueTest, parse_cidr,
};
use crate::jwt::fetch::JwksJob;
use crate::jwt::remote::{RemoteJwks, RemoteSource, check_url};
use crate::jwt::{
    Alg, AlgFamily, IssuerVerifier, KeySet, KeyStore, TokenType, Verifier, keys_from_hmac_secret, keys_from_jwks,
    keys_from_pem,
};
use crate::state::{RedisSettings, RedisTarget, RedisTls, Secret, StateBackend};
use crate::telemetry::audit::AuditSettings;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Where an issuer's keys come from.
enum KeySource {
    Fixed(KeySet),
    Remote(RemoteJwks),
}

/// The built-in development issuer; refused unless the file says `dev: true`.
pub const DEV_ISSUER: &str = "urn:portcullis:dev";
const MAX_LEEWAY: Duration = Duration::from_secs(300);

/// `response.security_headers: true`: the set a browser-facing API should send.
const DEFAULT_SECURITY_HEADERS: [(&str, &str); 4] = [
    ("strict-transport-security", "max-age=31536000; includeSubDomains"),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
];

/// Reads, parses and validates a policy file. Relative paths in it are resolved from its folder.
pub fn load_file(path: &Path) -> Result<Settings, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut settings = parse_and_validate_named(&text, &base, &path.display().to_string())?;
    settings.sources.insert(0, super::sources::of_content(path, Some(text.as_bytes())));
    Ok(settings)
}

/// [`parse_and_validate_named`] for text that has no file name (messages say `policy`).
pub fn parse_and_validate(text: &str, base: &Path) -> Result<Settings, ConfigError> {
    parse_and_validate_named(text, base, "policy")
}

/// Parses and validates a policy named `name` in messages: every problem — unknown keys, wrong
/// types, bad values — at once, each with `name:line:column` and its path.
pub fn parse_and_validate_named(text: &str, base: &Path, name: &str) -> Result<Settings, ConfigError> {
    let (mut raw, source, structural) = super::source::read::<RawConfig>(text, name)?;
    let merged = super::include::merge(&mut raw, &source, base);
    let mut v = Validator {
        base: base.to_path_buf(),
        problems: Problems::default(),
        warnings: merged.warnings.clone(),
        sources: merged.watched.clone(),
    };
    let mut settings = v.settings(raw);
    if let Some(snapshot) = settings.as_mut().and_then(|s| Arc::get_mut(&mut s.snapshot)) {
        use sha2::Digest;
        let digest = sha2::Sha256::new().chain_update(text.as_bytes()).chain_update(&merged.texts).finalize();
        snapshot.hash = hex::encode(&digest[..6]).into();
    }
    // Warnings that name a path (`ip.trusted_cidrs: …`) are placed in their file like problems.
    if let Some(settings) = settings.as_mut() {
        settings.warnings = std::mem::take(&mut settings.warnings)
            .into_iter()
            .map(|warning| match warning.split_once(": ") {
                Some((path, message)) if !path.contains(' ') && !path.is_empty() => {
                    let placed = merged.relocate(&source, super::Problem::new(path, message));
                    if placed.at.as_ref().is_some_and(|at| at.line > 0) { placed.to_string() } else { warning }
                }
                _ => warning,
            })
            .collect();
    }
    let mut problems = Problems::located(structural, &source).0;
    problems.extend(merged.problems.iter().cloned());
    for problem in v.problems.0 {
        problems.push(merged.relocate(&source, problem));
    }
    // In reading order: by file, then line and column.
    problems.sort_by(|a, b| a.at.cmp(&b.at));
    match settings {
        Some(s) if problems.is_empty() => Ok(s),
        _ => Err(ConfigError::Invalid(Problems(problems))),
    }
}

struct Validator {
    base: PathBuf,
    problems: Problems,
    /// Valid but probably not meant: `path: message`, printed by check-config and at start.
    warnings: Vec<String>,
    /// Files read while validating.
    sources: super::sources::Fingerprints,
}

fn is_header_name(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.'))
}

impl Validator {
    pub(super) fn duration(&mut self, path: &str, value: Option<&str>, default: Duration) -> Duration {
        match value {
            None => default,
            Some(s) => humantime::parse_duration(s).unwrap_or_else(|_| {
                self.problems.add(path, format!("\"{s}\" is not a duration (like 30s, 5m, 1h)"));
                default
            }),
        }
    }

    pub(super) fn read(&mut self, path: &str, file: &str) -> Option<Vec<u8>> {
        let full = self.base.join(file);
        match std::fs::read(&full) {
            Ok(bytes) => {
                self.sources.push(super::sources::of_content(&full, Some(&bytes)));
                Some(bytes)
            }
            Err(e) => {
                self.sources.push(super::sources::of_content(&full, None));
                self.problems.add(path, format!("cannot read {}: {e}", full.display()));
                None
            }
        }
    }

    pub(super) fn settings(&mut self, raw: RawConfig) -> Option<Settings> {
        if let Some(version) = raw.version
            && version != 1
        {
            self.problems.add("version", format!("unsupported version {version}; this release reads version 1"));
        }
        let grpc = ListenAddr::parse(raw.listen.grpc.as_deref().unwrap_or("127.0.0.1:9191"), true)
            .map_err(|e| self.problems.add("listen.grpc", e))
            .ok();
        let health = raw
            .listen
            .health
            .as_deref()
            .unwrap_or("127.0.0.1:9190")
            .parse()
            .map_err(|_| self.problems.add("listen.health", "expected host:port with an IP address"))
            .ok();
        let admin = self.admin(raw.listen.admin.as_deref(), raw.admin.as_ref());
        let listen = self.listen_options(&raw.listen, grpc.as_ref(), raw.dev);
        let callers = self.callers(raw.listen.callers.as_ref(), grpc.as_ref());
        let cache = self.cache(raw.cache.as_ref());
        let max_inflight_checks = raw.limits.max_inflight_checks.unwrap_or(4096);
        if max_inflight_checks == 0 {
            self.problems.add("limits.max_inflight_checks", "must be at least 1");
        }
        let sessions = raw.sessions.as_ref().map(|s| self.sessions(s));
        let (state, on_stale) = raw.state.as_ref().map(|s| self.state(s)).unwrap_or_default();
        // The memory backend without a journal keeps run-time state in this process only: a
        // policy that writes such state says it knows (issue 32), or is refused.
        let acknowledged = raw.state.as_ref().and_then(|s| s.acknowledge_ephemeral_state) == Some(true);
        let writes_state =
            admin.is_some() || raw.ip.as_ref().is_some_and(|ip| ip.auto_block.is_some()) || raw.sessions.is_some();
        let needs_durable_state = writes_state && !acknowledged && !raw.dev;
        if matches!(state, StateBackend::Memory { dir: None }) && needs_durable_state {
            let mut forgotten = Vec::new();
            if admin.is_some() {
                forgotten.push("revocations, blocks, members and API keys written through the admin API");
            }
            if raw.ip.as_ref().is_some_and(|ip| ip.auto_block.is_some()) {
                forgotten.push("auto-blocks");
            }
            if raw.sessions.is_some() {
                forgotten.push("session last-seen times");
            }
            if !forgotten.is_empty() {
                self.problems.add(
                    "state",
                    format!(
                        "the memory backend keeps {} in this process only: a restart (a rollout, an eviction) forgets them and lets a revoked token or a blocked client in again; set state.dir to a persistent folder, use backend: redis, or set state.acknowledge_ephemeral_state: true",
                        forgotten.join(", ")
                    ),
                );
            }
        }
        let log_format = match raw.telemetry.log_format.as_deref() {
            None | Some("json") => LogFormat::Json,
            Some("text") => LogFormat::Text,
            Some(other) => {
                self.problems.add("telemetry.log_format", format!("\"{other}\" is not json or text"));
                LogFormat::Json
            }
        };
        let otlp_endpoint = raw.telemetry.otlp_endpoint.clone();
        if let Some(endpoint) = &otlp_endpoint
            && reqwest::Url::parse(endpoint).map(|u| !matches!(u.scheme(), "http" | "https")).unwrap_or(true)
        {
            self.problems.add("telemetry.otlp_endpoint", format!("\"{endpoint}\" is not an http(s) URL"));
        }
        let audit = self.audit(raw.telemetry.audit.as_ref());
        let drain_delay =
            self.duration("shutdown.drain_delay", raw.shutdown.drain_delay.as_deref(), super::DEFAULT_DRAIN_DELAY);
        let drain_timeout =
            self.duration("shutdown.drain_timeout", raw.shutdown.drain_timeout.as_deref(), Duration::from_secs(20));

        let (mut verifier, rules, jwks_jobs) = self.issuers(&raw.issuers, raw.dev);
        // A token a jti revocation covers was issued at most a leeway (and the skew margin)
        // after it and is accepted at most max_token_age + leeway after that; without
        // max_token_age nothing bounds it.
        let revocation_lifetimes = RevocationLifetimes(
            verifier
                .issuers
                .iter()
                .zip(&rules)
                .map(|(i, r)| {
                    let horizon = r.time.max_token_age.map(|age| {
                        age.saturating_add(r.time.leeway.saturating_mul(2))
                            .saturating_add(crate::state::model::REVOCATION_SKEW_MARGIN_SECS)
                    });
                    (i.issuer.clone(), horizon)
                })
                .collect(),
        );
        let (credentials, api_keys, csrf) = self.credentials(&raw.credentials);
        // Concrete names: an issuer template stands for one issuer per tenant it lists.
        let concrete_names: Vec<String> = verifier.issuers.iter().map(|i| i.issuer.to_string()).collect();
        let issuer_names: Vec<&str> = concrete_names.iter().map(String::as_str).collect();
        let tiers = self.tiers(raw.rate_limits.as_ref());
        let fallback_replicas =
            self.fleet_checks(raw.rate_limits.as_ref(), &tiers, matches!(state, StateBackend::Redis(_)));
        let dry_run_default = raw.mode.as_deref().is_some_and(|m| self.mode("mode", m));
        let routes = self.routes(&raw.routes, &issuer_names, &tiers, dry_run_default);
        let tenants = raw.tenants.as_ref().and_then(|t| self.tenants(t, &issuer_names));
        self.shadowed_routes(&routes);
        if let Some(claim) = tenants.as_ref().and_then(|t| t.claim.as_deref())
            && !rules.iter().any(|r| r.trusted_claims.iter().any(|c| c == claim.trim_start_matches('/')))
        {
            self.warnings.push(format!(
                "tenants.membership.claim: \"{claim}\" is trusted by no issuer, so it never proves membership and every member is denied tenant_forbidden; add it to the issuers' trusted_claims"
            ));
        }
        if raw.tenants.is_none() {
            for (i, route) in routes.iter().enumerate() {
                let req = match &route.access {
                    Access::Optional(r) | Access::Required(r) => r,
                    Access::Public | Access::Deny(_) => continue,
                };
                if req.tenant {
                    // By merged index, which relocation maps to the route's own file and index.
                    self.problems.add(format!("routes[{i}].require.tenant"), "require.tenant needs a tenants section");
                }
            }
        }
        let response = self.response(&raw.response, raw.credentials.realm.as_deref(), raw.tenants.is_some());
        let ip = raw.ip.as_ref().map(|i| self.ip(i)).unwrap_or_default();
        self.trap_warnings(&ip, &tiers);
        // DPoP is spoken when configured, or when an issuer or a route names it.
        let dpop_named = raw.issuers.iter().any(|i| i.sender_constraint.as_ref().is_some_and(|s| s.dpop.is_some()))
            || routes.iter().any(|r| match &r.access {
                crate::decision::Access::Optional(req) | crate::decision::Access::Required(req) => {
                    req.sender_constraint.dpop == crate::decision::Constraint::Required
                }
                _ => false,
            });
        let dpop = self.dpop(raw.dpop.as_ref(), dpop_named);
        let mut credentials = credentials;
        credentials.dpop = dpop.is_some();
        credentials.dpop_authorities = self.dpop_authorities(raw.dpop.as_ref());
        if dpop.is_some() && matches!(state, StateBackend::Memory { .. }) {
            self.warnings.push("dpop: on the memory backend each replica remembers only the proofs it saw; with several replicas a proof can be replayed to another one: use state.backend: redis".into());
        }
        let mtls_named = rules
            .iter()
            .chain(std::iter::empty())
            .any(|r| r.sender_constraint.mtls == crate::decision::Constraint::Required)
            || raw.issuers.iter().any(|i| i.sender_constraint.as_ref().is_some_and(|s| s.mtls.is_some()));
        if mtls_named {
            self.warnings.push("sender_constraint.mtls: certificate-bound tokens need the client certificate; Envoy forwards it only with ext_authz include_peer_certificate: true on a listener that asks for client certificates (the shipped configs set it)".into());
        }
        let policy = Policy {
            routes,
            credentials,
            response,
            issuers: rules,
            tenants,
            ip,
            api_keys,
            csrf,
            sessions,
            on_stale,
            dry_run_unrouted: dry_run_default,
            grammar: crate::decision::Grammar {
                header_underscores: raw.grammar.header_underscores.unwrap_or(false),
                query_arrays: raw.grammar.query_arrays.unwrap_or(false),
            },
            route_index: None,
        };
        let mut policy = policy;
        policy.route_index = Some(crate::decision::route_index::RouteIndex::new(&policy.routes));
        // Verified tokens keep only what this policy reads. A cached token verified under
        // another read set would lack a claim now read: the set is part of every issuer's
        // fingerprint, so a reload that changes it drops those entries.
        let kept: Arc<[String]> = policy.claims_read().into();
        for issuer in &mut verifier.issuers {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (issuer.fingerprint, &*kept).hash(&mut h);
            issuer.fingerprint = h.finish();
        }
        verifier.kept_claims = Some(kept);
        verifier.identity_headers = Some(policy.response.identity_headers.clone());
        Some(Settings {
            grpc: grpc?,
            health: health?,
            listen,
            callers,
            max_inflight_checks: usize::try_from(max_inflight_checks).unwrap_or(usize::MAX),
            dev: raw.dev,
            needs_durable_state,
            log_format,
            snapshot: Arc::new(Snapshot {
                policy,
                verifier,
                generation: 1,
                hash: Arc::from(""),
                admin_token: admin.as_ref().map(|(_, token)| token.clone()),
                revocation_lifetimes: Arc::new(revocation_lifetimes),
                dpop: dpop.map(Arc::new),
                rule_metrics: raw.telemetry.rule_metrics.unwrap_or(false),
            }),
            jwks_jobs,
            audit,
            otlp_endpoint,
            drain_delay,
            drain_timeout,
            cache,
            admin: admin.map(|(settings, _)| settings),
            state,
            sources: std::mem::take(&mut self.sources),
            warnings: std::mem::take(&mut self.warnings),
            fallback_replicas,
        })
    }
}
