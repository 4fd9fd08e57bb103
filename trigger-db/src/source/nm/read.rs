//! Reading NetworkManager's state over D-Bus: the full read after it
//! appeared on the bus (repeated while its objects are not exported yet,
//! bracketed by two bus round trips that order it among the signals), and
//! the reads of one device, access point or active connection that signals
//! call for. What a failed read means is [`Failure`]: missing (an error
//! reply or timeout), a value of the wrong D-Bus type, or the bus itself.

use tracing::{debug, info, warn};
use zbus::{Connection, OwnedObjectPath, message::Sequence};

use super::{
    Actor, NmError, NmStats, READ_RETRY_FOR, READ_RETRY_MAX, READ_RETRY_MIN, Stop, map,
    proxy::{self, NM_PATH, uncached},
    state::{ActiveSnap, DeviceSnap, Snapshot, resync_triggers},
};
use crate::model::Timestamp;

/// What a failed property read or call means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Failure {
    /// An error reply, a timeout: the object or property is not there (or
    /// NetworkManager is going away).
    Missing,
    /// The value had another D-Bus type than expected.
    BadValue,
    /// The connection itself failed.
    Bus,
}

pub(super) fn failure(e: &zbus::Error) -> Failure {
    match e {
        zbus::Error::MethodError(..) | zbus::Error::FDO(_) => Failure::Missing,
        zbus::Error::InputOutput(io) if io.kind() == std::io::ErrorKind::TimedOut => {
            Failure::Missing
        }
        zbus::Error::InputOutput(_) | zbus::Error::Connection(..) => Failure::Bus,
        _ => Failure::BadValue,
    }
}

