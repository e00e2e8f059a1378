//! DESIGN invariant 3 (budgets hold under concurrency) at the store: reserve, re-reserve,
//! all-or-none, commit, release and expiry, and concurrent reservations from two store
//! instances of one database, on real SQLite and PostgreSQL.

#[path = "common/store.rs"]
mod store_support;

use std::sync::Arc;

use gatehouse::protocol::payment::Fingerprint;
use gatehouse::store::{
    BudgetClaim, BudgetCounter, BudgetRequest, Reserve, Store, WebhookAttempt, connect,
};
use store_support::TestDb;

const NOW: u64 = 1_000_000;

fn request(fingerprint: &str, claims: &[(&str, i64, i64)], now_ms: u64) -> BudgetRequest {
    BudgetRequest {
        fingerprint: Fingerprint(fingerprint.into()),
        counters: claims
            .iter()
            .map(|(key, cap, amount)| BudgetClaim {
                key: (*key).into(),
                cap: *cap,
                amount: *amount,
            })
            .collect(),
        expires_at_ms: now_ms + 60_000,
        now_ms,
    }
}

async fn counter(store: &dyn Store, key: &str) -> (i64, i64) {
    match store.budget_counter(key).await.unwrap() {
        Some(BudgetCounter { used, reserved, .. }) => (used, reserved),
        None => (0, 0),
    }
}

fn fp(text: &str) -> Fingerprint {
    Fingerprint(text.into())
}

/// Reserve, re-verify, all-or-none, commit, release, on one database.
async fn reserve_commit_release(db: TestDb) {
    let store = connect(&db.url).await.unwrap();
    let s = &*store;
    assert_eq!(
        s.reserve_budget(&request("a", &[("cap", 100, 60)], NOW))
            .await
            .unwrap(),
        Reserve::Reserved
    );
    assert_eq!(counter(s, "cap").await, (0, 60));
    // Re-verify of the same fingerprint does not reserve twice.
    assert_eq!(
        s.reserve_budget(&request("a", &[("cap", 100, 60)], NOW))
            .await
            .unwrap(),
        Reserve::AlreadyHeld
    );
    assert_eq!(counter(s, "cap").await, (0, 60));
    // A second payment does not fit.
    assert_eq!(
        s.reserve_budget(&request("b", &[("cap", 100, 60)], NOW))
            .await
            .unwrap(),
        Reserve::Exceeded {
            key: "cap".into(),
            used: 0,
            reserved: 60,
            cap: 100
        }
    );
    // All or none: the roomy counter ("aaa", locked first) is not charged when "cap" refuses.
    assert!(matches!(
        s.reserve_budget(&request("b", &[("cap", 100, 60), ("aaa", 1000, 60)], NOW))
            .await
            .unwrap(),
        Reserve::Exceeded { key, .. } if key == "cap"
    ));
    assert_eq!(counter(s, "aaa").await, (0, 0));

    // Commit moves reserved to used, once.
    s.commit_budget(&fp("a"), NOW).await.unwrap();
    s.commit_budget(&fp("a"), NOW).await.unwrap();
    assert_eq!(counter(s, "cap").await, (60, 0));
    assert_eq!(
        s.reserve_budget(&request("a", &[("cap", 100, 60)], NOW))
            .await
            .unwrap(),
        Reserve::AlreadyHeld
    );

    // Release gives the room back; releasing a committed hold changes nothing.
    assert_eq!(
        s.reserve_budget(&request("c", &[("cap", 100, 40)], NOW))
            .await
            .unwrap(),
        Reserve::Reserved
    );
    assert_eq!(counter(s, "cap").await, (60, 40));
    s.release_budget(&fp("c"), NOW).await.unwrap();
    s.release_budget(&fp("a"), NOW).await.unwrap();
    assert_eq!(counter(s, "cap").await, (60, 0));
    // A released payment may reserve again (a later verify of it).
    assert_eq!(
        s.reserve_budget(&request("c", &[("cap", 100, 40)], NOW))
            .await
            .unwrap(),
        Reserve::Reserved
    );
    assert_eq!(counter(s, "cap").await, (60, 40));
    // Bad claims are refused, not stored.
    assert!(
        s.reserve_budget(&request("d", &[("cap", 100, -1)], NOW))
            .await
            .is_err()
    );
}

