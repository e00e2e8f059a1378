//! HTTP routes of the risk area.
//!
//! Buyer-facing (x402-secure compatible field names):
//! - `GET /risk/nonce` → `{nonce, expires_at}`: a single-use nonce for `wallet_proof`.
//! - `POST /risk/session` → `{sid, expires_at, wallet_proven}`; 400 naming the field.
//! - `POST /risk/trace` → `{tid}`; 400 naming the field, 404 for an unknown or expired `sid`.
//! - `POST /risk/evaluate` → `{decision, risk_level, score, reasons, decision_id, ttl_seconds,
//!   used_mandate, warnings, extra}`: a dry run (no hold, no claim); 404 for an unknown sid/tid.
//!
//! Operator (under `/admin`): `GET /reviews`, `GET /reviews/{id}`,
//! `POST /reviews/{id}/approve`, `POST /reviews/{id}/reject` (operator scope; each decision is
//! an evidence record; 409 when already decided).
//!
//! Without `[risk]` configured (no service) every route answers 503.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::context::PaymentFacts;
use super::mandate::MandateInput;
use super::payment::{RiskInputs, RiskService, valid_traceparent};
use super::session::{SessionRequest, bad, iso8601, new_id};
use super::trace::{TraceLimits, TraceRequest};
use crate::admin::Principal;
use crate::protocol::{FacilitatorRequest, normalise};
use crate::server::AppState;
use crate::server::error::ApiError;
use crate::store::EvidenceDraft;
use crate::store::risk::{ReviewState, TraceRow};
use crate::verdict::Gate;

/// The buyer-facing routes (mounted at `/`).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/risk/nonce", get(nonce))
        .route("/risk/session", post(session))
        .route("/risk/trace", post(trace))
        .route("/risk/evaluate", post(evaluate))
}

/// The operator routes (merged under `/admin`).
pub fn admin_routes() -> Router<AppState> {
    Router::new()
        .route("/reviews", get(list_reviews))
        .route("/reviews/{id}", get(one_review))
        .route("/reviews/{id}/approve", post(approve))
        .route("/reviews/{id}/reject", post(reject))
}

fn service(state: &AppState) -> Result<Arc<RiskService>, ApiError> {
    state
        .pipeline
        .risk()
        .cloned()
        .ok_or_else(|| ApiError::NotReady("risk scoring is not configured".into()))
}

fn json_body(body: Result<Bytes, BytesRejection>) -> Result<Value, ApiError> {
    let bytes = body.map_err(|r| ApiError::BadRequest {
        code: "unreadable_body",
        field: None,
        message: r.body_text(),
    })?;
    serde_json::from_slice(&bytes).map_err(|e| ApiError::BadRequest {
        code: "invalid_json",
        field: None,
        message: format!("the body is not JSON: {e}"),
    })
}

fn store_error(e: crate::store::StoreError) -> ApiError {
    if e.is_unavailable() {
        ApiError::NotReady(e.public_message().into())
    } else {
        ApiError::Internal(e.to_string())
    }
}

async fn nonce(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let risk = service(&state)?;
    let nonce = new_id();
    let expires = risk
        .clock()
        .now_ms()
        .saturating_add(risk.config().nonce_ttl_secs.saturating_mul(1000));
    risk.store()
        .put_risk_nonce(&nonce, expires)
        .await
        .map_err(store_error)?;
    Ok(Json(
        json!({"nonce": nonce, "expires_at": iso8601(expires)}),
    ))
}

async fn session(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let risk = service(&state)?;
    let request = SessionRequest::parse(&json_body(body)?)?;
    let now = risk.clock().now_ms();
    let proven = match &request.proof {
        Some((nonce, signature)) => {
            let fresh = risk
                .store()
                .take_risk_nonce(nonce, now)
                .await
                .map_err(store_error)?;
            if !fresh {
                return Err(bad(
                    "wallet_proof.nonce",
                    "unknown, used or expired nonce (get one from GET /risk/nonce)",
                ));
            }
            if !request.wallet.verify_proof(nonce, signature) {
                return Err(bad(
                    "wallet_proof.signature",
                    "does not verify for wallet_address over the nonce message",
                ));
            }
            true
        }
        None => false,
    };
    let sid = new_id();
    let ttl_ms = risk.config().session_ttl_secs.saturating_mul(1000);
    let row = request.into_row(sid.clone(), proven, now, ttl_ms);
    risk.store()
        .put_risk_session(&row)
        .await
        .map_err(store_error)?;
    Ok(Json(json!({
        "sid": sid,
        "expires_at": iso8601(row.expires_at_ms),
        "wallet_proven": proven,
    })))
}

