//! The mobility manager joined to the engine, sans-IO: the engine's
//! events about MOBIKE IKE SAs (established, rekeyed, moved, path tests,
//! failed updates, unresponsive pairs, the peer's address list, virtual
//! IPs, deletion) go to the [`Manager`]; its actions become engine
//! commands at once ([`Driver::drive`]), so that a trigger's update is
//! queued in the same step as the trigger. Our address list is held back
//! while a move is under way: an INFORMATIONAL queued ahead of the update
//! would delay it by a round trip, or a retransmission on a dying pair.
//!
//! The runtime (`crate::runtime::mobility`) adds the I/O: the sources, the
//! kernel's route answers and the CHILD_SA counters; the simulator drives
//! the same code with virtual time.

use std::{
    net::{IpAddr, SocketAddr},
    time::Instant,
};

use tracing::{debug, info};

use super::{
    config::MobilityConfig,
    manager::{Action, Manager, Timeline},
    policy::{Pair, RouteView},
};
use crate::engine::{Command, Endpoint, Event, IkeSaInfo, Path, SaId};
use crate::proto::TrafficSelector;

/// The manager and its link to one engine.
#[derive(Debug)]
pub struct Driver {
    manager: Manager,
    /// Our address list, held while a move is under way, and the IKE SAs
    /// whose list the manager found changed.
    announce: Option<(Vec<IpAddr>, Vec<SaId>)>,
}

impl Driver {
    pub fn new(config: MobilityConfig) -> Self {
        Self {
            manager: Manager::new(config),
            announce: None,
        }
    }

    pub fn manager(&self) -> &Manager {
        &self.manager
    }

    pub fn manager_mut(&mut self) -> &mut Manager {
        &mut self.manager
    }

    /// An engine event: the manager follows the MOBIKE IKE SAs. Says which
    /// followed IKE SA moved, if one did.
    pub fn on_event(&mut self, ep: &Endpoint, e: &Event, now: Instant) -> Option<SaId> {
        match e {
            Event::IkeSaEstablished {
                sa, mobike: true, ..
            } => self.follow(ep, *sa, now),
            Event::IkeSaRekeyed { old, new } => {
                self.manager.on_sa_rekeyed(*old, *new);
                self.follow(ep, *new, now);
            }
            Event::PathChanged { sa, path } if self.manager.follows(*sa) => {
                self.manager.on_moved(*sa, pair_of(path), now);
                self.follow(ep, *sa, now);
                return Some(*sa);
            }
            Event::PathTested { sa, path, rtt } => {
                self.manager.on_test_result(*sa, pair_of(path), *rtt, now);
            }
            Event::UpdateFailed { sa, path, reason } => {
                self.manager
                    .on_move_failed(*sa, pair_of(path), &format!("{reason:?}"), now);
            }
            Event::Unresponsive { sa, .. } => self.manager.on_unresponsive(*sa),
            // A CHILD_SA's remote selectors rule out peer addresses.
            Event::PeerAddresses { sa, .. }
            | Event::VirtualIps { sa, .. }
            | Event::ChildSaEstablished { sa, .. }
                if self.manager.follows(*sa) =>
            {
                self.follow(ep, *sa, now);
            }
            Event::IkeSaDeleted { sa, .. } => self.manager.on_sa_gone(*sa),
            _ => {}
        }
        None
    }

    /// Tells the manager an IKE SA's current pair, peer addresses and
    /// virtual IPs as the engine has them.
    fn follow(&mut self, ep: &Endpoint, sa: SaId, now: Instant) {
        let Some(info) = ep.ike_sa(sa) else {
            return;
        };
        if !info.mobike {
            return;
        }
        let peers = peer_addrs(&info);
        debug!(
            sa,
            ?peers,
            children = info.child_sas.len(),
            "mobility: the IKE SA's peer addresses"
        );
        self.manager.on_sa(
            sa,
            info.initiator,
            pair_of(&info.path),
            peers,
            info.vips.clone(),
            now,
        );
    }

