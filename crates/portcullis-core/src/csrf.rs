//! The CSRF guard for cookie credentials: a state-changing request carried by a cookie must come
//! from an allowed origin or echo the double-submit cookie in a header. Bearer tokens and API
//! keys are never sent by a browser on its own, so they are not checked.

use super::input::CheckInput;
use super::reason::{Deny, DenyReason};
use subtle::ConstantTimeEq;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DoubleSubmit {
    pub cookie: String,
    /// Lowercase header name.
    pub header: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CsrfPolicy {
    /// Lowercase origins (`scheme://host[:port]`).
    pub allowed_origins: Vec<String>,
    pub double_submit: Option<DoubleSubmit>,
}

/// Methods a browser may send cross-site without the request changing anything.
fn is_safe(method: &str) -> bool {
    matches!(method.to_ascii_uppercase().as_str(), "GET" | "HEAD" | "OPTIONS" | "TRACE")
}

/// `scheme://authority` of a URL, lowercased; `None` when it has no such shape.
fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    (!scheme.is_empty() && !authority.is_empty()).then(|| format!("{scheme}://{authority}").to_ascii_lowercase())
}

fn single<'a>(input: &'a CheckInput, name: &'a str) -> Result<Option<&'a str>, Deny> {
    let mut values = input.header_values(name);
    let first = values.next();
    if values.next().is_some() || first.is_some_and(|v| v.contains(',')) {
        return Err(Deny::new(DenyReason::CsrfRejected, format!("more than one {name} header")));
    }
    Ok(first.map(str::trim).filter(|v| !v.is_empty()))
}

fn cookie_value<'a>(input: &'a CheckInput, name: &str) -> Option<&'a str> {
    super::credential::cookie_pairs(input).find(|(k, _)| *k == name).map(|(_, v)| v).filter(|v| !v.is_empty())
}

/// Checks a request whose credential is a cookie. `policy` is `None` when the file has no
/// `credentials.csrf`: state-changing cookie requests are then refused (fail closed).
pub fn check_csrf(input: &CheckInput, policy: Option<&CsrfPolicy>) -> Result<(), Deny> {
    if is_safe(&input.method) {
        return Ok(());
    }
    let Some(policy) = policy else {
        return Err(Deny::new(
            DenyReason::CsrfRejected,
            "cookie credential on a state-changing request without credentials.csrf",
        ));
    };
    let origin = match single(input, "origin")? {
        Some("null") | None => single(input, "referer")?.and_then(origin_of),
        Some(origin) => Some(origin.to_ascii_lowercase()),
    };
    if let Some(origin) = &origin
        && policy.allowed_origins.iter().any(|allowed| allowed == origin)
    {
        return Ok(());
    }
    if let Some(ds) = &policy.double_submit
        && let (Some(cookie), Some(header)) = (cookie_value(input, &ds.cookie), single(input, &ds.header)?)
        && bool::from(cookie.as_bytes().ct_eq(header.as_bytes()))
    {
        return Ok(());
    }
    let why = match origin {
        Some(_) => "origin not allowed and no matching double-submit token",
        None => "no Origin or Referer and no matching double-submit token",
    };
    Err(Deny::new(DenyReason::CsrfRejected, why))
}
