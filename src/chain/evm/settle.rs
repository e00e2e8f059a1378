//! Local EIP-3009 settlement (spec §3.7) and reconciliation of unknown outcomes.
//!
//! Settlement sends `transferWithAuthorization` from the facilitator's own key. Everything the
//! transaction needs (account nonce, fees, gas estimate) comes from one JSON-RPC batch; a gas
//! estimate that reverts is a definitive failure mapped to the reason table of §3.7, nothing
//! having been broadcast. Once a signed transaction may have left, any trouble (send or receipt
//! timeout, RPC down) is an *unknown* outcome that keeps the hash, never a plain failure
//! (DESIGN invariant 2); [`EvmSettler::reconcile`] later resolves it from the chain.
//!
//! Transactions from one key are serialised per chain behind a lock that also tracks the next
//! account nonce, so concurrent settles do not replace each other (spec §6.4 item 13).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use alloy::consensus::{SignableTransaction, TxEip1559, TxEnvelope};
use alloy::eips::eip2718::Encodable2718;
use alloy::network::TxSignerSync;
use alloy::primitives::{Address, B256, Bytes, TxKind, U256};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::{SolCall, SolError};
use serde_json::{Value, json};
use tokio::sync::Mutex;

use super::abi::{IEip3009Token, TransferWithAuthorization};
use super::{EvmChecker, EvmConfigError, simulation_calldata};
use crate::chain::{ChainConfig, ChainError};
use crate::protocol::Payment;
use crate::protocol::payment::Authorization;
use crate::verdict::{Reason, ReasonCode};

/// How a settlement ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettleOutcome {
    /// Mined with status success.
    Settled {
        /// Transaction hash.
        tx: B256,
    },
    /// Definitively not settled. `tx` is set when a transaction was mined and reverted.
    Failed {
        /// Why (spec §3.7 vocabulary).
        reason: Reason,
        /// The reverted transaction, if one was mined.
        tx: Option<B256>,
    },
    /// Unknown: a transaction may be in flight. Reconcile later; never report as failed.
    Pending {
        /// The hash of the signed transaction (known before it is sent).
        tx: B256,
        /// What went wrong.
        detail: String,
    },
}

/// What the chain says about an earlier settlement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reconciled {
    /// The transaction was mined and succeeded.
    Settled {
        /// The transaction hash, when known.
        tx: Option<B256>,
    },
    /// The transaction was mined and reverted, and the authorization is still unused.
    Reverted {
        /// Transaction hash.
        tx: B256,
    },
    /// The authorization is unused and no known transaction is mined yet.
    NotSettled {
        /// True when `validBefore` has passed, so it can never settle any more.
        expired: bool,
    },
}

/// Settles EIP-3009 payments from one facilitator key.
#[derive(Debug)]
pub struct EvmSettler {
    checker: EvmChecker,
    signer: PrivateKeySigner,
    receipt_timeout: Duration,
    poll_interval: Duration,
    next_nonce: HashMap<u64, Mutex<Option<u64>>>,
    gas_caps: HashMap<u64, GasCaps>,
}

/// Default cap on a settlement's gas limit.
pub const DEFAULT_MAX_GAS_LIMIT: u64 = 500_000;

/// What one chain's settlements may spend on gas.
#[derive(Debug, Clone, Copy)]
struct GasCaps {
    max_fee_per_gas_wei: Option<u128>,
    max_gas_limit: u64,
}

impl EvmSettler {
    /// A settler for every `eip155:*` chain in `chains`, signing with `signer`, waiting up to
    /// `receipt_timeout` for a receipt (the reference waits 180 s).
    pub fn new(
        chains: &BTreeMap<String, ChainConfig>,
        signer: PrivateKeySigner,
        receipt_timeout: Duration,
    ) -> Result<Self, EvmConfigError> {
        let checker = EvmChecker::new(chains)?;
        let next_nonce = checker
            .chain_ids()
            .map(|id| (id, Mutex::new(None)))
            .collect();
        let gas_caps = chains
            .iter()
            .filter_map(|(id, chain)| {
                let chain_id = crate::protocol::Network::resolve(id).ok()?.evm_chain_id()?;
                let caps = GasCaps {
                    max_fee_per_gas_wei: chain.max_fee_per_gas_wei.map(u128::from),
                    max_gas_limit: chain.max_gas_limit.unwrap_or(DEFAULT_MAX_GAS_LIMIT),
                };
                Some((chain_id, caps))
            })
            .collect();
        Ok(Self {
            checker,
            signer,
            receipt_timeout,
            poll_interval: Duration::from_millis(250),
            next_nonce,
            gas_caps,
        })
    }

