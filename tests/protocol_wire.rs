//! Wire-level tests for `gatehouse::protocol`: the spec's header vectors (§5.6), v1/v2
//! requests built from the transport-spec examples normalised to the expected `Payment`, every
//! 400 case naming its field, business refusals, lossless responses, and hostile input.

use bytes::Bytes;
use gatehouse::protocol::{
    Authorization, FacilitatorRequest, SettleResponse, SupportedResponse, VerifyResponse,
    X402Version, decode_base64_strict, decode_header_json, encode_base64, normalise,
    payment_identifier,
};
use gatehouse::verdict::ReasonCode;
use proptest::prelude::*;
use serde_json::{Value, json};

// === helpers ===

/// `X-PAYMENT` from specs/transports-v1/http.md (spec §5.6 V1).
const V1_X_PAYMENT: &str = "eyJ4NDAyVmVyc2lvbiI6MSwic2NoZW1lIjoiZXhhY3QiLCJuZXR3b3JrIjoiYmFzZS1zZXBvbGlhIiwicGF5bG9hZCI6eyJzaWduYXR1cmUiOiIweDJkNmE3NTg4ZDZhY2NhNTA1Y2JmMGQ5YTRhMjI3ZTBjNTJjNmMzNDAwOGM4ZTg5ODZhMTI4MzI1OTc2NDE3MzYwOGEyY2U2NDk2NjQyZTM3N2Q2ZGE4ZGJiZjU4MzZlOWJkMTUwOTJmOWVjYWIwNWRlZDNkNjI5M2FmMTQ4YjU3MWMiLCJhdXRob3JpemF0aW9uIjp7ImZyb20iOiIweDg1N2IwNjUxOUU5MWUzQTU0NTM4NzkxYkRiYjBFMjIzNzNlMzZiNjYiLCJ0byI6IjB4MjA5NjkzQmM2YWZjMEM1MzI4YkEzNkZhRjAzQzUxNEVGMzEyMjg3QyIsInZhbHVlIjoiMTAwMDAiLCJ2YWxpZEFmdGVyIjoiMTc0MDY3MjA4OSIsInZhbGlkQmVmb3JlIjoiMTc0MDY3MjE1NCIsIm5vbmNlIjoiMHhmMzc0NjYxM2MyZDkyMGI1ZmRhYmMwODU2ZjJhZWIyZDRmODhlZTYwMzdiOGNjNWQwNGE3MWE0NDYyZjEzNDgwIn19fQ==";

/// `PAYMENT-SIGNATURE` from specs/transports-v2/http.md.
const V2_PAYMENT_SIGNATURE: &str = "eyJ4NDAyVmVyc2lvbiI6MiwicmVzb3VyY2UiOnsidXJsIjoiaHR0cHM6Ly9hcGkuZXhhbXBsZS5jb20vcHJlbWl1bS1kYXRhIiwiZGVzY3JpcHRpb24iOiJBY2Nlc3MgdG8gcHJlbWl1bSBtYXJrZXQgZGF0YSIsIm1pbWVUeXBlIjoiYXBwbGljYXRpb24vanNvbiJ9LCJhY2NlcHRlZCI6eyJzY2hlbWUiOiJleGFjdCIsIm5ldHdvcmsiOiJlaXAxNTU6ODQ1MzIiLCJhbW91bnQiOiIxMDAwMCIsImFzc2V0IjoiMHgwMzZDYkQ1Mzg0MmM1NDI2NjM0ZTc5Mjk1NDFlQzIzMThmM2RDRjdlIiwicGF5VG8iOiIweDIwOTY5M0JjNmFmYzBDNTMyOGJBMzZGYUYwM0M1MTRFRjMxMjI4N0MiLCJtYXhUaW1lb3V0U2Vjb25kcyI6NjAsImV4dHJhIjp7Im5hbWUiOiJVU0RDIiwidmVyc2lvbiI6IjIifX0sInBheWxvYWQiOnsic2lnbmF0dXJlIjoiMHgyZDZhNzU4OGQ2YWNjYTUwNWNiZjBkOWE0YTIyN2UwYzUyYzZjMzQwMDhjOGU4OTg2YTEyODMyNTk3NjQxNzM2MDhhMmNlNjQ5NjY0MmUzNzdkNmRhOGRiYmY1ODM2ZTliZDE1MDkyZjllY2FiMDVkZWQzZDYyOTNhZjE0OGI1NzFjIiwiYXV0aG9yaXphdGlvbiI6eyJmcm9tIjoiMHg4NTdiMDY1MTlFOTFlM0E1NDUzODc5MWJEYmIwRTIyMzczZTM2YjY2IiwidG8iOiIweDIwOTY5M0JjNmFmYzBDNTMyOGJBMzZGYUYwM0M1MTRFRjMxMjI4N0MiLCJ2YWx1ZSI6IjEwMDAwIiwidmFsaWRBZnRlciI6IjE3NDA2NzIwODkiLCJ2YWxpZEJlZm9yZSI6IjE3NDA2NzIxNTQiLCJub25jZSI6IjB4ZjM3NDY2MTNjMmQ5MjBiNWZkYWJjMDg1NmYyYWViMmQ0Zjg4ZWU2MDM3YjhjYzVkMDRhNzFhNDQ2MmYxMzQ4MCJ9fX0=";

