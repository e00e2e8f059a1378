//! Persistence: one [`Store`] interface over SQLite (the zero-setup default) and PostgreSQL
//! (shared by replicas). It owns the settlement journal that makes settlement exactly-once
//! (DESIGN invariant 2) and the append-only evidence chain (invariant 4).
//!
//! Both backends run the same SQL through sqlx's `Any` driver; where the dialects differ
//! (how an appender takes the chain-head lock) a [`sql::Dialect`] supplies the difference.
//! This module must not decide policy: it reports what the journal says, and the pipeline
//! decides what to answer.

mod chain_append;
pub mod evidence;
pub(crate) mod group_commit;
mod ops;
mod policy;
pub mod risk;
mod sql;
mod sqlite_engine;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::task::JoinHandle;

use crate::protocol::payment::Fingerprint;

pub use ops::OpsStore;
pub use policy::{AmountRange, LIST_LIMIT_MAX, PinRecord, PolicyStore, WebhookAttempt, WebhookRow};
pub use risk::RiskPaymentRow;
pub use sql::SqlStore;

/// Which database a [`Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite (one file, WAL), or in memory.
    Sqlite,
    /// PostgreSQL, possibly shared by several replicas.
    Postgres,
}

/// Opens the database named by `database_url` (`sqlite:`, `postgres:` or `postgresql:`),
/// creating a SQLite file if missing, and runs the embedded migrations.
pub async fn connect(database_url: &str) -> Result<Arc<dyn Store>, StoreError> {
    let store = SqlStore::connect(database_url).await?;
    store.migrate().await?;
    Ok(Arc::new(store))
}

/// How often the server runs [`Store::checkpoint`].
pub const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// Runs [`Store::checkpoint`] every `every` until the task is aborted.
pub fn spawn_checkpointer(store: Arc<dyn Store>, every: std::time::Duration) -> JoinHandle<()> {
    spawn_every(
        store,
        every,
        "Background WAL checkpoint failed; the writer still checkpoints itself past its own threshold.",
        |store| async move { store.checkpoint().await },
    )
}

/// Runs `work` on `store` every `every` until the task is aborted; a failure is logged as
/// `failed`, and the next tick tries again.
pub fn spawn_every<F, Fut, T>(
    store: Arc<dyn Store>,
    every: std::time::Duration,
    failed: &'static str,
    work: F,
) -> JoinHandle<()>
where
    F: Fn(Arc<dyn Store>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<T, StoreError>> + Send,
    T: Send,
{
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if let Err(error) = work(Arc::clone(&store)).await {
                tracing::warn!(%error, "{failed}");
            }
        }
    })
}

