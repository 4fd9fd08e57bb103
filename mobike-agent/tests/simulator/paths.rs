//! MOBIKE path testing (RFC 4555 §3.10) and updates that survive (§3.5):
//! parallel probes over several address pairs, pairs killed and revived,
//! pending updates, fallback to the next candidate pair, and forged
//! messages that never move anything.

use std::{net::SocketAddr, time::Duration};

use mobike_agent::{
    engine::{Command, Event, KernelAction, MobikeVerify, Path, UpdateFailure},
    proto::NotifyType,
};

use crate::{
    IKE_1, deleted_reasons, patient, reach_despite_loss_outages, sa_id,
    sim::{self, LinkModel, Sim, configs, ip},
    up,
};

fn pair(local: &str, remote: &str) -> Path {
    Path {
        local: sim::sock(ip(local), 4500),
        remote: sim::sock(ip(remote), 4500),
    }
}

/// A's `PathTested` events: (pair, rtt).
fn tested(s: &Sim) -> Vec<(Path, Option<Duration>)> {
    s.nodes[0]
        .events
        .iter()
        .filter_map(|e| match e {
            Event::PathTested { path, rtt, .. } => Some((*path, *rtt)),
            _ => None,
        })
        .collect()
}

fn update_failures(s: &Sim) -> Vec<(Path, UpdateFailure)> {
    s.nodes[0]
        .events
        .iter()
        .filter_map(|e| match e {
            Event::UpdateFailed { path, reason, .. } => Some((*path, *reason)),
            _ => None,
        })
        .collect()
}

fn path_changed(s: &Sim) -> bool {
    s.nodes.iter().all(|n| {
        n.events
            .iter()
            .any(|e| matches!(e, Event::PathChanged { .. }))
    })
}

fn test_paths(s: &mut Sim, paths: Vec<Path>) {
    let sa = sa_id(s, 0);
    s.nodes[0]
        .ep
        .handle_command(s.now, Command::TestPaths { sa, paths })
        .expect("test paths");
}

fn update(s: &mut Sim, first: Path, fallback: Vec<Path>) {
    let sa = sa_id(s, 0);
    s.nodes[0]
        .ep
        .handle_command(
            s.now,
            Command::UpdateAddresses {
                sa,
                local: first.local,
                remote: first.remote,
                fallback,
            },
        )
        .expect("update addresses");
}

#[test]
fn parallel_probes_report_the_answering_pairs_and_never_end_the_sa() {
    let mut s = up(11, LinkModel::clean());
    let (a2, a3, a4, b) = ("192.0.2.11", "192.0.2.12", "192.0.2.13", sim::B_ADDR);
    for a in [a2, a3, a4] {
        s.add_addr(0, ip(a));
    }
    s.set_path_up(ip(a3), ip(b), false);
    let path_before = s.nodes[0].ep.ike_sas()[0].path;
    let (live, dead, live2) = (pair(a2, b), pair(a3, b), pair(a4, b));
    test_paths(&mut s, vec![live, dead, live2]);
    assert!(s.run_until(Duration::from_secs(300), |s| tested(s).len() == 3));
    let t = tested(&s);
    let rtt = |p: Path| t.iter().find(|(q, _)| *q == p).expect("reported").1;
    let latency = s.link.latency;
    assert_eq!(rtt(live), Some(2 * latency), "{t:?}");
    assert_eq!(
        rtt(live2),
        Some(2 * latency),
        "late answer still taken: {t:?}"
    );
    assert_eq!(rtt(dead), None, "{t:?}");
    // A test moves nothing and ends nothing.
    s.run_for(Duration::from_secs(120));
    assert_eq!(tested(&s).len(), 3, "one report per pair");
    assert_eq!(s.nodes[0].ep.ike_sas()[0].path, path_before);
    assert!(s.both_established());
    assert_eq!(deleted_reasons(&s, 0), vec![]);
    s.paths_agree().unwrap();
}

