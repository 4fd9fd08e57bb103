//! The mobility manager on A (three local addresses, each on its own
//! interface: Ethernet, Wi-Fi, WWAN) driving the engine through link
//! events at virtual times: a lost link, an address removed, a predicted
//! loss (make-before-break), a silent loss only the engine's unanswered
//! retransmissions reveal, random sequences of all of these, and a
//! flapping link. The SA ends on a working path with both sides and the
//! kernel models agreeing, and the number of moves stays bounded.

use std::{net::IpAddr, time::Duration};

use mobike_agent::{
    engine::{Event, IkeSaInfo, SaId},
    mobility::{IfaceKind, MoveReason, config::MobilityConfig},
};

use crate::{
    IKE_1, sa_id,
    sim::{self, Fate, LinkModel, Rng, Sim, configs, ip},
};

const ETH: u32 = 2;
const WLAN: u32 = 3;
const WWAN: u32 = 4;
const IFACES: [u32; 3] = [ETH, WLAN, WWAN];

/// A's address on interface `index`.
fn addr(index: u32) -> IpAddr {
    match index {
        ETH => ip(sim::A_ADDR),
        WLAN => ip("198.51.100.1"),
        WWAN => ip("203.0.113.1"),
        _ => unreachable!("no interface {index}"),
    }
}

/// A with its mobility manager and three interfaces, B, and an IKE SA
/// between them on A's Ethernet address, B told of A's address list.
fn mobile(seed: u64, link: LinkModel) -> Sim {
    let (a, b) = configs(IKE_1, "aes256gcm16");
    let mut s = Sim::new(a, b, seed, link);
    s.with_mobility(
        0,
        MobilityConfig::default(),
        &[
            (ETH, "eth0", IfaceKind::Ethernet, &[addr(ETH)]),
            (WLAN, "wlan0", IfaceKind::Wlan, &[addr(WLAN)]),
            (WWAN, "wwan0", IfaceKind::Wwan, &[addr(WWAN)]),
        ],
    );
    s.initiate();
    assert!(
        s.run_until(Duration::from_secs(10), |s| {
            s.both_established() && s.nodes[1].ep.ike_sas()[0].peer_addrs.len() == 2
        }),
        "seed {seed}: no SA with A's address list: {:#?}",
        s.nodes[1].ep.ike_sas()
    );
    assert_eq!(a_info(&s).path.local.ip(), addr(ETH));
    s
}

fn a_info(s: &Sim) -> IkeSaInfo {
    s.nodes[0].ep.ike_sas().remove(0)
}

fn spis(s: &Sim) -> Vec<u32> {
    s.nodes[0].kernel.keys().copied().collect()
}

/// A's completed moves (the engine's `PathChanged`).
fn moves(s: &Sim) -> usize {
    s.nodes[0]
        .events
        .iter()
        .filter(|e| matches!(e, Event::PathChanged { .. }))
        .count()
}

/// The IKE SA `sa` with the CHILD_SAs `spis` is established on A and B,
/// on a pair that works now, with no update under way, and both sides and
/// both kernel models agree on it.
fn on_working_path(s: &Sim, sa: SaId, spis: &[u32]) -> Result<(), String> {
    let a = s.nodes[0].ep.ike_sas();
    let [info] = a.as_slice() else {
        return Err(format!("A has {} IKE SAs", a.len()));
    };
    if info.id != sa || info.state != "established" {
        return Err(format!(
            "A's IKE SA is {:#018x} ({}), not {sa:#018x}",
            info.id, info.state
        ));
    }
    if info.updating_addresses {
        return Err(format!("A is still moving to {:?}", info.path));
    }
    if s.nodes[1].established() != 1 {
        return Err("B has no established IKE SA".into());
    }
    let (local, remote) = (info.path.local.ip(), info.path.remote.ip());
    if !s.path_up(local, remote) || !s.nodes[0].has_addr(local) {
        return Err(format!("A is on {local} -> {remote}, which does not work"));
    }
    s.paths_agree()?;
    if !s.children_pair_up() {
        return Err("the CHILD_SAs of A and B do not pair up".into());
    }
    let now = self::spis(s);
    if now != spis {
        return Err(format!("CHILD_SAs {now:x?}, not {spis:x?}"));
    }
    Ok(())
}

/// The reasons of the moves A's manager completed.
fn reasons(s: &Sim) -> Vec<MoveReason> {
    s.mobility(0)
        .moves
        .iter()
        .map(|(_, _, t)| t.reason)
        .collect()
}