/// The persistence interface the pipeline, admin API and CLI use.
#[async_trait]
pub trait Store:
    Send + Sync + fmt::Debug + OpsStore + evidence::EvidenceStore + PolicyStore + risk::RiskStore
{
    /// Which database this is.
    fn backend(&self) -> Backend;

    /// Applies any pending migrations (idempotent; safe from several replicas at once).
    async fn migrate(&self) -> Result<(), StoreError>;

    /// Checks the database answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Housekeeping the database needs while the server runs: on SQLite, copies the
    /// write-ahead log into the database file off the writer's path. A no-op elsewhere.
    async fn checkpoint(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Claims the right to forward `claim.fingerprint` for settlement, exactly once.
    async fn begin_settlement(&self, claim: &SettlementClaim) -> Result<Begin, StoreError>;

    /// Records the outcome of a settlement this caller [`Begin::Acquired`] (or a reconciled
    /// [`SettlementState::Pending`] one).
    async fn finish_settlement(
        &self,
        fingerprint: &Fingerprint,
        outcome: &SettlementOutcome,
    ) -> Result<(), StoreError>;

    /// The journal entry for `fingerprint`, if any.
    async fn settlement(
        &self,
        fingerprint: &Fingerprint,
    ) -> Result<Option<SettlementRecord>, StoreError>;

    /// Settlements whose outcome is unknown, oldest update first, at most `limit`.
    async fn pending_settlements(&self, limit: u32) -> Result<Vec<SettlementRecord>, StoreError>;

    /// Settlements still `in_flight` whose last update is before `before_ms` (their request
    /// can no longer be running), oldest first, at most `limit`.
    async fn stale_in_flight_settlements(
        &self,
        before_ms: u64,
        limit: u32,
    ) -> Result<Vec<SettlementRecord>, StoreError>;

    /// Appends one record to the evidence chain and returns it as stored.
    async fn append_evidence(&self, draft: EvidenceDraft) -> Result<EvidenceRecord, StoreError> {
        self.append_decision(draft, None).await
    }

    /// Appends a decision's record and, in the same transaction, the approved payment's row of
    /// the risk history (ignored if the payment already has one).
    async fn append_decision(
        &self,
        draft: EvidenceDraft,
        history: Option<RiskPaymentRow>,
    ) -> Result<EvidenceRecord, StoreError>;

    /// Records with `seq > after_seq`, in order, at most `limit`.
    async fn evidence_after(
        &self,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<EvidenceRecord>, StoreError>;

    /// Every record about `fingerprint`, in order.
    async fn evidence_for(
        &self,
        fingerprint: &Fingerprint,
    ) -> Result<Vec<EvidenceRecord>, StoreError>;

    /// Reserves `request.counters` for one payment, all or none, in one transaction: each
    /// counter takes the amount only while `used + reserved + amount <= cap`. Expired holds on
    /// the touched counters are swept first, so no background job is needed. A fingerprint
    /// that already holds a live or committed reservation is not reserved twice.
    async fn reserve_budget(&self, request: &BudgetRequest) -> Result<Reserve, StoreError>;

    /// Moves the payment's holds from reserved to used (settled). A hold that expired meanwhile
    /// is still counted as used: the money moved. No holds: nothing to do.
    async fn commit_budget(&self, fingerprint: &Fingerprint, now_ms: u64)
    -> Result<(), StoreError>;

    /// Gives back the payment's reserved holds (refused or failed). Committed holds stay.
    async fn release_budget(
        &self,
        fingerprint: &Fingerprint,
        now_ms: u64,
    ) -> Result<(), StoreError>;

    /// One counter as stored (for the admin API and tests).
    async fn budget_counter(&self, key: &str) -> Result<Option<BudgetCounter>, StoreError>;

    /// Pins `pay_to` for `endpoint` unless one is pinned already; returns the pin in force.
    async fn pin_endpoint(&self, pin: &EndpointPin) -> Result<PinOutcome, StoreError>;

    /// Records `fingerprint` as the latest payment for `key` (payer and endpoint) unless a
    /// different payment was recorded for it after `now_ms - window_ms`; atomically. Returns
    /// whether it was recorded (false: a duplicate within the window).
    async fn note_recent(
        &self,
        key: &str,
        fingerprint: &Fingerprint,
        window_ms: u64,
        now_ms: u64,
    ) -> Result<bool, StoreError>;

    /// The circuit breaker for `subject` (`payer:...` or `endpoint:...`), if it ever tripped.
    async fn breaker(&self, subject: &str) -> Result<Option<BreakerRecord>, StoreError>;

    /// Counts one policy violation: the `threshold`-th consecutive one, or any while
    /// half-open, opens the breaker. Returns the state after.
    async fn breaker_violation(
        &self,
        subject: &str,
        threshold: u32,
        now_ms: u64,
    ) -> Result<BreakerRecord, StoreError>;

    /// A payment passed the policy: the breaker closes and its count resets.
    async fn breaker_success(&self, subject: &str, now_ms: u64) -> Result<(), StoreError>;

    /// Takes the one trial slot of a breaker: moves it from `open` to `half_open`, or renews a
    /// `half_open` one whose trial began at or before `stale_before_ms` (its trial payment
    /// never resolved). True for exactly one caller among concurrent ones; the trial's start
    /// is recorded in `opened_at_ms`.
    async fn breaker_half_open(
        &self,
        subject: &str,
        now_ms: u64,
        stale_before_ms: u64,
    ) -> Result<bool, StoreError>;

    /// Admin reset: closes the breaker; true if there was one.
    async fn reset_breaker(&self, subject: &str, now_ms: u64) -> Result<bool, StoreError>;
}

/// A stored circuit breaker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerRecord {
    /// `payer:...` or `endpoint:...`.
    pub subject: String,
    /// `closed`, `open` or `half_open`.
    pub state: String,
    /// Consecutive violations.
    pub failures: i64,
    /// When it last opened.
    pub opened_at_ms: i64,
}

/// One cap a payment must fit under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetClaim {
    /// Names scope, asset, period and window, e.g. `global|0xusdc|day|20412`.
    pub key: String,
    /// The cap, in atomic units (or requests).
    pub cap: i64,
    /// What this payment takes from it.
    pub amount: i64,
}

/// A reservation for one payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetRequest {
    /// The payment (the hold's key).
    pub fingerprint: Fingerprint,
    /// Every cap the payment touches.
    pub counters: Vec<BudgetClaim>,
    /// When the hold lapses if neither committed nor released.
    pub expires_at_ms: u64,
    /// Now.
    pub now_ms: u64,
}

