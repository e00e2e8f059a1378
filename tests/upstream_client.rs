//! The upstream client against a wiremock facilitator that produces each failure on demand
//! (every mock states how often it must be hit), plus a bare TCP server for the failures
//! wiremock cannot produce (a connection dropped mid-exchange, a chunked oversized body).
//!
//! Invariants covered: 2 (an upstream timeout, 5xx or lost connection on /settle is an
//! unknown outcome that keeps any tx hash; a connect failure is definitely not sent),
//! 5 (bodies forwarded byte for byte), 6 (hostile upstream bodies are refused, not buffered),
//! and the credential never leaves for a host it was not configured for.

use std::time::Duration;

use bytes::Bytes;
use gatehouse::upstream::{
    Credential, Endpoint, MAX_RESPONSE_BYTES, Upstream, UpstreamConfig, UpstreamError,
};
use http::{HeaderValue, StatusCode};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use wiremock::matchers::{body_bytes, header, method, path, query_param};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

// === helpers ===

const VERIFY_OK: &str = r#"{"isValid":true,"payer":"0x857b06519E91e3A54538791bDbb0E22373e36b66"}"#;
const SUPPORTED: &str = r#"{"kinds":[{"x402Version":2,"scheme":"exact","network":"eip155:84532"}],"extensions":[],"signers":{}}"#;

fn config_for(url: &str) -> UpstreamConfig {
    UpstreamConfig {
        url: url.to_owned(),
        // Short backoff so the retry tests stay fast; the paused tokio clock cannot be used
        // here because it would fire the request timeouts while real sockets are waiting.
        supported_retry_base_delay_ms: 50,
        ..UpstreamConfig::default()
    }
}

#[track_caller]
fn client(cfg: &UpstreamConfig) -> Upstream {
    match Upstream::new_with_env(cfg, &|_| None) {
        Ok(upstream) => upstream,
        Err(e) => panic!("client config rejected: {e}"),
    }
}

fn payment_body() -> Bytes {
    Bytes::from_static(
        br#"{"x402Version":2,"paymentPayload":{"x402Version":2},"paymentRequirements":{}}"#,
    )
}

fn json_response(status: u16, body: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_raw(body.as_bytes().to_vec(), "application/json")
}

/// Matches a request carrying exactly one `Authorization` header with this value (so a
/// replaced header cannot also have been appended).
fn only_authorization(expected: &'static str) -> impl Fn(&Request) -> bool + Send + Sync {
    move |req: &Request| {
        let values: Vec<_> = req.headers.get_all("authorization").iter().collect();
        values.len() == 1
            && values
                .first()
                .is_some_and(|v| v.as_bytes() == expected.as_bytes())
    }
}

fn no_authorization(req: &Request) -> bool {
    !req.headers.contains_key("authorization")
}

/// A port with nothing listening on it.
async fn closed_port_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    drop(listener);
    format!("http://{addr}")
}

/// A one-shot HTTP server on a real socket: reads one request, then writes `reply` (raw
/// bytes, possibly nothing) and closes the connection.
async fn raw_server(reply: Vec<Vec<u8>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        let Ok((mut socket, _)) = listener.accept().await else {
            return;
        };
        read_request(&mut socket).await;
        for part in reply {
            if socket.write_all(&part).await.is_err() {
                return;
            }
        }
        let _closed = socket.shutdown().await;
    });
    format!("http://{addr}")
}

/// Reads headers and a `Content-Length` body, so closing afterwards is a clean close of a
/// fully received request.
async fn read_request(socket: &mut tokio::net::TcpStream) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let Ok(n) = socket.read(&mut chunk).await else {
            return;
        };
        if n == 0 {
            return;
        }
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
        let text = String::from_utf8_lossy(&buf);
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(str::to_owned)
                })
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                return;
            }
        }
    }
}

// === timeouts and connections (invariant 2) ===

