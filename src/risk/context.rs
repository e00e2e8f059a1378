//! The documented input of every risk rule. Rules are CEL conditions over the JSON form of
//! [`RiskContext`]: top-level variables `payment`, `session`, `trace`, `mandate`, `history`,
//! `endpoint` (absent parts are `null`, so rules test `session == null` explicitly).
//! Field names here are the public rule language: renaming one breaks operators' rules.

use serde::{Deserialize, Serialize};

/// Everything a rule may look at.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RiskContext {
    /// The normalised payment.
    pub payment: PaymentFacts,
    /// The buyer's risk session, when one was named.
    pub session: Option<SessionFacts>,
    /// The agent trace, when one was named.
    pub trace: Option<TraceFacts>,
    /// The AP2 mandate carried as evidence, when any.
    pub mandate: Option<MandateFacts>,
    /// What the store knows about this payer and endpoint.
    pub history: HistoryFacts,
    /// What is configured or learned about the endpoint.
    pub endpoint: EndpointFacts,
}

/// The payment, normalised.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PaymentFacts {
    /// CAIP-2 network, e.g. `eip155:8453`.
    pub network: String,
    /// `exact`.
    pub scheme: String,
    /// Token address or mint.
    pub asset: String,
    /// Amount in atomic units (decimal string: may exceed 64 bits).
    pub amount: String,
    /// Amount in whole tokens (`amount / 10^decimals`), when decimals are known.
    pub amount_units: Option<f64>,
    /// The asset's decimals, when known.
    pub decimals: Option<u8>,
    /// Paying wallet (lowercase for EVM), when known.
    pub payer: Option<String>,
    /// Recipient (lowercase for EVM).
    pub pay_to: String,
    /// The resource URL, when given.
    pub resource: Option<String>,
    /// What the seller says the resource is (requirements' description), when given.
    pub description: Option<String>,
    /// The resource's host (lowercase), when the resource is a URL.
    pub host: Option<String>,
    /// The resource's path, when the resource is a URL.
    pub path: Option<String>,
    /// The resource's query parameters, as `name → value`.
    pub query: std::collections::BTreeMap<String, String>,
    /// x402 protocol version (1 or 2).
    pub x402_version: u8,
    /// `verify` or `settle`.
    pub gate: String,
}

/// The risk session (`POST /risk/session`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SessionFacts {
    /// Session id.
    pub sid: String,
    /// Agent id (a DID).
    pub agent_id: String,
    /// The wallet the session declared.
    pub wallet: String,
    /// Whether the wallet's ownership was proven by a signature over our nonce.
    pub wallet_proven: bool,
    /// Whether the payment's payer is the session's wallet.
    pub payer_matches: bool,
    /// Optional app id.
    pub app_id: Option<String>,
    /// Optional device description.
    pub device: Option<String>,
    /// Optional agent endpoint.
    pub agent_endpoint: Option<String>,
    /// Age of the session in seconds.
    pub age_secs: u64,
    /// Whether the session has expired.
    pub expired: bool,
}

/// The agent trace (`POST /risk/trace`), flattened for rules.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TraceFacts {
    /// Trace id.
    pub tid: String,
    /// The task the agent was given, when sent in clear.
    pub task: Option<String>,
    /// Task parameters as sent.
    pub parameters: serde_json::Value,
    /// Every event, in order.
    pub events: Vec<TraceEvent>,
    /// Every URL seen in the trace (tool calls, outputs, agent messages), in order.
    pub urls: Vec<String>,
    /// Hosts of those URLs (lowercase), deduplicated.
    pub hosts: Vec<String>,
    /// URLs that appear only in tool outputs (not in the user's input or the plan).
    pub urls_from_tool_output_only: Vec<String>,
    /// Number of events.
    pub event_count: u64,
    /// Distinct sources cited by the agent's reasoning (hosts of URLs in tool results read
    /// before the payment decision).
    pub distinct_sources: u64,
    /// The distinct event types, in first-seen order (derived from `events`).
    #[serde(default)]
    pub event_types: Vec<String>,
    /// Beneficiary addresses named by tool calls, lowercase (derived from `events`): values
    /// of `beneficiary`/`pay_to`/`payTo`/`payee`, or of `recipient`/`to` when the tool's name
    /// says it pays (pay, transfer, purchase, checkout, x402), that are address-shaped.
    #[serde(default)]
    pub beneficiaries: Vec<String>,
}

/// Tool-call argument names that always name a beneficiary.
const BENEFICIARY_KEYS: [&str; 4] = ["beneficiary", "pay_to", "payTo", "payee"];
/// Argument names that name one only for a paying tool.
const PAYING_TOOL_KEYS: [&str; 2] = ["recipient", "to"];
/// Tool-name fragments that mark a paying tool.
const PAYING_TOOLS: [&str; 5] = ["pay", "transfer", "purchase", "checkout", "x402"];

impl TraceFacts {
    /// A copy without the event list (the derived event facts stay): cloning 200 events only
    /// to drop them was half the cost of scoring. Every field is named, so a new one cannot be
    /// forgotten here.
    pub fn without_events(&self) -> TraceFacts {
        let TraceFacts {
            tid,
            task,
            parameters,
            events: _,
            urls,
            hosts,
            urls_from_tool_output_only,
            event_count,
            distinct_sources,
            event_types,
            beneficiaries,
        } = self;
        TraceFacts {
            tid: tid.clone(),
            task: task.clone(),
            parameters: parameters.clone(),
            events: Vec::new(),
            urls: urls.clone(),
            hosts: hosts.clone(),
            urls_from_tool_output_only: urls_from_tool_output_only.clone(),
            event_count: *event_count,
            distinct_sources: *distinct_sources,
            event_types: event_types.clone(),
            beneficiaries: beneficiaries.clone(),
        }
    }

