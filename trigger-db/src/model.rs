//! The trigger model: checked domain types for everything the daemon stores,
//! fans out and prints, and their conversion from and to the `trigger.v1`
//! wire messages.
//!
//! The PF_TRIGGER types come from draft-schilcher-mobike-trigger-api-03 §4,
//! the link events from IEEE 802.21-2008 §7.3 (MIH_LINK_SAP). Conversion from
//! the wire is where external input is checked: every problem is a
//! [`ValidationError`] naming the field (`triggers[3].address.prefix_len`),
//! never a panic. Conversion to the wire cannot fail. The serde form of
//! [`Trigger`] is the JSON that `triggerctl --json` prints and `triggerctl add
//! --from` reads (kebab-case names, RFC 3339 times).

use std::{
    fmt,
    net::IpAddr,
    str::FromStr,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};
use trigger_proto::v1 as pb;

/// A field of an external input that was wrong, and what was wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct ValidationError {
    /// Path of the field, e.g. `triggers[2].interface.kind`.
    pub field: String,
    pub problem: String,
}

impl ValidationError {
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            problem: problem.into(),
        }
    }
}

/// Joins a parent field path and a child name.
fn sub(parent: &str, child: &str) -> String {
    if parent.is_empty() {
        child.to_owned()
    } else {
        format!("{parent}.{child}")
    }
}

/// A field path that is only spelled out when there is an error to report:
/// the success path of validation allocates nothing for it.
pub trait FieldPath {
    fn path(&self) -> String;
}

impl FieldPath for &str {
    fn path(&self) -> String {
        (*self).to_owned()
    }
}

impl FieldPath for String {
    fn path(&self) -> String {
        self.clone()
    }
}

impl FieldPath for &String {
    fn path(&self) -> String {
        (*self).clone()
    }
}

/// `parent.child`, built on demand.
#[derive(Debug, Clone, Copy)]
pub struct Sub<'a>(pub &'a str, pub &'a str);

impl FieldPath for Sub<'_> {
    fn path(&self) -> String {
        sub(self.0, self.1)
    }
}

/// Declares a domain enum mirroring a proto enum: kebab-case names for
/// serde, `Display` and `FromStr`; checked conversion from the wire's i32
/// (unspecified and unknown values are errors); infallible conversion back.
macro_rules! wire_enum {
    ($(#[$m:meta])* $name:ident => $pb:ident { $($(#[$vm:meta])* $v:ident = $pv:ident : $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum $name { $($(#[$vm])* #[serde(rename = $s)] $v),+ }

        impl $name {
            /// Every value, in wire order.
            pub const ALL: &'static [$name] = &[$($name::$v),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$v => $s),+ }
            }

            pub fn to_wire(self) -> i32 {
                (match self { $($name::$v => pb::$pb::$pv),+ }) as i32
            }

            /// The wire value, checked: unknown and unspecified are errors.
            pub fn from_wire(value: i32, field: impl FieldPath) -> Result<Self, ValidationError> {
                match pb::$pb::try_from(value) {
                    $(Ok(pb::$pb::$pv) => Ok($name::$v),)+
                    Ok(_) => Err(ValidationError::new(field.path(), "must be set")),
                    Err(_) => Err(ValidationError::new(field.path(), format!("unknown value {value}"))),
                }
            }

            /// Like [`Self::from_wire`], but unspecified gives `None`.
            pub fn from_wire_opt(value: i32, field: impl FieldPath) -> Result<Option<Self>, ValidationError> {
                if value == 0 { Ok(None) } else { Self::from_wire(value, field).map(Some) }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(self.as_str()) }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                let norm = s.trim().to_ascii_lowercase().replace('_', "-");
                $name::ALL.iter().copied().find(|v| v.as_str() == norm).ok_or_else(|| {
                    let names: Vec<&str> = $name::ALL.iter().map(|v| v.as_str()).collect();
                    format!("unknown {} {s:?}; one of: {}", stringify!($name), names.join(", "))
                })
            }
        }
    };
}

wire_enum! {
    /// What a trigger says happened: PF_TRIGGER types (draft §4), IEEE 802.21
    /// link events, default-route changes and trigger-db's resync marker.
    TriggerType => TriggerType {
        IfAdded = IfAdded: "if-added",
        IfRemoved = IfRemoved: "if-removed",
        IfRemovedSoon = IfRemovedsoon: "if-removed-soon",
        IfAddrAdded = IfAddradded: "if-addr-added",
        IfAddrRemoved = IfAddrremoved: "if-addr-removed",
        IfAddrChanged = IfAddrchanged: "if-addr-changed",
        TunnelAdded = TunnelAdded: "tunnel-added",
        TunnelChanged = TunnelChanged: "tunnel-changed",
        TunnelRemoved = TunnelRemoved: "tunnel-removed",
        ConnEstablished = ConnEstablished: "conn-established",
        ConnLost = ConnLost: "conn-lost",
        DestUnreachable = DestUnreachable: "dest-unreachable",
        LinkDetected = LinkDetected: "link-detected",
        LinkUp = LinkUp: "link-up",
        LinkDown = LinkDown: "link-down",
        LinkGoingDown = LinkGoingDown: "link-going-down",
        LinkParametersReport = LinkParametersReport: "link-parameters-report",
        LinkHandoverImminent = LinkHandoverImminent: "link-handover-imminent",
        LinkHandoverComplete = LinkHandoverComplete: "link-handover-complete",
        DefaultRouteAdded = DefaultRouteAdded: "default-route-added",
        DefaultRouteRemoved = DefaultRouteRemoved: "default-route-removed",
        Resync = Resync: "resync",
    }
}

