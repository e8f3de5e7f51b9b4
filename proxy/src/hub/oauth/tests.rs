//! OAuth client ids: unique per server, JupyterHub's where names allow, cookie-safe.

use gantry_auth::{NamePolicy, UserName};
use gantry_spawner::{ServerKey, ServerName};
use proptest::prelude::*;

use super::{OAuthState, client_id};

fn key(user: &str, server: &str) -> ServerKey {
    ServerKey {
        user: user.to_owned(),
        server: ServerName::new(server).unwrap(),
    }
}

#[test]
fn the_probe_of_issue_11_no_longer_collides() {
    // User `alice-x`'s default server and alice's server `x`.
    assert_ne!(
        client_id(&key("alice-x", "")),
        client_id(&key("alice", "x"))
    );
    assert_ne!(client_id(&key("a-b", "c")), client_id(&key("a", "b-c")));
}

#[test]
fn plain_names_keep_jupyterhubs_ids() {
    assert_eq!(client_id(&key("alice", "")), "jupyterhub-user-alice");
    assert_eq!(
        client_id(&key("alice", "gpu-1")),
        "jupyterhub-user-alice-gpu-1"
    );
    assert_eq!(client_id(&key("a.b_c", "")), "jupyterhub-user-a.b_c");
    assert_eq!(client_id(&key("a-b", "")), "jupyterhub-user-a%2Db");
    assert_eq!(client_id(&key("zoë@x", "")), "jupyterhub-user-zo%C3%AB%40x");
}

#[test]
fn an_adopted_servers_old_id_never_displaces_a_current_one() {
    let state = OAuthState::default();
    let named = key("alice", "x");
    let default = key("alice-x", "");
    state.register(&named);
    // The old, unescaped id of alice-x's server is alice's `x`'s current one.
    state.adopt(&default);
    assert_eq!(
        state
            .clients
            .get("jupyterhub-user-alice-x")
            .unwrap()
            .value(),
        &named
    );
    assert_eq!(
        state.clients.get(&client_id(&default)).unwrap().value(),
        &default
    );
    // Forgetting alice-x's server leaves alice's client alone.
    state.unregister(&default);
    assert_eq!(
        state
            .clients
            .get("jupyterhub-user-alice-x")
            .unwrap()
            .value(),
        &named
    );
    assert!(state.clients.get(&client_id(&default)).is_none());
}

/// Cookie names are RFC 6265 tokens: visible ASCII without separators.
fn is_cookie_token(text: &str) -> bool {
    text.bytes()
        .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b))
}

proptest! {
    #[test]
    fn client_ids_are_unique_per_server_and_cookie_safe(
        user_a in "[ax.@-]{1,4}|\\PC{1,4}",
        user_b in "[ax.@-]{1,4}|\\PC{1,4}",
        server_a in "|[ax][ax.-]{0,3}",
        server_b in "|[ax][ax.-]{0,3}",
    ) {
        let parse = |raw: &str| UserName::parse(raw, NamePolicy::default()).ok();
        let (Some(ua), Some(ub)) = (parse(&user_a), parse(&user_b)) else {
            return Ok(());
        };
        let (Ok(sa), Ok(sb)) = (ServerName::new(&server_a), ServerName::new(&server_b)) else {
            return Ok(());
        };
        let a = ServerKey { user: ua.as_str().to_owned(), server: sa };
        let b = ServerKey { user: ub.as_str().to_owned(), server: sb };
        let (id_a, id_b) = (client_id(&a), client_id(&b));
        prop_assert!(is_cookie_token(&id_a), "{id_a}");
        prop_assert_eq!(a == b, id_a == id_b, "{:?} {:?} → {} {}", a, b, id_a, id_b);
    }
}
