//! The one pipeline. `verify` (gate 1) and `settle` (gate 2) run the steps of DESIGN.md in
//! order: decode → normalise → chain → policy → risk → decide → evidence → forward. Each step
//! returns a typed [`Verdict`]; a step that cannot run becomes a fail-closed deny here, in one
//! place ([`Run::push_checked`]), and never a silent allow.
//!
//! Who settles is chosen per chain, once, by [`Settlers`]: the upstream facilitator
//! (`settlement = "forward"`) or Gatehouse's own [`EvmSettler`] / [`SvmSettler`] (`"local"`).
//! Everything around
//! that one seam (journal claim, evidence, exactly-once) is the same for both.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use serde::Serialize;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::chain::evm::settle::{EvmSettler, SettleOutcome};
use crate::chain::svm::settle::{SvmSettleOutcome, SvmSettler};
use crate::chain::{ChainCheckers, ChainError};
use crate::clock::SharedClock;
use crate::policy::{Hold, Policy, PolicyHandle};
use crate::protocol::{
    DecodeError, FacilitatorRequest, Payment, SettleResponse, VerifyResponse, X402Version,
    normalise,
};
use crate::risk::payment::{DecisionSummary, RiskInputs, RiskService};
use crate::store::{
    Begin, EvidenceDraft, RiskPaymentRow, SettlementClaim, SettlementOutcome, SettlementState,
    Store,
};
use crate::telemetry;
use crate::upstream::{Upstream, UpstreamAnswer, UpstreamError};
use crate::verdict::{Gate, Outcome, Reason, ReasonCode, Step, Verdict};

/// What the HTTP layer knows about the request that the pipeline needs.
#[derive(Debug, Clone, Default)]
pub struct RequestContext {
    /// The request id (also in the `X-Request-Id` response header and in evidence).
    pub request_id: String,
    /// The incoming `Authorization` header, passed through to the upstream unless replaced.
    pub authorization: Option<HeaderValue>,
    /// Risk inputs named by x402-secure's headers (the payload extension is read later).
    pub risk: RiskInputs,
}

/// A response body with its HTTP status (200 for every business outcome, spec §1.7).
#[derive(Debug, Clone)]
pub struct Reply<T> {
    /// HTTP status.
    pub status: StatusCode,
    /// The body.
    pub body: T,
    /// The risk decision, for the `X-Risk-*` response headers (when the risk step ran).
    pub risk: Option<DecisionSummary>,
}

impl<T> Reply<T> {
    fn ok(body: T) -> Self {
        Self {
            status: StatusCode::OK,
            body,
            risk: None,
        }
    }

    fn with_risk(mut self, run: &Run) -> Self {
        self.risk = run.risk_summary.clone();
        self
    }
}

/// Requests the pipeline refuses outright (not business outcomes).
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// Malformed input: 400.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A `payment-identifier` reused with a different payload: 409 (spec §6.3).
    #[error("payment-identifier {0} was already used with a different payment")]
    IdentifierConflict(String),
    /// A retry with the same `payment-identifier` while the first attempt is still settling.
    #[error("the settlement for payment-identifier {0} is still in progress; retry later")]
    SettlementInProgress(String),
}

/// Who settles each chain's payments, chosen once at start from the chain's `settlement`.
#[derive(Debug, Clone, Default)]
pub struct Settlers {
    local: BTreeMap<String, Arc<EvmSettler>>,
    local_svm: BTreeMap<String, Arc<SvmSettler>>,
}

impl Settlers {
    /// Payments on `network` (CAIP-2) are settled by `settler` instead of the upstream.
    pub fn with_local(mut self, network: &str, settler: Arc<EvmSettler>) -> Self {
        self.local.insert(network.to_owned(), settler);
        self
    }

    /// The locally settled networks (CAIP-2) and their settlers.
    pub fn local(&self) -> impl Iterator<Item = (&str, &Arc<EvmSettler>)> {
        self.local.iter().map(|(id, s)| (id.as_str(), s))
    }

    /// Solana payments on `network` (CAIP-2) are settled by `settler`, as its fee payer.
    pub fn with_local_svm(mut self, network: &str, settler: Arc<SvmSettler>) -> Self {
        self.local_svm.insert(network.to_owned(), settler);
        self
    }

    /// The locally settled Solana networks (CAIP-2) and their settlers.
    pub fn local_svm(&self) -> impl Iterator<Item = (&str, &Arc<SvmSettler>)> {
        self.local_svm.iter().map(|(id, s)| (id.as_str(), s))
    }

    fn for_payment(&self, payment: &Payment) -> Settlement<'_> {
        let network = payment.network.caip2.as_str();
        if let Some(settler) = self.local_svm.get(network) {
            return Settlement::LocalSvm(settler);
        }
        match self.local.get(network) {
            Some(settler) => Settlement::Local(settler),
            None => Settlement::Forward,
        }
    }
}

