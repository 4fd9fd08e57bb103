//! Decoding of rtnetlink messages into the few facts the link table keeps.
//!
//! The codec is netlink-packet-route's, used attribute by attribute: only the
//! attributes the table needs are parsed (name, MTU, hardware address,
//! carrier, operstate, `IFLA_INFO_KIND`; local address, flags, lifetimes;
//! table, output interface, gateway, metric). An attribute we do not need is
//! never decoded, so a kernel newer than the codec (statistics, link-info
//! data of a new device kind) cannot make a message unreadable. A message
//! whose header or needed attributes are broken is a [`MalformedMessage`]:
//! the caller counts and logs it and goes on. Nothing here panics on kernel
//! input, and nothing here does I/O.

use std::net::IpAddr;

use netlink_packet_core::{
    NLM_F_REPLACE, NlaBuffer, NlasIterator, Parseable, ParseableParametrized, parse_string,
};
use netlink_packet_route::{
    address::{AddressAttribute, AddressHeader},
    link::{LinkAttribute, LinkHeader, State},
    route::{RouteAddress, RouteAttribute, RouteHeader, RouteLwEnCapType, RouteType, RouteVia},
};

use crate::{
    links::DefaultRouteEntry,
    model::{Address, AddressFlag, DefaultRoute, OperState},
};

// Message types (linux/rtnetlink.h).
pub(crate) const RTM_NEWLINK: u16 = 16;
pub(crate) const RTM_DELLINK: u16 = 17;
pub(crate) const RTM_NEWADDR: u16 = 20;
pub(crate) const RTM_DELADDR: u16 = 21;
pub(crate) const RTM_NEWROUTE: u16 = 24;
pub(crate) const RTM_DELROUTE: u16 = 25;

const AF_UNSPEC: u8 = 0;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

const LINK_HEADER_LEN: usize = 16; // struct ifinfomsg
const ADDRESS_HEADER_LEN: usize = 8; // struct ifaddrmsg
const ROUTE_HEADER_LEN: usize = 12; // struct rtmsg

// Link attributes (linux/if_link.h).
const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_OPERSTATE: u16 = 16;
const IFLA_LINKINFO: u16 = 18;
const IFLA_CARRIER: u16 = 33;
const IFLA_INFO_KIND: u16 = 1;

// Address attributes (linux/if_addr.h).
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_CACHEINFO: u16 = 6;
const IFA_FLAGS: u16 = 8;
/// `ifa_cacheinfo` lifetime meaning "forever".
const INFINITY_LIFE_TIME: u32 = u32::MAX;

// Route attributes and flags (linux/rtnetlink.h).
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_PRIORITY: u16 = 6;
const RTA_MULTIPATH: u16 = 9;
const RTA_TABLE: u16 = 15;
const RTA_VIA: u16 = 18;
const RTM_F_CLONED: u32 = 0x200;

/// IFA_F_* bits and the model's names for them (linux/if_addr.h).
const ADDRESS_FLAGS: &[(u32, AddressFlag)] = &[
    (0x01, AddressFlag::Secondary),
    (0x02, AddressFlag::NoDad),
    (0x04, AddressFlag::Optimistic),
    (0x08, AddressFlag::DadFailed),
    (0x10, AddressFlag::HomeAddress),
    (0x20, AddressFlag::Deprecated),
    (0x40, AddressFlag::Tentative),
    (0x80, AddressFlag::Permanent),
    (0x100, AddressFlag::ManageTempAddr),
    (0x200, AddressFlag::NoPrefixRoute),
    (0x400, AddressFlag::McAutoJoin),
    (0x800, AddressFlag::StablePrivacy),
];

