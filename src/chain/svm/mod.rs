//! Solana `exact` verification (spec §4.3, §7 "SVM verify"), for x402 v1 and v2.
//!
//! Order: scheme and accepted-vs-requirements (steps 1–2), `extra.feePayer` present and
//! managed by the facilitator that will settle (3–4), decode (5; legacy and v0, address lookup
//! tables refused), the static checks of [`transaction::inspect`] (6–16 plus the four checks
//! the reference SDKs skip, the signer set and the client's signature), then ONE JSON-RPC
//! batch: `simulateTransaction` (sigVerify false, replaceRecentBlockhash false, the fee payer's
//! slot emptied) plus, when not cached, `getAccountInfo` of the mint (its owner must be the
//! transfer's token program). If no endpoint answers, `Err(ChainError::Rpc)`: fail closed.
//!
//! The managed fee payers are `fee_payers` from the config plus those learned from the
//! upstream's `/supported` through [`SvmChecker::update_fee_payers_from_supported`]. With none
//! known, every payment is refused with `fee_payer_not_managed_by_facilitator`.

pub mod networks;
pub mod settle;
pub mod transaction;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};
use solana_pubkey::Pubkey;

use crate::chain::evm::rpc::RpcClient;
use crate::chain::{ChainChecker, ChainConfig, ChainError};
use crate::protocol::payment::Authorization;
use crate::protocol::{ChainFamily, Network, Payment};
use crate::verdict::{Gate, Reason, ReasonCode, Step, Verdict};

pub use transaction::AmountRule;
use transaction::{DecodedTx, Expected, Rules, Transfer};

/// Default timeout of one RPC request.
pub const DEFAULT_RPC_TIMEOUT_MS: u64 = 5_000;

/// A configuration the checker cannot run with.
#[derive(Debug, thiserror::Error)]
pub enum SvmConfigError {
    /// A configured fee payer is not a base58 public key.
    #[error("chain `{chain}`: fee payer `{value}` is not a base58 public key")]
    FeePayer {
        /// The chain key.
        chain: String,
        /// The offending value.
        value: String,
    },
    /// A `solana:*` key (or v1 name) that does not resolve.
    #[error("chain `{0}` is not a valid network id")]
    Network(String),
}

/// One configured Solana network.
#[derive(Debug)]
struct NetCtx {
    rpc: RpcClient,
    rules: Rules,
    configured_fee_payers: Vec<Pubkey>,
    learned_fee_payers: RwLock<Vec<Pubkey>>,
    /// Set when Gatehouse settles this network itself: then its own key is the only fee payer.
    local_fee_payer: Option<Pubkey>,
}

impl NetCtx {
    fn fee_payers(&self) -> Vec<Pubkey> {
        if let Some(local) = self.local_fee_payer {
            return vec![local];
        }
        let mut all = self.configured_fee_payers.clone();
        // A poisoned lock only means a writer panicked mid-replace of a Vec; the old or new
        // value is still a valid list, so read it rather than fail.
        let learned = match self.learned_fee_payers.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        };
        for k in learned {
            if !all.contains(&k) {
                all.push(k);
            }
        }
        all
    }
}

/// What a mint account says about itself, cached.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MintInfo {
    owner: Pubkey,
}

/// Checks Solana `exact` payments on every configured `solana:*` network.
#[derive(Debug)]
pub struct SvmChecker {
    networks: HashMap<String, NetCtx>,
    round_trips: Arc<AtomicU64>,
    mints: moka::future::Cache<(String, Pubkey), MintInfo>,
}

fn deny(code: ReasonCode, message: impl Into<String>) -> Result<Verdict, ChainError> {
    Ok(Verdict::deny(Step::Chain, Reason::new(code, message)))
}

fn svm_deny(code: &'static str, message: impl Into<String>) -> Result<Verdict, ChainError> {
    deny(ReasonCode::Svm(code), message)
}

