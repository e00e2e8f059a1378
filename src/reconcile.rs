//! Reconciliation: settlements whose outcome is unknown (`settlement_pending` in the journal)
//! are resolved from the chain, never guessed (DESIGN invariant 2).
//!
//! For each pending entry on an EVM chain with RPC configured, the payment is rebuilt from the
//! `settle_forward` evidence record written before the settlement left Gatehouse (it holds the
//! request verbatim), then [`EvmSettler::reconcile`] asks the chain: the receipt of the known
//! transaction, else whether the authorization's nonce is used on the token
//! (`authorizationState` is authoritative whoever sent the transaction, so forward-mode
//! entries resolve the same way), else whether `validBefore` has passed. A final answer
//! finishes the journal entry and appends a `reconcile` evidence record; an undecided one is
//! left for the next round.
//!
//! Solana entries (chains with a [`SvmSettler`]) are resolved by signature instead: the recorded
//! transaction signature, or for a local entry without one the signature Gatehouse's key gives
//! the same transaction (ed25519 is deterministic). Confirmed → settled (or failed when it
//! landed with an error); unknown once the blockhash is no longer valid at `finalized`
//! commitment → failed, it can never land; else left for the next round.
//!
//! Entries still `in_flight` belong to a request that may still be running, so they are only
//! examined once *stale*: not updated for `stale_in_flight_after` (the server uses
//! `request_timeout_ms` + 60 s; every settle, forwarded or local, is bounded below
//! `request_timeout_ms` by configuration validation, so such a request is certainly over, most
//! likely because its process died). Their hash is unknown, so only `authorizationState` and
//! `validBefore` decide them: used → settled, expired unused → failed, else left alone (a
//! transaction may still land).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use alloy::primitives::B256;
use bytes::Bytes;
use serde_json::{Value, json};

use crate::chain::evm::settle::{EvmSettler, Reconciled};
use crate::chain::svm::settle::{SvmReconciled, SvmSettlers};
use crate::clock::SharedClock;
use crate::pipeline::{settled_response, state_label, wire_reason};
use crate::protocol::{FacilitatorRequest, Payment, SettleResponse, normalise};
use crate::store::{
    EvidenceDraft, SettlementOutcome, SettlementRecord, SettlementState, Store, StoreError,
};
use crate::verdict::{Gate, Reason, ReasonCode};

/// How many pending entries one round looks at.
const BATCH: u32 = 100;

/// What one reconciliation round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Pending and stale in-flight entries looked at.
    pub examined: usize,
    /// Resolved as settled.
    pub settled: usize,
    /// Resolved as definitively not settled.
    pub failed: usize,
    /// Still undecided (authorization unused and not expired), or on a chain without RPC.
    pub undecided: usize,
    /// Entries that could not be examined (RPC down, evidence unreadable); retried next round.
    pub errors: usize,
}

/// Resolves pending settlements from the chain.
#[derive(Debug)]
pub struct Reconciler {
    store: Arc<dyn Store>,
    chains: BTreeMap<String, Arc<EvmSettler>>,
    svm: SvmSettlers,
    clock: SharedClock,
    stale_in_flight_after: Duration,
}

/// Why one entry could not be examined.
#[derive(Debug, thiserror::Error)]
enum EntryError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("no settle_forward evidence holds the request")]
    NoRequest,
    #[error("the recorded request cannot be read: {0}")]
    BadRequest(String),
    #[error("chain: {0}")]
    Chain(#[from] crate::chain::ChainError),
}

impl Reconciler {
    /// A reconciler over `store`, reading the chains in `chains` (CAIP-2 → settler; the
    /// settler's key is not used, only its RPC). In-flight entries not updated for
    /// `stale_in_flight_after` are examined too.
    pub fn new(
        store: Arc<dyn Store>,
        chains: BTreeMap<String, Arc<EvmSettler>>,
        clock: SharedClock,
        stale_in_flight_after: Duration,
    ) -> Self {
        Self {
            store,
            chains,
            svm: SvmSettlers::new(),
            clock,
            stale_in_flight_after,
        }
    }

