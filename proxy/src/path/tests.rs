use super::*;
use proptest::prelude::*;

#[test]
fn plain_paths_are_borrowed_unchanged() {
    for raw in [
        "/",
        "/user/alice",
        "/user/alice/",
        "/user/alice/lab/tree/a.ipynb",
        "/a.b/..c/...",
        "/b@r/%",
    ] {
        if raw.ends_with('%') {
            continue;
        }
        let out = canonical_path(raw).unwrap();
        assert!(matches!(out, Cow::Borrowed(_)), "{raw}");
        assert_eq!(out, raw);
    }
}

#[test]
fn escapes_are_decoded() {
    let cases = [
        ("/user/b%40r/b%20r", "/user/b@r/b r"),
        ("/user/%E7%A7%80%E6%A8%B9/", "/user/秀樹/"),
        ("/user/~TestJH/x", "/user/~TestJH/x"),
        ("/user/100%25.ipynb", "/user/100%.ipynb"),
        ("/user/a%2e%2e.b", "/user/a...b"),
    ];
    for (raw, want) in cases {
        assert_eq!(canonical_path(raw).unwrap(), want, "{raw}");
    }
}

#[test]
fn ambiguous_paths_are_refused() {
    use PathError::*;
    let cases = [
        ("user/alice", NotAbsolute),
        ("", NotAbsolute),
        ("*", NotAbsolute),
        ("/user/bob/../alice/x", DotSegment),
        ("/user/bob/./x", DotSegment),
        ("/user/bob/%2e%2e/alice/x", DotSegment),
        ("/user/bob/%2E%2e/alice/x", DotSegment),
        ("/user/bob/.%2e/alice", DotSegment),
        ("/user/bob/%2e/alice", DotSegment),
        ("/user/bob/..", DotSegment),
        ("/..", DotSegment),
        ("/user/bob/..%2Falice/x", EncodedSlash),
        ("/user/alice%2F..%2Fbob/x", EncodedSlash),
        ("/user/alice%2fbob", EncodedSlash),
        ("/user/bob\\..\\alice", Backslash),
        ("/user/bob%5C..%5Calice", Backslash),
        ("/user/bob%5c", Backslash),
        ("/user//alice/x", EmptySegment),
        ("//evil", EmptySegment),
        ("/user/bob/%252e%252e/alice", DoubleEncoded),
        ("/user/bob%252Falice", DoubleEncoded),
        ("/user/bob%255c", DoubleEncoded),
        ("/user/bob%25252e", DoubleEncoded),
        ("/%", BadEscape),
        ("/a%2", BadEscape),
        ("/a%zz", BadEscape),
        ("/a%00b", ControlCharacter),
        ("/a%0d%0aSet-Cookie:x", ControlCharacter),
        ("/a%7f", ControlCharacter),
        ("/a%ff", NotUtf8),
        ("/a%C0%AF", NotUtf8),
    ];
    for (raw, want) in cases {
        assert_eq!(canonical_path(raw), Err(want), "{raw}");
    }
}

/// Segments as a real client could send them: printable ASCII, escapes and unicode.
fn raw_path() -> impl Strategy<Value = String> {
    let segment = prop::collection::vec(
        prop_oneof![
            "[a-zA-Z0-9._~@!$&'()*+,;=:-]",
            Just("%2e".to_string()),
            Just("%2F".to_string()),
            Just("%5c".to_string()),
            Just("%25".to_string()),
            Just("%".to_string()),
            Just("\\".to_string()),
            Just(".".to_string()),
            Just("%E7%A7%80".to_string()),
            "%[0-9a-fA-F]{2}",
        ],
        0..5,
    )
    .prop_map(|parts| parts.concat());
    prop::collection::vec(segment, 0..6).prop_map(|segments| format!("/{}", segments.join("/")))
}

proptest! {
    #[test]
    fn never_panics(raw in "\\PC{0,40}") {
        let _ = canonical_path(&raw);
    }

    #[test]
    fn accepted_paths_keep_their_segments(raw in raw_path()) {
        if let Ok(decoded) = canonical_path(&raw) {
            // Decoding never adds or removes a segment boundary...
            prop_assert_eq!(decoded.matches('/').count(), raw.matches('/').count());
            // ...never yields a dot segment, an empty inner segment or a backslash...
            let inner: Vec<&str> = decoded[1..].split('/').collect();
            for (i, segment) in inner.iter().enumerate() {
                prop_assert!(*segment != "." && *segment != "..");
                prop_assert!(!segment.is_empty() || i + 1 == inner.len());
            }
            prop_assert!(!decoded.contains('\\'));
            // ...and a second decode changes no boundary either (no double encodings).
            let twice = percent_encoding::percent_decode_str(&decoded).decode_utf8_lossy();
            prop_assert_eq!(twice.matches('/').count(), decoded.matches('/').count());
            prop_assert!(!twice.split('/').any(|s| s == "." || s == ".."));
        }
    }
}
