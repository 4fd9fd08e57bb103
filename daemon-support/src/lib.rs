//! What the project's binaries share about running as a service: how they
//! log ([`log`]: tracing to stderr, text or JSON lines) and how they tell
//! systemd their state ([`notify`]: READY, STATUS, RELOADING, STOPPING,
//! watchdog pings over `$NOTIFY_SOCKET`) and where and how they bind their
//! Unix sockets (`socket`, with the feature of that name: private fallback
//! directories, never a socket reachable with the umask's mode).
//!
//! It holds no daemon logic: each daemon decides when it is ready and what
//! its status line says.

pub mod log;
pub mod notify;
#[cfg(feature = "socket")]
pub mod socket;

pub use log::{LogFormat, init as init_logging};
