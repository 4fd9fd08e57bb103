//! Virtual IPs (RFC 7296 §2.19): a road warrior asks, the gateway hands
//! out from its pools, the CHILD_SAs use the address, and leases are given
//! back.

use std::time::Duration;

use mobike_agent::{
    engine::{Command, Event},
    proto::NotifyType,
};

use crate::{
    IKE_1, add_a_child, delete_everything, patient, reach_despite_loss_outages, sa_id,
    sim::{self, LinkModel, Sim, configs, ip},
};

/// A asks for `vips` and has no local selectors; B hands out from `pools`
/// and takes any remote selector within 10.9.0.0/16 or fd09::/64.
fn road_warrior(vips: &[&str], pools: &[&str]) -> Sim {
    let (a, b) = road_warrior_configs(vips, pools);
    Sim::new(a, b, 14, LinkModel::clean())
}

fn road_warrior_configs(
    vips: &[&str],
    pools: &[&str],
) -> (
    mobike_agent::engine::EndpointConfig,
    mobike_agent::engine::EndpointConfig,
) {
    let (mut a, mut b) = configs(IKE_1, "aes256gcm16");
    let ca = &mut a.connections[0];
    ca.vips = vips.iter().map(|v| ip(v)).collect();
    ca.children[0].local_ts.clear();
    let cb = &mut b.connections[0];
    cb.pools = pools
        .iter()
        .map(|p| mobike_agent::engine::vip::AddrPool::parse(p).unwrap())
        .collect();
    cb.children[0].remote_ts = ["10.9.0.0/16", "fd09::/64"]
        .iter()
        .map(|t| mobike_agent::engine::parse_ts(t).unwrap())
        .collect();
    (a, b)
}

fn selectors(ts: &[mobike_agent::proto::TrafficSelector]) -> Vec<String> {
    ts.iter()
        .map(|t| format!("{}-{}", t.start_addr, t.end_addr))
        .collect()
}

#[test]
fn a_road_warrior_gets_a_virtual_ip_and_its_child_sa_uses_it() {
    let mut s = road_warrior(&["0.0.0.0"], &["10.9.0.0/24"]);
    s.initiate();
    assert!(s.run_until(Duration::from_secs(10), Sim::both_established));
    let vip = ip("10.9.0.1");
    assert!(
        s.nodes[0].events.iter().any(|e| matches!(e,
            Event::VirtualIps { addrs, .. } if addrs == &vec![vip])),
        "{:?}",
        s.nodes[0].events
    );
    let (a, b) = (&s.nodes[0].ep.ike_sas()[0], &s.nodes[1].ep.ike_sas()[0]);
    assert_eq!(
        (a.vips.clone(), b.peer_vips.clone()),
        (vec![vip], vec![vip])
    );
    // The CHILD_SA is the virtual IP's, on both sides.
    let ka = s.nodes[0].kernel.values().next().unwrap();
    let kb = s.nodes[1].kernel.values().next().unwrap();
    assert_eq!(selectors(&ka.local_ts), ["10.9.0.1-10.9.0.1"]);
    assert_eq!(selectors(&kb.remote_ts), ["10.9.0.1-10.9.0.1"]);
    assert!(s.children_pair_up());

    // A second CHILD_SA proposes the address it has.
    assert!(add_a_child(&mut s));
    assert!(
        s.nodes[1]
            .kernel
            .values()
            .all(|k| selectors(&k.remote_ts) == ["10.9.0.1-10.9.0.1"])
    );

    // An IKE SA rekey keeps the address with the connection.
    let b_sa = sa_id(&s, 1);
    s.nodes[1]
        .ep
        .handle_command(s.now, Command::RekeyIkeSa(b_sa))
        .unwrap();
    assert!(s.run_until(Duration::from_secs(30), |s| sa_id(s, 1) != b_sa
        && s.nodes.iter().all(|n| n.ep.ike_sa_count() == 1)));
    assert_eq!(s.nodes[0].ep.ike_sas()[0].vips, vec![vip]);
    assert_eq!(s.nodes[1].ep.ike_sas()[0].peer_vips, vec![vip]);

    // Gone and back (same identity): the same address again.
    delete_everything(&mut s);
    s.initiate();
    assert!(s.run_until(Duration::from_secs(10), Sim::both_established));
    assert_eq!(s.nodes[0].ep.ike_sas()[0].vips, vec![vip]);
}

