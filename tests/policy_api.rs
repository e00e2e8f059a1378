//! Spending policy through the HTTP API: Gatehouse booted as in `main` with a `[policy]`
//! section, a real store, and a test upstream that records what it receives (wiremock only to
//! make a settle fail on demand).

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use gatehouse::config::Config;
use gatehouse::policy::{Atomic, PolicyConfig, Rule};
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// 2026-11-27 23:00:00 UTC.
const LATE_EVENING_MS: u64 = 1_795_820_400_000;
/// 2026-11-28 00:00:00 UTC.
const MIDNIGHT_MS: u64 = 1_795_824_000_000;
const OTHER_PAY_TO: &str = "0x1111111111111111111111111111111111111111";

fn policy_config(db: &str, upstream: &str, policy: PolicyConfig) -> Config {
    let mut config = test_config(db, upstream);
    config.policy = policy;
    config
}

fn amount(text: &str) -> Option<Atomic> {
    Some(Atomic(text.parse().unwrap()))
}

/// The fixture paid to `pay_to` (requirements, accepted and the authorization agree).
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
    let (_, answer, _) = post_json(&format!("http://{addr}/settle"), body).await;
    answer
}

/// The per-request maximum refuses before anything is forwarded; v1 clients see only their
/// enum's `invalid_payment`.
#[tokio::test]
async fn per_request_maximum_refuses_larger_payments() {
    let upstream = test_upstream::start(Duration::ZERO).await;
    let db = TestDb::sqlite();
    let policy = PolicyConfig {
        global: Rule {
            max_per_request: amount("9999"),
            ..Rule::default()
        },
        ..PolicyConfig::default()
    };
    let gh = start(policy_config(&db.url, &upstream.url, policy)).await;
    let answer = verify(&gh.addr, &v2_body(&nonce())).await;
    assert_eq!(answer["isValid"], false, "{answer}");
    assert_eq!(
        answer["invalidReason"], "policy_max_per_request",
        "{answer}"
    );
    assert!(
        answer["invalidMessage"].as_str().unwrap().contains("9999"),
        "{answer}"
    );
    let answer = verify(&gh.addr, &v1_body(&nonce())).await;
    assert_eq!(answer["invalidReason"], "invalid_payment", "{answer}");
    let answer = settle(&gh.addr, &v2_body(&nonce())).await;
    assert_eq!(answer["errorReason"], "policy_max_per_request", "{answer}");
    assert_eq!(upstream.recorded.verify_calls.load(Ordering::SeqCst), 0);
    assert_eq!(upstream.recorded.settle_calls.load(Ordering::SeqCst), 0);
    gh.stop().await.unwrap();
}

/// A daily cap of two payments: the third is refused at 23:00 UTC, and at midnight UTC the
/// new day has its own budget.
#[tokio::test]
async fn daily_cap_resets_at_midnight_utc() {
    let upstream = test_upstream::start(Duration::ZERO).await;
    let db = TestDb::sqlite();
    let policy = PolicyConfig {
        global: Rule {
            daily_cap: amount("20000"),
            ..Rule::default()
        },
        ..PolicyConfig::default()
    };
    let (gh, clock) = start_at(
        policy_config(&db.url, &upstream.url, policy),
        LATE_EVENING_MS,
    )
    .await;
    for _ in 0..2 {
        let body = v2_body(&nonce());
        assert_eq!(verify(&gh.addr, &body).await["isValid"], true);
        // Re-verify of the same payment does not take a second share of the cap.
        assert_eq!(verify(&gh.addr, &body).await["isValid"], true);
        assert_eq!(settle(&gh.addr, &body).await["success"], true);
    }
    let third = v2_body(&nonce());
    let answer = verify(&gh.addr, &third).await;
    assert_eq!(answer["invalidReason"], "policy_cap_exceeded", "{answer}");
    // One millisecond before midnight it is still the same day.
    clock.set_ms(MIDNIGHT_MS - 1);
    let answer = verify(&gh.addr, &third).await;
    assert_eq!(answer["invalidReason"], "policy_cap_exceeded", "{answer}");
    clock.set_ms(MIDNIGHT_MS);
    let answer = verify(&gh.addr, &third).await;
    assert_eq!(answer["isValid"], true, "{answer}");
    assert_eq!(settle(&gh.addr, &third).await["success"], true);
    assert_eq!(upstream.recorded.settle_calls.load(Ordering::SeqCst), 3);
    gh.stop().await.unwrap();
}

