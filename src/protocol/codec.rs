//! Header codecs (spec §2.3): strict standard base64 (`A–Z a–z 0–9 + /`, `=` padding) of
//! UTF-8 JSON, as carried by `X-PAYMENT`, `PAYMENT-SIGNATURE` and `PAYMENT-RESPONSE`, and the
//! same base64 used for Solana `payload.transaction`.

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde_json::Value;

use super::request::parse_json_bounded;

/// Largest base64 header value accepted by [`decode_header_json`], in bytes. Real payment
/// headers are 1–3 KiB; a Solana transaction is at most 1232 bytes before encoding.
pub const MAX_HEADER_BASE64_LEN: usize = 64 * 1024;

/// Standard alphabet, padding written and required, no stray trailing bits: one spelling per
/// byte string, so two encodings of one payment cannot look different.
const STRICT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(true)
        .with_decode_padding_mode(DecodePaddingMode::RequireCanonical)
        .with_decode_allow_trailing_bits(false),
);

/// Why a header value or base64 string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// Longer than [`MAX_HEADER_BASE64_LEN`].
    #[error("value is {len} bytes, above the {max}-byte limit")]
    TooLong {
        /// Length received.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Not strict standard base64 (URL-safe characters, whitespace, bad padding).
    #[error("not standard padded base64: {0}")]
    Base64(String),
    /// The decoded bytes are not UTF-8.
    #[error("decoded bytes are not UTF-8")]
    Utf8,
    /// The decoded text is not JSON, or nests too deep.
    #[error("decoded text is not acceptable JSON: {0}")]
    Json(String),
}

/// Decodes strict standard base64: alphabet `A–Z a–z 0–9 + /`, canonical `=` padding; refuses
/// URL-safe characters, whitespace and missing padding.
///
/// ```
/// use gatehouse::protocol::codec::{decode_base64_strict, encode_base64};
/// assert_eq!(decode_base64_strict(&encode_base64(b"x402")).unwrap(), b"x402");
/// assert!(decode_base64_strict("-_8=").is_err());
/// ```
pub fn decode_base64_strict(s: &str) -> Result<Vec<u8>, CodecError> {
    STRICT
        .decode(s)
        .map_err(|e| CodecError::Base64(e.to_string()))
}

/// Encodes standard padded base64.
pub fn encode_base64(bytes: &[u8]) -> String {
    STRICT.encode(bytes)
}

/// Decodes a base64 JSON header (`X-PAYMENT`, `PAYMENT-SIGNATURE`, `PAYMENT-RESPONSE`),
/// refusing values above [`MAX_HEADER_BASE64_LEN`] and JSON nested deeper than
/// [`crate::protocol::request::MAX_JSON_DEPTH`].
pub fn decode_header_json(s: &str) -> Result<Value, CodecError> {
    if s.len() > MAX_HEADER_BASE64_LEN {
        return Err(CodecError::TooLong {
            len: s.len(),
            max: MAX_HEADER_BASE64_LEN,
        });
    }
    let bytes = decode_base64_strict(s)?;
    let text = std::str::from_utf8(&bytes).map_err(|_| CodecError::Utf8)?;
    parse_json_bounded(text.as_bytes()).map_err(|e| CodecError::Json(e.message))
}