/// The answer to [`Store::reserve_budget`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reserve {
    /// Every counter took the amount; this caller made the hold.
    Reserved,
    /// The payment already holds a live or committed reservation; nothing was added.
    AlreadyHeld,
    /// A counter is full; nothing was reserved.
    Exceeded {
        /// The counter that refused.
        key: String,
        /// Its used amount.
        used: i64,
        /// Its live reservations.
        reserved: i64,
        /// Its cap.
        cap: i64,
    },
}

/// A stored counter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetCounter {
    /// The key.
    pub key: String,
    /// Committed (settled) amount.
    pub used: i64,
    /// Reserved amount (may include expired holds not yet swept).
    pub reserved: i64,
}

/// A payTo to pin for an endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointPin {
    /// `host/path-prefix`.
    pub endpoint: String,
    /// The recipient to pin.
    pub pay_to: String,
    /// `config` or `first_use`.
    pub source: &'static str,
    /// Now.
    pub now_ms: u64,
}

/// The answer to [`Store::pin_endpoint`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinOutcome {
    /// The payTo pinned for the endpoint.
    pub pay_to: String,
    /// Whether this call created the pin (a first sighting).
    pub created: bool,
}

/// A request to own the settlement of one payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettlementClaim {
    /// The payment's fingerprint (the exactly-once key).
    pub fingerprint: Fingerprint,
    /// The client's `payment-identifier` (idempotency key), if it sent one.
    pub payment_identifier: Option<String>,
    /// SHA-256 hex of the settle payload, to tell a retry from a different request.
    pub request_digest: String,
    /// CAIP-2 network.
    pub network: String,
    /// The payer, when known.
    pub payer: Option<String>,
    /// When the claim is made.
    pub now_ms: u64,
}

/// Where a settlement stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettlementState {
    /// Claimed and being forwarded.
    InFlight,
    /// Settled on chain.
    Settled,
    /// Definitively failed; the fingerprint may be claimed again.
    Failed,
    /// Outcome unknown (upstream timeout or 5xx); to be reconciled from the chain.
    Pending,
}

impl SettlementState {
    /// The column value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InFlight => "in_flight",
            Self::Settled => "settled",
            Self::Failed => "failed",
            Self::Pending => "pending",
        }
    }

    /// Parses a column value.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "in_flight" => Some(Self::InFlight),
            "settled" => Some(Self::Settled),
            "failed" => Some(Self::Failed),
            "pending" => Some(Self::Pending),
            _ => None,
        }
    }

    /// Whether the forward has finished (with a known or unknown outcome).
    pub fn is_finished(self) -> bool {
        !matches!(self, Self::InFlight)
    }
}

impl fmt::Display for SettlementState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One settlement journal entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettlementRecord {
    /// The exactly-once key.
    pub fingerprint: Fingerprint,
    /// Where it stands.
    pub state: SettlementState,
    /// The `payment-identifier` bound to it, if any.
    pub payment_identifier: Option<String>,
    /// SHA-256 hex of the settle payload that claimed it.
    pub request_digest: String,
    /// Transaction hash / signature, when known (kept for pending outcomes).
    pub transaction: Option<String>,
    /// The response returned to the seller, verbatim, once finished.
    pub response_json: Option<String>,
    /// CAIP-2 network.
    pub network: String,
    /// The payer, when known.
    pub payer: Option<String>,
    /// When first claimed.
    pub created_at_ms: u64,
    /// When last changed.
    pub updated_at_ms: u64,
}

/// How a settlement ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettlementOutcome {
    /// Must not be [`SettlementState::InFlight`].
    pub state: SettlementState,
    /// Transaction hash / signature, when known.
    pub transaction: Option<String>,
    /// The response to replay to retries with the same `payment-identifier`.
    pub response_json: String,
    /// When it ended.
    pub now_ms: u64,
}

/// The answer to [`Store::begin_settlement`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begin {
    /// The caller owns the settlement and must forward it, then finish it.
    Acquired,
    /// Someone else settled or is settling this fingerprint: refuse (`duplicate_settlement`).
    Duplicate(SettlementRecord),
    /// Same `payment-identifier` and payload, already finished: return the recorded response.
    Replay(SettlementRecord),
    /// Same `payment-identifier` and payload, still being forwarded.
    InFlight(SettlementRecord),
    /// The `payment-identifier` is bound to a different payload or payment (HTTP 409).
    IdentifierConflict,
}

