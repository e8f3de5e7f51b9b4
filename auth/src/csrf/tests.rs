use http::HeaderValue;
use proptest::prelude::*;

use super::*;

const SESSION: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn ours() -> PublicOrigin {
    PublicOrigin::parse("https://hub.example.com").unwrap()
}

fn token() -> CsrfToken {
    CsrfToken::for_session(SESSION)
}

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

fn decide(method: &str, pairs: &[(&str, &str)], form: Option<&str>) -> Result<(), CsrfRejection> {
    let method = Method::from_bytes(method.as_bytes()).unwrap();
    check(
        &method,
        &headers(pairs),
        form,
        Credential::Session(&token()),
        &ours(),
    )
}

#[test]
fn token_is_derived_from_the_session() {
    let a = CsrfToken::for_session(SESSION);
    assert_eq!(a, CsrfToken::for_session(SESSION));
    assert_ne!(a, CsrfToken::for_session(&SESSION.replace('0', "1")));
    assert_eq!(a.as_str().len(), 64);
    assert_ne!(
        a.as_str(),
        crate::secret::SecretHash::of(SESSION).as_str(),
        "not the stored session hash"
    );
    assert!(a.matches(a.as_str()));
    assert!(!a.matches(&a.as_str()[1..]));
    assert!(!a.matches(""));
    assert!(!format!("{a:?}").contains(a.as_str()));
}

/// (method, what it tests, headers, form field, expected decision)
type Case<'a> = (
    &'a str,
    &'a str,
    Vec<(&'a str, &'a str)>,
    Option<&'a str>,
    Result<(), CsrfRejection>,
);

