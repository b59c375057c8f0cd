//! Our entry in a CNI config, as JSON: no files here.
//!
//! A config is either a plugin list (`plugins`: the runtime runs them in
//! order, so our chained entry goes last) or a single plugin config, which
//! can hold no second plugin and is converted to a list.

use std::path::Path;

use serde_json::{Map, Value};

use super::PLUGIN_TYPE;
use super::error::InstallError;

pub(super) type Doc = Map<String, Value>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Shape {
    /// Has a `plugins` array (`.conflist`, or a `.json` holding one).
    List,
    /// A lone plugin config (`.conf`, or a `.json` holding one).
    Single,
}

/// Parses a config file's bytes; `path` is for errors.
pub(super) fn parse(path: &Path, bytes: &[u8]) -> Result<Doc, InstallError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|source| InstallError::Json {
        path: path.to_owned(),
        source,
    })?;
    match value {
        Value::Object(doc) => Ok(doc),
        _ => Err(invalid(path, "not a JSON object")),
    }
}

pub(super) fn shape(path: &Path, doc: &Doc) -> Result<Shape, InstallError> {
    match (doc.get("plugins"), doc.get("type")) {
        // Chained alone, we would run with no network set up before us.
        (Some(Value::Array(plugins)), _) if plugins.iter().all(is_ours) => Err(invalid(
            path,
            "no primary CNI in `plugins`: nothing to chain after",
        )),
        (Some(Value::Array(_)), _) => Ok(Shape::List),
        (Some(_), _) => Err(invalid(path, "`plugins` is not a list")),
        // Converting it would chain us after ourselves, with no primary CNI.
        (None, Some(Value::String(kind))) if kind == PLUGIN_TYPE => Err(invalid(
            path,
            "a lone amesh-cni config, not the primary CNI's: nothing to chain after",
        )),
        (None, Some(Value::String(_))) => Ok(Shape::Single),
        (None, _) => Err(invalid(
            path,
            "neither a `plugins` list nor a plugin `type`",
        )),
    }
}

fn invalid(path: &Path, reason: &str) -> InstallError {
    InstallError::Invalid {
        path: path.to_owned(),
        reason: reason.to_owned(),
    }
}

fn is_ours(plugin: &Value) -> bool {
    plugin.get("type").and_then(Value::as_str) == Some(PLUGIN_TYPE)
}

fn plugins(doc: &Doc) -> &[Value] {
    match doc.get("plugins") {
        Some(Value::Array(plugins)) => plugins,
        _ => &[],
    }
}

pub(super) fn has_entry(doc: &Doc) -> bool {
    plugins(doc).iter().any(is_ours)
}

/// The list with exactly one entry of ours, `entry`: in place of the first
/// one already there (so an update keeps its position), else appended.
/// `None` when the list is already so: nothing to write.
pub(super) fn with_entry(doc: &Doc, entry: &Value) -> Option<Doc> {
    let old = plugins(doc);
    let ours: Vec<&Value> = old.iter().filter(|p| is_ours(p)).collect();
    if ours == [entry] {
        return None;
    }
    let mut new: Vec<Value> = Vec::with_capacity(old.len() + 1);
    let mut placed = false;
    for plugin in old {
        if !is_ours(plugin) {
            new.push(plugin.clone());
        } else if !placed {
            new.push(entry.clone());
            placed = true;
        }
    }
    if !placed {
        new.push(entry.clone());
    }
    let mut doc = doc.clone();
    doc.insert("plugins".to_owned(), Value::Array(new));
    Some(doc)
}

/// The list without our entries; `None` when it has none.
pub(super) fn without_entry(doc: &Doc) -> Option<Doc> {
    if !has_entry(doc) {
        return None;
    }
    let kept = plugins(doc).iter().filter(|p| !is_ours(p)).cloned();
    let mut doc = doc.clone();
    doc.insert("plugins".to_owned(), Value::Array(kept.collect()));
    Some(doc)
}

/// A lone plugin config as a one-plugin list: the list takes its
/// `cniVersion` and `name`, the plugin keeps the rest.
pub(super) fn to_list(conf: &Doc) -> Doc {
    let mut plugin = conf.clone();
    let mut list = Doc::new();
    for key in ["cniVersion", "name"] {
        if let Some(value) = plugin.remove(key) {
            list.insert(key.to_owned(), value);
        }
    }
    list.insert(
        "plugins".to_owned(),
        Value::Array(vec![Value::Object(plugin)]),
    );
    list
}

