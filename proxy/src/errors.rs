//! The one place where a failed request becomes an HTTP response.
//!
//! Bodies are small HTML or JSON (by `Accept`) that name the class of failure and never what
//! is behind it: no upstream address, no error chain. The details go to the log.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Either, Full};
use hyper::body::Incoming;

use crate::path::PathError;

/// The body every response of the proxy has: an upstream's streamed body, or one of ours (a
/// fixed body, or a stream such as the hub's Server-Sent Events).
pub type ResponseBody = Either<Incoming, UnsyncBoxBody<Bytes, std::convert::Infallible>>;

/// One of our own bodies, with fixed content.
pub fn full_body(bytes: impl Into<Bytes>) -> ResponseBody {
    Either::Right(Full::new(bytes.into()).boxed_unsync())
}

/// Why the proxy answered a request itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyError {
    /// The path was ambiguous (400).
    BadPath(PathError),
    /// The request cannot be routed as sent, e.g. a `CONNECT` or a missing `Host` (400).
    BadRequest(&'static str),
    /// No route matched and there is no default target (404).
    NoRoute,
    /// The upstream could not be reached (503).
    UpstreamUnavailable,
    /// The upstream's host name resolves only to addresses the proxy never connects to, such
    /// as a cloud metadata service (503; see [`crate::resolve`]).
    UpstreamRefused,
    /// The upstream did not answer in time (504).
    UpstreamTimeout,
    /// The upstream answered with something that is not HTTP, or broke off (502).
    BadGateway,
}

impl ProxyError {
    /// The status code for this failure.
    pub fn status(self) -> StatusCode {
        match self {
            Self::BadPath(_) | Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::NoRoute => StatusCode::NOT_FOUND,
            Self::UpstreamUnavailable | Self::UpstreamRefused => StatusCode::SERVICE_UNAVAILABLE,
            Self::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Self::BadGateway => StatusCode::BAD_GATEWAY,
        }
    }

    /// A sentence for the user. Static text only: nothing from the request is echoed.
    pub fn message(self) -> String {
        match self {
            Self::BadPath(reason) => format!("Bad request: {reason}."),
            Self::BadRequest(reason) => format!("Bad request: {reason}."),
            Self::NoRoute => "Nothing is served at this address.".into(),
            Self::UpstreamUnavailable => {
                "The server for this address is not reachable. It may be stopped or starting."
                    .into()
            }
            Self::UpstreamRefused => {
                "The server for this address is at a network address the proxy does not connect to."
                    .into()
            }
            Self::UpstreamTimeout => "The server for this address did not answer in time.".into(),
            Self::BadGateway => "The server for this address sent an invalid response.".into(),
        }
    }

    /// Whether the error-target hook is asked for a page (CHP asks for these codes).
    pub fn uses_error_target(self) -> bool {
        !matches!(self, Self::BadPath(_) | Self::BadRequest(_))
    }
}

/// The built-in response for an error: JSON when the client prefers it, else HTML.
pub fn builtin_response(error: ProxyError, accept: Option<&HeaderValue>) -> Response<ResponseBody> {
    let status = error.status();
    let message = error.message();
    let (content_type, body) = if wants_json(accept) {
        let body = serde_json::json!({ "status": status.as_u16(), "message": message });
        ("application/json", body.to_string())
    } else {
        let reason = status.canonical_reason().unwrap_or("Error");
        let html = format!(
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <title>{code} {reason}</title></head>\n<body><h1>{code} {reason}</h1>\n<p>{message}</p></body></html>\n",
            code = status.as_u16(),
        );
        ("text/html; charset=utf-8", html)
    };
    let mut response = Response::new(full_body(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// JSON when `Accept` names JSON ahead of (or without) HTML.
fn wants_json(accept: Option<&HeaderValue>) -> bool {
    let accept = accept.and_then(|v| v.to_str().ok()).unwrap_or("");
    match (accept.find("json"), accept.find("html")) {
        (Some(_), None) => true,
        (Some(json), Some(html)) => json < html,
        _ => false,
    }
}

/// An error and its causes on one line (`a: b: c`), for logs and for hub messages that must
/// say why.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &str) -> HeaderValue {
        HeaderValue::from_str(value).unwrap()
    }

    #[test]
    fn body_follows_accept() {
        let json = builtin_response(
            ProxyError::UpstreamUnavailable,
            Some(&accept("application/json")),
        );
        assert_eq!(json.status(), 503);
        assert_eq!(json.headers()[header::CONTENT_TYPE], "application/json");
        let html = builtin_response(
            ProxyError::UpstreamTimeout,
            Some(&accept("text/html,application/json")),
        );
        assert_eq!(html.status(), 504);
        assert!(
            html.headers()[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
        let default = builtin_response(ProxyError::BadGateway, None);
        assert_eq!(default.status(), 502);
        assert!(
            default.headers()[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
    }
}
