//! The primary pod network of a test node: the reference `bridge` plugin
//! with `host-local` IPAM, written as a conflist the way a cluster installer
//! would. The node agent later appends its own plugin to the same file.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::{Value, json};

use crate::harness::write_atomic;

/// A bridge + host-local network.
#[derive(Debug, Clone)]
pub struct BridgeNetwork {
    pub name: String,
    pub cni_version: String,
    /// The node-side bridge, created by the plugin on first ADD.
    pub bridge: String,
    pub subnet_v4: String,
    pub subnet_v6: Option<String>,
    /// host-local's store (`<dir>/<network name>/<ip>`); `None` is its
    /// default /var/lib/cni/networks, shared by everything on the machine.
    pub ipam_data_dir: Option<PathBuf>,
}

impl BridgeNetwork {
    /// cniVersion 1.0.0, the newest the Debian 1.1.1 plugins speak.
    pub fn new(name: &str, bridge: &str, subnet_v4: &str) -> Self {
        Self {
            name: name.into(),
            cni_version: "1.0.0".into(),
            bridge: bridge.into(),
            subnet_v4: subnet_v4.into(),
            subnet_v6: None,
            ipam_data_dir: None,
        }
    }

    /// Dual stack: one host-local range set per family.
    pub fn ipv6(mut self, subnet_v6: &str) -> Self {
        self.subnet_v6 = Some(subnet_v6.into());
        self
    }

    pub fn cni_version(mut self, version: &str) -> Self {
        self.cni_version = version.into();
        self
    }

    pub fn ipam_data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.ipam_data_dir = Some(dir.into());
        self
    }

    /// The conflist. The bridge is the gateway (the node routes for its
    /// pods) without masquerading or hairpin: the mesh sees pod addresses
    /// unchanged. `capabilities.ips` lets the runtime's requested addresses
    /// through, which the bridge passes on to host-local with its whole config.
    pub fn to_json(&self) -> Value {
        let mut ranges = vec![json!([{ "subnet": self.subnet_v4 }])];
        let mut routes = vec![json!({ "dst": "0.0.0.0/0" })];
        if let Some(v6) = &self.subnet_v6 {
            ranges.push(json!([{ "subnet": v6 }]));
            routes.push(json!({ "dst": "::/0" }));
        }
        let mut ipam = json!({ "type": "host-local", "ranges": ranges, "routes": routes });
        if let Some(dir) = &self.ipam_data_dir {
            ipam["dataDir"] = json!(dir);
        }
        json!({
            "cniVersion": self.cni_version,
            "name": self.name,
            "plugins": [{
                "type": "bridge",
                "bridge": self.bridge,
                "isGateway": true,
                "ipMasq": false,
                "hairpinMode": false,
                "capabilities": { "ips": true },
                "ipam": ipam,
            }],
        })
    }

    /// Writes the conflist as `<conf_dir>/<file_name>`.
    pub fn write(&self, conf_dir: &Path, file_name: &str) -> Result<PathBuf> {
        write_conflist(conf_dir, file_name, &self.to_json())
    }
}

/// Writes any config (list or single plugin) into `conf_dir`, atomically so
/// a runtime reading the directory never sees half a file.
pub fn write_conflist(conf_dir: &Path, file_name: &str, config: &Value) -> Result<PathBuf> {
    std::fs::create_dir_all(conf_dir)
        .with_context(|| format!("create CNI conf dir {}", conf_dir.display()))?;
    let path = conf_dir.join(file_name);
    let text = serde_json::to_string_pretty(config)?;
    write_atomic(&path, &text)?;
    Ok(path)
}
