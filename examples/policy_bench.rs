//! Policy evaluation cost per payment with many configured endpoints.
//!
//! ```text
//! cargo run --release --example policy_bench [ENDPOINTS] [ITERATIONS]
//! ```
//!
//! Builds a policy with ENDPOINTS (default 10,000) endpoint rules (plus payee and payer
//! rules and global caps), then times, per payment:
//! * `plan`: the in-memory evaluation (scopes, lists, assets, networks, per-request maximum,
//!   the caps to reserve) — what grows with the number of endpoints;
//! * `check`: the whole policy step against an embedded SQLite store (pin, reservation,
//!   duplicate window), each payment a fresh fingerprint — store round-trips included.
//!
//! Prints the median and p99 of each.

use std::sync::Arc;

use bytes::Bytes;
use gatehouse::policy::{Atomic, Policy, PolicyConfig, Rule};
use gatehouse::protocol::{FacilitatorRequest, Payment, normalise};
use serde_json::json;
use tokio::time::Instant;

const PAYER: &str = "0x857b06519e91e3a54538791bdbb0e22373e36b66";
const PAY_TO: &str = "0x209693bc6afc0c5328ba36faf03c514ef312287c";
const ASSET: &str = "0x036cbd53842c5426634e7929541ec2318f3dcf7e";

fn payment(host: &str, nonce: u64) -> Payment {
    let requirements = json!({
        "scheme": "exact", "network": "eip155:84532", "amount": "10000", "asset": ASSET,
        "payTo": PAY_TO, "maxTimeoutSeconds": 60, "extra": {"name": "USDC", "version": "2"}
    });
    let body = json!({
        "x402Version": 2,
        "paymentPayload": {
            "x402Version": 2,
            "resource": {"url": format!("https://{host}/api/v1/data"), "description": "", "mimeType": "application/json"},
            "accepted": requirements,
            "payload": {"signature": format!("0x{}", "11".repeat(65)), "authorization": {
                "from": PAYER, "to": PAY_TO, "value": "10000", "validAfter": "0",
                "validBefore": "4102444800", "nonce": format!("0x{nonce:064x}")
            }}
        },
        "paymentRequirements": requirements
    });
    let request = FacilitatorRequest::decode(Bytes::from(body.to_string())).expect("decodes");
    normalise(&request).expect("normalises")
}

fn config(endpoints: usize) -> PolicyConfig {
    let rules = (0..endpoints)
        .map(|i| Rule {
            host: Some(format!("api{i}.example.com")),
            path_prefix: (i % 2 == 0).then(|| "/api".to_owned()),
            max_per_request: Some(Atomic(1_000_000)),
            daily_cap: Some(Atomic(1_000_000_000_000)),
            requests_per_minute: Some(1_000_000),
            ..Rule::default()
        })
        .collect();
    PolicyConfig {
        global: Rule {
            max_per_request: Some(Atomic(5_000_000)),
            daily_cap: Some(Atomic(1_000_000_000_000)),
            block_recipients: vec!["0x1111111111111111111111111111111111111111".into()],
            allowed_networks: vec!["eip155:84532".into()],
            ..Rule::default()
        },
        endpoints: rules,
        payees: (0..100)
            .map(|i| Rule {
                pay_to: Some(format!("0x{i:040x}")),
                daily_cap: Some(Atomic(1_000_000)),
                ..Rule::default()
            })
            .collect(),
        payers: vec![Rule {
            payer: Some(PAYER.into()),
            hourly_cap: Some(Atomic(1_000_000_000_000)),
            ..Rule::default()
        }],
        ..PolicyConfig::default()
    }
}

fn report(name: &str, mut samples_ns: Vec<u128>) {
    samples_ns.sort_unstable();
    let at = |q: f64| samples_ns[((samples_ns.len() as f64 - 1.0) * q) as usize];
    println!(
        "{name:>6}: n={} median={:.2} µs p99={:.2} µs max={:.2} µs",
        samples_ns.len(),
        at(0.5) as f64 / 1000.0,
        at(0.99) as f64 / 1000.0,
        at(1.0) as f64 / 1000.0
    );
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let endpoints: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let iterations: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(20_000);

    let started = Instant::now();
    let policy = Policy::new(config(endpoints));
    println!(
        "{endpoints} endpoints: policy built (indexes included) in {:?}",
        started.elapsed()
    );
    let now_ms = 1_795_820_400_000;
    // The matched endpoint sits in the middle of the list (a linear scan would pay half).
    let host = format!("api{}.example.com", endpoints / 2);

    let payments: Vec<Payment> = (0..iterations).map(|n| payment(&host, n)).collect();
    let mut plan_ns = Vec::with_capacity(payments.len());
    for p in &payments {
        let t = Instant::now();
        let plan = policy.plan(p, now_ms).expect("allowed");
        plan_ns.push(t.elapsed().as_nanos());
        assert!(plan.counters.len() >= 4);
    }
    report("plan", plan_ns);

    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let store = gatehouse::store::connect(&url).await.expect("store");
    let store: Arc<dyn gatehouse::store::Store> = store;
    let checks = iterations.min(2_000) as usize;
    let mut check_ns = Vec::with_capacity(checks);
    for p in payments.iter().take(checks) {
        let t = Instant::now();
        let decision = policy
            .check(&*store, p, None, "bench", now_ms)
            .await
            .expect("store answers");
        check_ns.push(t.elapsed().as_nanos());
        assert!(decision.verdict.reasons.is_empty(), "{decision:?}");
    }
    report("check", check_ns);
}
