//! EVM `exact` / EIP-3009 verification (spec §3.3, §3.4, §3.6), for x402 v1 and v2.
//!
//! The checks run in the TS v2 reference order, so Gatehouse's first reason matches what the
//! upstream facilitator would say: scheme, accepted-vs-requirements, EIP-712 domain, network,
//! signature, recipient, time window, value, asset code, simulation. Everything on-chain comes
//! from ONE JSON-RPC batch (code of `from` and of the asset, plus one Multicall3 `aggregate3`
//! `eth_call` holding the simulation and the diagnostic reads), so a verify costs one round trip.
//! If no endpoint answers, the check returns `Err(ChainError::Rpc)` and the caller denies.

pub mod abi;
pub mod assets;
pub mod rpc;
pub mod settle;
pub mod signature;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use alloy::primitives::{Address, B256, Bytes, U256, address};
use alloy::sol_types::{Revert, SolCall, SolError};
use async_trait::async_trait;
use serde_json::{Value, json};

use crate::chain::{ChainChecker, ChainConfig, ChainError};
use crate::protocol::Payment;
use crate::protocol::payment::Authorization;
use crate::verdict::{Gate, Reason, ReasonCode, Step, Verdict};

use abi::{IEip3009Token, IErc1271, IMulticall3, TransferWithAuthorization};
pub use assets::{KnownAsset, asset_decimals};
use rpc::{CallError, RpcClient};
use signature::{EoaSignature, SignatureForm};

/// The canonical Multicall3 address, the same on every chain that has it.
pub const MULTICALL3: Address = address!("cA11bde05977b3631167028862bE2a173976CA11");
/// `validBefore` must be at least this far in the future (block time; spec §6.1).
pub const VALID_BEFORE_BUFFER_SECS: u64 = 6;
/// Default allowance for `validBefore` beyond `now + maxTimeoutSeconds`.
pub const DEFAULT_VALID_BEFORE_SLACK_SECS: u64 = 60;
/// Default timeout of one RPC request.
pub const DEFAULT_RPC_TIMEOUT_MS: u64 = 5_000;
/// The EIP-1271 "valid" return value.
const ERC1271_MAGIC: [u8; 4] = [0x16, 0x26, 0xba, 0x7e];

/// A configuration the checker cannot run with.
#[derive(Debug, thiserror::Error)]
pub enum EvmConfigError {
    /// The CAIP-2 reference of an `eip155:*` key is not a number.
    #[error("chain `{0}`: the eip155 reference is not a chain id")]
    ChainId(String),
    /// An address in the config does not parse.
    #[error("chain `{chain}`: `{value}` is not an address ({field})")]
    Address {
        /// The chain key.
        chain: String,
        /// The option.
        field: &'static str,
        /// The offending value.
        value: String,
    },
}

/// Token metadata read from the chain, cached.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TokenMeta {
    name: String,
    version: String,
}

/// One configured EVM chain.
#[derive(Debug)]
struct ChainCtx {
    rpc: RpcClient,
    multicall3: bool,
    assets: Vec<KnownAsset>,
    allowed_factories: Vec<Address>,
    slack_secs: u64,
    simulation_from: Address,
}

/// Checks EIP-3009 payments on every configured `eip155:*` chain.
#[derive(Debug)]
pub struct EvmChecker {
    chains: HashMap<u64, ChainCtx>,
    round_trips: Arc<AtomicU64>,
    token_meta: moka::future::Cache<(u64, Address), TokenMeta>,
    asset_has_code: moka::future::Cache<(u64, Address), ()>,
}

/// One call's outcome inside the on-chain read, whatever transport carried it.
#[derive(Debug, Clone)]
struct CallOutcome {
    success: bool,
    data: Bytes,
}

impl CallOutcome {
    fn revert_reason(&self) -> String {
        match Revert::abi_decode(&self.data) {
            Ok(r) => r.reason,
            Err(_) if self.data.is_empty() => "reverted without a reason".into(),
            Err(_) => format!("reverted with data {}", self.data),
        }
    }
}

/// The reads of one verify.
#[derive(Debug)]
struct OnChain {
    from_code: bool,
    asset_code: bool,
    simulation: CallOutcome,
    balance: CallOutcome,
    auth_state: CallOutcome,
    name: Option<CallOutcome>,
    version: Option<CallOutcome>,
    erc1271: Option<CallOutcome>,
}

