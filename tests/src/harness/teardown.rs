//! Tearing a mesh down, also while a test panics.

use super::netns;
use super::topology::Mesh;

/// Set to keep a mesh's temp dir (config, logs) after the test.
const KEEP_ENV: &str = "AMESH_KEEP_TMP";
const PANIC_LOG_TAIL: usize = 40;

impl Mesh {
    /// Pids of every process the mesh has running (daemons and apps).
    pub fn pids(&self) -> Vec<u32> {
        let daemons = self
            .daemon_state
            .iter()
            .flat_map(|d| [d.agent.as_ref(), d.ztunnel.as_ref()]);
        daemons
            .chain(self.apps.values().map(Some))
            .flatten()
            .filter_map(|p| p.pid())
            .collect()
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        // A failing test's best evidence is in the logs about to be deleted.
        if std::thread::panicking() {
            for node in 0..self.nodes.len() {
                eprint!("{}", self.daemon_logs(node));
            }
            for app in self.apps.values() {
                eprintln!(
                    "--- {} log (tail) ---\n{}",
                    app.label(),
                    app.log_tail(PANIC_LOG_TAIL)
                );
            }
        }
        // Processes first: a netns is only freed once nothing runs in it.
        for (_, mut app) in std::mem::take(&mut self.apps) {
            let _ = app.kill();
        }
        for state in &mut self.daemon_state {
            for process in [state.ztunnel.as_mut(), state.agent.as_mut()]
                .into_iter()
                .flatten()
            {
                let _ = process.kill();
            }
        }
        if let Err(e) = netns::delete_all(&self.created_netns) {
            eprintln!("mesh {}: deleting namespaces: {e:#}", self.prefix);
        }
        // Unpinning detaches the eBPF backend's programs from the cgroup.
        super::capture::remove_pins(&self.prefix);
        if std::env::var_os(KEEP_ENV).is_some()
            && let Some(tmp) = self.tmp.take()
        {
            eprintln!("mesh {}: kept {}", self.prefix, tmp.keep().display());
        }
    }
}
