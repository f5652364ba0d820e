//! The policy file as written: one serde tree with `deny_unknown_fields` everywhere. Values that
//! need checking (durations, algorithms, regexes) stay strings here so validation can report
//! every problem at once with its path.

use schemars::JsonSchema;
use serde::Deserialize;
use std::collections::BTreeMap;

pub use super::schema_listen::{RawCallerTls, RawCallers, RawLimits, RawListen, RawListenLimits, RawSocket};
pub use super::schema_state::{RawRedisTls, RawSentinel, RawState};

#[derive(Debug, Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub version: Option<u32>,
    /// Allows the built-in development issuer `urn:portcullis:dev`.
    #[serde(default)]
    pub dev: bool,
    #[serde(default)]
    pub listen: RawListen,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub issuers: Vec<RawIssuer>,
    #[serde(default)]
    pub credentials: RawCredentials,
    pub tenants: Option<RawTenants>,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    pub rate_limits: Option<RawRateLimits>,
    pub ip: Option<RawIp>,
    pub cache: Option<RawCache>,
    pub state: Option<RawState>,
    /// DPoP proofs (RFC 9449): algorithms, the `iat` window, server nonces (README
    /// "Sender-constrained tokens"). Present, or named by any `sender_constraint`: the `DPoP`
    /// authorization scheme is accepted.
    pub dpop: Option<RawDpop>,
    pub admin: Option<RawAdmin>,
    #[serde(default)]
    pub response: RawResponse,
    #[serde(default)]
    pub telemetry: RawTelemetry,
    pub sessions: Option<RawSessions>,
    #[serde(default)]
    pub shutdown: RawShutdown,
    /// `enforce` (default) or `dry_run`: the mode of every route that sets none, and of
    /// requests no route matches.
    pub mode: Option<String>,
    /// Team fragments: glob patterns (relative to this file's folder) of files holding `hosts`
    /// and `routes` for those hosts only (README "Team fragments"); an entry may also state the
    /// hosts its files may claim.
    #[serde(default)]
    pub include: Vec<RawInclude>,
    /// Request forms the default grammar refuses that this deployment's upstreams need
    /// (README "Request semantics").
    #[serde(default)]
    pub grammar: RawGrammar,
}

/// One `include` entry: a pattern, or a pattern with the hosts its files may claim.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum RawInclude {
    Files(String),
    Scoped(RawScopedInclude),
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawScopedInclude {
    /// Glob pattern, relative to this file's folder.
    pub files: String,
    /// Host patterns (exact or `*.suffix`) the matched files' `hosts` must fall under.
    pub hosts: Vec<String>,
}

impl RawInclude {
    pub fn files(&self) -> &str {
        match self {
            Self::Files(f) => f,
            Self::Scoped(s) => &s.files,
        }
    }

    /// `None`: any host.
    pub fn hosts(&self) -> Option<&[String]> {
        match self {
            Self::Files(_) => None,
            Self::Scoped(s) => Some(&s.hosts),
        }
    }
}

/// `sender_constraint`: how an issuer's (or a route's) tokens must be bound to their sender.
#[derive(Debug, Clone, Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSenderConstraint {
    /// `required` (only DPoP-bound tokens, proven) or `allowed` (the default: a bound token is
    /// proven, an unbound one passes).
    pub dpop: Option<String>,
    /// `required` (only certificate-bound tokens, from their certificate) or `allowed`.
    pub mtls: Option<String>,
}

#[derive(Debug, Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawDpop {
    /// Proof signature algorithms (asymmetric only); default ES256, ES384, EdDSA, PS256, RS256.
    #[serde(default)]
    pub algorithms: Vec<String>,
    /// How old a proof's `iat` may be (default 60s); proofs are remembered this long against
    /// replay.
    pub max_age: Option<String>,
    /// How far in the future a proof's `iat` may be (clock skew; default 5s).
    pub leeway: Option<String>,
    /// Server nonces (RFC 9449 §8): proofs must carry a recent one.
    pub nonce: Option<RawDpopNonce>,
    /// The authorities (`host` or `host:port`) this deployment serves: a proof's `htu` must
    /// name one (a proof made for another server is refused here). Default: any.
    #[serde(default)]
    pub authorities: Vec<String>,
}

#[derive(Debug, Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawDpopNonce {
    /// A secret shared by the fleet (at least 32 bytes), so any replica accepts any replica's
    /// nonce; without it each process makes its own.
    pub secret_file: Option<String>,
    /// How often the nonce changes (default 5m); the previous one stays valid.
    pub rotate: Option<String>,
}