#[test]
fn a_lost_link_moves_the_sa_to_a_working_path_and_back_when_it_returns() {
    let mut s = mobile(1, LinkModel::clean());
    let (sa, spis) = (sa_id(&s, 0), spis(&s));
    s.set_link_up(0, ETH, false);
    assert!(
        s.run_until(Duration::from_secs(5), |s| on_working_path(s, sa, &spis)
            .is_ok()),
        "{:?}",
        on_working_path(&s, sa, &spis)
    );
    assert_ne!(a_info(&s).path.local.ip(), addr(ETH));
    assert_eq!(reasons(&s), [MoveReason::LinkDown]);
    // Wi-Fi beats WWAN by more than the hysteresis: A ends there.
    s.run_for(Duration::from_secs(10));
    on_working_path(&s, sa, &spis).unwrap();
    assert_eq!(a_info(&s).path.local.ip(), addr(WLAN));
    assert!(moves(&s) <= 2, "{} moves", moves(&s));
    // Ethernet back: A returns to it once the dwell time is over.
    s.set_link_up(0, ETH, true);
    let back = s.run_until(Duration::from_secs(10), |s| {
        a_info(s).path.local.ip() == addr(ETH) && on_working_path(s, sa, &spis).is_ok()
    });
    assert!(back, "{:?} {:?}", a_info(&s).path, reasons(&s));
    assert_eq!(reasons(&s).last(), Some(&MoveReason::Better));
}

#[test]
fn a_removed_address_moves_the_sa_and_a_new_one_is_taken_up() {
    let mut s = mobile(2, LinkModel::clean());
    let (sa, spis) = (sa_id(&s, 0), spis(&s));
    s.remove_iface_addr(0, addr(ETH));
    assert!(
        s.run_until(Duration::from_secs(5), |s| on_working_path(s, sa, &spis)
            .is_ok()),
        "{:?}",
        on_working_path(&s, sa, &spis)
    );
    assert_eq!(reasons(&s), [MoveReason::AddressGone]);
    // A new Ethernet address: A moves to it after the dwell time.
    let new = ip("192.0.2.21");
    s.add_iface_addr(0, ETH, new);
    let there = s.run_until(Duration::from_secs(10), |s| {
        a_info(s).path.local.ip() == new && on_working_path(s, sa, &spis).is_ok()
    });
    assert!(there, "{:?} {:?}", a_info(&s).path, reasons(&s));
    assert!(moves(&s) <= 3, "{} moves: {:?}", moves(&s), reasons(&s));
}

#[test]
fn link_going_down_moves_the_sa_before_the_link_goes() {
    let mut s = mobile(3, LinkModel::clean());
    let (sa, spis) = (sa_id(&s, 0), spis(&s));
    let ahead = Duration::from_millis(500);
    s.link_going_down(0, ETH, ahead);
    // Up to the instant before the cut: moved, and both sides agree.
    s.run_for(ahead - Duration::from_millis(1));
    assert!(s.path_up(addr(ETH), ip(sim::B_ADDR)), "cut too early");
    on_working_path(&s, sa, &spis).unwrap();
    assert_eq!(a_info(&s).path.local.ip(), addr(WLAN));
    assert_eq!(reasons(&s), [MoveReason::GoingDown]);
    let (sent, wire) = (s.nodes[0].sent.len(), s.wire.len());
    s.run_for(Duration::from_secs(40));
    assert!(!s.path_up(addr(ETH), ip(sim::B_ADDR)), "never cut");
    on_working_path(&s, sa, &spis).unwrap();
    // Nothing went out of the old link after the cut, and nothing of A's
    // was lost (the DPD after 30 s idle goes on the new pair).
    let old: Vec<_> = s.nodes[0].sent[sent..]
        .iter()
        .filter(|t| t.local.ip() == addr(ETH))
        .collect();
    assert!(
        old.is_empty(),
        "sent on the old link after the cut: {old:?}"
    );
    let lost: Vec<_> = s.wire[wire..]
        .iter()
        .filter(|w| w.fate == Fate::Lost)
        .collect();
    assert!(lost.is_empty(), "lost after the cut: {lost:?}");
    assert!(s.wire[wire..].iter().any(|w| w.from == 0), "A sent nothing");
    assert_eq!(moves(&s), 1);
}