/// A pair still lingering unanswered from an earlier test and tested
/// again gets the new test's result, not a stale failure reported after
/// the new test was asked for (a manager would take it for the new one).
#[test]
fn a_pair_tested_again_gets_the_new_tests_result_only() {
    let mut s = up(13, LinkModel::clean());
    let (a2, a3, a4, b) = ("192.0.2.11", "192.0.2.12", "192.0.2.13", sim::B_ADDR);
    for a in [a2, a3, a4] {
        s.add_addr(0, ip(a));
    }
    s.set_path_up(ip(a3), ip(b), false);
    s.set_path_up(ip(a4), ip(b), false);
    let (live, back, dead) = (pair(a2, b), pair(a3, b), pair(a4, b));
    test_paths(&mut s, vec![live, back, dead]);
    assert!(s.run_until(Duration::from_secs(60), |s| !tested(s).is_empty()));
    assert_eq!(tested(&s).len(), 1, "the others linger: {:?}", tested(&s));
    // `back` works again and is tested again with `live`, while the first
    // test still lingers: `dead`, not tested again, is reported as failed.
    s.set_path_up(ip(a3), ip(b), true);
    test_paths(&mut s, vec![back, live]);
    assert!(s.run_until(Duration::from_secs(60), |s| {
        tested(s).iter().filter(|(p, _)| *p == back).count() == 1
            && tested(s).iter().any(|(p, _)| *p == dead)
    }));
    let t = tested(&s);
    let of = |p: Path| -> Vec<Option<Duration>> {
        t.iter().filter(|(q, _)| *q == p).map(|(_, r)| *r).collect()
    };
    assert_eq!(of(back), vec![Some(2 * s.link.latency)], "{t:?}");
    assert_eq!(of(dead), vec![None], "{t:?}");
    s.run_for(Duration::from_secs(120));
    assert_eq!(of(back).len(), 1);
    assert!(s.both_established());
}

#[test]
fn a_test_no_pair_answers_leaves_the_sa_on_its_working_pair() {
    let mut s = up(12, LinkModel::clean());
    let (a2, a3, b) = ("192.0.2.11", "192.0.2.12", sim::B_ADDR);
    s.add_addr(0, ip(a2));
    s.add_addr(0, ip(a3));
    s.set_path_up(ip(a2), ip(b), false);
    s.set_path_up(ip(a3), ip(b), false);
    let sa = sa_id(&s, 0);
    test_paths(&mut s, vec![pair(a2, b), pair(a3, b)]);
    assert!(s.run_until(Duration::from_secs(300), |s| tested(s).len() == 2));
    assert!(tested(&s).iter().all(|(_, rtt)| rtt.is_none()));
    // The message ID stays in step: later requests are answered.
    let before = s.nodes[1].ep.ike_sas()[0].next_peer_request_id;
    s.nodes[0]
        .ep
        .handle_command(s.now, Command::Dpd(sa))
        .unwrap();
    assert!(s.run_until(Duration::from_secs(60), |s| {
        s.nodes[1].ep.ike_sas()[0].next_peer_request_id > before
            && s.nodes[0].ep.ike_sas()[0].next_request_id
                == s.nodes[1].ep.ike_sas()[0].next_peer_request_id
    }));
    s.run_for(Duration::from_secs(200));
    assert!(s.both_established());
    assert_eq!(deleted_reasons(&s, 0), vec![]);
    assert_eq!(deleted_reasons(&s, 1), vec![]);
}

