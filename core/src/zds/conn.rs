//! One ZDS connection: framed protobuf messages with an optional fd each.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::Path;

use tokio_seqpacket::UnixSeqpacket;
use tokio_seqpacket::ancillary::{AncillaryMessageWriter, OwnedAncillaryMessage};

use super::{MAX_MESSAGE_SIZE, ZdsError};

/// Room for a few fds: a peer sending more than the one allowed is then seen
/// and refused (fds that do not fit are closed by the kernel, which only
/// reports `MSG_CTRUNC`).
const CMSG_BUFFER: usize = 128;

/// Control-message buffers must be aligned like `cmsghdr`.
#[repr(C, align(8))]
struct CmsgBuffer([u8; CMSG_BUFFER]);

/// A connected ZDS socket. Messages may be sent and received from different
/// tasks at once (the socket is safe for concurrent use).
#[derive(Debug)]
pub struct ZdsConnection {
    socket: UnixSeqpacket,
}

impl From<UnixSeqpacket> for ZdsConnection {
    fn from(socket: UnixSeqpacket) -> Self {
        Self { socket }
    }
}

impl ZdsConnection {
    pub async fn connect(path: &Path) -> Result<Self, ZdsError> {
        Ok(Self {
            socket: UnixSeqpacket::connect(path).await?,
        })
    }

    /// Two connected ends (a socketpair), for tests and in-process use.
    pub fn pair() -> Result<(Self, Self), ZdsError> {
        let (a, b) = UnixSeqpacket::pair()?;
        Ok((Self { socket: a }, Self { socket: b }))
    }

    /// Sends one message as one packet, with `fd` (if any) as `SCM_RIGHTS`.
    pub async fn send<M: prost::Message>(
        &self,
        msg: &M,
        fd: Option<BorrowedFd<'_>>,
    ) -> Result<(), ZdsError> {
        let bytes = msg.encode_to_vec();
        if bytes.len() > MAX_MESSAGE_SIZE {
            return Err(ZdsError::TooLarge(bytes.len()));
        }
        let mut cmsg = CmsgBuffer([0; CMSG_BUFFER]);
        let mut ancillary = AncillaryMessageWriter::new(&mut cmsg.0);
        if let Some(fd) = fd {
            ancillary.add_fds(&[fd]).map_err(std::io::Error::from)?;
        }
        let sent = self
            .socket
            .send_vectored_with_ancillary(&[IoSlice::new(&bytes)], &mut ancillary)
            .await?;
        // SOCK_SEQPACKET sends whole packets or fails; a short count would
        // mean the peer sees a corrupt message.
        if sent != bytes.len() {
            return Err(ZdsError::Io(std::io::Error::new(
                std::io::ErrorKind::WriteZero,
                format!("sent {sent} of {} bytes", bytes.len()),
            )));
        }
        Ok(())
    }

