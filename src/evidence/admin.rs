//! Admin routes for evidence, payments and disputes, and the public key document.
//!
//! Scopes (also declared per operation as `x-gatehouse-scope` in `openapi/20-evidence.json`,
//! and enforced from there by the admin layer): lists are open to every token but a seller's
//! only show payments to its `payTo`; one payment, its bundle and its disputes answer a
//! seller 403 unless the payment is to its `payTo`; resolving and pruning need the operator.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use http::HeaderMap;
use serde::Deserialize;
use serde_json::{Value, json};

use super::bundle::{self, ExportError};
use super::dispute::{self, DisputeError};
use super::query::{SearchFilters, next_cursor};
use super::{EvidenceService, TOMBSTONE_BODY, VerifyError, expected_hash, retention};
use crate::admin::Principal;
use crate::protocol::payment::Fingerprint;
use crate::server::AppState;
use crate::server::error::ApiError;
use crate::store::evidence::Dispute;
use crate::store::{EvidenceRecord, StoreError};

type Json = axum::Json<Value>;

fn store_error(error: StoreError) -> ApiError {
    if error.is_unavailable() {
        ApiError::NotReady(error.public_message().into())
    } else {
        tracing::error!(%error, "Evidence store error.");
        ApiError::Internal(error.to_string())
    }
}

fn bad(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::BadRequest {
        code: "invalid_request",
        field: Some(field.to_owned()),
        message: message.into(),
    }
}

fn filters(query: Result<Query<SearchFilters>, QueryRejection>) -> Result<SearchFilters, ApiError> {
    query.map(|Query(q)| q).map_err(|e| ApiError::BadRequest {
        code: "invalid_query",
        field: None,
        message: e.body_text(),
    })
}

fn parse_body<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::BadRequest {
        code: "invalid_json",
        field: None,
        message: e.to_string(),
    })
}

fn request_id(headers: &HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .unwrap_or_else(|| format!("admin-{}", uuid::Uuid::new_v4()))
}

/// A record for people and scripts: the body parsed, the hash columns as stored.
pub fn record_json(record: &EvidenceRecord) -> Value {
    let body: Value =
        serde_json::from_str(&record.body).unwrap_or(Value::String(record.body.clone()));
    json!({
        "seq": record.seq,
        "created_at_ms": record.created_at_ms,
        "kind": &record.kind,
        "gate": &record.gate,
        "fingerprint": &record.fingerprint,
        "decision": &record.decision,
        "request_id": &record.request_id,
        "pruned": record.body == TOMBSTONE_BODY,
        "body": body,
        "prev_hash": &record.prev_hash,
        "hash": &record.hash,
    })
}

fn service(state: &AppState) -> &Arc<EvidenceService> {
    &state.evidence
}

/// `GET /admin/evidence`.
async fn search_evidence(
    State(state): State<AppState>,
    principal: Principal,
    query: Result<Query<SearchFilters>, QueryRejection>,
) -> Result<Json, ApiError> {
    let filters = filters(query)?;
    let query = filters
        .to_query(principal.visible_payees())
        .map_err(|e| bad(e.field, e.message))?;
    let store = &service(&state).store;
    store.index_evidence().await.map_err(store_error)?;
    let records = store.search_evidence(&query).await.map_err(store_error)?;
    let next = next_cursor(records.last().map(|r| r.seq), records.len(), query.limit);
    Ok(axum::Json(json!({
        "records": records.iter().map(record_json).collect::<Vec<_>>(),
        "next": next,
    })))
}

