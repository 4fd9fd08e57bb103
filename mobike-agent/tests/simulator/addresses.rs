//! MOBIKE address lists (RFC 4555 §3.4, §3.6): each side lists its other
//! addresses in IKE_AUTH, a change of our usable addresses
//! (`Command::AnnounceAddresses`) sends the new list, each list replaces
//! the one before, an empty one is NO_ADDITIONAL_ADDRESSES, and a list out
//! of place is refused and counted.

use std::{net::IpAddr, time::Duration};

use mobike_agent::{
    engine::{Command, Event, SaId},
    proto::{self, ExchangeType, Notify, Payload},
};

use crate::{
    IKE_1, delete_everything, patient, sa_id,
    sim::{self, LinkModel, Sim, configs, ip},
};

/// The lists node `n` reported with `Event::PeerAddresses`, in order.
fn peer_lists(s: &Sim, n: usize) -> Vec<(SaId, Vec<IpAddr>)> {
    s.nodes[n]
        .events
        .iter()
        .filter_map(|e| match e {
            Event::PeerAddresses { sa, addrs } => Some((*sa, addrs.clone())),
            _ => None,
        })
        .collect()
}

fn announce(s: &mut Sim, node: usize, addrs: &[IpAddr]) {
    s.nodes[node]
        .ep
        .handle_command(
            s.now,
            Command::AnnounceAddresses {
                addrs: addrs.to_vec(),
                sas: Vec::new(),
            },
        )
        .expect("announce");
}

/// A with a second configured address (and B with an IPv6 one), both
/// established over `link`.
fn two_addresses(seed: u64, link: LinkModel) -> Sim {
    two_addresses_with(seed, link, |_| {})
}

/// [`two_addresses`], B's configuration changed by `b_conf` first.
fn two_addresses_with(
    seed: u64,
    link: LinkModel,
    b_conf: impl FnOnce(&mut mobike_agent::engine::EndpointConfig),
) -> Sim {
    let (mut a, mut b) = configs(IKE_1, "aes256gcm16");
    patient(&mut a, &link);
    patient(&mut b, &link);
    a.connections[0].alt_local_addrs = vec![ip("192.0.2.11")];
    b.connections[0].alt_local_addrs = vec![ip("2001:db8::2")];
    b_conf(&mut b);
    let mut s = Sim::new(a, b, seed, link);
    s.add_addr(0, ip("192.0.2.11"));
    s.add_addr(1, ip("2001:db8::2"));
    s.initiate();
    assert!(s.run_until(Duration::from_secs(300), Sim::both_established));
    s
}

#[test]
fn both_sides_list_their_other_addresses_in_ike_auth() {
    let s = two_addresses(401, LinkModel::clean());
    let (a, b) = (&s.nodes[0].ep.ike_sas()[0], &s.nodes[1].ep.ike_sas()[0]);
    // §3.4/§3.6: the address in use is in the IP header, not in the list.
    assert_eq!(a.local_addrs, vec![ip("192.0.2.11")]);
    assert_eq!(b.peer_addrs, vec![ip("192.0.2.11")], "the initiator's list");
    assert_eq!(b.local_addrs, vec![ip("2001:db8::2")]);
    assert_eq!(
        a.peer_addrs,
        vec![ip("2001:db8::2")],
        "the responder's list"
    );
    assert_eq!(a.remote_addrs, vec![ip(sim::B_ADDR)]);
    assert_eq!(peer_lists(&s, 1), vec![(b.id, vec![ip("192.0.2.11")])]);
    assert_eq!(peer_lists(&s, 0), vec![(a.id, vec![ip("2001:db8::2")])]);
}

#[test]
fn a_single_address_lists_nothing_in_ike_auth() {
    let mut s = crate::up(402, LinkModel::clean());
    for n in &s.nodes {
        let i = &n.ep.ike_sas()[0];
        assert!(i.local_addrs.is_empty() && i.peer_addrs.is_empty(), "{i:?}");
    }
    assert!(peer_lists(&s, 0).is_empty() && peer_lists(&s, 1).is_empty());
    assert_eq!(s.nodes[1].ep.stats().address_lists_refused, 0);
    delete_everything(&mut s);
}

