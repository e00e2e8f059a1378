//! The dashboard's in-memory index of the evidence chain: a bounded ring of the newest records
//! (the live feed) and per-minute aggregates (the charts). It is derived data: every replica
//! folds the shared chain itself, each record read once per process, so the summary answers
//! from memory however long the chain grows. It must never be the source of truth for any
//! decision; the store is.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::Mutex;

use crate::admin::normalise_pay_to;
use crate::store::{EvidenceRecord, Store, StoreError};

/// Newest records kept for the live feed's backlog and for slow subscribers.
pub const RECENT_MAX: usize = 2_000;
/// Records folded by one call at most, so a first call on a long chain stays bounded.
pub const FOLD_MAX_PER_CALL: usize = 20_000;
/// Records read from the store per query while folding.
const FOLD_PAGE: u32 = 1_000;
/// Aggregate cells kept at most; the oldest minutes are dropped beyond it.
const CELLS_MAX: usize = 500_000;
const MINUTE_MS: i64 = 60_000;

/// One evidence record, reduced to what the dashboard shows and filters on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// Position in the chain.
    pub seq: i64,
    /// When the decision was made.
    pub created_at_ms: u64,
    /// `verify`, `settle`, `settle_forward`, `admin.*`, ...
    pub kind: String,
    /// `allow`, `deny`, `review`, ...
    pub decision: String,
    /// The payment, when one was decoded.
    pub fingerprint: Option<String>,
    /// CAIP-2 network.
    pub network: Option<String>,
    /// Token contract or mint.
    pub asset: Option<String>,
    /// Atomic amount (decimal string).
    pub amount: Option<String>,
    /// The asset's decimals, when known.
    pub decimals: Option<u8>,
    /// The payer, when known.
    pub payer: Option<String>,
    /// The payee (normalised: lower-case for EVM).
    pub pay_to: Option<String>,
    /// `host/path` of the paid resource.
    pub endpoint: Option<String>,
    /// Whether this record reports money moved (a successful settle).
    pub settled: bool,
    /// The settlement transaction, when known.
    pub transaction: Option<String>,
    /// The controls that refused or held it, as `step:code`.
    pub controls: Vec<String>,
    /// The risk rules that fired (enforced ones).
    pub rules: Vec<String>,
    /// The risk score, when the payment was scored.
    pub risk_score: Option<u32>,
}

/// Which records a viewer wants (all optional; combined with AND).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Exact decision.
    pub decision: Option<String>,
    /// Exact endpoint (`host/path`).
    pub endpoint: Option<String>,
    /// Payer, compared case-insensitively for EVM addresses.
    pub payer: Option<String>,
    /// The payees the viewer may see; `None` for all (operators and auditors).
    pub payees: Option<Vec<String>>,
}

