//! Request semantics: the parts of a request that upstream frameworks read differently from how
//! a naive judge would (method case, authority forms, override channels, header twins). Each
//! rule refuses an ambiguous request with 400 rather than guess which reading the upstream will
//! use; README "Request semantics" lists them with the framework behaviour behind each.

use super::input::CheckInput;
use super::reason::{Deny, DenyReason};
use std::borrow::Cow;
use std::net::Ipv6Addr;

/// Headers some frameworks obey to replace the request's path or method after authorization
/// (`X-Original-URL` on IIS/Symfony, method overrides). What was authorized must be what runs,
/// so requests carrying any of them are refused, whoever sends them.
pub const OVERRIDE_HEADERS: [&str; 8] = [
    "x-original-url",
    "x-rewrite-url",
    "x-original-method",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    // gunicorn takes SCRIPT_NAME (and, from forwarded_allow_ips, PATH_INFO) from headers.
    "script-name",
    "path-info",
];

/// Headers that change the host or path a framework believes it serves (Rails, Django with
/// `USE_X_FORWARDED_HOST`, Express with `trust proxy`, Spring's `ForwardedHeaderFilter`). Only a
/// peer in `ip.trusted_cidrs` may send them.
pub const FORWARDED_HEADERS: [&str; 10] = [
    "x-forwarded-host",
    "forwarded",
    "x-forwarded-prefix",
    "x-forwarded-uri",
    "x-original-uri",
    // Jetty's ForwardedRequestCustomizer takes the server name and port from these.
    "x-forwarded-server",
    "x-forwarded-port",
    "x-host",
    "x-original-host",
    "x-http-host-override",
];

/// Headers whose underscore spelling is refused whatever the policy says: CGI and WSGI map
/// `x_forwarded_for` and `x-forwarded-for` to the same `HTTP_X_FORWARDED_FOR`.
const ALWAYS_SENSITIVE: [&str; 5] = ["authorization", "cookie", "x-forwarded-for", "x-real-ip", "x-request-id"];

fn invalid(detail: impl Into<String>) -> Deny {
    Deny::new(DenyReason::InvalidRequest, detail)
}

/// A method the upstream will run as written: an RFC 9110 token with no lowercase letter.
/// Werkzeug and Django uppercase `delete` and run the DELETE handler, while a route listing
/// `DELETE` would not have matched it, so lowercase methods are refused rather than folded.
pub fn check_method(method: &str) -> Result<(), Deny> {
    let tchar = |b: u8| b.is_ascii_uppercase() || b.is_ascii_digit() || b"!#$%&'*+-.^_`|~".contains(&b);
    if method.is_empty() || method.len() > 32 || !method.bytes().all(tchar) {
        return Err(invalid("the method is not an uppercase token"));
    }
    Ok(())
}

fn valid_port(port: &str) -> bool {
    (1..=5).contains(&port.len())
        && port.bytes().all(|b| b.is_ascii_digit())
        && port.parse::<u32>().is_ok_and(|p| (1..=65_535).contains(&p))
}

/// A DNS-style name: labels of letters, digits, `-` and `_`, at most one trailing dot.
fn valid_reg_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty() && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// The request's host as every proxy and framework will read it: `:authority` parsed strictly
/// (a name or an IP literal, an optional port 1-65535), without port and one trailing dot.
/// Userinfo, a comma (two `Host` headers joined), a non-numeric port or any other form is
/// refused: nginx, HAProxy and URL parsers each resolve those their own way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authority<'a> {
    /// As sent (Go's ServeMux matches host patterns byte for byte).
    pub name: &'a str,
    /// ASCII-lowercased (DNS, nginx, HAProxy, browsers).
    pub folded: Cow<'a, str>,
}

pub fn parse_authority(raw: &str) -> Result<Authority<'_>, Deny> {
    let bad = |why: &str| Err(invalid(format!("host {why}")));
    if raw.is_empty() {
        return bad("missing");
    }
    if raw.contains(['@', ',', ' ', '\t']) {
        return bad("with userinfo, a comma or whitespace");
    }
    let (host, port) = if let Some(rest) = raw.strip_prefix('[') {
        let Some((literal, after)) = rest.split_once(']') else { return bad("with an unclosed IPv6 literal") };
        if literal.parse::<Ipv6Addr>().is_err() {
            return bad("with an invalid IPv6 literal");
        }
        let port = match after {
            "" => None,
            _ => match after.strip_prefix(':') {
                Some(port) => Some(port),
                None => return bad("with bytes after the IPv6 literal"),
            },
        };
        (&raw[..literal.len() + 2], port)
    } else {
        match raw.rsplit_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (raw, None),
        }
    };
    if port.is_some_and(|p| !valid_port(p)) {
        return bad("with a port that is not a number from 1 to 65535");
    }
    if !host.starts_with('[') && !valid_reg_name(host) {
        return bad("is not a valid name");
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    // One spelling per IPv6 address (`[2001:0db8::1]` is `[2001:db8::1]`), as host patterns.
    if let Some(Ok(addr)) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')).map(str::parse::<Ipv6Addr>) {
        let canonical = format!("[{addr}]");
        let folded = if canonical == name { Cow::Borrowed(name) } else { Cow::Owned(canonical) };
        return Ok(Authority { name, folded });
    }
    let folded = if name.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(name.to_ascii_lowercase())
    } else {
        Cow::Borrowed(name)
    };
    Ok(Authority { name, folded })
}

/// `a` and `b` name the same header for a CGI/WSGI upstream (`_` and `-` both become `_`).
fn cgi_twins(a: &str, b: &str) -> bool {
    let fold = |c: u8| if c == b'_' { b'-' } else { c };
    a.len() == b.len() && a.bytes().map(fold).eq(b.bytes().map(fold))
}

