//! The HTTP client itself: one shared connection pool, per-endpoint timeouts, capped body
//! reads, and the `/supported` cache.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Method, StatusCode, header};
use moka::future::Cache;
use serde_json::Value;

use super::config::{UpstreamConfig, parse_base_url};
use super::error::{Endpoint, UpstreamError};

/// Largest response body read from the upstream. Facilitator answers are a few hundred bytes
/// and a discovery page a few hundred KiB at most; anything bigger is refused, not buffered.
pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// Attempts at `GET /supported` while the upstream answers 429 (spec §1.5: three attempts,
/// waiting one base delay, then two).
pub const SUPPORTED_MAX_ATTEMPTS: u32 = 3;

/// How long an idle pooled connection is kept; upstream load balancers commonly drop idle
/// connections after 60 s, and reusing one they dropped costs a retry.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(50);

/// A JSON answer from the upstream, with the bytes it was parsed from (kept for evidence and
/// verbatim relaying).
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamAnswer {
    /// The upstream's status: 2xx or 4xx (5xx and 3xx are errors).
    pub status: StatusCode,
    /// The parsed body, always a JSON object.
    pub body: Value,
    /// The body bytes exactly as received.
    pub raw: Bytes,
    /// Milliseconds from sending the request to the end of the body.
    pub elapsed_ms: u64,
}

/// The client for the upstream facilitator. Cheap to clone: the connection pool and the
/// `/supported` cache are shared between clones.
#[derive(Clone)]
pub struct Upstream {
    client: reqwest::Client,
    base_url: Arc<str>,
    urls: Arc<Urls>,
    /// The configured credential, already resolved and marked sensitive.
    authorization: Option<HeaderValue>,
    verify_timeout: Duration,
    settle_timeout: Duration,
    supported_timeout: Duration,
    retry_base_delay: Duration,
    supported_cache: Cache<(), Arc<Value>>,
}

/// The endpoint URLs, joined once at start-up.
struct Urls {
    verify: reqwest::Url,
    settle: reqwest::Url,
    supported: reqwest::Url,
    discovery: reqwest::Url,
}

/// What came back from one HTTP exchange, before the endpoint's rules are applied.
struct Exchange {
    status: StatusCode,
    location: Option<String>,
    /// `Ok(None)`: the body was over [`MAX_RESPONSE_BYTES`] and was not read further.
    body: Result<Option<Bytes>, reqwest::Error>,
    elapsed_ms: u64,
}

// === impl Upstream ===

impl Upstream {
    /// Builds the client, resolving a `$ENV_VAR` credential from the process environment.
    /// Fails with [`UpstreamError::Config`] listing every problem with the section.
    pub fn new(cfg: &UpstreamConfig) -> Result<Self, UpstreamError> {
        Self::new_with_env(cfg, &|name| std::env::var(name).ok())
    }

