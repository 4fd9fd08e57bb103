//! Engine configuration: connections, children, identities, timers, and the
//! traffic-selector helpers (CIDR parsing, §2.9 narrowing). This is the
//! engine's typed view; reading TOML into it belongs to the runtime.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use crate::{
    proposal::{EspProposal, IkeProposal},
    proto::{IdType, Identification, TrafficSelector},
};

/// What is wrong with a configuration value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A traffic selector that is not `ADDR/PREFIX` or `ADDR`.
    #[error("traffic selector `{0}` is not ADDR[/PREFIX]")]
    BadTrafficSelector(String),
    /// An empty identity.
    #[error("identity must not be empty")]
    EmptyIdentity,
    /// An identity with `=` that is not a Distinguished Name.
    #[error("identity `{text}` is not a Distinguished Name: {why}")]
    BadDn {
        text: String,
        why: crate::pki::dn::DnError,
    },
}

/// One connection ("conn" in swanctl.conf terms).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionConfig {
    /// Name, used in commands and events.
    pub name: String,
    /// Local address and IKE port the initiator sends from.
    pub local_addr: Option<SocketAddr>,
    /// Peer address and IKE port; required to initiate, and when set a
    /// responder only accepts this peer (or one of `alt_remote_addrs`).
    pub remote_addr: Option<SocketAddr>,
    /// Further configured local addresses (`local_addrs` after the first):
    /// candidates for MOBIKE, announced to the peer in our address list
    /// (RFC 4555 §3.4) until [`Command::AnnounceAddresses`] says which
    /// addresses are usable.
    ///
    /// [`Command::AnnounceAddresses`]: super::Command::AnnounceAddresses
    pub alt_local_addrs: Vec<IpAddr>,
    /// Further configured peer addresses (`remote_addrs` after the first):
    /// addresses the initiator may move to, and peers a responder accepts.
    pub alt_remote_addrs: Vec<SocketAddr>,
    /// Our IDi/IDr.
    pub local_id: Identification,
    /// The identity the peer must prove.
    pub remote_id: Identification,
    /// Pre-shared key (§2.15), for whichever side authenticates with it.
    pub psk: Vec<u8>,
    /// How we prove our identity (§2.15).
    pub local_auth: LocalAuth,
    /// How the peer must prove its identity.
    pub remote_auth: RemoteAuth,
    /// IKE proposals, preferred first; the initiator's KE uses the first
    /// group of the first proposal.
    pub ike_proposals: Vec<IkeProposal>,
    /// Offer and accept MOBIKE (RFC 4555 §3.1 MOBIKE_SUPPORTED).
    pub mobike: bool,
    /// Which new peer addresses a MOBIKE responder checks (RFC 4555 §3.7)
    /// before it moves the CHILD_SAs there.
    pub mobike_verify: MobikeVerify,
    /// Send NO_NATS_ALLOWED in our UPDATE_SA_ADDRESSES (RFC 4555 §3.9):
    /// the peer refuses the update when a NAT changed its addresses.
    pub no_nats: bool,
    /// CHILD_SAs; the first is created with IKE_AUTH.
    pub children: Vec<ChildConfig>,
    /// Timers.
    pub timers: Timers,
    /// Whether and how the connection is re-established when its IKE SA
    /// ends or does not come up.
    pub recovery: Recovery,
    /// Virtual IPs to ask the peer for (an unspecified address: any of
    /// its family), as swanctl's `vips`. A child without local selectors
    /// then proposes the whole family and takes what the peer narrows it
    /// to, the address it assigned.
    pub vips: Vec<IpAddr>,
    /// Address pools to hand out virtual IPs from, as a gateway; the
    /// children's remote selectors are narrowed to the address handed out.
    pub pools: Vec<super::vip::AddrPool>,
}

