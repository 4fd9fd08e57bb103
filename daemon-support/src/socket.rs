//! Where a daemon puts its Unix socket (and, for trigger-db, its database)
//! and how it binds it, shared by trigger-db and mobike-agent.
//!
//! A directory of ours inside the shared temporary directory (the non-root
//! fallbacks such as `/tmp/trigger-db-UID` or `/tmp/mobike-agent-UID`, or any
//! path configured there) is created private (0700) and used only if it is
//! ours: owned by this user, not a symbolic link, and writable by nobody
//! else. Otherwise another local user could have made it first and would
//! control the socket inside. The socket itself is bound in a private
//! directory beside its path, given its mode and group there, and only then
//! renamed into place, so it is never reachable with the mode the umask
//! gave it. (Changing the umask instead would change it for every thread of
//! the daemon.)
//!
//! It does not decide the paths: each daemon has its own defaults.

use std::{
    io,
    os::unix::fs::{DirBuilderExt as _, PermissionsExt as _},
    path::Path,
};

use tokio::net::UnixListener;

/// What went wrong preparing a directory or binding a socket.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// A directory could not be created.
    #[error("cannot create {path}")]
    Create {
        /// The directory.
        path: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A directory's metadata could not be read.
    #[error("cannot inspect {path}")]
    Inspect {
        /// The directory.
        path: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A directory in the shared temporary directory is not ours alone.
    #[error(
        "{path} is not ours to use: {why} (it is in the shared temporary directory; \
         remove it, or configure another path)"
    )]
    NotPrivate {
        /// The directory.
        path: String,
        /// What is wrong with it.
        why: String,
    },
    /// A live daemon answers on the socket already.
    #[error("socket {path} is in use by a running {daemon}")]
    InUse {
        /// The socket.
        path: String,
        /// Which daemon was binding.
        daemon: &'static str,
    },
    /// One step of binding the socket failed.
    #[error("socket {path}: {what}")]
    Bind {
        /// The socket (or the private directory it is bound in).
        path: String,
        /// Which step.
        what: &'static str,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// Creates the directory `dir` (a socket's or a database's) with its
/// parents. If it lies inside the shared temporary directory `tmp`, the
/// directory right below `tmp` on its way is created 0700 and must be ours
/// (see the module documentation).
pub fn prepare_dir(dir: &Path, tmp: &Path) -> Result<(), SocketError> {
    if let Ok(rest) = dir.strip_prefix(tmp)
        && let Some(first) = rest.components().next()
    {
        let top = tmp.join(first);
        match std::fs::DirBuilder::new().mode(0o700).create(&top) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(source) => {
                return Err(SocketError::Create {
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
        .map_err(|source| SocketError::Create {
            path: dir.display().to_string(),
            source,
        })
}

/// `dir` is a directory (not a link to one) owned by this user that no
/// group or other user can write to.
pub fn check_private(dir: &Path) -> Result<(), SocketError> {
    let path = dir.display().to_string();
    match trigger_client::untrusted_dir(dir, false) {
        Ok(None) => Ok(()),
        Ok(Some(why)) => Err(SocketError::NotPrivate { path, why }),
        Err(source) => Err(SocketError::Inspect { path, source }),
    }
}

fn bind_err(path: &Path, what: &'static str) -> impl FnOnce(io::Error) -> SocketError {
    let path = path.display().to_string();
    move |source| SocketError::Bind { path, what, source }
}

/// Binds the Unix socket `path` for `daemon` with `mode` (and `group`, if
/// given), after [`prepare_dir`] on its directory; replaces a stale file
/// left by a daemon that died, but never one a live daemon is serving on.
pub async fn bind(
    daemon: &'static str,
    path: &Path,
    mode: u32,
    group: Option<u32>,
) -> Result<UnixListener, SocketError> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    prepare_dir(dir, &std::env::temp_dir())?;
    if path.exists() {
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            return Err(SocketError::InUse {
                path: path.display().to_string(),
                daemon,
            });
        }
        std::fs::remove_file(path).map_err(bind_err(path, "cannot remove the stale socket"))?;
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let private = dir.join(format!(".{name}.{}.bind", std::process::id()));
    // A leftover of an earlier daemon with our pid (it died while binding).
    let _ = std::fs::remove_dir_all(&private);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&private)
        .map_err(bind_err(
            &private,
            "cannot create the private directory to bind in",
        ))?;
    let staged = private.join("socket");
    let bound = (|| {
        let listener = UnixListener::bind(&staged).map_err(bind_err(path, "cannot bind"))?;
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(mode))
            .map_err(bind_err(path, "cannot set its mode"))?;
        if let Some(gid) = group {
            std::os::unix::fs::chown(&staged, None, Some(gid))
                .map_err(bind_err(path, "cannot set its group"))?;
        }
        std::fs::rename(&staged, path).map_err(bind_err(path, "cannot move it into place"))?;
        Ok(listener)
    })();
    let _ = std::fs::remove_dir_all(&private);
    bound
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
        let top = tmp.path().join("mobike-agent-1000");
        std::fs::create_dir(&top).unwrap();
        std::os::unix::fs::chown(&top, Some(65534), Some(65534)).unwrap();
        let e = prepare_dir(&top, tmp.path()).unwrap_err();
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

    #[tokio::test]
    async fn a_socket_gets_its_mode_replaces_a_stale_file_and_refuses_a_live_one() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("run").join("x.sock");
        let live = bind("test", &path, 0o600, None).await.unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        let e = bind("test", &path, 0o600, None).await.unwrap_err();
        assert!(matches!(e, SocketError::InUse { .. }), "{e}");
        drop(live);
        // The file stays behind, nobody answers: a stale socket.
        assert!(path.exists());
        // SAFETY: getegid has no preconditions.
        let gid = unsafe { libc::getegid() };
        let again = bind("test", &path, 0o660, Some(gid)).await.unwrap();
        let m = std::fs::symlink_metadata(&path).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o660);
        assert_eq!(m.gid(), gid);
        // It serves under its final name.
        let (accepted, connected) =
            tokio::join!(again.accept(), tokio::net::UnixStream::connect(&path));
        accepted.unwrap();
        connected.unwrap();
        // No private bind directory is left beside it.
        let left: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("x.sock")]);
    }
}
