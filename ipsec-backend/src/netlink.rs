//! Netlink framing (`nlmsghdr`, `NLMSG_ERROR` with extended ack, `NLMSG_DONE`)
//! and an async NETLINK_XFRM socket built on `netlink-sys` + tokio's
//! `AsyncFd`.
//!
//! The socket does request/ACK and request/dump exchanges one at a time and
//! can join multicast groups for the monitor. It knows nothing about SAs or
//! policies (see [`crate::handle`]).
//!
//! `netlink-proto` is not used: its connection actor is generic over a
//! `NetlinkDeserializable` message type and multiplexes by sequence number,
//! which buys nothing for one request at a time and would force our codec
//! through netlink-packet-core's traits. A raw `netlink_sys::Socket` in an
//! `AsyncFd` is ~100 lines and gives us NETLINK_EXT_ACK / NETLINK_CAP_ACK and
//! ENOBUFS handling directly.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU32, Ordering};

use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_XFRM};
use tokio::io::unix::AsyncFd;

use crate::codec::{DecodeError, XfrmMessage, align4};
pub use crate::codec::{
    NLM_F_ACK, NLM_F_ACK_TLVS, NLM_F_CAPPED, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_MULTI,
    NLM_F_REPLACE, NLM_F_REQUEST,
};
use crate::error::{KernelError, NetlinkError};

const NLMSG_NOOP: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_OVERRUN: u16 = 4;
/// XFRM_MSG_BASE: XFRM message types start here, below are netlink's own.
const XFRM_MSG_BASE: u16 = 0x10;
const NLMSGERR_ATTR_MSG: u16 = 1;
const SOL_NETLINK: libc::c_int = 270;
const NETLINK_CAP_ACK: libc::c_int = 10;
const NETLINK_EXT_ACK: libc::c_int = 11;

/// `struct nlmsghdr`.
#[allow(missing_docs)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NlHeader {
    pub len: u32,
    pub ty: u16,
    pub flags: u16,
    pub seq: u32,
    pub pid: u32,
}

/// The body of one netlink message on NETLINK_XFRM.
// The XFRM variant is by far the most common; boxing it would cost an
// allocation per message for no gain.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NlBody {
    /// An XFRM message.
    Xfrm(XfrmMessage),
    /// `NLMSG_ERROR`: errno 0 is an ACK. `rest` is the echoed request and
    /// any ext-ack attributes, raw.
    Error {
        /// Negative errno as the kernel sends it (0 = ACK).
        error: i32,
        /// Everything after the error code.
        rest: Vec<u8>,
    },
    /// `NLMSG_DONE`, `NLMSG_NOOP`, `NLMSG_OVERRUN`, with their raw payload.
    Control(u16, Vec<u8>),
}

/// One netlink message: header plus body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NlMessage {
    /// The header as received (its `len` is recomputed on emit).
    pub header: NlHeader,
    /// The body.
    pub body: NlBody,
}

impl NlMessage {
    /// Parse every message in one datagram.
    pub fn parse_all(buf: &[u8]) -> Result<Vec<NlMessage>, DecodeError> {
        let mut out = Vec::new();
        let mut off = 0usize;
        while off < buf.len() {
            let (m, used) = Self::parse_one(&buf[off..])?;
            out.push(m);
            off += used;
        }
        Ok(out)
    }

    /// Parse every message in one datagram, one result each: a message
    /// whose body does not decode is an [`Undecodable`] (with its header,
    /// so the caller can say which message it was) and the ones after it
    /// still come; only broken framing (a header or length that does not
    /// fit) ends the datagram, with that error last.
    pub fn parse_each(buf: &[u8]) -> Vec<Result<NlMessage, Undecodable>> {
        let mut out = Vec::new();
        let mut off = 0usize;
        while off < buf.len() {
            let rest = &buf[off..];
            match Self::parse_one(rest) {
                Ok((m, used)) => {
                    out.push(Ok(m));
                    off += used;
                }
                Err(error) => {
                    let header = Self::frame(rest);
                    out.push(Err(Undecodable { header, error }));
                    match header {
                        // The frame is sound, only the body is not: skip it.
                        Some(h) => off += align4(h.len as usize).min(rest.len()),
                        None => break,
                    }
                }
            }
        }
        out
    }

