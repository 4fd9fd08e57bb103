//! The handover report writer against the real trigger-db (rtnetlink
//! source off, socket and database in a temporary directory): reports sent
//! before the daemon runs are kept and delivered in order once it starts,
//! reports sent while it runs appear in its history with every field, and
//! reports sent while it is stopped are delivered after it is back. Needs
//! the trigger-db binary (`cargo build -p trigger-db`).

use std::{
    net::IpAddr,
    time::{Duration, Instant, SystemTime},
};

use mobike_agent::mobility::{
    IfaceKind, MoveReason,
    links::LinkRef,
    policy::Pair,
    report::{self, HandoverReport},
};
use system_tests::trigger_db::{Daemon, built_daemon};
use tokio::sync::mpsc;
use trigger_proto::v1::{self as pb, trigger::Detail};

fn link(index: u32, name: &str, kind: IfaceKind) -> LinkRef {
    LinkRef {
        index,
        name: name.into(),
        kind,
        driver_kind: "veth".into(),
    }
}

fn pair(local: &str, remote: &str) -> Pair {
    Pair {
        local: local.parse::<IpAddr>().unwrap(),
        remote: remote.parse::<IpAddr>().unwrap(),
    }
}

/// Report number `n` (its cause id is `n`, its duration `n` ms): IPv4
/// eth0 -> IPv6 wlan0.
fn sample(n: u64) -> HandoverReport {
    HandoverReport {
        old_link: link(2, "eth0", IfaceKind::Ethernet),
        new_link: link(3, "wlan0", IfaceKind::Wlan),
        old_pair: pair("192.0.2.1", "198.51.100.7"),
        new_pair: pair("2001:db8::5", "2001:db8:1::7"),
        reason: MoveReason::GoingDown,
        cause_id: n,
        observed: SystemTime::now(),
        duration: Duration::from_millis(n),
    }
}

/// The stored LINK_HANDOVER_COMPLETE triggers, oldest first.
async fn stored(d: &Daemon) -> Vec<pb::Trigger> {
    let mut c = d.client().await;
    c.query(pb::QueryRequest {
        filter: Some(pb::TriggerFilter {
            types: vec![pb::TriggerType::LinkHandoverComplete as i32],
            ..Default::default()
        }),
        page_size: 100,
        ..Default::default()
    })
    .await
    .expect("query")
    .into_inner()
    .triggers
}

/// Waits (15 s at most) until `n` handovers are stored; returns them.
async fn until_stored(d: &Daemon, n: usize) -> Vec<pb::Trigger> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let got = stored(d).await;
        if got.len() >= n {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {n} handovers stored after 15 s: {got:?}\n{}",
            got.len(),
            d.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `t` is `r` as trigger-db stored it, every field.
fn assert_stored_as(t: &pb::Trigger, r: &HandoverReport) {
    let mut expect = report::trigger(r);
    expect.id = t.id;
    // The daemon names the writer by its credentials.
    assert!(t.origin.starts_with("uid=0 "), "{t:?}");
    expect.origin = t.origin.clone();
    assert_eq!(t, &expect);
    let Some(Detail::Handover(h)) = &t.detail else {
        panic!("{t:?}")
    };
    assert_eq!(h.old_link.as_ref().unwrap().name, "eth0");
    assert_eq!(h.new_link.as_ref().unwrap().index, 3);
    assert_eq!(
        h.new_link.as_ref().unwrap().kind,
        pb::InterfaceKind::Wlan as i32
    );
    assert_eq!(h.old_local_address, "192.0.2.1");
    assert_eq!(h.old_remote_address, "198.51.100.7");
    assert_eq!(h.new_local_address, "2001:db8::5");
    assert_eq!(h.new_remote_address, "2001:db8:1::7");
    assert_eq!(h.duration_us, Some(r.cause_id * 1000));
    assert_eq!(h.move_reason, "going-down");
    assert_eq!(h.cause_trigger_id, r.cause_id);
    assert_eq!(t.address.as_ref().unwrap().address, "2001:db8::5");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_reach_the_history_also_when_trigger_db_comes_later_or_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("trigger.sock");
    let (tx, rx) = mpsc::channel(16);
    let writer = tokio::spawn(report::run(rx, socket.clone()));

    // trigger-db is not running yet: the reports wait.
    let early = [sample(1), sample(2)];
    for r in &early {
        tx.send(r.clone()).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut d = Daemon::start(built_daemon(), dir.path(), None, None);
    assert_eq!(d.socket, socket);
    let got = until_stored(&d, 2).await;
    assert_eq!(got.len(), 2);
    assert_stored_as(&got[0], &early[0]);
    assert_stored_as(&got[1], &early[1]);

    // While it runs.
    let live = sample(3);
    tx.send(live.clone()).await.unwrap();
    let got = until_stored(&d, 3).await;
    assert_eq!(got.len(), 3);
    assert_stored_as(&got[2], &live);

    // Stopped, then back on the same socket and database.
    d.terminate();
    let late = [sample(4), sample(5), sample(6)];
    for r in &late {
        tx.send(r.clone()).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    d.restart();
    let got = until_stored(&d, 6).await;
    assert_eq!(got.len(), 6, "each delivered once");
    for (t, r) in got[3..].iter().zip(&late) {
        assert_stored_as(t, r);
    }
    let ids: Vec<u64> = got.iter().map(|t| t.id).collect();
    assert!(ids.is_sorted(), "delivered in order: {ids:?}");

    // The writer ends when the runtime drops its sender.
    drop(tx);
    tokio::time::timeout(Duration::from_secs(5), writer)
        .await
        .expect("writer ended")
        .unwrap();
}
