//! Typed zbus proxies for the parts of NetworkManager's D-Bus API the source
//! reads (NetworkManager 1.42 introspection, `org.freedesktop.NetworkManager*`):
//! the manager, devices, Wi-Fi devices, access points, active connections
//! and modems.
//!
//! Each interface sits in a module of its own because several of them have
//! a `StateChanged` signal and the macro names the signal types after the
//! signal. Proxies are built without a property cache
//! ([`uncached`]): the source follows one ordered stream of NetworkManager's
//! signals itself instead of one match rule per proxy and property. These
//! declarations do not check values beyond their D-Bus types; ranges and
//! meanings are [`super::map`]'s business.

use zbus::{Connection, OwnedObjectPath, proxy::CacheProperties};

/// The well-known bus name of NetworkManager.
pub const NM_BUS_NAME: &str = "org.freedesktop.NetworkManager";
/// The manager's object path; every NetworkManager object lives under it.
pub const NM_PATH: &str = "/org/freedesktop/NetworkManager";
pub const MANAGER_IFACE: &str = "org.freedesktop.NetworkManager";
pub const DEVICE_IFACE: &str = "org.freedesktop.NetworkManager.Device";
pub const WIRELESS_IFACE: &str = "org.freedesktop.NetworkManager.Device.Wireless";
pub const ACCESS_POINT_IFACE: &str = "org.freedesktop.NetworkManager.AccessPoint";
pub const ACTIVE_IFACE: &str = "org.freedesktop.NetworkManager.Connection.Active";

pub mod manager {
    use zbus::{OwnedObjectPath, proxy};

    /// `org.freedesktop.NetworkManager` at `/org/freedesktop/NetworkManager`.
    #[proxy(
        interface = "org.freedesktop.NetworkManager",
        default_service = "org.freedesktop.NetworkManager",
        default_path = "/org/freedesktop/NetworkManager"
    )]
    pub trait Manager {
        /// The realized devices (placeholders for unrealized ones excluded).
        fn get_devices(&self) -> zbus::Result<Vec<OwnedObjectPath>>;

        /// NMState.
        /// (Changes come as the StateChanged signal.)
        #[zbus(property(emits_changed_signal = "false"))]
        fn state(&self) -> zbus::Result<u32>;

        /// NMConnectivityState.
        #[zbus(property)]
        fn connectivity(&self) -> zbus::Result<u32>;

        /// The active connection that owns the default route; "/" if none.
        #[zbus(property)]
        fn primary_connection(&self) -> zbus::Result<OwnedObjectPath>;

        #[zbus(property)]
        fn active_connections(&self) -> zbus::Result<Vec<OwnedObjectPath>>;

        #[zbus(property)]
        fn version(&self) -> zbus::Result<String>;

        #[zbus(signal)]
        fn state_changed(&self, state: u32) -> zbus::Result<()>;

        #[zbus(signal)]
        fn device_added(&self, device_path: zbus::ObjectPath<'_>) -> zbus::Result<()>;

        #[zbus(signal)]
        fn device_removed(&self, device_path: zbus::ObjectPath<'_>) -> zbus::Result<()>;
    }
}

pub mod device {
    use zbus::{OwnedObjectPath, proxy};

    /// `org.freedesktop.NetworkManager.Device` at a device's path.
    #[proxy(
        interface = "org.freedesktop.NetworkManager.Device",
        default_service = "org.freedesktop.NetworkManager"
    )]
    pub trait Device {
        /// The device's name: a kernel interface name, or e.g. a modem's
        /// control port.
        #[zbus(property)]
        fn interface(&self) -> zbus::Result<String>;

        /// The kernel interface carrying IP, once there is one.
        #[zbus(property)]
        fn ip_interface(&self) -> zbus::Result<String>;

        /// NMDeviceType.
        #[zbus(property)]
        fn device_type(&self) -> zbus::Result<u32>;

        /// NMDeviceState.
        /// (Changes come as the StateChanged signal.)
        #[zbus(property(emits_changed_signal = "false"))]
        fn state(&self) -> zbus::Result<u32>;

        /// (NMDeviceState, NMDeviceStateReason) of the last change.
        #[zbus(property)]
        fn state_reason(&self) -> zbus::Result<(u32, u32)>;

        /// The kernel ifindex; 0 if none. Not in NetworkManager 1.42.
        #[zbus(property)]
        fn ifindex(&self) -> zbus::Result<u32>;

        #[zbus(property)]
        fn active_connection(&self) -> zbus::Result<OwnedObjectPath>;

        /// (NMDeviceState new, NMDeviceState old, NMDeviceStateReason).
        #[zbus(signal)]
        fn state_changed(&self, new_state: u32, old_state: u32, reason: u32) -> zbus::Result<()>;
    }
}