/// What the signature step decided.
enum SigCheck {
    /// Valid; the string says how it was checked.
    Valid(&'static str),
    /// A counterfactual wallet from an allowlisted factory: the simulation decides.
    Counterfactual,
    /// Invalid.
    Deny(Reason),
}

fn parse_address(chain: &str, field: &'static str, value: &str) -> Result<Address, EvmConfigError> {
    value.parse().map_err(|_| EvmConfigError::Address {
        chain: chain.to_owned(),
        field,
        value: value.to_owned(),
    })
}

impl EvmChecker {
    /// Builds a checker for every `eip155:*` entry of `chains` (CAIP-2 id → config). Chains with
    /// no `rpc_urls` use the known public endpoints for Base and Base Sepolia.
    pub fn new(chains: &BTreeMap<String, ChainConfig>) -> Result<Self, EvmConfigError> {
        let round_trips = Arc::new(AtomicU64::new(0));
        let mut out = HashMap::new();
        for (key, cfg) in chains {
            let Some(reference) = key.strip_prefix("eip155:") else {
                continue;
            };
            let chain_id: u64 = reference
                .parse()
                .map_err(|_| EvmConfigError::ChainId(key.clone()))?;
            let urls = if cfg.rpc_urls.is_empty() {
                assets::default_rpc_urls(chain_id)
                    .iter()
                    .map(|s| (*s).to_owned())
                    .collect()
            } else {
                cfg.rpc_urls.clone()
            };
            let timeout =
                Duration::from_millis(cfg.rpc_timeout_ms.unwrap_or(DEFAULT_RPC_TIMEOUT_MS));
            let mut known: Vec<KnownAsset> = assets::builtin_assets()
                .into_iter()
                .filter(|a| a.chain_id == chain_id)
                .collect();
            for a in &cfg.assets {
                let address = parse_address(key, "assets.address", &a.address)?;
                known.retain(|k| k.address != address);
                known.push(KnownAsset {
                    chain_id,
                    address,
                    name: a.name.clone(),
                    version: a.version.clone(),
                    decimals: a.decimals,
                });
            }
            let allowed_factories = cfg
                .eip6492_allowed_factories
                .iter()
                .map(|f| parse_address(key, "eip6492_allowed_factories", f))
                .collect::<Result<Vec<_>, _>>()?;
            let simulation_from = match &cfg.simulation_from {
                Some(s) => parse_address(key, "simulation_from", s)?,
                None => Address::ZERO,
            };
            out.insert(
                chain_id,
                ChainCtx {
                    rpc: RpcClient::new(urls, timeout, round_trips.clone()),
                    multicall3: cfg
                        .multicall3
                        .unwrap_or_else(|| assets::has_multicall3(chain_id)),
                    assets: known,
                    allowed_factories,
                    slack_secs: cfg
                        .valid_before_slack_secs
                        .unwrap_or(DEFAULT_VALID_BEFORE_SLACK_SECS),
                    simulation_from,
                },
            );
        }
        Ok(Self {
            chains: out,
            round_trips,
            token_meta: moka::future::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(Duration::from_secs(3600))
                .build(),
            asset_has_code: moka::future::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(Duration::from_secs(3600))
                .build(),
        })
    }