/// v2 `PAYMENT-RESPONSE` success and failure.
const V2_RESPONSE_OK: &str = "eyJzdWNjZXNzIjp0cnVlLCJ0cmFuc2FjdGlvbiI6IjB4MTIzNDU2Nzg5MGFiY2RlZjEyMzQ1Njc4OTBhYmNkZWYxMjM0NTY3ODkwYWJjZGVmMTIzNDU2Nzg5MGFiY2RlZiIsIm5ldHdvcmsiOiJlaXAxNTU6ODQ1MzIiLCJwYXllciI6IjB4ODU3YjA2NTE5RTkxZTNBNTQ1Mzg3OTFiRGJiMEUyMjM3M2UzNmI2NiJ9";
const V2_RESPONSE_FAIL: &str = "eyJzdWNjZXNzIjpmYWxzZSwiZXJyb3JSZWFzb24iOiJpbnN1ZmZpY2llbnRfZnVuZHMiLCJuZXR3b3JrIjoiZWlwMTU1Ojg0NTMyIn0=";
/// v1 `X-PAYMENT-RESPONSE` failure.
const V1_RESPONSE_FAIL: &str = "eyJzdWNjZXNzIjpmYWxzZSwiZXJyb3JSZWFzb24iOiJpbnN1ZmZpY2llbnRfZnVuZHMiLCJ0cmFuc2FjdGlvbiI6IiIsIm5ldHdvcmsiOiJiYXNlLXNlcG9saWEiLCJwYXllciI6IjB4ODU3YjA2NTE5RTkxZTNBNTQ1Mzg3OTFiRGJiMEUyMjM3M2UzNmI2NiJ9";

const ASSET: &str = "0x036CbD53842c5426634e7929541eC2318f3dCF7e";
const PAY_TO: &str = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C";
const FROM_LC: &str = "0x857b06519e91e3a54538791bdbb0e22373e36b66";
const NONCE: &str = "0xf3746613c2d920b5fdabc0856f2aeb2d4f88ee6037b8cc5d04a71a4462f13480";
const SOL_MINT: &str = "4zMMC9srt5Ri5X14GAgXhaHii3GnPAEERYPJgZJDncDU";
const SOL_PAY_TO: &str = "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v";

fn v1_body() -> Value {
    json!({
        "x402Version": 1,
        "paymentPayload": decode_header_json(V1_X_PAYMENT).unwrap(),
        "paymentRequirements": {
            "scheme": "exact",
            "network": "base-sepolia",
            "maxAmountRequired": "10000",
            "asset": ASSET,
            "payTo": PAY_TO,
            "resource": "https://api.example.com/premium-data",
            "description": "Access to premium market data",
            "mimeType": "application/json",
            "outputSchema": null,
            "maxTimeoutSeconds": 60,
            "extra": {"name": "USDC", "version": "2"}
        }
    })
}

fn v2_body() -> Value {
    let payload = decode_header_json(V2_PAYMENT_SIGNATURE).unwrap();
    let requirements = payload["accepted"].clone();
    json!({"x402Version": 2, "paymentPayload": payload, "paymentRequirements": requirements})
}

fn decode(body: &Value) -> Result<FacilitatorRequest, gatehouse::protocol::DecodeError> {
    FacilitatorRequest::decode(Bytes::from(serde_json::to_vec(body).unwrap()))
}

fn normalised(body: &Value) -> Result<gatehouse::protocol::Payment, gatehouse::verdict::Reason> {
    normalise(&decode(body).expect("decodes"))
}

/// Sets `body` at a `/`-separated pointer, creating nothing: the parent must exist.
fn set(body: &mut Value, pointer: &str, v: Value) {
    *body.pointer_mut(pointer).expect("pointer exists") = v;
}

fn remove(body: &mut Value, pointer: &str) {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    body.pointer_mut(parent)
        .and_then(Value::as_object_mut)
        .expect("parent exists")
        .remove(key);
}

// === base64 header vectors (spec §2.3, §5.6) ===

#[test]
fn spec_header_vectors_decode_to_the_printed_json() {
    let v1 = decode_header_json(V1_X_PAYMENT).unwrap();
    assert_eq!(v1["network"], "base-sepolia");
    assert_eq!(v1["payload"]["authorization"]["nonce"], NONCE);
    let v2 = decode_header_json(V2_PAYMENT_SIGNATURE).unwrap();
    assert_eq!(v2["accepted"]["amount"], "10000");
    assert_eq!(
        v2["resource"]["url"],
        "https://api.example.com/premium-data"
    );

    let ok: SettleResponse =
        serde_json::from_value(decode_header_json(V2_RESPONSE_OK).unwrap()).unwrap();
    assert!(ok.success);
    assert_eq!(ok.network, "eip155:84532");
    assert_eq!(ok.transaction.len(), 66);
    // The v2 failure example has no `transaction`; it must still parse, as "".
    let fail: SettleResponse =
        serde_json::from_value(decode_header_json(V2_RESPONSE_FAIL).unwrap()).unwrap();
    assert_eq!(fail.error_reason.as_deref(), Some("insufficient_funds"));
    assert_eq!(fail.transaction, "");
    let v1_fail: SettleResponse =
        serde_json::from_value(decode_header_json(V1_RESPONSE_FAIL).unwrap()).unwrap();
    assert_eq!(v1_fail.network, "base-sepolia");
}

