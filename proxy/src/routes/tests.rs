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
}