    /// Evaluates what inputs concerned (with the kernel's `routes` for
    /// [`Manager::route_pairs`]) and hands the manager's actions to the
    /// engine; `listening_on` says whether an IKE socket can send from a
    /// local address. Returns the moves completed since the last call.
    pub fn drive(
        &mut self,
        ep: &mut Endpoint,
        routes: &dyn RouteView,
        now: Instant,
        listening_on: impl Fn(IpAddr) -> bool,
    ) -> Vec<(SaId, Timeline)> {
        self.manager.evaluate(routes, now);
        let actions: Vec<Action> = std::iter::from_fn(|| self.manager.poll_action()).collect();
        let mut fresh: Option<(Vec<IpAddr>, Vec<SaId>)> = None;
        for a in &actions {
            if let Action::Announce { sa, addrs } = a {
                let (all, sas) = fresh.get_or_insert_with(Default::default);
                for a in addrs {
                    if !all.contains(a) {
                        all.push(*a);
                    }
                }
                sas.push(*sa);
            }
        }
        // Before the first update: the engine holds the newest addresses,
        // so that the update carries the list (RFC 4555 §3.6) and no
        // INFORMATIONAL of its own follows the move.
        let mut usable_given = false;
        for a in actions {
            match a {
                Action::TestPaths { sa, pairs } => {
                    let Some(current) = ep.ike_sa_path(sa) else {
                        continue;
                    };
                    let (ok, cannot): (Vec<Pair>, Vec<Pair>) =
                        pairs.into_iter().partition(|p| listening_on(p.local));
                    for p in cannot {
                        debug!(sa, local = %p.local, "no IKE socket can send from this address; not a candidate");
                        self.manager.on_test_result(sa, p, None, now);
                    }
                    if ok.is_empty() {
                        continue;
                    }
                    let paths = ok.iter().map(|p| path_of(current, *p)).collect();
                    debug!(sa, pairs = ?ok, "mobility: testing paths");
                    if let Err(e) = ep.handle_command(now, Command::TestPaths { sa, paths }) {
                        debug!(sa, error = %e, "mobility: path test not sent");
                        for p in ok {
                            self.manager.on_test_result(sa, p, None, now);
                        }
                    }
                }
                Action::Update { sa, pair } => {
                    let Some(current) = ep.ike_sa_path(sa) else {
                        continue;
                    };
                    if !listening_on(pair.local) {
                        self.manager.on_move_failed(
                            sa,
                            pair,
                            "no IKE socket can send from this address",
                            now,
                        );
                        continue;
                    }
                    let p = path_of(current, pair);
                    if !usable_given {
                        usable_given = true;
                        let newest = fresh.as_ref().or(self.announce.as_ref());
                        if let Some((addrs, _)) = newest {
                            let mut addrs = addrs.clone();
                            addrs.retain(|a| listening_on(*a));
                            addrs.sort();
                            if let Err(e) =
                                ep.handle_command(now, Command::UsableAddresses { addrs })
                            {
                                debug!(error = %e, "mobility: usable addresses not given");
                            }
                        }
                    }
                    info!(sa = format_args!("{sa:#018x}"), from = %current.local, to = %p.local, remote = %p.remote, "mobility: moving the IKE SA");
                    if self.manager.path_lost(sa)
                        && let Err(e) = ep.handle_command(now, Command::PathLost { sa })
                    {
                        debug!(sa, error = %e, "mobility: path loss not noted");
                    }
                    let fallback = self
                        .manager
                        .fallbacks(sa, pair)
                        .into_iter()
                        .filter(|f| listening_on(f.local))
                        .map(|f| path_of(current, f))
                        .collect();
                    let cmd = Command::UpdateAddresses {
                        sa,
                        local: p.local,
                        remote: p.remote,
                        fallback,
                    };
                    if let Err(e) = ep.handle_command(now, cmd) {
                        self.manager.on_move_failed(sa, pair, &e.to_string(), now);
                    }
                }
                // Gathered above.
                Action::Announce { .. } => {}
            }
        }
        if let Some((addrs, sas)) = fresh {
            // The newest list; the IKE SAs held back before it still need
            // their check.
            let held = self.announce.take().map(|(_, s)| s).unwrap_or_default();
            self.announce = Some((addrs, [held, sas].concat()));
        }
        // A move goes first: an INFORMATIONAL with the list queued ahead of
        // the update would delay it by a round trip, or by a retransmission
        // on a dying pair.
        if !self.manager.is_moving()
            && let Some((mut addrs, mut sas)) = self.announce.take()
        {
            addrs.retain(|a| listening_on(*a));
            addrs.sort();
            sas.sort_unstable();
            sas.dedup();
            debug!(?addrs, "mobility: our address list");
            if let Err(e) = ep.handle_command(now, Command::AnnounceAddresses { addrs, sas }) {
                debug!(error = %e, "mobility: address list not announced");
            }
        }
        std::iter::from_fn(|| self.manager.poll_completed()).collect()
    }
}

