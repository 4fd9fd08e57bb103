//! What the [`Endpoint`](super::Endpoint) keeps about its IKE SAs besides
//! the SAs themselves, so that one datagram, timer or command costs the
//! same however many SAs there are: our inbound ESP SPIs and the IKE SA
//! that has each, the half-open responder SAs by peer address (for the
//! limits of [`super::HalfOpenLimits`]), and every SA's next deadline.
//! The endpoint updates it for one SA each time it puts that SA back.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    net::IpAddr,
    time::Instant,
};

use super::SaId;

/// The endpoint's indexes over its IKE SAs.
#[derive(Debug, Clone, Default)]
pub(super) struct SaIndex {
    /// Our inbound ESP SPIs.
    pub(super) spis: SpiTable,
    /// Half-open responder SAs and the peer address each came from.
    half_open: HashMap<SaId, IpAddr>,
    /// Half-open responder SAs per peer address.
    half_open_by_source: HashMap<IpAddr, usize>,
    /// Every SA's next deadline, earliest first, and the deadline of each.
    deadlines: BTreeSet<(Instant, SaId)>,
    deadline_of: HashMap<SaId, Instant>,
}

/// Our inbound ESP SPIs (unique on this host) and the IKE SA that has each.
#[derive(Debug, Clone, Default)]
pub(super) struct SpiTable {
    /// SPI -> the IKE SA whose CHILD_SA has it; an SPI drawn during the
    /// current call and not yet settled is held by [`PENDING`].
    owner: HashMap<u32, SaId>,
    /// The SPIs drawn during the current call.
    drawn: Vec<u32>,
}

/// The holder of an inbound SPI drawn during a call before it is settled
/// (SPI 0 is never an IKE SA's: §3.1).
const PENDING: SaId = 0;

impl SpiTable {
    /// Takes `spi` for the current call, if no one has it.
    pub(super) fn take(&mut self, spi: u32) -> bool {
        if self.owner.contains_key(&spi) {
            return false;
        }
        self.owner.insert(spi, PENDING);
        self.drawn.push(spi);
        true
    }

    /// The IKE SA with the CHILD_SA of inbound SPI `spi`.
    pub(super) fn owner(&self, spi: u32) -> Option<SaId> {
        self.owner.get(&spi).copied().filter(|id| *id != PENDING)
    }

    /// After a call on SA(s): the SPIs `before` the call (the SA's own) and
    /// those drawn during it that no SA in `after` holds are free again;
    /// those in `after` belong to the SA named with them. The cost is that
    /// of the SAs named, not of all.
    pub(super) fn settle(
        &mut self,
        before: impl IntoIterator<Item = u32>,
        after: &[(SaId, Vec<u32>)],
    ) {
        let held: HashSet<u32> = after.iter().flat_map(|(_, s)| s.iter().copied()).collect();
        let drawn = std::mem::take(&mut self.drawn);
        for spi in before.into_iter().chain(drawn) {
            if !held.contains(&spi) {
                self.owner.remove(&spi);
            }
        }
        for (id, spis) in after {
            for spi in spis {
                self.owner.insert(*spi, *id);
            }
        }
    }

    /// Number of SPIs held (tests compare it with the CHILD_SAs).
    pub(super) fn len(&self) -> usize {
        self.owner.len()
    }
}

impl SaIndex {
    /// Half-open responder SAs in all.
    pub(super) fn half_open(&self) -> usize {
        self.half_open.len()
    }

    /// Half-open responder SAs from `source`.
    pub(super) fn half_open_from(&self, source: IpAddr) -> usize {
        self.half_open_by_source.get(&source).copied().unwrap_or(0)
    }

    /// SA `id` is half-open from `source` (Some) or not (None).
    pub(super) fn set_half_open(&mut self, id: SaId, source: Option<IpAddr>) {
        if let Some(old) = self.half_open.remove(&id)
            && let Some(n) = self.half_open_by_source.get_mut(&old)
        {
            *n -= 1;
            if *n == 0 {
                self.half_open_by_source.remove(&old);
            }
        }
        if let Some(src) = source {
            self.half_open.insert(id, src);
            *self.half_open_by_source.entry(src).or_default() += 1;
        }
    }

    /// SA `id` is next due at `at` (None: never, or it is gone).
    pub(super) fn set_deadline(&mut self, id: SaId, at: Option<Instant>) {
        if let Some(old) = self.deadline_of.remove(&id) {
            self.deadlines.remove(&(old, id));
        }
        if let Some(t) = at {
            self.deadline_of.insert(id, t);
            self.deadlines.insert((t, id));
        }
    }

    /// The earliest deadline of any SA.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|(t, _)| *t)
    }

    /// The SAs due at or before `now`, earliest first.
    pub(super) fn due(&self, now: Instant) -> Vec<SaId> {
        self.deadlines
            .iter()
            .take_while(|(t, _)| *t <= now)
            .map(|(_, id)| *id)
            .collect()
    }
}
