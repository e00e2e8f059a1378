//! The HTTP server: one [`app`] serves `main` and the tests. Edge layers, outermost first: a
//! request id is set (or kept) so every log line and evidence record carries it; sensitive
//! headers are marked before tracing sees them; the trace span wraps everything inside; the
//! request id is echoed in `X-Request-Id`; a timeout bounds each request; the body limit
//! answers 413.

pub mod error;
pub mod facilitator;
pub mod openapi;
pub mod ops;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use http::{HeaderName, Request, StatusCode, header};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use std::collections::BTreeMap;

use alloy::primitives::B256;
use alloy::signers::local::PrivateKeySigner;

use crate::chain::evm::EvmChecker;
use crate::chain::evm::settle::EvmSettler;
use crate::chain::svm::SvmChecker;
use crate::chain::svm::settle::{SvmKey, SvmSettler, SvmSettlers};
use crate::chain::{ChainCheckers, ChainConfig, SettlementMode};
use crate::clock::{SharedClock, SystemClock};
use crate::config::{Config, ConfigError, ConfigProblem};
use crate::pipeline::{Pipeline, Settlers};
use crate::policy::Policy;
use crate::reconcile::Reconciler;
use crate::store;
use crate::upstream::Upstream;

/// Shared state: cheap to clone (a few `Arc`s).
#[derive(Debug, Clone)]
pub struct AppState {
    /// The pipeline.
    pub pipeline: Arc<Pipeline>,
    /// The effective configuration.
    pub config: Arc<Config>,
    /// Resolves unknown settlement outcomes from the chain (run periodically by [`start`]).
    pub reconciler: Arc<Reconciler>,
    /// The Solana checker, whose fee payers follow the upstream's `/supported`.
    pub svm: Arc<SvmChecker>,
    /// Resolves admin bearer tokens.
    pub admin: crate::admin::Authenticator,
    /// In-flight verify/settle tasks, waited for on shutdown.
    pub drain: ops::Drain,
    /// Cached chain RPC liveness for `/ready`.
    pub rpc_probe: Arc<ops::RpcProbe>,
    /// Evidence queries, bundles, disputes and retention.
    pub evidence: Arc<crate::evidence::EvidenceService>,
}

