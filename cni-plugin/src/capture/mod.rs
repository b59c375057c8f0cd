//! Traffic capture inside pod network namespaces, behind one trait so that
//! backends (nftables today, eBPF later) are interchangeable.
//!
//! Whatever the backend, the pod sees the same behaviour (see ARCHITECTURE.md
//! "Data path"): outbound TCP goes to ztunnel's outbound port, inbound TCP to
//! any port but the HBONE port goes to the plaintext inbound port, loopback is
//! untouched, ztunnel's own sockets (mark [`ZTUNNEL_MARK`]) are exempt, and
//! kubelet probes SNATed to the probe address on the node pass uncaptured.

mod cmd;
pub mod ebpf;
pub mod nftables;
pub mod node;
mod policy_route;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

pub use ebpf::{EbpfCapture, EbpfSettings};
pub use nftables::NftablesCapture;
pub use node::NodeProbeSnat;

/// The mark ztunnel puts on its sockets (SO_MARK), as Istio's ztunnel.
pub const ZTUNNEL_MARK: u32 = 0x539;
/// Connmark of connections ztunnel opened to the app, and the fwmark their
/// replies get so policy routing hands them back to ztunnel (Istio's value).
pub const CONNMARK: u32 = 0x111;
/// The bits of the mark amesh owns; other bits belong to other software.
pub const MARK_MASK: u32 = 0xfff;
/// Routing table (in the pod netns) that delivers marked replies locally.
pub const ROUTE_TABLE: u32 = 100;
/// Priority of the fwmark rule: before `main` (32766), as Istio.
pub const RULE_PRIORITY: u32 = 32764;

/// Istio's kubelet-probe SNAT addresses.
pub const DEFAULT_PROBE_SNAT_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 7, 127);
pub const DEFAULT_PROBE_SNAT_V6: Ipv6Addr = Ipv6Addr::new(
    0xfd16, 0x9254, 0x7127, 0x1337, 0xffff, 0xffff, 0xffff, 0xffff,
);

/// Ports and addresses the capture rules point at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureConfig {
    /// ztunnel's outbound capture listener in the pod.
    pub outbound_port: u16,
    /// ztunnel's plaintext inbound listener in the pod.
    pub inbound_plaintext_port: u16,
    /// ztunnel's HBONE listener in the pod: never redirected.
    pub inbound_port: u16,
    pub probe_snat_v4: Ipv4Addr,
    pub probe_snat_v6: Ipv6Addr,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        Self {
            outbound_port: 15001,
            inbound_plaintext_port: 15006,
            inbound_port: 15008,
            probe_snat_v4: DEFAULT_PROBE_SNAT_V4,
            probe_snat_v6: DEFAULT_PROBE_SNAT_V6,
        }
    }
}

/// A pod's network namespace as the node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodNetns {
    /// Name under the netns directory (for logs).
    pub name: String,
    /// Where the namespace is bind-mounted, e.g. `/var/run/netns/<name>`.
    pub path: PathBuf,
    pub ips: Vec<IpAddr>,
}

impl PodNetns {
    pub fn has_ipv6(&self) -> bool {
        self.ips.iter().any(IpAddr::is_ipv6)
    }
}

/// Installs and removes capture in a pod's netns.
pub trait Capture: Send + Sync {
    /// Idempotent and atomic: after any number of calls, exactly one copy of
    /// every rule and route is in place.
    fn install(&self, pod: &PodNetns) -> Result<(), CaptureError>;
    /// [`Self::install`] into a netns that should hold nothing of ours
    /// yet (a sandbox fresh from CNI ADD, where no traffic flows): backends
    /// may take a faster path, and fall back to `install` if something of
    /// theirs is there after all.
    fn install_fresh(&self, pod: &PodNetns) -> Result<(), CaptureError> {
        self.install(pod)
    }
    /// Removes everything `install` added; a no-op when nothing is there.
    fn remove(&self, pod: &PodNetns) -> Result<(), CaptureError>;
    /// Whether capture with this backend's current settings is in place.
    fn is_installed(&self, pod: &PodNetns) -> Result<bool, CaptureError>;
}

// So that holders of `Arc<dyn Capture>` can derive Debug.
impl std::fmt::Debug for dyn Capture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("dyn Capture")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("cannot open network namespace {}: {source}", path.display())]
    Netns {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("`{command}` could not run: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("`{command}` printed output we cannot read: {reason}")]
    Output { command: String, reason: String },
    /// The blocking task running a backend panicked or was cancelled.
    #[error("capture task failed: {0}")]
    Task(String),
    #[error(transparent)]
    Ebpf(Box<ebpf::EbpfError>),
}
