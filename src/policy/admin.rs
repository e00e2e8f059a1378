//! The policy's admin routes (under `/admin`): read the policy in force, replace it at
//! runtime, list endpoints with their caps and current use, list and re-pin payTo pins, list
//! and reset circuit breakers. Reads need the operator or auditor scope; changes need the
//! operator scope, and each appends an evidence record naming the principal, with the state
//! before and after, before it takes effect (a change that cannot be recorded is not made).

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Query, State};
use axum::routing::{get, post};
use http::HeaderMap;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{DAY_MS, Policy, PolicyConfig, Rule, window};
use crate::admin::Principal;
use crate::server::AppState;
use crate::server::error::ApiError;
use crate::store::{EvidenceDraft, LIST_LIMIT_MAX, Store, StoreError};

/// The policy routes, merged into [`crate::admin::routes`].
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/policy", get(get_policy).put(put_policy))
        .route("/policy/endpoints", get(endpoints))
        .route("/policy/pins", get(pins).put(put_pin))
        .route("/policy/breakers", get(breakers))
        .route("/policy/breakers/reset", post(reset_breaker))
}

/// `?limit=&offset=` of a listing (limit default 100, at most [`LIST_LIMIT_MAX`]).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Page {
    limit: Option<u32>,
    offset: Option<u32>,
}

impl Page {
    fn limit(&self) -> u32 {
        self.limit.unwrap_or(100).clamp(1, LIST_LIMIT_MAX)
    }
    fn offset(&self) -> u32 {
        self.offset.unwrap_or(0)
    }
}

fn store_error(error: StoreError) -> ApiError {
    if error.is_unavailable() {
        ApiError::NotReady(error.public_message().into())
    } else {
        ApiError::Internal(error.to_string())
    }
}

fn request_id(headers: &HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

fn body_json<T: serde::de::DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
    code: &'static str,
) -> Result<T, ApiError> {
    let bytes = body.map_err(|rejection| ApiError::BadRequest {
        code: "unreadable_body",
        field: None,
        message: rejection.body_text(),
    })?;
    serde_json::from_slice(&bytes).map_err(|e| ApiError::BadRequest {
        code,
        field: None,
        message: e.to_string(),
    })
}

async fn record(
    store: &dyn Store,
    kind: &str,
    request_id: String,
    now_ms: u64,
    body: Value,
) -> Result<(), ApiError> {
    store
        .append_evidence(EvidenceDraft {
            kind: kind.into(),
            gate: None,
            fingerprint: None,
            decision: "applied".into(),
            request_id,
            created_at_ms: now_ms,
            body,
        })
        .await
        .map(|_| ())
        .map_err(store_error)
}

