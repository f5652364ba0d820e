//! Raw tree → [`Settings`], collecting every problem with its path.

use super::listen::ListenAddr;
use super::schema::*;
use super::settings::{LogFormat, RevocationLifetimes, Settings, Snapshot};
use super::{ConfigError, Problems};
use crate::cache::CacheSettings;
use crate::config::settings::{AdminSettings, AdminToken};
use crate::decision::{
    Access, ApiKeyPolicy, AutoBlock, CidrSet, ClaimMatcher, ClaimTest, CredentialPolicy, CsrfPolicy, DoubleSubmit,
    HostMatch, IdentityHeader, IdentitySource, IpPolicy, IssuerRules, MemberTable, PathMatch, PersonalTenant, Policy,
    RateKey, RateTier, Requirements, ResponsePolicy, Route, RouteMatch, SessionPolicy, StepUp, TenantPolicy,
    TenantSource, TimePolicy, parse_cidr,
};
use crate::jwt::fetch::JwksJob;
use crate::jwt::remote::{RemoteJwks, RemoteSource, check_url};
use crate::jwt::{
    Alg, AlgFamily, IssuerVerifier, KeySet, KeyStore, TokenType, Verifier, keys_from_hmac_secret, keys_from_jwks,
    keys_from_pem,
};
use crate::state::{RedisSettings, Secret, StateBackend};
use crate::telemetry::audit::AuditSettings;
use std::collections::HashMap;
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
    let mut settings = parse_and_validate(&text, &base)?;
    settings.sources.insert(0, path.to_path_buf());
    Ok(settings)
}

pub fn parse_and_validate(text: &str, base: &Path) -> Result<Settings, ConfigError> {
    let raw: RawConfig = serde_saphyr::from_str(text).map_err(|e| ConfigError::Parse(format!("invalid YAML: {e}")))?;
    let mut v = Validator { base: base.to_path_buf(), problems: Problems::default(), sources: Vec::new() };
    let settings = v.settings(raw);
    match settings {
        Some(s) if v.problems.0.is_empty() => Ok(s),
        _ => Err(ConfigError::Invalid(v.problems)),
    }
}

struct Validator {
    base: PathBuf,
    problems: Problems,
    /// Files read while validating.
    sources: Vec<PathBuf>,
}

fn is_header_name(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.'))
}

impl Validator {
    fn duration(&mut self, path: &str, value: Option<&str>, default: Duration) -> Duration {
        match value {
            None => default,
            Some(s) => humantime::parse_duration(s).unwrap_or_else(|_| {
                self.problems.add(path, format!("\"{s}\" is not a duration (like 30s, 5m, 1h)"));
                default
            }),
        }
    }

    fn read(&mut self, path: &str, file: &str) -> Option<Vec<u8>> {
        let full = self.base.join(file);
        self.sources.push(full.clone());
        match std::fs::read(&full) {
            Ok(bytes) => Some(bytes),
            Err(e) => {
                self.problems.add(path, format!("cannot read {}: {e}", full.display()));
                None
            }
        }
    }

