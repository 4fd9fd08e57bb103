//! The sans-IO IKEv2 engine (RFC 7296), shaped like quinn-proto: inputs are
//! [`Endpoint::handle_datagram`], [`Endpoint::handle_timeout`] and
//! [`Endpoint::handle_command`], each with `now` passed in; outputs are
//! polled: [`Endpoint::poll_transmit`] (datagrams), [`Endpoint::poll_kernel_action`]
//! (CHILD_SA installs and deletes as plain data), [`Endpoint::poll_timeout`]
//! (the next deadline) and [`Endpoint::poll_event`].
//!
//! It does IKE_SA_INIT (cookies, INVALID_KE_PAYLOAD retry, NAT detection),
//! IKE_AUTH with PSK and the first CHILD_SA (tunnel mode, §2.9 narrowing),
//! CREATE_CHILD_SA (new CHILD_SA, CHILD_SA rekey, IKE SA rekey, as initiator
//! and responder, including crossing rekeys by the nonce rules of §2.8.1 and
//! §2.8.2 and the TEMPORARY_FAILURE rules of §2.25), INFORMATIONAL
//! (liveness checks, Delete, AUTHENTICATION_FAILED), retransmission with
//! exponential backoff, a message-ID window of one with replay of the cached
//! response, the float to port 4500 and NAT keepalives, in both roles.
//! The address pair of an IKE SA is a field ([`Path`]) that MOBIKE will move;
//! MOBIKE_SUPPORTED is exchanged in IKE_AUTH. It has no sockets, no clock,
//! no tokio and no kernel access; SPIs and nonces come from an [`Entropy`]
//! (the system generator unless a simulator seeds one), DH keys from ring.
//! MOBIKE so far is the address update of RFC 4555 §3.5 in both roles
//! ([`Command::UpdateAddresses`]; UPDATE_SA_ADDRESSES with NAT-D and COOKIE2,
//! CHILD_SAs migrated as [`KernelAction::MigrateChildSa`]); choosing address
//! pairs, ADDITIONAL_*_ADDRESS lists, path probing, NO_NATS_ALLOWED and
//! UNACCEPTABLE_ADDRESSES handling are the next step. It does not do EAP,
//! certificates, IKE fragmentation, transport/BEET mode or SET_WINDOW_SIZE;
//! inbound SPIs are random (unique on the endpoint) rather than allocated by
//! the kernel.

mod config;
mod sa;
pub mod vip;

use std::{
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use ring::rand::{SecureRandom, SystemRandom};
use tracing::{debug, trace};

pub use config::*;

use crate::{
    crypto::Aead,
    proto::{self, DecodeError, Header, NatTDatagram, NotifyType, TrafficSelector},
};

/// Identifies an IKE SA in commands and events: our own IKE SPI.
pub type SaId = u64;

/// The address pair an IKE SA uses; MOBIKE changes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Path {
    /// Our address and port.
    pub local: SocketAddr,
    /// The peer's address and port.
    pub remote: SocketAddr,
}

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Source address and port (selects the socket).
    pub local: SocketAddr,
    /// Destination.
    pub remote: SocketAddr,
    /// UDP payload, including the non-ESP marker on the NAT-T port.
    pub payload: Vec<u8>,
}

/// Commands from the runtime or the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Start an IKE SA for the named connection.
    Initiate {
        /// Connection name.
        connection: String,
        /// Local address and port to start from when the connection has
        /// none configured ("any"): the runtime asks the kernel.
        local: Option<SocketAddr>,
    },
    /// Delete an IKE SA and its CHILD_SAs (INFORMATIONAL with Delete).
    DeleteIkeSa(SaId),
    /// Delete every IKE SA (e.g. on SIGTERM).
    DeleteAll,
    /// Rekey the IKE SA now.
    RekeyIkeSa(SaId),
    /// Rekey the CHILD_SA with this inbound SPI now.
    RekeyChildSa {
        /// IKE SA.
        sa: SaId,
        /// Our inbound ESP SPI of the CHILD_SA.
        inbound_spi: u32,
    },
    /// Delete the CHILD_SA with this inbound SPI (INFORMATIONAL with Delete),
    /// e.g. when the kernel refused to install it.
    DeleteChildSa {
        /// IKE SA.
        sa: SaId,
        /// Our inbound ESP SPI of the CHILD_SA.
        inbound_spi: u32,
    },
    /// Create another CHILD_SA from the connection's child config `child`.
    CreateChildSa {
        /// IKE SA.
        sa: SaId,
        /// Index into the connection's children.
        child: usize,
    },
    /// The kernel reports that an ESP SA of the CHILD_SA with this inbound
    /// SPI reached one of its [`ChildLimits`] (XFRM_MSG_EXPIRE): a soft
    /// limit rekeys the CHILD_SA, a hard one (the kernel removed the SA)
    /// deletes it with the peer. Nothing happens to a CHILD_SA already
    /// being rekeyed or deleted.
    ChildSaExpired {
        /// Our inbound ESP SPI of the CHILD_SA.
        inbound_spi: u32,
        /// Hard limit.
        hard: bool,
    },
    /// Send a liveness check now.
    Dpd(SaId),
    /// MOBIKE (RFC 4555 §3.5): move the IKE SA and its CHILD_SAs to a new
    /// address pair with an UPDATE_SA_ADDRESSES exchange sent from it.
    UpdateAddresses {
        /// IKE SA.
        sa: SaId,
        /// New local address and port.
        local: SocketAddr,
        /// New peer address and port.
        remote: SocketAddr,
    },
}

