//! What the source knows about NetworkManager: the manager's state,
//! connectivity and primary connection, the devices (by object path) with
//! their interface, state and active access point's strength, and the
//! active connections. [`resync_triggers`] compares what was known with a
//! fresh read after NetworkManager (re)appeared.
//!
//! Devices are matched by interface name across a resync, not by object
//! path: a restarted NetworkManager numbers its objects anew. Nothing here
//! talks to D-Bus.

use std::collections::BTreeMap;

use super::map::{self, device_reason, device_state};
use crate::model::{Interface, Timestamp, Trigger};

/// One NetworkManager device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSnap {
    pub iface: Interface,
    /// NMDeviceType.
    pub device_type: u32,
    /// NMDeviceState.
    pub state: u32,
    /// The reason of the last state change, as NM's StateReason says.
    pub reason: u32,
    /// The Wi-Fi device's active access point, if any.
    pub active_ap: Option<String>,
    /// That access point's Strength, percent.
    pub strength: Option<u8>,
}

impl DeviceSnap {
    pub fn is_activated(&self) -> bool {
        self.state == device_state::ACTIVATED
    }
}

/// One active connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveSnap {
    /// NMActiveConnectionState.
    pub state: u32,
    /// The profile's name.
    pub id: String,
    pub vpn: bool,
    /// Object paths of its devices.
    pub devices: Vec<String>,
}

/// Everything known about one NetworkManager instance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// NMState.
    pub nm_state: u32,
    /// NMConnectivityState.
    pub connectivity: u32,
    /// The primary active connection's path; `None` for "/".
    pub primary: Option<String>,
    /// By object path.
    pub devices: BTreeMap<String, DeviceSnap>,
    /// By object path.
    pub active: BTreeMap<String, ActiveSnap>,
}

impl Snapshot {
    /// The device with interface `name`, and its path.
    pub fn device_named(&self, name: &str) -> Option<(&String, &DeviceSnap)> {
        self.devices.iter().find(|(_, d)| d.iface.name == name)
    }

    /// Paths of the devices whose active access point is `ap`.
    pub fn devices_on_ap(&self, ap: &str) -> Vec<String> {
        self.devices
            .iter()
            .filter(|(_, d)| d.active_ap.as_deref() == Some(ap))
            .map(|(p, _)| p.clone())
            .collect()
    }

    /// The interface of the first known device of an active connection.
    pub fn active_interface(&self, active: &ActiveSnap) -> Option<&Interface> {
        active
            .devices
            .iter()
            .find_map(|p| self.devices.get(p))
            .map(|d| &d.iface)
    }
}