/// The settlement seam: the one place forward and local settlement differ.
enum Settlement<'a> {
    /// The upstream facilitator verifies and settles.
    Forward,
    /// Gatehouse settles from its own key; the on-chain check is the only verification.
    Local(&'a EvmSettler),
    /// The same on Solana: Gatehouse signs as the fee payer and sends.
    LocalSvm(&'a SvmSettler),
}

/// The verify and settle pipelines, shared by every request.
#[derive(Debug, Clone)]
pub struct Pipeline {
    store: Arc<dyn Store>,
    upstream: Arc<Upstream>,
    chains: ChainCheckers,
    settlers: Settlers,
    clock: SharedClock,
    policy: PolicyHandle,
    risk: Option<Arc<RiskService>>,
}

impl Pipeline {
    /// Builds the pipeline from its parts.
    pub fn new(
        store: Arc<dyn Store>,
        upstream: Arc<Upstream>,
        chains: ChainCheckers,
        clock: SharedClock,
    ) -> Self {
        Self {
            store,
            upstream,
            chains,
            settlers: Settlers::default(),
            clock,
            policy: PolicyHandle::default(),
            risk: None,
        }
    }

    /// Scores payments for risk (without it the risk step records that nothing was checked).
    pub fn with_risk(mut self, risk: Arc<RiskService>) -> Self {
        self.risk = Some(risk);
        self
    }

    /// The risk service, for the `/risk` routes.
    pub fn risk(&self) -> Option<&Arc<RiskService>> {
        self.risk.as_ref()
    }

    /// Settles the chains named in `settlers` locally (default: everything is forwarded).
    pub fn with_settlers(mut self, settlers: Settlers) -> Self {
        self.settlers = settlers;
        self
    }

    /// Applies a spending policy (the default checks nothing).
    pub fn with_policy(mut self, policy: Policy) -> Self {
        self.policy = PolicyHandle::new(policy);
        self
    }

    /// The policy in force, swappable at runtime (hot reload, admin API).
    pub fn policy(&self) -> &PolicyHandle {
        &self.policy
    }

    /// The clock every step reads.
    pub fn clock(&self) -> &SharedClock {
        &self.clock
    }

    /// Gate 1: every check, the decision recorded, then the upstream's own verify.
    pub async fn verify(
        &self,
        ctx: &RequestContext,
        raw: Bytes,
    ) -> Result<Reply<VerifyResponse>, PipelineError> {
        let request = FacilitatorRequest::decode(raw)?;
        let mut run = Run::new(Gate::Verify, ctx, self.clock.now_ms());
        let payment = self.check(&mut run, &request).await;
        if let Some(payment) = &payment {
            // A payment already settled (or settling) must not buy a second resource.
            if run.allowed() {
                let seen = self.store.settlement(&payment.fingerprint).await;
                run.push_checked(Step::Journal, seen.map(already_settled));
            }
        }
        let payer = payment.as_ref().and_then(|p| p.payer.clone());
        let mut response = match run.refusal() {
            Some(reason) => VerifyResponse::invalid(
                wire_reason(request.version, Gate::Verify, &reason.code),
                &reason.message,
                payer,
            ),
            None => match payment.as_ref().map(|p| self.settlers.for_payment(p)) {
                Some(Settlement::Local(_) | Settlement::LocalSvm(_)) => {
                    run.push(Verdict::allow(Step::Upstream).with_checked(
                        "local settlement: no upstream verify; the on-chain check is the authority",
                    ));
                    VerifyResponse::valid(payer)
                }
                _ => self.forward_verify(&mut run, &request, ctx, payer).await,
            },
        };
        // An approval that cannot be recorded is not an approval (invariant 4).
        if let Err(error) = self
            .record(&run, &request, payment.as_ref(), &response)
            .await
        {
            telemetry::evidence_failed(&error);
            if response.is_valid {
                let reason = Reason::new(
                    ReasonCode::CheckUnavailable,
                    "the evidence store is unavailable; payment not approved",
                );
                response = VerifyResponse::invalid(
                    wire_reason(request.version, Gate::Verify, &reason.code),
                    &reason.message,
                    response.payer.clone(),
                );
            }
        }
        if !response.is_valid
            && let Some(payment) = &payment
        {
            self.release_fresh_hold(&run, payment).await;
        }
        if let Some(summary) = &run.risk_summary
            && request.version == X402Version::V2
            && let Ok(value) = serde_json::to_value(summary)
        {
            response
                .extensions
                .get_or_insert_with(Map::new)
                .insert(crate::risk::payment::EXTENSION.to_owned(), value);
        }
        telemetry::decided(Gate::Verify, &run.decision_label(), run.lap.total());
        Ok(Reply::ok(response).with_risk(&run))
    }

    /// Gate 2: the same checks, then the settlement journal makes forwarding exactly-once.
    pub async fn settle(
        &self,
        ctx: &RequestContext,
        raw: Bytes,
    ) -> Result<Reply<SettleResponse>, PipelineError> {
        let request = FacilitatorRequest::decode(raw)?;
        let mut run = Run::new(Gate::Settle, ctx, self.clock.now_ms());
        let payment = self.check(&mut run, &request).await;
        let network = request.response_network().to_owned();
        let payment = match (payment, run.refusal()) {
            (Some(payment), None) => payment,
            (payment, refusal) => {
                // A payment this journal already settled is a replay: say so, rather than
                // whatever the chain now says about its spent authorization.
                let replay = match &payment {
                    Some(payment) => self.journal_replay(&mut run, payment).await,
                    None => None,
                };
                // `check` returns no payment only after pushing a deny, so a reason exists.
                let reason = replay.or(refusal).unwrap_or_else(|| {
                    Reason::new(ReasonCode::InvalidPayload, "the payment could not be read")
                });
                if let Some(payment) = &payment {
                    self.release_fresh_hold(&run, payment).await;
                }
                return Ok(self
                    .refuse_settle(&run, &request, payment.as_ref(), &reason)
                    .await);
            }
        };

        // Exactly-once: claim the fingerprint before anything is forwarded (invariant 2).
        let claim = SettlementClaim {
            fingerprint: payment.fingerprint.clone(),
            payment_identifier: payment.payment_identifier.clone(),
            request_digest: payload_digest(request.payment_payload()),
            network: payment.network.caip2.to_string(),
            payer: payment.payer.clone(),
            now_ms: self.clock.now_ms(),
        };
        match self.store.begin_settlement(&claim).await {
            Ok(Begin::Acquired) => {}
            Ok(Begin::Replay(record)) => {
                let recorded = record
                    .response_json
                    .as_deref()
                    .and_then(|json| serde_json::from_str::<SettleResponse>(json).ok());
                if let Some(response) = recorded {
                    run.note("replayed the recorded response for a payment-identifier retry");
                    self.record_settle(&run, &request, Some(&payment), &response)
                        .await;
                    return Ok(Reply::ok(response));
                }
                return Err(PipelineError::SettlementInProgress(
                    claim.payment_identifier.unwrap_or_default(),
                ));
            }
            Ok(Begin::InFlight(_)) => {
                return Err(PipelineError::SettlementInProgress(
                    claim.payment_identifier.unwrap_or_default(),
                ));
            }
            Ok(Begin::IdentifierConflict) => {
                return Err(PipelineError::IdentifierConflict(
                    claim.payment_identifier.unwrap_or_default(),
                ));
            }
            Ok(Begin::Duplicate(record)) => {
                let reason = Reason::new(
                    ReasonCode::DuplicateSettlement,
                    format!(
                        "this payment was already submitted for settlement ({})",
                        state_label(record.state)
                    ),
                );
                run.push(Verdict::deny(Step::Journal, reason.clone()));
                return Ok(self
                    .refuse_settle(&run, &request, Some(&payment), &reason)
                    .await);
            }
            Err(error) => {
                run.push_checked::<Verdict, _>(Step::Journal, Err(error));
                self.release_fresh_hold(&run, &payment).await;
                let reason = run.refusal().unwrap_or_else(|| {
                    Reason::new(ReasonCode::CheckUnavailable, "journal unavailable")
                });
                return Ok(self
                    .refuse_settle(&run, &request, Some(&payment), &reason)
                    .await);
            }
        }
        run.push(Verdict::allow(Step::Journal).with_checked("fingerprint claimed for settlement"));

        // Record the decision to forward before forwarding: a crash mid-flight leaves both the
        // in-flight journal entry and this record to say what was attempted (the reconciler
        // rebuilds the payment from this record's `request`).
        let settlement = self.settlers.for_payment(&payment);
        let intent = self
            .store
            .append_evidence(run.draft(
                "settle_forward",
                Some(&payment),
                "allow",
                json!({
                    "request": raw_json(&request),
                    "payment": &payment,
                    "verdicts": &run.verdicts,
                    "risk": &run.risk,
                    "settlement": settlement.label(),
                }),
            ))
            .await;
        if let Err(error) = intent {
            telemetry::evidence_failed(&error);
            let reason = Reason::new(
                ReasonCode::CheckUnavailable,
                "the evidence store is unavailable; payment not forwarded",
            );
            let response = settle_failure(&request, &reason, payment_payer(&payment), &network, "");
            self.finish(&payment, SettlementState::Failed, None, &response)
                .await;
            self.settle_budget(&payment, SettlementState::Failed).await;
            return Ok(Reply::ok(response));
        }

        let settled = match settlement {
            Settlement::Forward => {
                let forwarded = self
                    .upstream
                    .settle(request.raw.clone(), ctx.authorization.as_ref())
                    .await;
                classify_settle(&request, &payment, &network, forwarded)
            }
            Settlement::Local(settler) => {
                let outcome = settler.settle(&payment).await.map(LocalOutcome::from);
                classify_local(&request, &payment, &network, outcome)
            }
            Settlement::LocalSvm(settler) => {
                let outcome = settler.settle(&payment).await.map(LocalOutcome::from);
                classify_local(&request, &payment, &network, outcome)
            }
        };
        run.upstream = Some(settled.upstream.clone());
        if settled.state != SettlementState::Settled {
            let reason = Reason::new(settled.reason.clone(), settled.message.clone());
            run.push(Verdict::deny(Step::Upstream, reason));
        }
        self.finish(
            &payment,
            settled.state,
            settled.transaction.clone(),
            &settled.response,
        )
        .await;
        self.settle_budget(&payment, settled.state).await;
        self.record_settle(&run, &request, Some(&payment), &settled.response)
            .await;
        telemetry::decided(Gate::Settle, state_label(settled.state), run.lap.total());
        Ok(Reply {
            status: settled.status,
            body: settled.response,
            risk: run.risk_summary.clone(),
        })
    }

    /// normalise → chain → policy → risk, stopping at the first refusal.
    async fn check(&self, run: &mut Run, request: &FacilitatorRequest) -> Option<Payment> {
        let payment = match normalise(request) {
            Ok(payment) => payment,
            Err(reason) => {
                run.push(Verdict::deny(Step::Normalise, reason));
                return None;
            }
        };
        run.push(Verdict::allow(Step::Normalise));
        let now_secs = self.clock.now_secs();
        let chain = self.chains.check(&payment, run.gate, now_secs).await;
        run.push_checked(Step::Chain, chain);
        if run.allowed() {
            // One policy for the whole check, even if it is swapped meanwhile.
            let policy = self.policy.current();
            let budget = match &self.risk {
                Some(risk) => {
                    risk.session_budget(&payment, request.payment_payload(), &mut run.risk_inputs)
                        .await
                }
                None => Ok(None),
            };
            let decision = match budget {
                Ok(budget) => {
                    policy
                        .check(
                            &*self.store,
                            &payment,
                            budget.as_ref(),
                            &run.request_id,
                            self.clock.now_ms(),
                        )
                        .await
                }
                Err(error) => Err(error),
            };
            run.hold = decision.as_ref().map_or(Hold::None, |d| d.hold);
            run.push_checked(Step::Policy, decision.map(|d| d.verdict));
        }
        if run.allowed() {
            match &self.risk {
                Some(risk) => {
                    let inputs = run.risk_inputs.clone();
                    let outcome = risk
                        .assess_payment(run.gate, &payment, request.payment_payload(), &inputs)
                        .await;
                    run.risk = Some(outcome.evidence);
                    run.risk_summary = outcome.summary;
                    run.risk_history = outcome.history;
                    run.push(outcome.verdict);
                }
                None => {
                    run.push(Verdict::allow(Step::Risk).with_checked("no risk rules configured"))
                }
            }
        }
        Some(payment)
    }

    /// The duplicate-settlement reason when the journal holds a live entry for `payment`.
    async fn journal_replay(&self, run: &mut Run, payment: &Payment) -> Option<Reason> {
        let record = self.store.settlement(&payment.fingerprint).await.ok()??;
        let verdict = already_settled(Some(record));
        let reason = verdict.reasons.first().cloned()?;
        run.push(verdict);
        Some(reason)
    }

    async fn forward_verify(
        &self,
        run: &mut Run,
        request: &FacilitatorRequest,
        ctx: &RequestContext,
        payer: Option<String>,
    ) -> VerifyResponse {
        let answer = self
            .upstream
            .verify(request.raw.clone(), ctx.authorization.as_ref())
            .await;
        let refuse = |run: &mut Run, code: ReasonCode, message: String| {
            let reason = Reason::new(code, message);
            run.push(Verdict::deny(Step::Upstream, reason.clone()));
            VerifyResponse::invalid(
                wire_reason(request.version, Gate::Verify, &reason.code),
                &reason.message,
                payer.clone(),
            )
        };
        match answer {
            Ok(answer) => {
                run.upstream = Some(upstream_summary(Ok(&answer)));
                match serde_json::from_value::<VerifyResponse>(answer.body.clone()) {
                    Ok(response) if response.is_valid && answer.status.is_success() => {
                        run.push(Verdict::allow(Step::Upstream));
                        response
                    }
                    Ok(mut response) => {
                        let upstream_reason = response
                            .invalid_reason
                            .clone()
                            .unwrap_or_else(|| "invalid_payment".to_owned());
                        let code = ReasonCode::Upstream(upstream_reason);
                        run.push(Verdict::deny(
                            Step::Upstream,
                            Reason::new(
                                code.clone(),
                                response.invalid_message.clone().unwrap_or_default(),
                            ),
                        ));
                        response.is_valid = false;
                        response.invalid_reason =
                            Some(wire_reason(request.version, Gate::Verify, &code));
                        response
                    }
                    Err(error) => refuse(
                        run,
                        ReasonCode::UpstreamUnavailable,
                        format!(
                            "the upstream facilitator answered {} with an unexpected body: {error}",
                            answer.status
                        ),
                    ),
                }
            }
            Err(error) => {
                run.upstream = Some(upstream_summary(Err(&error)));
                refuse(
                    run,
                    ReasonCode::UpstreamUnavailable,
                    format!("the upstream facilitator could not verify: {error}"),
                )
            }
        }
    }

    async fn finish(
        &self,
        payment: &Payment,
        state: SettlementState,
        transaction: Option<String>,
        response: &SettleResponse,
    ) {
        let outcome = SettlementOutcome {
            state,
            transaction,
            response_json: serde_json::to_string(response).unwrap_or_default(),
            now_ms: self.clock.now_ms(),
        };
        if let Err(error) = self
            .store
            .finish_settlement(&payment.fingerprint, &outcome)
            .await
        {
            // The entry stays in flight, so the payment can never be forwarded twice; an
            // operator or the reconciler resolves it.
            telemetry::journal_failed(&payment.fingerprint, &error);
        }
    }

    async fn record(
        &self,
        run: &Run,
        request: &FacilitatorRequest,
        payment: Option<&Payment>,
        response: &impl Serialize,
    ) -> Result<(), crate::store::StoreError> {
        let decision = run.decision_label();
        let kind = match run.gate {
            Gate::Verify => "verify",
            Gate::Settle => "settle",
        };
        let draft = run.draft(
            kind,
            payment,
            &decision,
            json!({
                "request": raw_json(request),
                "payment": payment,
                "verdicts": &run.verdicts,
                "notes": &run.notes,
                "upstream": &run.upstream,
                "risk": &run.risk,
                "response": response,
                "elapsed_ms": run.elapsed_ms(&*self.clock),
            }),
        );
        // An approved payment joins the risk history in the same transaction as its record.
        let history = run.risk_history.clone().filter(|_| run.allowed());
        self.store.append_decision(draft, history).await.map(|_| ())
    }

    /// Refuses a settle: the failure response, recorded as evidence.
    async fn refuse_settle(
        &self,
        run: &Run,
        request: &FacilitatorRequest,
        payment: Option<&Payment>,
        reason: &Reason,
    ) -> Reply<SettleResponse> {
        let payer = payment.and_then(payment_payer);
        let response = settle_failure(request, reason, payer, request.response_network(), "");
        self.record_settle(run, request, payment, &response).await;
        Reply::ok(response).with_risk(run)
    }

    async fn record_settle(
        &self,
        run: &Run,
        request: &FacilitatorRequest,
        payment: Option<&Payment>,
        response: &SettleResponse,
    ) {
        if let Err(error) = self.record(run, request, payment, response).await {
            telemetry::evidence_failed(&error);
        }
    }

    /// Gives back a reservation this request made, when the payment was refused after it.
    /// A journal refusal keeps it: the hold then belongs to the settlement under way.
    async fn release_fresh_hold(&self, run: &Run, payment: &Payment) {
        let journal_refused = run
            .verdicts
            .iter()
            .any(|v| v.step == Step::Journal && v.outcome == Outcome::Deny);
        if run.hold != Hold::Fresh || journal_refused {
            return;
        }
        let released = self
            .store
            .release_budget(&payment.fingerprint, self.clock.now_ms())
            .await;
        if let Err(error) = released {
            // The hold lapses at the payment's expiry; until then it only over-counts.
            tracing::warn!(fingerprint = %payment.fingerprint, %error, "could not release a policy reservation");
        }
    }

    /// After the upstream answered: settled (or unknown, the money may have moved) commits
    /// the payment's reservation; a definitive failure releases it.
    async fn settle_budget(&self, payment: &Payment, state: SettlementState) {
        // No shortcut on an empty policy: it may have been swapped since the verify that
        // made the hold; with no hold this is one indexed read.
        let now_ms = self.clock.now_ms();
        let result = match state {
            SettlementState::Settled | SettlementState::Pending => {
                self.store.commit_budget(&payment.fingerprint, now_ms).await
            }
            SettlementState::Failed => {
                self.store
                    .release_budget(&payment.fingerprint, now_ms)
                    .await
            }
            SettlementState::InFlight => Ok(()),
        };
        if let Err(error) = result {
            tracing::error!(fingerprint = %payment.fingerprint, %error, state = state_label(state), "could not finish a policy reservation");
        }
    }

    /// The store, for readiness checks.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The upstream client, for `/supported` and readiness.
    pub fn upstream(&self) -> &Arc<Upstream> {
        &self.upstream
    }

    /// The chain checkers, for filtering `/supported`.
    pub fn chains(&self) -> &ChainCheckers {
        &self.chains
    }

    /// Who settles which chain, for `/supported`.
    pub fn settlers(&self) -> &Settlers {
        &self.settlers
    }
}

/// The verdicts of one request, in step order.
struct Run {
    gate: Gate,
    request_id: String,
    started_ms: u64,
    verdicts: Vec<Verdict>,
    notes: Vec<String>,
    upstream: Option<Value>,
    /// Whether this request made (or found) a policy reservation.
    hold: Hold,
    /// The risk inputs the request named.
    risk_inputs: RiskInputs,
    /// Risk evidence: `{context, assessment, ...}` (replayable).
    risk: Option<Value>,
    /// The risk decision, for response headers.
    risk_summary: Option<DecisionSummary>,
    /// The payment for the risk history, stored with the evidence record if approved.
    risk_history: Option<RiskPaymentRow>,
    /// Per-step latency for `/metrics`.
    lap: crate::metrics::Lap,
}

impl Run {
    fn new(gate: Gate, ctx: &RequestContext, started_ms: u64) -> Self {
        Self {
            gate,
            request_id: ctx.request_id.clone(),
            started_ms,
            verdicts: Vec::new(),
            notes: Vec::new(),
            upstream: None,
            hold: Hold::None,
            risk_inputs: ctx.risk.clone(),
            risk: None,
            risk_summary: None,
            risk_history: None,
            lap: crate::metrics::Lap::start(),
        }
    }

    fn push(&mut self, verdict: Verdict) {
        debug_assert!(verdict.outcome == Outcome::Allow || !verdict.reasons.is_empty());
        crate::metrics::verdict(self.gate, &verdict, self.lap.split());
        self.verdicts.push(verdict);
    }

    /// Fail closed: a step that could not run denies, naming the step and the cause.
    fn push_checked<V: Into<Verdict>, E: std::fmt::Display>(
        &mut self,
        step: Step,
        result: Result<V, E>,
    ) {
        let verdict = match result {
            Ok(verdict) => verdict.into(),
            Err(error) => Verdict::deny(
                step,
                Reason::new(
                    ReasonCode::CheckUnavailable,
                    format!("{} check could not run: {error}", step_name(step)),
                ),
            ),
        };
        self.push(verdict);
    }

    fn note(&mut self, note: &str) {
        self.notes.push(note.to_owned());
    }

    fn allowed(&self) -> bool {
        self.refusal().is_none()
    }

    /// The decision: the first deny wins, then the first review (review is not an approval).
    fn refusal(&self) -> Option<Reason> {
        let first = |outcome| {
            self.verdicts
                .iter()
                .find(|v| v.outcome == outcome)
                .and_then(|v| v.reasons.first().cloned())
        };
        first(Outcome::Deny).or_else(|| first(Outcome::Review))
    }

    fn decision_label(&self) -> String {
        if self.verdicts.iter().any(|v| v.outcome == Outcome::Deny) {
            "deny".into()
        } else if self.verdicts.iter().any(|v| v.outcome == Outcome::Review) {
            "review".into()
        } else {
            "allow".into()
        }
    }

    fn elapsed_ms(&self, clock: &dyn crate::clock::Clock) -> u64 {
        clock.now_ms().saturating_sub(self.started_ms)
    }

    fn draft(
        &self,
        kind: &str,
        payment: Option<&Payment>,
        decision: &str,
        body: Value,
    ) -> EvidenceDraft {
        EvidenceDraft {
            kind: kind.to_owned(),
            gate: Some(match self.gate {
                Gate::Verify => "verify".to_owned(),
                Gate::Settle => "settle".to_owned(),
            }),
            fingerprint: payment.map(|p| p.fingerprint.clone()),
            decision: decision.to_owned(),
            request_id: self.request_id.clone(),
            created_at_ms: self.started_ms,
            body,
        }
    }
}

fn step_name(step: Step) -> &'static str {
    match step {
        Step::Normalise => "normalise",
        Step::Chain => "on-chain",
        Step::Policy => "policy",
        Step::Risk => "risk",
        Step::Journal => "settlement journal",
        Step::Upstream => "upstream",
    }
}

