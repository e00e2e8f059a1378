//! Turns a decoded [`FacilitatorRequest`] into the one internal [`Payment`] shape.
//!
//! Refusals here are business-level (HTTP 200, `isValid:false`) and carry a [`Reason`] whose
//! message names the offending field. Nothing here touches the network or the clock: whether
//! a signature verifies or a window is open is the chain step's job.

use alloy::primitives::{Address, B256, Bytes, U256};
use serde_json::{Map, Value};

use super::codec::decode_base64_strict;
use super::extensions::payment_identifier;
use super::network::{ChainFamily, Network};
use super::payment::{
    AtomicAmount, Authorization, Fingerprint, Payment, PaymentExtra, X402Version,
};
use super::request::FacilitatorRequest;
use crate::verdict::{Reason, ReasonCode};

/// Builds the [`Payment`] for a decoded request.
///
/// Order: network, scheme, requirement fields, then the payload (its method is chosen by
/// shape: `authorization` → EIP-3009, `permit2Authorization` → Permit2, `transaction` →
/// Solana), then the `payment-identifier` extension.
pub fn normalise(req: &FacilitatorRequest) -> Result<Payment, Reason> {
    let payload = req.payment_payload();
    let requirements = req.payment_requirements();
    let version = req.version;

    let network_wire = str_field(requirements, "network").unwrap_or("");
    let network = Network::resolve(network_wire).map_err(|_| {
        Reason::new(
            ReasonCode::InvalidNetwork,
            format!("`paymentRequirements.network` `{network_wire}` is not a known network"),
        )
    })?;
    let family = network.family();
    let chain_id = match family {
        ChainFamily::Evm => Some(network.evm_chain_id().ok_or_else(|| {
            Reason::new(
                ReasonCode::InvalidNetwork,
                format!(
                    "`paymentRequirements.network` `{network_wire}` has no decimal EVM chain id"
                ),
            )
        })?),
        ChainFamily::Svm => None,
        ChainFamily::Other => {
            return Err(Reason::new(
                ReasonCode::InvalidNetwork,
                format!("`paymentRequirements.network` `{network_wire}` is neither EVM nor Solana"),
            ));
        }
    };

    let scheme = str_field(requirements, "scheme").unwrap_or("");
    if scheme != "exact" {
        return Err(Reason::new(
            ReasonCode::UnsupportedScheme,
            format!("`paymentRequirements.scheme` `{scheme}` is not supported (only `exact`)"),
        ));
    }

    let amount_key = amount_key(version);
    let amount_text = str_field(requirements, amount_key).unwrap_or("");
    let amount = AtomicAmount::parse_decimal(amount_text).ok_or_else(|| {
        bad_requirements(&format!(
            "`paymentRequirements.{amount_key}` must be a decimal integer"
        ))
    })?;

    let asset = requirement_address(requirements, "asset", family)?;
    let pay_to = requirement_address(requirements, "payTo", family)?;
    let max_timeout_secs = max_timeout_secs(requirements)?;
    let extra = payment_extra(requirements)?;

    let resource = match version {
        X402Version::V1 => str_field(requirements, "resource"),
        X402Version::V2 => payload
            .get("resource")
            .and_then(|r| r.get("url"))
            .and_then(Value::as_str),
    }
    .map(str::to_owned);
    let description = match version {
        X402Version::V1 => str_field(requirements, "description"),
        X402Version::V2 => payload
            .get("resource")
            .and_then(|r| r.get("description"))
            .and_then(Value::as_str),
    }
    .map(str::trim)
    .filter(|d| !d.is_empty())
    .map(str::to_owned);

    let accepted_mismatches = accepted_mismatches(version, payload, requirements, family)?;

    let inner = match payload.get("payload") {
        Some(Value::Object(inner)) => inner,
        _ => {
            return Err(bad_payload(
                family,
                "`paymentPayload.payload` must be an object",
            ));
        }
    };

    let (authorization, payer, fingerprint) = match chain_id {
        Some(chain_id) => evm_authorization(inner, version, chain_id, &asset)?,
        None => svm_authorization(inner)?,
    };

    let payment_identifier = payment_identifier(payload)?;

    Ok(Payment {
        version,
        network,
        scheme: scheme.to_owned(),
        asset,
        amount,
        decimals: None,
        payer,
        pay_to,
        resource,
        description,
        max_timeout_secs,
        extra,
        accepted_mismatches,
        authorization,
        fingerprint,
        payment_identifier,
    })
}

