//! Applies the engine's [`KernelAction`]s to a [`ChildSaBackend`]
//! (ipsec-backend): [`child_sa_spec`] maps an install action to a
//! [`ChildSaSpec`] (a pure function), [`Kernel`] remembers the installed
//! pairs so later migrate and delete actions find their handles, and every
//! applied action yields one [`KernelEvent`] (failures included: a kernel
//! error never stops the agent).
//!
//! Policies belong to a reqid and are shared by the CHILD_SAs that replace
//! each other on rekey: the first pair of a reqid is installed with its
//! policies through the trait, later pairs of the same reqid add only their
//! SAs (XFRM state calls, kernel backend only), and the policies go when the
//! engine says no CHILD_SA uses them any more.
//!
//! Traffic selectors (RFC 7296 §2.9): the engine's negotiated lists, N
//! local (TSi for the initiator) and M remote, become every local × remote
//! combination of one address family, one [`SelectorPair`] each, and
//! ipsec-backend installs an out/in/fwd policy set per pair (as strongSwan's
//! kernel-netlink does); combinations of different families are skipped.
//! Not supported (a [`MapError`] naming the selector): selectors that are
//! not one address prefix for any protocol and port (an address range
//! such as 10.1.0.1-10.1.0.9, or a port or protocol restriction), since the
//! kernel's policy selector is one prefix per side here.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

use ipsec_backend::{
    ChildSaBackend, ChildSaCounters, ChildSaHandle, ChildSaSpec, SelectorPair, XfrmEvent,
    XfrmHandle,
    codec::LifetimeCfg,
    types::{Crypto, Encap, Mode as XfrmMode, OuterPair, Prefix},
};

use crate::{
    crypto::Aead,
    engine::{ChildLimits, ChildSaInstall, KernelAction, Mode, SaId, UdpEncap},
    proto::TrafficSelector,
};

/// Why an install action cannot be expressed as a [`ChildSaSpec`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    /// A side has no traffic selector.
    #[error("no {0} traffic selector")]
    NoSelector(&'static str),
    /// No local selector has a remote one of the same address family, so
    /// no policy could be installed (RFC 7296 §2.9: the lists may mix IPv4
    /// and IPv6; a pair is of one family).
    #[error(
        "no local and remote traffic selectors of one address family: local {}, remote {}",
        prefix_list(.local),
        prefix_list(.remote)
    )]
    NoPairOfOneFamily {
        /// The local selectors.
        local: Vec<Prefix>,
        /// The remote selectors.
        remote: Vec<Prefix>,
    },
    /// The selector is not one address prefix for any protocol and port.
    #[error("{side} traffic selector {start}-{end} is not a single prefix for any protocol/port")]
    NotPrefix {
        /// `local` or `remote`.
        side: &'static str,
        /// Start address.
        start: IpAddr,
        /// End address.
        end: IpAddr,
    },
}

