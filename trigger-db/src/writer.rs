//! The writer actor: the only task that writes to the store. It takes client
//! Adds and source batches from bounded queues, coalesces whatever is
//! waiting into one transaction (group commit: one fsync for many callers),
//! gives the triggers their ids from a range already reserved in the store,
//! publishes them to the hub in id order at once (live delivery does not
//! wait for the fsync), stores them, and only then acknowledges the Add
//! callers. Modify, Delete, Flush and retention run between
//! batches on the same connection, so SQLite never sees two writers.
//!
//! Source triggers (no caller waits for them) are stored in groups: they go
//! to subscribers at once, and to the store up to
//! [`WriterConfig::source_store_delay`] later, in one transaction with what
//! came in meanwhile. A link going down brings its addresses and routes
//! with it, a burst of triggers the kernel announces one by one: one
//! commit (and fsync) for the burst instead of one each, after the moment
//! when the host's daemons have most to do. An Add, any other write and
//! retention store the held triggers first, in id order; Add replies are
//! never delayed.
//!
//! Source triggers pass through the [`Damper`] first (debounce per
//! interface and class, see `damping`); the actor also wakes when a held
//! trigger's quiet period ends and stores it then. Every LINK_DOWN that
//! comes in (before the debounce: a suppressed flap is a flap) counts as a
//! flap of its interface.
//!
//! A commit that fails (disk full, read-only file system) is never silent:
//! Add callers get the error, `write_errors` and `unstored_triggers` count
//! it, the threshold engine is put back to where it was before the failed
//! batch, and the source triggers that could not be stored are followed, as
//! soon as the store takes writes again, by a RESYNC trigger (source
//! trigger-db, cause "store-error") and the link changes since the last
//! stored link table, so subscribers learn that they missed something and
//! get the current state. The actor retries that on its own every second,
//! without waiting for new input.
//!
//! With a PostgreSQL store, the actor also ships the spool (see
//! `store::spool`) about twice a second while it has a backlog, between
//! batches; a batch the full spool would refuse is refused before its
//! triggers go to subscribers. Thresholds that could not be loaded at the
//! start (the server unreachable) are loaded once it is reachable again.
//!
//! On shutdown it drains both queues, releases what the damper holds,
//! commits, checkpoints the WAL and closes the hub, so every stream ends
//! cleanly after the last trigger.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::{
    damping::{Damper, FlapCounter, InterfaceFlaps, Offer},
    hub::Hub,
    ingest::{SourceBatch, SourceReceiver},
    links::LinkTable,
    model::{Filter, Source, Timestamp, Trigger, TriggerType},
    source::netlink,
    store::{StoreError, Writer},
    threshold::{Change, Engine, Threshold},
};

/// Capacity of the client command queue.
const COMMAND_QUEUE: usize = 1024;
/// Ids reserved ahead in one small transaction ([`Writer::reserve_ids`]):
/// one such commit per this many triggers, and after a crash the ids
/// continue at most this far above the last one given.
const ID_RESERVATION: u64 = 4096;

/// Default of [`WriterConfig::source_store_delay`]: longer than the burst of
/// messages a link going down brings (the kernel sends its addresses and
/// routes one by one), short against anything that reads the store.
pub const SOURCE_STORE_DELAY: Duration = Duration::from_millis(50);

/// How often the actor retries storing the RESYNC after a failed write.
const RECOVERY_RETRY: Duration = Duration::from_secs(1);

/// How often the actor ships the PostgreSQL store's spool while it has a
/// backlog.
const SHIP_EVERY: Duration = Duration::from_millis(500);

/// The RESYNC cause for triggers the store could not take.
pub const STORE_ERROR_CAUSE: &str = "store-error";

type AddReply = oneshot::Sender<Result<Vec<u64>, StoreError>>;