/// Refuses override headers, forwarded-host headers from an untrusted peer, an underscore twin
/// of any `sensitive` header (the policy's identity, strip, tenant and credential headers) and
/// (a `_method` query parameter is the grammar's: [`super::grammar`]).
pub fn check_channels<'a>(
    input: &CheckInput,
    peer_trusted: bool,
    sensitive: impl Iterator<Item = &'a str> + Clone,
) -> Result<(), Deny> {
    for (name, _) in &input.headers {
        if let Some(header) = OVERRIDE_HEADERS.iter().find(|h| *h == name) {
            return Err(invalid(format!("{header} is not accepted")));
        }
        if !peer_trusted && let Some(header) = FORWARDED_HEADERS.iter().find(|h| *h == name) {
            return Err(invalid(format!("{header} from a peer outside ip.trusted_cidrs")));
        }
        // Two names are twins only if one holds an underscore: most headers need no comparison.
        let twin = if name.contains('_') {
            ALWAYS_SENSITIVE
                .iter()
                .chain(FORWARDED_HEADERS.iter())
                .chain(OVERRIDE_HEADERS.iter())
                .copied()
                .chain(sensitive.clone())
                .find(|s| *s != name && cgi_twins(s, name))
        } else {
            // Lengths first: most pairs differ there, before any byte is read.
            sensitive.clone().find(|s| cgi_twins(s, name) && s.contains('_'))
        };
        if let Some(header) = twin {
            return Err(invalid(format!("{name} is another spelling of {header}")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_table() {
        for good in ["GET", "HEAD", "DELETE", "PROPFIND", "M-SEARCH", "X_CUSTOM1"] {
            assert!(check_method(good).is_ok(), "{good}");
        }
        for bad in ["delete", "Delete", "gEt", "", "GET POST", "GET\r\n", "G\u{e9}T", &"A".repeat(33)] {
            assert_eq!(check_method(bad).map_err(|d| d.reason), Err(DenyReason::InvalidRequest), "{bad:?}");
        }
    }

    #[test]
    fn authority_table() {
        let cases: &[(&str, Option<&str>)] = &[
            ("api.example.com", Some("api.example.com")),
            ("API.Example.COM:8443", Some("api.example.com")),
            ("globex.tenants.example.com.", Some("globex.tenants.example.com")),
            ("globex.tenants.example.com.:443", Some("globex.tenants.example.com")),
            ("127.0.0.1:10000", Some("127.0.0.1")),
            ("[::1]:80", Some("[::1]")),
            ("[2001:DB8::1]", Some("[2001:db8::1]")),
            ("[2001:0db8:0::1]:443", Some("[2001:db8::1]")),
            ("[2001:db8::0.0.0.1]", Some("[2001:db8::1]")),
            ("under_score.internal", Some("under_score.internal")),
            ("admin.example.com:x", None),
            ("admin.example.com:", None),
            ("admin.example.com:0", None),
            ("admin.example.com:65536", None),
            ("admin.example.com:+80", None),
            ("u@admin.example.com", None),
            ("a.example.com,admin.example.com", None),
            ("a.example.com, admin.example.com", None),
            ("admin.example.com..", None),
            ("admin..example.com", None),
            (".admin.example.com", None),
            ("admin.example.com%2e", None),
            ("[::1", None),
            ("[not-v6]", None),
            ("[::1]x", None),
            ("::1", None),
            ("", None),
            ("caf\u{e9}.example", None),
        ];
        for (raw, want) in cases {
            assert_eq!(parse_authority(raw).ok().map(|a| a.folded.into_owned()).as_deref(), *want, "{raw:?}");
        }
    }

    fn input(path: &str, headers: &[(&str, &str)]) -> CheckInput {
        CheckInput {
            method: "POST".into(),
            host: "api.example.com".into(),
            path: path.into(),
            headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn channel_table() {
        let sensitive = ["x-user-id", "x-tenant-id"];
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], bool, bool);
        let cases: &[Case] = &[
            ("/items", &[], false, true),
            ("/items", &[("x-forwarded-server", "admin.example.com")], false, false),
            ("/items", &[("x-forwarded-port", "443")], false, false),
            ("/items", &[("x-original-host", "admin.example.com")], false, false),
            ("/items", &[("script-name", "/public")], true, false),
            ("/items", &[("script_name", "/public")], true, false),
            ("/items", &[("path_info", "/admin")], true, false),
            ("/items", &[("x-forwarded-host", "globex.example.com")], false, false),
            ("/items", &[("forwarded", "host=globex.example.com")], false, false),
            ("/items", &[("x-forwarded-prefix", "/admin")], false, false),
            ("/items", &[("x-forwarded-uri", "/admin")], false, false),
            ("/items", &[("x-original-uri", "/admin")], false, false),
            ("/items", &[("x-forwarded-host", "globex.example.com")], true, true),
            ("/items", &[("x-original-url", "/admin")], true, false),
            ("/items", &[("x-http-method-override", "DELETE")], false, false),
            ("/items", &[("x_user_id", "admin")], false, false),
            ("/items", &[("x_tenant-id", "acme")], true, false),
            ("/items", &[("x_forwarded_for", "10.0.0.1")], true, false),
            ("/items", &[("x_forwarded_host", "a")], true, false),
            ("/items", &[("http_authorization", "x")], false, true),
            ("/items", &[("x-user-id", "spoofed")], false, true),
            ("/items", &[("x_other", "fine")], false, true),
        ];
        for (path, headers, trusted, ok) in cases {
            let got = check_channels(&input(path, headers), *trusted, sensitive.iter().copied());
            assert_eq!(got.is_ok(), *ok, "{path} {headers:?} trusted={trusted}: {got:?}");
        }
    }
}
