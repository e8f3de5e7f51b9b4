use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::*;
use proptest::prelude::*;

fn table(prefixes: &[&str]) -> RouteTable {
    let table = RouteTable::new(false);
    for prefix in prefixes {
        add(
            &table,
            prefix,
            &format!("http://127.0.0.1:1/{}", prefix.trim_start_matches('/')),
        );
    }
    table
}

fn add(table: &RouteTable, prefix: &str, target: &str) {
    let route = Route::new(
        RoutePrefix::parse(prefix, table.host_routing()).unwrap(),
        Target::parse(target).unwrap(),
        None,
    );
    table.apply(RouteChange::Upsert(route));
}

fn routed(table: &RouteTable, path: &str) -> Option<String> {
    table.lookup(None, path).map(|r| r.prefix().to_string())
}

#[test]
fn longest_prefix_wins_on_whole_segments() {
    let t = table(&["/", "/user/alice", "/user/alice/lab", "/hub"]);
    let cases = [
        ("/user/alice", "/user/alice"),
        ("/user/alice/", "/user/alice"),
        ("/user/alice/tree/x", "/user/alice"),
        ("/user/alice/lab", "/user/alice/lab"),
        ("/user/alice/lab/", "/user/alice/lab"),
        ("/user/alice/labx", "/user/alice"),
        ("/user/alicex", "/"),
        ("/user/alicex/lab", "/"),
        ("/user", "/"),
        ("/hub/login", "/hub"),
        ("/", "/"),
    ];
    for (path, want) in cases {
        assert_eq!(routed(&t, path).as_deref(), Some(want), "{path}");
    }
}

#[test]
fn no_root_route_means_no_match() {
    let t = table(&["/user/alice"]);
    assert_eq!(routed(&t, "/user/bob"), None);
    assert_eq!(routed(&t, "/"), None);
}

#[test]
fn trailing_slashes_name_the_same_route() {
    let t = table(&["/user/alice/"]);
    assert_eq!(t.len(), 1);
    add(&t, "/user/alice", "http://127.0.0.1:2");
    assert_eq!(t.len(), 1, "the second add replaces the first");
    assert_eq!(
        t.lookup(None, "/user/alice/x").unwrap().target().as_str(),
        "http://127.0.0.1:2"
    );
}

#[test]
fn removal_falls_back_to_shorter_prefix() {
    let t = table(&["/", "/user/alice"]);
    let removed = t.apply(RouteChange::Remove(
        RoutePrefix::parse("/user/alice/", false).unwrap(),
    ));
    assert!(removed.is_some());
    assert_eq!(routed(&t, "/user/alice/x").as_deref(), Some("/"));
    assert!(
        t.apply(RouteChange::Remove(
            RoutePrefix::parse("/user/alice", false).unwrap()
        ))
        .is_none()
    );
}

#[test]
fn host_routing_puts_the_host_first() {
    let t = RouteTable::new(true);
    add(&t, "/", "http://127.0.0.1:1");
    add(&t, "/Alice.Example.com", "http://127.0.0.1:2");
    add(&t, "/alice.example.com/api", "http://127.0.0.1:3");
    let target = |host, path| t.lookup(host, path).unwrap().target().as_str().to_owned();
    assert_eq!(
        target(Some("alice.example.com"), "/x"),
        "http://127.0.0.1:2"
    );
    assert_eq!(
        target(Some("ALICE.example.com"), "/api/x"),
        "http://127.0.0.1:3"
    );
    assert_eq!(target(Some("bob.example.com"), "/x"), "http://127.0.0.1:1");
    assert_eq!(target(None, "/x"), "http://127.0.0.1:1");
}

