//! Telemetry in one place: one function per event, logging (and later counting) together.
//! Per-payment events log at debug, lifecycle at info, operator-actionable failures at error.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;
use crate::protocol::Fingerprint;
use crate::verdict::Gate;

/// Installs the global subscriber (`RUST_LOG` filter, default `info`). Safe to call twice.
pub fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// A verify or settle decision was made.
pub fn decided(gate: Gate, decision: &str, elapsed_ms: u64) {
    tracing::debug!(?gate, decision, elapsed_ms, "Payment decided.");
    metrics::counter!("gatehouse_decisions_total", "gate" => gate_label(gate), "decision" => decision.to_owned())
        .increment(1);
}

/// Evidence could not be written: the decision was failed closed where it could be.
pub fn evidence_failed(error: &dyn std::fmt::Display) {
    tracing::error!(error = %error, "Evidence could not be recorded.");
    metrics::counter!("gatehouse_evidence_failures_total").increment(1);
}

/// A settlement outcome could not be written to the journal: the entry stays in flight.
pub fn journal_failed(fingerprint: &Fingerprint, error: &dyn std::fmt::Display) {
    tracing::error!(%fingerprint, error = %error, "Settlement outcome could not be journalled; entry left in flight.");
    metrics::counter!("gatehouse_journal_failures_total").increment(1);
}

fn gate_label(gate: Gate) -> &'static str {
    match gate {
        Gate::Verify => "verify",
        Gate::Settle => "settle",
    }
}
