use std::collections::HashSet;

use proptest::prelude::*;

use super::*;

#[test]
fn generated_secrets_are_well_formed_and_distinct() {
    let mut seen = HashSet::new();
    for _ in 0..200 {
        let secret = Secret::generate().unwrap();
        assert!(well_formed(secret.expose()), "{}", secret.expose());
        assert_eq!(secret.expose().len(), SECRET_LEN);
        assert_eq!(prefix_of(secret.expose()), Some(secret.prefix()));
        assert!(seen.insert(secret.expose().to_owned()));
    }
}

#[test]
fn hash_is_sha256_hex_of_the_text() {
    // SHA-256("abc"), FIPS 180-2 appendix B.1.
    assert_eq!(
        SecretHash::of("abc").as_str(),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    let secret = Secret::generate().unwrap();
    assert!(secret.hash().matches(&SecretHash::of(secret.expose())));
    assert!(!secret.hash().matches(&SecretHash::of("abc")));
    assert_eq!(
        SecretHash::from_stored(secret.hash().as_str().to_owned()),
        Some(secret.hash())
    );
}

#[test]
fn malformed_presented_secrets() {
    let good = "0123456789abcdef".repeat(4);
    assert!(well_formed(&good));
    let cases = [
        String::new(),
        good[1..].to_owned(),
        format!("{good}0"),
        good.to_uppercase(),
        format!("{}g", &good[1..]),
        format!(" {}", &good[1..]),
        format!("{}\n", &good[1..]),
        // Right length in bytes, not ASCII.
        format!("é{}", &good[2..]),
    ];
    for case in cases {
        assert!(!well_formed(&case), "{case:?}");
        assert_eq!(prefix_of(&case), None, "{case:?}");
        assert_eq!(SecretHash::from_stored(case.clone()), None, "{case:?}");
    }
}

#[test]
fn debug_output_redacts() {
    let secret = Secret::generate().unwrap();
    let shown = format!("{secret:?} {:?}", secret.hash());
    assert!(!shown.contains(secret.expose()));
    assert!(!shown.contains(secret.hash().as_str()));
    assert!(shown.contains(secret.prefix()));
}

#[test]
fn hex_encoding() {
    assert_eq!(hex(&[]), "");
    assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
}

proptest! {
    #[test]
    fn matches_is_equality(a in "[0-9a-f]{0,70}", b in "[0-9a-f]{0,70}") {
        prop_assert_eq!(SecretHash::of(&a).matches(&SecretHash::of(&b)), a == b);
    }

    #[test]
    fn prefix_is_the_start(s in "[0-9a-f]{64}") {
        prop_assert_eq!(prefix_of(&s), Some(&s[..PREFIX_LEN]));
    }
}
