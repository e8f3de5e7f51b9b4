use http::HeaderMap;
use http::header::COOKIE;
use proptest::prelude::*;

use super::*;

fn headers(values: &[&str]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for value in values {
        headers.append(COOKIE, value.parse().unwrap());
    }
    headers
}

const HTTP: CookiePolicy = CookiePolicy { https: false };
const HTTPS: CookiePolicy = CookiePolicy { https: true };

#[test]
fn https_cookies_are_host_prefixed_and_secure() {
    let set = HTTPS.set(SESSION, "abc", Some(60));
    assert!(set.starts_with("__Host-gantry-session=abc"), "{set}");
    for attribute in ["HttpOnly", "SameSite=Lax", "Secure", "Path=/", "Max-Age=60"] {
        assert!(set.contains(attribute), "{attribute} missing from {set}");
    }
    assert!(!set.contains("Domain"), "{set}");
}

#[test]
fn http_cookies_drop_the_prefix_and_secure() {
    let set = HTTP.set(SESSION, "abc", None);
    assert!(set.starts_with("gantry-session=abc"), "{set}");
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Lax"),
        "{set}"
    );
    assert!(!set.contains("Secure") && !set.contains("Max-Age"), "{set}");
}

#[test]
fn clearing_expires_at_once() {
    let set = HTTPS.clear(LOGIN);
    assert!(set.starts_with("__Host-gantry-login=;"), "{set}");
    assert!(set.contains("Max-Age=0"), "{set}");
}

#[test]
fn reading_picks_our_name_only() {
    let h = headers(&["a=1; gantry-session=s3cret; b=2"]);
    assert_eq!(HTTP.get(&h, SESSION).as_deref(), Some("s3cret"));
    // Under https only the prefixed name counts: an unprefixed one may have been tossed in
    // from a sibling domain.
    assert_eq!(HTTPS.get(&h, SESSION), None);
    let h = headers(&["__Host-gantry-session=s3cret"]);
    assert_eq!(HTTPS.get(&h, SESSION).as_deref(), Some("s3cret"));
}

#[test]
fn conflicting_copies_are_refused() {
    let h = headers(&["gantry-session=one; gantry-session=two"]);
    assert_eq!(HTTP.get(&h, SESSION), None);
    let h = headers(&["gantry-session=one", "gantry-session=two"]);
    assert_eq!(HTTP.get(&h, SESSION), None);
    // The same value twice is harmless.
    let h = headers(&["gantry-session=one", "gantry-session=one"]);
    assert_eq!(HTTP.get(&h, SESSION).as_deref(), Some("one"));
}

#[test]
fn empty_and_malformed_headers_find_nothing() {
    assert_eq!(HTTP.get(&headers(&[]), SESSION), None);
    assert_eq!(HTTP.get(&headers(&["gantry-session="]), SESSION), None);
    assert_eq!(HTTP.get(&headers(&[";;;=;"]), SESSION), None);
    assert_eq!(HTTP.get(&headers(&["gantry-session"]), SESSION), None);
}

#[test]
fn percent_encoded_values_round_trip() {
    let set = HTTP.set(OIDC, "a b;c", None);
    let value = set.split(';').next().unwrap();
    let h = headers(&[value]);
    assert_eq!(HTTP.get(&h, OIDC).as_deref(), Some("a b;c"));
}

proptest! {
    /// Whatever else the header holds, reading never panics, and our cookie is found when it
    /// is present exactly once among other cookies.
    #[test]
    fn our_cookie_is_found_among_others(
        others in proptest::collection::vec(("[a-z]{1,8}", "[A-Za-z0-9]{0,12}"), 0..8),
        value in "[a-f0-9]{1,64}",
        position in 0usize..8,
    ) {
        let mut pairs: Vec<String> = others
            .iter()
            .filter(|(name, _)| name != "gantry")
            .map(|(n, v)| format!("{n}={v}"))
            .collect();
        let at = position.min(pairs.len());
        pairs.insert(at, format!("gantry-session={value}"));
        let h = headers(&[&pairs.join("; ")]);
        prop_assert_eq!(HTTP.get(&h, SESSION), Some(value));
    }

    #[test]
    fn arbitrary_headers_never_panic(text in "[ -~]{0,200}") {
        if let Ok(value) = text.parse::<http::HeaderValue>() {
            let mut h = HeaderMap::new();
            h.insert(COOKIE, value);
            let _ = HTTP.get(&h, SESSION);
            let _ = HTTPS.get(&h, SESSION);
        }
    }
}

#[test]
fn every_cookie_of_ours_is_private_to_the_front_tier() {
    let private = crate::private_cookies::PrivateCookies::new(PRIVATE_PREFIX);
    for base in [SESSION, LOGIN, OIDC, IDP] {
        for policy in [HTTP, HTTPS] {
            assert!(private.is_private(policy.name(base).as_bytes()), "{base}");
        }
    }
}