/// Why a command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// No connection of that name.
    #[error("no connection named `{0}`")]
    UnknownConnection(String),
    /// The connection lacks local or remote address, needed to initiate.
    #[error(
        "connection `{0}` cannot initiate: it needs a peer address (remote_addrs) and a \
         local address (local_addrs, or a route towards the peer)"
    )]
    NoAddresses(String),
    /// No IKE SA with that id.
    #[error("no IKE SA {0:#018x}")]
    UnknownSa(SaId),
    /// The IKE SA is not established.
    #[error("IKE SA {0:#018x} is not established")]
    NotEstablished(SaId),
    /// The peer did not agree to MOBIKE on this IKE SA.
    #[error("MOBIKE was not negotiated on IKE SA {0:#018x}")]
    NoMobike(SaId),
    /// No CHILD_SA with that SPI, or no such child config.
    #[error("IKE SA {sa:#018x} has no CHILD_SA or child config {what}")]
    UnknownChild {
        /// IKE SA.
        sa: SaId,
        /// SPI or index.
        what: String,
    },
    /// No IKE SA has a CHILD_SA with this inbound SPI.
    #[error("no CHILD_SA with inbound SPI {0:#010x}")]
    NoChildSa(u32),
    /// The random generator failed.
    #[error("random number generator failed")]
    Random,
}

/// How an IKE SA ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteReason {
    /// We deleted it (command).
    Local,
    /// The peer sent a Delete.
    PeerDeleted,
    /// Retransmissions (including liveness checks) went unanswered.
    PeerUnreachable,
    /// Replaced by a rekeyed IKE SA.
    Rekeyed,
    /// A responder's half-open SA saw no IKE_AUTH in time.
    HalfOpenTimeout,
    /// Authentication failed (either direction).
    AuthenticationFailed,
    /// The peer said INITIAL_CONTACT (§2.4): it restarted and forgot this SA.
    PeerRestarted,
    /// The peer answered with an error notify (e.g. NO_PROPOSAL_CHOSEN).
    PeerError(NotifyType),
    /// We could not agree (no acceptable proposal, bad KE, bad TS, ...).
    Negotiation,
}

/// Things the runtime may want to log or act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// IKE_AUTH completed.
    IkeSaEstablished {
        /// The SA.
        sa: SaId,
        /// Connection name.
        connection: String,
        /// Whether we were the initiator.
        initiator: bool,
        /// Address pair.
        path: Path,
        /// Both sides support MOBIKE.
        mobike: bool,
    },
    /// A CHILD_SA was installed.
    ChildSaEstablished {
        /// IKE SA.
        sa: SaId,
        /// Child config name.
        child: String,
        /// Our inbound SPI.
        inbound_spi: u32,
        /// Our outbound SPI.
        outbound_spi: u32,
    },
    /// A CHILD_SA could not be created (the IKE SA stays).
    ChildSaFailed {
        /// IKE SA.
        sa: SaId,
        /// Child config name; empty when, as responder, no child config
        /// matched the peer's request.
        child: String,
        /// The peer's or our reason.
        reason: NotifyType,
    },
    /// A CHILD_SA was removed.
    ChildSaDeleted {
        /// IKE SA.
        sa: SaId,
        /// Our inbound SPI.
        inbound_spi: u32,
    },
    /// A CHILD_SA was replaced by a new one.
    ChildSaRekeyed {
        /// IKE SA.
        sa: SaId,
        /// Old inbound SPI.
        old_inbound_spi: u32,
        /// New inbound SPI.
        new_inbound_spi: u32,
    },
    /// An IKE SA was replaced; its CHILD_SAs now belong to `new`.
    IkeSaRekeyed {
        /// Old SA.
        old: SaId,
        /// New SA.
        new: SaId,
    },
    /// The IKE SA and its CHILD_SAs now use another address pair (MOBIKE,
    /// RFC 4555 §3.5), on our request or the peer's.
    PathChanged {
        /// The SA.
        sa: SaId,
        /// The new address pair.
        path: Path,
    },
    /// NAT detection result (§2.23), after IKE_SA_INIT.
    NatDetected {
        /// The SA.
        sa: SaId,
        /// We are behind a NAT.
        local_behind_nat: bool,
        /// The peer is behind a NAT.
        remote_behind_nat: bool,
    },
    /// An IKE SA ended (or failed to come up).
    IkeSaDeleted {
        /// The SA.
        sa: SaId,
        /// Why.
        reason: DeleteReason,
    },
    /// The peer assigned us virtual IP addresses (and DNS servers) on this
    /// IKE SA (RFC 7296 §2.19): the runtime puts the addresses on the host
    /// before the CHILD_SAs that use them are installed, and removes them
    /// when no IKE SA has them any more.
    VirtualIps {
        /// The SA.
        sa: SaId,
        /// Our addresses inside the tunnel.
        addrs: Vec<IpAddr>,
        /// DNS servers the peer named.
        dns: Vec<IpAddr>,
    },
    /// The connection is to be re-established now ([`Recovery`]): the
    /// runtime initiates it ([`Command::Initiate`], with a local address
    /// when the connection has none). An initiate that finds no addresses
    /// counts as a failed attempt and is retried later.
    RestartDue {
        /// Connection name.
        connection: String,
    },
}

