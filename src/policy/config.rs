//! The `[policy]` config section. Amounts are atomic units written as decimal strings (money is
//! never a float); every list and scope is optional, and an empty section checks nothing.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::ConfigProblem;
use crate::protocol::Caip2;

/// Largest amount or cap accepted: counters add three of these in a 64-bit column.
pub const MAX_POLICY_AMOUNT: i64 = i64::MAX / 4;

/// An amount in atomic units, written as a decimal string (`"1000000"` is 1 USDC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Atomic(pub i64);

impl Serialize for Atomic {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Atomic {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(serde::de::Error::custom(format!(
                "`{text}` is not an amount in atomic units (a decimal integer string)"
            )));
        }
        match text.parse::<i64>() {
            Ok(v) if v <= MAX_POLICY_AMOUNT => Ok(Self(v)),
            _ => Err(serde::de::Error::custom(format!(
                "`{text}` exceeds the largest supported amount ({MAX_POLICY_AMOUNT})"
            ))),
        }
    }
}

/// The controls one scope applies. Every field is optional; unset means "not limited here".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Rule {
    /// Endpoint scope: the resource URL's host (`[[policy.endpoints]]` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Endpoint scope: a path prefix under `host`; the longest matching prefix wins.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    /// In `[[policy.payees]]` the recipient the rule is for; in `[[policy.endpoints]]` the
    /// recipient pinned for the endpoint (a payment to another payTo is refused).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pay_to: Option<String>,
    /// Payer scope (`[[policy.payers]]` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payer: Option<String>,
    /// Largest amount of one payment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_per_request: Option<Atomic>,
    /// Cap per clock hour (UTC).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hourly_cap: Option<Atomic>,
    /// Cap per calendar day; resets at midnight UTC.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub daily_cap: Option<Atomic>,
    /// Cap per calendar month (UTC).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub monthly_cap: Option<Atomic>,
    /// Payments per clock minute.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests_per_minute: Option<u32>,
    /// If non-empty, only these recipients may be paid.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allow_recipients: Vec<String>,
    /// Recipients never to be paid; wins over every allowlist.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub block_recipients: Vec<String>,
    /// If non-empty, only these assets (contract or mint).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allowed_assets: Vec<String>,
    /// If non-empty, only these CAIP-2 networks.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allowed_networks: Vec<String>,
}

/// Limits given to an endpoint seen for the first time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Discovery {
    /// Whether unseen endpoints get a policy of their own (and their payTo is pinned on first
    /// use). Default: true when any policy is configured.
    pub enabled: bool,
    /// Default 1 USDC.
    pub max_per_request: Atomic,
    /// Default 10 USDC.
    pub daily_cap: Atomic,
    /// Default 10.
    pub requests_per_minute: u32,
}

impl Default for Discovery {
    fn default() -> Self {
        Self {
            enabled: true,
            max_per_request: Atomic(1_000_000),
            daily_cap: Atomic(10_000_000),
            requests_per_minute: 10,
        }
    }
}

/// The `[policy]` section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Applies to every payment.
    pub global: Rule,
    /// Per endpoint (resource host and optional path prefix).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<Rule>,
    /// Per recipient.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub payees: Vec<Rule>,
    /// Per payer.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub payers: Vec<Rule>,
    /// Defaults for endpoints not listed in `endpoints`.
    pub discovery: Discovery,
    /// A second, different payment from the same payer to the same endpoint within this many
    /// seconds is refused as a duplicate. Unset: no duplicate detection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duplicate_window_secs: Option<u64>,
    /// Circuit breakers per payer and per endpoint. Unset: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub breaker: Option<BreakerConfig>,
    /// Amount sanity (`[policy.amounts]`): known decimals and the endpoint's usual range.
    #[serde(skip_serializing_if = "AmountSanity::is_off")]
    pub amounts: AmountSanity,
}

/// `[policy.amounts]`: refuse amounts that make no sense. Off by default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AmountSanity {
    /// Refuse payments in an asset whose decimals are unknown (neither built in nor listed in
    /// `decimals`). Default false.
    pub require_known_decimals: bool,
    /// Decimals of further assets, by contract address or mint.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub decimals: BTreeMap<String, u8>,
    /// Once an endpoint has `min_samples` approved payments in an asset, an amount above their
    /// maximum × this factor or below their minimum ÷ this factor is refused. 0 (default): off.
    pub range_factor: u32,
    /// Approved payments an endpoint needs before its range is enforced. Default 5.
    pub min_samples: u32,
}

