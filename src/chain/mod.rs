//! On-chain verification, one checker per chain family. A checker never approves on an
//! upstream's word: it reads the chain itself, and when it cannot, it returns an error that
//! the decision step turns into a fail-closed deny.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

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
    async fn check(&self, payment: &Payment, gate: Gate, now_secs: u64)
    -> Result<Verdict, ChainError>;
}
