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

/// ENOENT and ESRCH: what deleting an SA or policy that is gone returns.
const GONE: [i32; 2] = [2, 3];

fn ignore_missing(r: Result<(), ipsec_backend::Error>) -> Result<(), ipsec_backend::Error> {
    match r {
        Err(e) if e.errno().is_some_and(|n| GONE.contains(&n)) => Ok(()),
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

    /// The backend's kernel event stream; None with the backend `none`.
    pub fn events(&self) -> Option<Result<EventStream, ipsec_backend::Error>> {
        self.backend.as_ref().map(|b| b.events())
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
                ike_sa: cur.ike_sa,
                handle: handle.clone(),
            },
        );
        Ok(KernelEvent::Migrated {
            ike_sa: cur.ike_sa,
            handle,
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
                a.and(b)
            }
            _ if !remove_policies => Err(KernelActionError::SaOnlyUnsupported)?,
            _ => Ok(()),
        };
        if remove_policies {
            self.policies.remove(&reqid);
            // The owner's SAs may be gone already; its policies are not.
            let h = owner.unwrap_or_else(|| cur.handle.clone());
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
mod tests {
    use super::*;
    use crate::engine::EspSa;
    use ipsec_backend::FakeBackend;

    fn ts(a: &str, b: &str) -> TrafficSelector {
        TrafficSelector {
            ip_protocol: 0,
            start_port: 0,
            end_port: u16::MAX,
            start_addr: a.parse().unwrap(),
            end_addr: b.parse().unwrap(),
        }
    }

    fn install(reqid: u32, spi_in: u32, encap: Option<UdpEncap>) -> ChildSaInstall {
        ChildSaInstall {
            ike_sa: 7,
            name: "net".into(),
            reqid,
            mode: Mode::Tunnel,
            local: "192.0.2.1".parse().unwrap(),
            remote: "192.0.2.2".parse().unwrap(),
            encap,
            inbound: EspSa {
                spi: spi_in,
                aead: Aead::AesGcm16_256,
                key: vec![1; 36],
            },
            outbound: EspSa {
                spi: spi_in + 1,
                aead: Aead::ChaCha20Poly1305,
                key: vec![2; 36],
            },
            esn: false,
            local_ts: vec![ts("10.1.0.0", "10.1.0.255")],
            remote_ts: vec![ts("10.2.0.0", "10.2.0.255")],
            limits: ChildLimits::default(),
        }
    }

    #[test]
    fn prefixes() {
        let p = |a, b| prefix_of(&ts(a, b), "local");
        assert_eq!(
            p("10.1.0.0", "10.1.0.255").unwrap().to_string(),
            "10.1.0.0/24"
        );
        assert_eq!(
            p("0.0.0.0", "255.255.255.255").unwrap().to_string(),
            "0.0.0.0/0"
        );
        assert_eq!(
            p("10.1.0.7", "10.1.0.7").unwrap().to_string(),
            "10.1.0.7/32"
        );
        assert_eq!(
            p("fd00::", "fd00::ffff:ffff").unwrap().to_string(),
            "fd00::/96"
        );
        assert_eq!(
            p("::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")
                .unwrap()
                .len,
            0
        );
        assert!(p("10.1.0.1", "10.1.0.255").is_err());
        assert!(p("10.1.0.0", "10.1.0.254").is_err());
        assert!(p("10.1.0.0", "fd00::").is_err());
        let mut t = ts("10.1.0.0", "10.1.0.255");
        t.ip_protocol = 17;
        assert!(prefix_of(&t, "local").is_err());
    }

    #[test]
    fn spec_mapping() {
        let s = child_sa_spec(&install(
            3,
            0xc000_0001,
            Some(UdpEncap {
                local_port: 4500,
                remote_port: 31000,
            }),
        ))
        .unwrap();
        assert_eq!(s.reqid, 3);
        assert_eq!((s.spi_in, s.spi_out), (0xc000_0001, 0xc000_0002));
        assert_eq!(s.selectors.len(), 1);
        assert_eq!(s.selectors[0].local.to_string(), "10.1.0.0/24");
        assert_eq!(s.selectors[0].remote.to_string(), "10.2.0.0/24");
        assert_eq!(s.mode, XfrmMode::Tunnel);
        assert_eq!(s.crypto_in, Crypto::aes_gcm(&[1; 36]));
        assert_eq!(s.crypto_out, Crypto::chacha20_poly1305(&[2; 36]));
        assert_eq!(
            s.encap,
            Some(Encap {
                sport: 4500,
                dport: 31000
            })
        );
        assert_eq!(s.outer.local.to_string(), "192.0.2.1");
        let mut i = install(3, 1, None);
        i.remote_ts.clear();
        assert_eq!(child_sa_spec(&i), Err(MapError::NoSelector("remote")));
        let mut i = install(3, 1, None);
        i.local_ts.clear();
        assert_eq!(child_sa_spec(&i), Err(MapError::NoSelector("local")));
    }

    fn pairs(s: &ChildSaSpec) -> Vec<String> {
        s.selectors.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn two_by_two_selectors_make_four_pairs() {
        let mut i = install(3, 1, None);
        i.local_ts.push(ts("10.3.0.0", "10.3.0.255"));
        i.remote_ts.push(ts("10.4.0.0", "10.4.255.255"));
        let s = child_sa_spec(&i).unwrap();
        assert_eq!(
            pairs(&s),
            [
                "10.1.0.0/24 <-> 10.2.0.0/24",
                "10.1.0.0/24 <-> 10.4.0.0/16",
                "10.3.0.0/24 <-> 10.2.0.0/24",
                "10.3.0.0/24 <-> 10.4.0.0/16",
            ]
        );
        // The same selector twice (e.g. narrowed from two proposals) makes
        // one pair, not two colliding policy sets.
        let mut i = install(3, 1, None);
        i.remote_ts.push(ts("10.2.0.0", "10.2.0.255"));
        assert_eq!(child_sa_spec(&i).unwrap().selectors.len(), 1);
    }

    #[test]
    fn pairs_of_different_families_are_skipped() {
        let mut i = install(3, 1, None);
        i.local_ts.push(ts("fd01::", "fd01::ffff:ffff:ffff:ffff"));
        i.remote_ts.insert(0, ts("fd02::", "fd02::ffff"));
        let s = child_sa_spec(&i).unwrap();
        assert_eq!(
            pairs(&s),
            ["10.1.0.0/24 <-> 10.2.0.0/24", "fd01::/64 <-> fd02::/112"]
        );
        // Only IPv4 on one side, only IPv6 on the other: nothing to install,
        // and the error names the selectors.
        let mut i = install(3, 1, None);
        i.remote_ts = vec![ts("fd02::", "fd02::ffff"), ts("fd03::", "fd03::ff")];
        let e = child_sa_spec(&i).unwrap_err();
        assert_eq!(
            e,
            MapError::NoPairOfOneFamily {
                local: vec!["10.1.0.0/24".parse().unwrap()],
                remote: vec!["fd02::/112".parse().unwrap(), "fd03::/120".parse().unwrap()],
            }
        );
        assert_eq!(
            e.to_string(),
            "no local and remote traffic selectors of one address family: \
             local [10.1.0.0/24], remote [fd02::/112, fd03::/120]"
        );
    }

    #[test]
    fn one_selector_that_is_no_prefix_refuses_the_whole_list() {
        let mut i = install(3, 1, None);
        i.remote_ts.push(ts("10.4.0.1", "10.4.0.9"));
        let e = child_sa_spec(&i).unwrap_err();
        assert_eq!(
            e,
            MapError::NotPrefix {
                side: "remote",
                start: "10.4.0.1".parse().unwrap(),
                end: "10.4.0.9".parse().unwrap(),
            }
        );
        assert!(e.to_string().contains("10.4.0.1-10.4.0.9"), "{e}");
        let mut i = install(3, 1, None);
        let mut tcp = ts("10.3.0.0", "10.3.0.255");
        tcp.ip_protocol = 6;
        i.local_ts.push(tcp);
        assert!(matches!(
            child_sa_spec(&i),
            Err(MapError::NotPrefix { side: "local", .. })
        ));
        let mut i = install(3, 1, None);
        let mut port = ts("10.3.0.0", "10.3.0.255");
        port.start_port = 443;
        port.end_port = 443;
        i.local_ts.insert(0, port);
        assert!(matches!(
            child_sa_spec(&i),
            Err(MapError::NotPrefix { side: "local", .. })
        ));
    }

    #[tokio::test]
    async fn fake_backend_multi_selector_install_migrate_delete() {
        let fake = std::sync::Arc::new(FakeBackend::new());
        let mut k = Kernel::with_backend(Box::new(fake.clone()));
        let mut i = install(3, 100, None);
        i.local_ts.push(ts("10.3.0.0", "10.3.0.255"));
        i.remote_ts.push(ts("10.4.0.0", "10.4.0.255"));
        let ev = k.apply(KernelAction::InstallChildSa(Box::new(i))).await;
        let KernelEvent::Installed { handle, .. } = ev else {
            panic!("{ev:?}");
        };
        assert_eq!(handle.selectors.len(), 4);
        // Two SAs, 4 pairs x out/in/fwd policies.
        assert_eq!(fake.len(), (2, 12));
        let to: (IpAddr, IpAddr) = (
            "198.51.100.1".parse().unwrap(),
            "198.51.100.2".parse().unwrap(),
        );
        let ev = k.apply(migrate_action(3, 100, to)).await;
        assert!(matches!(ev, KernelEvent::Migrated { .. }), "{ev:?}");
        assert_eq!(fake.len(), (2, 12));
        let ev = k
            .apply(KernelAction::DeleteChildSa {
                reqid: 3,
                local: to.0,
                remote: to.1,
                inbound_spi: 100,
                outbound_spi: 101,
                remove_policies: true,
            })
            .await;
        assert!(matches!(ev, KernelEvent::Deleted { .. }), "{ev:?}");
        assert!(fake.is_empty(), "{:?}", fake.len());
    }

    /// Move the pair (reqid, inbound SPI) from 192.0.2.1/2 to `to`.
    fn migrate_action(reqid: u32, inbound_spi: u32, to: (IpAddr, IpAddr)) -> KernelAction {
        KernelAction::MigrateChildSa {
            reqid,
            inbound_spi,
            outbound_spi: inbound_spi + 1,
            from: ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap()),
            to,
            encap: None,
        }
    }

    #[tokio::test]
    async fn fake_backend_install_migrate_delete() {
        let mut k = Kernel::with_backend(Box::new(FakeBackend::new()));
        let ev = k
            .apply(KernelAction::InstallChildSa(Box::new(install(
                3, 100, None,
            ))))
            .await;
        assert!(
            matches!(
                ev,
                KernelEvent::Installed {
                    ike_sa: 7,
                    with_policies: true,
                    ..
                }
            ),
            "{ev:?}"
        );
        // The same SPIs again: the fake refuses like the kernel (EEXIST),
        // reported as an event.
        let mut again = install(4, 100, None);
        again.reqid = 4;
        let ev = k.apply(KernelAction::InstallChildSa(Box::new(again))).await;
        assert!(
            matches!(
                ev,
                KernelEvent::Failed {
                    op: KernelOp::Install,
                    reqid: 4,
                    ..
                }
            ),
            "{ev:?}"
        );
        // Its later migrate and delete have nothing to do, once.
        let migrate_failed = migrate_action(
            4,
            100,
            ("192.0.2.1".parse().unwrap(), "192.0.2.3".parse().unwrap()),
        );
        let ev = k.apply(migrate_failed).await;
        assert!(
            matches!(ev, KernelEvent::NotInstalled { reqid: 4, .. }),
            "{ev:?}"
        );
        let del_failed = || KernelAction::DeleteChildSa {
            reqid: 4,
            local: "192.0.2.1".parse().unwrap(),
            remote: "192.0.2.2".parse().unwrap(),
            inbound_spi: 100,
            outbound_spi: 101,
            remove_policies: true,
        };
        let ev = k.apply(del_failed()).await;
        assert!(
            matches!(ev, KernelEvent::NotInstalled { reqid: 4, .. }),
            "{ev:?}"
        );
        let ev = k.apply(del_failed()).await;
        assert!(
            matches!(
                ev,
                KernelEvent::Failed {
                    op: KernelOp::Delete,
                    error: KernelActionError::Unknown { .. },
                    ..
                }
            ),
            "{ev:?}"
        );
        // The pair of reqid 3 was not touched.
        assert_eq!(k.installed().count(), 1);
        let to: (IpAddr, IpAddr) = (
            "198.51.100.1".parse().unwrap(),
            "198.51.100.2".parse().unwrap(),
        );
        let ev = k.apply(migrate_action(3, 100, to)).await;
        match ev {
            KernelEvent::Migrated { handle, .. } => assert_eq!(handle.outer.local, to.0),
            e => panic!("{e:?}"),
        }
        let del = |spi| KernelAction::DeleteChildSa {
            reqid: 3,
            local: to.0,
            remote: to.1,
            inbound_spi: spi,
            outbound_spi: spi + 1,
            remove_policies: true,
        };
        let ev = k.apply(del(100)).await;
        assert!(
            matches!(ev, KernelEvent::Deleted { ike_sa: 7, .. }),
            "{ev:?}"
        );
        assert_eq!(k.installed().count(), 0);
        let ev = k.apply(del(100)).await;
        assert!(
            matches!(
                ev,
                KernelEvent::Failed {
                    error: KernelActionError::Unknown { .. },
                    ..
                }
            ),
            "{ev:?}"
        );
    }

    #[tokio::test]
    async fn counters_of_installed_pairs_and_of_vanished_ones() {
        let fake = std::sync::Arc::new(FakeBackend::new());
        let mut k = Kernel::with_backend(Box::new(fake.clone()));
        assert!(k.counters().await.is_empty());
        let ev = k
            .apply(KernelAction::InstallChildSa(Box::new(install(
                3, 100, None,
            ))))
            .await;
        let KernelEvent::Installed { handle, .. } = ev else {
            panic!("{ev:?}");
        };
        fake.record_traffic(&handle, 1400, 84).unwrap();
        fake.record_traffic(&handle, 100, 0).unwrap();
        let c = k.counters().await;
        assert_eq!(c.len(), 1);
        let got = c[&(3, 100)].as_ref().unwrap();
        assert_eq!((got.outbound.bytes, got.outbound.packets), (1500, 2));
        assert_eq!((got.inbound.bytes, got.inbound.packets), (84, 2));
        // Removed behind the agent's back: an error for that pair.
        fake.delete_child_sa(&handle).await.unwrap();
        let c = k.counters().await;
        let err = c[&(3, 100)].as_ref().unwrap_err();
        assert_eq!(err.errno(), Some(libc::ESRCH), "{err}");
    }

    #[test]
    fn limits_become_the_kernels_lifetime_configuration() {
        assert_eq!(lifetime_of(&ChildLimits::default()), None);
        let l = lifetime_of(&ChildLimits {
            life_time: Some(std::time::Duration::from_secs(3960)),
            rekey_bytes: Some(1000),
            life_bytes: Some(1100),
            rekey_packets: None,
            life_packets: Some(50),
        })
        .unwrap();
        assert_eq!(
            l,
            LifetimeCfg {
                soft_byte_limit: 1000,
                hard_byte_limit: 1100,
                soft_packet_limit: u64::MAX,
                hard_packet_limit: 50,
                // Rekeys by time are the engine's.
                soft_add_expires_seconds: 0,
                hard_add_expires_seconds: 3960,
                soft_use_expires_seconds: 0,
                hard_use_expires_seconds: 0,
            }
        );
        // Under a second is still a limit.
        let l = lifetime_of(&ChildLimits {
            life_time: Some(std::time::Duration::from_millis(300)),
            ..ChildLimits::default()
        })
        .unwrap();
        assert_eq!(l.hard_add_expires_seconds, 1);
    }

    #[tokio::test]
    async fn expire_events_of_our_sas_name_their_child_and_others_nothing() {
        let fake = std::sync::Arc::new(FakeBackend::new());
        let mut k = Kernel::with_backend(Box::new(fake.clone()));
        let mut i = install(3, 100, None);
        i.limits.rekey_bytes = Some(5000);
        let ev = k.apply(KernelAction::InstallChildSa(Box::new(i))).await;
        assert!(matches!(ev, KernelEvent::Installed { .. }), "{ev:?}");
        let sas = fake.sas();
        assert_eq!(sas.len(), 2);
        for sa in &sas {
            // The limits went to the kernel with both SAs.
            assert_eq!(sa.limits.soft_byte_limit, 5000, "{sa:?}");
            assert_eq!(sa.limits.hard_byte_limit, u64::MAX, "{sa:?}");
            for hard in [false, true] {
                let e = XfrmEvent::SaExpire {
                    sa: sa.clone(),
                    hard,
                };
                assert_eq!(k.expired_child(&e), Some((100, hard)), "{sa:?}");
            }
        }
        // Another SPI, another destination, another protocol, or no
        // expire at all: not ours to act on.
        let mut other = sas[0].clone();
        other.spi ^= 1;
        let mut elsewhere = sas[0].clone();
        elsewhere.dst = Some("203.0.113.9".parse().unwrap());
        let mut ah = sas[0].clone();
        ah.proto = 51;
        for sa in [other, elsewhere, ah] {
            let e = XfrmEvent::SaExpire { sa, hard: false };
            assert_eq!(k.expired_child(&e), None, "{e:?}");
        }
        let added = XfrmEvent::SaAdded { sa: sas[0].clone() };
        assert_eq!(k.expired_child(&added), None);
    }

    #[tokio::test]
    async fn mapping_events_of_our_inbound_sas_name_their_child_and_the_new_peer() {
        let fake = std::sync::Arc::new(FakeBackend::new());
        let mut k = Kernel::with_backend(Box::new(fake.clone()));
        let ev = k
            .apply(KernelAction::InstallChildSa(Box::new(install(
                3, 100, None,
            ))))
            .await;
        assert!(matches!(ev, KernelEvent::Installed { .. }), "{ev:?}");
        let inbound = fake
            .sas()
            .into_iter()
            .find(|sa| sa.spi == 100)
            .expect("inbound SA");
        let new: IpAddr = "198.51.100.9".parse().unwrap();
        let mapping = |spi: u32, dst: Option<IpAddr>, new_src: Option<IpAddr>| XfrmEvent::Mapping {
            dst,
            spi,
            reqid: 3,
            old_src: None,
            new_src,
            old_sport: 4500,
            new_sport: 40000,
        };
        assert_eq!(
            k.mapped_child(&mapping(100, inbound.dst, Some(new))),
            Some((100, SocketAddr::new(new, 40000)))
        );
        // Another SPI, another destination, no new address: not ours.
        for e in [
            mapping(101, inbound.dst, Some(new)),
            mapping(100, Some("203.0.113.9".parse().unwrap()), Some(new)),
            mapping(100, inbound.dst, None),
        ] {
            assert_eq!(k.mapped_child(&e), None, "{e:?}");
        }
    }

    #[tokio::test]
    async fn none_only_logs() {
        let mut k = Kernel::none();
        let ev = k
            .apply(KernelAction::InstallChildSa(Box::new(install(
                3, 100, None,
            ))))
            .await;
        assert!(matches!(ev, KernelEvent::Logged(_)));
    }
}
