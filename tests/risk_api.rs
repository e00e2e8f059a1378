//! Risk sessions, traces, evaluation and the pipeline's risk step, end to end over HTTP against
//! a real Gatehouse (SQLite, and PostgreSQL for the two-replica mandate replay). The upstream is
//! the recording test upstream; the chain step is off (`onchain_checks = false`), so these tests
//! are about the risk step alone. Rules are real YAML files compiled by the rule engine.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::admin::{OPERATOR, SELLER, admin_get, admin_post, with_admin_tokens};
use common::{
    ASSET, PAY_TO, PAYER, TestDb, nonce, post_json, start, test_config, test_upstream, v1_body,
    v2_body,
};
use gatehouse::config::Config;
use gatehouse::risk::client::{NewSession, RiskClient};
use gatehouse::store::connect;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

/// One rule file: a trace task decides (review / deny), and a payer that is not the session's
/// wallet is denied.
const RULES: &str = r#"
- id: test-review-task
  description: the agent's task asks for review
  condition: "trace != null && trace.task == 'review me'"
  action: review
- id: test-deny-task
  description: the agent's task asks for deny
  condition: "trace != null && trace.task == 'deny me'"
  action: deny
- id: session-payer-mismatch
  description: the payer is not the session's wallet
  condition: "session != null && !session.payer_matches"
  action: deny
"#;

fn rules_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("test.yaml"), RULES).expect("write rules");
    dir
}

fn risk_config(db: &str, upstream: &str, rules: &std::path::Path) -> Config {
    let mut config = with_admin_tokens(test_config(db, upstream));
    config.risk.rules_dir = rules.to_path_buf();
    config.risk.max_trace_events = 200;
    config
}

async fn session(base: &str, wallet: &str) -> String {
    let client = RiskClient::new(base).unwrap();
    client
        .create_session(&NewSession::new("did:example:agent-1", wallet))
        .await
        .expect("session created")
        .sid
}

async fn trace(base: &str, sid: &str, task: &str) -> String {
    RiskClient::new(base)
        .unwrap()
        .upload_trace(
            sid,
            &json!({"task": task, "parameters": {"symbol": "BTC/USD"},
                    "events": [{"type": "user_input", "content": task},
                               {"type": "tool_call", "name": "fetch", "arguments": {"url": "https://api.example.com/premium"}}]}),
        )
        .await
        .expect("trace uploaded")
}

/// A v2 body whose payload carries the `gatehouse-risk` extension.
fn with_extension(mut body: Value, ext: Value) -> Value {
    body["paymentPayload"]["extensions"]["gatehouse-risk"] = json!({"info": ext});
    body
}

