//! Group commit for the evidence chain.
//!
//! Every decision appends one record, and every append serialises on the chain head (one row,
//! locked for the whole read-hash-insert-advance step). Under concurrent load that lock, one
//! transaction per record, is the store's bottleneck. Here concurrent appenders queue their
//! records; whoever takes the writer lock appends everything queued in ONE transaction and
//! answers each caller with its own record. A caller still returns only after its record is
//! committed (DESIGN invariant 4), and the chain is still linear, on both databases and across
//! replicas (the head row lock is taken per batch as it was per record).

use std::sync::Arc;

use sqlx::AnyPool;

use super::evidence::{IndexFields, IndexRow, index_rows_insert};
use super::group_commit::GroupCommit;
use super::sql::{Dialect, SqlStore, push_placeholders};
use super::sqlite_engine::{self, Param, bind_sqlx};
use super::{EvidenceDraft, EvidenceRecord, RiskPaymentRow, StoreError};
use crate::evidence::query::body_index_fields;
use crate::evidence::{canonical_json, expected_hash};

/// Most records one transaction appends; the rest wait for the next batch.
const BATCH_MAX: usize = 256;

// 10 parameters per record: SQLite (since 3.32) and PostgreSQL both take far more than
// BATCH_MAX × 10 in one statement.
const _: () = assert!(BATCH_MAX * 10 < 32_766);

/// A draft made ready to store: the checks that depend on it alone are done before it queues,
/// so one bad draft cannot fail the batch it would have joined. The record's position
/// (`seq`, `prev_hash`, `hash`) is filled in when its batch is appended.
#[derive(Debug)]
pub(crate) struct Prepared {
    record: EvidenceRecord,
    /// `record.created_at_ms` as the database stores it.
    created_at_db: i64,
    /// The approved payment's risk-history row, stored in the same transaction, with its
    /// timestamp as the database stores it.
    history: Option<(RiskPaymentRow, i64)>,
    /// The record's search-index columns, when its body alone gives them; `None` for a record
    /// of a payment that must inherit its parties from earlier records (the background
    /// indexer resolves those).
    index: Option<IndexFields>,
}

impl Prepared {
    /// Canonicalises the body and range-checks the timestamps.
    pub(crate) fn new(
        draft: EvidenceDraft,
        history: Option<RiskPaymentRow>,
    ) -> Result<Self, StoreError> {
        let history = match history {
            Some(row) => {
                let at = super::sql::to_db_ms(row.created_at_ms, "created_at_ms")?;
                Some((row, at))
            }
            None => None,
        };
        let fields = body_index_fields(&draft.body);
        let standalone =
            draft.fingerprint.is_none() || (fields.payer.is_some() && fields.payee.is_some());
        Ok(Self {
            history,
            index: standalone.then_some(fields),
            created_at_db: super::sql::to_db_ms(draft.created_at_ms, "created_at_ms")?,
            record: EvidenceRecord {
                seq: 0,
                created_at_ms: draft.created_at_ms,
                kind: draft.kind,
                gate: draft.gate,
                fingerprint: draft.fingerprint.map(|f| f.0),
                decision: draft.decision,
                request_id: draft.request_id,
                body: canonical_json(&draft.body),
                prev_hash: String::new(),
                hash: String::new(),
            },
        })
    }
}

type Reply = super::group_commit::Reply<EvidenceRecord>;

/// The queue of records waiting to be appended.
pub(crate) struct AppendQueue(GroupCommit<Prepared, EvidenceRecord>);

impl Default for AppendQueue {
    fn default() -> Self {
        Self(GroupCommit::new(BATCH_MAX))
    }
}

impl std::fmt::Debug for AppendQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppendQueue").finish_non_exhaustive()
    }
}

impl AppendQueue {
    /// Appends `record` to the chain, in a batch with whatever else is queued meanwhile.
    pub(crate) async fn append(
        &self,
        store: &SqlStore,
        record: Prepared,
    ) -> Result<EvidenceRecord, StoreError> {
        match &store.sqlite {
            // SQLite: the whole batch is one job on Gatehouse's own writer thread.
            Some(engine) => {
                self.0
                    .submit(record, |batch| {
                        let engine = Arc::clone(engine);
                        async move {
                            sqlite_engine::write_batch(
                                &engine,
                                batch,
                                "evidence append",
                                append_all_sqlite,
                            )
                            .await;
                        }
                    })
                    .await
            }
            None => {
                let (pool, dialect) = (&store.pool, store.dialect);
                self.0
                    .submit(record, |batch| {
                        let pool = pool.clone();
                        async move { write_batch(&pool, dialect, batch).await }
                    })
                    .await
            }
        }
    }
}

