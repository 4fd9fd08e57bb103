//! trigger-client: the client side of trigger-db's Unix socket, for
//! triggerctl, the mobike-agent and the tests, without linking the daemon
//! (no SQLite, no netlink sources).
//!
//! [`unix::connect`] is the generic part: an eager gRPC [`Channel`] over a
//! Unix socket, used for trigger-db's socket and the mobike-agent's control
//! socket alike. On top of it, [`connect`] gives a [`Client`] of trigger-db's
//! `TriggerService`, and [`default_socket`] / [`socket_from_env`] say where
//! the daemon listens when no path is given, so that the daemon and its
//! clients agree without flags. This crate does not retry, time out
//! long-lived streams or interpret replies; it only makes the channel.

pub mod unix;

use std::path::{Path, PathBuf};

use tonic::transport::Channel;
use trigger_proto::v1::trigger_service_client::TriggerServiceClient;

pub use unix::ConnectError;

/// A client of trigger-db over its Unix socket.
pub type Client = TriggerServiceClient<Channel>;

/// Environment variable naming trigger-db's socket for its clients.
pub const SOCKET_ENV: &str = "TRIGGER_DB_SOCKET";

/// The socket trigger-db serves on when none is configured: as root
/// `/run/trigger-db/trigger.sock`, otherwise
/// `$XDG_RUNTIME_DIR/trigger-db/trigger.sock` (fallback `/run/user/$UID`,
/// then the temporary directory).
pub fn default_socket() -> PathBuf {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return PathBuf::from("/run/trigger-db/trigger.sock");
    }
    let runtime = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .unwrap_or_else(|| {
            // SAFETY: getuid has no preconditions and cannot fail.
            let uid = unsafe { libc::getuid() };
            let run_user = PathBuf::from(format!("/run/user/{uid}"));
            if run_user.is_dir() {
                run_user
            } else {
                std::env::temp_dir().join(format!("trigger-db-{uid}"))
            }
        });
    runtime.join("trigger-db").join("trigger.sock")
}

/// The socket a client uses when none is given: `$TRIGGER_DB_SOCKET` if
/// set and not empty, else the daemon's [`default_socket`].
pub fn socket_from_env() -> PathBuf {
    std::env::var_os(SOCKET_ENV)
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(default_socket)
}

/// Connects to trigger-db on `socket`, eagerly (see [`unix::connect`]).
pub async fn connect(socket: &Path) -> Result<Client, ConnectError> {
    Ok(TriggerServiceClient::new(
        unix::connect("trigger-db", socket).await?,
    ))
}