#[test]
fn base64_round_trips_and_rejects_non_standard_spellings() {
    for bytes in [
        &b""[..],
        b"a",
        b"ab",
        b"abc",
        b"\xfb\xff\xfe",
        b"{\"x402Version\":2}",
    ] {
        let enc = encode_base64(bytes);
        assert_eq!(decode_base64_strict(&enc).unwrap(), bytes);
    }
    // 0xfb 0xff 0xfe encodes with both `+` and `/`: standard only.
    assert_eq!(encode_base64(b"\xfb\xff\xfe"), "+//+");
    for bad in [
        "-__-",           // URL-safe alphabet
        "+//+ ",          // trailing space
        "eyJh\nYiI6MX0=", // embedded newline
        " eyJhYiI6MX0=",  // leading space
        "YQ",             // padding missing
        "YQ=",            // padding short
        "YQ===",          // padding too long
        "YR==",           // non-canonical trailing bits
        "Y=Q=",           // padding in the middle
    ] {
        assert!(decode_base64_strict(bad).is_err(), "accepted {bad:?}");
    }
    let url_safe = V2_PAYMENT_SIGNATURE.replace('+', "-").replace('/', "_");
    if url_safe != V2_PAYMENT_SIGNATURE {
        assert!(decode_header_json(&url_safe).is_err());
    }
    assert!(decode_header_json(&format!("{V1_X_PAYMENT}\n")).is_err());
}

#[test]
fn header_json_is_bounded_in_size_and_depth() {
    let huge = encode_base64(format!("\"{}\"", "a".repeat(70_000)).as_bytes());
    assert!(decode_header_json(&huge).is_err());
    let deep = encode_base64(format!("{}{}", "[".repeat(40), "]".repeat(40)).as_bytes());
    assert!(decode_header_json(&deep).is_err());
    assert!(decode_header_json(&encode_base64(b"not json")).is_err());
    assert!(decode_header_json(&encode_base64(b"\xff\xfe")).is_err());
}

// === normalisation of the spec examples ===

#[test]
fn v1_spec_example_normalises() {
    let req = decode(&v1_body()).unwrap();
    assert_eq!(req.version, X402Version::V1);
    assert_eq!(req.response_network(), "base-sepolia");
    let p = normalise(&req).unwrap();
    assert_eq!(p.network.caip2.as_str(), "eip155:84532");
    assert_eq!(p.network.wire, "base-sepolia");
    assert_eq!(p.scheme, "exact");
    assert_eq!(p.amount.to_string(), "10000");
    assert_eq!(p.asset, ASSET.to_lowercase());
    assert_eq!(p.pay_to, PAY_TO.to_lowercase());
    assert_eq!(p.payer.as_deref(), Some(FROM_LC));
    assert_eq!(
        p.resource.as_deref(),
        Some("https://api.example.com/premium-data")
    );
    assert_eq!(p.max_timeout_secs, 60);
    assert_eq!(p.extra.eip712_name.as_deref(), Some("USDC"));
    assert_eq!(p.extra.eip712_version.as_deref(), Some("2"));
    assert!(p.accepted_mismatches.is_empty());
    assert_eq!(p.decimals, None);
    assert_eq!(p.payment_identifier, None);
    assert_eq!(
        p.fingerprint.0,
        format!("evm:84532:{}:{FROM_LC}:{NONCE}", ASSET.to_lowercase())
    );
    match p.authorization {
        Authorization::Eip3009 {
            value,
            valid_after_secs,
            valid_before_secs,
            signature,
            to,
            ..
        } => {
            assert_eq!(value.to_string(), "10000");
            assert_eq!(valid_after_secs, 1_740_672_089);
            assert_eq!(valid_before_secs, 1_740_672_154);
            assert_eq!(signature.len(), 65);
            assert_eq!(format!("{to:?}").to_lowercase(), PAY_TO.to_lowercase());
        }
        other => panic!("expected EIP-3009, got {other:?}"),
    }
}