/// One rtnetlink message, reduced to what the link table keeps.
#[derive(Debug, Clone, PartialEq)]
pub enum RtnlEvent {
    /// RTM_NEWLINK: a link appeared or changed (a full or partial view).
    NewLink(LinkUpdate),
    /// RTM_DELLINK: the link is gone (deleted, or moved to another netns).
    DelLink {
        index: u32,
    },
    NewAddress {
        index: u32,
        address: Address,
    },
    DelAddress {
        index: u32,
        address: Address,
    },
    /// RTM_NEWROUTE for a default route; `replace` when the kernel says it
    /// replaced the route with the same table, family and metric.
    NewDefaultRoute {
        entry: DefaultRouteEntry,
        replace: bool,
    },
    DelDefaultRoute(DefaultRouteEntry),
}

/// What an RTM_NEWLINK says about a link. Attributes the message did not
/// carry are `None`: wireless-extension events, for one, carry only the
/// name and flags, and must not erase the rest.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LinkUpdate {
    pub index: u32,
    /// ARPHRD_* link-layer type.
    pub arphrd: u16,
    /// IFF_* flags.
    pub flags: u32,
    pub name: Option<String>,
    pub mtu: Option<u32>,
    pub mac: Option<Vec<u8>>,
    pub carrier: Option<bool>,
    pub oper_state: Option<OperState>,
    /// IFLA_INFO_KIND: "veth", "wireguard", ...; `None` for hardware.
    pub info_kind: Option<String>,
}

/// A message that could not be read, and what was wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}: {problem}")]
pub struct MalformedMessage {
    /// RTM_NEWLINK, ...
    pub message: &'static str,
    pub problem: String,
}

/// The name of an rtnetlink message type, for logs.
pub fn message_name(message_type: u16) -> &'static str {
    match message_type {
        RTM_NEWLINK => "RTM_NEWLINK",
        RTM_DELLINK => "RTM_DELLINK",
        RTM_NEWADDR => "RTM_NEWADDR",
        RTM_DELADDR => "RTM_DELADDR",
        RTM_NEWROUTE => "RTM_NEWROUTE",
        RTM_DELROUTE => "RTM_DELROUTE",
        _ => "rtnetlink message",
    }
}

/// Decodes one rtnetlink message (the payload after the netlink header).
/// `Ok(None)` for messages the table does not track: other types, bridge
/// port notifications (AF_BRIDGE), addresses of other families, routes that
/// are not unicast default routes.
pub fn decode(
    message_type: u16,
    nl_flags: u16,
    payload: &[u8],
) -> Result<Option<RtnlEvent>, MalformedMessage> {
    let message = message_name(message_type);
    let bad = |problem: String| MalformedMessage { message, problem };
    match message_type {
        RTM_NEWLINK => Ok(decode_link(payload).map_err(bad)?.map(RtnlEvent::NewLink)),
        RTM_DELLINK => Ok(decode_link(payload)
            .map_err(bad)?
            .map(|l| RtnlEvent::DelLink { index: l.index })),
        RTM_NEWADDR => Ok(decode_address(payload)
            .map_err(bad)?
            .map(|(index, address)| RtnlEvent::NewAddress { index, address })),
        RTM_DELADDR => Ok(decode_address(payload)
            .map_err(bad)?
            .map(|(index, address)| RtnlEvent::DelAddress { index, address })),
        RTM_NEWROUTE => {
            Ok(decode_route(payload)
                .map_err(bad)?
                .map(|entry| RtnlEvent::NewDefaultRoute {
                    entry,
                    replace: nl_flags & NLM_F_REPLACE != 0,
                }))
        }
        RTM_DELROUTE => Ok(decode_route(payload)
            .map_err(bad)?
            .map(RtnlEvent::DelDefaultRoute)),
        _ => Ok(None),
    }
}

/// The attributes after a fixed header, checked for length.
fn attributes(payload: &[u8], header_len: usize) -> Result<&[u8], String> {
    payload.get(header_len..).ok_or_else(|| {
        format!(
            "{} bytes, shorter than its {header_len}-byte header",
            payload.len()
        )
    })
}

