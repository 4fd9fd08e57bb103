//! The CHILD_SA pair as both backends see it: what to install
//! ([`ChildSaSpec`]), the name of an installed pair ([`ChildSaHandle`]),
//! its counters, and the SAs, policies and MIGRATE calls a pair consists
//! of. Pure values; the backends do the installing.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use super::wire::{ChildSaHandleWire, ChildSaSpecWire};
use crate::codec::{LifetimeCfg, LifetimeCur, Stats};
use crate::error::{Error, KernelError, NetlinkError};
use crate::handle::{PolicyKey, SaKey};
use crate::selector::{SelectorError, SelectorPair, check_selectors};
use crate::types::{
    Crypto, Dir, Encap, Mark, MigrateSpec, Mode, OuterPair, PairMove, PolicySpec, Prefix, Proto,
    SaSpec, Template, TrafficSelector, default_replay,
};

/// The selector of the outbound SA, and whether it is an AF_UNSPEC one
/// (then `None`): the pair when there is one; otherwise, since the SA
/// serves several, a wildcard of their family, or AF_UNSPEC when they mix
/// families (strongSwan installs tunnel-mode SAs with AF_UNSPEC).
fn sa_selector(pairs: &[SelectorPair]) -> (Option<TrafficSelector>, bool) {
    match pairs {
        [one] => (Some(one.outbound()), false),
        [first, rest @ ..] => {
            let v4 = first.local.addr.is_ipv4();
            if rest.iter().any(|p| p.local.addr.is_ipv4() != v4) {
                return (None, true);
            }
            let any = Prefix {
                addr: if v4 {
                    IpAddr::V4(Ipv4Addr::UNSPECIFIED)
                } else {
                    IpAddr::V6(Ipv6Addr::UNSPECIFIED)
                },
                len: 0,
            };
            (Some(TrafficSelector::new(any, any)), false)
        }
        [] => (None, false),
    }
}

/// Everything needed to install one CHILD_SA pair (RFC 7296 §2.17 keys,
/// §2.9 traffic selectors) and its policies.
///
/// JSON: the selectors are `"selectors": [{"local": P, "remote": P}, ...]`,
/// or `"local_ts": P, "remote_ts": P`, where each may also be a list
/// (`"local_ts": [P, P]`) meaning every combination of the same family.
/// Serialization writes `selectors`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "ChildSaSpecWire")]
pub struct ChildSaSpec {
    /// Outer addresses (ours, the peer's).
    pub outer: OuterPair,
    /// The traffic selector pairs (at least one, each once, each of one
    /// family): one policy set each.
    pub selectors: Vec<SelectorPair>,
    /// Mode.
    pub mode: Mode,
    /// Request id binding SAs and policy templates.
    pub reqid: u32,
    /// SPI of the outbound SA (chosen by the peer).
    pub spi_out: u32,
    /// SPI of the inbound SA (chosen by us, e.g. from ALLOCSPI).
    pub spi_in: u32,
    /// Outbound transform and keys.
    pub crypto_out: Crypto,
    /// Inbound transform and keys.
    pub crypto_in: Crypto,
    /// ESP-in-UDP, from our point of view (`sport` = our port).
    #[serde(default)]
    pub encap: Option<Encap>,
    /// Mark on SAs and policies.
    #[serde(default)]
    pub mark: Option<Mark>,
    /// XFRM interface id on SAs and policies.
    #[serde(default)]
    pub if_id: Option<u32>,
    /// Replay window.
    #[serde(default = "default_replay")]
    pub replay_window: u32,
    /// Extended sequence numbers.
    #[serde(default)]
    pub esn: bool,
    /// Policy priority.
    #[serde(default)]
    pub priority: u32,
    /// SA soft/hard limits (both SAs); None = no limits.
    #[serde(default)]
    pub lifetime: Option<LifetimeCfg>,
}

/// Names an installed CHILD_SA pair; returned by install and migrate.
/// JSON: like [`ChildSaSpec`], `selectors`, or `local_ts` and
/// `remote_ts`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "ChildSaHandleWire")]
pub struct ChildSaHandle {
    /// Current outer addresses.
    pub outer: OuterPair,
    /// The traffic selector pairs, one policy set each.
    pub selectors: Vec<SelectorPair>,
    /// Mode.
    pub mode: Mode,
    /// Request id.
    pub reqid: u32,
    /// Outbound SPI.
    pub spi_out: u32,
    /// Inbound SPI.
    pub spi_in: u32,
    /// Current encapsulation (our view).
    pub encap: Option<Encap>,
    /// Mark.
    pub mark: Option<Mark>,
    /// Interface id.
    pub if_id: Option<u32>,
    /// Our other address where a copy of the inbound SA takes the peer's
    /// ESP too while a move is under way
    /// ([`super::ChildSaBackend::add_inbound_copy`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbound_copy: Option<IpAddr>,
}