/// Why a kernel action failed.
#[derive(Debug, thiserror::Error)]
pub enum KernelActionError {
    /// The action could not be mapped.
    #[error("cannot map the CHILD_SA to XFRM")]
    Map(#[from] MapError),
    /// The kernel (or fake) refused.
    #[error("kernel backend")]
    Backend(#[from] ipsec_backend::Error),
    /// Migrate or delete of a pair this runtime never installed.
    #[error("no installed CHILD_SA with reqid {reqid} and inbound SPI {inbound_spi:#010x}")]
    Unknown {
        /// Request id.
        reqid: u32,
        /// Inbound SPI.
        inbound_spi: u32,
    },
    /// A second pair of a reqid needs SA-only calls, which only the kernel
    /// backend has.
    #[error("SA-only install/delete needs the xfrm backend")]
    SaOnlyUnsupported,
}

/// The kind of a [`KernelAction`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelOp {
    /// Install a pair.
    Install,
    /// Move a pair.
    Migrate,
    /// Make a pair's inbound SA valid at another address too, or no more.
    PrepareInbound,
    /// Delete a pair.
    Delete,
}

/// What applying one action did.
#[derive(Debug)]
pub enum KernelEvent {
    /// Backend `none`: only logged.
    Logged(KernelAction),
    /// The pair (and, if first of its reqid, the policies) is installed.
    Installed {
        /// IKE SA.
        ike_sa: SaId,
        /// Handle.
        handle: ChildSaHandle,
        /// Policies were added with it.
        with_policies: bool,
    },
    /// The pair moved.
    Migrated {
        /// IKE SA.
        ike_sa: SaId,
        /// New handle.
        handle: ChildSaHandle,
    },
    /// The pair's inbound SA is valid at `handle.inbound_copy` too (a
    /// move under way), or (None) only at its own address again.
    InboundCopy {
        /// IKE SA.
        ike_sa: SaId,
        /// The handle naming the copy.
        handle: ChildSaHandle,
    },
    /// The pair is gone.
    Deleted {
        /// IKE SA.
        ike_sa: SaId,
        /// Handle it had.
        handle: ChildSaHandle,
    },
    /// Migrate or delete of a pair whose install had failed: nothing to
    /// do in the kernel (policies a failed pair was to share are removed
    /// when it was the last user).
    NotInstalled {
        /// IKE SA.
        ike_sa: SaId,
        /// Request id.
        reqid: u32,
        /// Inbound SPI.
        inbound_spi: u32,
    },
    /// The action failed; nothing else happens in the kernel (the runtime
    /// asks the engine to delete a CHILD_SA whose install failed).
    Failed {
        /// Which action.
        op: KernelOp,
        /// IKE SA, when known.
        ike_sa: Option<SaId>,
        /// Request id.
        reqid: u32,
        /// Inbound SPI.
        inbound_spi: u32,
        /// Why.
        error: KernelActionError,
    },
}

fn prefix_list(v: &[Prefix]) -> String {
    let items: Vec<String> = v.iter().map(Prefix::to_string).collect();
    format!("[{}]", items.join(", "))
}

/// One RFC 7296 §3.13.1 selector (an address range, a protocol, a port
/// range) as the prefix it must be here.
fn prefix_of(ts: &TrafficSelector, side: &'static str) -> Result<Prefix, MapError> {
    let not = || MapError::NotPrefix {
        side,
        start: ts.start_addr,
        end: ts.end_addr,
    };
    if ts.ip_protocol != 0 || ts.start_port != 0 || ts.end_port != u16::MAX {
        return Err(not());
    }
    let (start, end, bits): (u128, u128, u32) = match (ts.start_addr, ts.end_addr) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (u32::from(a).into(), u32::from(b).into(), 32),
        (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), 128),
        _ => return Err(not()),
    };
    let host = start ^ end;
    // host must be 0..01..1 with `start` all zero there, `end` all ones.
    if host & host.wrapping_add(1) != 0 || start & host != 0 || end & host != host {
        return Err(not());
    }
    let len = bits - (u128::BITS - host.leading_zeros());
    let addr = match ts.start_addr {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(start as u32)),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(start)),
    };
    Ok(Prefix {
        addr,
        len: len as u8,
    })
}

fn crypto_of(aead: Aead, key: &[u8]) -> Crypto {
    match aead {
        Aead::AesGcm16_128 | Aead::AesGcm16_256 => Crypto::aes_gcm(key),
        Aead::ChaCha20Poly1305 => Crypto::chacha20_poly1305(key),
    }
}

fn encap_of(e: Option<UdpEncap>) -> Option<Encap> {
    e.map(|e| Encap {
        sport: e.local_port,
        dport: e.remote_port,
    })
}

/// The [`ChildSaSpec`] for an install action: SPIs, AEAD keys (key | salt),
/// the traffic selector pairs (every local × remote selector of one address
/// family, RFC 7296 §2.9), tunnel mode, ESN and UDP encapsulation (our
/// ports) when a NAT was detected.
pub fn child_sa_spec(i: &ChildSaInstall) -> Result<ChildSaSpec, MapError> {
    let prefixes = |ts: &[TrafficSelector], side| {
        if ts.is_empty() {
            return Err(MapError::NoSelector(side));
        }
        ts.iter()
            .map(|t| prefix_of(t, side))
            .collect::<Result<Vec<_>, _>>()
    };
    let local = prefixes(&i.local_ts, "local")?;
    let remote = prefixes(&i.remote_ts, "remote")?;
    let selectors = SelectorPair::product(&local, &remote);
    if selectors.is_empty() {
        return Err(MapError::NoPairOfOneFamily { local, remote });
    }
    Ok(ChildSaSpec {
        outer: OuterPair {
            local: i.local,
            remote: i.remote,
        },
        selectors,
        mode: match i.mode {
            Mode::Tunnel => XfrmMode::Tunnel,
            Mode::Transport => XfrmMode::Transport,
        },
        reqid: i.reqid,
        spi_out: i.outbound.spi,
        spi_in: i.inbound.spi,
        crypto_out: crypto_of(i.outbound.aead, &i.outbound.key),
        crypto_in: crypto_of(i.inbound.aead, &i.inbound.key),
        encap: encap_of(i.encap),
        mark: None,
        if_id: None,
        replay_window: 32,
        esn: i.esn,
        priority: 0,
        lifetime: lifetime_of(&i.limits),
    })
}