#[test]
fn an_update_while_a_liveness_check_is_outstanding_on_a_dead_path() {
    let mut s = up(13, LinkModel::clean());
    let (a, a2, b) = (sim::A_ADDR, "192.0.2.11", sim::B_ADDR);
    s.add_addr(0, ip(a2));
    let sa = sa_id(&s, 0);
    let remote = s.nodes[0].ep.ike_sas()[0].path.remote;
    s.set_path_up(ip(a), ip(b), false);
    let before = s.nodes[1].ep.ike_sas()[0].next_peer_request_id;
    s.nodes[0]
        .ep
        .handle_command(s.now, Command::Dpd(sa))
        .unwrap();
    // The first retransmission goes unanswered: A says so.
    assert!(s.run_until(Duration::from_secs(10), |s| {
        s.nodes[0]
            .events
            .iter()
            .any(|e| matches!(e, Event::Unresponsive { .. }))
    }));
    assert_eq!(s.nodes[1].ep.ike_sas()[0].next_peer_request_id, before);
    let new = Path {
        local: sim::sock(ip(a2), 4500),
        remote,
    };
    update(&mut s, new, vec![]);
    // The check, retransmitted from the new pair, is answered; then the
    // update moves both sides.
    assert!(s.run_until(Duration::from_secs(120), path_changed));
    assert_eq!(
        s.nodes[1].ep.ike_sas()[0].next_peer_request_id,
        before + 2,
        "the liveness check and the update"
    );
    s.paths_agree().unwrap();
    assert!(s.nodes[0].kernel.values().all(|k| k.local == ip(a2)));
    s.run_for(Duration::from_secs(200));
    assert!(s.both_established());
    assert_eq!(deleted_reasons(&s, 0), vec![]);
}

#[test]
fn unacceptable_addresses_moves_on_to_the_next_pair() {
    let (a, mut b) = configs(IKE_1, "aes256gcm16");
    // B knows A by an IPv4 address: it refuses to follow A to IPv6.
    b.connections[0].remote_addr = Some(sim::sock(ip(sim::A_ADDR), 500));
    let mut s = Sim::new(a, b, 14, LinkModel::clean());
    s.initiate();
    assert!(s.run_until(Duration::from_secs(10), Sim::both_established));
    let (a6, b6, a2, b4) = ("2001:db8::1", "2001:db8::2", "192.0.2.11", sim::B_ADDR);
    s.add_addr(0, ip(a6));
    s.add_addr(1, ip(b6));
    s.add_addr(0, ip(a2));
    update(&mut s, pair(a6, b6), vec![pair(a2, b4)]);
    assert!(s.run_until(Duration::from_secs(60), path_changed));
    assert_eq!(
        update_failures(&s),
        vec![(
            pair(a6, b6),
            UpdateFailure::Refused(NotifyType::UNACCEPTABLE_ADDRESSES)
        )]
    );
    assert_eq!(s.nodes[0].ep.ike_sas()[0].path, pair(a2, b4));
    s.paths_agree().unwrap();
    assert!(s.nodes[1].kernel.values().all(|k| k.remote == ip(a2)));
}

#[test]
fn a_refused_update_without_fallback_stays_on_the_old_pair() {
    let (a, mut b) = configs(IKE_1, "aes256gcm16");
    b.connections[0].remote_addr = Some(sim::sock(ip(sim::A_ADDR), 500));
    let mut s = Sim::new(a, b, 15, LinkModel::clean());
    s.initiate();
    assert!(s.run_until(Duration::from_secs(10), Sim::both_established));
    let before = s.nodes[0].ep.ike_sas()[0].path;
    s.add_addr(0, ip("2001:db8::1"));
    s.add_addr(1, ip("2001:db8::2"));
    // Only the original initiator moves the SA or tests paths (§3.5).
    let b_sa = sa_id(&s, 1);
    let v6 = pair("2001:db8::2", "2001:db8::1");
    for cmd in [
        Command::UpdateAddresses {
            sa: b_sa,
            local: v6.local,
            remote: v6.remote,
            fallback: vec![],
        },
        Command::TestPaths {
            sa: b_sa,
            paths: vec![v6],
        },
    ] {
        assert_eq!(
            s.nodes[1].ep.handle_command(s.now, cmd),
            Err(mobike_agent::engine::CommandError::NotInitiator(b_sa))
        );
    }
    update(&mut s, pair("2001:db8::1", "2001:db8::2"), vec![]);
    assert!(s.run_until(Duration::from_secs(60), |s| !update_failures(s).is_empty()));
    s.run_for(Duration::from_secs(5));
    assert_eq!(s.nodes[0].ep.ike_sas()[0].path, before);
    assert!(!s.nodes[0].ep.ike_sas()[0].updating_addresses);
    // Another peer address: no inbound copy (the inbound policies name
    // the peer's address), only the current one asked for.
    assert!(
        s.nodes[0].kernel_log.iter().all(|k| match k {
            KernelAction::PrepareInbound { local, .. } => *local == before.local.ip(),
            _ => true,
        }),
        "{:?}",
        s.nodes[0].kernel_log
    );
    s.paths_agree().unwrap();
    assert!(s.both_established());
}

