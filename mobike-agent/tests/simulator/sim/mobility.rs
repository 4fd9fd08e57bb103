//! The mobility manager on a node: its [`Driver`] joined to the node's
//! engine as the runtime joins them (each engine event to the driver, then
//! a drive, until quiet), the node's addresses on simulated interfaces,
//! and the network changes that tell the manager as the kernel or
//! trigger-db would — link down and up, addresses removed and added,
//! Link_Going_Down ahead of a link loss — beside a silent path loss that
//! tells nobody.
//!
//! The simulated host has no routing table: the route from a local
//! address goes out of the interface that has it, and there is none from
//! an address the node does not have.

use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

use mobike_agent::{
    engine::{Endpoint, Event, SaId},
    mobility::{
        IfaceKind, LinkEvent, RouteAnswer,
        config::MobilityConfig,
        driver::Driver,
        links::{AddrFlags, LocalAddr, OperState},
        manager::Timeline,
    },
};

use super::Sim;

/// A simulated interface of a node.
#[derive(Debug, Clone)]
pub struct SimIface {
    pub index: u32,
    pub name: String,
    pub kind: IfaceKind,
    /// Its addresses, also when they are removed from the node.
    pub addrs: Vec<IpAddr>,
    /// Carrier: when down, nothing from or to its addresses gets through.
    pub up: bool,
}

/// A node's mobility manager and the interfaces it follows.
#[derive(Debug)]
pub struct NodeMobility {
    pub driver: Driver,
    pub ifaces: Vec<SimIface>,
    /// The moves the driver reported done, with the time it did.
    pub moves: Vec<(Instant, SaId, Timeline)>,
}

impl NodeMobility {
    /// The interface that has (or had) `addr`.
    pub fn iface_of(&self, addr: IpAddr) -> Option<&SimIface> {
        self.ifaces.iter().find(|i| i.addrs.contains(&addr))
    }

    /// An engine event for the manager.
    pub(super) fn on_event(&mut self, ep: &Endpoint, e: &Event, now: Instant) {
        self.driver.on_event(ep, e, now);
    }

    /// Evaluates and hands the manager's actions to `ep`; the node can
    /// send from the addresses it has (`addrs`).
    pub(super) fn drive(&mut self, ep: &mut Endpoint, addrs: &[IpAddr], now: Instant) {
        let ifaces = &self.ifaces;
        let routes =
            |local: IpAddr, _remote: IpAddr| match ifaces.iter().find(|i| i.addrs.contains(&local))
            {
                Some(i) if addrs.contains(&local) => RouteAnswer::Via(i.index),
                _ => RouteAnswer::NoRoute,
            };
        let done = self.driver.drive(ep, &routes, now, |a| addrs.contains(&a));
        self.moves
            .extend(done.into_iter().map(|(sa, t)| (now, sa, t)));
    }
}

fn link_event(i: &SimIface) -> LinkEvent {
    LinkEvent::Link {
        index: i.index,
        name: i.name.clone(),
        kind: i.kind,
        driver_kind: String::new(),
        admin_up: true,
        carrier: i.up,
        oper: if i.up { OperState::Up } else { OperState::Down },
    }
}

fn addr_event(index: u32, addr: IpAddr) -> LinkEvent {
    LinkEvent::Addr {
        index,
        addr: LocalAddr {
            addr,
            prefix_len: if addr.is_ipv4() { 24 } else { 64 },
            flags: AddrFlags::default(),
        },
    }
}

