//! What the MOBIKE agent asks of the kernel, as one trait: install a
//! CHILD_SA pair with its policies, move it to a new outer address pair
//! (RFC 4555 §3.5 "Updating Address Set"), delete it, read its counters and
//! follow kernel events. [`KernelBackend`] does it with XFRM netlink,
//! [`FakeBackend`] in memory with the same invariants (unique SPI per
//! destination and protocol, unique policy per selector and direction,
//! migrating a missing SA or policy fails, counters survive a move) so the
//! agent's tests run without root or a kernel.
//!
//! Traffic selectors (RFC 7296 §2.9): a CHILD_SA carries a list of
//! [`SelectorPair`]s, each one (local prefix, remote prefix) of one address
//! family for any protocol and port. Like strongSwan's kernel-netlink, every
//! pair gets its own policy set (out, in and fwd; out and in in transport
//! mode), all with the same reqid template; the two SAs serve all pairs, so
//! their selector is the pair itself when there is one, otherwise a wildcard
//! (`0.0.0.0/0` or `::/0` both ways) of the pairs' family, or an AF_UNSPEC
//! one when the pairs mix IPv4 and IPv6. Not supported: protocol or port
//! restrictions in a selector, and address ranges that are not a prefix
//! (the caller splits or refuses them).
//!
//! Not here: IKE, key derivation, rekeying policy, choosing addresses.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Mutex;

use futures::StreamExt;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};

use crate::codec::{LifetimeCur, Stats};
use crate::error::{Error, KernelError, NetlinkError};
use crate::handle::{PolicyKey, SaKey, XfrmHandle};
use crate::monitor::{ALL_GROUPS, XfrmEvent, XfrmMonitor};
use crate::types::{
    Crypto, Dir, Encap, Mark, MigrateSpec, Mode, OuterPair, PairMove, PolicyInfo, PolicySpec,
    Prefix, Proto, SaInfo, SaSpec, Template, TrafficSelector,
};

/// A boxed future, so the trait is object-safe (`dyn ChildSaBackend`).
pub type BoxFut<'a, T> = Pin<Box<dyn Future<Output = Result<T, Error>> + Send + 'a>>;

/// The counters of many pairs ([`ChildSaBackend::counters_of`]).
pub type ManyCounters<'a> =
    Pin<Box<dyn Future<Output = Vec<Result<ChildSaCounters, Error>>> + Send + 'a>>;

fn default_replay() -> u32 {
    32
}

/// One traffic selector pair of a CHILD_SA (RFC 7296 §2.9 "Traffic
/// Selector Negotiation"): traffic from `local` to `remote` leaves through
/// the CHILD_SA, traffic from `remote` to `local` arrives through it, any
/// protocol and port. Both prefixes are of one address family. IKE
/// negotiates a list of selectors per side (TSi, TSr); the kernel's
/// selector is one (source, destination) prefix pair, so N local and M
/// remote selectors make up to N × M pairs ([`SelectorPair::product`]).
/// Serialized as `{"local": "10.1.0.0/24", "remote": "10.2.0.0/24"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SelectorPair {
    /// Our side's prefix.
    pub local: Prefix,
    /// The peer's prefix.
    pub remote: Prefix,
}

impl SelectorPair {
    /// The pair `local` <-> `remote`.
    pub fn new(local: Prefix, remote: Prefix) -> Self {
        Self { local, remote }
    }

    /// Every combination of one `local` and one `remote` prefix of the same
    /// address family, in order (local-major), each once: what strongSwan
    /// installs policies for. Combinations of different families are left
    /// out, so the result may be empty.
    pub fn product(local: &[Prefix], remote: &[Prefix]) -> Vec<SelectorPair> {
        let mut out: Vec<SelectorPair> = Vec::new();
        for l in local {
            for r in remote {
                let p = Self::new(*l, *r);
                if p.same_family() && !out.contains(&p) {
                    out.push(p);
                }
            }
        }
        out
    }

    /// Whether both prefixes are of one address family.
    pub fn same_family(&self) -> bool {
        self.local.addr.is_ipv4() == self.remote.addr.is_ipv4()
    }

    /// The outbound selector (local -> remote, any protocol and port).
    pub fn outbound(&self) -> TrafficSelector {
        TrafficSelector::new(self.local, self.remote)
    }
}