#[derive(Debug)]
enum Command {
    Add {
        triggers: Vec<Trigger>,
        reply: AddReply,
    },
    Modify {
        trigger: Box<Trigger>,
        reply: oneshot::Sender<Result<Trigger, StoreError>>,
    },
    Delete {
        ids: Vec<u64>,
        reply: oneshot::Sender<Result<u64, StoreError>>,
    },
    Flush {
        filter: Filter,
        before: Option<Timestamp>,
        reply: oneshot::Sender<Result<u64, StoreError>>,
    },
    ConfigureThresholds {
        changes: Vec<Change>,
        reply: oneshot::Sender<Result<(Vec<Threshold>, u64), StoreError>>,
    },
    ListThresholds {
        reply: oneshot::Sender<Result<Vec<Threshold>, StoreError>>,
    },
    /// Stores the held source triggers (before a read of the store).
    StoreHeld {
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
}

/// Retention settings; `None` disables that bound.
#[derive(Debug, Clone, Default)]
pub struct Retention {
    pub max_age: Option<Duration>,
    pub max_rows: Option<u64>,
    pub interval: Duration,
}

#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// Most triggers one transaction coalesces.
    pub batch_max: usize,
    pub retention: Retention,
    /// Debounce of source triggers per type (none: no damping).
    pub debounce: Vec<(TriggerType, Duration)>,
    /// How long source triggers, published at once, may wait to be stored
    /// with what follows them (zero: each batch is stored as it comes).
    pub source_store_delay: Duration,
}

/// Counters the Stats verb reports.
#[derive(Debug)]
pub struct WriterStats {
    pub ingested: AtomicU64,
    pub transactions: AtomicU64,
    pub retention_deleted: AtomicU64,
    /// Commits that failed.
    pub write_errors: AtomicU64,
    /// Triggers no caller was told about (source and debounced triggers)
    /// lost to failed commits.
    pub unstored_triggers: AtomicU64,
    /// Source triggers replaced while held by the debounce.
    pub debounced: AtomicU64,
    /// Held link-state triggers dropped as no net change.
    pub suppressed_flaps: AtomicU64,
    /// Link-downs per interface, as they come in.
    flaps: Mutex<FlapCounter>,
}

impl Default for WriterStats {
    fn default() -> Self {
        Self::new(Duration::from_secs(60))
    }
}

impl WriterStats {
    /// Counters with flaps counted over `flap_window`.
    pub fn new(flap_window: Duration) -> Self {
        Self {
            ingested: AtomicU64::new(0),
            transactions: AtomicU64::new(0),
            retention_deleted: AtomicU64::new(0),
            write_errors: AtomicU64::new(0),
            unstored_triggers: AtomicU64::new(0),
            debounced: AtomicU64::new(0),
            suppressed_flaps: AtomicU64::new(0),
            flaps: Mutex::new(FlapCounter::new(flap_window)),
        }
    }

    /// Link-downs per interface as of `now`, and the window.
    pub fn flaps(&self, now: Instant) -> (Vec<InterfaceFlaps>, Duration) {
        let f = self.flaps.lock().unwrap_or_else(|p| p.into_inner());
        (f.snapshot(now), f.window())
    }
}

/// A cloneable handle for sending work to the writer.
#[derive(Debug, Clone)]
pub struct WriterHandle {
    tx: mpsc::Sender<Command>,
}

impl WriterHandle {
    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Command,
    ) -> Result<T, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Stores the triggers (all or none); returns their ids once durable.
    pub async fn add(&self, triggers: Vec<Trigger>) -> Result<Vec<u64>, StoreError> {
        self.call(|reply| Command::Add { triggers, reply }).await
    }

    pub async fn modify(&self, trigger: Trigger) -> Result<Trigger, StoreError> {
        self.call(|reply| Command::Modify {
            trigger: Box::new(trigger),
            reply,
        })
        .await
    }

    pub async fn delete(&self, ids: Vec<u64>) -> Result<u64, StoreError> {
        self.call(|reply| Command::Delete { ids, reply }).await
    }

    pub async fn flush(
        &self,
        filter: Filter,
        before: Option<Timestamp>,
    ) -> Result<u64, StoreError> {
        self.call(|reply| Command::Flush {
            filter,
            before,
            reply,
        })
        .await
    }
}

