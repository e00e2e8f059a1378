//! Gatehouse: a drop-in x402 facilitator proxy that checks every payment on-chain, holds it
//! against spending policy, scores its risk, records evidence, and only then forwards it.
#![forbid(unsafe_code)]

pub mod admin;
pub mod chain;
pub mod clock;
pub mod config;
pub mod dashboard;
pub mod evidence;
pub mod metrics;
pub mod pipeline;
pub mod policy;
pub mod protocol;
pub mod reconcile;
pub mod risk;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod upstream;
pub mod verdict;
pub mod webhook;
