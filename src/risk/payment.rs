//! The pipeline's risk step: reads the risk inputs of a payment (x402-secure's headers, or the
//! `gatehouse-risk` payload extension), builds the [`RiskContext`] from the session, trace,
//! mandate and store history, scores it with the rule engine, and turns the assessment into a
//! verdict. `review` opens a hold an operator decides (a retry of the same fingerprint gets
//! that decision); mandate problems (replay, expiry, payee, amount, signature) refuse whatever
//! the rules say. Every outcome carries the evidence to replay it:
//! `{"context": <RiskContext>, "assessment": <Assessment>}`.
//!
//! Fails closed: a store error denies with `check_unavailable`.

use std::sync::Arc;

use alloy::primitives::U256;
use http::HeaderMap;
use serde::Serialize;
use serde_json::{Value, json};

use super::config::RiskConfig;
use super::context::{PaymentFacts, RiskContext, TraceFacts};
use super::engine::RuleEngine;
use super::mandate::{self, MandateInput, MandateKeys, PaymentView};
use super::session::{facts as session_facts, is_uuid, new_id};
use super::{Assessment, Decision, RiskLevel, history};
use crate::clock::SharedClock;
use crate::protocol::Payment;
use crate::server::error::ApiError;
use crate::store::risk::{HistoryQuery, Review, ReviewState, RiskPaymentRow};
use crate::store::{Store, StoreError};
use crate::verdict::{Gate, Reason, ReasonCode, Step, Verdict};

/// The payment-payload extension carrying risk inputs: `{sid, tid, traceparent?, ap2?}`
/// (directly, or under `info` as other x402 extensions do).
pub const EXTENSION: &str = "gatehouse-risk";
/// Longest accepted `X-PAYMENT-SECURE` (as x402-secure).
pub const MAX_PAYMENT_SECURE_BYTES: usize = 4096;

/// Reason code for a risk deny.
pub const RISK_DENIED: ReasonCode = ReasonCode::Risk("risk_denied");
/// Reason code for a review hold.
pub const RISK_REVIEW_PENDING: ReasonCode = ReasonCode::Risk("risk_review_pending");

/// The risk inputs a request named.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RiskInputs {
    /// Risk session id.
    pub sid: Option<String>,
    /// Trace id.
    pub tid: Option<String>,
    /// W3C traceparent (`X-PAYMENT-SECURE` `tp`).
    pub traceparent: Option<String>,
    /// `X-PAYMENT-SECURE` `ts` (tracestate, or x402-secure's base64 agent trace context).
    pub tracestate: Option<String>,
    /// The AP2 mandate evidence.
    pub mandate: Option<MandateInput>,
    /// The named session as read from the store earlier in this request (by the session
    /// budget lookup), so the risk step does not read it again.
    pub session: Option<crate::store::risk::SessionRow>,
}

fn header_error(name: &str, message: impl Into<String>) -> ApiError {
    ApiError::BadRequest {
        code: "invalid_risk_header",
        field: Some(name.to_owned()),
        message: message.into(),
    }
}

/// Validates a W3C traceparent (`00-<32 hex>-<16 hex>-<2 hex>`, ids not all zero).
pub fn valid_traceparent(tp: &str) -> bool {
    let parts: Vec<&str> = tp.split('-').collect();
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    matches!(parts.as_slice(), [v, t, s, f]
        if *v == "00" && hex(t, 32) && hex(s, 16) && hex(f, 2)
            && t.bytes().any(|b| b != b'0') && s.bytes().any(|b| b != b'0'))
}