/// `GET /admin/evidence/{seq}`.
async fn evidence_record(
    State(state): State<AppState>,
    principal: Principal,
    Path(seq): Path<String>,
) -> Result<Json, ApiError> {
    let seq: i64 = seq
        .parse()
        .ok()
        .filter(|s| *s > 0)
        .ok_or_else(|| bad("seq", "must be a positive integer"))?;
    let store = &service(&state).store;
    let record = store
        .evidence_record(seq)
        .await
        .map_err(store_error)?
        .ok_or_else(|| ApiError::NotFound("no such evidence record".into()))?;
    if !principal.reads_everything() {
        store.index_evidence().await.map_err(store_error)?;
        let payee = match &record.fingerprint {
            Some(fp) => store
                .payment_fields(fp)
                .await
                .map_err(store_error)?
                .and_then(|f| f.payee),
            None => None,
        };
        match payee {
            Some(payee) => principal.require_payee(&payee)?,
            None => principal.require_reader()?,
        }
    }
    Ok(axum::Json(record_json(&record)))
}

/// `GET /admin/evidence/verify`: the whole chain.
async fn verify_chain(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json, ApiError> {
    principal.require_reader()?;
    Ok(axum::Json(chain_verdict(&service(&state).store).await?))
}

/// The chain verification as JSON (`ok`, or the first broken record).
pub async fn chain_verdict(store: &Arc<dyn crate::store::Store>) -> Result<Value, ApiError> {
    match super::verify_store(store.as_ref()).await {
        Ok(report) => Ok(json!({
            "ok": true,
            "records": report.records,
            "head": report.head,
            "pruned": report.pruned,
            "checkpoint": report.checkpoint,
        })),
        Err(VerifyError::Break(b)) => Ok(json!({
            "ok": false,
            "broken": {"seq": b.seq, "reason": format!("{:?}", b.reason), "what": b.reason.describe()},
        })),
        Err(VerifyError::Store(e)) => Err(store_error(e)),
    }
}

/// `POST /admin/evidence/prune`.
async fn prune(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
) -> Result<Json, ApiError> {
    principal.require_operator()?;
    let service = service(&state);
    let report = match retention::prune(service).await {
        Ok(report) => report,
        Err(VerifyError::Break(b)) => {
            return Err(ApiError::Conflict {
                code: "evidence_chain_broken",
                message: format!("not pruning: {b}"),
            });
        }
        Err(VerifyError::Store(e)) => return Err(store_error(e)),
    };
    service
        .store
        .append_evidence(crate::store::EvidenceDraft {
            kind: "admin.evidence_prune".into(),
            gate: None,
            fingerprint: None,
            decision: "allow".into(),
            request_id: request_id(&headers),
            created_at_ms: service.clock.now_ms(),
            body: json!({"principal": &principal.name, "report": &report}),
        })
        .await
        .map_err(store_error)?;
    Ok(axum::Json(json!(report)))
}

/// `GET /admin/payments`.
async fn search_payments(
    State(state): State<AppState>,
    principal: Principal,
    query: Result<Query<SearchFilters>, QueryRejection>,
) -> Result<Json, ApiError> {
    let filters = filters(query)?;
    let query = filters
        .to_query(principal.visible_payees())
        .map_err(|e| bad(e.field, e.message))?;
    let store = &service(&state).store;
    store.index_evidence().await.map_err(store_error)?;
    let payments = store.search_payments(&query).await.map_err(store_error)?;
    let next = next_cursor(
        payments.last().map(|p| p.first_seq),
        payments.len(),
        query.limit,
    );
    let rows: Vec<Value> = payments
        .iter()
        .map(|p| {
            json!({
                "fingerprint": &p.fingerprint,
                "payer": &p.payer,
                "payee": &p.payee,
                "endpoint": &p.endpoint,
                "tx": &p.tx,
                "first_seq": p.first_seq,
                "last_seq": p.last_seq,
                "first_at_ms": p.first_at_ms,
                "last_at_ms": p.last_at_ms,
                "records": p.records,
                "last_kind": &p.last_kind,
                "last_decision": &p.last_decision,
                "settlement_state": &p.settlement_state,
            })
        })
        .collect();
    Ok(axum::Json(json!({"payments": rows, "next": next})))
}

/// Loads a payment's indexed fields and checks the principal may see it.
async fn authorise_payment(
    service: &EvidenceService,
    principal: &Principal,
    fingerprint: &str,
) -> Result<crate::store::evidence::IndexFields, ApiError> {
    service.store.index_evidence().await.map_err(store_error)?;
    let fields = service
        .store
        .payment_fields(fingerprint)
        .await
        .map_err(store_error)?
        .ok_or_else(|| ApiError::NotFound("no evidence for this payment".into()))?;
    if !principal.reads_everything() {
        match &fields.payee {
            Some(payee) => principal.require_payee(payee)?,
            None => principal.require_reader()?,
        }
    }
    Ok(fields)
}

/// The whole story of one payment.
pub async fn payment_story(
    service: &EvidenceService,
    fingerprint: &str,
) -> Result<Value, StoreError> {
    let store = &service.store;
    let fp = Fingerprint(fingerprint.to_owned());
    let records = store.evidence_for(&fp).await?;
    let settlement = store
        .settlement(&fp)
        .await?
        .map(|s| dispute::settlement_json(&s));
    let fields = store.payment_fields(fingerprint).await?.unwrap_or_default();

    // Local chain check: each record's hash, and its link to the record before it.
    let mut problems = Vec::new();
    for record in &records {
        if record.body == TOMBSTONE_BODY {
            continue;
        }
        if expected_hash(record) != record.hash {
            problems.push(
                json!({"seq": record.seq, "what": super::BreakReason::HashMismatch.describe()}),
            );
            continue;
        }
        let prev = if record.seq > 1 {
            store
                .chain_links(record.seq - 1, record.seq - 1, 1)
                .await?
                .pop()
                .map(|l| l.hash)
        } else {
            Some(super::GENESIS_HASH.to_owned())
        };
        if prev.as_deref() != Some(record.prev_hash.as_str()) {
            problems.push(
                json!({"seq": record.seq, "what": super::BreakReason::PrevHashMismatch.describe()}),
            );
        }
    }

    let mut verdicts = Vec::new();
    let mut upstream = Vec::new();
    let mut risk = Vec::new();
    for record in &records {
        let Ok(body) = serde_json::from_str::<Value>(&record.body) else {
            continue;
        };
        if let Some(list) = body.get("verdicts").and_then(Value::as_array) {
            for v in list {
                verdicts.push(json!({"seq": record.seq, "kind": &record.kind, "verdict": v}));
            }
        }
        if let Some(answer) = body.get("upstream").filter(|v| !v.is_null()) {
            upstream.push(json!({"seq": record.seq, "kind": &record.kind, "answer": answer}));
        }
        if let Some(r) = body.get("risk").filter(|v| !v.is_null()) {
            risk.push(json!({"seq": record.seq, "kind": &record.kind, "risk": r}));
        }
    }
    let policy: Vec<&Value> = verdicts
        .iter()
        .filter(|v| v["verdict"]["step"] == "policy")
        .collect();
    let mut disputes = Vec::new();
    for d in store
        .list_disputes(None, None, Some(fingerprint), 500)
        .await?
    {
        let statements = store.statements(&d.id).await?;
        disputes.push(json!({"dispute": d, "statements": statements}));
    }
    let reconciliation: Vec<Value> = records
        .iter()
        .filter(|r| r.kind == "reconcile")
        .map(record_json)
        .collect();
    Ok(json!({
        "fingerprint": fingerprint,
        "payer": fields.payer,
        "payee": fields.payee,
        "endpoint": fields.endpoint,
        "tx": fields.tx,
        "session": fields.session,
        "settlement": settlement,
        "records": records.iter().map(record_json).collect::<Vec<_>>(),
        "verdicts": verdicts,
        "policy_verdicts": policy,
        "risk": risk,
        "upstream_answers": upstream,
        "reconciliation": reconciliation,
        "disputes": disputes,
        "chain": {"ok": problems.is_empty(), "records_checked": records.len(), "problems": problems},
    }))
}

/// `GET /admin/payments/{fingerprint}`.
async fn payment(
    State(state): State<AppState>,
    principal: Principal,
    Path(fingerprint): Path<String>,
) -> Result<Json, ApiError> {
    let service = service(&state);
    authorise_payment(service, &principal, &fingerprint).await?;
    Ok(axum::Json(
        payment_story(service, &fingerprint)
            .await
            .map_err(store_error)?,
    ))
}

/// `GET /admin/payments/{fingerprint}/bundle`.
async fn payment_bundle(
    State(state): State<AppState>,
    principal: Principal,
    Path(fingerprint): Path<String>,
) -> Result<Json, ApiError> {
    let service = service(&state);
    authorise_payment(service, &principal, &fingerprint).await?;
    let bundle = bundle::export(
        service.store.as_ref(),
        &service.signer,
        &fingerprint,
        service.clock.now_ms(),
    )
    .await
    .map_err(|e| match e {
        ExportError::Store(e) => store_error(e),
        ExportError::NotFound => ApiError::NotFound(e.to_string()),
        ExportError::TooLarge => ApiError::Conflict {
            code: "bundle_too_large",
            message: e.to_string(),
        },
    })?;
    Ok(axum::Json(json!(bundle)))
}

fn dispute_error(error: DisputeError) -> ApiError {
    match error {
        DisputeError::Store(e) => store_error(e),
        DisputeError::NotFound(m) => ApiError::NotFound(m),
        DisputeError::Invalid { field, message } => bad(&field, message),
        DisputeError::AlreadyResolved => ApiError::Conflict {
            code: "dispute_resolved",
            message: "the dispute is already resolved".into(),
        },
        DisputeError::AlreadyOpen => ApiError::Conflict {
            code: "dispute_open",
            message: "this buyer already has an open dispute on this payment".into(),
        },
    }
}

/// `POST /admin/payments/{fingerprint}/disputes`.
async fn open_dispute(
    State(state): State<AppState>,
    principal: Principal,
    Path(fingerprint): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(http::StatusCode, Json), ApiError> {
    let service = service(&state);
    authorise_payment(service, &principal, &fingerprint).await?;
    let request: dispute::OpenDispute = parse_body(&body)?;
    let dispute = dispute::open(
        service,
        &fingerprint,
        &principal.name,
        &request,
        &request_id(&headers),
    )
    .await
    .map_err(dispute_error)?;
    Ok((http::StatusCode::CREATED, axum::Json(json!(dispute))))
}

/// Loads a dispute and checks the principal may see it.
async fn authorise_dispute(
    service: &EvidenceService,
    principal: &Principal,
    id: &str,
) -> Result<Dispute, ApiError> {
    let dispute = service
        .store
        .dispute(id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| ApiError::NotFound("no such dispute".into()))?;
    if !principal.reads_everything() {
        match &dispute.payee {
            Some(payee) => principal.require_payee(payee)?,
            None => principal.require_reader()?,
        }
    }
    Ok(dispute)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DisputeFilters {
    state: Option<String>,
    fingerprint: Option<String>,
    limit: Option<u32>,
}

/// `GET /admin/disputes`.
async fn list_disputes(
    State(state): State<AppState>,
    principal: Principal,
    query: Result<Query<DisputeFilters>, QueryRejection>,
) -> Result<Json, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::BadRequest {
        code: "invalid_query",
        field: None,
        message: e.body_text(),
    })?;
    if let Some(s) = &q.state
        && s != "open"
        && s != "resolved"
    {
        return Err(bad("state", "must be open or resolved"));
    }
    let limit = q.limit.unwrap_or(50);
    if limit == 0 || limit > crate::store::evidence::MAX_PAGE {
        return Err(bad("limit", "must be between 1 and 500"));
    }
    let payees = principal.visible_payees();
    let disputes = service(&state)
        .store
        .list_disputes(
            payees.as_deref(),
            q.state.as_deref(),
            q.fingerprint.as_deref(),
            limit,
        )
        .await
        .map_err(store_error)?;
    Ok(axum::Json(json!({"disputes": disputes})))
}

/// `GET /admin/disputes/{id}`: the dispute and the payment's story side by side.
async fn get_dispute(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json, ApiError> {
    let service = service(&state);
    let dispute = authorise_dispute(service, &principal, &id).await?;
    let statements = service.store.statements(&id).await.map_err(store_error)?;
    service.store.index_evidence().await.map_err(store_error)?;
    let payment = payment_story(service, &dispute.fingerprint)
        .await
        .map_err(store_error)?;
    Ok(axum::Json(json!({
        "dispute": dispute,
        "statements": statements,
        "payment": payment,
    })))
}

/// `POST /admin/disputes/{id}/statements`.
async fn add_statement(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(http::StatusCode, Json), ApiError> {
    let service = service(&state);
    let dispute = authorise_dispute(service, &principal, &id).await?;
    let request: dispute::AddStatement = parse_body(&body)?;
    let statement = dispute::add_statement(
        service,
        &dispute,
        &principal.name,
        &request,
        &request_id(&headers),
    )
    .await
    .map_err(dispute_error)?;
    Ok((http::StatusCode::CREATED, axum::Json(json!(statement))))
}

/// `GET /admin/disputes/{id}/files/{sha256}`: an attached file, base64.
async fn dispute_file(
    State(state): State<AppState>,
    principal: Principal,
    Path((id, sha256)): Path<(String, String)>,
) -> Result<Json, ApiError> {
    let service = service(&state);
    authorise_dispute(service, &principal, &id).await?;
    let (meta, content) = service
        .store
        .dispute_file(&id, &sha256.to_ascii_lowercase())
        .await
        .map_err(store_error)?
        .ok_or_else(|| ApiError::NotFound("no such file".into()))?;
    Ok(axum::Json(json!({"file": meta, "content_base64": content})))
}

/// `POST /admin/disputes/{id}/resolve`.
async fn resolve_dispute(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json, ApiError> {
    principal.require_operator()?;
    let service = service(&state);
    let dispute = authorise_dispute(service, &principal, &id).await?;
    let request: dispute::Resolve = parse_body(&body)?;
    let resolved = dispute::resolve(
        service,
        &dispute,
        &principal.name,
        &request,
        &request_id(&headers),
    )
    .await
    .map_err(dispute_error)?;
    Ok(axum::Json(json!(resolved)))
}

/// The admin routes this module contributes (nested under `/admin`).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/evidence", get(search_evidence))
        .route("/evidence/verify", get(verify_chain))
        .route("/evidence/prune", post(prune))
        .route("/evidence/{seq}", get(evidence_record))
        .route("/payments", get(search_payments))
        .route("/payments/{fingerprint}", get(payment))
        .route("/payments/{fingerprint}/bundle", get(payment_bundle))
        .route("/payments/{fingerprint}/disputes", post(open_dispute))
        .route("/disputes", get(list_disputes))
        .route("/disputes/{id}", get(get_dispute))
        .route("/disputes/{id}/statements", post(add_statement))
        .route("/disputes/{id}/files/{sha256}", get(dispute_file))
        .route("/disputes/{id}/resolve", post(resolve_dispute))
}

/// `GET /.well-known/gatehouse-keys`: the evidence signing key (public, no token).
async fn keys(State(state): State<AppState>) -> Json {
    axum::Json(service(&state).signer.jwks())
}

/// `POST /disputes`: a buyer's dispute, authenticated by the payer's wallet signature.
async fn buyer_dispute(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(http::StatusCode, Json), ApiError> {
    let request: dispute::BuyerDispute = parse_body(&body)?;
    let dispute = dispute::open_as_buyer(service(&state), &request, &request_id(&headers))
        .await
        .map_err(dispute_error)?;
    Ok((http::StatusCode::CREATED, axum::Json(json!(dispute))))
}

/// Public routes: the key document and buyers' signed disputes.
pub fn public_routes() -> Router<AppState> {
    Router::new()
        .route("/.well-known/gatehouse-keys", get(keys))
        .route("/disputes", post(buyer_dispute))
}
