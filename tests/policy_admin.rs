//! The policy's admin API and hot reload, through HTTP against Gatehouse booted as in `main`
//! (real SQLite store, test upstream): every change takes effect on the next payment and
//! leaves an evidence record naming who made it (DESIGN invariant 4), readers cannot change
//! anything, bad input is a 400 naming the key, and a broken policy file never replaces the
//! last good policy (fail closed).

mod common;

use std::time::Duration;

use common::admin::*;
use common::*;
use gatehouse::config::Config;
use gatehouse::policy::{Atomic, BreakerConfig, PolicyConfig, Rule};
use gatehouse::store::{EvidenceRecord, Store};
use serde_json::{Value, json};

/// 2026-11-27 23:00:00 UTC.
const LATE_EVENING_MS: u64 = 1_795_820_400_000;
const OTHER_PAY_TO: &str = "0x1111111111111111111111111111111111111111";

fn config_with(db: &str, upstream: &str, policy: PolicyConfig) -> Config {
    let mut config = with_admin_tokens(test_config(db, upstream));
    config.policy = policy;
    config
}

fn body_paying(nonce: &str, pay_to: &str) -> Value {
    let mut body = v2_body(nonce);
    body["paymentRequirements"]["payTo"] = json!(pay_to);
    body["paymentPayload"]["accepted"]["payTo"] = json!(pay_to);
    body["paymentPayload"]["payload"]["authorization"]["to"] = json!(pay_to);
    body
}

async fn verify(addr: &std::net::SocketAddr, body: &Value) -> Value {
    let (status, answer, _) = post_json(&format!("http://{addr}/verify"), body).await;
    assert_eq!(status, 200, "{answer}");
    answer
}

async fn settle(addr: &std::net::SocketAddr, body: &Value) -> Value {
    post_json(&format!("http://{addr}/settle"), body).await.1
}

async fn put(url: &str, token: &str, body: &Value) -> (u16, Value) {
    admin_call(reqwest::Method::PUT, url, Some(token), Some(body)).await
}

async fn evidence_of(store: &dyn Store, kind: &str) -> Vec<(EvidenceRecord, Value)> {
    store
        .evidence_after(0, 1_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.kind == kind)
        .map(|r| {
            let body = serde_json::from_str(&r.body).unwrap();
            (r, body)
        })
        .collect()
}

/// GET shows the policy in force to readers only; PUT (operator only) validates, records
/// `admin.policy_update` with before and after, and the next payment is judged by it.
#[tokio::test]
async fn policy_is_read_and_replaced_at_runtime_with_evidence() {
    let upstream = test_upstream::start(Duration::ZERO).await;
    let db = TestDb::sqlite();
    let gh = start(config_with(&db.url, &upstream.url, PolicyConfig::default())).await;
    let base = format!("http://{}/admin/policy", gh.addr);

    let (status, view) = admin_get(&base, AUDITOR).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["empty"], true);
    let (status, _) = admin_get(&base, SELLER).await;
    assert_eq!(status, 403);

    let strict = json!({"global": {"max_per_request": "9999"}});
    let (status, answer) = put(&base, AUDITOR, &strict).await;
    assert_eq!(status, 403, "{answer}");
    // Bad input: a 400 naming the key, and nothing changes.
    let (status, answer) = put(&base, OPERATOR, &json!({"endpoints": [{"daily_cap": "5"}]})).await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(
        answer["error"]["field"], "policy.endpoints[0].host",
        "{answer}"
    );
    let (status, answer) = put(&base, OPERATOR, &json!({"global": {"dialy_cap": "5"}})).await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("dialy_cap"),
        "{answer}"
    );
    let (status, answer) = put(&base, OPERATOR, &json!({"global": {"daily_cap": 5}})).await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(verify(&gh.addr, &v2_body(&nonce())).await["isValid"], true);

    let (status, answer) = put(&base, OPERATOR, &strict).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["policy"]["global"]["max_per_request"], "9999");
    let answer = verify(&gh.addr, &v2_body(&nonce())).await;
    assert_eq!(
        answer["invalidReason"], "policy_max_per_request",
        "{answer}"
    );
    let (_, view) = admin_get(&base, OPERATOR).await;
    assert_eq!(
        view["policy"]["global"]["max_per_request"], "9999",
        "{view}"
    );

    let store = gh.state.pipeline.store().clone();
    let updates = evidence_of(&*store, "admin.policy_update").await;
    assert_eq!(updates.len(), 1, "only the accepted PUT is recorded");
    let body = &updates[0].1;
    assert_eq!(body["principal"], "ops");
    assert_eq!(body["after"]["global"]["max_per_request"], "9999");
    assert!(
        body["before"]["global"].as_object().unwrap().is_empty(),
        "{body}"
    );
    gh.stop().await.unwrap();
}

