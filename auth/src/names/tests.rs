use proptest::prelude::*;

use super::*;

const FOLD: NamePolicy = NamePolicy { case_fold: true };
const KEEP: NamePolicy = NamePolicy { case_fold: false };

fn parse(raw: &str, policy: NamePolicy) -> Result<String, NameError> {
    UserName::parse(raw, policy).map(|n| n.as_str().to_owned())
}

#[test]
fn valid_names_from_jupyterhub_tests() {
    // (input, with folding, without folding)
    let cases = [
        ("zoe", "zoe", "zoe"),
        ("50fia", "50fia", "50fia"),
        ("秀樹", "秀樹", "秀樹"),
        ("~TestJH", "~testjh", "~TestJH"),
        ("has@", "has@", "has@"),
        ("a+b@example.org", "a+b@example.org", "a+b@example.org"),
        ("first.last", "first.last", "first.last"),
        ("under_score-dash", "under_score-dash", "under_score-dash"),
        ("zoë", "zoë", "zoë"),
        ("Ωmega", "ωmega", "Ωmega"),
        ("हिन्दी", "हिन्दी", "हिन्दी"),
        ("...", "...", "..."),
        ("  padded  ", "padded", "padded"),
        ("\u{3000}ideographic\u{3000}", "ideographic", "ideographic"),
        ("ﬁsh", "fish", "fish"),
        ("Ａｌｉｃｅ", "alice", "Alice"),
        ("ALICE", "alice", "ALICE"),
        ("straße", "straße", "straße"),
        ("Ⅻ", "xii", "XII"),
    ];
    for (raw, folded, kept) in cases {
        assert_eq!(parse(raw, FOLD).as_deref(), Ok(folded), "{raw:?} folded");
        assert_eq!(parse(raw, KEEP).as_deref(), Ok(kept), "{raw:?} kept");
    }
}

#[test]
fn refused_names() {
    let cases: &[(&str, NameError)] = &[
        ("", NameError::Empty),
        ("   ", NameError::Empty),
        ("\u{3000}", NameError::Empty),
        (".", NameError::DotSegment),
        ("..", NameError::DotSegment),
        ("a/b", NameError::ForbiddenChar { ch: '/' }),
        // Fullwidth solidus becomes `/` under NFKC and is refused after it.
        ("a\u{FF0F}b", NameError::ForbiddenChar { ch: '/' }),
        ("a\\b", NameError::ForbiddenChar { ch: '\\' }),
        (
            "company\\user@x,\"q\"",
            NameError::ForbiddenChar { ch: '\\' },
        ),
        ("a%2Fb", NameError::ForbiddenChar { ch: '%' }),
        ("a b", NameError::ForbiddenChar { ch: ' ' }),
        ("a\tb", NameError::ForbiddenChar { ch: '\t' }),
        ("a\nb", NameError::ForbiddenChar { ch: '\n' }),
        ("a\0b", NameError::ForbiddenChar { ch: '\0' }),
        ("a\u{7f}", NameError::ForbiddenChar { ch: '\u{7f}' }),
        ("a\u{85}b", NameError::ForbiddenChar { ch: '\u{85}' }),
        ("a\u{200b}b", NameError::ForbiddenChar { ch: '\u{200b}' }),
        ("a\u{202e}b", NameError::ForbiddenChar { ch: '\u{202e}' }),
        ("a?b", NameError::ForbiddenChar { ch: '?' }),
        ("a#b", NameError::ForbiddenChar { ch: '#' }),
        ("a:b", NameError::ForbiddenChar { ch: ':' }),
        ("a;b", NameError::ForbiddenChar { ch: ';' }),
        ("a=b", NameError::ForbiddenChar { ch: '=' }),
        ("a&b", NameError::ForbiddenChar { ch: '&' }),
        ("<script>", NameError::ForbiddenChar { ch: '<' }),
        ("o'brien", NameError::ForbiddenChar { ch: '\'' }),
        ("a\"b", NameError::ForbiddenChar { ch: '"' }),
        ("a`b", NameError::ForbiddenChar { ch: '`' }),
        ("a!b", NameError::ForbiddenChar { ch: '!' }),
        ("a*b", NameError::ForbiddenChar { ch: '*' }),
    ];
    for (raw, want) in cases {
        assert_eq!(parse(raw, FOLD).as_ref(), Err(want), "{raw:?}");
    }
}

