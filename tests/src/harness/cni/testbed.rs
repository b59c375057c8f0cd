//! A throwaway node for CNI tests: a "node" netns the plugins run in, pod
//! namespaces, and a temp dir with the conf dir, result cache and IPAM
//! store. Named with the harness prefix (`amt<pid>x<n>-`), so a crashed
//! test's namespaces are swept by the next harness run; dropped, it deletes
//! them all, also while a test panics.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use tempfile::TempDir;

use super::runtime::{CniRuntime, PodAttachment};
use crate::harness::{naming, netns};

/// The node routes for its pods (the bridge plugin would turn forwarding
/// on anyway); DAD off so the bridge's gateway addresses work at once.
const NODE_SYSCTLS: &[(&str, &str)] = &[
    ("net.ipv4.ip_forward", "1"),
    ("net.ipv6.conf.all.forwarding", "1"),
    ("net.ipv6.conf.all.accept_dad", "0"),
    ("net.ipv6.conf.default.accept_dad", "0"),
];
/// Set before ADD, so the eth0 the plugin creates inherits them: without
/// DAD its IPv6 address is usable at once, and the bridge plugin does not
/// wait for it to settle.
const POD_SYSCTLS: &[(&str, &str)] = &[
    ("net.ipv6.conf.all.accept_dad", "0"),
    ("net.ipv6.conf.default.accept_dad", "0"),
];

#[derive(Debug)]
pub struct CniTestbed {
    prefix: String,
    node: String,
    created: Vec<String>,
    tmp: TempDir,
}

impl CniTestbed {
    /// Creates the node netns (lo up) and the temp dir.
    pub fn new() -> Result<Self> {
        naming::remove_stale();
        let prefix = naming::new_prefix();
        let tmp = tempfile::Builder::new()
            .prefix(&prefix)
            .tempdir()
            .context("create CNI testbed temp dir")?;
        let node = format!("{prefix}node");
        // From here on, Drop deletes whatever was created.
        let bed = Self {
            prefix,
            node: node.clone(),
            created: vec![node.clone()],
            tmp,
        };
        netns::add_all(std::slice::from_ref(&node))?;
        netns::sysctls(&node, NODE_SYSCTLS)?;
        netns::ip_batch(Some(&node), "link set lo up\n")?;
        for dir in [bed.conf_dir(), bed.cache_dir(), bed.ipam_dir()] {
            std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        }
        Ok(bed)
    }

    /// The node netns name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// `amt<pid>x<n>-`: what every name of this testbed starts with.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn dir(&self) -> &Path {
        self.tmp.path()
    }

    pub fn conf_dir(&self) -> PathBuf {
        self.dir().join("net.d")
    }

    pub fn cache_dir(&self) -> PathBuf {
        self.dir().join("cache")
    }

    /// For host-local's `dataDir`.
    pub fn ipam_dir(&self) -> PathBuf {
        self.dir().join("ipam")
    }

    /// A runtime on this node: its conf dir and cache, plugins from the
    /// default bin dir, run in the node netns.
    pub fn runtime(&self) -> CniRuntime {
        CniRuntime::new(self.conf_dir(), self.cache_dir()).in_netns(&self.node)
    }

    /// Creates an empty pod netns `<prefix><name>` ready for ADD and returns
    /// its path.
    pub fn pod_netns(&mut self, name: &str) -> Result<PathBuf> {
        let ns = format!("{}{name}", self.prefix);
        self.created.push(ns.clone());
        netns::add_all(std::slice::from_ref(&ns))?;
        netns::sysctls(&ns, POD_SYSCTLS)?;
        Ok(netns::path(&ns))
    }

    /// A pod netns plus its attachment: container id `<prefix><name>`, pod
    /// `default/<name>`, eth0.
    pub fn pod(&mut self, name: &str) -> Result<PodAttachment> {
        let path = self.pod_netns(name)?;
        Ok(PodAttachment::new(&format!("{}{name}", self.prefix), path).pod("default", name))
    }

    /// The netns name of pod `name`.
    pub fn pod_netns_name(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }
}

impl Drop for CniTestbed {
    fn drop(&mut self) {
        if let Err(e) = netns::delete_all(&self.created) {
            eprintln!("CNI testbed {}: deleting namespaces: {e:#}", self.prefix);
        }
    }
}
