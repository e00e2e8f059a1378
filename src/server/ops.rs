//! Operational endpoints: `GET /health` (the process is up) and `GET /ready` (the store and the
//! upstream answer; 503 naming what is not ready otherwise).

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::get;
use http::StatusCode;
use serde_json::{Value, json};

use super::AppState;

/// The operational routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
}

async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let store = state.pipeline.store().ping().await;
    let upstream = state.pipeline.upstream().health().await;
    let check = |r: Result<(), String>| match r {
        Ok(()) => json!({"ok": true}),
        Err(e) => json!({"ok": false, "error": e}),
    };
    let ready = store.is_ok() && upstream.is_ok();
    let body = json!({
        "status": if ready { "ready" } else { "not_ready" },
        "checks": {
            "store": check(store.map_err(|e| e.to_string())),
            "upstream": check(upstream.map_err(|e| e.to_string())),
        }
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}
