//! The mobility manager's decisions, sans-IO: it keeps the link table and
//! the paths of each IKE SA, and says what to do — test candidate pairs,
//! update an IKE SA to a pair, announce our address list — as
//! [`Action`]s polled by the runtime, which hands them to the engine.
//!
//! Inputs, each with `now`: the subscription's [`Feed`] (or the agent's
//! own rtnetlink watch, as the same events), IKE SAs coming and going and
//! their current pairs, path-test results, moves done or failed, and the
//! engine's "unanswered retransmission" signal. Only the IKE SAs that an
//! input concerns are evaluated again. Only the original initiator moves
//! an IKE SA (RFC 4555 §3.5); as responder the manager only announces the
//! address list when it changes (§3.6), and the initiator decides.
//!
//! Moves: forced and predictive ones go at once to a candidate tested
//! recently, else test the best candidates in parallel and update to the
//! first that answers; voluntary ones test too and take the best that
//! answered. Each move keeps a [`Timeline`] from the trigger to the kernel.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, VecDeque},
    net::IpAddr,
    time::{Duration, Instant, SystemTime},
};

use super::{
    config::MobilityConfig,
    links::{LinkEvent, LinkRef, LinkTable, Touched},
    policy::{self, Evaluation, MoveReason, Pair, PathTest, RouteView, SaPaths, Verdict},
    subscriber::Feed,
};

/// How many candidates a move tests in parallel.
pub const PARALLEL_TESTS: usize = 4;
/// How long a move waits for path-test answers before giving up on them.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a predictive move waits, after its first answer, for better
/// candidates still being tested: the old link still carries traffic, so
/// the better pair (the preferred family, say) is worth a few
/// milliseconds; a forced move takes the first answer.
pub const PREDICTIVE_GRACE: Duration = Duration::from_millis(50);
/// Moves kept per IKE SA for status.
pub const HISTORY: usize = 8;
/// When a new IKE SA's alternates are first tested in the background (if
/// `probe_interval` is not shorter), so that a link lost soon after it
/// came up is left with an update at once, without a test round. An
/// update commanded meanwhile does not wait for that test: the engine
/// sends it on the update's pair too.
pub const FIRST_PROBE: Duration = Duration::from_secs(2);
/// How soon a pair that has just become a candidate (its link came up,
/// its address or route appeared) is tested in the background when it is
/// one of the best alternates: a break soon after finds it tested and
/// updates at once. The delay lets the burst of events a link brings up
/// (addresses, routes) settle into one test.
pub const PROMPT_PROBE: Duration = Duration::from_millis(250);
/// The least time between two background tests of one IKE SA's
/// alternates that new candidates brought forward: a flapping link costs
/// at most one INFORMATIONAL exchange per second.
pub const PROMPT_PROBE_GAP: Duration = Duration::from_secs(1);

/// An IKE SA as the engine sees it.
pub type SaId = u64;

/// What the runtime should have the engine do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send a path test (INFORMATIONAL with COOKIE2, RFC 4555 §3.10) on
    /// each pair; results come back through [`Manager::on_test_result`].
    TestPaths { sa: SaId, pairs: Vec<Pair> },
    /// Move the IKE SA to `pair` (UPDATE_SA_ADDRESSES, §3.5); the outcome
    /// comes back through [`Manager::on_moved`] or
    /// [`Manager::on_move_failed`].
    Update { sa: SaId, pair: Pair },
    /// Our usable addresses changed: tell the peer (§3.6).
    Announce { sa: SaId, addrs: Vec<IpAddr> },
}

/// What caused a decision: the trigger, as far as known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cause {
    /// trigger-db's id (0: snapshot or the agent's own watch).
    pub id: u64,
    pub observed: SystemTime,
    pub received: Instant,
}

