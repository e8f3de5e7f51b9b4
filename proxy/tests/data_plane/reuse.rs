//! Upstream connections driven by the client connection: reuse on one client connection,
//! the resend rule for connections the upstream closed, and no sharing between clients.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use gantry_proxy::ProxyConfig;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::*;

/// One keep-alive HTTP/1.1 connection to the proxy.
async fn client_connection(addr: SocketAddr) -> SendRequest<Full<Bytes>> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

/// Sends one request on `sender` and returns the status and body.
async fn send(
    sender: &mut SendRequest<Full<Bytes>>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &'static str,
) -> (u16, String) {
    sender.ready().await.unwrap();
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "proxy.test");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Full::new(Bytes::from_static(body.as_bytes())));
    let response = sender.send_request(request.unwrap()).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// A keep-alive HTTP/1.1 backend that counts the connections it accepts and records, for each
/// connection, the `x-client` values of the requests it served.
struct CountingBackend {
    addr: SocketAddr,
    accepts: Arc<AtomicUsize>,
    clients_per_conn: Arc<Mutex<Vec<HashSet<String>>>>,
}

impl CountingBackend {
    /// `gate` is awaited by every request before it is answered.
    async fn start(gate: Option<Arc<tokio::sync::Barrier>>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepts = Arc::new(AtomicUsize::new(0));
        let clients_per_conn = Arc::new(Mutex::new(Vec::new()));
        let (count, record) = (Arc::clone(&accepts), Arc::clone(&clients_per_conn));
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                count.fetch_add(1, Ordering::SeqCst);
                let index = {
                    let mut record = record.lock().unwrap();
                    record.push(HashSet::new());
                    record.len() - 1
                };
                let (record, gate) = (Arc::clone(&record), gate.clone());
                let service = service_fn(move |request: Request<Incoming>| {
                    let client = request
                        .headers()
                        .get("x-client")
                        .map(|v| v.to_str().unwrap().to_owned())
                        .unwrap_or_default();
                    record.lock().unwrap()[index].insert(client.clone());
                    let gate = gate.clone();
                    async move {
                        if let Some(gate) = gate {
                            gate.wait().await;
                        }
                        Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(
                            client,
                        ))))
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        Self {
            addr,
            accepts,
            clients_per_conn,
        }
    }

    fn accepts(&self) -> usize {
        self.accepts.load(Ordering::SeqCst)
    }
}

#[tokio::test]
async fn one_client_connection_reuses_one_upstream_connection() {
    let backend = CountingBackend::start(None).await;
    let proxy = TestProxy::start(ProxyConfig::default()).await;
    proxy.route("/user/alice", &format!("http://{}", backend.addr));
    let mut client = client_connection(proxy.addr).await;
    for _ in 0..5 {
        let (status, _) = send(&mut client, "GET", "/user/alice/api", &[], "").await;
        assert_eq!(status, 200);
    }
    let (status, _) = send(&mut client, "POST", "/user/alice/api", &[], "a body").await;
    assert_eq!(status, 200);
    assert_eq!(
        backend.accepts(),
        1,
        "every request went on the first connection"
    );
}

#[tokio::test]
async fn client_connections_never_share_an_upstream_connection() {
    // The first round is answered only when both requests are at the backend at once.
    let gate = Arc::new(tokio::sync::Barrier::new(2));
    let backend = CountingBackend::start(Some(gate)).await;
    let proxy = TestProxy::start(ProxyConfig::default()).await;
    proxy.route("/user/alice", &format!("http://{}", backend.addr));
    let mut a = client_connection(proxy.addr).await;
    let mut b = client_connection(proxy.addr).await;
    let (first_a, first_b) = tokio::join!(
        send(&mut a, "GET", "/user/alice/x", &[("x-client", "a")], ""),
        send(&mut b, "GET", "/user/alice/x", &[("x-client", "b")], ""),
    );
    assert_eq!(first_a, (200, "a".to_owned()));
    assert_eq!(first_b, (200, "b".to_owned()));
    // More rounds, each with both requests in flight together.
    for _ in 0..4 {
        let (ra, rb) = tokio::join!(
            send(&mut a, "GET", "/user/alice/x", &[("x-client", "a")], ""),
            send(&mut b, "GET", "/user/alice/x", &[("x-client", "b")], ""),
        );
        assert_eq!(ra, (200, "a".to_owned()));
        assert_eq!(rb, (200, "b".to_owned()));
    }
    let per_conn = backend.clients_per_conn.lock().unwrap().clone();
    for clients in &per_conn {
        assert_eq!(
            clients.len(),
            1,
            "one upstream connection served {clients:?}"
        );
    }
    assert_eq!(backend.accepts(), 2, "each client kept its own connection");
}

