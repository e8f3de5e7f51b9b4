use proptest::prelude::*;

use super::*;

const POLICY: NamePolicy = NamePolicy { case_fold: true };

fn name(s: &str) -> UserName {
    UserName::parse(s, POLICY).unwrap()
}

#[test]
fn parse_and_format_round_trip() {
    let cases = [
        ("admin", Scope::Admin, "admin"),
        ("self", Scope::SelfUser, "self"),
        ("read:metrics", Scope::ReadMetrics, "read:metrics"),
        (
            "access:servers!user=alice",
            Scope::AccessServers(name("alice")),
            "access:servers!user=alice",
        ),
        (
            "access:servers!user=Alice",
            Scope::AccessServers(name("alice")),
            "access:servers!user=alice",
        ),
        (
            "access:servers!user=秀樹",
            Scope::AccessServers(name("秀樹")),
            "access:servers!user=秀樹",
        ),
        (
            "access:servers!user=has@",
            Scope::AccessServers(name("has@")),
            "access:servers!user=has@",
        ),
    ];
    for (input, want, shown) in cases {
        let scope = Scope::parse(input, POLICY).unwrap();
        assert_eq!(scope, want, "{input}");
        assert_eq!(scope.to_string(), shown, "{input}");
        assert_eq!(Scope::parse(shown, POLICY), Ok(want), "{shown}");
    }
}

#[test]
fn refused_scopes() {
    for input in [
        "",
        "Admin",
        "ADMIN",
        " admin",
        "admin ",
        "users",
        "read:users",
        "access:servers!server=alice/x",
        "access:servers!group=x",
        "self!user=bob",
        "tokens",
    ] {
        assert!(
            matches!(Scope::parse(input, POLICY), Err(ScopeError::Unknown { .. })),
            "{input:?}"
        );
    }
    assert_eq!(
        Scope::parse("access:servers", POLICY),
        Err(ScopeError::MissingUser)
    );
    for bad_user in [
        "access:servers!user=",
        "access:servers!user=a/b",
        "access:servers!user=..",
        "access:servers!user=a b",
    ] {
        assert!(
            matches!(
                Scope::parse(bad_user, POLICY),
                Err(ScopeError::BadUser { .. })
            ),
            "{bad_user:?}"
        );
    }
}

#[test]
fn error_messages_quote_safely() {
    let err = Scope::parse("evil\n\u{1b}[2J", POLICY).unwrap_err();
    let message = err.to_string();
    assert!(
        !message.contains('\n') && !message.contains('\u{1b}'),
        "{message}"
    );
    let long = "x".repeat(10_000);
    let message = Scope::parse(&long, POLICY).unwrap_err().to_string();
    assert!(message.len() < 300, "{}", message.len());
}

#[test]
fn scope_sets_parse_sorted_and_deduplicated() {
    let scopes = Scopes::parse("self  read:metrics\tself access:servers!user=Bob", POLICY).unwrap();
    assert_eq!(
        scopes.to_string(),
        "self access:servers!user=bob read:metrics"
    );
    assert_eq!(Scopes::parse(&scopes.to_string(), POLICY), Ok(scopes));
    assert!(Scopes::parse("", POLICY).unwrap().is_empty());
    assert!(Scopes::parse("self bogus", POLICY).is_err());
}

#[test]
fn permission_table() {
    let alice = name("alice");
    let bob = name("bob");
    let user = Owner {
        name: &alice,
        admin: false,
    };
    let admin = Owner {
        name: &alice,
        admin: true,
    };
    use Action::*;
    let access_bob = Scope::AccessServers(bob.clone());
    let access_alice = Scope::AccessServers(alice.clone());
    // (scope, owner, action, permitted)
    let cases: &[(&Scope, Owner<'_>, Action<'_>, bool)] = &[
        (&Scope::Admin, admin, Admin, true),
        (&Scope::Admin, admin, ActAs(&bob), true),
        (&Scope::Admin, admin, AccessServer(&bob), true),
        (&Scope::Admin, admin, ReadMetrics, true),
        // A demoted admin's admin token is capped by what they may do now.
        (&Scope::Admin, user, Admin, false),
        (&Scope::Admin, user, ActAs(&bob), false),
        (&Scope::Admin, user, AccessServer(&bob), false),
        (&Scope::Admin, user, ReadMetrics, false),
        (&Scope::Admin, user, ActAs(&alice), true),
        (&Scope::Admin, user, AccessServer(&alice), true),
        (&Scope::SelfUser, user, ActAs(&alice), true),
        (&Scope::SelfUser, user, AccessServer(&alice), true),
        (&Scope::SelfUser, user, ActAs(&bob), false),
        (&Scope::SelfUser, user, AccessServer(&bob), false),
        (&Scope::SelfUser, user, Admin, false),
        (&Scope::SelfUser, user, ReadMetrics, false),
        // `self` is the owner's own rights, even for an admin owner.
        (&Scope::SelfUser, admin, ActAs(&bob), false),
        (&Scope::SelfUser, admin, Admin, false),
        (&Scope::SelfUser, admin, ReadMetrics, false),
        (&access_bob, admin, AccessServer(&bob), true),
        (&access_bob, admin, AccessServer(&alice), false),
        (&access_bob, admin, ActAs(&bob), false),
        // A non-admin cannot reach bob's servers, whatever the token says.
        (&access_bob, user, AccessServer(&bob), false),
        (&access_alice, user, AccessServer(&alice), true),
        (&access_alice, user, ActAs(&alice), false),
        (&Scope::ReadMetrics, admin, ReadMetrics, true),
        (&Scope::ReadMetrics, admin, Admin, false),
        (&Scope::ReadMetrics, admin, AccessServer(&alice), false),
        (&Scope::ReadMetrics, user, ReadMetrics, false),
    ];
    for &(scope, owner, action, want) in cases {
        assert_eq!(
            scope.permits(owner, action),
            want,
            "{scope} owner admin={} {action:?}",
            owner.admin
        );
    }
}