#[test]
fn length_limits_are_bytes_after_normalisation() {
    let max = "a".repeat(MAX_NAME_BYTES);
    assert_eq!(parse(&max, FOLD), Ok(max.clone()));
    assert_eq!(
        parse(&format!("{max}a"), FOLD),
        Err(NameError::TooLong {
            len: MAX_NAME_BYTES + 1
        })
    );
    // 85 three-byte characters fit exactly; one more does not.
    let cjk = "秀".repeat(85);
    assert_eq!(cjk.len(), 255);
    assert!(parse(&cjk, FOLD).is_ok());
    assert!(matches!(
        parse(&format!("{cjk}秀"), FOLD),
        Err(NameError::TooLong { len: 258 })
    ));
    // Whitespace around a maximal name does not count.
    assert!(parse(&format!("  {max}  "), FOLD).is_ok());
    // Huge input is refused before it is normalised.
    let huge = "a".repeat(1 << 20);
    assert_eq!(parse(&huge, FOLD), Err(NameError::TooLong { len: 1 << 20 }));
    // NFKC expansion can push a short input over the limit: U+FDFA is 18 characters.
    let expands = "\u{FDFA}".repeat(20);
    assert!(expands.len() < MAX_NAME_BYTES);
    assert!(matches!(
        parse(&expands, FOLD),
        Err(NameError::TooLong { .. } | NameError::ForbiddenChar { .. })
    ));
}

#[test]
fn alice_is_one_account_with_folding() {
    let forms = [
        "Alice",
        "alice",
        "ALICE",
        "Ａｌｉｃｅ",
        "  alice ",
        "ａｌｉｃｅ",
    ];
    for form in forms {
        assert_eq!(
            UserName::parse(form, FOLD),
            UserName::parse("alice", FOLD),
            "{form:?}"
        );
    }
    // Without folding only case differs.
    assert_ne!(
        UserName::parse("Alice", KEEP),
        UserName::parse("alice", KEEP)
    );
    assert_eq!(
        UserName::parse("Ａｌｉｃｅ", KEEP),
        UserName::parse("Alice", KEEP)
    );
}

#[test]
fn stored_names_must_be_normal() {
    assert!(UserName::from_stored("alice".to_owned()).is_ok());
    // Stored before folding was switched on: still loads, case kept.
    assert_eq!(
        UserName::from_stored("Alice".to_owned()).map(|n| n.0),
        Ok("Alice".to_owned())
    );
    assert_eq!(
        UserName::from_stored(" alice".to_owned()),
        Err(NameError::NotNormalised)
    );
    assert_eq!(
        UserName::from_stored("Ａlice".to_owned()),
        Err(NameError::NotNormalised)
    );
    assert!(UserName::from_stored("a/b".to_owned()).is_err());
}

#[test]
fn errors_escape_the_offending_character() {
    let err = UserName::parse("a\u{1b}[31mred", FOLD).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the user name contains '\\u{1b}', which is not allowed in user names"
    );
}

proptest! {
    #[test]
    fn parsing_is_idempotent(raw in any::<String>(), fold in any::<bool>()) {
        let policy = NamePolicy { case_fold: fold };
        if let Ok(name) = UserName::parse(&raw, policy) {
            prop_assert_eq!(UserName::parse(name.as_str(), policy), Ok(name.clone()));
            prop_assert_eq!(UserName::from_stored(name.as_str().to_owned()), Ok(name));
        }
    }

    #[test]
    fn parsing_is_idempotent_on_interesting_text(
        raw in "[a-zA-ZÀ-ÿΑ-ωА-я\u{FF21}-\u{FF5A}\u{0300}-\u{036F}ﬀ-ﬆİıß ._@~+-]{1,24}",
        fold in any::<bool>(),
    ) {
        let policy = NamePolicy { case_fold: fold };
        if let Ok(name) = UserName::parse(&raw, policy) {
            prop_assert_eq!(UserName::parse(name.as_str(), policy), Ok(name));
        }
    }

    #[test]
    fn accepted_names_are_safe_path_segments(raw in any::<String>(), fold in any::<bool>()) {
        if let Ok(name) = UserName::parse(&raw, NamePolicy { case_fold: fold }) {
            let s = name.as_str();
            prop_assert!(!s.is_empty() && s.len() <= MAX_NAME_BYTES);
            prop_assert!(s != "." && s != "..");
            prop_assert!(!s.chars().any(|c| c.is_control() || c.is_whitespace()));
            prop_assert!(!s.contains(['/', '\\', '%', '?', '#', '"', '\'', '<', '>']));
        }
    }

    #[test]
    fn folding_ignores_ascii_case(raw in "[a-zA-Z0-9._@~+-]{1,40}") {
        prop_assume!(raw != "." && raw != "..");
        let upper = UserName::parse(&raw.to_ascii_uppercase(), FOLD);
        let lower = UserName::parse(&raw.to_ascii_lowercase(), FOLD);
        prop_assert_eq!(upper, lower);
    }
}
