//! The mobility manager in the runtime: where link events come from, and
//! the translation between the manager's actions and the engine.
//!
//! Sources, as `[mobility] source` says: the trigger-db subscription
//! (`trigger-db`), the agent's own rtnetlink watch (`netlink`), or both in
//! turn (`automatic`: the subscription while trigger-db answers; when it
//! is lost the watch starts, said in the log and status, and stops again
//! when the subscription is back, whose snapshot then replaces the
//! picture). Only the active source's events reach the manager, but for
//! the kernel's loss hints: while trigger-db is followed (and `[mobility]
//! kernel_hints` is on), the agent's own watch runs beside it and a link
//! down, an address removed or an interface gone that the manager has not
//! heard of yet goes to it at once ([`Hints`]).
//!
//! The subscription runs on a thread of its own (a current-thread runtime)
//! at a lower CPU priority ([`SUBSCRIPTION_NICE`]): a link's loss wakes the
//! kernel's teardown, trigger-db, the subscription and the own watch at
//! once, and on a busy host the engine's work for the move (the update, the
//! XFRM migration, the routes) goes first; what trigger-db delivers after
//! the own watch has spoken is the same news. On an idle host the priority
//! changes nothing.
//!
//! The manager and its link to the engine are [`Driver`]'s (sans-IO); here
//! the kernel is asked for the routes of the pairs the next evaluation
//! looks at (RTM_GETROUTE), and after a move the CHILD_SAs' inbound packet
//! counters are read every [`ESP_POLL`] until the first ESP packet on the
//! new path is counted, for the move's timeline. A move is written to
//! trigger-db (LINK_HANDOVER_COMPLETE) once that packet is seen (or not
//! within [`ESP_WAIT`]): not while the traffic is still finding the new
//! path, when trigger-db's commit would take the CPU from it.

use std::{
    collections::HashMap,
    net::IpAddr,
    path::PathBuf,
    time::{Duration, Instant, SystemTime},
};

use tokio::{sync::mpsc, task::JoinHandle};
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{debug, info, warn};

use crate::{
    control::Counters,
    engine::{Endpoint, Event, SaId},
    mobility::{
        Active, IfaceKind, LinkEvent, MobilityStatus,
        config::{MobilityConfig, Source},
        driver::Driver,
        hints::Hints,
        links::LinkRef,
        manager::Timeline,
        report::{self, HandoverReport},
        route_lookup::{RouteCache, RouteLookup},
        subscriber::{Feed, Subscriber},
        watch,
    },
};

/// Completed moves waiting for the trigger-db writer (which keeps its own
/// backlog while trigger-db is away).
const REPORT_QUEUE: usize = 64;
/// Feed items waiting between a source and the manager.
const FEED_QUEUE: usize = 256;
/// At most this many queued feed items are applied together before the
/// manager evaluates (a link going down comes with its addresses and
/// routes: one evaluation for the burst, not one per item).
pub const FEED_BURST: usize = 64;
/// How often the CHILD_SA counters are read while a moved SA waits for its
/// first ESP packet on the new path.
pub const ESP_POLL: Duration = Duration::from_millis(10);
/// How long after a move the first ESP packet is waited for.
const ESP_WAIT: Duration = Duration::from_secs(10);

