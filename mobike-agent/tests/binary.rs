//! The `mobike-agent` binary's start-up checks (no network needed).

use std::process::Command;

fn run_with_config(text: &str) -> std::process::Output {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, text).expect("write config");
    Command::new(env!("CARGO_BIN_EXE_mobike-agent"))
        .arg("--config")
        .arg(&path)
        .env("MOBIKE_AGENT_LOG", "error")
        .output()
        .expect("run mobike-agent")
}

#[test]
fn unknown_config_key_stops_the_agent_with_the_key_named() {
    let example = include_str!("../config/example.toml");
    let out = run_with_config(&example.replace("mobike = true", "mobike = true\nmobikee = false"));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("mobikee"), "{err}");
}

#[test]
fn bad_proposal_stops_the_agent_naming_connection_and_token() {
    let example = include_str!("../config/example.toml");
    let out = run_with_config(&example.replace(
        "aes256gcm16-prfsha256-x25519",
        "aes256gcm16-prfsha256-modp2048",
    ));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("home") && err.contains("modp2048"), "{err}");
}

#[test]
fn xfrm_backend_is_accepted_and_fails_only_at_the_kernel_or_socket() {
    // 192.0.2.1 is not a local address here: with the XFRM socket open the
    // agent stops at bind; without XFRM netlink (no root, no xfrm_user) it
    // stops opening the backend. Either way the configuration was accepted.
    let example = include_str!("../config/example.toml");
    let out = run_with_config(&example.replace("backend = \"none\"", "backend = \"xfrm\""));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("not wired"), "{err}");
    assert!(
        err.contains("cannot bind UDP") || err.contains("cannot open the kernel backend"),
        "{err}"
    );
}
