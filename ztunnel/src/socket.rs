//! Sockets ztunnel makes inside pod network namespaces.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use socket2::{Domain, Protocol, SockAddr, SockRef, Socket, Type};
use tokio::net::{TcpSocket, TcpStream};

use crate::netns::Netns;

/// On every socket ztunnel opens toward a pod or the network: the pod's
/// capture rules let marked traffic through instead of redirecting it back.
pub const ZTUNNEL_MARK: u32 = 0x539;

/// Listeners on `port` inside `ns`: `0.0.0.0`, and `[::]` (IPv6 only) where
/// the pod has IPv6. Capture redirects outbound traffic to the loopback
/// address and inbound traffic to the pod IP, so they bind all addresses.
/// SO_REUSEPORT lets a new ztunnel bind beside an old one.
pub fn listen(ns: &Netns, port: u16, reach: Reach) -> io::Result<Vec<std::net::TcpListener>> {
    let v4 = bind_listener(ns, SocketAddr::from(([0, 0, 0, 0], port)), reach)?;
    let mut listeners = vec![v4.into()];
    match bind_listener(
        ns,
        SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port)),
        reach,
    ) {
        Ok(v6) => listeners.push(v6.into()),
        // No IPv6 in this pod: IPv4 alone serves it.
        Err(err) if ipv6_unavailable(&err) => {}
        Err(err) => return Err(err),
    }
    Ok(listeners)
}

fn bind_listener(ns: &Netns, addr: SocketAddr, reach: Reach) -> io::Result<Socket> {
    ns.run(|| {
        let domain = Domain::for_address(addr);
        let socket = Socket::new(domain, Type::STREAM.nonblocking(), Some(Protocol::TCP))?;
        if addr.is_ipv6() {
            // Separate families: IPv4-mapped addresses would complicate
            // reading the original destination.
            socket.set_only_v6(true)?;
        }
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        // Accepted sockets inherit the listener's buffer sizes.
        reach.size_buffers(&socket)?;
        socket.bind(&SockAddr::from(addr))?;
        socket.listen(1024)?;
        Ok(socket)
    })
}

/// Lets a closing listener hand the connections queued on it to another
/// listener of its SO_REUSEPORT group (`net.ipv4.tcp_migrate_req`, per
/// netns, Linux 5.14+; it covers IPv6 too). Without it, closing the old
/// ztunnel's listeners during an upgrade resets every connection that was
/// still waiting in their accept queues.
pub fn enable_listener_handover(ns: &Netns) -> io::Result<()> {
    // /proc/sys/net is the netns of the thread that opens it.
    ns.run(|| std::fs::write("/proc/sys/net/ipv4/tcp_migrate_req", "1"))
}

fn ipv6_unavailable(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EAFNOSUPPORT) | Some(libc::EADDRNOTAVAIL) | Some(libc::EPROTONOSUPPORT)
    )
}

/// Where a socket's peer is, which decides its buffer sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reach {
    /// The app in the same pod, over loopback: a round trip is microseconds,
    /// so small fixed buffers lose no throughput, and they keep the bytes
    /// in flight in cache. Autotuning grows them to megabytes, which
    /// measured ~15% slower through two ztunnels on a 2-core machine.
    InPod,
    /// Another pod or node: the kernel autotunes to the path's
    /// bandwidth-delay product, which may be large.
    Network,
}

/// Send and receive buffer of in-pod sockets.
const IN_POD_BUFFER: usize = 256 * 1024;

impl Reach {
    fn size_buffers(self, socket: &Socket) -> io::Result<()> {
        if self == Reach::InPod {
            socket.set_send_buffer_size(IN_POD_BUFFER)?;
            socket.set_recv_buffer_size(IN_POD_BUFFER)?;
        }
        Ok(())
    }
}

/// How an upstream connection is made.
#[derive(Clone, Copy, Debug)]
pub struct Upstream {
    pub dst: SocketAddr,
    /// Connect from this (non-local) IP, keeping the original client's
    /// address for the app: needs IP_TRANSPARENT and the pod's mark routing.
    pub spoof_src: Option<IpAddr>,
    pub reach: Reach,
    pub timeout: Duration,
}

/// Connects from inside `ns`, marked so capture lets it pass.
pub async fn connect(ns: &Netns, upstream: Upstream) -> io::Result<TcpStream> {
    let socket = ns.run(|| {
        let domain = Domain::for_address(upstream.dst);
        let socket = Socket::new(domain, Type::STREAM.nonblocking(), Some(Protocol::TCP))?;
        socket.set_mark(ZTUNNEL_MARK)?;
        socket.set_tcp_nodelay(true)?;
        upstream.reach.size_buffers(&socket)?;
        if let Some(src) = upstream.spoof_src {
            match src {
                IpAddr::V4(_) => socket.set_ip_transparent_v4(true)?,
                IpAddr::V6(_) => socket.set_ip_transparent_v6(true)?,
            }
            // The port is chosen at connect() against the whole 4-tuple:
            // cheaper than bind()'s search, and ports are reused across
            // destinations instead of running out.
            nix::sys::socket::setsockopt(
                &socket,
                nix::sys::socket::sockopt::IpBindAddressNoPort,
                &true,
            )?;
            socket.bind(&SockAddr::from(SocketAddr::new(src, 0)))?;
        }
        Ok(socket)
    })?;
    let socket = TcpSocket::from_std_stream(socket.into());
    match tokio::time::timeout(upstream.timeout, socket.connect(upstream.dst)).await {
        Ok(result) => result,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("connect to {} timed out", upstream.dst),
        )),
    }
}

/// The destination a redirected connection was addressed to.
pub fn original_dst(stream: &TcpStream) -> io::Result<SocketAddr> {
    let sock = SockRef::from(stream);
    let addr = match stream.local_addr()? {
        SocketAddr::V4(_) => sock.original_dst_v4()?,
        SocketAddr::V6(_) => sock.original_dst_v6()?,
    };
    addr.as_socket()
        .ok_or_else(|| io::Error::other("original destination is not an IP address"))
}

/// Makes the next close send RST instead of FIN, so a reset travels on.
pub fn reset_on_close(stream: &TcpStream) {
    let _ = SockRef::from(stream).set_linger(Some(Duration::ZERO));
}
