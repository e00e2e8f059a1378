//! `Payment`: the one normalised internal shape of a payment, whatever the protocol version,
//! chain family or transfer method. Everything after `normalise` works on this and never
//! re-parses wire JSON.

use std::fmt;

use alloy::primitives::{Address, B256, Bytes, U256};
use serde::{Deserialize, Serialize};

use super::network::Network;

/// The x402 protocol version a payment was sent with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum X402Version {
    /// Legacy v1: `X-PAYMENT`, v1 network names, `maxAmountRequired`.
    V1,
    /// v2: CAIP-2 networks, `accepted`, `amount`, extensions.
    V2,
}

impl X402Version {
    /// The wire number.
    pub fn number(self) -> u8 {
        match self {
            X402Version::V1 => 1,
            X402Version::V2 => 2,
        }
    }
}

/// An amount in the asset's smallest unit. Money is never a float.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct AtomicAmount(pub U256);

impl AtomicAmount {
    /// Parses a decimal integer string such as `"10000"`; no sign, no exponent, no fraction.
    pub fn parse_decimal(s: &str) -> Option<Self> {
        if s.is_empty() || s.len() > 78 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        U256::from_str_radix(s, 10).ok().map(Self)
    }
}

impl fmt::Display for AtomicAmount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl Serialize for AtomicAmount {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

/// Names one payment uniquely, across versions and re-encodings.
///
/// EVM EIP-3009: `evm:<chain id>:<asset>:<from>:<nonce>` (addresses lower-case hex).
/// EVM Permit2: `evm-permit2:<chain id>:<from>:<nonce>`.
/// Solana: `svm:<client signature, base58>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(transparent)]
pub struct Fingerprint(pub String);

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How the payer authorised the transfer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum Authorization {
    /// EIP-3009 `transferWithAuthorization` (USDC-style), EVM.
    Eip3009 {
        /// `authorization.from`.
        from: Address,
        /// `authorization.to`.
        to: Address,
        /// `authorization.value`.
        value: AtomicAmount,
        /// `authorization.validAfter`, unix seconds.
        valid_after_secs: u64,
        /// `authorization.validBefore`, unix seconds.
        valid_before_secs: u64,
        /// 32-byte nonce.
        nonce: B256,
        /// 65-byte ECDSA, EIP-1271 or ERC-6492-wrapped signature.
        signature: Bytes,
    },
    /// Uniswap Permit2 through the x402 exact proxy, EVM (v2 only).
    Permit2 {
        /// `permit2Authorization.from`.
        from: Address,
        /// `permit2Authorization.witness.to`.
        to: Address,
        /// `permit2Authorization.permitted.token`.
        token: Address,
        /// `permit2Authorization.permitted.amount`.
        amount: AtomicAmount,
        /// `permit2Authorization.spender`.
        spender: Address,
        /// `permit2Authorization.nonce` (decimal uint256).
        nonce: U256,
        /// `permit2Authorization.deadline`, unix seconds.
        deadline_secs: u64,
        /// `permit2Authorization.witness.validAfter`, unix seconds.
        valid_after_secs: u64,
        /// The signature.
        signature: Bytes,
    },
    /// A partially signed Solana transaction (SPL TransferChecked).
    SvmTransaction {
        /// The standard-base64 serialized transaction, as sent.
        transaction_base64: String,
        /// The first signature of the transaction (the client's), base58.
        client_signature: String,
    },
}

/// The normalised payment.
#[derive(Debug, Clone, Serialize)]
pub struct Payment {
    /// Protocol version of the payload.
    pub version: X402Version,
    /// The network, resolved to CAIP-2.
    pub network: Network,
    /// The scheme, e.g. `exact`.
    pub scheme: String,
    /// Token contract (EVM, lower-case hex) or mint (Solana, base58), from the requirements.
    pub asset: String,
    /// The required amount in atomic units (`amount`, or v1 `maxAmountRequired`).
    pub amount: AtomicAmount,
    /// Token decimals when known from the asset table; filled after normalisation.
    pub decimals: Option<u8>,
    /// Who pays, when the payload names it (EVM `from`; Solana transfer authority).
    pub payer: Option<String>,
    /// Who is paid (`payTo`; EVM lower-case hex).
    pub pay_to: String,
    /// The paid resource URL (v1 `resource`, v2 `resource.url`), when given.
    pub resource: Option<String>,
    /// What the seller says the resource is (v1 `description`, v2 `resource.description`),
    /// when given and not empty.
    pub description: Option<String>,
    /// `maxTimeoutSeconds` from the requirements.
    pub max_timeout_secs: u64,
    /// Typed fields of `requirements.extra` that checks need.
    pub extra: PaymentExtra,
    /// Requirement fields (`scheme`, `network`, `asset`, `payTo`, `amount`) where the payload's
    /// `accepted` (v2) or `scheme`/`network` (v1) differs from the requirements; empty when
    /// they agree.
    pub accepted_mismatches: Vec<&'static str>,
    /// The transfer authorisation.
    pub authorization: Authorization,
    /// Names this payment uniquely.
    pub fingerprint: Fingerprint,
    /// The `payment-identifier` extension id, when the client sent one (idempotency key).
    pub payment_identifier: Option<String>,
}

impl Payment {
    /// The EVM chain id, when this is an EVM payment.
    pub fn evm_chain_id(&self) -> Option<u64> {
        self.network.evm_chain_id()
    }
}

/// The parts of `requirements.extra` Gatehouse's checks use.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PaymentExtra {
    /// EIP-712 domain name (EVM).
    pub eip712_name: Option<String>,
    /// EIP-712 domain version (EVM).
    pub eip712_version: Option<String>,
    /// `assetTransferMethod` (EVM v2: `eip3009` default, `permit2`).
    pub asset_transfer_method: Option<String>,
    /// `feePayer` (Solana).
    pub fee_payer: Option<String>,
    /// `memo` (Solana).
    pub memo: Option<String>,
}
