//! On-chain verification, one checker per chain family. A checker never approves on an
//! upstream's word: it reads the chain itself, and when it cannot, it returns an error that
//! the decision step turns into a fail-closed deny.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub mod evm;
pub mod svm;

use crate::protocol::{ChainFamily, Network, Payment};
use crate::verdict::{Gate, Reason, ReasonCode, Step, Verdict};

/// Configuration of one chain, keyed by CAIP-2 id under `[chains."<id>"]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainConfig {
    /// JSON-RPC endpoints, tried in order (failover).
    #[serde(default)]
    pub rpc_urls: Vec<String>,
    /// When false, payments on this chain are not checked on-chain by Gatehouse (the evidence
    /// says so); for networks Gatehouse cannot verify itself. Default: true.
    #[serde(default = "default_true")]
    pub onchain_checks: bool,
    /// EVM: whether Multicall3 (`0xcA11…CA11`) is deployed, so reads and the simulation go in
    /// one `eth_call`. Default: true for Base and Base Sepolia, false otherwise.
    #[serde(default)]
    pub multicall3: Option<bool>,
    /// EVM: tokens known on this chain, in addition to the built-in table (spec §3.11).
    #[serde(default)]
    pub assets: Vec<AssetConfig>,
    /// EVM: ERC-6492 factories whose counterfactual wallets are accepted. Default: none.
    #[serde(default)]
    pub eip6492_allowed_factories: Vec<String>,
    /// EVM: how far `validBefore` may lie beyond `now + maxTimeoutSeconds`. Default: 60 s.
    #[serde(default)]
    pub valid_before_slack_secs: Option<u64>,
    /// Timeout of one RPC request, per endpoint. Default: 5000 ms.
    #[serde(default)]
    pub rpc_timeout_ms: Option<u64>,
    /// EVM: the `from` of simulation calls (the facilitator's address); `transferWithAuthorization`
    /// does not depend on the caller. Default: the zero address.
    #[serde(default)]
    pub simulation_from: Option<String>,
    /// Who settles payments on this chain: the upstream facilitator (`forward`, the default)
    /// or Gatehouse itself from its own key (`local`, EVM and Solana).
    #[serde(default)]
    pub settlement: SettlementMode,
    /// Local settlement: the environment variable holding the facilitator's key (EVM: hex
    /// private key; Solana: a 64-byte keypair, base58 or the JSON array `solana-keygen`
    /// writes). The key itself never enters the configuration, so it is never printed.
    #[serde(default)]
    pub signer_key_env: Option<String>,
    /// Local settlement: a file holding the facilitator's key (same formats).
    #[serde(default)]
    pub signer_key_file: Option<PathBuf>,
    /// Local settlement: how long to wait for a receipt (Solana: a confirmation) before the
    /// outcome becomes `settlement_pending` (resolved later by the reconciler). Default: 120 s.
    #[serde(default)]
    pub settle_receipt_timeout_secs: Option<u64>,
    /// Local settlement: the most a settlement transaction may pay per gas, in wei. A network
    /// gas price above it refuses the settlement before anything is sent. Default: no cap.
    #[serde(default)]
    pub max_fee_per_gas_wei: Option<u64>,
    /// Local settlement: the largest gas limit a settlement may use (estimate + 20 %). Default:
    /// 500000 (an EIP-3009 transfer needs well under 100000).
    #[serde(default)]
    pub max_gas_limit: Option<u64>,
    /// Solana: fee payers (base58) of the facilitator that will settle, in addition to those
    /// learned from the upstream's `/supported` (`signers["solana:*"]`, `extra.feePayer`).
    #[serde(default)]
    pub fee_payers: Vec<String>,
    /// Solana: compute-unit price cap, µlamports per CU. Default: 5 000 000 (5 lamports/CU).
    #[serde(default)]
    pub max_compute_unit_price_micro_lamports: Option<u64>,
    /// Solana: compute-unit limit cap. Default: 400 000.
    #[serde(default)]
    pub max_compute_unit_limit: Option<u32>,
    /// Solana: most instructions a payment transaction may have (at least 3). Default: 6
    /// (TS v2); the later spec allows 7.
    #[serde(default)]
    pub max_instructions: Option<usize>,
    /// Solana: `exact` (amount == required, default) or `at_least` (the later spec).
    #[serde(default)]
    pub amount_rule: Option<svm::AmountRule>,
}

