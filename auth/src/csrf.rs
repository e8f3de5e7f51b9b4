//! Cross-site request forgery: may this cookie-authenticated request change state?
//!
//! [`check`] is a pure decision over the method, the headers, the form's `_xsrf` field (which
//! the caller parsed from the body) and the credential the request was authenticated with.
//! The rules, in the order they are applied:
//!
//! 1. `GET`, `HEAD` and `OPTIONS` pass: they must not change state, and handlers are written so.
//! 2. A request authenticated by an API token (`Authorization` header) passes: a browser does
//!    not attach that header to a cross-site request on its own.
//! 3. Otherwise the request is authenticated by the session cookie, which a browser does
//!    attach cross-site, so:
//!    * a `Content-Type` of `text/plain` is refused (JupyterHub's `test_post_content_type`):
//!      it is the one CORS-safelisted type no handler of ours accepts, and a cross-site form
//!      can send it with a body that parses as JSON; more than one `Content-Type` is refused;
//!    * a `Sec-Fetch-Site` other than `same-origin` is refused. The Fetch-Metadata headers
//!      only ever refuse here, never exempt: `Sec-Fetch-Mode: no-cors` or `Sec-Fetch-Site:
//!      same-origin` without a token is still refused (CVE-2026-40864, GHSA-m68r);
//!    * the `Origin` header, if present, must be exactly our [`PublicOrigin`]; if it is
//!      absent the `Referer` must be on our origin; if both are absent the request is refused.
//!      (Browsers send `Origin` on every POST today; a client that sends neither is not a
//!      browser page of ours and should use a token.) `Origin: null` is refused;
//!    * the CSRF token must be present (header `X-XSRFToken`, as JupyterHub, or
//!      `X-CSRF-Token`, or the form field `_xsrf`), and every copy presented must equal the
//!      session's [`CsrfToken`], compared in constant time.
//!
//! The session's token is derived from the session secret (SHA-256 over a fixed label and the
//! secret, see [`CsrfToken::for_session`]): nothing more is stored, it changes whenever the
//! session id does (every login), and knowing it reveals nothing about the session id. Login
//! CSRF (before there is a session) is not handled here yet.

use std::fmt;

use http::header::{CONTENT_TYPE, HeaderMap, HeaderName, ORIGIN, REFERER};
use http::{HeaderValue, Method};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::secret::hex;

#[cfg(test)]
mod tests;

/// The header JupyterHub's pages and JupyterLab send the token in.
pub const XSRF_HEADER: HeaderName = HeaderName::from_static("x-xsrftoken");

/// The conventional alternative header.
pub const CSRF_HEADER: HeaderName = HeaderName::from_static("x-csrf-token");

/// The form field name (JupyterHub's).
pub const XSRF_FIELD: &str = "_xsrf";

const SEC_FETCH_SITE: HeaderName = HeaderName::from_static("sec-fetch-site");

/// Domain separation for [`CsrfToken::for_session`].
const CSRF_LABEL: &[u8] = b"gantry csrf token v1\0";

/// A session's CSRF token: 64 lowercase hex characters, put into forms and pages.
#[derive(Clone, PartialEq, Eq)]
pub struct CsrfToken(String);

impl CsrfToken {
    /// The token of the session whose secret (cookie value) is `session_secret`.
    pub fn for_session(session_secret: &str) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(CSRF_LABEL);
        hasher.update(session_secret.as_bytes());
        Self(hex(&hasher.finalize()))
    }

    /// The token's text, for a hidden form field or a page's JavaScript.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `presented` is this token, in time that does not depend on where they differ.
    pub fn matches(&self, presented: &str) -> bool {
        self.0.as_bytes().ct_eq(presented.as_bytes()).into()
    }
}

impl fmt::Debug for CsrfToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CsrfToken(…)")
    }
}

/// Our public origin, `scheme://host[:port]`, normalised: lowercase, default port dropped.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PublicOrigin(String);

