//! The agent's own rtnetlink watch, for when trigger-db is not running:
//! trigger-db's rtnetlink source (from `trigger-model`, the same code, not
//! a copy) run in the agent, its batches turned into the same [`Feed`] the
//! trigger-db subscription gives.
//!
//! The source starts (and restarts after lost messages) with a RESYNC
//! marker and its whole table: that becomes one
//! [`LinkEvent::Snapshot`](super::links::LinkEvent::Snapshot)
//! and [`Feed::Synced`]; every other trigger goes through the same
//! mapping as trigger-db's ([`triggers::map`] on the wire form).
//!
//! Link flaps are counted as trigger-db counts them (the same
//! [`FlapCounter`], over [`FLAP_WINDOW`], trigger-db's default): each
//! link-down, and every [`FLAP_POLL`] while a count is above zero (the
//! window slides), a changed count goes out as
//! [`LinkEvent::Flaps`](super::links::LinkEvent::Flaps).

use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::debug;
use trigger_model::{
    flaps::FlapCounter,
    ingest::{SourceBatch, source_channel},
    links::LinkTable as SourceTable,
    model::TriggerType,
    netlink::{self, NetlinkError, NetlinkStats},
};

use super::{
    links::{FlapCounts, LinkEvent, LinkTable},
    subscriber::{FLAP_POLL, Feed},
    triggers::{self, Mapped},
};

/// The window link-downs are counted over (trigger-db's default
/// `flap_window`).
pub const FLAP_WINDOW: Duration = Duration::from_secs(60);

/// Link-downs per interface, and the counts forwarded.
struct Flaps {
    counter: FlapCounter,
    sent: FlapCounts,
}

impl Flaps {
    fn new() -> Self {
        Self {
            counter: FlapCounter::new(FLAP_WINDOW),
            sent: FlapCounts::default(),
        }
    }

    /// Whether a count forwarded may still go down as the window slides.
    fn pending(&self) -> bool {
        self.sent.pending()
    }

    /// The counts that changed since forwarded, as events for the
    /// interfaces `names` knows.
    fn changes(&mut self, names: &LinkTable, now: Instant) -> Vec<LinkEvent> {
        let counts = self.counter.snapshot(now).into_iter();
        self.sent
            .changes(counts.map(|f| (f.interface, f.in_window)), names)
    }
}

/// Runs the watch until `shutdown` is cancelled or `tx` is closed.
pub async fn run(tx: mpsc::Sender<Feed>, shutdown: CancellationToken) -> Result<(), NetlinkError> {
    let (source_tx, mut source_rx) = source_channel();
    let stats = Arc::new(NetlinkStats::default());
    let source = tokio::spawn(netlink::run(source_tx, stats, shutdown.clone()));
    let mut names = LinkTable::new();
    let mut flaps = Flaps::new();
    let mut poll = tokio::time::interval(FLAP_POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let sent = tokio::select! {
            batch = source_rx.recv() => match batch {
                Some(b) => forward(b, &mut names, &mut flaps, &tx).await,
                None => break,
            },
            _ = poll.tick(), if flaps.pending() => {
                send_flaps(&mut flaps, &names, &tx).await
            }
        };
        if sent.is_err() {
            shutdown.cancel();
            break;
        }
    }
    match source.await {
        Ok(result) => result,
        // The source task panicked or was cancelled: it is gone either way.
        Err(e) => {
            debug!(error = %e, "rtnetlink source task ended");
            Ok(())
        }
    }
}