impl RiskInputs {
    /// Reads `X-RISK-SESSION`, `X-RISK-TRACE`, `X-PAYMENT-SECURE` and `X-AP2-EVIDENCE`;
    /// a malformed one is a 400 naming the header.
    pub fn from_headers(headers: &HeaderMap) -> Result<RiskInputs, ApiError> {
        let get = |name: &str| -> Result<Option<String>, ApiError> {
            match headers.get(name) {
                None => Ok(None),
                Some(v) => v
                    .to_str()
                    .map(|s| Some(s.trim().to_owned()).filter(|s| !s.is_empty()))
                    .map_err(|_| header_error(name, "must be visible ASCII")),
            }
        };
        let mut inputs = RiskInputs::default();
        for (name, slot) in [
            ("X-RISK-SESSION", &mut inputs.sid),
            ("X-RISK-TRACE", &mut inputs.tid),
        ] {
            if let Some(id) = get(name)? {
                if !is_uuid(&id) {
                    return Err(header_error(name, "must be a UUID"));
                }
                *slot = Some(id);
            }
        }
        if let Some(secure) = get("X-PAYMENT-SECURE")? {
            let (tp, ts) =
                parse_payment_secure(&secure).map_err(|m| header_error("X-PAYMENT-SECURE", m))?;
            inputs.traceparent = Some(tp);
            // x402-secure's SDK names its trace only here (never in X-RISK-TRACE).
            if inputs.tid.is_none() {
                inputs.tid = ts.as_deref().and_then(agent_trace_tid);
            }
            inputs.tracestate = ts;
        }
        if let Some(evidence) = get("X-AP2-EVIDENCE")? {
            inputs.mandate = Some(
                mandate::parse_evidence_header(&evidence)
                    .map_err(|m| header_error("X-AP2-EVIDENCE", m))?,
            );
        }
        Ok(inputs)
    }

    /// Whether nothing was named.
    pub fn is_empty(&self) -> bool {
        *self == RiskInputs::default()
    }

    /// Fills what the headers left open from the payload extension; `Err` names the field.
    fn merge_extension(&mut self, payload: &Value) -> Result<Vec<String>, String> {
        let Some(ext) = payload.get("extensions").and_then(|e| e.get(EXTENSION)) else {
            return Ok(Vec::new());
        };
        let field = |f: &str| format!("paymentPayload.extensions.{EXTENSION}.{f}");
        let ext = ext.get("info").filter(|i| i.is_object()).unwrap_or(ext);
        if !ext.is_object() {
            return Err(format!(
                "`paymentPayload.extensions.{EXTENSION}` must be an object"
            ));
        }
        let mut notes = Vec::new();
        for (key, slot) in [("sid", &mut self.sid), ("tid", &mut self.tid)] {
            match ext.get(key) {
                None | Some(Value::Null) => {}
                Some(Value::String(id)) if is_uuid(id) => {
                    if let Some(h) = slot.as_deref() {
                        if h != id {
                            notes.push(format!(
                                "the {key} header and the payload extension differ; the header was used"
                            ));
                        }
                    } else {
                        *slot = Some(id.clone());
                    }
                }
                Some(_) => return Err(format!("`{}` must be a UUID string", field(key))),
            }
        }
        match ext.get("traceparent") {
            None | Some(Value::Null) => {}
            Some(Value::String(tp)) if valid_traceparent(tp) => {
                if self.traceparent.is_none() {
                    self.traceparent = Some(tp.clone());
                }
            }
            Some(_) => {
                return Err(format!(
                    "`{}` must be a W3C traceparent",
                    field("traceparent")
                ));
            }
        }
        match ext.get("ap2") {
            None | Some(Value::Null) => {}
            Some(m @ Value::Object(_)) => {
                if m.to_string().len() > mandate::MAX_MANDATE_BYTES {
                    return Err(format!("`{}` is too large", field("ap2")));
                }
                // The full mandate is worth more than a header's reference to it.
                if !matches!(self.mandate, Some(MandateInput::Mandate(_))) {
                    self.mandate = Some(MandateInput::Mandate(m.clone()));
                }
            }
            Some(Value::String(s)) => {
                let parsed = mandate::parse_evidence_header(s)
                    .map_err(|m| format!("`{}` {m}", field("ap2")))?;
                if self.mandate.is_none() {
                    self.mandate = Some(parsed);
                }
            }
            Some(_) => return Err(format!("`{}` must be an AP2 mandate object", field("ap2"))),
        }
        Ok(notes)
    }
}

/// The trace id x402-secure's SDK puts in `X-PAYMENT-SECURE`'s `ts`: percent-encoded standard
/// base64 of `{"tid":"<uuid>"}`. `None` for anything else, such as a W3C tracestate.
fn agent_trace_tid(ts: &str) -> Option<String> {
    use base64::Engine as _;
    // Only the three characters base64 adds to the URL-safe set are ever encoded.
    let mut encoded = String::with_capacity(ts.len());
    let mut rest = ts;
    while let Some(at) = rest.find('%') {
        encoded.push_str(&rest[..at]);
        let escape = rest.get(at + 1..at + 3)?;
        encoded.push(match escape.to_ascii_uppercase().as_str() {
            "2B" => '+',
            "2F" => '/',
            "3D" => '=',
            _ => return None,
        });
        rest = &rest[at + 3..];
    }
    encoded.push_str(rest);
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let context: Value = serde_json::from_slice(&bytes).ok()?;
    let tid = context.get("tid")?.as_str()?;
    is_uuid(tid).then(|| tid.to_owned())
}

