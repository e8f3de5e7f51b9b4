//! Accepting connections and serving HTTP on them, for both the proxy and the route API.
//!
//! The caller binds the listener and passes a shutdown future (libraries bind nothing and
//! install no signal handlers). Plain TCP connections speak HTTP/1.1; TLS connections speak
//! HTTP/2 or HTTP/1.1 as ALPN decides. On shutdown the listener closes at once, every
//! connection is asked to finish its in-flight request and close, and `serve` returns when all
//! have, or when the grace period is over.
//!
//! Every connection holds one of the listener's [`ServeSettings::max_connections`] slots for
//! as long as its socket is open (an upgraded WebSocket keeps its slot in its tunnel). With
//! none free, `serve` stops accepting: new connections wait in the kernel's listen backlog
//! (and past that the kernel refuses them) until a connection closes. Idle connections do not
//! hold slots forever: an HTTP/1.1 connection must complete each request head within
//! [`ServeSettings::header_timeout`] of being ready for it, and an HTTP/2 connection with no
//! request in flight for that long is closed with GOAWAY.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::rt::{Read, Write};
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio_rustls::TlsAcceptor;

use crate::errors::ResponseBody;

/// How long a client has to complete a TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often an HTTP/2 connection is pinged, and how long the answer may take before the
/// connection is dropped as dead.
const HTTP2_PING_INTERVAL: Duration = Duration::from_secs(30);
const HTTP2_PING_TIMEOUT: Duration = Duration::from_secs(20);
/// Requests one HTTP/2 connection may have in flight at once (hyper's default, pinned).
const HTTP2_MAX_STREAMS: u32 = 200;
/// How often, at most, reaching the connection cap is logged.
const CAP_WARNING_EVERY: Duration = Duration::from_secs(60);
/// The default of [`ServeSettings::max_connections`] and `ProxyConfig::max_connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

/// What a handler knows of the connection a request came on.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    /// The client's address.
    pub remote: SocketAddr,
    /// The local port the connection was accepted on.
    pub local_port: u16,
    /// Whether the connection is TLS.
    pub tls: bool,
}

/// Something that answers requests: the proxy or the route API.
pub trait Handler: Send + Sync + 'static {
    /// Answers one request. Failures are responses too: a handler never errors.
    fn handle(
        self: Arc<Self>,
        request: Request<Incoming>,
        conn: ConnInfo,
    ) -> impl Future<Output = Response<ResponseBody>> + Send;
}

/// Connection-level settings.
#[derive(Clone)]
pub struct ServeSettings {
    /// Largest request head accepted, in bytes (hyper answers 431 past it).
    pub max_header_bytes: usize,
    /// Time allowed from a connection being ready for a request to its head being complete
    /// (HTTP/1.1); how long an HTTP/2 connection may stay with no request in flight.
    pub header_timeout: Duration,
    /// How long shutdown waits for in-flight requests before giving up on them.
    pub shutdown_grace: Duration,
    /// Most connections open at once on this listener, upgraded ones included; past it new
    /// connections wait in the kernel's listen backlog until one closes. At least 1.
    pub max_connections: usize,
    /// TLS for the listener, if any.
    pub tls: Option<TlsAcceptor>,
}

