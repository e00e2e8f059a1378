//! Agent traces (`POST /risk/trace`): x402-secure's body `{sid, fingerprint, telemetry,
//! agent_trace: {task, parameters, environment, model_config, session_context, events}}`,
//! checked against size limits and flattened into [`TraceFacts`] for the rules (texts, tool
//! names and data, every URL seen and where it was seen).
//!
//! Events keep x402-secure's shapes: text in `content` (or `summary`, `text`), a tool in
//! `name`, its data in `arguments` / `result`. A text may arrive as a hash only
//! (`content_sha256`, or `content` of the form `sha256:<hex>`). With
//! `[risk] hash_text_at_ingest = true` only SHA-256 digests of texts are stored (URLs are still
//! extracted first, so URL rules keep working).

use std::collections::BTreeSet;

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::context::{TraceEvent, TraceFacts};
use super::session::{bad, opt_str};
use crate::server::error::ApiError;

/// Limits on one trace.
#[derive(Debug, Clone, Copy)]
pub struct TraceLimits {
    /// Most events.
    pub max_events: usize,
    /// Longest text, bytes.
    pub max_text_bytes: usize,
    /// Replace texts by their digests.
    pub hash_text: bool,
}

/// Longest event type name.
const MAX_TYPE_LEN: usize = 64;
/// Most URLs kept per trace (the rest are ignored, never an error).
const MAX_URLS: usize = 1_000;

/// A validated `POST /risk/trace` body.
#[derive(Debug, Clone)]
pub struct TraceRequest {
    /// The session the trace belongs to.
    pub sid: String,
    /// The trace, flattened (its `tid` filled in by the caller).
    pub facts: TraceFacts,
    /// Environment, model config and session context, as sent (kept in the stored record).
    pub context: Value,
}

fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// A `sha256:<64 hex>` or bare 64-hex digest, lowercase.
fn as_digest(text: &str) -> Option<String> {
    let d = text.strip_prefix("sha256:").unwrap_or(text);
    (d.len() == 64 && d.bytes().all(|b| b.is_ascii_hexdigit())).then(|| d.to_ascii_lowercase())
}

impl TraceRequest {
    /// Validates a body, naming the first field at fault.
    pub fn parse(body: &Value, limits: TraceLimits) -> Result<TraceRequest, ApiError> {
        if !body.is_object() {
            return Err(bad("$", "the body must be a JSON object"));
        }
        let sid = opt_str(body, "sid", "sid", 128)?.ok_or_else(|| bad("sid", "is required"))?;
        let trace = match body.get("agent_trace") {
            None | Some(Value::Null) => Value::Object(Default::default()),
            Some(t @ Value::Object(_)) => t.clone(),
            Some(_) => return Err(bad("agent_trace", "must be an object")),
        };
        let task = opt_str(&trace, "task", "agent_trace.task", limits.max_text_bytes)?;
        let parameters = trace.get("parameters").cloned().unwrap_or(Value::Null);
        if !(parameters.is_object() || parameters.is_null()) {
            return Err(bad("agent_trace.parameters", "must be an object"));
        }
        for key in ["environment", "model_config", "session_context"] {
            if let Some(v) = trace.get(key)
                && !(v.is_object() || v.is_null())
            {
                return Err(bad(&format!("agent_trace.{key}"), "must be an object"));
            }
        }
        let raw_events = match trace.get("events") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) => a.clone(),
            Some(_) => return Err(bad("agent_trace.events", "must be an array")),
        };
        if raw_events.len() > limits.max_events {
            return Err(ApiError::BadRequest {
                code: "limit_exceeded",
                field: Some("agent_trace.events".into()),
                message: format!(
                    "{} events; at most {} are accepted",
                    raw_events.len(),
                    limits.max_events
                ),
            });
        }
        let mut events = Vec::with_capacity(raw_events.len());
        for (i, raw) in raw_events.iter().enumerate() {
            events.push(parse_event(raw, i, limits)?);
        }
        let mut facts = flatten(task, parameters, events);
        if limits.hash_text {
            hash_texts(&mut facts);
        }
        let context = serde_json::json!({
            "environment": trace.get("environment"),
            "model_config": trace.get("model_config"),
            "session_context": trace.get("session_context"),
            "fingerprint": body.get("fingerprint"),
            "telemetry": body.get("telemetry"),
        });
        Ok(TraceRequest {
            sid,
            facts,
            context,
        })
    }
}

