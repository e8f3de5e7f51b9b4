//! Names the spawner parses once and then trusts: server names, profile ids, the instance
//! prefix, container names; and [`Identity`], the plain description of a user it is handed.
//!
//! The spawner never depends on the `auth` crate. The composing binary turns an authenticated
//! user into an [`Identity`] (a name, groups and, when known, a UID and GID) and passes it in.
//!
//! Every name derived from (user, server) comes from here: container names, named volumes'
//! names ([`volume_name`]), OAuth client ids ([`oauth_client_id`]) and URL path segments
//! ([`url_path_segment`]); each is injective by construction, as its documentation shows.
//!
//! # Container names
//!
//! Docker container names must match `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, while user names may hold
//! `@`, `+`, `~` or any Unicode letter. [`container_name`] therefore escapes them, as
//! dockerspawner 12 does after its own name-collision bug (`user--foo` against user `user`,
//! server `foo`):
//!
//! ```text
//! <instance>-<escape(user)>[-<escape(server)>]-<hash>
//! ```
//!
//! * [`escape_component`] keeps `a-z` and `0-9` and writes every other byte of the UTF-8 as
//!   `_` plus two lowercase hex digits (`Alice@x` → `_41lice_40x`). `_` only ever starts an
//!   escape and `-` never appears in an escaped part, so the instance prefix (fixed per
//!   gantry) is followed by fields that split at `-` in exactly one way: the mapping from
//!   (user, server) to the name is injective by construction, not by luck of a hash.
//! * The default server (empty name) has no server field, so `(a, "")` and `(a, b)` differ
//!   in their number of fields.
//! * `<hash>` is the first 8 hex digits of SHA-256 over `user`, a NUL byte and `server`. It
//!   adds no uniqueness the escaped part lacks; it gives each server a short stable key that
//!   fits where names must be short (a 63-byte hostname or DNS label) and keeps names apart at
//!   a glance.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

#[cfg(test)]
mod tests;

/// The longest server name, profile id or instance prefix, in bytes (a DNS label's limit).
pub const MAX_SLUG_LEN: usize = 63;

/// A name the spawner refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// A server name was not empty and not a slug.
    #[error(
        "server name {0:?} is not valid: use 1 to 63 lowercase letters, digits, '-', '_' or \
         '.', starting with a letter or digit (or the empty name for the default server)"
    )]
    ServerName(String),
    /// A profile id was not a slug.
    #[error(
        "profile id {0:?} is not valid: use 1 to 63 lowercase letters, digits, '-' or '_', \
         starting with a letter or digit"
    )]
    ProfileId(String),
    /// An instance prefix was not a slug.
    #[error(
        "instance name {0:?} is not valid: use 1 to 32 lowercase letters, digits or '-', \
         starting with a letter or digit"
    )]
    Instance(String),
}

/// Whether `s` is 1 to `max` bytes, starts with `a-z`/`0-9` and continues with those or
/// `extra` bytes.
fn is_slug(s: &str, max: usize, extra: &[u8]) -> bool {
    let bytes = s.as_bytes();
    match bytes.split_first() {
        None => false,
        Some((first, rest)) => {
            bytes.len() <= max
                && (first.is_ascii_lowercase() || first.is_ascii_digit())
                && rest
                    .iter()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || extra.contains(b))
        }
    }
}

/// A user's server name: empty for the default server, otherwise a slug of 1 to 63 bytes of
/// `a-z`, `0-9`, `-`, `_`, `.`, starting with a letter or digit.
///
/// Upper case is refused rather than folded so that a URL and the container it names agree
/// without a normalisation step.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServerName(String);

impl ServerName {
    /// The user's default (unnamed) server.
    pub fn default_server() -> Self {
        Self(String::new())
    }

    /// Parses a server name; `""` is the default server.
    pub fn new(name: &str) -> Result<Self, NameError> {
        if name.is_empty() || is_slug(name, MAX_SLUG_LEN, b"-_.") {
            Ok(Self(name.to_owned()))
        } else {
            Err(NameError::ServerName(name.to_owned()))
        }
    }

