//! The trigger-db subscription: an actor that keeps the agent's link
//! picture fed from trigger-db across daemon restarts.
//!
//! On every connection it subscribes with the trigger types the agent acts
//! on, resuming after the last id it saw and asking for a snapshot: trigger-db
//! first replays what was missed, then sends the current links and
//! addresses, which this actor collects into one [`LinkEvent::Snapshot`]
//! (so that interfaces that went away while it was disconnected are
//! dropped), then live triggers. Of the replay, only what a snapshot
//! cannot hold is forwarded, after it: predictions still in the future,
//! link quality, flaps and unreachable peers. A gap notice ends the stream
//! and the next subscription resumes where it says; a RESYNC rebuilds the picture from
//! `ListLinks`. When trigger-db is not there, it retries with a backoff
//! from 100 ms to 5 s and reports the loss once, so that the agent can
//! follow the links by itself meanwhile ([`Feed::Disconnected`]).
//!
//! Flaps: trigger-db counts each interface's link-downs in a sliding window
//! (before its debounce, `Stats.flaps`); while live, this actor reads them
//! [`FLAP_SETTLE`] after a link went up or down (and at most every
//! [`FLAP_POLL`]), and
//! every [`FLAP_DECAY_POLL`] while a count is above zero (the window
//! slides), and forwards each change as [`LinkEvent::Flaps`] (the policy's
//! flap penalty).
//!
//! It does no decisions: everything goes to the mobility manager through
//! one bounded channel, in order.

use std::{
    fmt::Display,
    future::Future,
    net::IpAddr,
    time::{Duration, Instant, SystemTime},
};

use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tonic::{Code, transport::Channel};
use tracing::{debug, info, warn};
use trigger_proto::v1::{
    self as pb, ListLinksRequest, StatsRequest, SubscribeRequest, TriggerFilter, TriggerType,
    subscribe_response::Item, trigger_service_client::TriggerServiceClient,
};

use super::{
    links::{FlapCounts, LinkEvent, LinkTable},
    triggers::{self, Mapped, TriggerError},
};

/// The trigger types the agent subscribes to.
pub const TYPES: &[TriggerType] = &[
    TriggerType::IfAdded,
    TriggerType::IfRemoved,
    TriggerType::IfRemovedsoon,
    TriggerType::IfAddradded,
    TriggerType::IfAddrremoved,
    TriggerType::IfAddrchanged,
    TriggerType::TunnelAdded,
    TriggerType::TunnelChanged,
    TriggerType::TunnelRemoved,
    TriggerType::ConnLost,
    TriggerType::DestUnreachable,
    TriggerType::LinkUp,
    TriggerType::LinkDown,
    TriggerType::LinkGoingDown,
    TriggerType::LinkParametersReport,
    TriggerType::LinkHandoverImminent,
    TriggerType::DefaultRouteAdded,
    TriggerType::DefaultRouteRemoved,
    TriggerType::Resync,
];

/// How often trigger-db's flap counts are read at most while links go up
/// and down.
pub const FLAP_POLL: Duration = Duration::from_secs(1);
/// How long after a link went up or down they are read: not in the burst
/// that follows a link's loss, when trigger-db ingests the kernel's
/// messages and the agent moves its SAs on the same CPUs. A flap count only
/// weighs the alternatives of later moves (the policy's flap penalty), so
/// it can wait.
pub const FLAP_SETTLE: Duration = Duration::from_millis(250);
/// How often they are read while a count is above zero and no link
/// changed state: they only go down as the window (a minute by default)
/// slides.
pub const FLAP_DECAY_POLL: Duration = Duration::from_secs(10);

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// What the subscription hands the mobility manager, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Feed {
    /// Subscribed (again); events follow.
    Connected,
    /// A change to the link table; `id` is trigger-db's (0 for the parts of
    /// a snapshot), `received` when this actor read it.
    Event {
        id: u64,
        event: LinkEvent,
        received: Instant,
        /// When the source observed it (for the move timeline).
        observed: SystemTime,
    },
    /// DEST_UNREACHABLE for this peer address.
    Unreachable(IpAddr),
    /// The snapshot is complete: the table is in step with trigger-db.
    Synced,
    /// A trigger that could not be used, with what was wrong.
    Rejected(TriggerError),
    /// trigger-db is gone or refused us; retrying.
    Disconnected(String),
}

/// Why the actor stopped.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SubscriberError {
    #[error("the mobility manager is gone")]
    ManagerGone,
}