/// Endpoints show their caps and current use from the budget counters; a discovered endpoint
/// is listed with its first-use pin; an operator re-pins it (evidence `admin.pin`), after
/// which the new payTo passes and the old one is blocked. Events reach the outbox.
#[tokio::test]
async fn endpoints_pins_and_repinning() {
    let upstream = test_upstream::start(Duration::ZERO).await;
    let db = TestDb::sqlite();
    let policy = PolicyConfig {
        global: Rule {
            max_per_request: Some(Atomic(5_000_000)),
            ..Rule::default()
        },
        endpoints: vec![Rule {
            host: Some("api.example.com".into()),
            path_prefix: Some("/configured".into()),
            daily_cap: Some(Atomic(50_000)),
            pay_to: Some(PAY_TO.into()),
            ..Rule::default()
        }],
        ..PolicyConfig::default()
    };
    let (gh, _clock) = start_at(config_with(&db.url, &upstream.url, policy), LATE_EVENING_MS).await;
    let admin = format!("http://{}/admin/policy", gh.addr);

    // The fixtures pay for api.example.com/premium: discovered, pinned to PAY_TO on first use.
    let first = v2_body(&nonce());
    assert_eq!(verify(&gh.addr, &first).await["isValid"], true);
    assert_eq!(settle(&gh.addr, &first).await["success"], true);
    let moved = body_paying(&nonce(), OTHER_PAY_TO);
    assert_eq!(
        verify(&gh.addr, &moved).await["invalidReason"],
        "policy_payto_changed"
    );
    let mut configured = v2_body(&nonce());
    configured["paymentPayload"]["resource"]["url"] = json!("https://api.example.com/configured/x");
    assert_eq!(
        verify(&gh.addr, &configured).await["isValid"],
        true,
        "{configured}"
    );
    assert_eq!(settle(&gh.addr, &configured).await["success"], true);

    let (status, list) = admin_get(&format!("{admin}/endpoints"), AUDITOR).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["total"], 2, "{list}");
    let find = |endpoint: &str| {
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["endpoint"] == endpoint)
            .cloned()
            .unwrap_or_else(|| panic!("{endpoint} listed: {list}"))
    };
    let conf = find("api.example.com/configured");
    assert_eq!(conf["source"], "config");
    assert_eq!(conf["limits"]["daily_cap"], "50000");
    let day = conf["usage"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["period"] == "day")
        .cloned()
        .unwrap_or_else(|| panic!("day usage: {conf}"));
    assert_eq!(
        (&day["used"], &day["reserved"], &day["cap"]),
        (&json!(10_000), &json!(0), &json!(50_000)),
        "{conf}"
    );
    let disc = find("api.example.com/premium");
    assert_eq!(disc["source"], "discovered");
    assert_eq!(disc["pay_to"], PAY_TO);
    assert_eq!(disc["limits"]["daily_cap"], "10000000");

    let (status, pins) = admin_get(&format!("{admin}/pins"), AUDITOR).await;
    assert_eq!(status, 200, "{pins}");
    assert_eq!(
        pins["configured"]["api.example.com/configured"], PAY_TO,
        "{pins}"
    );

    let repin = json!({"endpoint": "api.example.com/premium", "pay_to": OTHER_PAY_TO});
    let (status, _) = put(&format!("{admin}/pins"), AUDITOR, &repin).await;
    assert_eq!(status, 403);
    let (status, answer) = put(
        &format!("{admin}/pins"),
        OPERATOR,
        &json!({"endpoint": "api.example.com/premium", "pay_to": "nope"}),
    )
    .await;
    assert_eq!((status, &answer["error"]["field"]), (400, &json!("pay_to")));
    let (status, answer) = put(
        &format!("{admin}/pins"),
        OPERATOR,
        &json!({"endpoint": "api.example.com/configured", "pay_to": OTHER_PAY_TO}),
    )
    .await;
    assert_eq!(status, 409, "{answer}");
    let (status, answer) = put(&format!("{admin}/pins"), OPERATOR, &repin).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["before"]["pay_to"], PAY_TO);
    assert_eq!(answer["pin"]["pay_to"], OTHER_PAY_TO);
    assert_eq!(answer["pin"]["repinned_by"], "ops");

    assert_eq!(verify(&gh.addr, &moved).await["isValid"], true);
    assert_eq!(
        verify(&gh.addr, &v2_body(&nonce())).await["invalidReason"],
        "policy_payto_changed"
    );
    let store = gh.state.pipeline.store().clone();
    let pins = evidence_of(&*store, "admin.pin").await;
    assert_eq!(pins.len(), 1);
    assert_eq!(pins[0].1["principal"], "ops");
    assert_eq!(pins[0].1["before"], PAY_TO);
    assert_eq!(pins[0].1["after"], OTHER_PAY_TO);

    // The discovery and both blocked changes are in the webhook outbox.
    let events: Vec<String> = store
        .list_webhooks(100)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.url.is_none())
        .map(|r| r.event)
        .collect();
    assert_eq!(
        events
            .iter()
            .filter(|e| *e == "endpoint.discovered")
            .count(),
        1,
        "{events:?}"
    );
    assert_eq!(
        events
            .iter()
            .filter(|e| *e == "pin.changed_blocked")
            .count(),
        2,
        "{events:?}"
    );
    gh.stop().await.unwrap();
}