#[test]
fn decision_table() {
    let t = token();
    let t = t.as_str();
    let origin = ("origin", "https://hub.example.com");
    let form = ("content-type", "application/x-www-form-urlencoded");
    let json = ("content-type", "application/json");
    let xsrf = ("x-xsrftoken", t);
    let other = CsrfToken::for_session("other");
    use CsrfRejection::*;
    #[rustfmt::skip]
    let cases: &[Case<'_>] = &[
        // Safe methods pass with nothing at all.
        ("GET", "no checks", vec![], None, Ok(())),
        ("HEAD", "no checks", vec![("origin", "https://evil.com")], None, Ok(())),
        ("OPTIONS", "no checks", vec![("content-type", "text/plain")], None, Ok(())),
        // The good cases.
        ("POST", "form field", vec![origin, form], Some(t), Ok(())),
        ("POST", "X-XSRFToken", vec![origin, json, xsrf], None, Ok(())),
        ("DELETE", "X-CSRF-Token", vec![origin, ("x-csrf-token", t)], None, Ok(())),
        ("PUT", "header and form agree", vec![origin, xsrf], Some(t), Ok(())),
        ("POST", "referer instead of origin", vec![("referer", "https://hub.example.com/hub/home?x=1"), form], Some(t), Ok(())),
        ("POST", "referer on default port", vec![("referer", "https://HUB.example.com:443/hub/"), form], Some(t), Ok(())),
        ("POST", "multipart", vec![origin, ("content-type", "multipart/form-data; boundary=x")], Some(t), Ok(())),
        ("POST", "Sec-Fetch-Site same-origin with token", vec![origin, xsrf, ("sec-fetch-site", "same-origin")], None, Ok(())),
        ("PATCH", "no body type", vec![origin, xsrf], None, Ok(())),
        // Missing or wrong tokens; Fetch Metadata never exempts (CVE-2026-40864).
        ("POST", "no token", vec![origin, form], None, Err(MissingToken)),
        ("POST", "Sec-Fetch-Site same-origin without token", vec![origin, form, ("sec-fetch-site", "same-origin")], None, Err(MissingToken)),
        ("POST", "Sec-Fetch-Mode no-cors without token", vec![origin, form, ("sec-fetch-mode", "no-cors")], None, Err(MissingToken)),
        ("POST", "all Fetch Metadata without token", vec![origin, form, ("sec-fetch-site", "same-origin"), ("sec-fetch-mode", "cors"), ("sec-fetch-dest", "empty")], None, Err(MissingToken)),
        ("POST", "wrong token", vec![origin, form], Some("0000"), Err(WrongToken)),
        ("POST", "empty token", vec![origin, form], Some(""), Err(WrongToken)),
        ("POST", "right header, wrong form", vec![origin, xsrf], Some("nope"), Err(WrongToken)),
        ("POST", "two headers, one wrong", vec![origin, xsrf, ("x-csrf-token", "nope")], None, Err(WrongToken)),
        ("POST", "token of another session", vec![origin, form], Some(other.as_str()), Err(WrongToken)),
        ("POST", "session id as token", vec![origin, form], Some(SESSION), Err(WrongToken)),
        // text/plain (test_post_content_type), whatever its spelling.
        ("POST", "text/plain", vec![origin, ("content-type", "text/plain"), xsrf], None, Err(TextPlain)),
        ("POST", "text/plain with charset", vec![origin, ("content-type", "text/plain;charset=UTF-8"), xsrf], None, Err(TextPlain)),
        ("POST", "TEXT/PLAIN padded", vec![origin, ("content-type", " TEXT/Plain ; x=y"), xsrf], None, Err(TextPlain)),
        ("POST", "two content types", vec![origin, json, ("content-type", "text/plain"), xsrf], None, Err(AmbiguousContentType)),
        // Fetch Metadata from elsewhere refuses even with a token.
        ("POST", "Sec-Fetch-Site cross-site", vec![origin, xsrf, ("sec-fetch-site", "cross-site")], None, Err(CrossSiteFetch)),
        ("POST", "Sec-Fetch-Site same-site", vec![origin, xsrf, ("sec-fetch-site", "same-site")], None, Err(CrossSiteFetch)),
        ("POST", "Sec-Fetch-Site none", vec![origin, xsrf, ("sec-fetch-site", "none")], None, Err(CrossSiteFetch)),
        // Origin checks.
        ("POST", "look-alike origin", vec![("origin", "https://hub.example.com.evil.com"), xsrf], None, Err(ForeignOrigin)),
        ("POST", "user-info origin", vec![("origin", "https://hub.example.com@evil.com"), xsrf], None, Err(ForeignOrigin)),
        ("POST", "other scheme", vec![("origin", "http://hub.example.com"), xsrf], None, Err(ForeignOrigin)),
        ("POST", "other port", vec![("origin", "https://hub.example.com:8443"), xsrf], None, Err(ForeignOrigin)),
        ("POST", "sibling subdomain", vec![("origin", "https://user.hub.example.com"), xsrf], None, Err(ForeignOrigin)),
        ("POST", "parent domain", vec![("origin", "https://example.com"), xsrf], None, Err(ForeignOrigin)),
        ("POST", "origin null", vec![("origin", "null"), xsrf], None, Err(ForeignOrigin)),
        ("POST", "empty origin", vec![("origin", ""), xsrf], None, Err(ForeignOrigin)),
        ("POST", "two origins", vec![origin, ("origin", "https://evil.com"), xsrf], None, Err(ForeignOrigin)),
        ("POST", "foreign origin beats good referer", vec![("origin", "https://evil.com"), ("referer", "https://hub.example.com/"), xsrf], None, Err(ForeignOrigin)),
        ("POST", "look-alike referer", vec![("referer", "https://hub.example.com.evil.com/hub/"), xsrf], None, Err(ForeignReferer)),
        ("POST", "user-info referer", vec![("referer", "https://hub.example.com@evil.com/"), xsrf], None, Err(ForeignReferer)),
        ("POST", "referer with our host in path", vec![("referer", "https://evil.com/https://hub.example.com/"), xsrf], None, Err(ForeignReferer)),
        ("POST", "relative referer", vec![("referer", "/hub/home"), xsrf], None, Err(ForeignReferer)),
        ("POST", "no origin, no referer", vec![xsrf], None, Err(NoOrigin)),
    ];
    for (method, what, pairs, form, want) in cases {
        assert_eq!(decide(method, pairs, *form), *want, "{method} {what}");
    }
}

#[test]
fn api_tokens_need_no_csrf_token() {
    let method = Method::POST;
    let hostile = headers(&[
        ("origin", "https://evil.com"),
        ("content-type", "text/plain"),
        ("sec-fetch-site", "cross-site"),
    ]);
    assert_eq!(
        check(&method, &hostile, None, Credential::ApiToken, &ours()),
        Ok(())
    );
}

#[test]
fn rules_apply_to_every_unsafe_method() {
    for method in [
        "POST", "PUT", "PATCH", "DELETE", "TRACE", "CONNECT", "PROPFIND",
    ] {
        assert_eq!(
            decide(method, &[("origin", "https://hub.example.com")], None),
            Err(CsrfRejection::MissingToken),
            "{method}"
        );
    }
}

#[test]
fn non_ascii_header_values_are_refused() {
    let mut map = headers(&[("x-xsrftoken", token().as_str())]);
    map.insert(
        ORIGIN,
        HeaderValue::from_bytes(b"https://hub.example.com\xff").unwrap(),
    );
    assert_eq!(
        check(
            &Method::POST,
            &map,
            None,
            Credential::Session(&token()),
            &ours()
        ),
        Err(CsrfRejection::ForeignOrigin)
    );
}

