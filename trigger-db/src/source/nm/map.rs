//! Pure translation of NetworkManager's numbers into triggers: the code
//! books (NMState, NMConnectivityState, NMDeviceType, NMDeviceState,
//! NMDeviceStateReason, NMActiveConnectionState and its reasons, as in
//! NetworkManager's `nm-dbus-interface.h`), device type to interface kind and
//! IEEE 802.21 link type, and one function per kind of change.
//!
//! No I/O and no state beyond the arguments: the actor in [`super`] decides
//! what changed; this module decides which triggers that makes. A code
//! missing from a table keeps its number and gets a name like
//! `NM_DEVICE_STATE_REASON_70` rather than an error: a newer NetworkManager
//! may add codes.

use crate::model::{
    Connectivity, Detail, Interface, InterfaceKind, LinkParameter, LinkParameterType, LinkType,
    ParameterUnit, Reason, ReasonSpace, Resync, Source, Timestamp, Trigger, TriggerType,
};

/// NMDeviceState values the mapping needs.
pub mod device_state {
    pub const UNKNOWN: u32 = 0;
    pub const UNMANAGED: u32 = 10;
    pub const UNAVAILABLE: u32 = 20;
    pub const DISCONNECTED: u32 = 30;
    pub const ACTIVATED: u32 = 100;
    pub const DEACTIVATING: u32 = 110;
    pub const FAILED: u32 = 120;
}

/// NMDeviceStateReason values the tests and docs name.
pub mod device_reason {
    pub const NONE: u32 = 0;
    pub const UNKNOWN: u32 = 1;
    pub const REMOVED: u32 = 36;
    pub const USER_REQUESTED: u32 = 39;
    pub const CARRIER: u32 = 40;
}

/// NMActiveConnectionState.
pub mod active_state {
    pub const UNKNOWN: u32 = 0;
    pub const ACTIVATING: u32 = 1;
    pub const ACTIVATED: u32 = 2;
    pub const DEACTIVATING: u32 = 3;
    pub const DEACTIVATED: u32 = 4;
}

/// NMConnectivityState.
pub mod connectivity {
    pub const UNKNOWN: u32 = 0;
    pub const NONE: u32 = 1;
    pub const PORTAL: u32 = 2;
    pub const LIMITED: u32 = 3;
    pub const FULL: u32 = 4;
}

/// NMDeviceType values with a special meaning here.
pub mod device_type {
    pub const ETHERNET: u32 = 1;
    pub const WIFI: u32 = 2;
    pub const MODEM: u32 = 8;
}

/// NMDeviceModemCapabilities bits.
pub mod modem_caps {
    pub const POTS: u32 = 0x01;
    pub const CDMA_EVDO: u32 = 0x02;
    pub const GSM_UMTS: u32 = 0x04;
    pub const LTE: u32 = 0x08;
    pub const NR5G: u32 = 0x40;
}

const NM_STATES: &[(u32, &str)] = &[
    (0, "unknown"),
    (10, "asleep"),
    (20, "disconnected"),
    (30, "disconnecting"),
    (40, "connecting"),
    (50, "connected-local"),
    (60, "connected-site"),
    (70, "connected-global"),
];

const CONNECTIVITY_STATES: &[(u32, &str)] = &[
    (0, "unknown"),
    (1, "none"),
    (2, "portal"),
    (3, "limited"),
    (4, "full"),
];

const DEVICE_STATES: &[(u32, &str)] = &[
    (0, "unknown"),
    (10, "unmanaged"),
    (20, "unavailable"),
    (30, "disconnected"),
    (40, "prepare"),
    (50, "config"),
    (60, "need-auth"),
    (70, "ip-config"),
    (80, "ip-check"),
    (90, "secondaries"),
    (100, "activated"),
    (110, "deactivating"),
    (120, "failed"),
];

