//! Routes for tunnel-mode CHILD_SAs, as strongSwan's `install_routes` does
//! them: for each remote traffic selector of an installed CHILD_SA whose
//! local selector holds one of this host's addresses, a route in a table of
//! its own (220 by default, looked up by a rule at priority 220) towards the
//! next hop to the peer, with that address as preferred source. Without it
//! the host's own packets to the remote subnet leave with the outer address
//! as source, match no policy and go out in the clear (or nowhere).
//!
//! Forwarded traffic of a gateway needs no route (the policies catch it on
//! whatever route the main table has), so a CHILD_SA whose local selectors
//! hold no local address gets none. The next hop is looked up in the
//! kernel's routing for the peer's outer address; when the outer and inner
//! families differ (IPv6 inside IPv4, say) the route names only the
//! interface. A MOBIKE move re-resolves the next hop and replaces the
//! routes; the rule is removed on exit if this agent added it. A virtual
//! IP (`crate::vips` puts it on the host first) is such a local address
//! inside the local selectors, so its routes take it as source. What this
//! module does not do: routes for transport mode, or following later
//! route changes under an unchanged address pair.
//!
//! A move's requests (the next hop, the replaced route) and the route
//! changes of installs and deletes go over the agent's own socket
//! ([`crate::rtnl`]), answered in the calling task: after a link loss they
//! stand between the migrated SAs and the first packet through the
//! tunnel. Dumps (local addresses, leftovers) and the rules go over
//! rtnetlink's connection.

use std::{collections::HashMap, net::IpAddr};

use futures::TryStreamExt as _;
use ipsec_backend::{SelectorPair, types::Prefix};
use netlink_packet_core::{NLM_F_CREATE, NLM_F_REPLACE};
use netlink_packet_route::{
    RouteNetlinkMessage,
    address::AddressAttribute,
    route::{RouteAddress, RouteAttribute, RouteMessage, RouteProtocol},
    rule::RuleAttribute,
};
use rtnetlink::{Handle, RouteMessageBuilder};
use tracing::{debug, info, warn};

use crate::rtnl::{Answer, RtnlError, RtnlSocket};

/// The routing protocol number our routes carry (`proto 167` in `ip
/// route`): the marker by which a later run finds the routes a killed run
/// left in the table and removes them, leaving others' routes (strongSwan
/// puts `proto static` ones in the same table 220) alone. No routing
/// daemon iproute2 knows uses it.
pub const ROUTE_PROTOCOL: u8 = 167;

/// How long a route request's answer is waited for (the kernel answers
/// within the send; this bounds a kernel that does not).
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// `EEXIST`: the rule is there already.
const EEXIST: i32 = 17;
/// `ENOENT` / `ESRCH`: what deleting a route or rule that is gone returns.
const GONE: [i32; 2] = [2, 3];

/// Where routes go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteConfig {
    /// Routing table id (strongSwan: 220).
    pub table: u32,
    /// Priority of the rule that looks the table up (strongSwan: 220).
    pub priority: u32,
}

impl Default for RouteConfig {
    fn default() -> Self {
        Self {
            table: 220,
            priority: 220,
        }
    }
}

/// What went wrong installing or removing routes.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// The rtnetlink socket could not be opened.
    #[error("cannot open an rtnetlink socket")]
    Open(#[source] std::io::Error),
    /// The socket for route requests could not be opened.
    #[error("cannot open the socket for route requests")]
    OpenRequests(#[source] RtnlError),
    /// Listing this host's addresses failed.
    #[error("cannot list local addresses")]
    Addresses(#[source] rtnetlink::Error),
    /// The kernel has no route to the peer.
    #[error("no route to the peer {peer}")]
    NoRouteToPeer {
        /// Peer's outer address.
        peer: IpAddr,
        /// The kernel's answer (ENETUNREACH, say) or the lookup's failure.
        #[source]
        source: RtnlError,
    },
    /// The route could not be built or the kernel refused it.
    #[error("route {dst} table {table}")]
    Route {
        /// Destination.
        dst: Prefix,
        /// Table.
        table: u32,
        /// Cause.
        #[source]
        source: RouteCause,
    },
    /// The rule that looks the table up could not be added.
    #[error("rule priority {priority} lookup {table} ({family})")]
    Rule {
        /// Priority.
        priority: u32,
        /// Table.
        table: u32,
        /// `IPv4` or `IPv6`.
        family: &'static str,
        /// Cause.
        #[source]
        source: rtnetlink::Error,
    },
}

/// Why one route failed.
#[derive(Debug, thiserror::Error)]
pub enum RouteCause {
    /// The message could not be built (address family mix-up; rtnetlink
    /// does not export its error type, so its text).
    #[error("{0}")]
    Build(String),
    /// The kernel refused it (over rtnetlink's connection).
    #[error(transparent)]
    Kernel(#[from] rtnetlink::Error),
    /// The kernel refused it, or did not answer (over the own socket).
    #[error(transparent)]
    Request(#[from] RtnlError),
}

/// The errno of a kernel refusal, if it is one.
pub(crate) fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(m.raw_code().abs()),
        _ => None,
    }
}

/// How the peer is reached: the interface and the gateway, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct NextHop {
    oif: Option<u32>,
    gateway: Option<IpAddr>,
}

/// One installed route.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Installed {
    dst: Prefix,
    src: IpAddr,
    via: NextHop,
}

