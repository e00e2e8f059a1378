//! SQLite's hot paths on connections Gatehouse drives itself.
//!
//! sqlx runs each SQLite connection on a worker thread and hands every statement, and every
//! row, across it. Under load those hand-offs (futex wake-ups, context switches) cost more CPU
//! than SQLite's own work (perf on `bench/compare.sh`). Here the budget and evidence group
//! commits run a whole batch as one job on a writer thread, the risk-history counts run as a
//! job there too (its page cache stays warm), and the settlement-journal read runs in place on
//! a pooled read connection: microseconds of work, no hand-off.
//!
//! Everything else keeps using sqlx on the same file. Both writers open `BEGIN IMMEDIATE`
//! transactions (or single statements) and SQLite serialises them at the file lock; this
//! connection's busy handler retries in steps of tens of microseconds, so it does not sleep
//! a millisecond behind a short sqlx write.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, mpsc};
use std::time::Duration;

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, OpenFlags, Statement, ToSql, Transaction, TransactionBehavior};
use tokio::sync::oneshot;

use super::StoreError;
use super::group_commit::{Reply, answer_each};

/// Read connections kept open between reads.
const READS_KEPT: usize = 8;
/// Prepared statements each connection keeps (batch statements vary with the batch size).
const STATEMENT_CACHE: usize = 128;
/// Busy-handler attempts before a statement gives up: about 10 s in all, the sqlx side's
/// `busy_timeout`.
const BUSY_ATTEMPTS: i32 = 5_000;

/// A value bound to a statement shared by sqlx (PostgreSQL) and this module (SQLite).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Param<'a> {
    /// An integer.
    Int(i64),
    /// Text, or NULL.
    Text(Option<&'a str>),
}

impl<'a> From<&'a str> for Param<'a> {
    fn from(text: &'a str) -> Self {
        Param::Text(Some(text))
    }
}

impl<'a> From<Option<&'a str>> for Param<'a> {
    fn from(text: Option<&'a str>) -> Self {
        Param::Text(text)
    }
}

impl From<i64> for Param<'_> {
    fn from(n: i64) -> Self {
        Param::Int(n)
    }
}

impl ToSql for Param<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match *self {
            Param::Int(n) => ValueRef::Integer(n),
            Param::Text(Some(text)) => ValueRef::Text(text.as_bytes()),
            Param::Text(None) => ValueRef::Null,
        }))
    }
}

impl Param<'_> {
    /// The value, owned (for work sent to the writer thread).
    pub(crate) fn to_owned_value(self) -> OwnedParam {
        match self {
            Param::Int(n) => OwnedParam::Int(n),
            Param::Text(text) => OwnedParam::Text(text.map(str::to_owned)),
        }
    }
}

/// An owned [`Param`].
#[derive(Debug, Clone)]
pub(crate) enum OwnedParam {
    /// An integer.
    Int(i64),
    /// Text, or NULL.
    Text(Option<String>),
}

impl OwnedParam {
    /// Borrowed, for binding.
    pub(crate) fn as_param(&self) -> Param<'_> {
        match self {
            OwnedParam::Int(n) => Param::Int(*n),
            OwnedParam::Text(text) => Param::Text(text.as_deref()),
        }
    }
}

/// Binds `params` to a sqlx query in order (`$1`, `$2`, ...).
pub(crate) fn bind_sqlx<'q>(
    mut query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    params: &[Param<'q>],
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    for param in params {
        query = match *param {
            Param::Int(n) => query.bind(n),
            Param::Text(text) => query.bind(text),
        };
    }
    query
}

/// Binds `params` to a sqlx `query_as` in order (`$1`, `$2`, ...).
pub(crate) fn bind_sqlx_as<'q, T>(
    mut query: sqlx::query::QueryAs<'q, sqlx::Any, T, sqlx::any::AnyArguments>,
    params: &[Param<'q>],
) -> sqlx::query::QueryAs<'q, sqlx::Any, T, sqlx::any::AnyArguments> {
    for param in params {
        query = match *param {
            Param::Int(n) => query.bind(n),
            Param::Text(text) => query.bind(text),
        };
    }
    query
}

/// Prepares `sql` (cached) and binds `params` to its `$1`, `$2`, ... placeholders.
///
/// SQLite reads `$N` as a *named* parameter and numbers names by first appearance, so each is
/// bound by its name: the SQL written for PostgreSQL's numbering works unchanged.
pub(crate) fn prepare<'c>(
    conn: &'c Connection,
    sql: &str,
    params: &[Param<'_>],
) -> Result<rusqlite::CachedStatement<'c>, StoreError> {
    let mut statement = conn.prepare_cached(sql)?;
    bind_numbered(&mut statement, params)?;
    Ok(statement)
}

