//! The store suite. Every test body runs on a fresh SQLite file, and also on PostgreSQL (a
//! fresh schema per test) when `GANTRY_TEST_POSTGRES_URL` is set.

use jiff::Timestamp;
use tempfile::TempDir;

use super::*;
use crate::names::NamePolicy;
use crate::password::{PasswordParams, Passwords};
use crate::scope::Scope;
use crate::secret::SECRET_LEN;

const T0: i64 = 1_750_000_000;

fn at(offset: i64) -> Timestamp {
    Timestamp::from_second(T0 + offset).unwrap()
}

fn name(s: &str) -> UserName {
    UserName::parse(s, NamePolicy::default()).unwrap()
}

fn new_user(s: &str) -> NewUser {
    NewUser {
        name: name(s),
        password_hash: None,
        admin: false,
        approved: true,
    }
}

fn scopes(s: &str) -> Scopes {
    Scopes::parse(s, NamePolicy::default()).unwrap()
}

/// Runs `sql` (no parameters) on whichever database `store` holds.
async fn raw(store: &Store, sql: &str) {
    on_db!(store, |pool| sqlx::query(sql)
        .execute(pool)
        .await
        .map(|_| ()))
    .unwrap();
}

/// Counts the rows `sql` returns.
async fn count(store: &Store, sql: &str) -> i64 {
    on_db!(store, |pool| sqlx::query_scalar::<_, i64>(sql)
        .fetch_one(pool)
        .await)
    .unwrap()
}

/// A fresh SQLite store, migrated up to `version`.
async fn sqlite(version: i64) -> (Store, TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_sqlite(&dir.path().join("gantry.sqlite"), &StoreOptions::default())
        .await
        .unwrap();
    store.migrate_to(version).await.unwrap();
    (store, dir)
}

/// A store on a fresh schema of the PostgreSQL database at `GANTRY_TEST_POSTGRES_URL`.
struct Postgres {
    store: Store,
    admin: Store,
    schema: String,
}

impl Postgres {
    /// A fresh schema, migrated up to `version`.
    async fn start(version: i64) -> Option<Self> {
        let Ok(url) = std::env::var("GANTRY_TEST_POSTGRES_URL") else {
            // CI must exercise both databases: a missing server there is a failure, never a
            // silent pass. Locally the SQLite half still runs.
            assert!(
                std::env::var_os("CI").is_none(),
                "GANTRY_TEST_POSTGRES_URL is not set under CI: .ci/test starts PostgreSQL and sets it"
            );
            eprintln!(
                "GANTRY_TEST_POSTGRES_URL is not set: PostgreSQL variant skipped (run .ci/test for both)"
            );
            return None;
        };
        let options = StoreOptions {
            max_connections: 2,
            ..StoreOptions::default()
        };
        let admin = Store::connect(&url, &options).await.unwrap();
        let schema = format!("gantry_test_{}", Secret::generate().unwrap().prefix());
        raw(&admin, &format!("CREATE SCHEMA {schema}")).await;
        let separator = if url.contains('?') { '&' } else { '?' };
        let url = format!("{url}{separator}options[search_path]={schema}");
        let store = Store::connect(&url, &options).await.unwrap();
        assert_eq!(store.backend(), "PostgreSQL");
        store.migrate_to(version).await.unwrap();
        Some(Self {
            store,
            admin,
            schema,
        })
    }

    async fn finish(self) {
        self.store.close().await;
        raw(&self.admin, &format!("DROP SCHEMA {} CASCADE", self.schema)).await;
    }
}

/// Declares each test body once per backend, on a database migrated up to `version` (every
/// migration unless given: `version N;` first tests the upgrade from release state N).
macro_rules! store_tests {
    (version $version:expr; $($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let (store, _dir) = super::super::sqlite($version).await;
                    super::super::$name(store).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    let Some(db) = super::super::Postgres::start($version).await else { return };
                    super::super::$name(db.store.clone()).await;
                    db.finish().await;
                }
            )*
        }
    };
    ($($name:ident),* $(,)?) => {
        store_tests!(version i64::MAX; $($name),*);
    };
}

mod current {
    store_tests!(
        users_round_trip,
        names_are_unique_after_normalisation,
        user_ids_are_never_reused,
        user_updates,
        deleting_a_user_deletes_their_credentials,
        sessions_round_trip,
        sessions_expire,
        session_activity_is_throttled,
        secrets_are_not_stored,
        revoking_a_user_ends_everything_of_theirs_only,
        tokens_round_trip,
        tokens_expire,
        tokens_sharing_a_prefix,
        token_revocation_is_scoped_to_the_owner,
        corrupt_rows_are_errors,
        migrating_twice_is_harmless,
        concurrent_sessions,
        unix_ids_round_trip,
        registered_tokens_work_and_register_once,
        server_tokens_are_bound_by_identity,
        racing_server_tokens_leave_one,
        oauth_tokens_are_revoked_by_holder_and_by_client,
        renaming_a_user_keeps_their_credentials,
        groups_round_trip,
        provider_groups_are_replaced_and_admin_groups_kept,
        identities_round_trip,
        binding_claims_only_unclaimed_accounts,
        parallel_binds_bind_one_identity,
        parallel_first_logins_make_one_account,
        user_activity_only_moves_forward,
        user_activity_comes_with_every_lookup,
        racing_activity_writes_keep_the_latest,
    );
}

/// Databases as release 3 (before token bindings) left them, upgraded by the test.
mod from_version_3 {
    store_tests!(version 3; tokens_noted_before_bindings_keep_working);
}

/// Databases as release 4 (before OpenID identities) left them, upgraded by the test.
mod from_version_4 {
    store_tests!(version 4; migration_to_identities);
}

/// Databases as release 5 (before user activity) left them, upgraded by the test.
mod from_version_5 {
    store_tests!(version 5; migration_to_user_activity);
}

async fn users_round_trip(store: Store) {
    assert!(store.list_users().await.unwrap().is_empty());
    let passwords = Passwords::new(PasswordParams {
        memory_kib: 8,
        iterations: 1,
        parallelism: 1,
    })
    .unwrap();
    let hash = passwords.hash("secret").unwrap();
    let new = NewUser {
        name: name("Zoe"),
        password_hash: Some(hash.clone()),
        admin: true,
        approved: true,
    };
    let zoe = store.create_user(&new, at(0)).await.unwrap();
    assert_eq!(zoe.name.as_str(), "zoe");
    assert_eq!(zoe.created, at(0));
    assert!(zoe.admin && zoe.approved);
    let alice = store.create_user(&new_user("alice"), at(1)).await.unwrap();
    let hideki = store.create_user(&new_user("秀樹"), at(2)).await.unwrap();

    assert_eq!(store.user(zoe.id).await.unwrap(), Some(zoe.clone()));
    assert_eq!(
        store.user_by_name(&name("ZOE")).await.unwrap(),
        Some(zoe.clone())
    );
    assert_eq!(store.user_by_name(&name("nobody")).await.unwrap(), None);
    assert_eq!(store.user(UserId::new(i64::MAX)).await.unwrap(), None);
    let stored = store
        .user(zoe.id)
        .await
        .unwrap()
        .unwrap()
        .password_hash
        .unwrap();
    assert!(passwords.verify("secret", &stored).unwrap());

    let names: Vec<String> = store
        .list_users()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.name.to_string())
        .collect();
    assert_eq!(names, ["alice", "zoe", "秀樹"]);
    assert_eq!(store.user(alice.id).await.unwrap(), Some(alice));
    assert_eq!(store.user(hideki.id).await.unwrap(), Some(hideki));
}

