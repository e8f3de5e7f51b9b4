//! The front tier of `gantry up`: one listener, two services. A path that decodes to `/hub/…`
//! goes to the [`Hub`]; everything else goes to the data plane ([`Proxy`]), whose route lookup
//! and per-route gate (the hub, as [`crate::gate::Gate`]) decide the rest. There is one reading
//! of the path, [`canonical_path`], for both the dispatch here and the data plane's lookup.

use std::sync::Arc;

use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::{Hub, body, pages, response};
use crate::Proxy;
use crate::errors::ResponseBody;
use crate::path::canonical_path;
use crate::server::{ConnInfo, Handler};

/// The hub beside the proxy, behind one listener.
#[derive(Debug)]
pub struct FrontTier {
    hub: Arc<Hub>,
    proxy: Arc<Proxy>,
}

impl FrontTier {
    /// Puts `hub` and `proxy` behind one handler.
    pub fn new(hub: Arc<Hub>, proxy: Arc<Proxy>) -> Self {
        Self { hub, proxy }
    }
}

/// Whether `path` is the hub's: `/hub` or under `/hub/`.
fn is_hub_path(path: &str) -> bool {
    path == "/hub" || path.starts_with("/hub/")
}

/// Where a request goes, decided once from its decoded path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dispatch {
    /// The hub: the path decodes to `/hub` or below.
    Hub,
    /// `/`: a redirect to the home page.
    Home,
    /// The data plane: route lookup, then the route's access check.
    DataPlane,
    /// The path is ambiguous and spelled like the hub's: the hub answers 400.
    HubBadPath,
}

/// Decides where a raw request path goes, on the same decoded form
/// ([`canonical_path`]) the data plane routes on: a path that decodes to `/hub…` is the
/// hub's however it is spelled, and every other path is the data plane's, whose route
/// lookup and per-route access check come after. Pure, for tests and the fuzz target.
pub fn dispatch(raw: &str) -> Dispatch {
    match canonical_path(raw) {
        Ok(decoded) if decoded == "/" => Dispatch::Home,
        Ok(decoded) if is_hub_path(&decoded) => Dispatch::Hub,
        Ok(_) => Dispatch::DataPlane,
        // The data plane refuses it too (400), counting it in its metrics.
        Err(_) if is_hub_path(raw) => Dispatch::HubBadPath,
        Err(_) => Dispatch::DataPlane,
    }
}

impl Handler for FrontTier {
    async fn handle(
        self: Arc<Self>,
        request: Request<Incoming>,
        conn: ConnInfo,
    ) -> Response<ResponseBody> {
        match dispatch(request.uri().path()) {
            // Gated there, on the route that matched, whatever spelling reached it.
            Dispatch::DataPlane => return Arc::clone(&self.proxy).handle(request, conn).await,
            Dispatch::Home => return response::redirect(super::HOME),
            Dispatch::HubBadPath => {
                let json = super::request::wants_json(request.headers(), request.uri().path());
                return response::HubError::BadRequest("the request path is ambiguous".into())
                    .into_response(json);
            }
            Dispatch::Hub => {}
        }
        let path = canonical_path(request.uri().path()).unwrap_or_default();
        if path == "/hub/static/pending.js" {
            let mut response = Response::new(body(pages::PENDING_JS));
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/javascript; charset=utf-8"),
            );
            response
                .headers_mut()
                .insert(CACHE_CONTROL, HeaderValue::from_static("max-age=3600"));
            return response;
        }
        if path == "/hub/static/style.css" {
            let mut response = Response::new(body(pages::STYLE_CSS));
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/css; charset=utf-8"),
            );
            response
                .headers_mut()
                .insert(CACHE_CONTROL, HeaderValue::from_static("max-age=3600"));
            *response.status_mut() = StatusCode::OK;
            return response;
        }
        // Boxed: the hub's handlers make a large future, and this one is built for every
        // request, the data plane's included, which should not pay to move it.
        Box::pin(self.hub.handle(request, conn)).await
    }
}

#[cfg(test)]
mod tests {
    use super::{Dispatch, dispatch};

    #[test]
    fn the_hub_is_chosen_on_the_decoded_path() {
        for (raw, expected) in [
            ("/", Dispatch::Home),
            ("/hub", Dispatch::Hub),
            ("/hub/login", Dispatch::Hub),
            ("/%68ub/login", Dispatch::Hub),
            ("/h%75b/api/users", Dispatch::Hub),
            ("/hubx", Dispatch::DataPlane),
            ("/HUB/login", Dispatch::DataPlane),
            ("/user/alice/", Dispatch::DataPlane),
            ("/%75ser/alice/", Dispatch::DataPlane),
            ("/hub/%2e%2e/user/alice", Dispatch::HubBadPath),
            ("/%68ub/%2e%2e/user/alice", Dispatch::DataPlane),
            ("/user/%2e%2e/hub/", Dispatch::DataPlane),
        ] {
            assert_eq!(dispatch(raw), expected, "{raw}");
        }
    }
}
