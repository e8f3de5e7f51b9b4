//! The proxy service: check the path, route, rewrite headers, forward, stream back.
//!
//! One request passes through these steps, in this order, in [`Proxy::handle`]:
//! 1. health check (`/_chp_healthz`, as CHP) answered before anything else;
//! 2. path safety ([`crate::path::canonical_path`]): an ambiguous path is answered 400 here
//!    and reaches no upstream;
//! 3. route lookup on the decoded path (and host, in host-routing mode); no route → 404, or
//!    the gate's answer for unrouted paths ([`Gate::unrouted`]);
//! 4. the access check of the route that matched: an owned route asks the [`Gate`], which
//!    passes the request or answers it (login, 403, 404); an open route passes;
//! 5. headers rewritten ([`crate::headers`]), the front tier's private cookies removed
//!    ([`PrivateCookies`]), the raw path forwarded under the target;
//! 6. the request sent over the pooled client, whose host names are looked up through
//!    [`GuardedResolver`] (a name that resolves only to refused addresses is answered 503);
//!    the upstream's response streamed back without `Set-Cookie`s naming private cookies, and
//!    activity recorded on the route (one atomic store) when the status is below 300; on
//!    `101 Switching Protocols` both upgraded connections are joined by a tunnel (the private
//!    `tunnel` module), which also ends when the gate's [`Lease`] does.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::{Either, Empty};
use hyper::body::Incoming;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::config::ProxyConfig;
use crate::errors::{ProxyError, ResponseBody, builtin_response};
use crate::gate::{Access, Admission, Gate, Lease};
use crate::headers::{ClientSide, is_upgrade, prepare_request_headers, remove_hop_by_hop};
use crate::metrics::Metrics;
use crate::path::canonical_path;
use crate::private_cookies::PrivateCookies;
use crate::resolve::{GuardedResolver, ResolveError};
use crate::routes::{Route, RouteTable, Target};
use crate::server::{ConnInfo, Handler};
use crate::tunnel;

/// The body sent upstream: the client's streamed body, or nothing (error-target lookups).
type UpstreamBody = Either<Incoming, Empty<Bytes>>;
type UpstreamClient = Client<HttpsConnector<HttpConnector<GuardedResolver>>, UpstreamBody>;

/// How long the error-target hook may take before the built-in page is used.
const ERROR_TARGET_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The routing reverse proxy: the route table, the pooled upstream client, the gate for owned
/// routes, the private cookies and the metrics.
#[derive(Debug)]
pub struct Proxy {
    table: Arc<RouteTable>,
    config: ProxyConfig,
    client: UpstreamClient,
    metrics: Metrics,
    /// Checks requests on owned routes; without one, owned routes answer 404.
    gate: Option<Arc<dyn Gate>>,
    /// Cookies that never cross to an upstream; `None` in CHP mode.
    private_cookies: Option<PrivateCookies>,
}

impl Proxy {
    /// Builds the proxy over a shared route table.
    pub fn new(table: Arc<RouteTable>, config: ProxyConfig, metrics: Metrics) -> Self {
        let client = upstream_client(&config, GuardedResolver::system());
        Self {
            table,
            config,
            client,
            metrics,
            gate: None,
            private_cookies: None,
        }
    }

    /// Puts `gate` in front of every owned route, and lets it answer unrouted paths.
    #[must_use]
    pub fn with_gate(mut self, gate: Arc<dyn Gate>) -> Self {
        self.gate = Some(gate);
        self
    }

    /// Keeps `cookies` from every upstream: removed from requests, and `Set-Cookie`s naming
    /// them removed from responses.
    #[must_use]
    pub fn with_private_cookies(mut self, cookies: PrivateCookies) -> Self {
        self.private_cookies = Some(cookies);
        self
    }

