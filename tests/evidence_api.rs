//! Evidence over the admin API: search with pagination, one payment's story, seller scoping,
//! disputes from open to resolution, signed bundles checked offline, and retention with
//! checkpoints (the database itself allowing only the tombstone update).

mod common;

use common::admin::*;
use common::store as store_support;
use common::*;
use gatehouse::evidence::bundle;
use serde_json::{Value, json};

/// Drives one payment through /verify and /settle; returns its fingerprint.
async fn pay(base: &str) -> String {
    let body = v2_body(&nonce());
    let (status, answer, _) = post_json(&format!("{base}/verify"), &body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["isValid"], true, "{answer}");
    let (status, answer, _) = post_json(&format!("{base}/settle"), &body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["success"], true, "{answer}");
    let (status, page) = admin_get(&format!("{base}/admin/payments?limit=500"), OPERATOR).await;
    assert_eq!(status, 200, "{page}");
    page["payments"]
        .as_array()
        .and_then(|p| p.last())
        .and_then(|p| p["fingerprint"].as_str())
        .expect("the payment is listed")
        .to_owned()
}

fn evidence_config(
    db: &TestDb,
    upstream: &str,
    key_dir: &std::path::Path,
) -> gatehouse::config::Config {
    let mut config = with_admin_tokens(test_config(&db.url, upstream));
    config.evidence.signing_key_file = Some(key_dir.join("evidence.key"));
    config
}

