//! Solana `exact` verification against a real SVM: LiteSVM running the real SPL Token,
//! Token-2022, Memo and ATA programs behind Solana JSON-RPC (svm-test-node). Every payment
//! here is a real signed transaction; simulations run the real programs.
//!
//! Invariant (DESIGN.md): the chain checker approves only what it verified itself, and fails
//! closed. Each check of spec §4.3 (and the four checks the reference SDKs skip) gets its valid
//! case, its invalid cases and, where there is one, its boundary (price cap, instruction count).

#[path = "common/svm_node.rs"]
mod svm_node;

use std::collections::BTreeMap;
use std::str::FromStr;

use gatehouse::chain::svm::{AmountRule, SvmChecker};
use gatehouse::chain::{ChainChecker, ChainConfig, ChainError};
use gatehouse::protocol::network::SOLANA_DEVNET;
use gatehouse::protocol::{
    AtomicAmount, Authorization, Fingerprint, Network, Payment, PaymentExtra, X402Version,
};
use gatehouse::verdict::{Gate, Outcome, ReasonCode, Verdict};

use base64::Engine;
use solana_compute_budget_interface::ComputeBudgetInstruction;
use solana_hash::Hash;
use solana_instruction::{AccountMeta, Instruction};
use solana_keypair::Keypair;
use solana_message::v0::MessageAddressTableLookup;
use solana_message::{Message, VersionedMessage, v0};
use solana_pubkey::Pubkey;
use solana_signature::Signature;
use solana_signer::Signer;
use solana_transaction::versioned::VersionedTransaction;
use spl_associated_token_account_interface::address::get_associated_token_address_with_program_id as ata;
use svm_node::SvmNode;

const SPL_TOKEN: &str = "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA";
const TOKEN_2022: &str = "TokenzQdBNbLqP5VEhdkAS6EPFLC1PHnBqCXEpPxuEb";
const MEMO: &str = "MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr";
const LIGHTHOUSE: &str = "L2TExMFKdjpN9kozasaurPirfHy9P8sbXoAN1qA3S95";
const PRICE: u64 = 10_000;
const DECIMALS: u8 = 6;

fn pk(s: &str) -> Pubkey {
    Pubkey::from_str(s).unwrap()
}

/// A funded world: a mint under `program`, a client holding 1 000 000 units in its ATA, a
/// recipient with an (empty) ATA, and a funded fee payer.
struct World {
    node: SvmNode,
    program: Pubkey,
    mint: Pubkey,
    client: Keypair,
    fee_payer: Keypair,
    pay_to: Pubkey,
    blockhash: Hash,
}