async fn names_are_unique_after_normalisation(store: Store) {
    store.create_user(&new_user("alice"), at(0)).await.unwrap();
    for taken in ["alice", "Alice", "ALICE", "Ａｌｉｃｅ", " alice "] {
        let err = store
            .create_user(&new_user(taken), at(1))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, StoreError::UserExists { name } if name.as_str() == "alice"),
            "{taken}: {err:?}"
        );
    }
    assert_eq!(store.list_users().await.unwrap().len(), 1);
}

async fn user_ids_are_never_reused(store: Store) {
    let a = store.create_user(&new_user("a"), at(0)).await.unwrap();
    let b = store.create_user(&new_user("b"), at(0)).await.unwrap();
    assert!(b.id > a.id);
    assert!(store.delete_user(b.id).await.unwrap());
    // The same name again is a new account with a new id (GHSA-mj6q).
    let b2 = store.create_user(&new_user("b"), at(1)).await.unwrap();
    assert!(b2.id > b.id, "{b2:?} reused {b:?}");
}

async fn user_updates(store: Store) {
    let alice = store.create_user(&new_user("alice"), at(0)).await.unwrap();
    assert!(!alice.admin);
    assert!(store.set_admin(alice.id, true).await.unwrap());
    assert!(store.user(alice.id).await.unwrap().unwrap().admin);
    assert!(store.set_admin(alice.id, false).await.unwrap());
    assert!(!store.user(alice.id).await.unwrap().unwrap().admin);
    assert!(store.set_approved(alice.id, false).await.unwrap());
    assert!(!store.user(alice.id).await.unwrap().unwrap().approved);
    let passwords = Passwords::new(PasswordParams {
        memory_kib: 8,
        iterations: 1,
        parallelism: 1,
    })
    .unwrap();
    let hash = passwords.hash("pw").unwrap();
    assert!(
        store
            .set_password_hash(alice.id, Some(&hash))
            .await
            .unwrap()
    );
    assert_eq!(
        store.user(alice.id).await.unwrap().unwrap().password_hash,
        Some(hash)
    );
    assert!(store.set_password_hash(alice.id, None).await.unwrap());
    assert_eq!(
        store.user(alice.id).await.unwrap().unwrap().password_hash,
        None
    );

    let missing = UserId::new(alice.id.get() + 1000);
    assert!(!store.set_admin(missing, true).await.unwrap());
    assert!(!store.set_approved(missing, true).await.unwrap());
    assert!(!store.set_password_hash(missing, None).await.unwrap());
    assert!(!store.delete_user(missing).await.unwrap());
}

async fn deleting_a_user_deletes_their_credentials(store: Store) {
    let alice = store.create_user(&new_user("alice"), at(0)).await.unwrap();
    let session = store
        .create_session(alice.id, at(0), at(3600))
        .await
        .unwrap();
    let new = NewToken {
        scopes: scopes("self"),
        note: String::new(),
        expires: None,
        binding: TokenBinding::Api,
    };
    let (token, _) = store.create_token(alice.id, &new, at(0)).await.unwrap();
    assert!(store.delete_user(alice.id).await.unwrap());
    assert_eq!(store.session(session.expose(), at(1)).await.unwrap(), None);
    assert_eq!(store.token(token.expose(), at(1)).await.unwrap(), None);
    assert_eq!(count(&store, "SELECT COUNT(*) FROM sessions").await, 0);
    assert_eq!(count(&store, "SELECT COUNT(*) FROM api_tokens").await, 0);
}

async fn sessions_round_trip(store: Store) {
    let alice = store.create_user(&new_user("alice"), at(0)).await.unwrap();
    let secret = store
        .create_session(alice.id, at(0), at(3600))
        .await
        .unwrap();
    assert_eq!(secret.expose().len(), SECRET_LEN);
    let session = store
        .session(secret.expose(), at(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(session.user, alice);
    assert_eq!(
        (session.created, session.expires, session.last_seen),
        (at(0), at(3600), at(0))
    );

    // A login makes a new id every time (fixation).
    let again = store
        .create_session(alice.id, at(2), at(3600))
        .await
        .unwrap();
    assert_ne!(again.expose(), secret.expose());

    // Wrong, malformed and near-miss ids find nothing.
    let mut near = secret.expose().to_owned();
    near.replace_range(63.., if near.ends_with('0') { "1" } else { "0" });
    let upper = secret.expose().to_uppercase();
    for wrong in [
        near.as_str(),
        "",
        "x",
        upper.as_str(),
        secret.hash().as_str(),
    ] {
        assert_eq!(
            store.session(wrong, at(1)).await.unwrap(),
            None,
            "{wrong:?}"
        );
    }

    // Logout ends that session only.
    assert!(store.delete_session(secret.expose()).await.unwrap());
    assert!(!store.delete_session(secret.expose()).await.unwrap());
    assert_eq!(store.session(secret.expose(), at(3)).await.unwrap(), None);
    assert!(
        store
            .session(again.expose(), at(3))
            .await
            .unwrap()
            .is_some()
    );

    let err = store
        .create_session(UserId::new(alice.id.get() + 1000), at(0), at(1))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NoSuchUser { .. }), "{err:?}");
}