fn pair_of(p: &Path) -> Pair {
    Pair {
        local: p.local.ip(),
        remote: p.remote.ip(),
    }
}

/// The engine path for `pair` on an IKE SA now at `current`: its ports
/// stay (after IKE_AUTH a MOBIKE IKE SA is on the NAT-T port, RFC 4555
/// §3.3).
fn path_of(current: Path, pair: Pair) -> Path {
    Path {
        local: SocketAddr::new(pair.local, current.local.port()),
        remote: SocketAddr::new(pair.remote, current.remote.port()),
    }
}

/// Where the IKE SA may go: the peer's address now, the configured
/// `remote_addrs` and the peer's announced list, less the addresses inside
/// a remote traffic selector of its CHILD_SAs that does not hold the
/// peer's address now. A gateway announces every address it has (RFC 4555
/// §3.6), those of the networks behind it too, which are reached through
/// the tunnel, not beside it: no path to test or move to. A selector
/// that holds the gateway's own address (0.0.0.0/0, say) says nothing
/// about where its addresses are.
fn peer_addrs(info: &IkeSaInfo) -> Vec<IpAddr> {
    let remote_ts: Vec<TrafficSelector> = info
        .child_sas
        .iter()
        .flat_map(|c| c.remote_ts.iter().copied())
        .collect();
    candidate_peer_addrs(
        info.path.remote.ip(),
        info.remote_addrs.iter().chain(&info.peer_addrs).copied(),
        &remote_ts,
    )
}

/// [`peer_addrs`] on its parts: the peer's address `now`, the others, the
/// CHILD_SAs' remote traffic selectors.
fn candidate_peer_addrs(
    now: IpAddr,
    others: impl Iterator<Item = IpAddr>,
    remote_ts: &[TrafficSelector],
) -> Vec<IpAddr> {
    let tunneled = |a: IpAddr| {
        remote_ts
            .iter()
            .any(|ts| ts_contains(ts, a) && !ts_contains(ts, now))
    };
    let mut v = vec![now];
    for a in others {
        if !v.contains(&a) && !a.is_unspecified() && !tunneled(a) {
            v.push(a);
        }
    }
    v
}

/// Whether the address range of `ts` (RFC 7296 §3.13.1) holds `a`.
fn ts_contains(ts: &TrafficSelector, a: IpAddr) -> bool {
    match (ts.start_addr, ts.end_addr, a) {
        (IpAddr::V4(s), IpAddr::V4(e), IpAddr::V4(a)) => s <= a && a <= e,
        (IpAddr::V6(s), IpAddr::V6(e), IpAddr::V6(a)) => s <= a && a <= e,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(start: &str, end: &str) -> TrafficSelector {
        TrafficSelector {
            ip_protocol: 0,
            start_port: 0,
            end_port: u16::MAX,
            start_addr: start.parse().unwrap(),
            end_addr: end.parse().unwrap(),
        }
    }

    fn a(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn addresses_behind_the_gateway_are_no_candidates() {
        let inner = [ts("10.2.0.0", "10.2.0.255"), ts("10.4.0.0", "10.4.0.255")];
        let announced = [
            a("10.2.0.1"),
            a("198.51.100.2"),
            a("10.4.0.1"),
            a("2001:db8::2"),
        ];
        assert_eq!(
            candidate_peer_addrs(a("203.0.113.2"), announced.into_iter(), &inner),
            [a("203.0.113.2"), a("198.51.100.2"), a("2001:db8::2")]
        );
        // A selector that holds the gateway's own address (a full tunnel)
        // says nothing about where its other addresses are.
        let full = [ts("0.0.0.0", "255.255.255.255")];
        assert_eq!(
            candidate_peer_addrs(a("203.0.113.2"), announced.into_iter(), &full),
            [
                a("203.0.113.2"),
                a("10.2.0.1"),
                a("198.51.100.2"),
                a("10.4.0.1"),
                a("2001:db8::2")
            ]
        );
    }
}
