//! Credential extraction (docs/contract.md step 7): one bearer token from `authorization`, a named cookie
//! or an API-key header.

use super::input::CheckInput;
use super::reason::{Deny, DenyReason};

/// The largest token accepted; larger ones are refused before any parsing.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

#[derive(Debug, Clone, Default)]
pub struct CredentialPolicy {
    pub bearer: bool,
    pub cookies: Vec<String>,
    /// Lowercase header carrying an API key, when API keys are configured.
    pub api_key_header: Option<String>,
    /// `Authorization: DPoP <token>` is a credential (some issuer or route speaks DPoP).
    pub dpop: bool,
    /// `dpop.authorities`: the only authorities (`host[:port]`, lowercase, default port
    /// dropped) a proof's `htu` may name; empty: any the request carries.
    pub dpop_authorities: Vec<String>,
}

/// Where the credential came from; the token itself never leaves this module in a log.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential<'a> {
    Bearer(&'a str),
    /// `Authorization: DPoP <token>`: the token must come with its proof (RFC 9449).
    Dpop(&'a str),
    Cookie {
        name: &'a str,
        token: &'a str,
    },
    ApiKey(&'a str),
}

impl std::fmt::Debug for Credential<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Bearer(_) => f.write_str("Bearer([redacted])"),
            Self::Dpop(_) => f.write_str("Dpop([redacted])"),
            Self::Cookie { name, .. } => write!(f, "Cookie({name}=[redacted])"),
            Self::ApiKey(_) => f.write_str("ApiKey([redacted])"),
        }
    }
}

impl<'a> Credential<'a> {
    pub fn token(&self) -> &'a str {
        match self {
            Self::Bearer(t) | Self::Dpop(t) => t,
            Self::Cookie { token, .. } => token,
            Self::ApiKey(key) => key,
        }
    }
}

fn is_token68(s: &str) -> bool {
    let body = s.trim_end_matches('=');
    !body.is_empty()
        && body.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/'))
}

/// The token of an `authorization` value: `Bearer`, or `DPoP` when `dpop` is on (`true` in
/// the answer); `Ok(None)` for another scheme (`Basic`, `Digest`, ...), which is no credential
/// at all (RFC 6750: answer 401 with a `Bearer` challenge, as Envoy's `jwt_authn` does).
fn scheme_token(value: &str, dpop: bool) -> Result<Option<(bool, &str)>, Deny> {
    let (scheme, rest) = value.split_at(value.find([' ', '\t']).unwrap_or(value.len()));
    let is_dpop = dpop && scheme.eq_ignore_ascii_case("dpop");
    if !scheme.eq_ignore_ascii_case("bearer") && !is_dpop {
        // `Bearer:x`, `Bearerx`: a bearer token that some upstream will still find.
        if scheme.get(..6).is_some_and(|s| s.eq_ignore_ascii_case("bearer"))
            || (dpop && scheme.get(..4).is_some_and(|s| s.eq_ignore_ascii_case("dpop")))
        {
            return Err(Deny::new(DenyReason::InvalidRequest, "malformed bearer scheme"));
        }
        return Ok(None);
    }
    if rest.is_empty() {
        return Err(Deny::new(DenyReason::InvalidRequest, "authorization header without a token"));
    }
    let Some(token) = rest.strip_prefix(' ') else {
        return Err(Deny::new(DenyReason::InvalidRequest, "malformed bearer token"));
    };
    if token.len() > MAX_TOKEN_BYTES {
        return Err(Deny::bad_credential(DenyReason::TokenInvalid, "token larger than 8 KiB"));
    }
    if !is_token68(token) {
        return Err(Deny::new(DenyReason::InvalidRequest, "malformed bearer token"));
    }
    Ok(Some((is_dpop, token)))
}

