//! Gatehouse: a drop-in x402 facilitator proxy that checks every payment on-chain, holds it
//! against spending policy, scores its risk, records evidence, and only then forwards it.
#![forbid(unsafe_code)]

pub mod chain;
pub mod clock;
pub mod protocol;
pub mod upstream;
pub mod verdict;
