//! Request API over one NETLINK_XFRM socket, in the shape of rtnetlink /
//! xfrmnetlink: [`XfrmHandle`] → [`XfrmHandle::state`] / [`XfrmHandle::policy`]
//! → one async method per operation, each documented with its iproute2
//! equivalent (where there is one).
//!
//! The handle works in the network namespace the socket was opened in (the
//! calling thread's at [`XfrmHandle::new`]). It does not keep any state of
//! its own: the kernel is the source of truth.

use std::net::IpAddr;
use std::sync::Arc;

use tokio::sync::Mutex;

use crate::codec::{
    Attr, EncapTmpl, LifetimeCfg, UserPolicyId, UserSaId, UserSaInfo, XfrmId, XfrmMessage,
    family_of,
};
use crate::error::{Error, NetlinkError};
use crate::netlink::{NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, XfrmSocket};
use crate::types::{
    Dir, Mark, MigrateSpec, Mode, PolicyInfo, PolicySpec, Proto, SaInfo, SaSpec, TrafficSelector,
};

/// A handle on the kernel's XFRM state (SAD) and policy (SPD) databases.
/// Cheap to clone; requests are serialized on one socket.
#[derive(Debug, Clone)]
pub struct XfrmHandle {
    sock: Arc<Mutex<XfrmSocket>>,
}

/// Identifies one SA: (dst, spi, proto), plus the mark if it has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct SaKey {
    /// Outer destination.
    pub dst: IpAddr,
    /// SPI.
    pub spi: u32,
    /// Protocol.
    pub proto: Proto,
    /// Mark (must match the SA's).
    #[serde(default)]
    pub mark: Option<Mark>,
}

impl SaKey {
    /// The key of the SA `s` describes.
    pub fn of(s: &SaSpec) -> Self {
        Self {
            dst: s.dst,
            spi: s.spi,
            proto: s.proto,
            mark: s.mark,
        }
    }

    /// The XFRM_MSG_GETSA/DELSA body.
    pub fn to_raw(self) -> (UserSaId, Vec<Attr>) {
        let id = UserSaId {
            daddr: self.dst.into(),
            spi: self.spi,
            family: family_of(&self.dst),
            proto: self.proto.to_raw(),
        };
        let attrs = self
            .mark
            .map(|m| vec![Attr::Mark(m.value, m.mask)])
            .unwrap_or_default();
        (id, attrs)
    }
}

/// Identifies one policy: selector + direction (+ mark / if_id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct PolicyKey {
    /// Selector.
    pub selector: TrafficSelector,
    /// Direction.
    pub dir: Dir,
    /// Mark.
    #[serde(default)]
    pub mark: Option<Mark>,
    /// Interface id.
    #[serde(default)]
    pub if_id: Option<u32>,
}

impl PolicyKey {
    /// The XFRM_MSG_GETPOLICY/DELPOLICY body.
    pub fn to_raw(self) -> (UserPolicyId, Vec<Attr>) {
        let id = UserPolicyId {
            sel: self.selector.to_raw(),
            index: 0,
            dir: self.dir.to_raw(),
        };
        let mut attrs = Vec::new();
        if let Some(m) = self.mark {
            attrs.push(Attr::Mark(m.value, m.mask));
        }
        if let Some(i) = self.if_id {
            attrs.push(Attr::IfId(i));
        }
        (id, attrs)
    }
}

impl XfrmHandle {
    /// Open a NETLINK_XFRM socket in the calling thread's network namespace.
    /// Must be called inside a tokio runtime.
    pub fn new() -> Result<Self, Error> {
        let sock = XfrmSocket::open(&[]).map_err(Error::Open)?;
        Ok(Self {
            sock: Arc::new(Mutex::new(sock)),
        })
    }

    /// Open a NETLINK_XFRM socket in the network namespace at `path`
    /// (e.g. `/run/netns/L`). Must be called inside a tokio runtime.
    pub fn new_in_netns(path: &std::path::Path) -> Result<Self, Error> {
        let sock = XfrmSocket::open_in(path, &[]).map_err(Error::Open)?;
        Ok(Self {
            sock: Arc::new(Mutex::new(sock)),
        })
    }

