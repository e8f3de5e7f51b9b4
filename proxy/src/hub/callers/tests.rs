//! The callers cache over a real SQLite store: what is served from memory, what a change in
//! this process or another one does, unknown secrets, and tunnels' leases.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use gantry_auth::store::{NewToken, NewUser, TokenBinding, User};
use gantry_auth::{NamePolicy, Scope, Scopes, Store, StoreOptions, UserName};
use jiff::{SignedDuration, Timestamp};
use tempfile::TempDir;

use super::{Callers, Kind, LOOKUP_BURST};

const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

async fn store() -> (Store, TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open_sqlite(&dir.path().join("gantry.sqlite"), &StoreOptions::default())
        .await
        .expect("open");
    store.migrate().await.expect("migrate");
    (store, dir)
}

async fn user(store: &Store, name: &str, admin: bool) -> User {
    let new = NewUser {
        name: UserName::parse(name, NamePolicy::default()).expect("name"),
        password_hash: None,
        admin,
        approved: true,
    };
    store
        .create_user(&new, Timestamp::now())
        .await
        .expect("user")
}

async fn session(store: &Store, user: &User) -> String {
    let now = Timestamp::now();
    let expires = now + SignedDuration::from_hours(1);
    store
        .create_session(user.id, now, expires)
        .await
        .expect("session")
        .expose()
        .to_owned()
}

/// The caller behind `secret`, which must be known.
async fn known_caller(callers: &Callers, kind: Kind, secret: &str) -> super::Known {
    callers
        .resolve(kind, secret, CLIENT)
        .await
        .expect("resolve")
        .expect("known")
        .1
}

async fn resolves(callers: &Callers, kind: Kind, secret: &str) -> bool {
    callers
        .resolve(kind, secret, CLIENT)
        .await
        .expect("resolve")
        .is_some()
}

#[tokio::test]
async fn a_cached_session_is_served_until_the_refresh_sees_it_gone() {
    let (store, _dir) = store().await;
    let alice = user(&store, "alice", false).await;
    let secret = session(&store, &alice).await;
    let callers = Callers::new(store.clone());
    assert!(resolves(&callers, Kind::Session, &secret).await);
    // Another process logs the session out: this process still serves it from memory…
    assert!(store.delete_session(&secret).await.expect("delete"));
    assert!(resolves(&callers, Kind::Session, &secret).await);
    // …until the refresh checks it against the store again.
    callers.refresh().await.expect("refresh");
    assert!(!resolves(&callers, Kind::Session, &secret).await);
}

#[tokio::test]
async fn this_process_changes_take_effect_on_the_next_request() {
    let (store, _dir) = store().await;
    let root = user(&store, "root", true).await;
    let secret = session(&store, &root).await;
    let callers = Callers::new(store.clone());
    let known = known_caller(&callers, Kind::Session, &secret).await;
    assert!(known.may_access("bob"));
    store.set_admin(root.id, false).await.expect("demote");
    callers.forget_user(root.id);
    let known = known_caller(&callers, Kind::Session, &secret).await;
    assert!(!known.may_access("bob"), "the demotion is seen at once");
    assert!(known.may_access("root"));

    callers.forget(Kind::Session, &secret);
    store.delete_session(&secret).await.expect("logout");
    assert!(!resolves(&callers, Kind::Session, &secret).await);
}

#[tokio::test]
async fn tokens_resolve_with_their_scopes_and_never_beyond_them() {
    let (store, _dir) = store().await;
    let alice = user(&store, "alice", false).await;
    let new = NewToken {
        scopes: Scopes::new([Scope::AccessServers(alice.name.clone())]),
        note: "test".into(),
        expires: None,
        binding: TokenBinding::Api,
    };
    let (token, _) = store
        .create_token(alice.id, &new, Timestamp::now())
        .await
        .expect("token");
    let callers = Callers::new(store.clone());
    // A token is not a session, and a session cookie is not a token.
    assert!(!resolves(&callers, Kind::Session, token.expose()).await);
    let known = known_caller(&callers, Kind::Token, token.expose()).await;
    assert!(known.may_access("alice"));
    assert!(!known.may_access("bob"));
}

#[tokio::test]
async fn names_are_compared_as_stored() {
    let (store, _dir) = store().await;
    let alice = user(&store, "alice", false).await;
    let secret = session(&store, &alice).await;
    let callers = Callers::new(store.clone());
    let known = known_caller(&callers, Kind::Session, &secret).await;
    assert!(known.may_access("alice"));
    // The route of an account stored as `Alice` (before case folding) is not alice's.
    assert!(!known.may_access("Alice"));
    assert!(!known.may_access("alice "));
}

