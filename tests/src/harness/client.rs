//! Acting as a pod or a node: sockets made inside its netns, and commands
//! (curl, iperf3, h2load, …) run inside it.

use std::collections::BTreeSet;
use std::io;
use std::net::SocketAddr;
use std::process::Output;
use std::time::Duration;

use anyhow::Result;
use tokio::net::{TcpSocket, TcpStream};

use super::listen::listening_ports;
use super::netns::in_netns;
use super::spawn::run_in;
use super::topology::{Node, Pod};

/// Connect timeout of `Pod::connect`.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a `run` command may take.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// An unconnected tokio socket living in `netns`. Only the socket's creation
/// needs the netns thread; connecting can happen anywhere.
fn socket_in(netns: &str, addr: SocketAddr) -> io::Result<TcpSocket> {
    in_netns(netns, || {
        if addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
    })
    .map_err(io::Error::other)?
}

async fn connect_in(netns: &str, addr: SocketAddr) -> io::Result<TcpStream> {
    let socket = socket_in(netns, addr)?;
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, socket.connect(addr))
        .await
        .map_err(|_| {
            io::Error::new(io::ErrorKind::TimedOut, format!("connect {addr} timed out"))
        })??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

fn connect_std_in(
    netns: &str,
    addr: SocketAddr,
    timeout: Duration,
) -> io::Result<std::net::TcpStream> {
    in_netns(netns, || {
        std::net::TcpStream::connect_timeout(&addr, timeout)
    })
    .map_err(io::Error::other)?
}

fn bind_std_in(netns: &str, addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    in_netns(netns, || std::net::TcpListener::bind(addr)).map_err(io::Error::other)?
}

impl Pod {
    /// A TCP connection from this pod to `addr` (with the mesh running, it is
    /// captured like any app's), within [`CONNECT_TIMEOUT`].
    pub async fn connect(&self, addr: SocketAddr) -> io::Result<TcpStream> {
        connect_in(&self.netns, addr).await
    }

    /// Blocking connect from this pod, for code outside a runtime.
    pub fn connect_std(
        &self,
        addr: SocketAddr,
        timeout: Duration,
    ) -> io::Result<std::net::TcpStream> {
        connect_std_in(&self.netns, addr, timeout)
    }

    /// An unconnected socket in this pod (to bind a source port, set options, …).
    pub fn tcp_socket(&self, addr: SocketAddr) -> io::Result<TcpSocket> {
        socket_in(&self.netns, addr)
    }

    /// A listener in this pod (convert with `set_nonblocking` + `from_std`).
    pub fn bind_std(&self, addr: SocketAddr) -> io::Result<std::net::TcpListener> {
        bind_std_in(&self.netns, addr)
    }

    /// Runs a command in this pod, within [`RUN_TIMEOUT`].
    pub fn run(&self, program: &str, args: &[&str]) -> Result<Output> {
        run_in(&self.netns, program, args, RUN_TIMEOUT)
    }

    pub fn run_timeout(&self, program: &str, args: &[&str], timeout: Duration) -> Result<Output> {
        run_in(&self.netns, program, args, timeout)
    }

    /// TCP ports in LISTEN state in this pod.
    pub fn listening_ports(&self) -> Result<BTreeSet<u16>> {
        listening_ports(&self.netns)
    }
}

impl Node {
    /// A TCP connection from the node netns (like kubelet probes).
    pub async fn connect(&self, addr: SocketAddr) -> io::Result<TcpStream> {
        connect_in(&self.netns, addr).await
    }

    pub fn connect_std(
        &self,
        addr: SocketAddr,
        timeout: Duration,
    ) -> io::Result<std::net::TcpStream> {
        connect_std_in(&self.netns, addr, timeout)
    }

    /// Runs a command in the node netns, within [`RUN_TIMEOUT`].
    pub fn run(&self, program: &str, args: &[&str]) -> Result<Output> {
        run_in(&self.netns, program, args, RUN_TIMEOUT)
    }

    pub fn run_timeout(&self, program: &str, args: &[&str], timeout: Duration) -> Result<Output> {
        run_in(&self.netns, program, args, timeout)
    }

    pub fn listening_ports(&self) -> Result<BTreeSet<u16>> {
        listening_ports(&self.netns)
    }
}