fn parse_event(raw: &Value, i: usize, limits: TraceLimits) -> Result<TraceEvent, ApiError> {
    let path = |f: &str| format!("agent_trace.events[{i}].{f}");
    if !raw.is_object() {
        return Err(bad(
            &format!("agent_trace.events[{i}]"),
            "must be an object",
        ));
    }
    let kind = opt_str(raw, "type", &path("type"), MAX_TYPE_LEN)?
        .filter(|t| !t.is_empty())
        .ok_or_else(|| bad(&path("type"), "is required"))?;
    let mut text = String::new();
    for key in ["content", "summary", "text", "output"] {
        if let Some(t) = opt_str(raw, key, &path(key), limits.max_text_bytes)? {
            text = t;
            break;
        }
    }
    let mut text_sha256 = None;
    for key in ["content_sha256", "text_sha256", "content_hash"] {
        if let Some(h) = opt_str(raw, key, &path(key), 80)? {
            text_sha256 =
                Some(as_digest(&h).ok_or_else(|| bad(&path(key), "must be a SHA-256 hex digest"))?);
        }
    }
    // A text sent only as its hash.
    if text.starts_with("sha256:")
        && let Some(d) = as_digest(&text)
    {
        text_sha256 = Some(d);
        text.clear();
    }
    if text_sha256.is_none() && !text.is_empty() {
        text_sha256 = Some(sha256_hex(&text));
    }
    let tool = match opt_str(raw, "name", &path("name"), 256)? {
        Some(n) => Some(n),
        None => opt_str(raw, "tool", &path("tool"), 256)?,
    };
    let data = ["arguments", "result", "data", "output_data"]
        .iter()
        .find_map(|k| raw.get(*k).filter(|v| !v.is_null()).cloned())
        .unwrap_or(Value::Null);
    if data.to_string().len() > limits.max_text_bytes.saturating_mul(4) {
        return Err(bad(
            &path("arguments"),
            format!(
                "tool data must be at most {} bytes",
                limits.max_text_bytes * 4
            ),
        ));
    }
    Ok(TraceEvent {
        kind,
        text,
        text_sha256,
        tool,
        data,
    })
}

/// URLs in a text (http/https, up to whitespace, quotes or brackets).
pub fn urls_in(text: &str, out: &mut Vec<String>) {
    let mut rest = text;
    while out.len() < MAX_URLS {
        let Some(start) = rest.find("http://").or_else(|| rest.find("https://")) else {
            break;
        };
        // Take the earliest of the two schemes.
        let start = match (rest.find("http://"), rest.find("https://")) {
            (Some(a), Some(b)) => a.min(b),
            _ => start,
        };
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| {
                c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | ')' | ']' | '}' | '`')
            })
            .unwrap_or(tail.len());
        let url = tail[..end].trim_end_matches(['.', ',', ';', ':']);
        if url.len() > "https://".len() {
            out.push(url.to_owned());
        }
        rest = &tail[end..];
    }
}

fn urls_in_value(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(s) => urls_in(s, out),
        Value::Array(a) => a.iter().for_each(|v| urls_in_value(v, out)),
        Value::Object(m) => m.values().for_each(|v| urls_in_value(v, out)),
        _ => {}
    }
}

