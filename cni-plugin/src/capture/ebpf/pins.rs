//! Where the eBPF objects live in bpffs, so that they outlive the agent:
//!
//! ```text
//! <pin dir>/maps/AMESH_*     every map (reused by the next agent)
//! <pin dir>/links/<program>  node-wide attachments (cgroup root)
//! <pin dir>/pods/<netns>     each enrolled pod's sk_lookup attachment
//! ```
//!
//! Removing a link's pin detaches it (nothing else holds it), so a pin is
//! replaced by renaming a new one over it: no moment without capture.

use std::io;
use std::path::{Path, PathBuf};

use aya::programs::links::FdLink;
use nix::sys::statfs::{BPF_FS_MAGIC, statfs};
use tracing::info;

use super::EbpfError;

const BPFFS: &str = "/sys/fs/bpf";

#[derive(Debug, Clone)]
pub struct PinDir {
    root: PathBuf,
}

impl PinDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn maps(&self) -> PathBuf {
        self.root.join("maps")
    }

    pub fn link(&self, program: &str) -> PathBuf {
        self.root.join("links").join(program)
    }

    /// A pod's sk_lookup link, named after its netns.
    /// A pod's sk_lookup link, named by its netns cookie: unique on the
    /// node, never reused, and known from the netns alone (however the
    /// agent learnt of the pod).
    pub fn pod(&self, netns_cookie: u64) -> PathBuf {
        self.root.join("pods").join(format!("c{netns_cookie}"))
    }

    /// Mounts bpffs at the pin dir's parent if nothing is mounted there
    /// yet, and creates the directories.
    pub fn prepare(&self) -> Result<(), EbpfError> {
        // The usual bpffs mount point, or wherever the pin dir's parent is.
        let standard = Path::new(BPFFS);
        let bpffs = if self.root.starts_with(standard) {
            standard
        } else {
            self.root.parent().unwrap_or(standard)
        };
        ensure_bpffs(bpffs)?;
        for dir in [self.maps(), self.root.join("links"), self.root.join("pods")] {
            std::fs::create_dir_all(&dir).map_err(|source| EbpfError::Io {
                what: format!("creating {}", dir.display()),
                source,
            })?;
        }
        Ok(())
    }

    /// Pins `link` at `path`, replacing (and so detaching) what was there.
    pub fn replace(&self, link: FdLink, path: &Path) -> Result<(), EbpfError> {
        self.replace_with(path, |staging| {
            link.pin(staging)
                .map(drop)
                .map_err(|source| EbpfError::Pin {
                    path: staging.to_owned(),
                    source,
                })
        })
    }

    /// Pins with `pin` at a staging path, then renames it over `path`.
    pub fn replace_with(
        &self,
        path: &Path,
        pin: impl FnOnce(&Path) -> Result<(), EbpfError>,
    ) -> Result<(), EbpfError> {
        // bpffs refuses names with a dot.
        let mut staging = path.as_os_str().to_owned();
        staging.push("_new");
        let staging = PathBuf::from(staging);
        let _ = std::fs::remove_file(&staging);
        pin(&staging)?;
        std::fs::rename(&staging, path).map_err(|source| EbpfError::Io {
            what: format!("renaming {} to {}", staging.display(), path.display()),
            source,
        })
    }

    /// Removes every pin: detaches every program and frees every map
    /// (the explicit uninstall).
    pub fn remove_all(&self) -> io::Result<()> {
        match std::fs::remove_dir_all(&self.root) {
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }
}

fn ensure_bpffs(dir: &Path) -> Result<(), EbpfError> {
    std::fs::create_dir_all(dir).map_err(|source| EbpfError::Io {
        what: format!("creating {}", dir.display()),
        source,
    })?;
    let mounted = statfs(dir)
        .map(|fs| fs.filesystem_type() == BPF_FS_MAGIC)
        .unwrap_or(false);
    if mounted {
        return Ok(());
    }
    nix::mount::mount(
        Some("bpf"),
        dir,
        Some("bpf"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|errno| EbpfError::Missing {
        feature: "bpffs (mount -t bpf)",
        detail: format!("mounting bpffs at {}: {errno}", dir.display()),
    })?;
    info!(path = %dir.display(), "mounted bpffs");
    Ok(())
}