    /// Also resolves Solana entries, on the networks (CAIP-2) of `settlers`.
    pub fn with_svm(mut self, settlers: SvmSettlers) -> Self {
        self.svm = settlers;
        self
    }

    /// One round over the pending (and stale in-flight) entries. `Err` only when the journal
    /// cannot be listed.
    pub async fn reconcile_once(&self) -> Result<ReconcileReport, StoreError> {
        let mut entries = self.store.pending_settlements(BATCH).await?;
        let stale_before = self.clock.now_ms().saturating_sub(
            u64::try_from(self.stale_in_flight_after.as_millis()).unwrap_or(u64::MAX),
        );
        entries.extend(
            self.store
                .stale_in_flight_settlements(stale_before, BATCH)
                .await?,
        );
        let mut report = ReconcileReport::default();
        for record in entries {
            report.examined += 1;
            match self.entry(&record).await {
                Ok(Some(SettlementState::Settled)) => report.settled += 1,
                Ok(Some(_)) => report.failed += 1,
                Ok(None) => report.undecided += 1,
                Err(error) => {
                    report.errors += 1;
                    tracing::warn!(
                        fingerprint = %record.fingerprint.0,
                        %error,
                        "Could not reconcile a pending settlement; retrying next round."
                    );
                }
            }
        }
        Ok(report)
    }