/// An expired hold is swept by the next reservation on its counter; if that payment settles
/// anyway, the money it moved still counts.
async fn expired_holds_are_swept(db: TestDb) {
    let store = connect(&db.url).await.unwrap();
    let s = &*store;
    let mut short = request("e", &[("cap", 100, 100)], NOW);
    short.expires_at_ms = NOW + 1_000;
    assert_eq!(s.reserve_budget(&short).await.unwrap(), Reserve::Reserved);
    assert!(matches!(
        s.reserve_budget(&request("f", &[("cap", 100, 50)], NOW + 999))
            .await
            .unwrap(),
        Reserve::Exceeded { .. }
    ));
    assert_eq!(
        s.reserve_budget(&request("f", &[("cap", 100, 50)], NOW + 1_000))
            .await
            .unwrap(),
        Reserve::Reserved
    );
    assert_eq!(counter(s, "cap").await, (0, 50));
    s.commit_budget(&fp("e"), NOW + 2_000).await.unwrap();
    assert_eq!(counter(s, "cap").await, (100, 50));
}

/// 60 concurrent reservations of distinct payments, spread over two store instances of one
/// database, at a cap that admits 10: exactly 10 reserve.
async fn concurrent_reservations_respect_the_cap(db: TestDb) {
    let replicas: Vec<Arc<dyn Store>> = vec![
        connect(&db.url).await.unwrap(),
        connect(&db.url).await.unwrap(),
    ];
    let mut tasks = Vec::new();
    for i in 0..60 {
        let store = replicas[i % 2].clone();
        tasks.push(tokio::spawn(async move {
            store
                .reserve_budget(&request(
                    &format!("p{i}"),
                    &[("day", 100, 10), ("minute", 1000, 1)],
                    NOW,
                ))
                .await
                .unwrap()
        }));
    }
    let mut reserved = 0;
    for task in tasks {
        if task.await.unwrap() == Reserve::Reserved {
            reserved += 1;
        }
    }
    assert_eq!(reserved, 10);
    let s = &*replicas[0];
    assert_eq!(counter(s, "day").await, (0, 100));
    assert_eq!(counter(s, "minute").await, (0, 10));
    for i in 0..60 {
        s.commit_budget(&fp(&format!("p{i}")), NOW).await.unwrap();
    }
    assert_eq!(counter(s, "day").await, (100, 0));
}

/// Duplicate detection is one atomic upsert: a new payment inside the window is refused, the
/// same payment again and a payment after the window are recorded.
async fn recent_payments_are_noted_atomically(db: TestDb) {
    let store = connect(&db.url).await.unwrap();
    let s = &*store;
    assert!(s.note_recent("k", &fp("a"), 1_000, NOW).await.unwrap());
    assert!(s.note_recent("k", &fp("a"), 1_000, NOW + 10).await.unwrap());
    assert!(
        !s.note_recent("k", &fp("b"), 1_000, NOW + 999)
            .await
            .unwrap()
    );
    assert!(
        s.note_recent("other", &fp("b"), 1_000, NOW + 999)
            .await
            .unwrap()
    );
    assert!(
        s.note_recent("k", &fp("b"), 1_000, NOW + 1_010)
            .await
            .unwrap()
    );
    assert!(
        !s.note_recent("k", &fp("a"), 1_000, NOW + 1_011)
            .await
            .unwrap()
    );
}

