//! The hub's cookies: their names, their attributes, and reading them from a request.
//!
//! Every cookie is `HttpOnly`, `SameSite=Lax` and `Path=/`. When gantry is served over https
//! they are also `Secure` and carry the `__Host-` prefix, which a browser accepts only from
//! this exact host over https with `Path=/` and no `Domain`: a sibling subdomain cannot set
//! or overwrite them (cookie tossing). Over plain http (local trials) the prefix is not
//! allowed, so the names lose it.

use cookie::{Cookie, SameSite};
use http::HeaderMap;
use http::header::COOKIE;

#[cfg(test)]
mod tests;

/// What every cookie name of gantry's starts with: the data plane keeps cookies with this
/// prefix from every upstream, in both directions ([`crate::private_cookies`]).
pub const PRIVATE_PREFIX: &str = "gantry-";
/// The session cookie's base name.
pub const SESSION: &str = "gantry-session";
/// The login-form cookie: binds the login and sign-up forms' CSRF token to this browser.
pub const LOGIN: &str = "gantry-login";
/// The OpenID Connect cookie: binds a login in flight to the browser that started it.
pub const OIDC: &str = "gantry-oidc";
/// Which OpenID Connect provider this browser's session came from, for RP-initiated
/// logout. Not a credential: it only picks which configured provider's logout page follows.
pub const IDP: &str = "gantry-idp";
/// How long the login and OpenID cookies live, in seconds: one login's worth.
pub const FLOW_MAX_AGE_SECS: i64 = 15 * 60;

/// How this gantry names and flags its cookies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CookiePolicy {
    /// Served over https: `Secure` and the `__Host-` prefix.
    pub https: bool,
}

impl CookiePolicy {
    /// The name a base name takes under this policy.
    pub fn name(self, base: &str) -> String {
        if self.https {
            format!("__Host-{base}")
        } else {
            base.to_owned()
        }
    }

    /// A `Set-Cookie` value that sets `base` to `value` for `max_age_secs` seconds (`None`:
    /// until the browser closes).
    pub fn set(self, base: &str, value: &str, max_age_secs: Option<i64>) -> String {
        let mut cookie = Cookie::build((self.name(base), value.to_owned()))
            .path("/")
            .http_only(true)
            .same_site(SameSite::Lax)
            .secure(self.https);
        if let Some(secs) = max_age_secs {
            cookie = cookie.max_age(cookie::time::Duration::seconds(secs));
        }
        cookie.build().encoded().to_string()
    }

    /// A `Set-Cookie` value that deletes `base`.
    pub fn clear(self, base: &str) -> String {
        self.set(base, "", Some(0))
    }

    /// The value of the cookie `base` in the request's `Cookie` headers, under this policy's
    /// name. `None` when it is absent, or present more than once with different values: a
    /// second copy can only come from somewhere else (a tossed cookie with another path or
    /// domain), and picking one would let it win.
    pub fn get(self, headers: &HeaderMap, base: &str) -> Option<String> {
        // Compared without building the name: this runs on every gated request.
        let named = |name: &str| match self.https {
            true => name.strip_prefix("__Host-") == Some(base),
            false => name == base,
        };
        let mut found: Option<String> = None;
        for header in headers.get_all(COOKIE) {
            let Ok(text) = header.to_str() else { continue };
            for cookie in Cookie::split_parse_encoded(text).flatten() {
                if !named(cookie.name()) {
                    continue;
                }
                match &found {
                    Some(previous) if previous != cookie.value() => return None,
                    Some(_) => {}
                    None => found = Some(cookie.value().to_owned()),
                }
            }
        }
        found.filter(|value| !value.is_empty())
    }
}
