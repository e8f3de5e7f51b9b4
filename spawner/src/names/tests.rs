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

/// Volume name templates the profile check lets through (placeholders apart by `-` or `.`,
/// `{servername}` only with `{username}`).
const ACCEPTED_TEMPLATES: [&str; 4] = [
    "lab-{username}-{servername}",
    "{username}.{servername}",
    "home-{username}",
    "{servername}-x-{username}_data",
];

fn long_user_name() -> impl Strategy<Value = String> {
    prop_oneof![
        user_name(),
        // Up to the longest user name (255 bytes), mostly escaped characters.
        "[a-z@é秀-]{80,100}",
        "[a-z]{90,110}",
    ]
}

proptest! {
    /// No two (user, server) pairs share a volume name under any accepted template, and every
    /// value stays within its bound; names of any length, case, separator or script.
    #[test]
    fn volume_names_never_collide_and_stay_bounded(
        u1 in long_user_name(), s1 in server_name(),
        u2 in long_user_name(), s2 in server_name(),
    ) {
        prop_assume!((&u1, &s1) != (&u2, &s2));
        for text in ACCEPTED_TEMPLATES {
            let template = crate::profile::Template::parse(text).unwrap();
            prop_assert_eq!(template.sharing_problem(b"-."), None);
            let uses_server = text.contains("{servername}");
            if !uses_server && u1 == u2 {
                continue;
            }
            let n1 = volume_name(&template, &u1, &s1);
            let n2 = volume_name(&template, &u2, &s2);
            prop_assert_ne!(&n1, &n2, "{} for {:?}/{:?} and {:?}/{:?}", text, u1, s1, u2, s2);
        }
        for value in [volume_value(&u1), volume_value(s1.as_str())] {
            prop_assert!(value.len() <= MAX_VALUE_LEN, "{value}");
            prop_assert!(value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'));
        }
    }
}

/// The probe of issue 20: `cva`'s server `2eb_` and `cva.b`'s default server shared
/// `lab-cva_2eb_` under `lab-{username}_{servername}`. That template is refused now, its old
/// name reads two ways (so an upgrade leaves such a volume alone), and the accepted spelling
/// keeps the two apart.
#[test]
fn the_shared_volume_of_the_probe_is_refused_and_read_two_ways() {
    let probe = crate::profile::Template::parse("lab-{username}_{servername}").unwrap();
    let cva = ServerName::new("2eb_").unwrap();
    let default = ServerName::default_server();
    assert_eq!(legacy_volume_name(&probe, "cva", &cva), "lab-cva_2eb_");
    assert_eq!(
        legacy_volume_name(&probe, "cva.b", &default),
        "lab-cva_2eb_"
    );
    assert!(probe.sharing_problem(b"-.").is_some());
    assert_eq!(probe.legacy_readings("lab-cva_2eb_"), 2);

    let fixed = crate::profile::Template::parse("lab-{username}-{servername}").unwrap();
    assert_ne!(
        volume_name(&fixed, "cva", &cva),
        volume_name(&fixed, "cva.b", &default)
    );
    // An old name of that template reads one way, so it is that pair's: kept at upgrade.
    let project = ServerName::new("my-proj").unwrap();
    let old = legacy_volume_name(&fixed, "alice", &project);
    assert_eq!(old, "lab-alice-my-proj");
    assert_eq!(fixed.legacy_readings(&old), 1);
    assert_eq!(
        volume_name(&fixed, "alice", &project),
        "lab-alice-my_2dproj"
    );
    // Names without `-`, `_` or `.` are what they were.
    let plain = ServerName::new("gpu2").unwrap();
    assert_eq!(
        volume_name(&fixed, "alice", &plain),
        legacy_volume_name(&fixed, "alice", &plain)
    );
}

#[test]
fn a_long_value_is_cut_and_hashed() {
    let long = "é".repeat(100);
    let value = volume_value(&long);
    assert_eq!(value.len(), MAX_VALUE_LEN, "{value}");
    let (kept, hash) = value.split_once("__").unwrap();
    assert_eq!(kept.len() % 3, 0, "cut at an escape's boundary: {value}");
    assert_eq!(hash.len(), 16);
    let odd = volume_value(&format!("a{}", "é".repeat(100)));
    assert!(odd.len() <= MAX_VALUE_LEN && odd.split_once("__").unwrap().0.len() % 3 == 1);
    assert_ne!(value, volume_value(&"é".repeat(99)));
    assert_eq!(volume_value("alice"), "alice");
}