// A verify that outlasts its timeout is an unknown outcome, reported within the timeout.
#[tokio::test]
async fn verify_timeout_is_an_unknown_outcome() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/verify"))
        .respond_with(json_response(200, VERIFY_OK).set_delay(Duration::from_secs(2)))
        .expect(1)
        .mount(&server)
        .await;
    let upstream = client(&UpstreamConfig {
        verify_timeout_ms: 200,
        ..config_for(&server.uri())
    });
    let started = tokio::time::Instant::now();
    let err = upstream
        .verify(payment_body(), None)
        .await
        .expect_err("must time out");
    assert!(
        started.elapsed() < Duration::from_millis(1_500),
        "timeout not applied"
    );
    assert!(
        matches!(
            err,
            UpstreamError::Timeout {
                endpoint: Endpoint::Verify,
                timeout_ms: 200
            }
        ),
        "{err:?}"
    );
    assert!(err.is_unknown_outcome());
}

// A settle that outlasts its own (separate) timeout is an unknown outcome: the payment may
// have landed.
#[tokio::test]
async fn settle_timeout_is_an_unknown_outcome() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/settle"))
        .respond_with(json_response(200, "{}").set_delay(Duration::from_secs(2)))
        .expect(1)
        .mount(&server)
        .await;
    let cfg = UpstreamConfig {
        settle_timeout_ms: 200,
        ..config_for(&server.uri())
    };
    let err = client(&cfg)
        .settle(payment_body(), None)
        .await
        .expect_err("must time out");
    assert!(
        matches!(
            err,
            UpstreamError::Timeout {
                endpoint: Endpoint::Settle,
                timeout_ms: 200
            }
        ),
        "{err:?}"
    );
    assert!(err.is_unknown_outcome());
}

// Nothing listening: the request was never sent, so the outcome is known (not settled).
#[tokio::test]
async fn connection_refused_is_connect_and_not_unknown() {
    let upstream = client(&config_for(&closed_port_url().await));
    for result in [
        upstream.verify(payment_body(), None).await,
        upstream.settle(payment_body(), None).await,
    ] {
        let err = result.expect_err("nothing listens");
        assert!(matches!(err, UpstreamError::Connect { .. }), "{err:?}");
        assert!(!err.is_unknown_outcome());
    }
    let health = upstream.health().await.expect_err("health must fail");
    assert!(matches!(
        health,
        UpstreamError::Connect {
            endpoint: Endpoint::Supported,
            ..
        }
    ));
}