#[test]
fn an_unanswered_update_moves_on_to_the_next_pair() {
    let mut s = up(16, LinkModel::clean());
    let (a2, a3, b) = ("192.0.2.11", "192.0.2.12", sim::B_ADDR);
    s.add_addr(0, ip(a2));
    s.add_addr(0, ip(a3));
    let remote = s.nodes[0].ep.ike_sas()[0].path.remote;
    s.set_path_up(ip(a2), ip(b), false);
    let via = |a: &str| Path {
        local: sim::sock(ip(a), 4500),
        remote,
    };
    update(&mut s, via(a2), vec![via(a3)]);
    assert!(s.run_until(Duration::from_secs(300), path_changed));
    assert_eq!(
        update_failures(&s),
        vec![(via(a2), UpdateFailure::Unanswered)]
    );
    assert_eq!(s.nodes[0].ep.ike_sas()[0].path, via(a3));
    // Make-before-break in the kernel: each update made the inbound SAs
    // valid at its address before it went out, and the migrate to a3
    // came after a3's.
    let log = &s.nodes[0].kernel_log;
    let mut prepared: Vec<_> = log
        .iter()
        .filter_map(|k| match k {
            KernelAction::PrepareInbound { local, .. } => Some(*local),
            _ => None,
        })
        .collect();
    prepared.dedup();
    assert_eq!(prepared, [ip(a2), ip(a3)], "{log:?}");
    let at = |f: &dyn Fn(&KernelAction) -> bool| log.iter().position(f).expect("in the log");
    assert!(
        at(&|k| matches!(k, KernelAction::PrepareInbound { local, .. } if *local == ip(a3)))
            < at(&|k| matches!(k, KernelAction::MigrateChildSa { .. })),
        "{log:?}"
    );
    s.paths_agree().unwrap();
    s.run_for(Duration::from_secs(200));
    assert!(s.both_established());
    assert_eq!(deleted_reasons(&s, 0), vec![]);
    s.paths_agree().unwrap();
}

/// A's CHILD_SA migrations: (from local, to local).
fn migrations(s: &Sim) -> Vec<(std::net::IpAddr, std::net::IpAddr)> {
    s.nodes[0]
        .kernel_log
        .iter()
        .filter_map(|k| match k {
            KernelAction::MigrateChildSa { from, to, .. } => Some((from.0, to.0)),
            _ => None,
        })
        .collect()
}

