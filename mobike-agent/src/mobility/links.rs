//! The link table: what the agent knows of the host's interfaces, changed
//! only by [`LinkEvent`]s.
//!
//! The events are the agent's own vocabulary, not protobuf: the runtime
//! makes them from trigger-db's triggers (PF_TRIGGER IF_* and the IEEE
//! 802.21 Link_* events) or from its own rtnetlink watch when trigger-db is
//! not running. Interfaces are known by index; the kind comes from the
//! source (rtnetlink's link type and IFLA_INFO_KIND), never from the name.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    time::{Duration, Instant},
};

/// What an interface is, as trigger-db's `InterfaceKind` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IfaceKind {
    Ethernet,
    Wlan,
    Wwan,
    Tunnel,
    Loopback,
    Veth,
    Bridge,
    Vlan,
    Bond,
    Other,
}

impl IfaceKind {
    /// The name used in configuration (`[mobility.interfaces]`) and status.
    pub fn as_str(self) -> &'static str {
        match self {
            IfaceKind::Ethernet => "ethernet",
            IfaceKind::Wlan => "wlan",
            IfaceKind::Wwan => "wwan",
            IfaceKind::Tunnel => "tunnel",
            IfaceKind::Loopback => "loopback",
            IfaceKind::Veth => "veth",
            IfaceKind::Bridge => "bridge",
            IfaceKind::Vlan => "vlan",
            IfaceKind::Bond => "bond",
            IfaceKind::Other => "other",
        }
    }

    /// The kind named `s` in configuration.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "ethernet" => IfaceKind::Ethernet,
            "wlan" => IfaceKind::Wlan,
            "wwan" => IfaceKind::Wwan,
            "tunnel" => IfaceKind::Tunnel,
            "loopback" => IfaceKind::Loopback,
            "veth" => IfaceKind::Veth,
            "bridge" => IfaceKind::Bridge,
            "vlan" => IfaceKind::Vlan,
            "bond" => IfaceKind::Bond,
            "other" => IfaceKind::Other,
            _ => return None,
        })
    }
}

/// rtnetlink IFLA_INFO_KIND values of tunnels and virtual point-to-point
/// devices. IKE never runs over one of them: the peer is reached through
/// it only because of a tunnel that may itself depend on the path being
/// chosen (XFRM interfaces, VTI), or it is another VPN (WireGuard, tun).
const TUNNEL_DRIVERS: &[&str] = &[
    "xfrm",
    "vti",
    "vti6",
    "ipip",
    "ip6tnl",
    "sit",
    "gre",
    "gretap",
    "ip6gre",
    "ip6gretap",
    "erspan",
    "ip6erspan",
    "wireguard",
    "tun",
    "ipvlan",
    "macsec",
    "vxlan",
    "geneve",
];

/// RFC 2863 operational state (IF_OPER_*).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OperState {
    #[default]
    Unknown,
    NotPresent,
    Down,
    LowerLayerDown,
    Testing,
    Dormant,
    Up,
}

/// The flags of a local address that matter for choosing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AddrFlags {
    /// IFA_F_TENTATIVE: duplicate address detection is still running.
    pub tentative: bool,
    /// IFA_F_DADFAILED: another host has it.
    pub dadfailed: bool,
    /// IFA_F_DEPRECATED: preferred lifetime over; a last resort.
    pub deprecated: bool,
}

/// One address of an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalAddr {
    pub addr: IpAddr,
    pub prefix_len: u8,
    pub flags: AddrFlags,
}

/// The latest IEEE 802.21 link parameters of an interface (from
/// Link_Parameters_Report); `None` where never reported.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Quality {
    /// Signal strength, normalised to 0..=100 (a dBm report is mapped from
    /// -100..=-40 dBm).
    pub signal_percent: Option<f64>,
    /// Signal to interference plus noise ratio, dB.
    pub sinr_db: Option<f64>,
    /// Packet error rate, percent.
    pub packet_error_percent: Option<f64>,
}

/// One 802.21 link parameter as reported.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LinkParameter {
    SignalPercent(f64),
    SignalDbm(f64),
    SinrDb(f64),
    PacketErrorPercent(f64),
}