/// Parses `X-PAYMENT-SECURE`: `w3c.v1;tp=<traceparent>[;ts=<tracestate>]`.
pub fn parse_payment_secure(value: &str) -> Result<(String, Option<String>), String> {
    if value.len() > MAX_PAYMENT_SECURE_BYTES {
        return Err(format!("is over {MAX_PAYMENT_SECURE_BYTES} bytes"));
    }
    let parts: Vec<&str> = value
        .split(';')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    if parts.first() != Some(&"w3c.v1") {
        return Err("must start with w3c.v1".into());
    }
    let (mut tp, mut ts) = (None, None);
    for p in &parts[1..] {
        match p.split_once('=') {
            Some(("tp", v)) => tp = Some(v.to_owned()),
            Some(("ts", v)) => ts = Some(v.to_owned()),
            Some(_) => {}
            None => return Err(format!("segment `{p}` is not key=value")),
        }
    }
    let tp = tp.ok_or("needs tp=<traceparent>")?;
    if !valid_traceparent(&tp) {
        return Err("tp is not a valid W3C traceparent".into());
    }
    Ok((tp, ts))
}

/// The decision as buyers and sellers see it (headers, the verify extension, `/risk/evaluate`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DecisionSummary {
    /// allow, review or deny.
    pub decision: Decision,
    /// low, medium or high.
    pub risk_level: RiskLevel,
    /// 0–100.
    pub score: u32,
    /// Reasons (rule ids and descriptions, or mandate problems).
    pub reasons: Vec<String>,
    /// Identifies this decision (in evidence too).
    pub decision_id: String,
    /// How long the decision stays valid.
    pub ttl_seconds: u64,
    /// The review hold, when the decision is `review` (or came from one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub review_id: Option<String>,
}

/// What the risk step concluded.
#[derive(Debug, Clone)]
pub struct RiskOutcome {
    /// The pipeline verdict.
    pub verdict: Verdict,
    /// Evidence: `{context, assessment, ...}`.
    pub evidence: Value,
    /// The decision, when one was made (absent when the step could not run).
    pub summary: Option<DecisionSummary>,
    /// The payment for the risk history, when the risk step allowed it. The caller stores it
    /// with the decision's evidence record, in the same transaction, so the history holds
    /// exactly the payments that were approved and recorded.
    pub history: Option<RiskPaymentRow>,
}

/// Scores payments.
#[derive(Debug)]
pub struct RiskService {
    store: Arc<dyn Store>,
    engine: Option<Arc<RuleEngine>>,
    config: RiskConfig,
    keys: MandateKeys,
    clock: SharedClock,
}

/// A context could not be built; the payment is refused for this reason.
enum Refusal {
    Store(StoreError),
    Input(String),
}

impl From<StoreError> for Refusal {
    fn from(e: StoreError) -> Self {
        Refusal::Store(e)
    }
}

/// The context plus what the mandate checks found.
struct Built {
    context: RiskContext,
    mandate: Option<mandate::Parsed>,
    notes: Vec<String>,
    /// Whether the store holds a review of this payment (read with the history, so the common
    /// case, none, costs no extra round trip).
    has_review: bool,
}

impl RiskService {
    /// Builds the service.
    pub fn new(
        store: Arc<dyn Store>,
        engine: Option<Arc<RuleEngine>>,
        config: RiskConfig,
        keys: MandateKeys,
        clock: SharedClock,
    ) -> Self {
        Self {
            store,
            engine,
            config,
            keys,
            clock,
        }
    }

    /// From `[risk]`: loads the rules and the mandate keys; a problem names its key.
    pub fn build(
        config: &RiskConfig,
        store: Arc<dyn Store>,
        clock: SharedClock,
    ) -> Result<RiskService, crate::config::ConfigProblem> {
        let engine = if has_rule_files(&config.rules_dir) {
            Some(
                RuleEngine::load(config).map_err(|e| crate::config::ConfigProblem {
                    key: "risk.rules_dir".into(),
                    message: e.to_string(),
                })?,
            )
        } else {
            tracing::warn!(dir = %config.rules_dir.display(), "No risk rules found; payments are not scored.");
            None
        };
        let keys = MandateKeys::load(&config.mandate_keys, config.mandate_jwks_file.as_deref())
            .map_err(|message| crate::config::ConfigProblem {
                key: "risk.mandate_keys".into(),
                message,
            })?;
        Ok(Self::new(store, engine, config.clone(), keys, clock))
    }

