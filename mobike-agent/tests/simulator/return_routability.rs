//! The MOBIKE responder's return routability check (RFC 4555 §3.5, §5.2):
//! ESP moves to a new, unlisted peer address only after a check answered
//! from there; a copy of the update raced from a forged source never gets
//! ESP; NO_NATS_ALLOWED (§3.9); a MIGRATE the kernel refuses.

use std::{net::IpAddr, time::Duration};

use mobike_agent::engine::{Command, Event, KernelAction, MobikeVerify, Path};

use crate::{
    IKE_1, delete_everything, sa_id,
    sim::{self, LinkModel, Sim, configs, ip},
};

const NEW_A: &str = "192.0.2.11";

fn up_with(seed: u64, verify: MobikeVerify) -> Sim {
    let (a, mut b) = configs(IKE_1, "aes256gcm16");
    b.connections[0].mobike_verify = verify;
    let mut s = Sim::new(a, b, seed, LinkModel::clean());
    s.initiate();
    assert!(s.run_until(Duration::from_secs(10), Sim::both_established));
    s
}

/// A (which keeps its old address) asks to move to `to`.
fn a_moves_to(s: &mut Sim, to: IpAddr) {
    a_moves_to_or(s, to, &[]);
}

/// A asks to move to `to`, then to each of `fallback` in turn (same
/// ports, same peer address).
fn a_moves_to_or(s: &mut Sim, to: IpAddr, fallback: &[IpAddr]) {
    let sa = sa_id(s, 0);
    let path = s.nodes[0].ep.ike_sas()[0].path;
    let from = |a: IpAddr| Path {
        local: sim::sock(a, path.local.port()),
        remote: path.remote,
    };
    s.nodes[0]
        .ep
        .handle_command(
            s.now,
            Command::UpdateAddresses {
                sa,
                local: from(to).local,
                remote: path.remote,
                fallback: fallback.iter().map(|a| from(*a)).collect(),
            },
        )
        .expect("update addresses");
}

/// B's first return routability check is lost on the way to A.
fn lose_bs_first_check(s: &mut Sim) {
    s.scripted_losses = vec![crate::sim::ScriptedLoss {
        from: 1,
        exchange: mobike_agent::proto::ExchangeType::INFORMATIONAL,
        response: false,
        count: 1,
    }];
}

fn esp_remotes(s: &Sim, node: usize) -> Vec<IpAddr> {
    s.nodes[node].kernel.values().map(|k| k.remote).collect()
}

/// Whether `node` ever asked the kernel to move ESP towards `remote`.
fn esp_ever_sent_to(s: &Sim, node: usize, remote: IpAddr) -> bool {
    s.nodes[node]
        .kernel_log
        .iter()
        .any(|k| matches!(k, KernelAction::MigrateChildSa { to, .. } if to.1 == remote))
}

#[test]
fn esp_moves_to_an_unlisted_address_only_after_the_check() {
    for (verify, at_once) in [
        (MobikeVerify::Unlisted, false),
        (MobikeVerify::Always, false),
        (MobikeVerify::Never, true),
    ] {
        let mut s = up_with(31, verify);
        let old_a = ip(sim::A_ADDR);
        let new_a = ip(NEW_A);
        s.add_addr(0, new_a);
        a_moves_to(&mut s, new_a);
        // The step that moves B's IKE SA: ESP moved too only without a check.
        assert!(s.run_until(Duration::from_secs(10), |s| {
            s.nodes[1].ep.ike_sas()[0].path.remote.ip() == new_a
        }));
        let expect = if at_once { new_a } else { old_a };
        assert_eq!(esp_remotes(&s, 1), vec![expect], "{verify:?}");
        assert!(
            s.run_until(Duration::from_secs(10), |s| s.paths_agree().is_ok()),
            "{verify:?}: {:?}",
            s.paths_agree()
        );
        assert_eq!(esp_remotes(&s, 1), vec![new_a], "{verify:?}");
        assert!(s.children_pair_up());
        assert!(
            s.nodes[1]
                .events
                .iter()
                .any(|e| matches!(e, Event::PathChanged { .. }))
        );
        delete_everything(&mut s);
    }
}