async fn payments_are_searchable_scoped_and_tell_their_story(db: TestDb) {
    let keys = tempfile::tempdir().expect("dir");
    let upstream = test_upstream::start(std::time::Duration::ZERO).await;
    let gh = start(evidence_config(&db, &upstream.url, keys.path())).await;
    let base = format!("http://{}", gh.addr);
    let first = pay(&base).await;
    let second = pay(&base).await;
    assert_ne!(first, second);

    // One payment's whole story.
    let (status, story) = admin_get(&format!("{base}/admin/payments/{first}"), AUDITOR).await;
    assert_eq!(status, 200, "{story}");
    let kinds: Vec<&str> = story["records"]
        .as_array()
        .expect("records")
        .iter()
        .filter_map(|r| r["kind"].as_str())
        .collect();
    assert_eq!(kinds, ["verify", "settle_forward", "settle"]);
    assert_eq!(story["payer"], PAYER);
    assert_eq!(story["payee"], PAY_TO);
    assert_eq!(story["endpoint"], "api.example.com/premium");
    assert_eq!(story["settlement"]["state"], "settled");
    assert!(
        story["tx"].as_str().is_some_and(|t| t.starts_with("0x")),
        "{story}"
    );
    assert_eq!(story["chain"]["ok"], true, "{story}");
    assert!(!story["verdicts"].as_array().expect("verdicts").is_empty());
    assert!(
        !story["upstream_answers"]
            .as_array()
            .expect("answers")
            .is_empty()
    );

    // Search by tx finds the settle record; keyset pagination walks every record once.
    let tx = story["tx"].as_str().expect("tx");
    let (_, by_tx) = admin_get(&format!("{base}/admin/evidence?tx={tx}"), OPERATOR).await;
    assert_eq!(
        by_tx["records"][0]["fingerprint"],
        first.as_str(),
        "{by_tx}"
    );
    let mut seen = Vec::new();
    let mut after = 0;
    loop {
        let (status, page) = admin_get(
            &format!("{base}/admin/evidence?payer={PAYER}&limit=2&after={after}"),
            OPERATOR,
        )
        .await;
        assert_eq!(status, 200, "{page}");
        for r in page["records"].as_array().expect("records") {
            seen.push(r["seq"].as_i64().expect("seq"));
        }
        match page["next"].as_i64() {
            Some(next) => after = next,
            None => break,
        }
    }
    assert_eq!(seen, (1..=6).collect::<Vec<_>>());
    let (_, denied) = admin_get(
        &format!("{base}/admin/evidence?decision=deny&kind=settle"),
        OPERATOR,
    )
    .await;
    assert_eq!(denied["records"], json!([]));
    let (status, bad) = admin_get(&format!("{base}/admin/evidence?limit=0"), OPERATOR).await;
    assert_eq!(status, 400, "{bad}");
    assert_eq!(bad["error"]["field"], "limit");
    let (status, bad) = admin_get(&format!("{base}/admin/evidence?colour=red"), OPERATOR).await;
    assert_eq!(status, 400, "{bad}");

    // A seller sees its own payments; another seller sees nothing and is refused the story.
    let (_, mine) = admin_get(&format!("{base}/admin/payments"), SELLER).await;
    assert_eq!(mine["payments"].as_array().map(Vec::len), Some(2), "{mine}");
    let (_, theirs) = admin_get(&format!("{base}/admin/payments"), OTHER_SELLER).await;
    assert_eq!(theirs["payments"], json!([]));
    let (_, theirs) = admin_get(&format!("{base}/admin/evidence"), OTHER_SELLER).await;
    assert_eq!(theirs["records"], json!([]));
    let (status, _) = admin_get(&format!("{base}/admin/payments/{first}"), OTHER_SELLER).await;
    assert_eq!(status, 403);
    let (status, _) = admin_get(
        &format!("{base}/admin/payments/{first}/bundle"),
        OTHER_SELLER,
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = admin_get(&format!("{base}/admin/evidence/1"), OTHER_SELLER).await;
    assert_eq!(status, 403);
    let (status, _) = admin_get(&format!("{base}/admin/payments/nope"), OPERATOR).await;
    assert_eq!(status, 404);
    gh.stop().await.expect("stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn disputes_run_from_open_to_resolved_and_bundles_prove_them() {
    let db = TestDb::sqlite();
    let keys = tempfile::tempdir().expect("dir");
    let upstream = test_upstream::start(std::time::Duration::ZERO).await;
    let gh = start(evidence_config(&db, &upstream.url, keys.path())).await;
    let base = format!("http://{}", gh.addr);
    let fp = pay(&base).await;

    // The buyer's complaint, through the seller's token.
    let (status, dispute) = admin_post(
        &format!("{base}/admin/payments/{fp}/disputes"),
        SELLER,
        &json!({"reason": "the API returned an empty body", "on_behalf_of": "buyer"}),
    )
    .await;
    assert_eq!(status, 201, "{dispute}");
    let id = dispute["id"].as_str().expect("id").to_owned();
    assert_eq!(dispute["state"], "open");
    assert_eq!(dispute["payer"], PAYER);
    let (status, _) = admin_post(
        &format!("{base}/admin/payments/{fp}/disputes"),
        OTHER_SELLER,
        &json!({"reason": "not mine"}),
    )
    .await;
    assert_eq!(status, 403);
    let (status, bad) = admin_post(
        &format!("{base}/admin/payments/{fp}/disputes"),
        SELLER,
        &json!({"reason": "  "}),
    )
    .await;
    assert_eq!(
        (status, bad["error"]["field"].clone()),
        (400, json!("reason"))
    );

    let file = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
    let file_b64 = base64_encode(file);
    let (status, statement) = admin_post(
        &format!("{base}/admin/disputes/{id}/statements"),
        SELLER,
        &json!({"text": "upstream log attached", "files": [{"name": "log.txt", "mime": "text/plain", "content_base64": file_b64}]}),
    )
    .await;
    assert_eq!(status, 201, "{statement}");
    let sha = statement["files"][0]["sha256"]
        .as_str()
        .expect("sha")
        .to_owned();
    assert_eq!(sha, hex_sha256(file));
    let (status, got) =
        admin_get(&format!("{base}/admin/disputes/{id}/files/{sha}"), AUDITOR).await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["content_base64"], file_b64);
    let (status, bad) = admin_post(
        &format!("{base}/admin/disputes/{id}/statements"),
        SELLER,
        &json!({"text": "x", "files": [{"name": "a", "mime": "text/plain", "content_base64": "***"}]}),
    )
    .await;
    assert_eq!(
        (status, bad["error"]["field"].clone()),
        (400, json!("files[0].content_base64"))
    );

    // Only an operator resolves.
    for token in [SELLER, AUDITOR] {
        let (status, _) = admin_post(
            &format!("{base}/admin/disputes/{id}/resolve"),
            token,
            &json!({"outcome": "refund_owed"}),
        )
        .await;
        assert_eq!(status, 403, "{token}");
    }
    let (status, resolved) = admin_post(
        &format!("{base}/admin/disputes/{id}/resolve"),
        OPERATOR,
        &json!({"outcome": "refund_owed", "note": "empty body confirmed in upstream answer"}),
    )
    .await;
    assert_eq!(status, 200, "{resolved}");
    assert_eq!(resolved["outcome"], "refund_owed");
    let (status, _) = admin_post(
        &format!("{base}/admin/disputes/{id}/resolve"),
        OPERATOR,
        &json!({"outcome": "rejected"}),
    )
    .await;
    assert_eq!(status, 409);
    let (status, bad) = admin_post(
        &format!("{base}/admin/disputes/{id}/resolve"),
        OPERATOR,
        &json!({"outcome": "maybe"}),
    )
    .await;
    assert_eq!(status, 400, "{bad}");

    // Side by side, and fed to risk.
    let (status, view) = admin_get(&format!("{base}/admin/disputes/{id}"), SELLER).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["dispute"]["state"], "resolved");
    assert_eq!(view["statements"].as_array().map(Vec::len), Some(1));
    let kinds: Vec<&str> = view["payment"]["records"]
        .as_array()
        .expect("records")
        .iter()
        .filter_map(|r| r["kind"].as_str())
        .collect();
    assert_eq!(
        kinds,
        [
            "verify",
            "settle_forward",
            "settle",
            "dispute.opened",
            "dispute.statement",
            "dispute.resolved"
        ]
    );
    let (_, listed) = admin_get(&format!("{base}/admin/disputes?state=resolved"), SELLER).await;
    assert_eq!(
        listed["disputes"].as_array().map(Vec::len),
        Some(1),
        "{listed}"
    );
    let (_, listed) = admin_get(&format!("{base}/admin/disputes"), OTHER_SELLER).await;
    assert_eq!(listed["disputes"], json!([]));
    let (_, by_kind) = admin_get(
        &format!("{base}/admin/evidence?kind=dispute.resolved&payee={PAY_TO}"),
        AUDITOR,
    )
    .await;
    assert_eq!(
        by_kind["records"][0]["decision"], "refund_owed",
        "{by_kind}"
    );
    let store = gatehouse::store::connect(&db.url).await.expect("store");
    assert_eq!(
        gatehouse::evidence::dispute::upheld_disputes_for_payer(store.as_ref(), PAYER)
            .await
            .expect("count"),
        1
    );
    assert_eq!(
        gatehouse::evidence::dispute::upheld_disputes_for_payer(store.as_ref(), PAY_TO)
            .await
            .expect("count"),
        0
    );

    // The bundle verifies offline against the published key, and any edit breaks it.
    let (status, keys_doc) = admin_call(
        reqwest::Method::GET,
        &format!("{base}/.well-known/gatehouse-keys"),
        None,
        None,
    )
    .await;
    assert_eq!(status, 200);
    let public = keys_doc["keys"][0]["public_key_hex"]
        .as_str()
        .expect("key")
        .to_owned();
    let (status, bundle_json) =
        admin_get(&format!("{base}/admin/payments/{fp}/bundle"), SELLER).await;
    assert_eq!(status, 200, "{bundle_json}");
    let report = bundle::verify(&bundle_json, Some(&public)).expect("bundle verifies");
    assert_eq!(report.records_verified, 6);
    assert_eq!(
        report.kid,
        keys_doc["keys"][0]["kid"].as_str().expect("kid")
    );
    assert!(bundle::verify(&bundle_json, Some(&"ab".repeat(32))).is_err());

    let mut edited = bundle_json.clone();
    edited["records"][3]["decision"] = json!("closed");
    assert!(matches!(
        bundle::verify(&edited, None),
        Err(bundle::BundleError::Signature(_))
    ));
    // Re-signed by someone else's key: the records still do not add up.
    let forged = resign(edited);
    match bundle::verify(&forged, None) {
        Err(bundle::BundleError::Record { seq, .. }) => {
            assert_eq!(Some(seq), bundle_json["records"][3]["seq"].as_i64())
        }
        other => panic!("forged record accepted: {other:?}"),
    }
    assert!(bundle::verify(&forged, Some(&public)).is_err());
    gh.stop().await.expect("stops");
}