/// The kernel's lifetime configuration for [`ChildLimits`]: soft byte and
/// packet limits (XFRM_MSG_EXPIRE, soft: rekey), hard byte, packet and age
/// limits (the kernel removes the SA). The soft age stays unset: the engine
/// times rekeys itself. None when no limit is set.
pub fn lifetime_of(l: &ChildLimits) -> Option<LifetimeCfg> {
    if *l == ChildLimits::default() {
        return None;
    }
    let mut c = LifetimeCfg::INFINITE;
    if let Some(b) = l.rekey_bytes {
        c.soft_byte_limit = b;
    }
    if let Some(b) = l.life_bytes {
        c.hard_byte_limit = b;
    }
    if let Some(p) = l.rekey_packets {
        c.soft_packet_limit = p;
    }
    if let Some(p) = l.life_packets {
        c.hard_packet_limit = p;
    }
    if let Some(t) = l.life_time {
        // 0 would mean "no limit" to the kernel.
        c.hard_add_expires_seconds = t.as_secs().max(1);
    }
    Some(c)
}

/// The kernel's XFRM events, as the backend delivers them.
pub type EventStream = futures::stream::BoxStream<'static, Result<XfrmEvent, ipsec_backend::Error>>;

#[derive(Debug, Clone)]
struct Installed {
    ike_sa: SaId,
    handle: ChildSaHandle,
    /// The kernel limits it was installed with (for [`Kernel::resync`]).
    lifetime: Option<LifetimeCfg>,
}

/// The runtime's kernel: a backend (or none) and the installed pairs.
pub struct Kernel {
    backend: Option<Box<dyn ChildSaBackend>>,
    sa_only: Option<XfrmHandle>,
    /// By (reqid, inbound SPI).
    installed: HashMap<(u32, u32), Installed>,
    /// The handle whose install added the policies of a reqid.
    policies: HashMap<u32, ChildSaHandle>,
    /// Pairs whose install failed, by (reqid, inbound SPI): their later
    /// migrate and delete actions have nothing to do.
    failed: HashMap<(u32, u32), SaId>,
}

impl std::fmt::Debug for Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kernel")
            .field("backend", &self.backend.is_some())
            .field("installed", &self.installed.len())
            .finish()
    }
}

/// Deleting an SA or policy that is gone already is no error.
fn ignore_missing(r: Result<(), ipsec_backend::Error>) -> Result<(), ipsec_backend::Error> {
    match r {
        Err(e) if e.is_gone() => Ok(()),
        r => r,
    }
}

impl Kernel {
    /// Backend `none`: actions are only handed back as [`KernelEvent::Logged`].
    pub fn none() -> Self {
        Self {
            backend: None,
            sa_only: None,
            installed: HashMap::new(),
            policies: HashMap::new(),
            failed: HashMap::new(),
        }
    }

    /// Backend `xfrm` in the calling thread's network namespace.
    pub fn xfrm() -> Result<Self, ipsec_backend::Error> {
        let k = ipsec_backend::KernelBackend::new()?;
        let sa_only = Some(k.handle().clone());
        Ok(Self {
            sa_only,
            ..Self::with_backend(Box::new(k))
        })
    }

    /// Any backend (e.g. [`ipsec_backend::FakeBackend`]); without XFRM state
    /// calls, a second pair of a reqid cannot be installed.
    pub fn with_backend(backend: Box<dyn ChildSaBackend>) -> Self {
        Self {
            backend: Some(backend),
            ..Self::none()
        }
    }

    /// Removes the kernel SAs and policies of our reqids
    /// ([`crate::engine::REQIDS`]) that a killed run of the agent left
    /// behind; at start, before this run installs any. Nothing with the
    /// backend `none`.
    pub async fn remove_leftovers(&self) -> Result<ipsec_backend::Leftovers, ipsec_backend::Error> {
        match &self.backend {
            Some(b) => b.remove_leftovers(crate::engine::REQIDS).await,
            None => Ok(ipsec_backend::Leftovers::default()),
        }
    }

    /// Installed pairs (for status and tests).
    pub fn installed(&self) -> impl Iterator<Item = (SaId, &ChildSaHandle)> {
        self.installed.values().map(|i| (i.ike_sa, &i.handle))
    }

