//! How HBONE clients get their TCP socket. ztunnel supplies its own dialer to
//! create the socket inside the source pod's network namespace.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;

use tokio::net::{TcpSocket, TcpStream};

pub type DialFuture<'a> = Pin<Box<dyn Future<Output = io::Result<TcpStream>> + Send + 'a>>;

/// Opens the TCP connection an HBONE connection runs over.
pub trait Dialer: Send + Sync + fmt::Debug {
    fn dial(&self, dst: SocketAddr) -> DialFuture<'_>;
}

/// Connects from the host's network namespace, optionally from a given IP.
#[derive(Clone, Debug, Default)]
pub struct DefaultDialer {
    pub bind_ip: Option<IpAddr>,
}

impl Dialer for DefaultDialer {
    fn dial(&self, dst: SocketAddr) -> DialFuture<'_> {
        Box::pin(async move {
            let socket = match dst {
                SocketAddr::V4(_) => TcpSocket::new_v4()?,
                SocketAddr::V6(_) => TcpSocket::new_v6()?,
            };
            if let Some(ip) = self.bind_ip {
                socket.bind(SocketAddr::new(ip, 0))?;
            }
            socket.set_nodelay(true)?;
            socket.connect(dst).await
        })
    }
}
