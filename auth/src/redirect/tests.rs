use proptest::prelude::*;
use url::Url;

use super::*;

const HUB: &str = "https://hub.example.com/hub/login";

fn default() -> SafeRedirect {
    SafeRedirect::parse("/hub/home").unwrap()
}

#[test]
fn accepted_targets_are_returned_unchanged() {
    let cases = [
        "/",
        "/hub/home",
        "/hub/",
        "/user/alice/lab",
        "/user/alice/lab/tree/notebooks/x.ipynb",
        "/user/秀樹/",
        "/user/%E7%A7%80%E6%A8%B9/",
        "/user/has@/",
        "/user/~TestJH/",
        "/user/a%20b/",
        "/hub/spawn?next=https://example.org/x",
        // `://` and `//` only in the query or fragment are kept (test_login_redirect).
        "/hub/spawn?next=%2Fhub%2F",
        "/hub/home#//frag",
        "/hub/home?a=//b&c=\u{e9}",
        "/...",
        "/.well-known/x",
        "/a.b/c..d/",
        "/javascript:alert(1)",
    ];
    for target in cases {
        assert_eq!(safe_next(target, &default()).as_str(), target, "{target:?}");
    }
}

#[test]
fn attacks_get_the_default() {
    let cases: &[(&str, RedirectError)] = &[
        // Checklist 7: CVE-2019-10255 and test_login_redirect.
        ("//evil", RedirectError::NetworkPath),
        ("//evil.com/", RedirectError::NetworkPath),
        ("///evil/triple", RedirectError::NetworkPath),
        ("////evil", RedirectError::NetworkPath),
        ("\\\\evil", RedirectError::ForbiddenChar { ch: '\\' }),
        ("/\\evil", RedirectError::ForbiddenChar { ch: '\\' }),
        ("\\/evil", RedirectError::ForbiddenChar { ch: '\\' }),
        ("/\\/evil", RedirectError::ForbiddenChar { ch: '\\' }),
        ("https://evil", RedirectError::NotAPath),
        ("https://evil.com/hub/", RedirectError::NotAPath),
        ("ftp://evil", RedirectError::NotAPath),
        ("http:evil", RedirectError::NotAPath),
        ("relative", RedirectError::NotAPath),
        ("relative/path", RedirectError::NotAPath),
        ("evil.com", RedirectError::NotAPath),
        ("?next=/x", RedirectError::NotAPath),
        ("#/x", RedirectError::NotAPath),
        ("javascript:alert(1)", RedirectError::NotAPath),
        ("JaVaScRiPt:alert(1)", RedirectError::NotAPath),
        (
            "data:text/html,<script>",
            RedirectError::ForbiddenChar { ch: '<' },
        ),
        // Checklist 8: CVE-2026-33709, our own host followed by a network path.
        ("https://hub.example.com//evil/", RedirectError::NotAPath),
        ("https://hub.example.com///evil/", RedirectError::NotAPath),
        ("https://hub.example.com////evil/", RedirectError::NotAPath),
        ("https://hub.example.com/hub/home", RedirectError::NotAPath),
        ("/hub//evil/", RedirectError::EmptySegment),
        ("/hub/home//", RedirectError::EmptySegment),
        // Percent-encoded separators and dot segments.
        ("/%2F%2Fevil", RedirectError::EncodedSeparator),
        ("/%2f%2fevil", RedirectError::EncodedSeparator),
        ("/%2Fevil", RedirectError::EncodedSeparator),
        ("/%5Cevil", RedirectError::EncodedSeparator),
        ("/%5cevil", RedirectError::EncodedSeparator),
        ("/%252F%252Fevil", RedirectError::EncodedSeparator),
        ("/%2e%2e/evil", RedirectError::EncodedSeparator),
        ("/user/bob/%2E%2E/alice/", RedirectError::EncodedSeparator),
        ("/%09/evil", RedirectError::EncodedSeparator),
        ("/%0a/evil", RedirectError::EncodedSeparator),
        ("/%00", RedirectError::EncodedSeparator),
        ("/%7f", RedirectError::EncodedSeparator),
        ("/%", RedirectError::BadEscape),
        ("/%2", RedirectError::BadEscape),
        ("/%zz", RedirectError::BadEscape),
        ("/../evil", RedirectError::DotSegment),
        ("/./evil", RedirectError::DotSegment),
        ("/.//evil", RedirectError::DotSegment),
        ("/user/bob/../alice/", RedirectError::DotSegment),
        ("/user/bob/..", RedirectError::DotSegment),
        // Control characters and whitespace, which browsers strip (tabs, newlines) or trim.
        ("/\t/evil", RedirectError::ForbiddenChar { ch: '\t' }),
        ("/\n/evil", RedirectError::ForbiddenChar { ch: '\n' }),
        ("/\r\n/evil", RedirectError::ForbiddenChar { ch: '\r' }),
        ("\t//evil", RedirectError::ForbiddenChar { ch: '\t' }),
        (" //evil", RedirectError::ForbiddenChar { ch: ' ' }),
        (" /hub/home", RedirectError::ForbiddenChar { ch: ' ' }),
        ("/hub/home\0", RedirectError::ForbiddenChar { ch: '\0' }),
        ("/hub/\u{85}", RedirectError::ForbiddenChar { ch: '\u{85}' }),
        (
            "/hub/\u{3000}",
            RedirectError::ForbiddenChar { ch: '\u{3000}' },
        ),
        ("/hub/home?x=\n", RedirectError::ForbiddenChar { ch: '\n' }),
        (
            "/hub/home\r\nSet-Cookie: x=y",
            RedirectError::ForbiddenChar { ch: '\r' },
        ),
        // Checklist 9: markup in next= never comes back.
        (
            "/hub/home\"><img src=x onerror=alert(1)>",
            RedirectError::ForbiddenChar { ch: '"' },
        ),
        ("/hub/home'", RedirectError::ForbiddenChar { ch: '\'' }),
        ("/hub/`x`", RedirectError::ForbiddenChar { ch: '`' }),
        ("", RedirectError::Empty),
    ];
    for (target, want) in cases {
        assert_eq!(SafeRedirect::parse(target), Err(*want), "{target:?}");
        assert_eq!(safe_next(target, &default()), default(), "{target:?}");
    }
}