async fn verify_with(
    base: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> (u16, Value, HeaderMap) {
    let mut request = reqwest::Client::new()
        .post(format!("{base}/verify"))
        .json(body);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = request.send().await.expect("sent");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let json = response.json().await.unwrap_or(Value::Null);
    (status, json, headers)
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// Invariant 4 and the review flow: allow, review (held, not approved; an operator approves
/// through the admin API; the retry of the same payment is allowed), deny; every decision's
/// evidence carries the replayable `risk: {context, assessment}`, and responses carry the
/// `X-Risk-*` headers and the v2 `extensions["gatehouse-risk"]`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn allow_review_then_operator_approval_and_deny_end_to_end() {
    let upstream = test_upstream::start(Duration::ZERO).await;
    let db = TestDb::sqlite();
    let rules = rules_dir();
    let gh = start(risk_config(&db.url, &upstream.url, rules.path())).await;
    let base = format!("http://{}", gh.addr);
    let sid = session(&base, PAYER).await;

    // allow, with the inputs in x402-secure's headers
    let tid = trace(&base, &sid, "buy BTC price").await;
    let secure = "w3c.v1;tp=00-b5ccb78e8b2640d785213de685ac2644-82516a311157fe39-01";
    let (status, answer, headers) = verify_with(
        &base,
        &v2_body(&nonce()),
        &[
            ("X-RISK-SESSION", &sid),
            ("X-RISK-TRACE", &tid),
            ("X-PAYMENT-SECURE", secure),
        ],
    )
    .await;
    assert_eq!(
        (status, &answer["isValid"]),
        (200, &json!(true)),
        "{answer}"
    );
    assert_eq!(header(&headers, "x-risk-decision"), "allow");
    assert_eq!(header(&headers, "x-risk-level"), "low");
    let decision_id = header(&headers, "x-risk-decision-id").to_owned();
    assert_eq!(
        answer["extensions"]["gatehouse-risk"]["decision_id"],
        decision_id.as_str()
    );
    assert_eq!(answer["extensions"]["gatehouse-risk"]["decision"], "allow");

    // review, with the inputs in the payload extension only
    let tid = trace(&base, &sid, "review me").await;
    let held = with_extension(v2_body(&nonce()), json!({"sid": sid, "tid": tid}));
    let (_, answer, headers) = verify_with(&base, &held, &[]).await;
    assert_eq!(answer["isValid"], false, "{answer}");
    assert_eq!(answer["invalidReason"], "risk_review_pending", "{answer}");
    assert_eq!(header(&headers, "x-risk-decision"), "review");
    assert_eq!(header(&headers, "x-risk-level"), "medium");
    let review_id = answer["extensions"]["gatehouse-risk"]["review_id"]
        .as_str()
        .expect("review id")
        .to_owned();
    // Still held on a retry before any operator decision.
    let (_, again, _) = verify_with(&base, &held, &[]).await;
    assert_eq!(again["invalidReason"], "risk_review_pending", "{again}");

    let (status, listed) =
        admin_get(&format!("{base}/admin/reviews?state=pending"), OPERATOR).await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["reviews"].as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed["reviews"][0]["id"], review_id.as_str());
    let approve = format!("{base}/admin/reviews/{review_id}/approve");
    let (status, _) = admin_post(&approve, SELLER, &json!({})).await;
    assert_eq!(status, 403, "a seller may not approve");
    let (status, decided) = admin_post(
        &approve,
        OPERATOR,
        &json!({"note": "checked with the buyer"}),
    )
    .await;
    assert_eq!(
        (status, &decided["state"]),
        (200, &json!("approved")),
        "{decided}"
    );
    let (status, _) = admin_post(&approve, OPERATOR, &json!({})).await;
    assert_eq!(status, 409, "decided once");

    let (_, retried, headers) = verify_with(&base, &held, &[]).await;
    assert_eq!(retried["isValid"], true, "{retried}");
    assert_eq!(header(&headers, "x-risk-decision"), "allow");

    // deny (v2 reason, and v1 clients see their enum's invalid_payment)
    let tid = trace(&base, &sid, "deny me").await;
    let (_, answer, headers) = verify_with(
        &base,
        &with_extension(v2_body(&nonce()), json!({"sid": sid, "tid": tid})),
        &[],
    )
    .await;
    assert_eq!(answer["invalidReason"], "risk_denied", "{answer}");
    assert!(
        answer["invalidMessage"]
            .as_str()
            .unwrap()
            .contains("test-deny-task"),
        "{answer}"
    );
    assert_eq!(header(&headers, "x-risk-decision"), "deny");
    assert_eq!(header(&headers, "x-risk-level"), "high");
    let (_, answer, _) = verify_with(
        &base,
        &v1_body(&nonce()),
        &[("X-RISK-SESSION", &sid), ("X-RISK-TRACE", &tid)],
    )
    .await;
    assert_eq!(answer["invalidReason"], "invalid_payment", "{answer}");

    // A payer that is not the session's wallet.
    let other = session(&base, "0x2222222222222222222222222222222222222222").await;
    let (_, answer, _) =
        verify_with(&base, &v2_body(&nonce()), &[("X-RISK-SESSION", &other)]).await;
    assert_eq!(answer["invalidReason"], "risk_denied", "{answer}");
    assert!(
        answer["invalidMessage"]
            .as_str()
            .unwrap()
            .contains("session-payer-mismatch")
    );

    // Only the allowed payments reached the upstream's verify.
    assert_eq!(upstream.recorded.verify_calls.load(Ordering::SeqCst), 2);

    // Evidence: each verify decision carries the replayable context and assessment.
    let store = connect(&db.url).await.unwrap();
    let records = store.evidence_after(0, 1000).await.unwrap();
    let verifies: Vec<Value> = records
        .iter()
        .filter(|r| r.kind == "verify")
        .map(|r| serde_json::from_str(&r.body).unwrap())
        .collect();
    assert_eq!(verifies.len(), 7);
    for body in &verifies {
        assert!(
            body["risk"]["context"]["payment"]["pay_to"] == PAY_TO,
            "{body}"
        );
        assert!(
            body["risk"]["assessment"]["contributions"].is_array(),
            "{body}"
        );
    }
    assert_eq!(
        verifies[0]["risk"]["decision"]["decision_id"],
        decision_id.as_str()
    );
    assert_eq!(
        verifies[0]["risk"]["context"]["trace"]["task"],
        "buy BTC price"
    );
    assert!(
        records
            .iter()
            .any(|r| r.kind == "admin.review_approve" && r.body.contains("ops"))
    );
    gh.stop().await.unwrap();
}

