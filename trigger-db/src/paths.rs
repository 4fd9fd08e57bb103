//! The default location of the database: as root
//! `/var/lib/trigger-db/triggers.db`, otherwise
//! `$XDG_STATE_HOME/trigger-db/triggers.db` (fallback `$HOME/.local/state`,
//! then the temporary directory). The socket's default, shared with the
//! clients, is `trigger_client::default_socket`.

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
