//! The one SQL implementation of [`Store`], over sqlx's `Any` driver.
//!
//! Both backends share every query; [`Dialect`] holds the few statements that differ. Exactly-once
//! settlement rests on the primary key (`INSERT ... ON CONFLICT DO NOTHING`) and on conditional
//! `UPDATE ... WHERE state = 'failed'`; the evidence chain stays linear because each append
//! holds the single `evidence_head` row (`FOR UPDATE` on PostgreSQL, `BEGIN IMMEDIATE` on SQLite)
//! for the whole read-hash-insert-advance step.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::any::AnyPoolOptions;
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, FromRow};

use super::group_commit::{GroupCommit, Reply};
use super::sqlite_engine::{self, Param, SqliteEngine, bind_sqlx, temporary_path};

use super::{
    Backend, Begin, BreakerRecord, BudgetCounter, BudgetRequest, EndpointPin, EvidenceDraft,
    EvidenceRecord, PinOutcome, Reserve, RiskPaymentRow, SettlementClaim, SettlementOutcome,
    SettlementRecord, SettlementState, Store, StoreError,
};
use crate::protocol::payment::Fingerprint;

static SQLITE_MIGRATOR: Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATOR: Migrator = sqlx::migrate!("migrations/postgres");

/// How long a caller waits for a pooled connection before the store reports itself unavailable.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long SQLite waits on a locked database before failing a statement.
const SQLITE_BUSY_TIMEOUT_MS: u32 = 10_000;
/// Connections for long read-only scans of a SQLite file (writes use one connection).
const SQLITE_READ_CONNECTIONS: u32 = 4;
/// WAL pages (4 KiB each) after which a commit checkpoints the log itself.
pub(crate) const SQLITE_AUTOCHECKPOINT_PAGES: u32 = 4_000;
/// The log length (frames, 64 MB) at which the background checkpointer also finishes a copy on
/// Gatehouse's own writer connection, so that the next write can start the log again from its
/// beginning (when no reader still holds an older snapshot).
const SQLITE_LOG_RESTART_FRAMES: i64 = 16_000;
/// Frames appended during a copy beside the writer below which the writer finishes the copy.
const SQLITE_TAIL_FRAMES: i64 = 200;
/// Copies beside the writer before the writer finishes (each one shortens the tail).
const SQLITE_TAIL_PASSES: usize = 4;
/// The autocheckpoint threshold on Gatehouse's own writer connection: a safety net there (the
/// background checkpointer restarts the log first), since a commit that checkpoints inline
/// holds every queued payment for the copy and its fsyncs; it was most of the c=8 p99.
pub(crate) const SQLITE_WRITER_AUTOCHECKPOINT_PAGES: u32 = 40_000;
const POSTGRES_MAX_CONNECTIONS: u32 = 32;
/// Bound on re-reads when a failed settlement is re-claimed concurrently.
const RECLAIM_ATTEMPTS: usize = 4;
/// Bound on the records [`Store::evidence_for`] returns for one payment.
const EVIDENCE_PER_PAYMENT_MAX: i64 = 10_000;
/// Bound on attempts to switch a fresh SQLite file to WAL while another pool opens it.
const WAL_ATTEMPTS: u32 = 20;

/// Unique index binding a `payment-identifier` to one payment. SQLite reports the column
/// instead of the index name, so both spellings are recognised.
const IDENTIFIER_CONSTRAINT: [&str; 2] = [
    "settlements_payment_identifier_key",
    "settlements.payment_identifier",
];

/// `SELECT <every settlement column> FROM settlements <tail>`, as one `&'static str`.
macro_rules! select_settlements {
    ($tail:literal) => {
        concat!(
            "SELECT fingerprint, state, payment_identifier, request_digest, tx_hash, \
             response_json, network, payer, created_at_ms, updated_at_ms FROM settlements ",
            $tail
        )
    };
}

/// `SELECT <every evidence column> FROM evidence <tail>`, as one `&'static str`.
macro_rules! select_evidence {
    ($tail:literal) => {
        concat!(
            "SELECT seq, created_at_ms, kind, gate, fingerprint, decision, request_id, body, \
             prev_hash, hash FROM evidence ",
            $tail
        )
    };
}

/// The statements that differ between SQLite and PostgreSQL.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dialect(Backend);

impl Dialect {
    /// SQLite's statements.
    pub(crate) const SQLITE: Dialect = Dialect(Backend::Sqlite);

    /// Opens a transaction that writes the evidence chain. SQLite takes the write lock up front
    /// so two appenders cannot both read the same head and then fail to upgrade.
    pub(crate) fn begin_chain_write(self) -> &'static str {
        match self.0 {
            Backend::Sqlite => "BEGIN IMMEDIATE",
            Backend::Postgres => "BEGIN",
        }
    }

    /// Reads the chain head, the hash of the record it names and the search index's last seq,
    /// locking the head until commit where the database needs a row lock.
    pub(crate) fn select_chain_head(self) -> &'static str {
        match self.0 {
            Backend::Sqlite => {
                "SELECT h.seq, h.hash, (SELECT e.hash FROM evidence e WHERE e.seq = h.seq), \
                 (SELECT MAX(i.seq) FROM evidence_index i) FROM evidence_head h WHERE h.id = 1"
            }
            Backend::Postgres => {
                "SELECT h.seq, h.hash, (SELECT e.hash FROM evidence e WHERE e.seq = h.seq), \
                 (SELECT MAX(i.seq) FROM evidence_index i) \
                 FROM evidence_head h WHERE h.id = 1 FOR UPDATE OF h"
            }
        }
    }

    fn migrator(self) -> &'static Migrator {
        match self.0 {
            Backend::Sqlite => &SQLITE_MIGRATOR,
            Backend::Postgres => &POSTGRES_MIGRATOR,
        }
    }
}

/// A [`Store`] on SQLite or PostgreSQL.
#[derive(Debug)]
pub struct SqlStore {
    pub(crate) pool: AnyPool,
    pub(crate) dialect: Dialect,
    /// For long read-only scans (evidence pages, searches, chain links). On PostgreSQL the same
    /// pool; on a SQLite file a separate one, so a scan never waits behind, or holds up, the
    /// single writer connection (WAL readers do not block the writer).
    pub(crate) reads: AnyPool,
    /// Concurrent evidence appends, committed together (group commit).
    appends: super::chain_append::AppendQueue,
    /// Concurrent budget reservations on SQLite, committed together.
    reservations: GroupCommit<PendingReserve, Fast>,
    /// Held while the evidence search index catches up (see `index_evidence`).
    pub(super) indexing: tokio::sync::Mutex<()>,
    /// SQLite only: the hot paths on Gatehouse's own connections to the same file.
    pub(super) sqlite: Option<Arc<SqliteEngine>>,
}