    fn settings(&mut self, raw: RawConfig) -> Option<Settings> {
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
        let cache = self.cache(raw.cache.as_ref());
        let max_inflight_checks = raw.limits.max_inflight_checks.unwrap_or(4096);
        if max_inflight_checks == 0 {
            self.problems.add("limits.max_inflight_checks", "must be at least 1");
        }
        let sessions = raw.sessions.as_ref().map(|s| self.sessions(s));
        let state = raw.state.as_ref().map(|s| self.state(s)).unwrap_or_default();
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
        let drain_delay = self.duration("shutdown.drain_delay", raw.shutdown.drain_delay.as_deref(), Duration::ZERO);
        let drain_timeout =
            self.duration("shutdown.drain_timeout", raw.shutdown.drain_timeout.as_deref(), Duration::from_secs(20));

        let (verifier, rules, jwks_jobs) = self.issuers(&raw.issuers, raw.dev);
        // No token of an issuer outlives max_token_age + leeway, so neither need its
        // revocations; without max_token_age nothing bounds them.
        let revocation_lifetimes = RevocationLifetimes(
            verifier
                .issuers
                .iter()
                .zip(&rules)
                .map(|(i, r)| (i.issuer.clone(), r.time.max_token_age.map(|age| age.saturating_add(r.time.leeway))))
                .collect(),
        );
        let (credentials, api_keys, csrf) = self.credentials(&raw.credentials);
        let issuer_names: Vec<&str> = raw.issuers.iter().filter_map(|i| i.issuer.as_deref()).collect();
        let tiers = self.tiers(raw.rate_limits.as_ref());
        let routes = self.routes(&raw.routes, &issuer_names, &tiers);
        let tenants = raw.tenants.as_ref().and_then(|t| self.tenants(t, &issuer_names));
        if raw.tenants.is_none() {
            for route in &routes {
                let req = match &route.access {
                    Access::Optional(r) | Access::Required(r) => r,
                    Access::Public => continue,
                };
                if req.tenant {
                    self.problems.add(&route.name, "require.tenant needs a tenants section");
                }
            }
        }
        let response = self.response(&raw.response, raw.credentials.realm.as_deref(), raw.tenants.is_some());
        let ip = raw.ip.as_ref().map(|i| self.ip(i)).unwrap_or_default();
        let policy = Policy { routes, credentials, response, issuers: rules, tenants, ip, api_keys, csrf, sessions };
        Some(Settings {
            grpc: grpc?,
            health: health?,
            max_inflight_checks: usize::try_from(max_inflight_checks).unwrap_or(usize::MAX),
            dev: raw.dev,
            log_format,
            snapshot: Arc::new(Snapshot {
                policy,
                verifier,
                generation: 1,
                admin_token: admin.as_ref().map(|(_, token)| token.clone()),
                revocation_lifetimes,
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
        })
    }

    fn admin(&mut self, listen: Option<&str>, raw: Option<&RawAdmin>) -> Option<(AdminSettings, AdminToken)> {
        let token_file = raw.and_then(|a| a.token_file.as_deref());
        let Some(listen) = listen else {
            if raw.is_some() {
                self.problems.add("admin", "needs listen.admin");
            }
            return None;
        };
        let addr =
            listen.parse().map_err(|_| self.problems.add("listen.admin", "expected host:port with an IP address")).ok();
        let Some(file) = token_file else {
            self.problems.add("admin.token_file", "required with listen.admin (the admin API always needs a token)");
            return None;
        };
        let bytes = self.read("admin.token_file", file)?;
        let token = String::from_utf8(bytes).map(|t| t.trim().to_string()).unwrap_or_default();
        if token.len() < 16 || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
            self.problems.add("admin.token_file", "the token must be at least 16 visible characters");
            return None;
        }
        Some((AdminSettings { addr: addr? }, AdminToken::new(token)))
    }

    fn state(&mut self, raw: &RawState) -> StateBackend {
        let redis_only = [
            (raw.url.is_some(), "url"),
            (raw.username.is_some(), "username"),
            (raw.password_file.is_some(), "password_file"),
            (raw.key_prefix.is_some(), "key_prefix"),
            (raw.resync_interval.is_some(), "resync_interval"),
        ];
        match raw.backend.as_str() {
            "memory" => {
                for (present, field) in redis_only {
                    if present {
                        self.problems.add(format!("state.{field}"), "only applies with backend: redis");
                    }
                }
                StateBackend::Memory
            }
            "redis" => {
                let url = raw.url.clone().unwrap_or_default();
                if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                    self.problems
                        .add("state.url", "required with backend: redis (redis://host:port or rediss://host:port)");
                } else if url
                    .split_once("://")
                    .is_some_and(|(_, rest)| rest.split('/').next().unwrap_or("").contains('@'))
                {
                    self.problems.add("state.url", "put credentials in username and password_file, not in the URL");
                }
                let password = raw.password_file.as_ref().and_then(|f| {
                    let bytes = self.read("state.password_file", f)?;
                    Some(Secret::new(String::from_utf8_lossy(&bytes).trim_end_matches(['\r', '\n']).to_string()))
                });
                let max_staleness =
                    self.duration("state.max_staleness", raw.max_staleness.as_deref(), Duration::from_secs(30));
                if max_staleness < Duration::from_secs(1) {
                    self.problems.add("state.max_staleness", "must be at least 1s");
                }
                let resync_interval =
                    self.duration("state.resync_interval", raw.resync_interval.as_deref(), Duration::from_secs(300));
                if resync_interval < Duration::from_secs(1) {
                    self.problems.add("state.resync_interval", "must be at least 1s");
                }
                let key_prefix = raw.key_prefix.clone().unwrap_or_else(|| "portcullis".into());
                if key_prefix.is_empty() || key_prefix.contains(['*', '?', '[', ' ']) {
                    self.problems.add("state.key_prefix", "must be non-empty without glob characters or spaces");
                }
                StateBackend::Redis(RedisSettings {
                    url,
                    username: raw.username.clone(),
                    password,
                    key_prefix,
                    max_staleness,
                    fail_open_when_stale: raw.fail_open_when_stale.unwrap_or(false),
                    resync_interval,
                })
            }
            other => {
                self.problems.add("state.backend", format!("unknown backend \"{other}\" (memory or redis)"));
                StateBackend::Memory
            }
        }
    }

    fn cidrs(&mut self, path: &str, inline: &[String], files: &[String]) -> CidrSet {
        let mut set = CidrSet::default();
        for (i, text) in inline.iter().enumerate() {
            match parse_cidr(text) {
                Ok(net) => set.insert(net),
                Err(e) => self.problems.add(format!("{path}[{i}]"), e),
            }
        }
        for (i, file) in files.iter().enumerate() {
            let p = format!("{path}_files[{i}]");
            let Some(bytes) = self.read(&p, file) else { continue };
            if let Err(e) = set.extend_from_lines(&String::from_utf8_lossy(&bytes)) {
                self.problems.add(&p, e);
            }
        }
        set
    }

    fn ip(&mut self, raw: &RawIp) -> IpPolicy {
        let allow = self.cidrs("ip.allow", &raw.allow, &raw.allow_files);
        let deny = self.cidrs("ip.deny", &raw.deny, &raw.deny_files);
        let trusted = self.cidrs("ip.trusted_cidrs", &raw.trusted_cidrs, &[]);
        let auto_block = raw.auto_block.as_ref().map(|a| {
            let window = self.duration("ip.auto_block.window", Some(&a.window), Duration::from_secs(900));
            let block_for = self.duration("ip.auto_block.block_for", Some(&a.block_for), Duration::from_secs(1800));
            if a.failures == 0 {
                self.problems.add("ip.auto_block.failures", "must be at least 1");
            }
            for (name, d) in [("window", window), ("block_for", block_for)] {
                if d < Duration::from_secs(1) {
                    self.problems.add(format!("ip.auto_block.{name}"), "must be at least 1s");
                }
            }
            AutoBlock {
                failures: a.failures,
                window_secs: window.as_secs() as i64,
                block_for_secs: block_for.as_secs() as i64,
            }
        });
        IpPolicy { allow, deny, trusted, auto_block }
    }

