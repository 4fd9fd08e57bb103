//! One IKE SA: the exchanges of RFC 7296 §1 as a state machine, driven by
//! the [`Endpoint`](super::Endpoint) with a [`Ctx`] per call.
//!
//! Window size is one in each direction (§2.3): one outstanding request of
//! ours, further requests wait in a queue; the peer's next request ID is
//! tracked and the last response is cached for replay. Nothing about an
//! established SA changes before the Encrypted payload has verified (§2.21).
//!
//! This module holds the SA's state, its life cycle (teardown, hand-over of
//! CHILD_SAs between IKE SAs) and status; [`exchange`] is the message
//! machinery shared by all exchanges and dispatches to one module per
//! exchange, each building its requests and completing their answers:
//! [`init`] (IKE_SA_INIT), [`auth`] (IKE_AUTH), [`create_child`]
//! (CREATE_CHILD_SA for CHILD_SAs, on the negotiation in [`child`]),
//! [`ike_rekey`], [`informational`], [`mobike`] (address updates),
//! [`path_test`] (MOBIKE path testing) and [`addresses`] (MOBIKE address
//! lists). [`request`] names the
//! stages of one of our requests. In each module, `start_*` builds and
//! sends one of our requests, `complete_*` takes the peer's answer to it
//! and `respond_*` answers one of the peer's requests. [`snapshot`]
//! copies an SA (for [`Endpoint::try_clone`](super::Endpoint::try_clone)).

mod addresses;
mod auth;
mod child;
mod create_child;
mod exchange;
mod ike_rekey;
mod informational;
mod init;
#[cfg(test)]
mod init_tests;
mod mobike;
mod moving;
mod path_test;
mod pubkey;
mod request;
mod return_routability;
mod snapshot;
#[cfg(test)]
mod test_pair;

