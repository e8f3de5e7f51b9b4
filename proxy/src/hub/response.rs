//! Building hub responses, and the one place hub errors become responses.

use http::header::{CACHE_CONTROL, CONTENT_TYPE, LOCATION, RETRY_AFTER};
use http::{HeaderValue, Response, StatusCode};

use super::body;
use super::pages;
use crate::errors::ResponseBody;

/// Why the hub refused or failed a request. Client faults carry what the client may be told;
/// internal failures carry their cause for the log only.
#[derive(Debug, thiserror::Error)]
pub(super) enum HubError {
    /// 400, with a message for the client.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// 403 without a credential, or with one that is not valid (JupyterHub answers 403 here).
    #[error("not authenticated")]
    Unauthenticated,
    /// 403: authenticated, but not allowed.
    #[error("forbidden")]
    Forbidden,
    /// 403: a token was asked for a scope the requesting credential does not hold.
    #[error("the requesting credential does not hold the scope {0}")]
    ScopeNotHeld(String),
    /// 403 from the CSRF check.
    #[error("CSRF check failed: {0}")]
    Csrf(#[source] gantry_auth::CsrfRejection),
    /// 403: a session-cookie WebSocket or state-changing request to a server through the
    /// gate from a page of another origin.
    #[error("cross-origin request through the gate: {0}")]
    CrossOrigin(#[source] gantry_auth::CrossOrigin),
    /// 404.
    #[error("not found")]
    NotFound,
    /// 413.
    #[error("request body too large")]
    PayloadTooLarge,
    /// 415, saying what to send.
    #[error("unsupported media type")]
    UnsupportedMediaType(&'static str),
    /// 429 with `Retry-After`.
    #[error("too many login attempts")]
    TooManyAttempts {
        /// Seconds until the next attempt may succeed.
        retry_after_secs: u64,
    },
    /// 429: this client address presented too many unknown credentials.
    #[error("too many unknown credentials from this address")]
    TooManyLookups,
    /// 403: an OpenID login that may not reach the account of its name (no takeover), with
    /// the reason and the fix for the person logging in.
    #[error("OpenID login refused: {0}")]
    LoginRefused(String),
    /// 408: the request body did not arrive within `hub.request_body_timeout_secs`.
    #[error("the request body did not arrive within {secs} s")]
    BodyTimeout {
        /// The deadline, in seconds.
        secs: u64,
    },
    /// 503 with `Retry-After`: password hashing is saturated (`[auth.limits]`
    /// `password_hash_workers` and `password_hash_queue`).
    #[error(transparent)]
    HashingBusy(#[from] super::hashing::HashError),
    /// 503 with `Retry-After`: logins naming no account with a password have spent their
    /// budget (`[auth.limits]` `unknown_names_per_minute` and `unknown_names_burst`). Told
    /// to the client in the words of [`HubError::HashingBusy`].
    #[error("logins naming no account are over their budget (auth.limits.unknown_names_*)")]
    UnknownNamesBusy {
        /// Seconds until the budget admits one more.
        retry_after_secs: u64,
    },
    /// 503 with `Retry-After`: a provider has `oidc_logins_in_flight` logins in flight.
    #[error(
        "{in_flight} OpenID logins in flight with {provider} (auth.limits.oidc_logins_in_flight)"
    )]
    OidcLoginsFull {
        /// The provider's id.
        provider: String,
        /// The cap.
        in_flight: usize,
        /// Seconds until the oldest login in flight expires.
        retry_after_secs: u64,
    },
    /// 429 with `Retry-After`: this client address has
    /// `oidc_logins_in_flight_per_address` logins in flight.
    #[error(
        "{in_flight} OpenID logins in flight from this address (auth.limits.oidc_logins_in_flight_per_address)"
    )]
    OidcLoginsFromAddress {
        /// The cap.
        in_flight: usize,
        /// Seconds until this address's oldest login in flight expires.
        retry_after_secs: u64,
    },
    /// A failed OpenID Connect login; client faults are 400, the provider's are 502.
    #[error(transparent)]
    Oidc(#[from] gantry_auth::OidcError),
    /// The store failed: 500.
    #[error(transparent)]
    Store(#[from] gantry_auth::StoreError),
    /// Something else failed inside the hub: 500.
    #[error("internal error: {0}")]
    Internal(String),
}

impl HubError {
    fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthenticated
            | Self::Forbidden
            | Self::ScopeNotHeld(_)
            | Self::Csrf(_)
            | Self::CrossOrigin(_)
            | Self::LoginRefused(_) => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::TooManyAttempts { .. }
            | Self::TooManyLookups
            | Self::OidcLoginsFromAddress { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            Self::HashingBusy(super::hashing::HashError::Busy { .. })
            | Self::UnknownNamesBusy { .. }
            | Self::OidcLoginsFull { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::HashingBusy(super::hashing::HashError::Failed) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            Self::Oidc(error) => error.status(),
            Self::Store(_) | Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// What the client is told. Internal causes stay in the log.
    fn public_message(&self) -> String {
        match self {
            Self::BadRequest(message) | Self::LoginRefused(message) => message.clone(),
            Self::Unauthenticated => "Missing or invalid credentials: log in, or send a valid API token.".to_owned(),
            Self::Forbidden => "You are not allowed to do this.".to_owned(),
            Self::ScopeNotHeld(scope) => format!("The credential making this request does not hold the scope `{scope}`, so it cannot grant it: a new token may carry only scopes the requesting session or token holds."),
            Self::Csrf(_) => "The request failed the cross-site request forgery check: reload the page and try again.".to_owned(),
            Self::CrossOrigin(reason) => format!("Refused: {reason}. A login session opens WebSockets to a server and sends it changes only from this hub's own pages; send an API token instead, or ask the administrator to list the page's origin in hub.allowed_origins."),
            Self::NotFound => "Not found.".to_owned(),
            Self::PayloadTooLarge => "The request body is too large.".to_owned(),
            Self::UnsupportedMediaType(fix) => format!("Unsupported media type: {fix}."),
            Self::TooManyAttempts { retry_after_secs } => {
                format!("Too many login attempts; try again in {retry_after_secs} seconds.")
            }
            Self::TooManyLookups => "Too many requests with unknown credentials from this address; try again in a second.".to_owned(),
            Self::BodyTimeout { secs } => format!("The request body did not arrive within {secs} seconds; send it again."),
            Self::HashingBusy(super::hashing::HashError::Busy { .. }) => "Too many logins are being checked at this moment; try again in a second.".to_owned(),
            Self::UnknownNamesBusy { retry_after_secs } => format!("Too many logins are being checked at this moment; try again in {retry_after_secs} seconds."),
            Self::OidcLoginsFull { retry_after_secs, .. } => format!("Too many logins with this provider are in progress; try again in {retry_after_secs} seconds."),
            Self::OidcLoginsFromAddress { retry_after_secs, .. } => format!("Too many logins in progress from your network address; finish one, or try again in {retry_after_secs} seconds."),
            Self::HashingBusy(super::hashing::HashError::Failed) => "Internal error; the administrator can find the cause in gantry's log.".to_owned(),
            Self::Oidc(error) if error.is_client_error() => {
                "The login could not be completed; start again from the login page.".to_owned()
            }
            Self::Oidc(_) => "The identity provider could not be reached or answered wrongly; try again later.".to_owned(),
            Self::Store(_) | Self::Internal(_) => "Internal error; the administrator can find the cause in gantry's log.".to_owned(),
        }
    }

    /// The response for this error, JSON (JupyterHub's `{"status", "message"}`) or a page.
    pub(super) fn into_response(self, json: bool) -> Response<ResponseBody> {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error = %crate::errors::error_chain(&self), "hub request failed");
        } else {
            tracing::info!(%status, reason = %crate::errors::error_chain(&self), "hub request refused");
        }
        let message = self.public_message();
        let mut response = if json {
            self::json(
                status,
                &serde_json::json!({"status": status.as_u16(), "message": message}),
            )
        } else {
            html(status, pages::error_page(status, &message))
        };
        let retry_after = match self {
            Self::TooManyAttempts { retry_after_secs }
            | Self::UnknownNamesBusy { retry_after_secs }
            | Self::OidcLoginsFull {
                retry_after_secs, ..
            }
            | Self::OidcLoginsFromAddress {
                retry_after_secs, ..
            } => Some(retry_after_secs),
            Self::TooManyLookups | Self::HashingBusy(super::hashing::HashError::Busy { .. }) => {
                Some(1)
            }
            _ => None,
        };
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// A JSON response.
pub(super) fn json(status: StatusCode, value: &serde_json::Value) -> Response<ResponseBody> {
    let mut response = Response::new(body(value.to_string()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// An HTML page. Pages are never cached and never framed.
pub(super) fn html(status: StatusCode, page: String) -> Response<ResponseBody> {
    let mut response = Response::new(body(page));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    headers.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'self'; frame-ancestors 'none'; form-action 'self' https: http:",
        ),
    );
    headers.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    response
}

/// A 303 redirect to `location` (a safe path or a provider URL the hub built).
pub(super) fn redirect(location: &str) -> Response<ResponseBody> {
    let mut response = Response::new(body(""));
    *response.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(LOCATION, value);
    }
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