async fn sessions_expire(store: Store) {
    let alice = store.create_user(&new_user("alice"), at(0)).await.unwrap();
    let secret = store
        .create_session(alice.id, at(0), at(100))
        .await
        .unwrap();
    assert!(
        store
            .session(secret.expose(), at(99))
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(store.session(secret.expose(), at(100)).await.unwrap(), None);
    assert_eq!(
        store.session(secret.expose(), at(10_000)).await.unwrap(),
        None
    );
    let live = store
        .create_session(alice.id, at(0), at(1000))
        .await
        .unwrap();
    assert_eq!(
        store.delete_expired(at(100)).await.unwrap(),
        Revoked {
            sessions: 1,
            tokens: 0
        }
    );
    assert_eq!(count(&store, "SELECT COUNT(*) FROM sessions").await, 1);
    assert!(
        store
            .session(live.expose(), at(101))
            .await
            .unwrap()
            .is_some()
    );
}

async fn session_activity_is_throttled(store: Store) {
    let alice = store.create_user(&new_user("alice"), at(0)).await.unwrap();
    let secret = store
        .create_session(alice.id, at(0), at(10_000))
        .await
        .unwrap();
    let seen = |s: Option<Session>| s.unwrap().last_seen;
    assert_eq!(
        seen(store.session(secret.expose(), at(30)).await.unwrap()),
        at(0)
    );
    assert_eq!(
        seen(store.session(secret.expose(), at(120)).await.unwrap()),
        at(120)
    );
    assert_eq!(
        seen(store.session(secret.expose(), at(150)).await.unwrap()),
        at(120)
    );
    assert_eq!(
        seen(store.session(secret.expose(), at(180)).await.unwrap()),
        at(180)
    );
    let sql = format!(
        "SELECT COUNT(*) FROM sessions WHERE last_seen = {}",
        T0 + 180
    );
    assert_eq!(count(&store, &sql).await, 1);
}

async fn secrets_are_not_stored(store: Store) {
    let alice = store.create_user(&new_user("alice"), at(0)).await.unwrap();
    let session = store
        .create_session(alice.id, at(0), at(100))
        .await
        .unwrap();
    let new = NewToken {
        scopes: scopes("self"),
        note: "laptop".to_owned(),
        expires: None,
        binding: TokenBinding::Api,
    };
    let (token, _) = store.create_token(alice.id, &new, at(0)).await.unwrap();
    for secret in [&session, &token] {
        let sql = format!(
            "SELECT (SELECT COUNT(*) FROM sessions WHERE id_hash = '{0}') \
             + (SELECT COUNT(*) FROM api_tokens WHERE hash = '{0}' OR prefix = '{0}' OR note = '{0}')",
            secret.expose()
        );
        assert_eq!(count(&store, &sql).await, 0);
    }
    let sql = format!(
        "SELECT COUNT(*) FROM sessions WHERE id_hash = '{}'",
        session.hash().as_str()
    );
    assert_eq!(count(&store, &sql).await, 1);
}

async fn revoking_a_user_ends_everything_of_theirs_only(store: Store) {
    let alice = store.create_user(&new_user("alice"), at(0)).await.unwrap();
    let bob = store.create_user(&new_user("bob"), at(0)).await.unwrap();
    let new = NewToken {
        scopes: scopes("self"),
        note: String::new(),
        expires: None,
        binding: TokenBinding::Api,
    };
    let alice_sessions = [
        store
            .create_session(alice.id, at(0), at(100))
            .await
            .unwrap(),
        store
            .create_session(alice.id, at(0), at(100))
            .await
            .unwrap(),
    ];
    let alice_tokens = [
        store.create_token(alice.id, &new, at(0)).await.unwrap().0,
        store.create_token(alice.id, &new, at(0)).await.unwrap().0,
    ];
    let bob_session = store.create_session(bob.id, at(0), at(100)).await.unwrap();
    let (bob_token, _) = store.create_token(bob.id, &new, at(0)).await.unwrap();

    assert_eq!(
        store.revoke_user_credentials(alice.id).await.unwrap(),
        Revoked {
            sessions: 2,
            tokens: 2
        }
    );
    for secret in &alice_sessions {
        assert_eq!(store.session(secret.expose(), at(1)).await.unwrap(), None);
    }
    for secret in &alice_tokens {
        assert_eq!(store.token(secret.expose(), at(1)).await.unwrap(), None);
    }
    assert!(store.tokens_of(alice.id, at(1)).await.unwrap().is_empty());
    assert_eq!(
        store
            .session(bob_session.expose(), at(1))
            .await
            .unwrap()
            .unwrap()
            .user,
        bob
    );
    assert_eq!(
        store
            .token(bob_token.expose(), at(1))
            .await
            .unwrap()
            .unwrap()
            .user,
        bob
    );
    assert_eq!(
        store.revoke_user_credentials(alice.id).await.unwrap(),
        Revoked::default()
    );
    // The account itself stays.
    assert!(store.user(alice.id).await.unwrap().is_some());
}

async fn tokens_round_trip(store: Store) {
    let alice = store.create_user(&new_user("alice"), at(0)).await.unwrap();
    let new = NewToken {
        scopes: scopes("self access:servers!user=alice read:metrics"),
        note: "CI runner ✓".to_owned(),
        expires: None,
        binding: TokenBinding::Api,
    };
    let (secret, created) = store.create_token(alice.id, &new, at(0)).await.unwrap();
    assert_eq!(created.prefix, secret.prefix());
    assert_eq!(created.scopes, new.scopes);
    assert_eq!(
        (created.created, created.expires, created.last_used),
        (at(0), None, None)
    );

    let auth = store.token(secret.expose(), at(5)).await.unwrap().unwrap();
    assert_eq!(auth.user, alice);
    assert_eq!(
        auth.token,
        ApiToken {
            last_used: Some(at(5)),
            ..created.clone()
        }
    );
    assert!(
        auth.token
            .scopes
            .iter()
            .any(|s| *s == Scope::AccessServers(name("alice")))
    );

    let listed = store.tokens_of(alice.id, at(6)).await.unwrap();
    assert_eq!(
        listed,
        [ApiToken {
            last_used: Some(at(5)),
            ..created.clone()
        }]
    );

    let (second, _) = store
        .create_token(
            alice.id,
            &NewToken {
                scopes: Scopes::default(),
                ..new.clone()
            },
            at(7),
        )
        .await
        .unwrap();
    assert_ne!(second.expose(), secret.expose());
    let listed = store.tokens_of(alice.id, at(8)).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed[0].id < listed[1].id);
    assert!(listed[1].scopes.is_empty());

    let upper = secret.expose().to_uppercase();
    for wrong in ["", "token", &secret.expose()[1..], upper.as_str()] {
        assert_eq!(store.token(wrong, at(9)).await.unwrap(), None, "{wrong:?}");
    }
    let err = store
        .create_token(UserId::new(alice.id.get() + 1000), &new, at(0))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NoSuchUser { .. }), "{err:?}");
}

