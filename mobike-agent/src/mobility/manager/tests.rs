//! The manager's decisions over scripted inputs: forced, predictive,
//! voluntary and background-tested moves, failures, and the responder.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::*;
use crate::mobility::{
    config::MobilityConfig,
    links::{AddrFlags, IfaceKind, LocalAddr, OperState},
    policy::RouteAnswer,
};

const PEER: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 1));
const PEER6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, 1));
const ETH: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
const WLAN: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1));
const WWAN6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 3, 0, 0, 0, 0, 1));

fn link_ev(index: u32, name: &str, kind: IfaceKind, driver: &str, up: bool) -> LinkEvent {
    LinkEvent::Link {
        index,
        name: name.into(),
        kind,
        driver_kind: driver.into(),
        admin_up: true,
        carrier: up,
        oper: if up { OperState::Up } else { OperState::Down },
    }
}

fn addr_ev(index: u32, a: IpAddr) -> LinkEvent {
    LinkEvent::Addr {
        index,
        addr: LocalAddr {
            addr: a,
            prefix_len: 24,
            flags: AddrFlags::default(),
        },
    }
}

struct Env {
    m: Manager,
    now: Instant,
}

fn pair(local: IpAddr, remote: IpAddr) -> Pair {
    Pair { local, remote }
}

impl Env {
    /// eth0 (1) and wlan0 (2) up; SA 7 on eth0 as initiator; no
    /// background probes.
    fn new(initiator: bool) -> Self {
        let mut m = Manager::new(MobilityConfig {
            probe_interval: None,
            ..MobilityConfig::default()
        });
        let now = Instant::now();
        for ev in [
            link_ev(1, "eth0", IfaceKind::Ethernet, "", true),
            addr_ev(1, ETH),
            link_ev(2, "wlan0", IfaceKind::Wlan, "", true),
            addr_ev(2, WLAN),
        ] {
            m.on_link_event(ev, None, now);
        }
        m.on_sa(7, initiator, pair(ETH, PEER), vec![PEER], vec![], now);
        let mut env = Env { m, now };
        // The first evaluation tells the engine the SA's address list.
        assert_eq!(
            env.step(0),
            vec![Action::Announce {
                sa: 7,
                addrs: vec![ETH, WLAN]
            }]
        );
        env
    }

    fn step(&mut self, ms: u64) -> Vec<Action> {
        self.now += Duration::from_millis(ms);
        let m = &mut self.m;
        let table = m.table().clone();
        let r = move |local: IpAddr, _: IpAddr| match table.owner_of(local) {
            Some(i) => RouteAnswer::Via(i.index),
            None => RouteAnswer::NoRoute,
        };
        m.evaluate(&r, self.now);
        std::iter::from_fn(|| m.poll_action()).collect()
    }

    /// Applies `ev` and evaluates; announcements are left out (the
    /// responder test and `both_roles_announce_a_changed_address_list`
    /// check them).
    fn moves_after(&mut self, ev: LinkEvent, id: u64) -> Vec<Action> {
        self.event(ev, id)
            .into_iter()
            .filter(|a| !matches!(a, Action::Announce { .. }))
            .collect()
    }

    fn event(&mut self, ev: LinkEvent, id: u64) -> Vec<Action> {
        let cause = Cause {
            id,
            observed: SystemTime::now(),
            received: self.now,
        };
        self.m.on_link_event(ev, Some(cause), self.now);
        self.step(0)
    }
}

