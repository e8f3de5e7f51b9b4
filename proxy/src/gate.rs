//! Who may use a route: the access policy a route carries, and the hook that enforces it.
//!
//! The data plane decides *where* a request goes (path check, then route lookup); the route it
//! lands on says *who* may go there. An [`Access::Open`] route is CHP's: anyone who reaches
//! the proxy may use it (the route API of `gantry proxy` adds only these). An
//! [`Access::Owned`] route belongs to one user's server; the proxy asks its [`Gate`] about
//! every request that lands on one, after the lookup and before a byte goes upstream. The
//! check therefore runs on the route that matched, whatever spelling of the path reached it:
//! there is no second parse of the path that could disagree with the lookup.
//!
//! The gate is a trait so that the data plane names no identity code: the hub implements it
//! (sessions, tokens, scopes), and a proxy without one refuses every owned route.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use http::{Request, Response};
use hyper::body::Incoming;
use tokio::sync::Notify;

use crate::errors::ResponseBody;
use crate::server::ConnInfo;

/// Who may use a route.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Access {
    /// Anyone who reaches the proxy (configurable-http-proxy's routes).
    #[default]
    Open,
    /// Only those the [`Gate`] admits for this owner.
    Owned(RouteOwner),
}

/// The owner of a user's server route, as the hub recorded it when it added the route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteOwner {
    /// The account's name exactly as stored: compared as written, never normalised again.
    pub user: Arc<str>,
    /// The server's name; empty for the default server.
    pub server: Arc<str>,
}

/// What a [`Gate`] decided about one request.
#[derive(Debug)]
pub enum Admission {
    /// Forward it. For an upgrade, the [`Lease`] that ends the tunnel when the credential that
    /// opened it ends.
    Pass(Option<Arc<Lease>>),
    /// Answer this instead; nothing goes upstream.
    Refuse(Response<ResponseBody>),
}

/// A boxed admission future: one allocation per gated request.
pub type AdmissionFuture<'a> = Pin<Box<dyn Future<Output = Admission> + Send + 'a>>;

/// A boxed future of the answer for an unrouted path (`None`: the data plane's 404).
pub type UnroutedFuture<'a> =
    Pin<Box<dyn Future<Output = Option<Response<ResponseBody>>> + Send + 'a>>;

/// The check for owned routes, and the answer for paths no route matches.
pub trait Gate: Send + Sync + std::fmt::Debug + 'static {
    /// Decides whether `request` may reach `owner`'s server. `upgrade` says whether the
    /// request asks to switch protocols (a tunnel would outlive the request: pass a
    /// [`Lease`]).
    fn admit<'a>(
        &'a self,
        request: &'a Request<Incoming>,
        conn: &'a ConnInfo,
        owner: &'a RouteOwner,
        upgrade: bool,
    ) -> AdmissionFuture<'a>;

    /// The answer for a request whose decoded `path` matched no route, or `None` for the
    /// data plane's own 404. Whatever it answers must not depend on whether a user or
    /// server by that name exists, except for those allowed to know.
    fn unrouted<'a>(
        &'a self,
        request: &'a Request<Incoming>,
        conn: &'a ConnInfo,
        path: &'a str,
    ) -> UnroutedFuture<'a>;
}

/// Ends the tunnels opened under one admission when the credential behind it ends (logout,
/// revocation, deletion, lost rights). The gate keeps a handle; each tunnel waits on it.
#[derive(Debug, Default)]
pub struct Lease {
    ended: AtomicBool,
    signal: Notify,
}

impl Lease {
    /// A live lease.
    pub fn new() -> Self {
        Self::default()
    }

    /// Ends the lease: every tunnel holding it closes. Idempotent.
    pub fn end(&self) {
        self.ended.store(true, Ordering::Release);
        self.signal.notify_waiters();
    }

    /// Whether [`Lease::end`] was called.
    pub fn has_ended(&self) -> bool {
        self.ended.load(Ordering::Acquire)
    }

    /// Resolves once the lease has ended.
    pub async fn ended(&self) {
        let notified = self.signal.notified();
        tokio::pin!(notified);
        // Register before reading the flag, so an end between the two is not missed.
        notified.as_mut().enable();
        if self.has_ended() {
            return;
        }
        notified.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_lease_ended_before_or_while_waiting_resolves() {
        let lease = Arc::new(Lease::new());
        let waiting = tokio::spawn({
            let lease = Arc::clone(&lease);
            async move { lease.ended().await }
        });
        tokio::task::yield_now().await;
        assert!(!lease.has_ended());
        lease.end();
        waiting.await.expect("the waiter ends");
        // Already ended: resolves at once.
        lease.ended().await;
    }
}