    fn cache(&mut self, raw: Option<&RawCache>) -> CacheSettings {
        let defaults = CacheSettings::default();
        let Some(raw) = raw else { return defaults };
        let ttl = self.duration("cache.ttl", raw.ttl.as_deref(), defaults.ttl);
        if ttl.subsec_nanos() != 0 {
            // Entries expire by the whole-second clock the core uses.
            self.problems.add("cache.ttl", "must be whole seconds (0s turns caching off)");
        }
        let max_entries = raw.max_entries.unwrap_or(defaults.max_entries);
        if max_entries == 0 {
            self.problems.add("cache.max_entries", "must be at least 1 (set ttl: 0s to disable caching)");
        }
        CacheSettings { ttl, max_entries }
    }

    fn audit(&mut self, raw: Option<&RawAudit>) -> AuditSettings {
        let Some(raw) = raw else {
            return AuditSettings::default();
        };
        let allow_sample_rate = raw.allow_sample_rate.unwrap_or(1.0);
        if !(0.0..=1.0).contains(&allow_sample_rate) {
            self.problems.add("telemetry.audit.allow_sample_rate", "must be between 0.0 and 1.0");
        }
        let file = raw.file.as_ref().map(|f| self.base.join(f));
        if let Some(parent) = file.as_ref().and_then(|f| f.parent())
            && !parent.as_os_str().is_empty()
            && !parent.is_dir()
        {
            self.problems.add("telemetry.audit.file", format!("folder {} does not exist", parent.display()));
        }
        AuditSettings { file, allow_sample_rate }
    }

    fn issuers(&mut self, raw: &[RawIssuer], dev: bool) -> (Verifier, Vec<IssuerRules>, Vec<JwksJob>) {
        let mut verifier = Verifier::default();
        let mut jobs = Vec::new();
        let mut rules = Vec::new();
        if raw.is_empty() {
            self.problems.add("issuers", "at least one issuer is required");
        }
        for (i, issuer) in raw.iter().enumerate() {
            let p = format!("issuers[{i}]");
            let name = issuer.issuer.clone().unwrap_or_default();
            if name.is_empty() {
                self.problems.add(format!("{p}.issuer"), "required");
            } else if name == DEV_ISSUER && !dev {
                self.problems.add(
                    format!("{p}.issuer"),
                    format!("the development issuer {DEV_ISSUER} is only allowed with `dev: true`"),
                );
            }
            if raw[..i].iter().any(|other| other.issuer == issuer.issuer) {
                self.problems.add(format!("{p}.issuer"), format!("duplicate issuer \"{name}\""));
            }
            if issuer.audiences.is_empty() {
                self.problems.add(format!("{p}.audiences"), "at least one audience is required");
            }
            let algorithms = self.algorithms(&p, &issuer.algorithms);
            let store = match self.keys(&p, issuer, &algorithms) {
                Some(KeySource::Fixed(set)) => Arc::new(KeyStore::fixed(set)),
                Some(KeySource::Remote(remote)) => {
                    let store = Arc::new(KeyStore::remote());
                    jobs.push(JwksJob { issuer: Arc::from(name.as_str()), store: store.clone(), remote });
                    store
                }
                None => Arc::new(KeyStore::fixed(KeySet::default())),
            };
            let leeway = self.duration(&format!("{p}.leeway"), issuer.leeway.as_deref(), Duration::from_secs(30));
            if leeway > MAX_LEEWAY {
                self.problems.add(format!("{p}.leeway"), "must be at most 5m");
            }
            let max_token_age = issuer
                .max_token_age
                .as_deref()
                .map(|s| self.duration(&format!("{p}.max_token_age"), Some(s), Duration::ZERO).as_secs() as i64);
            let token_type = issuer.token_type.as_ref().map(|tt| {
                if tt.claim.is_empty() || tt.allowed.is_empty() {
                    self.problems.add(format!("{p}.token_type"), "needs a claim and at least one allowed value");
                }
                TokenType { claim: tt.claim.clone(), allowed: tt.allowed.clone() }
            });
            let roles_pointer = issuer.roles_claim.clone().unwrap_or_else(|| "/roles".into());
            if !roles_pointer.starts_with('/') {
                self.problems.add(format!("{p}.roles_claim"), "must be a JSON Pointer starting with '/'");
            }
            verifier.issuers.push(IssuerVerifier {
                issuer: Arc::from(name.as_str()),
                audiences: issuer.audiences.clone(),
                algorithms,
                keys: store,
                required: issuer.required.unwrap_or(true),
                required_claims: issuer.required_claims.clone(),
                token_type,
                header_typ: issuer.header_typ.iter().map(|t| crate::jwt::normalize_typ(t)).collect(),
            });
            rules.push(IssuerRules {
                time: TimePolicy { leeway: leeway.as_secs() as i64, max_token_age },
                roles_pointer,
                trusted_claims: issuer.trusted_claims.iter().map(|c| c.trim_start_matches('/').to_string()).collect(),
            });
        }
        (verifier, rules, jobs)
    }

    fn algorithms(&mut self, p: &str, raw: &[String]) -> Vec<Alg> {
        if raw.is_empty() {
            self.problems.add(format!("{p}.algorithms"), "at least one algorithm is required");
        }
        let mut algs = Vec::new();
        for (j, name) in raw.iter().enumerate() {
            match name.parse::<Alg>() {
                Ok(alg) => algs.push(alg),
                Err(()) if name.eq_ignore_ascii_case("none") => {
                    self.problems.add(format!("{p}.algorithms[{j}]"), "\"none\" is never allowed");
                }
                Err(()) => self.problems.add(format!("{p}.algorithms[{j}]"), format!("unknown algorithm \"{name}\"")),
            }
        }
        let hmac = algs.iter().any(|a| a.family() == AlgFamily::Hmac);
        if hmac && algs.iter().any(|a| a.family() != AlgFamily::Hmac) {
            self.problems.add(format!("{p}.algorithms"), "an issuer never mixes HS* with asymmetric algorithms");
        }
        algs
    }

