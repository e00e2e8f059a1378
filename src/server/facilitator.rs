//! The facilitator API: `POST /verify`, `POST /settle`, `GET /supported`,
//! `GET /discovery/resources`. Business outcomes are 200 (`isValid:false` / `success:false`),
//! malformed input 400, oversized bodies 413, a reused `payment-identifier` 409, upstream
//! trouble 502/504 (spec §1.7).

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde_json::Value;

use super::AppState;
use super::error::ApiError;
use crate::pipeline::{Reply, RequestContext};
use crate::protocol::{Network, SupportedKind, SupportedResponse};
use crate::risk::payment::RiskInputs;

/// The facilitator routes (mounted at `/` and at `/x402/`).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/verify", post(verify))
        .route("/settle", post(settle))
        .route("/supported", get(supported))
        .route("/discovery/resources", get(discovery))
}

fn context(headers: &HeaderMap) -> Result<RequestContext, ApiError> {
    Ok(RequestContext {
        request_id: headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
        authorization: headers.get(header::AUTHORIZATION).cloned(),
        risk: RiskInputs::from_headers(headers)?,
    })
}

/// `X-Risk-Decision`, `X-Risk-Decision-ID` and `X-Risk-Level` when the risk step decided.
fn with_risk_headers<T: serde::Serialize>(reply: Reply<T>) -> Response {
    let mut response = (reply.status, Json(reply.body)).into_response();
    if let Some(risk) = reply.risk {
        let headers = response.headers_mut();
        for (name, value) in [
            ("x-risk-decision", label(&risk.decision)),
            ("x-risk-decision-id", risk.decision_id.clone()),
            ("x-risk-level", label(&risk.risk_level)),
        ] {
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(name, value);
            }
        }
    }
    response
}

/// The lowercase wire name of a serialisable unit enum.
fn label<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn body_bytes(body: Result<Bytes, BytesRejection>, limit_bytes: usize) -> Result<Bytes, ApiError> {
    match body {
        Ok(bytes) => Ok(bytes),
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            Err(ApiError::PayloadTooLarge { limit_bytes })
        }
        Err(rejection) => Err(ApiError::BadRequest {
            code: "unreadable_body",
            field: None,
            message: rejection.body_text(),
        }),
    }
}

/// Which gate a facilitator call goes through.
#[derive(Clone, Copy)]
enum Gate {
    Verify,
    Settle,
}

/// Runs the pipeline for one gate on its own task: a client that disconnects must not cancel a
/// settle between claiming the payment and recording the outcome.
async fn run_gate(
    gate: Gate,
    state: AppState,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let raw = body_bytes(body, state.config.max_body_bytes)?;
    let ctx = context(&headers)?;
    let pipeline = state.pipeline.clone();
    let running = state.drain.enter();
    let task = tokio::spawn(async move {
        let _running = running;
        match gate {
            Gate::Verify => pipeline.verify(&ctx, raw).await.map(with_risk_headers),
            Gate::Settle => pipeline.settle(&ctx, raw).await.map(with_risk_headers),
        }
    });
    let reply = task
        .await
        .map_err(|e| ApiError::Internal(format!("pipeline task failed: {e}")))?;
    Ok(reply?)
}

async fn verify(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    run_gate(Gate::Verify, state, headers, body).await
}

async fn settle(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    run_gate(Gate::Settle, state, headers, body).await
}

/// The upstream's kinds, filtered to the networks Gatehouse can check itself; `extra`
/// (e.g. the Solana `feePayer`) and `signers` pass through unchanged. Locally settled chains
/// are added (v1 and v2 `exact`) and answered even when the upstream is unreachable.
async fn supported(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let settlers = state.pipeline.settlers();
    let has_local = settlers.local().next().is_some() || settlers.local_svm().next().is_some();
    let mut supported = match state.pipeline.upstream().supported().await {
        Ok(upstream) => {
            let mut supported: SupportedResponse = serde_json::from_value((*upstream).clone())
                .map_err(|e| ApiError::UpstreamBody(format!("/supported: {e}")))?;
            let chains = state.pipeline.chains();
            supported.kinds.retain(|kind| {
                Network::resolve(&kind.network).is_ok_and(|network| chains.can_check(&network))
            });
            supported
        }
        Err(error) if has_local => {
            tracing::warn!(%error, "Upstream /supported unavailable; listing local chains only.");
            SupportedResponse {
                kinds: Vec::new(),
                extensions: Vec::new(),
                signers: serde_json::Map::new(),
                other: serde_json::Map::new(),
            }
        }
        Err(error) => return Err(error.into()),
    };
    for (caip2, settler) in settlers.local() {
        let v1 = Network::resolve(caip2).ok().and_then(|n| n.v1_name());
        let wanted = [(2u8, Some(caip2)), (1u8, v1)];
        for (version, network) in wanted {
            let Some(network) = network else { continue };
            let listed = supported
                .kinds
                .iter()
                .any(|k| k.x402_version == version && k.scheme == "exact" && k.network == network);
            if !listed {
                supported.kinds.push(SupportedKind {
                    x402_version: version,
                    scheme: "exact".to_owned(),
                    network: network.to_owned(),
                    extra: None,
                    other: serde_json::Map::new(),
                });
            }
        }
        let address = Value::String(format!("{:#x}", settler.address()));
        let signers = supported
            .signers
            .entry("eip155:*")
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(list) = signers
            && !list.contains(&address)
        {
            list.push(address);
        }
    }
    for (caip2, settler) in settlers.local_svm() {
        let Some(fee_payer) = settler.fee_payer().map(|k| k.to_string()) else {
            continue;
        };
        // The upstream's kinds for this network name the upstream's fee payer: a client must
        // build its transaction for ours, the only one this network accepts.
        supported.kinds.retain(|kind| {
            Network::resolve(&kind.network).map_or(true, |n| n.caip2.as_str() != caip2)
        });
        let v1 = Network::resolve(caip2).ok().and_then(|n| n.v1_name());
        for (version, network) in [(2u8, Some(caip2)), (1u8, v1)] {
            let Some(network) = network else { continue };
            supported.kinds.push(SupportedKind {
                x402_version: version,
                scheme: "exact".to_owned(),
                network: network.to_owned(),
                extra: Some(serde_json::json!({"feePayer": &fee_payer})),
                other: serde_json::Map::new(),
            });
        }
        let signers = supported
            .signers
            .entry("solana:*")
            .or_insert_with(|| Value::Array(Vec::new()));
        let fee_payer = Value::String(fee_payer);
        if let Value::Array(list) = signers
            && !list.contains(&fee_payer)
        {
            list.push(fee_payer);
        }
    }
    serde_json::to_value(supported)
        .map(Json)
        .map_err(|e| ApiError::Internal(e.to_string()))
}

async fn discovery(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let answer = state
        .pipeline
        .upstream()
        .discovery(query.as_deref())
        .await?;
    Ok((answer.status, Json(answer.body)).into_response())
}
