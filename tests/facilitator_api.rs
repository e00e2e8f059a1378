//! The facilitator API end to end: Gatehouse booted as in `main`, a real store (SQLite, and
//! PostgreSQL where it matters), a test upstream that records what it receives, and wiremock
//! only where an upstream failure must be produced on demand.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// Invariant 5 (drop-in): v2 verify and settle reach the upstream byte for byte, unknown
/// fields included, and the upstream's answer (with its unknown fields) comes back.
#[tokio::test]
async fn v2_verify_and_settle_are_forwarded_with_bodies_intact() {
    let upstream = test_upstream::start(Duration::ZERO).await;
    let db = TestDb::sqlite();
    let gh = start(test_config(&db.url, &upstream.url)).await;
    let body = serde_json::to_vec(&v2_body(&nonce())).unwrap();

    let (status, verify, headers) =
        post_raw(&format!("http://{}/verify", gh.addr), body.clone()).await;
    assert_eq!(status, 200, "{verify}");
    assert_eq!(verify["isValid"], true, "{verify}");
    assert_eq!(verify["upstreamOnlyField"], "kept");
    assert!(headers.get("x-request-id").is_some());
    assert_eq!(upstream.recorded.verify_bodies.lock().await[0], body);

    let (status, settle, _) = post_raw(&format!("http://{}/settle", gh.addr), body.clone()).await;
    assert_eq!(status, 200, "{settle}");
    assert_eq!(settle["success"], true, "{settle}");
    assert!(settle["transaction"].as_str().unwrap().starts_with("0x"));
    assert_eq!(settle["network"], TEST_NETWORK);
    assert_eq!(upstream.recorded.settle_bodies.lock().await[0], body);
    gh.stop().await.unwrap();
}

/// The same for v1 (legacy network names), and under the x402-secure `/x402/` prefix.
#[tokio::test]
async fn v1_verify_and_settle_are_forwarded_under_both_prefixes() {
    let upstream = test_upstream::start(Duration::ZERO).await;
    let db = TestDb::sqlite();
    let gh = start(test_config(&db.url, &upstream.url)).await;
    let body = serde_json::to_vec(&v1_body(&nonce())).unwrap();
    let (status, verify, _) =
        post_raw(&format!("http://{}/x402/verify", gh.addr), body.clone()).await;
    assert_eq!(
        (status, verify["isValid"].clone()),
        (200, json!(true)),
        "{verify}"
    );
    let (status, settle, _) = post_raw(&format!("http://{}/settle", gh.addr), body.clone()).await;
    assert_eq!(
        (status, settle["success"].clone()),
        (200, json!(true)),
        "{settle}"
    );
    assert_eq!(settle["network"], "base-sepolia");
    assert_eq!(upstream.recorded.settle_bodies.lock().await[0], body);
    gh.stop().await.unwrap();
}

/// Invariant 6: malformed input gets a 400 JSON error naming the problem; oversized 413.
#[tokio::test]
async fn malformed_and_oversized_bodies_are_refused_with_json_errors() {
    let upstream = test_upstream::start(Duration::ZERO).await;
    let db = TestDb::sqlite();
    let gh = start(test_config(&db.url, &upstream.url)).await;
    let url = format!("http://{}/verify", gh.addr);

    let (status, body, _) = post_raw(&url, b"{not json".to_vec()).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["code"].is_string() && body["error"]["message"].is_string(),
        "{body}"
    );

    let mut missing = v2_body(&nonce());
    missing
        .as_object_mut()
        .unwrap()
        .remove("paymentRequirements");
    let (status, body, _) = post_json(&url, &missing).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["field"], "paymentRequirements", "{body}");

    let mut no_pay_to = v2_body(&nonce());
    no_pay_to["paymentRequirements"]
        .as_object_mut()
        .unwrap()
        .remove("payTo");
    let (status, body, _) = post_json(&url, &no_pay_to).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["error"]["field"], "paymentRequirements.payTo",
        "{body}"
    );

    let deep = "[".repeat(100_000);
    let (status, body, _) = post_raw(&url, deep.into_bytes()).await;
    assert!(status == 400 || status == 413, "{status} {body}");

    let big = vec![b' '; 300 * 1024];
    let (status, body, _) = post_raw(&url, big).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"]["code"], "payload_too_large");

    assert_eq!(upstream.recorded.verify_calls.load(Ordering::SeqCst), 0);
    gh.stop().await.unwrap();
}

