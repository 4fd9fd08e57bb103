//! Sources: actor tasks that each own one connection to something that
//! knows about links, turn what it says into [`crate::model::Trigger`]s and
//! hand them to the store as [`crate::ingest::SourceBatch`]es over a bounded
//! channel.
//!
//! A source only observes and translates; it assigns no ids, stores nothing
//! and never decides anything about mobility. There are two: the kernel's
//! rtnetlink ([`netlink`]) and NetworkManager over D-Bus ([`nm`]).

/// The rtnetlink source (in `trigger-model`, shared with mobike-agent).
pub use trigger_model::netlink;
pub mod nm;