    /// The configuration.
    pub fn config(&self) -> &RiskConfig {
        &self.config
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The clock.
    pub fn clock(&self) -> &SharedClock {
        &self.clock
    }

    /// The rule engine, when rules are configured (the server starts its reloader).
    pub fn engine(&self) -> Option<&Arc<RuleEngine>> {
        self.engine.as_ref()
    }

    async fn build_context(
        &self,
        payment: PaymentFacts,
        fingerprint: &str,
        inputs: &RiskInputs,
    ) -> Result<Built, Refusal> {
        let now_ms = self.clock.now_ms();
        let mut notes = Vec::new();
        let session = match &inputs.sid {
            Some(sid) => match self.session_row(sid, inputs).await? {
                Some(row) => Some(session_facts(&row, payment.payer.as_deref(), now_ms)),
                None => return Err(Refusal::Input(format!("unknown risk session {sid}"))),
            },
            None => None,
        };
        let trace = match &inputs.tid {
            Some(tid) => match self.store.risk_trace(tid).await? {
                Some(row) => {
                    if inputs.sid.as_ref().is_some_and(|sid| *sid != row.sid) {
                        return Err(Refusal::Input(format!(
                            "trace {tid} belongs to another risk session"
                        )));
                    }
                    let stored: Value = serde_json::from_str(&row.body)
                        .map_err(|e| StoreError::Corrupt(format!("trace {tid}: {e}")))?;
                    let mut facts: TraceFacts =
                        serde_json::from_value(stored.get("facts").cloned().unwrap_or(Value::Null))
                            .map_err(|e| StoreError::Corrupt(format!("trace {tid}: {e}")))?;
                    facts.tid = tid.clone();
                    Some(facts)
                }
                None => return Err(Refusal::Input(format!("unknown risk trace {tid}"))),
            },
            None => None,
        };
        let mandate = match &inputs.mandate {
            Some(input) => {
                let amount = U256::from_str_radix(&payment.amount, 10).unwrap_or(U256::MAX);
                let view = PaymentView {
                    pay_to: &payment.pay_to,
                    amount,
                    decimals: payment.decimals,
                    agent: session.as_ref().map(|s| s.agent_id.as_str()),
                    description: payment.description.as_deref(),
                    now_ms,
                };
                let mut parsed = mandate::evaluate(input, &view, &self.keys);
                if parsed.single_use && !parsed.facts.id.is_empty() {
                    let holder = self.store.mandate_holder(&parsed.facts.id).await?;
                    if holder.is_some_and(|h| h != fingerprint) {
                        parsed.facts.replayed = true;
                        parsed
                            .problems
                            .push(format!("mandate {} was already used", parsed.facts.id));
                    }
                }
                if let Some((cap, window_ms)) = parsed.budget {
                    let since = now_ms.saturating_sub(window_ms);
                    let spent = self
                        .store
                        .mandate_uses(&parsed.facts.id, fingerprint, since)
                        .await?
                        .iter()
                        .filter_map(|a| U256::from_str_radix(a, 10).ok())
                        .fold(U256::ZERO, |a, b| a.saturating_add(b));
                    parsed.facts.budget_within = spent.saturating_add(amount) <= cap;
                    if !parsed.facts.budget_within {
                        parsed.problems.push(format!(
                            "the mandate's rolling budget ({cap}) would be exceeded ({spent} spent)"
                        ));
                    }
                }
                Some(parsed)
            }
            None => None,
        };
        let endpoint = match (&payment.host, &payment.path) {
            (Some(h), Some(p)) => Some(format!("{h}{p}")),
            _ => None,
        };
        let counts = self
            .store
            .risk_history(&HistoryQuery {
                payer: payment.payer.clone(),
                pay_to: payment.pay_to.clone(),
                resource: payment.resource.clone(),
                endpoint: endpoint.clone(),
                asset: payment.asset.clone(),
                fingerprint: fingerprint.to_owned(),
                now_ms,
            })
            .await?;
        if session.is_none() && inputs.sid.is_none() {
            notes.push("no risk session named".into());
        }
        let context = RiskContext {
            history: history::history_facts(&counts, endpoint.is_some()),
            endpoint: history::endpoint_facts(&self.config, &payment, &counts),
            payment,
            session,
            trace,
            mandate: mandate.as_ref().map(|m| m.facts.clone()),
        };
        Ok(Built {
            context,
            mandate,
            notes,
            has_review: counts.has_review,
        })
    }

    fn score(&self, context: &RiskContext) -> Option<Assessment> {
        self.engine.as_ref().map(|engine| engine.evaluate(context))
    }

    fn summary(
        &self,
        decision: Decision,
        assessment: Option<&Assessment>,
        reasons: Vec<String>,
    ) -> DecisionSummary {
        let level = match decision {
            Decision::Deny => RiskLevel::High,
            Decision::Review => RiskLevel::Medium,
            Decision::Allow => {
                assessment.map_or(RiskLevel::Low, |a| a.level.min(RiskLevel::Medium))
            }
        };
        DecisionSummary {
            decision,
            risk_level: level,
            score: assessment.map_or(0, |a| a.score),
            reasons,
            decision_id: new_id(),
            ttl_seconds: self.config.decision_ttl_secs,
            review_id: None,
        }
    }

    /// The risk step for one payment (never errors: a failure is a fail-closed deny).
    /// The budget the buyer declared on the payment's risk session, for the policy's atomic
    /// reservation (so a buyer can cap its own agents at the facilitator). A payment in an
    /// asset other than the budget's gets a cap of zero: the buyer budgeted nothing in it.
    /// `None` when no session is named, it is unknown or it declared no budget (the risk
    /// step judges unknown sessions); `Err` when the store cannot answer (fail closed).
    pub async fn session_budget(
        &self,
        payment: &Payment,
        payload: &Value,
        inputs: &mut RiskInputs,
    ) -> Result<Option<crate::policy::SessionBudget>, StoreError> {
        // The risk step merges the extension itself (and reports its problems); here it only
        // names the session.
        let mut merged = inputs.clone();
        if merged.merge_extension(payload).is_err() {
            return Ok(None);
        }
        let Some(sid) = merged.sid else {
            return Ok(None);
        };
        let Some(row) = self.store.risk_session(&sid).await? else {
            return Ok(None);
        };
        inputs.session = Some(row.clone());
        let body: Value = serde_json::from_str(&row.body).unwrap_or(Value::Null);
        let Some(budget) = body.get("budget").filter(|b| b.is_object()) else {
            return Ok(None);
        };
        let amount = budget.get("amount").and_then(Value::as_str);
        let asset = budget.get("asset").and_then(Value::as_str).unwrap_or("");
        let same_asset =
            crate::admin::normalise_pay_to(asset) == crate::admin::normalise_pay_to(&payment.asset);
        // Stored budgets were validated at session creation (decimal digits); one beyond the
        // counters' range is effectively unlimited, and one that no longer parses caps at
        // zero rather than at nothing.
        let digits = amount.filter(|a| !a.is_empty() && a.bytes().all(|b| b.is_ascii_digit()));
        let cap = match digits {
            Some(a) if same_asset => a.parse::<i64>().unwrap_or(i64::MAX),
            _ => 0,
        };
        Ok(Some(crate::policy::SessionBudget {
            session_id: sid,
            cap: crate::policy::Atomic(cap),
        }))
    }

    /// The session row for `sid`: the one already read in this request, or from the store.
    async fn session_row(
        &self,
        sid: &str,
        inputs: &RiskInputs,
    ) -> Result<Option<crate::store::risk::SessionRow>, StoreError> {
        match inputs.session.as_ref().filter(|row| row.sid == sid) {
            Some(row) => Ok(Some(row.clone())),
            None => self.store.risk_session(sid).await,
        }
    }

    pub async fn assess_payment(
        &self,
        gate: Gate,
        payment: &Payment,
        payload: &Value,
        inputs: &RiskInputs,
    ) -> RiskOutcome {
        let mut inputs = inputs.clone();
        let mut notes = match inputs.merge_extension(payload) {
            Ok(notes) => notes,
            Err(message) => {
                return refuse_input(ReasonCode::InvalidPayload, message, &inputs);
            }
        };
        let fingerprint = payment.fingerprint.0.as_str();
        let facts = history::payment_facts(payment, gate);
        let built = match self.build_context(facts, fingerprint, &inputs).await {
            Ok(b) => b,
            Err(Refusal::Input(message)) => return refuse_input(RISK_DENIED, message, &inputs),
            Err(Refusal::Store(e)) => return unavailable(&e),
        };
        notes.extend(built.notes.iter().cloned());
        match self.decide(payment, built, &inputs, notes).await {
            Ok(outcome) => outcome,
            Err(e) => unavailable(&e),
        }
    }

    async fn decide(
        &self,
        payment: &Payment,
        built: Built,
        inputs: &RiskInputs,
        notes: Vec<String>,
    ) -> Result<RiskOutcome, StoreError> {
        let fingerprint = payment.fingerprint.0.as_str();
        let now_ms = self.clock.now_ms();
        let assessment = self.score(&built.context);
        let problems = built
            .mandate
            .as_ref()
            .map(|m| m.problems.clone())
            .unwrap_or_default();
        let prior = if built.has_review {
            self.store.review_for(fingerprint).await?
        } else {
            None
        };
        let mut checked = vec![match &assessment {
            Some(a) => format!("risk rules {} scored {}", a.rule_set, a.score),
            None => "no risk rules configured".to_owned(),
        }];

        // Mandate problems refuse whatever the rules or an operator said.
        let (decision, reasons) = if !problems.is_empty() {
            (Decision::Deny, problems.clone())
        } else if let Some(review) = prior.as_ref().filter(|r| r.state != ReviewState::Pending) {
            checked.push(format!("operator decision on review {}", review.id));
            match review.state {
                ReviewState::Approved => (
                    Decision::Allow,
                    vec![format!("review {} approved by an operator", review.id)],
                ),
                _ => (
                    Decision::Deny,
                    vec![format!("review {} rejected by an operator", review.id)],
                ),
            }
        } else {
            match &assessment {
                Some(a) => (a.decision, a.reasons.clone()),
                None => (Decision::Allow, Vec::new()),
            }
        };
        let mut summary = self.summary(decision, assessment.as_ref(), reasons);
        let mut review_record = None;
        let mut history = None;
        let verdict = match decision {
            Decision::Deny => Verdict::deny(
                Step::Risk,
                Reason::new(
                    RISK_DENIED,
                    format!("risk: denied ({})", reason_text(&summary.reasons)),
                ),
            ),
            Decision::Review => {
                let review = self
                    .store
                    .open_review(&Review {
                        id: new_id(),
                        fingerprint: fingerprint.to_owned(),
                        state: ReviewState::Pending,
                        decision_id: summary.decision_id.clone(),
                        payer: payment.payer.clone(),
                        pay_to: payment.pay_to.clone(),
                        amount: payment.amount.to_string(),
                        resource: payment.resource.clone(),
                        score: summary.score,
                        reasons: summary.reasons.clone(),
                        created_at_ms: now_ms,
                        decided_at_ms: None,
                        decided_by: None,
                        note: None,
                    })
                    .await?;
                summary.review_id = Some(review.id.clone());
                // A new hold (not a retry of a pending one) tells the operator's webhooks.
                if review.decision_id == summary.decision_id {
                    let queued = crate::webhook::enqueue(
                        &*self.store,
                        crate::webhook::WebhookEvent::ReviewPending,
                        json!(review),
                        now_ms,
                    )
                    .await;
                    if let Err(error) = queued {
                        tracing::warn!(review = %review.id, %error, "Could not enqueue the review.pending webhook.");
                    }
                }
                review_record = Some(review.clone());
                Verdict::review(
                    Step::Risk,
                    Reason::new(
                        RISK_REVIEW_PENDING,
                        format!(
                            "risk: held for operator review {} ({})",
                            review.id,
                            reason_text(&summary.reasons)
                        ),
                    ),
                )
            }
            Decision::Allow => {
                if let Some(m) = built
                    .mandate
                    .as_ref()
                    .filter(|m| !m.facts.id.is_empty() && m.facts.kind != "reference")
                {
                    // The claim decides between concurrent payments under one single-use mandate,
                    // on every replica.
                    if m.single_use {
                        let holder = self
                            .store
                            .claim_mandate(&m.facts.id, fingerprint, now_ms)
                            .await?;
                        if holder != fingerprint {
                            summary = self.summary(
                                Decision::Deny,
                                assessment.as_ref(),
                                vec![format!("mandate {} was already used", m.facts.id)],
                            );
                            let reason = Reason::new(
                                RISK_DENIED,
                                format!("risk: denied (mandate {} was already used)", m.facts.id),
                            );
                            return Ok(self.outcome(
                                Verdict::deny(Step::Risk, reason),
                                built,
                                assessment,
                                summary,
                                inputs,
                                notes,
                                None,
                            ));
                        }
                    }
                    self.store
                        .record_mandate_use(
                            &m.facts.id,
                            fingerprint,
                            &payment.amount.to_string(),
                            now_ms,
                        )
                        .await?;
                }
                history = Some(RiskPaymentRow {
                    fingerprint: fingerprint.to_owned(),
                    payer: built.context.payment.payer.clone(),
                    pay_to: payment.pay_to.clone(),
                    resource: payment.resource.clone(),
                    endpoint: history::endpoint_key(payment.resource.as_deref()),
                    amount: payment.amount.to_string(),
                    asset: payment.asset.clone(),
                    created_at_ms: now_ms,
                });
                if let Some(review) = &prior {
                    summary.review_id = Some(review.id.clone());
                }
                let mut v = Verdict::allow(Step::Risk);
                for c in checked {
                    v = v.with_checked(c);
                }
                v
            }
        };
        let mut outcome = self.outcome(
            verdict,
            built,
            assessment,
            summary,
            inputs,
            notes,
            review_record,
        );
        outcome.history = history;
        Ok(outcome)
    }

    #[allow(clippy::too_many_arguments)]
    fn outcome(
        &self,
        verdict: Verdict,
        built: Built,
        assessment: Option<Assessment>,
        summary: DecisionSummary,
        inputs: &RiskInputs,
        notes: Vec<String>,
        review: Option<Review>,
    ) -> RiskOutcome {
        // With no rules and no risk inputs there is nothing to tell the client: the response
        // stays exactly what a plain facilitator would answer (evidence still has the context).
        let silent = assessment.is_none() && inputs.is_empty();
        let evidence = json!({
            "context": built.context,
            "assessment": assessment,
            "decision": &summary,
            "inputs": inputs_json(inputs),
            "mandate_problems": built.mandate.as_ref().map(|m| &m.problems),
            "review": review,
            "notes": notes,
        });
        RiskOutcome {
            verdict,
            evidence,
            summary: (!silent).then_some(summary),
            history: None,
        }
    }

    /// `POST /risk/evaluate`: scores without side effects (no hold, no claim, no history).
    pub async fn evaluate_dry(
        &self,
        payment: PaymentFacts,
        fingerprint: &str,
        inputs: &RiskInputs,
    ) -> Result<(DecisionSummary, Value), ApiError> {
        let built = match self.build_context(payment, fingerprint, inputs).await {
            Ok(b) => b,
            Err(Refusal::Input(m)) => {
                return Err(ApiError::NotFound(m));
            }
            Err(Refusal::Store(e)) => return Err(ApiError::NotReady(e.public_message().into())),
        };
        let assessment = self.score(&built.context);
        let problems = built
            .mandate
            .as_ref()
            .map(|m| m.problems.clone())
            .unwrap_or_default();
        let (decision, reasons) = if !problems.is_empty() {
            (Decision::Deny, problems)
        } else {
            match &assessment {
                Some(a) => (a.decision, a.reasons.clone()),
                None => (Decision::Allow, Vec::new()),
            }
        };
        let summary = self.summary(decision, assessment.as_ref(), reasons);
        let evidence = json!({
            "context": built.context,
            "assessment": assessment,
            "decision": &summary,
            "inputs": inputs_json(inputs),
        });
        Ok((summary, evidence))
    }
}

/// Whether `dir` holds any rule file (`*.yaml` / `*.yml`): without one nothing is scored and
/// the risk step says so in evidence, rather than refusing to start.
fn has_rule_files(dir: &std::path::Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries.filter_map(Result::ok).any(|e| {
            matches!(
                e.path().extension().and_then(|x| x.to_str()),
                Some("yaml" | "yml")
            )
        })
    })
}