    /// Resolves upstream host names with `resolver` instead of the system's guarded resolver
    /// (tests answer from a table). A [`GuardedResolver`] always removes refused addresses.
    #[must_use]
    pub fn with_resolver(mut self, resolver: GuardedResolver) -> Self {
        self.client = upstream_client(&self.config, resolver);
        self
    }

    /// The route table this proxy reads.
    pub fn table(&self) -> &Arc<RouteTable> {
        &self.table
    }

    async fn forward(
        &self,
        mut request: Request<Incoming>,
        conn: &ConnInfo,
    ) -> Result<Response<ResponseBody>, Failure> {
        let route = match self.route(&request) {
            Ok(route) => route,
            Err(error) => {
                if let (ProxyError::NoRoute, Some(gate)) = (&error, &self.gate)
                    && let Ok(path) = canonical_path(request.uri().path())
                    && let Some(response) = gate.unrouted(&request, conn, &path).await
                {
                    return Ok(response);
                }
                return Err(Failure::new(
                    error,
                    request.headers(),
                    request.uri().clone(),
                ));
            }
        };
        let upgrade = request.version() == Version::HTTP_11 && is_upgrade(request.headers());
        // The access check runs on the route that matched, whatever spelling reached it.
        let lease = match route.access() {
            Access::Open => None,
            Access::Owned(owner) => {
                let Some(gate) = &self.gate else {
                    return Err(Failure::new(
                        ProxyError::NoRoute,
                        request.headers(),
                        request.uri().clone(),
                    ));
                };
                match gate.admit(&request, conn, owner, upgrade).await {
                    Admission::Pass(lease) => lease,
                    Admission::Refuse(response) => {
                        self.metrics.gate_refusals.inc();
                        return Ok(response);
                    }
                }
            }
        };
        let host = request_host(&request).and_then(|h| HeaderValue::from_str(h).ok());
        let accept = request.headers().get(header::ACCEPT).cloned();

        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));
        let path_and_query = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
        let uri = match route.target().upstream_uri(path_and_query) {
            Ok(uri) => uri,
            Err(error) => {
                tracing::warn!(route = %route.prefix(), %error, "cannot build the upstream URI");
                let headers = request.headers();
                return Err(Failure::new(
                    ProxyError::BadGateway,
                    headers,
                    request.uri().clone(),
                ));
            }
        };
        let (mut parts, body) = request.into_parts();
        let client_side = ClientSide {
            addr: conn.remote.ip(),
            trusted: self.config.is_trusted(conn.remote.ip()),
            tls: conn.tls,
            local_port: conn.local_port,
            host: host.as_ref().and_then(|h| h.to_str().ok()),
        };
        prepare_request_headers(&mut parts.headers, &client_side, upgrade);
        if let Some(private) = &self.private_cookies {
            private.strip_request(&mut parts.headers);
        }
        let original_uri = std::mem::replace(&mut parts.uri, uri);
        parts.version = Version::HTTP_11;
        let upstream_request = Request::from_parts(parts, Either::Left(body));
        let fail = |error| Failure {
            error,
            accept: accept.clone(),
            uri: original_uri.clone(),
        };

        let started = Instant::now();
        let sent = tokio::time::timeout(
            self.config.upstream_response_timeout,
            self.client.request(upstream_request),
        )
        .await;
        let mut response = match sent {
            Err(_elapsed) => {
                tracing::warn!(route = %route.prefix(), "upstream response timed out");
                return Err(fail(ProxyError::UpstreamTimeout));
            }
            Ok(Err(error)) if error.is_connect() => {
                if let Some(ResolveError::Refused {
                    host,
                    addresses,
                    reason,
                }) = find_cause(&error)
                {
                    tracing::warn!(route = %route.prefix(), host = %host, addresses = ?addresses, reason = *reason, "upstream refused: its host resolves only to addresses the proxy never connects to");
                    return Err(fail(ProxyError::UpstreamRefused));
                }
                tracing::warn!(route = %route.prefix(), error = %crate::errors::error_chain(&error), "upstream unreachable");
                return Err(fail(ProxyError::UpstreamUnavailable));
            }
            Ok(Err(error)) => {
                tracing::warn!(route = %route.prefix(), error = %crate::errors::error_chain(&error), "upstream request failed");
                return Err(fail(ProxyError::BadGateway));
            }
            Ok(Ok(response)) => response,
        };
        self.metrics
            .upstream_latency
            .observe(started.elapsed().as_secs_f64());

        // Only successful exchanges count as activity, as in CHP: a flood of errors from a
        // stopped server must not keep it looking busy to an idle culler.
        if response.status().as_u16() < 300 {
            route.touch();
        }
        let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
        if let Some(private) = &self.private_cookies {
            let blocked = private.filter_response(response.headers_mut());
            if blocked > 0 {
                self.metrics.blocked_set_cookies.inc_by(blocked as u64);
                tracing::warn!(route = %route.prefix(), blocked, "an upstream tried to set gantry's own cookies; removed");
            }
        }
        if let (true, Some(client_upgrade)) = (switching, client_upgrade) {
            let upstream_upgrade = hyper::upgrade::on(&mut response);
            self.spawn_tunnel(client_upgrade, upstream_upgrade, route, lease);
        }
        remove_hop_by_hop(response.headers_mut(), switching && upgrade);
        Ok(response.map(Either::Left))
    }

    /// Steps 2 and 3: the path check and the route lookup.
    fn route(&self, request: &Request<Incoming>) -> Result<Arc<Route>, ProxyError> {
        if request.method() == Method::CONNECT {
            return Err(ProxyError::BadRequest("CONNECT is not proxied"));
        }
        let path = canonical_path(request.uri().path()).map_err(|error| {
            self.metrics.rejected_paths.inc();
            ProxyError::BadPath(error)
        })?;
        let lookup_host = request_host(request).map(strip_port);
        if self.table.host_routing() && lookup_host.is_none() {
            return Err(ProxyError::BadRequest("the Host header is missing"));
        }
        self.table
            .lookup(lookup_host, &path)
            .ok_or(ProxyError::NoRoute)
    }

    fn spawn_tunnel(
        &self,
        client: hyper::upgrade::OnUpgrade,
        upstream: hyper::upgrade::OnUpgrade,
        route: Arc<Route>,
        lease: Option<Arc<Lease>>,
    ) {
        let open = self.metrics.open_websockets.clone();
        // Read now, before the handshake completes: a logout in between closes this tunnel too.
        let epoch = route.tunnel_epoch();
        tokio::spawn(async move {
            let (client, upstream) = match tokio::try_join!(client, upstream) {
                Ok(pair) => pair,
                Err(error) => {
                    tracing::debug!(%error, "upgrade did not complete");
                    return;
                }
            };
            open.inc();
            let prefix = route.prefix().clone();
            if let Err(error) = tunnel::run(client, upstream, route, epoch, lease).await {
                tracing::debug!(route = %prefix, %error, "tunnel ended with an error");
            }
            open.dec();
        });
    }

    /// The response for a failure: the error target's page when one is configured and
    /// answers, else the built-in page.
    async fn error_response(&self, failure: Failure) -> Response<ResponseBody> {
        let Failure { error, accept, uri } = failure;
        if let (Some(target), true) = (&self.config.error_target, error.uses_error_target())
            && let Some(response) = self
                .fetch_error_page(target, error.status(), uri.path())
                .await
        {
            return response;
        }
        builtin_response(error, accept.as_ref())
    }

    /// Asks the error target for `<target>/<code>?url=<path>`, as CHP does. `None` when it
    /// fails, so the caller falls back to the built-in page.
    async fn fetch_error_page(
        &self,
        target: &Target,
        status: StatusCode,
        path: &str,
    ) -> Option<Response<ResponseBody>> {
        let encoded: String =
            percent_encoding::utf8_percent_encode(path, percent_encoding::NON_ALPHANUMERIC)
                .collect();
        let uri = target
            .upstream_uri(&format!("/{}?url={encoded}", status.as_u16()))
            .ok()?;
        let request = Request::get(uri)
            .header(header::ACCEPT, "text/html")
            .body(Either::Right(Empty::new()))
            .ok()?;
        let response = tokio::time::timeout(ERROR_TARGET_TIMEOUT, self.client.request(request))
            .await
            .ok()?
            // JupyterHub starts the proxy before the hub listens, so early misses are routine.
            .inspect_err(
                |error| tracing::debug!(error = %crate::errors::error_chain(error), "error target failed"),
            )
            .ok()?;
        if !response.status().is_success() {
            tracing::warn!(status = %response.status(), "error target answered with an error");
            return None;
        }
        let (mut parts, body) = response.into_parts();
        parts.status = status;
        remove_hop_by_hop(&mut parts.headers, false);
        Some(Response::from_parts(parts, Either::Left(body)))
    }
}

