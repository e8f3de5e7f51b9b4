//! The route table: which upstream serves which path prefix.
//!
//! Routes follow configurable-http-proxy's semantics: a route's prefix matches a request path
//! segment-wise (`/user/alice` matches `/user/alice` and `/user/alice/lab`, never
//! `/user/alicex`), the longest matching prefix wins, and the route `/` matches everything. In
//! host-routing mode the request's host is the first segment of the key, as in CHP.
//!
//! The table is a sharded concurrent hash map keyed by the decoded prefix. A lookup hashes each
//! prefix of the request path from the longest down (never deeper than the deepest route), so
//! it costs one probe per path segment whatever the number of routes, and takes only the read
//! lock of one shard per probe: there is no global lock. A route's `last_activity` is an atomic,
//! so recording traffic takes no lock at all.

use std::borrow::Cow;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use dashmap::DashMap;
use http::Uri;
use http::uri::{Authority, Scheme};
use serde_json::value::RawValue;
use tokio::sync::Notify;

use crate::gate::{Access, RouteOwner};
use crate::path::{PathError, canonical_path};

#[cfg(test)]
mod tests;

/// Why a route could not be added.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// The route's path is not a safe canonical path.
    #[error("invalid route path: {0}")]
    Path(#[from] PathError),
    /// The target is not an absolute `http`/`https` URL without credentials, query or fragment.
    #[error("invalid route target {target:?}: {reason}")]
    Target {
        /// The target as given.
        target: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The target's host is, in some notation, an address the proxy never connects to (see
    /// [`address_refusal`]).
    #[error("invalid route target {target:?}: its host is the address {address}, and {reason}")]
    Address {
        /// The target as given.
        target: String,
        /// The address its host denotes.
        address: IpAddr,
        /// Why that address is refused.
        reason: &'static str,
    },
}

/// A route's path prefix in canonical form: decoded, leading `/`, no trailing `/` (except the
/// root route `/`). In host-routing mode the first segment is the lower-cased host.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoutePrefix(Arc<str>);

impl RoutePrefix {
    /// Parses a route path as the route API receives it (already percent-decoded once by the
    /// API, as CHP's are) or as raw text. Trailing slashes are dropped; the same safety rules
    /// as request paths apply, so a route can never be a prefix no request could match.
    pub fn parse(path: &str, host_routing: bool) -> Result<Self, RouteError> {
        let path = if path.is_empty() { "/" } else { path };
        let canonical = canonical_path(path)?;
        let trimmed = canonical.trim_end_matches('/');
        if trimmed.is_empty() {
            return Ok(Self("/".into()));
        }
        if host_routing {
            // The host segment is matched case-insensitively, like hosts are.
            let rest = &trimmed[1..];
            let (host, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            return Ok(Self(
                format!("/{}{}", host.to_ascii_lowercase(), tail).into(),
            ));
        }
        Ok(Self(trimmed.into()))
    }

    /// The prefix as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The number of segments (`/` has none).
    fn depth(&self) -> usize {
        if &*self.0 == "/" {
            0
        } else {
            self.0.matches('/').count()
        }
    }
}

impl fmt::Display for RoutePrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A validated upstream: an absolute `http` or `https` URL whose path is prepended to the
/// forwarded request path (CHP's `prependPath`).
///
/// The text the API returns and the authority requests are sent to share one buffer: at
/// 100,000 routes every copy counts.
#[derive(Debug, Clone)]
pub struct Target {
    /// The target as given (ASCII: it parsed as a URI).
    source: Bytes,
    /// `host:port`, a slice of `source`.
    authority: Authority,
    https: bool,
    /// Where the target's path starts in `source`.
    path_start: usize,
}

impl PartialEq for Target {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for Target {}

impl Target {
    /// Parses and validates a target URL.
    pub fn parse(text: &str) -> Result<Self, RouteError> {
        let fail = |reason| RouteError::Target {
            target: text.chars().take(200).collect(),
            reason,
        };
        let source = Bytes::copy_from_slice(text.as_bytes());
        let uri = Uri::from_maybe_shared(source.clone()).map_err(|_| fail("not a URL"))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            Some(_) => return Err(fail("the scheme must be http or https")),
            None => return Err(fail("the URL must be absolute (http://host:port)")),
        };
        let authority = uri.authority().ok_or_else(|| fail("the URL has no host"))?;
        if authority.as_str().contains('@') {
            return Err(fail("credentials in the URL are not allowed"));
        }
        if authority.host().is_empty() {
            return Err(fail("the URL has no host"));
        }
        // Parsed as browsers and getaddrinfo read it, so that `2852039166`, `0xa9fea9fe` or
        // `[::ffff:169.254.169.254]` are seen to be the address they connect to.
        let address = match url::Host::parse(authority.host()) {
            Ok(url::Host::Domain(_)) => None,
            Ok(url::Host::Ipv4(v4)) => Some(IpAddr::V4(v4)),
            Ok(url::Host::Ipv6(v6)) => Some(IpAddr::V6(v6)),
            Err(_) => return Err(fail("the host is neither a host name nor an IP address")),
        };
        if let Some(address) = address
            && let Some(reason) = address_refusal(address)
        {
            return Err(RouteError::Address {
                target: text.chars().take(200).collect(),
                address,
                reason,
            });
        }
        if uri.query().is_some() || text.contains('#') {
            return Err(fail("a query or fragment is not allowed"));
        }
        // `scheme://authority` then the path: nothing else is allowed past the checks above.
        let scheme_len = if https {
            "https://".len()
        } else {
            "http://".len()
        };
        let path_start = scheme_len + authority.as_str().len();
        if !text.is_char_boundary(path_start) || !text[scheme_len..].starts_with(authority.as_str())
        {
            return Err(fail("not a URL"));
        }
        Ok(Self {
            authority: authority.clone(),
            source,
            https,
            path_start,
        })
    }

    /// The target as it was given.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.source).unwrap_or_default()
    }

    /// The upstream URI for a request with this raw path and query.
    pub fn upstream_uri(&self, path_and_query: &str) -> Result<Uri, http::Error> {
        // The target's own path, without a trailing slash, goes first.
        let base = self.as_str()[self.path_start..].trim_end_matches('/');
        let mut pq = String::with_capacity(base.len() + path_and_query.len());
        pq.push_str(base);
        pq.push_str(path_and_query);
        let scheme = if self.https {
            Scheme::HTTPS
        } else {
            Scheme::HTTP
        };
        Uri::builder()
            .scheme(scheme)
            .authority(self.authority.clone())
            .path_and_query(pq)
            .build()
    }
}

/// Why the proxy never connects to `address`, or `None` when it may.
///
/// Refused: link-local addresses (169.254.0.0/16, fe80::/10), where cloud metadata services
/// answer with the host's credentials; the unspecified addresses and IPv4's "this network"
/// (0.0.0.0/8, `::`), which reach the proxy's own host; and the metadata services that sit
/// elsewhere (AWS's `fd00:ec2::254`, Alibaba Cloud's 100.100.100.200). An IPv6 address that
/// carries an IPv4 address (IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible `::a.b.c.d`, NAT64
/// `64:ff9b::a.b.c.d`) is judged as that IPv4 address. Loopback and private addresses stay
/// allowed: gantry's own servers listen on 127.0.0.1 and on container bridge addresses.
///
/// Checked twice: on a route's target when it is added ([`Target::parse`]), and on every
/// address a host name resolves to when the proxy connects ([`crate::resolve`]).
pub fn address_refusal(address: IpAddr) -> Option<&'static str> {
    match address {
        IpAddr::V4(v4) => v4_refusal(v4),
        IpAddr::V6(v6) => v6_refusal(v6),
    }
}

