//! Persistence: users, browser sessions and API tokens, in SQLite or PostgreSQL.
//!
//! One [`Store`] talks to either database through sqlx. Every query is written once, with `$1`
//! placeholders that both SQLite and PostgreSQL accept, and runs on whichever pool the store
//! holds (the `on_db!` macro expands the same body for each). Only the migrations differ, in
//! `auth/migrations/sqlite` and `auth/migrations/postgres`, because identity columns are spelt
//! differently; they are compiled into the binary, so nothing is read from disk at run time.
//! Times are stored as Unix seconds.
//!
//! SQLite is the embedded default: one file, WAL journal (readers never wait for the writer),
//! `synchronous=NORMAL` (a power cut may lose the last commits, never the file), foreign keys
//! on (deleting a user deletes their sessions and tokens), and a busy timeout so writers queue
//! rather than fail.
//!
//! Secrets are never stored: a session row is keyed by the SHA-256 of the session secret, a
//! token row holds the token's public prefix and SHA-256 (see [`crate::secret`]). Sessions are
//! looked up by that hash directly; a timing difference in the index would leak bits of a hash,
//! which gives no way to a secret. Tokens are looked up by prefix and then compared in constant
//! time. `last_seen` and `last_used` are written at most once a minute per row
//! ([`ACTIVITY_RESOLUTION_SECS`]), so authenticating a busy client is not a write per request.
//! A user's `last_activity` is written by the hub, which coalesces it in memory
//! ([`Store::record_user_activity`] only ever moves it forward).

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::str::FromStr;
use std::time::Duration;

use jiff::Timestamp;
use sqlx::error::BoxDynError;
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::names::UserName;
use crate::password::PasswordHash;
use crate::scope::Scopes;
use crate::secret::{RandomnessError, Secret, SecretHash, SecretKey, prefix_of};

/// `last_seen` / `last_used` are updated only when they are at least this many seconds old.
pub const ACTIVITY_RESOLUTION_SECS: i64 = 60;

/// Migrations for SQLite: (version, description, SQL).
const SQLITE_MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "identity",
        include_str!("../migrations/sqlite/0001_identity.sql"),
    ),
    (
        2,
        "unix ids",
        include_str!("../migrations/sqlite/0002_unix_ids.sql"),
    ),
    (
        3,
        "user groups",
        include_str!("../migrations/sqlite/0003_user_groups.sql"),
    ),
    (
        4,
        "token bindings",
        include_str!("../migrations/sqlite/0004_token_bindings.sql"),
    ),
    (
        5,
        "identities",
        include_str!("../migrations/sqlite/0005_identities.sql"),
    ),
    (
        6,
        "user activity",
        include_str!("../migrations/sqlite/0006_user_activity.sql"),
    ),
];

/// Migrations for PostgreSQL, version for version the same as [`SQLITE_MIGRATIONS`].
const POSTGRES_MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "identity",
        include_str!("../migrations/postgres/0001_identity.sql"),
    ),
    (
        2,
        "unix ids",
        include_str!("../migrations/postgres/0002_unix_ids.sql"),
    ),
    (
        3,
        "user groups",
        include_str!("../migrations/postgres/0003_user_groups.sql"),
    ),
    (
        4,
        "token bindings",
        include_str!("../migrations/postgres/0004_token_bindings.sql"),
    ),
    (
        5,
        "identities",
        include_str!("../migrations/postgres/0005_identities.sql"),
    ),
    (
        6,
        "user activity",
        include_str!("../migrations/postgres/0006_user_activity.sql"),
    ),
];

/// Connection pool settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreOptions {
    /// Most connections the pool opens. Default: 8.
    pub max_connections: u32,
    /// How long a query waits for a free connection before failing. Default: 10 s.
    pub acquire_timeout: Duration,
    /// SQLite only: how long a writer waits for the database lock. Default: 5 s.
    pub busy_timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            max_connections: 8,
            acquire_timeout: Duration::from_secs(10),
            busy_timeout: Duration::from_secs(5),
        }
    }
}

/// The identity database. Cheap to clone: clones share the pool.
#[derive(Clone, Debug)]
pub struct Store {
    db: Db,
}

#[derive(Clone, Debug)]
enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs the same body against whichever pool `$store` holds; `$pool` is bound to it.
macro_rules! on_db {
    ($store:expr, |$pool:ident| $body:expr) => {
        match &$store.db {
            Db::Sqlite($pool) => $body,
            Db::Postgres($pool) => $body,
        }
    };
}

/// A user's database id. Never reused, so nothing keyed by it passes to a later account.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UserId(i64);

impl UserId {
    /// Wraps a raw id (from an API path, say); it may not exist.
    pub const fn new(id: i64) -> Self {
        Self(id)
    }

    /// The raw id.
    pub const fn get(self) -> i64 {
        self.0
    }
}

/// An API token's database id. Never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TokenId(i64);

impl TokenId {
    /// Wraps a raw id (from an API path, say); it may not exist.
    pub const fn new(id: i64) -> Self {
        Self(id)
    }

    /// The raw id.
    pub const fn get(self) -> i64 {
        self.0
    }
}

/// A stored user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// The id.
    pub id: UserId,
    /// The normalised name, unique.
    pub name: UserName,
    /// The argon2id hash of a local password; `None` for users who log in otherwise.
    pub password_hash: Option<PasswordHash>,
    /// Whether the user is an admin.
    pub admin: bool,
    /// Whether an admin approved the account (for sign-up flows); unapproved users cannot log in.
    pub approved: bool,
    /// When the account was created.
    pub created: Timestamp,
    /// When the user was last active as the store knows it (see
    /// [`Store::record_user_activity`]); `None` if never.
    pub last_activity: Option<Timestamp>,
}

/// A user to create.
#[derive(Clone, Debug)]
pub struct NewUser {
    /// The normalised name.
    pub name: UserName,
    /// The argon2id hash of a local password, if any.
    pub password_hash: Option<PasswordHash>,
    /// Whether the user is an admin.
    pub admin: bool,
    /// Whether the account is approved.
    pub approved: bool,
}

/// The numeric UID/GID a user's notebook containers run with, when known.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnixIds {
    /// The UID; never 0 (root).
    pub uid: Option<u32>,
    /// The primary GID; never 0.
    pub gid: Option<u32>,
}

/// An OpenID Connect identity: whom a provider vouches for. `sub` is stable for one user at
/// one issuer, whatever name the provider shows, so logins are matched on (issuer, subject).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderIdentity {
    /// The id of the `[auth.oidc.<id>]` provider it came through; for people to read (logins
    /// match on the issuer).
    pub provider: String,
    /// The issuer URL, exactly as the ID token's `iss`.
    pub issuer: String,
    /// The subject identifier (`sub`).
    pub subject: String,
}

/// An identity linked to an account, as found by [`Store::identities_of`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkedIdentity {
    /// The identity.
    pub identity: ProviderIdentity,
    /// When it was linked (bound at a login, or linked by an admin).
    pub created: Timestamp,
}

/// A live session and its user, as found by [`Store::session`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// The session's user, as stored now.
    pub user: User,
    /// When the session was created (the login).
    pub created: Timestamp,
    /// When the session stops being valid.
    pub expires: Timestamp,
    /// The last request seen on it, to [`ACTIVITY_RESOLUTION_SECS`].
    pub last_seen: Timestamp,
}

