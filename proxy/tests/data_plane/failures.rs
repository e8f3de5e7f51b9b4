//! Upstream failures, error pages and client-side limits.

use std::time::Duration;

use bytes::Bytes;
use gantry_proxy::ProxyConfig;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio::net::TcpListener;

use crate::support::*;

/// A loopback address with nothing listening.
async fn closed_port() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

#[tokio::test]
async fn unreachable_upstream_is_503_without_details() {
    let target = closed_port().await;
    let proxy = TestProxy::start(ProxyConfig::default()).await;
    proxy.route("/user/alice", &target);
    let (status, body) = get_with(
        &proxy.url("/user/alice/api"),
        &[("accept", "application/json")],
    )
    .await;
    assert_eq!(status, 503);
    let port = target.rsplit(':').next().unwrap();
    assert!(
        !body.contains(port) && !body.contains("127.0.0.1"),
        "no upstream address leaks: {body}"
    );
    assert!(body.contains("\"status\":503"), "{body}");
}

#[tokio::test]
async fn failed_requests_do_not_count_as_activity() {
    let not_found = serve_backend(|_request: Request<Incoming>| async {
        let mut response = Response::new(Full::new(Bytes::new()));
        *response.status_mut() = http::StatusCode::NOT_FOUND;
        response
    })
    .await;
    let proxy = TestProxy::start(ProxyConfig::default()).await;
    proxy.route("/user/down", &closed_port().await);
    proxy.route("/user/missing", &format!("http://{not_found}"));
    let activity = |prefix: &str| {
        let prefix = gantry_proxy::RoutePrefix::parse(prefix, false).unwrap();
        proxy.table.get(&prefix).unwrap().last_activity_millis()
    };
    let (down, missing) = (activity("/user/down"), activity("/user/missing"));
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(get(&proxy.url("/user/down/api")).await.0, 503);
    assert_eq!(get(&proxy.url("/user/missing/api")).await.0, 404);
    assert_eq!(
        (activity("/user/down"), activity("/user/missing")),
        (down, missing)
    );
}

#[tokio::test]
async fn slow_upstream_is_504() {
    let addr = serve_backend(|_request: Request<Incoming>| async {
        tokio::time::sleep(Duration::from_secs(10)).await;
        Response::new(Full::new(Bytes::new()))
    })
    .await;
    let config = ProxyConfig {
        upstream_response_timeout: Duration::from_millis(300),
        ..ProxyConfig::default()
    };
    let proxy = TestProxy::start(config).await;
    proxy.route("/", &format!("http://{addr}"));
    let (status, _) = get(&proxy.url("/slow")).await;
    assert_eq!(status, 504);
}

#[tokio::test]
async fn error_target_supplies_the_page() {
    let pages = EchoBackend::start().await;
    let config = ProxyConfig {
        error_target: Some(
            gantry_proxy::Target::parse(&format!("{}/hub/error", pages.url())).unwrap(),
        ),
        ..ProxyConfig::default()
    };
    let proxy = TestProxy::start(config).await;
    proxy.route("/user/alice", &closed_port().await);
    let (status, body) = get(&proxy.url("/user/alice/tree")).await;
    assert_eq!(
        status, 503,
        "the status is the proxy's, the page the error target's"
    );
    let page: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(page["uri"], "/hub/error/503?url=%2Fuser%2Falice%2Ftree");
    let (status, body) = get(&proxy.url("/no/route")).await;
    assert_eq!(status, 404);
    assert!(body.contains("/hub/error/404"), "{body}");
}

#[tokio::test]
async fn failing_error_target_falls_back_to_the_builtin_page() {
    let config = ProxyConfig {
        error_target: Some(gantry_proxy::Target::parse(&closed_port().await).unwrap()),
        ..ProxyConfig::default()
    };
    let proxy = TestProxy::start(config).await;
    let (status, body) = get(&proxy.url("/no/route")).await;
    assert_eq!(status, 404);
    assert!(body.contains("<h1>404 Not Found</h1>"), "{body}");
}

#[tokio::test]
async fn slow_header_senders_are_cut_off() {
    let config = ProxyConfig {
        header_timeout: Duration::from_millis(300),
        ..ProxyConfig::default()
    };
    let proxy = TestProxy::start(config).await;
    let started = std::time::Instant::now();
    // Half a request head, then silence: the proxy must not wait forever.
    let response = raw_exchange(
        proxy.addr,
        b"GET / HTTP/1.1\r\nhost: x\r\n",
        Duration::from_secs(10),
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the connection was closed by the proxy"
    );
    assert!(
        response.is_empty() || status_of(&response) == 408,
        "{response}"
    );
}

#[tokio::test]
async fn oversized_headers_are_431() {
    let backend = EchoBackend::start().await;
    let config = ProxyConfig {
        max_header_bytes: 16 * 1024,
        ..ProxyConfig::default()
    };
    let proxy = TestProxy::start(config).await;
    proxy.route("/", &backend.url());
    let big = "a".repeat(64 * 1024);
    let request = format!("GET / HTTP/1.1\r\nhost: x\r\nx-big: {big}\r\n\r\n");
    let response = raw_exchange(proxy.addr, request.as_bytes(), Duration::from_secs(5)).await;
    assert_eq!(status_of(&response), 431, "{response}");
    assert_eq!(backend.hits(), 0);
}

#[tokio::test]
async fn smuggling_shapes_are_refused() {
    let backend = EchoBackend::start().await;
    let proxy = TestProxy::start(ProxyConfig::default()).await;
    proxy.route("/", &backend.url());
    let requests = [
        "POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\ncontent-length: 5\r\n\r\nabcd",
        "POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: gzip, chunked, gzip\r\n\r\n0\r\n\r\n",
        "GET / HTTP/1.1\r\nhost : x\r\n\r\n",
    ];
    for request in requests {
        let response = raw_exchange(proxy.addr, request.as_bytes(), Duration::from_secs(5)).await;
        assert_eq!(status_of(&response), 400, "{request:?}: {response}");
    }
    assert_eq!(backend.hits(), 0);
}
