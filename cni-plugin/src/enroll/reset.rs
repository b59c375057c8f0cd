//! Resetting a newly captured pod's established connections.
//!
//! Capture applies to connections made after it is installed (nftables NAT
//! decides on a connection's first packet; the eBPF hooks run at connect
//! and at listener lookup). A pod enrolled while running would keep its
//! older connections outside ztunnel, unauthenticated and unchecked by
//! policy, for as long as they last. Like Istio, they are reset (the kernel's
//! SOCK_DESTROY, through `ss -K`), so the app reconnects through the mesh.
//! Loopback connections stay: they never leave the pod.

use crate::capture::CaptureError;
use crate::netns::Netns;

/// Kills established TCP connections in `netns` except loopback ones;
/// returns how many.
pub(super) fn established(netns: &Netns) -> Result<usize, CaptureError> {
    let command = "ss -K -t -n -H state established (not dst 127.0.0.0/8 and not dst [::1])";
    let output = netns
        .command("ss")
        .args([
            "-K",
            "-t",
            "-n",
            "-H",
            "state",
            "established",
            "( not dst 127.0.0.0/8 and not dst [::1] )",
        ])
        .output()
        .map_err(|source| CaptureError::Spawn {
            command: command.into(),
            source,
        })?;
    if !output.status.success() {
        return Err(CaptureError::Command {
            command: command.into(),
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    // `ss -K` lists the sockets it closed, one per line.
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count())
}