#[test]
fn virtual_ips_survive_loss_and_rekeys_and_are_given_back() {
    // Over a lossy link with periodic IKE and CHILD_SA rekeys from both
    // sides: the road warrior keeps its one address, the CHILD_SAs stay
    // the address's, and after the delete the gateway holds no lease.
    for seed in sim::seeds(15) {
        let (mut a, mut b) = road_warrior_configs(&["0.0.0.0"], &["10.9.0.0/24"]);
        for (n, c) in [&mut a, &mut b].into_iter().enumerate() {
            patient(c, &LinkModel::lossy());
            let n = n as u64;
            c.connections[0].timers.ike_rekey_time = Some(Duration::from_secs(90 + 20 * n));
            c.connections[0].children[0].rekey_time = Some(Duration::from_secs(50 + 15 * n));
        }
        let mut s = Sim::new(a, b, seed, LinkModel::lossy());
        s.initiate();
        reach_despite_loss_outages(
            &mut s,
            seed,
            Duration::from_secs(900),
            Sim::both_established,
        );
        s.run_for(Duration::from_secs(400));
        reach_despite_loss_outages(&mut s, seed, Duration::from_secs(900), |s| {
            s.both_established() && s.nodes.iter().all(|n| n.ep.ike_sa_count() == 1)
        });
        let vip = ip("10.9.0.1");
        assert_eq!(s.nodes[0].ep.ike_sas()[0].vips, vec![vip], "seed {seed}");
        assert_eq!(
            s.nodes[1].ep.ike_sas()[0].peer_vips,
            vec![vip],
            "seed {seed}"
        );
        assert_eq!(s.nodes[1].ep.leases_online(), 1, "seed {seed}");
        for k in s.nodes[1].kernel.values() {
            assert_eq!(
                selectors(&k.remote_ts),
                ["10.9.0.1-10.9.0.1"],
                "seed {seed}"
            );
        }
        assert!(s.children_pair_up(), "seed {seed}");
        delete_everything(&mut s);
    }
}

#[test]
fn a_peer_gets_one_virtual_ip_per_family_however_many_it_asks_for() {
    let mut s = road_warrior(
        &["0.0.0.0", "10.9.0.5", "0.0.0.0", "10.9.0.7"],
        &["10.9.0.0/24"],
    );
    s.initiate();
    assert!(s.run_until(Duration::from_secs(10), Sim::both_established));
    assert_eq!(s.nodes[1].ep.ike_sas()[0].peer_vips.len(), 1);
    assert_eq!(s.nodes[1].ep.leases_online(), 1);
    assert_eq!(s.nodes[0].ep.ike_sas()[0].vips.len(), 1);
}

#[test]
fn no_address_of_the_family_asked_for_is_internal_address_failure() {
    // A wants IPv6, B only has an IPv4 pool: the IKE SA comes up without
    // a CHILD_SA (RFC 7296 §3.15.4).
    let mut s = road_warrior(&["::"], &["10.9.0.0/24"]);
    s.initiate();
    assert!(s.run_until(Duration::from_secs(10), |s| {
        s.nodes.iter().all(|n| n.established() == 1)
    }));
    s.run_for(Duration::from_secs(5));
    assert!(s.nodes.iter().all(|n| n.kernel.is_empty()));
    assert!(
        s.nodes[0].events.iter().any(|e| matches!(e,
            Event::ChildSaFailed { reason, .. } if *reason == NotifyType::INTERNAL_ADDRESS_FAILURE)),
        "{:?}",
        s.nodes[0].events
    );
    // Both families asked for, one pool: the one there is.
    let mut s = road_warrior(&["0.0.0.0", "::"], &["fd09::/120"]);
    s.initiate();
    assert!(s.run_until(Duration::from_secs(10), Sim::both_established));
    assert_eq!(s.nodes[0].ep.ike_sas()[0].vips, vec![ip("fd09::1")]);
    let ka = s.nodes[0].kernel.values().next().unwrap();
    assert_eq!(selectors(&ka.local_ts), ["fd09::1-fd09::1"]);
}
