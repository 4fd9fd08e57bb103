//! Access control through the real socket: SO_PEERCRED decides who may
//! write. A uid outside the writer group is refused Add with
//! PERMISSION_DENIED naming the verb and can still read; a member of the
//! writer group may write. Clients run as other uids with setpriv(1).

use std::{os::unix::fs::PermissionsExt, path::Path, process::Command};

use system_tests::trigger_db::*;

const DAEMON: &str = env!("CARGO_BIN_EXE_trigger-db");
const TRIGGERCTL: &str = env!("CARGO_BIN_EXE_triggerctl");

/// Runs a copy of triggerctl (readable by any uid) as `uid` with `groups`.
fn triggerctl_as(
    dir: &Path,
    socket: &Path,
    uid: u32,
    groups: &[u32],
    args: &[&str],
) -> std::process::Output {
    let ctl = dir.join("triggerctl");
    if !ctl.exists() {
        std::fs::copy(TRIGGERCTL, &ctl).unwrap();
        std::fs::set_permissions(&ctl, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let groups = if groups.is_empty() {
        "--clear-groups".to_owned()
    } else {
        format!(
            "--groups={}",
            groups
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(",")
        )
    };
    Command::new("setpriv")
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={uid}"))
        .arg(groups)
        .arg(&ctl)
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .expect("setpriv")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uid_outside_the_writer_group_is_refused_writes_but_can_read() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let d = Daemon::start(
        DAEMON,
        dir.path(),
        None,
        Some("writer_group = \"4242\"\n[sources.rtnetlink]\nenabled = false\n"),
    );
    let mut c = d.client().await;
    add_many(&mut c, "eth0", 2, 2).await;
    let add = ["add", "--type", "link-up", "--interface", "eth0"];

    let out = triggerctl_as(dir.path(), &d.socket, 65534, &[], &add);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "nobody's add went through");
    assert!(
        err.contains("PERMISSION_DENIED") && err.contains("Add"),
        "stderr: {err}"
    );

    let out = triggerctl_as(dir.path(), &d.socket, 65534, &[], &["--json", "history"]);
    assert!(
        out.status.success(),
        "nobody can read: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = String::from_utf8_lossy(&out.stdout);
    let triggers = lines.lines().filter(|l| l.contains("\"type\"")).count();
    assert_eq!(triggers, 2, "history as nobody: {lines}");

    // A member of the writer group (supplementary) may write.
    let out = triggerctl_as(dir.path(), &d.socket, 65534, &[4242], &add);
    assert!(
        out.status.success(),
        "writer-group member refused: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stats = c
        .stats(trigger_proto::v1::StatsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.stored_triggers, 3);
    assert!(stats.rejected_requests >= 1);
}

/// A local unprivileged user opens hundreds of connections, sends oversized
/// requests on half of them and subscriptions that never match on the
/// others, and holds them: root's `triggerctl add` still goes through.
/// Then the user leaves without a goodbye: every abandoned subscription's
/// slot is reclaimed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_local_user_does_not_lock_roots_writers_out() {
    use std::{
        io::{BufRead as _, Write as _},
        process::Stdio,
        time::Duration,
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let d = Daemon::start(
        DAEMON,
        dir.path(),
        None,
        Some("[sources.rtnetlink]\nenabled = false\n"),
    );
    let script = dir.path().join("flood.py");
    std::fs::write(&script, include_str!("flood.py")).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut flood = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg("/usr/bin/python3")
        .arg(&script)
        .arg(&d.socket)
        .arg("400")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("setpriv python3");
    let mut ready = String::new();
    std::io::BufReader::new(flood.stdout.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    assert!(ready.starts_with("ready"), "flood: {ready:?}");

    let mut c = d.client().await;
    // The flood's subscriptions are in (so that their going away below
    // proves something), and no more than one uid may hold.
    let mut during = 0;
    for _ in 0..500 {
        during = c
            .stats(trigger_proto::v1::StatsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .subscribers;
        if during > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("flood: {} subscribers held: {during}", ready.trim());
    assert!(
        (1..=64).contains(&during),
        "subscribers held by one uid: {during} (max_connections_per_uid is 64)"
    );
    let mut add = Command::new(TRIGGERCTL)
        .arg("--socket")
        .arg(&d.socket)
        .args(["add", "--type", "link-up", "--interface", "eth0"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let st = system_tests::process::wait_exit(&mut add, Duration::from_secs(10))
        .unwrap_or_else(|| panic!("root's add hung under the flood: {}", d.log_text()));
    assert!(st.success(), "root's add failed under the flood ({ready})");

    // The user goes away: the abandoned subscriptions free their slots.
    flood.stdin.take().unwrap().write_all(b"").unwrap();
    flood.wait().unwrap();
    let mut subscribers = u64::MAX;
    for _ in 0..500 {
        subscribers = c
            .stats(trigger_proto::v1::StatsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .subscribers;
        if subscribers == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(subscribers, 0, "abandoned subscriptions still hold slots");
}
