//! The request grammar (docs/contract.md step 4): what a request may spell at all, checked before
//! routing. It accepts only forms that every upstream parser we know reads the same way, instead
//! of refusing the spellings found so far; README "Request semantics" gives the framework
//! behaviour behind each rule, and `tests/it/upstreams.rs` (the differential fuzzer included)
//! checks it against the real frameworks.
//!
//! - Header names: `[a-z0-9-]` only (Envoy lowercases names). PHP's `$_SERVER` turns `.` and
//!   space into `_`, CGI and WSGI turn `-` into `_` as well, so `x.user.id` and `x_user_id` both
//!   reach such an app as `X-User-Id`. `grammar.header_underscores: true` lets `_` through
//!   (the underscore twins of sensitive headers stay refused, [`super::semantics`]).
//! - Query keys: decoded, a plain name: no NUL or control byte (PHP cuts a key at NUL), and no
//!   `[` or `]` (qs, Rack and PHP read `[debug]`, `]]debug`, `debug[x]` as `debug`) unless
//!   `grammar.query_arrays: true`, where [`key_names`] gives every reading a matcher and the `_method` refusal must see.

use super::input::CheckInput;
use super::reason::{Deny, DenyReason};
use super::request_match::{decode_component, query_pairs};

/// Forms a deployment's upstream truly needs that the default grammar refuses (`grammar:` in
/// the policy). Both default to refusing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Grammar {
    /// `_` in header names (Istio's Envoy default allows them).
    pub header_underscores: bool,
    /// `[` and `]` in query keys (`ids[]=1&ids[]=2`, Rails' and PHP's array syntax).
    pub query_arrays: bool,
}

fn invalid(detail: impl Into<String>) -> Deny {
    Deny::new(DenyReason::InvalidRequest, detail)
}

/// A header name every upstream reads as sent: lowercase letters, digits and `-` (and `_` when
/// the policy allows it). Pseudo-headers (`:path`) are Envoy's own.
fn plain_header_name(name: &str, grammar: Grammar) -> bool {
    name.starts_with(':')
        || (!name.is_empty()
            && name.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || (grammar.header_underscores && b == b'_')
            }))
}

/// A decoded query key every upstream reads as one name.
fn plain_query_key(key: &[u8], grammar: Grammar) -> Result<(), &'static str> {
    if key.iter().any(|b| *b < 0x20 || *b == 0x7f) {
        return Err("a query parameter name holds NUL or a control character");
    }
    if !grammar.query_arrays && key.iter().any(|b| matches!(b, b'[' | b']')) {
        return Err("a query parameter name holds '[' or ']' (array syntax is off: grammar.query_arrays)");
    }
    Ok(())
}

/// Refuses a request whose header names or query keys fall outside the grammar.
pub fn check_grammar(input: &CheckInput, grammar: Grammar) -> Result<(), Deny> {
    if let Some((name, _)) = input.headers.iter().find(|(name, _)| !plain_header_name(name, grammar)) {
        // The name is the client's: shown escaped, never raw.
        return Err(invalid(format!("header name {:?} is outside [a-z0-9-]", name.escape_debug().to_string())));
    }
    // PHP's built-in server and httptools (uvicorn) skip extra `?`s before the query:
    // `/items??_method=DELETE` holds `_method` to them and `?_method` to everyone else.
    if input.path.split('#').next().and_then(|t| t.split_once('?')).is_some_and(|(_, q)| q.starts_with('?')) {
        return Err(invalid("the query starts with another '?'"));
    }
    // One pass, one decoding per key: the key's own form, then `_method` in any framework's
    // reading (Laravel, Symfony and Rails run `POST …?_method=DELETE` as DELETE; PHP also reads
    // `_method[]`, `.method`, ` _method`).
    for (raw, _) in query_pairs(&input.path) {
        let key = decode_component(raw);
        plain_query_key(&key, grammar).map_err(invalid)?;
        // ASP.NET Core and other Unicode-aware readers fold `ſ` to `s`, `K` to `k`.
        if raw.contains('%') && super::path::ascii_twin(raw).is_some() {
            return Err(invalid("a query parameter name holds a character with an ASCII reading"));
        }
        if key_names(&key, "_method") {
            return Err(invalid("a _method query parameter is not accepted"));
        }
    }
    Ok(())
}

