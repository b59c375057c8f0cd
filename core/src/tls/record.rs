//! TLS 1.3 record protection after the handshake, kTLS-style: rustls runs the
//! handshake and owns the key schedule ([`KernelConnection`]); this layer
//! seals and opens records with the negotiated suite's AEAD from the same
//! crypto provider.
//!
//! Why: rustls' buffered API copies every received record twice more (into
//! its deframer, then into a plaintext queue) and allocates per record. Here
//! records are read in large batches straight from the socket and decrypted
//! in place; the plaintext is copied once, into the caller's buffer.

use std::io;

use rustls::crypto::cipher::{InboundOpaqueMessage, MessageDecrypter};
use rustls::kernel::KernelConnection;
use rustls::{ConnectionTrafficSecrets, ContentType, ProtocolVersion, SupportedCipherSuite};

use super::seal::Sealer;

/// Largest plaintext in one record (RFC 8446 §5.1).
pub(crate) const MAX_FRAGMENT: usize = 16 * 1024;
/// Largest ciphertext a peer may send (RFC 8446 §5.2).
const MAX_CIPHERTEXT: usize = MAX_FRAGMENT + 256;
const HEADER: usize = 5;

const HANDSHAKE_NEW_SESSION_TICKET: u8 = 4;
const HANDSHAKE_KEY_UPDATE: u8 = 24;
const ALERT_CLOSE_NOTIFY: u8 = 0;
const TYPE_ALERT: u8 = 21;
const TYPE_HANDSHAKE: u8 = 22;
const TYPE_APPLICATION_DATA: u8 = 23;

fn tls_error(err: impl Into<rustls::Error>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, err.into())
}

fn protocol_error(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("TLS protocol violation: {what}"),
    )
}

/// The negotiated TLS 1.3 suite.
fn tls13(suite: SupportedCipherSuite) -> io::Result<&'static rustls::Tls13CipherSuite> {
    match suite {
        SupportedCipherSuite::Tls13(suite) => Ok(suite),
        _ => Err(protocol_error("HBONE requires TLS 1.3")),
    }
}

fn split_secrets(
    secrets: ConnectionTrafficSecrets,
) -> io::Result<(rustls::crypto::cipher::AeadKey, rustls::crypto::cipher::Iv)> {
    match secrets {
        ConnectionTrafficSecrets::Aes128Gcm { key, iv }
        | ConnectionTrafficSecrets::Aes256Gcm { key, iv }
        | ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => Ok((key, iv)),
        _ => Err(protocol_error("unsupported traffic secret")),
    }
}

/// What processing one received record produced.
pub(crate) enum Received {
    /// Application data at `buf[start..end]` (decrypted in place).
    Data { start: usize, end: usize },
    /// A post-handshake message or empty record: nothing for the caller.
    Nothing,
    /// The peer sent close_notify.
    Closed,
}

/// Both directions' record state plus rustls' key schedule.
pub(crate) struct RecordLayer<Data> {
    kernel: KernelConnection<Data>,
    suite: &'static rustls::Tls13CipherSuite,
    sealer: Sealer,
    decrypter: Box<dyn MessageDecrypter>,
    tx_seq: u64,
    rx_seq: u64,
    /// Records sealed under the current key, for the AEAD's confidentiality limit.
    tx_limit: u64,
    /// The peer asked for our key update; sent with the next write.
    key_update_owed: bool,
    peer_closed: bool,
}

impl<Data> RecordLayer<Data> {
    pub(crate) fn new(
        kernel: KernelConnection<Data>,
        secrets: rustls::ExtractedSecrets,
    ) -> io::Result<Self> {
        let suite = tls13(kernel.negotiated_cipher_suite())?;
        let (tx_seq, tx) = secrets.tx;
        let (rx_seq, rx) = secrets.rx;
        let sealer = Sealer::new(&tx)?;
        let (rx_key, rx_iv) = split_secrets(rx)?;
        // Re-key well before the suite's limit (2^24.5 records for AES-GCM).
        let tx_limit = suite.common.confidentiality_limit.saturating_sub(1 << 16);
        Ok(Self {
            sealer,
            decrypter: suite.aead_alg.decrypter(rx_key, rx_iv),
            kernel,
            suite,
            tx_seq,
            rx_seq,
            tx_limit,
            key_update_owed: false,
            peer_closed: false,
        })
    }

    /// Sends a KeyUpdate before the next record (operators may rotate keys on
    /// long-lived connections; the AEAD limit also triggers it).
    pub(crate) fn request_key_update(&mut self) {
        self.key_update_owed = true;
    }

    pub(crate) fn peer_closed(&self) -> bool {
        self.peer_closed
    }

    /// Length of the complete record at the front of `buf`, if there is one.
    pub(crate) fn complete_record(buf: &[u8]) -> io::Result<Option<usize>> {
        if buf.len() < HEADER {
            return Ok(None);
        }
        let len = usize::from(u16::from_be_bytes([buf[3], buf[4]]));
        if len > MAX_CIPHERTEXT {
            return Err(tls_error(rustls::PeerMisbehaved::IllegalTlsInnerPlaintext));
        }
        Ok((buf.len() >= HEADER + len).then_some(HEADER + len))
    }

