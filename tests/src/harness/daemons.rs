//! The mesh daemons: per node, `amesh-node-agent` then `ztunnel`, both in
//! the node netns, sharing the mesh config; and waiting on pod readiness.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::listen::is_listening;
use super::netns::NETNS_DIR;
use super::process::{Process, ProcessSpec, binary};
use super::topology::Mesh;
use super::wait::poll_until;

pub const AGENT_BIN: &str = "amesh-node-agent";
pub const ZTUNNEL_BIN: &str = "ztunnel";
/// ztunnel's inbound HBONE listener in every mesh pod: "ready" means this.
pub const HBONE_PORT: u16 = 15008;

/// How long the agent gets to create its ZDS socket.
const AGENT_SOCKET_TIMEOUT: Duration = Duration::from_secs(10);
/// Graceful-stop grace period for restarts.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// Log lines quoted in errors.
const LOG_TAIL: usize = 40;

impl Mesh {
    pub(super) fn node_dir(&self, node: usize) -> PathBuf {
        self.dir.join(format!("node-{node}"))
    }

    /// The ZDS socket shared by a node's agent and ztunnel.
    pub fn zds_socket(&self, node: usize) -> PathBuf {
        self.node_dir(node).join("ztunnel.sock")
    }

    /// Node `node`'s agent's bpffs pin dir (eBPF backend).
    pub fn bpf_pin_dir(&self, node: usize) -> PathBuf {
        super::capture::pin_dir(&self.prefix, node)
    }

    /// The CA directory all ztunnels share, so every node trusts one root.
    pub fn ca_dir(&self) -> PathBuf {
        self.dir.join("ca")
    }

    fn daemon_spec(&self, node: usize, bin: &str, extra: Vec<OsString>) -> Result<ProcessSpec> {
        let Some(n) = self.nodes.get(node) else {
            bail!("mesh has no node {node}");
        };
        let mut args: Vec<OsString> = vec!["--node".into(), n.name.clone().into()];
        args.extend(self.config_source_args(&n.name));
        args.extend(["--zds-socket".into(), self.zds_socket(node).into()]);
        args.extend(extra);
        Ok(ProcessSpec {
            label: format!("{bin} {}", n.name),
            binary: binary(bin)?,
            args,
            env: self
                .daemons
                .env
                .iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            netns: n.netns.clone(),
            log: self.node_dir(node).join(format!("{bin}.log")),
        })
    }

    fn agent_spec(&self, node: usize) -> Result<ProcessSpec> {
        let mut extra: Vec<OsString> = vec![
            "--netns-dir".into(),
            NETNS_DIR.into(),
            "--capture".into(),
            self.daemons.capture.as_arg().into(),
            "--bpf-pin-dir".into(),
            self.bpf_pin_dir(node).into(),
        ];
        extra.extend(self.agent_cni_args(node)?.into_iter().map(OsString::from));
        extra.extend(self.daemons.agent_args.iter().map(OsString::from));
        self.daemon_spec(node, AGENT_BIN, extra)
    }

    pub(super) fn ztunnel_spec(&self, node: usize) -> Result<ProcessSpec> {
        let mut extra: Vec<OsString> = Vec::new();
        if self.control_plane.is_none() {
            extra.extend(["--ca-dir".into(), self.ca_dir().into()]);
        }
        extra.extend(self.daemons.ztunnel_args.iter().map(OsString::from));
        self.daemon_spec(node, ZTUNNEL_BIN, extra)
    }

    /// Starts every node's agent and ztunnel (in a CNI mesh, then creates
    /// the pods through each node's CNI chain), then waits until every mesh
    /// pod has ztunnel's HBONE listener (bounded by the builder's ready
    /// timeout).
    pub fn start(&mut self) -> Result<()> {
        std::fs::create_dir_all(self.ca_dir()).context("create CA dir")?;
        self.start_control_plane()?;
        for node in 0..self.nodes.len() {
            self.start_agent(node)?;
            self.wait_agent_socket(node)?;
            self.start_ztunnel(node)?;
        }
        self.create_cni_pods()?;
        let timeout = self.daemons.ready_timeout;
        let mesh_pods: Vec<String> = self
            .pods
            .iter()
            .filter(|p| self.pod_in_mesh(p))
            .map(|p| p.name.clone())
            .collect();
        for pod in mesh_pods {
            self.wait_pod_ready(&pod, timeout)?;
        }
        Ok(())
    }

    pub fn start_agent(&mut self, node: usize) -> Result<()> {
        std::fs::create_dir_all(self.node_dir(node)).context("create node dir")?;
        let spec = self.agent_spec(node)?;
        start_slot(&mut self.daemon_state[node].agent, spec)
    }

    pub fn start_ztunnel(&mut self, node: usize) -> Result<()> {
        std::fs::create_dir_all(self.node_dir(node)).context("create node dir")?;
        let spec = self.ztunnel_spec(node)?;
        start_slot(&mut self.daemon_state[node].ztunnel, spec)
    }

    /// SIGKILL, as a crash would.
    pub fn kill_ztunnel(&mut self, node: usize) -> Result<()> {
        self.daemon_mut(node, ZTUNNEL_BIN)?.kill()
    }

    /// SIGTERM, then SIGKILL after a grace period.
    pub fn stop_ztunnel(&mut self, node: usize) -> Result<()> {
        self.daemon_mut(node, ZTUNNEL_BIN)?
            .stop(STOP_GRACE)
            .map(drop)
    }