/// An interface as the table knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Interface {
    pub index: u32,
    pub name: String,
    pub kind: IfaceKind,
    /// IFLA_INFO_KIND ("veth", "wireguard", "xfrm"); may be empty.
    pub driver_kind: String,
    /// IFF_UP.
    pub admin_up: bool,
    /// IFF_LOWER_UP.
    pub carrier: bool,
    pub oper: OperState,
    pub addrs: BTreeMap<IpAddr, LocalAddr>,
    pub quality: Quality,
    /// Link-downs in trigger-db's flap window (or counted by the agent's own
    /// watch).
    pub flaps: u32,
    /// When a predictive trigger (Link_Going_Down, IF_REMOVEDSOON,
    /// Link_Handover_Imminent) says the link will be gone.
    pub going_down_at: Option<Instant>,
}

impl Interface {
    /// A new interface with no addresses, down until told otherwise.
    pub fn new(index: u32, name: impl Into<String>, kind: IfaceKind) -> Self {
        Self {
            index,
            name: name.into(),
            kind,
            driver_kind: String::new(),
            admin_up: false,
            carrier: false,
            oper: OperState::Unknown,
            addrs: BTreeMap::new(),
            quality: Quality::default(),
            flaps: 0,
            going_down_at: None,
        }
    }

    /// Whether packets can leave through it: administratively up, with
    /// carrier, and an operational state that is up or not reported
    /// (point-to-point and some virtual drivers never report one).
    pub fn is_up(&self) -> bool {
        self.admin_up && self.carrier && matches!(self.oper, OperState::Up | OperState::Unknown)
    }

    /// A tunnel, virtual point-to-point or loopback device: never a path
    /// for IKE, whatever its routes say.
    pub fn is_excluded_kind(&self) -> bool {
        matches!(self.kind, IfaceKind::Tunnel | IfaceKind::Loopback)
            || TUNNEL_DRIVERS.contains(&self.driver_kind.as_str())
    }

    /// Whether a predictive trigger says it goes away soon. A prediction is
    /// kept until the link goes, comes back up after going, or
    /// [`PREDICTION_GRACE`] after its deadline passes without the link
    /// going (then it was wrong).
    pub fn is_going_down(&self, now: Instant) -> bool {
        self.going_down_at
            .is_some_and(|at| now < at + PREDICTION_GRACE)
    }
}

/// How long after its deadline a loss prediction that did not come true
/// is still believed.
pub const PREDICTION_GRACE: Duration = Duration::from_secs(10);

/// An interface as the table knew it at some moment (a move left or
/// reached it; it may be gone from the table since).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkRef {
    pub index: u32,
    pub name: String,
    pub kind: IfaceKind,
    /// IFLA_INFO_KIND; may be empty.
    pub driver_kind: String,
}

impl From<&Interface> for LinkRef {
    fn from(i: &Interface) -> Self {
        Self {
            index: i.index,
            name: i.name.clone(),
            kind: i.kind,
            driver_kind: i.driver_kind.clone(),
        }
    }
}

/// A change to the link table. Interfaces are named by index.
#[derive(Debug, Clone, PartialEq)]
pub enum LinkEvent {
    /// An interface appeared or its state changed (IF_ADDED, LINK_UP,
    /// LINK_DOWN, a link-state snapshot). Addresses are kept.
    Link {
        index: u32,
        name: String,
        kind: IfaceKind,
        driver_kind: String,
        admin_up: bool,
        carrier: bool,
        oper: OperState,
    },
    /// Carrier gained or lost, as a connection manager or an 802.21 client
    /// reports it without rtnetlink's full state (LINK_UP, LINK_DOWN,
    /// CONN_LOST).
    Carrier { index: u32, up: bool },
    /// A default route of the interface (or of an unknown one) changed:
    /// route answers involving it are to be looked up again.
    RoutesChanged { index: Option<u32> },
    /// The interface is gone (IF_REMOVED), with its addresses.
    Removed { index: u32 },
    /// An address was added or its flags changed (IF_ADDRADDED,
    /// IF_ADDRCHANGED).
    Addr { index: u32, addr: LocalAddr },
    /// An address was removed (IF_ADDRREMOVED).
    AddrRemoved { index: u32, addr: IpAddr },
    /// Link_Parameters_Report.
    Parameters {
        index: u32,
        params: Vec<LinkParameter>,
    },
    /// Link_Going_Down / IF_REMOVEDSOON / Link_Handover_Imminent: the link
    /// is expected to be gone `within` this long after `now`.
    GoingDown { index: u32, within: Duration },
    /// The flap count of the interface (trigger-db's Stats flaps).
    Flaps { index: u32, count: u32 },
    /// Everything known is replaced (after a gap or a resync): the table
    /// is rebuilt from these interfaces, keeping the quality, flap count
    /// and loss prediction of those that remain.
    Snapshot { interfaces: Vec<Interface> },
}

