//! Explicit removal of everything the agent installed. Never run on agent
//! shutdown: a restarting agent leaves capture in place.

use std::path::Path;

use amesh_core::config::ConfigSnapshot;
use tracing::{error, info};

use crate::capture::{Capture, NodeProbeSnat, PodNetns};

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UninstallReport {
    /// Pod netns whose capture was removed (or had none).
    pub cleaned: usize,
    /// Pod netns listed in the config but absent from the netns dir.
    pub missing: usize,
    pub failed: usize,
}

/// Removes capture from every pod netns the config names (only those on
/// `node`, when given), then the node's probe SNAT table. Errors are logged
/// and counted; the rest goes on.
pub fn uninstall(
    snapshot: &ConfigSnapshot,
    node: Option<&str>,
    netns_dir: &Path,
    capture: &dyn Capture,
    probe: &NodeProbeSnat,
) -> UninstallReport {
    let mut report = UninstallReport::default();
    for workload in snapshot.workloads() {
        if node.is_some_and(|node| workload.node != node) {
            continue;
        }
        let name = &workload.netns.clone().unwrap_or_else(|| workload.name.clone());
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            continue;
        }
        let pod = PodNetns {
            name: name.clone(),
            path: netns_dir.join(name),
            ips: workload.ips.clone(),
        };
        if !pod.path.exists() {
            report.missing += 1;
            continue;
        }
        match capture.remove(&pod) {
            Ok(()) => {
                info!(pod = %workload.uid, netns = %name, "capture removed");
                report.cleaned += 1;
            }
            Err(err) => {
                error!(pod = %workload.uid, netns = %name, error = %err, "cannot remove capture");
                report.failed += 1;
            }
        }
    }
    match probe.remove() {
        Ok(()) => info!("kubelet probe SNAT table removed"),
        Err(err) => {
            error!(error = %err, "cannot remove the kubelet probe SNAT table");
            report.failed += 1;
        }
    }
    report
}