/// One batch of the source as feed items; `names` resolves interfaces for
/// the mapping as the subscriber's table does.
async fn forward(
    batch: SourceBatch,
    names: &mut LinkTable,
    flaps: &mut Flaps,
    tx: &mpsc::Sender<Feed>,
) -> Result<(), ()> {
    let now = SystemTime::now();
    let mut link_down = false;
    for t in &batch.triggers {
        if t.kind == TriggerType::LinkDown
            && let Some(i) = &t.interface
        {
            flaps.counter.record(&i.name, Instant::now());
            link_down = true;
        }
        if t.kind == TriggerType::Resync {
            if let Some(table) = &batch.links {
                snapshot(table, names, tx).await?;
            }
            continue;
        }
        let wire = t.to_wire();
        let observed = t.observed_at.to_system_time();
        let item = match triggers::map(&wire, names, now) {
            Ok(Mapped::Event(event)) => {
                names.apply(event.clone(), Instant::now());
                Feed::Event {
                    id: 0,
                    event,
                    received: Instant::now(),
                    observed,
                }
            }
            Ok(Mapped::Unreachable(a)) => Feed::Unreachable(a),
            Ok(Mapped::Resync | Mapped::Stale | Mapped::Ignored) => continue,
            Err(e) => Feed::Rejected(e),
        };
        tx.send(item).await.map_err(|_| ())?;
    }
    if link_down {
        send_flaps(flaps, names, tx).await?;
    }
    Ok(())
}

/// The flap counts that changed, forwarded.
async fn send_flaps(
    flaps: &mut Flaps,
    names: &LinkTable,
    tx: &mpsc::Sender<Feed>,
) -> Result<(), ()> {
    for event in flaps.changes(names, Instant::now()) {
        tx.send(observed_now(event)).await.map_err(|_| ())?;
    }
    Ok(())
}

/// `event` as the feed item of something the watch observed just now.
fn observed_now(event: LinkEvent) -> Feed {
    Feed::Event {
        id: 0,
        event,
        received: Instant::now(),
        observed: SystemTime::now(),
    }
}

async fn snapshot(
    table: &SourceTable,
    names: &mut LinkTable,
    tx: &mpsc::Sender<Feed>,
) -> Result<(), ()> {
    match triggers::snapshot(&table.to_wire()) {
        Ok(event) => {
            names.apply(event.clone(), Instant::now());
            tx.send(observed_now(event)).await.map_err(|_| ())?;
            tx.send(Feed::Synced).await.map_err(|_| ())
        }
        Err(e) => tx.send(Feed::Rejected(e)).await.map_err(|_| ()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mobility::links::LinkEvent;

    #[test]
    fn link_downs_become_flap_counts_that_slide_out_of_the_window() {
        let mut names = LinkTable::new();
        names.apply(
            LinkEvent::Snapshot {
                interfaces: vec![crate::mobility::links::Interface::new(
                    4,
                    "wlan0",
                    crate::mobility::links::IfaceKind::Wlan,
                )],
            },
            Instant::now(),
        );
        let mut f = Flaps::new();
        let t0 = Instant::now();
        f.counter.record("wlan0", t0);
        f.counter.record("wlan0", t0 + Duration::from_secs(1));
        // An interface the table does not know is not forwarded.
        f.counter.record("gone0", t0);
        assert_eq!(
            f.changes(&names, t0 + Duration::from_secs(1)),
            [LinkEvent::Flaps { index: 4, count: 2 }]
        );
        assert!(f.pending());
        assert_eq!(f.changes(&names, t0 + Duration::from_secs(2)), []);
        assert_eq!(
            f.changes(&names, t0 + FLAP_WINDOW + Duration::from_millis(500)),
            [LinkEvent::Flaps { index: 4, count: 1 }]
        );
        assert_eq!(
            f.changes(&names, t0 + FLAP_WINDOW + Duration::from_secs(2)),
            [LinkEvent::Flaps { index: 4, count: 0 }]
        );
        assert!(!f.pending());
    }

    #[test]
    fn snapshot_events_are_link_events() {
        // A snapshot of an empty source table is an empty table.
        let e = triggers::snapshot(&SourceTable::default().to_wire()).unwrap();
        assert_eq!(e, LinkEvent::Snapshot { interfaces: vec![] });
    }
}
