//! The main job's binary, `localmesh`, run as a real process: one round
//! proves HBONE with both identities and leaves nothing behind; SIGINT in
//! the run loop removes everything and exits 0.
//!
//! Needs root (network namespaces, nftables) and the workspace binaries
//! (`cargo build --workspace --bins`), as the other end-to-end tests do.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use amesh_tests::harness::{NETNS_PREFIX, binary, leftovers, netns};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Setup takes about half a second here; a loaded CI machine (the suite
/// runs meshes in parallel) gets far more.
const RUN_TIMEOUT: Duration = Duration::from_secs(180);
const EXIT_TIMEOUT: Duration = Duration::from_secs(60);
const FRONTEND: &str = "spiffe://cluster.local/ns/default/sa/frontend";
const BACKEND: &str = "spiffe://cluster.local/ns/default/sa/backend";

/// A running `localmesh` whose stdout arrives line by line on a channel
/// (so the test can react to a line while the process keeps running).
struct Localmesh {
    child: Child,
    lines: mpsc::Receiver<String>,
    stdout: Vec<String>,
    stderr: mpsc::Receiver<String>,
}

impl Localmesh {
    fn spawn(args: &[&str]) -> Self {
        let mut child = Command::new(binary("localmesh").unwrap())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start localmesh");
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let (tx, stderr) = mpsc::channel();
        let mut pipe = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            let _ = tx.send(text);
        });
        Self {
            child,
            lines,
            stdout: Vec::new(),
            stderr,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every namespace this process creates starts with this.
    fn own_prefix(&self) -> String {
        format!("{NETNS_PREFIX}{}x", self.pid())
    }

    /// Reads stdout until a line satisfies `want` or `deadline` passes.
    fn wait_line(&mut self, deadline: Instant, want: impl Fn(&str) -> bool) -> Option<String> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.stdout.push(line.clone());
                    if want(&line) {
                        return Some(line);
                    }
                }
                Err(_) => return None,
            }
        }
    }

    /// Waits for the exit (killing it after `timeout`) and collects all output.
    fn finish(&mut self, timeout: Duration) -> (Option<ExitStatus>, String, String) {
        let deadline = Instant::now() + timeout;
        let mut status = None;
        while Instant::now() < deadline {
            status = self.child.try_wait().unwrap();
            if status.is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        // The pipes close when it exits; the reader threads then finish.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.stdout.push(line);
        }
        let stderr = self
            .stderr
            .recv_timeout(Duration::from_secs(5))
            .unwrap_or_default();
        (status, self.stdout.join("\n"), stderr)
    }

    /// Fails the test if any namespace of this process remains, after
    /// removing them so one failure does not leak into later runs.
    fn assert_nothing_left(&self, output: &str) {
        let left = leftovers(&self.own_prefix());
        if !left.is_empty() {
            let _ = netns::delete_all(&left);
            panic!("localmesh left namespaces behind: {left:?}\n{output}");
        }
    }
}

impl Drop for Localmesh {
    fn drop(&mut self) {
        // A failed assertion must not leave the process running; its
        // children die with it (PDEATHSIG).
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn is_hbone_with_identities(line: &str) -> bool {
    line.contains("over HBONE")
        && line.contains(&format!("client {FRONTEND}"))
        && line.contains(&format!("server {BACKEND}"))
}

#[test]
fn once_shows_hbone_identities_and_leaves_nothing_behind() {
    let mut run = Localmesh::spawn(&["--once", "--pod-range", "241"]);
    let (status, stdout, stderr) = run.finish(RUN_TIMEOUT);
    let output = format!("--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}");
    assert!(
        status.is_some_and(|s| s.success()),
        "exit {status:?}\n{output}"
    );
    let hbone = stdout
        .lines()
        .find(|l| is_hbone_with_identities(l))
        .unwrap_or_else(|| panic!("no HBONE line with both identities\n{output}"));
    assert!(
        hbone.contains("backend.default.svc.cluster.local -> backend-"),
        "the service resolved to an endpoint: {hbone}"
    );
    assert!(
        stdout.contains("arrived on") && stdout.contains("inbound as TCP"),
        "plaintext from legacy shown as TCP inbound\n{output}"
    );
    assert!(
        stdout.contains("-> legacy (") && stdout.contains("over TCP, passed through"),
        "mesh to non-mesh shown as passthrough\n{output}"
    );
    assert!(!stdout.contains("FAILED"), "{output}");

    // The banner names the prefix; it must be this process's.
    let prefix = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("netns prefix"))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no netns prefix in the banner\n{output}"));
    assert!(prefix.starts_with(&run.own_prefix()), "prefix {prefix}");
    assert!(stdout.contains(&format!(
        "nothing left: no network namespace starts with {prefix}"
    )));
    run.assert_nothing_left(&output);
}

#[test]
fn sigint_in_the_run_loop_removes_everything_and_exits_zero() {
    let mut run = Localmesh::spawn(&["--interval-ms", "200", "--pod-range", "242"]);
    let first = run.wait_line(Instant::now() + RUN_TIMEOUT, |l| l.starts_with("[1] "));
    if first.is_none() {
        let (status, stdout, stderr) = run.finish(Duration::ZERO);
        panic!("no request line in time (exit {status:?})\n{stdout}\n{stderr}");
    }
    kill(Pid::from_raw(run.pid() as i32), Signal::SIGINT).unwrap();
    let (status, stdout, stderr) = run.finish(EXIT_TIMEOUT);
    let output = format!("--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}");
    assert!(
        status.is_some_and(|s| s.success()),
        "exit {status:?}\n{output}"
    );
    assert!(stdout.contains("SIGINT: removing the mesh"), "{output}");
    assert!(stdout.contains("deleted 7 network namespaces"), "{output}");
    assert!(stdout.contains("nothing left"), "{output}");
    run.assert_nothing_left(&output);
}
