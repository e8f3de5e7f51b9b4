//! Header rewriting between the client and the upstream: hop-by-hop headers out, the
//! proxy's own `X-Forwarded-*` in.
//!
//! Client-sent `X-Forwarded-*` and `Forwarded` headers are replaced, never trusted, unless the
//! client is a configured trusted downstream (a load balancer in front of gantry); then its
//! values are kept and the client's address is appended to `X-Forwarded-For`.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

#[cfg(test)]
mod tests;

/// `X-Forwarded-For`, `-Proto`, `-Host` and `-Port`.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// The scheme the client used.
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// The `Host` the client asked for.
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// The port the client connected to.
pub const X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");

/// Headers that describe one connection and never cross a proxy (RFC 9110 §7.6.1), besides
/// those the `Connection` header names.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// What the proxy knows about the client side of one request.
#[derive(Debug, Clone, Copy)]
pub struct ClientSide<'a> {
    /// The client's address.
    pub addr: IpAddr,
    /// Whether the client is a trusted downstream whose forwarding headers are kept.
    pub trusted: bool,
    /// Whether the client reached gantry over TLS.
    pub tls: bool,
    /// The port gantry accepted the connection on, used when `Host` names none.
    pub local_port: u16,
    /// The host the client asked for (`Host` or the HTTP/2 `:authority`).
    pub host: Option<&'a str>,
}

/// Whether a request asks to switch protocols (WebSocket and other `Upgrade`s).
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .any(|v| has_token(v, "upgrade"))
}

fn has_token(value: &HeaderValue, token: &str) -> bool {
    value.to_str().is_ok_and(|v| {
        v.split(',')
            .any(|part| part.trim().eq_ignore_ascii_case(token))
    })
}

/// Removes hop-by-hop headers in place. For an upgrade, `Connection: upgrade` and `Upgrade`
/// are kept so the upstream sees the handshake.
pub fn remove_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // Headers named by `Connection` are hop-by-hop too (RFC 9110 §7.6.1).
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .filter(|name| !(keep_upgrade && name == header::UPGRADE))
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(header::UPGRADE);
    }
}

/// Rewrites a request's headers for the upstream: hop-by-hop headers removed, forwarding
/// headers set, `Host` preserved (filled from `:authority` for HTTP/2 clients).
pub fn prepare_request_headers(headers: &mut HeaderMap, client: &ClientSide<'_>, upgrade: bool) {
    remove_hop_by_hop(headers, upgrade);
    if !headers.contains_key(header::HOST)
        && let Some(host) = client.host.and_then(|h| HeaderValue::from_str(h).ok())
    {
        headers.insert(header::HOST, host);
    }

    let proto = if client.tls { "https" } else { "http" };
    let addr = client.addr.to_string();
    if client.trusted {
        let forwarded_for = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
            Some(previous) if !previous.trim().is_empty() => format!("{previous}, {addr}"),
            _ => addr,
        };
        set(headers, X_FORWARDED_FOR, &forwarded_for);
        set_if_absent(headers, X_FORWARDED_PROTO, proto);
        if let Some(host) = client.host {
            set_if_absent(headers, X_FORWARDED_HOST, host);
        }
        let port = port_of(client);
        set_if_absent(headers, X_FORWARDED_PORT, &port);
    } else {
        headers.remove(header::FORWARDED);
        set(headers, X_FORWARDED_FOR, &addr);
        set(headers, X_FORWARDED_PROTO, proto);
        match client.host {
            Some(host) => set(headers, X_FORWARDED_HOST, host),
            None => {
                headers.remove(&X_FORWARDED_HOST);
            }
        }
        set(headers, X_FORWARDED_PORT, &port_of(client));
    }
}

/// The port the client addressed: from `Host` when it names one, else the listener's.
fn port_of(client: &ClientSide<'_>) -> String {
    client
        .host
        .and_then(|host| host.rsplit_once(':'))
        .filter(|(name, _)| !name.ends_with(']') || name.starts_with('['))
        .and_then(|(_, port)| port.parse::<u16>().ok())
        .unwrap_or(client.local_port)
        .to_string()
}

fn set(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    match HeaderValue::from_str(value) {
        Ok(value) => {
            headers.insert(name, value);
        }
        Err(_) => {
            headers.remove(name);
        }
    }
}

fn set_if_absent(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    if !headers.contains_key(&name) {
        set(headers, name, value);
    }
}
