//! WebSocket and other `Upgrade` requests are tunnelled end to end.

use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use gantry_proxy::{ProxyConfig, RouteChange, RoutePrefix};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use crate::support::*;

#[tokio::test]
async fn websocket_messages_round_trip_and_record_activity() {
    let backend = ws_echo_backend().await;
    let proxy = TestProxy::start(ProxyConfig::default()).await;
    proxy.route("/user/alice", &format!("http://{backend}"));
    let prefix = RoutePrefix::parse("/user/alice", false).unwrap();
    let route = proxy.table.get(&prefix).unwrap();

    let (mut ws, response) = tokio_tungstenite::connect_async(format!(
        "ws://{}/user/alice/api/kernels/k/channels",
        proxy.addr
    ))
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    wait_until(|| proxy.metrics.open_websockets.get() == 1).await;

    let before = route.last_activity_millis();
    tokio::time::sleep(Duration::from_millis(20)).await;
    for i in 0..50 {
        let text = format!("message {i}");
        ws.send(Message::text(text.clone())).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text(text));
    }
    let big = Message::binary(vec![42u8; 1 << 20]);
    ws.send(big.clone()).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        big,
        "a 1 MiB message crosses intact"
    );
    assert!(
        route.last_activity_millis() > before,
        "tunnel traffic counts as activity"
    );

    ws.close(None).await.unwrap();
    drop(ws);
    wait_until(|| proxy.metrics.open_websockets.get() == 0).await;
}

#[tokio::test]
async fn removing_the_route_closes_its_websockets() {
    let backend = ws_echo_backend().await;
    let proxy = TestProxy::start(ProxyConfig::default()).await;
    proxy.route("/user/alice", &format!("http://{backend}"));
    proxy.route("/user/bob", &format!("http://{backend}"));
    let url = |user| format!("ws://{}/user/{user}/ws", proxy.addr);
    let (mut alice, _) = tokio_tungstenite::connect_async(url("alice"))
        .await
        .unwrap();
    let (mut bob, _) = tokio_tungstenite::connect_async(url("bob")).await.unwrap();
    wait_until(|| proxy.metrics.open_websockets.get() == 2).await;

    proxy.table.apply(RouteChange::Remove(
        RoutePrefix::parse("/user/alice", false).unwrap(),
    ));
    let end = tokio::time::timeout(Duration::from_secs(5), alice.next())
        .await
        .expect("alice's socket closes");
    assert!(
        matches!(end, None | Some(Err(_)) | Some(Ok(Message::Close(_)))),
        "{end:?}"
    );
    wait_until(|| proxy.metrics.open_websockets.get() == 1).await;

    bob.send(Message::text("still here")).await.unwrap();
    assert_eq!(
        bob.next().await.unwrap().unwrap(),
        Message::text("still here"),
        "other routes' sockets stay open"
    );
}

/// Any protocol behind `Upgrade` is tunnelled, not only WebSocket.
#[tokio::test]
async fn other_upgrades_are_tunnelled_too() {
    let addr = serve_backend(|mut request: Request<Incoming>| async move {
        let upgrade = hyper::upgrade::on(&mut request);
        tokio::spawn(async move {
            let mut io = TokioIo::new(upgrade.await.unwrap());
            let mut buffer = [0u8; 64];
            while let Ok(n) = io.read(&mut buffer).await {
                if n == 0 || io.write_all(&buffer[..n]).await.is_err() {
                    break;
                }
            }
        });
        Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("connection", "upgrade")
            .header("upgrade", "echo/1")
            .body(Full::new(Bytes::new()))
            .unwrap()
    })
    .await;
    let proxy = TestProxy::start(ProxyConfig::default()).await;
    proxy.route("/", &format!("http://{addr}"));
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(
            b"GET /raw HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: echo/1\r\n\r\n",
        )
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("upgrade: echo/1"),
        "{head}"
    );
    stream.write_all(b"ping over a raw tunnel").await.unwrap();
    let mut echoed = [0u8; 22];
    stream.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"ping over a raw tunnel");
}

#[tokio::test]
async fn refused_upgrade_is_an_ordinary_response() {
    let backend = EchoBackend::start().await;
    let proxy = TestProxy::start(ProxyConfig::default()).await;
    proxy.route("/", &backend.url());
    let result =
        tokio_tungstenite::connect_async(format!("ws://{}/not-a-socket", proxy.addr)).await;
    match result {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 200)
        }
        other => panic!("expected the backend's plain 200, got {other:?}"),
    }
    assert_eq!(proxy.metrics.open_websockets.get(), 0);
}

/// The logout hook: a user's WebSockets close, their routes stay, others are untouched.
#[tokio::test]
async fn closing_a_users_tunnels_keeps_their_routes() {
    let backend = ws_echo_backend().await;
    let proxy = TestProxy::start(ProxyConfig::default()).await;
    for prefix in [
        "/user/alice",
        "/user/alice/gpu",
        "/user/alicex",
        "/user/bob",
    ] {
        proxy.route(prefix, &format!("http://{backend}"));
    }
    let url = |path: &str| format!("ws://{}{path}/ws", proxy.addr);
    let (mut alice, _) = tokio_tungstenite::connect_async(url("/user/alice"))
        .await
        .unwrap();
    let (mut alice_gpu, _) = tokio_tungstenite::connect_async(url("/user/alice/gpu"))
        .await
        .unwrap();
    let (mut alicex, _) = tokio_tungstenite::connect_async(url("/user/alicex"))
        .await
        .unwrap();
    let (mut bob, _) = tokio_tungstenite::connect_async(url("/user/bob"))
        .await
        .unwrap();
    wait_until(|| proxy.metrics.open_websockets.get() == 4).await;

    let signalled = proxy
        .table
        .close_tunnels_under(&RoutePrefix::parse("/user/alice", false).unwrap());
    assert_eq!(
        signalled, 2,
        "/user/alice and /user/alice/gpu, not /user/alicex"
    );
    for socket in [&mut alice, &mut alice_gpu] {
        let end = tokio::time::timeout(Duration::from_secs(5), socket.next())
            .await
            .expect("closed");
        assert!(
            matches!(end, None | Some(Err(_)) | Some(Ok(Message::Close(_)))),
            "{end:?}"
        );
    }
    wait_until(|| proxy.metrics.open_websockets.get() == 2).await;
    for socket in [&mut alicex, &mut bob] {
        socket.send(Message::text("still open")).await.unwrap();
        assert_eq!(
            socket.next().await.unwrap().unwrap(),
            Message::text("still open")
        );
    }

    assert_eq!(proxy.table.len(), 4, "the routes stay");
    let (mut again, _) = tokio_tungstenite::connect_async(url("/user/alice"))
        .await
        .unwrap();
    wait_until(|| proxy.metrics.open_websockets.get() == 3).await;
    again.send(Message::text("back")).await.unwrap();
    assert_eq!(
        again.next().await.unwrap().unwrap(),
        Message::text("back"),
        "a new tunnel lives"
    );
}
