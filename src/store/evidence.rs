//! Persistence for evidence queries, disputes and retention ([`EvidenceStore`]), on the same
//! SQL as the rest of the store (migration 0007).
//!
//! Searchable columns live in the side table `evidence_index`, filled by catching up with the
//! chain ([`EvidenceStore::index_evidence`]); the hashed `evidence` rows are never touched
//! except by [`EvidenceStore::prune_bodies`], which the database only allows below a
//! checkpoint and only to the tombstone body.

use async_trait::async_trait;
use sqlx::FromRow;

use super::sql::{EvidenceRow, SqlStore, evidence_records};
use super::sqlite_engine::{Param, bind_sqlx, bind_sqlx_as};
use super::{EvidenceRecord, StoreError};
use crate::evidence::TOMBSTONE_BODY;
use crate::evidence::query::index_fields;

/// Records read per step while catching the index up with the chain.
const INDEX_PAGE: i64 = 500;
/// Largest page any search returns.
pub const MAX_PAGE: u32 = 500;

/// The searchable columns of one evidence record.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IndexFields {
    /// The payer, normalised (EVM lower-case).
    pub payer: Option<String>,
    /// The payee (`payTo`), normalised.
    pub payee: Option<String>,
    /// `host/path` of the paid resource.
    pub endpoint: Option<String>,
    /// The settlement transaction hash or signature.
    pub tx: Option<String>,
    /// The buyer's risk session id.
    pub session: Option<String>,
}

/// Filters for [`EvidenceStore::search_evidence`] and [`EvidenceStore::search_payments`];
/// every set field must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EvidenceQuery {
    /// Payment fingerprint.
    pub fingerprint: Option<String>,
    /// Transaction hash / signature.
    pub tx: Option<String>,
    /// Payer.
    pub payer: Option<String>,
    /// Payee.
    pub payee: Option<String>,
    /// `host/path` endpoint.
    pub endpoint: Option<String>,
    /// Risk session id.
    pub session: Option<String>,
    /// Decision (`allow`, `deny`, ...).
    pub decision: Option<String>,
    /// Record kind (`verify`, `settle`, `dispute.opened`, ...).
    pub kind: Option<String>,
    /// Created at or after (ms).
    pub since_ms: Option<u64>,
    /// Created before (ms).
    pub until_ms: Option<u64>,
    /// Only payments to these payees (a seller token's view); `None`: all.
    pub visible_payees: Option<Vec<String>>,
    /// Keyset cursor: only records (or payments first seen) after this seq.
    pub after_seq: i64,
    /// Page size (1..=[`MAX_PAGE`]).
    pub limit: u32,
}

/// One payment as listed: its records summarised, with its settlement state.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct PaymentSummary {
    /// The payment.
    pub fingerprint: String,
    /// Its first record (the list's cursor).
    pub first_seq: i64,
    /// Its latest record.
    pub last_seq: i64,
    /// When first seen (ms).
    pub first_at_ms: i64,
    /// When last recorded (ms).
    pub last_at_ms: i64,
    /// How many records it has.
    pub records: i64,
    /// Payer.
    pub payer: Option<String>,
    /// Payee.
    pub payee: Option<String>,
    /// Endpoint.
    pub endpoint: Option<String>,
    /// Transaction.
    pub tx: Option<String>,
    /// Kind of the latest record.
    pub last_kind: String,
    /// Decision of the latest record.
    pub last_decision: String,
    /// Settlement journal state, if it reached the journal.
    pub settlement_state: Option<String>,
}

/// One link of the chain: enough to check continuity without the record's content.
#[derive(Debug, Clone, PartialEq, Eq, FromRow, serde::Serialize, serde::Deserialize)]
pub struct ChainLink {
    /// Position.
    pub seq: i64,
    /// The previous record's hash.
    pub prev_hash: String,
    /// This record's hash.
    pub hash: String,
}

