//! Triggers from the difference between two link tables: a pure function of
//! the two tables and the time, used for every multicast message (old table
//! vs. table after the message) and for every resync (old table vs. fresh
//! dump).
//!
//! Order of the triggers in one diff: per link by ifindex, IF_ADDED /
//! TUNNEL_ADDED, LINK_DOWN, TUNNEL_CHANGED, address removals, changes and
//! additions, LINK_UP; then default routes removed and added; then
//! IF_REMOVED / TUNNEL_REMOVED, so that a removed link's addresses and
//! routes go before the link itself.
//!
//! Mapping decisions (IEEE 802.21-2008 Table F.7 for the Link_Down reasons):
//! a link leaving [`LinkState::is_up`] because it was set administratively
//! down, or was deleted, is EXPLICIT_DISCONNECT; one that lost carrier (or
//! whose operstate went down) while still administratively up is
//! PACKET_TIMEOUT, the closest code for "the medium went away under us"
//! (cable pulled, peer gone, association lost). Tunnels get only TUNNEL_*
//! triggers: TUNNEL_CHANGED for any change of name, state (admin, carrier,
//! operstate, MTU, MAC) and, carrying the address, for every address added,
//! removed or changed on them.

use crate::{
    links::{DefaultRouteEntry, LinkEntry, LinkTable},
    model::{
        Address, Detail, LinkState, Reason, ReasonSpace, Resync, Source, Timestamp, Trigger,
        TriggerType, link_down_reason,
    },
};

/// How an address's lifetimes are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiffMode {
    /// One live message: the kernel sent RTM_NEWADDR, so different
    /// lifetimes are a refresh (e.g. a router advertisement) and count.
    Live,
    /// A re-dump: the kernel reports *remaining* lifetimes, which shrink by
    /// themselves, so only a change between finite and forever counts.
    Resync,
}

fn trigger(kind: TriggerType, entry: &LinkEntry, now: Timestamp) -> Trigger {
    let mut t = Trigger::new(Source::Rtnetlink, kind);
    t.observed_at = now;
    t.interface = Some(entry.interface.clone());
    t
}

fn link_trigger(kind: TriggerType, entry: &LinkEntry, now: Timestamp) -> Trigger {
    let mut t = trigger(kind, entry, now);
    t.detail = Some(Detail::LinkState(entry.state.clone()));
    t
}

fn link_down(entry: &LinkEntry, now: Timestamp, code: u32) -> Trigger {
    let mut t = link_trigger(TriggerType::LinkDown, entry, now);
    t.reason = Some(Reason::ieee(ReasonSpace::LinkDown, code));
    t
}

/// IF_ADDR* for a link, TUNNEL_CHANGED (with the address and the link
/// state) for a tunnel.
fn address_trigger(
    kind: TriggerType,
    entry: &LinkEntry,
    address: &Address,
    now: Timestamp,
) -> Trigger {
    let mut t = if entry.is_tunnel() {
        link_trigger(TriggerType::TunnelChanged, entry, now)
    } else {
        trigger(kind, entry, now)
    };
    t.address = Some(address.clone());
    t
}

fn same_address(a: &Address, b: &Address) -> bool {
    a.address == b.address && a.prefix_len == b.prefix_len
}

/// Whether a known address changed enough to say so.
fn address_changed(old: &Address, new: &Address, mode: DiffMode) -> bool {
    let mut of = old.flags.clone();
    let mut nf = new.flags.clone();
    of.sort();
    nf.sort();
    if of != nf || old.scope != new.scope {
        return true;
    }
    match mode {
        DiffMode::Live => {
            old.valid_lifetime_s != new.valid_lifetime_s
                || old.preferred_lifetime_s != new.preferred_lifetime_s
        }
        DiffMode::Resync => {
            old.valid_lifetime_s.is_none() != new.valid_lifetime_s.is_none()
                || old.preferred_lifetime_s.is_none() != new.preferred_lifetime_s.is_none()
        }
    }
}

/// Why a link that was up is not up any more.
fn down_reason(new: &LinkState) -> u32 {
    if new.admin_up {
        link_down_reason::PACKET_TIMEOUT
    } else {
        link_down_reason::EXPLICIT_DISCONNECT
    }
}