impl PublicOrigin {
    /// Parses an origin such as `https://hub.example.com` or `http://127.0.0.1:8000`. A single
    /// trailing `/` is accepted (a public URL with an empty path); a path, query, user info or
    /// non-ASCII host is not (write internationalised hosts in their `xn--` form).
    ///
    /// # Errors
    ///
    /// [`OriginError`] if `s` is not such an origin.
    pub fn parse(s: &str) -> Result<Self, OriginError> {
        let (scheme, rest) = s.split_once("://").ok_or(OriginError)?;
        let scheme = scheme.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "https" => "443",
            "http" => "80",
            _ => return Err(OriginError),
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        let (host, port) = split_host_port(authority)?;
        let host = host.to_ascii_lowercase();
        match port {
            None => Ok(Self(format!("{scheme}://{host}"))),
            Some(port) if port == default_port => Ok(Self(format!("{scheme}://{host}"))),
            Some(port) => {
                // Digits only, no leading zeros, in range.
                let valid = port.bytes().all(|b| b.is_ascii_digit())
                    && !port.starts_with('0')
                    && port.parse::<u16>().is_ok();
                if !valid {
                    return Err(OriginError);
                }
                Ok(Self(format!("{scheme}://{host}:{port}")))
            }
        }
    }

    /// The normalised origin.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether a `Referer` value is a URL on this origin.
    fn is_origin_of(&self, url: &str) -> bool {
        // The origin ends where the path, query or fragment starts.
        let Some(scheme_end) = url.find("://") else {
            return false;
        };
        let after = &url[scheme_end + 3..];
        let end = after
            .find(['/', '?', '#'])
            .map_or(url.len(), |i| scheme_end + 3 + i);
        PublicOrigin::parse(&url[..end]).is_ok_and(|origin| origin == *self)
    }
}

impl fmt::Display for PublicOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Splits `host[:port]` and checks the host: a name or v4 address (letters, digits, `-`,
/// `.`) or a bracketed v6 literal (hex digits, `:`, `.`). User info (`@`), `%` and everything
/// else are refused.
fn split_host_port(authority: &str) -> Result<(&str, Option<&str>), OriginError> {
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let close = v6.find(']').ok_or(OriginError)?;
        let inner = &v6[..close];
        if inner.is_empty()
            || !inner
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return Err(OriginError);
        }
        let host = &authority[..close + 2];
        match &v6[close + 1..] {
            "" => (host, None),
            rest => (host, Some(rest.strip_prefix(':').ok_or(OriginError)?)),
        }
    } else {
        let (host, port) = match authority.split_once(':') {
            None => (authority, None),
            Some((host, port)) => (host, Some(port)),
        };
        if host.is_empty()
            || !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        {
            return Err(OriginError);
        }
        (host, port)
    };
    Ok((host, port))
}

/// The string is not an origin `PublicOrigin::parse` accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not an origin of the form http(s)://host[:port]")]
pub struct OriginError;

/// How the request was authenticated.
#[derive(Clone, Copy, Debug)]
pub enum Credential<'a> {
    /// By the session cookie; carries that session's CSRF token.
    Session(&'a CsrfToken),
    /// By an API token in the `Authorization` header.
    ApiToken,
}

/// Why a state-changing request was refused. Every variant is a 403 for the client; the
/// variant is for the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CsrfRejection {
    /// `Content-Type: text/plain` on a cookie-authenticated request.
    #[error("cookie-authenticated request with Content-Type text/plain")]
    TextPlain,
    /// More than one `Content-Type` header.
    #[error("more than one Content-Type header")]
    AmbiguousContentType,
    /// `Sec-Fetch-Site` says the request comes from another site or origin.
    #[error("Sec-Fetch-Site is not same-origin")]
    CrossSiteFetch,
    /// `Origin` is present and is not our origin (or there are several).
    #[error("Origin is not our origin")]
    ForeignOrigin,
    /// No `Origin`, and `Referer` is not on our origin (or there are several).
    #[error("Referer is not on our origin")]
    ForeignReferer,
    /// Neither `Origin` nor `Referer` was sent.
    #[error("neither Origin nor Referer was sent")]
    NoOrigin,
    /// No CSRF token in the headers or the form.
    #[error("no CSRF token")]
    MissingToken,
    /// A CSRF token that is not the session's.
    #[error("wrong CSRF token")]
    WrongToken,
}

