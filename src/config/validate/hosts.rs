//! Host patterns (`match.host`, a fragment's `hosts`, an `include` entry's `hosts`): what a
//! request's authority can be compared with at all. A port, a scheme, a path, a space or a
//! stray `*` never matches the authority `parse_authority` leaves, so such a route would
//! silently never match and requests would fall to the next one: each is a problem.

use std::net::{Ipv4Addr, Ipv6Addr};

/// A valid pattern, as route matching compares it: lowercase, no trailing dot.
pub fn host_pattern(raw: &str) -> Result<String, String> {
    if raw.is_empty() {
        return Err("an empty host".into());
    }
    if !raw.is_ascii() {
        return Err(format!("\"{raw}\" is not ASCII: write an internationalized name in punycode (xn--…)"));
    }
    if raw.contains("://") {
        return Err(format!("\"{raw}\" has a scheme: name the host alone"));
    }
    if raw.contains(['/', '?', '#']) {
        return Err(format!("\"{raw}\" has a path: name the host alone"));
    }
    if raw.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control()) {
        return Err(format!("\"{raw}\" holds a space or control character"));
    }
    if raw.contains('@') {
        return Err(format!("\"{raw}\" has userinfo: name the host alone"));
    }
    let lower = raw.to_ascii_lowercase();
    if let Some(literal) = lower.strip_prefix('[') {
        return match literal.strip_suffix(']').map(str::parse::<Ipv6Addr>) {
            // One spelling per address, as the request's authority is compared.
            Some(Ok(addr)) => Ok(format!("[{addr}]")),
            _ => Err(format!("\"{raw}\" is not a bracketed IPv6 literal (a port is not part of a host)")),
        };
    }
    if lower.parse::<Ipv6Addr>().is_ok() {
        return Err(format!("\"{raw}\": write an IPv6 literal in brackets, as a request's authority has it"));
    }
    if lower.contains(':') {
        return Err(format!("\"{raw}\" has a port: hosts are compared without one"));
    }
    let name = lower.strip_suffix('.').unwrap_or(&lower);
    if name == "*" || name == "*." {
        return Err("a bare \"*\": a route without match.host matches every host".into());
    }
    let (wildcard, name) = match name.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, name),
    };
    if name.contains('*') {
        return Err(format!("\"{raw}\": a wildcard is only \"*.\" followed by a name"));
    }
    if !wildcard && name.parse::<Ipv4Addr>().is_ok() {
        return Ok(name.to_string());
    }
    if let Some(why) = reg_name_problem(name) {
        return Err(format!("\"{raw}\" {why}"));
    }
    if wildcard && public_suffix(name) {
        return Err(format!("\"{raw}\" covers every name under the public suffix \"{name}\": name a domain you own"));
    }
    Ok(if wildcard { format!("*.{name}") } else { name.to_string() })
}

/// Why `name` is not a DNS name (labels of letters, digits, `-` and `_`), if it is not.
fn reg_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() || name.len() > 253 {
        return Some("is not a host name (1 to 253 characters)");
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Some("has an empty label");
        }
        if label.len() > 63 {
            return Some("has a label over 63 characters");
        }
        if !label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Some("has a character outside letters, digits, '-' and '_'");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Some("has a label that starts or ends with '-'");
        }
    }
    None
}

/// A top-level domain, or a name the public suffix list holds (`co.uk`, `github.io`).
fn public_suffix(name: &str) -> bool {
    !name.contains('.') || psl::suffix_str(name).is_some_and(|suffix| suffix == name)
}

#[cfg(test)]
mod tests {
    use super::host_pattern;

    #[test]
    fn host_pattern_table() {
        let good = [
            ("api.example.com", "api.example.com"),
            ("API.Example.com.", "api.example.com"),
            ("*.payments.example.com", "*.payments.example.com"),
            ("*.example.com", "*.example.com"),
            ("xn--caf-dma.example", "xn--caf-dma.example"),
            ("under_score.internal", "under_score.internal"),
            ("127.0.0.1", "127.0.0.1"),
            ("[::1]", "[::1]"),
            ("[2001:DB8::1]", "[2001:db8::1]"),
            ("[2001:0db8:0::1]", "[2001:db8::1]"),
            ("localhost", "localhost"),
            ("*.default.svc.cluster.local", "*.default.svc.cluster.local"),
        ];
        for (raw, want) in good {
            assert_eq!(host_pattern(raw).as_deref(), Ok(want), "{raw}");
        }
        let bad = [
            "admin.example.com:443",
            "https://admin.example.com",
            "*admin.example.com",
            "admin.example.com/",
            "admin.example.com ",
            " admin.example.com",
            "café.example",
            "*",
            "*.com",
            "*.co.uk",
            "*.github.io",
            "*.internal",
            "a.*.example.com",
            "admin..example.com",
            "admin.example.com/admin",
            "u@admin.example.com",
            "::1",
            "[::1]:443",
            "-admin.example.com",
            "",
        ];
        for raw in bad {
            assert!(host_pattern(raw).is_err(), "{raw:?} accepted");
        }
    }
}
