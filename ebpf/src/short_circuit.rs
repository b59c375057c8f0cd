//! `short_circuit` (sk_msg on `AMESH_LOCAL_SOCKS`): data an in-pod socket
//! sends is queued straight onto its peer socket's receive queue, skipping
//! the TCP/IP stack and loopback device for the app↔ztunnel hop. Handshake,
//! close and everything but the payload still travel by TCP.

use amesh_ebpf_common::{AF_INET, ConnectionKey};
use aya_ebpf::bindings::{BPF_F_INGRESS, sk_action};
use aya_ebpf::macros::sk_msg;
use aya_ebpf::programs::SkMsgContext;

use crate::addr;
use crate::maps::LOCAL_SOCKS;

#[sk_msg]
pub fn short_circuit(ctx: SkMsgContext) -> u32 {
    // SAFETY: the kernel passes a valid sk_msg_md.
    let md = unsafe { &*ctx.msg };
    let local_port = md.local_port;
    // Network order in the upper half of the word, as in sock_ops.
    let remote_port = u32::from_be(md.remote_port);
    let (local, remote) = if md.family == AF_INET {
        (
            addr::endpoint4(md.local_ip4, local_port),
            addr::endpoint4(md.remote_ip4, remote_port),
        )
    } else {
        (
            addr::endpoint6(addr::read6(&raw const md.local_ip6), local_port),
            addr::endpoint6(addr::read6(&raw const md.remote_ip6), remote_port),
        )
    };
    // The peer's key: the same connection seen from the other end.
    let peer = ConnectionKey {
        local: remote,
        remote: local,
    };
    // Without a peer (it closed) the message simply goes out by TCP.
    let _ = LOCAL_SOCKS.redirect_msg(&ctx, peer, u64::from(BPF_F_INGRESS));
    sk_action::SK_PASS
}