    /// The name; empty for the default server.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is the user's default server.
    pub fn is_default(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromStr for ServerName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl fmt::Display for ServerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The id of an admin-defined profile: the key under `[profiles]` in the configuration, 1 to 63
/// bytes of `a-z`, `0-9`, `-`, `_`, starting with a letter or digit.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProfileId(String);

impl ProfileId {
    /// Parses a profile id.
    pub fn new(id: &str) -> Result<Self, NameError> {
        if is_slug(id, MAX_SLUG_LEN, b"-_") {
            Ok(Self(id.to_owned()))
        } else {
            Err(NameError::ProfileId(id.to_owned()))
        }
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ProfileId {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl fmt::Display for ProfileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The name of one gantry installation on an engine: the prefix of its container names and the
/// value of its `gantry.instance` label, so two gantries can share a Docker host without
/// adopting each other's containers. 1 to 32 bytes of `a-z`, `0-9`, `-`, starting with a
/// letter or digit.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instance(String);

/// The longest instance name, in bytes; it leaves room in a 63-byte label for the hash.
pub const MAX_INSTANCE_LEN: usize = 32;

impl Instance {
    /// Parses an instance name.
    pub fn new(name: &str) -> Result<Self, NameError> {
        if is_slug(name, MAX_INSTANCE_LEN, b"-") {
            Ok(Self(name.to_owned()))
        } else {
            Err(NameError::Instance(name.to_owned()))
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for Instance {
    /// `gantry`.
    fn default() -> Self {
        Self("gantry".to_owned())
    }
}

impl fmt::Display for Instance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Who a server is for, as the composing binary knows it. Plain values: the spawner does not
/// depend on the `auth` crate and trusts the binary to have authenticated the user.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    /// The user's normalised name, as the hub routes it (`/user/<user>/`).
    pub user: String,
    /// The groups the user belongs to; they decide which profiles the user may start.
    pub groups: Vec<String>,
    /// The user's numeric user id, when a directory (LDAP, an OpenID claim, the admin) knows
    /// it. With it the container runs as this user; without it, as the image's default user.
    pub uid: Option<u32>,
    /// The user's primary numeric group id; when `uid` is known and this is not, the
    /// docker-stacks default, 100 (`users`), is used.
    pub gid: Option<u32>,
}

impl Identity {
    /// An identity with a name only: no groups, unknown UID and GID.
    pub fn new(user: impl Into<String>) -> Self {
        Self {
            user: user.into(),
            ..Self::default()
        }
    }
}

/// Escapes one name component into `[a-z0-9_]*`, injectively: `a-z` and `0-9` stay, every
/// other byte of the UTF-8 becomes `_` and two lowercase hex digits.
pub fn escape_component(s: &str) -> String {
    use fmt::Write as _;
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_lowercase() || b.is_ascii_digit() {
            out.push(char::from(b));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(out, "_{b:02x}");
        }
    }
    out
}

/// Reverses [`escape_component`]; `None` for text it never writes (so a value has one
/// reading at most).
pub fn unescape_component(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b.is_ascii_lowercase() || b.is_ascii_digit() {
            out.push(b);
            i += 1;
        } else if b == b'_' {
            let hex = s.get(i + 1..i + 3)?;
            if !hex
                .bytes()
                .all(|h| h.is_ascii_digit() || (b'a'..=b'f').contains(&h))
            {
                return None;
            }
            let v = u8::from_str_radix(hex, 16).ok()?;
            // The escape is only ever written for bytes other than a-z and 0-9.
            if v.is_ascii_lowercase() || v.is_ascii_digit() {
                return None;
            }
            out.push(v);
            i += 3;
        } else {
            return None;
        }
    }
    String::from_utf8(out).ok()
}

/// The longest value a placeholder of a volume name takes, in bytes: with the literal text
/// around it, a name stays well inside the 255 bytes a file name (a volume's directory) may
/// have, whatever the user name.
pub const MAX_VALUE_LEN: usize = 96;

/// The value of `{username}` or `{servername}` in a named volume's name: [`escape_component`]
/// of `s`, so in `[a-z0-9_]` and injective; one longer than [`MAX_VALUE_LEN`] is cut at an
/// escape's boundary and ends in `__` and 16 hex digits of SHA-256 over `s`. An escape never
/// writes `__` (`_` is always followed by a hex digit), so a cut value differs from every
/// whole one, and cut values differ by their 64-bit hash.
pub fn volume_value(s: &str) -> String {
    let escaped = escape_component(s);
    if escaped.len() <= MAX_VALUE_LEN {
        return escaped;
    }
    let room = MAX_VALUE_LEN - 2 - 16;
    let bytes = escaped.as_bytes();
    let mut end = 0;
    while end < bytes.len() {
        let step = if bytes[end] == b'_' { 3 } else { 1 };
        if end + step > room {
            break;
        }
        end += step;
    }
    let digest = Sha256::digest(s.as_bytes());
    let hash: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("{}__{hash}", &escaped[..end])
}

/// The name of the named volume `source` gives `user`'s server `server`: both placeholders
/// filled with [`volume_value`]. With the rule profiles are checked by
/// ([`crate::profile::Template::sharing_problem`]: `{servername}` only with `{username}`, and
/// placeholders apart by a `-` or `.`), no two (user, server) pairs get one name.
pub fn volume_name(source: &crate::profile::Template, user: &str, server: &ServerName) -> String {
    source.render(&volume_value(user), &volume_value(server.as_str()))
}

/// The name `source` gave the volume before [`volume_name`] (gantry 0.1: the user escaped,
/// the server name as it is), which two pairs could share; see
/// [`crate::profile::Template::legacy_readings`].
pub fn legacy_volume_name(
    source: &crate::profile::Template,
    user: &str,
    server: &ServerName,
) -> String {
    source.render(&escape_component(user), server.as_str())
}

/// The characters of a user name a URL path carries as they are: ASCII letters and digits and
/// `-` `_` `.` `~` `@` `+` (JupyterHub's `url_escape_path` keeps `@` and `~`; `+` is literal
/// in a path). Everything else, every non-ASCII letter included, is percent-encoded.
const PATH_KEEP: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'@')
    .remove(b'+');

/// A user name as one URL path segment, as JupyterHub writes it: `ü` is `%C3%BC`, `alice`
/// stays `alice`.
pub fn url_path_segment(user: &str) -> String {
    percent_encoding::utf8_percent_encode(user, PATH_KEEP).collect()
}

/// The characters of a user name an OAuth client id carries as they are: ASCII letters,
/// digits, `_`, `.` and `~`; not `-`, which separates the id's fields.
const CLIENT_ID_KEEP: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// A server's OAuth client id, in JupyterHub's layout: `jupyterhub-user-<user>` for the
/// default server, `jupyterhub-user-<user>-<server>` for a named one. The user name is
/// percent-encoded except for ASCII letters, digits, `_`, `.` and `~`, so it holds no `-` and
/// the first `-` after the prefix always ends it: ids are unique per (user, server) (user
/// `alice-x`'s default server and alice's server `x` do not share one), and they are valid
/// cookie names (`jupyterhub-singleuser` names its cookie after its client id). Server names
/// are slugs already. Names of ASCII letters, digits, `_` and `.` keep JupyterHub's ids.
pub fn oauth_client_id(user: &str, server: &ServerName) -> String {
    client_id_layout(
        percent_encoding::utf8_percent_encode(user, CLIENT_ID_KEEP),
        server,
    )
}

/// The client id releases before 0.2 gave a server, unescaped: what a server adopted after
/// the upgrade still presents. Two servers may share it.
pub fn legacy_oauth_client_id(user: &str, server: &ServerName) -> String {
    client_id_layout(user, server)
}

/// `jupyterhub-user-<user>[-<server>]`, with `user` as the caller wrote it.
fn client_id_layout(user: impl fmt::Display, server: &ServerName) -> String {
    if server.is_default() {
        format!("jupyterhub-user-{user}")
    } else {
        format!("jupyterhub-user-{user}-{}", server.as_str())
    }
}

/// The first 8 hex digits of SHA-256 over `user`, a NUL byte and `server`: a short, stable
/// key for one server. NUL cannot occur in either part, so the input splits one way only.
pub fn server_hash(user: &str, server: &ServerName) -> String {
    let mut hasher = Sha256::new();
    hasher.update(user.as_bytes());
    hasher.update([0u8]);
    hasher.update(server.as_str().as_bytes());
    let digest = hasher.finalize();
    digest.iter().take(4).map(|b| format!("{b:02x}")).collect()
}

/// The Docker container name of `user`'s server `server` in gantry instance `instance`; see the
/// module documentation for the scheme and why it cannot collide.
pub fn container_name(instance: &Instance, user: &str, server: &ServerName) -> String {
    let mut name = format!("{instance}-{}", escape_component(user));
    if !server.is_default() {
        name.push('-');
        name.push_str(&escape_component(server.as_str()));
    }
    name.push('-');
    name.push_str(&server_hash(user, server));
    name
}
