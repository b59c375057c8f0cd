//! A built binary running as a real process inside a netns, with its output
//! in a log file.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::spawn::{command_in, spawn_in};
use super::wait::POLL_INTERVAL;

/// Locates a workspace binary by name.
///
/// `AMESH_BIN_DIR` if set; otherwise, when the current executable is a test
/// in `target/<profile>/deps/`, `target/<profile>/`; otherwise the current
/// executable's own directory (e.g. meshbench in `target/<profile>/`).
pub fn binary(name: &str) -> Result<PathBuf> {
    let dir = match std::env::var_os("AMESH_BIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let exe = std::env::current_exe().context("current_exe")?;
            let here = exe.parent().context("current_exe has no parent")?;
            match here.parent() {
                Some(profile) if here.file_name().is_some_and(|n| n == "deps") => {
                    profile.to_path_buf()
                }
                _ => here.to_path_buf(),
            }
        }
    };
    let path = dir.join(name);
    if !path.is_file() {
        bail!(
            "binary `{name}` not found at {}: run `cargo build --workspace --bins` \
             (same profile as the tests) or set AMESH_BIN_DIR",
            path.display()
        );
    }
    Ok(path)
}

/// How to (re)start a process.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    /// Short name for messages, e.g. `ztunnel node-0`.
    pub label: String,
    pub binary: PathBuf,
    pub args: Vec<OsString>,
    pub env: Vec<(OsString, OsString)>,
    /// Empty: the caller's own network namespace.
    pub netns: String,
    /// stdout and stderr are appended here (kept across restarts).
    pub log: PathBuf,
}

/// A running (or stopped) child process. Dropping it kills it.
#[derive(Debug)]
pub struct Process {
    spec: ProcessSpec,
    child: Option<Child>,
    last_exit: Option<ExitStatus>,
}

impl Process {
    pub fn spawn(spec: ProcessSpec) -> Result<Self> {
        let mut process = Self {
            spec,
            child: None,
            last_exit: None,
        };
        process.start()?;
        Ok(process)
    }

    /// Starts it again after it stopped; an error if it is still running.
    pub fn start(&mut self) -> Result<()> {
        if self.is_running() {
            bail!("{} is already running", self.spec.label);
        }
        let log = open_log(&self.spec.log)?;
        let mut cmd = command_in(&self.spec.binary);
        cmd.args(&self.spec.args)
            .envs(self.spec.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::from(log.try_clone().context("dup log fd")?))
            .stderr(Stdio::from(log));
        // No netns: the caller's own (benchmarks on loopback).
        let child = if self.spec.netns.is_empty() {
            cmd.spawn().map_err(anyhow::Error::from)
        } else {
            spawn_in(&self.spec.netns, cmd)
        }
        .with_context(|| format!("start {}", self.spec.label))?;
        tracing::debug!(label = %self.spec.label, pid = child.id(), "started");
        self.child = Some(child);
        self.last_exit = None;
        Ok(())
    }

    pub fn spec(&self) -> &ProcessSpec {
        &self.spec
    }

    pub fn label(&self) -> &str {
        &self.spec.label
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Running means started and not yet exited (exits are reaped here).
    pub fn is_running(&mut self) -> bool {
        let Some(child) = self.child.as_mut() else {
            return false;
        };
        match child.try_wait() {
            Ok(None) => true,
            Ok(Some(status)) => {
                self.last_exit = Some(status);
                self.child = None;
                false
            }
            // Not ours to wait for any more: treat as gone.
            Err(_) => {
                self.child = None;
                false
            }
        }
    }

    /// The exit status of the last run, once it has exited.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.is_running();
        self.last_exit
    }

    /// The exit status as last observed (by `is_running`, `kill`, `stop`).
    pub fn last_exit(&self) -> Option<ExitStatus> {
        self.last_exit
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            // Fails only if it already exited; wait() reaps it either way.
            let _ = child.kill();
            self.last_exit = Some(
                child
                    .wait()
                    .with_context(|| format!("reap {}", self.spec.label))?,
            );
        }
        Ok(())
    }

    /// SIGTERM, wait up to `grace` for it to exit, then SIGKILL. Returns the
    /// exit status (signal 9 if it had to be killed).
    pub fn stop(&mut self, grace: Duration) -> Result<Option<ExitStatus>> {
        let Some(pid) = self.pid() else {
            return Ok(self.last_exit);
        };
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        let start = Instant::now();
        let max_rounds = grace.as_millis() / POLL_INTERVAL.as_millis() + 2;
        for _ in 0..max_rounds {
            if !self.is_running() {
                return Ok(self.last_exit);
            }
            if start.elapsed() >= grace {
                break;
            }
            std::thread::sleep(POLL_INTERVAL);
        }
        tracing::warn!(label = %self.spec.label, "did not exit after SIGTERM, killing");
        self.kill()?;
        Ok(self.last_exit)
    }

    /// Graceful stop (5 s grace) then start again with the same spec.
    pub fn restart(&mut self) -> Result<()> {
        self.stop(Duration::from_secs(5))?;
        self.start()
    }

    /// Everything it wrote so far (all runs).
    pub fn log(&self) -> String {
        std::fs::read(&self.spec.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The last `lines` lines of the log, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

fn open_log(path: &Path) -> Result<File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("open log {}", path.display()))
}
