//! End-to-end tests of `triggerctl` as a process against the real
//! `trigger-db` daemon (rtnetlink source off, socket and database in a
//! temporary directory): every verb's output, a completed handover's
//! fields, `add --from` batching and bad lines, history paging, `watch
//! --since` without gap or duplicate, watch surviving a gap notice and
//! daemon restarts, Ctrl-C, access control and an absent daemon.
//!
//! Links and snapshots of real interfaces run the daemon in a network
//! namespace of the test's own (veth pair), never on the host's links.

use std::{
    io::{BufRead, BufReader, Write},
    process::{Child, Command, Output, Stdio},
    sync::mpsc,
    time::Duration,
};

use system_tests::{
    netns::Netns,
    process,
    trigger_db::{Daemon, triggerctl_ok as ok},
};
use trigger_db::model::{Trigger, TriggerType};

const DAEMON: &str = env!("CARGO_BIN_EXE_trigger-db");
const TRIGGERCTL: &str = env!("CARGO_BIN_EXE_triggerctl");

fn ctl_cmd(d: &Daemon, args: &[&str]) -> Command {
    d.triggerctl(TRIGGERCTL, args)
}

fn ctl(d: &Daemon, args: &[&str]) -> Output {
    ctl_cmd(d, args).output().expect("run triggerctl")
}