impl Sim {
    /// Gives `node` a mobility manager with `config` and these interfaces
    /// (index, name, kind, addresses), all up; the node gains the
    /// addresses it does not have yet. The manager learns them as link and
    /// address events, as from rtnetlink at start.
    pub fn with_mobility(
        &mut self,
        node: usize,
        config: MobilityConfig,
        ifaces: &[(u32, &str, IfaceKind, &[IpAddr])],
    ) {
        let ifaces: Vec<SimIface> = ifaces
            .iter()
            .map(|(index, name, kind, addrs)| SimIface {
                index: *index,
                name: (*name).into(),
                kind: *kind,
                addrs: addrs.to_vec(),
                up: true,
            })
            .collect();
        for a in ifaces.iter().flat_map(|i| &i.addrs) {
            if !self.nodes[node].has_addr(*a) {
                self.add_addr(node, *a);
            }
        }
        let mut m = NodeMobility {
            driver: Driver::new(config),
            ifaces,
            moves: Vec::new(),
        };
        for i in m.ifaces.clone() {
            let now = self.now;
            m.driver
                .manager_mut()
                .on_link_event(link_event(&i), None, now);
            for a in &i.addrs {
                m.driver
                    .manager_mut()
                    .on_link_event(addr_event(i.index, *a), None, now);
            }
        }
        self.nodes[node].mobility = Some(m);
    }

    /// `node`'s mobility manager.
    pub fn mobility(&self, node: usize) -> &NodeMobility {
        self.nodes[node]
            .mobility
            .as_ref()
            .expect("the node has a mobility manager")
    }

    fn mobility_mut(&mut self, node: usize) -> &mut NodeMobility {
        self.nodes[node]
            .mobility
            .as_mut()
            .expect("the node has a mobility manager")
    }

    /// Tells `node`'s manager `event` now, as the kernel or trigger-db
    /// would.
    pub fn tell(&mut self, node: usize, event: LinkEvent) {
        let now = self.now;
        self.mobility_mut(node)
            .driver
            .manager_mut()
            .on_link_event(event, None, now);
    }

    fn iface_mut(&mut self, node: usize, index: u32) -> &mut SimIface {
        self.mobility_mut(node)
            .ifaces
            .iter_mut()
            .find(|i| i.index == index)
            .expect("no such interface")
    }

    /// The carrier of interface `index` of `node` goes (`up` false) or
    /// comes back: every path from its addresses is cut or restored, and
    /// the manager is told (LINK_DOWN / LINK_UP).
    pub fn set_link_up(&mut self, node: usize, index: u32, up: bool) {
        let iface = self.iface_mut(node, index);
        iface.up = up;
        let addrs = iface.addrs.clone();
        for a in addrs {
            self.set_addr_up(a, up);
        }
        self.tell(node, LinkEvent::Carrier { index, up });
    }

    /// Link_Going_Down for interface `index` of `node` now, and the link
    /// goes `within` later (scheduled).
    pub fn link_going_down(&mut self, node: usize, index: u32, within: Duration) {
        self.tell(node, LinkEvent::GoingDown { index, within });
        self.schedule(
            within,
            format!("link {index} down as predicted"),
            move |s| s.set_link_up(node, index, false),
        );
    }

    /// `node` loses `addr` of its interface (IF_ADDRREMOVED).
    pub fn remove_iface_addr(&mut self, node: usize, addr: IpAddr) {
        let index = self
            .mobility(node)
            .iface_of(addr)
            .expect("an interface")
            .index;
        self.remove_addr(node, addr);
        self.tell(node, LinkEvent::AddrRemoved { index, addr });
    }

    /// `node` gains `addr` on interface `index` (IF_ADDRADDED).
    pub fn add_iface_addr(&mut self, node: usize, index: u32, addr: IpAddr) {
        let iface = self.iface_mut(node, index);
        if !iface.addrs.contains(&addr) {
            iface.addrs.push(addr);
        }
        self.add_addr(node, addr);
        self.tell(node, addr_event(index, addr));
    }

    /// Every path from `addr` is cut (`lost`) or restored somewhere
    /// beyond the host: nothing tells the manager, the node keeps the
    /// address and its link stays up.
    pub fn set_silent_loss(&mut self, addr: IpAddr, lost: bool) {
        self.set_addr_up(addr, !lost);
    }
}
