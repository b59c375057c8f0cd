//! Which capture backend a mesh's node agents use, and the bpffs pins of
//! the eBPF backend: one pin dir per node agent (under [`BPF_TEST_ROOT`],
//! named after the mesh prefix), removed with the mesh, and swept when the
//! test process that made them is gone.

use std::path::{Path, PathBuf};

use super::naming::owner_pid;

/// Parent of every test pin dir.
pub const BPF_TEST_ROOT: &str = "/sys/fs/bpf/amesh-test";

/// The node agent's `--capture` backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capture {
    Nftables,
    Ebpf,
    /// The agent's default: eBPF where the kernel can, else nftables.
    Auto,
}

impl Capture {
    pub fn as_arg(self) -> &'static str {
        match self {
            Capture::Nftables => "nftables",
            Capture::Ebpf => "ebpf",
            Capture::Auto => "auto",
        }
    }

    /// `AMESH_TEST_CAPTURE=ebpf|nftables`, for suites that are not
    /// parameterised by backend; nftables when unset.
    pub fn from_env() -> Self {
        match std::env::var("AMESH_TEST_CAPTURE").as_deref() {
            Ok("ebpf") => Capture::Ebpf,
            _ => Capture::Nftables,
        }
    }
}

/// The pin dir of node `node` of the mesh with `prefix`.
pub fn pin_dir(prefix: &str, node: usize) -> PathBuf {
    Path::new(BPF_TEST_ROOT).join(format!("{prefix}node-{node}"))
}

/// Removes every pin dir of the mesh with `prefix` (detaching its programs).
pub fn remove_pins(prefix: &str) {
    remove_matching(|name| name.starts_with(prefix));
}

/// Removes pin dirs whose test process no longer exists.
pub fn remove_stale_pins() {
    remove_matching(|name| {
        owner_pid(name).is_some_and(|pid| {
            pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists()
        })
    });
}

fn remove_matching(matches: impl Fn(&str) -> bool) {
    let Ok(entries) = std::fs::read_dir(BPF_TEST_ROOT) else {
        return;
    };
    for entry in entries.flatten() {
        if matches(&entry.file_name().to_string_lossy()) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}
