//! Applying decoded rtnetlink events to a [`LinkTable`], and telling what
//! kind of interface a link is.
//!
//! [`apply`] is the only way the source changes its table, for dumps and for
//! multicast alike; it reports whether anything changed so that a message
//! that changed nothing sends nothing. It also does what the kernel does
//! without telling: IPv4 flushes the routes of a link that goes
//! administratively down or away, or loses its last IPv4 address, and sends
//! no RTM_DELROUTE for them (IPv6 does send them), so the table drops the
//! IPv4 default routes of such a link itself. (A route with a preferred
//! source, `src A`, is also flushed silently when A is removed; the table
//! does not know route sources and keeps it until the next resync.) Classification reads /sys only for hardware-looking links
//! and only trusts it when name, ifindex and MAC all match, because /sys
//! shows the network namespace it was mounted in, not necessarily ours.

use std::path::PathBuf;

use crate::{
    links::{LinkEntry, LinkTable},
    model::{Interface, InterfaceKind, LinkState, LinkType, Timestamp},
};

use super::decode::{LinkUpdate, RtnlEvent};

const IFF_UP: u32 = 0x1;
const IFF_LOOPBACK: u32 = 0x8;
const IFF_LOWER_UP: u32 = 0x1_0000;

// ARPHRD_* (linux/if_arp.h).
const ARPHRD_ETHER: u16 = 1;
const ARPHRD_RAWIP: u16 = 519;
const ARPHRD_TUNNEL: u16 = 768;
const ARPHRD_TUNNEL6: u16 = 769;
const ARPHRD_LOOPBACK: u16 = 772;
const ARPHRD_SIT: u16 = 776;
const ARPHRD_IPGRE: u16 = 778;
const ARPHRD_IEEE80211: u16 = 801;
const ARPHRD_IEEE80211_RADIOTAP: u16 = 803;
const ARPHRD_IP6GRE: u16 = 823;
const ARPHRD_NONE: u16 = 0xfffe;

/// IFLA_INFO_KINDs that are tunnels: their triggers are TUNNEL_*.
pub const TUNNEL_KINDS: &[&str] = &[
    "xfrm",
    "vti",
    "vti6",
    "ip6tnl",
    "ipip",
    "sit",
    "gre",
    "gretap",
    "ip6gre",
    "ip6gretap",
    "wireguard",
    "tun",
];

/// What /sys says a hardware link is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DevType {
    Wlan,
    Wwan,
}

/// Where the source learns whether a hardware link is Wi-Fi or WWAN.
pub trait DevTypeProbe {
    /// `mac` is the link's address as the table formats it (may be empty).
    fn devtype(&self, name: &str, index: u32, mac: &str) -> Option<DevType>;
}

/// Reads `/sys/class/net/NAME/{ifindex,address,uevent,wireless,phy80211}`.
#[derive(Debug, Clone)]
pub struct SysfsProbe {
    pub root: PathBuf,
}

impl Default for SysfsProbe {
    fn default() -> Self {
        Self {
            root: PathBuf::from("/sys/class/net"),
        }
    }
}

impl DevTypeProbe for SysfsProbe {
    fn devtype(&self, name: &str, index: u32, mac: &str) -> Option<DevType> {
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return None;
        }
        let dir = self.root.join(name);
        let read = |file: &str| std::fs::read_to_string(dir.join(file)).ok();
        // /sys may belong to another network namespace: a device there
        // with our link's name is only ours if index and address agree.
        let sys_index: u32 = read("ifindex")?.trim().parse().ok()?;
        if sys_index != index {
            return None;
        }
        if !mac.is_empty() && !read("address")?.trim().eq_ignore_ascii_case(mac) {
            return None;
        }
        if let Some(uevent) = read("uevent") {
            for line in uevent.lines() {
                match line.trim().strip_prefix("DEVTYPE=") {
                    Some("wlan") => return Some(DevType::Wlan),
                    Some("wwan") => return Some(DevType::Wwan),
                    _ => {}
                }
            }
        }
        if dir.join("wireless").exists() || dir.join("phy80211").exists() {
            return Some(DevType::Wlan);
        }
        None
    }
}