/// UDP encapsulation of ESP (RFC 3948), used when a NAT was detected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpEncap {
    /// Our port.
    pub local_port: u16,
    /// The peer's port.
    pub remote_port: u16,
}

/// One direction of an ESP SA.
#[derive(Clone, PartialEq, Eq)]
pub struct EspSa {
    /// SPI.
    pub spi: u32,
    /// AEAD.
    pub aead: Aead,
    /// Key material: key | 4-octet salt.
    pub key: Vec<u8>,
}

impl std::fmt::Debug for EspSa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "EspSa {{ spi: {:#010x}, aead: {:?}, key: <redacted> }}",
            self.spi, self.aead
        )
    }
}

/// A CHILD_SA to install: both ESP SAs and the policies between the
/// selectors, in tunnel mode between the IKE SA's addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildSaInstall {
    /// The IKE SA it belongs to.
    pub ike_sa: SaId,
    /// Child config name.
    pub name: String,
    /// Request id tying SAs and policies together; kept across rekeys.
    pub reqid: u32,
    /// Mode.
    pub mode: Mode,
    /// Our outer address.
    pub local: IpAddr,
    /// The peer's outer address.
    pub remote: IpAddr,
    /// UDP encapsulation when a NAT was detected.
    pub encap: Option<UdpEncap>,
    /// Peer -> us.
    pub inbound: EspSa,
    /// Us -> peer.
    pub outbound: EspSa,
    /// Extended sequence numbers.
    pub esn: bool,
    /// Our selectors.
    pub local_ts: Vec<TrafficSelector>,
    /// The peer's selectors.
    pub remote_ts: Vec<TrafficSelector>,
    /// The limits the kernel enforces on both SAs.
    pub limits: ChildLimits,
}

/// What the kernel should do, as data; the runtime applies it through
/// ipsec-backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelAction {
    /// Add both ESP SAs (and the policies, once per reqid).
    InstallChildSa(Box<ChildSaInstall>),
    /// Move both ESP SAs (and their policies' templates) of a CHILD_SA to
    /// new outer addresses (XFRM_MSG_MIGRATE), for MOBIKE.
    MigrateChildSa {
        /// Request id.
        reqid: u32,
        /// Our inbound SPI.
        inbound_spi: u32,
        /// Our outbound SPI.
        outbound_spi: u32,
        /// Old (local, remote) outer addresses.
        from: (IpAddr, IpAddr),
        /// New (local, remote) outer addresses.
        to: (IpAddr, IpAddr),
        /// UDP encapsulation on the new path.
        encap: Option<UdpEncap>,
    },
    /// Remove both ESP SAs of a CHILD_SA.
    DeleteChildSa {
        /// Request id.
        reqid: u32,
        /// Our outer address.
        local: IpAddr,
        /// The peer's outer address.
        remote: IpAddr,
        /// Our inbound SPI.
        inbound_spi: u32,
        /// Our outbound SPI.
        outbound_spi: u32,
        /// Whether the policies of `reqid` go too (no newer CHILD_SA uses them).
        remove_policies: bool,
    },
}

/// Counters for status output and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Datagrams handed to the engine.
    pub datagrams_received: u64,
    /// Datagrams that did not decode (garbage).
    pub malformed: u64,
    /// Datagrams for no known IKE SA.
    pub unknown_sa: u64,
    /// Encrypted payloads that failed the integrity check.
    pub integrity_failures: u64,
    /// Out-of-window or unexpected messages.
    pub unexpected: u64,
    /// Duplicate requests answered from the response cache.
    pub replayed_responses: u64,
    /// Retransmitted requests.
    pub retransmits: u64,
    /// IKE_SA_INIT requests answered with a cookie demand.
    pub cookies_sent: u64,
    /// NAT keepalives received.
    pub keepalives_received: u64,
    /// Simultaneous CHILD_SA rekeys resolved by the nonce rule (§2.8.1).
    pub rekey_collisions: u64,
    /// Simultaneous IKE SA rekeys resolved by the nonce rule (§2.8.2).
    pub ike_rekey_collisions: u64,
}

/// Output queues, shared by all SAs.
#[derive(Debug, Default)]
struct Outputs {
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    kernel: VecDeque<KernelAction>,
}

/// The IKEv2 endpoint: all IKE SAs of this host.
#[derive(Debug)]
pub struct Endpoint {
    config: EndpointConfig,
    rng: SystemRandom,
    entropy: Box<dyn Entropy>,
    sas: BTreeMap<SaId, sa::IkeSa>,
    /// Responder SAs by the (peer, SPIi) of their IKE_SA_INIT, to recognise
    /// retransmitted or duplicated IKE_SA_INIT requests (§2.1).
    init_index: HashMap<(SocketAddr, u64), SaId>,
    cookie_secret: [u8; 32],
    next_reqid: u32,
    out: Outputs,
    stats: Stats,
    /// Re-establishment state by connection index ([`Recovery`]).
    recovery: HashMap<usize, ConnRecovery>,
    /// Virtual IPs handed out from the connections' pools.
    leases: vip::Leases,
}

/// Restarts closer together than this back off.
const QUICK_RESTART: Duration = Duration::from_secs(60);
/// The longest back-off between restarts.
const MAX_RESTART_DELAY: Duration = Duration::from_secs(60);

