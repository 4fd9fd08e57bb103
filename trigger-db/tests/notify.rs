//! trigger-db under systemd's `Type=notify`: READY=1 with a status line once
//! it serves, WATCHDOG=1 at half the WatchdogSec systemd passes, STOPPING=1
//! on SIGTERM; over a real notify socket.

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use system_tests::{
    process,
    systemd::{NotifySocket, value, verify_unit},
};

const DAEMON: &str = env!("CARGO_BIN_EXE_trigger-db");

#[test]
fn ready_status_watchdog_and_stopping_reach_the_notify_socket() {
    let dir = tempfile::tempdir().unwrap();
    let mut notify = NotifySocket::bind(dir.path());
    let config = dir.path().join("trigger-db.toml");
    std::fs::write(&config, "[sources.networkmanager]\nenabled = false\n").unwrap();
    let socket = dir.path().join("trigger.sock");
    // As systemd starts it: WATCHDOG_PID is the daemon's own pid (the
    // shell execs it), WatchdogSec=1: a ping every half second.
    let mut child = Command::new("sh")
        .args(["-c", "WATCHDOG_PID=$$ exec \"$0\" \"$@\"", DAEMON])
        .arg("--socket")
        .arg(&socket)
        .arg("--database")
        .arg(dir.path().join("triggers.db"))
        .arg("--config")
        .arg(&config)
        .env("NOTIFY_SOCKET", notify.path())
        .env("WATCHDOG_USEC", "1000000")
        .env("TRIGGER_DB_LOG", "warn")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let ready = notify.expect("READY=1", Duration::from_secs(30));
    assert!(socket.exists(), "READY=1 before the socket is there");
    let status = value(&ready, "STATUS").expect("a status line with READY=1");
    // The rtnetlink source may have stored the kernel's state already.
    assert!(
        status.starts_with("serving; last id ") && status.ends_with(" 0 subscribers"),
        "{status}"
    );
    notify.expect("WATCHDOG=1", Duration::from_secs(5));
    notify.expect("WATCHDOG=1", Duration::from_secs(5));
    process::signal(&child, libc::SIGTERM);
    notify.expect("STOPPING=1", Duration::from_secs(10));
    let exit = process::wait_exit(&mut child, Duration::from_secs(15)).expect("exit");
    assert!(exit.success(), "{exit:?}");
}

/// Without NOTIFY_SOCKET (not under systemd) nothing is sent and nothing
/// fails.
#[test]
fn without_a_notify_socket_the_daemon_runs_as_before() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("trigger-db.toml");
    std::fs::write(&config, "[sources.networkmanager]\nenabled = false\n").unwrap();
    let socket = dir.path().join("trigger.sock");
    let mut child = Command::new(DAEMON)
        .arg("--socket")
        .arg(&socket)
        .arg("--database")
        .arg(dir.path().join("triggers.db"))
        .arg("--config")
        .arg(&config)
        .env_remove("NOTIFY_SOCKET")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    system_tests::wait::until(
        "the socket",
        Duration::from_secs(30),
        Duration::from_millis(20),
        || socket.exists(),
    );
    process::signal(&child, libc::SIGTERM);
    let exit = process::wait_exit(&mut child, Duration::from_secs(15)).expect("exit");
    assert!(exit.success(), "{exit:?}");
}

/// The unit file passes `systemd-analyze verify` without a warning.
#[test]
fn the_unit_file_verifies() {
    let unit =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/trigger-db.service");
    match verify_unit(&unit, DAEMON) {
        None => eprintln!("skipped: no systemd-analyze"),
        Some(r) => r.unwrap_or_else(|e| panic!("{}: {e}", unit.display())),
    }
}
