//! Bringing SAs up: over clean and hostile links, with duplicated and
//! reordered datagrams, over IPv6, and the ways it fails (wrong key or
//! identity, no common proposal, a half-open SA that expires), with the
//! RFC's notify; cookies, INVALID_KE_PAYLOAD and lost IKE_AUTH answers.

use std::time::Duration;

use mobike_agent::{
    engine::{Command, DeleteReason, Event},
    proto::{self, ExchangeType, NotifyType, Payload},
};

use crate::{
    IKE_1, IKE_2, delete_everything, deleted_reasons, sa_id,
    sim::{self, Fate, LinkModel, ScriptedLoss, Sim, configs, ip},
    up,
};

#[test]
fn sas_come_up_and_child_keys_mirror_each_other() {
    for (ike, esp) in [
        (IKE_1, "aes256gcm16"),
        (IKE_2, "chacha20poly1305"),
        (IKE_2, "aes128gcm16-esn"),
    ] {
        let (a, b) = configs(ike, esp);
        let mut s = Sim::new(a, b, 1, LinkModel::clean());
        s.initiate();
        assert!(
            s.run_until(Duration::from_secs(10), Sim::both_established),
            "{ike} / {esp}"
        );
        assert!(s.children_pair_up());
        let a_info = &s.nodes[0].ep.ike_sas()[0];
        assert!(a_info.mobike, "MOBIKE_SUPPORTED exchanged in IKE_AUTH");
        assert_eq!(a_info.connection, "ab");
        assert_eq!(s.nodes[1].ep.ike_sas()[0].connection, "ab");
        // Two round trips on a clean link: no retransmission was needed.
        assert_eq!(s.nodes[0].ep.stats().retransmits, 0);
        // MOBIKE makes the initiator float to 4500 for IKE_AUTH.
        assert_eq!(a_info.path.remote.port(), 4500);
        let inst = s.nodes[0].kernel.values().next().expect("child");
        assert_eq!(inst.encap, None, "no NAT, no UDP encapsulation");
        assert_eq!(inst.local, ip(sim::A_ADDR));
        delete_everything(&mut s);
    }
}

#[test]
fn sas_come_up_despite_loss_duplication_and_reordering() {
    for seed in sim::seeds(25) {
        let mut s = up(seed, LinkModel::lossy());
        assert!(s.children_pair_up(), "seed {seed}");
        delete_everything(&mut s);
    }
}

#[test]
fn duplicated_requests_are_answered_from_the_response_cache() {
    let mut replayed = 0;
    for seed in sim::seeds(10) {
        let link = LinkModel {
            dup_per_mille: 500,
            ..LinkModel::clean()
        };
        let s = up(seed, link);
        replayed += s.nodes[1].ep.stats().replayed_responses;
        // A duplicate never creates a second SA.
        assert_eq!(s.nodes[1].ep.ike_sa_count(), 1, "seed {seed}");
    }
    assert!(
        replayed > 0,
        "with 50% duplication some request must have been replayed"
    );
}

#[test]
fn sas_come_up_over_ipv6_with_ipv6_selectors() {
    let (mut a, mut b) = configs(IKE_2, "chacha20poly1305");
    let v6 = |s: &str| mobike_agent::engine::parse_ts(s).unwrap();
    a.connections[0].local_addr = Some(sim::sock(ip("2001:db8::1"), 500));
    a.connections[0].remote_addr = Some(sim::sock(ip("2001:db8::2"), 500));
    a.connections[0].children[0].local_ts = vec![v6("2001:db8:1::/48")];
    a.connections[0].children[0].remote_ts = vec![v6("2001:db8:2::/48")];
    b.connections[0].children[0].local_ts = vec![v6("2001:db8:2::/48")];
    b.connections[0].children[0].remote_ts = vec![v6("2001:db8:1::/48")];
    let mut s = Sim::new(a, b, 17, LinkModel::clean());
    s.initiate();
    assert!(s.run_until(Duration::from_secs(10), Sim::both_established));
    assert!(s.children_pair_up());
    let inst = s.nodes[0].kernel.values().next().unwrap();
    assert_eq!(
        (inst.local, inst.remote),
        (ip("2001:db8::1"), ip("2001:db8::2"))
    );
    assert_eq!(inst.remote_ts, vec![v6("2001:db8:2::/48")]);
    assert_eq!(
        s.nodes[0].ep.ike_sas()[0].path.remote,
        sim::sock(ip("2001:db8::2"), 4500)
    );
    delete_everything(&mut s);
}

