//! Webhooks: events (an endpoint discovered, a breaker opened, a blocked payTo change, a
//! payment waiting for review) are written to a durable outbox in the store by [`enqueue`],
//! in the same step that decided them, and a background [`Drainer`] delivers them to the
//! configured `[[webhooks]]`, signed with HMAC-SHA256, retrying with exponential backoff up to
//! a maximum number of attempts.
//!
//! SSRF: only configured URLs are ever called; redirects are not followed; a destination that
//! resolves to a private, loopback, link-local or otherwise non-public address is refused
//! unless that webhook sets `allow_private = true`; the address checked is the one connected
//! to (the resolution is pinned), so DNS rebinding cannot swap it afterwards.
//!
//! Signature: `X-Gatehouse-Signature: t=<unix secs>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
//! A receiver recomputes it over the raw body and rejects old timestamps.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Sha256;

use crate::clock::SharedClock;
use crate::config::ConfigProblem;
use crate::store::{Store, StoreError, WebhookAttempt, WebhookRow};

/// How often the drainer looks for work.
const DRAIN_INTERVAL: Duration = Duration::from_millis(250);
/// Bound on rows handled per drain pass.
const DRAIN_BATCH: u32 = 100;
/// How often finished outbox rows are pruned.
pub const PRUNE_EVERY_MS: u64 = 10 * 60 * 1000;
/// How long a delivered webhook (and its routed event) stays in the outbox.
pub const KEEP_DONE_MS: u64 = 7 * 24 * 3600 * 1000;
/// How long a failed webhook stays in the outbox.
pub const KEEP_FAILED_MS: u64 = 30 * 24 * 3600 * 1000;
/// Bound on the error text kept per attempt.
const ERROR_TEXT_MAX: usize = 300;

/// An event a webhook can subscribe to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum WebhookEvent {
    /// A payment to an endpoint never seen before created its policy from the defaults.
    #[serde(rename = "endpoint.discovered")]
    EndpointDiscovered,
    /// A circuit breaker opened.
    #[serde(rename = "breaker.opened")]
    BreakerOpened,
    /// A payment to a payTo other than the endpoint's pinned one was blocked.
    #[serde(rename = "pin.changed_blocked")]
    PinChangedBlocked,
    /// A payment waits for a human review (emitted by the risk step).
    #[serde(rename = "review.pending")]
    ReviewPending,
}

impl WebhookEvent {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EndpointDiscovered => "endpoint.discovered",
            Self::BreakerOpened => "breaker.opened",
            Self::PinChangedBlocked => "pin.changed_blocked",
            Self::ReviewPending => "review.pending",
        }
    }
}

/// One `[[webhooks]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where events are POSTed (http or https).
    pub url: String,
    /// Environment variable holding the signing secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_env: Option<String>,
    /// File holding the signing secret (alternative to `secret_env`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<PathBuf>,
    /// The events sent here.
    pub events: Vec<WebhookEvent>,
    /// Allow a destination on a private, loopback or link-local address. Default false.
    #[serde(default)]
    pub allow_private: bool,
    /// Attempts before an event is given up. Default 8.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Delay before the first retry; doubles each time. Default 1000.
    #[serde(default = "default_retry_base_ms")]
    pub retry_base_ms: u64,
    /// Longest delay between retries. Default 300000.
    #[serde(default = "default_retry_max_ms")]
    pub retry_max_ms: u64,
    /// Bound on one delivery attempt. Default 5000.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_max_attempts() -> u32 {
    8
}
fn default_retry_base_ms() -> u64 {
    1_000
}
fn default_retry_max_ms() -> u64 {
    300_000
}
fn default_timeout_ms() -> u64 {
    5_000
}

impl WebhookConfig {
    /// A webhook for `url` and `events` with the defaults (no secret source set).
    pub fn new(url: &str, events: Vec<WebhookEvent>) -> Self {
        Self {
            url: url.to_owned(),
            secret_env: None,
            secret_file: None,
            events,
            allow_private: false,
            max_attempts: default_max_attempts(),
            retry_base_ms: default_retry_base_ms(),
            retry_max_ms: default_retry_max_ms(),
            timeout_ms: default_timeout_ms(),
        }
    }
}

