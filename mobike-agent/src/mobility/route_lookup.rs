//! Route lookups for the policy: how the kernel would route from a local
//! address to a peer address, asked over rtnetlink, and a cache of the
//! answers that the sans-IO policy reads as its [`RouteView`].
//!
//! [`RouteLookup`] sends one RTM_GETROUTE per pair with the destination
//! and the source set (what `ip route get REMOTE from LOCAL` sends: a
//! single request, not a dump), so the kernel's source-based rules apply.
//! Answers: a unicast (or local) route is [`RouteAnswer::Via`] its output
//! interface; the errors the kernel gives for routes that drop the packet
//! are [`RouteAnswer::NoRoute`]; anything else is [`RouteAnswer::Unknown`],
//! logged at debug level.
//!
//! Why its own NETLINK_ROUTE socket and not rtnetlink's connection: these
//! lookups sit between a link going down and the update that moves the IKE
//! SA. The kernel answers an RTM_GETROUTE inside the `sendmsg` that carries
//! it, so the answer is read right after the send, in the caller's task;
//! over rtnetlink's connection each lookup went through that connection's
//! own task and back (two task wake-ups, often across the runtime's worker
//! threads), which on a busy host (the link's teardown, trigger-db's
//! delivery of the same events) put milliseconds before the decision. The
//! socket is non-blocking; an answer not there yet is waited for, at most
//! [`LOOKUP_TIMEOUT`].
//!
//! [`RouteCache`] holds the answers for the pairs the manager cares about;
//! the runtime refreshes it (after link, address and route events) before
//! the manager evaluates.

use std::{
    collections::HashMap,
    io,
    net::IpAddr,
    time::{Duration, Instant},
};

