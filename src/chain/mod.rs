//! On-chain verification, one checker per chain family. A checker never approves on an
//! upstream's word: it reads the chain itself, and when it cannot, it returns an error that
//! the decision step turns into a fail-closed deny.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub mod evm;

use crate::protocol::Payment;
use crate::verdict::{Gate, Verdict};

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
}