    /// The facilitator address that sends settlements.
    pub fn address(&self) -> Address {
        self.signer.address()
    }

    /// RPC round trips since start.
    pub fn rpc_round_trips(&self) -> u64 {
        self.checker.rpc_round_trips()
    }

    /// Settles an approved payment. `Err` only when nothing was sent (RPC down before signing).
    pub async fn settle(&self, payment: &Payment) -> Result<SettleOutcome, ChainError> {
        let (chain_id, asset, message, signature) = parts(payment)?;
        let ctx = self.ctx(chain_id, payment)?;
        let data = simulation_calldata(&message, &signature_inner(&signature));
        let from = self.signer.address();
        let call = json!({"from": from, "to": asset, "data": data});

        let lock = self
            .next_nonce
            .get(&chain_id)
            .ok_or_else(|| ChainError::NotConfigured(payment.network.caip2.to_string()))?;
        let mut next = lock.lock().await;
        let answers = ctx
            .rpc
            .batch(&[
                ("eth_getTransactionCount", json!([from, "pending"])),
                ("eth_gasPrice", json!([])),
                ("eth_maxPriorityFeePerGas", json!([])),
                ("eth_estimateGas", json!([call])),
            ])
            .await?;
        let quantity = |i: usize| -> Option<u128> {
            let s = answers.get(i)?.as_ref().ok()?.as_str()?;
            u128::from_str_radix(s.trim_start_matches("0x"), 16).ok()
        };
        let gas = match answers.get(3) {
            Some(Ok(_)) => quantity(3),
            Some(Err(e)) => {
                // Reverted in estimation: nothing is broadcast, the failure is definitive.
                let text = format!(
                    "{} {}",
                    e.message,
                    e.data
                        .as_deref()
                        .and_then(|d| d.parse::<Bytes>().ok())
                        .and_then(|b| alloy::sol_types::Revert::abi_decode(&b).ok())
                        .map(|r| r.reason)
                        .unwrap_or_default()
                );
                return Ok(SettleOutcome::Failed {
                    reason: Reason::new(map_revert(&text), text.trim().to_owned()),
                    tx: None,
                });
            }
            None => None,
        };
        let (Some(pending_nonce), Some(gas_price), Some(gas)) = (quantity(0), quantity(1), gas)
        else {
            return Err(ChainError::Rpc(
                "settle: unusable nonce/fee/gas answers".into(),
            ));
        };
        let pending_nonce = u64::try_from(pending_nonce)
            .map_err(|_| ChainError::Rpc("settle: nonce out of range".into()))?;
        let nonce = next.map_or(pending_nonce, |n| n.max(pending_nonce));
        let priority = quantity(2).unwrap_or(0).min(gas_price);
        // Gas caps: refuse before signing (the nonce stays unused) rather than overpay.
        let caps = self.gas_caps.get(&chain_id).copied().unwrap_or(GasCaps {
            max_fee_per_gas_wei: None,
            max_gas_limit: DEFAULT_MAX_GAS_LIMIT,
        });
        let gas_limit = u64::try_from(gas.saturating_mul(12) / 10).unwrap_or(u64::MAX);
        let mut max_fee = gas_price.saturating_mul(2).max(priority);
        let over_cap = |message: String| {
            Ok(SettleOutcome::Failed {
                reason: Reason::new(ReasonCode::CheckUnavailable, message),
                tx: None,
            })
        };
        if gas_limit > caps.max_gas_limit {
            return over_cap(format!(
                "settlement needs a gas limit of {gas_limit}, above the cap of {}; nothing was sent",
                caps.max_gas_limit
            ));
        }
        if let Some(cap) = caps.max_fee_per_gas_wei {
            if gas_price > cap {
                return over_cap(format!(
                    "the network gas price ({gas_price} wei) is above max_fee_per_gas_wei ({cap}); nothing was sent"
                ));
            }
            max_fee = max_fee.min(cap);
        }
        let mut tx = TxEip1559 {
            chain_id,
            nonce,
            gas_limit,
            max_fee_per_gas: max_fee,
            max_priority_fee_per_gas: priority,
            to: TxKind::Call(asset),
            value: U256::ZERO,
            access_list: Default::default(),
            input: data,
        };
        let sig = self
            .signer
            .sign_transaction_sync(&mut tx)
            .map_err(|e| ChainError::Rpc(format!("settle: signing failed: {e}")))?;
        let signed = tx.into_signed(sig);
        let hash = *signed.hash();
        let raw = Bytes::from(TxEnvelope::from(signed).encoded_2718());
        // From here on the transaction may exist: every failure is an unknown outcome.
        *next = Some(nonce.saturating_add(1));
        let sent = ctx
            .rpc
            .batch(&[("eth_sendRawTransaction", json!([raw]))])
            .await;
        match sent {
            Ok(answers) => {
                if let Some(Err(e)) = answers.first()
                    && !e.message.to_ascii_lowercase().contains("already known")
                {
                    // The node refused the transaction outright: the nonce was not used. ("already
                    // known" means it is in the pool after all; wait for it below.)
                    *next = None;
                    return Ok(SettleOutcome::Failed {
                        reason: Reason::new(map_revert(&e.message), e.message.clone()),
                        tx: None,
                    });
                }
            }
            Err(e) => {
                *next = None;
                return Ok(SettleOutcome::Pending {
                    tx: hash,
                    detail: format!("broadcast outcome unknown: {e}"),
                });
            }
        }
        drop(next);
        Ok(match self.wait_receipt(ctx, hash).await {
            Ok(Some(true)) => SettleOutcome::Settled { tx: hash },
            Ok(Some(false)) => SettleOutcome::Failed {
                reason: Reason::new(
                    ReasonCode::EvmTransactionFailed,
                    "the settlement transaction reverted",
                ),
                tx: Some(hash),
            },
            Ok(None) => SettleOutcome::Pending {
                tx: hash,
                detail: format!("no receipt within {} s", self.receipt_timeout.as_secs_f32()),
            },
            Err(e) => SettleOutcome::Pending {
                tx: hash,
                detail: format!("receipt unknown: {e}"),
            },
        })
    }

