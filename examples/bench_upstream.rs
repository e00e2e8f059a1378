//! A minimal upstream facilitator for measuring Gatehouse's own added latency: it answers
//! `/verify` valid and `/settle` successful without checking anything, so a benchmark that
//! calls it directly and through Gatehouse sees only Gatehouse's cost.
//! Usage: `cargo run --release --example bench_upstream -- 127.0.0.1:4030`

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::routing::{get, post};
use serde_json::{Value, json};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:4030".to_owned());
    let app = Router::new()
        .route("/verify", post(verify))
        .route("/settle", post(settle))
        .route(
            "/supported",
            get(|| async { Json(json!({"kinds": [], "extensions": [], "signers": {}})) }),
        );
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("bench upstream listening on {addr}");
    axum::serve(listener, app).await
}

fn payer(raw: &Bytes) -> Value {
    serde_json::from_slice::<Value>(raw)
        .map(|b| b["paymentPayload"]["payload"]["authorization"]["from"].clone())
        .unwrap_or(Value::Null)
}

async fn verify(raw: Bytes) -> Json<Value> {
    Json(json!({"isValid": true, "payer": payer(&raw)}))
}

async fn settle(raw: Bytes) -> Json<Value> {
    Json(
        json!({"success": true, "transaction": "0x01", "network": "eip155:84532", "payer": payer(&raw)}),
    )
}
