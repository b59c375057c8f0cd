//! `getsockopt`: answers `SO_ORIGINAL_DST` (IPv4 and IPv6) for sockets in
//! enrolled pods, so ztunnel reads the original destination the same way
//! with either backend. It runs after the kernel's own handler, which finds
//! no conntrack entry here.
//!
//! - Accepted on ztunnel's outbound port: the destination `connect4`/
//!   `connect6` recorded for the app socket at the other end.
//! - Anything else: the socket's own address, because inbound capture
//!   (sk_lookup) delivers connections without rewriting them.

use amesh_ebpf_common::{AF_INET, AF_INET6, Endpoint};
use aya_ebpf::EbpfContext as _;
use aya_ebpf::bindings::{bpf_sock, bpf_sockopt};
use aya_ebpf::helpers::bpf_get_netns_cookie;
use aya_ebpf::macros::cgroup_sockopt;
use aya_ebpf::programs::SockoptContext;

use crate::addr;
use crate::maps::{self, DST_BY_PEER};

const SOL_IP: i32 = 0;
const SOL_IPV6: i32 = 41;
/// SO_ORIGINAL_DST and IP6T_SO_ORIGINAL_DST.
const SO_ORIGINAL_DST: i32 = 80;
const SOCKADDR_IN_LEN: usize = 16;
const SOCKADDR_IN6_LEN: usize = 28;

#[cgroup_sockopt(getsockopt)]
pub fn getsockopt(ctx: SockoptContext) -> i32 {
    let _ = answer(&ctx);
    // 1: return to the caller (with whatever retval is now set).
    1
}

fn answer(ctx: &SockoptContext) -> Option<()> {
    // SAFETY: the kernel passes a valid bpf_sockopt.
    let opt: &mut bpf_sockopt = unsafe { &mut *ctx.sockopt };
    if opt.optname != SO_ORIGINAL_DST || (opt.level != SOL_IP && opt.level != SOL_IPV6) {
        return None;
    }
    // SAFETY: helper available to sockopt programs.
    maps::pod(unsafe { bpf_get_netns_cookie(ctx.as_ptr()) })?;
    let settings = maps::settings()?;
    // SAFETY: `sk` is a full socket for sockopt programs.
    let sk: *mut bpf_sock = unsafe { opt.__bindgen_anon_1.sk };
    if sk.is_null() {
        return None;
    }
    // SAFETY: checked non-null.
    let sk = unsafe { &*sk };
    let local = if sk.family == AF_INET {
        addr::endpoint4(sk.src_ip4, sk.src_port)
    } else {
        addr::endpoint6(addr::read6(&raw const sk.src_ip6), sk.src_port)
    };
    let dst = if local.port == u32::from(settings.outbound_port) {
        let port = u32::from(u16::from_be(sk.dst_port));
        let peer = if sk.family == AF_INET {
            addr::endpoint4(sk.dst_ip4, port)
        } else {
            addr::endpoint6(addr::read6(&raw const sk.dst_ip6), port)
        };
        // SAFETY: plain value.
        *unsafe { DST_BY_PEER.get(&peer) }?
    } else {
        local
    };
    if opt.level == SOL_IP {
        write_v4(opt, &dst)
    } else {
        write_v6(opt, &dst)
    }
}

/// `struct sockaddr_in`.
fn write_v4(opt: &mut bpf_sockopt, dst: &Endpoint) -> Option<()> {
    if dst.family != AF_INET {
        return None;
    }
    // SAFETY: reading the buffer bounds the kernel set up.
    let (start, end) = unsafe { (opt.__bindgen_anon_2.optval, opt.__bindgen_anon_3.optval_end) };
    let buf = start.cast::<u8>();
    // SAFETY: pointer arithmetic checked against `end` before any write.
    if unsafe { buf.add(SOCKADDR_IN_LEN) } > end.cast::<u8>() {
        return None;
    }
    let mut out = [0u8; SOCKADDR_IN_LEN];
    out[0..2].copy_from_slice(&(AF_INET as u16).to_ne_bytes());
    out[2..4].copy_from_slice(&(dst.port as u16).to_be_bytes());
    out[4..8].copy_from_slice(&dst.ip[0].to_ne_bytes());
    // SAFETY: bounds checked above.
    unsafe { core::ptr::copy_nonoverlapping(out.as_ptr(), buf, SOCKADDR_IN_LEN) };
    opt.optlen = SOCKADDR_IN_LEN as i32;
    opt.retval = 0;
    Some(())
}

/// `struct sockaddr_in6`.
fn write_v6(opt: &mut bpf_sockopt, dst: &Endpoint) -> Option<()> {
    let ip = if dst.family == AF_INET6 {
        dst.ip
    } else {
        addr::map_v4(dst.ip[0])
    };
    // SAFETY: as in `write_v4`.
    let (start, end) = unsafe { (opt.__bindgen_anon_2.optval, opt.__bindgen_anon_3.optval_end) };
    let buf = start.cast::<u8>();
    // SAFETY: checked against `end` before any write.
    if unsafe { buf.add(SOCKADDR_IN6_LEN) } > end.cast::<u8>() {
        return None;
    }
    let mut out = [0u8; SOCKADDR_IN6_LEN];
    out[0..2].copy_from_slice(&(AF_INET6 as u16).to_ne_bytes());
    out[2..4].copy_from_slice(&(dst.port as u16).to_be_bytes());
    let mut i = 0;
    while i < 4 {
        out[8 + i * 4..12 + i * 4].copy_from_slice(&ip[i].to_ne_bytes());
        i += 1;
    }
    // SAFETY: bounds checked above.
    unsafe { core::ptr::copy_nonoverlapping(out.as_ptr(), buf, SOCKADDR_IN6_LEN) };
    opt.optlen = SOCKADDR_IN6_LEN as i32;
    opt.retval = 0;
    Some(())
}
