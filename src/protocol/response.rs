//! Facilitator response bodies (spec §1.3–1.5). Lossless: unknown fields land in `other` and
//! are written back, `None` fields are omitted, and a settle response always carries
//! `transaction` and `network` (the TS and Go clients reject one without them, spec §1.4).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `POST /verify` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyResponse {
    /// Whether the payment may proceed.
    pub is_valid: bool,
    /// Machine code when invalid (spec §1.9).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalid_reason: Option<String>,
    /// Free text when invalid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalid_message: Option<String>,
    /// The payer, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer: Option<String>,
    /// v2 extension results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extensions: Option<Map<String, Value>>,
    /// Fields this type does not know, kept verbatim.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

impl VerifyResponse {
    /// `{isValid: true, payer}`.
    pub fn valid(payer: Option<String>) -> Self {
        Self {
            is_valid: true,
            invalid_reason: None,
            invalid_message: None,
            payer,
            extensions: None,
            other: Map::new(),
        }
    }

    /// `{isValid: false, invalidReason, invalidMessage, payer}`. `reason` is a wire code
    /// (v2 or, for legacy clients, v1 via `ReasonCode::v1_code`).
    pub fn invalid(
        reason: impl Into<String>,
        message: impl Into<String>,
        payer: Option<String>,
    ) -> Self {
        Self {
            is_valid: false,
            invalid_reason: Some(reason.into()),
            invalid_message: Some(message.into()),
            payer,
            extensions: None,
            other: Map::new(),
        }
    }
}

/// `POST /settle` answer (also the `PAYMENT-RESPONSE` header body).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SettleResponse {
    /// Whether the transfer landed.
    pub success: bool,
    /// Machine code on failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_reason: Option<String>,
    /// Free text on failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    /// The payer, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer: Option<String>,
    /// Tx hash or Solana signature; `""` when nothing was broadcast. Always written.
    #[serde(default, deserialize_with = "string_or_null")]
    pub transaction: String,
    /// The network as the request named it. Always written.
    #[serde(default, deserialize_with = "string_or_null")]
    pub network: String,
    /// Amount actually settled (`upto`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<String>,
    /// v2 extension results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extensions: Option<Map<String, Value>>,
    /// Fields this type does not know, kept verbatim.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

impl SettleResponse {
    /// `{success: false, errorReason, errorMessage, payer, transaction, network}`; pass `""`
    /// for `transaction` when nothing was broadcast, but keep any hash that exists.
    pub fn failure(
        reason: impl Into<String>,
        message: impl Into<String>,
        payer: Option<String>,
        network: impl Into<String>,
        transaction: impl Into<String>,
    ) -> Self {
        Self {
            success: false,
            error_reason: Some(reason.into()),
            error_message: Some(message.into()),
            payer,
            transaction: transaction.into(),
            network: network.into(),
            amount: None,
            extensions: None,
            other: Map::new(),
        }
    }
}

/// Upstreams that break the rule (spec §1.8 hook aborts) may send `null` or leave the field
/// out; read both as `""` so the proxy's own answer is well-formed again.
fn string_or_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
}

/// `GET /supported` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SupportedResponse {
    /// Supported (version, scheme, network) kinds; v1 and v2 entries mixed.
    pub kinds: Vec<SupportedKind>,
    /// v2 extension names; absent in v1 answers.
    #[serde(default)]
    pub extensions: Vec<String>,
    /// Signer addresses by CAIP family pattern (`"eip155:*"`, `"solana:*"`).
    #[serde(default)]
    pub signers: Map<String, Value>,
    /// Fields this type does not know, kept verbatim.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// One entry of `kinds`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SupportedKind {
    /// Protocol version of this kind.
    pub x402_version: u8,
    /// Scheme, e.g. `exact`.
    pub scheme: String,
    /// v1 name or CAIP-2 id.
    pub network: String,
    /// Kind extras (SVM: `feePayer`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<Value>,
    /// Fields this type does not know, kept verbatim.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}