#[test]
fn a_lost_link_tests_the_alternates_and_updates_to_the_first_that_answers() {
    let mut e = Env::new(true);
    let actions = e.moves_after(link_ev(1, "eth0", IfaceKind::Ethernet, "", false), 41);
    assert_eq!(
        actions,
        vec![Action::TestPaths {
            sa: 7,
            pairs: vec![pair(WLAN, PEER)]
        }]
    );
    e.now += Duration::from_millis(20);
    e.m.on_test_result(7, pair(WLAN, PEER), Some(Duration::from_millis(20)), e.now);
    assert_eq!(
        e.step(0),
        vec![Action::Update {
            sa: 7,
            pair: pair(WLAN, PEER)
        }]
    );
    // The link is gone: the CHILD_SAs may move as the update is sent.
    assert!(e.m.path_lost(7));
    e.now += Duration::from_millis(20);
    e.m.on_moved(7, pair(WLAN, PEER), e.now);
    assert!(!e.m.path_lost(7), "no move under way");
    e.now += Duration::from_millis(5);
    e.m.on_first_esp(7, e.now);
    let (sa, t) = e.m.poll_completed().expect("a completed move");
    assert_eq!(sa, 7);
    assert_eq!(t.reason, MoveReason::LinkDown);
    assert_eq!(t.cause.map(|c| c.id), Some(41));
    assert_eq!((t.from, t.to), (pair(ETH, PEER), Some(pair(WLAN, PEER))));
    assert!(
        t.tests_sent.is_some()
            && t.first_answer.is_some()
            && t.update_sent.is_some()
            && t.moved.is_some()
    );
    let status = e.m.status(7).unwrap();
    assert_eq!(status.current, pair(WLAN, PEER));
    assert!(status.moves[0].first_esp.is_some());
    // The address list, held back while the pair was being lost, goes
    // from the new pair; then nothing more.
    assert_eq!(
        e.step(0),
        vec![Action::Announce {
            sa: 7,
            addrs: vec![WLAN]
        }]
    );
    assert_eq!(e.step(0), vec![], "settled: no move storm");
}

#[test]
fn a_recently_tested_alternate_is_updated_to_without_a_test_round() {
    let mut e = Env::new(true);
    e.m.on_test_result(7, pair(WLAN, PEER), Some(Duration::from_millis(30)), e.now);
    assert_eq!(
        e.moves_after(
            LinkEvent::AddrRemoved {
                index: 1,
                addr: ETH
            },
            5
        ),
        vec![Action::Update {
            sa: 7,
            pair: pair(WLAN, PEER)
        }]
    );
}

#[test]
fn unanswered_tests_lead_to_an_untested_update_then_give_up_and_say_why() {
    let mut e = Env::new(true);
    e.m.on_sa(7, true, pair(ETH, PEER), vec![PEER, PEER6], vec![], e.now);
    e.m.on_link_event(link_ev(3, "wwan0", IfaceKind::Wwan, "", true), None, e.now);
    e.m.on_link_event(addr_ev(3, WWAN6), None, e.now);
    e.step(0);
    let first = e.moves_after(link_ev(1, "eth0", IfaceKind::Ethernet, "", false), 1);
    assert_eq!(
        first,
        vec![Action::TestPaths {
            sa: 7,
            pairs: vec![pair(WLAN, PEER), pair(WWAN6, PEER6)]
        }]
    );
    // Nothing answers within the timeout: the tests may be stuck behind a
    // request outstanding on the dead pair, so the update goes to the best
    // candidate anyway.
    let after = e.step(TEST_TIMEOUT.as_millis() as u64);
    assert_eq!(
        after,
        vec![Action::Update {
            sa: 7,
            pair: pair(WLAN, PEER)
        }]
    );
    assert!(
        e.m.status(7)
            .unwrap()
            .tests
            .iter()
            .all(|(_, t)| t.rtt.is_none())
    );
    // That update fails too: the move is given up, saying why, and tried
    // again from a fresh evaluation (the pairs are now known bad).
    e.m.on_move_failed(7, pair(WLAN, PEER), "unanswered", e.now);
    let after = e.step(0);
    let status = e.m.status(7).unwrap();
    assert_eq!(
        status.moves.last().unwrap().failed.as_deref(),
        Some("unanswered")
    );
    assert!(
        matches!(after.as_slice(), [] | [Action::TestPaths { .. }]),
        "{after:?}"
    );
}