impl ConnectionConfig {
    /// Every configured local address, the one to initiate from first.
    pub fn local_addrs(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.local_addr
            .map(|a| a.ip())
            .into_iter()
            .chain(self.alt_local_addrs.iter().copied())
    }

    /// Every configured peer address, the one to initiate to first.
    pub fn remote_addrs(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.remote_addr
            .into_iter()
            .chain(self.alt_remote_addrs.iter().copied())
    }

    /// Whether a peer at `ip` may use this connection: any peer when no
    /// peer address is configured, else one of them.
    pub fn accepts_peer(&self, ip: IpAddr) -> bool {
        self.remote_addr.is_none() || self.remote_addrs().any(|a| a.ip() == ip)
    }
}

/// Which addresses a MOBIKE responder verifies with a return routability
/// check (RFC 4555 §3.7, §5.2: a protected INFORMATIONAL with COOKIE2 to the new
/// address, answered) before the CHILD_SAs move there on the peer's
/// UPDATE_SA_ADDRESSES; the IKE SA moves at once either way (§3.5).
/// strongSwan's charon has no such setting: it moves the CHILD_SAs at once,
/// which is [`MobikeVerify::Never`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MobikeVerify {
    /// Every new peer address, even one the peer announced or configured.
    Always,
    /// Addresses neither configured (`remote_addrs`) nor announced by the
    /// peer (ADDITIONAL_*_ADDRESS, §3.6), whose routability is unknown.
    #[default]
    Unlisted,
    /// None: the CHILD_SAs follow the update at once (as charon does).
    Never,
}

/// Re-establishing a connection, as swanctl's `dpd_action = restart`,
/// `close_action = start` and `keyingtries`. Only a connection with a peer
/// address can be re-established; an IKE SA that ended because we deleted
/// it, was rekeyed, or failed authentication or negotiation is not.
/// Restarts in quick succession back off (up to a minute).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recovery {
    /// Re-establish when the peer stopped answering an established IKE SA
    /// (a liveness check or another request went unanswered).
    pub restart_on_dead_peer: bool,
    /// Re-establish when the peer deleted the IKE SA.
    pub restart_on_peer_close: bool,
    /// Attempts to establish the connection (initiating, or re-establishing
    /// it) that the peer leaves unanswered before giving up; 0: never give
    /// up. 1 (the default) makes no second attempt.
    pub keyingtries: u32,
}

impl Default for Recovery {
    fn default() -> Self {
        Recovery {
            restart_on_dead_peer: false,
            restart_on_peer_close: false,
            keyingtries: 1,
        }
    }
}

/// One CHILD_SA configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildConfig {
    /// Name.
    pub name: String,
    /// Our side's selectors.
    pub local_ts: Vec<TrafficSelector>,
    /// The peer's side's selectors.
    pub remote_ts: Vec<TrafficSelector>,
    /// ESP proposals.
    pub esp_proposals: Vec<EspProposal>,
    /// Mode.
    pub mode: Mode,
    /// Rekey the CHILD_SA this long after it was created (None: never).
    pub rekey_time: Option<Duration>,
    /// A random part of this, at most, is taken off each rekey_time, so
    /// that SAs made together do not rekey together (swanctl's rand_time).
    pub rand_time: Option<Duration>,
    /// Limits the kernel enforces on each of its ESP SAs.
    pub limits: ChildLimits,
}

/// Limits on each ESP SA of a CHILD_SA, as strongSwan's `life_time`,
/// `rekey_bytes`, `life_bytes`, `rekey_packets` and `life_packets`. They go
/// to the kernel with the SAs (XFRMA_LTIME_VAL's configuration part): the
/// kernel counts traffic, reports a soft limit (XFRM_MSG_EXPIRE, soft) on
/// which the CHILD_SA is rekeyed, and at a hard limit removes the SA
/// itself, after which the CHILD_SA is deleted with the peer. The hard time
/// limit also bounds an SA's life should the agent be gone. Time-based
/// rekeying is the engine's own timer ([`ChildConfig::rekey_time`]). None:
/// no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChildLimits {
    /// Hard limit on the SA's age.
    pub life_time: Option<Duration>,
    /// Soft limit on bytes processed: rekey.
    pub rekey_bytes: Option<u64>,
    /// Hard limit on bytes processed.
    pub life_bytes: Option<u64>,
    /// Soft limit on packets processed: rekey.
    pub rekey_packets: Option<u64>,
    /// Hard limit on packets processed.
    pub life_packets: Option<u64>,
}

