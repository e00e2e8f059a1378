//! EvmChecker against a real anvil node with the test token, a 1271 wallet, a CREATE2 wallet
//! factory and a Multicall3 at its canonical address.

#[path = "common/anvil.rs"]
mod anvil;

use std::collections::BTreeMap;

use alloy::primitives::{Address, B256, Bytes, U256, address};
use alloy::sol_types::{SolCall, SolValue};
use gatehouse::chain::evm::EvmChecker;
use gatehouse::chain::evm::abi::IEip3009Token;
use gatehouse::chain::evm::settle::{EvmSettler, Reconciled, SettleOutcome};
use gatehouse::chain::evm::signature::ERC6492_MAGIC;
use gatehouse::chain::{ChainChecker, ChainConfig, ChainError};
use gatehouse::clock::{Clock, SystemClock};
use gatehouse::protocol::payment::{Payment, X402Version};
use gatehouse::verdict::{Gate, Outcome, ReasonCode, Verdict};

use anvil::{AMOUNT, Anvil, PAY_TO, Pay, free_port, signer};

fn config(urls: Vec<String>, multicall3: bool) -> BTreeMap<String, ChainConfig> {
    let mut chains = BTreeMap::new();
    chains.insert(
        "eip155:31337".to_owned(),
        ChainConfig {
            rpc_urls: urls,
            onchain_checks: true,
            multicall3: Some(multicall3),
            rpc_timeout_ms: Some(2_000),
            ..Default::default()
        },
    );
    chains
}

async fn setup() -> (Anvil, EvmChecker, u64) {
    let anvil = Anvil::start().await;
    let checker = EvmChecker::new(&config(vec![anvil.url.clone()], true)).expect("checker");
    let now = SystemClock.now_secs().max(anvil.block_time().await);
    (anvil, checker, now)
}

async fn check(checker: &EvmChecker, p: &Payment, now: u64) -> Verdict {
    checker
        .check(p, Gate::Verify, now)
        .await
        .expect("check ran")
}

#[track_caller]
fn assert_denied(v: &Verdict, code: ReasonCode) {
    assert_eq!(v.outcome, Outcome::Deny, "{v:?}");
    assert_eq!(v.reasons.first().map(|r| &r.code), Some(&code), "{v:?}");
}

#[tokio::test]
async fn valid_eoa_payment_is_allowed_in_one_round_trip() {
    let (anvil, checker, now) = setup().await;
    let pay = Pay::new(&anvil, now, signer(0));
    let before = checker.rpc_round_trips();
    let v = check(&checker, &pay.build(), now).await;
    assert_eq!(v.outcome, Outcome::Allow, "{v:?}");
    assert_eq!(checker.rpc_round_trips() - before, 1);
    // The test token is in no asset table: allowed on-chain, but flagged, never trusted.
    assert!(
        v.checked
            .iter()
            .any(|c| c.starts_with("unverified currency")),
        "{v:?}"
    );

    // Once the token is configured as a known asset, its decimals are reported instead.
    let mut chains = config(vec![anvil.url.clone()], true);
    if let Some(chain) = chains.get_mut("eip155:31337") {
        chain.assets.push(gatehouse::chain::AssetConfig {
            address: format!("{:#x}", anvil.usdc),
            name: "USDC".into(),
            version: "2".into(),
            decimals: 6,
        });
    }
    let known = EvmChecker::new(&chains).expect("checker");
    let fresh = Pay::new(&anvil, now, signer(0));
    let v = check(&known, &fresh.build(), now).await;
    assert!(
        v.checked.iter().any(|c| c == "known asset (6 decimals)"),
        "{v:?}"
    );

    // v1 payments go through the same checks.
    let mut v1 = Pay::new(&anvil, now, signer(0));
    v1.version = X402Version::V1;
    v1.nonce = B256::repeat_byte(0x11);
    let v = check(&checker, &v1.build(), now).await;
    assert_eq!(v.outcome, Outcome::Allow, "{v:?}");

    // The y-parity form of v (0/1) is accepted too.
    let mut sig = pay.signed().to_vec();
    if let Some(last) = sig.last_mut() {
        *last -= 27;
    }
    let v = check(&checker, &pay.build_with(sig.into()), now).await;
    assert_eq!(v.outcome, Outcome::Allow, "{v:?}");
}

