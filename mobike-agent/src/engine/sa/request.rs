//! One request of ours at its three stages. It is queued as a
//! [`QueuedRequest`] (what to ask, decided by a command, a timer or an
//! exchange), built when the window is free by its exchange module's
//! `start_*` function, which seals and sends it and keeps a [`BuiltRequest`]
//! (what that module needs to complete the answer), and kept as the
//! [`SentRequest`] (the sealed bytes, their message ID and the
//! retransmission state) until the answer comes and
//! [`IkeSa::handle_response`] hands the [`BuiltRequest`] back to the module.

use std::time::Instant;

use crate::{
    crypto::{DhGroup, KeyShare},
    proto::{ExchangeType, TrafficSelector},
};

#[cfg(doc)]
use super::IkeSa;
use super::{DeleteReason, Path};
use crate::engine::UdpEncap;

/// A request waiting for the window (one outstanding request, §2.3).
#[derive(Debug, Clone)]
pub(super) enum QueuedRequest {
    /// Liveness check: an empty INFORMATIONAL (§2.4).
    Dpd,
    /// Delete the IKE SA.
    DeleteIke,
    /// Delete the CHILD_SAs with these inbound SPIs.
    DeleteChild(Vec<u32>),
    /// Delete the CHILD_SA the peer made with this (our inbound) SPI in
    /// an exchange whose outcome we refused: we never had it.
    DeleteRefused(u32),
    /// Rekey the CHILD_SA with this inbound SPI; the group is the one the
    /// peer asked for with INVALID_KE_PAYLOAD.
    RekeyChild(u32, Option<DhGroup>),
    /// Create a CHILD_SA from this child config, with the group the peer
    /// asked for with INVALID_KE_PAYLOAD.
    CreateChild(usize, Option<DhGroup>),
    /// Rekey the IKE SA, with the group the peer asked for.
    RekeyIke(Option<DhGroup>),
    /// MOBIKE: move to the first of these address pairs; the others are
    /// tried in turn if it fails (RFC 4555 §3.5).
    UpdateAddresses(Vec<Path>),
    /// MOBIKE: test these address pairs (RFC 4555 §3.10).
    TestPaths(Vec<Path>),
    /// MOBIKE: send our address list as it is when the window frees
    /// (RFC 4555 §3.6).
    AnnounceAddresses,
    /// MOBIKE responder: check the peer's new address (RFC 4555 §5.2).
    ReturnRoutability,
}

/// Our side of a CHILD_SA offer (IKE_AUTH or CREATE_CHILD_SA).
#[derive(Debug)]
pub(super) struct ChildOffer {
    pub(super) cfg: usize,
    pub(super) spi: u32,
    pub(super) nonce: Vec<u8>,
    pub(super) share: Option<KeyShare>,
    pub(super) rekey_of: Option<u32>,
    pub(super) local_ts: Vec<TrafficSelector>,
    pub(super) remote_ts: Vec<TrafficSelector>,
}

/// Our side of an IKE SA rekey offer.
#[derive(Debug)]
pub(super) struct IkeRekeyOffer {
    pub(super) spi: u64,
    pub(super) nonce: Vec<u8>,
    pub(super) share: KeyShare,
}

/// What a sent request needs to complete its answer.
#[derive(Debug)]
pub(super) enum BuiltRequest {
    Auth(Option<ChildOffer>),
    Dpd,
    DeleteIke(DeleteReason),
    DeleteChild(Vec<u32>),
    CreateChild(ChildOffer),
    RekeyIke(IkeRekeyOffer),
    /// MOBIKE: the old path, the COOKIE2 we sent (RFC 4555 §3.5), the
    /// candidate pairs still to try if this one fails, the COOKIE2s of
    /// our earlier updates that went unanswered under this message ID,
    /// and, when the CHILD_SAs moved as it was sent (the old pair lost),
    /// the pair and encapsulation they moved to.
    UpdateAddresses {
        old: Path,
        cookie2: Vec<u8>,
        rest: Vec<Path>,
        unanswered: Vec<Vec<u8>>,
        moved_early: Option<(Path, Option<UdpEncap>)>,
    },
    /// MOBIKE path test (RFC 4555 §3.10).
    PathTest(PathTest),
    /// MOBIKE: our address list (RFC 4555 §3.6).
    AnnounceAddresses,
    /// MOBIKE responder: the COOKIE2 of our return routability check.
    ReturnRoutability {
        cookie2: Vec<u8>,
    },
}

/// A path test: one request sent on every pair (same message ID), and
/// which pairs answered.
#[derive(Debug, Clone)]
pub(super) struct PathTest {
    pub(super) cookie2: Vec<u8>,
    pub(super) probes: Vec<Probe>,
}

/// One tested pair.
#[derive(Debug, Clone)]
pub(super) struct Probe {
    pub(super) path: Path,
    /// First sent on this pair (the round-trip time counts from here).
    pub(super) first_sent: Instant,
    pub(super) answered: bool,
}

/// Our request in flight: sent, awaiting its answer, retransmitted until
/// then. `request` is None for IKE_SA_INIT, which
/// [`IkeSa::handle_message`] completes by itself.
#[derive(Debug)]
pub(super) struct SentRequest {
    pub(super) msg_id: u32,
    pub(super) exchange: ExchangeType,
    pub(super) bytes: Vec<u8>,
    pub(super) request: Option<BuiltRequest>,
    /// Times sent.
    pub(super) sent: u32,
    /// When to retransmit.
    pub(super) next: Instant,
}