#[test]
fn with_the_old_pair_lost_the_child_sas_move_as_the_update_is_sent() {
    let mut s = up(18, LinkModel::clean());
    let (a1, a2, a3, b) = (sim::A_ADDR, "192.0.2.11", "192.0.2.12", sim::B_ADDR);
    s.add_addr(0, ip(a2));
    s.add_addr(0, ip(a3));
    let remote = s.nodes[0].ep.ike_sas()[0].path.remote;
    let via = |a: &str| Path {
        local: sim::sock(ip(a), 4500),
        remote,
    };
    // The current pair is lost; a2 does not work either, a3 does.
    s.set_path_up(ip(a1), ip(b), false);
    s.set_path_up(ip(a2), ip(b), false);
    let sa = sa_id(&s, 0);
    s.nodes[0]
        .ep
        .handle_command(s.now, Command::PathLost { sa })
        .expect("path lost");
    s.nodes[0].kernel_log.clear();
    update(&mut s, via(a2), vec![via(a3)]);
    // Before anything is answered, the CHILD_SAs are on a2 already (no
    // inbound copy: they moved whole).
    assert!(s.run_until(Duration::from_millis(5), |s| !migrations(s).is_empty()));
    assert_eq!(migrations(&s), [(ip(a1), ip(a2))]);
    assert!(
        !s.nodes[0]
            .kernel_log
            .iter()
            .any(|k| matches!(k, KernelAction::PrepareInbound { .. })),
        "{:?}",
        s.nodes[0].kernel_log
    );
    s.paths_agree().unwrap_err();
    assert!(s.run_until(Duration::from_secs(300), path_changed));
    // a2 went unanswered: back to a1, then on to a3 as that update went
    // out; its answer moved nothing more.
    assert_eq!(
        migrations(&s),
        [(ip(a1), ip(a2)), (ip(a2), ip(a1)), (ip(a1), ip(a3))]
    );
    assert_eq!(s.nodes[0].ep.ike_sas()[0].path, via(a3));
    s.paths_agree().unwrap();
    // Moved: a later update is make-before-break again.
    s.nodes[0].kernel_log.clear();
    s.set_path_up(ip(a1), ip(b), true);
    update(&mut s, via(a1), vec![]);
    assert!(s.run_until(Duration::from_secs(60), |s| {
        s.nodes[0].ep.ike_sas()[0].path == via(a1) && !migrations(s).is_empty()
    }));
    assert!(
        matches!(
            s.nodes[0].kernel_log.first(),
            Some(KernelAction::PrepareInbound { local, .. }) if *local == ip(a1)
        ),
        "{:?}",
        s.nodes[0].kernel_log
    );
    assert_eq!(migrations(&s), [(ip(a3), ip(a1))]);
    // B follows once its return routability check of a1 is answered.
    assert!(s.run_until(Duration::from_secs(30), |s| s.paths_agree().is_ok()));
    s.run_for(Duration::from_secs(100));
    assert!(s.both_established());
    assert_eq!(deleted_reasons(&s, 0), vec![]);
}

#[test]
fn an_update_does_not_wait_for_a_path_test_on_dead_pairs() {
    let mut s = up(19, LinkModel::clean());
    let (a2, a3, a4, b) = ("192.0.2.11", "192.0.2.12", "192.0.2.13", sim::B_ADDR);
    for a in [a2, a3, a4] {
        s.add_addr(0, ip(a));
    }
    s.set_path_up(ip(a2), ip(b), false);
    s.set_path_up(ip(a3), ip(b), false);
    let remote = s.nodes[0].ep.ike_sas()[0].path.remote;
    let via = |a: &str| Path {
        local: sim::sock(ip(a), 4500),
        remote,
    };
    // A background test of two dead pairs is out; the update to a live
    // one goes one round trip later, not after the test's retry budget.
    test_paths(&mut s, vec![via(a2), via(a3)]);
    s.run_for(Duration::from_millis(100));
    let t0 = s.now;
    update(&mut s, via(a4), vec![]);
    assert!(s.run_until(Duration::from_secs(2), path_changed));
    assert!(s.now - t0 < Duration::from_secs(1), "{:?}", s.now - t0);
    assert_eq!(s.nodes[0].ep.ike_sas()[0].path, via(a4));
    // The test's answer came on the update's pair.
    assert!(
        tested(&s)
            .iter()
            .any(|(p, rtt)| *p == via(a4) && rtt.is_some())
    );
    assert!(s.run_until(Duration::from_secs(30), |s| s.paths_agree().is_ok()));
    s.run_for(Duration::from_secs(200));
    assert!(s.both_established());
    assert_eq!(deleted_reasons(&s, 0), vec![]);
}