/// Every problem with the `[[webhooks]]` entries, naming the key.
pub fn problems(webhooks: &[WebhookConfig]) -> Vec<ConfigProblem> {
    let mut out = Vec::new();
    for (i, hook) in webhooks.iter().enumerate() {
        let mut push = |field: &str, message: &str| {
            out.push(ConfigProblem {
                key: format!("webhooks[{i}].{field}"),
                message: message.to_owned(),
            })
        };
        match reqwest::Url::parse(&hook.url) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {}
            _ => push("url", "must be an http(s) URL with a host"),
        }
        match (&hook.secret_env, &hook.secret_file) {
            (Some(_), Some(_)) => push("secret_env", "set secret_env or secret_file, not both"),
            (None, None) => push("secret_env", "a signing secret is required"),
            _ => {}
        }
        if hook.events.is_empty() {
            push("events", "must name at least one event");
        }
        if hook.max_attempts == 0 || hook.max_attempts > 100 {
            push("max_attempts", "must be between 1 and 100");
        }
        if hook.retry_base_ms == 0 || hook.retry_max_ms < hook.retry_base_ms {
            push(
                "retry_base_ms",
                "must be greater than 0 and at most retry_max_ms",
            );
        }
        if hook.timeout_ms == 0 || hook.timeout_ms > 60_000 {
            push("timeout_ms", "must be between 1 and 60000");
        }
    }
    out
}

/// Writes `event` with its `payload` to the outbox; the drainer routes it to every webhook
/// subscribed to it. Callers do this in the step that decided the event, so a crash after
/// the decision cannot lose it.
pub async fn enqueue(
    store: &dyn Store,
    event: WebhookEvent,
    payload: Value,
    now_ms: u64,
) -> Result<i64, StoreError> {
    store
        .enqueue_webhook(event.as_str(), &payload.to_string(), now_ms)
        .await
}

/// The value of the `X-Gatehouse-Signature` header for `body` sent at `t_secs`.
pub fn signature(secret: &[u8], t_secs: u64, body: &[u8]) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .expect("HMAC-SHA256 takes keys of any length");
    mac.update(t_secs.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={t_secs},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// A webhook ready to deliver to (secret resolved).
#[derive(Clone)]
struct Hook {
    config: WebhookConfig,
    secret: Arc<[u8]>,
}

impl std::fmt::Debug for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hook")
            .field("url", &self.config.url)
            .field("secret", &"***")
            .finish()
    }
}

/// The configured webhooks, with their secrets read.
#[derive(Debug, Clone, Default)]
pub struct Webhooks {
    hooks: Vec<Hook>,
}

impl Webhooks {
    /// Reads each webhook's secret; errors name the key, never the secret.
    pub fn from_config(webhooks: &[WebhookConfig]) -> Result<Self, ConfigProblem> {
        let mut hooks = Vec::new();
        for (i, config) in webhooks.iter().enumerate() {
            let problem = |field: &str, message: String| ConfigProblem {
                key: format!("webhooks[{i}].{field}"),
                message,
            };
            let secret = match (&config.secret_env, &config.secret_file) {
                (Some(var), _) => std::env::var(var).map_err(|_| {
                    problem(
                        "secret_env",
                        format!("environment variable {var} is not set"),
                    )
                })?,
                (None, Some(path)) => std::fs::read_to_string(path).map_err(|e| {
                    problem(
                        "secret_file",
                        format!("cannot read {}: {}", path.display(), e.kind()),
                    )
                })?,
                (None, None) => {
                    return Err(problem("secret_env", "a signing secret is required".into()));
                }
            };
            let secret = secret.trim();
            if secret.len() < 16 {
                return Err(problem(
                    "secret_env",
                    "the secret must be at least 16 characters".into(),
                ));
            }
            hooks.push(Hook {
                config: config.clone(),
                secret: Arc::from(secret.as_bytes()),
            });
        }
        Ok(Self { hooks })
    }

    /// URLs subscribed to `event`.
    fn urls_for(&self, event: &str) -> Vec<String> {
        let mut urls: Vec<String> = self
            .hooks
            .iter()
            .filter(|h| h.config.events.iter().any(|e| e.as_str() == event))
            .map(|h| h.config.url.clone())
            .collect();
        urls.dedup();
        urls
    }

    fn hook(&self, url: &str) -> Option<&Hook> {
        self.hooks.iter().find(|h| h.config.url == url)
    }
}

/// Routes and delivers outbox rows. Several replicas may run one each: routing and leasing
/// are conditional updates, so each row is handled by one of them at a time.
#[derive(Debug, Clone)]
pub struct Drainer {
    store: Arc<dyn Store>,
    hooks: Webhooks,
    clock: SharedClock,
    /// When the outbox was last pruned (ms since the epoch; 0: not yet).
    pruned_at_ms: Arc<std::sync::atomic::AtomicU64>,
}

