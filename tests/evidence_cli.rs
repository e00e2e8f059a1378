//! The Done-when of issue 7: a payment end to end, a dispute opened for the buyer (seller
//! token) and resolved by an operator, the bundle exported (API and `gatehouse evidence
//! export`) and verified offline (`gatehouse evidence verify BUNDLE`), then one byte flipped in
//! the database and `gatehouse evidence verify --db` naming the broken record.

mod common;

use std::process::Command;

use common::admin::*;
use common::*;
use serde_json::{Value, json};

fn gatehouse(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(args)
        // No ambient configuration: everything the command needs is on its command line.
        .env_remove("GATEHOUSE_CONFIG")
        .env_remove("GATEHOUSE_DATABASE_URL")
        .current_dir(env!("CARGO_TARGET_TMPDIR"))
        .output()
        .expect("gatehouse runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dispute_bundle_verify_and_tamper_end_to_end() {
    let db = TestDb::sqlite();
    let dir = tempfile::tempdir().expect("dir");
    let upstream = test_upstream::start(std::time::Duration::ZERO).await;
    let config = with_admin_tokens(test_config(&db.url, &upstream.url));
    // No signing_key_file: the key is generated next to the SQLite file, where the CLI finds it.
    let gh = start(config).await;
    let base = format!("http://{}", gh.addr);

    let body = v2_body(&nonce());
    let (status, answer, _) = post_json(&format!("{base}/verify"), &body).await;
    assert_eq!(
        (status, answer["isValid"].clone()),
        (200, json!(true)),
        "{answer}"
    );
    let (status, answer, _) = post_json(&format!("{base}/settle"), &body).await;
    assert_eq!(
        (status, answer["success"].clone()),
        (200, json!(true)),
        "{answer}"
    );
    let (_, page) = admin_get(&format!("{base}/admin/payments?payer={PAYER}"), SELLER).await;
    let fp = page["payments"][0]["fingerprint"]
        .as_str()
        .expect("fp")
        .to_owned();

    let (status, dispute) = admin_post(
        &format!("{base}/admin/payments/{fp}/disputes"),
        SELLER,
        &json!({"reason": "paid but got a 500", "on_behalf_of": "buyer"}),
    )
    .await;
    assert_eq!(status, 201, "{dispute}");
    let id = dispute["id"].as_str().expect("id");
    let (status, resolved) = admin_post(
        &format!("{base}/admin/disputes/{id}/resolve"),
        OPERATOR,
        &json!({"outcome": "refund_owed", "note": "upstream answered 500"}),
    )
    .await;
    assert_eq!(status, 200, "{resolved}");

    // Export through the API and the CLI; both verify offline.
    let (status, api_bundle) =
        admin_get(&format!("{base}/admin/payments/{fp}/bundle"), OPERATOR).await;
    assert_eq!(status, 200, "{api_bundle}");
    let api_file = dir.path().join("api-bundle.json");
    std::fs::write(&api_file, api_bundle.to_string()).expect("write");
    let cli_file = dir.path().join("cli-bundle.json");
    let (code, _, err) = gatehouse(&[
        "evidence",
        "export",
        &fp,
        "--out",
        cli_file.to_str().expect("utf-8"),
        "--db",
        &db.url,
    ]);
    assert_eq!(code, 0, "{err}");
    let cli_bundle: Value =
        serde_json::from_str(&std::fs::read_to_string(&cli_file).expect("read")).expect("json");
    assert_eq!(cli_bundle["records"], api_bundle["records"]);
    assert_eq!(
        cli_bundle["signature"]["kid"], api_bundle["signature"]["kid"],
        "the CLI signs with the server's key"
    );
    let (_, keys_doc) = admin_call(
        reqwest::Method::GET,
        &format!("{base}/.well-known/gatehouse-keys"),
        None,
        None,
    )
    .await;
    let public = keys_doc["keys"][0]["public_key_hex"].as_str().expect("key");
    for file in [&api_file, &cli_file] {
        let (code, out, err) = gatehouse(&[
            "evidence",
            "verify",
            file.to_str().expect("utf-8"),
            "--key",
            public,
        ]);
        assert_eq!(code, 0, "{out}{err}");
        assert!(
            out.contains("Bundle OK") && out.contains("5 records verified"),
            "{out}"
        );
    }
    // An edited bundle fails, with the reason.
    let mut edited = api_bundle.clone();
    edited["records"][4]["decision"] = json!("rejected");
    let edited_file = dir.path().join("edited.json");
    std::fs::write(&edited_file, edited.to_string()).expect("write");
    let (code, out, _) = gatehouse(&[
        "evidence",
        "verify",
        edited_file.to_str().expect("utf-8"),
        "--json",
    ]);
    assert_eq!(code, 1, "{out}");
    let verdict: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(verdict["ok"], false);

    // The whole chain verifies, and the other commands read it.
    let (code, out, err) = gatehouse(&["evidence", "verify", "--db", &db.url]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("Evidence chain OK: 5 records"), "{out}");
    let (code, out, err) = gatehouse(&[
        "evidence", "search", "--db", &db.url, "--payer", PAYER, "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let found: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(
        found["records"].as_array().map(Vec::len),
        Some(5),
        "{found}"
    );
    let (code, out, _) = gatehouse(&[
        "evidence",
        "search",
        "--db",
        &db.url,
        "--kind",
        "dispute.resolved",
    ]);
    assert_eq!(code, 0);
    assert!(out.contains("SEQ") && out.contains("refund_owed"), "{out}");
    let (code, out, _) = gatehouse(&["evidence", "show", "4", "--db", &db.url, "--json"]);
    assert_eq!(code, 0);
    let shown: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(shown["kind"], "dispute.opened");
    assert_eq!(shown["body"]["reason"], "paid but got a 500");
    let (code, _, _) = gatehouse(&["evidence", "show", "99", "--db", &db.url]);
    assert_eq!(code, 1);
    gh.stop().await.expect("stops");

    // Flip one byte of one record, as someone with database access could.
    db.drop_evidence_guards().await;
    let flipped = db
        .execute("UPDATE evidence SET body = replace(body, 'paid but got a 500', 'paid but got a 200') WHERE seq = 4")
        .await;
    assert_eq!(flipped, 1);
    let (code, out, err) = gatehouse(&["evidence", "verify", "--db", &db.url]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("BROKEN at seq 4"), "{out}");
    assert!(out.contains("content does not match its hash"), "{out}");
    assert!(out.contains("dispute.opened"), "{out}");
    let (code, out, _) = gatehouse(&["evidence", "verify", "--db", &db.url, "--json"]);
    assert_eq!(code, 1);
    let verdict: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(verdict["broken"]["seq"], 4);
    assert_eq!(verdict["broken"]["reason"], "HashMismatch");
    // An export made now carries the edited record, and fails offline verification.
    let (code, out, _) = gatehouse(&["evidence", "export", &fp, "--db", &db.url]);
    assert_eq!(code, 0);
    let tampered_file = dir.path().join("tampered.json");
    std::fs::write(&tampered_file, out).expect("write");
    let (code, out, _) = gatehouse(&["evidence", "verify", tampered_file.to_str().expect("utf-8")]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("record seq 4"), "{out}");

    // Bad usage is refused with its own code.
    let (code, _, err) = gatehouse(&["evidence", "search", "--db", &db.url, "--limit", "0"]);
    assert_eq!(code, 2, "{err}");
}