// The upstream reads the whole settle request, then drops the connection without a word:
// it may have broadcast, so the outcome is unknown.
#[tokio::test]
async fn connection_dropped_after_send_is_an_unknown_outcome() {
    let url = raw_server(vec![]).await;
    let err = client(&config_for(&url))
        .settle(payment_body(), None)
        .await
        .expect_err("no answer");
    assert!(
        matches!(
            err,
            UpstreamError::Transport {
                endpoint: Endpoint::Settle,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_unknown_outcome());
}

// === 5xx (invariant 2: keep the tx hash) ===

#[tokio::test]
async fn settle_5xx_is_server_error_with_transaction_hint() {
    let tx = "0x".to_owned() + &"9f".repeat(32);
    for status in [502u16, 503] {
        let server = MockServer::start().await;
        let body = json!({ "success": false, "errorReason": "unexpected_settle_error",
                           "transaction": tx, "network": "eip155:84532" })
        .to_string();
        Mock::given(method("POST"))
            .and(path("/settle"))
            .respond_with(json_response(status, &body))
            .expect(1)
            .mount(&server)
            .await;
        let err = client(&config_for(&server.uri()))
            .settle(payment_body(), None)
            .await
            .expect_err("5xx is an error");
        match &err {
            UpstreamError::ServerError {
                endpoint,
                status: got,
                body: parsed,
                raw,
            } => {
                assert_eq!(*endpoint, Endpoint::Settle);
                assert_eq!(got.as_u16(), status);
                assert_eq!(parsed["errorReason"], "unexpected_settle_error");
                assert_eq!(raw.as_ref(), body.as_bytes());
            }
            other => panic!("expected ServerError, got {other:?}"),
        }
        assert!(err.is_unknown_outcome());
        assert_eq!(err.transaction_hint(), Some(tx.clone()));
    }
}

// A 5xx whose body is not JSON is still an unknown outcome, just without a hint.
#[tokio::test]
async fn settle_5xx_without_json_has_no_hint_but_stays_unknown() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/settle"))
        .respond_with(ResponseTemplate::new(500).set_body_string("<html>oops</html>"))
        .expect(1)
        .mount(&server)
        .await;
    let err = client(&config_for(&server.uri()))
        .settle(payment_body(), None)
        .await
        .expect_err("5xx is an error");
    assert!(
        matches!(&err, UpstreamError::ServerError { body, raw, .. }
            if body.is_null() && raw.as_ref() == b"<html>oops</html>"),
        "{err:?}"
    );
    assert!(err.is_unknown_outcome());
    assert_eq!(err.transaction_hint(), None);
}

// === bodies (invariant 6) ===

#[tokio::test]
async fn non_json_2xx_is_invalid_body() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/verify"))
        .respond_with(ResponseTemplate::new(200).set_body_string("OK"))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/settle"))
        .respond_with(json_response(200, "[1,2]"))
        .expect(1)
        .mount(&server)
        .await;
    let upstream = client(&config_for(&server.uri()));
    let err = upstream
        .verify(payment_body(), None)
        .await
        .expect_err("not JSON");
    assert!(
        matches!(&err, UpstreamError::InvalidBody { status, .. } if *status == StatusCode::OK),
        "{err:?}"
    );
    // A 2xx means the upstream acted; only its report is unreadable.
    assert!(err.is_unknown_outcome());
    let err = upstream
        .settle(payment_body(), None)
        .await
        .expect_err("not an object");
    assert!(matches!(&err, UpstreamError::InvalidBody { reason, .. } if reason.contains("object")));
}

// 4xx JSON answers are handed back for the caller to judge; 4xx non-JSON is refused, and
// neither is an unknown outcome.
#[tokio::test]
async fn client_errors_json_is_an_answer_non_json_is_invalid() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/verify"))
        .respond_with(json_response(400, r#"{"error":"Invalid request body"}"#))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/settle"))
        .respond_with(ResponseTemplate::new(401).set_body_string("Unauthorized"))
        .expect(1)
        .mount(&server)
        .await;
    let upstream = client(&config_for(&server.uri()));
    let answer = upstream
        .verify(payment_body(), None)
        .await
        .expect("4xx JSON is an answer");
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.body, json!({ "error": "Invalid request body" }));
    let err = upstream
        .settle(payment_body(), None)
        .await
        .expect_err("4xx text");
    assert!(matches!(&err, UpstreamError::InvalidBody { status, .. } if status.as_u16() == 401));
    assert!(!err.is_unknown_outcome());
}

