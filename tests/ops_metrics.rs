//! Operations: `/metrics` (validated by `promtool check metrics` from Debian's `prometheus`
//! package), the separate metrics listener, `/ready` with chain RPC health, graceful shutdown
//! draining in-flight settles, and startup refusing to serve with a bad config or store.

#[path = "common/anvil.rs"]
mod anvil;
mod common;

use std::process::Stdio;
use std::time::Duration;

use common::*;
use gatehouse::chain::ChainConfig;
use gatehouse::policy::Atomic;
use gatehouse::server::StartError;
use std::io::Write;

async fn get(url: &str) -> (u16, String) {
    let response = reqwest::get(url).await.expect("request sent");
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

/// Runs `promtool check metrics` on `text`. promtool missing is a failure, not a pass:
/// `scripts/test.sh` installs it (Debian `prometheus`).
async fn promtool_check(text: &str) {
    let text = text.to_owned();
    tokio::task::spawn_blocking(move || promtool_check_blocking(&text))
        .await
        .expect("promtool check");
}

fn promtool_check_blocking(text: &str) {
    let mut child = match std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(error) => panic!(
            "promtool is not available ({error}); install Debian's `prometheus` package \
             (scripts/test.sh does) — this check is never skipped silently"
        ),
    };
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(text.as_bytes()).expect("write");
    drop(stdin);
    let out = child.wait_with_output().expect("promtool runs");
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n--- exposition ---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The value of the first sample whose line starts with `prefix` (name plus labels).
fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn metrics_count_decisions_steps_upstream_policy_and_pass_promtool() {
    let upstream = test_upstream::start(Duration::ZERO).await;
    let db = TestDb::sqlite();
    let gh = start(test_config(&db.url, &upstream.url)).await;
    let body = v2_body(&nonce());
    let (status, verify, _) = post_json(&format!("http://{}/verify", gh.addr), &body).await;
    assert_eq!((status, verify["isValid"].as_bool()), (200, Some(true)));
    let (status, settle, _) = post_json(&format!("http://{}/settle", gh.addr), &body).await;
    assert_eq!((status, settle["success"].as_bool()), (200, Some(true)));

    // A second server with a per-request cap of 1 atomic unit: a policy denial.
    let mut capped = test_config(&db.url, &upstream.url);
    capped.policy.global.max_per_request = Some(Atomic(1));
    let gh2 = start(capped).await;
    let (_, denied, _) =
        post_json(&format!("http://{}/verify", gh2.addr), &v2_body(&nonce())).await;
    assert_eq!(denied["isValid"], false, "{denied}");

    let (status, text) = get(&format!("http://{}/metrics", gh.addr)).await;
    assert_eq!(status, 200);
    for needle in [
        "gatehouse_decisions_total{gate=\"verify\",decision=\"allow\"}",
        "gatehouse_decisions_total{gate=\"settle\",decision=\"settled\"}",
        "gatehouse_decision_duration_seconds_bucket{gate=\"verify\",le=\"0.005\"}",
        "gatehouse_step_duration_seconds_bucket{gate=\"verify\",step=\"policy\",le=",
        "gatehouse_step_duration_seconds_bucket{gate=\"settle\",step=\"journal\",le=",
        "gatehouse_upstream_requests_total{endpoint=\"/verify\",outcome=\"ok\"}",
        "gatehouse_upstream_duration_seconds_bucket{endpoint=\"/settle\",le=",
        "gatehouse_policy_denials_total{control=\"policy_max_per_request\"}",
        "gatehouse_refusals_total{gate=\"verify\",step=\"policy\",reason=\"policy_max_per_request\"}",
        "gatehouse_breakers{state=\"open\"}",
        "gatehouse_store_pool_max_connections",
        "gatehouse_build_info{version=",
        "# HELP gatehouse_decisions_total",
        "# TYPE gatehouse_step_duration_seconds histogram",
    ] {
        assert!(text.contains(needle), "missing `{needle}` in:\n{text}");
    }
    // The journal gauge is read from the store at scrape time: this settle is in it.
    let settled = sample(&text, "gatehouse_settlements{state=\"settled\"}").expect("gauge");
    assert!(settled >= 1.0, "{text}");
    assert!(sample(&text, "gatehouse_store_pool_max_connections").unwrap_or(0.0) >= 1.0);
    promtool_check(&text).await;

    // A failing RPC endpoint shows up as RPC errors (one round trip per verify attempt).
    let dead = format!("http://127.0.0.1:{}", anvil::free_port());
    let mut checked = test_config(&db.url, &upstream.url);
    checked.chains.insert(
        TEST_NETWORK.to_owned(),
        ChainConfig {
            rpc_urls: vec![dead],
            rpc_timeout_ms: Some(500),
            onchain_checks: true,
            ..ChainConfig::default()
        },
    );
    let gh3 = start(checked).await;
    let (_, refused, _) =
        post_json(&format!("http://{}/verify", gh3.addr), &v2_body(&nonce())).await;
    assert_eq!(refused["isValid"], false, "{refused}");
    let (_, text) = get(&format!("http://{}/metrics", gh3.addr)).await;
    assert!(
        sample(&text, "gatehouse_rpc_requests_total{outcome=\"error\"}").unwrap_or(0.0) >= 1.0,
        "{text}"
    );
    assert!(text.contains("reason=\"check_unavailable\""), "{text}");
    promtool_check(&text).await;
    for server in [gh, gh2, gh3] {
        server.stop().await.unwrap();
    }
}

#[tokio::test]
async fn metrics_can_move_to_a_separate_listener() {
    let upstream = test_upstream::start(Duration::ZERO).await;
    let db = TestDb::sqlite();
    let port = anvil::free_port();
    let mut config = test_config(&db.url, &upstream.url);
    config.ops.metrics_listen = Some(format!("127.0.0.1:{port}"));
    let gh = start(config).await;
    let (status, _) = get(&format!("http://{}/metrics", gh.addr)).await;
    assert_eq!(status, 404, "metrics must leave the main port");
    let (status, text) = get(&format!("http://127.0.0.1:{port}/metrics")).await;
    assert_eq!(status, 200);
    assert!(text.contains("gatehouse_build_info"), "{text}");
    gh.stop().await.unwrap();
}

#[tokio::test]
async fn ready_reflects_chain_rpc_health() {
    let upstream = test_upstream::start(Duration::ZERO).await;
    let db = TestDb::sqlite();
    let chain = anvil::Anvil::start().await;
    let dead = format!("http://127.0.0.1:{}", anvil::free_port());
    let mut config = test_config(&db.url, &upstream.url);
    config.chains.insert(
        TEST_NETWORK.to_owned(),
        ChainConfig {
            rpc_urls: vec![chain.url.clone()],
            onchain_checks: true,
            ..ChainConfig::default()
        },
    );
    let gh = start(config.clone()).await;
    let (status, body) = get(&format!("http://{}/ready", gh.addr)).await;
    assert_eq!(status, 200, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["checks"]["chains"][TEST_NETWORK]["ok"], true, "{body}");

    // The same chain with only a dead endpoint: not ready, naming the chain (not the URL).
    config.chains.get_mut(TEST_NETWORK).unwrap().rpc_urls = vec![dead.clone()];
    let gh2 = start(config).await;
    let (status, body) = get(&format!("http://{}/ready", gh2.addr)).await;
    assert_eq!(status, 503, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        json["checks"]["chains"][TEST_NETWORK]["ok"], false,
        "{body}"
    );
    assert!(!body.contains(&dead), "endpoint URLs may hold keys: {body}");
    gh.stop().await.unwrap();
    gh2.stop().await.unwrap();
}

/// Shutdown waits for a settle already forwarded: the client gets its answer and the journal
/// holds the outcome, not an in-flight entry.
#[tokio::test]
async fn shutdown_drains_an_in_flight_settle() {
    let upstream = test_upstream::start(Duration::from_millis(1500)).await;
    let db = TestDb::sqlite();
    let gh = start(test_config(&db.url, &upstream.url)).await;
    let body = v2_body(&nonce());
    let url = format!("http://{}/settle", gh.addr);
    let client = tokio::spawn(async move { post_json(&url, &body).await });
    // Let the settle reach the upstream, then stop.
    for _ in 0..100 {
        if upstream
            .recorded
            .settle_calls
            .load(std::sync::atomic::Ordering::SeqCst)
            > 0
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(gh.state.drain.running(), 1);
    gh.stop().await.unwrap();
    let (status, settle, _) = client.await.unwrap();
    assert_eq!(
        (status, settle["success"].as_bool()),
        (200, Some(true)),
        "{settle}"
    );
    let rows = db
        .execute("UPDATE settlements SET state = state WHERE state = 'settled'")
        .await;
    assert_eq!(rows, 1, "the settle's outcome was journalled before exit");
}

#[tokio::test]
async fn startup_refuses_a_bad_config_or_an_unreachable_store() {
    let upstream = test_upstream::start(Duration::ZERO).await;
    let db = TestDb::sqlite();
    let mut config = test_config(&db.url, &upstream.url);
    config.ops.metrics_listen = Some("not-an-address".into());
    match gatehouse::server::start(config).await {
        Err(StartError::Config(error)) => {
            assert!(error.to_string().contains("ops.metrics_listen"), "{error}")
        }
        other => panic!("expected a config error, got {other:?}"),
    }
    let port = anvil::free_port();
    let config = test_config(
        &format!("postgres://postgres@127.0.0.1:{port}/nowhere"),
        &upstream.url,
    );
    match gatehouse::server::start(config).await {
        Err(StartError::Store(_)) => {}
        other => panic!("expected a store error, got {other:?}"),
    }
}
