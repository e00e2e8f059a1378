//! Risk sessions (`POST /risk/session`, `GET /risk/nonce`): who the paying agent is and which
//! wallet it pays from, optionally proven by a signature over a server nonce. Field names
//! follow t54's x402-secure (`agent_did`, `wallet_address`, `app_id`, `device`,
//! `agent_endpoint` → `{sid, expires_at}`), so its SDK works by changing a URL. Gatehouse adds
//! `wallet_proof` and `budget`, both optional.
//!
//! This module parses and verifies; it stores nothing itself and never decides a payment.

use alloy::primitives::{Address, eip191_hash_message};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::chain::evm::signature::EoaSignature;
use crate::server::error::ApiError;
use crate::store::risk::SessionRow;

/// Longest accepted id-like string (agent DID, app id, nonce).
pub const MAX_ID_LEN: usize = 512;
/// Longest accepted `device` / `budget` JSON, bytes.
pub const MAX_DEVICE_BYTES: usize = 4096;

/// The text a wallet signs to prove ownership (EIP-191 `personal_sign` on EVM, a plain ed25519
/// signature over these bytes on Solana).
pub fn proof_message(wallet: &str, nonce: &str) -> String {
    format!("Gatehouse risk session\nwallet: {wallet}\nnonce: {nonce}")
}

/// A wallet address, normalised.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "chain", content = "address", rename_all = "lowercase")]
pub enum Wallet {
    /// `0x` + 40 hex, stored lowercase.
    Evm(String),
    /// Base58 of a 32-byte ed25519 public key.
    Solana(String),
}

impl Wallet {
    /// Parses an EVM or Solana address.
    pub fn parse(text: &str) -> Option<Wallet> {
        if let Some(hex_part) = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
            let ok = hex_part.len() == 40 && hex_part.bytes().all(|b| b.is_ascii_hexdigit());
            return ok.then(|| Wallet::Evm(text.to_ascii_lowercase()));
        }
        let bytes = bs58::decode(text).into_vec().ok()?;
        (bytes.len() == 32).then(|| Wallet::Solana(text.to_owned()))
    }

    /// The normalised address.
    pub fn as_str(&self) -> &str {
        match self {
            Wallet::Evm(a) | Wallet::Solana(a) => a,
        }
    }

    /// Verifies `signature` over [`proof_message`] for this wallet.
    pub fn verify_proof(&self, nonce: &str, signature: &str) -> bool {
        let message = proof_message(self.as_str(), nonce);
        match self {
            Wallet::Evm(address) => {
                let Some(bytes) = decode_hex(signature) else {
                    return false;
                };
                let Ok(sig) = EoaSignature::parse(&bytes) else {
                    return false;
                };
                let digest = eip191_hash_message(message.as_bytes());
                let Ok(expected) = address.parse::<Address>() else {
                    return false;
                };
                sig.recover(&digest).is_ok_and(|a| a == expected)
            }
            Wallet::Solana(address) => {
                let Ok(key) = bs58::decode(address).into_vec() else {
                    return false;
                };
                let Ok(key) = <[u8; 32]>::try_from(key.as_slice()) else {
                    return false;
                };
                let Ok(key) = ed25519_dalek::VerifyingKey::from_bytes(&key) else {
                    return false;
                };
                let sig = bs58::decode(signature)
                    .into_vec()
                    .ok()
                    .filter(|b| b.len() == 64)
                    .or_else(|| decode_hex(signature).filter(|b| b.len() == 64))
                    .or_else(|| decode_b64(signature).filter(|b| b.len() == 64));
                let Some(sig) = sig.and_then(|b| <[u8; 64]>::try_from(b.as_slice()).ok()) else {
                    return false;
                };
                key.verify_strict(
                    message.as_bytes(),
                    &ed25519_dalek::Signature::from_bytes(&sig),
                )
                .is_ok()
            }
        }
    }
}

pub(crate) fn decode_hex(text: &str) -> Option<Vec<u8>> {
    hex::decode(text.strip_prefix("0x").unwrap_or(text)).ok()
}