// The cap's boundary: a body of exactly MAX_RESPONSE_BYTES is read, one byte more is refused.
#[tokio::test]
async fn body_over_the_cap_is_invalid_at_the_cap_is_read() {
    let at_cap = {
        let filler = "a".repeat(MAX_RESPONSE_BYTES - r#"{"a":""}"#.len());
        format!(r#"{{"a":"{filler}"}}"#)
    };
    assert_eq!(at_cap.len(), MAX_RESPONSE_BYTES);
    let over_cap = format!("{at_cap} ");
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/verify"))
        .respond_with(json_response(200, &at_cap))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/settle"))
        .respond_with(json_response(200, &over_cap))
        .expect(1)
        .mount(&server)
        .await;
    let upstream = client(&config_for(&server.uri()));
    let answer = upstream
        .verify(payment_body(), None)
        .await
        .expect("at the cap");
    assert_eq!(answer.raw.len(), MAX_RESPONSE_BYTES);
    let err = upstream
        .settle(payment_body(), None)
        .await
        .expect_err("over the cap");
    assert!(matches!(&err, UpstreamError::InvalidBody { reason, .. } if reason.contains("over")));
}

// Without a Content-Length the cap is enforced while streaming, so an endless body is cut
// off instead of buffered.
#[tokio::test]
async fn chunked_body_over_the_cap_is_invalid() {
    let mut reply = vec![
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            .to_vec(),
    ];
    let chunk = vec![b' '; 64 * 1024];
    for _ in 0..(MAX_RESPONSE_BYTES / chunk.len() + 2) {
        let mut framed = format!("{:x}\r\n", chunk.len()).into_bytes();
        framed.extend_from_slice(&chunk);
        framed.extend_from_slice(b"\r\n");
        reply.push(framed);
    }
    reply.push(b"0\r\n\r\n".to_vec());
    let url = raw_server(reply).await;
    let err = client(&config_for(&url))
        .verify(payment_body(), None)
        .await
        .expect_err("over the cap");
    assert!(
        matches!(&err, UpstreamError::InvalidBody { reason, .. } if reason.contains("over")),
        "{err:?}"
    );
}

// === forwarding on the wire (invariant 5) ===

// Unknown fields, key order, whitespace and escapes reach the upstream exactly as received.
#[tokio::test]
async fn body_is_forwarded_byte_for_byte() {
    let body = Bytes::from_static(
        b"{ \"paymentRequirements\" : {\"zeta\":1,\"alpha\":\"\\u00e9\"},\n\t\"x402Version\":2,\"paymentPayload\":{\"unknownField\":[true, null ,1.50]}  }",
    );
    let server = MockServer::start().await;
    for endpoint in ["/verify", "/settle"] {
        Mock::given(method("POST"))
            .and(path(endpoint))
            .and(header("content-type", "application/json"))
            .and(body_bytes(body.to_vec()))
            .respond_with(json_response(200, VERIFY_OK))
            .expect(1)
            .mount(&server)
            .await;
    }
    let upstream = client(&config_for(&server.uri()));
    let answer = upstream.verify(body.clone(), None).await.expect("verify");
    assert_eq!(answer.raw.as_ref(), VERIFY_OK.as_bytes());
    assert_eq!(answer.body["isValid"], true);
    upstream.settle(body, None).await.expect("settle");
}

// Trailing slashes on the base URL are stripped before the endpoint path is appended, and a
// path prefix is kept.
#[tokio::test]
async fn trailing_slashes_in_the_base_url_are_stripped() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/facilitator/verify"))
        .respond_with(json_response(200, VERIFY_OK))
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/facilitator/supported"))
        .respond_with(json_response(200, SUPPORTED))
        .expect(1)
        .mount(&server)
        .await;
    for suffix in ["/facilitator/", "/facilitator//"] {
        let upstream = client(&config_for(&format!("{}{suffix}", server.uri())));
        assert_eq!(upstream.base_url(), format!("{}/facilitator", server.uri()));
        upstream.verify(payment_body(), None).await.expect("verify");
        if suffix == "/facilitator/" {
            upstream.supported().await.expect("supported");
        }
    }
}

// A redirect is reported, not followed: the credential must not travel to the Location.
#[tokio::test]
async fn redirects_are_not_followed() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/verify"))
        .respond_with(ResponseTemplate::new(307).insert_header("location", "/elsewhere"))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(path("/elsewhere"))
        .respond_with(json_response(200, VERIFY_OK))
        .expect(0)
        .mount(&server)
        .await;
    let cfg = UpstreamConfig {
        authorization: Some(Credential::from("Bearer configured")),
        ..config_for(&server.uri())
    };
    let err = client(&cfg)
        .verify(payment_body(), None)
        .await
        .expect_err("redirect");
    match &err {
        UpstreamError::Redirect {
            status, location, ..
        } => {
            assert_eq!(status.as_u16(), 307);
            assert_eq!(location.as_deref(), Some("/elsewhere"));
        }
        other => panic!("expected Redirect, got {other:?}"),
    }
    assert!(!err.is_unknown_outcome());
}

// === Authorization ===

