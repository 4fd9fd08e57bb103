//! MOBIKE (RFC 4555): address updates move the IKE SA and its CHILD_SAs
//! on both sides, behind a NAT too, also after the old path died; answers go
//! where the request came from; no update without MOBIKE negotiated.

use std::{net::SocketAddr, time::Duration};

use mobike_agent::engine::{Command, Event};

use crate::{
    IKE_1, delete_everything, deleted_reasons, sa_id,
    sim::{self, LinkModel, Sim, configs, ip},
    up,
};

/// Schedules, `after` from now, the link event that A's address `to` is
/// where to go: the handler moves A's IKE SA there with
/// `Command::UpdateAddresses` towards `remote`, as an operator would.
fn move_a_on_link_event(s: &mut Sim, after: Duration, to: SocketAddr, remote: SocketAddr) {
    s.schedule(after, format!("A moves to {to}"), move |s| {
        let sa = sa_id(s, 0);
        s.nodes[0]
            .ep
            .handle_command(
                s.now,
                Command::UpdateAddresses {
                    sa,
                    local: to,
                    remote,
                    fallback: Vec::new(),
                },
            )
            .expect("update addresses");
    });
}

/// Both nodes reported a `PathChanged`.
fn path_changed(s: &Sim) -> bool {
    s.nodes.iter().all(|n| {
        n.events
            .iter()
            .any(|e| matches!(e, Event::PathChanged { .. }))
    })
}

#[test]
fn responses_go_back_to_where_the_request_came_from() {
    let mut s = up(93, LinkModel::clean());
    let sa = sa_id(&s, 0);
    s.delivered.clear();
    s.nodes[0]
        .ep
        .handle_command(s.now, Command::Dpd(sa))
        .unwrap();
    s.run_for(Duration::from_secs(1));
    let (_, dst, src, req) = s
        .delivered
        .iter()
        .find(|d| d.0 == 1)
        .cloned()
        .expect("captured");
    // The same (authentic) request again, as if the peer had moved to
    // another address: the cached answer goes there, the SA's own address
    // pair stays as it is.
    let moved = sim::sock(ip("198.51.100.7"), src.port());
    let path_before = s.nodes[1].ep.ike_sas()[0].path;
    while s.nodes[1].ep.poll_transmit().is_some() {}
    s.nodes[1].ep.handle_datagram(s.now, dst, moved, &req);
    let t = s.nodes[1].ep.poll_transmit().expect("replayed answer");
    assert_eq!((t.local, t.remote), (dst, moved));
    assert_eq!(s.nodes[1].ep.ike_sas()[0].path, path_before);
}

#[test]
fn mobike_update_sa_addresses_moves_ike_and_child_sas_on_both_sides() {
    let mut s = up(95, LinkModel::lossy());
    let sa = sa_id(&s, 0);
    // A's address changes: the old one is gone.
    let new_a = ip("192.0.2.11");
    s.remove_addr(0, ip(sim::A_ADDR));
    s.add_addr(0, new_a);
    let path = s.nodes[0].ep.ike_sas()[0].path;
    s.nodes[0]
        .ep
        .handle_command(
            s.now,
            Command::UpdateAddresses {
                sa,
                local: sim::sock(new_a, path.local.port()),
                remote: path.remote,
                fallback: Vec::new(),
            },
        )
        .unwrap();
    assert!(s.run_until(Duration::from_secs(300), path_changed));
    assert_eq!(
        s.nodes[1].ep.ike_sas()[0].path.remote.ip(),
        new_a,
        "B follows A"
    );
    assert!(s.nodes[0].kernel.values().all(|i| i.local == new_a));
    assert!(s.nodes[1].kernel.values().all(|i| i.remote == new_a));
    assert!(s.children_pair_up());
    // The SA keeps working on the new path.
    let before = s.nodes[1].ep.ike_sas()[0].next_peer_request_id;
    s.nodes[0]
        .ep
        .handle_command(s.now, Command::Dpd(sa))
        .unwrap();
    assert!(s.run_until(Duration::from_secs(300), |s| {
        s.nodes[1].ep.ike_sas()[0].next_peer_request_id > before
    }));
    delete_everything(&mut s);
}

