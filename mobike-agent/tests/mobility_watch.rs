//! The agent's own rtnetlink watch against the real kernel, in network
//! namespaces of its own, feeding the mobility manager: two uplinks, the
//! current one loses its carrier (counted as a flap), then an address
//! goes. Needs root and iproute2; without them the test says so and
//! passes.
//!
//!   netns A: vA 192.0.2.1/24   <->  vB 192.0.2.254/24   in netns B
//!            vC 198.18.0.1/24  <->  vD 198.18.0.254/24  in netns B

use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

use mobike_agent::mobility::{
    config::MobilityConfig,
    links::LinkEvent,
    manager::{Action, Manager},
    policy::{MoveReason, Pair, RouteAnswer},
    subscriber::Feed,
    watch,
};
use system_tests::netns::{self, Netns};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

fn a(s: &str) -> IpAddr {
    s.parse().expect("address")
}

/// The next feed item that is not `Synced`, within 10 s.
async fn next(rx: &mut mpsc::Receiver<Feed>) -> Feed {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
            Ok(Some(Feed::Synced)) => continue,
            Ok(Some(f)) => return f,
            Ok(None) => panic!("the watch ended"),
            Err(_) => panic!("no feed item within 10 s"),
        }
    }
}

/// Feeds items into `m` until `done` says so (or 10 s pass).
async fn feed_until(
    m: &mut Manager,
    rx: &mut mpsc::Receiver<Feed>,
    what: &str,
    done: impl Fn(&Manager) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done(m) {
        assert!(Instant::now() < deadline, "not seen within 10 s: {what}");
        let f = next(rx).await;
        m.on_feed(f, Instant::now());
    }
}

#[test]
fn the_own_watch_follows_carrier_and_address_loss_and_the_manager_moves() {
    let Some(a_ns) = Netns::try_new("mbkwA") else {
        eprintln!("skipped: needs root and iproute2 (network namespace)");
        return;
    };
    let b_ns = Netns::new("mbkwB");
    netns::veth(&a_ns, "vA", &b_ns, "vB");
    netns::veth(&a_ns, "vC", &b_ns, "vD");
    a_ns.ip_line("addr add 192.0.2.1/24 dev vA");
    a_ns.ip_line("addr add 198.18.0.1/24 dev vC");
    b_ns.ip_line("addr add 192.0.2.254/24 dev vB");
    b_ns.ip_line("addr add 198.18.0.254/24 dev vD");
    for (ns, dev) in [(&a_ns, "vA"), (&a_ns, "vC"), (&b_ns, "vB"), (&b_ns, "vD")] {
        ns.up(dev);
    }
    let va = a_ns.ifindex("vA");
    let vc = a_ns.ifindex("vC");
    let peer = a("203.0.113.1");
    let b_name = b_ns.name().to_owned();
    let a_ns = &a_ns;
    a_ns.enter(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let (tx, mut rx) = mpsc::channel(64);
            let shutdown = CancellationToken::new();
            let task = tokio::spawn(watch::run(tx, shutdown.clone()));
            let mut m = Manager::new(MobilityConfig {
                probe_interval: None,
                ..MobilityConfig::default()
            });
            // The first item is the whole table.
            match next(&mut rx).await {
                Feed::Event {
                    event: LinkEvent::Snapshot { interfaces },
                    ..
                } => {
                    let names: Vec<&str> = interfaces.iter().map(|i| i.name.as_str()).collect();
                    assert!(names.contains(&"vA") && names.contains(&"vC"), "{names:?}");
                    let vc_if = interfaces.iter().find(|i| i.index == vc).unwrap();
                    assert!(vc_if.addrs.contains_key(&a("198.18.0.1")), "{vc_if:?}");
                    m.on_link_event(LinkEvent::Snapshot { interfaces }, None, Instant::now());
                }
                other => panic!("first item {other:?}"),
            }
            // Peer routes: out of the source's own interface (each uplink
            // has a default route in a real host; the kernel's answer is
            // the runtime's business).
            let routes = |local: IpAddr, _: IpAddr| {
                if local == a("192.0.2.1") {
                    RouteAnswer::Via(va)
                } else {
                    RouteAnswer::Via(vc)
                }
            };
            let now = Instant::now();
            m.on_sa(
                1,
                true,
                Pair {
                    local: a("192.0.2.1"),
                    remote: peer,
                },
                vec![peer],
                vec![],
                now,
            );
            m.evaluate(&routes, now);
            assert!(
                matches!(m.poll_action(), Some(Action::Announce { sa: 1, .. })),
                "the first evaluation gives the address list"
            );
            assert_eq!(m.poll_action(), None, "both uplinks up: stay on vA");

            // The peer end of vA goes down: vA loses its carrier but keeps
            // its address, which strongSwan does not notice.
            b_ns_down(&b_name, "vB");
            feed_until(&mut m, &mut rx, "vA without carrier", |m| {
                m.table().get(va).is_some_and(|i| !i.is_up())
            })
            .await;
            // Counted as a flap, as trigger-db would.
            feed_until(&mut m, &mut rx, "vA's flap count", |m| {
                m.table().get(va).is_some_and(|i| i.flaps == 1)
            })
            .await;
            m.evaluate(&routes, Instant::now());
            let mut actions = Vec::new();
            while let Some(x) = m.poll_action() {
                actions.push(x);
            }
            assert!(
                actions.contains(&Action::TestPaths {
                    sa: 1,
                    pairs: vec![Pair {
                        local: a("198.18.0.1"),
                        remote: peer
                    }]
                }),
                "{actions:?}"
            );
            m.on_test_result(
                1,
                Pair {
                    local: a("198.18.0.1"),
                    remote: peer,
                },
                Some(Duration::from_millis(3)),
                Instant::now(),
            );
            m.evaluate(&routes, Instant::now());
            assert_eq!(
                m.poll_action(),
                Some(Action::Update {
                    sa: 1,
                    pair: Pair {
                        local: a("198.18.0.1"),
                        remote: peer
                    }
                })
            );
            m.on_moved(
                1,
                Pair {
                    local: a("198.18.0.1"),
                    remote: peer,
                },
                Instant::now(),
            );
            let (_, t) = m.poll_completed().expect("the move");
            assert_eq!(t.reason, MoveReason::LinkDown);

            // An address removed is seen as such.
            let out = std::process::Command::new("ip")
                .args(["addr", "del", "192.0.2.1/24", "dev", "vA"])
                .output()
                .expect("ip");
            assert!(out.status.success(), "{out:?}");
            feed_until(&mut m, &mut rx, "192.0.2.1 removed", |m| {
                m.table().owner_of(a("192.0.2.1")).is_none()
            })
            .await;

            shutdown.cancel();
            drop(rx);
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        });
    });
}

/// `ip -n NS link set DEV down` (the other namespace, from any thread).
fn b_ns_down(ns: &str, dev: &str) {
    let out = std::process::Command::new("ip")
        .args(["-n", ns, "link", "set", dev, "down"])
        .output()
        .expect("ip");
    assert!(out.status.success(), "{out:?}");
}