impl Filter {
    /// Whether `entry` passes.
    pub fn matches(&self, entry: &Entry) -> bool {
        if let Some(payees) = &self.payees {
            match &entry.pay_to {
                Some(pay_to) if payees.contains(pay_to) => {}
                _ => return false,
            }
        }
        let same = |want: &Option<String>, have: &Option<String>| match want {
            None => true,
            Some(w) => have.as_deref().map(normalise_pay_to) == Some(normalise_pay_to(w)),
        };
        self.decision
            .as_ref()
            .is_none_or(|d| d.eq_ignore_ascii_case(&entry.decision))
            && same(&self.endpoint, &entry.endpoint)
            && same(&self.payer, &entry.payer)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SpendKey {
    payee: Arc<str>,
    endpoint: Arc<str>,
    payer: Arc<str>,
    asset: Arc<str>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Spend {
    count: u64,
    amount: u128,
}

/// Aggregates of one minute, per payee so seller tokens see only their own.
#[derive(Debug, Default)]
struct Minute {
    decisions: HashMap<(Arc<str>, Arc<str>), u64>,
    spend: HashMap<SpendKey, Spend>,
    controls: HashMap<(Arc<str>, Arc<str>), u64>,
    rules: HashMap<(Arc<str>, Arc<str>), u64>,
}

impl Minute {
    fn cells(&self) -> usize {
        self.decisions.len() + self.spend.len() + self.controls.len() + self.rules.len()
    }
}

#[derive(Debug, Default)]
struct State {
    through_seq: i64,
    recent: VecDeque<Entry>,
    minutes: BTreeMap<i64, Minute>,
    cells: usize,
    /// Interned strings, so a million cells naming ten endpoints hold ten strings.
    names: HashMap<String, Arc<str>>,
    decimals: BTreeMap<String, u8>,
    dropped_before_ms: Option<i64>,
}

impl State {
    fn intern(&mut self, text: &str) -> Arc<str> {
        if let Some(name) = self.names.get(text) {
            return name.clone();
        }
        let name: Arc<str> = Arc::from(text);
        self.names.insert(text.to_owned(), name.clone());
        name
    }

    fn fold(&mut self, entry: Entry) {
        debug_assert!(entry.seq > self.through_seq, "records are folded in order");
        self.through_seq = entry.seq;
        let minute_ms =
            i64::try_from(entry.created_at_ms).unwrap_or(i64::MAX) / MINUTE_MS * MINUTE_MS;
        let payee = self.intern(entry.pay_to.as_deref().unwrap_or(""));
        let decision = self.intern(&entry.decision);
        let controls: Vec<Arc<str>> = entry.controls.iter().map(|c| self.intern(c)).collect();
        let rules: Vec<Arc<str>> = entry.rules.iter().map(|r| self.intern(r)).collect();
        let spend = if entry.settled {
            let amount = entry
                .amount
                .as_deref()
                .and_then(|a| a.parse::<u128>().ok())
                .unwrap_or(0);
            Some((
                SpendKey {
                    payee: payee.clone(),
                    endpoint: self.intern(entry.endpoint.as_deref().unwrap_or("(none)")),
                    payer: self.intern(entry.payer.as_deref().unwrap_or("(unknown)")),
                    asset: self.intern(entry.asset.as_deref().unwrap_or("(unknown)")),
                },
                amount,
            ))
        } else {
            None
        };
        if let (Some(asset), Some(decimals)) = (&entry.asset, entry.decimals) {
            self.decimals.entry(asset.clone()).or_insert(decimals);
        }
        let minute = self.minutes.entry(minute_ms).or_default();
        let before = minute.cells();
        if entry.kind == "verify" || entry.kind == "settle" {
            *minute
                .decisions
                .entry((payee.clone(), decision))
                .or_default() += 1;
        }
        for control in controls {
            *minute.controls.entry((payee.clone(), control)).or_default() += 1;
        }
        for rule in rules {
            *minute.rules.entry((payee.clone(), rule)).or_default() += 1;
        }
        if let Some((key, amount)) = spend {
            let cell = minute.spend.entry(key).or_default();
            cell.count += 1;
            cell.amount = cell.amount.saturating_add(amount);
        }
        self.cells += minute.cells() - before;
        while self.cells > CELLS_MAX && self.minutes.len() > 1 {
            if let Some((at, dropped)) = self.minutes.pop_first() {
                self.cells -= dropped.cells();
                self.dropped_before_ms = Some(at + MINUTE_MS);
            }
        }
        if self.recent.len() == RECENT_MAX {
            self.recent.pop_front();
        }
        self.recent.push_back(entry);
    }
}

/// The index; cheap to share (`Arc`), safe to use from every request.
#[derive(Debug, Default)]
pub struct Index {
    state: Mutex<State>,
}

/// How far the index has read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Progress {
    /// The last record folded.
    pub through_seq: i64,
    /// Whether the chain had more records than one call folds (call again).
    pub complete: bool,
}

impl Index {
    /// Folds records appended since the last call (at most [`FOLD_MAX_PER_CALL`]).
    pub async fn catch_up(&self, store: &dyn Store) -> Result<Progress, StoreError> {
        let mut state = self.state.lock().await;
        let mut folded = 0usize;
        loop {
            let page = store.evidence_after(state.through_seq, FOLD_PAGE).await?;
            let full = page.len() == FOLD_PAGE as usize;
            folded += page.len();
            for record in page {
                state.fold(entry_of(&record));
            }
            if !full {
                return Ok(Progress {
                    through_seq: state.through_seq,
                    complete: true,
                });
            }
            if folded >= FOLD_MAX_PER_CALL {
                return Ok(Progress {
                    through_seq: state.through_seq,
                    complete: false,
                });
            }
        }
    }

    /// Up to `limit` entries after `after_seq` that pass `filter`, oldest first, and whether
    /// records between `after_seq` and the oldest kept one were already dropped from memory.
    pub async fn entries_after(
        &self,
        after_seq: i64,
        filter: &Filter,
        limit: usize,
    ) -> (Vec<Entry>, bool) {
        let state = self.state.lock().await;
        let gap = state
            .recent
            .front()
            .is_some_and(|oldest| oldest.seq > after_seq + 1);
        let out = state
            .recent
            .iter()
            .filter(|e| e.seq > after_seq && filter.matches(e))
            .take(limit)
            .cloned()
            .collect();
        (out, gap)
    }

    /// The newest `limit` entries that pass `filter`, oldest first.
    pub async fn newest(&self, filter: &Filter, limit: usize) -> Vec<Entry> {
        let state = self.state.lock().await;
        let mut out: Vec<Entry> = state
            .recent
            .iter()
            .rev()
            .filter(|e| filter.matches(e))
            .take(limit)
            .cloned()
            .collect();
        out.reverse();
        out
    }

    /// The last sequence number folded.
    pub async fn through_seq(&self) -> i64 {
        self.state.lock().await.through_seq
    }

    /// Aggregates over `[since_ms, until_ms)` in buckets of `bucket_ms`, for `payees`
    /// (`None`: all). `until_ms` defaults to just after the newest record.
    pub async fn summary(&self, query: &SummaryQuery, payees: Option<&[String]>) -> Summary {
        let state = self.state.lock().await;
        let newest_ms = state
            .recent
            .back()
            .map(|e| i64::try_from(e.created_at_ms).unwrap_or(i64::MAX))
            .unwrap_or(0);
        let until_ms = query
            .until_ms
            .unwrap_or(newest_ms / MINUTE_MS * MINUTE_MS + MINUTE_MS);
        let since_ms = query
            .since_ms
            .unwrap_or(until_ms.saturating_sub(24 * 60 * MINUTE_MS));
        let span_ms = (until_ms - since_ms).max(MINUTE_MS);
        let bucket_ms = query.bucket_ms.unwrap_or_else(|| {
            // About sixty bars, whole minutes.
            let per = (span_ms + 59 * MINUTE_MS) / (60 * MINUTE_MS);
            per.max(1) * MINUTE_MS
        });
        let buckets = usize::try_from((span_ms + bucket_ms - 1) / bucket_ms).unwrap_or(0);
        let visible = |payee: &Arc<str>| payees.is_none_or(|p| p.iter().any(|x| **x == **payee));
        let mut totals = Totals::default();
        let mut by_endpoint = Series::new(buckets);
        let mut by_payer = Series::new(buckets);
        let mut by_asset = Series::new(buckets);
        let mut controls: HashMap<Arc<str>, u64> = HashMap::new();
        let mut rules: HashMap<Arc<str>, u64> = HashMap::new();
        for (at, minute) in state
            .minutes
            .range(since_ms / MINUTE_MS * MINUTE_MS..until_ms)
        {
            // A minute straddling `since_ms` counts whole: minutes are the resolution.
            let bucket = usize::try_from((at - since_ms).max(0) / bucket_ms)
                .unwrap_or(0)
                .min(buckets.saturating_sub(1));
            for ((payee, decision), n) in &minute.decisions {
                if visible(payee) {
                    totals.add(decision, *n);
                }
            }
            for (key, spend) in &minute.spend {
                if !visible(&key.payee) {
                    continue;
                }
                totals.settled += spend.count;
                let endpoint = format!("{} · {}", key.endpoint, key.asset);
                by_endpoint.add(&endpoint, &key.asset, bucket, *spend);
                by_payer.add(
                    &format!("{} · {}", key.payer, key.asset),
                    &key.asset,
                    bucket,
                    *spend,
                );
                by_asset.add(&key.asset, &key.asset, bucket, *spend);
            }
            for ((payee, control), n) in &minute.controls {
                if visible(payee) {
                    *controls.entry(control.clone()).or_default() += n;
                }
            }
            for ((payee, rule), n) in &minute.rules {
                if visible(payee) {
                    *rules.entry(rule.clone()).or_default() += n;
                }
            }
        }
        Summary {
            since_ms,
            until_ms,
            bucket_ms,
            buckets: (0..buckets)
                .map(|i| since_ms + bucket_ms * i64::try_from(i).unwrap_or(0))
                .collect(),
            through_seq: state.through_seq,
            complete: true,
            data_dropped_before_ms: state.dropped_before_ms,
            totals,
            spend: SpendSummary {
                by_endpoint: by_endpoint.top(TOP_SERIES),
                by_payer: by_payer.top(TOP_SERIES),
                by_asset: by_asset.top(TOP_SERIES),
            },
            denials: Denials {
                by_control: counted(controls),
                by_rule: counted(rules),
            },
            decimals: state.decimals.clone(),
        }
    }
}

const TOP_SERIES: usize = 8;

/// What `/admin/dashboard/summary` was asked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct SummaryQuery {
    /// Start, ms since the epoch (default: 24 h before `until`).
    pub since_ms: Option<i64>,
    /// End, ms (default: the minute after the newest record).
    pub until_ms: Option<i64>,
    /// Bucket width, ms (a whole number of minutes; default: about 60 buckets).
    pub bucket_ms: Option<i64>,
}

/// The dashboard's aggregates.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Start of the window, ms.
    pub since_ms: i64,
    /// End of the window, ms.
    pub until_ms: i64,
    /// Bucket width, ms.
    pub bucket_ms: i64,
    /// Start of each bucket, ms.
    pub buckets: Vec<i64>,
    /// The last evidence record included.
    pub through_seq: i64,
    /// False when the index had not yet read the whole chain (ask again).
    pub complete: bool,
    /// Set when memory bounds dropped aggregates older than this.
    pub data_dropped_before_ms: Option<i64>,
    /// Decision counts (verify and settle gates).
    pub totals: Totals,
    /// Settled amounts.
    pub spend: SpendSummary,
    /// Refusals and holds.
    pub denials: Denials,
    /// Decimals of each asset seen, for display.
    pub decimals: BTreeMap<String, u8>,
}

