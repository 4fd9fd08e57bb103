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

use std::{
    sync::Arc,
    time::{Instant, SystemTime},
};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::debug;
use trigger_model::{
    ingest::{SourceBatch, source_channel},
    links::LinkTable as SourceTable,
    model::TriggerType,
    netlink::{self, NetlinkError, NetlinkStats},
};

use super::{
    links::LinkTable,
    subscriber::Feed,
    triggers::{self, Mapped},
};

/// Runs the watch until `shutdown` is cancelled or `tx` is closed.
pub async fn run(tx: mpsc::Sender<Feed>, shutdown: CancellationToken) -> Result<(), NetlinkError> {
    let (source_tx, mut source_rx) = source_channel();
    let stats = Arc::new(NetlinkStats::default());
    let source = tokio::spawn(netlink::run(source_tx, stats, shutdown.clone()));
    let mut names = LinkTable::new();
    while let Some(batch) = source_rx.recv().await {
        if forward(batch, &mut names, &tx).await.is_err() {
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
    tx: &mpsc::Sender<Feed>,
) -> Result<(), ()> {
    let now = SystemTime::now();
    for t in &batch.triggers {
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
    Ok(())
}

async fn snapshot(
    table: &SourceTable,
    names: &mut LinkTable,
    tx: &mpsc::Sender<Feed>,
) -> Result<(), ()> {
    match triggers::snapshot(&table.to_wire()) {
        Ok(event) => {
            names.apply(event.clone(), Instant::now());
            tx.send(Feed::Event {
                id: 0,
                event,
                received: Instant::now(),
                observed: SystemTime::now(),
            })
            .await
            .map_err(|_| ())?;
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
    fn snapshot_events_are_link_events() {
        // A snapshot of an empty source table is an empty table.
        let e = triggers::snapshot(&SourceTable::default().to_wire()).unwrap();
        assert_eq!(e, LinkEvent::Snapshot { interfaces: vec![] });
    }
}