/// Starting the server failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The store could not be opened or migrated.
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
    /// The evidence signing key could not be loaded or created.
    #[error(transparent)]
    Signing(#[from] crate::evidence::signing::SigningError),
    /// The upstream client could not be built.
    #[error("upstream: {0}")]
    Upstream(#[from] crate::upstream::UpstreamError),
    /// A chain checker could not be built.
    #[error("chains: {0}")]
    Chain(String),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Builds the shared state: store (migrated), upstream client, chain checkers.
pub async fn build_state(config: Config, clock: SharedClock) -> Result<AppState, StartError> {
    let store = store::connect(config.database_url.expose()).await?;
    let upstream = Arc::new(Upstream::new(&config.upstream)?);
    let svm_keys = svm_keys(&config)?;
    let (chains, svm) = chain_checkers(&config, &svm_keys)?;
    let (settlers, readers) = settlers(&config)?;
    let (settlers, svm_readers) = svm_settlers(&config, settlers, &svm_keys)?;
    // Every settle ends before request_timeout_ms (validated); the margin covers clock skew
    // between replicas and the last RPC calls.
    let stale_after = Duration::from_millis(config.request_timeout_ms.saturating_add(60_000));
    let reconciler = Arc::new(
        Reconciler::new(store.clone(), readers, clock.clone(), stale_after).with_svm(svm_readers),
    );
    let risk = crate::risk::payment::RiskService::build(&config.risk, store.clone(), clock.clone())
        .map_err(|problem| StartError::Config(ConfigError::Invalid(vec![problem])))?;
    let evidence = Arc::new(crate::evidence::EvidenceService {
        store: store.clone(),
        clock: clock.clone(),
        signer: Arc::new(crate::evidence::signer_for(
            &config.evidence,
            config.database_url.expose(),
        )?),
        config: config.evidence.clone(),
    });
    let policy = match &config.policy_file {
        Some(path) => crate::policy::reload::load_file(path).map_err(|message| {
            StartError::Config(ConfigError::Invalid(vec![ConfigProblem {
                key: "policy_file".into(),
                message,
            }]))
        })?,
        None => config.policy.clone(),
    };
    let pipeline = Arc::new(
        Pipeline::new(store, upstream, chains, clock)
            .with_settlers(settlers)
            .with_policy(Policy::new(policy))
            .with_risk(Arc::new(risk)),
    );
    Ok(AppState {
        pipeline,
        admin: crate::admin::Authenticator::new(&config.admin),
        drain: ops::Drain::default(),
        rpc_probe: Arc::new(ops::RpcProbe::new(&config)),
        evidence,
        config: Arc::new(config),
        reconciler,
        svm,
    })
}

/// The local settlers (chains with `settlement = "local"`), and a chain reader for every EVM
/// chain with RPC, so the reconciler can resolve forward-mode settlements too.
fn settlers(config: &Config) -> Result<(Settlers, BTreeMap<String, Arc<EvmSettler>>), StartError> {
    let mut settlers = Settlers::default();
    let mut readers = BTreeMap::new();
    for (id, chain) in &config.chains {
        if !id.starts_with("eip155:") || !chain.onchain_checks || chain.rpc_urls.is_empty() {
            continue;
        }
        let one = BTreeMap::from([(id.clone(), chain.clone())]);
        let timeout = Duration::from_secs(
            chain
                .settle_receipt_timeout_secs
                .unwrap_or(crate::chain::DEFAULT_RECEIPT_TIMEOUT_SECS),
        );
        let signer = match chain.settlement {
            SettlementMode::Local => load_signer(id, chain)
                .map_err(|problem| StartError::Config(ConfigError::Invalid(vec![problem])))?,
            // Reconciliation only reads the chain; this key never signs anything.
            SettlementMode::Forward => PrivateKeySigner::from_bytes(&B256::with_last_byte(1))
                .map_err(|e| StartError::Chain(e.to_string()))?,
        };
        let settler = Arc::new(
            EvmSettler::new(&one, signer, timeout).map_err(|e| StartError::Chain(e.to_string()))?,
        );
        if chain.settlement == SettlementMode::Local {
            tracing::info!(chain = %id, address = %settler.address(), "Settling locally.");
            settlers = settlers.with_local(id, settler.clone());
        }
        readers.insert(id.clone(), settler);
    }
    Ok((settlers, readers))
}

/// The Solana fee-payer keys of the chains settled locally (CAIP-2 → key).
fn svm_keys(config: &Config) -> Result<BTreeMap<String, SvmKey>, StartError> {
    let mut keys = BTreeMap::new();
    for (id, chain) in &config.chains {
        if !id.starts_with("solana:") || chain.settlement != SettlementMode::Local {
            continue;
        }
        let (field, text) = read_key_text(id, chain)
            .map_err(|problem| StartError::Config(ConfigError::Invalid(vec![problem])))?;
        let key = SvmKey::parse(&text).map_err(|e| {
            StartError::Config(ConfigError::Invalid(vec![ConfigProblem {
                key: format!("chains.\"{id}\".{field}"),
                message: e.to_string(),
            }]))
        })?;
        keys.insert(id.clone(), key);
    }
    Ok(keys)
}

/// Adds a Solana settler for each locally settled Solana chain, and returns a chain reader for
/// every Solana chain with RPC (forward-mode entries whose signature is known reconcile too).
fn svm_settlers(
    config: &Config,
    mut settlers: Settlers,
    keys: &BTreeMap<String, SvmKey>,
) -> Result<(Settlers, SvmSettlers), StartError> {
    let mut readers = SvmSettlers::new();
    for (id, chain) in &config.chains {
        if !id.starts_with("solana:") || !chain.onchain_checks || chain.rpc_urls.is_empty() {
            continue;
        }
        let timeout = Duration::from_secs(
            chain
                .settle_receipt_timeout_secs
                .unwrap_or(crate::chain::DEFAULT_RECEIPT_TIMEOUT_SECS),
        );
        let key = keys.get(id).cloned();
        let settler = Arc::new(
            SvmSettler::new(id, chain, key, timeout)
                .map_err(|e| StartError::Chain(e.to_string()))?,
        );
        if let Some(fee_payer) = settler.fee_payer() {
            tracing::info!(chain = %id, %fee_payer, "Settling Solana payments locally.");
            settlers = settlers.with_local_svm(settler.network(), settler.clone());
        }
        readers.insert(settler.network().to_owned(), settler);
    }
    Ok((settlers, readers))
}

/// Reads the key text of a local chain: (the configuration field it came from, the text).
/// Errors name the configuration key, never the key material.
fn read_key_text(id: &str, chain: &ChainConfig) -> Result<(&'static str, String), ConfigProblem> {
    let problem = |field: &str, message: String| ConfigProblem {
        key: format!("chains.\"{id}\".{field}"),
        message,
    };
    let (field, text) = match (&chain.signer_key_env, &chain.signer_key_file) {
        (Some(var), _) => (
            "signer_key_env",
            std::env::var(var).map_err(|_| {
                problem(
                    "signer_key_env",
                    format!("environment variable {var} is not set"),
                )
            })?,
        ),
        (None, Some(path)) => (
            "signer_key_file",
            std::fs::read_to_string(path).map_err(|e| {
                problem(
                    "signer_key_file",
                    format!("cannot read {}: {}", path.display(), e.kind()),
                )
            })?,
        ),
        (None, None) => {
            return Err(problem(
                "signer_key_env",
                "local settlement needs signer_key_env or signer_key_file".into(),
            ));
        }
    };
    Ok((field, text))
}

/// Reads the facilitator key of a local EVM chain. Errors name the configuration key, never
/// the key material.
fn load_signer(id: &str, chain: &ChainConfig) -> Result<PrivateKeySigner, ConfigProblem> {
    let (field, text) = read_key_text(id, chain)?;
    let problem = |field: &str, message: String| ConfigProblem {
        key: format!("chains.\"{id}\".{field}"),
        message,
    };
    text.trim()
        .parse::<PrivateKeySigner>()
        .map_err(|_| problem(field, "is not a 32-byte hex secp256k1 private key".into()))
}

fn chain_checkers(
    config: &Config,
    svm_keys: &BTreeMap<String, SvmKey>,
) -> Result<(ChainCheckers, Arc<SvmChecker>), StartError> {
    let evm = EvmChecker::new(&config.chains).map_err(|e| StartError::Chain(e.to_string()))?;
    let mut svm = SvmChecker::new(&config.chains).map_err(|e| StartError::Chain(e.to_string()))?;
    // Locally settled: our own key is the only fee payer a payment may name.
    for (id, key) in svm_keys {
        svm.set_local_fee_payer(id, key.pubkey());
    }
    let svm = Arc::new(svm);
    let checkers = ChainCheckers::new(&config.chains)
        .with_evm(Arc::new(evm))
        .with_svm(svm.clone());
    Ok((checkers, svm))
}

/// Keeps the Solana checker's accepted fee payers equal to the upstream's signers: a Solana
/// payment's `feePayer` must belong to the facilitator that will co-sign it (spec §1.5).
/// Until the first `/supported` answer arrives, no upstream fee payer is accepted (fail closed).
fn spawn_fee_payer_sync(state: &AppState) -> Option<tokio::task::JoinHandle<()>> {
    // No Solana chain configured: nothing to keep in sync.
    state.svm.networks().next()?;
    let (svm, upstream) = (state.svm.clone(), state.pipeline.upstream().clone());
    let every = Duration::from_secs(state.config.upstream.supported_cache_ttl_secs.max(5));
    Some(tokio::spawn(async move {
        loop {
            match upstream.supported().await {
                Ok(supported) => svm.update_fee_payers_from_supported(&supported),
                Err(error) => {
                    tracing::warn!(error = %error, "Upstream /supported unavailable; Solana fee payers not refreshed.")
                }
            }
            tokio::time::sleep(every).await;
        }
    }))
}

/// The router with every route and edge layer.
pub fn app(state: AppState) -> Router {
    let x_request_id = HeaderName::from_static("x-request-id");
    let sensitive = [
        header::AUTHORIZATION,
        HeaderName::from_static("x-payment"),
        HeaderName::from_static("payment-signature"),
    ];
    let timeout = Duration::from_millis(state.config.request_timeout_ms);
    let body_limit = state.config.max_body_bytes;
    Router::new()
        .merge(facilitator::routes())
        .nest("/x402", facilitator::routes())
        .merge(ops::routes(
            state.config.ops.metrics_enabled && state.config.ops.metrics_listen.is_none(),
        ))
        .merge(crate::risk::routes::routes())
        .merge(openapi::routes())
        .merge(crate::dashboard::routes())
        .merge(crate::evidence::admin::public_routes())
        .nest("/admin", crate::admin::routes(state.clone()))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(
                    x_request_id.clone(),
                    MakeRequestUuid,
                ))
                .layer(SetSensitiveRequestHeadersLayer::new(sensitive))
                .layer(
                    TraceLayer::new_for_http().make_span_with(|request: &Request<_>| {
                        let request_id = request
                            .headers()
                            .get("x-request-id")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("");
                        tracing::info_span!(
                            "request",
                            method = %request.method(),
                            // The path only: an `access_token` query parameter (dashboard
                            // event streams) must not reach the logs.
                            path = %request.uri().path(),
                            request_id = %request_id,
                        )
                    }),
                )
                .layer(PropagateRequestIdLayer::new(x_request_id))
                .layer(TimeoutLayer::with_status_code(
                    StatusCode::GATEWAY_TIMEOUT,
                    timeout,
                )),
        )
        .with_state(state)
}