/// A recipient on a blocklist is refused even where an allowlist names it; a recipient off
/// the allowlist is refused too.
#[tokio::test]
async fn blocklist_beats_allowlist() {
    let upstream = test_upstream::start(Duration::ZERO).await;
    let db = TestDb::sqlite();
    let policy = PolicyConfig {
        global: Rule {
            allow_recipients: vec![PAY_TO.to_uppercase().replace("0X", "0x")],
            ..Rule::default()
        },
        payees: vec![Rule {
            pay_to: Some(PAY_TO.into()),
            allow_recipients: vec![PAY_TO.into()],
            block_recipients: vec![PAY_TO.into()],
            ..Rule::default()
        }],
        ..PolicyConfig::default()
    };
    let gh = start(policy_config(&db.url, &upstream.url, policy)).await;
    let answer = verify(&gh.addr, &v2_body(&nonce())).await;
    assert_eq!(
        answer["invalidReason"], "policy_recipient_blocked",
        "{answer}"
    );
    let answer = verify(&gh.addr, &body_paying(&nonce(), OTHER_PAY_TO)).await;
    assert_eq!(
        answer["invalidReason"], "policy_recipient_not_allowed",
        "{answer}"
    );
    assert_eq!(upstream.recorded.verify_calls.load(Ordering::SeqCst), 0);
    gh.stop().await.unwrap();
}

/// A payTo pinned in config, and one pinned on first use by discovery: a change is blocked
/// with a reason naming both recipients, and the discovery is recorded as evidence.
#[tokio::test]
async fn pinned_pay_to_change_is_blocked() {
    let upstream = test_upstream::start(Duration::ZERO).await;
    let db = TestDb::sqlite();
    let policy = PolicyConfig {
        endpoints: vec![Rule {
            host: Some("api.example.com".into()),
            path_prefix: Some("/premium".into()),
            pay_to: Some(OTHER_PAY_TO.into()),
            ..Rule::default()
        }],
        ..PolicyConfig::default()
    };
    let gh = start(policy_config(&db.url, &upstream.url, policy)).await;
    let answer = verify(&gh.addr, &v2_body(&nonce())).await;
    assert_eq!(answer["invalidReason"], "policy_payto_changed", "{answer}");
    let message = answer["invalidMessage"].as_str().unwrap();
    assert!(
        message.contains(PAY_TO) && message.contains(OTHER_PAY_TO),
        "{message}"
    );
    let answer = verify(&gh.addr, &body_paying(&nonce(), OTHER_PAY_TO)).await;
    assert_eq!(answer["isValid"], true, "{answer}");
    gh.stop().await.unwrap();

    // Trust on first use: an unlisted endpoint is discovered and its payTo pinned.
    let db = TestDb::sqlite();
    let policy = PolicyConfig {
        global: Rule {
            max_per_request: amount("5000000"),
            ..Rule::default()
        },
        ..PolicyConfig::default()
    };
    let gh = start(policy_config(&db.url, &upstream.url, policy)).await;
    let first = v2_body(&nonce());
    assert_eq!(verify(&gh.addr, &first).await["isValid"], true);
    let answer = verify(&gh.addr, &body_paying(&nonce(), OTHER_PAY_TO)).await;
    assert_eq!(answer["invalidReason"], "policy_payto_changed", "{answer}");
    let store = gh.state.pipeline.store().clone();
    let records = store.evidence_after(0, 100).await.unwrap();
    let discoveries: Vec<_> = records
        .iter()
        .filter(|r| r.kind == "policy_discovery")
        .collect();
    assert_eq!(discoveries.len(), 1, "{records:?}");
    assert!(
        discoveries[0].body.contains("api.example.com/premium"),
        "{}",
        discoveries[0].body
    );
    gh.stop().await.unwrap();
}

