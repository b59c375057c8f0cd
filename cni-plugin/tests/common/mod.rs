//! Test helpers: network namespaces that clean up after themselves, a
//! client/pod veth topology, and sockets made inside a namespace.
#![allow(dead_code, clippy::expect_used, clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use amesh_cni::netns::Netns;
use socket2::{Domain, Socket, Type};

/// Every wait in the tests is bounded by this.
pub const T: Duration = Duration::from_secs(10);

/// Runs a command in the test's own namespace, panicking with its stderr.
pub fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A named netns (`ip netns add`) deleted on drop, even when the test fails.
#[derive(Debug)]
pub struct TestNetns {
    pub name: String,
    pub netns: Netns,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// `amc<pid>x<n>-<tag>`: unique per process and test, recognisable if a
/// killed run leaves one behind.
pub fn unique_name(tag: &str) -> String {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("amc{}x{n}-{tag}", std::process::id())
}

impl TestNetns {
    pub fn new(tag: &str) -> Self {
        Self::named(unique_name(tag))
    }

    pub fn named(name: String) -> Self {
        sh(&["ip", "netns", "add", &name]);
        // Construct the guard before anything else can fail.
        let netns = match Netns::open(&Self::path_of(&name)) {
            Ok(netns) => netns,
            Err(err) => {
                let _ = Command::new("ip").args(["netns", "del", &name]).status();
                panic!("open netns {name}: {err}");
            }
        };
        let guard = Self { name, netns };
        guard.ip(&["link", "set", "lo", "up"]);
        guard
    }

    pub fn path_of(name: &str) -> PathBuf {
        PathBuf::from("/var/run/netns").join(name)
    }

    pub fn path(&self) -> PathBuf {
        Self::path_of(&self.name)
    }

    /// Runs `program args…` inside this netns; panics on failure.
    pub fn exec(&self, program: &str, args: &[&str]) -> String {
        let out = self
            .netns
            .command(program)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{program} {args:?} in {}: {e}", self.name));
        assert!(
            out.status.success(),
            "{program} {args:?} in {} failed: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn ip(&self, args: &[&str]) -> String {
        self.exec("ip", args)
    }

    pub fn nft(&self, args: &[&str]) -> String {
        self.exec("nft", args)
    }

    /// Everything capture may touch, for before/after comparisons.
    pub fn state(&self) -> String {
        [
            self.nft(&["list", "ruleset"]),
            self.ip(&["-4", "rule", "show"]),
            self.ip(&["-6", "rule", "show"]),
            self.ip(&["-4", "route", "show", "table", "all"]),
            self.ip(&["-6", "route", "show", "table", "all"]),
        ]
        .join("\n----\n")
    }

    /// Runs `f` in this netns (sockets made there stay there).
    pub fn run<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        self.netns.run(f).expect("run in netns")
    }

    /// A tokio listener bound inside this netns.
    pub fn listen(&self, addr: SocketAddr) -> tokio::net::TcpListener {
        let std = self.run(|| {
            let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
            socket.set_reuse_address(true)?;
            if addr.is_ipv6() {
                socket.set_only_v6(true)?;
            }
            socket.bind(&addr.into())?;
            socket.listen(64)?;
            socket.set_nonblocking(true)?;
            std::io::Result::Ok(std::net::TcpListener::from(socket))
        });
        let std = std.unwrap_or_else(|e| panic!("listen on {addr} in {}: {e}", self.name));
        tokio::net::TcpListener::from_std(std).expect("tokio listener")
    }

    /// An unconnected TCP socket made inside this netns; `setup` may set
    /// options (mark, transparency, bind) before it is handed back.
    pub fn socket(
        &self,
        ipv6: bool,
        setup: impl FnOnce(&Socket) -> std::io::Result<()> + Send,
    ) -> tokio::net::TcpSocket {
        let socket = self.run(|| {
            let domain = if ipv6 { Domain::IPV6 } else { Domain::IPV4 };
            let socket = Socket::new(domain, Type::STREAM, None)?;
            setup(&socket)?;
            socket.set_nonblocking(true)?;
            std::io::Result::Ok(socket)
        });
        let socket = socket.unwrap_or_else(|e| panic!("socket in {}: {e}", self.name));
        tokio::net::TcpSocket::from_std_stream(std::net::TcpStream::from(socket))
    }