/// NMDeviceStateReason, by code (0..=67 in NetworkManager 1.42).
const DEVICE_REASONS: &[&str] = &[
    "NONE",
    "UNKNOWN",
    "NOW_MANAGED",
    "NOW_UNMANAGED",
    "CONFIG_FAILED",
    "IP_CONFIG_UNAVAILABLE",
    "IP_CONFIG_EXPIRED",
    "NO_SECRETS",
    "SUPPLICANT_DISCONNECT",
    "SUPPLICANT_CONFIG_FAILED",
    "SUPPLICANT_FAILED",
    "SUPPLICANT_TIMEOUT",
    "PPP_START_FAILED",
    "PPP_DISCONNECT",
    "PPP_FAILED",
    "DHCP_START_FAILED",
    "DHCP_ERROR",
    "DHCP_FAILED",
    "SHARED_START_FAILED",
    "SHARED_FAILED",
    "AUTOIP_START_FAILED",
    "AUTOIP_ERROR",
    "AUTOIP_FAILED",
    "MODEM_BUSY",
    "MODEM_NO_DIAL_TONE",
    "MODEM_NO_CARRIER",
    "MODEM_DIAL_TIMEOUT",
    "MODEM_DIAL_FAILED",
    "MODEM_INIT_FAILED",
    "GSM_APN_FAILED",
    "GSM_REGISTRATION_NOT_SEARCHING",
    "GSM_REGISTRATION_DENIED",
    "GSM_REGISTRATION_TIMEOUT",
    "GSM_REGISTRATION_FAILED",
    "GSM_PIN_CHECK_FAILED",
    "FIRMWARE_MISSING",
    "REMOVED",
    "SLEEPING",
    "CONNECTION_REMOVED",
    "USER_REQUESTED",
    "CARRIER",
    "CONNECTION_ASSUMED",
    "SUPPLICANT_AVAILABLE",
    "MODEM_NOT_FOUND",
    "BT_FAILED",
    "GSM_SIM_NOT_INSERTED",
    "GSM_SIM_PIN_REQUIRED",
    "GSM_SIM_PUK_REQUIRED",
    "GSM_SIM_WRONG",
    "INFINIBAND_MODE",
    "DEPENDENCY_FAILED",
    "BR2684_FAILED",
    "MODEM_MANAGER_UNAVAILABLE",
    "SSID_NOT_FOUND",
    "SECONDARY_CONNECTION_FAILED",
    "DCB_FCOE_FAILED",
    "TEAMD_CONTROL_FAILED",
    "MODEM_FAILED",
    "MODEM_AVAILABLE",
    "SIM_PIN_INCORRECT",
    "NEW_ACTIVATION",
    "PARENT_CHANGED",
    "PARENT_MANAGED_CHANGED",
    "OVSDB_FAILED",
    "IP_ADDRESS_DUPLICATE",
    "IP_METHOD_UNSUPPORTED",
    "SRIOV_CONFIGURATION_FAILED",
    "PEER_NOT_FOUND",
];

/// NMActiveConnectionStateReason, by code (0..=14).
const ACTIVE_REASONS: &[&str] = &[
    "UNKNOWN",
    "NONE",
    "USER_DISCONNECTED",
    "DEVICE_DISCONNECTED",
    "SERVICE_STOPPED",
    "IP_CONFIG_INVALID",
    "CONNECT_TIMEOUT",
    "SERVICE_START_TIMEOUT",
    "SERVICE_START_FAILED",
    "NO_SECRETS",
    "LOGIN_FAILED",
    "CONNECTION_REMOVED",
    "DEPENDENCY_FAILED",
    "DEVICE_REALIZE_FAILED",
    "DEVICE_REMOVED",
];

const ACTIVE_STATES: &[(u32, &str)] = &[
    (0, "unknown"),
    (1, "activating"),
    (2, "activated"),
    (3, "deactivating"),
    (4, "deactivated"),
];

