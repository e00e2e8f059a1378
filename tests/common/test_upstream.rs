//! A test upstream facilitator that records every body it receives and answers in the
//! reference facilitator's shapes. It judges nothing (the chain tests do that against anvil);
//! it lets the API tests see exactly what Gatehouse forwarded, and how often.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::{get, post};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;

/// What the upstream saw.
#[derive(Debug, Default)]
pub struct Recorded {
    /// Bodies of `/verify` calls, byte for byte.
    pub verify_bodies: Mutex<Vec<Bytes>>,
    /// Bodies of `/settle` calls, byte for byte.
    pub settle_bodies: Mutex<Vec<Bytes>>,
    /// Number of `/settle` calls.
    pub settle_calls: AtomicUsize,
    /// Number of `/verify` calls.
    pub verify_calls: AtomicUsize,
}

/// A running test upstream.
pub struct TestUpstream {
    /// Base URL.
    pub url: String,
    /// What it saw.
    pub recorded: Arc<Recorded>,
}

#[derive(Clone)]
struct UpstreamState {
    recorded: Arc<Recorded>,
    settle_delay: Duration,
}

/// Starts the upstream; `/settle` answers after `settle_delay` (to make concurrent calls overlap).
pub async fn start(settle_delay: Duration) -> TestUpstream {
    let recorded = Arc::new(Recorded::default());
    let state = UpstreamState {
        recorded: recorded.clone(),
        settle_delay,
    };
    let app = Router::new()
        .route("/verify", post(verify))
        .route("/settle", post(settle))
        .route("/supported", get(supported))
        .route("/discovery/resources", get(discovery))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    TestUpstream {
        url: format!("http://{addr}"),
        recorded,
    }
}

fn payer(body: &Value) -> Value {
    body["paymentPayload"]["payload"]["authorization"]["from"].clone()
}

async fn verify(State(s): State<UpstreamState>, raw: Bytes) -> Json<Value> {
    s.recorded.verify_calls.fetch_add(1, Ordering::SeqCst);
    let body: Value = serde_json::from_slice(&raw).unwrap_or_default();
    s.recorded.verify_bodies.lock().await.push(raw);
    Json(json!({"isValid": true, "payer": payer(&body), "upstreamOnlyField": "kept"}))
}

async fn settle(State(s): State<UpstreamState>, raw: Bytes) -> Json<Value> {
    s.recorded.settle_calls.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(s.settle_delay).await;
    let body: Value = serde_json::from_slice(&raw).unwrap_or_default();
    let tx = format!("0x{}", hex::encode(Sha256::digest(&raw)));
    s.recorded.settle_bodies.lock().await.push(raw);
    Json(json!({
        "success": true,
        "transaction": tx,
        "network": body["paymentRequirements"]["network"],
        "payer": payer(&body),
    }))
}

/// Echoes the query it received, so a test can see what was forwarded.
async fn discovery(axum::extract::RawQuery(query): axum::extract::RawQuery) -> Json<Value> {
    Json(json!({
        "x402Version": 2,
        "items": [],
        "pagination": {"limit": 20, "offset": 0, "total": 0},
        "receivedQuery": query,
    }))
}

async fn supported() -> Json<Value> {
    Json(json!({
        "kinds": [
            {"x402Version": 2, "scheme": "exact", "network": "eip155:84532"},
            {"x402Version": 1, "scheme": "exact", "network": "base-sepolia"},
            {"x402Version": 2, "scheme": "exact", "network": "stellar:testnet"},
            {"x402Version": 2, "scheme": "exact", "network": "solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1", "extra": {"feePayer": "FeePayer1111111111111111111111111111111111"}}
        ],
        "extensions": [],
        "signers": {"eip155:*": ["0x0000000000000000000000000000000000000001"]}
    }))
}
