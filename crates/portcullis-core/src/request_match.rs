//! Route matchers on request headers and query parameters (docs/contract.md step 4).
//!
//! A header or query parameter can be sent more than once, and upstreams disagree about which
//! copy counts (Flask and Express take the first query value, PHP the last; a comma-joined
//! header reads as one value to some and a list to others; some parsers split the query on
//! `;`). A test therefore holds only when every reading agrees: all copies pass, or all fail.
//! When they disagree the request is refused 400 `invalid_request`, as with path spellings.

use super::grammar::key_names;
use super::reason::{Deny, DenyReason};
use regex::Regex;
use std::borrow::Cow;

/// What a header or query value must satisfy.
#[derive(Debug, Clone)]
pub enum ValueTest {
    /// Sent at all (any value, even empty).
    Present,
    Equals(String),
    /// Anchored: the whole value must match.
    Regex(Regex),
}

impl ValueTest {
    fn holds(&self, value: &str) -> bool {
        match self {
            Self::Present => true,
            Self::Equals(want) => want == value,
            Self::Regex(re) => re.is_match(value),
        }
    }
}

/// One matcher: a lowercase header name or a query parameter name, and its test.
#[derive(Debug, Clone)]
pub struct ValueMatcher {
    pub name: String,
    pub test: ValueTest,
}

/// `Some(true)` when every value passes, `Some(false)` when none does (or there is none),
/// `None` when some pass and some fail.
fn verdict<'a>(values: impl Iterator<Item = Cow<'a, str>>, test: &ValueTest) -> Option<bool> {
    let (mut seen, mut passed) = (0usize, 0usize);
    for value in values {
        seen += 1;
        passed += usize::from(test.holds(&value));
    }
    match passed {
        0 => Some(false),
        p if p == seen => Some(true),
        _ => None,
    }
}

fn ambiguous(what: &str, name: &str) -> Deny {
    Deny::new(
        DenyReason::InvalidRequest,
        format!("{what} {name} is sent more than once, or as a list, with values a route matcher reads differently"),
    )
}

/// Whether the request's headers satisfy `m`: each value as sent, and each comma-separated
/// element of it, must give the same answer.
pub fn header_matches<'a>(headers: impl Iterator<Item = &'a str> + Clone, m: &ValueMatcher) -> Result<bool, Deny> {
    let whole = verdict(headers.clone().map(Cow::Borrowed), &m.test);
    let elements = verdict(headers.flat_map(|v| v.split(',')).map(|v| Cow::Borrowed(v.trim())), &m.test);
    match (whole, elements) {
        (Some(a), Some(b)) if a == b => Ok(a),
        _ => Err(ambiguous("header", &m.name)),
    }
}

/// The decoded values of query parameter `name` in `target` (the request target with its
/// query), splitting pairs on `&` and, when `semicolons`, also on `;`.
fn query_values<'a>(target: &'a str, name: &'a str, semicolons: bool) -> impl Iterator<Item = Cow<'a, str>> + 'a {
    let query = target.split('#').next().and_then(|t| t.split_once('?')).map_or("", |(_, q)| q);
    let separators: &[char] = if semicolons { &['&', ';'] } else { &['&'] };
    query.split(separators).filter(|pair| !pair.is_empty()).filter_map(move |pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (*decode_component(key) == *name.as_bytes())
            .then(|| Cow::Owned(String::from_utf8_lossy(&decode_component(value)).into_owned()))
    })
}

/// The query's `key=value` pairs, undecoded, split on `&` and `;` (some parsers split on both).
pub(crate) fn query_pairs(target: &str) -> impl Iterator<Item = (&str, &str)> {
    let query = target.split('#').next().and_then(|t| t.split_once('?')).map_or("", |(_, q)| q);
    query.split(['&', ';']).filter(|pair| !pair.is_empty()).map(|pair| pair.split_once('=').unwrap_or((pair, "")))
}

/// A key that is not `name` as written but is `name` to some framework (`Debug`, `debug[]`,
/// `[debug]`, `de.bug` for `de_bug`: [`super::grammar::key_names`]) makes the matcher's
/// answer depend on the upstream: refused.
fn spelled_otherwise(target: &str, name: &str) -> bool {
    query_pairs(target).any(|(key, _)| {
        let key = decode_component(key);
        *key != *name.as_bytes() && key_names(&key, name)
    })
}

/// Whether the query satisfies `m`: read with `&` alone and with `&` and `;` as separators,
/// every copy of the parameter must give the same answer.
pub fn query_matches(target: &str, m: &ValueMatcher) -> Result<bool, Deny> {
    if spelled_otherwise(target, &m.name) {
        return Err(ambiguous("query parameter", &m.name));
    }
    let plain = verdict(query_values(target, &m.name, false), &m.test);
    let semis = verdict(query_values(target, &m.name, true), &m.test);
    match (plain, semis) {
        (Some(a), Some(b)) if a == b => Ok(a),
        _ => Err(ambiguous("query parameter", &m.name)),
    }
}

/// `%XX` decoding of a query key or value (`+` is a space); undecodable escapes stay as written.
pub(crate) fn decode_component(component: &str) -> Cow<'_, [u8]> {
    let bytes = component.as_bytes();
    // Most keys and values hold no escape: no copy.
    if !bytes.iter().any(|b| matches!(b, b'%' | b'+')) {
        return Cow::Borrowed(bytes);
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(value)) => {
                out.push(value);
                i += 3;
                continue;
            }
            (b'+', _) => out.push(b' '),
            (b, _) => out.push(b),
        }
        i += 1;
    }
    Cow::Owned(out)
}