impl Drainer {
    /// A drainer over `store` for `hooks`.
    pub fn new(store: Arc<dyn Store>, hooks: Webhooks, clock: SharedClock) -> Self {
        Self {
            store,
            hooks,
            clock,
            pruned_at_ms: Arc::new(std::sync::atomic::AtomicU64::new(0)),
        }
    }

    /// Runs [`Drainer::run_once`] forever, every [`DRAIN_INTERVAL`].
    pub fn spawn(self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                if let Err(error) = self.run_once().await {
                    tracing::warn!(%error, "Webhook outbox not drained; will retry.");
                }
                tokio::time::sleep(DRAIN_INTERVAL).await;
            }
        })
    }

    /// One pass: routes new events, then attempts every due delivery. Returns the attempts made.
    pub async fn run_once(&self) -> Result<usize, StoreError> {
        let now_ms = self.clock.now_ms();
        self.prune_if_due(now_ms).await?;
        for row in self.store.unrouted_webhooks(DRAIN_BATCH).await? {
            let urls = self.hooks.urls_for(&row.event);
            self.store.route_webhook(row.id, &urls, now_ms).await?;
        }
        let mut attempts = 0;
        for row in self.store.due_webhooks(now_ms, DRAIN_BATCH).await? {
            let Some(url) = row.url.clone() else { continue };
            let Some(hook) = self.hooks.hook(&url) else {
                self.store
                    .webhook_attempted(
                        row.id,
                        &WebhookAttempt::Failed {
                            error: "this webhook is no longer configured".into(),
                        },
                    )
                    .await?;
                continue;
            };
            let lease_until = now_ms
                .saturating_add(hook.config.timeout_ms)
                .saturating_add(5_000);
            if !self
                .store
                .lease_webhook(row.id, row.next_attempt_at_ms, lease_until)
                .await?
            {
                continue;
            }
            let outcome = self.attempt(hook, &row).await;
            self.store.webhook_attempted(row.id, &outcome).await?;
            attempts += 1;
        }
        Ok(attempts)
    }

    /// Deletes finished outbox rows at most every [`PRUNE_EVERY_MS`]: delivered ones after
    /// [`KEEP_DONE_MS`], failed ones (an operator may still be looking) after [`KEEP_FAILED_MS`].
    async fn prune_if_due(&self, now_ms: u64) -> Result<(), StoreError> {
        use std::sync::atomic::Ordering;
        let last = self.pruned_at_ms.load(Ordering::Relaxed);
        if last != 0 && now_ms.saturating_sub(last) < PRUNE_EVERY_MS {
            return Ok(());
        }
        self.pruned_at_ms.store(now_ms.max(1), Ordering::Relaxed);
        let pruned = self
            .store
            .prune_webhooks(
                now_ms.saturating_sub(KEEP_DONE_MS),
                now_ms.saturating_sub(KEEP_FAILED_MS),
            )
            .await?;
        if pruned > 0 {
            tracing::info!(pruned, "Finished webhook outbox rows pruned.");
        }
        Ok(())
    }

    async fn attempt(&self, hook: &Hook, row: &WebhookRow) -> WebhookAttempt {
        let now_ms = self.clock.now_ms();
        let error = match deliver(hook, row, now_ms / 1000).await {
            Ok(()) => return WebhookAttempt::Delivered { now_ms },
            Err(Delivery::Refused(error)) => return WebhookAttempt::Failed { error },
            Err(Delivery::Failed(error)) => error,
        };
        let attempts_after = u32::try_from(row.attempts)
            .unwrap_or(u32::MAX)
            .saturating_add(1);
        if attempts_after >= hook.config.max_attempts {
            tracing::warn!(url = %hook.config.url, id = row.id, %error, "Webhook given up after the last attempt.");
            return WebhookAttempt::Failed { error };
        }
        let delay = backoff_ms(&hook.config, attempts_after - 1);
        tracing::debug!(url = %hook.config.url, id = row.id, %error, delay_ms = delay, "Webhook attempt failed; retrying.");
        WebhookAttempt::Retry {
            error,
            next_attempt_at_ms: now_ms.saturating_add(delay),
        }
    }
}