/// Discovered endpoints get the defaults: 1 USDC per request, 10 requests per minute.
#[tokio::test]
async fn discovered_endpoints_get_default_limits() {
    let upstream = test_upstream::start(Duration::ZERO).await;
    let db = TestDb::sqlite();
    let policy = PolicyConfig {
        global: Rule {
            allowed_networks: vec![TEST_NETWORK.into()],
            ..Rule::default()
        },
        ..PolicyConfig::default()
    };
    let (gh, _clock) = start_at(
        policy_config(&db.url, &upstream.url, policy),
        LATE_EVENING_MS,
    )
    .await;
    let mut big = v2_body(&nonce());
    for target in ["paymentRequirements", "paymentPayload"] {
        let requirements = if target == "paymentPayload" {
            &mut big[target]["accepted"]
        } else {
            &mut big[target]
        };
        requirements["amount"] = json!("1000001");
    }
    big["paymentPayload"]["payload"]["authorization"]["value"] = json!("1000001");
    let answer = verify(&gh.addr, &big).await;
    assert_eq!(
        answer["invalidReason"], "policy_max_per_request",
        "{answer}"
    );
    for i in 0..10 {
        let answer = verify(&gh.addr, &v2_body(&nonce())).await;
        assert_eq!(answer["isValid"], true, "payment {i}: {answer}");
    }
    let answer = verify(&gh.addr, &v2_body(&nonce())).await;
    assert_eq!(answer["invalidReason"], "policy_rate_limited", "{answer}");
    gh.stop().await.unwrap();
}

/// A second, different payment from the same payer to the same endpoint inside the window is
/// refused; the same payment again is not a duplicate; after the window it is allowed.
#[tokio::test]
async fn duplicate_payments_within_the_window_are_refused() {
    let upstream = test_upstream::start(Duration::ZERO).await;
    let db = TestDb::sqlite();
    let policy = PolicyConfig {
        duplicate_window_secs: Some(30),
        ..PolicyConfig::default()
    };
    let (gh, clock) = start_at(
        policy_config(&db.url, &upstream.url, policy),
        LATE_EVENING_MS,
    )
    .await;
    let first = v2_body(&nonce());
    assert_eq!(verify(&gh.addr, &first).await["isValid"], true);
    assert_eq!(settle(&gh.addr, &first).await["success"], true);
    let second = v2_body(&nonce());
    clock.advance_ms(29_000);
    let answer = verify(&gh.addr, &second).await;
    assert_eq!(
        answer["invalidReason"], "policy_duplicate_payment",
        "{answer}"
    );
    clock.advance_ms(1_000);
    assert_eq!(verify(&gh.addr, &second).await["isValid"], true);
    assert_eq!(settle(&gh.addr, &second).await["success"], true);
    gh.stop().await.unwrap();
}

