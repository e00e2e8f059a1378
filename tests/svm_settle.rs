//! Solana settlement through Gatehouse's HTTP API against a real SVM (svm-test-node: LiteSVM
//! with the real SPL Token and Token-2022 programs), local and forwarded.
//!
//! Invariants (DESIGN.md): a settle reports success only when the chain confirmed the
//! transaction; "did not land" (blockhash expired, signature unknown) is a definitive failure;
//! an outcome Gatehouse cannot know is `settlement_pending`, resolved later by the reconciler
//! from the chain; one payment (one client signature) settles once, across replicas sharing
//! the database.

mod common;
#[path = "common/svm_node.rs"]
mod svm_node;

use std::str::FromStr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use base64::Engine;
use gatehouse::chain::{ChainConfig, SettlementMode};
use gatehouse::config::Config;
use gatehouse::protocol::network::SOLANA_DEVNET;
use gatehouse::server::Running;
use serde_json::{Value, json};
use solana_compute_budget_interface::ComputeBudgetInstruction;
use solana_hash::Hash;
use solana_instruction::Instruction;
use solana_keypair::Keypair;
use solana_message::{VersionedMessage, v0};
use solana_pubkey::Pubkey;
use solana_signature::Signature;
use solana_signer::Signer;
use solana_transaction::versioned::VersionedTransaction;
use spl_associated_token_account_interface::address::get_associated_token_address_with_program_id as ata;
use svm_node::SvmNode;

use common::{TestDb, post_json, test_upstream};

const SPL_TOKEN: &str = "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA";
const TOKEN_2022: &str = "TokenzQdBNbLqP5VEhdkAS6EPFLC1PHnBqCXEpPxuEb";
const PRICE: u64 = 10_000;
const START: u64 = 1_000_000;
const DECIMALS: u8 = 6;

/// A funded world: a mint under `program`, a client holding [`START`] units, a recipient with
/// an empty ATA, and a funded facilitator fee payer whose keypair Gatehouse may hold.
struct World {
    node: SvmNode,
    program: Pubkey,
    mint: Pubkey,
    client: Keypair,
    fee_payer: Keypair,
    pay_to: Pubkey,
    key_dir: tempfile::TempDir,
}

impl World {
    async fn new(program: &str) -> Self {
        let node = SvmNode::start();
        let program_key = Pubkey::from_str(program).unwrap();
        let (mint, client, fee_payer) = (Keypair::new().pubkey(), Keypair::new(), Keypair::new());
        let pay_to = Keypair::new().pubkey();
        node.set_mint(&mint.to_string(), program, DECIMALS, 1_000_000_000)
            .await;
        for (owner, amount) in [(client.pubkey(), START), (pay_to, 0)] {
            node.set_token_account(
                &ata(&owner, &mint, &program_key).to_string(),
                program,
                &mint.to_string(),
                &owner.to_string(),
                amount,
            )
            .await;
        }
        node.airdrop(&fee_payer.pubkey().to_string(), 1_000_000_000)
            .await;
        Self {
            node,
            program: program_key,
            mint,
            client,
            fee_payer,
            pay_to,
            key_dir: tempfile::tempdir().unwrap(),
        }
    }