/// Decision counts.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Totals {
    /// Allowed decisions.
    pub allow: u64,
    /// Refusals.
    pub deny: u64,
    /// Held for review.
    pub review: u64,
    /// Anything else (errors).
    pub other: u64,
    /// Successful settlements.
    pub settled: u64,
}

impl Totals {
    fn add(&mut self, decision: &str, n: u64) {
        match decision {
            "allow" => self.allow += n,
            "deny" => self.deny += n,
            "review" => self.review += n,
            _ => self.other += n,
        }
    }
}

/// Settled amounts by endpoint, payer and asset.
#[derive(Debug, Clone, Serialize)]
pub struct SpendSummary {
    /// Per `endpoint · asset`.
    pub by_endpoint: Vec<SpendSeries>,
    /// Per `payer · asset`.
    pub by_payer: Vec<SpendSeries>,
    /// Per asset.
    pub by_asset: Vec<SpendSeries>,
}

/// One line of a spend chart.
#[derive(Debug, Clone, Serialize)]
pub struct SpendSeries {
    /// What it is for (`(other)` gathers the rest).
    pub key: String,
    /// The asset its amounts are in (empty when `(other)` mixes assets).
    pub asset: String,
    /// Settlements.
    pub count: u64,
    /// Total atomic amount (decimal string: may exceed 64 bits).
    pub amount: String,
    /// Atomic amount per bucket (decimal strings).
    pub series: Vec<String>,
}

