//! The simulator's own facilities, checked through the engines: scheduled
//! events fire at their virtual time and in order, a pair's own link model
//! applies to that pair only, and a removed or killed address gets nothing
//! through.

use std::time::Duration;

use mobike_agent::engine::Command;

use crate::{
    sa_id,
    sim::{self, Fate, LinkModel, ip},
    up,
};

#[test]
fn scheduled_events_fire_at_their_virtual_time_in_order() {
    let mut s = up(3, LinkModel::clean());
    let t0 = s.now;
    s.schedule(Duration::from_secs(5), "second", |_| {});
    s.schedule(Duration::from_secs(2), "first", |s| {
        // An event may schedule another, relative to its own time.
        s.schedule(Duration::from_secs(3), "third", |_| {});
    });
    // An event that sends a liveness check: B sees it within the latency.
    s.schedule(Duration::from_secs(7), "dpd", |s| {
        let sa = sa_id(s, 0);
        s.nodes[0]
            .ep
            .handle_command(s.now, Command::Dpd(sa))
            .expect("dpd");
    });
    let before = s.nodes[1].ep.ike_sas()[0].next_peer_request_id;
    s.run_for(Duration::from_secs(6));
    assert_eq!(s.pending_events().count(), 1, "only the DPD is left");
    s.run_for(Duration::from_millis(1_009));
    assert_eq!(s.nodes[1].ep.ike_sas()[0].next_peer_request_id, before);
    s.run_for(Duration::from_millis(2));
    assert_eq!(s.nodes[1].ep.ike_sas()[0].next_peer_request_id, before + 1);
    let fired: Vec<(Duration, &str)> = s.fired.iter().map(|(t, l)| (*t - t0, l.as_str())).collect();
    let secs = Duration::from_secs;
    assert_eq!(
        fired,
        [
            (secs(2), "first"),
            (secs(5), "second"),
            (secs(5), "third"),
            (secs(7), "dpd")
        ]
    );
}

#[test]
fn a_pair_with_its_own_link_model_affects_only_that_pair() {
    let mut s = up(5, LinkModel::clean());
    let (a, a2, b) = (ip(sim::A_ADDR), ip("192.0.2.11"), ip(sim::B_ADDR));
    s.add_addr(0, a2);
    let slow = LinkModel {
        latency: Duration::from_millis(400),
        ..LinkModel::clean()
    };
    s.set_link(a2, b, slow.clone());
    s.set_path_up(a, b, false);
    assert!(!s.path_up(a, b) && !s.path_up(b, a));
    assert!(s.path_up(a2, b) && s.path_up(b, a2));
    assert_eq!(s.link_model(a2, b), &slow);
    assert_eq!(s.link_model(b, a2), &slow);
    assert_eq!(s.link_model(ip("192.0.2.12"), b), &s.link, "the default");
    // A liveness check on the dead pair is lost, every copy.
    let sa = sa_id(&s, 0);
    let wire_before = s.wire.len();
    s.nodes[0]
        .ep
        .handle_command(s.now, Command::Dpd(sa))
        .expect("dpd");
    s.run_for(Duration::from_secs(5));
    let fates: Vec<Fate> = s.wire[wire_before..].iter().map(|w| w.fate).collect();
    assert_eq!(fates.len(), 6, "three sends, each lost: {fates:?}");
    assert!(fates.chunks(2).all(|c| c == [Fate::Sent, Fate::Lost]));
    // Revived, the next retransmission gets through on the clean default.
    s.set_path_up(a, b, true);
    assert!(s.path_up(a, b) && s.path_up(b, a));
    assert_eq!(s.link_model(a, b), &s.link, "the default");
    let before = s.nodes[1].ep.ike_sas()[0].next_peer_request_id;
    assert!(s.run_until(Duration::from_secs(10), |s| {
        s.nodes[1].ep.ike_sas()[0].next_peer_request_id > before
    }));
    // Moved to the slow pair (MOBIKE), every message takes its latency.
    let wire_before = s.wire.len();
    let remote = s.nodes[0].ep.ike_sas()[0].path.remote;
    let local = sim::sock(a2, 4500);
    s.nodes[0]
        .ep
        .handle_command(
            s.now,
            Command::UpdateAddresses {
                sa,
                local,
                remote,
                fallback: Vec::new(),
            },
        )
        .expect("update addresses");
    assert!(s.run_until(Duration::from_secs(10), |s| {
        s.nodes[0].ep.ike_sas()[0].path.local == local
            && !s.nodes[0].ep.ike_sas()[0].updating_addresses
    }));
    // From A's request on (the answer to the liveness check may still
    // have been on its way); A's update and its answer, not B's return
    // routability check of A's new address (RFC 4555 §5.2) and its answer.
    let times: Vec<_> = s.wire[wire_before..]
        .iter()
        .filter(|w| (w.from == 0) != w.header.is_response())
        .skip_while(|w| w.fate != Fate::Sent)
        .map(|w| (w.fate, w.at))
        .collect();
    assert_eq!(times.len(), 4, "a request and its answer: {times:?}");
    for pair in times.chunks(2) {
        assert_eq!((pair[0].0, pair[1].0), (Fate::Sent, Fate::Delivered));
        assert_eq!(pair[1].1 - pair[0].1, slow.latency);
    }
}

#[test]
fn a_removed_or_killed_address_gets_nothing_through() {
    let mut s = up(6, LinkModel::clean());
    let b = ip(sim::B_ADDR);
    // Killed: B keeps the address, nothing reaches it or leaves it.
    s.set_addr_up(b, false);
    let sa = sa_id(&s, 0);
    let wire_before = s.wire.len();
    s.nodes[0]
        .ep
        .handle_command(s.now, Command::Dpd(sa))
        .expect("dpd");
    s.run_for(Duration::from_secs(2));
    assert!(
        s.wire[wire_before..]
            .iter()
            .all(|w| w.fate != Fate::Delivered)
    );
    assert!(s.nodes[1].addrs().contains(&b));
    s.set_addr_up(b, true);
    assert!(s.run_until(Duration::from_secs(10), |s| {
        s.wire[wire_before..]
            .iter()
            .any(|w| w.from == 0 && w.fate == Fate::Delivered)
    }));
    // Removed while a datagram to it is in flight: that one is dropped
    // on arrival; given back, the next retransmission is delivered.
    s.run_for(Duration::from_secs(60));
    let wire_before = s.wire.len();
    s.nodes[0]
        .ep
        .handle_command(s.now, Command::Dpd(sa))
        .expect("dpd");
    s.run_for(Duration::from_millis(1));
    s.remove_addr(1, b);
    s.run_for(Duration::from_millis(500));
    let from_a = |fate: Fate| {
        s.wire[wire_before..]
            .iter()
            .filter(|w| w.from == 0 && w.fate == fate)
            .count()
    };
    assert_eq!((from_a(Fate::Sent), from_a(Fate::Delivered)), (1, 0));
    s.add_addr(1, b);
    assert!(s.run_until(Duration::from_secs(10), |s| {
        s.wire[wire_before..]
            .iter()
            .any(|w| w.from == 1 && w.fate == Fate::Delivered && w.header.is_response())
    }));
}