/// The host of a URL, lowercase.
pub fn host_of(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host = authority.rsplit('@').next()?;
    let host = host.split(':').next()?;
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

fn flatten(task: Option<String>, parameters: Value, events: Vec<TraceEvent>) -> TraceFacts {
    let mut urls = Vec::new();
    let mut planned = Vec::new();
    let mut from_tools = Vec::new();
    if let Some(t) = &task {
        urls_in(t, &mut planned);
    }
    urls_in_value(&parameters, &mut planned);
    urls.extend(planned.iter().cloned());
    for e in &events {
        let mut here = Vec::new();
        urls_in(&e.text, &mut here);
        urls_in_value(&e.data, &mut here);
        match e.kind.as_str() {
            "user_input" | "system_prompt" => planned.extend(here.iter().cloned()),
            "tool_result" | "function_call_output" => from_tools.extend(here.iter().cloned()),
            _ => {}
        }
        urls.extend(here);
    }
    urls.truncate(MAX_URLS);
    let planned: BTreeSet<_> = planned.into_iter().collect();
    let mut seen = BTreeSet::new();
    let urls_from_tool_output_only: Vec<String> = from_tools
        .iter()
        .filter(|u| !planned.contains(*u) && seen.insert((*u).clone()))
        .cloned()
        .collect();
    let mut hosts = Vec::new();
    for h in urls.iter().filter_map(|u| host_of(u)) {
        if !hosts.contains(&h) {
            hosts.push(h);
        }
    }
    let distinct_sources = from_tools
        .iter()
        .filter_map(|u| host_of(u))
        .collect::<BTreeSet<_>>()
        .len() as u64;
    let mut facts = TraceFacts {
        tid: String::new(),
        task,
        parameters,
        event_count: events.len() as u64,
        events,
        urls,
        hosts,
        urls_from_tool_output_only,
        distinct_sources,
        ..TraceFacts::default()
    };
    facts.derive_event_facts();
    facts
}

/// The privacy option: every text replaced by its digest (the task too).
fn hash_texts(facts: &mut TraceFacts) {
    facts.task = None;
    for e in &mut facts.events {
        if !e.text.is_empty() {
            e.text_sha256 = Some(sha256_hex(&e.text));
            e.text.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const LIMITS: TraceLimits = TraceLimits {
        max_events: 3,
        max_text_bytes: 64,
        hash_text: false,
    };

    fn field(body: Value) -> String {
        match TraceRequest::parse(&body, LIMITS) {
            Err(ApiError::BadRequest { field, .. }) => field.unwrap_or_default(),
            other => panic!("expected 400, got {other:?}"),
        }
    }

    #[test]
    fn schema_errors_name_the_field() {
        assert_eq!(field(json!({"agent_trace": {}})), "sid");
        assert_eq!(field(json!({"sid": "s", "agent_trace": []})), "agent_trace");
        assert_eq!(
            field(
                json!({"sid": "s", "agent_trace": {"events": [{"type": "user_input"}, {"content": "x"}]}})
            ),
            "agent_trace.events[1].type"
        );
        assert_eq!(
            field(
                json!({"sid": "s", "agent_trace": {"events": [{"type": "x", "content": "a".repeat(65)}]}})
            ),
            "agent_trace.events[0].content"
        );
        assert_eq!(
            field(
                json!({"sid": "s", "agent_trace": {"events": [{"type": "a"}, {"type": "a"}, {"type": "a"}, {"type": "a"}]}})
            ),
            "agent_trace.events"
        );
    }

    #[test]
    fn urls_from_tool_output_only_are_told_apart_and_texts_can_be_hashed() {
        let body = json!({"sid": "s", "agent_trace": {
        "task": "buy the report at https://shop.example/report",
        "events": [
            {"type": "user_input", "content": "go"},
            {"type": "tool_result", "name": "fetch", "result": {"next": "https://evil.example/pay?aff=1", "again": "https://shop.example/report"}},
        ]}});
        let t = TraceRequest::parse(&body, LIMITS).unwrap();
        assert_eq!(
            t.facts.urls_from_tool_output_only,
            ["https://evil.example/pay?aff=1"]
        );
        assert_eq!(t.facts.hosts, ["shop.example", "evil.example"]);
        assert_eq!(t.facts.distinct_sources, 2);
        assert_eq!(t.facts.events[1].tool.as_deref(), Some("fetch"));

        let hashed = TraceRequest::parse(
            &body,
            TraceLimits {
                hash_text: true,
                ..LIMITS
            },
        )
        .unwrap();
        assert_eq!(hashed.facts.task, None);
        assert_eq!(hashed.facts.events[0].text, "");
        assert_eq!(
            hashed.facts.events[0].text_sha256.as_deref(),
            Some(sha256_hex("go").as_str())
        );
        assert_eq!(hashed.facts.urls, t.facts.urls, "URLs survive hashing");
    }
}