/// The stages of one move, for status and for LINK_HANDOVER_COMPLETE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeline {
    pub reason: MoveReason,
    pub from: Pair,
    /// The interface of `from`'s local address, as last seen.
    pub from_link: Option<LinkRef>,
    /// The pair moved to (set when the update is sent).
    pub to: Option<Pair>,
    /// The interface of `to`'s local address when the update was sent.
    pub to_link: Option<LinkRef>,
    pub cause: Option<Cause>,
    pub decided: Instant,
    pub tests_sent: Option<Instant>,
    pub first_answer: Option<Instant>,
    pub update_sent: Option<Instant>,
    /// The peer answered the update and the kernel moved (the engine's
    /// report that the move is done).
    pub moved: Option<Instant>,
    /// The first ESP packet counted on the new path.
    pub first_esp: Option<Instant>,
    /// Why it did not happen, if it did not.
    pub failed: Option<String>,
}

/// A move in progress.
#[derive(Debug, Clone)]
struct Pending {
    timeline: Timeline,
    /// Candidates best first, still to try.
    ranked: Vec<Pair>,
    /// Tests sent and not yet answered or failed.
    testing: Vec<Pair>,
    /// Answered pairs (for voluntary moves, which wait for all).
    answered: Vec<Pair>,
    deadline: Option<Instant>,
    /// The update has been sent; waiting for the engine.
    updating: bool,
}

/// One IKE SA's paths.
#[derive(Debug, Clone)]
struct SaPathState {
    initiator: bool,
    current: Pair,
    /// The interface of `current`'s local address, as last seen.
    current_link: Option<LinkRef>,
    since: Instant,
    peer_addrs: Vec<IpAddr>,
    vips: Vec<IpAddr>,
    tests: HashMap<Pair, PathTest>,
    unresponsive: bool,
    dirty: bool,
    cause: Option<Cause>,
    last: Option<Evaluation>,
    /// The interfaces `last` depended on (its candidates'), kept so that a
    /// link event is matched against them without rebuilding the set.
    deps: BTreeSet<u32>,
    pending: Option<Pending>,
    moves: VecDeque<Timeline>,
    announced: Option<Vec<IpAddr>>,
    next_probe: Option<Instant>,
    /// When the alternates were last tested in the background.
    last_probe: Option<Instant>,
    /// When to evaluate again without a new input (dwell over).
    recheck_at: Option<Instant>,
}

/// Status of one IKE SA's paths.
#[derive(Debug, Clone, PartialEq)]
pub struct SaMobility {
    pub current: Pair,
    pub candidates: Vec<policy::Candidate>,
    pub tests: Vec<(Pair, PathTest)>,
    pub moving: Option<Timeline>,
    pub moves: Vec<Timeline>,
}

/// The mobility manager (sans-IO).
#[derive(Debug)]
pub struct Manager {
    config: MobilityConfig,
    table: LinkTable,
    sas: BTreeMap<SaId, SaPathState>,
    actions: VecDeque<Action>,
    /// Completed moves not yet taken by the runtime (for trigger-db).
    completed: VecDeque<(SaId, Timeline)>,
    /// Whether the table is in step with a source.
    synced: bool,
}

impl Manager {
    pub fn new(config: MobilityConfig) -> Self {
        Self {
            config,
            table: LinkTable::new(),
            sas: BTreeMap::new(),
            actions: VecDeque::new(),
            completed: VecDeque::new(),
            synced: false,
        }
    }

    /// The link table.
    pub fn table(&self) -> &LinkTable {
        &self.table
    }

    /// Whether a source has given a full picture.
    pub fn is_synced(&self) -> bool {
        self.synced
    }

    /// trigger-db's `id` for the event a kernel hint observed at
    /// `observed` (the hint's [`Cause`]) already gave: the moves it caused
    /// name their trigger. A move already reported to trigger-db keeps the
    /// report it had.
    pub fn name_cause(&mut self, observed: SystemTime, id: u64) {
        let hinted = |c: &mut Option<Cause>| {
            if let Some(c) = c
                && c.id == 0
                && c.observed == observed
            {
                c.id = id;
            }
        };
        for s in self.sas.values_mut() {
            // Marked by the hint and not evaluated yet (trigger-db's copy
            // came in the same burst).
            hinted(&mut s.cause);
            if let Some(p) = &mut s.pending {
                hinted(&mut p.timeline.cause);
            }
            for t in &mut s.moves {
                hinted(&mut t.cause);
            }
        }
        for (_, t) in &mut self.completed {
            hinted(&mut t.cause);
        }
    }

