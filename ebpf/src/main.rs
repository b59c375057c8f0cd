//! amesh's eBPF capture programs, built for `bpfel-unknown-none` by
//! aya-build from the node agent's build script and loaded by the node
//! agent. They only read context structs (stable UAPI that the verifier
//! rewrites per kernel), never kernel-internal structs, so no CO-RE
//! relocations are needed.
//!
//! - `connect4`/`connect6` (cgroup): an enrolled pod's outbound TCP connect
//!   is rewritten to ztunnel's outbound listener on the pod's own address
//!   before any packet exists; the original destination is remembered.
//! - `sockops` (cgroup): moves that destination to a key ztunnel can name
//!   (the app socket's address), registers ztunnel's inbound listeners and,
//!   with the short circuit on, the in-pod socket pairs.
//! - `getsockopt` (cgroup): answers `SO_ORIGINAL_DST` for ztunnel.
//! - `getpeername4`/`getpeername6` (cgroup): the app sees what it dialled.
//! - `inbound` (sk_lookup, per pod netns): inbound TCP to ztunnel's
//!   plaintext listener, or dropped when ztunnel has none.
//! - `short_circuit` (sk_msg): bytes between the app and ztunnel in one pod
//!   skip TCP and go straight to the peer socket's receive queue.
//!
//! Enrollment is an entry in `AMESH_PODS` keyed by the pod's netns cookie,
//! so one set of cgroup programs attached at the cgroup root serves every
//! pod on the node and leaves everything else alone.
#![no_std]
#![no_main]

mod addr;
mod connect;
mod inbound;
mod maps;
mod peername;
mod short_circuit;
mod sockops;
mod sockopt;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
