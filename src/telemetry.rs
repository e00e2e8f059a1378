//! Telemetry in one place: one function per event, logging and counting together (metric
//! names live in [`crate::metrics`]). Per-payment events log at debug, lifecycle at info,
//! operator-actionable failures at error.
//!
//! With the cargo feature `otel`, spans are also exported over OTLP/HTTP when the standard
//! variables ask for it (`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`;
//! `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_EXPORTER_OTLP_HEADERS`, ... are read
//! by the OpenTelemetry SDK itself; `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`
//! turn it off).

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::config::LogFormat;
use crate::protocol::Fingerprint;
use crate::verdict::Gate;

type Filtered = tracing_subscriber::layer::Layered<EnvFilter, Registry>;
type BoxedLayer = Box<dyn Layer<Filtered> + Send + Sync>;

/// Keeps trace export alive; dropping it flushes pending spans (hold it until exit).
#[derive(Debug, Default)]
#[must_use = "dropping the guard stops trace export"]
pub struct TelemetryGuard {
    #[cfg(feature = "otel")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        #[cfg(feature = "otel")]
        if let Some(provider) = self.provider.take() {
            let _ = provider.shutdown();
        }
    }
}

/// Installs the global subscriber (`RUST_LOG` filter, default `info`), and the OTLP trace
/// exporter when built with `otel` and configured by `OTEL_*`. Safe to call twice.
pub fn init_logging(format: LogFormat) -> TelemetryGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt: BoxedLayer = match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer().boxed(),
    };
    #[allow(unused_mut)]
    let mut layers = vec![fmt];
    #[allow(unused_mut)]
    let mut guard = TelemetryGuard::default();
    #[cfg(feature = "otel")]
    match otel::layer() {
        Ok(Some((layer, provider))) => {
            layers.push(layer);
            guard.provider = Some(provider);
        }
        Ok(None) => {}
        Err(error) => eprintln!("gatehouse: OpenTelemetry export disabled: {error}"),
    }
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(layers)
        .try_init();
    guard
}

#[cfg(feature = "otel")]
mod otel {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::trace::SdkTracerProvider;

    use super::BoxedLayer;

    /// The OTLP layer when the environment asks for export, else `None`.
    pub(super) fn layer() -> Result<Option<(BoxedLayer, SdkTracerProvider)>, String> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let disabled = var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
            || var("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"));
        let wanted = var("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
            || var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some();
        if disabled || !wanted {
            return Ok(None);
        }
        // The exporter reads the endpoint, headers, timeout and protocol from OTEL_*.
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()
            .map_err(|e| e.to_string())?;
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name(var("OTEL_SERVICE_NAME").unwrap_or_else(|| "gatehouse".into()))
            .build();
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("gatehouse");
        let layer = tracing_opentelemetry::layer().with_tracer(tracer);
        Ok(Some((Box::new(layer), provider)))
    }
}

/// A verify or settle decision was made after `took`.
pub fn decided(gate: Gate, decision: &str, took: std::time::Duration) {
    let elapsed_ms = took.as_millis() as u64;
    tracing::debug!(?gate, decision, elapsed_ms, "Payment decided.");
    crate::metrics::decision(gate, decision, took);
}

/// Evidence could not be written: the decision was failed closed where it could be.
pub fn evidence_failed(error: &dyn std::fmt::Display) {
    tracing::error!(error = %error, "Evidence could not be recorded.");
    crate::metrics::evidence_failed();
}

/// A settlement outcome could not be written to the journal: the entry stays in flight.
pub fn journal_failed(fingerprint: &Fingerprint, error: &dyn std::fmt::Display) {
    tracing::error!(%fingerprint, error = %error, "Settlement outcome could not be journalled; entry left in flight.");
    crate::metrics::journal_failed();
}