/// Default wait for a local settlement's receipt before it becomes `settlement_pending`.
pub const DEFAULT_RECEIPT_TIMEOUT_SECS: u64 = 120;

/// Who settles payments on a chain.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SettlementMode {
    /// The upstream facilitator settles (Gatehouse forwards `/settle`).
    #[default]
    Forward,
    /// Gatehouse settles on-chain itself; no upstream is needed for this chain.
    Local,
}

/// A token known on one chain: its EIP-712 domain values and decimals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssetConfig {
    /// Token contract address (hex).
    pub address: String,
    /// EIP-712 domain `name`.
    pub name: String,
    /// EIP-712 domain `version`.
    pub version: String,
    /// Token decimals.
    pub decimals: u8,
}

fn default_true() -> bool {
    true
}

/// A check that could not run; the payment is not approved (fail closed).
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// Every RPC endpoint failed.
    #[error("RPC unavailable: {0}")]
    Rpc(String),
    /// No checker or no RPC endpoint is configured for the network.
    #[error("no on-chain verifier for network {0}")]
    NotConfigured(String),
}

/// Checks a payment against the chain.
#[async_trait]
pub trait ChainChecker: Send + Sync {
    /// Checks `payment` at `gate`, with `now_secs` from the clock.
    async fn check(
        &self,
        payment: &Payment,
        gate: Gate,
        now_secs: u64,
    ) -> Result<Verdict, ChainError>;

    /// Whether this checker can verify payments on `network` (filters `/supported`).
    fn supports(&self, network: &Network) -> bool {
        let _ = network;
        true
    }
}

/// The checkers for every chain family, plus the networks an operator chose not to check.
#[derive(Clone, Default)]
pub struct ChainCheckers {
    evm: Option<Arc<dyn ChainChecker>>,
    svm: Option<Arc<dyn ChainChecker>>,
    unchecked: BTreeSet<String>,
}

impl fmt::Debug for ChainCheckers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChainCheckers")
            .field("evm", &self.evm.is_some())
            .field("svm", &self.svm.is_some())
            .field("unchecked", &self.unchecked)
            .finish()
    }
}

impl ChainCheckers {
    /// No checkers yet; networks configured with `onchain_checks = false` pass unchecked.
    pub fn new(chains: &BTreeMap<String, ChainConfig>) -> Self {
        Self {
            unchecked: chains
                .iter()
                .filter(|(_, c)| !c.onchain_checks)
                .map(|(id, _)| id.clone())
                .collect(),
            ..Self::default()
        }
    }

    /// Adds the EVM checker.
    pub fn with_evm(mut self, checker: Arc<dyn ChainChecker>) -> Self {
        self.evm = Some(checker);
        self
    }

    /// Adds the Solana checker.
    pub fn with_svm(mut self, checker: Arc<dyn ChainChecker>) -> Self {
        self.svm = Some(checker);
        self
    }

    fn checker(&self, network: &Network) -> Option<&Arc<dyn ChainChecker>> {
        match network.family() {
            ChainFamily::Evm => self.evm.as_ref(),
            ChainFamily::Svm => self.svm.as_ref(),
            ChainFamily::Other => None,
        }
    }

    /// Whether a payment on `network` can be approved at all.
    pub fn can_check(&self, network: &Network) -> bool {
        self.unchecked.contains(network.caip2.as_str())
            || self.checker(network).is_some_and(|c| c.supports(network))
    }

    /// Runs the checker for the payment's chain family.
    pub async fn check(
        &self,
        payment: &Payment,
        gate: Gate,
        now_secs: u64,
    ) -> Result<Verdict, ChainError> {
        let network = &payment.network;
        if self.unchecked.contains(network.caip2.as_str()) {
            return Ok(Verdict::allow(Step::Chain).with_checked(format!(
                "nothing verified on-chain: onchain_checks = false for {}",
                network.caip2
            )));
        }
        match self.checker(network) {
            Some(checker) => checker.check(payment, gate, now_secs).await,
            None if network.family() == ChainFamily::Other => Ok(Verdict::deny(
                Step::Chain,
                Reason::new(
                    ReasonCode::InvalidNetwork,
                    format!("Gatehouse cannot verify payments on {}", network.caip2),
                ),
            )),
            None => Err(ChainError::NotConfigured(network.caip2.to_string())),
        }
    }
}
