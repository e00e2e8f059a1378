//! EVM payments end to end through the HTTP API: Gatehouse booted with `server::start`, a real
//! anvil chain (`eip155:31337`) with the test token, local settlement from dev key 3, and no
//! upstream at all (its URL points at a closed port) unless a test says otherwise.

#[path = "common/anvil.rs"]
mod anvil;
mod common;

use alloy::primitives::{Address, B256, Bytes, U256, address};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::{SolCall, SolValue};
use gatehouse::chain::evm::abi::IEip3009Token;
use gatehouse::chain::evm::signature::ERC6492_MAGIC;
use gatehouse::chain::{AssetConfig, ChainConfig, SettlementMode};
use gatehouse::clock::{Clock, SystemClock};
use gatehouse::config::Config;
use gatehouse::server::Running;
use gatehouse::verdict::ReasonCode;
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use anvil::{AMOUNT, Anvil, DEV_KEYS, NETWORK, PAY_TO, Pay, free_port, signer};
use common::{TestDb, post_json};

/// A chain entry for anvil; `key_file` set means local settlement from that key file.
fn chain(
    anvil_url: &str,
    anvil: Option<&Anvil>,
    key_file: Option<&std::path::Path>,
) -> ChainConfig {
    ChainConfig {
        rpc_urls: vec![anvil_url.to_owned()],
        onchain_checks: true,
        multicall3: Some(true),
        rpc_timeout_ms: Some(2_000),
        assets: anvil
            .map(|a| {
                vec![AssetConfig {
                    address: format!("{:#x}", a.usdc),
                    name: "USDC".into(),
                    version: "2".into(),
                    decimals: 6,
                }]
            })
            .unwrap_or_default(),
        settlement: if key_file.is_some() {
            SettlementMode::Local
        } else {
            SettlementMode::Forward
        },
        signer_key_file: key_file.map(|p| p.to_path_buf()),
        settle_receipt_timeout_secs: Some(20),
        ..ChainConfig::default()
    }
}

/// Gatehouse in local mode against `anvil`, with no upstream reachable.
struct Local {
    gh: Running,
    _db: TestDb,
    _key_dir: tempfile::TempDir,
}

fn key_file() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("key"), format!("0x{}\n", DEV_KEYS[3])).expect("key file");
    dir
}

fn local_config(db: &TestDb, anvil: &Anvil, rpc: &str, key_dir: &tempfile::TempDir) -> Config {
    let dead_upstream = format!("http://127.0.0.1:{}", free_port());
    let mut config = common::test_config(&db.url, &dead_upstream);
    config.chains.clear();
    config.chains.insert(
        NETWORK.to_owned(),
        chain(rpc, Some(anvil), Some(&key_dir.path().join("key"))),
    );
    config.request_timeout_ms = 60_000;
    config.reconcile_interval_secs = 3_600;
    config
}

async fn local(anvil: &Anvil, configure: impl FnOnce(&mut Config)) -> Local {
    let db = TestDb::sqlite();
    let key_dir = key_file();
    let mut config = local_config(&db, anvil, &anvil.url, &key_dir);
    configure(&mut config);
    let gh = common::start(config).await;
    Local {
        gh,
        _db: db,
        _key_dir: key_dir,
    }
}

impl Local {
    async fn verify(&self, body: &Value) -> Value {
        let (status, v, _) = post_json(&format!("http://{}/verify", self.gh.addr), body).await;
        assert_eq!(status, 200, "{v}");
        v
    }

    async fn settle(&self, body: &Value) -> Value {
        let (status, v, _) = post_json(&format!("http://{}/settle", self.gh.addr), body).await;
        assert_eq!(status, 200, "{v}");
        v
    }
}

async fn now(anvil: &Anvil) -> u64 {
    SystemClock.now_secs().max(anvil.block_time().await)
}

