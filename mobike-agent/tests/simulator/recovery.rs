//! Recovery: restarts after a dead peer or a peer's delete
//! (dpd_action/close_action), bounded by keyingtries, with back-off.

use std::time::Duration;

use mobike_agent::{
    engine::{Command, CommandError, DeleteReason, Event, Recovery},
    proto::ExchangeType,
};

use crate::{
    IKE_1, delete_everything, deleted_reasons, patient, restarts, sa_id,
    sim::{self, Fate, LinkModel, Sim, configs, ip},
};

#[test]
fn dpd_action_restart_reestablishes_once_the_peer_answers_again() {
    let (mut a, b) = configs(IKE_1, "aes256gcm16");
    a.connections[0].recovery = Recovery {
        restart_on_dead_peer: true,
        keyingtries: 0,
        ..Recovery::default()
    };
    let mut s = Sim::new(a, b, 7, LinkModel::clean());
    s.initiate();
    assert!(s.run_until(Duration::from_secs(10), Sim::both_established));
    let first = sa_id(&s, 0);
    s.link.down = true;
    // Declared dead after dpd 30 s + retransmissions, then re-initiated
    // at once; those attempts go unanswered too, and are retried
    // (keyingtries 0), with a back-off.
    assert!(s.run_until(Duration::from_secs(600), |s| restarts(s) >= 3));
    assert_eq!(deleted_reasons(&s, 0)[0], DeleteReason::PeerUnreachable);
    assert!(
        deleted_reasons(&s, 0)[1..]
            .iter()
            .all(|r| *r == DeleteReason::PeerUnreachable)
    );
    // B (no peer address to initiate to) only cleared its side.
    assert!(s.nodes[1].is_clean());
    s.link.down = false;
    assert!(
        s.run_until(Duration::from_secs(600), Sim::both_established),
        "A: {:?}",
        s.nodes[0].events
    );
    assert_ne!(sa_id(&s, 0), first);
    assert!(s.children_pair_up());
    // Established again: nothing more is scheduled.
    let n = restarts(&s);
    s.run_for(Duration::from_secs(300));
    assert_eq!(restarts(&s), n);
    assert!(s.both_established());
}

#[test]
fn restarts_bring_the_connection_back_after_every_outage_and_leave_nothing_behind() {
    // A keeps its connection up (dpd_action restart, close_action start,
    // keyingtries 0) over a lossy link that also goes away for a while,
    // several times, for random lengths. Whenever the link is back, one IKE
    // SA with one CHILD_SA must come back on both sides (B clears its stale
    // ones on INITIAL_CONTACT or by its own liveness checks), and our own
    // delete at the end must leave nothing, restarts included.
    let mut restarted = 0;
    for seed in sim::seeds(12) {
        let (mut a, mut b) = configs(IKE_1, "aes256gcm16");
        patient(&mut a, &LinkModel::lossy());
        patient(&mut b, &LinkModel::lossy());
        a.connections[0].recovery = Recovery {
            restart_on_dead_peer: true,
            restart_on_peer_close: true,
            keyingtries: 0,
        };
        let mut s = Sim::new(a, b, seed, LinkModel::lossy());
        let mut rng = sim::Rng::new(seed ^ 0x5eed);
        s.initiate();
        let one_each = |s: &Sim| {
            s.nodes
                .iter()
                .all(|n| n.ep.ike_sa_count() == 1 && n.established() == 1 && n.kernel.len() == 1)
                && s.children_pair_up()
        };
        for round in 0..3 {
            assert!(
                s.run_until(Duration::from_secs(3600), one_each),
                "seed {seed} round {round}: A {:?}\nB {:?}\nA events {:?}",
                s.nodes[0].ep.ike_sas(),
                s.nodes[1].ep.ike_sas(),
                s.nodes[0].events
            );
            s.run_for(Duration::from_secs(rng.below(60)));
            s.link.down = true;
            // Short ones the retransmissions ride out; long ones (past the
            // ~17 minutes 10 tries take) end the SAs.
            let outage = if rng.chance(500) {
                30 + rng.below(300)
            } else {
                1100 + rng.below(600)
            };
            s.run_for(Duration::from_secs(outage));
            s.link.down = false;
        }
        assert!(
            s.run_until(Duration::from_secs(3600), one_each),
            "seed {seed} at the end"
        );
        restarted += s.nodes[0]
            .events
            .iter()
            .filter(|e| matches!(e, Event::RestartDue { .. }))
            .count();
        delete_everything(&mut s);
        s.run_for(Duration::from_secs(600));
        assert!(s.all_clean(), "seed {seed}");
    }
    eprintln!("{restarted} restarts");
    assert!(restarted > 0, "the long outages must have needed restarts");
}