/// The agent's own watch while it runs.
#[derive(Debug)]
struct Watch {
    rx: mpsc::Receiver<Feed>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// Where a feed item came from.
#[derive(Debug)]
pub enum Input {
    Subscription(Feed),
    Watch(Feed),
    /// The watch that runs beside the subscription for loss hints.
    Hint(Feed),
}

/// A moved IKE SA waiting for its first ESP packet on the new path.
#[derive(Debug)]
struct EspWait {
    /// Inbound packets of its CHILD_SAs when first read after the move.
    baseline: Option<u64>,
    until: Instant,
}

/// The runtime side of mobility (see the module doc).
#[derive(Debug)]
pub struct Mobility {
    source: Source,
    driver: Driver,
    subscription: Option<(mpsc::Receiver<Feed>, Subscription)>,
    watch: Option<Watch>,
    /// The watch run for [`Hints`] while trigger-db is the source.
    hint_watch: Option<Watch>,
    hints: Hints,
    active: Active,
    routes: RouteCache,
    /// `None` when the rtnetlink socket could not be opened (logged): every
    /// route is then unknown to the policy.
    lookup: Option<RouteLookup>,
    /// Completed moves for trigger-db (LINK_HANDOVER_COMPLETE); `None`
    /// with source `netlink`.
    reports: Option<mpsc::Sender<HandoverReport>>,
    esp: HashMap<SaId, EspWait>,
    /// Completed moves written to trigger-db when their SA's wait in
    /// `esp` ends.
    unreported: HashMap<SaId, Timeline>,
    /// Whether the kernel has counters (backend `xfrm`).
    counters: bool,
    rejected: u64,
    reports_dropped: u64,
}

impl Mobility {
    /// Starts the sources `config` names; `None` with source `off`.
    pub fn start(config: MobilityConfig, counters: bool) -> Option<Self> {
        let source = config.source;
        let kernel_hints = config.kernel_hints;
        if source == Source::Off {
            info!("mobility off: IKE SAs move only by `mobike-agent move` and the peer");
            return None;
        }
        let socket = config
            .trigger_db_socket
            .clone()
            .unwrap_or_else(trigger_client::socket_from_env);
        let now = SystemTime::now();
        let mut m = Self {
            source,
            driver: Driver::new(config),
            subscription: None,
            watch: None,
            hint_watch: None,
            hints: Hints::new(),
            active: Active::Waiting {
                since: now,
                why: "starting".into(),
            },
            routes: RouteCache::new(),
            lookup: match RouteLookup::new() {
                Ok(l) => Some(l),
                Err(e) => {
                    warn!(error = %errchain::chain(&e), "mobility: cannot ask the kernel for routes; a source routed out of another interface, or no route to the peer, goes unnoticed");
                    None
                }
            },
            reports: None,
            esp: HashMap::new(),
            unreported: HashMap::new(),
            counters,
            rejected: 0,
            reports_dropped: 0,
        };
        match source {
            Source::Netlink => m.start_watch("[mobility] source = \"netlink\"".into()),
            Source::TriggerDb | Source::Automatic => {
                info!(socket = %socket.display(), "mobility: subscribing to trigger-db");
                match subscribe(socket.clone()) {
                    Ok(s) => m.subscription = Some(s),
                    Err(e) => {
                        warn!(error = %e, "mobility: cannot start the trigger-db subscription's thread");
                        m.start_watch("no thread for the trigger-db subscription".into());
                    }
                }
                let (tx, rx) = mpsc::channel(REPORT_QUEUE);
                tokio::spawn(report::run(rx, socket));
                m.reports = Some(tx);
                if kernel_hints {
                    m.hint_watch = Some(spawn_watch(
                        "the agent's own rtnetlink watch for loss hints stopped: losses wait for trigger-db",
                    ));
                }
            }
            Source::Off => {}
        }
        Some(m)
    }

    fn start_watch(&mut self, why: String) {
        if self.watch.is_some() {
            return;
        }
        info!(%why, "mobility: following the host's links with the agent's own rtnetlink watch");
        self.watch = Some(spawn_watch(
            "the agent's own rtnetlink watch stopped: links are not followed until trigger-db is back",
        ));
        self.active = Active::Netlink {
            since: SystemTime::now(),
            why,
        };
    }

    fn stop_watch(&mut self) {
        // Its queued items are dropped with it; the subscription's
        // snapshot replaces the picture.
        if let Some(w) = self.watch.take() {
            w.stop();
        }
    }