/// The request grammar's opt-outs; both refuse by default.
#[derive(Debug, Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawGrammar {
    /// Accept `_` in header names (underscore twins of sensitive headers stay refused).
    pub header_underscores: Option<bool>,
    /// Accept `[` and `]` in query parameter names (array syntax: `ids[]=1`).
    pub query_arrays: Option<bool>,
}

/// A team fragment: the hosts it owns and its routes, each naming one of those hosts.
#[derive(Debug, Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawFragment {
    /// Hosts this fragment owns (exact, or `*.suffix`); no other file may route them.
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
}

#[derive(Debug, Clone, Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawIssuer {
    pub issuer: Option<String>,
    #[serde(default)]
    pub audiences: Vec<String>,
    #[serde(default)]
    pub algorithms: Vec<String>,
    pub jwks: Option<RawJwks>,
    pub pem_files: Option<Vec<String>>,
    pub hmac_secret_file: Option<String>,
    pub required: Option<bool>,
    pub leeway: Option<String>,
    pub max_token_age: Option<String>,
    #[serde(default)]
    pub required_claims: Vec<String>,
    pub token_type: Option<RawTokenType>,
    #[serde(default)]
    pub header_typ: Vec<String>,
    #[serde(default)]
    pub trusted_claims: Vec<String>,
    /// JSON Pointer to the roles claim (default `/roles`).
    pub roles_claim: Option<String>,
    /// How this issuer's tokens must be bound to their sender (DPoP, client certificate).
    pub sender_constraint: Option<RawSenderConstraint>,
    /// With `{tenant}` in `issuer` (`https://login.microsoftonline.com/{tenant}/v2.0`): the
    /// tenants whose tokens are accepted. Each is its own issuer (its `iss`, its keys: `{tenant}`
    /// in `jwks.url`, `jwks.discovery` or `jwks.file` is replaced too); any other tenant's token
    /// names an issuer this policy does not have.
    pub tenants: Option<Vec<String>>,
    /// Take the signature on the word of Envoy's `jwt_authn` filter (off by default; README
    /// "Composing with jwt_authn"): a token whose own payload `jwt_authn` verified and forwarded
    /// (its provider's `payload_in_metadata`, sent with ext_authz'
    /// `metadata_context_namespaces: [envoy.filters.http.jwt_authn]`) is not verified again;
    /// every other check still runs. Anything else is verified here as always.
    pub envoy_jwt_authn: Option<RawEnvoyJwtAuthn>,
}

#[derive(Debug, Clone, Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawEnvoyJwtAuthn {
    /// The provider's `payload_in_metadata` key.
    pub payload_in_metadata: String,
    /// The provider's `header_in_metadata` key: the verified token's JOSE header, which must
    /// be the header of the token Portcullis reads too (its `alg` and `typ` rules apply to it).
    pub header_in_metadata: String,
}

#[derive(Debug, Clone, Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawJwks {
    pub url: Option<String>,
    pub discovery: Option<String>,
    pub file: Option<String>,
    /// A JWKS document, as a YAML mapping or a JSON string.
    pub inline: Option<serde_json::Value>,
    pub refresh: Option<String>,
    pub fallback_file: Option<String>,
    pub max_stale: Option<String>,
    pub refetch_interval: Option<String>,
    pub insecure_http: Option<bool>,
    pub ca_file: Option<String>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawTokenType {
    pub claim: String,
    pub allowed: Vec<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawCredentials {
    #[serde(default = "yes")]
    pub bearer: bool,
    #[serde(default)]
    pub cookies: Vec<String>,
    pub api_keys: Option<RawApiKeys>,
    pub csrf: Option<RawCsrf>,
    /// `realm` of the `www-authenticate` challenge.
    pub realm: Option<String>,
}

#[derive(Debug, Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawApiKeys {
    /// Header carrying the key (default `x-api-key`).
    pub header: Option<String>,
    /// Prefix every key starts with (default `pk_`).
    pub prefix: Option<String>,
    /// YAML file `keys: [ {name, sha256, subject, tenants, scopes, roles, expires} ]`.
    pub file: Option<String>,
}

/// The API key file: digests only, never keys.
#[derive(Debug, Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawApiKeyFile {
    #[serde(default)]
    pub keys: Vec<RawApiKeyEntry>,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize, Default, PartialEq, Eq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawApiKeyEntry {
    pub name: String,
    /// Lowercase hex SHA-256 of the whole key.
    pub sha256: String,
    /// Defaults to the name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default)]
    pub tenants: Vec<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub roles: Vec<String>,
    /// RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
}

