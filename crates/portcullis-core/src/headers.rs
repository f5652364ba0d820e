//! Identity headers set on allow, and the header names removed on every allow (docs/contract.md step 13).

use super::claim_set::Claims;
use super::reason::{Deny, DenyReason};
use serde_json::Value;
use std::borrow::Cow;
use std::sync::{Arc, OnceLock};

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

pub fn claim_values(policy: &ResponsePolicy, claims: &Claims) -> Result<ClaimValues, Deny> {
    policy
        .identity_headers
        .iter()
        .map(|header| match &header.source {
            IdentitySource::Claim(pointer) => match claims.at(pointer) {
                Some(Value::Null) | None => Ok(None),
                Some(value) => encode_header_value(value).map(|v| Some(v.into_boxed_str())),
            },
            IdentitySource::Tenant => Ok(None),
        })
        .collect()
}

/// A token's claim values, encoded on its first allow and kept with the token: a cached
/// token's later allows neither look its claims up nor encode them again. About 140 bytes per
/// cached identity for two values (counting allocator: 77 for the values, the rest the cell);
/// the whole header plan would be several hundred.
///
/// A cached token outlives policy reloads that leave its issuer alone, so the values remember
/// the identity header list they were made for (holding it, so its address cannot be reused):
/// a reload with the same list keeps them, another list gets values worked out afresh.
#[derive(Debug, Default)]
pub struct PreparedHeaders(OnceLock<Prepared>);

#[derive(Debug)]
struct Prepared {
    made_for: Arc<[IdentityHeader]>,
    values: Result<ClaimValues, Box<Deny>>,
}

impl PreparedHeaders {
    /// Heap bytes of the values prepared so far.
    pub fn heap_bytes(&self) -> usize {
        self.0.get().map_or(0, |p| match &p.values {
            Ok(values) => {
                values.iter().map(|v| std::mem::size_of::<Option<Box<str>>>() + v.as_ref().map_or(0, |v| v.len())).sum()
            }
            Err(_) => 0,
        })
    }

    pub fn claim_values(&self, policy: &ResponsePolicy, claims: &Claims) -> Result<Cow<'_, [Option<Box<str>>]>, Deny> {
        let prepared = self.0.get_or_init(|| Prepared {
            made_for: policy.identity_headers.clone(),
            values: claim_values(policy, claims).map_err(Box::new),
        });
        if !Arc::ptr_eq(&prepared.made_for, &policy.identity_headers) && prepared.made_for != policy.identity_headers {
            return claim_values(policy, claims).map(|values| Cow::Owned(values.into_vec()));
        }
        match &prepared.values {
            Ok(values) => Ok(Cow::Borrowed(values)),
            Err(deny) => Err(deny.as_ref().clone()),
        }
    }
}

/// Header sets and removals for an allow from [`claim_values`] (`None`: anonymous request).
pub fn header_plan(
    policy: &ResponsePolicy,
    values: Option<&[Option<Box<str>>]>,
    tenant: Option<&str>,
) -> Result<HeaderPlan, Deny> {
    let mut set: Vec<(String, String)> = Vec::new();
    for (i, header) in policy.identity_headers.iter().enumerate() {
        let value = match (&header.source, values) {
            (IdentitySource::Claim(_), Some(values)) => values.get(i).and_then(|v| v.as_deref()).map(str::to_string),
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
