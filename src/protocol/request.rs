//! The `/verify` and `/settle` request body (spec §1.2): decoded once, raw bytes kept for
//! verbatim forwarding, version taken from `paymentPayload.x402Version`.
//!
//! Everything refused here is malformed input (HTTP 400). Business-level refusals
//! (unknown network, bad amounts, bad signatures) belong to [`crate::protocol::normalise`].

use bytes::Bytes;
use serde_json::{Map, Value};

use super::payment::X402Version;

/// Deepest nesting of arrays/objects accepted in a request body or header JSON. x402 bodies
/// need about 6; the limit keeps hostile input from exhausting the stack.
pub const MAX_JSON_DEPTH: usize = 32;

/// A malformed request (HTTP 400): a snake_case code, the dotted path of the offending field
/// when there is one, and a message for people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DecodeError {
    /// `invalid_json`, `too_deep`, `missing_field`, `invalid_field`, `unsupported_version`
    /// or `version_mismatch`.
    pub code: &'static str,
    /// Dotted path such as `paymentRequirements.payTo`.
    pub field: Option<String>,
    /// Detail for people.
    pub message: String,
}

impl DecodeError {
    fn new(code: &'static str, field: Option<&str>, message: impl Into<String>) -> Self {
        Self {
            code,
            field: field.map(str::to_owned),
            message: message.into(),
        }
    }

    fn missing(field: &str) -> Self {
        Self::new(
            "missing_field",
            Some(field),
            format!("`{field}` is required"),
        )
    }

    fn invalid(field: &str, expected: &str) -> Self {
        Self::new(
            "invalid_field",
            Some(field),
            format!("`{field}` must be {expected}"),
        )
    }
}

/// A decoded facilitator request. Only shape is checked; see [`crate::protocol::normalise`].
#[derive(Debug, Clone)]
pub struct FacilitatorRequest {
    /// The body exactly as received (forwarded verbatim upstream, kept in evidence).
    pub raw: Bytes,
    /// From `paymentPayload.x402Version`, which is what facilitators dispatch on (spec §1.2).
    pub version: X402Version,
    /// The whole parsed body, key order preserved.
    pub body: Value,
}

static NULL: Value = Value::Null;

impl FacilitatorRequest {
    /// Decodes and shape-checks a request body.
    ///
    /// Refuses (all HTTP 400): bodies that are not a JSON object, nesting deeper than
    /// [`MAX_JSON_DEPTH`], a missing or non-object `paymentPayload` / `paymentRequirements`,
    /// a `paymentPayload.x402Version` other than 1 or 2, a top-level `x402Version` that
    /// disagrees with it, and requirements without string `scheme`, `network`, `payTo`,
    /// `asset` and amount (`amount` in v2, `maxAmountRequired` in v1).
    pub fn decode(raw: Bytes) -> Result<Self, DecodeError> {
        let body = parse_json_bounded(&raw)?;
        let Value::Object(top) = &body else {
            return Err(DecodeError::new(
                "invalid_json",
                None,
                "request body must be a JSON object",
            ));
        };
        let payload = object_field(top, "paymentPayload", "paymentPayload")?;
        let requirements = object_field(top, "paymentRequirements", "paymentRequirements")?;

        let version = match payload.get("x402Version").and_then(Value::as_u64) {
            Some(1) => X402Version::V1,
            Some(2) => X402Version::V2,
            _ => {
                return Err(DecodeError::new(
                    "unsupported_version",
                    Some("paymentPayload.x402Version"),
                    "`paymentPayload.x402Version` must be the integer 1 or 2",
                ));
            }
        };
        // The top-level field is informational (clients copy it from the payload), but a
        // disagreement means a confused or tampering caller: refuse rather than guess.
        match top.get("x402Version") {
            None | Some(Value::Null) => {}
            Some(v) if v.as_u64() == Some(u64::from(version.number())) => {}
            Some(_) => {
                return Err(DecodeError::new(
                    "version_mismatch",
                    Some("x402Version"),
                    format!(
                        "`x402Version` differs from `paymentPayload.x402Version` ({})",
                        version.number()
                    ),
                ));
            }
        }

        let amount_key = match version {
            X402Version::V1 => "maxAmountRequired",
            X402Version::V2 => "amount",
        };
        for key in ["scheme", "network", "payTo", "asset", amount_key] {
            let path = format!("paymentRequirements.{key}");
            match requirements.get(key) {
                None | Some(Value::Null) => return Err(DecodeError::missing(&path)),
                Some(Value::String(_)) => {}
                Some(_) => return Err(DecodeError::invalid(&path, "a string")),
            }
        }

        Ok(Self { raw, version, body })
    }

