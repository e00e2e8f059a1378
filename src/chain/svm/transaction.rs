//! Decoding and static inspection of the client's Solana transaction (spec §4.3 steps 5–16,
//! plus the four checks the reference SDKs skip). Pure: no I/O, no clock.
//!
//! Address lookup tables are **refused**, not resolved: resolving needs an RPC read of the
//! table at a slot the upstream may not see, and the reference client never uses them. A
//! refused ALT gives `invalid_exact_svm_payload_address_lookup_tables_unsupported`.
//!
//! Reason codes the spec has no string for are Gatehouse's own, in the same prefix (a legacy
//! v1 client sees `invalid_exact_svm_payload_transaction` for them):
//! `…_address_lookup_tables_unsupported`, `…_transaction_instructions_compute_limit_instruction_too_high`,
//! `…_unexpected_signers`, `…_client_signature_invalid`. The fee-payer checks reuse the legacy
//! `…_transaction_fee_payer_included_in_instruction_accounts`, the TS
//! `…_transaction_fee_payer_transferring_funds` and Go's `invalid_exact_solana_fee_payer_mismatch`.

use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bincode::Options;
use solana_message::VersionedMessage;
use solana_message::compiled_instruction::CompiledInstruction;
use solana_pubkey::Pubkey;
use solana_signature::Signature;
use solana_transaction::versioned::VersionedTransaction;

use super::networks::{
    ATA_PROGRAM, COMPUTE_BUDGET_PROGRAM, LIGHTHOUSE_PROGRAM, MEMO_PROGRAM, SPL_TOKEN_PROGRAM,
    TOKEN_2022_PROGRAM,
};
use crate::protocol::AtomicAmount;
use crate::verdict::{Reason, ReasonCode};

/// Largest serialized transaction Solana accepts (`PACKET_DATA_SIZE`).
pub const MAX_TRANSACTION_BYTES: usize = 1232;

/// How the transferred amount is compared with the required amount.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AmountRule {
    /// `amount == required` (TS v2, the x402 spec at the reference commit). Default.
    #[default]
    Exact,
    /// `amount >= required` (Go, Python and the later spec; over-payment tolerated).
    AtLeast,
}

/// Limits from configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// Highest accepted compute-unit price, in µlamports per CU.
    pub max_compute_unit_price: u64,
    /// Highest accepted compute-unit limit.
    pub max_compute_unit_limit: u32,
    /// Highest accepted instruction count (at least 3).
    pub max_instructions: usize,
    /// Amount comparison.
    pub amount_rule: AmountRule,
}

/// What the transaction must match, from the payment requirements.
#[derive(Debug, Clone)]
pub struct Expected<'a> {
    /// `extra.feePayer`.
    pub fee_payer: Pubkey,
    /// Every fee payer the settling facilitator manages.
    pub managed_fee_payers: &'a [Pubkey],
    /// `asset` (the mint).
    pub mint: Pubkey,
    /// `payTo` (the owner wallet).
    pub pay_to: Pubkey,
    /// The required amount.
    pub amount: AtomicAmount,
    /// `extra.memo`.
    pub memo: Option<&'a str>,
}

/// A decoded transaction and the exact message bytes its signatures cover.
#[derive(Debug, Clone)]
pub struct DecodedTx {
    /// The transaction.
    pub tx: VersionedTransaction,
    /// The serialized message, as sent (what the signatures sign).
    pub message_bytes: Vec<u8>,
}

/// The facts a valid transaction yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    /// The token program of the TransferChecked (SPL Token or Token-2022).
    pub token_program: Pubkey,
    /// Source token account.
    pub source: Pubkey,
    /// Destination token account.
    pub destination: Pubkey,
    /// The transfer authority: the payer.
    pub authority: Pubkey,
    /// Transferred amount.
    pub amount: u64,
    /// Decimals asserted by TransferChecked.
    pub decimals: u8,
    /// SetComputeUnitLimit value.
    pub compute_unit_limit: u32,
    /// SetComputeUnitPrice value, µlamports per CU.
    pub compute_unit_price: u64,
    /// The client's (authority's) signature.
    pub client_signature: Signature,
}