    /// Next message and the fd that came with it; `Err(ZdsError::Closed)` on
    /// orderly EOF.
    pub async fn recv<M: prost::Message + Default>(
        &self,
    ) -> Result<(M, Option<OwnedFd>), ZdsError> {
        // One byte more than the limit: a longer packet is truncated by the
        // kernel, and a full buffer tells us it was too large.
        let mut buf = [0u8; MAX_MESSAGE_SIZE + 1];
        let mut cmsg = CmsgBuffer([0; CMSG_BUFFER]);
        let (len, ancillary) = self
            .socket
            .recv_vectored_with_ancillary(&mut [IoSliceMut::new(&mut buf)], &mut cmsg.0)
            .await?;
        let truncated = ancillary.is_truncated();
        // Take ownership of every fd first so that all are closed on any
        // error below.
        let mut fds: Vec<OwnedFd> = Vec::new();
        for message in ancillary.into_messages() {
            if let OwnedAncillaryMessage::FileDescriptors(received) = message {
                fds.extend(received);
            }
        }
        if len == 0 {
            // Every ZDS message encodes to at least 2 bytes (hello, acks and
            // requests all set a field), so 0 is EOF, not an empty message.
            return Err(ZdsError::Closed);
        }
        if len > MAX_MESSAGE_SIZE {
            return Err(ZdsError::TooLarge(len));
        }
        if truncated {
            return Err(ZdsError::Protocol(
                "ancillary data truncated (too many fds)".into(),
            ));
        }
        if fds.len() > 1 {
            return Err(ZdsError::Protocol(format!(
                "{} fds with one message; at most 1 expected",
                fds.len()
            )));
        }
        let msg = M::decode(&buf[..len])?;
        Ok((msg, fds.pop()))
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::{AsFd, AsRawFd};
    use std::time::Duration;

    use nix::sys::stat::fstat;
    use tokio::time::timeout;

    use super::*;
    use crate::zds::proto::*;

    const T: Duration = Duration::from_secs(5);

    fn info() -> WorkloadInfo {
        WorkloadInfo {
            name: "client".into(),
            namespace: "default".into(),
            service_account: "sa".into(),
        }
    }

    #[tokio::test]
    async fn round_trip_with_fd() {
        let (agent, ztunnel) = ZdsConnection::pair().unwrap();
        let file = std::fs::File::open("/proc/self/ns/net").unwrap();

        ztunnel
            .send(
                &ZdsHello {
                    version: Version::V1 as i32,
                },
                None,
            )
            .await
            .unwrap();
        let (hello, fd) = timeout(T, agent.recv::<ZdsHello>()).await.unwrap().unwrap();
        assert_eq!(hello.version(), Version::V1);
        assert!(fd.is_none());

        let add = WorkloadRequest::add("default/client", info());
        agent.send(&add, Some(file.as_fd())).await.unwrap();
        let (got, fd) = timeout(T, ztunnel.recv::<WorkloadRequest>())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, add);
        // The same netns object arrived, as a new descriptor.
        let fd = fd.expect("fd");
        assert_ne!(fd.as_raw_fd(), file.as_raw_fd());
        let (a, b) = (fstat(&fd).unwrap(), fstat(&file).unwrap());
        assert_eq!((a.st_dev, a.st_ino), (b.st_dev, b.st_ino));

        ztunnel
            .send(&WorkloadResponse::ack(""), None)
            .await
            .unwrap();
        let (ack, fd) = timeout(T, agent.recv::<WorkloadResponse>())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(ack, WorkloadResponse::ack(""));
        assert!(fd.is_none());
    }

    #[tokio::test]
    async fn eof_is_closed() {
        let (a, b) = ZdsConnection::pair().unwrap();
        drop(b);
        let err = timeout(T, a.recv::<WorkloadResponse>()).await.unwrap();
        assert!(matches!(err, Err(ZdsError::Closed)), "{err:?}");
    }

    #[tokio::test]
    async fn oversized_messages_are_refused() {
        let (a, b) = ZdsConnection::pair().unwrap();
        let big = WorkloadResponse::ack("x".repeat(MAX_MESSAGE_SIZE));
        assert!(matches!(
            a.send(&big, None).await,
            Err(ZdsError::TooLarge(_))
        ));
        // A peer that ignores the limit is refused on receive.
        let bytes = prost::Message::encode_to_vec(&big);
        a.socket.send(&bytes).await.unwrap();
        let err = timeout(T, b.recv::<WorkloadResponse>()).await.unwrap();
        assert!(
            matches!(err, Err(ZdsError::TooLarge(n)) if n > MAX_MESSAGE_SIZE),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn more_than_one_fd_is_refused() {
        let (a, b) = ZdsConnection::pair().unwrap();
        let file = std::fs::File::open("/proc/self/ns/net").unwrap();
        let bytes = prost::Message::encode_to_vec(&WorkloadRequest::del("u"));
        let mut cmsg = CmsgBuffer([0; CMSG_BUFFER]);
        let mut ancillary = AncillaryMessageWriter::new(&mut cmsg.0);
        ancillary.add_fds(&[file.as_fd(), file.as_fd()]).unwrap();
        a.socket
            .send_vectored_with_ancillary(&[IoSlice::new(&bytes)], &mut ancillary)
            .await
            .unwrap();
        let err = timeout(T, b.recv::<WorkloadRequest>()).await.unwrap();
        assert!(matches!(err, Err(ZdsError::Protocol(_))), "{err:?}");
    }

    #[tokio::test]
    async fn garbage_is_a_decode_error() {
        let (a, b) = ZdsConnection::pair().unwrap();
        a.socket.send(&[0xff, 0xff, 0xff]).await.unwrap();
        let err = timeout(T, b.recv::<WorkloadResponse>()).await.unwrap();
        assert!(matches!(err, Err(ZdsError::Decode(_))), "{err:?}");
    }
}