/// Invariant 6: bad risk input is a 4xx naming the field, never a 500, and a payment with a
/// malformed risk header is refused before anything is forwarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn schema_and_size_errors_are_4xx_naming_the_field() {
    let upstream = test_upstream::start(Duration::ZERO).await;
    let db = TestDb::sqlite();
    let rules = rules_dir();
    let gh = start(risk_config(&db.url, &upstream.url, rules.path())).await;
    let base = format!("http://{}", gh.addr);
    let field = |answer: &Value| answer["error"]["field"].as_str().unwrap_or("").to_owned();

    let (status, answer, _) = post_json(
        &format!("{base}/risk/session"),
        &json!({"wallet_address": PAYER}),
    )
    .await;
    assert_eq!(
        (status, field(&answer).as_str()),
        (400, "agent_did"),
        "{answer}"
    );
    let (status, answer, _) = post_json(
        &format!("{base}/risk/session"),
        &json!({"agent_did": "did:x", "wallet_address": "0x1234"}),
    )
    .await;
    assert_eq!(
        (status, field(&answer).as_str()),
        (400, "wallet_address"),
        "{answer}"
    );
    let (status, answer, _) = post_json(
        &format!("{base}/risk/session"),
        &json!({"agent_did": PAYER, "wallet_proof": {"nonce": "never-issued", "signature": "0x00"}}),
    )
    .await;
    assert_eq!(
        (status, field(&answer).as_str()),
        (400, "wallet_proof.nonce"),
        "{answer}"
    );
    let (status, _, _) =
        common::post_raw(&format!("{base}/risk/session"), b"{not json".to_vec()).await;
    assert_eq!(status, 400);

    let sid = session(&base, PAYER).await;
    let events: Vec<Value> = (0..201)
        .map(|_| json!({"type": "agent_output", "content": "x"}))
        .collect();
    let (status, answer, _) = post_json(
        &format!("{base}/risk/trace"),
        &json!({"sid": sid, "agent_trace": {"events": events}}),
    )
    .await;
    assert_eq!(
        (status, field(&answer).as_str()),
        (400, "agent_trace.events"),
        "{answer}"
    );
    let (status, answer, _) = post_json(
        &format!("{base}/risk/trace"),
        &json!({"sid": sid, "agent_trace": {"events": [{"type": "user_input"}, {"content": "no type"}]}}),
    )
    .await;
    assert_eq!(
        (status, field(&answer).as_str()),
        (400, "agent_trace.events[1].type"),
        "{answer}"
    );
    let (status, _, _) = post_json(
        &format!("{base}/risk/trace"),
        &json!({"sid": uuid::Uuid::new_v4().to_string(), "agent_trace": {}}),
    )
    .await;
    assert_eq!(status, 404, "unknown sid");

    let (status, answer, _) =
        post_json(&format!("{base}/risk/evaluate"), &json!({"sid": sid})).await;
    assert_eq!(
        (status, field(&answer).as_str()),
        (400, "payment"),
        "{answer}"
    );

    for (name, value) in [
        ("X-RISK-SESSION", "not-a-uuid"),
        ("X-PAYMENT-SECURE", "w3c.v1;tp=garbage"),
        ("X-AP2-EVIDENCE", "evd.v1;mr=only"),
    ] {
        let (status, answer, _) = verify_with(&base, &v2_body(&nonce()), &[(name, value)]).await;
        assert_eq!((status, field(&answer).as_str()), (400, name), "{answer}");
    }
    // An unknown session named in the extension refuses the payment (fail closed).
    let unknown = with_extension(
        v2_body(&nonce()),
        json!({"sid": uuid::Uuid::new_v4().to_string()}),
    );
    let (_, answer, _) = verify_with(&base, &unknown, &[]).await;
    assert_eq!(answer["invalidReason"], "risk_denied", "{answer}");
    let bad_ext = with_extension(v2_body(&nonce()), json!({"sid": 42}));
    let (_, answer, _) = verify_with(&base, &bad_ext, &[]).await;
    assert_eq!(answer["invalidReason"], "invalid_payload", "{answer}");
    assert!(
        answer["invalidMessage"]
            .as_str()
            .unwrap()
            .contains("gatehouse-risk.sid")
    );
    assert_eq!(upstream.recorded.verify_calls.load(Ordering::SeqCst), 0);
    gh.stop().await.unwrap();
}