fn reason_text(reasons: &[String]) -> String {
    if reasons.is_empty() {
        "no reason given".into()
    } else {
        reasons.join("; ")
    }
}

fn inputs_json(inputs: &RiskInputs) -> Value {
    json!({
        "sid": inputs.sid,
        "tid": inputs.tid,
        "traceparent": inputs.traceparent,
        "tracestate": inputs.tracestate,
        "mandate": match &inputs.mandate {
            Some(MandateInput::Mandate(m)) => m.clone(),
            Some(MandateInput::Reference { reference, sha256_b64url }) => json!({"reference": reference, "sha256_b64url": sha256_b64url}),
            None => Value::Null,
        },
    })
}

fn refuse_input(code: ReasonCode, message: String, inputs: &RiskInputs) -> RiskOutcome {
    RiskOutcome {
        verdict: Verdict::deny(Step::Risk, Reason::new(code, format!("risk: {message}"))),
        evidence: json!({"context": Value::Null, "assessment": Value::Null, "inputs": inputs_json(inputs), "error": message}),
        summary: None,
        history: None,
    }
}

fn unavailable(error: &StoreError) -> RiskOutcome {
    RiskOutcome {
        verdict: Verdict::deny(
            Step::Risk,
            Reason::new(
                ReasonCode::CheckUnavailable,
                format!("risk check could not run: {}", error.public_message()),
            ),
        ),
        evidence: json!({"context": Value::Null, "assessment": Value::Null, "error": error.to_string()}),
        summary: None,
        history: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x402_secure_names_its_trace_in_the_tracestate() {
        use base64::Engine as _;
        let tid = "3f1c8a52-0d7e-4b8e-9a51-6f2d1c0b7e44";
        // As the Python SDK builds it: json.dumps compact, standard base64, quote(safe="").
        let b64 = base64::engine::general_purpose::STANDARD.encode(format!(r#"{{"tid":"{tid}"}}"#));
        let ts = b64
            .replace('+', "%2B")
            .replace('/', "%2F")
            .replace('=', "%3D");
        assert_eq!(agent_trace_tid(&ts).as_deref(), Some(tid));
        let tp = "00-b5ccb78e8b2640d785213de685ac2644-82516a311157fe39-01";
        let mut headers = HeaderMap::new();
        headers.insert(
            "X-PAYMENT-SECURE",
            format!("w3c.v1;tp={tp};ts={ts}").parse().unwrap(),
        );
        assert_eq!(
            RiskInputs::from_headers(&headers).unwrap().tid.as_deref(),
            Some(tid)
        );
        // An explicit X-RISK-TRACE wins; a W3C tracestate or a non-UUID tid names nothing.
        let other = "0b9a3c1e-1111-4222-8333-944455556666";
        headers.insert("X-RISK-TRACE", other.parse().unwrap());
        assert_eq!(
            RiskInputs::from_headers(&headers).unwrap().tid.as_deref(),
            Some(other)
        );
        assert_eq!(agent_trace_tid("vendor=abc,other=1"), None);
        let not_uuid = base64::engine::general_purpose::STANDARD.encode(r#"{"tid":"x"}"#);
        assert_eq!(agent_trace_tid(&not_uuid), None);
        assert_eq!(agent_trace_tid("%ZZ"), None);
    }

    #[test]
    fn payment_secure_headers_parse_like_x402_secure() {
        let tp = "00-b5ccb78e8b2640d785213de685ac2644-82516a311157fe39-01";
        assert_eq!(
            parse_payment_secure(&format!("w3c.v1;tp={tp};ts=abc")),
            Ok((tp.to_owned(), Some("abc".to_owned())))
        );
        assert!(parse_payment_secure(&format!("w3c.v2;tp={tp}")).is_err());
        assert!(parse_payment_secure("w3c.v1;tp=00-0000-01").is_err());
        assert!(
            parse_payment_secure(
                "w3c.v1;tp=00-00000000000000000000000000000000-82516a311157fe39-01"
            )
            .is_err(),
            "all-zero trace id"
        );
    }

    #[test]
    fn the_extension_fills_what_headers_leave_open() {
        let sid = new_id();
        let mut inputs = RiskInputs::default();
        let payload = json!({"extensions": {EXTENSION: {"info": {"sid": sid, "ap2": {"natural_language_description": "x"}}}}});
        assert!(inputs.merge_extension(&payload).unwrap().is_empty());
        assert_eq!(inputs.sid.as_deref(), Some(sid.as_str()));
        assert!(matches!(inputs.mandate, Some(MandateInput::Mandate(_))));
        let bad = json!({"extensions": {EXTENSION: {"sid": 5}}});
        let err = RiskInputs::default().merge_extension(&bad).unwrap_err();
        assert!(err.contains("gatehouse-risk.sid"), "{err}");
    }
}
