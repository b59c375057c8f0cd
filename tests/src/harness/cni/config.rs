//! Network configuration files, parsed and selected as libcni and
//! containerd's go-cni do.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde_json::{Map, Value};

/// Newest spec version this runtime speaks (libcni 1.2 = spec 1.1.0); a
/// `cniVersions` list is negotiated down to it.
pub const RUNTIME_CNI_VERSION: &str = "1.1.0";

/// Config file extensions the runtime considers (libcni `ConfFiles`).
const EXTENSIONS: &[&str] = &["conf", "conflist", "json"];

/// A network configuration list: the plugin chain of one network.
#[derive(Debug, Clone)]
pub struct NetworkConfigList {
    pub name: String,
    /// After `cniVersions` negotiation.
    pub cni_version: String,
    pub disable_check: bool,
    pub disable_gc: bool,
    /// Each plugin's config object, as written (only `type` is required).
    pub plugins: Vec<Map<String, Value>>,
    /// The file it came from, if any.
    pub source: Option<PathBuf>,
    /// The list as JSON (a `.conf` converted to a list), as libcni caches it.
    pub bytes: Vec<u8>,
}

impl NetworkConfigList {
    /// Parses a `.conflist` (libcni `ConfListFromBytes`).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let raw: Map<String, Value> =
            serde_json::from_slice(bytes).context("error parsing configuration list")?;
        let name = match raw.get("name") {
            Some(Value::String(name)) => name.clone(),
            Some(other) => bail!("error parsing configuration list: invalid name {other}"),
            None => bail!("error parsing configuration list: no name"),
        };
        let cni_version = negotiate_version(&raw)?;
        let Some(plugins) = raw.get("plugins") else {
            bail!("error parsing configuration list: no 'plugins' key");
        };
        let Value::Array(plugins) = plugins else {
            bail!("error parsing configuration list: invalid 'plugins' type");
        };
        if plugins.is_empty() {
            bail!("error parsing configuration list: no plugins in list");
        }
        let plugins = plugins
            .iter()
            .enumerate()
            .map(|(i, plugin)| {
                let Value::Object(plugin) = plugin else {
                    bail!("plugin {i}: not a JSON object");
                };
                // The runtime needs the type to find the binary; anything
                // else is the plugin's to judge.
                match plugin.get("type") {
                    Some(Value::String(t)) if !t.is_empty() => Ok(plugin.clone()),
                    _ => bail!("plugin {i}: error parsing configuration: missing 'type'"),
                }
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            name,
            cni_version,
            disable_check: flag(&raw, "disableCheck")?,
            disable_gc: flag(&raw, "disableGC")?,
            plugins,
            source: None,
            bytes: bytes.to_vec(),
        })
    }

    /// Parses a single-plugin `.conf` and wraps it in a one-plugin list
    /// (libcni `ConfListFromConf`), name and version taken from the plugin.
    pub fn from_conf_bytes(bytes: &[u8]) -> Result<Self> {
        let conf: Map<String, Value> =
            serde_json::from_slice(bytes).context("error parsing configuration")?;
        // Also catches a conflist saved under a .conf name (go-cni does the same).
        let has_type = matches!(conf.get("type"), Some(Value::String(t)) if !t.is_empty());
        if !has_type {
            bail!("error parsing configuration: missing 'type'");
        }
        let list = serde_json::json!({
            "cniVersion": conf.get("cniVersion").cloned().unwrap_or(Value::from("")),
            "name": conf.get("name").cloned().unwrap_or(Value::from("")),
            "plugins": [conf],
        });
        Self::from_bytes(&serde_json::to_vec(&list)?)
    }

    /// Loads a config file, by extension: `.conflist` is a list, anything
    /// else a single plugin.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
        let parsed = if path.extension().is_some_and(|e| e == "conflist") {
            Self::from_bytes(&bytes)
        } else {
            Self::from_conf_bytes(&bytes)
        };
        let mut list = parsed.with_context(|| format!("load CNI config {}", path.display()))?;
        list.source = Some(path.to_path_buf());
        Ok(list)
    }

    /// The plugin types in chain order.
    pub fn plugin_types(&self) -> Vec<&str> {
        self.plugins
            .iter()
            .filter_map(|p| p.get("type").and_then(Value::as_str))
            .collect()
    }
}

/// Config files in `dir` with a CNI extension, in lexical order.
pub fn conf_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("read CNI conf dir {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| EXTENSIONS.contains(&e))
        })
        .collect();
    files.sort();
    Ok(files)
}

/// The network the node uses: the first config file in lexical order, as
/// containerd (go-cni, one network) picks it. A broken first file is an
/// error, not skipped: containerd reports it rather than falling through.
pub fn active_config(dir: &Path) -> Result<NetworkConfigList> {
    let files = conf_files(dir)?;
    let first = files
        .first()
        .with_context(|| format!("no network config found in {}", dir.display()))?;
    NetworkConfigList::load(first)
}