    /// Resolves an unknown outcome from the chain: the receipt of `tx` when given, else (and
    /// also after a revert) whether the authorization's nonce is used on the token.
    pub async fn reconcile(
        &self,
        payment: &Payment,
        tx: Option<B256>,
        now_secs: u64,
    ) -> Result<Reconciled, ChainError> {
        let (chain_id, asset, message, _) = parts(payment)?;
        let ctx = self.ctx(chain_id, payment)?;
        let state = IEip3009Token::authorizationStateCall {
            authorizer: message.from,
            nonce: message.nonce,
        }
        .abi_encode();
        let mut calls = vec![(
            "eth_call",
            json!([{"to": asset, "data": Bytes::from(state)}, "latest"]),
        )];
        if let Some(tx) = tx {
            calls.push(("eth_getTransactionReceipt", json!([tx])));
        }
        let answers = ctx.rpc.batch(&calls).await?;
        let used = match answers.first() {
            Some(Ok(Value::String(s))) => s
                .parse::<Bytes>()
                .ok()
                .and_then(|b| IEip3009Token::authorizationStateCall::abi_decode_returns(&b).ok())
                .ok_or_else(|| ChainError::Rpc("authorizationState: bad answer".into()))?,
            other => {
                return Err(ChainError::Rpc(format!("authorizationState: {other:?}")));
            }
        };
        let receipt_status = answers
            .get(1)
            .and_then(|r| r.as_ref().ok())
            .and_then(|r| r.get("status").and_then(Value::as_str).map(|s| s == "0x1"));
        Ok(match (receipt_status, used, tx) {
            (Some(true), _, tx) => Reconciled::Settled { tx },
            // Used by some other transaction (e.g. the upstream's): the payment did land.
            (_, true, _) => Reconciled::Settled { tx: None },
            (Some(false), false, Some(tx)) => Reconciled::Reverted { tx },
            _ => Reconciled::NotSettled {
                expired: message.validBefore <= U256::from(now_secs),
            },
        })
    }

