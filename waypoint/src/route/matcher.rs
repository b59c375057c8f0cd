//! One compiled request match: every condition set must hold.

use http::HeaderName;
use http::request::Parts;

use super::query;
use super::string_match::StrMatch;

/// How the path is matched; rewrites depend on it.
#[derive(Clone, Debug)]
pub(crate) enum PathMatch {
    /// Whole path equal.
    Exact { value: String, ignore_case: bool },
    /// Path starts with `value` (Istio `prefix`).
    Prefix { value: String, ignore_case: bool },
    /// Path starts with `value` at a `/` boundary (Gateway API
    /// `PathPrefix`: `/a` matches `/a` and `/a/b`, not `/ab`). `value`
    /// has no trailing `/` (empty for `/`).
    Segments { value: String },
    /// Whole path matches (never, when the pattern did not compile).
    Regex(StrMatch),
}

/// Which kind of path match selected a request, for rewrites.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PathMatched {
    /// No path condition.
    Any,
    /// An exact or regex match: the whole path.
    Whole,
    /// A prefix match of this many bytes.
    Prefix(usize),
}

/// A header condition: name, and the value match.
pub(crate) type HeaderCondition = (HeaderName, StrMatch);

/// All conditions of one `match` entry.
#[derive(Clone, Debug, Default)]
pub(crate) struct RequestMatch {
    pub(crate) path: Option<PathMatch>,
    pub(crate) method: Option<StrMatch>,
    pub(crate) authority: Option<StrMatch>,
    pub(crate) scheme: Option<StrMatch>,
    pub(crate) port: Option<u16>,
    pub(crate) headers: Vec<HeaderCondition>,
    /// Conditions that must not hold.
    pub(crate) without_headers: Vec<HeaderCondition>,
    /// Query parameter name (case-sensitive) and match.
    pub(crate) query_params: Vec<(String, StrMatch)>,
    /// A condition could not be compiled (bad regex or header name): the
    /// entry never matches, even where the condition is negated.
    pub(crate) invalid: bool,
}

impl RequestMatch {
    /// `Some` with how the path matched when every condition holds.
    pub(crate) fn evaluate(&self, port: u16, req: &Parts) -> Option<PathMatched> {
        if self.invalid || self.port.is_some_and(|p| p != port) {
            return None;
        }
        let matched = match &self.path {
            None => PathMatched::Any,
            Some(p) => p.evaluate(req.uri.path())?,
        };
        if let Some(m) = &self.method
            && !m.matches(req.method.as_str())
        {
            return None;
        }
        if let Some(m) = &self.authority
            && !m.matches(authority(req).unwrap_or(""))
        {
            return None;
        }
        if let Some(m) = &self.scheme
            && !m.matches(req.uri.scheme_str().unwrap_or("http"))
        {
            return None;
        }
        if !self.headers.iter().all(|(n, m)| header_matches(req, n, m)) {
            return None;
        }
        if self
            .without_headers
            .iter()
            .any(|(n, m)| header_matches(req, n, m))
        {
            return None;
        }
        let query = req.uri.query().unwrap_or("");
        let query_ok = self
            .query_params
            .iter()
            .all(|(name, m)| query::first_value(query, name).is_some_and(|v| m.matches(&v)));
        query_ok.then_some(matched)
    }
}

impl PathMatch {
    fn evaluate(&self, path: &str) -> Option<PathMatched> {
        match self {
            Self::Exact { value, ignore_case } => {
                let eq = if *ignore_case {
                    path.eq_ignore_ascii_case(value)
                } else {
                    path == value
                };
                eq.then_some(PathMatched::Whole)
            }
            Self::Prefix { value, ignore_case } => {
                let head = path.get(..value.len())?;
                let eq = if *ignore_case {
                    head.eq_ignore_ascii_case(value)
                } else {
                    head == value
                };
                eq.then_some(PathMatched::Prefix(value.len()))
            }
            Self::Segments { value } => {
                let rest = path.strip_prefix(value.as_str())?;
                (rest.is_empty() || rest.starts_with('/'))
                    .then_some(PathMatched::Prefix(value.len()))
            }
            Self::Regex(m) => m.matches(path).then_some(PathMatched::Whole),
        }
    }
}

/// The request's authority: the URI's (HTTP/2, absolute-form) or `Host`.
pub(crate) fn authority(req: &Parts) -> Option<&str> {
    req.uri.authority().map(|a| a.as_str()).or_else(|| {
        req.headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
    })
}

/// Envoy reads a header sent several times as its values joined by `,`.
/// Values that are not visible ASCII only match presence.
fn header_matches(req: &Parts, name: &HeaderName, m: &StrMatch) -> bool {
    let mut values = req.headers.get_all(name).iter();
    let Some(first) = values.next() else {
        return false;
    };
    if matches!(m, StrMatch::Present) {
        return true;
    }
    let Ok(first) = first.to_str() else {
        return false;
    };
    let rest: Vec<&str> = values.filter_map(|v| v.to_str().ok()).collect();
    if rest.is_empty() {
        return m.matches(first);
    }
    let mut joined = first.to_owned();
    for v in rest {
        joined.push(',');
        joined.push_str(v);
    }
    m.matches(&joined)
}
