//! Policy laws: unit cases for each exclusion and move kind, and property
//! tests for hysteresis, dwell, exclusions and family fallback.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::{Duration, Instant},
};

use proptest::prelude::*;

use super::*;
use crate::mobility::links::{
    AddrFlags, IfaceKind, LinkEvent, LinkParameter, LinkTable, LocalAddr, OperState,
};

const PEER4: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 1));
const PEER6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 1));

fn v4(last: u8, net: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(192, 0, net, last))
}

fn v6(net: u16) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, net, 0, 0, 0, 0, 1))
}

fn link(
    table: &mut LinkTable,
    index: u32,
    name: &str,
    kind: IfaceKind,
    driver: &str,
    up: bool,
    now: Instant,
) {
    table.apply(
        LinkEvent::Link {
            index,
            name: name.into(),
            kind,
            driver_kind: driver.into(),
            admin_up: true,
            carrier: up,
            oper: if up { OperState::Up } else { OperState::Down },
        },
        now,
    );
}

fn addr(table: &mut LinkTable, index: u32, a: IpAddr, flags: AddrFlags, now: Instant) {
    table.apply(
        LinkEvent::Addr {
            index,
            addr: LocalAddr {
                addr: a,
                prefix_len: if a.is_ipv4() { 24 } else { 64 },
                flags,
            },
        },
        now,
    );
}

/// eth0 (1) with 192.0.1.2 and 2001:db8:1::1, wlan0 (2) with 192.0.2.2.
fn two_uplinks(now: Instant) -> LinkTable {
    let mut t = LinkTable::new();
    link(&mut t, 1, "eth0", IfaceKind::Ethernet, "", true, now);
    addr(&mut t, 1, v4(2, 1), AddrFlags::default(), now);
    addr(&mut t, 1, v6(1), AddrFlags::default(), now);
    link(&mut t, 2, "wlan0", IfaceKind::Wlan, "", true, now);
    addr(&mut t, 2, v4(2, 2), AddrFlags::default(), now);
    t
}

/// Every source routes out of its own interface.
fn own_iface(table: &LinkTable) -> impl Fn(IpAddr, IpAddr) -> RouteAnswer + '_ {
    |local, _| match table.owner_of(local) {
        Some(i) => RouteAnswer::Via(i.index),
        None => RouteAnswer::NoRoute,
    }
}

struct Sa {
    current: Option<Pair>,
    since: Instant,
    peers: Vec<IpAddr>,
    vips: Vec<IpAddr>,
    tests: HashMap<Pair, PathTest>,
    unresponsive: bool,
}

impl Sa {
    fn on(local: IpAddr, remote: IpAddr, since: Instant) -> Self {
        Sa {
            current: Some(Pair { local, remote }),
            since,
            peers: vec![PEER4, PEER6],
            vips: Vec::new(),
            tests: HashMap::new(),
            unresponsive: false,
        }
    }

    fn view(&self) -> SaPaths<'_> {
        SaPaths {
            current: self.current,
            since: self.since,
            peer_addrs: &self.peers,
            own_vips: &self.vips,
            tests: &self.tests,
            unresponsive: self.unresponsive,
        }
    }
}

fn eval(t: &LinkTable, cfg: &PolicyConfig, sa: &Sa, now: Instant) -> Evaluation {
    evaluate(t, cfg, &own_iface(t), &sa.view(), now)
}

fn pair(local: IpAddr, remote: IpAddr) -> Pair {
    Pair { local, remote }
}

#[test]
fn ethernet_ranks_over_wlan_and_the_current_best_pair_stays() {
    let now = Instant::now();
    let t = two_uplinks(now);
    let sa = Sa::on(v4(2, 1), PEER4, now - Duration::from_secs(60));
    let e = eval(&t, &PolicyConfig::default(), &sa, now);
    assert_eq!(e.candidates[0].iface_name, "eth0");
    assert_eq!(e.candidates.len(), 3, "{:?}", e.candidates);
    assert_eq!(e.verdict, Verdict::Stay);
}