fn decode_link(payload: &[u8]) -> Result<Option<LinkUpdate>, String> {
    let header = LinkHeader::parse(payload).map_err(|e| format!("header: {e}"))?;
    let attrs = attributes(payload, LINK_HEADER_LEN)?;
    let family = header.interface_family;
    if u8::from(family) != AF_UNSPEC {
        // AF_BRIDGE: a bridge port's state, not the device's existence.
        return Ok(None);
    }
    if header.index == 0 {
        return Err("interface index 0".into());
    }
    let mut update = LinkUpdate {
        index: header.index,
        arphrd: u16::from(header.link_layer_type),
        flags: header.flags.bits(),
        ..LinkUpdate::default()
    };
    for nla in NlasIterator::new(attrs) {
        let nla = nla.map_err(|e| format!("attributes: {e}"))?;
        let kind = nla.kind();
        match kind {
            IFLA_ADDRESS | IFLA_IFNAME | IFLA_MTU | IFLA_OPERSTATE | IFLA_CARRIER => {
                let attr = LinkAttribute::parse_with_param(&nla, family)
                    .map_err(|e| format!("attribute {kind}: {e}"))?;
                match attr {
                    LinkAttribute::Address(mac) => update.mac = Some(mac),
                    LinkAttribute::IfName(name) => update.name = Some(name),
                    LinkAttribute::Mtu(mtu) => update.mtu = Some(mtu),
                    LinkAttribute::OperState(state) => {
                        update.oper_state = Some(oper_state(state));
                    }
                    LinkAttribute::Carrier(c) => update.carrier = Some(c != 0),
                    _ => {}
                }
            }
            IFLA_LINKINFO => update.info_kind = info_kind(nla.value())?,
            _ => {}
        }
    }
    Ok(Some(update))
}

/// IFLA_INFO_KIND from a nested IFLA_LINKINFO, read directly so that
/// IFLA_INFO_DATA of any kind never needs to be understood.
fn info_kind(linkinfo: &[u8]) -> Result<Option<String>, String> {
    for nla in NlasIterator::new(linkinfo) {
        let nla = nla.map_err(|e| format!("IFLA_LINKINFO: {e}"))?;
        if nla.kind() == IFLA_INFO_KIND {
            let kind = parse_string(nla.value()).map_err(|e| format!("IFLA_INFO_KIND: {e}"))?;
            return Ok(Some(kind));
        }
    }
    Ok(None)
}

fn oper_state(state: State) -> OperState {
    match state {
        State::NotPresent => OperState::NotPresent,
        State::Down => OperState::Down,
        State::LowerLayerDown => OperState::LowerLayerDown,
        State::Testing => OperState::Testing,
        State::Dormant => OperState::Dormant,
        State::Up => OperState::Up,
        _ => OperState::Unknown,
    }
}

fn decode_address(payload: &[u8]) -> Result<Option<(u32, Address)>, String> {
    let header = AddressHeader::parse(payload).map_err(|e| format!("header: {e}"))?;
    let attrs = attributes(payload, ADDRESS_HEADER_LEN)?;
    let max_prefix = match u8::from(header.family) {
        AF_INET => 32,
        AF_INET6 => 128,
        _ => return Ok(None),
    };
    if header.index == 0 {
        return Err("interface index 0".into());
    }
    if header.prefix_len > max_prefix {
        return Err(format!(
            "prefix length {} exceeds {max_prefix}",
            header.prefix_len
        ));
    }
    let mut local = None;
    let mut peer = None;
    let mut flags = u32::from(header.flags.bits());
    let mut lifetimes = (None, None);
    for nla in NlasIterator::new(attrs) {
        let nla = nla.map_err(|e| format!("attributes: {e}"))?;
        let kind = nla.kind();
        if !matches!(kind, IFA_ADDRESS | IFA_LOCAL | IFA_CACHEINFO | IFA_FLAGS) {
            continue;
        }
        match AddressAttribute::parse(&nla).map_err(|e| format!("attribute {kind}: {e}"))? {
            AddressAttribute::Local(ip) => local = Some(ip),
            AddressAttribute::Address(ip) => peer = Some(ip),
            AddressAttribute::Flags(f) => flags = f.bits(),
            AddressAttribute::CacheInfo(ci) => {
                let life = |s: u32| (s != INFINITY_LIFE_TIME).then_some(s);
                lifetimes = (life(ci.ifa_valid), life(ci.ifa_preferred));
            }
            _ => {}
        }
    }
    // IPv4 puts the local address in IFA_LOCAL and the peer (or the same
    // address) in IFA_ADDRESS; IPv6 has IFA_LOCAL only with a peer.
    let address = local
        .or(peer)
        .ok_or_else(|| "neither IFA_LOCAL nor IFA_ADDRESS".to_owned())?;
    if address.is_ipv4() != (max_prefix == 32) {
        return Err(format!("{address} in a message of the other family"));
    }
    Ok(Some((
        header.index,
        Address {
            address,
            prefix_len: header.prefix_len,
            flags: address_flags(flags),
            valid_lifetime_s: lifetimes.0,
            preferred_lifetime_s: lifetimes.1,
            scope: u8::from(header.scope),
        },
    )))
}