    /// A link event (from trigger-db or the agent's own watch).
    pub fn on_link_event(&mut self, event: LinkEvent, cause: Option<Cause>, now: Instant) {
        let touched = self.table.apply(event, now);
        self.mark(&touched, cause);
    }

    /// An item of the trigger-db subscription.
    pub fn on_feed(&mut self, feed: Feed, now: Instant) {
        match feed {
            Feed::Event {
                id,
                event,
                received,
                observed,
            } => self.on_link_event(
                event,
                Some(Cause {
                    id,
                    observed,
                    received,
                }),
                now,
            ),
            Feed::Synced => self.synced = true,
            Feed::Disconnected(_) => self.synced = false,
            Feed::Unreachable(addr) => {
                for sa in self.sas.values_mut() {
                    if sa.current.remote == addr {
                        sa.unresponsive = true;
                        sa.dirty = true;
                    }
                }
            }
            Feed::Connected | Feed::Rejected(_) => {}
        }
    }

    fn mark(&mut self, touched: &Touched, cause: Option<Cause>) {
        if touched.is_empty() {
            return;
        }
        for sa in self.sas.values_mut() {
            // While an update is on the wire, only what touches the pair it
            // goes to matters (its link or address going too: the update is
            // redirected). The pair being left, other candidates, links
            // that appear: `on_moved` evaluates the SA again when the peer
            // has answered. A burst of events on the link being left (a
            // link going down brings its addresses and routes with it)
            // would otherwise cost a round of route lookups each, while the
            // peer is busy moving its SAs.
            let target = sa
                .pending
                .as_ref()
                .filter(|p| p.updating)
                .and_then(|p| p.timeline.to);
            let affected = match target {
                Some(to) => {
                    let to_iface = self.table.owner_of(to.local).map(|i| i.index);
                    touched.all
                        || to_iface.is_none()
                        || to_iface.is_some_and(|i| touched.interfaces.contains(&i))
                }
                None => {
                    let current_iface = self.table.owner_of(sa.current.local).map(|i| i.index);
                    sa.last.is_none()
                        || policy::affects(
                            &self.table,
                            touched,
                            &sa.deps,
                            current_iface,
                            &sa.peer_addrs,
                        )
                        || current_iface.is_none()
                }
            };
            if affected {
                sa.dirty = true;
                // The first event since the last evaluation is the cause of
                // what the next one decides.
                if sa.cause.is_none() {
                    sa.cause = cause;
                }
            }
        }
    }

    /// An IKE SA is up (or its addresses or lists changed): `initiator` is
    /// whether we are its original initiator, `peer_addrs` the configured
    /// remote addresses and the peer's announced list.
    pub fn on_sa(
        &mut self,
        sa: SaId,
        initiator: bool,
        current: Pair,
        peer_addrs: Vec<IpAddr>,
        vips: Vec<IpAddr>,
        now: Instant,
    ) {
        let probe = self.config.probe_interval.map(|p| now + p.min(FIRST_PROBE));
        let e = self.sas.entry(sa).or_insert_with(|| SaPathState {
            initiator,
            current,
            current_link: None,
            since: now,
            peer_addrs: Vec::new(),
            vips: Vec::new(),
            tests: HashMap::new(),
            unresponsive: false,
            dirty: true,
            cause: None,
            last: None,
            deps: BTreeSet::new(),
            pending: None,
            moves: VecDeque::new(),
            announced: None,
            next_probe: probe,
            last_probe: None,
            recheck_at: None,
        });
        if e.current != current {
            e.current = current;
            e.since = now;
        }
        e.initiator = initiator;
        e.peer_addrs = peer_addrs;
        e.vips = vips;
        e.dirty = true;
    }