/// Serves `handler` on `listener` until `shutdown` resolves, then drains.
pub async fn serve<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    settings: ServeSettings,
    shutdown: impl Future<Output = ()>,
) {
    let local_port = listener.local_addr().map_or(0, |a| a.port());
    let (stop_tx, stop_rx) = watch::channel(false);
    // Every connection task holds a sender; `recv` yields `None` once all have finished.
    let (drain_tx, mut drain_rx) = mpsc::channel::<Infallible>(1);
    let settings = Arc::new(settings);
    let slots = Arc::new(Semaphore::new(
        settings.max_connections.clamp(1, Semaphore::MAX_PERMITS),
    ));
    let mut warned_at: Option<tokio::time::Instant> = None;
    tokio::pin!(shutdown);
    loop {
        let slot = match Arc::clone(&slots).try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                // Once a minute at most: a listener that sits at its cap would flood the log.
                if warned_at.is_none_or(|at| at.elapsed() >= CAP_WARNING_EVERY) {
                    warned_at = Some(tokio::time::Instant::now());
                    tracing::warn!(
                        max_connections = settings.max_connections,
                        port = local_port,
                        "connection cap reached: new connections wait in the listen backlog until one closes"
                    );
                }
                tokio::select! {
                    () = &mut shutdown => break,
                    slot = Arc::clone(&slots).acquire_owned() => match slot {
                        Ok(slot) => slot,
                        // The semaphore is never closed.
                        Err(_) => break,
                    },
                }
            }
        };
        let (stream, remote) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let conn = ConnInfo {
            remote,
            local_port,
            tls: settings.tls.is_some(),
        };
        // The slot goes with the socket, into a tunnel after an upgrade, and is freed when
        // the socket closes.
        let stream = Admitted { stream, slot };
        let handler = Arc::clone(&handler);
        let settings = Arc::clone(&settings);
        let stop = stop_rx.clone();
        let drain = drain_tx.clone();
        tokio::spawn(async move {
            let _drain = drain;
            match &settings.tls {
                None => serve_http1(TokioIo::new(stream), handler, conn, &settings, stop).await,
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream));
                    let stream = match handshake.await {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(error)) => {
                            tracing::debug!(%remote, %error, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%remote, "TLS handshake timed out");
                            return;
                        }
                    };
                    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                    let io = TokioIo::new(stream);
                    if h2 {
                        serve_http2(io, handler, conn, &settings, stop).await;
                    } else {
                        serve_http1(io, handler, conn, &settings, stop).await;
                    }
                }
            }
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    drop(drain_tx);
    if tokio::time::timeout(settings.shutdown_grace, drain_rx.recv())
        .await
        .is_err()
    {
        tracing::warn!("shutdown grace period over; closing the remaining connections");
    }
}

fn service<H: Handler>(
    handler: Arc<H>,
    conn: ConnInfo,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response<ResponseBody>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<ResponseBody>, Infallible>> + Send,
> + Clone {
    service_fn(move |request| {
        let handler = Arc::clone(&handler);
        async move { Ok::<_, Infallible>(handler.handle(request, conn).await) }
    })
}

async fn serve_http1<I, H>(
    io: I,
    handler: Arc<H>,
    conn: ConnInfo,
    settings: &ServeSettings,
    mut stop: watch::Receiver<bool>,
) where
    I: Read + Write + Unpin + Send + 'static,
    H: Handler,
{
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_timeout)
        .max_buf_size(settings.max_header_bytes.max(8192))
        .serve_connection(io, service(handler, conn))
        .with_upgrades();
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => log_end(result, conn),
        () = stopping(&mut stop) => {
            connection.as_mut().graceful_shutdown();
            log_end(connection.await, conn);
        }
    }
}

async fn serve_http2<I, H>(
    io: I,
    handler: Arc<H>,
    conn: ConnInfo,
    settings: &ServeSettings,
    mut stop: watch::Receiver<bool>,
) where
    I: Read + Write + Unpin + Send + 'static,
    H: Handler,
{
    // hyper's HTTP/2 server has no idle timer: requests in flight are counted here, and a
    // connection with none for `header_timeout` is closed like an idle HTTP/1.1 one. That
    // also bounds a connection that never completes a request (a trickled header block).
    let (in_flight, activity) = watch::channel(0_usize);
    let in_flight = Arc::new(in_flight);
    let service = service_fn(move |request| {
        let handler = Arc::clone(&handler);
        let guard = InFlight::start(Arc::clone(&in_flight));
        async move {
            let response = handler.handle(request, conn).await;
            Ok::<_, Infallible>(response.map(|body| CountedBody {
                body,
                _guard: guard,
            }))
        }
    });
    let connection = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(settings.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(HTTP2_MAX_STREAMS)
        .keep_alive_interval(Some(HTTP2_PING_INTERVAL))
        .keep_alive_timeout(HTTP2_PING_TIMEOUT)
        .serve_connection(io, service);
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => log_end(result, conn),
        () = stopping(&mut stop) => {
            connection.as_mut().graceful_shutdown();
            log_end(connection.await, conn);
        }
        () = idle(activity, settings.header_timeout) => {
            tracing::debug!(remote = %conn.remote, "closing an idle HTTP/2 connection");
            connection.as_mut().graceful_shutdown();
            log_end(connection.await, conn);
        }
    }
}

