//! Unique namespace prefixes, and cleanup of what crashed test processes left.

use std::sync::atomic::{AtomicU32, Ordering};

use super::netns;

/// Every netns the harness creates starts with this, then `<pid>x<n>-`.
pub const NETNS_PREFIX: &str = "amt";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// `amt<pid>x<n>-`: the pid separates test binaries running at once, the
/// counter separates meshes within one process (parallel test threads).
pub fn new_prefix() -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{NETNS_PREFIX}{}x{n}-", std::process::id())
}

/// The second octet of a CNI mesh's pod addresses (200-239), different for
/// each CNI mesh of this process: node agents search every namespace of the
/// machine for a pod's IP, so meshes running at once must not share pod
/// addresses. Other meshes use 244.
pub fn cni_pod_range() -> u8 {
    static RANGES: AtomicU32 = AtomicU32::new(0);
    let n = RANGES.fetch_add(1, Ordering::Relaxed);
    200 + (n % 40) as u8
}

/// Names of namespaces in `/var/run/netns` that start with `prefix`.
pub fn leftovers(prefix: &str) -> Vec<String> {
    let mut names: Vec<String> = netns::list()
        .into_iter()
        .filter(|n| n.starts_with(prefix))
        .collect();
    names.sort();
    names
}

/// The pid encoded in a harness netns name, if it is one.
pub(super) fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(NETNS_PREFIX)?;
    let (pid, _) = rest.split_once('x')?;
    pid.parse().ok()
}

/// Deletes namespaces left by harness processes that no longer exist (a test
/// binary killed before its `Drop` ran). Their daemons are already gone:
/// every child gets SIGKILL when its parent dies.
pub fn remove_stale() {
    let stale: Vec<String> = netns::list()
        .into_iter()
        .filter(|name| {
            owner_pid(name).is_some_and(|pid| {
                pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists()
            })
        })
        .collect();
    if !stale.is_empty() {
        tracing::info!(count = stale.len(), "removing stale harness namespaces");
        // Another process may be removing the same ones: errors are expected.
        let _ = netns::delete_all(&stale);
    }
    super::capture::remove_stale_pins();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_pid_parses_harness_names_only() {
        assert_eq!(owner_pid("amt123x4-client"), Some(123));
        assert_eq!(owner_pid("amt123x4-node-0"), Some(123));
        assert_eq!(owner_pid("amtx4-client"), None);
        assert_eq!(owner_pid("cni-1234"), None);
        assert!(new_prefix().starts_with(&format!("amt{}x", std::process::id())));
        assert_ne!(new_prefix(), new_prefix());
    }
}