fn already_settled(record: Option<crate::store::SettlementRecord>) -> Verdict {
    match record {
        Some(record) if record.state != SettlementState::Failed => Verdict::deny(
            Step::Journal,
            Reason::new(
                ReasonCode::DuplicateSettlement,
                format!(
                    "this payment was already submitted for settlement ({})",
                    state_label(record.state)
                ),
            ),
        ),
        _ => Verdict::allow(Step::Journal).with_checked("not settled before"),
    }
}

pub(crate) fn state_label(state: SettlementState) -> &'static str {
    match state {
        SettlementState::InFlight => "in_flight",
        SettlementState::Settled => "settled",
        SettlementState::Failed => "failed",
        SettlementState::Pending => "settlement_pending",
    }
}

/// The reason string a client of `version` may receive.
pub(crate) fn wire_reason(version: X402Version, gate: Gate, code: &ReasonCode) -> String {
    match version {
        X402Version::V1 => code.v1_code(gate).to_owned(),
        X402Version::V2 => code.code().to_owned(),
    }
}

fn settle_failure(
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

fn payment_payer(payment: &Payment) -> Option<String> {
    payment.payer.clone()
}

/// SHA-256 of the payment payload, to tell a genuine retry from a different payment.
fn payload_digest(payload: &Value) -> String {
    let bytes = serde_json::to_vec(payload).unwrap_or_default();
    hex::encode(Sha256::digest(bytes))
}

fn raw_json(request: &FacilitatorRequest) -> Value {
    request.body.clone()
}

fn upstream_summary(answer: Result<&UpstreamAnswer, &UpstreamError>) -> Value {
    match answer {
        Ok(a) => json!({"status": a.status.as_u16(), "body": a.body, "elapsed_ms": a.elapsed_ms}),
        Err(e) => json!({"error": e.to_string(), "unknown_outcome": e.is_unknown_outcome()}),
    }
}

/// The settle outcome, as the journal, the evidence and the client see it.
struct Settled {
    state: SettlementState,
    status: StatusCode,
    response: SettleResponse,
    transaction: Option<String>,
    reason: ReasonCode,
    message: String,
    upstream: Value,
}

impl Settlement<'_> {
    fn label(&self) -> &'static str {
        match self {
            Settlement::Forward => "forward",
            Settlement::Local(_) | Settlement::LocalSvm(_) => "local",
        }
    }
}

