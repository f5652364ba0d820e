//! Logging (behind a redaction layer), metrics and the audit event.
//!
//! Architecture Invariant: every byte of log output passes through [`redact::scrub`], so a
//! credential that reaches a log call by mistake is still never written.

pub mod audit;
pub mod metrics;
pub mod redact;

use crate::config::LogFormat;
use tracing_subscriber::EnvFilter;

/// Installs the global log subscriber (level from `RUST_LOG`, default `info`). Safe to call twice.
pub fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(redact::RedactingStderr);
    let result = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
    // A second init (tests, `dev` after config) keeps the first subscriber.
    drop(result);
}
