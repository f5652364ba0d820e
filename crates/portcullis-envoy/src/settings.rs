//! The filter's configuration. Envoy hands the module the `filter_config` string of
//! `envoy.filters.http.dynamic_modules` (a `google.protobuf.StringValue`): a small YAML
//! document naming the policy — the same policy YAML `portcullis serve` reads — and, where
//! the policy keeps fleet state, the sidecar's state socket.

use portcullis::config::{ConfigError, Settings};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long the sidecar's stream may be silent before the state counts as stale (the policy's
/// `on_stale` then decides). The sidecar speaks at least once a second.
pub const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(5);

/// The least `stale_after`: twice the sidecar's heartbeat (one a second), so one late beat on a
/// busy node does not make the state stale and refuse requests.
pub const MIN_STALE_AFTER: Duration = Duration::from_secs(2);

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    /// The policy inline.
    policy: Option<String>,
    /// The policy's file (watched: a valid change is put in force, an invalid one is logged
    /// and the policy in force stays).
    policy_file: Option<PathBuf>,
    /// `portcullis serve`'s `state.stream_socket`: revocations, blocks, members and API keys.
    state_socket: Option<PathBuf>,
    /// e.g. `5s`.
    stale_after: Option<String>,
}

/// The filter's configuration, validated.
#[derive(Debug)]
pub struct ModuleSettings {
    pub settings: Settings,
    /// Where the policy came from when it is a file (hot reload watches it).
    pub policy_file: Option<PathBuf>,
    pub state_socket: Option<PathBuf>,
    pub stale_after: Duration,
}

/// Why a filter configuration is refused: every problem, one per line, like `check-config`.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

impl From<ConfigError> for Refused {
    fn from(e: ConfigError) -> Self {
        Refused(e.to_string())
    }
}

/// Reads the filter configuration and compiles its policy. A policy needing what the module
/// cannot do itself is refused here, when Envoy loads the configuration, never at a request.
pub fn parse(text: &str) -> Result<ModuleSettings, Refused> {
    let raw: Raw = serde_saphyr::from_str(text).map_err(|e| Refused(format!("portcullis filter_config: {e}")))?;
    let settings = match (&raw.policy, &raw.policy_file) {
        (Some(text), None) => {
            portcullis::config::parse_and_validate_named(text, Path::new("."), "filter_config.policy")?
        }
        (None, Some(path)) => portcullis::config::load_file(path)?,
        _ => return Err(Refused("portcullis filter_config: give exactly one of `policy` and `policy_file`".into())),
    };
    let stale_after = match &raw.stale_after {
        None => DEFAULT_STALE_AFTER,
        Some(text) => humantime::parse_duration(text)
            .map_err(|e| Refused(format!("portcullis filter_config: stale_after: {e}")))?,
    };
    if stale_after < MIN_STALE_AFTER {
        return Err(Refused(format!(
            "portcullis filter_config: stale_after: at least {}s (the sidecar's heartbeat is one a second)",
            MIN_STALE_AFTER.as_secs()
        )));
    }
    check_supported(&settings, raw.state_socket.is_some())?;
    Ok(ModuleSettings { settings, policy_file: raw.policy_file, state_socket: raw.state_socket, stale_after })
}

/// The policy file read again (hot reload), held to what the module can run.
pub fn reload(path: &Path, has_sidecar: bool) -> Result<Settings, Refused> {
    let settings = portcullis::config::load_file(path)?;
    check_supported(&settings, has_sidecar)?;
    Ok(settings)
}

/// What the module refuses to run, each with what to do instead. Keys it cannot fetch, fleet
/// calls it cannot make and proofs it cannot spend fleet-wide would each be a silent allow or
/// deny later; refusing the configuration keeps Envoy on the one it had.
pub fn check_supported(settings: &Settings, has_sidecar: bool) -> Result<(), Refused> {
    let mut problems = Vec::new();
    for job in settings.jwks_jobs.iter().filter(|_| !has_sidecar) {
        problems.push(format!(
            "issuer {}: keys from jwks.url or discovery are fetched by `portcullis serve` and reach the \
             module on its state stream: set state_socket, or give the keys as a file or inline",
            job.issuer
        ));
    }
    let policy = &settings.snapshot.policy;
    for route in &policy.routes {
        if let Some(tier) = route.rate_limit.as_ref().filter(|t| t.scope.is_fleet()) {
            problems.push(format!(
                "routes.{}: rate limit {} is fleet-wide; inside Envoy only per-Envoy tiers (scope: local) are counted",
                route.name, tier.name
            ));
        }
    }
    if settings.snapshot.dpop.is_some() {
        problems.push("dpop: DPoP proofs are verified by the ext_authz path only (replay is fleet state)".into());
    }
    if policy.sessions.is_some() {
        problems.push("sessions: session activity is written by the ext_authz path only".into());
    }
    if !has_sidecar && !matches!(settings.state, portcullis::state::StateBackend::Memory { dir: None }) {
        problems.push(
            "state: revocations, blocks and members written elsewhere (Redis, the journal) reach the module \
             through `portcullis serve`: set state_socket"
                .into(),
        );
    }
    let tenant_from_route = policy.tenants.as_ref().is_some_and(|t| {
        t.sources.iter().any(|source| matches!(source, portcullis_core::TenantSource::ContextExtension(_)))
    });
    if tenant_from_route {
        problems.push(
            "tenants.from: context_extension is set per route by ext_authz; inside Envoy there is none \
             (use a header or path source, or the ext_authz path)"
                .into(),
        );
    }
    if settings.admin.is_some() && !has_sidecar {
        problems.push(
            "admin: the admin API's changes reach the module through `portcullis serve`: set state_socket".into(),
        );
    }
    if problems.is_empty() { Ok(()) } else { Err(Refused(problems.join("\n"))) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filter_config_names_one_policy() {
        let both = "policy: 'x: 1'\npolicy_file: /nonexistent\n";
        assert!(parse(both).unwrap_err().0.contains("exactly one"));
        assert!(parse("{}").unwrap_err().0.contains("exactly one"));
        assert!(parse("polcy: x").unwrap_err().0.contains("polcy"));
    }

    #[test]
    fn a_bad_policy_is_refused_with_the_check_config_messages() {
        let err = parse("policy: |\n  issuers: 3\n").unwrap_err().0;
        assert!(err.contains("filter_config.policy"), "{err}");
    }
}