async fn balance_of(anvil: &Anvil, who: Address) -> U256 {
    let data = IEip3009Token::balanceOfCall { account: who }.abi_encode();
    let out = anvil
        .rpc(
            "eth_call",
            json!([{"to": anvil.usdc, "data": Bytes::from(data)}, "latest"]),
        )
        .await;
    let raw: Bytes = out.as_str().expect("hex").parse().expect("hex");
    IEip3009Token::balanceOfCall::abi_decode_returns(&raw).expect("uint")
}

fn code(c: ReasonCode) -> String {
    c.code().to_owned()
}

#[track_caller]
fn assert_refused(v: &Value, expected: &str, case: &str) {
    assert_eq!(v["isValid"], false, "{case}: {v}");
    assert_eq!(v["invalidReason"], expected, "{case}: {v}");
}

/// The happy path, the exactly-once guarantees and `/supported` with no upstream.
#[tokio::test]
async fn local_settlement_settles_on_chain_once_and_refuses_replays() {
    let anvil = Anvil::start().await;
    let local = local(&anvil, |_| {}).await;
    let pay = Pay::new(&anvil, now(&anvil).await, signer(0));
    let body = pay.body();

    let v = local.verify(&body).await;
    assert_eq!(v["isValid"], true, "{v}");
    assert_eq!(v["payer"], format!("{:#x}", pay.from));

    let before_to = balance_of(&anvil, PAY_TO).await;
    let before_from = balance_of(&anvil, pay.from).await;
    let s = local.settle(&body).await;
    assert_eq!(s["success"], true, "{s}");
    assert_eq!(s["network"], NETWORK);
    let tx = s["transaction"].as_str().expect("tx hash");
    assert_eq!(tx.len(), 66, "{s}");
    let receipt = anvil.rpc("eth_getTransactionReceipt", json!([tx])).await;
    assert_eq!(receipt["status"], "0x1", "{receipt}");
    assert_eq!(
        receipt["from"],
        format!("{:#x}", signer(3).address()),
        "{receipt}"
    );
    assert_eq!(
        balance_of(&anvil, PAY_TO).await - before_to,
        U256::from(AMOUNT)
    );
    assert_eq!(
        before_from - balance_of(&anvil, pay.from).await,
        U256::from(AMOUNT)
    );

    // Replay: the journal refuses the second settle; nothing moves again.
    let again = local.settle(&body).await;
    assert_eq!(again["success"], false, "{again}");
    assert_eq!(
        again["errorReason"],
        code(ReasonCode::DuplicateSettlement),
        "{again}"
    );
    assert_eq!(
        balance_of(&anvil, PAY_TO).await - before_to,
        U256::from(AMOUNT)
    );
    let v = local.verify(&body).await;
    assert_eq!(v["isValid"], false, "{v}");

    // The journal says settled, with the hash.
    let store = local.gh.state.pipeline.store();
    let evidence = store.evidence_after(0, 100).await.expect("evidence");
    let forward = evidence
        .iter()
        .find(|e| e.kind == "settle_forward")
        .expect("settle_forward record");
    assert!(
        forward.body.contains("\"settlement\":\"local\""),
        "{}",
        forward.body
    );

    // /supported lists the local chain with no upstream reachable.
    let supported: Value = reqwest::get(format!("http://{}/supported", local.gh.addr))
        .await
        .expect("supported")
        .json()
        .await
        .expect("json");
    let kinds = supported["kinds"].as_array().expect("kinds");
    assert!(
        kinds
            .iter()
            .any(|k| k["x402Version"] == 2 && k["scheme"] == "exact" && k["network"] == NETWORK),
        "{supported}"
    );
    assert_eq!(
        supported["signers"]["eip155:*"][0],
        format!("{:#x}", signer(3).address()),
        "{supported}"
    );
    local.gh.stop().await.expect("stop");
}

