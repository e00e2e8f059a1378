//! Webhooks end to end: an event decided by the policy is written to the durable outbox and
//! delivered by the background drainer to a real HTTP receiver on 127.0.0.1, signed with
//! HMAC-SHA256 over `t.body` (the test recomputes it); a receiver answering 500 is retried with
//! backoff up to `max_attempts` (wiremock only produces the failures); a private destination
//! is refused unless `allow_private` is set (SSRF), and redirects are not followed.

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use common::*;
use gatehouse::config::Config;
use gatehouse::policy::{Atomic, PolicyConfig, Rule};
use gatehouse::store::{Store, WebhookRow};
use gatehouse::webhook::{WebhookConfig, WebhookEvent, enqueue};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::sync::Mutex;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const SECRET: &str = "whsec_test_0123456789abcdef";

/// What the receiver got: (headers, raw body).
type Received = Arc<Mutex<Vec<(http::HeaderMap, Bytes)>>>;

async fn receiver() -> (String, Received) {
    let received: Received = Arc::default();
    let app = Router::new()
        .route(
            "/hook",
            post(
                |State(r): State<Received>, headers: http::HeaderMap, body: Bytes| async move {
                    r.lock().await.push((headers, body));
                    "ok"
                },
            ),
        )
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}/hook"), received)
}

fn hook(url: &str, dir: &tempfile::TempDir, events: Vec<WebhookEvent>) -> WebhookConfig {
    let secret = dir.path().join("secret");
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    let mut config = WebhookConfig::new(url, events);
    config.secret_file = Some(secret);
    config.allow_private = true;
    config.retry_base_ms = 50;
    config.retry_max_ms = 200;
    config
}

fn gatehouse_config(db: &str, upstream: &str, hooks: Vec<WebhookConfig>) -> Config {
    let mut config = test_config(db, upstream);
    config.policy = PolicyConfig {
        global: Rule {
            max_per_request: Some(Atomic(5_000_000)),
            ..Rule::default()
        },
        ..PolicyConfig::default()
    };
    config.webhooks = hooks;
    config
}

async fn rows(store: &dyn Store) -> Vec<WebhookRow> {
    store
        .list_webhooks(100)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.url.is_some())
        .collect()
}

