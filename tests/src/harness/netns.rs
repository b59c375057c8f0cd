//! Named network namespaces (`/var/run/netns/NAME`, as `ip netns` makes them)
//! and running code inside one.

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;

use anyhow::{Context, Result, bail};
use nix::sched::{CloneFlags, setns};

pub const NETNS_DIR: &str = "/var/run/netns";

pub fn path(name: &str) -> PathBuf {
    PathBuf::from(NETNS_DIR).join(name)
}

pub fn open(name: &str) -> Result<File> {
    File::open(path(name)).with_context(|| format!("open netns {name}"))
}

/// All named namespaces.
pub fn list() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(NETNS_DIR) else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect()
}

/// Creates the namespaces in one `ip -batch` (one process for all of them).
pub fn add_all(names: &[String]) -> Result<()> {
    add_batch(
        &names
            .iter()
            .map(|n| format!("netns add {n}\n"))
            .collect::<String>(),
    )
}

/// Runs a root-netns `ip -batch` script that adds namespaces. The first
/// `netns add` on a machine sets /var/run/netns up as a shared mount, a
/// check-then-mount that two concurrent `ip` runs could both do; parallel
/// tests of one process therefore take turns here.
pub fn add_batch(script: &str) -> Result<()> {
    static ADD_LOCK: Mutex<()> = Mutex::new(());
    let _guard = ADD_LOCK
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    ip_batch(None, script)
}

/// Deletes the namespaces; missing ones are skipped. Interfaces, routes and
/// nft rules inside go with them once no process holds the netns.
pub fn delete_all(names: &[String]) -> Result<()> {
    let present: Vec<&String> = names.iter().filter(|n| path(n).exists()).collect();
    if present.is_empty() {
        return Ok(());
    }
    let script: String = present.iter().map(|n| format!("netns del {n}\n")).collect();
    // -force: go on past a failing line so one error does not leak the rest.
    run_ip(&["-force", "-batch", "-"], &script)
}

/// Runs an `ip -batch` script, inside `netns` when given (`ip -n`).
pub fn ip_batch(netns: Option<&str>, script: &str) -> Result<()> {
    match netns {
        Some(ns) => run_ip(&["-n", ns, "-batch", "-"], script),
        None => run_ip(&["-batch", "-"], script),
    }
}

fn run_ip(args: &[&str], script: &str) -> Result<()> {
    let mut child = Command::new("ip")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("run `ip` (iproute2)")?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .context("write ip batch")?;
    }
    let out = child.wait_with_output().context("wait for ip")?;
    if !out.status.success() {
        bail!(
            "ip {} failed ({}): {}\nscript:\n{script}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Runs `f` on a fresh thread that has entered netns `name` first. Sockets
/// created there belong to that netns for their whole life, so they can be
/// returned and used from anywhere. The thread ends with `f`, so no other
/// code ever runs in the wrong netns.
pub fn in_netns<T, F>(name: &str, f: F) -> Result<T>
where
    T: Send,
    F: FnOnce() -> T + Send,
{
    let ns = open(name)?;
    std::thread::scope(|scope| {
        let handle = scope.spawn(move || setns(&ns, CloneFlags::CLONE_NEWNET).map(|()| f()));
        match handle.join() {
            Ok(result) => result.with_context(|| format!("setns into {name}")),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// Sets sysctls of netns `name`. `/proc/sys/net` shows the netns of the
/// thread that opens it, so this writes from a thread inside the netns
/// instead of spawning `sysctl` processes.
pub fn sysctls(name: &str, settings: &[(&str, &str)]) -> Result<()> {
    in_netns(name, || -> Result<()> {
        for (key, value) in settings {
            let file = format!("/proc/sys/{}", key.replace('.', "/"));
            std::fs::write(&file, value).with_context(|| format!("sysctl {key}={value}"))?;
        }
        Ok(())
    })?
    .with_context(|| format!("sysctls in netns {name}"))
}

/// Reads one sysctl of netns `name`, trimmed.
pub fn sysctl(name: &str, key: &str) -> Result<String> {
    let file = format!("/proc/sys/{}", key.replace('.', "/"));
    let text = in_netns(name, || std::fs::read_to_string(&file))?
        .with_context(|| format!("read sysctl {key} in {name}"))?;
    Ok(text.trim().to_string())
}

/// The kernel's cookie of netns `name` (what eBPF programs and the node
/// agent's pin names use), read through SO_NETNS_COOKIE.
pub fn cookie(name: &str) -> Result<u64> {
    in_netns(name, || -> std::io::Result<u64> {
        let socket = std::os::unix::net::UnixDatagram::unbound()?;
        let mut cookie: u64 = 0;
        let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
        // SAFETY: a valid socket fd and a u64 buffer of the stated size.
        let rc = unsafe {
            libc::getsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&socket),
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
    .with_context(|| format!("SO_NETNS_COOKIE in {name}"))
}