    fn keys(&mut self, p: &str, issuer: &RawIssuer, algs: &[Alg]) -> Option<KeySource> {
        let sources = [issuer.jwks.is_some(), issuer.pem_files.is_some(), issuer.hmac_secret_file.is_some()];
        if sources.iter().filter(|s| **s).count() != 1 {
            self.problems.add(p, "exactly one of jwks, pem_files or hmac_secret_file is required");
            return None;
        }
        let hmac = algs.iter().any(|a| a.family() == AlgFamily::Hmac);
        if let Some(file) = &issuer.hmac_secret_file {
            if algs.iter().any(|a| a.family() != AlgFamily::Hmac) {
                self.problems.add(format!("{p}.hmac_secret_file"), "an HMAC secret only verifies HS* algorithms");
            }
            let bytes = self.read(&format!("{p}.hmac_secret_file"), file)?;
            return keys_from_hmac_secret(&bytes, algs)
                .map_err(|e| self.problems.add(format!("{p}.hmac_secret_file"), e))
                .ok()
                .map(KeySource::Fixed);
        }
        if hmac {
            self.problems
                .add(format!("{p}.algorithms"), "HS* algorithms need hmac_secret_file (never a JWKS or PEM key)");
        }
        if let Some(files) = &issuer.pem_files {
            if files.is_empty() {
                self.problems.add(format!("{p}.pem_files"), "at least one file is required");
            }
            let mut set = KeySet::default();
            for (j, file) in files.iter().enumerate() {
                let path = format!("{p}.pem_files[{j}]");
                let Some(bytes) = self.read(&path, file) else {
                    continue;
                };
                let text = String::from_utf8_lossy(&bytes);
                match keys_from_pem(&text, None) {
                    Ok(key) => set.keys.push(key),
                    Err(e) => self.problems.add(&path, e),
                }
            }
            if set.keys.len() == files.len() {
                for why in set.unusable_algs(algs) {
                    self.problems.add(format!("{p}.pem_files"), why);
                }
            }
            return Some(KeySource::Fixed(set));
        }
        let jwks = issuer.jwks.as_ref()?;
        let jp = format!("{p}.jwks");
        let sources = [jwks.file.is_some(), jwks.inline.is_some(), jwks.url.is_some(), jwks.discovery.is_some()];
        if sources.iter().filter(|s| **s).count() != 1 {
            self.problems.add(&jp, "exactly one of file, inline, url or discovery is required");
            return None;
        }
        if jwks.url.is_some() || jwks.discovery.is_some() {
            return self.remote_jwks(&jp, jwks).map(KeySource::Remote);
        }
        for (present, field) in [
            (jwks.refresh.is_some(), "refresh"),
            (jwks.fallback_file.is_some(), "fallback_file"),
            (jwks.max_stale.is_some(), "max_stale"),
            (jwks.refetch_interval.is_some(), "refetch_interval"),
            (jwks.insecure_http.is_some(), "insecure_http"),
            (jwks.ca_file.is_some(), "ca_file"),
        ] {
            if present {
                self.problems.add(format!("{jp}.{field}"), "only applies with url or discovery");
            }
        }
        let text = match (&jwks.file, &jwks.inline) {
            (Some(file), _) => String::from_utf8_lossy(&self.read(&format!("{jp}.file"), file)?).into_owned(),
            (None, Some(serde_json::Value::String(s))) => s.clone(),
            (None, Some(value)) => value.to_string(),
            (None, None) => return None,
        };
        let set = keys_from_jwks(&text).map_err(|e| self.problems.add(&jp, e)).ok()?;
        if set.keys.is_empty() {
            self.problems.add(&jp, "no usable signing key");
        }
        for why in set.unusable_algs(algs) {
            self.problems.add(&jp, why);
        }
        Some(KeySource::Fixed(set))
    }

    fn remote_jwks(&mut self, jp: &str, jwks: &RawJwks) -> Option<RemoteJwks> {
        let insecure_http = jwks.insecure_http.unwrap_or(false);
        let source = match (&jwks.url, &jwks.discovery) {
            (Some(url), _) => {
                check_url(url, insecure_http).map_err(|e| self.problems.add(format!("{jp}.url"), e)).ok()?;
                RemoteSource::Url(url.clone())
            }
            (None, Some(base)) => {
                check_url(base, insecure_http).map_err(|e| self.problems.add(format!("{jp}.discovery"), e)).ok()?;
                RemoteSource::Discovery(base.clone())
            }
            (None, None) => return None,
        };
        let refresh = self.duration(&format!("{jp}.refresh"), jwks.refresh.as_deref(), Duration::from_secs(3600));
        let refetch_interval =
            self.duration(&format!("{jp}.refetch_interval"), jwks.refetch_interval.as_deref(), Duration::from_secs(30));
        let max_stale =
            self.duration(&format!("{jp}.max_stale"), jwks.max_stale.as_deref(), Duration::from_secs(86_400));
        for (name, value) in [("refresh", refresh), ("refetch_interval", refetch_interval), ("max_stale", max_stale)] {
            if value < Duration::from_secs(1) {
                self.problems.add(format!("{jp}.{name}"), "must be at least 1s");
            }
        }
        if max_stale < refresh {
            self.problems.add(format!("{jp}.max_stale"), "must not be shorter than refresh");
        }
        let fallback_file = jwks.fallback_file.as_ref().and_then(|file| {
            let path = self.base.join(file);
            let bytes = self.read(&format!("{jp}.fallback_file"), file)?;
            keys_from_jwks(&String::from_utf8_lossy(&bytes))
                .map_err(|e| self.problems.add(format!("{jp}.fallback_file"), e))
                .ok()?;
            Some(path)
        });
        let ca_pem = jwks.ca_file.as_ref().and_then(|file| {
            let bytes = self.read(&format!("{jp}.ca_file"), file)?;
            match reqwest::Certificate::from_pem_bundle(&bytes) {
                Ok(certs) if !certs.is_empty() => Some(bytes),
                _ => {
                    self.problems.add(format!("{jp}.ca_file"), "no PEM certificate in the file");
                    None
                }
            }
        });
        Some(RemoteJwks { source, refresh, refetch_interval, max_stale, fallback_file, ca_pem, insecure_http })
    }