/// Breakers are listed with their state; a reset needs the operator scope and a well-formed,
/// known subject, records `admin.breaker_reset`, and lets payments through again.
#[tokio::test]
async fn breakers_are_listed_and_reset() {
    let upstream = test_upstream::start(Duration::ZERO).await;
    let db = TestDb::sqlite();
    let mut policy = PolicyConfig {
        global: Rule {
            block_recipients: vec![OTHER_PAY_TO.into()],
            ..Rule::default()
        },
        breaker: Some(BreakerConfig {
            threshold: 2,
            cooldown_secs: 600,
        }),
        ..PolicyConfig::default()
    };
    policy.discovery.enabled = false;
    let (gh, _clock) = start_at(config_with(&db.url, &upstream.url, policy), LATE_EVENING_MS).await;
    let admin = format!("http://{}/admin/policy/breakers", gh.addr);
    for _ in 0..2 {
        verify(&gh.addr, &body_paying(&nonce(), OTHER_PAY_TO)).await;
    }
    assert_eq!(
        verify(&gh.addr, &v2_body(&nonce())).await["invalidReason"],
        "policy_circuit_open"
    );
    let (status, list) = admin_get(&admin, AUDITOR).await;
    assert_eq!(status, 200, "{list}");
    let payer = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["subject"] == format!("payer:{PAYER}"))
        .cloned()
        .unwrap_or_else(|| panic!("{list}"));
    assert_eq!(payer["state"], "open");
    assert_eq!(payer["half_opens_at_ms"], json!(LATE_EVENING_MS + 600_000));

    let reset = format!("{admin}/reset");
    let upper_payer =
        json!({"subject": format!("payer:{}", PAYER.to_uppercase().replace("0X", "0x"))});
    let (status, _) = admin_post(&reset, AUDITOR, &upper_payer).await;
    assert_eq!(status, 403);
    let (status, answer) = admin_post(&reset, OPERATOR, &json!({"subject": "wallet:1"})).await;
    assert_eq!(
        (status, &answer["error"]["field"]),
        (400, &json!("subject"))
    );
    let (status, _) = admin_post(&reset, OPERATOR, &json!({"subject": "payer:0xabc"})).await;
    assert_eq!(status, 404);
    let (status, answer) = admin_post(&reset, OPERATOR, &upper_payer).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["before"], "open");
    let endpoint = json!({"subject": "endpoint:api.example.com/premium"});
    assert_eq!(admin_post(&reset, OPERATOR, &endpoint).await.0, 200);
    assert_eq!(verify(&gh.addr, &v2_body(&nonce())).await["isValid"], true);

    let store = gh.state.pipeline.store().clone();
    let resets = evidence_of(&*store, "admin.breaker_reset").await;
    assert_eq!(resets.len(), 2);
    assert_eq!(resets[0].1["principal"], "ops");
    assert_eq!(resets[0].1["before"]["state"], "open");
    assert_eq!(resets[0].1["after"]["state"], "closed");
    let opened = store
        .list_webhooks(100)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.url.is_none() && r.event == "breaker.opened")
        .count();
    assert_eq!(opened, 2, "payer and endpoint breakers opened once each");
    gh.stop().await.unwrap();
}

