//! STAND-IN (riskapi branch only, replaced by the rules helper's module on merge): the `[risk]`
//! section. The buyer-API keys (`session_ttl_secs` and below) are riskapi's.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::ConfigProblem;

/// The `[risk]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RiskConfig {
    /// Directory of YAML rule files.
    pub rules_dir: PathBuf,
    /// Score at which a payment is held for review.
    pub review_at: u32,
    /// Score at which a payment is denied.
    pub deny_at: u32,
    /// How often the rules directory is checked for changes, seconds.
    pub reload_secs: u64,
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
        Self {
            rules_dir: PathBuf::from("risk-rules"),
            review_at: 40,
            deny_at: 70,
            reload_secs: 5,
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
    /// Every problem, naming the key.
    pub fn problems(&self) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        let mut problem = |key: &str, message: &str| {
            out.push(ConfigProblem {
                key: key.into(),
                message: message.into(),
            })
        };
        if self.review_at > self.deny_at || self.deny_at > 100 {
            problem("risk.review_at", "must satisfy review_at <= deny_at <= 100");
        }
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
            if crate::risk::mandate::SignerKey::parse(key).is_none() {
                problem(
                    &format!("risk.mandate_keys.{kid}"),
                    "must be ed25519:<64 hex>, es256k:0x<address> or secp256k1:<130 hex>",
                );
            }
        }
        out
    }
}