#[test]
fn a_failed_update_goes_to_the_next_answering_pair() {
    let mut e = Env::new(true);
    e.m.on_sa(7, true, pair(ETH, PEER), vec![PEER, PEER6], vec![], e.now);
    e.m.on_link_event(link_ev(3, "wwan0", IfaceKind::Wwan, "", true), None, e.now);
    e.m.on_link_event(addr_ev(3, WWAN6), None, e.now);
    e.step(0);
    e.event(LinkEvent::Removed { index: 1 }, 1);
    e.m.on_test_result(
        7,
        pair(WWAN6, PEER6),
        Some(Duration::from_millis(50)),
        e.now,
    );
    assert_eq!(
        e.step(0),
        vec![Action::Update {
            sa: 7,
            pair: pair(WWAN6, PEER6)
        }]
    );
    // The late answer of the other pair is kept; when the update fails
    // (UNACCEPTABLE_ADDRESSES, say) it is used.
    e.m.on_test_result(7, pair(WLAN, PEER), Some(Duration::from_millis(60)), e.now);
    e.m.on_move_failed(7, pair(WWAN6, PEER6), "UNACCEPTABLE_ADDRESSES", e.now);
    let next = e.step(0);
    assert!(
        next == vec![Action::Update {
            sa: 7,
            pair: pair(WLAN, PEER)
        }] || next
            == vec![Action::TestPaths {
                sa: 7,
                pairs: vec![pair(WLAN, PEER)]
            }],
        "{next:?}"
    );
}

/// Link_Going_Down for eth0 (the SA's link) 500 ms ahead, trigger 9.
fn predict_eth0_down(e: &mut Env) -> Vec<Action> {
    e.moves_after(
        LinkEvent::GoingDown {
            index: 1,
            within: Duration::from_millis(500),
        },
        9,
    )
}

#[test]
fn link_going_down_moves_before_the_link_goes() {
    let mut e = Env::new(true);
    let actions = predict_eth0_down(&mut e);
    assert_eq!(
        actions,
        vec![Action::TestPaths {
            sa: 7,
            pairs: vec![pair(WLAN, PEER)]
        }]
    );
    e.m.on_test_result(7, pair(WLAN, PEER), Some(Duration::from_millis(10)), e.now);
    assert!(matches!(e.step(0).as_slice(), [Action::Update { .. }]));
    // The old pair still carries traffic: no early move of the CHILD_SAs.
    assert!(!e.m.path_lost(7));
    e.m.on_moved(7, pair(WLAN, PEER), e.now);
    assert_eq!(
        e.m.poll_completed().unwrap().1.reason,
        MoveReason::GoingDown
    );
}

/// eth0 predicted to go with wlan0 and wwan0 (worse) as alternates: the
/// tests go to both.
fn going_down_with_two_alternates() -> Env {
    let mut e = Env::new(true);
    let wwan = IpAddr::V4(Ipv4Addr::new(100, 64, 0, 1));
    for ev in [
        link_ev(3, "wwan0", IfaceKind::Wwan, "", true),
        addr_ev(3, wwan),
    ] {
        e.moves_after(ev, 0);
    }
    let actions = predict_eth0_down(&mut e);
    assert_eq!(
        actions,
        vec![Action::TestPaths {
            sa: 7,
            pairs: vec![pair(WLAN, PEER), pair(wwan, PEER)]
        }]
    );
    e
}

#[test]
fn a_predictive_move_waits_briefly_for_a_better_pair_than_the_first_answer() {
    let wwan = IpAddr::V4(Ipv4Addr::new(100, 64, 0, 1));
    // The better pair answers within the grace: it is taken.
    let mut e = going_down_with_two_alternates();
    e.m.on_test_result(7, pair(wwan, PEER), Some(Duration::from_millis(2)), e.now);
    assert_eq!(e.step(0), vec![], "wwan0 answered first: wait for wlan0");
    e.m.on_test_result(7, pair(WLAN, PEER), Some(Duration::from_millis(5)), e.now);
    assert_eq!(
        e.step(3),
        vec![Action::Update {
            sa: 7,
            pair: pair(WLAN, PEER)
        }]
    );
    // It does not answer within the grace: the first answer is taken.
    let mut e = going_down_with_two_alternates();
    e.m.on_test_result(7, pair(wwan, PEER), Some(Duration::from_millis(2)), e.now);
    assert_eq!(e.step(0), vec![]);
    let wait = e.m.poll_timeout().expect("the grace's end");
    assert_eq!(wait, e.now + PREDICTIVE_GRACE);
    assert_eq!(
        e.step(PREDICTIVE_GRACE.as_millis() as u64),
        vec![Action::Update {
            sa: 7,
            pair: pair(wwan, PEER)
        }]
    );
}