/// Wallet proof: a session signed over a server nonce is `wallet_proven`; the nonce is single
/// use. `/risk/evaluate` answers x402-secure's fields (a dry run: nothing is held).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn proven_sessions_and_evaluate_answer_x402_secure_fields() {
    let upstream = test_upstream::start(Duration::ZERO).await;
    let db = TestDb::sqlite();
    let rules = rules_dir();
    let gh = start(risk_config(&db.url, &upstream.url, rules.path())).await;
    let base = format!("http://{}", gh.addr);
    let client = RiskClient::new(&base).unwrap();
    let signer = alloy::signers::local::PrivateKeySigner::random();
    let proven = client
        .create_proven_session("did:example:a", &signer)
        .await
        .unwrap();
    assert!(proven.wallet_proven);
    assert!(proven.expires_at.ends_with('Z'), "{}", proven.expires_at);

    // A signature by another key over a fresh nonce does not verify.
    let nonce_value = client.nonce().await.unwrap();
    let other = alloy::signers::local::PrivateKeySigner::random();
    use alloy::signers::SignerSync;
    let message =
        gatehouse::risk::session::proof_message(&format!("{:#x}", signer.address()), &nonce_value);
    let forged = other.sign_message_sync(message.as_bytes()).unwrap();
    let mut request = NewSession::new("did:example:a", &format!("{:#x}", signer.address()));
    request.wallet_proof = Some(
        json!({"nonce": nonce_value, "signature": format!("0x{}", hex::encode(forged.as_bytes()))}),
    );
    let err = client
        .create_session(&request)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("wallet_proof.signature"), "{err}");
    // ... and its nonce is gone.
    let err = client
        .create_session(&request)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("wallet_proof.nonce"), "{err}");

    let sid = session(&base, PAYER).await;
    let tid = trace(&base, &sid, "review me").await;
    let handles = client_handles(&sid, &tid);
    let answer = client.evaluate(&handles, &v2_body(&nonce())).await.unwrap();
    for key in [
        "decision",
        "risk_level",
        "score",
        "reasons",
        "decision_id",
        "ttl_seconds",
    ] {
        assert!(answer.get(key).is_some(), "{key} missing: {answer}");
    }
    assert_eq!(answer["decision"], "review", "{answer}");
    let (_, listed) = admin_get(&format!("{base}/admin/reviews"), OPERATOR).await;
    assert_eq!(
        listed["reviews"].as_array().unwrap().len(),
        0,
        "evaluate holds nothing"
    );
    gh.stop().await.unwrap();
}

fn client_handles(sid: &str, tid: &str) -> gatehouse::risk::client::RiskHandles {
    gatehouse::risk::client::RiskHandles {
        sid: sid.to_owned(),
        tid: Some(tid.to_owned()),
        ..Default::default()
    }
    .with_new_traceparent()
}

fn cart_mandate(id: &str) -> Value {
    json!({"contents": {
        "id": id, "user_cart_confirmation_required": false, "merchant_name": "Example API",
        "cart_expiry": "2099-01-01T00:00:00Z",
        "payment_request": {
            "method_data": [{"supported_methods": "x402", "data": {"payTo": PAY_TO}}],
            "details": {"id": "d-1", "display_items": [], "total": {"label": "total", "amount": {"currency": "USD", "value": "0.01"}}}}}})
}

