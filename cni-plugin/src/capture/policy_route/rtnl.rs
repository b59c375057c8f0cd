//! A synchronous NETLINK_ROUTE socket: batches of acknowledged requests and
//! rule dumps. The wire format is netlink-packet-route's; this module only
//! numbers messages, sends them and matches the kernel's answers.

use std::io;
use std::time::Duration;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST, NetlinkBuffer, NetlinkHeader,
    NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::rule::RuleMessage;
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
use nix::sys::socket::{setsockopt, sockopt::ReceiveTimeout};
use nix::sys::time::TimeVal;

/// The kernel answers rtnetlink requests while handling our `send`, so the
/// answers are queued before we read; the timeout only guards against a
/// kernel that never answers.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// `struct nlmsghdr`.
const NETLINK_HEADER_LEN: usize = 16;
/// Larger than any datagram the kernel sends (dump parts are at most 32 KiB).
const RECV_BUFFER: usize = 64 * 1024;
/// A dump interrupted by a concurrent change is retried this many times.
const DUMP_ATTEMPTS: usize = 3;

/// A NETLINK_ROUTE socket in the namespace of the thread that opened it.
#[derive(Debug)]
pub(super) struct Rtnl {
    socket: Socket,
    next_seq: u32,
    buf: Vec<u8>,
}

impl Rtnl {
    pub(super) fn open() -> io::Result<Self> {
        let socket = Socket::new(NETLINK_ROUTE)?;
        setsockopt(
            &socket,
            ReceiveTimeout,
            &TimeVal::new(ANSWER_TIMEOUT.as_secs() as libc::time_t, 0),
        )?;
        Ok(Self {
            socket,
            next_seq: 1,
            buf: Vec::with_capacity(RECV_BUFFER),
        })
    }

    /// Sends every request (with `NLM_F_ACK` added to its flags) in one
    /// datagram and returns the kernel's answer to each, in order. The
    /// kernel handles them one after the other, a failed one not stopping
    /// the rest (like `ip -force -batch`).
    pub(super) fn batch(
        &mut self,
        requests: impl IntoIterator<Item = (RouteNetlinkMessage, u16)>,
    ) -> io::Result<Vec<io::Result<()>>> {
        let first = self.next_seq;
        let mut datagram = Vec::new();
        for (message, flags) in requests {
            let seq = self.seq();
            append(
                &mut datagram,
                message,
                NLM_F_REQUEST | NLM_F_ACK | flags,
                seq,
            );
        }
        let count = self.next_seq.wrapping_sub(first) as usize;
        self.send(&datagram)?;
        let mut answers: Vec<Option<io::Result<()>>> = (0..count).map(|_| None).collect();
        let mut missing = count;
        while missing > 0 {
            self.recv()?;
            for message in Messages::new(&self.buf) {
                let NetlinkPayload::Error(error) = message?.payload else {
                    continue;
                };
                // The answer's header is the one it answers (from byte 0).
                let Some(seq) = answered_seq(&error.header) else {
                    continue;
                };
                let index = seq.wrapping_sub(first) as usize;
                if let Some(slot @ None) = answers.get_mut(index) {
                    *slot = Some(match error.code {
                        None => Ok(()),
                        Some(_) => Err(error.to_io()),
                    });
                    missing -= 1;
                }
            }
        }
        Ok(answers.into_iter().flatten().collect())
    }

    /// All rules of `family` (`RTM_GETRULE` dump). A dump the kernel marks
    /// as interrupted (rules changed meanwhile) is taken again.
    pub(super) fn dump_rules(
        &mut self,
        family: netlink_packet_route::AddressFamily,
    ) -> io::Result<Vec<RuleMessage>> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (rules, interrupted) = self.dump_rules_once(family)?;
            if !interrupted || attempt >= DUMP_ATTEMPTS {
                return Ok(rules);
            }
        }
    }

    fn dump_rules_once(
        &mut self,
        family: netlink_packet_route::AddressFamily,
    ) -> io::Result<(Vec<RuleMessage>, bool)> {
        let mut request = RuleMessage::default();
        request.header.family = family;
        let seq = self.seq();
        let mut datagram = Vec::new();
        append(
            &mut datagram,
            RouteNetlinkMessage::GetRule(request),
            NLM_F_REQUEST | NLM_F_DUMP,
            seq,
        );
        self.send(&datagram)?;
        let mut rules = Vec::new();
        let mut interrupted = false;
        loop {
            self.recv()?;
            for message in Messages::new(&self.buf) {
                let message = message?;
                if message.header.sequence_number != seq {
                    continue;
                }
                interrupted |= message.header.flags & NLM_F_DUMP_INTR != 0;
                match message.payload {
                    NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRule(rule)) => {
                        rules.push(rule);
                    }
                    NetlinkPayload::Done(_) => return Ok((rules, interrupted)),
                    NetlinkPayload::Error(error) if error.code.is_some() => {
                        return Err(error.to_io());
                    }
                    _ => {}
                }
            }
        }
    }

    fn seq(&mut self) -> u32 {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        seq
    }

    fn send(&self, datagram: &[u8]) -> io::Result<()> {
        let kernel = SocketAddr::new(0, 0);
        let sent = self.socket.send_to(datagram, &kernel, 0)?;
        if sent != datagram.len() {
            return Err(io::Error::other(format!(
                "netlink send: {sent} of {} bytes sent",
                datagram.len()
            )));
        }
        Ok(())
    }

    /// Reads one datagram into `self.buf`.
    fn recv(&mut self) -> io::Result<()> {
        loop {
            self.buf.clear();
            match self.socket.recv(&mut self.buf, 0) {
                Ok(_) => return Ok(()),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no answer from the kernel in {ANSWER_TIMEOUT:?}"),
                    ));
                }
                Err(err) => return Err(err),
            }
        }
    }
}

/// Appends `message` with its netlink header to `datagram`.
fn append(datagram: &mut Vec<u8>, message: RouteNetlinkMessage, flags: u16, seq: u32) {
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    header.sequence_number = seq;
    let mut message = NetlinkMessage::new(header, NetlinkPayload::from(message));
    message.finalize();
    let start = datagram.len();
    // Messages in a datagram start 4-byte aligned.
    datagram.resize(start + align(message.buffer_len()), 0);
    message.serialize(&mut datagram[start..]);
}

fn align(len: usize) -> usize {
    len.div_ceil(4) * 4
}

/// The sequence number in the copy of the request an answer carries (of an
/// acknowledged request, the kernel copies the header alone, its length
/// field still the request's: read the header without checking it).
fn answered_seq(request: &[u8]) -> Option<u32> {
    let header = request.get(..NETLINK_HEADER_LEN)?;
    Some(NetlinkBuffer::new(header).sequence_number())
}

/// The messages of one datagram.
struct Messages<'a> {
    rest: &'a [u8],
}

impl<'a> Messages<'a> {
    fn new(datagram: &'a [u8]) -> Self {
        Self { rest: datagram }
    }
}

impl Iterator for Messages<'_> {
    type Item = io::Result<NetlinkMessage<RouteNetlinkMessage>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let parsed = NetlinkBuffer::new_checked(self.rest)
            .map(|buffer| buffer.length() as usize)
            .and_then(|len| {
                let message = NetlinkMessage::deserialize(&self.rest[..len])?;
                Ok((len, message))
            });
        match parsed {
            Ok((len, message)) => {
                self.rest = self.rest.get(align(len)..).unwrap_or_default();
                Some(Ok(message))
            }
            Err(err) => {
                self.rest = &[];
                Some(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("undecodable netlink answer: {err}"),
                )))
            }
        }
    }
}
