//! The operator dashboard: static pages embedded in the binary (`/dashboard`, no build step,
//! no CDN) and the two admin routes only the dashboard needs: a live feed of evidence as
//! server-sent events and aggregates for its charts. Every other number the pages show comes
//! from the admin API of the area that owns it (evidence, policy, reviews).
//!
//! The assets are public (they hold no data); every data call carries the admin token, so the
//! scopes of the admin API apply unchanged: a seller token sees only its payee's records.
//! This module must not decide anything about payments: it reads the evidence chain.

pub mod index;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Extension, Path, RawQuery, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures_util::stream::Stream;
use http::{HeaderMap, HeaderValue, header};

use crate::admin::Principal;
use crate::server::AppState;
use crate::server::error::ApiError;
use index::{Entry, Filter, Index, SummaryQuery};

/// How often a live feed looks for new records.
const LIVE_POLL: Duration = Duration::from_millis(500);
/// Records sent at once on connect (`backlog`), at most.
const BACKLOG_MAX: usize = 500;
/// Records per event batch, at most (a slow subscriber catches up over several polls).
const BATCH_MAX: usize = 200;
/// How long one event stream lives. Browsers reconnect on their own (after [`RETRY`], sending
/// `Last-Event-ID`, from which the feed resumes), and a graceful shutdown, which waits for open
/// responses, is never held up longer than this.
const STREAM_LIFETIME: Duration = Duration::from_secs(30);
/// The reconnection delay the stream asks browsers for.
const RETRY: Duration = Duration::from_secs(1);
/// Buckets a summary may ask for, at most.
const BUCKETS_MAX: i64 = 1_440;
const MINUTE_MS: i64 = 60_000;

/// One embedded file: its URL name, content type and bytes.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
}

