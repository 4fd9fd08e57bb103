//! Mobility: the agent's picture of the host's links and the choice of an
//! address pair for each IKE SA, both sans-IO.
//!
//! [`links`] is the link table: interfaces (kind, state, addresses with
//! their flags, 802.21 link quality, flap counts, predicted loss) changed by
//! [`LinkEvent`]s, plain data that the runtime makes from trigger-db
//! triggers or from its own rtnetlink watch. Applying an event says which
//! interfaces it touched, so that only the IKE SAs using them are looked at
//! again. [`policy`] lists the candidate pairs of an IKE SA (usable local
//! addresses × the peer's addresses), scores them from configuration and
//! link state, and says whether to stay or move and why: forced (the
//! current pair is gone), predictive (its link is about to go) or voluntary
//! (a better pair, after hysteresis and dwell).
//!
//! What is not here: I/O of any kind (route lookups come in as a
//! [`policy::RouteView`] answered by the runtime, time as `now`), the
//! trigger-db subscription, path tests and the RFC 4555 signalling (the
//! engine's), and the kernel moves (ipsec-backend's).

pub mod config;
pub mod links;
pub mod policy;
pub mod subscriber;
pub mod triggers;

pub use links::{IfaceKind, Interface, LinkEvent, LinkTable, Touched};
pub use policy::{
    Candidate, Evaluation, MoveReason, PolicyConfig, RouteAnswer, RouteView, Verdict,
};