/// A probe that knows nothing (tests, or no /sys).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProbe;

impl DevTypeProbe for NoProbe {
    fn devtype(&self, _: &str, _: u32, _: &str) -> Option<DevType> {
        None
    }
}

/// The kind of a link from its IFLA_INFO_KIND, ARPHRD type and flags,
/// asking `probe` only for hardware-looking links (no info kind).
pub fn classify(
    info_kind: Option<&str>,
    arphrd: u16,
    flags: u32,
    name: &str,
    index: u32,
    mac: &str,
    probe: &dyn DevTypeProbe,
) -> InterfaceKind {
    if flags & IFF_LOOPBACK != 0 || arphrd == ARPHRD_LOOPBACK {
        return InterfaceKind::Loopback;
    }
    if let Some(kind) = info_kind {
        if TUNNEL_KINDS.contains(&kind) {
            return InterfaceKind::Tunnel;
        }
        match kind {
            "veth" => return InterfaceKind::Veth,
            "bridge" => return InterfaceKind::Bridge,
            "vlan" => return InterfaceKind::Vlan,
            "bond" => return InterfaceKind::Bond,
            "wwan" | "rmnet" => return InterfaceKind::Wwan,
            "virt_wifi" => return InterfaceKind::Wlan,
            _ => {}
        }
    }
    if matches!(
        arphrd,
        ARPHRD_TUNNEL | ARPHRD_TUNNEL6 | ARPHRD_SIT | ARPHRD_IPGRE | ARPHRD_IP6GRE
    ) {
        return InterfaceKind::Tunnel;
    }
    if (ARPHRD_IEEE80211..=ARPHRD_IEEE80211_RADIOTAP).contains(&arphrd) {
        return InterfaceKind::Wlan;
    }
    if info_kind.is_none() && matches!(arphrd, ARPHRD_ETHER | ARPHRD_RAWIP | ARPHRD_NONE) {
        match probe.devtype(name, index, mac) {
            Some(DevType::Wlan) => return InterfaceKind::Wlan,
            Some(DevType::Wwan) => return InterfaceKind::Wwan,
            None => {}
        }
    }
    match arphrd {
        ARPHRD_RAWIP => InterfaceKind::Wwan,
        ARPHRD_ETHER => InterfaceKind::Ethernet,
        _ => InterfaceKind::Other,
    }
}

/// The IEEE 802.21 link type we can tell from the kind. WWAN stays `None`:
/// rtnetlink does not say which radio technology a modem uses.
pub fn link_type(kind: InterfaceKind) -> Option<LinkType> {
    match kind {
        InterfaceKind::Ethernet => Some(LinkType::Ethernet),
        InterfaceKind::Wlan => Some(LinkType::Ieee802_11),
        _ => None,
    }
}

/// `aa:bb:cc:dd:ee:ff`, as `ip link` prints it.
pub fn format_mac(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 3);
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            s.push(':');
        }
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// What applying one event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Changed,
    Unchanged,
    /// An address for a link the table does not know (it came and went
    /// between a dump's link and address parts, or a message was lost).
    UnknownLink(u32),
}

