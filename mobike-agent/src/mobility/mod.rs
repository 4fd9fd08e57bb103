//! Mobility: how the agent follows the host's links, in layers with data
//! flowing one way.
//!
//! - [`subscriber`]: the trigger-db subscription (the only I/O here: a
//!   tokio actor) — snapshot, resume by id, gaps, resyncs, reconnects —
//!   feeding [`triggers`], which turns trigger-db's protobuf into the
//!   agent's own [`LinkEvent`]s with named errors for bad fields.
//! - [`hints`]: while following trigger-db, the losses the agent's own
//!   watch sees before trigger-db says them (a link down, an address or
//!   interface gone) go to the manager at once.
//! - [`links`]: the link table (interfaces, kinds, state, addresses with
//!   their flags, 802.21 quality, flaps, loss predictions); applying an
//!   event says which interfaces it touched.
//! - [`policy`]: the candidate address pairs of one IKE SA, their scores,
//!   and stay / move with the move's kind (forced, predictive, voluntary
//!   with hysteresis and dwell).
//! - [`manager`]: per IKE SA, which inputs concern it, path tests, the
//!   update, retries, the address list to announce, background probes and
//!   each move's timeline, as actions for the engine.
//! - [`config`]: the `[mobility]` section.
//!
//! Everything but the subscriber and the watch is sans-IO: route lookups
//! come in as a [`policy::RouteView`] answered by the runtime, time as
//! `now`. The runtime (`crate::runtime::mobility`) runs the sources and the
//! manager and hands the manager's actions to the engine.

pub mod config;
pub mod driver;
pub mod hints;
pub mod links;
pub mod manager;
pub mod policy;
pub mod report;
pub mod route_lookup;
pub mod subscriber;
pub mod triggers;
pub mod watch;

pub use links::{IfaceKind, Interface, LinkEvent, LinkTable, Touched};
pub use policy::{
    Candidate, Evaluation, MoveReason, PolicyConfig, RouteAnswer, RouteView, Verdict,
};

use std::time::SystemTime;

/// Which source feeds the manager now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Active {
    /// Waiting for trigger-db (source `trigger-db`, not reachable).
    Waiting { since: SystemTime, why: String },
    /// The trigger-db subscription.
    TriggerDb { since: SystemTime },
    /// The agent's own rtnetlink watch; `why` trigger-db is not used.
    Netlink { since: SystemTime, why: String },
}

/// What `mobike-agent status` shows of mobility.
#[derive(Debug, Clone)]
pub struct MobilityStatus {
    pub source: config::Source,
    pub active: Active,
    pub synced: bool,
    pub interfaces: usize,
    pub rejected: u64,
    pub reports_dropped: u64,
    /// Losses the kernel hints gave before trigger-db (`None`: no hints).
    pub kernel_hints: Option<u64>,
    pub sas: Vec<(manager::SaId, manager::SaMobility)>,
}