/// Invariant 1 (fail closed): with the upstream down, verify answers isValid:false naming why.
#[tokio::test]
async fn upstream_down_at_verify_fails_closed() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let db = TestDb::sqlite();
    let gh = start(test_config(&db.url, &dead)).await;
    let (status, body, _) =
        post_json(&format!("http://{}/verify", gh.addr), &v2_body(&nonce())).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["isValid"], false);
    assert_eq!(body["invalidReason"], "upstream_unavailable", "{body}");
    assert!(
        body["invalidMessage"]
            .as_str()
            .unwrap()
            .contains("upstream"),
        "{body}"
    );

    // A legacy v1 client only ever sees reasons from its enum.
    let (_, body, _) = post_json(&format!("http://{}/verify", gh.addr), &v1_body(&nonce())).await;
    assert_eq!(body["invalidReason"], "unexpected_verify_error", "{body}");

    let (status, ready, _) = get(&format!("http://{}/ready", gh.addr)).await;
    assert_eq!(status, 503, "{ready}");
    assert_eq!(ready["checks"]["upstream"]["ok"], false);
    gh.stop().await.unwrap();
}

/// Invariant 2: an upstream timeout at settle is an unknown outcome (settlement_pending),
/// never a plain failure, and the payment cannot then be settled again.
#[tokio::test]
async fn upstream_timeout_at_settle_is_settlement_pending() {
    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/settle"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(5)))
        .expect(1)
        .mount(&upstream)
        .await;
    let db = TestDb::sqlite();
    let mut config = test_config(&db.url, &upstream.uri());
    config.upstream.settle_timeout_ms = 300;
    let gh = start(config).await;
    let body = v2_body(&nonce());
    let (status, first, _) = post_json(&format!("http://{}/settle", gh.addr), &body).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["success"], false);
    assert_eq!(first["errorReason"], "settlement_pending", "{first}");
    assert_eq!(first["transaction"], "");
    assert_eq!(first["network"], TEST_NETWORK);

    let (_, again, _) = post_json(&format!("http://{}/settle", gh.addr), &body).await;
    assert_eq!(again["errorReason"], "duplicate_settlement", "{again}");
    let (_, verify, _) = post_json(&format!("http://{}/verify", gh.addr), &body).await;
    assert_eq!(verify["invalidReason"], "duplicate_settlement", "{verify}");
    gh.stop().await.unwrap();
}

/// An upstream 5xx with a transaction hash keeps the hash in the pending answer.
#[tokio::test]
async fn upstream_5xx_at_settle_keeps_the_hash() {
    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/settle"))
        .respond_with(ResponseTemplate::new(503).set_body_json(json!({"transaction": "0xabc123"})))
        .expect(1)
        .mount(&upstream)
        .await;
    let db = TestDb::sqlite();
    let gh = start(test_config(&db.url, &upstream.uri())).await;
    let (_, body, _) = post_json(&format!("http://{}/settle", gh.addr), &v2_body(&nonce())).await;
    assert_eq!(body["errorReason"], "settlement_pending", "{body}");
    assert_eq!(body["transaction"], "0xabc123", "{body}");
    gh.stop().await.unwrap();
}

async fn concurrent_identical_settles(database_url: &str) {
    let upstream = test_upstream::start(Duration::from_millis(200)).await;
    let gh = start(test_config(database_url, &upstream.url)).await;
    let body = v2_body(&nonce());
    let url = format!("http://{}/settle", gh.addr);
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (url, body) = (url.clone(), body.clone());
        tasks.push(tokio::spawn(async move { post_json(&url, &body).await }));
    }
    let mut successes = 0;
    let mut duplicates = 0;
    for task in tasks {
        let (status, answer, _) = task.await.unwrap();
        assert_eq!(status, 200, "{answer}");
        if answer["success"] == true {
            successes += 1;
        } else {
            assert_eq!(answer["errorReason"], "duplicate_settlement", "{answer}");
            assert_eq!(answer["transaction"], "");
            duplicates += 1;
        }
    }
    assert_eq!(successes, 1);
    assert_eq!(duplicates, 49);
    assert_eq!(upstream.recorded.settle_calls.load(Ordering::SeqCst), 1);
    gh.stop().await.unwrap();
}

/// Invariant 2: 50 concurrent identical settles → one upstream settle call, one success.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_identical_settles_forward_once_sqlite() {
    let db = TestDb::sqlite();
    concurrent_identical_settles(&db.url).await;
}

/// The same on PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_identical_settles_forward_once_postgres() {
    let db = TestDb::postgres().await;
    concurrent_identical_settles(&db.url).await;
}

