//! The mobility manager in the runtime: where link events come from, and
//! the translation between the manager's actions and the engine.
//!
//! Sources, as `[mobility] source` says: the trigger-db subscription
//! (`trigger-db`), the agent's own rtnetlink watch (`netlink`), or both in
//! turn (`automatic`: the subscription while trigger-db answers; when it
//! is lost the watch starts, said in the log and status, and stops again
//! when the subscription is back, whose snapshot then replaces the
//! picture). Only the active source's events reach the manager.
//!
//! The engine's events about MOBIKE IKE SAs (established, rekeyed, moved,
//! path tests, failed updates, unresponsive pairs, the peer's address
//! list, virtual IPs, deletion) go to the manager; its actions become
//! engine commands at once, in the same loop turn, so that a trigger's
//! update is on the wire before the loop waits again. Before each
//! evaluation the kernel is asked for the routes of the pairs it will
//! look at (RTM_GETROUTE). After a move the CHILD_SAs' inbound packet
//! counters are read every [`ESP_POLL`] until the first ESP packet on the
//! new path is counted, for the move's timeline. Completed moves are
//! logged and handed to the LINK_HANDOVER_COMPLETE reporter.
//!
//! Not here: decisions (the manager's, sans-IO) and the engine's RFC 4555
//! exchanges.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    time::{Duration, Instant, SystemTime},
};

use tokio::{sync::mpsc, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::{
    control::Counters,
    engine::{Command, Endpoint, Event, IkeSaInfo, Path, SaId},
    mobility::{
        Active, MobilityStatus,
        config::{MobilityConfig, Source},
        manager::{Action, Manager, Timeline},
        policy::{Pair, RouteAnswer},
        subscriber::{Feed, Subscriber},
        watch,
    },
};

/// Feed items waiting between a source and the manager.
const FEED_QUEUE: usize = 256;
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
    manager: Manager,
    subscription: Option<(mpsc::Receiver<Feed>, JoinHandle<()>)>,
    watch: Option<Watch>,
    active: Active,
    routes: RouteCache,
    esp: HashMap<SaId, EspWait>,
    /// Whether the kernel has counters (backend `xfrm`).
    counters: bool,
    rejected: u64,
    reports_dropped: u64,
    /// Our address list, held while a move is under way.
    announce: Option<Vec<IpAddr>>,
}

/// The kernel's answers for the pairs of one evaluation.
#[derive(Debug, Default)]
struct RouteCache {
    answers: HashMap<(IpAddr, IpAddr), RouteAnswer>,
}

impl RouteCache {
    async fn refresh(&mut self, pairs: &[(IpAddr, IpAddr)]) {
        self.answers.clear();
        for p in pairs {
            self.answers.insert(*p, RouteAnswer::Unknown);
        }
    }
}

impl crate::mobility::policy::RouteView for RouteCache {
    fn route(&self, local: IpAddr, remote: IpAddr) -> RouteAnswer {
        self.answers
            .get(&(local, remote))
            .copied()
            .unwrap_or(RouteAnswer::Unknown)
    }
}