const LINK_LOCAL: &str =
    "link-local addresses (169.254.0.0/16, fe80::/10: cloud metadata services) are refused";
const UNSPECIFIED: &str =
    "unspecified addresses (0.0.0.0/8, ::) are refused: they reach the proxy's own host";
const METADATA: &str = "cloud metadata service addresses are refused";

/// Alibaba Cloud's metadata service.
const ALIBABA_METADATA: Ipv4Addr = Ipv4Addr::new(100, 100, 100, 200);
/// AWS's metadata service over IPv6 (Nitro instances).
const AWS_METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);

fn v4_refusal(v4: Ipv4Addr) -> Option<&'static str> {
    if v4.is_link_local() {
        Some(LINK_LOCAL)
    } else if v4.octets()[0] == 0 {
        Some(UNSPECIFIED)
    } else if v4 == ALIBABA_METADATA {
        Some(METADATA)
    } else {
        None
    }
}

fn v6_refusal(v6: Ipv6Addr) -> Option<&'static str> {
    if v6.is_unspecified() {
        return Some(UNSPECIFIED);
    }
    // Before the IPv4-compatible check, which would read `::1` as 0.0.0.1.
    if v6.is_loopback() {
        return None;
    }
    if v6.is_unicast_link_local() {
        return Some(LINK_LOCAL);
    }
    if v6 == AWS_METADATA_V6 {
        return Some(METADATA);
    }
    embedded_v4(v6).and_then(v4_refusal)
}