// === requirements ===

fn amount_key(version: X402Version) -> &'static str {
    match version {
        X402Version::V1 => "maxAmountRequired",
        X402Version::V2 => "amount",
    }
}

fn str_field<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

fn bad_requirements(message: &str) -> Reason {
    Reason::new(ReasonCode::InvalidPaymentRequirements, message)
}

fn bad_payload(family: ChainFamily, message: impl Into<String>) -> Reason {
    let code = match family {
        ChainFamily::Evm => ReasonCode::EvmPayload,
        ChainFamily::Svm | ChainFamily::Other => ReasonCode::InvalidPayload,
    };
    Reason::new(code, message)
}

/// `asset` / `payTo`: EVM → lower-case 20-byte hex; Solana → a 32-byte base58 key, as sent.
fn requirement_address(
    requirements: &Value,
    key: &str,
    family: ChainFamily,
) -> Result<String, Reason> {
    let raw = str_field(requirements, key).unwrap_or("");
    let ok = match family {
        ChainFamily::Evm => parse_evm_address(raw).map(|a| lower_hex_address(&a)),
        ChainFamily::Svm | ChainFamily::Other => is_base58_key(raw).then(|| raw.to_owned()),
    };
    ok.ok_or_else(|| {
        bad_requirements(&format!(
            "`paymentRequirements.{key}` `{raw}` is not a valid address for this network"
        ))
    })
}

fn max_timeout_secs(requirements: &Value) -> Result<u64, Reason> {
    let value = requirements.get("maxTimeoutSeconds");
    let secs = match value {
        Some(Value::Number(n)) => n.as_u64().or_else(|| {
            // 60.0 is what some JSON writers produce for 60; accept whole floats only.
            n.as_f64()
                .filter(|f| f.is_finite() && *f >= 0.0 && f.fract() == 0.0 && *f < 1e15)
                .map(|f| f as u64)
        }),
        _ => None,
    };
    secs.ok_or_else(|| {
        bad_requirements("`paymentRequirements.maxTimeoutSeconds` must be a non-negative integer")
    })
}

fn payment_extra(requirements: &Value) -> Result<PaymentExtra, Reason> {
    let extra = match requirements.get("extra") {
        None | Some(Value::Null) => return Ok(PaymentExtra::default()),
        Some(Value::Object(map)) => map,
        Some(_) => {
            return Err(bad_requirements(
                "`paymentRequirements.extra` must be an object",
            ));
        }
    };
    let field = |key: &str| -> Result<Option<String>, Reason> {
        match extra.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(bad_requirements(&format!(
                "`paymentRequirements.extra.{key}` must be a string"
            ))),
        }
    };
    Ok(PaymentExtra {
        eip712_name: field("name")?,
        eip712_version: field("version")?,
        asset_transfer_method: field("assetTransferMethod")?,
        fee_payer: field("feePayer")?,
        memo: field("memo")?,
    })
}

