//! User names: one account per person, however the name is typed.
//!
//! A [`UserName`] is parsed once at the edge (login form, API path, OpenID claim, scope string)
//! and is then known to be normalised and safe to use as one URL path segment:
//!
//! 1. Unicode NFKC, so compatibility forms collapse: fullwidth `Ａｌｉｃｅ` is `Alice`, the
//!    ligature `ﬁ` is `fi`, an ideographic space is a space.
//! 2. Leading and trailing whitespace is trimmed.
//! 3. With [`NamePolicy::case_fold`] (the default, as JupyterHub's `normalize_username`),
//!    [`str::to_lowercase`] and NFKC again. This is Unicode's locale-independent full lowercase
//!    mapping, not full case folding: `ß` stays `ß` rather than becoming `ss`, and the Turkish
//!    dotted `İ` becomes `i̇` (with a combining dot). Lowercase is what JupyterHub does and what
//!    people expect to see; full folding would turn names into something their owners never
//!    typed.
//! 4. Steps 2 and 3 repeat until nothing changes (at most a few rounds; a name that does not
//!    settle is refused), so parsing a parsed name returns it unchanged.
//!
//! The result must be 1 to [`MAX_NAME_BYTES`] bytes of UTF-8, must not be `.` or `..` (a dot
//! path segment), and every character must be
//!
//! * a Unicode letter or digit ([`char::is_alphanumeric`]) or combining mark, so `秀樹`,
//!   `zoë` and `50fia` are names; or
//! * one of `-` `_` `.` `@` `~` `+`, so e-mail-like names (`has@`, `a+b@example.org`) and
//!   `~TestJH` are names.
//!
//! Everything else is refused: control and format characters, whitespace inside the name,
//! `/` and `\` (segment separators), `%` (it would read as an escape), `?` `#` `&` `=` `;` `:`
//! `,` quotes and `<>` (URL delimiters and HTML/shell metacharacters). This is stricter than
//! JupyterHub, which accepts nearly anything and escapes later; a name that is a safe path
//! segment by construction cannot be mis-escaped. Container and volume names are still the
//! spawner's job to escape (injectively, with a hash suffix), since Docker allows fewer
//! characters still. Look-alike letters from different scripts (Latin `a`, Cyrillic `а`) are
//! different names: confusable detection (Unicode TS #39) is not done here.

use std::fmt;

use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

#[cfg(test)]
mod tests;

/// The longest user name, in bytes of UTF-8 after normalisation.
pub const MAX_NAME_BYTES: usize = 255;

/// Input longer than this many bytes is refused before normalisation does any work on it.
/// NFKC can lengthen a string, so this is looser than [`MAX_NAME_BYTES`].
const MAX_INPUT_BYTES: usize = 4 * MAX_NAME_BYTES;

/// How many rounds of trim/lowercase/NFKC a name gets to reach a fixed point.
const MAX_ROUNDS: usize = 4;

/// How user names are normalised.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NamePolicy {
    /// Lowercase names after NFKC, so `Alice` and `alice` are one account. Default: `true`.
    pub case_fold: bool,
}

impl Default for NamePolicy {
    fn default() -> Self {
        Self { case_fold: true }
    }
}

/// A normalised, validated user name. See the [module documentation](crate::names) for the rules.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UserName(String);

impl UserName {
    /// Normalises `raw` under `policy` and checks the result.
    ///
    /// # Errors
    ///
    /// [`NameError`] says which rule the name breaks.
    pub fn parse(raw: &str, policy: NamePolicy) -> Result<Self, NameError> {
        if raw.len() > MAX_INPUT_BYTES {
            return Err(NameError::TooLong { len: raw.len() });
        }
        let name = normalise(raw, policy).ok_or(NameError::Unstable)?;
        validate(&name)?;
        Ok(Self(name))
    }

    /// Accepts a name read back from storage, which was normalised when it was written.
    ///
    /// The name must already be in normal form (NFKC, trimmed) and valid; case is left as it
    /// is, so names stored before case folding was switched on still load.
    pub(crate) fn from_stored(stored: String) -> Result<Self, NameError> {
        let parsed = Self::parse(&stored, NamePolicy { case_fold: false })?;
        if parsed.0 == stored {
            Ok(parsed)
        } else {
            Err(NameError::NotNormalised)
        }
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for UserName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for UserName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// Why a user name was refused.
///
/// Messages quote at most the one offending character, escaped, so a hostile name cannot forge
/// log lines.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Nothing was left after trimming.
    #[error("the user name is empty")]
    Empty,
    /// Too many bytes, before or after normalisation.
    #[error("the user name is {len} bytes long; the limit is {MAX_NAME_BYTES}")]
    TooLong {
        /// The length seen, in bytes.
        len: usize,
    },
    /// A character outside the allowed set.
    #[error("the user name contains {ch:?}, which is not allowed in user names")]
    ForbiddenChar {
        /// The first offending character.
        ch: char,
    },
    /// `.` or `..`, which are path segments with a meaning of their own.
    #[error("the user name may not be `.` or `..`")]
    DotSegment,
    /// Normalisation did not reach a fixed point.
    #[error("the user name does not have a stable normal form")]
    Unstable,
    /// A stored name is not in normal form (the database was edited by hand?).
    #[error("the stored user name is not in normal form")]
    NotNormalised,
}

/// NFKC, then trim/lowercase/NFKC rounds until a fixed point; `None` if none is reached.
fn normalise(raw: &str, policy: NamePolicy) -> Option<String> {
    let mut current: String = raw.nfkc().collect();
    for _ in 0..MAX_ROUNDS {
        let trimmed = current.trim();
        let next: String = if policy.case_fold {
            trimmed.to_lowercase().nfkc().collect()
        } else {
            trimmed.nfkc().collect()
        };
        if next == current {
            return Some(current);
        }
        current = next;
    }
    None
}

fn validate(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(NameError::TooLong { len: name.len() });
    }
    if let Some(ch) = name.chars().find(|&c| !allowed_char(c)) {
        return Err(NameError::ForbiddenChar { ch });
    }
    if name == "." || name == ".." {
        return Err(NameError::DotSegment);
    }
    Ok(())
}

/// The allowed set, as documented at the top of the module.
fn allowed_char(c: char) -> bool {
    c.is_alphanumeric() || is_combining_mark(c) || matches!(c, '-' | '_' | '.' | '@' | '~' | '+')
}