/// The triggers that take a subscriber who knew `old` to `new`.
pub fn diff(old: &LinkTable, new: &LinkTable, now: Timestamp, mode: DiffMode) -> Vec<Trigger> {
    let mut out = Vec::new();
    let mut removed = Vec::new();
    let indexes: std::collections::BTreeSet<u32> =
        old.links.keys().chain(new.links.keys()).copied().collect();
    for index in indexes {
        match (old.links.get(&index), new.links.get(&index)) {
            (None, Some(n)) => {
                if n.is_tunnel() {
                    out.push(link_trigger(TriggerType::TunnelAdded, n, now));
                } else {
                    out.push(link_trigger(TriggerType::IfAdded, n, now));
                }
                for a in &n.addresses {
                    out.push(address_trigger(TriggerType::IfAddrAdded, n, a, now));
                }
                if !n.is_tunnel() && n.state.is_up() {
                    out.push(link_trigger(TriggerType::LinkUp, n, now));
                }
            }
            (Some(o), None) => {
                if !o.is_tunnel() && o.state.is_up() {
                    out.push(link_down(o, now, link_down_reason::EXPLICIT_DISCONNECT));
                }
                for a in &o.addresses {
                    out.push(address_trigger(TriggerType::IfAddrRemoved, o, a, now));
                }
                removed.push(o);
            }
            (Some(o), Some(n)) => link_changes(o, n, now, mode, &mut out),
            (None, None) => {}
        }
    }
    route_changes(old, new, now, &mut out);
    for o in removed {
        let kind = if o.is_tunnel() {
            TriggerType::TunnelRemoved
        } else {
            TriggerType::IfRemoved
        };
        out.push(link_trigger(kind, o, now));
    }
    out
}

fn link_changes(
    o: &LinkEntry,
    n: &LinkEntry,
    now: Timestamp,
    mode: DiffMode,
    out: &mut Vec<Trigger>,
) {
    let tunnel = n.is_tunnel();
    let (was_up, is_up) = (o.state.is_up(), n.state.is_up());
    if tunnel {
        if o.state != n.state || o.interface != n.interface {
            out.push(link_trigger(TriggerType::TunnelChanged, n, now));
        }
    } else if was_up && !is_up {
        out.push(link_down(n, now, down_reason(&n.state)));
    }
    for a in &o.addresses {
        if !n.addresses.iter().any(|b| same_address(a, b)) {
            // Removed addresses name the interface as it was.
            out.push(address_trigger(TriggerType::IfAddrRemoved, o, a, now));
        }
    }
    for b in &n.addresses {
        match o.addresses.iter().find(|a| same_address(a, b)) {
            Some(a) if address_changed(a, b, mode) => {
                out.push(address_trigger(TriggerType::IfAddrChanged, n, b, now));
            }
            Some(_) => {}
            None => out.push(address_trigger(TriggerType::IfAddrAdded, n, b, now)),
        }
    }
    if !tunnel && !was_up && is_up {
        out.push(link_trigger(TriggerType::LinkUp, n, now));
    }
}

fn route_trigger(
    kind: TriggerType,
    r: &DefaultRouteEntry,
    table: &LinkTable,
    now: Timestamp,
) -> Trigger {
    let mut t = Trigger::new(Source::Rtnetlink, kind);
    t.observed_at = now;
    t.interface = table.links.get(&r.oif).map(|l| l.interface.clone());
    t.detail = Some(Detail::DefaultRoute(r.route.clone()));
    t
}

fn route_changes(old: &LinkTable, new: &LinkTable, now: Timestamp, out: &mut Vec<Trigger>) {
    for r in &old.default_routes {
        if !new.default_routes.contains(r) {
            out.push(route_trigger(TriggerType::DefaultRouteRemoved, r, old, now));
        }
    }
    for r in &new.default_routes {
        if !old.default_routes.contains(r) {
            out.push(route_trigger(TriggerType::DefaultRouteAdded, r, new, now));
        }
    }
}

/// The RESYNC marker that opens a batch after a (re-)dump: `cause` is
/// "start" or "overrun"; counts are those of the fresh table.
pub fn resync_marker(cause: &str, table: &LinkTable, now: Timestamp) -> Trigger {
    let mut t = Trigger::new(Source::Rtnetlink, TriggerType::Resync);
    t.observed_at = now;
    t.detail = Some(Detail::Resync(Resync {
        cause: cause.to_owned(),
        links: u32::try_from(table.links.len()).unwrap_or(u32::MAX),
        addresses: u32::try_from(table.address_count()).unwrap_or(u32::MAX),
    }));
    t
}

/// The batch a resync sends: the marker first, then what changed while
/// the source was blind.
pub fn resync_triggers(
    cause: &str,
    old: &LinkTable,
    new: &LinkTable,
    now: Timestamp,
) -> Vec<Trigger> {
    let mut out = vec![resync_marker(cause, new, now)];
    out.extend(diff(old, new, now, DiffMode::Resync));
    out
}