#[test]
fn long_targets_are_refused() {
    let ok = format!("/{}", "a".repeat(MAX_REDIRECT_BYTES - 1));
    assert!(SafeRedirect::parse(&ok).is_ok());
    let long = format!("/{}", "a".repeat(MAX_REDIRECT_BYTES));
    assert_eq!(SafeRedirect::parse(&long), Err(RedirectError::TooLong));
}

/// Resolves `target` as a browser resolves a `Location` header on a page of ours.
fn resolve(target: &str) -> Url {
    Url::parse(HUB).unwrap().join(target).unwrap()
}

fn assert_same_origin(input: &str) -> Result<(), TestCaseError> {
    let out = safe_next(input, &default());
    let s = out.as_str();
    let mut chars = s.chars();
    prop_assert_eq!(chars.next(), Some('/'));
    if let Some(second) = chars.next() {
        prop_assert!(second != '/' && second != '\\', "{s:?}");
    }
    let url = resolve(s);
    prop_assert_eq!(url.scheme(), "https");
    prop_assert_eq!(url.host_str(), Some("hub.example.com"));
    prop_assert_eq!(url.port(), None);
    prop_assert!(url.username().is_empty() && url.password().is_none());
    // Not even a later path-only redirect can turn it into another host.
    prop_assert!(!url.path().starts_with("//"), "{s:?} -> {url}");
    if s != default().as_str() {
        prop_assert_eq!(s, input);
    }
    Ok(())
}

proptest! {
    #[test]
    fn any_string_stays_on_our_origin(input in any::<String>()) {
        assert_same_origin(&input)?;
    }

    #[test]
    fn attack_shaped_strings_stay_on_our_origin(
        input in "(/|\\\\|%2[fF]|%5[cC]|%2[eE]|%25|\\.|:|https?|javascript|evil|@|\\?|#|\t|\n| |[a-z]){0,12}",
    ) {
        assert_same_origin(&input)?;
    }

    #[test]
    fn prefixed_attacks_stay_on_our_origin(
        prefix in "(/|//|///|/\\\\|\\\\|https://hub.example.com/?|)",
        rest in "[/\\\\%.a-z0-9:@?#\t]{0,12}",
    ) {
        assert_same_origin(&format!("{prefix}{rest}"))?;
    }

    #[test]
    fn plain_paths_are_accepted(
        segments in proptest::collection::vec("[a-zA-Z0-9_~@-]{1,8}", 0..6),
    ) {
        let path = format!("/{}", segments.join("/"));
        let out = safe_next(&path, &default());
        prop_assert_eq!(out.as_str(), path.as_str());
    }
}
