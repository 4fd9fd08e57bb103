//! The workspace's shared test harness: network namespaces joined by veth
//! links that are deleted when dropped ([`netns`]), strongSwan's charon as
//! a peer in such a namespace ([`charon`]), the trigger-db daemon as a
//! process on a socket and database of its own ([`trigger_db`], feature
//! `trigger-db`), child processes ([`process`]), systemd's notify socket and unit
//! checks ([`systemd`]), a small openssl-made PKI ([`certs`]), a real
//! PostgreSQL server on a Unix socket
//! ([`postgres`]) and polling with timeouts
//! that fail naming what they waited for ([`wait`]). The integration tests
//! and benchmark programs of trigger-db, ipsec-backend and mobike-agent use
//! it as a dev-dependency.
//!
//! It is test scaffolding, not product code: every helper panics with a
//! message naming what failed instead of returning errors, most need root
//! and iproute2, and nothing here touches the host's own interfaces, routes
//! or XFRM state.

pub mod certs;
pub mod charon;
pub mod netns;
pub mod postgres;
pub mod process;
pub mod systemd;
#[cfg(feature = "trigger-db")]
pub mod trigger_db;
pub mod wait;