    /// The header of the first message of `buf` if its length fits.
    fn frame(buf: &[u8]) -> Option<NlHeader> {
        let b = buf.get(..16)?;
        let u32_at = |o: usize| u32::from_ne_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let h = NlHeader {
            len: u32_at(0),
            ty: u16::from_ne_bytes([b[4], b[5]]),
            flags: u16::from_ne_bytes([b[6], b[7]]),
            seq: u32_at(8),
            pid: u32_at(12),
        };
        (16..=buf.len()).contains(&(h.len as usize)).then_some(h)
    }

    /// Parse the first message of `buf`; returns it and the aligned length
    /// consumed.
    pub fn parse_one(buf: &[u8]) -> Result<(NlMessage, usize), DecodeError> {
        if buf.len() < 16 {
            return Err(DecodeError::Truncated {
                what: "nlmsghdr",
                need: 16,
                have: buf.len(),
            });
        }
        let u32_at = |o: usize| u32::from_ne_bytes([buf[o], buf[o + 1], buf[o + 2], buf[o + 3]]);
        let u16_at = |o: usize| u16::from_ne_bytes([buf[o], buf[o + 1]]);
        let header = NlHeader {
            len: u32_at(0),
            ty: u16_at(4),
            flags: u16_at(6),
            seq: u32_at(8),
            pid: u32_at(12),
        };
        let len = header.len as usize;
        if len < 16 || len > buf.len() {
            return Err(DecodeError::BadLength {
                what: "nlmsghdr.nlmsg_len",
                len,
            });
        }
        let p = &buf[16..len];
        let body = match header.ty {
            NLMSG_ERROR => {
                if p.len() < 4 {
                    return Err(DecodeError::Truncated {
                        what: "nlmsgerr",
                        need: 4,
                        have: p.len(),
                    });
                }
                NlBody::Error {
                    error: i32::from_ne_bytes([p[0], p[1], p[2], p[3]]),
                    rest: p[4..].to_vec(),
                }
            }
            NLMSG_DONE | NLMSG_NOOP | NLMSG_OVERRUN => NlBody::Control(header.ty, p.to_vec()),
            ty => NlBody::Xfrm(XfrmMessage::parse(ty, header.flags, p)?),
        };
        Ok((NlMessage { header, body }, align4(len).min(buf.len())))
    }

    /// Emit header + body; `nlmsg_len` is computed.
    pub fn emit(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(256);
        b.extend_from_slice(&[0u8; 4]);
        let ty = match &self.body {
            NlBody::Xfrm(m) => m.message_type(),
            NlBody::Error { .. } => NLMSG_ERROR,
            NlBody::Control(t, _) => *t,
        };
        b.extend_from_slice(&ty.to_ne_bytes());
        b.extend_from_slice(&self.header.flags.to_ne_bytes());
        b.extend_from_slice(&self.header.seq.to_ne_bytes());
        b.extend_from_slice(&self.header.pid.to_ne_bytes());
        match &self.body {
            NlBody::Xfrm(m) => m.emit(&mut b),
            NlBody::Error { error, rest } => {
                b.extend_from_slice(&error.to_ne_bytes());
                b.extend_from_slice(rest);
            }
            NlBody::Control(_, p) => b.extend_from_slice(p),
        }
        let len = u32::try_from(b.len()).unwrap_or(u32::MAX);
        b[..4].copy_from_slice(&len.to_ne_bytes());
        b
    }
}