/// Appends `batch` in one transaction; if that fails, each record alone, so every caller gets
/// its own outcome.
async fn write_batch(pool: &AnyPool, dialect: Dialect, batch: Vec<(Prepared, Reply)>) {
    let (records, replies): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
    if records.len() > 1 {
        match append_all(pool, dialect, &records).await {
            Ok(stored) => {
                for (reply, record) in replies.into_iter().zip(stored) {
                    let _ = reply.send(Ok(record));
                }
                return;
            }
            Err(error) => {
                tracing::warn!(%error, records = records.len(), "evidence batch failed; appending one by one");
            }
        }
    }
    for (record, reply) in records.into_iter().zip(replies) {
        let outcome = append_all(pool, dialect, std::slice::from_ref(&record)).await;
        let _ = reply.send(outcome.and_then(|mut stored| {
            stored
                .pop()
                .ok_or_else(|| StoreError::Corrupt("append returned no record".into()))
        }));
    }
}

/// Reads and checks the head, links `records` after it, advances the head, commits.
async fn append_all(
    pool: &AnyPool,
    dialect: Dialect,
    records: &[Prepared],
) -> Result<Vec<EvidenceRecord>, StoreError> {
    let mut tx = pool.begin_with(dialect.begin_chain_write()).await?;
    // The head and the hash of the record it names, in one round trip: the head must name the
    // last record.
    let (head_seq, head_hash, mut last_hash, mut indexed): (
        i64,
        String,
        Option<String>,
        Option<i64>,
    ) = sqlx::query_as(dialect.select_chain_head())
        .fetch_one(&mut *tx)
        .await?;
    if head_seq > 0 && last_hash.as_deref() != Some(head_hash.as_str()) {
        // On PostgreSQL a statement that waited for the head's lock sees the head as the other
        // appender left it but the evidence table as of before the wait; read it afresh before
        // calling the chain broken.
        last_hash = sqlx::query_as::<_, (String,)>("SELECT hash FROM evidence WHERE seq = $1")
            .bind(head_seq)
            .fetch_optional(&mut *tx)
            .await?
            .map(|(hash,)| hash);
    }
    check_head(head_seq, &head_hash, last_hash.as_deref())?;
    let stored = link(records, head_seq, &head_hash)?;
    for (sql, params) in inserts(records, &stored) {
        bind_sqlx(sqlx::query(sqlx::AssertSqlSafe(sql)), &params)
            .execute(&mut *tx)
            .await?;
    }
    if indexed.unwrap_or(0) != head_seq {
        // As with the hash above: on PostgreSQL the index may have moved during the lock wait.
        indexed = sqlx::query_as::<_, (Option<i64>,)>("SELECT MAX(seq) FROM evidence_index")
            .fetch_one(&mut *tx)
            .await?
            .0;
    }
    if let Some((sql, params)) = index_insert(records, &stored, indexed, head_seq) {
        bind_sqlx(sqlx::query(sqlx::AssertSqlSafe(sql)), &params)
            .execute(&mut *tx)
            .await?;
    }
    let (sql, params) = advance_head(&stored, head_seq)?;
    let advanced = bind_sqlx(sqlx::query(sql), &params)
        .execute(&mut *tx)
        .await?;
    head_advanced(advanced.rows_affected())?;
    tx.commit().await?;
    Ok(stored)
}

/// [`append_all`] on Gatehouse's own SQLite writer, inside the caller's transaction.
fn append_all_sqlite(
    tx: &rusqlite::Transaction<'_>,
    records: &[Prepared],
) -> Result<Vec<EvidenceRecord>, StoreError> {
    let (head_seq, head_hash, last_hash, indexed) =
        sqlite_engine::query_row(tx, Dialect::SQLITE.select_chain_head(), &[], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, Option<String>>(2)?,
                row.get::<_, Option<i64>>(3)?,
            ))
        })?
        .ok_or_else(|| StoreError::Corrupt("no evidence head".into()))?;
    check_head(head_seq, &head_hash, last_hash.as_deref())?;
    let stored = link(records, head_seq, &head_hash)?;
    for (sql, params) in inserts(records, &stored) {
        sqlite_engine::execute(tx, &sql, &params)?;
    }
    if let Some((sql, params)) = index_insert(records, &stored, indexed, head_seq) {
        sqlite_engine::execute(tx, &sql, &params)?;
    }
    let (sql, params) = advance_head(&stored, head_seq)?;
    head_advanced(sqlite_engine::execute(tx, sql, &params)?)?;
    Ok(stored)
}

/// The head must name the last record (`last_hash`, the hash stored at the head's seq).
fn check_head(head_seq: i64, head_hash: &str, last_hash: Option<&str>) -> Result<(), StoreError> {
    if head_seq == 0 {
        return Ok(());
    }
    match last_hash {
        None => Err(StoreError::Corrupt(format!(
            "evidence head names missing seq {head_seq}"
        ))),
        Some(hash) if hash != head_hash => Err(StoreError::Corrupt(format!(
            "evidence head disagrees with record {head_seq}"
        ))),
        Some(_) => Ok(()),
    }
}