impl SqlStore {
    /// Opens a pool for `database_url` without running migrations.
    pub async fn connect(database_url: &str) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        match url_scheme(database_url) {
            "sqlite" => Self::connect_sqlite(database_url).await,
            "postgres" | "postgresql" => Self::connect_postgres(database_url).await,
            other => Err(StoreError::UnsupportedUrl {
                scheme: other.to_owned(),
            }),
        }
    }

    async fn connect_postgres(database_url: &str) -> Result<Self, StoreError> {
        let pool = AnyPoolOptions::new()
            .max_connections(POSTGRES_MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect(database_url)
            .await
            .map_err(StoreError::Unavailable)?;
        Ok(Self {
            reads: pool.clone(),
            pool,
            dialect: Dialect(Backend::Postgres),
            appends: Default::default(),
            reservations: reserve_queue(),
            indexing: Default::default(),
            sqlite: None,
        })
    }

    async fn connect_sqlite(database_url: &str) -> Result<Self, StoreError> {
        let (database_url, synchronous) = sqlite_synchronous(database_url)?;
        let database_url = database_url.as_str();
        let in_memory = database_url.contains(":memory:") || database_url.contains("mode=memory");
        // An in-memory database is a temporary file instead, removed with the store: the
        // connections sqlx opens and Gatehouse's own (see `SqliteEngine`) must share it.
        let (url, path) = if in_memory {
            let path = temporary_path();
            (format!("sqlite://{}?mode=rwc", path.display()), path)
        } else {
            let url = if database_url.contains("mode=") {
                database_url.to_owned()
            } else if database_url.contains('?') {
                format!("{database_url}&mode=rwc")
            } else {
                format!("{database_url}?mode=rwc")
            };
            let options = sqlx::sqlite::SqliteConnectOptions::from_str(&url)
                .map_err(|error| StoreError::InvalidUrl(error.to_string()))?;
            (url, options.get_filename().to_owned())
        };
        let options = || {
            AnyPoolOptions::new()
                .acquire_timeout(ACQUIRE_TIMEOUT)
                // sqlx pings a pooled connection before every acquire; for an embedded file
                // that is one more hop to the connection's worker thread per statement, and a
                // broken handle fails the statement itself (which fails closed) anyway.
                .test_before_acquire(false)
                .after_connect(move |conn, _meta| {
                    Box::pin(async move {
                        let pragma = sqlx::AssertSqlSafe(format!(
                            "PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}"
                        ));
                        sqlx::query(pragma).execute(&mut *conn).await?;
                        let pragma = sqlx::AssertSqlSafe(format!(
                            "PRAGMA synchronous = {}",
                            synchronous.pragma()
                        ));
                        sqlx::query(pragma).execute(&mut *conn).await?;
                        // A commit that crosses this many WAL pages checkpoints inline. The
                        // server's background checkpointer (`Store::checkpoint`) copies the log
                        // long before, so this is the fallback when nothing else runs.
                        let pragma = sqlx::AssertSqlSafe(format!(
                            "PRAGMA wal_autocheckpoint = {SQLITE_AUTOCHECKPOINT_PAGES}"
                        ));
                        sqlx::query(pragma).execute(conn).await?;
                        Ok(())
                    })
                })
        };
        // SQLite has one writer at a time. Writers on several connections meet at the file
        // lock, where the busy handler sleeps (1, 2, 5, ... 100 ms) between attempts: under
        // load that, not the work, made the latency. One connection for everything that may
        // write turns the wait into a queue on the pool, answered in order without sleeping.
        let pool = options()
            .max_connections(1)
            .connect(&url)
            .await
            .map_err(StoreError::Unavailable)?;
        enable_wal(&pool).await?;
        let reads = options()
            .max_connections(SQLITE_READ_CONNECTIONS)
            .connect(&url)
            .await
            .map_err(StoreError::Unavailable)?;
        let engine = SqliteEngine::open(&path, synchronous.pragma(), in_memory)?;
        Ok(Self {
            pool,
            reads,
            dialect: Dialect(Backend::Sqlite),
            appends: Default::default(),
            reservations: reserve_queue(),
            indexing: Default::default(),
            sqlite: Some(Arc::new(engine)),
        })
    }

    /// The SQLite hot-path connections (SQLite stores only).
    pub(super) fn engine(&self) -> Result<&Arc<SqliteEngine>, StoreError> {
        self.sqlite
            .as_ref()
            .ok_or_else(|| StoreError::Stopped("no SQLite engine on this store".into()))
    }

    async fn insert_claim(&self, claim: &SettlementClaim, now: i64) -> Result<bool, StoreError> {
        let result = sqlx::query(
            "INSERT INTO settlements (fingerprint, state, payment_identifier, request_digest, \
             network, payer, created_at_ms, updated_at_ms) \
             VALUES ($1, 'in_flight', $2, $3, $4, $5, $6, $6) ON CONFLICT DO NOTHING",
        )
        .bind(claim.fingerprint.0.as_str())
        .bind(claim.payment_identifier.as_deref())
        .bind(claim.request_digest.as_str())
        .bind(claim.network.as_str())
        .bind(claim.payer.as_deref())
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() == 1)
    }

    /// Takes over a definitively failed settlement; `Ok(false)` if someone else got there first.
    async fn reclaim_failed(&self, claim: &SettlementClaim, now: i64) -> Result<bool, StoreError> {
        let result = sqlx::query(
            "UPDATE settlements SET state = 'in_flight', payment_identifier = $2, \
             request_digest = $3, network = $4, payer = $5, tx_hash = NULL, response_json = NULL, \
             updated_at_ms = $6 WHERE fingerprint = $1 AND state = 'failed'",
        )
        .bind(claim.fingerprint.0.as_str())
        .bind(claim.payment_identifier.as_deref())
        .bind(claim.request_digest.as_str())
        .bind(claim.network.as_str())
        .bind(claim.payer.as_deref())
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() == 1)
    }
}

/// How SQLite syncs commits to disk (`?synchronous=` on a `sqlite:` URL, read by Gatehouse).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Synchronous {
    /// WAL's usual setting: a commit survives a crash of Gatehouse; an OS crash or power loss
    /// may roll back the last commits, never corrupt the file. The default.
    Normal,
    /// Every commit is fsynced before it returns.
    Full,
}

impl Synchronous {
    fn pragma(self) -> &'static str {
        match self {
            Self::Normal => "NORMAL",
            Self::Full => "FULL",
        }
    }
}

/// Takes Gatehouse's own `synchronous=normal|full` parameter off a SQLite URL (sqlx does not
/// know it) and returns the rest of the URL with it.
fn sqlite_synchronous(url: &str) -> Result<(String, Synchronous), StoreError> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_owned(), Synchronous::Normal));
    };
    let mut synchronous = Synchronous::Normal;
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("synchronous", value)) => {
                synchronous = match value.to_ascii_lowercase().as_str() {
                    "normal" => Synchronous::Normal,
                    "full" => Synchronous::Full,
                    _ => {
                        return Err(StoreError::InvalidUrl(format!(
                            "synchronous must be `normal` or `full`, not `{value}`"
                        )));
                    }
                }
            }
            _ => kept.push(pair),
        }
    }
    let url = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((url, synchronous))
}

