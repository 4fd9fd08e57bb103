//! CHILD_SA management on an established IKE SA: adding and deleting
//! CHILD_SAs, and transport mode (RFC 7296 §1.3.1).

use std::time::Duration;

use mobike_agent::{
    engine::{Command, Event, Mode},
    proto::NotifyType,
};

use crate::{
    IKE_1, add_a_child, delete_everything, rekey_a_child, sa_id,
    sim::{self, LinkModel, Sim, configs},
    up,
};

#[test]
fn create_child_sa_adds_a_second_child() {
    let mut s = up(41, LinkModel::clean());
    assert!(add_a_child(&mut s));
    assert!(s.children_pair_up());
    delete_everything(&mut s);
}

#[test]
fn delete_child_command_removes_one_child_on_both_sides_and_keeps_the_ike_sa() {
    let mut s = up(42, LinkModel::lossy());
    let sa = sa_id(&s, 0);
    s.nodes[0]
        .ep
        .handle_command(s.now, Command::CreateChildSa { sa, child: 0 })
        .unwrap();
    assert!(s.run_until(Duration::from_secs(120), |s| {
        s.nodes.iter().all(|n| n.kernel.len() == 2)
    }));
    let (first, second) = {
        let c = &s.nodes[0].ep.ike_sas()[0].children;
        (c[0].0, c[1].0)
    };
    // An unknown SPI is refused by name.
    let err = s.nodes[0]
        .ep
        .handle_command(
            s.now,
            Command::DeleteChildSa {
                sa,
                inbound_spi: first ^ second ^ 1,
            },
        )
        .unwrap_err();
    assert!(err.to_string().contains("no CHILD_SA"), "{err}");
    s.nodes[0]
        .ep
        .handle_command(
            s.now,
            Command::DeleteChildSa {
                sa,
                inbound_spi: first,
            },
        )
        .unwrap();
    assert!(s.run_until(Duration::from_secs(120), |s| {
        s.nodes.iter().all(|n| n.kernel.len() == 1)
    }));
    assert_eq!(s.nodes[0].ep.ike_sas()[0].children[0].0, second);
    assert_eq!(s.nodes[0].ep.ike_sa_count(), 1);
    assert_eq!(s.nodes[1].ep.ike_sa_count(), 1);
    assert!(s.children_pair_up());
    delete_everything(&mut s);
}

/// A and B with host-to-host selectors (their own addresses) and the
/// given modes.
fn host_to_host(a_mode: Mode, b_mode: Mode) -> Sim {
    let ts = |s: &str| vec![mobike_agent::engine::parse_ts(s).unwrap()];
    let (mut a, mut b) = configs(IKE_1, "aes256gcm16");
    for (cfg, mode, local, remote) in [
        (&mut a, a_mode, sim::A_ADDR, sim::B_ADDR),
        (&mut b, b_mode, sim::B_ADDR, sim::A_ADDR),
    ] {
        let c = &mut cfg.connections[0];
        c.mobike = false;
        c.children[0].mode = mode;
        c.children[0].local_ts = ts(local);
        c.children[0].remote_ts = ts(remote);
    }
    Sim::new(a, b, 13, LinkModel::clean())
}

fn installed_modes(s: &Sim) -> Vec<Mode> {
    s.nodes
        .iter()
        .flat_map(|n| n.kernel.values().map(|i| i.mode))
        .collect()
}

#[test]
fn transport_mode_is_asked_for_granted_and_kept_across_rekeys() {
    let mut s = host_to_host(Mode::Transport, Mode::Transport);
    s.initiate();
    assert!(s.run_until(Duration::from_secs(10), Sim::both_established));
    assert_eq!(installed_modes(&s), [Mode::Transport, Mode::Transport]);
    assert!(s.children_pair_up());
    let info = &s.nodes[0].ep.ike_sas()[0].child_sas[0];
    assert_eq!(info.mode, Mode::Transport);
    // A rekey asks again (§1.3.3) and keeps the mode.
    assert!(rekey_a_child(&mut s, Duration::from_secs(30)));
    assert_eq!(installed_modes(&s), [Mode::Transport, Mode::Transport]);
    assert!(s.children_pair_up());
}

#[test]
fn transport_mode_needs_both_sides() {
    // A asks, B's child is a tunnel: B answers without the notify and it
    // is a tunnel on both sides (§1.3.1).
    let mut s = host_to_host(Mode::Transport, Mode::Tunnel);
    s.initiate();
    assert!(s.run_until(Duration::from_secs(10), Sim::both_established));
    assert_eq!(installed_modes(&s), [Mode::Tunnel, Mode::Tunnel]);
    assert!(s.children_pair_up());

    // A wants a tunnel, B's only child is transport mode: B refuses it,
    // the IKE SA stays without a CHILD_SA.
    let mut s = host_to_host(Mode::Tunnel, Mode::Transport);
    s.initiate();
    assert!(s.run_until(Duration::from_secs(10), |s| {
        s.nodes.iter().all(|n| n.established() == 1)
    }));
    s.run_for(Duration::from_secs(5));
    assert_eq!(installed_modes(&s), []);
    assert!(
        s.nodes[0].events.iter().any(|e| matches!(e,
            Event::ChildSaFailed { reason, .. } if *reason == NotifyType::NO_PROPOSAL_CHOSEN)),
        "{:?}",
        s.nodes[0].events
    );
}
