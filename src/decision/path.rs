//! Request path checks (DESIGN step 4): strip the query, refuse anything ambiguous.

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
    let bytes = path.as_bytes();
    for (i, _) in path.match_indices('%') {
        let hex = bytes.get(i + 1..i + 3).ok_or("truncated percent-encoding")?;
        let hex = std::str::from_utf8(hex).map_err(|_| "bad percent-encoding")?;
        let value = u8::from_str_radix(hex, 16).map_err(|_| "bad percent-encoding")?;
        if matches!(value, b'.' | b'/' | b'\\' | b';' | 0) {
            return Err("percent-encoded '.', '/', '\\', ';' or NUL in path");
        }
        // An encoded unreserved character would match routes differently from how the
        // upstream decodes it (`/%61dmin` vs `/admin`).
        if value.is_ascii_alphanumeric() || matches!(value, b'-' | b'_' | b'~') {
            return Err("percent-encoded unreserved character in path");
        }
    }
    Ok(path)
}
