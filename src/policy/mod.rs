//! Spending policy: static controls (recipient block/allow lists, assets, networks, per-request
//! maximum, payTo pinning) decided in memory, then budget caps (hour/day/month amounts,
//! requests per minute) reserved atomically in the [`Store`], keyed by the payment fingerprint.
//!
//! Lifecycle of a reservation: `/verify` reserves against every cap the payment touches (all
//! or none); `/settle` finds the hold (or reserves it, if no verify was seen), and after the
//! upstream answers the pipeline commits it (settled or outcome unknown) or releases it
//! (failed). A hold not committed by the payment's expiry is swept by the next reservation on
//! the same counter, so correctness needs no background job.
//!
//! Windows are calendar windows in UTC taken from the injected clock: the counter key names the
//! window (`...|day|20413`), so a new day is a new counter and nothing has to be reset.

pub mod admin;
mod config;
pub mod reload;

pub use config::{
    AmountSanity, Atomic, BreakerConfig, Discovery, MAX_POLICY_AMOUNT, PolicyConfig, Rule,
};

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use alloy::primitives::{Address, U256};
use serde_json::json;

use crate::protocol::{Authorization, Payment};
use crate::store::{
    BudgetClaim, BudgetRequest, EndpointPin, EvidenceDraft, Reserve, Store, StoreError,
};
use crate::verdict::{Reason, ReasonCode, Step, Verdict};
use crate::webhook::{self, WebhookEvent};

const MINUTE_MS: u64 = 60_000;
const HOUR_MS: u64 = 3_600_000;
const DAY_MS: u64 = 86_400_000;
/// Hold lifetime when the payment names no usable timeout.
const DEFAULT_HOLD_MS: u64 = 60_000;

/// What the policy step concluded, and whether this request now owns a reservation.
#[derive(Debug, Clone)]
pub struct PolicyDecision {
    /// The verdict for the pipeline.
    pub verdict: Verdict,
    /// What happened to the budget.
    pub hold: Hold,
}

/// The reservation state after a policy check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// No caps apply (or the payment was refused): nothing held.
    None,
    /// This request made the reservation; it releases it if the payment is refused later.
    Fresh,
    /// An earlier request (a verify of the same payment) holds it.
    Existing,
}

/// The static part of a decision: which scopes apply and what to reserve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Caps to reserve.
    pub counters: Vec<BudgetClaim>,
    /// The endpoint (`host/path`), when the payment names a resource.
    pub endpoint: Option<String>,
    /// The payTo pinned in config for the matching endpoint.
    pub configured_pin: Option<String>,
    /// Whether the endpoint is unlisted and got the discovery defaults.
    pub discovered: bool,
    /// What was checked, for evidence.
    pub checked: Vec<String>,
    /// When the reservation lapses.
    pub expires_at_ms: u64,
}

/// A budget the buyer declared for one risk session: every payment made in the session takes
/// from the counter `session:<session_id>|<asset>` (no window: the session's whole life), in
/// the same atomic reservation as the other caps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionBudget {
    /// The risk session.
    pub session_id: String,
    /// The session's cap, in atomic units of the payment's asset.
    pub cap: Atomic,
}

impl SessionBudget {
    /// The counter key for payments in `asset` (compared as [`PolicyConfig`] addresses are).
    pub fn counter_key(&self, asset: &str) -> String {
        format!("session:{}|{}", self.session_id, norm(asset))
    }
}

/// The spending policy, built from the `[policy]` section, with its scopes indexed so a
/// payment's evaluation costs the same with ten or ten thousand configured endpoints.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    config: PolicyConfig,
    /// Lower-case endpoint host → indexes into `config.endpoints`.
    hosts: HashMap<String, Vec<usize>>,
    /// Normalised payTo → indexes into `config.payees`.
    payees: HashMap<String, Vec<usize>>,
    /// Normalised payer → indexes into `config.payers`.
    payers: HashMap<String, Vec<usize>>,
}

/// The policy in force, swappable at runtime (hot reload, admin API). Each request clones the
/// current `Arc` once, so a swap never changes a decision half-way.
#[derive(Debug, Clone, Default)]
pub struct PolicyHandle {
    inner: Arc<RwLock<Arc<Policy>>>,
}