#[test]
fn forged_or_tampered_messages_never_change_the_path() {
    let mut s = up(17, LinkModel::clean());
    let a2 = "192.0.2.11";
    s.add_addr(0, ip(a2));
    let remote = s.nodes[0].ep.ike_sas()[0].path.remote;
    let new = Path {
        local: sim::sock(ip(a2), 4500),
        remote,
    };
    update(&mut s, new, vec![]);
    // Take A's update off the wire before the network has it.
    let t = s.nodes[0].ep.poll_transmit().expect("update sent");
    assert_eq!((t.local, t.remote), (new.local, new.remote));
    let b_before = s.nodes[1].ep.ike_sas()[0].path;
    let kernel_before = s.nodes[1].kernel.clone();
    let forged: SocketAddr = sim::sock(ip("198.51.100.7"), 4500);
    let mut tampered = t.payload.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    let fails = s.nodes[1].ep.stats().integrity_failures;
    s.nodes[1]
        .ep
        .handle_datagram(s.now, t.remote, forged, &tampered);
    assert_eq!(s.nodes[1].ep.stats().integrity_failures, fails + 1);
    assert_eq!(s.nodes[1].ep.ike_sas()[0].path, b_before);
    assert_eq!(s.nodes[1].kernel, kernel_before);
    // B's (authentic) answer, tampered on its way to A, moves A nowhere.
    s.nodes[1]
        .ep
        .handle_datagram(s.now, t.remote, t.local, &t.payload);
    let answer = s.nodes[1].ep.poll_transmit().expect("answer");
    let mut bad = answer.payload.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    s.nodes[0]
        .ep
        .handle_datagram(s.now, answer.remote, answer.local, &bad);
    assert!(s.nodes[0].ep.ike_sas()[0].updating_addresses);
    assert!(
        !s.nodes[0]
            .events
            .iter()
            .any(|e| matches!(e, Event::PathChanged { .. }))
    );
    // The genuine answer completes it.
    s.nodes[0]
        .ep
        .handle_datagram(s.now, answer.remote, answer.local, &answer.payload);
    assert!(!s.nodes[0].ep.ike_sas()[0].updating_addresses);
    s.run_for(Duration::from_secs(5));
    s.paths_agree().unwrap();
}

/// Random pair failures and revivals while A tests pairs and moves to the
/// best answering one, across seeds: both sides keep the same SAs on the
/// same addresses, the kernel models agreeing.
#[test]
fn random_path_failures_keep_both_sides_consistent() {
    let (mut moves, mut runs) = (0, 0);
    for seed in sim::seeds(20) {
        runs += 1;
        let link = LinkModel::lossy();
        let (mut a, mut b) = configs(IKE_1, "aes256gcm16");
        patient(&mut a, &link);
        patient(&mut b, &link);
        let mut s = Sim::new(a, b, seed, link);
        s.initiate();
        reach_despite_loss_outages(
            &mut s,
            seed,
            Duration::from_secs(900),
            Sim::both_established,
        );
        let addrs = [sim::A_ADDR, "192.0.2.11", "192.0.2.12"];
        for a in &addrs[1..] {
            s.add_addr(0, ip(a));
        }
        let remote = s.nodes[0].ep.ike_sas()[0].path.remote;
        let candidates: Vec<Path> = addrs
            .iter()
            .map(|a| Path {
                local: sim::sock(ip(a), 4500),
                remote,
            })
            .collect();
        let mut rng = sim::Rng::new(seed);
        for round in 0..6 {
            // Kill or revive one pair; at least one pair stays up.
            let i = rng.below(3) as usize;
            let up_now = s.path_up(ip(addrs[i]), ip(sim::B_ADDR));
            let others_up = (0..3)
                .filter(|&j| j != i)
                .any(|j| s.path_up(ip(addrs[j]), ip(sim::B_ADDR)));
            if !up_now || others_up {
                s.set_path_up(ip(addrs[i]), ip(sim::B_ADDR), !up_now);
            }
            if s.nodes[0].ep.ike_sas().is_empty() {
                break;
            }
            let seen = tested(&s).len();
            test_paths(&mut s, candidates.clone());
            s.run_until(Duration::from_secs(600), |s| tested(s).len() >= seen + 3);
            let answered: Vec<Path> = tested(&s)[seen..]
                .iter()
                .filter(|(_, rtt)| rtt.is_some())
                .map(|(p, _)| *p)
                .collect();
            if let Some((&best, rest)) = answered.split_first()
                && s.nodes[0]
                    .ep
                    .ike_sas()
                    .first()
                    .is_some_and(|x| x.path != best)
            {
                update(&mut s, best, rest.to_vec());
            }
            let settled = s.run_until(Duration::from_secs(600), |s| {
                s.nodes[0]
                    .ep
                    .ike_sas()
                    .first()
                    .is_some_and(|x| !x.updating_addresses)
                    && s.paths_agree().is_ok()
            });
            assert!(
                settled || s.explain_unreachable().is_ok_and(|w| !w.is_empty()),
                "seed {seed} round {round}: {:?}\nA: {:?}\nB: {:?}",
                s.paths_agree(),
                s.nodes[0].ep.ike_sas(),
                s.nodes[1].ep.ike_sas()
            );
            if !settled {
                break;
            }
        }
        moves += s.nodes[0]
            .events
            .iter()
            .filter(|e| matches!(e, Event::PathChanged { .. }))
            .count();
    }
    // Killing the pair in use forces a move in about every other run.
    assert!(2 * moves >= runs, "{moves} moves in {runs} runs");
}