/// What to record as evidence; the store assigns `seq` and the hashes.
#[derive(Debug, Clone, PartialEq)]
pub struct EvidenceDraft {
    /// `verify`, `settle`, `reconcile`, ...
    pub kind: String,
    /// The gate that decided, if any.
    pub gate: Option<String>,
    /// The payment, when one was decoded.
    pub fingerprint: Option<Fingerprint>,
    /// `allow`, `deny`, `review`, `error`, ...
    pub decision: String,
    /// The request id the decision answered.
    pub request_id: String,
    /// When the decision was made.
    pub created_at_ms: u64,
    /// Everything the decision used; stored as canonical JSON text.
    pub body: serde_json::Value,
}

/// One evidence record as stored and hashed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvidenceRecord {
    /// Position in the chain, from 1, without gaps.
    pub seq: i64,
    /// When the decision was made.
    pub created_at_ms: u64,
    /// `verify`, `settle`, `reconcile`, ...
    pub kind: String,
    /// The gate that decided, if any.
    pub gate: Option<String>,
    /// The payment's fingerprint, if any.
    pub fingerprint: Option<String>,
    /// `allow`, `deny`, ...
    pub decision: String,
    /// The request id the decision answered.
    pub request_id: String,
    /// Canonical JSON text, exactly as hashed.
    pub body: String,
    /// Hash of the previous record ([`crate::evidence::GENESIS_HASH`] for seq 1).
    pub prev_hash: String,
    /// [`crate::evidence::record_hash`] of this record.
    pub hash: String,
}

/// Why a store operation failed. `Display` is for logs; clients get [`StoreError::public_message`].
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL names no supported backend (only the scheme is kept, never credentials).
    #[error("unsupported database URL scheme `{scheme}` (use sqlite:, postgres: or postgresql:)")]
    UnsupportedUrl {
        /// The scheme found.
        scheme: String,
    },
    /// The database could not be reached in time (connect, pool acquire, I/O).
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// A query failed.
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    /// A named constraint rejected a write that no domain outcome explains.
    #[error("constraint `{constraint}` violated")]
    Constraint {
        /// The constraint (or, on SQLite, the message naming the columns).
        constraint: String,
    },
    /// Migrations failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// No settlement journal entry for the fingerprint.
    #[error("no settlement for this fingerprint")]
    NotFound,
    /// A finish that does not follow the journal's state machine.
    #[error("settlement cannot go from {from} to {to}")]
    InvalidTransition {
        /// Current state.
        from: SettlementState,
        /// Requested state.
        to: SettlementState,
    },
    /// A budget claim with a negative amount or cap.
    #[error("invalid budget claim for `{0}`")]
    InvalidBudget(String),
    /// A value does not fit the column (e.g. a timestamp beyond `i64::MAX` ms).
    #[error("value out of range for `{field}`")]
    OutOfRange {
        /// Which field.
        field: &'static str,
    },
    /// The database URL carries a parameter Gatehouse cannot use.
    #[error("invalid database URL: {0}")]
    InvalidUrl(String),
    /// Stored data violates an invariant (unknown state, broken chain head).
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// A statement on Gatehouse's own SQLite connections failed.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// Gatehouse's SQLite writer thread is not running.
    #[error("database unavailable: {0}")]
    Stopped(String),
}

impl StoreError {
    /// Text safe to show a client: never SQL, table names or credentials.
    pub fn public_message(&self) -> &'static str {
        match self {
            _ if self.is_unavailable() => "the database is unavailable",
            Self::NotFound => "no such settlement",
            _ => "an internal database error occurred",
        }
    }

    /// Whether retrying later may succeed (fail closed meanwhile).
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Unavailable(_) | Self::Stopped(_) => true,
            // Another writer held the file past the busy handler's patience, or the file
            // could not be opened or written: retrying later may work.
            Self::Sqlite(rusqlite::Error::SqliteFailure(error, _)) => matches!(
                error.code,
                rusqlite::ErrorCode::DatabaseBusy
                    | rusqlite::ErrorCode::DatabaseLocked
                    | rusqlite::ErrorCode::CannotOpen
                    | rusqlite::ErrorCode::SystemIoFailure
                    | rusqlite::ErrorCode::DiskFull
            ),
            _ => false,
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        match error {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed => Self::Unavailable(error),
            sqlx::Error::Database(ref db) if db.is_unique_violation() => Self::Constraint {
                constraint: db
                    .constraint()
                    .map(str::to_owned)
                    .unwrap_or_else(|| db.message().to_owned()),
            },
            other => Self::Database(other),
        }
    }
}
