//! Where each desired pod's netns is: the CNI plugin's report, the config's
//! name, or the node's namespace holding the pod's IP.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use amesh_core::config::Workload;
use tracing::debug;

use super::{Enroller, Problem};
use crate::netns::{self, NetnsId};
use crate::node_netns::Found;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NetnsOrigin {
    /// CNI ADD: a new sandbox, nothing runs in it yet.
    Cni,
    /// Known from an earlier CNI ADD (the pod was not in the mesh then):
    /// the pod is running.
    Registered,
    /// Named by the config source.
    Config,
    /// Found by the pod's IP: the pod was already running.
    Discovered,
}

#[derive(Debug, Clone)]
pub(super) struct Resolved {
    pub path: PathBuf,
    pub netns_id: NetnsId,
    pub origin: NetnsOrigin,
}

/// Per desired pod uid, its netns or why it has none. Pods left out: not
/// looked for on this pass (enrolled pods found by IP keep theirs; others
/// wait for a pass with `discover`).
pub(super) async fn resolve_all(
    enroller: &Enroller,
    desired: &BTreeMap<&str, &Arc<Workload>>,
    discover: bool,
) -> HashMap<String, Result<Resolved, Problem>> {
    let mut resolved = HashMap::new();
    let mut wanted_ips: HashMap<String, Vec<IpAddr>> = HashMap::new();
    for (uid, workload) in desired {
        let key = format!("{}/{}", workload.namespace, workload.name);
        if let Some(cni) = enroller.cni_pods.get(&key) {
            resolved.insert(
                uid.to_string(),
                Ok(Resolved {
                    path: cni.netns.clone(),
                    netns_id: cni.netns_id,
                    origin: if cni.fresh {
                        NetnsOrigin::Cni
                    } else {
                        NetnsOrigin::Registered
                    },
                }),
            );
        } else if let Some(name) = &workload.netns {
            let path = enroller.config.netns_dir.join(name);
            let found = match netns::id_at(&path) {
                Ok(Some(netns_id)) => Ok(Resolved {
                    path,
                    netns_id,
                    origin: NetnsOrigin::Config,
                }),
                Ok(None) => Err(Problem::NetnsMissing),
                Err(err) => Err(Problem::Netns(err.to_string())),
            };
            resolved.insert(uid.to_string(), found);
        } else if enroller.enrolled.contains_key(*uid) || !discover {
            continue;
        } else if workload.ips.is_empty() {
            resolved.insert(uid.to_string(), Err(Problem::NoIps));
        } else {
            wanted_ips.insert(uid.to_string(), workload.ips.clone());
        }
    }
    if wanted_ips.is_empty() {
        return resolved;
    }
    let all: HashSet<IpAddr> = wanted_ips.values().flatten().copied().collect();
    let scanner = enroller.scanner.clone();
    let found = match tokio::task::spawn_blocking(move || scanner.find_ips(&all)).await {
        Ok(found) => found,
        Err(err) => {
            debug!(error = %err, "netns scan task failed");
            return resolved;
        }
    };
    for (uid, ips) in wanted_ips {
        let outcome = pick(&ips, &found, &enroller.tombstones);
        resolved.insert(uid, outcome);
    }
    resolved
}

/// The one namespace holding the pod's addresses.
fn pick(
    ips: &[IpAddr],
    found: &BTreeMap<IpAddr, Found>,
    tombstones: &HashMap<NetnsId, PathBuf>,
) -> Result<Resolved, Problem> {
    let mut choice: Option<Resolved> = None;
    for ip in ips {
        match found.get(ip) {
            None => {}
            Some(Found::Ambiguous(paths)) => {
                return Err(Problem::Ambiguous {
                    ip: *ip,
                    paths: paths.iter().map(|p| p.display().to_string()).collect(),
                });
            }
            Some(Found::One(netns)) if tombstones.contains_key(&netns.id) => {}
            Some(Found::One(netns)) => match &choice {
                Some(chosen) if chosen.netns_id != netns.id => {
                    return Err(Problem::Ambiguous {
                        ip: *ip,
                        paths: vec![
                            chosen.path.display().to_string(),
                            netns.path.display().to_string(),
                        ],
                    });
                }
                Some(_) => {}
                None => {
                    choice = Some(Resolved {
                        path: netns.path.clone(),
                        netns_id: netns.id,
                        origin: NetnsOrigin::Discovered,
                    });
                }
            },
        }
    }
    choice.ok_or_else(|| Problem::NotFound(ips.to_vec()))
}