/// IPsec mode of a CHILD_SA (RFC 7296 §1.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Tunnel mode, the default.
    Tunnel,
    /// Transport mode, asked for with USE_TRANSPORT_MODE: "If the
    /// responder is willing to use transport mode as requested, it will
    /// include a USE_TRANSPORT_MODE notification in the response. If the
    /// responder is not willing to use transport mode, ... the SA will use
    /// tunnel mode." Host to host only (one address per side).
    Transport,
}

/// Timer settings of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timers {
    /// First retransmission timeout; it doubles with every retry.
    pub retransmit_timeout: Duration,
    /// Retransmissions before the peer is declared dead.
    pub retransmit_tries: u32,
    /// Send a liveness check after this long without hearing from the peer.
    pub dpd_delay: Option<Duration>,
    /// Rekey the IKE SA this long after it was established.
    pub ike_rekey_time: Option<Duration>,
    /// A random part of this, at most, is taken off each IKE rekey time.
    pub ike_rand_time: Option<Duration>,
    /// NAT keepalive interval when we are behind a NAT (RFC 3948 §2.3).
    pub nat_keepalive: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            retransmit_timeout: Duration::from_secs(2),
            retransmit_tries: 5,
            dpd_delay: Some(Duration::from_secs(30)),
            ike_rekey_time: Some(Duration::from_secs(4 * 3600)),
            // swanctl: over_time, 10% of rekey_time.
            ike_rand_time: Some(Duration::from_secs(4 * 360)),
            nat_keepalive: Duration::from_secs(20),
        }
    }
}

/// strongSwan's `cookie_threshold` default.
pub const DEFAULT_COOKIE_THRESHOLD: usize = 30;
/// A total that a responder for a few hundred road warriors never needs
/// and that bounds the memory of a flood (each half-open SA holds both
/// IKE_SA_INIT messages and keys: a few kB).
pub const DEFAULT_HALF_OPEN_LIMIT: usize = 1000;
/// strongSwan's `block_threshold` default.
pub const DEFAULT_HALF_OPEN_PER_SOURCE: usize = 5;
/// strongSwan's `half_open_timeout` default.
pub const DEFAULT_HALF_OPEN_TIMEOUT: Duration = Duration::from_secs(30);
/// strongSwan changes its cookie secret every 120 s (`SECRET_SWITCH`).
pub const DEFAULT_COOKIE_ROTATION: Duration = Duration::from_secs(120);