/// A stored API token, without its secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiToken {
    /// The id, for listing and revoking.
    pub id: TokenId,
    /// The owner.
    pub user_id: UserId,
    /// The public prefix, to tell tokens apart in a list.
    pub prefix: String,
    /// What the token may do (capped by its owner's rights, see [`crate::scope`]).
    pub scopes: Scopes,
    /// The owner's note on what the token is for.
    pub note: String,
    /// When it was created.
    pub created: Timestamp,
    /// When it stops being valid; `None` for never.
    pub expires: Option<Timestamp>,
    /// The last request that used it, to [`ACTIVITY_RESOLUTION_SECS`]; `None` if unused.
    pub last_used: Option<Timestamp>,
    /// What it was issued for.
    pub binding: TokenBinding,
}

/// What a token was issued for. Kept in columns of its own, so the hub finds and revokes the
/// tokens it issued by identity, never by matching notes (where `alice/` is a prefix of
/// `alice/x`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub enum TokenBinding {
    /// Asked for by a person or a script (the REST API, the token page, `GANTRY_ADMIN_TOKEN`).
    #[default]
    Api,
    /// The API token of its owner's server with this name (`""`: the default server), handed
    /// to the server as `JUPYTERHUB_API_TOKEN`. A user has at most one per server: creating
    /// another replaces it.
    Server(String),
    /// An access token the hub's OAuth provider issued through this client (a server's
    /// OAuth client id) to the token's owner, the visitor.
    OAuth(String),
}

impl TokenBinding {
    fn columns(&self) -> (Option<&str>, Option<&str>) {
        match self {
            Self::Api => (None, None),
            Self::Server(server) => (Some(server), None),
            Self::OAuth(client) => (None, Some(client)),
        }
    }

    fn from_columns(server: Option<String>, client: Option<String>) -> Result<Self, StoreError> {
        match (server, client) {
            (None, None) => Ok(Self::Api),
            (Some(server), None) => Ok(Self::Server(server)),
            (None, Some(client)) => Ok(Self::OAuth(client)),
            (Some(_), Some(_)) => Err(corrupt("token binding")(
                "both a server and an OAuth client".into(),
            )),
        }
    }
}

/// A token to create.
#[derive(Clone, Debug)]
pub struct NewToken {
    /// What the token may do. Whether the owner may grant these is the caller's check
    /// ([`Scopes::grantable_by`]).
    pub scopes: Scopes,
    /// A note on what the token is for.
    pub note: String,
    /// When it stops being valid; `None` for never.
    pub expires: Option<Timestamp>,
    /// What it is for.
    pub binding: TokenBinding,
}

/// An API token that authenticated a request, and its owner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenAuth {
    /// The token.
    pub token: ApiToken,
    /// Its owner, as stored now.
    pub user: User,
}

/// How many credentials [`Store::revoke_user_credentials`] ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Revoked {
    /// Sessions deleted.
    pub sessions: u64,
    /// API tokens deleted.
    pub tokens: u64,
}

/// Why a store operation failed. Database URLs are never included: they may hold passwords.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL is neither `sqlite:` nor `postgres:`/`postgresql:`.
    #[error("unsupported database URL scheme `{scheme}`: use sqlite: or postgres:")]
    UnsupportedUrl {
        /// The scheme given (at most 32 characters of it).
        scheme: String,
    },
    /// sqlx could not parse the URL.
    #[error("invalid {backend} database URL")]
    BadUrl {
        /// `SQLite` or `PostgreSQL`.
        backend: &'static str,
        /// What sqlx said.
        #[source]
        source: sqlx::Error,
    },
    /// The first connection failed.
    #[error("cannot connect to the {backend} database")]
    Connect {
        /// `SQLite` or `PostgreSQL`.
        backend: &'static str,
        /// What sqlx said.
        #[source]
        source: sqlx::Error,
    },
    /// Bringing the schema up to date failed.
    #[error("database migration failed")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    /// A query failed.
    #[error("database operation `{op}` failed")]
    Query {
        /// The operation, such as `create user`.
        op: &'static str,
        /// What sqlx said.
        #[source]
        source: sqlx::Error,
    },
    /// The name is taken.
    #[error("a user named {name} already exists")]
    UserExists {
        /// The name.
        name: UserName,
    },
    /// The user does not exist.
    #[error("no user with id {}", id.get())]
    NoSuchUser {
        /// The id asked for.
        id: UserId,
    },
    /// The OpenID identity is linked to an account already (each identity logs into one
    /// account at most).
    #[error("the identity {subject:?} of issuer {issuer} is linked to another account")]
    IdentityTaken {
        /// The issuer.
        issuer: String,
        /// The subject.
        subject: String,
    },
    /// A stored value does not parse (was the database edited by hand?).
    #[error("stored {what} is not valid")]
    Corrupt {
        /// Which value, such as `user name`.
        what: &'static str,
        /// Why it does not parse.
        #[source]
        source: BoxDynError,
    },
    /// No secret could be generated.
    #[error(transparent)]
    Randomness(#[from] RandomnessError),
    /// A secret chosen by an operator does not have the shape of gantry's secrets.
    #[error("the token is not 64 lowercase hex digits (generate one with `openssl rand -hex 32`)")]
    MalformedSecret,
}

fn query_failed(op: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| StoreError::Query { op, source }
}

fn corrupt(what: &'static str) -> impl FnOnce(BoxDynError) -> StoreError {
    move |source| StoreError::Corrupt { what, source }
}