/// Signs `bundle` with a fresh key, as a forger would.
fn resign(mut bundle: Value) -> Value {
    let signer = gatehouse::evidence::signing::EvidenceSigner::generate().expect("key");
    bundle.as_object_mut().expect("object").remove("signature");
    let text = gatehouse::evidence::canonical_json(&bundle);
    bundle["signature"] = json!({
        "alg": "EdDSA",
        "kid": signer.key_id(),
        "public_key": signer.public_key_hex(),
        "value": signer.sign_hex(text.as_bytes()),
    });
    bundle
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn hex_sha256(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

const DAY_MS: u64 = 86_400_000;

/// Retention prunes old bodies below a signed checkpoint; the chain still verifies, and the
/// database refuses every other edit.
async fn retention_keeps_the_chain_verifiable(db: TestDb) {
    let keys = tempfile::tempdir().expect("dir");
    let upstream = test_upstream::start(std::time::Duration::ZERO).await;
    let mut config = evidence_config(&db, &upstream.url, keys.path());
    config.evidence.retention.insert("verify".into(), 1);
    config.evidence.prune_interval_secs = 0;
    let now = 1_900_000_000_000;
    let (gh, clock) = start_at(config, now).await;
    let base = format!("http://{}", gh.addr);
    let old = pay(&base).await;
    clock.advance_ms(2 * DAY_MS);
    let fresh = pay(&base).await;

    let (status, report) =
        admin_post(&format!("{base}/admin/evidence/prune"), AUDITOR, &json!({})).await;
    assert_eq!(status, 403, "{report}");
    let (status, report) = admin_post(
        &format!("{base}/admin/evidence/prune"),
        OPERATOR,
        &json!({}),
    )
    .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["pruned"]["verify"], 1, "{report}");
    assert_eq!(report["new_checkpoint"], true);
    let checkpoint = report["checkpoint_seq"].as_i64().expect("checkpoint");
    assert_eq!(checkpoint, 6);

    let (_, story) = admin_get(&format!("{base}/admin/payments/{old}"), OPERATOR).await;
    assert_eq!(story["records"][0]["pruned"], true, "{story}");
    assert_eq!(story["records"][1]["pruned"], false);
    let (_, story) = admin_get(&format!("{base}/admin/payments/{fresh}"), OPERATOR).await;
    assert_eq!(
        story["records"][0]["pruned"], false,
        "the fresh verify is kept"
    );
    let (status, verdict) = admin_get(&format!("{base}/admin/evidence/verify"), AUDITOR).await;
    assert_eq!(status, 200);
    assert_eq!(verdict["ok"], true, "{verdict}");
    assert_eq!(verdict["pruned"], 1);
    assert_eq!(verdict["checkpoint"], checkpoint);
    // Pruned records are still found by the index.
    let (_, found) = admin_get(
        &format!("{base}/admin/evidence?fingerprint={old}&kind=verify"),
        OPERATOR,
    )
    .await;
    assert_eq!(found["records"][0]["pruned"], true, "{found}");
    // The old payment's bundle still verifies: the checkpoint vouches for the pruned record.
    let (_, old_bundle) = admin_get(&format!("{base}/admin/payments/{old}/bundle"), OPERATOR).await;
    let report = bundle::verify(&old_bundle, None).expect("verifies");
    assert_eq!((report.records_verified, report.records_pruned), (2, 1));

    // The database allows exactly the tombstone, below a checkpoint, and nothing else.
    let tomb = r#"{"$pruned":true}"#;
    let above = db
        .try_execute(&format!(
            "UPDATE evidence SET body = '{tomb}' WHERE seq = {}",
            checkpoint + 1
        ))
        .await;
    assert!(above.is_err(), "tombstone above the checkpoint: {above:?}");
    let other = db
        .try_execute("UPDATE evidence SET body = '{}' WHERE seq = 2")
        .await;
    assert!(other.is_err(), "non-tombstone edit: {other:?}");
    let hash = db
        .try_execute(&format!(
            "UPDATE evidence SET body = '{tomb}', hash = 'x' WHERE seq = 2"
        ))
        .await;
    assert!(hash.is_err(), "tombstone changing the hash: {hash:?}");
    assert!(
        db.try_execute("DELETE FROM evidence WHERE seq = 1")
            .await
            .is_err()
    );
    assert!(
        db.try_execute("DELETE FROM evidence_checkpoints")
            .await
            .is_err()
    );
    // A tombstone on a record the checkpoint covers is what pruning does; it is allowed.
    assert_eq!(
        db.execute(&format!(
            "UPDATE evidence SET body = '{tomb}' WHERE seq = 2"
        ))
        .await,
        1
    );
    let (_, verdict) = admin_get(&format!("{base}/admin/evidence/verify"), AUDITOR).await;
    assert_eq!(verdict["ok"], true, "{verdict}");
    gh.stop().await.expect("stops");
}

on_both_backends!(
    payments_are_searchable_scoped_and_tell_their_story,
    retention_keeps_the_chain_verifiable
);

/// A buyer opens a dispute without a token, by signing with the paying wallet.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn buyers_open_disputes_with_their_wallet_signature() {
    use alloy::signers::SignerSync as _;
    use gatehouse::evidence::dispute::buyer_message;

    let db = TestDb::sqlite();
    let keys = tempfile::tempdir().expect("dir");
    let upstream = test_upstream::start(std::time::Duration::ZERO).await;
    let now = 1_900_000_000_000u64;
    let (gh, _clock) = start_at(evidence_config(&db, &upstream.url, keys.path()), now).await;
    let base = format!("http://{}", gh.addr);

    let wallet = alloy::signers::local::PrivateKeySigner::random();
    let payer = wallet.address().to_string().to_lowercase();
    let mut body = v2_body(&nonce());
    body["paymentPayload"]["payload"]["authorization"]["from"] = json!(payer);
    let (status, answer, _) = post_json(&format!("{base}/settle"), &body).await;
    assert_eq!(
        (status, answer["success"].clone()),
        (200, json!(true)),
        "{answer}"
    );
    let (_, page) = admin_get(&format!("{base}/admin/payments?payer={payer}"), OPERATOR).await;
    let fp = page["payments"][0]["fingerprint"]
        .as_str()
        .expect("fp")
        .to_owned();

    let reason = "charged twice";
    let sign = |key: &alloy::signers::local::PrivateKeySigner, ts: u64| {
        let sig = key
            .sign_message_sync(buyer_message(&fp, reason, ts).as_bytes())
            .expect("sign");
        format!("0x{}", hex::encode(sig.as_bytes()))
    };
    let request = |signature: String, ts: u64| json!({"fingerprint": &fp, "reason": reason, "timestamp_ms": ts, "signature": signature});
    let url = format!("{base}/disputes");

    // Someone else's wallet, a stale signature, a signature over another reason: refused.
    let stranger = alloy::signers::local::PrivateKeySigner::random();
    let (status, bad, _) = post_json(&url, &request(sign(&stranger, now), now)).await;
    assert_eq!(
        (status, bad["error"]["field"].clone()),
        (400, json!("signature")),
        "{bad}"
    );
    let stale = now - 3_600_000;
    let (status, bad, _) = post_json(&url, &request(sign(&wallet, stale), stale)).await;
    assert_eq!(
        (status, bad["error"]["field"].clone()),
        (400, json!("timestamp_ms")),
        "{bad}"
    );
    let mut other_reason = request(sign(&wallet, now), now);
    other_reason["reason"] = json!("something else");
    let (status, _, _) = post_json(&url, &other_reason).await;
    assert_eq!(status, 400);

    let (status, dispute, _) = post_json(&url, &request(sign(&wallet, now), now)).await;
    assert_eq!(status, 201, "{dispute}");
    assert_eq!(dispute["opened_by"], format!("buyer:{payer}"));
    assert_eq!(dispute["on_behalf_of"], "buyer");
    let (status, _, _) = post_json(&url, &request(sign(&wallet, now + 1), now + 1)).await;
    assert_eq!(status, 409, "one open dispute per buyer and payment");
    let (_, story) = admin_get(&format!("{base}/admin/payments/{fp}"), SELLER).await;
    assert_eq!(story["disputes"][0]["dispute"]["reason"], reason, "{story}");
    gh.stop().await.expect("stops");
}

/// The search index catches up in the background: a payment's records are indexed without any
/// search asking for them (before, the first search after a busy spell indexed everything).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_search_index_catches_up_without_a_search() {
    let upstream = test_upstream::start(std::time::Duration::ZERO).await;
    let db = TestDb::sqlite();
    let gh = start(with_admin_tokens(test_config(&db.url, &upstream.url))).await;
    let base = format!("http://{}", gh.addr);
    let body = v2_body(&nonce());
    let (_, answer, _) = post_json(&format!("{base}/verify"), &body).await;
    assert_eq!(answer["isValid"], true, "{answer}");
    // The fingerprint as the store knows it, read from the chain (not through a search).
    let store = gatehouse::store::connect(&db.url).await.expect("store");
    let records = store.evidence_after(0, 100).await.expect("evidence");
    let fingerprint = records
        .iter()
        .find_map(|r| r.fingerprint.clone())
        .expect("the verify record names its payment");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        if store
            .payment_fields(&fingerprint)
            .await
            .expect("index read")
            .is_some()
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the payment was not indexed in the background"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    gh.stop().await.unwrap();
}