/// Endpoint-wide settings.
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// Connections, looked up by name (initiate) or by proposal and identity
    /// (respond).
    pub connections: Vec<ConnectionConfig>,
    /// Half-open IKE SAs beyond which IKE_SA_INIT must carry a cookie
    /// (§2.6; strongSwan's `cookie_threshold`). 0 demands cookies always.
    pub cookie_threshold: usize,
    /// Half-open IKE SAs at most, in all; IKE_SA_INIT beyond is dropped
    /// (strongSwan's `init_limit_half_open`). 0: no limit.
    pub half_open_limit: usize,
    /// Half-open IKE SAs at most from one peer address; IKE_SA_INIT
    /// beyond is dropped (strongSwan's `block_threshold`). 0: no limit.
    /// Checked after the cookie, so a spoofed source cannot use up
    /// another's share once cookies are demanded.
    pub half_open_per_source: usize,
    /// Drop a responder's half-open SA after this long without IKE_AUTH,
    /// counted from our first answer; a replayed answer to a retransmitted
    /// IKE_SA_INIT does not extend it (see `replay_init_response`).
    pub half_open_timeout: Duration,
    /// How often the cookie secret changes (§2.6); a cookie of the secret
    /// before is accepted until the next change.
    pub cookie_rotation: Duration,
    /// UDP port of NAT-T (datagrams there carry the non-ESP marker).
    pub nat_t_port: u16,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        EndpointConfig {
            connections: Vec::new(),
            cookie_threshold: DEFAULT_COOKIE_THRESHOLD,
            half_open_limit: DEFAULT_HALF_OPEN_LIMIT,
            half_open_per_source: DEFAULT_HALF_OPEN_PER_SOURCE,
            half_open_timeout: DEFAULT_HALF_OPEN_TIMEOUT,
            cookie_rotation: DEFAULT_COOKIE_ROTATION,
            nat_t_port: crate::proto::NAT_T_PORT,
        }
    }
}

/// Parses an identity as strongSwan does: an IP address gives
/// ID_IPV4_ADDR/ID_IPV6_ADDR, text with `=` a Distinguished Name
/// (ID_DER_ASN1_DN, `C=CH, O=Example, CN=gw`, see [`crate::pki::dn`]),
/// `@name` the FQDN `name`, `user@host` ID_RFC822_ADDR, anything else
/// ID_FQDN.
pub fn parse_identity(s: &str) -> Result<Identification, ConfigError> {
    if s.is_empty() {
        return Err(ConfigError::EmptyIdentity);
    }
    if crate::pki::dn::looks_like_dn(s) {
        let data = crate::pki::dn::parse(s).map_err(|why| ConfigError::BadDn {
            text: s.to_owned(),
            why,
        })?;
        return Ok(Identification {
            ty: IdType::ID_DER_ASN1_DN,
            data,
        });
    }
    if let Some(name) = s.strip_prefix('@') {
        if name.is_empty() {
            return Err(ConfigError::EmptyIdentity);
        }
        return Ok(Identification {
            ty: IdType::ID_FQDN,
            data: name.as_bytes().to_vec(),
        });
    }
    Ok(match s.parse::<IpAddr>() {
        Ok(IpAddr::V4(a)) => Identification {
            ty: IdType::ID_IPV4_ADDR,
            data: a.octets().to_vec(),
        },
        Ok(IpAddr::V6(a)) => Identification {
            ty: IdType::ID_IPV6_ADDR,
            data: a.octets().to_vec(),
        },
        Err(_) if s.contains('@') => Identification {
            ty: IdType::ID_RFC822_ADDR,
            data: s.as_bytes().to_vec(),
        },
        Err(_) => Identification {
            ty: IdType::ID_FQDN,
            data: s.as_bytes().to_vec(),
        },
    })
}

fn addr_to_u128(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

fn same_family(a: IpAddr, b: IpAddr) -> bool {
    a.is_ipv4() == b.is_ipv4()
}

fn u128_to_addr(v: u128, like: IpAddr) -> IpAddr {
    match like {
        IpAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::from(v as u32)),
        IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::from(v)),
    }
}

/// Parses `10.1.0.0/24`, `2001:db8::/32` or a single address into an
/// any-protocol, any-port selector.
pub fn parse_ts(s: &str) -> Result<TrafficSelector, ConfigError> {
    let bad = || ConfigError::BadTrafficSelector(s.to_owned());
    let (addr, prefix) = match s.split_once('/') {
        Some((a, p)) => (
            a.parse::<IpAddr>().map_err(|_| bad())?,
            Some(p.parse::<u8>().map_err(|_| bad())?),
        ),
        None => (s.parse::<IpAddr>().map_err(|_| bad())?, None),
    };
    let bits = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = u32::from(prefix.unwrap_or(bits));
    if prefix > u32::from(bits) {
        return Err(bad());
    }
    let host_bits = u32::from(bits) - prefix;
    let host_mask: u128 = if host_bits == 0 {
        0
    } else {
        u128::MAX >> (128 - host_bits)
    };
    let v = addr_to_u128(addr);
    Ok(TrafficSelector {
        ip_protocol: 0,
        start_port: 0,
        end_port: 65535,
        start_addr: u128_to_addr(v & !host_mask, addr),
        end_addr: u128_to_addr(v | host_mask, addr),
    })
}

