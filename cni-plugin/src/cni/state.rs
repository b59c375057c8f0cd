//! The node-local state file: enough for the plugin to decide alone, when
//! the agent is unreachable, whether a pod is ambient (then it must not
//! start uncaptured) or not (then it must not be blocked).
//!
//! The agent rewrites it atomically (temp file + rename) on every config
//! change; the plugin only reads it.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use amesh_core::config::ConfigSnapshot;
use amesh_core::config::enrollment::DATAPLANE_MODE_LABEL;
use serde::{Deserialize, Serialize};

pub const STATE_VERSION: u32 = 1;

/// A pod's own say, overriding its namespace's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PodMode {
    Ambient,
    /// Labelled `none`, or never enrolled (hostNetwork, waypoint).
    Out,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeState {
    pub version: u32,
    pub node: String,
    /// Pods here are never enrolled.
    pub mesh_namespace: String,
    pub ambient_namespaces: BTreeSet<String>,
    /// `<namespace>/<name>` → the pod's own mode, for pods whose labels (or
    /// kind) decide differently from their namespace.
    pub pods: BTreeMap<String, PodMode>,
}

/// What the plugin does with a pod when it cannot ask the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OfflineDecision {
    /// Must be captured: fail the ADD so the runtime retries.
    Ambient,
    /// Let it start.
    NotAmbient,
}

impl NodeState {
    /// From a config snapshot, for `node`: every ambient namespace, and the
    /// pods whose verdict is not their namespace's.
    pub fn from_snapshot(snapshot: &ConfigSnapshot, node: &str) -> Self {
        let ambient_namespaces: BTreeSet<String> = snapshot
            .namespaces()
            .keys()
            .filter(|name| snapshot.namespace_is_ambient(name))
            .cloned()
            .collect();
        let pods = snapshot
            .workloads()
            .filter(|w| w.node == node)
            .filter_map(|w| {
                let ns_ambient = ambient_namespaces.contains(&w.namespace);
                let mode = if w.in_mesh() {
                    PodMode::Ambient
                } else {
                    PodMode::Out
                };
                let labelled = w.labels.contains_key(DATAPLANE_MODE_LABEL);
                let differs = (mode == PodMode::Ambient) != ns_ambient;
                (differs || labelled).then(|| (format!("{}/{}", w.namespace, w.name), mode))
            })
            .collect();
        Self {
            version: STATE_VERSION,
            node: node.to_owned(),
            mesh_namespace: snapshot.mesh_namespace().to_owned(),
            ambient_namespaces,
            pods,
        }
    }

    pub fn decide(&self, namespace: &str, name: &str) -> OfflineDecision {
        if namespace == self.mesh_namespace {
            return OfflineDecision::NotAmbient;
        }
        let mode = self.pods.get(&format!("{namespace}/{name}")).copied();
        match mode {
            Some(PodMode::Ambient) => OfflineDecision::Ambient,
            Some(PodMode::Out) => OfflineDecision::NotAmbient,
            None if self.ambient_namespaces.contains(namespace) => OfflineDecision::Ambient,
            None => OfflineDecision::NotAmbient,
        }
    }

    /// `Ok(None)` when there is no state file.
    pub fn read(path: &Path) -> Result<Option<Self>, StateError> {
        let text = match std::fs::read(path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StateError::Io {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        let state: Self = serde_json::from_slice(&text).map_err(|source| StateError::Parse {
            path: path.to_owned(),
            source,
        })?;
        if state.version != STATE_VERSION {
            return Err(StateError::Version {
                path: path.to_owned(),
                version: state.version,
            });
        }
        Ok(Some(state))
    }

    /// Writes atomically: a reader sees the old file or the new one.
    pub fn write(&self, path: &Path) -> Result<(), StateError> {
        let io = |source| StateError::Io {
            path: path.to_owned(),
            source,
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(io)?;
        let tmp = path.with_extension("json.tmp");
        let mut file = std::fs::File::create(&tmp).map_err(io)?;
        let text = serde_json::to_vec_pretty(self).map_err(|err| io(std::io::Error::other(err)))?;
        file.write_all(&text).map_err(io)?;
        file.sync_all().map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }

    /// Removes the file (uninstall); absent is fine.
    pub fn remove(path: &Path) -> Result<(), StateError> {
        match std::fs::remove_file(path) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(StateError::Io {
                path: path.to_owned(),
                source: err,
            }),
            _ => Ok(()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state file {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state file {} is not valid: {source}", path.display())]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("state file {} has version {version}, this plugin reads {STATE_VERSION}", path.display())]
    Version { path: PathBuf, version: u32 },
}

#[cfg(test)]
mod tests {
    use super::*;
    use amesh_core::config::parse;

    const CONFIG: &str = "\
namespaces:
  - name: shop
    labels: {istio.io/dataplane-mode: ambient}
  - name: amesh-system
    labels: {istio.io/dataplane-mode: ambient}
workloads:
  - {uid: shop/web, name: web, namespace: shop, node: n1, ips: [10.0.0.2]}
  - {uid: shop/db, name: db, namespace: shop, node: n1, labels: {istio.io/dataplane-mode: none}}
  - {uid: shop/host, name: host, namespace: shop, node: n1, hostNetwork: true}
  - {uid: misc/one, name: one, namespace: misc, node: n1, ips: [10.0.0.3], labels: {istio.io/dataplane-mode: ambient}}
  - {uid: misc/far, name: far, namespace: misc, node: n2, ips: [10.0.0.4], labels: {istio.io/dataplane-mode: ambient}}
";

    #[test]
    fn decides_as_the_agent_would() {
        let snapshot = parse(CONFIG, Path::new("mesh.yaml"), "cluster.local").unwrap_or_default();
        let state = NodeState::from_snapshot(&snapshot, "n1");
        assert_eq!(
            state.ambient_namespaces,
            BTreeSet::from(["shop".to_owned()])
        );
        assert_eq!(state.decide("shop", "web"), OfflineDecision::Ambient);
        assert_eq!(state.decide("shop", "new-pod"), OfflineDecision::Ambient);
        assert_eq!(state.decide("shop", "db"), OfflineDecision::NotAmbient);
        assert_eq!(state.decide("shop", "host"), OfflineDecision::NotAmbient);
        assert_eq!(state.decide("misc", "one"), OfflineDecision::Ambient);
        assert_eq!(state.decide("misc", "other"), OfflineDecision::NotAmbient);
        // Another node's pods are not this node's business.
        assert!(!state.pods.contains_key("misc/far"));
        assert_eq!(
            state.decide("amesh-system", "agent"),
            OfflineDecision::NotAmbient
        );
    }

    #[test]
    fn round_trips_through_the_file() {
        let dir = std::env::temp_dir().join(format!("amesh-state-{}", std::process::id()));
        let path = dir.join("state.json");
        assert!(matches!(NodeState::read(&path), Ok(None)));
        let snapshot = parse(CONFIG, Path::new("mesh.yaml"), "cluster.local").unwrap_or_default();
        let state = NodeState::from_snapshot(&snapshot, "n1");
        state.write(&path).unwrap_or_else(|e| panic!("{e}"));
        let back = NodeState::read(&path).ok().flatten();
        assert_eq!(back.as_ref(), Some(&state));
        std::fs::write(&path, "{not json").unwrap_or_default();
        let err = NodeState::read(&path)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("is not valid"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
