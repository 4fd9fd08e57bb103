//! trigger-db: the link-trigger database of draft-schilcher-mobike-trigger-api
//! (PF_TRIGGER) for Linux, served over gRPC.
//!
//! Sources (rtnetlink; client Adds) produce [`model::Trigger`]s; the store
//! gives each a strictly increasing id and makes it durable in SQLite (or in
//! PostgreSQL, many hosts in one database, with a local SQLite spool while
//! the server is unreachable: [`store`]); the hub
//! fans it out to subscribers with bounded queues, resume-by-id and gap
//! notices; the gRPC adapter checks every request field and maps domain
//! errors to status codes. This crate does not decide anything about
//! mobility: it records and reports what links do, for MOBIKE, Mobile IP,
//! NSIS or an admin to act on.

pub mod cli;
pub mod coalesce;
pub mod config;
pub mod daemon;
pub mod damping;
pub mod hub;
pub mod paths;
pub mod peer;
pub mod server;
pub mod source;
pub mod store;
pub mod threshold;
pub mod writer;

/// The trigger model, the link table and the source channel live in
/// `trigger-model`, shared with mobike-agent; they keep their paths here.
pub use trigger_model::{ingest, links, model};