/// The intersection of two selectors, if not empty.
pub fn intersect(a: &TrafficSelector, b: &TrafficSelector) -> Option<TrafficSelector> {
    if !same_family(a.start_addr, b.start_addr) {
        return None;
    }
    let ip_protocol = match (a.ip_protocol, b.ip_protocol) {
        (0, p) | (p, 0) => p,
        (p, q) if p == q => p,
        _ => return None,
    };
    let start_port = a.start_port.max(b.start_port);
    let end_port = a.end_port.min(b.end_port);
    let start = addr_to_u128(a.start_addr).max(addr_to_u128(b.start_addr));
    let end = addr_to_u128(a.end_addr).min(addr_to_u128(b.end_addr));
    if start_port > end_port || start > end {
        return None;
    }
    Some(TrafficSelector {
        ip_protocol,
        start_port,
        end_port,
        start_addr: u128_to_addr(start, a.start_addr),
        end_addr: u128_to_addr(end, a.start_addr),
    })
}

/// RFC 7296 §2.9 narrowing: every non-empty intersection of a proposed
/// selector with a configured one.
pub fn narrow(
    proposed: &[TrafficSelector],
    configured: &[TrafficSelector],
) -> Vec<TrafficSelector> {
    let mut out = Vec::new();
    for p in proposed {
        for c in configured {
            if let Some(i) = intersect(p, c)
                && !out.contains(&i)
            {
                out.push(i);
            }
        }
    }
    out
}

/// Whether `inner` lies within `outer`.
pub fn ts_contains(outer: &TrafficSelector, inner: &TrafficSelector) -> bool {
    intersect(outer, inner).as_ref() == Some(inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_becomes_an_address_range() {
        let t = parse_ts("10.1.0.7/24").unwrap();
        assert_eq!(t.start_addr, "10.1.0.0".parse::<IpAddr>().unwrap());
        assert_eq!(t.end_addr, "10.1.0.255".parse::<IpAddr>().unwrap());
        let t = parse_ts("2001:db8::/32").unwrap();
        assert_eq!(
            t.end_addr,
            "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff"
                .parse::<IpAddr>()
                .unwrap()
        );
        let t = parse_ts("0.0.0.0/0").unwrap();
        assert_eq!(t.end_addr, "255.255.255.255".parse::<IpAddr>().unwrap());
        assert!(parse_ts("10.0.0.0/33").is_err());
        assert!(parse_ts("banana").is_err());
    }

    #[test]
    fn narrowing_keeps_only_the_common_part() {
        let wide = parse_ts("10.0.0.0/8").unwrap();
        let lan = parse_ts("10.1.0.0/24").unwrap();
        let other = parse_ts("192.168.0.0/16").unwrap();
        assert_eq!(narrow(&[wide], &[lan, other]), vec![lan]);
        assert!(narrow(&[other], &[lan]).is_empty());
        assert!(ts_contains(&wide, &lan));
        assert!(!ts_contains(&lan, &wide));
        let v6 = parse_ts("2001:db8::/32").unwrap();
        assert_eq!(intersect(&wide, &v6), None);
    }

    #[test]
    fn identities_follow_strongswan_typing() {
        assert_eq!(parse_identity("a.test").unwrap().ty, IdType::ID_FQDN);
        assert_eq!(
            parse_identity("me@a.test").unwrap().ty,
            IdType::ID_RFC822_ADDR
        );
        assert_eq!(
            parse_identity("192.0.2.1").unwrap(),
            Identification {
                ty: IdType::ID_IPV4_ADDR,
                data: vec![192, 0, 2, 1]
            }
        );
        assert!(parse_identity("").is_err());
        // `@name`: an FQDN, whatever it looks like.
        assert_eq!(
            parse_identity("@moon").unwrap(),
            Identification {
                ty: IdType::ID_FQDN,
                data: b"moon".to_vec()
            }
        );
        assert!(parse_identity("@").is_err());
        // A Distinguished Name, in strongSwan's order.
        let dn = parse_identity("C=CH, O=strongSwan, CN=moon.strongswan.org").unwrap();
        assert_eq!(dn.ty, IdType::ID_DER_ASN1_DN);
        assert_eq!(
            crate::pki::identity::describe(&dn),
            "C=CH, O=strongSwan, CN=moon.strongswan.org"
        );
        let e = parse_identity("C=CH, Q=x").unwrap_err().to_string();
        assert!(
            e.contains("C=CH, Q=x") && e.contains("unknown attribute `Q`"),
            "{e}"
        );
    }
}

impl ConnectionConfig {
    /// Whether either side authenticates with a certificate.
    pub fn uses_pubkey(&self) -> bool {
        matches!(self.local_auth, LocalAuth::Pubkey(_))
            || matches!(self.remote_auth, RemoteAuth::Pubkey(_))
    }
}

/// How we prove our identity (RFC 7296 §2.15).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum LocalAuth {
    /// The pre-shared key: AUTH method 2.
    #[default]
    Psk,
    /// A signature with our private key (RFC 7427 method 14); our
    /// certificate and its intermediates go in CERT payloads.
    Pubkey(Arc<Credentials>),
}