/// A dispute on a payment.
#[derive(Debug, Clone, PartialEq, Eq, FromRow, serde::Serialize)]
pub struct Dispute {
    /// Identifier (`dsp_` + uuid).
    pub id: String,
    /// The disputed payment.
    pub fingerprint: String,
    /// Its payer, when known.
    pub payer: Option<String>,
    /// Its payee, when known.
    pub payee: Option<String>,
    /// The token name that opened it.
    pub opened_by: String,
    /// `buyer`, `seller` or `operator`: whose complaint it is.
    pub on_behalf_of: String,
    /// Why.
    pub reason: String,
    /// `open` or `resolved`.
    pub state: String,
    /// `refund_owed`, `rejected` or `settled`, once resolved.
    pub outcome: Option<String>,
    /// The resolver's note.
    pub resolution_note: Option<String>,
    /// The token name that resolved it.
    pub resolved_by: Option<String>,
    /// Opened at (ms).
    pub created_at_ms: i64,
    /// Resolved at (ms).
    pub resolved_at_ms: Option<i64>,
}

/// A statement attached to a dispute.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DisputeStatement {
    /// Identifier (`stm_` + uuid).
    pub id: String,
    /// The dispute.
    pub dispute_id: String,
    /// The token name that attached it.
    pub author: String,
    /// The text.
    pub statement: String,
    /// The evidence record that recorded it.
    pub evidence_seq: i64,
    /// When (ms).
    pub created_at_ms: i64,
    /// Attached files (metadata; content via [`EvidenceStore::dispute_file`]).
    pub files: Vec<DisputeFileMeta>,
}

/// A file attached to a statement, without its content.
#[derive(Debug, Clone, PartialEq, Eq, FromRow, serde::Serialize)]
pub struct DisputeFileMeta {
    /// File name as given.
    pub name: String,
    /// MIME type as given.
    pub mime: String,
    /// Size in bytes.
    pub size: i64,
    /// SHA-256 (hex) of the content.
    pub sha256: String,
}

/// A file to store with a statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDisputeFile {
    /// Metadata.
    pub meta: DisputeFileMeta,
    /// Content, standard base64.
    pub content_base64: String,
}

/// A signed checkpoint: the chain's hash at `seq`, signed by Gatehouse's evidence key.
#[derive(Debug, Clone, PartialEq, Eq, FromRow, serde::Serialize, serde::Deserialize)]
pub struct Checkpoint {
    /// The record the checkpoint pins.
    pub seq: i64,
    /// Its hash.
    pub hash: String,
    /// When it was made (ms).
    pub created_at_ms: i64,
    /// The signing key's id.
    pub key_id: String,
    /// The signing key (ed25519, hex).
    pub public_key: String,
    /// Signature (hex) over [`crate::evidence::signing::checkpoint_message`].
    pub signature: String,
}

/// Which records a pruning pass tombstones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PruneSelector {
    /// This kind only; `None`: every kind not in `except_kinds`.
    pub kind: Option<String>,
    /// Kinds with their own window (when `kind` is `None`).
    pub except_kinds: Vec<String>,
    /// Only records created before this (ms).
    pub before_ms: u64,
    /// Only records at or below this seq (covered by a checkpoint).
    pub up_to_seq: i64,
}

/// Evidence queries, disputes, checkpoints and pruning.
#[async_trait]
pub trait EvidenceStore: Send + Sync {
    /// Catches `evidence_index` up with the chain; returns how many records it indexed.
    async fn index_evidence(&self) -> Result<u64, StoreError>;

    /// Records matching `query`, by seq ascending (call [`Self::index_evidence`] first).
    async fn search_evidence(
        &self,
        query: &EvidenceQuery,
    ) -> Result<Vec<EvidenceRecord>, StoreError>;

    /// Payments with at least one record matching `query`, by first seq ascending.
    async fn search_payments(
        &self,
        query: &EvidenceQuery,
    ) -> Result<Vec<PaymentSummary>, StoreError>;

    /// The indexed columns of a payment (from any of its records), if it has records.
    async fn payment_fields(&self, fingerprint: &str) -> Result<Option<IndexFields>, StoreError>;

    /// One record by seq.
    async fn evidence_record(&self, seq: i64) -> Result<Option<EvidenceRecord>, StoreError>;