async fn trace(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let risk = service(&state)?;
    let config = risk.config();
    let limits = TraceLimits {
        max_events: config.max_trace_events,
        max_text_bytes: config.max_text_bytes,
        hash_text: config.hash_text_at_ingest,
    };
    let request = TraceRequest::parse(&json_body(body)?, limits)?;
    let now = risk.clock().now_ms();
    match risk
        .store()
        .risk_session(&request.sid)
        .await
        .map_err(store_error)?
    {
        Some(s) if s.expires_at_ms >= now => {}
        Some(_) => return Err(ApiError::NotFound("the risk session has expired".into())),
        None => return Err(ApiError::NotFound("unknown sid".into())),
    }
    let tid = new_id();
    let mut facts = request.facts;
    facts.tid = tid.clone();
    let body = json!({"facts": facts, "context": request.context});
    risk.store()
        .put_risk_trace(&TraceRow {
            tid: tid.clone(),
            sid: request.sid,
            body: body.to_string(),
            created_at_ms: now,
        })
        .await
        .map_err(store_error)?;
    Ok(Json(json!({"tid": tid})))
}

/// Payment facts from x402-secure's loose `payment` context: a full facilitator body in
/// `payload` is normalised; otherwise the usual requirement fields are read as given.
fn evaluate_payment(payment: &Value) -> Result<(PaymentFacts, String), ApiError> {
    let payload = payment.get("payload").unwrap_or(&Value::Null);
    if payload.get("paymentPayload").is_some() {
        let raw = Bytes::from(serde_json::to_vec(payload).unwrap_or_default());
        let request = FacilitatorRequest::decode(raw).map_err(|e| ApiError::BadRequest {
            code: e.code,
            field: Some(format!("payment.payload.{}", e.field.unwrap_or_default())),
            message: e.message,
        })?;
        let p = normalise(&request).map_err(|r| bad("payment.payload", r.message))?;
        return Ok((
            super::history::payment_facts(&p, Gate::Verify),
            p.fingerprint.0,
        ));
    }
    let text = |k: &str| {
        payload
            .get(k)
            .or_else(|| payment.get("extra").and_then(|e| e.get(k)))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let resource = text("resource");
    let parts = resource.as_deref().and_then(super::history::split_url);
    let facts = PaymentFacts {
        network: payment
            .get("network")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        scheme: text("scheme").unwrap_or_default(),
        asset: text("asset").unwrap_or_default(),
        amount: text("amount")
            .or_else(|| text("maxAmountRequired"))
            .unwrap_or_else(|| "0".into()),
        payer: text("payer").or_else(|| text("from")),
        description: text("description"),
        pay_to: text("payTo")
            .map(|p| crate::admin::normalise_pay_to(&p))
            .unwrap_or_default(),
        host: parts.as_ref().map(|p| p.0.clone()),
        path: parts.as_ref().map(|p| p.1.clone()),
        query: parts.map(|p| p.2.into_iter().collect()).unwrap_or_default(),
        resource,
        x402_version: 2,
        gate: "evaluate".into(),
        ..PaymentFacts::default()
    };
    Ok((facts, format!("evaluate:{}", new_id())))
}

async fn evaluate(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let risk = service(&state)?;
    let body = json_body(body)?;
    let text = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_owned);
    let sid = text("sid").ok_or_else(|| bad("sid", "is required"))?;
    let payment = body
        .get("payment")
        .filter(|p| p.is_object())
        .ok_or_else(|| {
            bad(
                "payment",
                "is required (an object {protocol, network, payload})",
            )
        })?;
    let traceparent = match body.get("trace_context") {
        Some(tc @ Value::Object(_)) => {
            let tp = tc.get("tp").and_then(Value::as_str).unwrap_or_default();
            if !valid_traceparent(tp) {
                return Err(bad("trace_context.tp", "must be a W3C traceparent"));
            }
            Some(tp.to_owned())
        }
        None | Some(Value::Null) => None,
        Some(_) => return Err(bad("trace_context", "must be an object {tp, ts}")),
    };
    let mandate = match body.get("mandate") {
        None | Some(Value::Null) => None,
        // x402-secure's MandateMeta is a reference; a full AP2 mandate is checked.
        Some(m @ Value::Object(_)) => Some(match (m.get("ref"), m.get("sha256_b64url")) {
            (Some(Value::String(r)), Some(Value::String(s))) => MandateInput::Reference {
                reference: r.clone(),
                sha256_b64url: s.clone(),
            },
            _ => MandateInput::Mandate(m.clone()),
        }),
        Some(_) => return Err(bad("mandate", "must be an object")),
    };
    let used_mandate = mandate.is_some();
    let inputs = RiskInputs {
        sid: Some(sid),
        tid: text("tid"),
        traceparent,
        tracestate: None,
        mandate,
        session: None,
    };
    let (facts, fingerprint) = evaluate_payment(payment)?;
    let (summary, evidence) = risk.evaluate_dry(facts, &fingerprint, &inputs).await?;
    let label = serde_json::to_value(summary.decision)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let draft = EvidenceDraft {
        kind: "risk.evaluate".into(),
        gate: None,
        fingerprint: None,
        decision: label,
        request_id: summary.decision_id.clone(),
        created_at_ms: risk.clock().now_ms(),
        body: json!({"request": body, "risk": evidence}),
    };
    risk.store()
        .append_evidence(draft)
        .await
        .map_err(store_error)?;
    Ok(Json(json!({
        "decision": summary.decision,
        "risk_level": summary.risk_level,
        "score": summary.score,
        "reasons": summary.reasons,
        "decision_id": summary.decision_id,
        "ttl_seconds": summary.ttl_seconds,
        "used_mandate": used_mandate,
        "warnings": [],
        "extra": {},
    })))
}