/// A server running on a background task.
#[derive(Debug)]
pub struct Running {
    /// The bound address (useful with port 0).
    pub addr: SocketAddr,
    /// The state it serves.
    pub state: AppState,
    shutdown: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    metrics_task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    reconcile_task: tokio::task::JoinHandle<()>,
    fee_payer_task: Option<tokio::task::JoinHandle<()>>,
    /// Reloads the risk rules on change.
    rules_task: Option<tokio::task::JoinHandle<()>>,
    prune_task: Option<tokio::task::JoinHandle<()>>,
    /// The policy file reloader, the webhook drainer and the evidence indexer.
    policy_tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.policy_tasks.iter().for_each(|t| t.abort());
        self.reconcile_task.abort();
        if let Some(task) = &self.metrics_task {
            task.abort();
        }
        for task in [&self.fee_payer_task, &self.prune_task]
            .into_iter()
            .flatten()
        {
            task.abort();
        }
        if let Some(task) = &self.rules_task {
            task.abort();
        }
    }
}

impl Running {
    /// Stops accepting, waits (at most `[ops] drain_timeout_secs`) for in-flight verify and
    /// settle tasks, and then for the server to end. A settle still running at the limit
    /// keeps its in-flight journal entry, which the reconciler resolves later.
    pub async fn stop(mut self) -> std::io::Result<()> {
        self.policy_tasks.iter().for_each(|t| t.abort());
        self.reconcile_task.abort();
        for task in [&self.fee_payer_task, &self.prune_task]
            .into_iter()
            .flatten()
        {
            task.abort();
        }
        if let Some(task) = &self.rules_task {
            task.abort();
        }
        if let Some(task) = &self.metrics_task {
            task.abort();
        }
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let limit = Duration::from_secs(self.state.config.ops.drain_timeout_secs);
        let left = self.state.drain.wait(limit).await;
        if left > 0 {
            tracing::warn!(
                left,
                "Drain timeout reached; in-flight settles are left to the reconciler."
            );
        }
        // Connections whose tasks are done close at once; others are cut after a short grace.
        match tokio::time::timeout(Duration::from_secs(5), &mut self.task).await {
            Ok(Ok(result)) => result,
            Ok(Err(e)) => Err(std::io::Error::other(e)),
            Err(_) => {
                self.task.abort();
                Ok(())
            }
        }
    }

