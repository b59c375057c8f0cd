//! Durations as Istio and the Gateway API write them: `10s`, `1.5s`, `250ms`,
//! `1m`, `1h30m` (Go's `time.ParseDuration` syntax, which also covers the
//! protobuf JSON form `1.5s`).

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// A non-negative duration read from a string such as `10s` or `250ms`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct IstioDuration(pub Duration);

impl IstioDuration {
    /// The parsed value.
    pub fn get(self) -> Duration {
        self.0
    }
}

impl From<Duration> for IstioDuration {
    fn from(d: Duration) -> Self {
        Self(d)
    }
}

impl From<IstioDuration> for Duration {
    fn from(d: IstioDuration) -> Self {
        d.0
    }
}

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: expected e.g. 10s, 250ms")]
pub struct DurationError {
    /// The string as written.
    pub input: String,
}

/// Parses `10s`, `1.5s`, `100ms`, `1m`, `1h30m`, `0`.
/// Units: ns, us (µs), ms, s, m, h. Negative durations are refused.
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let fail = || DurationError {
        input: input.to_owned(),
    };
    let s = input.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(fail());
    }
    let mut rest = s;
    let mut total_nanos: u128 = 0;
    // Each round consumes one `<number><unit>` term; the string shrinks every
    // time, so the loop ends.
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(fail)?;
        let (num, tail) = rest.split_at(num_len);
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let unit_nanos: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(fail()),
        };
        total_nanos = total_nanos
            .checked_add(term_nanos(num, unit_nanos).ok_or_else(fail)?)
            .ok_or_else(fail)?;
        rest = tail;
    }
    let secs = u64::try_from(total_nanos / 1_000_000_000).map_err(|_| fail())?;
    // The remainder is below 1e9, so it fits a u32.
    let nanos = u32::try_from(total_nanos % 1_000_000_000).map_err(|_| fail())?;
    Ok(Duration::new(secs, nanos))
}

/// `num` (digits with at most one `.`) times `unit_nanos`, exactly: no float
/// rounding, so `1.1s` is 1.1 s and not 1.0999999 s.
fn term_nanos(num: &str, unit_nanos: u128) -> Option<u128> {
    let (int, frac) = match num.split_once('.') {
        Some((i, f)) => (i, f),
        None => (num, ""),
    };
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    if frac.contains('.') {
        return None;
    }
    let int_val: u128 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let mut nanos = int_val.checked_mul(unit_nanos)?;
    // Digits past nanosecond precision are dropped, as Go does.
    let mut scale = unit_nanos;
    for digit in frac.chars() {
        let d = u128::from(digit.to_digit(10)?);
        scale /= 10;
        nanos = nanos.checked_add(d * scale)?;
    }
    Some(nanos)
}

/// Formats the way Istio users write it: `10s`, `1.5s`, `250ms`, `0s`.
pub fn format_duration(d: Duration) -> String {
    let nanos = d.subsec_nanos();
    if nanos == 0 {
        format!("{}s", d.as_secs())
    } else if nanos.is_multiple_of(1_000_000) && d.as_secs() == 0 {
        format!("{}ms", nanos / 1_000_000)
    } else {
        let frac = format!("{nanos:09}");
        format!("{}.{}s", d.as_secs(), frac.trim_end_matches('0'))
    }
}

impl fmt::Display for IstioDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_duration(self.0))
    }
}

impl std::str::FromStr for IstioDuration {
    type Err = DurationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_duration(s).map(Self)
    }
}

impl Serialize for IstioDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for IstioDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = IstioDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration string such as \"10s\" or \"250ms\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                parse_duration(v).map(IstioDuration).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(V)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn parses_istio_forms() {
        let ms = Duration::from_millis;
        assert_eq!(parse_duration("10s").unwrap(), ms(10_000));
        assert_eq!(parse_duration("1.5s").unwrap(), ms(1_500));
        assert_eq!(parse_duration("100ms").unwrap(), ms(100));
        assert_eq!(parse_duration("1m").unwrap(), ms(60_000));
        assert_eq!(parse_duration("1h").unwrap(), ms(3_600_000));
        assert_eq!(parse_duration("1h30m").unwrap(), ms(5_400_000));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("0s").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("1.1s").unwrap(), ms(1_100));
        assert_eq!(parse_duration("250us").unwrap(), Duration::from_micros(250));
        assert_eq!(parse_duration(".5s").unwrap(), ms(500));
    }

    #[test]
    fn refuses_garbage_with_a_hint() {
        for bad in [
            "10x", "", "10", "s", "-1s", "1..5s", "1.5.5s", "ms10", "1s2",
        ] {
            let err = parse_duration(bad).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("invalid duration {bad:?}: expected e.g. 10s, 250ms")
            );
        }
    }

    #[test]
    fn formats_round_trip() {
        for s in ["10s", "1.5s", "250ms", "0s", "90s"] {
            let d: IstioDuration = s.parse().unwrap();
            assert_eq!(d.to_string(), s);
        }
    }
}
