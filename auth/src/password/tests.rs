use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use proptest::prelude::*;

use super::*;

/// The cheapest parameters argon2 accepts, so tests stay fast.
const CHEAP: PasswordParams = PasswordParams {
    memory_kib: 8,
    iterations: 1,
    parallelism: 1,
};

fn cheap() -> Passwords {
    Passwords::new(CHEAP).unwrap()
}

#[test]
fn hash_then_verify() {
    let passwords = cheap();
    let hash = passwords.hash("correct horse battery staple").unwrap();
    assert!(
        hash.as_str().starts_with("$argon2id$v=19$m=8,t=1,p=1$"),
        "{}",
        hash.as_str()
    );
    assert!(
        passwords
            .verify("correct horse battery staple", &hash)
            .unwrap()
    );
    for wrong in [
        "Correct horse battery staple",
        "correct horse battery staple ",
        "",
        "x",
    ] {
        assert!(!passwords.verify(wrong, &hash).unwrap(), "{wrong:?}");
    }
}

#[test]
fn salts_differ() {
    let passwords = cheap();
    let a = passwords.hash("same").unwrap();
    let b = passwords.hash("same").unwrap();
    assert_ne!(a, b);
    assert!(passwords.verify("same", &a).unwrap() && passwords.verify("same", &b).unwrap());
}

#[test]
fn unicode_passwords_are_bytes_as_typed() {
    let passwords = cheap();
    let hash = passwords.hash("pässwörd🔑").unwrap();
    assert!(passwords.verify("pässwörd🔑", &hash).unwrap());
    // No normalisation: a decomposed ä is a different password.
    assert!(!passwords.verify("pa\u{308}sswörd🔑", &hash).unwrap());
}

#[test]
fn limits() {
    let passwords = cheap();
    assert!(matches!(passwords.hash(""), Err(PasswordError::Empty)));
    let longest = "p".repeat(MAX_PASSWORD_BYTES);
    let hash = passwords.hash(&longest).unwrap();
    assert!(passwords.verify(&longest, &hash).unwrap());
    let too_long = "p".repeat(MAX_PASSWORD_BYTES + 1);
    assert!(matches!(
        passwords.hash(&too_long),
        Err(PasswordError::TooLong)
    ));
    assert!(!passwords.verify(&too_long, &hash).unwrap());
}

#[test]
fn params_are_checked() {
    assert!(matches!(
        Passwords::new(PasswordParams {
            memory_kib: 1,
            ..CHEAP
        }),
        Err(PasswordError::Params(_))
    ));
    assert!(matches!(
        Passwords::new(PasswordParams {
            iterations: 0,
            ..CHEAP
        }),
        Err(PasswordError::Params(_))
    ));
    assert_eq!(
        PasswordParams::default(),
        PasswordParams {
            memory_kib: 19 * 1024,
            iterations: 2,
            parallelism: 1
        }
    );
}

#[test]
fn malformed_hashes() {
    for bad in ["", "plain", "$argon2id$", "$argon2id$v=19$m=8,t=1,p=1$$"] {
        assert!(
            matches!(
                PasswordHash::from_phc(bad),
                Err(PasswordError::Malformed(_))
            ),
            "{bad:?}"
        );
        assert!(
            matches!(
                cheap().verify("x", &PasswordHash(bad.to_owned())),
                Err(PasswordError::Malformed(_))
            ),
            "{bad:?}"
        );
    }
    // Well-formed PHC strings that are not argon2 hashes with an output.
    for other in [
        "$argon2id$v=19$m=8,t=1,p=1$c29tZXNhbHQ",
        "$scrypt$ln=4,r=8,p=1$c29tZXNhbHQ$aGFzaGhhc2hoYXNo",
    ] {
        assert!(
            matches!(
                PasswordHash::from_phc(other),
                Err(PasswordError::Unsupported)
            ),
            "{other:?}"
        );
        assert!(
            matches!(
                cheap().verify("x", &PasswordHash(other.to_owned())),
                Err(PasswordError::Unsupported)
            ),
            "{other:?}"
        );
    }
}

#[test]
fn hashes_from_other_parameters_verify_and_need_rehash() {
    let old = Passwords::new(PasswordParams {
        memory_kib: 16,
        ..CHEAP
    })
    .unwrap();
    let new = cheap();
    let hash = old.hash("pw").unwrap();
    assert!(new.verify("pw", &hash).unwrap());
    assert!(new.needs_rehash(&hash));
    assert!(!old.needs_rehash(&hash));
    assert!(!new.needs_rehash(&new.hash("pw").unwrap()));
    // argon2i hash of "password" (salt "somesalt", m=8,t=1,p=1): another algorithm.
    let argon2i = Argon2::new(
        Algorithm::Argon2i,
        Version::V0x13,
        Params::new(8, 1, 1, None).unwrap(),
    );
    let salt = SaltString::encode_b64(b"somesalt").unwrap();
    let phc = argon2i
        .hash_password(b"password", &salt)
        .unwrap()
        .to_string();
    let hash = PasswordHash::from_phc(&phc).unwrap();
    assert!(new.verify("password", &hash).unwrap());
    assert!(new.needs_rehash(&hash));
}

