//! Pieces shared by several L7 kinds: string matches, percentages, header
//! operations, workload selectors and policy target references.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Istio's `StringMatch`: one of `exact`, `prefix`, `regex`. An empty map
/// (`{}`) is allowed where Istio allows it (header and query parameter
/// matches) and means "present, any value".
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(try_from = "StringMatchRepr", into = "StringMatchRepr")]
pub enum StringMatch {
    /// The whole value equals this string.
    Exact(String),
    /// The value starts with this string.
    Prefix(String),
    /// The whole value matches this RE2 regular expression.
    Regex(String),
    /// `{}`: the header or parameter is present, with any value.
    Present,
}

/// The YAML shape of [`StringMatch`].
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
#[serde(deny_unknown_fields)]
struct StringMatchRepr {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    exact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    regex: Option<String>,
}

impl TryFrom<StringMatchRepr> for StringMatch {
    type Error = String;
    fn try_from(r: StringMatchRepr) -> Result<Self, Self::Error> {
        match (r.exact, r.prefix, r.regex) {
            (Some(e), None, None) => Ok(Self::Exact(e)),
            (None, Some(p), None) => Ok(Self::Prefix(p)),
            (None, None, Some(re)) => Ok(Self::Regex(re)),
            (None, None, None) => Ok(Self::Present),
            _ => Err("only one of exact, prefix or regex may be set".to_owned()),
        }
    }
}

impl From<StringMatch> for StringMatchRepr {
    fn from(m: StringMatch) -> Self {
        let mut r = Self::default();
        match m {
            StringMatch::Exact(e) => r.exact = Some(e),
            StringMatch::Prefix(p) => r.prefix = Some(p),
            StringMatch::Regex(re) => r.regex = Some(re),
            StringMatch::Present => {}
        }
        r
    }
}

/// Istio's `Percent`: `{value: 50}`, a share of requests from 0 to 100.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct Percent {
    /// 0.0 ..= 100.0.
    #[serde(default)]
    pub value: f64,
}

/// Header changes: `set` replaces, `add` appends, `remove` deletes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct HeaderOperations {
    /// Overwrite these headers with these values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub set: BTreeMap<String, String>,
    /// Append these values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub add: BTreeMap<String, String>,
    /// Remove these headers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

/// Istio's `Headers`: changes to the request (before forwarding) and to the
/// response (before returning it to the client).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct Headers {
    /// Applied to the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<HeaderOperations>,
    /// Applied to the response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<HeaderOperations>,
}

/// `selector: {matchLabels: ...}` (Istio's `WorkloadSelector`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadSelector {
    /// Pods whose labels include all of these.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
}

/// `targetRef` / `targetRefs[]` (Istio's `PolicyTargetReference`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyTargetReference {
    /// API group; `""` is the core group (Service).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// `Service`, `Gateway`, `ServiceEntry`, ...
    pub kind: String,
    /// Object name.
    pub name: String,
    /// Must be the policy's own namespace when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}