/// Every on-chain refusal reaches the client through `/verify` and `/settle`, and no settle is
/// attempted for a refused payment.
#[tokio::test]
async fn chain_refusals_through_the_api() {
    let anvil = Anvil::start().await;
    let local = local(&anvil, |_| {}).await;
    let now = now(&anvil).await;
    let base = || Pay::new(&anvil, now, signer(0));

    // The authorization of `used` is consumed on-chain directly, before Gatehouse sees it.
    let used = base();
    used.settle_directly(&anvil).await;

    // An ERC-6492 counterfactual wallet from a factory nobody allowlisted.
    let owner = signer(1);
    let (cf_wallet, deploy) = anvil
        .counterfactual(owner.address(), B256::repeat_byte(1))
        .await;
    anvil.mint(cf_wallet, U256::from(1_000_000u64)).await;
    let mut cf = Pay::new(&anvil, now, owner);
    cf.from = cf_wallet;
    let mut wrapped = (anvil.factory, deploy, cf.signed()).abi_encode_params();
    wrapped.extend_from_slice(ERC6492_MAGIC.as_slice());
    cf.signature = Some(wrapped.into());

    let mut cases: Vec<(&str, Pay, ReasonCode)> = Vec::new();
    let mut p = base();
    p.key = signer(3);
    cases.push(("wrong signer", p, ReasonCode::EvmSignature));
    let mut p = base();
    p.sign_name = "USD Coin".into();
    p.extra_name = "USD Coin".into();
    cases.push(("domain name mismatch", p, ReasonCode::EvmTokenNameMismatch));
    let mut p = base();
    p.sign_version = "1".into();
    p.extra_version = "1".into();
    cases.push((
        "domain version mismatch",
        p,
        ReasonCode::EvmTokenVersionMismatch,
    ));
    let mut p = base();
    p.sign_chain_id = 8453;
    cases.push(("signed for another chain", p, ReasonCode::EvmSignature));
    let mut p = base();
    p.valid_before = now - 10;
    cases.push(("expired", p, ReasonCode::EvmValidBefore));
    let mut p = base();
    p.valid_after = now + 100;
    cases.push(("not yet valid", p, ReasonCode::EvmValidAfter));
    let mut p = base();
    p.valid_before = now + 600;
    cases.push(("validBefore too far", p, ReasonCode::EvmValidBeforeTooFar));
    let mut p = base();
    p.to = address!("00000000000000000000000000000000000000aa");
    cases.push(("recipient mismatch", p, ReasonCode::EvmRecipientMismatch));
    let mut p = base();
    p.value = AMOUNT - 1;
    cases.push(("under-payment", p, ReasonCode::EvmAuthorizationValue));
    let mut p = base();
    p.value = AMOUNT + 1;
    cases.push(("over-payment", p, ReasonCode::EvmAuthorizationValue));
    cases.push((
        "insufficient balance",
        Pay::new(&anvil, now, signer(2)),
        ReasonCode::EvmInsufficientBalance,
    ));
    cases.push(("nonce already used", used, ReasonCode::EvmNonceAlreadyUsed));
    let mut p = base();
    p.asset = address!("00000000000000000000000000000000000000bb");
    cases.push((
        "asset is not a contract",
        p,
        ReasonCode::AssetNotDeployedContract,
    ));
    cases.push((
        "6492 factory not allowlisted",
        cf,
        ReasonCode::Eip6492FactoryNotAllowed,
    ));

    let before = balance_of(&anvil, PAY_TO).await;
    for (case, pay, expected) in cases {
        let body = pay.body();
        assert_refused(&local.verify(&body).await, &code(expected.clone()), case);
        let s = local.settle(&body).await;
        assert_eq!(s["success"], false, "{case}: {s}");
        assert_eq!(s["errorReason"], code(expected), "{case}: {s}");
        assert_eq!(s["transaction"], "", "{case}: {s}");
    }
    // Only the direct transfer of `used` moved funds.
    assert_eq!(
        balance_of(&anvil, PAY_TO).await - before,
        U256::ZERO,
        "a refused payment moved funds"
    );
    local.gh.stop().await.expect("stop");
}