impl ChildSaHandle {
    /// The outbound SA (towards the peer).
    pub fn out_key(&self) -> SaKey {
        SaKey {
            dst: self.outer.remote,
            spi: self.spi_out,
            proto: Proto::Esp,
            mark: self.mark,
        }
    }
    /// The copy of the inbound SA at our other address, if there is one.
    pub fn in_copy_key(&self) -> Option<SaKey> {
        self.inbound_copy.map(|dst| SaKey {
            dst,
            ..self.in_key()
        })
    }
    /// The inbound SA (towards us).
    pub fn in_key(&self) -> SaKey {
        SaKey {
            dst: self.outer.local,
            spi: self.spi_in,
            proto: Proto::Esp,
            mark: self.mark,
        }
    }
    pub(super) fn policy_dirs(&self) -> &'static [Dir] {
        match self.mode {
            Mode::Transport => &[Dir::Out, Dir::In],
            _ => &[Dir::Out, Dir::In, Dir::Fwd],
        }
    }
    pub(super) fn policy_key(&self, pair: &SelectorPair, dir: Dir) -> PolicyKey {
        let sel = pair.outbound();
        PolicyKey {
            selector: if dir == Dir::Out { sel } else { sel.reversed() },
            dir,
            mark: self.mark,
            if_id: self.if_id,
        }
    }
    /// The SPD keys of every policy of the pair: for each selector pair (in
    /// order) out, in and, except in transport mode, fwd.
    pub fn policy_keys(&self) -> Vec<PolicyKey> {
        self.selectors
            .iter()
            .flat_map(|pair| {
                self.policy_dirs()
                    .iter()
                    .map(move |d| self.policy_key(pair, *d))
            })
            .collect()
    }
}

/// Traffic counters of a CHILD_SA pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ChildSaCounters {
    /// Outbound SA: bytes, packets, add/use time.
    pub outbound: LifetimeCur,
    /// Inbound SA: bytes, packets, add/use time.
    pub inbound: LifetimeCur,
    /// Inbound SA replay / integrity failures.
    pub inbound_stats: Stats,
}

impl ChildSaCounters {
    /// The counters of a pair from its SAs' current lifetimes and the
    /// inbound SA's statistics.
    pub(super) fn of(out: LifetimeCur, inb: LifetimeCur, inbound_stats: Stats) -> Self {
        Self {
            outbound: out,
            inbound: inb,
            inbound_stats,
        }
    }
}

/// A kernel refusal with `errno` and no extended ack, as the fake backend
/// reports the kernel's invariants.
pub(super) fn kerr(errno: i32) -> NetlinkError {
    NetlinkError::Kernel(KernelError {
        errno,
        ext_ack: None,
    })
}

/// What asking for an SA the SAD does not hold gives (ESRCH).
pub(super) fn no_such_sa(k: &SaKey) -> Error {
    Error::GetSa {
        spi: k.spi,
        dst: k.dst,
        source: kerr(libc::ESRCH),
    }
}

impl ChildSaSpec {
    /// A tunnel-mode pair with the common defaults: no UDP encapsulation,
    /// mark, interface id or lifetime limits, a replay window of 32, no
    /// ESN, priority 0 (computed from the selectors).
    pub fn tunnel(
        outer: OuterPair,
        selectors: Vec<SelectorPair>,
        reqid: u32,
        (spi_out, spi_in): (u32, u32),
        (crypto_out, crypto_in): (Crypto, Crypto),
    ) -> Self {
        Self {
            outer,
            selectors,
            mode: Mode::Tunnel,
            reqid,
            spi_out,
            spi_in,
            crypto_out,
            crypto_in,
            encap: None,
            mark: None,
            if_id: None,
            replay_window: default_replay(),
            esn: false,
            priority: 0,
            lifetime: None,
        }
    }

