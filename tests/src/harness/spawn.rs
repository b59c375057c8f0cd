//! Starting processes inside a netns, tied to the life of the test process.
//!
//! Children get `PR_SET_PDEATHSIG(SIGKILL)`, so a test binary that dies
//! (abort, SIGKILL, timeout) takes its daemons with it. The kernel sends that
//! signal when the *thread* that forked the child exits, not the process, and
//! test code runs on short-lived threads (test threads, `in_netns`, tokio's
//! blocking pool). So every fork happens on one spawner thread that lives as
//! long as the process.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use super::netns;

struct Request {
    command: Command,
    // Held open until the fork: the child's pre_exec setns uses its fd.
    _netns: File,
    reply: mpsc::Sender<io::Result<Child>>,
}

fn spawner() -> Result<mpsc::Sender<Request>> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Request>>> = OnceLock::new();
    let sender = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Request>();
        // If the thread cannot start, `rx` is dropped and every send fails
        // with a clear error below.
        let _ = std::thread::Builder::new()
            .name("harness-spawner".into())
            .spawn(move || {
                for mut req in rx {
                    let _ = req.reply.send(req.command.spawn());
                }
            });
        Mutex::new(tx)
    });
    let guard = sender
        .lock()
        .map_err(|_| anyhow!("spawner lock poisoned"))?;
    Ok(guard.clone())
}

/// Runs in the child between fork and exec: only async-signal-safe calls.
fn child_setup(netns_fd: RawFd, parent: libc::pid_t) -> io::Result<()> {
    // SAFETY: plain syscalls on an fd that is open in the child (inherited).
    unsafe {
        if libc::setns(netns_fd, libc::CLONE_NEWNET) != 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
            return Err(io::Error::last_os_error());
        }
        // The parent may have died before prctl took effect.
        if libc::getppid() != parent {
            libc::_exit(1);
        }
    }
    Ok(())
}

/// A command with stdin closed, to hand to [`spawn_in`].
pub fn command_in(program: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new(program);
    cmd.stdin(Stdio::null());
    cmd
}

/// Spawns `command` inside netns `netns_name`; it gets SIGKILL if the test
/// process dies.
pub fn spawn_in(netns_name: &str, mut command: Command) -> Result<Child> {
    let ns = netns::open(netns_name)?;
    let fd = ns.as_raw_fd();
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: child_setup only makes async-signal-safe syscalls.
    unsafe {
        command.pre_exec(move || child_setup(fd, parent));
    }
    let program = command.get_program().to_string_lossy().into_owned();
    let (reply, rx) = mpsc::channel();
    spawner()?
        .send(Request {
            command,
            _netns: ns,
            reply,
        })
        .map_err(|_| anyhow!("harness spawner thread is gone"))?;
    rx.recv()
        .map_err(|_| anyhow!("harness spawner thread is gone"))?
        .with_context(|| format!("spawn {program} in netns {netns_name}"))
}

/// Runs `program args` inside netns `netns_name` and collects its output; killed
/// (and an error returned) if it runs longer than `timeout`.
pub fn run_in(netns_name: &str, program: &str, args: &[&str], timeout: Duration) -> Result<Output> {
    let mut cmd = command_in(program);
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = spawn_in(netns_name, cmd)?;
    // Pipes are drained on their own threads so a chatty command cannot
    // block on a full pipe while we wait for it.
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    // Polled with try_wait rather than a blocking wait on another thread:
    // the Child stays unreaped until we know its status, so kill() below
    // can never hit a recycled pid.
    let start = Instant::now();
    let max_rounds = timeout.as_millis() / RUN_POLL.as_millis() + 2;
    let mut status = None;
    for _ in 0..max_rounds {
        status = child
            .try_wait()
            .with_context(|| format!("wait for {program}"))?;
        if status.is_some() || start.elapsed() >= timeout {
            break;
        }
        std::thread::sleep(RUN_POLL);
    }
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        bail!(
            "`{program} {}` in netns {netns_name} timed out after {timeout:?}",
            args.join(" ")
        );
    };
    Ok(Output {
        status,
        stdout: collect(stdout, program)?,
        stderr: collect(stderr, program)?,
    })
}

/// Short commands (curl) finish in milliseconds: poll often.
const RUN_POLL: Duration = Duration::from_millis(2);
/// After the command exited, its pipes close at once unless a grandchild
/// keeps them open; this bounds that case.
const PIPE_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Reads `pipe` to its end on a thread of its own, so a chatty child cannot
/// block on a full pipe while it is waited for.
pub(super) fn drain(pipe: Option<impl Read + Send + 'static>) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut buf);
        }
        let _ = tx.send(buf);
    });
    rx
}

fn collect(rx: mpsc::Receiver<Vec<u8>>, program: &str) -> Result<Vec<u8>> {
    rx.recv_timeout(PIPE_CLOSE_TIMEOUT)
        .map_err(|_| anyhow!("{program} exited but its output pipe stayed open"))
}
