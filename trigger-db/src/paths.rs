//! The default location of the database: as root
//! `/var/lib/trigger-db/triggers.db`, otherwise
//! `$XDG_STATE_HOME/trigger-db/triggers.db` (fallback `$HOME/.local/state`,
//! then the temporary directory). The socket's default, shared with the
//! clients, is `trigger_client::default_socket`.
//!
//! A directory of ours inside the shared temporary directory (the non-root
//! fallbacks `/tmp/trigger-db-UID`, `/tmp/trigger-db-state`, or any path
//! configured there) is created private (0700) and used only if it is ours:
//! owned by this user, not a symbolic link, and writable by nobody else.
//! Otherwise another local user could have made it first and would control
//! the socket and the database inside. (`daemon_support::socket::prepare_dir`,
//! shared with mobike-agent's control socket, does that.)

use std::path::PathBuf;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn env_dir(var: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
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
