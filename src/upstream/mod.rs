//! The client Gatehouse uses to talk to the upstream x402 facilitator.
//!
//! It owns the wire to the upstream and nothing else: it forwards `/verify` and `/settle`
//! bodies byte for byte, fetches and caches `/supported`, relays `/discovery/resources`, and
//! classifies every failure so the caller can tell a definite "not sent" (connect failure)
//! from an unknown outcome (timeout, 5xx, a connection lost after the request went out), which
//! for `/settle` means the payment may have landed (`settlement_pending`, spec §6.2, §6.3).
//!
//! It must not decide anything: a 4xx JSON answer is handed back as it is, and policy about
//! what an answer means lives in the pipeline. Every call has an explicit timeout and every
//! response body a size cap (STYLE 14); redirects are never followed, so a configured
//! credential cannot be sent to another host.

mod client;
mod config;
mod error;

pub use client::{MAX_RESPONSE_BYTES, SUPPORTED_MAX_ATTEMPTS, Upstream, UpstreamAnswer};
pub use config::{Credential, UpstreamConfig};
pub use error::{Endpoint, UpstreamError};
