//! An mTLS stream for HBONE: rustls' unbuffered API drives the handshake,
//! then [`RecordLayer`] protects records (see `record.rs` for why).

use std::fmt;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use rustls::client::{ClientConnectionData, UnbufferedClientConnection};
use rustls::kernel::KernelConnection;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{ConnectionState, EncodeError, UnbufferedStatus};
use rustls::{CommonState, ExtractedSecrets};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::ALPN_H2;
use super::record::{MAX_FRAGMENT, Received, RecordLayer};

/// Room for several full records per read syscall.
const READ_BUFFER: usize = 128 * 1024;
/// Plaintext accepted per write call.
const MAX_WRITE: usize = 16 * MAX_FRAGMENT;
/// Sealed bytes queued before writes push back.
const HIGH_WATER: usize = 256 * 1024;
/// Slices taken from one vectored write.
const MAX_IOVECS: usize = 64;

fn tls_error(err: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, err)
}

/// The two rustls connection kinds, driven by one handshake loop.
trait Handshaking {
    type Data;
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data>;
    fn common(&self) -> &CommonState;
    fn into_kernel(self)
    -> Result<(ExtractedSecrets, KernelConnection<Self::Data>), rustls::Error>;
}

/// rustls gives the client and server connections the same methods but no
/// shared trait; this forwards them.
macro_rules! impl_handshaking {
    ($conn:ty, $data:ty) => {
        impl Handshaking for $conn {
            type Data = $data;
            fn process<'c, 'i>(
                &'c mut self,
                incoming: &'i mut [u8],
            ) -> UnbufferedStatus<'c, 'i, Self::Data> {
                self.process_tls_records(incoming)
            }
            fn common(&self) -> &CommonState {
                self
            }
            fn into_kernel(
                self,
            ) -> Result<(ExtractedSecrets, KernelConnection<Self::Data>), rustls::Error> {
                self.dangerous_into_kernel_connection()
            }
        }
    };
}

impl_handshaking!(UnbufferedClientConnection, ClientConnectionData);
impl_handshaking!(UnbufferedServerConnection, ServerConnectionData);

/// Runs a TLS client handshake over `io`.
pub async fn connect<IO>(
    config: Arc<rustls::ClientConfig>,
    server_name: ServerName<'static>,
    io: IO,
) -> io::Result<TlsStream<ClientConnectionData, IO>>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let conn = UnbufferedClientConnection::new(config, server_name).map_err(tls_error)?;
    handshake(conn, io).await
}

/// Runs a TLS server handshake over `io`.
pub async fn accept<IO>(
    config: Arc<rustls::ServerConfig>,
    io: IO,
) -> io::Result<TlsStream<ServerConnectionData, IO>>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let conn = UnbufferedServerConnection::new(config).map_err(tls_error)?;
    handshake(conn, io).await
}

enum Step {
    Continue,
    Transmit,
    Read,
    Done,
}

