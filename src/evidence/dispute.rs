//! Disputes on payments: open (who, why), attach statements and files, resolve with an
//! outcome. Every step is appended to the evidence chain first (kind `dispute.opened`,
//! `dispute.statement`, `dispute.resolved`, with the payment's fingerprint), so the dispute's
//! history is as tamper-evident as the payment's.
//!
//! Buyers have no admin token: a buyer's dispute is opened through the seller's token (on
//! their own payments) or an operator's, with `on_behalf_of = "buyer"`, or by the buyer
//! directly at `POST /disputes`, signed by the payment's payer wallet ([`open_as_buyer`]).

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::EvidenceService;
use crate::protocol::payment::Fingerprint;
use crate::store::evidence::{
    Dispute, DisputeFileMeta, DisputeStatement, EvidenceStore, NewDisputeFile,
};
use crate::store::{EvidenceDraft, SettlementRecord, StoreError};

/// How a dispute ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The complaint is upheld: the seller owes the buyer a refund (counts against the payer
    /// in risk scoring as an upheld dispute).
    RefundOwed,
    /// The complaint is rejected.
    Rejected,
    /// Settled between the parties.
    Settled,
}

impl Outcome {
    /// The stored value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RefundOwed => "refund_owed",
            Self::Rejected => "rejected",
            Self::Settled => "settled",
        }
    }
}

/// Whose complaint a dispute carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Party {
    /// The buyer (opened for them by the seller or an operator).
    #[default]
    Buyer,
    /// The seller.
    Seller,
    /// The operator.
    Operator,
}

impl Party {
    fn as_str(self) -> &'static str {
        match self {
            Self::Buyer => "buyer",
            Self::Seller => "seller",
            Self::Operator => "operator",
        }
    }
}

/// `POST /admin/payments/{fingerprint}/disputes`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenDispute {
    /// Why.
    pub reason: String,
    /// Whose complaint (default `buyer`).
    #[serde(default)]
    pub on_behalf_of: Party,
}

/// A file in a statement request.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileUpload {
    /// File name.
    pub name: String,
    /// MIME type.
    pub mime: String,
    /// Content, standard base64.
    pub content_base64: String,
}

/// `POST /admin/disputes/{id}/statements`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddStatement {
    /// The statement.
    pub text: String,
    /// Attached files.
    #[serde(default)]
    pub files: Vec<FileUpload>,
}

/// `POST /admin/disputes/{id}/resolve`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resolve {
    /// The outcome.
    pub outcome: Outcome,
    /// Why.
    #[serde(default)]
    pub note: String,
}