    /// Waits until the server ends (on its own or after `stop`).
    pub async fn wait(mut self) -> std::io::Result<()> {
        (&mut self.task).await.map_err(std::io::Error::other)?
    }
}

/// Builds everything from `config`, binds, and serves on a background task.
pub async fn start(config: Config) -> Result<Running, StartError> {
    start_with_clock(config, Arc::new(SystemClock)).await
}

/// As [`start`], with an injected clock (tests).
pub async fn start_with_clock(config: Config, clock: SharedClock) -> Result<Running, StartError> {
    config
        .validate()
        .map_err(|p| StartError::Config(crate::config::ConfigError::Invalid(p)))?;
    let addr = config.listen_addr()?;
    if config.ops.metrics_enabled {
        crate::metrics::install();
    }
    let hooks = crate::webhook::Webhooks::from_config(&config.webhooks)
        .map_err(|p| StartError::Config(ConfigError::Invalid(vec![p])))?;
    let state = build_state(config, clock.clone()).await?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| StartError::Bind { addr, source })?;
    let (tx, rx) = oneshot::channel::<()>();
    let router = app(state.clone());
    let task = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = rx.await;
            })
            .await
    });
    let metrics_task = match (
        state.config.ops.metrics_enabled,
        &state.config.ops.metrics_listen,
    ) {
        (true, Some(listen)) => Some(spawn_metrics_listener(listen, state.clone()).await?),
        _ => None,
    };
    let reconcile_task = state
        .reconciler
        .clone()
        .spawn(Duration::from_secs(state.config.reconcile_interval_secs));
    let fee_payer_task = spawn_fee_payer_sync(&state);
    let rules_task = state.pipeline.risk().and_then(|risk| {
        let engine = risk.engine()?.clone();
        Some(engine.spawn_reload(risk.clock().clone()))
    });
    let prune_task = crate::evidence::retention::spawn(
        state.evidence.clone(),
        Duration::from_secs(state.config.evidence.prune_interval_secs),
    );
    let mut policy_tasks = spawn_policy_tasks(&state, hooks, clock);
    policy_tasks.push(crate::evidence::query::spawn_indexer(
        state.pipeline.store().clone(),
        crate::evidence::query::INDEX_EVERY,
    ));
    policy_tasks.push(crate::store::spawn_checkpointer(
        state.pipeline.store().clone(),
        crate::store::CHECKPOINT_EVERY,
    ));
    tracing::info!(%addr, "Gatehouse listening.");
    Ok(Running {
        addr,
        state,
        shutdown: Some(tx),
        task,
        metrics_task,
        reconcile_task,
        fee_payer_task,
        rules_task,
        prune_task,
        policy_tasks,
    })
}

