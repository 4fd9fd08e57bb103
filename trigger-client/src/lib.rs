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

/// Connects to trigger-db on `socket`, eagerly (see [`unix::connect`]),
/// after [`check_socket_dir`] with the system's temporary directory.
pub async fn connect(socket: &Path) -> Result<Client, ConnectError> {
    check_socket_dir("trigger-db", socket, &std::env::temp_dir())?;
    Ok(TriggerServiceClient::new(
        unix::connect("trigger-db", socket).await?,
    ))
}

/// A socket inside the shared temporary directory `tmp` (such as the
/// fallback `/tmp/trigger-db-UID/trigger-db/trigger.sock`) is used only if
/// the directory right below `tmp` on its way is a directory (not a link)
/// owned by this user or root that no group or other user may write to;
/// otherwise another local user could have made it first and serve a
/// daemon of their own there. Paths outside `tmp` are not checked here.
/// `service` names the daemon in the error.
pub fn check_socket_dir(
    service: &'static str,
    socket: &Path,
    tmp: &Path,
) -> Result<(), ConnectError> {
    let Some(first) = socket
        .parent()
        .and_then(|d| d.strip_prefix(tmp).ok())
        .and_then(|rest| rest.components().next())
    else {
        return Ok(());
    };
    let top = tmp.join(first);
    // Not there: connecting fails on its own, naming the socket.
    let why = untrusted_dir(&top, true).unwrap_or(None);
    match why {
        None => Ok(()),
        // As a connect error (the variants are matched elsewhere), with
        // what is wrong in the cause.
        Some(why) => Err(ConnectError::Connect {
            service,
            socket: socket.to_owned(),
            source: std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!("not to be trusted: {why}"),
            ),
        }),
    }
}

/// What makes `dir` unfit to hold a socket or a database another local
/// user must not control, or `None` if nothing does: it must be a
/// directory (not a link to one), owned by this user (or root, if
/// `root_too`), that no group or other user may write to. Errors are those
/// of reading its metadata.
pub fn untrusted_dir(dir: &Path, root_too: bool) -> std::io::Result<Option<String>> {
    use std::os::unix::fs::MetadataExt as _;
    let m = std::fs::symlink_metadata(dir)?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    let d = dir.display();
    Ok(if m.file_type().is_symlink() {
        Some(format!("{d} is a symbolic link"))
    } else if !m.is_dir() {
        Some(format!("{d} is not a directory"))
    } else if m.uid() != me && !(root_too && m.uid() == 0) {
        Some(format!(
            "{d} belongs to uid {}, not to us (uid {me})",
            m.uid()
        ))
    } else if m.mode() & 0o022 != 0 {
        Some(format!(
            "{d} has mode {:o}: others may write to it",
            m.mode() & 0o7777
        ))
    } else {
        None
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn cause(e: &ConnectError) -> String {
        std::error::Error::source(e)
            .map(ToString::to_string)
            .unwrap_or_default()
    }

    #[test]
    fn a_socket_in_a_temporary_dir_others_may_write_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let top = tmp.path().join("trigger-db-1000");
        std::fs::create_dir_all(top.join("trigger-db")).unwrap();
        let socket = top.join("trigger-db").join("trigger.sock");
        std::fs::set_permissions(&top, std::fs::Permissions::from_mode(0o700)).unwrap();
        check_socket_dir("trigger-db", &socket, tmp.path()).unwrap();
        std::fs::set_permissions(&top, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = check_socket_dir("trigger-db", &socket, tmp.path()).unwrap_err();
        assert!(cause(&e).contains("others may write"), "{e}");
        // Outside the temporary directory nothing is checked here.
        let other = tempfile::tempdir().unwrap();
        check_socket_dir("trigger-db", &socket, other.path()).unwrap();
    }

    #[test]
    fn a_socket_in_a_temporary_dir_of_another_user_is_refused() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root to give a directory away");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let top = tmp.path().join("trigger-db-1000");
        std::fs::create_dir(&top).unwrap();
        std::os::unix::fs::chown(&top, Some(65534), Some(65534)).unwrap();
        let e = check_socket_dir("trigger-db", &top.join("trigger.sock"), tmp.path()).unwrap_err();
        assert!(cause(&e).contains("belongs to uid 65534"), "{e}");
    }
}