fn ctl_stdin(d: &Daemon, args: &[&str], input: &str) -> Output {
    let mut child = ctl_cmd(d, args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn triggerctl");
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_owned();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}

/// Failed with exit 1 and one line on stderr; that line.
fn fails(o: Output) -> String {
    assert_eq!(
        o.status.code(),
        Some(1),
        "stdout: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    let err = String::from_utf8(o.stderr).unwrap();
    let lines: Vec<&str> = err.lines().filter(|l| !l.is_empty()).collect();
    assert!(!lines.is_empty(), "no error line");
    lines.last().unwrap().to_string()
}

fn json_lines(s: &str) -> Vec<serde_json::Value> {
    s.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

fn triggers(s: &str) -> Vec<Trigger> {
    s.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

fn stored(d: &Daemon) -> u64 {
    let v = json_lines(&ok(ctl(d, &["--json", "stats"])));
    v[0]["stored_triggers"].as_u64().unwrap()
}

fn link_up_lines(n: usize, ifname: &str) -> String {
    let mut s = String::new();
    for _ in 0..n {
        s.push_str(&format!(
            "{{\"type\":\"link-up\",\"interface\":{{\"name\":\"{ifname}\"}}}}\n"
        ));
    }
    s
}

#[test]
fn add_get_history_delete_flush_and_stats() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(DAEMON, dir.path(), None, None);

    let out = ok(ctl(
        &d,
        &[
            "add",
            "--type",
            "link-going-down",
            "--interface",
            "wlan0",
            "--time-interval",
            "500ms",
            "--reason",
            "link-parameter-degrading",
        ],
    ));
    assert_eq!(out, "added trigger 1\n");
    let out = ok(ctl(
        &d,
        &[
            "--json",
            "add",
            "-t",
            "if-addr-added",
            "-i",
            "eth0",
            "--address",
            "192.0.2.10/24",
        ],
    ));
    assert_eq!(json_lines(&out)[0]["id"], 2);

    let got = triggers(&ok(ctl(&d, &["--json", "get", "1"])));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].id, 1);
    assert_eq!(got[0].kind, TriggerType::LinkGoingDown);
    assert_eq!(
        got[0].reason.as_ref().unwrap().name,
        "link-parameter-degrading"
    );

    let table = ok(ctl(&d, &["history"]));
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(lines[0].starts_with("     ID TIME (UTC)"), "{table}");
    assert!(
        lines[1].contains("link-going-down") && lines[1].contains("in 500ms"),
        "{table}"
    );
    assert!(lines[2].contains("192.0.2.10/24"), "{table}");
    assert!(lines.iter().all(|l| l.len() <= 120), "{table}");

    let e = fails(ctl(&d, &["get", "99"]));
    assert!(
        e.starts_with("triggerctl: get 99 failed: NOT_FOUND: "),
        "{e}"
    );

    let deleted = json_lines(&ok(ctl(&d, &["--json", "delete", "2", "77"])));
    assert_eq!(deleted[0]["deleted"], 1);

    let e = fails(ctl(&d, &["flush"]));
    assert!(e.contains("add --yes to confirm"), "{e}");
    assert_eq!(stored(&d), 1);
    assert_eq!(
        ok(ctl(&d, &["flush", "-i", "eth9"])),
        "flushed 0 triggers\n"
    );
    assert_eq!(ok(ctl(&d, &["flush", "--yes"])), "flushed 1 triggers\n");
    assert_eq!(stored(&d), 0);

    // Bad flags are refused before anything is sent.
    let e = fails(ctl(
        &d,
        &["add", "-t", "link-down", "-i", "x", "--reason", "99"],
    ));
    assert!(e.contains("reason.code"), "{e}");
    let e = fails(ctl(
        &d,
        &["add", "-t", "link-up", "-i", "x", "--source", "rtnetlink"],
    ));
    assert!(e.contains("source"), "{e}");
}

#[test]
fn triggerctl_adds_and_shows_a_completed_move() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(DAEMON, dir.path(), None, None);
    let out = ok(ctl(
        &d,
        &[
            "add",
            "--type",
            "link-handover-complete",
            "-i",
            "wwan0",
            "--old-link",
            "wlan0",
            "--new-link",
            "wwan0",
            "--old-local",
            "2001:db8::1",
            "--new-local",
            "2001:db8:2::1",
            "--old-remote",
            "2001:db8:9::9",
            "--new-remote",
            "2001:db8:9::9",
            "--duration",
            "1500us",
            "--move-reason",
            "predicted",
            "--cause",
            "41",
        ],
    ));
    assert_eq!(out, "added trigger 1\n");
    let detail = "wlan0 -> wwan0 local 2001:db8::1 -> 2001:db8:2::1 peer 2001:db8:9::9 \
                  took 1.500ms why=predicted cause=41";
    let history = ok(ctl(&d, &["history"]));
    assert!(history.contains(detail), "{history}");
    let get = ok(ctl(&d, &["get", "1"]));
    assert!(get.contains(&format!("detail:      {detail}")), "{get}");
    let json = json_lines(&ok(ctl(&d, &["--json", "get", "1"])));
    let h = &json[0]["detail"]["handover"];
    assert_eq!(h["old_local_address"], "2001:db8::1");
    assert_eq!(h["new_local_address"], "2001:db8:2::1");
    assert_eq!(h["old_remote_address"], "2001:db8:9::9");
    assert_eq!(h["new_remote_address"], "2001:db8:9::9");
    assert_eq!(h["duration_us"], 1500);
    assert_eq!(h["move_reason"], "predicted");
    assert_eq!(h["cause_trigger_id"], 41);

    // Refused by the flag's parser (a usage error, exit 2), naming it.
    let o = ctl(
        &d,
        &[
            "add",
            "-t",
            "link-handover-complete",
            "-i",
            "wwan0",
            "--old-link",
            "wlan0",
            "--new-link",
            "wwan0",
            "--old-local",
            "2001:db8::zz",
        ],
    );
    assert_eq!(o.status.code(), Some(2));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("--old-local"), "{e}");
}