fn lookup(table: &[(u32, &'static str)], code: u32) -> Option<&'static str> {
    table.iter().find(|(c, _)| *c == code).map(|(_, n)| *n)
}

/// NMState name ("connected-global"), or `None` for a code not in the book.
pub fn nm_state_name(code: u32) -> Option<&'static str> {
    lookup(NM_STATES, code)
}

/// NMConnectivityState name ("full"), or `None`.
pub fn connectivity_name(code: u32) -> Option<&'static str> {
    lookup(CONNECTIVITY_STATES, code)
}

/// NMDeviceState name ("activated"), or `None`.
pub fn device_state_name(code: u32) -> Option<&'static str> {
    lookup(DEVICE_STATES, code)
}

/// NMActiveConnectionState name ("activated"), or `None`.
pub fn active_state_name(code: u32) -> Option<&'static str> {
    lookup(ACTIVE_STATES, code)
}

/// `Reason { nm-device, code, "NM_DEVICE_STATE_REASON_CARRIER" }`.
pub fn device_reason(code: u32) -> Reason {
    let name = match DEVICE_REASONS.get(code as usize) {
        Some(n) => format!("NM_DEVICE_STATE_REASON_{n}"),
        None => format!("NM_DEVICE_STATE_REASON_{code}"),
    };
    Reason {
        space: ReasonSpace::NmDevice,
        code,
        name,
    }
}

/// `Reason { nm-active-connection, code, "NM_ACTIVE_CONNECTION_STATE_REASON_..." }`.
pub fn active_reason(code: u32) -> Reason {
    let name = match ACTIVE_REASONS.get(code as usize) {
        Some(n) => format!("NM_ACTIVE_CONNECTION_STATE_REASON_{n}"),
        None => format!("NM_ACTIVE_CONNECTION_STATE_REASON_{code}"),
    };
    Reason {
        space: ReasonSpace::NmActiveConnection,
        code,
        name,
    }
}

/// Interface kind and IEEE 802.21 link type of an NMDeviceType; for a modem
/// the link type comes from its current NMDeviceModemCapabilities.
pub fn classify(device_type: u32, modem_caps: Option<u32>) -> (InterfaceKind, Option<LinkType>) {
    use InterfaceKind as K;
    match device_type {
        1 => (K::Ethernet, Some(LinkType::Ethernet)),
        2 | 6 | 30 => (K::Wlan, Some(LinkType::Ieee802_11)),
        5 => (K::Other, Some(LinkType::WirelessOther)), // Bluetooth PAN/DUN
        7 => (K::Wwan, Some(LinkType::Ieee802_16)),
        8 => (K::Wwan, Some(modem_link_type(modem_caps.unwrap_or(0)))),
        10 | 15 => (K::Bond, None),
        11 => (K::Vlan, Some(LinkType::Ethernet)),
        13 | 26 => (K::Bridge, None),
        16 | 17 | 19 | 21 | 29 => (K::Tunnel, None),
        20 => (K::Veth, Some(LinkType::Ethernet)),
        27 | 28 => (K::Other, Some(LinkType::WirelessOther)), // 802.15.4
        32 => (K::Loopback, None),
        _ => (K::Other, None),
    }
}

/// The best radio technology a modem says it is using.
pub fn modem_link_type(caps: u32) -> LinkType {
    if caps & (modem_caps::LTE | modem_caps::NR5G) != 0 {
        LinkType::Lte
    } else if caps & modem_caps::GSM_UMTS != 0 {
        LinkType::Umts
    } else if caps & modem_caps::CDMA_EVDO != 0 {
        LinkType::Cdma2000
    } else {
        LinkType::WirelessOther
    }
}

/// The interface of a device as triggers name it.
pub fn interface(name: &str, index: u32, device_type: u32, modem_caps: Option<u32>) -> Interface {
    let (kind, link_type) = classify(device_type, modem_caps);
    Interface {
        index,
        name: name.to_owned(),
        kind: Some(kind),
        driver_kind: String::new(),
        link_type,
    }
}

fn trigger(
    kind: TriggerType,
    interface: Option<&Interface>,
    reason: Option<Reason>,
    origin: &str,
    now: Timestamp,
) -> Trigger {
    let mut t = Trigger::new(Source::NetworkManager, kind);
    t.observed_at = now;
    t.interface = interface.cloned();
    t.reason = reason;
    t.origin = origin.to_owned();
    t
}