#[test]
fn v2_spec_example_normalises_to_the_same_fingerprint() {
    let req = decode(&v2_body()).unwrap();
    assert_eq!(req.version, X402Version::V2);
    assert_eq!(req.response_network(), "eip155:84532");
    let p2 = normalise(&req).unwrap();
    let p1 = normalised(&v1_body()).unwrap();
    // Same authorization sent as v1 or v2 is the same payment.
    assert_eq!(p1.fingerprint, p2.fingerprint);
    assert_eq!(p2.network.caip2, p1.network.caip2);
    assert_eq!(
        p2.resource.as_deref(),
        Some("https://api.example.com/premium-data")
    );
    assert_eq!(p2.amount.to_string(), "10000");
    assert!(p2.accepted_mismatches.is_empty());
}

#[test]
fn accepted_mismatches_are_detected() {
    // Checksum case differences are not mismatches.
    let mut body = v2_body();
    set(
        &mut body,
        "/paymentRequirements/payTo",
        json!(PAY_TO.to_lowercase()),
    );
    set(
        &mut body,
        "/paymentRequirements/asset",
        json!(ASSET.to_uppercase().replace("0X", "0x")),
    );
    assert!(normalised(&body).unwrap().accepted_mismatches.is_empty());

    let mut body = v2_body();
    set(&mut body, "/paymentPayload/accepted/amount", json!("1"));
    set(
        &mut body,
        "/paymentPayload/accepted/payTo",
        json!("0x0000000000000000000000000000000000000001"),
    );
    set(
        &mut body,
        "/paymentPayload/accepted/network",
        json!("eip155:8453"),
    );
    assert_eq!(
        normalised(&body).unwrap().accepted_mismatches,
        vec!["network", "payTo", "amount"]
    );

    let mut body = v2_body();
    remove(&mut body, "/paymentPayload/accepted/scheme");
    set(&mut body, "/paymentPayload/accepted/asset", json!(PAY_TO));
    assert_eq!(
        normalised(&body).unwrap().accepted_mismatches,
        vec!["scheme", "asset"]
    );

    let mut body = v1_body();
    set(&mut body, "/paymentPayload/network", json!("base"));
    assert_eq!(
        normalised(&body).unwrap().accepted_mismatches,
        vec!["network"]
    );

    let mut body = v2_body();
    remove(&mut body, "/paymentPayload/accepted");
    assert_eq!(normalised(&body).unwrap_err().code, ReasonCode::EvmPayload);
}

#[test]
fn permit2_payload_normalises() {
    let mut body = v2_body();
    set(
        &mut body,
        "/paymentPayload/payload",
        json!({
            "signature": "0xabcd",
            "permit2Authorization": {
                "from": "0x857b06519E91e3A54538791bDbb0E22373e36b66",
                "permitted": {"token": ASSET, "amount": "10000"},
                "spender": "0x402085c248EeA27D92E8b30b2C58ed07f9E20001",
                "nonce": "123456789012345678901234567890",
                "deadline": "1740672154",
                "witness": {"to": PAY_TO, "validAfter": "1740672089"}
            }
        }),
    );
    let p = normalised(&body).unwrap();
    assert_eq!(
        p.fingerprint.0,
        format!("evm-permit2:84532:{FROM_LC}:123456789012345678901234567890")
    );
    assert_eq!(p.payer.as_deref(), Some(FROM_LC));
    match p.authorization {
        Authorization::Permit2 {
            amount,
            deadline_secs,
            valid_after_secs,
            ..
        } => {
            assert_eq!(amount.to_string(), "10000");
            assert_eq!(deadline_secs, 1_740_672_154);
            assert_eq!(valid_after_secs, 1_740_672_089);
        }
        other => panic!("expected Permit2, got {other:?}"),
    }

    // Permit2 is v2-only; both shapes at once is ambiguous.
    let mut v1 = v1_body();
    let permit = body["paymentPayload"]["payload"].clone();
    set(&mut v1, "/paymentPayload/payload", permit.clone());
    assert_eq!(normalised(&v1).unwrap_err().code, ReasonCode::EvmPayload);
    let mut both = v2_body();
    both["paymentPayload"]["payload"]["permit2Authorization"] =
        permit["permit2Authorization"].clone();
    assert_eq!(normalised(&both).unwrap_err().code, ReasonCode::EvmPayload);
}

fn svm_body(transaction: &str) -> Value {
    let req = json!({
        "scheme": "exact",
        "network": "solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1",
        "amount": "1000",
        "asset": SOL_MINT,
        "payTo": SOL_PAY_TO,
        "maxTimeoutSeconds": 60,
        "extra": {"feePayer": SOL_PAY_TO, "memo": "order-7"}
    });
    json!({
        "x402Version": 2,
        "paymentPayload": {
            "x402Version": 2,
            "accepted": req,
            "payload": {"transaction": transaction},
            "extensions": {"payment-identifier": {"info": {"id": "pay_0123456789abcdef"}}}
        },
        "paymentRequirements": req
    })
}