#[test]
fn announced_lists_replace_the_previous_one_on_the_peer() {
    for seed in sim::seeds(10) {
        let link = if seed % 2 == 0 {
            LinkModel::clean()
        } else {
            LinkModel::lossy()
        };
        let mut s = two_addresses(seed, link);
        let (a1, a2, a3) = (ip(sim::A_ADDR), ip("192.0.2.11"), ip("2001:db8::1"));
        let b_sa = sa_id(&s, 1);
        s.add_addr(0, a3);
        let b_has = |want: Vec<IpAddr>| {
            move |s: &Sim| {
                s.nodes[1].ep.ike_sas()[0].peer_addrs == want
                    && s.nodes[0].ep.ike_sas()[0].local_addrs == want
            }
        };
        // A gains an IPv6 address: its new list goes to B.
        announce(&mut s, 0, &[a1, a2, a3]);
        assert!(
            s.run_until(Duration::from_secs(300), b_has(vec![a2, a3])),
            "seed {seed}: {:?}",
            s.nodes[1].ep.ike_sas()
        );
        // A loses a2: the new list replaces the old one (§3.6), a2 is gone.
        s.remove_addr(0, a2);
        announce(&mut s, 0, &[a1, a3]);
        assert!(
            s.run_until(Duration::from_secs(300), b_has(vec![a3])),
            "seed {seed}"
        );
        // Only the address in use is left: NO_ADDITIONAL_ADDRESSES empties
        // B's list (an INFORMATIONAL without a list would leave it).
        announce(&mut s, 0, &[a1]);
        assert!(
            s.run_until(Duration::from_secs(300), b_has(vec![])),
            "seed {seed}"
        );
        assert_eq!(
            peer_lists(&s, 1),
            vec![
                (b_sa, vec![a2]),
                (b_sa, vec![a2, a3]),
                (b_sa, vec![a3]),
                (b_sa, vec![]),
            ],
            "seed {seed}"
        );
        // The same set again changes no list: nothing is sent.
        let before = s.nodes[1].ep.ike_sas()[0].next_peer_request_id;
        announce(&mut s, 0, &[a1]);
        s.run_for(Duration::from_secs(5));
        assert_eq!(
            s.nodes[1].ep.ike_sas()[0].next_peer_request_id,
            before,
            "seed {seed}"
        );
        assert_eq!(s.nodes[1].ep.stats().address_lists_refused, 0);
        // Lists move nothing: no update, same path on both sides.
        assert!(s.nodes.iter().all(|n| {
            !n.events
                .iter()
                .any(|e| matches!(e, Event::PathChanged { .. }))
        }));
        s.paths_agree().unwrap();
        delete_everything(&mut s);
    }
}

#[test]
fn the_responder_announces_its_new_list_and_moves_nothing() {
    let mut s = crate::up(403, LinkModel::clean());
    let (b1, b2) = (ip(sim::B_ADDR), ip("198.51.100.2"));
    s.add_addr(1, b2);
    let path_a = s.nodes[0].ep.ike_sas()[0].path;
    let path_b = s.nodes[1].ep.ike_sas()[0].path;
    let a_sa = sa_id(&s, 0);
    announce(&mut s, 1, &[b1, b2]);
    assert!(s.run_until(Duration::from_secs(30), |s| {
        s.nodes[0].ep.ike_sas()[0].peer_addrs == vec![b2]
    }));
    assert_eq!(peer_lists(&s, 0), vec![(a_sa, vec![b2])]);
    // §3.6: the initiator decides; the responder sent no update.
    s.run_for(Duration::from_secs(5));
    assert_eq!(s.nodes[0].ep.ike_sas()[0].path, path_a);
    assert_eq!(s.nodes[1].ep.ike_sas()[0].path, path_b);
    assert!(!s.nodes[1].ep.ike_sas()[0].updating_addresses);
    assert!(s.nodes.iter().all(|n| {
        !n.events
            .iter()
            .any(|e| matches!(e, Event::PathChanged { .. }))
    }));
    delete_everything(&mut s);
}

