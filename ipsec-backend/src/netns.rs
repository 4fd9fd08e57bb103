//! Running code in a network namespace: a fresh private one (tests, the
//! capability probe) or a named one under `/run/netns` (benchmarks, VM
//! scenarios).
//!
//! A network namespace is a per-thread property, so each helper runs its
//! closure on a dedicated OS thread with its own current-thread tokio
//! runtime; the caller's thread and the host namespace are never changed.
//! This module does not create interfaces or routes.

use std::future::Future;
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::error::Error;

fn enter_new_netns() -> std::io::Result<()> {
    // SAFETY: unshare only affects the calling thread (a thread we own).
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Enter the namespace at `path` (e.g. `/run/netns/L`) on this thread.
pub fn enter_netns(path: &Path) -> std::io::Result<()> {
    let f = std::fs::File::open(path)?;
    // SAFETY: setns with a valid namespace fd; affects this thread only.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn run_on_thread<T, Fut, F>(
    enter: impl FnOnce() -> std::io::Result<()> + Send + 'static,
    f: F,
) -> Result<T, Error>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
    T: Send + 'static,
{
    std::thread::spawn(move || {
        enter().map_err(Error::Netns)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(Error::Netns)?;
        Ok(rt.block_on(f()))
    })
    .join()
    .unwrap_or_else(|_| {
        Err(Error::Netns(std::io::Error::other(
            "thread in the network namespace panicked",
        )))
    })
}

/// Run `f` in a brand-new, empty network namespace (only `lo`, down) that
/// disappears when `f` returns. Needs CAP_SYS_ADMIN.
pub fn in_new_netns<T, Fut, F>(f: F) -> Result<T, Error>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
    T: Send + 'static,
{
    run_on_thread(enter_new_netns, f)
}

/// Run `f` in the existing namespace at `path`.
pub fn in_netns<T, Fut, F>(path: &Path, f: F) -> Result<T, Error>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
    T: Send + 'static,
{
    let p = path.to_path_buf();
    run_on_thread(move || enter_netns(&p), f)
}
