//! The redaction layer: scrubs anything shaped like a credential from log output.

use regex::Regex;
use std::io::{self, Write};
use std::sync::LazyLock;
use std::sync::atomic::{AtomicBool, Ordering};

/// JOSE segments start with `eyJ` (base64url of `{"`); bearer values and `pk_` API keys are
/// recognisable by their prefix.
static PATTERNS: LazyLock<Vec<(Regex, &'static str)>> = LazyLock::new(|| {
    [
        (r"eyJ[A-Za-z0-9_-]{4,}(?:\.[A-Za-z0-9_-]*){0,4}", "[redacted]"),
        // A credential is long or holds something other than lowercase letters ("malformed bearer
        // token" is prose); a `\` ends it so a JSON escape is never half eaten.
        (
            r#"\b((?i:bearer|basic))((?:\s|%20|\\t|\+)+)(?:[a-z]{16,}|[^\s,;"'\\]*[^\sa-z,;"'\\][^\s,;"'\\]*)"#,
            "$1 [redacted]",
        ),
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
        OTHER_KEY_PREFIXES.store(true, Ordering::Relaxed);
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

/// Text log lines with every control character but the line's own end (and the terminal's
/// colour codes, when colour is on) written as `\u{..}`: a value from outside (an IdP's
/// `issuer`, a header) cannot start a fake log line or move a terminal's cursor. JSON lines
/// need none of this; their encoder escapes.
pub fn escape_controls(line: &str, keep_ansi: bool) -> String {
    let body = line.strip_suffix('\n');
    let mut out = String::with_capacity(line.len());
    for c in body.unwrap_or(line).chars() {
        // Besides the C0/C1 controls: line and paragraph separators, and the bidirectional
        // overrides that make a terminal show text in another order than it is.
        let invisible = matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
        if (c.is_control() && c != '\t' && !(keep_ansi && c == '\u{1b}')) || invisible {
            out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    if body.is_some() {
        out.push('\n');
    }
    out
}

/// [`scrub`] for one field value, allocating only when the value could hold a credential (most
/// values hold no `eyJ`, no `bearer`/`basic` and no API-key prefix, and skip the regexes).
pub fn scrub_value(value: &str) -> std::borrow::Cow<'_, str> {
    let suspicious = could_hold_credential(value.as_bytes()) || OTHER_KEY_PREFIXES.load(Ordering::Relaxed);
    if suspicious { std::borrow::Cow::Owned(scrub(value)) } else { std::borrow::Cow::Borrowed(value) }
}

/// Whether `bytes` hold `eyJ`, `pk_`, or `bearer`/`basic` in any case: one pass, looking
/// further only at the bytes that start one of them.
fn could_hold_credential(bytes: &[u8]) -> bool {
    (0..bytes.len()).any(|i| {
        let rest = &bytes[i..];
        match bytes[i] {
            b'e' => rest.starts_with(b"eyJ"),
            b'p' => rest.starts_with(b"pk_"),
            b'b' | b'B' => {
                rest.get(..6).is_some_and(|w| w.eq_ignore_ascii_case(b"bearer"))
                    || rest.get(..5).is_some_and(|w| w.eq_ignore_ascii_case(b"basic"))
            }
            // The regexes fold case by Unicode rules: `ſ` (U+017F) is an `s`, so `baſic`
            // matches them; any value holding it goes through them.
            0xC5 => rest.starts_with(&[0xC5, 0xBF]),
            _ => false,
        }
    })
}

/// Set once a prefix other than `pk_` is registered (every value then goes through the regexes).
static OTHER_KEY_PREFIXES: AtomicBool = AtomicBool::new(false);

/// A writer that scrubs each formatted log line before it reaches stderr (and, for the text
/// format, escapes control characters).
#[derive(Debug, Clone, Copy, Default)]
pub struct RedactingStderr {
    /// `Some(ansi)` for text lines: escape control characters, keeping colour codes if `ansi`.
    pub text: Option<bool>,
}

pub struct RedactingWriter<W: Write> {
    inner: W,
    text: Option<bool>,
}

impl<W: Write> Write for RedactingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut clean = scrub(&String::from_utf8_lossy(buf));
        if let Some(ansi) = self.text {
            clean = escape_controls(&clean, ansi);
        }
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
        RedactingWriter { inner: io::stderr(), text: self.text }
    }
}

#[cfg(test)]
mod tests {
    use super::{escape_controls, scrub};

    #[test]
    fn text_lines_escape_control_characters() {
        let line = "INFO issuer=https://evil\n2026 ERROR fake line \u{1b}[2J\r end\n";
        assert_eq!(
            escape_controls(line, false),
            "INFO issuer=https://evil\\u{a}2026 ERROR fake line \\u{1b}[2J\\u{d} end\n"
        );
        assert_eq!(escape_controls("\u{1b}[32m INFO\u{1b}[0m\ttab\n", true), "\u{1b}[32m INFO\u{1b}[0m\ttab\n");
        assert_eq!(escape_controls("a\u{2028}b\u{202e}c\n", false), "a\\u{2028}b\\u{202e}c\n");
    }

    #[test]
    fn the_quick_scan_finds_every_credential_shape() {
        for suspicious in ["xeyJz", "Bearer x", "a BASIC b", "bAsIc", "pk_1", "token eyJ", "Ba\u{17f}ic dXNlcjpwYXNz"] {
            assert!(super::could_hold_credential(suspicious.as_bytes()), "{suspicious}");
        }
        for plain in ["", "e", "ey", "eyj", "bear", "basi", "pk", "p_k", "/tenants/acme/items", "load-1"] {
            assert!(!super::could_hold_credential(plain.as_bytes()), "{plain}");
        }
    }

    #[test]
    fn scrubs_credentials() {
        let jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXNpZ25hdHVyZQ";
        let cases = [
            (format!("token={jwt} end"), "token=[redacted] end"),
            ("authorization: Bearer abc.def-ghi".to_string(), "authorization: Bearer [redacted]"),
            ("header BEARER%20xyz9".to_string(), "header BEARER [redacted]"),
            ("bearer abcdefghijklmnopq".to_string(), "bearer [redacted]"),
            (r#"{"msg":"Bearer\tXy12.ab"}"#.to_string(), r#"{"msg":"Bearer [redacted]"}"#),
            ("Bearer+Xy12.ab".to_string(), "Bearer [redacted]"),
            ("key pk_abcdefghijklmnop here".to_string(), "key [redacted] here"),
            ("plain text stays".to_string(), "plain text stays"),
            (
                r#"{"detail":"malformed bearer token","x":1}"#.to_string(),
                r#"{"detail":"malformed bearer token","x":1}"#,
            ),
            (r#"{"sub":"bearer X9\"y","x":1}"#.to_string(), r#"{"sub":"bearer [redacted]\"y","x":1}"#),
            ("Basic dXNlcjpwYXNz".to_string(), "Basic [redacted]"),
            ("Ba\u{17f}ic dXNlcjpwYXNz".to_string(), "Ba\u{17f}ic [redacted]"),
        ];
        for (input, want) in cases {
            assert_eq!(scrub(&input), want, "input {input}");
        }
    }
}