/// A half-open breaker admits one trial payment per cooldown, even to concurrent callers on
/// separate store instances (replicas); a trial that never resolves frees the slot later.
async fn half_open_admits_one_trial_at_a_time(db: TestDb) {
    let a = connect(&db.url).await.unwrap();
    let b = connect(&db.url).await.unwrap();
    let opened = a.breaker_violation("payer:x", 1, NOW).await.unwrap();
    assert_eq!(opened.state, "open");
    let later = NOW + 5_000;
    let stale_before = later - 5_000;
    // Both replicas see the cooldown over at once; exactly one takes the trial slot.
    let tries: Vec<bool> = futures_util::future::join_all((0..8).map(|i| {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        async move {
            store
                .breaker_half_open("payer:x", later, stale_before)
                .await
                .unwrap()
        }
    }))
    .await;
    assert_eq!(tries.iter().filter(|t| **t).count(), 1, "{tries:?}");
    assert_eq!(
        a.breaker("payer:x").await.unwrap().unwrap().state,
        "half_open"
    );
    // Still in progress a moment later; after another cooldown the slot is free again.
    assert!(
        !a.breaker_half_open("payer:x", later + 10, later + 10 - 5_000)
            .await
            .unwrap()
    );
    assert!(
        b.breaker_half_open("payer:x", later + 5_000, later)
            .await
            .unwrap()
    );
    // The trial's success closes it.
    a.breaker_success("payer:x", later + 5_001).await.unwrap();
    assert_eq!(b.breaker("payer:x").await.unwrap().unwrap().state, "closed");
}

/// The webhook outbox drops finished rows by age: delivered deliveries and routed events after
/// one cutoff, failed deliveries after another; pending and unrouted rows always stay.
async fn finished_webhooks_are_pruned(db: TestDb) {
    let store = connect(&db.url).await.unwrap();
    let at = 1_000;
    let route = |event: &'static str, url: &'static str| {
        let store = store.clone();
        async move {
            let id = store.enqueue_webhook(event, "{}", at).await.unwrap();
            assert!(
                store
                    .route_webhook(id, &[url.to_owned()], at)
                    .await
                    .unwrap()
            );
            let rows = store.list_webhooks(100).await.unwrap();
            rows.into_iter()
                .find(|r| r.url.as_deref() == Some(url))
                .expect("a delivery row per url")
                .id
        }
    };
    let delivered = route("policy.a", "http://a.example/hook").await;
    store
        .webhook_attempted(delivered, &WebhookAttempt::Delivered { now_ms: at })
        .await
        .unwrap();
    let failed = route("policy.b", "http://b.example/hook").await;
    store
        .webhook_attempted(
            failed,
            &WebhookAttempt::Failed {
                error: "refused".into(),
            },
        )
        .await
        .unwrap();
    let pending = route("policy.c", "http://c.example/hook").await;
    let unrouted = store.enqueue_webhook("policy.d", "{}", at).await.unwrap();
    let ids = |rows: Vec<gatehouse::store::WebhookRow>| {
        let mut ids: Vec<i64> = rows.into_iter().map(|r| r.id).collect();
        ids.sort_unstable();
        ids
    };

    // Delivered and routed rows are past their cutoff; the failed one is not yet.
    assert_eq!(store.prune_webhooks(at + 1, at - 1).await.unwrap(), 4);
    let mut kept = vec![failed, pending, unrouted];
    kept.sort_unstable();
    assert_eq!(ids(store.list_webhooks(100).await.unwrap()), kept);
    assert_eq!(store.prune_webhooks(at + 1, at + 1).await.unwrap(), 1);
    let mut kept = vec![pending, unrouted];
    kept.sort_unstable();
    assert_eq!(ids(store.list_webhooks(100).await.unwrap()), kept);
}

on_both_backends!(
    finished_webhooks_are_pruned,
    half_open_admits_one_trial_at_a_time,
    recent_payments_are_noted_atomically,
    reserve_commit_release,
    expired_holds_are_swept,
    concurrent_reservations_respect_the_cap,
);
