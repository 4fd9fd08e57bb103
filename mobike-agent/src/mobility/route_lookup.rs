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
//! The lookups go over the agent's own socket ([`crate::rtnl`]), answered
//! in the caller's task: they sit between a link going down and the update
//! that moves the IKE SA. An answer not there after the send is waited
//! for, at most [`LOOKUP_TIMEOUT`].
//!
//! [`RouteCache`] holds the answers for the pairs the manager cares about;
//! the runtime refreshes it (after link, address and route events) before
//! the manager evaluates.

use std::{collections::HashMap, net::IpAddr, time::Duration};

use netlink_packet_route::{
    RouteNetlinkMessage,
    route::{RouteAttribute, RouteMessage, RouteProtocol, RouteType},
};
use rtnetlink::RouteMessageBuilder;
use tracing::debug;

use crate::rtnl::{Answer, RtnlError, RtnlSocket};

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

/// Why the lookup socket could not be made.
#[derive(Debug, thiserror::Error)]
#[error("cannot open an rtnetlink socket for route lookups")]
pub struct RouteLookupError(#[source] RtnlError);

/// Route lookups on one NETLINK_ROUTE socket (in the network namespace of
/// the thread that made it), one at a time.
#[derive(Debug)]
pub struct RouteLookup {
    sock: RtnlSocket,
}

impl RouteLookup {
    /// Opens the socket (non-blocking, registered with the current tokio
    /// runtime).
    pub fn new() -> Result<Self, RouteLookupError> {
        Ok(Self {
            sock: RtnlSocket::new().map_err(RouteLookupError)?,
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
        let answer = self
            .sock
            .request(RouteNetlinkMessage::GetRoute(request), 0, LOOKUP_TIMEOUT)
            .await;
        classify(answer, local, remote)
    }
}

/// What the kernel's answer to a lookup says about the pair.
fn classify(answer: Result<Answer, RtnlError>, local: IpAddr, remote: IpAddr) -> RouteAnswer {
    match answer {
        Ok(Answer::Message(RouteNetlinkMessage::NewRoute(r))) => answer_of(&r, local, remote),
        Ok(other) => {
            debug!(%local, %remote, answer = ?other, "route lookup answered with something else");
            RouteAnswer::Unknown
        }
        Err(e) => match e.errno() {
            Some(errno) => error_answer(errno, local, remote),
            None => {
                debug!(%local, %remote, error = %errchain::chain(&e), "route lookup failed");
                RouteAnswer::Unknown
            }
        },
    }
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

/// The answer an NLMSG_ERROR with `errno` gives.
fn error_answer(errno: i32, local: IpAddr, remote: IpAddr) -> RouteAnswer {
    match NO_ROUTE_ERRNOS.iter().find(|(n, _)| *n == errno) {
        Some((_, what)) => {
            debug!(%local, %remote, what, "no route");
            RouteAnswer::NoRoute
        }
        None => {
            debug!(%local, %remote, error = %std::io::Error::from_raw_os_error(errno), "route lookup failed");
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

    #[test]
    fn kernel_answers_are_classified() {
        let (l, r) = ("192.0.2.1".parse().unwrap(), "203.0.113.9".parse().unwrap());
        let route = RouteNetlinkMessage::NewRoute(reply(RouteType::Unicast, Some(4)));
        let refused = |errno| Err(RtnlError::Kernel(std::io::Error::from_raw_os_error(errno)));
        assert_eq!(
            classify(Ok(Answer::Message(route)), l, r),
            RouteAnswer::Via(4)
        );
        // Errors: those that drop the packet are no route, others unknown.
        assert_eq!(
            classify(refused(libc::ENETUNREACH), l, r),
            RouteAnswer::NoRoute
        );
        assert_eq!(
            classify(refused(libc::EHOSTUNREACH), l, r),
            RouteAnswer::NoRoute
        );
        assert_eq!(classify(refused(libc::ENOMEM), l, r), RouteAnswer::Unknown);
        // No answer, a cut one, an ACK or another message say nothing.
        let timeout = Err(RtnlError::Timeout(LOOKUP_TIMEOUT));
        assert_eq!(classify(timeout, l, r), RouteAnswer::Unknown);
        let cut = Err(RtnlError::Truncated {
            len: 20000,
            cap: 16384,
        });
        assert_eq!(classify(cut, l, r), RouteAnswer::Unknown);
        assert_eq!(classify(Ok(Answer::Ack), l, r), RouteAnswer::Unknown);
        let link = RouteNetlinkMessage::NewLink(Default::default());
        assert_eq!(
            classify(Ok(Answer::Message(link)), l, r),
            RouteAnswer::Unknown
        );
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
