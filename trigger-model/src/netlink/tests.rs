//! Unit tests of decoding, table application and diffing, on messages built
//! with netlink-packet-route's own emitters and on constructed tables.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netlink_packet_core::{Emitable, NLM_F_REPLACE};
use netlink_packet_route::{
    AddressFamily,
    address::{AddressAttribute, AddressFlags, AddressMessage, CacheInfo},
    link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkLayerType, LinkMessage, State},
    route::{RouteAddress, RouteAttribute, RouteMessage, RouteType},
};

use super::{decode::*, *};
use crate::{
    links::{DefaultRouteEntry, LinkEntry},
    model::{
        Address, AddressFlag, DefaultRoute, Detail, Interface, InterfaceKind, LinkState, LinkType,
        OperState, ReasonSpace, Source, TriggerType, link_down_reason,
    },
};

const T0: Timestamp = Timestamp(1_000);
const T1: Timestamp = Timestamp(2_000);

fn emit(m: &impl Emitable) -> Vec<u8> {
    let mut buf = vec![0; m.buffer_len()];
    m.emit(&mut buf);
    buf
}

fn link_msg(index: u32, name: &str, flags: LinkFlags, kind: Option<InfoKind>) -> LinkMessage {
    let mut m = LinkMessage::default();
    m.header.index = index;
    m.header.link_layer_type = LinkLayerType::Ether;
    m.header.flags = flags;
    m.attributes.push(LinkAttribute::IfName(name.into()));
    m.attributes.push(LinkAttribute::Mtu(1500));
    m.attributes
        .push(LinkAttribute::Address(vec![0x02, 0, 0, 0, 0, index as u8]));
    let up = flags.contains(LinkFlags::LowerUp);
    m.attributes.push(LinkAttribute::Carrier(u8::from(up)));
    m.attributes.push(LinkAttribute::OperState(if up {
        State::Up
    } else {
        State::Down
    }));
    if let Some(k) = kind {
        m.attributes
            .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(k)]));
    }
    m
}

fn v4(a: [u8; 4]) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(a))
}

fn v6(s: &str) -> IpAddr {
    IpAddr::V6(s.parse::<Ipv6Addr>().unwrap())
}

fn addr(ip: IpAddr, prefix_len: u8) -> Address {
    Address {
        address: ip,
        prefix_len,
        flags: vec![AddressFlag::Permanent],
        valid_lifetime_s: None,
        preferred_lifetime_s: None,
        scope: 0,
    }
}

fn up_state() -> LinkState {
    LinkState {
        admin_up: true,
        carrier: true,
        oper_state: Some(OperState::Up),
        mtu: 1500,
        mac: "02:00:00:00:00:01".into(),
    }
}

fn entry(index: u32, name: &str, kind: InterfaceKind, state: LinkState) -> LinkEntry {
    LinkEntry {
        interface: Interface {
            index,
            name: name.into(),
            kind: Some(kind),
            driver_kind: match kind {
                InterfaceKind::Tunnel => "wireguard".into(),
                InterfaceKind::Veth => "veth".into(),
                _ => String::new(),
            },
            link_type: link_type(kind),
        },
        state,
        addresses: Vec::new(),
        last_change: T0,
    }
}

fn table(entries: Vec<LinkEntry>) -> LinkTable {
    LinkTable {
        links: entries
            .into_iter()
            .map(|e| (e.interface.index, e))
            .collect(),
        default_routes: Vec::new(),
    }
}

fn kinds(ts: &[Trigger]) -> Vec<TriggerType> {
    ts.iter().map(|t| t.kind).collect()
}

fn v4_default(oif: u32, gw: [u8; 4]) -> DefaultRouteEntry {
    DefaultRouteEntry {
        oif,
        route: DefaultRoute {
            gateway: Some(v4(gw)),
            ipv6: false,
            metric: 0,
            table: 254,
        },
    }
}

// ---- decoding -------------------------------------------------------------

#[test]
fn newlink_decodes_name_state_and_kind() {
    let m = link_msg(
        7,
        "vA",
        LinkFlags::Up | LinkFlags::LowerUp | LinkFlags::Broadcast,
        Some(InfoKind::Veth),
    );
    let ev = decode(RTM_NEWLINK, 0, &emit(&m)).unwrap().unwrap();
    let RtnlEvent::NewLink(u) = ev else {
        panic!("{ev:?}")
    };
    assert_eq!(u.index, 7);
    assert_eq!(u.name.as_deref(), Some("vA"));
    assert_eq!(u.mtu, Some(1500));
    assert_eq!(u.mac, Some(vec![2, 0, 0, 0, 0, 7]));
    assert_eq!(u.carrier, Some(true));
    assert_eq!(u.oper_state, Some(OperState::Up));
    assert_eq!(u.info_kind.as_deref(), Some("veth"));
    assert_eq!(u.arphrd, 1);
    assert_eq!(
        decode(RTM_DELLINK, 0, &emit(&m)).unwrap(),
        Some(RtnlEvent::DelLink { index: 7 })
    );
}

#[test]
fn bridge_port_notifications_are_not_links() {
    let mut m = link_msg(3, "port0", LinkFlags::Up, None);
    m.header.interface_family = AddressFamily::Bridge;
    assert_eq!(decode(RTM_DELLINK, 0, &emit(&m)).unwrap(), None);
}