/// `cniVersion`, or with `cniVersions` the highest listed version this
/// runtime supports (spec 1.1 version negotiation).
fn negotiate_version(raw: &Map<String, Value>) -> Result<String> {
    let declared = match raw.get("cniVersion") {
        None => String::new(),
        Some(Value::String(v)) => v.clone(),
        Some(other) => bail!("error parsing configuration list: invalid cniVersion {other}"),
    };
    let Some(versions) = raw.get("cniVersions") else {
        return Ok(declared);
    };
    let Value::Array(versions) = versions else {
        bail!("error parsing configuration list: invalid type for cniVersions");
    };
    let mut candidates = Vec::new();
    for v in versions {
        let v = v.as_str().with_context(|| {
            format!("error parsing configuration list: invalid cniVersions entry {v}")
        })?;
        candidates.push(v);
    }
    if !declared.is_empty() {
        candidates.push(&declared);
    }
    let runtime = parse_version(RUNTIME_CNI_VERSION)?;
    let mut best: Option<((u32, u32, u32), &str)> = None;
    for v in candidates {
        let parsed = parse_version(v)?;
        // Versions newer than this runtime are skipped, not errors.
        if parsed <= runtime && best.is_none_or(|(b, _)| parsed > b) {
            best = Some((parsed, v));
        }
    }
    Ok(best.map_or(declared.clone(), |(_, v)| v.to_string()))
}

/// A boolean list flag; libcni also accepts the strings "true"/"false".
fn flag(raw: &Map<String, Value>, key: &str) -> Result<bool> {
    match raw.get(key) {
        None => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(true),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(false),
        Some(other) => bail!("error parsing configuration list: invalid {key} value {other}"),
    }
}

/// Whether spec version `version` is `min` or newer.
pub(super) fn version_at_least(version: &str, min: &str) -> Result<bool> {
    Ok(parse_version(version)? >= parse_version(min)?)
}

/// "1.0.0" as a comparable triple; an empty version is the oldest, "0.1.0",
/// as libcni treats it.
fn parse_version(v: &str) -> Result<(u32, u32, u32)> {
    if v.is_empty() {
        return Ok((0, 1, 0));
    }
    let parts: Vec<u32> = v
        .split('.')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .with_context(|| format!("invalid CNI version {v:?}"))?;
    match parts[..] {
        [major, minor, patch] => Ok((major, minor, patch)),
        [major, minor] => Ok((major, minor, 0)),
        _ => bail!("invalid CNI version {v:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).unwrap();
    }

    #[test]
    fn first_file_in_lexical_order_wins_and_a_conf_becomes_a_list() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "00-notes.txt", "not a config");
        write(
            dir.path(),
            "20-second.conflist",
            r#"{"cniVersion":"1.0.0","name":"second","plugins":[{"type":"bridge"}]}"#,
        );
        write(
            dir.path(),
            "10-first.conf",
            r#"{"cniVersion":"0.4.0","name":"first","type":"ptp","capabilities":{"ips":true}}"#,
        );
        let files = conf_files(dir.path()).unwrap();
        assert_eq!(files.len(), 2, "{files:?}");
        let list = active_config(dir.path()).unwrap();
        assert_eq!(list.name, "first");
        assert_eq!(list.cni_version, "0.4.0");
        assert_eq!(list.plugin_types(), ["ptp"]);
        assert_eq!(list.plugins[0]["capabilities"]["ips"], true);
        assert_eq!(
            list.source.as_deref(),
            Some(&*dir.path().join("10-first.conf"))
        );
    }

    #[test]
    fn broken_lists_are_rejected_by_the_runtime() {
        for bad in [
            r#"{"cniVersion":"1.0.0","plugins":[{"type":"bridge"}]}"#,
            r#"{"cniVersion":"1.0.0","name":"n","plugins":[]}"#,
            r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"bridge":"cni0"}]}"#,
            r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"bridge"}],"disableCheck":3}"#,
            "{",
        ] {
            assert!(
                NetworkConfigList::from_bytes(bad.as_bytes()).is_err(),
                "{bad}"
            );
        }
        // A list saved as .conf has no top-level type.
        let list = r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"bridge"}]}"#;
        assert!(NetworkConfigList::from_conf_bytes(list.as_bytes()).is_err());
    }

    #[test]
    fn cni_versions_negotiate_to_the_highest_supported() {
        let list = NetworkConfigList::from_bytes(
            br#"{"cniVersion":"0.4.0","cniVersions":["1.0.0","9.0.0","1.1.0"],"name":"n",
                 "disableCheck":"true","plugins":[{"type":"bridge"}]}"#,
        )
        .unwrap();
        assert_eq!(list.cni_version, "1.1.0");
        assert!(list.disable_check);
        assert!(!list.disable_gc);
        assert!(version_at_least("1.0.0", "0.4.0").unwrap());
        assert!(!version_at_least("0.3.1", "0.4.0").unwrap());
        assert!(!version_at_least("", "0.4.0").unwrap());
    }
}
