use super::*;

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    map
}

fn client(trusted: bool) -> ClientSide<'static> {
    ClientSide {
        addr: "203.0.113.7".parse().unwrap(),
        trusted,
        tls: false,
        local_port: 8000,
        host: Some("hub.example.org"),
    }
}

fn get<'a>(map: &'a HeaderMap, name: &str) -> Option<&'a str> {
    map.get(name).map(|v| v.to_str().unwrap())
}

#[test]
fn hop_by_hop_headers_are_removed() {
    let mut map = headers(&[
        ("connection", "keep-alive, x-secret"),
        ("keep-alive", "timeout=5"),
        ("x-secret", "1"),
        ("proxy-authorization", "Basic abc"),
        ("te", "trailers"),
        ("transfer-encoding", "chunked"),
        ("upgrade", "websocket"),
        ("cookie", "a=b"),
    ]);
    remove_hop_by_hop(&mut map, false);
    let names: Vec<&str> = map.keys().map(|k| k.as_str()).collect();
    assert_eq!(names, ["cookie"]);
}

#[test]
fn upgrade_handshake_survives() {
    let mut map = headers(&[
        ("connection", "Upgrade, keep-alive"),
        ("upgrade", "websocket"),
        ("sec-websocket-key", "k"),
    ]);
    assert!(is_upgrade(&map));
    remove_hop_by_hop(&mut map, true);
    assert_eq!(get(&map, "connection"), Some("upgrade"));
    assert_eq!(get(&map, "upgrade"), Some("websocket"));
    assert_eq!(get(&map, "sec-websocket-key"), Some("k"));
}

#[test]
fn upgrade_needs_both_headers() {
    assert!(!is_upgrade(&headers(&[("upgrade", "websocket")])));
    assert!(!is_upgrade(&headers(&[("connection", "upgrade")])));
    assert!(is_upgrade(&headers(&[
        ("connection", "keep-alive"),
        ("connection", "UPGRADE"),
        ("upgrade", "h2c")
    ])));
}

#[test]
fn untrusted_client_headers_are_replaced() {
    let mut map = headers(&[
        ("x-forwarded-for", "10.0.0.1"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "evil.example"),
        ("x-forwarded-port", "443"),
        ("forwarded", "for=10.0.0.1;proto=https"),
        ("host", "hub.example.org"),
    ]);
    prepare_request_headers(&mut map, &client(false), false);
    assert_eq!(get(&map, "x-forwarded-for"), Some("203.0.113.7"));
    assert_eq!(get(&map, "x-forwarded-proto"), Some("http"));
    assert_eq!(get(&map, "x-forwarded-host"), Some("hub.example.org"));
    assert_eq!(get(&map, "x-forwarded-port"), Some("8000"));
    assert_eq!(get(&map, "forwarded"), None);
    assert_eq!(get(&map, "host"), Some("hub.example.org"));
    assert_eq!(map.get_all("x-forwarded-for").iter().count(), 1);
}

#[test]
fn trusted_downstream_values_are_kept_and_extended() {
    let mut map = headers(&[
        ("x-forwarded-for", "198.51.100.1"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-port", "443"),
    ]);
    prepare_request_headers(&mut map, &client(true), false);
    assert_eq!(
        get(&map, "x-forwarded-for"),
        Some("198.51.100.1, 203.0.113.7")
    );
    assert_eq!(get(&map, "x-forwarded-proto"), Some("https"));
    assert_eq!(get(&map, "x-forwarded-port"), Some("443"));
    assert_eq!(get(&map, "x-forwarded-host"), Some("hub.example.org"));
}

#[test]
fn host_is_filled_from_authority_and_port_from_host() {
    let mut map = HeaderMap::new();
    let side = ClientSide {
        host: Some("hub.example.org:8443"),
        tls: true,
        ..client(false)
    };
    prepare_request_headers(&mut map, &side, false);
    assert_eq!(get(&map, "host"), Some("hub.example.org:8443"));
    assert_eq!(get(&map, "x-forwarded-port"), Some("8443"));
    assert_eq!(get(&map, "x-forwarded-proto"), Some("https"));
}
