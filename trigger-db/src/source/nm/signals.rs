//! NetworkManager's signals, one at a time in the order it sent them:
//! device and active-connection StateChanged, the manager's StateChanged,
//! DeviceAdded and DeviceRemoved, and PropertiesChanged of the manager
//! (State, Connectivity, PrimaryConnection), Wi-Fi devices
//! (ActiveAccessPoint), access points (Strength) and devices (Ifindex,
//! Interface). Each updates what the actor knows and returns the triggers
//! [`map`] makes of the change; objects a signal names that are not known
//! yet are read first.

use std::collections::HashMap;

use tracing::{debug, info};
use zbus::{Connection, OwnedObjectPath, Variant, fdo, message::Message};

use super::{
    Actor, NmError, NmStats, Stop, map,
    map::device_state,
    path_of,
    proxy::{
        self, ACCESS_POINT_IFACE, ACTIVE_IFACE, DEVICE_IFACE, MANAGER_IFACE, NM_PATH,
        WIRELESS_IFACE, uncached,
    },
    read::{Failure, failure, non_root, read_active},
    state::DeviceSnap,
};
use crate::model::{Timestamp, Trigger};

impl Actor {
    /// A signal's arguments, if the message is that signal and they parse;
    /// a body that does not parse is counted and logged as a bad value.
    pub(super) fn args<T>(
        &self,
        what: &str,
        path: &str,
        parsed: Option<zbus::Result<T>>,
    ) -> Option<T> {
        match parsed? {
            Ok(v) => Some(v),
            Err(e) => {
                self.bad_value(what, path, &e.to_string());
                None
            }
        }
    }

    /// One signal from NetworkManager's namespace.
    pub(super) async fn on_signal(&mut self, conn: &Connection, msg: &Message) -> Result<(), Stop> {
        let header = msg.header();
        let sender = header.sender().map(|s| s.as_str().to_owned());
        if self.owner.is_none() || sender != self.owner {
            debug!(
                ?sender,
                "signal not from NetworkManager's current owner; ignored"
            );
            return Ok(());
        }
        NmStats::bump(&self.stats.signals);
        if let Some((begin, _)) = self.read_window
            && msg.recv_position() < begin
        {
            debug!("signal older than the last full read; ignored");
            return Ok(());
        }
        let interface = header.interface().map(|i| i.as_str().to_owned());
        let member = header.member().map(|m| m.as_str().to_owned());
        let path = path_of(msg);
        let now = Timestamp::now();
        let triggers = match (interface.as_deref(), member.as_deref()) {
            (Some(DEVICE_IFACE), Some("StateChanged")) => {
                self.on_device_state(conn, msg, &path, now).await?
            }
            (Some(ACTIVE_IFACE), Some("StateChanged")) => {
                self.on_active_state(conn, msg, &path, now).await?
            }
            (Some(MANAGER_IFACE), Some("StateChanged")) => {
                let state = proxy::manager::StateChanged::from_message(msg.clone())
                    .map(|s| s.args().map(|a| a.state));
                if let Some(state) = self.args("StateChanged", &path, state) {
                    self.set_nm_state(state);
                }
                Vec::new()
            }
            (Some(MANAGER_IFACE), Some("DeviceAdded")) => {
                let dev = proxy::manager::DeviceAdded::from_message(msg.clone()).map(|s| {
                    s.args()
                        .map(|a| OwnedObjectPath::from(a.device_path.clone()))
                });
                match self.args("DeviceAdded", &path, dev) {
                    Some(dev) => self.on_device_added(conn, &dev, now).await?,
                    None => Vec::new(),
                }
            }
            (Some(MANAGER_IFACE), Some("DeviceRemoved")) => {
                let dev = proxy::manager::DeviceRemoved::from_message(msg.clone())
                    .map(|s| s.args().map(|a| a.device_path.to_string()));
                match self.args("DeviceRemoved", &path, dev) {
                    Some(dev) => self.on_device_removed(&dev, now),
                    None => Vec::new(),
                }
            }
            (Some("org.freedesktop.DBus.Properties"), Some("PropertiesChanged")) => {
                self.on_properties(conn, msg, &path, now).await?
            }
            _ => Vec::new(),
        };
        if triggers.is_empty() {
            return Ok(());
        }
        self.send(triggers).await
    }

    pub(super) fn set_nm_state(&mut self, state: u32) {
        let Some(name) = map::nm_state_name(state) else {
            self.bad_value("State", NM_PATH, &format!("{state} is no NMState"));
            return;
        };
        if self.known.nm_state != state {
            info!(state = name, code = state, "NetworkManager state");
            self.known.nm_state = state;
        }
    }

