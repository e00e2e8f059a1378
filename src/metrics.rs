//! Prometheus metrics: every metric name and every recording function lives here, so call
//! sites elsewhere are one line and the exposition stays consistent (`GET /metrics`).
//!
//! Labels are bounded sets only (gate, step, outcome, reason code, control, endpoint): a
//! reason the upstream invents is folded to `upstream_other` unless it is a spec reason, so a
//! hostile upstream cannot blow up the series count. Nothing payment-specific (payer, payee,
//! fingerprint) is ever a label.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{
    Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde::{Deserialize, Serialize};

use crate::verdict::{Gate, LEGACY_V1_REASONS, Outcome, ReasonCode, Step, Verdict};

/// `gatehouse_decisions_total{gate,decision}`: verify allow/review/deny; settle outcomes.
pub const DECISIONS: &str = "gatehouse_decisions_total";
/// `gatehouse_refusals_total{gate,step,reason}`: every deny or review verdict.
pub const REFUSALS: &str = "gatehouse_refusals_total";
/// `gatehouse_policy_denials_total{control}`: policy denials by the control that fired.
pub const POLICY_DENIALS: &str = "gatehouse_policy_denials_total";
/// `gatehouse_risk_decisions_total{level}`: risk scoring outcomes.
pub const RISK_DECISIONS: &str = "gatehouse_risk_decisions_total";
/// `gatehouse_decision_duration_seconds{gate}`: whole-request decision latency.
pub const DECISION_SECONDS: &str = "gatehouse_decision_duration_seconds";
/// `gatehouse_step_duration_seconds{gate,step}`: latency of each pipeline step.
pub const STEP_SECONDS: &str = "gatehouse_step_duration_seconds";
/// `gatehouse_upstream_requests_total{endpoint,outcome}`.
pub const UPSTREAM_REQUESTS: &str = "gatehouse_upstream_requests_total";
/// `gatehouse_upstream_duration_seconds{endpoint}`.
pub const UPSTREAM_SECONDS: &str = "gatehouse_upstream_duration_seconds";
/// `gatehouse_rpc_requests_total{outcome}`: JSON-RPC HTTP round trips (one batch = one).
pub const RPC_REQUESTS: &str = "gatehouse_rpc_requests_total";
/// `gatehouse_rpc_duration_seconds`.
pub const RPC_SECONDS: &str = "gatehouse_rpc_duration_seconds";
/// `gatehouse_settlements{state}`: journal entries by state (from the store, at scrape).
pub const SETTLEMENTS: &str = "gatehouse_settlements";
/// `gatehouse_breakers{state}`: circuit breakers by state (from the store, at scrape).
pub const BREAKERS: &str = "gatehouse_breakers";
/// `gatehouse_tasks_in_progress`: verify/settle tasks running now (drained on shutdown).
pub const TASKS_IN_PROGRESS: &str = "gatehouse_tasks_in_progress";
/// `gatehouse_store_pool_connections{state}`: idle and in-use store connections.
pub const STORE_POOL: &str = "gatehouse_store_pool_connections";
/// `gatehouse_store_pool_max_connections`.
pub const STORE_POOL_MAX: &str = "gatehouse_store_pool_max_connections";
/// `gatehouse_evidence_failures_total`.
pub const EVIDENCE_FAILURES: &str = "gatehouse_evidence_failures_total";
/// `gatehouse_journal_failures_total`.
pub const JOURNAL_FAILURES: &str = "gatehouse_journal_failures_total";
/// `gatehouse_ops_refresh_failures_total`: the store could not be read for the gauges.
pub const REFRESH_FAILURES: &str = "gatehouse_ops_refresh_failures_total";
/// `gatehouse_build_info{version}`: always 1.
pub const BUILD_INFO: &str = "gatehouse_build_info";

/// Latency buckets in seconds: sub-millisecond local checks up to multi-second settles.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// `[ops]`: where metrics are served and how the process stops.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OpsConfig {
    /// Serve `GET /metrics` at all.
    pub metrics_enabled: bool,
    /// Serve `/metrics` on this separate `IP:port` instead of the main listener (e.g. to keep
    /// it off a public ingress). Unset: `/metrics` is on the main port, without a token.
    pub metrics_listen: Option<String>,
    /// On SIGTERM, how long in-flight settles may take to finish before the process exits.
    pub drain_timeout_secs: u64,
    /// How long a chain RPC probe result is reused by `/ready`.
    pub ready_rpc_ttl_secs: u64,
}

impl Default for OpsConfig {
    fn default() -> Self {
        Self {
            metrics_enabled: true,
            metrics_listen: None,
            drain_timeout_secs: 30,
            ready_rpc_ttl_secs: 10,
        }
    }
}

