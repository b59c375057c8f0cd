//! Address helpers shared by the programs.

use amesh_ebpf_common::{AF_INET, AF_INET6, Endpoint, PodEntry};

pub const SOCK_STREAM: u32 = 1;
pub const IPPROTO_TCP: u32 = 6;

/// 127.0.0.0/8, as a network-order word.
pub fn is_loopback4(ip: u32) -> bool {
    ip.to_ne_bytes()[0] == 127
}

/// `::1`.
pub fn is_loopback6(ip: &[u32; 4]) -> bool {
    ip[0] == 0 && ip[1] == 0 && ip[2] == 0 && ip[3] == u32::from_ne_bytes([0, 0, 0, 1])
}

pub fn is_zero6(ip: &[u32; 4]) -> bool {
    ip[0] == 0 && ip[1] == 0 && ip[2] == 0 && ip[3] == 0
}

/// `::ffff:a.b.c.d`: an IPv4 peer reached through an IPv6 socket.
pub fn v4_mapped(ip: &[u32; 4]) -> Option<u32> {
    (ip[0] == 0 && ip[1] == 0 && ip[2] == u32::from_ne_bytes([0, 0, 0xff, 0xff])).then_some(ip[3])
}

pub fn map_v4(ip4: u32) -> [u32; 4] {
    [0, 0, u32::from_ne_bytes([0, 0, 0xff, 0xff]), ip4]
}

pub fn endpoint4(ip: u32, port: u32) -> Endpoint {
    Endpoint {
        ip: [ip, 0, 0, 0],
        port,
        family: AF_INET,
    }
}

pub fn endpoint6(ip: [u32; 4], port: u32) -> Endpoint {
    // A v4-mapped address is the IPv4 connection it really is.
    match v4_mapped(&ip) {
        Some(ip4) => endpoint4(ip4, port),
        None => Endpoint {
            ip,
            port,
            family: AF_INET6,
        },
    }
}

/// Whether `ip` (of `family`) is the pod's own address.
pub fn is_pod_ip(pod: &PodEntry, family: u32, ip: &[u32; 4]) -> bool {
    if family == AF_INET {
        pod.ip4 != 0 && ip[0] == pod.ip4
    } else {
        !is_zero6(&pod.ip6) && *ip == pod.ip6
    }
}

/// Reads an IPv6 address from a context field one 4-byte word at a time:
/// the verifier rejects the byte-wise copy the compiler would emit.
pub fn read6(field: *const [u32; 4]) -> [u32; 4] {
    let words = field.cast::<u32>();
    // SAFETY: `field` points at a readable [u32; 4] in the context.
    unsafe {
        [
            core::ptr::read_volatile(words),
            core::ptr::read_volatile(words.add(1)),
            core::ptr::read_volatile(words.add(2)),
            core::ptr::read_volatile(words.add(3)),
        ]
    }
}

/// Writes an IPv6 address into a context field one word at a time.
pub fn write6(field: *mut [u32; 4], ip: [u32; 4]) {
    let words = field.cast::<u32>();
    // SAFETY: `field` points at a writable [u32; 4] in the context.
    unsafe {
        core::ptr::write_volatile(words, ip[0]);
        core::ptr::write_volatile(words.add(1), ip[1]);
        core::ptr::write_volatile(words.add(2), ip[2]);
        core::ptr::write_volatile(words.add(3), ip[3]);
    }
}