/// The routes of every CHILD_SA, by reqid (CHILD_SAs that replace each
/// other on rekey share a reqid and its routes).
#[derive(Debug)]
pub struct Routes {
    handle: Handle,
    requests: RtnlSocket,
    config: RouteConfig,
    /// The rule per family (v4, v6): whether this agent added it.
    rules: [bool; 2],
    by_reqid: HashMap<u32, Vec<Installed>>,
}

fn contains(p: &Prefix, a: IpAddr) -> bool {
    match (p.addr, a) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(p.len.min(32)))
                .unwrap_or(0);
            u32::from(n) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(p.len.min(128)))
                .unwrap_or(0);
            u128::from(n) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

/// The routes a CHILD_SA with selector pairs `pairs` needs on a host with
/// addresses `local`: each remote prefix once, with the first local
/// address inside a local prefix of the same pair as source.
pub fn plan(pairs: &[SelectorPair], local: &[IpAddr]) -> Vec<(Prefix, IpAddr)> {
    let mut out: Vec<(Prefix, IpAddr)> = Vec::new();
    for SelectorPair {
        local: l,
        remote: r,
    } in pairs
    {
        if out.iter().any(|(d, _)| d == r) {
            continue;
        }
        if let Some(src) = local
            .iter()
            .find(|a| contains(l, **a) && a.is_ipv4() == r.addr.is_ipv4())
        {
            out.push((*r, *src));
        }
    }
    out
}