#[test]
fn attributes_the_table_does_not_need_are_never_parsed() {
    let mut bytes = emit(&link_msg(4, "eth0", LinkFlags::Up, None));
    // IFLA_STATS64 (23) with 3 bytes: the codec would reject it.
    bytes.extend_from_slice(&[7, 0, 23, 0, 1, 2, 3, 0]);
    let ev = decode(RTM_NEWLINK, 0, &bytes).unwrap().unwrap();
    assert!(matches!(ev, RtnlEvent::NewLink(u) if u.name.as_deref() == Some("eth0")));
}

#[test]
fn broken_messages_are_errors_naming_what_failed() {
    let bytes = emit(&link_msg(4, "eth0", LinkFlags::Up, None));
    let e = decode(RTM_NEWLINK, 0, &bytes[..10]).unwrap_err();
    assert_eq!(e.message, "RTM_NEWLINK");
    assert!(e.problem.contains("header"), "{e}");
    // IFLA_MTU (4) with 2 bytes.
    let mut bad = bytes.clone();
    bad.extend_from_slice(&[6, 0, 4, 0, 1, 2, 0, 0]);
    let e = decode(RTM_NEWLINK, 0, &bad).unwrap_err();
    assert!(e.problem.contains("attribute 4"), "{e}");
    // An attribute whose length runs past the end.
    let mut bad = bytes;
    bad.extend_from_slice(&[200, 0, 3, 0]);
    assert!(decode(RTM_NEWLINK, 0, &bad).is_err());
    // An address message without any address.
    let mut m = AddressMessage::default();
    m.header.family = AddressFamily::Inet;
    m.header.index = 2;
    let e = decode(RTM_NEWADDR, 0, &emit(&m)).unwrap_err();
    assert!(e.problem.contains("IFA_LOCAL"), "{e}");
}

#[test]
fn ipv4_address_uses_local_flags_and_forever_lifetimes() {
    let mut m = AddressMessage::default();
    m.header.family = AddressFamily::Inet;
    m.header.prefix_len = 24;
    m.header.index = 3;
    m.attributes
        .push(AddressAttribute::Address(v4([10, 9, 0, 254])));
    m.attributes
        .push(AddressAttribute::Local(v4([10, 9, 0, 1])));
    m.attributes.push(AddressAttribute::Flags(
        AddressFlags::Permanent | AddressFlags::Nodad,
    ));
    let mut ci = CacheInfo::default();
    ci.ifa_valid = u32::MAX;
    ci.ifa_preferred = u32::MAX;
    m.attributes.push(AddressAttribute::CacheInfo(ci));
    let ev = decode(RTM_NEWADDR, 0, &emit(&m)).unwrap().unwrap();
    let RtnlEvent::NewAddress { index, address } = ev else {
        panic!("{ev:?}")
    };
    assert_eq!(index, 3);
    assert_eq!(address.address, v4([10, 9, 0, 1]));
    assert_eq!(address.prefix_len, 24);
    assert_eq!(
        address.flags,
        vec![AddressFlag::NoDad, AddressFlag::Permanent]
    );
    assert_eq!(address.valid_lifetime_s, None);
    assert_eq!(address.preferred_lifetime_s, None);
}

#[test]
fn ipv6_address_flags_and_finite_lifetimes() {
    let mut m = AddressMessage::default();
    m.header.family = AddressFamily::Inet6;
    m.header.prefix_len = 64;
    m.header.index = 5;
    m.attributes.push(AddressAttribute::Address(v6("fd00::1")));
    m.attributes.push(AddressAttribute::Flags(
        AddressFlags::Tentative | AddressFlags::Dadfailed | AddressFlags::Deprecated,
    ));
    let mut ci = CacheInfo::default();
    ci.ifa_valid = 7200;
    ci.ifa_preferred = 0;
    m.attributes.push(AddressAttribute::CacheInfo(ci));
    let ev = decode(RTM_DELADDR, 0, &emit(&m)).unwrap().unwrap();
    let RtnlEvent::DelAddress { index: 5, address } = ev else {
        panic!("{ev:?}")
    };
    assert_eq!(address.address, v6("fd00::1"));
    assert_eq!(
        address.flags,
        vec![
            AddressFlag::DadFailed,
            AddressFlag::Deprecated,
            AddressFlag::Tentative
        ]
    );
    assert_eq!(address.valid_lifetime_s, Some(7200));
    assert_eq!(address.preferred_lifetime_s, Some(0));
}

fn route_msg(inet6: bool, dst_len: u8, kind: RouteType) -> RouteMessage {
    let mut m = RouteMessage::default();
    m.header.address_family = if inet6 {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    };
    m.header.destination_prefix_length = dst_len;
    m.header.kind = kind;
    m.header.table = 254;
    m
}