/// Each client sends while the other's upstream connection is idle: a shared pool would hand
/// it the other's connection.
#[tokio::test]
async fn client_connections_take_turns_without_sharing() {
    let backend = CountingBackend::start(None).await;
    let proxy = TestProxy::start(ProxyConfig::default()).await;
    proxy.route("/user/alice", &format!("http://{}", backend.addr));
    let mut a = client_connection(proxy.addr).await;
    let mut b = client_connection(proxy.addr).await;
    for _ in 0..4 {
        assert_eq!(
            send(&mut a, "GET", "/user/alice/x", &[("x-client", "a")], "").await,
            (200, "a".to_owned())
        );
        assert_eq!(
            send(&mut b, "GET", "/user/alice/x", &[("x-client", "b")], "").await,
            (200, "b".to_owned())
        );
    }
    let per_conn = backend.clients_per_conn.lock().unwrap().clone();
    for clients in &per_conn {
        assert_eq!(
            clients.len(),
            1,
            "one upstream connection served {clients:?}"
        );
    }
    assert_eq!(backend.accepts(), 2);
}

/// A backend that answers the first request on each connection (keep-alive) and closes the
/// connection after reading the second without answering it: a server whose idle timeout
/// fires just as a request arrives on a kept-alive connection.
async fn closing_backend() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepts = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepts);
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                for answered in [true, false] {
                    if !read_request(&mut stream).await {
                        return;
                    }
                    if answered {
                        let response = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        stream.write_all(response).await.unwrap();
                    }
                }
                // Dropped: closed with the second request unanswered.
            });
        }
    });
    (addr, accepts)
}

/// Reads one request head and its `content-length` body; `false` at end of stream.
async fn read_request(stream: &mut TcpStream) -> bool {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        if stream.read(&mut byte).await.unwrap_or(0) == 0 {
            return false;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .map_or(0, |value| value.trim().parse().unwrap());
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await.is_ok()
}

#[tokio::test]
async fn bodiless_get_is_resent_when_the_upstream_closed_the_connection() {
    let (addr, accepts) = closing_backend().await;
    let proxy = TestProxy::start(ProxyConfig::default()).await;
    proxy.route("/user/alice", &format!("http://{addr}"));
    let mut client = client_connection(proxy.addr).await;
    assert_eq!(
        send(&mut client, "GET", "/user/alice/a", &[], "").await,
        (200, "ok".to_owned())
    );
    // Written on the kept connection, which the backend closes unanswered: sent again on a
    // new one.
    assert_eq!(
        send(&mut client, "GET", "/user/alice/b", &[], "").await,
        (200, "ok".to_owned())
    );
    assert_eq!(accepts.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn post_with_a_body_is_not_resent() {
    let (addr, accepts) = closing_backend().await;
    let proxy = TestProxy::start(ProxyConfig::default()).await;
    proxy.route("/user/alice", &format!("http://{addr}"));
    let mut client = client_connection(proxy.addr).await;
    assert_eq!(
        send(&mut client, "GET", "/user/alice/a", &[], "").await.0,
        200
    );
    let (status, _) = send(&mut client, "POST", "/user/alice/b", &[], "payload").await;
    assert_eq!(status, 502);
    assert_eq!(accepts.load(Ordering::SeqCst), 1, "not sent a second time");
}

#[tokio::test]
async fn connection_closed_while_idle_is_replaced() {
    // This backend closes every connection after its one response, without saying so.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepts = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepts);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                if read_request(&mut stream).await {
                    let response = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                    stream.write_all(response).await.unwrap();
                }
            });
        }
    });
    let proxy = TestProxy::start(ProxyConfig::default()).await;
    proxy.route("/user/alice", &format!("http://{addr}"));
    let mut client = client_connection(proxy.addr).await;
    for _ in 0..3 {
        assert_eq!(
            send(&mut client, "GET", "/user/alice/a", &[], "").await,
            (200, "ok".to_owned())
        );
    }
    assert_eq!(accepts.load(Ordering::SeqCst), 3);
}

/// A keep-alive backend that sends on the channel when one of its connections has closed.
async fn reporting_backend() -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (closed_tx, closed) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let closed_tx = closed_tx.clone();
            tokio::spawn(async move {
                let service = service_fn(|_request: Request<Incoming>| async {
                    Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from("ok"))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
                let _ = closed_tx.send(());
            });
        }
    });
    (addr, closed)
}

#[tokio::test]
async fn idle_upstream_connection_is_closed_after_the_idle_timeout() {
    let (addr, mut closed) = reporting_backend().await;
    let config = ProxyConfig {
        upstream_idle_timeout: std::time::Duration::from_millis(50),
        ..ProxyConfig::default()
    };
    let proxy = TestProxy::start(config).await;
    proxy.route("/user/alice", &format!("http://{addr}"));
    let mut client = client_connection(proxy.addr).await;
    assert_eq!(
        send(&mut client, "GET", "/user/alice/a", &[], "").await.0,
        200
    );
    // The client connection stays open; its idle upstream connection does not.
    closed.recv().await.unwrap();
    assert_eq!(
        send(&mut client, "GET", "/user/alice/a", &[], "").await.0,
        200
    );
}

#[tokio::test]
async fn idle_upstream_connection_goes_with_its_client_connection() {
    let (addr, mut closed) = reporting_backend().await;
    let proxy = TestProxy::start(ProxyConfig::default()).await;
    proxy.route("/user/alice", &format!("http://{addr}"));
    let mut client = client_connection(proxy.addr).await;
    assert_eq!(
        send(&mut client, "GET", "/user/alice/a", &[], "").await.0,
        200
    );
    drop(client);
    closed.recv().await.unwrap();
}