#[test]
fn wrong_psk_fails_with_authentication_failed_on_both_sides() {
    let (a, mut b) = configs(IKE_1, "aes256gcm16");
    b.connections[0].psk = b"not-the-same-psk".to_vec();
    let mut s = Sim::new(a, b, 5, LinkModel::clean());
    s.initiate();
    assert!(s.run_until(Duration::from_secs(30), Sim::all_clean));
    assert_eq!(
        deleted_reasons(&s, 0),
        vec![DeleteReason::AuthenticationFailed]
    );
    assert_eq!(
        deleted_reasons(&s, 1),
        vec![DeleteReason::AuthenticationFailed]
    );
    assert!(
        s.nodes.iter().all(|n| n.kernel_log.is_empty()),
        "no CHILD_SA was ever installed"
    );
}

#[test]
fn initiator_rejecting_the_responders_identity_takes_the_responder_down_too() {
    let (mut a, b) = configs(IKE_1, "aes256gcm16");
    a.connections[0].remote_id = mobike_agent::engine::parse_identity("someone-else.test").unwrap();
    let mut s = Sim::new(a, b, 5, LinkModel::clean());
    s.initiate();
    assert!(s.run_until(Duration::from_secs(30), Sim::all_clean));
    assert_eq!(
        deleted_reasons(&s, 0),
        vec![DeleteReason::AuthenticationFailed]
    );
    assert_eq!(
        deleted_reasons(&s, 1),
        vec![DeleteReason::AuthenticationFailed]
    );
    // B had installed the CHILD_SA and removed it again.
    assert_eq!(s.nodes[1].kernel_log.len(), 2);
}

#[test]
fn proposal_mismatch_yields_no_proposal_chosen_and_no_responder_state() {
    let (a, _) = configs(IKE_1, "aes256gcm16");
    let (_, b) = configs(IKE_2, "aes256gcm16");
    let mut s = Sim::new(a, b, 5, LinkModel::clean());
    s.initiate();
    // The unauthenticated refusal ends the attempt only when the
    // retransmissions have run out (RFC 7296 §2.21.1).
    assert!(s.run_until(Duration::from_secs(200), Sim::all_clean));
    assert!(s.elapsed() > Duration::from_secs(60));
    assert_eq!(
        deleted_reasons(&s, 0),
        vec![DeleteReason::PeerError(NotifyType::NO_PROPOSAL_CHOSEN)]
    );
    assert!(s.nodes[1].events.is_empty());
}

#[test]
fn esp_proposal_mismatch_keeps_the_ike_sa_and_reports_the_child() {
    let (a, _) = configs(IKE_1, "aes256gcm16");
    let (_, b) = configs(IKE_1, "chacha20poly1305");
    let mut s = Sim::new(a, b, 5, LinkModel::clean());
    s.initiate();
    assert!(s.run_until(Duration::from_secs(30), |s| {
        s.nodes.iter().all(|n| n.established() == 1)
    }));
    assert!(s.nodes.iter().all(|n| n.kernel.is_empty()));
    assert!(s.nodes[0].events.iter().any(|e| matches!(
        e,
        Event::ChildSaFailed {
            reason: NotifyType::NO_PROPOSAL_CHOSEN,
            ..
        }
    )));
    delete_everything(&mut s);
}

#[test]
fn responder_narrows_traffic_selectors() {
    let (mut a, b) = configs(IKE_1, "aes256gcm16");
    // A asks for all of 10.0.0.0/8 on B's side; B only allows 10.2.0.0/24.
    a.connections[0].children[0].remote_ts =
        vec![mobike_agent::engine::parse_ts("10.0.0.0/8").unwrap()];
    let mut s = Sim::new(a, b, 5, LinkModel::clean());
    s.initiate();
    assert!(s.run_until(Duration::from_secs(10), Sim::both_established));
    let inst = s.nodes[0].kernel.values().next().unwrap();
    assert_eq!(
        inst.remote_ts,
        vec![mobike_agent::engine::parse_ts("10.2.0.0/24").unwrap()]
    );
    assert!(s.children_pair_up());
}