#[test]
fn default_routes_decode_and_others_are_ignored() {
    let mut m = route_msg(false, 0, RouteType::Unicast);
    m.attributes
        .push(RouteAttribute::Gateway(RouteAddress::Inet(Ipv4Addr::new(
            10, 9, 0, 254,
        ))));
    m.attributes.push(RouteAttribute::Oif(3));
    m.attributes.push(RouteAttribute::Priority(100));
    m.attributes.push(RouteAttribute::Table(1000));
    let ev = decode(RTM_NEWROUTE, NLM_F_REPLACE, &emit(&m))
        .unwrap()
        .unwrap();
    assert_eq!(
        ev,
        RtnlEvent::NewDefaultRoute {
            entry: DefaultRouteEntry {
                oif: 3,
                route: DefaultRoute {
                    gateway: Some(v4([10, 9, 0, 254])),
                    ipv6: false,
                    metric: 100,
                    table: 1000,
                },
            },
            replace: true,
        }
    );
    let mut m6 = route_msg(true, 0, RouteType::Unicast);
    m6.attributes
        .push(RouteAttribute::Gateway(RouteAddress::Inet6(
            "fe80::1".parse().unwrap(),
        )));
    m6.attributes.push(RouteAttribute::Oif(4));
    let ev = decode(RTM_DELROUTE, 0, &emit(&m6)).unwrap().unwrap();
    assert!(
        matches!(&ev, RtnlEvent::DelDefaultRoute(e) if e.oif == 4 && e.route.ipv6 && e.route.table == 254),
        "{ev:?}"
    );
    let mut not_default = route_msg(false, 24, RouteType::Unicast);
    not_default
        .attributes
        .push(RouteAttribute::Destination(RouteAddress::Inet(
            Ipv4Addr::new(10, 9, 0, 0),
        )));
    assert_eq!(decode(RTM_NEWROUTE, 0, &emit(&not_default)).unwrap(), None);
    let unreachable = route_msg(false, 0, RouteType::Unreachable);
    assert_eq!(decode(RTM_NEWROUTE, 0, &emit(&unreachable)).unwrap(), None);
}

#[test]
fn datagrams_split_into_messages_and_garbage_does_not_panic() {
    let payload = emit(&link_msg(2, "vB", LinkFlags::Up, None));
    let mut dgram = nlmsg(RTM_NEWLINK, 1, &payload);
    dgram.extend(nlmsg(RTM_NEWLINK, 2, &payload));
    let (msgs, err) = split_messages(&dgram);
    assert_eq!(err, None);
    assert_eq!(msgs.len(), 2);
    assert_eq!(msgs[1].seq, 2);
    assert_eq!(msgs[0].payload, &payload[..]);
    // A length field pointing past the end stops the walk with an error.
    let mut bad = dgram.clone();
    bad[0..4].copy_from_slice(&4000u32.to_ne_bytes());
    let (msgs, err) = split_messages(&bad);
    assert!(msgs.is_empty() && err.is_some());
    assert_eq!(error_code(&(-105i32).to_ne_bytes()), Some(-105));
    assert_eq!(error_code(&[1, 2]), None);
}