/// The IPv4 address an IPv6 address carries in its last 32 bits, when its prefix says it is
/// one: IPv4-mapped, IPv4-compatible or the NAT64 well-known prefix (RFC 6052).
fn embedded_v4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let [a, b, c, d, e, f, ..] = v6.segments();
    let carries = matches!(
        (a, b, c, d, e, f),
        (0, 0, 0, 0, 0, 0xffff) | (0, 0, 0, 0, 0, 0) | (0x64, 0xff9b, 0, 0, 0, 0)
    );
    let [.., w, x, y, z] = v6.octets();
    carries.then(|| Ipv4Addr::new(w, x, y, z))
}

/// One route: a prefix, its target, who may use it, the extra data the API caller stored with
/// it, and when it last carried traffic.
#[derive(Debug)]
pub struct Route {
    prefix: RoutePrefix,
    target: Target,
    /// Who may use it: checked on every request that lands here (see [`crate::gate`]).
    access: Access,
    /// Extra JSON fields given at creation (JupyterHub stores `user`, `server_name`, …), kept as
    /// text: compact at 100,000 routes and only parsed when the API lists routes.
    data: Option<Box<RawValue>>,
    /// Milliseconds since the Unix epoch.
    last_activity: AtomicI64,
    /// Set once the route is removed or retargeted; wakes its open tunnels so they close.
    /// Tunnels opened under one epoch close when it moves on: [`Route::close_tunnels`] moves it
    /// by one, retirement (removal or a new target) sets it to [`RETIRED`] for good.
    tunnel_epoch: AtomicU64,
    tunnel_signal: Notify,
}

impl Route {
    /// Creates an open route (anyone may use it, as in CHP) whose last activity is now.
    pub fn new(prefix: RoutePrefix, target: Target, data: Option<Box<RawValue>>) -> Self {
        Self::with_access(prefix, target, data, Access::Open)
    }

    /// Creates a route to `owner`'s server: every request on it passes the gate first.
    pub fn owned(prefix: RoutePrefix, target: Target, owner: RouteOwner) -> Self {
        Self::with_access(prefix, target, None, Access::Owned(owner))
    }

    fn with_access(
        prefix: RoutePrefix,
        target: Target,
        data: Option<Box<RawValue>>,
        access: Access,
    ) -> Self {
        Self {
            prefix,
            target,
            access,
            data,
            last_activity: AtomicI64::new(now_millis()),
            tunnel_epoch: AtomicU64::new(0),
            tunnel_signal: Notify::new(),
        }
    }

    /// The route's prefix.
    pub fn prefix(&self) -> &RoutePrefix {
        &self.prefix
    }

    /// Where the route sends requests.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Who may use the route.
    pub fn access(&self) -> &Access {
        &self.access
    }

    /// The extra data stored with the route, a JSON object, if any.
    pub fn data(&self) -> Option<&RawValue> {
        self.data.as_deref()
    }

    /// When the route last carried traffic, in milliseconds since the Unix epoch.
    pub fn last_activity_millis(&self) -> i64 {
        self.last_activity.load(Ordering::Relaxed)
    }

    /// Records traffic now. A relaxed store: readers only need some recent value.
    pub fn touch(&self) {
        self.last_activity.store(now_millis(), Ordering::Relaxed);
    }

    /// The tunnel epoch to pass to [`Route::tunnels_closed`], read when a tunnel opens.
    pub fn tunnel_epoch(&self) -> u64 {
        self.tunnel_epoch.load(Ordering::Acquire)
    }

    /// Resolves once tunnels opened at `opened_at` must close: the route was removed or given
    /// another target (a stopped server keeps no WebSocket open), or [`Route::close_tunnels`]
    /// was called (a user logged out or was revoked).
    pub async fn tunnels_closed(&self, opened_at: u64) {
        let notified = self.tunnel_signal.notified();
        tokio::pin!(notified);
        // Register before reading the epoch, so a change between the two is not missed.
        notified.as_mut().enable();
        let now = self.tunnel_epoch.load(Ordering::Acquire);
        if now != opened_at || now == RETIRED {
            return;
        }
        notified.await;
    }

    /// Closes every tunnel open on this route now, and keeps the route: the hook for logout
    /// and revocation. Tunnels opened afterwards are unaffected.
    pub fn close_tunnels(&self) {
        let _ = self
            .tunnel_epoch
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |epoch| {
                (epoch != RETIRED).then_some(epoch.wrapping_add(1) % RETIRED)
            });
        self.tunnel_signal.notify_waiters();
    }

    fn retire(&self) {
        self.tunnel_epoch.store(RETIRED, Ordering::Release);
        self.tunnel_signal.notify_waiters();
    }
}

/// The tunnel epoch of a route that left the table: its tunnels close and no new one lives.
const RETIRED: u64 = u64::MAX;

fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A change to the table, as the route API or the hub's reconciler expresses it.
#[derive(Debug)]
pub enum RouteChange {
    /// Add a route, replacing any with the same prefix.
    Upsert(Route),
    /// Remove the route with this prefix.
    Remove(RoutePrefix),
}

/// The concurrent route table.
#[derive(Debug, Default)]
pub struct RouteTable {
    /// Keyed by the route's own prefix text (shared, not copied).
    routes: DashMap<Arc<str>, Arc<Route>>,
    /// The largest depth of any route ever added: lookups never probe deeper. It only grows,
    /// which is safe (a deeper probe merely misses).
    max_depth: AtomicUsize,
    host_routing: bool,
}

impl RouteTable {
    /// An empty table. In host-routing mode lookups put the request's host first.
    pub fn new(host_routing: bool) -> Self {
        Self {
            host_routing,
            ..Self::default()
        }
    }

    /// Whether lookups put the host first.
    pub fn host_routing(&self) -> bool {
        self.host_routing
    }

    /// Applies one change. Returns the route it replaced or removed, if any. A removed route,
    /// or one replaced by a route with another target or another access policy, closes its
    /// open tunnels; replacing a route with the same target and policy (JupyterHub re-adds
    /// routes) leaves them alone.
    pub fn apply(&self, change: RouteChange) -> Option<Arc<Route>> {
        match change {
            RouteChange::Upsert(route) => {
                self.max_depth
                    .fetch_max(route.prefix.depth(), Ordering::Relaxed);
                let key = route.prefix.0.clone();
                let (target, access) = (route.target.clone(), route.access.clone());
                let old = self.routes.insert(key, Arc::new(route));
                if let Some(old) = old
                    .as_ref()
                    .filter(|old| old.target != target || old.access != access)
                {
                    old.retire();
                }
                old
            }
            RouteChange::Remove(prefix) => {
                let removed = self.routes.remove(prefix.as_str()).map(|(_, r)| r);
                if let Some(old) = &removed {
                    old.retire();
                }
                removed
            }
        }
    }

    /// The route with exactly this prefix.
    pub fn get(&self, prefix: &RoutePrefix) -> Option<Arc<Route>> {
        self.routes.get(prefix.as_str()).map(|r| Arc::clone(&r))
    }

    /// Closes the open tunnels of `prefix` and of every route below it segment-wise (for a
    /// user: `/user/alice` and `/user/alice/<server>`), keeping the routes. Returns how many
    /// routes were signalled. Walks every shard: for logout and revocation, not for requests.
    pub fn close_tunnels_under(&self, prefix: &RoutePrefix) -> usize {
        let base = prefix.as_str();
        let mut signalled = 0;
        for entry in self.routes.iter() {
            let route = entry.value();
            let own = route.prefix.as_str();
            let below = base == "/"
                || own == base
                || own
                    .strip_prefix(base)
                    .is_some_and(|rest| rest.starts_with('/'));
            if below {
                route.close_tunnels();
                signalled += 1;
            }
        }
        signalled
    }

    /// The number of routes.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// A snapshot of all routes, sorted by prefix. Walks every shard: for the API, never for
    /// requests.
    pub fn snapshot(&self) -> Vec<Arc<Route>> {
        let mut all: Vec<Arc<Route>> = self.routes.iter().map(|r| Arc::clone(&r)).collect();
        all.sort_unstable_by(|a, b| a.prefix.cmp(&b.prefix));
        all
    }

    /// The route for a canonical request path (see [`canonical_path`]) and, in host-routing
    /// mode, the request's host without its port.
    pub fn lookup(&self, host: Option<&str>, path: &str) -> Option<Arc<Route>> {
        let key: Cow<'_, str> = match (self.host_routing, host) {
            (true, Some(host)) => Cow::Owned(format!("/{}{}", host.to_ascii_lowercase(), path)),
            // Without a host nothing host-routed can match; only the root route can.
            (true, None) => Cow::Borrowed("/"),
            (false, _) => Cow::Borrowed(path),
        };
        let max_depth = self.max_depth.load(Ordering::Relaxed);
        let mut candidate = key.trim_end_matches('/');
        let mut depth = candidate.matches('/').count();
        // Skip the segments deeper than any route: they cannot match.
        while depth > max_depth {
            candidate = &candidate[..candidate.rfind('/').unwrap_or(0)];
            depth -= 1;
        }
        loop {
            if candidate.is_empty() {
                return self.routes.get("/").map(|r| Arc::clone(&r));
            }
            if let Some(route) = self.routes.get(candidate) {
                return Some(Arc::clone(&route));
            }
            candidate = &candidate[..candidate.rfind('/').unwrap_or(0)];
        }
    }
}
