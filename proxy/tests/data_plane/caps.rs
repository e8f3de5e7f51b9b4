//! Connection caps and idle deadlines: a listener serves at most `max_connections` sockets at
//! once (WebSockets included) and makes the next wait; an idle HTTP/2 connection is closed.

use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use gantry_proxy::ProxyConfig;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

use crate::support::*;
use crate::tls::{connect, self_signed};

const HEALTHZ: &[u8] = b"GET /_chp_healthz HTTP/1.1\r\nhost: x\r\n\r\n";

/// Reads one HTTP/1.1 response with a `content-length` body; returns its status.
async fn read_response(stream: &mut TcpStream) -> u16 {
    let mut data = Vec::new();
    let mut byte = [0_u8; 1];
    while !data.ends_with(b"\r\n\r\n") {
        let n = stream.read(&mut byte).await.unwrap();
        assert_eq!(n, 1, "the connection closed inside a response head");
        data.push(byte[0]);
    }
    let head = String::from_utf8(data).unwrap();
    let length: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().unwrap())
        })
        .unwrap();
    let mut body = vec![0_u8; length];
    stream.read_exact(&mut body).await.unwrap();
    status_of(&head)
}

/// One health check on an open connection.
async fn exchange(stream: &mut TcpStream) -> u16 {
    stream.write_all(HEALTHZ).await.unwrap();
    read_response(stream).await
}

/// Nothing has arrived on `stream` yet (and it is not closed).
fn nothing_yet(stream: &TcpStream) -> bool {
    let mut byte = [0_u8; 1];
    matches!(stream.try_read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// With the cap reached, a new connection is not served while the others are (each served
/// several times after its request was sent, so a server that had accepted it would have
/// answered it), and is served as soon as one of them closes.
#[tokio::test]
async fn past_the_cap_a_connection_waits_until_another_closes() {
    let config = ProxyConfig {
        max_connections: 2,
        ..ProxyConfig::default()
    };
    let proxy = TestProxy::start(config).await;
    let mut first = TcpStream::connect(proxy.addr).await.unwrap();
    let mut second = TcpStream::connect(proxy.addr).await.unwrap();
    assert_eq!(exchange(&mut first).await, 200);
    assert_eq!(exchange(&mut second).await, 200);

    // The kernel completes the handshake; the request waits in the listen backlog.
    let mut third = TcpStream::connect(proxy.addr).await.unwrap();
    third.write_all(HEALTHZ).await.unwrap();
    for _ in 0..5 {
        assert_eq!(exchange(&mut first).await, 200);
        assert_eq!(exchange(&mut second).await, 200);
    }
    assert!(
        nothing_yet(&third),
        "the third connection was served past the cap"
    );

    drop(first);
    assert_eq!(read_response(&mut third).await, 200);
    assert_eq!(exchange(&mut third).await, 200);
}

/// A WebSocket holds its connection's place for as long as it is open, though the HTTP
/// connection it came from has ended.
#[tokio::test]
async fn an_open_websocket_keeps_its_place_under_the_cap() {
    let backend = ws_echo_backend().await;
    let config = ProxyConfig {
        max_connections: 1,
        ..ProxyConfig::default()
    };
    let proxy = TestProxy::start(config).await;
    proxy.route("/user/alice", &format!("http://{backend}"));
    let (mut ws, _) = tokio_tungstenite::connect_async(format!(
        "ws://{}/user/alice/api/kernels/k/channels",
        proxy.addr
    ))
    .await
    .unwrap();

    let mut waiting = TcpStream::connect(proxy.addr).await.unwrap();
    waiting.write_all(HEALTHZ).await.unwrap();
    for i in 0..10 {
        let text = format!("message {i}");
        ws.send(Message::text(text.clone())).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text(text));
    }
    assert!(
        nothing_yet(&waiting),
        "served while the WebSocket held the only place"
    );

    ws.close(None).await.unwrap();
    drop(ws);
    assert_eq!(read_response(&mut waiting).await, 200);
}

/// An HTTP/2 connection with no request in flight for `header_timeout` is closed (hyper's
/// HTTP/2 server has no such timer of its own: a client answering pings held its connection,
/// and its place under the cap, forever).
#[tokio::test]
async fn an_idle_http2_connection_is_closed() {
    let tls = self_signed();
    let config = ProxyConfig {
        tls: true,
        header_timeout: Duration::from_millis(300),
        ..ProxyConfig::default()
    };
    let proxy = TestProxy::start_with_tls(config, Some(tls.acceptor)).await;
    let stream = connect(proxy.addr, &tls.cert, b"h2").await;
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    let connection = tokio::spawn(connection);
    let request = Request::get("https://localhost/_chp_healthz")
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(sender.send_request(request).await.unwrap().status(), 200);
    // The server ends the connection on its own; ten seconds only bound a failing test.
    tokio::time::timeout(Duration::from_secs(10), connection)
        .await
        .expect("the idle HTTP/2 connection was not closed")
        .unwrap()
        .unwrap();
}

/// A response still streaming keeps its HTTP/2 connection busy, past `header_timeout`.
#[tokio::test]
async fn a_streaming_http2_response_is_not_idle() {
    let (release_tx, release_rx) = oneshot::channel::<()>();
    let release = std::sync::Arc::new(std::sync::Mutex::new(Some(release_rx)));
    let addr = serve_backend(move |_request: Request<Incoming>| {
        let release = release.lock().unwrap().take();
        async move {
            let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(2);
            tokio::spawn(async move {
                let _ = tx
                    .send(Ok(Frame::data(Bytes::from_static(b"first;"))))
                    .await;
                if let Some(release) = release {
                    let _ = release.await;
                }
                let _ = tx
                    .send(Ok(Frame::data(Bytes::from_static(b"second"))))
                    .await;
            });
            let stream = futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|item| (item, rx))
            });
            Response::new(StreamBody::new(stream))
        }
    })
    .await;
    let tls = self_signed();
    let config = ProxyConfig {
        tls: true,
        header_timeout: Duration::from_millis(200),
        ..ProxyConfig::default()
    };
    let proxy = TestProxy::start_with_tls(config, Some(tls.acceptor)).await;
    proxy.route("/", &format!("http://{addr}"));
    let stream = connect(proxy.addr, &tls.cert, b"h2").await;
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    let connection = tokio::spawn(connection);
    let request = Request::get("https://localhost/stream")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let mut body = sender.send_request(request).await.unwrap().into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(first, "first;");
    // Several idle deadlines pass while the response is open. A connection counted idle
    // would have been sent GOAWAY (hyper lets the open stream finish but takes no new one):
    // a second request on it must still be served.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let request = Request::get("https://localhost/_chp_healthz")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = sender.send_request(request).await;
    assert_eq!(
        response.expect("GOAWAY with a response in flight").status(),
        200
    );
    release_tx.send(()).unwrap();
    assert_eq!(body.collect().await.unwrap().to_bytes(), "second");
    // Then, idle, it is closed.
    tokio::time::timeout(Duration::from_secs(10), connection)
        .await
        .expect("the idle HTTP/2 connection was not closed")
        .unwrap()
        .unwrap();
}