impl PolicyHandle {
    /// A handle holding `policy`.
    pub fn new(policy: Policy) -> Self {
        Self {
            inner: Arc::new(RwLock::new(Arc::new(policy))),
        }
    }

    /// The policy in force now.
    pub fn current(&self) -> Arc<Policy> {
        // A poisoned lock only means a writer panicked between two whole-`Arc` stores; the
        // value inside is still a complete policy.
        match self.inner.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Puts `policy` in force; returns the one it replaced.
    pub fn replace(&self, policy: Policy) -> Arc<Policy> {
        let next = Arc::new(policy);
        let mut guard = match self.inner.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        std::mem::replace(&mut *guard, next)
    }
}

impl Policy {
    /// A policy from its configuration (indexes built once, here).
    pub fn new(config: PolicyConfig) -> Self {
        let mut hosts: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, rule) in config.endpoints.iter().enumerate() {
            if let Some(host) = &rule.host {
                hosts.entry(host.to_ascii_lowercase()).or_default().push(i);
            }
        }
        let mut payees: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, rule) in config.payees.iter().enumerate() {
            if let Some(pay_to) = &rule.pay_to {
                payees.entry(norm(pay_to)).or_default().push(i);
            }
        }
        let mut payers: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, rule) in config.payers.iter().enumerate() {
            if let Some(payer) = &rule.payer {
                payers.entry(norm(payer)).or_default().push(i);
            }
        }
        Self {
            config,
            hosts,
            payees,
            payers,
        }
    }

    /// The configuration this policy was built from.
    pub fn config(&self) -> &PolicyConfig {
        &self.config
    }

    /// The asset's decimals: from the payment, `policy.amounts.decimals`, the built-in EVM
    /// token table, or the known Solana USDC mints.
    pub fn decimals(&self, payment: &Payment) -> Option<u8> {
        if let Some(d) = payment.decimals {
            return Some(d);
        }
        let configured = self
            .config
            .amounts
            .decimals
            .iter()
            .find(|(asset, _)| same_address(asset, &payment.asset))
            .map(|(_, d)| *d);
        if configured.is_some() {
            return configured;
        }
        if let Some(chain_id) = payment.evm_chain_id() {
            let address = payment.asset.parse::<Address>().ok()?;
            return crate::chain::evm::asset_decimals(chain_id, address);
        }
        let caip2 = payment.network.caip2.to_string();
        crate::chain::svm::networks::usdc_mint(&caip2)
            .filter(|mint| *mint == payment.asset)
            .map(|_| 6)
    }

    /// Whether no policy is configured (every payment passes, and evidence says so).
    pub fn is_empty(&self) -> bool {
        self.config.is_empty()
    }

    /// Runs the policy for `payment`: circuit breakers, static controls, payTo pin, amount
    /// sanity, the atomic reservation (including the risk session's budget, when the buyer
    /// declared one), duplicates. `Err` means a check could not run; the pipeline fails closed.
    pub async fn check(
        &self,
        store: &dyn Store,
        payment: &Payment,
        session: Option<&SessionBudget>,
        request_id: &str,
        now_ms: u64,
    ) -> Result<PolicyDecision, StoreError> {
        if self.is_empty() && session.is_none() {
            return Ok(PolicyDecision {
                verdict: Verdict::allow(Step::Policy).with_checked("no spending policy configured"),
                hold: Hold::None,
            });
        }
        let Some(breaker) = &self.config.breaker else {
            return self
                .decide(store, payment, session, request_id, now_ms)
                .await;
        };
        let subjects = breaker_subjects(payment);
        for subject in &subjects {
            let Some(record) = store.breaker(subject).await? else {
                continue;
            };
            if record.state != "open" {
                continue;
            }
            let reopens_at = u64::try_from(record.opened_at_ms)
                .unwrap_or(0)
                .saturating_add(breaker.cooldown_secs.saturating_mul(1000));
            if now_ms < reopens_at {
                return Ok(PolicyDecision {
                    verdict: Verdict::deny(
                        Step::Policy,
                        Reason::new(
                            ReasonCode::Policy("policy_circuit_open"),
                            format!(
                                "the circuit breaker for {subject} is open after {} consecutive policy violations; it half-opens at {reopens_at} ms or on an admin reset",
                                record.failures
                            ),
                        ),
                    ),
                    hold: Hold::None,
                });
            }
            store.breaker_half_open(subject, now_ms).await?;
        }
        let decision = self
            .decide(store, payment, session, request_id, now_ms)
            .await?;
        for subject in &subjects {
            if decision.verdict.outcome == crate::verdict::Outcome::Deny {
                let record = store
                    .breaker_violation(subject, breaker.threshold, now_ms)
                    .await?;
                let opened_now = record.state == "open"
                    && u64::try_from(record.opened_at_ms).is_ok_and(|at| at == now_ms);
                if opened_now {
                    let reason = decision.verdict.reasons.first().map(|r| r.code.code());
                    webhook::enqueue(
                        store,
                        WebhookEvent::BreakerOpened,
                        json!({
                            "subject": subject,
                            "failures": record.failures,
                            "cooldown_secs": breaker.cooldown_secs,
                            "last_reason": reason,
                            "fingerprint": payment.fingerprint.0,
                        }),
                        now_ms,
                    )
                    .await?;
                }
            } else {
                store.breaker_success(subject, now_ms).await?;
            }
        }
        Ok(decision)
    }

    /// Admin reset of a breaker (`payer:<address>` or `endpoint:<host/path>`); true if one
    /// existed.
    pub async fn reset_breaker(
        &self,
        store: &dyn Store,
        subject: &str,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        store.reset_breaker(subject, now_ms).await
    }

    async fn decide(
        &self,
        store: &dyn Store,
        payment: &Payment,
        session: Option<&SessionBudget>,
        request_id: &str,
        now_ms: u64,
    ) -> Result<PolicyDecision, StoreError> {
        let deny = |reason: Reason| PolicyDecision {
            verdict: Verdict::deny(Step::Policy, reason),
            hold: Hold::None,
        };
        let mut plan = match self.plan(payment, now_ms) {
            Ok(plan) => plan,
            Err(reason) => return Ok(deny(reason)),
        };
        if let Some(session) = session {
            let Some(amount) = small_amount(worst_case_amount(payment)) else {
                return Ok(deny(Reason::new(
                    ReasonCode::Policy("policy_cap_exceeded"),
                    format!(
                        "amount {} exceeds the budget {} of risk session {}",
                        payment.amount, session.cap.0, session.session_id
                    ),
                )));
            };
            plan.counters.push(BudgetClaim {
                key: session.counter_key(&payment.asset),
                cap: session.cap.0,
                amount,
            });
            plan.checked
                .push(format!("risk session {} budget", session.session_id));
        }
        let mut checked = plan.checked.clone();
        if let Some(endpoint) = &plan.endpoint
            && (plan.configured_pin.is_some() || plan.discovered)
        {
            let pin = EndpointPin {
                endpoint: endpoint.clone(),
                pay_to: plan
                    .configured_pin
                    .clone()
                    .unwrap_or_else(|| payment.pay_to.clone()),
                source: if plan.configured_pin.is_some() {
                    "config"
                } else {
                    "first_use"
                },
                now_ms,
            };
            let pinned = store.pin_endpoint(&pin).await?;
            let pinned_to = plan.configured_pin.as_deref().unwrap_or(&pinned.pay_to);
            if !same_address(pinned_to, &payment.pay_to) {
                webhook::enqueue(
                    store,
                    WebhookEvent::PinChangedBlocked,
                    json!({
                        "endpoint": endpoint,
                        "pinned_pay_to": pinned_to,
                        "offered_pay_to": payment.pay_to,
                        "payer": payment.payer,
                        "fingerprint": payment.fingerprint.0,
                    }),
                    now_ms,
                )
                .await?;
                return Ok(deny(Reason::new(
                    ReasonCode::Policy("policy_payto_changed"),
                    format!(
                        "payTo {} differs from {} pinned for endpoint {endpoint}; the change is blocked until an operator re-pins it",
                        payment.pay_to, pinned_to
                    ),
                )));
            }
            checked.push(format!("payTo pinned for {endpoint}"));
            if pinned.created && plan.discovered {
                store
                    .append_evidence(EvidenceDraft {
                        kind: "policy_discovery".into(),
                        gate: None,
                        fingerprint: Some(payment.fingerprint.clone()),
                        decision: "discovered".into(),
                        request_id: request_id.to_owned(),
                        created_at_ms: now_ms,
                        body: json!({
                            "endpoint": endpoint,
                            "pay_to": payment.pay_to,
                            "defaults": &self.config.discovery,
                        }),
                    })
                    .await?;
                webhook::enqueue(
                    store,
                    WebhookEvent::EndpointDiscovered,
                    json!({
                        "endpoint": endpoint,
                        "pay_to": payment.pay_to,
                        "defaults": &self.config.discovery,
                    }),
                    now_ms,
                )
                .await?;
                checked.push(format!("endpoint {endpoint} discovered; defaults applied"));
            }
        }
        if let Some(reason) = self.amount_out_of_range(store, payment, &plan).await? {
            return Ok(deny(reason));
        }
        if self.config.amounts.range_factor > 0 {
            checked.push("amount within the endpoint's usual range".into());
        }
        if plan.counters.is_empty() {
            if let Some(reason) = self.duplicate(store, payment, &plan, now_ms).await? {
                return Ok(deny(reason));
            }
            self.learn_amount(store, payment, &plan, now_ms).await?;
            let mut verdict = Verdict::allow(Step::Policy);
            verdict.checked = checked;
            return Ok(PolicyDecision {
                verdict,
                hold: Hold::None,
            });
        }
        let request = BudgetRequest {
            fingerprint: payment.fingerprint.clone(),
            counters: plan.counters.clone(),
            expires_at_ms: plan.expires_at_ms,
            now_ms,
        };
        let hold = match store.reserve_budget(&request).await? {
            Reserve::Reserved => Hold::Fresh,
            Reserve::AlreadyHeld => Hold::Existing,
            Reserve::Exceeded {
                key,
                used,
                reserved,
                cap,
            } => return Ok(deny(exceeded(&key, used, reserved, cap))),
        };
        if let Some(reason) = self.duplicate(store, payment, &plan, now_ms).await? {
            if hold == Hold::Fresh {
                store.release_budget(&payment.fingerprint, now_ms).await?;
            }
            return Ok(deny(reason));
        }
        self.learn_amount(store, payment, &plan, now_ms).await?;
        checked.push(format!(
            "reserved against {} cap(s): {}",
            plan.counters.len(),
            plan.counters
                .iter()
                .map(|c| c.key.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
        let mut verdict = Verdict::allow(Step::Policy);
        verdict.checked = checked;
        Ok(PolicyDecision { verdict, hold })
    }

    /// Amount sanity: once an endpoint has `min_samples` approved payments in an asset, an
    /// amount above their maximum × `range_factor` or below their minimum ÷ `range_factor` is
    /// refused (a seller suddenly asking 100× its usual price is the classic drain).
    async fn amount_out_of_range(
        &self,
        store: &dyn Store,
        payment: &Payment,
        plan: &Plan,
    ) -> Result<Option<Reason>, StoreError> {
        let sanity = &self.config.amounts;
        let (factor, Some(endpoint)) = (i64::from(sanity.range_factor), plan.endpoint.as_deref())
        else {
            return Ok(None);
        };
        if factor == 0 {
            return Ok(None);
        }
        let Some(range) = store.amount_range(endpoint, &norm(&payment.asset)).await? else {
            return Ok(None);
        };
        if range.samples < i64::from(sanity.min_samples) {
            return Ok(None);
        }
        let amount = small_amount(worst_case_amount(payment));
        let too_high = amount.is_none_or(|a| a > range.max.saturating_mul(factor));
        let too_low = amount.is_some_and(|a| a.saturating_mul(factor) < range.min);
        if !(too_high || too_low) {
            return Ok(None);
        }
        Ok(Some(Reason::new(
            ReasonCode::Policy("policy_amount_out_of_range"),
            format!(
                "amount {} is outside the usual range of {endpoint} ({}..{} over {} payments, factor {factor})",
                worst_case_amount(payment),
                range.min,
                range.max,
                range.samples
            ),
        )))
    }

    /// Teaches the endpoint's amount range from an approved payment.
    async fn learn_amount(
        &self,
        store: &dyn Store,
        payment: &Payment,
        plan: &Plan,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        if self.config.amounts.range_factor == 0 {
            return Ok(());
        }
        let (Some(endpoint), Some(amount)) = (
            plan.endpoint.as_deref(),
            small_amount(worst_case_amount(payment)),
        ) else {
            return Ok(());
        };
        store
            .learn_amount(endpoint, &norm(&payment.asset), amount, now_ms)
            .await
    }

    /// Refuses a different payment from the same payer to the same endpoint within the
    /// configured window (checked after the reservation, so a refused payment leaves no mark).
    async fn duplicate(
        &self,
        store: &dyn Store,
        payment: &Payment,
        plan: &Plan,
        now_ms: u64,
    ) -> Result<Option<Reason>, StoreError> {
        let (Some(window_secs), Some(payer), Some(endpoint)) = (
            self.config.duplicate_window_secs,
            payment.payer.as_deref(),
            plan.endpoint.as_deref(),
        ) else {
            return Ok(None);
        };
        let key = format!("{}|{endpoint}", norm(payer));
        let window_ms = window_secs.saturating_mul(1000);
        if store
            .note_recent(&key, &payment.fingerprint, window_ms, now_ms)
            .await?
        {
            return Ok(None);
        }
        Ok(Some(Reason::new(
            ReasonCode::Policy("policy_duplicate_payment"),
            format!(
                "payer {payer} already paid for {endpoint} within the last {window_secs} s; a second payment is refused as a duplicate"
            ),
        )))
    }

    /// The static decision: refuses on lists, assets, networks and per-request maxima, and
    /// otherwise names the caps to reserve. Pure, so every control is unit-tested.
    pub fn plan(&self, payment: &Payment, now_ms: u64) -> Result<Plan, Reason> {
        let c = &self.config;
        let endpoint = payment.resource.as_deref().and_then(endpoint_of);
        let mut scopes: Vec<(String, Cow<'_, Rule>)> =
            vec![("global".into(), Cow::Borrowed(&c.global))];
        // Indexed by host, so the cost does not grow with the number of endpoints.
        let matched = endpoint.as_ref().and_then(|(host, path)| {
            self.hosts
                .get(host.as_str())?
                .iter()
                .map(|&i| &c.endpoints[i])
                .filter(|r| r.path_prefix.as_deref().is_none_or(|p| path.starts_with(p)))
                .max_by_key(|r| r.path_prefix.as_deref().map_or(0, str::len))
        });
        let mut configured_pin = None;
        let mut discovered = false;
        let endpoint_key = match (&endpoint, matched) {
            (Some(_), Some(rule)) => {
                let key = format!(
                    "{}{}",
                    rule.host
                        .as_deref()
                        .unwrap_or_default()
                        .to_ascii_lowercase(),
                    rule.path_prefix.as_deref().unwrap_or("")
                );
                configured_pin = rule.pay_to.clone();
                scopes.push((format!("endpoint:{key}"), Cow::Borrowed(rule)));
                Some(key)
            }
            (Some((host, path)), None) => {
                let key = format!("{host}{path}");
                // An empty policy (only a risk session's budget) discovers nothing.
                if c.discovery.enabled && !self.is_empty() {
                    discovered = true;
                    let d = &c.discovery;
                    scopes.push((
                        format!("endpoint:{key}"),
                        Cow::Owned(Rule {
                            max_per_request: Some(d.max_per_request),
                            daily_cap: Some(d.daily_cap),
                            requests_per_minute: Some(d.requests_per_minute),
                            ..Rule::default()
                        }),
                    ));
                }
                Some(key)
            }
            (None, _) => None,
        };
        let pay_to_key = norm(&payment.pay_to);
        for &i in self.payees.get(&pay_to_key).into_iter().flatten() {
            scopes.push((format!("payee:{pay_to_key}"), Cow::Borrowed(&c.payees[i])));
        }
        if let Some(payer) = &payment.payer {
            let payer_key = norm(payer);
            for &i in self.payers.get(&payer_key).into_iter().flatten() {
                scopes.push((format!("payer:{payer_key}"), Cow::Borrowed(&c.payers[i])));
            }
        }
        if c.amounts.require_known_decimals && self.decimals(payment).is_none() {
            return Err(Reason::new(
                ReasonCode::Policy("policy_unknown_decimals"),
                format!(
                    "the decimals of asset {} on {} are not known; add it to policy.amounts.decimals",
                    payment.asset, payment.network.caip2
                ),
            ));
        }

        let mut checked = vec![format!(
            "scopes: {}",
            scopes
                .iter()
                .map(|(s, _)| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )];
        // The blocklist wins over everything, so it is checked across all scopes first.
        for (scope, rule) in &scopes {
            if rule
                .block_recipients
                .iter()
                .any(|b| same_address(b, &payment.pay_to))
            {
                return Err(Reason::new(
                    ReasonCode::Policy("policy_recipient_blocked"),
                    format!("recipient {} is blocklisted ({scope})", payment.pay_to),
                ));
            }
        }
        checked.push("recipient blocklists".into());
        let network = payment.network.caip2.to_string();
        // The worst case the payer signed for: the larger of the required and authorised amounts.
        let amount = small_amount(worst_case_amount(payment));
        for (scope, rule) in &scopes {
            if !rule.allow_recipients.is_empty()
                && !rule
                    .allow_recipients
                    .iter()
                    .any(|a| same_address(a, &payment.pay_to))
            {
                return Err(Reason::new(
                    ReasonCode::Policy("policy_recipient_not_allowed"),
                    format!(
                        "recipient {} is not on the allowlist ({scope})",
                        payment.pay_to
                    ),
                ));
            }
            if !rule.allowed_assets.is_empty()
                && !rule
                    .allowed_assets
                    .iter()
                    .any(|a| same_address(a, &payment.asset))
            {
                return Err(Reason::new(
                    ReasonCode::Policy("policy_asset_not_allowed"),
                    format!("asset {} is not allowed ({scope})", payment.asset),
                ));
            }
            if !rule.allowed_networks.is_empty() && !rule.allowed_networks.contains(&network) {
                return Err(Reason::new(
                    ReasonCode::Policy("policy_network_not_allowed"),
                    format!("network {network} is not allowed ({scope})"),
                ));
            }
            if let Some(max) = rule.max_per_request
                && amount.is_none_or(|a| a > max.0)
            {
                return Err(Reason::new(
                    ReasonCode::Policy("policy_max_per_request"),
                    format!(
                        "amount {} exceeds the per-request maximum {} ({scope})",
                        worst_case_amount(payment),
                        max.0
                    ),
                ));
            }
        }
        checked.push("allowlists, assets, networks, per-request maximum".into());

        let asset = norm(&payment.asset);
        let mut counters = Vec::new();
        for (scope, rule) in &scopes {
            for (period, cap) in [
                ("hour", rule.hourly_cap),
                ("day", rule.daily_cap),
                ("month", rule.monthly_cap),
            ] {
                let Some(cap) = cap else { continue };
                let Some(amount) = amount else {
                    return Err(Reason::new(
                        ReasonCode::Policy("policy_cap_exceeded"),
                        format!(
                            "amount {} exceeds the {period} cap {} ({scope})",
                            payment.amount, cap.0
                        ),
                    ));
                };
                counters.push(BudgetClaim {
                    key: format!("{scope}|{asset}|{period}|{}", window(period, now_ms)),
                    cap: cap.0,
                    amount,
                });
            }
            if let Some(rpm) = rule.requests_per_minute {
                counters.push(BudgetClaim {
                    key: format!("{scope}|*|minute|{}", now_ms / MINUTE_MS),
                    cap: i64::from(rpm),
                    amount: 1,
                });
            }
        }
        Ok(Plan {
            counters,
            endpoint: endpoint_key,
            configured_pin,
            discovered,
            checked,
            expires_at_ms: hold_expiry(payment, now_ms),
        })
    }
}

/// The most the payment can move: the required amount, or the signed authorisation's amount
/// when that is larger (normally they are equal; the chain step checks the exact relation).
pub fn worst_case_amount(payment: &Payment) -> U256 {
    let authorised = match &payment.authorization {
        Authorization::Eip3009 { value, .. } => Some(value.0),
        Authorization::Permit2 { amount, .. } => Some(amount.0),
        Authorization::SvmTransaction { .. } => None,
    };
    authorised.map_or(payment.amount.0, |a| a.max(payment.amount.0))
}

/// The breakers a payment answers to: its payer's and its endpoint's.
fn breaker_subjects(payment: &Payment) -> Vec<String> {
    let mut subjects = Vec::new();
    if let Some(payer) = &payment.payer {
        subjects.push(format!("payer:{}", norm(payer)));
    }
    if let Some((host, path)) = payment.resource.as_deref().and_then(endpoint_of) {
        subjects.push(format!("endpoint:{host}{path}"));
    }
    subjects
}

fn exceeded(key: &str, used: i64, reserved: i64, cap: i64) -> Reason {
    let mut parts = key.split('|');
    let scope = parts.next().unwrap_or(key);
    let period = parts.nth(1).unwrap_or("");
    if period == "minute" {
        Reason::new(
            ReasonCode::Policy("policy_rate_limited"),
            format!("{scope} allows {cap} payments per minute; try again in the next minute"),
        )
    } else {
        Reason::new(
            ReasonCode::Policy("policy_cap_exceeded"),
            format!(
                "the {period} cap for {scope} is {cap}; {used} is spent and {reserved} reserved, so this payment does not fit"
            ),
        )
    }
}

/// The window index for `period` at `now_ms` (UTC calendar windows).
fn window(period: &str, now_ms: u64) -> u64 {
    match period {
        "hour" => now_ms / HOUR_MS,
        "day" => now_ms / DAY_MS,
        "month" => {
            let (year, month) = civil_month(now_ms / DAY_MS);
            year * 12 + month
        }
        _ => now_ms / MINUTE_MS,
    }
}

/// (year, month 0-11) of a day count since 1970-01-01 (Hinnant's civil-from-days).
fn civil_month(days: u64) -> (u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month - 1)
}

/// The payment's lifetime: `maxTimeoutSeconds` from now, but never past `validBefore`.
fn hold_expiry(payment: &Payment, now_ms: u64) -> u64 {
    let timeout_ms = match payment.max_timeout_secs {
        0 => DEFAULT_HOLD_MS,
        secs => secs.saturating_mul(1000),
    };
    let mut expiry = now_ms.saturating_add(timeout_ms);
    let valid_before = match &payment.authorization {
        Authorization::Eip3009 {
            valid_before_secs, ..
        } => Some(*valid_before_secs),
        Authorization::Permit2 { deadline_secs, .. } => Some(*deadline_secs),
        Authorization::SvmTransaction { .. } => None,
    };
    if let Some(secs) = valid_before {
        expiry = expiry.min(secs.saturating_mul(1000));
    }
    expiry.max(now_ms.saturating_add(1000))
}

fn small_amount(amount: U256) -> Option<i64> {
    i64::try_from(amount)
        .ok()
        .filter(|a| *a <= MAX_POLICY_AMOUNT)
}

/// `host/path` of a resource URL (query and fragment dropped), lower-case host.
fn endpoint_of(resource: &str) -> Option<(String, String)> {
    let url = reqwest::Url::parse(resource).ok()?;
    let host = url.host_str()?.to_ascii_lowercase();
    let host = match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host,
    };
    Some((host, url.path().to_owned()))
}

/// EVM addresses compare case-insensitively; base58 (Solana) is case-sensitive.
fn same_address(a: &str, b: &str) -> bool {
    if a.starts_with("0x") || a.starts_with("0X") {
        a.eq_ignore_ascii_case(b)
    } else {
        a == b
    }
}

fn norm(address: &str) -> String {
    if address.starts_with("0x") || address.starts_with("0X") {
        address.to_ascii_lowercase()
    } else {
        address.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_follow_the_calendar() {
        // 2026-11-21 is day 20778; 2026-12-01 is 20788; 2024-02-29 is 19782.
        assert_eq!(civil_month(20_778), (2026, 10));
        assert_eq!(civil_month(20_788), (2026, 11));
        assert_eq!(civil_month(20_787), (2026, 10));
        assert_eq!(window("month", 20_788 * DAY_MS), 2026 * 12 + 11);
        assert_eq!(window("day", 20_788 * DAY_MS - 1), 20_787);
        assert_eq!(civil_month(19_782), (2024, 1));
        assert_eq!(civil_month(0), (1970, 0));
    }

    #[test]
    fn endpoints_keep_host_and_path_only() {
        assert_eq!(
            endpoint_of("https://API.example.com/premium?x=1"),
            Some(("api.example.com".into(), "/premium".into()))
        );
        assert_eq!(endpoint_of("not a url"), None);
    }

    #[test]
    fn addresses_compare_by_family() {
        assert!(same_address("0xABc", "0xabc"));
        assert!(!same_address("AbC", "abc"));
    }
}
