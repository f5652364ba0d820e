//! Identity headers set on allow, and the header names removed on every allow (docs/contract.md step 13).

use super::claim_set::Claims;
use super::reason::{Deny, DenyReason};
use serde_json::Value;
use std::sync::Arc;

/// Longest encoded identity header value forwarded; longer ones deny the request.
pub const MAX_HEADER_VALUE: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentitySource {
    /// JSON Pointer into the verified claims.
    Claim(String),
    /// The verified tenant (tenant resolution arrives with the tenant issue).
    Tenant,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityHeader {
    /// Lowercase header name.
    pub name: String,
    pub source: IdentitySource,
}

#[derive(Debug, Clone, Default)]
pub struct ResponsePolicy {
    /// Shared, so a cached token's prepared values can hold on to the list they were made for.
    pub identity_headers: Arc<[IdentityHeader]>,
    /// Lowercase names removed from every allowed request unless set as identity headers.
    pub strip_headers: Vec<String>,
    pub remove_authorization: bool,
    /// `realm` of the `www-authenticate` challenge.
    pub realm: String,
    /// Added to the client's response on allow and deny (`response.security_headers`).
    pub security_headers: Vec<(String, String)>,
}

/// Percent-encodes everything outside visible ASCII, `%` itself and the list and parameter
/// delimiters `,` `;` `"` `\`, so a claim can never inject header syntax and one claim element
/// can never read as two (`["viewer,admin"]` is `viewer%2Cadmin`, not two roles); arrays are
/// comma-joined. Objects, nulls and over-long values are refused.
pub fn encode_header_value(value: &Value) -> Result<String, Deny> {
    let mut out = String::new();
    match value {
        Value::String(s) => encode_into(&mut out, s)?,
        Value::Number(n) => encode_into(&mut out, &n.to_string())?,
        Value::Bool(b) => encode_into(&mut out, if *b { "true" } else { "false" })?,
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                match item {
                    Value::String(s) => encode_into(&mut out, s)?,
                    Value::Number(n) => encode_into(&mut out, &n.to_string())?,
                    Value::Bool(b) => encode_into(&mut out, if *b { "true" } else { "false" })?,
                    _ => return Err(unforwardable("nested value in identity claim")),
                }
            }
        }
        Value::Null | Value::Object(_) => {
            return Err(unforwardable("identity claim is not a scalar or list"));
        }
    }
    Ok(out)
}

/// [`encode_header_value`] of a string.
fn encode_text(raw: &str) -> Result<String, Deny> {
    let mut out = String::with_capacity(raw.len());
    encode_into(&mut out, raw)?;
    Ok(out)
}

fn encode_into(out: &mut String, raw: &str) -> Result<(), Deny> {
    use std::fmt::Write;
    for byte in raw.bytes() {
        if (0x21..=0x7e).contains(&byte) && !matches!(byte, b'%' | b',' | b';' | b'"' | b'\\') {
            out.push(byte as char);
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
        if out.len() > MAX_HEADER_VALUE {
            return Err(unforwardable("identity header value longer than 1 KiB"));
        }
    }
    Ok(())
}

fn unforwardable(detail: &str) -> Deny {
    Deny::new(DenyReason::ClaimMismatch, detail)
}

/// What an allow does to the request's headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderPlan {
    /// Set (overwriting any client value).
    pub set: Vec<(String, String)>,
    /// Removed; never also in `set`, since Envoy applies removals after sets.
    pub remove: Vec<String>,
}

/// The encoded claim values of the policy's identity headers, in its order; `None` where the
/// claim is absent or null, and for the tenant header (the request's, not the token's).
pub type ClaimValues = Box<[Option<Box<str>>]>;

pub fn claim_values(identity_headers: &[IdentityHeader], claims: &Claims) -> Result<ClaimValues, Deny> {
    values_by(identity_headers, |pointer| claims.at(pointer))
}

/// [`claim_values`] with the claims looked up by `lookup` (a JSON Pointer into the claims).
fn values_by<'a>(
    identity_headers: &[IdentityHeader],
    lookup: impl Fn(&str) -> Option<&'a Value>,
) -> Result<ClaimValues, Deny> {
    identity_headers
        .iter()
        .map(|header| match &header.source {
            IdentitySource::Claim(pointer) => match lookup(pointer) {
                Some(Value::Null) | None => Ok(None),
                Some(value) => encode_header_value(value).map(|v| Some(v.into_boxed_str())),
            },
            IdentitySource::Tenant => Ok(None),
        })
        .collect()
}

/// The values an allow forwards: lines of a token's packed text, or worked out for this request.
#[derive(Debug)]
pub enum IdentityValues<'a> {
    /// One line per header; a line that is [`SUBJECT_LINE`] or [`ISS_LINE`] stands for the
    /// token's subject or `iss` (written once in the token, not again per header).
    Packed {
        lines: &'a str,
        subject: &'a str,
        iss: &'a str,
    },
    Fresh(ClaimValues),
}

/// A packed value line standing for the subject (an encoded value never holds a control
/// character: [`encode_header_value`] writes only visible ASCII).
pub const SUBJECT_LINE: &str = "\u{1}";
/// A packed value line standing for the token's `iss`.
pub const ISS_LINE: &str = "\u{2}";

