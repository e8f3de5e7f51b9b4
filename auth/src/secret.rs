//! Random secrets (session ids, API tokens) and the form they are stored in.
//!
//! A secret is [`SECRET_BYTES`] (256 bits) from the operating system's random source, written
//! as lowercase hex: 64 characters that are safe in a cookie, a header and a URL, with no case
//! or padding ambiguity. The secret is handed to its owner once and never stored. The database
//! keeps its [`SecretHash`], the SHA-256 of the hex text, also in hex. A secret this long needs
//! no salt and no slow hash: nobody can guess or enumerate 2^256 inputs, so a stolen table of
//! hashes yields no usable secret, which is why JupyterHub, too, stores high-entropy tokens with
//! a fast hash.
//!
//! API tokens are found by their public prefix ([`PREFIX_LEN`] characters, like JupyterHub's
//! `prefix` column and GitHub's token prefixes): the database looks up the few rows with that
//! prefix, and the hashes are then compared in constant time with [`SecretHash::matches`], so
//! neither the index nor the comparison takes time that depends on how much of a guessed
//! secret is right. The prefix is also what a user sees in a token list to tell tokens apart.
//! Revealing it leaves 224 unknown bits.

use std::fmt;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

#[cfg(test)]
mod tests;

/// How many random bytes a secret has.
pub const SECRET_BYTES: usize = 32;

/// How many characters a secret's text has.
pub const SECRET_LEN: usize = 2 * SECRET_BYTES;

/// How many leading characters of a secret are its public lookup prefix.
pub const PREFIX_LEN: usize = 8;

/// A freshly generated secret. Its `Debug` output is redacted; [`Secret::expose`] is the only
/// way to read it, so that every place that hands it out is easy to find.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Draws a new secret from the operating system's random source.
    ///
    /// # Errors
    ///
    /// [`RandomnessError`] when the operating system cannot supply random bytes.
    pub fn generate() -> Result<Self, RandomnessError> {
        let mut bytes = [0_u8; SECRET_BYTES];
        fill_random(&mut bytes)?;
        Ok(Self(hex(&bytes)))
    }

    /// The secret's text, to hand to its owner once.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The public lookup prefix.
    pub fn prefix(&self) -> &str {
        &self.0[..PREFIX_LEN]
    }

    /// The stored form.
    pub fn hash(&self) -> SecretHash {
        SecretHash::of(&self.0)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({}…)", self.prefix())
    }
}

/// Whether `presented` has the shape of a [`Secret`]: exactly [`SECRET_LEN`] lowercase hex
/// digits. Anything else cannot be a secret of ours and needs no database lookup.
pub fn well_formed(presented: &str) -> bool {
    presented.len() == SECRET_LEN
        && presented
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The public lookup prefix of a presented secret, if it is [`well_formed`].
pub fn prefix_of(presented: &str) -> Option<&str> {
    well_formed(presented).then(|| &presented[..PREFIX_LEN])
}

/// The stored form of a secret: SHA-256 of its text, as lowercase hex.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SecretHash(String);

impl SecretHash {
    /// Hashes a secret's text, whether freshly generated or presented by a client.
    pub fn of(secret: &str) -> Self {
        Self(hex(&Sha256::digest(secret.as_bytes())))
    }

    /// Accepts a hash read back from storage.
    pub(crate) fn from_stored(stored: String) -> Option<Self> {
        well_formed(&stored).then_some(Self(stored))
    }

    /// The hash as hex text, for storage.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Compares two hashes in time that does not depend on where they differ.
    pub fn matches(&self, other: &SecretHash) -> bool {
        self.0.as_bytes().ct_eq(other.0.as_bytes()).into()
    }
}

impl fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretHash({}…)", &self.0[..PREFIX_LEN])
    }
}

/// A presented secret reduced to what a lookup needs: its public prefix and its SHA-256.
/// Caches key on this, so the secret itself is never kept once a request is answered. Held
/// inline (no allocation): it is made on every request that carries a credential.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SecretKey {
    prefix: [u8; PREFIX_LEN],
    digest: [u8; 32],
}

impl SecretKey {
    /// The key of a presented secret; `None` when it is not [`well_formed`] (no stored
    /// secret can match it).
    pub fn of(presented: &str) -> Option<Self> {
        let prefix = prefix_of(presented)?.as_bytes().try_into().ok()?;
        Some(Self {
            prefix,
            digest: Sha256::digest(presented.as_bytes()).into(),
        })
    }

    /// The public lookup prefix.
    pub fn prefix(&self) -> &str {
        // Hex digits, checked by `well_formed`.
        std::str::from_utf8(&self.prefix).unwrap_or_default()
    }

    /// The stored form of the hash.
    pub fn hash(&self) -> SecretHash {
        SecretHash(hex(&self.digest))
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey({}…)", self.prefix())
    }
}

/// The operating system could not supply random bytes.
#[derive(Debug, thiserror::Error)]
#[error("the operating system's random source failed")]
pub struct RandomnessError(#[source] getrandom::Error);

/// Fills `buf` from the operating system's random source.
pub(crate) fn fill_random(buf: &mut [u8]) -> Result<(), RandomnessError> {
    getrandom::fill(buf).map_err(RandomnessError)
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(2 * bytes.len());
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}