/// Resolves once the count of requests in flight has stayed 0 for `timeout`, with no request
/// starting in between.
async fn idle(mut activity: watch::Receiver<usize>, timeout: Duration) {
    loop {
        // The sender lives as long as the connection's service; gone, nothing can start.
        if activity.wait_for(|n| *n == 0).await.is_err() {
            return std::future::pending().await;
        }
        // Any change (a request starting, even one that ends at once) restarts the wait.
        match tokio::time::timeout(timeout, activity.changed()).await {
            Err(_elapsed) => return,
            Ok(Ok(())) => {}
            Ok(Err(_closed)) => return std::future::pending().await,
        }
    }
}

/// One request in flight on an HTTP/2 connection, until its response body is done.
struct InFlight(Arc<watch::Sender<usize>>);

impl InFlight {
    fn start(count: Arc<watch::Sender<usize>>) -> Self {
        count.send_modify(|n| *n += 1);
        Self(count)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// A response body that keeps its request counted as in flight until it is dropped.
struct CountedBody {
    body: ResponseBody,
    _guard: InFlight,
}

impl Body for CountedBody {
    type Data = Bytes;
    type Error = <ResponseBody as Body>::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// An accepted socket with its slot under the listener's connection cap: the slot is freed
/// when the socket is dropped, wherever it went (a hyper connection, a TLS stream, a tunnel).
pub(crate) struct Admitted {
    stream: TcpStream,
    slot: OwnedSemaphorePermit,
}

/// The slot of an [`Admitted`] socket taken apart; hold it as long as the socket.
pub(crate) struct Slot {
    _permit: OwnedSemaphorePermit,
}

impl Admitted {
    /// The socket and its slot, for code that needs the bare `TcpStream` (the tunnel's
    /// buffer-free path).
    pub(crate) fn into_parts(self) -> (TcpStream, Slot) {
        (self.stream, Slot { _permit: self.slot })
    }
}

impl AsyncRead for Admitted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Admitted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// Resolves once shutdown has begun.
async fn stopping(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopping| *stopping).await;
}

fn log_end(result: Result<(), hyper::Error>, conn: ConnInfo) {
    if let Err(error) = result {
        tracing::debug!(remote = %conn.remote, %error, "connection ended with an error");
    }
}

/// The front tier as one unit: the proxy on `proxy_listener` and the route API on
/// `api_listener` (never TLS), both over `table`, until `stop` turns true; returns once both
/// have drained. The one place the two services are assembled, for the binary and the tests.
#[allow(clippy::too_many_arguments)]
pub async fn serve_front_tier(
    proxy_listener: TcpListener,
    api_listener: TcpListener,
    table: Arc<crate::RouteTable>,
    config: crate::ProxyConfig,
    api_token: String,
    tls: Option<TlsAcceptor>,
    metrics: crate::metrics::Metrics,
    stop: watch::Receiver<bool>,
) {
    let settings = ServeSettings {
        max_header_bytes: config.max_header_bytes,
        header_timeout: config.header_timeout,
        shutdown_grace: config.shutdown_grace,
        max_connections: config.max_connections,
        tls,
    };
    let api_settings = ServeSettings {
        tls: None,
        ..settings.clone()
    };
    let proxy = Arc::new(crate::Proxy::new(
        Arc::clone(&table),
        config,
        metrics.clone(),
    ));
    let api = Arc::new(crate::api::RouteApi::new(table, &api_token, metrics));
    let (mut proxy_stop, mut api_stop) = (stop.clone(), stop);
    tokio::join!(
        serve(proxy_listener, proxy, settings, stopping(&mut proxy_stop)),
        serve(api_listener, api, api_settings, stopping(&mut api_stop)),
    );
}
