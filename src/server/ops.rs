//! Operational endpoints: `GET /health` (the process is up), `GET /ready` (the store, the
//! upstream and every configured chain RPC answer; 503 naming what is not ready otherwise) and
//! `GET /metrics` (Prometheus text; on the main port unless `[ops] metrics_listen` moves it).
//! Also the [`Drain`] that makes shutdown wait for in-flight verify/settle tasks.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{StatusCode, header};
use serde_json::{Value, json};
use tokio::sync::{Mutex, Notify};

use super::AppState;
use crate::config::Config;

/// How long one RPC probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long `/metrics` waits for the store-backed gauges before serving stale ones.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(2);

/// The operational routes. `/metrics` is included when `metrics_on_main` is true.
pub fn routes(metrics_on_main: bool) -> Router<AppState> {
    let router = Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready));
    if metrics_on_main {
        router.route("/metrics", get(metrics))
    } else {
        router
    }
}

/// `/metrics` alone, for the separate metrics listener.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let (store, upstream, chains) = tokio::join!(
        state.pipeline.store().ping(),
        state.pipeline.upstream().health(),
        state.rpc_probe.check(),
    );
    let check = |r: Result<(), String>| match r {
        Ok(()) => json!({"ok": true}),
        Err(e) => json!({"ok": false, "error": e}),
    };
    let chains_ok = chains.values().all(Result::is_ok);
    let ready = store.is_ok() && upstream.is_ok() && chains_ok && !state.drain.is_stopping();
    let chains: serde_json::Map<String, Value> = chains
        .into_iter()
        .map(|(id, result)| (id, check(result)))
        .collect();
    let body = json!({
        "status": if ready { "ready" } else { "not_ready" },
        "checks": {
            "store": check(store.map_err(|e| e.to_string())),
            "upstream": check(upstream.map_err(|e| e.to_string())),
            "chains": chains,
            "shutting_down": state.drain.is_stopping(),
        }
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}

async fn metrics(State(state): State<AppState>) -> Response {
    // Gauges that live in the (possibly shared) store are read at scrape time; a slow or
    // unavailable store leaves them stale and counts the failure rather than failing the scrape.
    match tokio::time::timeout(SNAPSHOT_TIMEOUT, state.pipeline.store().ops_snapshot()).await {
        Ok(Ok(snapshot)) => crate::metrics::store_snapshot(&snapshot),
        Ok(Err(_)) | Err(_) => crate::metrics::refresh_failed(),
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::metrics::render(),
    )
        .into_response()
}

/// Counts in-flight pipeline tasks so shutdown can wait for them (a settle must not be cut
/// between claiming a payment and journalling its outcome).
#[derive(Debug, Clone, Default)]
pub struct Drain(Arc<DrainInner>);

#[derive(Debug, Default)]
struct DrainInner {
    running: AtomicUsize,
    idle: Notify,
    stopping: std::sync::atomic::AtomicBool,
}

/// Held by one running task; dropping it marks the task finished.
#[derive(Debug)]
pub struct DrainGuard(Arc<DrainInner>);

impl Drain {
    /// A task starts.
    pub fn enter(&self) -> DrainGuard {
        let n = self.0.running.fetch_add(1, Ordering::SeqCst) + 1;
        crate::metrics::tasks_in_progress(n);
        DrainGuard(self.0.clone())
    }

    /// Tasks running now.
    pub fn running(&self) -> usize {
        self.0.running.load(Ordering::SeqCst)
    }

    /// Whether shutdown has begun (`/ready` then answers 503 so load balancers move away).
    pub fn is_stopping(&self) -> bool {
        self.0.stopping.load(Ordering::SeqCst)
    }

    /// Marks shutdown and waits until no task runs, at most `limit`. Returns the number still
    /// running when it gave up (0: fully drained).
    pub async fn wait(&self, limit: Duration) -> usize {
        self.0.stopping.store(true, Ordering::SeqCst);
        let drained = async {
            loop {
                let idle = self.0.idle.notified();
                if self.running() == 0 {
                    return;
                }
                idle.await;
            }
        };
        let _ = tokio::time::timeout(limit, drained).await;
        self.running()
    }
}

impl Drop for DrainGuard {
    fn drop(&mut self) {
        let n = self
            .0
            .running
            .fetch_sub(1, Ordering::SeqCst)
            .saturating_sub(1);
        crate::metrics::tasks_in_progress(n);
        if n == 0 {
            self.0.idle.notify_waiters();
        }
    }
}

/// A cheap, cached liveness probe of every configured chain RPC (`eth_chainId` on EVM,
/// `getHealth` on Solana), for `/ready`. Results are reused for `ttl`, so probes stay cheap
/// under frequent readiness checks from several sources.
#[derive(Debug)]
pub struct RpcProbe {
    targets: Vec<(String, &'static str, Vec<String>)>,
    http: reqwest::Client,
    ttl: Duration,
    cache: Mutex<Option<(tokio::time::Instant, ProbeResults)>>,
}

/// Each probed chain's outcome: `Err` names why its RPC is unhealthy.
type ProbeResults = BTreeMap<String, Result<(), String>>;

impl RpcProbe {
    /// Probes every chain of `config` that Gatehouse checks on-chain.
    pub fn new(config: &Config) -> Self {
        let targets = config
            .chains
            .iter()
            .filter(|(_, chain)| chain.onchain_checks && !chain.rpc_urls.is_empty())
            .map(|(id, chain)| {
                let method = if id.starts_with("solana:") {
                    "getHealth"
                } else {
                    "eth_chainId"
                };
                (id.clone(), method, chain.rpc_urls.clone())
            })
            .collect();
        Self {
            targets,
            http: reqwest::Client::new(),
            ttl: Duration::from_secs(config.ops.ready_rpc_ttl_secs),
            cache: Mutex::new(None),
        }
    }

    /// Per chain: `Ok` if any of its endpoints answered, else why none did.
    pub async fn check(&self) -> BTreeMap<String, Result<(), String>> {
        let mut cache = self.cache.lock().await;
        if let Some((at, results)) = cache.as_ref()
            && at.elapsed() < self.ttl
        {
            return results.clone();
        }
        // Few chains, each bounded by PROBE_TIMEOUT per endpoint, and cached: in turn is fine.
        let mut results = BTreeMap::new();
        for (id, method, urls) in &self.targets {
            results.insert(id.clone(), self.probe_chain(method, urls).await);
        }
        *cache = Some((tokio::time::Instant::now(), results.clone()));
        results
    }

    async fn probe_chain(&self, method: &str, urls: &[String]) -> Result<(), String> {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": []});
        let mut failures = Vec::new();
        for (i, url) in urls.iter().enumerate() {
            let sent = self
                .http
                .post(url)
                .json(&body)
                .timeout(PROBE_TIMEOUT)
                .send();
            match sent.await {
                Ok(resp) if resp.status().is_success() => match resp.json::<Value>().await {
                    Ok(v) if v.get("result").is_some() => return Ok(()),
                    Ok(v) => failures.push(format!("endpoint {i}: error {}", v["error"])),
                    Err(_) => failures.push(format!("endpoint {i}: malformed answer")),
                },
                Ok(resp) => failures.push(format!("endpoint {i}: HTTP {}", resp.status())),
                // The URL may carry an API key: name the endpoint by position only.
                Err(e) if e.is_timeout() => failures.push(format!("endpoint {i}: timed out")),
                Err(_) => failures.push(format!("endpoint {i}: unreachable")),
            }
        }
        Err(failures.join("; "))
    }
}
