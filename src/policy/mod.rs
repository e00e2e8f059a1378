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

mod config;

pub use config::{Atomic, BreakerConfig, Discovery, MAX_POLICY_AMOUNT, PolicyConfig, Rule};

use alloy::primitives::U256;
use serde_json::json;

use crate::protocol::{Authorization, Payment};
use crate::store::{
    BudgetClaim, BudgetRequest, EndpointPin, EvidenceDraft, Reserve, Store, StoreError,
};
use crate::verdict::{Reason, ReasonCode, Step, Verdict};

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

/// The spending policy, built from the `[policy]` section.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    config: PolicyConfig,
}

impl Policy {
    /// A policy from its configuration.
    pub fn new(config: PolicyConfig) -> Self {
        Self { config }
    }

    /// Whether no policy is configured (every payment passes, and evidence says so).
    pub fn is_empty(&self) -> bool {
        self.config.is_empty()
    }

    /// Runs the policy for `payment`: circuit breakers, static controls, payTo pin, the atomic
    /// reservation, duplicates. `Err` means a check could not run; the pipeline fails closed.
    pub async fn check(
        &self,
        store: &dyn Store,
        payment: &Payment,
        request_id: &str,
        now_ms: u64,
    ) -> Result<PolicyDecision, StoreError> {
        if self.is_empty() {
            return Ok(PolicyDecision {
                verdict: Verdict::allow(Step::Policy).with_checked("no spending policy configured"),
                hold: Hold::None,
            });
        }
        let Some(breaker) = &self.config.breaker else {
            return self.decide(store, payment, request_id, now_ms).await;
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
        let decision = self.decide(store, payment, request_id, now_ms).await?;
        for subject in &subjects {
            if decision.verdict.outcome == crate::verdict::Outcome::Deny {
                store
                    .breaker_violation(subject, breaker.threshold, now_ms)
                    .await?;
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
        request_id: &str,
        now_ms: u64,
    ) -> Result<PolicyDecision, StoreError> {
        let deny = |reason: Reason| PolicyDecision {
            verdict: Verdict::deny(Step::Policy, reason),
            hold: Hold::None,
        };
        let plan = match self.plan(payment, now_ms) {
            Ok(plan) => plan,
            Err(reason) => return Ok(deny(reason)),
        };
        let mut checked = plan.checked.clone();
        if let Some(endpoint) = &plan.endpoint
            && (plan.configured_pin.is_some() || (plan.discovered && self.config.discovery.enabled))
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
                checked.push(format!("endpoint {endpoint} discovered; defaults applied"));
            }
        }
        if plan.counters.is_empty() {
            if let Some(reason) = self.duplicate(store, payment, &plan, now_ms).await? {
                return Ok(deny(reason));
            }
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
        let mut scopes: Vec<(String, Rule)> = vec![("global".into(), c.global.clone())];
        let matched = endpoint.as_ref().and_then(|(host, path)| {
            c.endpoints
                .iter()
                .filter(|r| {
                    r.host
                        .as_deref()
                        .is_some_and(|h| h.eq_ignore_ascii_case(host))
                })
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
                scopes.push((format!("endpoint:{key}"), rule.clone()));
                Some(key)
            }
            (Some((host, path)), None) => {
                let key = format!("{host}{path}");
                if c.discovery.enabled {
                    discovered = true;
                    let d = &c.discovery;
                    scopes.push((
                        format!("endpoint:{key}"),
                        Rule {
                            max_per_request: Some(d.max_per_request),
                            daily_cap: Some(d.daily_cap),
                            requests_per_minute: Some(d.requests_per_minute),
                            ..Rule::default()
                        },
                    ));
                }
                Some(key)
            }
            (None, _) => None,
        };
        for rule in c.payees.iter().filter(|r| {
            r.pay_to
                .as_deref()
                .is_some_and(|p| same_address(p, &payment.pay_to))
        }) {
            scopes.push((format!("payee:{}", norm(&payment.pay_to)), rule.clone()));
        }
        if let Some(payer) = &payment.payer {
            for rule in c
                .payers
                .iter()
                .filter(|r| r.payer.as_deref().is_some_and(|p| same_address(p, payer)))
            {
                scopes.push((format!("payer:{}", norm(payer)), rule.clone()));
            }
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
        let amount = small_amount(payment.amount.0);
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
                        payment.amount, max.0
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
