//! OpenTelemetry traces over OTLP/gRPC, and continuing the caller's `traceparent`.

use crate::decision::CheckInput;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use std::time::Duration;

/// The OTLP exporter runs its gRPC client on the application's tokio runtime; the SDK's batch
/// processor exports from its own thread, which has no reactor, so each export is driven
/// through the runtime handle.
#[derive(Debug)]
struct OnRuntime {
    inner: opentelemetry_otlp::SpanExporter,
    runtime: tokio::runtime::Handle,
}

impl SpanExporter for OnRuntime {
    fn export(&self, batch: Vec<SpanData>) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        let result = self.runtime.block_on(self.inner.export(batch));
        std::future::ready(result)
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

#[derive(Debug, thiserror::Error)]
#[error("OTLP exporter: {0}")]
pub struct OtelError(String);

/// Builds the tracer provider exporting to `endpoint` (call from inside the tokio runtime).
pub fn provider(endpoint: &str) -> Result<SdkTracerProvider, OtelError> {
    let runtime = tokio::runtime::Handle::try_current().map_err(|e| OtelError(e.to_string()))?;
    let inner = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .with_timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| OtelError(e.to_string()))?;
    let resource = Resource::builder().with_service_name("portcullis").build();
    Ok(SdkTracerProvider::builder().with_batch_exporter(OnRuntime { inner, runtime }).with_resource(resource).build())
}

pub fn tracer(provider: &SdkTracerProvider) -> opentelemetry_sdk::trace::Tracer {
    provider.tracer("portcullis")
}

struct Headers<'a>(&'a CheckInput);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.headers.iter().find(|(name, _)| name == key).map(|(_, value)| value.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.headers.iter().map(|(k, _)| k.as_str()).collect()
    }
}

/// The trace context in the request's `traceparent`/`tracestate` headers (empty if none).
pub fn remote_context(input: &CheckInput) -> opentelemetry::Context {
    TraceContextPropagator::new().extract(&Headers(input))
}
