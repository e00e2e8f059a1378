//! The `[risk]` configuration section: where the rules live, the score thresholds that turn a
//! score into a decision, and how often the rule directory is polled for changes.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::ConfigProblem;

use super::rules::Thresholds;

/// `[risk]`: rule directory, thresholds and hot reload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RiskConfig {
    /// Directory of risk rules (`*.yaml` / `*.yml`, CEL conditions). Also `GATEHOUSE_RULES_DIR`.
    pub rules_dir: PathBuf,
    /// A score at or above this is held for review (0–100).
    pub review_at: u32,
    /// A score at or above this is denied (0–100, at least `review_at`).
    pub deny_at: u32,
    /// How often the rule directory is checked for changes, in seconds (0: never reload).
    pub reload_secs: u64,
    // --- the buyer API and payment path (risk sessions, traces, mandates) ---
    /// Lifetime of a risk session, seconds.
    pub session_ttl_secs: u64,
    /// Lifetime of a wallet-proof nonce, seconds.
    pub nonce_ttl_secs: u64,
    /// Store only SHA-256 digests of trace texts (the privacy option).
    pub hash_text_at_ingest: bool,
    /// Most events one trace may carry.
    pub max_trace_events: usize,
    /// Longest text (bytes) one trace event or task may carry.
    pub max_text_bytes: usize,
    /// How long a decision stays valid for the buyer (`ttl_seconds`).
    pub decision_ttl_secs: u64,
    /// A JWK set file with more mandate signer keys (OKP Ed25519 and EC secp256k1).
    pub mandate_jwks_file: Option<PathBuf>,
    /// Endpoints (`host/path` prefixes) whose payments must carry a trace.
    pub require_trace: Vec<String>,
    /// Brands' known wallets per host: `"shop.example" = ["0x..."]`.
    pub known_wallets: BTreeMap<String, Vec<String>>,
    /// AP2 mandate signer keys by key id: `kid = "ed25519:<hex>"` or `"es256k:0x<address>"`.
    pub mandate_keys: BTreeMap<String, String>,
}

impl Default for RiskConfig {
    fn default() -> Self {
        let thresholds = Thresholds::default();
        Self {
            rules_dir: PathBuf::from("risk-rules"),
            review_at: thresholds.review_at,
            deny_at: thresholds.deny_at,
            reload_secs: 2,
            session_ttl_secs: 3_600,
            nonce_ttl_secs: 300,
            hash_text_at_ingest: false,
            max_trace_events: 1_000,
            max_text_bytes: 32 * 1024,
            decision_ttl_secs: 300,
            mandate_jwks_file: None,
            require_trace: Vec::new(),
            known_wallets: BTreeMap::new(),
            mandate_keys: BTreeMap::new(),
        }
    }
}

impl RiskConfig {
    /// The score thresholds.
    pub fn thresholds(&self) -> Thresholds {
        Thresholds {
            review_at: self.review_at,
            deny_at: self.deny_at,
        }
    }

    /// Every problem with the section, naming keys (`risk.*`).
    pub fn problems(&self) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        if let Err(message) = self.thresholds().validate() {
            problems.push(ConfigProblem {
                key: "risk.review_at".into(),
                message,
            });
        }
        if self.rules_dir.as_os_str().is_empty() {
            problems.push(ConfigProblem {
                key: "risk.rules_dir".into(),
                message: "must name a directory".into(),
            });
        }
        if self.reload_secs > 86_400 {
            problems.push(ConfigProblem {
                key: "risk.reload_secs".into(),
                message: "must be at most 86400 (0 disables reloading)".into(),
            });
        }
        let mut problem = |key: &str, message: &str| {
            problems.push(ConfigProblem {
                key: key.into(),
                message: message.into(),
            })
        };
        if self.session_ttl_secs == 0 {
            problem("risk.session_ttl_secs", "must be greater than 0");
        }
        if self.nonce_ttl_secs == 0 {
            problem("risk.nonce_ttl_secs", "must be greater than 0");
        }
        if self.max_trace_events == 0 || self.max_trace_events > 100_000 {
            problem("risk.max_trace_events", "must be between 1 and 100000");
        }
        if self.max_text_bytes == 0 {
            problem("risk.max_text_bytes", "must be greater than 0");
        }
        for (kid, key) in &self.mandate_keys {
            if super::mandate::SignerKey::parse(key).is_none() {
                problem(
                    &format!("risk.mandate_keys.{kid}"),
                    "must be ed25519:<64 hex>, es256k:0x<address> or secp256k1:<130 hex>",
                );
            }
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_thresholds_must_be_ordered() {
        assert!(RiskConfig::default().problems().is_empty());
        let bad = RiskConfig {
            review_at: 80,
            deny_at: 70,
            ..RiskConfig::default()
        };
        let problems = bad.problems();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].key, "risk.review_at");
        let over = RiskConfig {
            deny_at: 101,
            ..RiskConfig::default()
        };
        assert_eq!(over.problems().len(), 1);
    }
}