#[test]
fn a_better_link_is_taken_after_dwell_and_only_if_it_answers() {
    let mut e = Env::new(true);
    // Start on Wi-Fi; Ethernet is better.
    e.m.on_sa(8, true, pair(WLAN, PEER), vec![PEER], vec![], e.now);
    assert_eq!(
        e.step(0),
        vec![Action::Announce {
            sa: 8,
            addrs: vec![ETH, WLAN]
        }],
        "dwell not over: only the address list"
    );
    let wait =
        e.m.poll_timeout()
            .expect("a recheck at the end of the dwell");
    let ms = wait.duration_since(e.now).as_millis() as u64;
    assert_eq!(
        e.step(ms),
        vec![Action::TestPaths {
            sa: 8,
            pairs: vec![pair(ETH, PEER)]
        }]
    );
    e.m.on_test_result(8, pair(ETH, PEER), Some(Duration::from_millis(5)), e.now);
    assert_eq!(
        e.step(0),
        vec![Action::Update {
            sa: 8,
            pair: pair(ETH, PEER)
        }]
    );
}

#[test]
fn the_responder_only_announces_its_addresses() {
    let mut e = Env::new(false);
    let actions = e.event(
        LinkEvent::AddrRemoved {
            index: 1,
            addr: ETH,
        },
        3,
    );
    assert_eq!(
        actions,
        vec![Action::Announce {
            sa: 7,
            addrs: vec![WLAN]
        }]
    );
    // A change that leaves the list as it was says nothing.
    assert_eq!(e.event(LinkEvent::Flaps { index: 2, count: 1 }, 4), vec![]);
}

#[test]
fn an_unrelated_tunnel_interface_touches_nothing() {
    let mut e = Env::new(true);
    assert_eq!(
        e.event(link_ev(9, "xfrm0", IfaceKind::Other, "xfrm", true), 1),
        vec![]
    );
    assert_eq!(
        e.event(addr_ev(9, IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))), 2),
        vec![]
    );
    assert!(e.m.status(7).unwrap().moves.is_empty());
}

/// eth0 (1) and wlan0 (2) up; background probes every 30 s.
fn probing(now: Instant) -> Manager {
    let mut m = Manager::new(MobilityConfig {
        probe_interval: Some(Duration::from_secs(30)),
        ..MobilityConfig::default()
    });
    for ev in [
        link_ev(1, "eth0", IfaceKind::Ethernet, "", true),
        addr_ev(1, ETH),
        link_ev(2, "wlan0", IfaceKind::Wlan, "", true),
        addr_ev(2, WLAN),
    ] {
        m.on_link_event(ev, None, now);
    }
    m
}

#[test]
fn background_probes_keep_alternates_tested() {
    let now = Instant::now();
    let mut m = probing(now);
    m.on_sa(7, true, pair(ETH, PEER), vec![PEER], vec![], now);
    let table = m.table().clone();
    let r = move |local: IpAddr, _: IpAddr| {
        RouteAnswer::Via(table.owner_of(local).map_or(0, |i| i.index))
    };
    m.evaluate(&r, now);
    assert!(matches!(
        m.poll_action(),
        Some(Action::Announce { sa: 7, .. })
    ));
    assert_eq!(m.poll_action(), None);
    // A new SA's alternates are tested soon, then every probe_interval.
    let first = now + FIRST_PROBE;
    assert_eq!(m.poll_timeout(), Some(first));
    for at in [first, first + Duration::from_secs(30)] {
        m.evaluate(&r, at);
        assert_eq!(
            m.poll_action(),
            Some(Action::TestPaths {
                sa: 7,
                pairs: vec![pair(WLAN, PEER)]
            })
        );
        m.on_test_result(7, pair(WLAN, PEER), Some(Duration::from_millis(20)), at);
        assert_eq!(m.poll_timeout(), Some(at + Duration::from_secs(30)));
    }
}

