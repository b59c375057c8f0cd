//! `getpeername4`/`getpeername6`: an app whose connect was rewritten still
//! sees the address it dialled, not ztunnel's listener.

use amesh_ebpf_common::{AF_INET, AF_INET6};
use aya_ebpf::EbpfContext as _;
use aya_ebpf::helpers::bpf_get_socket_cookie;
use aya_ebpf::macros::cgroup_sock_addr;
use aya_ebpf::programs::SockAddrContext;

use crate::addr;
use crate::maps::DST_BY_COOKIE;

const ALLOW: i32 = 1;

#[cgroup_sock_addr(getpeername4)]
pub fn getpeername4(ctx: SockAddrContext) -> i32 {
    restore(&ctx, AF_INET);
    ALLOW
}

#[cgroup_sock_addr(getpeername6)]
pub fn getpeername6(ctx: SockAddrContext) -> i32 {
    restore(&ctx, AF_INET6);
    ALLOW
}

fn restore(ctx: &SockAddrContext, family: u32) {
    // SAFETY: helper available to sock_addr programs.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    // SAFETY: plain value.
    let Some(dst) = (unsafe { DST_BY_COOKIE.get(&cookie) }) else {
        return;
    };
    // SAFETY: the kernel passes a valid bpf_sock_addr.
    let addr = unsafe { &mut *ctx.sock_addr };
    match (family, dst.family) {
        (AF_INET, AF_INET) => addr.user_ip4 = dst.ip[0],
        (AF_INET6, AF_INET) => addr::write6(&raw mut addr.user_ip6, addr::map_v4(dst.ip[0])),
        (AF_INET6, AF_INET6) => addr::write6(&raw mut addr.user_ip6, dst.ip),
        _ => return,
    }
    addr.user_port = u32::from((dst.port as u16).to_be());
}