/// Switches a SQLite file to WAL once; the switch needs a lock busy_timeout does not wait for,
/// so a second pool opening the same fresh file retries briefly.
async fn enable_wal(pool: &AnyPool) -> Result<(), StoreError> {
    let mut attempt = 0;
    loop {
        let result: Result<(String,), sqlx::Error> = sqlx::query_as("PRAGMA journal_mode = WAL")
            .fetch_one(pool)
            .await;
        match result {
            Ok((mode,)) if mode.eq_ignore_ascii_case("wal") => return Ok(()),
            Ok((mode,)) => {
                return Err(StoreError::Corrupt(format!(
                    "SQLite refused WAL journal mode (got {mode})"
                )));
            }
            Err(error) if attempt + 1 < WAL_ATTEMPTS => {
                tracing::debug!(error = %error, attempt, "SQLite WAL switch busy, retrying.");
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(error) => return Err(error.into()),
        }
    }
}

fn url_scheme(database_url: &str) -> &str {
    match database_url.split_once(':') {
        Some((scheme, _)) if scheme.chars().all(|c| c.is_ascii_alphanumeric()) => scheme,
        _ => "<none>",
    }
}

pub(crate) fn to_db_ms(ms: u64, field: &'static str) -> Result<i64, StoreError> {
    i64::try_from(ms).map_err(|_| StoreError::OutOfRange { field })
}

fn from_db_ms(ms: i64, field: &str) -> Result<u64, StoreError> {
    u64::try_from(ms).map_err(|_| StoreError::Corrupt(format!("negative {field}")))
}

fn is_identifier_conflict(error: &StoreError) -> bool {
    matches!(error, StoreError::Constraint { constraint }
        if IDENTIFIER_CONSTRAINT.iter().any(|name| constraint.contains(name)))
}

/// What the journal says about a claim whose fingerprint already has a row.
#[derive(Debug, PartialEq, Eq)]
enum Existing {
    Answer(Begin),
    /// The row is `failed`: try to take it over.
    Reclaim,
}

/// Decides a claim against an existing row; pure, so each branch is unit-tested.
fn judge_existing(claim: &SettlementClaim, row: SettlementRecord) -> Existing {
    let same_identifier =
        claim.payment_identifier.is_some() && claim.payment_identifier == row.payment_identifier;
    if same_identifier {
        return Existing::Answer(if row.request_digest != claim.request_digest {
            Begin::IdentifierConflict
        } else if row.state.is_finished() {
            Begin::Replay(row)
        } else {
            Begin::InFlight(row)
        });
    }
    if row.state == SettlementState::Failed {
        return Existing::Reclaim;
    }
    Existing::Answer(Begin::Duplicate(row))
}

#[derive(FromRow)]
struct SettlementRow {
    fingerprint: String,
    state: String,
    payment_identifier: Option<String>,
    request_digest: String,
    tx_hash: Option<String>,
    response_json: Option<String>,
    network: String,
    payer: Option<String>,
    created_at_ms: i64,
    updated_at_ms: i64,
}

impl TryFrom<SettlementRow> for SettlementRecord {
    type Error = StoreError;

    fn try_from(row: SettlementRow) -> Result<Self, StoreError> {
        let state = SettlementState::parse(&row.state).ok_or_else(|| {
            StoreError::Corrupt(format!("unknown settlement state {:?}", row.state))
        })?;
        Ok(Self {
            fingerprint: Fingerprint(row.fingerprint),
            state,
            payment_identifier: row.payment_identifier,
            request_digest: row.request_digest,
            transaction: row.tx_hash,
            response_json: row.response_json,
            network: row.network,
            payer: row.payer,
            created_at_ms: from_db_ms(row.created_at_ms, "created_at_ms")?,
            updated_at_ms: from_db_ms(row.updated_at_ms, "updated_at_ms")?,
        })
    }
}

#[derive(FromRow)]
pub(super) struct EvidenceRow {
    seq: i64,
    created_at_ms: i64,
    kind: String,
    gate: Option<String>,
    fingerprint: Option<String>,
    decision: String,
    request_id: String,
    body: String,
    prev_hash: String,
    hash: String,
}

impl TryFrom<EvidenceRow> for EvidenceRecord {
    type Error = StoreError;

    fn try_from(row: EvidenceRow) -> Result<Self, StoreError> {
        Ok(Self {
            seq: row.seq,
            created_at_ms: from_db_ms(row.created_at_ms, "created_at_ms")?,
            kind: row.kind,
            gate: row.gate,
            fingerprint: row.fingerprint,
            decision: row.decision,
            request_id: row.request_id,
            body: row.body,
            prev_hash: row.prev_hash,
            hash: row.hash,
        })
    }
}

pub(super) fn evidence_records(rows: Vec<EvidenceRow>) -> Result<Vec<EvidenceRecord>, StoreError> {
    rows.into_iter().map(EvidenceRecord::try_from).collect()
}

// === impl Store for SqlStore ===

#[async_trait]
impl Store for SqlStore {
    fn backend(&self) -> Backend {
        self.dialect.0
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        self.dialect.migrator().run(&self.pool).await?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn checkpoint(&self) -> Result<(), StoreError> {
        // On a read connection, so the copy and its fsync happen beside the writer rather than
        // inside whichever commit crossed the autocheckpoint threshold. PASSIVE never waits
        // for readers or the writer; what it cannot copy now it copies next time.
        // (On an in-memory database it does nothing.)
        if matches!(self.dialect.0, Backend::Sqlite) {
            let passive = || async {
                let (_busy, log, _copied): (i64, i64, i64) =
                    sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
                        .fetch_one(&self.reads)
                        .await?;
                Ok::<_, StoreError>(log)
            };
            let mut log = passive().await?;
            // Only a log copied in full starts again from its beginning at the next write, and
            // under steady load the copy above never catches up on its own. Once the log is
            // long, the copy is finished on the writer connection, between two batches, which
            // holds the queued payments meanwhile. What that costs is mostly the fsync of the
            // log written since the last copy (SQLite syncs the log before copying it), so the
            // tail is first shortened here, beside the writer: each pass copies what the writer
            // appended during the one before.
            if log >= SQLITE_LOG_RESTART_FRAMES {
                for _ in 0..SQLITE_TAIL_PASSES {
                    let next = passive().await?;
                    let appended = next - log;
                    log = next;
                    if appended <= SQLITE_TAIL_FRAMES {
                        break;
                    }
                }
                self.engine()?
                    .write(|conn| conn.execute_batch("PRAGMA wal_checkpoint(PASSIVE)"))
                    .await??;
            }
        }
        Ok(())
    }

    async fn begin_settlement(&self, claim: &SettlementClaim) -> Result<Begin, StoreError> {
        let now = to_db_ms(claim.now_ms, "now_ms")?;
        match self.insert_claim(claim, now).await {
            Ok(true) => return Ok(Begin::Acquired),
            Ok(false) => {}
            Err(error) if is_identifier_conflict(&error) => return Ok(Begin::IdentifierConflict),
            Err(error) => return Err(error),
        }
        let mut last_seen = None;
        for _ in 0..RECLAIM_ATTEMPTS {
            let Some(row) = self.settlement(&claim.fingerprint).await? else {
                // Rows are never deleted, so the conflict was the identifier's unique index:
                // the identifier already names a different payment.
                return Ok(Begin::IdentifierConflict);
            };
            match judge_existing(claim, row.clone()) {
                Existing::Answer(begin) => return Ok(begin),
                Existing::Reclaim => match self.reclaim_failed(claim, now).await {
                    Ok(true) => return Ok(Begin::Acquired),
                    Ok(false) => last_seen = Some(row),
                    Err(error) if is_identifier_conflict(&error) => {
                        return Ok(Begin::IdentifierConflict);
                    }
                    Err(error) => return Err(error),
                },
            }
        }
        // The row kept failing and being re-claimed under us; someone else owns it now.
        last_seen
            .map(Begin::Duplicate)
            .ok_or_else(|| StoreError::Corrupt("settlement re-claim made no progress".into()))
    }

    async fn finish_settlement(
        &self,
        fingerprint: &Fingerprint,
        outcome: &SettlementOutcome,
    ) -> Result<(), StoreError> {
        let now = to_db_ms(outcome.now_ms, "now_ms")?;
        if outcome.state != SettlementState::InFlight {
            let result = sqlx::query(
                "UPDATE settlements SET state = $2, tx_hash = COALESCE($3, tx_hash), \
                 response_json = $4, updated_at_ms = $5 \
                 WHERE fingerprint = $1 AND state IN ('in_flight', 'pending')",
            )
            .bind(fingerprint.0.as_str())
            .bind(outcome.state.as_str())
            .bind(outcome.transaction.as_deref())
            .bind(outcome.response_json.as_str())
            .bind(now)
            .execute(&self.pool)
            .await?;
            if result.rows_affected() == 1 {
                return Ok(());
            }
        }
        match self.settlement(fingerprint).await? {
            None => Err(StoreError::NotFound),
            Some(row) => Err(StoreError::InvalidTransition {
                from: row.state,
                to: outcome.state,
            }),
        }
    }

    async fn settlement(
        &self,
        fingerprint: &Fingerprint,
    ) -> Result<Option<SettlementRecord>, StoreError> {
        const SQL: &str = select_settlements!("WHERE fingerprint = $1");
        // Every verify asks; on SQLite it is answered in place.
        let row: Option<SettlementRow> = match &self.sqlite {
            Some(engine) => engine.read(|conn| {
                sqlite_engine::query_row(conn, SQL, &[fingerprint.0.as_str().into()], |row| {
                    Ok(SettlementRow {
                        fingerprint: row.get(0)?,
                        state: row.get(1)?,
                        payment_identifier: row.get(2)?,
                        request_digest: row.get(3)?,
                        tx_hash: row.get(4)?,
                        response_json: row.get(5)?,
                        network: row.get(6)?,
                        payer: row.get(7)?,
                        created_at_ms: row.get(8)?,
                        updated_at_ms: row.get(9)?,
                    })
                })
            })?,
            None => {
                sqlx::query_as(SQL)
                    .bind(fingerprint.0.as_str())
                    .fetch_optional(&self.reads)
                    .await?
            }
        };
        row.map(SettlementRecord::try_from).transpose()
    }

    async fn pending_settlements(&self, limit: u32) -> Result<Vec<SettlementRecord>, StoreError> {
        let rows: Vec<SettlementRow> = sqlx::query_as(select_settlements!(
            "WHERE state = 'pending' ORDER BY updated_at_ms, fingerprint LIMIT $1"
        ))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(SettlementRecord::try_from).collect()
    }

    async fn stale_in_flight_settlements(
        &self,
        before_ms: u64,
        limit: u32,
    ) -> Result<Vec<SettlementRecord>, StoreError> {
        let rows: Vec<SettlementRow> = sqlx::query_as(select_settlements!(
            "WHERE state = 'in_flight' AND updated_at_ms < $1 \
             ORDER BY updated_at_ms, fingerprint LIMIT $2"
        ))
        .bind(to_db_ms(before_ms, "before_ms")?)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(SettlementRecord::try_from).collect()
    }

    async fn append_decision(
        &self,
        draft: EvidenceDraft,
        history: Option<RiskPaymentRow>,
    ) -> Result<EvidenceRecord, StoreError> {
        let record = super::chain_append::Prepared::new(draft, history)?;
        self.appends.append(self, record).await
    }

    async fn evidence_after(
        &self,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<EvidenceRecord>, StoreError> {
        let rows: Vec<EvidenceRow> =
            sqlx::query_as(select_evidence!("WHERE seq > $1 ORDER BY seq LIMIT $2"))
                .bind(after_seq)
                .bind(i64::from(limit))
                .fetch_all(&self.reads)
                .await?;
        evidence_records(rows)
    }

    async fn evidence_for(
        &self,
        fingerprint: &Fingerprint,
    ) -> Result<Vec<EvidenceRecord>, StoreError> {
        let rows: Vec<EvidenceRow> = sqlx::query_as(select_evidence!(
            "WHERE fingerprint = $1 ORDER BY seq LIMIT $2"
        ))
        .bind(fingerprint.0.as_str())
        .bind(EVIDENCE_PER_PAYMENT_MAX)
        .fetch_all(&self.reads)
        .await?;
        evidence_records(rows)
    }

    async fn reserve_budget(&self, request: &BudgetRequest) -> Result<Reserve, StoreError> {
        let now = to_db_ms(request.now_ms, "now_ms")?;
        let expires = to_db_ms(request.expires_at_ms, "expires_at_ms")?;
        let mut counters = request.counters.clone();
        if counters.iter().any(|c| c.amount < 0 || c.cap < 0) {
            let key = counters
                .iter()
                .find(|c| c.amount < 0 || c.cap < 0)
                .map(|c| c.key.clone())
                .unwrap_or_default();
            return Err(StoreError::InvalidBudget(key));
        }
        if counters.is_empty() {
            return Ok(Reserve::Reserved);
        }
        // One lock order for every transaction (sorted keys), so two reservations can wait on
        // each other but never deadlock.
        counters.sort_by(|a, b| a.key.cmp(&b.key));
        counters.dedup_by(|a, b| a.key == b.key);
        let fingerprint = request.fingerprint.0.as_str();

        let fast = match self.dialect.0 {
            Backend::Sqlite => {
                let pending = PendingReserve {
                    fingerprint: fingerprint.to_owned(),
                    counters: counters.clone(),
                    expires,
                    now,
                };
                let engine = self.engine()?;
                self.reservations
                    .submit(pending, |batch| {
                        let engine = Arc::clone(engine);
                        async move { reserve_batch(&engine, batch).await }
                    })
                    .await?
            }
            // Reservations on PostgreSQL wait on counter row locks other replicas hold; a
            // batch would make every reservation in it wait for the slowest.
            Backend::Postgres => {
                reserve_fast(
                    &self.pool,
                    self.dialect,
                    fingerprint,
                    &counters,
                    expires,
                    now,
                )
                .await?
            }
        };
        match fast {
            Fast::Reserved => return Ok(Reserve::Reserved),
            Fast::AlreadyHeld => return Ok(Reserve::AlreadyHeld),
            Fast::Careful => {}
        }
        // Anything but a fresh payment under every cap (a cap reached, a lapsed hold to sweep,
        // a payment that already holds budget) takes the careful path below.
        // The common path is one conditional take per counter, one read of the payment's own
        // holds and one insert of them: each statement is a round trip to the database under
        // the writer lock, so the lock is held for as few of them as possible. Lapsed holds are
        // swept only when a take fails (until then they still count, as a reservation would).
        let mut sweep_first = false;
        loop {
            let mut tx = self
                .pool
                .begin_with(self.dialect.begin_chain_write())
                .await?;
            for counter in &counters {
                if sweep_first {
                    sweep_expired(&mut tx, &counter.key, now).await?;
                }
                if take_counter(&mut tx, counter, now).await? {
                    continue;
                }
                sweep_expired(&mut tx, &counter.key, now).await?;
                if take_counter(&mut tx, counter, now).await? {
                    continue;
                }
                // It may not fit because this very payment already holds it (a re-verify, or the
                // settle after the verify).
                if own_holds(&mut tx, fingerprint, now).await?.held {
                    tx.rollback().await?;
                    return Ok(Reserve::AlreadyHeld);
                }
                let (used, reserved): (i64, i64) = sqlx::query_as(
                    "SELECT used, reserved FROM policy_counters WHERE counter_key = $1",
                )
                .bind(counter.key.as_str())
                .fetch_one(&mut *tx)
                .await?;
                // Rolling back gives back every counter taken so far.
                tx.rollback().await?;
                return Ok(Reserve::Exceeded {
                    key: counter.key.clone(),
                    used,
                    reserved,
                    cap: counter.cap,
                });
            }
            // Every touched counter is locked now (PostgreSQL locks a row its upsert takes; SQLite's
            // BEGIN IMMEDIATE serialises writers), so the payment's own holds are current.
            let own = own_holds(&mut tx, fingerprint, now).await?;
            if own.stale && !sweep_first {
                // Its own hold lapsed unswept: sweep every counter first, as a fresh payment would.
                tx.rollback().await?;
                sweep_first = true;
                continue;
            }
            if own.held {
                tx.rollback().await?;
                return Ok(Reserve::AlreadyHeld);
            }
            let mut sql = String::from(
                "INSERT INTO policy_holds (fingerprint, counter_key, amount, state, \
             expires_at_ms, created_at_ms, updated_at_ms) VALUES ",
            );
            for i in 0..counters.len() {
                let (key, amount) = (4 + 2 * i, 5 + 2 * i);
                if i > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(&format!("($1, ${key}, ${amount}, 'reserved', $2, $3, $3)"));
            }
            sql.push_str(
                " ON CONFLICT (fingerprint, counter_key) DO UPDATE SET amount = excluded.amount, \
             state = 'reserved', expires_at_ms = excluded.expires_at_ms, \
             updated_at_ms = excluded.updated_at_ms",
            );
            // Only numbered placeholders are formatted in; every value is bound.
            let mut insert = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(fingerprint)
                .bind(expires)
                .bind(now);
            for counter in &counters {
                insert = insert.bind(counter.key.as_str()).bind(counter.amount);
            }
            insert.execute(&mut *tx).await?;
            if own.lapsed {
                // Lapsed holds of this payment on counters it no longer touches are superseded.
                sqlx::query(
                    "UPDATE policy_holds SET state = 'released', updated_at_ms = $2 \
                 WHERE fingerprint = $1 AND state = 'expired'",
                )
                .bind(fingerprint)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            return Ok(Reserve::Reserved);
        }
    }

    async fn commit_budget(
        &self,
        fingerprint: &Fingerprint,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        self.finish_holds(fingerprint, now_ms, true).await
    }

    async fn release_budget(
        &self,
        fingerprint: &Fingerprint,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        self.finish_holds(fingerprint, now_ms, false).await
    }

    async fn budget_counter(&self, key: &str) -> Result<Option<BudgetCounter>, StoreError> {
        let row: Option<(String, i64, i64)> = sqlx::query_as(
            "SELECT counter_key, used, reserved FROM policy_counters WHERE counter_key = $1",
        )
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(key, used, reserved)| BudgetCounter {
            key,
            used,
            reserved,
        }))
    }

    async fn pin_endpoint(&self, pin: &EndpointPin) -> Result<PinOutcome, StoreError> {
        let now = to_db_ms(pin.now_ms, "now_ms")?;
        let inserted = sqlx::query(
            "INSERT INTO policy_endpoints (endpoint, pay_to, source, created_at_ms) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (endpoint) DO NOTHING",
        )
        .bind(pin.endpoint.as_str())
        .bind(pin.pay_to.as_str())
        .bind(pin.source)
        .bind(now)
        .execute(&self.pool)
        .await?;
        let (pay_to,): (String,) =
            sqlx::query_as("SELECT pay_to FROM policy_endpoints WHERE endpoint = $1")
                .bind(pin.endpoint.as_str())
                .fetch_one(&self.pool)
                .await?;
        Ok(PinOutcome {
            pay_to,
            created: inserted.rows_affected() == 1,
        })
    }

    async fn note_recent(
        &self,
        key: &str,
        fingerprint: &Fingerprint,
        window_ms: u64,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        let now = to_db_ms(now_ms, "now_ms")?;
        let since = now.saturating_sub(to_db_ms(window_ms, "window_ms")?);
        // One upsert decides: a new key, the same payment again, or an entry older than the
        // window is (re)written; anything else is a duplicate and changes nothing.
        let written = sqlx::query(
            "INSERT INTO policy_recent (payer_endpoint, fingerprint, seen_at_ms) \
             VALUES ($1, $2, $3) ON CONFLICT (payer_endpoint) DO UPDATE \
             SET fingerprint = excluded.fingerprint, seen_at_ms = excluded.seen_at_ms \
             WHERE policy_recent.fingerprint = excluded.fingerprint \
             OR policy_recent.seen_at_ms <= $4",
        )
        .bind(key)
        .bind(fingerprint.0.as_str())
        .bind(now)
        .bind(since)
        .execute(&self.pool)
        .await?;
        Ok(written.rows_affected() == 1)
    }

    async fn breaker(&self, subject: &str) -> Result<Option<BreakerRecord>, StoreError> {
        let row: Option<(String, String, i64, i64)> = sqlx::query_as(
            "SELECT subject, state, failures, opened_at_ms FROM policy_breakers WHERE subject = $1",
        )
        .bind(subject)
        .fetch_optional(&self.reads)
        .await?;
        Ok(
            row.map(|(subject, state, failures, opened_at_ms)| BreakerRecord {
                subject,
                state,
                failures,
                opened_at_ms,
            }),
        )
    }

    async fn breaker_violation(
        &self,
        subject: &str,
        threshold: u32,
        now_ms: u64,
    ) -> Result<BreakerRecord, StoreError> {
        let now = to_db_ms(now_ms, "now_ms")?;
        let threshold = i64::from(threshold.max(1));
        let first_state = if threshold <= 1 { "open" } else { "closed" };
        // One upsert, so concurrent violations count exactly.
        sqlx::query(
            "INSERT INTO policy_breakers (subject, state, failures, opened_at_ms, updated_at_ms) \
             VALUES ($1, $4, 1, $3, $3) ON CONFLICT (subject) DO UPDATE SET \
             opened_at_ms = CASE WHEN policy_breakers.state = 'open' \
                 THEN policy_breakers.opened_at_ms \
                 WHEN policy_breakers.state = 'half_open' \
                   OR policy_breakers.failures + 1 >= $2 THEN $3 \
                 ELSE policy_breakers.opened_at_ms END, \
             state = CASE WHEN policy_breakers.state <> 'closed' \
                   OR policy_breakers.failures + 1 >= $2 THEN 'open' ELSE 'closed' END, \
             failures = policy_breakers.failures + 1, updated_at_ms = $3",
        )
        .bind(subject)
        .bind(threshold)
        .bind(now)
        .bind(first_state)
        .execute(&self.pool)
        .await?;
        self.breaker(subject)
            .await?
            .ok_or_else(|| StoreError::Corrupt("breaker vanished after upsert".into()))
    }

    async fn breaker_success(&self, subject: &str, now_ms: u64) -> Result<(), StoreError> {
        let now = to_db_ms(now_ms, "now_ms")?;
        sqlx::query(
            "UPDATE policy_breakers SET state = 'closed', failures = 0, updated_at_ms = $2 \
             WHERE subject = $1 AND (state <> 'closed' OR failures <> 0)",
        )
        .bind(subject)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn breaker_half_open(
        &self,
        subject: &str,
        now_ms: u64,
        stale_before_ms: u64,
    ) -> Result<bool, StoreError> {
        let now = to_db_ms(now_ms, "now_ms")?;
        let stale = to_db_ms(stale_before_ms, "stale_before_ms")?;
        // One conditional update: of concurrent callers exactly one moves the row.
        let moved = sqlx::query(
            "UPDATE policy_breakers SET state = 'half_open', opened_at_ms = $2, \
             updated_at_ms = $2 WHERE subject = $1 AND (state = 'open' \
             OR (state = 'half_open' AND opened_at_ms <= $3))",
        )
        .bind(subject)
        .bind(now)
        .bind(stale)
        .execute(&self.pool)
        .await?;
        Ok(moved.rows_affected() == 1)
    }

    async fn reset_breaker(&self, subject: &str, now_ms: u64) -> Result<bool, StoreError> {
        let now = to_db_ms(now_ms, "now_ms")?;
        let reset = sqlx::query(
            "UPDATE policy_breakers SET state = 'closed', failures = 0, updated_at_ms = $2 \
             WHERE subject = $1",
        )
        .bind(subject)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(reset.rows_affected() == 1)
    }
}

type AnyTx<'c> = sqlx::Transaction<'c, sqlx::Any>;

/// Creates the counter if missing and takes its row lock until commit, in one upsert
/// (PostgreSQL locks the row it inserts or updates; SQLite's `BEGIN IMMEDIATE` already
/// serialises writers).
async fn lock_counter(tx: &mut AnyTx<'_>, key: &str, now: i64) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO policy_counters (counter_key, used, reserved, updated_at_ms) \
         VALUES ($1, 0, 0, $2) \
         ON CONFLICT (counter_key) DO UPDATE SET updated_at_ms = excluded.updated_at_ms",
    )
    .bind(key)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Appends `rows` tuples of `columns` numbered placeholders, numbered from `first`:
/// `($1, $2), ($3, $4)` for 2 rows of 2 columns from 1.
pub(crate) fn push_placeholders(sql: &mut String, rows: usize, columns: usize, first: usize) {
    use std::fmt::Write as _;
    for row in 0..rows {
        sql.push_str(if row == 0 { "(" } else { ", (" });
        for col in 0..columns {
            let sep = if col == 0 { "" } else { ", " };
            let _ = write!(sql, "{sep}${}", first + row * columns + col);
        }
        sql.push(')');
    }
}

/// What the fast path came to.
#[derive(Debug)]
pub(crate) enum Fast {
    /// Every counter taken and the holds inserted (committed).
    Reserved,
    /// The payment already holds live budget (a re-verify, or the settle after its verify);
    /// nothing was kept.
    AlreadyHeld,
    /// Nothing was kept; the careful path decides.
    Careful,
}

/// The common case in two statements: every counter taken at once (each under its cap), then
/// the payment's holds inserted unless it has any already. When it has, one read of its holds
/// tells a live reservation (the answer) from a lapsed one (the careful path's case).
async fn reserve_fast(
    pool: &AnyPool,
    dialect: Dialect,
    fingerprint: &str,
    counters: &[super::BudgetClaim],
    expires: i64,
    now: i64,
) -> Result<Fast, StoreError> {
    use std::fmt::Write as _;
    let n = counters.len();
    // counters: $1 = now, then (key, amount, cap) per counter from $2.
    let mut take = String::from(
        "INSERT INTO policy_counters (counter_key, used, reserved, updated_at_ms) \
         SELECT column1, 0, column2, $1 FROM (VALUES ",
    );
    push_placeholders(&mut take, n, 3, 2);
    take.push_str(
        ") AS v WHERE column2 <= column3 ON CONFLICT (counter_key) DO UPDATE SET \
         reserved = policy_counters.reserved + excluded.reserved, \
         updated_at_ms = excluded.updated_at_ms \
         WHERE policy_counters.used + policy_counters.reserved + excluded.reserved <= \
         CASE excluded.counter_key",
    );
    for i in 0..n {
        let b = 2 + 3 * i;
        let _ = write!(take, " WHEN ${b} THEN ${}", b + 2);
    }
    take.push_str(" END");
    let mut tx = pool.begin_with(dialect.begin_chain_write()).await?;
    // Only numbered placeholders are formatted in; every value is bound.
    let mut q = sqlx::query(sqlx::AssertSqlSafe(take)).bind(now);
    for c in counters {
        q = q.bind(c.key.as_str()).bind(c.amount).bind(c.cap);
    }
    if q.execute(&mut *tx).await?.rows_affected() != n as u64 {
        tx.rollback().await?;
        return Ok(Fast::Careful);
    }
    if insert_new_holds(&mut tx, fingerprint, counters, expires, now).await? != n as u64 {
        // Read before the rollback, while the counters taken above are still locked, as the
        // careful path reads them.
        let own = own_holds(&mut tx, fingerprint, now).await?;
        tx.rollback().await?;
        return Ok(own.fast_outcome());
    }
    tx.commit().await?;
    Ok(Fast::Reserved)
}

/// Inserts the payment's holds unless it has some already; the rows inserted.
async fn insert_new_holds(
    tx: &mut AnyTx<'_>,
    fingerprint: &str,
    counters: &[super::BudgetClaim],
    expires: i64,
    now: i64,
) -> Result<u64, StoreError> {
    let params = insert_holds_params(fingerprint, counters, expires, now);
    // Only numbered placeholders are formatted in; every value is bound.
    let sql = sqlx::AssertSqlSafe(insert_holds_sql(counters.len()));
    Ok(bind_sqlx(sqlx::query(sql), &params)
        .execute(&mut **tx)
        .await?
        .rows_affected())
}

/// The statement inserting a payment's holds on `n` counters unless it has some already:
/// $1 fingerprint, $2 expires, $3 now, then (key, amount) per counter from $4.
fn insert_holds_sql(n: usize) -> String {
    let mut sql = String::from(
        "INSERT INTO policy_holds (fingerprint, counter_key, amount, state, expires_at_ms, \
         created_at_ms, updated_at_ms) SELECT $1, column1, column2, 'reserved', $2, $3, $3 \
         FROM (VALUES ",
    );
    push_placeholders(&mut sql, n, 2, 4);
    sql.push_str(") AS v WHERE NOT EXISTS (SELECT 1 FROM policy_holds WHERE fingerprint = $1)");
    sql
}

fn insert_holds_params<'a>(
    fingerprint: &'a str,
    counters: &'a [super::BudgetClaim],
    expires: i64,
    now: i64,
) -> Vec<Param<'a>> {
    let mut params = vec![fingerprint.into(), expires.into(), now.into()];
    for c in counters {
        params.extend([Param::from(c.key.as_str()), c.amount.into()]);
    }
    params
}

/// One payment's reservation waiting for a SQLite batch.
#[derive(Debug)]
pub(crate) struct PendingReserve {
    fingerprint: String,
    counters: Vec<super::BudgetClaim>,
    expires: i64,
    now: i64,
}

/// Most reservations one SQLite batch takes.
const RESERVE_BATCH_MAX: usize = 64;

/// A queue of reservations for SQLite's one writer connection.
fn reserve_queue() -> GroupCommit<PendingReserve, Fast> {
    GroupCommit::new(RESERVE_BATCH_MAX)
}

/// SQLite: the fast path of every queued reservation in one transaction, two statements each,
/// as one job on the writer thread. Each take is all or none, so no reservation needs a
/// savepoint to undo its own part. If the batch fails, each reservation runs alone.
async fn reserve_batch(engine: &SqliteEngine, batch: Vec<(PendingReserve, Reply<Fast>)>) {
    sqlite_engine::write_batch(engine, batch, "budget reservation", |tx, items| {
        items.iter().map(|item| take_whole(tx, item)).collect()
    })
    .await;
}

/// SQLite, inside a batch: takes every counter, or none when one would pass its cap or the
/// payment already holds budget, then inserts the holds. The check reads the counters as the
/// batch left them (BEGIN IMMEDIATE), so it decides for every row at once.
fn take_whole(tx: &rusqlite::Connection, item: &PendingReserve) -> Result<Fast, StoreError> {
    let n = item.counters.len();
    // $1 = now, (key, amount, cap) per counter from $2, then the fingerprint.
    let fingerprint_param = 2 + 3 * n;
    let mut sql = String::from(
        "INSERT INTO policy_counters (counter_key, used, reserved, updated_at_ms) \
         SELECT column1, 0, column2, $1 FROM (VALUES ",
    );
    push_placeholders(&mut sql, n, 3, 2);
    sql.push_str(&format!(
        ") AS v WHERE NOT EXISTS (SELECT 1 FROM policy_holds \
         WHERE fingerprint = ${fingerprint_param}) AND NOT EXISTS (SELECT 1 FROM (VALUES "
    ));
    push_placeholders(&mut sql, n, 3, 2);
    sql.push_str(
        ") AS w LEFT JOIN policy_counters c ON c.counter_key = w.column1 \
         WHERE COALESCE(c.used, 0) + COALESCE(c.reserved, 0) + w.column2 > w.column3) \
         ON CONFLICT (counter_key) DO UPDATE SET \
         reserved = policy_counters.reserved + excluded.reserved, \
         updated_at_ms = excluded.updated_at_ms",
    );
    let mut params = vec![Param::Int(item.now)];
    for c in &item.counters {
        params.extend([Param::from(c.key.as_str()), c.amount.into(), c.cap.into()]);
    }
    params.push(item.fingerprint.as_str().into());
    let took = sqlite_engine::execute(tx, &sql, &params)?;
    if took == 0 {
        let holds =
            sqlite_engine::query_all(tx, OWN_HOLDS, &[item.fingerprint.as_str().into()], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })?;
        return Ok(OwnHolds::of(&holds, item.now).fast_outcome());
    }
    if took != n as u64 {
        return Err(StoreError::Corrupt(format!(
            "a reservation took {took} of its {n} counters"
        )));
    }
    let held = sqlite_engine::execute(
        tx,
        &insert_holds_sql(n),
        &insert_holds_params(&item.fingerprint, &item.counters, item.expires, item.now),
    )?;
    if held != n as u64 {
        return Err(StoreError::Corrupt(format!(
            "a reservation stored {held} of its {n} holds"
        )));
    }
    Ok(Fast::Reserved)
}