/// A device's StateChanged(new, old, reason): reaching ACTIVATED gives
/// LINK_UP and CONN_ESTABLISHED, leaving it LINK_DOWN and CONN_LOST, all
/// with NetworkManager's reason; other transitions give nothing.
pub fn device_transition(
    iface: &Interface,
    origin: &str,
    new: u32,
    old: u32,
    reason: u32,
    now: Timestamp,
) -> Vec<Trigger> {
    let activated = device_state::ACTIVATED;
    let pair = if new == activated && old != activated {
        [TriggerType::LinkUp, TriggerType::ConnEstablished]
    } else if old == activated && new != activated {
        [TriggerType::LinkDown, TriggerType::ConnLost]
    } else {
        return Vec::new();
    };
    pair.into_iter()
        .map(|kind| trigger(kind, Some(iface), Some(device_reason(reason)), origin, now))
        .collect()
}

/// A change of the manager's Connectivity: reaching FULL gives
/// CONN_ESTABLISHED, leaving it CONN_LOST, with the new state as detail.
/// From or to UNKNOWN (checks disabled or not run yet) says nothing.
pub fn connectivity_transition(old: u32, new: u32, now: Timestamp) -> Option<Trigger> {
    use connectivity::{FULL, UNKNOWN};
    if old == new || old == UNKNOWN || new == UNKNOWN {
        return None;
    }
    let kind = if new == FULL {
        TriggerType::ConnEstablished
    } else if old == FULL {
        TriggerType::ConnLost
    } else {
        return None;
    };
    let mut t = trigger(kind, None, None, super::proxy::NM_PATH, now);
    t.detail = Some(Detail::Connectivity(Connectivity {
        state: connectivity_name(new).unwrap_or("unknown").to_owned(),
        code: new,
    }));
    Some(t)
}

/// An active VPN connection's StateChanged(state, reason): reaching
/// ACTIVATED gives CONN_ESTABLISHED, leaving it CONN_LOST, with the reason.
/// (Connections of a device are reported by the device's transitions.)
pub fn vpn_transition(
    iface: Option<&Interface>,
    origin: &str,
    old: u32,
    new: u32,
    reason: u32,
    now: Timestamp,
) -> Option<Trigger> {
    let activated = active_state::ACTIVATED;
    let kind = if new == activated && old != activated {
        TriggerType::ConnEstablished
    } else if old == activated && new != activated {
        TriggerType::ConnLost
    } else {
        return None;
    };
    Some(trigger(
        kind,
        iface,
        Some(active_reason(reason)),
        origin,
        now,
    ))
}

/// An access point's Strength as a LINK_PARAMETERS_REPORT of the device.
pub fn strength_report(iface: &Interface, origin: &str, percent: u8, now: Timestamp) -> Trigger {
    let mut t = trigger(
        TriggerType::LinkParametersReport,
        Some(iface),
        None,
        origin,
        now,
    );
    t.detail = Some(Detail::ParametersReport {
        parameters: vec![LinkParameter {
            kind: LinkParameterType::SignalStrength,
            value: f64::from(percent),
            unit: Some(ParameterUnit::Percent),
            threshold_crossed: None,
        }],
    });
    t
}

/// The RESYNC marker sent when NetworkManager (re)appears: `links` counts
/// its devices; `addresses` is 0 (the source does not follow addresses).
pub fn resync_marker(cause: &str, devices: usize, now: Timestamp) -> Trigger {
    let mut t = trigger(TriggerType::Resync, None, None, super::proxy::NM_PATH, now);
    t.detail = Some(Detail::Resync(Resync {
        cause: cause.to_owned(),
        links: u32::try_from(devices).unwrap_or(u32::MAX),
        addresses: 0,
    }));
    t
}

/// Whether `percent` is a Strength NetworkManager can mean (0..=100).
pub fn strength_in_range(percent: u8) -> bool {
    percent <= 100
}

#[cfg(test)]
mod tests {
    use super::*;

    fn veth() -> Interface {
        interface("nmA", 7, device_type::ETHERNET, None)
    }