    /// Whether the selector list can be installed: at least one pair, each
    /// of one address family, none twice. Both backends check it first.
    pub fn check(&self) -> Result<(), SelectorError> {
        check_selectors(&self.selectors)
    }
    /// The outbound and inbound SA this pair consists of. Their selector is
    /// the selector pair when there is one; with several, a wildcard of
    /// their family, or AF_UNSPEC when the pairs mix families.
    pub fn sa_specs(&self) -> [SaSpec; 2] {
        sa_specs(self)
    }
    /// The policies (out, in and, except in transport mode, fwd) of every
    /// selector pair, in order, at outer addresses `outer`.
    pub fn policy_specs(&self, outer: OuterPair) -> Vec<PolicySpec> {
        let mut h = handle_of(self);
        h.outer = outer;
        policy_specs(&h, self.priority)
    }
    /// The handle naming this pair once installed.
    pub fn handle(&self) -> ChildSaHandle {
        handle_of(self)
    }
}

pub(super) fn sa_specs(spec: &ChildSaSpec) -> [SaSpec; 2] {
    let (out_sel, af_unspec) = sa_selector(&spec.selectors);
    let common = |src, dst, spi, crypto: &Crypto, selector, encap| SaSpec {
        src,
        dst,
        spi,
        proto: Proto::Esp,
        mode: spec.mode,
        reqid: spec.reqid,
        crypto: crypto.clone(),
        selector,
        selector_af_unspec: af_unspec,
        encap,
        mark: spec.mark,
        if_id: spec.if_id,
        replay_window: spec.replay_window,
        esn: spec.esn,
        lifetime: spec.lifetime,
    };
    [
        common(
            spec.outer.local,
            spec.outer.remote,
            spec.spi_out,
            &spec.crypto_out,
            out_sel,
            spec.encap,
        ),
        common(
            spec.outer.remote,
            spec.outer.local,
            spec.spi_in,
            &spec.crypto_in,
            out_sel.map(|s| s.reversed()),
            spec.encap.map(Encap::reversed),
        ),
    ]
}

/// Whether a move to `to` makes the copy of the inbound SA the inbound SA:
/// the copy is at the new local address and the peer's address stays (the
/// inbound policies' templates name the peer's address, RFC 4555 §3.5
/// moves of our address only).
pub(super) fn adopts_copy(h: &ChildSaHandle, to: OuterPair) -> bool {
    h.inbound_copy == Some(to.local) && to.remote == h.outer.remote
}

pub(super) fn handle_of(spec: &ChildSaSpec) -> ChildSaHandle {
    ChildSaHandle {
        outer: spec.outer,
        selectors: spec.selectors.clone(),
        mode: spec.mode,
        reqid: spec.reqid,
        spi_out: spec.spi_out,
        spi_in: spec.spi_in,
        encap: spec.encap,
        mark: spec.mark,
        if_id: spec.if_id,
        inbound_copy: None,
    }
}

pub(super) fn policy_specs(h: &ChildSaHandle, priority: u32) -> Vec<PolicySpec> {
    h.policy_keys()
        .into_iter()
        .map(|key| {
            let (src, dst) = if key.dir == Dir::Out {
                (h.outer.local, h.outer.remote)
            } else {
                (h.outer.remote, h.outer.local)
            };
            PolicySpec {
                selector: key.selector,
                dir: key.dir,
                priority,
                action: Default::default(),
                templates: vec![Template {
                    src,
                    dst,
                    proto: Proto::Esp,
                    mode: h.mode,
                    reqid: h.reqid,
                    spi: 0,
                    optional: false,
                }],
                mark: h.mark,
                if_id: h.if_id,
            }
        })
        .collect()
}

/// The MIGRATE calls that move `h` to `to`: one per policy (selector pair
/// and direction, in [`ChildSaHandle::policy_keys`] order), each with the
/// SA its direction uses. The first call of a direction moves that SA; for
/// the later ones the kernel finds no SA of the reqid at the old addresses
/// any more (or another one, e.g. the other pair of a rekey, which moves
/// too) and moves the policy's template.
pub(super) fn migrate_specs(
    h: &ChildSaHandle,
    to: OuterPair,
    encap: Option<Encap>,
) -> Vec<MigrateSpec> {
    h.selectors
        .iter()
        .flat_map(|pair| {
            PairMove {
                selector: pair.outbound(),
                from: h.outer,
                to,
                proto: Proto::Esp,
                mode: h.mode,
                reqid: h.reqid,
                encap,
                kmaddress: false,
                if_id: h.if_id,
            }
            .specs(h.policy_dirs())
        })
        .collect()
}