impl SvmChecker {
    /// Builds a checker for every Solana entry of `chains` (CAIP-2 id or v1 name → config).
    /// Mainnet, devnet and testnet with no `rpc_urls` use the public endpoints.
    pub fn new(chains: &BTreeMap<String, ChainConfig>) -> Result<Self, SvmConfigError> {
        let round_trips = Arc::new(AtomicU64::new(0));
        let mut networks = HashMap::new();
        for (key, cfg) in chains {
            let network =
                Network::resolve(key).map_err(|_| SvmConfigError::Network(key.clone()))?;
            if network.family() != ChainFamily::Svm {
                continue;
            }
            let caip2 = network.caip2.to_string();
            let urls = if cfg.rpc_urls.is_empty() {
                networks::known_network(&caip2)
                    .map(|n| vec![n.default_rpc.to_owned()])
                    .unwrap_or_default()
            } else {
                cfg.rpc_urls.clone()
            };
            let configured_fee_payers = cfg
                .fee_payers
                .iter()
                .map(|s| {
                    transaction::parse_pubkey(s).ok_or_else(|| SvmConfigError::FeePayer {
                        chain: key.clone(),
                        value: s.clone(),
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let timeout =
                Duration::from_millis(cfg.rpc_timeout_ms.unwrap_or(DEFAULT_RPC_TIMEOUT_MS));
            networks.insert(
                caip2,
                NetCtx {
                    rpc: RpcClient::new(urls, timeout, round_trips.clone()),
                    rules: Rules {
                        max_compute_unit_price: cfg
                            .max_compute_unit_price_micro_lamports
                            .unwrap_or(networks::DEFAULT_MAX_COMPUTE_UNIT_PRICE_MICRO_LAMPORTS),
                        max_compute_unit_limit: cfg
                            .max_compute_unit_limit
                            .unwrap_or(networks::DEFAULT_MAX_COMPUTE_UNIT_LIMIT),
                        max_instructions: cfg
                            .max_instructions
                            .unwrap_or(networks::DEFAULT_MAX_INSTRUCTIONS)
                            .max(3),
                        amount_rule: cfg.amount_rule.unwrap_or_default(),
                    },
                    configured_fee_payers,
                    learned_fee_payers: RwLock::new(Vec::new()),
                    local_fee_payer: None,
                },
            );
        }
        Ok(Self {
            networks,
            round_trips,
            mints: moka::future::Cache::builder()
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

    /// CAIP-2 ids this checker serves.
    pub fn networks(&self) -> impl Iterator<Item = &str> + '_ {
        self.networks.keys().map(String::as_str)
    }

    /// The fee payers accepted on `network` (CAIP-2 id or v1 name), base58: configured plus
    /// learned.
    pub fn fee_payers(&self, network: &str) -> Vec<String> {
        self.ctx_by_name(network)
            .map(|c| c.fee_payers().iter().map(|k| k.to_string()).collect())
            .unwrap_or_default()
    }

    /// Gatehouse settles `network` (CAIP-2 id or v1 name) itself as `fee_payer`: from now on
    /// that key is the only accepted `extra.feePayer` there (configured and learned ones are
    /// ignored). Returns false when the network is not configured.
    pub fn set_local_fee_payer(&mut self, network: &str, fee_payer: Pubkey) -> bool {
        let Ok(caip2) = Network::resolve(network).map(|n| n.caip2) else {
            return false;
        };
        match self.networks.get_mut(caip2.as_str()) {
            Some(ctx) => {
                ctx.local_fee_payer = Some(fee_payer);
                true
            }
            None => false,
        }
    }

    /// Replaces the learned fee payers of `network` (CAIP-2 id or v1 name); strings that are
    /// not public keys are skipped. Returns how many were accepted.
    pub fn set_learned_fee_payers(&self, network: &str, payers: &[String]) -> usize {
        let Some(ctx) = self.ctx_by_name(network) else {
            return 0;
        };
        let keys: Vec<Pubkey> = payers
            .iter()
            .filter_map(|s| transaction::parse_pubkey(s))
            .collect();
        let n = keys.len();
        match ctx.learned_fee_payers.write() {
            Ok(mut g) => *g = keys,
            Err(p) => *p.into_inner() = keys,
        }
        n
    }

    /// Learns the fee payers of every configured network from an upstream `/supported` body:
    /// `signers["solana:*"]`, `signers["<caip2>"]` and the `extra.feePayer` of SVM kinds whose
    /// network is this one (CAIP-2 or v1 name). Replaces what was learned before.
    pub fn update_fee_payers_from_supported(&self, supported: &Value) {
        for (caip2, _) in self.networks.iter() {
            let mut payers: Vec<String> = Vec::new();
            if let Some(signers) = supported.get("signers").and_then(Value::as_object) {
                for (pattern, list) in signers {
                    if pattern == "solana:*" || pattern == caip2 {
                        payers.extend(
                            list.as_array()
                                .into_iter()
                                .flatten()
                                .filter_map(Value::as_str)
                                .map(str::to_owned),
                        );
                    }
                }
            }
            if let Some(kinds) = supported.get("kinds").and_then(Value::as_array) {
                for kind in kinds {
                    let same_network = kind
                        .get("network")
                        .and_then(Value::as_str)
                        .and_then(|n| Network::resolve(n).ok())
                        .is_some_and(|n| n.caip2.as_str() == caip2);
                    if let Some(fp) = kind
                        .get("extra")
                        .and_then(|e| e.get("feePayer"))
                        .and_then(Value::as_str)
                        .filter(|_| same_network)
                    {
                        payers.push(fp.to_owned());
                    }
                }
            }
            self.set_learned_fee_payers(caip2, &payers);
        }
    }

    fn ctx_by_name(&self, network: &str) -> Option<&NetCtx> {
        let caip2 = Network::resolve(network).ok()?.caip2;
        self.networks.get(caip2.as_str())
    }

    async fn check_exact(&self, payment: &Payment) -> Result<Verdict, ChainError> {
        // Steps 1–2.
        if payment.scheme != "exact" || payment.accepted_mismatches.contains(&"scheme") {
            return deny(
                ReasonCode::UnsupportedScheme,
                format!("scheme `{}` is not `exact`", payment.scheme),
            );
        }
        if payment.accepted_mismatches.contains(&"network") {
            return svm_deny(
                "network_mismatch",
                "the payload's network differs from the requirements",
            );
        }
        if !payment.accepted_mismatches.is_empty() {
            return deny(
                ReasonCode::InvalidPaymentRequirements,
                format!(
                    "accepted differs from the requirements in: {}",
                    payment.accepted_mismatches.join(", ")
                ),
            );
        }
        let Some(ctx) = self.networks.get(payment.network.caip2.as_str()) else {
            return Err(ChainError::NotConfigured(payment.network.caip2.to_string()));
        };
        let Authorization::SvmTransaction {
            transaction_base64,
            client_signature: claimed_signature,
        } = &payment.authorization
        else {
            return deny(
                ReasonCode::InvalidPayload,
                "the Solana checker verifies transaction payloads only",
            );
        };

        // Steps 3–4.
        let Some(fee_payer) = payment
            .extra
            .fee_payer
            .as_deref()
            .and_then(transaction::parse_pubkey)
        else {
            return svm_deny(
                "invalid_exact_svm_payload_missing_fee_payer",
                "requirements.extra.feePayer is missing or not a public key",
            );
        };
        let managed = ctx.fee_payers();
        if !managed.contains(&fee_payer) {
            let why = if managed.is_empty() {
                "no fee payers are known for this network (upstream /supported not loaded)"
                    .to_owned()
            } else {
                format!("fee payer {fee_payer} is not a signer of the settling facilitator")
            };
            return svm_deny("fee_payer_not_managed_by_facilitator", why);
        }
        let (Some(mint), Some(pay_to)) = (
            transaction::parse_pubkey(&payment.asset),
            transaction::parse_pubkey(&payment.pay_to),
        ) else {
            return deny(
                ReasonCode::InvalidPaymentRequirements,
                "asset and payTo must be base58 public keys",
            );
        };

        // Steps 5–16 and the extra checks.
        let decoded = match transaction::decode(transaction_base64) {
            Ok(d) => d,
            Err(r) => return Ok(Verdict::deny(Step::Chain, r)),
        };
        let expected = Expected {
            fee_payer,
            managed_fee_payers: &managed,
            mint,
            pay_to,
            amount: payment.amount,
            memo: payment.extra.memo.as_deref(),
        };
        let transfer = match transaction::inspect(&decoded, &expected, &ctx.rules) {
            Ok(t) => t,
            Err(r) => return Ok(Verdict::deny(Step::Chain, r)),
        };
        if let Some(p) = payment.payer.as_deref()
            && transaction::parse_pubkey(p) != Some(transfer.authority)
        {
            return deny(
                ReasonCode::InvalidPayload,
                format!(
                    "payer {p} is not the transfer authority {}",
                    transfer.authority
                ),
            );
        }

        // The fingerprint (duplicate lock) is keyed on the payload's client signature: it must
        // be the one that actually authorises this transfer.
        if *claimed_signature != transfer.client_signature.to_string() {
            return deny(
                ReasonCode::InvalidPayload,
                "the payload's client signature is not the transfer authority's",
            );
        }

        // Step 17: one round trip.
        if let Some(v) = self
            .read_chain(ctx, payment, &decoded, &transfer, mint)
            .await?
        {
            return Ok(v);
        }

        let signature = transfer.client_signature.to_string();
        let verdict = Verdict::allow(Step::Chain)
            .with_checked(format!("svm payer {}", transfer.authority))
            .with_checked(format!(
                "svm {} transaction decoded (static keys, no lookup tables)",
                if matches!(
                    decoded.tx.message,
                    solana_message::VersionedMessage::Legacy(_)
                ) {
                    "legacy"
                } else {
                    "v0"
                }
            ))
            .with_checked(format!(
                "svm TransferChecked {} of {} to ATA {} under {}; CU limit {} price {} µlamports",
                transfer.amount,
                mint,
                transfer.destination,
                transfer.token_program,
                transfer.compute_unit_limit,
                transfer.compute_unit_price
            ))
            .with_checked("svm fee payer isolated; signers = {fee payer, client}".to_owned())
            .with_checked(format!("svm client signature {signature} valid"))
            .with_checked("svm simulateTransaction ok (sigVerify false)".to_owned());
        Ok(verdict)
    }

    /// Simulates and, when not cached, reads the mint, in one batch. `Ok(Some(deny))` when
    /// the chain refuses the payment.
    async fn read_chain(
        &self,
        ctx: &NetCtx,
        payment: &Payment,
        decoded: &DecodedTx,
        transfer: &Transfer,
        mint: Pubkey,
    ) -> Result<Option<Verdict>, ChainError> {
        let Some(sim_tx) = transaction::simulation_base64(decoded) else {
            return Ok(Some(Verdict::deny(
                Step::Chain,
                Reason::new(
                    ReasonCode::Svm("invalid_exact_svm_payload_transaction_could_not_be_decoded"),
                    "the transaction does not re-encode",
                ),
            )));
        };
        let cache_key = (payment.network.caip2.to_string(), mint);
        let cached = self.mints.get(&cache_key).await;
        let mut calls = vec![(
            "simulateTransaction",
            json!([sim_tx, {
                "encoding": "base64",
                "sigVerify": false,
                "replaceRecentBlockhash": false,
                "commitment": "confirmed",
            }]),
        )];
        if cached.is_none() {
            calls.push((
                "getAccountInfo",
                json!([mint.to_string(), {"encoding": "base64", "commitment": "confirmed"}]),
            ));
        }
        let results = ctx.rpc.batch(&calls).await?;
        let mut results = results.into_iter();
        let simulation = results
            .next()
            .ok_or_else(|| ChainError::Rpc("no simulateTransaction result".into()))?;

        let mint_info = match cached {
            Some(info) => Some(info),
            None => {
                let account = results
                    .next()
                    .ok_or_else(|| ChainError::Rpc("no getAccountInfo result".into()))?
                    .map_err(|e| ChainError::Rpc(format!("getAccountInfo: {}", e.message)))?;
                let info = parse_mint_owner(&account)?;
                if let Some(info) = &info {
                    self.mints.insert(cache_key, info.clone()).await;
                }
                info
            }
        };
        match mint_info {
            None => {
                return Ok(Some(Verdict::deny(
                    Step::Chain,
                    Reason::new(
                        ReasonCode::Svm("invalid_exact_svm_payload_mint_mismatch"),
                        format!("mint {mint} does not exist"),
                    ),
                )));
            }
            Some(info) if info.owner != transfer.token_program => {
                return Ok(Some(Verdict::deny(
                    Step::Chain,
                    Reason::new(
                        ReasonCode::Svm("invalid_exact_svm_payload_mint_mismatch"),
                        format!(
                            "mint {mint} belongs to {}, the transfer uses {}",
                            info.owner, transfer.token_program
                        ),
                    ),
                )));
            }
            Some(_) => {}
        }

        let failed = |msg: String| {
            Ok(Some(Verdict::deny(
                Step::Chain,
                Reason::new(ReasonCode::Svm("transaction_simulation_failed"), msg),
            )))
        };
        let value = match simulation {
            Err(e) => return failed(format!("simulateTransaction refused: {}", e.message)),
            Ok(v) => v,
        };
        let Some(value) = value.get("value") else {
            return Err(ChainError::Rpc(
                "simulateTransaction result without value".into(),
            ));
        };
        match value.get("err") {
            None | Some(Value::Null) => Ok(None),
            Some(err) => {
                let logs: Vec<&str> = value
                    .get("logs")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                let tail = logs
                    .iter()
                    .rev()
                    .take(3)
                    .rev()
                    .copied()
                    .collect::<Vec<_>>()
                    .join(" | ");
                failed(format!("simulation error {err}; logs: {tail}"))
            }
        }
    }
}

/// Reads the owner of a `getAccountInfo` result; `None` when the account does not exist.
fn parse_mint_owner(result: &Value) -> Result<Option<MintInfo>, ChainError> {
    let value = result
        .get("value")
        .ok_or_else(|| ChainError::Rpc("getAccountInfo result without value".into()))?;
    if value.is_null() {
        return Ok(None);
    }
    let owner = value
        .get("owner")
        .and_then(Value::as_str)
        .and_then(transaction::parse_pubkey)
        .ok_or_else(|| ChainError::Rpc("getAccountInfo: no owner".into()))?;
    // A mint is at least 82 bytes; anything shorter is not a mint whatever its owner.
    let data_len = value
        .get("data")
        .and_then(Value::as_array)
        .and_then(|d| d.first())
        .and_then(Value::as_str)
        .and_then(|s| B64.decode(s).ok())
        .map(|d| d.len())
        .unwrap_or(0);
    if data_len < 82 {
        return Ok(None);
    }
    Ok(Some(MintInfo { owner }))
}

#[async_trait]
impl ChainChecker for SvmChecker {
    async fn check(
        &self,
        payment: &Payment,
        _gate: Gate,
        _now_secs: u64,
    ) -> Result<Verdict, ChainError> {
        self.check_exact(payment).await
    }

    fn supports(&self, network: &Network) -> bool {
        self.networks.contains_key(network.caip2.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chains(toml_text: &str) -> BTreeMap<String, ChainConfig> {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn config_defaults_and_v1_names() {
        let c = SvmChecker::new(&chains(
            r#"
            [solana-devnet]
            fee_payers = ["4zMMC9srt5Ri5X14GAgXhaHii3GnPAEERYPJgZJDncDU"]
            [solana]
            amount_rule = "at_least"
            max_compute_unit_price_micro_lamports = 10
            ["eip155:8453"]
            "#,
        ))
        .unwrap();
        let mut nets: Vec<&str> = c.networks().collect();
        nets.sort();
        assert_eq!(
            nets,
            vec![
                crate::protocol::network::SOLANA_MAINNET,
                crate::protocol::network::SOLANA_DEVNET
            ]
        );
        assert!(c.supports(&Network::resolve("solana").unwrap()));
        assert!(!c.supports(&Network::resolve("solana-testnet").unwrap()));
        assert!(!c.supports(&Network::resolve("base").unwrap()));
        let main = c.ctx_by_name("solana").unwrap();
        assert_eq!(main.rules.amount_rule, AmountRule::AtLeast);
        assert_eq!(main.rules.max_compute_unit_price, 10);
        let dev = c.ctx_by_name("solana-devnet").unwrap();
        assert_eq!(dev.rules.max_compute_unit_price, 5_000_000);
        assert_eq!(dev.rules.max_instructions, 6);
        assert_eq!(
            c.fee_payers(crate::protocol::network::SOLANA_DEVNET),
            vec!["4zMMC9srt5Ri5X14GAgXhaHii3GnPAEERYPJgZJDncDU".to_owned()]
        );
    }

    #[test]
    fn bad_fee_payer_in_config_is_an_error() {
        let err = SvmChecker::new(&chains(
            r#"
            [solana-devnet]
            fee_payers = ["not-a-key"]
            "#,
        ))
        .unwrap_err();
        assert!(matches!(err, SvmConfigError::FeePayer { .. }));
    }

    #[test]
    fn fee_payers_are_learned_from_supported() {
        let c = SvmChecker::new(&chains("[solana-devnet]\n[solana]\n")).unwrap();
        let a = "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v";
        let b = "4zMMC9srt5Ri5X14GAgXhaHii3GnPAEERYPJgZJDncDU";
        c.update_fee_payers_from_supported(&json!({
            "kinds": [
                {"x402Version": 1, "scheme": "exact", "network": "solana-devnet", "extra": {"feePayer": b}},
                {"x402Version": 2, "scheme": "exact", "network": "eip155:8453"}
            ],
            "signers": {"solana:*": [a, "junk"], "eip155:*": ["0x00"]}
        }));
        let mut dev = c.fee_payers("solana-devnet");
        dev.sort();
        assert_eq!(dev, vec![b.to_owned(), a.to_owned()]);
        assert_eq!(c.fee_payers("solana"), vec![a.to_owned()]);
        // A later /supported replaces what was learned.
        c.update_fee_payers_from_supported(&json!({"kinds": [], "signers": {}}));
        assert!(c.fee_payers("solana").is_empty());
    }

    #[test]
    fn a_local_fee_payer_replaces_configured_and_learned_ones() {
        let a = "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v";
        let ours = "4zMMC9srt5Ri5X14GAgXhaHii3GnPAEERYPJgZJDncDU";
        let mut c = SvmChecker::new(&chains(&format!(
            "[solana-devnet]\nfee_payers = [\"{a}\"]\n[solana]\n"
        )))
        .unwrap();
        assert!(c.set_local_fee_payer("solana-devnet", transaction::parse_pubkey(ours).unwrap()));
        assert!(!c.set_local_fee_payer("solana-testnet", Pubkey::new_from_array([1; 32])));
        c.update_fee_payers_from_supported(&json!({"signers": {"solana:*": [a]}}));
        assert_eq!(c.fee_payers("solana-devnet"), vec![ours.to_owned()]);
        assert_eq!(c.fee_payers("solana"), vec![a.to_owned()]);
    }
}