#[test]
fn add_from_sends_acknowledged_batches_and_names_bad_lines() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(DAEMON, dir.path(), None, None);

    let file = dir.path().join("many.jsonl");
    std::fs::write(&file, link_up_lines(2500, "veth0")).unwrap();
    let out = ok(ctl(&d, &["add", "--from", file.to_str().unwrap()]));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "added 1000 triggers from lines 1-1000: ids 1..1000",
            "added 1000 triggers from lines 1001-2000: ids 1001..2000",
            "added 500 triggers from lines 2001-2500: ids 2001..2500",
        ]
    );
    assert_eq!(stored(&d), 2500);

    // A bad line in the second batch: the first is added, nothing after.
    let mut bad = link_up_lines(1501, "veth1");
    bad.push_str("{\"type\":\"link-up\",\"interface\":{\"name\":\"has space\"}}\n");
    bad.push_str(&link_up_lines(10, "veth1"));
    let file = dir.path().join("bad.jsonl");
    std::fs::write(&file, bad).unwrap();
    let e = fails(ctl(&d, &["add", "--from", file.to_str().unwrap()]));
    assert!(
        e.ends_with("bad.jsonl:1502: interface.name: contains whitespace or control characters"),
        "{e}"
    );
    assert_eq!(stored(&d), 3500);

    // What --json prints, --from reads (ids are dropped and assigned anew).
    let exported = ok(ctl(&d, &["--json", "history", "-i", "veth1", "-n", "3"]));
    let exported: String = exported
        .lines()
        .filter(|l| !l.contains("next_cursor"))
        .map(|l| format!("{l}\n"))
        .collect();
    let acks = json_lines(&ok(ctl_stdin(
        &d,
        &["--json", "add", "--from", "-"],
        &exported,
    )));
    let ids: Vec<u64> = acks.iter().map(|a| a["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, [3501, 3502, 3503]);
    assert_eq!(acks[2]["line"], 3);
    let before = triggers(&exported);
    let again = triggers(&ok(ctl(&d, &["--json", "get", "3502"])));
    assert_eq!(again[0].observed_at, before[1].observed_at);
    assert_eq!(again[0].interface, before[1].interface);
}

#[test]
fn history_pages_follow_the_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(DAEMON, dir.path(), None, None);
    ok(ctl_stdin(
        &d,
        &["add", "--from", "-"],
        &link_up_lines(7, "eth0"),
    ));

    let page = json_lines(&ok(ctl(&d, &["--json", "history", "-n", "3"])));
    assert_eq!(page.len(), 4);
    let ids: Vec<u64> = page[..3]
        .iter()
        .map(|t| t["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [1, 2, 3]);
    let cursor = page[3]["next_cursor"].as_str().unwrap().to_owned();
    let page = json_lines(&ok(ctl(
        &d,
        &["--json", "history", "-n", "3", "--cursor", &cursor],
    )));
    assert_eq!(page[0]["id"], 4);

    let all = triggers(&ok(ctl(&d, &["--json", "history", "-n", "2", "--all"])));
    let ids: Vec<u64> = all.iter().map(|t| t.id).collect();
    assert_eq!(ids, [1, 2, 3, 4, 5, 6, 7]);
    let newest = triggers(&ok(ctl(&d, &["--json", "history", "--reverse", "--all"])));
    assert_eq!(newest[0].id, 7);
    let none = ok(ctl(&d, &["--json", "history", "-i", "nope"]));
    assert_eq!(none, "");

    // People get the cursor on stderr.
    let o = ctl(&d, &["history", "-n", "5"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--cursor "), "{err}");
    assert_eq!(ok(o).lines().count(), 6);
}

/// A running `triggerctl watch` whose stdout lines arrive on a channel.
struct Watch {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Watch {
    fn start(d: &Daemon, args: &[&str]) -> Self {
        let mut child = ctl_cmd(d, args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::sync_channel(100_000);
        std::thread::spawn(move || {
            for l in BufReader::new(stdout).lines() {
                let Ok(l) = l else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Self { child, lines }
    }

    fn next(&self) -> String {
        self.lines
            .recv_timeout(Duration::from_secs(20))
            .expect("watch printed nothing")
    }

    /// Ctrl-C; exit status and stderr.
    fn interrupt(mut self) -> (Option<i32>, String) {
        process::signal(&self.child, libc::SIGINT);
        let status = process::wait_exit(&mut self.child, Duration::from_secs(10))
            .expect("watch ignored SIGINT");
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        (status.code(), err)
    }
}

#[test]
fn watch_since_prints_history_then_live_without_gap_or_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(DAEMON, dir.path(), None, None);
    ok(ctl_stdin(
        &d,
        &["add", "--from", "-"],
        &link_up_lines(3, "wlan0"),
    ));
    ok(ctl_stdin(
        &d,
        &["add", "--from", "-"],
        &link_up_lines(2, "eth0"),
    ));

    let w = Watch::start(&d, &["--json", "watch", "--since", "1h", "-i", "wlan0"]);
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(triggers(&w.next())[0].id);
    }
    assert_eq!(ids, [1, 2, 3]);
    ok(ctl_stdin(
        &d,
        &["add", "--from", "-"],
        &link_up_lines(2, "wlan0"),
    ));
    ok(ctl_stdin(
        &d,
        &["add", "--from", "-"],
        &link_up_lines(1, "eth0"),
    ));
    ok(ctl_stdin(
        &d,
        &["add", "--from", "-"],
        &link_up_lines(1, "wlan0"),
    ));
    for _ in 0..3 {
        ids.push(triggers(&w.next())[0].id);
    }
    assert_eq!(ids, [1, 2, 3, 6, 7, 9]);
    let (code, err) = w.interrupt();
    assert_eq!(code, Some(0), "{err}");

    // --resume-after continues exactly where a previous watch stopped.
    let w = Watch::start(&d, &["--json", "watch", "--resume-after", "7"]);
    assert_eq!(triggers(&w.next())[0].id, 8);
    assert_eq!(triggers(&w.next())[0].id, 9);
    assert_eq!(w.interrupt().0, Some(0));
}

/// A daemon restart under a running watch: it says so on stderr, reconnects
/// and resumes after the last id it printed, so every trigger stored after
/// the restart arrives and none twice. `--no-reconnect` exits instead,
/// naming the id to resume after.
#[test]
fn watch_follows_a_daemon_restart_without_gap_or_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(DAEMON, dir.path(), None, None);
    ok(ctl_stdin(
        &d,
        &["add", "--from", "-"],
        &link_up_lines(2, "wlan0"),
    ));
    let mut w = Watch::start(&d, &["--json", "watch", "--since", "1h"]);
    assert_eq!(triggers(&w.next())[0].id, 1);
    assert_eq!(triggers(&w.next())[0].id, 2);
    let mut once = Watch::start(
        &d,
        &["--json", "watch", "--no-reconnect", "--resume-after", "1"],
    );
    assert_eq!(triggers(&once.next())[0].id, 2);

    d.restart();
    // The one that does not reconnect ends, naming where to go on.
    let status = process::wait_exit(&mut once.child, Duration::from_secs(10))
        .expect("--no-reconnect watch kept running");
    let mut err = String::new();
    std::io::Read::read_to_string(&mut once.child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success());
    assert!(err.contains("--resume-after 2"), "{err}");

    // Added after the restart: the reconnecting watch gets exactly these.
    ok(ctl_stdin(
        &d,
        &["add", "--from", "-"],
        &link_up_lines(3, "eth0"),
    ));
    let ids: Vec<u64> = (0..3).map(|_| triggers(&w.next())[0].id).collect();
    assert_eq!(ids, [3, 4, 5]);
    assert!(
        w.lines.recv_timeout(Duration::from_millis(500)).is_err(),
        "a repeat"
    );
    // A second restart while the watch is idle, then more.
    d.restart();
    ok(ctl_stdin(
        &d,
        &["add", "--from", "-"],
        &link_up_lines(1, "eth0"),
    ));
    assert_eq!(triggers(&w.next())[0].id, 6);
    let (code, err) = {
        let w2 = std::mem::replace(&mut w, Watch::start(&d, &["--json", "watch"]));
        w2.interrupt()
    };
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("reconnecting (resuming after id 5)"), "{err}");
    assert!(err.contains("reconnected"), "{err}");
    let _ = w.interrupt();
}

#[test]
fn watch_resubscribes_after_a_gap_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(
        DAEMON,
        dir.path(),
        None,
        Some("[sources.rtnetlink]\nenabled = false\n[subscribers]\nqueue = 16\n"),
    );
    const N: u64 = 20_000;
    let mut child = ctl_cmd(&d, &["--json", "watch"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Nobody reads the watch's stdout while the triggers go in: the pipe
    // fills, the watcher blocks, its queue in the daemon overflows.
    let stdout = child.stdout.take().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let file = dir.path().join("many.jsonl");
    std::fs::write(&file, link_up_lines(N as usize, "veth0")).unwrap();
    ok(ctl(&d, &["add", "--from", file.to_str().unwrap()]));

    let mut ids = Vec::new();
    let mut reader = BufReader::new(stdout);
    let mut line = String::new();
    while (ids.len() as u64) < N {
        line.clear();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "watch ended early"
        );
        ids.push(triggers(&line)[0].id);
    }
    let expected: Vec<u64> = (1..=N).collect();
    assert!(ids == expected, "ids not exactly 1..={N} in order");
    process::signal(&child, libc::SIGINT);
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("fell behind"), "no gap happened: {err}");
}

#[test]
fn absent_daemon_is_one_line_naming_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("absent.sock");
    for args in [&["stats"][..], &["watch"], &["history"], &["links"]] {
        let o = Command::new(TRIGGERCTL)
            .arg("--socket")
            .arg(&sock)
            .args(args)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1));
        assert_eq!(
            String::from_utf8(o.stderr).unwrap(),
            format!(
                "triggerctl: cannot connect to trigger-db at {}: No such file or directory (os error 2)\n",
                sock.display()
            )
        );
    }
    // The environment variable names the socket too.
    let o = Command::new(TRIGGERCTL)
        .env("TRIGGER_DB_SOCKET", &sock)
        .arg("stats")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stderr).contains("absent.sock"));
}