#[test]
fn address_update_needs_mobike() {
    let (mut a, b) = configs(IKE_1, "aes256gcm16");
    a.connections[0].mobike = false;
    let mut s = Sim::new(a, b, 5, LinkModel::clean());
    s.initiate();
    assert!(s.run_until(Duration::from_secs(10), Sim::both_established));
    let sa = sa_id(&s, 0);
    let path = s.nodes[0].ep.ike_sas()[0].path;
    assert_eq!(
        s.nodes[0].ep.handle_command(
            s.now,
            Command::UpdateAddresses {
                sa,
                local: path.local,
                remote: path.remote,
                fallback: Vec::new(),
            }
        ),
        Err(mobike_agent::engine::CommandError::NoMobike(sa))
    );
}

#[test]
fn mobike_move_behind_a_nat_updates_the_encapsulation_ports() {
    let (mut a, b) = configs(IKE_1, "aes256gcm16");
    a.connections[0].local_addr = Some(sim::sock(ip("10.9.0.2"), 500));
    let mut s = Sim::new(a, b, 97, LinkModel::clean()).with_nat(ip("10.9.0.2"));
    s.initiate();
    assert!(s.run_until(Duration::from_secs(10), Sim::both_established));
    let old_port = s.nodes[1]
        .kernel
        .values()
        .next()
        .unwrap()
        .encap
        .expect("encap")
        .remote_port;
    // A moves to another private address behind the same NAT, which gives
    // it a new public port.
    let sa = sa_id(&s, 0);
    let new_local = sim::sock(ip("10.9.0.3"), 4500);
    s.remove_addr(0, ip("10.9.0.2"));
    s.add_addr(0, ip("10.9.0.3"));
    s.nats[0].inside.insert(ip("10.9.0.3"));
    let remote = s.nodes[0].ep.ike_sas()[0].path.remote;
    s.nodes[0]
        .ep
        .handle_command(
            s.now,
            Command::UpdateAddresses {
                sa,
                local: new_local,
                remote,
                fallback: Vec::new(),
            },
        )
        .unwrap();
    assert!(s.run_until(Duration::from_secs(30), path_changed));
    let b_sa = &s.nodes[1].ep.ike_sas()[0];
    assert!(b_sa.remote_behind_nat);
    let encap = s.nodes[1]
        .kernel
        .values()
        .next()
        .unwrap()
        .encap
        .expect("still encapsulated");
    assert_ne!(
        encap.remote_port, old_port,
        "B sends ESP to the NAT's new port"
    );
    assert_eq!(encap.remote_port, b_sa.path.remote.port());
    assert!(s.nodes[0].ep.ike_sas()[0].local_behind_nat);
    assert!(
        s.nodes[0]
            .kernel
            .values()
            .all(|i| i.local == ip("10.9.0.3"))
    );
    delete_everything(&mut s);
}

