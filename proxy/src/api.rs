//! The route API, compatible with configurable-http-proxy's, on its own listener.
//!
//! - `GET /api/routes[?inactive_since=<ISO 8601>]`: every route as `{prefix: {target,
//!   last_activity, ...data}}`; with `inactive_since`, only routes idle since then.
//! - `GET /api/routes/<path>`: one route, or 404.
//! - `POST /api/routes/<path>` with `{"target": "http://…", ...data}`: add or replace; 201.
//! - `DELETE /api/routes/<path>`: 204, or 404 when there was none.
//! - `GET /metrics`: the proxy's Prometheus metrics.
//!
//! Every request needs `Authorization: token <CONFIGPROXY_AUTH_TOKEN>`, compared in constant
//! time; anything else is 403. Route keys in replies are decoded, without trailing slash, as
//! CHP's are (JupyterHub re-escapes them).

use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::{Map, Value};
use subtle::ConstantTimeEq;

use crate::errors::ResponseBody;
use crate::metrics::Metrics;
use crate::routes::{Route, RouteChange, RoutePrefix, RouteTable, Target};
use crate::server::{ConnInfo, Handler};

#[cfg(test)]
mod tests;

/// Largest accepted request body, in bytes. A route is a URL and a little data.
const MAX_BODY: usize = 64 * 1024;

/// The route API service.
#[derive(Debug)]
pub struct RouteApi {
    table: Arc<RouteTable>,
    token: Box<[u8]>,
    metrics: Metrics,
}

impl RouteApi {
    /// The API over `table`, accepting `token`. The caller guarantees the token is not empty.
    pub fn new(table: Arc<RouteTable>, token: &str, metrics: Metrics) -> Self {
        metrics.routes.set(gauge_value(table.len()));
        Self {
            table,
            token: token.as_bytes().into(),
            metrics,
        }
    }

    fn authorized(&self, request: &Request<Incoming>) -> bool {
        let Some(value) = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        else {
            return false;
        };
        let Some((scheme, token)) = value.trim().split_once(' ') else {
            return false;
        };
        let scheme_ok =
            scheme.eq_ignore_ascii_case("token") || scheme.eq_ignore_ascii_case("bearer");
        scheme_ok && bool::from(token.trim().as_bytes().ct_eq(&self.token))
    }

    async fn route_request(&self, request: Request<Incoming>) -> Response<ResponseBody> {
        let path = request.uri().path();
        if path == "/metrics" && request.method() == Method::GET {
            return text(
                StatusCode::OK,
                "text/plain; version=0.0.4",
                self.metrics.render(),
            );
        }
        let Some(rest) = path.strip_prefix("/api/routes") else {
            return error(
                StatusCode::NOT_FOUND,
                "Not found: the API lives under /api/routes.",
            );
        };
        if !(rest.is_empty() || rest.starts_with('/')) {
            return error(
                StatusCode::NOT_FOUND,
                "Not found: the API lives under /api/routes.",
            );
        }
        let prefix = match RoutePrefix::parse(rest, self.table.host_routing()) {
            Ok(prefix) => prefix,
            Err(e) => return error(StatusCode::BAD_REQUEST, &e.to_string()),
        };
        let whole_table = rest.is_empty() || rest == "/";
        match *request.method() {
            Method::GET if whole_table => self.list(request.uri().query()),
            Method::GET => match self.table.get(&prefix) {
                Some(route) => json(StatusCode::OK, &route_json(&route)),
                None => error(StatusCode::NOT_FOUND, "No such route."),
            },
            Method::POST => self.add(prefix, request.into_body()).await,
            Method::DELETE => match self.table.apply(RouteChange::Remove(prefix.clone())) {
                Some(_) => {
                    self.metrics.routes.set(gauge_value(self.table.len()));
                    tracing::info!(route = %prefix, "route removed");
                    empty(StatusCode::NO_CONTENT)
                }
                None => error(StatusCode::NOT_FOUND, "No such route."),
            },
            _ => {
                let mut response =
                    error(StatusCode::METHOD_NOT_ALLOWED, "Use GET, POST or DELETE.");
                response
                    .headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("GET, POST, DELETE"));
                response
            }
        }
    }

    fn list(&self, query: Option<&str>) -> Response<ResponseBody> {
        let since = match inactive_since(query) {
            Ok(since) => since,
            Err(message) => return error(StatusCode::BAD_REQUEST, &message),
        };
        let mut all = Map::new();
        for route in self.table.snapshot() {
            if since.is_none_or(|since| route.last_activity_millis() < since) {
                all.insert(route.prefix().to_string(), route_json(&route));
            }
        }
        json(StatusCode::OK, &Value::Object(all))
    }

    async fn add(&self, prefix: RoutePrefix, body: Incoming) -> Response<ResponseBody> {
        let bytes = match Limited::new(body, MAX_BODY).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                return error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "The request body is larger than 64 KiB.",
                );
            }
            Err(_) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "The request body could not be read.",
                );
            }
        };
        let mut data: Map<String, Value> = match serde_json::from_slice(&bytes) {
            Ok(Value::Object(data)) => data,
            Ok(_) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "The body must be a JSON object with a \"target\".",
                );
            }
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    &format!("The body is not valid JSON: {e}."),
                );
            }
        };
        let target = match data.remove("target") {
            Some(Value::String(target)) => target,
            _ => return error(StatusCode::BAD_REQUEST, "Must specify 'target' as string."),
        };
        let target = match Target::parse(&target) {
            Ok(target) => target,
            Err(e) => return error(StatusCode::BAD_REQUEST, &e.to_string()),
        };
        // The proxy keeps last_activity itself.
        data.remove("last_activity");
        let data = if data.is_empty() {
            None
        } else {
            match serde_json::value::to_raw_value(&data) {
                Ok(raw) => Some(raw),
                Err(_) => {
                    return error(StatusCode::BAD_REQUEST, "The route data cannot be stored.");
                }
            }
        };
        tracing::info!(route = %prefix, target = target.as_str(), "route added");
        self.table
            .apply(RouteChange::Upsert(Route::new(prefix, target, data)));
        self.metrics.routes.set(gauge_value(self.table.len()));
        empty(StatusCode::CREATED)
    }
}