/// PHP's `$_GET` key: cut at NUL, leading spaces dropped, ` ` and `.` as `_` up to the first
/// `[`; that `[` opens an array when a `]` follows (the name is what stands before it), else it
/// too becomes `_` (only the first: PHP stops mangling there).
fn php_key(key: &[u8]) -> impl Iterator<Item = u8> + '_ {
    let key = &key[..key.iter().position(|b| *b == 0).unwrap_or(key.len())];
    let key = &key[key.iter().position(|b| *b != b' ').unwrap_or(key.len())..];
    let open = key.iter().position(|b| *b == b'[');
    let (name, tail): (&[u8], &[u8]) = match open {
        // An array: the name stands before the bracket.
        Some(i) if key[i + 1..].contains(&b']') => (&key[..i], &[]),
        Some(i) => (&key[..i], &key[i + 1..]),
        None => (key, &[]),
    };
    let mangled = name.iter().map(|b| if matches!(b, b' ' | b'.') { b'_' } else { *b });
    let bracket = open.filter(|i| !key[i + 1..].contains(&b']')).map(|_| b'_');
    mangled.chain(bracket).chain(tail.iter().copied())
}

/// qs (Express's `extended` parser): a key that opens with a bracket names its content
/// (`[debug]` is `debug`); otherwise the name stands before the first `[`.
fn qs_key(key: &[u8]) -> &[u8] {
    if let Some(rest) = key.strip_prefix(b"[")
        && let Some(end) = rest.iter().position(|b| *b == b']')
    {
        return &rest[..end];
    }
    &key[..key.iter().position(|b| *b == b'[').unwrap_or(key.len())]
}

/// Rack (Rails' `params`): leading `[` and `]` dropped, the name is the first run without a
/// bracket (`]]debug`, `[[debug]]`, `debug[x]` are `debug`).
fn rack_key(key: &[u8]) -> &[u8] {
    let start = key.iter().position(|b| !matches!(b, b'[' | b']')).unwrap_or(key.len());
    let rest = &key[start..];
    &rest[..rest.iter().position(|b| matches!(b, b'[' | b']')).unwrap_or(rest.len())]
}