#[test]
fn readers_may_query_but_not_write() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || Command::new("setpriv").arg("--version").output().is_err()
    {
        eprintln!("skipped: needs root and setpriv to act as another user");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let d = Daemon::start(
        DAEMON,
        dir.path(),
        None,
        Some("socket_mode = \"0666\"\n[sources.rtnetlink]\nenabled = false\n"),
    );
    let as_nobody = |args: &[&str]| {
        Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                TRIGGERCTL,
            ])
            .arg("--socket")
            .arg(&d.socket)
            .args(args)
            .output()
            .unwrap()
    };
    ok(as_nobody(&["stats"]));
    let e = fails(as_nobody(&["add", "-t", "link-up", "-i", "eth0"]));
    assert!(
        e.starts_with("triggerctl: add refused: PERMISSION_DENIED: "),
        "{e}"
    );
}

#[test]
fn links_and_watch_snapshot_show_the_namespace() {
    let ns = Netns::new("ctl");
    ns.ip(&["link", "add", "va", "type", "veth", "peer", "name", "vb"]);
    ns.ip(&["addr", "add", "192.0.2.1/24", "dev", "va"]);
    ns.ip(&["link", "set", "va", "up"]);
    ns.ip(&["link", "set", "vb", "up"]);
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(DAEMON, dir.path(), Some(&ns), None);

    let links = json_lines(&ok(ctl(&d, &["--json", "links"])));
    let va = links
        .iter()
        .find(|l| l["interface"]["name"] == "va")
        .expect("va listed");
    assert_eq!(va["interface"]["kind"], "veth");
    assert_eq!(va["state"]["admin_up"], true);
    assert!(
        va["addresses"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["address"] == "192.0.2.1" && a["prefix_len"] == 24),
        "{va}"
    );
    let table = ok(ctl(&d, &["links"]));
    assert!(table.starts_with("INDEX  NAME"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.contains(" va ") && l.contains("192.0.2.1/24")),
        "{table}"
    );

    let w = Watch::start(&d, &["--json", "watch", "--snapshot", "-i", "va,vb"]);
    let mut snapshot = Vec::new();
    let last_id = loop {
        let v: serde_json::Value = serde_json::from_str(&w.next()).unwrap();
        if let Some(done) = v.get("snapshot_complete") {
            break done["last_id"].as_u64().unwrap();
        }
        snapshot.push(serde_json::from_value::<Trigger>(v).unwrap());
    };
    assert!(snapshot.iter().all(|t| t.id == 0));
    assert!(snapshot.iter().any(|t| {
        t.kind == TriggerType::IfAddrAdded
            && t.address
                .as_ref()
                .is_some_and(|a| a.to_string() == "192.0.2.1/24")
    }));
    ns.ip(&["link", "set", "vb", "down"]);
    let live = triggers(&w.next());
    assert!(live[0].id > last_id);
    assert_eq!(live[0].interface.as_ref().unwrap().name, "vb");
    assert_eq!(w.interrupt().0, Some(0));
}

