//! `sockops`: TCP socket events in enrolled pods.
//!
//! - Client established: if `connect4`/`connect6` rewrote this socket, key
//!   its original destination by the socket's own address, which is what
//!   ztunnel sees as the peer of the connection it accepts. The callback
//!   runs before the handshake's last ACK is sent, so before ztunnel can
//!   accept. The socket asks for state callbacks so its entries go at close.
//! - Connect (port chosen, SYN not yet sent) of ztunnel's socket delivering
//!   to the app (connection mark): its exact 4-tuple goes into
//!   `AMESH_DELIVERIES` so `inbound` lets that one SYN reach the app; it is
//!   removed once established.
//! - Listen: ztunnel's plaintext inbound listener joins `AMESH_LISTENERS`
//!   under the pod's address, for the `inbound` sk_lookup program.
//! - Established, with the short circuit on: the app's and ztunnel's
//!   sockets of an in-pod hop join `AMESH_LOCAL_SOCKS`.

use amesh_ebpf_common::{
    AF_INET, CONNMARK, ConnectionKey, Endpoint, LISTENER_SLOTS, ListenerKey, MARK_MASK, PodEntry,
    Settings,
};
use aya_ebpf::EbpfContext as _;
use aya_ebpf::bindings::bpf_sock_ops;
use aya_ebpf::helpers::{bpf_get_netns_cookie, bpf_get_socket_cookie};
use aya_ebpf::macros::sock_ops;
use aya_ebpf::programs::SockOpsContext;

use crate::addr;
use crate::maps::{self, DELIVERIES, DST_BY_COOKIE, DST_BY_PEER, LISTENERS, LOCAL_SOCKS};

const TCP_CONNECT: u32 = 3;
const ACTIVE_ESTABLISHED: u32 = 4;
const PASSIVE_ESTABLISHED: u32 = 5;
const STATE_CB: u32 = 10;
const TCP_LISTEN: u32 = 11;
const STATE_CB_FLAG: i32 = 1 << 2;
const TCP_CLOSE: u32 = 7;
const BPF_ANY: u64 = 0;

#[sock_ops]
pub fn tcp_events(ctx: SockOpsContext) -> u32 {
    let _ = handle(&ctx);
    // The return value only matters for ops that ask for a reply.
    1
}

fn handle(ctx: &SockOpsContext) -> Option<()> {
    let op = ctx.op();
    if op == STATE_CB {
        if ctx.arg(1) == TCP_CLOSE {
            forget(ctx);
        }
        return Some(());
    }
    if op != TCP_CONNECT
        && op != ACTIVE_ESTABLISHED
        && op != PASSIVE_ESTABLISHED
        && op != TCP_LISTEN
    {
        return None;
    }
    // SAFETY: helper available to sock_ops programs.
    let pod = maps::pod(unsafe { bpf_get_netns_cookie(ctx.as_ptr()) })?;
    let settings = maps::settings()?;
    match op {
        TCP_LISTEN => register_listener(ctx, pod, settings),
        TCP_CONNECT => expect_delivery(ctx),
        ACTIVE_ESTABLISHED => {
            hand_over_original_dst(ctx);
            let marked = connection_marked(ctx);
            if marked {
                let _ = DELIVERIES.remove(&as_seen_by_peer(ctx));
            }
            pair_in_pod(ctx, pod, settings, marked)
        }
        _ if settings.short_circuit != 0 => pair_in_pod(ctx, pod, settings, connection_marked(ctx)),
        _ => None,
    }
}

fn local(ctx: &SockOpsContext) -> Endpoint {
    let port = ctx.local_port();
    if ctx.family() == AF_INET {
        addr::endpoint4(ctx.local_ip4(), port)
    } else {
        addr::endpoint6(addr::read6(&raw const ops(ctx).local_ip6), port)
    }
}