/// An alternate whose link went down loses its test result; when the link
/// is back it is tested again soon (not at the next interval), at most
/// once per PROMPT_PROBE_GAP however often the link flaps, so that a break
/// after it updates at once.
#[test]
fn an_alternate_that_comes_back_is_tested_soon() {
    let t0 = Instant::now();
    let mut m = probing(t0);
    m.on_sa(7, true, pair(ETH, PEER), vec![PEER], vec![], t0);
    let table = std::rc::Rc::new(std::cell::RefCell::new(m.table().clone()));
    let view = table.clone();
    let r = move |local: IpAddr, _: IpAddr| {
        RouteAnswer::Via(view.borrow().owner_of(local).map_or(0, |i| i.index))
    };
    let drain = |m: &mut Manager| {
        let mut tests = Vec::new();
        while let Some(a) = m.poll_action() {
            if let Action::TestPaths { pairs, .. } = a {
                tests.push(pairs);
            }
        }
        tests
    };
    m.evaluate(&r, t0);
    drain(&mut m);
    let first = t0 + FIRST_PROBE;
    m.evaluate(&r, first);
    assert_eq!(drain(&mut m), vec![vec![pair(WLAN, PEER)]]);
    m.on_test_result(7, pair(WLAN, PEER), Some(Duration::from_millis(20)), first);
    let tested = |m: &Manager| {
        m.status(7)
            .unwrap()
            .tests
            .iter()
            .any(|(p, t)| *p == pair(WLAN, PEER) && t.rtt.is_some())
    };
    assert!(tested(&m));
    // wlan0 goes down and comes back: its old result is dropped, and the
    // next probe is PROMPT_PROBE after it came back, not the interval.
    let mut at = first + Duration::from_secs(3);
    for up in [false, true] {
        let ev = link_ev(2, "wlan0", IfaceKind::Wlan, "", up);
        m.on_link_event(ev.clone(), None, at);
        table.borrow_mut().apply(ev, at);
        m.evaluate(&r, at);
        assert!(drain(&mut m).is_empty());
        assert!(!tested(&m), "up {up}: a result from before the link went");
        at += Duration::from_millis(100);
    }
    let back = at - Duration::from_millis(100);
    assert_eq!(m.poll_timeout(), Some(back + PROMPT_PROBE));
    m.evaluate(&r, back + PROMPT_PROBE);
    assert_eq!(drain(&mut m), vec![vec![pair(WLAN, PEER)]]);
    let probed = back + PROMPT_PROBE;
    m.on_test_result(7, pair(WLAN, PEER), Some(Duration::from_millis(20)), probed);
    // It flaps at once: the next prompt test waits for the gap.
    at = probed + Duration::from_millis(50);
    for up in [false, true] {
        let ev = link_ev(2, "wlan0", IfaceKind::Wlan, "", up);
        m.on_link_event(ev.clone(), None, at);
        table.borrow_mut().apply(ev, at);
        m.evaluate(&r, at);
        drain(&mut m);
        at += Duration::from_millis(50);
    }
    assert_eq!(m.poll_timeout(), Some(probed + PROMPT_PROBE_GAP));
    // An unrelated SA evaluation in between sends nothing early.
    m.evaluate(&r, probed + PROMPT_PROBE_GAP - Duration::from_millis(1));
    assert!(drain(&mut m).is_empty());
    m.evaluate(&r, probed + PROMPT_PROBE_GAP);
    assert_eq!(drain(&mut m), vec![vec![pair(WLAN, PEER)]]);
}

/// A probe that falls due while a move is under way, or on an SA we only
/// answer for, is put off to the next interval: a deadline left in the
/// past would wake the runtime again and again.
#[test]
fn a_due_probe_is_rescheduled_whatever_the_verdict() {
    for initiator in [true, false] {
        let t0 = Instant::now();
        let mut m = probing(t0);
        m.on_sa(7, initiator, pair(ETH, PEER), vec![PEER], vec![], t0);
        let r = |_: IpAddr, _: IpAddr| RouteAnswer::Unknown;
        m.evaluate(&r, t0);
        while m.poll_action().is_some() {}
        let due = t0 + Duration::from_secs(30);
        if initiator {
            // eth0 goes just before: its move's tests are out when the
            // probe falls due.
            let before = due - Duration::from_millis(500);
            m.on_link_event(
                link_ev(1, "eth0", IfaceKind::Ethernet, "", false),
                None,
                before,
            );
            m.evaluate(&r, before);
            assert!(m.is_moving());
        }
        m.evaluate(&r, due);
        assert!(
            m.poll_timeout().is_some_and(|t| t > due),
            "initiator {initiator}: next deadline {:?}",
            m.poll_timeout().map(|t| t - t0)
        );
    }
}