async fn handshake<C, IO>(mut conn: C, mut io: IO) -> io::Result<TlsStream<C::Data, IO>>
where
    C: Handshaking,
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let mut incoming = vec![0_u8; READ_BUFFER];
    let mut filled = 0;
    let mut outgoing = Vec::with_capacity(4096);
    let mut early_plaintext = Vec::new();
    loop {
        let status = conn.process(&mut incoming[..filled]);
        let mut discard = status.discard;
        let state = match status.state {
            Ok(state) => state,
            Err(err) => {
                flush_alert(&mut conn, &mut io).await;
                return Err(tls_error(err));
            }
        };
        let step = match state {
            ConnectionState::EncodeTlsData(mut data) => {
                let start = outgoing.len();
                outgoing.resize(start + 4096, 0);
                let written = match data.encode(&mut outgoing[start..]) {
                    Ok(n) => n,
                    Err(EncodeError::InsufficientSize(needed)) => {
                        outgoing.resize(start + needed.required_size, 0);
                        data.encode(&mut outgoing[start..])
                            .map_err(|e| io::Error::other(e.to_string()))?
                    }
                    Err(e) => return Err(io::Error::other(e.to_string())),
                };
                outgoing.truncate(start + written);
                Step::Continue
            }
            ConnectionState::TransmitTlsData(data) => {
                data.done();
                Step::Transmit
            }
            ConnectionState::BlockedHandshake => Step::Read,
            ConnectionState::ReadTraffic(mut traffic) => {
                while let Some(record) = traffic.next_record() {
                    let record = record.map_err(tls_error)?;
                    discard += record.discard;
                    early_plaintext.extend_from_slice(record.payload);
                }
                Step::Continue
            }
            // Early data is never enabled (max_early_data_size is 0).
            ConnectionState::ReadEarlyData(_) => {
                return Err(tls_error(rustls::Error::PeerMisbehaved(
                    rustls::PeerMisbehaved::TooMuchEarlyDataReceived,
                )));
            }
            // A server may write (0.5-RTT) before the client's Finished: the
            // handshake, and so client authentication, is done only once
            // rustls stops handshaking.
            ConnectionState::WriteTraffic(_) => Step::Done,
            ConnectionState::PeerClosed | ConnectionState::Closed => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "peer closed the connection during the TLS handshake",
                ));
            }
            _ => return Err(io::Error::other("unexpected TLS handshake state")),
        };
        if discard > 0 {
            incoming.copy_within(discard..filled, 0);
            filled -= discard;
        }
        let step = match step {
            Step::Done if conn.common().is_handshaking() => Step::Read,
            step => step,
        };
        match step {
            Step::Continue => {}
            Step::Transmit => {
                io.write_all(&outgoing).await?;
                outgoing.clear();
            }
            Step::Read => {
                if filled == incoming.len() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "TLS handshake message too large",
                    ));
                }
                let n = io.read(&mut incoming[filled..]).await?;
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "peer closed the connection during the TLS handshake",
                    ));
                }
                filled += n;
            }
            Step::Done => break,
        }
    }
    if !outgoing.is_empty() {
        io.write_all(&outgoing).await?;
    }
    if conn.common().alpn_protocol() != Some(ALPN_H2) {
        return Err(tls_error(rustls::Error::NoApplicationProtocol));
    }
    let peer_certificates = conn
        .common()
        .peer_certificates()
        .map(<[CertificateDer<'static>]>::to_vec)
        .unwrap_or_default();
    let (secrets, kernel) = conn.into_kernel().map_err(tls_error)?;
    let records = RecordLayer::new(kernel, secrets)?;
    Ok(TlsStream {
        io,
        records,
        peer_certificates,
        rbuf: incoming,
        rstart: 0,
        rend: filled,
        plain: (0, 0),
        early_plaintext,
        read_eof: false,
        sealed: Vec::with_capacity(MAX_WRITE + MAX_WRITE / 64),
        sent: 0,
        close_sent: false,
    })
}

/// Best effort: sends the alert rustls queued for a failed handshake, so the
/// peer learns why (e.g. bad_certificate) instead of seeing a bare close.
async fn flush_alert<C: Handshaking, IO: AsyncWrite + Unpin>(conn: &mut C, io: &mut IO) {
    let mut out = vec![0_u8; 512];
    let written = match conn.process(&mut []).state {
        Ok(ConnectionState::EncodeTlsData(mut data)) => data.encode(&mut out).unwrap_or(0),
        _ => 0,
    };
    if written > 0 {
        let _ = io.write_all(&out[..written]).await;
        let _ = io.flush().await;
    }
}

/// A TLS 1.3 connection after its handshake.
pub struct TlsStream<Data, IO> {
    io: IO,
    records: RecordLayer<Data>,
    peer_certificates: Vec<CertificateDer<'static>>,
    /// Received ciphertext at `rbuf[rstart..rend]`.
    rbuf: Vec<u8>,
    rstart: usize,
    rend: usize,
    /// Decrypted, not yet read: `rbuf[plain.0..plain.1]`.
    plain: (usize, usize),
    /// Plaintext rustls decrypted during the handshake, delivered first.
    early_plaintext: Vec<u8>,
    read_eof: bool,
    /// Sealed records; `sealed[sent..]` is not yet written to `io`. Reset
    /// to empty once drained, so the same (cache-warm) memory is reused.
    sealed: Vec<u8>,
    sent: usize,
    close_sent: bool,
}

impl<Data, IO> TlsStream<Data, IO> {
    /// The peer's certificate chain, leaf first.
    pub fn peer_certificates(&self) -> &[CertificateDer<'static>] {
        &self.peer_certificates
    }

    pub fn get_ref(&self) -> &IO {
        &self.io
    }

    /// Moves the sending direction to fresh keys (TLS 1.3 KeyUpdate) before
    /// the next write.
    pub fn refresh_traffic_keys(&mut self) {
        self.records.request_key_update();
    }
}

impl<Data, IO: AsyncWrite + Unpin> TlsStream<Data, IO> {
    fn unsent(&self) -> usize {
        self.sealed.len() - self.sent
    }

    /// Writes sealed records until none are left or `io` pushes back.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.sealed.len() {
            let written = ready!(Pin::new(&mut self.io).poll_write(cx, &self.sealed[self.sent..]))?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += written;
        }
        self.sealed.clear();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }
}