    /// Links `from..=to`, ascending, at most `limit`.
    async fn chain_links(
        &self,
        from: i64,
        to: i64,
        limit: i64,
    ) -> Result<Vec<ChainLink>, StoreError>;

    /// The chain head row (seq, hash).
    async fn chain_head(&self) -> Result<(i64, String), StoreError>;

    /// Stores a new dispute.
    async fn insert_dispute(&self, dispute: &Dispute) -> Result<(), StoreError>;

    /// One dispute.
    async fn dispute(&self, id: &str) -> Result<Option<Dispute>, StoreError>;

    /// Disputes, newest first, optionally only on payments to `payees` / in `state` / about
    /// `fingerprint`, before the cursor `before_created_ms` (exclusive), at most `limit`.
    async fn list_disputes(
        &self,
        payees: Option<&[String]>,
        state: Option<&str>,
        fingerprint: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Dispute>, StoreError>;

    /// Stores a statement and its files.
    async fn insert_statement(
        &self,
        statement: &DisputeStatement,
        files: &[NewDisputeFile],
    ) -> Result<(), StoreError>;

    /// A dispute's statements with file metadata, oldest first.
    async fn statements(&self, dispute_id: &str) -> Result<Vec<DisputeStatement>, StoreError>;

    /// A file's metadata and base64 content, by the dispute and the file's SHA-256.
    async fn dispute_file(
        &self,
        dispute_id: &str,
        sha256: &str,
    ) -> Result<Option<(DisputeFileMeta, String)>, StoreError>;

    /// Resolves an open dispute; false if it was not open.
    async fn resolve_dispute(
        &self,
        id: &str,
        outcome: &str,
        note: &str,
        resolved_by: &str,
        now_ms: u64,
    ) -> Result<bool, StoreError>;

    /// Disputes against `payer` resolved `refund_owed` (upheld).
    async fn upheld_dispute_count(&self, payer: &str) -> Result<u64, StoreError>;

    /// Stores a checkpoint (a second one at the same seq is ignored).
    async fn insert_checkpoint(&self, checkpoint: &Checkpoint) -> Result<(), StoreError>;

    /// The checkpoint with the highest seq.
    async fn latest_checkpoint(&self) -> Result<Option<Checkpoint>, StoreError>;

    /// The highest seq `selector` would prune (ignoring `up_to_seq`), if any.
    async fn prunable_max_seq(&self, selector: &PruneSelector) -> Result<Option<i64>, StoreError>;

    /// Replaces the bodies `selector` names with the tombstone, skipping payments with an open
    /// dispute; returns how many.
    async fn prune_bodies(&self, selector: &PruneSelector) -> Result<u64, StoreError>;
}

/// Appends the WHERE conditions of `query` on the index alias `i`; returns the args.
fn conditions<'a>(query: &'a EvidenceQuery, sql: &mut String, args: &mut Vec<Param<'a>>) {
    let mut push = |sql: &mut String, cond: &str, arg: Param<'a>| {
        args.push(arg);
        sql.push_str(&format!(" AND {cond} ${}", args.len()));
    };
    let text = [
        ("i.fingerprint =", &query.fingerprint),
        ("i.tx =", &query.tx),
        ("i.payer =", &query.payer),
        ("i.payee =", &query.payee),
        ("i.endpoint =", &query.endpoint),
        ("i.session =", &query.session),
        ("i.decision =", &query.decision),
        ("i.kind =", &query.kind),
    ];
    for (cond, value) in text {
        if let Some(value) = value {
            push(sql, cond, Param::from(value.as_str()));
        }
    }
    if let Some(since) = query.since_ms {
        push(
            sql,
            "i.created_at_ms >=",
            Param::Int(i64::try_from(since).unwrap_or(i64::MAX)),
        );
    }
    if let Some(until) = query.until_ms {
        push(
            sql,
            "i.created_at_ms <",
            Param::Int(i64::try_from(until).unwrap_or(i64::MAX)),
        );
    }
    if let Some(payees) = &query.visible_payees {
        if payees.is_empty() {
            sql.push_str(" AND 1 = 0");
        } else {
            let mut marks = Vec::new();
            for payee in payees {
                args.push(Param::from(payee.as_str()));
                marks.push(format!("${}", args.len()));
            }
            sql.push_str(&format!(" AND i.payee IN ({})", marks.join(", ")));
        }
    }
}