/// Decode the kernel error of an `NLMSG_ERROR` body (errno != 0), with the
/// extended-ack message if the kernel attached one.
pub fn kernel_error(flags: u16, error: i32, rest: &[u8]) -> KernelError {
    let mut ext_ack = None;
    if flags & NLM_F_ACK_TLVS != 0 && rest.len() >= 16 {
        let echoed_len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let skip = if flags & NLM_F_CAPPED != 0 {
            16
        } else {
            align4(echoed_len)
        };
        let mut off = skip;
        while off + 4 <= rest.len() {
            let alen = u16::from_ne_bytes([rest[off], rest[off + 1]]) as usize;
            let aty = u16::from_ne_bytes([rest[off + 2], rest[off + 3]]);
            if alen < 4 || off + alen > rest.len() {
                break;
            }
            if aty == NLMSGERR_ATTR_MSG {
                let s = &rest[off + 4..off + alen];
                let end = s.iter().position(|c| *c == 0).unwrap_or(s.len());
                ext_ack = Some(String::from_utf8_lossy(&s[..end]).into_owned());
            }
            off += align4(alen);
        }
    }
    KernelError {
        errno: error.checked_neg().unwrap_or(i32::MAX),
        ext_ack,
    }
}

/// A netlink message of a datagram that did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("undecodable netlink message{}", .header.map(|h| format!(" (type {}, seq {}, port {})", h.ty, h.seq, h.pid)).unwrap_or_default())]
pub struct Undecodable {
    /// Its header, if the framing held (then it was skipped and the
    /// messages after it were read).
    pub header: Option<NlHeader>,
    /// What was wrong.
    #[source]
    pub error: DecodeError,
}

/// An async NETLINK_XFRM socket.
#[derive(Debug)]
pub struct XfrmSocket {
    fd: AsyncFd<Socket>,
    seq: AtomicU32,
    /// Our netlink port id: the kernel's replies to our requests carry it.
    port: u32,
    buf: Vec<u8>,
}

const RECV_BUF: usize = 1 << 20;

impl XfrmSocket {
    /// Open a socket in the calling thread's network namespace, subscribed
    /// to `groups` (XFRMNLGRP_* numbers; empty for request sockets).
    pub fn open(groups: &[u32]) -> io::Result<Self> {
        Self::from_socket(Self::raw_socket(groups)?)
    }

