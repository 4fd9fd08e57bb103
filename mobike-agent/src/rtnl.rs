//! One rtnetlink request at a time on the agent's own NETLINK_ROUTE
//! socket, answered in the caller's task: what sits on a move's path (the
//! route lookups of the mobility manager, the next hop and the replaced
//! route of a tunnel's inner routes).
//!
//! Why not rtnetlink's connection, which the rest of the agent uses: the
//! kernel handles a request inside the `sendmsg` that carries it (waiting
//! for its locks there), so the answer is in the socket when the send
//! returns and is read at once. Over rtnetlink's connection each request
//! went through that connection's own task and back: two task wake-ups,
//! often across the runtime's worker threads, which right after a link
//! goes down (the kernel's teardown, trigger-db and the agent's
//! subscription woken by the same events, all on the same CPUs) cost
//! milliseconds each, between the link's loss and the tunnel's first
//! packet on the new path.
//!
//! What it does not do: dumps (NLM_F_DUMP answers span many datagrams;
//! they stay on rtnetlink's connection, at start and exit), or multicast.
//! The socket is non-blocking; an answer not there after the send is
//! waited for, up to the caller's timeout.

use std::{io, time::Duration};

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_REQUEST, NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{Socket, protocols::NETLINK_ROUTE};
use tokio::io::unix::AsyncFd;

/// The largest answer read: one route, address or link message with its
/// attributes and, for an error, the request echoed back.
const RECV_BUF: usize = 16 * 1024;

/// What went wrong with one request.
#[derive(Debug, thiserror::Error)]
pub enum RtnlError {
    /// The socket could not be opened or registered.
    #[error("cannot open an rtnetlink socket")]
    Open(#[source] io::Error),
    /// The request could not be sent.
    #[error("cannot send the rtnetlink request")]
    Send(#[source] io::Error),
    /// The socket could not be read.
    #[error("cannot read the rtnetlink answer")]
    Recv(#[source] io::Error),
    /// No answer within the caller's timeout.
    #[error("no rtnetlink answer within {0:?}")]
    Timeout(Duration),
    /// The answer was larger than the receive buffer (MSG_TRUNC).
    #[error("the rtnetlink answer of {len} bytes was cut to {cap}")]
    Truncated {
        /// The datagram's length.
        len: usize,
        /// The buffer's.
        cap: usize,
    },
    /// The answer does not decode.
    #[error("the rtnetlink answer does not decode: {0}")]
    Decode(String),
    /// The kernel refused the request (NLMSG_ERROR with this errno).
    #[error("the kernel refused the request")]
    Kernel(#[source] io::Error),
    /// An answer of another kind than a message, an ACK or an error.
    #[error("unexpected rtnetlink answer: {0}")]
    Unexpected(String),
}

impl RtnlError {
    /// The errno of a kernel refusal.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Self::Kernel(e) => e.raw_os_error(),
            _ => None,
        }
    }
}

/// The kernel's answer to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A message (the route of an RTM_GETROUTE, say).
    Message(RouteNetlinkMessage),
    /// NLMSG_ERROR with code 0: done.
    Ack,
}

/// An rtnetlink socket in the network namespace of the thread that made
/// it, for one request at a time.
#[derive(Debug)]
pub struct RtnlSocket {
    sock: AsyncFd<Socket>,
    seq: u32,
    buf: Vec<u8>,
}

impl RtnlSocket {
    /// Opens the socket (non-blocking, registered with the current tokio
    /// runtime).
    pub fn new() -> Result<Self, RtnlError> {
        let mut sock = Socket::new(NETLINK_ROUTE).map_err(RtnlError::Open)?;
        sock.bind_auto().map_err(RtnlError::Open)?;
        sock.set_non_blocking(true).map_err(RtnlError::Open)?;
        // SAFETY: `Socket` owns its fd: it stays open, and `as_raw_fd`
        // keeps returning it, until the socket (owned by the AsyncFd) is
        // dropped.
        let sock =
            unsafe { AsyncFd::register(sock) }.map_err(|e| RtnlError::Open(e.into_parts().1))?;
        Ok(Self {
            sock,
            seq: 0,
            buf: Vec::with_capacity(RECV_BUF),
        })
    }

