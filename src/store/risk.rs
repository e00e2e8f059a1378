//! Persistence for risk scoring: sessions, traces, wallet-proof nonces, AP2 mandate claims
//! and uses, the per-payment history the rules read, and review holds. Everything here is
//! shared across replicas through the database (a mandate id is claimed by one primary key).

use std::sync::LazyLock;

use async_trait::async_trait;
use serde::Serialize;

use super::StoreError;
use super::sql::SqlStore;
use super::sqlite_engine::{self, Param, bind_sqlx_as};

/// A stored risk session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    /// Session id (UUID v4).
    pub sid: String,
    /// Agent id (a DID, or the wallet).
    pub agent_id: String,
    /// The declared wallet (lowercase for EVM).
    pub wallet: String,
    /// Whether the wallet signed our nonce.
    pub wallet_proven: bool,
    /// The rest of the session as sent (app id, device, endpoint, budget), JSON.
    pub body: String,
    /// Created, unix ms.
    pub created_at_ms: u64,
    /// Expires, unix ms.
    pub expires_at_ms: u64,
}

/// A stored agent trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceRow {
    /// Trace id (UUID v4).
    pub tid: String,
    /// The session it belongs to.
    pub sid: String,
    /// The normalised trace (`TraceFacts` JSON).
    pub body: String,
    /// Created, unix ms.
    pub created_at_ms: u64,
}

/// One approved payment, as the history facts count it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RiskPaymentRow {
    /// The payment's fingerprint (one row per payment).
    pub fingerprint: String,
    /// The payer, when known.
    pub payer: Option<String>,
    /// The payee.
    pub pay_to: String,
    /// The resource URL.
    pub resource: Option<String>,
    /// Host + path of the resource.
    pub endpoint: Option<String>,
    /// Atomic amount, decimal.
    pub amount: String,
    /// The token (address or mint).
    pub asset: String,
    /// When, unix ms.
    pub created_at_ms: u64,
}

/// What the history facts are computed for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryQuery {
    /// The payer (history is empty without one).
    pub payer: Option<String>,
    /// The payee.
    pub pay_to: String,
    /// The resource URL.
    pub resource: Option<String>,
    /// Host + path.
    pub endpoint: Option<String>,
    /// The payment's token: the usual amount range is per endpoint and token.
    pub asset: String,
    /// The payment itself, never counted.
    pub fingerprint: String,
    /// Now, unix ms.
    pub now_ms: u64,
}

/// Counts from the store (see `HistoryFacts` for their meaning).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryCounts {
    /// Payer's approved payments in the last hour.
    pub payer_1h: u64,
    /// In the last 24 hours.
    pub payer_24h: u64,
    /// To the same resource in the last 5 minutes.
    pub same_resource_5m: u64,
    /// To the same payee, ever.
    pub to_payee: u64,
    /// Any payment to this endpoint before.
    pub endpoint_seen: u64,
    /// Free (amount 0) payments by this payer to this endpoint.
    pub free_to_endpoint: u64,
    /// Approved payments to this endpoint in this token (the last [`USUAL_RANGE_WINDOW`]),
    /// and their smallest and largest amounts (atomic units).
    pub endpoint_asset_payments: u64,
    /// See `endpoint_asset_payments`.
    pub endpoint_asset_range: Option<(String, String)>,
    /// The payer's disputes resolved against them (refund owed).
    pub disputes_upheld: u64,
    /// Whether a review (pending or decided) exists for this payment.
    pub has_review: bool,
}

/// A review hold's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReviewState {
    /// Waiting for an operator.
    Pending,
    /// An operator approved: a retry is allowed.
    Approved,
    /// An operator rejected: a retry is denied.
    Rejected,
}

impl ReviewState {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ReviewState::Pending => "pending",
            ReviewState::Approved => "approved",
            ReviewState::Rejected => "rejected",
        }
    }

    /// Parses the stored spelling.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "pending" => Some(ReviewState::Pending),
            "approved" => Some(ReviewState::Approved),
            "rejected" => Some(ReviewState::Rejected),
            _ => None,
        }
    }
}

