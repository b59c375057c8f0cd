//! ztunnel upgrades as a DaemonSet rollout does them: a new ztunnel starts
//! beside the running one, then the old one gets SIGTERM and drains.

use std::process::ExitStatus;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::process::Process;
use super::topology::Mesh;
use super::wait::poll_until;

/// What the new ztunnel logs once it serves every pod the agent has.
const SNAPSHOT_APPLIED: &str = "node agent snapshot received";

impl Mesh {
    /// Starts a second ztunnel on `node` beside the running one (which moves
    /// to the "old" slot) and waits until it has applied the node agent's
    /// snapshot, i.e. listens in every pod. It logs to `ztunnel-new.log`.
    pub fn start_new_ztunnel(&mut self, node: usize, timeout: Duration) -> Result<()> {
        let mut spec = self.ztunnel_spec(node)?;
        spec.label.push_str(" (new)");
        spec.log.set_file_name("ztunnel-new.log");
        let log = spec.log.clone();
        let Some(state) = self.daemon_state.get_mut(node) else {
            bail!("mesh has no node {node}");
        };
        if state.old_ztunnel.is_some() {
            bail!("node-{node} is already upgrading");
        }
        let new = Process::spawn(spec)?;
        state.old_ztunnel = state.ztunnel.replace(new);
        poll_until(timeout, "the new ztunnel to apply the snapshot", || {
            Ok(std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains(SNAPSHOT_APPLIED))
        })
        .with_context(|| {
            format!(
                "new ztunnel log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        })
    }

    /// Sends SIGTERM to the old ztunnel of an upgrade (without waiting).
    pub fn terminate_old_ztunnel(&mut self, node: usize) -> Result<()> {
        let pid = self
            .daemon_state
            .get(node)
            .and_then(|s| s.old_ztunnel.as_ref())
            .and_then(Process::pid)
            .context("no old ztunnel running")?;
        kill(Pid::from_raw(pid as i32), Signal::SIGTERM).context("SIGTERM the old ztunnel")
    }

    /// The old ztunnel's exit status once it has exited.
    pub fn old_ztunnel_exit(&mut self, node: usize) -> Option<ExitStatus> {
        self.daemon_state
            .get_mut(node)?
            .old_ztunnel
            .as_mut()?
            .exit_status()
    }

    /// The old ztunnel's log (the node's main ztunnel log).
    pub fn old_ztunnel_log(&self, node: usize) -> String {
        self.ztunnel_log(node)
    }
}
