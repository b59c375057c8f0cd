//! Request paths and query strings of the Kubernetes REST API.

use std::collections::BTreeMap;

/// `/api/v1/...` or `/apis/{group}/{version}/...`, split.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourcePath {
    pub group: String,
    pub version: String,
    /// `None`: all namespaces (or a cluster-scoped type).
    pub namespace: Option<String>,
    pub plural: String,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

/// Splits a resource path; `is_plural` says whether a segment names a
/// resource type of the group (to tell `/api/v1/namespaces/x/pods` from a
/// namespace's subresource `/api/v1/namespaces/x/status`).
pub fn parse(path: &str, is_plural: impl Fn(&str, &str) -> bool) -> Option<ResourcePath> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segments.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return None,
    };
    let owned = |s: &&str| (*s).to_owned();
    let (namespace, rest) = match rest {
        ["namespaces", ns, plural, tail @ ..] if is_plural(group, plural) => {
            (Some((*ns).to_owned()), [&[*plural][..], tail].concat())
        }
        _ => (None, rest.to_vec()),
    };
    let (plural, name, subresource) = match rest.as_slice() {
        [plural] => (plural, None, None),
        [plural, name] => (plural, Some(owned(name)), None),
        [plural, name, sub] => (plural, Some(owned(name)), Some(owned(sub))),
        _ => return None,
    };
    Some(ResourcePath {
        group: group.to_owned(),
        version: version.to_owned(),
        namespace,
        plural: (*plural).to_owned(),
        name,
        subresource,
    })
}

/// Query parameters, percent-decoded (`+` is a space, as form encoding has it).
pub fn query(query: Option<&str>) -> BTreeMap<String, String> {
    query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = |b: u8| (b as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(high), Some(low)) => {
                        // Two hex digits: at most 0xff.
                        out.push((high * 16 + low) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Opaque continue tokens: the list's resourceVersion and the last key
/// returned, hex-encoded so they survive any query encoding.
pub fn encode_continue(rv: u64, namespace: &str, name: &str) -> String {
    format!("{rv}\n{namespace}\n{name}")
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub fn decode_continue(token: &str) -> Option<(u64, String, String)> {
    let bytes = (0..token.len())
        .step_by(2)
        .map(|i| {
            token
                .get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect::<Option<Vec<u8>>>()?;
    let text = String::from_utf8(bytes).ok()?;
    let mut parts = text.splitn(3, '\n');
    let rv = parts.next()?.parse().ok()?;
    Some((rv, parts.next()?.to_owned(), parts.next()?.to_owned()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn paths_split_like_the_api_server() {
        let plural = |_: &str, p: &str| p != "status" && p != "finalize";
        let p = parse("/api/v1/namespaces/a/pods/b/status", plural).unwrap();
        assert_eq!(p.namespace.as_deref(), Some("a"));
        assert_eq!((p.plural.as_str(), p.name.as_deref()), ("pods", Some("b")));
        assert_eq!(p.subresource.as_deref(), Some("status"));
        let p = parse("/api/v1/namespaces/a", plural).unwrap();
        assert_eq!(
            (p.namespace, p.plural.as_str(), p.name.as_deref()),
            (None, "namespaces", Some("a"))
        );
        let p = parse("/api/v1/namespaces/a/status", plural).unwrap();
        assert_eq!(p.subresource.as_deref(), Some("status"));
        let p = parse("/apis/networking.istio.io/v1alpha3/virtualservices", plural).unwrap();
        assert_eq!(
            (p.group.as_str(), p.version.as_str()),
            ("networking.istio.io", "v1alpha3")
        );
        assert!(parse("/healthz", plural).is_none());
    }

    #[test]
    fn queries_and_continue_tokens_round_trip() {
        let q = query(Some("labelSelector=app%3Dweb%2Ctier+in+(a)&watch=true"));
        assert_eq!(q["labelSelector"], "app=web,tier in (a)");
        assert_eq!(q["watch"], "true");
        let token = encode_continue(42, "ns", "name");
        assert_eq!(
            decode_continue(&token),
            Some((42, "ns".into(), "name".into()))
        );
        assert_eq!(decode_continue("zz"), None);
    }
}