/// An EIP-1271 contract wallet pays and is settled locally.
#[tokio::test]
async fn eip1271_wallet_is_verified_and_settled() {
    let anvil = Anvil::start().await;
    let local = local(&anvil, |_| {}).await;
    let mut pay = Pay::new(&anvil, now(&anvil).await, signer(1));
    pay.from = anvil.wallet;
    let body = pay.body();
    let v = local.verify(&body).await;
    assert_eq!(v["isValid"], true, "{v}");
    let before = balance_of(&anvil, anvil.wallet).await;
    let s = local.settle(&body).await;
    assert_eq!(s["success"], true, "{s}");
    assert_eq!(
        before - balance_of(&anvil, anvil.wallet).await,
        U256::from(AMOUNT)
    );
    local.gh.stop().await.expect("stop");
}

/// 20 settles from 20 payers at once: one facilitator key, no nonce collisions.
#[tokio::test]
async fn twenty_concurrent_local_settles_all_land() {
    let anvil = Anvil::start().await;
    let local = local(&anvil, |_| {}).await;
    let payers: Vec<PrivateKeySigner> = (0u64..20)
        .map(|i| {
            PrivateKeySigner::from_bytes(&B256::from(U256::from(0x1000 + i))).expect("test key")
        })
        .collect();
    for payer in &payers {
        anvil.mint(payer.address(), U256::from(AMOUNT)).await;
    }
    let now = now(&anvil).await;
    let bodies: Vec<Value> = payers
        .iter()
        .map(|k| Pay::new(&anvil, now, k.clone()).body())
        .collect();
    let before = balance_of(&anvil, PAY_TO).await;
    let url = format!("http://{}/settle", local.gh.addr);
    let tasks: Vec<_> = bodies
        .into_iter()
        .map(|body| {
            let url = url.clone();
            tokio::spawn(async move { post_json(&url, &body).await })
        })
        .collect();
    let mut hashes = std::collections::BTreeSet::new();
    for task in tasks {
        let (status, s, _) = task.await.expect("task");
        assert_eq!(status, 200, "{s}");
        assert_eq!(s["success"], true, "{s}");
        hashes.insert(s["transaction"].as_str().unwrap_or_default().to_owned());
    }
    assert_eq!(hashes.len(), 20);
    assert_eq!(
        balance_of(&anvil, PAY_TO).await - before,
        U256::from(AMOUNT * 20)
    );
    for payer in &payers {
        assert_eq!(balance_of(&anvil, payer.address()).await, U256::ZERO);
    }
    local.gh.stop().await.expect("stop");
}

/// With the RPC down nothing is approved and nothing is settled (fail closed).
#[tokio::test]
async fn rpc_down_fails_closed() {
    let anvil = Anvil::start().await;
    let db = TestDb::sqlite();
    let key_dir = key_file();
    let dead = format!("http://127.0.0.1:{}", free_port());
    let config = local_config(&db, &anvil, &dead, &key_dir);
    let gh = common::start(config).await;
    let body = Pay::new(&anvil, now(&anvil).await, signer(0)).body();
    let (_, v, _) = post_json(&format!("http://{}/verify", gh.addr), &body).await;
    assert_refused(&v, &code(ReasonCode::CheckUnavailable), "rpc down");
    let (_, s, _) = post_json(&format!("http://{}/settle", gh.addr), &body).await;
    assert_eq!(s["success"], false, "{s}");
    assert_eq!(s["errorReason"], code(ReasonCode::CheckUnavailable), "{s}");
    gh.stop().await.expect("stop");
}