/// Every `name=value` pair of the request's cookies, names and values trimmed (Werkzeug, Go's
/// net/http and Node's `cookie` trim names, so `session_jwt =x` is a `session_jwt` cookie to
/// them). Cookie values cannot hold `,` or `;` (RFC 6265), so splitting on both also handles
/// cookie headers that Envoy comma-joined.
pub(crate) fn cookie_pairs(input: &CheckInput) -> impl Iterator<Item = (&str, &str)> {
    input
        .header_values("cookie")
        .flat_map(|v| v.split([';', ',']))
        .filter_map(|pair| pair.split_once('='))
        .map(|(name, value)| (name.trim(), value.trim().trim_matches('"')))
}

/// Whether a cookie name reads as `configured` to some framework: PHP turns ` `, `.` and `[` in
/// cookie names into `_`, so `session.jwt` is `$_COOKIE['session_jwt']`.
/// ASP.NET Core compares cookie names case-insensitively (`SESSION_JWT`).
fn cookie_twin(name: &str, configured: &str) -> bool {
    let fold = |b: u8| if matches!(b, b' ' | b'.' | b'[') { b'_' } else { b.to_ascii_lowercase() };
    name.len() == configured.len() && name.bytes().map(fold).eq(configured.bytes().map(fold))
}

/// A cookie value that holds `<name>=`: a lenient parser that resynchronises after a bad byte
/// (ASP.NET Core's) reads `a=b session_jwt=x` as a `session_jwt` cookie.
fn hides_cookie(value: &str, configured: &str) -> bool {
    value
        .as_bytes()
        .windows(configured.len() + 1)
        .any(|w| w[..configured.len()].eq_ignore_ascii_case(configured.as_bytes()) && w[configured.len()] == b'=')
}

/// Finds the request's single credential. `Ok(None)` means none was sent.
pub fn extract_credential<'a>(
    input: &'a CheckInput,
    policy: &'a CredentialPolicy,
) -> Result<Option<Credential<'a>>, Deny> {
    let mut found: Vec<Credential<'a>> = Vec::new();
    // One authorization value, one credential: `Basic x,Bearer <forged>` (two headers joined by
    // Envoy's legacy map) would let the upstream read the part Portcullis did not verify.
    let mut authorization = input.header_values("authorization");
    if authorization.next().is_some_and(|v| v.contains(',')) || authorization.next().is_some() {
        return Err(Deny::new(DenyReason::InvalidRequest, "more than one authorization value"));
    }
    if policy.bearer || policy.dpop {
        for value in input.header_values("authorization") {
            match scheme_token(value, policy.dpop)? {
                Some((true, token)) => found.push(Credential::Dpop(token)),
                Some((false, token)) if policy.bearer => found.push(Credential::Bearer(token)),
                _ => {}
            }
        }
    }
    for name in &policy.cookies {
        for (k, v) in cookie_pairs(input) {
            if hides_cookie(v, name) {
                return Err(Deny::new(DenyReason::InvalidRequest, "a cookie value that holds a credential cookie"));
            }
            if k != name {
                if cookie_twin(k, name) {
                    return Err(Deny::new(DenyReason::InvalidRequest, "a cookie named like a credential cookie"));
                }
                continue;
            }
            if v.is_empty() {
                continue; // a cleared cookie is no credential
            }
            if v.len() > MAX_TOKEN_BYTES {
                return Err(Deny::bad_credential(DenyReason::TokenInvalid, "token larger than 8 KiB"));
            }
            found.push(Credential::Cookie { name: name.as_str(), token: v });
        }
    }
    if let Some(header) = &policy.api_key_header {
        for value in input.header_values(header) {
            if value.len() > MAX_TOKEN_BYTES {
                return Err(Deny::bad_credential(DenyReason::ApiKeyInvalid, "API key larger than 8 KiB"));
            }
            found.push(Credential::ApiKey(value.trim()));
        }
    }
    match found.len() {
        0 => Ok(None),
        1 => Ok(found.pop()),
        _ => Err(Deny::new(DenyReason::InvalidRequest, "more than one credential in the request")),
    }
}