#[test]
fn cookies_are_demanded_under_load_and_honoured() {
    let (a, mut b) = configs(IKE_1, "aes256gcm16");
    b.cookie_threshold = 0;
    let mut s = Sim::new(a, b, 9, LinkModel::clean());
    s.initiate();
    assert!(s.run_until(Duration::from_secs(10), Sim::both_established));
    assert_eq!(s.nodes[1].ep.stats().cookies_sent, 1);
    // The second IKE_SA_INIT carries the cookie as its first payload.
    let inits: Vec<proto::Message> = s.nodes[0]
        .sent
        .iter()
        .filter_map(|t| proto::Message::decode(&t.payload).ok())
        .filter(|m| m.header.exchange == ExchangeType::IKE_SA_INIT)
        .collect();
    assert_eq!(inits.len(), 2);
    assert!(matches!(&inits[1].payloads[0], Payload::Notify(n) if n.ty == NotifyType::COOKIE));
    assert!(s.children_pair_up());
}

#[test]
fn invalid_ke_payload_makes_the_initiator_retry_with_the_responders_group() {
    let (a, _) = configs("aes256gcm16-prfsha256-x25519-ecp384", "aes256gcm16");
    let (_, b) = configs("aes256gcm16-prfsha256-ecp384", "aes256gcm16");
    let mut s = Sim::new(a, b, 9, LinkModel::clean());
    s.initiate();
    assert!(s.run_until(Duration::from_secs(10), Sim::both_established));
    let groups: Vec<u16> = s.nodes[0]
        .sent
        .iter()
        .filter_map(|t| proto::Message::decode(&t.payload).ok())
        .filter(|m| m.header.exchange == ExchangeType::IKE_SA_INIT)
        .filter_map(|m| {
            m.payloads.iter().find_map(|p| match p {
                Payload::Ke(k) => Some(k.group),
                _ => None,
            })
        })
        .collect();
    assert_eq!(groups, vec![31, 20]);
}

#[test]
fn unanswered_half_open_sa_expires() {
    let (a, b) = configs(IKE_1, "aes256gcm16");
    let mut s = Sim::new(a, b, 71, LinkModel::clean());
    s.initiate();
    // Deliver IKE_SA_INIT, then cut the link so IKE_AUTH never arrives.
    assert!(
        s.run_until(Duration::from_secs(5), |s| s.nodes[1].ep.half_open_count()
            == 1)
    );
    s.link.down = true;
    assert!(s.run_until(Duration::from_secs(200), Sim::all_clean));
    assert_eq!(deleted_reasons(&s, 1), vec![DeleteReason::HalfOpenTimeout]);
    assert_eq!(deleted_reasons(&s, 0), vec![DeleteReason::PeerUnreachable]);
}

/// B answers IKE_SA_INIT at 0.01 s; that answer and its replay for A's
/// first retransmission (1 s) are lost, the replay for the second (3 s)
/// gets through. A's IKE_AUTH (3.02 s) and its first retransmission are
/// lost as well, so the copy that arrives comes at about 6 s.
fn lossy_establishment(half_open_timeout: Duration) -> Sim {
    let (a, mut b) = configs(IKE_1, "aes256gcm16");
    b.half_open_timeout = half_open_timeout;
    let mut s = Sim::new(a, b, 7, LinkModel::clean());
    s.scripted_losses = vec![
        ScriptedLoss {
            from: 1,
            exchange: ExchangeType::IKE_SA_INIT,
            response: true,
            count: 2,
        },
        ScriptedLoss {
            from: 0,
            exchange: ExchangeType::IKE_AUTH,
            response: false,
            count: 2,
        },
    ];
    s.initiate();
    s
}