/// The triggers that take a subscriber from `old` to `new` after
/// NetworkManager (re)appeared with `cause`: the RESYNC marker first, then
/// device transitions (a device gone while activated is reported down with
/// reason REMOVED), strength changes of active access points, VPN
/// transitions and the connectivity change. `first` (nothing was known
/// before) gives the marker alone: there is no earlier state to differ from.
pub fn resync_triggers(
    cause: &str,
    first: bool,
    old: &Snapshot,
    new: &Snapshot,
    now: Timestamp,
) -> Vec<Trigger> {
    let mut out = vec![map::resync_marker(cause, new.devices.len(), now)];
    if first {
        // No transitions on first sight (the state before is unknown), but
        // a Wi-Fi link's current strength is a measurement, not a change:
        // report it, so that thresholds have a first sample and a later
        // drop past one is a crossing rather than the start of a series.
        out.extend(new.devices.values().filter_map(|dev| {
            let (Some(s), Some(ap)) = (dev.strength, &dev.active_ap) else {
                return None;
            };
            dev.is_activated()
                .then(|| map::strength_report(&dev.iface, ap, s, now))
        }));
        return out;
    }
    for (path, dev) in &new.devices {
        let before = old.device_named(&dev.iface.name).map(|(_, d)| d);
        let old_state = before.map_or(device_state::UNKNOWN, |d| d.state);
        out.extend(map::device_transition(
            &dev.iface, path, dev.state, old_state, dev.reason, now,
        ));
        if let Some(s) = dev.strength
            && dev.is_activated()
            && before.and_then(|d| d.strength) != Some(s)
            && let Some(ap) = &dev.active_ap
        {
            out.push(map::strength_report(&dev.iface, ap, s, now));
        }
    }
    for (path, dev) in &old.devices {
        if dev.is_activated() && new.device_named(&dev.iface.name).is_none() {
            out.extend(map::device_transition(
                &dev.iface,
                path,
                device_state::UNKNOWN,
                dev.state,
                device_reason::REMOVED,
                now,
            ));
        }
    }
    let vpn_state = |snap: &Snapshot, id: &str| {
        snap.active
            .values()
            .find(|a| a.vpn && a.id == id)
            .map(|a| a.state)
    };
    for (path, ac) in new.active.iter().filter(|(_, a)| a.vpn) {
        let before = vpn_state(old, &ac.id).unwrap_or(map::active_state::UNKNOWN);
        out.extend(map::vpn_transition(
            new.active_interface(ac),
            path,
            before,
            ac.state,
            1, // NONE: the reason of a change NM made while unobserved is not known
            now,
        ));
    }
    for (path, ac) in old.active.iter().filter(|(_, a)| a.vpn) {
        if vpn_state(new, &ac.id).is_none() {
            out.extend(map::vpn_transition(
                old.active_interface(ac),
                path,
                ac.state,
                map::active_state::DEACTIVATED,
                0,
                now,
            ));
        }
    }
    out.extend(map::connectivity_transition(
        old.connectivity,
        new.connectivity,
        now,
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::TriggerType;

    fn dev(name: &str, state: u32) -> DeviceSnap {
        DeviceSnap {
            iface: map::interface(name, 3, map::device_type::ETHERNET, None),
            device_type: map::device_type::ETHERNET,
            state,
            reason: 0,
            active_ap: None,
            strength: None,
        }
    }

    fn snap(devices: &[(&str, DeviceSnap)]) -> Snapshot {
        Snapshot {
            devices: devices
                .iter()
                .map(|(p, d)| ((*p).to_owned(), d.clone()))
                .collect(),
            ..Default::default()
        }
    }

    fn kinds(t: &[Trigger]) -> Vec<(TriggerType, String)> {
        t.iter()
            .map(|t| (t.kind, t.interface_name().unwrap_or_default().to_owned()))
            .collect()
    }

    #[test]
    fn first_sync_sends_the_marker_and_the_strength_of_active_wifi_links_only() {
        let mut w = dev("wlan0", 100);
        w.active_ap = Some("/ap/1".into());
        w.strength = Some(63);
        let mut idle = dev("wlan1", 30);
        idle.active_ap = Some("/ap/2".into());
        idle.strength = Some(50);
        let new = snap(&[("/d/1", dev("eth0", 100)), ("/d/2", w), ("/d/3", idle)]);
        let t = resync_triggers(
            "nm-appeared",
            true,
            &Snapshot::default(),
            &new,
            Timestamp(0),
        );
        assert_eq!(
            kinds(&t),
            [
                (TriggerType::Resync, String::new()),
                (TriggerType::LinkParametersReport, "wlan0".into()),
            ]
        );
    }

    #[test]
    fn restart_with_unchanged_state_sends_only_the_marker_even_with_new_paths() {
        let old = snap(&[("/d/2", dev("eth0", 100)), ("/d/3", dev("eth1", 30))]);
        let new = snap(&[("/d/7", dev("eth0", 100)), ("/d/8", dev("eth1", 30))]);
        let t = resync_triggers("nm-appeared", false, &old, &new, Timestamp(0));
        assert_eq!(kinds(&t), [(TriggerType::Resync, String::new())]);
    }

    #[test]
    fn changes_while_unobserved_are_reported_after_the_marker() {
        let old = snap(&[
            ("/d/2", dev("eth0", 100)),
            ("/d/3", dev("eth1", 30)),
            ("/d/4", dev("eth2", 100)),
        ]);
        let new = snap(&[("/d/2", dev("eth0", 20)), ("/d/3", dev("eth1", 100))]);
        let t = resync_triggers("nm-appeared", false, &old, &new, Timestamp(0));
        assert_eq!(
            kinds(&t),
            [
                (TriggerType::Resync, String::new()),
                (TriggerType::LinkDown, "eth0".into()),
                (TriggerType::ConnLost, "eth0".into()),
                (TriggerType::LinkUp, "eth1".into()),
                (TriggerType::ConnEstablished, "eth1".into()),
                (TriggerType::LinkDown, "eth2".into()),
                (TriggerType::ConnLost, "eth2".into()),
            ]
        );
        let removed = t[5].reason.as_ref().unwrap();
        assert_eq!(removed.name, "NM_DEVICE_STATE_REASON_REMOVED");
    }

    #[test]
    fn a_new_strength_of_the_active_ap_is_reported_on_resync() {
        let mut w = dev("wlan0", 100);
        w.active_ap = Some("/ap/1".into());
        w.strength = Some(40);
        let old = snap(&[("/d/2", w.clone())]);
        w.strength = Some(70);
        let new = snap(&[("/d/5", w)]);
        let t = resync_triggers("nm-appeared", false, &old, &new, Timestamp(0));
        assert_eq!(t.len(), 2);
        assert_eq!(t[1].kind, TriggerType::LinkParametersReport);
        assert_eq!(new.devices_on_ap("/ap/1"), ["/d/5".to_owned()]);
    }
}