impl std::fmt::Display for SelectorPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} <-> {}", self.local, self.remote)
    }
}

/// Why a CHILD_SA's list of [`SelectorPair`]s cannot be installed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// The list is empty: no traffic would use the CHILD_SA.
    #[error("no traffic selector pair")]
    Empty,
    /// A pair's prefixes are of different address families.
    #[error("traffic selector pair {0} mixes IPv4 and IPv6")]
    MixedFamily(SelectorPair),
    /// A pair is listed twice (its policies would collide).
    #[error("traffic selector pair {0} is listed twice")]
    Duplicate(SelectorPair),
}

/// Checks what both backends rely on: at least one pair, each of one
/// family, none twice.
fn check_selectors(pairs: &[SelectorPair]) -> Result<(), SelectorError> {
    if pairs.is_empty() {
        return Err(SelectorError::Empty);
    }
    let mut seen = HashSet::with_capacity(pairs.len());
    for p in pairs {
        if !p.same_family() {
            return Err(SelectorError::MixedFamily(*p));
        }
        if !seen.insert(*p) {
            return Err(SelectorError::Duplicate(*p));
        }
    }
    Ok(())
}

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

/// Serde forms of the selectors (private): the list `selectors`, or the
/// form before lists, `local_ts` and `remote_ts`, each one prefix or a
/// list of prefixes, which mean their [`SelectorPair::product`].
mod wire {
    use serde::Deserialize;

    use super::SelectorPair;
    use crate::types::Prefix;

    #[derive(Deserialize)]
    #[serde(untagged)]
    pub(super) enum OneOrMany {
        One(Prefix),
        Many(Vec<Prefix>),
    }

    impl OneOrMany {
        fn into_vec(self) -> Vec<Prefix> {
            match self {
                OneOrMany::One(p) => vec![p],
                OneOrMany::Many(v) => v,
            }
        }
    }

    /// Resolves the three optional fields into the pair list.
    pub(super) fn resolve(
        selectors: Option<Vec<SelectorPair>>,
        local_ts: Option<OneOrMany>,
        remote_ts: Option<OneOrMany>,
    ) -> Result<Vec<SelectorPair>, String> {
        match (selectors, local_ts, remote_ts) {
            (Some(s), None, None) => Ok(s),
            (None, Some(l), Some(r)) => {
                let (l, r) = (l.into_vec(), r.into_vec());
                let pairs = SelectorPair::product(&l, &r);
                if pairs.is_empty() {
                    let list = |v: &[Prefix]| {
                        v.iter()
                            .map(|p| p.to_string())
                            .collect::<Vec<_>>()
                            .join(",")
                    };
                    return Err(format!(
                        "local_ts [{}] and remote_ts [{}] have no pair of one address family",
                        list(&l),
                        list(&r)
                    ));
                }
                Ok(pairs)
            }
            (Some(_), _, _) => {
                Err("give either `selectors` or `local_ts`/`remote_ts`, not both".into())
            }
            (None, Some(_), None) => Err("`local_ts` without `remote_ts`".into()),
            (None, None, Some(_)) => Err("`remote_ts` without `local_ts`".into()),
            (None, None, None) => Err("missing `selectors` (or `local_ts` and `remote_ts`)".into()),
        }
    }
}

/// Everything needed to install one CHILD_SA pair (RFC 7296 §2.17 keys,
/// §2.9 traffic selectors) and its policies.
///
/// JSON: the selectors are `"selectors": [{"local": P, "remote": P}, ...]`;
/// the older `"local_ts": P, "remote_ts": P` is still accepted, and so are
/// lists there (`"local_ts": [P, P]`), meaning every combination of the
/// same family. Serialization writes `selectors`.
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
    pub lifetime: Option<crate::codec::LifetimeCfg>,
}

/// [`ChildSaSpec`] as read (private): selectors in either form.
#[derive(Deserialize)]
struct ChildSaSpecWire {
    outer: OuterPair,
    #[serde(default)]
    selectors: Option<Vec<SelectorPair>>,
    #[serde(default)]
    local_ts: Option<wire::OneOrMany>,
    #[serde(default)]
    remote_ts: Option<wire::OneOrMany>,
    mode: Mode,
    reqid: u32,
    spi_out: u32,
    spi_in: u32,
    crypto_out: Crypto,
    crypto_in: Crypto,
    #[serde(default)]
    encap: Option<Encap>,
    #[serde(default)]
    mark: Option<Mark>,
    #[serde(default)]
    if_id: Option<u32>,
    #[serde(default = "default_replay")]
    replay_window: u32,
    #[serde(default)]
    esn: bool,
    #[serde(default)]
    priority: u32,
    #[serde(default)]
    lifetime: Option<crate::codec::LifetimeCfg>,
}