/// `records` numbered and hashed after the head.
fn link(
    records: &[Prepared],
    head_seq: i64,
    head_hash: &str,
) -> Result<Vec<EvidenceRecord>, StoreError> {
    let mut stored = Vec::with_capacity(records.len());
    let (mut seq, mut prev_hash) = (head_seq, head_hash.to_owned());
    for record in records {
        seq = seq
            .checked_add(1)
            .ok_or(StoreError::OutOfRange { field: "seq" })?;
        let mut appended = EvidenceRecord {
            seq,
            prev_hash: prev_hash.clone(),
            ..record.record.clone()
        };
        appended.hash = expected_hash(&appended);
        prev_hash.clone_from(&appended.hash);
        stored.push(appended);
    }
    Ok(stored)
}

/// The batch's records, then its risk-history rows, each in one statement (a round trip per
/// record held the chain lock longer).
fn inserts<'a>(
    records: &'a [Prepared],
    stored: &'a [EvidenceRecord],
) -> Vec<(String, Vec<Param<'a>>)> {
    let mut sql = String::from(
        "INSERT INTO evidence (seq, created_at_ms, kind, gate, fingerprint, decision, \
         request_id, body, prev_hash, hash) VALUES ",
    );
    push_placeholders(&mut sql, stored.len(), 10, 1);
    let mut params = Vec::with_capacity(stored.len() * 10);
    for (record, appended) in records.iter().zip(stored) {
        params.extend([
            Param::from(appended.seq),
            record.created_at_db.into(),
            appended.kind.as_str().into(),
            appended.gate.as_deref().into(),
            appended.fingerprint.as_deref().into(),
            appended.decision.as_str().into(),
            appended.request_id.as_str().into(),
            appended.body.as_str().into(),
            appended.prev_hash.as_str().into(),
            appended.hash.as_str().into(),
        ]);
    }
    let mut statements = vec![(sql, params)];
    // A payment already in the history keeps its row.
    let rows: Vec<_> = records.iter().filter_map(|r| r.history.as_ref()).collect();
    if !rows.is_empty() {
        let mut sql = String::from(
            "INSERT INTO risk_payments (fingerprint, payer, pay_to, resource, endpoint, amount, \
             created_at_ms, asset) VALUES ",
        );
        push_placeholders(&mut sql, rows.len(), 8, 1);
        sql.push_str(" ON CONFLICT (fingerprint) DO NOTHING");
        let mut params = Vec::with_capacity(rows.len() * 8);
        for (row, at) in rows {
            params.extend([
                Param::from(row.fingerprint.as_str()),
                row.payer.as_deref().into(),
                row.pay_to.as_str().into(),
                row.resource.as_deref().into(),
                row.endpoint.as_deref().into(),
                row.amount.as_str().into(),
                (*at).into(),
                row.asset.as_str().into(),
            ]);
        }
        statements.push((sql, params));
    }
    statements
}

/// The batch's search-index rows, when the index (last seq `indexed`) reaches the head and
/// every record has them. The index is a gap-free prefix of the chain (the background indexer
/// continues from its last seq); otherwise the indexer catches up as before.
fn index_insert<'a>(
    records: &'a [Prepared],
    stored: &'a [EvidenceRecord],
    indexed: Option<i64>,
    head_seq: i64,
) -> Option<(String, Vec<Param<'a>>)> {
    if indexed.unwrap_or(0) != head_seq {
        return None;
    }
    let rows = records
        .iter()
        .zip(stored)
        .map(|(record, appended)| {
            Some(IndexRow {
                seq: appended.seq,
                created_at_ms: record.created_at_db,
                kind: &appended.kind,
                decision: &appended.decision,
                fingerprint: appended.fingerprint.as_deref(),
                fields: record.index.as_ref()?,
            })
        })
        .collect::<Option<Vec<_>>>()?;
    index_rows_insert(&rows)
}

/// Moves the head from `head_seq` to the batch's last record.
fn advance_head(
    stored: &[EvidenceRecord],
    head_seq: i64,
) -> Result<(&'static str, Vec<Param<'_>>), StoreError> {
    let last = stored
        .last()
        .ok_or_else(|| StoreError::Corrupt("an empty evidence batch".into()))?;
    Ok((
        "UPDATE evidence_head SET seq = $1, hash = $2 WHERE id = 1 AND seq = $3",
        vec![last.seq.into(), last.hash.as_str().into(), head_seq.into()],
    ))
}

fn head_advanced(rows: u64) -> Result<(), StoreError> {
    if rows != 1 {
        // Unreachable while the head is locked; refuse rather than fork the chain.
        return Err(StoreError::Corrupt(
            "evidence head moved during append".into(),
        ));
    }
    Ok(())
}