#[test]
fn svm_payload_fingerprint_is_the_client_signature() {
    let mut tx = vec![2u8];
    tx.extend([0u8; 64]); // fee payer's slot, empty until the facilitator signs
    tx.extend([5u8; 64]); // the client's signature
    tx.extend(b"\x80message bytes");
    let b64 = encode_base64(&tx);
    let p = normalised(&svm_body(&b64)).unwrap();
    let sig = bs58::encode([5u8; 64]).into_string();
    assert_eq!(p.fingerprint.0, format!("svm:{sig}"));
    assert_eq!(p.asset, SOL_MINT);
    assert_eq!(p.extra.fee_payer.as_deref(), Some(SOL_PAY_TO));
    assert_eq!(p.extra.memo.as_deref(), Some("order-7"));
    assert_eq!(
        p.payment_identifier.as_deref(),
        Some("pay_0123456789abcdef")
    );
    match p.authorization {
        Authorization::SvmTransaction {
            transaction_base64,
            client_signature,
        } => {
            assert_eq!(transaction_base64, b64);
            assert_eq!(client_signature, sig);
        }
        other => panic!("expected SVM, got {other:?}"),
    }

    // URL-safe base64, truncation, no signatures, unsigned: all refused as invalid_payload.
    let url_safe = encode_base64(&[0xfbu8; 200])
        .replace('+', "-")
        .replace('/', "_");
    for bad in [
        url_safe,
        encode_base64(&[2u8, 1, 2, 3]),
        encode_base64(&[0u8]),
        encode_base64(&[&[2u8][..], &[0u8; 128]].concat()),
    ] {
        let r = normalised(&svm_body(&bad)).unwrap_err();
        assert_eq!(r.code, ReasonCode::InvalidPayload, "{bad}");
        assert!(r.message.contains("paymentPayload.payload.transaction"));
    }
    let mut evm_shaped = svm_body("x");
    set(
        &mut evm_shaped,
        "/paymentPayload/payload",
        v2_body()["paymentPayload"]["payload"].clone(),
    );
    assert_eq!(
        normalised(&evm_shaped).unwrap_err().code,
        ReasonCode::InvalidPayload
    );
}

// === business refusals name their field ===

#[test]
fn business_refusals_name_the_field() {
    let cases: Vec<(&str, Value, ReasonCode, &str)> = vec![
        (
            "/paymentRequirements/network",
            json!("kairos-testnet"),
            ReasonCode::InvalidNetwork,
            "paymentRequirements.network",
        ),
        (
            "/paymentRequirements/network",
            json!("eip155:base"),
            ReasonCode::InvalidNetwork,
            "paymentRequirements.network",
        ),
        (
            "/paymentRequirements/network",
            json!("cosmos:hub-4"),
            ReasonCode::InvalidNetwork,
            "paymentRequirements.network",
        ),
        (
            "/paymentRequirements/scheme",
            json!("upto"),
            ReasonCode::UnsupportedScheme,
            "paymentRequirements.scheme",
        ),
        (
            "/paymentRequirements/amount",
            json!("1e6"),
            ReasonCode::InvalidPaymentRequirements,
            "paymentRequirements.amount",
        ),
        (
            "/paymentRequirements/amount",
            json!("-1"),
            ReasonCode::InvalidPaymentRequirements,
            "paymentRequirements.amount",
        ),
        (
            "/paymentRequirements/amount",
            json!("1.5"),
            ReasonCode::InvalidPaymentRequirements,
            "paymentRequirements.amount",
        ),
        (
            "/paymentRequirements/payTo",
            json!("merchant"),
            ReasonCode::InvalidPaymentRequirements,
            "paymentRequirements.payTo",
        ),
        (
            "/paymentRequirements/asset",
            json!("0x1234"),
            ReasonCode::InvalidPaymentRequirements,
            "paymentRequirements.asset",
        ),
        (
            "/paymentRequirements/maxTimeoutSeconds",
            json!(-5),
            ReasonCode::InvalidPaymentRequirements,
            "paymentRequirements.maxTimeoutSeconds",
        ),
        (
            "/paymentRequirements/extra",
            json!("USDC"),
            ReasonCode::InvalidPaymentRequirements,
            "paymentRequirements.extra",
        ),
        (
            "/paymentPayload/payload",
            json!("0x"),
            ReasonCode::EvmPayload,
            "paymentPayload.payload",
        ),
        (
            "/paymentPayload/payload",
            json!({"signature": "0x12"}),
            ReasonCode::EvmPayload,
            "paymentPayload.payload",
        ),
        (
            "/paymentPayload/payload/signature",
            json!("2d6a"),
            ReasonCode::EvmPayload,
            "paymentPayload.payload.signature",
        ),
        (
            "/paymentPayload/payload/signature",
            json!("0xzz"),
            ReasonCode::EvmPayload,
            "paymentPayload.payload.signature",
        ),
        (
            "/paymentPayload/payload/authorization/from",
            json!("0x857b"),
            ReasonCode::EvmPayload,
            "paymentPayload.payload.authorization.from",
        ),
        (
            "/paymentPayload/payload/authorization/to",
            json!(42),
            ReasonCode::EvmPayload,
            "paymentPayload.payload.authorization.to",
        ),
        (
            "/paymentPayload/payload/authorization/value",
            json!("10,000"),
            ReasonCode::EvmPayload,
            "paymentPayload.payload.authorization.value",
        ),
        (
            "/paymentPayload/payload/authorization/value",
            json!(10000),
            ReasonCode::EvmPayload,
            "paymentPayload.payload.authorization.value",
        ),
        (
            "/paymentPayload/payload/authorization/validAfter",
            json!("soon"),
            ReasonCode::EvmPayload,
            "paymentPayload.payload.authorization.validAfter",
        ),
        (
            "/paymentPayload/payload/authorization/validBefore",
            json!("0x10"),
            ReasonCode::EvmPayload,
            "paymentPayload.payload.authorization.validBefore",
        ),
        (
            "/paymentPayload/payload/authorization/nonce",
            json!("0xf374"),
            ReasonCode::EvmPayload,
            "paymentPayload.payload.authorization.nonce",
        ),
        (
            "/paymentPayload/payload/authorization/nonce",
            json!(format!("{NONCE}00")),
            ReasonCode::EvmPayload,
            "paymentPayload.payload.authorization.nonce",
        ),
        (
            "/paymentPayload/extensions",
            json!({"payment-identifier": {"info": {"id": "short"}}}),
            ReasonCode::InvalidPayload,
            "payment-identifier.info.id",
        ),
    ];
    for (pointer, value, code, field) in cases {
        let mut body = v2_body();
        if body.pointer(pointer).is_none() {
            let (parent, key) = pointer.rsplit_once('/').unwrap();
            body.pointer_mut(parent).unwrap()[key] = Value::Null;
        }
        set(&mut body, pointer, value.clone());
        let reason = normalised(&body).unwrap_err();
        assert_eq!(reason.code, code, "{pointer} = {value}");
        assert!(
            reason.message.contains(field),
            "{pointer}: {}",
            reason.message
        );
    }
    // v1 names its own amount key.
    let mut body = v1_body();
    set(
        &mut body,
        "/paymentRequirements/maxAmountRequired",
        json!("ten"),
    );
    let r = normalised(&body).unwrap_err();
    assert_eq!(r.code, ReasonCode::InvalidPaymentRequirements);
    assert!(r.message.contains("paymentRequirements.maxAmountRequired"));
}