#[test]
fn threshold_set_list_clear_and_a_crossing() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(DAEMON, dir.path(), None, None);

    let out = ok(ctl(
        &d,
        &[
            "threshold",
            "set",
            "--interface",
            "wlan0",
            "--param",
            "signal-strength",
            "--below",
            "40",
            "--hysteresis",
            "5",
        ],
    ));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines[0].starts_with("ID  SCOPE"), "{out}");
    let cells: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        cells,
        [
            "1",
            "wlan0",
            "signal-strength",
            "below",
            "40",
            "5",
            "normal",
            "no"
        ],
        "{out}"
    );
    ok(ctl(
        &d,
        &[
            "threshold",
            "set",
            "--link-type",
            "lte",
            "--param",
            "sinr",
            "--above",
            "-3.5",
            "--one-shot",
        ],
    ));

    let listed = json_lines(&ok(ctl(&d, &["--json", "threshold", "list"])));
    assert_eq!(listed.len(), 2, "{listed:?}");
    let lte = listed.iter().find(|t| t["link_type"] == "lte").unwrap();
    assert_eq!(lte["value"], -3.5);
    assert_eq!(lte["direction"], "above");
    assert_eq!(lte["action"], "one-shot");
    assert_eq!(lte["spent"], false);

    // A report that crosses it is derived by the daemon.
    for v in ["signal-strength=60%", "signal-strength=30%"] {
        ok(ctl(
            &d,
            &[
                "add",
                "-t",
                "link-parameters-report",
                "-i",
                "wlan0",
                "--param",
                v,
            ],
        ));
    }
    let derived = triggers(&ok(ctl(
        &d,
        &[
            "--json",
            "history",
            "-s",
            "threshold",
            "-t",
            "link-going-down",
        ],
    )));
    assert_eq!(derived.len(), 1);

    // The daemon's own check is reported in one line.
    let e = fails(ctl(
        &d,
        &[
            "threshold",
            "set",
            "-i",
            "wlan 0",
            "--param",
            "sinr",
            "--below",
            "1",
        ],
    ));
    assert!(
        e.starts_with(
            "triggerctl: threshold set refused: INVALID_ARGUMENT: thresholds[0].interface"
        ),
        "{e}"
    );

    let out = ok(ctl(
        &d,
        &[
            "--json",
            "threshold",
            "clear",
            "-i",
            "wlan0",
            "--param",
            "signal-strength",
            "--value",
            "41",
        ],
    ));
    assert_eq!(json_lines(&out)[0]["cancelled"], 0);
    let out = ok(ctl(
        &d,
        &[
            "threshold",
            "clear",
            "-i",
            "wlan0",
            "--param",
            "signal-strength",
        ],
    ));
    assert_eq!(out, "cancelled 1 thresholds\n");
    let listed = json_lines(&ok(ctl(&d, &["--json", "threshold", "list"])));
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["link_type"], "lte");
}