    /// HTTP round trips to RPC endpoints since start (a failover attempt counts as one).
    pub fn rpc_round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::Relaxed)
    }

    /// A shared handle on the round-trip counter, e.g. for metrics.
    pub fn rpc_round_trip_counter(&self) -> Arc<AtomicU64> {
        self.round_trips.clone()
    }

    /// Decimals of `asset` on `chain_id` from the configured and built-in asset tables; `None`
    /// for a token Gatehouse does not know (policy may flag it).
    pub fn asset_decimals(&self, chain_id: u64, asset: Address) -> Option<u8> {
        self.known_asset(chain_id, asset).map(|a| a.decimals)
    }

    /// The known-asset entry for `asset` on `chain_id`, if any.
    pub fn known_asset(&self, chain_id: u64, asset: Address) -> Option<&KnownAsset> {
        self.chains
            .get(&chain_id)?
            .assets
            .iter()
            .find(|a| a.address == asset)
    }

    /// Chain ids this checker serves.
    pub fn chain_ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.chains.keys().copied()
    }

    async fn check_eip3009(&self, payment: &Payment, now_secs: u64) -> Result<Verdict, ChainError> {
        let deny =
            |code: ReasonCode, msg: String| Ok(Verdict::deny(Step::Chain, Reason::new(code, msg)));
        let Authorization::Eip3009 {
            from,
            to,
            value,
            valid_after_secs,
            valid_before_secs,
            nonce,
            signature: sig_bytes,
        } = &payment.authorization
        else {
            return deny(
                ReasonCode::EvmPayload,
                "the EVM checker verifies EIP-3009 authorizations only".into(),
            );
        };

        // 1–3: scheme, accepted vs requirements, EIP-712 domain, network.
        if payment.scheme != "exact" || payment.accepted_mismatches.contains(&"scheme") {
            return deny(
                ReasonCode::EvmScheme,
                format!("scheme `{}` is not `exact`", payment.scheme),
            );
        }
        if payment.accepted_mismatches.contains(&"network") {
            return deny(
                ReasonCode::EvmNetworkMismatch,
                "the payload's network differs from the requirements".into(),
            );
        }
        if !payment.accepted_mismatches.is_empty() {
            return deny(
                ReasonCode::EvmAcceptedMismatch,
                format!(
                    "accepted differs from the requirements in: {}",
                    payment.accepted_mismatches.join(", ")
                ),
            );
        }
        let (Some(name), Some(version)) = (
            payment
                .extra
                .eip712_name
                .as_deref()
                .filter(|s| !s.is_empty()),
            payment
                .extra
                .eip712_version
                .as_deref()
                .filter(|s| !s.is_empty()),
        ) else {
            return deny(
                ReasonCode::EvmMissingEip712Domain,
                "requirements.extra must carry the token's EIP-712 name and version".into(),
            );
        };
        let Some(chain_id) = payment.evm_chain_id() else {
            return deny(
                ReasonCode::EvmNetworkMismatch,
                format!("`{}` is not an EVM network", payment.network.caip2),
            );
        };
        let Some(ctx) = self.chains.get(&chain_id) else {
            return Err(ChainError::NotConfigured(payment.network.caip2.to_string()));
        };
        let Ok(asset) = payment.asset.parse::<Address>() else {
            return deny(
                ReasonCode::InvalidPaymentRequirements,
                format!("asset `{}` is not an address", payment.asset),
            );
        };
        let Ok(pay_to) = payment.pay_to.parse::<Address>() else {
            return deny(
                ReasonCode::InvalidPaymentRequirements,
                format!("payTo `{}` is not an address", payment.pay_to),
            );
        };

        // The typed data the payer must have signed, with the domain from the requirements.
        let message = TransferWithAuthorization {
            from: *from,
            to: *to,
            value: value.0,
            validAfter: U256::from(*valid_after_secs),
            validBefore: U256::from(*valid_before_secs),
            nonce: *nonce,
        };
        let digest =
            signature::digest(&message, &signature::domain(name, version, chain_id, asset));
        let form = signature::classify(sig_bytes);
        let inner: Bytes = match &form {
            SignatureForm::Plain(b) => b.clone(),
            SignatureForm::Wrapped(w) => w.inner.clone(),
            SignatureForm::MalformedWrapper => {
                return deny(
                    ReasonCode::EvmSignature,
                    "signature ends with the ERC-6492 magic but does not decode".into(),
                );
            }
        };
        let factory_call = match &form {
            SignatureForm::Wrapped(w) if ctx.allowed_factories.contains(&w.factory) => {
                Some((w.factory, w.factory_calldata.clone()))
            }
            _ => None,
        };

        // 4: everything on-chain, in one round trip.
        let chain = self
            .read_chain(ctx, chain_id, asset, &message, &inner, digest, factory_call)
            .await?;

        // 5–6: signature, routed by the code at `from` (no ECDSA fallback for contracts).
        let mut checked = vec![];
        match self.check_signature(ctx, &form, &inner, &chain, *from, digest) {
            SigCheck::Valid(how) => checked.push(how.to_owned()),
            SigCheck::Counterfactual => checked.push("erc6492 (simulated deployment)".into()),
            SigCheck::Deny(r) => return Ok(Verdict::deny(Step::Chain, r)),
        }

        // 7–10: recipient, time window, value.
        if *to != pay_to {
            return deny(
                ReasonCode::EvmRecipientMismatch,
                format!("authorization pays {to}, the requirements pay {pay_to}"),
            );
        }
        if *valid_before_secs < now_secs.saturating_add(VALID_BEFORE_BUFFER_SECS) {
            return deny(
                ReasonCode::EvmValidBefore,
                format!(
                    "validBefore {valid_before_secs} is earlier than now ({now_secs}) + {VALID_BEFORE_BUFFER_SECS} s"
                ),
            );
        }
        if *valid_after_secs > now_secs {
            return deny(
                ReasonCode::EvmValidAfter,
                format!("validAfter {valid_after_secs} is later than now ({now_secs})"),
            );
        }
        let latest = now_secs
            .saturating_add(payment.max_timeout_secs)
            .saturating_add(ctx.slack_secs);
        if *valid_before_secs > latest {
            return deny(
                ReasonCode::EvmValidBeforeTooFar,
                format!(
                    "validBefore {valid_before_secs} is later than now + maxTimeoutSeconds ({}) + {} s",
                    payment.max_timeout_secs, ctx.slack_secs
                ),
            );
        }
        if *value != payment.amount {
            return deny(
                ReasonCode::EvmAuthorizationValue,
                format!(
                    "authorization value {value} differs from the required amount {}",
                    payment.amount
                ),
            );
        }
        if !chain.asset_code {
            return deny(
                ReasonCode::AssetNotDeployedContract,
                format!("asset {asset} has no contract code"),
            );
        }

        // 11: simulation, with the diagnosis of spec §3.6 when it fails.
        if chain.simulation.success {
            self.remember_token_meta(chain_id, asset, &chain).await;
            checked.push(if ctx.multicall3 {
                "simulation (multicall3)".into()
            } else {
                "simulation".into()
            });
            // A token outside the known-asset table is never silently trusted: the verdict
            // (and so the evidence) says so, and `policy.*.allowed_assets` can refuse it.
            match self.asset_decimals(chain_id, asset) {
                Some(decimals) => checked.push(format!("known asset ({decimals} decimals)")),
                None => checked.push(format!(
                    "unverified currency: {asset:#x} is not in the known-asset table (decimals unknown)"
                )),
            }
            let mut v = Verdict::allow(Step::Chain);
            v.checked = checked;
            return Ok(v);
        }
        Ok(Verdict::deny(
            Step::Chain,
            diagnose(&chain, name, version, payment.amount.0),
        ))
    }

    fn check_signature(
        &self,
        ctx: &ChainCtx,
        form: &SignatureForm,
        inner: &Bytes,
        chain: &OnChain,
        from: Address,
        digest: B256,
    ) -> SigCheck {
        let bad = |msg: String| SigCheck::Deny(Reason::new(ReasonCode::EvmSignature, msg));
        if chain.from_code {
            let valid = chain.erc1271.as_ref().is_some_and(|o| {
                o.success
                    && IErc1271::isValidSignatureCall::abi_decode_returns(&o.data)
                        .is_ok_and(|m| m.0 == ERC1271_MAGIC)
            });
            return if valid {
                SigCheck::Valid("eip1271 signature")
            } else {
                bad(format!(
                    "the wallet at {from} rejected the signature (EIP-1271)"
                ))
            };
        }
        if let SignatureForm::Wrapped(w) = form {
            return if ctx.allowed_factories.contains(&w.factory) && !ctx.multicall3 {
                // The deployment and the transfer must be simulated in one state context,
                // which needs Multicall3.
                SigCheck::Deny(Reason::new(
                    ReasonCode::EvmUndeployedSmartWallet,
                    format!(
                        "{from} is not deployed and this chain has no Multicall3 to simulate its deployment"
                    ),
                ))
            } else if ctx.allowed_factories.contains(&w.factory) {
                SigCheck::Counterfactual
            } else {
                SigCheck::Deny(Reason::new(
                    ReasonCode::Eip6492FactoryNotAllowed,
                    format!("ERC-6492 factory {} is not on the allowlist", w.factory),
                ))
            };
        }
        if inner.len() > 65 {
            return SigCheck::Deny(Reason::new(
                ReasonCode::EvmUndeployedSmartWallet,
                format!("{from} has no code and the signature is not an EOA signature"),
            ));
        }
        match EoaSignature::parse(inner).and_then(|s| s.recover(&digest)) {
            Ok(signer) if signer == from => SigCheck::Valid("eoa signature"),
            Ok(signer) => bad(format!(
                "signature recovers to {signer}, not to from {from} (wrong key or EIP-712 domain)"
            )),
            Err(e) => bad(e.to_string()),
        }
    }

    #[allow(clippy::too_many_arguments)] // the parts of one read; a struct would only rename them
    async fn read_chain(
        &self,
        ctx: &ChainCtx,
        chain_id: u64,
        asset: Address,
        message: &TransferWithAuthorization,
        inner_sig: &Bytes,
        digest: B256,
        factory_call: Option<(Address, Bytes)>,
    ) -> Result<OnChain, ChainError> {
        let from = message.from;
        let cached_code = self.asset_has_code.get(&(chain_id, asset)).await.is_some();
        let cached_meta = self.token_meta.get(&(chain_id, asset)).await;

        let simulation = simulation_calldata(message, inner_sig);
        // (target, calldata, allow failure) in a fixed order; indices below depend on it.
        let mut calls: Vec<(Address, Bytes)> = Vec::new();
        if let Some((factory, data)) = &factory_call {
            calls.push((*factory, data.clone()));
        }
        let base = calls.len();
        calls.push((asset, simulation));
        calls.push((
            asset,
            IEip3009Token::balanceOfCall { account: from }
                .abi_encode()
                .into(),
        ));
        calls.push((
            asset,
            IEip3009Token::authorizationStateCall {
                authorizer: from,
                nonce: message.nonce,
            }
            .abi_encode()
            .into(),
        ));
        calls.push((
            from,
            IErc1271::isValidSignatureCall {
                hash: digest,
                signature: inner_sig.clone(),
            }
            .abi_encode()
            .into(),
        ));
        if cached_meta.is_none() {
            calls.push((asset, IEip3009Token::nameCall {}.abi_encode().into()));
            calls.push((asset, IEip3009Token::versionCall {}.abi_encode().into()));
        }

        let mut rpc_calls: Vec<(&str, Value)> = vec![("eth_getCode", json!([from, "latest"]))];
        if !cached_code {
            rpc_calls.push(("eth_getCode", json!([asset, "latest"])));
        }
        let first_call = rpc_calls.len();
        if ctx.multicall3 {
            let data = IMulticall3::aggregate3Call {
                calls: calls
                    .iter()
                    .map(|(target, data)| IMulticall3::Call3 {
                        target: *target,
                        allowFailure: true,
                        callData: data.clone(),
                    })
                    .collect(),
            }
            .abi_encode();
            rpc_calls.push((
                "eth_call",
                json!([{"from": ctx.simulation_from, "to": MULTICALL3, "data": Bytes::from(data)}, "latest"]),
            ));
        } else {
            // Without Multicall3 the calls still share one HTTP request (a JSON-RPC batch), but
            // a factory call cannot share state with the simulation, so it is left out; the
            // signature step refuses counterfactual wallets on such chains.
            for (target, data) in calls.iter().skip(base) {
                rpc_calls.push((
                    "eth_call",
                    json!([{"from": ctx.simulation_from, "to": target, "data": data}, "latest"]),
                ));
            }
        }

        let answers = ctx.rpc.batch(&rpc_calls).await?;
        let code_at = |i: usize| -> Result<bool, ChainError> {
            match answers.get(i) {
                Some(Ok(Value::String(s))) => Ok(!(s == "0x" || s.is_empty())),
                other => Err(ChainError::Rpc(format!("eth_getCode answered {other:?}"))),
            }
        };
        let from_code = code_at(0)?;
        let asset_code = if cached_code { true } else { code_at(1)? };

        let outcomes: Vec<CallOutcome> = if ctx.multicall3 {
            let raw = match answers.get(first_call) {
                Some(Ok(Value::String(s))) => s
                    .parse::<Bytes>()
                    .map_err(|e| ChainError::Rpc(format!("eth_call answered bad hex: {e}")))?,
                Some(Err(e)) => {
                    return Err(ChainError::Rpc(format!(
                        "Multicall3 aggregate3 failed: {} {}",
                        e.code, e.message
                    )));
                }
                other => return Err(ChainError::Rpc(format!("eth_call answered {other:?}"))),
            };
            let results = IMulticall3::aggregate3Call::abi_decode_returns(&raw).map_err(|e| {
                ChainError::Rpc(format!(
                    "Multicall3 answer does not decode (is it deployed at {MULTICALL3}?): {e}"
                ))
            })?;
            if results.len() != calls.len() {
                return Err(ChainError::Rpc(
                    "Multicall3 returned the wrong count".into(),
                ));
            }
            results
                .into_iter()
                .skip(base)
                .map(|r| CallOutcome {
                    success: r.success,
                    data: r.returnData,
                })
                .collect()
        } else {
            answers
                .iter()
                .skip(first_call)
                .map(call_outcome)
                .collect::<Result<_, _>>()?
        };
        let mut it = outcomes.into_iter();
        let mut next = || {
            it.next()
                .ok_or_else(|| ChainError::Rpc("missing call result".into()))
        };
        let simulation = next()?;
        let balance = next()?;
        let auth_state = next()?;
        let erc1271 = Some(next()?);
        let (name, version) = match cached_meta {
            Some(meta) => (
                Some(CallOutcome {
                    success: true,
                    data: IEip3009Token::nameCall::abi_encode_returns(&meta.name).into(),
                }),
                Some(CallOutcome {
                    success: true,
                    data: IEip3009Token::versionCall::abi_encode_returns(&meta.version).into(),
                }),
            ),
            None => (Some(next()?), Some(next()?)),
        };
        if asset_code && !cached_code {
            self.asset_has_code.insert((chain_id, asset), ()).await;
        }
        Ok(OnChain {
            from_code,
            asset_code,
            simulation,
            balance,
            auth_state,
            name,
            version,
            erc1271,
        })
    }

    async fn remember_token_meta(&self, chain_id: u64, asset: Address, chain: &OnChain) {
        if let (Some(name), Some(version)) = (
            decode_string(chain.name.as_ref()),
            decode_string(chain.version.as_ref()),
        ) {
            self.token_meta
                .insert((chain_id, asset), TokenMeta { name, version })
                .await;
        }
    }
}