impl Handler for RouteApi {
    async fn handle(
        self: Arc<Self>,
        request: Request<Incoming>,
        _conn: ConnInfo,
    ) -> Response<ResponseBody> {
        if !self.authorized(&request) {
            tracing::debug!(path = %request.uri().path(), "route API request refused: bad or missing token");
            return error(
                StatusCode::FORBIDDEN,
                "A valid 'Authorization: token …' header is required.",
            );
        }
        self.route_request(request).await
    }
}

/// A route as the API shows it: its data, `target` and `last_activity`.
fn route_json(route: &Route) -> Value {
    let mut object = route
        .data()
        .and_then(|raw| serde_json::from_str::<Map<String, Value>>(raw.get()).ok())
        .unwrap_or_default();
    object.insert(
        "target".into(),
        Value::String(route.target().as_str().into()),
    );
    object.insert(
        "last_activity".into(),
        Value::String(format_millis(route.last_activity_millis())),
    );
    Value::Object(object)
}

/// Milliseconds since the epoch as ISO 8601 in UTC with milliseconds, as JavaScript's
/// `toISOString` (and so CHP) writes it.
pub fn format_millis(millis: i64) -> String {
    jiff::Timestamp::from_millisecond(millis)
        .map(|ts| ts.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_default()
}

/// Parses `inactive_since` (or CHP's older `inactiveSince`): an ISO 8601 timestamp, a date
/// and time without offset (taken as UTC), or a date. Returns milliseconds since the epoch.
fn inactive_since(query: Option<&str>) -> Result<Option<i64>, String> {
    let Some(value) = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|pair| {
            let (key, value) = pair.split_once('=')?;
            matches!(key, "inactive_since" | "inactiveSince").then_some(value)
        })
    else {
        return Ok(None);
    };
    // A raw '+' is kept: it is far more likely an unencoded UTC offset than a space.
    let value = percent_encoding::percent_decode_str(value).decode_utf8_lossy();
    let value = value.trim();
    let parsed = value.parse::<jiff::Timestamp>().or_else(|_| {
        let civil = value.parse::<jiff::civil::DateTime>().or_else(|_| {
            value
                .parse::<jiff::civil::Date>()
                .map(|d| d.to_datetime(jiff::civil::Time::midnight()))
        })?;
        jiff::tz::TimeZone::UTC.to_timestamp(civil)
    });
    match parsed {
        Ok(timestamp) => Ok(Some(timestamp.as_millisecond())),
        Err(_) => Err(format!(
            "Invalid datestamp '{}' must be ISO8601.",
            value.chars().take(64).collect::<String>()
        )),
    }
}

fn gauge_value(count: usize) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

fn json(status: StatusCode, value: &Value) -> Response<ResponseBody> {
    text(status, "application/json", value.to_string())
}

fn error(status: StatusCode, message: &str) -> Response<ResponseBody> {
    json(
        status,
        &serde_json::json!({ "status": status.as_u16(), "message": message }),
    )
}

fn empty(status: StatusCode) -> Response<ResponseBody> {
    let mut response = Response::new(crate::errors::full_body(Bytes::new()));
    *response.status_mut() = status;
    response
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<ResponseBody> {
    let mut response = Response::new(crate::errors::full_body(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