    /// The fee payer's keypair in a file: the JSON array `solana-keygen` writes, or base58.
    fn key_file(&self, json_format: bool) -> std::path::PathBuf {
        let bytes = self.fee_payer.to_bytes();
        let text = if json_format {
            serde_json::to_string(&bytes.to_vec()).unwrap()
        } else {
            bs58::encode(bytes).into_string()
        };
        let path = self
            .key_dir
            .path()
            .join(if json_format { "id.json" } else { "id.b58" });
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Gatehouse settling devnet locally with the fee payer's key.
    fn local_config(&self, db: &TestDb, upstream: &str) -> Config {
        let mut config = common::test_config(&db.url, upstream);
        config.chains.insert(
            SOLANA_DEVNET.to_owned(),
            ChainConfig {
                rpc_urls: vec![self.node.url.clone()],
                onchain_checks: true,
                settlement: SettlementMode::Local,
                signer_key_file: Some(self.key_file(true)),
                settle_receipt_timeout_secs: Some(5),
                ..ChainConfig::default()
            },
        );
        config
    }

    /// Gatehouse forwarding devnet to the upstream whose fee payer is ours.
    fn forward_config(&self, db: &TestDb, upstream: &str) -> Config {
        let mut config = common::test_config(&db.url, upstream);
        config.chains.insert(
            SOLANA_DEVNET.to_owned(),
            ChainConfig {
                rpc_urls: vec![self.node.url.clone()],
                onchain_checks: true,
                fee_payers: vec![self.fee_payer.pubkey().to_string()],
                ..ChainConfig::default()
            },
        );
        config
    }

    /// A client-signed transfer of `amount` to the recipient, the fee payer's slot empty.
    async fn transaction(&self, fee_payer: &Pubkey, amount: u64) -> String {
        let blockhash = Hash::from_str(&self.node.latest_blockhash().await).unwrap();
        let transfer = spl_token_2022_interface::instruction::transfer_checked(
            &self.program,
            &ata(&self.client.pubkey(), &self.mint, &self.program),
            &self.mint,
            &ata(&self.pay_to, &self.mint, &self.program),
            &self.client.pubkey(),
            &[],
            amount,
            DECIMALS,
        )
        .unwrap();
        let ixs: Vec<Instruction> = vec![
            ComputeBudgetInstruction::set_compute_unit_limit(20_000),
            ComputeBudgetInstruction::set_compute_unit_price(1),
            transfer,
        ];
        let message = VersionedMessage::V0(
            v0::Message::try_compile(fee_payer, &ixs, &[], blockhash).unwrap(),
        );
        let bytes = bincode::serialize(&message).unwrap();
        let n = usize::from(message.header().num_required_signatures);
        let mut signatures = vec![Signature::default(); n];
        let client_slot = message
            .static_account_keys()
            .iter()
            .position(|k| *k == self.client.pubkey())
            .unwrap();
        signatures[client_slot] = self.client.sign_message(&bytes);
        base64::engine::general_purpose::STANDARD.encode(
            bincode::serialize(&VersionedTransaction {
                signatures,
                message,
            })
            .unwrap(),
        )
    }

    /// A v2 `/verify`/`/settle` body naming `fee_payer`.
    fn body(&self, transaction: &str, fee_payer: &Pubkey) -> Value {
        let requirements = json!({
            "scheme": "exact",
            "network": SOLANA_DEVNET,
            "amount": PRICE.to_string(),
            "asset": self.mint.to_string(),
            "payTo": self.pay_to.to_string(),
            "maxTimeoutSeconds": 60,
            "extra": {"feePayer": fee_payer.to_string()}
        });
        json!({
            "x402Version": 2,
            "paymentPayload": {
                "x402Version": 2,
                "resource": {"url": "https://api.example.com/premium"},
                "accepted": requirements,
                "payload": {"transaction": transaction}
            },
            "paymentRequirements": requirements
        })
    }

    async fn valid_body(&self) -> Value {
        let fee_payer = self.fee_payer.pubkey();
        self.body(&self.transaction(&fee_payer, PRICE).await, &fee_payer)
    }

    async fn balance(&self, owner: &Pubkey) -> u64 {
        self.node
            .token_balance(&ata(owner, &self.mint, &self.program).to_string())
            .await
            .unwrap()
    }
}

async fn call(gh: &Running, path: &str, body: &Value) -> Value {
    let (status, answer, _) = post_json(&format!("http://{}{path}", gh.addr), body).await;
    assert_eq!(status, 200, "{answer}");
    answer
}

async fn settles_locally_and_moves_the_tokens(program: &str) {
    let w = World::new(program).await;
    let db = TestDb::sqlite();
    let upstream = test_upstream::start(Duration::ZERO).await;
    let gh = common::start(w.local_config(&db, &upstream.url)).await;
    let body = w.valid_body().await;

    let verified = call(&gh, "/verify", &body).await;
    assert_eq!(verified["isValid"], true, "{verified}");
    let settled = call(&gh, "/settle", &body).await;
    assert_eq!(settled["success"], true, "{settled}");
    let signature = settled["transaction"].as_str().unwrap().to_owned();
    assert_eq!(settled["network"], SOLANA_DEVNET);

    // The chain knows the transaction by the fee payer's signature, and the tokens moved.
    let status = w.node.signature_status(&signature).await;
    assert!(status["err"].is_null(), "{status}");
    assert_eq!(w.balance(&w.pay_to).await, PRICE);
    assert_eq!(w.balance(&w.client.pubkey()).await, START - PRICE);
    // Local: the upstream saw nothing.
    assert_eq!(upstream.recorded.verify_calls.load(Ordering::SeqCst), 0);
    assert_eq!(upstream.recorded.settle_calls.load(Ordering::SeqCst), 0);

    // The same payment again is a duplicate, and nothing more is sent.
    let again = call(&gh, "/settle", &body).await;
    assert_eq!(again["success"], false);
    assert_eq!(again["errorReason"], "duplicate_settlement", "{again}");
    assert_eq!(w.node.send_count().await, 1);
    assert_eq!(w.balance(&w.pay_to).await, PRICE);
}

#[tokio::test]
async fn local_settle_moves_spl_token_balances() {
    settles_locally_and_moves_the_tokens(SPL_TOKEN).await;
}

#[tokio::test]
async fn local_settle_moves_token_2022_balances() {
    settles_locally_and_moves_the_tokens(TOKEN_2022).await;
}

#[tokio::test]
async fn local_mode_accepts_only_our_fee_payer_and_advertises_it() {
    let w = World::new(SPL_TOKEN).await;
    let db = TestDb::sqlite();
    let upstream = test_upstream::start(Duration::ZERO).await;
    let mut config = w.local_config(&db, &upstream.url);
    // The base58 form is accepted too.
    config
        .chains
        .get_mut(SOLANA_DEVNET)
        .unwrap()
        .signer_key_file = Some(w.key_file(false));
    let gh = common::start(config).await;
    let ours = w.fee_payer.pubkey().to_string();

    // Another fee payer (e.g. the upstream's) is refused, even though the upstream lists it.
    let other = Keypair::new().pubkey();
    w.node.airdrop(&other.to_string(), 1_000_000_000).await;
    let foreign = w.body(&w.transaction(&other, PRICE).await, &other);
    let verified = call(&gh, "/verify", &foreign).await;
    assert_eq!(verified["isValid"], false);
    assert_eq!(
        verified["invalidReason"], "fee_payer_not_managed_by_facilitator",
        "{verified}"
    );
    let settled = call(&gh, "/settle", &foreign).await;
    assert_eq!(settled["success"], false);
    assert_eq!(w.node.send_count().await, 0);

    // /supported offers our fee payer for devnet, not the upstream's.
    let response = reqwest::get(format!("http://{}/supported", gh.addr))
        .await
        .unwrap();
    let supported: Value = response.json().await.unwrap();
    let devnet: Vec<&Value> = supported["kinds"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["network"] == SOLANA_DEVNET || k["network"] == "solana-devnet")
        .collect();
    assert_eq!(devnet.len(), 2, "{supported}");
    for kind in devnet {
        assert_eq!(kind["extra"]["feePayer"], ours.as_str(), "{supported}");
    }
    let signers = supported["signers"]["solana:*"].as_array().unwrap();
    assert!(signers.contains(&json!(ours)), "{supported}");
}

#[tokio::test]
async fn a_transaction_that_does_not_land_fails_definitively() {
    let w = World::new(SPL_TOKEN).await;
    let db = TestDb::sqlite();
    let upstream = test_upstream::start(Duration::ZERO).await;
    let gh = common::start(w.local_config(&db, &upstream.url)).await;
    let body = w.valid_body().await;

    // Simulation passes (the settle gate re-checks), the node accepts the transaction, and
    // then the leader drops it; the blockhash expires while Gatehouse is confirming.
    w.node.drop_transactions(true).await;
    let url = format!("http://{}/settle", gh.addr);
    let request = {
        let body = body.clone();
        tokio::spawn(async move { post_json(&url, &body).await })
    };
    for _ in 0..100 {
        if w.node.send_count().await > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(w.node.send_count().await, 1);
    w.node.expire_blockhash().await;
    let (status, settled, _) = request.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(settled["success"], false, "{settled}");
    assert_eq!(
        settled["errorReason"], "settle_exact_svm_block_height_exceeded",
        "{settled}"
    );
    assert_eq!(settled["transaction"], "");
    assert_eq!(w.balance(&w.pay_to).await, 0);

    // Failed is definitive: the journal says so and a new transaction may be paid.
    let journal = gh
        .state
        .pipeline
        .store()
        .pending_settlements(10)
        .await
        .unwrap();
    assert!(journal.is_empty(), "{journal:?}");
    w.node.drop_transactions(false).await;
    let retry = call(&gh, "/settle", &w.valid_body().await).await;
    assert_eq!(retry["success"], true, "{retry}");
    assert_eq!(w.balance(&w.pay_to).await, PRICE);
}

#[tokio::test]
async fn a_refused_send_fails_and_nothing_is_broadcast() {
    let w = World::new(SPL_TOKEN).await;
    let db = TestDb::sqlite();
    let upstream = test_upstream::start(Duration::ZERO).await;
    let gh = common::start(w.local_config(&db, &upstream.url)).await;
    let body = w.valid_body().await;
    // Verified while the blockhash lived; settled after it expired: the settle gate's own
    // simulation refuses it before anything is signed or sent.
    assert_eq!(call(&gh, "/verify", &body).await["isValid"], true);
    w.node.expire_blockhash().await;
    let settled = call(&gh, "/settle", &body).await;
    assert_eq!(settled["success"], false, "{settled}");
    assert_eq!(settled["errorReason"], "transaction_simulation_failed");
    assert_eq!(w.node.send_count().await, 0);
}

#[tokio::test]
async fn rpc_down_while_confirming_is_pending_until_reconciled() {
    let w = World::new(TOKEN_2022).await;
    let db = TestDb::sqlite();
    let upstream = test_upstream::start(Duration::ZERO).await;
    let gh = common::start(w.local_config(&db, &upstream.url)).await;
    let body = w.valid_body().await;

    w.node.outage_after_send(true).await;
    let started = tokio::time::Instant::now();
    let settled = call(&gh, "/settle", &body).await;
    assert_eq!(settled["success"], false, "{settled}");
    assert_eq!(settled["errorReason"], "settlement_pending", "{settled}");
    let signature = settled["transaction"].as_str().unwrap().to_owned();
    assert!(!signature.is_empty());
    // A few short polls, not the 5 s confirm timeout.
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    let store = gh.state.pipeline.store();
    assert_eq!(store.pending_settlements(10).await.unwrap().len(), 1);

    // Still down: the reconciler cannot decide and leaves it.
    let report = gh.state.reconciler.reconcile_once().await.unwrap();
    assert_eq!((report.examined, report.errors), (1, 1), "{report:?}");

    // Back up: the chain says it landed.
    w.node.outage(false).await;
    let report = gh.state.reconciler.reconcile_once().await.unwrap();
    assert_eq!(report.settled, 1, "{report:?}");
    assert!(store.pending_settlements(10).await.unwrap().is_empty());
    assert_eq!(w.balance(&w.pay_to).await, PRICE);
    let replay = call(&gh, "/settle", &body).await;
    assert_eq!(replay["errorReason"], "duplicate_settlement", "{replay}");
}

#[tokio::test]
async fn a_pending_settlement_that_never_landed_reconciles_as_failed() {
    let w = World::new(SPL_TOKEN).await;
    let db = TestDb::sqlite();
    let upstream = test_upstream::start(Duration::ZERO).await;
    let gh = common::start(w.local_config(&db, &upstream.url)).await;
    let body = w.valid_body().await;

    w.node.drop_transactions(true).await;
    w.node.outage_after_send(true).await;
    let settled = call(&gh, "/settle", &body).await;
    assert_eq!(settled["errorReason"], "settlement_pending", "{settled}");
    w.node.outage(false).await;

    // The blockhash still lives: the transaction could land, so nothing is decided.
    let report = gh.state.reconciler.reconcile_once().await.unwrap();
    assert_eq!(report.undecided, 1, "{report:?}");
    w.node.expire_blockhash().await;
    let report = gh.state.reconciler.reconcile_once().await.unwrap();
    assert_eq!(report.failed, 1, "{report:?}");
    assert_eq!(w.balance(&w.pay_to).await, 0);
    let store = gh.state.pipeline.store();
    assert!(store.pending_settlements(10).await.unwrap().is_empty());
}

/// Two Gatehouse replicas on one PostgreSQL database; the same payment to both at once.
async fn two_replicas(w: &World, config: impl Fn(&TestDb) -> Config) -> (TestDb, [Value; 2]) {
    let db = TestDb::postgres().await;
    let a = common::start(config(&db)).await;
    let b = common::start(config(&db)).await;
    let body = w.valid_body().await;
    let (url_a, url_b) = (
        format!("http://{}/settle", a.addr),
        format!("http://{}/settle", b.addr),
    );
    let (ra, rb) = tokio::join!(post_json(&url_a, &body), post_json(&url_b, &body));
    (db, [ra.1, rb.1])
}

fn one_success_one_duplicate(answers: &[Value; 2]) {
    let ok = answers.iter().filter(|a| a["success"] == true).count();
    let dup = answers
        .iter()
        .filter(|a| a["errorReason"] == "duplicate_settlement")
        .count();
    assert_eq!((ok, dup), (1, 1), "{answers:?}");
}

#[tokio::test]
async fn duplicate_local_settle_across_replicas_sharing_postgres_is_rejected() {
    let w = World::new(SPL_TOKEN).await;
    let upstream = test_upstream::start(Duration::ZERO).await;
    let (_db, answers) = two_replicas(&w, |db| w.local_config(db, &upstream.url)).await;
    one_success_one_duplicate(&answers);
    assert_eq!(w.node.send_count().await, 1);
    assert_eq!(w.balance(&w.pay_to).await, PRICE);
}

#[tokio::test]
async fn duplicate_forwarded_settle_across_replicas_sharing_postgres_is_rejected() {
    let w = World::new(SPL_TOKEN).await;
    // The upstream's settle is slow, so both requests overlap.
    let upstream = test_upstream::start(Duration::from_millis(300)).await;
    let (_db, answers) = two_replicas(&w, |db| w.forward_config(db, &upstream.url)).await;
    one_success_one_duplicate(&answers);
    assert_eq!(upstream.recorded.settle_calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn forward_mode_verifies_then_forwards_verify_and_settle() {
    let w = World::new(TOKEN_2022).await;
    let db = TestDb::sqlite();
    let upstream = test_upstream::start(Duration::ZERO).await;
    let gh = common::start(w.forward_config(&db, &upstream.url)).await;
    let body = w.valid_body().await;

    let verified = call(&gh, "/verify", &body).await;
    assert_eq!(verified["isValid"], true, "{verified}");
    let settled = call(&gh, "/settle", &body).await;
    assert_eq!(settled["success"], true, "{settled}");
    assert_eq!(upstream.recorded.verify_calls.load(Ordering::SeqCst), 1);
    assert_eq!(upstream.recorded.settle_calls.load(Ordering::SeqCst), 1);
    // Forwarded byte for byte; Gatehouse itself sent nothing.
    let forwarded = upstream.recorded.settle_bodies.lock().await[0].clone();
    assert_eq!(serde_json::from_slice::<Value>(&forwarded).unwrap(), body);
    assert_eq!(w.node.send_count().await, 0);

    // A payment the chain check refuses (amount off) reaches neither upstream endpoint.
    let fee_payer = w.fee_payer.pubkey();
    let short = w.body(&w.transaction(&fee_payer, PRICE - 1).await, &fee_payer);
    let verified = call(&gh, "/verify", &short).await;
    assert_eq!(verified["isValid"], false);
    assert_eq!(
        verified["invalidReason"], "invalid_exact_svm_payload_amount_mismatch",
        "{verified}"
    );
    let settled = call(&gh, "/settle", &short).await;
    assert_eq!(settled["success"], false);
    assert_eq!(upstream.recorded.verify_calls.load(Ordering::SeqCst), 1);
    assert_eq!(upstream.recorded.settle_calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn local_mode_configuration_errors_name_their_keys() {
    let w = World::new(SPL_TOKEN).await;
    let db = TestDb::sqlite();
    // As the Debug output shows it (quotes escaped).
    let key = format!("chains.\\\"{SOLANA_DEVNET}\\\"");

    // Fee payers other than the key make no sense in local mode.
    let mut config = w.local_config(&db, "http://127.0.0.1:9");
    config.chains.get_mut(SOLANA_DEVNET).unwrap().fee_payers =
        vec![w.fee_payer.pubkey().to_string()];
    let problems = format!("{:?}", gatehouse::server::start(config).await.unwrap_err());
    assert!(
        problems.contains(&format!("{key}.fee_payers")),
        "{problems}"
    );

    // A file that is not a keypair is named, its contents never shown.
    let path = w.key_dir.path().join("bad.json");
    std::fs::write(&path, "[1,2,3,\"secret-ish\"]").unwrap();
    let mut config = w.local_config(&db, "http://127.0.0.1:9");
    config
        .chains
        .get_mut(SOLANA_DEVNET)
        .unwrap()
        .signer_key_file = Some(path);
    let problems = format!("{:?}", gatehouse::server::start(config).await.unwrap_err());
    assert!(
        problems.contains(&format!("{key}.signer_key_file")),
        "{problems}"
    );
    assert!(!problems.contains("secret-ish"), "{problems}");
}

#[tokio::test]
async fn the_reconciler_recomputes_a_local_signature_and_a_reader_needs_one() {
    use gatehouse::chain::svm::settle::{SvmKey, SvmReconciled, SvmSettleOutcome, SvmSettler};
    use gatehouse::protocol::{FacilitatorRequest, normalise};

    let w = World::new(TOKEN_2022).await;
    let chain = ChainConfig {
        rpc_urls: vec![w.node.url.clone()],
        onchain_checks: true,
        ..ChainConfig::default()
    };
    let key = SvmKey::parse(&bs58::encode(w.fee_payer.to_bytes()).into_string()).unwrap();
    let settler = SvmSettler::new(SOLANA_DEVNET, &chain, Some(key), Duration::from_secs(5))
        .unwrap()
        .with_poll_interval(Duration::from_millis(50));
    let reader = SvmSettler::new("solana-devnet", &chain, None, Duration::from_secs(5)).unwrap();
    let raw = serde_json::to_vec(&w.valid_body().await).unwrap();
    let payment = normalise(&FacilitatorRequest::decode(raw.into()).unwrap()).unwrap();

    // Before anything was sent: the blockhash lives, nothing is decided.
    assert_eq!(
        settler.reconcile(&payment, None).await.unwrap(),
        SvmReconciled::Undecided
    );
    let SvmSettleOutcome::Settled { signature } = settler.settle(&payment).await.unwrap() else {
        panic!("not settled");
    };
    // An in-flight entry of a process that died has no signature recorded: the key gives the
    // same one again (ed25519 is deterministic).
    assert_eq!(
        settler.reconcile(&payment, None).await.unwrap(),
        SvmReconciled::Settled {
            signature: signature.clone()
        }
    );
    // Without the key, only a recorded signature can be looked up.
    assert_eq!(
        reader.reconcile(&payment, None).await.unwrap(),
        SvmReconciled::Undecided
    );
    assert_eq!(
        reader.reconcile(&payment, Some(&signature)).await.unwrap(),
        SvmReconciled::Settled { signature }
    );
    assert!(reader.settle(&payment).await.is_err());
    assert_eq!(w.balance(&w.pay_to).await, PRICE);
}
