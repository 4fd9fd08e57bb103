//! Damping and flaps through the daemon following a real kernel: in a
//! network namespace made for the test, with a debounce configured for
//! link-down and link-up, a veth whose peer goes down and up again at once
//! leaves no link-down or link-up in the history (a suppressed flap in
//! Stats), while a down that lasts is stored exactly once after the quiet
//! period. Stats count the flaps per interface; the Flaps verb (and
//! `triggerctl flaps`) counts the stored link-downs in buckets, whose edges
//! and filters the store test checks on its own.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use system_tests::{netns::Netns, trigger_db::*, wait};
use trigger_client::Client;
use trigger_proto::v1 as pb;

const DAEMON: &str = env!("CARGO_BIN_EXE_trigger-db");
const TRIGGERCTL: &str = env!("CARGO_BIN_EXE_triggerctl");

/// The debounce is long against the two `ip` commands (one process, one
/// batch) and the kernel's linkwatch delay (up to a second before an
/// operstate change is announced), short enough for a quick test.
const CONFIG: &str = "\
[sources.networkmanager]
enabled = false

[damping]
flap_window = \"10m\"
debounce = { link-down = \"3s\", link-up = \"3s\" }
";

/// Polls Stats until `ok` holds; a generous timeout only against hangs.
async fn stats_until(
    c: &mut Client,
    what: &str,
    ok: impl Fn(&pb::StatsResponse) -> bool,
) -> pb::StatsResponse {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = c
            .stats(pb::StatsRequest::default())
            .await
            .unwrap()
            .into_inner();
        if ok(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "no {what} in time: {s:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Stored triggers of these types on `ifname`.
async fn stored(c: &mut Client, ifname: &str, types: &[pb::TriggerType]) -> Vec<pb::Trigger> {
    c.query(pb::QueryRequest {
        filter: Some(pb::TriggerFilter {
            interfaces: vec![ifname.into()],
            types: types.iter().map(|t| *t as i32).collect(),
            ..Default::default()
        }),
        page_size: 1000,
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
    .triggers
}

/// Waits until the kernel says both ends are operationally up, so that no
/// late link-up reaches the daemon after its start.
fn wait_oper_up(ns: &Netns, ifname: &str) {
    let what = format!("{ifname} operationally up");
    wait::until(
        &what,
        Duration::from_secs(20),
        Duration::from_millis(50),
        || {
            ns.ip_output(&["-o", "link", "show", "dev", ifname])
                .contains("state UP")
        },
    );
}

/// Polls the history until `ifname` has a stored trigger of `ty`.
async fn stored_until(c: &mut Client, ifname: &str, ty: pb::TriggerType) {
    let what = format!("a stored {ty:?} of {ifname}");
    wait::until_async(
        &what,
        Duration::from_secs(30),
        Duration::from_millis(50),
        async || !stored(c, ifname, &[ty]).await.is_empty(),
    )
    .await;
}

fn flaps_of<'a>(s: &'a pb::StatsResponse, ifname: &str) -> Option<&'a pb::InterfaceFlaps> {
    s.flaps.iter().find(|f| f.interface == ifname)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flap_within_the_debounce_is_suppressed_and_a_lasting_down_stored_once() {
    use pb::TriggerType as T;
    let ns = Netns::new("damp");
    ns.ip(&["link", "add", "vA", "type", "veth", "peer", "name", "vB"]);
    ns.ip(&["link", "set", "vA", "up"]);
    ns.ip(&["link", "set", "vB", "up"]);
    wait_oper_up(&ns, "vA");
    wait_oper_up(&ns, "vB");
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(DAEMON, dir.path(), Some(&ns), Some(CONFIG));
    let mut c = d.client().await;

    // The peer goes down and straight up again: one `ip` process.
    let batch = dir.path().join("flap.ip");
    std::fs::write(&batch, "link set vB down\nlink set vB up\n").unwrap();
    ns.ip(&["-batch", batch.to_str().unwrap()]);
    // vB's admin flap (vA's carrier flap may be merged away by the
    // kernel's linkwatch, so only vB is counted on).
    let s = stats_until(&mut c, "a suppressed flap", |s| s.suppressed_flaps >= 1).await;
    assert!(s.debounced >= 1, "{s:?}");
    let f = flaps_of(&s, "vB").unwrap_or_else(|| panic!("no flaps of vB: {s:?}"));
    assert_eq!((f.in_window, f.total, f.window_s), (1, 1, 600), "{f:?}");
    assert!(
        stored(&mut c, "vB", &[T::LinkDown, T::LinkUp])
            .await
            .is_empty()
    );

    // A down that lasts: stored once, after the quiet period.
    ns.ip(&["link", "set", "vB", "down"]);
    stored_until(&mut c, "vB", T::LinkDown).await;
    stored_until(&mut c, "vA", T::LinkDown).await;
    for ifname in ["vA", "vB"] {
        let downs = stored(&mut c, ifname, &[T::LinkDown, T::LinkUp]).await;
        assert_eq!(downs.len(), 1, "{ifname}: {downs:?}");
        assert_eq!(downs[0].r#type, T::LinkDown as i32);
        assert_eq!(downs[0].source, pb::Source::Rtnetlink as i32);
    }
    let s = c
        .stats(pb::StatsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(flaps_of(&s, "vB").unwrap().total, 2, "{s:?}");

    // The stored link-downs in buckets: one per interface.
    let since =
        trigger_db::model::Timestamp(trigger_db::model::Timestamp::now().0 - 3_600_000_000_000);
    let r = c
        .flaps(pb::FlapsRequest {
            since: Some(since.to_wire()),
            until: None,
            bucket_s: 7_200,
            interfaces: vec!["vB".into(), "vA".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let got: Vec<(&str, u64)> = r
        .buckets
        .iter()
        .map(|b| (b.interface.as_str(), b.link_downs))
        .collect();
    assert_eq!(got, [("vA", 1), ("vB", 1)]);
    assert_eq!(r.buckets[0].start, Some(since.to_wire()));
    let e = c
        .flaps(pb::FlapsRequest {
            since: Some(since.to_wire()),
            bucket_s: 0,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().starts_with("bucket_s"), "{e:?}");

    // The same through triggerctl.
    let ctl = |args: &[&str]| {
        let o = Command::new(TRIGGERCTL)
            .arg("--socket")
            .arg(&d.socket)
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap()
    };
    let out = ctl(&[
        "--json", "flaps", "--since", "1h", "--bucket", "2h", "-i", "vB",
    ]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        (v["interface"].as_str(), v["link_downs"].as_u64()),
        (Some("vB"), Some(1))
    );
    let out = ctl(&["stats"]);
    assert!(out.contains("suppressed flaps"), "{out}");
    assert!(out.contains(" vB=2/2"), "{out}");
    let v: serde_json::Value = serde_json::from_str(ctl(&["--json", "stats"]).trim()).unwrap();
    assert!(v["suppressed_flaps"].as_u64().unwrap() >= 1, "{v}");
    assert_eq!(v["flaps"][1]["interface"], "vB");
    assert_eq!(v["flaps"][1]["total"], 2);
}

// The Flaps buckets straight from the store: tests/store.rs, on both backends.