    /// Sends `msg` (NLM_F_REQUEST is added to `flags`; with NLM_F_ACK the
    /// kernel acknowledges a change) and returns the kernel's answer to it,
    /// matched by sequence number and sender. Not for dumps.
    pub async fn request(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
        timeout: Duration,
    ) -> Result<Answer, RtnlError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut header = NetlinkHeader::default();
        header.flags = flags | NLM_F_REQUEST;
        header.sequence_number = seq;
        let mut m = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        m.finalize();
        let mut bytes = vec![0; m.buffer_len()];
        m.serialize(&mut bytes);
        self.send(&bytes).await.map_err(RtnlError::Send)?;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let (len, truncated) = self
                .recv(deadline)
                .await
                .map_err(RtnlError::Recv)?
                .ok_or(RtnlError::Timeout(timeout))?;
            let data = self.buf.get(..len.min(self.buf.len())).unwrap_or_default();
            if truncated {
                // The first header tells whose answer it was: ours is an
                // error now, anyone else's (a late answer) is skipped.
                if seq_of(data) == Some(seq) {
                    return Err(RtnlError::Truncated {
                        len,
                        cap: self.buf.capacity(),
                    });
                }
                continue;
            }
            if let Some(answer) = answer_in(data, seq) {
                return answer;
            }
        }
    }

    /// A change acknowledged by the kernel: `msg` with NLM_F_ACK and
    /// `flags` (NLM_F_CREATE, NLM_F_REPLACE, ...).
    pub async fn change(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
        timeout: Duration,
    ) -> Result<(), RtnlError> {
        match self.request(msg, flags | NLM_F_ACK, timeout).await? {
            Answer::Ack => Ok(()),
            Answer::Message(m) => Err(RtnlError::Unexpected(format!("{m:?}"))),
        }
    }

    /// Sends one request; the socket is writable unless the kernel is out
    /// of memory, then it is waited for.
    async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        loop {
            match self.sock.get_ref().send(bytes, 0) {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.sock.writable().await?.clear_ready();
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads one datagram from the kernel into `self.buf`: at once when
    /// it is there (the usual case: answered within the send), else when
    /// the socket becomes readable; `None` past `deadline`. The length is
    /// the datagram's (MSG_TRUNC), with whether it was cut.
    async fn recv(&mut self, deadline: tokio::time::Instant) -> io::Result<Option<(usize, bool)>> {
        loop {
            self.buf.clear();
            let cap = self.buf.capacity();
            match self
                .sock
                .get_ref()
                .recv_from(&mut self.buf, libc::MSG_TRUNC)
            {
                // Only the kernel (port 0) answers.
                Ok((_, from)) if from.port_number() != 0 => {}
                Ok((len, _)) => return Ok(Some((len, len > cap))),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    match tokio::time::timeout_at(deadline, self.sock.readable()).await {
                        Err(_elapsed) => return Ok(None),
                        Ok(guard) => guard?.clear_ready(),
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// The sequence number in the first header of `data`, if it holds one.
fn seq_of(data: &[u8]) -> Option<u32> {
    let s = data.get(8..12)?;
    Some(u32::from_ne_bytes([s[0], s[1], s[2], s[3]]))
}

/// The answer in datagram `data` to request `seq`, if it holds one.
pub(crate) fn answer_in(data: &[u8], seq: u32) -> Option<Result<Answer, RtnlError>> {
    let mut offset = 0;
    while let Some(rest) = data.get(offset..).filter(|r| !r.is_empty()) {
        let Ok(nl) = NetlinkBuffer::new_checked(rest) else {
            // A broken header: nothing after it can be found either.
            return None;
        };
        let len = nl.length() as usize;
        if nl.sequence_number() == seq {
            let message = rest.get(..len).unwrap_or(rest);
            return Some(
                match NetlinkMessage::<RouteNetlinkMessage>::deserialize(message) {
                    Ok(m) => match m.payload {
                        NetlinkPayload::InnerMessage(inner) => Ok(Answer::Message(inner)),
                        NetlinkPayload::Error(e) => match e.code {
                            None => Ok(Answer::Ack),
                            Some(code) => Err(RtnlError::Kernel(io::Error::from_raw_os_error(
                                code.get().abs(),
                            ))),
                        },
                        other => Err(RtnlError::Unexpected(format!("{other:?}"))),
                    },
                    Err(e) => Err(RtnlError::Decode(e.to_string())),
                },
            );
        }
        // new_checked guarantees 16 <= len <= rest.len(): this advances.
        offset = offset.saturating_add(len.saturating_add(3) & !3);
    }
    None
}

#[cfg(test)]
pub(crate) mod tests {
    use netlink_packet_route::route::{RouteAttribute, RouteMessage};

    use super::*;

    /// The bytes of a datagram holding `messages` (sequence number and
    /// payload), as the kernel would send them.
    pub(crate) fn datagram(messages: Vec<(u32, NetlinkPayload<RouteNetlinkMessage>)>) -> Vec<u8> {
        let mut out = Vec::new();
        for (seq, payload) in messages {
            let mut header = NetlinkHeader::default();
            header.sequence_number = seq;
            let mut m = NetlinkMessage::new(header, payload);
            m.finalize();
            let mut bytes = vec![0; m.buffer_len()];
            m.serialize(&mut bytes);
            out.extend(bytes);
            out.resize(out.len().next_multiple_of(4), 0);
        }
        out
    }

    /// NLMSG_ERROR with `errno` (0: an ACK).
    pub(crate) fn error(errno: i32) -> NetlinkPayload<RouteNetlinkMessage> {
        let mut e = netlink_packet_core::ErrorMessage::default();
        e.code = std::num::NonZeroI32::new(-errno);
        NetlinkPayload::Error(e)
    }

    #[test]
    fn the_answer_is_the_message_with_the_requests_sequence_number() {
        let mut r = RouteMessage::default();
        r.attributes.push(RouteAttribute::Oif(4));
        let route = RouteNetlinkMessage::NewRoute(r);
        // A late answer to an earlier request first, then ours.
        let d = datagram(vec![
            (6, error(libc::ENETUNREACH)),
            (7, NetlinkPayload::InnerMessage(route.clone())),
            (8, error(0)),
        ]);
        assert!(matches!(answer_in(&d, 7), Some(Ok(Answer::Message(m))) if m == route));
        let e = answer_in(&d, 6).unwrap().unwrap_err();
        assert_eq!(e.errno(), Some(libc::ENETUNREACH));
        assert!(matches!(answer_in(&d, 8), Some(Ok(Answer::Ack))));
        assert!(answer_in(&d, 9).is_none());
    }

    #[test]
    fn broken_bytes_are_no_answer_and_no_panic() {
        assert!(answer_in(&[], 1).is_none());
        assert!(answer_in(&[1, 2, 3], 1).is_none());
        let mut cut = datagram(vec![(9, error(libc::EHOSTUNREACH))]);
        cut.truncate(18);
        assert!(answer_in(&cut, 9).is_none());
        // A whole header whose body does not decode is an error, not a hang.
        let mut bad = datagram(vec![(5, error(libc::EPERM))]);
        bad.truncate(16);
        bad[0..4].copy_from_slice(&16u32.to_ne_bytes());
        assert!(answer_in(&bad, 5).is_some_and(|a| a.is_err()));
    }

    #[test]
    fn the_sequence_number_of_a_cut_datagram_is_read_from_its_header() {
        let d = datagram(vec![(42, error(0))]);
        assert_eq!(seq_of(&d), Some(42));
        assert_eq!(seq_of(&d[..10]), None);
    }
}