#[test]
fn an_operator_move_to_a_second_address_after_the_first_path_died_keeps_the_sas() {
    let mut s = up(96, LinkModel::clean());
    let (a, a2, b) = (ip(sim::A_ADDR), ip("192.0.2.11"), ip(sim::B_ADDR));
    s.add_addr(0, a2);
    let (sa_a, sa_b) = (sa_id(&s, 0), sa_id(&s, 1));
    let remote = s.nodes[0].ep.ike_sas()[0].path.remote;
    s.schedule(Duration::from_secs(5), "path A-B dies", move |s| {
        s.set_path_up(a, b, false);
    });
    move_a_on_link_event(&mut s, Duration::from_secs(8), sim::sock(a2, 4500), remote);
    assert!(s.run_until(Duration::from_secs(60), path_changed));
    assert_eq!(s.fired.len(), 2);
    s.paths_agree().unwrap();
    let (pa, pb) = (
        s.nodes[0].ep.ike_sas()[0].path,
        s.nodes[1].ep.ike_sas()[0].path,
    );
    assert_eq!((pa.local, pa.remote), (sim::sock(a2, 4500), remote));
    assert_eq!(pb.remote, sim::sock(a2, 4500), "B follows A");
    assert!(
        s.nodes[0]
            .kernel
            .values()
            .all(|k| (k.local, k.remote) == (a2, b))
    );
    assert!(
        s.nodes[1]
            .kernel
            .values()
            .all(|k| (k.local, k.remote) == (b, a2))
    );
    assert!(s.children_pair_up());
    // The same SAs keep working on the new path, the old one still dead.
    s.run_for(Duration::from_secs(300));
    assert!(s.both_established());
    assert_eq!((sa_id(&s, 0), sa_id(&s, 1)), (sa_a, sa_b));
    assert!(
        s.nodes[1].ep.ike_sas()[0].next_peer_request_id > 1,
        "DPD answered"
    );
    assert_eq!(deleted_reasons(&s, 0), vec![]);
    assert_eq!(deleted_reasons(&s, 1), vec![]);
    s.paths_agree().unwrap();
    delete_everything(&mut s);
}

#[test]
fn an_operator_move_from_ipv4_to_ipv6_when_the_address_is_lost() {
    let mut s = up(98, LinkModel::clean());
    let (a6, b6) = (ip("2001:db8::1"), ip("2001:db8::2"));
    s.add_addr(0, a6);
    s.add_addr(1, b6);
    s.schedule(Duration::from_secs(5), "A's IPv4 address goes", |s| {
        s.remove_addr(0, ip(sim::A_ADDR));
    });
    move_a_on_link_event(
        &mut s,
        Duration::from_secs(5),
        sim::sock(a6, 4500),
        sim::sock(b6, 4500),
    );
    assert!(s.run_until(Duration::from_secs(60), path_changed));
    s.paths_agree().unwrap();
    assert!(
        s.nodes[0]
            .kernel
            .values()
            .all(|k| (k.local, k.remote) == (a6, b6))
    );
    assert!(
        s.nodes[1]
            .kernel
            .values()
            .all(|k| (k.local, k.remote) == (b6, a6))
    );
    assert!(s.children_pair_up());
    s.run_for(Duration::from_secs(120));
    assert!(s.both_established());
    assert_eq!(deleted_reasons(&s, 0), vec![]);
    delete_everything(&mut s);
}

#[test]
fn an_operator_move_after_the_path_died_converges_over_a_lossy_link() {
    for seed in sim::seeds(10) {
        let mut s = up(seed, LinkModel::lossy());
        let (a, a2, b) = (ip(sim::A_ADDR), ip("192.0.2.11"), ip(sim::B_ADDR));
        s.add_addr(0, a2);
        let ended = |s: &Sim| [deleted_reasons(s, 0).len(), deleted_reasons(s, 1).len()];
        let ended_before = ended(&s);
        let remote = s.nodes[0].ep.ike_sas()[0].path.remote;
        s.schedule(Duration::from_secs(5), "path A-B dies", move |s| {
            s.set_path_up(a, b, false);
        });
        move_a_on_link_event(&mut s, Duration::from_secs(8), sim::sock(a2, 4500), remote);
        assert!(
            s.run_until(Duration::from_secs(600), |s| path_changed(s)
                && s.paths_agree().is_ok()
                && s.children_pair_up()),
            "seed {seed}: {:?}\nA: {:?}\nB: {:?}",
            s.paths_agree(),
            s.nodes[0].ep.ike_sas(),
            s.nodes[1].ep.ike_sas()
        );
        assert!(
            s.nodes[0]
                .kernel
                .values()
                .all(|k| (k.local, k.remote) == (a2, b))
        );
        assert!(
            s.nodes[1]
                .kernel
                .values()
                .all(|k| (k.local, k.remote) == (b, a2))
        );
        assert_eq!(ended(&s), ended_before, "seed {seed}: no IKE SA ended");
        delete_everything(&mut s);
    }
}
