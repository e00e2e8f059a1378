//! A buyer-side client for Gatehouse's risk API: create a session (optionally proving the
//! wallet with an EIP-191 signature over a server nonce), upload the agent trace, and attach
//! the handles to a payment, as x402-secure headers and as the `gatehouse-risk` payload
//! extension (for sellers that forward no headers).
//!
//! ```no_run
//! # async fn demo() -> Result<(), gatehouse::risk::client::ClientError> {
//! use gatehouse::risk::client::{NewSession, RiskClient};
//! let client = RiskClient::new("http://127.0.0.1:4020")?;
//! let session = client
//!     .create_session(&NewSession::new("did:example:agent", "0x857b06519e91e3a54538791bdbb0e22373e36b66"))
//!     .await?;
//! let tid = client
//!     .upload_trace(&session.sid, &serde_json::json!({"task": "buy a report", "events": []}))
//!     .await?;
//! let handles = session.handles().with_trace(tid);
//! let mut payload = serde_json::json!({"x402Version": 2, "extensions": {}});
//! handles.attach(&mut payload);
//! # Ok(()) }
//! ```

use std::time::Duration;

use alloy::signers::SignerSync;
use alloy::signers::local::PrivateKeySigner;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::payment::EXTENSION;
use super::session::proof_message;

/// Bound on every call.
const TIMEOUT: Duration = Duration::from_secs(15);

/// What went wrong talking to Gatehouse.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Transport failure.
    #[error("http: {0}")]
    Http(#[from] reqwest::Error),
    /// Gatehouse answered an error.
    #[error("gatehouse answered {status}: {body}")]
    Status {
        /// HTTP status.
        status: u16,
        /// The error body.
        body: Value,
    },
    /// The answer lacked a field.
    #[error("unexpected answer: {0}")]
    Unexpected(String),
    /// Signing the wallet proof failed.
    #[error("signing: {0}")]
    Sign(String),
}

/// A session to create.
#[derive(Debug, Clone, Serialize)]
pub struct NewSession {
    /// The agent's DID (or wallet).
    pub agent_did: String,
    /// The paying wallet.
    pub wallet_address: String,
    /// Application id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_id: Option<String>,
    /// Device description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<Value>,
    /// Agent endpoint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_endpoint: Option<String>,
    /// `{nonce, signature}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wallet_proof: Option<Value>,
    /// `{amount, asset}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget: Option<Value>,
}

impl NewSession {
    /// A session for `agent_did` paying from `wallet_address`.
    pub fn new(agent_did: &str, wallet_address: &str) -> Self {
        Self {
            agent_did: agent_did.to_owned(),
            wallet_address: wallet_address.to_owned(),
            app_id: None,
            device: None,
            agent_endpoint: None,
            wallet_proof: None,
            budget: None,
        }
    }
}

/// A created session.
#[derive(Debug, Clone, Deserialize)]
pub struct Session {
    /// Session id.
    pub sid: String,
    /// Expiry, ISO 8601.
    pub expires_at: String,
    /// Whether the wallet proof verified.
    #[serde(default)]
    pub wallet_proven: bool,
}

impl Session {
    /// Handles naming this session.
    pub fn handles(&self) -> RiskHandles {
        RiskHandles {
            sid: self.sid.clone(),
            ..RiskHandles::default()
        }
    }
}

/// What a payment names: session, trace, traceparent, mandate.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RiskHandles {
    /// Session id.
    pub sid: String,
    /// Trace id.
    pub tid: Option<String>,
    /// W3C traceparent.
    pub traceparent: Option<String>,
    /// An AP2 mandate.
    pub ap2: Option<Value>,
}

impl RiskHandles {
    /// With a trace.
    pub fn with_trace(mut self, tid: String) -> Self {
        self.tid = Some(tid);
        self
    }

    /// With an AP2 mandate (sent in the extension).
    pub fn with_mandate(mut self, mandate: Value) -> Self {
        self.ap2 = Some(mandate);
        self
    }

    /// With a fresh random W3C traceparent.
    pub fn with_new_traceparent(mut self) -> Self {
        let trace = uuid::Uuid::new_v4().simple().to_string();
        let span = &uuid::Uuid::new_v4().simple().to_string()[..16];
        self.traceparent = Some(format!("00-{trace}-{span}-01"));
        self
    }