fn route_address(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

impl Routes {
    /// Opens rtnetlink sockets in the calling thread's network namespace
    /// (the connection for dumps and rules runs as a tokio task).
    pub fn new(config: RouteConfig) -> Result<Self, RouteError> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(RouteError::Open)?;
        let requests = RtnlSocket::new().map_err(RouteError::OpenRequests)?;
        tokio::spawn(conn);
        Ok(Self {
            handle,
            requests,
            config,
            rules: [false; 2],
            by_reqid: HashMap::new(),
        })
    }

    /// Whether `reqid` has routes installed.
    pub fn has(&self, reqid: u32) -> bool {
        self.by_reqid.contains_key(&reqid)
    }

    async fn local_addresses(&self) -> Result<Vec<IpAddr>, RouteError> {
        let mut out = Vec::new();
        let mut s = self.handle.address().get().execute();
        while let Some(m) = s.try_next().await.map_err(RouteError::Addresses)? {
            // IFA_LOCAL is the address on point-to-point links, where
            // IFA_ADDRESS is the peer's; elsewhere they are equal.
            let local = m.attributes.iter().find_map(|a| match a {
                AddressAttribute::Local(ip) => Some(*ip),
                _ => None,
            });
            let addr = m.attributes.iter().find_map(|a| match a {
                AddressAttribute::Address(ip) => Some(*ip),
                _ => None,
            });
            if let Some(ip) = local.or(addr) {
                out.push(ip);
            }
        }
        Ok(out)
    }

    async fn next_hop(&mut self, peer: IpAddr) -> Result<NextHop, RouteError> {
        let len = if peer.is_ipv4() { 32 } else { 128 };
        let msg = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(peer, len)
            .map_err(|e| RouteError::Route {
                dst: Prefix::host(peer),
                table: 0,
                source: RouteCause::Build(e.to_string()),
            })?
            .build();
        let answer = self
            .requests
            .request(RouteNetlinkMessage::GetRoute(msg), 0, REQUEST_TIMEOUT)
            .await;
        let r = match answer {
            Ok(Answer::Message(RouteNetlinkMessage::NewRoute(r))) => r,
            other => {
                let source = match other {
                    Ok(a) => RtnlError::Unexpected(format!("{a:?}")),
                    Err(e) => e,
                };
                return Err(RouteError::NoRouteToPeer { peer, source });
            }
        };
        let mut hop = NextHop {
            oif: None,
            gateway: None,
        };
        for a in &r.attributes {
            match a {
                RouteAttribute::Oif(i) => hop.oif = Some(*i),
                RouteAttribute::Gateway(g) => hop.gateway = route_address(g),
                _ => {}
            }
        }
        Ok(hop)
    }

    fn message(
        &self,
        dst: Prefix,
        src: Option<IpAddr>,
        via: NextHop,
    ) -> Result<RouteMessage, RouteError> {
        let err = |e: _| RouteError::Route {
            dst,
            table: self.config.table,
            source: RouteCause::Build(format!("{e}")),
        };
        let mut b = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(dst.addr, dst.len)
            .map_err(err)?
            .table_id(self.config.table)
            .protocol(RouteProtocol::Other(ROUTE_PROTOCOL));
        if let Some(src) = src {
            b = b.pref_source(src).map_err(err)?;
        }
        // A gateway of the other family cannot serve an inner route: the
        // policy takes the packet before any neighbour lookup anyway.
        if let Some(gw) = via.gateway.filter(|g| g.is_ipv4() == dst.addr.is_ipv4()) {
            b = b.gateway(gw).map_err(err)?;
        }
        if let Some(oif) = via.oif {
            b = b.output_interface(oif);
        }
        Ok(b.build())
    }

    async fn ensure_rule(&mut self, v6: bool) -> Result<(), RouteError> {
        let i = usize::from(v6);
        if self.rules[i] {
            return Ok(());
        }
        let mut req = self
            .handle
            .rule()
            .add()
            .table_id(self.config.table)
            .priority(self.config.priority)
            // rtnetlink leaves the action unset (FR_ACT_UNSPEC), which the
            // kernel takes but which fails every lookup passing the rule
            // with EINVAL: it must say "lookup the table".
            .action(netlink_packet_route::rule::RuleAction::ToTable);
        // Our marker on the rule too (FRA_PROTOCOL), so that the next run
        // can tell a rule a killed run added from someone else's.
        req.message_mut()
            .attributes
            .push(RuleAttribute::Protocol(RouteProtocol::Other(
                ROUTE_PROTOCOL,
            )));
        let r = if v6 {
            req.v6().execute().await
        } else {
            req.v4().execute().await
        };
        match r {
            Ok(()) => {
                self.rules[i] = true;
                info!(
                    priority = self.config.priority,
                    table = self.config.table,
                    ipv6 = v6,
                    "routing rule added"
                );
                Ok(())
            }
            // Someone (a previous run, strongSwan) has it: use it, leave it.
            Err(e) if errno(&e) == Some(EEXIST) => Ok(()),
            Err(source) => Err(RouteError::Rule {
                priority: self.config.priority,
                table: self.config.table,
                family: if v6 { "IPv6" } else { "IPv4" },
                source,
            }),
        }
    }

    async fn put(&mut self, i: &Installed) -> Result<(), RouteError> {
        self.ensure_rule(i.dst.addr.is_ipv6()).await?;
        let msg = self.message(i.dst, Some(i.src), i.via)?;
        self.requests
            .change(
                RouteNetlinkMessage::NewRoute(msg),
                NLM_F_CREATE | NLM_F_REPLACE,
                REQUEST_TIMEOUT,
            )
            .await
            .map_err(|e| RouteError::Route {
                dst: i.dst,
                table: self.config.table,
                source: e.into(),
            })
    }

    async fn del(&mut self, i: &Installed) -> Result<(), RouteError> {
        let msg = self.message(
            i.dst,
            None,
            NextHop {
                oif: None,
                gateway: None,
            },
        )?;
        let r = self
            .requests
            .change(RouteNetlinkMessage::DelRoute(msg), 0, REQUEST_TIMEOUT)
            .await;
        match r {
            Err(e) if !e.errno().is_some_and(|n| GONE.contains(&n)) => Err(RouteError::Route {
                dst: i.dst,
                table: self.config.table,
                source: e.into(),
            }),
            _ => Ok(()),
        }
    }

    /// Installs the routes a CHILD_SA of `reqid` with selector pairs
    /// `pairs` (local, remote) needs towards `peer`, replacing those of an
    /// earlier pair of the reqid. Returns how many it installed.
    pub async fn install(
        &mut self,
        reqid: u32,
        pairs: &[SelectorPair],
        peer: IpAddr,
    ) -> Result<usize, RouteError> {
        let local = self.local_addresses().await?;
        let wanted = plan(pairs, &local);
        if wanted.is_empty() {
            debug!(reqid, "no local address in the local selectors: no route");
            self.remove(reqid).await?;
            return Ok(0);
        }
        let via = self.next_hop(peer).await?;
        let new: Vec<Installed> = wanted
            .into_iter()
            .map(|(dst, src)| Installed { dst, src, via })
            .collect();
        let old = self.by_reqid.remove(&reqid).unwrap_or_default();
        let mut done = Vec::with_capacity(new.len());
        let mut first_err = None;
        for i in new {
            match self.put(&i).await {
                Ok(()) => {
                    info!(reqid, dst = %i.dst, src = %i.src, gateway = ?i.via.gateway, table = self.config.table, "route installed");
                    done.push(i);
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        for o in old.iter().filter(|o| !done.iter().any(|d| d.dst == o.dst)) {
            if let Err(e) = self.del(o).await {
                warn!(reqid, dst = %o.dst, error = %errchain::chain(&e), "cannot remove a stale route");
            }
        }
        let n = done.len();
        if !done.is_empty() {
            self.by_reqid.insert(reqid, done);
        }
        first_err.map_or(Ok(n), Err)
    }

    /// The peer moved (MOBIKE): the routes of `reqid` go via the next hop
    /// to `peer` now.
    pub async fn update(&mut self, reqid: u32, peer: IpAddr) -> Result<(), RouteError> {
        let Some(cur) = self.by_reqid.get(&reqid).cloned() else {
            return Ok(());
        };
        let via = self.next_hop(peer).await?;
        let mut next = Vec::with_capacity(cur.len());
        let mut first_err = None;
        for mut i in cur {
            if i.via != via {
                i.via = via;
                if let Err(e) = self.put(&i).await {
                    first_err.get_or_insert(e);
                    continue;
                }
                info!(reqid, dst = %i.dst, gateway = ?via.gateway, "route moved");
            }
            next.push(i);
        }
        self.by_reqid.insert(reqid, next);
        first_err.map_or(Ok(()), Err)
    }

    /// Removes the routes of `reqid` (those already gone are fine).
    pub async fn remove(&mut self, reqid: u32) -> Result<(), RouteError> {
        let mut first_err = None;
        for i in self.by_reqid.remove(&reqid).unwrap_or_default() {
            match self.del(&i).await {
                Ok(()) => debug!(reqid, dst = %i.dst, "route removed"),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Removes the routes of protocol [`ROUTE_PROTOCOL`] in our table, both
    /// families, and the rule with that marker that looks it up: what a run
    /// of the agent that was killed left behind (at start, before any route
    /// of this run). Returns how many routes went.
    pub async fn remove_leftovers(&self) -> Result<usize, RouteError> {
        let table = self.config.table;
        let dump_err = |source| RouteError::Route {
            dst: Prefix::host(IpAddr::from([0, 0, 0, 0])),
            table,
            source: RouteCause::Kernel(source),
        };
        let mut found = Vec::new();
        for v6 in [false, true] {
            let filter = if v6 {
                RouteMessageBuilder::<std::net::Ipv6Addr>::new().build()
            } else {
                RouteMessageBuilder::<std::net::Ipv4Addr>::new().build()
            };
            let mut s = self.handle.route().get(filter).execute();
            while let Some(m) = s.try_next().await.map_err(dump_err)? {
                let in_table = m
                    .attributes
                    .iter()
                    .find_map(|a| match a {
                        RouteAttribute::Table(t) => Some(*t),
                        _ => None,
                    })
                    .unwrap_or(u32::from(m.header.table))
                    == table;
                if in_table && m.header.protocol == RouteProtocol::Other(ROUTE_PROTOCOL) {
                    found.push(m);
                }
            }
        }
        let mut removed = 0;
        for m in found {
            match self.handle.route().del(m).execute().await {
                Ok(()) => removed += 1,
                Err(e) if errno(&e).is_some_and(|n| GONE.contains(&n)) => {}
                Err(e) => return Err(dump_err(e)),
            }
        }
        if removed > 0 {
            info!(removed, table, "removed routes an earlier run left behind");
        }
        self.remove_leftover_rules().await?;
        Ok(removed)
    }

    /// Removes the rules at our priority that look up our table and carry
    /// our protocol marker: the ones a killed run added (another daemon's
    /// rule, without the marker, stays and is used).
    async fn remove_leftover_rules(&self) -> Result<(), RouteError> {
        for v6 in [false, true] {
            let (family, name) = if v6 {
                (rtnetlink::IpVersion::V6, "IPv6")
            } else {
                (rtnetlink::IpVersion::V4, "IPv4")
            };
            let rule_err = |source| RouteError::Rule {
                priority: self.config.priority,
                table: self.config.table,
                family: name,
                source,
            };
            let mut found = Vec::new();
            let mut s = self.handle.rule().get(family).execute();
            while let Some(m) = s.try_next().await.map_err(rule_err)? {
                let has = |want: &RuleAttribute| m.attributes.iter().any(|a| a == want);
                if has(&RuleAttribute::Priority(self.config.priority))
                    && has(&RuleAttribute::Table(self.config.table))
                    && has(&RuleAttribute::Protocol(RouteProtocol::Other(
                        ROUTE_PROTOCOL,
                    )))
                {
                    found.push(m);
                }
            }
            for m in found {
                match self.handle.rule().del(m).execute().await {
                    Ok(()) => info!(
                        priority = self.config.priority,
                        ipv6 = v6,
                        "removed the routing rule an earlier run left behind"
                    ),
                    Err(e) if errno(&e).is_some_and(|n| GONE.contains(&n)) => {}
                    Err(e) => return Err(rule_err(e)),
                }
            }
        }
        Ok(())
    }

    /// Removes every route and the rules this agent added (on exit).
    pub async fn remove_all(&mut self) -> Result<(), RouteError> {
        let reqids: Vec<u32> = self.by_reqid.keys().copied().collect();
        let mut first_err = None;
        for r in reqids {
            if let Err(e) = self.remove(r).await {
                first_err.get_or_insert(e);
            }
        }
        for (i, v6) in [(0, false), (1, true)] {
            if !self.rules[i] {
                continue;
            }
            if let Err(e) = self.del_rule(v6).await {
                first_err.get_or_insert(e);
            } else {
                self.rules[i] = false;
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    async fn del_rule(&self, v6: bool) -> Result<(), RouteError> {
        let family = if v6 {
            rtnetlink::IpVersion::V6
        } else {
            rtnetlink::IpVersion::V4
        };
        let rule_err = |source| RouteError::Rule {
            priority: self.config.priority,
            table: self.config.table,
            family: if v6 { "IPv6" } else { "IPv4" },
            source,
        };
        let mut s = self.handle.rule().get(family).execute();
        while let Some(m) = s.try_next().await.map_err(rule_err)? {
            let prio = m.attributes.iter().find_map(|a| match a {
                netlink_packet_route::rule::RuleAttribute::Priority(p) => Some(*p),
                _ => None,
            });
            let table = m.attributes.iter().find_map(|a| match a {
                netlink_packet_route::rule::RuleAttribute::Table(t) => Some(*t),
                _ => None,
            });
            if prio == Some(self.config.priority) && table == Some(self.config.table) {
                return match self.handle.rule().del(m).execute().await {
                    Err(e) if !errno(&e).is_some_and(|n| GONE.contains(&n)) => Err(rule_err(e)),
                    _ => Ok(()),
                };
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Prefix {
        s.parse().unwrap()
    }
    fn a(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn plan_takes_a_local_address_inside_the_local_selector() {
        let pairs = [
            ("10.1.0.0/24", "10.2.0.0/24"),
            ("10.1.0.0/24", "10.4.0.0/16"),
            ("10.3.0.0/24", "10.2.0.0/24"),
            ("10.9.0.0/24", "10.8.0.0/24"),
            ("fd01::/64", "fd02::/64"),
            ("0.0.0.0/0", "fd03::/64"),
        ]
        .map(|(l, r)| SelectorPair::new(p(l), p(r)));
        let local = [a("192.0.2.1"), a("10.1.0.1"), a("fd01::1"), a("10.3.0.7")];
        assert_eq!(
            plan(&pairs, &local),
            vec![
                (p("10.2.0.0/24"), a("10.1.0.1")),
                (p("10.4.0.0/16"), a("10.1.0.1")),
                (p("fd02::/64"), a("fd01::1")),
            ]
        );
        assert!(plan(&pairs[3..4], &local).is_empty());
        assert!(contains(&p("0.0.0.0/0"), a("203.0.113.9")));
        assert!(!contains(&p("10.1.0.0/24"), a("10.1.1.1")));
        assert!(contains(&p("::/0"), a("2001:db8::1")));
    }
}