/// Applies one event to the table; `now` becomes the changed link's
/// `last_change`.
pub fn apply(
    table: &mut LinkTable,
    event: &RtnlEvent,
    now: Timestamp,
    probe: &dyn DevTypeProbe,
) -> Applied {
    let changed = match event {
        RtnlEvent::NewLink(update) => apply_link(table, update, now, probe),
        RtnlEvent::DelLink { index } => {
            let removed = table.links.remove(index).is_some();
            let routes = table.default_routes.len();
            table.default_routes.retain(|r| r.oif != *index);
            removed || routes != table.default_routes.len()
        }
        RtnlEvent::NewAddress { index, address } => {
            let Some(link) = table.links.get_mut(index) else {
                return Applied::UnknownLink(*index);
            };
            let existing = link
                .addresses
                .iter_mut()
                .find(|a| a.address == address.address && a.prefix_len == address.prefix_len);
            let changed = match existing {
                Some(a) if a == address => false,
                Some(a) => {
                    *a = address.clone();
                    true
                }
                None => {
                    link.addresses.push(address.clone());
                    true
                }
            };
            if changed {
                link.last_change = now;
            }
            changed
        }
        RtnlEvent::DelAddress { index, address } => {
            let Some(link) = table.links.get_mut(index) else {
                return Applied::UnknownLink(*index);
            };
            let before = link.addresses.len();
            link.addresses
                .retain(|a| !(a.address == address.address && a.prefix_len == address.prefix_len));
            let changed = before != link.addresses.len();
            if changed {
                link.last_change = now;
                if address.address.is_ipv4() && !link.addresses.iter().any(|a| a.address.is_ipv4())
                {
                    // The last IPv4 address went: IPv4 flushed the link's
                    // routes without RTM_DELROUTE.
                    table
                        .default_routes
                        .retain(|r| r.route.ipv6 || r.oif != *index);
                }
            }
            changed
        }
        RtnlEvent::NewDefaultRoute { entry, replace } => {
            let before = table.default_routes.clone();
            if *replace {
                table.default_routes.retain(|r| {
                    !(r.route.ipv6 == entry.route.ipv6
                        && r.route.table == entry.route.table
                        && r.route.metric == entry.route.metric)
                });
            }
            if !table.default_routes.contains(entry) {
                table.default_routes.push(entry.clone());
            }
            before != table.default_routes
        }
        RtnlEvent::DelDefaultRoute(entry) => {
            let before = table.default_routes.len();
            table.default_routes.retain(|r| r != entry);
            before != table.default_routes.len()
        }
    };
    if changed {
        Applied::Changed
    } else {
        Applied::Unchanged
    }
}

fn apply_link(
    table: &mut LinkTable,
    u: &LinkUpdate,
    now: Timestamp,
    probe: &dyn DevTypeProbe,
) -> bool {
    let old = table.links.get(&u.index);
    let name = u
        .name
        .clone()
        .or_else(|| old.map(|o| o.interface.name.clone()))
        .unwrap_or_default();
    // A device's kind never changes; messages without IFLA_LINKINFO
    // (wireless events) keep what we know.
    let driver_kind = u
        .info_kind
        .clone()
        .or_else(|| old.map(|o| o.interface.driver_kind.clone()))
        .unwrap_or_default();
    let state = LinkState {
        admin_up: u.flags & IFF_UP != 0,
        carrier: u.carrier.unwrap_or(u.flags & IFF_LOWER_UP != 0),
        oper_state: u
            .oper_state
            .or_else(|| old.and_then(|o| o.state.oper_state)),
        mtu: u.mtu.or_else(|| old.map(|o| o.state.mtu)).unwrap_or(0),
        mac: u
            .mac
            .as_deref()
            .map(format_mac)
            .or_else(|| old.map(|o| o.state.mac.clone()))
            .unwrap_or_default(),
    };
    let kind = match old {
        Some(o) if o.interface.name == name && o.interface.driver_kind == driver_kind => {
            o.interface.kind
        }
        _ => Some(classify(
            (!driver_kind.is_empty()).then_some(driver_kind.as_str()),
            u.arphrd,
            u.flags,
            &name,
            u.index,
            &state.mac,
            probe,
        )),
    };
    let interface = Interface {
        index: u.index,
        name,
        kind,
        driver_kind,
        link_type: kind.and_then(link_type),
    };
    let admin_went_down = old.is_some_and(|o| o.state.admin_up) && !state.admin_up;
    let addresses = match old {
        Some(o) if o.interface == interface && o.state == state => return false,
        Some(o) => o.addresses.clone(),
        None => Vec::new(),
    };
    table.links.insert(
        u.index,
        LinkEntry {
            interface,
            state,
            addresses,
            last_change: now,
        },
    );
    if admin_went_down {
        // IPv4 flushed this link's routes without RTM_DELROUTE.
        table
            .default_routes
            .retain(|r| r.route.ipv6 || r.oif != u.index);
    }
    true
}