/// A connection's re-establishment ([`Recovery`]).
#[derive(Debug, Default)]
struct ConnRecovery {
    /// When to start it again.
    due: Option<Instant>,
    /// [`Event::RestartDue`] was emitted and no initiate has taken yet.
    restarting: bool,
    /// Attempts the peer left unanswered since the connection was last
    /// established (or initiation found no addresses).
    failed_attempts: u32,
    /// Restarts in quick succession, for the back-off.
    quick: u32,
    last_restart: Option<Instant>,
}

/// Per-call context handed to an SA.
struct Ctx<'a> {
    now: Instant,
    config: &'a EndpointConfig,
    rng: &'a SystemRandom,
    entropy: &'a mut dyn Entropy,
    out: &'a mut Outputs,
    stats: &'a mut Stats,
    /// The gateway's address leases (virtual IPs).
    leases: &'a mut vip::Leases,
    next_reqid: &'a mut u32,
    new_sas: Vec<sa::IkeSa>,
    sa_ops: Vec<sa::SaOp>,
    /// Inbound ESP SPIs in use anywhere on this endpoint.
    taken_spis: HashSet<u32>,
}

impl Ctx<'_> {
    fn send(&mut self, path: Path, nat_t_port: u16, msg: &[u8]) {
        let mut payload = Vec::with_capacity(msg.len() + 4);
        if path.local.port() == nat_t_port {
            payload.extend_from_slice(&proto::NON_ESP_MARKER);
        }
        payload.extend_from_slice(msg);
        self.out.transmits.push_back(Transmit {
            local: path.local,
            remote: path.remote,
            payload,
        });
    }

    fn event(&mut self, e: Event) {
        debug!(event = ?e, "ike event");
        self.out.events.push_back(e);
    }

    fn kernel(&mut self, k: KernelAction) {
        self.out.kernel.push_back(k);
    }

    /// When to rekey something made now: `base` later, less a random part
    /// of `rand` (RFC 7296 §2.8 asks for jitter to keep both ends from
    /// rekeying at once). None when `base` is.
    fn rekey_at(&mut self, base: Option<Duration>, rand: Option<Duration>) -> Option<Instant> {
        let base = base?;
        let share = match rand {
            Some(r) if !r.is_zero() => self.random::<4>().map(|b| (r.min(base), b)),
            _ => None,
        };
        let jitter = share.map_or(Duration::ZERO, |(r, b)| {
            r.mul_f64(f64::from(u32::from_be_bytes(b)) / 4_294_967_296.0)
        });
        Some(self.now + (base - jitter))
    }

    fn random<const N: usize>(&mut self) -> Option<[u8; N]> {
        let mut b = [0u8; N];
        self.entropy.fill(&mut b).then_some(b)
    }

    fn spi64(&mut self) -> Option<u64> {
        loop {
            let v = u64::from_be_bytes(self.random::<8>()?);
            if v != 0 {
                return Some(v);
            }
        }
    }

    fn spi32(&mut self) -> Option<u32> {
        loop {
            // SPIs 1-255 are reserved by IANA (RFC 4303 §2.1); inbound SPIs
            // must be unique on this host.
            let v = u32::from_be_bytes(self.random::<4>()?);
            if v > 255 && self.taken_spis.insert(v) {
                return Some(v);
            }
        }
    }

    fn reqid(&mut self) -> u32 {
        *self.next_reqid += 1;
        *self.next_reqid
    }
}

/// Where SPIs, nonces and the cookie secret come from. The default is the
/// system generator; a simulator can make runs reproducible with a seeded
/// source (ring's DH keys stay random, which changes key bytes but never
/// the course of an exchange).
pub trait Entropy: std::fmt::Debug + Send {
    /// Fills `buf`; false if no randomness is available.
    fn fill(&mut self, buf: &mut [u8]) -> bool;
}

/// [`Entropy`] from the operating system (ring's `SystemRandom`).
#[derive(Debug)]
pub struct SystemEntropy(SystemRandom);

impl Default for SystemEntropy {
    fn default() -> Self {
        SystemEntropy(SystemRandom::new())
    }
}

impl Entropy for SystemEntropy {
    fn fill(&mut self, buf: &mut [u8]) -> bool {
        self.0.fill(buf).is_ok()
    }
}

impl Endpoint {
    /// A new endpoint with no SAs.
    pub fn new(config: EndpointConfig) -> Result<Self, CommandError> {
        Self::with_entropy(config, Box::new(SystemEntropy::default()))
    }

