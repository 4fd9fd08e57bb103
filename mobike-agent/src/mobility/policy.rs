//! Address-pair policy: the candidates of one IKE SA, their scores, and
//! whether to stay or move (sans-IO: the link table, the route answers,
//! the path-test results and `now` come in as arguments).
//!
//! Candidates are every usable local address × every peer address of the
//! same family (configured `remote_addrs` and the peer's ADDITIONAL_*_ADDRESS
//! list, RFC 4555 §3.4). A local address is usable when its interface is up
//! and not a tunnel, virtual point-to-point or loopback device (by kind,
//! never by name), it is not one of the agent's own virtual IPs, not
//! tentative or DAD-failed, not link-local towards a global peer, and the
//! kernel would send from it towards the peer out of that same interface.
//! Deprecated addresses and links predicted to go down are last resorts:
//! they rank after every other candidate, whatever their score.
//!
//! The score adds the interface's priority (per name or kind; Ethernet over
//! Wi-Fi over WWAN by default) minus its cost, a bonus for the preferred
//! family, the 802.21 link quality (signal strength, SINR, packet error
//! rate), the measured round-trip time of the last path test, and a
//! penalty for each recent flap of the link. A move away from the current
//! pair is forced (its address, link or route is gone, or the engine's
//! requests went unanswered), predictive (its link is about to go) or
//! voluntary (a better pair beats it by the hysteresis margin after the
//! minimum dwell time); forced and predictive moves ignore hysteresis and
//! dwell.

use std::{
    collections::{BTreeSet, HashMap},
    fmt,
    net::IpAddr,
    time::{Duration, Instant},
};

use super::links::{IfaceKind, Interface, LinkTable, LocalAddr, Touched};

/// An address pair at the IP level (the engine keeps the ports).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pair {
    pub local: IpAddr,
    pub remote: IpAddr,
}

impl fmt::Display for Pair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} - {}", self.local, self.remote)
    }
}

/// How the kernel would route from a local address towards a peer address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteAnswer {
    /// Out of the interface with this index.
    Via(u32),
    /// No route (or unreachable, prohibit, blackhole).
    NoRoute,
    /// Not looked up yet: the pair stays a candidate.
    Unknown,
}

/// Route lookups, answered by the runtime (RTM_GETROUTE with the source
/// address set, as `ip route get REMOTE from LOCAL` does).
pub trait RouteView {
    fn route(&self, local: IpAddr, remote: IpAddr) -> RouteAnswer;
}

impl<F: Fn(IpAddr, IpAddr) -> RouteAnswer> RouteView for F {
    fn route(&self, local: IpAddr, remote: IpAddr) -> RouteAnswer {
        self(local, remote)
    }
}

/// Which interfaces a rule applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IfaceMatch {
    Name(String),
    Kind(IfaceKind),
}

/// Configuration for the interfaces a rule matches (`[mobility.interfaces]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfaceRule {
    pub matches: IfaceMatch,
    /// Replaces the kind's default priority; higher is better.
    pub priority: Option<i64>,
    /// Subtracted from the score (metered links).
    pub cost: i64,
    /// Never used for IKE.
    pub exclude: bool,
}

/// The address family to prefer, all else equal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FamilyPreference {
    #[default]
    None,
    Ipv4,
    Ipv6,
}

/// The policy's settings; [`PolicyConfig::default`] gives the defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyConfig {
    /// Rules by name first, then by kind; the first match of each applies.
    pub rules: Vec<IfaceRule>,
    pub prefer_family: FamilyPreference,
    /// Points for the preferred family.
    pub family_bonus: i64,
    /// Points a voluntary move's new pair must beat the current one by.
    pub hysteresis: i64,
    /// Time on a pair before a voluntary move away from it.
    pub min_dwell: Duration,
    /// Points off per recent flap of the link (at most ten counted).
    pub flap_penalty: i64,
    /// How long a path test's result counts.
    pub test_valid_for: Duration,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            rules: Vec::new(),
            prefer_family: FamilyPreference::None,
            family_bonus: 20,
            hysteresis: 50,
            min_dwell: Duration::from_secs(5),
            flap_penalty: 30,
            test_valid_for: Duration::from_secs(30),
        }
    }
}

impl PolicyConfig {
    fn rule_for(&self, iface: &Interface) -> Option<&IfaceRule> {
        self.rules
            .iter()
            .find(|r| matches!(&r.matches, IfaceMatch::Name(n) if *n == iface.name))
            .or_else(|| {
                self.rules
                    .iter()
                    .find(|r| r.matches == IfaceMatch::Kind(iface.kind))
            })
    }
}