/// Whether some framework reads decoded key `key` as `name`, ASCII case folded (ASP.NET Core
/// compares names case-insensitively): as sent, qs, Rack or PHP. Allocates nothing.
pub fn key_names(key: &[u8], name: &str) -> bool {
    let name = name.as_bytes();
    let same = |reading: &[u8]| reading.eq_ignore_ascii_case(name);
    same(key)
        || same(qs_key(key))
        || same(rack_key(key))
        || php_key(key).map(|b| b.to_ascii_lowercase()).eq(name.iter().map(u8::to_ascii_lowercase))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(path: &str, headers: &[&str]) -> CheckInput {
        CheckInput {
            method: "GET".into(),
            host: "api.example.com".into(),
            path: path.into(),
            headers: headers.iter().map(|k| (k.to_string(), "1".to_string())).collect(),
            ..Default::default()
        }
    }

    /// (path, header names, grammar allows underscores, allows arrays, accepted)
    #[test]
    fn grammar_table() {
        type Case<'a> = (&'a str, &'a [&'a str], bool, bool, bool);
        let cases: &[Case] = &[
            ("/items", &[":authority", ":path", "x-user-id", "accept", "x-b3-traceid"], false, false, true),
            ("/items", &["x.user.id"], false, false, false),
            ("/items", &["x.http.method.override"], false, false, false),
            ("/items", &["x.forwarded.host"], false, false, false),
            ("/items", &["x debug"], false, false, false),
            ("/items", &["x_debug"], false, false, false),
            ("/items", &["x_debug"], true, false, true),
            ("/items", &["x.debug"], true, false, false),
            ("/items", &["x+debug"], false, false, false),
            ("/items", &["x\u{0}debug"], false, false, false),
            ("/items", &["xdebug\u{e9}"], false, false, false),
            ("/items", &[""], false, false, false),
            ("/items?debug=1&a=2", &[], false, false, true),
            ("/items?_method%00=DELETE", &[], false, false, false),
            ("/items?debug%00x=1", &[], false, false, false),
            ("/items?debug%00x=1", &[], true, true, false),
            ("/items?de%1Fbug=1", &[], false, false, false),
            ("/items?de%7Fbug=1", &[], false, false, false),
            ("/items?[debug]=1", &[], false, false, false),
            ("/items?%5Bdebug%5D=1", &[], false, false, false),
            ("/items?]]debug=1", &[], false, false, false),
            ("/items?[[debug]]=1", &[], false, false, false),
            ("/items?ids[]=1&ids[]=2", &[], false, false, false),
            ("/items?ids[]=1&ids[]=2", &[], false, true, true),
            ("/items?a=1;[debug]=1", &[], false, false, false),
            ("/items?a=%00", &[], false, false, true),
            ("/items#?[debug]=1", &[], false, false, true),
            ("/items??_method=DELETE", &[], false, false, false),
            ("/items??debug=1", &[], true, true, false),
            ("/items?a=1&?b=2", &[], false, false, true),
            ("/items?%C5%BFort=1", &[], false, false, false),
            ("/items?%E2%84%AAey=1", &[], false, false, false),
            ("/items?caf%C3%A9=1", &[], false, false, true),
            // `_method` in any case, encoding or framework reading (from semantics' table).
            ("/items?_method=DELETE", &[], false, false, false),
            ("/items?a=1&_METHOD=DELETE", &[], false, false, false),
            ("/items?%5Fmethod=DELETE", &[], false, false, false),
            ("/items?_method%5B%5D=DELETE", &[], false, true, false),
            ("/items?_method[]=DELETE", &[], false, true, false),
            ("/items?x=1;_method=DELETE", &[], false, false, false),
            ("/items?_methods=1&method=DELETE", &[], false, false, true),
            ("/items?.method=DELETE", &[], false, false, false),
            ("/items?%2Emethod=DELETE", &[], false, false, false),
            ("/items?+_method=DELETE", &[], false, false, false),
            ("/items?%20_method=DELETE", &[], false, false, false),
            ("/items#?_method=DELETE", &[], false, false, true),
        ];
        for (path, headers, underscores, arrays, ok) in cases {
            let grammar = Grammar { header_underscores: *underscores, query_arrays: *arrays };
            let got = check_grammar(&input(path, headers), grammar);
            assert_eq!(got.is_ok(), *ok, "{path} {headers:?} {grammar:?}: {got:?}");
            if let Err(deny) = got {
                assert_eq!(deny.reason, DenyReason::InvalidRequest);
            }
        }
    }

    /// What each framework reads a key as (checked against qs 6, Rack 2.2 and PHP 8.2 by
    /// `tests/it/upstreams.rs`).
    #[test]
    fn key_reading_table() {
        let cases: &[(&[u8], &str, bool)] = &[
            (b"debug", "debug", true),
            (b"DEBUG", "debug", true),
            (b"[debug]", "debug", true),
            (b"[debug][x]", "debug", true),
            (b"]]debug", "debug", true),
            (b"[[debug]]", "debug", true),
            (b"debug[]", "debug", true),
            (b"debug[0]", "debug", true),
            (b"debug\0x", "debug", true),
            (b" de.bug", "de_bug", true),
            (b"de bug", "de_bug", true),
            (b"de[bug", "de_bug", true),
            (b"_method\0", "_method", true),
            (b".method", "_method", true),
            (b"_method[]", "_method", true),
            (b"debugger", "debug", false),
            (b"x[debug]", "debug", false),
            (b"de_bug", "debug", false),
        ];
        for (key, name, want) in cases {
            assert_eq!(key_names(key, name), *want, "{:?} as {name}", String::from_utf8_lossy(key));
        }
    }
}