impl TriggerType {
    /// Types that are about one interface and so need one.
    pub fn needs_interface(self) -> bool {
        !matches!(
            self,
            Self::ConnEstablished
                | Self::ConnLost
                | Self::DestUnreachable
                | Self::DefaultRouteAdded
                | Self::DefaultRouteRemoved
                | Self::Resync
        )
    }

    pub fn needs_address(self) -> bool {
        matches!(
            self,
            Self::IfAddrAdded | Self::IfAddrRemoved | Self::IfAddrChanged
        )
    }
}

wire_enum! {
    /// Where a trigger came from.
    Source => Source {
        Rtnetlink = Rtnetlink: "rtnetlink",
        NetworkManager = Networkmanager: "networkmanager",
        Client = Client: "client",
        Ieee802_21 = Ieee80221: "ieee802-21",
        Threshold = Threshold: "threshold",
        TriggerDb = TriggerDb: "trigger-db",
    }
}

wire_enum! {
    InterfaceKind => InterfaceKind {
        Ethernet = Ethernet: "ethernet",
        Wlan = Wlan: "wlan",
        Wwan = Wwan: "wwan",
        Tunnel = Tunnel: "tunnel",
        Loopback = Loopback: "loopback",
        Veth = Veth: "veth",
        Bridge = Bridge: "bridge",
        Vlan = Vlan: "vlan",
        Bond = Bond: "bond",
        Other = Other: "other",
    }
}

wire_enum! {
    /// IEEE 802.21 LINK_TYPE (IEEE 802.21-2008 Table F.12).
    LinkType => LinkType {
        Gsm = Gsm: "gsm",
        Gprs = Gprs: "gprs",
        Edge = Edge: "edge",
        Ethernet = Ethernet: "ethernet",
        WirelessOther = WirelessOther: "wireless-other",
        Ieee802_11 = Ieee80211: "ieee802-11",
        Cdma2000 = Cdma2000: "cdma2000",
        Umts = Umts: "umts",
        Cdma2000Hrpd = Cdma2000Hrpd: "cdma2000-hrpd",
        Ieee802_16 = Ieee80216: "ieee802-16",
        Ieee802_20 = Ieee80220: "ieee802-20",
        Ieee802_22 = Ieee80222: "ieee802-22",
        Lte = Lte: "lte",
    }
}

wire_enum! {
    /// Which code book a [`Reason`]'s code belongs to.
    ReasonSpace => ReasonSpace {
        LinkDown = LinkDown: "link-down",
        LinkGoingDown = LinkGoingDown: "link-going-down",
        NmDevice = NmDevice: "nm-device",
        NmActiveConnection = NmActiveConnection: "nm-active-connection",
        TriggerDb = TriggerDb: "trigger-db",
    }
}

wire_enum! {
    /// IFA_F_* address flags.
    AddressFlag => AddressFlag {
        Secondary = Secondary: "secondary",
        NoDad = Nodad: "nodad",
        Optimistic = Optimistic: "optimistic",
        DadFailed = Dadfailed: "dadfailed",
        HomeAddress = Homeaddress: "homeaddress",
        Deprecated = Deprecated: "deprecated",
        Tentative = Tentative: "tentative",
        Permanent = Permanent: "permanent",
        ManageTempAddr = Managetempaddr: "managetempaddr",
        NoPrefixRoute = Noprefixroute: "noprefixroute",
        McAutoJoin = Mcautojoin: "mcautojoin",
        StablePrivacy = StablePrivacy: "stable-privacy",
    }
}

wire_enum! {
    /// IF_OPER_* (RFC 2863 ifOperStatus).
    OperState => OperState {
        Unknown = Unknown: "unknown",
        NotPresent = NotPresent: "notpresent",
        Down = Down: "down",
        LowerLayerDown = LowerLayerDown: "lowerlayerdown",
        Testing = Testing: "testing",
        Dormant = Dormant: "dormant",
        Up = Up: "up",
    }
}

wire_enum! {
    /// IEEE 802.21 LINK_GEN_PARAM types.
    LinkParameterType => LinkParameterType {
        DataRate = DataRate: "data-rate",
        SignalStrength = SignalStrength: "signal-strength",
        Sinr = Sinr: "sinr",
        Throughput = Throughput: "throughput",
        PacketErrorRate = PacketErrorRate: "packet-error-rate",
    }
}

wire_enum! {
    ParameterUnit => ParameterUnit {
        Dbm = Dbm: "dbm",
        Percent = Percent: "percent",
        Db = Db: "db",
        Kbps = Kbps: "kbps",
    }
}

/// IEEE 802.21 LINK_DOWN_REASON codes (IEEE 802.21-2008 Table F.7).
pub mod link_down_reason {
    pub const EXPLICIT_DISCONNECT: u32 = 0;
    pub const PACKET_TIMEOUT: u32 = 1;
    pub const NO_RESOURCE: u32 = 2;
    pub const NO_BROADCAST: u32 = 3;
    pub const AUTHENTICATION_FAILURE: u32 = 4;
    pub const BILLING_FAILURE: u32 = 5;
    /// Names by code; 128..=255 are vendor specific.
    pub const NAMES: &[&str] = &[
        "explicit-disconnect",
        "packet-timeout",
        "no-resource",
        "no-broadcast",
        "authentication-failure",
        "billing-failure",
    ];
}

