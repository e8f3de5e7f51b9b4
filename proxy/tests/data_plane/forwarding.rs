//! Routing, forwarding, header rewriting, streaming and path safety.

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use gantry_proxy::ProxyConfig;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::support::*;

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

#[tokio::test]
async fn longest_segment_prefix_routes_and_raw_path_is_forwarded() {
    let alice = EchoBackend::start().await;
    let hub = EchoBackend::start().await;
    let proxy = TestProxy::start(ProxyConfig::default()).await;
    proxy.route("/", &hub.url());
    proxy.route("/user/alice", &alice.url());

    let (status, body) =
        get(&proxy.url("/user/alice/lab/tree/b%40r%20x.ipynb?token=1&x=%2F")).await;
    assert_eq!(status, 200);
    assert_eq!(
        json(&body)["uri"],
        "/user/alice/lab/tree/b%40r%20x.ipynb?token=1&x=%2F"
    );
    assert_eq!(alice.hits(), 1);

    let (status, _) = get(&proxy.url("/user/alicex/lab")).await;
    assert_eq!(status, 200);
    assert_eq!(hub.hits(), 1, "/user/alicex is not under /user/alice");
    assert_eq!(alice.hits(), 1);
}

#[tokio::test]
async fn target_path_is_prepended() {
    let backend = EchoBackend::start().await;
    let proxy = TestProxy::start(ProxyConfig::default()).await;
    proxy.route("/user/bob", &format!("{}/base/", backend.url()));
    let (_, body) = get(&proxy.url("/user/bob/api?x=1")).await;
    assert_eq!(json(&body)["uri"], "/base/user/bob/api?x=1");
}

