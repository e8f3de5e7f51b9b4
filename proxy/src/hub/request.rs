//! Reading hub requests: bodies with a size limit and a deadline, forms, queries, the
//! `Authorization` header.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use tokio::time::Instant;
use url::form_urlencoded;

use super::response::HubError;

/// Largest form or JSON body the hub reads, in bytes.
pub(super) const MAX_BODY_BYTES: usize = 64 * 1024;

/// When a body must have arrived, for a request read outside [`with_body_deadline`]
/// (`hub.request_body_timeout_secs`'s default).
const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);

tokio::task_local! {
    /// When the body of the hub request being answered must be complete, and the timeout it
    /// came from (for the message); set once per request by [`with_body_deadline`].
    static BODY_DEADLINE: (Instant, Duration);
}

/// Runs `answer` (one hub request's handling) with its body due `timeout` from now: every
/// [`read_body`] in it fails with 408 past that instant, however the body trickles in.
pub(super) async fn with_body_deadline<F: Future>(timeout: Duration, answer: F) -> F::Output {
    BODY_DEADLINE
        .scope((Instant::now() + timeout, timeout), answer)
        .await
}

/// Whether the answer should be JSON: API paths always, others when `Accept` prefers it.
pub(super) fn wants_json(headers: &HeaderMap, path: &str) -> bool {
    path.starts_with("/hub/api/")
        || headers
            .get(ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|accept| {
                accept.contains("application/json") && !accept.contains("text/html")
            })
}

/// The token in `Authorization: token X` (JupyterHub's form) or `Authorization: Bearer X`.
/// `None` without the header.
///
/// # Errors
///
/// [`HubError::BadRequest`] for another scheme or several headers: guessing would let one
/// credential hide behind another.
pub(super) fn authorization_token(headers: &HeaderMap) -> Result<Option<&str>, HubError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(HubError::BadRequest(
            "more than one Authorization header".into(),
        ));
    }
    let text = value
        .to_str()
        .map_err(|_| HubError::BadRequest("Authorization header is not ASCII".into()))?;
    let (scheme, token) = text.split_once(' ').ok_or_else(|| {
        HubError::BadRequest("Authorization must be `token <token>` or `Bearer <token>`".into())
    })?;
    if scheme.eq_ignore_ascii_case("token") || scheme.eq_ignore_ascii_case("bearer") {
        Ok(Some(token.trim()))
    } else {
        Err(HubError::BadRequest(
            "Authorization must be `token <token>` or `Bearer <token>`".into(),
        ))
    }
}

/// Reads the whole body, refusing more than [`MAX_BODY_BYTES`] (413) and a body still
/// incomplete at the request's deadline (408; see [`with_body_deadline`]). Refused early,
/// the rest of the body is never read, so the connection closes after the answer.
pub(super) async fn read_body(body: Incoming) -> Result<Bytes, HubError> {
    let (deadline, timeout) = BODY_DEADLINE
        .try_with(|due| *due)
        .unwrap_or_else(|_| (Instant::now() + DEFAULT_BODY_TIMEOUT, DEFAULT_BODY_TIMEOUT));
    let collected = tokio::time::timeout_at(deadline, Limited::new(body, MAX_BODY_BYTES).collect())
        .await
        .map_err(|_elapsed| HubError::BodyTimeout {
            secs: timeout.as_secs(),
        })?;
    collected
        .map(|collected| collected.to_bytes())
        .map_err(|error| {
            if error.is::<http_body_util::LengthLimitError>() {
                HubError::PayloadTooLarge
            } else {
                HubError::BadRequest("the request body could not be read".into())
            }
        })
}

/// A parsed `application/x-www-form-urlencoded` body or query. A field given twice keeps its
/// first value.
#[derive(Debug, Default)]
pub(super) struct Form(HashMap<String, String>);

impl Form {
    /// Parses a query string or form body.
    pub(super) fn parse(bytes: &[u8]) -> Self {
        let mut fields = HashMap::new();
        for (key, value) in form_urlencoded::parse(bytes) {
            fields
                .entry(key.into_owned())
                .or_insert_with(|| value.into_owned());
        }
        Self(fields)
    }

    /// The query of a request URI.
    pub(super) fn query(uri: &http::Uri) -> Self {
        Self::parse(uri.query().unwrap_or("").as_bytes())
    }

    /// A field's value.
    pub(super) fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// The fields' names, each once, in no particular order.
    pub(super) fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }
}

/// Reads a form body; it must be `application/x-www-form-urlencoded`.
pub(super) async fn read_form(headers: &HeaderMap, body: Incoming) -> Result<Form, HubError> {
    let is_form = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.split(';').next().is_some_and(|essence| {
                essence
                    .trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            })
        });
    if !is_form {
        return Err(HubError::UnsupportedMediaType(
            "send the form as application/x-www-form-urlencoded",
        ));
    }
    Ok(Form::parse(&read_body(body).await?))
}

/// Reads a JSON body into `T`. An empty body reads as `{}`.
pub(super) async fn read_json<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: Incoming,
) -> Result<T, HubError> {
    let bytes = read_body(body).await?;
    let declared_other = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| !ct.to_ascii_lowercase().starts_with("application/json"));
    if declared_other {
        return Err(HubError::UnsupportedMediaType(
            "send the body as application/json",
        ));
    }
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        &bytes
    };
    serde_json::from_slice(bytes)
        .map_err(|error| HubError::BadRequest(format!("invalid JSON body: {error}")))
}