    /// SIGTERM, then SIGKILL after a grace period; capture stays.
    pub fn stop_agent(&mut self, node: usize) -> Result<()> {
        self.daemon_mut(node, AGENT_BIN)?.stop(STOP_GRACE).map(drop)
    }

    pub fn kill_agent(&mut self, node: usize) -> Result<()> {
        self.daemon_mut(node, AGENT_BIN)?.kill()
    }

    /// Graceful stop then start of the node agent (ztunnel keeps running and
    /// must reconnect over ZDS).
    pub fn restart_agent(&mut self, node: usize) -> Result<()> {
        self.daemon_mut(node, AGENT_BIN)?.restart()
    }

    pub fn ztunnel_running(&mut self, node: usize) -> bool {
        self.daemon_mut(node, ZTUNNEL_BIN)
            .is_ok_and(|p| p.is_running())
    }

    pub fn agent_running(&mut self, node: usize) -> bool {
        self.daemon_mut(node, AGENT_BIN)
            .is_ok_and(|p| p.is_running())
    }

    pub fn ztunnel_pid(&self, node: usize) -> Option<u32> {
        self.daemon_state.get(node)?.ztunnel.as_ref()?.pid()
    }

    pub fn agent_pid(&self, node: usize) -> Option<u32> {
        self.daemon_state.get(node)?.agent.as_ref()?.pid()
    }

    /// The node's ztunnel log file (appended across restarts), for tools
    /// that follow it incrementally rather than re-reading it whole.
    pub fn ztunnel_log_path(&self, node: usize) -> PathBuf {
        self.node_dir(node).join(format!("{ZTUNNEL_BIN}.log"))
    }

    pub fn agent_log_path(&self, node: usize) -> PathBuf {
        self.node_dir(node).join(format!("{AGENT_BIN}.log"))
    }

    /// Everything the node's ztunnel logged, across restarts.
    pub fn ztunnel_log(&self, node: usize) -> String {
        std::fs::read_to_string(self.ztunnel_log_path(node)).unwrap_or_default()
    }

    pub fn agent_log(&self, node: usize) -> String {
        std::fs::read_to_string(self.agent_log_path(node)).unwrap_or_default()
    }

    /// Waits until ztunnel's HBONE listener is in the pod's netns. Fails early
    /// if the pod's ztunnel or agent has exited.
    pub fn wait_pod_ready(&mut self, pod: &str, timeout: Duration) -> Result<()> {
        self.wait_hbone_listener(pod, timeout, true)
    }

    /// Waits until the pod's netns has no HBONE listener any more.
    pub fn wait_pod_not_listening(&mut self, pod: &str, timeout: Duration) -> Result<()> {
        self.wait_hbone_listener(pod, timeout, false)
    }

    fn wait_hbone_listener(&mut self, pod: &str, timeout: Duration, want: bool) -> Result<()> {
        let Some(p) = self.try_pod(pod) else {
            bail!("mesh has no pod {pod}");
        };
        let (netns, node) = (p.netns.clone(), p.node);
        let what = format!(
            "pod {pod}: port {HBONE_PORT} {}",
            if want { "listening" } else { "closed" }
        );
        let result = poll_until(timeout, &what, || {
            if want {
                self.check_daemons_alive(node)?;
            }
            Ok(is_listening(&netns, HBONE_PORT)? == want)
        });
        result.map_err(|e| e.context(self.daemon_logs(node)))
    }

    /// The agent must create its ZDS socket before ztunnel connects to it.
    fn wait_agent_socket(&mut self, node: usize) -> Result<()> {
        let socket = self.zds_socket(node);
        let what = format!("agent on node-{node} to create {}", socket.display());
        let result = poll_until(AGENT_SOCKET_TIMEOUT, &what, || {
            if !self.agent_running(node) {
                bail!("{AGENT_BIN} on node-{node} exited");
            }
            Ok(socket.exists())
        });
        result.map_err(|e| e.context(self.daemon_logs(node)))
    }

    /// An error if a daemon of `node` was started and has since exited.
    fn check_daemons_alive(&mut self, node: usize) -> Result<()> {
        let Some(state) = self.daemon_state.get_mut(node) else {
            return Ok(());
        };
        for process in [state.agent.as_mut(), state.ztunnel.as_mut()]
            .into_iter()
            .flatten()
        {
            if !process.is_running() {
                bail!("{} exited ({:?})", process.label(), process.last_exit());
            }
        }
        Ok(())
    }

    /// Tails of a node's daemon logs, to put in error messages.
    pub fn daemon_logs(&self, node: usize) -> String {
        let Some(state) = self.daemon_state.get(node) else {
            return String::new();
        };
        [state.agent.as_ref(), state.ztunnel.as_ref()]
            .into_iter()
            .flatten()
            .map(|p| {
                format!(
                    "--- {} log (tail) ---\n{}\n",
                    p.label(),
                    p.log_tail(LOG_TAIL)
                )
            })
            .collect()
    }

    fn daemon_mut(&mut self, node: usize, bin: &str) -> Result<&mut Process> {
        let Some(state) = self.daemon_state.get_mut(node) else {
            bail!("mesh has no node {node}");
        };
        let slot = if bin == AGENT_BIN {
            &mut state.agent
        } else {
            &mut state.ztunnel
        };
        slot.as_mut()
            .with_context(|| format!("{bin} on node-{node} was never started"))
    }
}

/// Starts into an empty slot, or restarts the stopped process in it.
fn start_slot(slot: &mut Option<Process>, spec: ProcessSpec) -> Result<()> {
    match slot {
        Some(process) => process.start(),
        None => {
            *slot = Some(Process::spawn(spec)?);
            Ok(())
        }
    }
}