/// A SQLite daemon answers for its own host (the configured host_id) and
/// for all hosts, with the HOST column when more than one host could
/// appear, and refuses another host in one line naming it.
#[test]
fn history_and_flaps_by_host_on_a_one_host_database() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(
        DAEMON,
        dir.path(),
        None,
        Some("[store]\nhost_id = \"gw-solo\"\n"),
    );
    let down = "{\"type\":\"link-down\",\"interface\":{\"name\":\"eth0\"}}\n";
    ok(ctl_stdin(&d, &["add", "--from", "-"], &down.repeat(2)));

    let own = ok(ctl(&d, &["history", "--host", "gw-solo"]));
    assert!(!own.contains("HOST"), "{own}");
    assert_eq!(own.lines().count(), 3, "{own}");
    let all = ok(ctl(&d, &["history", "--all-hosts"]));
    let lines: Vec<&str> = all.lines().collect();
    assert!(lines[0].starts_with("HOST "), "{all}");
    assert!(
        lines[1..].iter().all(|l| l.starts_with("gw-solo ")),
        "{all}"
    );
    // --json carries the host; `add --from` takes the lines back.
    let json = ok(ctl(&d, &["--json", "history", "--all-hosts"]));
    assert!(
        json_lines(&json).iter().all(|v| v["host"] == "gw-solo"),
        "{json}"
    );
    ok(ctl_stdin(&d, &["add", "--from", "-"], &json));
    assert_eq!(stored(&d), 4);

    let e = fails(ctl(
        &d,
        &["history", "--host", "gw-solo", "--host", "gw-other"],
    ));
    assert!(
        e.contains("INVALID_ARGUMENT") && e.contains("\"gw-other\"") && e.contains("SQLite"),
        "{e}"
    );
    let e = fails(ctl(&d, &["history", "--host", ""]));
    assert!(e.contains("hosts[0]"), "{e}");

    let flaps = ok(ctl(
        &d,
        &["flaps", "--all-hosts", "--by-host", "--bucket", "2h"],
    ));
    let lines: Vec<&str> = flaps.lines().collect();
    assert!(lines[0].starts_with("HOST"), "{flaps}");
    assert!(
        lines[1].starts_with("gw-solo") && lines[1].ends_with(" 4"),
        "{flaps}"
    );
}
