//! Path changes for rewrites and redirects.

use super::matcher::PathMatched;

/// How a route changes the request path (the query string is kept).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum PathRewrite {
    /// Istio `rewrite.uri` (Envoy `prefix_rewrite`): replaces the matched
    /// prefix, or the whole path after an exact or regex match. Without a
    /// `uri` match the route's prefix is `/`, as Envoy sees it.
    MatchedPart(String),
    /// Gateway API `ReplaceFullPath`, Istio `redirect.uri`.
    Full(String),
    /// Gateway API `ReplacePrefixMatch`: replaces the matched path prefix
    /// element-wise, never producing `//`.
    PrefixElements(String),
}

impl PathRewrite {
    /// The new path and query of a request with `path` and `query`.
    pub(crate) fn apply(&self, path: &str, query: Option<&str>, matched: PathMatched) -> String {
        let new_path = match self {
            Self::Full(p) => p.clone(),
            Self::MatchedPart(p) => {
                let cut = match matched {
                    PathMatched::Whole => path.len(),
                    PathMatched::Prefix(n) => n,
                    PathMatched::Any => usize::from(path.starts_with('/')),
                };
                format!("{p}{}", path.get(cut..).unwrap_or(""))
            }
            Self::PrefixElements(p) => match matched {
                PathMatched::Whole => p.clone(),
                PathMatched::Prefix(n) => {
                    let rest = path.get(n..).unwrap_or("");
                    let rest = rest.strip_prefix('/').unwrap_or(rest);
                    let head = p.trim_end_matches('/');
                    if rest.is_empty() {
                        if head.is_empty() {
                            "/".to_owned()
                        } else {
                            head.to_owned()
                        }
                    } else {
                        format!("{head}/{rest}")
                    }
                }
                PathMatched::Any => format!("{}{path}", p.trim_end_matches('/')),
            },
        };
        match query {
            // A replacement that brings its own query string overrides the
            // request's (Envoy's rule for path redirects).
            Some(q) if !new_path.contains('?') => format!("{new_path}?{q}"),
            _ => new_path,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn istio_prefix_and_exact() {
        let r = PathRewrite::MatchedPart("/users".into());
        let prefix = PathMatched::Prefix("/api/v1/users".len());
        assert_eq!(r.apply("/api/v1/users/42", None, prefix), "/users/42");
        assert_eq!(r.apply("/api/v1/users", Some("a=1"), prefix), "/users?a=1");
        assert_eq!(r.apply("/exact", None, PathMatched::Whole), "/users");
        assert_eq!(r.apply("/x", None, PathMatched::Any), "/usersx");
    }

    #[test]
    fn gateway_prefix_elements() {
        let m = PathMatched::Prefix(4); // "/foo"
        let r = |p: &str, path: &str| PathRewrite::PrefixElements(p.into()).apply(path, None, m);
        assert_eq!(r("/xyz", "/foo/bar"), "/xyz/bar");
        assert_eq!(r("/xyz/", "/foo/bar"), "/xyz/bar");
        assert_eq!(r("/", "/foo/bar"), "/bar");
        assert_eq!(r("/", "/foo"), "/");
        assert_eq!(r("/xyz", "/foo"), "/xyz");
        let root = PathMatched::Prefix(0);
        assert_eq!(
            PathRewrite::PrefixElements("/xyz".into()).apply("/bar", None, root),
            "/xyz/bar"
        );
    }

    #[test]
    fn full_keeps_query_unless_replaced() {
        let r = PathRewrite::Full("/new".into());
        assert_eq!(r.apply("/old", Some("q=1"), PathMatched::Any), "/new?q=1");
        let r = PathRewrite::Full("/new?x=2".into());
        assert_eq!(r.apply("/old", Some("q=1"), PathMatched::Any), "/new?x=2");
    }
}
