//! The daemon's log lines on a pipe (as under systemd): plain text without
//! colour codes, or JSON objects with `--log-format json`.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    sync::mpsc,
    time::Duration,
};

const DAEMON: &str = env!("CARGO_BIN_EXE_trigger-db");

/// The first `n` stderr lines of a daemon started with `args` (in a
/// private directory, no NetworkManager), then the daemon is killed.
fn first_lines(args: &[&str], n: usize) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("trigger-db.toml");
    std::fs::write(&config, "[sources.networkmanager]\nenabled = false\n").unwrap();
    let mut child = Command::new(DAEMON)
        .arg("--socket")
        .arg(dir.path().join("trigger.sock"))
        .arg("--database")
        .arg(dir.path().join("triggers.db"))
        .arg("--config")
        .arg(&config)
        .args(args)
        .env("TRIGGER_DB_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::sync_channel(n);
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok).take(n) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut lines = Vec::new();
    while lines.len() < n {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(l) => lines.push(l),
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(!lines.is_empty(), "the daemon logged nothing");
    lines
}

#[test]
fn text_logs_to_a_pipe_carry_no_colour_codes() {
    for l in first_lines(&[], 2) {
        assert!(!l.contains('\u{1b}'), "{l:?}");
        assert!(l.contains("INFO") || l.contains("WARN"), "{l}");
    }
}

#[test]
fn json_logs_are_one_object_per_line() {
    for l in first_lines(&["--log-format", "json"], 2) {
        let v: serde_json::Value = serde_json::from_str(&l).unwrap_or_else(|e| panic!("{e}: {l}"));
        assert!(
            v["level"].is_string() && v["fields"]["message"].is_string(),
            "{v}"
        );
    }
}

#[test]
fn the_log_format_comes_from_the_environment_too() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(DAEMON)
        .env("TRIGGER_DB_LOG_FORMAT", "yaml")
        .arg("--socket")
        .arg(dir.path().join("s"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("yaml") && err.contains("json"), "{err}");
}