use std::{
    collections::VecDeque,
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use tracing::info;

use super::{
    AuthUsed, ChildSaInfo, Ctx, DeleteReason, Event, IkeSaInfo, KernelAction, Mode, Path, SaId,
    config,
};
use crate::{
    crypto::{IkeKeys, KeyShare},
    proposal::{EspSuite, IkeSuite},
    proto::{self, KeyExchange, Notify, NotifyType, Payload, TrafficSelector},
};

pub(super) use addresses::refuse_in_init;
pub(super) use init::Admission;
use request::{BuiltRequest, ChildOffer, IkeRekeyOffer, QueuedRequest, SentRequest};

/// Limit on cookie and INVALID_KE_PAYLOAD restarts of one IKE_SA_INIT.
const MAX_INIT_RESTARTS: u32 = 4;
/// A refused or failed rekey is retried after this many initial
/// retransmission timeouts.
const REKEY_RETRY_FACTOR: u32 = 8;
/// Cap on the retransmission backoff exponent.
const MAX_BACKOFF_SHIFT: u32 = 6;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Initiator: IKE_SA_INIT sent.
    InitSent,
    /// Responder: IKE_SA_INIT answered, waiting for IKE_AUTH.
    InitReplied,
    /// Initiator: IKE_AUTH sent.
    AuthSent,
    /// IKE_AUTH done.
    Established,
    /// Replaced by a rekeyed IKE SA; waits for the Delete.
    Rekeyed,
    /// Our Delete is on its way.
    Deleting,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChildState {
    Installed,
    /// Our rekey request is outstanding.
    Rekeying,
    /// Replaced; waits for its Delete.
    Rekeyed,
    /// Our Delete is outstanding.
    Deleting,
}

/// A CHILD_SA as the IKE SA tracks it (keys live only in the kernel).
#[derive(Debug, Clone)]
pub(super) struct Child {
    cfg: usize,
    /// Negotiated mode.
    mode: Mode,
    reqid: u32,
    inbound_spi: u32,
    outbound_spi: u32,
    suite: EspSuite,
    local_ts: Vec<TrafficSelector>,
    remote_ts: Vec<TrafficSelector>,
    state: ChildState,
    rekey_at: Option<Instant>,
    /// Set on a CHILD_SA made by rekeying: the old SA's inbound SPI, the
    /// lowest nonce of that exchange and whether we initiated it (§2.8.1).
    rekey_origin: Option<RekeyOrigin>,
}

impl Child {
    /// Our inbound ESP SPI.
    pub(super) fn inbound_spi(&self) -> u32 {
        self.inbound_spi
    }
}

/// How an IKE SA ended, for the connection's [`super::Recovery`].
#[derive(Debug, Clone, Copy)]
pub(super) struct Ended {
    pub conn: usize,
    pub reason: DeleteReason,
    pub established: bool,
    pub initiator: bool,
}

#[derive(Debug, Clone)]
struct RekeyOrigin {
    old_inbound_spi: u32,
    min_nonce: Vec<u8>,
    by_us: bool,
}

/// One IKE SA.
#[derive(Debug)]
pub(super) struct IkeSa {
    /// Our SPI (the endpoint's key for this SA).
    id: SaId,
    /// Index of its connection in the configuration.
    conn: usize,
    /// Whether we are the original initiator.
    initiator: bool,
    spi_i: u64,
    spi_r: u64,
    state: State,
    /// The address pair in use; MOBIKE (RFC 4555) moves it.
    path: Path,
    /// The peer sent MOBIKE_SUPPORTED (RFC 4555 §3.2).
    peer_mobike: bool,
    /// How we authenticated: set when our AUTH payload is made.
    local_auth: Option<AuthUsed>,
    /// How the peer authenticated: set when its AUTH verified.
    remote_auth: Option<AuthUsed>,
    /// The peer's certificate, when it authenticated with one.
    peer_cert: Option<crate::pki::verify::Verified>,
    children: Vec<Child>,
    /// Our requests and the peer's, one at a time each way (§2.3).
    window: Window,
    /// The negotiated suite, keys and nonces.
    crypto: Crypto,
    /// IKE_SA_INIT: what it takes to restart, replay or finish it.
    init: InitState,
    /// NAT detection results and keepalives (§2.23).
    nat: NatState,
    /// IKE SA rekeys and their collisions (§2.8.2).
    rekey: RekeyState,
    /// Liveness and the end of the SA.
    life: Lifecycle,
    /// Virtual IPs both ways (§2.19).
    vips: VirtualIps,
    /// MOBIKE address lists, ours and the peer's (RFC 4555 §3.4, §3.6).
    addrs: addresses::AddressLists,
    /// MOBIKE: a move, return routability check or path test in progress
    /// (RFC 4555), boxed: most IKE SAs never have one.
    moving: Option<Box<moving::Moving>>,
}

/// The message-ID window of one in each direction (§2.3).
#[derive(Debug, Default)]
struct Window {
    /// Message ID of our next request.
    next_msg_id: u32,
    /// Our request awaiting its answer.
    in_flight: Option<SentRequest>,
    /// Our requests waiting for the window.
    queue: VecDeque<QueuedRequest>,
    /// Message ID of the peer's next request.
    peer_next_msg_id: u32,
    /// Our last answer and its message ID, sent again for a retransmitted
    /// request (§2.1).
    cached_response: Option<(u32, Vec<u8>)>,
    /// Where the request being answered came from (§2.11).
    reply_path: Option<Path>,
    /// Where the answer being completed came from.
    answer_path: Option<Path>,
}

/// What IKE_SA_INIT settled and what protects the SA.
#[derive(Debug, Clone, Default)]
struct Crypto {
    suite: Option<IkeSuite>,
    keys: Option<IkeKeys>,
    /// Counter for the IVs of our Encrypted payloads.
    iv: u64,
    /// The initiator's and responder's nonces (for AUTH and rekeys).
    ni: Vec<u8>,
    nr: Vec<u8>,
}

/// IKE_SA_INIT state.
#[derive(Debug, Default)]
struct InitState {
    /// Our DH share, until the keys are derived.
    share: Option<KeyShare>,
    /// Both IKE_SA_INIT messages, signed by AUTH (§2.15).
    request: Vec<u8>,
    response: Vec<u8>,
    /// The responder's cookie demand (§2.6).
    cookie: Option<Vec<u8>>,
    /// Cookie and INVALID_KE_PAYLOAD restarts so far.
    restarts: u32,
    /// (peer, SPIi) of the IKE_SA_INIT that created this responder SA.
    half_open_peer: Option<(SocketAddr, u64)>,
    /// Send INITIAL_CONTACT in IKE_AUTH (§2.4).
    initial_contact: bool,
    /// Initiator: an error notify that came in an IKE_SA_INIT answer,
    /// kept until the retransmissions run out (§2.21.1).
    peer_error: Option<NotifyType>,
    /// The hash algorithms the peer's SIGNATURE_HASH_ALGORITHMS listed
    /// (RFC 7427 §4); empty if it sent none.
    peer_hashes: Vec<u16>,
    /// The CA hashes of the peer's CERTREQ payloads (RFC 7296 §3.7); None
    /// if it sent none (see `pubkey::peer_certreq`).
    peer_certreq: Option<Vec<u8>>,
}

/// NAT detection (§2.23) and keepalives (RFC 3948 §2.3).
#[derive(Debug, Clone, Default)]
struct NatState {
    /// We are behind a NAT.
    local_behind: bool,
    /// The peer is behind a NAT.
    remote_behind: bool,
    /// When to send the next NAT keepalive.
    keepalive_at: Option<Instant>,
    /// MOBIKE initiator behind a NAT: the peer's last
    /// NAT_DETECTION_DESTINATION_IP, the hash of where it sees us (RFC
    /// 4555 §3.8); another value means the NAT mapping changed.
    seen_as: Option<Vec<u8>>,
}

/// IKE SA rekey state.
#[derive(Debug, Clone, Default)]
struct RekeyState {
    /// When the IKE SA is due for a rekey.
    at: Option<Instant>,
    /// Set on an IKE SA we created by answering the peer's rekey while our
    /// own rekey of the same SA was in flight (§2.8.2): the old SA.
    collision_parent: Option<SaId>,
    /// On an old SA: the IKE SA made by answering the peer's rekey and the
    /// lowest nonce of that exchange, for §2.8.2.
    peer_rekey: Option<(SaId, Vec<u8>)>,
    /// On an IKE SA we created by answering the peer's rekey: the peer may
    /// not have it yet (our answer can be lost), so no request of ours
    /// goes out on it until the peer shows it has it (see
    /// [`IkeSa::peer_has_it`]).
    awaiting_peer: bool,
    /// On an old SA replaced by the peer's rekey: the IKE SA that answer
    /// made, told when this one ends (the peer's Delete, or the linger).
    successor: Option<SaId>,
}

/// Liveness and the end of an IKE SA.
#[derive(Debug, Clone)]
struct Lifecycle {
    /// When a message from the peer last verified.
    last_heard: Instant,
    /// When a half-open or replaced SA goes.
    expires: Option<Instant>,
    /// A Delete was asked for; it survives a rekey that was in flight.
    delete_requested: bool,
    /// The SA is gone (the endpoint drops it).
    dead: bool,
    /// Why it ended, once dead.
    ended: Option<DeleteReason>,
}

/// Virtual IPs (§2.19).
#[derive(Debug, Clone, Default)]
struct VirtualIps {
    /// Addresses the peer assigned us.
    ours: Vec<IpAddr>,
    /// DNS servers the peer named.
    dns: Vec<IpAddr>,
    /// Addresses we assigned the peer from our pools.
    peers: Vec<IpAddr>,
}

/// Work on other IKE SAs that an SA asks the endpoint to do (§2.8.2).
#[derive(Debug)]
pub(super) enum SaOp {
    /// Give these CHILD_SAs to that IKE SA.
    HandOff { to: SaId, children: Vec<Child> },
    /// Move all CHILD_SAs of `from` to `to`; `from` becomes redundant.
    MoveChildren { from: SaId, to: SaId },
    /// The collision is over: this SA is a normal IKE SA now.
    ClearCollision(SaId),
    /// The peer has this IKE SA (it deleted or we dropped its predecessor):
    /// our requests may go out on it.
    PeerHasIt(SaId),
    /// Delete this IKE SA (a Delete asked for on its predecessor).
    Delete(SaId),
    /// INITIAL_CONTACT (§2.4): forget, without messages, every other IKE SA
    /// of this connection.
    PurgeStale { keep: SaId, conn: usize },
}

fn find<'a, T>(payloads: &'a [Payload], f: impl Fn(&'a Payload) -> Option<T>) -> Option<T> {
    payloads.iter().find_map(f)
}

fn notify_of(payloads: &[Payload], ty: NotifyType) -> Option<&Notify> {
    proto::notifies(payloads).find(|n| n.ty == ty)
}

fn first_error(payloads: &[Payload]) -> Option<NotifyType> {
    proto::notifies(payloads)
        .map(|n| n.ty)
        .find(|t| t.is_error())
}

fn unknown_critical(payloads: &[Payload]) -> Option<u8> {
    payloads.iter().find_map(|p| match p {
        Payload::Unknown {
            ty, critical: true, ..
        } => Some(ty.0),
        _ => None,
    })
}

fn nonce_of(payloads: &[Payload]) -> Option<Vec<u8>> {
    find(payloads, |p| match p {
        Payload::Nonce(n) => Some(n.clone()),
        _ => None,
    })
}

fn ke_of(payloads: &[Payload]) -> Option<&KeyExchange> {
    find(payloads, |p| match p {
        Payload::Ke(k) => Some(k),
        _ => None,
    })
}

fn sa_of(payloads: &[Payload]) -> Option<&Vec<proto::Proposal>> {
    find(payloads, |p| match p {
        Payload::Sa(s) => Some(s),
        _ => None,
    })
}

/// One selector per address, any protocol and port.
fn host_selectors(addrs: &[IpAddr]) -> Vec<TrafficSelector> {
    addrs
        .iter()
        .map(|a| TrafficSelector {
            ip_protocol: 0,
            start_port: 0,
            end_port: u16::MAX,
            start_addr: *a,
            end_addr: *a,
        })
        .collect()
}

fn ts_of(payloads: &[Payload]) -> Option<(&Vec<TrafficSelector>, &Vec<TrafficSelector>)> {
    let tsi = find(payloads, |p| match p {
        Payload::TsI(t) => Some(t),
        _ => None,
    })?;
    let tsr = find(payloads, |p| match p {
        Payload::TsR(t) => Some(t),
        _ => None,
    })?;
    Some((tsi, tsr))
}

/// Why a responder refuses a CHILD_SA: the notify and its data.
#[derive(Debug)]
struct ChildRefusal(NotifyType, Vec<u8>);

impl From<NotifyType> for ChildRefusal {
    fn from(n: NotifyType) -> Self {
        ChildRefusal(n, Vec::new())
    }
}

fn notify(ty: NotifyType, data: Vec<u8>) -> Payload {
    Payload::Notify(Notify::new(ty, data))
}

fn min_nonce(a: &[u8], b: &[u8]) -> Vec<u8> {
    if a <= b { a.to_vec() } else { b.to_vec() }
}

impl IkeSa {
    fn blank(id: SaId, conn: usize, initiator: bool, path: Path, now: Instant) -> Self {
        IkeSa {
            id,
            conn,
            initiator,
            spi_i: 0,
            spi_r: 0,
            state: State::InitSent,
            path,
            peer_mobike: false,
            local_auth: None,
            remote_auth: None,
            peer_cert: None,
            children: Vec::new(),
            window: Window::default(),
            crypto: Crypto::default(),
            init: InitState::default(),
            nat: NatState::default(),
            rekey: RekeyState::default(),
            life: Lifecycle {
                last_heard: now,
                expires: None,
                delete_requested: false,
                dead: false,
                ended: None,
            },
            vips: VirtualIps::default(),
            addrs: addresses::AddressLists::default(),
            moving: None,
        }
    }

    pub(super) fn id(&self) -> SaId {
        self.id
    }

    /// (peer, SPIi) of the IKE_SA_INIT that created this responder SA, for
    /// recognising retransmitted or duplicated IKE_SA_INIT requests.
    pub(super) fn init_key(&self) -> Option<(SocketAddr, u64)> {
        if self.life.dead {
            None
        } else {
            self.init.half_open_peer
        }
    }

    /// The (peer, SPIi) of the IKE_SA_INIT that created this responder
    /// SA, dead or alive.
    pub(super) fn init_peer(&self) -> Option<(SocketAddr, u64)> {
        self.init.half_open_peer
    }

    pub(super) fn is_half_open(&self) -> bool {
        self.state == State::InitReplied
    }

    /// Where a half-open responder SA's IKE_SA_INIT came from; None once
    /// it is no longer half-open.
    pub(super) fn half_open_source(&self) -> Option<IpAddr> {
        self.init
            .half_open_peer
            .filter(|_| self.is_half_open() && !self.life.dead)
            .map(|(p, _)| p.ip())
    }

    /// How long an old SA replaced by the peer's rekey stays to answer
    /// retransmissions (in a collision, of our peer's own rekey request) and
    /// wait for its Delete: the peer's whole retransmission span (assuming
    /// its timers are like ours), at least the half-open timeout.
    pub(super) fn linger(&self, config: &super::EndpointConfig) -> Duration {
        let t = &config.connections[self.conn].timers;
        let span: Duration = (0..=t.retransmit_tries)
            .map(|k| backoff(t.retransmit_timeout, k))
            .sum();
        span.max(config.half_open_timeout)
    }

    /// Gives up all CHILD_SAs and becomes a redundant SA that waits for its
    /// Delete (§2.8.2).
    pub(super) fn surrender_children(&mut self, now: Instant, linger: Duration) -> Vec<Child> {
        self.state = State::Rekeyed;
        self.window.queue.clear();
        self.rekey.at = None;
        self.rekey.collision_parent = None;
        self.life.expires = Some(now + linger);
        std::mem::take(&mut self.children)
    }

    /// Takes over CHILD_SAs from another IKE SA; replaced ones are deleted
    /// again from here (see `move_children`). Call [`IkeSa::kick`] after.
    pub(super) fn adopt_children(&mut self, children: Vec<Child>) {
        let mut stale = Vec::new();
        for mut c in children {
            match c.state {
                ChildState::Rekeying => c.state = ChildState::Installed,
                ChildState::Rekeyed | ChildState::Deleting => {
                    c.state = ChildState::Rekeyed;
                    stale.push(c.inbound_spi);
                }
                ChildState::Installed => {}
            }
            self.children.push(c);
        }
        if !stale.is_empty() {
            self.window
                .queue
                .push_back(QueuedRequest::DeleteChild(stale));
        }
    }

    /// Starts queued requests.
    pub(super) fn kick(&mut self, ctx: &mut Ctx<'_>) {
        self.start_next_request(ctx);
    }

    /// The connection this SA belongs to.
    /// Our inbound ESP SPIs.
    pub(super) fn inbound_spis(&self) -> impl Iterator<Item = u32> + '_ {
        self.children.iter().map(|c| c.inbound_spi)
    }

    /// The peer's nonce in a CREATE_CHILD_SA, if it is as long as §2.10
    /// asks for the IKE SA's PRF (at least half its key size); None (as if
    /// missing) otherwise.
    fn peer_nonce(&self, p: &[Payload]) -> Option<Vec<u8>> {
        let prf = self.crypto.suite.map(|s| s.prf);
        nonce_of(p).filter(|n| prf.is_none_or(|prf| init::nonce_fits(n, prf)))
    }

    /// Our inbound ESP SPIs while the SA lives (an ended SA holds none).
    pub(super) fn live_spis(&self) -> Vec<u32> {
        if self.life.dead {
            Vec::new()
        } else {
            self.inbound_spis().collect()
        }
    }

    pub(super) fn conn_index(&self) -> usize {
        self.conn
    }

    /// Whether the peer has authenticated on this SA (a half-open SA's
    /// connection is only provisional).
    pub(super) fn is_authenticated(&self) -> bool {
        matches!(
            self.state,
            State::Established | State::Rekeyed | State::Deleting
        )
    }

    /// Removes the SA and its CHILD_SAs locally, sending nothing.
    pub(super) fn forget(&mut self, ctx: &mut Ctx<'_>, reason: DeleteReason) {
        self.destroy(ctx, reason);
    }

    pub(super) fn clear_collision(&mut self) {
        self.rekey.collision_parent = None;
    }

    /// The peer has shown it has this IKE SA: start the requests held back.
    pub(super) fn peer_has_it(&mut self, ctx: &mut Ctx<'_>) {
        self.rekey.awaiting_peer = false;
        self.start_next_request(ctx);
    }

    /// The address pair in use.
    pub(super) fn path(&self) -> Path {
        self.path
    }

    pub(super) fn info(&self, config: &super::EndpointConfig) -> IkeSaInfo {
        IkeSaInfo {
            id: self.id,
            connection: config
                .connections
                .get(self.conn)
                .map(|c| c.name.clone())
                .unwrap_or_default(),
            initiator: self.initiator,
            state: match self.state {
                State::InitSent => "IKE_SA_INIT sent",
                State::InitReplied => "half-open",
                State::AuthSent => "IKE_AUTH sent",
                State::Established => "established",
                State::Rekeyed => "rekeyed",
                State::Deleting => "deleting",
            },
            path: self.path,
            mobike: self.peer_mobike,
            local_behind_nat: self.nat.local_behind,
            remote_behind_nat: self.nat.remote_behind,
            spi_i: self.spi_i,
            spi_r: self.spi_r,
            children: self
                .children
                .iter()
                .map(|c| (c.inbound_spi, c.outbound_spi))
                .collect(),
            child_sas: self
                .children
                .iter()
                .map(|c| ChildSaInfo {
                    name: config
                        .connections
                        .get(self.conn)
                        .and_then(|k| k.children.get(c.cfg))
                        .map(|k| k.name.clone())
                        .unwrap_or_default(),
                    state: match c.state {
                        ChildState::Installed => "installed",
                        ChildState::Rekeying => "rekeying",
                        ChildState::Rekeyed => "rekeyed",
                        ChildState::Deleting => "deleting",
                    },
                    reqid: c.reqid,
                    inbound_spi: c.inbound_spi,
                    outbound_spi: c.outbound_spi,
                    local_ts: c.local_ts.clone(),
                    remote_ts: c.remote_ts.clone(),
                    rekey_at: c.rekey_at,
                    mode: c.mode,
                })
                .collect(),
            rekey_at: self.rekey.at,
            vips: self.vips.ours.clone(),
            dns: self.vips.dns.clone(),
            peer_vips: self.vips.peers.clone(),
            updating_addresses: self
                .window
                .in_flight
                .as_ref()
                .is_some_and(|o| matches!(o.request, Some(BuiltRequest::UpdateAddresses { .. })))
                || self.moving().is_some_and(|m| m.update_from.is_some())
                || self
                    .window
                    .queue
                    .iter()
                    .any(|q| matches!(q, QueuedRequest::UpdateAddresses(_))),
            local_addrs: self.sent_addresses(),
            peer_addrs: self.peer_addresses().to_vec(),
            remote_addrs: config
                .connections
                .get(self.conn)
                .map(|c| c.remote_addrs().map(|a| a.ip()).collect())
                .unwrap_or_default(),
            return_routability: self.return_routability_info(),
            next_request_id: self.window.next_msg_id,
            next_peer_request_id: self.window.peer_next_msg_id,
            local_auth: self.local_auth,
            remote_auth: self.remote_auth,
            peer_cert: self.peer_cert.as_ref().map(|c| super::PeerCertInfo {
                subject: c.subject.clone(),
                issuer: c.issuer.clone(),
                not_after: c.not_after,
            }),
        }
    }

    fn conn<'a>(&self, ctx: &Ctx<'a>) -> &'a config::ConnectionConfig {
        let cfg: &'a super::EndpointConfig = ctx.config;
        &cfg.connections[self.conn]
    }

    fn established(&self) -> bool {
        self.state == State::Established
    }

    // ------------------------------------------------------------------
    // teardown

    fn delete_child_kernel(&self, ctx: &mut Ctx<'_>, c: &Child, others_share_reqid: bool) {
        ctx.kernel(KernelAction::DeleteChildSa {
            reqid: c.reqid,
            local: self.path.local.ip(),
            remote: self.path.remote.ip(),
            inbound_spi: c.inbound_spi,
            outbound_spi: c.outbound_spi,
            remove_policies: !others_share_reqid,
        });
        ctx.event(Event::ChildSaDeleted {
            sa: self.id,
            inbound_spi: c.inbound_spi,
        });
    }

    fn remove_child(&mut self, ctx: &mut Ctx<'_>, inbound_spi: u32) -> bool {
        let Some(pos) = self
            .children
            .iter()
            .position(|c| c.inbound_spi == inbound_spi)
        else {
            return false;
        };
        let c = self.children.remove(pos);
        let shared = self.children.iter().any(|o| o.reqid == c.reqid);
        self.delete_child_kernel(ctx, &c, shared);
        true
    }

    fn destroy(&mut self, ctx: &mut Ctx<'_>, reason: DeleteReason) {
        if let Some((theirs, _)) = self.rekey.peer_rekey.take() {
            ctx.sa_ops.push(SaOp::ClearCollision(theirs));
        }
        if let Some(next) = self.rekey.successor.take() {
            // The peer deleted the SA it rekeyed, so it has the new one; or
            // we stopped waiting for that Delete: hold nothing back longer.
            ctx.sa_ops.push(SaOp::PeerHasIt(next));
        }
        let spis: Vec<u32> = self.children.iter().map(|c| c.inbound_spi).collect();
        for spi in spis {
            self.remove_child(ctx, spi);
        }
        info!(sa = self.id, ?reason, "IKE SA deleted");
        ctx.event(Event::IkeSaDeleted {
            sa: self.id,
            reason,
        });
        self.life.dead = true;
        self.life.ended = Some(reason);
        self.window.in_flight = None;
        self.window.queue.clear();
    }

    /// Virtual IPs the peer assigned us.
    pub(super) fn vips(&self) -> &[IpAddr] {
        &self.vips.ours
    }

    /// Virtual IPs we assigned the peer (held in the endpoint's leases).
    pub(super) fn peer_vips(&self) -> &[IpAddr] {
        &self.vips.peers
    }

    /// Once dead: why, and whether it had been established (else it was an
    /// attempt; `initiator` says whose).
    pub(super) fn ended(&self) -> Option<Ended> {
        let reason = self.life.ended?;
        Some(Ended {
            conn: self.conn,
            // Whatever ended it in the end (a request that was out before
            // our Delete can go unanswered first), we wanted it gone.
            reason: if self.life.delete_requested {
                DeleteReason::Local
            } else {
                reason
            },
            established: self.is_authenticated(),
            initiator: self.initiator,
        })
    }

    pub(super) fn delete(&mut self, ctx: &mut Ctx<'_>) {
        match self.state {
            State::Established => {
                self.life.delete_requested = true;
                self.window.queue.clear();
                self.window.queue.push_back(QueuedRequest::DeleteIke);
                self.start_next_request(ctx);
            }
            State::Deleting => {}
            State::Rekeyed => self.destroy(ctx, DeleteReason::Rekeyed),
            State::InitSent | State::InitReplied | State::AuthSent => {
                self.destroy(ctx, DeleteReason::Local)
            }
        }
    }

    /// Commands act on established IKE SAs only.
    fn require_established(&self) -> Result<(), super::CommandError> {
        if self.established() {
            Ok(())
        } else {
            Err(super::CommandError::NotEstablished(self.id))
        }
    }

    /// Queues `job` for the CHILD_SA with inbound SPI `spi`, if this IKE SA
    /// is established and has it.
    fn command_on_child(
        &mut self,
        ctx: &mut Ctx<'_>,
        spi: u32,
        job: QueuedRequest,
    ) -> Result<(), super::CommandError> {
        self.require_established()?;
        if !self.children.iter().any(|c| c.inbound_spi == spi) {
            return Err(super::CommandError::UnknownChild {
                sa: self.id,
                what: format!("{spi:#010x}"),
            });
        }
        self.window.queue.push_back(job);
        self.start_next_request(ctx);
        Ok(())
    }
}

fn backoff(base: Duration, sent: u32) -> Duration {
    base * (1u32 << sent.min(MAX_BACKOFF_SHIFT))
}
