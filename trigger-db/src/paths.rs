//! Default locations of the socket and the database, shared by the daemon
//! and triggerctl so that both agree without flags.
//!
//! As root: `/run/trigger-db/trigger.sock` and `/var/lib/trigger-db/triggers.db`.
//! Otherwise `$XDG_RUNTIME_DIR/trigger-db/trigger.sock` (fallback
//! `/run/user/$UID`, then the temporary directory) and
//! `$XDG_STATE_HOME/trigger-db/triggers.db` (fallback `$HOME/.local/state`).

use std::path::PathBuf;

/// Environment variable naming the socket for triggerctl.
pub const SOCKET_ENV: &str = "TRIGGER_DB_SOCKET";

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn env_dir(var: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
}

pub fn default_socket() -> PathBuf {
    if is_root() {
        return PathBuf::from("/run/trigger-db/trigger.sock");
    }
    let runtime = env_dir("XDG_RUNTIME_DIR").unwrap_or_else(|| {
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

pub fn default_database() -> PathBuf {
    if is_root() {
        return PathBuf::from("/var/lib/trigger-db/triggers.db");
    }
    let state = env_dir("XDG_STATE_HOME")
        .or_else(|| env_dir("HOME").map(|h| h.join(".local").join("state")))
        .unwrap_or_else(|| std::env::temp_dir().join("trigger-db-state"));
    state.join("trigger-db").join("triggers.db")
}
