//! The engine's public vocabulary: the [`Command`]s it takes, the
//! [`Event`]s, [`Transmit`]s and [`KernelAction`]s it hands out, why
//! commands fail ([`CommandError`]) and SAs end ([`DeleteReason`]), and the
//! status summaries ([`IkeSaInfo`], [`ChildSaInfo`], [`Stats`],
//! [`ReloadReport`]).

use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant, SystemTime},
};

use super::{ChildLimits, Mode};
#[cfg(doc)]
use super::{Endpoint, Recovery};
use crate::{
    crypto::Aead,
    pki::key::Scheme,
    proto::{NotifyType, TrafficSelector},
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
    /// The kernel refused to move the CHILD_SA with this inbound SPI
    /// ([`KernelAction::MigrateChildSa`]): it stays on its old addresses.
    /// The engine replaces it on the IKE SA's current addresses (or
    /// deletes it with the peer) and says so with [`Event::MigrateFailed`].
    MigrateFailed {
        /// Our inbound ESP SPI of the CHILD_SA.
        inbound_spi: u32,
    },
    /// The kernel saw ESP of the CHILD_SA with this inbound SPI, which
    /// verified, come from a new address or port of a peer behind a NAT
    /// (XFRM_MSG_MAPPING). Without MOBIKE the IKE SA and the CHILD_SAs'
    /// UDP encapsulation follow (RFC 7296 §2.23); under MOBIKE nothing
    /// happens (RFC 4555 §3.8: the initiator sends an update).
    NatMapping {
        /// Our inbound ESP SPI of the CHILD_SA.
        inbound_spi: u32,
        /// Where the peer's ESP now comes from.
        remote: SocketAddr,
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
        /// Further candidate pairs, best first: tried in turn when the
        /// peer refuses a pair (UNACCEPTABLE_ADDRESSES) or an update sent
        /// from it goes unanswered (RFC 4555 §3.5). Empty: `local`/`remote`
        /// only.
        fallback: Vec<Path>,
    },
    /// MOBIKE: the IKE SA's current pair carries nothing any more (its
    /// address, link or route went). Until the IKE SA has moved, each
    /// UPDATE_SA_ADDRESSES moves the CHILD_SAs in the kernel when it is
    /// sent rather than when it is answered: the ESP we send is on the new
    /// pair at once (the peer takes it by destination and SPI), and what
    /// the peer sends there once it has switched is taken. RFC 4555 §3.5
    /// leaves the timing of the initiator's own IPsec SA update open; with
    /// the old pair lost, waiting for the answer only loses traffic. An
    /// update that fails moves them back. Only the original initiator.
    PathLost {
        /// IKE SA.
        sa: SaId,
    },
    /// MOBIKE path testing (RFC 4555 §3.10): one protected INFORMATIONAL
    /// with COOKIE2 sent on every pair at once; one
    /// [`Event::PathTested`] per pair follows. Only the original initiator
    /// tests paths (it decides which pair is used, §3.1).
    TestPaths {
        /// IKE SA.
        sa: SaId,
        /// Candidate address pairs.
        paths: Vec<Path>,
    },
    /// MOBIKE (RFC 4555 §3.6): our usable local addresses are now `addrs`,
    /// announced by no IKE SA yet: the next UPDATE_SA_ADDRESSES of an IKE
    /// SA carries its list (as of its new address) in the same request,
    /// so that a move costs one exchange, not an update and then a list.
    /// [`Command::AnnounceAddresses`] with the same addresses afterwards
    /// sends the list only where the peer does not have it yet.
    UsableAddresses {
        /// Our usable local addresses.
        addrs: Vec<IpAddr>,
    },
    /// MOBIKE (RFC 4555 §3.6): our usable local addresses are now `addrs`.
    /// Every established MOBIKE IKE SA whose address list this changes
    /// (these addresses less the one it uses) sends the new list in an
    /// INFORMATIONAL exchange, in its turn after requests already queued;
    /// IKE SAs made later announce it in IKE_AUTH. Until the first such
    /// command (or [`Command::UsableAddresses`]) the list comes from the
    /// connection's configured local addresses.
    AnnounceAddresses {
        /// Our usable local addresses.
        addrs: Vec<IpAddr>,
        /// When `addrs` is the list the endpoint already holds, only these
        /// IKE SAs are checked (one that moved, or is new): the lists of
        /// the others cannot have changed, and checking every IKE SA for
        /// each new one would make bringing up N IKE SAs cost N².
        /// When `addrs` differs, every IKE SA is checked.
        sas: Vec<SaId>,
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
    /// Only the original initiator moves the IKE SA or tests paths
    /// (RFC 4555 §3.1, §3.5).
    #[error("IKE SA {0:#018x}: only the original initiator updates addresses or tests paths")]
    NotInitiator(SaId),
    /// An address pair of two families: IKE and ESP need both outer
    /// addresses of one family (IPv4 or IPv6).
    #[error("address pair {local} -> {remote} mixes IPv4 and IPv6")]
    MixedFamilies {
        /// Our address.
        local: SocketAddr,
        /// The peer's address.
        remote: SocketAddr,
    },
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
    /// RFC 4555 §3.5), on our request or the peer's (as its responder,
    /// once the pair is verified, §5.2), or the peer's NAT mapping changed
    /// without MOBIKE (RFC 7296 §2.23).
    PathChanged {
        /// The SA.
        sa: SaId,
        /// The new address pair.
        path: Path,
    },
    /// One pair of a [`Command::TestPaths`] answered (with the time from
    /// its first send) or, `rtt` None, did not answer while the test lasted.
    PathTested {
        /// The SA.
        sa: SaId,
        /// The tested pair.
        path: Path,
        /// Round-trip time; None: unanswered.
        rtt: Option<Duration>,
    },
    /// An UPDATE_SA_ADDRESSES from `path` failed (RFC 4555 §3.5): the next
    /// candidate pair is tried, or the SA stays where it was.
    UpdateFailed {
        /// The SA.
        sa: SaId,
        /// The refused or unanswered pair.
        path: Path,
        /// Why.
        reason: UpdateFailure,
    },
    /// The first retransmission of a request on the current pair went
    /// unanswered: a hint to move before the liveness check gives up.
    Unresponsive {
        /// The SA.
        sa: SaId,
        /// The current pair.
        path: Path,
    },
    /// The peer's address list changed (RFC 4555 §3.4, §3.6): its
    /// addresses other than the one the IKE SA uses, from IKE_AUTH or a
    /// later INFORMATIONAL exchange; each list replaces the previous one.
    PeerAddresses {
        /// The SA.
        sa: SaId,
        /// The peer's additional addresses (empty: none).
        addrs: Vec<IpAddr>,
    },
    /// The kernel refused to move a CHILD_SA ([`Command::MigrateFailed`]).
    MigrateFailed {
        /// IKE SA.
        sa: SaId,
        /// Our inbound SPI.
        inbound_spi: u32,
        /// It is being replaced by a rekey on the new addresses; false: it
        /// is being deleted with the peer.
        replaced: bool,
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

/// Why an UPDATE_SA_ADDRESSES from a pair failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateFailure {
    /// The peer answered with this error (e.g. UNACCEPTABLE_ADDRESSES).
    Refused(NotifyType),
    /// The answer did not echo our COOKIE2.
    BadCookie2,
    /// No answer after all retransmissions.
    Unanswered,
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
    /// Make-before-break (RFC 4555 §3.5, sent with UPDATE_SA_ADDRESSES):
    /// the inbound SA of a CHILD_SA also valid at our address `local`, a
    /// copy with the same SPI and keys (the kernel finds an inbound SA by
    /// destination and SPI), so the peer's ESP is taken on the new pair
    /// from the moment the peer switches, before the answer comes back
    /// and [`KernelAction::MigrateChildSa`] makes the copy the inbound SA.
    /// `local` being the CHILD_SA's current address removes the copy (a
    /// move abandoned, or one that changes the peer's address, which the
    /// inbound policies name).
    PrepareInbound {
        /// Request id.
        reqid: u32,
        /// Our inbound SPI.
        inbound_spi: u32,
        /// Our address the copy is for.
        local: IpAddr,
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
    /// MOBIKE answers without our COOKIE2 or with another one (RFC 4555
    /// §3.5, §3.10): not taken.
    pub bad_cookie2: u64,
    /// UPDATE_SA_ADDRESSES from the original responder, ignored (RFC 4555
    /// §3.5: only the original initiator sends it).
    pub update_from_responder: u64,
    /// Address lists (ADDITIONAL_*_ADDRESS, NO_ADDITIONAL_ADDRESSES,
    /// RFC 4555 §3.4, §3.6) refused: a bad length, a contradiction, no
    /// MOBIKE, or an exchange they do not belong in.
    pub address_lists_refused: u64,
    /// Return routability checks sent as MOBIKE responder (RFC 4555 §3.7,
    /// §5.2; one per exchange, retransmissions not counted): the peer moved
    /// to an address not yet verified.
    pub return_routability_checks: u64,
    /// IKE_SA_INIT requests dropped: the half-open SAs were at
    /// `half_open_limit` in all.
    pub half_open_limit_drops: u64,
    /// IKE_SA_INIT requests dropped: the half-open SAs from that peer
    /// address were at `half_open_per_source`.
    pub half_open_source_drops: u64,
    /// IKE_SA_INIT messages whose nonce had a length §2.10 does not allow.
    pub bad_nonces: u64,
    /// Error notifies in IKE_SA_INIT answers, unauthenticated, not acted
    /// on at once (§2.21.1).
    pub init_error_notifies: u64,
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
    /// Our UPDATE_SA_ADDRESSES is out or waiting for the window: `path` is
    /// the pair asked for, not yet taken by the peer (on refusal it goes
    /// back).
    pub updating_addresses: bool,
    /// Our address list as last sent to the peer (RFC 4555 §3.4, §3.6):
    /// our addresses other than the one in use.
    pub local_addrs: Vec<IpAddr>,
    /// The peer's address list (its addresses other than the one in use),
    /// as last received.
    pub peer_addrs: Vec<IpAddr>,
    /// The configured peer addresses (`remote_addrs`): where the initiator
    /// may move the IKE SA besides the peer's list.
    pub remote_addrs: Vec<IpAddr>,
    /// The return routability check under way (RFC 4555 §3.7, §5.2):
    /// the IKE SA is on `path`, the CHILD_SAs wait on the verified pair.
    pub return_routability: Option<ReturnRoutabilityInfo>,
    /// Our next request message ID.
    pub next_request_id: u32,
    /// The peer's next expected request message ID.
    pub next_peer_request_id: u32,
    /// How we authenticated (set once our AUTH payload is made).
    pub local_auth: Option<AuthUsed>,
    /// How the peer authenticated (set once its AUTH verified).
    pub remote_auth: Option<AuthUsed>,
    /// The peer's certificate, when it authenticated with one.
    pub peer_cert: Option<PeerCertInfo>,
}

/// How one side of an IKE SA proved its identity in IKE_AUTH (RFC 7296
/// §2.15, §3.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthUsed {
    /// A pre-shared key (method 2).
    Psk,
    /// A signature with a certificate's key: RFC 7427's Digital Signature
    /// (method 14), or the classic method its scheme implies (1 for RSA
    /// with SHA-1, 9 and 10 for ECDSA in the r || s form, RFC 4754).
    Signature(Scheme),
}

impl std::fmt::Display for AuthUsed {
    /// `psk`, `ecdsa-p256-sha256 (RFC 7427)`, `ecdsa-256 (RFC 4754)`,
    /// `rsa-sha1 (RFC 7296)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuthUsed::Psk => f.write_str("psk"),
            AuthUsed::Signature(s) if s.algorithm_identifier().is_some() => {
                write!(f, "{} (RFC 7427)", s.name())
            }
            AuthUsed::Signature(s) => f.write_str(s.name()),
        }
    }
}

/// The peer's end-entity certificate, for status output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCertInfo {
    /// Subject DN, as strongSwan prints it ("C=CH, O=..., CN=...").
    pub subject: String,
    /// Issuer DN, the same way.
    pub issuer: String,
    /// Its last valid moment.
    pub not_after: SystemTime,
}

/// A MOBIKE responder's return routability check under way, for status
/// output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReturnRoutabilityInfo {
    /// Where the CHILD_SAs stay until the check is answered: the last
    /// verified pair.
    pub esp: Path,
    /// Peer addresses an authenticated copy of the update came from, each
    /// sent the check.
    pub candidates: Vec<SocketAddr>,
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