/// Which requirement fields the client's choice disagrees with. v2 compares
/// `paymentPayload.accepted` (the whole requirement the client chose, spec §2.6); v1 compares
/// the payload's `scheme` and `network`.
fn accepted_mismatches(
    version: X402Version,
    payload: &Value,
    requirements: &Value,
    family: ChainFamily,
) -> Result<Vec<&'static str>, Reason> {
    let (chosen, keys): (&Value, &[&'static str]) = match version {
        X402Version::V1 => (payload, &["scheme", "network"]),
        X402Version::V2 => match payload.get("accepted") {
            Some(accepted @ Value::Object(_)) => {
                (accepted, &["scheme", "network", "asset", "payTo", "amount"])
            }
            _ => {
                return Err(bad_payload(
                    family,
                    "`paymentPayload.accepted` must be an object",
                ));
            }
        },
    };
    let mut mismatches = Vec::new();
    for &key in keys {
        let a = chosen.get(key);
        let b = requirements.get(key);
        let same = match (a.and_then(Value::as_str), b.and_then(Value::as_str)) {
            // EVM addresses are checksum-cased by some clients and not others.
            (Some(x), Some(y))
                if family == ChainFamily::Evm && matches!(key, "asset" | "payTo") =>
            {
                x.eq_ignore_ascii_case(y)
            }
            (Some(x), Some(y)) => x == y,
            _ => false,
        };
        if !same {
            mismatches.push(key);
        }
    }
    Ok(mismatches)
}

// === EVM ===

type Normalised = (Authorization, Option<String>, Fingerprint);

fn evm_authorization(
    inner: &Map<String, Value>,
    version: X402Version,
    chain_id: u64,
    asset: &str,
) -> Result<Normalised, Reason> {
    let eip3009 = inner.get("authorization");
    let permit2 = inner.get("permit2Authorization");
    let signature = || evm_signature(inner);
    match (eip3009, permit2) {
        (Some(_), Some(_)) => Err(evm_bad(
            "`paymentPayload.payload` carries both `authorization` and `permit2Authorization`",
        )),
        (Some(auth), None) => {
            let base = "paymentPayload.payload.authorization";
            let auth = as_object(auth, base)?;
            let from = evm_address_at(auth, base, "from")?;
            let to = evm_address_at(auth, base, "to")?;
            let value = decimal_at(auth, base, "value")?;
            let valid_after_secs = secs_at(auth, base, "validAfter")?;
            let valid_before_secs = secs_at(auth, base, "validBefore")?;
            let nonce = nonce_at(auth, base)?;
            let signature = signature()?;
            let from_hex = lower_hex_address(&from);
            let fingerprint = Fingerprint(format!(
                "evm:{chain_id}:{asset}:{from_hex}:0x{}",
                hex::encode(nonce.as_slice())
            ));
            let authorization = Authorization::Eip3009 {
                from,
                to,
                value,
                valid_after_secs,
                valid_before_secs,
                nonce,
                signature,
            };
            Ok((authorization, Some(from_hex), fingerprint))
        }
        (None, Some(auth)) => {
            let base = "paymentPayload.payload.permit2Authorization";
            if version == X402Version::V1 {
                return Err(evm_bad(format!("`{base}`: Permit2 exists only in x402 v2")));
            }
            let auth = as_object(auth, base)?;
            let from = evm_address_at(auth, base, "from")?;
            let permitted_path = format!("{base}.permitted");
            let permitted = as_object(
                auth.get("permitted").unwrap_or(&Value::Null),
                &permitted_path,
            )?;
            let token = evm_address_at(permitted, &permitted_path, "token")?;
            let amount = decimal_at(permitted, &permitted_path, "amount")?;
            let spender = evm_address_at(auth, base, "spender")?;
            let nonce: U256 = decimal_at(auth, base, "nonce")?.0;
            let deadline_secs = secs_at(auth, base, "deadline")?;
            let witness_path = format!("{base}.witness");
            let witness = as_object(auth.get("witness").unwrap_or(&Value::Null), &witness_path)?;
            let to = evm_address_at(witness, &witness_path, "to")?;
            let valid_after_secs = secs_at(witness, &witness_path, "validAfter")?;
            let signature = signature()?;
            let from_hex = lower_hex_address(&from);
            let fingerprint = Fingerprint(format!("evm-permit2:{chain_id}:{from_hex}:{nonce}"));
            let authorization = Authorization::Permit2 {
                from,
                to,
                token,
                amount,
                spender,
                nonce,
                deadline_secs,
                valid_after_secs,
                signature,
            };
            Ok((authorization, Some(from_hex), fingerprint))
        }
        (None, None) => Err(evm_bad(
            "`paymentPayload.payload` has neither `authorization` (EIP-3009) nor \
             `permit2Authorization` (Permit2)",
        )),
    }
}