/// Decides whether a request may proceed; see the [module documentation](crate::csrf).
///
/// `form_token` is the `_xsrf` field of a form body, if the caller parsed one.
///
/// # Errors
///
/// The first rule the request breaks.
pub fn check(
    method: &Method,
    headers: &HeaderMap,
    form_token: Option<&str>,
    credential: Credential<'_>,
    origin: &PublicOrigin,
) -> Result<(), CsrfRejection> {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    let expected = match credential {
        Credential::ApiToken => return Ok(()),
        Credential::Session(expected) => expected,
    };
    check_content_type(headers)?;
    check_fetch_site(headers)?;
    check_origin(headers, origin)?;
    check_token(headers, form_token, expected)
}

fn check_content_type(headers: &HeaderMap) -> Result<(), CsrfRejection> {
    let mut values = headers.get_all(CONTENT_TYPE).iter();
    let Some(value) = values.next() else {
        return Ok(());
    };
    if values.next().is_some() {
        return Err(CsrfRejection::AmbiguousContentType);
    }
    // The media type is what precedes any parameters; compare without case or whitespace.
    let essence = value
        .as_bytes()
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default();
    if essence.trim_ascii().eq_ignore_ascii_case(b"text/plain") {
        return Err(CsrfRejection::TextPlain);
    }
    Ok(())
}

fn check_fetch_site(headers: &HeaderMap) -> Result<(), CsrfRejection> {
    for value in headers.get_all(SEC_FETCH_SITE) {
        if !value
            .as_bytes()
            .trim_ascii()
            .eq_ignore_ascii_case(b"same-origin")
        {
            return Err(CsrfRejection::CrossSiteFetch);
        }
    }
    Ok(())
}

fn check_origin(headers: &HeaderMap, ours: &PublicOrigin) -> Result<(), CsrfRejection> {
    match single(headers, ORIGIN) {
        Single::One(value) => {
            let same = PublicOrigin::parse(value).is_ok_and(|origin| origin == *ours);
            if same {
                Ok(())
            } else {
                Err(CsrfRejection::ForeignOrigin)
            }
        }
        Single::Invalid => Err(CsrfRejection::ForeignOrigin),
        Single::Absent => match single(headers, REFERER) {
            Single::One(value) if ours.is_origin_of(value) => Ok(()),
            Single::One(_) | Single::Invalid => Err(CsrfRejection::ForeignReferer),
            Single::Absent => Err(CsrfRejection::NoOrigin),
        },
    }
}

fn check_token(
    headers: &HeaderMap,
    form_token: Option<&str>,
    expected: &CsrfToken,
) -> Result<(), CsrfRejection> {
    let mut presented: Vec<&[u8]> = Vec::new();
    for name in [XSRF_HEADER, CSRF_HEADER] {
        presented.extend(headers.get_all(name).iter().map(HeaderValue::as_bytes));
    }
    presented.extend(form_token.map(str::as_bytes));
    if presented.is_empty() {
        return Err(CsrfRejection::MissingToken);
    }
    // Every copy must match: a request carrying a right and a wrong token is not trusted.
    let all_match = presented.iter().fold(true, |ok, token| {
        ok & bool::from(expected.0.as_bytes().ct_eq(token))
    });
    if all_match {
        Ok(())
    } else {
        Err(CsrfRejection::WrongToken)
    }
}

enum Single<'a> {
    Absent,
    One(&'a str),
    /// Several values, or one that is not visible ASCII.
    Invalid,
}