macro_rules! asset {
    ($name:literal, $type:expr) => {
        Asset {
            name: $name,
            content_type: $type,
            body: include_str!(concat!("assets/", $name)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

static ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("style.css", "text/css; charset=utf-8"),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("ui.js", JS),
    asset!("charts.js", JS),
    asset!("live.js", JS),
    asset!("reviews.js", JS),
    asset!("policies.js", JS),
    asset!("payment.js", JS),
];

/// The public routes: `/dashboard` and its assets.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/dashboard", get(|| async { serve_asset("index.html") }))
        .route(
            "/dashboard/",
            get(|| async { Redirect::permanent("/dashboard") }),
        )
        .route(
            "/dashboard/assets/{name}",
            get(|Path(name): Path<String>| async move { serve_asset(&name) }),
        )
}

fn serve_asset(name: &str) -> Response {
    let Some(asset) = ASSETS.iter().find(|a| a.name == name) else {
        return ApiError::NotFound("no such dashboard asset".into()).into_response();
    };
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    // The page may only talk to its own origin and run its own scripts.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; \
             connect-src 'self'; frame-ancestors 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    (headers, asset.body).into_response()
}

/// The admin routes (nested under `/admin`): `/dashboard/live` and `/dashboard/summary`.
pub fn admin_routes() -> Router<AppState> {
    Router::new()
        .route("/dashboard/live", get(live))
        .route("/dashboard/summary", get(summary))
        .layer(Extension(Arc::new(Index::default())))
}

/// The query string as decoded pairs (repeated keys: the last wins).
fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    let Some(query) = query else {
        return Vec::new();
    };
    let mut url = match reqwest::Url::parse("http://query.invalid/") {
        Ok(url) => url,
        Err(_) => return Vec::new(),
    };
    url.set_query(Some(query));
    url.query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn bad(field: &str, message: &str) -> ApiError {
    ApiError::BadRequest {
        code: "invalid_query",
        field: Some(field.to_owned()),
        message: message.to_owned(),
    }
}

fn parse_int(field: &str, value: &str) -> Result<i64, ApiError> {
    value
        .parse::<i64>()
        .map_err(|_| bad(field, "must be an integer"))
}

/// The filter and cursor a live feed was asked for.
#[derive(Debug, Default)]
struct LiveQuery {
    filter: Filter,
    after: Option<i64>,
    backlog: usize,
}

fn live_query(query: Option<&str>, principal: &Principal) -> Result<LiveQuery, ApiError> {
    let mut out = LiveQuery {
        backlog: 50,
        ..LiveQuery::default()
    };
    for (key, value) in query_pairs(query) {
        let value = value.trim().to_owned();
        match key.as_str() {
            "access_token" => {}
            "decision" if !value.is_empty() => out.filter.decision = Some(value),
            "endpoint" if !value.is_empty() => out.filter.endpoint = Some(value),
            "payer" if !value.is_empty() => out.filter.payer = Some(value),
            "decision" | "endpoint" | "payer" => {}
            "after" => out.after = Some(parse_int("after", &value)?.max(0)),
            "backlog" => {
                let n = parse_int("backlog", &value)?;
                out.backlog = usize::try_from(n)
                    .ok()
                    .filter(|n| *n <= BACKLOG_MAX)
                    .ok_or_else(|| bad("backlog", "must be between 0 and 500"))?;
            }
            other => return Err(bad(other, "unknown query parameter")),
        }
    }
    out.filter.payees = principal.visible_payees();
    Ok(out)
}

/// `GET /admin/dashboard/live`: evidence records as server-sent events (`event: evidence`,
/// `id: <seq>`, data: one entry), newest `backlog` first, then each new one within about half
/// a second. Filters: `decision`, `endpoint`, `payer`; resume with `after=<seq>` or the
/// `Last-Event-ID` header. Each stream ends after 30 s and browsers reconnect where they left
/// off, so an open dashboard never holds up a graceful shutdown for long. A seller token sees only its payee's records. If the feed fell
/// further behind than the index keeps in memory, a `gap` event says so (the page then reloads
/// from the evidence API). 400 on a bad query.
async fn live(
    State(state): State<AppState>,
    Extension(index): Extension<Arc<Index>>,
    principal: Principal,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let mut query = live_query(query.as_deref(), &principal)?;
    if query.after.is_none() {
        query.after = headers
            .get("last-event-id")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<i64>().ok());
    }
    let store = state.pipeline.store().clone();
    index
        .catch_up(store.as_ref())
        .await
        .map_err(|e| ApiError::NotReady(e.public_message().into()))?;
    let (first, cursor) = match query.after {
        Some(after) => (Vec::new(), after),
        None => {
            let backlog = index.newest(&query.filter, query.backlog).await;
            (backlog, index.through_seq().await)
        }
    };
    let filter = query.filter;
    let start = Feed {
        cursor,
        pending: first,
        first_poll: true,
        hello: true,
        ends_at: tokio::time::Instant::now() + STREAM_LIFETIME,
    };
    let stream = futures_util::stream::unfold(start, move |mut feed| {
        let (index, store, filter) = (index.clone(), store.clone(), filter.clone());
        async move {
            if feed.hello {
                feed.hello = false;
                return Some((Ok(Event::default().retry(RETRY).comment("gatehouse")), feed));
            }
            loop {
                if let Some(entry) = (!feed.pending.is_empty()).then(|| feed.pending.remove(0)) {
                    feed.cursor = feed.cursor.max(entry.seq);
                    return Some((Ok(evidence_event(&entry)), feed));
                }
                if !feed.first_poll {
                    if tokio::time::Instant::now() >= feed.ends_at {
                        return None;
                    }
                    tokio::time::sleep(LIVE_POLL).await;
                }
                feed.first_poll = false;
                if let Err(error) = index.catch_up(store.as_ref()).await {
                    tracing::warn!(error = %error, "Dashboard live feed could not read evidence.");
                    continue;
                }
                let (entries, gap) = index.entries_after(feed.cursor, &filter, BATCH_MAX).await;
                // Records the filter skips still move the cursor, so they are not rescanned.
                let through = index.through_seq().await;
                if gap {
                    feed.cursor = through;
                    let event = Event::default()
                        .event("gap")
                        .data(format!("{{\"through_seq\":{through}}}"));
                    return Some((Ok(event), feed));
                }
                match entries.last() {
                    Some(last) if entries.len() == BATCH_MAX => feed.cursor = last.seq,
                    _ => feed.cursor = through,
                }
                feed.pending = entries;
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

struct Feed {
    cursor: i64,
    pending: Vec<Entry>,
    first_poll: bool,
    hello: bool,
    ends_at: tokio::time::Instant,
}

fn evidence_event(entry: &Entry) -> Event {
    let data = serde_json::to_string(entry).unwrap_or_else(|_| "{}".into());
    Event::default()
        .event("evidence")
        .id(entry.seq.to_string())
        .data(data)
}

fn summary_query(query: Option<&str>) -> Result<SummaryQuery, ApiError> {
    let mut out = SummaryQuery::default();
    for (key, value) in query_pairs(query) {
        match key.as_str() {
            "access_token" => {}
            "since" => out.since_ms = Some(parse_int("since", &value)?),
            "until" => out.until_ms = Some(parse_int("until", &value)?),
            "bucket" => {
                let secs = parse_int("bucket", &value)?;
                if secs < 60 || secs % 60 != 0 || secs > 31 * 86_400 {
                    return Err(bad(
                        "bucket",
                        "must be a whole number of minutes, in seconds (60 to 2678400)",
                    ));
                }
                out.bucket_ms = Some(secs * 1_000);
            }
            other => return Err(bad(other, "unknown query parameter")),
        }
    }
    if let (Some(since), Some(until)) = (out.since_ms, out.until_ms)
        && since >= until
    {
        return Err(bad("since", "must be before until"));
    }
    for (field, value) in [("since", out.since_ms), ("until", out.until_ms)] {
        if value.is_some_and(|v| !(0..=i64::MAX / 4).contains(&v)) {
            return Err(bad(field, "must be milliseconds since the epoch"));
        }
    }
    if let (Some(since), Some(until), Some(bucket)) = (out.since_ms, out.until_ms, out.bucket_ms)
        && (until - since) / bucket > BUCKETS_MAX
    {
        return Err(bad(
            "bucket",
            "too many buckets for the window (at most 1440)",
        ));
    }
    Ok(out)
}

/// `GET /admin/dashboard/summary?since=<ms>&until=<ms>&bucket=<secs>`: decision totals, settled
/// spend per endpoint, payer and asset over time buckets, refusals by control and by risk
/// rule. Answered from the in-memory index (bounded work per call). Seller tokens see their
/// payee only. 400 on a bad query.
async fn summary(
    State(state): State<AppState>,
    Extension(index): Extension<Arc<Index>>,
    principal: Principal,
    RawQuery(query): RawQuery,
) -> Result<Json<index::Summary>, ApiError> {
    let mut query = summary_query(query.as_deref())?;
    let progress = index
        .catch_up(state.pipeline.store().as_ref())
        .await
        .map_err(|e| ApiError::NotReady(e.public_message().into()))?;
    // A defaulted window must not ask for more buckets than allowed either.
    if let (Some(since), Some(until), None) = (query.since_ms, query.until_ms, query.bucket_ms) {
        let per = ((until - since) / (60 * MINUTE_MS)).max(1);
        query.bucket_ms = Some(per * MINUTE_MS);
    }
    let payees = principal.visible_payees();
    let mut summary = index.summary(&query, payees.as_deref()).await;
    summary.complete = progress.complete;
    Ok(Json(summary))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::Scope;

    fn operator() -> Principal {
        Principal {
            name: "ops".into(),
            scopes: vec![Scope::Operator],
        }
    }

    #[test]
    fn every_asset_is_served_with_its_type() {
        for asset in ASSETS {
            let response = serve_asset(asset.name);
            assert_eq!(response.status(), 200, "{}", asset.name);
            assert!(!asset.body.is_empty());
        }
        assert_eq!(serve_asset("../Cargo.toml").status(), 404);
        assert_eq!(serve_asset("nope.js").status(), 404);
    }

    #[test]
    fn live_queries_parse_and_refuse_nonsense() {
        let q = live_query(
            Some("decision=deny&payer=0xAb&after=5&access_token=t"),
            &operator(),
        )
        .expect("valid");
        assert_eq!(q.filter.decision.as_deref(), Some("deny"));
        assert_eq!(q.after, Some(5));
        assert_eq!(q.filter.payees, None);
        assert!(live_query(Some("backlog=501"), &operator()).is_err());
        assert!(live_query(Some("after=x"), &operator()).is_err());
        assert!(live_query(Some("colour=red"), &operator()).is_err());
        let seller = Principal {
            name: "shop".into(),
            scopes: vec![Scope::Seller("0xab".into())],
        };
        let q = live_query(None, &seller).expect("valid");
        assert_eq!(q.filter.payees, Some(vec!["0xab".to_owned()]));
    }

    #[test]
    fn summary_queries_are_bounded() {
        assert!(summary_query(Some("since=0&until=60000&bucket=60")).is_ok());
        assert!(summary_query(Some("bucket=59")).is_err());
        assert!(summary_query(Some("bucket=90")).is_err());
        assert!(summary_query(Some("since=10&until=5")).is_err());
        assert!(summary_query(Some("since=-1")).is_err());
        assert!(summary_query(Some("since=0&until=8640000000&bucket=60")).is_err());
    }
}
