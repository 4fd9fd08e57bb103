//! The NetworkManager source: an actor task that owns a D-Bus connection to
//! the system bus (zbus), follows NetworkManager there and turns what it
//! says into triggers with source `networkmanager`.
//!
//! It follows the manager's State, Connectivity and PrimaryConnection, each
//! device's StateChanged(new, old, reason) (devices added and removed
//! included), each active connection's StateChanged(state, reason), the
//! Wi-Fi devices' ActiveAccessPoint and that access point's Strength. The
//! translation is [`map`]'s: a device reaching ACTIVATED gives LINK_UP and
//! CONN_ESTABLISHED, leaving it LINK_DOWN and CONN_LOST with NetworkManager's
//! NMDeviceStateReason (number and name); Connectivity reaching or leaving
//! FULL gives CONN_ESTABLISHED / CONN_LOST; an active VPN connection's state
//! gives CONN_* with its NMActiveConnectionStateReason; a Strength change of
//! an active access point gives LINK_PARAMETERS_REPORT (signal strength,
//! percent). Manager State and PrimaryConnection are tracked and logged only.
//!
//! All of NetworkManager's signals come through one match rule (sender
//! `org.freedesktop.NetworkManager`, path namespace
//! `/org/freedesktop/NetworkManager`) and so are handled in the order NM sent
//! them; typed proxies ([`proxy`]) read the properties. Only signals whose
//! sender is the name's current owner are taken. NetworkManager being absent
//! at start, stopping or restarting is normal: `NameOwnerChanged` is
//! followed; when NM appears the source reads the manager, every device and
//! active connection, sends a RESYNC marker (cause "nm-appeared") and the
//! triggers for what differs from what it knew before (the first time no
//! transitions, as there is nothing to differ from, but the current Strength
//! of each active Wi-Fi link, a measurement thresholds need as their first
//! sample); when NM vanishes it logs and
//! waits. NetworkManager owns its name a moment before its objects exist, so
//! the read is repeated while they are missing; signals received before the
//! read began are dropped (the read reflects them), and a device signal
//! received during it that does not follow the state read is taken as
//! already reflected. The bus itself being unreachable or going away is
//! retried with backoff. Each of these transitions is logged once.
//!
//! Interface index: the device's `Ifindex` property where NetworkManager has
//! it (newer than 1.42), else the index of its IP interface by name in this
//! process's network namespace (NetworkManager's, when both run on the
//! host), else 0.
//!
//! Values of an unexpected D-Bus type or out of range are counted in
//! [`NmStats::bad_values`] and logged, and signals about objects it cannot
//! read in [`NmStats::unknown_objects`]; none of it stops the source.
//!
//! This module keeps no link table (its batches carry `links: None`), does
//! not follow addresses or routes (rtnetlink does), and never changes
//! anything in NetworkManager.

pub mod map;
pub mod proxy;
pub mod state;

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, instrument, warn};
use zbus::{
    Connection, MatchRule, MessageStream, OwnedObjectPath, Variant, fdo,
    message::{Message, Sequence},
};

use self::{
    map::device_state,
    proxy::{
        ACCESS_POINT_IFACE, ACTIVE_IFACE, DEVICE_IFACE, MANAGER_IFACE, NM_BUS_NAME, NM_PATH,
        WIRELESS_IFACE, uncached,
    },
    state::{ActiveSnap, DeviceSnap, Snapshot, resync_triggers},
};
use crate::{
    config::NetworkManagerConfig,
    ingest::{SourceBatch, SourceSender},
    model::{Timestamp, Trigger},
};

/// Messages queued for the signal stream before zbus's reader waits for it.
/// Large, because the actor makes method calls while signals pile up, and
/// a full queue would hold back their replies until the call times out.
const SIGNAL_QUEUE: usize = 4096;
/// Longest wait for a reply from NetworkManager or the bus.
const METHOD_TIMEOUT: Duration = Duration::from_secs(10);
/// Reconnection backoff to the bus.
const RETRY_MIN: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);
/// Reading NetworkManager again while it is not ready after appearing.
const READ_RETRY_MIN: Duration = Duration::from_millis(50);
const READ_RETRY_MAX: Duration = Duration::from_secs(1);
const READ_RETRY_FOR: Duration = Duration::from_secs(15);
/// Bad values logged at warn before the rest go to debug.
const BAD_VALUES_WARNED: u64 = 10;