async fn wait_for(addr: &std::net::SocketAddr, want_valid: bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let answer = verify(addr, &v2_body(&nonce())).await;
        if answer["isValid"] == want_valid || tokio::time::Instant::now() > deadline {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `policy_file` is loaded at start, re-read when it changes (TOML and YAML), recorded as
/// `policy.reload` evidence; a broken file is rejected and the last good policy stays; a
/// broken file at start stops startup naming `policy_file`.
#[tokio::test]
async fn policy_file_hot_reload_keeps_the_last_good_policy() {
    let upstream = test_upstream::start(Duration::ZERO).await;
    let db = TestDb::sqlite();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.toml");
    std::fs::write(&path, "[global]\nmax_per_request = \"9999\"\n").unwrap();
    let mut config = config_with(&db.url, &upstream.url, PolicyConfig::default());
    config.policy_file = Some(path.clone());
    config.policy_reload_secs = 1;
    let gh = start(config.clone()).await;
    assert_eq!(
        verify(&gh.addr, &v2_body(&nonce())).await["invalidReason"],
        "policy_max_per_request"
    );
    std::fs::write(&path, "[global]\nmax_per_request = \"10000\"\n").unwrap();
    let answer = wait_for(&gh.addr, true).await;
    assert_eq!(answer["isValid"], true, "the reload applies: {answer}");

    // Broken: an unknown key, then an invalid section; the good policy stays.
    std::fs::write(&path, "[global]\nmax_per_request = \"9999\"\nbogus = 1\n").unwrap();
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(verify(&gh.addr, &v2_body(&nonce())).await["isValid"], true);
    std::fs::write(&path, "[[endpoints]]\nmax_per_request = \"1\"\n").unwrap();
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(verify(&gh.addr, &v2_body(&nonce())).await["isValid"], true);
    let store = gh.state.pipeline.store().clone();
    let reloads = evidence_of(&*store, "policy.reload").await;
    assert_eq!(reloads.len(), 1, "only the good change is recorded");
    assert_eq!(reloads[0].1["before"]["global"]["max_per_request"], "9999");
    assert_eq!(reloads[0].1["after"]["global"]["max_per_request"], "10000");
    gh.stop().await.unwrap();

    // YAML by extension.
    let yaml = dir.path().join("policy.yaml");
    std::fs::write(&yaml, "global:\n  max_per_request: \"9999\"\n").unwrap();
    let mut config_yaml = config.clone();
    config_yaml.policy_file = Some(yaml);
    let gh = start(config_yaml).await;
    assert_eq!(
        verify(&gh.addr, &v2_body(&nonce())).await["invalidReason"],
        "policy_max_per_request"
    );
    gh.stop().await.unwrap();

    // A broken file at start is a configuration error naming the key.
    std::fs::write(&path, "[global]\nmax_per_request = 5\n").unwrap();
    let err = gatehouse::server::start(config)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("policy_file"), "{err}");
}
