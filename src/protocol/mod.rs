//! x402 v1/v2 wire types, network ids, header codecs and normalisation into [`Payment`].
//! No I/O lives here (no tokio, reqwest or sqlx).
//!
//! The flow: [`FacilitatorRequest::decode`] (malformed → HTTP 400 [`DecodeError`]), then
//! [`normalise`] (business refusal → HTTP 200 with a [`crate::verdict::Reason`]), then the
//! pipeline works on [`Payment`] alone. Answers go out as [`VerifyResponse`] /
//! [`SettleResponse`] / [`SupportedResponse`].

pub mod codec;
pub mod extensions;
pub mod network;
pub mod normalise;
pub mod payment;
pub mod request;
pub mod response;

pub use codec::{CodecError, decode_base64_strict, decode_header_json, encode_base64};
pub use extensions::payment_identifier;
pub use network::{Caip2, ChainFamily, Network};
pub use normalise::normalise;
pub use payment::{AtomicAmount, Authorization, Fingerprint, Payment, PaymentExtra, X402Version};
pub use request::{DecodeError, FacilitatorRequest, MAX_JSON_DEPTH};
pub use response::{SettleResponse, SupportedKind, SupportedResponse, VerifyResponse};