impl Actor {
    /// NetworkManager is (again) on the bus as `owner`: read its state and
    /// send the marker and what changed.
    pub(super) async fn appeared(&mut self, conn: &Connection, owner: String) -> Result<(), Stop> {
        self.owner = Some(owner.clone());
        self.absent_logged = false;
        // NetworkManager takes its name before it exports its objects:
        // "no such object" right after it appeared means "not yet".
        let mut delay = READ_RETRY_MIN;
        let started = tokio::time::Instant::now();
        let (fresh, begin, end) = loop {
            let read = async {
                let begin = barrier(conn).await.map_err(|e| ("bus".to_owned(), e))?;
                let fresh = self.read_all(conn).await?;
                let end = barrier(conn).await.map_err(|e| ("bus".to_owned(), e))?;
                Ok::<_, (String, zbus::Error)>((fresh, begin, end))
            };
            let (what, e) = match read.await {
                Ok(r) => break r,
                Err(f) => f,
            };
            match failure(&e) {
                Failure::Bus => return Err(Stop::Bus(NmError::Read { what, source: e })),
                Failure::Missing if started.elapsed() < READ_RETRY_FOR => {
                    debug!(owner, what, error = %e, "NetworkManager not ready yet; reading again");
                }
                // Gone again or answering nonsense: its signals and
                // NameOwnerChanged tell the rest.
                _ => {
                    warn!(owner, what, error = %e, "cannot read NetworkManager's state; following its signals only");
                    return Ok(());
                }
            }
            tokio::select! {
                () = self.shutdown.cancelled() => return Err(Stop::Shutdown),
                () = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(READ_RETRY_MAX);
        };
        self.read_window = Some((begin, end));
        let version = match uncached::<proxy::manager::ManagerProxy<'_>>(
            conn,
            &OwnedObjectPath::from(zbus::ObjectPath::from_static_str_unchecked(NM_PATH)),
        )
        .await
        {
            Ok(m) => m.version().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        NmStats::bump(&self.stats.resyncs);
        let triggers = resync_triggers(
            "nm-appeared",
            !self.synced,
            &self.known,
            &fresh,
            Timestamp::now(),
        );
        info!(
            owner,
            version,
            devices = fresh.devices.len(),
            state = map::nm_state_name(fresh.nm_state).unwrap_or("?"),
            connectivity = map::connectivity_name(fresh.connectivity).unwrap_or("?"),
            changes = triggers.len().saturating_sub(1),
            "NetworkManager appeared; state read"
        );
        self.known = fresh;
        self.synced = true;
        self.send(triggers).await
    }

    /// Reads the manager, its devices and active connections.
    pub(super) async fn read_all(
        &mut self,
        conn: &Connection,
    ) -> Result<Snapshot, (String, zbus::Error)> {
        let err = |what: &str| {
            let what = what.to_owned();
            move |e| (what, e)
        };
        let manager = proxy::manager::ManagerProxy::builder(conn)
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await
            .map_err(err("manager"))?;
        // Only GetDevices is required; the properties may be missing (an
        // older or partial implementation) and then read as unknown.
        let nm_state = match manager.state().await {
            Ok(v) => v,
            Err(e) => self.optional("State", NM_PATH, &e, 0),
        };
        let connectivity = match manager.connectivity().await {
            Ok(v) => v,
            Err(e) => self.optional("Connectivity", NM_PATH, &e, 0),
        };
        let primary = match manager.primary_connection().await {
            Ok(p) => non_root(&p),
            Err(e) => self.optional("PrimaryConnection", NM_PATH, &e, None),
        };
        let mut snap = Snapshot {
            nm_state: if map::nm_state_name(nm_state).is_some() {
                nm_state
            } else {
                self.bad_value("State", NM_PATH, &format!("{nm_state} is no NMState"));
                0
            },
            connectivity: if map::connectivity_name(connectivity).is_some() {
                connectivity
            } else {
                self.bad_value(
                    "Connectivity",
                    NM_PATH,
                    &format!("{connectivity} is no NMConnectivityState"),
                );
                0
            },
            primary,
            ..Default::default()
        };
        for path in manager.get_devices().await.map_err(err("devices"))? {
            match self.read_device(conn, &path).await {
                Ok(Some(d)) => {
                    snap.devices.insert(path.to_string(), d);
                }
                Ok(None) => {}
                Err(e) if failure(&e) == Failure::Bus => return Err((path.to_string(), e)),
                // Gone since GetDevices: its removal signal follows.
                Err(e) => debug!(device = %path, error = %e, "device vanished while being read"),
            }
        }
        let active = match manager.active_connections().await {
            Ok(a) => a,
            Err(e) => self.optional("ActiveConnections", NM_PATH, &e, Vec::new()),
        };
        for path in active {
            match read_active(conn, &path).await {
                Ok(a) => {
                    snap.active.insert(path.to_string(), a);
                }
                Err(e) if failure(&e) == Failure::Bus => return Err((path.to_string(), e)),
                Err(e) => {
                    debug!(active = %path, error = %e, "active connection vanished while being read")
                }
            }
        }
        Ok(snap)
    }

    /// Reads one device. `Ok(None)`: it answered with values that make no
    /// device (counted as bad values).
    pub(super) async fn read_device(
        &mut self,
        conn: &Connection,
        path: &OwnedObjectPath,
    ) -> zbus::Result<Option<DeviceSnap>> {
        let d: proxy::device::DeviceProxy<'_> = uncached(conn, path).await?;
        let name = d.interface().await?;
        let device_type = d.device_type().await?;
        let state = d.state().await?;
        if let Err(e) = crate::model::check_name(&name, "Interface") {
            self.bad_value("Interface", path.as_str(), &e.to_string());
            return Ok(None);
        }
        if map::device_state_name(state).is_none() {
            self.bad_value(
                "State",
                path.as_str(),
                &format!("{state} is no NMDeviceState"),
            );
            return Ok(None);
        }
        let reason = match d.state_reason().await {
            Ok((_, reason)) => reason,
            Err(e) => self.optional("StateReason", path.as_str(), &e, 0),
        };
        // Ifindex is newer than NetworkManager 1.42; without it, the index
        // of the IP interface (else the device's) in this process's network
        // namespace, which is NetworkManager's when both run on the host.
        let index = match d.ifindex().await {
            Ok(i) => i,
            Err(e) => {
                self.optional("Ifindex", path.as_str(), &e, 0);
                let ip_iface = d.ip_interface().await.unwrap_or_default();
                let by_name = if ip_iface.is_empty() {
                    &name
                } else {
                    &ip_iface
                };
                ifindex_by_name(by_name)
            }
        };
        let modem_caps = if device_type == map::device_type::MODEM {
            match uncached::<proxy::modem::ModemProxy<'_>>(conn, path).await {
                Ok(m) => m.current_capabilities().await.ok(),
                Err(_) => None,
            }
        } else {
            None
        };
        let mut snap = DeviceSnap {
            iface: map::interface(&name, index, device_type, modem_caps),
            device_type,
            state,
            reason,
            active_ap: None,
            strength: None,
        };
        if device_type == map::device_type::WIFI {
            let w: proxy::wireless::WirelessProxy<'_> = uncached(conn, path).await?;
            let ap = match w.active_access_point().await {
                Ok(ap) => non_root(&ap),
                Err(e) => self.optional("ActiveAccessPoint", path.as_str(), &e, None),
            };
            if let Some(ap) = ap {
                snap.strength = self.read_strength(conn, &ap).await;
                snap.active_ap = Some(ap);
            }
        }
        Ok(Some(snap))
    }

