//! What the MOBIKE agent asks of the kernel, as one trait: install a
//! CHILD_SA pair with its policies, move it to a new outer address pair
//! (RFC 4555 §3.5 "Updating Address Set"), delete it, read its counters and
//! follow kernel events. [`KernelBackend`] does it with XFRM netlink,
//! [`FakeBackend`] in memory with the same invariants (unique SPI per
//! destination and protocol, migrating a missing SA fails, counters survive
//! a move) so the agent's tests run without root or a kernel.
//!
//! Not here: IKE, key derivation, rekeying policy, choosing addresses.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
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

fn default_replay() -> u32 {
    32
}

/// Everything needed to install one CHILD_SA pair (RFC 7296 §2.17 keys,
/// §2.9 traffic selectors) and its policies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildSaSpec {
    /// Outer addresses (ours, the peer's).
    pub outer: OuterPair,
    /// Our side's traffic selector.
    pub local_ts: Prefix,
    /// The peer's traffic selector.
    pub remote_ts: Prefix,
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

/// Names an installed CHILD_SA pair; returned by install and migrate.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChildSaHandle {
    /// Current outer addresses.
    pub outer: OuterPair,
    /// Our traffic selector.
    pub local_ts: Prefix,
    /// The peer's traffic selector.
    pub remote_ts: Prefix,
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

impl ChildSaHandle {
    fn out_key(&self) -> SaKey {
        SaKey {
            dst: self.outer.remote,
            spi: self.spi_out,
            proto: Proto::Esp,
            mark: self.mark,
        }
    }
    fn in_key(&self) -> SaKey {
        SaKey {
            dst: self.outer.local,
            spi: self.spi_in,
            proto: Proto::Esp,
            mark: self.mark,
        }
    }
    fn out_sel(&self) -> TrafficSelector {
        TrafficSelector::new(self.local_ts, self.remote_ts)
    }
    fn policy_dirs(&self) -> &'static [Dir] {
        match self.mode {
            Mode::Transport => &[Dir::Out, Dir::In],
            _ => &[Dir::Out, Dir::In, Dir::Fwd],
        }
    }
    fn policy_key(&self, dir: Dir) -> PolicyKey {
        let sel = self.out_sel();
        PolicyKey {
            selector: if dir == Dir::Out { sel } else { sel.reversed() },
            dir,
            mark: self.mark,
            if_id: self.if_id,
        }
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

/// The kernel operations the MOBIKE agent needs.
pub trait ChildSaBackend: Send + Sync {
    /// Install the outbound and inbound SA and the out/in(/fwd) policies.
    /// All or nothing: on failure what was installed is removed again.
    fn install_child_sa<'a>(&'a self, spec: &'a ChildSaSpec) -> BoxFut<'a, ChildSaHandle>;
    /// Move both SAs and their policies to `to`, optionally with new UDP
    /// encapsulation (our view). Returns the updated handle.
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
    fn events(&self) -> Result<BoxStream<'static, Result<XfrmEvent, Error>>, Error> {
        (**self).events()
    }
}

impl ChildSaSpec {
    /// The outbound and inbound SA this pair consists of.
    pub fn sa_specs(&self) -> [SaSpec; 2] {
        sa_specs(self)
    }
    /// The policies (out, in and, except in transport mode, fwd) for the
    /// pair at outer addresses `outer`.
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
    let out_sel = TrafficSelector::new(spec.local_ts, spec.remote_ts);
    let common = |src, dst, spi, crypto: &Crypto, sel, encap| SaSpec {
        src,
        dst,
        spi,
        proto: Proto::Esp,
        mode: spec.mode,
        reqid: spec.reqid,
        crypto: crypto.clone(),
        selector: Some(sel),
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
            out_sel.reversed(),
            spec.encap.map(Encap::reversed),
        ),
    ]
}