    fn ctx(&self, chain_id: u64, payment: &Payment) -> Result<&super::ChainCtx, ChainError> {
        self.checker
            .chains
            .get(&chain_id)
            .ok_or_else(|| ChainError::NotConfigured(payment.network.caip2.to_string()))
    }

    /// `Some(success)` once mined; `None` after the timeout.
    async fn wait_receipt(
        &self,
        ctx: &super::ChainCtx,
        hash: B256,
    ) -> Result<Option<bool>, ChainError> {
        let deadline = tokio::time::Instant::now() + self.receipt_timeout;
        loop {
            let answers = ctx
                .rpc
                .batch(&[("eth_getTransactionReceipt", json!([hash]))])
                .await?;
            if let Some(Ok(receipt)) = answers.first()
                && let Some(status) = receipt.get("status").and_then(Value::as_str)
            {
                return Ok(Some(status == "0x1"));
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(self.poll_interval).await;
        }
    }
}

/// The settle-relevant parts of an EIP-3009 payment.
fn parts(
    payment: &Payment,
) -> Result<(u64, Address, TransferWithAuthorization, Bytes), ChainError> {
    let not_evm = || ChainError::NotConfigured(payment.network.caip2.to_string());
    let chain_id = payment.evm_chain_id().ok_or_else(not_evm)?;
    let asset: Address = payment.asset.parse().map_err(|_| not_evm())?;
    let Authorization::Eip3009 {
        from,
        to,
        value,
        valid_after_secs,
        valid_before_secs,
        nonce,
        signature,
    } = &payment.authorization
    else {
        return Err(not_evm());
    };
    Ok((
        chain_id,
        asset,
        TransferWithAuthorization {
            from: *from,
            to: *to,
            value: value.0,
            validAfter: U256::from(*valid_after_secs),
            validBefore: U256::from(*valid_before_secs),
            nonce: *nonce,
        },
        signature.clone(),
    ))
}

/// The signature the token sees: ERC-6492 wrappers are unwrapped (deployment is not done here).
fn signature_inner(sig: &Bytes) -> Bytes {
    match super::signature::classify(sig) {
        super::signature::SignatureForm::Wrapped(w) => w.inner,
        _ => sig.clone(),
    }
}

/// Maps a revert or node message to a reason, as the reference does (spec §3.7 table).
pub fn map_revert(message: &str) -> ReasonCode {
    let m = message.to_ascii_lowercase();
    let has = |a: &str, b: &str| m.find(a).is_some_and(|i| m[i..].contains(b));
    if has("authorization", "expired")
        || m.contains("valid before")
        || m.contains("authorizationexpired")
    {
        ReasonCode::EvmValidBefore
    } else if has("authorization", "not yet valid") || m.contains("authorizationnotyetvalid") {
        ReasonCode::EvmValidAfter
    } else if has("authorization", "used")
        || m.contains("authorizationalreadyused")
        || m.contains("authorizationusedorcanceled")
    {
        ReasonCode::EvmNonceAlreadyUsed
    } else if has("transfer", "exceeds balance")
        || has("insufficient", "balance")
        || m.contains("erc20insufficientbalance")
    {
        ReasonCode::EvmInsufficientBalance
    } else if has("invalid", "signature")
        || m.contains("signermismatch")
        || m.contains("invalidsignaturev")
        || m.contains("invalidsignatures")
    {
        ReasonCode::EvmSignature
    } else {
        ReasonCode::EvmTransactionFailed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revert_messages_map_like_the_reference() {
        let cases = [
            (
                "execution reverted: FiatTokenV2: authorization is expired",
                ReasonCode::EvmValidBefore,
            ),
            (
                "FiatTokenV2: authorization is not yet valid",
                ReasonCode::EvmValidAfter,
            ),
            (
                "FiatTokenV2: authorization is used or canceled",
                ReasonCode::EvmNonceAlreadyUsed,
            ),
            (
                "ERC20: transfer amount exceeds balance",
                ReasonCode::EvmInsufficientBalance,
            ),
            ("FiatTokenV2: invalid signature", ReasonCode::EvmSignature),
            ("out of gas", ReasonCode::EvmTransactionFailed),
        ];
        for (msg, code) in cases {
            assert_eq!(map_revert(msg), code, "{msg}");
        }
    }
}