impl Mobility {
    /// Starts the sources `config` names; `None` with source `off`.
    pub fn start(config: MobilityConfig, counters: bool) -> Option<Self> {
        let source = config.source;
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
            manager: Manager::new(config),
            subscription: None,
            watch: None,
            active: Active::Waiting {
                since: now,
                why: "starting".into(),
            },
            routes: RouteCache::default(),
            esp: HashMap::new(),
            counters,
            rejected: 0,
            reports_dropped: 0,
            announce: None,
        };
        match source {
            Source::Netlink => m.start_watch("[mobility] source = \"netlink\"".into()),
            Source::TriggerDb | Source::Automatic => {
                info!(socket = %socket.display(), "mobility: subscribing to trigger-db");
                m.subscription = Some(subscribe(socket));
            }
            Source::Off => {}
        }
        Some(m)
    }

    fn start_watch(&mut self, why: String) {
        if self.watch.is_some() {
            return;
        }
        let (tx, rx) = mpsc::channel(FEED_QUEUE);
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                if let Err(e) = watch::run(tx, stop).await {
                    warn!(error = %errchain::chain(&e), "the agent's own rtnetlink watch stopped: links are not followed until trigger-db is back");
                }
            }
        });
        info!(%why, "mobility: following the host's links with the agent's own rtnetlink watch");
        self.watch = Some(Watch { rx, stop, task });
        self.active = Active::Netlink {
            since: SystemTime::now(),
            why,
        };
    }

    fn stop_watch(&mut self) {
        if let Some(w) = self.watch.take() {
            w.stop.cancel();
            // Its queued items are dropped with the receiver; the
            // subscription's snapshot replaces the picture.
            drop(w.rx);
            w.task.abort();
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
        tokio::select! {
            Some(f) = sub => Input::Subscription(f),
            Some(f) = watch => Input::Watch(f),
            else => std::future::pending().await,
        }
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
                    _ => {}
                }
                f
            }
            Input::Watch(f) => f,
        };
        if let Feed::Rejected(e) = &feed {
            self.rejected += 1;
            warn!(error = %e, "mobility: a link event was not usable");
        }
        self.manager.on_feed(feed, now);
    }

    /// An engine event: the manager follows the MOBIKE IKE SAs.
    pub fn on_event(&mut self, ep: &Endpoint, e: &Event, now: Instant) {
        match e {
            Event::IkeSaEstablished {
                sa, mobike: true, ..
            } => self.follow(ep, *sa, now),
            Event::IkeSaRekeyed { old, new } => {
                self.manager.on_sa_rekeyed(*old, *new);
                self.esp.remove(old);
                self.follow(ep, *new, now);
            }
            Event::PathChanged { sa, path } if self.manager.follows(*sa) => {
                self.manager.on_moved(*sa, pair_of(path), now);
                self.follow(ep, *sa, now);
                if self.counters {
                    let until = now + ESP_WAIT;
                    self.esp.insert(
                        *sa,
                        EspWait {
                            baseline: None,
                            until,
                        },
                    );
                }
            }
            Event::PathTested { sa, path, rtt } => {
                self.manager.on_test_result(*sa, pair_of(path), *rtt, now);
            }
            Event::UpdateFailed { sa, path, reason } => {
                self.manager
                    .on_move_failed(*sa, pair_of(path), &format!("{reason:?}"), now);
            }
            Event::Unresponsive { sa, .. } => self.manager.on_unresponsive(*sa),
            Event::PeerAddresses { sa, .. } | Event::VirtualIps { sa, .. }
                if self.manager.follows(*sa) =>
            {
                self.follow(ep, *sa, now);
            }
            Event::IkeSaDeleted { sa, .. } => {
                self.manager.on_sa_gone(*sa);
                self.esp.remove(sa);
            }
            _ => {}
        }
    }

    /// Tells the manager an IKE SA's current pair, peer addresses and
    /// virtual IPs as the engine has them.
    fn follow(&mut self, ep: &Endpoint, sa: SaId, now: Instant) {
        let Some(info) = ep.ike_sa(sa) else {
            return;
        };
        if !info.mobike {
            return;
        }
        self.manager.on_sa(
            sa,
            info.initiator,
            pair_of(&info.path),
            peer_addrs(&info),
            info.vips.clone(),
            now,
        );
    }

    /// Evaluates what inputs concerned and hands the manager's actions to
    /// the engine; `listening_on` says whether an IKE socket can send from
    /// a local address. Completed moves go to `reports`.
    pub async fn drive(
        &mut self,
        ep: &mut Endpoint,
        now: Instant,
        listening_on: impl Fn(IpAddr) -> bool,
    ) -> Vec<(SaId, Timeline)> {
        let pairs = self.manager.route_pairs(now);
        if !pairs.is_empty() {
            self.routes.refresh(&pairs).await;
        }
        self.manager.evaluate(&self.routes, now);
        let mut fresh: Option<Vec<IpAddr>> = None;
        while let Some(a) = self.manager.poll_action() {
            match a {
                Action::TestPaths { sa, pairs } => {
                    let Some(info) = ep.ike_sa(sa) else { continue };
                    let (ok, cannot): (Vec<Pair>, Vec<Pair>) =
                        pairs.into_iter().partition(|p| listening_on(p.local));
                    for p in cannot {
                        debug!(sa, local = %p.local, "no IKE socket can send from this address; not a candidate");
                        self.manager.on_test_result(sa, p, None, now);
                    }
                    if ok.is_empty() {
                        continue;
                    }
                    let paths = ok.iter().map(|p| path_of(&info, *p)).collect();
                    debug!(sa, pairs = ?ok, "mobility: testing paths");
                    if let Err(e) = ep.handle_command(now, Command::TestPaths { sa, paths }) {
                        debug!(sa, error = %e, "mobility: path test not sent");
                        for p in ok {
                            self.manager.on_test_result(sa, p, None, now);
                        }
                    }
                }
                Action::Update { sa, pair } => {
                    let Some(info) = ep.ike_sa(sa) else { continue };
                    if !listening_on(pair.local) {
                        self.manager.on_move_failed(
                            sa,
                            pair,
                            "no IKE socket can send from this address",
                            now,
                        );
                        continue;
                    }
                    let p = path_of(&info, pair);
                    info!(sa = format_args!("{sa:#018x}"), from = %info.path.local, to = %p.local, remote = %p.remote, "mobility: moving the IKE SA");
                    let cmd = Command::UpdateAddresses {
                        sa,
                        local: p.local,
                        remote: p.remote,
                        fallback: Vec::new(),
                    };
                    if let Err(e) = ep.handle_command(now, cmd) {
                        self.manager.on_move_failed(sa, pair, &e.to_string(), now);
                    }
                }
                Action::Announce { addrs, .. } => {
                    let all = fresh.get_or_insert_with(Vec::new);
                    for a in addrs {
                        if !all.contains(&a) {
                            all.push(a);
                        }
                    }
                }
            }
        }
        if fresh.is_some() {
            self.announce = fresh;
        }
        // A move goes first: an INFORMATIONAL with the list queued ahead of
        // the update would delay it by a round trip, or by a retransmission
        // on a dying pair.
        if !self.manager.is_moving()
            && let Some(mut addrs) = self.announce.take()
        {
            addrs.retain(|a| listening_on(*a));
            addrs.sort();
            debug!(?addrs, "mobility: our address list");
            if let Err(e) = ep.handle_command(now, Command::AnnounceAddresses { addrs }) {
                debug!(error = %e, "mobility: address list not announced");
            }
        }
        std::iter::from_fn(|| self.manager.poll_completed()).collect()
    }

    /// When [`Mobility::drive`] has timers to run, or the counters are to
    /// be read.
    pub fn poll_timeout(&self, now: Instant) -> Option<Instant> {
        let esp = (!self.esp.is_empty()).then(|| now + ESP_POLL);
        [self.manager.poll_timeout(), esp]
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
        let manager = &mut self.manager;
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
    }

    /// Status for the control socket.
    pub fn status(&self) -> MobilityStatus {
        MobilityStatus {
            source: self.source,
            active: self.active.clone(),
            synced: self.manager.is_synced(),
            interfaces: self.manager.table().interfaces().count(),
            rejected: self.rejected,
            reports_dropped: self.reports_dropped,
            sas: self
                .manager
                .sas()
                .filter_map(|sa| Some((sa, self.manager.status(sa)?)))
                .collect(),
        }
    }

    /// Stops the sources.
    pub fn stop(&mut self) {
        self.stop_watch();
        if let Some((_, task)) = self.subscription.take() {
            task.abort();
        }
    }
}