impl WriterHandle {
    /// Applies Link_Configure_Thresholds entries; returns the thresholds now
    /// configured for the scopes and parameters named, and how many were
    /// cancelled.
    pub async fn configure_thresholds(
        &self,
        changes: Vec<Change>,
    ) -> Result<(Vec<Threshold>, u64), StoreError> {
        self.call(|reply| Command::ConfigureThresholds { changes, reply })
            .await
    }

    pub async fn list_thresholds(&self) -> Result<Vec<Threshold>, StoreError> {
        self.call(|reply| Command::ListThresholds { reply }).await
    }

    /// Returns once every trigger published before the call is committed
    /// (or its commit failed): what a read of the store must see.
    pub async fn store_held(&self) -> Result<(), StoreError> {
        self.call(|reply| Command::StoreHeld { reply }).await
    }
}

/// Starts the writer actor. It runs until `shutdown` is cancelled and every
/// queued write is done, then closes the hub and the store.
pub fn spawn(
    writer: Writer,
    sources: SourceReceiver,
    hub: Arc<Hub>,
    stats: Arc<WriterStats>,
    config: WriterConfig,
    shutdown: CancellationToken,
) -> (WriterHandle, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
    // The store's sequence is the highest id ever given or reserved.
    let last_id = hub.last_id();
    let actor = Actor {
        writer,
        next_id: last_id + 1,
        reserved: last_id,
        commands: rx,
        sources,
        hub,
        stats,
        damper: Damper::new(&config.debounce),
        config,
        engine: Engine::default(),
        stored_links: None,
        lost: false,
        thresholds_loaded: false,
        held: Held::default(),
    };
    let task = tokio::spawn(actor.run(shutdown));
    (WriterHandle { tx }, task)
}

struct Actor {
    writer: Writer,
    /// The id the next trigger gets.
    next_id: u64,
    /// Ids up to this one are reserved in the store.
    reserved: u64,
    commands: mpsc::Receiver<Command>,
    sources: SourceReceiver,
    hub: Arc<Hub>,
    stats: Arc<WriterStats>,
    config: WriterConfig,
    /// Derives threshold crossings from parameter reports, in store order.
    engine: Engine,
    /// Debounces source triggers.
    damper: Damper,
    /// The link table as of the last stored batch that carried one: where
    /// the RESYNC after a failed write diffs from.
    stored_links: Option<Arc<LinkTable>>,
    /// Triggers nobody was told about failed to store; the next commit
    /// starts with the RESYNC.
    lost: bool,
    /// The thresholds were read from the store (not yet when it was
    /// unreachable at the start).
    thresholds_loaded: bool,
    /// Source triggers published and not stored yet.
    held: Held,
}

/// Source triggers sent to subscribers, waiting to be stored with what
/// follows them ([`WriterConfig::source_store_delay`]).
#[derive(Default)]
struct Held {
    /// In id order; the hub keeps them in flight until they are settled.
    triggers: Vec<Arc<Trigger>>,
    /// The newest link table among their batches.
    links: Option<Arc<LinkTable>>,
    /// When they are stored at the latest.
    until: Option<Instant>,
}

/// What [`Actor::write_failed`] needs to know of the batch.
struct Failed {
    /// Triggers in the batch (with RESYNC and derived crossings).
    n: usize,
    /// Of them, those that came in (from sources and Adds).
    incoming: usize,
    /// The recovery triggers at the batch's head.
    acked_from: usize,
    /// The threshold state before the batch, if it had reports.
    engine_before: Option<Engine>,
}

/// What one group commit collects.
#[derive(Default)]
struct Pending {
    triggers: Vec<Trigger>,
    /// Per Add caller: how many of `triggers` are theirs.
    acks: Vec<(usize, AddReply)>,
    /// The newest link table among the source batches, with the number of
    /// triggers that come before it is in force.
    links: Option<Arc<LinkTable>>,
}

impl Pending {
    fn len(&self) -> usize {
        self.triggers.len()
    }
}

