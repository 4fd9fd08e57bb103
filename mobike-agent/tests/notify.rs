//! mobike-agent under systemd's `Type=notify`, over a real notify socket:
//! READY=1 with a status line once its sockets are up, WATCHDOG=1 from its
//! event loop, RELOADING=1 then READY=1 around SIGHUP (also when the new
//! file is refused), STOPPING=1 on SIGTERM. In a network namespace of its
//! own (root and iproute2; skipped without them), backend `none`.

use std::{process::Stdio, time::Duration};

use system_tests::{
    netns::Netns,
    process,
    systemd::{NotifySocket, value, verify_unit},
};

const BIN: &str = env!("CARGO_BIN_EXE_mobike-agent");

const CONFIG: &str = r#"[kernel]
backend = "none"
[mobility]
source = "off"

[connections.gw]
local_addrs = ["127.0.0.1"]
remote_addrs = ["127.0.0.2"]
local_id = "a.test"
remote_id = "b.test"
psk = "notify-test-psk"
proposals = ["aes256gcm16-prfsha256-x25519"]
start = "listen"
[connections.gw.children.net]
local_ts = ["10.1.0.0/24"]
remote_ts = ["10.2.0.0/24"]
esp_proposals = ["aes256gcm16"]
"#;

#[test]
fn ready_watchdog_reload_and_stopping_reach_the_notify_socket() {
    let Some(ns) = Netns::try_new("notify") else {
        eprintln!("skipped: needs root and iproute2 (network namespace)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut notify = NotifySocket::bind(dir.path());
    let conf = dir.path().join("agent.toml");
    std::fs::write(&conf, CONFIG).unwrap();
    // As systemd starts it: WATCHDOG_PID is the agent's own pid (the shell
    // execs it); WatchdogSec=1, a ping every half second.
    let mut agent = ns
        .command("sh")
        .args(["-c", "WATCHDOG_PID=$$ exec \"$0\" \"$@\"", BIN])
        .arg("--config")
        .arg(&conf)
        .arg("--control-socket")
        .arg(dir.path().join("agent.sock"))
        .env("NOTIFY_SOCKET", notify.path())
        .env("WATCHDOG_USEC", "1000000")
        .env("MOBIKE_AGENT_LOG", "warn")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let ready = notify.expect("READY=1", Duration::from_secs(30));
    assert_eq!(
        value(&ready, "STATUS"),
        Some("0 IKE SAs, 0 CHILD_SAs; mobility off"),
        "{ready:?}"
    );
    notify.expect("WATCHDOG=1", Duration::from_secs(5));

    // A reload: RELOADING=1 (with the monotonic time systemd wants), then
    // READY=1 once the new configuration is in.
    process::signal(&agent, libc::SIGHUP);
    let reloading = notify.expect("RELOADING=1", Duration::from_secs(10));
    assert!(
        value(&reloading, "MONOTONIC_USEC").is_some(),
        "{reloading:?}"
    );
    let ready = notify.expect("READY=1", Duration::from_secs(10));
    assert!(
        value(&ready, "STATUS").is_some_and(|s| s.contains("IKE SAs")),
        "{ready:?}"
    );

    // A broken file: refused, and READY=1 says so.
    std::fs::write(&conf, "[kernel]\nbackend = \"nonsense\"\n").unwrap();
    process::signal(&agent, libc::SIGHUP);
    notify.expect("RELOADING=1", Duration::from_secs(10));
    let refused = notify.expect("READY=1", Duration::from_secs(10));
    assert!(
        value(&refused, "STATUS").is_some_and(|s| s.starts_with("reload refused")),
        "{refused:?}"
    );
    notify.expect("WATCHDOG=1", Duration::from_secs(5));

    process::signal(&agent, libc::SIGTERM);
    notify.expect("STOPPING=1", Duration::from_secs(10));
    let exit = process::wait_exit(&mut agent, Duration::from_secs(15)).expect("exit");
    assert!(exit.success(), "{exit:?}");
    drop(ns);
}

/// The unit file passes `systemd-analyze verify` without a warning.
#[test]
fn the_unit_file_verifies() {
    let unit =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/mobike-agent.service");
    match verify_unit(&unit, BIN) {
        None => eprintln!("skipped: no systemd-analyze"),
        Some(r) => r.unwrap_or_else(|e| panic!("{}: {e}", unit.display())),
    }
}
