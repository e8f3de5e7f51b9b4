//! Sending a prepared request upstream and streaming its response back.
//!
//! There are two ways a request reaches its upstream:
//!
//! - **Driven from the client connection's task** (the keep-alive hot path): a request that came
//!   on an HTTP/1.1 client connection, to an `http://` target, that is not a protocol upgrade.
//!   The upstream connection is hyper's low-level HTTP/1 client connection
//!   (`hyper::client::conn::http1`), and nobody spawns a task for it: the request future polls
//!   the upstream [`Connection`] while it waits for the response head, and the response body
//!   ([`UpstreamResponseBody`]) polls it before each frame while the body streams. Once the body
//!   has ended and the connection is idle again, it goes back into the client connection's own
//!   idle slot ([`ConnSlot`]) for that connection's next request. One request of one client
//!   connection owns an upstream connection at a time: a slot belongs to one client
//!   connection, and HTTP/1.1 serves one request of a connection at a time. Nothing is shared,
//!   so there is no global pool lock and no hand-off to another task and back (which is what
//!   hyper-util's pooled client does: two extra task wake-ups per request).
//! - **The shared pool** (hyper-util's legacy `Client`) for everything else, each for a reason:
//!   `https://` targets, because a TLS handshake is expensive and a pool shared by all clients
//!   amortises it where a per-client-connection slot would repeat it for every client
//!   connection; requests from HTTP/2 client connections, because hyper serves each of their
//!   streams in its own task, many at once, so one idle slot per connection does not fit;
//!   WebSocket and other upgrades, because the upstream connection must keep being driven until
//!   it hands over its socket, after the `101` response has left this request's future, which
//!   the pool's own connection task does; and the error-target hook, which is rare.
//!
//! **Stale connections.** An idle connection in a slot is not read from, so an upstream that
//! closes it is noticed on the next use: the connection is polled once before the request is
//! handed to it, and a close seen then costs nothing but a new connection (the request was not
//! written). If the close races with the request, the request may already be written: it is
//! then sent again on a new connection only when that cannot do harm twice, that is for
//! `GET`, `HEAD`, `OPTIONS`, `PUT`, `DELETE` and `TRACE` requests without a body; anything
//! else fails with 502.
//!
//! **Lifetimes.** An idle connection stays in its slot at most the upstream idle timeout
//! ([`crate::ProxyConfig::upstream_idle_timeout`]): the client connection's task runs
//! [`ConnSlot::expire_idle`] beside the connection and drops it then. It is dropped at the
//! latest with the client connection. A connection whose response body was not read to its
//! end (the client went away) is closed, never reused.
//!
//! **Threads.** `gantry proxy --threads 1` runs tokio's current-thread scheduler: one event
//! loop, as one nginx worker. With more threads each client connection's task still drives its
//! own upstream connections, so the exchange never crosses threads either.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http::uri::{Authority, Scheme};
use http::{HeaderValue, Method, Request, Response, Uri, header};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{Either, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, Connection, SendRequest};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::config::ProxyConfig;

/// The body sent upstream: the client's streamed body, or nothing (error-target lookups, and a
/// bodiless request sent again).
pub type RequestBody = Either<Incoming, Empty<Bytes>>;

type PooledClient = Client<HttpsConnector<HttpConnector>, RequestBody>;
type UpstreamConnection = Connection<TokioIo<TcpStream>, RequestBody>;

