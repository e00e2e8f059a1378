//! Local Solana settlement (spec §4.5) and reconciliation of unknown outcomes.
//!
//! Gatehouse signs the fee payer's slot (slot 0) with its own key, sends the transaction with
//! `sendTransaction` (preflight on) and confirms it with a loop that polls
//! `getSignatureStatuses` every `poll_interval` and rebroadcasts while the blockhash lives.
//! The three ends:
//!
//! * **settled**: the signature is `confirmed` (or `finalized`) without error;
//! * **failed** (definitive, safe to retry): the node refused the transaction at preflight
//!   (nothing was broadcast), or it landed with an error, or it **did not land**: the
//!   blockhash is no longer valid at `finalized` commitment (no bank can include the
//!   transaction any more) and a status lookup *made after that* with
//!   `searchTransactionHistory` still does not know the signature;
//! * **pending** (`settlement_pending`, kept for the reconciler): the RPC stopped answering, or
//!   the confirm timeout passed while the blockhash was still valid. The signature is kept;
//!   [`SvmSettler::reconcile`] later answers from the chain with the same rules.
//!
//! The fee payer's ed25519 signature is deterministic, so the transaction id is known before
//! anything is sent and can be recomputed by the reconciler for an entry whose process died.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signer, SigningKey};
use serde_json::{Value, json};
use solana_pubkey::Pubkey;
use solana_signature::Signature;

use super::transaction;
use crate::chain::evm::rpc::RpcClient;
use crate::chain::{ChainConfig, ChainError};
use crate::protocol::payment::Authorization;
use crate::protocol::{Network, Payment};
use crate::verdict::{Reason, ReasonCode};

/// Default interval between two status polls.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(400);
/// Consecutive failed polls after which the outcome is declared unknown (`settlement_pending`).
pub const DEFAULT_MAX_RPC_FAILURES: u32 = 3;
/// How often an unconfirmed transaction is sent again while its blockhash is valid.
const REBROADCAST_EVERY: Duration = Duration::from_secs(2);

/// Reason code: the blockhash expired and the transaction never landed (spec §1.9 v1 list).
pub const BLOCK_HEIGHT_EXCEEDED: &str = "settle_exact_svm_block_height_exceeded";
/// Reason code: the transaction landed and failed (TS `transaction_failed`).
pub const TRANSACTION_FAILED: &str = "transaction_failed";

/// A facilitator key that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SvmKeyError {
    /// Neither a base58 64-byte keypair nor a JSON array of 64 bytes.
    #[error("is not a Solana keypair (base58 of 64 bytes, or a JSON array of 64 numbers)")]
    Format,
    /// The public half does not belong to the secret half.
    #[error("the keypair's public key does not match its secret key")]
    Mismatch,
}

/// The facilitator's Solana fee-payer key.
#[derive(Clone)]
pub struct SvmKey {
    signing: SigningKey,
    pubkey: Pubkey,
}

impl std::fmt::Debug for SvmKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        f.debug_struct("SvmKey")
            .field("pubkey", &self.pubkey.to_string())
            .finish()
    }
}

impl SvmKey {
    /// Reads a keypair as `solana-keygen` writes it (a JSON array of 64 numbers) or as wallets
    /// export it (base58 of the same 64 bytes: secret then public).
    pub fn parse(text: &str) -> Result<Self, SvmKeyError> {
        let text = text.trim();
        let bytes: Vec<u8> = if text.starts_with('[') {
            serde_json::from_str(text).map_err(|_| SvmKeyError::Format)?
        } else {
            bs58::decode(text)
                .into_vec()
                .map_err(|_| SvmKeyError::Format)?
        };
        let bytes: [u8; 64] = bytes.try_into().map_err(|_| SvmKeyError::Format)?;
        let signing = SigningKey::from_keypair_bytes(&bytes).map_err(|_| SvmKeyError::Mismatch)?;
        let pubkey = Pubkey::new_from_array(signing.verifying_key().to_bytes());
        Ok(Self { signing, pubkey })
    }