async fn tokens_expire(store: Store) {
    let alice = store.create_user(&new_user("alice"), at(0)).await.unwrap();
    let short = NewToken {
        scopes: scopes("self"),
        note: String::new(),
        expires: Some(at(100)),
        binding: TokenBinding::Api,
    };
    let forever = NewToken {
        expires: None,
        ..short.clone()
    };
    let (secret, _) = store.create_token(alice.id, &short, at(0)).await.unwrap();
    let (kept, _) = store.create_token(alice.id, &forever, at(0)).await.unwrap();
    assert!(
        store
            .token(secret.expose(), at(99))
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(store.token(secret.expose(), at(100)).await.unwrap(), None);
    assert_eq!(store.tokens_of(alice.id, at(99)).await.unwrap().len(), 2);
    assert_eq!(store.tokens_of(alice.id, at(100)).await.unwrap().len(), 1);
    assert_eq!(
        store.delete_expired(at(100)).await.unwrap(),
        Revoked {
            sessions: 0,
            tokens: 1
        }
    );
    assert!(
        store
            .token(kept.expose(), at(10_000))
            .await
            .unwrap()
            .is_some()
    );
}

async fn tokens_sharing_a_prefix(store: Store) {
    let alice = store.create_user(&new_user("alice"), at(0)).await.unwrap();
    let bob = store.create_user(&new_user("bob"), at(0)).await.unwrap();
    let new = NewToken {
        scopes: scopes("self"),
        note: String::new(),
        expires: None,
        binding: TokenBinding::Api,
    };
    let (alice_token, _) = store.create_token(alice.id, &new, at(0)).await.unwrap();
    // Plant a token of bob's with the same prefix and a different secret.
    let twin = format!(
        "{}{}",
        alice_token.prefix(),
        "f".repeat(SECRET_LEN - alice_token.prefix().len())
    );
    assert_ne!(twin, alice_token.expose());
    let sql = format!(
        "INSERT INTO api_tokens (prefix, hash, user_id, scopes, note, created) \
         VALUES ('{}', '{}', {}, 'self', 'twin', {T0})",
        alice_token.prefix(),
        SecretHash::of(&twin).as_str(),
        bob.id.get(),
    );
    raw(&store, &sql).await;
    assert_eq!(
        store
            .token(alice_token.expose(), at(1))
            .await
            .unwrap()
            .unwrap()
            .user,
        alice
    );
    assert_eq!(store.token(&twin, at(1)).await.unwrap().unwrap().user, bob);
    let stranger = format!(
        "{}{}",
        alice_token.prefix(),
        "e".repeat(SECRET_LEN - alice_token.prefix().len())
    );
    assert_eq!(store.token(&stranger, at(1)).await.unwrap(), None);
}

async fn token_revocation_is_scoped_to_the_owner(store: Store) {
    let alice = store.create_user(&new_user("alice"), at(0)).await.unwrap();
    let bob = store.create_user(&new_user("bob"), at(0)).await.unwrap();
    let new = NewToken {
        scopes: scopes("self"),
        note: String::new(),
        expires: None,
        binding: TokenBinding::Api,
    };
    let (secret, token) = store.create_token(alice.id, &new, at(0)).await.unwrap();
    assert!(!store.revoke_token(bob.id, token.id).await.unwrap());
    assert!(store.token(secret.expose(), at(1)).await.unwrap().is_some());
    assert!(store.revoke_token(alice.id, token.id).await.unwrap());
    assert!(!store.revoke_token(alice.id, token.id).await.unwrap());
    assert_eq!(store.token(secret.expose(), at(1)).await.unwrap(), None);
}

async fn corrupt_rows_are_errors(store: Store) {
    raw(
        &store,
        "INSERT INTO users (name, admin, approved, created) VALUES (' Not/Normal', FALSE, TRUE, 0)",
    )
    .await;
    let err = store.list_users().await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Corrupt {
                what: "user name",
                ..
            }
        ),
        "{err:?}"
    );
    raw(&store, "DELETE FROM users").await;
    let alice = store.create_user(&new_user("alice"), at(0)).await.unwrap();
    let new = NewToken {
        scopes: scopes("self"),
        note: String::new(),
        expires: None,
        binding: TokenBinding::Api,
    };
    let (secret, _) = store.create_token(alice.id, &new, at(0)).await.unwrap();
    raw(&store, "UPDATE api_tokens SET scopes = 'root'").await;
    let err = store.token(secret.expose(), at(1)).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Corrupt {
                what: "token scopes",
                ..
            }
        ),
        "{err:?}"
    );
    // The error chain names the cause without echoing secrets.
    let chain = std::iter::successors(Some(&err as &dyn std::error::Error), |e| e.source())
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ");
    assert!(chain.contains("unknown scope \"root\""), "{chain}");
    assert!(!chain.contains(secret.expose()), "{chain}");
}

async fn migrating_twice_is_harmless(store: Store) {
    store.create_user(&new_user("alice"), at(0)).await.unwrap();
    store.migrate().await.unwrap();
    assert_eq!(store.list_users().await.unwrap().len(), 1);
}

async fn concurrent_sessions(store: Store) {
    let alice = store.create_user(&new_user("alice"), at(0)).await.unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..32 {
        let store = store.clone();
        tasks.spawn(async move {
            let secret = store
                .create_session(alice.id, at(i), at(1000))
                .await
                .unwrap();
            let session = store
                .session(secret.expose(), at(200 + i))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(session.last_seen, at(200 + i));
            secret
        });
    }
    let secrets = tasks.join_all().await;
    assert_eq!(secrets.len(), 32);
    assert_eq!(count(&store, "SELECT COUNT(*) FROM sessions").await, 32);
}

// Backend-specific checks.

#[tokio::test]
async fn sqlite_urls_get_wal_and_foreign_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("url.sqlite");
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let store = Store::connect(&url, &StoreOptions::default())
        .await
        .unwrap();
    assert_eq!(store.backend(), "SQLite");
    store.migrate().await.unwrap();
    let Db::Sqlite(pool) = &store.db else {
        panic!("not SQLite")
    };
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    let foreign_keys: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(foreign_keys, 1);
    store.close().await;
    // The same file opens again with its data.
    let again = Store::connect(&url, &StoreOptions::default())
        .await
        .unwrap();
    again.migrate().await.unwrap();
    assert!(again.list_users().await.unwrap().is_empty());
}

#[tokio::test]
async fn bad_urls() {
    let options = StoreOptions::default();
    let err = Store::connect("mysql://user:hunter2@db/gantry", &options)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::UnsupportedUrl { scheme } if scheme == "mysql"),
        "{err:?}"
    );
    assert!(!err.to_string().contains("hunter2"));
    let err = Store::connect("", &options).await.unwrap_err();
    assert!(matches!(err, StoreError::UnsupportedUrl { .. }), "{err:?}");
    // mode=ro on a missing file cannot open it.
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}?mode=ro",
        dir.path().join("missing.sqlite").display()
    );
    let err = Store::connect(&url, &options).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Connect {
                backend: "SQLite",
                ..
            }
        ),
        "{err:?}"
    );
}

async fn unix_ids_round_trip(store: Store) {
    let alice = store.create_user(&new_user("alice"), at(0)).await.unwrap();
    let bob = store.create_user(&new_user("bob"), at(0)).await.unwrap();
    assert_eq!(store.unix_ids(alice.id).await.unwrap(), UnixIds::default());
    let ids = UnixIds {
        uid: Some(4242),
        gid: Some(u32::MAX),
    };
    store.set_unix_ids(alice.id, ids).await.unwrap();
    assert_eq!(store.unix_ids(alice.id).await.unwrap(), ids);
    assert_eq!(store.unix_ids(bob.id).await.unwrap(), UnixIds::default());
    let changed = UnixIds {
        uid: Some(1000),
        gid: None,
    };
    store.set_unix_ids(alice.id, changed).await.unwrap();
    assert_eq!(store.unix_ids(alice.id).await.unwrap(), changed);

    // A root or out-of-range id written by hand is reported, not handed to the spawner.
    raw(
        &store,
        &format!(
            "UPDATE user_unix_ids SET uid = 0 WHERE user_id = {}",
            alice.id.get()
        ),
    )
    .await;
    assert!(matches!(
        store.unix_ids(alice.id).await,
        Err(StoreError::Corrupt { what: "uid", .. })
    ));

    // Deleting the user deletes the row; recording ids for nobody is an error.
    store.delete_user(alice.id).await.unwrap();
    assert_eq!(count(&store, "SELECT COUNT(*) FROM user_unix_ids").await, 0);
    assert!(matches!(
        store.set_unix_ids(alice.id, ids).await,
        Err(StoreError::NoSuchUser { .. })
    ));
}