    /// Builds the client, resolving a `$ENV_VAR` credential through `env`.
    pub fn new_with_env(
        cfg: &UpstreamConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, UpstreamError> {
        let problems = cfg.validate_with_env(env);
        if !problems.is_empty() {
            return Err(UpstreamError::Config(problems));
        }
        let base = parse_base_url(&cfg.url).map_err(|p| UpstreamError::Config(vec![p]))?;
        let join = |endpoint: Endpoint| {
            let joined = format!("{}{}", base.as_str().trim_end_matches('/'), endpoint.path());
            reqwest::Url::parse(&joined).map_err(|e| {
                UpstreamError::Config(vec![format!("upstream.url joined with {endpoint}: {e}")])
            })
        };
        let urls = Urls {
            verify: join(Endpoint::Verify)?,
            settle: join(Endpoint::Settle)?,
            supported: join(Endpoint::Supported)?,
            discovery: join(Endpoint::Discovery)?,
        };
        let authorization = match &cfg.authorization {
            Some(credential) => Some(
                credential
                    .header_value(env)
                    .map_err(|p| UpstreamError::Config(vec![p]))?,
            ),
            None => None,
        };
        let client = reqwest::Client::builder()
            // A redirect would carry the Authorization header to wherever it points.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_millis(cfg.connect_timeout_ms))
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .user_agent(concat!("gatehouse/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| {
                UpstreamError::Config(vec![format!("HTTP client: {}", error_chain(&e))])
            })?;
        let supported_cache = Cache::builder()
            .max_capacity(1)
            .time_to_live(Duration::from_secs(cfg.supported_cache_ttl_secs))
            .build();
        Ok(Self {
            client,
            base_url: Arc::from(cfg.base_url()),
            urls: Arc::new(urls),
            authorization,
            verify_timeout: Duration::from_millis(cfg.verify_timeout_ms),
            settle_timeout: Duration::from_millis(cfg.settle_timeout_ms),
            supported_timeout: Duration::from_millis(cfg.supported_timeout_ms),
            retry_base_delay: Duration::from_millis(cfg.supported_retry_base_delay_ms),
            supported_cache,
        })
    }

    /// The base URL, trailing slashes stripped.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Forwards a `/verify` body byte for byte. 2xx and 4xx JSON answers are returned as
    /// they are; the caller decides what they mean.
    pub async fn verify(
        &self,
        body: Bytes,
        incoming_auth: Option<&HeaderValue>,
    ) -> Result<UpstreamAnswer, UpstreamError> {
        let url = self.urls.verify.clone();
        self.forward(
            Endpoint::Verify,
            url,
            body,
            incoming_auth,
            self.verify_timeout,
        )
        .await
    }

    /// Forwards a `/settle` body byte for byte. An error for which
    /// [`UpstreamError::is_unknown_outcome`] holds means the payment may have landed.
    pub async fn settle(
        &self,
        body: Bytes,
        incoming_auth: Option<&HeaderValue>,
    ) -> Result<UpstreamAnswer, UpstreamError> {
        let url = self.urls.settle.clone();
        self.forward(
            Endpoint::Settle,
            url,
            body,
            incoming_auth,
            self.settle_timeout,
        )
        .await
    }

    /// The upstream's `/supported` answer (a JSON object with a `kinds` array), served from
    /// the cache while fresh. Concurrent callers on an empty cache share one fetch. A 429 is
    /// retried up to [`SUPPORTED_MAX_ATTEMPTS`] attempts in all (spec §1.5); failures are not
    /// cached.
    pub async fn supported(&self) -> Result<Arc<Value>, UpstreamError> {
        self.supported_cache
            .try_get_with((), self.fetch_supported())
            .await
            .map_err(|shared| UpstreamError::clone(&shared))
    }

    /// Relays `GET /discovery/resources?<query>`; `query` is the raw query string, without
    /// the `?`.
    pub async fn discovery(&self, query: Option<&str>) -> Result<UpstreamAnswer, UpstreamError> {
        let mut url = self.urls.discovery.clone();
        url.set_query(query.filter(|q| !q.is_empty()));
        let exchange = self
            .exchange(
                Endpoint::Discovery,
                Method::GET,
                url,
                None,
                None,
                self.supported_timeout,
            )
            .await?;
        json_answer(Endpoint::Discovery, exchange, self.supported_timeout)
    }

    /// Whether the upstream is reachable: its `/supported` answers (from the cache when
    /// fresh, else fetched).
    pub async fn health(&self) -> Result<(), UpstreamError> {
        self.supported().await.map(|_| ())
    }

    async fn forward(
        &self,
        endpoint: Endpoint,
        url: reqwest::Url,
        body: Bytes,
        incoming_auth: Option<&HeaderValue>,
        timeout: Duration,
    ) -> Result<UpstreamAnswer, UpstreamError> {
        let exchange = self
            .exchange(
                endpoint,
                Method::POST,
                url,
                Some(body),
                incoming_auth,
                timeout,
            )
            .await?;
        json_answer(endpoint, exchange, timeout)
    }

    async fn fetch_supported(&self) -> Result<Arc<Value>, UpstreamError> {
        let endpoint = Endpoint::Supported;
        let timeout = self.supported_timeout;
        let mut attempt = 1;
        loop {
            let url = self.urls.supported.clone();
            let exchange = self
                .exchange(endpoint, Method::GET, url, None, None, timeout)
                .await?;
            let status = exchange.status;
            if status == StatusCode::TOO_MANY_REQUESTS && attempt < SUPPORTED_MAX_ATTEMPTS {
                // 1x, then 2x the base delay (spec §1.5).
                tokio::time::sleep(self.retry_base_delay * (1 << (attempt - 1))).await;
                attempt += 1;
                continue;
            }
            if status.is_server_error() || status.is_redirection() {
                return Err(status_error(endpoint, exchange));
            }
            if !status.is_success() {
                let body = match exchange.body {
                    Ok(Some(bytes)) => serde_json::from_slice(&bytes).unwrap_or(Value::Null),
                    _ => Value::Null,
                };
                return Err(UpstreamError::UnexpectedStatus {
                    endpoint,
                    status,
                    body,
                });
            }
            let answer = json_answer(endpoint, exchange, timeout)?;
            // Resource servers build their accepted kinds from this list; an answer without
            // it must not be cached as the upstream's capabilities.
            if !answer.body.get("kinds").is_some_and(Value::is_array) {
                return Err(UpstreamError::InvalidBody {
                    endpoint,
                    status,
                    reason: "no \"kinds\" array".to_owned(),
                });
            }
            return Ok(Arc::new(answer.body));
        }
    }

    /// One HTTP exchange: sends the request and reads the body under the size cap (except
    /// for redirects, whose body is of no use). Errors here happen before a status exists.
    /// One timed exchange (recorded in `/metrics`).
    async fn exchange(
        &self,
        endpoint: Endpoint,
        method: Method,
        url: reqwest::Url,
        body: Option<Bytes>,
        incoming_auth: Option<&HeaderValue>,
        timeout: Duration,
    ) -> Result<Exchange, UpstreamError> {
        let lap = crate::metrics::Lap::start();
        let result = self
            .exchange_once(endpoint, method, url, body, incoming_auth, timeout)
            .await;
        let outcome = result
            .as_ref()
            .map_or("error", |e| crate::metrics::status_outcome(e.status));
        crate::metrics::upstream_call(endpoint.path(), outcome, lap.total());
        result
    }

    async fn exchange_once(
        &self,
        endpoint: Endpoint,
        method: Method,
        url: reqwest::Url,
        body: Option<Bytes>,
        incoming_auth: Option<&HeaderValue>,
        timeout: Duration,
    ) -> Result<Exchange, UpstreamError> {
        let started = tokio::time::Instant::now();
        let mut request = self
            .client
            .request(method, url)
            .timeout(timeout)
            .header(header::ACCEPT, HeaderValue::from_static("application/json"));
        // The configured credential replaces the seller's; without one, the seller's goes
        // through unchanged (spec §1.1).
        if let Some(auth) = self.authorization.as_ref().or(incoming_auth) {
            let mut auth = auth.clone();
            auth.set_sensitive(true);
            request = request.header(header::AUTHORIZATION, auth);
        }
        if let Some(body) = body {
            request = request
                .header(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                )
                .body(body);
        }
        let mut response = request
            .send()
            .await
            .map_err(|e| classify(e, endpoint, timeout))?;
        let status = response.status();
        let location = response
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = if status.is_redirection() {
            Ok(Some(Bytes::new()))
        } else {
            read_capped(&mut response).await
        };
        Ok(Exchange {
            status,
            location,
            body,
            elapsed_ms: elapsed_ms(started),
        })
    }
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("base_url", &self.base_url)
            .field(
                "authorization",
                &self.authorization.as_ref().map(|_| "<redacted>"),
            )
            .field("verify_timeout", &self.verify_timeout)
            .field("settle_timeout", &self.settle_timeout)
            .field("supported_timeout", &self.supported_timeout)
            .finish_non_exhaustive()
    }
}