    /// The fee payer's public key.
    pub fn pubkey(&self) -> Pubkey {
        self.pubkey
    }

    fn sign(&self, message: &[u8]) -> Signature {
        Signature::from(self.signing.sign(message).to_bytes())
    }
}

/// How a settlement ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SvmSettleOutcome {
    /// Confirmed without error.
    Settled {
        /// The transaction signature (its id), base58.
        signature: String,
    },
    /// Definitively not settled; the payment may be retried. `signature` is set when the
    /// transaction landed with an error.
    Failed {
        /// Why.
        reason: Reason,
        /// The landed, failed transaction.
        signature: Option<String>,
    },
    /// Unknown: the transaction may land. Reconcile later; never report as failed.
    Pending {
        /// The transaction signature.
        signature: String,
        /// What went wrong.
        detail: String,
    },
}

/// What the chain says about an earlier settlement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SvmReconciled {
    /// Landed and succeeded.
    Settled {
        /// The transaction signature.
        signature: String,
    },
    /// Landed with an error: the transfer did not happen.
    LandedFailed {
        /// The transaction signature.
        signature: String,
        /// The chain's error.
        error: String,
    },
    /// The blockhash expired and the signature is unknown: it can never land.
    NotLanded {
        /// The signature that was looked up.
        signature: String,
    },
    /// Not decidable yet (blockhash still valid, or the signature is not known).
    Undecided,
}

/// The transaction Gatehouse sends: the client's bytes with slot 0 signed.
struct Signed {
    wire_base64: String,
    signature: String,
    blockhash: String,
}

/// Settles (and reconciles) Solana payments on one network from the facilitator's key.
#[derive(Debug)]
pub struct SvmSettler {
    network: String,
    rpc: RpcClient,
    key: Option<SvmKey>,
    confirm_timeout: Duration,
    poll_interval: Duration,
    max_rpc_failures: u32,
}

/// A status from `getSignatureStatuses`.
enum Status {
    Unknown,
    Processed,
    Confirmed { error: Option<String> },
}

impl SvmSettler {
    /// A settler for `network` (CAIP-2 id or v1 name) configured by `chain`. Without a key it
    /// only reads the chain (reconciliation of entries whose signature is known).
    pub fn new(
        network: &str,
        chain: &ChainConfig,
        key: Option<SvmKey>,
        confirm_timeout: Duration,
    ) -> Result<Self, ChainError> {
        let network = Network::resolve(network)
            .map_err(|_| ChainError::NotConfigured(network.to_owned()))?
            .caip2
            .to_string();
        let timeout = Duration::from_millis(
            chain
                .rpc_timeout_ms
                .unwrap_or(super::DEFAULT_RPC_TIMEOUT_MS),
        );
        Ok(Self {
            network,
            rpc: RpcClient::new(chain.rpc_urls.clone(), timeout, Arc::new(AtomicU64::new(0))),
            key,
            confirm_timeout,
            poll_interval: DEFAULT_POLL_INTERVAL,
            max_rpc_failures: DEFAULT_MAX_RPC_FAILURES,
        })
    }

    /// Changes the poll interval (tests use a short one).
    pub fn with_poll_interval(mut self, every: Duration) -> Self {
        self.poll_interval = every;
        self
    }

    /// The fee payer this settler signs as, if it has a key.
    pub fn fee_payer(&self) -> Option<Pubkey> {
        self.key.as_ref().map(SvmKey::pubkey)
    }

    /// The CAIP-2 id of the network.
    pub fn network(&self) -> &str {
        &self.network
    }

