//! Child processes of a test: commands that must succeed, signals, and
//! stopping a child with a bounded wait. Every failure panics naming the
//! command and what it wrote to stderr.

use std::{
    process::{Child, Command, ExitStatus},
    time::{Duration, Instant},
};

/// Runs `program args...`, which must succeed; returns its stdout.
pub fn output(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `program args...`, which must succeed.
pub fn run(program: &str, args: &[&str]) {
    output(program, args);
}

/// Whether this process runs as root (namespaces and XFRM need it).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Sends `signal` to `child` (if it has not been reaped yet).
pub fn signal(child: &Child, signal: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(child.id()) else {
        return;
    };
    // SAFETY: a signal to our own child, which the caller has not reaped.
    unsafe { libc::kill(pid, signal) };
}

/// Waits up to `within` for `child` to exit; `None` if it still runs.
pub fn wait_exit(child: &mut Child, within: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// SIGTERM, then waits up to `grace` for the exit; `None` if it still runs
/// (the caller decides whether that is a failure).
pub fn terminate(child: &mut Child, grace: Duration) -> Option<ExitStatus> {
    if let Ok(Some(st)) = child.try_wait() {
        return Some(st);
    }
    signal(child, libc::SIGTERM);
    wait_exit(child, grace)
}

/// SIGTERM, up to `grace` for the exit, then SIGKILL; the child is reaped
/// either way. For guards' `Drop`, where nothing may panic.
pub fn stop(child: &mut Child, grace: Duration) {
    if terminate(child, grace).is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
}