#[test]
fn every_child_sa_moves_between_ipv4_and_ipv6_and_back() {
    let mut s = up(18, LinkModel::clean());
    assert!(crate::add_a_child(&mut s));
    let (a6, b6) = ("2001:db8::1", "2001:db8::2");
    s.add_addr(0, ip(a6));
    s.add_addr(1, ip(b6));
    let v4 = s.nodes[0].ep.ike_sas()[0].path;
    let sa = sa_id(&s, 0);
    // A mixed pair is refused before anything is sent.
    let mixed = Command::UpdateAddresses {
        sa,
        local: sim::sock(ip(a6), 4500),
        remote: v4.remote,
        fallback: vec![],
    };
    assert!(matches!(
        s.nodes[0].ep.handle_command(s.now, mixed),
        Err(mobike_agent::engine::CommandError::MixedFamilies { .. })
    ));
    let v6 = pair(a6, b6);
    for (n, (from, to)) in [(v4, v6), (v6, v4)].into_iter().enumerate() {
        s.nodes[0].kernel_log.clear();
        update(&mut s, to, vec![]);
        assert!(s.run_until(Duration::from_secs(30), |s| {
            s.nodes.iter().all(|x| {
                x.events
                    .iter()
                    .filter(|e| matches!(e, Event::PathChanged { .. }))
                    .count()
                    > n
            })
        }));
        s.paths_agree().unwrap();
        let migrations: Vec<_> = s.nodes[0]
            .kernel_log
            .iter()
            .filter_map(|k| match k {
                mobike_agent::engine::KernelAction::MigrateChildSa { from, to, .. } => {
                    Some((*from, *to))
                }
                _ => None,
            })
            .collect();
        assert_eq!(
            migrations,
            vec![
                (
                    (from.local.ip(), from.remote.ip()),
                    (to.local.ip(), to.remote.ip())
                );
                2
            ],
            "both CHILD_SAs, old family to new"
        );
        assert_eq!(s.nodes[1].kernel.len(), 2);
        assert!(
            s.nodes[1]
                .kernel
                .values()
                .all(|k| (k.local, k.remote) == (to.remote.ip(), to.local.ip()))
        );
        assert!(s.children_pair_up());
    }
}

#[test]
fn addresses_that_change_again_mid_update_get_another_update() {
    let mut s = up(19, LinkModel::clean());
    let (a2, a3, b) = ("192.0.2.11", "192.0.2.12", sim::B_ADDR);
    s.add_addr(0, ip(a2));
    s.add_addr(0, ip(a3));
    let remote = s.nodes[0].ep.ike_sas()[0].path.remote;
    let via = |a: &str| Path {
        local: sim::sock(ip(a), 4500),
        remote,
    };
    s.set_path_up(ip(a2), ip(b), false);
    let before = s.nodes[1].ep.ike_sas()[0].next_peer_request_id;
    update(&mut s, via(a2), vec![]);
    s.run_for(Duration::from_secs(2));
    // a2 turns out dead while its update is out: the update is
    // retransmitted from a3, and a second one follows its answer.
    update(&mut s, via(a3), vec![]);
    assert!(s.run_until(Duration::from_secs(60), |s| {
        !s.nodes[0].ep.ike_sas()[0].updating_addresses
    }));
    assert_eq!(s.nodes[1].ep.ike_sas()[0].next_peer_request_id, before + 2);
    assert_eq!(s.nodes[0].ep.ike_sas()[0].path, via(a3));
    assert_eq!(update_failures(&s), vec![]);
    s.paths_agree().unwrap();
    assert!(s.nodes[1].kernel.values().all(|k| k.remote == ip(a3)));
    s.run_for(Duration::from_secs(200));
    assert!(s.both_established());
    assert_eq!(deleted_reasons(&s, 0), vec![]);
}