/// Serves `/metrics` alone on `[ops] metrics_listen`.
async fn spawn_metrics_listener(
    listen: &str,
    state: AppState,
) -> Result<tokio::task::JoinHandle<std::io::Result<()>>, StartError> {
    let addr: SocketAddr = listen.parse().map_err(|_| {
        StartError::Config(ConfigError::Invalid(vec![ConfigProblem {
            key: "ops.metrics_listen".into(),
            message: format!("`{listen}` is not an IP:port address"),
        }]))
    })?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })?;
    tracing::info!(%addr, "Metrics listening.");
    let router = ops::metrics_router(state);
    Ok(tokio::spawn(axum::serve(listener, router).into_future()))
}

/// The webhook outbox drainer (always: events are enqueued whether or not webhooks are
/// configured, and unsubscribed ones are routed to nobody) and, with `policy_file`, its
/// reloader.
fn spawn_policy_tasks(
    state: &AppState,
    hooks: crate::webhook::Webhooks,
    clock: SharedClock,
) -> Vec<tokio::task::JoinHandle<()>> {
    let store = state.pipeline.store().clone();
    let mut tasks = vec![crate::webhook::Drainer::new(store.clone(), hooks, clock.clone()).spawn()];
    if let Some(path) = &state.config.policy_file {
        let reloader = crate::policy::reload::Reloader::new(
            path.clone(),
            state.pipeline.policy().clone(),
            store,
            clock,
        );
        tasks.push(reloader.spawn(Duration::from_secs(state.config.policy_reload_secs)));
    }
    tasks
}