pub(crate) fn decode_b64(text: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let e = base64::engine::general_purpose::STANDARD;
    let u = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    e.decode(text)
        .ok()
        .or_else(|| u.decode(text.trim_end_matches('=')).ok())
}

/// A per-session budget the buyer declares (atomic units of one asset).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionBudgetDecl {
    /// Atomic amount, decimal string.
    pub amount: String,
    /// Token address or mint.
    pub asset: String,
}

/// A validated `POST /risk/session` body.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionRequest {
    /// `agent_did` (or `agent_id`).
    pub agent_id: String,
    /// `wallet_address` (or the agent DID when it is itself an address).
    pub wallet: Wallet,
    /// `app_id`.
    pub app_id: Option<String>,
    /// `device`, as sent.
    pub device: Option<Value>,
    /// `agent_endpoint`.
    pub agent_endpoint: Option<String>,
    /// `wallet_proof: {nonce, signature}`.
    pub proof: Option<(String, String)>,
    /// `budget: {amount, asset}`.
    pub budget: Option<SessionBudgetDecl>,
}

pub(crate) fn bad(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::BadRequest {
        code: "invalid_risk_request",
        field: Some(field.to_owned()),
        message: message.into(),
    }
}

/// An optional string field: absent or null is `None`; anything else must be a string of at
/// most `max` bytes.
pub(crate) fn opt_str(
    body: &Value,
    field: &str,
    path: &str,
    max: usize,
) -> Result<Option<String>, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.len() <= max => Ok(Some(s.clone())),
        Some(Value::String(_)) => Err(bad(path, format!("must be at most {max} bytes"))),
        Some(_) => Err(bad(path, "must be a string")),
    }
}

impl SessionRequest {
    /// Validates a body, naming the first field at fault.
    pub fn parse(body: &Value) -> Result<SessionRequest, ApiError> {
        if !body.is_object() {
            return Err(bad("$", "the body must be a JSON object"));
        }
        let agent_id = match opt_str(body, "agent_did", "agent_did", MAX_ID_LEN)? {
            Some(id) => Some(id),
            None => opt_str(body, "agent_id", "agent_id", MAX_ID_LEN)?,
        }
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| {
            bad(
                "agent_did",
                "is required (the agent's DID or wallet address)",
            )
        })?;
        let wallet_text = opt_str(body, "wallet_address", "wallet_address", MAX_ID_LEN)?;
        let wallet = match wallet_text {
            Some(text) => Wallet::parse(&text).ok_or_else(|| {
                bad(
                    "wallet_address",
                    "must be an EVM address (0x + 40 hex) or a Solana address (base58)",
                )
            })?,
            None => Wallet::parse(&agent_id).ok_or_else(|| {
                bad(
                    "wallet_address",
                    "is required when agent_did is not itself a wallet address",
                )
            })?,
        };
        let app_id = opt_str(body, "app_id", "app_id", MAX_ID_LEN)?;
        let agent_endpoint = opt_str(body, "agent_endpoint", "agent_endpoint", 2048)?;
        let device = match body.get("device") {
            None | Some(Value::Null) => None,
            Some(v @ (Value::Object(_) | Value::String(_))) => {
                if v.to_string().len() > MAX_DEVICE_BYTES {
                    return Err(bad(
                        "device",
                        format!("must be at most {MAX_DEVICE_BYTES} bytes"),
                    ));
                }
                Some(v.clone())
            }
            Some(_) => return Err(bad("device", "must be an object or a string")),
        };
        let proof = match body.get("wallet_proof") {
            None | Some(Value::Null) => None,
            Some(p @ Value::Object(_)) => {
                let nonce = opt_str(p, "nonce", "wallet_proof.nonce", MAX_ID_LEN)?
                    .ok_or_else(|| bad("wallet_proof.nonce", "is required"))?;
                let sig = opt_str(p, "signature", "wallet_proof.signature", 1024)?
                    .ok_or_else(|| bad("wallet_proof.signature", "is required"))?;
                Some((nonce, sig))
            }
            Some(_) => return Err(bad("wallet_proof", "must be an object {nonce, signature}")),
        };
        let budget = match body.get("budget") {
            None | Some(Value::Null) => None,
            Some(b @ Value::Object(_)) => {
                let amount = opt_str(b, "amount", "budget.amount", 78)?
                    .filter(|a| !a.is_empty() && a.bytes().all(|c| c.is_ascii_digit()))
                    .ok_or_else(|| {
                        bad("budget.amount", "must be atomic units as a decimal string")
                    })?;
                let asset = opt_str(b, "asset", "budget.asset", 128)?
                    .ok_or_else(|| bad("budget.asset", "is required"))?;
                Some(SessionBudgetDecl { amount, asset })
            }
            Some(_) => return Err(bad("budget", "must be an object {amount, asset}")),
        };
        Ok(SessionRequest {
            agent_id,
            wallet,
            app_id,
            device,
            agent_endpoint,
            proof,
            budget,
        })
    }

    /// The stored row (the optional parts kept as JSON).
    pub fn into_row(
        self,
        sid: String,
        wallet_proven: bool,
        now_ms: u64,
        ttl_ms: u64,
    ) -> SessionRow {
        let body = serde_json::json!({
            "app_id": self.app_id,
            "device": self.device,
            "agent_endpoint": self.agent_endpoint,
            "budget": self.budget,
        });
        SessionRow {
            sid,
            agent_id: self.agent_id,
            wallet: self.wallet.as_str().to_owned(),
            wallet_proven,
            body: body.to_string(),
            created_at_ms: now_ms,
            expires_at_ms: now_ms.saturating_add(ttl_ms),
        }
    }
}

