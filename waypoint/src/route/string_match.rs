//! Compiled string matches: exact, prefix, regex (whole value, as Envoy's
//! `safe_regex`), or presence.

use amesh_core::l7::StringMatch;
use regex::Regex;

/// A string match ready to evaluate.
#[derive(Clone, Debug)]
pub(crate) enum StrMatch {
    /// Whole value equal.
    Exact(String),
    /// Value starts with this.
    Prefix(String),
    /// Whole value matches; `None` when the pattern did not compile, which
    /// makes the match never match (the build reports it).
    Regex(Option<Regex>),
    /// Any value.
    Present,
}

impl StrMatch {
    /// Compiles `m`; a bad regex is returned as the error message alongside
    /// a never-matching value.
    pub(crate) fn compile(m: &StringMatch) -> (Self, Option<String>) {
        match m {
            StringMatch::Exact(s) => (Self::Exact(s.clone()), None),
            StringMatch::Prefix(s) => (Self::Prefix(s.clone()), None),
            StringMatch::Present => (Self::Present, None),
            StringMatch::Regex(p) => match full_match_regex(p) {
                Ok(re) => (Self::Regex(Some(re)), None),
                Err(e) => (Self::Regex(None), Some(e)),
            },
        }
    }

    /// Whether `value` matches.
    pub(crate) fn matches(&self, value: &str) -> bool {
        match self {
            Self::Exact(s) => value == s,
            Self::Prefix(s) => value.starts_with(s.as_str()),
            Self::Regex(re) => re.as_ref().is_some_and(|re| re.is_match(value)),
            Self::Present => true,
        }
    }
}

/// `pattern` anchored at both ends. The raw pattern is compiled first so
/// that one like `a)|(b` cannot turn valid once wrapped.
pub(crate) fn full_match_regex(pattern: &str) -> Result<Regex, String> {
    Regex::new(pattern)
        .and_then(|_| Regex::new(&format!("^(?:{pattern})$")))
        .map_err(|e| {
            // The crate's message spans several lines; keep the reason.
            let text = e.to_string();
            let reason = text.lines().last().unwrap_or("invalid").trim();
            let reason = reason.strip_prefix("error: ").unwrap_or(reason);
            format!("invalid regex {pattern:?}: {reason}")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regex_matches_the_whole_value() {
        let (m, err) = StrMatch::compile(&StringMatch::Regex("v[0-9]".into()));
        assert!(err.is_none());
        assert!(m.matches("v1"));
        assert!(!m.matches("v12"));
        assert!(!m.matches("xv1"));
    }

    #[test]
    fn bad_regex_never_matches_and_says_why() {
        let (m, err) = StrMatch::compile(&StringMatch::Regex("a)|(b".into()));
        assert!(err.is_some_and(|e| e.contains("invalid regex")));
        assert!(!m.matches("a"));
        assert!(!m.matches("a)|(b"));
    }

    #[test]
    fn exact_prefix_present() {
        assert!(
            StrMatch::compile(&StringMatch::Exact("a".into()))
                .0
                .matches("a")
        );
        assert!(
            !StrMatch::compile(&StringMatch::Exact("a".into()))
                .0
                .matches("ab")
        );
        assert!(
            StrMatch::compile(&StringMatch::Prefix("a".into()))
                .0
                .matches("ab")
        );
        assert!(StrMatch::compile(&StringMatch::Present).0.matches(""));
    }
}