#[test]
fn public_origins() {
    let accepted = [
        ("https://hub.example.com", "https://hub.example.com"),
        ("https://hub.example.com/", "https://hub.example.com"),
        ("HTTPS://Hub.Example.COM:443", "https://hub.example.com"),
        ("http://hub.example.com:80", "http://hub.example.com"),
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000"),
        ("https://hub.example.com:80", "https://hub.example.com:80"),
        ("http://[::1]:8000", "http://[::1]:8000"),
        ("http://[::1]", "http://[::1]"),
        ("https://xn--ni-wka.example", "https://xn--ni-wka.example"),
    ];
    for (input, want) in accepted {
        assert_eq!(
            PublicOrigin::parse(input).map(|o| o.0),
            Ok(want.to_owned()),
            "{input}"
        );
    }
    let refused = [
        "",
        "null",
        "hub.example.com",
        "//hub.example.com",
        "ftp://hub.example.com",
        "https://",
        "https://:443",
        "https://hub.example.com/hub/",
        "https://hub.example.com?x",
        "https://u@hub.example.com",
        "https://hub.example.com:",
        "https://hub.example.com:0",
        "https://hub.example.com:65536",
        "https://hub.example.com:08000",
        "https://hub.example.com:+80",
        "https://hub example.com",
        "https://hüb.example.com",
        "https://hub.example.com%2F",
        "https://[::1",
        "https://[]",
        "https://[::1]x",
        "https://[::g]",
        "https://a[b]",
    ];
    for input in refused {
        assert_eq!(PublicOrigin::parse(input), Err(OriginError), "{input:?}");
    }
}

proptest! {
    #[test]
    fn only_our_origin_passes(origin in "(https?)://[a-z.]{1,20}(:[0-9]{1,5})?") {
        let result = decide("POST", &[("origin", &origin), ("x-xsrftoken", token().as_str())], None);
        let ours = PublicOrigin::parse(&origin).is_ok_and(|o| o == ours());
        prop_assert_eq!(result.is_ok(), ours);
    }

    #[test]
    fn only_the_session_token_passes(presented in "[0-9a-f]{0,64}") {
        let result = decide("POST", &[("origin", "https://hub.example.com")], Some(&presented));
        prop_assert_eq!(result.is_ok(), presented == token().as_str());
    }
}

fn gate(host_is_ours: bool) -> GateOrigins {
    GateOrigins {
        ours: ours(),
        host_is_ours,
        allowed: vec![PublicOrigin::parse("https://lab.example.com").unwrap()],
    }
}

#[test]
fn the_gate_takes_cookie_requests_only_from_our_pages() {
    let decide = |pairs: &[(&str, &str)]| check_gate_origin(&headers(pairs), &gate(false));
    // Our origin, in any spelling PublicOrigin normalises, and the allowed one.
    for origin in [
        "https://hub.example.com",
        "HTTPS://Hub.Example.com:443",
        "https://lab.example.com",
    ] {
        assert_eq!(decide(&[("origin", origin)]), Ok(()), "{origin}");
    }
    // Other origins: another site, a sibling subdomain, another port or scheme of our host.
    for origin in [
        "http://evil.example",
        "https://notebooks.example.com",
        "https://hub.example.com:8443",
        "http://hub.example.com",
    ] {
        assert!(
            matches!(decide(&[("origin", origin)]), Err(CrossOrigin::Foreign(_))),
            "{origin}"
        );
    }
    assert_eq!(decide(&[("origin", "null")]), Err(CrossOrigin::Opaque));
    for bad in ["hub.example.com", "https://hub.example.com/path", "file://"] {
        assert_eq!(
            decide(&[("origin", bad)]),
            Err(CrossOrigin::Malformed),
            "{bad}"
        );
    }
    assert_eq!(
        decide(&[
            ("origin", "https://hub.example.com"),
            ("origin", "http://evil.example")
        ]),
        Err(CrossOrigin::Malformed)
    );
    // No Origin: not a browser page, unless Fetch Metadata says it is another site's.
    assert_eq!(decide(&[]), Ok(()));
    assert_eq!(decide(&[("sec-fetch-site", "same-site")]), Ok(()));
    assert_eq!(
        decide(&[("sec-fetch-site", "Cross-Site")]),
        Err(CrossOrigin::CrossSite)
    );
    // The Host header counts only when no public URL is configured.
    let from_lan = [
        ("origin", "http://10.1.2.3:8000"),
        ("host", "10.1.2.3:8000"),
    ];
    assert!(decide(&from_lan).is_err());
    assert_eq!(check_gate_origin(&headers(&from_lan), &gate(true)), Ok(()));
    let other_port = [
        ("origin", "http://10.1.2.3:9000"),
        ("host", "10.1.2.3:8000"),
    ];
    assert!(matches!(
        check_gate_origin(&headers(&other_port), &gate(true)),
        Err(CrossOrigin::Foreign(_))
    ));
}