#[test]
fn a_listed_address_is_not_checked() {
    // B has A's first address configured: back there from an unlisted
    // one (checked), ESP follows at once.
    let (a, mut b) = configs(IKE_1, "aes256gcm16");
    b.connections[0].remote_addr = Some(sim::sock(ip(sim::A_ADDR), 500));
    let mut s = Sim::new(a, b, 32, LinkModel::clean());
    s.initiate();
    assert!(s.run_until(Duration::from_secs(10), Sim::both_established));
    s.add_addr(0, ip(NEW_A));
    a_moves_to(&mut s, ip(NEW_A));
    assert!(s.run_until(Duration::from_secs(10), |s| {
        s.nodes[1].ep.ike_sas()[0].path.remote.ip() == ip(NEW_A)
    }));
    assert_eq!(esp_remotes(&s, 1), vec![ip(sim::A_ADDR)], "checked first");
    assert!(s.run_until(Duration::from_secs(10), |s| s.paths_agree().is_ok()));
    a_moves_to(&mut s, ip(sim::A_ADDR));
    assert!(s.run_until(Duration::from_secs(10), |s| {
        s.nodes[1].ep.ike_sas()[0].path.remote.ip() == ip(sim::A_ADDR)
    }));
    assert_eq!(esp_remotes(&s, 1), vec![ip(sim::A_ADDR)], "at once");
    delete_everything(&mut s);
}

#[test]
fn a_copy_of_the_update_raced_from_a_forged_source_never_gets_esp() {
    let forged = ip("203.0.113.66");
    for seed in sim::seeds(8) {
        for forged_first in [true, false] {
            let mut s = up_with(seed, MobikeVerify::Unlisted);
            let new_a = ip(NEW_A);
            s.add_addr(0, new_a);
            a_moves_to(&mut s, new_a);
            let forge = |s: &mut Sim| {
                let t = s.nodes[0]
                    .sent
                    .iter()
                    .rev()
                    .find(|t| t.local.ip() == new_a)
                    .cloned()
                    .expect("A's update");
                let from = sim::sock(forged, t.local.port());
                s.nodes[1]
                    .ep
                    .handle_datagram(s.now, t.remote, from, &t.payload);
            };
            if forged_first {
                // The attacker's copy overtakes the real one.
                s.run_for(Duration::ZERO);
                forge(&mut s);
                assert_eq!(s.nodes[1].ep.ike_sas()[0].path.remote.ip(), forged);
            } else {
                assert!(s.run_until(Duration::from_secs(10), |s| {
                    s.nodes[1].ep.ike_sas()[0].path.remote.ip() == new_a
                }));
                forge(&mut s);
            }
            assert!(
                s.run_until(Duration::from_secs(60), |s| s.paths_agree().is_ok()),
                "seed {seed}, forged first {forged_first}: {:?}",
                s.paths_agree()
            );
            assert!(
                !esp_ever_sent_to(&s, 1, forged),
                "seed {seed}: ESP went to the forged source"
            );
            assert_eq!(esp_remotes(&s, 1), vec![new_a]);
            assert_eq!(s.nodes[1].ep.ike_sas()[0].path.remote.ip(), new_a);
            assert!(s.children_pair_up());
            delete_everything(&mut s);
        }
    }
}

#[test]
fn no_nats_allowed_refuses_an_update_through_a_nat() {
    // RFC 4555 §3.9: A behind a NAT moves to a second address behind
    // another NAT; with NO_NATS_ALLOWED B refuses (UNEXPECTED_NAT_DETECTED)
    // and nothing moves; without it B follows. Without a NAT the notify
    // matches and B follows.
    for (no_nats, nat, follows) in [
        (true, true, false),
        (false, true, true),
        (true, false, true),
    ] {
        let (mut a, mut b) = configs(IKE_1, "aes256gcm16");
        b.connections[0].mobike_verify = MobikeVerify::Never;
        a.connections[0].no_nats = no_nats;
        let second = if nat {
            a.connections[0].local_addr = Some(sim::sock(ip("10.9.0.2"), 500));
            ip("10.9.0.3")
        } else {
            ip(NEW_A)
        };
        let mut s = Sim::new(a, b, 33, LinkModel::clean());
        if nat {
            s = s.with_nat(ip("10.9.0.2"));
            s.add_nat(ip("198.51.100.20"), &[second]);
        }
        s.initiate();
        assert!(s.run_until(Duration::from_secs(10), Sim::both_established));
        let before = s.nodes[1].ep.ike_sas()[0].path;
        s.add_addr(0, second);
        a_moves_to(&mut s, second);
        s.run_for(Duration::from_secs(5));
        let moved = s.nodes[1].ep.ike_sas()[0].path != before;
        assert_eq!(moved, follows, "no_nats {no_nats}, nat {nat}");
        assert_eq!(
            s.nodes[0].ep.ike_sas()[0].path.local.ip() == second,
            follows,
            "no_nats {no_nats}, nat {nat}: A's side"
        );
        assert!(s.paths_agree().is_ok(), "{:?}", s.paths_agree());
        assert!(s.both_established());
    }
}