// A configured credential replaces the seller's header on every endpoint.
#[tokio::test]
async fn configured_authorization_replaces_the_incoming_one() {
    let server = MockServer::start().await;
    for (verb, endpoint, body) in [
        ("POST", "/verify", VERIFY_OK),
        ("POST", "/settle", "{}"),
        ("GET", "/supported", SUPPORTED),
        ("GET", "/discovery/resources", r#"{"items":[]}"#),
    ] {
        Mock::given(method(verb))
            .and(path(endpoint))
            .and(only_authorization("Bearer from-env"))
            .respond_with(json_response(200, body))
            .expect(1)
            .mount(&server)
            .await;
    }
    let cfg = UpstreamConfig {
        authorization: Some(Credential::from("$GATEHOUSE_TEST_UPSTREAM_TOKEN")),
        ..config_for(&server.uri())
    };
    let env = |name: &str| {
        (name == "GATEHOUSE_TEST_UPSTREAM_TOKEN").then(|| "Bearer from-env".to_owned())
    };
    let upstream = Upstream::new_with_env(&cfg, &env).expect("config");
    let incoming = HeaderValue::from_static("Bearer seller");
    upstream
        .verify(payment_body(), Some(&incoming))
        .await
        .expect("verify");
    upstream
        .settle(payment_body(), Some(&incoming))
        .await
        .expect("settle");
    upstream.supported().await.expect("supported");
    upstream.discovery(None).await.expect("discovery");
    assert!(
        !format!("{upstream:?}").contains("from-env"),
        "credential leaked in Debug"
    );
}

// Without a configured credential the seller's header passes through unchanged, and with
// neither there is none.
#[tokio::test]
async fn incoming_authorization_passes_through_otherwise_none() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/verify"))
        .and(only_authorization("Bearer seller"))
        .respond_with(json_response(200, VERIFY_OK))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/settle"))
        .and(no_authorization)
        .respond_with(json_response(200, "{}"))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/supported"))
        .and(no_authorization)
        .respond_with(json_response(200, SUPPORTED))
        .expect(1)
        .mount(&server)
        .await;
    let upstream = client(&config_for(&server.uri()));
    let incoming = HeaderValue::from_static("Bearer seller");
    upstream
        .verify(payment_body(), Some(&incoming))
        .await
        .expect("verify passes through");
    upstream
        .settle(payment_body(), None)
        .await
        .expect("settle with none");
    upstream
        .supported()
        .await
        .expect("supported never borrows a seller's header");
}

// === /supported: retries and cache ===

// 429, 429, 200: three calls in all, waiting one base delay and then two (spec §1.5).
#[tokio::test]
async fn supported_retries_429_with_backoff() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/supported"))
        .respond_with(ResponseTemplate::new(429))
        .up_to_n_times(2)
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/supported"))
        .respond_with(json_response(200, SUPPORTED))
        .expect(1)
        .mount(&server)
        .await;
    let upstream = client(&config_for(&server.uri()));
    let started = tokio::time::Instant::now();
    let supported = upstream
        .supported()
        .await
        .expect("succeeds on the third attempt");
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "backoff of 50 + 100 ms not applied"
    );
    assert_eq!(supported["kinds"][0]["network"], "eip155:84532");
}

// 429 on every attempt: exactly three calls, then an error (not an endless loop).
#[tokio::test]
async fn supported_gives_up_after_three_429s() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/supported"))
        .respond_with(json_response(429, r#"{"error":"slow down"}"#))
        .expect(3)
        .mount(&server)
        .await;
    let err = client(&config_for(&server.uri()))
        .supported()
        .await
        .expect_err("rate limited");
    assert!(
        matches!(&err, UpstreamError::UnexpectedStatus { status, body, .. }
            if status.as_u16() == 429 && body["error"] == "slow down"),
        "{err:?}"
    );
}

// The second call is served from the cache (one request), and health uses it too; clones
// share the cache.
#[tokio::test]
async fn supported_is_cached() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/supported"))
        .respond_with(json_response(200, SUPPORTED))
        .expect(1)
        .mount(&server)
        .await;
    let upstream = client(&config_for(&server.uri()));
    let first = upstream.supported().await.expect("first");
    let second = upstream.clone().supported().await.expect("second");
    assert!(std::sync::Arc::ptr_eq(&first, &second));
    upstream.health().await.expect("health from the cache");
}