    /// The next feed item of the active sources (pending while there is
    /// none). Cancel-safe.
    pub async fn next(&mut self) -> Input {
        let sub = async {
            match self.subscription.as_mut() {
                Some((rx, _)) => rx.recv().await,
                None => std::future::pending().await,
            }
        };
        let watch = async {
            match self.watch.as_mut() {
                Some(w) => w.rx.recv().await,
                None => std::future::pending().await,
            }
        };
        let hint = async {
            match self.hint_watch.as_mut() {
                Some(w) => w.rx.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            // Losses first: a burst of them comes with a link going down.
            biased;
            Some(f) = hint => Input::Hint(f),
            Some(f) = sub => Input::Subscription(f),
            Some(f) = watch => Input::Watch(f),
            else => std::future::pending().await,
        }
    }

    /// A feed item already queued by an active source, without waiting.
    pub fn try_next(&mut self) -> Option<Input> {
        if let Some(w) = self.hint_watch.as_mut()
            && let Ok(f) = w.rx.try_recv()
        {
            return Some(Input::Hint(f));
        }
        if let Some((rx, _)) = self.subscription.as_mut()
            && let Ok(f) = rx.try_recv()
        {
            return Some(Input::Subscription(f));
        }
        let w = self.watch.as_mut()?;
        w.rx.try_recv().ok().map(Input::Watch)
    }

    /// Applies a feed item: source switching, then the manager.
    pub fn on_input(&mut self, input: Input, now: Instant) {
        let feed = match input {
            Input::Subscription(f) => {
                match &f {
                    Feed::Connected => {
                        if self.watch.is_some() {
                            info!(
                                "mobility: trigger-db is back; following it (the agent's own watch stops)"
                            );
                            self.stop_watch();
                        }
                        self.active = Active::TriggerDb {
                            since: SystemTime::now(),
                        };
                    }
                    Feed::Disconnected(why) => {
                        let why = format!("trigger-db unavailable: {why}");
                        if self.source == Source::Automatic {
                            self.start_watch(why);
                        } else {
                            warn!(%why, "mobility: links are not followed until trigger-db is back");
                            self.active = Active::Waiting {
                                since: SystemTime::now(),
                                why,
                            };
                        }
                    }
                    Feed::Event {
                        event: LinkEvent::Snapshot { .. },
                        ..
                    } => self.hints.clear(),
                    _ => {}
                }
                f
            }
            Input::Watch(f) => f,
            Input::Hint(f) => {
                let following = matches!(self.active, Active::TriggerDb { .. })
                    && self.driver.manager().is_synced();
                let Feed::Event {
                    event, observed, ..
                } = &f
                else {
                    return;
                };
                if !following
                    || !self
                        .hints
                        .pass(event, *observed, self.driver.manager().table())
                {
                    return;
                }
                debug!(
                    ?event,
                    "mobility: the kernel said it before trigger-db (a loss, or its end)"
                );
                f
            }
        };
        if let Feed::Rejected(e) = &feed {
            self.rejected += 1;
            warn!(error = %e, "mobility: a link event was not usable");
        }
        // trigger-db's copy of a loss a hint gave: the move names it.
        let named = match &feed {
            Feed::Event { id, event, .. } if *id != 0 && self.hint_watch.is_some() => {
                Some((self.hints.from_trigger_db(event), *id))
            }
            _ => None,
        };
        let manager = self.driver.manager_mut();
        manager.on_feed(feed, now);
        if let Some((hints, id)) = named {
            for observed in hints {
                manager.name_cause(observed, id);
            }
        }
    }

    /// An engine event, for the manager; a moved IKE SA waits for its
    /// first ESP packet on the new path.
    pub fn on_event(&mut self, ep: &Endpoint, e: &Event, now: Instant) {
        match e {
            Event::IkeSaRekeyed { old, .. } | Event::IkeSaDeleted { sa: old, .. } => {
                self.esp.remove(old);
                if let Some(t) = self.unreported.remove(old) {
                    self.report(&t);
                }
            }
            _ => {}
        }
        if let Some(sa) = self.driver.on_event(ep, e, now)
            && self.counters
        {
            let until = now + ESP_WAIT;
            self.esp.insert(
                sa,
                EspWait {
                    baseline: None,
                    until,
                },
            );
        }
    }

    /// Looks up the routes the next evaluation needs, evaluates and hands
    /// the manager's actions to the engine (see [`Driver::drive`]).
    pub async fn drive(
        &mut self,
        ep: &mut Endpoint,
        now: Instant,
        listening_on: impl Fn(IpAddr) -> bool,
    ) -> Vec<(SaId, Timeline)> {
        let pairs = self.driver.manager().route_pairs(now);
        if !pairs.is_empty()
            && let Some(lookup) = &mut self.lookup
        {
            self.routes.refresh(lookup, pairs).await;
        }
        let done = self.driver.drive(ep, &self.routes, now, listening_on);
        for (sa, t) in &done {
            if self.esp.contains_key(sa) {
                if let Some(earlier) = self.unreported.insert(*sa, t.clone()) {
                    self.report(&earlier);
                }
            } else {
                self.report(t);
            }
        }
        done
    }

    /// Hands a completed move to the LINK_HANDOVER_COMPLETE writer.
    fn report(&mut self, t: &Timeline) {
        let (Some(tx), Some(to), Some(moved)) = (&self.reports, t.to, t.moved) else {
            return;
        };
        let unknown = || LinkRef {
            index: 0,
            name: String::new(),
            kind: IfaceKind::Other,
            driver_kind: String::new(),
        };
        let start = t.cause.map_or(t.decided, |c| c.received.min(t.decided));
        let r = HandoverReport {
            old_link: t.from_link.clone().unwrap_or_else(unknown),
            new_link: t.to_link.clone().unwrap_or_else(unknown),
            old_pair: t.from,
            new_pair: to,
            reason: t.reason,
            cause_id: t.cause.map_or(0, |c| c.id),
            observed: t.cause.map_or_else(
                || {
                    let now = SystemTime::now();
                    now.checked_sub(moved.saturating_duration_since(t.decided))
                        .unwrap_or(now)
                },
                |c| c.observed,
            ),
            duration: moved.saturating_duration_since(start),
        };
        if let Err(e) = tx.try_send(r) {
            self.reports_dropped += 1;
            warn!(report = %e.into_inner().describe(), "mobility: the handover is not written to trigger-db (its writer is behind)");
        }
    }

    /// When [`Mobility::drive`] has timers to run, or the counters are to
    /// be read.
    pub fn poll_timeout(&self, now: Instant) -> Option<Instant> {
        let esp = (!self.esp.is_empty()).then(|| now + ESP_POLL);
        [self.driver.manager().poll_timeout(), esp]
            .into_iter()
            .flatten()
            .min()
    }

    /// Whether the CHILD_SA counters are wanted (an SA waits for its first
    /// ESP packet after a move).
    pub fn wants_counters(&self) -> bool {
        !self.esp.is_empty()
    }

    /// The CHILD_SA counters read after a move: the first growth of an
    /// SA's inbound packets after the move is its first ESP packet.
    pub fn on_counters(&mut self, ep: &Endpoint, counters: &Counters, now: Instant) {
        let manager = self.driver.manager_mut();
        self.esp.retain(|sa, wait| {
            let Some(info) = ep.ike_sa(*sa) else {
                return false;
            };
            let packets: u64 = info
                .child_sas
                .iter()
                .filter_map(|c| counters.get(&(c.reqid, c.inbound_spi)))
                .filter_map(|r| r.as_ref().ok())
                .map(|c| c.inbound.packets)
                .sum();
            match wait.baseline {
                None => {
                    wait.baseline = Some(packets);
                    true
                }
                Some(b) if packets > b => {
                    manager.on_first_esp(*sa, now);
                    false
                }
                Some(_) => now < wait.until,
            }
        });
        // The waits that ended: their moves are complete.
        let ended: Vec<SaId> = self
            .unreported
            .keys()
            .filter(|sa| !self.esp.contains_key(sa))
            .copied()
            .collect();
        for sa in ended {
            if let Some(t) = self.unreported.remove(&sa) {
                self.report(&t);
            }
        }
    }

    /// Where link events come from now, in a few words (systemd's status
    /// line).
    pub fn following(&self) -> &'static str {
        match self.active {
            Active::TriggerDb { .. } => "links from trigger-db",
            Active::Netlink { .. } => "links from its own rtnetlink watch",
            Active::Waiting { .. } => "waiting for trigger-db",
        }
    }

