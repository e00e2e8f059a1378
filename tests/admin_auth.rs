//! The admin API's door: every route under `/admin` in the OpenAPI document answers 401
//! without a valid token, whatever the method; a valid token is resolved to its scopes.

mod common;

use common::admin::*;
use common::test_upstream;
use common::*;

#[tokio::test]
async fn admin_routes_need_a_valid_token_and_openapi_lists_them() {
    let db = TestDb::sqlite();
    let upstream = test_upstream::start(std::time::Duration::ZERO).await;
    let gh = start(with_admin_tokens(test_config(&db.url, &upstream.url))).await;
    let base = format!("http://{}", gh.addr);

    let (status, doc) = admin_call(
        reqwest::Method::GET,
        &format!("{base}/openapi.json"),
        None,
        None,
    )
    .await;
    assert_eq!(status, 200);
    let paths = doc["paths"].as_object().expect("paths");
    let admin: Vec<(&String, Vec<&String>)> = paths
        .iter()
        .filter(|(p, _)| p.starts_with("/admin/"))
        .map(|(p, item)| (p, item.as_object().expect("path item").keys().collect()))
        .collect();
    assert!(!admin.is_empty(), "the document lists admin routes");
    for (path, methods) in admin {
        // Path templates get a placeholder value: authentication runs before routing matters.
        let concrete = path.replace('{', "x").replace('}', "");
        for m in methods {
            let method: reqwest::Method = m.to_uppercase().parse().expect("method");
            for token in [None, Some("not-a-token")] {
                let (status, body) =
                    admin_call(method.clone(), &format!("{base}{concrete}"), token, None).await;
                assert_eq!(status, 401, "{m} {path} with {token:?}: {body}");
                assert_eq!(body["error"]["code"], "unauthorized");
            }
        }
    }
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