#[derive(Debug, Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawCsrf {
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    pub double_submit: Option<RawDoubleSubmit>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawDoubleSubmit {
    pub cookie: String,
    pub header: String,
}

#[derive(Debug, Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSessions {
    pub idle_timeout: Option<String>,
    /// JSON Pointer of the session-id claim (default `/sid`).
    pub claim: Option<String>,
    /// How coarsely last-seen is written (default 1m, at most idle_timeout / 2).
    pub granularity: Option<String>,
    /// Refuse tokens without the session claim.
    pub required: Option<bool>,
}

#[derive(Debug, Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawStepUp {
    #[serde(default)]
    pub acr: Vec<String>,
    #[serde(default)]
    pub amr: Vec<String>,
    pub max_auth_age: Option<String>,
}

/// `security_headers: true` for the default set, or a map of header name to value.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum RawSecurityHeaders {
    Enabled(bool),
    Custom(BTreeMap<String, String>),
}

impl Default for RawSecurityHeaders {
    fn default() -> Self {
        Self::Enabled(false)
    }
}

fn yes() -> bool {
    true
}

impl Default for RawCredentials {
    fn default() -> Self {
        Self { bearer: true, cookies: Vec::new(), api_keys: None, csrf: None, realm: None }
    }
}

#[derive(Debug, Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub name: Option<String>,
    #[serde(rename = "match")]
    pub matcher: Option<RawMatch>,
    #[serde(default)]
    pub public: bool,
    #[serde(default)]
    pub optional: bool,
    pub require: Option<RawRequire>,
    pub rate_limit: Option<String>,
    /// `enforce` (default) or `dry_run`: a deny is audited and counted, and the request is
    /// allowed without identity headers (README "Dry run" lists the denies that stay enforced).
    pub mode: Option<String>,
    /// An explicit deny: every request this route matches is refused 403 `route_denied`.
    #[serde(default)]
    pub deny: bool,
    /// Why, for a `deny: true` route: shown in the audit and the deny body.
    pub reason: Option<String>,
}

#[derive(Debug, Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawMatch {
    pub host: Option<String>,
    pub path_prefix: Option<String>,
    pub path_exact: Option<String>,
    pub path_regex: Option<String>,
    #[serde(default)]
    pub methods: Vec<String>,
    /// The upstream routes this path case-sensitively (default false: a path that selects
    /// another route once its case is folded is refused).
    pub case_sensitive: Option<bool>,
    /// `/me` and `/me/` are different routes upstream (default false: a path that selects another
    /// route once one trailing slash is ignored is refused).
    pub strict_slash: Option<bool>,
    /// `/reports.json` is not `/reports` upstream (default false: a path that selects another
    /// route once a format suffix on its last segment is dropped is refused, as Rails and
    /// Spring 5 route it).
    pub strict_suffix: Option<bool>,
    /// Request headers (lowercase names) and what each must satisfy; every one must hold.
    /// Client-sent: use them to pick a stricter rule or a deny, never to grant access.
    #[serde(default)]
    pub headers: BTreeMap<String, RawValueTest>,
    /// Query parameters (decoded names) and what each must satisfy; every one must hold.
    /// Client-sent, like `headers`.
    #[serde(default)]
    pub query: BTreeMap<String, RawValueTest>,
}

/// Exactly one of `present: true`, `equals` or `regex` (anchored: the whole value).
#[derive(Debug, Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawValueTest {
    pub present: Option<bool>,
    pub equals: Option<String>,
    pub regex: Option<String>,
}

#[derive(Debug, Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRequire {
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub claims: Vec<RawClaimMatcher>,
    #[serde(default)]
    pub issuers: Vec<String>,
    #[serde(default)]
    pub audiences: Vec<String>,
    pub tenant: Option<bool>,
    pub tenant_roles: Option<Vec<String>>,
    pub step_up: Option<RawStepUp>,
    pub source_principals: Option<Vec<String>>,
    /// At least one of these must hold (each over scopes, roles, claims, issuers, audiences,
    /// any_of and not).
    #[serde(default)]
    pub any_of: Vec<RawRequire>,
    /// This must not hold (the same kinds as `any_of`).
    pub not: Option<Box<RawRequire>>,
    /// How the token must be bound to its sender on this route (the issuer's also holds).
    pub sender_constraint: Option<RawSenderConstraint>,
}

