//! `inbound` (sk_lookup, attached to each enrolled pod's netns): a new TCP
//! connection to the pod on any port but HBONE goes to ztunnel's plaintext
//! inbound listener, unchanged (the accepted socket's address is the
//! original destination, and the client's address is preserved). It runs
//! only when the kernel looks for a listener, never per packet.
//!
//! Left alone, as the nftables rules do: other protocols, the HBONE port,
//! the kubelet probe address, and connections from inside the pod: from its
//! own or a loopback address, or ztunnel's delivery to the app with the
//! client's address (exactly the 4-tuples `sockops` registered in
//! `AMESH_DELIVERIES` just before their SYN was sent, so no outside client
//! can slip through with the same address). With no ztunnel
//! listener in the pod the connection is dropped: captured traffic never
//! reaches the app around ztunnel (the client retransmits its SYN and gets
//! through once ztunnel listens again).

use amesh_ebpf_common::{AF_INET, AF_INET6, ConnectionKey, LISTENER_SLOTS, ListenerKey};
use aya_ebpf::bindings::{bpf_sk_lookup, sk_action};
use aya_ebpf::macros::sk_lookup;
use aya_ebpf::programs::SkLookupContext;

use crate::addr::{self, IPPROTO_TCP};
use crate::maps::{self, DELIVERIES, LISTENERS};

#[sk_lookup]
pub fn inbound(ctx: SkLookupContext) -> u32 {
    match steer(&ctx) {
        Verdict::Pass => sk_action::SK_PASS,
        Verdict::Drop => sk_action::SK_DROP,
    }
}

enum Verdict {
    /// Assigned to ztunnel, or not ours to capture.
    Pass,
    Drop,
}

fn steer(ctx: &SkLookupContext) -> Verdict {
    // SAFETY: the kernel passes a valid bpf_sk_lookup.
    let lookup: &bpf_sk_lookup = unsafe { &*ctx.lookup };
    if lookup.protocol != IPPROTO_TCP {
        return Verdict::Pass;
    }
    // Another program on this netns (an older agent's, during an upgrade)
    // already chose a socket.
    // SAFETY: reading the context's socket pointer.
    if !unsafe { lookup.__bindgen_anon_1.__bindgen_anon_1.sk }.is_null() {
        return Verdict::Pass;
    }
    let Some(settings) = maps::settings() else {
        return Verdict::Pass;
    };
    if lookup.local_port == u32::from(settings.inbound_port) {
        return Verdict::Pass;
    }
    // Ports: local host order, remote network order.
    let local_port = lookup.local_port;
    let remote_port = u32::from(u16::from_be(lookup.remote_port));
    let (local, remote) = if lookup.family == AF_INET {
        if lookup.remote_ip4 == settings.probe_ip4 || addr::is_loopback4(lookup.remote_ip4) {
            return Verdict::Pass;
        }
        (
            addr::endpoint4(lookup.local_ip4, local_port),
            addr::endpoint4(lookup.remote_ip4, remote_port),
        )
    } else if lookup.family == AF_INET6 {
        let remote_ip = addr::read6(&raw const lookup.remote_ip6);
        if remote_ip == settings.probe_ip6 || addr::is_loopback6(&remote_ip) {
            return Verdict::Pass;
        }
        (
            addr::endpoint6(addr::read6(&raw const lookup.local_ip6), local_port),
            addr::endpoint6(remote_ip, remote_port),
        )
    } else {
        return Verdict::Pass;
    };
    if local.ip == remote.ip {
        return Verdict::Pass;
    }
    let connection = ConnectionKey { local, remote };
    // SAFETY: plain value.
    if unsafe { DELIVERIES.get(&connection) }.is_some() {
        return Verdict::Pass;
    }
    let (ip, family) = (local.ip, local.family);
    let mut slot = 0;
    while slot < LISTENER_SLOTS {
        let key = ListenerKey { ip, family, slot };
        // With SO_REUSEPORT the kernel then picks among the listener's
        // group, spreading connections over ztunnel's workers.
        if LISTENERS.redirect_sk_lookup(ctx, key, 0).is_ok() {
            return Verdict::Pass;
        }
        slot += 1;
    }
    Verdict::Drop
}