    /// x402-secure's headers: `X-RISK-SESSION`, `X-RISK-TRACE`, `X-PAYMENT-SECURE`.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut out = vec![("X-RISK-SESSION", self.sid.clone())];
        if let Some(tid) = &self.tid {
            out.push(("X-RISK-TRACE", tid.clone()));
        }
        if let Some(tp) = &self.traceparent {
            out.push(("X-PAYMENT-SECURE", format!("w3c.v1;tp={tp}")));
        }
        out
    }

    /// The `gatehouse-risk` extension value.
    pub fn extension(&self) -> Value {
        let mut info = json!({"sid": self.sid});
        if let Some(tid) = &self.tid {
            info["tid"] = json!(tid);
        }
        if let Some(tp) = &self.traceparent {
            info["traceparent"] = json!(tp);
        }
        if let Some(ap2) = &self.ap2 {
            info["ap2"] = ap2.clone();
        }
        json!({"info": info})
    }

    /// Sets `extensions["gatehouse-risk"]` on a v2 payment payload.
    pub fn attach(&self, payment_payload: &mut Value) {
        if !payment_payload
            .get("extensions")
            .is_some_and(Value::is_object)
        {
            payment_payload["extensions"] = json!({});
        }
        payment_payload["extensions"][EXTENSION] = self.extension();
    }
}

/// The client.
#[derive(Debug, Clone)]
pub struct RiskClient {
    base: String,
    http: reqwest::Client,
}

impl RiskClient {
    /// A client for Gatehouse at `base_url`.
    pub fn new(base_url: &str) -> Result<Self, ClientError> {
        Ok(Self {
            base: base_url.trim_end_matches('/').to_owned(),
            http: reqwest::Client::builder().timeout(TIMEOUT).build()?,
        })
    }

    async fn answer(response: reqwest::Response) -> Result<Value, ClientError> {
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status == 200 {
            Ok(body)
        } else {
            Err(ClientError::Status { status, body })
        }
    }

    fn field(body: &Value, key: &str) -> Result<String, ClientError> {
        body.get(key)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| ClientError::Unexpected(format!("no `{key}` in {body}")))
    }

    /// `GET /risk/nonce`.
    pub async fn nonce(&self) -> Result<String, ClientError> {
        let body = Self::answer(
            self.http
                .get(format!("{}/risk/nonce", self.base))
                .send()
                .await?,
        )
        .await?;
        Self::field(&body, "nonce")
    }

    /// `POST /risk/session`.
    pub async fn create_session(&self, session: &NewSession) -> Result<Session, ClientError> {
        let body = Self::answer(
            self.http
                .post(format!("{}/risk/session", self.base))
                .json(session)
                .send()
                .await?,
        )
        .await?;
        serde_json::from_value(body).map_err(|e| ClientError::Unexpected(e.to_string()))
    }

    /// A session whose EVM wallet is proven: fetches a nonce and signs it (EIP-191).
    pub async fn create_proven_session(
        &self,
        agent_did: &str,
        signer: &PrivateKeySigner,
    ) -> Result<Session, ClientError> {
        let wallet = format!("{:#x}", signer.address());
        let nonce = self.nonce().await?;
        let signature = signer
            .sign_message_sync(proof_message(&wallet, &nonce).as_bytes())
            .map_err(|e| ClientError::Sign(e.to_string()))?;
        let mut session = NewSession::new(agent_did, &wallet);
        session.wallet_proof = Some(json!({
            "nonce": nonce,
            "signature": format!("0x{}", hex::encode(signature.as_bytes())),
        }));
        self.create_session(&session).await
    }

    /// `POST /risk/trace` with an x402-secure `agent_trace`; returns the `tid`.
    pub async fn upload_trace(
        &self,
        sid: &str,
        agent_trace: &Value,
    ) -> Result<String, ClientError> {
        let body = Self::answer(
            self.http
                .post(format!("{}/risk/trace", self.base))
                .json(&json!({"sid": sid, "agent_trace": agent_trace}))
                .send()
                .await?,
        )
        .await?;
        Self::field(&body, "tid")
    }

    /// `POST /risk/evaluate` (a dry run) for a facilitator body.
    pub async fn evaluate(
        &self,
        handles: &RiskHandles,
        facilitator_body: &Value,
    ) -> Result<Value, ClientError> {
        let mut request = json!({
            "sid": handles.sid,
            "tid": handles.tid,
            "payment": {"protocol": "x402:exact", "payload": facilitator_body},
        });
        if let Some(tp) = &handles.traceparent {
            request["trace_context"] = json!({"tp": tp});
        }
        Self::answer(
            self.http
                .post(format!("{}/risk/evaluate", self.base))
                .json(&request)
                .send()
                .await?,
        )
        .await
    }
}
