//! Upstream host names resolved when the proxy connects, without the addresses it never
//! connects to.
//!
//! A route target's host is checked when the route is added ([`Target::parse`]), but a host
//! *name* only becomes an address at connect time, and a name can resolve to a cloud metadata
//! service (169.254.169.254) or to the proxy's own host (0.0.0.0). hyper-util's connector
//! connects to an address literal directly (checked when its route was added) and asks its
//! resolver for everything else, so every connection to a named upstream passes through
//! [`GuardedResolver`]: it keeps the addresses [`address_refusal`] allows and fails, naming
//! the host and what it refused, when none is left.
//!
//! [`Target::parse`]: crate::routes::Target::parse

use std::fmt;
use std::future::poll_fn;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use hyper_util::client::legacy::connect::dns::{GaiResolver, Name};
use tower_service::Service;

use crate::routes::address_refusal;

#[cfg(test)]
mod tests;

/// Any error a resolver may return.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One lookup of the inner resolver, behind a trait object so the proxy's client type does not
/// depend on which resolver it uses.
type Lookup = dyn Fn(Name) -> BoxFuture<'static, Result<Vec<SocketAddr>, BoxError>> + Send + Sync;

/// Why an upstream host name gave no address to connect to.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The lookup itself failed: an unknown name, or no DNS.
    #[error("cannot resolve the upstream host {host:?}")]
    Lookup {
        /// The name that was looked up.
        host: String,
        /// What the resolver said.
        #[source]
        source: BoxError,
    },
    /// Every address the name resolves to is one the proxy never connects to.
    #[error(
        "the upstream host {host:?} resolves only to refused addresses ({}): {reason}",
        list(.addresses)
    )]
    Refused {
        /// The name that was looked up.
        host: String,
        /// The addresses it resolved to, all refused.
        addresses: Vec<IpAddr>,
        /// Why the first of them is refused.
        reason: &'static str,
    },
}

fn list(addresses: &[IpAddr]) -> String {
    let text: Vec<String> = addresses.iter().map(IpAddr::to_string).collect();
    text.join(", ")
}

/// A resolver for hyper-util's `HttpConnector` that removes the addresses the proxy never
/// connects to from its inner resolver's answers.
#[derive(Clone)]
pub struct GuardedResolver {
    lookup: Arc<Lookup>,
}

impl GuardedResolver {
    /// Guards the system resolver: `getaddrinfo` on a blocking thread, hyper-util's default.
    pub fn system() -> Self {
        Self::new(GaiResolver::new())
    }

    /// Guards `inner`, any resolver hyper-util's connector takes (a `Service<Name>` answering
    /// socket addresses).
    pub fn new<R>(inner: R) -> Self
    where
        R: Service<Name> + Clone + Send + Sync + 'static,
        R::Response: Iterator<Item = SocketAddr>,
        R::Error: Into<BoxError>,
        R::Future: Send + 'static,
    {
        let lookup = move |name: Name| -> BoxFuture<'static, Result<Vec<SocketAddr>, BoxError>> {
            // A clone per lookup, as tower services are shared: the future owns its resolver.
            let mut inner = inner.clone();
            Box::pin(async move {
                poll_fn(|cx| inner.poll_ready(cx))
                    .await
                    .map_err(Into::into)?;
                let addresses = inner.call(name).await.map_err(Into::into)?;
                Ok(addresses.collect())
            })
        };
        Self {
            lookup: Arc::new(lookup),
        }
    }
}

impl fmt::Debug for GuardedResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad("GuardedResolver")
    }
}

impl Service<Name> for GuardedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = ResolveError;
    type Future = BoxFuture<'static, Result<Self::Response, ResolveError>>;

    /// Always ready: each lookup waits for its own clone of the inner resolver.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), ResolveError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let host = name.as_str().to_owned();
        let lookup = (self.lookup)(name);
        Box::pin(async move {
            let resolved = lookup.await.map_err(|source| ResolveError::Lookup {
                host: host.clone(),
                source,
            })?;
            let Sifted { allowed, refused } = sift(resolved);
            match refused.first() {
                None => {}
                Some(&first) if allowed.is_empty() => {
                    return Err(ResolveError::Refused {
                        host,
                        reason: address_refusal(first).unwrap_or_default(),
                        addresses: refused,
                    });
                }
                Some(_) => {
                    tracing::warn!(
                        host = %host,
                        refused = %list(&refused),
                        "an upstream host resolves to refused addresses too; connecting only to the others"
                    );
                }
            }
            Ok(allowed.into_iter())
        })
    }
}

/// A lookup's answer, split by [`address_refusal`].
#[derive(Debug, PartialEq, Eq)]
struct Sifted {
    /// The addresses the proxy may connect to, in the resolver's order.
    allowed: Vec<SocketAddr>,
    /// The addresses it never connects to.
    refused: Vec<IpAddr>,
}

fn sift(resolved: Vec<SocketAddr>) -> Sifted {
    let (allowed, refused): (Vec<SocketAddr>, Vec<SocketAddr>) = resolved
        .into_iter()
        .partition(|address| address_refusal(address.ip()).is_none());
    Sifted {
        allowed,
        refused: refused.iter().map(SocketAddr::ip).collect(),
    }
}