    fn sessions(&mut self, raw: &RawSessions) -> SessionPolicy {
        let Some(idle) = raw.idle_timeout.as_deref() else {
            self.problems.add("sessions.idle_timeout", "required");
            return SessionPolicy { claim: String::new(), idle_timeout_secs: 0, granularity_secs: 0, required: false };
        };
        let idle_timeout = self.duration("sessions.idle_timeout", Some(idle), Duration::from_secs(1800));
        let granularity = self.duration("sessions.granularity", raw.granularity.as_deref(), Duration::from_secs(60));
        if idle_timeout < Duration::from_secs(2) {
            self.problems.add("sessions.idle_timeout", "must be at least 2s");
        }
        if granularity < Duration::from_secs(1) || granularity * 2 > idle_timeout {
            self.problems.add("sessions.granularity", "must be at least 1s and at most half of idle_timeout");
        }
        let claim = raw.claim.clone().unwrap_or_else(|| "/sid".into());
        if !claim.starts_with('/') {
            self.problems.add("sessions.claim", "must be a JSON Pointer starting with '/'");
        }
        SessionPolicy {
            claim,
            idle_timeout_secs: idle_timeout.as_secs() as i64,
            granularity_secs: granularity.as_secs() as i64,
            required: raw.required.unwrap_or(false),
        }
    }

