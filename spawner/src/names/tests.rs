use super::*;
use proptest::prelude::*;

#[test]
fn server_names() {
    for ok in ["", "a", "lab-2", "gpu_big", "v1.2", "x".repeat(63).as_str()] {
        assert!(
            ServerName::new(ok).is_ok(),
            "{ok:?} should be a server name"
        );
    }
    for bad in [
        "-a",
        "_a",
        ".a",
        "A",
        "a b",
        "a/b",
        "ä",
        "x".repeat(64).as_str(),
        "a@b",
    ] {
        assert_eq!(
            ServerName::new(bad),
            Err(NameError::ServerName(bad.to_owned()))
        );
    }
    assert!(ServerName::new("").unwrap().is_default());
    assert_eq!(ServerName::default_server(), ServerName::default());
}

#[test]
fn profile_ids() {
    for ok in ["cpu", "gpu-a100", "spark_small", "2x"] {
        assert_eq!(ProfileId::new(ok).unwrap().as_str(), ok);
    }
    for bad in ["", "Gpu", "a.b", "-a", "a b", "p".repeat(64).as_str()] {
        assert!(ProfileId::new(bad).is_err(), "{bad:?} should be refused");
    }
}

#[test]
fn instances() {
    assert_eq!(Instance::default().as_str(), "gantry");
    assert!(Instance::new("prod-1").is_ok());
    for bad in ["", "a_b", "A", "i".repeat(33).as_str()] {
        assert!(Instance::new(bad).is_err(), "{bad:?} should be refused");
    }
}

#[test]
fn escaping_table() {
    for (raw, escaped) in [
        ("alice", "alice"),
        ("Alice", "_41lice"),
        ("a-b", "a_2db"),
        ("a_b", "a_5fb"),
        ("a.b@x", "a_2eb_40x"),
        ("zoë", "zo_c3_ab"),
        ("", ""),
    ] {
        assert_eq!(escape_component(raw), escaped, "escaping {raw:?}");
    }
}

#[test]
fn container_name_table() {
    let inst = Instance::default();
    let def = ServerName::default_server();
    let lab = ServerName::new("lab").unwrap();
    let name = container_name(&inst, "alice", &def);
    assert!(name.starts_with("gantry-alice-"), "{name}");
    assert_eq!(name.len(), "gantry-alice-".len() + 8);
    let named = container_name(&inst, "alice", &lab);
    assert!(named.starts_with("gantry-alice-lab-"), "{named}");
    // dockerspawner's historical collision: user `user--foo` against user `user`, server `foo`.
    let tricky = container_name(&inst, "user--foo", &def);
    let plain = container_name(&inst, "user", &ServerName::new("foo").unwrap());
    assert_ne!(tricky, plain);
    assert!(tricky.starts_with("gantry-user_2d_2dfoo-"), "{tricky}");
    // The hash is stable across runs and releases: recovery finds containers by it.
    assert_eq!(server_hash("alice", &def), server_hash("alice", &def));
    assert_ne!(server_hash("alice", &def), server_hash("alice", &lab));
}

fn is_docker_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphanumeric())
        && bytes.all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

fn server_name() -> impl Strategy<Value = ServerName> {
    prop_oneof![
        Just(ServerName::default_server()),
        // A tiny alphabet makes near-collisions (`a-b` + default against `a` + `b`) likely.
        "[ab][ab._-]{0,3}".prop_map(|s| ServerName::new(&s).unwrap()),
        "[a-z0-9][a-z0-9._-]{0,12}".prop_map(|s| ServerName::new(&s).unwrap()),
    ]
}

fn user_name() -> impl Strategy<Value = String> {
    prop_oneof!["[abA_@.-]{0,4}", "[a-zA-Z0-9@._+~-]{0,8}", "\\PC{0,6}"]
}

/// Undoes [`escape_component`]; returns `None` for text it could not have produced.
fn unescape(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b == b'_' {
            let hex = [bytes.next()?, bytes.next()?];
            out.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
        } else {
            out.push(b);
        }
    }
    Some(out)
}

/// Reads a container name back into (user, server): a left inverse of [`container_name`],
/// which proves it injective.
fn parse_name(name: &str) -> Option<(Vec<u8>, Vec<u8>)> {
    let rest = name.strip_prefix("gantry-")?;
    let (fields, hash) = rest.rsplit_once('-')?;
    if hash.len() != 8 {
        return None;
    }
    match fields.split('-').collect::<Vec<_>>()[..] {
        [user] => Some((unescape(user)?, Vec::new())),
        [user, server] => Some((unescape(user)?, unescape(server)?)),
        _ => None,
    }
}

proptest! {
    #[test]
    fn names_decode_to_their_server(user in user_name(), server in server_name()) {
        let name = container_name(&Instance::default(), &user, &server);
        let decoded = parse_name(&name);
        prop_assert_eq!(
            decoded,
            Some((user.clone().into_bytes(), server.as_str().as_bytes().to_vec())),
            "{}", name
        );
        prop_assert_eq!(&name[name.len() - 8..], server_hash(&user, &server));
    }

    #[test]
    fn names_are_docker_valid(user in "\\PC{0,24}", server in server_name()) {
        let name = container_name(&Instance::default(), &user, &server);
        prop_assert!(is_docker_name(&name), "{name}");
    }

    #[test]
    fn escaping_round_trips(s in "\\PC{0,24}") {
        let escaped = escape_component(&s);
        prop_assert!(!escaped.contains('-'));
        prop_assert_eq!(unescape(&escaped), Some(s.into_bytes()));
    }

    /// Distinct (user, server) pairs never share a name, and not even the escaped part alone
    /// (the name without its hash): uniqueness does not rest on the hash.
    #[test]
    fn distinct_servers_never_collide(
        u1 in user_name(), s1 in server_name(),
        u2 in user_name(), s2 in server_name(),
    ) {
        prop_assume!((&u1, &s1) != (&u2, &s2));
        let inst = Instance::default();
        let n1 = container_name(&inst, &u1, &s1);
        let n2 = container_name(&inst, &u2, &s2);
        prop_assert_ne!(&n1, &n2);
        let strip = |n: &str| n[..n.len() - 9].to_owned();
        prop_assert_ne!(strip(&n1), strip(&n2));
    }
}