/// Refusal and hold counts.
#[derive(Debug, Clone, Serialize)]
pub struct Denials {
    /// Per control (`step:code`), most frequent first.
    pub by_control: Vec<Counted>,
    /// Per risk rule, most frequent first.
    pub by_rule: Vec<Counted>,
}

/// A name and how often.
#[derive(Debug, Clone, Serialize)]
pub struct Counted {
    /// The control or rule.
    pub key: String,
    /// How many records.
    pub count: u64,
}

fn counted(map: HashMap<Arc<str>, u64>) -> Vec<Counted> {
    let mut out: Vec<Counted> = map
        .into_iter()
        .map(|(key, count)| Counted {
            key: key.to_string(),
            count,
        })
        .collect();
    out.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.key.cmp(&b.key)));
    out
}

struct Series {
    buckets: usize,
    lines: HashMap<String, (String, u64, u128, Vec<u128>)>,
}

impl Series {
    fn new(buckets: usize) -> Self {
        Self {
            buckets,
            lines: HashMap::new(),
        }
    }

    fn add(&mut self, key: &str, asset: &str, bucket: usize, spend: Spend) {
        let buckets = self.buckets;
        let line = self
            .lines
            .entry(key.to_owned())
            .or_insert_with(|| (asset.to_owned(), 0, 0, vec![0; buckets]));
        line.1 += spend.count;
        line.2 = line.2.saturating_add(spend.amount);
        if let Some(slot) = line.3.get_mut(bucket) {
            *slot = slot.saturating_add(spend.amount);
        }
    }

