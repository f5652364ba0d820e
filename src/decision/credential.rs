//! Credential extraction (DESIGN step 6): one bearer token from `authorization`, a named cookie
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
}

/// Where the credential came from; the token itself never leaves this module in a log.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential<'a> {
    Bearer(&'a str),
    Cookie { name: &'a str, token: &'a str },
    ApiKey(&'a str),
}

impl std::fmt::Debug for Credential<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Bearer(_) => f.write_str("Bearer([redacted])"),
            Self::Cookie { name, .. } => write!(f, "Cookie({name}=[redacted])"),
            Self::ApiKey(_) => f.write_str("ApiKey([redacted])"),
        }
    }
}

impl<'a> Credential<'a> {
    pub fn token(&self) -> &'a str {
        match self {
            Self::Bearer(t) => t,
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

fn bearer_token(value: &str) -> Result<&str, Deny> {
    let (scheme, token) = value
        .split_once(' ')
        .ok_or_else(|| Deny::new(DenyReason::InvalidRequest, "authorization header without a token"))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(Deny::new(DenyReason::InvalidRequest, "authorization scheme is not Bearer"));
    }
    if token.len() > MAX_TOKEN_BYTES {
        return Err(Deny::new(DenyReason::TokenInvalid, "token larger than 8 KiB"));
    }
    if !is_token68(token) {
        return Err(Deny::new(DenyReason::InvalidRequest, "malformed bearer token"));
    }
    Ok(token)
}

/// Finds the request's single credential. `Ok(None)` means none was sent.
pub fn extract_credential<'a>(
    input: &'a CheckInput,
    policy: &'a CredentialPolicy,
) -> Result<Option<Credential<'a>>, Deny> {
    let mut found: Vec<Credential<'a>> = Vec::new();
    if policy.bearer {
        for value in input.header_values("authorization") {
            found.push(Credential::Bearer(bearer_token(value)?));
        }
    }
    for name in &policy.cookies {
        // Cookie values cannot hold ',' or ';' (RFC 6265), so splitting on both also handles
        // cookie headers that Envoy comma-joined.
        for pair in input.header_values("cookie").flat_map(|v| v.split([';', ','])) {
            let Some((k, v)) = pair.trim().split_once('=') else {
                continue;
            };
            if k != name {
                continue;
            }
            let v = v.trim_matches('"');
            if v.is_empty() {
                continue; // a cleared cookie is no credential
            }
            if v.len() > MAX_TOKEN_BYTES {
                return Err(Deny::new(DenyReason::TokenInvalid, "token larger than 8 KiB"));
            }
            found.push(Credential::Cookie { name: name.as_str(), token: v });
        }
    }
    if let Some(header) = &policy.api_key_header {
        for value in input.header_values(header) {
            if value.len() > MAX_TOKEN_BYTES {
                return Err(Deny::new(DenyReason::ApiKeyInvalid, "API key larger than 8 KiB"));
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