/// `GET /admin/policy`: the policy in force.
async fn get_policy(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<Value>, ApiError> {
    principal.require_reader()?;
    let policy = state.pipeline.policy().current();
    Ok(Json(json!({
        "policy": policy.config(),
        "empty": policy.is_empty(),
    })))
}

/// `PUT /admin/policy`: replaces the policy in force (a `[policy]` section as JSON). 400
/// names the first bad key; 403 without the operator scope.
async fn put_policy(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    principal.require_operator()?;
    let config: PolicyConfig = body_json(body, "invalid_policy")?;
    let problems = config.problems();
    if let Some(first) = problems.first() {
        return Err(ApiError::BadRequest {
            code: "invalid_policy",
            field: Some(first.key.clone()),
            message: problems
                .iter()
                .map(|p| format!("{}: {}", p.key, p.message))
                .collect::<Vec<_>>()
                .join("; "),
        });
    }
    let store = state.pipeline.store();
    let now_ms = state.pipeline.clock().now_ms();
    let handle = state.pipeline.policy();
    let before = handle.current();
    record(
        &**store,
        "admin.policy_update",
        request_id(&headers),
        now_ms,
        json!({
            "principal": principal.name,
            "before": before.config(),
            "after": &config,
        }),
    )
    .await?;
    handle.replace(Policy::new(config.clone()));
    tracing::info!(principal = %principal.name, "Policy replaced through the admin API.");
    Ok(Json(json!({ "policy": config })))
}

/// The limits of one endpoint, as the admin API shows them.
fn limits(rule: &Rule) -> Value {
    json!({
        "max_per_request": rule.max_per_request,
        "hourly_cap": rule.hourly_cap,
        "daily_cap": rule.daily_cap,
        "monthly_cap": rule.monthly_cap,
        "requests_per_minute": rule.requests_per_minute,
    })
}

/// `GET /admin/policy/endpoints`: configured and discovered endpoints with their caps, pinned
/// payTo and the use of their current windows (from the budget counters).
async fn endpoints(
    State(state): State<AppState>,
    principal: Principal,
    Query(page): Query<Page>,
) -> Result<Json<Value>, ApiError> {
    principal.require_reader()?;
    let policy = state.pipeline.policy().current();
    let config = policy.config();
    let store = state.pipeline.store();
    let now_ms = state.pipeline.clock().now_ms();
    let mut all: Vec<(String, &'static str, Rule, Option<String>)> = config
        .endpoints
        .iter()
        .map(|r| {
            let key = format!(
                "{}{}",
                r.host.as_deref().unwrap_or_default().to_ascii_lowercase(),
                r.path_prefix.as_deref().unwrap_or("")
            );
            (key, "config", r.clone(), r.pay_to.clone())
        })
        .collect();
    let discovered_rule = Rule {
        max_per_request: Some(config.discovery.max_per_request),
        daily_cap: Some(config.discovery.daily_cap),
        requests_per_minute: Some(config.discovery.requests_per_minute),
        ..Rule::default()
    };
    let mut offset = 0;
    loop {
        let pins = store
            .list_pins(LIST_LIMIT_MAX, offset)
            .await
            .map_err(store_error)?;
        let done = pins.len() < LIST_LIMIT_MAX as usize;
        for pin in pins {
            if pin.source == "first_use" {
                all.push((
                    pin.endpoint,
                    "discovered",
                    discovered_rule.clone(),
                    Some(pin.pay_to),
                ));
            } else if let Some(entry) = all.iter_mut().find(|e| e.0 == pin.endpoint) {
                entry.3 = Some(pin.pay_to);
            }
        }
        // Bounded: at most ten pages of pins are merged into one answer.
        if done || offset >= 10 * LIST_LIMIT_MAX {
            break;
        }
        offset += LIST_LIMIT_MAX;
    }
    let total = all.len();
    let mut items = Vec::new();
    for (key, source, rule, pay_to) in all
        .into_iter()
        .skip(page.offset() as usize)
        .take(page.limit() as usize)
    {
        let counters = store
            .counters_with_prefix(
                &format!("endpoint:{key}|"),
                now_ms.saturating_sub(32 * DAY_MS),
                LIST_LIMIT_MAX,
            )
            .await
            .map_err(store_error)?;
        let usage: Vec<Value> = counters
            .iter()
            .filter_map(|c| {
                let mut parts = c.key.rsplitn(3, '|');
                let window_index: u64 = parts.next()?.parse().ok()?;
                let period = parts.next()?;
                let asset = parts.next()?.rsplit('|').next()?;
                if window(period, now_ms) != window_index {
                    return None;
                }
                let cap = match period {
                    "hour" => rule.hourly_cap.map(|a| a.0),
                    "day" => rule.daily_cap.map(|a| a.0),
                    "month" => rule.monthly_cap.map(|a| a.0),
                    _ => rule.requests_per_minute.map(i64::from),
                };
                Some(json!({
                    "period": period,
                    "asset": asset,
                    "used": c.used,
                    "reserved": c.reserved,
                    "cap": cap,
                }))
            })
            .collect();
        items.push(json!({
            "endpoint": key,
            "source": source,
            "limits": limits(&rule),
            "pay_to": pay_to,
            "usage": usage,
        }));
    }
    Ok(Json(json!({ "items": items, "total": total })))
}

/// `GET /admin/policy/pins`: payTo pins in the store (config pins win over them).
async fn pins(
    State(state): State<AppState>,
    principal: Principal,
    Query(page): Query<Page>,
) -> Result<Json<Value>, ApiError> {
    principal.require_reader()?;
    let store = state.pipeline.store();
    let items = store
        .list_pins(page.limit(), page.offset())
        .await
        .map_err(store_error)?;
    let policy = state.pipeline.policy().current();
    let configured: serde_json::Map<String, Value> = policy
        .config()
        .endpoints
        .iter()
        .filter_map(|r| {
            let key = format!(
                "{}{}",
                r.host.as_deref()?.to_ascii_lowercase(),
                r.path_prefix.as_deref().unwrap_or("")
            );
            Some((key, json!(r.pay_to.as_deref()?)))
        })
        .collect();
    Ok(Json(json!({ "items": items, "configured": configured })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PinBody {
    endpoint: String,
    pay_to: String,
}

/// Whether `text` looks like an EVM address or a base58 Solana address.
fn plausible_address(text: &str) -> bool {
    if let Some(hex) = text.strip_prefix("0x") {
        return hex.len() == 40 && hex.bytes().all(|b| b.is_ascii_hexdigit());
    }
    (32..=44).contains(&text.len()) && bs58::decode(text).into_vec().is_ok()
}

/// `PUT /admin/policy/pins`: re-pins an endpoint's payTo (`{"endpoint": "host/path",
/// "pay_to": "0x..."}`). 409 when the policy config pins it (change the policy instead).
async fn put_pin(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    principal.require_operator()?;
    let body: PinBody = body_json(body, "invalid_pin")?;
    let endpoint = body.endpoint.trim();
    if endpoint.is_empty() || endpoint.contains("://") || endpoint.len() > 2048 {
        return Err(ApiError::BadRequest {
            code: "invalid_pin",
            field: Some("endpoint".into()),
            message: "endpoint must be `host/path` as listed by GET /admin/policy/endpoints".into(),
        });
    }
    if !plausible_address(&body.pay_to) {
        return Err(ApiError::BadRequest {
            code: "invalid_pin",
            field: Some("pay_to".into()),
            message: "pay_to must be a 0x EVM address or a base58 Solana address".into(),
        });
    }
    let pay_to = super::norm(&body.pay_to);
    let policy = state.pipeline.policy().current();
    let configured = policy.config().endpoints.iter().any(|r| {
        r.pay_to.is_some()
            && format!(
                "{}{}",
                r.host.as_deref().unwrap_or_default().to_ascii_lowercase(),
                r.path_prefix.as_deref().unwrap_or("")
            ) == endpoint
    });
    if configured {
        return Err(ApiError::Conflict {
            code: "pinned_in_policy",
            message: format!(
                "{endpoint} is pinned by the policy configuration; change the policy instead"
            ),
        });
    }
    let store = state.pipeline.store();
    let now_ms = state.pipeline.clock().now_ms();
    let before = store.pin(endpoint).await.map_err(store_error)?;
    record(
        &**store,
        "admin.pin",
        request_id(&headers),
        now_ms,
        json!({
            "principal": principal.name,
            "endpoint": endpoint,
            "before": before.as_ref().map(|p| &p.pay_to),
            "after": pay_to,
        }),
    )
    .await?;
    store
        .repin_endpoint(endpoint, &pay_to, &principal.name, now_ms)
        .await
        .map_err(store_error)?;
    let after = store.pin(endpoint).await.map_err(store_error)?;
    Ok(Json(json!({ "before": before, "pin": after })))
}

/// `GET /admin/policy/breakers`: breakers with their state (and when an open one
/// half-opens, under the policy in force).
async fn breakers(
    State(state): State<AppState>,
    principal: Principal,
    Query(page): Query<Page>,
) -> Result<Json<Value>, ApiError> {
    principal.require_reader()?;
    let store = state.pipeline.store();
    let cooldown_ms = state
        .pipeline
        .policy()
        .current()
        .config()
        .breaker
        .as_ref()
        .map(|b| b.cooldown_secs.saturating_mul(1000));
    let items: Vec<Value> = store
        .list_breakers(page.limit(), page.offset())
        .await
        .map_err(store_error)?
        .into_iter()
        .map(|b| {
            let half_opens_at_ms = (b.state == "open")
                .then_some(cooldown_ms)
                .flatten()
                .map(|c| {
                    b.opened_at_ms
                        .saturating_add(i64::try_from(c).unwrap_or(i64::MAX))
                });
            json!({
                "subject": b.subject,
                "state": b.state,
                "failures": b.failures,
                "opened_at_ms": b.opened_at_ms,
                "half_opens_at_ms": half_opens_at_ms,
            })
        })
        .collect();
    Ok(Json(json!({ "items": items })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResetBody {
    subject: String,
}

/// `POST /admin/policy/breakers/reset` (`{"subject": "payer:0x..."}`): closes a breaker.
/// 404 when the subject never tripped.
async fn reset_breaker(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    principal.require_operator()?;
    let body: ResetBody = body_json(body, "invalid_subject")?;
    let subject = body.subject.trim();
    let well_formed = ["payer:", "endpoint:"]
        .iter()
        .any(|p| subject.strip_prefix(p).is_some_and(|rest| !rest.is_empty()));
    if !well_formed || subject.len() > 2048 {
        return Err(ApiError::BadRequest {
            code: "invalid_subject",
            field: Some("subject".into()),
            message: "subject must be `payer:<address>` or `endpoint:<host/path>`".into(),
        });
    }
    // Payer subjects are stored normalised (EVM lower-case).
    let subject = match subject.strip_prefix("payer:") {
        Some(payer) => format!("payer:{}", super::norm(payer)),
        None => subject.to_owned(),
    };
    let store = state.pipeline.store();
    let now_ms = state.pipeline.clock().now_ms();
    let Some(before) = store.breaker(&subject).await.map_err(store_error)? else {
        return Err(ApiError::NotFound(format!(
            "no circuit breaker for {subject}"
        )));
    };
    record(
        &**store,
        "admin.breaker_reset",
        request_id(&headers),
        now_ms,
        json!({
            "principal": principal.name,
            "subject": subject,
            "before": {"state": before.state, "failures": before.failures},
            "after": {"state": "closed", "failures": 0},
        }),
    )
    .await?;
    store
        .reset_breaker(&subject, now_ms)
        .await
        .map_err(store_error)?;
    Ok(Json(json!({
        "subject": subject,
        "before": before.state,
        "state": "closed",
    })))
}