#[test]
fn a_refused_migrate_is_replaced_on_the_new_addresses() {
    let mut s = up_with(34, MobikeVerify::Never);
    let old_spi = *s.nodes[1].kernel.keys().next().expect("a CHILD_SA");
    s.nodes[1].refuse_migrate = true;
    let new_a = ip(NEW_A);
    s.add_addr(0, new_a);
    a_moves_to(&mut s, new_a);
    assert!(
        s.run_until(Duration::from_secs(30), |s| {
            s.paths_agree().is_ok()
                && s.nodes[1].kernel.len() == 1
                && !s.nodes[1].kernel.contains_key(&old_spi)
                && s.children_pair_up()
        }),
        "{:?} {:?}",
        s.paths_agree(),
        s.nodes[1].kernel.keys().collect::<Vec<_>>()
    );
    assert!(s.nodes[1].events.iter().any(|e| matches!(
        e,
        Event::MigrateFailed {
            inbound_spi,
            replaced: true,
            ..
        } if *inbound_spi == old_spi
    )));
    assert_eq!(esp_remotes(&s, 1), vec![new_a]);
    delete_everything(&mut s);
}

#[test]
fn a_child_sa_made_during_the_check_stays_on_the_verified_pair_until_it_ends() {
    // B's first check is lost; A rekeys its CHILD_SA meanwhile: B installs
    // the new one on A's old (verified) address, and moves it with the
    // others once the retransmitted check is answered.
    let mut s = up_with(35, MobikeVerify::Unlisted);
    let (old_a, new_a) = (ip(sim::A_ADDR), ip(NEW_A));
    lose_bs_first_check(&mut s);
    s.add_addr(0, new_a);
    a_moves_to(&mut s, new_a);
    assert!(s.run_until(Duration::from_secs(10), |s| {
        s.nodes[1].ep.ike_sas()[0].path.remote.ip() == new_a
            && !s.nodes[0].ep.ike_sas()[0].updating_addresses
    }));
    assert!(crate::rekey_a_child(&mut s, Duration::from_secs(60)));
    let installs: Vec<IpAddr> = s.nodes[1]
        .kernel_log
        .iter()
        .filter_map(|k| match k {
            KernelAction::InstallChildSa(i) => Some(i.remote),
            _ => None,
        })
        .collect();
    assert_eq!(installs.len(), 2);
    assert!(
        s.run_until(Duration::from_secs(60), |s| s.paths_agree().is_ok()),
        "{:?}",
        s.paths_agree()
    );
    assert_eq!(esp_remotes(&s, 1), vec![new_a]);
    assert!(s.children_pair_up());
    // Installed during the check (its retransmission comes a timeout
    // later), on the verified address.
    let moved_at = s.nodes[1]
        .kernel_log
        .iter()
        .position(|k| matches!(k, KernelAction::MigrateChildSa { to, .. } if to.1 == new_a))
        .unwrap_or_else(|| panic!("ESP moved: {:#?}", s.nodes[1].kernel_log));
    let installed_at = s.nodes[1]
        .kernel_log
        .iter()
        .rposition(|k| matches!(k, KernelAction::InstallChildSa(_)))
        .expect("installed");
    assert!(installed_at < moved_at, "{:?}", s.nodes[1].kernel_log);
    assert_eq!(installs[1], old_a);
    delete_everything(&mut s);
}

