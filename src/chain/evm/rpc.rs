//! A small JSON-RPC client: batched requests, one timeout per request, failover across the
//! configured endpoints in order, and a count of HTTP round trips. A JSON-RPC error object for
//! one call (e.g. an `eth_call` revert) is an answer, not a failure; only transport trouble,
//! timeouts and malformed responses move on to the next endpoint.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use crate::chain::ChainError;

/// The error object a node returned for one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallError {
    /// JSON-RPC error code (3 = execution reverted on most nodes).
    pub code: i64,
    /// The node's message.
    pub message: String,
    /// `data`, when present (revert data as hex).
    pub data: Option<String>,
}

/// JSON-RPC over HTTP with failover.
#[derive(Debug, Clone)]
pub struct RpcClient {
    urls: Arc<[String]>,
    http: reqwest::Client,
    timeout: Duration,
    round_trips: Arc<AtomicU64>,
}

impl RpcClient {
    /// A client for `urls` (tried in order), each request bounded by `timeout`.
    pub fn new(urls: Vec<String>, timeout: Duration, round_trips: Arc<AtomicU64>) -> Self {
        Self {
            urls: urls.into(),
            http: reqwest::Client::new(),
            timeout,
            round_trips,
        }
    }

    /// Sends `calls` as one JSON-RPC batch and returns one result per call, in order.
    /// `Err(ChainError::Rpc)` only when every endpoint failed.
    pub async fn batch(
        &self,
        calls: &[(&str, Value)],
    ) -> Result<Vec<Result<Value, CallError>>, ChainError> {
        let body: Vec<Value> = calls
            .iter()
            .enumerate()
            .map(|(id, (method, params))| {
                json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
            })
            .collect();
        let mut failures = Vec::new();
        for url in self.urls.iter() {
            self.round_trips.fetch_add(1, Ordering::Relaxed);
            let lap = crate::metrics::Lap::start();
            let answer =
                tokio::time::timeout(self.timeout, self.post(url, &body, calls.len())).await;
            crate::metrics::rpc_call(crate::metrics::rpc_outcome(&answer), lap.total());
            match answer {
                Ok(Ok(results)) => return Ok(results),
                Ok(Err(e)) => failures.push(format!("{}: {e}", redact(url))),
                Err(_) => failures.push(format!(
                    "{}: timed out after {} ms",
                    redact(url),
                    self.timeout.as_millis()
                )),
            }
        }
        if failures.is_empty() {
            failures.push("no RPC endpoint configured".into());
        }
        Err(ChainError::Rpc(failures.join("; ")))
    }

    async fn post(
        &self,
        url: &str,
        body: &[Value],
        n: usize,
    ) -> Result<Vec<Result<Value, CallError>>, String> {
        let resp = self
            .http
            .post(url)
            .json(body)
            .send()
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(format!("HTTP {status}"));
        }
        let value: Value = resp
            .json()
            .await
            .map_err(|e| format!("malformed response: {e}"))?;
        let items = value
            .as_array()
            .ok_or_else(|| "response is not a batch array".to_owned())?;
        let mut out: Vec<Option<Result<Value, CallError>>> = vec![None; n];
        for item in items {
            let id = item
                .get("id")
                .and_then(Value::as_u64)
                .and_then(|i| usize::try_from(i).ok())
                .ok_or_else(|| "response item without a valid id".to_owned())?;
            let slot = out
                .get_mut(id)
                .ok_or_else(|| format!("response id {id} out of range"))?;
            *slot = Some(match (item.get("result"), item.get("error")) {
                (_, Some(err)) if !err.is_null() => Err(CallError {
                    code: err.get("code").and_then(Value::as_i64).unwrap_or(0),
                    message: err
                        .get("message")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned(),
                    data: err.get("data").map(|d| match d.as_str() {
                        Some(s) => s.to_owned(),
                        None => d.to_string(),
                    }),
                }),
                (Some(result), _) => Ok(result.clone()),
                (None, _) => return Err("response item without result or error".into()),
            });
        }
        out.into_iter()
            .enumerate()
            .map(|(i, r)| r.ok_or_else(|| format!("no response for call {i}")))
            .collect()
    }
}

/// Endpoint URLs often carry API keys in the path or query; keep only scheme and host in
/// messages that reach logs and evidence.
fn redact(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => {
            format!("{}://{}", u.scheme(), u.host_str().unwrap_or("?"))
                + &u.port().map(|p| format!(":{p}")).unwrap_or_default()
        }
        Err(_) => "<invalid url>".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_drops_path_and_query() {
        assert_eq!(
            redact("https://base-mainnet.g.alchemy.com/v2/SECRET?k=1"),
            "https://base-mainnet.g.alchemy.com"
        );
        assert_eq!(redact("http://127.0.0.1:8545"), "http://127.0.0.1:8545");
    }
}
