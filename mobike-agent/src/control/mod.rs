//! The local control socket: gRPC service `mobike.v1.AgentControl` on a
//! Unix socket, for `mobike-agent status`, `initiate`, `terminate`, `rekey`
//! and `move`.
//!
//! This module holds what both ends agree on: the checked requests
//! ([`ControlRequest`], [`ControlCommand`]) and what the runtime answers
//! ([`StatusSnapshot`], the IKE SAs a command acted on, or why it was
//! [`Refused`]). [`server`] is the gRPC adapter: it turns each call into a
//! request sent over a bounded channel to the runtime's loop, which
//! carries it out between two engine steps, and turns the answer into the
//! reply. [`client`] is the CLI's side and [`render`] prints a status as a
//! table or JSON lines. Nothing here calls the engine or the kernel (only
//! their data crosses), and nothing here imports the runtime. CHILD_SA
//! counters come from the kernel backend (the runtime reads them when a
//! `Status` call arrives); with the backend `none` nothing counts ESP
//! traffic, so they are zero and `counters_known` is false.

pub mod client;
mod mobility;
pub mod render;
mod render_mobility;
pub mod server;

use std::{
    collections::HashMap, net::IpAddr, os::unix::fs::MetadataExt as _, path::PathBuf, time::Instant,
};

use ipsec_backend::ChildSaCounters;
use tokio::sync::oneshot;

use crate::{
    config_file::Backend,
    engine::{CommandError, IkeSaInfo},
};

/// Pending calls waiting for the runtime loop.
pub const QUEUE: usize = 16;

/// A `Status` call's reply slot, answered by the runtime loop.
pub type StatusReply = oneshot::Sender<StatusSnapshot>;

/// A command call's reply slot: the IKE SAs the command acted on (for
/// `Initiate` the ones it started), or why it was refused.
pub type CommandReply = oneshot::Sender<Result<Vec<IkeSaInfo>, Refused>>;

/// A call from the control socket, answered by the runtime loop.
#[derive(Debug)]
pub enum ControlRequest {
    /// `Status`.
    Status(StatusReply),
    /// `Initiate`, `Terminate`, `Rekey` or `UpdateAddresses`, checked
    /// already.
    Command(ControlCommand, CommandReply),
}

/// Which IKE SAs a command is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// Every IKE SA of this connection.
    Connection(String),
    /// The IKE SA with this initiator or responder SPI.
    Spi(u64),
}

/// As a refusal names it: of connection \`home\`, with SPI 00000000000000ab.
impl std::fmt::Display for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Selector::Connection(c) => write!(f, "of connection `{c}`"),
            Selector::Spi(s) => write!(f, "with SPI {s:016x}"),
        }
    }
}

/// A control command, checked (the wire form has optional fields).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlCommand {
    /// Start the connection as initiator.
    Initiate(String),
    /// Delete the chosen IKE SAs.
    Terminate(Selector),
    /// Rekey the chosen IKE SAs, or one CHILD_SA of them.
    Rekey {
        /// Which IKE SAs.
        select: Selector,
        /// The CHILD_SA's inbound SPI, or `None` for the IKE SAs.
        child_spi_in: Option<u32>,
    },
    /// Move the chosen IKE SAs to another address pair (MOBIKE).
    UpdateAddresses {
        /// Which IKE SAs.
        select: Selector,
        /// Our new address.
        local: IpAddr,
        /// The peer's address to use, `None`: the one in use.
        remote: Option<IpAddr>,
    },
}

/// Why the runtime did not carry out a control command.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// No IKE SA matches the selector.
    #[error("no IKE SA {0}")]
    NoMatch(Selector),
    /// The engine refused it.
    #[error(transparent)]
    Engine(#[from] CommandError),
    /// `UpdateAddresses` to a pair of two address families.
    #[error("local {local} and remote {remote} are of different address families")]
    MixedFamilies {
        /// Our new address.
        local: IpAddr,
        /// The peer's address.
        remote: IpAddr,
    },
    /// `UpdateAddresses` to a local address no IKE socket can send from.
    #[error(
        "not listening on {0}: add it to the connection's local_addrs (or leave them out for any)"
    )]
    NotListening(IpAddr),
}

/// Kernel counters of the installed CHILD_SAs by (reqid, inbound SPI), as
/// [`crate::kernel::Kernel::counters`] reads them.
pub type Counters = HashMap<(u32, u32), Result<ChildSaCounters, ipsec_backend::Error>>;

/// What a `Status` call reports, taken by the runtime loop between two
/// engine steps.
#[derive(Debug)]
pub struct StatusSnapshot {
    /// When it was taken (rekey times count from here).
    pub at: Instant,
    /// The wall clock then (certificate expiry counts from here).
    pub wall: std::time::SystemTime,
    /// Every IKE SA of the engine.
    pub ike_sas: Vec<IkeSaInfo>,
    /// The kernel backend, which says whether counters exist.
    pub backend: Backend,
    /// The CHILD_SAs' kernel counters (backend `xfrm`).
    pub counters: Counters,
    /// The mobility manager (absent with `[mobility] source = "off"`).
    pub mobility: Option<crate::mobility::MobilityStatus>,
    /// The engine's counters.
    pub stats: crate::engine::Stats,
}

/// What went wrong with the control socket.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Preparing its directory or binding the socket failed (another
    /// agent serving on it included).
    #[error("control socket")]
    Bind(#[from] daemon_support::socket::SocketError),
    /// The reflection service could not be built from the descriptors.
    #[error("control socket: cannot build the reflection service")]
    Reflection(#[source] tonic_reflection::server::Error),
    /// The socket cannot be reached.
    #[error("cannot connect to the control socket {path}")]
    Connect {
        /// Socket path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The gRPC channel could not be set up.
    #[error("control socket {path}: gRPC channel failed")]
    Channel {
        /// Socket path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: tonic::transport::Error,
    },
    /// The call failed.
    #[error("control socket {path}: {verb}: {} ({:?})", status.message(), status.code())]
    Call {
        /// Socket path.
        path: PathBuf,
        /// Which call.
        verb: &'static str,
        /// gRPC status.
        status: Box<tonic::Status>,
    },
}

/// The default socket: `/run/mobike-agent/control.sock` as root, else
/// `$XDG_RUNTIME_DIR/mobike-agent/control.sock` (or `/tmp/mobike-agent-UID/`
/// when that is unset: created private and used only if it is ours, see
/// `daemon_support::socket`).
pub fn default_socket() -> PathBuf {
    // The owner of /proc/self is the effective uid (no unsafe getuid call).
    let uid = std::fs::metadata("/proc/self").map(|m| m.uid()).ok();
    if uid == Some(0) {
        return PathBuf::from("/run/mobike-agent/control.sock");
    }
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(d) => PathBuf::from(d).join("mobike-agent/control.sock"),
        None => PathBuf::from(format!(
            "/tmp/mobike-agent-{}/control.sock",
            uid.unwrap_or(u32::MAX)
        )),
    }
}