    /// SA operations (`ip xfrm state ...`).
    pub fn state(&self) -> StateHandle<'_> {
        StateHandle(self)
    }

    /// Policy operations (`ip xfrm policy ...`).
    pub fn policy(&self) -> PolicyHandle<'_> {
        PolicyHandle(self)
    }

    /// XFRM_MSG_MIGRATE: move the policy's templates and every SA matching
    /// an entry (old addresses, proto, mode, reqid) to the new addresses in
    /// one kernel call. No iproute2 equivalent. On failure the kernel has
    /// restored everything it changed; the error is [`Error::Migrate`].
    pub async fn migrate(&self, spec: &MigrateSpec) -> Result<(), Error> {
        let (id, attrs) = spec.to_raw()?;
        self.exchange(XfrmMessage::Migrate(id, attrs), 0)
            .await
            .map(|_| ())
            .map_err(|source| Error::Migrate {
                dir: spec.dir,
                selector: spec.selector,
                source,
            })
    }

    async fn exchange(&self, m: XfrmMessage, flags: u16) -> Result<Vec<XfrmMessage>, NetlinkError> {
        self.sock.lock().await.request(m, flags).await
    }
}

/// SA (SAD) requests.
#[derive(Debug)]
pub struct StateHandle<'a>(&'a XfrmHandle);