/// A local settlement's outcome, chain-neutral (transaction ids as the wire shows them).
enum LocalOutcome {
    Settled { tx: String },
    Failed { reason: Reason, tx: Option<String> },
    Pending { tx: String, detail: String },
}

impl From<SettleOutcome> for LocalOutcome {
    fn from(outcome: SettleOutcome) -> Self {
        match outcome {
            SettleOutcome::Settled { tx } => Self::Settled {
                tx: format!("{tx:#x}"),
            },
            SettleOutcome::Failed { reason, tx } => Self::Failed {
                reason,
                tx: tx.map(|t| format!("{t:#x}")),
            },
            SettleOutcome::Pending { tx, detail } => Self::Pending {
                tx: format!("{tx:#x}"),
                detail,
            },
        }
    }
}

impl From<SvmSettleOutcome> for LocalOutcome {
    fn from(outcome: SvmSettleOutcome) -> Self {
        match outcome {
            SvmSettleOutcome::Settled { signature } => Self::Settled { tx: signature },
            SvmSettleOutcome::Failed { reason, signature } => Self::Failed {
                reason,
                tx: signature,
            },
            SvmSettleOutcome::Pending { signature, detail } => Self::Pending {
                tx: signature,
                detail,
            },
        }
    }
}

/// A local settlement's outcome. `Err` means nothing was signed or sent (a definitive failure
/// the client may retry); `Pending` keeps the hash for the reconciler (invariant 2).
fn classify_local(
    request: &FacilitatorRequest,
    payment: &Payment,
    network: &str,
    outcome: Result<LocalOutcome, ChainError>,
) -> Settled {
    let payer = payment.payer.clone();
    let not_settled = |state, reason: Reason, tx: Option<String>, summary: Value| Settled {
        state,
        status: StatusCode::OK,
        response: settle_failure(
            request,
            &reason,
            payer.clone(),
            network,
            tx.as_deref().unwrap_or(""),
        ),
        transaction: tx,
        reason: reason.code,
        message: reason.message,
        upstream: summary,
    };
    match outcome {
        Ok(LocalOutcome::Settled { tx: hash }) => Settled {
            state: SettlementState::Settled,
            status: StatusCode::OK,
            response: settled_response(payer.clone(), network, &hash),
            upstream: json!({"settlement": "local", "outcome": "settled", "transaction": &hash}),
            transaction: Some(hash),
            reason: ReasonCode::Upstream(String::new()),
            message: String::new(),
        },
        Ok(LocalOutcome::Failed { reason, tx: hash }) => {
            let summary = json!({"settlement": "local", "outcome": "failed", "transaction": &hash});
            not_settled(SettlementState::Failed, reason, hash, summary)
        }
        Ok(LocalOutcome::Pending { tx: hash, detail }) => {
            let summary = json!({"settlement": "local", "outcome": "pending", "transaction": &hash, "detail": &detail});
            let reason = Reason::new(
                ReasonCode::SettlementPending,
                format!("{detail}; the outcome is unknown and will be reconciled"),
            );
            not_settled(SettlementState::Pending, reason, Some(hash), summary)
        }
        Err(error) => {
            let reason = Reason::new(
                ReasonCode::CheckUnavailable,
                format!("local settlement could not start; nothing was sent: {error}"),
            );
            let summary =
                json!({"settlement": "local", "outcome": "not_sent", "error": error.to_string()});
            not_settled(SettlementState::Failed, reason, None, summary)
        }
    }
}