impl Default for AmountSanity {
    fn default() -> Self {
        Self {
            require_known_decimals: false,
            decimals: BTreeMap::new(),
            range_factor: 0,
            min_samples: 5,
        }
    }
}

impl AmountSanity {
    /// Whether nothing is checked (the default).
    pub fn is_off(&self) -> bool {
        *self == Self::default()
    }
}

/// `[policy.breaker]`: consecutive policy violations open a breaker for the payer or endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// Consecutive violations that open it. Default 5.
    pub threshold: u32,
    /// Seconds an open breaker refuses everything before it turns half-open. Default 300.
    pub cooldown_secs: u64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            threshold: 5,
            cooldown_secs: 300,
        }
    }
}

impl PolicyConfig {
    /// Whether anything is configured at all (an empty section checks nothing).
    pub fn is_empty(&self) -> bool {
        self.global == Rule::default()
            && self.duplicate_window_secs.is_none()
            && self.breaker.is_none()
            && self.amounts.is_off()
            && self.endpoints.is_empty()
            && self.payees.is_empty()
            && self.payers.is_empty()
    }

    /// Every problem with the section, naming the key.
    pub fn problems(&self) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        let mut push = |key: String, message: &str| {
            out.push(ConfigProblem {
                key,
                message: message.to_owned(),
            })
        };
        let g = &self.global;
        if g.host.is_some() || g.path_prefix.is_some() || g.pay_to.is_some() || g.payer.is_some() {
            push(
                "policy.global".into(),
                "takes no host, path_prefix, pay_to or payer (use endpoints, payees or payers)",
            );
        }
        for (i, r) in self.endpoints.iter().enumerate() {
            if r.host.as_deref().is_none_or(str::is_empty) {
                push(format!("policy.endpoints[{i}].host"), "is required");
            }
            if r.path_prefix
                .as_deref()
                .is_some_and(|p| !p.starts_with('/'))
            {
                push(
                    format!("policy.endpoints[{i}].path_prefix"),
                    "must start with /",
                );
            }
            if r.payer.is_some() {
                push(
                    format!("policy.endpoints[{i}].payer"),
                    "is not allowed here",
                );
            }
        }
        for (i, r) in self.payees.iter().enumerate() {
            if r.pay_to.as_deref().is_none_or(str::is_empty) {
                push(format!("policy.payees[{i}].pay_to"), "is required");
            }
            if r.host.is_some() || r.path_prefix.is_some() || r.payer.is_some() {
                push(
                    format!("policy.payees[{i}]"),
                    "takes only pay_to as its selector",
                );
            }
        }
        for (i, r) in self.payers.iter().enumerate() {
            if r.payer.as_deref().is_none_or(str::is_empty) {
                push(format!("policy.payers[{i}].payer"), "is required");
            }
            if r.host.is_some() || r.path_prefix.is_some() || r.pay_to.is_some() {
                push(
                    format!("policy.payers[{i}]"),
                    "takes only payer as its selector",
                );
            }
        }
        for (asset, decimals) in &self.amounts.decimals {
            if *decimals > 36 {
                push(
                    format!("policy.amounts.decimals.\"{asset}\""),
                    "must be at most 36",
                );
            }
        }
        if self.amounts.range_factor > 0 && self.amounts.min_samples == 0 {
            push(
                "policy.amounts.min_samples".into(),
                "must be at least 1 when range_factor is set",
            );
        }
        if let Some(b) = &self.breaker
            && b.threshold == 0
        {
            push("policy.breaker.threshold".into(), "must be at least 1");
        }
        let all = std::iter::once(("policy.global".to_owned(), g))
            .chain(
                self.endpoints
                    .iter()
                    .enumerate()
                    .map(|(i, r)| (format!("policy.endpoints[{i}]"), r)),
            )
            .chain(
                self.payees
                    .iter()
                    .enumerate()
                    .map(|(i, r)| (format!("policy.payees[{i}]"), r)),
            )
            .chain(
                self.payers
                    .iter()
                    .enumerate()
                    .map(|(i, r)| (format!("policy.payers[{i}]"), r)),
            );
        for (key, rule) in all {
            for (j, n) in rule.allowed_networks.iter().enumerate() {
                if n.parse::<Caip2>().is_err() {
                    push(
                        format!("{key}.allowed_networks[{j}]"),
                        "is not a CAIP-2 network id",
                    );
                }
            }
        }
        out
    }
}