/// The default priority of an interface kind: wired over Wi-Fi over WWAN.
pub fn default_priority(kind: IfaceKind) -> i64 {
    match kind {
        IfaceKind::Ethernet
        | IfaceKind::Veth
        | IfaceKind::Bond
        | IfaceKind::Vlan
        | IfaceKind::Bridge => 300,
        IfaceKind::Wlan => 200,
        IfaceKind::Wwan => 100,
        IfaceKind::Other => 50,
        IfaceKind::Tunnel | IfaceKind::Loopback => 0,
    }
}

/// The last path test of a pair (RFC 4555 §3.10, an INFORMATIONAL with
/// COOKIE2 sent over it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathTest {
    pub at: Instant,
    /// Round-trip time when answered; `None` when it went unanswered.
    pub rtt: Option<Duration>,
}

/// What the policy needs to know of one IKE SA.
#[derive(Debug, Clone)]
pub struct SaPaths<'a> {
    /// The pair in use; `None` before the SA has one the table knows.
    pub current: Option<Pair>,
    /// When the SA moved to `current`.
    pub since: Instant,
    /// Peer addresses: configured `remote_addrs` and the peer's list.
    pub peer_addrs: &'a [IpAddr],
    /// The agent's own virtual IPs (never a source for IKE).
    pub own_vips: &'a [IpAddr],
    /// The latest path test of each pair.
    pub tests: &'a HashMap<Pair, PathTest>,
    /// The engine reported the current pair unresponsive (its first
    /// retransmission went unanswered).
    pub unresponsive: bool,
}

/// One scored candidate pair.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub pair: Pair,
    /// Index and name of the local address's interface.
    pub iface: u32,
    pub iface_name: String,
    pub score: i64,
    /// Deprecated address or link predicted to go: only when nothing else.
    pub last_resort: bool,
}

/// Why an IKE SA should leave its current pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MoveReason {
    /// The local address is gone (IF_ADDRREMOVED, or its interface).
    AddressGone,
    /// Its link is down (carrier, operstate or admin).
    LinkDown,
    /// The kernel has no route from it to the peer, or routes out of
    /// another interface.
    NoRoute,
    /// The engine's request on the pair went unanswered.
    Unresponsive,
    /// A predictive trigger says the link goes soon (make-before-break).
    GoingDown,
    /// A better pair, after hysteresis and dwell.
    Better,
}

impl MoveReason {
    /// Forced and predictive moves ignore hysteresis and dwell.
    pub fn is_voluntary(self) -> bool {
        self == MoveReason::Better
    }

    /// The current pair no longer carries traffic (its address, link or
    /// route went, or the peer stopped answering on it): the move takes
    /// the first pair that works. Not for predictive and voluntary moves,
    /// whose old pair still works.
    pub fn loses_pair(self) -> bool {
        !self.is_voluntary() && self != MoveReason::GoingDown
    }

    pub fn as_str(self) -> &'static str {
        match self {
            MoveReason::AddressGone => "address-gone",
            MoveReason::LinkDown => "link-down",
            MoveReason::NoRoute => "no-route",
            MoveReason::Unresponsive => "unresponsive",
            MoveReason::GoingDown => "going-down",
            MoveReason::Better => "better",
        }
    }
}

/// The decision for one IKE SA.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Keep the current pair.
    Stay,
    /// Leave it: test `to` (best first) and update to the first that
    /// answers, or at once to the first if it was tested recently.
    Move { reason: MoveReason, to: Vec<Pair> },
    /// The current pair must go but there is nothing to go to.
    Stranded(MoveReason),
}

/// Candidates, the current pair's standing and the verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    /// Every candidate, best first (last resorts last).
    pub candidates: Vec<Candidate>,
    /// The current pair as a candidate, if it still is one.
    pub current: Option<Candidate>,
    pub verdict: Verdict,
}

impl Evaluation {
    /// The interfaces this evaluation depended on: re-evaluate the SA when
    /// one of them is touched.
    pub fn interfaces(&self) -> BTreeSet<u32> {
        self.candidates.iter().map(|c| c.iface).collect()
    }
}

fn is_link_local(a: IpAddr) -> bool {
    match a {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 == 0xfe80,
    }
}

/// Whether no address of `iface` can be a candidate: checked once per
/// interface, before its addresses (a loopback with a thousand addresses
/// costs nothing per IKE SA).
fn unusable_interface(iface: &Interface, cfg: &PolicyConfig) -> bool {
    !iface.is_up() || iface.is_excluded_kind() || cfg.rule_for(iface).is_some_and(|r| r.exclude)
}

/// Whether a local address of a usable interface can never be a candidate.
fn unusable_address(addr: IpAddr, info: &LocalAddr, sa: &SaPaths<'_>) -> bool {
    addr.is_loopback()
        || addr.is_unspecified()
        || sa.own_vips.contains(&addr)
        || info.flags.tentative
        || info.flags.dadfailed
}

