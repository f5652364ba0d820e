//! Remote key sources: a JWKS URL or OIDC discovery, and the rules for which URLs may be used.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteSource {
    /// The JWKS document itself.
    Url(String),
    /// The issuer base URL; `/.well-known/openid-configuration` names the JWKS.
    Discovery(String),
}

/// How one issuer's keys are fetched and kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteJwks {
    pub source: RemoteSource,
    pub refresh: Duration,
    pub refetch_interval: Duration,
    pub max_stale: Duration,
    pub fallback_file: Option<PathBuf>,
    /// Extra trusted roots (PEM) for this issuer's HTTPS endpoints.
    pub ca_pem: Option<Vec<u8>>,
    pub insecure_http: bool,
}

pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
pub const MAX_JWKS_BYTES: usize = 256 * 1024;
/// Shortest interval a `Cache-Control: max-age` may impose (never shorter than `refresh`).
pub const MIN_MAX_AGE: Duration = Duration::from_secs(60);

fn is_loopback_host(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// https, or plain http only to a loopback address or with an explicit opt-in.
pub fn check_url(url: &str, insecure_http: bool) -> Result<reqwest::Url, String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("\"{url}\" is not a URL: {e}"))?;
    let host = parsed.host_str().unwrap_or_default();
    if host.is_empty() {
        return Err(format!("\"{url}\" has no host"));
    }
    match parsed.scheme() {
        "https" => Ok(parsed),
        "http" if insecure_http || is_loopback_host(host) => Ok(parsed),
        "http" => Err(format!("\"{url}\" is plain http; use https (or insecure_http: true)")),
        other => Err(format!("\"{url}\": scheme {other} is not supported")),
    }
}

/// The next periodic refresh: `refresh`, or sooner when the IdP's `max-age` says so, but never
/// sooner than a minute (or `refresh`, if that is shorter).
pub fn next_refresh(refresh: Duration, max_age: Option<Duration>) -> Duration {
    match max_age {
        Some(age) => refresh.min(age.max(MIN_MAX_AGE)),
        None => refresh,
    }
}

/// `max-age` from a `Cache-Control` header value.
pub fn parse_max_age(cache_control: &str) -> Option<Duration> {
    cache_control
        .split(',')
        .filter_map(|d| d.trim().strip_prefix("max-age="))
        .find_map(|v| v.trim_matches('"').parse::<u64>().ok())
        .map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_rules_table() {
        let cases = [
            ("https://idp.example.com/jwks", false, true),
            ("http://idp.example.com/jwks", false, false),
            ("http://idp.example.com/jwks", true, true),
            ("http://127.0.0.1:8080/jwks", false, true),
            ("http://127.9.9.9/jwks", false, true),
            ("http://[::1]:8080/jwks", false, true),
            ("http://localhost/jwks", false, true),
            ("http://10.0.0.1/jwks", false, false),
            ("ftp://idp.example.com/jwks", true, false),
            ("not a url", false, false),
        ];
        for (url, insecure, ok) in cases {
            assert_eq!(check_url(url, insecure).is_ok(), ok, "{url} insecure={insecure}");
        }
    }

    #[test]
    fn refresh_interval_table() {
        let h = Duration::from_secs(3600);
        let cases = [
            (h, None, h),
            (h, Some(Duration::from_secs(600)), Duration::from_secs(600)),
            (h, Some(Duration::from_secs(5)), MIN_MAX_AGE),
            (h, Some(Duration::from_secs(86_400)), h),
            (Duration::from_secs(1), Some(Duration::from_secs(5)), Duration::from_secs(1)),
        ];
        for (refresh, max_age, want) in cases {
            assert_eq!(next_refresh(refresh, max_age), want, "{refresh:?} {max_age:?}");
        }
        assert_eq!(parse_max_age("public, max-age=300"), Some(Duration::from_secs(300)));
        assert_eq!(parse_max_age("no-store"), None);
    }
}
