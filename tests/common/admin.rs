//! Admin API helpers: known tokens for each scope and authenticated requests.

#![allow(dead_code)] // each test binary uses a different subset

use gatehouse::admin::{Scope, TokenConfig, token_hash};
use gatehouse::config::Config;
use serde_json::{Value, json};

/// An operator token.
pub const OPERATOR: &str = "test-operator-token";
/// An auditor token.
pub const AUDITOR: &str = "test-auditor-token";
/// A seller token scoped to the fixtures' `PAY_TO`.
pub const SELLER: &str = "test-seller-token";
/// A seller token scoped to some other payee.
pub const OTHER_SELLER: &str = "test-other-seller-token";

/// Adds the four test tokens to `config`.
pub fn with_admin_tokens(mut config: Config) -> Config {
    let token = |name: &str, secret: &str, scope: String| TokenConfig {
        name: name.to_owned(),
        sha256: token_hash(secret),
        scopes: vec![Scope::parse(&scope).expect("valid scope")],
    };
    config.admin.tokens = vec![
        token("ops", OPERATOR, "operator".into()),
        token("audit", AUDITOR, "auditor".into()),
        token("shop", SELLER, format!("seller:{}", super::PAY_TO)),
        token(
            "other-shop",
            OTHER_SELLER,
            "seller:0x2222222222222222222222222222222222222222".into(),
        ),
    ];
    config
}

/// Sends `method` to `url` with an optional bearer token and JSON body; returns (status, JSON).
pub async fn admin_call(
    method: reqwest::Method,
    url: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (u16, Value) {
    let mut request = reqwest::Client::new().request(method, url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.expect("request sent");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    let json = serde_json::from_str(&text).unwrap_or_else(|_| json!({"non_json": text}));
    (status, json)
}

/// GET with a token.
pub async fn admin_get(url: &str, token: &str) -> (u16, Value) {
    admin_call(reqwest::Method::GET, url, Some(token), None).await
}

/// POST JSON with a token.
pub async fn admin_post(url: &str, token: &str, body: &Value) -> (u16, Value) {
    admin_call(reqwest::Method::POST, url, Some(token), Some(body)).await
}
