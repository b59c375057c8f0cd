//! The network namespaces on this node, and which one holds a pod's IP.
//!
//! Pods that were running before the agent knew them (their namespace was
//! labelled later, or the agent restarted) have no CNI call to tell where
//! their netns is. Their netns is found the way a person would: among the
//! namespaces bind-mounted by the runtime (containerd and CRI-O mount them
//! under `/var/run/netns`) and those of running processes (`/proc/<pid>/ns/net`,
//! for runtimes that mount none), the one whose interfaces carry the pod's
//! IP. The node's own netns (the agent's, and init's) is never a candidate:
//! the node must never be captured.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use tracing::debug;

use crate::netns::{self, Netns, NetnsId};

/// Where to look.
#[derive(Debug, Clone)]
pub struct NetnsScanner {
    /// Directories of netns bind mounts.
    pub netns_dirs: Vec<PathBuf>,
    /// Also the namespaces of running processes.
    pub scan_proc: bool,
    /// Never candidates: the agent's netns and init's.
    host: HashSet<NetnsId>,
}

/// One namespace on the node, by a path that opens it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeNetns {
    pub id: NetnsId,
    pub path: PathBuf,
}

/// A pod IP's home.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    One(NodeNetns),
    /// More than one namespace has the address: refusing to guess.
    Ambiguous(Vec<PathBuf>),
}

impl NetnsScanner {
    pub fn new(netns_dirs: Vec<PathBuf>, scan_proc: bool) -> Self {
        let host = ["/proc/self/ns/net", "/proc/1/ns/net"]
            .iter()
            .filter_map(|p| netns::id_at(Path::new(p)).ok().flatten())
            .collect();
        Self {
            netns_dirs,
            scan_proc,
            host,
        }
    }

    /// Whether `id` is the node's own namespace.
    pub fn is_host(&self, id: NetnsId) -> bool {
        self.host.contains(&id)
    }

    /// Every namespace on the node but the host's, each once (bind mounts
    /// first: their paths outlive processes).
    pub fn list(&self) -> Vec<NodeNetns> {
        let mut seen: HashSet<NetnsId> = self.host.clone();
        let mut found = Vec::new();
        let mut consider = |path: PathBuf| {
            if let Ok(Some(id)) = netns::id_at(&path)
                && seen.insert(id)
            {
                found.push(NodeNetns { id, path });
            }
        };
        for dir in &self.netns_dirs {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
            paths.sort();
            paths.into_iter().for_each(&mut consider);
        }
        if self.scan_proc
            && let Ok(entries) = std::fs::read_dir("/proc")
        {
            for entry in entries.flatten() {
                let name = entry.file_name();
                if name
                    .to_str()
                    .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
                {
                    consider(entry.path().join("ns/net"));
                }
            }
        }
        found
    }

    /// For each of `ips`, the namespace that holds it (on any interface but
    /// loopback). Addresses nobody holds are absent from the map.
    pub fn find_ips(&self, ips: &HashSet<IpAddr>) -> BTreeMap<IpAddr, Found> {
        let mut holders: BTreeMap<IpAddr, Vec<NodeNetns>> = BTreeMap::new();
        if ips.is_empty() {
            return BTreeMap::new();
        }
        for candidate in self.list() {
            // Only namespaces that still exist and are really namespaces
            // (a bind-mount target not yet mounted is a plain file).
            let Ok(netns) = Netns::open(&candidate.path) else {
                continue;
            };
            match addresses_in(&netns) {
                Ok(held) => {
                    for ip in held.into_iter().filter(|ip| ips.contains(ip)) {
                        holders.entry(ip).or_default().push(candidate.clone());
                    }
                }
                Err(err) => {
                    debug!(netns = %candidate.path.display(), error = %err, "cannot list addresses")
                }
            }
        }
        holders
            .into_iter()
            .map(|(ip, mut netns)| {
                let found = if netns.len() == 1 {
                    Found::One(netns.remove(0))
                } else {
                    Found::Ambiguous(netns.into_iter().map(|n| n.path).collect())
                };
                (ip, found)
            })
            .collect()
    }
}

/// The addresses on `netns`'s interfaces, loopback excluded.
fn addresses_in(netns: &Netns) -> std::io::Result<Vec<IpAddr>> {
    netns.run(|| -> std::io::Result<Vec<IpAddr>> {
        let addrs = nix::ifaddrs::getifaddrs().map_err(std::io::Error::from)?;
        Ok(addrs
            .filter_map(|a| {
                let addr = a.address?;
                if let Some(v4) = addr.as_sockaddr_in() {
                    Some(IpAddr::V4(v4.ip()))
                } else {
                    addr.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
                }
            })
            .filter(|ip| !ip.is_loopback())
            .collect())
    })?
}
