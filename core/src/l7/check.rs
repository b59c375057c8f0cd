//! Semantic validation helpers: the error type, field-path building and the
//! list of fields amesh parses but does not implement.

use super::SpecError;
use super::common::{Percent, StringMatch};
use super::duration::IstioDuration;

/// Result of a check.
pub(crate) type Checked = Result<(), SpecError>;

/// Collects, while checking one spec, the fields amesh does not implement.
#[derive(Debug, Default)]
pub(crate) struct Ctx {
    pub(crate) unsupported: Vec<String>,
}

impl Ctx {
    /// Records a field that parses but that amesh will not act on.
    pub(crate) fn unsupported(&mut self, field: impl Into<String>) {
        self.unsupported.push(field.into());
    }

    /// Records `at.name` when an optional field is set.
    pub(crate) fn unsupported_if<T>(&mut self, at: &str, name: &str, value: &Option<T>) {
        if value.is_some() {
            self.unsupported(format!("{at}.{name}"));
        }
    }

    /// Records `at.name` when a list or map is not empty.
    pub(crate) fn unsupported_if_any(&mut self, at: &str, name: &str, non_empty: bool) {
        if non_empty {
            self.unsupported(format!("{at}.{name}"));
        }
    }
}

/// An error at `field`.
pub(crate) fn err(field: impl Into<String>, message: impl Into<String>) -> SpecError {
    SpecError {
        field: field.into(),
        message: message.into(),
    }
}

/// Istio's percentage rule: 0 to 100 inclusive.
pub(crate) fn percent(at: &str, p: &Percent) -> Checked {
    if !(0.0..=100.0).contains(&p.value) {
        return Err(err(
            format!("{at}.value"),
            format!("percentage {} is not in range 0..100", p.value),
        ));
    }
    Ok(())
}

/// Istio's `ValidateDuration`: at least 1 ms.
pub(crate) fn at_least_1ms(at: &str, d: &IstioDuration) -> Checked {
    if d.0 < std::time::Duration::from_millis(1) {
        return Err(err(at, format!("duration {d} must be at least 1ms")));
    }
    Ok(())
}

/// Ports are 1..=65535.
pub(crate) fn port(at: &str, p: u32) -> Checked {
    if !(1..=65535).contains(&p) {
        return Err(err(at, format!("port {p} is not in range 1..65535")));
    }
    Ok(())
}

/// Istio refuses empty prefixes and regexes.
pub(crate) fn string_match(at: &str, m: &StringMatch) -> Checked {
    match m {
        StringMatch::Prefix(p) if p.is_empty() => {
            Err(err(at, "prefix string match should not be empty"))
        }
        StringMatch::Regex(r) if r.is_empty() => {
            Err(err(at, "regex string match should not be empty"))
        }
        StringMatch::Regex(r) => regex(at, r),
        _ => Ok(()),
    }
}

/// A required string must not be empty.
pub(crate) fn non_empty(at: &str, value: &str, what: &str) -> Checked {
    if value.is_empty() {
        return Err(err(at, format!("{what} must not be empty")));
    }
    Ok(())
}

/// RFC 1123 label (subset names, listener names).
pub(crate) fn dns_label(at: &str, value: &str, what: &str) -> Checked {
    let ok = !value.is_empty()
        && value.len() <= 63
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-');
    if !ok {
        return Err(err(
            at,
            format!("{what} {value:?} is not a valid DNS label (lowercase letters, digits, '-')"),
        ));
    }
    Ok(())
}

/// Istio's regex rule: at most 1024 characters, and it must compile (RE2
/// syntax, which the `regex` crate shares).
pub(crate) fn regex(at: &str, pattern: &str) -> Checked {
    if pattern.len() > 1024 {
        return Err(err(at, "regex is too large, max length allowed is 1024"));
    }
    if let Err(e) = regex::Regex::new(pattern) {
        // The crate's message spans several lines; keep the last (the reason).
        let text = e.to_string();
        let reason = text.lines().last().unwrap_or("invalid").trim();
        let reason = reason.strip_prefix("error: ").unwrap_or(reason);
        return Err(err(at, format!("invalid regex {pattern:?}: {reason}")));
    }
    Ok(())
}
