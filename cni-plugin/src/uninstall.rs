//! Explicit removal of capture from every pod the agent captured. Never run
//! on agent shutdown: a restarting agent leaves capture in place.
//!
//! The pods are found three ways, so that none is missed whatever told the
//! agent about it: the agent's record of enrolled pods (CNI-added ones
//! included), the netns the config names, and the netns holding the IPs of
//! the config's pods on this node.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use amesh_core::config::ConfigSnapshot;
use tracing::{error, info, warn};

use crate::capture::{Capture, NodeProbeSnat, PodNetns};
use crate::enroll::{EnrolledRecord, pin_key};
use crate::netns::{self, Netns};
use crate::node_netns::{Found, NetnsScanner};

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UninstallReport {
    /// Pod netns whose capture was removed (or had none).
    pub cleaned: usize,
    /// Pods whose netns could not be found (gone with their pod).
    pub missing: usize,
    pub failed: usize,
}

/// What to clean: the record, the config's pods (only those on `node`, when
/// given), found in `netns_dir` or by IP.
#[derive(Debug)]
pub struct Targets<'a> {
    pub snapshot: &'a ConfigSnapshot,
    pub node: Option<&'a str>,
    pub netns_dir: &'a Path,
    pub record: &'a EnrolledRecord,
    pub scanner: &'a NetnsScanner,
}

/// Removes capture from every target pod netns, then the node's probe SNAT
/// table. Errors are logged and counted; the rest goes on.
pub fn uninstall(
    targets: &Targets<'_>,
    capture: &dyn Capture,
    probe: &NodeProbeSnat,
) -> UninstallReport {
    let mut report = UninstallReport::default();
    let mut seen = HashSet::new();
    for (uid, path) in pod_netns(targets, &mut report) {
        let Ok(Some(id)) = netns::id_at(&path) else {
            report.missing += 1;
            continue;
        };
        if targets.scanner.is_host(id) || !seen.insert(id) {
            continue;
        }
        let pod = PodNetns {
            name: pin_key(&uid),
            path: path.clone(),
            ips: Vec::new(),
        };
        match capture.remove(&pod) {
            Ok(()) => {
                reset_fwmark_accept(&path);
                info!(pod = %uid, netns = %path.display(), "capture removed");
                report.cleaned += 1;
            }
            Err(err) => {
                error!(pod = %uid, netns = %path.display(), error = %err, "cannot remove capture");
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

/// (uid, netns path) of every pod to clean.
fn pod_netns(targets: &Targets<'_>, report: &mut UninstallReport) -> Vec<(String, PathBuf)> {
    let mut found: Vec<(String, PathBuf)> = targets
        .record
        .iter()
        .map(|(uid, path)| (uid.clone(), path.clone()))
        .collect();
    let mut by_ip: BTreeMap<IpAddr, String> = BTreeMap::new();
    for workload in targets.snapshot.workloads() {
        if targets.node.is_some_and(|node| workload.node != node) || workload.host_network {
            continue;
        }
        match &workload.netns {
            Some(name) => found.push((workload.uid.clone(), targets.netns_dir.join(name))),
            None => {
                for ip in &workload.ips {
                    by_ip.insert(*ip, workload.uid.clone());
                }
            }
        }
    }
    let wanted: HashSet<IpAddr> = by_ip.keys().copied().collect();
    for (ip, holder) in targets.scanner.find_ips(&wanted) {
        let uid = by_ip.get(&ip).cloned().unwrap_or_default();
        match holder {
            Found::One(netns) => found.push((uid, netns.path)),
            Found::Ambiguous(paths) => {
                warn!(pod = %uid, %ip, ?paths, "more than one netns holds the pod's IP; left alone");
                report.failed += 1;
            }
        }
    }
    found
}

/// The eBPF backend turns `tcp_fwmark_accept` on in each pod; back to the
/// kernel default.
fn reset_fwmark_accept(path: &Path) {
    let Ok(netns) = Netns::open(path) else {
        return;
    };
    let result = netns.run(|| std::fs::write("/proc/sys/net/ipv4/tcp_fwmark_accept", "0"));
    if let Ok(Err(err)) | Err(err) = result {
        warn!(netns = %path.display(), error = %err, "cannot reset tcp_fwmark_accept");
    }
}