    /// Opens the record occupying `buf[at..at + len]` in place.
    pub(crate) fn open(&mut self, buf: &mut [u8], at: usize, len: usize) -> io::Result<Received> {
        if self.peer_closed {
            return Err(protocol_error("data after close_notify"));
        }
        let record = &mut buf[at..at + len];
        let typ = ContentType::from(record[0]);
        let version = ProtocolVersion::from(u16::from_be_bytes([record[1], record[2]]));
        if typ != ContentType::ApplicationData {
            return Err(protocol_error("unprotected record after the handshake"));
        }
        let base = record.as_ptr() as usize;
        let message = InboundOpaqueMessage::new(typ, version, &mut record[HEADER..]);
        let plain = self
            .decrypter
            .decrypt(message, self.rx_seq)
            .map_err(tls_error)?;
        self.rx_seq += 1;
        let start = at + (plain.payload.as_ptr() as usize - base);
        let end = start + plain.payload.len();
        match plain.typ {
            ContentType::ApplicationData if start == end => Ok(Received::Nothing),
            ContentType::ApplicationData => Ok(Received::Data { start, end }),
            ContentType::Alert => {
                let alert = plain.payload;
                if alert.len() == 2 && alert[1] == ALERT_CLOSE_NOTIFY {
                    self.peer_closed = true;
                    Ok(Received::Closed)
                } else {
                    let description = alert.get(1).copied().unwrap_or(u8::MAX);
                    Err(tls_error(rustls::Error::AlertReceived(
                        rustls::AlertDescription::from(description),
                    )))
                }
            }
            ContentType::Handshake => {
                let messages = plain.payload.to_vec();
                self.handle_post_handshake(&messages)?;
                Ok(Received::Nothing)
            }
            _ => Err(protocol_error("unexpected record content type")),
        }
    }

    /// NewSessionTicket is ignored (we never resume); KeyUpdate re-keys the
    /// receive side and, if asked, owes the peer our own update.
    fn handle_post_handshake(&mut self, mut messages: &[u8]) -> io::Result<()> {
        while !messages.is_empty() {
            if messages.len() < 4 {
                return Err(protocol_error("truncated handshake message"));
            }
            let len = usize::from(messages[1]) << 16
                | usize::from(messages[2]) << 8
                | usize::from(messages[3]);
            let body = messages
                .get(4..4 + len)
                .ok_or_else(|| protocol_error("truncated handshake message"))?;
            match messages[0] {
                HANDSHAKE_NEW_SESSION_TICKET => {}
                HANDSHAKE_KEY_UPDATE => {
                    let requested = match body {
                        [0] => false,
                        [1] => true,
                        _ => return Err(protocol_error("malformed KeyUpdate")),
                    };
                    let (seq, secrets) = self.kernel.update_rx_secret().map_err(tls_error)?;
                    let (key, iv) = split_secrets(secrets)?;
                    self.decrypter = self.suite.aead_alg.decrypter(key, iv);
                    self.rx_seq = seq;
                    self.key_update_owed |= requested;
                }
                _ => return Err(protocol_error("unexpected post-handshake message")),
            }
            messages = &messages[4 + len..];
        }
        Ok(())
    }

    fn seal(&mut self, typ: u8, payload: &[&[u8]], out: &mut Vec<u8>) -> io::Result<()> {
        self.sealer.seal(self.tx_seq, typ, payload, out)?;
        self.tx_seq += 1;
        Ok(())
    }

    /// Seals `data` into records of at most [`MAX_FRAGMENT`] bytes appended to
    /// `out`, sending a KeyUpdate first when one is due.
    pub(crate) fn seal_data(&mut self, data: &[&[u8]], out: &mut Vec<u8>) -> io::Result<()> {
        if self.key_update_owed || self.tx_seq >= self.tx_limit {
            self.send_key_update(out)?;
        }
        let mut record: Vec<&[u8]> = Vec::with_capacity(4);
        let mut room = MAX_FRAGMENT;
        for mut slice in data.iter().copied() {
            while !slice.is_empty() {
                let (now, later) = slice.split_at(slice.len().min(room));
                record.push(now);
                room -= now.len();
                slice = later;
                if room == 0 {
                    self.seal(TYPE_APPLICATION_DATA, &record, out)?;
                    record.clear();
                    room = MAX_FRAGMENT;
                }
            }
        }
        if !record.is_empty() {
            self.seal(TYPE_APPLICATION_DATA, &record, out)?;
        }
        Ok(())
    }

    fn send_key_update(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        // KeyUpdate(update_not_requested), then switch to the next secret.
        let message: [u8; 5] = [HANDSHAKE_KEY_UPDATE, 0, 0, 1, 0];
        self.seal(TYPE_HANDSHAKE, &[&message], out)?;
        let (seq, secrets) = self.kernel.update_tx_secret().map_err(tls_error)?;
        self.sealer = Sealer::new(&secrets)?;
        self.tx_seq = seq;
        self.key_update_owed = false;
        Ok(())
    }

    pub(crate) fn seal_close_notify(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        let alert: [u8; 2] = [1, ALERT_CLOSE_NOTIFY];
        self.seal(TYPE_ALERT, &[&alert], out)
    }
}