pub mod wireless {
    use zbus::{OwnedObjectPath, proxy};

    /// `org.freedesktop.NetworkManager.Device.Wireless` at a Wi-Fi device's path.
    #[proxy(
        interface = "org.freedesktop.NetworkManager.Device.Wireless",
        default_service = "org.freedesktop.NetworkManager"
    )]
    pub trait Wireless {
        /// The access point the device is associated with; "/" if none.
        #[zbus(property)]
        fn active_access_point(&self) -> zbus::Result<OwnedObjectPath>;
    }
}

pub mod access_point {
    use zbus::proxy;

    /// `org.freedesktop.NetworkManager.AccessPoint` at an access point's path.
    #[proxy(
        interface = "org.freedesktop.NetworkManager.AccessPoint",
        default_service = "org.freedesktop.NetworkManager"
    )]
    pub trait AccessPoint {
        /// Signal quality, percent (0..=100).
        #[zbus(property)]
        fn strength(&self) -> zbus::Result<u8>;
    }
}

pub mod active {
    use zbus::{OwnedObjectPath, proxy};

    /// `org.freedesktop.NetworkManager.Connection.Active` at an active
    /// connection's path.
    #[proxy(
        interface = "org.freedesktop.NetworkManager.Connection.Active",
        default_service = "org.freedesktop.NetworkManager"
    )]
    pub trait Active {
        /// NMActiveConnectionState.
        /// (Changes come as the StateChanged signal.)
        #[zbus(property(emits_changed_signal = "false"))]
        fn state(&self) -> zbus::Result<u32>;

        /// The profile's name.
        #[zbus(property)]
        fn id(&self) -> zbus::Result<String>;

        #[zbus(property)]
        fn vpn(&self) -> zbus::Result<bool>;

        #[zbus(property)]
        fn devices(&self) -> zbus::Result<Vec<OwnedObjectPath>>;

        /// (NMActiveConnectionState, NMActiveConnectionStateReason).
        #[zbus(signal)]
        fn state_changed(&self, state: u32, reason: u32) -> zbus::Result<()>;
    }
}

pub mod modem {
    use zbus::proxy;

    /// `org.freedesktop.NetworkManager.Device.Modem` at a modem device's path.
    #[proxy(
        interface = "org.freedesktop.NetworkManager.Device.Modem",
        default_service = "org.freedesktop.NetworkManager"
    )]
    pub trait Modem {
        /// NMDeviceModemCapabilities of the current access technology.
        #[zbus(property)]
        fn current_capabilities(&self) -> zbus::Result<u32>;
    }
}

/// Builds a typed proxy for `path` on `conn` without a property cache, so
/// that building it costs no call and no match rule.
pub async fn uncached<'a, T>(conn: &Connection, path: &'a OwnedObjectPath) -> zbus::Result<T>
where
    T: From<zbus::Proxy<'a>> + zbus::proxy::Defaults,
{
    zbus::proxy::Builder::<T>::new(conn)
        .path(path.as_ref())
        .cache_properties(CacheProperties::No)
        .build()
        .await
}