/// Delay after the `failures`-th consecutive failure (0-based): base × 2^failures, capped.
pub fn backoff_ms(config: &WebhookConfig, failures: u32) -> u64 {
    let factor = 1u64.checked_shl(failures.min(40)).unwrap_or(u64::MAX);
    config
        .retry_base_ms
        .saturating_mul(factor)
        .min(config.retry_max_ms)
}

enum Delivery {
    /// Worth retrying (network error, timeout, non-2xx).
    Failed(String),
    /// Never worth retrying (destination refused).
    Refused(String),
}

async fn deliver(hook: &Hook, row: &WebhookRow, t_secs: u64) -> Result<(), Delivery> {
    let url = reqwest::Url::parse(&hook.config.url)
        .map_err(|_| Delivery::Refused("the configured URL does not parse".into()))?;
    let host = url
        .host_str()
        .ok_or_else(|| Delivery::Refused("the URL has no host".into()))?
        .to_owned();
    let port = url
        .port_or_known_default()
        .ok_or_else(|| Delivery::Refused("the URL has no port".into()))?;
    let addr = resolve(&host, port, hook.config.allow_private).await?;
    let body = format!(
        "{{\"id\":{},\"event\":{},\"created_at_ms\":{},\"data\":{}}}",
        row.id,
        Value::String(row.event.clone()),
        row.created_at_ms,
        row.payload
    );
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_millis(hook.config.timeout_ms))
        .resolve(host.trim_start_matches('[').trim_end_matches(']'), addr)
        .build()
        .map_err(|e| Delivery::Failed(short(&e.to_string())))?;
    let response = client
        .post(url)
        .header("content-type", "application/json")
        .header("x-gatehouse-event", row.event.as_str())
        .header("x-gatehouse-delivery", row.id.to_string())
        .header(
            "x-gatehouse-signature",
            signature(&hook.secret, t_secs, body.as_bytes()),
        )
        .body(body)
        .send()
        .await
        .map_err(|e| Delivery::Failed(short(&format!("request failed: {e}"))))?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else if status.is_redirection() {
        Err(Delivery::Failed(format!(
            "the receiver answered {status}; redirects are not followed"
        )))
    } else {
        Err(Delivery::Failed(format!("the receiver answered {status}")))
    }
}

/// Resolves `host` and returns the address to connect to, refusing non-public ones unless
/// allowed. Every resolved address must pass, so a mixed answer cannot sneak one through.
async fn resolve(host: &str, port: u16, allow_private: bool) -> Result<SocketAddr, Delivery> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::net::lookup_host((bare, port))
            .await
            .map_err(|e| Delivery::Failed(short(&format!("cannot resolve {bare}: {e}"))))?
            .collect(),
    };
    let first = *addrs
        .first()
        .ok_or_else(|| Delivery::Failed(format!("{bare} resolved to no address")))?;
    if !allow_private && let Some(bad) = addrs.iter().find(|a| !is_public(a.ip())) {
        return Err(Delivery::Refused(format!(
            "{bare} resolves to the non-public address {}; set allow_private = true on this webhook to allow it",
            bad.ip()
        )));
    }
    Ok(first)
}

/// Whether `ip` is a globally routable unicast address.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
                || (a == 198 && (b == 18 || b == 19)) // benchmarking
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local
                || (first & 0xffc0) == 0xfe80) // link-local
        }
    }
}

fn short(text: &str) -> String {
    if text.len() <= ERROR_TEXT_MAX {
        return text.to_owned();
    }
    let mut end = ERROR_TEXT_MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_special_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["1.1.1.1", "8.8.8.8", "2606:4700::1111"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn signature_is_hmac_of_timestamp_dot_body() {
        // Computed independently: Python hmac.new(b"key", b"1700000000.{}", sha256).
        let sig = signature(b"key", 1_700_000_000, b"{}");
        assert_eq!(
            sig,
            "t=1700000000,v1=9d713ed406bb7076d4123f0dc2c39d2df5c654ed4b0cd56b52c8b4c940bd63ae"
        );
        assert_ne!(sig, signature(b"key", 1_700_000_001, b"{}"));
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let mut c = WebhookConfig::new("http://x", vec![WebhookEvent::BreakerOpened]);
        c.retry_base_ms = 100;
        c.retry_max_ms = 1_000;
        assert_eq!(
            (0..6).map(|n| backoff_ms(&c, n)).collect::<Vec<_>>(),
            [100, 200, 400, 800, 1000, 1000]
        );
        assert_eq!(backoff_ms(&c, u32::MAX), 1000);
    }
}