fn single(headers: &HeaderMap, name: HeaderName) -> Single<'_> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (None, _) => Single::Absent,
        (Some(value), None) => value.to_str().map_or(Single::Invalid, Single::One),
        (Some(_), Some(_)) => Single::Invalid,
    }
}

/// The origins whose pages may use a session cookie for a WebSocket or a state-changing
/// request to a user's server through the gate (the front tier's cross-site defence for the
/// apps behind it, which need not check `Origin` themselves).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GateOrigins {
    /// Our public origin.
    pub ours: PublicOrigin,
    /// Whether the request's own `Host` also counts as ours: when no public URL is
    /// configured, so that gantry reached by another name of its host keeps working.
    pub host_is_ours: bool,
    /// Further origins the operator trusts (`hub.allowed_origins`).
    pub allowed: Vec<PublicOrigin>,
}

/// Why a cookie-authenticated request through the gate was refused as cross-origin. Every
/// variant is a 403 for the client.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CrossOrigin {
    /// `Origin` names another origin.
    #[error("the request comes from the page origin {0}, which is not this hub's")]
    Foreign(String),
    /// `Origin: null` (a sandboxed frame, a `data:` page, a redirect across origins).
    #[error("the request comes from an opaque origin (Origin: null)")]
    Opaque,
    /// Several `Origin` headers, or one that is not an origin.
    #[error("the request's Origin header is malformed")]
    Malformed,
    /// No `Origin`, and `Sec-Fetch-Site: cross-site`.
    #[error("the request comes from another site (Sec-Fetch-Site: cross-site)")]
    CrossSite,
}

/// Whether a cookie-authenticated WebSocket upgrade or state-changing request through the
/// gate comes from a page of ours. The caller applies it only to such requests: token
/// requests (`Authorization`, which no browser attaches on its own) and safe methods other
/// than upgrades do not need it.
///
/// `Origin`, which browsers send on every WebSocket handshake and every cross-origin or
/// non-GET fetch, must be our origin, the request's `Host` under
/// [`GateOrigins::host_is_ours`], or one of [`GateOrigins::allowed`]. Without `Origin` (not
/// a browser page: a script, a command-line client) the request passes unless
/// `Sec-Fetch-Site` says `cross-site`.
///
/// # Errors
///
/// [`CrossOrigin`] saying which rule the request broke.
pub fn check_gate_origin(headers: &HeaderMap, origins: &GateOrigins) -> Result<(), CrossOrigin> {
    let value = match single(headers, ORIGIN) {
        Single::Absent => {
            let cross_site = headers.get_all(SEC_FETCH_SITE).iter().any(|value| {
                value
                    .as_bytes()
                    .trim_ascii()
                    .eq_ignore_ascii_case(b"cross-site")
            });
            return if cross_site {
                Err(CrossOrigin::CrossSite)
            } else {
                Ok(())
            };
        }
        Single::Invalid => return Err(CrossOrigin::Malformed),
        Single::One(value) => value,
    };
    if value.trim() == "null" {
        return Err(CrossOrigin::Opaque);
    }
    let origin = PublicOrigin::parse(value).map_err(|_| CrossOrigin::Malformed)?;
    if origin == origins.ours || origins.allowed.contains(&origin) {
        return Ok(());
    }
    if origins.host_is_ours && origin_of_host(headers, &origin).is_some_and(|own| own == origin) {
        return Ok(());
    }
    Err(CrossOrigin::Foreign(origin.as_str().to_owned()))
}

/// The origin the request's one `Host` header names, with the scheme of `origin` (the
/// scheme is not in `Host`; one port serves one scheme).
fn origin_of_host(headers: &HeaderMap, origin: &PublicOrigin) -> Option<PublicOrigin> {
    let Single::One(host) = single(headers, http::header::HOST) else {
        return None;
    };
    let scheme = origin.as_str().split_once("://")?.0;
    PublicOrigin::parse(&format!("{scheme}://{host}")).ok()
}