// === helpers ===

/// Applies the forwarding rules to an exchange: 5xx and 3xx are errors, a 2xx or 4xx must
/// carry a JSON object within the size cap.
fn json_answer(
    endpoint: Endpoint,
    exchange: Exchange,
    timeout: Duration,
) -> Result<UpstreamAnswer, UpstreamError> {
    let status = exchange.status;
    if status.is_server_error() || status.is_redirection() {
        return Err(status_error(endpoint, exchange));
    }
    let invalid = |reason: String| UpstreamError::InvalidBody {
        endpoint,
        status,
        reason,
    };
    if !status.is_success() && !status.is_client_error() {
        return Err(invalid("informational status is not an answer".to_owned()));
    }
    let raw = match exchange.body {
        Ok(Some(raw)) => raw,
        Ok(None) => return Err(invalid(format!("body over {MAX_RESPONSE_BYTES} bytes"))),
        Err(e) => return Err(classify(e, endpoint, timeout)),
    };
    let body: Value =
        serde_json::from_slice(&raw).map_err(|e| invalid(format!("not JSON ({e})")))?;
    if !body.is_object() {
        return Err(invalid("not a JSON object".to_owned()));
    }
    Ok(UpstreamAnswer {
        status,
        body,
        raw,
        elapsed_ms: exchange.elapsed_ms,
    })
}

