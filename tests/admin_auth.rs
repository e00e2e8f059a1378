//! The admin API's door, for every admin operation in the OpenAPI document (so routes other
//! areas add are covered as soon as they are documented): 401 without or with an invalid
//! token, whatever the method; 403 for a token whose scope the operation's
//! `x-gatehouse-scope` does not admit (`operator`: auditors and sellers; `reader`: sellers;
//! `payee`: a seller of another payee, on routes naming a payment or a dispute).

mod common;

use common::admin::*;
use common::test_upstream;
use common::*;
use serde_json::{Value, json};

/// An operation is admin-scoped when it lives under `/admin` or names the admin token.
fn is_admin(path: &str, op: &Value) -> bool {
    path.starts_with("/admin")
        || op["security"]
            .as_array()
            .is_some_and(|s| s.iter().any(|r| r.get("adminToken").is_some()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_admin_operation_enforces_its_token_and_scope() {
    let db = TestDb::sqlite();
    let upstream = test_upstream::start(std::time::Duration::ZERO).await;
    let gh = start(with_admin_tokens(test_config(&db.url, &upstream.url))).await;
    let base = format!("http://{}", gh.addr);

    // Real objects, so a payee check has something to refuse.
    let body = v2_body(&nonce());
    let (status, answer, _) = post_json(&format!("{base}/settle"), &body).await;
    assert_eq!(status, 200, "{answer}");
    let (_, page) = admin_get(&format!("{base}/admin/payments"), OPERATOR).await;
    let fp = page["payments"][0]["fingerprint"]
        .as_str()
        .expect("a payment")
        .to_owned();
    let (status, dispute) = admin_post(
        &format!("{base}/admin/payments/{fp}/disputes"),
        SELLER,
        &json!({"reason": "for the scope test"}),
    )
    .await;
    assert_eq!(status, 201, "{dispute}");
    let dispute_id = dispute["id"].as_str().expect("id").to_owned();

    let (status, doc) = admin_call(
        reqwest::Method::GET,
        &format!("{base}/openapi.json"),
        None,
        None,
    )
    .await;
    assert_eq!(status, 200);
    let paths = doc["paths"].as_object().expect("paths");
    let mut checked = 0;
    for (path, item) in paths {
        for (m, op) in item.as_object().expect("path item") {
            if !is_admin(path, op) {
                continue;
            }
            let method: reqwest::Method = m.to_uppercase().parse().expect("method");
            let (concrete, names_object) = concrete_path(path, &fp, &dispute_id);
            let url = format!("{base}{concrete}");
            let body = (method != reqwest::Method::GET).then(|| json!({}));
            for token in [None, Some("not-a-token")] {
                let (status, answer) = admin_call(method.clone(), &url, token, body.as_ref()).await;
                assert_eq!(status, 401, "{m} {path} with {token:?}: {answer}");
                assert_eq!(answer["error"]["code"], "unauthorized");
            }
            let scope = op["x-gatehouse-scope"]
                .as_str()
                .unwrap_or_else(|| panic!("{m} {path} declares no x-gatehouse-scope"));
            let refused: Vec<&str> = match scope {
                "operator" => vec![AUDITOR, SELLER, OTHER_SELLER],
                "reader" => vec![SELLER, OTHER_SELLER],
                "payee" if names_object => vec![OTHER_SELLER],
                "payee" => vec![],
                other => panic!("{m} {path}: unknown x-gatehouse-scope `{other}`"),
            };
            for token in refused {
                let (status, answer) =
                    admin_call(method.clone(), &url, Some(token), body.as_ref()).await;
                assert_eq!(status, 403, "{m} {path} ({scope}) with {token}: {answer}");
                assert_eq!(answer["error"]["code"], "forbidden");
            }
            // Reads the scope admits are not refused (mutations are not replayed here).
            if method == reqwest::Method::GET {
                let admitted = match scope {
                    "operator" => OPERATOR,
                    "reader" => AUDITOR,
                    _ => SELLER,
                };
                let (status, answer) = admin_call(method.clone(), &url, Some(admitted), None).await;
                assert!(
                    status != 401 && status != 403,
                    "{m} {path} ({scope}) refused its own scope: {status} {answer}"
                );
            }
            checked += 1;
        }
    }
    assert!(
        checked >= 14,
        "the document lists the admin operations ({checked})"
    );

    // Even a route that does not exist answers 401 to a stranger, so nothing is enumerable.
    let (status, _) = admin_call(
        reqwest::Method::GET,
        &format!("{base}/admin/nope"),
        None,
        None,
    )
    .await;
    assert_eq!(status, 401);
    let (status, _) = admin_get(&format!("{base}/admin/nope"), OPERATOR).await;
    assert_eq!(status, 404);

    let (status, me) = admin_get(&format!("{base}/admin/whoami"), SELLER).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["name"], "shop");
    assert_eq!(me["scopes"][0], format!("seller:{PAY_TO}"));
    gh.stop().await.expect("stops");
}

/// Fills a path template: `{fingerprint}` and a dispute's `{id}` get real values (so payee
/// checks run), `{seq}` the first record, anything else a placeholder. Also says whether the
/// path names one payment or dispute.
fn concrete_path(template: &str, fingerprint: &str, dispute_id: &str) -> (String, bool) {
    let mut names_object = false;
    let mut out = String::new();
    let segments: Vec<&str> = template.split('/').collect();
    for (i, segment) in segments.iter().enumerate() {
        if i > 0 {
            out.push('/');
        }
        let previous = i.checked_sub(1).and_then(|j| segments.get(j)).copied();
        let value = match (*segment, previous) {
            ("{fingerprint}", _) => {
                names_object = true;
                fingerprint
            }
            ("{id}", Some("disputes")) => {
                names_object = true;
                dispute_id
            }
            ("{seq}", _) => {
                names_object = true;
                "1"
            }
            (s, _) if s.starts_with('{') => "x",
            (s, _) => s,
        };
        out.push_str(value);
    }
    (out, names_object)
}