#[test]
fn an_ike_rekey_during_the_check_carries_the_check_to_the_new_ike_sa() {
    // RFC 4555 §5.2: B's first check is lost and A rekeys the IKE SA
    // meanwhile (B itself cannot: its check holds its window). The new IKE
    // SA must not take A's unverified address as verified: B's CHILD_SAs
    // stay on A's old address until a check on the new IKE SA is answered
    // from the new one.
    let rekeyer = 0;
    let mut s = up_with(36, MobikeVerify::Unlisted);
    let new_a = ip(NEW_A);
    lose_bs_first_check(&mut s);
    s.add_addr(0, new_a);
    a_moves_to(&mut s, new_a);
    assert!(s.run_until(Duration::from_secs(10), |s| {
        s.nodes[1].ep.ike_sas()[0].return_routability.is_some()
            && !s.nodes[0].ep.ike_sas()[0].updating_addresses
    }));
    let old_sa = sa_id(&s, rekeyer);
    s.nodes[rekeyer]
        .ep
        .handle_command(s.now, Command::RekeyIkeSa(old_sa))
        .expect("rekey");
    assert!(
        s.run_until(Duration::from_secs(60), |s| {
            s.nodes.iter().all(|n| n.ep.ike_sa_count() == 1) && sa_id(s, rekeyer) != old_sa
        }),
        "rekeyer {rekeyer}"
    );
    let b = &s.nodes[1].ep.ike_sas()[0];
    assert_eq!(b.path.remote.ip(), new_a);
    assert!(
        b.return_routability.is_some(),
        "the new IKE SA has no check"
    );
    assert!(!esp_ever_sent_to(&s, 1, new_a), "ESP moved unchecked");
    assert!(
        s.run_until(Duration::from_secs(60), |s| s.paths_agree().is_ok()),
        "rekeyer {rekeyer}: {:?}",
        s.paths_agree()
    );
    assert_eq!(esp_remotes(&s, 1), vec![new_a]);
    assert!(s.nodes[1].ep.ike_sas()[0].return_routability.is_none());
    // ESP moved once, after the check the new IKE SA answered.
    let moves: Vec<_> = s.nodes[1]
        .kernel_log
        .iter()
        .filter(|k| matches!(k, KernelAction::MigrateChildSa { .. }))
        .collect();
    assert_eq!(moves.len(), 1, "rekeyer {rekeyer}: {moves:?}");
    assert!(
        s.nodes[1].ep.stats().return_routability_checks >= 2,
        "rekeyer {rekeyer}: {:?}",
        s.nodes[1].ep.stats()
    );
    assert!(s.children_pair_up());
    delete_everything(&mut s);
}

#[test]
fn unexpected_nat_detected_makes_the_initiator_try_the_next_pair() {
    // RFC 4555 §3.9: an update refused with UNEXPECTED_NAT_DETECTED may be
    // retried from other addresses. A, behind a NAT and sending
    // NO_NATS_ALLOWED, asks for a second address behind another NAT
    // (refused) with a direct one as fallback, which B takes.
    let (mut a, mut b) = configs(IKE_1, "aes256gcm16");
    b.connections[0].mobike_verify = MobikeVerify::Never;
    a.connections[0].no_nats = true;
    a.connections[0].local_addr = Some(sim::sock(ip("10.9.0.2"), 500));
    let (natted, direct) = (ip("10.9.0.3"), ip(NEW_A));
    let mut s = Sim::new(a, b, 37, LinkModel::clean()).with_nat(ip("10.9.0.2"));
    s.add_nat(ip("198.51.100.20"), &[natted]);
    s.initiate();
    assert!(s.run_until(Duration::from_secs(10), Sim::both_established));
    assert!(s.nodes[0].ep.ike_sas()[0].local_behind_nat);
    s.add_addr(0, natted);
    s.add_addr(0, direct);
    let path = s.nodes[0].ep.ike_sas()[0].path;
    a_moves_to_or(&mut s, natted, &[direct]);
    assert!(
        s.run_until(Duration::from_secs(30), |s| {
            s.nodes[0].ep.ike_sas()[0].path.local.ip() == direct && s.paths_agree().is_ok()
        }),
        "{:?}",
        s.paths_agree()
    );
    let failures: Vec<_> = s.nodes[0]
        .events
        .iter()
        .filter_map(|e| match e {
            Event::UpdateFailed { path, reason, .. } => Some((*path, *reason)),
            _ => None,
        })
        .collect();
    assert_eq!(
        failures,
        vec![(
            Path {
                local: sim::sock(natted, path.local.port()),
                remote: path.remote,
            },
            mobike_agent::engine::UpdateFailure::Refused(
                mobike_agent::proto::NotifyType::UNEXPECTED_NAT_DETECTED
            )
        )]
    );
    assert!(!s.nodes[0].ep.ike_sas()[0].local_behind_nat);
    assert_eq!(esp_remotes(&s, 1), vec![direct]);
    assert!(s.children_pair_up());
    delete_everything(&mut s);
}