#[derive(Debug, Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawClaimMatcher {
    pub path: String,
    pub equals: Option<serde_json::Value>,
    pub one_of: Option<Vec<serde_json::Value>>,
    pub contains: Option<serde_json::Value>,
    pub present: Option<bool>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimits {
    #[serde(default)]
    pub tiers: BTreeMap<String, RawTier>,
    /// Fleet tiers, while Redis is down or slow: each replica limits locally at the tier's rate
    /// divided by this (default 1: each replica allows the whole rate).
    pub fallback_replicas: Option<u32>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawTier {
    pub key: String,
    pub rps: Option<f64>,
    pub per_minute: Option<f64>,
    pub burst: Option<u32>,
    /// `local` (default: per replica), `fleet` (one count across replicas in Redis, leased to
    /// each replica in batches of 1/20 of the rate, each lease spent within 1/20 of the period)
    /// or `fleet_exact` (one Redis call per request).
    pub scope: Option<String>,
}

#[derive(Debug, Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawIp {
    #[serde(default)]
    pub allow: Vec<String>,
    #[serde(default)]
    pub allow_files: Vec<String>,
    #[serde(default)]
    pub deny: Vec<String>,
    #[serde(default)]
    pub deny_files: Vec<String>,
    #[serde(default)]
    pub trusted_cidrs: Vec<String>,
    /// A trusted proxy that forwards no client passes `allow` itself (default false: `allow`
    /// holds for every client, proxies included).
    pub allow_trusted_proxies: Option<bool>,
    pub auto_block: Option<RawAutoBlock>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawAutoBlock {
    pub failures: u32,
    pub window: String,
    pub block_for: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawCache {
    pub ttl: Option<String>,
    pub max_entries: Option<u64>,
    /// The bound on the cached entries' own bytes (like 48MiB; default 48MiB): a cache of
    /// tokens with many claims holds fewer entries.
    pub max_bytes: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub token_file: Option<String>,
}

#[derive(Debug, Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawResponse {
    /// Header name → JSON Pointer into the claims, or `tenant`.
    #[serde(default)]
    pub identity_headers: BTreeMap<String, String>,
    #[serde(default)]
    pub strip_headers: Vec<String>,
    #[serde(default)]
    pub remove_authorization: bool,
    #[serde(default)]
    pub security_headers: RawSecurityHeaders,
}

#[derive(Debug, Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawTelemetry {
    pub otlp_endpoint: Option<String>,
    pub log_format: Option<String>,
    pub audit: Option<RawAudit>,
    /// Count decisions per route too: `portcullis_rule_decisions_total{rule,decision}` (one
    /// series per route name and verdict, so bounded by the policy's routes; `(none)` when no
    /// route matched). Off by default.
    pub rule_metrics: Option<bool>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawAudit {
    pub allow_sample_rate: Option<f64>,
    /// Append audit lines to this file instead of stdout.
    pub file: Option<String>,
}

#[derive(Debug, Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawShutdown {
    /// After SIGTERM, keep serving (not ready) this long so callers stop sending (default 5s).
    pub drain_delay: Option<String>,
    /// Then wait at most this long for in-flight checks.
    pub drain_timeout: Option<String>,
}

#[derive(Debug, Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawTenants {
    #[serde(default)]
    pub from: Vec<RawTenantSource>,
    pub id_pattern: Option<String>,
    pub membership: Option<RawMembership>,
}

/// Exactly one key per entry.
#[derive(Debug, Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawTenantSource {
    pub header: Option<String>,
    pub path: Option<String>,
    pub host_suffix: Option<String>,
    pub context_extension: Option<String>,
}

#[derive(Debug, Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawMembership {
    /// JSON Pointer of the membership claim.
    pub claim: Option<String>,
    /// Personal tenant template with `{sub}`, e.g. `user:{sub}`.
    pub personal: Option<String>,
    /// The issuer whose subjects own personal tenants (required with several issuers).
    pub personal_issuer: Option<String>,
    /// A YAML file `members: { tenant: [ {iss, sub, roles} ] }`, reloaded on change.
    pub file: Option<String>,
}

/// The membership file.
#[derive(Debug, Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawMemberFile {
    #[serde(default)]
    /// A tenant left empty (`acme:`) has no members.
    pub members: BTreeMap<String, Option<Vec<RawMember>>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawMember {
    pub iss: Option<String>,
    pub sub: String,
    #[serde(default)]
    pub roles: Vec<String>,
}
