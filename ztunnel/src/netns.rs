//! Entering a pod's network namespace just long enough to create a socket.
//!
//! A socket belongs to the namespace it was created in for its whole life,
//! so ztunnel switches the calling thread into the pod's namespace, creates
//! the socket, and switches straight back — with no `.await` in between, so
//! the tokio worker thread never runs other tasks in the wrong namespace.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::OnceLock;

use nix::sched::{CloneFlags, setns};
use nix::sys::stat::fstat;

/// ztunnel's own namespace, to return to.
static HOME: OnceLock<OwnedFd> = OnceLock::new();

/// Records the namespace ztunnel runs in. Call once at startup, before any
/// thread switches namespaces.
pub fn init_home() -> io::Result<()> {
    let fd: OwnedFd = std::fs::File::open("/proc/thread-self/ns/net")?.into();
    let _ = HOME.set(fd);
    Ok(())
}

/// A pod's network namespace, held open by its file descriptor (from ZDS).
#[derive(Debug)]
pub struct Netns {
    fd: OwnedFd,
    /// (device, inode): equal for two fds of the same namespace.
    id: (u64, u64),
}

impl Netns {
    pub fn new(fd: OwnedFd) -> io::Result<Self> {
        let stat = fstat(fd.as_fd())?;
        Ok(Self {
            fd,
            id: (stat.st_dev, stat.st_ino),
        })
    }

    pub fn same_namespace(&self, other: &Netns) -> bool {
        self.id == other.id
    }

    /// Runs `f` with the calling thread inside this namespace. `f` must not
    /// block or yield.
    pub fn run<T>(&self, f: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
        let home = HOME
            .get()
            .ok_or_else(|| io::Error::other("netns::init_home was not called"))?;
        setns(self.fd.as_fd(), CloneFlags::CLONE_NEWNET)?;
        let out = f();
        if let Err(errno) = setns(home.as_fd(), CloneFlags::CLONE_NEWNET) {
            // A worker thread stuck in a pod's namespace would leak every
            // later socket into it: stopping is the only safe answer.
            tracing::error!(%errno, "cannot return to ztunnel's network namespace; aborting");
            std::process::abort();
        }
        out
    }
}