impl Actor {
    /// Reads the configured thresholds into the engine.
    async fn load_thresholds(&mut self) {
        match self.writer.load_thresholds().await {
            Ok(t) => {
                if !t.is_empty() {
                    info!(thresholds = t.len(), "thresholds loaded");
                }
                self.engine = Engine::new(t);
                self.thresholds_loaded = true;
            }
            Err(e) => {
                error!(error = %errchain::chain(&e), "cannot load thresholds; none active")
            }
        }
    }

    /// Ships the spool's backlog (PostgreSQL), then loads the thresholds
    /// if the start could not.
    async fn ship(&mut self) {
        match self.writer.ship().await {
            Ok(n) => {
                if n > 0 {
                    debug!(shipped = n, "spool shipped");
                }
                if !self.thresholds_loaded {
                    self.load_thresholds().await;
                }
            }
            // Kept for Stats and logged by the store when it changes.
            Err(e) => debug!(error = %errchain::chain(&e), "shipping the spool failed"),
        }
    }

    async fn run(mut self, shutdown: CancellationToken) {
        self.load_thresholds().await;
        let mut ship = tokio::time::interval(SHIP_EVERY);
        ship.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut retention =
            tokio::time::interval(self.config.retention.interval.max(Duration::from_secs(1)));
        retention.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut recovery = tokio::time::interval(RECOVERY_RETRY);
        recovery.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut commands_open = true;
        let mut sources_open = true;
        loop {
            let deadline = self.damper.next_deadline();
            let wake = tokio::time::sleep_until(tokio::time::Instant::from_std(
                deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(3_600)),
            ));
            let store_at = self.held.until;
            let store = tokio::time::sleep_until(tokio::time::Instant::from_std(
                store_at.unwrap_or_else(|| Instant::now() + Duration::from_secs(3_600)),
            ));
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                () = store, if store_at.is_some() => self.store_held().await,
                // Ready at most twice a second: it cannot starve the
                // queues below.
                _ = ship.tick(), if self.writer.has_backlog() => self.ship().await,
                cmd = self.commands.recv(), if commands_open => match cmd {
                    Some(cmd) => self.handle(cmd).await,
                    None => commands_open = false,
                },
                () = wake, if deadline.is_some() => {
                    let p = Pending {
                        triggers: self.damper.expire(Instant::now()),
                        ..Default::default()
                    };
                    self.damped();
                    if !p.triggers.is_empty() {
                        self.group_commit(p).await;
                    }
                }
                batch = self.sources.recv(), if sources_open => match batch {
                    Some(batch) => {
                        let mut p = Pending::default();
                        self.push_batch(&mut p, batch);
                        self.group_commit(p).await;
                    }
                    None => sources_open = false,
                },
                _ = retention.tick() => self.retain().await,
                _ = recovery.tick(), if self.lost => {
                    // Nothing new came in since the failure: store the
                    // RESYNC by itself.
                    self.commit(Pending::default()).await;
                }
            }
        }
        // Shutdown: no new work is accepted once the senders see the closed
        // queues; finish what is queued.
        self.commands.close();
        self.sources.close();
        while let Some(cmd) = self.commands.recv().await {
            self.handle(cmd).await;
        }
        while let Some(batch) = self.sources.recv().await {
            let mut p = Pending::default();
            self.push_batch(&mut p, batch);
            self.group_commit(p).await;
        }
        self.store_held().await;
        let held = self.damper.expire_all();
        self.damped();
        if !held.is_empty() {
            info!(
                triggers = held.len(),
                "storing the triggers the debounce held"
            );
            let p = Pending {
                triggers: held,
                ..Default::default()
            };
            self.group_commit(p).await;
        }
        self.store_held().await;
        self.hub.close();
        // Ids reserved but never given go back, so that a clean restart
        // goes on with the next one (only a crash skips the rest of a
        // reservation).
        if self.reserved > self.next_id - 1
            && let Err(e) = self.writer.release_ids(self.next_id - 1).await
        {
            warn!(error = %e, "cannot give back the reserved ids; the next start skips them");
        }
        if let Err(e) = self.writer.close().await {
            error!(error = %e, "closing the database");
        }
        info!("writer stopped; store flushed");
    }

    async fn handle(&mut self, cmd: Command) {
        if !matches!(cmd, Command::Add { .. }) {
            // They read or change what is stored: the held triggers first.
            self.store_held().await;
        }
        match cmd {
            Command::Add { triggers, reply } => {
                let mut p = Pending::default();
                p.acks.push((triggers.len(), reply));
                p.triggers = triggers;
                self.group_commit(p).await;
            }
            Command::Modify { trigger, reply } => {
                let r = self.writer.modify(&trigger).await;
                let _ = reply.send(r);
            }
            Command::Delete { ids, reply } => {
                let r = self.writer.delete(&ids).await;
                let _ = reply.send(r);
            }
            Command::Flush {
                filter,
                before,
                reply,
            } => {
                let r = self.writer.flush(&filter, before).await;
                let _ = reply.send(r);
            }
            Command::ConfigureThresholds { changes, reply } => {
                let r = self.configure(&changes).await;
                let _ = reply.send(r);
            }
            Command::ListThresholds { reply } => {
                let _ = reply.send(Ok(self.engine.thresholds().to_vec()));
            }
            // Stored above; a failure is counted and reported there.
            Command::StoreHeld { reply } => {
                let _ = reply.send(Ok(()));
            }
        }
    }

    async fn configure(&mut self, changes: &[Change]) -> Result<(Vec<Threshold>, u64), StoreError> {
        let cancelled = self.writer.configure_thresholds(changes).await?;
        let all = self.writer.load_thresholds().await?;
        self.engine.set_thresholds(all.clone());
        self.thresholds_loaded = true;
        let named = all
            .into_iter()
            .filter(|t| {
                changes.iter().any(|c| match c {
                    Change::Set(s) => s.scope == t.scope && s.parameter == t.parameter,
                    Change::Cancel {
                        scope, parameter, ..
                    } => *scope == t.scope && *parameter == t.parameter,
                })
            })
            .collect();
        info!(changes = changes.len(), cancelled, "thresholds configured");
        Ok((named, cancelled))
    }

    /// Adds whatever else is already queued (Adds and source batches, up to
    /// the batch limit), stores it all in one transaction, publishes, acks.
    async fn group_commit(&mut self, mut p: Pending) {
        let mut deferred = None;
        while p.len() < self.config.batch_max {
            if let Ok(batch) = self.sources.try_recv() {
                self.push_batch(&mut p, batch);
                continue;
            }
            match self.commands.try_recv() {
                Ok(Command::Add { triggers, reply }) => {
                    p.acks.push((triggers.len(), reply));
                    p.triggers.extend(triggers);
                }
                Ok(other) => {
                    // Modify/Delete/Flush go after this commit, in order.
                    deferred = Some(other);
                    break;
                }
                Err(_) => break,
            }
        }
        self.commit(p).await;
        if let Some(cmd) = deferred {
            Box::pin(self.handle(cmd)).await;
        }
    }

    async fn commit(&mut self, p: Pending) {
        let Pending {
            triggers: incoming,
            acks,
            links,
        } = p;
        // The link table this batch leaves behind (the hub's if the batch
        // carries none).
        let links_after = links.clone().unwrap_or_else(|| self.hub.links());
        // After a failed write: the RESYNC and the link changes since the
        // last stored table go first.
        let mut triggers = if self.lost {
            self.recovery_triggers(&links_after)
        } else {
            Vec::new()
        };
        let acked_from = triggers.len();
        if incoming.is_empty() && triggers.is_empty() && links.is_none() && acks.is_empty() {
            return;
        }
        // A failed write must leave the threshold state as it was: the
        // reports it saw were not stored.
        let engine_before = incoming
            .iter()
            .any(|t| t.kind == TriggerType::LinkParametersReport)
            .then(|| self.engine.clone());
        // Threshold crossings go right after the report that caused them.
        triggers.reserve(incoming.len());
        let mut positions = Vec::with_capacity(incoming.len());
        let mut spent = Vec::new();
        for t in incoming {
            let at = triggers.len();
            positions.push(at);
            triggers.push(t);
            if triggers[at].kind == TriggerType::LinkParametersReport {
                let mut derived = Vec::new();
                spent.extend(self.engine.evaluate(&triggers[at], &mut derived));
                triggers.extend(derived);
            }
        }
        let n = triggers.len();
        // Ids from a durable reservation, then the triggers go to the
        // subscribers at once and to the store after: a link going down
        // reaches MOBIKE without waiting for the commit's fsync. A
        // subscriber that registers before the commit gets them from the
        // hub's in-flight list; callers of Add are answered only once the
        // commit is done ("a reply means committed").
        let ready = self.writer.check_room();
        if let Err(e) = match ready {
            Ok(()) => self.assign_ids(&mut triggers).await,
            Err(e) => Err(e),
        } {
            let failed = Failed {
                n,
                incoming: positions.len(),
                acked_from,
                engine_before,
            };
            self.write_failed(&e, failed, links, acks);
            return;
        }
        let published: Vec<Arc<Trigger>> = triggers.into_iter().map(Arc::new).collect();
        self.hub.publish(&published, links.clone());
        // Source triggers only (no caller, no threshold state to put back,
        // no recovery pending): stored with what follows.
        let delay = self.config.source_store_delay;
        if !delay.is_zero() && acks.is_empty() && engine_before.is_none() && !self.lost {
            self.hold(published, links.map(|_| links_after), delay)
                .await;
            return;
        }
        // Held triggers have lower ids: they go first, in the same
        // transaction.
        let held = std::mem::take(&mut self.held);
        let (held_n, held_links) = (held.triggers.len(), held.links);
        let published = if held_n == 0 {
            published
        } else {
            let mut all = held.triggers;
            all.extend(published);
            all
        };
        let positions: Vec<usize> = positions.into_iter().map(|p| p + held_n).collect();
        let n = n + held_n;
        match self.store_published(&published).await {
            Ok(()) => {
                if self.lost {
                    info!("the store takes writes again; RESYNC stored for the lost triggers");
                    self.lost = false;
                }
                if links.is_some() || acked_from > 0 {
                    self.stored_links = Some(links_after);
                } else if held_links.is_some() {
                    self.stored_links = held_links;
                }
                // Source triggers were counted when they came in.
                self.count_flaps(
                    published.iter().map(|t| &**t).filter(|t| {
                        !matches!(t.source, Source::Rtnetlink | Source::NetworkManager)
                    }),
                );
                let stored = published;
                let mut at = 0;
                for (count, reply) in acks {
                    let ids = positions[at..at + count]
                        .iter()
                        .map(|p| stored[*p].id)
                        .collect();
                    at += count;
                    let _ = reply.send(Ok(ids));
                }
                if !spent.is_empty()
                    && let Err(e) = self.writer.mark_spent(&spent).await
                {
                    warn!(error = %e, "cannot persist spent one-shot thresholds");
                }
                debug!(triggers = n, "committed");
            }
            Err(e) => {
                // The link table went to the hub with the triggers.
                let failed = Failed {
                    n,
                    incoming: positions.len() + held_n,
                    acked_from,
                    engine_before,
                };
                self.write_failed(&e, failed, None, acks);
            }
        }
    }

    /// Holds published source triggers for the store; stores them now if
    /// they make a full batch. `links`: their batch's link table, if it
    /// carried one.
    async fn hold(
        &mut self,
        published: Vec<Arc<Trigger>>,
        links: Option<Arc<LinkTable>>,
        delay: Duration,
    ) {
        if published.is_empty() && links.is_none() {
            return;
        }
        self.held.triggers.extend(published);
        if links.is_some() {
            self.held.links = links;
        }
        self.held
            .until
            .get_or_insert_with(|| Instant::now() + delay);
        if self.held.triggers.len() >= self.config.batch_max {
            self.store_held().await;
        }
    }

    /// Stores the held source triggers (see [`Held`]).
    async fn store_held(&mut self) {
        let held = std::mem::take(&mut self.held);
        let n = held.triggers.len();
        if n == 0 {
            if held.links.is_some() {
                self.stored_links = held.links;
            }
            return;
        }
        match self.store_published(&held.triggers).await {
            Ok(()) => {
                if held.links.is_some() {
                    self.stored_links = held.links;
                }
                // (Source triggers: their flaps were counted as they came.)
                debug!(triggers = n, "committed (source triggers held)");
            }
            Err(e) => {
                let failed = Failed {
                    n,
                    incoming: n,
                    acked_from: 0,
                    engine_before: None,
                };
                self.write_failed(&e, failed, None, Vec::new());
            }
        }
    }

    /// Stores triggers already published in one transaction, then tells
    /// the hub they are settled (stored or not: a failure is reported to
    /// the subscribers by the caller's RESYNC); counts them when stored.
    async fn store_published(&mut self, published: &[Arc<Trigger>]) -> Result<(), StoreError> {
        let result = {
            let refs: Vec<&Trigger> = published.iter().map(|t| &**t).collect();
            self.writer.insert(&refs).await
        };
        if let Some(last) = published.last() {
            self.hub.settle(last.id);
        }
        match &result {
            Ok(()) => {
                self.stats
                    .ingested
                    .fetch_add(published.len() as u64, Ordering::Relaxed);
                self.stats.transactions.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => error!(
                first_id = published.first().map_or(0, |t| t.id),
                last_id = published.last().map_or(0, |t| t.id),
                "triggers sent to subscribers live could not be stored"
            ),
        }
        result
    }

    /// Gives the triggers their ids, reserving a further range first when
    /// this batch would go past the reserved one.
    async fn assign_ids(&mut self, triggers: &mut [Trigger]) -> Result<(), StoreError> {
        if triggers.is_empty() {
            return Ok(());
        }
        let Some(last) = self.next_id.checked_add(triggers.len() as u64 - 1) else {
            return Err(StoreError::Sql {
                op: "assign ids",
                source: sqlx::Error::Protocol("ids exhausted".into()),
            });
        };
        if last > self.reserved {
            let up_to = last.saturating_add(ID_RESERVATION);
            self.writer.reserve_ids(up_to).await?;
            self.reserved = up_to;
        }
        for t in triggers.iter_mut() {
            t.id = self.next_id;
            self.next_id += 1;
        }
        Ok(())
    }

    /// A batch the store did not take: counted, logged, the threshold
    /// state put back, the Add callers get the error, and subscribers a
    /// RESYNC once the store works again. `links`: the batch's link table
    /// if it has not gone to the hub yet (the table moves on, so ListLinks
    /// and snapshots show the state as it is).
    fn write_failed(
        &mut self,
        e: &StoreError,
        f: Failed,
        links: Option<Arc<LinkTable>>,
        acks: Vec<(usize, AddReply)>,
    ) {
        self.stats.write_errors.fetch_add(1, Ordering::Relaxed);
        if let Some(engine) = f.engine_before {
            self.engine = engine;
        }
        let acked: usize = acks.iter().map(|(count, _)| count).sum();
        // The incoming triggers no caller hears about are lost. (The
        // RESYNC is rebuilt on the next try; what thresholds derived is
        // derived again when its report is stored, the engine being back
        // where it was.)
        let unstored = f.incoming - acked;
        // A full spool refuses a batch after its triggers went to
        // subscribers live: they learn by the RESYNC too.
        if unstored > 0 || f.acked_from > 0 || matches!(e, StoreError::SpoolFull { .. }) {
            self.lost = true;
        }
        self.stats
            .unstored_triggers
            .fetch_add(unstored as u64, Ordering::Relaxed);
        error!(error = %errchain::chain(e), triggers = f.n, unstored,
            "storing triggers failed; callers get the error, subscribers a RESYNC once the store works again");
        if let Some(links) = links {
            self.hub.publish(&[], Some(links));
        }
        for (_, reply) in acks {
            let _ = reply.send(Err(clone_err(e)));
        }
    }

    /// What follows a failed write: a RESYNC marker (source trigger-db,
    /// cause "store-error", the counts of `now`), then the link changes
    /// from the last stored link table to `now`.
    fn recovery_triggers(&self, now: &LinkTable) -> Vec<Trigger> {
        let at = Timestamp::now();
        let mut out = match &self.stored_links {
            Some(old) => netlink::resync_triggers(STORE_ERROR_CAUSE, old, now, at),
            None => vec![netlink::resync_marker(STORE_ERROR_CAUSE, now, at)],
        };
        if let Some(marker) = out.first_mut() {
            marker.source = Source::TriggerDb;
        }
        out
    }

    async fn retain(&mut self) {
        let (max_age, max_rows) = (
            self.config.retention.max_age,
            self.config.retention.max_rows,
        );
        if max_age.is_none() && max_rows.is_none() {
            return;
        }
        self.store_held().await;
        let older_than = max_age.map(|age| {
            Timestamp(
                Timestamp::now()
                    .0
                    .saturating_sub(age.as_nanos().min(i64::MAX as u128) as i64),
            )
        });
        match self.writer.retain(older_than, max_rows).await {
            Ok(0) => {}
            Ok(n) => {
                self.stats.retention_deleted.fetch_add(n, Ordering::Relaxed);
                info!(deleted = n, "retention removed old triggers");
            }
            Err(e) => warn!(error = %e, "retention failed"),
        }
    }
}