/// The local addresses of `table` that can be candidates for `sa`, with
/// their interface.
fn usable_locals<'t>(
    table: &'t LinkTable,
    cfg: &'t PolicyConfig,
    sa: &'t SaPaths<'_>,
) -> impl Iterator<Item = (&'t Interface, IpAddr, &'t LocalAddr)> {
    table
        .interfaces()
        .filter(|iface| !unusable_interface(iface, cfg))
        .flat_map(|iface| iface.addrs.iter().map(move |(a, info)| (iface, *a, info)))
        .filter(|(_, a, info)| !unusable_address(*a, info, sa))
}

fn score(
    iface: &Interface,
    cfg: &PolicyConfig,
    pair: Pair,
    test: Option<&PathTest>,
    now: Instant,
) -> i64 {
    let rule = cfg.rule_for(iface);
    let mut s = rule
        .and_then(|r| r.priority)
        .unwrap_or_else(|| default_priority(iface.kind));
    s -= rule.map_or(0, |r| r.cost);
    let preferred = match cfg.prefer_family {
        FamilyPreference::None => false,
        FamilyPreference::Ipv4 => pair.local.is_ipv4(),
        FamilyPreference::Ipv6 => pair.local.is_ipv6(),
    };
    if preferred {
        s += cfg.family_bonus;
    }
    let q = &iface.quality;
    // Signal strength 0..100 % is -50..+50 points; SINR 0..30 dB -25..+25;
    // each percent of packet errors is 5 points off.
    if let Some(sig) = q.signal_percent {
        s += (sig - 50.0).round() as i64;
    }
    if let Some(sinr) = q.sinr_db {
        s += ((sinr.clamp(0.0, 30.0) / 30.0 * 50.0) - 25.0).round() as i64;
    }
    if let Some(per) = q.packet_error_percent {
        s -= (per * 5.0).round() as i64;
    }
    s -= cfg.flap_penalty * i64::from(iface.flaps.min(10));
    if let Some(t) = test.filter(|t| now.saturating_duration_since(t.at) <= cfg.test_valid_for) {
        s -= match t.rtt {
            // 10 ms is one point, up to 200 points for 2 s.
            Some(rtt) => (rtt.as_millis().min(2000) / 10) as i64,
            None => 500,
        };
    }
    s
}

/// The (local, remote) pairs whose route [`candidates`] and [`evaluate`]
/// ask `routes` about for `sa`: every usable local address of the table
/// with every peer address of its family, and the current pair. The
/// runtime looks these up in the kernel before it evaluates.
pub fn route_pairs(
    table: &LinkTable,
    cfg: &PolicyConfig,
    sa: &SaPaths<'_>,
) -> Vec<(IpAddr, IpAddr)> {
    let mut out: Vec<(IpAddr, IpAddr)> = sa
        .current
        .map(|c| (c.local, c.remote))
        .into_iter()
        .collect();
    for (_, local, _) in usable_locals(table, cfg, sa) {
        for &remote in sa.peer_addrs {
            if local.is_ipv4() == remote.is_ipv4() && !out.contains(&(local, remote)) {
                out.push((local, remote));
            }
        }
    }
    out
}

/// The candidates of `sa`, best first.
pub fn candidates(
    table: &LinkTable,
    cfg: &PolicyConfig,
    routes: &dyn RouteView,
    sa: &SaPaths<'_>,
    now: Instant,
) -> Vec<Candidate> {
    let mut out = Vec::new();
    for (iface, local, info) in usable_locals(table, cfg, sa) {
        for &remote in sa.peer_addrs {
            if local.is_ipv4() != remote.is_ipv4() {
                continue;
            }
            if is_link_local(local) && !is_link_local(remote) {
                continue;
            }
            match routes.route(local, remote) {
                RouteAnswer::Via(oif) if oif != iface.index => continue,
                RouteAnswer::NoRoute => continue,
                RouteAnswer::Via(_) | RouteAnswer::Unknown => {}
            }
            let pair = Pair { local, remote };
            out.push(Candidate {
                pair,
                iface: iface.index,
                iface_name: iface.name.clone(),
                score: score(iface, cfg, pair, sa.tests.get(&pair), now),
                last_resort: info.flags.deprecated || iface.is_going_down(now),
            });
        }
    }
    // Best first; ties by pair so that the order is stable.
    out.sort_by(|a, b| {
        a.last_resort
            .cmp(&b.last_resort)
            .then(b.score.cmp(&a.score))
            .then(a.pair.cmp(&b.pair))
    });
    out
}

