//! Logging (behind a redaction layer), metrics, traces and the audit event.
//!
//! Architecture Invariant: every byte of log output passes through [`redact::scrub`], so a
//! credential that reaches a log call by mistake is still never written.

pub mod audit;
pub mod metrics;
pub mod redact;
pub mod tracing_otel;

#[cfg(test)]
mod tests;

use crate::config::LogFormat;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Level;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

/// Keeps the trace exporter alive; [`Telemetry::shutdown`] flushes it.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    pub fn tracing_enabled(&self) -> bool {
        self.provider.is_some()
    }

    /// Flushes pending spans (blocking; call outside the runtime's worker threads).
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(e) = provider.shutdown()
        {
            eprintln!("portcullis: trace exporter shutdown: {e}");
        }
    }
}

/// Installs the global subscriber: logs (level from `RUST_LOG`, default `info`) through the
/// redaction writer, and, with an OTLP endpoint, Portcullis' own spans to OpenTelemetry. Call
/// from inside the tokio runtime. A second call keeps the first subscriber.
pub fn init(format: LogFormat, otlp_endpoint: Option<&str>) -> Result<Telemetry, tracing_otel::OtelError> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs: Box<dyn Layer<Registry> + Send + Sync> = match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(redact::RedactingStderr::default())
            .with_filter(filter)
            .boxed(),
        LogFormat::Text => {
            // Colour only on a terminal: escape codes in a file or a log pipeline are noise.
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
            tracing_subscriber::fmt::layer()
                .with_ansi(ansi)
                .with_writer(redact::RedactingStderr { text: Some(ansi) })
                .with_filter(filter)
                .boxed()
        }
    };
    let provider = otlp_endpoint.map(tracing_otel::provider).transpose()?;
    let traces = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(tracing_otel::tracer(p))
            // Only Portcullis' spans are exported, whatever the log level says.
            .with_filter(Targets::new().with_target("portcullis", Level::INFO))
    });
    let _ = tracing_subscriber::registry().with(logs).with(traces).try_init();
    Ok(Telemetry { provider })
}

/// An error with every cause behind it (`a: b: c`), and a hint when the chain shows a TLS
/// certificate nobody here trusts: the usual reason a JWKS or Redis connection fails in a new
/// cluster, and invisible in the outermost message ("error sending request for url …").
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    let lower = text.to_ascii_lowercase();
    if lower.contains("unknownissuer") || lower.contains("unknown issuer") || lower.contains("invalid peer certificate")
    {
        text.push_str(
            " (hint: the server's certificate is not signed by a CA this process trusts: add the CA to the \
             system bundle (SSL_CERT_FILE / /etc/ssl/certs) or set the issuer's jwks.ca_file / state.tls.ca_file)",
        );
    }
    text
}