    /// The IKE SA was rekeyed (RFC 7296 §2.18): its paths, tests and
    /// moves carry over to `new`; a move under way is dropped (the engine
    /// does not carry requests over), and the next evaluation starts again.
    pub fn on_sa_rekeyed(&mut self, old: SaId, new: SaId) {
        let Some(mut s) = self.sas.remove(&old) else {
            return;
        };
        if let Some(p) = s.pending.take() {
            let mut timeline = p.timeline;
            timeline.failed = Some("the IKE SA was rekeyed".into());
            push_move(&mut s.moves, timeline);
        }
        s.dirty = true;
        self.sas.insert(new, s);
        self.actions.retain(|a| match a {
            Action::TestPaths { sa, .. }
            | Action::Update { sa, .. }
            | Action::Announce { sa, .. } => *sa != old,
        });
    }

    /// The IKE SA is gone.
    pub fn on_sa_gone(&mut self, sa: SaId) {
        self.sas.remove(&sa);
        self.actions.retain(|a| match a {
            Action::TestPaths { sa: s, .. }
            | Action::Update { sa: s, .. }
            | Action::Announce { sa: s, .. } => *s != sa,
        });
    }

    /// The engine's first retransmission on the current pair went
    /// unanswered.
    pub fn on_unresponsive(&mut self, sa: SaId) {
        if let Some(s) = self.sas.get_mut(&sa) {
            s.unresponsive = true;
            s.dirty = true;
        }
    }

    /// A path test's result: `rtt` when answered, `None` when not.
    pub fn on_test_result(&mut self, sa: SaId, pair: Pair, rtt: Option<Duration>, now: Instant) {
        let Some(s) = self.sas.get_mut(&sa) else {
            return;
        };
        s.tests.insert(pair, PathTest { at: now, rtt });
        let Some(p) = s.pending.as_mut() else {
            return;
        };
        if p.updating || !p.testing.contains(&pair) {
            return;
        }
        p.testing.retain(|t| *t != pair);
        if rtt.is_some() {
            p.timeline.first_answer.get_or_insert(now);
            p.answered.push(pair);
        }
        let reason = p.timeline.reason;
        let patient = !reason.loses_pair();
        // Forced: the first answer wins. Voluntary and predictive: the
        // best-ranked answer, once every better pair has answered or failed
        // (predictive: or PREDICTIVE_GRACE after the first answer).
        let choice = if !patient {
            rtt.map(|_| pair)
        } else {
            p.ranked
                .iter()
                .find(|c| p.answered.contains(c) || p.testing.contains(c))
                .filter(|c| p.answered.contains(c))
                .copied()
        };
        if choice.is_none() && rtt.is_some() && reason == MoveReason::GoingDown {
            let grace = now + PREDICTIVE_GRACE;
            p.deadline = Some(p.deadline.map_or(grace, |d| d.min(grace)));
        }
        let exhausted = p.testing.is_empty();
        if let Some(to) = choice {
            self.update(sa, to, now);
        } else if exhausted {
            self.retry(sa, now, "no candidate answered its path test");
        }
    }

    fn update(&mut self, sa: SaId, to: Pair, now: Instant) {
        let Some(s) = self.sas.get_mut(&sa) else {
            return;
        };
        let Some(p) = s.pending.as_mut() else {
            return;
        };
        p.updating = true;
        p.timeline.to = Some(to);
        p.timeline.to_link = link_of(&self.table, to.local);
        p.timeline.update_sent = Some(now);
        p.deadline = None;
        self.actions.push_back(Action::Update { sa, pair: to });
    }

    /// The move to `pair` is done (peer answered, kernel moved).
    pub fn on_moved(&mut self, sa: SaId, pair: Pair, now: Instant) {
        let Some(s) = self.sas.get_mut(&sa) else {
            return;
        };
        s.current = pair;
        s.since = now;
        s.unresponsive = false;
        s.dirty = true;
        let mut timeline = match s.pending.take() {
            Some(p) => p.timeline,
            // A move we did not decide (an operator's, or the peer's).
            None => return,
        };
        if timeline.to != Some(pair) {
            timeline.to = Some(pair);
            timeline.to_link = link_of(&self.table, pair.local);
        }
        timeline.moved = Some(now);
        push_move(&mut s.moves, timeline.clone());
        self.completed.push_back((sa, timeline));
    }

