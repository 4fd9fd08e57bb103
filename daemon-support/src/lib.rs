//! What the project's binaries share about running as a service: how they
//! log ([`log`]: tracing to stderr, text or JSON lines) and how they tell
//! systemd their state ([`notify`]: READY, STATUS, RELOADING, STOPPING,
//! watchdog pings over `$NOTIFY_SOCKET`), where and how they bind their
//! Unix sockets (`socket`: private fallback directories, never a socket
//! reachable with the umask's mode), and how their Unix-socket gRPC
//! servers accept stock clients that send the socket path as the HTTP/2
//! `:authority` (`h2_authority`). Both are behind features of their names,
//! which the gRPC daemons turn on.
//!
//! It holds no daemon logic: each daemon decides when it is ready and what
//! its status line says.

#[cfg(feature = "h2-authority")]
pub mod h2_authority;
pub mod log;
pub mod notify;
#[cfg(feature = "socket")]
pub mod socket;

pub use log::{LogFormat, init as init_logging};