const EVIDENCE_COLUMNS: &str = "e.seq, e.created_at_ms, e.kind, e.gate, e.fingerprint, \
     e.decision, e.request_id, e.body, e.prev_hash, e.hash";

const DISPUTE_COLUMNS: &str = "id, fingerprint, payer, payee, opened_by, on_behalf_of, reason, \
     state, outcome, resolution_note, resolved_by, created_at_ms, resolved_at_ms";

fn page(limit: u32) -> i64 {
    i64::from(limit.clamp(1, MAX_PAGE))
}

/// One row of the evidence search index.
pub(crate) struct IndexRow<'a> {
    pub(crate) seq: i64,
    /// As the database stores it.
    pub(crate) created_at_ms: i64,
    pub(crate) kind: &'a str,
    pub(crate) decision: &'a str,
    pub(crate) fingerprint: Option<&'a str>,
    pub(crate) fields: &'a IndexFields,
}

/// Inserts `rows` into the search index in one statement (a seq already indexed keeps its
/// row); the rows inserted. Used by the catch-up.
pub(crate) async fn insert_index_rows<'c, E>(
    executor: E,
    rows: &[IndexRow<'_>],
) -> Result<u64, StoreError>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    let Some((sql, params)) = index_rows_insert(rows) else {
        return Ok(0);
    };
    // Only numbered placeholders are formatted in; every value is bound.
    let insert = bind_sqlx(sqlx::query(sqlx::AssertSqlSafe(sql)), &params);
    Ok(insert.execute(executor).await?.rows_affected())
}

/// The statement inserting `rows` into the search index (a seq already indexed keeps its
/// row); `None` for no rows. Shared by the catch-up and the evidence appenders.
pub(crate) fn index_rows_insert<'a>(rows: &[IndexRow<'a>]) -> Option<(String, Vec<Param<'a>>)> {
    if rows.is_empty() {
        return None;
    }
    let mut sql = String::from(
        "INSERT INTO evidence_index (seq, created_at_ms, kind, decision, fingerprint, payer, \
         payee, endpoint, tx, session) VALUES ",
    );
    super::sql::push_placeholders(&mut sql, rows.len(), 10, 1);
    sql.push_str(" ON CONFLICT DO NOTHING");
    let mut params = Vec::with_capacity(rows.len() * 10);
    for row in rows {
        params.extend([
            Param::from(row.seq),
            row.created_at_ms.into(),
            row.kind.into(),
            row.decision.into(),
            row.fingerprint.into(),
            row.fields.payer.as_deref().into(),
            row.fields.payee.as_deref().into(),
            row.fields.endpoint.as_deref().into(),
            row.fields.tx.as_deref().into(),
            row.fields.session.as_deref().into(),
        ]);
    }
    Some((sql, params))
}

fn to_ms(ms: u64, field: &'static str) -> Result<i64, StoreError> {
    i64::try_from(ms).map_err(|_| StoreError::OutOfRange { field })
}

/// Appends the prune selector's conditions (alias-free, on `evidence`).
fn prune_conditions<'a>(selector: &'a PruneSelector, sql: &mut String, args: &mut Vec<Param<'a>>) {
    args.push(Param::Int(
        i64::try_from(selector.before_ms).unwrap_or(i64::MAX),
    ));
    sql.push_str(&format!(" created_at_ms < ${}", args.len()));
    args.push(Param::from(TOMBSTONE_BODY));
    sql.push_str(&format!(" AND body <> ${}", args.len()));
    match &selector.kind {
        Some(kind) => {
            args.push(Param::from(kind.as_str()));
            sql.push_str(&format!(" AND kind = ${}", args.len()));
        }
        None if !selector.except_kinds.is_empty() => {
            let mut marks = Vec::new();
            for kind in &selector.except_kinds {
                args.push(Param::from(kind.as_str()));
                marks.push(format!("${}", args.len()));
            }
            sql.push_str(&format!(" AND kind NOT IN ({})", marks.join(", ")));
        }
        None => {}
    }
    // A payment under dispute keeps its evidence until the dispute is resolved.
    sql.push_str(
        " AND (fingerprint IS NULL OR fingerprint NOT IN \
         (SELECT d.fingerprint FROM disputes d WHERE d.state = 'open'))",
    );
}