fn evm_bad(message: impl Into<String>) -> Reason {
    Reason::new(ReasonCode::EvmPayload, message)
}

fn as_object<'a>(v: &'a Value, path: &str) -> Result<&'a Map<String, Value>, Reason> {
    v.as_object()
        .ok_or_else(|| evm_bad(format!("`{path}` must be an object")))
}

fn string_at<'a>(obj: &'a Map<String, Value>, base: &str, key: &str) -> Result<&'a str, Reason> {
    obj.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| evm_bad(format!("`{base}.{key}` must be a string")))
}

fn evm_address_at(obj: &Map<String, Value>, base: &str, key: &str) -> Result<Address, Reason> {
    let s = string_at(obj, base, key)?;
    parse_evm_address(s).ok_or_else(|| {
        evm_bad(format!(
            "`{base}.{key}` must be a 0x-prefixed 20-byte hex address"
        ))
    })
}

fn decimal_at(obj: &Map<String, Value>, base: &str, key: &str) -> Result<AtomicAmount, Reason> {
    let s = string_at(obj, base, key)?;
    AtomicAmount::parse_decimal(s)
        .ok_or_else(|| evm_bad(format!("`{base}.{key}` must be a decimal integer string")))
}

/// A uint256 timestamp as unix seconds. Values beyond `u64` saturate: they are still
/// "far future" to every window check, which then refuses them with the right reason.
fn secs_at(obj: &Map<String, Value>, base: &str, key: &str) -> Result<u64, Reason> {
    let v = decimal_at(obj, base, key)?.0;
    Ok(u64::try_from(v).unwrap_or(u64::MAX))
}

fn nonce_at(obj: &Map<String, Value>, base: &str) -> Result<B256, Reason> {
    let s = string_at(obj, base, "nonce")?;
    let bytes = hex_0x(s)
        .filter(|b| b.len() == 32)
        .ok_or_else(|| evm_bad(format!("`{base}.nonce` must be 0x-prefixed 32-byte hex")))?;
    Ok(B256::from_slice(&bytes))
}

fn evm_signature(inner: &Map<String, Value>) -> Result<Bytes, Reason> {
    let s = string_at(inner, "paymentPayload.payload", "signature")?;
    hex_0x(s)
        .filter(|b| !b.is_empty())
        .map(Bytes::from)
        .ok_or_else(|| evm_bad("`paymentPayload.payload.signature` must be 0x-prefixed hex"))
}

/// `0x` + even-length hex (either case) → bytes.
fn hex_0x(s: &str) -> Option<Vec<u8>> {
    let digits = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X"))?;
    hex::decode(digits).ok()
}

fn parse_evm_address(s: &str) -> Option<Address> {
    let bytes = hex_0x(s).filter(|b| b.len() == 20)?;
    Some(Address::from_slice(&bytes))
}

fn lower_hex_address(a: &Address) -> String {
    format!("0x{}", hex::encode(a.as_slice()))
}

// === Solana ===

fn is_base58_key(s: &str) -> bool {
    bs58::decode(s)
        .into_vec()
        .map(|b| b.len() == 32)
        .unwrap_or(false)
}

