//! Where a `next=` parameter may send the browser after login, logout or a spawn.
//!
//! Only a path on our own origin is accepted, written so that no browser can read it as
//! another host. Anything else becomes the configured default. The rules, for the value after
//! the query string was percent-decoded once:
//!
//! * it starts with `/`, and the second character (if any) is neither `/` nor `\`: `//evil`
//!   and `/\evil` are network paths to `evil` in browsers, and absolute URLs (`https://…`,
//!   `javascript:…`), even ones naming our own host, are refused outright (CVE-2019-10255,
//!   CVE-2026-33709);
//! * no control character, whitespace, `\`, quote, backtick or `<>` anywhere: browsers drop
//!   tabs and newlines from URLs and read `\` as `/`, so `/\t/evil` would be `//evil`;
//! * in the path part (before `?` or `#`) no empty segment (`/a//b`), no `.` or `..` segment,
//!   and no percent escape of `/`, `\`, `.`, `%` or a control character (`/%2F%2Fevil`,
//!   `/%5Cevil`, `/%2e%2e/`, `/%252F`); malformed escapes are refused too. Such paths are
//!   what the proxy answers 400 anyway, and refusing them means a redirect that is taken apart
//!   later (path extracted, prefix stripped) can never turn into `//evil`;
//! * at most [`MAX_REDIRECT_BYTES`] bytes.
//!
//! A query or fragment may contain anything else, including `://` and `//`
//! (`/hub/spawn?next=https://x` is fine). An accepted value is returned unchanged. The result
//! is a Location header value; HTML pages must still escape it when they render it.

use std::fmt;

#[cfg(test)]
mod tests;

/// The longest accepted redirect target, in bytes.
pub const MAX_REDIRECT_BYTES: usize = 2048;

/// A same-origin absolute path, safe to send as a `Location` header.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SafeRedirect(String);

impl SafeRedirect {
    /// Checks `target` against the rules in the [module documentation](crate::redirect).
    ///
    /// # Errors
    ///
    /// [`RedirectError`] names the first rule broken.
    pub fn parse(target: &str) -> Result<Self, RedirectError> {
        check(target)?;
        Ok(Self(target.to_owned()))
    }

    /// The target, for a `Location` header.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SafeRedirect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SafeRedirect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// `next` if it is a safe same-origin path, otherwise `default`.
///
/// `next` is the decoded query parameter (decoded exactly once, as form and query parsers do).
pub fn safe_next(next: &str, default: &SafeRedirect) -> SafeRedirect {
    SafeRedirect::parse(next).unwrap_or_else(|_| default.clone())
}

/// Why a redirect target was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RedirectError {
    /// The target is empty.
    #[error("the redirect target is empty")]
    Empty,
    /// The target is longer than [`MAX_REDIRECT_BYTES`].
    #[error("the redirect target is longer than {MAX_REDIRECT_BYTES} bytes")]
    TooLong,
    /// The target does not start with `/` (a relative path, or an absolute URL with a scheme).
    #[error("the redirect target is not an absolute path")]
    NotAPath,
    /// The target starts with `//` or `/\`, which browsers read as another host.
    #[error("the redirect target names another host")]
    NetworkPath,
    /// A character that is never part of a safe target.
    #[error("the redirect target contains {ch:?}")]
    ForbiddenChar {
        /// The first offending character.
        ch: char,
    },
    /// An empty path segment (`//`) after the first character.
    #[error("the redirect target's path has an empty segment")]
    EmptySegment,
    /// A `.` or `..` path segment.
    #[error("the redirect target's path has a dot segment")]
    DotSegment,
    /// A percent escape of `/`, `\`, `.`, `%` or a control character in the path.
    #[error("the redirect target's path has an encoded separator or control character")]
    EncodedSeparator,
    /// A `%` not followed by two hexadecimal digits in the path.
    #[error("the redirect target's path has a malformed percent escape")]
    BadEscape,
}

fn check(target: &str) -> Result<(), RedirectError> {
    if target.is_empty() {
        return Err(RedirectError::Empty);
    }
    if target.len() > MAX_REDIRECT_BYTES {
        return Err(RedirectError::TooLong);
    }
    if let Some(ch) = target.chars().find(|&c| forbidden_char(c)) {
        return Err(RedirectError::ForbiddenChar { ch });
    }
    let path_end = target.find(['?', '#']).unwrap_or(target.len());
    let path = &target[..path_end];
    let Some(rest) = path.strip_prefix('/') else {
        return Err(RedirectError::NotAPath);
    };
    // `\` was refused above, so only `//` is left to catch here.
    if rest.starts_with('/') {
        return Err(RedirectError::NetworkPath);
    }
    let segments: Vec<&str> = rest.split('/').collect();
    let last = segments.len() - 1;
    for (i, segment) in segments.iter().enumerate() {
        // A trailing slash leaves one empty last segment; `/` alone is one empty segment.
        if segment.is_empty() && i != last {
            return Err(RedirectError::EmptySegment);
        }
        if *segment == "." || *segment == ".." {
            return Err(RedirectError::DotSegment);
        }
    }
    check_escapes(path)
}

/// Characters refused anywhere in a target.
fn forbidden_char(c: char) -> bool {
    c.is_control() || c.is_whitespace() || matches!(c, '\\' | '"' | '\'' | '<' | '>' | '`')
}

fn check_escapes(path: &str) -> Result<(), RedirectError> {
    let bytes = path.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let (Some(&hi), Some(&lo)) = (bytes.get(i + 1), bytes.get(i + 2)) else {
                return Err(RedirectError::BadEscape);
            };
            let (Some(hi), Some(lo)) = (hex_value(hi), hex_value(lo)) else {
                return Err(RedirectError::BadEscape);
            };
            let byte = (hi << 4) | lo;
            if byte.is_ascii_control() || matches!(byte, b'/' | b'\\' | b'.' | b'%') {
                return Err(RedirectError::EncodedSeparator);
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    Ok(())
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}