/// argon2's own `PasswordHasher` and `PasswordVerifier`: what `Passwords` used before hashes
/// ran in reused memory, and what stored hashes were made with.
fn reference(params: PasswordParams) -> Argon2<'static> {
    Argon2::new(
        Algorithm::Argon2id,
        Version::V0x13,
        Params::new(
            params.memory_kib,
            params.iterations,
            params.parallelism,
            None,
        )
        .unwrap(),
    )
}

#[test]
fn hashes_in_reused_memory_are_argon2s_own() {
    for params in [
        CHEAP,
        PasswordParams {
            memory_kib: 64,
            iterations: 3,
            parallelism: 2,
        },
    ] {
        let passwords = Passwords::new(params).unwrap();
        let reference = reference(params);
        let mut memory = passwords.memory();
        assert_eq!(memory.kib(), params.memory_kib as usize);
        // The same memory for several hashes: nothing of one leaks into the next.
        for (password, salt) in [
            ("pw", *b"0123456789abcdef"),
            ("pässwörd🔑", [7_u8; 16]),
            ("pw", [0_u8; 16]),
        ] {
            let ours = passwords
                .hash_with_salt(password.as_bytes(), &salt, &mut memory)
                .unwrap();
            let theirs = reference
                .hash_password(password.as_bytes(), &SaltString::encode_b64(&salt).unwrap())
                .unwrap()
                .to_string();
            assert_eq!(
                ours.as_str(),
                theirs,
                "byte for byte the PHC string argon2 makes"
            );
            // Old code verifies new hashes, and new code old ones.
            let parsed = password_hash::PasswordHash::new(ours.as_str()).unwrap();
            assert!(
                reference
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            );
            assert!(reference.verify_password(b"wrong", &parsed).is_err());
            let old = PasswordHash::from_phc(&theirs).unwrap();
            assert!(passwords.verify_in(password, &old, &mut memory).unwrap());
            assert!(!passwords.verify_in("wrong", &old, &mut memory).unwrap());
        }
        // Random salts too.
        let fresh = passwords.hash_in("secret", &mut memory).unwrap();
        let parsed = password_hash::PasswordHash::new(fresh.as_str()).unwrap();
        assert!(reference.verify_password(b"secret", &parsed).is_ok());
    }
}

/// A hash made as the code before this one made them (argon2's `hash_password`, default
/// parameters: 19 MiB, 2 passes, 1 lane; salt `stored-before-11`) and stored: it still
/// verifies, in a worker's reused memory.
#[test]
fn a_stored_hash_from_before_verifies() {
    const STORED: &str = "$argon2id$v=19$m=19456,t=2,p=1$c3RvcmVkLWJlZm9yZS0xMQ$+bewSYzNY8hBy7YhJBsaCmSYk6GAnPqJJWcZhJWIbo0";
    let passwords = Passwords::new(PasswordParams::default()).unwrap();
    let stored = PasswordHash::from_phc(STORED).unwrap();
    let mut memory = passwords.memory();
    assert!(
        passwords
            .verify_in("correct horse battery", &stored, &mut memory)
            .unwrap()
    );
    assert!(
        !passwords
            .verify_in("correct horse batter", &stored, &mut memory)
            .unwrap()
    );
    assert!(!passwords.needs_rehash(&stored));
}

#[test]
fn a_hash_larger_than_the_memory_verifies_in_an_allocation_of_its_own() {
    let old = Passwords::new(PasswordParams {
        memory_kib: 64,
        ..CHEAP
    })
    .unwrap();
    let new = cheap();
    let hash = old.hash("pw").unwrap();
    let mut memory = new.memory();
    assert_eq!(memory.kib(), 8);
    assert!(new.verify_in("pw", &hash, &mut memory).unwrap());
    assert!(!new.verify_in("pv", &hash, &mut memory).unwrap());
    assert_eq!(memory.kib(), 8, "the reused memory keeps its size");
    assert!(new.needs_rehash(&hash));
}

#[test]
fn verify_absent_is_false() {
    let passwords = cheap();
    assert!(!passwords.verify_absent("anything"));
    assert!(!passwords.verify_absent(""));
}

#[test]
fn debug_output_redacts() {
    let passwords = cheap();
    let hash = passwords.hash("pw").unwrap();
    let shown = format!("{hash:?} {passwords:?}");
    assert!(!shown.contains("argon2id"), "{shown}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    #[test]
    fn round_trip(password in ".{1,40}", other in ".{1,40}") {
        let passwords = cheap();
        let hash = passwords.hash(&password).unwrap();
        prop_assert!(passwords.verify(&password, &hash).unwrap());
        prop_assert_eq!(passwords.verify(&other, &hash).unwrap(), other == password);
    }
}
