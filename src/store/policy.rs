//! Persistence for policy administration and webhooks ([`PolicyStore`]): listings for the admin
//! API (breakers, pins, counters), operator re-pins, the learned amount ranges of amount
//! sanity, and the durable webhook outbox. A supertrait of [`super::Store`], implemented once
//! for [`SqlStore`] on both backends.
//!
//! This module decides nothing: the policy and the webhook drainer do.

use async_trait::async_trait;

use super::{BreakerRecord, BudgetCounter, SqlStore, StoreError};

/// Bound on one listing page.
pub const LIST_LIMIT_MAX: u32 = 1_000;

/// A payTo pinned for an endpoint.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PinRecord {
    /// `host/path-prefix`.
    pub endpoint: String,
    /// The pinned recipient.
    pub pay_to: String,
    /// `config` (pre-seeded by config or an operator) or `first_use` (discovered).
    pub source: String,
    /// When first pinned.
    pub created_at_ms: i64,
    /// The operator who last re-pinned it, if any.
    pub repinned_by: Option<String>,
    /// When it was last re-pinned, if ever.
    pub repinned_at_ms: Option<i64>,
}

/// The learned range of approved amounts for one (endpoint, asset).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct AmountRange {
    /// Smallest approved amount (atomic units).
    pub min: i64,
    /// Largest approved amount (atomic units).
    pub max: i64,
    /// How many approved payments taught it.
    pub samples: i64,
}

/// One outbox row.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct WebhookRow {
    /// Row id (also the delivery id the receiver sees).
    pub id: i64,
    /// Event name, e.g. `breaker.opened`.
    pub event: String,
    /// JSON text of the event's data.
    pub payload: String,
    /// Destination (`None` while unrouted).
    pub url: Option<String>,
    /// `unrouted`, `routed`, `pending`, `delivered` or `failed`.
    pub state: String,
    /// Delivery attempts made.
    pub attempts: i64,
    /// When the next attempt is due.
    pub next_attempt_at_ms: i64,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// When the receiver acknowledged it.
    pub delivered_at_ms: Option<i64>,
    /// When the event was enqueued.
    pub created_at_ms: i64,
}

/// What one delivery attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookAttempt {
    /// The receiver answered 2xx.
    Delivered {
        /// Now.
        now_ms: u64,
    },
    /// Try again at `next_attempt_at_ms`.
    Retry {
        /// Why it failed.
        error: String,
        /// When to try again.
        next_attempt_at_ms: u64,
    },
    /// Give up (attempts exhausted, or the destination is refused).
    Failed {
        /// Why.
        error: String,
    },
}

/// Policy administration and webhook persistence.
#[async_trait]
pub trait PolicyStore: Send + Sync {
    /// Breakers, most recently changed first.
    async fn list_breakers(
        &self,
        limit: u32,
        offset: u32,
    ) -> Result<Vec<BreakerRecord>, StoreError>;

    /// Pins, by endpoint.
    async fn list_pins(&self, limit: u32, offset: u32) -> Result<Vec<PinRecord>, StoreError>;

    /// The pin of one endpoint.
    async fn pin(&self, endpoint: &str) -> Result<Option<PinRecord>, StoreError>;

    /// Sets the pin of `endpoint` to `pay_to` (creating it if missing), recording who did it;
    /// returns the pin as it was before.
    async fn repin_endpoint(
        &self,
        endpoint: &str,
        pay_to: &str,
        by: &str,
        now_ms: u64,
    ) -> Result<Option<PinRecord>, StoreError>;

    /// Counters whose key starts with `prefix` and that changed at or after `since_ms`.
    async fn counters_with_prefix(
        &self,
        prefix: &str,
        since_ms: u64,
        limit: u32,
    ) -> Result<Vec<BudgetCounter>, StoreError>;

    /// The learned amount range of (endpoint, asset).
    async fn amount_range(
        &self,
        endpoint: &str,
        asset: &str,
    ) -> Result<Option<AmountRange>, StoreError>;

    /// Widens the learned range of (endpoint, asset) to include `amount`.
    async fn learn_amount(
        &self,
        endpoint: &str,
        asset: &str,
        amount: i64,
        now_ms: u64,
    ) -> Result<(), StoreError>;

    /// Appends an event to the outbox (unrouted); returns its id.
    async fn enqueue_webhook(
        &self,
        event: &str,
        payload: &str,
        now_ms: u64,
    ) -> Result<i64, StoreError>;

