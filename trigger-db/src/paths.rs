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
//! the socket and the database inside.

use std::{
    io,
    os::unix::fs::DirBuilderExt,
    path::{Path, PathBuf},
};

#[derive(Debug, thiserror::Error)]
pub enum PathError {
    #[error("cannot create {path}")]
    Create {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot inspect {path}")]
    Inspect {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "{path} is not ours to use: {why} (it is in the shared temporary directory; \
         remove it, or configure another socket or database path)"
    )]
    NotPrivate { path: String, why: String },
}

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

/// Creates the directory `dir` (a socket's or the database's) with its
/// parents. If it lies inside the shared temporary directory `tmp`, the
/// directory right below `tmp` on its way is created 0700 and must be ours
/// (see the module documentation).
pub fn prepare_dir(dir: &Path, tmp: &Path) -> Result<(), PathError> {
    if let Ok(rest) = dir.strip_prefix(tmp)
        && let Some(first) = rest.components().next()
    {
        let top = tmp.join(first);
        match std::fs::DirBuilder::new().mode(0o700).create(&top) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(source) => {
                return Err(PathError::Create {
                    path: top.display().to_string(),
                    source,
                });
            }
        }
        check_private(&top)?;
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(|source| PathError::Create {
            path: dir.display().to_string(),
            source,
        })
}

/// `dir` is a directory (not a link to one) owned by this user that no
/// group or other user can write to.
pub fn check_private(dir: &Path) -> Result<(), PathError> {
    let path = dir.display().to_string();
    match trigger_client::untrusted_dir(dir, false) {
        Ok(None) => Ok(()),
        Ok(Some(why)) => Err(PathError::NotPrivate { path, why }),
        Err(source) => Err(PathError::Inspect { path, source }),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    use super::*;

    #[test]
    fn a_fallback_dir_is_created_private_and_reused_when_ours() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("trigger-db-1000").join("trigger-db");
        prepare_dir(&dir, tmp.path()).unwrap();
        let top = std::fs::metadata(tmp.path().join("trigger-db-1000")).unwrap();
        assert_eq!(top.mode() & 0o777, 0o700);
        assert!(dir.is_dir());
        prepare_dir(&dir, tmp.path()).unwrap();
    }

    #[test]
    fn a_fallback_dir_others_can_write_or_a_link_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let top = tmp.path().join("trigger-db-1000");
        std::fs::create_dir(&top).unwrap();
        std::fs::set_permissions(&top, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = prepare_dir(&top.join("trigger-db"), tmp.path()).unwrap_err();
        assert!(e.to_string().contains("others may write"), "{e}");
        assert!(!top.join("trigger-db").exists());

        let elsewhere = tempfile::tempdir().unwrap();
        let link = tmp.path().join("trigger-db-state");
        std::os::unix::fs::symlink(elsewhere.path(), &link).unwrap();
        let e = prepare_dir(&link.join("trigger-db"), tmp.path()).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
    }

    #[test]
    fn a_fallback_dir_of_another_user_is_refused() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root to give a directory away");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let top = tmp.path().join("trigger-db-1000");
        std::fs::create_dir(&top).unwrap();
        std::os::unix::fs::chown(&top, Some(65534), Some(65534)).unwrap();
        let e = prepare_dir(&top.join("trigger-db"), tmp.path()).unwrap_err();
        assert!(e.to_string().contains("belongs to uid 65534"), "{e}");
    }

    #[test]
    fn a_dir_outside_the_temporary_directory_is_only_created() {
        let tmp = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        let dir = other.path().join("a").join("b");
        prepare_dir(&dir, tmp.path()).unwrap();
        assert!(dir.is_dir());
    }
}