impl World {
    async fn new(program: &str) -> Self {
        let node = SvmNode::start();
        let mint = Keypair::new().pubkey();
        let client = Keypair::new();
        let fee_payer = Keypair::new();
        let pay_to = Keypair::new().pubkey();
        let program_key = pk(program);
        node.set_mint(&mint.to_string(), program, DECIMALS, 1_000_000_000)
            .await;
        for (owner, amount) in [(client.pubkey(), 1_000_000), (pay_to, 0)] {
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
        node.clone_program(MEMO, LIGHTHOUSE).await;
        let blockhash = Hash::from_str(&node.latest_blockhash().await).unwrap();
        Self {
            node,
            program: program_key,
            mint,
            client,
            fee_payer,
            pay_to,
            blockhash,
        }
    }

    fn config(&self) -> ChainConfig {
        ChainConfig {
            rpc_urls: vec![self.node.url.clone()],
            rpc_timeout_ms: Some(5_000),
            fee_payers: vec![self.fee_payer.pubkey().to_string()],
            ..Default::default()
        }
    }

    fn checker_with(&self, cfg: ChainConfig) -> SvmChecker {
        let mut chains = BTreeMap::new();
        chains.insert(SOLANA_DEVNET.to_owned(), cfg);
        SvmChecker::new(&chains).unwrap()
    }

    fn checker(&self) -> SvmChecker {
        self.checker_with(self.config())
    }

    fn transfer(&self, amount: u64) -> Instruction {
        self.transfer_from(&self.client.pubkey(), amount)
    }

    fn transfer_from(&self, authority: &Pubkey, amount: u64) -> Instruction {
        spl_token_2022_interface::instruction::transfer_checked(
            &self.program,
            &ata(authority, &self.mint, &self.program),
            &self.mint,
            &ata(&self.pay_to, &self.mint, &self.program),
            authority,
            &[],
            amount,
            DECIMALS,
        )
        .unwrap()
    }

    /// The reference client's layout: limit, price, TransferChecked, then `extra`.
    fn instructions(&self, transfer: Instruction, extra: Vec<Instruction>) -> Vec<Instruction> {
        let mut ixs = vec![
            ComputeBudgetInstruction::set_compute_unit_limit(20_000),
            ComputeBudgetInstruction::set_compute_unit_price(1),
            transfer,
        ];
        ixs.extend(extra);
        ixs
    }

    fn v0(&self, ixs: &[Instruction]) -> VersionedMessage {
        VersionedMessage::V0(
            v0::Message::try_compile(&self.fee_payer.pubkey(), ixs, &[], self.blockhash.clone())
                .unwrap(),
        )
    }

    /// Signs as the client only (the fee payer's slot stays empty) and encodes.
    fn sign(&self, message: VersionedMessage) -> String {
        sign_with(message, &[&self.client])
    }

    fn payment(&self, tx_base64: String) -> Payment {
        let sig = tx_signature(&tx_base64, 1);
        Payment {
            version: X402Version::V2,
            network: Network::resolve(SOLANA_DEVNET).unwrap(),
            scheme: "exact".into(),
            asset: self.mint.to_string(),
            amount: AtomicAmount::parse_decimal(&PRICE.to_string()).unwrap(),
            decimals: Some(DECIMALS),
            payer: None,
            pay_to: self.pay_to.to_string(),
            resource: None,
            description: None,
            max_timeout_secs: 60,
            extra: PaymentExtra {
                fee_payer: Some(self.fee_payer.pubkey().to_string()),
                ..Default::default()
            },
            accepted_mismatches: vec![],
            authorization: Authorization::SvmTransaction {
                transaction_base64: tx_base64,
                client_signature: sig.clone(),
            },
            fingerprint: Fingerprint(format!("svm:{sig}")),
            payment_identifier: None,
        }
    }

    fn valid_payment(&self) -> Payment {
        let ixs = self.instructions(self.transfer(PRICE), vec![]);
        self.payment(self.sign(self.v0(&ixs)))
    }
}

/// Signs `message` with each keypair in its signer slot; other slots stay zero.
fn sign_with(message: VersionedMessage, signers: &[&Keypair]) -> String {
    let bytes = bincode::serialize(&message).unwrap();
    let keys = message.static_account_keys().to_vec();
    let n = usize::from(message.header().num_required_signatures);
    let mut signatures = vec![Signature::default(); n];
    for kp in signers {
        if let Some(i) = keys.iter().take(n).position(|k| *k == kp.pubkey()) {
            signatures[i] = kp.sign_message(&bytes);
        }
    }
    encode(&VersionedTransaction {
        signatures,
        message,
    })
}

fn encode(tx: &VersionedTransaction) -> String {
    base64::engine::general_purpose::STANDARD.encode(bincode::serialize(tx).unwrap())
}

fn decode(b64: &str) -> VersionedTransaction {
    bincode::deserialize(
        &base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap(),
    )
    .unwrap()
}

fn tx_signature(b64: &str, slot: usize) -> String {
    decode(b64)
        .signatures
        .get(slot)
        .map(|s| s.to_string())
        .unwrap_or_default()
}

fn memo(text: &str) -> Instruction {
    Instruction {
        program_id: pk(MEMO),
        accounts: vec![],
        data: text.as_bytes().to_vec(),
    }
}

fn lighthouse(accounts: Vec<AccountMeta>) -> Instruction {
    // A stand-in: the node deploys the Memo program at Lighthouse's address.
    Instruction {
        program_id: pk(LIGHTHOUSE),
        accounts,
        data: b"assert".to_vec(),
    }
}

async fn verdict(checker: &SvmChecker, payment: &Payment) -> Verdict {
    checker
        .check(payment, Gate::Verify, 0)
        .await
        .expect("chain reachable")
}

#[track_caller]
fn assert_denied(v: &Verdict, code: &str) {
    assert_eq!(v.outcome, Outcome::Deny, "{v:?}");
    assert_eq!(
        v.reasons.first().map(|r| r.code.code()),
        Some(code),
        "{v:?}"
    );
}

#[track_caller]
fn assert_allowed(v: &Verdict) {
    assert_eq!(v.outcome, Outcome::Allow, "{v:?}");
}

#[tokio::test]
async fn valid_spl_token_transfer_is_allowed_and_names_the_payer() {
    let w = World::new(SPL_TOKEN).await;
    let checker = w.checker();
    let v = verdict(&checker, &w.valid_payment()).await;
    assert_allowed(&v);
    assert!(
        v.checked
            .iter()
            .any(|c| c == &format!("svm payer {}", w.client.pubkey())),
        "{v:?}"
    );
    // One batch: simulation and the mint read; the mint is then cached.
    assert_eq!(checker.rpc_round_trips(), 1);
    assert_allowed(&verdict(&checker, &w.valid_payment()).await);
    assert_eq!(checker.rpc_round_trips(), 2);
    // Simulation does not move funds.
    let client_ata = ata(&w.client.pubkey(), &w.mint, &w.program).to_string();
    assert_eq!(w.node.token_balance(&client_ata).await, Some(1_000_000));
}

#[tokio::test]
async fn valid_token_2022_legacy_message_is_allowed() {
    let w = World::new(TOKEN_2022).await;
    let ixs = w.instructions(w.transfer(PRICE), vec![memo("order-42")]);
    let message = VersionedMessage::Legacy(Message::new_with_blockhash(
        &ixs,
        Some(&w.fee_payer.pubkey()),
        &w.blockhash,
    ));
    let mut p = w.payment(w.sign(message));
    p.extra.memo = Some("order-42".into());
    p.payer = Some(w.client.pubkey().to_string());
    assert_allowed(&verdict(&w.checker(), &p).await);
}

#[tokio::test]
async fn wrong_mint_is_refused() {
    let w = World::new(SPL_TOKEN).await;
    let mut p = w.valid_payment();
    p.asset = Keypair::new().pubkey().to_string();
    assert_denied(
        &verdict(&w.checker(), &p).await,
        "invalid_exact_svm_payload_mint_mismatch",
    );
}

#[tokio::test]
async fn wrong_destination_ata_is_refused() {
    let w = World::new(SPL_TOKEN).await;
    let stranger = Keypair::new().pubkey();
    let mut t = w.transfer(PRICE);
    t.accounts[2].pubkey = ata(&stranger, &w.mint, &w.program);
    let p = w.payment(w.sign(w.v0(&w.instructions(t, vec![]))));
    assert_denied(
        &verdict(&w.checker(), &p).await,
        "invalid_exact_svm_payload_recipient_mismatch",
    );
}

#[tokio::test]
async fn token_2022_transfer_to_the_spl_token_ata_is_refused() {
    let w = World::new(TOKEN_2022).await;
    let spl_ata = ata(&w.pay_to, &w.mint, &pk(SPL_TOKEN));
    assert_ne!(spl_ata, ata(&w.pay_to, &w.mint, &w.program));
    let mut t = w.transfer(PRICE);
    t.accounts[2].pubkey = spl_ata;
    let p = w.payment(w.sign(w.v0(&w.instructions(t, vec![]))));
    assert_denied(
        &verdict(&w.checker(), &p).await,
        "invalid_exact_svm_payload_recipient_mismatch",
    );
}

#[tokio::test]
async fn token_2022_mint_moved_through_spl_token_is_refused_by_the_mint_owner() {
    // Everything derived consistently under the wrong program: only the chain can tell.
    let w = World::new(TOKEN_2022).await;
    let spl = pk(SPL_TOKEN);
    let t = spl_token_2022_interface::instruction::transfer_checked(
        &spl,
        &ata(&w.client.pubkey(), &w.mint, &spl),
        &w.mint,
        &ata(&w.pay_to, &w.mint, &spl),
        &w.client.pubkey(),
        &[],
        PRICE,
        DECIMALS,
    )
    .unwrap();
    let p = w.payment(w.sign(w.v0(&w.instructions(t, vec![]))));
    let v = verdict(&w.checker(), &p).await;
    assert_denied(&v, "invalid_exact_svm_payload_mint_mismatch");
    assert!(v.reasons[0].message.contains("belongs to"), "{v:?}");
}

#[tokio::test]
async fn amount_off_is_refused_and_at_least_accepts_overpayment() {
    let w = World::new(SPL_TOKEN).await;
    for amount in [PRICE - 1, PRICE + 1] {
        let p = w.payment(w.sign(w.v0(&w.instructions(w.transfer(amount), vec![]))));
        assert_denied(
            &verdict(&w.checker(), &p).await,
            "invalid_exact_svm_payload_amount_mismatch",
        );
    }
    let at_least = w.checker_with(ChainConfig {
        amount_rule: Some(AmountRule::AtLeast),
        ..w.config()
    });
    let over = w.payment(w.sign(w.v0(&w.instructions(w.transfer(PRICE + 1), vec![]))));
    assert_allowed(&verdict(&at_least, &over).await);
    let under = w.payment(w.sign(w.v0(&w.instructions(w.transfer(PRICE - 1), vec![]))));
    assert_denied(
        &verdict(&at_least, &under).await,
        "invalid_exact_svm_payload_amount_insufficient",
    );
}

#[tokio::test]
async fn fee_payer_as_authority_is_refused() {
    let w = World::new(SPL_TOKEN).await;
    let t = w.transfer_from(&w.fee_payer.pubkey(), PRICE);
    let message = w.v0(&w.instructions(t, vec![]));
    let p = w.payment(sign_with(message, &[&w.fee_payer]));
    assert_denied(
        &verdict(&w.checker(), &p).await,
        "invalid_exact_svm_payload_transaction_fee_payer_transferring_funds",
    );
}

#[tokio::test]
async fn fee_payer_as_source_is_refused() {
    let w = World::new(SPL_TOKEN).await;
    let mut t = w.transfer(PRICE);
    t.accounts[0].pubkey = w.fee_payer.pubkey();
    let p = w.payment(w.sign(w.v0(&w.instructions(t, vec![]))));
    assert_denied(
        &verdict(&w.checker(), &p).await,
        "invalid_exact_svm_payload_transaction_fee_payer_transferring_funds",
    );
}

#[tokio::test]
async fn fee_payer_in_another_instructions_accounts_is_refused() {
    let w = World::new(SPL_TOKEN).await;
    let extra = lighthouse(vec![AccountMeta::new_readonly(w.fee_payer.pubkey(), false)]);
    let p = w.payment(w.sign(w.v0(&w.instructions(w.transfer(PRICE), vec![extra]))));
    assert_denied(
        &verdict(&w.checker(), &p).await,
        "invalid_exact_svm_payload_transaction_fee_payer_included_in_instruction_accounts",
    );
}

#[tokio::test]
async fn account_key_zero_must_be_the_fee_payer() {
    let w = World::new(SPL_TOKEN).await;
    let ixs = w.instructions(w.transfer(PRICE), vec![]);
    let message = VersionedMessage::V0(
        v0::Message::try_compile(&w.client.pubkey(), &ixs, &[], w.blockhash.clone()).unwrap(),
    );
    let b64 = sign_with(message, &[&w.client]);
    let mut p = w.payment(b64.clone());
    // The client is its own fee payer: its signature is slot 0.
    if let Authorization::SvmTransaction {
        client_signature, ..
    } = &mut p.authorization
    {
        *client_signature = tx_signature(&b64, 0);
    }
    assert_denied(
        &verdict(&w.checker(), &p).await,
        "invalid_exact_solana_fee_payer_mismatch",
    );
}

#[tokio::test]
async fn unmanaged_or_missing_fee_payer_is_refused() {
    let w = World::new(SPL_TOKEN).await;
    let p = w.valid_payment();
    let none = w.checker_with(ChainConfig {
        fee_payers: vec![],
        ..w.config()
    });
    assert_denied(
        &verdict(&none, &p).await,
        "fee_payer_not_managed_by_facilitator",
    );
    // Learned from the upstream's /supported, it is accepted.
    none.update_fee_payers_from_supported(&serde_json::json!({
        "kinds": [], "signers": {"solana:*": [w.fee_payer.pubkey().to_string()]}
    }));
    assert_allowed(&verdict(&none, &p).await);
    let mut missing = p.clone();
    missing.extra.fee_payer = None;
    assert_denied(
        &verdict(&w.checker(), &missing).await,
        "invalid_exact_svm_payload_missing_fee_payer",
    );
}

#[tokio::test]
async fn compute_price_over_the_cap_is_refused() {
    let w = World::new(SPL_TOKEN).await;
    let mut ixs = w.instructions(w.transfer(PRICE), vec![]);
    ixs[1] = ComputeBudgetInstruction::set_compute_unit_price(5_000_001);
    let p = w.payment(w.sign(w.v0(&ixs)));
    assert_denied(
        &verdict(&w.checker(), &p).await,
        "invalid_exact_svm_payload_transaction_instructions_compute_price_instruction_too_high",
    );
    // Exactly at the cap passes.
    ixs[1] = ComputeBudgetInstruction::set_compute_unit_price(5_000_000);
    assert_allowed(&verdict(&w.checker(), &w.payment(w.sign(w.v0(&ixs)))).await);
    // The limit cap.
    ixs[0] = ComputeBudgetInstruction::set_compute_unit_limit(1_400_000);
    assert_denied(
        &verdict(&w.checker(), &w.payment(w.sign(w.v0(&ixs)))).await,
        "invalid_exact_svm_payload_transaction_instructions_compute_limit_instruction_too_high",
    );
}

#[tokio::test]
async fn unknown_extra_instruction_is_refused() {
    let w = World::new(SPL_TOKEN).await;
    let other = Instruction {
        program_id: pk("11111111111111111111111111111111"),
        accounts: vec![],
        data: vec![0; 4],
    };
    let p = w.payment(w.sign(w.v0(&w.instructions(w.transfer(PRICE), vec![other.clone()]))));
    assert_denied(
        &verdict(&w.checker(), &p).await,
        "invalid_exact_svm_payload_unknown_fourth_instruction",
    );
    let p = w.payment(w.sign(w.v0(&w.instructions(w.transfer(PRICE), vec![memo("a"), other]))));
    assert_denied(
        &verdict(&w.checker(), &p).await,
        "invalid_exact_svm_payload_unknown_fifth_instruction",
    );
}

#[tokio::test]
async fn lighthouse_and_memo_are_allowed() {
    let w = World::new(SPL_TOKEN).await;
    let extra = vec![lighthouse(vec![]), memo("hello"), lighthouse(vec![])];
    let p = w.payment(w.sign(w.v0(&w.instructions(w.transfer(PRICE), extra))));
    assert_allowed(&verdict(&w.checker(), &p).await);
    // A seventh instruction exceeds the default 3..=6.
    let extra = vec![lighthouse(vec![]); 4];
    let p = w.payment(w.sign(w.v0(&w.instructions(w.transfer(PRICE), extra))));
    assert_denied(
        &verdict(&w.checker(), &p).await,
        "invalid_exact_svm_payload_transaction_instructions_length",
    );
    // The later spec's 3..=7, by configuration.
    let seven = w.checker_with(ChainConfig {
        max_instructions: Some(7),
        ..w.config()
    });
    assert_allowed(&verdict(&seven, &p).await);
}

#[tokio::test]
async fn memo_rules() {
    let w = World::new(SPL_TOKEN).await;
    let with_memo = |texts: &[&str]| {
        let extra = texts.iter().map(|t| memo(t)).collect();
        let mut p = w.payment(w.sign(w.v0(&w.instructions(w.transfer(PRICE), extra))));
        p.extra.memo = Some("order-42".into());
        p
    };
    let checker = w.checker();
    assert_allowed(&verdict(&checker, &with_memo(&["order-42"])).await);
    assert_denied(
        &verdict(&checker, &with_memo(&["order-43"])).await,
        "invalid_exact_svm_payload_memo_mismatch",
    );
    assert_denied(
        &verdict(&checker, &with_memo(&[])).await,
        "invalid_exact_svm_payload_memo_count",
    );
    assert_denied(
        &verdict(&checker, &with_memo(&["order-42", "order-42"])).await,
        "invalid_exact_svm_payload_memo_count",
    );
}

#[tokio::test]
async fn address_lookup_tables_are_refused() {
    let w = World::new(SPL_TOKEN).await;
    let VersionedMessage::V0(mut m) = w.v0(&w.instructions(w.transfer(PRICE), vec![])) else {
        unreachable!()
    };
    m.address_table_lookups.push(MessageAddressTableLookup {
        account_key: Keypair::new().pubkey(),
        writable_indexes: vec![],
        readonly_indexes: vec![0],
    });
    let p = w.payment(w.sign(VersionedMessage::V0(m)));
    assert_denied(
        &verdict(&w.checker(), &p).await,
        "invalid_exact_svm_payload_address_lookup_tables_unsupported",
    );
}

#[tokio::test]
async fn bad_client_signature_is_refused() {
    let w = World::new(SPL_TOKEN).await;
    let ixs = w.instructions(w.transfer(PRICE), vec![]);
    let mut tx = decode(&w.sign(w.v0(&ixs)));
    // A valid signature, but over a different message.
    let other = bincode::serialize(&w.v0(&w.instructions(w.transfer(PRICE + 1), vec![]))).unwrap();
    tx.signatures[1] = w.client.sign_message(&other);
    let p = w.payment(encode(&tx));
    assert_denied(
        &verdict(&w.checker(), &p).await,
        "invalid_exact_svm_payload_client_signature_invalid",
    );
}

#[tokio::test]
async fn extra_signers_are_refused() {
    let w = World::new(SPL_TOKEN).await;
    let third = Keypair::new();
    let extra = memo_signed_by(&third.pubkey());
    let message = w.v0(&w.instructions(w.transfer(PRICE), vec![extra]));
    let p = w.payment(sign_with(message, &[&w.client, &third]));
    assert_denied(
        &verdict(&w.checker(), &p).await,
        "invalid_exact_svm_payload_unexpected_signers",
    );
}

fn memo_signed_by(signer: &Pubkey) -> Instruction {
    Instruction {
        program_id: pk(MEMO),
        accounts: vec![AccountMeta::new_readonly(*signer, true)],
        data: b"x".to_vec(),
    }
}

#[tokio::test]
async fn insufficient_balance_fails_simulation() {
    let w = World::new(TOKEN_2022).await;
    let big = 2_000_000;
    let mut p = w.payment(w.sign(w.v0(&w.instructions(w.transfer(big), vec![]))));
    p.amount = AtomicAmount::parse_decimal(&big.to_string()).unwrap();
    let v = verdict(&w.checker(), &p).await;
    assert_denied(&v, "transaction_simulation_failed");
    assert!(v.reasons[0].message.contains("InstructionError"), "{v:?}");
}

#[tokio::test]
async fn stale_blockhash_fails_simulation() {
    let w = World::new(SPL_TOKEN).await;
    let ixs = w.instructions(w.transfer(PRICE), vec![]);
    let message = VersionedMessage::V0(
        v0::Message::try_compile(
            &w.fee_payer.pubkey(),
            &ixs,
            &[],
            Hash::new_from_array([7; 32]),
        )
        .unwrap(),
    );
    let p = w.payment(w.sign(message));
    assert_denied(
        &verdict(&w.checker(), &p).await,
        "transaction_simulation_failed",
    );
}

#[tokio::test]
async fn fee_payer_slot_contents_do_not_matter() {
    // Simulation runs with sigVerify false and the fee payer's slot emptied: garbage there
    // neither helps nor hurts.
    let w = World::new(SPL_TOKEN).await;
    let mut tx = decode(&w.valid_payment().authorization_base64());
    tx.signatures[0] = Signature::from([9u8; 64]);
    assert_allowed(&verdict(&w.checker(), &w.payment(encode(&tx))).await);
}

#[tokio::test]
async fn payload_client_signature_must_be_the_authoritys() {
    let w = World::new(SPL_TOKEN).await;
    let mut p = w.valid_payment();
    if let Authorization::SvmTransaction {
        client_signature, ..
    } = &mut p.authorization
    {
        *client_signature = Signature::from([3u8; 64]).to_string();
    }
    assert_denied(&verdict(&w.checker(), &p).await, "invalid_payload");
    let mut p = w.valid_payment();
    p.payer = Some(Keypair::new().pubkey().to_string());
    assert_denied(&verdict(&w.checker(), &p).await, "invalid_payload");
}

#[tokio::test]
async fn undecodable_transaction_is_refused() {
    let w = World::new(SPL_TOKEN).await;
    let mut p = w.valid_payment();
    p.authorization = Authorization::SvmTransaction {
        transaction_base64: "AQID".into(),
        client_signature: String::new(),
    };
    assert_denied(
        &verdict(&w.checker(), &p).await,
        "invalid_exact_svm_payload_transaction_could_not_be_decoded",
    );
}

#[tokio::test]
async fn rpc_down_fails_closed_and_failover_reaches_the_next_endpoint() {
    let w = World::new(SPL_TOKEN).await;
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let down = w.checker_with(ChainConfig {
        rpc_urls: vec![dead.clone()],
        ..w.config()
    });
    let err = down.check(&w.valid_payment(), Gate::Verify, 0).await;
    assert!(matches!(err, Err(ChainError::Rpc(_))), "{err:?}");

    let failover = w.checker_with(ChainConfig {
        rpc_urls: vec![dead, w.node.url.clone()],
        ..w.config()
    });
    assert_allowed(&verdict(&failover, &w.valid_payment()).await);
    assert_eq!(failover.rpc_round_trips(), 2);
}

#[tokio::test]
async fn scheme_and_network_mismatches_are_refused_before_decoding() {
    let w = World::new(SPL_TOKEN).await;
    let mut p = w.valid_payment();
    p.accepted_mismatches = vec!["network"];
    assert_denied(&verdict(&w.checker(), &p).await, "network_mismatch");
    let mut p = w.valid_payment();
    p.scheme = "upto".into();
    assert_eq!(
        verdict(&w.checker(), &p).await.reasons[0].code,
        ReasonCode::UnsupportedScheme
    );
}

trait TxOf {
    fn authorization_base64(&self) -> String;
}

impl TxOf for Payment {
    fn authorization_base64(&self) -> String {
        match &self.authorization {
            Authorization::SvmTransaction {
                transaction_base64, ..
            } => transaction_base64.clone(),
            _ => unreachable!(),
        }
    }
}