/// The pair of an update under way goes before the peer answered: the
/// update goes to the best candidate at once (here back to the current
/// pair, which ends the move), not left to die with the IKE SA.
#[test]
fn an_update_whose_pair_goes_before_the_answer_goes_to_the_best_candidate() {
    let mut e = Env::new(true);
    let down = e.moves_after(link_ev(1, "eth0", IfaceKind::Ethernet, "", false), 1);
    assert_eq!(
        down,
        vec![Action::TestPaths {
            sa: 7,
            pairs: vec![pair(WLAN, PEER)]
        }]
    );
    e.m.on_test_result(7, pair(WLAN, PEER), Some(Duration::from_millis(20)), e.now);
    let update: Vec<Action> = e
        .step(0)
        .into_iter()
        .filter(|a| !matches!(a, Action::Announce { .. }))
        .collect();
    assert_eq!(
        update,
        vec![Action::Update {
            sa: 7,
            pair: pair(WLAN, PEER)
        }]
    );
    // eth0 back and wlan0 gone before the peer answered.
    e.m.on_link_event(
        link_ev(1, "eth0", IfaceKind::Ethernet, "", true),
        None,
        e.now,
    );
    let actions = e.moves_after(link_ev(2, "wlan0", IfaceKind::Wlan, "", false), 2);
    assert_eq!(
        actions,
        vec![Action::Update {
            sa: 7,
            pair: pair(ETH, PEER)
        }]
    );
    assert!(!e.m.is_moving());
}

#[test]
fn a_gone_sa_drops_its_queued_actions() {
    let mut e = Env::new(true);
    e.m.on_link_event(
        link_ev(1, "eth0", IfaceKind::Ethernet, "", false),
        None,
        e.now,
    );
    e.m.evaluate(&|_, _| RouteAnswer::Unknown, e.now);
    e.m.on_sa_gone(7);
    assert_eq!(e.m.poll_action(), None);
    assert_eq!(e.m.status(7), None);
}

#[test]
fn both_roles_announce_a_changed_address_list() {
    let mut e = Env::new(true);
    let actions = e.event(addr_ev(2, IpAddr::V4(Ipv4Addr::new(198, 51, 100, 2))), 1);
    assert_eq!(
        actions,
        vec![Action::Announce {
            sa: 7,
            addrs: vec![ETH, WLAN, IpAddr::V4(Ipv4Addr::new(198, 51, 100, 2))]
        }]
    );
}

/// While the update is on the wire, the rest of the burst on the link being
/// left (its address going, its link flapping) costs no evaluation and no
/// route lookup; what touches the pair the update goes to does. The move's
/// cause is the event that started it, not the last of the burst.
#[test]
fn an_update_under_way_ignores_the_link_being_left() {
    let mut e = Env::new(true);
    e.m.on_test_result(7, pair(WLAN, PEER), Some(Duration::from_millis(30)), e.now);
    let update = e.moves_after(link_ev(1, "eth0", IfaceKind::Ethernet, "", false), 11);
    assert_eq!(
        update,
        vec![Action::Update {
            sa: 7,
            pair: pair(WLAN, PEER)
        }]
    );
    for (ev, id) in [
        (
            LinkEvent::AddrRemoved {
                index: 1,
                addr: ETH,
            },
            12,
        ),
        (link_ev(1, "eth0", IfaceKind::Ethernet, "", true), 13),
        (link_ev(1, "eth0", IfaceKind::Ethernet, "", false), 14),
    ] {
        e.m.on_link_event(ev, Some(cause(id, e.now)), e.now);
        assert!(
            e.m.route_pairs(e.now).is_empty(),
            "event {id} on the link being left asks for no route lookup"
        );
    }
    // wlan0 changes: the update's own pair is looked at again.
    let second = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 2));
    e.m.on_link_event(addr_ev(2, second), Some(cause(15, e.now)), e.now);
    assert!(!e.m.route_pairs(e.now).is_empty());
    e.step(0);
    e.now += Duration::from_millis(20);
    e.m.on_moved(7, pair(WLAN, PEER), e.now);
    e.m.on_first_esp(7, e.now);
    let (_, t) = e.m.poll_completed().expect("a completed move");
    assert_eq!(t.cause.map(|c| c.id), Some(11));
    assert!(
        !e.m.route_pairs(e.now).is_empty(),
        "after the answer the SA is evaluated again"
    );
    e.step(0);
    assert!(e.m.route_pairs(e.now).is_empty(), "then settled");
}

