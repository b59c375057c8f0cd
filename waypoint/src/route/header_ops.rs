//! Header changes (`set` / `add` / `remove`) compiled to `http` types.

use std::collections::BTreeMap;

use amesh_core::l7::HeaderOperations;
use amesh_core::l7::gateway_api::HeaderModifier;
use http::{HeaderMap, HeaderName, HeaderValue};

/// Changes to one header map, applied as Envoy does: removals first, then
/// `set` (replace every value) and `add` (append a value).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderOps {
    /// Headers replaced by this value.
    pub set: Vec<(HeaderName, HeaderValue)>,
    /// Values appended.
    pub add: Vec<(HeaderName, HeaderValue)>,
    /// Headers deleted.
    pub remove: Vec<HeaderName>,
}

impl HeaderOps {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }

    /// Applies the changes to `headers`.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.add {
            headers.append(name.clone(), value.clone());
        }
    }

    /// Compiles Istio `headers.request` / `headers.response`; invalid names
    /// or values are skipped and described in the returned list as
    /// `(field suffix, message)`.
    pub(crate) fn from_istio(ops: &HeaderOperations) -> (Self, Vec<(String, String)>) {
        let mut out = Self::default();
        let mut bad = Vec::new();
        compile_pairs(map_pairs(&ops.set), "set", &mut out.set, &mut bad);
        compile_pairs(map_pairs(&ops.add), "add", &mut out.add, &mut bad);
        compile_names(&ops.remove, &mut out.remove, &mut bad);
        (out, bad)
    }

    /// Compiles a Gateway API `requestHeaderModifier` /
    /// `responseHeaderModifier`.
    pub(crate) fn from_gateway(m: &HeaderModifier) -> (Self, Vec<(String, String)>) {
        let mut out = Self::default();
        let mut bad = Vec::new();
        let pairs = |list: &'_ [amesh_core::l7::gateway_api::HttpHeader]| {
            list.iter()
                .map(|h| (h.name.clone(), h.value.clone()))
                .collect::<Vec<_>>()
        };
        compile_pairs(pairs(&m.set), "set", &mut out.set, &mut bad);
        compile_pairs(pairs(&m.add), "add", &mut out.add, &mut bad);
        compile_names(&m.remove, &mut out.remove, &mut bad);
        (out, bad)
    }
}

fn map_pairs(map: &BTreeMap<String, String>) -> Vec<(String, String)> {
    map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn compile_pairs(
    pairs: Vec<(String, String)>,
    what: &str,
    out: &mut Vec<(HeaderName, HeaderValue)>,
    bad: &mut Vec<(String, String)>,
) {
    for (name, value) in pairs {
        let n = HeaderName::from_bytes(name.as_bytes());
        let v = HeaderValue::from_str(&value);
        match (n, v) {
            (Ok(n), Ok(v)) => out.push((n, v)),
            (Err(_), _) => bad.push((format!("{what}.{name}"), "invalid header name".into())),
            (_, Err(_)) => bad.push((format!("{what}.{name}"), "invalid header value".into())),
        }
    }
}

fn compile_names(names: &[String], out: &mut Vec<HeaderName>, bad: &mut Vec<(String, String)>) {
    for (i, name) in names.iter().enumerate() {
        match HeaderName::from_bytes(name.as_bytes()) {
            Ok(n) => out.push(n),
            Err(_) => bad.push((format!("remove[{i}]"), "invalid header name".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn remove_then_set_then_add() {
        let ops = HeaderOperations {
            set: [("x-a".to_owned(), "1".to_owned())].into(),
            add: [("x-b".to_owned(), "2".to_owned())].into(),
            remove: vec!["x-a".into(), "x-c".into()],
        };
        let (ops, bad) = HeaderOps::from_istio(&ops);
        assert!(bad.is_empty());
        let mut h = HeaderMap::new();
        h.insert("x-a", HeaderValue::from_static("old"));
        h.append("x-a", HeaderValue::from_static("older"));
        h.insert("x-b", HeaderValue::from_static("0"));
        h.insert("x-c", HeaderValue::from_static("gone"));
        ops.apply(&mut h);
        assert_eq!(h.get_all("x-a").iter().collect::<Vec<_>>(), ["1"]);
        assert_eq!(h.get_all("x-b").iter().collect::<Vec<_>>(), ["0", "2"]);
        assert!(h.get("x-c").is_none());
    }

    #[test]
    fn invalid_names_and_values_are_reported() {
        let ops = HeaderOperations {
            set: [("bad name".to_owned(), "1".to_owned())].into(),
            add: [("x-ok".to_owned(), "line\nbreak".to_owned())].into(),
            remove: vec!["also bad".into()],
        };
        let (ops, bad) = HeaderOps::from_istio(&ops);
        assert!(ops.is_empty());
        assert_eq!(bad.len(), 3);
        assert_eq!(bad[0].0, "set.bad name");
    }
}