/// Why a request got no response from its upstream.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No connection could be opened (refused, unresolvable, or past the connect timeout).
    #[error("cannot connect to the upstream {authority}")]
    Connect {
        /// The upstream's `host:port`.
        authority: Authority,
        /// What the connect attempt returned.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP exchange on a connection of our own failed.
    #[error("the exchange with the upstream failed")]
    Exchange(#[source] hyper::Error),
    /// The shared pool's client failed.
    #[error("the pooled upstream request failed")]
    Pooled(#[source] hyper_util::client::legacy::Error),
}

impl SendError {
    /// Whether the upstream could not be reached at all (503 rather than 502).
    pub fn is_connect(&self) -> bool {
        match self {
            Self::Connect { .. } => true,
            Self::Exchange(_) => false,
            Self::Pooled(error) => error.is_connect(),
        }
    }
}

/// How requests reach upstreams: connections driven by the client connection's task where the
/// request allows it, the shared pool otherwise (see the module docs).
#[derive(Debug)]
pub struct Upstreams {
    pool: PooledClient,
    connect_timeout: Duration,
    idle_timeout: Duration,
}

impl Upstreams {
    /// The shared pool and the timeouts, from the data plane's settings.
    pub fn new(config: &ProxyConfig) -> Self {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(config.upstream_connect_timeout));
        let builder = match HttpsConnectorBuilder::new().with_native_roots() {
            Ok(builder) => builder,
            Err(error) => {
                tracing::warn!(%error, "no system CA certificates found; https upstreams will fail verification");
                HttpsConnectorBuilder::new().with_tls_config(empty_roots_tls_config())
            }
        };
        let connector = builder.https_or_http().enable_http1().wrap_connector(http);
        let pool = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(config.upstream_idle_timeout)
            .build(connector);
        Self {
            pool,
            connect_timeout: config.upstream_connect_timeout,
            idle_timeout: config.upstream_idle_timeout,
        }
    }

    /// Sends `request` (absolute URI, headers already prepared) and returns the response
    /// head with its body streaming. A [`ConnSlot`] in the request's extensions (put there by
    /// the HTTP/1.1 server) selects the driven path; see the module docs.
    pub async fn send(
        &self,
        mut request: Request<RequestBody>,
    ) -> Result<Response<UpstreamResponseBody>, SendError> {
        let slot = request.extensions_mut().remove::<ConnSlot>();
        let driven = slot.filter(|_| {
            request.uri().scheme() == Some(&Scheme::HTTP)
                && !request.headers().contains_key(header::UPGRADE)
        });
        let (Some(slot), Some(authority)) = (driven, request.uri().authority().cloned()) else {
            return self.send_pooled(request).await;
        };
        self.send_driven(slot, authority, request).await
    }

    /// Sends through the shared pool.
    pub async fn send_pooled(
        &self,
        request: Request<RequestBody>,
    ) -> Result<Response<UpstreamResponseBody>, SendError> {
        let response = self
            .pool
            .request(request)
            .await
            .map_err(SendError::Pooled)?;
        Ok(response.map(UpstreamResponseBody::pooled))
    }

    async fn send_driven(
        &self,
        slot: ConnSlot,
        authority: Authority,
        mut request: Request<RequestBody>,
    ) -> Result<Response<UpstreamResponseBody>, SendError> {
        to_origin_form(&mut request, &authority);
        let request = match slot.take(&authority) {
            None => request,
            Some(reused) => {
                // Kept only where a second sending is allowed: the original is consumed once
                // written.
                let copy = resendable(&request).then(|| copy_head(&request));
                match exchange(reused, request).await {
                    Ok((response, conn)) => return Ok(wrap(response, conn, slot, self)),
                    // Never written: the connection was closed while idle. Any method may go
                    // on a new connection.
                    Err(Failed {
                        request: Some(request),
                        ..
                    }) => request,
                    Err(Failed {
                        error,
                        request: None,
                    }) => match copy {
                        Some(copy) if closed_under_us(&error) => {
                            tracing::debug!(%authority, %error, "reused upstream connection was closed; sending again");
                            copy
                        }
                        _ => return Err(SendError::Exchange(error)),
                    },
                }
            }
        };
        let fresh = self.connect(&authority).await?;
        match exchange(fresh, request).await {
            Ok((response, conn)) => Ok(wrap(response, conn, slot, self)),
            Err(Failed { error, .. }) => Err(SendError::Exchange(error)),
        }
    }

    /// Opens a TCP connection within the connect timeout and wraps it as an HTTP/1 client
    /// connection (the handshake does no I/O).
    async fn connect(&self, authority: &Authority) -> Result<Box<Driven>, SendError> {
        let connect_error = |source| SendError::Connect {
            authority: authority.clone(),
            source,
        };
        let stream = tokio::time::timeout(self.connect_timeout, connect_tcp(authority))
            .await
            .map_err(|_elapsed| {
                connect_error(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "connect timed out",
                ))
            })?
            .map_err(connect_error)?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(SendError::Exchange)?;
        Ok(Box::new(Driven {
            authority: authority.clone(),
            sender,
            conn,
        }))
    }
}

/// One upstream connection and its request handle, owned by one request at a time.
struct Driven {
    authority: Authority,
    sender: SendRequest<RequestBody>,
    conn: UpstreamConnection,
}