    /// The `n` largest lines by amount, the rest summed into `(other)`.
    fn top(self, n: usize) -> Vec<SpendSeries> {
        let mut lines: Vec<_> = self.lines.into_iter().collect();
        lines.sort_by(|a, b| b.1.2.cmp(&a.1.2).then_with(|| a.0.cmp(&b.0)));
        let rest = if lines.len() > n {
            lines.split_off(n)
        } else {
            Vec::new()
        };
        let show = |key: String, (asset, count, amount, series): (String, u64, u128, Vec<u128>)| {
            SpendSeries {
                key,
                asset,
                count,
                amount: amount.to_string(),
                series: series.iter().map(u128::to_string).collect(),
            }
        };
        let mut out: Vec<SpendSeries> = lines.into_iter().map(|(k, v)| show(k, v)).collect();
        if !rest.is_empty() {
            let mut other = (String::new(), 0u64, 0u128, vec![0u128; self.buckets]);
            for (_, (_, count, amount, series)) in rest {
                other.1 += count;
                other.2 = other.2.saturating_add(amount);
                for (slot, v) in other.3.iter_mut().zip(series) {
                    *slot = slot.saturating_add(v);
                }
            }
            out.push(show("(other)".into(), other));
        }
        out
    }
}

// === Reading evidence bodies ===

/// The parts of an evidence body the dashboard reads; everything else is skipped unparsed.
/// Lenient on purpose: a record whose body has another shape still shows, just with less.
#[derive(Debug, Default, Deserialize)]
struct BodyPeek {
    #[serde(default)]
    payment: Option<Value>,
    #[serde(default)]
    verdicts: Option<Vec<Value>>,
    #[serde(default)]
    response: Option<Value>,
    #[serde(default)]
    risk: Option<RiskPeek>,
}

#[derive(Debug, Default, Deserialize)]
struct RiskPeek {
    #[serde(default)]
    assessment: Option<Value>,
}

