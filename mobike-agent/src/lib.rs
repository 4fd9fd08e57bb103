//! IKEv2 (RFC 7296) endpoint with MOBIKE (RFC 4555): the mobike-agent.
//!
//! The protocol core is sans-IO: the wire codec ([`proto`]), the
//! cryptography and key derivation ([`crypto`]), strongSwan-style proposal
//! strings ([`proposal`]) and the protocol engine ([`engine`]), which takes
//! datagrams, timer ticks and commands with `now` passed in and hands back
//! datagrams to send, kernel actions as plain data, timer deadlines and
//! events. MOBIKE there is the address update of RFC 4555 §3.5 in both
//! roles, started by a command: the engine does not choose address pairs
//! itself; [`mobility`] does, from trigger-db's triggers or the agent's own
//! rtnetlink watch. [`pki`] holds the X.509 side of certificate
//! authentication (not yet used by IKE_AUTH).
//!
//! Around the engine: [`config_file`] reads the TOML configuration;
//! [`runtime`] is the tokio driver the binary runs (UDP sockets from
//! [`udp`] and [`sockopt`], the timer, reloads, shutdown); [`kernel`]
//! applies the engine's kernel actions through ipsec-backend, [`routes`]
//! keeps the tunnel routes and [`vips`] the virtual IPs; [`control`] is the
//! local gRPC control socket, its server feeding the runtime and its client
//! used by `mobike-agent status`, `initiate`, `terminate`, `rekey` and
//! `move`.

pub mod cli;
pub mod config_file;
pub mod control;
pub mod crypto;
pub mod engine;
pub mod kernel;
pub mod mobility;
pub mod pki;
pub mod proposal;
pub mod proto;
pub mod routes;
pub mod rtnl;
pub mod runtime;
pub mod sockopt;
pub mod udp;
pub mod vips;