    /// Connects from inside this netns, bounded by [`T`].
    pub async fn connect(&self, to: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
        let socket = self.socket(to.is_ipv6(), |_| Ok(()));
        tokio::time::timeout(T, socket.connect(to))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))?
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A client netns and a pod netns joined by a veth pair:
/// client 10.77.0.1/24 + fd77::1/64, pod 10.77.0.2/24 + fd77::2/64 with a
/// default route via the client (which plays the node or a peer).
#[derive(Debug)]
pub struct Topology {
    pub client: TestNetns,
    pub pod: TestNetns,
}

pub const CLIENT_V4: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
pub const POD_V4: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
pub const CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 1);
pub const POD_V6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 2);

impl Topology {
    pub fn new() -> Self {
        let client = TestNetns::new("cli");
        let pod = TestNetns::new("pod");
        client.ip(&[
            "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", &pod.name,
        ]);
        for (ns, v4, v6) in [(&client, CLIENT_V4, CLIENT_V6), (&pod, POD_V4, POD_V6)] {
            ns.ip(&["addr", "add", &format!("{v4}/24"), "dev", "eth0"]);
            ns.ip(&[
                "-6",
                "addr",
                "add",
                &format!("{v6}/64"),
                "dev",
                "eth0",
                "nodad",
            ]);
            ns.ip(&["link", "set", "eth0", "up"]);
        }
        pod.ip(&["route", "add", "default", "via", &CLIENT_V4.to_string()]);
        pod.ip(&[
            "-6",
            "route",
            "add",
            "default",
            "via",
            &CLIENT_V6.to_string(),
        ]);
        Self { client, pod }
    }

    pub fn pod_netns(&self) -> amesh_cni::capture::PodNetns {
        amesh_cni::capture::PodNetns {
            name: self.pod.name.clone(),
            path: self.pod.path(),
            ips: vec![IpAddr::V4(POD_V4), IpAddr::V6(POD_V6)],
        }
    }
}

/// The destination a connection had before REDIRECT (`SO_ORIGINAL_DST`),
/// as ztunnel reads it.
pub fn original_dst(stream: &tokio::net::TcpStream) -> SocketAddr {
    let fd = stream.as_raw_fd();
    if stream.local_addr().expect("local addr").is_ipv4() {
        // SAFETY: a sockaddr_in-sized buffer and its length.
        unsafe {
            let mut addr: libc::sockaddr_in = std::mem::zeroed();
            let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            let rc = libc::getsockopt(
                fd,
                libc::SOL_IP,
                libc::SO_ORIGINAL_DST,
                (&mut addr as *mut libc::sockaddr_in).cast(),
                &mut len,
            );
            assert_eq!(
                rc,
                0,
                "SO_ORIGINAL_DST: {}",
                std::io::Error::last_os_error()
            );
            SocketAddr::new(
                IpAddr::V4(Ipv4Addr::from(u32::from_be(addr.sin_addr.s_addr))),
                u16::from_be(addr.sin_port),
            )
        }
    } else {
        // SAFETY: a sockaddr_in6-sized buffer and its length.
        unsafe {
            let mut addr: libc::sockaddr_in6 = std::mem::zeroed();
            let mut len = std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
            let rc = libc::getsockopt(
                fd,
                libc::SOL_IPV6,
                libc::IP6T_SO_ORIGINAL_DST,
                (&mut addr as *mut libc::sockaddr_in6).cast(),
                &mut len,
            );
            assert_eq!(
                rc,
                0,
                "IP6T_SO_ORIGINAL_DST: {}",
                std::io::Error::last_os_error()
            );
            SocketAddr::new(
                IpAddr::V6(Ipv6Addr::from(addr.sin6_addr.s6_addr)),
                u16::from_be(addr.sin6_port),
            )
        }
    }
}

/// Whether a connection is waiting on `listener` right now. Used after the
/// client side has finished (connected, or been refused): by then the pod's
/// stack has decided where the SYN went, so no waiting is needed.
pub fn has_pending(listener: &tokio::net::TcpListener) -> bool {
    let fd = listener.as_raw_fd();
    // SAFETY: poll(2) on one valid fd with a zero timeout.
    unsafe {
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        libc::poll(&mut pfd, 1, 0) == 1 && pfd.revents & libc::POLLIN != 0
    }
}

/// Accept with a bound.
pub async fn accept(listener: &tokio::net::TcpListener) -> (tokio::net::TcpStream, SocketAddr) {
    tokio::time::timeout(T, listener.accept())
        .await
        .expect("accept timed out")
        .expect("accept")
}
