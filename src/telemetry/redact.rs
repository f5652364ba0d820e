//! The redaction layer: scrubs anything shaped like a credential from log output.

use regex::Regex;
use std::io::{self, Write};
use std::sync::LazyLock;

/// JOSE segments start with `eyJ` (base64url of `{"`); bearer values and `pk_` API keys are
/// recognisable by their prefix.
static PATTERNS: LazyLock<Vec<(Regex, &'static str)>> = LazyLock::new(|| {
    [
        (r"eyJ[A-Za-z0-9_-]{4,}(?:\.[A-Za-z0-9_-]*){0,4}", "[redacted]"),
        // A credential is long or holds something other than lowercase letters ("malformed bearer
        // token" is prose); a `\` ends it so a JSON escape is never half eaten.
        (r#"\b((?i:bearer|basic))(\s+|%20)(?:[a-z]{16,}|[^\s,;"'\\]*[^\sa-z,;"'\\][^\s,;"'\\]*)"#, "$1 [redacted]"),
        (r"\bpk_[A-Za-z0-9_-]{8,}", "[redacted]"),
    ]
    .into_iter()
    .filter_map(|(p, r)| Regex::new(p).ok().map(|re| (re, r)))
    .collect()
});

/// API-key patterns for prefixes other than `pk_` (`credentials.api_keys.prefix`).
static KEY_PATTERNS: std::sync::RwLock<Vec<Regex>> = std::sync::RwLock::new(Vec::new());

/// Also scrub keys with this prefix from now on (the prefix is validated to `[a-z0-9_]`).
pub fn register_api_key_prefix(prefix: &str) {
    if prefix == "pk_" {
        return;
    }
    let Ok(re) = Regex::new(&format!(r"\b{}[A-Za-z0-9_-]{{8,}}", regex::escape(prefix))) else { return };
    if let Ok(mut patterns) = KEY_PATTERNS.write()
        && !patterns.iter().any(|p| p.as_str() == re.as_str())
    {
        patterns.push(re);
    }
}

/// Returns `text` with every credential-shaped run replaced.
pub fn scrub(text: &str) -> String {
    let fixed = PATTERNS
        .iter()
        .fold(text.to_string(), |acc, (re, replacement)| re.replace_all(&acc, *replacement).into_owned());
    match KEY_PATTERNS.read() {
        Ok(patterns) => patterns.iter().fold(fixed, |acc, re| re.replace_all(&acc, "[redacted]").into_owned()),
        Err(_) => fixed,
    }
}

/// A writer that scrubs each formatted log line before it reaches stderr.
pub struct RedactingStderr;

pub struct RedactingWriter<W: Write> {
    inner: W,
}

impl<W: Write> Write for RedactingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let clean = scrub(&String::from_utf8_lossy(buf));
        self.inner.write_all(clean.as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for RedactingStderr {
    type Writer = RedactingWriter<io::Stderr>;

    fn make_writer(&'a self) -> Self::Writer {
        RedactingWriter { inner: io::stderr() }
    }
}

#[cfg(test)]
mod tests {
    use super::scrub;

    #[test]
    fn scrubs_credentials() {
        let jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXNpZ25hdHVyZQ";
        let cases = [
            (format!("token={jwt} end"), "token=[redacted] end"),
            ("authorization: Bearer abc.def-ghi".to_string(), "authorization: Bearer [redacted]"),
            ("header BEARER%20xyz9".to_string(), "header BEARER [redacted]"),
            ("bearer abcdefghijklmnopq".to_string(), "bearer [redacted]"),
            ("key pk_abcdefghijklmnop here".to_string(), "key [redacted] here"),
            ("plain text stays".to_string(), "plain text stays"),
            (
                r#"{"detail":"malformed bearer token","x":1}"#.to_string(),
                r#"{"detail":"malformed bearer token","x":1}"#,
            ),
            (r#"{"sub":"bearer X9\"y","x":1}"#.to_string(), r#"{"sub":"bearer [redacted]\"y","x":1}"#),
            ("Basic dXNlcjpwYXNz".to_string(), "Basic [redacted]"),
        ];
        for (input, want) in cases {
            assert_eq!(scrub(&input), want, "input {input}");
        }
    }
}