    /// The CHILD_SA (by our inbound SPI) an XFRM_MSG_EXPIRE is about, and
    /// whether the limit is hard; None for any other event, or an SA that
    /// is not one of ours (another daemon's, or one already deleted).
    pub fn expired_child(&self, event: &XfrmEvent) -> Option<(u32, bool)> {
        let XfrmEvent::SaExpire { sa, hard } = event else {
            return None;
        };
        self.installed.values().find_map(|i| {
            let ours = [i.handle.out_key(), i.handle.in_key()]
                .iter()
                .any(|k| k.spi == sa.spi && sa.dst == Some(k.dst) && k.proto.to_raw() == sa.proto);
            ours.then_some((i.handle.spi_in, *hard))
        })
    }

    /// The CHILD_SA (inbound SPI) whose peer the kernel saw at a new
    /// address or port (XFRM_MSG_MAPPING on a UDP-encapsulated inbound SA:
    /// ESP that verified came from there), and that address and port.
    pub fn mapped_child(&self, event: &XfrmEvent) -> Option<(u32, SocketAddr)> {
        let XfrmEvent::Mapping {
            dst,
            spi,
            new_src: Some(new_src),
            new_sport,
            ..
        } = event
        else {
            return None;
        };
        self.installed.values().find_map(|i| {
            let k = i.handle.in_key();
            (k.spi == *spi && *dst == Some(k.dst))
                .then_some((i.handle.spi_in, SocketAddr::new(*new_src, *new_sport)))
        })
    }

    /// The backend's kernel events the agent acts on (SA expires, NAT-T
    /// mappings: [`ChildSaBackend::key_manager_events`]); None with the
    /// backend `none`.
    pub fn events(&self) -> Option<Result<EventStream, ipsec_backend::Error>> {
        self.backend.as_ref().map(|b| b.key_manager_events())
    }

    /// After kernel events were lost (the event socket overran): the
    /// CHILD_SAs whose expire may have been among them, as (inbound SPI,
    /// hard), found by reading every installed pair's SAs again (one SA
    /// dump). A pair the kernel no longer has hit its hard limit (or was
    /// removed under us): hard, so the engine replaces it rather than
    /// leave a dead CHILD_SA until its next rekey. A pair past its soft
    /// byte or packet limit: soft, due for a rekey. A pair the kernel
    /// could not be asked about is left for the next event.
    pub async fn resync(&self) -> Vec<(u32, bool)> {
        let Some(backend) = &self.backend else {
            return Vec::new();
        };
        let (pairs, handles): (Vec<&Installed>, Vec<ChildSaHandle>) = self
            .installed
            .values()
            .map(|i| (i, i.handle.clone()))
            .unzip();
        let got = backend.counters_of(&handles).await;
        let mut out = Vec::new();
        for (i, r) in pairs.into_iter().zip(got) {
            match r {
                Err(e) if e.is_gone() => out.push((i.handle.spi_in, true)),
                Err(e) => {
                    tracing::warn!(inbound_spi = format_args!("{:#010x}", i.handle.spi_in),
                                   error = %errchain::chain(&e), "cannot read a CHILD_SA's state after lost kernel events");
                }
                Ok(c) => {
                    let Some(l) = i.lifetime else { continue };
                    let past = |cur: &ipsec_backend::codec::LifetimeCur| {
                        cur.bytes >= l.soft_byte_limit || cur.packets >= l.soft_packet_limit
                    };
                    if past(&c.outbound) || past(&c.inbound) {
                        out.push((i.handle.spi_in, false));
                    }
                }
            }
        }
        out
    }

    /// Whether the policies of `reqid` are installed (routes go with them).
    pub fn has_policies(&self, reqid: u32) -> bool {
        self.policies.contains_key(&reqid)
    }

    /// Reads the traffic counters of every installed pair, by (reqid,
    /// inbound SPI); empty with the backend `none`. A pair whose SAs the
    /// kernel no longer has comes back as an error, not left out.
    pub async fn counters(
        &self,
    ) -> HashMap<(u32, u32), Result<ChildSaCounters, ipsec_backend::Error>> {
        let Some(backend) = &self.backend else {
            return HashMap::new();
        };
        let (keys, handles): (Vec<(u32, u32)>, Vec<ChildSaHandle>) = self
            .installed
            .iter()
            .map(|(k, i)| (*k, i.handle.clone()))
            .unzip();
        // One SA dump for all of them (kernel backend), not two requests
        // per pair on the engine loop.
        let got = backend.counters_of(&handles).await;
        keys.into_iter().zip(got).collect()
    }