    /// The Strength of access point `ap`, if it can be read and is in range.
    pub(super) async fn read_strength(&mut self, conn: &Connection, ap: &str) -> Option<u8> {
        let path = OwnedObjectPath::try_from(ap).ok()?;
        let proxy: proxy::access_point::AccessPointProxy<'_> = uncached(conn, &path).await.ok()?;
        match proxy.strength().await {
            Ok(s) if map::strength_in_range(s) => Some(s),
            Ok(s) => {
                self.bad_value("Strength", ap, &format!("{s} is not a percentage"));
                None
            }
            Err(e) => self.optional("Strength", ap, &e, None),
        }
    }

    /// A property that may be missing: a bad type is counted, a missing
    /// one is not; both give `default`.
    pub(super) fn optional<T>(&self, what: &str, path: &str, e: &zbus::Error, default: T) -> T {
        match failure(e) {
            Failure::BadValue => self.bad_value(what, path, &e.to_string()),
            _ => debug!(what, path, error = %e, "property not available"),
        }
        default
    }
}

pub(super) async fn read_active(
    conn: &Connection,
    path: &OwnedObjectPath,
) -> zbus::Result<ActiveSnap> {
    let a: proxy::active::ActiveProxy<'_> = uncached(conn, path).await?;
    Ok(ActiveSnap {
        state: a.state().await?,
        id: a.id().await.unwrap_or_default(),
        vpn: a.vpn().await.unwrap_or(false),
        devices: a
            .devices()
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|p| p.to_string())
            .collect(),
    })
}

/// A round trip to the bus; the reply's receive position orders it among
/// the signals received on `conn`.
async fn barrier(conn: &Connection) -> zbus::Result<Sequence> {
    let reply = conn
        .call_method(
            Some("org.freedesktop.DBus"),
            "/org/freedesktop/DBus",
            Some("org.freedesktop.DBus.Peer"),
            "Ping",
            &(),
        )
        .await?;
    Ok(reply.recv_position())
}

/// The kernel's index of interface `name` in this network namespace; 0 if
/// there is none.
fn ifindex_by_name(name: &str) -> u32 {
    let Ok(c) = std::ffi::CString::new(name) else {
        return 0;
    };
    // SAFETY: `c` is a NUL-terminated string that outlives the call.
    unsafe { libc::if_nametoindex(c.as_ptr()) }
}

/// An object path, `None` for NetworkManager's "no object" ("/").
pub(super) fn non_root(p: &OwnedObjectPath) -> Option<String> {
    (p.as_str() != "/").then(|| p.as_str().to_owned())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use zbus::fdo;

    use super::*;

    #[test]
    fn error_replies_mean_missing_type_errors_bad_values_io_the_bus() {
        let missing = zbus::Error::FDO(Box::new(fdo::Error::UnknownProperty("Ifindex".into())));
        assert_eq!(failure(&missing), Failure::Missing);
        let timeout =
            zbus::Error::InputOutput(Arc::new(std::io::Error::from(std::io::ErrorKind::TimedOut)));
        assert_eq!(failure(&timeout), Failure::Missing);
        assert_eq!(failure(&zbus::Error::IncorrectType), Failure::BadValue);
        let reset = zbus::Error::InputOutput(Arc::new(std::io::Error::from(
            std::io::ErrorKind::ConnectionReset,
        )));
        assert_eq!(failure(&reset), Failure::Bus);
    }

    #[test]
    fn root_path_means_no_object() {
        let root = OwnedObjectPath::try_from("/").unwrap();
        assert_eq!(non_root(&root), None);
        let ap =
            OwnedObjectPath::try_from("/org/freedesktop/NetworkManager/AccessPoint/3").unwrap();
        assert_eq!(
            non_root(&ap).as_deref(),
            Some("/org/freedesktop/NetworkManager/AccessPoint/3")
        );
    }

    #[test]
    fn ifindex_by_name_finds_loopback_and_nothing_for_odd_names() {
        assert_eq!(ifindex_by_name("lo"), 1);
        assert_eq!(ifindex_by_name("no-such-if0"), 0);
        assert_eq!(ifindex_by_name("nul\0in-name"), 0);
    }
}