impl Driven {
    /// Polls the connection once without waiting. `false` when it is finished (closed or
    /// failed): it cannot take a request.
    fn poll_once(&mut self, cx: &mut Context<'_>) -> bool {
        match Pin::new(&mut self.conn).poll(cx) {
            Poll::Pending => true,
            Poll::Ready(result) => {
                if let Err(error) = result {
                    tracing::debug!(authority = %self.authority, %error, "upstream connection failed");
                }
                false
            }
        }
    }
}

/// An exchange that did not produce a response; `request` is the request when it was never
/// written.
struct Failed {
    error: hyper::Error,
    request: Option<Request<RequestBody>>,
}

/// Sends `request` on `driven`, polling the connection until the response head arrives.
/// Returns the connection with the response unless it finished on the way.
async fn exchange(
    mut driven: Box<Driven>,
    request: Request<RequestBody>,
) -> Result<(Response<Incoming>, Option<Box<Driven>>), Failed> {
    // Let an idle connection see a close (or the end of its previous exchange) before the
    // request is handed to it.
    let mut open = std::future::poll_fn(|cx| Poll::Ready(driven.poll_once(cx))).await;
    let response = driven.sender.try_send_request(request);
    let mut response = pin!(response);
    let result = std::future::poll_fn(|cx| {
        // The connection first: it writes the request and reads the response into the
        // future polled next.
        if open {
            open = driven.poll_once(cx);
        }
        response.as_mut().poll(cx)
    })
    .await;
    match result {
        Ok(response) => Ok((response, open.then_some(driven))),
        Err(mut error) => Err(Failed {
            request: error.take_message(),
            error: error.into_error(),
        }),
    }
}

/// The response with its body wired to drive the connection and return it to the slot.
fn wrap(
    response: Response<Incoming>,
    conn: Option<Box<Driven>>,
    slot: ConnSlot,
    upstreams: &Upstreams,
) -> Response<UpstreamResponseBody> {
    response.map(|body| UpstreamResponseBody {
        inner: body,
        driven: conn.map(|conn| Return {
            conn,
            slot,
            idle_timeout: upstreams.idle_timeout,
            ended: false,
        }),
    })
}

/// Whether a request written on a connection that then closed may be sent again: an
/// idempotent method and no body.
fn resendable(request: &Request<RequestBody>) -> bool {
    let idempotent = matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    );
    idempotent && request.body().is_end_stream()
}

/// A bodiless copy of a request's head, for sending it again.
fn copy_head(request: &Request<RequestBody>) -> Request<RequestBody> {
    let mut copy = Request::new(Either::Right(Empty::new()));
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.version_mut() = request.version();
    *copy.headers_mut() = request.headers().clone();
    copy
}

/// Whether an exchange failed because the upstream closed the connection under it, as a
/// server does with an idle keep-alive connection: no response at all, not a bad one.
fn closed_under_us(error: &hyper::Error) -> bool {
    if error.is_incomplete_message() || error.is_canceled() || error.is_closed() {
        return true;
    }
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::UnexpectedEof
            );
        }
        source = cause.source();
    }
    false
}

/// Turns the absolute upstream URI into the origin form HTTP/1.1 sends, and adds `Host` when
/// the client sent none (the pooled client does both itself).
fn to_origin_form(request: &mut Request<RequestBody>, authority: &Authority) {
    let origin = request
        .uri()
        .path_and_query()
        .cloned()
        .map_or_else(|| Uri::from_static("/"), Uri::from);
    *request.uri_mut() = origin;
    if !request.headers().contains_key(header::HOST)
        && let Ok(host) = HeaderValue::from_str(authority.as_str())
    {
        request.headers_mut().insert(header::HOST, host);
    }
}

/// Connects to each address of the authority in turn.
async fn connect_tcp(authority: &Authority) -> std::io::Result<TcpStream> {
    let port = authority.port_u16().unwrap_or(80);
    let host = authority.host();
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = literal.parse::<IpAddr>() {
        return TcpStream::connect(SocketAddr::new(ip, port)).await;
    }
    let mut last = None;
    for addr in tokio::net::lookup_host((host, port)).await? {
        match TcpStream::connect(addr).await {
            Ok(stream) => return Ok(stream),
            Err(error) => last = Some(error),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::NotFound, "the host has no address")
    }))
}

/// The body of an upstream's response. On a driven connection, polling it drives the
/// connection too, and the connection goes back to its slot once the body has ended.
pub struct UpstreamResponseBody {
    inner: Incoming,
    driven: Option<Return>,
}