impl<Data: Unpin, IO: AsyncRead + Unpin> AsyncRead for TlsStream<Data, IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.early_plaintext.is_empty() {
            let n = this.early_plaintext.len().min(out.remaining());
            out.put_slice(&this.early_plaintext[..n]);
            this.early_plaintext.drain(..n);
            return Poll::Ready(Ok(()));
        }
        loop {
            let (start, end) = this.plain;
            if start < end {
                let n = (end - start).min(out.remaining());
                out.put_slice(&this.rbuf[start..start + n]);
                this.plain.0 += n;
                return Poll::Ready(Ok(()));
            }
            if this.read_eof {
                return Poll::Ready(Ok(()));
            }
            if let Some(len) =
                RecordLayer::<Data>::complete_record(&this.rbuf[this.rstart..this.rend])?
            {
                let at = this.rstart;
                this.rstart += len;
                match this.records.open(&mut this.rbuf, at, len)? {
                    Received::Data { start, end } => this.plain = (start, end),
                    Received::Nothing => {}
                    Received::Closed => this.read_eof = true,
                }
                continue;
            }
            // Need more ciphertext: make room for at least one whole record.
            if this.rstart == this.rend {
                this.rstart = 0;
                this.rend = 0;
            } else if this.rbuf.len() - this.rend < MAX_FRAGMENT + 512 {
                this.rbuf.copy_within(this.rstart..this.rend, 0);
                this.rend -= this.rstart;
                this.rstart = 0;
            }
            let mut space = ReadBuf::new(&mut this.rbuf[this.rend..]);
            ready!(Pin::new(&mut this.io).poll_read(cx, &mut space))?;
            let n = space.filled().len();
            if n == 0 {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "peer closed the TLS connection without close_notify",
                )));
            }
            this.rend += n;
        }
    }
}

impl<Data: Unpin, IO: AsyncWrite + Unpin> AsyncWrite for TlsStream<Data, IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.close_sent {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        if this.poll_drain(cx)?.is_pending() && this.unsent() >= HIGH_WATER {
            return Poll::Pending;
        }
        let mut taken = 0;
        let mut slices: Vec<&[u8]> = Vec::with_capacity(bufs.len().min(MAX_IOVECS));
        for buf in bufs.iter().take(MAX_IOVECS) {
            let n = buf.len().min(MAX_WRITE - taken);
            if n > 0 {
                slices.push(&buf[..n]);
                taken += n;
            }
            if taken == MAX_WRITE {
                break;
            }
        }
        if taken == 0 {
            return Poll::Ready(Ok(0));
        }
        // Under steady backpressure the buffer may never drain completely:
        // drop the already-sent prefix so it cannot grow without bound.
        if this.sent > 0 && this.sent >= this.sealed.len() / 2 {
            this.sealed.drain(..this.sent);
            this.sent = 0;
        }
        this.records.seal_data(&slices, &mut this.sealed)?;
        // Start sending now; what the socket does not take is flushed later.
        let _ = this.poll_drain(cx)?;
        Poll::Ready(Ok(taken))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.close_sent {
            this.records.seal_close_notify(&mut this.sealed)?;
            this.close_sent = true;
        }
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

impl<Data, IO> fmt::Debug for TlsStream<Data, IO> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsStream")
            .field("peer_closed", &self.records.peer_closed())
            .field("unsent", &(self.sealed.len() - self.sent))
            .finish_non_exhaustive()
    }
}