/// The subscription's state across connections.
#[derive(Debug, Default)]
pub struct Subscriber {
    /// The last trigger id seen (resume point).
    last_id: Option<u64>,
    /// Whether the loss of trigger-db was already reported.
    reported_down: bool,
    /// The links as forwarded so far: resolves triggers that name an
    /// interface only by name (as clients may add them).
    table: LinkTable,
    /// The flap counts forwarded.
    flaps: FlapCounts,
    /// When a link went up or down since the flap counts were last read
    /// (the first such change).
    flaps_stale: Option<Instant>,
}

impl Subscriber {
    pub fn new() -> Self {
        Self::default()
    }

    /// A subscription that first replays what trigger-db stored after
    /// `id` (an agent restarted with its last id, or a test).
    pub fn resuming_after(id: u64) -> Self {
        Self {
            last_id: Some(id),
            ..Self::default()
        }
    }

    /// Runs until `tx` is closed: connects with `connect`, subscribes, and
    /// forwards; reconnects with backoff.
    pub async fn run<C, F, E>(mut self, connect: C, tx: mpsc::Sender<Feed>) -> SubscriberError
    where
        C: Fn() -> F,
        F: Future<Output = Result<TriggerServiceClient<Channel>, E>>,
        E: Display,
    {
        let mut backoff = BACKOFF_MIN;
        loop {
            let outcome = match connect().await {
                Ok(client) => self.serve(client, &tx).await,
                Err(e) => Err(format!("cannot connect: {e}")),
            };
            match outcome {
                Ok(Served::ManagerGone) => return SubscriberError::ManagerGone,
                Ok(Served::Ended { healthy }) => {
                    if healthy {
                        backoff = BACKOFF_MIN;
                    }
                    if self
                        .down(&tx, "the subscription ended".into())
                        .await
                        .is_err()
                    {
                        return SubscriberError::ManagerGone;
                    }
                }
                Err(why) => {
                    if self.down(&tx, why).await.is_err() {
                        return SubscriberError::ManagerGone;
                    }
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
            if tx.is_closed() {
                return SubscriberError::ManagerGone;
            }
        }
    }

    async fn down(&mut self, tx: &mpsc::Sender<Feed>, why: String) -> Result<(), ()> {
        if self.reported_down {
            debug!(%why, "trigger-db still unavailable");
            return Ok(());
        }
        self.reported_down = true;
        warn!(%why, "trigger-db unavailable; retrying");
        tx.send(Feed::Disconnected(why)).await.map_err(|_| ())
    }

    /// One subscription, until it ends.
    async fn serve(
        &mut self,
        mut client: TriggerServiceClient<Channel>,
        tx: &mpsc::Sender<Feed>,
    ) -> Result<Served, String> {
        let request = |resume_after_id| SubscribeRequest {
            filter: Some(TriggerFilter {
                types: TYPES.iter().map(|t| *t as i32).collect(),
                ..TriggerFilter::default()
            }),
            resume_after_id,
            snapshot: true,
        };
        let stream = match client.subscribe(request(self.last_id)).await {
            // The id is beyond trigger-db's last: its store was reset. Start
            // over; the snapshot rebuilds the picture.
            Err(s) if s.code() == Code::InvalidArgument && self.last_id.is_some() => {
                info!(resume_after = ?self.last_id, "trigger-db no longer has our resume point; subscribing afresh");
                self.last_id = None;
                client.subscribe(request(None)).await
            }
            other => other,
        };
        let mut stream = stream
            .map_err(|s| format!("subscribe: {}", s.message()))?
            .into_inner();
        self.reported_down = false;
        info!(resume_after = ?self.last_id, "subscribed to trigger-db");
        if tx.send(Feed::Connected).await.is_err() {
            return Ok(Served::ManagerGone);
        }
        // The snapshot's links and addresses, collected until SnapshotComplete.
        let mut snapshot = Some(LinkTable::new());
        // Replayed triggers (they come before the snapshot): held until the
        // snapshot's table can resolve the interfaces they name.
        let mut replayed = Vec::new();
        let mut healthy = false;
        let mut flaps_read: Option<Instant> = None;
        self.flaps_stale = Some(Instant::now());
        loop {
            let flaps_due = self.flaps_due(flaps_read);
            let flap_poll = tokio::time::sleep_until(tokio::time::Instant::from_std(
                flaps_due.unwrap_or_else(|| Instant::now() + FLAP_DECAY_POLL),
            ));
            let item = tokio::select! {
                item = stream.next() => item,
                () = flap_poll, if healthy && flaps_due.is_some() => {
                    flaps_read = Some(Instant::now());
                    if self.poll_flaps(&mut client, tx).await.is_err() {
                        return Ok(Served::ManagerGone);
                    }
                    continue;
                }
            };
            let Some(item) = item else { break };
            let item = match item {
                Ok(r) => r.item,
                Err(s) => {
                    debug!(status = %s, "subscription stream failed");
                    return Ok(Served::Ended { healthy });
                }
            };
            let sent = match item {
                Some(Item::Trigger(t)) if t.id != 0 && snapshot.is_some() => {
                    self.last_id = Some(t.id);
                    replayed.push(t);
                    Ok(())
                }
                Some(Item::Trigger(t)) => self.trigger(&mut client, t, &mut snapshot, tx).await,
                Some(Item::SnapshotComplete(c)) => {
                    healthy = true;
                    let table = snapshot.take().unwrap_or_default();
                    self.last_id = Some(self.last_id.unwrap_or(0).max(c.last_id));
                    let event = LinkEvent::Snapshot {
                        interfaces: table.interfaces().cloned().collect(),
                    };
                    let mut sent = self.send_event(tx, 0, event, SystemTime::now()).await;
                    // The snapshot is newer than the replayed state changes;
                    // what it cannot carry (predictions, link quality,
                    // unreachable peers) is taken from the replay.
                    for t in std::mem::take(&mut replayed) {
                        if sent.is_ok() {
                            sent = self.replayed(t, tx).await;
                        }
                    }
                    match sent {
                        Ok(()) => tx.send(Feed::Synced).await.map_err(|_| ()),
                        Err(()) => Err(()),
                    }
                }
                Some(Item::Gap(g)) => {
                    info!(
                        resume_after = g.resume_after_id,
                        first_missed = g.first_missed_id,
                        "fell behind trigger-db; resuming from its store"
                    );
                    self.last_id = Some(g.resume_after_id);
                    return Ok(Served::Ended { healthy: true });
                }
                None => Ok(()),
            };
            if sent.is_err() {
                return Ok(Served::ManagerGone);
            }
        }
        Ok(Served::Ended { healthy })
    }

    async fn trigger(
        &mut self,
        client: &mut TriggerServiceClient<Channel>,
        t: pb::Trigger,
        snapshot: &mut Option<LinkTable>,
        tx: &mpsc::Sender<Feed>,
    ) -> Result<(), ()> {
        let now = SystemTime::now();
        if t.id != 0 {
            self.last_id = Some(t.id);
        }
        // Parts of the snapshot (id 0) build the new table.
        if t.id == 0
            && let Some(table) = snapshot.as_mut()
        {
            match triggers::map(&t, table, now) {
                Ok(Mapped::Event(e)) => {
                    table.apply(e, Instant::now());
                }
                Ok(_) => {}
                Err(e) => return tx.send(Feed::Rejected(e)).await.map_err(|_| ()),
            }
            return Ok(());
        }
        let observed = observed_of(&t, now);
        match triggers::map(&t, &self.table, now) {
            Ok(Mapped::Event(e)) => self.send_event(tx, t.id, e, observed).await,
            Ok(Mapped::Unreachable(a)) => tx.send(Feed::Unreachable(a)).await.map_err(|_| ()),
            Ok(Mapped::Resync) => match client.list_links(ListLinksRequest {}).await {
                Ok(r) => match triggers::snapshot(&r.into_inner().links) {
                    Ok(e) => self.send_event(tx, t.id, e, observed).await,
                    Err(e) => tx.send(Feed::Rejected(e)).await.map_err(|_| ()),
                },
                Err(s) => {
                    warn!(status = %s, "ListLinks after a resync failed");
                    Ok(())
                }
            },
            Ok(Mapped::Stale) => {
                debug!(id = t.id, "prediction already past; not acted on");
                Ok(())
            }
            Ok(Mapped::Ignored) => Ok(()),
            Err(e) => tx.send(Feed::Rejected(e)).await.map_err(|_| ()),
        }
    }

    /// A trigger replayed from the store, after the snapshot: only the
    /// kinds of information the snapshot does not hold are forwarded.
    async fn replayed(&mut self, t: pb::Trigger, tx: &mpsc::Sender<Feed>) -> Result<(), ()> {
        let now = SystemTime::now();
        match triggers::map(&t, &self.table, now) {
            Ok(Mapped::Event(
                e @ (LinkEvent::GoingDown { .. }
                | LinkEvent::Parameters { .. }
                | LinkEvent::Flaps { .. }),
            )) => self.send_event(tx, t.id, e, observed_of(&t, now)).await,
            Ok(Mapped::Unreachable(a)) => tx.send(Feed::Unreachable(a)).await.map_err(|_| ()),
            Ok(Mapped::Stale) => {
                debug!(id = t.id, "replayed prediction already past; not acted on");
                Ok(())
            }
            Ok(_) => Ok(()),
            Err(e) => tx.send(Feed::Rejected(e)).await.map_err(|_| ()),
        }
    }

    /// When trigger-db's flap counts are to be read next (last read at
    /// `read`): they may differ from those forwarded when a link went up or
    /// down since (soon), or while one is not zero yet (the window slides:
    /// seldom); `None` when they cannot change.
    fn flaps_due(&self, read: Option<Instant>) -> Option<Instant> {
        if let Some(changed) = self.flaps_stale {
            let settled = changed + FLAP_SETTLE;
            return Some(read.map_or(settled, |r| settled.max(r + FLAP_POLL)));
        }
        if !self.flaps.pending() {
            return None;
        }
        Some(read.map_or_else(Instant::now, |r| r + FLAP_DECAY_POLL))
    }

    /// Reads trigger-db's flap counts and forwards those that changed. A
    /// failed read is retried at the next poll.
    async fn poll_flaps(
        &mut self,
        client: &mut TriggerServiceClient<Channel>,
        tx: &mpsc::Sender<Feed>,
    ) -> Result<(), ()> {
        let stats = match client.stats(StatsRequest { skip_store: true }).await {
            Ok(r) => r.into_inner(),
            Err(s) => {
                debug!(status = %s, "trigger-db Stats (flap counts) failed");
                return Ok(());
            }
        };
        self.flaps_stale = None;
        let now = SystemTime::now();
        let counts = stats.flaps.into_iter().map(|f| (f.interface, f.in_window));
        for event in self.flaps.changes(counts, &self.table) {
            debug!(?event, "flap count");
            self.send_event(tx, 0, event, now).await?;
        }
        Ok(())
    }

    async fn send_event(
        &mut self,
        tx: &mpsc::Sender<Feed>,
        id: u64,
        event: LinkEvent,
        observed: SystemTime,
    ) -> Result<(), ()> {
        if is_link_state(&event) {
            self.flaps_stale.get_or_insert_with(Instant::now);
        }
        self.table.apply(event.clone(), Instant::now());
        tx.send(Feed::Event {
            id,
            event,
            received: Instant::now(),
            observed,
        })
        .await
        .map_err(|_| ())
    }
}

/// Whether `event` may be a link going up or down (what trigger-db's flap
/// counts count).
fn is_link_state(event: &LinkEvent) -> bool {
    matches!(
        event,
        LinkEvent::Link { .. } | LinkEvent::Carrier { .. } | LinkEvent::Removed { .. }
    )
}

/// When the source observed `t` (`now` if it does not say).
fn observed_of(t: &pb::Trigger, now: SystemTime) -> SystemTime {
    t.observed_at
        .as_ref()
        .and_then(|ts| {
            SystemTime::UNIX_EPOCH.checked_add(Duration::new(
                u64::try_from(ts.seconds).ok()?,
                u32::try_from(ts.nanos).ok()?,
            ))
        })
        .unwrap_or(now)
}

enum Served {
    /// The stream ended; `healthy` if it had got as far as live triggers.
    Ended {
        healthy: bool,
    },
    ManagerGone,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flap_counts_are_read_once_a_links_change_has_settled() {
        let mut s = Subscriber::new();
        let t0 = Instant::now();
        // Nothing changed, nothing counted: no read.
        assert_eq!(s.flaps_due(None), None);
        assert_eq!(s.flaps_due(Some(t0)), None);
        // A link went down: read after the settling time, not at once...
        s.flaps_stale = Some(t0);
        assert_eq!(s.flaps_due(None), Some(t0 + FLAP_SETTLE));
        // ...and not more often than FLAP_POLL after the last read.
        let changed = t0 + Duration::from_millis(100);
        s.flaps_stale = Some(changed);
        assert_eq!(s.flaps_due(Some(t0)), Some(t0 + FLAP_POLL));
        let changed = t0 + Duration::from_secs(30);
        s.flaps_stale = Some(changed);
        assert_eq!(s.flaps_due(Some(t0)), Some(changed + FLAP_SETTLE));
    }
}