#[test]
fn a_silent_loss_moves_the_sa_after_the_first_unanswered_retransmission() {
    let mut s = mobile(4, LinkModel::clean());
    let (sa, spis) = (sa_id(&s, 0), spis(&s));
    let t0 = s.now;
    s.set_silent_loss(addr(ETH), true);
    // Nothing tells the manager: only a request going unanswered (the
    // next DPD, 30 s after A last heard from B) shows it.
    let moved = s.run_until(Duration::from_secs(60), |s| {
        a_info(s).path.local.ip() != addr(ETH) && on_working_path(s, sa, &spis).is_ok()
    });
    assert!(moved, "{:?} {:#?}", a_info(&s).path, s.nodes[0].events);
    assert_eq!(reasons(&s), [MoveReason::Unresponsive]);
    let decided = s.mobility(0).moves[0].2.decided;
    // A's requests lost before the decision: the request and at least its
    // first retransmission, fewer than the engine sends before it gives up.
    let lost = s
        .wire
        .iter()
        .filter(|w| {
            w.from == 0
                && w.fate == Fate::Lost
                && !w.header.is_response()
                && (t0..=decided).contains(&w.at)
        })
        .count();
    let tries = s.nodes[0].ep.config().connections[0]
        .timers
        .retransmit_tries as usize;
    assert!(
        (2..=tries).contains(&lost),
        "moved after {lost} lost sends of a request (gives up after {})",
        tries + 1
    );
    assert!(
        s.nodes[0]
            .events
            .iter()
            .any(|e| matches!(e, Event::Unresponsive { .. })),
        "no Unresponsive"
    );
    s.run_for(Duration::from_secs(60));
    on_working_path(&s, sa, &spis).unwrap();
    assert_eq!(moves(&s), 1, "{:?}", reasons(&s));
}

#[test]
fn a_flapping_link_does_not_make_a_move_storm() {
    let mut s = mobile(5, LinkModel::clean());
    let (sa, spis) = (sa_id(&s, 0), spis(&s));
    // Ethernet down and up every 200 ms for 10 s; Wi-Fi and WWAN stay.
    let period = Duration::from_millis(200);
    let flaps = 50u32;
    for k in 0..flaps {
        s.schedule(period * (k + 1), "flap", move |s| {
            s.set_link_up(0, ETH, k % 2 == 1)
        });
    }
    s.run_for(period * flaps);
    let during = moves(&s);
    s.run_for(Duration::from_secs(60));
    on_working_path(&s, sa, &spis).unwrap();
    // Back on Ethernet (up since the last flap) after the dwell time.
    assert_eq!(a_info(&s).path.local.ip(), addr(ETH));
    // A voluntary move back to Ethernet waits the dwell time on the other
    // link: at most one there and one away per dwell period, plus the first
    // forced move and the final return.
    let dwell = MobilityConfig::default().policy.min_dwell;
    let bound = 2 * (period * flaps).as_millis() / dwell.as_millis() + 2;
    let total = moves(&s);
    eprintln!("flapping: {flaps} link changes, {during} moves during, {total} in all");
    assert!(
        total as u128 <= bound,
        "{total} moves for {flaps} flaps (bound {bound}): {:?}",
        reasons(&s)
    );
}

/// What happens to one of A's interfaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    LinkDown,
    LinkUp,
    /// Link_Going_Down; the link goes this long after.
    Predicted(Duration),
    AddrRemoved,
    AddrAdded,
    /// The paths from its address are cut beyond the host: no event.
    SilentLoss,
    SilentBack,
}

/// How an interface is, as the plan knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Up,
    Down,
    Gone,
    Silent,
}

impl Change {
    fn after(self) -> State {
        match self {
            Change::LinkUp | Change::AddrAdded | Change::SilentBack => State::Up,
            Change::LinkDown | Change::Predicted(_) => State::Down,
            Change::AddrRemoved => State::Gone,
            Change::SilentLoss => State::Silent,
        }
    }

    fn apply(self, s: &mut Sim, index: u32) {
        let a = addr(index);
        match self {
            Change::LinkDown => s.set_link_up(0, index, false),
            Change::LinkUp => s.set_link_up(0, index, true),
            Change::Predicted(within) => s.link_going_down(0, index, within),
            Change::AddrRemoved => s.remove_iface_addr(0, a),
            Change::AddrAdded => s.add_iface_addr(0, index, a),
            Change::SilentLoss => s.set_silent_loss(a, true),
            Change::SilentBack => s.set_silent_loss(a, false),
        }
    }
}

