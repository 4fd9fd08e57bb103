//! One IKE SA: the exchanges of RFC 7296 §1 as a state machine, driven by
//! the [`Endpoint`](super::Endpoint) with a [`Ctx`] per call.
//!
//! Window size is one in each direction (§2.3): one outstanding request of
//! ours, further requests wait in a queue; the peer's next request ID is
//! tracked and the last response is cached for replay. Nothing about an
//! established SA changes before the Encrypted payload has verified (§2.21).

use std::{
    collections::VecDeque,
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use tracing::{debug, info, warn};

use super::{
    ChildSaInfo, ChildSaInstall, Ctx, DeleteReason, EspSa, Event, IkeSaInfo, KernelAction, Mode,
    Path, SaId, UdpEncap, config,
};
use crate::{
    crypto::{self, ChildKeys, DhGroup, IkeKeys, KeyShare},
    proposal::{self, EspSuite, IkeSuite},
    proto::{
        self, AuthMethod, Authentication, Delete, ExchangeType, Header, KeyExchange, Message,
        Notify, NotifyType, Payload, ProtocolId, TrafficSelector, flags,
    },
};

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
#[derive(Debug)]
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

#[derive(Debug)]
enum Pending {
    Dpd,
    DeleteIke,
    DeleteChild(Vec<u32>),
    /// Delete the CHILD_SA the peer made with this (our inbound) SPI in
    /// an exchange whose outcome we refused: we never had it.
    DeleteRefused(u32),
    /// Rekey the CHILD_SA with this inbound SPI; the group is the one the
    /// peer asked for with INVALID_KE_PAYLOAD.
    RekeyChild(u32, Option<DhGroup>),
    CreateChild(usize, Option<DhGroup>),
    RekeyIke(Option<DhGroup>),
    /// MOBIKE: move to this address pair.
    UpdateAddresses(Path),
}

#[derive(Debug)]
struct ChildOffer {
    cfg: usize,
    spi: u32,
    nonce: Vec<u8>,
    share: Option<KeyShare>,
    rekey_of: Option<u32>,
    local_ts: Vec<TrafficSelector>,
    remote_ts: Vec<TrafficSelector>,
}

#[derive(Debug)]
struct IkeRekeyOffer {
    spi: u64,
    nonce: Vec<u8>,
    share: KeyShare,
}

#[derive(Debug)]
enum Request {
    Auth(Option<ChildOffer>),
    Dpd,
    DeleteIke(DeleteReason),
    DeleteChild(Vec<u32>),
    CreateChild(ChildOffer),
    RekeyIke(IkeRekeyOffer),
    /// MOBIKE: the old path and the COOKIE2 we sent (RFC 4555 §3.5).
    UpdateAddresses {
        old: Path,
        cookie2: Vec<u8>,
    },
}

#[derive(Debug)]
struct Outstanding {
    msg_id: u32,
    exchange: ExchangeType,
    bytes: Vec<u8>,
    request: Option<Request>,
    sent: u32,
    next: Instant,
}

/// One IKE SA.
#[derive(Debug)]
pub(super) struct IkeSa {
    id: SaId,
    conn: usize,
    initiator: bool,
    spi_i: u64,
    spi_r: u64,
    state: State,
    path: Path,
    local_nat: bool,
    remote_nat: bool,
    suite: Option<IkeSuite>,
    keys: Option<IkeKeys>,
    iv: u64,
    ni: Vec<u8>,
    nr: Vec<u8>,
    share: Option<KeyShare>,
    init_request: Vec<u8>,
    init_response: Vec<u8>,
    cookie: Option<Vec<u8>>,
    init_restarts: u32,
    peer_mobike: bool,
    next_msg_id: u32,
    outstanding: Option<Outstanding>,
    queue: VecDeque<Pending>,
    peer_next_msg_id: u32,
    cached_response: Option<(u32, Vec<u8>)>,
    children: Vec<Child>,
    last_heard: Instant,
    expires: Option<Instant>,
    rekey_at: Option<Instant>,
    keepalive_at: Option<Instant>,
    half_open_peer: Option<(SocketAddr, u64)>,
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
    /// A Delete was asked for; it survives a rekey that was in flight.
    delete_requested: bool,
    /// Send INITIAL_CONTACT in IKE_AUTH (§2.4).
    initial_contact: bool,
    /// Where the request being answered came from (§2.11).
    reply_path: Option<Path>,
    dead: bool,
    /// Why it ended, once dead.
    ended: Option<DeleteReason>,
    /// Virtual IPs the peer assigned us, and its DNS servers (§2.19).
    vips: Vec<IpAddr>,
    dns: Vec<IpAddr>,
    /// Virtual IPs we assigned the peer from our pools.
    peer_vips: Vec<IpAddr>,
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

/// A stateless IKE_SA_INIT answer (errors and cookie demands, §2.6, §2.7).
fn init_error_response(ctx: &mut Ctx<'_>, path: Path, req: &Header, payload: Payload) {
    let msg = Message {
        header: Header {
            spi_i: req.spi_i,
            spi_r: 0,
            next_payload: proto::PayloadType::NONE,
            version: 0x20,
            exchange: ExchangeType::IKE_SA_INIT,
            flags: flags::RESPONSE,
            message_id: 0,
            length: 0,
        },
        payloads: vec![payload],
    };
    ctx.send(path, ctx.config.nat_t_port, &msg.encode());
}

fn cookie_for(secret: &[u8; 32], ni: &[u8], remote: SocketAddr, spi_i: u64) -> Vec<u8> {
    // §2.6: Cookie = <VersionIDofSecret> | Hash(Ni | IPi | SPIi | <secret>).
    let ip = match remote.ip() {
        std::net::IpAddr::V4(a) => a.octets().to_vec(),
        std::net::IpAddr::V6(a) => a.octets().to_vec(),
    };
    let mut c = vec![1u8];
    c.extend_from_slice(&crypto::sha256(&[ni, &ip, &spi_i.to_be_bytes(), secret]));
    c
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
            local_nat: false,
            remote_nat: false,
            suite: None,
            keys: None,
            iv: 0,
            ni: Vec::new(),
            nr: Vec::new(),
            share: None,
            init_request: Vec::new(),
            init_response: Vec::new(),
            cookie: None,
            init_restarts: 0,
            peer_mobike: false,
            next_msg_id: 0,
            outstanding: None,
            queue: VecDeque::new(),
            peer_next_msg_id: 0,
            cached_response: None,
            children: Vec::new(),
            last_heard: now,
            expires: None,
            rekey_at: None,
            keepalive_at: None,
            half_open_peer: None,
            collision_parent: None,
            peer_rekey: None,
            awaiting_peer: false,
            successor: None,
            delete_requested: false,
            initial_contact: false,
            reply_path: None,
            dead: false,
            ended: None,
            vips: Vec::new(),
            dns: Vec::new(),
            peer_vips: Vec::new(),
        }
    }

    pub(super) fn id(&self) -> SaId {
        self.id
    }

    /// (peer, SPIi) of the IKE_SA_INIT that created this responder SA, for
    /// recognising retransmitted or duplicated IKE_SA_INIT requests.
    pub(super) fn init_key(&self) -> Option<(SocketAddr, u64)> {
        if self.dead { None } else { self.half_open_peer }
    }

    pub(super) fn is_half_open(&self) -> bool {
        self.state == State::InitReplied
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
        self.queue.clear();
        self.rekey_at = None;
        self.collision_parent = None;
        self.expires = Some(now + linger);
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
            self.queue.push_back(Pending::DeleteChild(stale));
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
        self.collision_parent = None;
    }

    /// The peer has shown it has this IKE SA: start the requests held back.
    pub(super) fn peer_has_it(&mut self, ctx: &mut Ctx<'_>) {
        self.awaiting_peer = false;
        self.start_next_request(ctx);
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
            local_behind_nat: self.local_nat,
            remote_behind_nat: self.remote_nat,
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
            rekey_at: self.rekey_at,
            vips: self.vips.clone(),
            dns: self.dns.clone(),
            peer_vips: self.peer_vips.clone(),
            updating_addresses: self
                .outstanding
                .as_ref()
                .is_some_and(|o| matches!(o.request, Some(Request::UpdateAddresses { .. }))),
            next_request_id: self.next_msg_id,
            next_peer_request_id: self.peer_next_msg_id,
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
    // timers

    pub(super) fn next_deadline(&self, config: &super::EndpointConfig) -> Option<Instant> {
        let timers = &config.connections[self.conn].timers;
        let mut d: Vec<Instant> = Vec::new();
        d.extend(self.outstanding.as_ref().map(|o| o.next));
        d.extend(self.expires);
        if self.established() {
            if self.outstanding.is_none()
                && !self.awaiting_peer
                && let Some(dpd) = timers.dpd_delay
            {
                d.push(self.last_heard + dpd);
            }
            d.extend(self.rekey_at);
            d.extend(
                self.children
                    .iter()
                    .filter(|c| c.state == ChildState::Installed)
                    .filter_map(|c| c.rekey_at),
            );
        }
        if self.local_nat
            && matches!(
                self.state,
                State::Established | State::Deleting | State::Rekeyed
            )
        {
            d.extend(self.keepalive_at);
        }
        d.into_iter().min()
    }

    pub(super) fn handle_timeout(&mut self, ctx: &mut Ctx<'_>) {
        let now = ctx.now;
        let timers = &self.conn(ctx).timers;
        if self.expires.is_some_and(|e| e <= now) {
            let reason = if self.state == State::Rekeyed {
                DeleteReason::Rekeyed
            } else {
                DeleteReason::HalfOpenTimeout
            };
            self.destroy(ctx, reason);
            return;
        }
        if let Some(o) = self.outstanding.as_mut()
            && o.next <= now
        {
            if o.sent > timers.retransmit_tries {
                // An unanswered Delete still ends the SA as we wanted: the
                // peer may have deleted it and lost only the answer.
                let reason = match o.request {
                    Some(Request::DeleteIke(r)) => r,
                    _ => DeleteReason::PeerUnreachable,
                };
                warn!(
                    sa = self.id,
                    ?reason,
                    "peer does not answer, giving up on the IKE SA"
                );
                self.destroy(ctx, reason);
                return;
            }
            ctx.send(self.path, ctx.config.nat_t_port, &o.bytes);
            ctx.stats.retransmits += 1;
            o.next = now + backoff(timers.retransmit_timeout, o.sent);
            o.sent += 1;
            debug!(
                sa = self.id,
                msg_id = o.msg_id,
                try_ = o.sent,
                "retransmitted request"
            );
        }
        if self.established() {
            if let Some(dpd) = timers.dpd_delay
                && self.outstanding.is_none()
                && self.queue.is_empty()
                && self.last_heard + dpd <= now
            {
                self.queue.push_back(Pending::Dpd);
            }
            if self.rekey_at.is_some_and(|t| t <= now) {
                self.rekey_at = None;
                self.queue.push_back(Pending::RekeyIke(None));
            }
            for c in &mut self.children {
                if c.state == ChildState::Installed && c.rekey_at.is_some_and(|t| t <= now) {
                    c.rekey_at = None;
                    self.queue
                        .push_back(Pending::RekeyChild(c.inbound_spi, None));
                }
            }
        }
        if self.local_nat && self.keepalive_at.is_some_and(|t| t <= now) {
            // RFC 3948 §2.3: a single 0xFF octet.
            ctx.out.transmits.push_back(super::Transmit {
                local: self.path.local,
                remote: self.path.remote,
                payload: vec![0xff],
            });
            self.keepalive_at = Some(now + timers.nat_keepalive);
        }
        self.start_next_request(ctx);
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
        if let Some((theirs, _)) = self.peer_rekey.take() {
            ctx.sa_ops.push(SaOp::ClearCollision(theirs));
        }
        if let Some(next) = self.successor.take() {
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
        self.dead = true;
        self.ended = Some(reason);
        self.outstanding = None;
        self.queue.clear();
    }

    /// Virtual IPs the peer assigned us.
    pub(super) fn vips(&self) -> &[IpAddr] {
        &self.vips
    }

    /// Virtual IPs we assigned the peer (held in the endpoint's leases).
    pub(super) fn peer_vips(&self) -> &[IpAddr] {
        &self.peer_vips
    }

    /// Once dead: why, and whether it had been established (else it was an
    /// attempt; `initiator` says whose).
    pub(super) fn ended(&self) -> Option<Ended> {
        let reason = self.ended?;
        Some(Ended {
            conn: self.conn,
            // Whatever ended it in the end (a request that was out before
            // our Delete can go unanswered first), we wanted it gone.
            reason: if self.delete_requested {
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
                self.delete_requested = true;
                self.queue.clear();
                self.queue.push_back(Pending::DeleteIke);
                self.start_next_request(ctx);
            }
            State::Deleting => {}
            State::Rekeyed => self.destroy(ctx, DeleteReason::Rekeyed),
            State::InitSent | State::InitReplied | State::AuthSent => {
                self.destroy(ctx, DeleteReason::Local)
            }
        }
    }

    // ------------------------------------------------------------------
    // commands

    pub(super) fn command_rekey_ike(
        &mut self,
        ctx: &mut Ctx<'_>,
    ) -> Result<(), super::CommandError> {
        self.require_established()?;
        self.queue.push_back(Pending::RekeyIke(None));
        self.start_next_request(ctx);
        Ok(())
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
        job: Pending,
    ) -> Result<(), super::CommandError> {
        self.require_established()?;
        if !self.children.iter().any(|c| c.inbound_spi == spi) {
            return Err(super::CommandError::UnknownChild {
                sa: self.id,
                what: format!("{spi:#010x}"),
            });
        }
        self.queue.push_back(job);
        self.start_next_request(ctx);
        Ok(())
    }

    pub(super) fn command_rekey_child(
        &mut self,
        ctx: &mut Ctx<'_>,
        spi: u32,
    ) -> Result<(), super::CommandError> {
        self.command_on_child(ctx, spi, Pending::RekeyChild(spi, None))
    }

    /// Deletes one CHILD_SA with the peer (INFORMATIONAL with a Delete of
    /// its ESP SPI, RFC 7296 §1.4.1); the kernel state goes when the peer
    /// answers (or with the IKE SA).
    pub(super) fn command_delete_child(
        &mut self,
        ctx: &mut Ctx<'_>,
        spi: u32,
    ) -> Result<(), super::CommandError> {
        self.command_on_child(ctx, spi, Pending::DeleteChild(vec![spi]))
    }

    /// An ESP SA of the CHILD_SA `spi` (inbound SPI) reached a kernel
    /// limit ([`super::Command::ChildSaExpired`]).
    pub(super) fn child_expired(
        &mut self,
        ctx: &mut Ctx<'_>,
        spi: u32,
        hard: bool,
    ) -> Result<(), super::CommandError> {
        let Some(child) = self.children.iter_mut().find(|c| c.inbound_spi == spi) else {
            return Err(super::CommandError::UnknownChild {
                sa: self.id,
                what: format!("{spi:#010x}"),
            });
        };
        if child.state != ChildState::Installed {
            // Being rekeyed or deleted already: its end is near anyway.
            debug!(sa = self.id, child = format_args!("{spi:#010x}"), hard, state = ?child.state,
                   "kernel limit reached by a CHILD_SA already on its way out");
            return Ok(());
        }
        if hard {
            // RFC 7296 §2.8: an SA past its lifetime is deleted, not used.
            warn!(
                sa = self.id,
                child = format_args!("{spi:#010x}"),
                "CHILD_SA reached its hard limit in the kernel: deleting it"
            );
            self.queue.push_back(Pending::DeleteChild(vec![spi]));
        } else {
            info!(
                sa = self.id,
                child = format_args!("{spi:#010x}"),
                "CHILD_SA reached its soft limit in the kernel: rekeying"
            );
            child.rekey_at = None;
            self.queue.push_back(Pending::RekeyChild(spi, None));
        }
        self.start_next_request(ctx);
        Ok(())
    }

    pub(super) fn command_create_child(
        &mut self,
        ctx: &mut Ctx<'_>,
        cfg: usize,
    ) -> Result<(), super::CommandError> {
        self.require_established()?;
        if cfg >= self.conn(ctx).children.len() {
            return Err(super::CommandError::UnknownChild {
                sa: self.id,
                what: format!("config #{cfg}"),
            });
        }
        self.queue.push_back(Pending::CreateChild(cfg, None));
        self.start_next_request(ctx);
        Ok(())
    }

    pub(super) fn command_update_addresses(
        &mut self,
        ctx: &mut Ctx<'_>,
        path: Path,
    ) -> Result<(), super::CommandError> {
        self.require_established()?;
        if !self.peer_mobike {
            return Err(super::CommandError::NoMobike(self.id));
        }
        self.queue.push_back(Pending::UpdateAddresses(path));
        self.start_next_request(ctx);
        Ok(())
    }

    /// NAT-D notifies for `path` (RFC 7296 §2.23; RFC 4555 §3.5 carries
    /// them in UPDATE_SA_ADDRESSES exchanges too).
    fn nat_d_payloads(&self, path: Path) -> [Payload; 2] {
        [
            notify(
                NotifyType::NAT_DETECTION_SOURCE_IP,
                crypto::nat_detection_hash(self.spi_i, self.spi_r, path.local),
            ),
            notify(
                NotifyType::NAT_DETECTION_DESTINATION_IP,
                crypto::nat_detection_hash(self.spi_i, self.spi_r, path.remote),
            ),
        ]
    }

    /// Moves every CHILD_SA from `old` to the current path in the kernel.
    fn migrate_children(&mut self, ctx: &mut Ctx<'_>, old: Path) {
        let encap = self.encap();
        for c in &self.children {
            ctx.kernel(KernelAction::MigrateChildSa {
                reqid: c.reqid,
                inbound_spi: c.inbound_spi,
                outbound_spi: c.outbound_spi,
                from: (old.local.ip(), old.remote.ip()),
                to: (self.path.local.ip(), self.path.remote.ip()),
                encap,
            });
        }
        info!(sa = self.id, local = %self.path.local, remote = %self.path.remote, "IKE SA moved (MOBIKE)");
        ctx.event(Event::PathChanged {
            sa: self.id,
            path: self.path,
        });
    }

    pub(super) fn command_dpd(&mut self, ctx: &mut Ctx<'_>) -> Result<(), super::CommandError> {
        self.require_established()?;
        self.queue.push_back(Pending::Dpd);
        self.start_next_request(ctx);
        Ok(())
    }

    // ------------------------------------------------------------------
    // message plumbing

    fn header(&self, exchange: ExchangeType, message_id: u32, response: bool) -> Header {
        Header {
            spi_i: self.spi_i,
            spi_r: self.spi_r,
            next_payload: proto::PayloadType::NONE,
            version: 0x20,
            exchange,
            flags: if self.initiator { flags::INITIATOR } else { 0 }
                | if response { flags::RESPONSE } else { 0 },
            message_id,
            length: 0,
        }
    }

    fn seal(&mut self, header: Header, payloads: &[Payload]) -> Option<Vec<u8>> {
        let keys = self.keys.as_ref()?;
        let key = if self.initiator {
            &keys.sk_ei
        } else {
            &keys.sk_er
        };
        self.iv += 1;
        match crypto::seal_message(header, payloads, keys.aead, key, self.iv.to_be_bytes()) {
            Ok(b) => Some(b),
            Err(e) => {
                warn!(sa = self.id, error = %e, "cannot encrypt message");
                None
            }
        }
    }

    fn open(&self, bytes: &[u8], msg: &Message) -> Result<Vec<Payload>, crypto::CryptoError> {
        let keys = self
            .keys
            .as_ref()
            .ok_or(crypto::CryptoError::NotEncrypted)?;
        let key = if self.initiator {
            &keys.sk_er
        } else {
            &keys.sk_ei
        };
        crypto::open_message(bytes, msg, keys.aead, key)
    }

    fn send_request(
        &mut self,
        ctx: &mut Ctx<'_>,
        exchange: ExchangeType,
        payloads: &[Payload],
        request: Request,
    ) {
        let msg_id = self.next_msg_id;
        let Some(bytes) = self.seal(self.header(exchange, msg_id, false), payloads) else {
            return;
        };
        self.next_msg_id = self.next_msg_id.wrapping_add(1);
        ctx.send(self.path, ctx.config.nat_t_port, &bytes);
        let timeout = self.conn(ctx).timers.retransmit_timeout;
        self.outstanding = Some(Outstanding {
            msg_id,
            exchange,
            bytes,
            request: Some(request),
            sent: 1,
            next: ctx.now + timeout,
        });
    }

    fn respond(
        &mut self,
        ctx: &mut Ctx<'_>,
        exchange: ExchangeType,
        msg_id: u32,
        payloads: &[Payload],
    ) {
        let Some(bytes) = self.seal(self.header(exchange, msg_id, true), payloads) else {
            return;
        };
        // §2.11: a response goes back where the request came from.
        let to = self.reply_path.unwrap_or(self.path);
        ctx.send(to, ctx.config.nat_t_port, &bytes);
        self.cached_response = Some((msg_id, bytes));
    }

    fn encap(&self) -> Option<UdpEncap> {
        (self.local_nat || self.remote_nat).then_some(UdpEncap {
            local_port: self.path.local.port(),
            remote_port: self.path.remote.port(),
        })
    }

    // ------------------------------------------------------------------
    // IKE_SA_INIT, initiator

    /// `initial_contact`: we have no other IKE SA with this peer, so tell it
    /// to drop any it still has with us (§2.4).
    pub(super) fn initiate(
        ctx: &mut Ctx<'_>,
        conn: usize,
        path: Path,
        initial_contact: bool,
    ) -> Option<Self> {
        let spi_i = ctx.spi64()?;
        let mut sa = IkeSa::blank(spi_i, conn, true, path, ctx.now);
        sa.spi_i = spi_i;
        sa.initial_contact = initial_contact;
        sa.ni = ctx.random::<32>()?.to_vec();
        let group = sa.conn(ctx).ike_proposals.first()?.dh.first().copied()?;
        sa.share = Some(KeyShare::generate(group, ctx.rng).ok()?);
        info!(sa = sa.id, conn = %sa.conn(ctx).name, remote = %path.remote, "initiating IKE SA");
        sa.send_init(ctx);
        Some(sa)
    }

    fn send_init(&mut self, ctx: &mut Ctx<'_>) {
        let conn = self.conn(ctx);
        let Some(share) = self.share.as_ref() else {
            return;
        };
        let mut payloads = Vec::new();
        if let Some(c) = &self.cookie {
            // §2.6: the COOKIE notify MUST be the first payload.
            payloads.push(notify(NotifyType::COOKIE, c.clone()));
        }
        payloads.push(Payload::Sa(
            conn.ike_proposals
                .iter()
                .enumerate()
                .map(|(i, p)| p.to_wire(i as u8 + 1, vec![]))
                .collect(),
        ));
        payloads.push(Payload::Ke(KeyExchange {
            group: share.group().number(),
            data: share.public().to_vec(),
        }));
        payloads.push(Payload::Nonce(self.ni.clone()));
        payloads.push(notify(
            NotifyType::NAT_DETECTION_SOURCE_IP,
            crypto::nat_detection_hash(self.spi_i, 0, self.path.local),
        ));
        payloads.push(notify(
            NotifyType::NAT_DETECTION_DESTINATION_IP,
            crypto::nat_detection_hash(self.spi_i, 0, self.path.remote),
        ));
        let msg = Message {
            header: self.header(ExchangeType::IKE_SA_INIT, 0, false),
            payloads,
        };
        let bytes = msg.encode();
        ctx.send(self.path, ctx.config.nat_t_port, &bytes);
        self.init_request = bytes.clone();
        self.state = State::InitSent;
        // IKE_SA_INIT is message 0; IKE_AUTH follows with 1 (§2.2).
        self.next_msg_id = 1;
        self.outstanding = Some(Outstanding {
            msg_id: 0,
            exchange: ExchangeType::IKE_SA_INIT,
            bytes,
            request: None,
            sent: 1,
            next: ctx.now + conn.timers.retransmit_timeout,
        });
    }

    fn handle_init_response(&mut self, ctx: &mut Ctx<'_>, path: Path, bytes: &[u8], msg: &Message) {
        let conn = self.conn(ctx);
        let p = &msg.payloads;
        if let Some(c) = notify_of(p, NotifyType::COOKIE) {
            if self.init_restarts >= MAX_INIT_RESTARTS || c.data.is_empty() || c.data.len() > 64 {
                return;
            }
            debug!(
                sa = self.id,
                "responder demands a cookie, restarting IKE_SA_INIT"
            );
            self.init_restarts += 1;
            self.cookie = Some(c.data.clone());
            self.send_init(ctx);
            return;
        }
        if let Some(g) =
            notify_of(p, NotifyType::INVALID_KE_PAYLOAD).and_then(Notify::invalid_ke_group)
        {
            let acceptable = conn
                .ike_proposals
                .iter()
                .flat_map(|p| p.dh.iter())
                .any(|d| d.number() == g);
            let current = self.share.as_ref().map(|s| s.group().number());
            match DhGroup::from_number(g) {
                Some(group)
                    if acceptable
                        && current != Some(g)
                        && self.init_restarts < MAX_INIT_RESTARTS =>
                {
                    debug!(
                        sa = self.id,
                        ?group,
                        "INVALID_KE_PAYLOAD, retrying with the responder's group"
                    );
                    self.init_restarts += 1;
                    let Ok(share) = KeyShare::generate(group, ctx.rng) else {
                        return;
                    };
                    self.share = Some(share);
                    self.send_init(ctx);
                }
                _ => self.destroy(ctx, DeleteReason::Negotiation),
            }
            return;
        }
        if let Some(err) = first_error(p) {
            warn!(sa = self.id, notify = ?err, "IKE_SA_INIT refused");
            self.destroy(ctx, DeleteReason::PeerError(err));
            return;
        }
        let (Some(props), Some(ke), Some(nr)) = (sa_of(p), ke_of(p), nonce_of(p)) else {
            ctx.stats.unexpected += 1;
            return;
        };
        let suite = match props.as_slice() {
            [one] => proposal::ike_suite_from_wire(one).filter(|s| {
                conn.ike_proposals
                    .iter()
                    .any(|ours| ours.select(one) == Some(*s))
            }),
            _ => None,
        };
        let Some(suite) = suite.filter(|s| Some(s.dh) == self.share.as_ref().map(KeyShare::group))
        else {
            warn!(sa = self.id, "responder chose a proposal we did not offer");
            self.destroy(ctx, DeleteReason::Negotiation);
            return;
        };
        if msg.header.spi_r == 0 || ke.group != suite.dh.number() {
            self.destroy(ctx, DeleteReason::Negotiation);
            return;
        }
        let Some(share) = self.share.take() else {
            return;
        };
        let shared = match share.agree(&ke.data) {
            Ok(s) => s,
            Err(e) => {
                warn!(sa = self.id, error = %e, "key exchange failed");
                self.destroy(ctx, DeleteReason::Negotiation);
                return;
            }
        };
        self.spi_r = msg.header.spi_r;
        let Ok(keys) = IkeKeys::derive(
            suite.prf, suite.encr, &self.ni, &nr, &shared, self.spi_i, self.spi_r,
        ) else {
            return;
        };
        self.keys = Some(keys);
        self.suite = Some(suite);
        self.nr = nr;
        self.init_response = bytes.to_vec();
        self.outstanding = None;
        self.detect_nat(ctx, path, &msg.header, p);
        // §2.23 and RFC 4555 §3.3: switch to port 4500 for IKE_AUTH when a
        // NAT is detected or MOBIKE is offered.
        if self.local_nat || self.remote_nat || conn.mobike {
            self.path.local.set_port(ctx.config.nat_t_port);
            self.path.remote.set_port(ctx.config.nat_t_port);
        }
        self.send_auth(ctx);
    }

    fn detect_nat(&mut self, ctx: &mut Ctx<'_>, path: Path, h: &Header, p: &[Payload]) {
        let src: Vec<&Notify> = proto::notifies(p)
            .filter(|n| n.ty == NotifyType::NAT_DETECTION_SOURCE_IP)
            .collect();
        let dst = notify_of(p, NotifyType::NAT_DETECTION_DESTINATION_IP);
        if src.is_empty() || dst.is_none() {
            return; // peer does not do NAT-T
        }
        self.local_nat =
            dst.is_some_and(|d| d.data != crypto::nat_detection_hash(h.spi_i, h.spi_r, path.local));
        let theirs = crypto::nat_detection_hash(h.spi_i, h.spi_r, path.remote);
        self.remote_nat = !src.iter().any(|n| n.data == theirs);
        if self.local_nat || self.remote_nat {
            ctx.event(Event::NatDetected {
                sa: self.id,
                local_behind_nat: self.local_nat,
                remote_behind_nat: self.remote_nat,
            });
        }
        if self.local_nat {
            self.keepalive_at = Some(ctx.now + self.conn(ctx).timers.nat_keepalive);
        }
    }

    // ------------------------------------------------------------------
    // IKE_SA_INIT, responder

    pub(super) fn respond_init(
        ctx: &mut Ctx<'_>,
        path: Path,
        bytes: &[u8],
        msg: &Message,
        half_open: usize,
        cookie_secret: &[u8; 32],
    ) -> Option<Self> {
        let h = msg.header;
        let p = &msg.payloads;
        if h.message_id != 0 {
            ctx.stats.unexpected += 1;
            return None;
        }
        if let Some(ty) = unknown_critical(p) {
            init_error_response(
                ctx,
                path,
                &h,
                notify(NotifyType::UNSUPPORTED_CRITICAL_PAYLOAD, vec![ty]),
            );
            return None;
        }
        let (Some(props), Some(ke), Some(ni)) = (sa_of(p), ke_of(p), nonce_of(p)) else {
            init_error_response(ctx, path, &h, notify(NotifyType::INVALID_SYNTAX, vec![]));
            return None;
        };
        if half_open >= ctx.config.cookie_threshold {
            let expected = cookie_for(cookie_secret, &ni, path.remote, h.spi_i);
            let got = match p.first() {
                Some(Payload::Notify(n)) if n.ty == NotifyType::COOKIE => Some(&n.data),
                _ => None,
            };
            if got.is_none_or(|c| !crypto::verify_mac(&expected, c)) {
                ctx.stats.cookies_sent += 1;
                init_error_response(ctx, path, &h, notify(NotifyType::COOKIE, expected));
                return None;
            }
        }
        // First connection that accepts one of the offered proposals.
        let choice = ctx
            .config
            .connections
            .iter()
            .enumerate()
            .find_map(|(i, c)| {
                if c.remote_addr.is_some_and(|a| a.ip() != path.remote.ip()) {
                    return None;
                }
                props.iter().find_map(|offered| {
                    c.ike_proposals.iter().find_map(|ours| {
                        let mut s = ours.select(offered)?;
                        // Prefer the group the initiator already sent a KE for.
                        if let Some(g) = DhGroup::from_number(ke.group)
                            && ours.dh.contains(&g)
                            && (proposal::IkeProposal {
                                encr: vec![s.encr],
                                prf: vec![s.prf],
                                dh: vec![g],
                            })
                            .select(offered)
                            .is_some()
                        {
                            s.dh = g;
                        }
                        Some((i, offered.number, s))
                    })
                })
            });
        let Some((conn, number, suite)) = choice else {
            debug!(remote = %path.remote, "IKE_SA_INIT: no proposal chosen");
            init_error_response(
                ctx,
                path,
                &h,
                notify(NotifyType::NO_PROPOSAL_CHOSEN, vec![]),
            );
            return None;
        };
        if ke.group != suite.dh.number() {
            init_error_response(
                ctx,
                path,
                &h,
                notify(
                    NotifyType::INVALID_KE_PAYLOAD,
                    suite.dh.number().to_be_bytes().to_vec(),
                ),
            );
            return None;
        }
        let spi_r = ctx.spi64()?;
        let mut sa = IkeSa::blank(spi_r, conn, false, path, ctx.now);
        sa.spi_i = h.spi_i;
        sa.spi_r = spi_r;
        sa.ni = ni;
        sa.nr = ctx.random::<32>()?.to_vec();
        let share = KeyShare::generate(suite.dh, ctx.rng).ok()?;
        let public = share.public().to_vec();
        let shared = match share.agree(&ke.data) {
            Ok(s) => s,
            Err(e) => {
                debug!(remote = %path.remote, error = %e, "IKE_SA_INIT: bad KE");
                init_error_response(ctx, path, &h, notify(NotifyType::INVALID_SYNTAX, vec![]));
                return None;
            }
        };
        sa.keys = Some(
            IkeKeys::derive(
                suite.prf, suite.encr, &sa.ni, &sa.nr, &shared, sa.spi_i, sa.spi_r,
            )
            .ok()?,
        );
        sa.suite = Some(suite);
        sa.detect_nat(ctx, path, &h, p);
        let [nat_src, nat_dst] = sa.nat_d_payloads(path);
        let payloads = vec![
            Payload::Sa(vec![proposal::ike_suite_to_wire(suite, number, vec![])]),
            Payload::Ke(KeyExchange {
                group: suite.dh.number(),
                data: public,
            }),
            Payload::Nonce(sa.nr.clone()),
            nat_src,
            nat_dst,
        ];
        let out = Message {
            header: sa.header(ExchangeType::IKE_SA_INIT, 0, true),
            payloads,
        }
        .encode();
        ctx.send(path, ctx.config.nat_t_port, &out);
        sa.init_request = bytes.to_vec();
        sa.init_response = out.clone();
        sa.cached_response = Some((0, out));
        sa.peer_next_msg_id = 1;
        sa.state = State::InitReplied;
        sa.half_open_peer = Some((path.remote, h.spi_i));
        sa.expires = Some(ctx.now + ctx.config.half_open_timeout);
        debug!(sa = sa.id, remote = %path.remote, ?suite, "IKE_SA_INIT answered");
        Some(sa)
    }

    pub(super) fn replay_init_response(&mut self, ctx: &mut Ctx<'_>, request: &[u8]) {
        // Once IKE_AUTH arrived the initiator has our answer: late copies
        // of its IKE_SA_INIT are dropped.
        if self.state == State::InitReplied && request == self.init_request.as_slice() {
            if let Some((_, r)) = &self.cached_response {
                ctx.stats.replayed_responses += 1;
                ctx.send(self.path, ctx.config.nat_t_port, r);
                // RFC 7296 §2.1: a retransmission "belonging to an existing
                // 'half-open' IKE SA (in which case the responder
                // retransmits the same response)". That replay is what the
                // initiator goes on from, so the half-open timeout runs from
                // it, not from the first (lost) answer: otherwise the SA can
                // expire between the replay and the IKE_AUTH it invites, and
                // the initiator retransmits IKE_AUTH into nothing until it
                // gives up. Only a bitwise-identical retransmission from the
                // same peer and SPIi gets here, so this lasts no longer than
                // the initiator keeps retransmitting.
                self.expires = Some(ctx.now + ctx.config.half_open_timeout);
            }
        } else {
            ctx.stats.unexpected += 1;
        }
    }

    // ------------------------------------------------------------------
    // IKE_AUTH

    fn child_offer(
        &self,
        ctx: &mut Ctx<'_>,
        cfg: usize,
        rekey_of: Option<&Child>,
        pfs: bool,
        group: Option<DhGroup>,
    ) -> Option<ChildOffer> {
        let child = self.conn(ctx).children.get(cfg)?;
        let group = if pfs {
            group.or_else(|| {
                child
                    .esp_proposals
                    .first()
                    .and_then(|p| p.dh.first().copied())
            })
        } else {
            None
        };
        let share = match group {
            Some(g) => Some(KeyShare::generate(g, ctx.rng).ok()?),
            None => None,
        };
        Some(ChildOffer {
            cfg,
            spi: ctx.spi32()?,
            nonce: ctx.random::<32>()?.to_vec(),
            share,
            rekey_of: rekey_of.map(|c| c.inbound_spi),
            local_ts: rekey_of.map_or_else(
                || self.own_selectors(&self.conn(ctx).vips, &child.local_ts),
                |c| c.local_ts.clone(),
            ),
            remote_ts: rekey_of.map_or_else(|| child.remote_ts.clone(), |c| c.remote_ts.clone()),
        })
    }

    /// Our selectors for a new CHILD_SA: the configured ones; without
    /// any, our virtual IPs once assigned, before that the whole of each
    /// family asked for, for the peer to narrow to what it assigns
    /// (§2.19, §3.15.4).
    fn own_selectors(
        &self,
        asked: &[IpAddr],
        configured: &[TrafficSelector],
    ) -> Vec<TrafficSelector> {
        if !configured.is_empty() {
            return configured.to_vec();
        }
        if !self.vips.is_empty() {
            return host_selectors(&self.vips);
        }
        let mut out: Vec<TrafficSelector> = Vec::new();
        for a in asked {
            let whole = if a.is_ipv6() { "::/0" } else { "0.0.0.0/0" };
            if let Ok(t) = config::parse_ts(whole)
                && !out.contains(&t)
            {
                out.push(t);
            }
        }
        out
    }

    fn child_payloads(&self, ctx: &Ctx<'_>, offer: &ChildOffer) -> Vec<Payload> {
        let child = &self.conn(ctx).children[offer.cfg];
        let with_dh = offer.share.is_some();
        vec![
            Payload::Sa(
                child
                    .esp_proposals
                    .iter()
                    .enumerate()
                    .map(|(i, p)| p.to_wire(i as u8 + 1, offer.spi, with_dh))
                    .collect(),
            ),
            Payload::TsI(offer.local_ts.clone()),
            Payload::TsR(offer.remote_ts.clone()),
        ]
        .into_iter()
        // §1.3.1; again with each rekey (§1.3.3).
        .chain(
            (child.mode == Mode::Transport).then(|| notify(NotifyType::USE_TRANSPORT_MODE, vec![])),
        )
        .collect()
    }

    fn send_auth(&mut self, ctx: &mut Ctx<'_>) {
        let conn = self.conn(ctx);
        let Some(keys) = self.keys.as_ref() else {
            return;
        };
        let id_body = proto::id_payload_body(&conn.local_id);
        let auth = keys.psk_auth(&conn.psk, true, &self.init_request, &self.nr, &id_body);
        let mut payloads = vec![
            Payload::IdI(conn.local_id.clone()),
            Payload::IdR(conn.remote_id.clone()),
            Payload::Auth(Authentication {
                method: AuthMethod::SHARED_KEY_MESSAGE_INTEGRITY_CODE,
                data: auth,
            }),
        ];
        if self.initial_contact {
            payloads.push(notify(NotifyType::INITIAL_CONTACT, vec![]));
        }
        if conn.mobike {
            payloads.push(notify(NotifyType::MOBIKE_SUPPORTED, vec![]));
        }
        if !conn.vips.is_empty() {
            payloads.push(Payload::Config(super::vip::request(&conn.vips)));
        }
        let offer = if conn.children.is_empty() {
            None
        } else {
            self.child_offer(ctx, 0, None, false, None)
        };
        if let Some(o) = &offer {
            payloads.extend(self.child_payloads(ctx, o));
        }
        self.state = State::AuthSent;
        self.send_request(ctx, ExchangeType::IKE_AUTH, &payloads, Request::Auth(offer));
    }

    fn respond_auth(&mut self, ctx: &mut Ctx<'_>, msg_id: u32, p: &[Payload]) {
        let idi = find(p, |x| match x {
            Payload::IdI(i) => Some(i.clone()),
            _ => None,
        });
        let auth = find(p, |x| match x {
            Payload::Auth(a) => Some(a.clone()),
            _ => None,
        });
        let (Some(idi), Some(auth)) = (idi, auth) else {
            self.respond(
                ctx,
                ExchangeType::IKE_AUTH,
                msg_id,
                &[notify(NotifyType::INVALID_SYNTAX, vec![])],
            );
            self.destroy(ctx, DeleteReason::Negotiation);
            return;
        };
        let Some(suite) = self.suite else { return };
        // The connection: same peer identity, same IKE algorithms acceptable.
        let cfg: &super::EndpointConfig = ctx.config;
        let wire = proposal::ike_suite_to_wire(suite, 1, vec![]);
        let conn = cfg.connections.iter().enumerate().find(|(_, c)| {
            c.remote_id == idi
                && c.remote_addr
                    .is_none_or(|a| a.ip() == self.path.remote.ip())
                && c.ike_proposals.iter().any(|p| p.select(&wire).is_some())
        });
        let verified = conn.and_then(|(i, c)| {
            let keys = self.keys.as_ref()?;
            let expected = keys.psk_auth(
                &c.psk,
                true,
                &self.init_request,
                &self.nr,
                &proto::id_payload_body(&idi),
            );
            (auth.method == AuthMethod::SHARED_KEY_MESSAGE_INTEGRITY_CODE
                && crypto::verify_mac(&expected, &auth.data))
            .then_some(i)
        });
        let Some(conn_idx) = verified else {
            warn!(sa = self.id, peer = %String::from_utf8_lossy(&idi.data), "IKE_AUTH: authentication of the peer failed");
            self.respond(
                ctx,
                ExchangeType::IKE_AUTH,
                msg_id,
                &[notify(NotifyType::AUTHENTICATION_FAILED, vec![])],
            );
            self.destroy(ctx, DeleteReason::AuthenticationFailed);
            return;
        };
        self.conn = conn_idx;
        if notify_of(p, NotifyType::INITIAL_CONTACT).is_some() {
            // §2.4: the peer restarted; what we still have with it is stale.
            ctx.sa_ops.push(SaOp::PurgeStale {
                keep: self.id,
                conn: conn_idx,
            });
        }
        let conn = self.conn(ctx);
        let Some(keys) = self.keys.as_ref() else {
            return;
        };
        let our_auth = keys.psk_auth(
            &conn.psk,
            false,
            &self.init_response,
            &self.ni,
            &proto::id_payload_body(&conn.local_id),
        );
        self.peer_mobike = conn.mobike && notify_of(p, NotifyType::MOBIKE_SUPPORTED).is_some();
        let mut payloads = vec![
            Payload::IdR(conn.local_id.clone()),
            Payload::Auth(Authentication {
                method: AuthMethod::SHARED_KEY_MESSAGE_INTEGRITY_CODE,
                data: our_auth,
            }),
        ];
        if self.peer_mobike {
            payloads.push(notify(NotifyType::MOBIKE_SUPPORTED, vec![]));
        }
        let address_failed = !self.assign_vips(ctx, &idi, p, &mut payloads);
        let (ni, nr) = (self.ni.clone(), self.nr.clone());
        let child = if address_failed {
            // §3.15.4: no address, no CHILD_SA; the IKE SA stays.
            Some(Err(ChildRefusal(
                NotifyType::INTERNAL_ADDRESS_FAILURE,
                vec![],
            )))
        } else if sa_of(p).is_some() {
            Some(self.accept_child(ctx, p, None, &ni, &nr, true))
        } else {
            None
        };
        match &child {
            Some(Ok((payl, _, _))) => payloads.extend(payl.iter().cloned()),
            Some(Err(ChildRefusal(n, data))) => payloads.push(notify(*n, data.clone())),
            None => {}
        }
        self.respond(ctx, ExchangeType::IKE_AUTH, msg_id, &payloads);
        self.become_established(ctx);
        if let Some(Ok((_, c, keys))) = child {
            self.install_child(ctx, c, keys, false);
        } else if let Some(Err(ChildRefusal(n, _))) = child {
            ctx.event(Event::ChildSaFailed {
                sa: self.id,
                child: String::new(),
                reason: n,
            });
        }
    }

    /// As responder, the virtual IPs a CFG_REQUEST asks for, from the
    /// connection's pools (§2.19): the CFG_REPLY goes into `payloads`.
    /// False when addresses were asked for and none could be assigned
    /// (every pool of the family in use, or none of it); a request to a
    /// connection without pools is ignored (§3.15.4 lets the responder).
    fn assign_vips(
        &mut self,
        ctx: &mut Ctx<'_>,
        peer: &proto::Identification,
        p: &[Payload],
        payloads: &mut Vec<Payload>,
    ) -> bool {
        let conn = self.conn(ctx);
        let Some(cp) = find(p, |x| match x {
            Payload::Config(c) => Some(c.clone()),
            _ => None,
        }) else {
            return true;
        };
        let asked = super::vip::requested(&cp);
        if asked.is_empty() || conn.pools.is_empty() {
            return true;
        }
        let mut owner = vec![peer.ty.0];
        owner.extend_from_slice(&peer.data);
        let mut got: Vec<IpAddr> = Vec::new();
        for (v6, wanted) in asked {
            // One address per family, however many the peer asks for: a
            // request cannot drain the pool.
            if got.iter().any(|a| a.is_ipv6() == v6) {
                continue;
            }
            let lease = conn
                .pools
                .iter()
                .filter(|pool| pool.is_ipv6() == v6)
                .find_map(|pool| ctx.leases.acquire(pool, wanted, &owner, self.id));
            match lease {
                Some(a) => got.push(a),
                None => warn!(sa = self.id, ipv6 = v6, "no virtual IP left to hand out"),
            }
        }
        if got.is_empty() {
            return false;
        }
        info!(sa = self.id, vips = ?got, "virtual IPs handed out");
        payloads.push(Payload::Config(super::vip::reply(&got)));
        self.peer_vips = got;
        true
    }

    fn become_established(&mut self, ctx: &mut Ctx<'_>) {
        let conn = self.conn(ctx);
        self.state = State::Established;
        self.expires = None;
        self.rekey_at = ctx.rekey_at(conn.timers.ike_rekey_time, conn.timers.ike_rand_time);
        info!(sa = self.id, conn = %conn.name, local = %self.path.local, remote = %self.path.remote, "IKE SA established");
        ctx.event(Event::IkeSaEstablished {
            sa: self.id,
            connection: conn.name.clone(),
            initiator: self.initiator,
            path: self.path,
            mobike: self.peer_mobike,
        });
    }

    fn handle_auth_response(
        &mut self,
        ctx: &mut Ctx<'_>,
        offer: Option<ChildOffer>,
        p: &[Payload],
    ) {
        let conn = self.conn(ctx);
        let idr = find(p, |x| match x {
            Payload::IdR(i) => Some(i.clone()),
            _ => None,
        });
        let auth = find(p, |x| match x {
            Payload::Auth(a) => Some(a.clone()),
            _ => None,
        });
        let (Some(idr), Some(auth)) = (idr, auth) else {
            let reason = match first_error(p) {
                Some(NotifyType::AUTHENTICATION_FAILED) => DeleteReason::AuthenticationFailed,
                Some(n) => DeleteReason::PeerError(n),
                None => DeleteReason::Negotiation,
            };
            warn!(sa = self.id, ?reason, "IKE_AUTH refused by the peer");
            self.destroy(ctx, reason);
            return;
        };
        let ok = idr == conn.remote_id
            && auth.method == AuthMethod::SHARED_KEY_MESSAGE_INTEGRITY_CODE
            && self.keys.as_ref().is_some_and(|k| {
                let expected = k.psk_auth(
                    &conn.psk,
                    false,
                    &self.init_response,
                    &self.ni,
                    &proto::id_payload_body(&idr),
                );
                crypto::verify_mac(&expected, &auth.data)
            });
        if !ok {
            warn!(
                sa = self.id,
                "IKE_AUTH: the responder's AUTH does not verify"
            );
            // §2.21.2: tell the peer, once, then forget the SA.
            let payloads = [notify(NotifyType::AUTHENTICATION_FAILED, vec![])];
            let msg_id = self.next_msg_id;
            if let Some(b) = self.seal(
                self.header(ExchangeType::INFORMATIONAL, msg_id, false),
                &payloads,
            ) {
                ctx.send(self.path, ctx.config.nat_t_port, &b);
            }
            self.destroy(ctx, DeleteReason::AuthenticationFailed);
            return;
        }
        self.peer_mobike = conn.mobike && notify_of(p, NotifyType::MOBIKE_SUPPORTED).is_some();
        self.become_established(ctx);
        if !conn.vips.is_empty() {
            let cp = find(p, |x| match x {
                Payload::Config(c) => Some(c.clone()),
                _ => None,
            });
            let (addrs, dns) = cp.as_ref().map(super::vip::assigned).unwrap_or_default();
            if addrs.is_empty() {
                warn!(sa = self.id, "the peer assigned no virtual IP");
            } else {
                info!(sa = self.id, vips = ?addrs, dns = ?dns, "virtual IPs assigned");
                self.vips = addrs.clone();
                self.dns = dns.clone();
                ctx.event(Event::VirtualIps {
                    sa: self.id,
                    addrs,
                    dns,
                });
            }
        }
        if let Some(offer) = offer {
            self.complete_child(ctx, offer, p, true);
        }
    }

    // ------------------------------------------------------------------
    // CHILD_SAs

    /// Responder side of a CHILD_SA negotiation (IKE_AUTH or
    /// CREATE_CHILD_SA): picks child config, proposal and selectors.
    /// Returns the payloads of the answer and the CHILD_SA to install.
    fn accept_child(
        &self,
        ctx: &mut Ctx<'_>,
        p: &[Payload],
        rekeying: Option<&Child>,
        ni: &[u8],
        nr: &[u8],
        in_auth: bool,
    ) -> Result<(Vec<Payload>, Child, ChildKeys), ChildRefusal> {
        let conn = self.conn(ctx);
        let props = sa_of(p).ok_or(NotifyType::INVALID_SYNTAX)?;
        let (tsi, tsr) = ts_of(p).ok_or(NotifyType::INVALID_SYNTAX)?;
        let ke = ke_of(p);
        let transport_asked = notify_of(p, NotifyType::USE_TRANSPORT_MODE).is_some();
        let mut chosen = None;
        let mut reason = NotifyType::TS_UNACCEPTABLE;
        for (ci, child) in conn.children.iter().enumerate() {
            if rekeying.is_some_and(|r| r.cfg != ci) {
                continue;
            }
            // TSi are the initiator's (= the peer's) selectors; a peer we
            // gave addresses gets its addresses.
            let mut remote_ts = config::narrow(tsi, &child.remote_ts);
            if !self.peer_vips.is_empty() {
                remote_ts = config::narrow(&remote_ts, &host_selectors(&self.peer_vips));
            }
            let local_ts = config::narrow(tsr, &child.local_ts);
            if remote_ts.is_empty() || local_ts.is_empty() {
                continue;
            }
            reason = NotifyType::NO_PROPOSAL_CHOSEN;
            // A transport-mode child is not for a peer that wants a tunnel
            // (a tunnel child takes a peer that asks for transport mode, as
            // §1.3.1 allows, and answers without the notify).
            if child.mode == Mode::Transport && !transport_asked {
                continue;
            }
            let pick = props.iter().find_map(|offered| {
                child
                    .esp_proposals
                    .iter()
                    .find_map(|ours| Some((offered, ours.select(offered, ke.is_some())?)))
            });
            if let Some((offered, suite)) = pick {
                chosen = Some((ci, offered, suite, local_ts, remote_ts));
                break;
            }
        }
        let (ci, offered, mut suite, local_ts, remote_ts) = chosen.ok_or(reason)?;
        // Prefer the group the initiator already sent a KE for.
        if let (Some(_), Some(ke)) = (suite.dh, ke)
            && let Some(g) = DhGroup::from_number(ke.group)
            && conn.children[ci]
                .esp_proposals
                .iter()
                .any(|x| x.dh.contains(&g))
            && offered
                .transforms
                .iter()
                .any(|t| t.ty == proto::TransformType::DH && t.id == ke.group)
        {
            suite.dh = Some(g);
        }
        let peer_spi = u32::from_be_bytes(
            offered
                .spi
                .as_slice()
                .try_into()
                .map_err(|_| NotifyType::INVALID_SYNTAX)?,
        );
        let mut payloads = Vec::new();
        let mut shared = None;
        let spi = ctx.spi32().ok_or(NotifyType::TEMPORARY_FAILURE)?;
        payloads.push(Payload::Sa(vec![proposal::esp_suite_to_wire(
            suite,
            offered.number,
            spi,
        )]));
        if !in_auth {
            // CREATE_CHILD_SA answer: SA, Nr, [KEr], TSi, TSr (§1.3.1).
            payloads.push(Payload::Nonce(nr.to_vec()));
        }
        if let (Some(g), Some(ke)) = (suite.dh, ke) {
            if ke.group != g.number() {
                // §1.3.1 / §3.10.1: name the group we want.
                return Err(ChildRefusal(
                    NotifyType::INVALID_KE_PAYLOAD,
                    g.number().to_be_bytes().to_vec(),
                ));
            }
            let s = KeyShare::generate(g, ctx.rng).map_err(|_| NotifyType::TEMPORARY_FAILURE)?;
            payloads.push(Payload::Ke(KeyExchange {
                group: g.number(),
                data: s.public().to_vec(),
            }));
            shared = Some(s.agree(&ke.data).map_err(|_| NotifyType::INVALID_SYNTAX)?);
        }
        payloads.push(Payload::TsI(remote_ts.clone()));
        payloads.push(Payload::TsR(local_ts.clone()));
        let mode = if transport_asked && conn.children[ci].mode == Mode::Transport {
            payloads.push(notify(NotifyType::USE_TRANSPORT_MODE, vec![]));
            Mode::Transport
        } else {
            Mode::Tunnel
        };
        let keys = self
            .keys
            .as_ref()
            .ok_or(NotifyType::TEMPORARY_FAILURE)?
            .child_keys(suite.encr, shared.as_deref(), ni, nr)
            .map_err(|_| NotifyType::TEMPORARY_FAILURE)?;
        let reqid = rekeying.map_or_else(|| ctx.reqid(), |r| r.reqid);
        let child = Child {
            cfg: ci,
            mode,
            reqid,
            inbound_spi: spi,
            outbound_spi: peer_spi,
            suite,
            local_ts,
            remote_ts,
            state: ChildState::Installed,
            rekey_at: ctx.rekey_at(conn.children[ci].rekey_time, conn.children[ci].rand_time),
            rekey_origin: rekeying.map(|r| RekeyOrigin {
                old_inbound_spi: r.inbound_spi,
                min_nonce: min_nonce(ni, nr),
                by_us: false,
            }),
        };
        Ok((payloads, child, keys))
    }

    /// Hands the CHILD_SA to the kernel. Keys are not kept on the `Child`.
    /// `we_initiated`: we initiated the exchange that made it, so our
    /// inbound key is the responder-to-initiator one (§2.17).
    fn install_child(
        &mut self,
        ctx: &mut Ctx<'_>,
        child: Child,
        keys: ChildKeys,
        we_initiated: bool,
    ) -> Option<bool> {
        let (inbound_key, outbound_key) = if we_initiated {
            (keys.r_to_i, keys.i_to_r)
        } else {
            (keys.i_to_r, keys.r_to_i)
        };
        let conn = self.conn(ctx);
        let (name, limits) = conn
            .children
            .get(child.cfg)
            .map(|c| (c.name.clone(), c.limits))
            .unwrap_or_default();
        ctx.kernel(KernelAction::InstallChildSa(Box::new(ChildSaInstall {
            ike_sa: self.id,
            name: name.clone(),
            reqid: child.reqid,
            mode: child.mode,
            local: self.path.local.ip(),
            remote: self.path.remote.ip(),
            encap: self.encap(),
            inbound: EspSa {
                spi: child.inbound_spi,
                aead: child.suite.encr,
                key: inbound_key,
            },
            outbound: EspSa {
                spi: child.outbound_spi,
                aead: child.suite.encr,
                key: outbound_key,
            },
            esn: child.suite.esn == proposal::Esn::Yes,
            local_ts: child.local_ts.clone(),
            remote_ts: child.remote_ts.clone(),
            limits,
        })));
        info!(sa = self.id, child = %name, inbound = format_args!("{:#010x}", child.inbound_spi),
              outbound = format_args!("{:#010x}", child.outbound_spi), "CHILD_SA installed");
        if let Some(origin) = child.rekey_origin.clone() {
            ctx.event(Event::ChildSaRekeyed {
                sa: self.id,
                old_inbound_spi: origin.old_inbound_spi,
                new_inbound_spi: child.inbound_spi,
            });
        } else {
            ctx.event(Event::ChildSaEstablished {
                sa: self.id,
                child: name,
                inbound_spi: child.inbound_spi,
                outbound_spi: child.outbound_spi,
            });
        }
        let new_spi = child.inbound_spi;
        self.children.push(child);
        self.resolve_rekey_collision(ctx, new_spi)
    }

    /// §2.8.1: when both ends rekeyed the same CHILD_SA, the new SA made with
    /// the lowest of the four nonces is deleted by whoever initiated it.
    /// Returns, when this completed a collision, whether the redundant
    /// SA is one we created.
    fn resolve_rekey_collision(&mut self, ctx: &mut Ctx<'_>, new_spi: u32) -> Option<bool> {
        let origin = self
            .children
            .iter()
            .find(|c| c.inbound_spi == new_spi)
            .and_then(|c| c.rekey_origin.clone())?;
        let sibling = self.children.iter().find(|c| {
            c.inbound_spi != new_spi
                && c.rekey_origin.as_ref().is_some_and(|o| {
                    o.old_inbound_spi == origin.old_inbound_spi && o.by_us != origin.by_us
                })
        });
        let sibling = sibling?;
        let sib_spi = sibling.inbound_spi;
        let sib_origin = sibling.rekey_origin.clone()?;
        let (loser_spi, loser_by_us) = if origin.min_nonce < sib_origin.min_nonce {
            (new_spi, origin.by_us)
        } else {
            (sib_spi, sib_origin.by_us)
        };
        debug!(
            sa = self.id,
            loser = format_args!("{loser_spi:#010x}"),
            by_us = loser_by_us,
            "CHILD_SA rekey collision"
        );
        ctx.stats.rekey_collisions += 1;
        if loser_by_us {
            if let Some(c) = self
                .children
                .iter_mut()
                .find(|c| c.inbound_spi == loser_spi)
            {
                c.state = ChildState::Rekeyed;
                c.rekey_at = None;
            }
            self.queue.push_back(Pending::DeleteChild(vec![loser_spi]));
        }
        // Both new SAs are now known: forget the collision bookkeeping.
        for c in &mut self.children {
            if c.inbound_spi == new_spi || c.inbound_spi == sib_spi {
                c.rekey_origin = None;
            }
        }
        Some(loser_by_us)
    }

    /// Initiator side: the peer's answer to our CHILD_SA offer.
    /// `in_auth`: the CHILD_SA came with IKE_AUTH and uses the IKE SA's
    /// nonces; otherwise the exchange's own.
    fn complete_child(
        &mut self,
        ctx: &mut Ctx<'_>,
        offer: ChildOffer,
        p: &[Payload],
        in_auth: bool,
    ) {
        let conn = self.conn(ctx);
        let name = conn
            .children
            .get(offer.cfg)
            .map(|c| c.name.clone())
            .unwrap_or_default();
        let fail = |ctx: &mut Ctx<'_>, sa: &mut IkeSa, reason: NotifyType| {
            warn!(sa = sa.id, child = %name, ?reason, "CHILD_SA not created");
            if let Some(old) = offer.rekey_of
                && let Some(c) = sa
                    .children
                    .iter_mut()
                    .find(|c| c.inbound_spi == old && c.state == ChildState::Rekeying)
            {
                // Keep the old CHILD_SA and try again later. Even after
                // CHILD_SA_NOT_FOUND: the peer may simply not have seen the
                // answer to the exchange that created it yet.
                c.state = ChildState::Installed;
                c.rekey_at = Some(ctx.now + conn.timers.retransmit_timeout * REKEY_RETRY_FACTOR);
            }
            ctx.event(Event::ChildSaFailed {
                sa: sa.id,
                child: name.clone(),
                reason,
            });
        };
        if let Some(err) = first_error(p) {
            // INVALID_KE_PAYLOAD (§1.3.1): retry at once with the group the
            // peer wants, if we accept it.
            let retry = notify_of(p, NotifyType::INVALID_KE_PAYLOAD)
                .and_then(Notify::invalid_ke_group)
                .and_then(DhGroup::from_number)
                .filter(|g| {
                    offer.share.as_ref().is_some_and(|s| s.group() != *g)
                        && conn.children[offer.cfg]
                            .esp_proposals
                            .iter()
                            .any(|x| x.dh.contains(g))
                });
            if let Some(g) = retry {
                debug!(sa = self.id, group = ?g, "CREATE_CHILD_SA: INVALID_KE_PAYLOAD, retrying");
                match offer.rekey_of {
                    Some(old) => {
                        if let Some(c) = self.children.iter_mut().find(|c| c.inbound_spi == old) {
                            c.state = ChildState::Installed;
                        }
                        self.queue.push_front(Pending::RekeyChild(old, Some(g)));
                    }
                    None => self
                        .queue
                        .push_front(Pending::CreateChild(offer.cfg, Some(g))),
                }
                return;
            }
            fail(ctx, self, err);
            return;
        }
        let child_cfg = &conn.children[offer.cfg];
        let (Some(props), Some((tsi, tsr))) = (sa_of(p), ts_of(p)) else {
            fail(ctx, self, NotifyType::INVALID_SYNTAX);
            return;
        };
        let with_dh = offer.share.is_some();
        let suite = match props.as_slice() {
            [one] => child_cfg
                .esp_proposals
                .iter()
                .find_map(|ours| ours.select(one, with_dh))
                .map(|s| (one, s)),
            _ => None,
        };
        let ts_ok = !tsi.is_empty()
            && !tsr.is_empty()
            && tsi
                .iter()
                .all(|t| offer.local_ts.iter().any(|o| config::ts_contains(o, t)))
            && tsr
                .iter()
                .all(|t| offer.remote_ts.iter().any(|o| config::ts_contains(o, t)));
        let Some((chosen, suite)) = suite.filter(|_| ts_ok) else {
            fail(
                ctx,
                self,
                if ts_ok {
                    NotifyType::NO_PROPOSAL_CHOSEN
                } else {
                    NotifyType::TS_UNACCEPTABLE
                },
            );
            // The responder installed it: delete it again.
            if let [one] = props.as_slice()
                && one.spi.len() == 4
            {
                self.queue.push_back(Pending::DeleteRefused(offer.spi));
            }
            return;
        };
        let Ok(peer_spi) = <[u8; 4]>::try_from(chosen.spi.as_slice()).map(u32::from_be_bytes)
        else {
            fail(ctx, self, NotifyType::INVALID_SYNTAX);
            return;
        };
        let (ni, nr) = if in_auth {
            (self.ni.clone(), self.nr.clone())
        } else {
            match nonce_of(p) {
                Some(n) => (offer.nonce.clone(), n),
                None => {
                    fail(ctx, self, NotifyType::INVALID_SYNTAX);
                    return;
                }
            }
        };
        let mut shared = None;
        if let Some(share) = offer.share {
            let Some(ke) = ke_of(p).filter(|k| k.group == share.group().number()) else {
                fail(ctx, self, NotifyType::INVALID_KE_PAYLOAD);
                return;
            };
            match share.agree(&ke.data) {
                Ok(s) => shared = Some(s),
                Err(_) => {
                    fail(ctx, self, NotifyType::INVALID_SYNTAX);
                    return;
                }
            }
        }
        let Some(keys) = self
            .keys
            .as_ref()
            .and_then(|k| k.child_keys(suite.encr, shared.as_deref(), &ni, &nr).ok())
        else {
            return;
        };
        let old = offer
            .rekey_of
            .and_then(|spi| self.children.iter().find(|c| c.inbound_spi == spi));
        let reqid = old.map_or_else(|| ctx.reqid(), |c| c.reqid);
        let transport = notify_of(p, NotifyType::USE_TRANSPORT_MODE).is_some();
        let mode = match child_cfg.mode {
            Mode::Transport if transport => Mode::Transport,
            Mode::Transport => {
                // §1.3.1: the responder keeps it a tunnel.
                warn!(sa = self.id, child = %name, "peer did not accept transport mode: the CHILD_SA is in tunnel mode");
                Mode::Tunnel
            }
            Mode::Tunnel => Mode::Tunnel,
        };
        let child = Child {
            cfg: offer.cfg,
            mode,
            reqid,
            inbound_spi: offer.spi,
            outbound_spi: peer_spi,
            suite,
            local_ts: tsi.clone(),
            remote_ts: tsr.clone(),
            state: ChildState::Installed,
            rekey_at: ctx.rekey_at(child_cfg.rekey_time, child_cfg.rand_time),
            rekey_origin: offer.rekey_of.map(|old| RekeyOrigin {
                old_inbound_spi: old,
                min_nonce: min_nonce(&ni, &nr),
                by_us: true,
            }),
        };
        let new_spi = child.inbound_spi;
        let old_exists = offer
            .rekey_of
            .is_some_and(|old| self.children.iter().any(|c| c.inbound_spi == old));
        let collision = self.install_child(ctx, child, keys, true);
        let Some(old) = offer.rekey_of else { return };
        if !old_exists {
            // The peer deleted the old SA while our rekey was in flight (it
            // rekeyed it too and won): ours is redundant.
            debug!(sa = self.id, "CHILD_SA rekey/delete collision");
            if let Some(c) = self.children.iter_mut().find(|c| c.inbound_spi == new_spi) {
                c.state = ChildState::Rekeyed;
                c.rekey_at = None;
            }
            self.queue.push_back(Pending::DeleteChild(vec![new_spi]));
            return;
        }
        if let Some(c) = self.children.iter_mut().find(|c| c.inbound_spi == old) {
            c.state = ChildState::Rekeyed;
            c.rekey_at = None;
        }
        // The rekey's initiator deletes the old SA (§1.3.3); after a
        // collision only the creator of the surviving SA does (§2.8.1).
        if collision != Some(true) {
            self.queue.push_back(Pending::DeleteChild(vec![old]));
        }
    }

    // ------------------------------------------------------------------
    // requests we start

    fn start_next_request(&mut self, ctx: &mut Ctx<'_>) {
        if self.awaiting_peer {
            return;
        }
        while self.outstanding.is_none()
            && matches!(self.state, State::Established | State::Rekeyed)
            && !self.dead
        {
            let Some(next) = self.queue.pop_front() else {
                return;
            };
            match next {
                Pending::Dpd => {
                    self.send_request(ctx, ExchangeType::INFORMATIONAL, &[], Request::Dpd)
                }
                Pending::DeleteIke => {
                    // An old SA after a rekey keeps its state (and reason).
                    let reason = if self.state == State::Rekeyed {
                        DeleteReason::Rekeyed
                    } else {
                        self.state = State::Deleting;
                        DeleteReason::Local
                    };
                    let d = Payload::Delete(Delete {
                        protocol: ProtocolId::IKE,
                        spi_size: 0,
                        spis: vec![],
                    });
                    self.send_request(
                        ctx,
                        ExchangeType::INFORMATIONAL,
                        &[d],
                        Request::DeleteIke(reason),
                    );
                }
                Pending::DeleteChild(spis) => {
                    let spis: Vec<u32> = spis
                        .into_iter()
                        .filter(|s| self.children.iter().any(|c| c.inbound_spi == *s))
                        .collect();
                    if spis.is_empty() || self.state != State::Established {
                        continue;
                    }
                    for c in &mut self.children {
                        if spis.contains(&c.inbound_spi) {
                            c.state = ChildState::Deleting;
                        }
                    }
                    self.send_child_delete(ctx, spis);
                }
                Pending::DeleteRefused(spi) => {
                    if self.state != State::Established {
                        continue;
                    }
                    self.send_child_delete(ctx, vec![spi]);
                }
                Pending::RekeyChild(spi, group) => {
                    if self.state != State::Established {
                        continue;
                    }
                    let Some(idx) = self
                        .children
                        .iter()
                        .position(|c| c.inbound_spi == spi && c.state == ChildState::Installed)
                    else {
                        continue;
                    };
                    let cfg = self.children[idx].cfg;
                    let pfs = self
                        .conn(ctx)
                        .children
                        .get(cfg)
                        .is_some_and(|c| c.esp_proposals.iter().any(|p| !p.dh.is_empty()));
                    let Some(offer) =
                        self.child_offer(ctx, cfg, Some(&self.children[idx]), pfs, group)
                    else {
                        continue;
                    };
                    self.children[idx].state = ChildState::Rekeying;
                    let mut payloads = vec![Payload::Notify(Notify {
                        protocol: ProtocolId::ESP,
                        spi: spi.to_be_bytes().to_vec(),
                        ty: NotifyType::REKEY_SA,
                        data: vec![],
                    })];
                    payloads.extend(self.create_child_payloads(ctx, &offer));
                    self.send_request(
                        ctx,
                        ExchangeType::CREATE_CHILD_SA,
                        &payloads,
                        Request::CreateChild(offer),
                    );
                }
                Pending::CreateChild(cfg, group) => {
                    if self.state != State::Established {
                        continue;
                    }
                    let pfs = self
                        .conn(ctx)
                        .children
                        .get(cfg)
                        .is_some_and(|c| c.esp_proposals.iter().any(|p| !p.dh.is_empty()));
                    let Some(offer) = self.child_offer(ctx, cfg, None, pfs, group) else {
                        continue;
                    };
                    let payloads = self.create_child_payloads(ctx, &offer);
                    self.send_request(
                        ctx,
                        ExchangeType::CREATE_CHILD_SA,
                        &payloads,
                        Request::CreateChild(offer),
                    );
                }
                Pending::UpdateAddresses(path) => {
                    if self.state != State::Established {
                        continue;
                    }
                    let Some(cookie2) = ctx.random::<16>() else {
                        continue;
                    };
                    let old = self.path;
                    // Sent (and retransmitted) from the new address (§3.5).
                    self.path = path;
                    let mut payloads = vec![notify(NotifyType::UPDATE_SA_ADDRESSES, vec![])];
                    payloads.extend(self.nat_d_payloads(path));
                    payloads.push(notify(NotifyType::COOKIE2, cookie2.to_vec()));
                    self.send_request(
                        ctx,
                        ExchangeType::INFORMATIONAL,
                        &payloads,
                        Request::UpdateAddresses {
                            old,
                            cookie2: cookie2.to_vec(),
                        },
                    );
                }
                Pending::RekeyIke(group) => {
                    if self.state != State::Established {
                        continue;
                    }
                    let Some(mut suite) = self.suite else {
                        continue;
                    };
                    suite.dh = group.unwrap_or(suite.dh);
                    let (Some(spi), Some(nonce)) = (ctx.spi64(), ctx.random::<32>()) else {
                        continue;
                    };
                    let Ok(share) = KeyShare::generate(suite.dh, ctx.rng) else {
                        continue;
                    };
                    let conn = self.conn(ctx);
                    // Offer the configured proposals whose groups include the
                    // current one, so our KE fits (§1.3.2).
                    let props: Vec<proto::Proposal> = conn
                        .ike_proposals
                        .iter()
                        .filter(|p| p.dh.contains(&suite.dh))
                        .enumerate()
                        .map(|(i, p)| {
                            let mut p = p.clone();
                            p.dh.retain(|g| *g == suite.dh);
                            p.to_wire(i as u8 + 1, spi.to_be_bytes().to_vec())
                        })
                        .collect();
                    let payloads = vec![
                        Payload::Sa(props),
                        Payload::Nonce(nonce.to_vec()),
                        Payload::Ke(KeyExchange {
                            group: suite.dh.number(),
                            data: share.public().to_vec(),
                        }),
                    ];
                    let offer = IkeRekeyOffer {
                        spi,
                        nonce: nonce.to_vec(),
                        share,
                    };
                    self.send_request(
                        ctx,
                        ExchangeType::CREATE_CHILD_SA,
                        &payloads,
                        Request::RekeyIke(offer),
                    );
                }
            }
        }
    }

    /// INFORMATIONAL with a Delete of our inbound ESP SPIs (§1.4.1).
    fn send_child_delete(&mut self, ctx: &mut Ctx<'_>, spis: Vec<u32>) {
        let d = Payload::Delete(Delete {
            protocol: ProtocolId::ESP,
            spi_size: 4,
            spis: spis.iter().map(|s| s.to_be_bytes().to_vec()).collect(),
        });
        self.send_request(
            ctx,
            ExchangeType::INFORMATIONAL,
            &[d],
            Request::DeleteChild(spis),
        );
    }

    fn create_child_payloads(&self, ctx: &Ctx<'_>, offer: &ChildOffer) -> Vec<Payload> {
        let mut v = self.child_payloads(ctx, offer);
        // SA, Ni, [KEi], TSi, TSr (§1.3.1)
        v.insert(1, Payload::Nonce(offer.nonce.clone()));
        if let Some(s) = &offer.share {
            v.insert(
                2,
                Payload::Ke(KeyExchange {
                    group: s.group().number(),
                    data: s.public().to_vec(),
                }),
            );
        }
        v
    }

    // ------------------------------------------------------------------
    // incoming messages after IKE_SA_INIT

    pub(super) fn handle_message(
        &mut self,
        ctx: &mut Ctx<'_>,
        path: Path,
        bytes: &[u8],
        msg: Message,
    ) {
        let h = msg.header;
        if h.from_initiator() == self.initiator {
            ctx.stats.unexpected += 1;
            return;
        }
        if h.exchange == ExchangeType::IKE_SA_INIT {
            if h.is_response() && self.state == State::InitSent && h.message_id == 0 {
                self.handle_init_response(ctx, path, bytes, &msg);
            } else {
                ctx.stats.unexpected += 1;
            }
            return;
        }
        if self.keys.is_none() || msg.encrypted().is_none() {
            ctx.stats.unexpected += 1;
            return;
        }
        if h.is_response() {
            if !self
                .outstanding
                .as_ref()
                .is_some_and(|o| o.msg_id == h.message_id && o.exchange == h.exchange)
            {
                ctx.stats.unexpected += 1;
                return;
            }
        } else if h.message_id != self.peer_next_msg_id {
            let replay = self
                .cached_response
                .as_ref()
                .filter(|(id, _)| *id == h.message_id)
                .map(|(_, b)| b.clone());
            match replay {
                // A retransmitted request: verify it, then resend our answer.
                Some(resp) if self.open(bytes, &msg).is_ok() => {
                    ctx.stats.replayed_responses += 1;
                    // §2.11: to where this copy of the request came from.
                    ctx.send(path, ctx.config.nat_t_port, &resp);
                }
                Some(_) => ctx.stats.integrity_failures += 1,
                None => ctx.stats.unexpected += 1,
            }
            return;
        }
        let payloads = match self.open(bytes, &msg) {
            Ok(p) => p,
            Err(e) => {
                debug!(sa = self.id, error = %e, "dropping message that does not verify");
                ctx.stats.integrity_failures += 1;
                return;
            }
        };
        self.last_heard = ctx.now;
        // A message that verifies with this SA's keys: the peer has it.
        self.awaiting_peer = false;
        if h.is_response() {
            let Some(o) = self.outstanding.take() else {
                return;
            };
            self.handle_response(ctx, o, &payloads);
        } else if self.state == State::AuthSent {
            // The responder is established once it has sent its IKE_AUTH
            // answer and may send a request at once (a liveness check, a
            // CREATE_CHILD_SA) that overtakes that answer. Until the answer
            // authenticates the peer there is nothing to answer with: leave
            // the request unanswered and its message ID unused, so the
            // peer's retransmission (§2.1) is taken once we are established.
            debug!(
                sa = self.id,
                msg_id = h.message_id,
                "request before our IKE_AUTH was answered; left for its retransmission"
            );
            ctx.stats.unexpected += 1;
        } else {
            self.peer_next_msg_id = self.peer_next_msg_id.wrapping_add(1);
            self.reply_path = Some(path);
            if self.state == State::InitReplied {
                // The initiator floats to 4500 for IKE_AUTH: answer where it came from.
                self.path = path;
            } else if self.remote_nat && !self.peer_mobike && path != self.path {
                // §2.23: follow a NAT mapping change on an authenticated request.
                debug!(sa = self.id, old = %self.path.remote, new = %path.remote, "peer's NAT mapping changed");
                self.path = path;
            }
            self.handle_request(ctx, h, &payloads);
            self.reply_path = None;
        }
        if !self.dead {
            self.start_next_request(ctx);
        }
    }

    fn handle_response(&mut self, ctx: &mut Ctx<'_>, o: Outstanding, p: &[Payload]) {
        match o.request {
            Some(Request::Auth(offer)) => self.handle_auth_response(ctx, offer, p),
            Some(Request::Dpd) | None => {}
            Some(Request::DeleteIke(reason)) => self.destroy(ctx, reason),
            Some(Request::DeleteChild(spis)) => {
                for spi in spis {
                    self.remove_child(ctx, spi);
                }
            }
            Some(Request::CreateChild(offer)) => self.complete_child(ctx, offer, p, false),
            Some(Request::RekeyIke(offer)) => self.complete_ike_rekey(ctx, offer, p),
            Some(Request::UpdateAddresses { old, cookie2 }) => {
                // RFC 4555 §3.5: the answer must echo our COOKIE2.
                if notify_of(p, NotifyType::COOKIE2).is_none_or(|n| n.data != cookie2) {
                    warn!(
                        sa = self.id,
                        "UPDATE_SA_ADDRESSES answer without our COOKIE2"
                    );
                    self.path = old;
                    return;
                }
                if let Some(err) = first_error(p) {
                    warn!(sa = self.id, notify = ?err, "address update refused");
                    self.path = old;
                    return;
                }
                let h = self.header(ExchangeType::INFORMATIONAL, 0, false);
                let path = self.path;
                self.detect_nat(ctx, path, &h, p);
                if path != old {
                    self.migrate_children(ctx, old);
                }
            }
        }
    }

    fn handle_request(&mut self, ctx: &mut Ctx<'_>, h: Header, p: &[Payload]) {
        let id = h.message_id;
        if let Some(ty) = unknown_critical(p) {
            // §2.5: reject the whole message.
            self.respond(
                ctx,
                h.exchange,
                id,
                &[notify(NotifyType::UNSUPPORTED_CRITICAL_PAYLOAD, vec![ty])],
            );
            return;
        }
        match (self.state, h.exchange) {
            (State::InitReplied, ExchangeType::IKE_AUTH) => self.respond_auth(ctx, id, p),
            (
                State::Established | State::Rekeyed | State::Deleting,
                ExchangeType::INFORMATIONAL,
            ) => {
                self.handle_informational(ctx, id, p);
            }
            (State::Established, ExchangeType::CREATE_CHILD_SA) => {
                self.handle_create_child(ctx, id, p)
            }
            (State::Rekeyed | State::Deleting, ExchangeType::CREATE_CHILD_SA) => {
                self.respond(
                    ctx,
                    h.exchange,
                    id,
                    &[notify(NotifyType::TEMPORARY_FAILURE, vec![])],
                );
            }
            _ => {
                ctx.stats.unexpected += 1;
                self.respond(
                    ctx,
                    h.exchange,
                    id,
                    &[notify(NotifyType::INVALID_SYNTAX, vec![])],
                );
            }
        }
    }

    fn handle_informational(&mut self, ctx: &mut Ctx<'_>, id: u32, p: &[Payload]) {
        if notify_of(p, NotifyType::AUTHENTICATION_FAILED).is_some() {
            // §2.21.2: the initiator could not verify our AUTH.
            warn!(sa = self.id, "peer reports AUTHENTICATION_FAILED");
            self.destroy(ctx, DeleteReason::AuthenticationFailed);
            return;
        }
        let deletes: Vec<&Delete> = p
            .iter()
            .filter_map(|x| match x {
                Payload::Delete(d) => Some(d),
                _ => None,
            })
            .collect();
        if deletes.iter().any(|d| d.protocol == ProtocolId::IKE) {
            self.respond(ctx, ExchangeType::INFORMATIONAL, id, &[]);
            if let Some(parent) = self.collision_parent.take() {
                // §2.8.2: the peer found this SA redundant before our own
                // rekey finished; our rekey's SA gets the CHILD_SAs.
                let children = std::mem::take(&mut self.children);
                ctx.sa_ops.push(SaOp::HandOff {
                    to: parent,
                    children,
                });
                self.state = State::Rekeyed;
            }
            let reason = if self.state == State::Rekeyed {
                DeleteReason::Rekeyed
            } else {
                DeleteReason::PeerDeleted
            };
            self.destroy(ctx, reason);
            return;
        }
        let mut ours = Vec::new();
        for d in deletes.iter().filter(|d| d.protocol == ProtocolId::ESP) {
            for spi in &d.spis {
                let Ok(spi) = <[u8; 4]>::try_from(spi.as_slice()).map(u32::from_be_bytes) else {
                    continue;
                };
                // The peer names its inbound SPI, our outbound (§1.4.1).
                if let Some(c) = self.children.iter().find(|c| c.outbound_spi == spi) {
                    let inbound = c.inbound_spi;
                    // If we were deleting it too, our Delete gets an empty
                    // answer; answer with it only once.
                    ours.push(inbound);
                }
            }
        }
        for spi in &ours {
            self.remove_child(ctx, *spi);
        }
        let answer: Vec<Payload> = if deletes.is_empty() {
            Vec::new()
        } else {
            vec![Payload::Delete(Delete {
                protocol: ProtocolId::ESP,
                spi_size: 4,
                spis: ours.iter().map(|s| s.to_be_bytes().to_vec()).collect(),
            })]
        };
        let mut answer = answer;
        if self.peer_mobike && notify_of(p, NotifyType::UPDATE_SA_ADDRESSES).is_some() {
            // RFC 4555 §3.5: the peer moved; follow it to where this
            // (authenticated) request came from, and answer with NAT-D and
            // its COOKIE2.
            let old = self.path;
            if let Some(new) = self.reply_path {
                self.path = new;
                let h = self.header(ExchangeType::INFORMATIONAL, 0, false);
                self.detect_nat(ctx, new, &h, p);
            }
            answer.extend(self.nat_d_payloads(self.path));
            if self.path != old {
                self.migrate_children(ctx, old);
            }
        }
        if let Some(c2) = notify_of(p, NotifyType::COOKIE2) {
            // RFC 4555 §3.6 / §5.2.1: return routability check.
            answer.push(notify(NotifyType::COOKIE2, c2.data.clone()));
        }
        // Liveness checks and other notifies get an (otherwise) empty answer.
        self.respond(ctx, ExchangeType::INFORMATIONAL, id, &answer);
    }

    fn handle_create_child(&mut self, ctx: &mut Ctx<'_>, id: u32, p: &[Payload]) {
        let Some(ni) = nonce_of(p) else {
            self.respond(
                ctx,
                ExchangeType::CREATE_CHILD_SA,
                id,
                &[notify(NotifyType::INVALID_SYNTAX, vec![])],
            );
            return;
        };
        let Some(nr) = ctx.random::<32>().map(|n| n.to_vec()) else {
            return;
        };
        // IKE SA rekey: an SA payload with protocol IKE (§1.3.2).
        if sa_of(p).is_some_and(|s| s.iter().any(|x| x.protocol == ProtocolId::IKE)) {
            self.respond_ike_rekey(ctx, id, p, ni, nr);
            return;
        }
        // §2.25.1: no CHILD_SA changes while we rekey the IKE SA; the
        // CHILD_SA would end up on the wrong IKE SA.
        if matches!(
            self.outstanding,
            Some(Outstanding {
                request: Some(Request::RekeyIke(_)),
                ..
            })
        ) {
            let n = notify(NotifyType::TEMPORARY_FAILURE, vec![]);
            self.respond(ctx, ExchangeType::CREATE_CHILD_SA, id, &[n]);
            return;
        }
        let rekey = notify_of(p, NotifyType::REKEY_SA).filter(|n| n.protocol == ProtocolId::ESP);
        let old_idx = match rekey {
            Some(n) => {
                let spi = <[u8; 4]>::try_from(n.spi.as_slice())
                    .map(u32::from_be_bytes)
                    .ok();
                // §1.3.3: the SPI is the one the initiator expects inbound,
                // i.e. our outbound SPI.
                match spi.and_then(|s| self.children.iter().position(|c| c.outbound_spi == s)) {
                    // §2.25.1: we are deleting it (or replaced it and will):
                    // not now.
                    Some(i)
                        if matches!(
                            self.children[i].state,
                            ChildState::Deleting | ChildState::Rekeyed
                        ) =>
                    {
                        let n = notify(NotifyType::TEMPORARY_FAILURE, vec![]);
                        self.respond(ctx, ExchangeType::CREATE_CHILD_SA, id, &[n]);
                        return;
                    }
                    Some(i) => Some(i),
                    None => {
                        let n = Payload::Notify(Notify {
                            protocol: ProtocolId::ESP,
                            spi: n.spi.clone(),
                            ty: NotifyType::CHILD_SA_NOT_FOUND,
                            data: vec![],
                        });
                        self.respond(ctx, ExchangeType::CREATE_CHILD_SA, id, &[n]);
                        return;
                    }
                }
            }
            None => None,
        };
        let old = old_idx.map(|i| &self.children[i]);
        match self.accept_child(ctx, p, old, &ni, &nr, false) {
            Ok((payloads, child, keys)) => {
                self.respond(ctx, ExchangeType::CREATE_CHILD_SA, id, &payloads);
                if let Some(i) = old_idx
                    && self.children[i].state == ChildState::Installed
                {
                    // The peer deletes the old one after this (§1.3.3).
                    self.children[i].state = ChildState::Rekeyed;
                    self.children[i].rekey_at = None;
                }
                self.install_child(ctx, child, keys, false);
            }
            Err(ChildRefusal(reason, data)) => {
                self.respond(
                    ctx,
                    ExchangeType::CREATE_CHILD_SA,
                    id,
                    &[notify(reason, data)],
                );
                ctx.event(Event::ChildSaFailed {
                    sa: self.id,
                    child: String::new(),
                    reason,
                });
            }
        }
    }

    // ------------------------------------------------------------------
    // IKE SA rekey (§1.3.2, §2.18)

    fn rekeyed_sa(
        &self,
        ctx: &mut Ctx<'_>,
        initiator: bool,
        spi_i: u64,
        spi_r: u64,
        keys: IkeKeys,
        suite: IkeSuite,
    ) -> IkeSa {
        let our = if initiator { spi_i } else { spi_r };
        let mut n = IkeSa::blank(our, self.conn, initiator, self.path, ctx.now);
        n.spi_i = spi_i;
        n.spi_r = spi_r;
        n.keys = Some(keys);
        n.suite = Some(suite);
        n.state = State::Established;
        n.local_nat = self.local_nat;
        n.remote_nat = self.remote_nat;
        n.keepalive_at = self.keepalive_at;
        n.peer_mobike = self.peer_mobike;
        // The addresses belong to the connection, not to one IKE SA.
        n.vips = self.vips.clone();
        n.dns = self.dns.clone();
        n.peer_vips = self.peer_vips.clone();
        let timers = &self.conn(ctx).timers;
        n.rekey_at = ctx.rekey_at(timers.ike_rekey_time, timers.ike_rand_time);
        n
    }

    /// Moves the CHILD_SAs to the rekeyed IKE SA. Deletes that were queued
    /// or in flight on the old SA are lost with it, so replaced CHILD_SAs
    /// are deleted again from the new one (deleting twice is harmless: the
    /// second Delete gets an empty answer).
    fn move_children(&mut self, new: &mut IkeSa) {
        new.adopt_children(std::mem::take(&mut self.children));
    }

    fn respond_ike_rekey(
        &mut self,
        ctx: &mut Ctx<'_>,
        id: u32,
        p: &[Payload],
        ni: Vec<u8>,
        nr: Vec<u8>,
    ) {
        let conn = self.conn(ctx);
        // §2.25.2: not while one of our CHILD_SA exchanges is in flight,
        // nor when we are about to delete the SA.
        if self.delete_requested
            || matches!(
                self.outstanding,
                Some(Outstanding {
                    request: Some(Request::CreateChild(_) | Request::DeleteChild(_)),
                    ..
                })
            )
        {
            let n = notify(NotifyType::TEMPORARY_FAILURE, vec![]);
            self.respond(ctx, ExchangeType::CREATE_CHILD_SA, id, &[n]);
            return;
        }
        let (Some(props), Some(ke)) = (sa_of(p), ke_of(p)) else {
            self.respond(
                ctx,
                ExchangeType::CREATE_CHILD_SA,
                id,
                &[notify(NotifyType::INVALID_SYNTAX, vec![])],
            );
            return;
        };
        let pick = props
            .iter()
            .filter(|o| o.spi.len() == 8)
            .find_map(|offered| {
                conn.ike_proposals
                    .iter()
                    .find_map(|ours| Some((offered, ours.select(offered)?)))
            });
        let Some((offered, mut suite)) = pick else {
            self.respond(
                ctx,
                ExchangeType::CREATE_CHILD_SA,
                id,
                &[notify(NotifyType::NO_PROPOSAL_CHOSEN, vec![])],
            );
            return;
        };
        if let Some(g) = DhGroup::from_number(ke.group)
            && conn.ike_proposals.iter().any(|x| x.dh.contains(&g))
            && offered
                .transforms
                .iter()
                .any(|t| t.ty == proto::TransformType::DH && t.id == ke.group)
        {
            suite.dh = g;
        }
        if ke.group != suite.dh.number() {
            let n = notify(
                NotifyType::INVALID_KE_PAYLOAD,
                suite.dh.number().to_be_bytes().to_vec(),
            );
            self.respond(ctx, ExchangeType::CREATE_CHILD_SA, id, &[n]);
            return;
        }
        let (Ok(peer_spi), Some(spi), Ok(share)) = (
            <[u8; 8]>::try_from(offered.spi.as_slice()).map(u64::from_be_bytes),
            ctx.spi64(),
            KeyShare::generate(suite.dh, ctx.rng),
        ) else {
            return;
        };
        let public = share.public().to_vec();
        let (Ok(shared), Some(old_keys)) = (share.agree(&ke.data), self.keys.as_ref()) else {
            self.respond(
                ctx,
                ExchangeType::CREATE_CHILD_SA,
                id,
                &[notify(NotifyType::INVALID_SYNTAX, vec![])],
            );
            return;
        };
        let Ok(keys) = IkeKeys::derive_rekeyed(
            old_keys, suite.prf, suite.encr, &ni, &nr, &shared, peer_spi, spi,
        ) else {
            return;
        };
        let exchange_min_nonce = min_nonce(&ni, &nr);
        let payloads = vec![
            Payload::Sa(vec![proposal::ike_suite_to_wire(
                suite,
                offered.number,
                spi.to_be_bytes().to_vec(),
            )]),
            Payload::Nonce(nr),
            Payload::Ke(KeyExchange {
                group: suite.dh.number(),
                data: public,
            }),
        ];
        self.respond(ctx, ExchangeType::CREATE_CHILD_SA, id, &payloads);
        let mut new = self.rekeyed_sa(ctx, false, peer_spi, spi, keys, suite);
        self.move_children(&mut new);
        if matches!(
            self.outstanding,
            Some(Outstanding {
                request: Some(Request::RekeyIke(_)),
                ..
            })
        ) {
            // Simultaneous rekey (§2.8.2): settled when our own answer comes.
            new.collision_parent = Some(self.id);
            self.peer_rekey = Some((new.id, exchange_min_nonce));
        }
        info!(old = self.id, new = new.id, "IKE SA rekeyed by the peer");
        ctx.event(Event::IkeSaRekeyed {
            old: self.id,
            new: new.id,
        });
        self.state = State::Rekeyed;
        self.queue.clear();
        self.rekey_at = None;
        // The peer deletes this SA; until then it answers retransmissions
        // (in a collision, of the peer's own rekey request), but not for ever.
        self.expires = Some(ctx.now + self.linger(ctx.config));
        // Our answer may be lost, and until the peer has it the new SA does
        // not exist there: requests sent on it could only be dropped as for
        // an unknown SA while their retransmissions run out, and the peer
        // be declared dead while it retransmits its rekey request to us.
        // RFC 7296 §2.1 has the initiator "retransmit a request until it
        // either receives a corresponding response or deems the IKE SA to
        // have failed", and §2.4 lets an endpoint "conclude that the other
        // endpoint has failed only when repeated attempts to contact it
        // have gone unanswered": attempts on an SA the peer cannot know are
        // no such attempts. So, as §2.8 has the responder of a rekey wait
        // until it knows the initiator is ready for the new SA (a valid
        // message on it, or the request to close the replaced SA), nothing
        // of ours goes out on the new IKE SA before the peer has used it or
        // deleted this one (or this one's linger ran out).
        new.awaiting_peer = true;
        self.successor = Some(new.id);
        new.start_next_request(ctx);
        ctx.new_sas.push(new);
    }

    fn complete_ike_rekey(&mut self, ctx: &mut Ctx<'_>, offer: IkeRekeyOffer, p: &[Payload]) {
        let conn = self.conn(ctx);
        if let Some(err) = first_error(p) {
            warn!(sa = self.id, notify = ?err, "IKE SA rekey refused");
            if let Some((theirs, _)) = self.peer_rekey.take() {
                // Only the peer's rekey happened: no collision after all.
                ctx.sa_ops.push(SaOp::ClearCollision(theirs));
            }
            let retry = notify_of(p, NotifyType::INVALID_KE_PAYLOAD)
                .and_then(Notify::invalid_ke_group)
                .and_then(DhGroup::from_number)
                .filter(|g| {
                    *g != offer.share.group() && conn.ike_proposals.iter().any(|x| x.dh.contains(g))
                });
            if let Some(g) = retry
                && self.state == State::Established
            {
                self.queue.push_front(Pending::RekeyIke(Some(g)));
                return;
            }
            // Try again later (TEMPORARY_FAILURE after a collision, ...).
            self.rekey_at = Some(ctx.now + conn.timers.retransmit_timeout * REKEY_RETRY_FACTOR);
            return;
        }
        let (Some(props), Some(ke), Some(nr)) = (sa_of(p), ke_of(p), nonce_of(p)) else {
            return;
        };
        let suite = match props.as_slice() {
            [one] if one.spi.len() == 8 => proposal::ike_suite_from_wire(one)
                .filter(|s| {
                    s.dh == offer.share.group()
                        && conn.ike_proposals.iter().any(|x| x.select(one) == Some(*s))
                })
                .map(|s| {
                    (
                        s,
                        u64::from_be_bytes(one.spi.as_slice().try_into().unwrap_or_default()),
                    )
                }),
            _ => None,
        };
        let Some((suite, peer_spi)) = suite.filter(|(_, spi)| *spi != 0) else {
            warn!(sa = self.id, "IKE SA rekey: unacceptable answer");
            self.rekey_at = Some(ctx.now + conn.timers.retransmit_timeout * REKEY_RETRY_FACTOR);
            return;
        };
        let (Ok(shared), Some(old_keys)) = (offer.share.agree(&ke.data), self.keys.as_ref()) else {
            return;
        };
        let Ok(keys) = IkeKeys::derive_rekeyed(
            old_keys,
            suite.prf,
            suite.encr,
            &offer.nonce,
            &nr,
            &shared,
            offer.spi,
            peer_spi,
        ) else {
            return;
        };
        let mut new = self.rekeyed_sa(ctx, true, offer.spi, peer_spi, keys, suite);
        self.move_children(&mut new);
        if let Some((theirs, theirs_min)) = self.peer_rekey.take() {
            // §2.8.2: both ends rekeyed; the new SA made with the lowest of
            // the four nonces is deleted by its creator, and the creator of
            // the other deletes the old SA.
            ctx.stats.ike_rekey_collisions += 1;
            if min_nonce(&offer.nonce, &nr) < theirs_min {
                info!(
                    old = self.id,
                    redundant = new.id,
                    "IKE SA rekey collision lost"
                );
                ctx.sa_ops.push(SaOp::ClearCollision(theirs));
                if self.delete_requested {
                    ctx.sa_ops.push(SaOp::Delete(theirs));
                }
                new.state = State::Rekeyed;
                new.expires = Some(ctx.now + ctx.config.half_open_timeout);
                new.queue.push_back(Pending::DeleteIke);
                new.start_next_request(ctx);
                ctx.new_sas.push(new);
                return;
            }
            info!(
                old = self.id,
                new = new.id,
                redundant = theirs,
                "IKE SA rekey collision won"
            );
            ctx.sa_ops.push(SaOp::MoveChildren {
                from: theirs,
                to: new.id,
            });
            if self.delete_requested {
                ctx.sa_ops.push(SaOp::Delete(new.id));
            }
            ctx.event(Event::IkeSaRekeyed {
                old: theirs,
                new: new.id,
            });
            self.queue.clear();
            self.state = State::Rekeyed;
            self.expires = Some(ctx.now + ctx.config.half_open_timeout);
            self.queue.push_back(Pending::DeleteIke);
            new.start_next_request(ctx);
            ctx.new_sas.push(new);
            return;
        }
        info!(old = self.id, new = new.id, "IKE SA rekeyed");
        ctx.event(Event::IkeSaRekeyed {
            old: self.id,
            new: new.id,
        });
        if self.delete_requested {
            ctx.sa_ops.push(SaOp::Delete(new.id));
        }
        // Delete the old SA (§1.3.2); its CHILD_SAs already moved. If the
        // answer never comes, forget it after a while anyway.
        self.queue.clear();
        self.state = State::Rekeyed;
        self.expires = Some(ctx.now + ctx.config.half_open_timeout);
        self.queue.push_back(Pending::DeleteIke);
        new.start_next_request(ctx);
        ctx.new_sas.push(new);
    }
}

fn backoff(base: Duration, sent: u32) -> Duration {
    base * (1u32 << sent.min(MAX_BACKOFF_SHIFT))
}
