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
//!
//! This file holds the actor, its bus connection and NetworkManager's
//! comings and goings, its counters and errors; `nm/read.rs` reads
//! NetworkManager's state, `nm/signals.rs` handles its signals, [`state`] is
//! what the actor knows, [`map`] turns changes into triggers and [`proxy`]
//! declares the D-Bus interfaces.

pub mod map;
pub mod proxy;
mod read;
mod signals;
pub mod state;

use std::{
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
    Connection, MatchRule, MessageStream, fdo,
    message::{Message, Sequence},
};

use self::{
    proxy::{NM_BUS_NAME, NM_PATH},
    state::Snapshot,
};
use crate::{
    config::NetworkManagerConfig,
    ingest::{SourceBatch, SourceSender},
    model::Trigger,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bus_target_names_where_it_connects() {
        let t = BusTarget::Configured("unix:path=/tmp/x".into());
        assert_eq!(t.describe(), "unix:path=/tmp/x");
    }
}