/// The error for a 5xx or 3xx answer. A 5xx keeps whatever body could be read, since it may
/// name the transaction; a body that could not be read does not change the status' meaning.
fn status_error(endpoint: Endpoint, exchange: Exchange) -> UpstreamError {
    let status = exchange.status;
    if status.is_redirection() {
        return UpstreamError::Redirect {
            endpoint,
            status,
            location: exchange.location,
        };
    }
    let raw = match exchange.body {
        Ok(Some(raw)) => raw,
        Ok(None) | Err(_) => Bytes::new(),
    };
    let body = serde_json::from_slice(&raw).unwrap_or(Value::Null);
    UpstreamError::ServerError {
        endpoint,
        status,
        body,
        raw,
    }
}

/// Reads the body, stopping as soon as it exceeds [`MAX_RESPONSE_BYTES`] (`Ok(None)`).
async fn read_capped(response: &mut reqwest::Response) -> Result<Option<Bytes>, reqwest::Error> {
    let declared = response.content_length().unwrap_or(0);
    if declared > MAX_RESPONSE_BYTES as u64 {
        return Ok(None);
    }
    // `declared` is at most the cap here, so the conversion cannot truncate.
    let mut body = BytesMut::with_capacity(usize::try_from(declared).unwrap_or(0));
    while let Some(chunk) = response.chunk().await? {
        if body.len().saturating_add(chunk.len()) > MAX_RESPONSE_BYTES {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body.freeze()))
}

/// Classifies a transport error by whether the request can have reached the upstream.
fn classify(error: reqwest::Error, endpoint: Endpoint, timeout: Duration) -> UpstreamError {
    if error.is_builder() {
        return UpstreamError::Config(vec![format!(
            "could not build the {endpoint} request: {}",
            error_chain(&error)
        )]);
    }
    // Checked before `is_timeout`: a connect timeout is both, and nothing was sent.
    if error.is_connect() {
        return UpstreamError::Connect {
            endpoint,
            reason: error_chain(&error),
        };
    }
    if error.is_timeout() {
        return UpstreamError::Timeout {
            endpoint,
            timeout_ms: millis(timeout),
        };
    }
    UpstreamError::Transport {
        endpoint,
        reason: error_chain(&error),
    }
}

/// The error and its causes on one line, for messages that outlive the error value.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn elapsed_ms(started: tokio::time::Instant) -> u64 {
    millis(started.elapsed())
}