/// `transferWithAuthorization` calldata: the `(v, r, s)` overload for a 65-byte ECDSA signature
/// (every FiatToken version has it), the `bytes` overload (FiatToken ≥ 2.2) otherwise.
fn simulation_calldata(m: &TransferWithAuthorization, sig: &Bytes) -> Bytes {
    match EoaSignature::parse(sig) {
        Ok(eoa) => IEip3009Token::transferWithAuthorization_0Call {
            from: m.from,
            to: m.to,
            value: m.value,
            validAfter: m.validAfter,
            validBefore: m.validBefore,
            nonce: m.nonce,
            v: eoa.v,
            r: eoa.sig.r().into(),
            s: eoa.sig.s().into(),
        }
        .abi_encode()
        .into(),
        Err(_) => IEip3009Token::transferWithAuthorization_1Call {
            from: m.from,
            to: m.to,
            value: m.value,
            validAfter: m.validAfter,
            validBefore: m.validBefore,
            nonce: m.nonce,
            signature: sig.clone(),
        }
        .abi_encode()
        .into(),
    }
}

/// A plain `eth_call` answer: a result is success, a node error with revert data is a revert,
/// any other node error means the read itself failed (fail closed).
fn call_outcome(answer: &Result<Value, CallError>) -> Result<CallOutcome, ChainError> {
    match answer {
        Ok(Value::String(s)) => s
            .parse::<Bytes>()
            .map(|data| CallOutcome {
                success: true,
                data,
            })
            .map_err(|e| ChainError::Rpc(format!("eth_call answered bad hex: {e}"))),
        Ok(other) => Err(ChainError::Rpc(format!("eth_call answered {other}"))),
        Err(e) if is_revert(e) => Ok(CallOutcome {
            success: false,
            data: e
                .data
                .as_deref()
                .and_then(|d| d.parse::<Bytes>().ok())
                .unwrap_or_default(),
        }),
        Err(e) => Err(ChainError::Rpc(format!(
            "eth_call failed: {} {}",
            e.code, e.message
        ))),
    }
}