#[tokio::test]
async fn sequential_path_without_multicall_gives_the_same_answers() {
    let anvil = Anvil::start().await;
    let checker = EvmChecker::new(&config(vec![anvil.url.clone()], false)).expect("checker");
    let now = SystemClock.now_secs().max(anvil.block_time().await);
    let pay = Pay::new(&anvil, now, signer(0));
    let v = check(&checker, &pay.build(), now).await;
    assert_eq!(v.outcome, Outcome::Allow, "{v:?}");

    let poor = Pay::new(&anvil, now, signer(2));
    assert_denied(
        &check(&checker, &poor.build(), now).await,
        ReasonCode::EvmInsufficientBalance,
    );
    let mut wrong_name = Pay::new(&anvil, now, signer(0));
    wrong_name.sign_name = "USD Coin".into();
    wrong_name.extra_name = "USD Coin".into();
    assert_denied(
        &check(&checker, &wrong_name.build(), now).await,
        ReasonCode::EvmTokenNameMismatch,
    );
}

#[tokio::test]
async fn signature_failures() {
    let (anvil, checker, now) = setup().await;

    let mut wrong_signer = Pay::new(&anvil, now, signer(3));
    wrong_signer.from = signer(0).address();
    assert_denied(
        &check(&checker, &wrong_signer.build(), now).await,
        ReasonCode::EvmSignature,
    );

    let mut wrong_chain = Pay::new(&anvil, now, signer(0));
    wrong_chain.sign_chain_id = 8453;
    assert_denied(
        &check(&checker, &wrong_chain.build(), now).await,
        ReasonCode::EvmSignature,
    );

    // Signed with the Base mainnet name and sent with it: the signature matches extra, but
    // the token's domain differs, so the simulation fails and the diagnosis names the cause.
    let mut wrong_name = Pay::new(&anvil, now, signer(0));
    wrong_name.sign_name = "USD Coin".into();
    wrong_name.extra_name = "USD Coin".into();
    assert_denied(
        &check(&checker, &wrong_name.build(), now).await,
        ReasonCode::EvmTokenNameMismatch,
    );

    // A high-s twin of a valid signature is refused.
    let pay = Pay::new(&anvil, now, signer(0));
    let mut sig = pay.signed().to_vec();
    let n = U256::from_be_bytes(
        alloy::primitives::b256!(
            "fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141"
        )
        .0,
    );
    let s = U256::from_be_slice(&sig[32..64]);
    sig[32..64].copy_from_slice(&(n - s).to_be_bytes::<32>());
    sig[64] = if sig[64] == 27 { 28 } else { 27 };
    assert_denied(
        &check(&checker, &pay.build_with(sig.into()), now).await,
        ReasonCode::EvmSignature,
    );
}

#[tokio::test]
async fn time_window() {
    let (anvil, checker, now) = setup().await;

    let mut expired = Pay::new(&anvil, now, signer(0));
    expired.valid_before = now - 10;
    assert_denied(
        &check(&checker, &expired.build(), now).await,
        ReasonCode::EvmValidBefore,
    );

    let mut early = Pay::new(&anvil, now, signer(0));
    early.valid_after = now + 100;
    assert_denied(
        &check(&checker, &early.build(), now).await,
        ReasonCode::EvmValidAfter,
    );

    let mut edge = Pay::new(&anvil, now, signer(0));
    edge.valid_before = now + 6;
    let v = check(&checker, &edge.build(), now).await;
    assert_eq!(v.outcome, Outcome::Allow, "{v:?}");

    let mut past_edge = Pay::new(&anvil, now, signer(0));
    past_edge.valid_before = now + 5;
    assert_denied(
        &check(&checker, &past_edge.build(), now).await,
        ReasonCode::EvmValidBefore,
    );

    // maxTimeoutSeconds 60 + default slack 60: now + 120 passes, now + 121 does not.
    let mut far_ok = Pay::new(&anvil, now, signer(0));
    far_ok.valid_before = now + 120;
    let v = check(&checker, &far_ok.build(), now).await;
    assert_eq!(v.outcome, Outcome::Allow, "{v:?}");
    let mut too_far = Pay::new(&anvil, now, signer(0));
    too_far.valid_before = now + 121;
    assert_denied(
        &check(&checker, &too_far.build(), now).await,
        ReasonCode::EvmValidBeforeTooFar,
    );
}