/// Starts the trigger-db subscription actor.
fn subscribe(socket: PathBuf) -> (mpsc::Receiver<Feed>, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(FEED_QUEUE);
    let task = tokio::spawn(async move {
        let connect = || {
            let s = socket.clone();
            async move { trigger_client::connect(&s).await }
        };
        let e = Subscriber::new().run(connect, tx).await;
        debug!(error = %e, "trigger-db subscription ended");
    });
    (rx, task)
}

fn pair_of(p: &Path) -> Pair {
    Pair {
        local: p.local.ip(),
        remote: p.remote.ip(),
    }
}

/// The engine path for `pair` on `info`'s IKE SA: its ports stay (after
/// IKE_AUTH a MOBIKE IKE SA is on the NAT-T port, RFC 4555 §3.3).
fn path_of(info: &IkeSaInfo, pair: Pair) -> Path {
    Path {
        local: SocketAddr::new(pair.local, info.path.local.port()),
        remote: SocketAddr::new(pair.remote, info.path.remote.port()),
    }
}

/// Where the IKE SA may go: the peer's address now, the configured
/// `remote_addrs` and the peer's announced list.
fn peer_addrs(info: &IkeSaInfo) -> Vec<IpAddr> {
    let mut v = vec![info.path.remote.ip()];
    for a in info.remote_addrs.iter().chain(&info.peer_addrs) {
        if !v.contains(a) && !a.is_unspecified() {
            v.push(*a);
        }
    }
    v
}
