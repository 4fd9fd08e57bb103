//! NAT traversal (RFC 7296 §2.23): detection, the move to UDP 4500 with
//! ESP encapsulation, keepalives, and a NAT mapping change IKE and the
//! CHILD_SAs' encapsulation follow.

use std::time::Duration;

use mobike_agent::engine::{Command, Event};

use crate::{
    IKE_1, delete_everything, sa_id,
    sim::{self, LinkModel, Sim, configs, ip},
};

#[test]
fn nat_is_detected_and_ike_and_esp_move_to_udp_4500() {
    let (mut a, b) = configs(IKE_1, "aes256gcm16");
    a.connections[0].local_addr = Some(sim::sock(ip("10.9.0.2"), 500));
    a.connections[0].mobike = false;
    let mut s = Sim::new(a, b, 13, LinkModel::clean()).with_nat(ip("10.9.0.2"));
    s.initiate();
    assert!(s.run_until(Duration::from_secs(10), Sim::both_established));
    assert!(s.nodes[0].events.iter().any(|e| matches!(
        e,
        Event::NatDetected {
            local_behind_nat: true,
            remote_behind_nat: false,
            ..
        }
    )));
    assert!(s.nodes[1].events.iter().any(|e| matches!(
        e,
        Event::NatDetected {
            local_behind_nat: false,
            remote_behind_nat: true,
            ..
        }
    )));
    let a_inst = s.nodes[0].kernel.values().next().unwrap();
    let b_inst = s.nodes[1].kernel.values().next().unwrap();
    let a_encap = a_inst.encap.expect("A encapsulates");
    let b_encap = b_inst.encap.expect("B encapsulates");
    assert_eq!((a_encap.local_port, a_encap.remote_port), (4500, 4500));
    assert_eq!(b_encap.local_port, 4500);
    assert_ne!(b_encap.remote_port, 4500, "B sees the NAT's port");
    // IKE on 4500 carries the non-ESP marker.
    let auth = s.nodes[0]
        .sent
        .iter()
        .find(|t| t.local.port() == 4500)
        .expect("sent on 4500");
    assert_eq!(&auth.payload[..4], &[0, 0, 0, 0]);
    // NAT keepalives from the node behind the NAT.
    s.run_for(Duration::from_secs(25));
    assert!(s.nodes[0].sent.iter().any(|t| t.payload == [0xff]));
    assert!(s.nodes[1].ep.stats().keepalives_received >= 1);
    assert!(s.both_established());
    delete_everything(&mut s);
}

#[test]
fn ike_and_esp_follow_a_nat_rebinding_on_the_next_authenticated_request() {
    // Without MOBIKE, B takes A's new public port, then address, from A's
    // next request (RFC 7296 §2.23), and its own requests get through.
    let (mut a, b) = configs(IKE_1, "aes256gcm16");
    a.connections[0].local_addr = Some(sim::sock(ip("10.9.0.2"), 500));
    a.connections[0].mobike = false;
    let mut s = Sim::new(a, b, 14, LinkModel::clean()).with_nat(ip("10.9.0.2"));
    s.initiate();
    assert!(s.run_until(Duration::from_secs(10), Sim::both_established));
    let (sa_a, sa_b) = (sa_id(&s, 0), sa_id(&s, 1));
    let a_local = s.nodes[0].ep.ike_sas()[0].path.local;
    assert_eq!(
        s.wire_addr(a_local),
        Some(s.nodes[1].ep.ike_sas()[0].path.remote)
    );
    for public in [None, Some(ip("198.51.100.9"))] {
        let before = s.nodes[1].ep.ike_sas()[0].path.remote;
        s.schedule(Duration::from_secs(1), "the NAT rebinds", move |s| {
            s.rebind_nat(0, public);
        });
        s.schedule(Duration::from_secs(2), "A checks liveness", move |s| {
            s.nodes[0]
                .ep
                .handle_command(s.now, Command::Dpd(sa_a))
                .expect("dpd");
        });
        assert!(
            s.run_until(Duration::from_secs(30), |s| {
                s.nodes[1].ep.ike_sas()[0].path.remote != before
            }),
            "{public:?}: B stayed on {before}"
        );
        let seen = s.wire_addr(a_local).expect("mapped again");
        assert_ne!(seen, before);
        assert_eq!(s.nodes[1].ep.ike_sas()[0].path.remote, seen);
        assert_eq!(seen.ip(), public.unwrap_or(before.ip()));
        // §2.23: the CHILD_SA's UDP encapsulation follows too, or ESP goes
        // to the stale mapping.
        assert!(s.paths_agree().is_ok(), "{public:?}: {:?}", s.paths_agree());
        // B's own liveness check reaches A through the new mapping.
        let answered = s.nodes[0].ep.ike_sas()[0].next_peer_request_id;
        s.nodes[1]
            .ep
            .handle_command(s.now, Command::Dpd(sa_b))
            .expect("dpd");
        assert!(s.run_until(Duration::from_secs(30), |s| {
            s.nodes[0].ep.ike_sas()[0].next_peer_request_id > answered
        }));
    }
    assert!(s.both_established());
    assert_eq!((sa_id(&s, 0), sa_id(&s, 1)), (sa_a, sa_b));
    assert!(s.nodes.iter().all(|n| n.ep.stats().retransmits == 0));
    delete_everything(&mut s);
}