#[tokio::test]
async fn recipient_value_and_balance() {
    let (anvil, checker, now) = setup().await;

    let mut elsewhere = Pay::new(&anvil, now, signer(0));
    elsewhere.to = address!("00000000000000000000000000000000000000aa");
    assert_denied(
        &check(&checker, &elsewhere.build(), now).await,
        ReasonCode::EvmRecipientMismatch,
    );

    let mut under = Pay::new(&anvil, now, signer(0));
    under.value = AMOUNT - 1;
    assert_denied(
        &check(&checker, &under.build(), now).await,
        ReasonCode::EvmAuthorizationValue,
    );
    let mut over = Pay::new(&anvil, now, signer(0));
    over.value = AMOUNT + 1;
    assert_denied(
        &check(&checker, &over.build(), now).await,
        ReasonCode::EvmAuthorizationValue,
    );

    let poor = Pay::new(&anvil, now, signer(2));
    let v = check(&checker, &poor.build(), now).await;
    assert_denied(&v, ReasonCode::EvmInsufficientBalance);
    assert!(v.reasons[0].message.contains("exceeds balance"), "{v:?}");
}

#[tokio::test]
async fn used_nonce_is_refused() {
    let (anvil, checker, now) = setup().await;
    let pay = Pay::new(&anvil, now, signer(0));
    pay.settle_directly(&anvil).await;
    assert_denied(
        &check(&checker, &pay.build(), now).await,
        ReasonCode::EvmNonceAlreadyUsed,
    );
}

#[tokio::test]
async fn asset_without_code_is_refused() {
    let (anvil, checker, now) = setup().await;
    let mut pay = Pay::new(&anvil, now, signer(0));
    pay.asset = address!("00000000000000000000000000000000000000bb");
    assert_denied(
        &check(&checker, &pay.build(), now).await,
        ReasonCode::AssetNotDeployedContract,
    );
}

#[tokio::test]
async fn eip1271_wallet() {
    let (anvil, checker, now) = setup().await;
    // The wallet's owner is dev key 1.
    let mut pay = Pay::new(&anvil, now, signer(1));
    pay.from = anvil.wallet;
    let v = check(&checker, &pay.build(), now).await;
    assert_eq!(v.outcome, Outcome::Allow, "{v:?}");
    assert!(v.checked.iter().any(|c| c.contains("eip1271")), "{v:?}");

    let mut stranger = Pay::new(&anvil, now, signer(3));
    stranger.from = anvil.wallet;
    assert_denied(
        &check(&checker, &stranger.build(), now).await,
        ReasonCode::EvmSignature,
    );
}

#[tokio::test]
async fn erc6492_needs_an_allowlisted_factory() {
    let anvil = Anvil::start().await;
    let now = SystemClock.now_secs().max(anvil.block_time().await);
    let owner = signer(1);
    let (wallet, deploy) = anvil
        .counterfactual(owner.address(), B256::repeat_byte(1))
        .await;
    anvil.mint(wallet, U256::from(1_000_000u64)).await;
    let mut pay = Pay::new(&anvil, now, owner);
    pay.from = wallet;
    let mut wrapped = (anvil.factory, deploy, pay.signed()).abi_encode_params();
    wrapped.extend_from_slice(ERC6492_MAGIC.as_slice());
    let payment = pay.build_with(wrapped.into());

    let closed = EvmChecker::new(&config(vec![anvil.url.clone()], true)).expect("checker");
    assert_denied(
        &check(&closed, &payment, now).await,
        ReasonCode::Eip6492FactoryNotAllowed,
    );

    let mut chains = config(vec![anvil.url.clone()], true);
    if let Some(c) = chains.get_mut("eip155:31337") {
        c.eip6492_allowed_factories = vec![format!("{:#x}", anvil.factory)];
    }
    let open = EvmChecker::new(&chains).expect("checker");
    let v = check(&open, &payment, now).await;
    assert_eq!(v.outcome, Outcome::Allow, "{v:?}");

    // Without Multicall3 the deployment cannot be simulated with the transfer.
    if let Some(c) = chains.get_mut("eip155:31337") {
        c.multicall3 = Some(false);
    }
    let no_multicall = EvmChecker::new(&chains).expect("checker");
    assert_denied(
        &check(&no_multicall, &payment, now).await,
        ReasonCode::EvmUndeployedSmartWallet,
    );
}

#[tokio::test]
async fn rpc_down_fails_closed_and_failover_uses_the_next_endpoint() {
    let (anvil, _, now) = setup().await;
    let dead = format!("http://127.0.0.1:{}", free_port());
    let pay = Pay::new(&anvil, now, signer(0)).build();

    let down = EvmChecker::new(&config(vec![dead.clone()], true)).expect("checker");
    let err = down.check(&pay, Gate::Verify, now).await;
    assert!(matches!(err, Err(ChainError::Rpc(_))), "{err:?}");

    let failover = EvmChecker::new(&config(vec![dead, anvil.url.clone()], true)).expect("checker");
    let v = check(&failover, &pay, now).await;
    assert_eq!(v.outcome, Outcome::Allow, "{v:?}");
    assert_eq!(failover.rpc_round_trips(), 2);
}

