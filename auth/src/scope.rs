//! What an API token may do: scopes, and the pure checks on them.
//!
//! A token carries a set of [`Scopes`], written as space-separated strings as in JupyterHub:
//!
//! | scope                      | lets the token                                             |
//! |----------------------------|------------------------------------------------------------|
//! | `admin`                    | do anything, including managing other users               |
//! | `self`                     | act as its owner: the owner's account, tokens and servers |
//! | `access:servers!user=NAME` | reach NAME's notebook servers through the proxy            |
//! | `read:metrics`             | read the Prometheus metrics                                |
//!
//! A token never does more than its owner may do now: every check intersects the token's scopes
//! with the owner's current rights ([`Owner`]), so demoting an admin takes the power from their
//! tokens at once, as JupyterHub intersects token scopes with the owner's roles. A non-admin
//! owner may act as themself and reach their own servers, nothing else; `admin` and
//! `read:metrics` need an admin owner (a metrics scraper's token is made by an admin and
//! carries only `read:metrics`). [`Scope::grantable_by`] is the matching rule for creating
//! tokens: nobody may grant a scope they do not hold.

use std::fmt;

use crate::names::{NameError, NamePolicy, UserName};

#[cfg(test)]
mod tests;

/// Scope strings longer than this are refused unread (a user name is at most 255 bytes).
const MAX_SCOPE_BYTES: usize = 512;

/// How much of a refused scope string an error message quotes.
const QUOTE_CHARS: usize = 64;

/// The prefix of the per-user server access scope.
const ACCESS_SERVERS_USER: &str = "access:servers!user=";

/// One permission a token can carry.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// `admin`: everything, while the owner is an admin.
    Admin,
    /// `self`: whatever the owner may do as themself.
    SelfUser,
    /// `access:servers!user=NAME`: reach NAME's notebook servers.
    AccessServers(UserName),
    /// `read:metrics`: read the Prometheus metrics.
    ReadMetrics,
}

/// The user a token belongs to, as they are now.
#[derive(Clone, Copy, Debug)]
pub struct Owner<'a> {
    /// The owner's name.
    pub name: &'a UserName,
    /// Whether the owner is an admin now.
    pub admin: bool,
}

/// Something a request wants to do, to be checked against a token's scopes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action<'a> {
    /// An admin-only operation: managing users, other users' tokens or servers.
    Admin,
    /// An operation on this user's own account: their model, tokens, starting and stopping
    /// their servers.
    ActAs(&'a UserName),
    /// Reaching this user's notebook servers through the proxy.
    AccessServer(&'a UserName),
    /// Reading the Prometheus metrics.
    ReadMetrics,
}

impl Scope {
    /// Parses one scope string. The user name in `access:servers!user=NAME` is normalised
    /// under `policy`, like every other user name.
    ///
    /// # Errors
    ///
    /// [`ScopeError`] for an unknown scope or a bad user name.
    pub fn parse(s: &str, policy: NamePolicy) -> Result<Self, ScopeError> {
        if s.len() > MAX_SCOPE_BYTES {
            return Err(ScopeError::Unknown { quoted: quote(s) });
        }
        match s {
            "admin" => Ok(Self::Admin),
            "self" => Ok(Self::SelfUser),
            "read:metrics" => Ok(Self::ReadMetrics),
            "access:servers" => Err(ScopeError::MissingUser),
            _ => match s.strip_prefix(ACCESS_SERVERS_USER) {
                Some(name) => UserName::parse(name, policy)
                    .map(Self::AccessServers)
                    .map_err(|source| ScopeError::BadUser { source }),
                None => Err(ScopeError::Unknown { quoted: quote(s) }),
            },
        }
    }

    /// Whether a token with this scope, owned by `owner`, may do `action`.
    pub fn permits(&self, owner: Owner<'_>, action: Action<'_>) -> bool {
        self.covers(owner, action) && owner_may(owner, action)
    }

    /// Whether `owner` may create a token carrying this scope.
    pub fn grantable_by(&self, owner: Owner<'_>) -> bool {
        match self {
            Self::Admin | Self::ReadMetrics => owner.admin,
            Self::SelfUser => true,
            Self::AccessServers(user) => owner.admin || user == owner.name,
        }
    }

    /// Whether a credential holding this scope, owned by `holder`, holds `wanted` too: the
    /// rule for minting, where a new token may carry only what the requesting credential
    /// holds (JupyterHub's subset rule). `admin` holds everything while its owner is an admin;
    /// `self` holds `self` and access to the holder's own servers; any other scope holds
    /// itself only.
    pub fn holds(&self, wanted: &Scope, holder: Owner<'_>) -> bool {
        match (self, wanted) {
            (Self::Admin, _) => holder.admin,
            (Self::SelfUser, Self::AccessServers(user)) => user == holder.name,
            (held, wanted) => held == wanted,
        }
    }

    /// What the scope itself names, before the owner's rights cap it.
    fn covers(&self, owner: Owner<'_>, action: Action<'_>) -> bool {
        match (self, action) {
            (Self::Admin, _) => true,
            (Self::SelfUser, Action::ActAs(user) | Action::AccessServer(user)) => {
                user == owner.name
            }
            (Self::AccessServers(allowed), Action::AccessServer(user)) => allowed == user,
            (Self::ReadMetrics, Action::ReadMetrics) => true,
            _ => false,
        }
    }
}

/// What the owner may do themself; every token is capped by it.
fn owner_may(owner: Owner<'_>, action: Action<'_>) -> bool {
    owner.admin
        || match action {
            Action::ActAs(user) | Action::AccessServer(user) => user == owner.name,
            Action::Admin | Action::ReadMetrics => false,
        }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Admin => f.write_str("admin"),
            Self::SelfUser => f.write_str("self"),
            Self::AccessServers(user) => write!(f, "{ACCESS_SERVERS_USER}{user}"),
            Self::ReadMetrics => f.write_str("read:metrics"),
        }
    }
}