/// IEEE 802.21 LINK_GD_REASON codes (IEEE 802.21-2008 Table F.7).
pub mod link_going_down_reason {
    pub const EXPLICIT_DISCONNECT: u32 = 0;
    pub const LINK_PARAMETER_DEGRADING: u32 = 1;
    pub const LOW_POWER: u32 = 2;
    pub const NO_RESOURCE: u32 = 3;
    /// Names by code; 128..=255 are vendor specific.
    pub const NAMES: &[&str] = &[
        "explicit-disconnect",
        "link-parameter-degrading",
        "low-power",
        "no-resource",
    ];
}

/// A time in nanoseconds since the Unix epoch; serde form RFC 3339.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn now() -> Self {
        Self::from(SystemTime::now())
    }

    pub fn nanos(self) -> i64 {
        self.0
    }

    pub fn to_wire(self) -> prost_types::Timestamp {
        prost_types::Timestamp {
            seconds: self.0.div_euclid(1_000_000_000),
            nanos: self.0.rem_euclid(1_000_000_000) as i32,
        }
    }

    pub fn from_wire(ts: &prost_types::Timestamp, field: &str) -> Result<Self, ValidationError> {
        if !(0..1_000_000_000).contains(&ts.nanos) {
            return Err(ValidationError::new(
                field,
                format!("nanos {} out of range 0..1e9", ts.nanos),
            ));
        }
        ts.seconds
            .checked_mul(1_000_000_000)
            .and_then(|n| n.checked_add(i64::from(ts.nanos)))
            .filter(|n| *n >= 0)
            .map(Timestamp)
            .ok_or_else(|| ValidationError::new(field, "outside 1970..2262"))
    }

    pub fn to_system_time(self) -> SystemTime {
        UNIX_EPOCH + Duration::from_nanos(self.0.max(0) as u64)
    }
}

impl From<SystemTime> for Timestamp {
    fn from(t: SystemTime) -> Self {
        let ns = t
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        Timestamp(ns)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}",
            humantime::format_rfc3339_micros(self.to_system_time())
        )
    }
}

impl FromStr for Timestamp {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        humantime::parse_rfc3339_weak(s)
            .map(Timestamp::from)
            .map_err(|e| format!("not an RFC 3339 time {s:?}: {e}"))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Interface {
    /// Kernel ifindex; 0 if unknown.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub index: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<InterfaceKind>,
    /// rtnetlink IFLA_INFO_KIND ("veth", "wireguard", ...).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub driver_kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_type: Option<LinkType>,
}

fn is_zero<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// Longest interface name accepted from clients (link identifiers of an MIH
/// function may be longer than the kernel's IFNAMSIZ).
pub const MAX_INTERFACE_NAME: usize = 64;

impl Interface {
    pub fn to_wire(&self) -> pb::Interface {
        pb::Interface {
            index: self.index,
            name: self.name.clone(),
            kind: self.kind.map_or(0, InterfaceKind::to_wire),
            driver_kind: self.driver_kind.clone(),
            link_type: self.link_type.map_or(0, LinkType::to_wire),
        }
    }