impl Actor {
    /// A source batch into a commit: its triggers through the damper, its
    /// link table (state, not a trigger) unchanged.
    fn push_batch(&mut self, p: &mut Pending, batch: SourceBatch) {
        // Flaps count before the debounce: a suppressed flap is a flap.
        self.count_flaps(batch.triggers.iter());
        if self.damper.is_enabled() {
            let now = Instant::now();
            for t in batch.triggers {
                if t.kind == TriggerType::IfRemoved
                    && let Some(i) = &t.interface
                {
                    p.triggers
                        .extend(self.damper.remove_interface(t.source, &i.name));
                }
                if let Offer::Pass(t) = self.damper.offer(t, now) {
                    p.triggers.push(t);
                }
            }
            self.damped();
        } else {
            p.triggers.extend(batch.triggers);
        }
        if batch.links.is_some() {
            p.links = batch.links;
        }
    }

    /// Publishes the damper's counters.
    fn damped(&self) {
        self.stats
            .debounced
            .store(self.damper.debounced, Ordering::Relaxed);
        self.stats
            .suppressed_flaps
            .store(self.damper.suppressed_flaps, Ordering::Relaxed);
    }

    /// Counts the link-downs as flaps of their interfaces.
    fn count_flaps<'a>(&self, triggers: impl Iterator<Item = &'a Trigger>) {
        let mut downs = triggers
            .filter(|t| t.kind == TriggerType::LinkDown)
            .filter_map(|t| t.interface.as_ref())
            .filter(|i| !i.name.is_empty())
            .peekable();
        if downs.peek().is_none() {
            return;
        }
        let now = Instant::now();
        let mut f = self.stats.flaps.lock().unwrap_or_else(|p| p.into_inner());
        for i in downs {
            f.record(&i.name, now);
        }
    }
}

/// Store errors are not Clone (they hold sqlx errors); each waiting caller
/// gets an equivalent one.
fn clone_err(e: &StoreError) -> StoreError {
    if let StoreError::SpoolFull { path, max_bytes } = e {
        return StoreError::SpoolFull {
            path: path.clone(),
            max_bytes: *max_bytes,
        };
    }
    StoreError::Sql {
        op: "insert",
        // The whole chain: the top-level message alone hides the cause.
        source: sqlx::Error::Protocol(errchain::chain(e)),
    }
}

#[cfg(test)]
mod tests;