#[test]
fn a_removed_address_forces_a_move_at_once_ignoring_dwell() {
    let now = Instant::now();
    let mut t = two_uplinks(now);
    let sa = Sa::on(v4(2, 1), PEER4, now);
    t.apply(
        LinkEvent::AddrRemoved {
            index: 1,
            addr: v4(2, 1),
        },
        now,
    );
    let e = eval(&t, &PolicyConfig::default(), &sa, now);
    match e.verdict {
        Verdict::Move {
            reason: MoveReason::AddressGone,
            to,
        } => assert_eq!(to[0], pair(v6(1), PEER6)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn carrier_loss_that_keeps_the_address_forces_a_move() {
    let now = Instant::now();
    let mut t = two_uplinks(now);
    let sa = Sa::on(v4(2, 1), PEER4, now);
    link(&mut t, 1, "eth0", IfaceKind::Ethernet, "", false, now);
    let e = eval(&t, &PolicyConfig::default(), &sa, now);
    assert_eq!(
        e.verdict,
        Verdict::Move {
            reason: MoveReason::LinkDown,
            to: vec![pair(v4(2, 2), PEER4)],
        }
    );
}

#[test]
fn a_route_out_of_another_interface_is_no_candidate_and_forces_a_move() {
    let now = Instant::now();
    let t = two_uplinks(now);
    let sa = Sa::on(v4(2, 1), PEER4, now);
    // The kernel sends everything for the peer out of wlan0.
    let routes = |_: IpAddr, _: IpAddr| RouteAnswer::Via(2);
    let e = evaluate(&t, &PolicyConfig::default(), &routes, &sa.view(), now);
    assert!(
        e.candidates.iter().all(|c| c.iface == 2),
        "{:?}",
        e.candidates
    );
    assert!(matches!(
        e.verdict,
        Verdict::Move {
            reason: MoveReason::NoRoute,
            ..
        }
    ));
}

#[test]
fn tunnels_loopback_vips_and_tentative_addresses_are_never_candidates() {
    let now = Instant::now();
    let mut t = two_uplinks(now);
    for (i, name, kind, driver) in [
        (3, "xfrm0", IfaceKind::Other, "xfrm"),
        (4, "wg0", IfaceKind::Other, "wireguard"),
        (5, "tun0", IfaceKind::Tunnel, "tun"),
        (6, "lo", IfaceKind::Loopback, ""),
        (7, "ipip0", IfaceKind::Other, "ipip"),
    ] {
        link(&mut t, i, name, kind, driver, true, now);
        addr(&mut t, i, v4(2, 10 + i as u8), AddrFlags::default(), now);
    }
    let tentative = AddrFlags {
        tentative: true,
        ..AddrFlags::default()
    };
    let dadfailed = AddrFlags {
        dadfailed: true,
        ..AddrFlags::default()
    };
    addr(&mut t, 1, v4(3, 1), tentative, now);
    addr(&mut t, 1, v4(4, 1), dadfailed, now);
    addr(&mut t, 2, v4(9, 2), AddrFlags::default(), now);
    let mut sa = Sa::on(v4(2, 2), PEER4, now);
    sa.vips = vec![v4(9, 2)];
    let e = eval(&t, &PolicyConfig::default(), &sa, now);
    let locals: Vec<IpAddr> = e.candidates.iter().map(|c| c.pair.local).collect();
    assert_eq!(locals.len(), 3, "{locals:?}");
    assert!(locals.contains(&v4(2, 1)) && locals.contains(&v4(2, 2)) && locals.contains(&v6(1)));
}

#[test]
fn deprecated_addresses_and_dying_links_are_last_resorts() {
    let now = Instant::now();
    let mut t = two_uplinks(now);
    let deprecated = AddrFlags {
        deprecated: true,
        ..AddrFlags::default()
    };
    addr(&mut t, 1, v4(2, 1), deprecated, now);
    addr(&mut t, 1, v6(1), deprecated, now);
    let sa = Sa::on(v4(2, 2), PEER4, now - Duration::from_secs(60));
    let e = eval(&t, &PolicyConfig::default(), &sa, now);
    assert_eq!(e.candidates[0].pair, pair(v4(2, 2), PEER4));
    assert!(e.candidates[1].last_resort && e.candidates[2].last_resort);
    assert_eq!(e.verdict, Verdict::Stay);
}

#[test]
fn going_down_moves_to_another_link_before_it_breaks() {
    let now = Instant::now();
    let mut t = two_uplinks(now);
    let sa = Sa::on(v4(2, 1), PEER4, now);
    t.apply(
        LinkEvent::GoingDown {
            index: 1,
            within: Duration::from_millis(500),
        },
        now,
    );
    let e = eval(&t, &PolicyConfig::default(), &sa, now);
    assert_eq!(
        e.verdict,
        Verdict::Move {
            reason: MoveReason::GoingDown,
            to: vec![pair(v4(2, 2), PEER4)],
        },
        "never towards the dying link's other address"
    );
    // A prediction that did not come true is forgotten after the grace.
    let later = now + Duration::from_millis(500) + crate::mobility::links::PREDICTION_GRACE;
    assert_eq!(
        eval(&t, &PolicyConfig::default(), &sa, later).verdict,
        Verdict::Stay
    );
}

#[test]
fn going_down_with_no_other_link_stays() {
    let now = Instant::now();
    let mut t = two_uplinks(now);
    t.apply(LinkEvent::Removed { index: 2 }, now);
    t.apply(
        LinkEvent::GoingDown {
            index: 1,
            within: Duration::from_millis(500),
        },
        now,
    );
    let sa = Sa::on(v4(2, 1), PEER4, now);
    assert_eq!(
        eval(&t, &PolicyConfig::default(), &sa, now).verdict,
        Verdict::Stay
    );
}

#[test]
fn an_unresponsive_pair_is_left_and_stranded_when_nothing_else_exists() {
    let now = Instant::now();
    let mut t = two_uplinks(now);
    let mut sa = Sa::on(v4(2, 1), PEER4, now);
    sa.unresponsive = true;
    assert!(matches!(
        eval(&t, &PolicyConfig::default(), &sa, now).verdict,
        Verdict::Move {
            reason: MoveReason::Unresponsive,
            ..
        }
    ));
    t.apply(LinkEvent::Removed { index: 2 }, now);
    sa.peers = vec![PEER4];
    assert_eq!(
        eval(&t, &PolicyConfig::default(), &sa, now).verdict,
        Verdict::Stranded(MoveReason::Unresponsive)
    );
}

#[test]
fn rules_by_name_override_rules_by_kind_and_exclude() {
    let now = Instant::now();
    let t = two_uplinks(now);
    let cfg = PolicyConfig {
        rules: vec![
            IfaceRule {
                matches: IfaceMatch::Kind(IfaceKind::Wlan),
                priority: Some(10),
                cost: 0,
                exclude: false,
            },
            IfaceRule {
                matches: IfaceMatch::Name("wlan0".into()),
                priority: Some(1000),
                cost: 0,
                exclude: false,
            },
        ],
        ..PolicyConfig::default()
    };
    let sa = Sa::on(v4(2, 1), PEER4, now - Duration::from_secs(60));
    let e = eval(&t, &cfg, &sa, now);
    assert_eq!(e.candidates[0].iface_name, "wlan0");
    assert!(
        matches!(e.verdict, Verdict::Move { reason: MoveReason::Better, ref to } if to[0] == pair(v4(2, 2), PEER4))
    );
    let excluded = PolicyConfig {
        rules: vec![IfaceRule {
            matches: IfaceMatch::Name("wlan0".into()),
            priority: None,
            cost: 0,
            exclude: true,
        }],
        ..PolicyConfig::default()
    };
    assert!(
        eval(&t, &excluded, &sa, now)
            .candidates
            .iter()
            .all(|c| c.iface != 2)
    );
}

#[test]
fn quality_rtt_and_flaps_move_the_score() {
    let now = Instant::now();
    let mut t = two_uplinks(now);
    let sa = Sa::on(v4(2, 1), PEER4, now);
    let base = eval(&t, &PolicyConfig::default(), &sa, now).candidates;
    let wlan = |c: &[Candidate]| c.iter().find(|c| c.iface == 2).unwrap().score;
    t.apply(
        LinkEvent::Parameters {
            index: 2,
            params: vec![LinkParameter::SignalDbm(-40.0)],
        },
        now,
    );
    let strong = wlan(&eval(&t, &PolicyConfig::default(), &sa, now).candidates);
    assert_eq!(strong, wlan(&base) + 50);
    t.apply(LinkEvent::Flaps { index: 2, count: 2 }, now);
    let mut sa = sa;
    sa.tests.insert(
        pair(v4(2, 2), PEER4),
        PathTest {
            at: now,
            rtt: Some(Duration::from_millis(100)),
        },
    );
    let flappy = wlan(&eval(&t, &PolicyConfig::default(), &sa, now).candidates);
    assert_eq!(flappy, strong - 60 - 10);
}

#[test]
fn only_changes_to_used_or_new_usable_interfaces_affect_an_sa() {
    let now = Instant::now();
    let mut t = two_uplinks(now);
    let sa = Sa::on(v4(2, 1), PEER4, now);
    let e = eval(&t, &PolicyConfig::default(), &sa, now);
    let deps = e.interfaces();
    // A tunnel interface coming up touches nothing this SA cares about.
    link(&mut t, 9, "xfrm9", IfaceKind::Other, "xfrm", true, now);
    let touched = t.apply(
        LinkEvent::Addr {
            index: 9,
            addr: LocalAddr {
                addr: v4(1, 9),
                prefix_len: 24,
                flags: AddrFlags::default(),
            },
        },
        now,
    );
    assert!(!affects(&t, &touched, &deps, Some(1), &sa.peers));
    // A new Ethernet with an address does.
    link(&mut t, 10, "eth1", IfaceKind::Ethernet, "", true, now);
    let touched = t.apply(
        LinkEvent::Addr {
            index: 10,
            addr: LocalAddr {
                addr: v4(1, 10),
                prefix_len: 24,
                flags: AddrFlags::default(),
            },
        },
        now,
    );
    assert!(affects(&t, &touched, &deps, Some(1), &sa.peers));
    // Repeating what the table knows touches nothing.
    let again = t.apply(LinkEvent::Flaps { index: 1, count: 0 }, now);
    assert!(again.is_empty());
}

// --- properties ---------------------------------------------------------

/// WWAN at priority 200: level with Wi-Fi (200 + signal - 50) at 50 %.
fn wwan_level_with_wifi(cfg: PolicyConfig) -> PolicyConfig {
    PolicyConfig {
        rules: vec![IfaceRule {
            matches: IfaceMatch::Kind(IfaceKind::Wwan),
            priority: Some(200),
            cost: 0,
            exclude: false,
        }],
        ..cfg
    }
}

/// Runs the policy over a series of (time step, Wi-Fi signal %) reports,
/// the SA starting on Wi-Fi and following every verdict; returns the start
/// and the moves (time, reason).
fn follow(signal: &[(u64, f64)], cfg: &PolicyConfig) -> (Instant, Vec<(Instant, MoveReason)>) {
    let start = Instant::now();
    let mut now = start;
    let mut t = two_uplinks(start);
    t.apply(LinkEvent::Removed { index: 1 }, now);
    link(&mut t, 3, "wwan0", IfaceKind::Wwan, "", true, now);
    addr(&mut t, 3, v4(2, 3), AddrFlags::default(), now);
    let mut sa = Sa::on(v4(2, 2), PEER4, start);
    sa.peers = vec![PEER4];
    let mut moves = Vec::new();
    for &(step_ms, sig) in signal {
        now += Duration::from_millis(step_ms);
        t.apply(
            LinkEvent::Parameters {
                index: 2,
                params: vec![LinkParameter::SignalPercent(sig)],
            },
            now,
        );
        if let Verdict::Move { reason, to } = eval(&t, cfg, &sa, now).verdict {
            sa.current = Some(to[0]);
            sa.since = now;
            moves.push((now, reason));
        }
    }
    (start, moves)
}

proptest! {
    /// Quality oscillating by less than the hysteresis margin around the
    /// other link's score moves the SA at most once (away, never back),
    /// even with no dwell time.
    #[test]
    fn hysteresis_stops_flapping(
        steps in proptest::collection::vec((1u64..2000, 0.0f64..99.5), 1..200),
    ) {
        // Wi-Fi scores 150..249.5 against WWAN's 200: leaving Wi-Fi needs
        // it at 150 (signal 0), coming back needs 250 (signal 100).
        let cfg = wwan_level_with_wifi(PolicyConfig { min_dwell: Duration::ZERO, ..PolicyConfig::default() });
        let (_, moves) = follow(&steps, &cfg);
        prop_assert!(moves.len() <= 1, "{moves:?}");
        let no_loss: Vec<(u64, f64)> = steps.iter().map(|&(ms, s)| (ms, s.max(1.0))).collect();
        let (_, moves) = follow(&no_loss, &cfg);
        prop_assert!(moves.is_empty(), "{moves:?}");
    }

    /// Voluntary moves keep the minimum dwell, from the start and between
    /// them, however wildly the quality swings.
    #[test]
    fn dwell_is_respected_for_voluntary_moves(
        steps in proptest::collection::vec((1u64..3000, prop_oneof![Just(0.0f64), Just(100.0f64)]), 1..200),
        dwell_s in 1u64..20,
    ) {
        let cfg = wwan_level_with_wifi(PolicyConfig {
            min_dwell: Duration::from_secs(dwell_s),
            ..PolicyConfig::default()
        });
        let (start, moves) = follow(&steps, &cfg);
        let mut last = start;
        for &(at, reason) in &moves {
            prop_assert_eq!(reason, MoveReason::Better);
            prop_assert!(at - last >= cfg.min_dwell, "moves {:?} apart", at - last);
            last = at;
        }
    }

    /// Forced moves ignore dwell: however recently the SA moved, losing its
    /// address moves it.
    #[test]
    fn forced_moves_ignore_dwell(since_ms in 0u64..10_000) {
        let now = Instant::now() + Duration::from_secs(20);
        let mut t = two_uplinks(now);
        let sa = Sa::on(v4(2, 1), PEER4, now - Duration::from_millis(since_ms));
        link(&mut t, 1, "eth0", IfaceKind::Ethernet, "", false, now);
        let verdict = eval(&t, &PolicyConfig::default(), &sa, now).verdict;
        let forced = matches!(verdict, Verdict::Move { reason: MoveReason::LinkDown, .. });
        prop_assert!(forced, "{:?}", verdict);
    }

    /// Whatever the interfaces, the chosen pair is never on an excluded
    /// kind, a down link, a virtual IP or a tentative/DAD-failed address.
    #[test]
    fn excluded_interfaces_are_never_chosen(
        ifaces in proptest::collection::vec(
            (0usize..10, 0usize..4, any::<bool>(), 0u8..4, any::<bool>()), 1..8),
        vip_pick in any::<proptest::sample::Index>(),
    ) {
        let now = Instant::now();
        let kinds = [IfaceKind::Ethernet, IfaceKind::Wlan, IfaceKind::Wwan, IfaceKind::Tunnel,
            IfaceKind::Loopback, IfaceKind::Veth, IfaceKind::Other, IfaceKind::Other,
            IfaceKind::Bridge, IfaceKind::Other];
        let drivers = ["", "xfrm", "wireguard", "veth"];
        let mut t = LinkTable::new();
        let mut all = Vec::new();
        for (n, &(k, d, up, flag, v6addr)) in ifaces.iter().enumerate() {
            let index = n as u32 + 1;
            link(&mut t, index, &format!("if{index}"), kinds[k], drivers[d], up, now);
            let a = if v6addr { v6(index as u16) } else { v4(index as u8, 7) };
            let flags = AddrFlags {
                tentative: flag == 1,
                dadfailed: flag == 2,
                deprecated: flag == 3,
            };
            addr(&mut t, index, a, flags, now);
            all.push(a);
        }
        let mut sa = Sa::on(v4(250, 250), PEER4, now - Duration::from_secs(60));
        sa.vips = vec![*vip_pick.get(&all)];
        let e = eval(&t, &PolicyConfig::default(), &sa, now);
        let chosen = match &e.verdict {
            Verdict::Move { to, .. } => to.clone(),
            _ => Vec::new(),
        };
        for p in chosen.iter().chain(e.candidates.iter().map(|c| &c.pair)) {
            let iface = t.owner_of(p.local).unwrap();
            let info = iface.addrs[&p.local];
            prop_assert!(iface.is_up());
            prop_assert!(!iface.is_excluded_kind());
            prop_assert!(!sa.vips.contains(&p.local));
            prop_assert!(!info.flags.tentative && !info.flags.dadfailed);
            prop_assert_eq!(p.local.is_ipv4(), p.remote.is_ipv4());
        }
    }

    /// With IPv6 preferred but no IPv6 route, IPv4 is used; with both
    /// routed, IPv6 wins.
    #[test]
    fn family_fallback_when_one_family_has_no_route(v6_routed in any::<bool>()) {
        let now = Instant::now();
        let t = two_uplinks(now);
        let cfg = PolicyConfig { prefer_family: FamilyPreference::Ipv6, family_bonus: 500, ..PolicyConfig::default() };
        let sa = Sa { current: None, ..Sa::on(v4(2, 1), PEER4, now) };
        let routes = |local: IpAddr, _: IpAddr| {
            if local.is_ipv6() && !v6_routed {
                RouteAnswer::NoRoute
            } else {
                RouteAnswer::Via(t.owner_of(local).map_or(0, |i| i.index))
            }
        };
        let e = evaluate(&t, &cfg, &routes, &sa.view(), now);
        let Verdict::Move { to, .. } = e.verdict else { panic!("{:?}", e.verdict) };
        prop_assert_eq!(to[0].local.is_ipv6(), v6_routed);
        prop_assert!(!to.is_empty());
    }
}
