//! Risk-session budgets and amount sanity at the policy/store level, on real SQLite and
//! PostgreSQL: a session's cap joins the same all-or-none reservation as the other caps
//! (DESIGN invariant 3), concurrently too; committed payments stay counted; amounts far
//! outside an endpoint's learned range, or in an asset of unknown decimals, are refused.

mod common;

use common::store as store_support;

use std::sync::Arc;

use bytes::Bytes;
use common::TestDb;
use common::{ASSET, v2_body};
use gatehouse::policy::{AmountSanity, Atomic, Hold, Policy, PolicyConfig, Rule, SessionBudget};
use gatehouse::protocol::{FacilitatorRequest, Payment, normalise};
use gatehouse::store::{Store, connect};
use gatehouse::verdict::Outcome;
use serde_json::{Value, json};

const NOW: u64 = 1_795_820_400_000;

fn payment_of(body: &Value) -> Payment {
    let request = FacilitatorRequest::decode(Bytes::from(body.to_string())).unwrap();
    normalise(&request).unwrap()
}

fn payment() -> Payment {
    payment_of(&v2_body(&common::nonce()))
}

fn paying(amount: &str) -> Payment {
    let mut body = v2_body(&common::nonce());
    body["paymentRequirements"]["amount"] = json!(amount);
    body["paymentPayload"]["accepted"]["amount"] = json!(amount);
    body["paymentPayload"]["payload"]["authorization"]["value"] = json!(amount);
    payment_of(&body)
}

fn session(cap: i64) -> SessionBudget {
    SessionBudget {
        session_id: "sess-1".into(),
        cap: Atomic(cap),
    }
}

async fn reason(
    policy: &Policy,
    store: &dyn Store,
    p: &Payment,
    s: Option<&SessionBudget>,
) -> String {
    let decision = policy.check(store, p, s, "req", NOW).await.unwrap();
    match decision.verdict.outcome {
        Outcome::Deny => decision.verdict.reasons[0].code.code().to_owned(),
        _ => "allow".into(),
    }
}

/// A session cap of 3 payments: the 4th is refused even with no other policy configured; a
/// committed payment stays counted, a released one frees its share; the counter is keyed
/// `session:<id>|<asset>`; a payment outside the session is not limited by it.
async fn session_budget_joins_the_reservation(db: TestDb) {
    let store = connect(&db.url).await.unwrap();
    let s = &*store;
    let policy = Policy::default();
    let budget = session(30_000);
    let mut held = Vec::new();
    for _ in 0..3 {
        let p = payment();
        let decision = policy
            .check(s, &p, Some(&budget), "req", NOW)
            .await
            .unwrap();
        assert_eq!(decision.verdict.outcome, Outcome::Allow, "{decision:?}");
        assert_eq!(decision.hold, Hold::Fresh);
        held.push(p);
    }
    let fourth = payment();
    assert_eq!(
        reason(&policy, s, &fourth, Some(&budget)).await,
        "policy_cap_exceeded"
    );
    assert_eq!(reason(&policy, s, &fourth, None).await, "allow");
    let key = budget.counter_key(ASSET);
    assert_eq!(key, format!("session:sess-1|{ASSET}"));
    store
        .commit_budget(&held[0].fingerprint, NOW)
        .await
        .unwrap();
    store
        .release_budget(&held[1].fingerprint, NOW)
        .await
        .unwrap();
    let counter = store.budget_counter(&key).await.unwrap().unwrap();
    assert_eq!((counter.used, counter.reserved), (10_000, 10_000));
    assert_eq!(reason(&policy, s, &fourth, Some(&budget)).await, "allow");
    assert_eq!(
        reason(&policy, s, &payment(), Some(&budget)).await,
        "policy_cap_exceeded"
    );
}

/// 40 concurrent payments from two store instances against a session cap admitting 5, with
/// a global daily cap that would admit more: exactly 5 are held, and a refusal by the
/// session cap leaves nothing on the global counter (all or none).
async fn session_budget_holds_under_concurrency(db: TestDb) {
    let stores: Vec<Arc<dyn Store>> = vec![
        connect(&db.url).await.unwrap(),
        connect(&db.url).await.unwrap(),
    ];
    let policy = Arc::new(Policy::new(PolicyConfig {
        global: Rule {
            daily_cap: Some(Atomic(1_000_000)),
            ..Rule::default()
        },
        ..PolicyConfig::default()
    }));
    let mut tasks = Vec::new();
    for i in 0..40 {
        let store = stores[i % 2].clone();
        let policy = policy.clone();
        tasks.push(tokio::spawn(async move {
            let p = payment();
            let decision = policy
                .check(&*store, &p, Some(&session(50_000)), "req", NOW)
                .await
                .unwrap();
            decision.verdict.outcome == Outcome::Allow
        }));
    }
    let mut allowed = 0;
    for task in tasks {
        allowed += usize::from(task.await.unwrap());
    }
    assert_eq!(allowed, 5);
    let day = NOW / 86_400_000;
    let global = stores[0]
        .budget_counter(&format!("global|{ASSET}|day|{day}"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((global.used, global.reserved), (0, 50_000));
}

/// Amount sanity: unknown decimals refused when required (a configured entry makes them
/// known); after `min_samples` approvals the learned range × / ÷ the factor bounds amounts,
/// boundaries included.
async fn amounts_outside_the_usual_range_are_refused(db: TestDb) {
    let store = connect(&db.url).await.unwrap();
    let s = &*store;
    let unknown_asset = "0x00000000000000000000000000000000000000aa";
    let mut body = v2_body(&common::nonce());
    body["paymentRequirements"]["asset"] = json!(unknown_asset);
    body["paymentPayload"]["accepted"]["asset"] = json!(unknown_asset);
    let odd = payment_of(&body);
    let mut config = PolicyConfig {
        amounts: AmountSanity {
            require_known_decimals: true,
            range_factor: 10,
            min_samples: 3,
            ..AmountSanity::default()
        },
        ..PolicyConfig::default()
    };
    config.discovery.enabled = false;
    let policy = Policy::new(config.clone());
    assert_eq!(
        reason(&policy, s, &odd, None).await,
        "policy_unknown_decimals"
    );
    // Base Sepolia USDC is in the built-in table.
    assert_eq!(policy.decimals(&payment()), Some(6));
    config
        .amounts
        .decimals
        .insert(unknown_asset.to_uppercase().replace("0X", "0x"), 18);
    let policy = Policy::new(config);
    assert_eq!(policy.decimals(&odd), Some(18));
    assert_eq!(reason(&policy, s, &odd, None).await, "allow");

    // Two approvals (10000, 20000): the range is not enforced yet, so 1000000 passes too.
    for amount in ["10000", "20000", "1000000"] {
        assert_eq!(
            reason(&policy, s, &paying(amount), None).await,
            "allow",
            "{amount}"
        );
    }
    // Learned 10000..1000000 over 3 samples; factor 10 allows 1000..=10000000.
    assert_eq!(
        reason(&policy, s, &paying("10000001"), None).await,
        "policy_amount_out_of_range"
    );
    assert_eq!(
        reason(&policy, s, &paying("999"), None).await,
        "policy_amount_out_of_range"
    );
    assert_eq!(reason(&policy, s, &paying("1000"), None).await, "allow");
    assert_eq!(reason(&policy, s, &paying("10000000"), None).await, "allow");
}

on_both_backends!(
    session_budget_joins_the_reservation,
    session_budget_holds_under_concurrency,
    amounts_outside_the_usual_range_are_refused,
);