/// Migrations compiled into the binary.
#[derive(Debug)]
struct Embedded(&'static [(i64, &'static str, &'static str)]);

impl<'s> MigrationSource<'s> for Embedded {
    fn resolve(
        self,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<Migration>, BoxDynError>> + Send + 's>> {
        let migrations = self
            .0
            .iter()
            .map(|&(version, description, sql)| {
                Migration::new(
                    version,
                    Cow::Borrowed(description),
                    MigrationType::Simple,
                    Cow::Borrowed(sql),
                    false,
                )
            })
            .collect();
        Box::pin(std::future::ready(Ok(migrations)))
    }
}

impl Store {
    /// Connects to `sqlite:PATH…` or `postgres://…`. Does not change the schema; call
    /// [`Store::migrate`] for that. SQLite URLs take sqlx's parameters, so
    /// `sqlite://gantry.sqlite?mode=rwc` creates the file if it is missing.
    ///
    /// # Errors
    ///
    /// [`StoreError::UnsupportedUrl`], [`StoreError::BadUrl`] or [`StoreError::Connect`].
    pub async fn connect(url: &str, options: &StoreOptions) -> Result<Self, StoreError> {
        let scheme = url.split_once(':').map_or("", |(scheme, _)| scheme);
        match scheme {
            "sqlite" => {
                let connect =
                    SqliteConnectOptions::from_str(url).map_err(|source| StoreError::BadUrl {
                        backend: "SQLite",
                        source,
                    })?;
                Self::sqlite(connect, options).await
            }
            "postgres" | "postgresql" => {
                let connect =
                    PgConnectOptions::from_str(url).map_err(|source| StoreError::BadUrl {
                        backend: "PostgreSQL",
                        source,
                    })?;
                let pool = PgPoolOptions::new()
                    .max_connections(options.max_connections)
                    .acquire_timeout(options.acquire_timeout)
                    .connect_with(connect)
                    .await
                    .map_err(|source| StoreError::Connect {
                        backend: "PostgreSQL",
                        source,
                    })?;
                Ok(Self {
                    db: Db::Postgres(pool),
                })
            }
            _ => Err(StoreError::UnsupportedUrl {
                scheme: scheme.chars().take(32).collect(),
            }),
        }
    }

    /// Opens (creating if missing) the SQLite database file at `path`.
    ///
    /// # Errors
    ///
    /// [`StoreError::Connect`] if the file cannot be opened or created.
    pub async fn open_sqlite(path: &Path, options: &StoreOptions) -> Result<Self, StoreError> {
        let connect = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true);
        Self::sqlite(connect, options).await
    }

    async fn sqlite(
        connect: SqliteConnectOptions,
        options: &StoreOptions,
    ) -> Result<Self, StoreError> {
        let connect = connect
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(options.busy_timeout);
        let pool = SqlitePoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect)
            .await
            .map_err(|source| StoreError::Connect {
                backend: "SQLite",
                source,
            })?;
        Ok(Self {
            db: Db::Sqlite(pool),
        })
    }

    /// Which database this is: `SQLite` or `PostgreSQL`.
    pub fn backend(&self) -> &'static str {
        match self.db {
            Db::Sqlite(_) => "SQLite",
            Db::Postgres(_) => "PostgreSQL",
        }
    }

    /// Applies the migrations this build has and the database lacks. Safe to call at every
    /// start; refuses a database migrated by a newer build or with edited migrations.
    ///
    /// # Errors
    ///
    /// [`StoreError::Migrate`].
    pub async fn migrate(&self) -> Result<(), StoreError> {
        self.migrate_to(i64::MAX).await
    }

    /// Applies the migrations up to `version`: how the tests build a database as an older
    /// release left it.
    async fn migrate_to(&self, version: i64) -> Result<(), StoreError> {
        let all = match self.db {
            Db::Sqlite(_) => SQLITE_MIGRATIONS,
            Db::Postgres(_) => POSTGRES_MIGRATIONS,
        };
        let migrations = &all[..all.partition_point(|m| m.0 <= version)];
        let migrator = Migrator::new(Embedded(migrations))
            .await
            .map_err(StoreError::Migrate)?;
        on_db!(self, |pool| migrator.run(pool).await).map_err(StoreError::Migrate)
    }

    /// Closes every connection; the store is unusable afterwards.
    pub async fn close(&self) {
        on_db!(self, |pool| pool.close().await);
    }

    // Users.

    /// Creates a user.
    ///
    /// # Errors
    ///
    /// [`StoreError::UserExists`] if the name is taken, [`StoreError::Query`].
    pub async fn create_user(&self, new: &NewUser, now: Timestamp) -> Result<User, StoreError> {
        const SQL: &str = "INSERT INTO users (name, password_hash, admin, approved, created) \
                           VALUES ($1, $2, $3, $4, $5) RETURNING id";
        let created = now.as_second();
        let inserted: Result<i64, sqlx::Error> = on_db!(self, |pool| {
            sqlx::query_scalar(SQL)
                .bind(new.name.as_str())
                .bind(new.password_hash.as_ref().map(PasswordHash::as_str))
                .bind(new.admin)
                .bind(new.approved)
                .bind(created)
                .fetch_one(pool)
                .await
        });
        match inserted {
            Ok(id) => Ok(User {
                id: UserId(id),
                name: new.name.clone(),
                password_hash: new.password_hash.clone(),
                admin: new.admin,
                approved: new.approved,
                created: timestamp(created)?,
                last_activity: None,
            }),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                Err(StoreError::UserExists {
                    name: new.name.clone(),
                })
            }
            Err(source) => Err(StoreError::Query {
                op: "create user",
                source,
            }),
        }
    }

    /// The user with this id.
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`], [`StoreError::Corrupt`].
    pub async fn user(&self, id: UserId) -> Result<Option<User>, StoreError> {
        const SQL: &str = "SELECT id, name, password_hash, admin, approved, created, \
                           last_activity FROM users WHERE id = $1";
        let row: Option<UserRow> = on_db!(self, |pool| {
            sqlx::query_as(SQL).bind(id.0).fetch_optional(pool).await
        })
        .map_err(query_failed("get user"))?;
        row.map(user_from_row).transpose()
    }

    /// The user with this (normalised) name.
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`], [`StoreError::Corrupt`].
    pub async fn user_by_name(&self, name: &UserName) -> Result<Option<User>, StoreError> {
        const SQL: &str = "SELECT id, name, password_hash, admin, approved, created, \
                           last_activity FROM users WHERE name = $1";
        let row: Option<UserRow> = on_db!(self, |pool| {
            sqlx::query_as(SQL)
                .bind(name.as_str())
                .fetch_optional(pool)
                .await
        })
        .map_err(query_failed("get user by name"))?;
        row.map(user_from_row).transpose()
    }

    /// All users, by name.
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`], [`StoreError::Corrupt`].
    pub async fn list_users(&self) -> Result<Vec<User>, StoreError> {
        const SQL: &str = "SELECT id, name, password_hash, admin, approved, created, \
                           last_activity FROM users ORDER BY name";
        let rows: Vec<UserRow> = on_db!(self, |pool| sqlx::query_as(SQL).fetch_all(pool).await)
            .map_err(query_failed("list users"))?;
        rows.into_iter().map(user_from_row).collect()
    }

    /// Deletes a user and, with them, their sessions and tokens. `false` if there was no such
    /// user.
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`].
    pub async fn delete_user(&self, id: UserId) -> Result<bool, StoreError> {
        const SQL: &str = "DELETE FROM users WHERE id = $1";
        let done = on_db!(self, |pool| sqlx::query(SQL)
            .bind(id.0)
            .execute(pool)
            .await
            .map(|done| done.rows_affected()))
        .map_err(query_failed("delete user"))?;
        Ok(done > 0)
    }

    /// Renames a user. Sessions, tokens, UNIX ids and groups are keyed by the id, so they
    /// follow; tokens with `access:servers!user=OLD` keep naming the old name (and so stop
    /// reaching the renamed user's servers). `false` if there was no such user.
    ///
    /// # Errors
    ///
    /// [`StoreError::UserExists`] if `name` is taken, [`StoreError::Query`].
    pub async fn rename_user(&self, id: UserId, name: &UserName) -> Result<bool, StoreError> {
        const SQL: &str = "UPDATE users SET name = $1 WHERE id = $2";
        let done = on_db!(self, |pool| {
            sqlx::query(SQL)
                .bind(name.as_str())
                .bind(id.0)
                .execute(pool)
                .await
                .map(|done| done.rows_affected())
        });
        match done {
            Ok(rows) => Ok(rows > 0),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                Err(StoreError::UserExists { name: name.clone() })
            }
            Err(source) => Err(StoreError::Query {
                op: "rename user",
                source,
            }),
        }
    }

    /// Grants or takes away admin rights. `false` if there was no such user.
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`].
    pub async fn set_admin(&self, id: UserId, admin: bool) -> Result<bool, StoreError> {
        const SQL: &str = "UPDATE users SET admin = $1 WHERE id = $2";
        self.update_flag("set admin", SQL, id, admin).await
    }

    /// Approves or unapproves an account. `false` if there was no such user.
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`].
    pub async fn set_approved(&self, id: UserId, approved: bool) -> Result<bool, StoreError> {
        const SQL: &str = "UPDATE users SET approved = $1 WHERE id = $2";
        self.update_flag("set approved", SQL, id, approved).await
    }

    /// Sets or clears the local password hash. `false` if there was no such user.
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`].
    pub async fn set_password_hash(
        &self,
        id: UserId,
        hash: Option<&PasswordHash>,
    ) -> Result<bool, StoreError> {
        const SQL: &str = "UPDATE users SET password_hash = $1 WHERE id = $2";
        let hash = hash.map(PasswordHash::as_str);
        let done = on_db!(self, |pool| {
            sqlx::query(SQL)
                .bind(hash)
                .bind(id.0)
                .execute(pool)
                .await
                .map(|done| done.rows_affected())
        })
        .map_err(query_failed("set password"))?;
        Ok(done > 0)
    }

    /// Records that `id` was active at `at`, unless the store already has a later activity
    /// for them: the value only moves forward, so writes arriving out of order (from
    /// parallel requests, or two processes sharing the database) never take it back.
    /// `false` if nothing changed (no such user, or an activity as late or later).
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`].
    pub async fn record_user_activity(
        &self,
        id: UserId,
        at: Timestamp,
    ) -> Result<bool, StoreError> {
        const SQL: &str = "UPDATE users SET last_activity = $2 \
                           WHERE id = $1 AND (last_activity IS NULL OR last_activity < $2)";
        let done = on_db!(self, |pool| {
            sqlx::query(SQL)
                .bind(id.0)
                .bind(at.as_second())
                .execute(pool)
                .await
                .map(|done| done.rows_affected())
        })
        .map_err(query_failed("record user activity"))?;
        Ok(done > 0)
    }

    /// Runs `UPDATE users SET flag = $1 WHERE id = $2`.
    async fn update_flag(
        &self,
        op: &'static str,
        sql: &'static str,
        id: UserId,
        value: bool,
    ) -> Result<bool, StoreError> {
        let done = on_db!(self, |pool| {
            sqlx::query(sql)
                .bind(value)
                .bind(id.0)
                .execute(pool)
                .await
                .map(|done| done.rows_affected())
        })
        .map_err(query_failed(op))?;
        Ok(done > 0)
    }

    // OpenID identities.

    /// The account the OpenID identity (`issuer`, `subject`) logs into, if one is linked.
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`], [`StoreError::Corrupt`].
    pub async fn user_by_identity(
        &self,
        issuer: &str,
        subject: &str,
    ) -> Result<Option<User>, StoreError> {
        const SQL: &str = "SELECT u.id, u.name, u.password_hash, u.admin, u.approved, u.created, \
                           u.last_activity FROM user_identities i JOIN users u ON u.id = i.user_id \
                           WHERE i.issuer = $1 AND i.subject = $2";
        let row: Option<UserRow> = on_db!(self, |pool| {
            sqlx::query_as(SQL)
                .bind(issuer)
                .bind(subject)
                .fetch_optional(pool)
                .await
        })
        .map_err(query_failed("get user by identity"))?;
        row.map(user_from_row).transpose()
    }

    /// The OpenID identities that may log into `user`, oldest first.
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`], [`StoreError::Corrupt`].
    pub async fn identities_of(&self, user: UserId) -> Result<Vec<LinkedIdentity>, StoreError> {
        const SQL: &str = "SELECT provider, issuer, subject, created FROM user_identities \
                           WHERE user_id = $1 ORDER BY created, provider, subject";
        let rows: Vec<(String, String, String, i64)> = on_db!(self, |pool| {
            sqlx::query_as(SQL).bind(user.0).fetch_all(pool).await
        })
        .map_err(query_failed("get identities"))?;
        rows.into_iter()
            .map(|(provider, issuer, subject, created)| {
                Ok(LinkedIdentity {
                    identity: ProviderIdentity {
                        provider,
                        issuer,
                        subject,
                    },
                    created: timestamp(created)?,
                })
            })
            .collect()
    }

    /// Creates a user whose one way in is `identity` (the first OpenID login of a new name),
    /// in one transaction: both or neither.
    ///
    /// # Errors
    ///
    /// [`StoreError::UserExists`] if the name is taken, [`StoreError::IdentityTaken`] if the
    /// identity is linked to another account (a parallel login may have made it a moment
    /// ago), [`StoreError::Query`].
    pub async fn create_user_with_identity(
        &self,
        new: &NewUser,
        identity: &ProviderIdentity,
        now: Timestamp,
    ) -> Result<User, StoreError> {
        const USER: &str = "INSERT INTO users (name, password_hash, admin, approved, created) \
                            VALUES ($1, $2, $3, $4, $5) RETURNING id";
        let created = now.as_second();
        let done: Result<i64, Failed> = on_db!(self, |pool| {
            async {
                let mut tx = pool.begin().await.map_err(Failed::Other)?;
                let id: i64 = sqlx::query_scalar(USER)
                    .bind(new.name.as_str())
                    .bind(new.password_hash.as_ref().map(PasswordHash::as_str))
                    .bind(new.admin)
                    .bind(new.approved)
                    .bind(created)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(Failed::User)?;
                sqlx::query(INSERT_IDENTITY)
                    .bind(id)
                    .bind(identity.provider.as_str())
                    .bind(identity.issuer.as_str())
                    .bind(identity.subject.as_str())
                    .bind(created)
                    .execute(&mut *tx)
                    .await
                    .map_err(Failed::Identity)?;
                tx.commit().await.map_err(Failed::Other)?;
                Ok(id)
            }
            .await
        });
        match done {
            Ok(id) => Ok(User {
                id: UserId(id),
                name: new.name.clone(),
                password_hash: new.password_hash.clone(),
                admin: new.admin,
                approved: new.approved,
                created: timestamp(created)?,
                last_activity: None,
            }),
            Err(Failed::User(sqlx::Error::Database(e))) if e.is_unique_violation() => {
                Err(StoreError::UserExists {
                    name: new.name.clone(),
                })
            }
            Err(Failed::Identity(sqlx::Error::Database(e))) if e.is_unique_violation() => {
                Err(identity_taken(identity))
            }
            Err(Failed::User(source) | Failed::Identity(source) | Failed::Other(source)) => {
                Err(StoreError::Query {
                    op: "create user with identity",
                    source,
                })
            }
        }
    }

    /// Binds `identity` to `user` if the account has neither a local password nor any
    /// identity: an OpenID account from before identities were recorded, or one an admin
    /// created by name for someone to log into. `false` (and nothing changes) when the account
    /// has either, or does not exist. Two parallel calls for one account bind one identity:
    /// the account's row is locked for the check.
    ///
    /// # Errors
    ///
    /// [`StoreError::IdentityTaken`] if the identity is linked to another account,
    /// [`StoreError::Query`].
    pub async fn bind_identity_if_unclaimed(
        &self,
        user: UserId,
        identity: &ProviderIdentity,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        // A no-op write takes the row's lock (PostgreSQL) or the database's (SQLite) before
        // the check, so a parallel bind waits and then sees this one's identity.
        const LOCK: &str = "UPDATE users SET password_hash = NULL \
                            WHERE id = $1 AND password_hash IS NULL";
        const BIND: &str = "INSERT INTO user_identities \
                            (user_id, provider, issuer, subject, created) \
                            SELECT $1, $2, $3, $4, $5 WHERE NOT EXISTS \
                            (SELECT 1 FROM user_identities WHERE user_id = $1)";
        let done: Result<bool, sqlx::Error> = on_db!(self, |pool| {
            async {
                let mut tx = pool.begin().await?;
                let unclaimed = sqlx::query(LOCK)
                    .bind(user.0)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
                    > 0;
                if !unclaimed {
                    return Ok(false);
                }
                let bound = sqlx::query(BIND)
                    .bind(user.0)
                    .bind(identity.provider.as_str())
                    .bind(identity.issuer.as_str())
                    .bind(identity.subject.as_str())
                    .bind(now.as_second())
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
                    > 0;
                if bound {
                    tx.commit().await?;
                }
                Ok(bound)
            }
            .await
        });
        match done {
            Ok(bound) => Ok(bound),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                Err(identity_taken(identity))
            }
            Err(source) => Err(StoreError::Query {
                op: "bind identity",
                source,
            }),
        }
    }

    /// Links `identity` to `user` (an admin's doing), whatever else the account has. `false`
    /// if it was linked to `user` already.
    ///
    /// # Errors
    ///
    /// [`StoreError::IdentityTaken`] if it is linked to another account,
    /// [`StoreError::NoSuchUser`], [`StoreError::Query`].
    pub async fn link_identity(
        &self,
        user: UserId,
        identity: &ProviderIdentity,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let inserted = on_db!(self, |pool| {
            sqlx::query(INSERT_IDENTITY)
                .bind(user.0)
                .bind(identity.provider.as_str())
                .bind(identity.issuer.as_str())
                .bind(identity.subject.as_str())
                .bind(now.as_second())
                .execute(pool)
                .await
                .map(|_| ())
        });
        match inserted {
            Ok(()) => Ok(true),
            Err(sqlx::Error::Database(e)) if e.is_foreign_key_violation() => {
                Err(StoreError::NoSuchUser { id: user })
            }
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                match self
                    .user_by_identity(&identity.issuer, &identity.subject)
                    .await?
                {
                    Some(owner) if owner.id == user => Ok(false),
                    _ => Err(identity_taken(identity)),
                }
            }
            Err(source) => Err(StoreError::Query {
                op: "link identity",
                source,
            }),
        }
    }

    /// Unlinks the identity (`issuer`, `subject`) from `user`: it no longer logs into the
    /// account. `false` if it was not linked to `user`.
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`].
    pub async fn unlink_identity(
        &self,
        user: UserId,
        issuer: &str,
        subject: &str,
    ) -> Result<bool, StoreError> {
        const SQL: &str =
            "DELETE FROM user_identities WHERE user_id = $1 AND issuer = $2 AND subject = $3";
        let done = on_db!(self, |pool| {
            sqlx::query(SQL)
                .bind(user.0)
                .bind(issuer)
                .bind(subject)
                .execute(pool)
                .await
                .map(|done| done.rows_affected())
        })
        .map_err(query_failed("unlink identity"))?;
        Ok(done > 0)
    }

    // Unix ids.

    /// Records the numeric UID/GID `user`'s containers run with (`None` for "not known"),
    /// replacing what was recorded.
    ///
    /// # Errors
    ///
    /// [`StoreError::NoSuchUser`], [`StoreError::Query`].
    pub async fn set_unix_ids(&self, user: UserId, ids: UnixIds) -> Result<(), StoreError> {
        const SQL: &str = "INSERT INTO user_unix_ids (user_id, uid, gid) VALUES ($1, $2, $3) \
                           ON CONFLICT (user_id) DO UPDATE SET uid = excluded.uid, gid = excluded.gid";
        let done = on_db!(self, |pool| {
            sqlx::query(SQL)
                .bind(user.0)
                .bind(ids.uid.map(i64::from))
                .bind(ids.gid.map(i64::from))
                .execute(pool)
                .await
                .map(|_| ())
        });
        match done {
            Ok(()) => Ok(()),
            Err(sqlx::Error::Database(e)) if e.is_foreign_key_violation() => {
                Err(StoreError::NoSuchUser { id: user })
            }
            Err(source) => Err(StoreError::Query {
                op: "set unix ids",
                source,
            }),
        }
    }

    /// The numeric UID/GID recorded for `user`; both `None` when nothing is recorded.
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`], [`StoreError::Corrupt`] for an id outside `1..=u32::MAX`.
    pub async fn unix_ids(&self, user: UserId) -> Result<UnixIds, StoreError> {
        const SQL: &str = "SELECT uid, gid FROM user_unix_ids WHERE user_id = $1";
        let row: Option<(Option<i64>, Option<i64>)> = on_db!(self, |pool| {
            sqlx::query_as(SQL).bind(user.0).fetch_optional(pool).await
        })
        .map_err(query_failed("get unix ids"))?;
        let Some((uid, gid)) = row else {
            return Ok(UnixIds::default());
        };
        let id = |what: &'static str, value: Option<i64>| {
            value
                .map(|v| u32::try_from(v).ok().filter(|v| *v != 0).ok_or(v))
                .transpose()
                .map_err(|v| corrupt(what)(format!("{v} is not a UID/GID from 1 to 2^32-1").into()))
        };
        Ok(UnixIds {
            uid: id("uid", uid)?,
            gid: id("gid", gid)?,
        })
    }

    // Groups.

    /// The groups `user` belongs to, by name.
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`].
    pub async fn groups_of(&self, user: UserId) -> Result<Vec<String>, StoreError> {
        const SQL: &str = "SELECT name FROM user_groups WHERE user_id = $1 ORDER BY name";
        on_db!(self, |pool| {
            sqlx::query_scalar(SQL).bind(user.0).fetch_all(pool).await
        })
        .map_err(query_failed("get groups"))
    }

    /// Every group that has members, by name, with its members by name.
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`], [`StoreError::Corrupt`].
    pub async fn groups(&self) -> Result<BTreeMap<String, Vec<UserName>>, StoreError> {
        const SQL: &str = "SELECT g.name, u.name FROM user_groups g \
                           JOIN users u ON u.id = g.user_id ORDER BY g.name, u.name";
        let rows: Vec<(String, String)> =
            on_db!(self, |pool| sqlx::query_as(SQL).fetch_all(pool).await)
                .map_err(query_failed("list groups"))?;
        let mut groups: BTreeMap<String, Vec<UserName>> = BTreeMap::new();
        for (group, user) in rows {
            let user = UserName::from_stored(user).map_err(|e| corrupt("user name")(e.into()))?;
            groups.entry(group).or_default().push(user);
        }
        Ok(groups)
    }

    /// Puts `users` into `group` (an admin's doing: kept across logins), in one transaction.
    /// Members already in it stay; a membership the provider asserted becomes the admin's.
    ///
    /// # Errors
    ///
    /// [`StoreError::NoSuchUser`] (and nothing changes) if one of `users` does not exist,
    /// [`StoreError::Query`].
    pub async fn add_to_group(&self, group: &str, users: &[UserId]) -> Result<(), StoreError> {
        const SQL: &str = "INSERT INTO user_groups (user_id, name, source) \
                           VALUES ($1, $2, 'admin') \
                           ON CONFLICT (user_id, name) DO UPDATE SET source = 'admin'";
        let done = on_db!(self, |pool| {
            async {
                let mut tx = pool.begin().await.map_err(|e| (None, e))?;
                for user in users {
                    sqlx::query(SQL)
                        .bind(user.0)
                        .bind(group)
                        .execute(&mut *tx)
                        .await
                        .map_err(|e| (Some(*user), e))?;
                }
                tx.commit().await.map_err(|e| (None, e))
            }
            .await
        });
        match done {
            Ok(()) => Ok(()),
            Err((Some(id), sqlx::Error::Database(e))) if e.is_foreign_key_violation() => {
                Err(StoreError::NoSuchUser { id })
            }
            Err((_, source)) => Err(StoreError::Query {
                op: "add to group",
                source,
            }),
        }
    }

    /// Takes `users` out of `group`, whoever put them in. Returns how many memberships
    /// ended. A membership from the provider comes back at the user's next OpenID login.
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`].
    pub async fn remove_from_group(
        &self,
        group: &str,
        users: &[UserId],
    ) -> Result<u64, StoreError> {
        const SQL: &str = "DELETE FROM user_groups WHERE user_id = $1 AND name = $2";
        on_db!(self, |pool| {
            async {
                let mut tx = pool.begin().await?;
                let mut removed = 0;
                for user in users {
                    removed += sqlx::query(SQL)
                        .bind(user.0)
                        .bind(group)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                }
                tx.commit().await?;
                Ok::<_, sqlx::Error>(removed)
            }
            .await
        })
        .map_err(query_failed("remove from group"))
    }

    /// Replaces the groups the identity provider asserts for `user` (at each OpenID login)
    /// with `groups`, in one transaction. Memberships an admin added stay either way.
    ///
    /// # Errors
    ///
    /// [`StoreError::NoSuchUser`], [`StoreError::Query`].
    pub async fn set_provider_groups(
        &self,
        user: UserId,
        groups: &BTreeSet<String>,
    ) -> Result<(), StoreError> {
        const CLEAR: &str = "DELETE FROM user_groups WHERE user_id = $1 AND source = 'provider'";
        const ADD: &str = "INSERT INTO user_groups (user_id, name, source) \
                           VALUES ($1, $2, 'provider') ON CONFLICT (user_id, name) DO NOTHING";
        let done = on_db!(self, |pool| {
            async {
                let mut tx = pool.begin().await?;
                sqlx::query(CLEAR).bind(user.0).execute(&mut *tx).await?;
                for group in groups {
                    sqlx::query(ADD)
                        .bind(user.0)
                        .bind(group.as_str())
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await
            }
            .await
        });
        match done {
            Ok(()) => Ok(()),
            Err(sqlx::Error::Database(e)) if e.is_foreign_key_violation() => {
                Err(StoreError::NoSuchUser { id: user })
            }
            Err(source) => Err(StoreError::Query {
                op: "set provider groups",
                source,
            }),
        }
    }

    // Sessions.

    /// Starts a session for `user`, valid until `expires`. Returns the session secret (the
    /// cookie value), which is not stored and cannot be recovered: a login always makes a new
    /// one, and the caller deletes the session the browser had before, if any.
    ///
    /// # Errors
    ///
    /// [`StoreError::NoSuchUser`], [`StoreError::Randomness`], [`StoreError::Query`].
    pub async fn create_session(
        &self,
        user: UserId,
        now: Timestamp,
        expires: Timestamp,
    ) -> Result<Secret, StoreError> {
        const SQL: &str = "INSERT INTO sessions (id_hash, user_id, created, expires, last_seen) \
                           VALUES ($1, $2, $3, $4, $5)";
        let secret = Secret::generate()?;
        let hash = secret.hash();
        let now = now.as_second();
        let inserted = on_db!(self, |pool| {
            sqlx::query(SQL)
                .bind(hash.as_str())
                .bind(user.0)
                .bind(now)
                .bind(expires.as_second())
                .bind(now)
                .execute(pool)
                .await
                .map(|done| done.rows_affected())
        });
        match inserted {
            Ok(_) => Ok(secret),
            Err(sqlx::Error::Database(e)) if e.is_foreign_key_violation() => {
                Err(StoreError::NoSuchUser { id: user })
            }
            Err(source) => Err(StoreError::Query {
                op: "create session",
                source,
            }),
        }
    }

    /// The live session whose secret is `presented` (a cookie value), with its user; `None` if
    /// there is none, it has expired, or `presented` is not shaped like a secret. Records the
    /// activity (see [`ACTIVITY_RESOLUTION_SECS`]).
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`], [`StoreError::Corrupt`].
    pub async fn session(
        &self,
        presented: &str,
        now: Timestamp,
    ) -> Result<Option<Session>, StoreError> {
        match SecretKey::of(presented) {
            Some(key) => self.session_by_key(&key, now).await,
            None => Ok(None),
        }
    }

    /// [`Store::session`] for a secret already reduced to its [`SecretKey`]: how a cache
    /// checks a session again without keeping its secret.
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`], [`StoreError::Corrupt`].
    pub async fn session_by_key(
        &self,
        key: &SecretKey,
        now: Timestamp,
    ) -> Result<Option<Session>, StoreError> {
        const SQL: &str = "SELECT s.created, s.expires, s.last_seen, \
                           u.id, u.name, u.password_hash, u.admin, u.approved, u.created, \
                           u.last_activity FROM sessions s JOIN users u ON u.id = s.user_id \
                           WHERE s.id_hash = $1 AND s.expires > $2";
        const TOUCH: &str = "UPDATE sessions SET last_seen = $1 WHERE id_hash = $2";
        let hash = key.hash();
        let hash = &hash;
        let now = now.as_second();
        let row: Option<SessionRow> = on_db!(self, |pool| {
            sqlx::query_as(SQL)
                .bind(hash.as_str())
                .bind(now)
                .fetch_optional(pool)
                .await
        })
        .map_err(query_failed("get session"))?;
        let Some((
            created,
            expires,
            mut last_seen,
            id,
            name,
            password,
            admin,
            approved,
            since,
            active,
        )) = row
        else {
            return Ok(None);
        };
        if last_seen <= now - ACTIVITY_RESOLUTION_SECS {
            on_db!(self, |pool| {
                sqlx::query(TOUCH)
                    .bind(now)
                    .bind(hash.as_str())
                    .execute(pool)
                    .await
                    .map(|done| done.rows_affected())
            })
            .map_err(query_failed("touch session"))?;
            last_seen = now;
        }
        Ok(Some(Session {
            user: user_from_row((id, name, password, admin, approved, since, active))?,
            created: timestamp(created)?,
            expires: timestamp(expires)?,
            last_seen: timestamp(last_seen)?,
        }))
    }

    /// Ends the session whose secret is `presented` (logout). `false` if there was none.
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`].
    pub async fn delete_session(&self, presented: &str) -> Result<bool, StoreError> {
        const SQL: &str = "DELETE FROM sessions WHERE id_hash = $1";
        let hash = SecretHash::of(presented);
        let done = on_db!(self, |pool| {
            sqlx::query(SQL)
                .bind(hash.as_str())
                .execute(pool)
                .await
                .map(|done| done.rows_affected())
        })
        .map_err(query_failed("delete session"))?;
        Ok(done > 0)
    }

    /// Ends every session and revokes every API token of `user`, in one transaction (logout
    /// everywhere, admin revocation, a password change).
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`].
    pub async fn revoke_user_credentials(&self, user: UserId) -> Result<Revoked, StoreError> {
        const SESSIONS: &str = "DELETE FROM sessions WHERE user_id = $1";
        const TOKENS: &str = "DELETE FROM api_tokens WHERE user_id = $1";
        on_db!(self, |pool| {
            async {
                let mut tx = pool.begin().await?;
                let sessions = sqlx::query(SESSIONS)
                    .bind(user.0)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                let tokens = sqlx::query(TOKENS)
                    .bind(user.0)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                tx.commit().await?;
                Ok::<_, sqlx::Error>(Revoked { sessions, tokens })
            }
            .await
        })
        .map_err(query_failed("revoke credentials"))
    }

    /// Deletes expired sessions and tokens; run it now and then.
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`].
    pub async fn delete_expired(&self, now: Timestamp) -> Result<Revoked, StoreError> {
        const SESSIONS: &str = "DELETE FROM sessions WHERE expires <= $1";
        const TOKENS: &str = "DELETE FROM api_tokens WHERE expires <= $1";
        let now = now.as_second();
        on_db!(self, |pool| {
            async {
                let sessions = sqlx::query(SESSIONS)
                    .bind(now)
                    .execute(pool)
                    .await?
                    .rows_affected();
                let tokens = sqlx::query(TOKENS)
                    .bind(now)
                    .execute(pool)
                    .await?
                    .rows_affected();
                Ok::<_, sqlx::Error>(Revoked { sessions, tokens })
            }
            .await
        })
        .map_err(query_failed("delete expired"))
    }

    // API tokens.

    /// Creates an API token for `user`. Returns the token's secret, which is not stored and
    /// cannot be shown again, and the stored token. A [`TokenBinding::Server`] token replaces
    /// the server's previous one in the same statement: the old secret stops working as the
    /// new one starts, and two racing calls leave exactly one.
    ///
    /// # Errors
    ///
    /// [`StoreError::NoSuchUser`], [`StoreError::Randomness`], [`StoreError::Query`].
    pub async fn create_token(
        &self,
        user: UserId,
        new: &NewToken,
        now: Timestamp,
    ) -> Result<(Secret, ApiToken), StoreError> {
        // The conflict target is the partial unique index of 0004_token_bindings.sql, which
        // only server tokens can hit.
        const SQL: &str = "INSERT INTO api_tokens \
                           (prefix, hash, user_id, scopes, note, created, expires, last_used, \
                           server_name, oauth_client) \
                           VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, $8, $9) \
                           ON CONFLICT (user_id, server_name) WHERE server_name IS NOT NULL \
                           DO UPDATE SET prefix = excluded.prefix, hash = excluded.hash, \
                           scopes = excluded.scopes, note = excluded.note, \
                           created = excluded.created, expires = excluded.expires, \
                           last_used = NULL \
                           RETURNING id";
        let secret = Secret::generate()?;
        let hash = secret.hash();
        let scopes = new.scopes.to_string();
        let created = now.as_second();
        let expires = new.expires.map(Timestamp::as_second);
        let (server, client) = new.binding.columns();
        let inserted: Result<i64, sqlx::Error> = on_db!(self, |pool| {
            sqlx::query_scalar(SQL)
                .bind(secret.prefix())
                .bind(hash.as_str())
                .bind(user.0)
                .bind(scopes.as_str())
                .bind(new.note.as_str())
                .bind(created)
                .bind(expires)
                .bind(server)
                .bind(client)
                .fetch_one(pool)
                .await
        });
        let id = match inserted {
            Ok(id) => id,
            Err(sqlx::Error::Database(e)) if e.is_foreign_key_violation() => {
                return Err(StoreError::NoSuchUser { id: user });
            }
            Err(source) => {
                return Err(StoreError::Query {
                    op: "create token",
                    source,
                });
            }
        };
        let token = ApiToken {
            id: TokenId(id),
            user_id: user,
            prefix: secret.prefix().to_owned(),
            scopes: new.scopes.clone(),
            note: new.note.clone(),
            created: timestamp(created)?,
            expires: expires.map(timestamp).transpose()?,
            last_used: None,
            binding: new.binding.clone(),
        };
        Ok((secret, token))
    }

    /// Registers an API token whose secret an operator chose (`GANTRY_ADMIN_TOKEN`, for
    /// automation), for `user`, as a [`TokenBinding::Api`] token whatever `new.binding` says
    /// (a secret someone chose never stands in for a server's or the OAuth provider's).
    /// Idempotent: when a token with this secret exists already, nothing changes and `false`
    /// is returned, so it can run at every start.
    ///
    /// # Errors
    ///
    /// [`StoreError::MalformedSecret`] unless `presented` is 64 lowercase hex digits (so it
    /// is as strong as generated secrets and found by the same lookup);
    /// [`StoreError::NoSuchUser`], [`StoreError::Query`].
    pub async fn register_token(
        &self,
        user: UserId,
        presented: &str,
        new: &NewToken,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        const SQL: &str = "INSERT INTO api_tokens \
                           (prefix, hash, user_id, scopes, note, created, expires, last_used) \
                           VALUES ($1, $2, $3, $4, $5, $6, $7, NULL)";
        let prefix = prefix_of(presented).ok_or(StoreError::MalformedSecret)?;
        let hash = SecretHash::of(presented);
        let scopes = new.scopes.to_string();
        let inserted = on_db!(self, |pool| {
            sqlx::query(SQL)
                .bind(prefix)
                .bind(hash.as_str())
                .bind(user.0)
                .bind(scopes.as_str())
                .bind(new.note.as_str())
                .bind(now.as_second())
                .bind(new.expires.map(Timestamp::as_second))
                .execute(pool)
                .await
                .map(|_| ())
        });
        match inserted {
            Ok(()) => Ok(true),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(false),
            Err(sqlx::Error::Database(e)) if e.is_foreign_key_violation() => {
                Err(StoreError::NoSuchUser { id: user })
            }
            Err(source) => Err(StoreError::Query {
                op: "register token",
                source,
            }),
        }
    }

    /// Revokes `user`'s API token of their server `server` (`""`: the default server).
    /// Returns whether there was one.
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`].
    pub async fn revoke_server_token(
        &self,
        user: UserId,
        server: &str,
    ) -> Result<bool, StoreError> {
        const SQL: &str = "DELETE FROM api_tokens WHERE user_id = $1 AND server_name = $2";
        let done = on_db!(self, |pool| {
            sqlx::query(SQL)
                .bind(user.0)
                .bind(server)
                .execute(pool)
                .await
                .map(|done| done.rows_affected())
        })
        .map_err(query_failed("revoke server token"))?;
        Ok(done > 0)
    }

    /// Revokes every access token the OAuth provider issued to `user` (at logout). Returns
    /// how many went.
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`].
    pub async fn revoke_oauth_tokens(&self, user: UserId) -> Result<u64, StoreError> {
        const SQL: &str = "DELETE FROM api_tokens WHERE user_id = $1 AND oauth_client IS NOT NULL";
        on_db!(self, |pool| {
            sqlx::query(SQL)
                .bind(user.0)
                .execute(pool)
                .await
                .map(|done| done.rows_affected())
        })
        .map_err(query_failed("revoke OAuth tokens"))
    }

    /// Revokes every access token issued through OAuth client `client`, whoever holds it
    /// (when its server stops). Returns the holders, once each, so their cached credentials
    /// can be dropped.
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`].
    pub async fn revoke_client_tokens(&self, client: &str) -> Result<Vec<UserId>, StoreError> {
        const SQL: &str = "DELETE FROM api_tokens WHERE oauth_client = $1 RETURNING user_id";
        let mut holders: Vec<i64> = on_db!(self, |pool| {
            sqlx::query_scalar(SQL).bind(client).fetch_all(pool).await
        })
        .map_err(query_failed("revoke OAuth client tokens"))?;
        holders.sort_unstable();
        holders.dedup();
        Ok(holders.into_iter().map(UserId).collect())
    }

    /// The live token whose secret is `presented` (from an `Authorization` header), with its
    /// owner; `None` if there is none, it has expired, or `presented` is not shaped like a
    /// secret. Records the use (see [`ACTIVITY_RESOLUTION_SECS`]).
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`], [`StoreError::Corrupt`].
    pub async fn token(
        &self,
        presented: &str,
        now: Timestamp,
    ) -> Result<Option<TokenAuth>, StoreError> {
        match SecretKey::of(presented) {
            Some(key) => self.token_by_key(&key, now).await,
            None => Ok(None),
        }
    }

    /// [`Store::token`] for a secret already reduced to its [`SecretKey`]: how a cache checks
    /// a token again without keeping its secret.
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`], [`StoreError::Corrupt`].
    pub async fn token_by_key(
        &self,
        key: &SecretKey,
        now: Timestamp,
    ) -> Result<Option<TokenAuth>, StoreError> {
        // The prefix is not selected: every row has the one asked for. That keeps the row
        // within the sixteen columns a tuple decodes.
        const SQL: &str = "SELECT t.id, t.hash, t.user_id, t.scopes, t.note, \
                           t.created, t.expires, t.last_used, t.server_name, t.oauth_client, \
                           u.name, u.password_hash, u.admin, u.approved, u.created, \
                           u.last_activity \
                           FROM api_tokens t JOIN users u ON u.id = t.user_id \
                           WHERE t.prefix = $1";
        const TOUCH: &str = "UPDATE api_tokens SET last_used = $1 WHERE id = $2";
        let (prefix, hash) = (key.prefix(), &key.hash());
        let now = now.as_second();
        let rows: Vec<TokenUserRow> = on_db!(self, |pool| {
            sqlx::query_as(SQL).bind(prefix).fetch_all(pool).await
        })
        .map_err(query_failed("get token"))?;
        // Compare every candidate, so the time taken does not say which one matched.
        let mut found = None;
        for row in rows {
            let (token, user) = split_token_user(prefix, row);
            let stored = SecretHash::from_stored(token.2.clone())
                .ok_or_else(|| corrupt("token hash")("not 64 hex digits".into()))?;
            if stored.matches(hash) {
                found = Some((token, user));
            }
        }
        let Some((token, user)) = found else {
            return Ok(None);
        };
        let mut token = token_from_row(token)?;
        if token
            .expires
            .is_some_and(|expires| expires.as_second() <= now)
        {
            return Ok(None);
        }
        if token
            .last_used
            .is_none_or(|used| used.as_second() <= now - ACTIVITY_RESOLUTION_SECS)
        {
            on_db!(self, |pool| {
                sqlx::query(TOUCH)
                    .bind(now)
                    .bind(token.id.0)
                    .execute(pool)
                    .await
                    .map(|done| done.rows_affected())
            })
            .map_err(query_failed("touch token"))?;
            token.last_used = Some(timestamp(now)?);
        }
        Ok(Some(TokenAuth {
            token,
            user: user_from_row(user)?,
        }))
    }

    /// The live tokens of `user`, oldest first, without secrets.
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`], [`StoreError::Corrupt`].
    pub async fn tokens_of(
        &self,
        user: UserId,
        now: Timestamp,
    ) -> Result<Vec<ApiToken>, StoreError> {
        const SQL: &str = "SELECT id, prefix, hash, user_id, scopes, note, created, expires, \
                           last_used, server_name, oauth_client FROM api_tokens \
                           WHERE user_id = $1 AND (expires IS NULL OR expires > $2) ORDER BY id";
        let rows: Vec<TokenRow> = on_db!(self, |pool| {
            sqlx::query_as(SQL)
                .bind(user.0)
                .bind(now.as_second())
                .fetch_all(pool)
                .await
        })
        .map_err(query_failed("list tokens"))?;
        rows.into_iter().map(token_from_row).collect()
    }

    /// Revokes token `id` of `user`. Taking the owner as well means a caller allowed to manage
    /// one user's tokens cannot revoke another's by guessing ids. `false` if `user` has no such
    /// token.
    ///
    /// # Errors
    ///
    /// [`StoreError::Query`].
    pub async fn revoke_token(&self, user: UserId, id: TokenId) -> Result<bool, StoreError> {
        const SQL: &str = "DELETE FROM api_tokens WHERE id = $1 AND user_id = $2";
        let done = on_db!(self, |pool| {
            sqlx::query(SQL)
                .bind(id.0)
                .bind(user.0)
                .execute(pool)
                .await
                .map(|done| done.rows_affected())
        })
        .map_err(query_failed("revoke token"))?;
        Ok(done > 0)
    }
}

