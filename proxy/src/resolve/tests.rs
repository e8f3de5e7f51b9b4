use std::collections::HashMap;
use std::future::{Ready, ready};
use std::io;

use super::*;

/// A resolver that answers from a table, as a DNS server controlled by whoever adds routes
/// could.
#[derive(Clone)]
struct Table(Arc<HashMap<&'static str, Vec<IpAddr>>>);

impl Table {
    fn new(entries: &[(&'static str, &[&str])]) -> Self {
        let map = entries
            .iter()
            .map(|(name, addresses)| {
                (
                    *name,
                    addresses.iter().map(|a| a.parse().unwrap()).collect(),
                )
            })
            .collect();
        Self(Arc::new(map))
    }
}

impl Service<Name> for Table {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = io::Error;
    type Future = Ready<Result<Self::Response, io::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), io::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        ready(match self.0.get(name.as_str()) {
            // Port 0, as getaddrinfo answers without a service: the connector sets the port.
            Some(addresses) => Ok(addresses
                .iter()
                .map(|ip| SocketAddr::new(*ip, 0))
                .collect::<Vec<_>>()
                .into_iter()),
            None => Err(io::Error::new(io::ErrorKind::NotFound, "no such host")),
        })
    }
}

fn resolver() -> GuardedResolver {
    GuardedResolver::new(Table::new(&[
        ("metadata.test", &["169.254.169.254"]),
        ("mapped.test", &["::ffff:169.254.169.254"]),
        ("fe80.test", &["fe80::1"]),
        ("zero.test", &["0.0.0.0", "::"]),
        (
            "all-refused.test",
            &["169.254.169.254", "fe80::1", "::ffff:169.254.169.254"],
        ),
        (
            "mixed.test",
            &["169.254.169.254", "10.0.0.7", "fe80::1", "::1", "127.0.0.1"],
        ),
        ("notebook.test", &["172.17.0.5"]),
    ]))
}

async fn resolve(host: &str) -> Result<Vec<IpAddr>, ResolveError> {
    let addresses = resolver().call(host.parse().unwrap()).await?;
    Ok(addresses.map(|a| a.ip()).collect())
}

fn ips(addresses: &[&str]) -> Vec<IpAddr> {
    addresses.iter().map(|a| a.parse().unwrap()).collect()
}

#[tokio::test]
async fn names_of_refused_addresses_fail_naming_host_and_address() {
    for (host, address) in [
        ("metadata.test", "169.254.169.254"),
        ("mapped.test", "::ffff:169.254.169.254"),
        ("fe80.test", "fe80::1"),
        ("zero.test", "0.0.0.0"),
    ] {
        let error = resolve(host).await.unwrap_err();
        let ResolveError::Refused {
            host: named,
            addresses,
            ..
        } = &error
        else {
            panic!("{host}: not a refusal: {error}");
        };
        assert_eq!(named, host);
        assert_eq!(addresses[0], address.parse::<IpAddr>().unwrap());
        let message = error.to_string();
        assert!(
            message.contains(host) && message.contains(address),
            "{message}"
        );
    }
    let Err(ResolveError::Refused { addresses, .. }) = resolve("all-refused.test").await else {
        panic!("all-refused.test must be refused");
    };
    assert_eq!(
        addresses,
        ips(&["169.254.169.254", "fe80::1", "::ffff:169.254.169.254"])
    );
}

#[tokio::test]
async fn a_mixed_answer_keeps_only_the_allowed_addresses_in_order() {
    assert_eq!(
        resolve("mixed.test").await.unwrap(),
        ips(&["10.0.0.7", "::1", "127.0.0.1"])
    );
    assert_eq!(
        resolve("notebook.test").await.unwrap(),
        ips(&["172.17.0.5"])
    );
}

#[tokio::test]
async fn lookup_failures_name_the_host_and_keep_the_cause() {
    let error = resolve("unknown.test").await.unwrap_err();
    assert!(matches!(&error, ResolveError::Lookup { host, .. } if host == "unknown.test"));
    let cause = std::error::Error::source(&error).expect("the resolver's error is kept");
    assert_eq!(cause.to_string(), "no such host");
}

#[test]
fn sift_splits_by_address_refusal() {
    let resolved = ["127.0.0.1:0", "[fe80::1]:0", "192.168.1.2:0", "0.1.2.3:0"]
        .map(|a| a.parse::<SocketAddr>().unwrap())
        .to_vec();
    assert_eq!(
        sift(resolved),
        Sifted {
            allowed: vec![
                "127.0.0.1:0".parse().unwrap(),
                "192.168.1.2:0".parse().unwrap()
            ],
            refused: ips(&["fe80::1", "0.1.2.3"]),
        }
    );
}