/// The session's budget, as stored.
pub fn session_budget(row: &SessionRow) -> Option<SessionBudgetDecl> {
    let body: Value = serde_json::from_str(&row.body).ok()?;
    serde_json::from_value(body.get("budget")?.clone()).ok()
}

/// `SessionFacts` for a stored session and a payment's payer.
pub fn facts(row: &SessionRow, payer: Option<&str>, now_ms: u64) -> super::context::SessionFacts {
    let body: Value = serde_json::from_str(&row.body).unwrap_or(Value::Null);
    let text = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_owned);
    let device = match body.get("device") {
        Some(Value::String(s)) => Some(s.clone()),
        Some(v @ Value::Object(_)) => Some(v.to_string()),
        _ => None,
    };
    let payer_matches = payer.is_some_and(|p| {
        Wallet::parse(p).is_some_and(|w| w.as_str() == row.wallet) || p == row.wallet
    });
    super::context::SessionFacts {
        sid: row.sid.clone(),
        agent_id: row.agent_id.clone(),
        wallet: row.wallet.clone(),
        wallet_proven: row.wallet_proven,
        payer_matches,
        app_id: text("app_id"),
        device,
        agent_endpoint: text("agent_endpoint"),
        age_secs: now_ms.saturating_sub(row.created_at_ms) / 1000,
        expired: now_ms > row.expires_at_ms,
    }
}

/// A fresh UUID v4 string (session, trace, decision and review ids; x402-secure's headers
/// require UUID v1 or v4).
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Whether `text` is a UUID (the form sids and tids take).
pub fn is_uuid(text: &str) -> bool {
    uuid::Uuid::parse_str(text).is_ok()
}

/// Unix ms as ISO 8601 UTC (`2026-11-21T21:34:20.000Z`).
pub fn iso8601(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        ms % 1000
    )
}