/// `{success: true, payer, transaction, network}`.
pub(crate) fn settled_response(
    payer: Option<String>,
    network: &str,
    transaction: &str,
) -> SettleResponse {
    SettleResponse {
        success: true,
        error_reason: None,
        error_message: None,
        payer,
        transaction: transaction.to_owned(),
        network: network.to_owned(),
        amount: None,
        extensions: None,
        other: Map::new(),
    }
}

/// Upstream 2xx/4xx answers are definitive; a timeout, a 5xx or an unreadable 2xx body is an
/// unknown outcome (`settlement_pending`, keeping any hash) to be reconciled, never a failure.
fn classify_settle(
    request: &FacilitatorRequest,
    payment: &Payment,
    network: &str,
    forwarded: Result<UpstreamAnswer, UpstreamError>,
) -> Settled {
    let payer = payment.payer.clone();
    let pending = |transaction: Option<String>, message: String, upstream: Value| {
        let reason = Reason::new(ReasonCode::SettlementPending, message);
        Settled {
            state: SettlementState::Pending,
            status: StatusCode::OK,
            response: settle_failure(
                request,
                &reason,
                payer.clone(),
                network,
                transaction.as_deref().unwrap_or(""),
            ),
            transaction,
            reason: reason.code,
            message: reason.message,
            upstream,
        }
    };
    match forwarded {
        Ok(answer) => {
            let summary = upstream_summary(Ok(&answer));
            match serde_json::from_value::<SettleResponse>(answer.body.clone()) {
                Ok(mut response) if answer.status.is_success() && response.success => {
                    if response.network.is_empty() {
                        response.network = network.to_owned();
                    }
                    let transaction = Some(response.transaction.clone()).filter(|t| !t.is_empty());
                    Settled {
                        state: SettlementState::Settled,
                        status: StatusCode::OK,
                        response,
                        transaction,
                        reason: ReasonCode::Upstream(String::new()),
                        message: String::new(),
                        upstream: summary,
                    }
                }
                Ok(mut response) => {
                    let upstream_reason = response
                        .error_reason
                        .clone()
                        .unwrap_or_else(|| "unexpected_settle_error".to_owned());
                    let code = ReasonCode::Upstream(upstream_reason);
                    response.success = false;
                    response.error_reason = Some(wire_reason(request.version, Gate::Settle, &code));
                    if response.network.is_empty() {
                        response.network = network.to_owned();
                    }
                    let message = response.error_message.clone().unwrap_or_default();
                    Settled {
                        state: SettlementState::Failed,
                        status: StatusCode::OK,
                        transaction: Some(response.transaction.clone()).filter(|t| !t.is_empty()),
                        response,
                        reason: code,
                        message,
                        upstream: summary,
                    }
                }
                Err(error) if answer.status.is_client_error() => {
                    let reason = Reason::new(
                        ReasonCode::Upstream("unexpected_settle_error".into()),
                        format!(
                            "the upstream facilitator refused the settlement ({}): {error}",
                            answer.status
                        ),
                    );
                    Settled {
                        state: SettlementState::Failed,
                        status: StatusCode::OK,
                        response: settle_failure(request, &reason, payer, network, ""),
                        transaction: None,
                        reason: reason.code,
                        message: reason.message,
                        upstream: summary,
                    }
                }
                Err(error) => pending(
                    None,
                    format!(
                        "the upstream facilitator's answer could not be read ({error}); the outcome is unknown and will be reconciled"
                    ),
                    summary,
                ),
            }
        }
        Err(error) if error.is_unknown_outcome() => {
            let summary = upstream_summary(Err(&error));
            pending(
                error.transaction_hint(),
                format!(
                    "the upstream facilitator did not answer definitively ({error}); the outcome is unknown and will be reconciled"
                ),
                summary,
            )
        }
        Err(error) => {
            let reason = Reason::new(
                ReasonCode::UpstreamUnavailable,
                format!("the upstream facilitator is unreachable; nothing was settled: {error}"),
            );
            Settled {
                state: SettlementState::Failed,
                status: StatusCode::BAD_GATEWAY,
                response: settle_failure(request, &reason, payer, network, ""),
                transaction: None,
                reason: reason.code,
                message: reason.message,
                upstream: upstream_summary(Err(&error)),
            }
        }
    }
}