    /// Signs, sends and confirms an approved payment. `Err` only when there is no key.
    pub async fn settle(&self, payment: &Payment) -> Result<SvmSettleOutcome, ChainError> {
        let signed = match self.sign(payment)? {
            Ok(signed) => signed,
            Err(reason) => {
                return Ok(SvmSettleOutcome::Failed {
                    reason,
                    signature: None,
                });
            }
        };
        let sent = self.send(&signed, false).await;
        match sent {
            Ok(Ok(())) => {}
            Ok(Err(e)) if e.to_ascii_lowercase().contains("already been processed") => {}
            Ok(Err(message)) => {
                // Preflight refused it: nothing was broadcast.
                let code = if message.to_ascii_lowercase().contains("blockhash not found") {
                    BLOCK_HEIGHT_EXCEEDED
                } else {
                    "transaction_simulation_failed"
                };
                return Ok(SvmSettleOutcome::Failed {
                    reason: Reason::new(
                        ReasonCode::Svm(code),
                        format!("the node refused the transaction; nothing was sent: {message}"),
                    ),
                    signature: None,
                });
            }
            Err(error) => {
                // It may or may not have left: the confirm loop finds out.
                tracing::warn!(%error, signature = %signed.signature, "sendTransaction got no answer; confirming anyway.");
            }
        }
        Ok(self.confirm(&signed).await)
    }

    /// Resolves an unknown outcome: `signature` when recorded, else the one Gatehouse's key
    /// produces for this payment (deterministic). The blockhash is read before the status,
    /// so "expired and unknown" really means it can never land.
    pub async fn reconcile(
        &self,
        payment: &Payment,
        signature: Option<&str>,
    ) -> Result<SvmReconciled, ChainError> {
        let Some(blockhash) = blockhash_of(payment) else {
            return Ok(SvmReconciled::Undecided);
        };
        let signature = match (signature, &self.key) {
            (Some(sig), _) => sig.to_owned(),
            (None, Some(_)) => match self.sign(payment)? {
                Ok(signed) => signed.signature,
                Err(_) => return Ok(SvmReconciled::Undecided),
            },
            // A forwarded settlement whose transaction id never came back: the upstream's
            // signature cannot be recomputed.
            (None, None) => return Ok(SvmReconciled::Undecided),
        };
        let expired = !self.blockhash_valid(&blockhash).await?;
        match self.status(&signature, true).await? {
            Status::Confirmed { error: None } => Ok(SvmReconciled::Settled { signature }),
            Status::Confirmed { error: Some(error) } => {
                Ok(SvmReconciled::LandedFailed { signature, error })
            }
            Status::Unknown if expired => Ok(SvmReconciled::NotLanded { signature }),
            _ => Ok(SvmReconciled::Undecided),
        }
    }

    /// The transaction with the fee payer's slot signed. The inner `Err` is a definitive
    /// refusal (not ours to sign); the outer one means there is no key.
    fn sign(&self, payment: &Payment) -> Result<Result<Signed, Reason>, ChainError> {
        let key = self
            .key
            .as_ref()
            .ok_or_else(|| ChainError::NotConfigured(format!("{}: no signer key", self.network)))?;
        let Authorization::SvmTransaction {
            transaction_base64, ..
        } = &payment.authorization
        else {
            return Ok(Err(Reason::new(
                ReasonCode::InvalidPayload,
                "not a Solana transaction payload",
            )));
        };
        let decoded = match transaction::decode(transaction_base64) {
            Ok(d) => d,
            Err(reason) => return Ok(Err(reason)),
        };
        // The checker has verified this already; never sign as fee payer for anyone else's
        // transaction layout.
        if decoded.tx.message.static_account_keys().first() != Some(&key.pubkey) {
            return Ok(Err(Reason::new(
                ReasonCode::Svm("invalid_exact_solana_fee_payer_mismatch"),
                format!(
                    "account key 0 is not this facilitator's fee payer {}",
                    key.pubkey
                ),
            )));
        }
        let mut raw = match B64.decode(transaction_base64.trim()) {
            Ok(raw) => raw,
            Err(e) => {
                return Ok(Err(Reason::new(
                    ReasonCode::InvalidPayload,
                    format!("invalid base64: {e}"),
                )));
            }
        };
        let signature = key.sign(&decoded.message_bytes);
        // Slot 0 starts right after the compact-u16 signature count.
        let header = transaction::short_vec_len(&raw).map_or(usize::MAX, |(_, used)| used);
        let Some(slot) = raw.get_mut(header..header.saturating_add(64)) else {
            return Ok(Err(Reason::new(
                ReasonCode::InvalidPayload,
                "the transaction has no fee payer signature slot",
            )));
        };
        slot.copy_from_slice(signature.as_ref());
        Ok(Ok(Signed {
            wire_base64: B64.encode(&raw),
            signature: signature.to_string(),
            blockhash: decoded.tx.message.recent_blockhash().to_string(),
        }))
    }