    /// The first ESP packet on the new path was counted.
    pub fn on_first_esp(&mut self, sa: SaId, now: Instant) {
        if let Some(t) = self.sas.get_mut(&sa).and_then(|s| s.moves.back_mut())
            && t.first_esp.is_none()
        {
            t.first_esp = Some(now);
        }
    }

    /// The update to `pair` failed (unanswered, UNACCEPTABLE_ADDRESSES, a
    /// kernel refusal): try the next candidate.
    pub fn on_move_failed(&mut self, sa: SaId, pair: Pair, why: &str, now: Instant) {
        let Some(s) = self.sas.get_mut(&sa) else {
            return;
        };
        s.tests.insert(pair, PathTest { at: now, rtt: None });
        if let Some(p) = s.pending.as_mut() {
            p.updating = false;
            p.ranked.retain(|c| *c != pair);
            p.answered.retain(|c| *c != pair);
            if let Some(&next) = p.answered.first() {
                self.update(sa, next, now);
                return;
            }
        }
        self.retry(sa, now, why);
    }

    /// Tests the next candidates of the pending move, or gives it up.
    fn retry(&mut self, sa: SaId, now: Instant, why: &str) {
        let Some(s) = self.sas.get_mut(&sa) else {
            return;
        };
        let Some(p) = s.pending.as_mut() else {
            return;
        };
        let decided = p.timeline.decided;
        let tests = &s.tests;
        // Pairs that failed during this move are out; those not tried yet
        // are next.
        p.ranked.retain(|c| {
            !tests
                .get(c)
                .is_some_and(|t| t.at >= decided && t.rtt.is_none())
        });
        let next: Vec<Pair> = p
            .ranked
            .iter()
            .filter(|c| tests.get(*c).is_none_or(|t| t.at < decided))
            .take(PARALLEL_TESTS)
            .copied()
            .collect();
        if next.is_empty() {
            if let Some(p) = s.pending.take() {
                let mut timeline = p.timeline;
                timeline.failed = Some(why.to_owned());
                push_move(&mut s.moves, timeline);
            }
            // Evaluate again: the table may offer other candidates now.
            s.dirty = true;
            return;
        }
        p.testing = next.clone();
        p.deadline = Some(now + TEST_TIMEOUT);
        self.actions
            .push_back(Action::TestPaths { sa, pairs: next });
    }