/// A settlement whose receipt does not come in time is `settlement_pending` with its hash;
/// once mined, `reconcile_once` finishes the journal entry and records a `reconcile` record.
#[tokio::test]
async fn pending_local_settlement_is_resolved_by_reconcile_once() {
    let anvil = Anvil::start().await;
    let local = local(&anvil, |c| {
        if let Some(chain) = c.chains.get_mut(NETWORK) {
            chain.settle_receipt_timeout_secs = Some(1);
        }
    })
    .await;
    let body = Pay::new(&anvil, now(&anvil).await, signer(0)).body();
    anvil.rpc("evm_setAutomine", json!([false])).await;
    let s = local.settle(&body).await;
    assert_eq!(s["success"], false, "{s}");
    assert_eq!(s["errorReason"], code(ReasonCode::SettlementPending), "{s}");
    let tx = s["transaction"].as_str().expect("hash").to_owned();
    assert_eq!(tx.len(), 66, "{s}");

    let store = local.gh.state.pipeline.store().clone();
    let pending = store.pending_settlements(10).await.expect("pending");
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].transaction.as_deref(), Some(tx.as_str()));

    // Not mined yet: the chain cannot decide, the entry stays pending.
    let report = local
        .gh
        .state
        .reconciler
        .reconcile_once()
        .await
        .expect("round");
    assert_eq!((report.examined, report.undecided), (1, 1), "{report:?}");

    // A retry of the same payment is refused while it is pending.
    let again = local.settle(&body).await;
    assert_eq!(
        again["errorReason"],
        code(ReasonCode::DuplicateSettlement),
        "{again}"
    );

    anvil.rpc("evm_setAutomine", json!([true])).await;
    anvil.rpc("evm_mine", json!([])).await;
    let report = local
        .gh
        .state
        .reconciler
        .reconcile_once()
        .await
        .expect("round");
    assert_eq!((report.examined, report.settled), (1, 1), "{report:?}");
    assert!(
        store
            .pending_settlements(10)
            .await
            .expect("pending")
            .is_empty()
    );
    let record = store
        .settlement(&pending[0].fingerprint)
        .await
        .expect("journal")
        .expect("entry");
    assert_eq!(record.state, gatehouse::store::SettlementState::Settled);
    assert_eq!(record.transaction.as_deref(), Some(tx.as_str()));
    let evidence = store
        .evidence_for(&pending[0].fingerprint)
        .await
        .expect("evidence");
    let reconcile = evidence
        .iter()
        .find(|e| e.kind == "reconcile")
        .expect("a reconcile record");
    assert_eq!(reconcile.decision, "settled");
    assert!(reconcile.body.contains(&tx), "{}", reconcile.body);
    let nothing = local
        .gh
        .state
        .reconciler
        .reconcile_once()
        .await
        .expect("round");
    assert_eq!(nothing.examined, 0);
    local.gh.stop().await.expect("stop");
}

/// Forward mode: a payment the chain refuses never reaches the upstream.
#[tokio::test]
async fn forward_mode_chain_refusal_never_reaches_the_upstream() {
    let anvil = Anvil::start().await;
    let upstream = MockServer::start().await;
    for route in ["/verify", "/settle"] {
        Mock::given(method("POST"))
            .and(path(route))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"isValid": true})))
            .expect(0)
            .mount(&upstream)
            .await;
    }
    let db = TestDb::sqlite();
    let mut config = common::test_config(&db.url, &upstream.uri());
    config.chains.clear();
    config
        .chains
        .insert(NETWORK.to_owned(), chain(&anvil.url, Some(&anvil), None));
    let gh = common::start(config).await;
    let mut pay = Pay::new(&anvil, now(&anvil).await, signer(0));
    pay.value = AMOUNT - 1;
    let body = pay.body();
    let (_, v, _) = post_json(&format!("http://{}/verify", gh.addr), &body).await;
    assert_refused(&v, &code(ReasonCode::EvmAuthorizationValue), "forward");
    let (_, s, _) = post_json(&format!("http://{}/settle", gh.addr), &body).await;
    assert_eq!(s["success"], false, "{s}");
    assert_eq!(
        s["errorReason"],
        code(ReasonCode::EvmAuthorizationValue),
        "{s}"
    );
    gh.stop().await.expect("stop");
    upstream.verify().await;
}