impl StateHandle<'_> {
    /// `ip xfrm state add ...` (XFRM_MSG_NEWSA, create-exclusive).
    pub async fn add(&self, sa: &SaSpec) -> Result<(), Error> {
        let (info, attrs) = sa.to_raw()?;
        self.0
            .exchange(XfrmMessage::NewSa(info, attrs), NLM_F_CREATE | NLM_F_EXCL)
            .await
            .map(|_| ())
            .map_err(|source| Error::AddSa {
                spi: sa.spi,
                dst: sa.dst,
                source,
            })
    }

    /// `ip xfrm state update ...` (XFRM_MSG_UPDSA). The kernel can update
    /// lifetimes, encap, mark and the like, not addresses (the SA key).
    pub async fn update(&self, sa: &SaSpec) -> Result<(), Error> {
        let (info, attrs) = sa.to_raw()?;
        self.0
            .exchange(XfrmMessage::UpdSa(info, attrs), 0)
            .await
            .map(|_| ())
            .map_err(|source| Error::UpdateSa {
                spi: sa.spi,
                dst: sa.dst,
                source,
            })
    }

    /// `ip xfrm state delete dst D proto P spi S` (XFRM_MSG_DELSA).
    pub async fn delete(&self, key: &SaKey) -> Result<(), Error> {
        let (id, attrs) = key.to_raw();
        self.0
            .exchange(XfrmMessage::DelSa(id, attrs), 0)
            .await
            .map(|_| ())
            .map_err(|source| Error::DeleteSa {
                spi: key.spi,
                dst: key.dst,
                source,
            })
    }

    /// `ip -s xfrm state get dst D proto P spi S` (XFRM_MSG_GETSA): the SA
    /// with its counters.
    pub async fn get(&self, key: &SaKey) -> Result<SaInfo, Error> {
        let (i, a) = self.get_raw(key).await?;
        Ok(SaInfo::from_raw(&i, &a))
    }

    /// Adds the SA `key` names again, with `encap` (None: without UDP
    /// encapsulation) and otherwise as it is: keys, sequence numbers and
    /// replay window, lifetime limits and counters (add time included),
    /// mark and interface id. For what neither XFRM_MSG_UPDSA nor MIGRATE
    /// can do, taking the encapsulation off an SA; strongSwan moves SAs
    /// this way. The SA is briefly absent (delete, then add). If the add
    /// fails the SA is added back as it was and the error returned.
    pub async fn readd(
        &self,
        key: &SaKey,
        encap: Option<crate::types::Encap>,
    ) -> Result<(), Error> {
        let (info, attrs) = self.get_raw(key).await?;
        let base = sa_body(&info, &attrs);
        let with = |e: Option<EncapTmpl>| -> Vec<Attr> {
            base.iter().cloned().chain(e.map(Attr::Encap)).collect()
        };
        let old_encap = encap_of(&attrs);
        self.delete(key).await?;
        let add = |a: Vec<Attr>| {
            self.0
                .exchange(XfrmMessage::NewSa(info, a), NLM_F_CREATE | NLM_F_EXCL)
        };
        if let Err(source) = add(with(encap.map(crate::types::Encap::to_raw))).await {
            let _ = add(with(old_encap)).await;
            return Err(Error::AddSa {
                spi: key.spi,
                dst: key.dst,
                source,
            });
        }
        Ok(())
    }

    /// Adds a copy of the SA `key` names under the destination address
    /// `dst`: the same SPI, keys, encapsulation, sequence numbers and
    /// replay window, lifetime limits and counters, mark and interface id.
    /// The kernel finds an inbound SA by (destination, SPI, protocol)
    /// only, so the copy takes the peer's ESP sent to `dst` while the
    /// original still takes what is sent to the old address: a MOBIKE
    /// move made before the peer switches (make-before-break). The
    /// original stays.
    pub async fn copy_to(&self, key: &SaKey, dst: IpAddr) -> Result<(), Error> {
        let (mut info, attrs) = self.get_raw(key).await?;
        if dst.is_ipv4() != key.dst.is_ipv4() {
            return Err(Error::Invalid(format!(
                "copy of the SA at {} to {dst}: another address family",
                key.dst
            )));
        }
        info.id.daddr = dst.into();
        let body: Vec<Attr> = sa_body(&info, &attrs)
            .into_iter()
            .chain(encap_of(&attrs).map(Attr::Encap))
            .collect();
        self.0
            .exchange(XfrmMessage::NewSa(info, body), NLM_F_CREATE | NLM_F_EXCL)
            .await
            .map(|_| ())
            .map_err(|source| Error::AddSa {
                spi: key.spi,
                dst,
                source,
            })
    }

    /// XFRM_MSG_GETSA, the SA as the kernel sends it (keys included).
    async fn get_raw(&self, key: &SaKey) -> Result<(UserSaInfo, Vec<Attr>), Error> {
        let (id, attrs) = key.to_raw();
        let err = |source| Error::GetSa {
            spi: key.spi,
            dst: key.dst,
            source,
        };
        let replies = self
            .0
            .exchange(XfrmMessage::GetSa(id, attrs), 0)
            .await
            .map_err(err)?;
        replies
            .into_iter()
            .find_map(|m| match m {
                XfrmMessage::NewSa(i, a) => Some((i, a)),
                _ => None,
            })
            .ok_or_else(|| err(NetlinkError::Unexpected(0)))
    }

    /// `ip xfrm state list` (XFRM_MSG_GETSA dump).
    pub async fn dump(&self) -> Result<Vec<SaInfo>, Error> {
        let mut out = Vec::new();
        self.dump_with(|s| out.push(s)).await?;
        Ok(out)
    }

    /// Like [`Self::dump`], handing each SA to `f` as it is decoded.
    pub async fn dump_with(&self, mut f: impl FnMut(SaInfo)) -> Result<(), Error> {
        let mut sock = self.0.sock.lock().await;
        sock.request_with(
            XfrmMessage::Raw(crate::codec::msg::GETSA, Vec::new()),
            NLM_F_DUMP,
            |m| {
                if let XfrmMessage::NewSa(i, a) = &m {
                    f(SaInfo::from_raw(i, a));
                }
            },
        )
        .await
        .map_err(Error::DumpSa)
    }

    /// `ip xfrm state flush [proto P]` (XFRM_MSG_FLUSHSA).
    pub async fn flush(&self, proto: Option<Proto>) -> Result<(), Error> {
        let p = proto.map(Proto::to_raw).unwrap_or(0);
        self.0
            .exchange(XfrmMessage::FlushSa(p, Vec::new()), 0)
            .await
            .map(|_| ())
            .map_err(Error::FlushSa)
    }

    /// `ip xfrm state allocspi src S dst D proto P reqid R mode M min A max B`
    /// (XFRM_MSG_ALLOCSPI): creates a larval SA and returns its SPI.
    #[allow(clippy::too_many_arguments)]
    pub async fn alloc_spi(
        &self,
        src: IpAddr,
        dst: IpAddr,
        proto: Proto,
        mode: Mode,
        reqid: u32,
        min: u32,
        max: u32,
    ) -> Result<u32, Error> {
        let info = UserSaInfo {
            id: XfrmId {
                daddr: dst.into(),
                spi: 0,
                proto: proto.to_raw(),
            },
            saddr: src.into(),
            lft: LifetimeCfg::INFINITE,
            family: family_of(&dst),
            mode: mode.to_raw(),
            reqid,
            ..Default::default()
        };
        let replies = self
            .0
            .exchange(XfrmMessage::AllocSpi(info, min, max, Vec::new()), 0)
            .await
            .map_err(Error::AllocSpi)?;
        replies
            .iter()
            .find_map(|m| match m {
                XfrmMessage::NewSa(i, _) => Some(i.id.spi),
                _ => None,
            })
            .ok_or(Error::AllocSpi(NetlinkError::Unexpected(0)))
    }
}

/// Policy (SPD) requests.
#[derive(Debug)]
pub struct PolicyHandle<'a>(&'a XfrmHandle);

