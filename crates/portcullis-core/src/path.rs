//! Request path checks (docs/contract.md step 4): strip the query, refuse anything ambiguous.

/// Returns the path without query or fragment, or why it is refused.
///
/// Ambiguous paths are refused rather than normalized, so the path that was authorized is the
/// path the upstream receives.
pub fn validate_path(raw: &str) -> Result<&str, &'static str> {
    let path = raw.split(['?', '#']).next().unwrap_or_default();
    if !path.starts_with('/') {
        return Err("path must start with '/'");
    }
    if !path.is_ascii() {
        return Err("non-ASCII byte in path");
    }
    if path.bytes().any(|b| b <= 0x20 || b == 0x7f) {
        return Err("control character or space in path");
    }
    // Jetty, Tomcat and Spring drop `;params` from each segment before routing (and treat `..;`
    // as `..`), so `/admin;x/users` would be judged as one path and run as another.
    if path.contains(';') {
        return Err("';' (a path parameter) in path");
    }
    if path.contains('\\') {
        return Err("backslash in path");
    }
    if path.contains("//") {
        return Err("empty path segment");
    }
    if path.split('/').any(|segment| segment == "." || segment == "..") {
        return Err("dot-segment in path");
    }
    // Only RFC 3986 path characters may appear raw: anything else has two spellings.
    if let Some(b) = path.bytes().find(|b| !raw_allowed(*b)) {
        return Err(match b {
            b'[' | b']' | b'{' | b'}' | b'|' | b'^' | b'`' | b'<' | b'>' | b'"' => {
                "a character that must be percent-encoded"
            }
            _ => "a character outside the path syntax",
        });
    }
    // IIS and ASP.NET drop trailing dots from segments (`/admin./x` runs `/admin/x`).
    if path.split('/').any(|segment| segment.len() > 1 && segment.ends_with('.')) {
        return Err("a path segment ending in '.'");
    }
    let bytes = path.as_bytes();
    for (i, _) in path.match_indices('%') {
        let hex = bytes.get(i + 1..i + 3).ok_or("truncated percent-encoding")?;
        // Two hex digits (from_str_radix alone would take `+1`).
        if !hex.iter().all(u8::is_ascii_hexdigit) {
            return Err("bad percent-encoding");
        }
        let hex = std::str::from_utf8(hex).map_err(|_| "bad percent-encoding")?;
        let value = u8::from_str_radix(hex, 16).map_err(|_| "bad percent-encoding")?;
        // Werkzeug, Go and Jetty decode every escape before routing, so an escape of a byte that
        // may also appear raw (`/v1/items%3Apurge`, `/users/%40me`, `/%61dmin`) would match a
        // route differently from how the upstream runs it; `%25` is how double-decoding stacks
        // (an nginx `$uri` hop) are reached. Only bytes that can never be raw may be escaped.
        if raw_allowed(value) || matches!(value, 0 | b';' | b'\\') {
            return Err("a percent-encoded byte that has a raw spelling (or ';', '\\', NUL)");
        }
        if value == b' ' && bytes.get(i + 3).is_none_or(|next| *next == b'/') {
            return Err("a path segment ending in an encoded space (IIS strips it)");
        }
    }
    if let Some(c) = ascii_twin(path) {
        return Err(match c {
            AsciiTwin::Digit => "an encoded Unicode digit (int() and \\d read it as 0-9)",
            AsciiTwin::Compatible => "an encoded character whose compatibility form holds ASCII (fullwidth, ligatures)",
            AsciiTwin::Case => "an encoded character whose case mapping is ASCII",
        });
    }
    Ok(path)
}

/// Why an encoded non-ASCII character reads as ASCII to some upstream.
pub(crate) enum AsciiTwin {
    /// A decimal digit of another script (`١`, `１`): Python's `int()`, `re`'s `\d` (Werkzeug's
    /// `<int:>`, Django) and .NET's `\d` take it for 0-9.
    Digit,
    /// NFKC holds ASCII (`／`, `ﬁ`, `Ⅸ`): frameworks and identity stacks that normalise
    /// (Django's `slugify`, IDNA, NFKC-folding caches) read the ASCII.
    Compatible,
    /// Its lowercase or uppercase is ASCII (`K` Kelvin, `ſ`, `ı`, `İ`): Unicode-aware
    /// case-insensitive routers fold it onto a route's letters.
    Case,
}

/// The first reason an escaped non-ASCII sequence of `path` has an ASCII reading, if any.
pub(crate) fn ascii_twin(path: &str) -> Option<AsciiTwin> {
    if !path.contains('%') {
        return None;
    }
    let decoded = super::request_match::decode_component(path);
    if decoded.is_ascii() {
        return None;
    }
    String::from_utf8_lossy(&decoded).chars().filter(|c| !c.is_ascii()).find_map(|c| {
        use unicode_normalization::UnicodeNormalization;
        if c.is_numeric() {
            Some(AsciiTwin::Digit)
        } else if std::iter::once(c).nfkc().any(|n| n.is_ascii()) {
            Some(AsciiTwin::Compatible)
        } else if c.to_lowercase().chain(c.to_uppercase()).any(|n| n.is_ascii()) {
            Some(AsciiTwin::Case)
        } else {
            None
        }
    })
}

/// RFC 3986 `pchar` and `/`, less `;` (refused above) plus `%` (checked as an escape).
fn raw_allowed(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,=:@/%".contains(&b)
}
