//! The front tier's own cookies never cross to an upstream, in either direction.
//!
//! Under `gantry up` the session cookie is the key to every server its user may reach; a
//! notebook server is code its user controls. So every request forwarded to any upstream
//! loses the cookies whose names start with the private prefix (`gantry-`), and every
//! upstream response loses any `Set-Cookie` that would set or overwrite one of them (any path,
//! any domain, any case, behind a `__Host-` or `__Secure-` prefix in any case). Other cookies,
//! the notebook's own, pass unchanged. `gantry proxy`, a drop-in for configurable-http-proxy,
//! has no cookies of its own and configures no prefix.

use http::HeaderMap;
use http::HeaderValue;
use http::header::{COOKIE, SET_COOKIE};

#[cfg(test)]
mod tests;

/// The cookie names the front tier keeps to itself: those starting with one prefix.
#[derive(Debug, Clone)]
pub struct PrivateCookies {
    prefix: Box<str>,
}

impl PrivateCookies {
    /// Cookies whose names start with `prefix` (compared without regard to ASCII case, after
    /// any `__Host-`/`__Secure-` prefix) are private.
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    /// Whether a cookie called `name` is private.
    pub fn is_private(&self, name: &[u8]) -> bool {
        let name = strip_cookie_prefixes(name.trim_ascii());
        name.len() >= self.prefix.len()
            && name[..self.prefix.len()].eq_ignore_ascii_case(self.prefix.as_bytes())
    }

    /// Removes private cookies from a request's `Cookie` headers; a header left empty goes.
    /// Leaves the headers untouched (no allocation) when none is private.
    pub fn strip_request(&self, headers: &mut HeaderMap) {
        let any = headers
            .get_all(COOKIE)
            .iter()
            .any(|value| pairs(value.as_bytes()).any(|name| self.is_private(name.0)));
        if !any {
            return;
        }
        let mut kept: Vec<u8> = Vec::new();
        for value in headers.get_all(COOKIE) {
            for (name, pair) in pairs(value.as_bytes()) {
                if self.is_private(name) || pair.is_empty() {
                    continue;
                }
                if !kept.is_empty() {
                    kept.extend_from_slice(b"; ");
                }
                kept.extend_from_slice(pair);
            }
        }
        headers.remove(COOKIE);
        if !kept.is_empty()
            && let Ok(value) = HeaderValue::from_bytes(&kept)
        {
            headers.insert(COOKIE, value);
        }
    }

    /// Removes every `Set-Cookie` of a response that names a private cookie. Returns how
    /// many were removed.
    pub fn filter_response(&self, headers: &mut HeaderMap) -> usize {
        let blocked = headers
            .get_all(SET_COOKIE)
            .iter()
            .filter(|value| self.sets_private(value.as_bytes()))
            .count();
        if blocked == 0 {
            return 0;
        }
        let kept: Vec<HeaderValue> = headers
            .get_all(SET_COOKIE)
            .iter()
            .filter(|value| !self.sets_private(value.as_bytes()))
            .cloned()
            .collect();
        headers.remove(SET_COOKIE);
        for value in kept {
            headers.append(SET_COOKIE, value);
        }
        blocked
    }

    /// Whether a `Set-Cookie` value sets a private cookie. A value with no `=` in its first
    /// pair is a nameless cookie whose value browsers send back bare: it counts by that value.
    fn sets_private(&self, value: &[u8]) -> bool {
        let first = value.split(|b| *b == b';').next().unwrap_or_default();
        let name = match first.iter().position(|b| *b == b'=') {
            Some(at) => &first[..at],
            None => first,
        };
        self.is_private(name)
    }
}

/// The `name=value` pairs of one `Cookie` header, each with its name.
fn pairs(value: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    value.split(|b| *b == b';').map(|pair| {
        let pair = pair.trim_ascii();
        let name = pair.split(|b| *b == b'=').next().unwrap_or_default();
        (name, pair)
    })
}

/// The name without its `__Host-`/`__Secure-` prefixes (browsers match them in any case).
fn strip_cookie_prefixes(mut name: &[u8]) -> &[u8] {
    loop {
        let before = name.len();
        for prefix in [&b"__host-"[..], b"__secure-"] {
            if name.len() >= prefix.len() && name[..prefix.len()].eq_ignore_ascii_case(prefix) {
                name = &name[prefix.len()..];
            }
        }
        if name.len() == before {
            return name;
        }
    }
}
