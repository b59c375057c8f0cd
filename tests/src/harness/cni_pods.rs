//! Pods of a CNI mesh ([`super::MeshBuilder::cni`]): each node has a CNI
//! config dir with the primary network (bridge + host-local), a bin dir the
//! node agent installs `amesh-cni` into, and the harness plays the container
//! runtime: it creates the pod's netns, then runs the node's chain through
//! the CNI exec protocol.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::cni::{BridgeNetwork, CniRuntime, DEFAULT_BIN_DIR, PodAttachment, write_conflist};
use super::network::POD_SYSCTLS;
use super::process::binary;
use super::topology::{Mesh, Pod, PodSpec, v6_hextet};
use super::wait::poll_until;
use super::{netns, netns::NETNS_DIR};

/// The node's network, as a cluster installer names it.
pub const NETWORK_NAME: &str = "amesh-test";
const CONFLIST: &str = "10-amesh-test.conflist";
pub const PLUGIN_BIN: &str = "amesh-cni";
/// How long the agent gets to insert its plugin into the chain.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(15);

impl Mesh {
    fn cni_dir(&self, node: usize) -> PathBuf {
        self.node_dir(node).join("cni")
    }

    pub fn cni_conf_dir(&self, node: usize) -> PathBuf {
        self.cni_dir(node).join("net.d")
    }

    /// The "host" CNI bin dir the agent installs `amesh-cni` into; the
    /// reference plugins are found in [`DEFAULT_BIN_DIR`] after it.
    pub fn cni_bin_dir(&self, node: usize) -> PathBuf {
        self.cni_dir(node).join("bin")
    }

    /// The agent's state dir: CNI socket, node state file, records.
    pub fn agent_state_dir(&self, node: usize) -> PathBuf {
        self.node_dir(node).join("agent")
    }

    pub fn cni_socket(&self, node: usize) -> PathBuf {
        self.agent_state_dir(node).join("cni.sock")
    }

    pub fn state_file(&self, node: usize) -> PathBuf {
        self.agent_state_dir(node).join("cni-state.json")
    }

    /// The node agent's arguments for its CNI side (every mesh: each agent
    /// needs its own socket and state file; only CNI meshes install the
    /// plugin).
    pub(super) fn agent_cni_args(&self, node: usize) -> Result<Vec<String>> {
        let mut args = vec![
            "--cni-socket".to_owned(),
            self.cni_socket(node).display().to_string(),
            "--state-file".to_owned(),
            self.state_file(node).display().to_string(),
        ];
        if self.cni {
            args.extend([
                "--cni-bin-dir".to_owned(),
                self.cni_bin_dir(node).display().to_string(),
                "--cni-conf-dir".to_owned(),
                self.cni_conf_dir(node).display().to_string(),
                "--cni-plugin-binary".to_owned(),
                binary(PLUGIN_BIN)?.display().to_string(),
            ]);
        }
        Ok(args)
    }

    /// The primary network of every node, before any daemon runs.
    pub(super) fn write_cni_configs(&self) -> Result<()> {
        for node in &self.nodes {
            let dir = self.cni_dir(node.index);
            for sub in ["net.d", "bin", "cache", "ipam"] {
                std::fs::create_dir_all(dir.join(sub))
                    .with_context(|| format!("create {}", dir.join(sub).display()))?;
            }
            let [_, range, index, _] = node.pod_gateway.octets();
            let network =
                BridgeNetwork::new(NETWORK_NAME, "cni0", &format!("10.{range}.{index}.0/24"))
                    .ipv6(&format!("fd00:10:{:x}:{index:x}::/64", v6_hextet(range)))
                    .ipam_data_dir(dir.join("ipam"));
            write_conflist(&self.cni_conf_dir(node.index), CONFLIST, &network.to_json())?;
        }
        Ok(())
    }

    /// Node `node`'s primary network: bridge `cni0` and host-local over the
    /// node's pod ranges.
    pub fn primary_network(&self, node: usize) -> BridgeNetwork {
        let [_, range, index, _] = self.nodes[node].pod_gateway.octets();
        BridgeNetwork::new(NETWORK_NAME, "cni0", &format!("10.{range}.{index}.0/24"))
            .ipv6(&format!("fd00:10:{:x}:{index:x}::/64", v6_hextet(range)))
            .ipam_data_dir(self.cni_dir(node).join("ipam"))
    }

    /// Pods the cluster knows (they are in the config, with the addresses
    /// they will get) but no runtime has created yet.
    pub fn declare_pods(&mut self, specs: impl IntoIterator<Item = PodSpec>) -> Result<()> {
        for spec in specs {
            let pod = self.allocate_pod(spec)?;
            self.pods.push(pod);
        }
        self.write_config()
    }