    /// `Ok(Err(message))` when the node refused the transaction.
    async fn send(
        &self,
        signed: &Signed,
        skip_preflight: bool,
    ) -> Result<Result<(), String>, ChainError> {
        let answers = self
            .rpc
            .batch(&[(
                "sendTransaction",
                json!([signed.wire_base64, {
                    "encoding": "base64",
                    "skipPreflight": skip_preflight,
                    "preflightCommitment": "confirmed",
                }]),
            )])
            .await?;
        Ok(match answers.into_iter().next() {
            Some(Err(e)) => Err(e.message),
            _ => Ok(()),
        })
    }

    async fn status(&self, signature: &str, history: bool) -> Result<Status, ChainError> {
        let answers = self
            .rpc
            .batch(&[(
                "getSignatureStatuses",
                json!([[signature], {"searchTransactionHistory": history}]),
            )])
            .await?;
        let value = match answers.into_iter().next() {
            Some(Ok(v)) => v,
            Some(Err(e)) => {
                return Err(ChainError::Rpc(format!(
                    "getSignatureStatuses: {}",
                    e.message
                )));
            }
            None => return Err(ChainError::Rpc("no getSignatureStatuses answer".into())),
        };
        let status = value
            .get("value")
            .and_then(Value::as_array)
            .and_then(|v| v.first())
            .ok_or_else(|| ChainError::Rpc("getSignatureStatuses: no value".into()))?;
        if status.is_null() {
            return Ok(Status::Unknown);
        }
        let level = status
            .get("confirmationStatus")
            .and_then(Value::as_str)
            .unwrap_or("processed");
        if level != "confirmed" && level != "finalized" {
            return Ok(Status::Processed);
        }
        let error = status
            .get("err")
            .filter(|e| !e.is_null())
            .map(|e| e.to_string());
        Ok(Status::Confirmed { error })
    }

    /// Whether the blockhash is still valid at `finalized` commitment: once it is not, no
    /// future bank can include a transaction that uses it.
    async fn blockhash_valid(&self, blockhash: &str) -> Result<bool, ChainError> {
        let answers = self
            .rpc
            .batch(&[(
                "isBlockhashValid",
                json!([blockhash, {"commitment": "finalized"}]),
            )])
            .await?;
        match answers.into_iter().next() {
            Some(Ok(v)) => v
                .get("value")
                .and_then(Value::as_bool)
                .ok_or_else(|| ChainError::Rpc("isBlockhashValid: no value".into())),
            Some(Err(e)) => Err(ChainError::Rpc(format!("isBlockhashValid: {}", e.message))),
            None => Err(ChainError::Rpc("no isBlockhashValid answer".into())),
        }
    }

