//! DESIGN invariant 4 (every decision leaves append-only, hash-chained evidence), proved on real
//! SQLite and PostgreSQL: 200 concurrent appends from two store instances stay one linear chain
//! that verifies; the database refuses edits, and an edit or deletion made after dropping that
//! guard is detected and names the record.

#[path = "common/store.rs"]
mod store_support;

use std::sync::Arc;

use gatehouse::evidence::{
    BreakReason, GENESIS_HASH, VerifyError, verify_chain, verify_store, verify_store_paged,
};
use gatehouse::protocol::payment::Fingerprint;
use gatehouse::store::evidence::EvidenceQuery;
use gatehouse::store::{EvidenceDraft, Store, connect};
use serde_json::json;
use store_support::TestDb;

fn draft(i: u64) -> EvidenceDraft {
    EvidenceDraft {
        kind: "verify".into(),
        gate: Some("verify".into()),
        fingerprint: Some(Fingerprint(format!("fp-{}", i % 3))),
        decision: if i.is_multiple_of(2) { "allow" } else { "deny" }.into(),
        request_id: format!("req-{i}"),
        created_at_ms: 1_000 + i,
        // Keys deliberately out of order: the store keeps the canonical (sorted) text.
        body: json!({"z": i, "a": {"y": [1, 2], "b": "é\"quote"}}),
    }
}

/// Appends keep `seq` contiguous from 1, link `prev_hash`, store canonical JSON, and can be
/// read back by range and by fingerprint.
async fn append_and_read(db: TestDb) {
    let store = connect(&db.url).await.expect("connect");
    assert_eq!(
        verify_store(store.as_ref()).await.expect("empty").head,
        GENESIS_HASH
    );

    let mut appended = Vec::new();
    for i in 0..7 {
        appended.push(store.append_evidence(draft(i)).await.expect("append"));
    }
    assert_eq!(appended[0].seq, 1);
    assert_eq!(appended[0].prev_hash, GENESIS_HASH);
    assert_eq!(appended[1].prev_hash, appended[0].hash);
    assert_eq!(
        appended[0].body,
        r#"{"a":{"b":"é\"quote","y":[1,2]},"z":0}"#
    );
    assert_eq!(appended[0].fingerprint.as_deref(), Some("fp-0"));

    let all = store.evidence_after(0, 100).await.expect("read");
    assert_eq!(all, appended, "read back exactly what was appended");
    let tail = store.evidence_after(5, 100).await.expect("read");
    assert_eq!(tail.iter().map(|r| r.seq).collect::<Vec<_>>(), [6, 7]);
    assert_eq!(store.evidence_after(0, 2).await.expect("read").len(), 2);
    assert_eq!(
        verify_chain(&tail, &appended[4].hash).as_deref(),
        Ok(appended[6].hash.as_str())
    );

    let for_fp1 = store
        .evidence_for(&Fingerprint("fp-1".into()))
        .await
        .expect("read");
    assert_eq!(for_fp1.iter().map(|r| r.seq).collect::<Vec<_>>(), [2, 5]);

    let report = verify_store(store.as_ref()).await.expect("verify");
    assert_eq!(report.records, 7);
    assert_eq!(report.head, appended[6].hash);
}

/// 200 concurrent appends split across two store instances (two pools on one database, as two
/// replicas): one gap-free chain of 200 that verifies end to end, across several read pages.
async fn concurrent_appends_stay_linear(db: TestDb) {
    let stores: [Arc<dyn Store>; 2] = [
        connect(&db.url).await.expect("connect 1"),
        connect(&db.url).await.expect("connect 2"),
    ];
    let tasks: Vec<_> = (0..200u64)
        .map(|i| {
            let store = Arc::clone(&stores[(i % 2) as usize]);
            tokio::spawn(async move { store.append_evidence(draft(i)).await })
        })
        .collect();
    let mut seqs = Vec::new();
    for task in tasks {
        seqs.push(task.await.expect("task").expect("append").seq);
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=200).collect::<Vec<i64>>());

    let report = verify_store_paged(stores[1].as_ref(), 64)
        .await
        .expect("chain verifies");
    assert_eq!(report.records, 200);
    assert_eq!(
        verify_store(stores[0].as_ref())
            .await
            .expect("one page")
            .head,
        report.head
    );
    let last = stores[0].evidence_after(199, 1).await.expect("read");
    assert_eq!(
        last.first().map(|r| r.hash.as_str()),
        Some(report.head.as_str())
    );
}

