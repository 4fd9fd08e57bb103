//! Two engines through the deterministic simulator (see `sim/mod.rs`):
//! SAs come up over clean and hostile networks, rekeys complete, DPD
//! notices a dead peer, failures are reported with the RFC's notify,
//! addresses and paths change under MOBIKE and NAT, the mobility manager
//! follows link changes, and nothing is left behind. One test binary; the tests are grouped by topic in the modules
//! below, the helpers they share are here.

mod sim;

mod addresses;
mod child;
mod dpd;
mod establish;
mod hostile;
mod mobike;
mod mobility;
mod nat;
mod network;
mod paths;
mod recovery;
mod rekey;
mod reload;
mod return_routability;
mod vip;

use std::time::Duration;

use mobike_agent::engine::{Command, DeleteReason, EndpointConfig, Event};
use sim::{LinkModel, Sim, configs};

const IKE_1: &str = "aes256gcm16-prfsha256-x25519";

const IKE_2: &str = "aes128gcm16-prfsha384-ecp384";

/// On a lossy link, enough retransmissions that an exchange practically
/// never fails from loss alone ((1 - 0.85²)^11 ≈ 7.6e-7): the tests are
/// about protocol convergence, DPD has its own test.
fn patient(cfg: &mut EndpointConfig, link: &LinkModel) {
    if link.loss_per_mille > 0 {
        for c in &mut cfg.connections {
            c.timers.retransmit_tries = 10;
        }
    }
}

/// Runs until `goal` holds, riding out outages the link alone explains.
///
/// With `patient` an exchange fails from loss alone with probability
/// (1 - 0.85²)^11 ≈ 7.6e-7, but a soak runs far more exchanges than that,
/// so once in a while every attempt of one exchange is lost: the requester
/// declares the peer dead as RFC 7296 §2.4 allows ("repeated attempts to
/// contact it have gone unanswered for a timeout period") and the other
/// end follows when its own requests go unanswered. Likewise the responder
/// drops a half-open SA after `half_open_timeout` (30 s, as strongSwan's
/// default), so about five IKE_AUTH requests lost in a row (0.15^5 ≈
/// 7.6e-5 per SA) end the attempt while the initiator still retransmits.
/// Such an outage is accepted only when both ends released everything and
/// [`Sim::explain_unreachable`] accounts for every `PeerUnreachable` with
/// the datagrams the link really lost; then A initiates again (the engine
/// does not restart on its own) and `goal` must still be reached. Returns
/// the number of outages.
fn reach_despite_loss_outages(
    s: &mut Sim,
    seed: u64,
    within: Duration,
    goal: impl Fn(&Sim) -> bool,
) -> usize {
    let mut outages = 0;
    let mut explained = 0;
    loop {
        let settled = s.run_until(within, |s| goal(s) || s.all_clean());
        let why = s
            .explain_unreachable()
            .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        if goal(s) {
            return outages;
        }
        assert!(
            settled && why.len() > explained && outages < 3,
            "seed {seed}: no convergence and no outage the link explains: {why:#?}\n\
             {:?} / {:?}\nA: {:#?}\nB: {:#?}",
            s.nodes[0].ep.ike_sas(),
            s.nodes[1].ep.ike_sas(),
            s.nodes[0].events,
            s.nodes[1].events
        );
        eprintln!("seed {seed}: outage explained by loss, initiating again: {why:#?}");
        explained = why.len();
        outages += 1;
        s.initiate();
    }
}

fn up(seed: u64, link: LinkModel) -> Sim {
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
    s
}

fn sa_id(s: &Sim, node: usize) -> u64 {
    s.nodes[node].ep.ike_sas()[0].id
}

/// A creates a second CHILD_SA from its first child config; true once both
/// sides have two.
fn add_a_child(s: &mut Sim) -> bool {
    let sa = sa_id(s, 0);
    s.nodes[0]
        .ep
        .handle_command(s.now, Command::CreateChildSa { sa, child: 0 })
        .expect("create child");
    s.run_until(Duration::from_secs(10), |s| {
        s.nodes.iter().all(|n| n.kernel.len() == 2)
    })
}

/// A rekeys its (only) CHILD_SA; true once both sides replaced it within
/// `within`.
fn rekey_a_child(s: &mut Sim, within: Duration) -> bool {
    let old = *s.nodes[0].kernel.keys().next().expect("a CHILD_SA");
    let sa = sa_id(s, 0);
    s.nodes[0]
        .ep
        .handle_command(
            s.now,
            Command::RekeyChildSa {
                sa,
                inbound_spi: old,
            },
        )
        .expect("rekey");
    s.run_until(within, |s| {
        s.nodes
            .iter()
            .all(|n| n.kernel.len() == 1 && !n.kernel.contains_key(&old))
    })
}

fn deleted_reasons(s: &Sim, node: usize) -> Vec<DeleteReason> {
    s.nodes[node]
        .events
        .iter()
        .filter_map(|e| match e {
            Event::IkeSaDeleted { reason, .. } => Some(*reason),
            _ => None,
        })
        .collect()
}

fn delete_everything(s: &mut Sim) {
    s.nodes[0]
        .ep
        .handle_command(s.now, Command::DeleteAll)
        .expect("delete");
    assert!(
        s.run_until(Duration::from_secs(900), Sim::all_clean),
        "state left after delete: {:?} / {:?}",
        s.nodes[0].ep.ike_sas(),
        s.nodes[1].ep.ike_sas()
    );
}

fn restarts(s: &Sim) -> usize {
    s.nodes[0]
        .events
        .iter()
        .filter(|e| matches!(e, Event::RestartDue { .. }))
        .count()
}
