//! Helpers shared by the integration tests: payment fixtures, a Gatehouse booted through the
//! same `start()` as `main`, and a test upstream that records what it was sent.
#![allow(dead_code)]

pub mod admin;
pub mod store;
pub mod test_upstream;

pub use store::TestDb;

use std::sync::Arc;

use gatehouse::chain::ChainConfig;
use gatehouse::clock::{ManualClock, SharedClock, SystemClock};
use gatehouse::config::{Config, Secret};
use gatehouse::server::Running;
use serde_json::{Value, json};

/// The network the API tests use; configured with `onchain_checks = false` so these tests
/// exercise the pipeline without a chain (the EVM tests cover the chain step against anvil).
pub const TEST_NETWORK: &str = "eip155:84532";
/// The spec's v1 example payer.
pub const PAYER: &str = "0x857b06519e91e3a54538791bdbb0e22373e36b66";
/// The spec's v1 example recipient.
pub const PAY_TO: &str = "0x209693bc6afc0c5328ba36faf03c514ef312287c";
/// Base Sepolia USDC.
pub const ASSET: &str = "0x036cbd53842c5426634e7929541ec2318f3dcf7e";

/// A fresh random 32-byte nonce, hex.
pub fn nonce() -> String {
    let a = uuid::Uuid::new_v4().simple().to_string();
    let b = uuid::Uuid::new_v4().simple().to_string();
    format!("0x{a}{b}")
}

fn authorization(nonce: &str, value: &str) -> Value {
    json!({
        "from": PAYER,
        "to": PAY_TO,
        "value": value,
        "validAfter": "1740672089",
        "validBefore": "4102444800",
        "nonce": nonce,
    })
}

const SIGNATURE: &str = "0x2d6a7588d6acca505cbf0d9a4a227e0c52c6c34008c8e8986a1283259764173608a2ce6496642e377d6da8dbbf5836e9bd15092f9ecab05ded3d6293af148b571c";

/// A v2 `/verify`/`/settle` body for an EIP-3009 payment, with an unknown field in each
/// object so lossless forwarding can be checked.
pub fn v2_body(nonce: &str) -> Value {
    let requirements = json!({
        "scheme": "exact",
        "network": TEST_NETWORK,
        "amount": "10000",
        "asset": ASSET,
        "payTo": PAY_TO,
        "maxTimeoutSeconds": 60,
        "extra": {"name": "USDC", "version": "2"},
        "vendorHint": {"keep": "me"}
    });
    json!({
        "x402Version": 2,
        "paymentPayload": {
            "x402Version": 2,
            "resource": {"url": "https://api.example.com/premium", "description": "premium", "mimeType": "application/json"},
            "accepted": requirements,
            "payload": {"signature": SIGNATURE, "authorization": authorization(nonce, "10000")},
            "extensions": {},
            "clientExtra": 7
        },
        "paymentRequirements": requirements,
        "topLevelExtra": true
    })
}

/// The same as [`v2_body`] with a `payment-identifier` extension.
pub fn v2_body_with_id(nonce: &str, id: &str) -> Value {
    let mut body = v2_body(nonce);
    body["paymentPayload"]["extensions"] =
        json!({"payment-identifier": {"info": {"id": id}, "schema": {}}});
    body
}

/// A v1 body (legacy network name, `maxAmountRequired`).
pub fn v1_body(nonce: &str) -> Value {
    json!({
        "x402Version": 1,
        "paymentPayload": {
            "x402Version": 1,
            "scheme": "exact",
            "network": "base-sepolia",
            "payload": {"signature": SIGNATURE, "authorization": authorization(nonce, "10000")}
        },
        "paymentRequirements": {
            "scheme": "exact",
            "network": "base-sepolia",
            "maxAmountRequired": "10000",
            "resource": "https://api.example.com/premium",
            "description": "premium",
            "mimeType": "application/json",
            "payTo": PAY_TO,
            "maxTimeoutSeconds": 60,
            "asset": ASSET,
            "extra": {"name": "USDC", "version": "2"}
        }
    })
}

/// A configuration for tests: port 0, the given database and upstream, the test network
/// unchecked on-chain.
pub fn test_config(database_url: &str, upstream_url: &str) -> Config {
    let mut config = Config {
        listen: "127.0.0.1:0".into(),
        database_url: Secret(database_url.to_owned()),
        ..Config::default()
    };
    config.upstream.url = upstream_url.to_owned();
    config.upstream.verify_timeout_ms = 2_000;
    config.upstream.settle_timeout_ms = 2_000;
    config.request_timeout_ms = 10_000;
    // The default rule pack (risk-rules/) would score these fixtures' repeated payments from one
    // payer; tests that exercise risk scoring name their own rules.
    config.risk.rules_dir = "tests/no-risk-rules".into();
    config.chains.insert(
        TEST_NETWORK.to_owned(),
        ChainConfig {
            onchain_checks: false,
            ..ChainConfig::default()
        },
    );
    config
}

/// Boots Gatehouse on a random port.
pub async fn start(config: Config) -> Running {
    gatehouse::server::start(config)
        .await
        .expect("gatehouse starts")
}

/// Boots Gatehouse with a manual clock.
pub async fn start_at(config: Config, now_ms: u64) -> (Running, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::at_ms(now_ms));
    let shared: SharedClock = clock.clone();
    let running = gatehouse::server::start_with_clock(config, shared)
        .await
        .expect("gatehouse starts");
    (running, clock)
}

/// The system clock, shared.
pub fn system_clock() -> SharedClock {
    Arc::new(SystemClock)
}

/// POSTs JSON and returns (status, JSON body, headers).
pub async fn post_json(url: &str, body: &Value) -> (u16, Value, reqwest::header::HeaderMap) {
    post_raw(url, serde_json::to_vec(body).expect("serialise")).await
}

/// POSTs raw bytes as JSON.
pub async fn post_raw(url: &str, body: Vec<u8>) -> (u16, Value, reqwest::header::HeaderMap) {
    let response = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("request sent");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.expect("body");
    let json = serde_json::from_str(&text).unwrap_or_else(|_| json!({"non_json": text}));
    (status, json, headers)
}