    /// A new endpoint drawing SPIs, nonces and its cookie secret from
    /// `entropy`.
    pub fn with_entropy(
        config: EndpointConfig,
        mut entropy: Box<dyn Entropy>,
    ) -> Result<Self, CommandError> {
        let mut cookie_secret = [0u8; 32];
        if !entropy.fill(&mut cookie_secret) {
            return Err(CommandError::Random);
        }
        Ok(Endpoint {
            config,
            rng: SystemRandom::new(),
            entropy,
            sas: BTreeMap::new(),
            init_index: HashMap::new(),
            cookie_secret,
            next_reqid: 0,
            out: Outputs::default(),
            stats: Stats::default(),
            recovery: HashMap::new(),
            leases: vip::Leases::default(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &EndpointConfig {
        &self.config
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    fn taken_spis(&self) -> HashSet<u32> {
        self.sas
            .values()
            .flat_map(sa::IkeSa::inbound_spis)
            .collect()
    }

    /// Number of IKE SAs in any state.
    pub fn ike_sa_count(&self) -> usize {
        self.sas.len()
    }

    /// Number of responder half-open SAs.
    pub fn half_open_count(&self) -> usize {
        self.sas.values().filter(|s| s.is_half_open()).count()
    }

    /// Summary of every IKE SA, for status output and tests.
    pub fn ike_sas(&self) -> Vec<IkeSaInfo> {
        self.sas.values().map(|s| s.info(&self.config)).collect()
    }

    /// Next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.transmits.pop_front()
    }

    /// Next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.out.events.pop_front()
    }

    /// Next kernel action.
    pub fn poll_kernel_action(&mut self) -> Option<KernelAction> {
        self.out.kernel.pop_front()
    }

    /// When [`Endpoint::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let restarts = self.recovery.values().filter_map(|r| r.due);
        self.sas
            .values()
            .filter_map(|s| s.next_deadline(&self.config))
            .chain(restarts)
            .min()
    }

    fn with_sa<R>(
        &mut self,
        now: Instant,
        id: SaId,
        f: impl FnOnce(&mut sa::IkeSa, &mut Ctx<'_>) -> R,
    ) -> Option<R> {
        let taken_spis = self.taken_spis();
        let mut sa = self.sas.remove(&id)?;
        // One span per IKE SA: every log line of its processing carries it.
        let _span = tracing::info_span!("ike_sa", sa = format_args!("{id:016x}")).entered();
        let mut ctx = Ctx {
            now,
            config: &self.config,
            rng: &self.rng,
            entropy: self.entropy.as_mut(),
            out: &mut self.out,
            stats: &mut self.stats,
            next_reqid: &mut self.next_reqid,
            new_sas: Vec::new(),
            sa_ops: Vec::new(),
            taken_spis,
            leases: &mut self.leases,
        };
        let r = f(&mut sa, &mut ctx);
        let new_sas = std::mem::take(&mut ctx.new_sas);
        let ops = std::mem::take(&mut ctx.sa_ops);
        self.put_back(now, sa);
        for n in new_sas {
            self.put_back(now, n);
        }
        self.apply_sa_ops(now, ops);
        Some(r)
    }

    /// IKE SA `to` takes over `children` and goes on with its queue; if it
    /// vanished meanwhile, they are lost, said so.
    fn adopt(&mut self, now: Instant, to: SaId, children: Vec<sa::Child>) {
        match self.sas.get_mut(&to) {
            Some(t) => {
                t.adopt_children(children);
                self.with_sa(now, to, |s, ctx| s.kick(ctx));
            }
            None => tracing::warn!(
                to,
                lost = children.len(),
                "CHILD_SAs handed to a vanished IKE SA"
            ),
        }
    }

    /// Cross-SA work of §2.8.2 (simultaneous IKE SA rekey).
    fn apply_sa_ops(&mut self, now: Instant, ops: Vec<sa::SaOp>) {
        for op in ops {
            match op {
                sa::SaOp::HandOff { to, children } => self.adopt(now, to, children),
                sa::SaOp::MoveChildren { from, to } => {
                    let children = match self.sas.get_mut(&from) {
                        // The redundant SA only waits for its creator's Delete.
                        Some(f) => f.surrender_children(now, self.config.half_open_timeout),
                        None => continue,
                    };
                    self.adopt(now, to, children);
                }
                sa::SaOp::Delete(id) => {
                    self.with_sa(now, id, |s, ctx| s.delete(ctx));
                }
                sa::SaOp::PurgeStale { keep, conn } => {
                    let stale: Vec<SaId> = self
                        .sas
                        .iter()
                        .filter(|(id, s)| {
                            **id != keep && s.conn_index() == conn && s.is_authenticated()
                        })
                        .map(|(id, _)| *id)
                        .collect();
                    for id in stale {
                        self.with_sa(now, id, |s, ctx| s.forget(ctx, DeleteReason::PeerRestarted));
                    }
                }
                sa::SaOp::ClearCollision(id) => {
                    if let Some(s) = self.sas.get_mut(&id) {
                        s.clear_collision();
                    }
                }
                sa::SaOp::PeerHasIt(id) => {
                    self.with_sa(now, id, |s, ctx| s.peer_has_it(ctx));
                }
            }
        }
    }

    fn put_back(&mut self, now: Instant, sa: sa::IkeSa) {
        match sa.init_key() {
            Some(key) => {
                self.init_index.insert(key, sa.id());
            }
            None => self.init_index.retain(|_, v| *v != sa.id()),
        }
        if let Some(ended) = sa.ended() {
            // An address another IKE SA of the peer holds too (after an IKE
            // SA rekey, or a collision's redundant SA) stays online with it.
            for a in sa.peer_vips() {
                match self.sas.values().find(|o| o.peer_vips().contains(a)) {
                    Some(other) => self.leases.hold(other.id(), &[*a]),
                    None => self.leases.release(sa.id(), &[*a]),
                }
            }
            self.after_end(now, ended);
            return;
        }
        if !sa.peer_vips().is_empty() {
            self.leases.hold(sa.id(), sa.peer_vips());
        }
        if sa.is_authenticated()
            && let Some(r) = self.recovery.get_mut(&sa.conn_index())
        {
            r.failed_attempts = 0;
        }
        self.sas.insert(sa.id(), sa);
    }

    /// An IKE SA ended: re-establish its connection if its [`Recovery`]
    /// says so.
    fn after_end(&mut self, now: Instant, e: sa::Ended) {
        let Some(c) = self.config.connections.get(e.conn) else {
            return;
        };
        let rec = c.recovery;
        let why = match e.reason {
            DeleteReason::PeerUnreachable if e.established => rec
                .restart_on_dead_peer
                .then_some("the peer stopped answering"),
            DeleteReason::PeerDeleted if e.established => {
                rec.restart_on_peer_close.then_some("the peer closed it")
            }
            DeleteReason::PeerUnreachable if e.initiator => {
                return self.attempt_failed(now, e.conn, "the peer did not answer");
            }
            _ => None,
        };
        if let Some(why) = why {
            self.schedule_restart(now, e.conn, why);
        }
    }

    /// An attempt to establish connection `conn` failed: another one, unless
    /// `keyingtries` are used up.
    fn attempt_failed(&mut self, now: Instant, conn: usize, why: &str) {
        let Some(c) = self.config.connections.get(conn) else {
            return;
        };
        let (name, tries) = (c.name.clone(), c.recovery.keyingtries);
        let r = self.recovery.entry(conn).or_default();
        r.failed_attempts += 1;
        if tries != 0 && r.failed_attempts >= tries {
            tracing::warn!(connection = %name, attempts = r.failed_attempts, reason = why,
                           "giving up establishing the connection (keyingtries)");
            r.failed_attempts = 0;
            r.restarting = false;
            return;
        }
        self.schedule_restart(now, conn, why);
    }

    /// Connection `conn` is to be started again: now, or after a back-off
    /// when the last restart was recent.
    fn schedule_restart(&mut self, now: Instant, conn: usize, why: &str) {
        let Some(c) = self.config.connections.get(conn) else {
            return;
        };
        if c.remote_addr.is_none() {
            return;
        }
        let name = c.name.clone();
        let r = self.recovery.entry(conn).or_default();
        let recent = r
            .last_restart
            .is_some_and(|t| now.saturating_duration_since(t) < QUICK_RESTART);
        r.quick = if recent { r.quick.saturating_add(1) } else { 0 };
        let delay = match r.quick {
            0 => Duration::ZERO,
            n => Duration::from_secs(1u64 << n.min(6)).min(MAX_RESTART_DELAY),
        };
        r.due = Some(now + delay);
        tracing::info!(connection = %name, reason = why, delay = ?delay, "re-establishing the connection");
    }

    /// Restarts that are due: [`Event::RestartDue`], unless the connection
    /// has an IKE SA again meanwhile.
    fn restarts_due(&mut self, now: Instant) {
        let due: Vec<usize> = self
            .recovery
            .iter()
            .filter(|(_, r)| r.due.is_some_and(|t| t <= now))
            .map(|(c, _)| *c)
            .collect();
        for conn in due {
            let live = self.sas.values().any(|s| s.conn_index() == conn);
            let Some(r) = self.recovery.get_mut(&conn) else {
                continue;
            };
            r.due = None;
            if live {
                continue;
            }
            r.restarting = true;
            r.last_restart = Some(now);
            if let Some(c) = self.config.connections.get(conn) {
                self.out.events.push_back(Event::RestartDue {
                    connection: c.name.clone(),
                });
            }
        }
    }

    /// The virtual IPs peers assigned us, over every IKE SA (what the host
    /// should have).
    pub fn virtual_ips(&self) -> std::collections::BTreeSet<IpAddr> {
        self.sas
            .values()
            .flat_map(|s| s.vips().iter().copied())
            .collect()
    }

    /// Virtual IPs handed out that an IKE SA holds now (tests check they
    /// are given back).
    pub fn leases_online(&self) -> usize {
        self.leases.online()
    }

    /// Size of the IKE_SA_INIT index (tests check it does not leak).
    pub fn init_index_len(&self) -> usize {
        self.init_index.len()
    }

    /// Takes a new configuration while running (SIGHUP): a connection
    /// whose configuration is unchanged keeps its IKE SAs; one that
    /// changed or is gone has its IKE SAs deleted (with the peer), and a
    /// changed or new one is there for new SAs (the caller initiates the
    /// ones to start). Endpoint-wide settings take the new values.
    /// Connections keep their place, so SAs always find theirs: a gone one
    /// stays as a nameless entry that matches nothing.
    pub fn reload(&mut self, now: Instant, new: EndpointConfig) -> ReloadReport {
        let mut report = ReloadReport::default();
        let mut incoming = new.connections;
        let mut conns = std::mem::take(&mut self.config.connections);
        let mut retired = Vec::new();
        for (i, c) in conns.iter_mut().enumerate() {
            if c.name.is_empty() {
                continue;
            }
            match incoming.iter().position(|n| n.name == c.name) {
                Some(j) if incoming[j] == *c => {
                    incoming.remove(j);
                    report.unchanged.push(c.name.clone());
                }
                found => {
                    if found.is_some() {
                        report.changed.push(c.name.clone());
                    } else {
                        report.removed.push(c.name.clone());
                    }
                    retire(c);
                    retired.push(i);
                }
            }
        }
        for c in incoming {
            if !report.changed.contains(&c.name) {
                report.added.push(c.name.clone());
            }
            conns.push(c);
        }
        self.config = EndpointConfig {
            connections: conns,
            ..new
        };
        for i in retired {
            self.recovery.remove(&i);
            let ids: Vec<SaId> = self
                .sas
                .iter()
                .filter(|(_, s)| s.conn_index() == i)
                .map(|(id, _)| *id)
                .collect();
            for id in ids {
                self.with_sa(now, id, |sa, ctx| sa.delete(ctx));
            }
        }
        report
    }

    /// The configuration of connection `name`.
    pub fn connection(&self, name: &str) -> Option<&ConnectionConfig> {
        self.config.connections.iter().find(|c| c.name == name)
    }

    /// Handles a command.
    pub fn handle_command(&mut self, now: Instant, cmd: Command) -> Result<(), CommandError> {
        match cmd {
            Command::Initiate { connection, local } => {
                let conn = self
                    .config
                    .connections
                    .iter()
                    .position(|c| c.name == connection)
                    .ok_or(CommandError::UnknownConnection(connection.clone()))?;
                let c = &self.config.connections[conn];
                let (Some(local), Some(remote)) = (c.local_addr.or(local), c.remote_addr) else {
                    // No way towards the peer right now (no route): a
                    // failed attempt, tried again as keyingtries allow.
                    let retry = c.remote_addr.is_some()
                        && (c.recovery.keyingtries != 1
                            || self.recovery.get(&conn).is_some_and(|r| r.restarting));
                    if retry {
                        self.attempt_failed(now, conn, "no local address towards the peer");
                    }
                    return Err(CommandError::NoAddresses(connection));
                };
                if let Some(r) = self.recovery.get_mut(&conn) {
                    r.restarting = false;
                }
                let initial_contact = !self.sas.values().any(|s| s.conn_index() == conn);
                let taken_spis = self.taken_spis();
                let mut ctx = Ctx {
                    now,
                    config: &self.config,
                    rng: &self.rng,
                    entropy: self.entropy.as_mut(),
                    out: &mut self.out,
                    stats: &mut self.stats,
                    next_reqid: &mut self.next_reqid,
                    new_sas: Vec::new(),
                    sa_ops: Vec::new(),
                    taken_spis,
                    leases: &mut self.leases,
                };
                let sa =
                    sa::IkeSa::initiate(&mut ctx, conn, Path { local, remote }, initial_contact)
                        .ok_or(CommandError::Random)?;
                self.put_back(now, sa);
                Ok(())
            }
            Command::DeleteAll => {
                // Nothing is to come back either.
                self.recovery.clear();
                let ids: Vec<SaId> = self.sas.keys().copied().collect();
                for id in ids {
                    self.with_sa(now, id, |sa, ctx| sa.delete(ctx));
                }
                Ok(())
            }
            Command::DeleteIkeSa(id) => self
                .with_sa(now, id, |sa, ctx| sa.delete(ctx))
                .ok_or(CommandError::UnknownSa(id)),
            Command::RekeyIkeSa(id) => self
                .with_sa(now, id, |sa, ctx| sa.command_rekey_ike(ctx))
                .ok_or(CommandError::UnknownSa(id))?,
            Command::RekeyChildSa { sa, inbound_spi } => self
                .with_sa(now, sa, |s, ctx| s.command_rekey_child(ctx, inbound_spi))
                .ok_or(CommandError::UnknownSa(sa))?,
            Command::DeleteChildSa { sa, inbound_spi } => self
                .with_sa(now, sa, |s, ctx| s.command_delete_child(ctx, inbound_spi))
                .ok_or(CommandError::UnknownSa(sa))?,
            Command::CreateChildSa { sa, child } => self
                .with_sa(now, sa, |s, ctx| s.command_create_child(ctx, child))
                .ok_or(CommandError::UnknownSa(sa))?,
            Command::ChildSaExpired { inbound_spi, hard } => {
                let sa = self
                    .sas
                    .iter()
                    .find(|(_, s)| s.inbound_spis().any(|x| x == inbound_spi))
                    .map(|(id, _)| *id)
                    .ok_or(CommandError::NoChildSa(inbound_spi))?;
                self.with_sa(now, sa, |s, ctx| s.child_expired(ctx, inbound_spi, hard))
                    .ok_or(CommandError::UnknownSa(sa))?
            }
            Command::Dpd(id) => self
                .with_sa(now, id, |sa, ctx| sa.command_dpd(ctx))
                .ok_or(CommandError::UnknownSa(id))?,
            Command::UpdateAddresses { sa, local, remote } => self
                .with_sa(now, sa, |s, ctx| {
                    s.command_update_addresses(ctx, Path { local, remote })
                })
                .ok_or(CommandError::UnknownSa(sa))?,
        }
    }

    /// Handles timer expiry: retransmissions, liveness checks, rekeys,
    /// keepalives and half-open expiry due at or before `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.restarts_due(now);
        let due: Vec<SaId> = self
            .sas
            .iter()
            .filter(|(_, s)| s.next_deadline(&self.config).is_some_and(|d| d <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            self.with_sa(now, id, |sa, ctx| sa.handle_timeout(ctx));
        }
    }

    /// Handles a received UDP datagram. `local` is the address it arrived
    /// on (its port tells whether the non-ESP marker is present), `remote`
    /// where it came from. Never panics; garbage is counted in [`Stats`].
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        data: &[u8],
    ) {
        self.stats.datagrams_received += 1;
        let ike = if local.port() == self.config.nat_t_port {
            match proto::classify_nat_t(data) {
                NatTDatagram::Ike(b) => b,
                NatTDatagram::Keepalive => {
                    self.stats.keepalives_received += 1;
                    return;
                }
                NatTDatagram::Esp | NatTDatagram::Runt => {
                    self.stats.malformed += 1;
                    return;
                }
            }
        } else {
            data
        };
        let msg = match proto::Message::decode(ike) {
            Ok(m) => m,
            Err(e) => {
                self.drop_malformed(remote, &e);
                return;
            }
        };
        let h = msg.header;
        let path = Path { local, remote };
        // The I flag says who sent it; our SPI is the other one (§3.1).
        let our_spi = if h.from_initiator() { h.spi_r } else { h.spi_i };
        if h.exchange == proto::ExchangeType::IKE_SA_INIT
            && !h.is_response()
            && h.from_initiator()
            && h.spi_r == 0
        {
            self.handle_init_request(now, path, ike, msg);
            return;
        }
        if !self.sas.contains_key(&our_spi) {
            trace!(spi = our_spi, %remote, "message for unknown IKE SA");
            self.stats.unknown_sa += 1;
            return;
        }
        self.with_sa(now, our_spi, |sa, ctx| {
            sa.handle_message(ctx, path, ike, msg)
        });
    }

    fn drop_malformed(&mut self, remote: SocketAddr, e: &DecodeError) {
        self.stats.malformed += 1;
        debug!(%remote, error = %e, "dropping malformed datagram");
    }

    fn handle_init_request(&mut self, now: Instant, path: Path, bytes: &[u8], msg: proto::Message) {
        let h: Header = msg.header;
        if let Some(&id) = self.init_index.get(&(path.remote, h.spi_i)) {
            // A retransmitted IKE_SA_INIT: resend the same response (§2.1).
            self.with_sa(now, id, |sa, ctx| sa.replay_init_response(ctx, bytes));
            return;
        }
        let half_open = self.half_open_count();
        let cookie_secret = self.cookie_secret;
        let taken_spis = self.taken_spis();
        let mut ctx = Ctx {
            now,
            config: &self.config,
            rng: &self.rng,
            entropy: self.entropy.as_mut(),
            out: &mut self.out,
            stats: &mut self.stats,
            next_reqid: &mut self.next_reqid,
            new_sas: Vec::new(),
            sa_ops: Vec::new(),
            taken_spis,
            leases: &mut self.leases,
        };
        if let Some(sa) =
            sa::IkeSa::respond_init(&mut ctx, path, bytes, &msg, half_open, &cookie_secret)
        {
            self.put_back(now, sa);
        }
    }
}

/// What [`Endpoint::reload`] did, by connection name.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReloadReport {
    /// New connections.
    pub added: Vec<String>,
    /// Changed: their IKE SAs are being deleted; new ones use the new
    /// configuration.
    pub changed: Vec<String>,
    /// Gone: their IKE SAs are being deleted.
    pub removed: Vec<String>,
    /// Unchanged: their IKE SAs go on.
    pub unchanged: Vec<String>,
}

/// A connection taken out by a reload, kept in its place for the SAs still
/// winding down: no name (no command finds it), no proposals and no key
/// (no peer matches it), nothing to restart.
fn retire(c: &mut ConnectionConfig) {
    c.name.clear();
    c.ike_proposals.clear();
    c.psk.clear();
    c.remote_addr = None;
    c.recovery = Recovery::default();
    c.pools.clear();
    c.vips.clear();
}

/// A summary of an IKE SA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IkeSaInfo {
    /// Our SPI.
    pub id: SaId,
    /// Connection name.
    pub connection: String,
    /// Whether we are the original initiator.
    pub initiator: bool,
    /// State name.
    pub state: &'static str,
    /// Address pair.
    pub path: Path,
    /// Both sides support MOBIKE.
    pub mobike: bool,
    /// We are behind a NAT.
    pub local_behind_nat: bool,
    /// The peer is behind a NAT.
    pub remote_behind_nat: bool,
    /// IKE SPI of the original initiator.
    pub spi_i: u64,
    /// IKE SPI of the original responder (zero until it answered).
    pub spi_r: u64,
    /// Installed CHILD_SAs as (inbound SPI, outbound SPI).
    pub children: Vec<(u32, u32)>,
    /// The same CHILD_SAs in detail.
    pub child_sas: Vec<ChildSaInfo>,
    /// When it is due for a rekey (None: never, or not established).
    pub rekey_at: Option<Instant>,
    /// Virtual IPs the peer assigned us.
    pub vips: Vec<IpAddr>,
    /// DNS servers the peer named.
    pub dns: Vec<IpAddr>,
    /// Virtual IPs we assigned the peer.
    pub peer_vips: Vec<IpAddr>,
    /// Our UPDATE_SA_ADDRESSES is out: `path` is the pair asked for, not
    /// yet taken by the peer (on refusal it goes back).
    pub updating_addresses: bool,
    /// Our next request message ID.
    pub next_request_id: u32,
    /// The peer's next expected request message ID.
    pub next_peer_request_id: u32,
}

/// Summary of one CHILD_SA, for status output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildSaInfo {
    /// Child config name.
    pub name: String,
    /// State name: `installed`, `rekeying`, `rekeyed` or `deleting`.
    pub state: &'static str,
    /// Request id.
    pub reqid: u32,
    /// Our inbound SPI.
    pub inbound_spi: u32,
    /// Our outbound SPI.
    pub outbound_spi: u32,
    /// Our selectors (negotiated).
    pub local_ts: Vec<TrafficSelector>,
    /// The peer's selectors (negotiated).
    pub remote_ts: Vec<TrafficSelector>,
    /// When it is due for a rekey (None: never, or already under way).
    pub rekey_at: Option<Instant>,
    /// Negotiated mode.
    pub mode: Mode,
}