/// Our certificate chain and its private key.
#[derive(Debug)]
pub struct Credentials {
    pub key: crate::pki::key::PrivateKey,
    /// Ours first, then the intermediates.
    pub chain: Vec<rustls_pki_types::CertificateDer<'static>>,
    /// The CERTREQ entry (RFC 7296 §3.7) of each certificate of `chain`:
    /// which of them a peer's CERTREQ names.
    pub chain_hashes: Vec<[u8; 20]>,
    /// When our CERT payloads go out.
    pub send_cert: SendCert,
}

impl PartialEq for Credentials {
    fn eq(&self, other: &Self) -> bool {
        self.chain == other.chain
            && self.key.public_key() == other.key.public_key()
            && self.send_cert == other.send_cert
    }
}

/// When we send our certificate chain in CERT payloads, as swanctl's
/// `send_cert` says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SendCert {
    /// In every IKE_AUTH.
    Always,
    /// Only when the peer sent a CERTREQ (swanctl's default): a peer that
    /// asks for none has our certificate already.
    #[default]
    IfAsked,
    /// Never: the peer must have our certificate locally.
    Never,
}

impl Eq for Credentials {}

/// How the peer must prove its identity.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum RemoteAuth {
    /// The pre-shared key.
    #[default]
    Psk,
    /// A signature by the key of a certificate that validates to these
    /// trust anchors and that vouches for `remote_id`.
    Pubkey(Arc<Trust>),
}

/// The trust anchors and CRLs, and a digest of what they were made from
/// (a reload that reads the same files changes nothing).
#[derive(Debug)]
pub struct Trust {
    pub store: crate::pki::verify::TrustStore,
    /// The CAs' entries for CERTREQ (RFC 7296 §3.7).
    pub ca_hashes: Vec<[u8; 20]>,
    /// Whether we send CERTREQ naming them (swanctl's `send_certreq`).
    pub send_certreq: bool,
    pub digest: Vec<u8>,
}

impl PartialEq for Trust {
    fn eq(&self, other: &Self) -> bool {
        self.digest == other.digest && self.send_certreq == other.send_certreq
    }
}

impl Eq for Trust {}