async fn registered_tokens_work_and_register_once(store: Store) {
    let admin = store.create_user(&new_user("admin"), at(0)).await.unwrap();
    let secret = "0123456789abcdef".repeat(4);
    let new = NewToken {
        scopes: scopes("admin"),
        note: "bootstrap".to_owned(),
        expires: None,
        binding: TokenBinding::Api,
    };
    assert!(
        store
            .register_token(admin.id, &secret, &new, at(0))
            .await
            .unwrap()
    );
    // At the next start: already there, nothing changes.
    assert!(
        !store
            .register_token(admin.id, &secret, &new, at(5))
            .await
            .unwrap()
    );
    assert_eq!(store.tokens_of(admin.id, at(5)).await.unwrap().len(), 1);
    let found = store.token(&secret, at(10)).await.unwrap().unwrap();
    assert_eq!(found.user.id, admin.id);
    assert_eq!(found.token.note, "bootstrap");
    for bad in ["short", &"0123456789ABCDEF".repeat(4), &"g".repeat(64)] {
        assert!(matches!(
            store.register_token(admin.id, bad, &new, at(0)).await,
            Err(StoreError::MalformedSecret)
        ));
    }
}

fn token_for(binding: TokenBinding, note: &str) -> NewToken {
    NewToken {
        scopes: scopes("self"),
        note: note.to_owned(),
        expires: None,
        binding,
    }
}

fn server(name: &str) -> TokenBinding {
    TokenBinding::Server(name.to_owned())
}

/// The probe of issue 11: `alice/` is a prefix of `alice/x`, and `x` of `xy`. Bindings are
/// matched whole, and a note says nothing.
async fn server_tokens_are_bound_by_identity(store: Store) {
    let alice = store.create_user(&new_user("alice"), at(0)).await.unwrap();
    let bob = store.create_user(&new_user("bob"), at(0)).await.unwrap();
    let mut secrets = Vec::new();
    for name in ["", "x", "xy"] {
        let (secret, token) = store
            .create_token(alice.id, &token_for(server(name), "whatever"), at(0))
            .await
            .unwrap();
        assert_eq!(token.binding, server(name));
        secrets.push(secret);
    }
    let (bobs, _) = store
        .create_token(bob.id, &token_for(server(""), "n"), at(0))
        .await
        .unwrap();
    // A token noted like a server's, as the old code matched them, is an ordinary one.
    let (noted, _) = store
        .create_token(
            alice.id,
            &token_for(TokenBinding::Api, "server token: alice/"),
            at(0),
        )
        .await
        .unwrap();

    assert!(store.revoke_server_token(alice.id, "").await.unwrap());
    assert!(!store.revoke_server_token(alice.id, "").await.unwrap());
    let live = |secret: Secret| {
        let store = store.clone();
        async move { store.token(secret.expose(), at(1)).await.unwrap() }
    };
    assert_eq!(live(secrets[0].clone()).await, None);
    let x = live(secrets[1].clone()).await.expect("x's token survives");
    assert_eq!(x.token.binding, server("x"));
    assert!(
        live(secrets[2].clone()).await.is_some(),
        "xy's token survives"
    );
    assert!(
        live(bobs).await.is_some(),
        "bob's default server's token survives"
    );
    let noted = live(noted)
        .await
        .expect("a noted API token is not a server's");
    assert_eq!(noted.token.binding, TokenBinding::Api);

    assert!(store.revoke_server_token(alice.id, "x").await.unwrap());
    assert!(
        live(secrets[2].clone()).await.is_some(),
        "xy's token survives x's"
    );
}

/// A server has one token: a new one replaces the old, and racing creations leave one.
async fn racing_server_tokens_leave_one(store: Store) {
    let alice = store.create_user(&new_user("alice"), at(0)).await.unwrap();
    let (old, _) = store
        .create_token(alice.id, &token_for(server("x"), "first"), at(0))
        .await
        .unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..8 {
        let store = store.clone();
        tasks.spawn(async move {
            store
                .create_token(alice.id, &token_for(server("x"), &format!("{i}")), at(1))
                .await
                .unwrap()
                .0
        });
    }
    let secrets = tasks.join_all().await;
    assert_eq!(store.token(old.expose(), at(2)).await.unwrap(), None);
    let mut live = 0;
    for secret in secrets {
        if store.token(secret.expose(), at(2)).await.unwrap().is_some() {
            live += 1;
        }
    }
    assert_eq!(live, 1, "exactly one of the racing tokens works");
    let tokens = store.tokens_of(alice.id, at(2)).await.unwrap();
    assert_eq!(tokens.len(), 1, "{tokens:?}");
    assert_eq!(tokens[0].binding, server("x"));
}

async fn oauth_tokens_are_revoked_by_holder_and_by_client(store: Store) {
    let alice = store.create_user(&new_user("alice"), at(0)).await.unwrap();
    let bob = store.create_user(&new_user("bob"), at(0)).await.unwrap();
    let oauth = |client: &str| TokenBinding::OAuth(client.to_owned());
    for (user, client) in [
        (alice.id, "c1"),
        (alice.id, "c2"),
        (bob.id, "c1"),
        (bob.id, "c2"),
    ] {
        store
            .create_token(user, &token_for(oauth(client), "n"), at(0))
            .await
            .unwrap();
    }
    store
        .create_token(alice.id, &token_for(TokenBinding::Api, "oauth: c1"), at(0))
        .await
        .unwrap();
    store
        .create_token(alice.id, &token_for(server(""), "n"), at(0))
        .await
        .unwrap();
    // Bob's server stops: the tokens issued through its client go, whoever holds them.
    assert_eq!(
        store.revoke_client_tokens("c1").await.unwrap(),
        [alice.id, bob.id]
    );
    assert!(store.revoke_client_tokens("c1").await.unwrap().is_empty());
    // Alice logs out: her OAuth tokens go, her own and her server's stay.
    assert_eq!(store.revoke_oauth_tokens(alice.id).await.unwrap(), 1);
    let bindings = |tokens: Vec<ApiToken>| -> Vec<TokenBinding> {
        tokens.into_iter().map(|t| t.binding).collect()
    };
    assert_eq!(
        bindings(store.tokens_of(alice.id, at(1)).await.unwrap()),
        [TokenBinding::Api, server("")]
    );
    assert_eq!(
        bindings(store.tokens_of(bob.id, at(1)).await.unwrap()),
        [oauth("c2")]
    );
}

/// Release 3 knew a server's token and OAuth tokens by their notes. After the upgrade they
/// keep working and are bound; of two tokens racing starts left for one server, the newer
/// stays.
async fn tokens_noted_before_bindings_keep_working(store: Store) {
    let alice = store.create_user(&new_user("alice"), at(0)).await.unwrap();
    let insert = |note: &'static str| {
        let store = store.clone();
        async move {
            let secret = Secret::generate().unwrap();
            let sql = format!(
                "INSERT INTO api_tokens (prefix, hash, user_id, scopes, note, created) \
                 VALUES ('{}', '{}', {}, 'self', '{note}', {T0})",
                secret.prefix(),
                secret.hash().as_str(),
                alice.id.get()
            );
            raw(&store, &sql).await;
            secret
        }
    };
    let default = insert("server token: alice/").await;
    let older_x = insert("server token: alice/x").await;
    let x = insert("server token: alice/x").await;
    let oauth = insert("oauth: jupyterhub-user-alice").await;
    let laptop = insert("laptop").await;

    store.migrate().await.unwrap();

    let binding = |secret: Secret| {
        let store = store.clone();
        async move {
            store
                .token(secret.expose(), at(1))
                .await
                .unwrap()
                .map(|auth| auth.token.binding)
        }
    };
    assert_eq!(binding(default).await, Some(server("")));
    assert_eq!(binding(older_x).await, None);
    assert_eq!(binding(x).await, Some(server("x")));
    assert_eq!(
        binding(oauth).await,
        Some(TokenBinding::OAuth("jupyterhub-user-alice".into()))
    );
    assert_eq!(binding(laptop).await, Some(TokenBinding::Api));
}