/// Adds `counter.amount` to the counter's reservations if it fits under the cap, creating the
/// counter on first use; false if it does not fit. One upsert, which on PostgreSQL also takes
/// the counter's row lock until commit (even when the cap refuses).
async fn take_counter(
    tx: &mut AnyTx<'_>,
    counter: &super::BudgetClaim,
    now: i64,
) -> Result<bool, StoreError> {
    let took = sqlx::query(
        "INSERT INTO policy_counters (counter_key, used, reserved, updated_at_ms) \
         SELECT $1, 0, $2, $4 WHERE $2 <= $3 \
         ON CONFLICT (counter_key) DO UPDATE SET \
         reserved = policy_counters.reserved + $2, updated_at_ms = $4 \
         WHERE policy_counters.used + policy_counters.reserved + $2 <= $3",
    )
    .bind(counter.key.as_str())
    .bind(counter.amount)
    .bind(counter.cap)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(took.rows_affected() == 1)
}

/// What a payment already holds: whether any hold is live, whether any lapsed, and whether a
/// live one is past its lifetime but not yet swept.
struct OwnHolds {
    held: bool,
    lapsed: bool,
    stale: bool,
}

/// A payment's holds: (state, expires_at_ms) per counter.
const OWN_HOLDS: &str = "SELECT state, expires_at_ms FROM policy_holds WHERE fingerprint = $1";