/// A local chain without a usable key does not start, and the error names the key.
#[tokio::test]
async fn missing_or_invalid_signer_key_is_a_config_error_naming_the_key() {
    let db = TestDb::sqlite();
    let dir = tempfile::tempdir().expect("dir");
    let mut config = common::test_config(&db.url, "http://127.0.0.1:9");
    config.request_timeout_ms = 60_000;
    config.chains.clear();
    let mut entry = chain("http://127.0.0.1:9", None, Some(&dir.path().join("absent")));
    config.chains.insert(NETWORK.to_owned(), entry.clone());
    let err = gatehouse::server::start(config.clone())
        .await
        .expect_err("no key file");
    assert!(err.to_string().contains("signer_key_file"), "{err}");

    std::fs::write(dir.path().join("bad"), "0xnot-a-key").expect("write");
    entry.signer_key_file = Some(dir.path().join("bad"));
    config.chains.insert(NETWORK.to_owned(), entry.clone());
    let err = gatehouse::server::start(config.clone())
        .await
        .expect_err("bad key");
    let text = err.to_string();
    assert!(text.contains("signer_key_file"), "{text}");
    assert!(!text.contains("not-a-key"), "{text}");

    entry.signer_key_file = None;
    entry.signer_key_env = Some("GATEHOUSE_TEST_KEY_THAT_IS_NOT_SET".into());
    config.chains.insert(NETWORK.to_owned(), entry.clone());
    let err = gatehouse::server::start(config.clone())
        .await
        .expect_err("unset env");
    assert!(err.to_string().contains("signer_key_env"), "{err}");

    entry.signer_key_env = None;
    config.chains.insert(NETWORK.to_owned(), entry);
    let err = gatehouse::server::start(config).await.expect_err("no key");
    assert!(err.to_string().contains("signer_key_env"), "{err}");
}

/// The key never appears in Debug output of the running state.
#[tokio::test]
async fn signer_key_is_not_in_debug_output() {
    let anvil = Anvil::start().await;
    let local = local(&anvil, |_| {}).await;
    let debug = format!("{:?}", local.gh.state);
    assert!(!debug.contains(DEV_KEYS[3]), "key leaked in Debug");
    local.gh.stop().await.expect("stop");
}

/// Forward mode: settlements the upstream left unknown (a 500) are resolved from the chain
/// (`authorizationState` is authoritative whoever sent the transaction): one used on-chain
/// becomes settled, one whose `validBefore` passed unused becomes failed.
#[tokio::test]
async fn forward_mode_pending_settlements_are_reconciled_from_the_chain() {
    let anvil = Anvil::start().await;
    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/settle"))
        .respond_with(ResponseTemplate::new(500))
        .expect(2)
        .mount(&upstream)
        .await;
    let db = TestDb::sqlite();
    let mut config = common::test_config(&db.url, &upstream.uri());
    config.chains.clear();
    config
        .chains
        .insert(NETWORK.to_owned(), chain(&anvil.url, Some(&anvil), None));
    config.reconcile_interval_secs = 3_600;
    let start_secs = now(&anvil).await;
    let (gh, clock) = common::start_at(config, start_secs * 1_000).await;

    let landed = Pay::new(&anvil, start_secs, signer(0));
    let lapsed = Pay::new(&anvil, start_secs, signer(1));
    for pay in [&landed, &lapsed] {
        let (_, s, _) = post_json(&format!("http://{}/settle", gh.addr), &pay.body()).await;
        assert_eq!(s["errorReason"], code(ReasonCode::SettlementPending), "{s}");
    }
    let store = gh.state.pipeline.store().clone();
    assert_eq!(
        store.pending_settlements(10).await.expect("pending").len(),
        2
    );

    // The upstream's transaction did land for `landed` (sent here directly).
    landed.settle_directly(&anvil).await;

    let report = gh.state.reconciler.reconcile_once().await.expect("round");
    assert_eq!(
        (report.examined, report.settled, report.undecided),
        (2, 1, 1),
        "{report:?}"
    );

    // Past `validBefore` the unused authorization can never settle.
    clock.set_ms((lapsed.valid_before + 1) * 1_000);
    let report = gh.state.reconciler.reconcile_once().await.expect("round");
    assert_eq!((report.examined, report.failed), (1, 1), "{report:?}");
    assert!(
        store
            .pending_settlements(10)
            .await
            .expect("pending")
            .is_empty()
    );

    let evidence = store.evidence_after(0, 1_000).await.expect("evidence");
    let decisions: Vec<&str> = evidence
        .iter()
        .filter(|e| e.kind == "reconcile")
        .map(|e| e.decision.as_str())
        .collect();
    assert_eq!(decisions, ["settled", "failed"]);
    gh.stop().await.expect("stop");
    upstream.verify().await;
}