#[test]
fn route_prefixes_are_canonical() {
    let parse = |p| RoutePrefix::parse(p, false).map(|r| r.to_string());
    assert_eq!(parse("").unwrap(), "/");
    assert_eq!(parse("/").unwrap(), "/");
    assert_eq!(parse("/user/b%40r/").unwrap(), "/user/b@r");
    assert_eq!(parse("/user/秀樹").unwrap(), "/user/秀樹");
    assert!(parse("/user/../hub").is_err());
    assert!(parse("user/alice").is_err());
}

#[test]
fn targets_are_validated() {
    for good in [
        "http://127.0.0.1:8888",
        "https://notebook.internal/",
        "http://[::1]:80/prefix/",
    ] {
        Target::parse(good).unwrap_or_else(|e| panic!("{good}: {e}"));
    }
    for bad in [
        "/missing-host",
        "://missing-scheme",
        "ftp://host/",
        "file:///etc/passwd",
        "http://user:pass@host/",
        "http://a@169.254.169.254/",
        "http://169.254.169.254/latest/meta-data",
        "http://[fe80::1]/",
        "http://host/?q=1",
        "http://host/#f",
        "127.0.0.1:8888",
        "",
    ] {
        assert!(Target::parse(bad).is_err(), "{bad} should be refused");
    }
}

/// The address a refused target was read as.
fn refused_address(target: &str) -> IpAddr {
    match Target::parse(target) {
        Err(RouteError::Address { address, .. }) => address,
        Err(other) => panic!("{target}: refused for another reason: {other}"),
        Ok(_) => panic!("{target}: accepted"),
    }
}

#[test]
fn targets_are_refused_in_every_notation_of_a_refused_address() {
    let metadata: IpAddr = "169.254.169.254".parse().unwrap();
    for target in [
        "http://169.254.169.254/latest/meta-data",
        // Integer, hex, octal, mixed and short forms: getaddrinfo reads each as 169.254.169.254.
        "http://2852039166/",
        "http://0xa9fea9fe/",
        "http://0XA9FEA9FE/",
        "http://0xa9.0xfe.0xa9.0xfe/",
        "http://0251.0376.0251.0376/",
        "http://00000251.0376.0251.0376/",
        "http://169.254.43518/",
        "http://169.16689662/",
        "http://0251.0xfe.43518/",
        "http://169.254.169.254./",
        "https://2852039166:443/x",
    ] {
        assert_eq!(refused_address(target), metadata, "{target}");
    }
    for (target, address) in [
        ("http://[::ffff:169.254.169.254]/", "::ffff:169.254.169.254"),
        ("http://[::ffff:a9fe:a9fe]:80/", "::ffff:169.254.169.254"),
        ("http://[::169.254.169.254]/", "::169.254.169.254"),
        ("http://[64:ff9b::169.254.169.254]/", "64:ff9b::a9fe:a9fe"),
        ("http://[fe80::1]/", "fe80::1"),
        ("http://[FEBF::1]/", "febf::1"),
        ("http://0.0.0.0:8888/", "0.0.0.0"),
        ("http://0/", "0.0.0.0"),
        ("http://0x0:80/", "0.0.0.0"),
        ("http://0.1.2.3/", "0.1.2.3"),
        ("http://[::]:8888/", "::"),
        ("http://[::ffff:0.0.0.0]/", "::ffff:0.0.0.0"),
        ("http://[fd00:ec2::254]/", "fd00:ec2::254"),
        ("http://100.100.100.200/", "100.100.100.200"),
    ] {
        assert_eq!(
            refused_address(target),
            address.parse::<IpAddr>().unwrap(),
            "{target}"
        );
    }
}

#[test]
fn refusals_name_the_address_and_why() {
    let message = Target::parse("http://2852039166/").unwrap_err().to_string();
    assert_eq!(
        message,
        "invalid route target \"http://2852039166/\": its host is the address 169.254.169.254, \
         and link-local addresses (169.254.0.0/16, fe80::/10: cloud metadata services) are refused"
    );
    let message = Target::parse("http://[::]:1/").unwrap_err().to_string();
    assert!(message.contains("unspecified"), "{message}");
}

