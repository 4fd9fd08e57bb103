//! [`FakeBackend`]: the CHILD_SA operations in memory, for the agent's
//! tests without root or a kernel. It keeps an SAD and an SPD keyed like
//! the kernel's, enforces the kernel's invariants with the kernel's errno
//! values, keeps counters across a move, and emits the events the kernel
//! would.

use std::collections::HashMap;
use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::sync::Mutex;

use futures::StreamExt;
use futures::stream::BoxStream;

use super::spec::{
    adopts_copy, handle_of, kerr, migrate_specs, no_such_sa, policy_specs, sa_specs,
};
use super::{BoxFut, ChildSaBackend, ChildSaCounters, ChildSaHandle, ChildSaSpec, Leftovers};
use crate::codec::{LifetimeCur, Stats};
use crate::error::Error;
use crate::handle::SaKey;
use crate::monitor::XfrmEvent;
use crate::selector::{SelectorError, check_selectors};
use crate::types::{
    Dir, Encap, OuterPair, PolicyInfo, PolicySpec, SaInfo, SaSpec, TrafficSelector,
};

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

    /// Puts an SA and policies into the fake's SAD and SPD as another
    /// process (or an earlier run) would have left them (for tests).
    pub fn insert_raw(&self, sas: &[SaSpec], policies: &[PolicySpec]) {
        let mut st = self.lock();
        for s in sas {
            st.sas.insert(
                sa_key(s),
                FakeSa {
                    spec: s.clone(),
                    current: LifetimeCur::default(),
                    stats: Stats::default(),
                },
            );
        }
        for p in policies {
            st.policies.insert(
                (p.selector, p.dir, p.mark.map(|m| (m.value, m.mask))),
                p.clone(),
            );
        }
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
        // A copy of the inbound SA at the new local address becomes the
        // inbound SA (the old one is deleted, not moved); one elsewhere
        // goes first, as in the kernel backend.
        let adopt = adopts_copy(h, to);
        if let (false, Some(c)) = (adopt, h.in_copy_key()) {
            st.sas.remove(&(c.dst, 50u8, c.spi));
        }
        for (i, k) in oldk.iter().enumerate() {
            let replaced_by_copy = adopt && i == 1;
            if !(replaced_by_copy || st.sas.contains_key(k)) {
                return Err(sa_err(i, libc::ENOENT));
            }
        }
        // The kernel cannot add the moved SA where one exists already:
        // xfrm_migrate rolls back and returns ENODATA.
        for (i, k) in newk.iter().enumerate() {
            if !oldk.contains(k) && st.sas.contains_key(k) && !(adopt && i == 1) {
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
        let inbound_from = if adopt {
            st.sas.remove(&oldk[1]);
            newk[1]
        } else {
            oldk[1]
        };
        let mut moved: Vec<FakeSa> = [oldk[0], inbound_from]
            .iter()
            .filter_map(|k| st.sas.remove(k))
            .collect();
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
        n.inbound_copy = None;
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
        if let Some(k) = h.in_copy_key()
            && let Some(s) = st.sas.remove(&(k.dst, k.proto.to_raw(), k.spi))
        {
            ev.push(XfrmEvent::SaDeleted {
                dst: Some(k.dst),
                spi: k.spi,
                proto: k.proto.to_raw(),
                sa: Some(sa_info(&s)),
            });
        }
        drop(st);
        ev.into_iter().for_each(|e| self.emit(e));
        first.map_or(Ok(()), Err)
    }

    fn add_copy(&self, h: &ChildSaHandle, local: IpAddr) -> Result<ChildSaHandle, Error> {
        let mut n = self.remove_copy(h)?;
        if local == h.outer.local {
            return Ok(n);
        }
        let k = h.in_key();
        let mut st = self.lock();
        if local.is_ipv4() != k.dst.is_ipv4() {
            return Err(Error::Invalid(format!(
                "copy of the SA at {} to {local}: another address family",
                k.dst
            )));
        }
        let mut copy = st
            .sas
            .get(&(k.dst, k.proto.to_raw(), k.spi))
            .cloned()
            .ok_or_else(|| no_such_sa(&k))?;
        let key = (local, k.proto.to_raw(), k.spi);
        if st.sas.contains_key(&key) {
            return Err(Error::AddSa {
                spi: k.spi,
                dst: local,
                source: kerr(libc::EEXIST),
            });
        }
        copy.spec.dst = local;
        let ev = XfrmEvent::SaAdded { sa: sa_info(&copy) };
        st.sas.insert(key, copy);
        drop(st);
        self.emit(ev);
        n.inbound_copy = Some(local);
        Ok(n)
    }

    fn remove_copy(&self, h: &ChildSaHandle) -> Result<ChildSaHandle, Error> {
        let mut n = h.clone();
        n.inbound_copy = None;
        if let Some(k) = h.in_copy_key() {
            // Gone already (expired, flushed): nothing to remove.
            let gone = self.lock().sas.remove(&(k.dst, k.proto.to_raw(), k.spi));
            if let Some(s) = gone {
                self.emit(XfrmEvent::SaDeleted {
                    dst: Some(k.dst),
                    spi: k.spi,
                    proto: k.proto.to_raw(),
                    sa: Some(sa_info(&s)),
                });
            }
        }
        Ok(n)
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
    fn add_inbound_copy<'a>(
        &'a self,
        handle: &'a ChildSaHandle,
        local: IpAddr,
    ) -> BoxFut<'a, ChildSaHandle> {
        Box::pin(std::future::ready(self.add_copy(handle, local)))
    }
    fn remove_inbound_copy<'a>(&'a self, handle: &'a ChildSaHandle) -> BoxFut<'a, ChildSaHandle> {
        Box::pin(std::future::ready(self.remove_copy(handle)))
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
    fn remove_leftovers<'a>(&'a self, reqids: RangeInclusive<u32>) -> BoxFut<'a, Leftovers> {
        let mut st = self.lock();
        let (sas, policies) = (st.sas.len(), st.policies.len());
        st.sas.retain(|_, sa| !reqids.contains(&sa.spec.reqid));
        st.policies
            .retain(|_, p| !p.templates.iter().any(|t| reqids.contains(&t.reqid)));
        let gone = Leftovers {
            sas: sas - st.sas.len(),
            policies: policies - st.policies.len(),
        };
        Box::pin(std::future::ready(Ok(gone)))
    }
}