/// A single-use AP2 mandate id is claimed in the shared store: a second payment under it is
/// refused even on another replica, while the same payment (verify again, settle) is not a
/// replay. Two Gatehouse instances on one PostgreSQL database.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mandate_replay_is_refused_across_two_instances() {
    let upstream = test_upstream::start(Duration::ZERO).await;
    let db = TestDb::postgres().await;
    let rules = rules_dir();
    let a = start(risk_config(&db.url, &upstream.url, rules.path())).await;
    let b = start(risk_config(&db.url, &upstream.url, rules.path())).await;
    let (base_a, base_b) = (format!("http://{}", a.addr), format!("http://{}", b.addr));
    let sid = session(&base_a, PAYER).await;
    let mandate = cart_mandate(&format!("cart-{}", uuid::Uuid::new_v4()));

    let first = with_extension(v2_body(&nonce()), json!({"sid": sid, "ap2": mandate}));
    let (_, answer, _) = verify_with(&base_a, &first, &[]).await;
    assert_eq!(answer["isValid"], true, "{answer}");
    let (_, answer, _) = verify_with(&base_b, &first, &[]).await;
    assert_eq!(
        answer["isValid"], true,
        "the same payment again is no replay: {answer}"
    );

    let second = with_extension(v2_body(&nonce()), json!({"sid": sid, "ap2": mandate}));
    let (_, answer, _) = verify_with(&base_b, &second, &[]).await;
    assert_eq!(answer["invalidReason"], "risk_denied", "{answer}");
    assert!(
        answer["invalidMessage"]
            .as_str()
            .unwrap()
            .contains("already used"),
        "{answer}"
    );

    // An expired mandate, and one whose total (0.009 USDC = 9000 atomic at 6 decimals) is below
    // the payment's 10000, are refused.
    let mut expired = cart_mandate("cart-expired");
    expired["contents"]["cart_expiry"] = json!("2001-01-01T00:00:00Z");
    let late = with_extension(v2_body(&nonce()), json!({"sid": sid, "ap2": expired}));
    let (_, answer, _) = verify_with(&base_a, &late, &[]).await;
    assert_eq!(answer["invalidReason"], "risk_denied", "{answer}");
    assert!(
        answer["invalidMessage"]
            .as_str()
            .unwrap()
            .contains("expired"),
        "{answer}"
    );

    let mut small = cart_mandate("cart-small");
    small["contents"]["payment_request"]["details"]["total"]["amount"]["value"] = json!("0.009");
    let over = with_extension(v2_body(&nonce()), json!({"sid": sid, "ap2": small}));
    let (_, answer, _) = verify_with(&base_a, &over, &[]).await;
    assert_eq!(answer["invalidReason"], "risk_denied", "{answer}");
    assert!(
        answer["invalidMessage"]
            .as_str()
            .unwrap()
            .contains("exceeds"),
        "{answer}"
    );

    let (_, settled, _) = post_json(&format!("{base_a}/settle"), &first).await;
    assert_eq!(settled["success"], true, "{settled}");
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

/// Without rules and without risk inputs the response is exactly a plain facilitator's (no
/// risk extension, no headers) while the evidence still records the context.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_rules_no_inputs_changes_nothing_on_the_wire() {
    let upstream = test_upstream::start(Duration::ZERO).await;
    let db = TestDb::sqlite();
    let empty = tempfile::tempdir().unwrap();
    let gh = start(risk_config(&db.url, &upstream.url, empty.path())).await;
    let base = format!("http://{}", gh.addr);
    let (_, answer, headers) = verify_with(&base, &v2_body(&nonce()), &[]).await;
    assert_eq!(answer["isValid"], true, "{answer}");
    assert!(
        answer
            .get("extensions")
            .is_none_or(|e| e.get("gatehouse-risk").is_none())
    );
    assert!(headers.get("x-risk-decision").is_none());
    let store = connect(&db.url).await.unwrap();
    let records = store.evidence_after(0, 10).await.unwrap();
    let body: Value = serde_json::from_str(&records[0].body).unwrap();
    assert_eq!(body["risk"]["assessment"], Value::Null);
    assert_eq!(body["risk"]["context"]["payment"]["payer"], PAYER);
    let risk_verdict = body["verdicts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["step"] == "risk")
        .unwrap()
        .clone();
    assert!(
        risk_verdict["checked"][0]
            .as_str()
            .unwrap()
            .contains("no risk rules configured")
    );
    gh.stop().await.unwrap();
}

