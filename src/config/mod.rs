//! Configuration: one serde tree ([`schema`]) validated into typed [`Settings`] before any port
//! binds. Every problem is reported at once, each with its path.
//!
//! Architecture Invariant: nothing outside this module reads the raw tree; a [`Settings`] value
//! is always fully valid.

mod include;
pub mod json_schema;
mod listen;
pub mod schema;
mod schema_listen;
mod schema_state;
mod settings;
mod source;
pub mod sources;
mod suggest;
mod validate;

pub use listen::{CallerPolicy, CallerTls, ListenAddr, ListenOptions, ListenerLimits, SocketPerms};
pub use settings::{
    AdminSettings, AdminToken, DpopNonce, DpopSettings, LogFormat, RevocationLifetimes, Settings, Snapshot,
};
pub use validate::{DEV_ISSUER, load_file, parse_and_validate, parse_and_validate_named};

use std::fmt;

/// How long a stopping server keeps answering while not ready, so the proxies' health checks
/// (the shipped Envoy configs: 2 s × 2) and Kubernetes endpoint removal stop sending first.
pub const DEFAULT_DRAIN_DELAY: std::time::Duration = std::time::Duration::from_secs(5);

/// Exit code for configuration errors (EX_CONFIG would be 78; the project contract is 64).
pub const EXIT_CONFIG: i32 = 64;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{0}")]
    Parse(String),
    #[error("{0}")]
    Invalid(Problems),
}

/// Where a problem is: a file, and its line and column (from 1) when known. Ordered by file,
/// then place, which is reading order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Location {
    pub file: std::sync::Arc<str>,
    /// 0: the file as a whole.
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            0 => f.write_str(&self.file),
            line => write!(f, "{}:{line}:{}", self.file, self.column),
        }
    }
}

/// One problem: where (once known), the path in the file, what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub at: Option<Location>,
    pub path: String,
    pub message: String,
}

impl Problem {
    pub fn new(path: impl fmt::Display, message: impl fmt::Display) -> Self {
        Self { at: None, path: path.to_string(), message: message.to_string() }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(at) = &self.at {
            write!(f, "{at}: ")?;
        }
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every problem found.
#[derive(Debug, Default)]
pub struct Problems(pub Vec<Problem>);

impl Problems {
    pub fn add(&mut self, path: impl fmt::Display, message: impl fmt::Display) {
        self.0.push(Problem::new(path, message));
    }

    /// Problems whose paths are already the file's own, placed in it.
    fn located(problems: Vec<Problem>, source: &source::Source) -> Self {
        Self(problems.into_iter().map(|p| Problem { at: Some(source.locate(&p.path)), ..p }).collect())
    }

    /// Each problem as one line (for tests and callers that match text).
    pub fn lines(&self) -> Vec<String> {
        self.0.iter().map(ToString::to_string).collect()
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} problem(s) in the configuration:", self.0.len())?;
        for p in &self.0 {
            writeln!(f, "  - {p}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
