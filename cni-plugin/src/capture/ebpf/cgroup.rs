//! The cgroup v2 root the node-wide programs attach to: every process on
//! the node is in it or below it, and the programs act only on sockets in
//! enrolled pods' network namespaces.

use std::path::{Path, PathBuf};

use nix::sys::statfs::{CGROUP2_SUPER_MAGIC, statfs};
use tracing::info;

use super::EbpfError;

/// Where a cgroup2 hierarchy is mounted when the host has none.
const FALLBACK_MOUNT: &str = "/run/amesh/cgroup2";

/// The cgroup2 mount: `/sys/fs/cgroup` (unified), `/sys/fs/cgroup/unified`
/// (hybrid), any other in /proc/mounts, or one we mount.
pub fn root() -> Result<PathBuf, EbpfError> {
    for candidate in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
        if is_cgroup2(Path::new(candidate)) {
            return Ok(candidate.into());
        }
    }
    if let Some(path) = from_mounts() {
        return Ok(path);
    }
    let fallback = Path::new(FALLBACK_MOUNT);
    std::fs::create_dir_all(fallback).map_err(|source| EbpfError::Io {
        what: format!("creating {FALLBACK_MOUNT}"),
        source,
    })?;
    nix::mount::mount(
        Some("cgroup2"),
        fallback,
        Some("cgroup2"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|errno| EbpfError::Missing {
        feature: "cgroup v2",
        detail: format!("no cgroup2 hierarchy, and mounting one failed: {errno}"),
    })?;
    info!(path = FALLBACK_MOUNT, "mounted a cgroup2 hierarchy");
    Ok(fallback.into())
}

fn is_cgroup2(path: &Path) -> bool {
    statfs(path)
        .map(|fs| fs.filesystem_type() == CGROUP2_SUPER_MAGIC)
        .unwrap_or(false)
}

fn from_mounts() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let (_, path, fstype) = (fields.next()?, fields.next()?, fields.next()?);
        (fstype == "cgroup2").then(|| PathBuf::from(path))
    })
}
