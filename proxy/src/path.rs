//! Path safety: the one reading of a request path that is both routed and forwarded.
//!
//! A proxy that routes on a normalised path but forwards the raw one lets
//! `/user/bob/%2e%2e/alice/x` reach alice's server through bob's route (configurable-http-proxy
//! does exactly this). gantry refuses to guess: any path whose meaning could change under
//! normalisation — dot segments (raw or encoded), encoded slashes or backslashes, raw backslashes,
//! empty segments, double encodings of those, control characters, broken escapes or bytes that
//! are not UTF-8 — is rejected before routing. What is left decodes segment by segment without
//! changing where the segment boundaries are, so routing on the decoded form and forwarding the
//! raw form name the same resource.

use std::borrow::Cow;

#[cfg(test)]
mod tests;

/// Why a request path was refused. Every variant is answered `400 Bad Request`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path does not start with `/` (asterisk-form or an empty path).
    #[error("the path must start with '/'")]
    NotAbsolute,
    /// A `%` not followed by two hex digits.
    #[error("the path holds a malformed percent-escape")]
    BadEscape,
    /// A `.` or `..` segment, raw or percent-encoded.
    #[error("the path holds a dot segment")]
    DotSegment,
    /// `%2F`: a slash inside a segment would be a segment boundary to some servers.
    #[error("the path holds an encoded slash")]
    EncodedSlash,
    /// A raw `\` or `%5C`: some servers treat it as a slash.
    #[error("the path holds a backslash")]
    Backslash,
    /// `//` before the last segment: servers that merge slashes would see another route.
    #[error("the path holds an empty segment")]
    EmptySegment,
    /// An encoding of `%2E`, `%2F` or `%5C` (such as `%252e`) that a second decode would turn
    /// into one of the above.
    #[error("the path holds a double-encoded dot, slash or backslash")]
    DoubleEncoded,
    /// A control character, raw or encoded (`%00`-`%1F`, `%7F`).
    #[error("the path holds a control character")]
    ControlCharacter,
    /// The decoded path is not UTF-8.
    #[error("the path does not decode to UTF-8")]
    NotUtf8,
}

/// Checks a raw request path (without the query) and returns its decoded form, the key that
/// routing uses. Borrowed when the path holds no escapes, which is the common case.
///
/// A trailing slash is kept: `/user/alice/` and `/user/alice` decode to themselves and both
/// route to the route `/user/alice`.
pub fn canonical_path(raw: &str) -> Result<Cow<'_, str>, PathError> {
    let Some(rest) = raw.strip_prefix('/') else {
        return Err(PathError::NotAbsolute);
    };
    let mut segments = rest.split('/').peekable();
    let mut any_escape = false;
    while let Some(segment) = segments.next() {
        let is_last = segments.peek().is_none();
        if segment.is_empty() && !is_last {
            return Err(PathError::EmptySegment);
        }
        any_escape |= check_segment(segment)?;
    }
    if !any_escape {
        return Ok(Cow::Borrowed(raw));
    }
    // Every escape was checked above: none decodes to '/', so decoding keeps segment boundaries.
    percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map(|decoded| Cow::Owned(decoded.into_owned()))
        .map_err(|_| PathError::NotUtf8)
}

/// Validates one segment (the text between two raw slashes). Returns whether it holds an escape.
fn check_segment(segment: &str) -> Result<bool, PathError> {
    let bytes = segment.as_bytes();
    let mut has_escape = false;
    // Decoded length and content, tracked only as far as a dot segment needs (at most 2 bytes).
    let mut dots = 0usize;
    let mut decoded_len = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        let value = match bytes[i] {
            b'%' => {
                let (Some(hi), Some(lo)) = (
                    bytes.get(i + 1).copied().and_then(hex),
                    bytes.get(i + 2).copied().and_then(hex),
                ) else {
                    return Err(PathError::BadEscape);
                };
                has_escape = true;
                i += 3;
                (hi << 4) | lo
            }
            byte => {
                i += 1;
                byte
            }
        };
        match value {
            b'/' => return Err(PathError::EncodedSlash),
            b'\\' => return Err(PathError::Backslash),
            0x00..=0x1f | 0x7f => return Err(PathError::ControlCharacter),
            b'.' => dots += 1,
            _ => {}
        }
        decoded_len += 1;
    }
    if decoded_len > 0 && decoded_len <= 2 && dots == decoded_len {
        return Err(PathError::DotSegment);
    }
    if has_escape {
        let decoded: Vec<u8> = percent_encoding::percent_decode(bytes).collect();
        let double = decoded
            .iter()
            .enumerate()
            .any(|(at, byte)| *byte == b'%' && is_dangerous_escape(&decoded[at + 1..]));
        if double {
            return Err(PathError::DoubleEncoded);
        }
    }
    Ok(has_escape)
}

/// Whether the text after a decoded `%` reads as an escape of `.`, `/` or `\` (or of `%`
/// again), which a second decode would turn into something that changes the route.
fn is_dangerous_escape(rest: &[u8]) -> bool {
    match rest {
        [a, b, ..] => {
            let pair = [a.to_ascii_lowercase(), b.to_ascii_lowercase()];
            matches!(&pair, b"2e" | b"2f" | b"5c" | b"25")
        }
        _ => false,
    }
}

fn hex(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}