#[derive(Debug, Deserialize)]
struct ReviewQuery {
    state: Option<String>,
    limit: Option<u32>,
}

async fn list_reviews(
    State(state): State<AppState>,
    principal: Principal,
    Query(q): Query<ReviewQuery>,
) -> Result<Json<Value>, ApiError> {
    principal.require_reader()?;
    let risk = service(&state)?;
    let wanted = match q.state.as_deref() {
        None => None,
        Some(s) => Some(
            ReviewState::parse(s)
                .ok_or_else(|| bad("state", "must be pending, approved or rejected"))?,
        ),
    };
    let reviews = risk
        .store()
        .reviews(wanted, q.limit.unwrap_or(100).min(1000))
        .await
        .map_err(store_error)?;
    Ok(Json(json!({"reviews": reviews})))
}

async fn one_review(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    principal.require_reader()?;
    let risk = service(&state)?;
    let review = risk
        .store()
        .review(&id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| ApiError::NotFound("no such review".into()))?;
    Ok(Json(json!(review)))
}

async fn approve(
    state: State<AppState>,
    principal: Principal,
    id: Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    decide(state, principal, id, body, ReviewState::Approved).await
}

async fn reject(
    state: State<AppState>,
    principal: Principal,
    id: Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    decide(state, principal, id, body, ReviewState::Rejected).await
}

async fn decide(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
    to: ReviewState,
) -> Result<Json<Value>, ApiError> {
    principal.require_operator()?;
    let risk = service(&state)?;
    let bytes = body.unwrap_or_default();
    let note = if bytes.is_empty() {
        None
    } else {
        let v: Value = serde_json::from_slice(&bytes).map_err(|e| ApiError::BadRequest {
            code: "invalid_json",
            field: None,
            message: format!("the body is not JSON: {e}"),
        })?;
        super::session::opt_str(&v, "note", "note", 2048)?
    };
    let now = risk.clock().now_ms();
    let decided = risk
        .store()
        .decide_review(&id, to, &principal.name, note.as_deref(), now)
        .await
        .map_err(store_error)?;
    let review = match decided {
        Some(r) => r,
        None => {
            return match risk.store().review(&id).await.map_err(store_error)? {
                Some(r) => Err(ApiError::Conflict {
                    code: "review_already_decided",
                    message: format!("review {id} is already {}", r.state.as_str()),
                }),
                None => Err(ApiError::NotFound("no such review".into())),
            };
        }
    };
    let (kind, decision) = match to {
        ReviewState::Approved => ("admin.review_approve", "allow"),
        _ => ("admin.review_reject", "deny"),
    };
    risk.store()
        .append_evidence(EvidenceDraft {
            kind: kind.into(),
            gate: None,
            fingerprint: Some(crate::protocol::payment::Fingerprint(
                review.fingerprint.clone(),
            )),
            decision: decision.into(),
            request_id: new_id(),
            created_at_ms: now,
            body: json!({"principal": principal.name, "review": review, "note": note}),
        })
        .await
        .map_err(store_error)?;
    Ok(Json(json!(review)))
}