/// A review hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Review {
    /// Review id (UUID v4).
    pub id: String,
    /// The held payment.
    pub fingerprint: String,
    /// Its state.
    pub state: ReviewState,
    /// The risk decision that opened it.
    pub decision_id: String,
    /// Payer.
    pub payer: Option<String>,
    /// Payee.
    pub pay_to: String,
    /// Atomic amount, decimal.
    pub amount: String,
    /// Resource URL.
    pub resource: Option<String>,
    /// Score at the time.
    pub score: u32,
    /// Reasons at the time.
    pub reasons: Vec<String>,
    /// Opened, unix ms.
    pub created_at_ms: u64,
    /// Decided, unix ms.
    pub decided_at_ms: Option<u64>,
    /// The operator who decided.
    pub decided_by: Option<String>,
    /// The operator's note.
    pub note: Option<String>,
}

/// Risk persistence (a supertrait of `Store`).
#[async_trait]
pub trait RiskStore: Send + Sync {
    /// Stores a single-use nonce.
    async fn put_risk_nonce(&self, nonce: &str, expires_at_ms: u64) -> Result<(), StoreError>;
    /// Consumes a nonce: true when it existed and had not expired (it is gone either way).
    async fn take_risk_nonce(&self, nonce: &str, now_ms: u64) -> Result<bool, StoreError>;
    /// Stores a session.
    async fn put_risk_session(&self, row: &SessionRow) -> Result<(), StoreError>;
    /// A session by id.
    async fn risk_session(&self, sid: &str) -> Result<Option<SessionRow>, StoreError>;
    /// Stores a trace.
    async fn put_risk_trace(&self, row: &TraceRow) -> Result<(), StoreError>;
    /// A trace by id.
    async fn risk_trace(&self, tid: &str) -> Result<Option<TraceRow>, StoreError>;
    /// The fingerprint holding a single-use mandate, if any (read only).
    async fn mandate_holder(&self, mandate_id: &str) -> Result<Option<String>, StoreError>;
    /// Claims a single-use mandate for `fingerprint`; returns the holder (this fingerprint
    /// when the claim won, another one when the mandate was already used).
    async fn claim_mandate(
        &self,
        mandate_id: &str,
        fingerprint: &str,
        now_ms: u64,
    ) -> Result<String, StoreError>;
    /// Records a payment under a mandate (idempotent per fingerprint).
    async fn record_mandate_use(
        &self,
        mandate_id: &str,
        fingerprint: &str,
        amount: &str,
        now_ms: u64,
    ) -> Result<(), StoreError>;
    /// Atomic amounts already paid under a mandate since `since_ms`, other payments only.
    async fn mandate_uses(
        &self,
        mandate_id: &str,
        except_fingerprint: &str,
        since_ms: u64,
    ) -> Result<Vec<String>, StoreError>;
    /// History counts for a payment.
    async fn risk_history(&self, query: &HistoryQuery) -> Result<HistoryCounts, StoreError>;
    /// Opens a pending review for a payment, or returns the one it already has.
    async fn open_review(&self, review: &Review) -> Result<Review, StoreError>;
    /// The review of a payment, if any.
    async fn review_for(&self, fingerprint: &str) -> Result<Option<Review>, StoreError>;
    /// A review by id.
    async fn review(&self, id: &str) -> Result<Option<Review>, StoreError>;
    /// Reviews, newest first, optionally in one state.
    async fn reviews(
        &self,
        state: Option<ReviewState>,
        limit: u32,
    ) -> Result<Vec<Review>, StoreError>;
    /// Decides a pending review; `None` when it does not exist or was already decided.
    async fn decide_review(
        &self,
        id: &str,
        state: ReviewState,
        by: &str,
        note: Option<&str>,
        now_ms: u64,
    ) -> Result<Option<Review>, StoreError>;
}