/// The model's flags for IFA_F_* bits, in bit order (unknown bits dropped).
pub fn address_flags(bits: u32) -> Vec<AddressFlag> {
    ADDRESS_FLAGS
        .iter()
        .filter(|(bit, _)| bits & bit != 0)
        .map(|(_, f)| *f)
        .collect()
}

fn route_ip(a: RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(ip) => Some(IpAddr::V4(ip)),
        RouteAddress::Inet6(ip) => Some(IpAddr::V6(ip)),
        _ => None,
    }
}

/// A unicast default route (destination 0/0 or ::/0, no source prefix, not
/// a cached clone), any table; `None` for every other route.
fn decode_route(payload: &[u8]) -> Result<Option<DefaultRouteEntry>, String> {
    let header = RouteHeader::parse(payload).map_err(|e| format!("header: {e}"))?;
    let attrs = attributes(payload, ROUTE_HEADER_LEN)?;
    let ipv6 = match u8::from(header.address_family) {
        AF_INET => false,
        AF_INET6 => true,
        _ => return Ok(None),
    };
    if header.destination_prefix_length != 0
        || header.source_prefix_length != 0
        || header.kind != RouteType::Unicast
        || header.flags.bits() & RTM_F_CLONED != 0
    {
        return Ok(None);
    }
    let family = header.address_family;
    let mut table = u32::from(header.table);
    let mut oif = 0;
    let mut gateway = None;
    let mut metric = 0;
    let mut multipath = false;
    for nla in NlasIterator::new(attrs) {
        let nla: NlaBuffer<&[u8]> = nla.map_err(|e| format!("attributes: {e}"))?;
        let kind = nla.kind();
        match kind {
            // Several next hops: the route names no single interface. (A
            // route using a nexthop object, RTA_NH_ID, carries RTA_OIF too
            // in the kernel's default compat mode, else oif stays 0.)
            RTA_MULTIPATH => multipath = true,
            RTA_TABLE | RTA_OIF | RTA_GATEWAY | RTA_VIA | RTA_PRIORITY => {
                let attr = RouteAttribute::parse_with_param(
                    &nla,
                    (family, header.kind, RouteLwEnCapType::None),
                )
                .map_err(|e| format!("attribute {kind}: {e}"))?;
                match attr {
                    RouteAttribute::Table(t) => table = t,
                    RouteAttribute::Oif(i) => oif = i,
                    RouteAttribute::Gateway(a) => gateway = route_ip(a),
                    RouteAttribute::Via(RouteVia::Inet(ip)) => gateway = Some(IpAddr::V4(ip)),
                    RouteAttribute::Via(RouteVia::Inet6(ip)) => gateway = Some(IpAddr::V6(ip)),
                    RouteAttribute::Priority(p) => metric = p,
                    _ => {}
                }
            }
            _ => {}
        }
    }
    if multipath {
        oif = 0;
        gateway = None;
    }
    Ok(Some(DefaultRouteEntry {
        oif,
        route: DefaultRoute {
            gateway,
            ipv6,
            metric,
            table,
        },
    }))
}