    /// `paymentPayload` (an object; checked by [`FacilitatorRequest::decode`]).
    pub fn payment_payload(&self) -> &Value {
        self.body.get("paymentPayload").unwrap_or(&NULL)
    }

    /// `paymentRequirements` (an object; checked by [`FacilitatorRequest::decode`]).
    pub fn payment_requirements(&self) -> &Value {
        self.body.get("paymentRequirements").unwrap_or(&NULL)
    }

    /// The network to echo in settle responses: v2 `paymentPayload.accepted.network`, v1
    /// `paymentPayload.network` (what the TS facilitator echoes, spec §1.4), else
    /// `paymentRequirements.network`.
    pub fn response_network(&self) -> &str {
        let payload = self.payment_payload();
        let from_payload = match self.version {
            X402Version::V2 => payload.get("accepted").and_then(|a| a.get("network")),
            X402Version::V1 => payload.get("network"),
        };
        from_payload
            .and_then(Value::as_str)
            .or_else(|| {
                self.payment_requirements()
                    .get("network")
                    .and_then(Value::as_str)
            })
            .unwrap_or("")
    }
}

fn object_field<'a>(
    top: &'a Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<&'a Map<String, Value>, DecodeError> {
    match top.get(key) {
        None | Some(Value::Null) => Err(DecodeError::missing(path)),
        Some(Value::Object(map)) => Ok(map),
        Some(_) => Err(DecodeError::invalid(path, "an object")),
    }
}

/// Parses JSON after checking its nesting depth with a flat byte scan, so hostile input
/// (say 100 000 `[`) is refused before any recursive parser or destructor sees it.
pub(crate) fn parse_json_bounded(raw: &[u8]) -> Result<Value, DecodeError> {
    if let Some(depth) = exceeds_depth(raw, MAX_JSON_DEPTH) {
        return Err(DecodeError::new(
            "too_deep",
            None,
            format!("JSON nesting exceeds {MAX_JSON_DEPTH} levels (reached {depth})"),
        ));
    }
    serde_json::from_slice(raw)
        .map_err(|e| DecodeError::new("invalid_json", None, format!("invalid JSON: {e}")))
}

/// Returns the depth reached when `[`/`{` outside strings nest deeper than `max`.
/// A linear scan with no recursion; malformed JSON is left for the parser to reject.
fn exceeds_depth(raw: &[u8], max: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in raw {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return Some(depth);
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_scan_ignores_brackets_inside_strings() {
        let inside = format!("{{\"a\":\"{}\"}}", "[".repeat(100));
        assert_eq!(exceeds_depth(inside.as_bytes(), 32), None);
        let escaped = format!("{{\"a\":\"\\\"{}\"}}", "[".repeat(100));
        assert_eq!(exceeds_depth(escaped.as_bytes(), 32), None);
        let deep = format!("{}{}", "[".repeat(33), "]".repeat(33));
        assert_eq!(exceeds_depth(deep.as_bytes(), 32), Some(33));
        let edge = format!("{}{}", "[".repeat(32), "]".repeat(32));
        assert_eq!(exceeds_depth(edge.as_bytes(), 32), None);
    }
}