fn svm(code: &'static str, message: impl Into<String>) -> Reason {
    Reason::new(ReasonCode::Svm(code), message)
}

const COULD_NOT_DECODE: &str = "invalid_exact_svm_payload_transaction_could_not_be_decoded";

/// Reads a compact-u16 ("short vec") length; returns (value, bytes used).
pub(crate) fn short_vec_len(bytes: &[u8]) -> Option<(usize, usize)> {
    let mut value = 0usize;
    for i in 0..3 {
        let b = *bytes.get(i)?;
        value |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// Decodes the standard-base64 wire transaction (legacy or v0). Refuses V1 messages and
/// address lookup tables.
pub fn decode(transaction_base64: &str) -> Result<DecodedTx, Reason> {
    let bad = |m: String| svm(COULD_NOT_DECODE, m);
    // Bound the work before decoding: base64 of MAX_TRANSACTION_BYTES is at most 1644 chars.
    if transaction_base64.len() > MAX_TRANSACTION_BYTES.div_ceil(3) * 4 {
        return Err(bad(format!(
            "transaction longer than {MAX_TRANSACTION_BYTES} bytes"
        )));
    }
    let raw = B64
        .decode(transaction_base64.trim())
        .map_err(|e| bad(format!("invalid base64: {e}")))?;
    let tx: VersionedTransaction = bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .reject_trailing_bytes()
        .with_limit(MAX_TRANSACTION_BYTES as u64)
        .deserialize(&raw)
        .map_err(|e| bad(format!("not a versioned transaction: {e}")))?;
    if matches!(tx.message, VersionedMessage::V1(_)) {
        return Err(bad("v1-format messages are not supported".into()));
    }
    tx.sanitize()
        .map_err(|e| bad(format!("malformed transaction: {e}")))?;
    let (n, used) = short_vec_len(&raw).ok_or_else(|| bad("bad signature count".into()))?;
    let message_bytes = n
        .checked_mul(64)
        .and_then(|len| len.checked_add(used))
        .and_then(|start| raw.get(start..))
        .ok_or_else(|| bad("truncated signatures".into()))?
        .to_vec();
    if tx
        .message
        .address_table_lookups()
        .is_some_and(|l| !l.is_empty())
    {
        return Err(svm(
            "invalid_exact_svm_payload_address_lookup_tables_unsupported",
            "the transaction uses address lookup tables; Gatehouse accepts static account keys only",
        ));
    }
    Ok(DecodedTx { tx, message_bytes })
}

/// The ATA of `owner` for `mint` under `token_program` (seeds `[owner, program, mint]`).
pub fn associated_token_address(
    owner: &Pubkey,
    mint: &Pubkey,
    token_program: &Pubkey,
) -> Option<Pubkey> {
    let ata_program = Pubkey::from_str(ATA_PROGRAM).ok()?;
    Pubkey::try_find_program_address(
        &[owner.as_ref(), token_program.as_ref(), mint.as_ref()],
        &ata_program,
    )
    .map(|(a, _)| a)
}

/// Parses a base58 public key.
pub fn parse_pubkey(s: &str) -> Option<Pubkey> {
    Pubkey::from_str(s.trim()).ok()
}

fn program_is(keys: &[Pubkey], ix: &CompiledInstruction, program: &str) -> bool {
    keys.get(usize::from(ix.program_id_index))
        .is_some_and(|k| k.to_string() == program)
}

fn account(keys: &[Pubkey], ix: &CompiledInstruction, i: usize) -> Option<Pubkey> {
    ix.accounts
        .get(i)
        .and_then(|idx| keys.get(usize::from(*idx)))
        .copied()
}

fn ordinal_code(index: usize) -> &'static str {
    match index {
        3 => "invalid_exact_svm_payload_unknown_fourth_instruction",
        4 => "invalid_exact_svm_payload_unknown_fifth_instruction",
        5 => "invalid_exact_svm_payload_unknown_sixth_instruction",
        _ => "invalid_exact_svm_payload_unknown_optional_instruction",
    }
}

/// Applies spec §4.3 steps 6–16 in order, with the four extra fee-payer and signer checks,
/// and checks the client's signature over the message.
pub fn inspect(
    decoded: &DecodedTx,
    expected: &Expected<'_>,
    rules: &Rules,
) -> Result<Transfer, Reason> {
    let message = &decoded.tx.message;
    let keys = message.static_account_keys();
    let ixs = message.instructions();

    // Extra check: the transaction's fee payer (account key 0) is `extra.feePayer`.
    if keys.first() != Some(&expected.fee_payer) {
        return Err(svm(
            "invalid_exact_solana_fee_payer_mismatch",
            format!(
                "account key 0 is {}, not extra.feePayer {}",
                keys.first().map(|k| k.to_string()).unwrap_or_default(),
                expected.fee_payer
            ),
        ));
    }

    // Step 6.
    if ixs.len() < 3 || ixs.len() > rules.max_instructions.max(3) {
        return Err(svm(
            "invalid_exact_svm_payload_transaction_instructions_length",
            format!(
                "{} instructions; expected 3..={}",
                ixs.len(),
                rules.max_instructions.max(3)
            ),
        ));
    }
    let (Some(ix0), Some(ix1), Some(ix2)) = (ixs.first(), ixs.get(1), ixs.get(2)) else {
        return Err(svm(
            "invalid_exact_svm_payload_transaction_instructions_length",
            "fewer than 3 instructions",
        ));
    };

    // Step 7: SetComputeUnitLimit.
    let limit_code = "invalid_exact_svm_payload_transaction_instructions_compute_limit_instruction";
    if !program_is(keys, ix0, COMPUTE_BUDGET_PROGRAM) {
        return Err(svm(
            limit_code,
            "instruction 0 is not a ComputeBudget instruction",
        ));
    }
    let compute_unit_limit = match ix0.data.as_slice() {
        [2, a, b, c, d] => u32::from_le_bytes([*a, *b, *c, *d]),
        _ => return Err(svm(limit_code, "instruction 0 is not SetComputeUnitLimit")),
    };
    if compute_unit_limit > rules.max_compute_unit_limit {
        return Err(svm(
            "invalid_exact_svm_payload_transaction_instructions_compute_limit_instruction_too_high",
            format!(
                "compute unit limit {compute_unit_limit} above the cap {}",
                rules.max_compute_unit_limit
            ),
        ));
    }

    // Step 8: SetComputeUnitPrice, capped.
    let price_code = "invalid_exact_svm_payload_transaction_instructions_compute_price_instruction";
    if !program_is(keys, ix1, COMPUTE_BUDGET_PROGRAM) {
        return Err(svm(
            price_code,
            "instruction 1 is not a ComputeBudget instruction",
        ));
    }
    let compute_unit_price = match ix1.data.as_slice() {
        [3, rest @ ..] if rest.len() == 8 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(rest);
            u64::from_le_bytes(b)
        }
        _ => return Err(svm(price_code, "instruction 1 is not SetComputeUnitPrice")),
    };
    if compute_unit_price > rules.max_compute_unit_price {
        return Err(svm(
            "invalid_exact_svm_payload_transaction_instructions_compute_price_instruction_too_high",
            format!(
                "compute unit price {compute_unit_price} µlamports/CU above the cap {}",
                rules.max_compute_unit_price
            ),
        ));
    }

    // Steps 9–10: instruction 2 is TransferChecked on SPL Token or Token-2022.
    let no_transfer = "invalid_exact_svm_payload_no_transfer_instruction";
    let token_program = keys
        .get(usize::from(ix2.program_id_index))
        .copied()
        .filter(|p| {
            let p = p.to_string();
            p == SPL_TOKEN_PROGRAM || p == TOKEN_2022_PROGRAM
        })
        .ok_or_else(|| {
            svm(
                no_transfer,
                "instruction 2 is not a token-program instruction",
            )
        })?;
    let (amount, decimals) = match ix2.data.as_slice() {
        [12, rest @ ..] if rest.len() == 9 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(rest.get(..8).unwrap_or(&[0; 8]));
            (u64::from_le_bytes(b), rest.get(8).copied().unwrap_or(0))
        }
        _ => return Err(svm(no_transfer, "instruction 2 is not TransferChecked")),
    };
    let (Some(source), Some(mint), Some(destination), Some(authority)) = (
        account(keys, ix2, 0),
        account(keys, ix2, 1),
        account(keys, ix2, 2),
        account(keys, ix2, 3),
    ) else {
        return Err(svm(
            no_transfer,
            "TransferChecked has fewer than 4 accounts",
        ));
    };

    // Step 11, plus the extra check that the fee payer is not the source.
    let managed = |k: &Pubkey| *k == expected.fee_payer || expected.managed_fee_payers.contains(k);
    if managed(&authority) || managed(&source) {
        return Err(svm(
            "invalid_exact_svm_payload_transaction_fee_payer_transferring_funds",
            "a facilitator fee payer is the transfer authority or source",
        ));
    }

    // Step 12.
    if mint != expected.mint {
        return Err(svm(
            "invalid_exact_svm_payload_mint_mismatch",
            format!("mint {mint} is not the asset {}", expected.mint),
        ));
    }

    // Step 13: the ATA under the transfer's own token program.
    let expected_ata = associated_token_address(&expected.pay_to, &expected.mint, &token_program);
    if expected_ata != Some(destination) {
        return Err(svm(
            "invalid_exact_svm_payload_recipient_mismatch",
            format!(
                "destination {destination} is not the associated token account of payTo {} under {token_program}",
                expected.pay_to
            ),
        ));
    }

    // Step 14.
    let paid = AtomicAmount(alloy::primitives::U256::from(amount));
    match rules.amount_rule {
        AmountRule::Exact if paid != expected.amount => {
            return Err(svm(
                "invalid_exact_svm_payload_amount_mismatch",
                format!(
                    "amount {amount} differs from the required {}",
                    expected.amount
                ),
            ));
        }
        AmountRule::AtLeast if paid < expected.amount => {
            return Err(svm(
                "invalid_exact_svm_payload_amount_insufficient",
                format!("amount {amount} below the required {}", expected.amount),
            ));
        }
        _ => {}
    }

    // Step 15: optional instructions are Lighthouse or Memo only.
    let mut memos = Vec::new();
    for (i, ix) in ixs.iter().enumerate().skip(3) {
        if program_is(keys, ix, MEMO_PROGRAM) {
            memos.push(ix);
        } else if !program_is(keys, ix, LIGHTHOUSE_PROGRAM) {
            let program = keys
                .get(usize::from(ix.program_id_index))
                .map(|k| k.to_string())
                .unwrap_or_default();
            return Err(svm(
                ordinal_code(i),
                format!("instruction {i} calls {program}, neither Lighthouse nor Memo"),
            ));
        }
    }

    // Extra check: the fee payer appears in no instruction's accounts (nor as a program).
    for (i, ix) in ixs.iter().enumerate() {
        let uses = ix
            .accounts
            .iter()
            .chain(std::iter::once(&ix.program_id_index))
            .filter_map(|idx| keys.get(usize::from(*idx)))
            .any(managed);
        if uses {
            return Err(svm(
                "invalid_exact_svm_payload_transaction_fee_payer_included_in_instruction_accounts",
                format!("a facilitator fee payer is an account of instruction {i}"),
            ));
        }
    }

    // Step 16: memo rules.
    if let Some(want) = expected.memo {
        let [memo] = memos.as_slice() else {
            return Err(svm(
                "invalid_exact_svm_payload_memo_count",
                format!("{} memo instructions; expected exactly 1", memos.len()),
            ));
        };
        if std::str::from_utf8(&memo.data).ok() != Some(want) {
            return Err(svm(
                "invalid_exact_svm_payload_memo_mismatch",
                "the memo differs from extra.memo",
            ));
        }
    }

    // Extra check: the required signers are exactly the fee payer and the client.
    let header = message.header();
    let signers: Vec<&Pubkey> = keys
        .iter()
        .take(usize::from(header.num_required_signatures))
        .collect();
    if signers.len() != 2 || signers.get(1) != Some(&&authority) {
        return Err(svm(
            "invalid_exact_svm_payload_unexpected_signers",
            format!(
                "required signers are [{}]; expected exactly [fee payer, transfer authority {authority}]",
                signers
                    .iter()
                    .map(|k| k.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }

    // The client's signature over the message bytes.
    let client_signature = decoded.tx.signatures.get(1).copied().unwrap_or_default();
    if !client_signature.verify(authority.as_ref(), &decoded.message_bytes) {
        return Err(svm(
            "invalid_exact_svm_payload_client_signature_invalid",
            format!("the signature of {authority} does not verify over the message"),
        ));
    }

    Ok(Transfer {
        token_program,
        source,
        destination,
        authority,
        amount,
        decimals,
        compute_unit_limit,
        compute_unit_price,
        client_signature,
    })
}

/// The transaction to simulate: the fee payer's slot is reset to the empty (all-zero)
/// signature, whatever the client put there, since simulation runs with `sigVerify: false` and
/// the fee payer signs only at settlement.
pub fn simulation_base64(decoded: &DecodedTx) -> Option<String> {
    let mut tx = decoded.tx.clone();
    if let Some(slot) = tx.signatures.first_mut() {
        *slot = Signature::default();
    }
    bincode::serialize(&tx).ok().map(|b| B64.encode(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_vec_lengths_decode() {
        assert_eq!(short_vec_len(&[0x02]), Some((2, 1)));
        assert_eq!(short_vec_len(&[0x80, 0x01]), Some((128, 2)));
        assert_eq!(short_vec_len(&[0xff, 0xff, 0x03]), Some((0xffff, 3)));
        assert_eq!(short_vec_len(&[0x80]), None);
        assert_eq!(short_vec_len(&[]), None);
    }

    #[test]
    fn garbage_never_panics_and_is_refused() {
        for input in ["", "!!!", "AAAA", "AQ==", &"A".repeat(5000)] {
            let err = decode(input).expect_err(input);
            assert_eq!(err.code, ReasonCode::Svm(COULD_NOT_DECODE));
        }
    }

    fn sample_tx_bytes() -> Vec<u8> {
        use solana_message::v0;
        let payer = Pubkey::new_from_array([1; 32]);
        let client = Pubkey::new_from_array([2; 32]);
        let program = Pubkey::from_str(SPL_TOKEN_PROGRAM).unwrap();
        let cb = Pubkey::from_str(COMPUTE_BUDGET_PROGRAM).unwrap();
        let meta = |k: Pubkey, w: bool, s: bool| solana_instruction::AccountMeta {
            pubkey: k,
            is_writable: w,
            is_signer: s,
        };
        let ixs = vec![
            solana_instruction::Instruction::new_with_bytes(cb, &[2, 32, 78, 0, 0], vec![]),
            solana_instruction::Instruction::new_with_bytes(
                cb,
                &[3, 1, 0, 0, 0, 0, 0, 0, 0],
                vec![],
            ),
            solana_instruction::Instruction::new_with_bytes(
                program,
                &[12, 16, 39, 0, 0, 0, 0, 0, 0, 6],
                vec![
                    meta(Pubkey::new_from_array([3; 32]), true, false),
                    meta(Pubkey::new_from_array([4; 32]), false, false),
                    meta(Pubkey::new_from_array([5; 32]), true, false),
                    meta(client, false, true),
                ],
            ),
        ];
        let hash = solana_hash::Hash::new_from_array([8; 32]);
        let m = v0::Message::try_compile(&payer, &ixs, &[], hash).unwrap();
        let tx = VersionedTransaction {
            signatures: vec![Signature::default(); 2],
            message: VersionedMessage::V0(m),
        };
        bincode::serialize(&tx).unwrap()
    }

    proptest::proptest! {
        /// Decoders never panic: arbitrary bytes and single-byte mutations of a well-formed
        /// transaction are decoded and inspected, or refused with a reason.
        #[test]
        fn decode_and_inspect_never_panic(
            noise in proptest::collection::vec(proptest::num::u8::ANY, 0..1400),
            flips in proptest::collection::vec((0usize..400, proptest::num::u8::ANY), 0..6),
        ) {
            let mut mutated = sample_tx_bytes();
            for (i, b) in flips {
                let len = mutated.len();
                if let Some(x) = mutated.get_mut(i % len) {
                    *x = b;
                }
            }
            let fee_payer = Pubkey::new_from_array([1; 32]);
            let expected = Expected {
                fee_payer,
                managed_fee_payers: &[],
                mint: Pubkey::new_from_array([4; 32]),
                pay_to: Pubkey::new_from_array([6; 32]),
                amount: AtomicAmount(alloy::primitives::U256::from(10_000u64)),
                memo: Some("m"),
            };
            let rules = Rules {
                max_compute_unit_price: 5_000_000,
                max_compute_unit_limit: 400_000,
                max_instructions: 6,
                amount_rule: AmountRule::Exact,
            };
            for bytes in [noise, mutated] {
                if let Ok(d) = decode(&B64.encode(&bytes)) {
                    let _ = inspect(&d, &expected, &rules);
                    let _ = simulation_base64(&d);
                }
            }
        }
    }

    #[test]
    fn well_formed_sample_reaches_the_recipient_check() {
        // The fixture used by the proptest decodes and passes the layout checks, so the
        // mutations exercise the deep paths, not only the decoder.
        let d = decode(&B64.encode(sample_tx_bytes())).unwrap();
        let expected = Expected {
            fee_payer: Pubkey::new_from_array([1; 32]),
            managed_fee_payers: &[],
            mint: Pubkey::new_from_array([4; 32]),
            pay_to: Pubkey::new_from_array([6; 32]),
            amount: AtomicAmount(alloy::primitives::U256::from(10_000u64)),
            memo: None,
        };
        let rules = Rules {
            max_compute_unit_price: 5_000_000,
            max_compute_unit_limit: 400_000,
            max_instructions: 6,
            amount_rule: AmountRule::Exact,
        };
        let err = inspect(&d, &expected, &rules).unwrap_err();
        assert_eq!(
            err.code,
            ReasonCode::Svm("invalid_exact_svm_payload_recipient_mismatch")
        );
    }

    #[test]
    fn token_2022_ata_differs_from_spl_token_ata() {
        let owner = Pubkey::new_from_array([7; 32]);
        let mint = Pubkey::new_from_array([9; 32]);
        let a =
            associated_token_address(&owner, &mint, &Pubkey::from_str(SPL_TOKEN_PROGRAM).unwrap());
        let b = associated_token_address(
            &owner,
            &mint,
            &Pubkey::from_str(TOKEN_2022_PROGRAM).unwrap(),
        );
        assert!(a.is_some() && b.is_some());
        assert_ne!(a, b);
    }
}
