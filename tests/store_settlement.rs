//! DESIGN invariant 2 (exactly-once settlement), proved on real SQLite and PostgreSQL: every
//! `begin_settlement` branch, failed re-claims, and 50 concurrent claims across two store
//! instances ("replicas") of one database yielding exactly one `Acquired`.

#[path = "common/store.rs"]
mod store_support;

use std::sync::Arc;

use gatehouse::protocol::payment::Fingerprint;
use gatehouse::store::{
    Begin, SettlementClaim, SettlementOutcome, SettlementState, Store, StoreError, connect,
};
use store_support::TestDb;

fn claim(fingerprint: &str, identifier: Option<&str>, digest: &str) -> SettlementClaim {
    SettlementClaim {
        fingerprint: Fingerprint(fingerprint.into()),
        payment_identifier: identifier.map(str::to_owned),
        request_digest: digest.into(),
        network: "eip155:84532".into(),
        payer: Some("0xpayer".into()),
        now_ms: 1_000,
    }
}

fn outcome(state: SettlementState, tx: Option<&str>, now_ms: u64) -> SettlementOutcome {
    SettlementOutcome {
        state,
        transaction: tx.map(str::to_owned),
        response_json: format!(r#"{{"success":true,"state":"{state}"}}"#),
        now_ms,
    }
}

fn fp(text: &str) -> Fingerprint {
    Fingerprint(text.into())
}

/// Every branch of `begin_settlement`, one after another on one database.
async fn begin_branches(db: TestDb) {
    let store = connect(&db.url).await.expect("connect");
    store.ping().await.expect("ping");

    // No row: acquired, journal says in flight.
    let first = claim("fp-a", Some("pid-a"), "digest-a");
    assert_eq!(
        store.begin_settlement(&first).await.expect("begin"),
        Begin::Acquired
    );
    let row = store
        .settlement(&fp("fp-a"))
        .await
        .expect("read")
        .expect("row");
    assert_eq!(row.state, SettlementState::InFlight);
    assert_eq!(row.payment_identifier.as_deref(), Some("pid-a"));
    assert_eq!(row.created_at_ms, 1_000);

    // Same identifier and payload while in flight: InFlight, not a second forward.
    match store.begin_settlement(&first).await.expect("begin") {
        Begin::InFlight(record) => assert_eq!(record.request_digest, "digest-a"),
        other => panic!("expected InFlight, got {other:?}"),
    }
    // Same identifier, different payload: conflict.
    assert_eq!(
        store
            .begin_settlement(&claim("fp-a", Some("pid-a"), "digest-b"))
            .await
            .expect("begin"),
        Begin::IdentifierConflict
    );
    // Same fingerprint, no identifier: duplicate.
    assert!(matches!(
        store
            .begin_settlement(&claim("fp-a", None, "digest-a"))
            .await
            .expect("begin"),
        Begin::Duplicate(_)
    ));
    // Same fingerprint, another identifier: duplicate.
    assert!(matches!(
        store
            .begin_settlement(&claim("fp-a", Some("pid-other"), "digest-a"))
            .await
            .expect("begin"),
        Begin::Duplicate(_)
    ));
    // The identifier already names fp-a: a different payment cannot reuse it.
    assert_eq!(
        store
            .begin_settlement(&claim("fp-b", Some("pid-a"), "digest-a"))
            .await
            .expect("begin"),
        Begin::IdentifierConflict
    );
    assert!(store.settlement(&fp("fp-b")).await.expect("read").is_none());

    // Finish as settled: the same identifier and payload now replays the recorded response.
    store
        .finish_settlement(
            &fp("fp-a"),
            &outcome(SettlementState::Settled, Some("0xtx"), 2_000),
        )
        .await
        .expect("finish");
    match store.begin_settlement(&first).await.expect("begin") {
        Begin::Replay(record) => {
            assert_eq!(record.state, SettlementState::Settled);
            assert_eq!(record.transaction.as_deref(), Some("0xtx"));
            assert_eq!(
                record.response_json.as_deref(),
                Some(r#"{"success":true,"state":"settled"}"#)
            );
            assert_eq!(record.updated_at_ms, 2_000);
        }
        other => panic!("expected Replay, got {other:?}"),
    }
    assert!(matches!(
        store.begin_settlement(&claim("fp-a", None, "digest-a")).await.expect("begin"),
        Begin::Duplicate(record) if record.state == SettlementState::Settled
    ));

    // A settled payment cannot be finished again; unknown fingerprints are not found.
    assert!(matches!(
        store
            .finish_settlement(&fp("fp-a"), &outcome(SettlementState::Failed, None, 3_000))
            .await,
        Err(StoreError::InvalidTransition {
            from: SettlementState::Settled,
            to: SettlementState::Failed
        })
    ));
    assert!(matches!(
        store
            .finish_settlement(
                &fp("fp-none"),
                &outcome(SettlementState::Settled, None, 3_000)
            )
            .await,
        Err(StoreError::NotFound)
    ));
    // Finishing "in flight" is never a valid outcome.
    assert_eq!(
        store
            .begin_settlement(&claim("fp-c", None, "digest-c"))
            .await
            .expect("begin"),
        Begin::Acquired
    );
    assert!(matches!(
        store
            .finish_settlement(
                &fp("fp-c"),
                &outcome(SettlementState::InFlight, None, 3_000)
            )
            .await,
        Err(StoreError::InvalidTransition {
            from: SettlementState::InFlight,
            ..
        })
    ));
    // Timestamps beyond i64 are refused, not wrapped.
    let mut far = claim("fp-far", None, "d");
    far.now_ms = u64::MAX;
    assert!(matches!(
        store.begin_settlement(&far).await,
        Err(StoreError::OutOfRange { field: "now_ms" })
    ));
}

/// Pending (unknown outcome) keeps the tx hash, is listed for reconciliation, blocks
/// duplicates, replays to the same identifier, and can be finished by the reconciler.
async fn pending_is_reconciled(db: TestDb) {
    let store = connect(&db.url).await.expect("connect");
    for (name, now) in [("fp-p2", 20), ("fp-p1", 10), ("fp-s", 5)] {
        let c = SettlementClaim {
            now_ms: now,
            ..claim(name, Some(name), "d")
        };
        assert_eq!(
            store.begin_settlement(&c).await.expect("begin"),
            Begin::Acquired
        );
    }
    store
        .finish_settlement(
            &fp("fp-p2"),
            &outcome(SettlementState::Pending, Some("0xp2"), 200),
        )
        .await
        .expect("finish");
    store
        .finish_settlement(
            &fp("fp-p1"),
            &outcome(SettlementState::Pending, Some("0xp1"), 100),
        )
        .await
        .expect("finish");
    store
        .finish_settlement(&fp("fp-s"), &outcome(SettlementState::Settled, None, 50))
        .await
        .expect("finish");

    let pending = store.pending_settlements(10).await.expect("pending");
    let names: Vec<&str> = pending.iter().map(|r| r.fingerprint.0.as_str()).collect();
    assert_eq!(
        names,
        ["fp-p1", "fp-p2"],
        "oldest update first, settled excluded"
    );
    assert_eq!(
        store.pending_settlements(1).await.expect("pending").len(),
        1
    );

    assert!(matches!(
        store.begin_settlement(&claim("fp-p1", None, "d")).await.expect("begin"),
        Begin::Duplicate(r) if r.state == SettlementState::Pending
    ));
    assert!(matches!(
        store.begin_settlement(&claim("fp-p1", Some("fp-p1"), "d")).await.expect("begin"),
        Begin::Replay(r) if r.state == SettlementState::Pending
    ));

    // The reconciler learns it settled; a None tx keeps the hash recorded at timeout.
    store
        .finish_settlement(&fp("fp-p1"), &outcome(SettlementState::Settled, None, 300))
        .await
        .expect("reconcile");
    let row = store
        .settlement(&fp("fp-p1"))
        .await
        .expect("read")
        .expect("row");
    assert_eq!(row.state, SettlementState::Settled);
    assert_eq!(row.transaction.as_deref(), Some("0xp1"));
    let names: Vec<String> = store
        .pending_settlements(10)
        .await
        .expect("pending")
        .into_iter()
        .map(|r| r.fingerprint.0)
        .collect();
    assert_eq!(names, ["fp-p2"]);
}

/// A definitive failure releases the fingerprint: the next claim re-acquires it (once), and
/// a re-claim cannot steal an identifier bound to another payment.
async fn failed_is_reclaimed(db: TestDb) {
    let store = connect(&db.url).await.expect("connect");
    assert_eq!(
        store
            .begin_settlement(&claim("fp-f", Some("pid-1"), "d1"))
            .await
            .expect("begin"),
        Begin::Acquired
    );
    store
        .finish_settlement(&fp("fp-f"), &outcome(SettlementState::Failed, None, 2_000))
        .await
        .expect("finish");
    // Same identifier + payload after failure: the recorded failure is replayed.
    assert!(matches!(
        store.begin_settlement(&claim("fp-f", Some("pid-1"), "d1")).await.expect("begin"),
        Begin::Replay(r) if r.state == SettlementState::Failed
    ));
    // A different identifier already bound elsewhere cannot be moved onto fp-f.
    assert_eq!(
        store
            .begin_settlement(&claim("fp-other", Some("pid-2"), "d"))
            .await
            .expect("begin"),
        Begin::Acquired
    );
    assert_eq!(
        store
            .begin_settlement(&claim("fp-f", Some("pid-2"), "d2"))
            .await
            .expect("begin"),
        Begin::IdentifierConflict
    );
    // A fresh attempt (new identifier) re-claims it; the row is in flight again.
    let retry = SettlementClaim {
        now_ms: 3_000,
        ..claim("fp-f", Some("pid-3"), "d3")
    };
    assert_eq!(
        store.begin_settlement(&retry).await.expect("begin"),
        Begin::Acquired
    );
    let row = store
        .settlement(&fp("fp-f"))
        .await
        .expect("read")
        .expect("row");
    assert_eq!(row.state, SettlementState::InFlight);
    assert_eq!(row.payment_identifier.as_deref(), Some("pid-3"));
    assert_eq!(row.response_json, None);
    assert_eq!((row.created_at_ms, row.updated_at_ms), (1_000, 3_000));
    assert!(matches!(
        store.begin_settlement(&retry).await.expect("begin"),
        Begin::InFlight(_)
    ));
    assert!(matches!(
        store
            .begin_settlement(&claim("fp-f", None, "d3"))
            .await
            .expect("begin"),
        Begin::Duplicate(_)
    ));
}

/// Counts outcomes of 50 concurrent claims of one fingerprint, alternating between stores.
async fn race(stores: &[Arc<dyn Store>], claim: &SettlementClaim) -> (usize, usize) {
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let store = Arc::clone(&stores[i % stores.len()]);
            let claim = claim.clone();
            tokio::spawn(async move { store.begin_settlement(&claim).await })
        })
        .collect();
    let (mut acquired, mut refused) = (0, 0);
    for task in tasks {
        match task.await.expect("task").expect("begin") {
            Begin::Acquired => acquired += 1,
            Begin::Duplicate(_) => refused += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    (acquired, refused)
}

/// 50 concurrent claims of one fingerprint over two store instances (two pools, as two
/// replicas would have): exactly one Acquired. Then the same race over a failed row.
async fn concurrent_claims_acquire_once(db: TestDb) {
    let stores = [
        connect(&db.url).await.expect("connect 1"),
        connect(&db.url).await.expect("connect 2"),
    ];
    let fresh = claim("fp-race", None, "d");
    assert_eq!(race(&stores, &fresh).await, (1, 49));

    stores[0]
        .finish_settlement(
            &fp("fp-race"),
            &outcome(SettlementState::Failed, None, 2_000),
        )
        .await
        .expect("finish");
    assert_eq!(
        race(&stores, &fresh).await,
        (1, 49),
        "failed row re-claimed exactly once"
    );
    assert_eq!(
        stores[1]
            .settlement(&fp("fp-race"))
            .await
            .expect("read")
            .map(|r| r.state),
        Some(SettlementState::InFlight)
    );
}

/// Migrations are idempotent: connecting again (and migrating again) changes nothing.
async fn migrations_are_idempotent(db: TestDb) {
    let first = connect(&db.url).await.expect("connect 1");
    assert_eq!(
        first
            .begin_settlement(&claim("fp-m", None, "d"))
            .await
            .expect("b"),
        Begin::Acquired
    );
    let second = connect(&db.url).await.expect("connect 2");
    second.migrate().await.expect("migrate again");
    assert!(
        second
            .settlement(&fp("fp-m"))
            .await
            .expect("read")
            .is_some()
    );
    assert_eq!(
        db.execute("DELETE FROM settlements WHERE fingerprint = 'none'")
            .await,
        0
    );
}

on_both_backends!(
    begin_branches,
    pending_is_reconciled,
    failed_is_reclaimed,
    concurrent_claims_acquire_once,
    migrations_are_idempotent,
);

/// The embedded default works with no file at all: every pooled query sees one in-memory
/// database (a second connection would see an empty one), including under concurrency.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn in_memory_sqlite_is_one_database() {
    for url in ["sqlite::memory:", "sqlite://:memory:"] {
        let store = connect(url).await.expect("connect");
        assert_eq!(store.backend(), gatehouse::store::Backend::Sqlite);
        assert_eq!(
            race(&[Arc::clone(&store)], &claim("fp-mem", None, "d")).await,
            (1, 49)
        );
        assert!(
            store
                .settlement(&fp("fp-mem"))
                .await
                .expect("read")
                .is_some()
        );
    }
}

/// Unknown schemes are refused without echoing credentials.
#[tokio::test]
async fn unsupported_url_is_refused() {
    let error = connect("mysql://user:secret@host/db")
        .await
        .expect_err("refused");
    assert!(matches!(&error, StoreError::UnsupportedUrl { scheme } if scheme == "mysql"));
    assert!(!error.to_string().contains("secret"));
    assert_eq!(
        error.public_message(),
        "an internal database error occurred"
    );
}

/// Relative file URLs (`sqlite://gatehouse.db`, `sqlite:gatehouse.db`) create the file, in WAL.
#[tokio::test]
async fn relative_sqlite_file_is_created_in_wal_mode() {
    let dir = tempfile::Builder::new()
        .prefix(".gh-store-test")
        .tempdir_in(".")
        .expect("temp dir in the package root");
    let name = dir
        .path()
        .file_name()
        .and_then(|n| n.to_str())
        .expect("utf-8 name");
    for (url, file) in [
        (format!("sqlite://{name}/a.db"), "a.db"),
        (format!("sqlite:{name}/b.db"), "b.db"),
    ] {
        let store = connect(&url).await.expect("connect");
        assert_eq!(
            store
                .begin_settlement(&claim("fp", None, "d"))
                .await
                .expect("b"),
            Begin::Acquired
        );
        assert!(dir.path().join(file).exists(), "{url} created {file}");
        assert!(
            dir.path().join(format!("{file}-wal")).exists(),
            "{url} is in WAL mode"
        );
    }
}

/// Fail closed (invariant 1): an unreachable database is reported as unavailable, within the
/// pool's acquire timeout, rather than hanging.
#[tokio::test]
async fn unreachable_postgres_is_unavailable() {
    let error = connect("postgres://postgres@127.0.0.1:1/nothing")
        .await
        .expect_err("down");
    assert!(error.is_unavailable(), "{error:?}");
    assert_eq!(error.public_message(), "the database is unavailable");
}