// Concurrent callers on a cold cache share one fetch instead of each hitting the upstream.
#[tokio::test]
async fn concurrent_supported_calls_share_one_fetch() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/supported"))
        .respond_with(json_response(200, SUPPORTED).set_delay(Duration::from_millis(200)))
        .expect(1)
        .mount(&server)
        .await;
    let upstream = client(&config_for(&server.uri()));
    let calls: Vec<_> = (0..5)
        .map(|_| {
            let upstream = upstream.clone();
            tokio::spawn(async move { upstream.supported().await })
        })
        .collect();
    for call in calls {
        let answer = call.await.expect("task");
        assert!(answer.is_ok(), "{answer:?}");
    }
}

// After the TTL the next call fetches again.
#[tokio::test]
async fn supported_cache_expires_after_ttl() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/supported"))
        .respond_with(json_response(200, SUPPORTED))
        .expect(2)
        .mount(&server)
        .await;
    let upstream = client(&UpstreamConfig {
        supported_cache_ttl_secs: 1,
        ..config_for(&server.uri())
    });
    upstream.supported().await.expect("first");
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    upstream.supported().await.expect("refetched");
}

// An answer without a `kinds` array is refused and not cached; neither is a failure.
#[tokio::test]
async fn supported_without_kinds_is_invalid_and_not_cached() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/supported"))
        .respond_with(json_response(200, r#"{"kinds":null}"#))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/supported"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/supported"))
        .respond_with(json_response(200, SUPPORTED))
        .expect(1)
        .mount(&server)
        .await;
    let upstream = client(&config_for(&server.uri()));
    let err = upstream.supported().await.expect_err("no kinds");
    assert!(matches!(&err, UpstreamError::InvalidBody { reason, .. } if reason.contains("kinds")));
    let err = upstream.health().await.expect_err("503");
    assert!(matches!(&err, UpstreamError::ServerError { .. }), "{err:?}");
    upstream.health().await.expect("third fetch succeeds");
}

// === discovery ===

#[tokio::test]
async fn discovery_relays_the_query() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/discovery/resources"))
        .and(query_param("type", "http"))
        .and(query_param("limit", "5"))
        .respond_with(json_response(200, r#"{"x402Version":2,"items":[]}"#))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/discovery/resources"))
        .and(|req: &Request| req.url.query().is_none())
        .respond_with(json_response(404, r#"{"error":"not found"}"#))
        .expect(2)
        .mount(&server)
        .await;
    let upstream = client(&config_for(&server.uri()));
    let answer = upstream
        .discovery(Some("type=http&limit=5"))
        .await
        .expect("discovery");
    assert_eq!(answer.body["x402Version"], 2);
    for query in [None, Some("")] {
        let answer = upstream
            .discovery(query)
            .await
            .expect("4xx JSON is an answer");
        assert_eq!(answer.status, StatusCode::NOT_FOUND);
    }
}

// === configuration ===

#[tokio::test]
async fn bad_config_is_refused_with_every_problem() {
    let cfg = UpstreamConfig {
        url: "ftp://example.com".to_owned(),
        verify_timeout_ms: 0,
        authorization: Some(Credential::from("$GATEHOUSE_TEST_UNSET_VARIABLE")),
        ..UpstreamConfig::default()
    };
    match Upstream::new_with_env(&cfg, &|_| None) {
        Err(UpstreamError::Config(problems)) => assert_eq!(problems.len(), 3, "{problems:?}"),
        other => panic!("expected Config error, got {other:?}"),
    }
    let literal = UpstreamConfig {
        authorization: Some(Credential::from("Bearer hunter2")),
        ..UpstreamConfig::default()
    };
    let upstream = Upstream::new(&literal).expect("literal credential");
    assert!(!format!("{upstream:?}").contains("hunter2"));
    assert_eq!(upstream.base_url(), "https://x402.org/facilitator");
}
