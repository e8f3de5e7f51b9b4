//! Graceful shutdown drains requests in flight and refuses new connections.

use std::time::Duration;

use bytes::Bytes;
use gantry_proxy::ProxyConfig;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::support::*;

#[tokio::test]
async fn in_flight_requests_finish_and_new_connections_are_refused() {
    let (arrived_tx, mut arrived) = mpsc::channel::<()>(1);
    let addr = serve_backend(move |_request: Request<Incoming>| {
        let arrived_tx = arrived_tx.clone();
        async move {
            let _ = arrived_tx.send(()).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
            Response::new(Full::new(Bytes::from_static(b"finished")))
        }
    })
    .await;
    let proxy = TestProxy::start(ProxyConfig::default()).await;
    proxy.route("/", &format!("http://{addr}"));
    let proxy_addr = proxy.addr;
    let url = proxy.url("/slow");
    let in_flight = tokio::spawn(async move { get(&url).await });
    arrived.recv().await.unwrap();

    let shutdown = proxy.begin_shutdown();
    let (status, body) = in_flight.await.unwrap();
    assert_eq!((status, body.as_str()), (200, "finished"));
    tokio::time::timeout(Duration::from_secs(5), shutdown)
        .await
        .expect("shutdown completes once the in-flight request is done")
        .unwrap();
    assert!(
        TcpStream::connect(proxy_addr).await.is_err(),
        "the listener is closed"
    );
}
