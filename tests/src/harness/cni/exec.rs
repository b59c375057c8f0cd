//! Running one plugin binary, as libcni's `RawExec` does: network config on
//! stdin, parameters in `CNI_*` environment variables, exit status 0 with the
//! result (or nothing) on stdout, or non-zero with an error JSON on stdout.

use crate::harness::spawn::drain;
use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{Id, WaitPidFlag, waitid};
use nix::unistd::Pid;

use crate::harness::spawn_in;

/// Upper bound on one plugin run; containerd's default CNI timeout is far
/// longer, but a reference plugin finishes in well under a second.
pub const PLUGIN_TIMEOUT: Duration = Duration::from_secs(60);

/// PATH for plugins when the test process has none: plugins may run
/// `iptables`/`ip`, and delegate to IPAM plugins via CNI_PATH, not PATH.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// After the plugin exited its pipes close at once, unless something it
/// started still holds them; this bounds that case.
const PIPE_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// What a plugin run produced.
#[derive(Debug, Clone)]
pub struct PluginOutput {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// The plugin binary for `plugin_type`: the first `<dir>/<type>` that is a
/// regular file, in `bin_dirs` order (libcni's `FindInPath`).
pub fn find_plugin(plugin_type: &str, bin_dirs: &[PathBuf]) -> Result<PathBuf> {
    if plugin_type.is_empty() || plugin_type.contains('/') {
        bail!("invalid plugin type {plugin_type:?}");
    }
    bin_dirs
        .iter()
        .map(|dir| dir.join(plugin_type))
        .find(|path| path.metadata().is_ok_and(|m| m.is_file()))
        .with_context(|| format!("failed to find plugin {plugin_type:?} in path {bin_dirs:?}"))
}

/// Runs `plugin` with exactly `env` (plus PATH), `stdin` on its standard
/// input, inside netns `netns` (a name under /var/run/netns; `None` = this
/// process's netns). Raw: the caller interprets status and output. Killed,
/// with anything it started, after `timeout`, which is then an error.
pub fn exec_plugin<K, V>(
    plugin: &Path,
    env: &[(K, V)],
    stdin: &[u8],
    netns: Option<&str>,
    timeout: Duration,
) -> Result<PluginOutput>
where
    K: AsRef<OsStr>,
    V: AsRef<OsStr>,
{
    let mut cmd = Command::new(plugin);
    // A runtime's own environment is none of the plugin's business; PATH is
    // kept because plugins run iptables and friends.
    cmd.env_clear()
        .env(
            "PATH",
            std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into()),
        )
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a timeout also kills the IPAM plugin it
        // delegated to.
        .process_group(0);
    let mut child = match netns {
        Some(ns) => spawn_in(ns, cmd)?,
        None => cmd
            .spawn()
            .with_context(|| format!("spawn {}", plugin.display()))?,
    };
    // Fed from a thread: a plugin that exits (or stalls) without reading
    // must not block us on a full pipe.
    if let Some(mut pipe) = child.stdin.take() {
        let input = stdin.to_vec();
        std::thread::spawn(move || {
            // EPIPE just means the plugin did not read it all.
            let _ = pipe.write_all(&input);
        });
    }
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let status = wait_bounded(&mut child, timeout)
        .with_context(|| format!("wait for {}", plugin.display()))?;
    let Some(status) = status else {
        bail!("plugin {} timed out after {timeout:?}", plugin.display());
    };
    Ok(PluginOutput {
        status,
        stdout: collect(stdout, plugin)?,
        stderr: collect(stderr, plugin)?,
    })
}

/// Waits up to `timeout` for `child`; on timeout kills its process group and
/// returns `None`. A helper thread only *observes* the exit (`WNOWAIT`), so
/// the child stays unreaped, and its pid ours, until `child.wait()` here:
/// the kill can never hit a recycled pid.
fn wait_bounded(child: &mut Child, timeout: Duration) -> Result<Option<ExitStatus>> {
    let pid = Pid::from_raw(i32::try_from(child.id()).context("pid out of range")?);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let exited = loop {
            match waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT) {
                Err(Errno::EINTR) => continue,
                other => break other.map(|_| ()),
            }
        };
        let _ = tx.send(exited);
    });
    let timed_out = match rx.recv_timeout(timeout) {
        Ok(exited) => {
            exited.context("waitid")?;
            false
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            // The group may be gone already if it exited just now.
            let _ = killpg(pid, Signal::SIGKILL);
            true
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => return Err(anyhow!("waiter thread died")),
    };
    let status = child.wait()?;
    Ok((!timed_out).then_some(status))
}

fn collect(rx: mpsc::Receiver<Vec<u8>>, plugin: &Path) -> Result<Vec<u8>> {
    rx.recv_timeout(PIPE_CLOSE_TIMEOUT).map_err(|_| {
        anyhow!(
            "{} exited but its output pipe stayed open",
            plugin.display()
        )
    })
}