/// Waits (bounded) until every delivery row is finished.
async fn settled_rows(store: &dyn Store, want: usize) -> Vec<WebhookRow> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let rows = rows(store).await;
        let done = rows.len() >= want && rows.iter().all(|r| r.state != "pending");
        if done || tokio::time::Instant::now() > deadline {
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The signed timestamp, if the header's HMAC verifies over `body` with the shared secret.
fn verified_timestamp(header: &str, body: &[u8]) -> Option<u64> {
    let (t, v1) = header
        .split_once(',')
        .and_then(|(t, v)| Some((t.strip_prefix("t=")?, v.strip_prefix("v1=")?)))?;
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(SECRET.as_bytes()).ok()?;
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    mac.verify_slice(&hex::decode(v1).ok()?).ok()?;
    t.parse().ok()
}

/// A discovered endpoint is announced to the subscribed receiver, signed, once; an event the
/// webhook does not subscribe to is not sent; `review.pending` from another step (through
/// the public `enqueue`) is delivered too; `delivered_at_ms` is recorded.
#[tokio::test]
async fn events_are_signed_and_delivered_once() {
    let upstream = test_upstream::start(Duration::ZERO).await;
    let (url, received) = receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::sqlite();
    let hooks = vec![hook(
        &url,
        &dir,
        vec![
            WebhookEvent::EndpointDiscovered,
            WebhookEvent::ReviewPending,
        ],
    )];
    let gh = start(gatehouse_config(&db.url, &upstream.url, hooks)).await;
    let answer = post_json(&format!("http://{}/verify", gh.addr), &v2_body(&nonce()))
        .await
        .1;
    assert_eq!(answer["isValid"], true, "{answer}");
    // A blocked payTo change: an event nobody subscribed to.
    let mut moved = v2_body(&nonce());
    let other = "0x1111111111111111111111111111111111111111";
    moved["paymentRequirements"]["payTo"] = json!(other);
    moved["paymentPayload"]["accepted"]["payTo"] = json!(other);
    moved["paymentPayload"]["payload"]["authorization"]["to"] = json!(other);
    let answer = post_json(&format!("http://{}/verify", gh.addr), &moved)
        .await
        .1;
    assert_eq!(answer["invalidReason"], "policy_payto_changed", "{answer}");
    let store = gh.state.pipeline.store().clone();
    enqueue(
        &*store,
        WebhookEvent::ReviewPending,
        json!({"fingerprint": "f1", "score": 72}),
        gh.state.pipeline.clock().now_ms(),
    )
    .await
    .unwrap();

    let rows = settled_rows(&*store, 2).await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    for row in &rows {
        assert_eq!(row.state, "delivered", "{row:?}");
        assert_eq!(row.attempts, 1);
        assert!(row.delivered_at_ms.is_some());
    }
    let got = received.lock().await.clone();
    assert_eq!(got.len(), 2);
    let now_secs = gh.state.pipeline.clock().now_secs();
    let mut events = Vec::new();
    for (headers, body) in &got {
        let signature = headers["x-gatehouse-signature"].to_str().unwrap();
        let t = verified_timestamp(signature, body).expect("the HMAC verifies");
        assert!(t.abs_diff(now_secs) < 60, "timestamp {t} vs {now_secs}");
        let json: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(
            headers["x-gatehouse-event"],
            json["event"].as_str().unwrap()
        );
        events.push(json);
    }
    let discovered = events
        .iter()
        .find(|e| e["event"] == "endpoint.discovered")
        .expect("discovery delivered");
    assert_eq!(discovered["data"]["endpoint"], "api.example.com/premium");
    assert_eq!(discovered["data"]["pay_to"], PAY_TO);
    let review = events
        .iter()
        .find(|e| e["event"] == "review.pending")
        .expect("review delivered");
    assert_eq!(review["data"]["score"], 72);
    // A tampered body fails the signature.
    let (headers, body) = &got[0];
    let mut tampered = body.to_vec();
    tampered.push(b' ');
    let header = headers["x-gatehouse-signature"].to_str().unwrap();
    assert_eq!(
        verified_timestamp(header, &tampered),
        None,
        "a changed body must not verify"
    );
    gh.stop().await.unwrap();
}

/// A receiver answering 500 is retried with backoff and given up after `max_attempts`;
/// one that recovers gets the event on the next attempt. Redirects are not followed.
#[tokio::test]
async fn failures_are_retried_with_backoff_then_given_up() {
    let failing = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/down"))
        .respond_with(ResponseTemplate::new(500))
        .expect(3)
        .mount(&failing)
        .await;
    Mock::given(method("POST"))
        .and(path("/flaky"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(2)
        .expect(2)
        .with_priority(1)
        .mount(&failing)
        .await;
    Mock::given(method("POST"))
        .and(path("/flaky"))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .with_priority(2)
        .mount(&failing)
        .await;
    Mock::given(method("POST"))
        .and(path("/moved"))
        .respond_with(
            ResponseTemplate::new(307)
                .insert_header("location", format!("{}/flaky", failing.uri())),
        )
        .expect(1)
        .mount(&failing)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let mut down = hook(
        &format!("{}/down", failing.uri()),
        &dir,
        vec![WebhookEvent::BreakerOpened],
    );
    down.max_attempts = 3;
    let flaky = hook(
        &format!("{}/flaky", failing.uri()),
        &dir,
        vec![WebhookEvent::BreakerOpened],
    );
    let mut moved = hook(
        &format!("{}/moved", failing.uri()),
        &dir,
        vec![WebhookEvent::BreakerOpened],
    );
    moved.max_attempts = 1;
    let upstream = test_upstream::start(Duration::ZERO).await;
    let db = TestDb::sqlite();
    let gh = start(gatehouse_config(
        &db.url,
        &upstream.url,
        vec![down, flaky, moved],
    ))
    .await;
    let store = gh.state.pipeline.store().clone();
    enqueue(
        &*store,
        WebhookEvent::BreakerOpened,
        json!({"subject": "payer:0xabc"}),
        gh.state.pipeline.clock().now_ms(),
    )
    .await
    .unwrap();
    let rows = settled_rows(&*store, 3).await;
    let by = |suffix: &str| {
        rows.iter()
            .find(|r| r.url.as_deref().is_some_and(|u| u.ends_with(suffix)))
            .cloned()
            .unwrap_or_else(|| panic!("{suffix}: {rows:?}"))
    };
    let down = by("/down");
    assert_eq!(
        (down.state.as_str(), down.attempts),
        ("failed", 3),
        "{down:?}"
    );
    assert!(
        down.last_error.as_deref().unwrap().contains("500"),
        "{down:?}"
    );
    assert!(down.delivered_at_ms.is_none());
    let flaky = by("/flaky");
    assert_eq!(
        (flaky.state.as_str(), flaky.attempts),
        ("delivered", 3),
        "{flaky:?}"
    );
    let moved = by("/moved");
    assert_eq!(moved.state, "failed", "{moved:?}");
    assert!(
        moved.last_error.as_deref().unwrap().contains("redirect"),
        "{moved:?}"
    );
    gh.stop().await.unwrap();
    failing.verify().await;
}

/// Without `allow_private`, a loopback destination is refused at once (no request is made,
/// no retries), so a webhook cannot be aimed at internal services.
#[tokio::test]
async fn private_destinations_are_refused_unless_allowed() {
    let (url, received) = receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let mut strict = hook(&url, &dir, vec![WebhookEvent::BreakerOpened]);
    strict.allow_private = false;
    let mut by_name = hook(
        &url.replace("127.0.0.1", "localhost"),
        &dir,
        vec![WebhookEvent::BreakerOpened],
    );
    by_name.allow_private = false;
    let upstream = test_upstream::start(Duration::ZERO).await;
    let db = TestDb::sqlite();
    let gh = start(gatehouse_config(
        &db.url,
        &upstream.url,
        vec![strict, by_name],
    ))
    .await;
    let store = gh.state.pipeline.store().clone();
    enqueue(
        &*store,
        WebhookEvent::BreakerOpened,
        json!({"subject": "payer:0xabc"}),
        gh.state.pipeline.clock().now_ms(),
    )
    .await
    .unwrap();
    let rows = settled_rows(&*store, 2).await;
    assert_eq!(rows.len(), 2);
    for row in rows {
        assert_eq!((row.state.as_str(), row.attempts), ("failed", 1), "{row:?}");
        assert!(
            row.last_error.as_deref().unwrap().contains("non-public"),
            "{row:?}"
        );
    }
    assert!(
        received.lock().await.is_empty(),
        "nothing reached the receiver"
    );
    gh.stop().await.unwrap();
}

/// Configuration problems name the key: no secret, no events, a non-http URL.
#[test]
fn webhook_config_problems_name_the_key() {
    let mut bad = WebhookConfig::new("ftp://x", vec![]);
    bad.max_attempts = 0;
    let keys: Vec<String> = gatehouse::webhook::problems(&[bad])
        .into_iter()
        .map(|p| p.key)
        .collect();
    for key in [
        "webhooks[0].url",
        "webhooks[0].secret_env",
        "webhooks[0].events",
        "webhooks[0].max_attempts",
    ] {
        assert!(keys.iter().any(|k| k == key), "{key} in {keys:?}");
    }
}