/// Why a dispute step was refused.
#[derive(Debug, thiserror::Error)]
pub enum DisputeError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No evidence for the payment / no such dispute.
    #[error("{0}")]
    NotFound(String),
    /// Bad input, naming the field.
    #[error("{field}: {message}")]
    Invalid {
        /// The field.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// The dispute is already resolved.
    #[error("the dispute is already resolved")]
    AlreadyResolved,
    /// This buyer already has an open dispute on the payment.
    #[error("this buyer already has an open dispute on this payment")]
    AlreadyOpen,
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> DisputeError {
    DisputeError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

fn check_text(field: &str, text: &str, max: usize) -> Result<(), DisputeError> {
    if text.trim().is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if text.len() > max {
        return Err(invalid(field, format!("must be at most {max} bytes")));
    }
    Ok(())
}

fn now_ms_i64(service: &EvidenceService) -> i64 {
    i64::try_from(service.clock.now_ms()).unwrap_or(i64::MAX)
}

/// Opens a dispute on `fingerprint` for `principal` (the token name).
pub async fn open(
    service: &EvidenceService,
    fingerprint: &str,
    principal: &str,
    request: &OpenDispute,
    request_id: &str,
) -> Result<Dispute, DisputeError> {
    check_text("reason", &request.reason, service.config.max_text_bytes)?;
    let store = &service.store;
    store.index_evidence().await?;
    let fields = store
        .payment_fields(fingerprint)
        .await?
        .ok_or_else(|| DisputeError::NotFound("no evidence for this payment".into()))?;
    let dispute = Dispute {
        id: format!("dsp_{}", uuid::Uuid::new_v4().simple()),
        fingerprint: fingerprint.to_owned(),
        payer: fields.payer,
        payee: fields.payee,
        opened_by: principal.to_owned(),
        on_behalf_of: request.on_behalf_of.as_str().to_owned(),
        reason: request.reason.clone(),
        state: "open".into(),
        outcome: None,
        resolution_note: None,
        resolved_by: None,
        created_at_ms: now_ms_i64(service),
        resolved_at_ms: None,
    };
    append(
        service,
        "dispute.opened",
        fingerprint,
        "open",
        request_id,
        json!({
            "dispute_id": &dispute.id,
            "payer": &dispute.payer,
            "payee": &dispute.payee,
            "opened_by": principal,
            "on_behalf_of": &dispute.on_behalf_of,
            "reason": &dispute.reason,
        }),
    )
    .await?;
    store.insert_dispute(&dispute).await?;
    Ok(dispute)
}

/// Attaches a statement (and files) to an open or resolved dispute.
pub async fn add_statement(
    service: &EvidenceService,
    dispute: &Dispute,
    principal: &str,
    request: &AddStatement,
    request_id: &str,
) -> Result<DisputeStatement, DisputeError> {
    let config = &service.config;
    check_text("text", &request.text, config.max_text_bytes)?;
    if request.files.len() > config.max_files_per_statement {
        return Err(invalid(
            "files",
            format!("at most {} files", config.max_files_per_statement),
        ));
    }
    let mut files = Vec::with_capacity(request.files.len());
    for (i, file) in request.files.iter().enumerate() {
        let field = |f: &str| format!("files[{i}].{f}");
        if file.name.trim().is_empty() || file.name.len() > 255 {
            return Err(invalid(field("name"), "must be 1 to 255 bytes"));
        }
        if file.mime.is_empty() || file.mime.len() > 127 || !file.mime.contains('/') {
            return Err(invalid(
                field("mime"),
                "must be a MIME type like text/plain",
            ));
        }
        let content = base64::engine::general_purpose::STANDARD
            .decode(file.content_base64.trim())
            .map_err(|_| invalid(field("content_base64"), "must be standard base64"))?;
        if content.len() > config.max_file_bytes {
            return Err(invalid(
                field("content_base64"),
                format!("the file exceeds {} bytes", config.max_file_bytes),
            ));
        }
        files.push(NewDisputeFile {
            meta: DisputeFileMeta {
                name: file.name.clone(),
                mime: file.mime.clone(),
                size: content.len() as i64,
                sha256: hex::encode(Sha256::digest(&content)),
            },
            content_base64: base64::engine::general_purpose::STANDARD.encode(&content),
        });
    }
    let id = format!("stm_{}", uuid::Uuid::new_v4().simple());
    let metas: Vec<&DisputeFileMeta> = files.iter().map(|f| &f.meta).collect();
    let record = append(
        service,
        "dispute.statement",
        &dispute.fingerprint,
        "statement",
        request_id,
        json!({
            "dispute_id": &dispute.id,
            "statement_id": &id,
            "author": principal,
            "text": &request.text,
            "files": metas,
            "payer": &dispute.payer,
            "payee": &dispute.payee,
        }),
    )
    .await?;
    let statement = DisputeStatement {
        id,
        dispute_id: dispute.id.clone(),
        author: principal.to_owned(),
        statement: request.text.clone(),
        evidence_seq: record,
        created_at_ms: now_ms_i64(service),
        files: files.iter().map(|f| f.meta.clone()).collect(),
    };
    service.store.insert_statement(&statement, &files).await?;
    Ok(statement)
}

/// Resolves an open dispute (operators only; the caller checks the scope).
pub async fn resolve(
    service: &EvidenceService,
    dispute: &Dispute,
    principal: &str,
    request: &Resolve,
    request_id: &str,
) -> Result<Dispute, DisputeError> {
    if request.note.len() > service.config.max_text_bytes {
        return Err(invalid(
            "note",
            format!("must be at most {} bytes", service.config.max_text_bytes),
        ));
    }
    if dispute.state != "open" {
        return Err(DisputeError::AlreadyResolved);
    }
    let outcome = request.outcome.as_str();
    append(
        service,
        "dispute.resolved",
        &dispute.fingerprint,
        outcome,
        request_id,
        json!({
            "dispute_id": &dispute.id,
            "outcome": outcome,
            "note": &request.note,
            "resolved_by": principal,
            "payer": &dispute.payer,
            "payee": &dispute.payee,
        }),
    )
    .await?;
    let now = service.clock.now_ms();
    if !service
        .store
        .resolve_dispute(&dispute.id, outcome, &request.note, principal, now)
        .await?
    {
        // Someone resolved it between our read and write; their resolution stands.
        return Err(DisputeError::AlreadyResolved);
    }
    service
        .store
        .dispute(&dispute.id)
        .await?
        .ok_or_else(|| DisputeError::NotFound("no such dispute".into()))
}

async fn append(
    service: &EvidenceService,
    kind: &str,
    fingerprint: &str,
    decision: &str,
    request_id: &str,
    body: Value,
) -> Result<i64, StoreError> {
    let record = service
        .store
        .append_evidence(EvidenceDraft {
            kind: kind.to_owned(),
            gate: None,
            fingerprint: Some(Fingerprint(fingerprint.to_owned())),
            decision: decision.to_owned(),
            request_id: request_id.to_owned(),
            created_at_ms: service.clock.now_ms(),
            body,
        })
        .await?;
    Ok(record.seq)
}

/// How many disputes against `payer` were upheld (resolved `refund_owed`): a risk input.
pub async fn upheld_disputes_for_payer(
    store: &dyn EvidenceStore,
    payer: &str,
) -> Result<u64, StoreError> {
    store
        .upheld_dispute_count(&crate::admin::normalise_pay_to(payer))
        .await
}

/// A settlement journal row as JSON (for the payment story and bundles).
pub fn settlement_json(s: &SettlementRecord) -> Value {
    json!({
        "fingerprint": &s.fingerprint,
        "state": s.state.as_str(),
        "payment_identifier": &s.payment_identifier,
        "request_digest": &s.request_digest,
        "transaction": &s.transaction,
        "response": s.response_json.as_deref().and_then(|r| serde_json::from_str::<Value>(r).ok()),
        "network": &s.network,
        "payer": &s.payer,
        "created_at_ms": s.created_at_ms,
        "updated_at_ms": s.updated_at_ms,
    })
}

/// How far a buyer's signed dispute timestamp may be from now (replay window).
pub const BUYER_SIGNATURE_WINDOW_MS: u64 = 600_000;

/// `POST /disputes`: a buyer opens a dispute with their wallet's signature, no token.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuyerDispute {
    /// The payment.
    pub fingerprint: String,
    /// Why.
    pub reason: String,
    /// When signed (ms since the epoch); must be within 10 minutes of the server's clock.
    pub timestamp_ms: u64,
    /// The payer's signature over [`buyer_message`]: EIP-191 `personal_sign` (65 bytes hex)
    /// for an EVM payer, ed25519 (base58, as Solana wallets' `signMessage`) for a Solana payer.
    pub signature: String,
}

/// The text a buyer signs to open a dispute.
pub fn buyer_message(fingerprint: &str, reason: &str, timestamp_ms: u64) -> String {
    format!(
        "Gatehouse dispute\nfingerprint: {fingerprint}\nreason: {reason}\ntimestamp_ms: {timestamp_ms}"
    )
}

/// Whether `signature` over `message` is by `payer` (EVM address or Solana base58 key).
pub fn payer_signed(payer: &str, message: &str, signature: &str) -> bool {
    if payer.starts_with("0x") {
        let Ok(bytes) = hex::decode(signature.trim_start_matches("0x")) else {
            return false;
        };
        let Ok(sig) = crate::chain::evm::signature::EoaSignature::parse(&bytes) else {
            return false;
        };
        let digest = alloy::primitives::eip191_hash_message(message.as_bytes());
        sig.recover(&digest)
            .is_ok_and(|address| address.to_string().eq_ignore_ascii_case(payer))
    } else {
        let key: Option<[u8; 32]> = bs58::decode(payer)
            .into_vec()
            .ok()
            .and_then(|b| b.try_into().ok());
        let sig: Option<[u8; 64]> = bs58::decode(signature)
            .into_vec()
            .ok()
            .and_then(|b| b.try_into().ok());
        match (key, sig) {
            (Some(key), Some(sig)) => {
                super::signing::verify_hex(&hex::encode(key), message.as_bytes(), &hex::encode(sig))
                    .is_ok()
            }
            _ => false,
        }
    }
}

/// Opens a dispute for the buyer who proves, by signature, to be the payment's payer.
pub async fn open_as_buyer(
    service: &EvidenceService,
    request: &BuyerDispute,
    request_id: &str,
) -> Result<Dispute, DisputeError> {
    check_text("reason", &request.reason, service.config.max_text_bytes)?;
    let now = service.clock.now_ms();
    if now.abs_diff(request.timestamp_ms) > BUYER_SIGNATURE_WINDOW_MS {
        return Err(invalid(
            "timestamp_ms",
            "must be within 10 minutes of the server's time",
        ));
    }
    let store = &service.store;
    store.index_evidence().await?;
    let fields = store.payment_fields(&request.fingerprint).await?;
    // The same answer for an unknown payment and a wrong signer: nothing to enumerate.
    let payer = fields.as_ref().and_then(|f| f.payer.clone());
    let message = buyer_message(&request.fingerprint, &request.reason, request.timestamp_ms);
    let Some(payer) = payer.filter(|p| payer_signed(p, &message, &request.signature)) else {
        return Err(invalid(
            "signature",
            "not a signature by this payment's payer over the dispute message",
        ));
    };
    let principal = format!("buyer:{payer}");
    let open_already = store
        .list_disputes(None, Some("open"), Some(&request.fingerprint), 500)
        .await?
        .into_iter()
        .any(|d| d.opened_by == principal);
    if open_already {
        return Err(DisputeError::AlreadyOpen);
    }
    open(
        service,
        &request.fingerprint,
        &principal,
        &OpenDispute {
            reason: request.reason.clone(),
            on_behalf_of: Party::Buyer,
        },
        request_id,
    )
    .await
}
