//! EVM verification cost against a real anvil: RPC round trips per verify (cold, then steady
//! state) and the latency of the full on-chain check (signature, batched simulation, balance,
//! authorizationState, name/version), for distinct signed payments checked one after another.
//! Usage: `cargo run --release --example evm_verify_bench -- [PAYMENTS]` (anvil from
//! scripts/install-anvil.sh).

#[path = "../tests/common/anvil.rs"]
mod anvil;

use std::collections::BTreeMap;

use gatehouse::chain::evm::EvmChecker;
use gatehouse::chain::{ChainChecker, ChainConfig};
use gatehouse::verdict::{Gate, Outcome};

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
        let p = anvil::Pay::new(&anvil, now, anvil::signer(0)).build();
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
