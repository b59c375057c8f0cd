//! Relaying a TCP connection through an HBONE tunnel without copying in
//! user space: bytes read from TCP are handed to h2 as they are, and h2's
//! received chunks are written to TCP as they are.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};

use super::stream::H2Stream;

/// First read buffer of a connection: small, so short connections stay cheap.
const MIN_READ: usize = 16 * 1024;
/// Reads grow up to this while they keep filling the buffer (bulk transfers).
const MAX_READ: usize = 256 * 1024;

/// What a relay moved before it ended.
#[derive(Debug, Default)]
pub struct RelayOutcome {
    /// TCP → tunnel.
    pub to_tunnel: u64,
    /// Tunnel → TCP.
    pub from_tunnel: u64,
    /// Why it ended early; `None` when both directions reached EOF.
    pub error: Option<io::Error>,
}

/// Copies both ways until both directions have reached EOF (each EOF is
/// passed on as a half-close) or one side fails.
pub async fn relay<T>(tcp: &mut T, tunnel: &mut H2Stream) -> RelayOutcome
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let mut up = Up::default();
    let mut down = Down::default();
    let result = poll_fn(|cx| {
        let up_done = match up.poll(cx, tcp, tunnel) {
            Poll::Ready(Ok(())) => true,
            Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
            Poll::Pending => false,
        };
        let down_done = match down.poll(cx, tcp, tunnel) {
            Poll::Ready(Ok(())) => true,
            Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
            Poll::Pending => false,
        };
        if up_done && down_done {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    })
    .await;
    RelayOutcome {
        to_tunnel: up.bytes,
        from_tunnel: down.bytes,
        error: result.err(),
    }
}

/// TCP → tunnel.
#[derive(Default)]
struct Up {
    buf: BytesMut,
    next_read: usize,
    pending: Bytes,
    eof: bool,
    done: bool,
    bytes: u64,
}

impl Up {
    fn poll<T: AsyncRead + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        tcp: &mut T,
        tunnel: &mut H2Stream,
    ) -> Poll<io::Result<()>> {
        if self.done {
            return Poll::Ready(Ok(()));
        }
        loop {
            if !self.pending.is_empty() {
                ready!(tunnel.poll_write_chunk(cx, &mut self.pending))?;
                continue;
            }
            if self.eof {
                ready!(Pin::new(&mut *tunnel).poll_shutdown(cx))?;
                self.done = true;
                return Poll::Ready(Ok(()));
            }
            let want = self.next_read.max(MIN_READ);
            self.buf.reserve(want);
            let n = ready!(tokio_util::io::poll_read_buf(
                Pin::new(&mut *tcp),
                cx,
                &mut self.buf
            ))?;
            if n == 0 {
                self.eof = true;
                continue;
            }
            // A read that filled its buffer suggests a bulk transfer.
            self.next_read = if n >= want {
                (want * 2).min(MAX_READ)
            } else {
                want
            };
            self.bytes += n as u64;
            self.pending = self.buf.split().freeze();
        }
    }
}

/// Tunnel → TCP.
#[derive(Default)]
struct Down {
    pending: Bytes,
    done: bool,
    bytes: u64,
}

impl Down {
    fn poll<T: AsyncWrite + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        tcp: &mut T,
        tunnel: &mut H2Stream,
    ) -> Poll<io::Result<()>> {
        if self.done {
            return Poll::Ready(Ok(()));
        }
        loop {
            while !self.pending.is_empty() {
                let n = ready!(Pin::new(&mut *tcp).poll_write(cx, &self.pending))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.pending.advance(n);
            }
            match ready!(tunnel.poll_read_chunk(cx))? {
                Some(chunk) => {
                    self.bytes += chunk.len() as u64;
                    self.pending = chunk;
                }
                None => {
                    ready!(Pin::new(&mut *tcp).poll_shutdown(cx))?;
                    self.done = true;
                    return Poll::Ready(Ok(()));
                }
            }
        }
    }
}
