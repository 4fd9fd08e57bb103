//! What the PostgreSQL store's read side sees of its spool
//! ([`super::spool`]): Get, resume after an id and the last id read the
//! spool and the server and merge them (Stats reads the server, or the
//! spool while the server is unreachable); the spool is read first, since
//! shipping moves a row from the spool to the server and never back, so a
//! row being shipped is seen in one or both, never in neither. History
//! (Query) and Flaps read the server only (see `super::postgres_read`).
//!
//! Kept apart from `postgres.rs` (which holds the server's own reads and
//! writes) to keep each file to one concern and a readable length.

use std::sync::{Arc, atomic::Ordering};

use super::{StoreError, StoreStats, postgres, postgres::unreachable, spool::SpoolStatus, sqlite};
use crate::model::{Filter, Trigger};

/// The read side of the spool, attached to the PostgreSQL store.
#[derive(Debug, Clone)]
pub struct Reader {
    pub(super) store: sqlite::Store,
    pub(super) status: Arc<SpoolStatus>,
}

impl Reader {
    pub fn status(&self) -> &Arc<SpoolStatus> {
        &self.status
    }

    /// Whether the spool alone holds every row above `after_id` there is:
    /// the server is unreachable and the spool's rows start right after
    /// it or earlier. (While the server is unreachable nothing ships, and
    /// the server holds no id above the first spooled one but the rows
    /// both hold after a commit whose answer was lost.)
    pub(super) fn answers_alone(&self, after_id: u64) -> bool {
        let first = self.status.first_id.load(Ordering::Relaxed);
        !self.status.reachable() && first > 0 && after_id.saturating_add(1) >= first
    }
}

/// The first `limit` of two id-ordered lists, merged in id order, each id
/// once (a row being shipped can be in both).
pub(super) fn merge(a: Vec<Trigger>, b: Vec<Trigger>, limit: u32) -> Vec<Trigger> {
    if b.is_empty() {
        return a;
    }
    if a.is_empty() {
        return b;
    }
    let mut all: Vec<Trigger> = a.into_iter().chain(b).collect();
    all.sort_by_key(|t| t.id);
    all.dedup_by_key(|t| t.id);
    all.truncate(limit as usize);
    all
}

impl postgres::Store {
    /// A spooled trigger first (shipping moves rows from the spool to the
    /// server, never back), then the server's.
    pub async fn get(&self, id: u64) -> Result<Trigger, StoreError> {
        if let Some(sp) = &self.spool {
            match sp.store.get(id).await {
                Err(StoreError::NotFound(_)) => {}
                other => return other,
            }
        }
        self.pg_get(id).await
    }

    /// The spool's rows, then the server's (see [`Self::get`] for the
    /// order), merged in id order.
    pub async fn after_id(
        &self,
        after_id: u64,
        upto_id: Option<u64>,
        filter: &Filter,
        limit: u32,
    ) -> Result<Vec<Trigger>, StoreError> {
        let Some(sp) = &self.spool else {
            return self.pg_after_id(after_id, upto_id, filter, limit).await;
        };
        let spooled = sp.store.after_id(after_id, upto_id, filter, limit).await?;
        if sp.answers_alone(after_id) {
            return Ok(spooled);
        }
        let stored = self.pg_after_id(after_id, upto_id, filter, limit).await?;
        Ok(merge(stored, spooled, limit))
    }

    pub async fn replay_page(
        &self,
        after_id: u64,
        upto_id: Option<u64>,
        filter: &Filter,
        limit: u32,
    ) -> Result<(Option<u64>, Vec<Trigger>), StoreError> {
        let Some(sp) = &self.spool else {
            return self.pg_replay_page(after_id, upto_id, filter, limit).await;
        };
        let (first_spooled, spooled) = sp
            .store
            .replay_page(after_id, upto_id, filter, limit)
            .await?;
        if sp.answers_alone(after_id) {
            return Ok((first_spooled, spooled));
        }
        let (first, stored) = self
            .pg_replay_page(after_id, upto_id, filter, limit)
            .await?;
        let first = match (first, first_spooled) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Ok((first, merge(stored, spooled, limit)))
    }

    /// The highest id given or reserved, on the server or in the spool;
    /// the spool's alone while the server is unreachable (it is never
    /// below the server's, see [`super::spool`]).
    pub async fn last_id(&self) -> Result<u64, StoreError> {
        let Some(sp) = &self.spool else {
            return self.pg_last_id().await;
        };
        let spooled = sp.store.last_id().await?;
        if !sp.status.reachable() && spooled > 0 {
            return Ok(spooled);
        }
        match self.pg_last_id().await {
            Ok(stored) => Ok(stored.max(spooled)),
            Err(e) if spooled > 0 && unreachable(&e) => Ok(spooled),
            Err(e) => Err(e),
        }
    }

    /// The server's counters for this host; while it is unreachable, the
    /// spool's (rows waiting, their ids, the spool file's size).
    pub async fn stats(&self) -> Result<StoreStats, StoreError> {
        let Some(sp) = &self.spool else {
            return self.pg_stats().await;
        };
        if sp.status.reachable() {
            match self.pg_stats().await {
                Ok(mut s) => {
                    s.last_id = s.last_id.max(sp.store.last_id().await?);
                    return Ok(s);
                }
                Err(e) if unreachable(&e) => {}
                Err(e) => return Err(e),
            }
        }
        sp.store.stats().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(id: u64) -> Trigger {
        let mut t = Trigger::new(
            crate::model::Source::Client,
            crate::model::TriggerType::LinkUp,
        );
        t.id = id;
        t
    }

    #[test]
    fn merging_keeps_id_order_each_id_once_and_the_limit() {
        let ids = |v: Vec<Trigger>| v.iter().map(|t| t.id).collect::<Vec<_>>();
        let m = merge(vec![t(1), t(2), t(5)], vec![t(5), t(6), t(7)], 4);
        assert_eq!(ids(m), [1, 2, 5, 6]);
        assert_eq!(ids(merge(vec![], vec![t(3)], 4)), [3]);
        assert_eq!(ids(merge(vec![t(3)], vec![], 4)), [3]);
    }
}