/// Why the current pair must be left, if it must.
fn forced_reason(
    table: &LinkTable,
    routes: &dyn RouteView,
    sa: &SaPaths<'_>,
    current: Pair,
    now: Instant,
) -> Option<MoveReason> {
    let Some(iface) = table.owner_of(current.local) else {
        return Some(MoveReason::AddressGone);
    };
    if !iface.is_up() {
        return Some(MoveReason::LinkDown);
    }
    match routes.route(current.local, current.remote) {
        RouteAnswer::NoRoute => return Some(MoveReason::NoRoute),
        RouteAnswer::Via(oif) if oif != iface.index => return Some(MoveReason::NoRoute),
        _ => {}
    }
    if sa.unresponsive {
        return Some(MoveReason::Unresponsive);
    }
    if iface.is_going_down(now) {
        return Some(MoveReason::GoingDown);
    }
    None
}

/// Evaluates `sa` against the table at `now`.
pub fn evaluate(
    table: &LinkTable,
    cfg: &PolicyConfig,
    routes: &dyn RouteView,
    sa: &SaPaths<'_>,
    now: Instant,
) -> Evaluation {
    let candidates = candidates(table, cfg, routes, sa, now);
    let Some(cur) = sa.current else {
        let verdict = match candidates.first() {
            Some(_) => Verdict::Move {
                reason: MoveReason::AddressGone,
                to: candidates.iter().map(|c| c.pair).collect(),
            },
            None => Verdict::Stranded(MoveReason::AddressGone),
        };
        return Evaluation {
            candidates,
            current: None,
            verdict,
        };
    };
    let current = candidates.iter().find(|c| c.pair == cur).cloned();
    let others = |skip_iface: Option<u32>| -> Vec<Pair> {
        candidates
            .iter()
            .filter(|c| c.pair != cur && Some(c.iface) != skip_iface)
            .map(|c| c.pair)
            .collect()
    };
    let verdict = match forced_reason(table, routes, sa, cur, now) {
        Some(MoveReason::GoingDown) => {
            // Make-before-break: only towards another link; staying is
            // better than moving to another address of the dying one.
            let to = others(table.owner_of(cur.local).map(|i| i.index));
            if to.is_empty() {
                Verdict::Stay
            } else {
                Verdict::Move {
                    reason: MoveReason::GoingDown,
                    to,
                }
            }
        }
        Some(reason) => {
            let to = others(None);
            if to.is_empty() {
                Verdict::Stranded(reason)
            } else {
                Verdict::Move { reason, to }
            }
        }
        None => voluntary(cfg, &candidates, current.as_ref(), sa, now),
    };
    Evaluation {
        candidates,
        current,
        verdict,
    }
}

fn voluntary(
    cfg: &PolicyConfig,
    candidates: &[Candidate],
    current: Option<&Candidate>,
    sa: &SaPaths<'_>,
    now: Instant,
) -> Verdict {
    if now.saturating_duration_since(sa.since) < cfg.min_dwell {
        return Verdict::Stay;
    }
    let Some(best) = candidates.first() else {
        return Verdict::Stay;
    };
    let better = match current {
        Some(cur) => {
            best.pair != cur.pair
                && !best.last_resort
                && (cur.last_resort || best.score >= cur.score.saturating_add(cfg.hysteresis))
        }
        // The current pair is no candidate (a configured exclusion, say)
        // but still works: any non-last-resort candidate is better.
        None => !best.last_resort,
    };
    if !better {
        return Verdict::Stay;
    }
    let floor = current.map_or(i64::MIN, |c| c.score.saturating_add(cfg.hysteresis));
    let to = candidates
        .iter()
        .filter(|c| {
            Some(c.pair) != current.map(|c| c.pair)
                && !c.last_resort
                && (current.is_some_and(|c| c.last_resort) || c.score >= floor)
        })
        .map(|c| c.pair)
        .collect();
    Verdict::Move {
        reason: MoveReason::Better,
        to,
    }
}

/// Whether a table change can alter an IKE SA's evaluation: it touched an
/// interface the SA's last evaluation depended on (its current one among
/// them), or an interface that now offers a usable address of a family
/// the peer has (a new candidate).
pub fn affects(
    table: &LinkTable,
    touched: &Touched,
    depends_on: &BTreeSet<u32>,
    current_iface: Option<u32>,
    peer_addrs: &[IpAddr],
) -> bool {
    if touched.all {
        return true;
    }
    touched.interfaces.iter().any(|i| {
        depends_on.contains(i)
            || current_iface == Some(*i)
            || table.get(*i).is_some_and(|iface| {
                iface.is_up()
                    && !iface.is_excluded_kind()
                    && iface
                        .addrs
                        .keys()
                        .any(|a| peer_addrs.iter().any(|p| p.is_ipv4() == a.is_ipv4()))
            })
    })
}

#[cfg(test)]
mod tests;