/// Spec §6.3: same payment-identifier + same payload → the recorded response, no second
/// upstream call; same identifier + a different payment → 409.
#[tokio::test]
async fn payment_identifier_retries_get_the_recorded_response() {
    let upstream = test_upstream::start(Duration::ZERO).await;
    let db = TestDb::sqlite();
    let gh = start(test_config(&db.url, &upstream.url)).await;
    let url = format!("http://{}/settle", gh.addr);
    let id = "retry-key-0123456789";
    let body = v2_body_with_id(&nonce(), id);
    let (_, first, _) = post_json(&url, &body).await;
    assert_eq!(first["success"], true, "{first}");
    let (status, second, _) = post_json(&url, &body).await;
    assert_eq!(status, 200);
    assert_eq!(second, first);
    assert_eq!(upstream.recorded.settle_calls.load(Ordering::SeqCst), 1);

    let (status, conflict, _) = post_json(&url, &v2_body_with_id(&nonce(), id)).await;
    assert_eq!(status, 409, "{conflict}");
    assert_eq!(conflict["error"]["code"], "payment_identifier_conflict");
    gh.stop().await.unwrap();
}

/// `/supported` mirrors the upstream, keeping only kinds Gatehouse can check (here: the
/// configured test network under both names), with `extensions` and `signers` intact.
#[tokio::test]
async fn supported_is_filtered_to_checkable_networks() {
    let upstream = test_upstream::start(Duration::ZERO).await;
    let db = TestDb::sqlite();
    let gh = start(test_config(&db.url, &upstream.url)).await;
    let (status, body, _) = get(&format!("http://{}/supported", gh.addr)).await;
    assert_eq!(status, 200, "{body}");
    let networks: Vec<&str> = body["kinds"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|k| k["network"].as_str())
        .collect();
    assert_eq!(networks, ["eip155:84532", "base-sepolia"], "{body}");
    assert_eq!(
        body["signers"]["eip155:*"][0],
        "0x0000000000000000000000000000000000000001"
    );
    let (status, _, _) = get(&format!("http://{}/x402/supported", gh.addr)).await;
    assert_eq!(status, 200);
    gh.stop().await.unwrap();
}

/// Invariant 4: every decision leaves evidence; the chain verifies, and a tampered record is
/// named.
#[tokio::test]
async fn every_decision_leaves_verifiable_evidence() {
    let upstream = test_upstream::start(Duration::ZERO).await;
    let db = TestDb::sqlite();
    let gh = start(test_config(&db.url, &upstream.url)).await;
    let body = v2_body(&nonce());
    post_json(&format!("http://{}/verify", gh.addr), &body).await;
    post_json(&format!("http://{}/settle", gh.addr), &body).await;
    post_json(&format!("http://{}/settle", gh.addr), &body).await; // duplicate, denied
    let mut unsupported = v2_body(&nonce());
    unsupported["paymentRequirements"]["scheme"] = json!("upto");
    post_json(&format!("http://{}/verify", gh.addr), &unsupported).await;

    let store = gh.state.pipeline.store().clone();
    let records = store.evidence_after(0, 100).await.unwrap();
    let kinds: Vec<(&str, &str)> = records
        .iter()
        .map(|r| (r.kind.as_str(), r.decision.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("verify", "allow"),
            ("settle_forward", "allow"),
            ("settle", "allow"),
            ("settle", "deny"),
            ("verify", "deny"),
        ],
        "{kinds:?}"
    );
    let settle: Value = serde_json::from_str(&records[2].body).unwrap();
    assert_eq!(settle["response"]["success"], true);
    assert!(settle["upstream"]["status"] == 200, "{settle}");
    let report = gatehouse::evidence::verify_store(&*store).await.unwrap();
    assert_eq!(report.records, 5);
    gh.stop().await.unwrap();

    // Tamper with one record directly in the database (dropping the append-only triggers as an
    // attacker with database access could): verification names it.
    db.drop_evidence_guards().await;
    db.execute("UPDATE evidence SET body = replace(body, 'allow', 'deny') WHERE seq = 3")
        .await;
    let store = gatehouse::store::connect(&db.url).await.unwrap();
    let err = gatehouse::evidence::verify_store(&*store)
        .await
        .unwrap_err();
    assert!(err.to_string().contains('3'), "{err}");
}

/// `/discovery/resources` is forwarded to the upstream with its query string, and the answer
/// comes back as the upstream gave it.
#[tokio::test]
async fn discovery_is_forwarded_with_its_query() {
    let upstream = test_upstream::start(Duration::ZERO).await;
    let db = TestDb::sqlite();
    let gh = start(test_config(&db.url, &upstream.url)).await;
    let (status, body, _) = get(&format!(
        "http://{}/discovery/resources?type=http&limit=5",
        gh.addr
    ))
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["receivedQuery"], "type=http&limit=5", "{body}");
    assert_eq!(body["pagination"]["limit"], 20);
    gh.stop().await.unwrap();
}

async fn get(url: &str) -> (u16, Value, reqwest::header::HeaderMap) {
    let response = reqwest::get(url).await.expect("request sent");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body, headers)
}