/// A token's set of scopes: sorted, without duplicates. May be empty (a token that can do
/// nothing).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Scopes(Vec<Scope>);

impl Scopes {
    /// Collects scopes, sorting them and dropping duplicates.
    pub fn new(scopes: impl IntoIterator<Item = Scope>) -> Self {
        let mut scopes: Vec<Scope> = scopes.into_iter().collect();
        scopes.sort();
        scopes.dedup();
        Self(scopes)
    }

    /// Parses space-separated scope strings (the stored form, and JupyterHub's token page).
    ///
    /// # Errors
    ///
    /// The first [`ScopeError`].
    pub fn parse(s: &str, policy: NamePolicy) -> Result<Self, ScopeError> {
        s.split_ascii_whitespace()
            .map(|one| Scope::parse(one, policy))
            .collect::<Result<Vec<_>, _>>()
            .map(Self::new)
    }

    /// The scopes, sorted.
    pub fn iter(&self) -> impl Iterator<Item = &Scope> {
        self.0.iter()
    }

    /// Whether there are no scopes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether any scope lets a token owned by `owner` do `action`.
    pub fn permits(&self, owner: Owner<'_>, action: Action<'_>) -> bool {
        self.0.iter().any(|scope| scope.permits(owner, action))
    }

    /// The first scope of `wanted` that a credential with these scopes, owned by `holder`,
    /// does not hold ([`Scope::holds`]); `None` when it holds them all.
    pub fn first_not_held<'w>(&self, wanted: &'w Scopes, holder: Owner<'_>) -> Option<&'w Scope> {
        wanted
            .iter()
            .find(|want| !self.0.iter().any(|held| held.holds(want, holder)))
    }

    /// Whether `owner` may grant every one of these scopes.
    pub fn grantable_by(&self, owner: Owner<'_>) -> bool {
        self.0.iter().all(|scope| scope.grantable_by(owner))
    }
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, scope) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            fmt::Display::fmt(scope, f)?;
        }
        Ok(())
    }
}

/// Why a scope string was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    /// Not one of the known scopes.
    #[error(
        "unknown scope {quoted}; known scopes are `admin`, `self`, \
         `access:servers!user=NAME` and `read:metrics`"
    )]
    Unknown {
        /// The scope as given: escaped, and cut short if long.
        quoted: String,
    },
    /// `access:servers` without the `!user=NAME` filter.
    #[error("`access:servers` needs a user: write `access:servers!user=NAME`")]
    MissingUser,
    /// The user name in `access:servers!user=NAME` was refused.
    #[error("bad user name in `access:servers!user=NAME`")]
    BadUser {
        /// Why the name was refused.
        #[source]
        source: NameError,
    },
}

/// Quotes untrusted text for an error message: escaped, at most [`QUOTE_CHARS`] characters.
fn quote(s: &str) -> String {
    let cut: String = s.chars().take(QUOTE_CHARS).collect();
    let ellipsis = if cut.len() < s.len() { "…" } else { "" };
    format!("{cut:?}{ellipsis}")
}