#[test]
fn grant_table() {
    let alice = name("alice");
    let bob = name("bob");
    let user = Owner {
        name: &alice,
        admin: false,
    };
    let admin = Owner {
        name: &alice,
        admin: true,
    };
    let cases = [
        (Scope::Admin, user, false),
        (Scope::Admin, admin, true),
        (Scope::ReadMetrics, user, false),
        (Scope::ReadMetrics, admin, true),
        (Scope::SelfUser, user, true),
        (Scope::AccessServers(alice.clone()), user, true),
        (Scope::AccessServers(bob.clone()), user, false),
        (Scope::AccessServers(bob.clone()), admin, true),
    ];
    for (scope, owner, want) in cases {
        assert_eq!(
            scope.grantable_by(owner),
            want,
            "{scope} admin={}",
            owner.admin
        );
    }
    let mixed = Scopes::new([Scope::SelfUser, Scope::ReadMetrics]);
    assert!(!mixed.grantable_by(user));
    assert!(mixed.grantable_by(admin));
    assert!(mixed.permits(user, Action::ActAs(&alice)));
    assert!(!Scopes::default().permits(admin, Action::ActAs(&alice)));
}

fn scope_strategy() -> impl Strategy<Value = Scope> {
    prop_oneof![
        Just(Scope::Admin),
        Just(Scope::SelfUser),
        Just(Scope::ReadMetrics),
        "[a-z0-9._@~+-]{1,12}"
            .prop_filter_map("valid name", |s| UserName::parse(&s, POLICY).ok())
            .prop_map(Scope::AccessServers),
    ]
}

fn action_for<'a>(kind: u8, user: &'a UserName) -> Action<'a> {
    match kind % 4 {
        0 => Action::Admin,
        1 => Action::ActAs(user),
        2 => Action::AccessServer(user),
        _ => Action::ReadMetrics,
    }
}

proptest! {
    #[test]
    fn scope_sets_round_trip(scopes in proptest::collection::vec(scope_strategy(), 0..6)) {
        let set = Scopes::new(scopes);
        prop_assert_eq!(Scopes::parse(&set.to_string(), POLICY), Ok(set));
    }

    #[test]
    fn tokens_never_exceed_their_owner(
        scope in scope_strategy(),
        admin in any::<bool>(),
        owner in "[a-c]",
        target in "[a-c]",
        kind in any::<u8>(),
    ) {
        let owner_name = name(&owner);
        let target_name = name(&target);
        let owner = Owner { name: &owner_name, admin };
        let action = action_for(kind, &target_name);
        // An admin-scoped token is exactly as strong as its owner.
        prop_assert_eq!(Scope::Admin.permits(owner, action), owner_may(owner, action));
        if scope.permits(owner, action) {
            prop_assert!(owner_may(owner, action));
        }
    }
}

#[test]
fn a_credential_mints_only_scopes_it_holds() {
    let root = name("root");
    let alice = name("alice");
    let admin = Owner {
        name: &root,
        admin: true,
    };
    let plain = Owner {
        name: &alice,
        admin: false,
    };
    let set = |s: &str| Scopes::parse(s, POLICY).unwrap();
    for (held, holder, wanted, missing) in [
        // `self` of an admin does not reach another user's servers: the probe of issue 11.
        (
            "self",
            admin,
            "access:servers!user=alice",
            Some("access:servers!user=alice"),
        ),
        ("self", admin, "access:servers!user=root self", None),
        ("self", admin, "admin", Some("admin")),
        (
            "admin",
            admin,
            "access:servers!user=alice read:metrics self",
            None,
        ),
        // `admin` held by someone who is no longer an admin holds nothing beyond itself.
        ("admin", plain, "self", Some("self")),
        ("access:servers!user=alice", plain, "self", Some("self")),
        (
            "access:servers!user=alice",
            plain,
            "access:servers!user=alice",
            None,
        ),
        ("self", plain, "access:servers!user=alice", None),
        ("read:metrics", admin, "read:metrics", None),
    ] {
        let wanted = set(wanted);
        assert_eq!(
            set(held)
                .first_not_held(&wanted, holder)
                .map(ToString::to_string),
            missing.map(str::to_owned),
            "{held} minting {wanted}"
        );
    }
}