/// Circuit breaker per payer and endpoint: three consecutive violations open it (even a good
/// payment is then refused), the cooldown half-opens it, a violation while half-open re-opens
/// it, a success closes it, and an admin reset closes it at once.
#[tokio::test]
async fn circuit_breaker_opens_half_opens_and_resets() {
    let upstream = test_upstream::start(Duration::ZERO).await;
    let db = TestDb::sqlite();
    let mut policy = PolicyConfig {
        global: Rule {
            block_recipients: vec![OTHER_PAY_TO.into()],
            ..Rule::default()
        },
        breaker: Some(gatehouse::policy::BreakerConfig {
            threshold: 3,
            cooldown_secs: 60,
        }),
        ..PolicyConfig::default()
    };
    policy.discovery.enabled = false;
    let (gh, clock) = start_at(
        policy_config(&db.url, &upstream.url, policy),
        LATE_EVENING_MS,
    )
    .await;
    let good = || v2_body(&nonce());
    let bad = || body_paying(&nonce(), OTHER_PAY_TO);
    assert_eq!(verify(&gh.addr, &good()).await["isValid"], true);
    for _ in 0..3 {
        let answer = verify(&gh.addr, &bad()).await;
        assert_eq!(
            answer["invalidReason"], "policy_recipient_blocked",
            "{answer}"
        );
    }
    let answer = verify(&gh.addr, &good()).await;
    assert_eq!(answer["invalidReason"], "policy_circuit_open", "{answer}");

    // Cooldown → half-open; a violation re-opens at once.
    clock.advance_ms(60_000);
    let answer = verify(&gh.addr, &bad()).await;
    assert_eq!(
        answer["invalidReason"], "policy_recipient_blocked",
        "{answer}"
    );
    let answer = verify(&gh.addr, &good()).await;
    assert_eq!(answer["invalidReason"], "policy_circuit_open", "{answer}");

    // Cooldown → half-open; a success closes it, so one violation no longer opens it.
    clock.advance_ms(60_000);
    assert_eq!(verify(&gh.addr, &good()).await["isValid"], true);
    assert_eq!(
        verify(&gh.addr, &bad()).await["invalidReason"],
        "policy_recipient_blocked"
    );
    assert_eq!(verify(&gh.addr, &good()).await["isValid"], true);

    // Open it again, then an admin reset closes it without waiting.
    for _ in 0..3 {
        verify(&gh.addr, &bad()).await;
    }
    assert_eq!(
        verify(&gh.addr, &good()).await["invalidReason"],
        "policy_circuit_open"
    );
    let store = gh.state.pipeline.store().clone();
    let policy = gatehouse::policy::Policy::default();
    let now = LATE_EVENING_MS + 120_000;
    for subject in [
        format!("payer:{PAYER}"),
        "endpoint:api.example.com/premium".to_owned(),
    ] {
        assert_eq!(
            store.breaker(&subject).await.unwrap().unwrap().state,
            "open"
        );
        assert!(policy.reset_breaker(&*store, &subject, now).await.unwrap());
    }
    assert_eq!(verify(&gh.addr, &good()).await["isValid"], true);
    gh.stop().await.unwrap();
}

/// A failed settle releases the reservation its verify made, so the budget is not lost.
#[tokio::test]
async fn failed_settle_releases_the_reservation() {
    let upstream = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/verify"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"isValid": true})))
        .mount(&upstream)
        .await;
    Mock::given(method("POST"))
        .and(path("/settle"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "success": false, "errorReason": "insufficient_funds", "transaction": "",
            "network": TEST_NETWORK
        })))
        .mount(&upstream)
        .await;
    let db = TestDb::sqlite();
    let policy = PolicyConfig {
        global: Rule {
            daily_cap: amount("10000"),
            ..Rule::default()
        },
        ..PolicyConfig::default()
    };
    let gh = start(policy_config(&db.url, &upstream.uri(), policy)).await;
    let first = v2_body(&nonce());
    assert_eq!(verify(&gh.addr, &first).await["isValid"], true);
    let second = v2_body(&nonce());
    let answer = verify(&gh.addr, &second).await;
    assert_eq!(answer["invalidReason"], "policy_cap_exceeded", "{answer}");
    let answer = settle(&gh.addr, &first).await;
    assert_eq!(answer["success"], false, "{answer}");
    let answer = verify(&gh.addr, &second).await;
    assert_eq!(answer["isValid"], true, "{answer}");
    gh.stop().await.unwrap();
}

