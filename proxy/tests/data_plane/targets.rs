//! Route targets never lead to a refused address (link-local, unspecified, cloud metadata
//! services): address literals in any notation are refused by the route API, and host names
//! are checked on every address they resolve to when the proxy connects.

use std::collections::HashMap;
use std::future::{Ready, ready};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::task::{Context, Poll};

use gantry_proxy::metrics::Metrics;
use gantry_proxy::resolve::GuardedResolver;
use gantry_proxy::server::{ServeSettings, serve};
use gantry_proxy::{Proxy, ProxyConfig, Route, RouteChange, RoutePrefix, RouteTable, Target};
use hyper_util::client::legacy::connect::dns::Name;
use serde_json::Value;
use tokio::net::TcpListener;
use tower_service::Service;

use crate::support::*;

/// The probes of issue 11 and the other notations `getaddrinfo` reads as a refused address,
/// with the address each must be reported as.
const REFUSED: [(&str, &str); 10] = [
    ("http://[::ffff:169.254.169.254]/", "::ffff:169.254.169.254"),
    ("http://2852039166/", "169.254.169.254"),
    ("http://0251.0376.0251.0376/", "169.254.169.254"),
    ("http://0xa9fea9fe/", "169.254.169.254"),
    ("http://169.254.43518/", "169.254.169.254"),
    (
        "http://169.254.169.254/latest/meta-data/",
        "169.254.169.254",
    ),
    ("http://[fe80::1]:8888/", "fe80::1"),
    ("http://0.0.0.0:8888/", "0.0.0.0"),
    ("http://0:8888/", "0.0.0.0"),
    ("http://[::]:8888/", "::"),
];

#[tokio::test]
async fn the_route_api_refuses_every_notation_of_a_refused_address() {
    let backend = EchoBackend::start().await;
    let proxy = TestProxy::start(ProxyConfig::default()).await;
    for (target, address) in REFUSED {
        let body = serde_json::json!({ "target": target }).to_string();
        let (status, answer) = api(
            &proxy,
            "POST",
            "/api/routes/user/x",
            Some(TOKEN),
            Some(&body),
        )
        .await;
        assert_eq!(status, 400, "{target}: {answer}");
        let message: Value = serde_json::from_str(&answer).unwrap();
        let message = message["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("the address {address},")),
            "{target}: the message names the address: {message}"
        );
    }
    assert!(proxy.table.is_empty(), "no refused target was added");

    // Loopback stays allowed in every notation, and numeric forms resolve when connecting.
    let port = backend.addr.port();
    for (prefix, target) in [
        ("/user/dotted", format!("http://127.0.0.1:{port}")),
        ("/user/integer", format!("http://2130706433:{port}/")),
        ("/user/hex", format!("http://0x7f000001:{port}/")),
    ] {
        let body = serde_json::json!({ "target": target }).to_string();
        let path = format!("/api/routes{prefix}");
        let (status, answer) = api(&proxy, "POST", &path, Some(TOKEN), Some(&body)).await;
        assert_eq!(status, 201, "{target}: {answer}");
        assert_eq!(
            get(&proxy.url(&format!("{prefix}/x"))).await.0,
            200,
            "{target}"
        );
    }
    assert_eq!(backend.hits(), 3);
}

/// A resolver that answers from a table, as a DNS server controlled by whoever adds routes
/// could.
#[derive(Clone)]
struct FakeDns(Arc<HashMap<&'static str, Vec<IpAddr>>>);

impl FakeDns {
    fn new(entries: &[(&'static str, &[&str])]) -> Self {
        let map = entries
            .iter()
            .map(|(name, addresses)| {
                let addresses = addresses.iter().map(|a| a.parse().unwrap()).collect();
                (*name, addresses)
            })
            .collect();
        Self(Arc::new(map))
    }
}

impl Service<Name> for FakeDns {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = io::Error;
    type Future = Ready<Result<Self::Response, io::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), io::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let found = self.0.get(name.as_str()).map(|addresses| {
            let addresses: Vec<SocketAddr> =
                addresses.iter().map(|ip| SocketAddr::new(*ip, 0)).collect();
            addresses.into_iter()
        });
        ready(found.ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such host")))
    }
}

/// A proxy on loopback port 0 that resolves names with `dns`, and its table.
async fn proxy_with_dns(dns: FakeDns) -> (SocketAddr, Arc<RouteTable>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let table = Arc::new(RouteTable::new(false));
    let config = ProxyConfig::default();
    let settings = ServeSettings {
        max_header_bytes: config.max_header_bytes,
        header_timeout: config.header_timeout,
        shutdown_grace: config.shutdown_grace,
        max_connections: config.max_connections,
        tls: None,
    };
    let proxy = Proxy::new(Arc::clone(&table), config, Metrics::new())
        .with_resolver(GuardedResolver::new(dns));
    tokio::spawn(serve(
        listener,
        Arc::new(proxy),
        settings,
        std::future::pending(),
    ));
    (addr, table)
}

fn route(table: &RouteTable, prefix: &str, target: &str) {
    table.apply(RouteChange::Upsert(Route::new(
        RoutePrefix::parse(prefix, false).unwrap(),
        Target::parse(target).unwrap(),
        None,
    )));
}

#[tokio::test]
async fn names_that_resolve_only_to_refused_addresses_are_503() {
    // Linux connects to 0.0.0.0 as to the local host, so without the check the backend on
    // 127.0.0.1 would answer `zero.test`.
    let backend = EchoBackend::start().await;
    let port = backend.addr.port();
    let dns = FakeDns::new(&[
        ("zero.test", &["0.0.0.0"]),
        (
            "metadata.test",
            &["169.254.169.254", "::ffff:169.254.169.254", "fe80::1"],
        ),
        ("mixed.test", &["0.0.0.0", "169.254.169.254", "127.0.0.1"]),
    ]);
    let (addr, table) = proxy_with_dns(dns).await;
    route(&table, "/user/zero", &format!("http://zero.test:{port}"));
    route(
        &table,
        "/user/metadata",
        &format!("http://metadata.test:{port}"),
    );
    route(&table, "/user/mixed", &format!("http://mixed.test:{port}"));
    route(
        &table,
        "/user/unknown",
        &format!("http://unknown.test:{port}"),
    );

    for prefix in ["/user/zero", "/user/metadata"] {
        let (status, body) = get_with(
            &format!("http://{addr}{prefix}/api"),
            &[("accept", "application/json")],
        )
        .await;
        assert_eq!(status, 503, "{prefix}: {body}");
        for detail in ["test", "0.0.0.0", "169.254", "fe80", &port.to_string()] {
            assert!(!body.contains(detail), "{prefix}: no detail leaks: {body}");
        }
        assert!(body.contains("does not connect to"), "{prefix}: {body}");
    }
    assert_eq!(backend.hits(), 0, "no refused address was connected to");

    // A mixed answer keeps the allowed address, and the request goes there.
    assert_eq!(get(&format!("http://{addr}/user/mixed/x")).await.0, 200);
    assert_eq!(backend.hits(), 1);

    // A name that does not resolve is an ordinary unreachable upstream.
    let (status, body) = get(&format!("http://{addr}/user/unknown/x")).await;
    assert_eq!(status, 503);
    assert!(!body.contains("does not connect to"), "{body}");
}