#[test]
fn a_lossy_establishment_completes_within_the_default_half_open_timeout() {
    let mut s = lossy_establishment(Duration::from_secs(30));
    assert!(
        s.run_until(Duration::from_secs(120), Sim::both_established),
        "A: {:?}\nB: {:?}",
        s.nodes[0].events,
        s.nodes[1].events
    );
    assert!(s.elapsed() > Duration::from_secs(6), "the losses happened");
    assert_eq!(s.nodes[1].ep.stats().replayed_responses, 2);
    assert_eq!(deleted_reasons(&s, 1), vec![]);
    assert!(s.children_pair_up());
}

#[test]
fn a_replayed_ike_sa_init_answer_does_not_restart_the_half_open_timeout() {
    // With 5 s counted from B's first answer (0.01 s), the replay at 3 s
    // does not carry the half-open SA to the IKE_AUTH copy at about 6 s:
    // whoever resends an IKE_SA_INIT cannot keep a half-open SA alive.
    let mut s = lossy_establishment(Duration::from_secs(5));
    s.run_for(Duration::from_secs(7));
    assert_eq!(s.nodes[1].ep.stats().replayed_responses, 2);
    assert_eq!(deleted_reasons(&s, 1), vec![DeleteReason::HalfOpenTimeout]);
    assert!(!Sim::both_established(&s));
}

#[test]
fn a_request_that_overtakes_the_ike_auth_answer_waits_for_it() {
    // B's IKE_AUTH answer is lost; B is established and sends a liveness
    // check at once, which reaches A while A still waits for that answer.
    // A cannot answer it yet (its keys are not confirmed, the SA is not
    // established): it leaves it unanswered, and B's retransmission, after
    // A's own retransmitted IKE_AUTH got the answer, is answered.
    // Guards: no INVALID_SYNTAX answer (a failed exchange) to such a request.
    let (a, b) = configs(IKE_1, "aes256gcm16");
    let mut s = Sim::new(a, b, 11, LinkModel::clean());
    s.scripted_losses = vec![ScriptedLoss {
        from: 1,
        exchange: ExchangeType::IKE_AUTH,
        response: true,
        count: 1,
    }];
    s.initiate();
    assert!(s.run_until(Duration::from_secs(5), |s| s.nodes[1].established() == 1));
    assert_eq!(s.nodes[0].established(), 0, "A has not heard B's answer");
    let sa = sa_id(&s, 1);
    s.nodes[1]
        .ep
        .handle_command(s.now, Command::Dpd(sa))
        .expect("dpd");
    let answered = |s: &Sim| {
        s.wire.iter().any(|w| {
            w.from == 0
                && w.fate == Fate::Delivered
                && w.header.exchange == ExchangeType::INFORMATIONAL
                && w.header.is_response()
        })
    };
    assert!(
        s.run_until(Duration::from_secs(30), |s| s.both_established()
            && answered(s)),
        "A: {:?}\nB: {:?}",
        s.nodes[0].events,
        s.nodes[1].events
    );
    // A's only INFORMATIONAL answer went out after B's IKE_AUTH answer
    // reached it, and B had to retransmit its request for it.
    let auth_answer = s
        .wire
        .iter()
        .find(|w| {
            w.from == 1
                && w.fate == Fate::Delivered
                && w.header.exchange == ExchangeType::IKE_AUTH
                && w.header.is_response()
        })
        .map(|w| w.at)
        .expect("B's replayed IKE_AUTH answer reached A");
    let answers: Vec<_> = s
        .wire
        .iter()
        .filter(|w| {
            w.from == 0
                && w.fate == Fate::Sent
                && w.header.exchange == ExchangeType::INFORMATIONAL
                && w.header.is_response()
        })
        .collect();
    assert_eq!(answers.len(), 1, "{answers:?}");
    assert!(answers[0].at >= auth_answer, "{answers:?}");
    assert!(s.nodes[1].ep.stats().retransmits >= 1);
    assert_eq!(deleted_reasons(&s, 0), vec![]);
    assert_eq!(deleted_reasons(&s, 1), vec![]);
    assert!(s.children_pair_up());
    s.run_for(Duration::from_secs(60));
    assert!(s.both_established());
}
