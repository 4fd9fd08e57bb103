//! What a source hands to the store: triggers it derived, in order, and the
//! link table they leave behind. The channel is bounded: a source that
//! outruns the store waits, and the kernel's socket buffer overflowing then
//! is what ENOBUFS and the resync are for.

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::{links::LinkTable, model::Trigger};

/// One batch from a source, stored in one transaction and published in order.
#[derive(Debug, Clone)]
pub struct SourceBatch {
    pub triggers: Vec<Trigger>,
    /// The link table after these triggers, for sources that keep one.
    pub links: Option<Arc<LinkTable>>,
}

pub type SourceSender = mpsc::Sender<SourceBatch>;
pub type SourceReceiver = mpsc::Receiver<SourceBatch>;

/// Capacity of the source channel, in batches.
pub const SOURCE_QUEUE: usize = 256;

pub fn source_channel() -> (SourceSender, SourceReceiver) {
    mpsc::channel(SOURCE_QUEUE)
}