    const DEV: &str = "/org/freedesktop/NetworkManager/Devices/2";

    #[test]
    fn device_reaching_activated_gives_link_up_and_conn_established() {
        let t = device_transition(&veth(), DEV, 100, 90, 0, Timestamp(1));
        let kinds: Vec<_> = t.iter().map(|t| t.kind).collect();
        assert_eq!(kinds, [TriggerType::LinkUp, TriggerType::ConnEstablished]);
        for t in &t {
            assert_eq!(t.source, Source::NetworkManager);
            assert_eq!(t.origin, DEV);
            assert_eq!(t.interface.as_ref().unwrap().name, "nmA");
            assert_eq!(t.interface.as_ref().unwrap().index, 7);
            assert_eq!(t.observed_at, Timestamp(1));
            t.check_complete("t").unwrap();
        }
    }

    #[test]
    fn carrier_loss_gives_link_down_with_nm_reason_and_conn_lost() {
        let t = device_transition(&veth(), DEV, 20, 100, 40, Timestamp(1));
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].kind, TriggerType::LinkDown);
        assert_eq!(t[1].kind, TriggerType::ConnLost);
        let r = t[0].reason.as_ref().unwrap();
        assert_eq!(r.space, ReasonSpace::NmDevice);
        assert_eq!(r.code, 40);
        assert_eq!(r.name, "NM_DEVICE_STATE_REASON_CARRIER");
        // The model accepts an NM reason on LINK_DOWN.
        t[0].check_complete("t").unwrap();
        // And it survives the wire (as the store keeps it).
        let back = Trigger::from_stored(&{
            let mut w = t[0].to_wire();
            w.id = 1;
            w
        })
        .unwrap();
        assert_eq!(back.reason, t[0].reason);
    }

    #[test]
    fn transitions_that_do_not_cross_activated_give_nothing() {
        for (new, old) in [
            (30, 20),
            (40, 30),
            (90, 80),
            (20, 30),
            (110, 120),
            (100, 100),
        ] {
            assert!(
                device_transition(&veth(), DEV, new, old, 0, Timestamp(0)).is_empty(),
                "{old} -> {new}"
            );
        }
    }

    #[test]
    fn reason_codes_keep_number_and_name_even_when_unknown() {
        assert_eq!(device_reason(0).name, "NM_DEVICE_STATE_REASON_NONE");
        assert_eq!(device_reason(36).name, "NM_DEVICE_STATE_REASON_REMOVED");
        assert_eq!(
            device_reason(39).name,
            "NM_DEVICE_STATE_REASON_USER_REQUESTED"
        );
        assert_eq!(
            device_reason(67).name,
            "NM_DEVICE_STATE_REASON_PEER_NOT_FOUND"
        );
        let r = device_reason(1000);
        assert_eq!(
            (r.code, r.name.as_str()),
            (1000, "NM_DEVICE_STATE_REASON_1000")
        );
        assert_eq!(
            active_reason(3).name,
            "NM_ACTIVE_CONNECTION_STATE_REASON_DEVICE_DISCONNECTED"
        );
        assert_eq!(active_reason(3).space, ReasonSpace::NmActiveConnection);
        assert_eq!(
            active_reason(99).name,
            "NM_ACTIVE_CONNECTION_STATE_REASON_99"
        );
    }

    #[test]
    fn device_types_map_to_kind_and_link_type() {
        assert_eq!(
            classify(1, None),
            (InterfaceKind::Ethernet, Some(LinkType::Ethernet))
        );
        assert_eq!(
            classify(2, None),
            (InterfaceKind::Wlan, Some(LinkType::Ieee802_11))
        );
        assert_eq!(
            classify(8, Some(modem_caps::LTE | modem_caps::GSM_UMTS)).1,
            Some(LinkType::Lte)
        );
        assert_eq!(
            classify(8, Some(modem_caps::GSM_UMTS)).1,
            Some(LinkType::Umts)
        );
        assert_eq!(
            classify(8, Some(modem_caps::CDMA_EVDO)).1,
            Some(LinkType::Cdma2000)
        );
        assert_eq!(
            classify(8, None),
            (InterfaceKind::Wwan, Some(LinkType::WirelessOther))
        );
        assert_eq!(
            classify(8, Some(modem_caps::POTS)).1,
            Some(LinkType::WirelessOther)
        );
        assert_eq!(classify(20, None).0, InterfaceKind::Veth);
        assert_eq!(classify(29, None), (InterfaceKind::Tunnel, None));
        assert_eq!(classify(32, None).0, InterfaceKind::Loopback);
        assert_eq!(classify(9999, None), (InterfaceKind::Other, None));
    }

    #[test]
    fn connectivity_to_and_from_full_gives_conn_triggers() {
        let t =
            connectivity_transition(connectivity::NONE, connectivity::FULL, Timestamp(0)).unwrap();
        assert_eq!(t.kind, TriggerType::ConnEstablished);
        assert_eq!(
            t.detail,
            Some(Detail::Connectivity(Connectivity {
                state: "full".into(),
                code: 4
            }))
        );
        t.check_complete("t").unwrap();
        let t = connectivity_transition(connectivity::FULL, connectivity::PORTAL, Timestamp(0))
            .unwrap();
        assert_eq!(t.kind, TriggerType::ConnLost);
        assert_eq!(
            t.detail,
            Some(Detail::Connectivity(Connectivity {
                state: "portal".into(),
                code: 2
            }))
        );
        assert!(connectivity_transition(1, 3, Timestamp(0)).is_none());
        assert!(connectivity_transition(0, 4, Timestamp(0)).is_none());
        assert!(connectivity_transition(4, 0, Timestamp(0)).is_none());
        assert!(connectivity_transition(4, 4, Timestamp(0)).is_none());
    }

    #[test]
    fn vpn_activation_and_loss_carry_the_active_connection_reason() {
        let up = vpn_transition(None, "/ac/1", 1, 2, 1, Timestamp(0)).unwrap();
        assert_eq!(up.kind, TriggerType::ConnEstablished);
        let down = vpn_transition(None, "/ac/1", 2, 4, 4, Timestamp(0)).unwrap();
        assert_eq!(down.kind, TriggerType::ConnLost);
        assert_eq!(
            down.reason.unwrap().name,
            "NM_ACTIVE_CONNECTION_STATE_REASON_SERVICE_STOPPED"
        );
        assert!(vpn_transition(None, "/ac/1", 0, 1, 0, Timestamp(0)).is_none());
    }

    #[test]
    fn strength_becomes_a_signal_strength_percent_report() {
        let wlan = interface("wlan0", 0, device_type::WIFI, None);
        let t = strength_report(&wlan, "/ap/1", 42, Timestamp(0));
        assert_eq!(t.kind, TriggerType::LinkParametersReport);
        assert_eq!(
            t.interface.as_ref().unwrap().link_type,
            Some(LinkType::Ieee802_11)
        );
        let Some(Detail::ParametersReport { parameters }) = &t.detail else {
            panic!("{t:?}");
        };
        assert_eq!(parameters.len(), 1);
        assert_eq!(parameters[0].kind, LinkParameterType::SignalStrength);
        assert_eq!(parameters[0].unit, Some(ParameterUnit::Percent));
        assert!((parameters[0].value - 42.0).abs() < f64::EPSILON);
        t.check_complete("t").unwrap();
        assert!(strength_in_range(100));
        assert!(!strength_in_range(101));
    }

    #[test]
    fn state_names_cover_the_code_books() {
        assert_eq!(nm_state_name(70), Some("connected-global"));
        assert_eq!(nm_state_name(71), None);
        assert_eq!(device_state_name(100), Some("activated"));
        assert_eq!(active_state_name(4), Some("deactivated"));
        assert_eq!(connectivity_name(2), Some("portal"));
        let marker = resync_marker("nm-appeared", 3, Timestamp(0));
        assert_eq!(marker.kind, TriggerType::Resync);
        marker.check_complete("t").unwrap();
    }
}
