//! `connect4`/`connect6`: rewrite an enrolled pod's outbound TCP connect to
//! ztunnel's outbound listener on the pod's own address.
//!
//! Left alone, as the nftables rules do: other protocols, loopback and the
//! pod's own address, the kubelet probe address, and ztunnel's own sockets
//! (mark 0x539). A ztunnel socket to the pod's own address is ztunnel
//! delivering inbound traffic to the app with the client's address: it gets
//! the connection mark, so the app's replies (which inherit it through
//! `tcp_fwmark_accept`) are policy-routed back to ztunnel.

use amesh_ebpf_common::{AF_INET, AF_INET6, CONNMARK, Endpoint, MARK_MASK, ZTUNNEL_MARK};
use aya_ebpf::EbpfContext as _;
use aya_ebpf::bindings::bpf_sock_addr;
use aya_ebpf::helpers::{bpf_get_netns_cookie, bpf_get_socket_cookie, bpf_setsockopt};
use aya_ebpf::macros::cgroup_sock_addr;
use aya_ebpf::programs::SockAddrContext;

use crate::addr::{self, SOCK_STREAM};
use crate::maps::{self, DST_BY_COOKIE};

/// cgroup sock_addr programs return 1 to let the call proceed.
const ALLOW: i32 = 1;
const SOL_SOCKET: i32 = 1;
const SO_MARK: i32 = 36;

#[cgroup_sock_addr(connect4)]
pub fn connect4(ctx: SockAddrContext) -> i32 {
    // Never refuse a connect because of our own bookkeeping.
    let _ = rewrite(&ctx, AF_INET);
    ALLOW
}

#[cgroup_sock_addr(connect6)]
pub fn connect6(ctx: SockAddrContext) -> i32 {
    let _ = rewrite(&ctx, AF_INET6);
    ALLOW
}

fn rewrite(ctx: &SockAddrContext, family: u32) -> Option<()> {
    // SAFETY: the kernel passes a valid bpf_sock_addr to this program type.
    let addr: &mut bpf_sock_addr = unsafe { &mut *ctx.sock_addr };
    if addr.type_ != SOCK_STREAM {
        return None;
    }
    // SAFETY: helper available to sock_addr programs.
    let pod = maps::pod(unsafe { bpf_get_netns_cookie(ctx.as_ptr()) })?;
    let settings = maps::settings()?;
    let dst = if family == AF_INET {
        addr::endpoint4(
            addr.user_ip4,
            u32::from(u16::from_be(addr.user_port as u16)),
        )
    } else {
        addr::endpoint6(
            addr::read6(&raw const addr.user_ip6),
            u32::from(u16::from_be(addr.user_port as u16)),
        )
    };
    // SAFETY: `sk` is always a full socket in connect hooks.
    let sk = unsafe { addr.__bindgen_anon_1.sk };
    if sk.is_null() {
        return None;
    }
    // SAFETY: checked non-null above; the verifier allows reading `mark`.
    let mark = unsafe { (*sk).mark };
    let own = addr::is_pod_ip(pod, dst.family, &dst.ip);
    if mark & MARK_MASK == ZTUNNEL_MARK {
        if own {
            let mut new_mark = (mark & !MARK_MASK) | CONNMARK;
            // SAFETY: helper available to connect hooks; optval points at
            // a u32 on our stack.
            unsafe {
                bpf_setsockopt(
                    ctx.as_ptr(),
                    SOL_SOCKET,
                    SO_MARK,
                    (&raw mut new_mark).cast(),
                    4,
                );
            }
        }
        return None;
    }
    if own || skipped(&dst, settings) {
        return None;
    }
    // Where the app's connection lands instead: the pod's own address, so
    // its source address stays the pod IP, as with nftables.
    let to_port = u32::from(settings.outbound_port.to_be());
    if dst.family == AF_INET {
        if pod.ip4 == 0 {
            return None;
        }
        remember(ctx, &dst)?;
        if family == AF_INET {
            addr.user_ip4 = pod.ip4;
        } else {
            addr::write6(&raw mut addr.user_ip6, addr::map_v4(pod.ip4));
        }
    } else {
        if addr::is_zero6(&pod.ip6) {
            return None;
        }
        remember(ctx, &dst)?;
        addr::write6(&raw mut addr.user_ip6, pod.ip6);
    }
    addr.user_port = to_port;
    Some(())
}

fn skipped(dst: &Endpoint, settings: &amesh_ebpf_common::Settings) -> bool {
    if dst.family == AF_INET {
        let ip = dst.ip[0];
        ip == 0 || addr::is_loopback4(ip) || ip == settings.probe_ip4
    } else {
        addr::is_zero6(&dst.ip) || addr::is_loopback6(&dst.ip) || dst.ip == settings.probe_ip6
    }
}

fn remember(ctx: &SockAddrContext, dst: &Endpoint) -> Option<()> {
    // SAFETY: helper available to sock_addr programs.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    DST_BY_COOKIE.insert(&cookie, dst, 0).ok()
}
