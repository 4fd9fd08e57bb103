//! [`KernelBackend`]: the CHILD_SA operations over XFRM netlink, through
//! an [`XfrmHandle`] (SAs and policies, MIGRATE) and an [`XfrmMonitor`]
//! (events), in the calling thread's network namespace or a named one.
//! On failure it undoes what it did, as far as the kernel allows.

use std::collections::HashMap;
use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::path::PathBuf;

use futures::StreamExt;
use futures::stream::BoxStream;

use super::spec::{adopts_copy, handle_of, migrate_specs, no_such_sa, policy_specs, sa_specs};
use super::{
    BoxFut, ChildSaBackend, ChildSaCounters, ChildSaHandle, ChildSaSpec, Leftovers, ManyCounters,
};
use crate::error::Error;
use crate::handle::{PolicyKey, SaKey, XfrmHandle};
use crate::monitor::{ALL_GROUPS, KEY_MANAGER_GROUPS, XfrmEvent, XfrmMonitor};
use crate::selector::check_selectors;
use crate::types::{Encap, OuterPair, Proto, SaInfo};

/// Deleting what is gone already is no error.
fn ignore_gone(r: Result<(), Error>) -> Result<(), Error> {
    match r {
        Err(e) if e.is_gone() => Ok(()),
        r => r,
    }
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

    /// The events of `groups`, in our network namespace.
    fn monitor(
        &self,
        groups: &[u32],
    ) -> Result<BoxStream<'static, Result<XfrmEvent, Error>>, Error> {
        let m = match &self.netns {
            Some(p) => XfrmMonitor::open_in(p, groups)?,
            None => XfrmMonitor::open(groups)?,
        };
        Ok(m.into_stream().boxed())
    }

    /// [`ChildSaBackend::remove_leftovers`]: one dump of the SAD and one
    /// of the SPD, then a delete for each entry of a reqid in `reqids`.
    async fn remove_reqids(&self, reqids: RangeInclusive<u32>) -> Result<Leftovers, Error> {
        let mut gone = Leftovers::default();
        let mut first_err: Option<Error> = None;
        let mut note = |r: Result<(), Error>, n: &mut usize| match ignore_gone(r) {
            Ok(()) => *n += 1,
            Err(e) => {
                first_err.get_or_insert(e);
            }
        };
        for sa in self.handle.state().dump().await? {
            let (Some(dst), Some(proto)) = (sa.dst, Proto::from_raw(sa.proto)) else {
                continue;
            };
            if !reqids.contains(&sa.reqid) {
                continue;
            }
            let key = SaKey {
                dst,
                spi: sa.spi,
                proto,
                mark: sa.mark,
            };
            note(self.handle.state().delete(&key).await, &mut gone.sas);
        }
        for p in self.handle.policy().dump().await? {
            let (Some(selector), Some(dir)) = (p.selector, p.dir) else {
                continue;
            };
            if !p.templates.iter().any(|t| reqids.contains(&t.reqid)) {
                continue;
            }
            let key = PolicyKey {
                selector,
                dir,
                mark: p.mark,
                if_id: p.if_id,
            };
            note(self.handle.policy().delete(&key).await, &mut gone.policies);
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(gone),
        }
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
        let adopt = adopts_copy(h, to);
        let h = &if adopt {
            // The copy becomes the inbound SA. The kernel cannot move the
            // old one onto it (xfrm_state_add: EEXIST, MIGRATE: ENODATA),
            // so it goes, and the MIGRATE of the inbound policies finds no
            // SA at the old addresses and moves their templates only.
            ignore_gone(self.handle.state().delete(&h.in_key()).await)?;
            h.clone()
        } else {
            self.remove_copy(h).await?
        };
        let steps = migrate_specs(h, to, encap);
        for (i, m) in steps.iter().enumerate() {
            let started = std::time::Instant::now();
            let r = self.handle.migrate(m).await;
            tracing::debug!(dir = ?m.dir, took = ?started.elapsed(), ok = r.is_ok(), "XFRM_MSG_MIGRATE");
            if let Err(e) = r {
                // The kernel rolled back this call; undo the earlier ones
                // (last first) so the SAs and policies are never split
                // across two address pairs.
                let mut moved = h.clone();
                moved.outer = to;
                for back in migrate_specs(&moved, h.outer, h.encap).iter().take(i).rev() {
                    let _ = self.handle.migrate(back).await;
                }
                if adopt {
                    // The inbound SA at the old address again, from the
                    // copy (which stays).
                    let _ = self
                        .handle
                        .state()
                        .copy_to(&moved.in_key(), h.outer.local)
                        .await;
                }
                return Err(e);
            }
        }
        let mut n = h.clone();
        n.outer = to;
        n.encap = encap;
        n.inbound_copy = None;
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

    async fn add_copy(&self, h: &ChildSaHandle, local: IpAddr) -> Result<ChildSaHandle, Error> {
        let mut n = self.remove_copy(h).await?;
        if local != h.outer.local {
            self.handle.state().copy_to(&h.in_key(), local).await?;
            n.inbound_copy = Some(local);
        }
        Ok(n)
    }

    async fn remove_copy(&self, h: &ChildSaHandle) -> Result<ChildSaHandle, Error> {
        if let Some(k) = h.in_copy_key() {
            ignore_gone(self.handle.state().delete(&k).await)?;
        }
        Ok(ChildSaHandle {
            inbound_copy: None,
            ..h.clone()
        })
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
        if let Some(k) = h.in_copy_key()
            && let Err(e) = ignore_gone(self.handle.state().delete(&k).await)
        {
            first.get_or_insert(e);
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
    fn add_inbound_copy<'a>(
        &'a self,
        handle: &'a ChildSaHandle,
        local: IpAddr,
    ) -> BoxFut<'a, ChildSaHandle> {
        Box::pin(self.add_copy(handle, local))
    }
    fn remove_inbound_copy<'a>(&'a self, handle: &'a ChildSaHandle) -> BoxFut<'a, ChildSaHandle> {
        Box::pin(self.remove_copy(handle))
    }
    fn counters<'a>(&'a self, handle: &'a ChildSaHandle) -> BoxFut<'a, ChildSaCounters> {
        Box::pin(self.read_counters(handle))
    }
    fn counters_of<'a>(&'a self, handles: &'a [ChildSaHandle]) -> ManyCounters<'a> {
        Box::pin(self.read_counters_of(handles))
    }
    fn remove_leftovers<'a>(&'a self, reqids: RangeInclusive<u32>) -> BoxFut<'a, Leftovers> {
        Box::pin(self.remove_reqids(reqids))
    }
    fn events(&self) -> Result<BoxStream<'static, Result<XfrmEvent, Error>>, Error> {
        self.monitor(ALL_GROUPS)
    }
    fn key_manager_events(&self) -> Result<BoxStream<'static, Result<XfrmEvent, Error>>, Error> {
        self.monitor(KEY_MANAGER_GROUPS)
    }
}