/// Field-wise MAX of two partial views of one payment's parties (as `payment_fields` does).
fn merge_fields(a: Option<IndexFields>, b: Option<IndexFields>) -> Option<IndexFields> {
    match (a, b) {
        (None, other) | (other, None) => other,
        (Some(a), Some(b)) => Some(IndexFields {
            payer: a.payer.max(b.payer),
            payee: a.payee.max(b.payee),
            endpoint: a.endpoint.max(b.endpoint),
            tx: a.tx.max(b.tx),
            session: a.session.max(b.session),
        }),
    }
}

#[async_trait]
impl EvidenceStore for SqlStore {
    async fn index_evidence(&self) -> Result<u64, StoreError> {
        // One catch-up at a time in this process: a search arriving while the background
        // indexer runs waits for it and then finds little left, instead of indexing the same
        // pages again beside it.
        let _catching_up = self.indexing.lock().await;
        let mut indexed = 0u64;
        loop {
            let (last,): (Option<i64>,) = sqlx::query_as("SELECT MAX(seq) FROM evidence_index")
                .fetch_one(&self.pool)
                .await?;
            let rows: Vec<EvidenceRow> = sqlx::query_as(
                "SELECT seq, created_at_ms, kind, gate, fingerprint, decision, request_id, body, \
                 prev_hash, hash FROM evidence WHERE seq > $1 ORDER BY seq LIMIT $2",
            )
            .bind(last.unwrap_or(0))
            .bind(INDEX_PAGE)
            // The read connections: on SQLite the one writer connection stays free for
            // payments while a page of bodies is read.
            .fetch_all(&self.reads)
            .await?;
            let count = rows.len();
            // One transaction per page: committing each row alone costs a sync per record,
            // which made the first query over a large log take seconds. Records of this page
            // are not visible to `payment_fields` until the commit, so the page's own parties
            // are merged in from memory (the same MAX semantics as the query).
            let mut page: std::collections::HashMap<String, IndexFields> =
                std::collections::HashMap::new();
            let mut prepared = Vec::with_capacity(count);
            for record in evidence_records(rows)? {
                let mut fields = index_fields(&record);
                // Records without the payment (reconcile, disputes) inherit its parties.
                if let Some(fp) = &record.fingerprint
                    && (fields.payee.is_none() || fields.payer.is_none())
                {
                    let stored = self.payment_fields(fp).await?;
                    let known = merge_fields(stored, page.get(fp).cloned());
                    if let Some(known) = known {
                        fields.payer = fields.payer.or(known.payer);
                        fields.payee = fields.payee.or(known.payee);
                        fields.endpoint = fields.endpoint.or(known.endpoint);
                        fields.session = fields.session.or(known.session);
                    }
                }
                if let Some(fp) = &record.fingerprint {
                    let merged = merge_fields(page.remove(fp), Some(fields.clone()));
                    if let Some(merged) = merged {
                        page.insert(fp.clone(), merged);
                    }
                }
                prepared.push((record, fields));
            }
            if prepared.is_empty() {
                return Ok(indexed);
            }
            // The page in one statement: a round trip per row held the writer for the whole
            // page, and payments waited behind it.
            let rows = prepared
                .iter()
                .map(|(record, fields)| {
                    Ok(IndexRow {
                        seq: record.seq,
                        created_at_ms: to_ms(record.created_at_ms, "created_at_ms")?,
                        kind: &record.kind,
                        decision: &record.decision,
                        fingerprint: record.fingerprint.as_deref(),
                        fields,
                    })
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            indexed += insert_index_rows(&self.pool, &rows).await?;
            if (count as i64) < INDEX_PAGE {
                return Ok(indexed);
            }
        }
    }

    async fn search_evidence(
        &self,
        query: &EvidenceQuery,
    ) -> Result<Vec<EvidenceRecord>, StoreError> {
        let mut args = vec![Param::Int(query.after_seq)];
        let mut sql = format!(
            "SELECT {EVIDENCE_COLUMNS} FROM evidence_index i JOIN evidence e ON e.seq = i.seq \
             WHERE i.seq > $1"
        );
        conditions(query, &mut sql, &mut args);
        args.push(Param::Int(page(query.limit)));
        sql.push_str(&format!(" ORDER BY i.seq LIMIT ${}", args.len()));
        let rows: Vec<EvidenceRow> = bind_sqlx_as(sqlx::query_as(sqlx::AssertSqlSafe(sql)), &args)
            .fetch_all(&self.reads)
            .await?;
        evidence_records(rows)
    }

    async fn search_payments(
        &self,
        query: &EvidenceQuery,
    ) -> Result<Vec<PaymentSummary>, StoreError> {
        let mut args = Vec::new();
        let mut sql = String::from(
            "SELECT i.fingerprint FROM evidence_index i WHERE i.fingerprint IS NOT NULL",
        );
        conditions(query, &mut sql, &mut args);
        args.push(Param::Int(query.after_seq));
        let after = args.len();
        args.push(Param::Int(page(query.limit)));
        let limit = args.len();
        let sql = format!(
            "SELECT a.fingerprint, a.first_seq, a.last_seq, a.first_at_ms, a.last_at_ms, \
             a.records, a.payer, a.payee, a.endpoint, a.tx, l.kind AS last_kind, \
             l.decision AS last_decision, s.state AS settlement_state FROM ( \
               SELECT fingerprint, MIN(seq) AS first_seq, MAX(seq) AS last_seq, \
               MIN(created_at_ms) AS first_at_ms, MAX(created_at_ms) AS last_at_ms, \
               COUNT(*) AS records, MAX(payer) AS payer, MAX(payee) AS payee, \
               MAX(endpoint) AS endpoint, MAX(tx) AS tx FROM evidence_index \
               WHERE fingerprint IN ({sql}) GROUP BY fingerprint HAVING MIN(seq) > ${after} \
               ORDER BY MIN(seq) LIMIT ${limit} \
             ) a JOIN evidence_index l ON l.seq = a.last_seq \
             LEFT JOIN settlements s ON s.fingerprint = a.fingerprint ORDER BY a.first_seq"
        );
        let rows: Vec<PaymentSummary> =
            bind_sqlx_as(sqlx::query_as(sqlx::AssertSqlSafe(sql)), &args)
                .fetch_all(&self.reads)
                .await?;
        Ok(rows)
    }

    async fn payment_fields(&self, fingerprint: &str) -> Result<Option<IndexFields>, StoreError> {
        let row: (
            i64,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
        ) = sqlx::query_as(
            "SELECT COUNT(*), MAX(payer), MAX(payee), MAX(endpoint), MAX(tx), MAX(session) \
             FROM evidence_index WHERE fingerprint = $1",
        )
        .bind(fingerprint)
        .fetch_one(&self.pool)
        .await?;
        if row.0 == 0 {
            return Ok(None);
        }
        Ok(Some(IndexFields {
            payer: row.1,
            payee: row.2,
            endpoint: row.3,
            tx: row.4,
            session: row.5,
        }))
    }

    async fn evidence_record(&self, seq: i64) -> Result<Option<EvidenceRecord>, StoreError> {
        let row: Option<EvidenceRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {EVIDENCE_COLUMNS} FROM evidence e WHERE e.seq = $1"
        )))
        .bind(seq)
        .fetch_optional(&self.reads)
        .await?;
        row.map(EvidenceRecord::try_from).transpose()
    }

    async fn chain_links(
        &self,
        from: i64,
        to: i64,
        limit: i64,
    ) -> Result<Vec<ChainLink>, StoreError> {
        let rows: Vec<ChainLink> = sqlx::query_as(
            "SELECT seq, prev_hash, hash FROM evidence WHERE seq >= $1 AND seq <= $2 \
             ORDER BY seq LIMIT $3",
        )
        .bind(from)
        .bind(to)
        .bind(limit)
        .fetch_all(&self.reads)
        .await?;
        Ok(rows)
    }

    async fn chain_head(&self) -> Result<(i64, String), StoreError> {
        let head: (i64, String) =
            sqlx::query_as("SELECT seq, hash FROM evidence_head WHERE id = 1")
                .fetch_one(&self.pool)
                .await?;
        Ok(head)
    }

    async fn insert_dispute(&self, d: &Dispute) -> Result<(), StoreError> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO disputes ({DISPUTE_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
        )))
        .bind(d.id.as_str())
        .bind(d.fingerprint.as_str())
        .bind(d.payer.as_deref())
        .bind(d.payee.as_deref())
        .bind(d.opened_by.as_str())
        .bind(d.on_behalf_of.as_str())
        .bind(d.reason.as_str())
        .bind(d.state.as_str())
        .bind(d.outcome.as_deref())
        .bind(d.resolution_note.as_deref())
        .bind(d.resolved_by.as_deref())
        .bind(d.created_at_ms)
        .bind(d.resolved_at_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn dispute(&self, id: &str) -> Result<Option<Dispute>, StoreError> {
        let row: Option<Dispute> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {DISPUTE_COLUMNS} FROM disputes WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row)
    }

    async fn list_disputes(
        &self,
        payees: Option<&[String]>,
        state: Option<&str>,
        fingerprint: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Dispute>, StoreError> {
        let mut args = Vec::new();
        let mut sql = format!("SELECT {DISPUTE_COLUMNS} FROM disputes WHERE 1 = 1");
        if let Some(state) = state {
            args.push(Param::from(state));
            sql.push_str(&format!(" AND state = ${}", args.len()));
        }
        if let Some(fp) = fingerprint {
            args.push(Param::from(fp));
            sql.push_str(&format!(" AND fingerprint = ${}", args.len()));
        }
        if let Some(payees) = payees {
            if payees.is_empty() {
                sql.push_str(" AND 1 = 0");
            } else {
                let mut marks = Vec::new();
                for payee in payees {
                    args.push(Param::from(payee.as_str()));
                    marks.push(format!("${}", args.len()));
                }
                sql.push_str(&format!(" AND payee IN ({})", marks.join(", ")));
            }
        }
        args.push(Param::Int(page(limit)));
        sql.push_str(&format!(
            " ORDER BY created_at_ms DESC, id LIMIT ${}",
            args.len()
        ));
        let rows: Vec<Dispute> = bind_sqlx_as(sqlx::query_as(sqlx::AssertSqlSafe(sql)), &args)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows)
    }

    async fn insert_statement(
        &self,
        s: &DisputeStatement,
        files: &[NewDisputeFile],
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO dispute_statements (id, dispute_id, author, statement, evidence_seq, \
             created_at_ms) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(s.id.as_str())
        .bind(s.dispute_id.as_str())
        .bind(s.author.as_str())
        .bind(s.statement.as_str())
        .bind(s.evidence_seq)
        .bind(s.created_at_ms)
        .execute(&mut *tx)
        .await?;
        for (ordinal, file) in files.iter().enumerate() {
            sqlx::query(
                "INSERT INTO dispute_files (statement_id, ordinal, name, mime, size, sha256, \
                 content_base64) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(s.id.as_str())
            .bind(ordinal as i64)
            .bind(file.meta.name.as_str())
            .bind(file.meta.mime.as_str())
            .bind(file.meta.size)
            .bind(file.meta.sha256.as_str())
            .bind(file.content_base64.as_str())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn statements(&self, dispute_id: &str) -> Result<Vec<DisputeStatement>, StoreError> {
        let rows: Vec<(String, String, String, String, i64, i64)> = sqlx::query_as(
            "SELECT id, dispute_id, author, statement, evidence_seq, created_at_ms \
             FROM dispute_statements WHERE dispute_id = $1 ORDER BY created_at_ms, id",
        )
        .bind(dispute_id)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for (id, dispute_id, author, statement, evidence_seq, created_at_ms) in rows {
            let files: Vec<DisputeFileMeta> = sqlx::query_as(
                "SELECT name, mime, size, sha256 FROM dispute_files WHERE statement_id = $1 \
                 ORDER BY ordinal",
            )
            .bind(id.as_str())
            .fetch_all(&self.pool)
            .await?;
            out.push(DisputeStatement {
                id,
                dispute_id,
                author,
                statement,
                evidence_seq,
                created_at_ms,
                files,
            });
        }
        Ok(out)
    }

    async fn dispute_file(
        &self,
        dispute_id: &str,
        sha256: &str,
    ) -> Result<Option<(DisputeFileMeta, String)>, StoreError> {
        let row: Option<(String, String, i64, String, String)> = sqlx::query_as(
            "SELECT f.name, f.mime, f.size, f.sha256, f.content_base64 FROM dispute_files f \
             JOIN dispute_statements s ON s.id = f.statement_id \
             WHERE s.dispute_id = $1 AND f.sha256 = $2 LIMIT 1",
        )
        .bind(dispute_id)
        .bind(sha256)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(name, mime, size, sha256, content)| {
            (
                DisputeFileMeta {
                    name,
                    mime,
                    size,
                    sha256,
                },
                content,
            )
        }))
    }

    async fn resolve_dispute(
        &self,
        id: &str,
        outcome: &str,
        note: &str,
        resolved_by: &str,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE disputes SET state = 'resolved', outcome = $2, resolution_note = $3, \
             resolved_by = $4, resolved_at_ms = $5 WHERE id = $1 AND state = 'open'",
        )
        .bind(id)
        .bind(outcome)
        .bind(note)
        .bind(resolved_by)
        .bind(to_ms(now_ms, "now_ms")?)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn upheld_dispute_count(&self, payer: &str) -> Result<u64, StoreError> {
        let (n,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM disputes WHERE payer = $1 AND outcome = 'refund_owed'",
        )
        .bind(payer)
        .fetch_one(&self.reads)
        .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn insert_checkpoint(&self, c: &Checkpoint) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO evidence_checkpoints (seq, hash, created_at_ms, key_id, public_key, \
             signature) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        )
        .bind(c.seq)
        .bind(c.hash.as_str())
        .bind(c.created_at_ms)
        .bind(c.key_id.as_str())
        .bind(c.public_key.as_str())
        .bind(c.signature.as_str())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn latest_checkpoint(&self) -> Result<Option<Checkpoint>, StoreError> {
        let row: Option<Checkpoint> = sqlx::query_as(
            "SELECT seq, hash, created_at_ms, key_id, public_key, signature \
             FROM evidence_checkpoints ORDER BY seq DESC LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(row)
    }

    async fn prunable_max_seq(&self, selector: &PruneSelector) -> Result<Option<i64>, StoreError> {
        let mut args = Vec::new();
        let mut sql = String::from("SELECT MAX(seq) FROM evidence WHERE");
        prune_conditions(selector, &mut sql, &mut args);
        let (max,): (Option<i64>,) = bind_sqlx_as(sqlx::query_as(sqlx::AssertSqlSafe(sql)), &args)
            .fetch_one(&self.pool)
            .await?;
        Ok(max)
    }

    async fn prune_bodies(&self, selector: &PruneSelector) -> Result<u64, StoreError> {
        let mut args = vec![Param::from(TOMBSTONE_BODY)];
        let mut sql = String::from("UPDATE evidence SET body = $1 WHERE");
        prune_conditions(selector, &mut sql, &mut args);
        args.push(Param::Int(selector.up_to_seq));
        sql.push_str(&format!(" AND seq <= ${}", args.len()));
        let done = bind_sqlx(sqlx::query(sqlx::AssertSqlSafe(sql)), &args)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}