    pub(super) async fn on_device_state(
        &mut self,
        conn: &Connection,
        msg: &Message,
        path: &str,
        now: Timestamp,
    ) -> Result<Vec<Trigger>, Stop> {
        let parsed = proxy::device::StateChanged::from_message(msg.clone())
            .map(|s| s.args().map(|a| (a.new_state, a.old_state, a.reason)));
        let Some((new, old, reason)) = self.args("Device.StateChanged", path, parsed) else {
            return Ok(Vec::new());
        };
        if map::device_state_name(new).is_none() {
            self.bad_value(
                "Device.StateChanged",
                path,
                &format!("{new} is no NMDeviceState"),
            );
            return Ok(Vec::new());
        }
        if !self.known.devices.contains_key(path) {
            // NetworkManager announces state changes of a new device
            // before DeviceAdded at times: read it now.
            let Some(dev) = self.learn_device(conn, path).await? else {
                return Ok(Vec::new());
            };
            // Read after the signal arrived: if its state is the signal's,
            // the transition is the signal's; otherwise the read is newer
            // and the signals that follow continue from it.
            if dev.state != new {
                return Ok(Vec::new());
            }
            return Ok(map::device_transition(
                &dev.iface, path, new, old, reason, now,
            ));
        }
        let Some(dev) = self.known.devices.get_mut(path) else {
            return Ok(Vec::new());
        };
        let before = dev.state;
        if before != old
            && let Some((_, end)) = self.read_window
            && msg.recv_position() < end
        {
            debug!(
                path,
                before,
                old,
                new,
                "device state signal from during the last full read, already reflected; ignored"
            );
            return Ok(Vec::new());
        }
        if before != old {
            debug!(
                path,
                before, old, new, "device state signal from a state not known here"
            );
        }
        dev.state = new;
        dev.reason = reason;
        debug!(
            device = %dev.iface.name,
            state = map::device_state_name(new).unwrap_or("?"),
            reason = %map::device_reason(reason).name,
            "device state"
        );
        let dev = dev.clone();
        let mut out = map::device_transition(&dev.iface, path, new, before, reason, now);
        if new == device_state::ACTIVATED && dev.device_type == map::device_type::WIFI {
            out.extend(self.refresh_ap(conn, path, now).await?);
        }
        Ok(out)
    }

    /// Reads a device a signal named but that is not known yet, and keeps
    /// it; an unreadable one is counted as unknown.
    pub(super) async fn learn_device(
        &mut self,
        conn: &Connection,
        path: &str,
    ) -> Result<Option<DeviceSnap>, Stop> {
        let Ok(owned) = OwnedObjectPath::try_from(path) else {
            self.unknown_object("device", path, "not an object path");
            return Ok(None);
        };
        match self.read_device(conn, &owned).await {
            Ok(Some(dev)) => {
                info!(device = %dev.iface.name, path, kind = ?dev.iface.kind, "NetworkManager device");
                self.known.devices.insert(path.to_owned(), dev.clone());
                Ok(Some(dev))
            }
            Ok(None) => Ok(None),
            Err(e) if failure(&e) == Failure::Bus => Err(Stop::Bus(NmError::Read {
                what: path.to_owned(),
                source: e,
            })),
            Err(e) => {
                self.unknown_object("device", path, &e.to_string());
                Ok(None)
            }
        }
    }

    pub(super) async fn on_device_added(
        &mut self,
        conn: &Connection,
        path: &OwnedObjectPath,
        now: Timestamp,
    ) -> Result<Vec<Trigger>, Stop> {
        if self.known.devices.contains_key(path.as_str()) {
            return Ok(Vec::new());
        }
        let Some(dev) = self.learn_device(conn, path.as_str()).await? else {
            return Ok(Vec::new());
        };
        Ok(map::device_transition(
            &dev.iface,
            path.as_str(),
            dev.state,
            device_state::UNKNOWN,
            dev.reason,
            now,
        ))
    }

    pub(super) fn on_device_removed(&mut self, path: &str, now: Timestamp) -> Vec<Trigger> {
        let Some(dev) = self.known.devices.remove(path) else {
            debug!(path, "removal of a device not known here");
            return Vec::new();
        };
        info!(device = %dev.iface.name, path, "NetworkManager device removed");
        map::device_transition(
            &dev.iface,
            path,
            device_state::UNKNOWN,
            dev.state,
            map::device_reason::REMOVED,
            now,
        )
    }