    /// Polls until confirmed, definitively not landed, or unknown.
    async fn confirm(&self, signed: &Signed) -> SvmSettleOutcome {
        let signature = signed.signature.clone();
        let pending = |detail: String| SvmSettleOutcome::Pending {
            signature: signature.clone(),
            detail,
        };
        let start = tokio::time::Instant::now();
        let deadline = start + self.confirm_timeout;
        let mut last_send = start;
        let mut failures = 0u32;
        loop {
            match self.poll(signed).await {
                Ok(Some(outcome)) => return outcome,
                Ok(None) => failures = 0,
                Err(error) => {
                    failures += 1;
                    if failures >= self.max_rpc_failures {
                        return pending(format!(
                            "the RPC stopped answering while confirming ({error})"
                        ));
                    }
                }
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return pending(format!(
                    "not confirmed within {} s and the blockhash is still valid",
                    self.confirm_timeout.as_secs_f32()
                ));
            }
            if failures == 0 && now.duration_since(last_send) >= REBROADCAST_EVERY {
                last_send = now;
                // Idempotent (same signature); the answer does not matter.
                let _ = self.send(signed, true).await;
            }
            tokio::time::sleep(self.poll_interval.min(deadline - now)).await;
        }
    }

    /// One poll: `Some` when decided.
    async fn poll(&self, signed: &Signed) -> Result<Option<SvmSettleOutcome>, ChainError> {
        let decided = |status: Status| match status {
            Status::Confirmed { error: None } => Some(SvmSettleOutcome::Settled {
                signature: signed.signature.clone(),
            }),
            Status::Confirmed { error: Some(error) } => Some(SvmSettleOutcome::Failed {
                reason: Reason::new(
                    ReasonCode::Svm(TRANSACTION_FAILED),
                    format!("the settlement transaction landed and failed: {error}"),
                ),
                signature: Some(signed.signature.clone()),
            }),
            _ => None,
        };
        let status = self.status(&signed.signature, false).await?;
        if !matches!(status, Status::Unknown) {
            return Ok(decided(status));
        }
        if self.blockhash_valid(&signed.blockhash).await? {
            return Ok(None);
        }
        // Expired: one last look, after the expiry was seen, with the full history.
        let status = self.status(&signed.signature, true).await?;
        if matches!(status, Status::Unknown) {
            return Ok(Some(SvmSettleOutcome::Failed {
                reason: Reason::new(
                    ReasonCode::Svm(BLOCK_HEIGHT_EXCEEDED),
                    "the transaction did not land before its blockhash expired; nothing was transferred and the payment may be retried",
                ),
                signature: None,
            }));
        }
        Ok(decided(status))
    }
}

/// The recent blockhash of a payment's transaction.
fn blockhash_of(payment: &Payment) -> Option<String> {
    let Authorization::SvmTransaction {
        transaction_base64, ..
    } = &payment.authorization
    else {
        return None;
    };
    transaction::decode(transaction_base64)
        .ok()
        .map(|d| d.tx.message.recent_blockhash().to_string())
}

/// Settlers per CAIP-2 id, for wiring.
pub type SvmSettlers = BTreeMap<String, Arc<SvmSettler>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keypairs_parse_from_json_and_base58_and_must_be_consistent() {
        let signing = SigningKey::from_bytes(&[7u8; 32]);
        let bytes = signing.to_keypair_bytes();
        let json_text = serde_json::to_string(&bytes.to_vec()).unwrap();
        let from_json = SvmKey::parse(&format!("{json_text}\n")).unwrap();
        let from_b58 = SvmKey::parse(&bs58::encode(bytes).into_string()).unwrap();
        assert_eq!(from_json.pubkey(), from_b58.pubkey());
        assert_eq!(
            from_json.pubkey().to_bytes(),
            signing.verifying_key().to_bytes()
        );
        assert!(!format!("{from_json:?}").contains(&json_text));

        let mut wrong = bytes;
        wrong[40] ^= 1;
        assert!(matches!(
            SvmKey::parse(&bs58::encode(wrong).into_string()),
            Err(SvmKeyError::Mismatch)
        ));
        assert!(matches!(SvmKey::parse("[1,2,3]"), Err(SvmKeyError::Format)));
        assert!(matches!(SvmKey::parse("0xabc"), Err(SvmKeyError::Format)));
    }
}
