//! Risk scoring: what the paying agent was doing (its risk session, trace and AP2 mandate)
//! and its history, scored by operator-written rules in `risk-rules/`.
//!
//! The seam between the two halves is [`context::RiskContext`]: the payment path builds it
//! (sessions, traces, mandates, history from the store) and the rule engine evaluates CEL
//! conditions over its JSON form, producing an [`Assessment`] that explains every point.

pub mod cli;
pub mod client;
pub mod config;
pub mod context;
pub mod engine;
pub mod history;
pub mod mandate;
pub mod payment;
pub mod routes;
pub mod rules;
pub mod session;
pub mod trace;

pub use config::RiskConfig;
pub use engine::RuleEngine;
pub use rules::{RuleError, RuleSet, Thresholds};

use serde::{Deserialize, Serialize};

/// What a risk assessment decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// Approve.
    Allow,
    /// Hold for an operator (not an approval).
    Review,
    /// Refuse.
    Deny,
}

/// Coarse level reported to buyers and sellers (`X-Risk-Level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord, Hash)]
#[serde(rename_all = "lowercase")]
pub enum RiskLevel {
    /// Score below the review threshold.
    Low,
    /// Score in the review band.
    Medium,
    /// Score at or above the deny threshold, or a hard deny.
    High,
}

/// Whether a rule changes decisions or is only recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, Hash)]
#[serde(rename_all = "lowercase")]
pub enum RuleMode {
    /// Scored and able to change the decision.
    #[default]
    Enforce,
    /// Scored and recorded, never changes the decision.
    Shadow,
}

/// One rule's part in an assessment (recorded in evidence so a decision can be explained
/// and replayed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Contribution {
    /// The rule's id.
    pub rule: String,
    /// Whether its condition held.
    pub fired: bool,
    /// Points added to the score when fired (0 for hard actions).
    pub weight: u32,
    /// A hard action it imposes when fired (`review` or `deny`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<Decision>,
    /// Enforce or shadow.
    pub mode: RuleMode,
    /// The rule's description (the human explanation), for a rule that fired or failed. Empty
    /// and left out of the record for the others: every verify records every rule, and their
    /// descriptions were most of each evidence record (the rule set's id names the rules).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Set when the condition could not be evaluated (fails closed to `review`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The result of scoring one context.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assessment {
    /// The decision (enforced rules only).
    pub decision: Decision,
    /// The level.
    pub level: RiskLevel,
    /// 0–100, enforced rules only.
    pub score: u32,
    /// What shadow rules would have made of it.
    pub shadow_decision: Decision,
    /// Reasons for buyers/sellers: the ids and descriptions of enforced rules that fired.
    pub reasons: Vec<String>,
    /// Every rule's contribution, fired or not.
    pub contributions: Vec<Contribution>,
    /// Identifies the rule set that decided (content hash), for replay.
    pub rule_set: String,
}