async fn renaming_a_user_keeps_their_credentials(store: Store) {
    let alice = store.create_user(&new_user("alice"), at(0)).await.unwrap();
    store.create_user(&new_user("bob"), at(0)).await.unwrap();
    let session = store
        .create_session(alice.id, at(0), at(3600))
        .await
        .unwrap();
    store.add_to_group("staff", &[alice.id]).await.unwrap();
    assert!(store.rename_user(alice.id, &name("carol")).await.unwrap());
    assert_eq!(store.user_by_name(&name("alice")).await.unwrap(), None);
    let carol = store.user_by_name(&name("carol")).await.unwrap().unwrap();
    assert_eq!(carol.id, alice.id);
    let found = store
        .session(session.expose(), at(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.user.name, name("carol"));
    assert_eq!(store.groups_of(carol.id).await.unwrap(), ["staff"]);

    // A taken name is refused and nothing changes; renaming nobody is `false`.
    assert!(matches!(
        store.rename_user(carol.id, &name("bob")).await,
        Err(StoreError::UserExists { name: taken }) if taken == name("bob")
    ));
    assert_eq!(
        store.user(carol.id).await.unwrap().unwrap().name,
        name("carol")
    );
    let missing = UserId::new(alice.id.get() + 1000);
    assert!(!store.rename_user(missing, &name("dave")).await.unwrap());
}

async fn groups_round_trip(store: Store) {
    let alice = store.create_user(&new_user("alice"), at(0)).await.unwrap();
    let bob = store.create_user(&new_user("bob"), at(0)).await.unwrap();
    assert!(store.groups().await.unwrap().is_empty());
    assert!(store.groups_of(alice.id).await.unwrap().is_empty());

    store
        .add_to_group("gpu", &[alice.id, bob.id])
        .await
        .unwrap();
    store.add_to_group("staff", &[bob.id]).await.unwrap();
    // Adding a member again changes nothing.
    store.add_to_group("gpu", &[alice.id]).await.unwrap();
    assert_eq!(store.groups_of(alice.id).await.unwrap(), ["gpu"]);
    assert_eq!(store.groups_of(bob.id).await.unwrap(), ["gpu", "staff"]);
    let groups = store.groups().await.unwrap();
    assert_eq!(
        groups.keys().map(String::as_str).collect::<Vec<_>>(),
        ["gpu", "staff"]
    );
    assert_eq!(groups["gpu"], [name("alice"), name("bob")]);
    assert_eq!(groups["staff"], [name("bob")]);

    // One missing user fails the whole addition.
    let missing = UserId::new(bob.id.get() + 1000);
    assert!(matches!(
        store.add_to_group("ops", &[alice.id, missing]).await,
        Err(StoreError::NoSuchUser { id }) if id == missing
    ));
    assert!(!store.groups().await.unwrap().contains_key("ops"));

    // Removing counts what went; a group without members is gone.
    assert_eq!(
        store
            .remove_from_group("gpu", &[alice.id, missing])
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store.remove_from_group("gpu", &[alice.id]).await.unwrap(),
        0
    );
    assert!(store.groups_of(alice.id).await.unwrap().is_empty());
    store.remove_from_group("staff", &[bob.id]).await.unwrap();
    assert_eq!(
        store.groups().await.unwrap().keys().collect::<Vec<_>>(),
        ["gpu"]
    );

    // Deleting a user deletes their memberships.
    store.delete_user(bob.id).await.unwrap();
    assert!(store.groups().await.unwrap().is_empty());
    assert_eq!(count(&store, "SELECT COUNT(*) FROM user_groups").await, 0);
}

async fn provider_groups_are_replaced_and_admin_groups_kept(store: Store) {
    let alice = store.create_user(&new_user("alice"), at(0)).await.unwrap();
    let set = |names: &[&str]| {
        names
            .iter()
            .map(|n| (*n).to_owned())
            .collect::<BTreeSet<_>>()
    };
    store.add_to_group("gpu", &[alice.id]).await.unwrap();
    store
        .set_provider_groups(alice.id, &set(&["staff", "ops"]))
        .await
        .unwrap();
    assert_eq!(
        store.groups_of(alice.id).await.unwrap(),
        ["gpu", "ops", "staff"]
    );
    // The next login's claim replaces the provider's groups; the admin's stays.
    store
        .set_provider_groups(alice.id, &set(&["staff", "gpu"]))
        .await
        .unwrap();
    assert_eq!(store.groups_of(alice.id).await.unwrap(), ["gpu", "staff"]);
    store
        .set_provider_groups(alice.id, &set(&[]))
        .await
        .unwrap();
    assert_eq!(store.groups_of(alice.id).await.unwrap(), ["gpu"]);
    // An admin taking a provider's group away lasts until the provider says it again.
    store
        .set_provider_groups(alice.id, &set(&["staff"]))
        .await
        .unwrap();
    store.remove_from_group("staff", &[alice.id]).await.unwrap();
    assert_eq!(store.groups_of(alice.id).await.unwrap(), ["gpu"]);
    assert!(matches!(
        store
            .set_provider_groups(UserId::new(alice.id.get() + 1000), &set(&["x"]))
            .await,
        Err(StoreError::NoSuchUser { .. })
    ));
}

// OpenID identities.

fn identity(provider: &str, subject: &str) -> ProviderIdentity {
    ProviderIdentity {
        provider: provider.to_owned(),
        issuer: format!("https://{provider}.example.org"),
        subject: subject.to_owned(),
    }
}

fn subjects(linked: &[LinkedIdentity]) -> Vec<&str> {
    linked.iter().map(|l| l.identity.subject.as_str()).collect()
}

async fn identities_round_trip(store: Store) {
    let lab = identity("lab", "alice-sub");
    let alice = store
        .create_user_with_identity(&new_user("alice"), &lab, at(0))
        .await
        .unwrap();
    assert_eq!(
        store
            .user_by_identity(&lab.issuer, &lab.subject)
            .await
            .unwrap(),
        Some(alice.clone())
    );
    let linked = store.identities_of(alice.id).await.unwrap();
    assert_eq!(
        linked,
        [LinkedIdentity {
            identity: lab.clone(),
            created: at(0)
        }]
    );
    // The subject alone, or the issuer alone, is not the identity.
    let other_issuer = identity("uni", "alice-sub");
    assert_eq!(
        store
            .user_by_identity(&other_issuer.issuer, &lab.subject)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .user_by_identity(&lab.issuer, "bob-sub")
            .await
            .unwrap(),
        None
    );

    // One identity, one account: a second account with it is refused whole (no user
    // either), and a taken name is refused before the identity is looked at.
    let err = store
        .create_user_with_identity(&new_user("bob"), &lab, at(1))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::IdentityTaken { .. }), "{err:?}");
    assert!(err.to_string().contains("alice-sub"), "{err}");
    assert_eq!(store.user_by_name(&name("bob")).await.unwrap(), None);
    let err = store
        .create_user_with_identity(&new_user("ALICE"), &identity("lab", "new-sub"), at(1))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::UserExists { .. }), "{err:?}");
    assert_eq!(
        store
            .user_by_identity(&lab.issuer, "new-sub")
            .await
            .unwrap(),
        None
    );

    // An admin links more; linking again is harmless; another account's is refused.
    assert!(
        store
            .link_identity(alice.id, &other_issuer, at(2))
            .await
            .unwrap()
    );
    assert!(
        !store
            .link_identity(alice.id, &other_issuer, at(3))
            .await
            .unwrap()
    );
    assert_eq!(
        subjects(&store.identities_of(alice.id).await.unwrap()),
        ["alice-sub", "alice-sub"]
    );
    let bob = store.create_user(&new_user("bob"), at(4)).await.unwrap();
    let err = store.link_identity(bob.id, &lab, at(4)).await.unwrap_err();
    assert!(matches!(err, StoreError::IdentityTaken { .. }), "{err:?}");
    let missing = UserId::new(bob.id.get() + 1000);
    assert!(matches!(
        store
            .link_identity(missing, &identity("lab", "x"), at(4))
            .await,
        Err(StoreError::NoSuchUser { .. })
    ));

    // Unlinking takes one identity off one account.
    assert!(
        !store
            .unlink_identity(bob.id, &lab.issuer, &lab.subject)
            .await
            .unwrap()
    );
    assert!(
        store
            .unlink_identity(alice.id, &other_issuer.issuer, &other_issuer.subject)
            .await
            .unwrap()
    );
    assert_eq!(
        subjects(&store.identities_of(alice.id).await.unwrap()),
        ["alice-sub"]
    );
    // Free again, it may go to bob.
    assert!(
        store
            .link_identity(bob.id, &other_issuer, at(5))
            .await
            .unwrap()
    );

    // Renaming keeps them (keyed by the id); deleting the account deletes them.
    assert!(store.rename_user(alice.id, &name("alicia")).await.unwrap());
    assert_eq!(
        store
            .user_by_identity(&lab.issuer, &lab.subject)
            .await
            .unwrap()
            .map(|u| u.name),
        Some(name("alicia"))
    );
    assert!(store.delete_user(alice.id).await.unwrap());
    assert_eq!(
        store
            .user_by_identity(&lab.issuer, &lab.subject)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM user_identities").await,
        1
    );
}