#[test]
fn keyingtries_bound_the_attempts_then_the_connection_is_left_alone() {
    let (mut a, b) = configs(IKE_1, "aes256gcm16");
    a.connections[0].recovery.keyingtries = 3;
    let mut s = Sim::new(a, b, 8, LinkModel::clean());
    s.link.down = true;
    s.initiate();
    assert!(s.run_until(Duration::from_secs(3600), |s| {
        s.nodes[0].ep.poll_timeout().is_none()
    }));
    // The first attempt and two more.
    assert_eq!(restarts(&s), 2);
    assert_eq!(
        deleted_reasons(&s, 0),
        vec![DeleteReason::PeerUnreachable; 3]
    );
    assert!(s.nodes[0].is_clean());
    let inits = s
        .wire
        .iter()
        .filter(|w| {
            w.from == 0 && w.fate == Fate::Sent && w.header.exchange == ExchangeType::IKE_SA_INIT
        })
        .map(|w| w.header.spi_i)
        .collect::<std::collections::BTreeSet<_>>();
    assert_eq!(inits.len(), 3, "three IKE SAs tried");

    // A connection that fails authentication is not retried.
    let (mut a, b) = configs(IKE_1, "aes256gcm16");
    a.connections[0].recovery.keyingtries = 0;
    a.connections[0].psk = b"wrong-psk-0123456789".to_vec();
    let mut s = Sim::new(a, b, 9, LinkModel::clean());
    s.initiate();
    s.run_for(Duration::from_secs(600));
    assert_eq!(
        deleted_reasons(&s, 0),
        vec![DeleteReason::AuthenticationFailed]
    );
    assert_eq!(restarts(&s), 0);
}

#[test]
fn an_initiate_without_a_route_towards_the_peer_is_retried_as_keyingtries_allow() {
    // A connection on "any" local address: the runtime could not find a
    // source address (no route), so the initiate has none.
    let (mut a, _) = configs(IKE_1, "aes256gcm16");
    a.connections[0].local_addr = None;
    a.connections[0].recovery.keyingtries = 3;
    let mut ep = mobike_agent::engine::Endpoint::new(a).expect("endpoint");
    let t0 = std::time::Instant::now();
    let initiate = |local| Command::Initiate {
        connection: "ab".into(),
        local,
    };
    assert_eq!(
        ep.handle_command(t0, initiate(None)),
        Err(CommandError::NoAddresses("ab".into()))
    );
    // Retried at once, then after 2 s; the third failure is the last.
    let mut due = Vec::new();
    while let Some(t) = ep.poll_timeout() {
        ep.handle_timeout(t);
        match ep.poll_event() {
            Some(Event::RestartDue { connection }) => assert_eq!(connection, "ab"),
            other => panic!("{other:?}"),
        }
        due.push(t - t0);
        assert!(ep.handle_command(t, initiate(None)).is_err());
    }
    assert_eq!(due, [Duration::ZERO, Duration::from_secs(2)]);
    assert_eq!(ep.ike_sa_count(), 0);

    // Once there is a route, the restart initiates from it.
    let mut ep2 = {
        let (mut a, _) = configs(IKE_1, "aes256gcm16");
        a.connections[0].local_addr = None;
        a.connections[0].recovery.keyingtries = 0;
        mobike_agent::engine::Endpoint::new(a).expect("endpoint")
    };
    assert!(ep2.handle_command(t0, initiate(None)).is_err());
    let t = ep2.poll_timeout().expect("a retry");
    ep2.handle_timeout(t);
    assert!(matches!(ep2.poll_event(), Some(Event::RestartDue { .. })));
    let local = Some(sim::sock(ip("192.0.2.1"), 500));
    ep2.handle_command(t, initiate(local)).expect("initiate");
    assert_eq!(ep2.ike_sa_count(), 1);
    assert!(ep2.poll_transmit().is_some(), "IKE_SA_INIT goes out");
}

#[test]
fn close_action_start_reestablishes_after_the_peer_deletes_and_backs_off_when_it_repeats() {
    let (mut a, b) = configs(IKE_1, "aes256gcm16");
    a.connections[0].recovery.restart_on_peer_close = true;
    let mut s = Sim::new(a, b, 10, LinkModel::clean());
    s.initiate();
    assert!(s.run_until(Duration::from_secs(10), Sim::both_established));
    let mut seen = vec![sa_id(&s, 0)];
    // The peer deletes the IKE SA three times in a row: the first restart
    // is immediate, the next ones back off (2 s, 4 s).
    for (round, pause) in [(1, 0u64), (2, 2), (3, 4)] {
        let b_sa = sa_id(&s, 1);
        s.nodes[1]
            .ep
            .handle_command(s.now, Command::DeleteIkeSa(b_sa))
            .expect("delete");
        assert!(
            s.run_until(Duration::from_secs(5), |s| s.nodes[0].ep.ike_sa_count()
                == 0
                || restarts(s) == round)
        );
        let gone = s.now;
        assert!(
            s.run_until(Duration::from_secs(30), |s| s.both_established()
                && !seen.contains(&sa_id(s, 0))),
            "round {round}: A: {:?}",
            s.nodes[0].events
        );
        let took = s.now - gone;
        assert!(
            took >= Duration::from_secs(pause) && took < Duration::from_secs(pause + 1),
            "round {round}: re-established after {took:?}"
        );
        assert_eq!(restarts(&s), round);
        seen.push(sa_id(&s, 0));
    }
    assert_eq!(deleted_reasons(&s, 0), vec![DeleteReason::PeerDeleted; 3]);
    // Our own delete is final.
    delete_everything(&mut s);
    s.run_for(Duration::from_secs(120));
    assert_eq!(restarts(&s), 3);
    assert!(s.nodes[0].is_clean());
}