fn handle_of(spec: &ChildSaSpec) -> ChildSaHandle {
    ChildSaHandle {
        outer: spec.outer,
        local_ts: spec.local_ts,
        remote_ts: spec.remote_ts,
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
    h.policy_dirs()
        .iter()
        .map(|dir| {
            let (src, dst) = if *dir == Dir::Out {
                (h.outer.local, h.outer.remote)
            } else {
                (h.outer.remote, h.outer.local)
            };
            PolicySpec {
                selector: h.policy_key(*dir).selector,
                dir: *dir,
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

/// The MIGRATE calls that move `h` to `to`: one per policy direction, each
/// carrying the SA that direction uses.
fn migrate_specs(h: &ChildSaHandle, to: OuterPair, encap: Option<Encap>) -> Vec<MigrateSpec> {
    PairMove {
        selector: h.out_sel(),
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
        let h = handle_of(spec);
        let [out, inb] = sa_specs(spec);
        self.handle.state().add(&out).await?;
        if let Err(e) = self.handle.state().add(&inb).await {
            let _ = self.handle.state().delete(&h.out_key()).await;
            return Err(e);
        }
        let mut done = Vec::new();
        for p in policy_specs(&h, spec.priority) {
            if let Err(e) = self.handle.policy().add(&p).await {
                for d in done {
                    let _ = self.handle.policy().delete(&h.policy_key(d)).await;
                }
                let _ = self.handle.state().delete(&h.out_key()).await;
                let _ = self.handle.state().delete(&h.in_key()).await;
                return Err(e);
            }
            done.push(p.dir);
        }
        Ok(h)
    }

    async fn migrate(
        &self,
        h: &ChildSaHandle,
        to: OuterPair,
        encap: Option<Encap>,
    ) -> Result<ChildSaHandle, Error> {
        let steps = migrate_specs(h, to, encap);
        for (i, m) in steps.iter().enumerate() {
            if let Err(e) = self.handle.migrate(m).await {
                // The kernel rolled back this call; undo the earlier ones so
                // the pair is never split across two address pairs.
                let mut moved = h.clone();
                moved.outer = to;
                for back in migrate_specs(&moved, h.outer, h.encap).iter().take(i) {
                    let _ = self.handle.migrate(back).await;
                }
                return Err(e);
            }
        }
        let mut n = h.clone();
        n.outer = to;
        if encap.is_some() {
            n.encap = encap;
        }
        Ok(n)
    }

    async fn delete(&self, h: &ChildSaHandle) -> Result<(), Error> {
        let mut first = None;
        for d in h.policy_dirs() {
            if let Err(e) = self.handle.policy().delete(&h.policy_key(*d)).await {
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
        Ok(ChildSaCounters {
            outbound: out.current,
            inbound: inb.current,
            inbound_stats: inb.stats,
        })
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
                .ok_or_else(|| Error::GetSa {
                    spi: k.spi,
                    dst: k.dst,
                    source: kerr(libc::ESRCH),
                })?;
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

    /// Whether no SA and no policy is held.
    pub fn is_empty(&self) -> bool {
        self.len() == (0, 0)
    }

    fn install(&self, spec: &ChildSaSpec) -> Result<ChildSaHandle, Error> {
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
        let mut st = self.lock();
        let (ok, ik) = (h.out_key(), h.in_key());
        let oldk = [(ok.dst, 50u8, ok.spi), (ik.dst, 50u8, ik.spi)];
        let newk = [(to.remote, 50u8, h.spi_out), (to.local, 50u8, h.spi_in)];
        for (i, k) in oldk.iter().enumerate() {
            if !st.sas.contains_key(k) {
                return Err(Error::Migrate {
                    dir: if i == 0 { Dir::Out } else { Dir::In },
                    source: kerr(libc::ENOENT),
                });
            }
        }
        // The kernel cannot add the moved SA where one exists already:
        // xfrm_migrate rolls back and returns ENODATA.
        for (i, k) in newk.iter().enumerate() {
            if !oldk.contains(k) && st.sas.contains_key(k) {
                return Err(Error::Migrate {
                    dir: if i == 0 { Dir::Out } else { Dir::In },
                    source: kerr(libc::ENODATA),
                });
            }
        }
        for d in h.policy_dirs() {
            let key = h.policy_key(*d);
            if !st
                .policies
                .contains_key(&(key.selector, *d, key.mark.map(|m| (m.value, m.mask))))
            {
                return Err(Error::Migrate {
                    dir: *d,
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
            if let Some(e) = encap {
                out.spec.encap = Some(e);
                inb.spec.encap = Some(e.reversed());
            }
        }
        for (k, s) in newk.iter().zip(moved) {
            st.sas.insert(*k, s);
        }
        let mut n = h.clone();
        n.outer = to;
        if encap.is_some() {
            n.encap = encap;
        }
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
        for d in h.policy_dirs() {
            let key = h.policy_key(*d);
            match st
                .policies
                .remove(&(key.selector, *d, key.mark.map(|m| (m.value, m.mask))))
            {
                Some(_) => ev.push(XfrmEvent::PolicyDeleted {
                    selector: Some(key.selector),
                    dir: Some(*d),
                    index: 0,
                }),
                None => {
                    first.get_or_insert(Error::DeletePolicy {
                        dir: *d,
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
                .ok_or(Error::GetSa {
                    spi: k.spi,
                    dst: k.dst,
                    source: kerr(libc::ESRCH),
                })
        };
        let out = get(h.out_key())?;
        let inb = get(h.in_key())?;
        Ok(ChildSaCounters {
            outbound: out.current,
            inbound: inb.current,
            inbound_stats: inb.stats,
        })
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