/// Counters the daemon's Stats RPC reads.
#[derive(Debug, Default)]
pub struct NmStats {
    /// NetworkManager signals taken (of any kind).
    pub signals: AtomicU64,
    /// D-Bus values of an unexpected type or out of range, skipped.
    pub bad_values: AtomicU64,
    /// Signals about objects that could not be read (unknown devices...).
    pub unknown_objects: AtomicU64,
    /// Times NetworkManager appeared and its state was read again.
    pub resyncs: AtomicU64,
    /// Batches sent to the store.
    pub batches: AtomicU64,
}

/// A copy of [`NmStats`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NmStatsSnapshot {
    pub signals: u64,
    pub bad_values: u64,
    pub unknown_objects: u64,
    pub resyncs: u64,
    pub batches: u64,
}

impl NmStats {
    pub fn snapshot(&self) -> NmStatsSnapshot {
        NmStatsSnapshot {
            signals: self.signals.load(Ordering::Relaxed),
            bad_values: self.bad_values.load(Ordering::Relaxed),
            unknown_objects: self.unknown_objects.load(Ordering::Relaxed),
            resyncs: self.resyncs.load(Ordering::Relaxed),
            batches: self.batches.load(Ordering::Relaxed),
        }
    }

    fn bump(counter: &AtomicU64) -> u64 {
        counter.fetch_add(1, Ordering::Relaxed)
    }
}

/// The Stats RPC shows bad values and unreadable objects as this source's
/// bad input.
impl crate::server::SourceCounters for NmStats {
    fn name(&self) -> &'static str {
        "networkmanager"
    }
    fn resyncs(&self) -> u64 {
        self.resyncs.load(Ordering::Relaxed)
    }
    fn parse_errors(&self) -> u64 {
        self.bad_values.load(Ordering::Relaxed) + self.unknown_objects.load(Ordering::Relaxed)
    }
}

/// Why the source, or one connection of it, stopped.
#[derive(Debug, thiserror::Error)]
pub enum NmError {
    #[error("connecting to the D-Bus system bus ({bus})")]
    Connect {
        bus: String,
        #[source]
        source: zbus::Error,
    },
    #[error("subscribing to {what}")]
    Subscribe {
        what: &'static str,
        #[source]
        source: zbus::Error,
    },
    #[error("asking the bus who owns {NM_BUS_NAME}")]
    NameOwner(#[source] fdo::Error),
    #[error("reading NetworkManager's {what}")]
    Read {
        what: String,
        #[source]
        source: zbus::Error,
    },
    #[error("the D-Bus connection closed")]
    BusClosed,
    #[error("sending a batch: the trigger channel is closed")]
    ChannelClosed,
}

/// How a session on one bus connection ends.
#[derive(Debug)]
enum Stop {
    Shutdown,
    /// The bus went away or misbehaves: reconnect.
    Bus(NmError),
    /// The store is gone: the source ends.
    ChannelClosed,
}

/// What a failed property read or call means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// An error reply, a timeout: the object or property is not there (or
    /// NetworkManager is going away).
    Missing,
    /// The value had another D-Bus type than expected.
    BadValue,
    /// The connection itself failed.
    Bus,
}

fn failure(e: &zbus::Error) -> Failure {
    match e {
        zbus::Error::MethodError(..) | zbus::Error::FDO(_) => Failure::Missing,
        zbus::Error::InputOutput(io) if io.kind() == std::io::ErrorKind::TimedOut => {
            Failure::Missing
        }
        zbus::Error::InputOutput(_) | zbus::Error::Connection(..) => Failure::Bus,
        _ => Failure::BadValue,
    }
}