impl OpsConfig {
    /// Problems as `(key, message)`, for `Config::validate`.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if let Some(addr) = &self.metrics_listen
            && addr.parse::<std::net::SocketAddr>().is_err()
        {
            out.push((
                "ops.metrics_listen".to_owned(),
                format!("`{addr}` is not an IP:port address"),
            ));
        }
        if self.drain_timeout_secs > 3600 {
            out.push((
                "ops.drain_timeout_secs".to_owned(),
                "must be at most 3600".to_owned(),
            ));
        }
        out
    }
}

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide Prometheus recorder once (later calls, e.g. from several test
/// servers in one process, reuse it). `None` if another recorder was installed first.
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new().set_buckets(BUCKETS).ok()?;
            let handle = builder.install_recorder().ok()?;
            // Histogram samples queue until upkeep folds them in: without regular scrapes the
            // queue would grow with traffic, so a small thread runs it every few seconds.
            let upkeep = handle.clone();
            let _ = std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(Duration::from_secs(5));
                        upkeep.run_upkeep();
                    }
                });
            describe();
            gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
            Some(handle)
        })
        .as_ref()
}

/// The Prometheus text exposition (empty if no recorder could be installed).
pub fn render() -> String {
    match install() {
        Some(handle) => {
            handle.run_upkeep();
            handle.render()
        }
        None => String::new(),
    }
}

fn describe() {
    describe_counter!(
        DECISIONS,
        "Verify and settle decisions by gate and decision."
    );
    describe_counter!(
        REFUSALS,
        "Deny and review verdicts by gate, step and reason code."
    );
    describe_counter!(POLICY_DENIALS, "Policy denials by the control that fired.");
    describe_counter!(RISK_DECISIONS, "Risk scoring decisions by level.");
    describe_histogram!(
        DECISION_SECONDS,
        Unit::Seconds,
        "Decision latency per gate."
    );
    describe_histogram!(
        STEP_SECONDS,
        Unit::Seconds,
        "Latency of each pipeline step."
    );
    describe_counter!(
        UPSTREAM_REQUESTS,
        "Upstream facilitator requests by endpoint and outcome."
    );
    describe_histogram!(
        UPSTREAM_SECONDS,
        Unit::Seconds,
        "Upstream facilitator latency."
    );
    describe_counter!(RPC_REQUESTS, "Chain JSON-RPC round trips by outcome.");
    describe_histogram!(
        RPC_SECONDS,
        Unit::Seconds,
        "Chain JSON-RPC round-trip latency."
    );
    describe_gauge!(
        SETTLEMENTS,
        "Settlement journal entries by state (read from the store)."
    );
    describe_gauge!(BREAKERS, "Circuit breakers by state (read from the store).");
    describe_gauge!(TASKS_IN_PROGRESS, "Verify and settle tasks running now.");
    describe_gauge!(STORE_POOL, "Store pool connections by state.");
    describe_gauge!(STORE_POOL_MAX, "Store pool size limit.");
    describe_counter!(
        EVIDENCE_FAILURES,
        "Evidence records that could not be written."
    );
    describe_counter!(
        JOURNAL_FAILURES,
        "Settlement outcomes that could not be journalled."
    );
    describe_counter!(
        REFRESH_FAILURES,
        "Scrapes whose store-backed gauges could not be read."
    );
    describe_gauge!(BUILD_INFO, "Gatehouse version (value is always 1).");
}

/// A monotonic stopwatch (tokio's clock: pausable in tests) for latency histograms.
#[derive(Debug, Clone, Copy)]
pub struct Lap {
    started: tokio::time::Instant,
    last: tokio::time::Instant,
}

impl Lap {
    /// Starts now.
    pub fn start() -> Self {
        let now = tokio::time::Instant::now();
        Self {
            started: now,
            last: now,
        }
    }

    /// Time since the previous split (or the start), and starts the next split.
    pub fn split(&mut self) -> Duration {
        let now = tokio::time::Instant::now();
        let lap = now.saturating_duration_since(self.last);
        self.last = now;
        lap
    }

    /// Time since the start.
    pub fn total(&self) -> Duration {
        self.started.elapsed()
    }
}

fn gate_label(gate: Gate) -> &'static str {
    match gate {
        Gate::Verify => "verify",
        Gate::Settle => "settle",
    }
}

fn step_label(step: Step) -> &'static str {
    match step {
        Step::Normalise => "normalise",
        Step::Chain => "chain",
        Step::Policy => "policy",
        Step::Risk => "risk",
        Step::Journal => "journal",
        Step::Upstream => "upstream",
    }
}

/// A bounded label for a reason code.
fn reason_label(code: &ReasonCode) -> String {
    match code {
        ReasonCode::Upstream(code) if LEGACY_V1_REASONS.contains(&code.as_str()) => code.clone(),
        ReasonCode::Upstream(_) => "upstream_other".to_owned(),
        other => other.code().to_owned(),
    }
}

/// A pipeline step produced `verdict`, `took` after the previous step.
pub fn verdict(gate: Gate, verdict: &Verdict, took: Duration) {
    let (gate, step) = (gate_label(gate), step_label(verdict.step));
    histogram!(STEP_SECONDS, "gate" => gate, "step" => step).record(took.as_secs_f64());
    if verdict.outcome == Outcome::Allow {
        return;
    }
    let Some(reason) = verdict.reasons.first() else {
        return;
    };
    counter!(REFUSALS, "gate" => gate, "step" => step, "reason" => reason_label(&reason.code))
        .increment(1);
    if let (Step::Policy, ReasonCode::Policy(control)) = (verdict.step, &reason.code) {
        counter!(POLICY_DENIALS, "control" => *control).increment(1);
    }
}