#[test]
fn large_timestamps_saturate_instead_of_failing() {
    let mut body = v2_body();
    set(
        &mut body,
        "/paymentPayload/payload/authorization/validBefore",
        json!("115792089237316195423570985008687907853269984665640564039457584007913129639935"),
    );
    match normalised(&body).unwrap().authorization {
        Authorization::Eip3009 {
            valid_before_secs, ..
        } => assert_eq!(valid_before_secs, u64::MAX),
        other => panic!("{other:?}"),
    }
}

// === 400s name their field ===

#[test]
fn decode_errors_name_their_field() {
    let cases: Vec<(Value, &str, Option<&str>)> = vec![
        (json!([1, 2]), "invalid_json", None),
        (
            json!({"paymentRequirements": {}}),
            "missing_field",
            Some("paymentPayload"),
        ),
        (
            json!({"paymentPayload": {"x402Version": 2}}),
            "missing_field",
            Some("paymentRequirements"),
        ),
        (
            json!({"paymentPayload": "x", "paymentRequirements": {}}),
            "invalid_field",
            Some("paymentPayload"),
        ),
        (
            json!({"paymentPayload": {"x402Version": 2}, "paymentRequirements": []}),
            "invalid_field",
            Some("paymentRequirements"),
        ),
    ];
    for (body, code, field) in cases {
        let e = decode(&body).unwrap_err();
        assert_eq!((e.code, e.field.as_deref()), (code, field), "{body}");
    }
    let e = FacilitatorRequest::decode(Bytes::from_static(b"{\"paymentPayload\":")).unwrap_err();
    assert_eq!(e.code, "invalid_json");

    for version in [
        json!(null),
        json!("2"),
        json!(3),
        json!(0),
        json!(2.5),
        json!(-1),
    ] {
        let mut body = v2_body();
        set(&mut body, "/paymentPayload/x402Version", version.clone());
        let e = decode(&body).unwrap_err();
        assert_eq!(e.code, "unsupported_version", "{version}");
        assert_eq!(e.field.as_deref(), Some("paymentPayload.x402Version"));
    }
    let mut body = v2_body();
    remove(&mut body, "/paymentPayload/x402Version");
    assert_eq!(decode(&body).unwrap_err().code, "unsupported_version");

    for top in [json!(1), json!("2"), json!(true)] {
        let mut body = v2_body();
        set(&mut body, "/x402Version", top);
        let e = decode(&body).unwrap_err();
        assert_eq!(
            (e.code, e.field.as_deref()),
            ("version_mismatch", Some("x402Version"))
        );
    }
    // The top-level field is optional.
    let mut body = v2_body();
    remove(&mut body, "/x402Version");
    assert_eq!(decode(&body).unwrap().version, X402Version::V2);

    for key in ["scheme", "network", "payTo", "asset", "amount"] {
        let mut body = v2_body();
        remove(&mut body, &format!("/paymentRequirements/{key}"));
        let e = decode(&body).unwrap_err();
        let path = format!("paymentRequirements.{key}");
        assert_eq!(
            (e.code, e.field.as_deref()),
            ("missing_field", Some(path.as_str()))
        );
        let mut body = v2_body();
        set(&mut body, &format!("/paymentRequirements/{key}"), json!(7));
        let e = decode(&body).unwrap_err();
        assert_eq!(
            (e.code, e.field.as_deref()),
            ("invalid_field", Some(path.as_str()))
        );
    }
    // v1 needs maxAmountRequired, not amount.
    let mut body = v1_body();
    remove(&mut body, "/paymentRequirements/maxAmountRequired");
    set(&mut body, "/paymentRequirements/asset", json!(ASSET));
    body["paymentRequirements"]["amount"] = json!("10000");
    let e = decode(&body).unwrap_err();
    assert_eq!(
        e.field.as_deref(),
        Some("paymentRequirements.maxAmountRequired")
    );
}