type UserRow = (i64, String, Option<String>, bool, bool, i64, Option<i64>);

type SessionRow = (
    i64,
    i64,
    i64,
    i64,
    String,
    Option<String>,
    bool,
    bool,
    i64,
    Option<i64>,
);

type TokenRow = (
    i64,
    String,
    String,
    i64,
    String,
    String,
    i64,
    Option<i64>,
    Option<i64>,
    Option<String>,
    Option<String>,
);

/// A token row less its prefix (every row of a lookup has the one asked for), followed by
/// its owner's row less the id (the token's `user_id`), as one flat row: sixteen columns, the
/// most a tuple decodes.
type TokenUserRow = (
    i64,
    String,
    i64,
    String,
    String,
    i64,
    Option<i64>,
    Option<i64>,
    Option<String>,
    Option<String>,
    String,
    Option<String>,
    bool,
    bool,
    i64,
    Option<i64>,
);

fn split_token_user(prefix: &str, row: TokenUserRow) -> (TokenRow, UserRow) {
    let user = (row.2, row.10, row.11, row.12, row.13, row.14, row.15);
    (
        (
            row.0,
            prefix.to_owned(),
            row.1,
            row.2,
            row.3,
            row.4,
            row.5,
            row.6,
            row.7,
            row.8,
            row.9,
        ),
        user,
    )
}