/// A random sequence of changes on A's three interfaces: (time from the
/// start, interface, change). At least one interface works at all times,
/// except for outages of a few seconds after which one comes back.
fn plan(rng: &mut Rng, silent: bool) -> Vec<(Duration, u32, Change)> {
    let mut state = [State::Up; 3];
    let mut out = Vec::new();
    let mut t = Duration::from_secs(1);
    let mut outage = false;
    for _ in 0..8 + rng.below(9) {
        let up = state.iter().filter(|s| **s == State::Up).count();
        // Within an outage the next change brings a link back soon.
        let gap = if outage {
            500 + rng.below(4_500)
        } else {
            100 + rng.below(9_900)
        };
        t += Duration::from_millis(gap);
        let mut options = Vec::new();
        for (i, st) in state.iter().enumerate() {
            let changes: &[Change] = match st {
                State::Down => &[Change::LinkUp],
                State::Gone => &[Change::AddrAdded],
                State::Silent => &[Change::SilentBack],
                State::Up if outage || (up == 1 && !rng.chance(250)) => &[],
                State::Up => &[
                    Change::LinkDown,
                    Change::Predicted(Duration::from_millis(100 + rng.below(900))),
                    Change::AddrRemoved,
                    Change::SilentLoss,
                ][..if silent { 4 } else { 3 }],
            };
            options.extend(changes.iter().map(|c| (i, *c)));
        }
        let (i, change) = options[rng.below(options.len() as u64) as usize];
        state[i] = change.after();
        out.push((t, IFACES[i], change));
        if let Change::Predicted(within) = change {
            // Nothing else happens to it before it goes.
            t += within;
        }
        outage = !state.contains(&State::Up);
    }
    if outage {
        let i = state
            .iter()
            .position(|s| *s != State::Up)
            .expect("one down");
        let change = match state[i] {
            State::Down => Change::LinkUp,
            State::Gone => Change::AddrAdded,
            _ => Change::SilentBack,
        };
        out.push((t + Duration::from_secs(2), IFACES[i], change));
    }
    out
}

/// Random link downs and ups (some predicted), addresses removed and
/// added, at random times: in every seed the SA ends on a working path,
/// and there are at most two moves per change.
#[test]
fn random_link_changes_end_on_a_working_path_without_move_storms() {
    random_link_changes(false);
}

fn random_link_changes(silent: bool) {
    let (mut changes, mut total_moves, mut worst) = (0, 0, 0.0f64);
    for seed in sim::seeds(20) {
        let mut rng = Rng::new(seed ^ 0x6d6f_6269_6c65);
        // Each path its own latency, so that answers race differently.
        let mut link = LinkModel::clean();
        link.latency = Duration::from_millis(5 + rng.below(30));
        let mut s = mobile(seed, link);
        for i in IFACES {
            let mut m = LinkModel::clean();
            m.latency = Duration::from_millis(5 + rng.below(60));
            s.set_link(addr(i), ip(sim::B_ADDR), m);
        }
        let (sa, spis) = (sa_id(&s, 0), spis(&s));
        let plan = plan(&mut rng, silent);
        for (at, index, change) in &plan {
            let (index, change) = (*index, *change);
            s.schedule(*at, format!("{change:?} {index}"), move |s| {
                change.apply(s, index)
            });
        }
        let last = plan.last().expect("a plan").0;
        // Settle: a silent loss shows when a request goes unanswered (the
        // DPD after 30 s idle, then two retransmissions).
        s.run_for(last + Duration::from_secs(75));
        let ok = on_working_path(&s, sa, &spis);
        let m = moves(&s);
        assert!(
            ok.is_ok(),
            "seed {seed}: {ok:?}\nplan {plan:#?}\nfired {:#?}\nA: {:#?}\nmoves {:#?}",
            s.fired
                .iter()
                .map(|(t, l)| (*t - s.start, l))
                .collect::<Vec<_>>(),
            s.nodes[0].events,
            s.mobility(0).moves
        );
        assert!(
            m <= 2 * plan.len(),
            "seed {seed}: {m} moves for {} changes: {:?}\nplan {plan:#?}",
            plan.len(),
            reasons(&s)
        );
        changes += plan.len();
        total_moves += m;
        worst = worst.max(m as f64 / plan.len() as f64);
    }
    eprintln!(
        "random link changes: {changes} changes, {total_moves} moves ({:.2} per change, worst seed {worst:.2})",
        total_moves as f64 / changes.max(1) as f64
    );
}