impl PolicyHandle<'_> {
    /// `ip xfrm policy add ...` (XFRM_MSG_NEWPOLICY).
    pub async fn add(&self, p: &PolicySpec) -> Result<(), Error> {
        let (info, attrs) = p.to_raw();
        self.0
            .exchange(
                XfrmMessage::NewPolicy(info, attrs),
                NLM_F_CREATE | NLM_F_EXCL,
            )
            .await
            .map(|_| ())
            .map_err(|source| Error::AddPolicy {
                dir: p.dir,
                selector: p.selector,
                source,
            })
    }

    /// `ip xfrm policy update ...` (XFRM_MSG_UPDPOLICY: add or replace).
    pub async fn update(&self, p: &PolicySpec) -> Result<(), Error> {
        let (info, attrs) = p.to_raw();
        self.0
            .exchange(XfrmMessage::UpdPolicy(info, attrs), 0)
            .await
            .map(|_| ())
            .map_err(|source| Error::UpdatePolicy {
                dir: p.dir,
                selector: p.selector,
                source,
            })
    }

    /// `ip xfrm policy delete src S dst D dir X` (XFRM_MSG_DELPOLICY).
    pub async fn delete(&self, key: &PolicyKey) -> Result<(), Error> {
        let (id, attrs) = key.to_raw();
        self.0
            .exchange(XfrmMessage::DelPolicy(id, attrs), 0)
            .await
            .map(|_| ())
            .map_err(|source| Error::DeletePolicy {
                dir: key.dir,
                selector: key.selector,
                source,
            })
    }

    /// `ip xfrm policy get src S dst D dir X` (XFRM_MSG_GETPOLICY).
    pub async fn get(&self, key: &PolicyKey) -> Result<PolicyInfo, Error> {
        let (id, attrs) = key.to_raw();
        let err = |source| Error::GetPolicy {
            dir: key.dir,
            selector: key.selector,
            source,
        };
        let replies = self
            .0
            .exchange(XfrmMessage::GetPolicy(id, attrs), 0)
            .await
            .map_err(err)?;
        replies
            .iter()
            .find_map(|m| match m {
                XfrmMessage::NewPolicy(i, a) => Some(PolicyInfo::from_raw(i, a)),
                _ => None,
            })
            .ok_or_else(|| err(NetlinkError::Unexpected(0)))
    }

    /// `ip xfrm policy list` (XFRM_MSG_GETPOLICY dump).
    pub async fn dump(&self) -> Result<Vec<PolicyInfo>, Error> {
        let replies = self
            .0
            .exchange(
                XfrmMessage::Raw(crate::codec::msg::GETPOLICY, Vec::new()),
                NLM_F_DUMP,
            )
            .await
            .map_err(Error::DumpPolicy)?;
        Ok(replies
            .iter()
            .filter_map(|m| match m {
                XfrmMessage::NewPolicy(i, a) => Some(PolicyInfo::from_raw(i, a)),
                _ => None,
            })
            .collect())
    }

    /// `ip xfrm policy flush` (XFRM_MSG_FLUSHPOLICY, main policy type).
    pub async fn flush(&self) -> Result<(), Error> {
        self.0
            .exchange(XfrmMessage::FlushPolicy(Vec::new()), 0)
            .await
            .map(|_| ())
            .map_err(Error::FlushPolicy)
    }
}

/// What an SA is made of, as XFRM_MSG_NEWSA takes it back from
/// XFRM_MSG_GETSA's answer: keys, sequence numbers and replay window,
/// counters (add time included), mark and interface id; not the
/// encapsulation (the caller chooses it). The rest (LASTUSED, offload,
/// ...) is state the kernel reports but does not take back, or must not
/// be copied.
fn sa_body(info: &UserSaInfo, attrs: &[Attr]) -> Vec<Attr> {
    let keep = |a: &&Attr| {
        matches!(
            a,
            Attr::AlgAuth(_)
                | Attr::AlgCrypt(_)
                | Attr::AlgComp(_)
                | Attr::AlgAead(_)
                | Attr::AlgAuthTrunc(_)
                | Attr::ReplayVal(_)
                | Attr::ReplayEsnVal(_)
                | Attr::ReplayThresh(_)
                | Attr::EtimerThresh(_)
                | Attr::CoAddr(_)
                | Attr::Mark(..)
                | Attr::SetMark(_)
                | Attr::SetMarkMask(_)
                | Attr::IfId(_)
                | Attr::TfcPad(_)
                | Attr::SaExtraFlags(_)
        )
    };
    attrs
        .iter()
        .filter(keep)
        .cloned()
        .chain([Attr::LifetimeVal(info.curlft)])
        .collect()
}

/// The SA's UDP encapsulation, from XFRM_MSG_GETSA's answer.
fn encap_of(attrs: &[Attr]) -> Option<EncapTmpl> {
    attrs.iter().find_map(|a| match a {
        Attr::Encap(e) => Some(*e),
        _ => None,
    })
}