/// The TypeScript buyer SDK (`sdk/ts`, around the published `@x402/fetch`) against this
/// Gatehouse: proven session, trace upload, and a payment whose payload carries the
/// `gatehouse-risk` extension (`facilitator-compat-tests/risk-sdk.mjs` checks each step).
/// Needs the harness's node_modules (`facilitator-compat-tests/install.sh`, run by
/// `scripts/test.sh` before `cargo test`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn typescript_sdk_pays_with_the_risk_extension() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let harness = root.join("facilitator-compat-tests");
    assert!(
        harness.join("node_modules/@x402/fetch").exists(),
        "run facilitator-compat-tests/install.sh first (scripts/test.sh does)"
    );
    let upstream = test_upstream::start(Duration::ZERO).await;
    let db = TestDb::sqlite();
    let rules = rules_dir();
    let gh = start(risk_config(&db.url, &upstream.url, rules.path())).await;
    let url = format!("http://{}", gh.addr);
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("node")
            .arg("risk-sdk.mjs")
            .current_dir(&harness)
            .env("GATEHOUSE_URL", url)
            .env("NETWORK", common::TEST_NETWORK)
            .env("ASSET", common::ASSET)
            .env("PAY_TO", PAY_TO)
            .env("AMOUNT", "10000")
            .output()
    })
    .await
    .unwrap()
    .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "risk-sdk.mjs failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("RESULT {\"passed\":8,\"failed\":[]}"),
        "{stdout}"
    );
    assert_eq!(upstream.recorded.verify_calls.load(Ordering::SeqCst), 1);
    gh.stop().await.unwrap();
}

/// A budget the buyer declares on its risk session caps its agents at the facilitator: the
/// policy reserves each payment against it atomically (issue 5's per-session scope), and a
/// payment in an asset the buyer budgeted nothing in is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_session_budget_caps_the_buyers_payments() {
    let upstream = test_upstream::start(Duration::ZERO).await;
    let db = TestDb::sqlite();
    let empty = tempfile::tempdir().unwrap();
    let gh = start(risk_config(&db.url, &upstream.url, empty.path())).await;
    let base = format!("http://{}", gh.addr);
    let client = RiskClient::new(&base).unwrap();
    let mut declared = NewSession::new("did:example:agent-1", PAYER);
    declared.budget = Some(json!({"amount": "15000", "asset": ASSET}));
    let sid = client.create_session(&declared).await.expect("session").sid;

    // The fixture pays 10000: the first fits the 15000 budget, the second would exceed it.
    let (_, first, _) = verify_with(&base, &v2_body(&nonce()), &[("X-RISK-SESSION", &sid)]).await;
    assert_eq!(first["isValid"], true, "{first}");
    let (_, second, _) = verify_with(&base, &v2_body(&nonce()), &[("X-RISK-SESSION", &sid)]).await;
    assert_eq!(second["isValid"], false, "{second}");
    let reason = second["invalidReason"].as_str().unwrap_or("");
    assert!(reason.starts_with("policy_"), "{second}");
    // Without the session the same payment is not held to the buyer's budget.
    let (_, unscoped, _) = verify_with(&base, &v2_body(&nonce()), &[]).await;
    assert_eq!(unscoped["isValid"], true, "{unscoped}");

    let mut other = NewSession::new("did:example:agent-2", PAYER);
    other.budget =
        Some(json!({"amount": "1000000", "asset": "0x0000000000000000000000000000000000000001"}));
    let other_sid = client.create_session(&other).await.expect("session").sid;
    let (_, wrong_asset, _) =
        verify_with(&base, &v2_body(&nonce()), &[("X-RISK-SESSION", &other_sid)]).await;
    assert_eq!(wrong_asset["isValid"], false, "{wrong_asset}");
    gh.stop().await.unwrap();
}

