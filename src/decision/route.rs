//! Route matching (DESIGN step 4).

use super::requirements::Requirements;
use super::types::RateTier;
use regex::Regex;

#[derive(Debug, Clone)]
pub enum HostMatch {
    Exact(String),
    /// `*.example.com`: any host with this suffix and at least one more label.
    Suffix(String),
}

impl HostMatch {
    fn matches(&self, host: &str) -> bool {
        match self {
            Self::Exact(h) => h == host,
            Self::Suffix(s) => host.len() > s.len() && host.ends_with(s.as_str()),
        }
    }
}

#[derive(Debug, Clone)]
pub enum PathMatch {
    /// Matches the prefix itself and anything below it at a segment boundary.
    Prefix(String),
    Exact(String),
    /// Anchored: the whole path must match.
    Regex(Regex),
}

impl PathMatch {
    fn matches(&self, path: &str) -> bool {
        match self {
            Self::Prefix(p) => {
                if p == "/" || path == p {
                    return true;
                }
                match path.strip_prefix(p.as_str()) {
                    Some(rest) => p.ends_with('/') || rest.starts_with('/'),
                    None => false,
                }
            }
            Self::Exact(p) => p == path,
            Self::Regex(r) => r.is_match(path),
        }
    }
}

#[derive(Debug, Clone)]
pub struct RouteMatch {
    pub host: Option<HostMatch>,
    pub path: PathMatch,
    /// Uppercase methods; empty means any.
    pub methods: Vec<String>,
}

#[derive(Debug, Clone)]
pub enum Access {
    /// No credential needed; any credential sent is ignored and identity headers are stripped.
    Public,
    /// A credential is verified if present; without one the request passes anonymously.
    Optional(Requirements),
    /// A valid credential meeting the requirements is needed.
    Required(Requirements),
}

#[derive(Debug, Clone)]
pub struct Route {
    /// Stable name for audit and metrics: the configured `name` or `routes[i]`.
    pub name: String,
    pub matcher: RouteMatch,
    pub access: Access,
    /// The rate-limit tier this route counts against.
    pub rate_limit: Option<RateTier>,
}

/// Lowercases the host and strips a port (`Example.COM:8443` → `example.com`, `[::1]:80` → `[::1]`).
pub fn normalize_host(host: &str) -> String {
    let host = host.to_ascii_lowercase();
    if host.starts_with('[') {
        return match host.find(']') {
            Some(end) => host[..=end].to_string(),
            None => host,
        };
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name.to_string(),
        _ => host,
    }
}

/// The first route matching host, path and method; `None` is the default deny.
pub fn find_route<'a>(routes: &'a [Route], host: &str, path: &str, method: &str) -> Option<&'a Route> {
    let host = normalize_host(host);
    routes.iter().find(|route| {
        let m = &route.matcher;
        m.host.as_ref().is_none_or(|h| h.matches(&host))
            && m.path.matches(path)
            && (m.methods.is_empty() || m.methods.iter().any(|x| x == method))
    })
}