    /// Applies one action; never panics, failures come back as
    /// [`KernelEvent::Failed`].
    pub async fn apply(&mut self, action: KernelAction) -> KernelEvent {
        if self.backend.is_none() {
            return KernelEvent::Logged(action);
        }
        match action {
            KernelAction::InstallChildSa(i) => {
                let (reqid, inbound_spi) = (i.reqid, i.inbound.spi);
                match self.install(&i).await {
                    Ok(ev) => ev,
                    Err(error) => {
                        self.failed.insert((reqid, inbound_spi), i.ike_sa);
                        KernelEvent::Failed {
                            op: KernelOp::Install,
                            ike_sa: Some(i.ike_sa),
                            reqid,
                            inbound_spi,
                            error,
                        }
                    }
                }
            }
            KernelAction::MigrateChildSa {
                reqid,
                inbound_spi,
                to,
                encap,
                ..
            } => match self.failed.get(&(reqid, inbound_spi)) {
                Some(&ike_sa) => KernelEvent::NotInstalled {
                    ike_sa,
                    reqid,
                    inbound_spi,
                },
                None => self
                    .migrate(reqid, inbound_spi, to, encap)
                    .await
                    .unwrap_or_else(|error| {
                        self.failed(KernelOp::Migrate, reqid, inbound_spi, error)
                    }),
            },
            KernelAction::PrepareInbound {
                reqid,
                inbound_spi,
                local,
            } => match self.failed.get(&(reqid, inbound_spi)) {
                Some(&ike_sa) => KernelEvent::NotInstalled {
                    ike_sa,
                    reqid,
                    inbound_spi,
                },
                None => self
                    .prepare_inbound(reqid, inbound_spi, local)
                    .await
                    .unwrap_or_else(|error| {
                        self.failed(KernelOp::PrepareInbound, reqid, inbound_spi, error)
                    }),
            },
            KernelAction::DeleteChildSa {
                reqid,
                inbound_spi,
                remove_policies,
                ..
            } => match self.failed.remove(&(reqid, inbound_spi)) {
                Some(ike_sa) => {
                    self.forget_failed(reqid, remove_policies).await;
                    KernelEvent::NotInstalled {
                        ike_sa,
                        reqid,
                        inbound_spi,
                    }
                }
                None => self
                    .delete(reqid, inbound_spi, remove_policies)
                    .await
                    .unwrap_or_else(|error| {
                        self.failed(KernelOp::Delete, reqid, inbound_spi, error)
                    }),
            },
        }
    }

    /// A failed pair is deleted: when it was the last user of its reqid,
    /// the policies another (deleted) pair of the reqid installed go too.
    async fn forget_failed(&mut self, reqid: u32, remove_policies: bool) {
        if !remove_policies {
            return;
        }
        if let (Some(owner), Some(backend)) = (self.policies.remove(&reqid), &self.backend) {
            // The owner's SAs are gone already; its policies are not.
            if let Err(e) = ignore_missing(backend.delete_child_sa(&owner).await) {
                tracing::warn!(
                    reqid,
                    error = %errchain::chain(&e),
                    "kernel: cannot remove the policies of the reqid"
                );
            }
        }
    }

    fn failed(
        &self,
        op: KernelOp,
        reqid: u32,
        inbound_spi: u32,
        error: KernelActionError,
    ) -> KernelEvent {
        KernelEvent::Failed {
            op,
            ike_sa: self.installed.get(&(reqid, inbound_spi)).map(|i| i.ike_sa),
            reqid,
            inbound_spi,
            error,
        }
    }

    async fn install(&mut self, i: &ChildSaInstall) -> Result<KernelEvent, KernelActionError> {
        let Some(backend) = &self.backend else {
            return Ok(KernelEvent::Logged(KernelAction::InstallChildSa(Box::new(
                i.clone(),
            ))));
        };
        let spec = child_sa_spec(i)?;
        let with_policies = !self.policies.contains_key(&spec.reqid);
        let handle = if with_policies {
            let h = backend.install_child_sa(&spec).await?;
            self.policies.insert(spec.reqid, h.clone());
            h
        } else {
            let x = self
                .sa_only
                .as_ref()
                .ok_or(KernelActionError::SaOnlyUnsupported)?;
            let [out, inb] = spec.sa_specs();
            x.state().add(&out).await?;
            if let Err(e) = x.state().add(&inb).await {
                let _ = x.state().delete(&ipsec_backend::SaKey::of(&out)).await;
                return Err(e.into());
            }
            spec.handle()
        };
        self.installed.insert(
            (spec.reqid, spec.spi_in),
            Installed {
                ike_sa: i.ike_sa,
                handle: handle.clone(),
                lifetime: spec.lifetime,
            },
        );
        Ok(KernelEvent::Installed {
            ike_sa: i.ike_sa,
            handle,
            with_policies,
        })
    }