#[tokio::test]
async fn unconfigured_chain_is_an_error_not_an_approval() {
    let (anvil, _, now) = setup().await;
    let checker = EvmChecker::new(&BTreeMap::new()).expect("checker");
    let r = checker
        .check(&Pay::new(&anvil, now, signer(0)).build(), Gate::Verify, now)
        .await;
    assert!(matches!(r, Err(ChainError::NotConfigured(_))), "{r:?}");
}

#[tokio::test]
async fn token_without_eip3009_is_diagnosed() {
    let (anvil, checker, now) = setup().await;
    // The factory has code but no authorizationState: the simulation fails and the diagnosis
    // says the asset does not support EIP-3009.
    let mut pay = Pay::new(&anvil, now, signer(0));
    pay.asset = anvil.factory;
    assert_denied(
        &check(&checker, &pay.build(), now).await,
        ReasonCode::EvmEip3009NotSupported,
    );
}

#[tokio::test]
async fn a_hanging_endpoint_times_out_and_fails_closed() {
    let (anvil, _, now) = setup().await;
    // Accepts connections (kernel backlog) but never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", silent.local_addr().expect("addr"));
    let mut chains = config(vec![url], true);
    if let Some(c) = chains.get_mut("eip155:31337") {
        c.rpc_timeout_ms = Some(300);
    }
    let checker = EvmChecker::new(&chains).expect("checker");
    let started = tokio::time::Instant::now();
    let r = checker
        .check(&Pay::new(&anvil, now, signer(0)).build(), Gate::Verify, now)
        .await;
    assert!(
        matches!(&r, Err(ChainError::Rpc(m)) if m.contains("timed out")),
        "{r:?}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(3));
}

#[tokio::test]
async fn second_check_uses_cached_token_facts() {
    let (anvil, checker, now) = setup().await;
    let first = Pay::new(&anvil, now, signer(0));
    assert_eq!(
        check(&checker, &first.build(), now).await.outcome,
        Outcome::Allow
    );
    // Same token, cached name/version/code: still one round trip, and a wrong domain name
    // is still diagnosed from the cached name.
    let mut wrong = Pay::new(&anvil, now, signer(0));
    wrong.nonce = B256::repeat_byte(0x22);
    wrong.sign_name = "USD Coin".into();
    wrong.extra_name = "USD Coin".into();
    let before = checker.rpc_round_trips();
    assert_denied(
        &check(&checker, &wrong.build(), now).await,
        ReasonCode::EvmTokenNameMismatch,
    );
    assert_eq!(checker.rpc_round_trips() - before, 1);
}

async fn balance_of(anvil: &Anvil, who: Address) -> U256 {
    let data = IEip3009Token::balanceOfCall { account: who }.abi_encode();
    let out = anvil
        .rpc(
            "eth_call",
            serde_json::json!([{"to": anvil.usdc, "data": Bytes::from(data)}, "latest"]),
        )
        .await;
    let raw: Bytes = out.as_str().expect("hex").parse().expect("hex");
    IEip3009Token::balanceOfCall::abi_decode_returns(&raw).expect("uint")
}

fn settler(anvil: &Anvil) -> EvmSettler {
    EvmSettler::new(
        &config(vec![anvil.url.clone()], true),
        signer(3),
        std::time::Duration::from_secs(10),
    )
    .expect("settler")
}

#[tokio::test]
async fn local_settlement_moves_funds_once_and_reconciles() {
    let (anvil, checker, now) = setup().await;
    let settler = settler(&anvil);
    let pay = Pay::new(&anvil, now, signer(0)).build();
    let before = balance_of(&anvil, PAY_TO).await;

    let SettleOutcome::Settled { tx } = settler.settle(&pay).await.expect("settle ran") else {
        panic!("not settled");
    };
    assert_eq!(
        balance_of(&anvil, PAY_TO).await - before,
        U256::from(AMOUNT)
    );
    assert_eq!(
        settler
            .reconcile(&pay, Some(tx), now)
            .await
            .expect("reconcile"),
        Reconciled::Settled { tx: Some(tx) }
    );
    assert_eq!(
        settler.reconcile(&pay, None, now).await.expect("reconcile"),
        Reconciled::Settled { tx: None }
    );

    // A second settle of the same authorization fails in estimation: nothing broadcast.
    match settler.settle(&pay).await.expect("settle ran") {
        SettleOutcome::Failed { reason, tx: None } => {
            assert_eq!(reason.code, ReasonCode::EvmNonceAlreadyUsed, "{reason:?}")
        }
        other => panic!("second settle: {other:?}"),
    }
    assert_eq!(
        balance_of(&anvil, PAY_TO).await - before,
        U256::from(AMOUNT)
    );
    assert_denied(
        &check(&checker, &pay, now).await,
        ReasonCode::EvmNonceAlreadyUsed,
    );
}

#[tokio::test]
async fn unsettled_payments_reconcile_as_not_settled() {
    let (anvil, _, now) = setup().await;
    let settler = settler(&anvil);
    let pay = Pay::new(&anvil, now, signer(0));
    let payment = pay.build();
    assert_eq!(
        settler
            .reconcile(&payment, None, now)
            .await
            .expect("reconcile"),
        Reconciled::NotSettled { expired: false }
    );
    assert_eq!(
        settler
            .reconcile(&payment, None, pay.valid_before)
            .await
            .expect("reconcile"),
        Reconciled::NotSettled { expired: true }
    );
}

#[tokio::test]
async fn concurrent_settlements_from_one_key_all_land() {
    let (anvil, _, now) = setup().await;
    let settler = settler(&anvil);
    let payments: Vec<Payment> = (0u8..4)
        .map(|i| {
            let mut p = Pay::new(&anvil, now, signer(0));
            p.nonce = B256::repeat_byte(0x40 + i);
            p.build()
        })
        .collect();
    let before = balance_of(&anvil, PAY_TO).await;
    let outcomes = futures_join_all(payments.iter().map(|p| settler.settle(p))).await;
    for o in &outcomes {
        assert!(matches!(o, Ok(SettleOutcome::Settled { .. })), "{o:?}");
    }
    assert_eq!(
        balance_of(&anvil, PAY_TO).await - before,
        U256::from(AMOUNT * 4)
    );
}

#[tokio::test]
async fn settle_with_rpc_down_sends_nothing() {
    let (anvil, _, now) = setup().await;
    let dead = format!("http://127.0.0.1:{}", free_port());
    let settler = EvmSettler::new(
        &config(vec![dead], true),
        signer(3),
        std::time::Duration::from_secs(1),
    )
    .expect("settler");
    let r = settler
        .settle(&Pay::new(&anvil, now, signer(0)).build())
        .await;
    assert!(matches!(r, Err(ChainError::Rpc(_))), "{r:?}");
}

/// Runs futures concurrently on this task (no extra dependency for `join_all`).
async fn futures_join_all<F: std::future::Future>(futs: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut set = Vec::new();
    for f in futs {
        set.push(Box::pin(f));
    }
    let mut out: Vec<Option<F::Output>> = set.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, slot) in set.iter_mut().zip(out.iter_mut()) {
            if slot.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *slot = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().flatten().collect()
}

/// Gas caps: a settlement that would exceed the configured fee or gas limit is refused before
/// anything is signed or sent; the authorization stays usable by a settler within the caps.
#[tokio::test]
async fn gas_caps_refuse_before_sending() {
    let (anvil, _, now) = setup().await;
    let pay = Pay::new(&anvil, now, signer(0)).build();
    for (fee_cap, gas_cap) in [(Some(1), None), (None, Some(1_000))] {
        let mut chains = config(vec![anvil.url.clone()], true);
        if let Some(chain) = chains.get_mut("eip155:31337") {
            chain.max_fee_per_gas_wei = fee_cap;
            chain.max_gas_limit = gas_cap;
        }
        let capped = EvmSettler::new(&chains, signer(3), std::time::Duration::from_secs(10))
            .expect("settler");
        match capped.settle(&pay).await {
            Ok(SettleOutcome::Failed { reason, tx: None }) => {
                assert_eq!(reason.code, ReasonCode::CheckUnavailable, "{reason:?}");
                assert!(reason.message.contains("nothing was sent"), "{reason:?}");
            }
            other => panic!("expected a refusal before sending, got {other:?}"),
        }
    }
    // Nothing was spent: the uncapped settler settles the same authorization.
    let outcome = settler(&anvil).settle(&pay).await;
    assert!(
        matches!(outcome, Ok(SettleOutcome::Settled { .. })),
        "{outcome:?}"
    );
}