/// A netlink message: header (native endian) and payload, padded.
fn nlmsg(message_type: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
    let mut m = Vec::new();
    let len = (16 + payload.len()) as u32;
    m.extend_from_slice(&len.to_ne_bytes());
    m.extend_from_slice(&message_type.to_ne_bytes());
    m.extend_from_slice(&0u16.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(payload);
    while m.len() % 4 != 0 {
        m.push(0);
    }
    m
}

#[test]
fn a_broken_message_is_skipped_and_its_neighbours_still_count() {
    let good = emit(&link_msg(2, "vB", LinkFlags::Up, None));
    let mut dgram = nlmsg(RTM_NEWLINK, 1, &good);
    dgram.extend(nlmsg(RTM_NEWLINK, 2, &good[..6]));
    dgram.extend(nlmsg(RTM_DELLINK, 3, &good));
    let mut events = Vec::new();
    let read = read_datagram(&dgram, 0, false, &mut events);
    assert_eq!(events.len(), 2);
    assert_eq!(events[1], RtnlEvent::DelLink { index: 2 });
    assert_eq!(read.lost, None);
    assert_eq!(read.problems.len(), 1);
    assert!(
        read.problems[0].starts_with("RTM_NEWLINK: header"),
        "{:?}",
        read.problems
    );
}

#[test]
fn datagrams_not_from_the_kernel_are_ignored() {
    let good = emit(&link_msg(2, "vB", LinkFlags::Up, None));
    let mut events = Vec::new();
    let read = read_datagram(&nlmsg(RTM_DELLINK, 1, &good), 4242, false, &mut events);
    assert!(events.is_empty());
    assert_eq!(read.lost, None);
    assert!(
        read.problems[0].contains("port 4242"),
        "{:?}",
        read.problems
    );
}

#[test]
fn overrun_and_truncation_ask_for_a_resync() {
    let mut events = Vec::new();
    let read = read_datagram(&nlmsg(NLMSG_OVERRUN, 0, &[]), 0, false, &mut events);
    assert_eq!(read.lost, Some("overrun"));
    assert!(read.problems.is_empty());
    let good = emit(&link_msg(2, "vB", LinkFlags::Up, None));
    let read = read_datagram(&nlmsg(RTM_NEWLINK, 1, &good), 0, true, &mut events);
    assert_eq!(read.lost, Some("truncated"));
    assert!(events.is_empty());
    // Done, noop and error messages carry no state.
    let mut dgram = nlmsg(NLMSG_DONE, 1, &[0; 4]);
    dgram.extend(nlmsg(NLMSG_ERROR, 1, &(-1i32).to_ne_bytes()));
    dgram.extend(nlmsg(NLMSG_NOOP, 1, &[]));
    assert_eq!(
        read_datagram(&dgram, 0, false, &mut events),
        DatagramRead::default()
    );
    assert!(events.is_empty());
}

proptest::proptest! {
    #[test]
    fn decoding_arbitrary_bytes_never_panics(
        ty in 16u16..26,
        flags in proptest::prelude::any::<u16>(),
        bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
    ) {
        let _ = decode(ty, flags, &bytes);
        let _ = split_messages(&bytes);
    }
}

// ---- classification and sysfs --------------------------------------------

#[test]
fn interface_kinds() {
    let p = NoProbe;
    let c =
        |kind: Option<&str>, arphrd: u16, flags: u32| classify(kind, arphrd, flags, "x", 9, "", &p);
    assert_eq!(c(None, 772, 0x8), InterfaceKind::Loopback);
    for k in TUNNEL_KINDS {
        assert_eq!(c(Some(k), 1, 0), InterfaceKind::Tunnel, "{k}");
    }
    assert_eq!(c(None, 768, 0), InterfaceKind::Tunnel); // ARPHRD_TUNNEL
    assert_eq!(c(None, 823, 0), InterfaceKind::Tunnel); // ARPHRD_IP6GRE
    assert_eq!(c(Some("veth"), 1, 0), InterfaceKind::Veth);
    assert_eq!(c(Some("bridge"), 1, 0), InterfaceKind::Bridge);
    assert_eq!(c(Some("vlan"), 1, 0), InterfaceKind::Vlan);
    assert_eq!(c(Some("bond"), 1, 0), InterfaceKind::Bond);
    assert_eq!(c(Some("virt_wifi"), 1, 0), InterfaceKind::Wlan);
    assert_eq!(c(None, 519, 0), InterfaceKind::Wwan); // ARPHRD_RAWIP
    assert_eq!(c(None, 1, 0), InterfaceKind::Ethernet);
    assert_eq!(c(Some("macvlan"), 1, 0), InterfaceKind::Ethernet);
    assert_eq!(c(None, 512, 0), InterfaceKind::Other); // PPP
    assert_eq!(link_type(InterfaceKind::Ethernet), Some(LinkType::Ethernet));
    assert_eq!(link_type(InterfaceKind::Wlan), Some(LinkType::Ieee802_11));
    assert_eq!(link_type(InterfaceKind::Wwan), None);
    assert_eq!(format_mac(&[0xa6, 0x2c, 0, 1]), "a6:2c:00:01");
}

#[test]
fn sysfs_is_trusted_only_when_index_and_mac_match() {
    let dir = tempfile::tempdir().unwrap();
    let wlan = dir.path().join("wlan0");
    std::fs::create_dir(&wlan).unwrap();
    std::fs::write(wlan.join("ifindex"), "3\n").unwrap();
    std::fs::write(wlan.join("address"), "02:00:00:00:00:03\n").unwrap();
    std::fs::write(
        wlan.join("uevent"),
        "DEVTYPE=wlan\nINTERFACE=wlan0\nIFINDEX=3\n",
    )
    .unwrap();
    let wwan = dir.path().join("wwan0");
    std::fs::create_dir(&wwan).unwrap();
    std::fs::write(wwan.join("ifindex"), "4\n").unwrap();
    std::fs::write(wwan.join("address"), "02:00:00:00:00:04\n").unwrap();
    std::fs::write(wwan.join("uevent"), "DEVTYPE=wwan\n").unwrap();
    let p = SysfsProbe {
        root: dir.path().to_owned(),
    };
    assert_eq!(
        p.devtype("wlan0", 3, "02:00:00:00:00:03"),
        Some(DevType::Wlan)
    );
    assert_eq!(p.devtype("wwan0", 4, ""), Some(DevType::Wwan));
    // Same name in another namespace: other index, or other MAC.
    assert_eq!(p.devtype("wlan0", 5, "02:00:00:00:00:03"), None);
    assert_eq!(p.devtype("wlan0", 3, "02:00:00:00:00:99"), None);
    assert_eq!(p.devtype("eth9", 3, ""), None);
    assert_eq!(p.devtype("../wlan0", 3, ""), None);
    assert_eq!(
        classify(None, 1, 0, "wlan0", 3, "02:00:00:00:00:03", &p),
        InterfaceKind::Wlan
    );
    assert_eq!(
        classify(None, 1, 0, "wlan0", 5, "", &p),
        InterfaceKind::Ethernet
    );
}

// ---- applying events ------------------------------------------------------

fn new_link(index: u32, name: &str, flags: LinkFlags, kind: Option<InfoKind>) -> RtnlEvent {
    decode(RTM_NEWLINK, 0, &emit(&link_msg(index, name, flags, kind)))
        .unwrap()
        .unwrap()
}

#[test]
fn newlink_creates_updates_and_repeats_nothing() {
    let mut t = LinkTable::default();
    let ev = new_link(3, "vA", LinkFlags::Broadcast, Some(InfoKind::Veth));
    assert_eq!(apply(&mut t, &ev, T0, &NoProbe), Applied::Changed);
    let e = &t.links[&3];
    assert_eq!(e.interface.name, "vA");
    assert_eq!(e.interface.kind, Some(InterfaceKind::Veth));
    assert_eq!(e.interface.driver_kind, "veth");
    assert!(!e.state.admin_up && !e.state.carrier);
    assert_eq!(e.state.mac, "02:00:00:00:00:03");
    assert_eq!(apply(&mut t, &ev, T1, &NoProbe), Applied::Unchanged);
    assert_eq!(t.links[&3].last_change, T0);
    let up = new_link(
        3,
        "vA",
        LinkFlags::Up | LinkFlags::LowerUp,
        Some(InfoKind::Veth),
    );
    assert_eq!(apply(&mut t, &up, T1, &NoProbe), Applied::Changed);
    assert!(t.links[&3].state.is_up());
    assert_eq!(t.links[&3].last_change, T1);
}

#[test]
fn partial_newlink_keeps_what_it_does_not_carry() {
    let mut t = LinkTable::default();
    apply(
        &mut t,
        &new_link(
            3,
            "wg0",
            LinkFlags::Up | LinkFlags::LowerUp,
            Some(InfoKind::Wireguard),
        ),
        T0,
        &NoProbe,
    );
    let partial = RtnlEvent::NewLink(LinkUpdate {
        index: 3,
        arphrd: 0xfffe,
        flags: 0x1 | 0x1_0000,
        ..LinkUpdate::default()
    });
    assert_eq!(apply(&mut t, &partial, T1, &NoProbe), Applied::Unchanged);
    let e = &t.links[&3];
    assert_eq!(e.interface.name, "wg0");
    assert_eq!(e.interface.kind, Some(InterfaceKind::Tunnel));
    assert_eq!(e.state.mtu, 1500);
}

#[test]
fn addresses_are_added_replaced_removed_and_need_a_link() {
    let mut t = table(vec![entry(3, "vA", InterfaceKind::Veth, up_state())]);
    let a = addr(v4([10, 9, 0, 1]), 24);
    let add = RtnlEvent::NewAddress {
        index: 3,
        address: a.clone(),
    };
    assert_eq!(apply(&mut t, &add, T1, &NoProbe), Applied::Changed);
    assert_eq!(t.links[&3].last_change, T1);
    assert_eq!(apply(&mut t, &add, T1, &NoProbe), Applied::Unchanged);
    let mut a2 = a.clone();
    a2.flags.push(AddressFlag::Deprecated);
    let change = RtnlEvent::NewAddress {
        index: 3,
        address: a2.clone(),
    };
    assert_eq!(apply(&mut t, &change, T1, &NoProbe), Applied::Changed);
    assert_eq!(t.links[&3].addresses, vec![a2]);
    let del = RtnlEvent::DelAddress {
        index: 3,
        address: a.clone(),
    };
    assert_eq!(apply(&mut t, &del, T1, &NoProbe), Applied::Changed);
    assert!(t.links[&3].addresses.is_empty());
    assert_eq!(apply(&mut t, &del, T1, &NoProbe), Applied::Unchanged);
    let stray = RtnlEvent::NewAddress {
        index: 9,
        address: a,
    };
    assert_eq!(apply(&mut t, &stray, T1, &NoProbe), Applied::UnknownLink(9));
}

#[test]
fn admin_down_and_removal_drop_ipv4_default_routes_the_kernel_flushes_silently() {
    let mut t = table(vec![
        entry(3, "vA", InterfaceKind::Veth, up_state()),
        entry(4, "vC", InterfaceKind::Veth, up_state()),
    ]);
    let mut r6 = v4_default(3, [0, 0, 0, 0]);
    r6.route.ipv6 = true;
    r6.route.gateway = Some(v6("fe80::1"));
    t.default_routes = vec![
        v4_default(3, [10, 9, 0, 254]),
        r6.clone(),
        v4_default(4, [10, 8, 0, 1]),
    ];
    let down = new_link(3, "vA", LinkFlags::Broadcast, Some(InfoKind::Veth));
    assert_eq!(apply(&mut t, &down, T1, &NoProbe), Applied::Changed);
    // IPv6 sends its own RTM_DELROUTE; IPv4 does not.
    assert_eq!(t.default_routes, vec![r6, v4_default(4, [10, 8, 0, 1])]);
    assert_eq!(
        apply(&mut t, &RtnlEvent::DelLink { index: 3 }, T1, &NoProbe),
        Applied::Changed
    );
    assert_eq!(t.default_routes, vec![v4_default(4, [10, 8, 0, 1])]);
    assert!(!t.links.contains_key(&3));
}

#[test]
fn losing_the_last_ipv4_address_drops_the_links_ipv4_default_routes() {
    let mut e = entry(3, "vA", InterfaceKind::Veth, up_state());
    e.addresses = vec![
        addr(v4([10, 9, 0, 1]), 24),
        addr(v4([10, 7, 0, 1]), 24),
        addr(v6("fd00::1"), 64),
    ];
    let mut t = table(vec![e]);
    let mut r6 = v4_default(3, [0, 0, 0, 0]);
    r6.route.ipv6 = true;
    r6.route.gateway = Some(v6("fd00::fe"));
    t.default_routes = vec![v4_default(3, [10, 9, 0, 254]), r6.clone()];
    let del = |a: Address| RtnlEvent::DelAddress {
        index: 3,
        address: a,
    };
    apply(&mut t, &del(addr(v4([10, 7, 0, 1]), 24)), T1, &NoProbe);
    assert_eq!(t.default_routes.len(), 2, "another IPv4 address is left");
    apply(&mut t, &del(addr(v4([10, 9, 0, 1]), 24)), T1, &NoProbe);
    assert_eq!(t.default_routes, vec![r6]);
}

#[test]
fn default_route_replace_and_delete() {
    let mut t = LinkTable::default();
    let a = v4_default(3, [10, 9, 0, 254]);
    let b = v4_default(4, [10, 8, 0, 1]);
    let add = |e: &DefaultRouteEntry, replace| RtnlEvent::NewDefaultRoute {
        entry: e.clone(),
        replace,
    };
    assert_eq!(
        apply(&mut t, &add(&a, false), T0, &NoProbe),
        Applied::Changed
    );
    assert_eq!(
        apply(&mut t, &add(&a, false), T0, &NoProbe),
        Applied::Unchanged
    );
    assert_eq!(
        apply(&mut t, &add(&b, true), T0, &NoProbe),
        Applied::Changed
    );
    assert_eq!(t.default_routes, vec![b.clone()]);
    assert_eq!(
        apply(&mut t, &RtnlEvent::DelDefaultRoute(b), T0, &NoProbe),
        Applied::Changed
    );
    assert!(t.default_routes.is_empty());
}

// ---- diffing --------------------------------------------------------------

#[test]
fn identical_tables_give_no_triggers() {
    let mut t = table(vec![entry(3, "vA", InterfaceKind::Veth, up_state())]);
    t.links
        .get_mut(&3)
        .unwrap()
        .addresses
        .push(addr(v4([10, 9, 0, 1]), 24));
    t.default_routes.push(v4_default(3, [10, 9, 0, 254]));
    assert!(diff(&t, &t.clone(), T1, DiffMode::Live).is_empty());
}

#[test]
fn new_link_is_if_added_with_its_addresses_then_link_up() {
    let old = LinkTable::default();
    let mut n = entry(3, "vA", InterfaceKind::Veth, up_state());
    n.addresses.push(addr(v4([10, 9, 0, 1]), 24));
    let new = table(vec![
        n,
        entry(4, "vB", InterfaceKind::Veth, LinkState::default()),
    ]);
    let ts = diff(&old, &new, T1, DiffMode::Resync);
    assert_eq!(
        kinds(&ts),
        vec![
            TriggerType::IfAdded,
            TriggerType::IfAddrAdded,
            TriggerType::LinkUp,
            TriggerType::IfAdded
        ]
    );
    let t = &ts[0];
    assert_eq!(t.source, Source::Rtnetlink);
    assert_eq!(t.observed_at, T1);
    let i = t.interface.as_ref().unwrap();
    assert_eq!(
        (i.index, i.name.as_str(), i.kind),
        (3, "vA", Some(InterfaceKind::Veth))
    );
    assert_eq!(t.detail, Some(Detail::LinkState(up_state())));
    assert_eq!(ts[1].address, Some(addr(v4([10, 9, 0, 1]), 24)));
    assert_eq!(ts[3].interface_name(), Some("vB"));
    for t in &ts {
        t.check_complete("t").unwrap();
    }
}

#[test]
fn removed_up_link_goes_down_loses_addresses_and_routes_then_is_removed() {
    let mut o = entry(3, "vA", InterfaceKind::Veth, up_state());
    o.addresses.push(addr(v4([10, 9, 0, 1]), 24));
    o.addresses.push(addr(v6("fd00::1"), 64));
    let mut old = table(vec![o]);
    old.default_routes.push(v4_default(3, [10, 9, 0, 254]));
    let ts = diff(&old, &LinkTable::default(), T1, DiffMode::Live);
    assert_eq!(
        kinds(&ts),
        vec![
            TriggerType::LinkDown,
            TriggerType::IfAddrRemoved,
            TriggerType::IfAddrRemoved,
            TriggerType::DefaultRouteRemoved,
            TriggerType::IfRemoved
        ]
    );
    let r = ts[0].reason.as_ref().unwrap();
    assert_eq!(r.space, ReasonSpace::LinkDown);
    assert_eq!(r.code, link_down_reason::EXPLICIT_DISCONNECT);
    assert_eq!(ts[3].interface_name(), Some("vA"));
    for t in &ts {
        t.check_complete("t").unwrap();
    }
}

#[test]
fn link_down_reason_tells_admin_down_from_carrier_loss() {
    let old = table(vec![entry(3, "eth0", InterfaceKind::Ethernet, up_state())]);
    let mut admin_down = old.clone();
    let s = &mut admin_down.links.get_mut(&3).unwrap().state;
    s.admin_up = false;
    s.carrier = false;
    s.oper_state = Some(OperState::Down);
    let ts = diff(&old, &admin_down, T1, DiffMode::Live);
    assert_eq!(kinds(&ts), vec![TriggerType::LinkDown]);
    assert_eq!(
        ts[0].reason.as_ref().unwrap().code,
        link_down_reason::EXPLICIT_DISCONNECT
    );
    assert_eq!(ts[0].reason.as_ref().unwrap().name, "explicit-disconnect");

    let mut no_carrier = old.clone();
    let s = &mut no_carrier.links.get_mut(&3).unwrap().state;
    s.carrier = false;
    s.oper_state = Some(OperState::LowerLayerDown);
    let ts = diff(&old, &no_carrier, T1, DiffMode::Live);
    assert_eq!(kinds(&ts), vec![TriggerType::LinkDown]);
    assert_eq!(
        ts[0].reason.as_ref().unwrap().code,
        link_down_reason::PACKET_TIMEOUT
    );
    assert_eq!(
        ts[0].detail,
        Some(Detail::LinkState(no_carrier.links[&3].state.clone()))
    );

    // Operstate down with carrier still reported: also down, not admin.
    let mut oper_down = old.clone();
    oper_down.links.get_mut(&3).unwrap().state.oper_state = Some(OperState::Down);
    let ts = diff(&old, &oper_down, T1, DiffMode::Live);
    assert_eq!(
        ts[0].reason.as_ref().unwrap().code,
        link_down_reason::PACKET_TIMEOUT
    );

    let ts = diff(&no_carrier, &old, T1, DiffMode::Live);
    assert_eq!(kinds(&ts), vec![TriggerType::LinkUp]);
}

#[test]
fn non_tunnel_changes_that_keep_it_up_or_down_give_nothing() {
    let old = table(vec![entry(3, "eth0", InterfaceKind::Ethernet, up_state())]);
    let mut new = old.clone();
    let e = new.links.get_mut(&3).unwrap();
    e.state.mtu = 9000;
    e.interface.name = "uplink".into();
    assert!(diff(&old, &new, T1, DiffMode::Live).is_empty());
}

#[test]
fn tunnels_give_tunnel_triggers_only() {
    let old = LinkTable::default();
    let mut wg = entry(5, "wg0", InterfaceKind::Tunnel, up_state());
    wg.addresses.push(addr(v4([10, 99, 0, 1]), 32));
    let new = table(vec![wg.clone()]);
    assert_eq!(
        kinds(&diff(&old, &new, T1, DiffMode::Live)),
        vec![TriggerType::TunnelAdded, TriggerType::TunnelChanged]
    );
    // State change (carrier lost): TUNNEL_CHANGED, no LINK_DOWN.
    let mut down = new.clone();
    down.links.get_mut(&5).unwrap().state.carrier = false;
    let ts = diff(&new, &down, T1, DiffMode::Live);
    assert_eq!(kinds(&ts), vec![TriggerType::TunnelChanged]);
    assert_eq!(
        ts[0].detail,
        Some(Detail::LinkState(down.links[&5].state.clone()))
    );
    // MTU or name change.
    let mut mtu = new.clone();
    mtu.links.get_mut(&5).unwrap().state.mtu = 1420;
    assert_eq!(
        kinds(&diff(&new, &mtu, T1, DiffMode::Live)),
        vec![TriggerType::TunnelChanged]
    );
    let mut renamed = new.clone();
    renamed.links.get_mut(&5).unwrap().interface.name = "wg1".into();
    assert_eq!(
        kinds(&diff(&new, &renamed, T1, DiffMode::Live)),
        vec![TriggerType::TunnelChanged]
    );
    // Address removed: TUNNEL_CHANGED carrying the address.
    let mut bare = new.clone();
    bare.links.get_mut(&5).unwrap().addresses.clear();
    let ts = diff(&new, &bare, T1, DiffMode::Live);
    assert_eq!(kinds(&ts), vec![TriggerType::TunnelChanged]);
    assert_eq!(ts[0].address, Some(addr(v4([10, 99, 0, 1]), 32)));
    // Removal.
    assert_eq!(
        kinds(&diff(&bare, &old, T1, DiffMode::Live)),
        vec![TriggerType::TunnelRemoved]
    );
}

#[test]
fn address_flag_changes_are_if_addr_changed() {
    let mut e = entry(3, "eth0", InterfaceKind::Ethernet, up_state());
    let mut a = addr(v6("2001:db8::1"), 64);
    a.flags = vec![AddressFlag::Tentative];
    e.addresses.push(a.clone());
    let old = table(vec![e]);
    for flags in [
        vec![],
        vec![AddressFlag::Deprecated],
        vec![AddressFlag::Tentative, AddressFlag::DadFailed],
    ] {
        let mut new = old.clone();
        new.links.get_mut(&3).unwrap().addresses[0].flags = flags.clone();
        for mode in [DiffMode::Live, DiffMode::Resync] {
            let ts = diff(&old, &new, T1, mode);
            assert_eq!(kinds(&ts), vec![TriggerType::IfAddrChanged], "{flags:?}");
            assert_eq!(ts[0].address.as_ref().unwrap().flags, flags);
        }
    }
    let mut same_set = old.clone();
    same_set.links.get_mut(&3).unwrap().addresses[0].flags = vec![AddressFlag::Tentative];
    assert!(diff(&old, &same_set, T1, DiffMode::Resync).is_empty());
}

#[test]
fn shrinking_lifetimes_count_live_but_not_in_a_resync() {
    let mut e = entry(3, "eth0", InterfaceKind::Ethernet, up_state());
    let mut a = addr(v6("2001:db8::1"), 64);
    a.flags = vec![];
    a.valid_lifetime_s = Some(7200);
    a.preferred_lifetime_s = Some(3600);
    e.addresses.push(a);
    let old = table(vec![e]);
    let mut shrunk = old.clone();
    let s = &mut shrunk.links.get_mut(&3).unwrap().addresses[0];
    s.valid_lifetime_s = Some(7000);
    s.preferred_lifetime_s = Some(3400);
    assert_eq!(
        kinds(&diff(&old, &shrunk, T1, DiffMode::Live)),
        vec![TriggerType::IfAddrChanged]
    );
    assert!(diff(&old, &shrunk, T1, DiffMode::Resync).is_empty());
    let mut forever = old.clone();
    forever.links.get_mut(&3).unwrap().addresses[0].valid_lifetime_s = None;
    assert_eq!(
        kinds(&diff(&old, &forever, T1, DiffMode::Resync)),
        vec![TriggerType::IfAddrChanged]
    );
}

#[test]
fn address_add_and_remove_on_a_kept_link() {
    let mut e = entry(3, "eth0", InterfaceKind::Ethernet, up_state());
    e.addresses.push(addr(v4([192, 0, 2, 1]), 24));
    let old = table(vec![e]);
    let mut new = old.clone();
    new.links.get_mut(&3).unwrap().addresses = vec![addr(v4([192, 0, 2, 1]), 25)];
    let ts = diff(&old, &new, T1, DiffMode::Live);
    assert_eq!(
        kinds(&ts),
        vec![TriggerType::IfAddrRemoved, TriggerType::IfAddrAdded]
    );
    assert_eq!(ts[0].address.as_ref().unwrap().prefix_len, 24);
    assert_eq!(ts[1].address.as_ref().unwrap().prefix_len, 25);
    assert_eq!(ts[1].interface_name(), Some("eth0"));
}

#[test]
fn default_route_triggers_carry_route_and_interface() {
    let old = table(vec![entry(3, "eth0", InterfaceKind::Ethernet, up_state())]);
    let mut new = old.clone();
    let r = DefaultRouteEntry {
        oif: 3,
        route: DefaultRoute {
            gateway: Some(v6("fe80::1")),
            ipv6: true,
            metric: 1024,
            table: 254,
        },
    };
    new.default_routes.push(r.clone());
    let ts = diff(&old, &new, T1, DiffMode::Live);
    assert_eq!(kinds(&ts), vec![TriggerType::DefaultRouteAdded]);
    assert_eq!(ts[0].detail, Some(Detail::DefaultRoute(r.route.clone())));
    assert_eq!(ts[0].interface_name(), Some("eth0"));
    let ts = diff(&new, &old, T1, DiffMode::Live);
    assert_eq!(kinds(&ts), vec![TriggerType::DefaultRouteRemoved]);
    assert_eq!(ts[0].interface.as_ref().map(|i| i.index), Some(3));
    // A multipath route names no interface.
    let mut mp = old.clone();
    mp.default_routes.push(DefaultRouteEntry { oif: 0, ..r });
    assert_eq!(diff(&old, &mp, T1, DiffMode::Live)[0].interface, None);
}

#[test]
fn resync_batch_starts_with_the_marker_then_the_changes() {
    let mut e = entry(3, "eth0", InterfaceKind::Ethernet, up_state());
    let mut a = addr(v6("2001:db8::1"), 64);
    a.valid_lifetime_s = Some(7200);
    e.addresses.push(a);
    let old = table(vec![e]);
    let mut new = old.clone();
    // Lifetime shrank (no trigger), a link appeared.
    new.links.get_mut(&3).unwrap().addresses[0].valid_lifetime_s = Some(10);
    new.links.insert(
        4,
        entry(4, "eth1", InterfaceKind::Ethernet, LinkState::default()),
    );
    let ts = resync_triggers("overrun", &old, &new, T1);
    assert_eq!(kinds(&ts), vec![TriggerType::Resync, TriggerType::IfAdded]);
    assert_eq!(
        ts[0].detail,
        Some(Detail::Resync(crate::model::Resync {
            cause: "overrun".into(),
            links: 2,
            addresses: 1,
        }))
    );
    assert!(ts[0].interface.is_none());
    ts[0].check_complete("t").unwrap();
    let start = resync_marker("start", &LinkTable::default(), T0);
    assert_eq!(start.kind, TriggerType::Resync);
    assert_eq!(start.source, Source::Rtnetlink);
}

#[test]
fn live_messages_apply_one_by_one_so_no_transition_is_lost() {
    // Down and up again within one batch: both triggers, in order.
    let mut t = LinkTable::default();
    let events = [
        new_link(
            3,
            "vA",
            LinkFlags::Up | LinkFlags::LowerUp,
            Some(InfoKind::Veth),
        ),
        new_link(3, "vA", LinkFlags::Broadcast, Some(InfoKind::Veth)),
        new_link(
            3,
            "vA",
            LinkFlags::Up | LinkFlags::LowerUp,
            Some(InfoKind::Veth),
        ),
    ];
    let out = apply_live(&mut t, &events, T1, &NoProbe).unwrap();
    assert_eq!(
        kinds(&out),
        vec![
            TriggerType::IfAdded,
            TriggerType::LinkUp,
            TriggerType::LinkDown,
            TriggerType::LinkUp
        ]
    );
    // Nothing changed: nothing to send. A change without triggers (MTU of
    // a plain link) still updates the table and is sent.
    assert_eq!(apply_live(&mut t, &events[2..], T1, &NoProbe), None);
    let mut mtu = link_msg(
        3,
        "vA",
        LinkFlags::Up | LinkFlags::LowerUp,
        Some(InfoKind::Veth),
    );
    mtu.attributes.push(LinkAttribute::Mtu(9000));
    let ev = decode(RTM_NEWLINK, 0, &emit(&mtu)).unwrap().unwrap();
    assert_eq!(apply_live(&mut t, &[ev], T1, &NoProbe), Some(vec![]));
    assert_eq!(t.links[&3].state.mtu, 9000);
}
