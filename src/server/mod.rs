//! The HTTP server: one [`app`] serves `main` and the tests. Edge layers, outermost first: a
//! request id is set (or kept) so every log line and evidence record carries it; sensitive
//! headers are marked before tracing sees them; the trace span wraps everything inside; the
//! request id is echoed in `X-Request-Id`; a timeout bounds each request; the body limit
//! answers 413.

pub mod error;
pub mod facilitator;
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

use crate::chain::ChainCheckers;
use crate::chain::evm::EvmChecker;
use crate::clock::{SharedClock, SystemClock};
use crate::config::Config;
use crate::pipeline::Pipeline;
use crate::policy::Policy;
use crate::store;
use crate::upstream::Upstream;

/// Shared state: cheap to clone (a few `Arc`s).
#[derive(Debug, Clone)]
pub struct AppState {
    /// The pipeline.
    pub pipeline: Arc<Pipeline>,
    /// The effective configuration.
    pub config: Arc<Config>,
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
    let chains = chain_checkers(&config)?;
    let pipeline = Arc::new(
        Pipeline::new(store, upstream, chains, clock)
            .with_policy(Policy::new(config.policy.clone())),
    );
    Ok(AppState {
        pipeline,
        config: Arc::new(config),
    })
}

fn chain_checkers(config: &Config) -> Result<ChainCheckers, StartError> {
    let evm = EvmChecker::new(&config.chains).map_err(|e| StartError::Chain(e.to_string()))?;
    Ok(ChainCheckers::new(&config.chains).with_evm(Arc::new(evm)))
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
        .merge(ops::routes())
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
}

impl Running {
    /// Stops accepting, drains in-flight requests, and waits for the server to end.
    pub async fn stop(mut self) -> std::io::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match (&mut self.task).await {
            Ok(result) => result,
            Err(e) => Err(std::io::Error::other(e)),
        }
    }

    /// Waits until the server ends (on its own or after `stop`).
    pub async fn wait(self) -> std::io::Result<()> {
        self.task.await.map_err(std::io::Error::other)?
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
    let state = build_state(config, clock).await?;
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
    tracing::info!(%addr, "Gatehouse listening.");
    Ok(Running {
        addr,
        state,
        shutdown: Some(tx),
        task,
    })
}
