//! Accepting connections and serving HTTP on them, for both the proxy and the route API.
//!
//! The caller binds the listener and passes a shutdown future (libraries bind nothing and
//! install no signal handlers). Plain TCP connections speak HTTP/1.1; TLS connections speak
//! HTTP/2 or HTTP/1.1 as ALPN decides. On shutdown the listener closes at once, every
//! connection is asked to finish its in-flight request and close, and `serve` returns when all
//! have, or when the grace period is over.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::rt::{Read, Write};
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;

use crate::errors::ResponseBody;

/// How long a client has to complete a TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

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
    /// Time allowed from a connection being ready for a request to its head being complete.
    pub header_timeout: Duration,
    /// How long shutdown waits for in-flight requests before giving up on them.
    pub shutdown_grace: Duration,
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
    tokio::pin!(shutdown);
    loop {
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
    let connection = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(settings.max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .serve_connection(io, service(handler, conn));
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => log_end(result, conn),
        () = stopping(&mut stop) => {
            connection.as_mut().graceful_shutdown();
            log_end(connection.await, conn);
        }
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
