//! Evidence search: which searchable columns a record yields ([`index_fields`]), and the
//! filters the API and the CLI share ([`SearchFilters`]).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::admin::normalise_pay_to;
use crate::store::EvidenceRecord;
use crate::store::evidence::{EvidenceQuery, IndexFields, MAX_PAGE};

/// Default page size.
pub const DEFAULT_PAGE: u32 = 50;

/// How often the background indexer brings the search index up to the chain's head.
pub const INDEX_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// Keeps the search index caught up in the background, so the first search after a busy
/// spell does not pay for indexing every record appended since the last one (searches still
/// catch up themselves before answering, so they never miss a record).
pub fn spawn_indexer(
    store: std::sync::Arc<dyn crate::store::Store>,
    every: std::time::Duration,
) -> tokio::task::JoinHandle<()> {
    crate::store::spawn_every(
        store,
        every,
        "Evidence index catch-up failed; searches catch up themselves.",
        |store| async move { store.index_evidence().await },
    )
}

/// The first string found at any of `paths` (each a list of object keys).
fn first_str(body: &Value, paths: &[&[&str]]) -> Option<String> {
    paths.iter().find_map(|path| {
        let mut at = body;
        for key in *path {
            at = at.get(key)?;
        }
        at.as_str().filter(|s| !s.is_empty()).map(str::to_owned)
    })
}

/// `host[:port]/path` of a resource URL (the same key the policy's endpoint rules use).
pub fn endpoint_of(resource: &str) -> Option<String> {
    let url = reqwest::Url::parse(resource).ok()?;
    let host = url.host_str()?.to_ascii_lowercase();
    let host = match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host,
    };
    Some(format!("{host}{}", url.path()))
}

/// The searchable columns of a record, read from its body: the normalised payment
/// (`payment.payer`, `payment.pay_to`, `payment.resource`), the settlement answer's
/// `transaction`, and a risk session id; dispute records name `payer`/`payee` at the top.
pub fn index_fields(record: &EvidenceRecord) -> IndexFields {
    match serde_json::from_str::<Value>(&record.body) {
        Ok(body) => body_index_fields(&body),
        Err(_) => IndexFields::default(),
    }
}

/// [`index_fields`] of a body not yet serialised (the appender indexes as it appends).
pub fn body_index_fields(body: &Value) -> IndexFields {
    let payer = first_str(body, &[&["payment", "payer"], &["payer"]]);
    let payee = first_str(
        body,
        &[&["payment", "pay_to"], &["payee"], &["pay_to"], &["payTo"]],
    );
    let endpoint = first_str(body, &[&["payment", "resource"], &["resource"]])
        .and_then(|r| endpoint_of(&r))
        .or_else(|| first_str(body, &[&["endpoint"]]));
    let tx = first_str(
        body,
        &[
            &["response", "transaction"],
            &["upstream", "transaction"],
            &["upstream", "body", "transaction"],
            &["transaction"],
        ],
    );
    let session = first_str(
        body,
        &[
            &["session_id"],
            &["risk", "session_id"],
            &["risk", "session", "id"],
            &["risk", "session", "session_id"],
            &["session", "id"],
        ],
    );
    IndexFields {
        payer: payer.map(|p| normalise_pay_to(&p)),
        payee: payee.map(|p| normalise_pay_to(&p)),
        endpoint,
        tx,
        session,
    }
}

/// Search filters as the API's query string and the CLI's flags spell them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct SearchFilters {
    /// Payment fingerprint.
    #[arg(long)]
    pub fingerprint: Option<String>,
    /// Transaction hash or signature.
    #[arg(long)]
    pub tx: Option<String>,
    /// Payer address.
    #[arg(long)]
    pub payer: Option<String>,
    /// Payee (`payTo`) address.
    #[arg(long)]
    pub payee: Option<String>,
    /// Endpoint, `host/path`.
    #[arg(long)]
    pub endpoint: Option<String>,
    /// Risk session id.
    #[arg(long)]
    pub session: Option<String>,
    /// Decision (`allow`, `deny`, ...).
    #[arg(long)]
    pub decision: Option<String>,
    /// Record kind (`verify`, `settle`, `dispute.opened`, ...).
    #[arg(long)]
    pub kind: Option<String>,
    /// Created at or after, ms since the epoch.
    #[arg(long)]
    pub since: Option<u64>,
    /// Created before, ms since the epoch.
    #[arg(long)]
    pub until: Option<u64>,
    /// Page size (1..=500, default 50).
    #[arg(long)]
    pub limit: Option<u32>,
    /// Cursor: the `next` of the previous page.
    #[arg(long)]
    pub after: Option<i64>,
    /// Dashboard event streams pass the token in the query; ignored here.
    #[arg(skip)]
    #[serde(default, skip_serializing)]
    pub access_token: Option<String>,
}

