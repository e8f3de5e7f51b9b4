//! The data plane's settings, validated once at startup.

use std::time::Duration;

use ipnet::IpNet;

use crate::routes::Target;

/// Settings of the proxy's data plane. Built by the binary from flags; libraries never read the
/// environment.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Route every request under the request host first (CHP's `--host-routing`).
    pub host_routing: bool,
    /// Where a request with no matching route goes (CHP's `--default-target`): stored as the
    /// route `/`.
    pub default_target: Option<Target>,
    /// Base URL that is asked for an error page on 404/502/503/504, as
    /// `<error_target>/<code>?url=<path>` (CHP's `--error-target`).
    pub error_target: Option<Target>,
    /// Clients whose `X-Forwarded-*` headers are kept and extended instead of replaced.
    pub trusted_downstreams: Vec<IpNet>,
    /// Whether the client-facing listener speaks TLS (sets `X-Forwarded-Proto: https`).
    pub tls: bool,
    /// Limit for the request line and headers, in bytes; larger requests get 431.
    pub max_header_bytes: usize,
    /// How long a connection may wait for a complete request head, in hyper's sense: the timer
    /// starts when the connection is ready for a request, so it bounds keep-alive idle time and
    /// slow header senders alike. An HTTP/2 connection with no request in flight for this long
    /// is closed.
    pub header_timeout: Duration,
    /// Most client connections open at once on one listener, WebSockets included. Past it the
    /// listener stops accepting: new connections wait in the kernel's listen backlog until one
    /// closes. At least 1. Default: [`crate::server::DEFAULT_MAX_CONNECTIONS`].
    pub max_connections: usize,
    /// Timeout for connecting to an upstream; past it the request fails with 503.
    pub upstream_connect_timeout: Duration,
    /// Timeout for an upstream's response headers; past it the request fails with 504.
    pub upstream_response_timeout: Duration,
    /// How long idle pooled upstream connections are kept.
    pub upstream_idle_timeout: Duration,
    /// How long a graceful shutdown waits for in-flight requests.
    pub shutdown_grace: Duration,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            host_routing: false,
            default_target: None,
            error_target: None,
            trusted_downstreams: Vec::new(),
            tls: false,
            max_header_bytes: 64 * 1024,
            header_timeout: Duration::from_secs(30),
            max_connections: crate::server::DEFAULT_MAX_CONNECTIONS,
            upstream_connect_timeout: Duration::from_secs(5),
            upstream_response_timeout: Duration::from_secs(300),
            upstream_idle_timeout: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

impl ProxyConfig {
    /// Whether a client address is a trusted downstream.
    pub fn is_trusted(&self, addr: std::net::IpAddr) -> bool {
        let addr = match addr {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, std::net::IpAddr::V4),
            v4 => v4,
        };
        self.trusted_downstreams
            .iter()
            .any(|net| net.contains(&addr))
    }
}