#[tokio::test]
async fn unknown_secrets_spend_a_per_address_budget_of_store_lookups() {
    let (store, _dir) = store().await;
    let alice = user(&store, "alice", false).await;
    let secret = session(&store, &alice).await;
    let callers = Callers::new(store.clone());
    assert!(resolves(&callers, Kind::Session, &secret).await);
    let made_up = |i: u32| format!("{i:0>64x}");
    let mut refused = 0;
    for i in 0..LOOKUP_BURST + 50 {
        match callers.resolve(Kind::Session, &made_up(i), CLIENT).await {
            Ok(found) => assert!(found.is_none()),
            Err(super::CallerError::TooManyLookups) => refused += 1,
            Err(other) => panic!("unexpected {other}"),
        }
    }
    assert!(refused > 0, "a flood of unknown secrets is cut off");
    // A remembered unknown secret costs nothing, and a cached caller still passes.
    assert!(resolves(&callers, Kind::Session, &secret).await);
    let other = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    assert!(
        callers
            .resolve(Kind::Session, &made_up(0), other)
            .await
            .expect("remembered as unknown")
            .is_none()
    );
}

#[tokio::test]
async fn a_database_outage_keeps_cached_callers_and_fails_the_refresh() {
    let (store, _dir) = store().await;
    let alice = user(&store, "alice", false).await;
    let secret = session(&store, &alice).await;
    let callers = Callers::new(store.clone());
    assert!(resolves(&callers, Kind::Session, &secret).await);
    store.close().await;
    assert!(resolves(&callers, Kind::Session, &secret).await);
    assert!(callers.refresh().await.is_err());
    // A caller not in memory needs the store, which cannot answer.
    let bob = format!("{:0>64x}", 7);
    assert!(callers.resolve(Kind::Session, &bob, CLIENT).await.is_err());
}

#[tokio::test]
async fn a_tunnel_ends_with_its_credential_or_its_right_to_the_server() {
    let (store, _dir) = store().await;
    let root = user(&store, "root", true).await;
    let first = session(&store, &root).await;
    let second = session(&store, &root).await;
    let callers = Callers::new(store.clone());
    let open = |secret: &str, account: &str| {
        let callers = &callers;
        let secret = secret.to_owned();
        let account: Arc<str> = account.into();
        async move {
            let (key, known) = callers
                .resolve(Kind::Session, &secret, CLIENT)
                .await
                .expect("resolve")
                .expect("known");
            callers.open_tunnel(Kind::Session, key, known.user().id, &account)
        }
    };
    let into_bob = open(&first, "bob").await;
    let into_own = open(&first, "root").await;
    let other_session = open(&second, "bob").await;
    assert_eq!(callers.open_tunnels(), 3);

    // Demoted: the tunnels into another user's server close, the one into its own stays.
    store.set_admin(root.id, false).await.expect("demote");
    callers.recheck_user(root.id).await;
    assert!(into_bob.has_ended());
    assert!(other_session.has_ended());
    assert!(!into_own.has_ended());

    // Logged out in another process: the refresh ends the session's last tunnel.
    store.delete_session(&first).await.expect("logout");
    callers.refresh().await.expect("refresh");
    assert!(into_own.has_ended());
    assert_eq!(callers.open_tunnels(), 0);
}

#[tokio::test]
async fn the_refresh_checks_only_callers_served_since_their_last_check() {
    let (store, _dir) = store().await;
    let alice = user(&store, "alice", false).await;
    let idle = session(&store, &alice).await;
    let active = session(&store, &alice).await;
    let callers = Callers::new(store.clone());
    assert!(resolves(&callers, Kind::Session, &idle).await);
    assert!(resolves(&callers, Kind::Session, &active).await);
    assert!(resolves(&callers, Kind::Session, &active).await);
    // Another process logs the idle session out.
    store.delete_session(&idle).await.expect("delete");
    callers.refresh().await.expect("refresh");
    // The idle entry was not checked, so it is still served (within its staleness bound)…
    assert!(resolves(&callers, Kind::Session, &idle).await);
    // …and now that it was served, the next refresh checks it and drops it.
    callers.refresh().await.expect("refresh");
    assert!(!resolves(&callers, Kind::Session, &idle).await);
    assert!(resolves(&callers, Kind::Session, &active).await);
}