#[test]
fn under_mobike_the_initiator_notices_a_nat_rebinding_and_updates() {
    // RFC 4555 §3.8: B does not follow A's new mapping by itself; A's
    // liveness checks carry NAT-D, B's answer shows the new mapping, and
    // A sends UPDATE_SA_ADDRESSES, after which IKE and ESP are on it.
    let (mut a, b) = configs(IKE_1, "aes256gcm16");
    a.connections[0].local_addr = Some(sim::sock(ip("10.9.0.2"), 500));
    let mut s = Sim::new(a, b, 15, LinkModel::clean()).with_nat(ip("10.9.0.2"));
    s.initiate();
    assert!(s.run_until(Duration::from_secs(10), Sim::both_established));
    let sa_a = sa_id(&s, 0);
    let a_local = s.nodes[0].ep.ike_sas()[0].path.local;
    let dpd = |s: &mut Sim| {
        let answered = s.nodes[1].ep.ike_sas()[0].next_peer_request_id;
        s.nodes[0]
            .ep
            .handle_command(s.now, Command::Dpd(sa_a))
            .expect("dpd");
        assert!(s.run_until(Duration::from_secs(30), |s| {
            s.nodes[1].ep.ike_sas()[0].next_peer_request_id > answered
                && s.nodes[0].ep.ike_sas()[0].next_request_id > 0
        }));
    };
    // A first check learns how B sees A.
    dpd(&mut s);
    for public in [None, Some(ip("198.51.100.9"))] {
        let before = s.nodes[1].ep.ike_sas()[0].path.remote;
        let changes = s.nodes[1]
            .events
            .iter()
            .filter(|e| matches!(e, Event::PathChanged { .. }))
            .count();
        s.rebind_nat(0, public);
        dpd(&mut s);
        let seen = s.wire_addr(a_local).expect("mapped again");
        assert_ne!(seen, before);
        assert!(
            s.run_until(Duration::from_secs(30), |s| {
                s.nodes[1].ep.ike_sas()[0].path.remote == seen && s.paths_agree().is_ok()
            }),
            "{public:?}: B on {}, A seen as {seen}: {:?}",
            s.nodes[1].ep.ike_sas()[0].path.remote,
            s.paths_agree()
        );
        let changed = s.nodes[1]
            .events
            .iter()
            .filter(|e| matches!(e, Event::PathChanged { .. }))
            .count();
        assert_eq!(changed, changes + 1, "{public:?}: moved by A's update");
    }
    assert!(s.both_established());
    delete_everything(&mut s);
}

#[test]
fn under_mobike_a_nat_rebinding_before_the_first_liveness_check_is_noticed() {
    // RFC 4555 §3.8: A's NAT maps A anew right after the IKE SA is up,
    // before any liveness check. A's first answer with NAT-D is already a
    // baseline, so the next liveness check shows the change and A updates.
    for seed in sim::seeds(4) {
        let (mut a, b) = configs(IKE_1, "aes256gcm16");
        a.connections[0].local_addr = Some(sim::sock(ip("10.9.0.2"), 500));
        let mut s = Sim::new(a, b, seed, LinkModel::clean()).with_nat(ip("10.9.0.2"));
        s.initiate();
        assert!(s.run_until(Duration::from_secs(10), Sim::both_established));
        let a_local = s.nodes[0].ep.ike_sas()[0].path.local;
        s.run_for(Duration::from_secs(1));
        let before = s.nodes[1].ep.ike_sas()[0].path.remote;
        s.rebind_nat(0, None);
        assert!(
            s.run_until(Duration::from_secs(120), |s| {
                let b = s.nodes[1].ep.ike_sas()[0].path.remote;
                b != before && s.wire_addr(a_local) == Some(b) && s.paths_agree().is_ok()
            }),
            "seed {seed}: B on {}, A seen as {:?}: {:?}",
            s.nodes[1].ep.ike_sas()[0].path.remote,
            s.wire_addr(a_local),
            s.paths_agree()
        );
        assert!(s.both_established());
        assert!(s.children_pair_up());
        delete_everything(&mut s);
    }
}

#[test]
fn a_kernel_nat_mapping_moves_ike_and_esp_without_mobike() {
    // XFRM_MSG_MAPPING (Command::NatMapping): B's kernel saw A's ESP from
    // the NAT's new mapping; without MOBIKE, B's IKE SA and ESP
    // encapsulation follow before any IKE request from A (RFC 7296 §2.23),
    // and B's own liveness check reaches A. Under MOBIKE nothing moves.
    for mobike in [false, true] {
        let (mut a, b) = configs(IKE_1, "aes256gcm16");
        a.connections[0].local_addr = Some(sim::sock(ip("10.9.0.2"), 500));
        a.connections[0].mobike = mobike;
        let mut s = Sim::new(a, b, 16, LinkModel::clean()).with_nat(ip("10.9.0.2"));
        s.initiate();
        assert!(s.run_until(Duration::from_secs(10), Sim::both_established));
        let before = s.nodes[1].ep.ike_sas()[0].path.remote;
        // What B's kernel would report after A's NAT rebound.
        let seen = sim::sock(before.ip(), before.port().wrapping_add(1));
        let inbound_spi = *s.nodes[1].kernel.keys().next().expect("a CHILD_SA");
        s.nodes[1]
            .ep
            .handle_command(
                s.now,
                Command::NatMapping {
                    inbound_spi,
                    remote: seen,
                },
            )
            .expect("mapping");
        s.run_for(Duration::ZERO);
        let b_path = s.nodes[1].ep.ike_sas()[0].path.remote;
        let encap = s.nodes[1].kernel[&inbound_spi].encap.expect("encapsulated");
        if mobike {
            assert_eq!(b_path, before, "MOBIKE: B does not follow by itself");
            assert_eq!(encap.remote_port, before.port());
        } else {
            assert_eq!(b_path, seen);
            assert_eq!(encap.remote_port, seen.port(), "ESP follows");
        }
    }
}