// The history counts of `risk_history`, in one round trip; every count stops at
// HISTORY_COUNT_CAP, so a payer or endpoint with a long history costs no more than one with a
// short one. A NULL payer, resource or endpoint matches nothing, which is the count wanted
// then. The last day's payments are read once, newest first, for both the day and the hour.
// The usual range is that of the endpoint's most recent approved payments in this token
// (index order): bounded work, and it follows a price change. Amounts are canonical decimal
// strings, so (length, text) order is numeric order.
macro_rules! recent_amounts {
    () => {
        "(SELECT amount FROM risk_payments WHERE endpoint = $8 AND asset = $10 \
         AND fingerprint <> $2 ORDER BY created_at_ms DESC LIMIT $11) AS u"
    };
}
const HISTORY_SQL: &str = concat!(
    "SELECT day.n, day.h, \
       (SELECT COUNT(*) FROM (SELECT 1 FROM risk_payments WHERE payer = $1 \
          AND fingerprint <> $2 AND pay_to = $6 LIMIT $9) AS p), \
       (SELECT COUNT(*) FROM (SELECT 1 FROM risk_payments WHERE payer = $1 \
          AND fingerprint <> $2 AND resource = $7 AND created_at_ms >= $5 LIMIT $9) AS r), \
       (SELECT COUNT(*) FROM (SELECT 1 FROM risk_payments WHERE endpoint = $8 \
          AND fingerprint <> $2 LIMIT 1) AS e), \
       (SELECT COUNT(*) FROM (SELECT 1 FROM risk_payments WHERE payer = $1 \
          AND fingerprint <> $2 AND endpoint = $8 AND amount = '0' LIMIT $9) AS f), \
       (SELECT COUNT(*) FROM ",
    recent_amounts!(),
    "), (SELECT amount FROM ",
    recent_amounts!(),
    " ORDER BY LENGTH(amount), amount LIMIT 1), (SELECT amount FROM ",
    recent_amounts!(),
    " ORDER BY LENGTH(amount) DESC, amount DESC LIMIT 1), \
       (SELECT COUNT(*) FROM disputes WHERE payer = $12 AND outcome = 'refund_owed'), \
       (SELECT COUNT(*) FROM risk_reviews WHERE fingerprint = $2) \
     FROM (SELECT COUNT(*) AS n, \
             CAST(COALESCE(SUM(CASE WHEN created_at_ms >= $3 THEN 1 ELSE 0 END), 0) AS BIGINT) AS h \
           FROM (SELECT created_at_ms FROM risk_payments WHERE payer = $1 \
             AND fingerprint <> $2 AND created_at_ms >= $4 \
             ORDER BY created_at_ms DESC LIMIT $9) AS recent) AS day"
);

/// [`HISTORY_SQL`] for SQLite. A bound LIMIT in a subquery makes SQLite re-prepare the
/// statement at every new binding (the plan may depend on the value): this statement was
/// parsed once per verify. Here the two limits are written in (a `$N` the text no longer names
/// is skipped when binding).
static HISTORY_SQLITE: LazyLock<String> = LazyLock::new(|| {
    HISTORY_SQL
        .replace("LIMIT $9", &format!("LIMIT {HISTORY_COUNT_CAP}"))
        .replace("LIMIT $11", &format!("LIMIT {USUAL_RANGE_WINDOW}"))
});

fn db_ms(ms: u64, field: &'static str) -> Result<i64, StoreError> {
    i64::try_from(ms).map_err(|_| StoreError::OutOfRange { field })
}

fn from_ms(ms: i64) -> u64 {
    u64::try_from(ms).unwrap_or(0)
}

/// `SELECT <every review column> FROM risk_reviews <tail>`, as one `&'static str`.
macro_rules! select_reviews {
    ($tail:literal) => {
        concat!(
            "SELECT id, fingerprint, state, decision_id, payer, pay_to, amount, resource, score, \
             reasons, created_at_ms, decided_at_ms, decided_by, note FROM risk_reviews ",
            $tail
        )
    };
}

#[derive(sqlx::FromRow)]
struct ReviewRow {
    id: String,
    fingerprint: String,
    state: String,
    decision_id: String,
    payer: Option<String>,
    pay_to: String,
    amount: String,
    resource: Option<String>,
    score: i64,
    reasons: String,
    created_at_ms: i64,
    decided_at_ms: Option<i64>,
    decided_by: Option<String>,
    note: Option<String>,
}

impl TryFrom<ReviewRow> for Review {
    type Error = StoreError;
    fn try_from(row: ReviewRow) -> Result<Self, StoreError> {
        let state = ReviewState::parse(&row.state)
            .ok_or_else(|| StoreError::Corrupt(format!("review state `{}`", row.state)))?;
        Ok(Review {
            id: row.id,
            fingerprint: row.fingerprint,
            state,
            decision_id: row.decision_id,
            payer: row.payer,
            pay_to: row.pay_to,
            amount: row.amount,
            resource: row.resource,
            score: u32::try_from(row.score).unwrap_or(0),
            reasons: serde_json::from_str(&row.reasons).unwrap_or_default(),
            created_at_ms: from_ms(row.created_at_ms),
            decided_at_ms: row.decided_at_ms.map(from_ms),
            decided_by: row.decided_by,
            note: row.note,
        })
    }
}

#[derive(sqlx::FromRow)]
struct SessionSqlRow {
    sid: String,
    agent_id: String,
    wallet: String,
    wallet_proven: i64,
    body: String,
    created_at_ms: i64,
    expires_at_ms: i64,
}