/// A verify or settle decision was made after `took`.
pub fn decision(gate: Gate, decision: &str, took: Duration) {
    let gate = gate_label(gate);
    counter!(DECISIONS, "gate" => gate, "decision" => decision.to_owned()).increment(1);
    histogram!(DECISION_SECONDS, "gate" => gate).record(took.as_secs_f64());
}

/// Risk scoring reached `level` (e.g. `allow`, `review`, `deny`; a small fixed set).
pub fn risk_decision(level: &str) {
    counter!(RISK_DECISIONS, "level" => level.to_owned()).increment(1);
}

/// One upstream exchange on `endpoint` ended with `outcome` (`ok`, `http_4xx`, `http_5xx`,
/// `error`) after `took`.
pub fn upstream_call(endpoint: &'static str, outcome: &'static str, took: Duration) {
    counter!(UPSTREAM_REQUESTS, "endpoint" => endpoint, "outcome" => outcome).increment(1);
    histogram!(UPSTREAM_SECONDS, "endpoint" => endpoint).record(took.as_secs_f64());
}

/// The outcome label for an HTTP status.
pub fn status_outcome(status: http::StatusCode) -> &'static str {
    if status.is_success() {
        "ok"
    } else if status.is_client_error() {
        "http_4xx"
    } else if status.is_server_error() {
        "http_5xx"
    } else {
        "http_other"
    }
}

/// One JSON-RPC round trip ended (`ok`, `error` or `timeout`) after `took`.
pub fn rpc_call(outcome: &'static str, took: Duration) {
    counter!(RPC_REQUESTS, "outcome" => outcome).increment(1);
    histogram!(RPC_SECONDS).record(took.as_secs_f64());
}

/// The outcome label of one timed JSON-RPC attempt.
pub fn rpc_outcome<T, E, F>(answer: &Result<Result<T, E>, F>) -> &'static str {
    match answer {
        Ok(Ok(_)) => "ok",
        Ok(Err(_)) => "error",
        Err(_) => "timeout",
    }
}

/// Evidence could not be written.
pub fn evidence_failed() {
    counter!(EVIDENCE_FAILURES).increment(1);
}

/// A settlement outcome could not be journalled.
pub fn journal_failed() {
    counter!(JOURNAL_FAILURES).increment(1);
}

/// Store-backed gauges, refreshed at each scrape.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreSnapshot {
    /// Journal entries per state (`in_flight`, `pending`, `settled`, `failed`).
    pub settlements: Vec<(String, i64)>,
    /// Breakers per state (`open`, `half_open`, `closed`).
    pub breakers: Vec<(String, i64)>,
    /// Connections open in the pool.
    pub pool_size: u32,
    /// Of which idle.
    pub pool_idle: usize,
    /// The pool's limit.
    pub pool_max: u32,
}

/// Sets the store-backed gauges from `snapshot`; states absent from it read 0.
pub fn store_snapshot(snapshot: &StoreSnapshot) {
    for state in ["in_flight", "pending", "settled", "failed"] {
        let n = find(&snapshot.settlements, state);
        gauge!(SETTLEMENTS, "state" => state).set(n as f64);
    }
    for state in ["open", "half_open", "closed"] {
        let n = find(&snapshot.breakers, state);
        gauge!(BREAKERS, "state" => state).set(n as f64);
    }
    let idle = snapshot.pool_idle as f64;
    gauge!(STORE_POOL, "state" => "idle").set(idle);
    gauge!(STORE_POOL, "state" => "in_use").set((f64::from(snapshot.pool_size) - idle).max(0.0));
    gauge!(STORE_POOL_MAX).set(f64::from(snapshot.pool_max));
}

fn find(rows: &[(String, i64)], state: &str) -> i64 {
    rows.iter()
        .filter(|(s, _)| s == state)
        .map(|(_, n)| *n)
        .sum()
}

/// The store-backed gauges could not be refreshed.
pub fn refresh_failed() {
    counter!(REFRESH_FAILURES).increment(1);
}

/// `n` verify/settle tasks are running in this server now (shutdown waits for them).
pub fn tasks_in_progress(n: usize) {
    gauge!(TASKS_IN_PROGRESS).set(n as f64);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_reasons_are_bounded() {
        assert_eq!(
            reason_label(&ReasonCode::Upstream("x".repeat(500))),
            "upstream_other"
        );
        assert_eq!(
            reason_label(&ReasonCode::Upstream("insufficient_funds".into())),
            "insufficient_funds"
        );
        assert_eq!(
            reason_label(&ReasonCode::Policy("policy_cap_exceeded")),
            "policy_cap_exceeded"
        );
    }

    #[test]
    fn bad_metrics_listen_is_named() {
        let config = OpsConfig {
            metrics_listen: Some("nope".into()),
            ..OpsConfig::default()
        };
        assert_eq!(config.problems()[0].0, "ops.metrics_listen");
    }
}