    fn api_keys(&mut self, raw: &RawApiKeys) -> ApiKeyPolicy {
        let header = raw.header.clone().unwrap_or_else(|| "x-api-key".into());
        if !is_header_name(&header) || matches!(header.as_str(), "authorization" | "cookie") {
            self.problems
                .add("credentials.api_keys.header", "a lowercase header name other than authorization or cookie");
        }
        let prefix = raw.prefix.clone().unwrap_or_else(|| "pk_".into());
        if !(2..=16).contains(&prefix.len())
            || !prefix.ends_with('_')
            || !prefix.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            self.problems
                .add("credentials.api_keys.prefix", "2-16 lowercase letters or digits ending in '_' (like pk_)");
        }
        let mut file_keys = HashMap::new();
        let Some(file) = &raw.file else {
            return ApiKeyPolicy { header, prefix, file_keys };
        };
        let p = "credentials.api_keys.file";
        let Some(bytes) = self.read(p, file) else { return ApiKeyPolicy { header, prefix, file_keys } };
        let parsed: RawApiKeyFile = match serde_saphyr::from_str(&String::from_utf8_lossy(&bytes)) {
            Ok(f) => f,
            Err(e) => {
                self.problems.add(p, format!("invalid API key file: {e}"));
                return ApiKeyPolicy { header, prefix, file_keys };
            }
        };
        let mut names = std::collections::HashSet::new();
        for (i, entry) in parsed.keys.iter().enumerate() {
            match crate::apikeys::key_from_entry(entry) {
                Ok((digest, key)) => {
                    if !names.insert(key.name.clone()) {
                        self.problems.add(format!("{p}: keys[{i}].name"), format!("duplicate name \"{}\"", key.name));
                    }
                    if file_keys.insert(digest, Arc::new(key)).is_some() {
                        self.problems.add(format!("{p}: keys[{i}].sha256"), "the same key is listed twice");
                    }
                }
                Err(problems) => {
                    for (field, why) in problems {
                        self.problems.add(format!("{p}: keys[{i}].{field}"), why);
                    }
                }
            }
        }
        ApiKeyPolicy { header, prefix, file_keys }
    }

    fn csrf(&mut self, raw: &RawCsrf) -> CsrfPolicy {
        let mut allowed_origins = Vec::new();
        for (i, origin) in raw.allowed_origins.iter().enumerate() {
            let lower = origin.to_ascii_lowercase();
            let shaped = lower.split_once("://").is_some_and(|(scheme, host)| {
                matches!(scheme, "http" | "https") && !host.is_empty() && !host.contains(['/', '?', '#', '*', ' '])
            });
            if !shaped {
                self.problems.add(
                    format!("credentials.csrf.allowed_origins[{i}]"),
                    "an origin like https://app.example.com (no path, no wildcard)",
                );
            }
            allowed_origins.push(lower);
        }
        let double_submit = raw.double_submit.as_ref().map(|ds| {
            if ds.cookie.is_empty()
                || !ds.cookie.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            {
                self.problems.add("credentials.csrf.double_submit.cookie", "not a cookie name");
            }
            if !is_header_name(&ds.header) {
                self.problems.add("credentials.csrf.double_submit.header", "a lowercase header name");
            }
            DoubleSubmit { cookie: ds.cookie.clone(), header: ds.header.clone() }
        });
        if allowed_origins.is_empty() && double_submit.is_none() {
            self.problems.add("credentials.csrf", "name allowed_origins or double_submit (or both)");
        }
        CsrfPolicy { allowed_origins, double_submit }
    }

    fn credentials(&mut self, raw: &RawCredentials) -> (CredentialPolicy, Option<ApiKeyPolicy>, Option<CsrfPolicy>) {
        let api_keys = raw.api_keys.as_ref().map(|a| self.api_keys(a));
        let csrf = raw.csrf.as_ref().map(|c| self.csrf(c));
        if csrf.is_some() && raw.cookies.is_empty() {
            self.problems.add("credentials.csrf", "only applies with cookies");
        }
        if !raw.bearer && raw.cookies.is_empty() && api_keys.is_none() {
            self.problems.add("credentials", "enable bearer, name at least one cookie or configure api_keys");
        }
        for (i, name) in raw.cookies.iter().enumerate() {
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')) {
                self.problems.add(format!("credentials.cookies[{i}]"), format!("\"{name}\" is not a cookie name"));
            }
        }
        let api_key_header = api_keys.as_ref().map(|a| a.header.clone());
        (CredentialPolicy { bearer: raw.bearer, cookies: raw.cookies.clone(), api_key_header }, api_keys, csrf)
    }

    fn tiers(&mut self, raw: Option<&RawRateLimits>) -> HashMap<String, RateTier> {
        let mut tiers = HashMap::new();
        let Some(raw) = raw else { return tiers };
        for (name, t) in &raw.tiers {
            let p = format!("rate_limits.tiers.{name}");
            let key = match t.key.as_str() {
                "ip" => RateKey::Ip,
                "subject" => RateKey::Subject,
                "tenant" => RateKey::Tenant,
                other => {
                    self.problems.add(format!("{p}.key"), format!("\"{other}\" is not ip, subject or tenant"));
                    continue;
                }
            };
            let whole = |v: f64| (v >= 1.0 && v.fract() == 0.0 && v <= f64::from(u32::MAX)).then_some(v as u32);
            let (amount, period_secs) = match (t.rps, t.per_minute) {
                (Some(rps), None) => (whole(rps), 1),
                (None, Some(pm)) => (whole(pm), 60),
                _ => {
                    self.problems.add(&p, "exactly one of rps or per_minute is required");
                    continue;
                }
            };
            let Some(amount) = amount else {
                self.problems.add(&p, "the rate must be a whole number of at least 1");
                continue;
            };
            let burst = t.burst.unwrap_or(amount);
            if burst == 0 {
                self.problems.add(format!("{p}.burst"), "must be at least 1");
            }
            tiers.insert(name.clone(), RateTier { name: name.clone(), key, amount, period_secs, burst });
        }
        tiers
    }

    fn routes(&mut self, raw: &[RawRoute], issuers: &[&str], tiers: &HashMap<String, RateTier>) -> Vec<Route> {
        if raw.is_empty() {
            self.problems.add("routes", "at least one route is required (unmatched requests are denied)");
        }
        let mut routes = Vec::new();
        for (i, route) in raw.iter().enumerate() {
            let p = format!("routes[{i}]");
            let name = route.name.clone().unwrap_or_else(|| p.clone());
            let Some(m) = &route.matcher else {
                self.problems.add(format!("{p}.match"), "required");
                continue;
            };
            let matcher = self.route_match(&p, m);
            // A route without rate_limit counts against the tier named `default`, if any.
            let rate_limit = match route.rate_limit.as_deref() {
                Some(name) => tiers.get(name).cloned().or_else(|| {
                    self.problems.add(format!("{p}.rate_limit"), format!("no tier \"{name}\" in rate_limits.tiers"));
                    None
                }),
                None => tiers.get("default").cloned(),
            };
            if route.public && (route.optional || route.require.is_some()) {
                self.problems.add(&p, "a public route takes neither optional nor require");
            }
            let requirements = route.require.as_ref().map(|r| self.requirements(&p, r, issuers)).unwrap_or_default();
            let access = if route.public {
                Access::Public
            } else if route.optional {
                Access::Optional(requirements)
            } else {
                Access::Required(requirements)
            };
            if let Some(matcher) = matcher {
                routes.push(Route { name, matcher, access, rate_limit });
            }
        }
        routes
    }

    fn route_match(&mut self, p: &str, m: &RawMatch) -> Option<RouteMatch> {
        let kinds = [m.path_prefix.is_some(), m.path_exact.is_some(), m.path_regex.is_some()];
        if kinds.iter().filter(|k| **k).count() != 1 {
            self.problems.add(format!("{p}.match"), "exactly one of path_prefix, path_exact or path_regex is required");
            return None;
        }
        for (field, value) in [("path_prefix", &m.path_prefix), ("path_exact", &m.path_exact)] {
            if let Some(value) = value
                && value.starts_with('/')
                && crate::decision::validate_path(value) != Ok(value.as_str())
            {
                self.problems.add(format!("{p}.match.{field}"), "a path that every request would be refused for");
            }
        }
        let path = if let Some(prefix) = &m.path_prefix {
            if !prefix.starts_with('/') {
                self.problems.add(format!("{p}.match.path_prefix"), "must start with '/'");
            }
            PathMatch::Prefix(prefix.clone())
        } else if let Some(exact) = &m.path_exact {
            if !exact.starts_with('/') {
                self.problems.add(format!("{p}.match.path_exact"), "must start with '/'");
            }
            PathMatch::Exact(exact.clone())
        } else {
            let re = m.path_regex.as_deref().unwrap_or_default();
            let strict = regex::Regex::new(&format!("^(?:{re})$"));
            let lenient = regex::Regex::new(&format!("(?i)^(?:{re})$"));
            match strict.and_then(|strict| Ok(PathMatch::Regex { strict, lenient: lenient? })) {
                Ok(path) => path,
                Err(e) => {
                    self.problems.add(format!("{p}.match.path_regex"), format!("invalid regex: {e}"));
                    return None;
                }
            }
        };
        let host = m.host.as_ref().map(|h| {
            // Hosts are compared as parse_authority leaves them: lowercase, no trailing dot.
            let h = h.to_ascii_lowercase();
            let h = h.strip_suffix('.').map(str::to_string).unwrap_or(h);
            match h.strip_prefix('*') {
                Some(suffix) if suffix.starts_with('.') => HostMatch::Suffix(suffix.to_string()),
                _ => HostMatch::Exact(h),
            }
        });
        let mut methods = Vec::new();
        for (j, method) in m.methods.iter().enumerate() {
            if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic()) {
                self.problems.add(format!("{p}.match.methods[{j}]"), format!("\"{method}\" is not an HTTP method"));
            }
            methods.push(method.to_ascii_uppercase());
        }
        Some(RouteMatch {
            host,
            path,
            methods,
            case_sensitive: m.case_sensitive.unwrap_or(false),
            strict_slash: m.strict_slash.unwrap_or(false),
            strict_suffix: m.strict_suffix.unwrap_or(false),
        })
    }

    fn requirements(&mut self, p: &str, r: &RawRequire, issuers: &[&str]) -> Requirements {
        let step_up = r.step_up.as_ref().map(|s| {
            let max_auth_age = s.max_auth_age.as_deref().map(|age| {
                self.duration(&format!("{p}.require.step_up.max_auth_age"), Some(age), Duration::ZERO).as_secs() as i64
            });
            if s.acr.is_empty() && s.amr.is_empty() && max_auth_age.is_none() {
                self.problems.add(format!("{p}.require.step_up"), "name acr, amr or max_auth_age");
            }
            if s.acr
                .iter()
                .chain(&s.amr)
                .any(|v| v.is_empty() || !v.bytes().all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\'))
            {
                self.problems
                    .add(format!("{p}.require.step_up"), "acr and amr values must be visible ASCII without quotes");
            }
            StepUp { acr: s.acr.clone(), amr: s.amr.clone(), max_auth_age }
        });
        let source_principals = r.source_principals.clone().unwrap_or_default();
        for (j, principal) in source_principals.iter().enumerate() {
            let wildcard_inside = principal.trim_end_matches('*').contains('*');
            if !principal.starts_with("spiffe://") || wildcard_inside {
                self.problems.add(
                    format!("{p}.require.source_principals[{j}]"),
                    "a SPIFFE id like spiffe://cluster.local/ns/app/sa/web (a trailing * matches a prefix)",
                );
            }
        }
        for (j, iss) in r.issuers.iter().enumerate() {
            if !issuers.contains(&iss.as_str()) {
                self.problems.add(format!("{p}.require.issuers[{j}]"), format!("\"{iss}\" is not a configured issuer"));
            }
        }
        let mut claims = Vec::new();
        for (j, c) in r.claims.iter().enumerate() {
            let cp = format!("{p}.require.claims[{j}]");
            if !c.path.starts_with('/') {
                self.problems.add(format!("{cp}.path"), "must be a JSON Pointer starting with '/'");
            }
            let tests: Vec<ClaimTest> = [
                c.equals.clone().map(ClaimTest::Equals),
                c.one_of.clone().map(ClaimTest::OneOf),
                c.contains.clone().map(ClaimTest::Contains),
                c.present.filter(|p| *p).map(|_| ClaimTest::Present),
            ]
            .into_iter()
            .flatten()
            .collect();
            match <[ClaimTest; 1]>::try_from(tests) {
                Ok([test]) => claims.push(ClaimMatcher { pointer: c.path.clone(), test }),
                Err(_) => {
                    self.problems.add(&cp, "exactly one of equals, one_of, contains or present: true is required")
                }
            }
        }
        Requirements {
            issuers: r.issuers.clone(),
            audiences: r.audiences.clone(),
            scopes: r.scopes.clone(),
            roles: r.roles.clone(),
            claims,
            tenant: r.tenant.unwrap_or(false) || r.tenant_roles.as_ref().is_some_and(|t| !t.is_empty()),
            tenant_roles: r.tenant_roles.clone().unwrap_or_default(),
            step_up,
            source_principals,
        }
    }

    fn tenants(&mut self, raw: &RawTenants, issuers: &[&str]) -> Option<TenantPolicy> {
        let mut sources = Vec::new();
        if raw.from.is_empty() {
            self.problems.add("tenants.from", "at least one tenant source is required");
        }
        for (i, s) in raw.from.iter().enumerate() {
            let p = format!("tenants.from[{i}]");
            let given = [s.header.is_some(), s.path.is_some(), s.host_suffix.is_some(), s.context_extension.is_some()];
            if given.iter().filter(|g| **g).count() != 1 {
                self.problems.add(&p, "exactly one of header, path, host_suffix or context_extension");
                continue;
            }
            if let Some(h) = &s.header {
                if !is_header_name(h) {
                    self.problems.add(format!("{p}.header"), "header names must be lowercase token characters");
                }
                sources.push(TenantSource::Header(h.clone()));
            } else if let Some(re) = &s.path {
                match regex::Regex::new(re) {
                    Ok(r) if r.capture_names().any(|n| n == Some("tenant")) => sources.push(TenantSource::Path(r)),
                    Ok(_) => self.problems.add(format!("{p}.path"), "needs a named group (?P<tenant>...)"),
                    Err(e) => self.problems.add(format!("{p}.path"), format!("invalid regex: {e}")),
                }
            } else if let Some(suffix) = &s.host_suffix {
                if !suffix.starts_with('.') {
                    self.problems.add(format!("{p}.host_suffix"), "must start with '.' (like .tenants.example.com)");
                }
                sources.push(TenantSource::HostSuffix(suffix.to_ascii_lowercase()));
            } else if let Some(key) = &s.context_extension {
                sources.push(TenantSource::ContextExtension(key.clone()));
            }
        }
        let pattern = raw.id_pattern.as_deref().unwrap_or("^[a-z0-9][a-z0-9:_-]{0,62}$");
        let id_pattern =
            match regex::Regex::new(&format!("^(?:{})$", pattern.trim_start_matches('^').trim_end_matches('$'))) {
                Ok(r) => r,
                Err(e) => {
                    self.problems.add("tenants.id_pattern", format!("invalid regex: {e}"));
                    return None;
                }
            };
        let membership = raw.membership.as_ref();
        let claim = membership.and_then(|m| m.claim.clone());
        if let Some(c) = &claim
            && !c.starts_with('/')
        {
            self.problems.add("tenants.membership.claim", "must be a JSON Pointer starting with '/'");
        }
        let personal = membership.and_then(|m| m.personal.as_ref()).and_then(|template| {
            let Some((prefix, suffix)) = template.split_once("{sub}") else {
                self.problems.add("tenants.membership.personal", "must contain {sub}, like user:{sub}");
                return None;
            };
            let issuer = match (membership.and_then(|m| m.personal_issuer.clone()), issuers) {
                (Some(iss), _) if issuers.contains(&iss.as_str()) => iss,
                (Some(iss), _) => {
                    self.problems
                        .add("tenants.membership.personal_issuer", format!("\"{iss}\" is not a configured issuer"));
                    return None;
                }
                (None, [only]) => only.to_string(),
                (None, _) => {
                    self.problems.add(
                        "tenants.membership.personal_issuer",
                        "required with several issuers: personal tenants belong to the subjects of one issuer",
                    );
                    return None;
                }
            };
            Some(PersonalTenant { prefix: prefix.to_string(), suffix: suffix.to_string(), issuer })
        });
        let file_members =
            membership.and_then(|m| m.file.as_ref()).map(|f| self.member_file(f, issuers)).unwrap_or_default();
        Some(TenantPolicy { sources, id_pattern, claim, personal, file_members })
    }

    fn member_file(&mut self, file: &str, issuers: &[&str]) -> MemberTable {
        let p = "tenants.membership.file";
        let mut table = MemberTable::default();
        let Some(bytes) = self.read(p, file) else { return table };
        let parsed: RawMemberFile = match serde_saphyr::from_str(&String::from_utf8_lossy(&bytes)) {
            Ok(f) => f,
            Err(e) => {
                self.problems.add(p, format!("invalid membership file: {e}"));
                return table;
            }
        };
        for (tenant, members) in parsed.members {
            for (i, m) in members.unwrap_or_default().into_iter().enumerate() {
                let iss = match (m.iss, issuers) {
                    (Some(iss), _) if issuers.contains(&iss.as_str()) => iss,
                    (None, [only]) => only.to_string(),
                    (iss, _) => {
                        self.problems.add(
                            format!("{p}: members.{tenant}[{i}].iss"),
                            format!("{iss:?} is not a configured issuer"),
                        );
                        continue;
                    }
                };
                table.insert(tenant.clone(), iss, m.sub, m.roles);
            }
        }
        table
    }

    fn response(&mut self, raw: &RawResponse, realm: Option<&str>, tenants: bool) -> ResponsePolicy {
        let security_headers = match &raw.security_headers {
            RawSecurityHeaders::Enabled(false) => Vec::new(),
            RawSecurityHeaders::Enabled(true) => {
                DEFAULT_SECURITY_HEADERS.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
            }
            RawSecurityHeaders::Custom(map) => {
                let mut headers = Vec::new();
                for (name, value) in map {
                    if !DEFAULT_SECURITY_HEADERS.iter().any(|(known, _)| known == name) {
                        let known: Vec<&str> = DEFAULT_SECURITY_HEADERS.iter().map(|(k, _)| *k).collect();
                        self.problems.add(
                            format!("response.security_headers.{name}"),
                            format!("not one of {}", known.join(", ")),
                        );
                    }
                    if value.is_empty() || !value.bytes().all(|b| (0x20..0x7f).contains(&b)) {
                        self.problems
                            .add(format!("response.security_headers.{name}"), "a non-empty printable ASCII value");
                    }
                    headers.push((name.clone(), value.clone()));
                }
                headers
            }
        };
        let mut identity_headers = Vec::new();
        for (name, source) in &raw.identity_headers {
            let p = format!("response.identity_headers.{name}");
            if !is_header_name(name) {
                self.problems.add(&p, "header names must be lowercase token characters");
            }
            if matches!(name.as_str(), "authorization" | "host" | "cookie" | "content-length" | "te" | "connection") {
                self.problems.add(&p, "this header cannot carry identity");
            }
            let source = if source == "tenant" {
                if !tenants {
                    self.problems.add(&p, "`tenant` needs a tenants section");
                }
                IdentitySource::Tenant
            } else if source.starts_with('/') {
                IdentitySource::Claim(source.clone())
            } else {
                self.problems.add(&p, "must be a JSON Pointer (like /sub) or `tenant`");
                continue;
            };
            identity_headers.push(IdentityHeader { name: name.clone(), source });
        }
        for (i, name) in raw.strip_headers.iter().enumerate() {
            if !is_header_name(name) {
                self.problems
                    .add(format!("response.strip_headers[{i}]"), "header names must be lowercase token characters");
            }
        }
        let realm = realm.unwrap_or("portcullis");
        if realm.contains(['"', '\\']) || !realm.is_ascii() {
            self.problems.add("credentials.realm", "must be ASCII without quotes or backslashes");
        }
        ResponsePolicy {
            identity_headers,
            strip_headers: raw.strip_headers.clone(),
            remove_authorization: raw.remove_authorization,
            realm: realm.to_string(),
            security_headers,
        }
    }
}