#[test]
fn loopback_private_and_named_targets_stay_allowed() {
    for good in [
        "http://127.0.0.1:8888",
        "http://2130706433:8888/",
        "http://0x7f000001:8888/",
        "http://127.1:8888/",
        "http://[::1]:8888/",
        "http://[::ffff:127.0.0.1]:8888/",
        "http://10.0.0.5:8888",
        "http://172.17.0.2:8888/user/alice/",
        "http://192.168.1.20/",
        "http://[fd00::5]:8888/",
        "http://[::ffff:172.17.0.2]:8888/",
        "http://169.255.0.1/",
        "http://169.253.255.255/",
        "http://[fec0::1]/",
        "http://1.0.0.0/",
        "http://localhost:8888/",
        "http://jupyter-alice:8888/",
        "http://project_notebook_1:8888/",
        "http://notebook.internal.example:8888/",
        // A name is checked when the proxy connects (crate::resolve), not here.
        "http://metadata.google.internal/",
    ] {
        Target::parse(good).unwrap_or_else(|e| panic!("{good}: {e}"));
    }
}

#[test]
fn hosts_that_are_neither_names_nor_addresses_are_refused() {
    for bad in [
        "http://1.2.3.256/",
        "http://1.2.3.0x100/",
        "http://1.2.3.4.5/",
        "http://[fe80::1%25eth0]/",
        "http://a%2fb/",
        "http://xn--a/",
    ] {
        let Err(error) = Target::parse(bad) else {
            panic!("{bad}: accepted");
        };
        assert!(matches!(error, RouteError::Target { .. }), "{bad}: {error}");
    }
    // getaddrinfo would look this up by DNS; the URL parser says it is a broken address.
    let message = Target::parse("http://1.2.3.256/").unwrap_err().to_string();
    assert!(
        message.ends_with("the host is neither a host name nor an IP address"),
        "{message}"
    );
}

#[test]
fn address_refusal_table() {
    let refused = |a: &str| address_refusal(a.parse().unwrap()).is_some();
    for a in [
        "169.254.0.0",
        "169.254.255.255",
        "169.254.169.254",
        "0.0.0.0",
        "0.255.255.255",
        "::",
        "fe80::",
        "febf:ffff::1",
        "::ffff:169.254.0.1",
        "::169.254.0.1",
        "64:ff9b::169.254.0.1",
        "::ffff:0.0.0.0",
        "fd00:ec2::254",
        "100.100.100.200",
    ] {
        assert!(refused(a), "{a} must be refused");
    }
    for a in [
        "127.0.0.1",
        "127.255.255.254",
        "::1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.0.1",
        "1.1.1.1",
        "169.253.255.255",
        "169.255.0.0",
        "fec0::1",
        "fc00::1",
        "fd00:ec2::253",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "64:ff9b::10.0.0.1",
        "100.100.100.100",
        "2001:db8::1",
    ] {
        assert!(!refused(a), "{a} must stay allowed");
    }
}

#[test]
fn target_path_is_prepended() {
    let t = Target::parse("http://127.0.0.1:8888/base/").unwrap();
    assert_eq!(
        t.upstream_uri("/user/a?x=1").unwrap(),
        "http://127.0.0.1:8888/base/user/a?x=1"
    );
    let t = Target::parse("http://127.0.0.1:8888").unwrap();
    assert_eq!(
        t.upstream_uri("/user/a").unwrap(),
        "http://127.0.0.1:8888/user/a"
    );
}

#[test]
fn lookup_ignores_routes_deeper_than_the_path() {
    let t = table(&["/a/b/c/d/e/f"]);
    assert_eq!(
        routed(&t, "/a/b/c/d/e/f/g/h/i/j"),
        Some("/a/b/c/d/e/f".into())
    );
    assert_eq!(routed(&t, "/a/b/c"), None);
}

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-c]{1,2}",
        Just("user".to_string()),
        Just("秀".to_string())
    ]
}

