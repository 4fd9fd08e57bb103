//! The trigger model shared by trigger-db and its subscribers: the checked
//! domain types of the PF_TRIGGER triggers and IEEE 802.21 link events
//! ([`model`]), their `trigger.v1` protobuf form ([`wire`]), the table of
//! links, addresses and default routes ([`links`]), and the rtnetlink
//! source that keeps that table and derives triggers from the kernel's
//! link, address and route messages ([`netlink`]), handing them on as
//! [`ingest::SourceBatch`]es, and the count of link flaps ([`flaps`]).
//!
//! trigger-db stores, numbers and serves these triggers; mobike-agent runs
//! the same rtnetlink source itself when trigger-db is not running, so that
//! both read the kernel the same way. This crate has no store, no server
//! and no SQLite: linking it does not bring trigger-db's daemon along.

pub mod flaps;
pub mod ingest;
pub mod links;
pub mod model;
pub mod netlink;
pub mod wire;