    /// Unrouted events, oldest first.
    async fn unrouted_webhooks(&self, limit: u32) -> Result<Vec<WebhookRow>, StoreError>;

    /// Routes one event to `urls` (one pending row each) and marks it routed, atomically;
    /// false if another replica routed it first.
    async fn route_webhook(
        &self,
        id: i64,
        urls: &[String],
        now_ms: u64,
    ) -> Result<bool, StoreError>;

    /// Pending deliveries due at `now_ms`, oldest first.
    async fn due_webhooks(&self, now_ms: u64, limit: u32) -> Result<Vec<WebhookRow>, StoreError>;

    /// Takes a due delivery for this replica until `lease_until_ms`; false if another replica
    /// took it (its `next_attempt_at_ms` no longer equals `seen_next_ms`).
    async fn lease_webhook(
        &self,
        id: i64,
        seen_next_ms: i64,
        lease_until_ms: u64,
    ) -> Result<bool, StoreError>;

    /// Records the outcome of one attempt (and counts it).
    async fn webhook_attempted(&self, id: i64, attempt: &WebhookAttempt) -> Result<(), StoreError>;

    /// Every outbox row, newest first (admin and tests).
    async fn list_webhooks(&self, limit: u32) -> Result<Vec<WebhookRow>, StoreError>;

    /// Deletes finished outbox rows: delivered deliveries and routed events created before
    /// `done_before_ms`, failed deliveries created before `failed_before_ms`. Pending and
    /// unrouted rows are never deleted. Returns how many went.
    async fn prune_webhooks(
        &self,
        done_before_ms: u64,
        failed_before_ms: u64,
    ) -> Result<u64, StoreError>;
}

fn db_ms(ms: u64, field: &'static str) -> Result<i64, StoreError> {
    i64::try_from(ms).map_err(|_| StoreError::OutOfRange { field })
}

type PinRow = (String, String, String, i64, Option<String>, Option<i64>);

fn pin_record(row: PinRow) -> PinRecord {
    let (endpoint, pay_to, source, created_at_ms, repinned_by, repinned_at_ms) = row;
    PinRecord {
        endpoint,
        pay_to,
        source,
        created_at_ms,
        repinned_by,
        repinned_at_ms,
    }
}

#[derive(sqlx::FromRow)]
struct OutboxRow {
    id: i64,
    event: String,
    payload: String,
    url: Option<String>,
    state: String,
    attempts: i64,
    next_attempt_at_ms: i64,
    last_error: Option<String>,
    delivered_at_ms: Option<i64>,
    created_at_ms: i64,
}

impl From<OutboxRow> for WebhookRow {
    fn from(r: OutboxRow) -> Self {
        Self {
            id: r.id,
            event: r.event,
            payload: r.payload,
            url: r.url,
            state: r.state,
            attempts: r.attempts,
            next_attempt_at_ms: r.next_attempt_at_ms,
            last_error: r.last_error,
            delivered_at_ms: r.delivered_at_ms,
            created_at_ms: r.created_at_ms,
        }
    }
}

macro_rules! select_outbox {
    ($tail:literal) => {
        concat!(
            "SELECT id, event, payload, url, state, attempts, next_attempt_at_ms, last_error, \
             delivered_at_ms, created_at_ms FROM webhook_outbox ",
            $tail
        )
    };
}

const SELECT_PIN: &str = "SELECT endpoint, pay_to, source, created_at_ms, repinned_by, \
                          repinned_at_ms FROM policy_endpoints";

// === impl PolicyStore for SqlStore ===