use netlink_packet_core::{
    NLM_F_REQUEST, NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::{
    RouteNetlinkMessage,
    route::{RouteAttribute, RouteMessage, RouteProtocol, RouteType},
};
use netlink_sys::{Socket, protocols::NETLINK_ROUTE};
use rtnetlink::RouteMessageBuilder;
use tokio::io::unix::AsyncFd;
use tracing::debug;

use super::policy::{RouteAnswer, RouteView};

/// Kernel errors of a route lookup that mean "no usable route".
const NO_ROUTE_ERRNOS: &[(i32, &str)] = &[
    // No route at all.
    (libc::ENETUNREACH, "no route"),
    // An `unreachable` route.
    (libc::EHOSTUNREACH, "unreachable route"),
    // A `prohibit` route.
    (libc::EACCES, "prohibit route"),
    // A `blackhole` route; also a source address that is not this host's
    // (IPv4 output lookups check it): the pair is unusable either way.
    (libc::EINVAL, "blackhole route or source not local"),
];

/// How long one lookup's answer is waited for (the kernel answers within
/// the send; this bounds a kernel that does not).
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(1);

/// The largest answer read: one route message with its attributes.
const RECV_BUF: usize = 8192;

/// Why the lookup socket could not be made.
#[derive(Debug, thiserror::Error)]
#[error("cannot open an rtnetlink socket for route lookups")]
pub struct RouteLookupError(#[source] io::Error);

/// Route lookups on one NETLINK_ROUTE socket (in the network namespace of
/// the thread that made it), one at a time.
#[derive(Debug)]
pub struct RouteLookup {
    sock: AsyncFd<Socket>,
    seq: u32,
    buf: Vec<u8>,
}

impl RouteLookup {
    /// Opens the socket (non-blocking, registered with the current tokio
    /// runtime).
    pub fn new() -> Result<Self, RouteLookupError> {
        let mut sock = Socket::new(NETLINK_ROUTE).map_err(RouteLookupError)?;
        sock.bind_auto().map_err(RouteLookupError)?;
        sock.set_non_blocking(true).map_err(RouteLookupError)?;
        // SAFETY: `Socket` owns its fd: it stays open, and `as_raw_fd`
        // keeps returning it, until the socket (owned by the AsyncFd) is
        // dropped.
        let sock =
            unsafe { AsyncFd::register(sock) }.map_err(|e| RouteLookupError(e.into_parts().1))?;
        Ok(Self {
            sock,
            seq: 0,
            buf: Vec::with_capacity(RECV_BUF),
        })
    }

    /// How the kernel routes from `local` to `remote`: one RTM_GETROUTE.
    pub async fn route(&mut self, local: IpAddr, remote: IpAddr) -> RouteAnswer {
        if local.is_ipv4() != remote.is_ipv4() {
            return RouteAnswer::NoRoute;
        }
        let request = match request(local, remote) {
            Ok(m) => m,
            Err(e) => {
                debug!(%local, %remote, error = %e, "route lookup not built");
                return RouteAnswer::Unknown;
            }
        };
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        if let Err(e) = self.send(seq, request).await {
            debug!(%local, %remote, error = %e, "route lookup not sent");
            return RouteAnswer::Unknown;
        }
        let deadline = Instant::now() + LOOKUP_TIMEOUT;
        loop {
            let len = match self.recv(deadline).await {
                Ok(Some(len)) => len,
                Ok(None) => {
                    debug!(%local, %remote, timeout = ?LOOKUP_TIMEOUT, "route lookup not answered");
                    return RouteAnswer::Unknown;
                }
                Err(e) => {
                    debug!(%local, %remote, error = %e, "route lookup: cannot read the answer");
                    return RouteAnswer::Unknown;
                }
            };
            let data = self.buf.get(..len).unwrap_or_default();
            // Anything else (a late answer to a lookup that timed out) is
            // skipped.
            if let Some(answer) = reply_to(data, seq, local, remote) {
                return answer;
            }
        }
    }

    /// Sends one request; the socket is writable unless the kernel is out
    /// of memory, then it is waited for.
    async fn send(&mut self, seq: u32, request: RouteMessage) -> io::Result<()> {
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST;
        header.sequence_number = seq;
        let mut msg = NetlinkMessage::new(
            header,
            NetlinkPayload::from(RouteNetlinkMessage::GetRoute(request)),
        );
        msg.finalize();
        let mut bytes = vec![0; msg.buffer_len()];
        msg.serialize(&mut bytes);
        loop {
            match self.sock.get_ref().send(&bytes, 0) {
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
    /// the socket becomes readable; `None` past `deadline`.
    async fn recv(&mut self, deadline: Instant) -> io::Result<Option<usize>> {
        loop {
            self.buf.clear();
            match self.sock.get_ref().recv_from(&mut self.buf, 0) {
                // Only the kernel (port 0) answers lookups.
                Ok((_, from)) if from.port_number() != 0 => {}
                Ok((len, _)) => return Ok(Some(len.min(self.buf.len()))),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let ready =
                        tokio::time::timeout_at(deadline.into(), self.sock.readable()).await;
                    match ready {
                        Err(_elapsed) => return Ok(None),
                        Ok(guard) => guard?.clear_ready(),
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// The answer in datagram `data` to lookup `seq`, if it holds one.
fn reply_to(data: &[u8], seq: u32, local: IpAddr, remote: IpAddr) -> Option<RouteAnswer> {
    let mut offset = 0;
    while let Some(rest) = data.get(offset..).filter(|r| !r.is_empty()) {
        let Ok(nl) = NetlinkBuffer::new_checked(rest) else {
            debug!(%local, %remote, "route lookup: unreadable netlink header in an answer");
            return None;
        };
        let len = nl.length() as usize;
        if nl.sequence_number() == seq {
            let message = rest.get(..len).unwrap_or(rest);
            return Some(
                match NetlinkMessage::<RouteNetlinkMessage>::deserialize(message) {
                    Ok(m) => match m.payload {
                        NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(r)) => {
                            answer_of(&r, local, remote)
                        }
                        NetlinkPayload::Error(e) => error_answer(e.raw_code(), local, remote),
                        other => {
                            debug!(%local, %remote, message = ?other, "route lookup answered with something else");
                            RouteAnswer::Unknown
                        }
                    },
                    Err(e) => {
                        debug!(%local, %remote, error = %e, "route lookup: the answer does not decode");
                        RouteAnswer::Unknown
                    }
                },
            );
        }
        // new_checked guarantees 16 <= len <= rest.len(): this advances.
        offset = offset.saturating_add(len.saturating_add(3) & !3);
    }
    None
}

/// The RTM_GETROUTE request: destination and source as host prefixes,
/// and no table, protocol or type (the kernel picks them).
fn request(local: IpAddr, remote: IpAddr) -> Result<RouteMessage, String> {
    let host = |a: IpAddr| if a.is_ipv4() { 32 } else { 128 };
    let mut m = RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(remote, host(remote))
        .and_then(|b| b.source_prefix(local, host(local)))
        .map_err(|e| e.to_string())?
        .build();
    m.header.table = 0;
    m.header.protocol = RouteProtocol::Unspec;
    m.header.kind = RouteType::Unspec;
    Ok(m)
}

fn answer_of(reply: &RouteMessage, local: IpAddr, remote: IpAddr) -> RouteAnswer {
    let oif = reply.attributes.iter().find_map(|a| match a {
        RouteAttribute::Oif(i) => Some(*i),
        _ => None,
    });
    match (reply.header.kind, oif) {
        (RouteType::Unicast | RouteType::Local, Some(oif)) => RouteAnswer::Via(oif),
        (RouteType::BlackHole | RouteType::Unreachable | RouteType::Prohibit, _) => {
            RouteAnswer::NoRoute
        }
        (kind, oif) => {
            debug!(%local, %remote, ?kind, ?oif, "route lookup answered with a route of no use");
            RouteAnswer::Unknown
        }
    }
}

/// The answer an NLMSG_ERROR gives (`code`: the negative errno).
fn error_answer(code: i32, local: IpAddr, remote: IpAddr) -> RouteAnswer {
    let errno = code.abs();
    match NO_ROUTE_ERRNOS.iter().find(|(n, _)| *n == errno) {
        Some((_, what)) => {
            debug!(%local, %remote, what, "no route");
            RouteAnswer::NoRoute
        }
        None => {
            debug!(%local, %remote, error = %io::Error::from_raw_os_error(errno), "route lookup failed");
            RouteAnswer::Unknown
        }
    }
}

/// The kernel's answers for a set of address pairs, as the policy reads
/// them; a pair not looked up is [`RouteAnswer::Unknown`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteCache {
    answers: HashMap<(IpAddr, IpAddr), RouteAnswer>,
}

impl RouteCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the cache with fresh answers for exactly `pairs` (local,
    /// remote), looked up one after the other (each is answered within its
    /// send).
    pub async fn refresh(
        &mut self,
        lookup: &mut RouteLookup,
        pairs: impl IntoIterator<Item = (IpAddr, IpAddr)>,
    ) {
        let mut pairs: Vec<(IpAddr, IpAddr)> = pairs.into_iter().collect();
        pairs.sort_unstable();
        pairs.dedup();
        let mut answers = HashMap::with_capacity(pairs.len());
        for (l, r) in pairs {
            answers.insert((l, r), lookup.route(l, r).await);
        }
        self.answers = answers;
    }

    /// How many pairs have answers.
    pub fn len(&self) -> usize {
        self.answers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.answers.is_empty()
    }
}

impl RouteView for RouteCache {
    fn route(&self, local: IpAddr, remote: IpAddr) -> RouteAnswer {
        self.answers
            .get(&(local, remote))
            .copied()
            .unwrap_or(RouteAnswer::Unknown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(kind: RouteType, oif: Option<u32>) -> RouteMessage {
        let mut m = RouteMessage::default();
        m.header.kind = kind;
        m.attributes.extend(oif.map(RouteAttribute::Oif));
        m
    }

    fn datagram(messages: Vec<(u32, NetlinkPayload<RouteNetlinkMessage>)>) -> Vec<u8> {
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

    fn error(errno: i32) -> NetlinkPayload<RouteNetlinkMessage> {
        let mut e = netlink_packet_core::ErrorMessage::default();
        e.code = std::num::NonZeroI32::new(-errno);
        NetlinkPayload::Error(e)
    }

    #[test]
    fn the_answer_is_the_message_with_the_lookups_sequence_number() {
        let (l, r) = ("192.0.2.1".parse().unwrap(), "203.0.113.9".parse().unwrap());
        let route = NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(reply(
            RouteType::Unicast,
            Some(4),
        )));
        // A late answer to an earlier lookup first, then ours.
        let d = datagram(vec![(6, error(libc::ENETUNREACH)), (7, route)]);
        assert_eq!(reply_to(&d, 7, l, r), Some(RouteAnswer::Via(4)));
        assert_eq!(reply_to(&d, 6, l, r), Some(RouteAnswer::NoRoute));
        assert_eq!(reply_to(&d, 8, l, r), None);
        // Errors: those that drop the packet are no route, others unknown.
        let d = datagram(vec![(9, error(libc::EHOSTUNREACH))]);
        assert_eq!(reply_to(&d, 9, l, r), Some(RouteAnswer::NoRoute));
        let d = datagram(vec![(9, error(libc::ENOMEM))]);
        assert_eq!(reply_to(&d, 9, l, r), Some(RouteAnswer::Unknown));
        // Broken bytes are no answer (and no panic).
        assert_eq!(reply_to(&[1, 2, 3], 9, l, r), None);
        let mut cut = datagram(vec![(9, error(libc::EHOSTUNREACH))]);
        cut.truncate(18);
        assert_eq!(reply_to(&cut, 9, l, r), None);
    }

    #[test]
    fn replies_are_classified_by_route_type() {
        let (l, r) = (
            "192.0.2.1".parse().unwrap(),
            "198.51.100.7".parse().unwrap(),
        );
        let answer = |kind, oif| answer_of(&reply(kind, oif), l, r);
        assert_eq!(answer(RouteType::Unicast, Some(3)), RouteAnswer::Via(3));
        assert_eq!(answer(RouteType::Local, Some(1)), RouteAnswer::Via(1));
        for kind in [
            RouteType::BlackHole,
            RouteType::Unreachable,
            RouteType::Prohibit,
        ] {
            assert_eq!(answer(kind, None), RouteAnswer::NoRoute, "{kind:?}");
        }
        assert_eq!(answer(RouteType::Unicast, None), RouteAnswer::Unknown);
        assert_eq!(answer(RouteType::Broadcast, Some(3)), RouteAnswer::Unknown);
        assert_eq!(answer(RouteType::Multicast, Some(3)), RouteAnswer::Unknown);
    }

    #[test]
    fn requests_name_destination_and_source_as_host_prefixes() {
        let m = request(
            "2001:db8::1".parse().unwrap(),
            "2001:db8:9::9".parse().unwrap(),
        )
        .unwrap();
        assert_eq!(
            (
                m.header.destination_prefix_length,
                m.header.source_prefix_length
            ),
            (128, 128)
        );
        assert!(
            m.attributes
                .iter()
                .any(|a| matches!(a, RouteAttribute::Source(_)))
        );
        assert!(
            m.attributes
                .iter()
                .any(|a| matches!(a, RouteAttribute::Destination(_)))
        );
    }
}