impl Handler for Proxy {
    async fn handle(
        self: Arc<Self>,
        request: Request<Incoming>,
        conn: ConnInfo,
    ) -> Response<ResponseBody> {
        if request.uri().path() == "/_chp_healthz" {
            return health_response();
        }
        // Cloned only when the line will be written: this is the hot path.
        let logged = tracing::enabled!(tracing::Level::DEBUG)
            .then(|| (request.method().clone(), request.uri().clone()));
        let response = match self.forward(request, &conn).await {
            Ok(response) => {
                if let Some((method, uri)) = logged {
                    tracing::debug!(%method, path = uri.path(), status = %response.status(), "proxied");
                }
                response
            }
            Err(failure) => {
                tracing::debug!(status = %failure.error.status(), "answered by the proxy");
                // Boxed: the error-target fetch is rare and would enlarge every request's future.
                Box::pin(self.error_response(failure)).await
            }
        };
        self.metrics.record_response(response.status());
        response
    }
}

fn health_response() -> Response<ResponseBody> {
    let mut response = Response::new(crate::errors::full_body(Bytes::from_static(
        b"{\"status\": \"OK\"}",
    )));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// A failed request, with what its error page needs.
#[derive(Debug)]
struct Failure {
    error: ProxyError,
    accept: Option<HeaderValue>,
    uri: http::Uri,
}

impl Failure {
    fn new(error: ProxyError, headers: &http::HeaderMap, uri: http::Uri) -> Self {
        Self {
            error,
            accept: headers.get(header::ACCEPT).cloned(),
            uri,
        }
    }
}

/// The host the client asked for: the URI's authority (HTTP/2, absolute-form) or `Host`,
/// when it is a plausible host name (no path, query, user info or white space).
fn request_host(request: &Request<Incoming>) -> Option<&str> {
    let host = match request.uri().authority() {
        Some(authority) => authority.as_str(),
        None => request.headers().get(header::HOST)?.to_str().ok()?,
    };
    let plausible = !host.is_empty()
        && host.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':' | b'[' | b']')
        });
    plausible.then_some(host)
}

fn strip_port(authority: &str) -> &str {
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    }
}

/// The pooled upstream client: plain HTTP or TLS, host names looked up through `resolver`.
fn upstream_client(config: &ProxyConfig, resolver: GuardedResolver) -> UpstreamClient {
    let mut http = HttpConnector::new_with_resolver(resolver);
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
    Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(config.upstream_idle_timeout)
        .build(connector)
}

/// The first error of type `E` in `error`'s chain of causes.
fn find_cause<'a, E: std::error::Error + 'static>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a E> {
    let mut next = Some(error);
    while let Some(cause) = next {
        if let Some(found) = cause.downcast_ref::<E>() {
            return Some(found);
        }
        next = cause.source();
    }
    None
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