#[test]
fn without_mobike_nothing_is_announced() {
    let (mut a, mut b) = configs(IKE_1, "aes256gcm16");
    a.connections[0].mobike = false;
    a.connections[0].alt_local_addrs = vec![ip("192.0.2.11")];
    b.connections[0].alt_local_addrs = vec![ip("198.51.100.2")];
    let mut s = Sim::new(a, b, 404, LinkModel::clean());
    s.initiate();
    assert!(s.run_until(Duration::from_secs(10), Sim::both_established));
    let before = s.nodes[1].ep.ike_sas()[0].next_peer_request_id;
    announce(&mut s, 0, &[ip(sim::A_ADDR), ip("192.0.2.12")]);
    s.run_for(Duration::from_secs(5));
    assert_eq!(s.nodes[1].ep.ike_sas()[0].next_peer_request_id, before);
    assert!(peer_lists(&s, 0).is_empty() && peer_lists(&s, 1).is_empty());
    for n in &s.nodes {
        let i = &n.ep.ike_sas()[0];
        assert!(i.peer_addrs.is_empty() && i.local_addrs.is_empty(), "{i:?}");
    }
    delete_everything(&mut s);
}

#[test]
fn a_list_in_ike_sa_init_is_refused_and_counted() {
    let (a, b) = configs(IKE_1, "aes256gcm16");
    let mut s = Sim::new(a, b, 405, LinkModel::clean());
    let msg = proto::Message {
        header: proto::Header {
            spi_i: 42,
            spi_r: 0,
            next_payload: proto::PayloadType::NONE,
            version: 0x20,
            exchange: ExchangeType::IKE_SA_INIT,
            flags: proto::flags::INITIATOR,
            message_id: 0,
            length: 0,
        },
        payloads: vec![Payload::Notify(Notify::for_additional_address(ip(
            "192.0.2.9",
        )))],
    };
    let (b_addr, a_addr) = (
        sim::sock(ip(sim::B_ADDR), 500),
        sim::sock(ip(sim::A_ADDR), 500),
    );
    s.nodes[1]
        .ep
        .handle_datagram(s.now, b_addr, a_addr, &msg.encode());
    assert_eq!(s.nodes[1].ep.stats().address_lists_refused, 1);
    assert_eq!(s.nodes[1].ep.ike_sa_count(), 0);
}

#[test]
fn an_announce_queued_behind_an_ike_rekey_goes_out_on_the_new_ike_sa() {
    let mut s = crate::up(406, LinkModel::clean());
    let a2 = ip("192.0.2.11");
    s.add_addr(0, a2);
    let old = sa_id(&s, 0);
    s.nodes[0]
        .ep
        .handle_command(s.now, Command::RekeyIkeSa(old))
        .unwrap();
    // Waits behind the rekey (window of one).
    announce(&mut s, 0, &[ip(sim::A_ADDR), a2]);
    assert!(
        s.run_until(Duration::from_secs(60), |s| {
            s.nodes.iter().all(|n| n.ep.ike_sa_count() == 1)
                && sa_id(s, 0) != old
                && s.nodes[1].ep.ike_sas()[0].peer_addrs == vec![a2]
        }),
        "{:?}",
        s.nodes[1].ep.ike_sas()
    );
    assert_eq!(s.nodes[0].ep.ike_sas()[0].local_addrs, vec![a2]);
    delete_everything(&mut s);
}