#[test]
fn hundred_thousand_brackets_are_too_deep_not_a_crash() {
    let mut raw = Vec::with_capacity(200_002);
    raw.extend(std::iter::repeat_n(b'[', 100_000));
    raw.extend(std::iter::repeat_n(b']', 100_000));
    let e = FacilitatorRequest::decode(Bytes::from(raw)).unwrap_err();
    assert_eq!(e.code, "too_deep");
    let nested = format!(
        "{{\"paymentPayload\":{{\"x402Version\":2,\"extensions\":{}{}}}}}",
        "{\"a\":".repeat(100_000),
        "}".repeat(100_000)
    );
    let e = FacilitatorRequest::decode(Bytes::from(nested)).unwrap_err();
    assert_eq!(e.code, "too_deep");
}

#[test]
fn raw_body_is_kept_verbatim() {
    let text = serde_json::to_string_pretty(&v2_body()).unwrap();
    let req = FacilitatorRequest::decode(Bytes::from(text.clone())).unwrap();
    assert_eq!(&req.raw[..], text.as_bytes());
    // Key order is preserved in the parsed body (preserve_order).
    let keys: Vec<_> = req.body.as_object().unwrap().keys().cloned().collect();
    assert_eq!(
        keys,
        ["x402Version", "paymentPayload", "paymentRequirements"]
    );
}

// === payment-identifier bounds (spec §6.3) ===

#[test]
fn payment_identifier_bounds() {
    let with = |id: Value| json!({"extensions": {"payment-identifier": {"info": {"id": id}}}});
    assert_eq!(payment_identifier(&json!({})).unwrap(), None);
    assert_eq!(
        payment_identifier(&json!({"extensions": {"payment-identifier": {"info": {}}}})).unwrap(),
        None
    );
    assert!(payment_identifier(&with(json!("a".repeat(15)))).is_err());
    assert_eq!(
        payment_identifier(&with(json!("a".repeat(16)))).unwrap(),
        Some("a".repeat(16))
    );
    assert_eq!(
        payment_identifier(&with(json!("Z9_-".repeat(32)))).unwrap(),
        Some("Z9_-".repeat(32))
    );
    assert!(payment_identifier(&with(json!("a".repeat(129)))).is_err());
    for bad in [
        "abcdefghijklmnop!",
        "abcdefghijklmno p",
        "abcdefghijklmnopé",
        "abcdefghijklmn.op",
    ] {
        let r = payment_identifier(&with(json!(bad))).unwrap_err();
        assert_eq!(r.code, ReasonCode::InvalidPayload);
        assert!(r.message.contains("payment-identifier"));
    }
    assert!(payment_identifier(&with(json!(1234567890123456789u64))).is_err());
}

// === responses ===

#[test]
fn verify_response_round_trip_keeps_unknown_fields() {
    let upstream = json!({
        "isValid": false,
        "invalidReason": "insufficient_funds",
        "payer": "0xabc",
        "extensions": {"bazaar": {"status": "success"}},
        "correlationId": "c-1",
        "nested": {"x": [1, 2]}
    });
    let parsed: VerifyResponse = serde_json::from_value(upstream.clone()).unwrap();
    assert_eq!(parsed.other.len(), 2);
    assert_eq!(serde_json::to_value(&parsed).unwrap(), upstream);

    let valid = serde_json::to_value(VerifyResponse::valid(Some("0xabc".into()))).unwrap();
    assert_eq!(valid, json!({"isValid": true, "payer": "0xabc"}));
    let invalid =
        serde_json::to_value(VerifyResponse::invalid("invalid_payload", "bad", None)).unwrap();
    assert_eq!(
        invalid,
        json!({"isValid": false, "invalidReason": "invalid_payload", "invalidMessage": "bad"})
    );
}

