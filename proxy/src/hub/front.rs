//! The front tier of `gantry up`: one listener, two services. `/hub/…` goes to the [`Hub`];
//! everything else goes to the data plane ([`Proxy`]) and its route table.

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

impl Handler for FrontTier {
    async fn handle(
        self: Arc<Self>,
        request: Request<Incoming>,
        conn: ConnInfo,
    ) -> Response<ResponseBody> {
        // No copy of the path: this is the per-request path of every notebook request.
        let path = request.uri().path();
        if !is_hub_path(path) {
            if path == "/" {
                return response::redirect(super::HOME);
            }
            // Only `/user/NAME/…` is gated; the owner comes out as an owned name, so the
            // request is free to be changed below.
            let Some(owner) = user_path_owner(path) else {
                return Arc::clone(&self.proxy).handle(request, conn).await;
            };
            let mut request = request;
            // The gate: only the owner (or an admin, or a token with access to the owner's
            // servers) reaches a notebook; nobody else learns it exists.
            if let Err(response) = self.hub.gate(&request, &owner).await {
                return response;
            }
            super::cookies::strip_ours(request.headers_mut());
            // Only a server's own route counts; the default route `/` is not one.
            let routed = self.proxy.table().lookup(None, request.uri().path());
            if routed.is_none_or(|r| r.prefix().as_str() == "/") {
                return self.hub.not_running(&request, &owner);
            }
            return Arc::clone(&self.proxy).handle(request, conn).await;
        }
        // The hub gets the same path-safety rule as the data plane: one reading of the path.
        if canonical_path(path).is_err() {
            let json = super::request::wants_json(request.headers(), path);
            return response::HubError::BadRequest("the request path is ambiguous".into())
                .into_response(json);
        }
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
        self.hub.handle(request, conn).await
    }
}

/// The user a `/user/NAME/…` path belongs to, decoded; `None` for other paths and for paths
/// the data plane will refuse anyway.
fn user_path_owner(path: &str) -> Option<String> {
    let rest = path.strip_prefix("/user/")?;
    let raw = rest.split('/').next().filter(|s| !s.is_empty())?;
    let segment = format!("/{raw}");
    let decoded = canonical_path(&segment).ok()?;
    Some(decoded.trim_start_matches('/').to_owned())
}
