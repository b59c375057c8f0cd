//! Counting a proxied connection's bytes into its metrics as they move, so
//! long-lived connections show their traffic while open and a connection
//! cut short (a revoked policy, a reset) still counts what it moved.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use amesh_core::metrics::ConnectionCounters;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Which end of the connection the TCP socket is: Istio's `received` counts
/// request bytes (client → server), `sent` response bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Faces {
    /// The client (outbound, inbound plaintext): reads are requests.
    Client,
    /// The server app (inbound HBONE): reads are responses.
    Server,
}

/// A TCP stream whose bytes go to `counters` as they pass.
#[derive(Debug)]
pub struct Metered {
    tcp: TcpStream,
    counters: ConnectionCounters,
    faces: Faces,
    read: u64,
    written: u64,
}

impl Metered {
    pub fn new(tcp: TcpStream, counters: ConnectionCounters, faces: Faces) -> Self {
        Self {
            tcp,
            counters,
            faces,
            read: 0,
            written: 0,
        }
    }

    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    /// Bytes read from the socket so far.
    pub fn read_bytes(&self) -> u64 {
        self.read
    }

    /// Bytes written to the socket so far.
    pub fn written_bytes(&self) -> u64 {
        self.written
    }

    fn count_read(&mut self, n: usize) {
        self.read += n as u64;
        match self.faces {
            Faces::Client => self.counters.add_received(n as u64),
            Faces::Server => self.counters.add_sent(n as u64),
        }
    }

    fn count_written(&mut self, n: usize) {
        self.written += n as u64;
        match self.faces {
            Faces::Client => self.counters.add_sent(n as u64),
            Faces::Server => self.counters.add_received(n as u64),
        }
    }
}

impl AsyncRead for Metered {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.tcp).poll_read(cx, buf))?;
        let n = buf.filled().len().saturating_sub(before);
        this.count_read(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Metered {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let n = ready!(Pin::new(&mut this.tcp).poll_write(cx, buf))?;
        this.count_written(n);
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let n = ready!(Pin::new(&mut this.tcp).poll_write_vectored(cx, bufs))?;
        this.count_written(n);
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}