impl OwnHolds {
    /// What the fast path answers a payment whose take stopped at its own holds: a live
    /// reservation is the answer; a lapsed or stale one is the careful path's case.
    fn fast_outcome(&self) -> Fast {
        if self.held && !self.stale {
            Fast::AlreadyHeld
        } else {
            Fast::Careful
        }
    }

    fn of(holds: &[(String, i64)], now: i64) -> Self {
        OwnHolds {
            held: holds
                .iter()
                .any(|(state, _)| state == "reserved" || state == "committed"),
            lapsed: holds.iter().any(|(state, _)| state == "expired"),
            stale: holds
                .iter()
                .any(|(state, expires)| state == "reserved" && *expires <= now),
        }
    }
}

async fn own_holds(
    tx: &mut AnyTx<'_>,
    fingerprint: &str,
    now: i64,
) -> Result<OwnHolds, StoreError> {
    let holds: Vec<(String, i64)> = sqlx::query_as(OWN_HOLDS)
        .bind(fingerprint)
        .fetch_all(&mut **tx)
        .await?;
    Ok(OwnHolds::of(&holds, now))
}

/// Gives back holds on `key` whose payment lifetime has passed. Runs under the counter's lock,
/// and every statement reads the latest committed holds, so the sum is exact.
async fn sweep_expired(tx: &mut AnyTx<'_>, key: &str, now: i64) -> Result<(), StoreError> {
    let (count, expired): (i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), CAST(COALESCE(SUM(amount), 0) AS BIGINT) FROM policy_holds \
         WHERE counter_key = $1 AND state = 'reserved' AND expires_at_ms <= $2",
    )
    .bind(key)
    .bind(now)
    .fetch_one(&mut **tx)
    .await?;
    if count == 0 {
        return Ok(());
    }
    if expired > 0 {
        sqlx::query("UPDATE policy_counters SET reserved = reserved - $2 WHERE counter_key = $1")
            .bind(key)
            .bind(expired)
            .execute(&mut **tx)
            .await?;
    }
    sqlx::query(
        "UPDATE policy_holds SET state = 'expired', updated_at_ms = $2 \
         WHERE counter_key = $1 AND state = 'reserved' AND expires_at_ms <= $2",
    )
    .bind(key)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

