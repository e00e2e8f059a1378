//! Typed verdicts and machine-readable reasons. Every step returns a [`Verdict`]; the decision
//! step combines them. [`ReasonCode`] has the one exhaustive mapping to wire strings, for v2
//! and for legacy v1 clients (whose zod enum rejects unknown reasons, spec §1.9(b)).

use serde::Serialize;

/// A pipeline step, named in verdicts and evidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Wire decoding and normalisation.
    Normalise,
    /// On-chain checks (EVM or Solana).
    Chain,
    /// Spending policy.
    Policy,
    /// Risk scoring.
    Risk,
    /// The settlement journal (exactly-once).
    Journal,
    /// The upstream facilitator.
    Upstream,
}

/// Which gate the request came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Gate {
    /// `/verify`: gate 1.
    Verify,
    /// `/settle`: gate 2.
    Settle,
}

/// What a step concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Nothing against the payment.
    Allow,
    /// Hold for a person.
    Review,
    /// Refuse.
    Deny,
}

/// The legacy v1 `ErrorReasons` enum (spec §1.9(b)): v1 responses never carry anything else.
pub const LEGACY_V1_REASONS: &[&str] = &[
    "insufficient_funds",
    "invalid_exact_evm_payload_authorization_valid_after",
    "invalid_exact_evm_payload_authorization_valid_before",
    "invalid_exact_evm_payload_authorization_value",
    "invalid_exact_evm_payload_signature",
    "invalid_exact_evm_payload_recipient_mismatch",
    "invalid_exact_evm_payload_undeployed_smart_wallet",
    "invalid_exact_svm_payload_transaction",
    "invalid_exact_svm_payload_transaction_amount_mismatch",
    "invalid_exact_svm_payload_transaction_create_ata_instruction",
    "invalid_exact_svm_payload_transaction_create_ata_instruction_incorrect_payee",
    "invalid_exact_svm_payload_transaction_create_ata_instruction_incorrect_asset",
    "invalid_exact_svm_payload_transaction_instructions",
    "invalid_exact_svm_payload_transaction_instructions_length",
    "invalid_exact_svm_payload_transaction_instructions_compute_limit_instruction",
    "invalid_exact_svm_payload_transaction_instructions_compute_price_instruction",
    "invalid_exact_svm_payload_transaction_instructions_compute_price_instruction_too_high",
    "invalid_exact_svm_payload_transaction_instruction_not_spl_token_transfer_checked",
    "invalid_exact_svm_payload_transaction_instruction_not_token_2022_transfer_checked",
    "invalid_exact_svm_payload_transaction_fee_payer_included_in_instruction_accounts",
    "invalid_exact_svm_payload_transaction_fee_payer_transferring_funds",
    "invalid_exact_svm_payload_transaction_not_a_transfer_instruction",
    "invalid_exact_svm_payload_transaction_receiver_ata_not_found",
    "invalid_exact_svm_payload_transaction_sender_ata_not_found",
    "invalid_exact_svm_payload_transaction_simulation_failed",
    "invalid_exact_svm_payload_transaction_transfer_to_incorrect_ata",
    "invalid_network",
    "invalid_payload",
    "invalid_payment_requirements",
    "invalid_scheme",
    "unsupported_scheme",
    "invalid_x402_version",
    "invalid_transaction_state",
    "unexpected_verify_error",
    "unexpected_settle_error",
    "invalid_payment",
    "payment_expired",
    "settle_exact_svm_block_height_exceeded",
    "settle_exact_svm_transaction_confirmation_timed_out",
    "duplicate_settlement",
];

