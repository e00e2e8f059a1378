//! EVM verification cost against a real anvil: RPC round trips per verify (cold, then steady
//! state) and the latency of the full on-chain check (signature, batched simulation, balance,
//! authorizationState, name/version), for distinct signed payments checked one after another.
//! Usage: `cargo run --release --example evm_verify_bench -- [PAYMENTS]` (anvil from
//! scripts/install-anvil.sh).

#[path = "../tests/common/anvil.rs"]
mod anvil;

use std::collections::BTreeMap;

use alloy::primitives::{Address, B256, U256, address};
use gatehouse::chain::evm::EvmChecker;
use gatehouse::chain::evm::abi::TransferWithAuthorization;
use gatehouse::chain::evm::signature;
use gatehouse::chain::{ChainChecker, ChainConfig};
use gatehouse::protocol::network::Network;
use gatehouse::protocol::payment::{
    AtomicAmount, Authorization, Fingerprint, Payment, PaymentExtra, X402Version,
};
use gatehouse::verdict::{Gate, Outcome};

const PAY_TO: Address = address!("209693Bc6afc0C5328bA36FaF03C514EF312287C");

fn payment(anvil: &anvil::Anvil, now: u64, i: u64) -> Payment {
    let key = anvil::signer(0);
    let from = key.address();
    let nonce = B256::from(U256::from(now) << 64 | U256::from(i));
    let message = TransferWithAuthorization {
        from,
        to: PAY_TO,
        value: U256::from(10_000u64),
        validAfter: U256::from(now - 600),
        validBefore: U256::from(now + 60),
        nonce,
    };
    let digest = signature::digest(
        &message,
        &signature::domain("USDC", "2", anvil::CHAIN_ID, anvil.usdc),
    );
    Payment {
        version: X402Version::V2,
        network: Network::resolve("eip155:31337").expect("network"),
        scheme: "exact".into(),
        asset: format!("{:#x}", anvil.usdc),
        amount: AtomicAmount(U256::from(10_000u64)),
        decimals: Some(6),
        payer: Some(format!("{from:#x}")),
        pay_to: format!("{PAY_TO:#x}"),
        resource: Some("https://seller.example/resource".into()),
        max_timeout_secs: 60,
        extra: PaymentExtra {
            eip712_name: Some("USDC".into()),
            eip712_version: Some("2".into()),
            ..Default::default()
        },
        accepted_mismatches: vec![],
        authorization: Authorization::Eip3009 {
            from,
            to: PAY_TO,
            value: AtomicAmount(U256::from(10_000u64)),
            valid_after_secs: now - 600,
            valid_before_secs: now + 60,
            nonce,
            signature: anvil::sign_digest(&key, digest),
        },
        fingerprint: Fingerprint(format!("evm:31337:{:#x}:{from:#x}:{nonce}", anvil.usdc)),
        payment_identifier: None,
    }
}

#[tokio::main]
async fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(500);
    let anvil = anvil::Anvil::start().await;
    let chains = BTreeMap::from([(
        "eip155:31337".to_owned(),
        ChainConfig {
            rpc_urls: vec![anvil.url.clone()],
            multicall3: Some(true),
            ..ChainConfig::default()
        },
    )]);
    let checker = EvmChecker::new(&chains).expect("checker");
    let now = anvil.block_time().await;
    let mut latencies_us = Vec::with_capacity(n as usize);
    let mut cold_round_trips = 0;
    for i in 0..n {
        let p = payment(&anvil, now, i);
        let before = checker.rpc_round_trips();
        let started = tokio::time::Instant::now();
        let verdict = checker.check(&p, Gate::Verify, now).await.expect("rpc");
        latencies_us.push(started.elapsed().as_micros() as u64);
        assert_eq!(verdict.outcome, Outcome::Allow, "{verdict:?}");
        if i == 0 {
            cold_round_trips = checker.rpc_round_trips() - before;
        }
    }
    let steady = (checker.rpc_round_trips() - cold_round_trips) as f64 / (n - 1).max(1) as f64;
    latencies_us.sort_unstable();
    let pct = |p: f64| latencies_us[((latencies_us.len() - 1) as f64 * p) as usize] as f64 / 1000.0;
    println!("EVM EIP-3009 verify against anvil, {n} distinct payments, sequential");
    println!("| RPC round trips, first check (cold caches) | {cold_round_trips} |");
    println!("| RPC round trips per check, steady state | {steady:.2} |");
    println!(
        "| check latency p50 / p99 (ms) | {:.2} / {:.2} |",
        pct(0.5),
        pct(0.99)
    );
}