    pub(super) async fn on_active_state(
        &mut self,
        conn: &Connection,
        msg: &Message,
        path: &str,
        now: Timestamp,
    ) -> Result<Vec<Trigger>, Stop> {
        let parsed = proxy::active::StateChanged::from_message(msg.clone())
            .map(|s| s.args().map(|a| (a.state, a.reason)));
        let Some((state, reason)) = self.args("Connection.Active.StateChanged", path, parsed)
        else {
            return Ok(Vec::new());
        };
        if map::active_state_name(state).is_none() {
            self.bad_value(
                "Connection.Active.StateChanged",
                path,
                &format!("{state} is no NMActiveConnectionState"),
            );
            return Ok(Vec::new());
        }
        let before = match self.known.active.get(path) {
            Some(a) => a.state,
            None => {
                let Ok(owned) = OwnedObjectPath::try_from(path) else {
                    return Ok(Vec::new());
                };
                match read_active(conn, &owned).await {
                    Ok(a) => {
                        self.known.active.insert(path.to_owned(), a);
                        map::active_state::UNKNOWN
                    }
                    Err(e) if failure(&e) == Failure::Bus => {
                        return Err(Stop::Bus(NmError::Read {
                            what: path.to_owned(),
                            source: e,
                        }));
                    }
                    // Deactivated connections vanish quickly; nothing to say.
                    Err(e) => {
                        debug!(path, error = %e, "active connection not readable");
                        return Ok(Vec::new());
                    }
                }
            }
        };
        let Some(ac) = self.known.active.get_mut(path) else {
            return Ok(Vec::new());
        };
        ac.state = state;
        let ac = ac.clone();
        debug!(
            connection = %ac.id,
            state = map::active_state_name(state).unwrap_or("?"),
            reason = %map::active_reason(reason).name,
            "active connection state"
        );
        if state == map::active_state::DEACTIVATED {
            self.known.active.remove(path);
        }
        if !ac.vpn {
            return Ok(Vec::new());
        }
        Ok(map::vpn_transition(
            self.known.active_interface(&ac),
            path,
            before,
            state,
            reason,
            now,
        )
        .into_iter()
        .collect())
    }

    pub(super) async fn on_properties(
        &mut self,
        conn: &Connection,
        msg: &Message,
        path: &str,
        now: Timestamp,
    ) -> Result<Vec<Trigger>, Stop> {
        let Some(signal) = fdo::PropertiesChanged::from_message(msg.clone()) else {
            return Ok(Vec::new());
        };
        let args = match signal.args() {
            Ok(a) => a,
            Err(e) => {
                self.bad_value("PropertiesChanged", path, &e.to_string());
                return Ok(Vec::new());
            }
        };
        let iface = args.interface_name().as_str().to_owned();
        let changed: HashMap<String, Variant<'_>> = args
            .changed_properties()
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        let mut out = Vec::new();
        match iface.as_str() {
            MANAGER_IFACE if path == NM_PATH => {
                if let Some(v) = changed.get("State")
                    && let Some(state) = self.typed::<u32>(v, "State", path)
                {
                    self.set_nm_state(state);
                }
                if let Some(v) = changed.get("Connectivity")
                    && let Some(c) = self.typed::<u32>(v, "Connectivity", path)
                {
                    out.extend(self.set_connectivity(c, now));
                }
                if let Some(v) = changed.get("PrimaryConnection")
                    && let Some(p) =
                        self.typed::<zbus::ObjectPath<'_>>(v, "PrimaryConnection", path)
                {
                    let primary = non_root(&p.into());
                    if primary != self.known.primary {
                        let id = primary
                            .as_ref()
                            .and_then(|p| self.known.active.get(p))
                            .map(|a| a.id.clone())
                            .unwrap_or_default();
                        info!(primary = primary.as_deref().unwrap_or("none"), connection = %id, "primary connection");
                        self.known.primary = primary;
                    }
                }
            }
            WIRELESS_IFACE => {
                if let Some(v) = changed.get("ActiveAccessPoint")
                    && let Some(ap) =
                        self.typed::<zbus::ObjectPath<'_>>(v, "ActiveAccessPoint", path)
                {
                    let ap = non_root(&ap.into());
                    out.extend(self.set_active_ap(conn, path, ap, now).await?);
                }
            }
            ACCESS_POINT_IFACE => {
                if let Some(v) = changed.get("Strength")
                    && let Some(s) = self.typed::<u8>(v, "Strength", path)
                {
                    out.extend(self.set_strength(path, s, now));
                }
            }
            DEVICE_IFACE => {
                if let Some(dev) = self.known.devices.get(path).cloned() {
                    let mut iface = dev.iface.clone();
                    if let Some(v) = changed.get("Ifindex")
                        && let Some(i) = self.typed::<u32>(v, "Ifindex", path)
                    {
                        iface.index = i;
                    }
                    if let Some(v) = changed.get("Interface")
                        && let Some(n) = self.typed::<String>(v, "Interface", path)
                    {
                        match crate::model::check_name(&n, "Interface") {
                            Ok(()) => iface.name = n,
                            Err(e) => self.bad_value("Interface", path, &e.to_string()),
                        }
                    }
                    if iface != dev.iface
                        && let Some(d) = self.known.devices.get_mut(path)
                    {
                        debug!(path, name = %iface.name, index = iface.index, "device interface");
                        d.iface = iface;
                    }
                }
            }
            _ => {}
        }
        Ok(out)
    }