fn is_revert(e: &CallError) -> bool {
    e.code == 3 || e.message.to_ascii_lowercase().contains("revert")
}

fn decode_string(o: Option<&CallOutcome>) -> Option<String> {
    let o = o.filter(|o| o.success)?;
    IEip3009Token::nameCall::abi_decode_returns(&o.data).ok()
}

/// Why a simulation failed, in the order of spec §3.6.
fn diagnose(chain: &OnChain, name: &str, version: &str, amount: U256) -> Reason {
    let revert = chain.simulation.revert_reason();
    let auth_used = if chain.auth_state.success {
        IEip3009Token::authorizationStateCall::abi_decode_returns(&chain.auth_state.data).ok()
    } else {
        None
    };
    match auth_used {
        None => {
            return Reason::new(
                ReasonCode::EvmEip3009NotSupported,
                format!("authorizationState is not callable on the asset; simulation: {revert}"),
            );
        }
        Some(true) => {
            return Reason::new(
                ReasonCode::EvmNonceAlreadyUsed,
                format!("the authorization nonce is already used; simulation: {revert}"),
            );
        }
        Some(false) => {}
    }
    if let Some(onchain) = decode_string(chain.name.as_ref())
        && onchain != name
    {
        return Reason::new(
            ReasonCode::EvmTokenNameMismatch,
            format!("token name() is `{onchain}`, extra.name is `{name}`; simulation: {revert}"),
        );
    }
    if let Some(onchain) = decode_string(chain.version.as_ref())
        && onchain != version
    {
        return Reason::new(
            ReasonCode::EvmTokenVersionMismatch,
            format!(
                "token version() is `{onchain}`, extra.version is `{version}`; simulation: {revert}"
            ),
        );
    }
    let balance = chain
        .balance
        .success
        .then(|| IEip3009Token::balanceOfCall::abi_decode_returns(&chain.balance.data).ok())
        .flatten();
    if let Some(balance) = balance
        && balance < amount
    {
        return Reason::new(
            ReasonCode::EvmInsufficientBalance,
            format!("balance {balance} is below the amount {amount}; simulation: {revert}"),
        );
    }
    Reason::new(
        ReasonCode::EvmSimulationFailed,
        format!("transferWithAuthorization simulation failed: {revert}"),
    )
}