    /// Computes the facts derived from `events` once per payment, so rules test short lists
    /// instead of iterating every event (a CEL loop over a 200-event trace costs more than
    /// the whole rest of the evaluation).
    pub fn derive_event_facts(&mut self) {
        let mut types: Vec<String> = Vec::new();
        let mut beneficiaries: Vec<String> = Vec::new();
        for event in &self.events {
            if !types.contains(&event.kind) {
                types.push(event.kind.clone());
            }
            if event.kind != "tool_call" {
                continue;
            }
            let Some(data) = event.data.as_object() else {
                continue;
            };
            let paying_tool = event.tool.as_deref().is_some_and(|tool| {
                let tool = tool.to_ascii_lowercase();
                PAYING_TOOLS.iter().any(|p| tool.contains(p))
            });
            let keys = BENEFICIARY_KEYS
                .iter()
                .chain(PAYING_TOOL_KEYS.iter().filter(|_| paying_tool));
            for key in keys {
                if let Some(serde_json::Value::String(value)) = data.get(*key)
                    && is_address(value)
                {
                    let value = value.to_ascii_lowercase();
                    if !beneficiaries.contains(&value) {
                        beneficiaries.push(value);
                    }
                }
            }
        }
        self.event_types = types;
        self.beneficiaries = beneficiaries;
    }
}

/// An EVM address (`0x` + 40 hex digits) or a Solana one (32–44 base58 characters).
fn is_address(text: &str) -> bool {
    let evm = text.len() == 42
        && text.starts_with("0x")
        && text[2..].bytes().all(|b| b.is_ascii_hexdigit());
    let base58 = (32..=44).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() && !matches!(b, b'0' | b'O' | b'I' | b'l'));
    evm || base58
}

/// One trace event.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TraceEvent {
    /// `user_input`, `system_prompt`, `agent_output`, `reasoning_summary`, `tool_call`,
    /// `tool_result`, or another type the SDK sent.
    #[serde(rename = "type")]
    pub kind: String,
    /// The text, when sent in clear (empty when only a hash was sent or it was hashed at ingest).
    pub text: String,
    /// SHA-256 of the text, when sent or computed.
    pub text_sha256: Option<String>,
    /// Tool name for `tool_call` / `tool_result`.
    pub tool: Option<String>,
    /// Structured data the event carried (tool arguments or result), as sent.
    pub data: serde_json::Value,
}

/// An AP2 mandate, validated.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MandateFacts {
    /// Mandate id.
    pub id: String,
    /// `intent`, `cart` or `payment`.
    pub kind: String,
    /// Approved payees (lowercase for EVM); empty means none listed.
    pub payees: Vec<String>,
    /// Whether the payment's payTo is among them.
    pub payee_approved: bool,
    /// Maximum per payment in atomic units, when stated.
    pub max_amount: Option<String>,
    /// Whether the payment's amount is within it (true when no maximum).
    pub amount_within: bool,
    /// Whether the rolling budget still covers the payment (true when none stated).
    pub budget_within: bool,
    /// The agent the mandate is bound to, when stated.
    pub agent: Option<String>,
    /// Whether that agent is the session's agent (true when either is missing).
    pub agent_matches: bool,
    /// Whether the mandate has expired.
    pub expired: bool,
    /// Whether this mandate id was already used for another payment.
    pub replayed: bool,
    /// `verified`, `unverifiable` (signer key unknown) or `invalid`.
    pub signature: String,
    /// Product/spec the mandate approved (cart items or intent description), when stated.
    pub spec: Option<String>,
    /// Whether the mandate's spec matches what the payment's resource delivers, when known.
    pub spec_matches: Option<bool>,
    /// Whether the mandate allows recurring charges.
    pub recurring_allowed: bool,
}

/// What the store knows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HistoryFacts {
    /// Approved payments by this payer in the last hour.
    pub payer_payments_1h: u64,
    /// Approved payments by this payer in the last 24 hours.
    pub payer_payments_24h: u64,
    /// Payments by this payer to this resource in the last 5 minutes.
    pub payer_same_resource_5m: u64,
    /// Payments by this payer to this payee before (ever).
    pub payer_to_payee_before: u64,
    /// Whether this endpoint (host + path) was never paid through Gatehouse before.
    pub endpoint_first_seen: bool,
    /// Upheld disputes on payments by this payer (dispute outcomes feed risk).
    pub payer_disputes_upheld: u64,
    /// Previous payments from this payer to this endpoint that were free (amount 0) — a
    /// trial turning paid shows as `> 0` here with a non-zero amount now.
    pub payer_free_payments_to_endpoint: u64,
}

/// What is configured or learned about the endpoint.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EndpointFacts {
    /// Whether the operator requires a trace for payments to this endpoint.
    pub requires_trace: bool,
    /// The brand's known wallets for this host (configured), empty when unknown.
    pub known_wallets: Vec<String>,
    /// Whether payTo is among `known_wallets` (true when none are configured).
    pub pay_to_known: bool,
    /// The usual amount range for this endpoint (atomic units, min and max seen), when known.
    pub usual_min: Option<String>,
    /// See `usual_min`.
    pub usual_max: Option<String>,
}