    /// Status for the control socket.
    pub fn status(&self) -> MobilityStatus {
        MobilityStatus {
            source: self.source,
            active: self.active.clone(),
            synced: self.driver.manager().is_synced(),
            interfaces: self.driver.manager().table().interfaces().count(),
            rejected: self.rejected,
            reports_dropped: self.reports_dropped,
            kernel_hints: self.hint_watch.as_ref().map(|_| self.hints.passed()),
            sas: self
                .driver
                .manager()
                .sas()
                .filter_map(|sa| Some((sa, self.driver.manager().status(sa)?)))
                .collect(),
        }
    }

    /// Stops the sources (the moves not written to trigger-db yet are
    /// handed to its writer first).
    pub fn stop(&mut self) {
        for (_, t) in std::mem::take(&mut self.unreported) {
            self.report(&t);
        }
        self.stop_watch();
        if let Some(w) = self.hint_watch.take() {
            w.stop();
        }
        // Its thread ends as the subscription is dropped.
        self.subscription = None;
    }
}

impl Watch {
    fn stop(self) {
        self.stop.cancel();
        self.task.abort();
    }
}

/// Starts the agent's own rtnetlink watch; `stopped` is logged if it ends
/// on an error.
fn spawn_watch(stopped: &'static str) -> Watch {
    let (tx, rx) = mpsc::channel(FEED_QUEUE);
    let stop = CancellationToken::new();
    let task = tokio::spawn({
        let stop = stop.clone();
        async move {
            if let Err(e) = watch::run(tx, stop).await {
                warn!(error = %errchain::chain(&e), "{stopped}");
            }
        }
    });
    Watch { rx, stop, task }
}

/// How much lower than the agent's the subscription thread's CPU
/// priority is (nice, Linux's per-thread `setpriority`).
pub const SUBSCRIPTION_NICE: i32 = 5;

/// The subscription's thread: it ends when this is dropped.
#[derive(Debug)]
pub struct Subscription {
    _stop: DropGuard,
}

/// Starts the trigger-db subscription actor on its own thread.
fn subscribe(socket: PathBuf) -> std::io::Result<(mpsc::Receiver<Feed>, Subscription)> {
    let (tx, rx) = mpsc::channel(FEED_QUEUE);
    let stop = CancellationToken::new();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("trigger-db-sub".into())
        .spawn({
            let stop = stop.clone();
            move || {
                lower_priority(SUBSCRIPTION_NICE);
                rt.block_on(async move {
                    let connect = || {
                        let s = socket.clone();
                        async move { trigger_client::connect(&s).await }
                    };
                    tokio::select! {
                        e = Subscriber::new().run(connect, tx) => {
                            debug!(error = %e, "trigger-db subscription ended");
                        }
                        () = stop.cancelled() => {}
                    }
                });
            }
        })?;
    Ok((
        rx,
        Subscription {
            _stop: stop.drop_guard(),
        },
    ))
}

/// Lowers the calling thread's CPU priority by `by` (nice: per thread on
/// Linux); a failure is logged and changes nothing else.
fn lower_priority(by: i32) {
    // SAFETY: nice(2) on the calling thread; -1 is also a valid new nice
    // value, so errno is cleared first to tell a failure.
    let failed = unsafe {
        *libc::__errno_location() = 0;
        libc::nice(by) == -1 && *libc::__errno_location() != 0
    };
    if failed {
        debug!(error = %std::io::Error::last_os_error(), "cannot lower the subscription thread's priority");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nice() -> i32 {
        // SAFETY: getpriority on this thread's id.
        unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) }
    }

    #[test]
    fn the_priority_is_lowered_for_the_calling_thread_only() {
        let before = nice();
        let lowered = std::thread::spawn(|| {
            let before = nice();
            lower_priority(SUBSCRIPTION_NICE);
            (before, nice())
        })
        .join()
        .unwrap();
        assert_eq!(lowered.1, (lowered.0 + SUBSCRIPTION_NICE).min(19));
        assert_eq!(nice(), before);
    }
}