const HOUR_MS: u64 = 3_600_000;
const FIVE_MIN_MS: u64 = 300_000;
/// Where history counts stop (the shipped rules' largest threshold is 300 an hour): counting a
/// payment loop's thousands of rows on every verify would make each verify slower than the last.
pub const HISTORY_COUNT_CAP: i64 = 300;
/// How many of an endpoint's most recent approved payments make its usual amount range.
pub const USUAL_RANGE_WINDOW: i64 = 50;

// === impl RiskStore for SqlStore ===

#[async_trait]
impl RiskStore for SqlStore {
    async fn put_risk_nonce(&self, nonce: &str, expires_at_ms: u64) -> Result<(), StoreError> {
        let expires = db_ms(expires_at_ms, "expires_at_ms")?;
        // Expired nonces are swept on the way in, so the table stays small.
        sqlx::query("DELETE FROM risk_nonces WHERE expires_at_ms < $1")
            .bind(expires.saturating_sub(24 * HOUR_MS as i64))
            .execute(&self.pool)
            .await?;
        sqlx::query("INSERT INTO risk_nonces (nonce, expires_at_ms) VALUES ($1, $2)")
            .bind(nonce)
            .bind(expires)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn take_risk_nonce(&self, nonce: &str, now_ms: u64) -> Result<bool, StoreError> {
        let now = db_ms(now_ms, "now_ms")?;
        let row: Option<(i64,)> =
            sqlx::query_as("SELECT expires_at_ms FROM risk_nonces WHERE nonce = $1")
                .bind(nonce)
                .fetch_optional(&self.pool)
                .await?;
        // The delete decides who used it: of two concurrent takes only one removes the row.
        let deleted = sqlx::query("DELETE FROM risk_nonces WHERE nonce = $1")
            .bind(nonce)
            .execute(&self.pool)
            .await?;
        Ok(deleted.rows_affected() == 1 && row.is_some_and(|(expires,)| expires >= now))
    }

    async fn put_risk_session(&self, row: &SessionRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO risk_sessions (sid, agent_id, wallet, wallet_proven, body, \
             created_at_ms, expires_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(row.sid.as_str())
        .bind(row.agent_id.as_str())
        .bind(row.wallet.as_str())
        .bind(i64::from(row.wallet_proven))
        .bind(row.body.as_str())
        .bind(db_ms(row.created_at_ms, "created_at_ms")?)
        .bind(db_ms(row.expires_at_ms, "expires_at_ms")?)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn risk_session(&self, sid: &str) -> Result<Option<SessionRow>, StoreError> {
        let row: Option<SessionSqlRow> = sqlx::query_as(
            "SELECT sid, agent_id, wallet, wallet_proven, body, created_at_ms, expires_at_ms \
             FROM risk_sessions WHERE sid = $1",
        )
        .bind(sid)
        .fetch_optional(&self.reads)
        .await?;
        Ok(row.map(|r| SessionRow {
            sid: r.sid,
            agent_id: r.agent_id,
            wallet: r.wallet,
            wallet_proven: r.wallet_proven != 0,
            body: r.body,
            created_at_ms: from_ms(r.created_at_ms),
            expires_at_ms: from_ms(r.expires_at_ms),
        }))
    }

    async fn put_risk_trace(&self, row: &TraceRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO risk_traces (tid, sid, body, created_at_ms) VALUES ($1, $2, $3, $4)",
        )
        .bind(row.tid.as_str())
        .bind(row.sid.as_str())
        .bind(row.body.as_str())
        .bind(db_ms(row.created_at_ms, "created_at_ms")?)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn risk_trace(&self, tid: &str) -> Result<Option<TraceRow>, StoreError> {
        let row: Option<(String, String, String, i64)> =
            sqlx::query_as("SELECT tid, sid, body, created_at_ms FROM risk_traces WHERE tid = $1")
                .bind(tid)
                .fetch_optional(&self.reads)
                .await?;
        Ok(row.map(|(tid, sid, body, created)| TraceRow {
            tid,
            sid,
            body,
            created_at_ms: from_ms(created),
        }))
    }

    async fn mandate_holder(&self, mandate_id: &str) -> Result<Option<String>, StoreError> {
        let row: Option<(String,)> =
            sqlx::query_as("SELECT fingerprint FROM risk_mandate_claims WHERE mandate_id = $1")
                .bind(mandate_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|(f,)| f))
    }

    async fn claim_mandate(
        &self,
        mandate_id: &str,
        fingerprint: &str,
        now_ms: u64,
    ) -> Result<String, StoreError> {
        sqlx::query(
            "INSERT INTO risk_mandate_claims (mandate_id, fingerprint, created_at_ms) \
             VALUES ($1, $2, $3) ON CONFLICT (mandate_id) DO NOTHING",
        )
        .bind(mandate_id)
        .bind(fingerprint)
        .bind(db_ms(now_ms, "now_ms")?)
        .execute(&self.pool)
        .await?;
        self.mandate_holder(mandate_id)
            .await?
            .ok_or_else(|| StoreError::Corrupt("mandate claim vanished".into()))
    }

    async fn record_mandate_use(
        &self,
        mandate_id: &str,
        fingerprint: &str,
        amount: &str,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO risk_mandate_uses (mandate_id, fingerprint, amount, created_at_ms) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (mandate_id, fingerprint) DO NOTHING",
        )
        .bind(mandate_id)
        .bind(fingerprint)
        .bind(amount)
        .bind(db_ms(now_ms, "now_ms")?)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn mandate_uses(
        &self,
        mandate_id: &str,
        except_fingerprint: &str,
        since_ms: u64,
    ) -> Result<Vec<String>, StoreError> {
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT amount FROM risk_mandate_uses WHERE mandate_id = $1 AND fingerprint <> $2 \
             AND created_at_ms >= $3",
        )
        .bind(mandate_id)
        .bind(except_fingerprint)
        .bind(db_ms(since_ms, "since_ms")?)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|(a,)| a).collect())
    }

    async fn risk_history(&self, q: &HistoryQuery) -> Result<HistoryCounts, StoreError> {
        let now = db_ms(q.now_ms, "now_ms")?;
        let hour = now.saturating_sub(HOUR_MS as i64);
        let day = now.saturating_sub(24 * HOUR_MS as i64);
        let five = now.saturating_sub(FIVE_MIN_MS as i64);
        let payer_key = q.payer.as_deref().map(crate::admin::normalise_pay_to);
        let params: [Param<'_>; 12] = [
            q.payer.as_deref().into(),
            q.fingerprint.as_str().into(),
            hour.into(),
            day.into(),
            five.into(),
            q.pay_to.as_str().into(),
            q.resource.as_deref().into(),
            q.endpoint.as_deref().into(),
            HISTORY_COUNT_CAP.into(),
            q.asset.as_str().into(),
            USUAL_RANGE_WINDOW.into(),
            payer_key.as_deref().into(),
        ];
        type Row = (
            i64,
            i64,
            i64,
            i64,
            i64,
            i64,
            i64,
            Option<String>,
            Option<String>,
            i64,
            i64,
        );
        // Every verify asks. On SQLite it runs on the writer connection: its page cache stays
        // warm, while a read connection's is dropped whenever another connection commits, and
        // these counts walk the newest index pages, the ones every commit changes.
        let (d, h, p, r, e, f, u, min, max, disputes, reviews): Row = match &self.sqlite {
            Some(engine) => {
                let owned: Vec<_> = params.iter().map(|p| p.to_owned_value()).collect();
                engine
                    .write(move |conn| {
                        let params: Vec<_> = owned.iter().map(|p| p.as_param()).collect();
                        sqlite_engine::query_row(conn, &HISTORY_SQLITE, &params, |row| {
                            Ok((
                                row.get(0)?,
                                row.get(1)?,
                                row.get(2)?,
                                row.get(3)?,
                                row.get(4)?,
                                row.get(5)?,
                                row.get(6)?,
                                row.get(7)?,
                                row.get(8)?,
                                row.get(9)?,
                                row.get(10)?,
                            ))
                        })
                    })
                    .await??
                    .ok_or_else(|| StoreError::Corrupt("history counts returned no row".into()))?
            }
            None => {
                bind_sqlx_as(sqlx::query_as(HISTORY_SQL), &params)
                    .fetch_one(&self.reads)
                    .await?
            }
        };
        let count = |n: i64| u64::try_from(n).unwrap_or(0);
        let counts = HistoryCounts {
            payer_1h: count(h),
            payer_24h: count(d),
            same_resource_5m: count(r),
            to_payee: count(p),
            endpoint_seen: count(e),
            free_to_endpoint: count(f),
            endpoint_asset_payments: count(u),
            endpoint_asset_range: min.zip(max),
            disputes_upheld: count(disputes),
            has_review: reviews > 0,
        };
        Ok(counts)
    }

    async fn open_review(&self, r: &Review) -> Result<Review, StoreError> {
        let reasons = serde_json::to_string(&r.reasons).unwrap_or_else(|_| "[]".into());
        sqlx::query(
            "INSERT INTO risk_reviews (id, fingerprint, state, decision_id, payer, pay_to, amount, \
             resource, score, reasons, created_at_ms) \
             VALUES ($1, $2, 'pending', $3, $4, $5, $6, $7, $8, $9, $10) \
             ON CONFLICT (fingerprint) DO NOTHING",
        )
        .bind(r.id.as_str())
        .bind(r.fingerprint.as_str())
        .bind(r.decision_id.as_str())
        .bind(r.payer.as_deref())
        .bind(r.pay_to.as_str())
        .bind(r.amount.as_str())
        .bind(r.resource.as_deref())
        .bind(i64::from(r.score))
        .bind(reasons)
        .bind(db_ms(r.created_at_ms, "created_at_ms")?)
        .execute(&self.pool)
        .await?;
        self.review_for(&r.fingerprint)
            .await?
            .ok_or_else(|| StoreError::Corrupt("review vanished".into()))
    }

    async fn review_for(&self, fingerprint: &str) -> Result<Option<Review>, StoreError> {
        let row: Option<ReviewRow> = sqlx::query_as(select_reviews!("WHERE fingerprint = $1"))
            .bind(fingerprint)
            .fetch_optional(&self.reads)
            .await?;
        row.map(Review::try_from).transpose()
    }

    async fn review(&self, id: &str) -> Result<Option<Review>, StoreError> {
        let row: Option<ReviewRow> = sqlx::query_as(select_reviews!("WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(Review::try_from).transpose()
    }

    async fn reviews(
        &self,
        state: Option<ReviewState>,
        limit: u32,
    ) -> Result<Vec<Review>, StoreError> {
        let rows: Vec<ReviewRow> = match state {
            Some(state) => {
                sqlx::query_as(select_reviews!(
                    "WHERE state = $1 ORDER BY created_at_ms DESC, id LIMIT $2"
                ))
                .bind(state.as_str())
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query_as(select_reviews!("ORDER BY created_at_ms DESC, id LIMIT $1"))
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        rows.into_iter().map(Review::try_from).collect()
    }

    async fn decide_review(
        &self,
        id: &str,
        state: ReviewState,
        by: &str,
        note: Option<&str>,
        now_ms: u64,
    ) -> Result<Option<Review>, StoreError> {
        debug_assert!(state != ReviewState::Pending);
        // Conditional on `pending`: two operators deciding at once, only one wins.
        let done = sqlx::query(
            "UPDATE risk_reviews SET state = $1, decided_at_ms = $2, decided_by = $3, note = $4 \
             WHERE id = $5 AND state = 'pending'",
        )
        .bind(state.as_str())
        .bind(db_ms(now_ms, "now_ms")?)
        .bind(by)
        .bind(note)
        .bind(id)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() != 1 {
            return Ok(None);
        }
        self.review(id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The per-verify history read is parsed once on SQLite, not at every new binding.
    #[tokio::test]
    async fn the_sqlite_history_statement_is_not_reprepared() {
        assert!(!HISTORY_SQLITE.contains("$9") && !HISTORY_SQLITE.contains("$11"));
        let store = SqlStore::connect("sqlite::memory:").await.expect("connect");
        crate::store::Store::migrate(&store).await.expect("migrate");
        for i in 0..4u64 {
            let query = HistoryQuery {
                payer: Some(format!("0xpayer{i}")),
                pay_to: format!("0xpayee{i}"),
                resource: Some(format!("https://seller.example/{i}")),
                endpoint: Some(format!("seller.example/{i}")),
                asset: "0xasset".into(),
                fingerprint: format!("fp{i}"),
                now_ms: 1_000_000 + i,
            };
            store.risk_history(&query).await.expect("history");
        }
        let (runs, reprepared) = store
            .engine()
            .expect("engine")
            .write(|conn| {
                conn.prepare_cached(&HISTORY_SQLITE).map(|s| {
                    (
                        s.get_status(rusqlite::StatementStatus::Run),
                        s.get_status(rusqlite::StatementStatus::RePrepare),
                    )
                })
            })
            .await
            .expect("writer")
            .expect("prepare");
        assert_eq!(
            (runs, reprepared),
            (4, 0),
            "(runs, re-prepares) of the cached statement"
        );
    }
}