impl SqlStore {
    /// Commits (`commit`) or releases the payment's holds, each under its counter's lock.
    async fn finish_holds(
        &self,
        fingerprint: &Fingerprint,
        now_ms: u64,
        commit: bool,
    ) -> Result<(), StoreError> {
        let now = to_db_ms(now_ms, "now_ms")?;
        let keys: Vec<(String,)> = sqlx::query_as(
            "SELECT counter_key FROM policy_holds WHERE fingerprint = $1 \
             AND state IN ('reserved', 'expired') ORDER BY counter_key",
        )
        .bind(fingerprint.0.as_str())
        .fetch_all(&self.pool)
        .await?;
        if keys.is_empty() {
            return Ok(());
        }
        let mut tx = self
            .pool
            .begin_with(self.dialect.begin_chain_write())
            .await?;
        for (key,) in keys {
            lock_counter(&mut tx, &key, now).await?;
            // Re-read under the lock: a concurrent sweep may have expired the hold.
            let hold: Option<(String, i64)> = sqlx::query_as(
                "SELECT state, amount FROM policy_holds WHERE fingerprint = $1 AND counter_key = $2",
            )
            .bind(fingerprint.0.as_str())
            .bind(key.as_str())
            .fetch_optional(&mut *tx)
            .await?;
            let Some((state, amount)) = hold else {
                continue;
            };
            let (counter_sql, next) = match (state.as_str(), commit) {
                ("reserved", true) => (
                    Some(
                        "UPDATE policy_counters SET reserved = reserved - $2, used = used + $2 \
                         WHERE counter_key = $1",
                    ),
                    "committed",
                ),
                // The hold lapsed but the money moved: count it.
                ("expired", true) => (
                    Some("UPDATE policy_counters SET used = used + $2 WHERE counter_key = $1"),
                    "committed",
                ),
                ("reserved", false) => (
                    Some(
                        "UPDATE policy_counters SET reserved = reserved - $2 WHERE counter_key = $1",
                    ),
                    "released",
                ),
                ("expired", false) => (None, "released"),
                _ => continue,
            };
            if let Some(sql) = counter_sql {
                sqlx::query(sql)
                    .bind(key.as_str())
                    .bind(amount)
                    .execute(&mut *tx)
                    .await?;
            }
            sqlx::query(
                "UPDATE policy_holds SET state = $3, updated_at_ms = $4 \
                 WHERE fingerprint = $1 AND counter_key = $2",
            )
            .bind(fingerprint.0.as_str())
            .bind(key.as_str())
            .bind(next)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(fingerprint: &str, claims: &[(&str, i64, i64)]) -> PendingReserve {
        PendingReserve {
            fingerprint: fingerprint.to_owned(),
            counters: claims
                .iter()
                .map(|&(key, cap, amount)| super::super::BudgetClaim {
                    key: key.to_owned(),
                    cap,
                    amount,
                })
                .collect(),
            expires: 10_000,
            now: 1_000,
        }
    }

    /// An in-memory URL is a temporary file both sets of connections share, gone with the store.
    #[tokio::test]
    async fn an_in_memory_store_is_a_temporary_file_removed_on_drop() {
        let store = SqlStore::connect("sqlite::memory:").await.expect("connect");
        store.migrate().await.expect("migrate");
        let path = store.engine().expect("engine").path().to_owned();
        assert!(path.exists(), "{} while the store is open", path.display());
        // Written through sqlx, read through Gatehouse's own connection: one database.
        sqlx::query("INSERT INTO policy_counters (counter_key, used, reserved, updated_at_ms) VALUES ('k', 1, 2, 3)")
            .execute(&store.pool)
            .await
            .expect("insert");
        let read = store
            .engine()
            .expect("engine")
            .read(|conn| {
                sqlite_engine::query_row(
                    conn,
                    "SELECT reserved FROM policy_counters WHERE counter_key = $1",
                    &["k".into()],
                    |row| row.get::<_, i64>(0),
                )
            })
            .expect("read");
        assert_eq!(read, Some(2));
        drop(store);
        assert!(
            !path.exists(),
            "{} after the store is dropped",
            path.display()
        );
    }

    /// sqlx's writer and Gatehouse's meet at SQLite's file lock: a reservation batch waits for
    /// a sqlx transaction holding the lock, then commits, and neither loses a write.
    #[tokio::test]
    async fn the_two_writers_wait_for_each_other() {
        let store = Arc::new(SqlStore::connect("sqlite::memory:").await.expect("connect"));
        store.migrate().await.expect("migrate");
        let mut tx = store
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .expect("begin");
        sqlx::query("INSERT INTO policy_counters (counter_key, used, reserved, updated_at_ms) VALUES ('held', 0, 7, 1)")
            .execute(&mut *tx)
            .await
            .expect("insert");
        let engine = Arc::clone(store.engine().expect("engine"));
        let item = pending("p", &[("held", 100, 5)]);
        let waiting = tokio::spawn(async move {
            engine
                .write(move |conn| {
                    sqlite_engine::together_or_alone(conn, &[item], "test", |tx, items| {
                        items.iter().map(|item| take_whole(tx, item)).collect()
                    })
                })
                .await
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            !waiting.is_finished(),
            "the batch must wait for the file lock"
        );
        tx.commit().await.expect("commit");
        let outcomes = waiting.await.expect("join").expect("writer");
        assert!(
            matches!(outcomes.as_slice(), [Ok(Fast::Reserved)]),
            "{outcomes:?}"
        );
        let (reserved,): (i64,) =
            sqlx::query_as("SELECT reserved FROM policy_counters WHERE counter_key = 'held'")
                .fetch_one(&store.pool)
                .await
                .expect("read");
        assert_eq!(
            reserved, 12,
            "the sqlx insert and the batch's take both stand"
        );
    }

    /// The batched take itself (the batch would hide a wrong one by falling back to the
    /// per-reservation path): all or none within one transaction, a payment that holds
    /// budget is told apart, and what it leaves to the careful path is untouched.
    #[tokio::test]
    async fn a_batched_take_is_all_or_none() {
        let store = SqlStore::connect("sqlite::memory:").await.expect("connect");
        store.migrate().await.expect("migrate");
        let counter = |key: &'static str| {
            let pool = store.pool.clone();
            async move {
                sqlx::query_as::<_, (i64, i64)>(
                    "SELECT used, reserved FROM policy_counters WHERE counter_key = $1",
                )
                .bind(key)
                .fetch_optional(&pool)
                .await
                .expect("read")
            }
        };
        let roomy_and_tight = [("roomy", 1_000, 10), ("tight", 25, 10)];
        let items = [
            pending("a", &roomy_and_tight),
            pending("b", &roomy_and_tight),
            pending("a", &roomy_and_tight),
            pending("c", &roomy_and_tight),
            pending("d", &[("new", 5, 6)]),
        ];
        let outcomes = store
            .engine()
            .expect("engine")
            .write(move |conn| {
                let tx = conn.transaction().expect("begin");
                let outcomes: Vec<_> = items.iter().map(|item| take_whole(&tx, item)).collect();
                tx.commit().expect("commit");
                outcomes
            })
            .await
            .expect("writer");
        let outcomes: Vec<_> = outcomes
            .into_iter()
            .map(|o| format!("{:?}", o.expect("take")))
            .collect();
        assert_eq!(
            outcomes,
            ["Reserved", "Reserved", "AlreadyHeld", "Careful", "Careful"]
        );
        // "c" did not fit under "tight", so "roomy" was not charged for it either.
        assert_eq!(counter("roomy").await, Some((0, 20)));
        assert_eq!(counter("tight").await, Some((0, 20)));
        assert_eq!(counter("new").await, None, "over its cap at first use");
    }

    #[test]
    fn placeholders_are_numbered_from_first() {
        let mut sql = String::new();
        push_placeholders(&mut sql, 2, 3, 2);
        assert_eq!(sql, "($2, $3, $4), ($5, $6, $7)");
    }

    #[test]
    fn synchronous_is_taken_off_the_sqlite_url() {
        let parse = |url| sqlite_synchronous(url).map_err(|e| e.to_string());
        assert_eq!(
            parse("sqlite://g.db"),
            Ok(("sqlite://g.db".to_owned(), Synchronous::Normal))
        );
        assert_eq!(
            parse("sqlite://g.db?synchronous=full"),
            Ok(("sqlite://g.db".to_owned(), Synchronous::Full))
        );
        assert_eq!(
            parse("sqlite://g.db?mode=rwc&synchronous=FULL&cache=shared"),
            Ok((
                "sqlite://g.db?mode=rwc&cache=shared".to_owned(),
                Synchronous::Full
            ))
        );
        let refused = parse("sqlite://g.db?synchronous=off").unwrap_err();
        assert!(refused.contains("`normal` or `full`"), "{refused}");
    }

    fn claim(identifier: Option<&str>, digest: &str) -> SettlementClaim {
        SettlementClaim {
            fingerprint: Fingerprint("fp".into()),
            payment_identifier: identifier.map(str::to_owned),
            request_digest: digest.into(),
            network: "eip155:8453".into(),
            payer: None,
            now_ms: 1,
        }
    }

    fn row(state: SettlementState, identifier: Option<&str>) -> SettlementRecord {
        SettlementRecord {
            fingerprint: Fingerprint("fp".into()),
            state,
            payment_identifier: identifier.map(str::to_owned),
            request_digest: "d".into(),
            transaction: None,
            response_json: None,
            network: "eip155:8453".into(),
            payer: None,
            created_at_ms: 1,
            updated_at_ms: 1,
        }
    }

    #[test]
    fn existing_rows_are_judged_by_identifier_then_state() {
        use SettlementState::*;
        // Invariant 2: only the same identifier with the same payload gets the recorded answer.
        for state in [Settled, Failed, Pending] {
            let r = row(state, Some("id"));
            assert_eq!(
                judge_existing(&claim(Some("id"), "d"), r.clone()),
                Existing::Answer(Begin::Replay(r))
            );
        }
        let r = row(InFlight, Some("id"));
        assert_eq!(
            judge_existing(&claim(Some("id"), "d"), r.clone()),
            Existing::Answer(Begin::InFlight(r))
        );
        assert_eq!(
            judge_existing(&claim(Some("id"), "other"), row(Settled, Some("id"))),
            Existing::Answer(Begin::IdentifierConflict)
        );
        // No identifier on either side never counts as "the same identifier".
        let r = row(Settled, None);
        assert_eq!(
            judge_existing(&claim(None, "d"), r.clone()),
            Existing::Answer(Begin::Duplicate(r))
        );
        for identifier in [None, Some("new")] {
            assert_eq!(
                judge_existing(&claim(identifier, "d"), row(Failed, Some("id"))),
                Existing::Reclaim
            );
            for state in [InFlight, Settled, Pending] {
                assert!(matches!(
                    judge_existing(&claim(identifier, "d"), row(state, Some("id"))),
                    Existing::Answer(Begin::Duplicate(_))
                ));
            }
        }
    }

    #[test]
    fn identifier_constraint_is_recognised_on_both_backends() {
        let pg = StoreError::Constraint {
            constraint: "settlements_payment_identifier_key".into(),
        };
        let sqlite = StoreError::Constraint {
            constraint: "UNIQUE constraint failed: settlements.payment_identifier".into(),
        };
        let other = StoreError::Constraint {
            constraint: "evidence_pkey".into(),
        };
        assert!(is_identifier_conflict(&pg));
        assert!(is_identifier_conflict(&sqlite));
        assert!(!is_identifier_conflict(&other));
    }

    #[test]
    fn url_scheme_never_returns_credentials() {
        assert_eq!(url_scheme("postgres://u:p@h/db"), "postgres");
        assert_eq!(url_scheme("sqlite::memory:"), "sqlite");
        assert_eq!(url_scheme("user:secret@host"), "user");
        assert_eq!(url_scheme("u/x:secret"), "<none>");
        assert_eq!(url_scheme("nothing"), "<none>");
    }
}
