//! A cgroup link for the `getsockopt` program, made with the bpf(2)
//! syscall directly: aya 0.14 attaches cgroup sockopt programs with a link
//! but offers no way to turn it into a pinnable `FdLink` (it does for every
//! other program type we use), and newer aya needs a newer Rust.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt as _;
use std::path::Path;

const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_LINK_CREATE: libc::c_long = 28;
pub const BPF_CGROUP_GETSOCKOPT: u32 = 21;
/// Larger than every field we set; the kernel requires the rest be zero.
const ATTR_SIZE: usize = 64;

fn bpf(cmd: libc::c_long, attr: &mut [u8; ATTR_SIZE]) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a zero-initialised bpf_attr prefix of ATTR_SIZE
    // bytes that outlives the call.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), ATTR_SIZE) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn put_u32(attr: &mut [u8; ATTR_SIZE], offset: usize, value: u32) {
    attr[offset..offset + 4].copy_from_slice(&value.to_ne_bytes());
}

/// `BPF_LINK_CREATE` of `program` on `target` (a cgroup fd).
pub fn create(
    program: BorrowedFd<'_>,
    target: BorrowedFd<'_>,
    attach_type: u32,
) -> io::Result<OwnedFd> {
    let mut attr = [0u8; ATTR_SIZE];
    put_u32(&mut attr, 0, program.as_raw_fd() as u32);
    put_u32(&mut attr, 4, target.as_raw_fd() as u32);
    put_u32(&mut attr, 8, attach_type);
    let fd = bpf(BPF_LINK_CREATE, &mut attr)?;
    // SAFETY: the kernel returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// `BPF_OBJ_PIN` of `link` at `path`.
pub fn pin(link: &impl AsFd, path: &Path) -> io::Result<()> {
    let path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "pin path has a NUL byte"))?;
    let mut attr = [0u8; ATTR_SIZE];
    attr[0..8].copy_from_slice(&(path.as_ptr() as u64).to_ne_bytes());
    put_u32(&mut attr, 8, link.as_fd().as_raw_fd() as u32);
    bpf(BPF_OBJ_PIN, &mut attr).map(drop)
}