fn svm_authorization(inner: &Map<String, Value>) -> Result<Normalised, Reason> {
    let field = "paymentPayload.payload.transaction";
    let invalid = |m: String| Reason::new(ReasonCode::InvalidPayload, m);
    let Some(Value::String(transaction)) = inner.get("transaction") else {
        return Err(invalid(format!(
            "`{field}` must be a base64 string (the Solana exact payload)"
        )));
    };
    let bytes = decode_base64_strict(transaction)
        .map_err(|e| invalid(format!("`{field}` is not standard base64: {e}")))?;
    let client_signature =
        client_signature(&bytes).map_err(|m| invalid(format!("`{field}`: {m}")))?;
    let fingerprint = Fingerprint(format!("svm:{client_signature}"));
    let authorization = Authorization::SvmTransaction {
        transaction_base64: transaction.clone(),
        client_signature,
    };
    // The payer (TransferChecked authority) needs the message decoded; the SVM chain check
    // owns that and fills it in.
    Ok((authorization, None, fingerprint))
}

/// The client's signature, base58, from a serialized transaction: a compact-u16 signature
/// count, then 64-byte signatures.
///
/// In an x402 transaction the fee payer is account 0, so signature slot 0 belongs to the
/// facilitator and is still zero-filled when the payload arrives (spec §4.2: "the fee-payer
/// slot stays empty"); the client's signature is slot 1. Keying on slot 0 would give every
/// payment the same fingerprint, and on "first non-zero" would let a client vary the
/// fingerprint of one transaction by stuffing slot 0. With a single signature the client is
/// its own fee payer and slot 0 is theirs.
fn client_signature(tx: &[u8]) -> Result<String, String> {
    let (count, header_len) = read_compact_u16(tx).ok_or("truncated signature count".to_owned())?;
    if count == 0 {
        return Err("transaction carries no signatures".to_owned());
    }
    let slot = if count >= 2 { 1 } else { 0 };
    let start = header_len + slot * 64;
    let sig = tx
        .get(start..start + 64)
        .ok_or("truncated signatures".to_owned())?;
    if sig.iter().all(|&b| b == 0) {
        return Err("the client has not signed (its signature slot is empty)".to_owned());
    }
    Ok(bs58::encode(sig).into_string())
}

/// Solana's compact-u16 ("shortvec"): 7 bits per byte, at most 3 bytes.
fn read_compact_u16(bytes: &[u8]) -> Option<(usize, usize)> {
    let mut value = 0usize;
    for i in 0..3 {
        let b = *bytes.get(i)?;
        value |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return (value <= usize::from(u16::MAX)).then_some((value, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_u16_reads_one_to_three_bytes() {
        assert_eq!(read_compact_u16(&[0x02]), Some((2, 1)));
        assert_eq!(read_compact_u16(&[0x80, 0x01]), Some((128, 2)));
        assert_eq!(read_compact_u16(&[0xff, 0xff, 0x03]), Some((65535, 3)));
        assert_eq!(read_compact_u16(&[0x80, 0x80, 0x80]), None);
        assert_eq!(read_compact_u16(&[0x80]), None);
        assert_eq!(read_compact_u16(&[]), None);
    }

    #[test]
    fn client_signature_is_slot_one_when_the_fee_payer_slot_is_empty() {
        let mut tx = vec![2u8];
        tx.extend([0u8; 64]);
        tx.extend([7u8; 64]);
        tx.extend(b"message");
        assert_eq!(
            client_signature(&tx).unwrap(),
            bs58::encode([7u8; 64]).into_string()
        );
        let mut solo = vec![1u8];
        solo.extend([9u8; 64]);
        assert_eq!(
            client_signature(&solo).unwrap(),
            bs58::encode([9u8; 64]).into_string()
        );
        assert!(client_signature(&[1u8, 0, 0]).is_err());
        assert!(client_signature(&[0u8]).is_err());
        let mut unsigned = vec![2u8];
        unsigned.extend([0u8; 128]);
        assert!(client_signature(&unsigned).is_err());
    }
}