/// Inserts one identity: `$1` user id, `$2` provider, `$3` issuer, `$4` subject, `$5` created.
const INSERT_IDENTITY: &str = "INSERT INTO user_identities \
                               (user_id, provider, issuer, subject, created) \
                               VALUES ($1, $2, $3, $4, $5)";

/// Which statement of [`Store::create_user_with_identity`] failed.
enum Failed {
    User(sqlx::Error),
    Identity(sqlx::Error),
    Other(sqlx::Error),
}

fn identity_taken(identity: &ProviderIdentity) -> StoreError {
    StoreError::IdentityTaken {
        issuer: identity.issuer.clone(),
        subject: identity.subject.clone(),
    }
}

fn user_from_row(row: UserRow) -> Result<User, StoreError> {
    let (id, name, password_hash, admin, approved, created, last_activity) = row;
    let name = UserName::from_stored(name).map_err(|e| corrupt("user name")(e.into()))?;
    let password_hash = password_hash
        .map(|phc| PasswordHash::from_phc(&phc))
        .transpose()
        .map_err(|e| corrupt("password hash")(e.into()))?;
    Ok(User {
        id: UserId(id),
        name,
        password_hash,
        admin,
        approved,
        created: timestamp(created)?,
        last_activity: last_activity.map(timestamp).transpose()?,
    })
}

fn token_from_row(row: TokenRow) -> Result<ApiToken, StoreError> {
    let (id, prefix, _hash, user_id, scopes, note, created, expires, last_used, server, client) =
        row;
    // Names in stored scopes are already normalised; parse them without folding.
    let scopes = Scopes::parse(&scopes, crate::names::NamePolicy { case_fold: false })
        .map_err(|e| corrupt("token scopes")(e.into()))?;
    Ok(ApiToken {
        id: TokenId(id),
        user_id: UserId(user_id),
        prefix,
        scopes,
        note,
        created: timestamp(created)?,
        expires: expires.map(timestamp).transpose()?,
        last_used: last_used.map(timestamp).transpose()?,
        binding: TokenBinding::from_columns(server, client)?,
    })
}

fn timestamp(seconds: i64) -> Result<Timestamp, StoreError> {
    Timestamp::from_second(seconds).map_err(|e| corrupt("timestamp")(e.into()))
}

// After `on_db!`, so the tests can use it.
#[cfg(test)]
mod tests;