    async fn migrate(
        &mut self,
        reqid: u32,
        inbound_spi: u32,
        to: (IpAddr, IpAddr),
        encap: Option<UdpEncap>,
    ) -> Result<KernelEvent, KernelActionError> {
        let Some(backend) = &self.backend else {
            return Err(KernelActionError::SaOnlyUnsupported);
        };
        let cur = self
            .installed
            .get(&(reqid, inbound_spi))
            .ok_or(KernelActionError::Unknown { reqid, inbound_spi })?
            .clone();
        let to = OuterPair {
            local: to.0,
            remote: to.1,
        };
        let handle = backend
            .migrate_child_sa(&cur.handle, to, encap_of(encap))
            .await?;
        if let Some(p) = self.policies.get_mut(&reqid) {
            p.outer = to;
            p.encap = handle.encap;
        }
        self.installed.insert(
            (reqid, inbound_spi),
            Installed {
                handle: handle.clone(),
                ..cur
            },
        );
        Ok(KernelEvent::Migrated {
            ike_sa: cur.ike_sa,
            handle,
        })
    }

    /// The inbound SA of a pair also at `local` (a copy), or only at its
    /// own address when `local` is that address.
    async fn prepare_inbound(
        &mut self,
        reqid: u32,
        inbound_spi: u32,
        local: IpAddr,
    ) -> Result<KernelEvent, KernelActionError> {
        let Some(backend) = &self.backend else {
            return Err(KernelActionError::SaOnlyUnsupported);
        };
        let cur = self
            .installed
            .get_mut(&(reqid, inbound_spi))
            .ok_or(KernelActionError::Unknown { reqid, inbound_spi })?;
        let wanted = (local != cur.handle.outer.local).then_some(local);
        if cur.handle.inbound_copy != wanted {
            cur.handle = match wanted {
                Some(l) => backend.add_inbound_copy(&cur.handle, l).await?,
                None => backend.remove_inbound_copy(&cur.handle).await?,
            };
        }
        Ok(KernelEvent::InboundCopy {
            ike_sa: cur.ike_sa,
            handle: cur.handle.clone(),
        })
    }

    async fn delete(
        &mut self,
        reqid: u32,
        inbound_spi: u32,
        remove_policies: bool,
    ) -> Result<KernelEvent, KernelActionError> {
        let Some(backend) = &self.backend else {
            return Err(KernelActionError::SaOnlyUnsupported);
        };
        let cur = self
            .installed
            .remove(&(reqid, inbound_spi))
            .ok_or(KernelActionError::Unknown { reqid, inbound_spi })?;
        let owner = self.policies.get(&reqid).cloned();
        let first = match (&owner, &self.sa_only) {
            // Policies stay, or another pair installed them: SAs only.
            (Some(o), Some(x)) if !remove_policies || o.spi_in != inbound_spi => {
                let a = ignore_missing(x.state().delete(&cur.handle.out_key()).await);
                let b = ignore_missing(x.state().delete(&cur.handle.in_key()).await);
                let c = match cur.handle.in_copy_key() {
                    Some(k) => ignore_missing(x.state().delete(&k).await),
                    None => Ok(()),
                };
                a.and(b).and(c)
            }
            _ if !remove_policies => Err(KernelActionError::SaOnlyUnsupported)?,
            _ => Ok(()),
        };
        if remove_policies {
            self.policies.remove(&reqid);
            // The owner's SAs may be gone already; its policies are not.
            // The pair itself names its inbound copy, if any.
            let h = owner
                .filter(|o| o.spi_in != inbound_spi)
                .unwrap_or_else(|| cur.handle.clone());
            let r = backend.delete_child_sa(&h).await;
            if h.spi_in == inbound_spi {
                r?;
            } else {
                ignore_missing(r)?;
            }
        }
        first?;
        Ok(KernelEvent::Deleted {
            ike_sa: cur.ike_sa,
            handle: cur.handle,
        })
    }
}

#[cfg(test)]
mod tests;
