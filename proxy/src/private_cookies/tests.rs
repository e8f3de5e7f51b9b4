use http::HeaderMap;
use http::header::{COOKIE, SET_COOKIE};

use super::PrivateCookies;

fn ours() -> PrivateCookies {
    PrivateCookies::new("gantry-")
}

fn cookie_after(values: &[&str]) -> Vec<String> {
    let mut headers = HeaderMap::new();
    for value in values {
        headers.append(COOKIE, value.parse().expect("header value"));
    }
    ours().strip_request(&mut headers);
    headers
        .get_all(COOKIE)
        .iter()
        .map(|v| v.to_str().expect("ascii").to_owned())
        .collect()
}

#[test]
fn private_cookies_leave_requests_and_others_stay() {
    assert_eq!(
        cookie_after(&["gantry-session=s; _xsrf=x; __Host-gantry-oidc=o"]),
        ["_xsrf=x"]
    );
    assert_eq!(
        cookie_after(&["a=1", "GANTRY-SESSION=s", "__SECURE-Gantry-x=1; b=2"]),
        ["a=1; b=2"]
    );
    assert!(cookie_after(&["gantry-session=s"]).is_empty());
    // Nothing private: the header is left exactly as sent.
    assert_eq!(cookie_after(&["a=1;b=2"]), ["a=1;b=2"]);
    // A cookie that merely contains the prefix is not ours.
    assert_eq!(cookie_after(&["my-gantry-x=1"]), ["my-gantry-x=1"]);
}

#[test]
fn set_cookies_naming_ours_are_removed_in_every_spelling() {
    let blocked = [
        "gantry-session=evil",
        "gantry-session=evil; Path=/user/alice; Domain=example.org",
        "__Host-gantry-session=evil; Path=/; Secure",
        "__host-gantry-session=evil",
        "__SECURE-gantry-session=evil",
        "__Secure-__Host-gantry-session=evil",
        "Gantry-Session=evil",
        "  gantry-login=x",
        "gantry-session",
    ];
    let allowed = [
        "_xsrf=1; Path=/user/alice",
        "session=2",
        "x-gantry-session=3",
    ];
    let mut headers = HeaderMap::new();
    for value in blocked.iter().chain(&allowed) {
        headers.append(SET_COOKIE, value.parse().expect("header value"));
    }
    assert_eq!(ours().filter_response(&mut headers), blocked.len());
    let left: Vec<&str> = headers
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().expect("ascii"))
        .collect();
    assert_eq!(left, allowed);
}

#[test]
fn a_response_without_private_cookies_is_untouched() {
    let mut headers = HeaderMap::new();
    headers.append(SET_COOKIE, "a=1".parse().expect("header value"));
    assert_eq!(ours().filter_response(&mut headers), 0);
    assert_eq!(headers.get_all(SET_COOKIE).iter().count(), 1);
}