impl IdentityValues<'_> {
    /// Header `i`'s value, `None` when it has none.
    pub fn get(&self, i: usize) -> Option<&str> {
        match self {
            Self::Packed { lines, subject, iss } => match lines.split('\n').nth(i)? {
                SUBJECT_LINE => Some(*subject),
                ISS_LINE => Some(*iss),
                line => Some(line),
            }
            .filter(|v| !v.is_empty()),
            Self::Fresh(values) => values.get(i)?.as_deref(),
        }
    }
}

impl super::types::VerifiedToken {
    /// The identity header values for `policy`: the packed ones when they were made for its
    /// list, else worked out from the claims now.
    ///
    /// A verified token's identity header values are encoded once at verification and kept in the
    /// token's packed text (one line per header, empty where there is none; see [`pack_token`]):
    /// a cached token's allows neither look its claims up nor encode them again, and hold no
    /// allocation of their own.
    ///
    /// A cached token outlives policy reloads that leave its issuer alone, so the token remembers
    /// the identity header list its values were made for (holding it, so its address cannot be
    /// reused): a reload with an equal list keeps them, another list gets values worked out afresh
    /// from the claims, as does a token whose claims could not be encoded (its deny comes again).
    pub fn identity_values(&self, policy: &ResponsePolicy) -> Result<IdentityValues<'_>, Deny> {
        match &self.values_for {
            Some(list) if Arc::ptr_eq(list, &policy.identity_headers) || **list == *policy.identity_headers => {
                Ok(IdentityValues::Packed {
                    lines: self.claims.value_lines(),
                    subject: self.subject(),
                    iss: self.iss(),
                })
            }
            _ => claim_values(&policy.identity_headers, &self.claims).map(IdentityValues::Fresh),
        }
    }
}

/// What [`pack_token`] makes: the claims and the list their values were made for.
pub type PackedToken = (Claims, Option<Arc<[IdentityHeader]>>);

/// One verified token's subject, identity header values and kept claims in one allocation:
/// the text is the subject, then one line per identity header of `identity` (when every value
/// encodes; otherwise none are prepared; a value equal to the subject or `iss` is a marker
/// line, see [`IdentityValues::Packed`]), then the claims' compact JSON. Returns the claims and
/// the list the values were made for (`None`: none prepared); `Err` for a text past 4 GiB.
pub fn pack_token(
    iss: &Arc<str>,
    subject: &str,
    claims: serde_json::Map<String, Value>,
    identity: Option<&Arc<[IdentityHeader]>>,
) -> Result<PackedToken, super::claim_set::Unpackable> {
    // The values are read from the map as it is (no packed text parsed back); the empty
    // pointer is the whole claim set, which `Claims::at` never finds either.
    let object = Value::Object(claims);
    let lines = identity.and_then(|list| {
        let values = values_by(list, |pointer| object.pointer(pointer).filter(|_| !pointer.is_empty())).ok()?;
        let mut lines = String::new();
        for (i, value) in values.iter().enumerate() {
            if i > 0 {
                lines.push('\n');
            }
            lines.push_str(match value.as_deref().unwrap_or_default() {
                v if !v.is_empty() && v == subject => SUBJECT_LINE,
                v if !v.is_empty() && v == &**iss => ISS_LINE,
                v => v,
            });
        }
        Some((list.clone(), lines))
    });
    let map = match object {
        Value::Object(map) => map,
        _ => serde_json::Map::new(),
    };
    let (made_for, lines) = lines.map_or((None, String::new()), |(list, lines)| (Some(list), lines));
    Ok((Claims::pack(Some(iss.clone()), subject, &lines, map)?, made_for))
}

/// Header sets and removals for an allow from [`claim_values`] (`None`: anonymous request).
pub fn header_plan(
    policy: &ResponsePolicy,
    values: Option<&IdentityValues>,
    tenant: Option<&str>,
) -> Result<HeaderPlan, Deny> {
    let mut set: Vec<(String, String)> = Vec::new();
    for (i, header) in policy.identity_headers.iter().enumerate() {
        let value = match (&header.source, values) {
            (IdentitySource::Claim(_), Some(values)) => values.get(i).map(str::to_string),
            (IdentitySource::Tenant, Some(_)) => tenant.map(encode_text).transpose()?,
            (_, None) => None,
        };
        if let Some(value) = value.filter(|v| !v.is_empty()) {
            set.push((header.name.clone(), value));
        }
    }
    let mut remove: Vec<String> = Vec::new();
    let candidates = policy
        .identity_headers
        .iter()
        .map(|h| h.name.as_str())
        .chain(policy.strip_headers.iter().map(String::as_str))
        .chain(policy.remove_authorization.then_some("authorization"));
    for name in candidates {
        // Envoy applies removals after sets, so a header that is set must not be removed.
        if !set.iter().any(|(n, _)| n == name) && !remove.iter().any(|n| n == name) {
            remove.push(name.to_string());
        }
    }
    Ok(HeaderPlan { set, remove })
}