    pub fn from_wire(w: &pb::Interface, field: &str) -> Result<Self, ValidationError> {
        check_name(&w.name, Sub(field, "name"))?;
        if w.name.is_empty() && w.index == 0 {
            return Err(ValidationError::new(field, "needs a name or an index"));
        }
        if w.driver_kind.len() > 32 {
            return Err(ValidationError::new(
                sub(field, "driver_kind"),
                "longer than 32 bytes",
            ));
        }
        Ok(Self {
            index: w.index,
            name: w.name.clone(),
            kind: InterfaceKind::from_wire_opt(w.kind, Sub(field, "kind"))?,
            driver_kind: w.driver_kind.clone(),
            link_type: LinkType::from_wire_opt(w.link_type, Sub(field, "link_type"))?,
        })
    }
}

/// Checks an interface name from outside: bounded, printable.
pub fn check_name(name: &str, field: impl FieldPath) -> Result<(), ValidationError> {
    if name.len() > MAX_INTERFACE_NAME {
        return Err(ValidationError::new(
            field.path(),
            format!("longer than {MAX_INTERFACE_NAME} bytes"),
        ));
    }
    if name.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(ValidationError::new(
            field.path(),
            "contains whitespace or control characters",
        ));
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Address {
    pub address: IpAddr,
    pub prefix_len: u8,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flags: Vec<AddressFlag>,
    /// Seconds; `None` = forever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_lifetime_s: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_lifetime_s: Option<u32>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub scope: u8,
}

impl Address {
    pub fn has(&self, flag: AddressFlag) -> bool {
        self.flags.contains(&flag)
    }

    pub fn to_wire(&self) -> pb::Address {
        pb::Address {
            address: self.address.to_string(),
            prefix_len: u32::from(self.prefix_len),
            family: match self.address {
                IpAddr::V4(_) => pb::AddressFamily::Ipv4,
                IpAddr::V6(_) => pb::AddressFamily::Ipv6,
            } as i32,
            flags: self.flags.iter().map(|f| f.to_wire()).collect(),
            valid_lifetime_s: self.valid_lifetime_s,
            preferred_lifetime_s: self.preferred_lifetime_s,
            scope: u32::from(self.scope),
        }
    }

    pub fn from_wire(w: &pb::Address, field: &str) -> Result<Self, ValidationError> {
        let address: IpAddr = w.address.parse().map_err(|_| {
            ValidationError::new(
                sub(field, "address"),
                format!("not an IP address: {:?}", w.address),
            )
        })?;
        let max = if address.is_ipv4() { 32 } else { 128 };
        if w.prefix_len > max {
            return Err(ValidationError::new(
                sub(field, "prefix_len"),
                format!("{} exceeds {max}", w.prefix_len),
            ));
        }
        match pb::AddressFamily::try_from(w.family) {
            Ok(pb::AddressFamily::Unspecified) => {}
            Ok(pb::AddressFamily::Ipv4) if address.is_ipv4() => {}
            Ok(pb::AddressFamily::Ipv6) if address.is_ipv6() => {}
            Ok(_) => {
                return Err(ValidationError::new(
                    sub(field, "family"),
                    "does not match the address",
                ));
            }
            Err(_) => {
                return Err(ValidationError::new(
                    sub(field, "family"),
                    format!("unknown value {}", w.family),
                ));
            }
        }
        if w.scope > 255 {
            return Err(ValidationError::new(
                sub(field, "scope"),
                format!("{} exceeds 255", w.scope),
            ));
        }
        let flags = w
            .flags
            .iter()
            .enumerate()
            .map(|(i, f)| AddressFlag::from_wire(*f, format!("{field}.flags[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            address,
            prefix_len: w.prefix_len as u8,
            flags,
            valid_lifetime_s: w.valid_lifetime_s,
            preferred_lifetime_s: w.preferred_lifetime_s,
            scope: w.scope as u8,
        })
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix_len)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reason {
    pub space: ReasonSpace,
    pub code: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
}

impl Reason {
    /// An IEEE 802.21 reason with its standard name.
    pub fn ieee(space: ReasonSpace, code: u32) -> Self {
        let names = match space {
            ReasonSpace::LinkDown => link_down_reason::NAMES,
            ReasonSpace::LinkGoingDown => link_going_down_reason::NAMES,
            _ => &[],
        };
        let name = names
            .get(code as usize)
            .map(|s| (*s).to_owned())
            .unwrap_or_else(|| format!("vendor-{code}"));
        Self { space, code, name }
    }

    /// Parses a reason name or number of a code book (as `triggerctl add
    /// --reason` takes it).
    pub fn parse_in(space: ReasonSpace, s: &str) -> Result<Self, String> {
        if let Ok(code) = s.parse::<u32>() {
            return Ok(Self::ieee(space, code));
        }
        let names = match space {
            ReasonSpace::LinkDown => link_down_reason::NAMES,
            ReasonSpace::LinkGoingDown => link_going_down_reason::NAMES,
            _ => &[],
        };
        let norm = s.to_ascii_lowercase().replace('_', "-");
        names
            .iter()
            .position(|n| *n == norm)
            .map(|code| Self::ieee(space, code as u32))
            .ok_or_else(|| format!("unknown {space} reason {s:?}; one of: {}", names.join(", ")))
    }

    pub fn to_wire(&self) -> pb::Reason {
        pb::Reason {
            space: self.space.to_wire(),
            code: self.code,
            name: self.name.clone(),
        }
    }

    pub fn from_wire(w: &pb::Reason, field: &str) -> Result<Self, ValidationError> {
        let space = ReasonSpace::from_wire(w.space, Sub(field, "space"))?;
        let ieee_max = match space {
            ReasonSpace::LinkDown => Some(link_down_reason::NAMES.len() as u32),
            ReasonSpace::LinkGoingDown => Some(link_going_down_reason::NAMES.len() as u32),
            _ => None,
        };
        if let Some(max) = ieee_max
            && !(w.code < max || (128..=255).contains(&w.code))
        {
            return Err(ValidationError::new(
                sub(field, "code"),
                format!(
                    "{} is not a {space} reason (0..{} or vendor 128..255)",
                    w.code,
                    max - 1
                ),
            ));
        }
        if w.name.len() > 128 {
            return Err(ValidationError::new(
                sub(field, "name"),
                "longer than 128 bytes",
            ));
        }
        let mut r = Self {
            space,
            code: w.code,
            name: w.name.clone(),
        };
        if r.name.is_empty() && ieee_max.is_some() {
            r.name = Self::ieee(space, w.code).name;
        }
        Ok(r)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct LinkState {
    pub admin_up: bool,
    pub carrier: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oper_state: Option<OperState>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub mtu: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
}

impl LinkState {
    /// Up for traffic: administratively up with carrier, and not reported
    /// down by the operational state.
    pub fn is_up(&self) -> bool {
        self.admin_up
            && self.carrier
            && !matches!(
                self.oper_state,
                Some(OperState::Down | OperState::LowerLayerDown | OperState::NotPresent)
            )
    }

    pub fn to_wire(&self) -> pb::LinkState {
        pb::LinkState {
            admin_up: self.admin_up,
            carrier: self.carrier,
            oper_state: self.oper_state.map_or(0, OperState::to_wire),
            mtu: self.mtu,
            mac: self.mac.clone(),
        }
    }

    pub fn from_wire(w: &pb::LinkState, field: &str) -> Result<Self, ValidationError> {
        if w.mac.len() > 64 {
            return Err(ValidationError::new(
                sub(field, "mac"),
                "longer than 64 bytes",
            ));
        }
        Ok(Self {
            admin_up: w.admin_up,
            carrier: w.carrier,
            oper_state: OperState::from_wire_opt(w.oper_state, Sub(field, "oper_state"))?,
            mtu: w.mtu,
            mac: w.mac.clone(),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkParameter {
    #[serde(rename = "type")]
    pub kind: LinkParameterType,
    pub value: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<ParameterUnit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold_crossed: Option<f64>,
}

impl LinkParameter {
    fn to_wire(&self) -> pb::LinkParameter {
        pb::LinkParameter {
            r#type: self.kind.to_wire(),
            value: self.value,
            unit: self.unit.map_or(0, ParameterUnit::to_wire),
            threshold_crossed: self.threshold_crossed,
        }
    }

    fn from_wire(w: &pb::LinkParameter, field: &str) -> Result<Self, ValidationError> {
        if !w.value.is_finite() {
            return Err(ValidationError::new(
                sub(field, "value"),
                "not a finite number",
            ));
        }
        if w.threshold_crossed.is_some_and(|t| !t.is_finite()) {
            return Err(ValidationError::new(
                sub(field, "threshold_crossed"),
                "not a finite number",
            ));
        }
        Ok(Self {
            kind: LinkParameterType::from_wire(w.r#type, Sub(field, "type"))?,
            value: w.value,
            unit: ParameterUnit::from_wire_opt(w.unit, Sub(field, "unit"))?,
            threshold_crossed: w.threshold_crossed,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefaultRoute {
    /// `None` for a device route (no gateway).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    pub ipv6: bool,
    #[serde(default)]
    pub metric: u32,
    #[serde(default)]
    pub table: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resync {
    pub cause: String,
    pub links: u32,
    pub addresses: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Connectivity {
    pub state: String,
    pub code: u32,
}

/// The typed parameters of a trigger; which one depends on its type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum Detail {
    LinkState(LinkState),
    GoingDown {
        time_interval_ms: u32,
    },
    ParametersReport {
        parameters: Vec<LinkParameter>,
    },
    Handover {
        old_link: Interface,
        new_link: Interface,
    },
    DefaultRoute(DefaultRoute),
    Resync(Resync),
    Connectivity(Connectivity),
}

/// Most parameters one Link_Parameters_Report may carry.
pub const MAX_PARAMETERS: usize = 64;

impl Detail {
    fn to_wire(&self) -> pb::trigger::Detail {
        use pb::trigger::Detail as D;
        match self {
            Detail::LinkState(s) => D::LinkState(s.to_wire()),
            Detail::GoingDown { time_interval_ms } => D::GoingDown(pb::GoingDown {
                time_interval_ms: *time_interval_ms,
            }),
            Detail::ParametersReport { parameters } => D::ParametersReport(pb::ParametersReport {
                parameters: parameters.iter().map(LinkParameter::to_wire).collect(),
            }),
            Detail::Handover { old_link, new_link } => D::Handover(pb::Handover {
                old_link: Some(old_link.to_wire()),
                new_link: Some(new_link.to_wire()),
            }),
            Detail::DefaultRoute(r) => D::DefaultRoute(pb::DefaultRoute {
                family: if r.ipv6 {
                    pb::AddressFamily::Ipv6
                } else {
                    pb::AddressFamily::Ipv4
                } as i32,
                gateway: r.gateway.map(|g| g.to_string()).unwrap_or_default(),
                metric: r.metric,
                table: r.table,
            }),
            Detail::Resync(r) => D::Resync(pb::Resync {
                cause: r.cause.clone(),
                links: r.links,
                addresses: r.addresses,
            }),
            Detail::Connectivity(c) => D::Connectivity(pb::Connectivity {
                state: c.state.clone(),
                code: c.code,
            }),
        }
    }

    fn from_wire(w: &pb::trigger::Detail, field: &str) -> Result<Self, ValidationError> {
        use pb::trigger::Detail as D;
        Ok(match w {
            D::LinkState(s) => {
                Detail::LinkState(LinkState::from_wire(s, &sub(field, "link_state"))?)
            }
            D::GoingDown(g) => Detail::GoingDown {
                time_interval_ms: g.time_interval_ms,
            },
            D::ParametersReport(r) => {
                let f = sub(field, "parameters_report.parameters");
                if r.parameters.is_empty() {
                    return Err(ValidationError::new(f, "is empty"));
                }
                if r.parameters.len() > MAX_PARAMETERS {
                    return Err(ValidationError::new(
                        f,
                        format!("more than {MAX_PARAMETERS} entries"),
                    ));
                }
                Detail::ParametersReport {
                    parameters: r
                        .parameters
                        .iter()
                        .enumerate()
                        .map(|(i, p)| LinkParameter::from_wire(p, &format!("{f}[{i}]")))
                        .collect::<Result<_, _>>()?,
                }
            }
            D::Handover(h) => {
                let link = |l: &Option<pb::Interface>, name: &str| {
                    let f = sub(field, &format!("handover.{name}"));
                    l.as_ref()
                        .ok_or_else(|| ValidationError::new(&f, "is required"))
                        .and_then(|l| Interface::from_wire(l, &f))
                };
                Detail::Handover {
                    old_link: link(&h.old_link, "old_link")?,
                    new_link: link(&h.new_link, "new_link")?,
                }
            }
            D::DefaultRoute(r) => {
                let f = sub(field, "default_route");
                let gateway = if r.gateway.is_empty() {
                    None
                } else {
                    Some(r.gateway.parse::<IpAddr>().map_err(|_| {
                        ValidationError::new(
                            sub(&f, "gateway"),
                            format!("not an IP address: {:?}", r.gateway),
                        )
                    })?)
                };
                let ipv6 = match pb::AddressFamily::try_from(r.family) {
                    Ok(pb::AddressFamily::Ipv4) => false,
                    Ok(pb::AddressFamily::Ipv6) => true,
                    Ok(pb::AddressFamily::Unspecified) => gateway.is_some_and(|g| g.is_ipv6()),
                    Err(_) => {
                        return Err(ValidationError::new(
                            sub(&f, "family"),
                            format!("unknown value {}", r.family),
                        ));
                    }
                };
                Detail::DefaultRoute(DefaultRoute {
                    gateway,
                    ipv6,
                    metric: r.metric,
                    table: r.table,
                })
            }
            D::Resync(r) => Detail::Resync(Resync {
                cause: r.cause.clone(),
                links: r.links,
                addresses: r.addresses,
            }),
            D::Connectivity(c) => Detail::Connectivity(Connectivity {
                state: c.state.clone(),
                code: c.code,
            }),
        })
    }
}

/// One trigger: what happened, where, when, and who saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trigger {
    /// Database-assigned, strictly increasing; 0 = not stored (yet).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub id: u64,
    pub observed_at: Timestamp,
    pub source: Source,
    #[serde(rename = "type")]
    pub kind: TriggerType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<Interface>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Address>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Reason>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub origin: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<Detail>,
}

impl Trigger {
    /// A new, unstored trigger observed now.
    pub fn new(source: Source, kind: TriggerType) -> Self {
        Self {
            id: 0,
            observed_at: Timestamp::now(),
            source,
            kind,
            interface: None,
            address: None,
            reason: None,
            origin: String::new(),
            detail: None,
        }
    }

    pub fn interface_name(&self) -> Option<&str> {
        self.interface.as_ref().map(|i| i.name.as_str())
    }

    pub fn to_wire(&self) -> pb::Trigger {
        pb::Trigger {
            id: self.id,
            observed_at: Some(self.observed_at.to_wire()),
            source: self.source.to_wire(),
            r#type: self.kind.to_wire(),
            interface: self.interface.as_ref().map(Interface::to_wire),
            address: self.address.as_ref().map(Address::to_wire),
            reason: self.reason.as_ref().map(Reason::to_wire),
            origin: self.origin.clone(),
            detail: self.detail.as_ref().map(Detail::to_wire),
        }
    }

    /// Decodes a trigger the daemon itself wrote (the store's rows): the
    /// structure is checked as for any input, but no Add rules apply.
    pub fn from_stored(w: &pb::Trigger) -> Result<Self, ValidationError> {
        let observed_at = w
            .observed_at
            .as_ref()
            .ok_or_else(|| ValidationError::new("observed_at", "is required"))
            .and_then(|t| Timestamp::from_wire(t, "observed_at"))?;
        let mut t = Self::from_wire_parts(w, "", observed_at)?;
        t.id = w.id;
        t.source = Source::from_wire(w.source, "source")?;
        Ok(t)
    }

    /// Checks a trigger a client wants to add (`field` is its path, e.g.
    /// `triggers[3]`): id must be 0, source client or IEEE 802.21 (default
    /// client), observed_at defaults to `now`, and the fields its type needs
    /// must be there.
    pub fn from_client(
        w: &pb::Trigger,
        field: &str,
        now: Timestamp,
    ) -> Result<Self, ValidationError> {
        if w.id != 0 {
            return Err(ValidationError::new(
                sub(field, "id"),
                "must be 0: ids are assigned by the database",
            ));
        }
        let source = match Source::from_wire_opt(w.source, Sub(field, "source"))? {
            None => Source::Client,
            Some(s @ (Source::Client | Source::Ieee802_21)) => s,
            Some(other) => {
                return Err(ValidationError::new(
                    sub(field, "source"),
                    format!("{other} cannot be added over the API (only client or ieee802-21)"),
                ));
            }
        };
        let observed_at = match &w.observed_at {
            None => now,
            Some(t) => Timestamp::from_wire(t, &sub(field, "observed_at"))?,
        };
        let mut t = Self::from_wire_parts(w, field, observed_at)?;
        t.source = source;
        t.check_complete(field)?;
        Ok(t)
    }

    fn from_wire_parts(
        w: &pb::Trigger,
        field: &str,
        observed_at: Timestamp,
    ) -> Result<Self, ValidationError> {
        if w.origin.len() > 256 {
            return Err(ValidationError::new(
                sub(field, "origin"),
                "longer than 256 bytes",
            ));
        }
        Ok(Self {
            id: 0,
            observed_at,
            source: Source::Client,
            kind: TriggerType::from_wire(w.r#type, Sub(field, "type"))?,
            interface: w
                .interface
                .as_ref()
                .map(|i| Interface::from_wire(i, &sub(field, "interface")))
                .transpose()?,
            address: w
                .address
                .as_ref()
                .map(|a| Address::from_wire(a, &sub(field, "address")))
                .transpose()?,
            reason: w
                .reason
                .as_ref()
                .map(|r| Reason::from_wire(r, &sub(field, "reason")))
                .transpose()?,
            origin: w.origin.clone(),
            detail: w
                .detail
                .as_ref()
                .map(|d| Detail::from_wire(d, field))
                .transpose()?,
        })
    }

    /// The fields this trigger's type needs are present and fit it.
    pub fn check_complete(&self, field: &str) -> Result<(), ValidationError> {
        if self.kind.needs_interface() && self.interface.is_none() {
            return Err(ValidationError::new(
                sub(field, "interface"),
                format!("is required for {}", self.kind),
            ));
        }
        if self.kind.needs_address() && self.address.is_none() {
            return Err(ValidationError::new(
                sub(field, "address"),
                format!("is required for {}", self.kind),
            ));
        }
        match (self.kind, &self.detail) {
            (TriggerType::LinkGoingDown, Some(Detail::GoingDown { .. })) => {}
            (TriggerType::LinkGoingDown, _) => {
                return Err(ValidationError::new(
                    sub(field, "going_down"),
                    "is required for link-going-down (time interval)",
                ));
            }
            (TriggerType::LinkParametersReport, Some(Detail::ParametersReport { .. })) => {}
            (TriggerType::LinkParametersReport, _) => {
                return Err(ValidationError::new(
                    sub(field, "parameters_report"),
                    "is required for link-parameters-report",
                ));
            }
            (
                TriggerType::LinkHandoverImminent | TriggerType::LinkHandoverComplete,
                Some(Detail::Handover { .. }),
            ) => {}
            (TriggerType::LinkHandoverImminent | TriggerType::LinkHandoverComplete, _) => {
                return Err(ValidationError::new(
                    sub(field, "handover"),
                    format!("is required for {} (old and new link)", self.kind),
                ));
            }
            (_, Some(Detail::GoingDown { .. })) => {
                return Err(ValidationError::new(
                    sub(field, "detail"),
                    format!("going_down does not fit {}", self.kind),
                ));
            }
            (_, Some(Detail::Handover { .. })) => {
                return Err(ValidationError::new(
                    sub(field, "detail"),
                    format!("handover does not fit {}", self.kind),
                ));
            }
            _ => {}
        }
        if let Some(r) = &self.reason {
            let expected = match self.kind {
                TriggerType::LinkDown => Some(ReasonSpace::LinkDown),
                TriggerType::LinkGoingDown => Some(ReasonSpace::LinkGoingDown),
                _ => None,
            };
            if let Some(expected) = expected
                && r.space != expected
                && !matches!(
                    r.space,
                    ReasonSpace::NmDevice | ReasonSpace::NmActiveConnection
                )
            {
                return Err(ValidationError::new(
                    sub(field, "reason.space"),
                    format!("{} needs a {expected} reason, not {}", self.kind, r.space),
                ));
            }
        }
        Ok(())
    }
}

/// Which triggers a subscription, dump, flush or query applies to. Empty
/// lists match everything; lists AND together, entries of one list OR.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub interfaces: Vec<String>,
    pub types: Vec<TriggerType>,
    pub sources: Vec<Source>,
}

/// Most entries one filter list may have.
pub const MAX_FILTER_ENTRIES: usize = 256;

impl Filter {
    pub fn matches(&self, t: &Trigger) -> bool {
        (self.types.is_empty() || self.types.contains(&t.kind))
            && (self.sources.is_empty() || self.sources.contains(&t.source))
            && (self.interfaces.is_empty()
                || t.interface_name()
                    .is_some_and(|n| self.interfaces.iter().any(|i| i == n)))
    }

    pub fn is_empty(&self) -> bool {
        self.interfaces.is_empty() && self.types.is_empty() && self.sources.is_empty()
    }

    pub fn to_wire(&self) -> pb::TriggerFilter {
        pb::TriggerFilter {
            interfaces: self.interfaces.clone(),
            types: self.types.iter().map(|t| t.to_wire()).collect(),
            sources: self.sources.iter().map(|s| s.to_wire()).collect(),
        }
    }

    pub fn from_wire(w: Option<&pb::TriggerFilter>, field: &str) -> Result<Self, ValidationError> {
        let Some(w) = w else {
            return Ok(Self::default());
        };
        for (name, len) in [
            ("interfaces", w.interfaces.len()),
            ("types", w.types.len()),
            ("sources", w.sources.len()),
        ] {
            if len > MAX_FILTER_ENTRIES {
                return Err(ValidationError::new(
                    sub(field, name),
                    format!("more than {MAX_FILTER_ENTRIES} entries"),
                ));
            }
        }
        for (i, n) in w.interfaces.iter().enumerate() {
            check_name(n, format!("{}[{i}]", sub(field, "interfaces")))?;
            if n.is_empty() {
                return Err(ValidationError::new(
                    format!("{}[{i}]", sub(field, "interfaces")),
                    "is empty",
                ));
            }
        }
        Ok(Self {
            interfaces: w.interfaces.clone(),
            types: w
                .types
                .iter()
                .enumerate()
                .map(|(i, t)| TriggerType::from_wire(*t, format!("{}[{i}]", sub(field, "types"))))
                .collect::<Result<_, _>>()?,
            sources: w
                .sources
                .iter()
                .enumerate()
                .map(|(i, s)| Source::from_wire(*s, format!("{}[{i}]", sub(field, "sources"))))
                .collect::<Result<_, _>>()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn going_down_wire() -> pb::Trigger {
        Trigger {
            kind: TriggerType::LinkGoingDown,
            interface: Some(Interface {
                name: "wlan0".into(),
                ..Default::default()
            }),
            reason: Some(Reason::ieee(
                ReasonSpace::LinkGoingDown,
                link_going_down_reason::LINK_PARAMETER_DEGRADING,
            )),
            detail: Some(Detail::GoingDown {
                time_interval_ms: 500,
            }),
            ..Trigger::new(Source::Client, TriggerType::LinkGoingDown)
        }
        .to_wire()
    }

    #[test]
    fn client_trigger_round_trips_through_the_wire() {
        let w = going_down_wire();
        let t = Trigger::from_client(&w, "triggers[0]", Timestamp(5)).unwrap();
        assert_eq!(t.to_wire(), w);
        assert_eq!(t.reason.as_ref().unwrap().name, "link-parameter-degrading");
    }

    #[test]
    fn out_of_range_enum_names_the_field() {
        let mut w = going_down_wire();
        w.r#type = 99;
        let e = Trigger::from_client(&w, "triggers[3]", Timestamp(0)).unwrap_err();
        assert_eq!(e.field, "triggers[3].type");
        assert!(e.problem.contains("99"), "{e}");
        let mut w = going_down_wire();
        w.interface.as_mut().unwrap().kind = 1234;
        let e = Trigger::from_client(&w, "t", Timestamp(0)).unwrap_err();
        assert_eq!(e.field, "t.interface.kind");
    }

    #[test]
    fn missing_required_fields_are_named() {
        let mut w = going_down_wire();
        w.detail = None;
        let e = Trigger::from_client(&w, "triggers[1]", Timestamp(0)).unwrap_err();
        assert_eq!(e.field, "triggers[1].going_down");
        let mut w = going_down_wire();
        w.interface = None;
        let e = Trigger::from_client(&w, "triggers[1]", Timestamp(0)).unwrap_err();
        assert_eq!(e.field, "triggers[1].interface");
        let mut w = going_down_wire();
        w.r#type = 0;
        let e = Trigger::from_client(&w, "x", Timestamp(0)).unwrap_err();
        assert_eq!(e.to_string(), "x.type: must be set");
    }

    #[test]
    fn reason_codes_outside_the_code_book_are_rejected() {
        let mut w = going_down_wire();
        w.reason.as_mut().unwrap().code = 7;
        let e = Trigger::from_client(&w, "t", Timestamp(0)).unwrap_err();
        assert_eq!(e.field, "t.reason.code");
        w.reason.as_mut().unwrap().code = 200; // vendor range
        Trigger::from_client(&w, "t", Timestamp(0)).unwrap();
    }

    #[test]
    fn clients_cannot_forge_kernel_sources_or_ids() {
        let mut w = going_down_wire();
        w.source = Source::Rtnetlink.to_wire();
        assert_eq!(
            Trigger::from_client(&w, "t", Timestamp(0))
                .unwrap_err()
                .field,
            "t.source"
        );
        let mut w = going_down_wire();
        w.id = 7;
        assert_eq!(
            Trigger::from_client(&w, "t", Timestamp(0))
                .unwrap_err()
                .field,
            "t.id"
        );
    }

    #[test]
    fn address_prefix_and_family_are_checked() {
        let mut a = pb::Address {
            address: "192.0.2.1".into(),
            prefix_len: 33,
            ..Default::default()
        };
        assert_eq!(
            Address::from_wire(&a, "a").unwrap_err().field,
            "a.prefix_len"
        );
        a.prefix_len = 24;
        a.family = pb::AddressFamily::Ipv6 as i32;
        assert_eq!(Address::from_wire(&a, "a").unwrap_err().field, "a.family");
        a.address = "nonsense".into();
        assert_eq!(Address::from_wire(&a, "a").unwrap_err().field, "a.address");
    }

    #[test]
    fn json_form_is_kebab_case_and_round_trips() {
        let mut w = going_down_wire();
        w.observed_at = Some(Timestamp(1_700_000_000_123_456_000).to_wire());
        let t = Trigger::from_client(&w, "t", Timestamp(0)).unwrap();
        let json = serde_json::to_string(&t).unwrap();
        assert!(json.contains(r#""type":"link-going-down""#), "{json}");
        assert!(
            json.contains(r#""observed_at":"2023-11-14T22:13:20.123456Z""#),
            "{json}"
        );
        let back: Trigger = serde_json::from_str(&json).unwrap();
        assert_eq!(back, t);
    }

    #[test]
    fn enum_names_parse_loosely() {
        assert_eq!(
            "LINK_GOING_DOWN".parse::<TriggerType>(),
            Ok(TriggerType::LinkGoingDown)
        );
        assert_eq!(
            "if-addr-added".parse::<TriggerType>(),
            Ok(TriggerType::IfAddrAdded)
        );
        assert!(
            "bogus"
                .parse::<TriggerType>()
                .unwrap_err()
                .contains("link-up")
        );
    }

    #[test]
    fn filter_matches_all_lists() {
        let t = Trigger::from_client(&going_down_wire(), "t", Timestamp(0)).unwrap();
        let mut f = Filter::default();
        assert!(f.matches(&t));
        f.interfaces = vec!["eth0".into()];
        assert!(!f.matches(&t));
        f.interfaces.push("wlan0".into());
        assert!(f.matches(&t));
        f.sources = vec![Source::Rtnetlink];
        assert!(!f.matches(&t));
    }
}