impl TryFrom<ChildSaSpecWire> for ChildSaSpec {
    type Error = String;
    fn try_from(w: ChildSaSpecWire) -> Result<Self, String> {
        Ok(Self {
            outer: w.outer,
            selectors: wire::resolve(w.selectors, w.local_ts, w.remote_ts)?,
            mode: w.mode,
            reqid: w.reqid,
            spi_out: w.spi_out,
            spi_in: w.spi_in,
            crypto_out: w.crypto_out,
            crypto_in: w.crypto_in,
            encap: w.encap,
            mark: w.mark,
            if_id: w.if_id,
            replay_window: w.replay_window,
            esn: w.esn,
            priority: w.priority,
            lifetime: w.lifetime,
        })
    }
}

/// Names an installed CHILD_SA pair; returned by install and migrate.
/// JSON: like [`ChildSaSpec`], `selectors`, or the older `local_ts` and
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
}

/// [`ChildSaHandle`] as read (private): selectors in either form.
#[derive(Deserialize)]
struct ChildSaHandleWire {
    outer: OuterPair,
    #[serde(default)]
    selectors: Option<Vec<SelectorPair>>,
    #[serde(default)]
    local_ts: Option<wire::OneOrMany>,
    #[serde(default)]
    remote_ts: Option<wire::OneOrMany>,
    mode: Mode,
    reqid: u32,
    spi_out: u32,
    spi_in: u32,
    #[serde(default)]
    encap: Option<Encap>,
    #[serde(default)]
    mark: Option<Mark>,
    #[serde(default)]
    if_id: Option<u32>,
}

impl TryFrom<ChildSaHandleWire> for ChildSaHandle {
    type Error = String;
    fn try_from(w: ChildSaHandleWire) -> Result<Self, String> {
        Ok(Self {
            outer: w.outer,
            selectors: wire::resolve(w.selectors, w.local_ts, w.remote_ts)?,
            mode: w.mode,
            reqid: w.reqid,
            spi_out: w.spi_out,
            spi_in: w.spi_in,
            encap: w.encap,
            mark: w.mark,
            if_id: w.if_id,
        })
    }
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
    /// The inbound SA (towards us).
    pub fn in_key(&self) -> SaKey {
        SaKey {
            dst: self.outer.local,
            spi: self.spi_in,
            proto: Proto::Esp,
            mark: self.mark,
        }
    }
    fn policy_dirs(&self) -> &'static [Dir] {
        match self.mode {
            Mode::Transport => &[Dir::Out, Dir::In],
            _ => &[Dir::Out, Dir::In, Dir::Fwd],
        }
    }
    fn policy_key(&self, pair: &SelectorPair, dir: Dir) -> PolicyKey {
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
    fn of(out: LifetimeCur, inb: LifetimeCur, inbound_stats: Stats) -> Self {
        Self {
            outbound: out,
            inbound: inb,
            inbound_stats,
        }
    }
}

/// What asking for an SA the SAD does not hold gives (ESRCH).
fn no_such_sa(k: &SaKey) -> Error {
    Error::GetSa {
        spi: k.spi,
        dst: k.dst,
        source: kerr(libc::ESRCH),
    }
}

