//! Map keys and values shared by the eBPF programs (`amesh-ebpf`, built for
//! `bpfel-unknown-none`) and their loader in the node agent. `#[repr(C)]`,
//! plain integers and explicit padding only: both sides must agree on every
//! byte, and hash keys must have no uninitialised bytes.
//!
//! Addresses are kept as the kernel hands them to programs: IPv4 in network
//! order in the first word of `[u32; 4]` (others zero), IPv6 as four
//! network-order words. Ports are host order unless a field says otherwise.
#![no_std]

pub const AF_INET: u32 = 2;
pub const AF_INET6: u32 = 10;

/// Socket mark of ztunnel's own sockets: never captured.
pub const ZTUNNEL_MARK: u32 = 0x539;
/// Mark of connections ztunnel opened to the app in its own pod: their
/// replies are policy-routed back to ztunnel (as with nftables).
pub const CONNMARK: u32 = 0x111;
/// The bits of the mark amesh owns.
pub const MARK_MASK: u32 = 0xfff;

/// Listener slots per pod and family in [`LISTENERS_MAP`]: two ztunnels
/// (old and new, during an upgrade) each with up to eight workers.
pub const LISTENER_SLOTS: u32 = 16;

/// An enrolled pod, keyed by its network-namespace cookie in [`PODS_MAP`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PodEntry {
    /// The pod's IPv4 address, network order; 0 when it has none.
    pub ip4: u32,
    /// The pod's IPv6 address; all zero when it has none.
    pub ip6: [u32; 4],
}

/// Node-wide settings, the single entry of [`SETTINGS_MAP`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// ztunnel's outbound capture listener (15001).
    pub outbound_port: u16,
    /// ztunnel's plaintext inbound listener (15006).
    pub inbound_plaintext_port: u16,
    /// ztunnel's HBONE listener (15008): never redirected.
    pub inbound_port: u16,
    /// 1: splice in-pod app↔ztunnel sockets with the sockmap.
    pub short_circuit: u16,
    /// Kubelet probe source (network order): passes uncaptured.
    pub probe_ip4: u32,
    pub probe_ip6: [u32; 4],
}

/// An address and port (host order) of one family.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Endpoint {
    pub ip: [u32; 4],
    pub port: u32,
    pub family: u32,
}

/// One TCP connection as one of its sockets sees it; the peer socket's key
/// is the same with `local` and `remote` swapped.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnectionKey {
    pub local: Endpoint,
    pub remote: Endpoint,
}

/// A listener slot of one pod address in [`LISTENERS_MAP`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ListenerKey {
    pub ip: [u32; 4],
    pub family: u32,
    pub slot: u32,
}

/// netns cookie → [`PodEntry`]: which pods are captured.
pub const PODS_MAP: &str = "AMESH_PODS";
/// 0 → [`Settings`].
pub const SETTINGS_MAP: &str = "AMESH_SETTINGS";
/// App socket cookie → the [`Endpoint`] it dialled (for getpeername).
pub const DST_BY_COOKIE_MAP: &str = "AMESH_DST_COOKIE";
/// The app socket's local [`Endpoint`] (what ztunnel sees as the peer of
/// the accepted connection) → the [`Endpoint`] it dialled (for
/// SO_ORIGINAL_DST).
pub const DST_BY_PEER_MAP: &str = "AMESH_DST_PEER";
/// [`ListenerKey`] → ztunnel's plaintext inbound listener in that pod.
pub const LISTENERS_MAP: &str = "AMESH_LISTENERS";
/// [`ConnectionKey`] → in-pod app and ztunnel sockets, for the short circuit.
pub const LOCAL_SOCKS_MAP: &str = "AMESH_LOCAL_SOCKS";

/// Program names (the Rust function names in `amesh-ebpf`).
pub mod programs {
    pub const CONNECT4: &str = "connect4";
    pub const CONNECT6: &str = "connect6";
    pub const GETPEERNAME4: &str = "getpeername4";
    pub const GETPEERNAME6: &str = "getpeername6";
    pub const TCP_EVENTS: &str = "tcp_events";
    pub const GETSOCKOPT: &str = "getsockopt";
    pub const INBOUND: &str = "inbound";
    pub const SHORT_CIRCUIT: &str = "short_circuit";
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: all are repr(C) plain integers without implicit padding.
    unsafe impl aya::Pod for super::PodEntry {}
    unsafe impl aya::Pod for super::Settings {}
    unsafe impl aya::Pod for super::Endpoint {}
    unsafe impl aya::Pod for super::ConnectionKey {}
    unsafe impl aya::Pod for super::ListenerKey {}
}