fn path_of(segments: &[String]) -> String {
    format!("/{}", segments.join("/"))
}

proptest! {
    /// A path only ever routes to a prefix that it starts with segment by segment, and always
    /// to the longest such prefix.
    #[test]
    fn routes_only_to_segment_prefixes(
        routes in prop::collection::vec(prop::collection::vec(segment(), 0..4), 0..12),
        request in prop::collection::vec(segment(), 0..6),
        trailing_slash in any::<bool>(),
    ) {
        let t = RouteTable::new(false);
        for r in &routes {
            add(&t, &path_of(r), "http://127.0.0.1:1");
        }
        let mut path = path_of(&request);
        if trailing_slash && path != "/" {
            path.push('/');
        }
        let want = routes
            .iter()
            .filter(|r| request.starts_with(r))
            .max_by_key(|r| r.len())
            .map(|r| path_of(r));
        prop_assert_eq!(routed(&t, &path), want);
    }

    /// Every link-local IPv4 address is refused in each notation getaddrinfo accepts: one
    /// 32-bit integer, hex, octal, the `a.b.c` and `a.b` short forms, and inside an IPv6
    /// address (mapped, compatible, NAT64).
    #[test]
    fn link_local_ipv4_is_refused_however_written(low in 0u16..=u16::MAX) {
        let n = 0xa9fe_0000_u32 | u32::from(low);
        let v4 = Ipv4Addr::from(n);
        let [a, b, c, d] = v4.octets();
        let v6 = |prefix: [u16; 6]| {
            let [p0, p1, p2, p3, p4, p5] = prefix;
            Ipv6Addr::new(p0, p1, p2, p3, p4, p5, (n >> 16) as u16, low)
        };
        let spellings = [
            format!("http://{n}/"),
            format!("http://{n:#x}/"),
            format!("http://{n:#X}:8888/"),
            format!("http://0{n:o}/"),
            format!("http://{a}.{b}.{c}.{d}/"),
            format!("http://0{a:o}.0x{b:x}.{c}.0{d:o}/"),
            format!("http://{a}.{b}.{}/", u16::from_be_bytes([c, d])),
            format!("http://{a}.{}/", n & 0x00ff_ffff),
            format!("http://[{}]/", v4.to_ipv6_mapped()),
            format!("http://[{}]/", v6([0, 0, 0, 0, 0, 0xffff])),
            format!("http://[{}]/", v6([0, 0, 0, 0, 0, 0])),
            format!("http://[{}]/", v6([0x64, 0xff9b, 0, 0, 0, 0])),
        ];
        for target in spellings {
            let refused = matches!(Target::parse(&target), Err(RouteError::Address { .. }));
            prop_assert!(refused, "{} must be refused", target);
        }
    }

    /// A 32-bit integer host is refused exactly when the address it denotes is, and its
    /// integer and hex spellings agree with its dotted one.
    #[test]
    fn integer_hosts_are_judged_as_their_address(n in any::<u32>()) {
        let address = IpAddr::V4(Ipv4Addr::from(n));
        let want = address_refusal(address).is_some();
        for target in [format!("http://{n}:1/"), format!("http://{n:#x}:1/"), format!("http://{address}:1/")] {
            let refused = matches!(Target::parse(&target), Err(RouteError::Address { .. }));
            prop_assert_eq!(refused, want, "{}", target);
        }
    }

    /// IPv4-mapped IPv6 addresses are judged as the IPv4 address they carry.
    #[test]
    fn mapped_addresses_are_judged_as_ipv4(n in any::<u32>()) {
        let v4 = Ipv4Addr::from(n);
        prop_assert_eq!(
            address_refusal(IpAddr::V6(v4.to_ipv6_mapped())),
            address_refusal(IpAddr::V4(v4))
        );
    }
}