/// What an event changed, so that only the IKE SAs using these interfaces
/// (or addresses) are evaluated again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Touched {
    /// Interfaces whose state, addresses or score inputs changed.
    pub interfaces: BTreeSet<u32>,
    /// Every IKE SA must be evaluated (a snapshot replaced the table).
    pub all: bool,
}

impl Touched {
    fn one(index: u32) -> Self {
        Self {
            interfaces: BTreeSet::from([index]),
            all: false,
        }
    }

    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        !self.all && self.interfaces.is_empty()
    }
}

/// The host's interfaces as last reported.
#[derive(Debug, Clone, Default)]
pub struct LinkTable {
    ifaces: BTreeMap<u32, Interface>,
}

impl LinkTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// The interfaces, by index.
    pub fn interfaces(&self) -> impl Iterator<Item = &Interface> {
        self.ifaces.values()
    }

    /// The interface with index `index`.
    pub fn get(&self, index: u32) -> Option<&Interface> {
        self.ifaces.get(&index)
    }

    /// The interface named `name`, if any (an empty name names none).
    pub fn by_name(&self, name: &str) -> Option<&Interface> {
        if name.is_empty() {
            return None;
        }
        self.ifaces.values().find(|i| i.name == name)
    }

    /// The interface that has `addr`, if any.
    pub fn owner_of(&self, addr: IpAddr) -> Option<&Interface> {
        self.ifaces.values().find(|i| i.addrs.contains_key(&addr))
    }

    /// Applies `event` at `now`; says what it changed (nothing, when the
    /// event repeats what the table knows).
    pub fn apply(&mut self, event: LinkEvent, now: Instant) -> Touched {
        match event {
            LinkEvent::Link {
                index,
                name,
                kind,
                driver_kind,
                admin_up,
                carrier,
                oper,
            } => {
                let iface = self
                    .ifaces
                    .entry(index)
                    .or_insert_with(|| Interface::new(index, name.clone(), kind));
                let was_up = iface.is_up();
                let changed = iface.name != name
                    || iface.kind != kind
                    || iface.driver_kind != driver_kind
                    || (iface.admin_up, iface.carrier, iface.oper) != (admin_up, carrier, oper);
                iface.name = name;
                iface.kind = kind;
                iface.driver_kind = driver_kind;
                iface.admin_up = admin_up;
                iface.carrier = carrier;
                iface.oper = oper;
                if iface.is_up() && !was_up {
                    // Back up: an earlier prediction of its loss is void.
                    iface.going_down_at = None;
                }
                if changed {
                    Touched::one(index)
                } else {
                    Touched::default()
                }
            }
            LinkEvent::Carrier { index, up } => match self.ifaces.get_mut(&index) {
                Some(iface) if iface.carrier != up => {
                    iface.carrier = up;
                    if up {
                        // A link that went and came back: its old prediction is void.
                        iface.going_down_at = None;
                    }
                    Touched::one(index)
                }
                _ => Touched::default(),
            },
            LinkEvent::RoutesChanged { index } => match index {
                Some(index) => Touched::one(index),
                None => Touched {
                    interfaces: BTreeSet::new(),
                    all: true,
                },
            },
            LinkEvent::Removed { index } => match self.ifaces.remove(&index) {
                Some(_) => Touched::one(index),
                None => Touched::default(),
            },
            LinkEvent::Addr { index, addr } => {
                let iface = self
                    .ifaces
                    .entry(index)
                    .or_insert_with(|| Interface::new(index, String::new(), IfaceKind::Other));
                if iface.addrs.insert(addr.addr, addr) == Some(addr) {
                    Touched::default()
                } else {
                    Touched::one(index)
                }
            }
            LinkEvent::AddrRemoved { index, addr } => {
                match self
                    .ifaces
                    .get_mut(&index)
                    .and_then(|i| i.addrs.remove(&addr))
                {
                    Some(_) => Touched::one(index),
                    None => Touched::default(),
                }
            }
            LinkEvent::Parameters { index, params } => {
                let Some(iface) = self.ifaces.get_mut(&index) else {
                    return Touched::default();
                };
                let before = iface.quality;
                for p in params {
                    let q = &mut iface.quality;
                    match p {
                        LinkParameter::SignalPercent(v) => {
                            q.signal_percent = Some(v.clamp(0.0, 100.0));
                        }
                        LinkParameter::SignalDbm(dbm) => {
                            q.signal_percent =
                                Some(((dbm + 100.0) * 100.0 / 60.0).clamp(0.0, 100.0));
                        }
                        LinkParameter::SinrDb(v) => q.sinr_db = Some(v),
                        LinkParameter::PacketErrorPercent(v) => {
                            q.packet_error_percent = Some(v.clamp(0.0, 100.0));
                        }
                    }
                }
                if iface.quality == before {
                    Touched::default()
                } else {
                    Touched::one(index)
                }
            }
            LinkEvent::GoingDown { index, within } => {
                let Some(iface) = self.ifaces.get_mut(&index) else {
                    return Touched::default();
                };
                let at = now + within;
                // The earliest prediction stands.
                if iface.going_down_at.is_some_and(|t| t <= at) {
                    return Touched::default();
                }
                iface.going_down_at = Some(at);
                Touched::one(index)
            }
            LinkEvent::Flaps { index, count } => match self.ifaces.get_mut(&index) {
                Some(iface) if iface.flaps != count => {
                    iface.flaps = count;
                    Touched::one(index)
                }
                _ => Touched::default(),
            },
            LinkEvent::Snapshot { interfaces } => {
                // A snapshot carries state, addresses and kind; what only
                // events report (quality, flaps, a pending prediction) is
                // kept for interfaces that are still there.
                let mut old = std::mem::take(&mut self.ifaces);
                for mut i in interfaces {
                    if let Some(prev) = old.remove(&i.index) {
                        i.quality = prev.quality;
                        i.flaps = prev.flaps;
                        i.going_down_at = if i.is_up() { prev.going_down_at } else { None };
                    }
                    self.ifaces.insert(i.index, i);
                }
                Touched {
                    interfaces: self.ifaces.keys().copied().collect(),
                    all: true,
                }
            }
        }
    }
}