/// Two context facts filled on the payment path: the endpoint's usual amount range, learned
/// from approved payments (per token, only from the third one on), and whether a mandate's
/// spec matches what the seller describes. Driven through `/verify` with the shipped
/// `risk-rules/amount.yaml` and a spec rule.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn usual_amounts_and_spec_creep_are_scored_on_the_payment_path() {
    let upstream = test_upstream::start(Duration::ZERO).await;
    let db = TestDb::sqlite();
    let rules = tempfile::tempdir().expect("tempdir");
    let pack = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("risk-rules/amount.yaml");
    std::fs::copy(pack, rules.path().join("amount.yaml")).expect("copy the shipped amount rules");
    std::fs::write(
        rules.path().join("spec.yaml"),
        r#"
- id: test-spec-creep
  description: the mandate approved something else than the seller describes
  condition: "mandate != null && mandate.spec_matches != null && !mandate.spec_matches"
  action: deny
"#,
    )
    .expect("write rules");
    let paying = |amount: &str| {
        let mut body = v2_body(&nonce());
        body["paymentRequirements"]["amount"] = json!(amount);
        body["paymentPayload"]["accepted"]["amount"] = json!(amount);
        body["paymentPayload"]["payload"]["authorization"]["value"] = json!(amount);
        body
    };

    // Payments the risk step allowed but a later step refused (here: no upstream answers) never
    // enter the history, so these three teach no usual range either.
    let unreachable = start(risk_config(&db.url, "http://127.0.0.1:9", rules.path())).await;
    for _ in 0..3 {
        let (_, answer, _) = verify_with(
            &format!("http://{}", unreachable.addr),
            &paying("10000"),
            &[],
        )
        .await;
        assert_eq!(answer["isValid"], false, "{answer}");
        let message = answer["invalidMessage"].as_str().unwrap_or_default();
        assert!(message.contains("upstream"), "{answer}");
    }
    unreachable.stop().await.unwrap();

    let gh = start(risk_config(&db.url, &upstream.url, rules.path())).await;
    let base = format!("http://{}", gh.addr);
    // Two approved payments teach no range yet: a hundredfold third one is not scored on it.
    for _ in 0..2 {
        let (_, answer, _) = verify_with(&base, &paying("10000"), &[]).await;
        assert_eq!(answer["isValid"], true, "{answer}");
    }
    let (_, early, _) = verify_with(&base, &paying("1000000"), &[]).await;
    assert_eq!(early["isValid"], true, "{early}");
    // Now three approved payments (10000, 10000, 1000000): usual range 10000..1000000.
    let (_, inside, _) = verify_with(&base, &paying("1000000"), &[]).await;
    assert_eq!(inside["isValid"], true, "{inside}");
    // A decimal-place error against that range: 100 × the usual maximum.
    let (_, answer, _) = verify_with(&base, &paying("100000000"), &[]).await;
    assert_eq!(answer["invalidReason"], "risk_denied", "{answer}");
    let message = answer["invalidMessage"].as_str().unwrap_or_default();
    assert!(message.contains("ten times"), "{message}");
    assert!(message.contains("power of ten"), "{message}");

    // Spec creep: the seller describes the resource as "premium"; a mandate for "premium market
    // data" matches on one word of three and is refused, one for "premium data" is not.
    let sid = session(&base, PAYER).await;
    let mut creep = cart_mandate(&format!("cart-{}", uuid::Uuid::new_v4()));
    creep["contents"]["payment_request"]["details"]["display_items"] =
        json!([{"label": "premium market data", "amount": {"currency": "USD", "value": "0.01"}}]);
    let body = with_extension(paying("10000"), json!({"sid": sid, "ap2": creep}));
    let (_, answer, _) = verify_with(&base, &body, &[]).await;
    assert_eq!(answer["invalidReason"], "risk_denied", "{answer}");
    assert!(
        answer["invalidMessage"]
            .as_str()
            .unwrap_or_default()
            .contains("something else"),
        "{answer}"
    );
    let mut same = cart_mandate(&format!("cart-{}", uuid::Uuid::new_v4()));
    same["contents"]["payment_request"]["details"]["display_items"] =
        json!([{"label": "premium data", "amount": {"currency": "USD", "value": "0.01"}}]);
    let body = with_extension(paying("10000"), json!({"sid": sid, "ap2": same}));
    let (_, answer, _) = verify_with(&base, &body, &[]).await;
    assert_eq!(answer["isValid"], true, "{answer}");
    gh.stop().await.unwrap();
}
