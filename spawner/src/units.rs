//! Parsers for the human-written quantities in profiles: sizes, durations, CPU counts.
//!
//! Each returns `None` on bad input; the caller knows the key and writes the message.

use std::time::Duration;

#[cfg(test)]
mod tests;

/// Parses a size as `docker run --memory` does (go-units `RAMInBytes`): a decimal number, an
/// optional space, then an optional unit `k`, `m`, `g`, `t` or `p` (any case, optionally
/// followed by `i` and/or `b`). Units are binary: `4G` = 4 × 2³⁰ bytes; no unit means bytes.
/// `1.5G` is allowed and rounds to the nearest byte. The result must fit in an `i64`, the
/// engine's type.
pub(crate) fn parse_bytes(text: &str) -> Option<i64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let unit = unit.strip_prefix(' ').unwrap_or(unit).to_ascii_lowercase();
    let unit = unit.strip_suffix('b').unwrap_or(&unit);
    let unit = unit.strip_suffix('i').unwrap_or(unit);
    let shift: u32 = match unit {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        "p" => 50,
        _ => return None,
    };
    if number.is_empty() || number.starts_with('.') || number.ends_with('.') {
        return None;
    }
    let multiplier = 1u128 << shift;
    let bytes: u128 = if number.contains('.') {
        let value: f64 = number.parse().ok()?;
        let bytes = (value * multiplier as f64).round();
        if !bytes.is_finite() || bytes > i64::MAX as f64 {
            return None;
        }
        // In range and finite, checked above.
        bytes as u128
    } else {
        number.parse::<u128>().ok()?.checked_mul(multiplier)?
    };
    i64::try_from(bytes).ok()
}

/// Parses a duration: a whole number followed by `s`, `m`, `h` or `d` (seconds, minutes,
/// hours, days), optionally with a space between: `90s`, `30m`, `12h`, `7d`. A unit is
/// required, so that nobody has to guess whether `3600` means seconds or milliseconds.
pub(crate) fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let unit = unit.trim_start();
    let seconds_per: u64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    };
    let n: u64 = number.parse().ok()?;
    Some(Duration::from_secs(n.checked_mul(seconds_per)?))
}

/// The least CPU share Docker accepts (`--cpus 0.01`).
pub(crate) const MIN_CPUS: f64 = 0.01;
/// A ceiling that catches typos (`cpu_limit = 4000` for 4 CPUs); no host has more.
pub(crate) const MAX_CPUS: f64 = 4096.0;

/// Turns a CPU count (`2.5`) into the engine's nano-CPUs (`2_500_000_000`), if it is finite and
/// between [`MIN_CPUS`] and [`MAX_CPUS`].
pub(crate) fn cpus_to_nano(cpus: f64) -> Option<i64> {
    if cpus.is_finite() && (MIN_CPUS..=MAX_CPUS).contains(&cpus) {
        // At most 4096e9, well inside i64.
        Some((cpus * 1e9).round() as i64)
    } else {
        None
    }
}
