//! The model's enumerations and code books: trigger types (PF_TRIGGER,
//! draft-schilcher-mobike-trigger-api-03 §4, and IEEE 802.21-2008 §7.3
//! link events), sources, interface kinds, IEEE 802.21 link types and
//! reason codes, address flags, operational states and link parameters.
//!
//! Each enum has one kebab-case name per value: its JSON form, its
//! `Display` and what `FromStr` accepts (case-insensitive, `_` for `-`), so
//! `LINK_GOING_DOWN` and `link-going-down` name the same type. Their
//! `trigger.v1` numbers are [`crate::wire`]'s business.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

/// Declares a domain enum with one kebab-case name per value, used by serde,
/// `Display` and `FromStr`.
macro_rules! named_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident : $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum $name { $($(#[$vm])* #[serde(rename = $s)] $v),+ }

        impl $name {
            /// Every value, in wire order.
            pub const ALL: &'static [$name] = &[$($name::$v),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$v => $s),+ }
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

named_enum! {
    /// What a trigger says happened: PF_TRIGGER types (draft §4), IEEE 802.21
    /// link events, default-route changes and trigger-db's resync marker.
    TriggerType {
        IfAdded: "if-added",
        IfRemoved: "if-removed",
        IfRemovedSoon: "if-removed-soon",
        IfAddrAdded: "if-addr-added",
        IfAddrRemoved: "if-addr-removed",
        IfAddrChanged: "if-addr-changed",
        TunnelAdded: "tunnel-added",
        TunnelChanged: "tunnel-changed",
        TunnelRemoved: "tunnel-removed",
        ConnEstablished: "conn-established",
        ConnLost: "conn-lost",
        DestUnreachable: "dest-unreachable",
        LinkDetected: "link-detected",
        LinkUp: "link-up",
        LinkDown: "link-down",
        LinkGoingDown: "link-going-down",
        LinkParametersReport: "link-parameters-report",
        LinkHandoverImminent: "link-handover-imminent",
        LinkHandoverComplete: "link-handover-complete",
        DefaultRouteAdded: "default-route-added",
        DefaultRouteRemoved: "default-route-removed",
        Resync: "resync",
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

named_enum! {
    /// Where a trigger came from.
    Source {
        Rtnetlink: "rtnetlink",
        NetworkManager: "networkmanager",
        Client: "client",
        Ieee802_21: "ieee802-21",
        Threshold: "threshold",
        TriggerDb: "trigger-db",
    }
}

named_enum! {
    InterfaceKind {
        Ethernet: "ethernet",
        Wlan: "wlan",
        Wwan: "wwan",
        Tunnel: "tunnel",
        Loopback: "loopback",
        Veth: "veth",
        Bridge: "bridge",
        Vlan: "vlan",
        Bond: "bond",
        Other: "other",
    }
}

named_enum! {
    /// IEEE 802.21 LINK_TYPE (IEEE 802.21-2008 Table F.12).
    LinkType {
        Gsm: "gsm",
        Gprs: "gprs",
        Edge: "edge",
        Ethernet: "ethernet",
        WirelessOther: "wireless-other",
        Ieee802_11: "ieee802-11",
        Cdma2000: "cdma2000",
        Umts: "umts",
        Cdma2000Hrpd: "cdma2000-hrpd",
        Ieee802_16: "ieee802-16",
        Ieee802_20: "ieee802-20",
        Ieee802_22: "ieee802-22",
        Lte: "lte",
    }
}

named_enum! {
    /// Which code book a [`Reason`](super::Reason)'s code belongs to.
    ReasonSpace {
        LinkDown: "link-down",
        LinkGoingDown: "link-going-down",
        NmDevice: "nm-device",
        NmActiveConnection: "nm-active-connection",
        TriggerDb: "trigger-db",
    }
}

named_enum! {
    /// IFA_F_* address flags.
    AddressFlag {
        Secondary: "secondary",
        NoDad: "nodad",
        Optimistic: "optimistic",
        DadFailed: "dadfailed",
        HomeAddress: "homeaddress",
        Deprecated: "deprecated",
        Tentative: "tentative",
        Permanent: "permanent",
        ManageTempAddr: "managetempaddr",
        NoPrefixRoute: "noprefixroute",
        McAutoJoin: "mcautojoin",
        StablePrivacy: "stable-privacy",
    }
}

named_enum! {
    /// IF_OPER_* (RFC 2863 ifOperStatus).
    OperState {
        Unknown: "unknown",
        NotPresent: "notpresent",
        Down: "down",
        LowerLayerDown: "lowerlayerdown",
        Testing: "testing",
        Dormant: "dormant",
        Up: "up",
    }
}

named_enum! {
    /// IEEE 802.21 LINK_GEN_PARAM types.
    LinkParameterType {
        DataRate: "data-rate",
        SignalStrength: "signal-strength",
        Sinr: "sinr",
        Throughput: "throughput",
        PacketErrorRate: "packet-error-rate",
    }
}

named_enum! {
    ParameterUnit {
        Dbm: "dbm",
        Percent: "percent",
        Db: "db",
        Kbps: "kbps",
    }
}

impl ReasonSpace {
    /// The names of this space's codes, by code, for the IEEE 802.21 code
    /// books; `None` for the spaces whose codes are not an IEEE list.
    pub fn code_book(self) -> Option<&'static [&'static str]> {
        match self {
            ReasonSpace::LinkDown => Some(link_down_reason::NAMES),
            ReasonSpace::LinkGoingDown => Some(link_going_down_reason::NAMES),
            _ => None,
        }
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