    /// Evaluates the IKE SAs that inputs concerned and the timers due;
    /// call after inputs, then poll actions.
    pub fn evaluate(&mut self, routes: &dyn RouteView, now: Instant) {
        // Only those an input concerned or a timer woke are looked up
        // again: the runtime evaluates after every burst of inputs, and a
        // lookup of each of N IKE SAs every time would make bringing up
        // N of them cost N² log N.
        let ids: Vec<SaId> = self
            .sas
            .iter()
            .filter(|(_, s)| s.needs_evaluation(now))
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.evaluate_one(id, routes, now);
        }
    }

    fn evaluate_one(&mut self, id: SaId, routes: &dyn RouteView, now: Instant) {
        let cfg = &self.config;
        let table = &self.table;
        let Some(s) = self.sas.get_mut(&id) else {
            return;
        };
        if !s.needs_evaluation(now) {
            return;
        }
        // Unanswered path tests time out as failures.
        let timed_out = s.tests_timed_out(now);
        s.recheck_at = None;
        // A due probe is rescheduled whatever the verdict (a move under
        // way, the responder's role): a timer left in the past would wake
        // the runtime at once, again and again.
        let probe_due = s.next_probe.is_some_and(|t| now >= t);
        if probe_due {
            s.next_probe = cfg.probe_interval.map(|p| now + p);
        }
        if let Some(link) = link_of(table, s.current.local) {
            s.current_link = Some(link);
        }
        let eval = policy::evaluate(table, &cfg.policy, routes, &s.view(), now);
        s.dirty = false;
        // A pair that is no candidate any more (its link, address or route
        // went) loses its test result: when it comes back, the result
        // says nothing about the path then. One of the best alternates
        // that has just become a candidate is tested soon.
        if let Some(before) = &s.last {
            let is_candidate =
                |p: &Pair| *p == s.current || eval.candidates.iter().any(|c| c.pair == *p);
            s.tests.retain(|p, _| is_candidate(p));
            let appeared = eval
                .candidates
                .iter()
                .map(|c| c.pair)
                .filter(|p| *p != s.current)
                .take(cfg.probe_alternates as usize)
                .any(|p| !before.candidates.iter().any(|c| c.pair == p));
            if appeared && cfg.probe_interval.is_some() {
                let gap = s.last_probe.map(|t| t + PROMPT_PROBE_GAP);
                let at = gap.map_or(now + PROMPT_PROBE, |g| g.max(now + PROMPT_PROBE));
                s.next_probe = Some(s.next_probe.map_or(at, |t| t.min(at)));
            }
        }
        // Consumed by this evaluation whatever it decides: an event that
        // moved nothing is not the cause of a later move.
        let cause = s.cause.take();
        // Our address list, for the peer.
        let mut addrs: Vec<IpAddr> = Vec::new();
        for c in &eval.candidates {
            if !addrs.contains(&c.pair.local) {
                addrs.push(c.pair.local);
            }
        }
        addrs.sort();
        // While the current pair is being lost, the initiator's list waits
        // for the move: sent now it would go on the dead pair and hold the
        // window the update needs. The evaluation after the move announces
        // it. (The responder does not move: it announces at once.)
        let losing = s.initiator
            && matches!(&eval.verdict, Verdict::Move { reason, .. } if reason.loses_pair());
        if !losing && s.announced.as_ref() != Some(&addrs) {
            self.actions.push_back(Action::Announce {
                sa: id,
                addrs: addrs.clone(),
            });
            s.announced = Some(addrs);
        }
        let verdict = eval.verdict.clone();
        let candidates: Vec<Pair> = eval.candidates.iter().map(|c| c.pair).collect();
        // A better pair held back only by the dwell time: look again when
        // it is over.
        if verdict == Verdict::Stay
            && candidates.first().is_some_and(|c| *c != s.current)
            && now < s.since + cfg.policy.min_dwell
        {
            s.recheck_at = Some(s.since + cfg.policy.min_dwell);
        }
        s.deps = eval.interfaces();
        s.last = Some(eval);
        if timed_out {
            let mut best = None;
            if let Some(p) = s.pending.as_mut() {
                for t in std::mem::take(&mut p.testing) {
                    s.tests.insert(t, PathTest { at: now, rtt: None });
                }
                // The best of those that answered in time.
                best = p.ranked.iter().find(|c| p.answered.contains(c)).copied();
            }
            // A forced move whose tests all went unanswered may be stuck
            // behind a request outstanding on the dead pair (the window
            // holds one): the update to the best candidate goes anyway, and
            // the engine retransmits that request from the new pair first
            // (RFC 4555 §3.5).
            let blind = s.pending.as_ref().and_then(|p| {
                (p.timeline.reason.loses_pair() && p.answered.is_empty())
                    .then(|| p.ranked.first().copied())
                    .flatten()
            });
            match best.or(blind) {
                Some(to) => self.update(id, to, now),
                None => self.retry(id, now, "path tests went unanswered"),
            }
            return;
        }
        let Some(s) = self.sas.get_mut(&id) else {
            return;
        };
        if !s.initiator {
            return;
        }
        // An update under way to a pair that is no candidate any more (its
        // link went before the peer answered) would be retransmitted there
        // until the engine gives up on the IKE SA: the newest pair wins
        // (RFC 4555 §3.5), so update to the best candidate now. Back to the
        // current pair, the move is over.
        if let Some(p) = s.pending.as_mut()
            && p.updating
            && p.timeline.to.is_some_and(|to| !candidates.contains(&to))
            && let Some(&best) = candidates.first()
        {
            self.actions
                .push_back(Action::Update { sa: id, pair: best });
            if best == s.current {
                if let Some(p) = s.pending.take() {
                    let mut timeline = p.timeline;
                    timeline.failed = Some("its pair went before the peer answered".into());
                    push_move(&mut s.moves, timeline);
                }
            } else {
                p.timeline.to = Some(best);
                p.timeline.to_link = link_of(table, best.local);
                p.timeline.update_sent = Some(now);
            }
            return;
        }
        // The reason for a move still being tested went away (the link
        // came back): stay.
        if verdict == Verdict::Stay
            && let Some(p) = s.pending.take_if(|p| !p.updating)
        {
            let mut timeline = p.timeline;
            timeline.failed = Some("not needed any more".into());
            push_move(&mut s.moves, timeline);
        }
        match verdict {
            Verdict::Move { reason, to } => {
                // A move already under way for a forced reason stands; a
                // voluntary one gives way to a forced one.
                if let Some(p) = &s.pending
                    && (p.updating || !p.timeline.reason.is_voluntary() || reason.is_voluntary())
                {
                    return;
                }
                let mut timeline = Timeline {
                    reason,
                    from: s.current,
                    from_link: s.current_link.clone(),
                    to: None,
                    to_link: None,
                    cause,
                    decided: now,
                    tests_sent: None,
                    first_answer: None,
                    update_sent: None,
                    moved: None,
                    first_esp: None,
                    failed: None,
                };
                let fresh = |p: &Pair| {
                    s.tests.get(p).is_some_and(|t| {
                        t.rtt.is_some()
                            && now.saturating_duration_since(t.at)
                                <= self.config.policy.test_valid_for
                    })
                };
                // A forced or predictive move to the best candidate tested
                // recently needs no test round.
                if !reason.is_voluntary()
                    && let Some(&best) = to.first()
                    && fresh(&best)
                {
                    timeline.to = Some(best);
                    timeline.to_link = link_of(table, best.local);
                    timeline.update_sent = Some(now);
                    s.pending = Some(Pending {
                        timeline,
                        ranked: to,
                        testing: Vec::new(),
                        answered: vec![best],
                        deadline: None,
                        updating: true,
                    });
                    self.actions
                        .push_back(Action::Update { sa: id, pair: best });
                    return;
                }
                let pairs: Vec<Pair> = to.iter().take(PARALLEL_TESTS).copied().collect();
                timeline.tests_sent = Some(now);
                s.pending = Some(Pending {
                    timeline,
                    ranked: to,
                    testing: pairs.clone(),
                    answered: Vec::new(),
                    deadline: Some(now + TEST_TIMEOUT),
                    updating: false,
                });
                self.actions.push_back(Action::TestPaths { sa: id, pairs });
            }
            Verdict::Stay | Verdict::Stranded(_) => {
                // Background tests of the best alternates.
                if probe_due {
                    let pairs: Vec<Pair> = candidates
                        .into_iter()
                        .filter(|p| *p != s.current)
                        .take(self.config.probe_alternates as usize)
                        .collect();
                    if !pairs.is_empty() && s.pending.is_none() {
                        s.last_probe = Some(now);
                        self.actions.push_back(Action::TestPaths { sa: id, pairs });
                    }
                }
            }
        }
    }

    /// The (local, remote) pairs whose kernel route the next
    /// [`Manager::evaluate`] asks about: those of the IKE SAs it will
    /// evaluate (empty when none is due).
    pub fn route_pairs(&self, now: Instant) -> Vec<(IpAddr, IpAddr)> {
        let mut out = Vec::new();
        for s in self.sas.values().filter(|s| s.needs_evaluation(now)) {
            for p in policy::route_pairs(&self.table, &self.config.policy, &s.view()) {
                if !out.contains(&p) {
                    out.push(p);
                }
            }
        }
        out
    }

    /// Whether the manager follows this IKE SA.
    pub fn follows(&self, sa: SaId) -> bool {
        self.sas.contains_key(&sa)
    }

    /// Where the engine goes next if the update to `pair` is refused or
    /// goes unanswered (RFC 4555 §3.5): the move's other candidates, those
    /// that answered a test first, then the rest in rank order (a test
    /// that went unanswered may have been stuck behind a request on the
    /// dead pair); not the pair being left nor one whose update failed
    /// during this move; at most [`PARALLEL_TESTS`].
    pub fn fallbacks(&self, sa: SaId, pair: Pair) -> Vec<Pair> {
        let Some(s) = self.sas.get(&sa) else {
            return Vec::new();
        };
        let Some(p) = s.pending.as_ref() else {
            return Vec::new();
        };
        let mut out: Vec<Pair> = Vec::new();
        for c in p.answered.iter().chain(&p.ranked) {
            if *c != pair && *c != s.current && !out.contains(c) {
                out.push(*c);
            }
        }
        out.truncate(PARALLEL_TESTS);
        out
    }

    /// Whether the move under way on `sa` is forced by a loss of its
    /// current pair ([`MoveReason::loses_pair`]): nothing is lost by moving
    /// the CHILD_SAs before the peer answers
    /// ([`crate::engine::Command::PathLost`]).
    pub fn path_lost(&self, sa: SaId) -> bool {
        self.sas
            .get(&sa)
            .and_then(|s| s.pending.as_ref())
            .is_some_and(|p| p.timeline.reason.loses_pair())
    }

    /// Whether a move is under way on any IKE SA.
    pub fn is_moving(&self) -> bool {
        self.sas.values().any(|s| s.pending.is_some())
    }

    /// The IKE SAs the manager follows.
    pub fn sas(&self) -> impl Iterator<Item = SaId> + '_ {
        self.sas.keys().copied()
    }

    /// The next action for the engine.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// A completed move, for LINK_HANDOVER_COMPLETE.
    pub fn poll_completed(&mut self) -> Option<(SaId, Timeline)> {
        self.completed.pop_front()
    }

    /// The next time [`Manager::evaluate`] has timers to run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.sas
            .values()
            .flat_map(|s| {
                [
                    s.pending.as_ref().and_then(|p| p.deadline),
                    s.next_probe,
                    s.recheck_at,
                ]
            })
            .flatten()
            .min()
    }

    /// Status of one IKE SA's paths.
    pub fn status(&self, sa: SaId) -> Option<SaMobility> {
        let s = self.sas.get(&sa)?;
        let mut tests: Vec<(Pair, PathTest)> = s.tests.iter().map(|(p, t)| (*p, *t)).collect();
        tests.sort_by_key(|(p, _)| *p);
        Some(SaMobility {
            current: s.current,
            candidates: s
                .last
                .as_ref()
                .map(|e| e.candidates.clone())
                .unwrap_or_default(),
            tests,
            moving: s.pending.as_ref().map(|p| p.timeline.clone()),
            moves: s.moves.iter().cloned().collect(),
        })
    }
}