/// The kernel operations the MOBIKE agent needs.
pub trait ChildSaBackend: Send + Sync {
    /// Install the outbound and inbound SA and, for every selector pair,
    /// the out/in(/fwd) policies. All or nothing: on failure what was
    /// installed is removed again.
    fn install_child_sa<'a>(&'a self, spec: &'a ChildSaSpec) -> BoxFut<'a, ChildSaHandle>;
    /// Move both SAs and the policies of every selector pair to `to`, with
    /// the UDP encapsulation of the new path (our view; None: plain ESP,
    /// taking off any the pair had, as when a MOBIKE move leaves a NAT).
    /// Returns the updated handle. All or nothing, as far as the kernel
    /// allows.
    fn migrate_child_sa<'a>(
        &'a self,
        handle: &'a ChildSaHandle,
        to: OuterPair,
        encap: Option<Encap>,
    ) -> BoxFut<'a, ChildSaHandle>;
    /// Remove SAs and policies (continues past errors, returns the first).
    fn delete_child_sa<'a>(&'a self, handle: &'a ChildSaHandle) -> BoxFut<'a, ()>;
    /// Read both SAs' counters.
    fn counters<'a>(&'a self, handle: &'a ChildSaHandle) -> BoxFut<'a, ChildSaCounters>;
    /// The counters of many pairs, in their order; a pair whose SAs are
    /// gone gets the error `counters` would give. The kernel backend reads
    /// them all with one SA dump instead of two requests per pair.
    fn counters_of<'a>(&'a self, handles: &'a [ChildSaHandle]) -> ManyCounters<'a> {
        Box::pin(async move {
            let mut out = Vec::with_capacity(handles.len());
            for h in handles {
                out.push(self.counters(h).await);
            }
            out
        })
    }
    /// Subscribe to kernel events (expire, acquire, mapping, migrate, ...).
    fn events(&self) -> Result<BoxStream<'static, Result<XfrmEvent, Error>>, Error>;
}

/// A shared backend is a backend: the caller keeps a handle (e.g. to a
/// [`FakeBackend`] it feeds traffic into) while the user owns a box.
impl<T: ChildSaBackend + ?Sized> ChildSaBackend for std::sync::Arc<T> {
    fn install_child_sa<'a>(&'a self, spec: &'a ChildSaSpec) -> BoxFut<'a, ChildSaHandle> {
        (**self).install_child_sa(spec)
    }
    fn migrate_child_sa<'a>(
        &'a self,
        handle: &'a ChildSaHandle,
        to: OuterPair,
        encap: Option<Encap>,
    ) -> BoxFut<'a, ChildSaHandle> {
        (**self).migrate_child_sa(handle, to, encap)
    }
    fn delete_child_sa<'a>(&'a self, handle: &'a ChildSaHandle) -> BoxFut<'a, ()> {
        (**self).delete_child_sa(handle)
    }
    fn counters<'a>(&'a self, handle: &'a ChildSaHandle) -> BoxFut<'a, ChildSaCounters> {
        (**self).counters(handle)
    }
    fn counters_of<'a>(&'a self, handles: &'a [ChildSaHandle]) -> ManyCounters<'a> {
        (**self).counters_of(handles)
    }
    fn events(&self) -> Result<BoxStream<'static, Result<XfrmEvent, Error>>, Error> {
        (**self).events()
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

fn sa_specs(spec: &ChildSaSpec) -> [SaSpec; 2] {
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

fn handle_of(spec: &ChildSaSpec) -> ChildSaHandle {
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
    }
}