/// Parses ISO 8601 / RFC 3339 (`YYYY-MM-DDTHH:MM:SS[.fff][Z|±HH:MM]`; no offset means UTC) to
/// unix ms.
pub fn parse_iso8601(text: &str) -> Option<u64> {
    let b = text.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || !(b[10] == b'T' || b[10] == b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> { text.get(r)?.parse::<i64>().ok() };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let mut rest = &text[19..];
    let mut frac_ms = 0i64;
    if let Some(r) = rest.strip_prefix('.') {
        let digits: String = r.chars().take_while(char::is_ascii_digit).collect();
        if digits.is_empty() {
            return None;
        }
        let padded = format!("{:0<3}", &digits[..digits.len().min(3)]);
        frac_ms = padded.parse().ok()?;
        rest = &r[digits.len()..];
    }
    let offset_secs = match rest {
        "" | "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let oh: i64 = rest.get(1..3)?.parse().ok()?;
            let om: i64 = rest.get(4..6)?.parse().ok()?;
            sign * (oh * 3600 + om * 60)
        }
    };
    let days = days_from_civil(y, mo, d);
    let secs = days * 86_400 + h * 3600 + mi * 60 + s - offset_secs;
    u64::try_from(secs * 1000 + frac_ms).ok()
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::signers::SignerSync;
    use alloy::signers::local::PrivateKeySigner;
    use ed25519_dalek::Signer as _;
    use serde_json::json;

    #[test]
    fn iso8601_round_trips() {
        let ms = 1_795_296_860_123;
        let text = iso8601(ms);
        assert_eq!(text, "2026-11-21T21:34:20.123Z");
        assert_eq!(parse_iso8601(&text), Some(ms));
        assert_eq!(
            parse_iso8601("2026-11-21T22:34:20.123+01:00"),
            Some(ms),
            "offsets are applied"
        );
        assert_eq!(parse_iso8601("2026-13-01T00:00:00Z"), None);
        assert_eq!(parse_iso8601("yesterday"), None);
    }

    #[test]
    fn sessions_name_the_bad_field() {
        let field = |body: Value| match SessionRequest::parse(&body) {
            Err(ApiError::BadRequest { field, .. }) => field.unwrap_or_default(),
            other => panic!("expected a 400, got {other:?}"),
        };
        assert_eq!(field(json!({})), "agent_did");
        assert_eq!(field(json!({"agent_did": 7})), "agent_did");
        assert_eq!(field(json!({"agent_did": "did:x:1"})), "wallet_address");
        assert_eq!(
            field(json!({"agent_did": "did:x:1", "wallet_address": "0x12"})),
            "wallet_address"
        );
        assert_eq!(
            field(json!({"agent_did": "0x857b06519e91e3a54538791bdbb0e22373e36b66", "device": 3})),
            "device"
        );
        assert_eq!(
            field(
                json!({"agent_did": "0x857b06519e91e3a54538791bdbb0e22373e36b66", "budget": {"amount": "1.5", "asset": "x"}})
            ),
            "budget.amount"
        );
        let ok = SessionRequest::parse(
            &json!({"agent_did": "0x857B06519E91E3A54538791BDBB0E22373E36B66", "app_id": null}),
        )
        .unwrap();
        assert_eq!(
            ok.wallet.as_str(),
            "0x857b06519e91e3a54538791bdbb0e22373e36b66"
        );
    }

    #[test]
    fn evm_and_solana_proofs_verify_and_forgeries_do_not() {
        let signer = PrivateKeySigner::random();
        let wallet = Wallet::parse(&format!("{:#x}", signer.address())).unwrap();
        let message = proof_message(wallet.as_str(), "n-1");
        let sig = signer.sign_message_sync(message.as_bytes()).unwrap();
        let sig_hex = format!("0x{}", hex::encode(sig.as_bytes()));
        assert!(wallet.verify_proof("n-1", &sig_hex));
        assert!(!wallet.verify_proof("n-2", &sig_hex), "another nonce");
        let other = Wallet::parse("0x857b06519e91e3a54538791bdbb0e22373e36b66").unwrap();
        assert!(!other.verify_proof("n-1", &sig_hex), "another wallet");

        let key = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
        let address = bs58::encode(key.verifying_key().as_bytes()).into_string();
        let wallet = Wallet::parse(&address).unwrap();
        let sig = key.sign(proof_message(&address, "n-1").as_bytes());
        let sig58 = bs58::encode(sig.to_bytes()).into_string();
        assert!(wallet.verify_proof("n-1", &sig58));
        assert!(!wallet.verify_proof("n-9", &sig58));
    }
}
