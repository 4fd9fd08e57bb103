//! The agent's trigger-db subscription against the real daemon, in a
//! network namespace of its own (the daemon's rtnetlink source sees only
//! the test's links): snapshot first, client triggers named by interface
//! name only, a prediction already past when replayed is dropped, the
//! flap count of a flapping link forwarded, a daemon
//! killed and restarted is reconnected to and the picture rebuilt. Needs
//! root, iproute2 and the trigger-db binary (built by `cargo test
//! --workspace`).
//!
//!   netns: vA 192.0.2.1/24 <-> vB 192.0.2.254/24 (both in the namespace)

use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

use mobike_agent::mobility::{
    links::{LinkEvent, LinkTable},
    subscriber::{Feed, Subscriber},
};
use system_tests::{
    netns::Netns,
    trigger_db::{Daemon, built_daemon},
};
use tokio::sync::mpsc;
use trigger_proto::v1::{self as pb, trigger::Detail};

fn going_down(ifname: &str, ms: u32) -> pb::Trigger {
    let mut t = system_tests::trigger_db::client_trigger(
        trigger_model::model::TriggerType::LinkGoingDown,
        ifname,
    );
    t.detail = Some(Detail::GoingDown(pb::GoingDown {
        time_interval_ms: ms,
    }));
    t
}

async fn next(rx: &mut mpsc::Receiver<Feed>, what: &str) -> Feed {
    match tokio::time::timeout(Duration::from_secs(15), rx.recv()).await {
        Ok(Some(f)) => f,
        Ok(None) => panic!("subscription ended waiting for {what}"),
        Err(_) => panic!("nothing within 15 s waiting for {what}"),
    }
}

/// Applies feed items to `table` until `done` (15 s at most); returns the
/// items seen.
async fn until(
    rx: &mut mpsc::Receiver<Feed>,
    table: &mut LinkTable,
    what: &str,
    done: impl Fn(&Feed, &LinkTable) -> bool,
) -> Vec<Feed> {
    let mut seen = Vec::new();
    loop {
        let f = next(rx, what).await;
        if let Feed::Event { event, .. } = &f {
            table.apply(event.clone(), Instant::now());
        }
        let stop = done(&f, table);
        seen.push(f);
        if stop {
            return seen;
        }
    }
}

#[test]
fn the_subscription_follows_trigger_db_across_restarts() {
    let Some(ns) = Netns::try_new("mbksub") else {
        eprintln!("skipped: needs root and iproute2 (network namespace)");
        return;
    };
    ns.veth("vA", "vB");
    ns.ip_line("addr add 192.0.2.1/24 dev vA");
    ns.ip_line("addr add 192.0.2.254/24 dev vB");
    ns.up("vA");
    ns.up("vB");
    let va = ns.ifindex("vA");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut daemon = Daemon::start(built_daemon(), dir.path(), Some(&ns), None);
    let socket = daemon.socket.clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let (tx, mut rx) = mpsc::channel(256);
        let sock = socket.clone();
        tokio::spawn(Subscriber::new().run(
            move || {
                let s = sock.clone();
                async move { trigger_client::connect(&s).await }
            },
            tx,
        ));
        let mut table = LinkTable::new();
        assert_eq!(next(&mut rx, "connected").await, Feed::Connected);
        until(&mut rx, &mut table, "the snapshot", |f, _| {
            *f == Feed::Synced
        })
        .await;
        let a = table.get(va).expect("vA in the snapshot");
        assert!(
            a.is_up()
                && a.addrs
                    .contains_key(&"192.0.2.1".parse::<IpAddr>().unwrap()),
            "{a:?}"
        );

        // A client's prediction names the interface only by name.
        let mut c = daemon.client().await;
        let ids = c
            .add(pb::AddRequest {
                triggers: vec![going_down("vA", 60_000)],
            })
            .await
            .expect("add")
            .into_inner()
            .ids;
        until(&mut rx, &mut table, "Link_Going_Down on vA", |f, _| {
            matches!(f, Feed::Event { event: LinkEvent::GoingDown { index, within }, .. }
                if *index == va && *within <= Duration::from_secs(60))
        })
        .await;

        // A short prediction, then a subscriber resuming from before both:
        // the replay gives the long one, not the one already past.
        c.add(pb::AddRequest {
            triggers: vec![going_down("vA", 100)],
        })
        .await
        .expect("add");
        tokio::time::sleep(Duration::from_millis(400)).await;
        let (tx2, mut rx2) = mpsc::channel(256);
        let sock = socket.clone();
        tokio::spawn(Subscriber::resuming_after(ids[0] - 1).run(
            move || {
                let s = sock.clone();
                async move { trigger_client::connect(&s).await }
            },
            tx2,
        ));
        let mut t2 = LinkTable::new();
        let replay = until(&mut rx2, &mut t2, "the resumed snapshot", |f, _| {
            *f == Feed::Synced
        })
        .await;
        let predictions: Vec<Duration> = replay
            .iter()
            .filter_map(|f| match f {
                Feed::Event {
                    event: LinkEvent::GoingDown { within, .. },
                    ..
                } => Some(*within),
                _ => None,
            })
            .collect();
        assert_eq!(
            predictions.len(),
            1,
            "only the 60 s prediction is acted on: {replay:?}"
        );
        assert!(predictions[0] > Duration::from_secs(50));

        // vA's link flaps: trigger-db's flap count for it comes through.
        for _ in 0..3 {
            ns.ip_line("link set vB down");
            tokio::time::sleep(Duration::from_millis(150)).await;
            ns.ip_line("link set vB up");
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        until(&mut rx, &mut table, "vA's flap count", |_, t| {
            t.get(va).is_some_and(|i| i.flaps >= 2)
        })
        .await;

        // trigger-db dies: the loss is reported once; vA goes down meanwhile.
        daemon.kill9();
        until(&mut rx, &mut table, "the loss of trigger-db", |f, _| {
            matches!(f, Feed::Disconnected(_))
        })
        .await;
        ns.ip_line("link set vB down");
        daemon.restart();
        until(&mut rx, &mut table, "reconnected", |f, _| {
            *f == Feed::Connected
        })
        .await;
        until(
            &mut rx,
            &mut table,
            "vA down in the rebuilt picture",
            |_, t| t.get(va).is_some_and(|i| !i.is_up()),
        )
        .await;
    });
}