#[tokio::test]
async fn forwarding_headers_are_set_and_spoofs_replaced() {
    let backend = EchoBackend::start().await;
    let proxy = TestProxy::start(ProxyConfig::default()).await;
    proxy.route("/", &backend.url());
    let (_, body) = get_with(
        &proxy.url("/x"),
        &[
            ("host", "hub.example.org:8443"),
            ("x-forwarded-for", "10.9.9.9"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.example"),
            ("forwarded", "for=10.9.9.9"),
            ("connection", "x-drop-me"),
            ("x-drop-me", "1"),
            ("x-keep-me", "1"),
        ],
    )
    .await;
    let headers = &json(&body)["headers"];
    assert_eq!(headers["host"], "hub.example.org:8443", "Host is preserved");
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(headers["x-forwarded-proto"], "http");
    assert_eq!(headers["x-forwarded-host"], "hub.example.org:8443");
    assert_eq!(headers["x-forwarded-port"], "8443");
    assert_eq!(headers["forwarded"], Value::Null);
    assert_eq!(
        headers["x-drop-me"],
        Value::Null,
        "headers named by Connection are hop-by-hop"
    );
    assert_eq!(headers["x-keep-me"], "1");
}

#[tokio::test]
async fn trusted_downstream_forwarding_headers_are_extended() {
    let backend = EchoBackend::start().await;
    let config = ProxyConfig {
        trusted_downstreams: vec!["127.0.0.0/8".parse().unwrap()],
        ..ProxyConfig::default()
    };
    let proxy = TestProxy::start(config).await;
    proxy.route("/", &backend.url());
    let (_, body) = get_with(
        &proxy.url("/x"),
        &[
            ("x-forwarded-for", "198.51.100.4"),
            ("x-forwarded-proto", "https"),
        ],
    )
    .await;
    let headers = &json(&body)["headers"];
    assert_eq!(headers["x-forwarded-for"], "198.51.100.4, 127.0.0.1");
    assert_eq!(headers["x-forwarded-proto"], "https");
}

#[tokio::test]
async fn no_route_is_404_in_the_format_asked_for() {
    let proxy = TestProxy::start(ProxyConfig::default()).await;
    let (status, body) = get_with(&proxy.url("/nowhere"), &[("accept", "application/json")]).await;
    assert_eq!(status, 404);
    assert_eq!(json(&body)["status"], 404);
    let (status, body) = get_with(&proxy.url("/nowhere"), &[("accept", "text/html")]).await;
    assert_eq!(status, 404);
    assert!(body.contains("<h1>404 Not Found</h1>"), "{body}");
}

#[tokio::test]
async fn health_check_answers_without_routes() {
    let proxy = TestProxy::start(ProxyConfig::default()).await;
    let (status, body) = get(&proxy.url("/_chp_healthz")).await;
    assert_eq!((status, json(&body)["status"].as_str()), (200, Some("OK")));
}

#[tokio::test]
async fn ambiguous_paths_are_400_and_never_reach_an_upstream() {
    let bob = EchoBackend::start().await;
    let alice = EchoBackend::start().await;
    let hub = EchoBackend::start().await;
    let proxy = TestProxy::start(ProxyConfig::default()).await;
    proxy.route("/", &hub.url());
    proxy.route("/user/bob", &bob.url());
    proxy.route("/user/alice", &alice.url());
    let attacks = [
        "/user/bob/%2e%2e/alice/x",
        "/user/bob/%2E%2E/alice/x",
        "/user/bob/../alice/x",
        "/user/bob/./x",
        "/user/bob/..%2Falice/x",
        "/user/alice%2F..%2Fbob/x",
        "/user/bob\\..\\alice",
        "/user/bob%5C..%5Calice",
        "/user/bob/%252e%252e/alice",
        "/user//alice/x",
        "//user/alice",
        "/%",
        "/user/bob/%00",
        "/user/bob/%ff",
    ];
    for attack in attacks {
        let request =
            format!("GET {attack} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n");
        let response = raw_exchange(proxy.addr, request.as_bytes(), Duration::from_secs(5)).await;
        assert_eq!(status_of(&response), 400, "{attack}: {response}");
        assert!(
            !response.contains(attack),
            "the path is not echoed: {response}"
        );
    }
    assert_eq!(
        (bob.hits(), alice.hits(), hub.hits()),
        (0, 0, 0),
        "no upstream saw any of them"
    );
    assert_eq!(
        proxy.metrics.rejected_paths.get() as usize,
        attacks.len(),
        "gantry itself refused every one"
    );
}

#[tokio::test]
async fn percent_encoded_names_route_to_their_decoded_prefix() {
    let backend = EchoBackend::start().await;
    let proxy = TestProxy::start(ProxyConfig::default()).await;
    proxy.route("/user/秀樹", &backend.url());
    proxy.route("/user/has@", &backend.url());
    let (status, body) = get(&proxy.url("/user/%E7%A7%80%E6%A8%B9/api")).await;
    assert_eq!(status, 200);
    assert_eq!(json(&body)["uri"], "/user/%E7%A7%80%E6%A8%B9/api");
    assert_eq!(
        get(&proxy.url("/user/has%40/api")).await.0,
        200,
        "%40 and @ are one route"
    );
    assert_eq!(get(&proxy.url("/user/has@/api")).await.0, 200);
}

#[tokio::test]
async fn large_request_body_streams_to_the_upstream() {
    let backend = EchoBackend::start().await;
    let proxy = TestProxy::start(ProxyConfig::default()).await;
    proxy.route("/", &backend.url());
    let body = Full::new(Bytes::from(vec![7u8; 8 * 1024 * 1024]));
    let request = Request::post(proxy.url("/upload")).body(body).unwrap();
    let response = client().request(request).await.unwrap();
    let text = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(
        json(&String::from_utf8_lossy(&text))["body_len"],
        8 * 1024 * 1024
    );
}

/// The first chunk of a response reaches the client while the upstream is still holding the
/// second one back: the proxy does not buffer whole responses.
#[tokio::test]
async fn response_bodies_stream_chunk_by_chunk() {
    let (release_tx, release_rx) = oneshot::channel::<()>();
    let release = std::sync::Arc::new(std::sync::Mutex::new(Some(release_rx)));
    let addr = serve_backend(move |_request: Request<Incoming>| {
        let release = release.lock().unwrap().take();
        async move {
            let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(2);
            tokio::spawn(async move {
                tx.send(Ok(Frame::data(Bytes::from_static(b"first;"))))
                    .await
                    .unwrap();
                if let Some(release) = release {
                    let _ = release.await;
                }
                let _ = tx
                    .send(Ok(Frame::data(Bytes::from_static(b"second"))))
                    .await;
            });
            Response::new(StreamBody::new(tokio_stream(rx)))
        }
    })
    .await;
    let proxy = TestProxy::start(ProxyConfig::default()).await;
    proxy.route("/", &format!("http://{addr}"));
    let response = client()
        .request(
            Request::get(proxy.url("/stream"))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    let mut body = response.into_body();
    let first = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .expect("the first chunk arrives before the upstream finishes")
        .unwrap()
        .unwrap();
    assert_eq!(first.into_data().unwrap(), "first;");
    release_tx.send(()).unwrap();
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(rest, "second");
}

/// The upstream sees the first chunk of a request body while the client still holds the rest.
#[tokio::test]
async fn request_bodies_stream_chunk_by_chunk() {
    let (seen_tx, seen_rx) = oneshot::channel::<Bytes>();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Some(seen_tx)));
    let addr = serve_backend(move |request: Request<Incoming>| {
        let seen = seen.lock().unwrap().take();
        async move {
            let mut body = request.into_body();
            let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
            if let Some(seen) = seen {
                let _ = seen.send(first);
            }
            let rest = body.collect().await.unwrap().to_bytes();
            Response::new(Full::new(rest))
        }
    })
    .await;
    let proxy = TestProxy::start(ProxyConfig::default()).await;
    proxy.route("/", &format!("http://{addr}"));
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(2);
    let request = Request::post(proxy.url("/upload"))
        .body(StreamBody::new(tokio_stream(rx)))
        .unwrap();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    let response = tokio::spawn(async move { client.request(request).await });
    tx.send(Ok(Frame::data(Bytes::from_static(b"part-1;"))))
        .await
        .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(5), seen_rx)
        .await
        .expect("the upstream sees the first chunk before the body ends")
        .unwrap();
    assert_eq!(first, "part-1;");
    tx.send(Ok(Frame::data(Bytes::from_static(b"part-2"))))
        .await
        .unwrap();
    drop(tx);
    let response = response.await.unwrap().unwrap();
    assert_eq!(
        response.into_body().collect().await.unwrap().to_bytes(),
        "part-2"
    );
}

fn tokio_stream<T: Send + 'static>(
    rx: mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send {
    futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
    .boxed()
}
