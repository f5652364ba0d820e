//! Configuration: one serde tree ([`schema`]) validated into typed [`Settings`] before any port
//! binds. Every problem is reported at once, each with its path.
//!
//! Architecture Invariant: nothing outside this module reads the raw tree; a [`Settings`] value
//! is always fully valid.

pub mod json_schema;
mod listen;
pub mod schema;
mod settings;
mod validate;

pub use listen::{CallerPolicy, CallerTls, ListenAddr, ListenOptions, ListenerLimits, SocketPerms};
pub use settings::{AdminSettings, AdminToken, LogFormat, RevocationLifetimes, Settings, Snapshot};
pub use validate::{DEV_ISSUER, load_file, parse_and_validate};

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

/// Every validation problem found, each as `path: message`.
#[derive(Debug, Default)]
pub struct Problems(pub Vec<String>);

impl Problems {
    pub fn add(&mut self, path: impl fmt::Display, message: impl fmt::Display) {
        self.0.push(format!("{path}: {message}"));
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
