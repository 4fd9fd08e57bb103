//! The MOBIKE state (RFC 4555) an IKE SA holds only while something is
//! under way: a return routability check of the peer's new address
//! (responder, §5.2), a path test whose other pairs may still answer
//! (§3.10), or an address update of ours that the CHILD_SAs have not
//! followed yet (§3.5). Most IKE SAs never move, so it lives in one box
//! that exists only meanwhile: an IKE SA without a move in progress pays
//! one pointer.

use super::{IkeSa, Path, path_test::LingeringTest, return_routability::Unverified};

/// MOBIKE state of a move, check or test in progress.
#[derive(Debug, Clone, Default)]
pub(super) struct Moving {
    /// Responder: the peer's new address under a return routability check.
    pub(super) rr: Option<Unverified>,
    /// A completed path test whose other pairs may still answer.
    pub(super) lingering_test: Option<LingeringTest>,
    /// The pair the CHILD_SAs are on while the IKE SA's path moved ahead
    /// of the UPDATE_SA_ADDRESSES that takes them along.
    pub(super) update_from: Option<Path>,
    /// The COOKIE2s of our updates that went unanswered under message ID
    /// `.0`, which the next update reuses.
    pub(super) unanswered_updates: Option<(u32, Vec<Vec<u8>>)>,
    /// The current pair carries nothing any more
    /// ([`crate::engine::Command::PathLost`]): updates move the CHILD_SAs
    /// when sent.
    pub(super) path_lost: bool,
}

impl Moving {
    fn is_empty(&self) -> bool {
        self.rr.is_none()
            && self.lingering_test.is_none()
            && self.update_from.is_none()
            && self.unanswered_updates.is_none()
            && !self.path_lost
    }
}

impl IkeSa {
    /// The state of a move in progress, if any.
    pub(super) fn moving(&self) -> Option<&Moving> {
        self.moving.as_deref()
    }

    /// The state of a move in progress, made when there is none.
    pub(super) fn moving_mut(&mut self) -> &mut Moving {
        self.moving.get_or_insert_with(Box::default)
    }

    /// Applies `f` to the state of a move in progress (nothing when there
    /// is none) and drops the box once nothing is left in it.
    pub(super) fn take_moving<T>(&mut self, f: impl FnOnce(&mut Moving) -> Option<T>) -> Option<T> {
        let m = self.moving.as_deref_mut()?;
        let out = f(m);
        if m.is_empty() {
            self.moving = None;
        }
        out
    }
}