/// A machine-readable reason. `code()` is the v2 wire string (TS v2 vocabulary, spec §1.9(c)).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(into = "String")]
pub enum ReasonCode {
    // --- generic ---
    /// The payment payload is malformed.
    InvalidPayload,
    /// The payment requirements are malformed.
    InvalidPaymentRequirements,
    /// The network is unknown or unsupported.
    InvalidNetwork,
    /// The scheme is not one Gatehouse can check.
    UnsupportedScheme,
    /// The protocol version is unsupported.
    InvalidX402Version,
    /// A check could not run (RPC, store, rules or upstream down): fail closed.
    CheckUnavailable,
    /// This payment was already settled, or its settlement is under way.
    DuplicateSettlement,
    /// The upstream's settle outcome is unknown (timeout or 5xx); reconciled later.
    SettlementPending,
    /// The upstream could not be reached or answered nonsense.
    UpstreamUnavailable,
    /// The payment's validity window has passed.
    PaymentExpired,
    // --- EVM exact (spec §1.9(c), §3) ---
    /// Scheme is not `exact`.
    EvmScheme,
    /// `accepted.network` differs from the requirements, or the chain is unknown.
    EvmNetworkMismatch,
    /// `accepted` differs from the requirements in scheme, asset, payTo or amount.
    EvmAcceptedMismatch,
    /// `extra.name` / `extra.version` missing.
    EvmMissingEip712Domain,
    /// `authorization.to` differs from `payTo`.
    EvmRecipientMismatch,
    /// The signature does not verify.
    EvmSignature,
    /// `validBefore < now + 6`.
    EvmValidBefore,
    /// `validAfter > now`.
    EvmValidAfter,
    /// `validBefore` later than now + maxTimeoutSeconds + slack.
    EvmValidBeforeTooFar,
    /// `value` differs from the required amount.
    EvmAuthorizationValue,
    /// Nonce is not exactly 32 bytes or the payload is otherwise unparseable.
    EvmPayload,
    /// Smart-wallet signature with no code at `from` and no ERC-6492 factory data.
    EvmUndeployedSmartWallet,
    /// The on-chain transaction failed or reverted.
    EvmTransactionFailed,
    /// Token `name()` differs from `extra.name`.
    EvmTokenNameMismatch,
    /// Token `version()` differs from `extra.version`.
    EvmTokenVersionMismatch,
    /// The token does not implement EIP-3009.
    EvmEip3009NotSupported,
    /// `authorizationState(from, nonce)` is already true.
    EvmNonceAlreadyUsed,
    /// `balanceOf(from)` is below the amount.
    EvmInsufficientBalance,
    /// Simulation failed with no specific diagnosis.
    EvmSimulationFailed,
    /// No code at the asset address.
    AssetNotDeployedContract,
    /// ERC-6492 factory not on the allowlist.
    Eip6492FactoryNotAllowed,
    // --- Solana exact (spec §1.9(f), §4) ---
    /// A Solana-specific refusal; the string is the spec's SVM reason code.
    Svm(&'static str),
    // --- Gatehouse's own controls ---
    /// Denied by spending policy; the string names the control (e.g. `policy_cap_exceeded`).
    Policy(&'static str),
    /// Denied or held by risk scoring; the string names the outcome (e.g. `risk_denied`).
    Risk(&'static str),
    /// A reason the upstream facilitator gave, passed through verbatim.
    Upstream(String),
}

impl ReasonCode {
    /// The v2 wire string.
    pub fn code(&self) -> &str {
        match self {
            ReasonCode::InvalidPayload => "invalid_payload",
            ReasonCode::InvalidPaymentRequirements => "invalid_payment_requirements",
            ReasonCode::InvalidNetwork => "invalid_network",
            ReasonCode::UnsupportedScheme => "unsupported_scheme",
            ReasonCode::InvalidX402Version => "invalid_x402_version",
            ReasonCode::CheckUnavailable => "check_unavailable",
            ReasonCode::DuplicateSettlement => "duplicate_settlement",
            ReasonCode::SettlementPending => "settlement_pending",
            ReasonCode::UpstreamUnavailable => "upstream_unavailable",
            ReasonCode::PaymentExpired => "payment_expired",
            ReasonCode::EvmScheme => "invalid_exact_evm_scheme",
            ReasonCode::EvmNetworkMismatch => "invalid_exact_evm_network_mismatch",
            ReasonCode::EvmAcceptedMismatch => "invalid_exact_evm_accepted_mismatch",
            ReasonCode::EvmMissingEip712Domain => "invalid_exact_evm_missing_eip712_domain",
            ReasonCode::EvmRecipientMismatch => "invalid_exact_evm_recipient_mismatch",
            ReasonCode::EvmSignature => "invalid_exact_evm_signature",
            ReasonCode::EvmValidBefore => "invalid_exact_evm_payload_authorization_valid_before",
            ReasonCode::EvmValidAfter => "invalid_exact_evm_payload_authorization_valid_after",
            ReasonCode::EvmValidBeforeTooFar => {
                "invalid_exact_evm_payload_authorization_valid_before_too_far"
            }
            ReasonCode::EvmAuthorizationValue => "invalid_exact_evm_authorization_value",
            ReasonCode::EvmPayload => "invalid_exact_evm_payload",
            ReasonCode::EvmUndeployedSmartWallet => {
                "invalid_exact_evm_payload_undeployed_smart_wallet"
            }
            ReasonCode::EvmTransactionFailed => "invalid_exact_evm_transaction_failed",
            ReasonCode::EvmTokenNameMismatch => "invalid_exact_evm_token_name_mismatch",
            ReasonCode::EvmTokenVersionMismatch => "invalid_exact_evm_token_version_mismatch",
            ReasonCode::EvmEip3009NotSupported => "invalid_exact_evm_eip3009_not_supported",
            ReasonCode::EvmNonceAlreadyUsed => "invalid_exact_evm_nonce_already_used",
            ReasonCode::EvmInsufficientBalance => "invalid_exact_evm_insufficient_balance",
            ReasonCode::EvmSimulationFailed => "invalid_exact_evm_transaction_simulation_failed",
            ReasonCode::AssetNotDeployedContract => "asset_not_deployed_contract",
            ReasonCode::Eip6492FactoryNotAllowed => "eip6492_factory_not_allowed",
            ReasonCode::Svm(code) | ReasonCode::Policy(code) | ReasonCode::Risk(code) => code,
            ReasonCode::Upstream(code) => code,
        }
    }

    /// The wire string for a legacy v1 client: always a member of [`LEGACY_V1_REASONS`].
    pub fn v1_code(&self, gate: Gate) -> &str {
        let unexpected = match gate {
            Gate::Verify => "unexpected_verify_error",
            Gate::Settle => "unexpected_settle_error",
        };
        let mapped = match self {
            ReasonCode::InvalidPayload | ReasonCode::EvmPayload => "invalid_payload",
            ReasonCode::InvalidPaymentRequirements
            | ReasonCode::EvmMissingEip712Domain
            | ReasonCode::EvmEip3009NotSupported
            | ReasonCode::AssetNotDeployedContract
            | ReasonCode::EvmAcceptedMismatch => "invalid_payment_requirements",
            ReasonCode::InvalidNetwork | ReasonCode::EvmNetworkMismatch => "invalid_network",
            ReasonCode::UnsupportedScheme | ReasonCode::EvmScheme => "unsupported_scheme",
            ReasonCode::InvalidX402Version => "invalid_x402_version",
            ReasonCode::CheckUnavailable
            | ReasonCode::SettlementPending
            | ReasonCode::UpstreamUnavailable => unexpected,
            ReasonCode::DuplicateSettlement | ReasonCode::EvmNonceAlreadyUsed => {
                "duplicate_settlement"
            }
            ReasonCode::PaymentExpired => "payment_expired",
            ReasonCode::EvmRecipientMismatch => "invalid_exact_evm_payload_recipient_mismatch",
            ReasonCode::EvmSignature
            | ReasonCode::EvmTokenNameMismatch
            | ReasonCode::EvmTokenVersionMismatch => "invalid_exact_evm_payload_signature",
            ReasonCode::EvmValidBefore | ReasonCode::EvmValidBeforeTooFar => {
                "invalid_exact_evm_payload_authorization_valid_before"
            }
            ReasonCode::EvmValidAfter => "invalid_exact_evm_payload_authorization_valid_after",
            ReasonCode::EvmAuthorizationValue => "invalid_exact_evm_payload_authorization_value",
            ReasonCode::EvmUndeployedSmartWallet | ReasonCode::Eip6492FactoryNotAllowed => {
                "invalid_exact_evm_payload_undeployed_smart_wallet"
            }
            ReasonCode::EvmTransactionFailed | ReasonCode::EvmSimulationFailed => {
                "invalid_transaction_state"
            }
            ReasonCode::EvmInsufficientBalance => "insufficient_funds",
            ReasonCode::Svm(code) if LEGACY_V1_REASONS.contains(code) => code,
            ReasonCode::Svm(_) => "invalid_exact_svm_payload_transaction",
            ReasonCode::Policy(_) | ReasonCode::Risk(_) => "invalid_payment",
            ReasonCode::Upstream(code) if LEGACY_V1_REASONS.contains(&code.as_str()) => code,
            ReasonCode::Upstream(_) => unexpected,
        };
        debug_assert!(LEGACY_V1_REASONS.contains(&mapped));
        mapped
    }
}

impl From<ReasonCode> for String {
    fn from(r: ReasonCode) -> String {
        r.code().to_owned()
    }
}

/// A reason with a human-readable message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reason {
    /// The machine-readable code.
    pub code: ReasonCode,
    /// Detail for people (goes to `invalidMessage` / `errorMessage` and evidence).
    pub message: String,
}

impl Reason {
    /// A reason with a message.
    pub fn new(code: ReasonCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// The typed result of one step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// The step that produced it.
    pub step: Step,
    /// What it concluded.
    pub outcome: Outcome,
    /// Why; never empty for `Deny` or `Review`.
    pub reasons: Vec<Reason>,
    /// What the step actually checked, for evidence (e.g. "eip3009 signature, simulation").
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub checked: Vec<String>,
}

impl Verdict {
    /// Nothing against the payment.
    pub fn allow(step: Step) -> Self {
        Self {
            step,
            outcome: Outcome::Allow,
            reasons: Vec::new(),
            checked: Vec::new(),
        }
    }

    /// A refusal with one reason.
    pub fn deny(step: Step, reason: Reason) -> Self {
        Self {
            step,
            outcome: Outcome::Deny,
            reasons: vec![reason],
            checked: Vec::new(),
        }
    }

    /// A hold for review with one reason.
    pub fn review(step: Step, reason: Reason) -> Self {
        Self {
            step,
            outcome: Outcome::Review,
            reasons: vec![reason],
            checked: Vec::new(),
        }
    }

    /// Records what was checked.
    pub fn with_checked(mut self, what: impl Into<String>) -> Self {
        self.checked.push(what.into());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_v1_code_is_in_the_legacy_enum() {
        let all = [
            ReasonCode::InvalidPayload,
            ReasonCode::CheckUnavailable,
            ReasonCode::SettlementPending,
            ReasonCode::EvmValidBeforeTooFar,
            ReasonCode::EvmAcceptedMismatch,
            ReasonCode::Policy("policy_cap_exceeded"),
            ReasonCode::Risk("risk_denied"),
            ReasonCode::Svm("invalid_exact_svm_payload_mint_mismatch"),
            ReasonCode::Upstream("something_new".into()),
            ReasonCode::Upstream("insufficient_funds".into()),
        ];
        for r in all {
            for gate in [Gate::Verify, Gate::Settle] {
                assert!(LEGACY_V1_REASONS.contains(&r.v1_code(gate)), "{r:?}");
            }
        }
        assert_eq!(
            ReasonCode::Upstream("insufficient_funds".into()).v1_code(Gate::Verify),
            "insufficient_funds"
        );
    }
}