/// `AnnounceAddresses` with the list the endpoint already holds checks
/// only the IKE SAs it names: after A's IKE SA moved to a2, its list (the
/// usable addresses less the one in use) changed although the endpoint's
/// did not; unnamed, nothing is sent; named, B gets the new list.
#[test]
fn an_unchanged_list_is_checked_only_on_the_ike_sas_named() {
    // B knows A by its IPv4 address.
    let mut s = two_addresses_with(405, LinkModel::clean(), |b| {
        b.connections[0].remote_addr = Some(sim::sock(ip(sim::A_ADDR), 500));
    });
    let (a1, a2, a6) = (ip(sim::A_ADDR), ip("192.0.2.11"), ip("2001:db8::1"));
    let (a_sa, b_sa) = (sa_id(&s, 0), sa_id(&s, 1));
    s.add_addr(0, a6);
    announce(&mut s, 0, &[a1, a2, a6]);
    assert!(s.run_until(Duration::from_secs(30), |s| {
        s.nodes[1].ep.ike_sas()[0].peer_addrs == vec![a2, a6]
    }));
    // A tries IPv6, which B refuses (UNACCEPTABLE_ADDRESSES: not the
    // family it has A configured in). The update carried A's list as of
    // the IPv6 address; A stays on a1, where its list is another one.
    let path = s.nodes[0].ep.ike_sas()[0].path;
    s.nodes[0]
        .ep
        .handle_command(
            s.now,
            Command::UpdateAddresses {
                sa: a_sa,
                local: sim::sock(a6, path.local.port()),
                remote: sim::sock(ip("2001:db8::2"), path.remote.port()),
                fallback: Vec::new(),
            },
        )
        .expect("update addresses");
    assert!(s.run_until(Duration::from_secs(60), |s| {
        !s.nodes[0].ep.ike_sas()[0].updating_addresses
    }));
    assert_eq!(s.nodes[0].ep.ike_sas()[0].path.local.ip(), a1);
    assert_eq!(s.nodes[1].ep.ike_sas()[0].peer_addrs, vec![a1, a2]);
    let lists = peer_lists(&s, 1).len();
    let before = s.nodes[1].ep.ike_sas()[0].next_peer_request_id;

    // The same addresses, no IKE SA named: none is checked.
    announce(&mut s, 0, &[a1, a2, a6]);
    s.run_for(Duration::from_secs(5));
    assert_eq!(
        s.nodes[1].ep.ike_sas()[0].next_peer_request_id,
        before,
        "an IKE SA not named was checked"
    );

    // Named: its list as of a1 goes out.
    s.nodes[0]
        .ep
        .handle_command(
            s.now,
            Command::AnnounceAddresses {
                addrs: vec![a1, a2, a6],
                sas: vec![a_sa],
            },
        )
        .expect("announce");
    assert!(
        s.run_until(Duration::from_secs(30), |s| {
            s.nodes[1].ep.ike_sas()[0].peer_addrs == vec![a2, a6]
        }),
        "{:?}",
        s.nodes[1].ep.ike_sas()
    );
    assert_eq!(peer_lists(&s, 1)[lists..], [(b_sa, vec![a2, a6])]);
    delete_everything(&mut s);
}

#[test]
fn a_move_carries_the_new_list_in_its_update_and_no_list_exchange_follows() {
    for seed in sim::seeds(6) {
        let link = if seed % 2 == 0 {
            LinkModel::clean()
        } else {
            LinkModel::lossy()
        };
        let mut s = two_addresses(seed, link);
        let (a1, a2, a3) = (ip(sim::A_ADDR), ip("192.0.2.11"), ip("192.0.2.12"));
        s.add_addr(0, a3);
        let sa = sa_id(&s, 0);
        let b_requests = s.nodes[1].ep.ike_sas()[0].next_peer_request_id;
        // A loses the address in use: the new usable set, then the move.
        s.remove_addr(0, a1);
        s.nodes[0]
            .ep
            .handle_command(
                s.now,
                Command::UsableAddresses {
                    addrs: vec![a2, a3],
                },
            )
            .expect("usable addresses");
        let path = s.nodes[0].ep.ike_sas()[0].path;
        s.nodes[0]
            .ep
            .handle_command(
                s.now,
                Command::UpdateAddresses {
                    sa,
                    local: sim::sock(a2, path.local.port()),
                    remote: path.remote,
                    fallback: Vec::new(),
                },
            )
            .expect("update addresses");
        // B follows to a2 and has A's list as of a2 (a3 only), from the
        // update itself.
        assert!(
            s.run_until(Duration::from_secs(300), |s| {
                let b = &s.nodes[1].ep.ike_sas()[0];
                b.path.remote.ip() == a2 && b.peer_addrs == vec![a3]
            }),
            "seed {seed}: {:?}",
            s.nodes[1].ep.ike_sas()
        );
        // The announcement the caller makes after the move finds nothing
        // to send: one request reached B, the update.
        announce(&mut s, 0, &[a2, a3]);
        s.run_for(Duration::from_secs(5));
        assert_eq!(
            s.nodes[1].ep.ike_sas()[0].next_peer_request_id,
            b_requests + 1,
            "seed {seed}"
        );
        assert_eq!(
            peer_lists(&s, 1).last(),
            Some(&(sa_id(&s, 1), vec![a3])),
            "seed {seed}"
        );
        s.paths_agree().unwrap();
        delete_everything(&mut s);
    }
}
