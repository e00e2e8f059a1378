//! x402 v1/v2 wire types, network ids, header codecs and normalisation into [`Payment`].
//! No I/O lives here (no tokio, reqwest or sqlx).

pub mod network;
pub mod payment;

pub use network::{Caip2, ChainFamily, Network};
pub use payment::{AtomicAmount, Authorization, Fingerprint, Payment, PaymentExtra, X402Version};