#[async_trait]
impl PolicyStore for SqlStore {
    async fn list_breakers(
        &self,
        limit: u32,
        offset: u32,
    ) -> Result<Vec<BreakerRecord>, StoreError> {
        let rows: Vec<(String, String, i64, i64)> = sqlx::query_as(
            "SELECT subject, state, failures, opened_at_ms FROM policy_breakers \
             ORDER BY updated_at_ms DESC, subject LIMIT $1 OFFSET $2",
        )
        .bind(i64::from(limit.min(LIST_LIMIT_MAX)))
        .bind(i64::from(offset))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(subject, state, failures, opened_at_ms)| BreakerRecord {
                subject,
                state,
                failures,
                opened_at_ms,
            })
            .collect())
    }

    async fn list_pins(&self, limit: u32, offset: u32) -> Result<Vec<PinRecord>, StoreError> {
        let sql = format!("{SELECT_PIN} ORDER BY endpoint LIMIT $1 OFFSET $2");
        let rows: Vec<PinRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(i64::from(limit.min(LIST_LIMIT_MAX)))
            .bind(i64::from(offset))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(pin_record).collect())
    }

    async fn pin(&self, endpoint: &str) -> Result<Option<PinRecord>, StoreError> {
        let sql = format!("{SELECT_PIN} WHERE endpoint = $1");
        let row: Option<PinRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(endpoint)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(pin_record))
    }

    async fn repin_endpoint(
        &self,
        endpoint: &str,
        pay_to: &str,
        by: &str,
        now_ms: u64,
    ) -> Result<Option<PinRecord>, StoreError> {
        let now = db_ms(now_ms, "now_ms")?;
        // Read, then upsert: re-pins are rare operator actions, and each is recorded with the
        // pin it replaced; a plain read keeps SQLite from upgrading a read lock under load.
        let before = self.pin(endpoint).await?;
        sqlx::query(
            "INSERT INTO policy_endpoints (endpoint, pay_to, source, created_at_ms, repinned_by, \
             repinned_at_ms) VALUES ($1, $2, 'config', $4, $3, $4) \
             ON CONFLICT (endpoint) DO UPDATE SET pay_to = excluded.pay_to, \
             repinned_by = excluded.repinned_by, repinned_at_ms = excluded.repinned_at_ms",
        )
        .bind(endpoint)
        .bind(pay_to)
        .bind(by)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(before)
    }

    async fn counters_with_prefix(
        &self,
        prefix: &str,
        since_ms: u64,
        limit: u32,
    ) -> Result<Vec<BudgetCounter>, StoreError> {
        // A prefix compare instead of LIKE (so `%` and `_` in keys mean nothing) and instead of
        // a key range (PostgreSQL collations do not order text bytewise).
        let prefix_chars = i64::try_from(prefix.chars().count())
            .map_err(|_| StoreError::OutOfRange { field: "prefix" })?;
        let rows: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT counter_key, used, reserved FROM policy_counters \
             WHERE substr(counter_key, 1, CAST($2 AS INTEGER)) = $1 AND updated_at_ms >= $3 \
             ORDER BY counter_key LIMIT $4",
        )
        .bind(prefix)
        .bind(prefix_chars)
        .bind(db_ms(since_ms, "since_ms")?)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(key, used, reserved)| BudgetCounter {
                key,
                used,
                reserved,
            })
            .collect())
    }

    async fn amount_range(
        &self,
        endpoint: &str,
        asset: &str,
    ) -> Result<Option<AmountRange>, StoreError> {
        let row: Option<(i64, i64, i64)> = sqlx::query_as(
            "SELECT min_amount, max_amount, samples FROM policy_amount_ranges \
             WHERE endpoint = $1 AND asset = $2",
        )
        .bind(endpoint)
        .bind(asset)
        .fetch_optional(&self.reads)
        .await?;
        Ok(row.map(|(min, max, samples)| AmountRange { min, max, samples }))
    }

    async fn learn_amount(
        &self,
        endpoint: &str,
        asset: &str,
        amount: i64,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        if amount < 0 {
            return Err(StoreError::InvalidBudget(format!("{endpoint}|{asset}")));
        }
        sqlx::query(
            "INSERT INTO policy_amount_ranges (endpoint, asset, min_amount, max_amount, samples, \
             updated_at_ms) VALUES ($1, $2, $3, $3, 1, $4) \
             ON CONFLICT (endpoint, asset) DO UPDATE SET \
             min_amount = CASE WHEN excluded.min_amount < policy_amount_ranges.min_amount \
                 THEN excluded.min_amount ELSE policy_amount_ranges.min_amount END, \
             max_amount = CASE WHEN excluded.max_amount > policy_amount_ranges.max_amount \
                 THEN excluded.max_amount ELSE policy_amount_ranges.max_amount END, \
             samples = policy_amount_ranges.samples + 1, updated_at_ms = excluded.updated_at_ms",
        )
        .bind(endpoint)
        .bind(asset)
        .bind(amount)
        .bind(db_ms(now_ms, "now_ms")?)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn enqueue_webhook(
        &self,
        event: &str,
        payload: &str,
        now_ms: u64,
    ) -> Result<i64, StoreError> {
        let now = db_ms(now_ms, "now_ms")?;
        let (id,): (i64,) = sqlx::query_as(
            "INSERT INTO webhook_outbox (event, payload, state, next_attempt_at_ms, created_at_ms) \
             VALUES ($1, $2, 'unrouted', $3, $3) RETURNING id",
        )
        .bind(event)
        .bind(payload)
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        Ok(id)
    }

    async fn unrouted_webhooks(&self, limit: u32) -> Result<Vec<WebhookRow>, StoreError> {
        let rows: Vec<OutboxRow> = sqlx::query_as(select_outbox!(
            "WHERE state = 'unrouted' ORDER BY id LIMIT $1"
        ))
        .bind(i64::from(limit.min(LIST_LIMIT_MAX)))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(WebhookRow::from).collect())
    }

    async fn route_webhook(
        &self,
        id: i64,
        urls: &[String],
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        let now = db_ms(now_ms, "now_ms")?;
        let mut tx = self.pool.begin().await?;
        let claimed = sqlx::query(
            "UPDATE webhook_outbox SET state = 'routed' WHERE id = $1 AND state = 'unrouted'",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if claimed.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        for url in urls {
            sqlx::query(
                "INSERT INTO webhook_outbox (event, payload, url, state, next_attempt_at_ms, \
                 created_at_ms) SELECT event, payload, $2, 'pending', $3, created_at_ms \
                 FROM webhook_outbox WHERE id = $1",
            )
            .bind(id)
            .bind(url.as_str())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn due_webhooks(&self, now_ms: u64, limit: u32) -> Result<Vec<WebhookRow>, StoreError> {
        let rows: Vec<OutboxRow> = sqlx::query_as(select_outbox!(
            "WHERE state = 'pending' AND next_attempt_at_ms <= $1 \
             ORDER BY next_attempt_at_ms, id LIMIT $2"
        ))
        .bind(db_ms(now_ms, "now_ms")?)
        .bind(i64::from(limit.min(LIST_LIMIT_MAX)))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(WebhookRow::from).collect())
    }

    async fn lease_webhook(
        &self,
        id: i64,
        seen_next_ms: i64,
        lease_until_ms: u64,
    ) -> Result<bool, StoreError> {
        let leased = sqlx::query(
            "UPDATE webhook_outbox SET next_attempt_at_ms = $3 \
             WHERE id = $1 AND state = 'pending' AND next_attempt_at_ms = $2",
        )
        .bind(id)
        .bind(seen_next_ms)
        .bind(db_ms(lease_until_ms, "lease_until_ms")?)
        .execute(&self.pool)
        .await?;
        Ok(leased.rows_affected() == 1)
    }

    async fn webhook_attempted(&self, id: i64, attempt: &WebhookAttempt) -> Result<(), StoreError> {
        let query = match attempt {
            WebhookAttempt::Delivered { now_ms } => sqlx::query(
                "UPDATE webhook_outbox SET state = 'delivered', attempts = attempts + 1, \
                 delivered_at_ms = $2, last_error = NULL WHERE id = $1",
            )
            .bind(id)
            .bind(db_ms(*now_ms, "now_ms")?),
            WebhookAttempt::Retry {
                error,
                next_attempt_at_ms,
            } => sqlx::query(
                "UPDATE webhook_outbox SET attempts = attempts + 1, last_error = $2, \
                 next_attempt_at_ms = $3 WHERE id = $1",
            )
            .bind(id)
            .bind(error.clone())
            .bind(db_ms(*next_attempt_at_ms, "next_attempt_at_ms")?),
            WebhookAttempt::Failed { error } => sqlx::query(
                "UPDATE webhook_outbox SET state = 'failed', attempts = attempts + 1, \
                 last_error = $2 WHERE id = $1",
            )
            .bind(id)
            .bind(error.clone()),
        };
        query.execute(&self.pool).await?;
        Ok(())
    }

    async fn list_webhooks(&self, limit: u32) -> Result<Vec<WebhookRow>, StoreError> {
        let rows: Vec<OutboxRow> = sqlx::query_as(select_outbox!("ORDER BY id DESC LIMIT $1"))
            .bind(i64::from(limit.min(LIST_LIMIT_MAX)))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(WebhookRow::from).collect())
    }

    async fn prune_webhooks(
        &self,
        done_before_ms: u64,
        failed_before_ms: u64,
    ) -> Result<u64, StoreError> {
        let pruned = sqlx::query(
            "DELETE FROM webhook_outbox WHERE \
             (state IN ('delivered', 'routed') AND created_at_ms < $1) \
             OR (state = 'failed' AND created_at_ms < $2)",
        )
        .bind(db_ms(done_before_ms, "done_before_ms")?)
        .bind(db_ms(failed_before_ms, "failed_before_ms")?)
        .execute(&self.pool)
        .await?;
        Ok(pruned.rows_affected())
    }
}