fn policy_specs(h: &ChildSaHandle, priority: u32) -> Vec<PolicySpec> {
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
fn migrate_specs(h: &ChildSaHandle, to: OuterPair, encap: Option<Encap>) -> Vec<MigrateSpec> {
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

/// [`ChildSaBackend`] over the kernel's XFRM.
#[derive(Debug, Clone)]
pub struct KernelBackend {
    handle: XfrmHandle,
    netns: Option<PathBuf>,
}

impl KernelBackend {
    /// Use the calling thread's network namespace.
    pub fn new() -> Result<Self, Error> {
        Ok(Self {
            handle: XfrmHandle::new()?,
            netns: None,
        })
    }

    /// Use the network namespace at `path` (e.g. `/run/netns/L`).
    pub fn in_netns(path: impl Into<PathBuf>) -> Result<Self, Error> {
        let p = path.into();
        Ok(Self {
            handle: XfrmHandle::new_in_netns(&p)?,
            netns: Some(p),
        })
    }

    /// The underlying request handle.
    pub fn handle(&self) -> &XfrmHandle {
        &self.handle
    }

    async fn install(&self, spec: &ChildSaSpec) -> Result<ChildSaHandle, Error> {
        spec.check()?;
        let h = handle_of(spec);
        let [out, inb] = sa_specs(spec);
        self.handle.state().add(&out).await?;
        if let Err(e) = self.handle.state().add(&inb).await {
            let _ = self.handle.state().delete(&h.out_key()).await;
            return Err(e);
        }
        let mut done: Vec<PolicyKey> = Vec::new();
        for (p, key) in policy_specs(&h, spec.priority).iter().zip(h.policy_keys()) {
            if let Err(e) = self.handle.policy().add(p).await {
                for d in done.iter().rev() {
                    let _ = self.handle.policy().delete(d).await;
                }
                let _ = self.handle.state().delete(&h.out_key()).await;
                let _ = self.handle.state().delete(&h.in_key()).await;
                return Err(e);
            }
            done.push(key);
        }
        Ok(h)
    }

    async fn migrate(
        &self,
        h: &ChildSaHandle,
        to: OuterPair,
        encap: Option<Encap>,
    ) -> Result<ChildSaHandle, Error> {
        check_selectors(&h.selectors)?;
        let steps = migrate_specs(h, to, encap);
        for (i, m) in steps.iter().enumerate() {
            if let Err(e) = self.handle.migrate(m).await {
                // The kernel rolled back this call; undo the earlier ones
                // (last first) so the SAs and policies are never split
                // across two address pairs.
                let mut moved = h.clone();
                moved.outer = to;
                for back in migrate_specs(&moved, h.outer, h.encap).iter().take(i).rev() {
                    let _ = self.handle.migrate(back).await;
                }
                return Err(e);
            }
        }
        let mut n = h.clone();
        n.outer = to;
        n.encap = encap;
        if h.encap.is_some() && encap.is_none() {
            // MIGRATE keeps the SAs' encapsulation when given none
            // (xfrm_state_clone): take it off by adding them again.
            for (i, k) in [n.out_key(), n.in_key()].iter().enumerate() {
                if let Err(e) = self.handle.state().readd(k, None).await {
                    // Both SAs as they were, then everything back.
                    if i == 1 {
                        let _ = self.handle.state().readd(&n.out_key(), h.encap).await;
                    }
                    let moved = ChildSaHandle {
                        encap: h.encap,
                        ..n.clone()
                    };
                    for back in migrate_specs(&moved, h.outer, h.encap).iter().rev() {
                        let _ = self.handle.migrate(back).await;
                    }
                    return Err(e);
                }
            }
        }
        Ok(n)
    }

    async fn delete(&self, h: &ChildSaHandle) -> Result<(), Error> {
        let mut first = None;
        for key in h.policy_keys() {
            if let Err(e) = self.handle.policy().delete(&key).await {
                first.get_or_insert(e);
            }
        }
        for k in [h.out_key(), h.in_key()] {
            if let Err(e) = self.handle.state().delete(&k).await {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    async fn read_counters(&self, h: &ChildSaHandle) -> Result<ChildSaCounters, Error> {
        let out = self.handle.state().get(&h.out_key()).await?;
        let inb = self.handle.state().get(&h.in_key()).await?;
        Ok(ChildSaCounters::of(out.current, inb.current, inb.stats))
    }

    /// One SA dump for every pair; if the dump fails, pair by pair.
    async fn read_counters_of(
        &self,
        handles: &[ChildSaHandle],
    ) -> Vec<Result<ChildSaCounters, Error>> {
        let mut by_key: HashMap<(IpAddr, u8, u32), SaInfo> = HashMap::new();
        let dumped = self
            .handle
            .state()
            .dump_with(|sa| {
                if let Some(dst) = sa.dst {
                    by_key.insert((dst, sa.proto, sa.spi), sa);
                }
            })
            .await;
        if dumped.is_err() {
            let mut out = Vec::with_capacity(handles.len());
            for h in handles {
                out.push(self.read_counters(h).await);
            }
            return out;
        }
        let get = |k: SaKey| {
            by_key
                .get(&(k.dst, k.proto.to_raw(), k.spi))
                .ok_or_else(|| no_such_sa(&k))
        };
        handles
            .iter()
            .map(|h| {
                let out = get(h.out_key())?;
                let inb = get(h.in_key())?;
                Ok(ChildSaCounters::of(out.current, inb.current, inb.stats))
            })
            .collect()
    }
}

impl ChildSaBackend for KernelBackend {
    fn install_child_sa<'a>(&'a self, spec: &'a ChildSaSpec) -> BoxFut<'a, ChildSaHandle> {
        Box::pin(self.install(spec))
    }
    fn migrate_child_sa<'a>(
        &'a self,
        handle: &'a ChildSaHandle,
        to: OuterPair,
        encap: Option<Encap>,
    ) -> BoxFut<'a, ChildSaHandle> {
        Box::pin(self.migrate(handle, to, encap))
    }
    fn delete_child_sa<'a>(&'a self, handle: &'a ChildSaHandle) -> BoxFut<'a, ()> {
        Box::pin(self.delete(handle))
    }
    fn counters<'a>(&'a self, handle: &'a ChildSaHandle) -> BoxFut<'a, ChildSaCounters> {
        Box::pin(self.read_counters(handle))
    }
    fn counters_of<'a>(&'a self, handles: &'a [ChildSaHandle]) -> ManyCounters<'a> {
        Box::pin(self.read_counters_of(handles))
    }
    fn events(&self) -> Result<BoxStream<'static, Result<XfrmEvent, Error>>, Error> {
        let m = match &self.netns {
            Some(p) => XfrmMonitor::open_in(p, ALL_GROUPS)?,
            None => XfrmMonitor::open(ALL_GROUPS)?,
        };
        Ok(m.into_stream().boxed())
    }
}

#[derive(Debug, Clone)]
struct FakeSa {
    spec: SaSpec,
    current: LifetimeCur,
    stats: Stats,
}

/// The SPD key of the fake: (selector, dir, mark as (value, mask)).
type PolicyMapKey = (TrafficSelector, Dir, Option<(u32, u32)>);

#[derive(Debug, Default)]
struct FakeState {
    /// Keyed like the kernel's SAD: (dst, proto, spi).
    sas: HashMap<(IpAddr, u8, u32), FakeSa>,
    /// Keyed like the SPD: (selector, dir, mark).
    policies: HashMap<PolicyMapKey, PolicySpec>,
}

/// In-memory [`ChildSaBackend`] enforcing the kernel's invariants, with the
/// kernel's errno values in its errors (EEXIST, ENOENT).
#[derive(Debug)]
pub struct FakeBackend {
    state: Mutex<FakeState>,
    events: tokio::sync::broadcast::Sender<XfrmEvent>,
}

impl Default for FakeBackend {
    fn default() -> Self {
        Self::new()
    }
}

fn kerr(errno: i32) -> NetlinkError {
    NetlinkError::Kernel(KernelError {
        errno,
        ext_ack: None,
    })
}

fn sa_key(s: &SaSpec) -> (IpAddr, u8, u32) {
    (s.dst, s.proto.to_raw(), s.spi)
}

fn sa_info(s: &FakeSa) -> SaInfo {
    let (info, attrs) = s.spec.to_raw().unwrap_or_default();
    let mut i = SaInfo::from_raw(&info, &attrs);
    i.current = s.current;
    i.stats = s.stats;
    i
}

impl FakeBackend {
    /// An empty SAD and SPD.
    pub fn new() -> Self {
        Self {
            state: Mutex::new(FakeState::default()),
            events: tokio::sync::broadcast::channel(1024).0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn emit(&self, e: XfrmEvent) {
        let _ = self.events.send(e);
    }

    /// Account traffic on a pair, as the kernel would when packets flow.
    pub fn record_traffic(
        &self,
        h: &ChildSaHandle,
        out_bytes: u64,
        in_bytes: u64,
    ) -> Result<(), Error> {
        let mut st = self.lock();
        for (k, bytes) in [(h.out_key(), out_bytes), (h.in_key(), in_bytes)] {
            let sa = st
                .sas
                .get_mut(&(k.dst, k.proto.to_raw(), k.spi))
                .ok_or_else(|| no_such_sa(&k))?;
            sa.current.bytes += bytes;
            sa.current.packets += 1;
        }
        Ok(())
    }

    /// Number of SAs and policies held (for tests).
    pub fn len(&self) -> (usize, usize) {
        let st = self.lock();
        (st.sas.len(), st.policies.len())
    }

    /// The policies held, in no particular order (for tests).
    pub fn policies(&self) -> Vec<PolicySpec> {
        self.lock().policies.values().cloned().collect()
    }

    /// The SAs held, in no particular order, keys left out (for tests).
    pub fn sas(&self) -> Vec<SaInfo> {
        self.lock().sas.values().map(sa_info).collect()
    }

    /// Whether no SA and no policy is held.
    pub fn is_empty(&self) -> bool {
        self.len() == (0, 0)
    }

    fn install(&self, spec: &ChildSaSpec) -> Result<ChildSaHandle, Error> {
        spec.check()?;
        let h = handle_of(spec);
        let sas = sa_specs(spec);
        let pols = policy_specs(&h, spec.priority);
        let mut st = self.lock();
        for (i, s) in sas.iter().enumerate() {
            let dup_in_pair = i == 1 && sa_key(&sas[0]) == sa_key(s);
            if st.sas.contains_key(&sa_key(s)) || dup_in_pair {
                return Err(Error::AddSa {
                    spi: s.spi,
                    dst: s.dst,
                    source: kerr(libc::EEXIST),
                });
            }
            s.to_raw()?;
        }
        for p in &pols {
            if st
                .policies
                .contains_key(&(p.selector, p.dir, p.mark.map(|m| (m.value, m.mask))))
            {
                return Err(Error::AddPolicy {
                    dir: p.dir,
                    selector: p.selector,
                    source: kerr(libc::EEXIST),
                });
            }
        }
        let mut ev = Vec::new();
        for s in sas {
            let fs = FakeSa {
                spec: s.clone(),
                current: LifetimeCur::default(),
                stats: Stats::default(),
            };
            ev.push(XfrmEvent::SaAdded { sa: sa_info(&fs) });
            st.sas.insert(sa_key(&s), fs);
        }
        for p in pols {
            let (i, a) = p.to_raw();
            ev.push(XfrmEvent::PolicyAdded {
                policy: PolicyInfo::from_raw(&i, &a),
            });
            st.policies
                .insert((p.selector, p.dir, p.mark.map(|m| (m.value, m.mask))), p);
        }
        drop(st);
        ev.into_iter().for_each(|e| self.emit(e));
        Ok(h)
    }

    fn migrate(
        &self,
        h: &ChildSaHandle,
        to: OuterPair,
        encap: Option<Encap>,
    ) -> Result<ChildSaHandle, Error> {
        if h.outer.local.is_ipv4() != h.outer.remote.is_ipv4()
            || to.local.is_ipv4() != to.remote.is_ipv4()
        {
            return Err(Error::Invalid("outer pair of mixed families".into()));
        }
        check_selectors(&h.selectors)?;
        let Some(first) = h.selectors.first() else {
            return Err(SelectorError::Empty.into());
        };
        // The SA errors name the first policy of the direction (the one
        // whose MIGRATE moves that SA).
        let sa_err = |i: usize, errno| {
            let dir = if i == 0 { Dir::Out } else { Dir::In };
            Error::Migrate {
                dir,
                selector: h.policy_key(first, dir).selector,
                source: kerr(errno),
            }
        };
        let mut st = self.lock();
        let (ok, ik) = (h.out_key(), h.in_key());
        let oldk = [(ok.dst, 50u8, ok.spi), (ik.dst, 50u8, ik.spi)];
        let newk = [(to.remote, 50u8, h.spi_out), (to.local, 50u8, h.spi_in)];
        for (i, k) in oldk.iter().enumerate() {
            if !st.sas.contains_key(k) {
                return Err(sa_err(i, libc::ENOENT));
            }
        }
        // The kernel cannot add the moved SA where one exists already:
        // xfrm_migrate rolls back and returns ENODATA.
        for (i, k) in newk.iter().enumerate() {
            if !oldk.contains(k) && st.sas.contains_key(k) {
                return Err(sa_err(i, libc::ENODATA));
            }
        }
        // Every policy of every selector pair must be there: the kernel
        // refuses the MIGRATE of a missing one (ENOENT), and the backend
        // rolls back the ones before it.
        for key in h.policy_keys() {
            if !st.policies.contains_key(&(
                key.selector,
                key.dir,
                key.mark.map(|m| (m.value, m.mask)),
            )) {
                return Err(Error::Migrate {
                    dir: key.dir,
                    selector: key.selector,
                    source: kerr(libc::ENOENT),
                });
            }
        }
        let mut moved: Vec<FakeSa> = oldk.iter().filter_map(|k| st.sas.remove(k)).collect();
        if let [out, inb] = moved.as_mut_slice() {
            out.spec.src = to.local;
            out.spec.dst = to.remote;
            inb.spec.src = to.remote;
            inb.spec.dst = to.local;
            out.spec.encap = encap;
            inb.spec.encap = encap.map(|e| e.reversed());
        }
        for (k, s) in newk.iter().zip(moved) {
            st.sas.insert(*k, s);
        }
        let mut n = h.clone();
        n.outer = to;
        n.encap = encap;
        for p in policy_specs(&n, 0) {
            if let Some(old) =
                st.policies
                    .get_mut(&(p.selector, p.dir, p.mark.map(|m| (m.value, m.mask))))
            {
                old.templates = p.templates;
            }
        }
        drop(st);
        for m in migrate_specs(h, to, encap) {
            self.emit(XfrmEvent::Migrate {
                selector: Some(m.selector),
                dir: Some(m.dir),
                entries: m.entries,
                kmaddress: m.kmaddress,
                encap: m.encap,
            });
        }
        Ok(n)
    }

    fn delete(&self, h: &ChildSaHandle) -> Result<(), Error> {
        let mut st = self.lock();
        let mut first = None;
        let mut ev = Vec::new();
        for key in h.policy_keys() {
            match st
                .policies
                .remove(&(key.selector, key.dir, key.mark.map(|m| (m.value, m.mask))))
            {
                Some(_) => ev.push(XfrmEvent::PolicyDeleted {
                    selector: Some(key.selector),
                    dir: Some(key.dir),
                    index: 0,
                }),
                None => {
                    first.get_or_insert(Error::DeletePolicy {
                        dir: key.dir,
                        selector: key.selector,
                        source: kerr(libc::ENOENT),
                    });
                }
            }
        }
        for k in [h.out_key(), h.in_key()] {
            match st.sas.remove(&(k.dst, k.proto.to_raw(), k.spi)) {
                Some(s) => ev.push(XfrmEvent::SaDeleted {
                    dst: Some(k.dst),
                    spi: k.spi,
                    proto: k.proto.to_raw(),
                    sa: Some(sa_info(&s)),
                }),
                None => {
                    first.get_or_insert(Error::DeleteSa {
                        spi: k.spi,
                        dst: k.dst,
                        source: kerr(libc::ESRCH),
                    });
                }
            }
        }
        drop(st);
        ev.into_iter().for_each(|e| self.emit(e));
        first.map_or(Ok(()), Err)
    }

    fn read_counters(&self, h: &ChildSaHandle) -> Result<ChildSaCounters, Error> {
        let st = self.lock();
        let get = |k: SaKey| {
            st.sas
                .get(&(k.dst, k.proto.to_raw(), k.spi))
                .cloned()
                .ok_or_else(|| no_such_sa(&k))
        };
        let out = get(h.out_key())?;
        let inb = get(h.in_key())?;
        Ok(ChildSaCounters::of(out.current, inb.current, inb.stats))
    }
}

impl ChildSaBackend for FakeBackend {
    fn install_child_sa<'a>(&'a self, spec: &'a ChildSaSpec) -> BoxFut<'a, ChildSaHandle> {
        Box::pin(std::future::ready(self.install(spec)))
    }
    fn migrate_child_sa<'a>(
        &'a self,
        handle: &'a ChildSaHandle,
        to: OuterPair,
        encap: Option<Encap>,
    ) -> BoxFut<'a, ChildSaHandle> {
        Box::pin(std::future::ready(self.migrate(handle, to, encap)))
    }
    fn delete_child_sa<'a>(&'a self, handle: &'a ChildSaHandle) -> BoxFut<'a, ()> {
        Box::pin(std::future::ready(self.delete(handle)))
    }
    fn counters<'a>(&'a self, handle: &'a ChildSaHandle) -> BoxFut<'a, ChildSaCounters> {
        Box::pin(std::future::ready(self.read_counters(handle)))
    }
    fn events(&self) -> Result<BoxStream<'static, Result<XfrmEvent, Error>>, Error> {
        let rx = self.events.subscribe();
        Ok(futures::stream::unfold(rx, |mut rx| async move {
            match rx.recv().await {
                Ok(e) => Some((Ok(e), rx)),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    Some((Err(Error::MonitorOverrun), rx))
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => None,
            }
        })
        .boxed())
    }
}