impl SaPathState {
    fn view(&self) -> SaPaths<'_> {
        SaPaths {
            current: Some(self.current),
            since: self.since,
            peer_addrs: &self.peer_addrs,
            own_vips: &self.vips,
            tests: &self.tests,
            unresponsive: self.unresponsive,
        }
    }

    /// Path tests of the pending move that are past their deadline.
    fn tests_timed_out(&self, now: Instant) -> bool {
        self.pending
            .as_ref()
            .is_some_and(|p| !p.updating && p.deadline.is_some_and(|d| now >= d))
    }

    /// An input concerned it, or one of its timers is due.
    fn needs_evaluation(&self, now: Instant) -> bool {
        let due = |t: Option<Instant>| t.is_some_and(|t| now >= t);
        self.dirty || self.tests_timed_out(now) || due(self.recheck_at) || due(self.next_probe)
    }
}

/// The interface `addr` is on now.
fn link_of(table: &LinkTable, addr: IpAddr) -> Option<LinkRef> {
    table.owner_of(addr).map(LinkRef::from)
}

fn push_move(moves: &mut VecDeque<Timeline>, t: Timeline) {
    if moves.len() == HISTORY {
        moves.pop_front();
    }
    moves.push_back(t);
}

#[cfg(test)]
mod tests;