/// Reduces one stored record to an [`Entry`].
pub fn entry_of(record: &EvidenceRecord) -> Entry {
    let body: BodyPeek = serde_json::from_str(&record.body).unwrap_or_default();
    let payment = body.payment.unwrap_or(Value::Null);
    let text = |key: &str| payment.get(key).and_then(Value::as_str).map(str::to_owned);
    let resource = text("resource");
    let controls = body
        .verdicts
        .unwrap_or_default()
        .iter()
        .filter(|v| matches!(v["outcome"].as_str(), Some("deny" | "review")))
        .flat_map(|v| {
            let step = v["step"].as_str().unwrap_or("unknown").to_owned();
            v["reasons"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(move |r| r["code"].as_str().map(|c| format!("{step}:{c}")))
                .collect::<Vec<_>>()
        })
        .collect();
    let assessment = body.risk.and_then(|r| r.assessment).unwrap_or(Value::Null);
    let rules = assessment["contributions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["fired"].as_bool() == Some(true) && c["mode"].as_str() != Some("shadow"))
        .filter_map(|c| c["rule"].as_str().map(str::to_owned))
        .collect();
    let response = body.response.unwrap_or(Value::Null);
    let settled = record.kind == "settle"
        && record.decision == "allow"
        && response["success"].as_bool() == Some(true);
    Entry {
        seq: record.seq,
        created_at_ms: record.created_at_ms,
        kind: record.kind.clone(),
        decision: record.decision.clone(),
        fingerprint: record.fingerprint.clone(),
        network: text("network"),
        asset: text("asset"),
        amount: text("amount"),
        decimals: payment["decimals"]
            .as_u64()
            .and_then(|d| u8::try_from(d).ok()),
        payer: text("payer"),
        pay_to: text("pay_to").map(|p| normalise_pay_to(&p)),
        endpoint: resource.as_deref().and_then(endpoint_of),
        settled,
        transaction: response["transaction"]
            .as_str()
            .filter(|t| !t.is_empty())
            .map(str::to_owned),
        controls,
        rules,
        risk_score: assessment["score"]
            .as_u64()
            .and_then(|s| u32::try_from(s).ok()),
    }
}

/// `host/path` of a resource URL, as the policy names endpoints.
fn endpoint_of(resource: &str) -> Option<String> {
    let url = reqwest::Url::parse(resource).ok()?;
    let host = url.host_str()?.to_ascii_lowercase();
    Some(match url.port() {
        Some(port) => format!("{host}:{port}{}", url.path()),
        None => format!("{host}{}", url.path()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(seq: i64, at_ms: u64, kind: &str, decision: &str, body: Value) -> EvidenceRecord {
        EvidenceRecord {
            seq,
            created_at_ms: at_ms,
            kind: kind.into(),
            gate: None,
            fingerprint: Some(format!("fp-{seq}")),
            decision: decision.into(),
            request_id: "r".into(),
            body: body.to_string(),
            prev_hash: String::new(),
            hash: String::new(),
        }
    }

    fn payment(payer: &str, pay_to: &str, amount: &str) -> Value {
        json!({"network": "eip155:84532", "asset": "0xa", "amount": amount, "decimals": 6,
               "payer": payer, "pay_to": pay_to, "resource": "https://API.x.com/p?q=1"})
    }

    #[test]
    fn entries_read_payment_controls_rules_and_settlement() {
        let settled = entry_of(&record(
            1,
            5,
            "settle",
            "allow",
            json!({"payment": payment("0xP", "0xAB", "7"), "response": {"success": true, "transaction": "0xt"}}),
        ));
        assert!(settled.settled);
        assert_eq!(settled.endpoint.as_deref(), Some("api.x.com/p"));
        assert_eq!(settled.pay_to.as_deref(), Some("0xab"));
        assert_eq!(settled.transaction.as_deref(), Some("0xt"));

        let denied = entry_of(&record(
            2,
            5,
            "verify",
            "deny",
            json!({"payment": payment("0xP", "0xab", "7"),
                   "verdicts": [{"step": "chain", "outcome": "allow", "reasons": []},
                                {"step": "policy", "outcome": "deny", "reasons": [{"code": "cap_exceeded", "message": "m"}]}],
                   "risk": {"assessment": {"score": 40, "contributions": [
                       {"rule": "r1", "fired": true, "mode": "enforce"},
                       {"rule": "r2", "fired": false, "mode": "enforce"},
                       {"rule": "r3", "fired": true, "mode": "shadow"}]}}}),
        ));
        assert!(!denied.settled);
        assert_eq!(denied.controls, ["policy:cap_exceeded"]);
        assert_eq!(denied.rules, ["r1"]);
        assert_eq!(denied.risk_score, Some(40));

        // A body of another shape still yields an entry.
        let odd = entry_of(&record(
            3,
            5,
            "admin.x",
            "allow",
            json!({"payment": 3, "verdicts": "no"}),
        ));
        assert_eq!(odd.payer, None);
        assert!(odd.controls.is_empty());
    }

    #[tokio::test]
    async fn summary_buckets_spend_and_hides_other_payees() {
        let index = Index::default();
        {
            let mut state = index.state.lock().await;
            let records = [
                record(
                    1,
                    60_000,
                    "settle",
                    "allow",
                    json!({"payment": payment("0xp1", "0xaa", "100"), "response": {"success": true}}),
                ),
                record(
                    2,
                    125_000,
                    "settle",
                    "allow",
                    json!({"payment": payment("0xp2", "0xaa", "50"), "response": {"success": true}}),
                ),
                record(
                    3,
                    125_000,
                    "settle",
                    "allow",
                    json!({"payment": payment("0xp2", "0xbb", "9"), "response": {"success": true}}),
                ),
                record(
                    4,
                    130_000,
                    "verify",
                    "deny",
                    json!({"payment": payment("0xp2", "0xaa", "1"), "verdicts": [{"step": "policy", "outcome": "deny", "reasons": [{"code": "x"}]}]}),
                ),
            ];
            for r in &records {
                state.fold(entry_of(r));
            }
        }
        let query = SummaryQuery {
            since_ms: Some(60_000),
            until_ms: Some(180_000),
            bucket_ms: Some(60_000),
        };
        let all = index.summary(&query, None).await;
        assert_eq!(all.buckets, [60_000, 120_000]);
        assert_eq!(all.totals.allow, 3);
        assert_eq!(all.totals.deny, 1);
        let asset = &all.spend.by_asset[0];
        assert_eq!(
            (asset.amount.as_str(), asset.series.clone()),
            ("159", vec!["100".into(), "59".into()])
        );
        assert_eq!(all.denials.by_control[0].key, "policy:x");

        let seller = index.summary(&query, Some(&["0xbb".to_owned()])).await;
        assert_eq!(seller.spend.by_asset[0].amount, "9");
        assert_eq!(seller.totals.deny, 0);
        assert!(seller.denials.by_control.is_empty());

        let filter = Filter {
            payer: Some("0xP2".into()),
            payees: Some(vec!["0xaa".into()]),
            ..Filter::default()
        };
        let (entries, gap) = index.entries_after(0, &filter, 10).await;
        assert_eq!(entries.iter().map(|e| e.seq).collect::<Vec<_>>(), [2, 4]);
        assert!(!gap);
    }
}