    /// A property value of the expected type, or `None` (counted).
    pub(super) fn typed<'v, T>(&self, v: &'v Variant<'v>, what: &str, path: &str) -> Option<T>
    where
        T: TryFrom<&'v Variant<'v>>,
        <T as TryFrom<&'v Variant<'v>>>::Error: Into<zbus::Error>,
    {
        match v.downcast_ref::<T>() {
            Ok(t) => Some(t),
            Err(e) => {
                self.bad_value(what, path, &format!("{e} (got {})", v.value_signature()));
                None
            }
        }
    }

    pub(super) fn set_connectivity(&mut self, c: u32, now: Timestamp) -> Option<Trigger> {
        let Some(name) = map::connectivity_name(c) else {
            self.bad_value(
                "Connectivity",
                NM_PATH,
                &format!("{c} is no NMConnectivityState"),
            );
            return None;
        };
        let old = self.known.connectivity;
        if old == c {
            return None;
        }
        info!(connectivity = name, code = c, "NetworkManager connectivity");
        self.known.connectivity = c;
        map::connectivity_transition(old, c, now)
    }

    pub(super) async fn set_active_ap(
        &mut self,
        conn: &Connection,
        device: &str,
        ap: Option<String>,
        now: Timestamp,
    ) -> Result<Vec<Trigger>, Stop> {
        let Some(dev) = self.known.devices.get(device) else {
            // Not announced yet: reading it takes its access point too.
            self.learn_device(conn, device).await?;
            return Ok(Vec::new());
        };
        if dev.active_ap == ap {
            return Ok(Vec::new());
        }
        debug!(device = %dev.iface.name, ap = ap.as_deref().unwrap_or("none"), "active access point");
        let strength = match &ap {
            Some(p) => self.read_strength(conn, p).await,
            None => None,
        };
        let Some(dev) = self.known.devices.get_mut(device) else {
            return Ok(Vec::new());
        };
        let changed = strength.is_some() && strength != dev.strength;
        dev.active_ap = ap.clone();
        dev.strength = strength;
        match (changed, strength, ap) {
            (true, Some(s), Some(ap)) => Ok(vec![map::strength_report(&dev.iface, &ap, s, now)]),
            _ => Ok(Vec::new()),
        }
    }

    /// After a Wi-Fi device activated: its access point may have been set
    /// before; make sure it is known.
    pub(super) async fn refresh_ap(
        &mut self,
        conn: &Connection,
        device: &str,
        now: Timestamp,
    ) -> Result<Vec<Trigger>, Stop> {
        let Ok(owned) = OwnedObjectPath::try_from(device) else {
            return Ok(Vec::new());
        };
        let ap = match uncached::<proxy::wireless::WirelessProxy<'_>>(conn, &owned).await {
            Ok(w) => match w.active_access_point().await {
                Ok(ap) => non_root(&ap),
                Err(e) => self.optional("ActiveAccessPoint", device, &e, None),
            },
            Err(_) => None,
        };
        if ap.is_none() {
            return Ok(Vec::new());
        }
        self.set_active_ap(conn, device, ap, now).await
    }

    pub(super) fn set_strength(&mut self, ap: &str, s: u8, now: Timestamp) -> Vec<Trigger> {
        if !map::strength_in_range(s) {
            self.bad_value("Strength", ap, &format!("{s} is not a percentage"));
            return Vec::new();
        }
        let mut out = Vec::new();
        for path in self.known.devices_on_ap(ap) {
            if let Some(dev) = self.known.devices.get_mut(&path)
                && dev.strength != Some(s)
            {
                dev.strength = Some(s);
                out.push(map::strength_report(&dev.iface, ap, s, now));
            }
        }
        if out.is_empty() {
            debug!(
                ap,
                strength = s,
                "strength of an access point no device is using"
            );
        }
        out
    }
}
