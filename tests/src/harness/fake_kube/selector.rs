//! Label and field selectors, as list and watch requests send them.

use serde_json::Value;

#[derive(Clone, Debug, PartialEq)]
enum Op {
    Eq(String),
    NotEq(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    NotExists,
}

#[derive(Clone, Debug, PartialEq)]
struct Requirement {
    key: String,
    op: Op,
}

/// A parsed selector; empty matches everything.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Selectors {
    labels: Vec<Requirement>,
    /// Dotted paths into the object (`metadata.name`, `spec.nodeName`).
    fields: Vec<Requirement>,
}

impl Selectors {
    pub fn parse(label: Option<&str>, field: Option<&str>) -> Result<Self, String> {
        Ok(Self {
            labels: parse(label.unwrap_or_default(), true)
                .map_err(|e| format!("labelSelector: {e}"))?,
            fields: parse(field.unwrap_or_default(), false)
                .map_err(|e| format!("fieldSelector: {e}"))?,
        })
    }

    pub fn matches(&self, object: &Value) -> bool {
        let labels = &object["metadata"]["labels"];
        self.labels
            .iter()
            .all(|r| r.matches(labels.get(&r.key).and_then(Value::as_str)))
            && self.fields.iter().all(|r| {
                let value = r.key.split('.').fold(object, |v, part| &v[part]);
                let text = match value {
                    Value::String(s) => Some(s.clone()),
                    Value::Null => Some(String::new()),
                    other => Some(other.to_string()),
                };
                r.matches(text.as_deref())
            })
    }
}

impl Requirement {
    fn matches(&self, value: Option<&str>) -> bool {
        match &self.op {
            Op::Eq(v) => value == Some(v.as_str()),
            Op::NotEq(v) => value != Some(v.as_str()),
            Op::In(vs) => value.is_some_and(|x| vs.iter().any(|v| v == x)),
            Op::NotIn(vs) => !value.is_some_and(|x| vs.iter().any(|v| v == x)),
            Op::Exists => value.is_some(),
            Op::NotExists => value.is_none(),
        }
    }
}

/// Splits on commas outside parentheses.
fn terms(text: &str) -> Vec<&str> {
    let (mut out, mut depth, mut start) = (Vec::new(), 0_i32, 0);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&text[start..]);
    out.into_iter()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect()
}

fn parse(text: &str, sets: bool) -> Result<Vec<Requirement>, String> {
    terms(text)
        .into_iter()
        .map(|term| {
            let req = |key: &str, op| Requirement {
                key: key.trim().to_owned(),
                op,
            };
            if let Some((k, v)) = term.split_once("!=") {
                return Ok(req(k, Op::NotEq(v.trim().to_owned())));
            }
            if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                return Ok(req(k, Op::Eq(v.trim().to_owned())));
            }
            if sets {
                for (word, notin) in [(" notin ", true), (" in ", false)] {
                    if let Some((k, rest)) = term.split_once(word) {
                        let values = rest
                            .trim()
                            .strip_prefix('(')
                            .and_then(|r| r.strip_suffix(')'))
                            .ok_or_else(|| format!("{term:?}: expected (values)"))?
                            .split(',')
                            .map(|v| v.trim().to_owned())
                            .collect();
                        let op = if notin {
                            Op::NotIn(values)
                        } else {
                            Op::In(values)
                        };
                        return Ok(req(k, op));
                    }
                }
                if let Some(k) = term.strip_prefix('!') {
                    return Ok(req(k, Op::NotExists));
                }
                if !term.contains(' ') {
                    return Ok(req(term, Op::Exists));
                }
            }
            Err(format!("{term:?} is not a valid requirement"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn label_and_field_selectors_match_like_the_api_server() {
        let pod = json!({"metadata": {"name": "a", "labels": {"app": "web", "tier": "x"}}, "spec": {"nodeName": "n1"}});
        let yes = |l: &str, f: &str| Selectors::parse(Some(l), Some(f)).unwrap().matches(&pod);
        assert!(yes("app=web", ""));
        assert!(yes("app==web,tier", ""));
        assert!(yes("app in (db, web),!missing", "spec.nodeName=n1"));
        assert!(!yes("app notin (web)", ""));
        assert!(!yes("app!=web", ""));
        assert!(!yes("", "metadata.name=b"));
        assert!(yes("", "metadata.name!=b"));
        assert!(Selectors::parse(Some("a b c"), None).is_err());
    }
}