#[test]
fn settle_response_keeps_unknown_fields_and_always_has_transaction_and_network() {
    let upstream = json!({
        "success": true,
        "transaction": "0x12",
        "network": "eip155:8453",
        "payer": "0xabc",
        "amount": "10",
        "receipt": {"blockNumber": 7}
    });
    let parsed: SettleResponse = serde_json::from_value(upstream.clone()).unwrap();
    assert_eq!(serde_json::to_value(&parsed).unwrap(), upstream);

    let bare: SettleResponse =
        serde_json::from_value(json!({"success": false, "errorReason": "x", "transaction": null}))
            .unwrap();
    let out = serde_json::to_value(&bare).unwrap();
    assert_eq!(out["transaction"], "");
    assert_eq!(out["network"], "");

    let failure = SettleResponse::failure("settlement_pending", "timeout", None, "base", "0xdead");
    assert_eq!(
        serde_json::to_value(&failure).unwrap(),
        json!({"success": false, "errorReason": "settlement_pending", "errorMessage": "timeout",
               "transaction": "0xdead", "network": "base"})
    );
    let empty = SettleResponse::failure("duplicate_settlement", "seen", None, "base", "");
    let out = serde_json::to_value(&empty).unwrap();
    assert_eq!(out["transaction"], "");
}

#[test]
fn supported_response_defaults_and_keeps_unknown_fields() {
    let v1: SupportedResponse = serde_json::from_value(json!({
        "kinds": [{"x402Version": 1, "scheme": "exact", "network": "base-sepolia"}]
    }))
    .unwrap();
    assert!(v1.extensions.is_empty() && v1.signers.is_empty());
    let v2 = json!({
        "kinds": [
            {"x402Version": 2, "scheme": "exact", "network": "solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1",
             "extra": {"feePayer": SOL_PAY_TO}, "future": 1},
            {"x402Version": 1, "scheme": "exact", "network": "base"}
        ],
        "extensions": ["payment-identifier"],
        "signers": {"solana:*": [SOL_PAY_TO]},
        "version": "9"
    });
    let parsed: SupportedResponse = serde_json::from_value(v2.clone()).unwrap();
    assert_eq!(parsed.kinds[0].other["future"], 1);
    assert_eq!(serde_json::to_value(&parsed).unwrap(), v2);
}

// === hostile input never panics ===

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,40}".prop_map(Value::String),
        "[0-9]{0,80}".prop_map(Value::String),
        "0x[0-9a-fA-F]{0,130}".prop_map(Value::String),
        "[A-Za-z0-9+/]{0,200}={0,2}".prop_map(Value::String),
        prop_oneof![
            Just("exact"),
            Just("base-sepolia"),
            Just("eip155:84532"),
            Just("solana-devnet")
        ]
        .prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(5, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop_oneof![
                        Just("x402Version".to_string()),
                        Just("payload".to_string()),
                        Just("authorization".to_string()),
                        Just("permit2Authorization".to_string()),
                        Just("transaction".to_string()),
                        Just("accepted".to_string()),
                        Just("extensions".to_string()),
                        Just("extra".to_string()),
                        "[a-zA-Z]{1,12}",
                    ],
                    inner
                ),
                0..6
            )
            .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// Replaces the value at a random path of a valid body, so normalise gets deep into its
/// checks rather than stopping at the first 400.
fn mutate(mut body: Value, choice: usize, replacement: Value) -> Value {
    let mut pointers = Vec::new();
    let mut stack = vec![(String::new(), &body)];
    while let Some((ptr, v)) = stack.pop() {
        pointers.push(ptr.clone());
        if let Value::Object(map) = v {
            for (k, child) in map {
                stack.push((format!("{ptr}/{k}"), child));
            }
        }
    }
    let target = pointers[choice % pointers.len()].clone();
    if let Some(slot) = body.pointer_mut(&target) {
        *slot = replacement;
    }
    body
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(raw in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(req) = FacilitatorRequest::decode(Bytes::from(raw)) {
            let _ = normalise(&req);
            let _ = req.response_network();
        }
    }

    #[test]
    fn arbitrary_json_never_panics(v in arb_json()) {
        let raw = serde_json::to_vec(&v).unwrap();
        if let Ok(req) = FacilitatorRequest::decode(Bytes::from(raw)) {
            let _ = normalise(&req);
        }
        let wrapped = json!({"x402Version": 2, "paymentPayload": v.clone(), "paymentRequirements": v});
        if let Ok(req) = decode(&wrapped) {
            let _ = normalise(&req);
        }
    }

    #[test]
    fn mutated_spec_bodies_never_panic(
        which in 0usize..3,
        choice in any::<usize>(),
        replacement in arb_json(),
    ) {
        let base = match which {
            0 => v1_body(),
            1 => v2_body(),
            _ => svm_body(&encode_base64(&[&[2u8][..], &[0u8; 64], &[3u8; 64]].concat())),
        };
        let body = mutate(base, choice, replacement);
        if let Ok(req) = decode(&body) {
            let _ = normalise(&req);
            let _ = req.response_network();
        }
    }

    #[test]
    fn arbitrary_header_strings_never_panic(s in ".{0,300}") {
        let _ = decode_header_json(&s);
    }
}