/// Editing one stored body (direct SQL, as an attacker with DB access would) is detected at
/// exactly that record.
async fn tampered_body_is_detected(db: TestDb) {
    let store = connect(&db.url).await.expect("connect");
    for i in 0..10 {
        store.append_evidence(draft(i)).await.expect("append");
    }
    assert!(verify_store(store.as_ref()).await.is_ok());
    // The database itself refuses edits and deletions...
    let refused = db
        .try_execute("UPDATE evidence SET body = '{}' WHERE seq = 6")
        .await;
    assert!(refused.is_err(), "update must be refused: {refused:?}");
    let refused = db.try_execute("DELETE FROM evidence WHERE seq = 6").await;
    assert!(refused.is_err(), "delete must be refused: {refused:?}");
    // ...and once the guards are gone, the chain still names the edited record.
    db.drop_evidence_guards().await;
    let edited = db
        .execute(r#"UPDATE evidence SET body = '{"a":{},"z":"forged"}' WHERE seq = 6"#)
        .await;
    assert_eq!(edited, 1);
    match verify_store(store.as_ref()).await {
        Err(VerifyError::Break(chain_break)) => {
            assert_eq!(chain_break.seq, 6);
            assert_eq!(chain_break.reason, BreakReason::HashMismatch);
        }
        other => panic!("tampering not detected: {other:?}"),
    }
}

/// Deleting a record from the middle of the chain is detected at the record after it.
async fn deleted_row_is_detected(db: TestDb) {
    let store = connect(&db.url).await.expect("connect");
    for i in 0..10 {
        store.append_evidence(draft(i)).await.expect("append");
    }
    db.drop_evidence_guards().await;
    assert_eq!(db.execute("DELETE FROM evidence WHERE seq = 4").await, 1);
    // Page size 3 puts the gap on a page boundary: pages must link to each other too.
    match verify_store_paged(store.as_ref(), 3).await {
        Err(VerifyError::Break(chain_break)) => {
            assert_eq!(chain_break.seq, 5);
            assert_eq!(chain_break.reason, BreakReason::SeqGap { expected: 4 });
        }
        other => panic!("deletion not detected: {other:?}"),
    }
}

/// Deleting the newest record leaves the head row pointing at nothing: the next append
/// refuses (fails closed) instead of forking the chain.
async fn truncated_tail_refuses_append(db: TestDb) {
    let store = connect(&db.url).await.expect("connect");
    for i in 0..3 {
        store.append_evidence(draft(i)).await.expect("append");
    }
    db.drop_evidence_guards().await;
    assert_eq!(db.execute("DELETE FROM evidence WHERE seq = 3").await, 1);
    let refused = store.append_evidence(draft(3)).await;
    assert!(
        refused.is_err(),
        "append after truncation must fail: {refused:?}"
    );
    assert_eq!(store.evidence_after(0, 10).await.expect("read").len(), 2);
}

/// A record that names its payment's parties (as every verify and settle record does).
fn with_parties(i: u64) -> EvidenceDraft {
    let mut draft = draft(i);
    draft.body = json!({"payment": {
        "payer": "0xAbAbAbAbAbAbAbAbAbAbAbAbAbAbAbAbAbAbAbAb",
        "pay_to": "0xCdCdCdCdCdCdCdCdCdCdCdCdCdCdCdCdCdCdCdCd",
        "resource": "https://api.example/report",
    }});
    draft
}

/// The appender indexes each batch in the batch's own transaction while the search index
/// reaches the chain head and every record names its parties. A record that must inherit
/// them is left to the catch-up, and so is everything after it until the catch-up has run:
/// the index stays a gap-free prefix of the chain, which is what the catch-up relies on.
async fn appends_index_themselves_while_the_index_is_complete(db: TestDb) {
    let store = connect(&db.url).await.expect("connect");
    // Rows in the index (an update that changes nothing reports the rows it matched).
    let indexed = async || db.execute("UPDATE evidence_index SET kind = kind").await;
    for i in 0..3 {
        store
            .append_evidence(with_parties(i))
            .await
            .expect("append");
    }
    assert_eq!(indexed().await, 3, "indexed as appended, no catch-up run");

    // fp-0's record without parties inherits them from fp-0's earlier record.
    store.append_evidence(draft(3)).await.expect("append");
    store
        .append_evidence(with_parties(4))
        .await
        .expect("append");
    assert_eq!(
        indexed().await,
        3,
        "left to the catch-up, and the index stays a prefix"
    );
    assert_eq!(store.index_evidence().await.expect("catch up"), 2);
    let by_payer = store
        .search_evidence(&EvidenceQuery {
            payer: Some("0xabababababababababababababababababababab".into()),
            limit: 50,
            ..EvidenceQuery::default()
        })
        .await
        .expect("search");
    assert_eq!(
        by_payer.iter().map(|r| r.seq).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5],
        "the record without parties is found by the payer it inherited"
    );

    store
        .append_evidence(with_parties(5))
        .await
        .expect("append");
    assert_eq!(indexed().await, 6, "inline indexing resumes once caught up");
    assert_eq!(store.index_evidence().await.expect("catch up"), 0);
}

on_both_backends!(
    appends_index_themselves_while_the_index_is_complete,
    append_and_read,
    concurrent_appends_stay_linear,
    tampered_body_is_detected,
    deleted_row_is_detected,
    truncated_tail_refuses_append,
);

/// SQLite: commits land in the write-ahead log, and `Store::checkpoint` (which the server runs
/// in the background, off the writer's path) copies them into the database file. Below the
/// writer's own autocheckpoint threshold nothing else would.
#[tokio::test]
async fn sqlite_checkpoint_copies_the_log_into_the_database_file() {
    let db = TestDb::sqlite();
    let store = connect(&db.url).await.expect("connect");
    let path = std::path::PathBuf::from(db.url.trim_start_matches("sqlite://"));
    let size = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let filler = "x".repeat(2_000);
    for i in 0..300 {
        let mut record = draft(i);
        record.body = json!({"i": i, "filler": filler});
        store.append_evidence(record).await.expect("append");
    }
    let before = size(&path);
    let wal = size(&path.with_extension("db-wal"));
    assert!(
        wal > 600_000,
        "300 records of 2 kB are in the log before the checkpoint ({wal} bytes)"
    );
    store.checkpoint().await.expect("checkpoint");
    let after = size(&path);
    assert!(
        after >= before + 600_000,
        "the checkpoint copied the log into the file: {before} -> {after} bytes"
    );
    let report = verify_store(store.as_ref()).await.expect("verify");
    assert_eq!(report.records, 300);
}