async fn binding_claims_only_unclaimed_accounts(store: Store) {
    let passwords = Passwords::new(PasswordParams {
        memory_kib: 8,
        iterations: 1,
        parallelism: 1,
    })
    .unwrap();
    // An account without a password or identity (an OpenID user from before identities, or
    // one an admin created by name) takes the first identity that claims it, and no other.
    let old = store.create_user(&new_user("old"), at(0)).await.unwrap();
    let first = identity("lab", "old-sub");
    assert!(
        store
            .bind_identity_if_unclaimed(old.id, &first, at(1))
            .await
            .unwrap()
    );
    assert!(
        !store
            .bind_identity_if_unclaimed(old.id, &identity("uni", "old-sub"), at(2))
            .await
            .unwrap()
    );
    assert_eq!(
        subjects(&store.identities_of(old.id).await.unwrap()),
        ["old-sub"]
    );
    assert_eq!(
        store
            .user_by_identity(&first.issuer, &first.subject)
            .await
            .unwrap()
            .map(|u| u.id),
        Some(old.id)
    );

    // A local password is a claim of its own.
    let local = store
        .create_user(
            &NewUser {
                password_hash: Some(passwords.hash("secret").unwrap()),
                ..new_user("victim")
            },
            at(0),
        )
        .await
        .unwrap();
    assert!(
        !store
            .bind_identity_if_unclaimed(local.id, &identity("lab", "victim-sub"), at(1))
            .await
            .unwrap()
    );
    assert!(store.identities_of(local.id).await.unwrap().is_empty());

    // An identity that logs into another account cannot claim a second one.
    let spare = store.create_user(&new_user("spare"), at(0)).await.unwrap();
    let err = store
        .bind_identity_if_unclaimed(spare.id, &first, at(1))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::IdentityTaken { .. }), "{err:?}");
    assert!(store.identities_of(spare.id).await.unwrap().is_empty());
    // No such account: nothing to bind.
    assert!(
        !store
            .bind_identity_if_unclaimed(
                UserId::new(spare.id.get() + 1000),
                &identity("lab", "x"),
                at(1)
            )
            .await
            .unwrap()
    );
    // The bind changed nothing else of the account.
    assert_eq!(store.user(old.id).await.unwrap(), Some(old));
}

async fn parallel_binds_bind_one_identity(store: Store) {
    let shared = store.create_user(&new_user("shared"), at(0)).await.unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..16 {
        let store = store.clone();
        tasks.spawn(async move {
            store
                .bind_identity_if_unclaimed(shared.id, &identity("lab", &format!("sub-{i}")), at(i))
                .await
                .unwrap()
        });
    }
    let bound = tasks.join_all().await;
    assert_eq!(bound.iter().filter(|b| **b).count(), 1, "{bound:?}");
    assert_eq!(store.identities_of(shared.id).await.unwrap().len(), 1);
}

async fn parallel_first_logins_make_one_account(store: Store) {
    // Parallel first logins of one identity (two tabs): one account, the rest told why.
    let lab = identity("lab", "carol-sub");
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..8 {
        let store = store.clone();
        let lab = lab.clone();
        tasks.spawn(async move {
            store
                .create_user_with_identity(&new_user("carol"), &lab, at(i))
                .await
        });
    }
    let mut made = 0;
    for result in tasks.join_all().await {
        match result {
            Ok(_) => made += 1,
            Err(StoreError::UserExists { .. } | StoreError::IdentityTaken { .. }) => {}
            Err(other) => panic!("{other:?}"),
        }
    }
    assert_eq!(made, 1);
    assert_eq!(store.list_users().await.unwrap().len(), 1);
    assert_eq!(
        count(&store, "SELECT COUNT(*) FROM user_identities").await,
        1
    );
}

/// An OpenID user and a local user in a database as a build from before identities left it
/// (the store is at version 4).
async fn before_identities(store: &Store) -> (User, User) {
    let passwords = Passwords::new(PasswordParams {
        memory_kib: 8,
        iterations: 1,
        parallelism: 1,
    })
    .unwrap();
    let openid = store
        .create_user(&new_user("olduser"), at(0))
        .await
        .unwrap();
    let local = store
        .create_user(
            &NewUser {
                password_hash: Some(passwords.hash("secret").unwrap()),
                ..new_user("local")
            },
            at(0),
        )
        .await
        .unwrap();
    (openid, local)
}