fn remote(ctx: &SockOpsContext) -> Endpoint {
    // Network order in the upper half of the word.
    let port = u32::from_be(ctx.remote_port());
    if ctx.family() == AF_INET {
        addr::endpoint4(ctx.remote_ip4(), port)
    } else {
        addr::endpoint6(addr::read6(&raw const ops(ctx).remote_ip6), port)
    }
}

fn ops(ctx: &SockOpsContext) -> &mut bpf_sock_ops {
    // SAFETY: the kernel passes a valid bpf_sock_ops.
    unsafe { &mut *ctx.ops }
}

fn hand_over_original_dst(ctx: &SockOpsContext) {
    // SAFETY: helper available to sock_ops programs.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    // SAFETY: plain value.
    let Some(dst) = (unsafe { DST_BY_COOKIE.get(&cookie) }) else {
        return;
    };
    let dst = *dst;
    if DST_BY_PEER.insert(&local(ctx), &dst, 0).is_ok() {
        let _ = ctx.set_cb_flags(ctx.cb_flags() as i32 | STATE_CB_FLAG);
    }
}

/// This connection as the socket at the other end sees it.
fn as_seen_by_peer(ctx: &SockOpsContext) -> ConnectionKey {
    ConnectionKey {
        local: remote(ctx),
        remote: local(ctx),
    }
}

fn expect_delivery(ctx: &SockOpsContext) -> Option<()> {
    if !connection_marked(ctx) {
        return None;
    }
    DELIVERIES.insert(&as_seen_by_peer(ctx), &1, 0).ok()
}

fn forget(ctx: &SockOpsContext) {
    // SAFETY: helper available to sock_ops programs.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let _ = DST_BY_COOKIE.remove(&cookie);
    let _ = DST_BY_PEER.remove(&local(ctx));
}

fn register_listener(ctx: &SockOpsContext, pod: &PodEntry, settings: &Settings) -> Option<()> {
    if ctx.local_port() != u32::from(settings.inbound_plaintext_port) {
        return None;
    }
    let (ip, family) = if ctx.family() == AF_INET {
        ([pod.ip4, 0, 0, 0], AF_INET)
    } else {
        (pod.ip6, amesh_ebpf_common::AF_INET6)
    };
    // SAFETY: helper available to sock_ops programs.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    // Any slot will do: a listener that closes leaves its slot empty, and
    // the newest listener (of the newest ztunnel) is always in one.
    let mut key = ListenerKey {
        ip,
        family,
        slot: (cookie % u64::from(LISTENER_SLOTS)) as u32,
    };
    LISTENERS.update(&mut key, ops(ctx), BPF_ANY).ok()
}

/// The two sockets of an in-pod hop: the app's connection to ztunnel's
/// outbound listener (both ends on the pod address, one on the outbound
/// port), and ztunnel's connection delivering to the app (connection
/// mark on both sockets).
fn pair_in_pod(
    ctx: &SockOpsContext,
    pod: &PodEntry,
    settings: &Settings,
    marked: bool,
) -> Option<()> {
    if settings.short_circuit == 0 {
        return None;
    }
    let local = local(ctx);
    let remote = remote(ctx);
    let outbound = u32::from(settings.outbound_port);
    let app_to_ztunnel = addr::is_pod_ip(pod, local.family, &local.ip)
        && local.ip == remote.ip
        && (local.port == outbound || remote.port == outbound);
    if !app_to_ztunnel && !marked {
        return None;
    }
    let mut key = ConnectionKey { local, remote };
    LOCAL_SOCKS.update(&mut key, ops(ctx), BPF_ANY).ok()
}

fn connection_marked(ctx: &SockOpsContext) -> bool {
    let ops = ops(ctx);
    if ops.is_fullsock == 0 {
        return false;
    }
    // SAFETY: a full socket's `sk` is valid; checked for null anyway.
    let sk = unsafe { ops.__bindgen_anon_2.sk };
    if sk.is_null() {
        return false;
    }
    // SAFETY: checked above.
    unsafe { (*sk).mark & MARK_MASK == CONNMARK }
}
