//! Payment-payload extensions Gatehouse reads. `payment-identifier` (spec §6.3) is the
//! client's idempotency key: a retry with the same id gets the recorded answer.

use serde_json::Value;

use crate::verdict::{Reason, ReasonCode};

/// Shortest accepted `payment-identifier` id.
pub const PAYMENT_ID_MIN_LEN: usize = 16;
/// Longest accepted `payment-identifier` id.
pub const PAYMENT_ID_MAX_LEN: usize = 128;

const FIELD: &str = "paymentPayload.extensions.payment-identifier.info.id";

/// Reads `extensions["payment-identifier"].info.id` from a payment payload.
///
/// `Ok(None)` when the extension or its id is absent (the server may offer the extension
/// without the client filling it in); a present id must be 16–128 characters of
/// `[A-Za-z0-9_-]`, otherwise `invalid_payload` naming the field.
///
/// ```
/// use gatehouse::protocol::extensions::payment_identifier;
/// let p = serde_json::json!({"extensions": {"payment-identifier": {"info": {"id": "order_0123456789abcdef"}}}});
/// assert_eq!(payment_identifier(&p).unwrap().as_deref(), Some("order_0123456789abcdef"));
/// ```
pub fn payment_identifier(payload: &Value) -> Result<Option<String>, Reason> {
    let Some(id) = payload
        .get("extensions")
        .and_then(|e| e.get("payment-identifier"))
        .and_then(|e| e.get("info"))
        .and_then(|i| i.get("id"))
    else {
        return Ok(None);
    };
    let id = match id {
        Value::Null => return Ok(None),
        Value::String(s) => s,
        _ => {
            return Err(Reason::new(
                ReasonCode::InvalidPayload,
                format!("`{FIELD}` must be a string"),
            ));
        }
    };
    let len_ok = (PAYMENT_ID_MIN_LEN..=PAYMENT_ID_MAX_LEN).contains(&id.len());
    let chars_ok = id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if len_ok && chars_ok {
        Ok(Some(id.clone()))
    } else {
        Err(Reason::new(
            ReasonCode::InvalidPayload,
            format!(
                "`{FIELD}` must be {PAYMENT_ID_MIN_LEN}-{PAYMENT_ID_MAX_LEN} characters of [A-Za-z0-9_-]"
            ),
        ))
    }
}
