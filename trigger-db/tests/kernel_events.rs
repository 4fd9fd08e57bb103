//! The daemon following a real kernel: in a network namespace made for the
//! test, veth link and address changes reach a Subscribe stream with the
//! right type, interface name and index, and address, within a second; the
//! same triggers are in the Query history afterwards, and ListLinks shows
//! the current state.

use std::time::Duration;

use system_tests::{netns::Netns, trigger_db::*};
use trigger_proto::v1::{self as pb, subscribe_response::Item};

const DAEMON: &str = env!("CARGO_BIN_EXE_trigger-db");

type Stream = tonic::Streaming<pb::SubscribeResponse>;

/// Reads the stream until a trigger of `ty` on `ifname` (and, if given,
/// with `addr`) arrives; fails if none does within `within`.
async fn expect(
    s: &mut Stream,
    ty: pb::TriggerType,
    ifname: &str,
    addr: Option<&str>,
    within: Duration,
) -> pb::Trigger {
    let name = |t: &pb::Trigger| {
        t.interface
            .as_ref()
            .map(|i| i.name.clone())
            .unwrap_or_default()
    };
    let a = |t: &pb::Trigger| {
        t.address
            .as_ref()
            .map(|a| format!("{}/{}", a.address, a.prefix_len))
    };
    expect_trigger(
        s,
        within,
        &format!("{ty:?} on {ifname} {addr:?}"),
        |t| {
            t.r#type == ty as i32
                && name(t) == ifname
                && (addr.is_none() || a(t).as_deref() == addr)
        },
        |t| format!("{:?}", (t.r#type, name(t), a(t))),
        String::new,
    )
    .await
}

const SECOND: Duration = Duration::from_secs(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn veth_link_and_address_changes_reach_subscribers_and_history() {
    use pb::TriggerType as T;
    let ns = Netns::new("kev");
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(DAEMON, dir.path(), Some(&ns), None);
    let mut c = d.client().await;

    let mut s = c
        .subscribe(pb::SubscribeRequest {
            snapshot: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    // The snapshot: lo, then the marker.
    let mut snapshot = Vec::new();
    loop {
        match next_item(&mut s, 5).await.unwrap() {
            Item::Trigger(t) => snapshot.push(t),
            Item::SnapshotComplete(_) => break,
            Item::Gap(g) => panic!("gap {g:?}"),
        }
    }
    assert!(
        snapshot
            .iter()
            .any(|t| t.r#type == T::IfAdded as i32 && t.interface.as_ref().unwrap().name == "lo"),
        "{snapshot:?}"
    );
    assert!(snapshot.iter().all(|t| t.id == 0));

    ns.ip(&["link", "add", "vA", "type", "veth", "peer", "name", "vB"]);
    let added = expect(&mut s, T::IfAdded, "vA", None, SECOND).await;
    let index = ns.ifindex("vA");
    assert_eq!(added.interface.as_ref().unwrap().index, index);
    assert_eq!(
        added.interface.as_ref().unwrap().kind,
        pb::InterfaceKind::Veth as i32
    );
    assert_eq!(added.source, pb::Source::Rtnetlink as i32);

    ns.ip(&["addr", "add", "10.9.0.1/24", "dev", "vA"]);
    let v4 = expect(&mut s, T::IfAddradded, "vA", Some("10.9.0.1/24"), SECOND).await;
    assert_eq!(v4.interface.as_ref().unwrap().index, index);
    assert_eq!(
        v4.address.as_ref().unwrap().family,
        pb::AddressFamily::Ipv4 as i32
    );

    ns.ip(&["link", "set", "vA", "up"]);
    ns.ip(&["link", "set", "vB", "up"]);
    let up = expect(&mut s, T::LinkUp, "vA", None, SECOND).await;
    let Some(pb::trigger::Detail::LinkState(st)) = &up.detail else {
        panic!("link-up without link state: {up:?}");
    };
    assert!(st.admin_up && st.carrier);

    ns.ip(&["addr", "add", "fd00::1/64", "dev", "vA", "nodad"]);
    let v6 = expect(&mut s, T::IfAddradded, "vA", Some("fd00::1/64"), SECOND).await;
    assert_eq!(
        v6.address.as_ref().unwrap().family,
        pb::AddressFamily::Ipv6 as i32
    );

    ns.ip(&["addr", "del", "10.9.0.1/24", "dev", "vA"]);
    let gone = expect(&mut s, T::IfAddrremoved, "vA", Some("10.9.0.1/24"), SECOND).await;

    // The peer goes down: vA loses carrier.
    ns.ip(&["link", "set", "vB", "down"]);
    let down = expect(&mut s, T::LinkDown, "vA", None, SECOND).await;
    assert_eq!(
        down.reason.as_ref().unwrap().space,
        pb::ReasonSpace::LinkDown as i32
    );

    ns.ip(&["link", "del", "vA"]);
    let removed = expect(&mut s, T::IfRemoved, "vA", None, SECOND).await;

    // The same triggers are in the history.
    let page = c
        .query(pb::QueryRequest {
            filter: Some(pb::TriggerFilter {
                interfaces: vec!["vA".into()],
                ..Default::default()
            }),
            page_size: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    for t in [&added, &v4, &up, &v6, &gone, &down, &removed] {
        let stored = page
            .triggers
            .iter()
            .find(|h| h.id == t.id)
            .unwrap_or_else(|| panic!("trigger {} not in history", t.id));
        assert_eq!(stored, t);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_links_shows_current_interfaces_and_addresses() {
    let ns = Netns::new("lnk");
    ns.ip(&[
        "link", "add", "wan0", "type", "veth", "peer", "name", "wan1",
    ]);
    ns.ip(&["addr", "add", "192.0.2.7/24", "dev", "wan0"]);
    ns.ip(&["link", "set", "wan0", "up"]);
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(DAEMON, dir.path(), Some(&ns), None);
    let mut c = d.client().await;
    let links = c
        .list_links(pb::ListLinksRequest {})
        .await
        .unwrap()
        .into_inner()
        .links;
    let wan = links
        .iter()
        .find(|l| l.interface.as_ref().unwrap().name == "wan0")
        .unwrap_or_else(|| panic!("no wan0 in {links:?}"));
    assert_eq!(wan.interface.as_ref().unwrap().index, ns.ifindex("wan0"));
    assert!(wan.state.as_ref().unwrap().admin_up);
    assert!(
        wan.addresses
            .iter()
            .any(|a| a.address == "192.0.2.7" && a.prefix_len == 24),
        "{wan:?}"
    );
    // A start is recorded as a resync marker, not as a flood of IF_ADDED.
    let page = c
        .query(pb::QueryRequest {
            page_size: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        page.triggers
            .iter()
            .any(|t| t.r#type == pb::TriggerType::Resync as i32),
        "{page:?}"
    );
}

/// A small tmpfs mounted on the test's temporary directory for the time of
/// the test (lazily unmounted when dropped, after the daemon is gone).
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &std::path::Path, size: &str) -> Self {
        system_tests::process::run(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
                dir.to_str().unwrap(),
            ],
        );
        Self(dir.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

async fn stats(c: &mut trigger_client::Client) -> pb::StatsResponse {
    c.stats(pb::StatsRequest::default())
        .await
        .unwrap()
        .into_inner()
}

/// Writes zeros to `path` until the file system is full.
fn fill(path: &std::path::Path) {
    use std::io::Write as _;
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 16 * 1024];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.sync_all();
}

/// The store's file system fills up while link events flow: the daemon
/// neither panics nor drops them silently. Stats count the failed writes
/// and the lost triggers, and once space returns subscribers get a RESYNC
/// from trigger-db itself and writes work again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_reported_by_a_resync_and_the_daemon_recovers() {
    let ns = Netns::new("full");
    ns.veth("fa", "fb");
    ns.up("fa");
    let dir = tempfile::tempdir().unwrap();
    let _tmpfs = Tmpfs::mount(dir.path(), "4m");
    let d = Daemon::start(DAEMON, dir.path(), Some(&ns), None);
    let mut c = d.client().await;
    let mut s = c
        .subscribe(pb::SubscribeRequest::default())
        .await
        .unwrap()
        .into_inner();

    fill(&dir.path().join("filler"));
    let mut lost = stats(&mut c).await;
    for round in 0.. {
        assert!(round < 200, "no source trigger failed to store: {lost:?}");
        ns.addr_add(
            "fa",
            &format!("10.99.{}.{}/32", round / 200, round % 200 + 1),
            &[],
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        lost = stats(&mut c).await;
        if lost.unstored_triggers > 0 {
            break;
        }
    }
    assert!(lost.write_errors > 0, "{lost:?}");
    std::fs::remove_file(dir.path().join("filler")).unwrap();
    let resync = expect_trigger(
        &mut s,
        Duration::from_secs(10),
        "RESYNC from trigger-db after the store works again",
        |t| t.r#type == pb::TriggerType::Resync as i32 && t.source == pb::Source::TriggerDb as i32,
        |t| format!("{:?}", (t.r#type, t.source)),
        || d.log_text(),
    )
    .await;
    assert!(resync.id > 0, "the RESYNC is stored");
    let ids = add_many(&mut c, "eth0", 1, 1).await;
    assert!(ids[0] > resync.id);
}
