//! IKEv2 (RFC 7296) endpoint with MOBIKE (RFC 4555) in mind: the sans-IO
//! protocol core of the mobike-agent.
//!
//! What is here: the wire codec ([`proto`]), the cryptography and key
//! derivation ([`crypto`]), strongSwan-style proposal strings
//! ([`proposal`]) and the protocol engine ([`engine`]), which takes
//! datagrams, timer ticks and commands with `now` passed in and hands back
//! datagrams to send, kernel actions as plain data, timer deadlines and
//! events. What is not: sockets, clocks, tokio, the kernel (the runtime drives
//! the engine and applies its kernel actions through ipsec-backend), and the
//! MOBIKE address moves themselves (the engine keeps the address pair of an
//! IKE SA changeable and parses the MOBIKE notifies so they can be added).
//!
//! Around the engine, [`config_file`] reads the TOML configuration and
//! [`runtime`] is the tokio driver used by the binary, [`kernel`] applies
//! the engine's kernel actions through ipsec-backend, [`routes`] keeps the
//! tunnel routes and [`control`] is the local gRPC control socket
//! (`mobike-agent status`).

pub mod config_file;
pub mod control;
pub mod crypto;
pub mod engine;
pub mod kernel;
pub mod mobility;
pub mod proposal;
pub mod proto;
pub mod routes;
pub mod runtime;
pub mod sockopt;
pub mod udp;
pub mod vips;