/// How we write a config: indented, with a final newline.
pub(super) fn render(doc: &Doc) -> Vec<u8> {
    // `{:#}` is serde_json's infallible pretty printer.
    format!("{:#}\n", Value::Object(doc.clone())).into_bytes()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn doc(value: Value) -> Doc {
        match value {
            Value::Object(doc) => doc,
            _ => unreachable!(),
        }
    }

    fn types(doc: &Doc) -> Vec<&str> {
        plugins(doc)
            .iter()
            .map(|p| p["type"].as_str().unwrap())
            .collect()
    }

    fn entry(level: &str) -> Value {
        json!({"type": PLUGIN_TYPE, "logLevel": level})
    }

    #[test]
    fn appends_last_and_keeps_everything_else() {
        let list = doc(json!({
            "cniVersion": "1.0.0", "name": "k8s-pod-network", "x-vendor": {"a": 1},
            "plugins": [{"type": "calico", "ipam": {"type": "calico-ipam"}}, {"type": "portmap"}]
        }));
        let new = with_entry(&list, &entry("info")).unwrap();
        assert_eq!(types(&new), ["calico", "portmap", PLUGIN_TYPE]);
        assert_eq!(new["x-vendor"], json!({"a": 1}));
        assert_eq!(plugins(&new)[..2], plugins(&list)[..]);
        assert_eq!(with_entry(&new, &entry("info")), None);
    }

    #[test]
    fn an_update_keeps_the_position_and_drops_duplicates() {
        let list = doc(json!({"plugins": [
            {"type": "flannel"}, entry("info"), {"type": "portmap"}, entry("debug")
        ]}));
        let new = with_entry(&list, &entry("debug")).unwrap();
        assert_eq!(types(&new), ["flannel", PLUGIN_TYPE, "portmap"]);
        assert_eq!(plugins(&new)[1], entry("debug"));
    }

    #[test]
    fn removal_keeps_the_other_plugins_in_order() {
        let list =
            doc(json!({"name": "n", "plugins": [{"type": "a"}, entry("info"), {"type": "b"}]}));
        let stripped = without_entry(&list).unwrap();
        assert_eq!(types(&stripped), ["a", "b"]);
        assert_eq!(stripped["name"], "n");
        assert_eq!(without_entry(&stripped), None);
    }

    #[test]
    fn a_lone_config_becomes_a_list() {
        let conf = doc(json!({
            "cniVersion": "0.4.0", "name": "bridge", "type": "bridge", "bridge": "cni0",
            "ipam": {"type": "host-local"}
        }));
        assert_eq!(shape(Path::new("c"), &conf).unwrap(), Shape::Single);
        let list = to_list(&conf);
        assert_eq!(
            Value::Object(list),
            json!({"cniVersion": "0.4.0", "name": "bridge", "plugins": [
                {"type": "bridge", "bridge": "cni0", "ipam": {"type": "host-local"}}
            ]})
        );
    }

    #[test]
    fn shapes_we_cannot_chain_into_are_refused() {
        let path = Path::new("/etc/cni/net.d/10-x.conflist");
        let err = |value| shape(path, &doc(value)).unwrap_err().to_string();
        assert_eq!(
            err(json!({"plugins": {"type": "a"}})),
            "/etc/cni/net.d/10-x.conflist: `plugins` is not a list"
        );
        assert!(err(json!({"name": "x"})).contains("neither"));
        assert!(err(json!({"plugins": []})).contains("no primary CNI"));
        assert!(err(json!({"plugins": [{"type": PLUGIN_TYPE}]})).contains("no primary CNI"));
        assert!(err(json!({"type": PLUGIN_TYPE})).contains("lone amesh-cni"));
        let bad = parse(path, b"{\n  \"name\": \"x\",\n  oops\n}").unwrap_err();
        assert!(matches!(bad, InstallError::Json { .. }));
        assert!(bad.to_string().contains("line 3"), "{bad}");
        assert!(
            parse(path, b"[1]")
                .unwrap_err()
                .to_string()
                .contains("not a JSON object")
        );
    }

    #[test]
    fn rendering_is_indented_with_a_final_newline() {
        let text = render(&doc(json!({"name": "n", "plugins": []})));
        assert_eq!(text, b"{\n  \"name\": \"n\",\n  \"plugins\": []\n}\n");
    }
}
