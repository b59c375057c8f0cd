//! Network namespaces by path: open one, run a command or a closure inside it.
//!
//! The agent itself never changes namespace: commands enter the pod's netns
//! in the forked child (`pre_exec`), closures on a short-lived thread, so the
//! agent's own threads (and tokio's) always stay in the node's netns.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use nix::sched::{CloneFlags, setns};
use nix::sys::statfs::{NSFS_MAGIC, fstatfs};

/// An open network namespace. Holding it keeps the namespace alive even if
/// its bind mount is removed.
#[derive(Debug, Clone)]
pub struct Netns {
    fd: Arc<OwnedFd>,
    path: PathBuf,
}

/// What makes a namespace the same one over time: a netns recreated under the
/// same name has a different inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NetnsId {
    pub dev: u64,
    pub ino: u64,
}

impl Netns {
    /// Opens the namespace bound at `path`. A plain file there (e.g. one
    /// `ip netns add` has created but not yet bind-mounted) is an
    /// `InvalidData` error, not a namespace.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let file = File::open(path)?;
        if fstatfs(&file)?.filesystem_type() != NSFS_MAGIC {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{} is not a namespace", path.display()),
            ));
        }
        Ok(Self {
            fd: Arc::new(OwnedFd::from(file)),
            path: path.to_owned(),
        })
    }

    /// The namespace this process is in.
    pub fn current() -> std::io::Result<Self> {
        Self::open(Path::new("/proc/self/ns/net"))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn id(&self) -> std::io::Result<NetnsId> {
        let meta = File::from(self.fd.try_clone()?).metadata()?;
        Ok(NetnsId {
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }

    /// The kernel's unique, never-reused id of this namespace (what
    /// `bpf_get_netns_cookie` returns to eBPF programs): read through
    /// SO_NETNS_COOKIE of a socket made inside it.
    pub fn cookie(&self) -> std::io::Result<u64> {
        self.run(|| {
            let socket = nix::sys::socket::socket(
                nix::sys::socket::AddressFamily::Unix,
                nix::sys::socket::SockType::Datagram,
                nix::sys::socket::SockFlag::SOCK_CLOEXEC,
                None,
            )?;
            let mut cookie: u64 = 0;
            let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
            // SAFETY: a valid socket fd and a u64 buffer of the stated size.
            let rc = unsafe {
                libc::getsockopt(
                    socket.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_NETNS_COOKIE,
                    (&raw mut cookie).cast(),
                    &mut len,
                )
            };
            if rc != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(cookie)
        })?
    }

    /// A command whose process runs inside this namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        let fd = self.fd.clone();
        // SAFETY: the closure runs in the forked child before exec and only
        // calls setns(2), which is async-signal-safe; `fd` is kept alive by
        // the Arc the closure owns.
        unsafe {
            command.pre_exec(move || {
                setns(fd.as_fd(), CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)
            });
        }
        command
    }

    /// Runs `f` on a new thread inside this namespace and returns its result
    /// (sockets created there stay in this namespace).
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> std::io::Result<T> {
        let fd = self.fd.as_fd();
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    setns(fd, CloneFlags::CLONE_NEWNET)?;
                    Ok(f())
                })
                .join()
                .map_err(|_| std::io::Error::other("thread in netns panicked"))?
        })
    }
}

impl AsFd for Netns {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Netns {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }
}

/// The identity of the namespace bound at `path` without keeping it open;
/// `None` if there is none.
pub fn id_at(path: &Path) -> std::io::Result<Option<NetnsId>> {
    match std::fs::metadata(path) {
        Ok(meta) => Ok(Some(NetnsId {
            dev: meta.dev(),
            ino: meta.ino(),
        })),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err),
    }
}