/// An entry left `in_flight` (its process died mid-settle) is examined only once stale
/// (request timeout + 60 s), then decided by `authorizationState` / `validBefore`.
#[tokio::test]
async fn stale_in_flight_settlements_are_reconciled_once_stale() {
    use gatehouse::protocol::{FacilitatorRequest, normalise};
    use gatehouse::store::{EvidenceDraft, SettlementClaim, SettlementState};

    let anvil = Anvil::start().await;
    let db = TestDb::sqlite();
    let mut config = common::test_config(&db.url, "http://127.0.0.1:9");
    config.chains.clear();
    config
        .chains
        .insert(NETWORK.to_owned(), chain(&anvil.url, Some(&anvil), None));
    config.reconcile_interval_secs = 3_600;
    let request_timeout_ms = config.request_timeout_ms;
    let t0_secs = now(&anvil).await;
    let (gh, clock) = common::start_at(config, t0_secs * 1_000).await;
    let store = gh.state.pipeline.store().clone();

    let landed = Pay::new(&anvil, t0_secs, signer(0));
    let lapsed = Pay::new(&anvil, t0_secs, signer(1));
    let mut fingerprints = Vec::new();
    for pay in [&landed, &lapsed] {
        // What the pipeline writes before forwarding: the claim and the settle_forward record.
        let body = pay.body();
        let request = FacilitatorRequest::decode(bytes::Bytes::from(
            serde_json::to_vec(&body).expect("json"),
        ))
        .expect("decodes");
        let payment = normalise(&request).expect("normalises");
        store
            .begin_settlement(&SettlementClaim {
                fingerprint: payment.fingerprint.clone(),
                payment_identifier: None,
                request_digest: "test".into(),
                network: NETWORK.into(),
                payer: payment.payer.clone(),
                now_ms: t0_secs * 1_000,
            })
            .await
            .expect("claim");
        store
            .append_evidence(EvidenceDraft {
                kind: "settle_forward".into(),
                gate: Some("settle".into()),
                fingerprint: Some(payment.fingerprint.clone()),
                decision: "allow".into(),
                request_id: "crashed".into(),
                created_at_ms: t0_secs * 1_000,
                body: json!({"request": body}),
            })
            .await
            .expect("evidence");
        fingerprints.push(payment.fingerprint);
    }
    landed.settle_directly(&anvil).await;

    // Not stale yet: the request that owns them might still be running.
    clock.set_ms(t0_secs * 1_000 + request_timeout_ms);
    let report = gh.state.reconciler.reconcile_once().await.expect("round");
    assert_eq!(report.examined, 0, "{report:?}");

    clock.set_ms(t0_secs * 1_000 + request_timeout_ms + 61_000);
    let report = gh.state.reconciler.reconcile_once().await.expect("round");
    assert_eq!(
        (report.examined, report.settled, report.failed),
        (2, 1, 1),
        "{report:?}"
    );
    let states: Vec<SettlementState> = {
        let mut out = Vec::new();
        for f in &fingerprints {
            let record = store.settlement(f).await.expect("journal").expect("entry");
            out.push(record.state);
        }
        out
    };
    assert_eq!(states, [SettlementState::Settled, SettlementState::Failed]);
    gh.stop().await.expect("stop");
}