/// The `[policy]` section in TOML, as an operator writes it.
#[test]
fn policy_section_loads_from_toml() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.toml");
    std::fs::write(
        &path,
        r#"
[policy]
duplicate_window_secs = 30

[policy.breaker]
threshold = 3

[policy.global]
max_per_request = "1000000"
daily_cap = "50000000"
monthly_cap = "500000000"
block_recipients = ["0x1111111111111111111111111111111111111111"]
allowed_networks = ["eip155:8453"]

[policy.discovery]
daily_cap = "5000000"

[[policy.endpoints]]
host = "api.example.com"
path_prefix = "/premium"
pay_to = "0x209693bc6afc0c5328ba36faf03c514ef312287c"
requests_per_minute = 30

[[policy.payers]]
payer = "0x857b06519e91e3a54538791bdbb0e22373e36b66"
hourly_cap = "2000000"
"#,
    )
    .unwrap();
    let env = figment::providers::Env::prefixed("GATEHOUSE_NOT_SET_IN_POLICY_TESTS_");
    let config = Config::figment(Some(&path), env).unwrap();
    assert_eq!(config.policy.global.daily_cap, amount("50000000"));
    assert_eq!(config.policy.endpoints[0].requests_per_minute, Some(30));
    assert_eq!(config.policy.discovery.requests_per_minute, 10);
    assert_eq!(config.policy.payers[0].hourly_cap, amount("2000000"));
    assert_eq!(config.policy.duplicate_window_secs, Some(30));
    // The effective configuration prints back as loadable TOML (`gatehouse config`).
    let shown = config.to_masked_toml();
    assert!(
        shown.contains("duplicate_window_secs = 30") && shown.contains("[[policy.endpoints]]"),
        "{shown}"
    );
    std::fs::write(&path, &shown).unwrap();
    let env = figment::providers::Env::prefixed("GATEHOUSE_NOT_SET_IN_POLICY_TESTS_");
    let reloaded = Config::figment(Some(&path), env).unwrap();
    assert_eq!(reloaded.policy, config.policy);

    // Amounts are strings of atomic units: a float or a number is refused by name.
    std::fs::write(&path, "[policy.global]\ndaily_cap = \"1.5\"\n").unwrap();
    let env = figment::providers::Env::prefixed("GATEHOUSE_NOT_SET_IN_POLICY_TESTS_");
    let err = Config::figment(Some(&path), env).unwrap_err().to_string();
    assert!(err.contains("daily_cap") || err.contains("atomic"), "{err}");
    std::fs::write(&path, "[[policy.payees]]\ndaily_cap = \"15\"\n").unwrap();
    let env = figment::providers::Env::prefixed("GATEHOUSE_NOT_SET_IN_POLICY_TESTS_");
    let err = Config::figment(Some(&path), env).unwrap_err().to_string();
    assert!(err.contains("policy.payees[0].pay_to"), "{err}");
}

/// Invariant 3 across replicas: two Gatehouse instances on one PostgreSQL database, 200
/// concurrent verify+settle payments at a cap that admits 10: exactly 10 are approved and
/// settled, and the committed total in the store equals the cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_admit_exactly_the_cap_under_concurrency() {
    let upstream = test_upstream::start(Duration::from_millis(20)).await;
    let db = TestDb::postgres().await;
    let mut policy = PolicyConfig {
        global: Rule {
            daily_cap: amount("100000"),
            ..Rule::default()
        },
        ..PolicyConfig::default()
    };
    policy.discovery.enabled = false;
    let mut config = policy_config(&db.url, &upstream.url, policy);
    // 400 requests on two shared cores: generous timeouts, so only the policy decides.
    config.upstream.verify_timeout_ms = 60_000;
    config.upstream.settle_timeout_ms = 60_000;
    config.request_timeout_ms = 120_000;
    let started = tokio::time::Instant::now();
    let (a, _clock_a) = start_at(config.clone(), LATE_EVENING_MS).await;
    let (b, _clock_b) = start_at(config, LATE_EVENING_MS).await;
    let addrs = Arc::new([a.addr, b.addr]);
    let mut tasks = Vec::new();
    for i in 0..200 {
        let addrs = addrs.clone();
        tasks.push(tokio::spawn(async move {
            let addr = addrs[i % 2];
            let body = v2_body(&nonce());
            let verified = verify(&addr, &body).await;
            let settled = settle(&addr, &body).await;
            (verified, settled)
        }));
    }
    let (mut approved, mut settled) = (0, 0);
    for task in tasks {
        let (verified, settle_answer) = task.await.unwrap();
        if verified["isValid"] == true {
            approved += 1;
        } else {
            assert_eq!(
                verified["invalidReason"], "policy_cap_exceeded",
                "{verified}"
            );
        }
        if settle_answer["success"] == true {
            settled += 1;
        }
    }
    eprintln!("200 verify+settle took {:?}", started.elapsed());
    assert_eq!(approved, 10);
    assert_eq!(settled, 10);
    assert_eq!(upstream.recorded.settle_calls.load(Ordering::SeqCst), 10);
    let day = LATE_EVENING_MS / 86_400_000;
    let key = format!("global|{ASSET}|day|{day}");
    let counter = a
        .state
        .pipeline
        .store()
        .budget_counter(&key)
        .await
        .unwrap()
        .expect("the counter exists");
    assert_eq!((counter.used, counter.reserved), (100_000, 0));
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}
