//! Identity for gantry: who a request comes from, and what it may do.
//!
//! This crate owns local accounts with argon2id password hashes, browser sessions, API tokens
//! with scopes, CSRF defence and safe `next=` redirects, persisted with sqlx on SQLite (the
//! embedded default) or PostgreSQL, and OpenID Connect login ([`oidc`]). It knows nothing of containers
//! or routes: it never depends on the `spawner` or `proxy` crates, and it reads no environment
//! and binds no socket; the binary hands it a database URL and calls it.
//!
//! The decisions are pure functions with table and property tests beside them:
//! [`names`] (one account however a name is typed), [`redirect`] (where `next=` may lead),
//! [`secret`] (random secrets and their stored hashes), [`scope`] (what a token may do),
//! [`password`] (argon2id), [`ratelimit`] (login attempts per account and per address) and
//! [`csrf`] (whether a cookie-authenticated request may change state). [`store`] is the thin
//! persistence shell around them.

pub mod csrf;
pub mod names;
pub mod oidc;
pub mod password;
pub mod ratelimit;
pub mod redirect;
pub mod scope;
pub mod secret;
pub mod store;

pub use csrf::{CrossOrigin, CsrfRejection, CsrfToken, GateOrigins, PublicOrigin};
pub use names::{NameError, NamePolicy, UserName};
pub use oidc::{
    CallbackParams, IdTokenError, OidcConfig, OidcConfigError, OidcError, OidcIdentity,
    OidcProvider, PendingLogin, pkce_challenge_s256,
};
pub use password::{HashMemory, PasswordError, PasswordHash, PasswordParams, Passwords};
pub use ratelimit::{LimitError, Limited, LoginLimiter, LoginLimits, LookupLimiter, RetryAfter};
pub use redirect::{RedirectError, SafeRedirect, safe_next};
pub use scope::{Action, Owner, Scope, ScopeError, Scopes};
pub use secret::{RandomnessError, Secret, SecretHash, SecretKey};
pub use store::{Store, StoreError, StoreOptions, UnixIds};

/// Every error this crate returns, for callers that handle them in one place.
///
/// Each module also returns its own error type; this enum wraps them unchanged, so the cause
/// chain (and the context each variant carries) survives.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// A user name was refused.
    #[error(transparent)]
    Name(#[from] NameError),
    /// A scope string was refused.
    #[error(transparent)]
    Scope(#[from] ScopeError),
    /// Password hashing or verification failed.
    #[error(transparent)]
    Password(#[from] PasswordError),
    /// A redirect target was refused.
    #[error(transparent)]
    Redirect(#[from] RedirectError),
    /// A state-changing request failed the CSRF check.
    #[error(transparent)]
    Csrf(#[from] CsrfRejection),
    /// The operating system could not supply random bytes.
    #[error(transparent)]
    Randomness(#[from] RandomnessError),
    /// An OpenID Connect login failed.
    #[error(transparent)]
    Oidc(#[from] OidcError),
    /// The database failed or refused an operation.
    #[error(transparent)]
    Store(#[from] StoreError),
}