/// Why filters are unusable (400, naming the field).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FilterError {
    /// The query parameter.
    pub field: &'static str,
    /// What is wrong.
    pub message: String,
}

impl SearchFilters {
    /// The store query, with `visible_payees` restricting a seller's view.
    pub fn to_query(
        &self,
        visible_payees: Option<Vec<String>>,
    ) -> Result<EvidenceQuery, FilterError> {
        let limit = self.limit.unwrap_or(DEFAULT_PAGE);
        if limit == 0 || limit > MAX_PAGE {
            return Err(FilterError {
                field: "limit",
                message: format!("must be between 1 and {MAX_PAGE}"),
            });
        }
        let after = self.after.unwrap_or(0);
        if after < 0 {
            return Err(FilterError {
                field: "after",
                message: "must not be negative".into(),
            });
        }
        if let (Some(since), Some(until)) = (self.since, self.until)
            && since > until
        {
            return Err(FilterError {
                field: "since",
                message: "must not be after `until`".into(),
            });
        }
        let trimmed = |v: &Option<String>| v.as_deref().map(str::trim).map(str::to_owned);
        Ok(EvidenceQuery {
            fingerprint: trimmed(&self.fingerprint),
            tx: trimmed(&self.tx),
            payer: trimmed(&self.payer).map(|p| normalise_pay_to(&p)),
            payee: trimmed(&self.payee).map(|p| normalise_pay_to(&p)),
            endpoint: trimmed(&self.endpoint),
            session: trimmed(&self.session),
            decision: trimmed(&self.decision),
            kind: trimmed(&self.kind),
            since_ms: self.since,
            until_ms: self.until,
            visible_payees,
            after_seq: after,
            limit,
        })
    }
}

/// The `next` cursor for a page: the last seq when the page was full.
pub fn next_cursor(last_seq: Option<i64>, len: usize, limit: u32) -> Option<i64> {
    (len as u64 >= u64::from(limit))
        .then_some(last_seq)
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(body: Value) -> EvidenceRecord {
        EvidenceRecord {
            seq: 1,
            created_at_ms: 0,
            kind: "settle".into(),
            gate: None,
            fingerprint: Some("fp".into()),
            decision: "allow".into(),
            request_id: "r".into(),
            body: crate::evidence::canonical_json(&body),
            prev_hash: String::new(),
            hash: String::new(),
        }
    }

    #[test]
    fn fields_come_from_the_payment_and_the_answer() {
        let f = index_fields(&record(serde_json::json!({
            "payment": {"payer": "0xABC", "pay_to": "0xDEF", "resource": "https://API.x.com:8443/a/b?q=1"},
            "response": {"transaction": "0x99"},
            "risk": {"session": {"id": "s1"}}
        })));
        assert_eq!(f.payer.as_deref(), Some("0xabc"));
        assert_eq!(f.payee.as_deref(), Some("0xdef"));
        assert_eq!(f.endpoint.as_deref(), Some("api.x.com:8443/a/b"));
        assert_eq!(f.tx.as_deref(), Some("0x99"));
        assert_eq!(f.session.as_deref(), Some("s1"));
        assert_eq!(
            index_fields(&record(serde_json::json!("x"))),
            IndexFields::default()
        );
    }

    #[test]
    fn filters_are_checked() {
        let bad = SearchFilters {
            limit: Some(0),
            ..SearchFilters::default()
        };
        assert_eq!(bad.to_query(None).unwrap_err().field, "limit");
        let ok = SearchFilters {
            payee: Some("0xAA".into()),
            ..SearchFilters::default()
        };
        assert_eq!(ok.to_query(None).unwrap().payee.as_deref(), Some("0xaa"));
        assert_eq!(next_cursor(Some(9), 2, 2), Some(9));
        assert_eq!(next_cursor(Some(9), 1, 2), None);
    }
}