#[test]
fn an_update_whose_answers_were_lost_leaves_message_ids_and_pairs_consistent() {
    // a2 works one way only: A's update from it reaches B, B's answers do
    // not come back. A gives up on a2 and tries a3 with the same message
    // ID (B may never have seen it, RFC 7296 §2.2); B did see it, so B
    // answers from its response cache, with the COOKIE2 of the update
    // from a2: A asks for a3 again under the next message ID. B's own
    // request outstanding meanwhile (a liveness check, or the return
    // routability check of a2) goes to a3 as soon as a message from there
    // shows A alive at it. Afterwards both sides agree on the pair and on
    // the message IDs, and the next requests of both go through.
    for verify in [MobikeVerify::Never, MobikeVerify::Unlisted] {
        let (a, mut b) = configs(IKE_1, "aes256gcm16");
        b.connections[0].mobike_verify = verify;
        let mut s = Sim::new(a, b, 20, LinkModel::clean());
        s.initiate();
        assert!(s.run_until(Duration::from_secs(10), Sim::both_established));
        let (a2, a3, b_addr) = ("192.0.2.11", "192.0.2.12", sim::B_ADDR);
        s.add_addr(0, ip(a2));
        s.add_addr(0, ip(a3));
        let remote = s.nodes[0].ep.ike_sas()[0].path.remote;
        let via = |a: &str| Path {
            local: sim::sock(ip(a), 4500),
            remote,
        };
        s.links.set_pair_down(ip(b_addr), ip(a2), true);
        let before = s.nodes[1].ep.ike_sas()[0].next_peer_request_id;
        update(&mut s, via(a2), vec![via(a3)]);
        assert!(
            s.run_until(Duration::from_secs(300), |s| {
                s.nodes[0]
                    .ep
                    .ike_sas()
                    .first()
                    .is_none_or(|x| !x.updating_addresses)
            }),
            "{verify:?}"
        );
        s.run_for(Duration::from_secs(10));
        assert!(
            s.both_established(),
            "{verify:?}: {:?} {:?}",
            deleted_reasons(&s, 0),
            deleted_reasons(&s, 1)
        );
        let (sa_a, sa_b) = (&s.nodes[0].ep.ike_sas()[0], &s.nodes[1].ep.ike_sas()[0]);
        assert_eq!(
            sa_a.next_request_id, sa_b.next_peer_request_id,
            "{verify:?}: message IDs"
        );
        assert!(sa_b.next_peer_request_id > before);
        assert_eq!(sa_a.path, via(a3), "{verify:?}");
        assert_eq!(
            update_failures(&s),
            vec![(via(a2), UpdateFailure::Unanswered)],
            "{verify:?}"
        );
        s.paths_agree()
            .unwrap_or_else(|e| panic!("{verify:?}: {e}"));
        // Requests of both sides still go through.
        s.run_for(Duration::from_secs(200));
        assert!(
            s.both_established(),
            "{verify:?}: {:?} {:?}",
            deleted_reasons(&s, 0),
            deleted_reasons(&s, 1)
        );
        assert_eq!(deleted_reasons(&s, 0), vec![], "{verify:?}");
        s.paths_agree()
            .unwrap_or_else(|e| panic!("{verify:?}: {e}"));
        assert!(s.children_pair_up());
    }
}