    /// Open a socket in the network namespace at `path` (e.g.
    /// `/run/netns/L`); the calling thread's namespace is not changed.
    pub fn open_in(path: &std::path::Path, groups: &[u32]) -> io::Result<Self> {
        let s = std::thread::scope(|sc| {
            sc.spawn(|| {
                crate::netns::enter_netns(path)?;
                Self::raw_socket(groups)
            })
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("netns thread panicked")))
        })?;
        Self::from_socket(s)
    }

    fn from_socket(s: Socket) -> io::Result<Self> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(io::Error::other("XFRM sockets need a tokio runtime"));
        }
        let mut addr = SocketAddr::new(0, 0);
        s.get_address(&mut addr)?;
        let port = addr.port_number();
        // SAFETY: `Socket` owns its fd, keeps it open until dropped and
        // always returns the same fd from `as_raw_fd`.
        let fd = unsafe { AsyncFd::register(s) }?;
        Ok(Self {
            fd,
            seq: AtomicU32::new(1),
            port,
            buf: vec![0u8; RECV_BUF],
        })
    }

    fn raw_socket(groups: &[u32]) -> io::Result<Socket> {
        let mut s = Socket::new(NETLINK_XFRM)?;
        s.bind(&SocketAddr::new(0, 0))?;
        for g in groups {
            s.add_membership(*g)?;
        }
        let one: libc::c_int = 1;
        for opt in [NETLINK_EXT_ACK, NETLINK_CAP_ACK] {
            // SAFETY: setsockopt with a valid fd and a pointer to a c_int
            // that outlives the call; failure is non-fatal (old kernels).
            unsafe {
                libc::setsockopt(
                    s.as_raw_fd(),
                    SOL_NETLINK,
                    opt,
                    (&raw const one).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                );
            }
        }
        if !groups.is_empty() {
            let _ = s.set_rx_buf_sz(4 << 20);
        }
        s.set_non_blocking(true)?;
        Ok(s)
    }

    fn next_seq(&self) -> u32 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    async fn send(&self, bytes: &[u8]) -> io::Result<()> {
        loop {
            let mut g = self.fd.writable().await?;
            match g.try_io(|s| s.get_ref().send(bytes, 0)) {
                Ok(r) => return r.map(|_| ()),
                Err(_would_block) => continue,
            }
        }
    }

    /// Our netlink port id (the kernel's replies to us carry it).
    pub fn port(&self) -> u32 {
        self.port
    }

    /// Receive one datagram and parse the messages in it, each on its own
    /// ([`NlMessage::parse_each`]).
    pub async fn recv(&mut self) -> Result<Vec<Result<NlMessage, Undecodable>>, NetlinkError> {
        let n = loop {
            let mut g = self.fd.readable().await?;
            let buf = &mut self.buf;
            match g.try_io(|s| {
                // SAFETY: recv into our own buffer of RECV_BUF bytes.
                let n = unsafe {
                    libc::recv(
                        s.get_ref().as_raw_fd(),
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                        0,
                    )
                };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            }) {
                Ok(r) => break r?,
                Err(_would_block) => continue,
            }
        };
        Ok(NlMessage::parse_each(&self.buf[..n]))
    }

    /// Send `msg` with `flags` (REQUEST and ACK are added) and collect the
    /// reply: for a dump, every message up to NLMSG_DONE; otherwise the
    /// messages before the final ACK (e.g. the SA of a GETSA).
    pub async fn request(
        &mut self,
        msg: XfrmMessage,
        flags: u16,
    ) -> Result<Vec<XfrmMessage>, NetlinkError> {
        let mut out = Vec::new();
        self.request_with(msg, flags, |m| out.push(m)).await?;
        Ok(out)
    }

    /// Like [`Self::request`] but hands each reply message to `f` as it
    /// arrives (dumps of many SAs need not be held twice in memory).
    pub async fn request_with(
        &mut self,
        msg: XfrmMessage,
        flags: u16,
        mut f: impl FnMut(XfrmMessage),
    ) -> Result<(), NetlinkError> {
        let seq = self.next_seq();
        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let flags = flags | NLM_F_REQUEST | if dump { 0 } else { NLM_F_ACK };
        let m = NlMessage {
            header: NlHeader {
                len: 0,
                ty: 0,
                flags,
                seq,
                pid: 0,
            },
            body: NlBody::Xfrm(msg),
        };
        self.send(&m.emit()).await?;
        let port = self.port;
        let ours = |h: &NlHeader| h.seq == seq && h.pid == port;
        loop {
            for reply in self.recv().await? {
                let reply = match reply {
                    Ok(r) => r,
                    // An entry of our dump that did not decode is skipped,
                    // said so, and the rest of the dump kept.
                    Err(u)
                        if dump && u.header.is_some_and(|h| ours(&h) && h.ty >= XFRM_MSG_BASE) =>
                    {
                        tracing::warn!(error = %errchain::chain(&u), "XFRM dump entry skipped");
                        continue;
                    }
                    // Any other reply of ours that did not decode (the
                    // answer itself, an error, the end of a dump) fails the
                    // request; anything else undecodable is not ours.
                    Err(u) if u.header.is_none_or(|h| ours(&h)) => {
                        return Err(u.error.into());
                    }
                    Err(_) => continue,
                };
                // A reply to us carries our sequence number and our port id;
                // anything else is a stale reply to an earlier, abandoned
                // request, or not addressed to this socket.
                if !ours(&reply.header) {
                    continue;
                }
                match reply.body {
                    NlBody::Error { error: 0, .. } => return Ok(()),
                    NlBody::Error { error, rest } => {
                        return Err(kernel_error(reply.header.flags, error, &rest).into());
                    }
                    NlBody::Control(NLMSG_DONE, p) => {
                        // A dump may end with an error code in DONE.
                        if p.len() >= 4 {
                            let e = i32::from_ne_bytes([p[0], p[1], p[2], p[3]]);
                            if e < 0 {
                                return Err(kernel_error(reply.header.flags, e, &p[4..]).into());
                            }
                        }
                        return Ok(());
                    }
                    NlBody::Control(..) => {}
                    NlBody::Xfrm(x) => {
                        f(x);
                        if !dump && reply.header.flags & NLM_F_MULTI == 0 {
                            // GET replies come without a trailing ACK when
                            // the reply itself answers the request.
                            return Ok(());
                        }
                    }
                }
            }
        }
    }
}