/// An event that moved nothing is not the cause of a later move.
#[test]
fn a_cause_that_moved_nothing_is_forgotten() {
    let mut e = Env::new(true);
    e.m.on_link_event(addr_ev(2, WLAN), Some(cause(1, e.now)), e.now);
    assert_eq!(e.step(0), vec![]);
    e.m.on_test_result(7, pair(WLAN, PEER), Some(Duration::from_millis(30)), e.now);
    e.m.on_link_event(
        link_ev(1, "eth0", IfaceKind::Ethernet, "", false),
        None,
        e.now,
    );
    e.step(0);
    e.now += Duration::from_millis(20);
    e.m.on_moved(7, pair(WLAN, PEER), e.now);
    e.m.on_first_esp(7, e.now);
    let (_, t) = e.m.poll_completed().expect("a completed move");
    assert_eq!(t.cause.map(|c| c.id), None);
}

fn cause(id: u64, received: Instant) -> Cause {
    Cause {
        id,
        observed: SystemTime::now(),
        received,
    }
}

/// A move caused by a kernel hint (no trigger id) is named by trigger-db's
/// copy of the same loss, while under way and after.
/// eth0 lost by a kernel hint (a cause without trigger id) on `e`, wlan0
/// tested `tested` before; the hint.
fn eth0_lost_by_hint(e: &mut Env, tested: Option<u64>) -> Cause {
    if let Some(ms) = tested {
        e.m.on_test_result(7, pair(WLAN, PEER), Some(Duration::from_millis(ms)), e.now);
    }
    let hint = cause(0, e.now);
    e.m.on_link_event(
        link_ev(1, "eth0", IfaceKind::Ethernet, "", false),
        Some(hint),
        e.now,
    );
    hint
}

/// The move to wlan0 answered and its first ESP packet seen.
fn wlan0_moved(e: &mut Env) {
    e.m.on_moved(7, pair(WLAN, PEER), e.now);
    e.m.on_first_esp(7, e.now);
}

#[test]
fn trigger_db_names_the_trigger_of_a_move_a_kernel_hint_caused() {
    let mut e = Env::new(true);
    let hint = eth0_lost_by_hint(&mut e, None);
    e.step(0);
    // Another hint's copy names nothing.
    e.m.name_cause(hint.observed + Duration::from_millis(1), 99);
    e.m.name_cause(hint.observed, 41);
    let moving =
        e.m.status(7)
            .and_then(|s| s.moving)
            .expect("a move under way");
    assert_eq!(moving.cause.map(|c| c.id), Some(41));
    // A second copy (a resent trigger) does not rename it.
    e.m.name_cause(hint.observed, 42);
    e.now += Duration::from_millis(20);
    e.m.on_test_result(7, pair(WLAN, PEER), Some(Duration::from_millis(20)), e.now);
    e.step(0);
    wlan0_moved(&mut e);
    let (_, t) = e.m.poll_completed().expect("a completed move");
    assert_eq!(t.cause.map(|c| c.id), Some(41));

    // Named in the same burst, before the evaluation that decides.
    let mut e = Env::new(true);
    let hint = eth0_lost_by_hint(&mut e, Some(30));
    e.m.name_cause(hint.observed, 44);
    e.step(0);
    wlan0_moved(&mut e);
    let (_, t) = e.m.poll_completed().expect("a completed move");
    assert_eq!(t.cause.map(|c| c.id), Some(44));

    // Named after it completed: the history has the id.
    let mut e = Env::new(true);
    let hint = eth0_lost_by_hint(&mut e, Some(30));
    e.step(0);
    wlan0_moved(&mut e);
    e.m.name_cause(hint.observed, 43);
    let status = e.m.status(7).unwrap();
    assert_eq!(status.moves[0].cause.map(|c| c.id), Some(43));
}