    /// Runs [`Self::reconcile_once`] every `interval` until the task is aborted.
    pub fn spawn(self: Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match self.reconcile_once().await {
                    Ok(report) if report.examined > 0 => {
                        tracing::info!(?report, "Reconciled pending settlements.");
                    }
                    Ok(_) => {}
                    Err(error) => {
                        tracing::warn!(%error, "Could not list pending settlements.");
                    }
                }
            }
        })
    }

    /// Resolves one entry; `Ok(None)` when the chain cannot decide yet.
    async fn entry(
        &self,
        record: &SettlementRecord,
    ) -> Result<Option<SettlementState>, EntryError> {
        if let Some(settler) = self.svm.get(&record.network) {
            let (request, payment) = self.recorded_payment(record).await?;
            let answer = settler
                .reconcile(&payment, record.transaction.as_deref())
                .await?;
            let network = request.response_network().to_owned();
            let payer = payment.payer.clone();
            let (state, transaction, response) = match &answer {
                SvmReconciled::Settled { signature } => (
                    SettlementState::Settled,
                    signature.clone(),
                    settled_response(payer, &network, signature),
                ),
                SvmReconciled::LandedFailed { signature, error } => {
                    let reason = Reason::new(
                        ReasonCode::Svm(crate::chain::svm::settle::TRANSACTION_FAILED),
                        format!("the settlement transaction landed and failed: {error}"),
                    );
                    let response = failure(&request, &reason, payer, &network, signature);
                    (SettlementState::Failed, signature.clone(), response)
                }
                SvmReconciled::NotLanded { .. } => {
                    let reason = Reason::new(
                        ReasonCode::Svm(crate::chain::svm::settle::BLOCK_HEIGHT_EXCEEDED),
                        "the transaction's blockhash expired and it never landed; nothing was transferred",
                    );
                    let response = failure(&request, &reason, payer, &network, "");
                    (SettlementState::Failed, String::new(), response)
                }
                SvmReconciled::Undecided => return Ok(None),
            };
            let answer = format!("{answer:?}");
            return self
                .conclude(record, state, transaction, response, answer)
                .await
                .map(Some);
        }
        let Some(settler) = self.chains.get(&record.network) else {
            return Ok(None);
        };
        let (request, payment) = self.recorded_payment(record).await?;
        let tx = record
            .transaction
            .as_deref()
            .and_then(|t| t.parse::<B256>().ok());
        let now_secs = self.clock.now_secs();
        let answer = settler.reconcile(&payment, tx, now_secs).await?;
        let network = request.response_network().to_owned();
        let payer = payment.payer.clone();
        let (state, transaction, response) = match &answer {
            Reconciled::Settled { tx: found } => {
                let transaction = found
                    .map(|t| format!("{t:#x}"))
                    .or_else(|| record.transaction.clone())
                    .unwrap_or_default();
                let response = settled_response(payer, &network, &transaction);
                (SettlementState::Settled, transaction, response)
            }
            Reconciled::Reverted { tx } => {
                let reason = Reason::new(
                    ReasonCode::EvmTransactionFailed,
                    "the settlement transaction reverted and the authorization is unused",
                );
                let transaction = format!("{tx:#x}");
                let response = failure(&request, &reason, payer, &network, &transaction);
                (SettlementState::Failed, transaction, response)
            }
            Reconciled::NotSettled { expired: true } => {
                let reason = Reason::new(
                    ReasonCode::EvmValidBefore,
                    "the authorization expired without being used; it can no longer settle",
                );
                let transaction = record.transaction.clone().unwrap_or_default();
                let response = failure(&request, &reason, payer, &network, &transaction);
                (SettlementState::Failed, transaction, response)
            }
            Reconciled::NotSettled { expired: false } => return Ok(None),
        };
        let answer = format!("{answer:?}");
        self.conclude(record, state, transaction, response, answer)
            .await
            .map(Some)
    }

    /// Finishes the journal entry and records the `reconcile` evidence.
    async fn conclude(
        &self,
        record: &SettlementRecord,
        state: SettlementState,
        transaction: String,
        response: SettleResponse,
        answer: String,
    ) -> Result<SettlementState, EntryError> {
        let now_ms = self.clock.now_ms();
        let outcome = SettlementOutcome {
            state,
            transaction: Some(transaction.clone()).filter(|t| !t.is_empty()),
            response_json: serde_json::to_string(&response).unwrap_or_default(),
            now_ms,
        };
        self.store
            .finish_settlement(&record.fingerprint, &outcome)
            .await?;
        self.store
            .append_evidence(EvidenceDraft {
                kind: "reconcile".to_owned(),
                gate: Some("settle".to_owned()),
                fingerprint: Some(record.fingerprint.clone()),
                decision: state_label(state).to_owned(),
                request_id: format!("reconcile-{}", uuid::Uuid::new_v4()),
                created_at_ms: now_ms,
                body: json!({
                    "previous_state": state_label(record.state),
                    "previous_transaction": &record.transaction,
                    "chain_answer": answer,
                    "state": state_label(state),
                    "transaction": &transaction,
                    "response": &response,
                }),
            })
            .await?;
        Ok(state)
    }

    /// The request recorded just before the settlement left Gatehouse, normalised again.
    async fn recorded_payment(
        &self,
        record: &SettlementRecord,
    ) -> Result<(FacilitatorRequest, Payment), EntryError> {
        let evidence = self.store.evidence_for(&record.fingerprint).await?;
        let body = evidence
            .iter()
            .rev()
            .find(|e| e.kind == "settle_forward")
            .ok_or(EntryError::NoRequest)?;
        let body: Value =
            serde_json::from_str(&body.body).map_err(|e| EntryError::BadRequest(e.to_string()))?;
        let raw = body.get("request").ok_or(EntryError::NoRequest)?;
        let raw = serde_json::to_vec(raw).map_err(|e| EntryError::BadRequest(e.to_string()))?;
        let request = FacilitatorRequest::decode(Bytes::from(raw))
            .map_err(|e| EntryError::BadRequest(e.to_string()))?;
        let payment = normalise(&request).map_err(|r| EntryError::BadRequest(r.message))?;
        Ok((request, payment))
    }
}

fn failure(
    request: &FacilitatorRequest,
    reason: &Reason,
    payer: Option<String>,
    network: &str,
    transaction: &str,
) -> SettleResponse {
    SettleResponse::failure(
        wire_reason(request.version, Gate::Settle, &reason.code),
        &reason.message,
        payer,
        network,
        transaction,
    )
}