/// Migrating a database from before identities keeps every account as it was, with no
/// identity; the OpenID user's first login then binds theirs, and the local user's cannot.
async fn migration_to_identities(store: Store) {
    let (openid, local) = before_identities(&store).await;
    store.migrate().await.unwrap();
    assert_eq!(
        store.list_users().await.unwrap(),
        [local.clone(), openid.clone()]
    );
    assert!(store.identities_of(openid.id).await.unwrap().is_empty());
    assert!(
        store
            .bind_identity_if_unclaimed(openid.id, &identity("lab", "old-sub"), at(10))
            .await
            .unwrap()
    );
    assert!(
        !store
            .bind_identity_if_unclaimed(local.id, &identity("lab", "local-sub"), at(10))
            .await
            .unwrap()
    );
    // And again: nothing more to do.
    store.migrate().await.unwrap();
    assert_eq!(
        subjects(&store.identities_of(openid.id).await.unwrap()),
        ["old-sub"]
    );
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]

    /// Whatever the names (prefixes of each other, separators, the default server's empty
    /// name), each (user, server) has its own server token, and revoking any of them leaves
    /// every other one working. On SQLite; the deterministic tests above cover PostgreSQL.
    #[test]
    fn server_tokens_of_distinct_servers_never_touch(
        pairs in proptest::collection::btree_set(("[ab]{1,2}", "[x/._-]{0,3}"), 1..8),
        revoke in proptest::collection::vec(proptest::bool::ANY, 8),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let (store, _dir) = sqlite(i64::MAX).await;
            let mut users = std::collections::BTreeMap::new();
            let mut tokens = Vec::new();
            for (user, server_name) in &pairs {
                if !users.contains_key(user) {
                    let created = store.create_user(&new_user(user), at(0)).await.unwrap();
                    users.insert(user.clone(), created.id);
                }
                let (secret, _) = store
                    .create_token(users[user], &token_for(server(server_name), "n"), at(0))
                    .await
                    .unwrap();
                tokens.push(secret);
            }
            for ((user, server_name), gone) in pairs.iter().zip(&revoke) {
                if *gone {
                    assert!(store.revoke_server_token(users[user], server_name).await.unwrap());
                }
            }
            for (((user, server_name), gone), secret) in pairs.iter().zip(&revoke).zip(tokens) {
                let found = store.token(secret.expose(), at(1)).await.unwrap();
                assert_eq!(found.is_some(), !gone, "{user}/{server_name} among {pairs:?}");
                if let Some(found) = found {
                    assert_eq!(found.token.binding, server(server_name));
                    assert_eq!(found.user.id, users[user]);
                }
            }
        });
    }
}

/// `last_activity` starts empty, and a recorded activity replaces it only when later.
async fn user_activity_only_moves_forward(store: Store) {
    let alice = store.create_user(&new_user("alice"), at(0)).await.unwrap();
    let bob = store.create_user(&new_user("bob"), at(0)).await.unwrap();
    assert_eq!(alice.last_activity, None);
    let activity = |user: UserId| {
        let store = store.clone();
        async move { store.user(user).await.unwrap().unwrap().last_activity }
    };
    assert_eq!(activity(alice.id).await, None);

    assert!(store.record_user_activity(alice.id, at(100)).await.unwrap());
    assert_eq!(activity(alice.id).await, Some(at(100)));
    // Earlier or equal: no change.
    assert!(!store.record_user_activity(alice.id, at(50)).await.unwrap());
    assert!(!store.record_user_activity(alice.id, at(100)).await.unwrap());
    assert_eq!(activity(alice.id).await, Some(at(100)));
    assert!(store.record_user_activity(alice.id, at(200)).await.unwrap());
    assert_eq!(activity(alice.id).await, Some(at(200)));

    // Only alice's row moved.
    assert_eq!(activity(bob.id).await, None);
    // No such user: nothing to record.
    assert!(
        !store
            .record_user_activity(UserId::new(i64::MAX), at(300))
            .await
            .unwrap()
    );
}

/// Every way of reading a user reads their activity: by id, by name, in the list, by
/// identity, with a session and with a token.
async fn user_activity_comes_with_every_lookup(store: Store) {
    let lab = identity("lab", "alice-sub");
    let alice = store
        .create_user_with_identity(&new_user("alice"), &lab, at(0))
        .await
        .unwrap();
    assert_eq!(alice.last_activity, None);
    let session = store
        .create_session(alice.id, at(0), at(10_000))
        .await
        .unwrap();
    let new = NewToken {
        scopes: scopes("self"),
        note: "laptop".to_owned(),
        expires: None,
        binding: TokenBinding::Api,
    };
    let (token, created) = store.create_token(alice.id, &new, at(0)).await.unwrap();
    assert!(store.record_user_activity(alice.id, at(42)).await.unwrap());
    let expected = User {
        last_activity: Some(at(42)),
        ..alice.clone()
    };

    assert_eq!(store.user(alice.id).await.unwrap(), Some(expected.clone()));
    assert_eq!(
        store.user_by_name(&name("alice")).await.unwrap(),
        Some(expected.clone())
    );
    assert_eq!(
        store.list_users().await.unwrap(),
        std::slice::from_ref(&expected)
    );
    assert_eq!(
        store
            .user_by_identity(&lab.issuer, &lab.subject)
            .await
            .unwrap(),
        Some(expected.clone())
    );
    let by_session = store.session(session.expose(), at(50)).await.unwrap();
    assert_eq!(by_session.unwrap().user, expected);
    let by_token = store.token(token.expose(), at(50)).await.unwrap().unwrap();
    assert_eq!(by_token.user, expected);
    // The token row is read without its prefix column; it comes back all the same.
    assert_eq!(by_token.token.prefix, created.prefix);
    assert_eq!(by_token.token.note, "laptop");
}

/// Writes arriving in any order (parallel requests) leave the latest.
async fn racing_activity_writes_keep_the_latest(store: Store) {
    let alice = store.create_user(&new_user("alice"), at(0)).await.unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for offset in [30, 10, 50, 20, 40, 50, 0] {
        let store = store.clone();
        tasks.spawn(async move { store.record_user_activity(alice.id, at(offset)).await });
    }
    for result in tasks.join_all().await {
        result.unwrap();
    }
    let stored = store.user(alice.id).await.unwrap().unwrap();
    assert_eq!(stored.last_activity, Some(at(50)));
}

/// Migrating a database from before user activity keeps every account, with no activity
/// recorded; activity is recorded from then on, and read with the user's credentials.
async fn migration_to_user_activity(store: Store) {
    let (openid, local) = before_identities(&store).await;
    let session = store
        .create_session(local.id, at(0), at(10_000))
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let users = store.list_users().await.unwrap();
    assert_eq!(users, [local.clone(), openid.clone()]);
    assert!(users.iter().all(|u| u.last_activity.is_none()));

    assert!(store.record_user_activity(local.id, at(60)).await.unwrap());
    let by_session = store.session(session.expose(), at(70)).await.unwrap();
    assert_eq!(by_session.unwrap().user.last_activity, Some(at(60)));
    assert_eq!(
        store.user(openid.id).await.unwrap().unwrap().last_activity,
        None
    );
    // And again: nothing more to do, and the activity stays.
    store.migrate().await.unwrap();
    assert_eq!(
        store.user(local.id).await.unwrap().unwrap().last_activity,
        Some(at(60))
    );
}
