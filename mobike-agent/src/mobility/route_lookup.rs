//! Route lookups for the policy: how the kernel would route from a local
//! address to a peer address, asked over rtnetlink, and a cache of the
//! answers that the sans-IO policy reads as its [`RouteView`].
//!
//! [`RouteLookup`] sends one RTM_GETROUTE per pair with the destination
//! and the source set (what `ip route get REMOTE from LOCAL` sends: a
//! single request, not a dump), so the kernel's source-based rules apply.
//! It keeps one rtnetlink connection; the lookups of a refresh are all in
//! flight at once. Answers: a unicast (or local) route is
//! [`RouteAnswer::Via`] its output interface; the errors the kernel gives
//! for routes that drop the packet are [`RouteAnswer::NoRoute`]; anything
//! else is [`RouteAnswer::Unknown`], logged at debug level.
//!
//! [`RouteCache`] holds the answers for the pairs the manager cares about;
//! the runtime refreshes it (after link, address and route events) before
//! the manager evaluates.

use std::{collections::HashMap, net::IpAddr};

use futures::{StreamExt as _, future::join_all};
use netlink_packet_route::route::{RouteAttribute, RouteMessage, RouteProtocol, RouteType};
use rtnetlink::{Handle, RouteMessageBuilder};
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

/// Why the lookup connection could not be made.
#[derive(Debug, thiserror::Error)]
#[error("cannot open an rtnetlink socket for route lookups")]
pub struct RouteLookupError(#[source] std::io::Error);

/// Route lookups over one rtnetlink connection (in the network namespace
/// of the thread that made it).
#[derive(Debug, Clone)]
pub struct RouteLookup {
    handle: Handle,
}

impl RouteLookup {
    /// Opens the rtnetlink connection; its task runs on the current tokio
    /// runtime until every clone of this lookup is dropped.
    pub fn new() -> Result<Self, RouteLookupError> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(RouteLookupError)?;
        tokio::spawn(conn);
        Ok(Self { handle })
    }

    /// How the kernel routes from `local` to `remote`: one RTM_GETROUTE.
    pub async fn route(&self, local: IpAddr, remote: IpAddr) -> RouteAnswer {
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
        // With a destination set, rtnetlink sends NLM_F_REQUEST alone (a
        // single lookup, not a dump); the kernel answers with one route.
        let mut replies = self.handle.route().get(request).execute();
        match replies.next().await {
            Some(Ok(reply)) => answer_of(&reply, local, remote),
            Some(Err(e)) => error_answer(&e, local, remote),
            None => {
                debug!(%local, %remote, "route lookup ended without an answer");
                RouteAnswer::Unknown
            }
        }
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

fn error_answer(e: &rtnetlink::Error, local: IpAddr, remote: IpAddr) -> RouteAnswer {
    let errno = crate::routes::errno(e);
    match NO_ROUTE_ERRNOS.iter().find(|(n, _)| Some(*n) == errno) {
        Some((_, what)) => {
            debug!(%local, %remote, what, "no route");
            RouteAnswer::NoRoute
        }
        None => {
            debug!(%local, %remote, error = %e, "route lookup failed");
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
    /// remote), all looked up at once over `lookup`'s connection.
    pub async fn refresh(
        &mut self,
        lookup: &RouteLookup,
        pairs: impl IntoIterator<Item = (IpAddr, IpAddr)>,
    ) {
        let mut pairs: Vec<(IpAddr, IpAddr)> = pairs.into_iter().collect();
        pairs.sort_unstable();
        pairs.dedup();
        let answers = join_all(pairs.iter().map(|&(l, r)| lookup.route(l, r))).await;
        self.answers = pairs.into_iter().zip(answers).collect();
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
