//! A proxy and route API on loopback port 0, backends to route to, and raw clients.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use gantry_proxy::metrics::Metrics;
use gantry_proxy::server::serve_front_tier;
use gantry_proxy::{ProxyConfig, Route, RouteChange, RoutePrefix, RouteTable, Target};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub const TOKEN: &str = "test-token";

/// A running proxy with its route API.
pub struct TestProxy {
    pub addr: SocketAddr,
    pub api_addr: SocketAddr,
    pub table: Arc<RouteTable>,
    pub metrics: Metrics,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl TestProxy {
    pub async fn start(config: ProxyConfig) -> Self {
        Self::start_with_tls(config, None).await
    }

    /// A proxy whose client listener speaks TLS with this acceptor.
    pub async fn start_with_tls(
        config: ProxyConfig,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let api_addr = api_listener.local_addr().unwrap();
        let table = Arc::new(RouteTable::new(config.host_routing));
        let metrics = Metrics::new();
        let (stop, stop_rx) = watch::channel(false);
        let tasks = vec![tokio::spawn(serve_front_tier(
            listener,
            api_listener,
            Arc::clone(&table),
            config,
            TOKEN.to_owned(),
            tls,
            metrics.clone(),
            stop_rx,
        ))];
        Self {
            addr,
            api_addr,
            table,
            metrics,
            stop,
            tasks,
        }
    }

    pub fn route(&self, prefix: &str, target: &str) {
        let route = Route::new(
            RoutePrefix::parse(prefix, self.table.host_routing()).unwrap(),
            Target::parse(target).unwrap(),
            None,
        );
        self.table.apply(RouteChange::Upsert(route));
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Starts a graceful shutdown and returns a handle that resolves when it is complete.
    pub fn begin_shutdown(self) -> JoinHandle<()> {
        let _ = self.stop.send(true);
        let tasks = self.tasks;
        tokio::spawn(async move {
            for task in tasks {
                task.await.unwrap();
            }
        })
    }
}

/// A backend that answers every request with a JSON description of what it received, and
/// counts the requests it saw.
pub struct EchoBackend {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
}

impl EchoBackend {
    pub async fn start() -> Self {
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&hits);
        let addr = serve_backend(move |request: Request<Incoming>| {
            let counter = Arc::clone(&counter);
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                let headers: serde_json::Map<String, serde_json::Value> = request
                    .headers()
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").into()))
                    .collect();
                let uri = request.uri().to_string();
                let method = request.method().to_string();
                let body = request
                    .into_body()
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                let json = serde_json::json!({
                    "method": method,
                    "uri": uri,
                    "headers": headers,
                    "body_len": body.len(),
                });
                Response::new(Full::new(Bytes::from(json.to_string())))
            }
        })
        .await;
        Self { addr, hits }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// Serves `handler` over HTTP/1.1 on a loopback port 0 until the test ends.
pub async fn serve_backend<F, Fut, B>(handler: F) -> SocketAddr
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<B>> + Send + 'static,
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let handler = handler.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request| {
                    let handler = handler.clone();
                    async move { Ok::<_, Infallible>(handler(request).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}

/// A plain HTTP/1.1 client for the proxy.
pub fn client() -> hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
> {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http()
}

/// Sends a GET and returns the status and body text.
pub async fn get(url: &str) -> (u16, String) {
    get_with(url, &[]).await
}

/// Sends a GET with extra headers and returns the status and body text.
pub async fn get_with(url: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut request = Request::get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = client()
        .request(request.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Sends raw bytes on a new connection and returns everything read until the server closes
/// or `wait` passes. For requests no well-behaved client library would send.
pub async fn raw_exchange(addr: SocketAddr, request: &[u8], wait: Duration) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// The status code of a raw HTTP/1.1 response.
pub fn status_of(response: &str) -> u16 {
    response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"))
}

/// A request to the route API.
pub async fn api(
    proxy: &TestProxy,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, String) {
    let mut request = Request::builder()
        .method(method)
        .uri(format!("http://{}{}", proxy.api_addr, path));
    if let Some(token) = token {
        request = request.header("authorization", format!("token {token}"));
    }
    let body = Full::new(Bytes::from(body.unwrap_or("").to_owned()));
    let response = client().request(request.body(body).unwrap()).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// A WebSocket server that echoes every message.
pub async fn ws_echo_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(message)) = ws.next().await {
                    if message.is_close() || ws.send(message).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

pub async fn wait_until(mut condition: impl FnMut() -> bool) {
    for _ in 0..200 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not reached within 2 s");
}