fn bind_numbered(statement: &mut Statement<'_>, params: &[Param<'_>]) -> rusqlite::Result<()> {
    for (i, param) in params.iter().enumerate() {
        if let Some(index) = statement.parameter_index(&format!("${}", i + 1))? {
            statement.raw_bind_parameter(index, param)?;
        }
    }
    Ok(())
}

/// Runs a statement; the rows it changed.
pub(crate) fn execute(
    conn: &Connection,
    sql: &str,
    params: &[Param<'_>],
) -> Result<u64, StoreError> {
    let mut statement = prepare(conn, sql, params)?;
    let changed = statement.raw_execute()?;
    Ok(changed as u64)
}

/// Runs a query and maps its first row, if any.
pub(crate) fn query_row<T>(
    conn: &Connection,
    sql: &str,
    params: &[Param<'_>],
    map: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> Result<Option<T>, StoreError> {
    let mut statement = prepare(conn, sql, params)?;
    let mut rows = statement.raw_query();
    match rows.next()? {
        Some(row) => Ok(Some(map(row)?)),
        None => Ok(None),
    }
}

/// Runs a query and maps every row.
pub(crate) fn query_all<T>(
    conn: &Connection,
    sql: &str,
    params: &[Param<'_>],
    mut map: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> Result<Vec<T>, StoreError> {
    let mut statement = prepare(conn, sql, params)?;
    let mut rows = statement.raw_query();
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(map(row)?);
    }
    Ok(out)
}

/// Runs `together` over every item in one `BEGIN IMMEDIATE` transaction; if that fails, each
/// item alone in its own, so one bad item cannot fail the others. One outcome per item.
pub(crate) fn together_or_alone<T, R>(
    conn: &mut Connection,
    items: &[T],
    what: &'static str,
    together: impl Fn(&Transaction<'_>, &[T]) -> Result<Vec<R>, StoreError>,
) -> Vec<Result<R, StoreError>> {
    let in_one = |conn: &mut Connection, items: &[T]| {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let outcomes = together(&tx, items)?;
        if outcomes.len() != items.len() {
            return Err(StoreError::Corrupt(format!(
                "{what}: {} outcomes for {} items",
                outcomes.len(),
                items.len()
            )));
        }
        tx.commit()?;
        Ok(outcomes)
    };
    if items.len() > 1 {
        match in_one(conn, items) {
            Ok(outcomes) => return outcomes.into_iter().map(Ok).collect(),
            Err(error) => {
                tracing::warn!(%error, items = items.len(), "{what} batch failed; one by one");
            }
        }
    }
    items
        .iter()
        .map(|item| {
            in_one(conn, std::slice::from_ref(item)).and_then(|mut one| {
                one.pop()
                    .ok_or_else(|| StoreError::Corrupt(format!("{what}: no outcome")))
            })
        })
        .collect()
}

/// Runs a group-commit batch as one job on the writer ([`together_or_alone`]) and answers
/// each caller with its own outcome.
pub(crate) async fn write_batch<T: Send + 'static, R: Send + 'static>(
    engine: &SqliteEngine,
    batch: Vec<(T, Reply<R>)>,
    what: &'static str,
    together: fn(&Transaction<'_>, &[T]) -> Result<Vec<R>, StoreError>,
) {
    let (items, replies): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
    let outcomes = engine
        .write(move |conn| together_or_alone(conn, &items, what, together))
        .await;
    answer_each(replies, outcomes);
}

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// The writer thread and the read connections of one SQLite file.
pub(crate) struct SqliteEngine {
    jobs: mpsc::Sender<Job>,
    reads: Mutex<Vec<Connection>>,
    path: PathBuf,
    synchronous: &'static str,
    /// Removes a temporary database (an in-memory URL's stand-in) when the store goes.
    _temporary: Option<TemporaryFile>,
}

impl std::fmt::Debug for SqliteEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteEngine")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SqliteEngine {
    /// Opens the writer thread on `path` (the file must be in WAL mode or about to be).
    pub(crate) fn open(
        path: &Path,
        synchronous: &'static str,
        temporary: bool,
    ) -> Result<Self, StoreError> {
        let writer = open_connection(path, synchronous)?;
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("gatehouse-sqlite".into())
            .spawn(move || {
                let mut writer = writer;
                // Ends when the engine (the only sender) is dropped.
                while let Ok(job) = queue.recv() {
                    // A job that panics drops its answer (its caller gets an error, so the
                    // payment fails closed) and rolls its transaction back on unwind; the
                    // writer carries on with the next job.
                    let run = std::panic::AssertUnwindSafe(|| job(&mut writer));
                    if std::panic::catch_unwind(run).is_err() {
                        tracing::error!("a SQLite writer job panicked; its caller got an error");
                    }
                }
            })
            .map_err(|error| StoreError::Stopped(format!("cannot start the writer: {error}")))?;
        Ok(Self {
            jobs,
            reads: Mutex::new(Vec::new()),
            path: path.to_owned(),
            synchronous,
            _temporary: temporary.then(|| TemporaryFile(path.to_owned())),
        })
    }

    /// The database file.
    #[cfg(test)]
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `work` on the writer connection, after every job queued before it.
    pub(crate) async fn write<R: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Connection) -> R + Send + 'static,
    ) -> Result<R, StoreError> {
        let (answer, outcome) = oneshot::channel();
        self.jobs
            .send(Box::new(move |conn| {
                let _ = answer.send(work(conn));
            }))
            .map_err(|_| StoreError::Stopped("the SQLite writer thread is gone".into()))?;
        outcome
            .await
            .map_err(|_| StoreError::Stopped("the SQLite writer dropped a job".into()))
    }

    /// Runs `work` on a read connection, in place: a few indexed lookups, which WAL lets run
    /// beside the writer without waiting.
    pub(crate) fn read<R>(
        &self,
        work: impl FnOnce(&Connection) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let conn = match self.lock_reads().pop() {
            Some(conn) => conn,
            None => open_connection(&self.path, self.synchronous)?,
        };
        let outcome = work(&conn);
        let mut reads = self.lock_reads();
        if reads.len() < READS_KEPT {
            reads.push(conn);
        }
        outcome
    }

    fn lock_reads(&self) -> std::sync::MutexGuard<'_, Vec<Connection>> {
        // A panic while holding this lock cannot leave the Vec half-updated.
        self.reads
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn open_connection(path: &Path, synchronous: &str) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    conn.busy_handler(Some(busy))?;
    // As sqlx configures its own connections to the file (foreign keys on by default there).
    conn.execute_batch(&format!(
        "PRAGMA foreign_keys = ON; PRAGMA synchronous = {synchronous}; \
         PRAGMA wal_autocheckpoint = {};",
        super::sql::SQLITE_WRITER_AUTOCHECKPOINT_PAGES
    ))?;
    Ok(conn)
}

/// Waits for another writer: short steps first (a batch holds the lock for well under a
/// millisecond), then longer ones, about 10 s in all.
fn busy(attempt: i32) -> bool {
    let micros = match attempt {
        0..20 => 50,
        20..100 => 500,
        _ => 2_000,
    };
    if attempt >= BUSY_ATTEMPTS {
        return false;
    }
    std::thread::sleep(Duration::from_micros(micros));
    true
}

/// A database file (with its WAL and shared-memory files) removed on drop.
struct TemporaryFile(PathBuf);

impl Drop for TemporaryFile {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut path = self.0.clone().into_os_string();
            path.push(suffix);
            let _ = std::fs::remove_file(path);
        }
    }
}

/// A fresh path for a temporary database: an in-memory URL's stand-in, so its connections
/// (sqlx's and these) share one database. Unique within the process; a file left at the same
/// path by an earlier process with this pid is removed first.
pub(crate) fn temporary_path() -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let path = std::env::temp_dir().join(format!(
        "gatehouse-memory-{}-{}.db",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    drop(TemporaryFile(path.clone()));
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A job that panics fails its own caller and leaves the writer serving the next one.
    #[tokio::test]
    async fn a_panicking_job_fails_its_caller_only() {
        let path = temporary_path();
        let engine = SqliteEngine::open(&path, "NORMAL", true).expect("open");
        let panicked = engine
            .write(|_conn| -> i64 { panic!("a job that panics") })
            .await;
        assert!(
            matches!(panicked, Err(StoreError::Stopped(_))),
            "{panicked:?}"
        );
        let next = engine
            .write(|conn| {
                query_row(conn, "SELECT 40 + $1", &[2.into()], |row| {
                    row.get::<_, i64>(0)
                })
            })
            .await
            .expect("the writer still runs");
        assert_eq!(next.expect("query"), Some(42));
    }

    /// `$N` binds the N-th parameter wherever it first appears, as on PostgreSQL.
    #[test]
    fn numbered_placeholders_bind_by_number_not_by_position() {
        let conn = Connection::open_in_memory().expect("open");
        let got = query_row(
            &conn,
            "SELECT $2 || $1 || $2, $3 IS NULL, $4 + 1",
            &["a".into(), "b".into(), Param::Text(None), 41.into()],
            |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, bool>(1)?,
                    row.get::<_, i64>(2)?,
                ))
            },
        )
        .expect("query");
        assert_eq!(got, Some(("bab".to_owned(), true, 42)));
    }
}