    /// The runtime's first step for a pod: its netns, with the harness's
    /// sysctls and `lo` up.
    pub fn prepare_pod_netns(&mut self, name: &str) -> Result<Pod> {
        let pod = self.pod(name).clone();
        self.created_netns.push(pod.netns.clone());
        netns::add_all(std::slice::from_ref(&pod.netns))?;
        // Before eth0 exists, so it inherits them (DAD off: see network.rs).
        let sysctls: Vec<(&str, &str)> = POD_SYSCTLS
            .iter()
            .filter(|(k, _)| !k.contains(".eth0."))
            .copied()
            .collect();
        netns::sysctls(&pod.netns, &sysctls)?;
        netns::ip_batch(Some(&pod.netns), "link set lo up\n")?;
        Ok(pod)
    }

    /// The runtime's last step for a pod: its netns goes.
    pub fn release_pod_netns(&mut self, pod: &Pod) -> Result<()> {
        netns::delete_all(std::slice::from_ref(&pod.netns))?;
        self.created_netns.retain(|n| *n != pod.netns);
        Ok(())
    }

    /// The container runtime of node `node`.
    pub fn cni_runtime(&self, node: usize) -> CniRuntime {
        CniRuntime::new(self.cni_conf_dir(node), self.cni_dir(node).join("cache"))
            .bin_dirs([self.cni_bin_dir(node), PathBuf::from(DEFAULT_BIN_DIR)])
            .in_netns(&self.nodes[node].netns)
    }

    /// The sandbox of `pod` as the runtime describes it to CNI: its netns,
    /// and its addresses requested through the `ips` capability (so the
    /// config written before the pod existed is right).
    pub fn pod_attachment(&self, pod: &Pod) -> PodAttachment {
        let mut attachment =
            PodAttachment::new(&format!("sandbox-{}", pod.netns), netns::path(&pod.netns))
                .pod(&pod.namespace, &pod.name)
                .ips([format!("{}/24", pod.ip), format!("{}/64", pod.ip6())]);
        attachment.uid = format!("uid-{}", pod.uid.replace('/', "-"));
        attachment
    }

    /// Waits until node `node`'s agent has put `amesh-cni` in the chain.
    pub fn wait_plugin_installed(&mut self, node: usize) -> Result<()> {
        let runtime = self.cni_runtime(node);
        let what = format!("amesh-cni in node-{node}'s CNI chain");
        let result = poll_until(INSTALL_TIMEOUT, &what, || {
            let list = runtime.active_config()?;
            Ok(list
                .plugins
                .iter()
                .any(|p| p.get("type").and_then(Value::as_str) == Some(PLUGIN_BIN)))
        });
        result.map_err(|e| e.context(self.daemon_logs(node)))
    }

    /// The runtime's part of creating a pod: its netns, then CNI ADD.
    pub(super) fn create_pod_via_cni(&mut self, name: &str) -> Result<Value> {
        let pod = self.prepare_pod_netns(name)?;
        self.cni_runtime(pod.node)
            .add(&self.pod_attachment(&pod))
            .map_err(|e| anyhow::anyhow!("CNI ADD of pod {name}: {e}"))
    }

    /// The runtime's part of deleting a pod: CNI DEL, then its netns.
    pub(super) fn delete_pod_via_cni(&mut self, pod: &Pod) -> Result<()> {
        self.cni_runtime(pod.node)
            .del(&self.pod_attachment(pod))
            .map_err(|e| anyhow::anyhow!("CNI DEL of pod {}: {e}", pod.name))?;
        self.release_pod_netns(pod)
    }

    /// CNI meshes: every node's plugin installed, then every pod created.
    pub(super) fn create_cni_pods(&mut self) -> Result<()> {
        if !self.cni {
            return Ok(());
        }
        for node in 0..self.nodes.len() {
            self.wait_plugin_installed(node)?;
        }
        let names: Vec<String> = self.pods.iter().map(|p| p.name.clone()).collect();
        for name in names {
            if self
                .created_netns
                .iter()
                .any(|n| *n == self.pod(&name).netns)
            {
                continue;
            }
            let node = self.pod(&name).node;
            self.create_pod_via_cni(&name)
                .map_err(|e| e.context(self.daemon_logs(node)))?;
        }
        Ok(())
    }

    /// The agent's `uninstall` arguments for node `node` (CNI side included).
    pub fn uninstall_args(&self, node: usize) -> Result<Vec<String>> {
        let Some(n) = self.nodes.get(node) else {
            bail!("mesh has no node {node}");
        };
        let mut args = vec!["uninstall".to_owned()];
        // On the control plane the agent has no config file: its record
        // of enrolled pods is what uninstall works from.
        if self.control_plane.is_none() {
            args.push("--config".to_owned());
            args.push(self.config_path.display().to_string());
        }
        args.extend([
            "--node".to_owned(),
            n.name.clone(),
            "--netns-dir".to_owned(),
            NETNS_DIR.to_owned(),
            "--bpf-pin-dir".to_owned(),
            self.bpf_pin_dir(node).display().to_string(),
        ]);
        args.extend(self.agent_cni_args(node)?);
        Ok(args)
    }
}