/// A driven connection and where it goes when the response is done.
struct Return {
    conn: Box<Driven>,
    slot: ConnSlot,
    idle_timeout: Duration,
    ended: bool,
}

impl UpstreamResponseBody {
    /// A body from the shared pool, whose connection has its own task.
    pub fn pooled(inner: Incoming) -> Self {
        Self {
            inner,
            driven: None,
        }
    }
}

impl std::fmt::Debug for UpstreamResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamResponseBody")
            .field("driven", &self.driven.is_some())
            .finish_non_exhaustive()
    }
}

impl Body for UpstreamResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        // The connection first: it reads what the body yields next.
        if let Some(driven) = &mut this.driven
            && !driven.conn.poll_once(cx)
        {
            // Finished: what it read is already in the body's channel; it is not reused.
            this.driven = None;
        }
        let frame = Pin::new(&mut this.inner).poll_frame(cx);
        if let (Poll::Ready(None), Some(driven)) = (&frame, &mut this.driven) {
            driven.ended = true;
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for UpstreamResponseBody {
    fn drop(&mut self) {
        if let Some(driven) = self.driven.take()
            && (driven.ended || self.inner.is_end_stream())
        {
            driven.slot.park(driven.conn, driven.idle_timeout);
        }
    }
}

/// One client connection's idle upstream connection, if any: put in each request's
/// extensions by the HTTP/1.1 server, taken by [`Upstreams::send`] for the request and put
/// back by the response body. Dropped with the client connection.
#[derive(Clone)]
pub struct ConnSlot {
    inner: Arc<SlotInner>,
}

struct SlotInner {
    state: Mutex<SlotState>,
    /// Wakes [`ConnSlot::expire_idle`] when a connection is parked while it is not watching.
    parked: Notify,
}

#[derive(Default)]
struct SlotState {
    idle: Option<Idle>,
    /// Whether `expire_idle` has a timer running for the parked connection.
    watching: bool,
}

struct Idle {
    conn: Box<Driven>,
    expires: Instant,
}

impl std::fmt::Debug for ConnSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnSlot").finish_non_exhaustive()
    }
}

impl Default for ConnSlot {
    fn default() -> Self {
        Self::new()
    }
}

impl ConnSlot {
    /// An empty slot, for one client connection.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(SlotInner {
                state: Mutex::new(SlotState::default()),
                parked: Notify::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The idle connection to `authority`, if there is one and it has not expired. A
    /// connection to another upstream stays until one to the new upstream replaces it.
    fn take(&self, authority: &Authority) -> Option<Box<Driven>> {
        let mut state = self.lock();
        let idle = state
            .idle
            .take_if(|idle| idle.conn.authority == *authority)?;
        (idle.expires > Instant::now()).then_some(idle.conn)
    }

    /// Keeps `conn` for the next request if it is ready for one.
    fn park(&self, mut conn: Box<Driven>, idle_timeout: Duration) {
        // A last look, without waiting: the exchange must be complete on both sides (a
        // request body still being written, say, is not) and the upstream must not have
        // closed. Whoever polls it next registers a real waker.
        let mut cx = Context::from_waker(Waker::noop());
        if !conn.poll_once(&mut cx) || !conn.sender.is_ready() {
            return;
        }
        let expires = Instant::now() + idle_timeout;
        let mut state = self.lock();
        state.idle = Some(Idle { conn, expires });
        if !state.watching {
            state.watching = true;
            self.inner.parked.notify_one();
        }
    }

    /// Drops a parked connection once it has been idle for the upstream idle timeout. Runs
    /// beside the client connection for as long as it lives; never returns.
    pub async fn expire_idle(&self) {
        loop {
            self.inner.parked.notified().await;
            // One timer per idle period, not per request: when it fires early (the connection
            // was used and parked again since), it is set again for the new deadline.
            loop {
                let deadline = {
                    let mut state = self.lock();
                    let Some(idle) = &state.idle else {
                        state.watching = false;
                        break;
                    };
                    if idle.expires <= Instant::now() {
                        state.idle = None;
                        state.watching = false;
                        break;
                    }
                    idle.expires
                };
                tokio::time::sleep_until(deadline).await;
            }
        }
    }
}

fn empty_roots_tls_config() -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map(|builder| {
            builder
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth()
        })
        .unwrap_or_else(|_| unreachable!("ring supports the default protocol versions"))
}