/// Which bus to connect to, for connecting and for logs.
#[derive(Debug, Clone)]
enum BusTarget {
    /// The configuration's `bus_address`.
    Configured(String),
    /// `DBUS_SYSTEM_BUS_ADDRESS`, else the standard system bus socket.
    System,
}

impl BusTarget {
    fn describe(&self) -> String {
        match self {
            BusTarget::Configured(a) => a.clone(),
            BusTarget::System => match std::env::var("DBUS_SYSTEM_BUS_ADDRESS") {
                Ok(a) => format!("{a} from DBUS_SYSTEM_BUS_ADDRESS"),
                Err(_) => "the system bus".to_owned(),
            },
        }
    }

    async fn connect(&self) -> Result<Connection, NmError> {
        let builder = match self {
            BusTarget::Configured(a) => zbus::connection::Builder::address(a.as_str()),
            BusTarget::System => zbus::connection::Builder::system(),
        };
        builder
            .method_timeout(METHOD_TIMEOUT)
            .build()
            .await
            .map_err(|source| NmError::Connect {
                bus: self.describe(),
                source,
            })
    }
}

/// Runs the NetworkManager source until `shutdown` is cancelled (then
/// `Ok`). It ends with an error only when the trigger channel closes: an
/// absent bus or NetworkManager is waited for.
#[instrument(name = "networkmanager", skip_all)]
pub async fn run(
    config: NetworkManagerConfig,
    tx: SourceSender,
    stats: Arc<NmStats>,
    shutdown: CancellationToken,
) -> Result<(), NmError> {
    let target = match config.bus_address {
        Some(a) => BusTarget::Configured(a),
        None => BusTarget::System,
    };
    let mut actor = Actor {
        tx,
        stats,
        shutdown: shutdown.clone(),
        known: Snapshot::default(),
        synced: false,
        owner: None,
        absent_logged: false,
        read_window: None,
    };
    let mut backoff = RETRY_MIN;
    let mut bus_down = false;
    loop {
        let connected = tokio::select! {
            biased;
            () = shutdown.cancelled() => return Ok(()),
            c = target.connect() => c,
        };
        match connected {
            Ok(conn) => {
                if bus_down {
                    info!(bus = %target.describe(), "D-Bus system bus reachable again");
                } else {
                    debug!(bus = %target.describe(), "connected to the D-Bus system bus");
                }
                backoff = RETRY_MIN;
                // Shutdown does not wait for a call to an unresponsive
                // NetworkManager to time out.
                let ended = tokio::select! {
                    biased;
                    () = shutdown.cancelled() => return Ok(()),
                    r = actor.session(&conn) => r,
                };
                match ended {
                    Ok(()) | Err(Stop::Shutdown) => return Ok(()),
                    Err(Stop::ChannelClosed) => return Err(NmError::ChannelClosed),
                    Err(Stop::Bus(e)) => {
                        warn!(error = %errchain::chain(&e), "lost the D-Bus system bus; reconnecting");
                        bus_down = true;
                        actor.owner = None;
                    }
                }
            }
            Err(e) => {
                if bus_down {
                    debug!(error = %errchain::chain(&e), "D-Bus system bus still unreachable");
                } else {
                    warn!(error = %errchain::chain(&e), retry_max = ?RETRY_MAX, "D-Bus system bus unreachable; retrying");
                    bus_down = true;
                }
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(RETRY_MAX);
    }
}

struct Actor {
    tx: SourceSender,
    stats: Arc<NmStats>,
    shutdown: CancellationToken,
    /// What is known about NetworkManager; kept while it is away, so that
    /// the next appearance reports only differences.
    known: Snapshot,
    /// Whether `known` was ever read.
    synced: bool,
    /// The unique name owning org.freedesktop.NetworkManager, while it runs.
    owner: Option<String>,
    /// Whether "NetworkManager is not running" was logged since it last ran.
    absent_logged: bool,
    /// Receive positions of the bus replies just before and just after the
    /// last full read: signals received before it are already reflected
    /// in `known`; signals received during it may be.
    read_window: Option<(Sequence, Sequence)>,
}

fn subscribe_err(what: &'static str) -> impl FnOnce(zbus::Error) -> Stop {
    move |source| Stop::Bus(NmError::Subscribe { what, source })
}

fn path_of(msg: &Message) -> String {
    msg.header()
        .path()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default()
}

impl Actor {
    /// Follows NetworkManager on one bus connection until the connection
    /// fails or shutdown.
    async fn session(&mut self, conn: &Connection) -> Result<(), Stop> {
        // Receive positions count per connection.
        self.read_window = None;
        let owner_rule = MatchRule::builder()
            .msg_type(zbus::message::Type::Signal)
            .sender("org.freedesktop.DBus")
            .interface("org.freedesktop.DBus")
            .member("NameOwnerChanged")
            .add_arg(NM_BUS_NAME)
            .build()
            .map_err(subscribe_err("NameOwnerChanged"))?;
        let mut owners = MessageStream::for_match_rule(owner_rule, conn, None)
            .await
            .map_err(subscribe_err("NameOwnerChanged"))?;
        let nm_rule = MatchRule::builder()
            .msg_type(zbus::message::Type::Signal)
            .sender(NM_BUS_NAME)
            .path_namespace(NM_PATH)
            .build()
            .map_err(subscribe_err("NetworkManager's signals"))?;
        let mut signals =
            MessageStream::for_match_rule(nm_rule, conn, std::num::NonZeroUsize::new(SIGNAL_QUEUE))
                .await
                .map_err(subscribe_err("NetworkManager's signals"))?;

        // Subscribed first, then asked: no change of owner falls between.
        let dbus = fdo::DBusProxy::new(conn)
            .await
            .map_err(subscribe_err("the bus"))?;
        match dbus
            .get_name_owner(NM_BUS_NAME.try_into().map_err(subscribe_err("the bus"))?)
            .await
        {
            Ok(owner) => self.appeared(conn, owner.to_string()).await?,
            Err(fdo::Error::NameHasNoOwner(_)) => self.absent(),
            Err(e) => return Err(Stop::Bus(NmError::NameOwner(e))),
        }

        // Signals before owner changes: NetworkManager's last signals are
        // queued before the NameOwnerChanged that says it left, and are
        // taken while it still counts as the owner.
        let shutdown = self.shutdown.clone();
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return Err(Stop::Shutdown),
                m = signals.next() => match m {
                    Some(Ok(msg)) => self.on_signal(conn, &msg).await?,
                    Some(Err(e)) => self.bad_value("signal", "", &e.to_string()),
                    None => return Err(Stop::Bus(NmError::BusClosed)),
                },
                m = owners.next() => match m {
                    Some(Ok(msg)) => self.on_owner_changed(conn, &msg).await?,
                    Some(Err(e)) => self.bad_value("NameOwnerChanged", "", &e.to_string()),
                    None => return Err(Stop::Bus(NmError::BusClosed)),
                },
            }
        }
    }

    fn absent(&mut self) {
        if !self.absent_logged {
            info!("NetworkManager is not running; waiting for it to appear on the bus");
            self.absent_logged = true;
        }
    }

    async fn on_owner_changed(&mut self, conn: &Connection, msg: &Message) -> Result<(), Stop> {
        let Some(signal) = fdo::NameOwnerChanged::from_message(msg.clone()) else {
            return Ok(());
        };
        let args = match signal.args() {
            Ok(a) => a,
            Err(e) => {
                self.bad_value("NameOwnerChanged", "", &e.to_string());
                return Ok(());
            }
        };
        if args.name().as_str() != NM_BUS_NAME {
            return Ok(());
        }
        let new_owner = args.new_owner().as_ref().map(|o| o.to_string());
        if new_owner == self.owner {
            return Ok(());
        }
        if let Some(old) = self.owner.take() {
            warn!(owner = %old, "NetworkManager left the bus; waiting for it to come back");
            self.absent_logged = true;
        }
        match new_owner {
            Some(owner) => self.appeared(conn, owner).await,
            None => {
                self.absent();
                Ok(())
            }
        }
    }

    /// NetworkManager is (again) on the bus as `owner`: read its state and
    /// send the marker and what changed.
    async fn appeared(&mut self, conn: &Connection, owner: String) -> Result<(), Stop> {
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
    async fn read_all(&mut self, conn: &Connection) -> Result<Snapshot, (String, zbus::Error)> {
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
    async fn read_device(
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
    async fn read_strength(&mut self, conn: &Connection, ap: &str) -> Option<u8> {
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
    fn optional<T>(&self, what: &str, path: &str, e: &zbus::Error, default: T) -> T {
        match failure(e) {
            Failure::BadValue => self.bad_value(what, path, &e.to_string()),
            _ => debug!(what, path, error = %e, "property not available"),
        }
        default
    }

    /// A signal's arguments, if the message is that signal and they parse;
    /// a body that does not parse is counted and logged as a bad value.
    fn args<T>(&self, what: &str, path: &str, parsed: Option<zbus::Result<T>>) -> Option<T> {
        match parsed? {
            Ok(v) => Some(v),
            Err(e) => {
                self.bad_value(what, path, &e.to_string());
                None
            }
        }
    }

    fn bad_value(&self, what: &str, path: &str, problem: &str) {
        let n = NmStats::bump(&self.stats.bad_values);
        if n < BAD_VALUES_WARNED {
            warn!(
                what,
                path, problem, "skipping an unexpected value from NetworkManager"
            );
        } else {
            debug!(
                what,
                path, problem, "skipping an unexpected value from NetworkManager"
            );
        }
    }

    fn unknown_object(&self, what: &str, path: &str, problem: &str) {
        let n = NmStats::bump(&self.stats.unknown_objects);
        if n < BAD_VALUES_WARNED {
            warn!(
                what,
                path, problem, "signal about an object NetworkManager does not describe; ignored"
            );
        } else {
            debug!(
                what,
                path, problem, "signal about an object NetworkManager does not describe; ignored"
            );
        }
    }

    /// One signal from NetworkManager's namespace.
    async fn on_signal(&mut self, conn: &Connection, msg: &Message) -> Result<(), Stop> {
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

    fn set_nm_state(&mut self, state: u32) {
        let Some(name) = map::nm_state_name(state) else {
            self.bad_value("State", NM_PATH, &format!("{state} is no NMState"));
            return;
        };
        if self.known.nm_state != state {
            info!(state = name, code = state, "NetworkManager state");
            self.known.nm_state = state;
        }
    }

    async fn on_device_state(
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
    async fn learn_device(
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

    async fn on_device_added(
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

    fn on_device_removed(&mut self, path: &str, now: Timestamp) -> Vec<Trigger> {
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

    async fn on_active_state(
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

    async fn on_properties(
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
    fn typed<'v, T>(&self, v: &'v Variant<'v>, what: &str, path: &str) -> Option<T>
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

    fn set_connectivity(&mut self, c: u32, now: Timestamp) -> Option<Trigger> {
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

    async fn set_active_ap(
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
    async fn refresh_ap(
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

    fn set_strength(&mut self, ap: &str, s: u8, now: Timestamp) -> Vec<Trigger> {
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

    async fn send(&mut self, triggers: Vec<Trigger>) -> Result<(), Stop> {
        let batch = SourceBatch {
            triggers,
            links: None,
        };
        let shutdown = self.shutdown.clone();
        tokio::select! {
            biased;
            () = shutdown.cancelled() => Err(Stop::Shutdown),
            r = self.tx.send(batch) => {
                r.map_err(|_| Stop::ChannelClosed)?;
                NmStats::bump(&self.stats.batches);
                Ok(())
            }
        }
    }
}

async fn read_active(conn: &Connection, path: &OwnedObjectPath) -> zbus::Result<ActiveSnap> {
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
fn non_root(p: &OwnedObjectPath) -> Option<String> {
    (p.as_str() != "/").then(|| p.as_str().to_owned())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

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

    #[test]
    fn bus_target_names_where_it_connects() {
        let t = BusTarget::Configured("unix:path=/tmp/x".into());
        assert_eq!(t.describe(), "unix:path=/tmp/x");
    }
}