/// The flap counts forwarded as [`LinkEvent::Flaps`], by interface name:
/// turns a source's counts (trigger-db's `Stats.flaps`, the own watch's
/// counter) into events for those that changed.
#[derive(Debug, Default)]
pub struct FlapCounts {
    sent: BTreeMap<String, u32>,
}

impl FlapCounts {
    /// Whether a count forwarded is above zero: it goes down as the
    /// source's window slides, so the source is worth reading again.
    pub fn pending(&self) -> bool {
        self.sent.values().any(|n| *n > 0)
    }

    /// Events for the counts (interface name, link-downs in the window)
    /// that differ from those forwarded, for the interfaces `table`
    /// knows; an interface the counts no longer list has none.
    pub fn changes(
        &mut self,
        counts: impl IntoIterator<Item = (String, u64)>,
        table: &LinkTable,
    ) -> Vec<LinkEvent> {
        let mut out = Vec::new();
        let mut listed = BTreeSet::new();
        for (name, n) in counts {
            let count = u32::try_from(n).unwrap_or(u32::MAX);
            if self.sent.get(&name).copied().unwrap_or(0) != count
                && let Some(i) = table.by_name(&name)
            {
                out.push(LinkEvent::Flaps {
                    index: i.index,
                    count,
                });
                self.sent.insert(name.clone(), count);
            }
            listed.insert(name);
        }
        let gone: Vec<String> = self
            .sent
            .keys()
            .filter(|k| !listed.contains(*k))
            .cloned()
            .collect();
        for name in gone {
            if self.sent.remove(&name).is_some_and(|n| n > 0)
                && let Some(i) = table.by_name(&name)
            {
                out.push(LinkEvent::Flaps {
                    index: i.index,
                    count: 0,
                });
            }
        }
        out
    }
}
