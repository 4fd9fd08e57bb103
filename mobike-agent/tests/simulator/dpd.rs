//! Liveness: DPD declares a silent peer dead and releases everything, a
//! quiet but alive SA stays, a killed path revived in time keeps the SA,
//! deletes are final, and outages are accounted to the link only when it
//! caused them.

use std::time::Duration;

use mobike_agent::{
    engine::{Command, DeleteReason, Recovery},
    proto::ExchangeType,
};

use crate::{
    IKE_1, delete_everything, deleted_reasons, restarts, sa_id,
    sim::{self, Fate, LinkModel, ScriptedLoss, Sim, configs, ip},
    up,
};

#[test]
fn dpd_declares_a_silent_peer_dead_and_releases_everything() {
    let mut s = up(7, LinkModel::clean());
    s.link.down = true;
    // dpd 30 s + retransmits 1+2+4+8+16+32 s.
    assert!(s.run_until(Duration::from_secs(200), Sim::all_clean));
    assert_eq!(deleted_reasons(&s, 0), vec![DeleteReason::PeerUnreachable]);
    assert_eq!(deleted_reasons(&s, 1), vec![DeleteReason::PeerUnreachable]);
    assert!(s.nodes[0].ep.stats().retransmits >= 5);
}

#[test]
fn liveness_checks_keep_a_quiet_but_alive_sa_up() {
    let mut s = up(3, LinkModel::clean());
    s.run_for(Duration::from_secs(300));
    assert!(s.both_established());
    // The DPD exchanges happened and advanced the message IDs.
    let a = &s.nodes[0].ep.ike_sas()[0];
    assert!(a.next_request_id > 2, "{a:?}");
    assert!(deleted_reasons(&s, 0).is_empty());
}

#[test]
fn loss_accounting_excuses_only_the_outages_the_link_caused() {
    // The link goes down for good: both ends' liveness checks go
    // unanswered and every attempt is counted as lost.
    let (a, b) = configs(IKE_1, "aes256gcm16");
    let mut s = Sim::new(a, b, 8, LinkModel::clean());
    s.initiate();
    assert!(s.run_until(Duration::from_secs(10), Sim::both_established));
    s.link.down = true;
    assert!(s.run_until(Duration::from_secs(300), Sim::all_clean));
    let why = s.explain_unreachable().expect("the link explains it");
    assert_eq!(why.len(), 2, "{why:#?}");
    assert!(
        why.iter()
            .all(|w| w.contains("6 sends (6 lost, 0 copies delivered)")),
        "{why:#?}"
    );

    // B deletes the SA but its Delete is lost: A's liveness checks are
    // delivered later and find nothing to answer them. That is no loss.
    let (a, b) = configs(IKE_1, "aes256gcm16");
    let mut s = Sim::new(a, b, 8, LinkModel::clean());
    s.initiate();
    assert!(s.run_until(Duration::from_secs(10), Sim::both_established));
    s.scripted_losses = vec![ScriptedLoss {
        from: 1,
        exchange: ExchangeType::INFORMATIONAL,
        response: false,
        count: 6,
    }];
    let b_sa = sa_id(&s, 1);
    s.nodes[1]
        .ep
        .handle_command(s.now, Command::DeleteIkeSa(b_sa))
        .expect("delete");
    assert!(s.run_until(Duration::from_secs(300), Sim::all_clean));
    assert_eq!(deleted_reasons(&s, 0), vec![DeleteReason::PeerUnreachable]);
    let err = s.explain_unreachable().expect_err("not the link's doing");
    assert!(err.contains("delivered copies went unanswered"), "{err}");
}

#[test]
fn delete_command_tears_down_both_sides() {
    let mut s = up(11, LinkModel::lossy());
    delete_everything(&mut s);
    assert_eq!(deleted_reasons(&s, 0), vec![DeleteReason::Local]);
    assert_eq!(deleted_reasons(&s, 1), vec![DeleteReason::PeerDeleted]);
}

#[test]
fn our_own_delete_is_final_even_when_the_peer_never_answers_it() {
    let (mut a, b) = configs(IKE_1, "aes256gcm16");
    a.connections[0].recovery = Recovery {
        restart_on_dead_peer: true,
        restart_on_peer_close: true,
        keyingtries: 0,
    };
    let mut s = Sim::new(a, b, 12, LinkModel::clean());
    s.initiate();
    assert!(s.run_until(Duration::from_secs(10), Sim::both_established));
    // The link goes away just as we delete (shutdown, terminate), with a
    // liveness check already out: that check, then the Delete, are
    // retransmitted into nothing and the SA ends unanswered, which must
    // not bring it back.
    s.link.down = true;
    let sa = sa_id(&s, 0);
    s.nodes[0]
        .ep
        .handle_command(s.now, Command::Dpd(sa))
        .expect("dpd");
    s.nodes[0]
        .ep
        .handle_command(s.now, Command::DeleteAll)
        .expect("delete");
    assert!(s.run_until(Duration::from_secs(300), |s| s.nodes[0].is_clean()));
    s.run_for(Duration::from_secs(300));
    assert_eq!(restarts(&s), 0, "{:?}", s.nodes[0].events);
    assert!(s.nodes[0].is_clean());
    assert_eq!(s.nodes[0].ep.poll_timeout(), None);
}

#[test]
fn a_path_killed_and_revived_within_the_retransmissions_keeps_the_sa() {
    // First the address pair, then A's whole address: down from 1 s to
    // 40 s, while both sides' liveness checks (due at 30 s) retransmit
    // (at 31, 33, 37, 45 s, ...); the retransmission after the revival is
    // answered and the SAs stay.
    let mut s = up(4, LinkModel::clean());
    let (a, b) = (ip(sim::A_ADDR), ip(sim::B_ADDR));
    let (sa_a, sa_b) = (sa_id(&s, 0), sa_id(&s, 1));
    for whole_address in [false, true] {
        let set = move |s: &mut Sim, up: bool| {
            if whole_address {
                s.set_addr_up(a, up);
            } else {
                s.set_path_up(a, b, up);
            }
        };
        let wire_before = s.wire.len();
        s.schedule(Duration::from_secs(1), "down", move |s| set(s, false));
        s.schedule(Duration::from_secs(40), "up", move |s| set(s, true));
        s.run_for(Duration::from_secs(120));
        let lost = |n: usize| {
            s.wire[wire_before..]
                .iter()
                .filter(|w| w.from == n && w.fate == Fate::Lost)
                .count()
        };
        assert!(lost(0) >= 3 && lost(1) >= 3, "{} / {}", lost(0), lost(1));
        assert!(s.both_established());
        assert_eq!((sa_id(&s, 0), sa_id(&s, 1)), (sa_a, sa_b));
        assert_eq!(deleted_reasons(&s, 0), vec![]);
        assert_eq!(deleted_reasons(&s, 1), vec![]);
        s.paths_agree().unwrap();
    }
    assert!(s.children_pair_up());
    delete_everything(&mut s);
}