#[async_trait]
impl ChainChecker for EvmChecker {
    async fn check(
        &self,
        payment: &Payment,
        _gate: Gate,
        now_secs: u64,
    ) -> Result<Verdict, ChainError> {
        // Settle re-runs the full check, simulation included: unlike the reference (whose
        // `simulateInSettle` defaults to false), a used nonce is caught before forwarding.
        self.check_eip3009(payment, now_secs).await
    }

    fn supports(&self, network: &crate::protocol::Network) -> bool {
        network
            .evm_chain_id()
            .is_some_and(|id| self.chains.contains_key(&id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chains(toml_text: &str) -> BTreeMap<String, ChainConfig> {
        toml::from_str(toml_text).expect("config parses")
    }

    #[test]
    fn config_defaults_and_extensions() {
        let cfg = chains(
            r#"
            ["eip155:8453"]
            ["eip155:31337"]
            rpc_urls = ["http://127.0.0.1:8545"]
            eip6492_allowed_factories = ["0x1111111111111111111111111111111111111111"]
            [["eip155:31337".assets]]
            address = "0x2222222222222222222222222222222222222222"
            name = "Test Dollar"
            version = "1"
            decimals = 18
            ["solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp"]
            "#,
        );
        let checker = EvmChecker::new(&cfg).expect("valid config");
        let mut ids: Vec<u64> = checker.chain_ids().collect();
        ids.sort_unstable();
        assert_eq!(ids, vec![8453, 31337]);
        let base = checker.chains.get(&8453).expect("base");
        assert!(base.multicall3, "Base has Multicall3 by default");
        assert_eq!(base.slack_secs, DEFAULT_VALID_BEFORE_SLACK_SECS);
        let local = checker.chains.get(&31337).expect("local");
        assert!(!local.multicall3);
        assert_eq!(local.allowed_factories.len(), 1);
        let usdc = address!("833589fCD6eDb6E08f4c7C32D4f71b54bdA02913");
        assert_eq!(checker.asset_decimals(8453, usdc), Some(6));
        assert_eq!(
            checker.known_asset(8453, usdc).map(|a| a.name.as_str()),
            Some("USD Coin")
        );
        let custom = address!("2222222222222222222222222222222222222222");
        assert_eq!(checker.asset_decimals(31337, custom), Some(18));
        assert_eq!(checker.asset_decimals(8453, custom), None);
    }

    #[test]
    fn bad_config_is_rejected_with_the_offending_value() {
        let bad_factory = chains(
            r#"
            ["eip155:1"]
            eip6492_allowed_factories = ["not-an-address"]
            "#,
        );
        let err = EvmChecker::new(&bad_factory).expect_err("bad address");
        assert!(err.to_string().contains("not-an-address"), "{err}");
        let bad_id = chains(r#"["eip155:base"]"#);
        assert!(matches!(
            EvmChecker::new(&bad_id),
            Err(EvmConfigError::ChainId(_))
        ));
    }
}
