//! The current link state: interfaces, their rtnetlink state and addresses,
//! and the default routes, as the rtnetlink source last saw them.
//!
//! The source owns the authoritative table and hands an immutable copy
//! (`Arc<LinkTable>`) along with each batch of triggers it derived; the hub
//! swaps it in when it publishes that batch, so a subscriber's snapshot and
//! the live triggers after it always agree. This module does not talk to the
//! kernel.

use std::collections::BTreeMap;

use crate::model::{
    Address, DefaultRoute, Detail, Interface, InterfaceKind, LinkState, Source, Timestamp, Trigger,
    TriggerType,
};

/// One interface as last seen.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkEntry {
    pub interface: Interface,
    pub state: LinkState,
    pub addresses: Vec<Address>,
    pub last_change: Timestamp,
}

impl LinkEntry {
    pub fn is_tunnel(&self) -> bool {
        self.interface.kind == Some(InterfaceKind::Tunnel)
    }
}

/// A default route (destination 0/0 or ::/0) and the interface it leaves by.
#[derive(Debug, Clone, PartialEq)]
pub struct DefaultRouteEntry {
    /// Output interface index; 0 if the route names none (e.g. multipath).
    pub oif: u32,
    pub route: DefaultRoute,
}

/// Every interface by ifindex, plus the default routes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LinkTable {
    pub links: BTreeMap<u32, LinkEntry>,
    pub default_routes: Vec<DefaultRouteEntry>,
}

impl LinkTable {
    pub fn address_count(&self) -> usize {
        self.links.values().map(|l| l.addresses.len()).sum()
    }

    /// The current state as triggers, for a subscriber that asked for a
    /// snapshot: IF_ADDED (TUNNEL_ADDED for tunnels) with the link state, then
    /// IF_ADDRADDED per address, then DEFAULT_ROUTE_ADDED. They carry id 0:
    /// they describe state, they are not stored events.
    pub fn snapshot_triggers(&self, now: Timestamp) -> Vec<Trigger> {
        let mut out = Vec::with_capacity(self.links.len() + self.address_count());
        for l in self.links.values() {
            let kind = if l.is_tunnel() {
                TriggerType::TunnelAdded
            } else {
                TriggerType::IfAdded
            };
            let mut t = Trigger::new(Source::Rtnetlink, kind);
            t.observed_at = now;
            t.interface = Some(l.interface.clone());
            t.detail = Some(Detail::LinkState(l.state.clone()));
            out.push(t);
            for a in &l.addresses {
                let mut t = Trigger::new(Source::Rtnetlink, TriggerType::IfAddrAdded);
                t.observed_at = now;
                t.interface = Some(l.interface.clone());
                t.address = Some(a.clone());
                out.push(t);
            }
        }
        for r in &self.default_routes {
            let mut t = Trigger::new(Source::Rtnetlink, TriggerType::DefaultRouteAdded);
            t.observed_at = now;
            t.interface = self.links.get(&r.oif).map(|l| l.interface.clone());
            t.detail = Some(Detail::DefaultRoute(r.route.clone()));
            out.push(t);
        }
        out
    }
}
