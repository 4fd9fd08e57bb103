//! The XFRM event stream: SA expire (soft/hard), acquire, NAT-T mapping
//! changes, MIGRATE, policy expire, and SA/policy add/update/delete/flush,
//! from the kernel's NETLINK_XFRM multicast groups.
//!
//! Unlike `ip xfrm monitor`, MIGRATE events are decoded and shown. The
//! monitor only listens; it never changes kernel state. A kernel queue
//! overflow (ENOBUFS) is reported as [`Error::MonitorOverrun`] and the stream
//! goes on; callers that keep state should re-dump.

use std::net::IpAddr;

use futures::Stream;
use serde::Serialize;

use crate::codec::{Attr, XfrmMessage, group};
use crate::error::{Error, NetlinkError};
use crate::netlink::{NlBody, XfrmSocket};
use crate::types::{Dir, Encap, MigrateEntry, OuterPair, PolicyInfo, SaInfo, TrafficSelector};

/// Every group this crate decodes.
pub const ALL_GROUPS: &[u32] = &[
    group::ACQUIRE,
    group::EXPIRE,
    group::SA,
    group::POLICY,
    group::MIGRATE,
    group::MAPPING,
];

/// The groups a key manager acts on: SA expires (rekey on a soft limit,
/// the SA gone on a hard one) and NAT-T mapping changes. Joining only
/// these keeps the SA and policy notifications of every change on the host
/// out of the socket's queue, so it overruns less.
pub const KEY_MANAGER_GROUPS: &[u32] = &[group::EXPIRE, group::MAPPING];

/// One kernel XFRM event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum XfrmEvent {
    /// XFRM_MSG_NEWSA.
    SaAdded {
        /// The SA.
        sa: SaInfo,
    },
    /// XFRM_MSG_UPDSA.
    SaUpdated {
        /// The SA.
        sa: SaInfo,
    },
    /// XFRM_MSG_DELSA.
    SaDeleted {
        /// Outer destination.
        dst: Option<IpAddr>,
        /// SPI.
        spi: u32,
        /// Protocol number.
        proto: u8,
        /// The SA as it was, if the kernel attached it.
        sa: Option<SaInfo>,
    },
    /// XFRM_MSG_FLUSHSA.
    SaFlushed {
        /// Protocol (0 = all).
        proto: u8,
    },
    /// XFRM_MSG_EXPIRE: a soft (rekey now) or hard (SA gone) limit hit.
    SaExpire {
        /// The SA.
        sa: SaInfo,
        /// Hard expiry.
        hard: bool,
    },
    /// XFRM_MSG_ACQUIRE: traffic hit a policy without an SA.
    Acquire {
        /// Wanted SA destination.
        dst: Option<IpAddr>,
        /// Wanted SA source.
        src: Option<IpAddr>,
        /// Protocol number.
        proto: u8,
        /// The packet's selector.
        selector: Option<TrafficSelector>,
        /// The policy that triggered it.
        policy: PolicyInfo,
        /// Acquire sequence number.
        seq: u32,
    },
    /// XFRM_MSG_MAPPING: the NAT-T peer's address/port changed.
    Mapping {
        /// SA destination.
        dst: Option<IpAddr>,
        /// SPI.
        spi: u32,
        /// Request id.
        reqid: u32,
        /// Old peer address.
        old_src: Option<IpAddr>,
        /// New peer address.
        new_src: Option<IpAddr>,
        /// Old peer port.
        old_sport: u16,
        /// New peer port.
        new_sport: u16,
    },
    /// XFRM_MSG_MIGRATE: SAs and a policy moved to new outer addresses.
    Migrate {
        /// Policy selector.
        selector: Option<TrafficSelector>,
        /// Policy direction.
        dir: Option<Dir>,
        /// The moves.
        entries: Vec<MigrateEntry>,
        /// Key manager addresses, if given.
        kmaddress: Option<OuterPair>,
        /// New encapsulation, if given.
        encap: Option<Encap>,
    },
    /// XFRM_MSG_NEWPOLICY.
    PolicyAdded {
        /// The policy.
        policy: PolicyInfo,
    },
    /// XFRM_MSG_UPDPOLICY.
    PolicyUpdated {
        /// The policy.
        policy: PolicyInfo,
    },
    /// XFRM_MSG_DELPOLICY.
    PolicyDeleted {
        /// Selector.
        selector: Option<TrafficSelector>,
        /// Direction.
        dir: Option<Dir>,
        /// Kernel index.
        index: u32,
    },
    /// XFRM_MSG_FLUSHPOLICY.
    PolicyFlushed,
    /// XFRM_MSG_POLEXPIRE.
    PolicyExpire {
        /// The policy.
        policy: PolicyInfo,
        /// Hard expiry.
        hard: bool,
    },
    /// Anything else (message type).
    Other {
        /// XFRM_MSG_* number.
        msg_type: u16,
    },
}

impl XfrmEvent {
    /// Interpret one XFRM message as an event.
    pub fn from_message(m: &XfrmMessage) -> Self {
        match m {
            XfrmMessage::NewSa(i, a) => XfrmEvent::SaAdded {
                sa: SaInfo::from_raw(i, a),
            },
            XfrmMessage::UpdSa(i, a) => XfrmEvent::SaUpdated {
                sa: SaInfo::from_raw(i, a),
            },
            XfrmMessage::DelSa(id, a) => XfrmEvent::SaDeleted {
                dst: id.daddr.to_ip(id.family),
                spi: id.spi,
                proto: id.proto,
                sa: a.iter().find_map(|x| match x {
                    Attr::Sa(s) => Some(SaInfo::from_raw(s, a)),
                    _ => None,
                }),
            },
            XfrmMessage::FlushSa(p, _) => XfrmEvent::SaFlushed { proto: *p },
            XfrmMessage::Expire(s, hard, a) => XfrmEvent::SaExpire {
                sa: SaInfo::from_raw(s, a),
                hard: *hard != 0,
            },
            XfrmMessage::Acquire(id, saddr, sel, pol, algs, a) => XfrmEvent::Acquire {
                dst: id
                    .daddr
                    .to_ip(sel.family)
                    .or_else(|| id.daddr.to_ip(pol.sel.family)),
                src: saddr
                    .to_ip(sel.family)
                    .or_else(|| saddr.to_ip(pol.sel.family)),
                proto: id.proto,
                selector: TrafficSelector::from_raw(sel),
                policy: PolicyInfo::from_raw(pol, a),
                seq: algs[3],
            },
            XfrmMessage::Mapping(id, reqid, old, new, osp, nsp, _) => XfrmEvent::Mapping {
                dst: id.daddr.to_ip(id.family),
                spi: id.spi,
                reqid: *reqid,
                old_src: old.to_ip(id.family),
                new_src: new.to_ip(id.family),
                old_sport: *osp,
                new_sport: *nsp,
            },
            XfrmMessage::Migrate(id, a) => {
                let mut entries = Vec::new();
                let mut kmaddress = None;
                let mut encap = None;
                for x in a {
                    match x {
                        Attr::Migrate(v) => {
                            entries.extend(v.iter().filter_map(MigrateEntry::from_raw))
                        }
                        Attr::KmAddress(k) => {
                            if let (Some(local), Some(remote)) =
                                (k.local.to_ip(k.family), k.remote.to_ip(k.family))
                            {
                                kmaddress = Some(OuterPair { local, remote });
                            }
                        }
                        Attr::Encap(e) => {
                            encap = Some(Encap {
                                sport: e.sport,
                                dport: e.dport,
                            })
                        }
                        _ => {}
                    }
                }
                XfrmEvent::Migrate {
                    selector: TrafficSelector::from_raw(&id.sel),
                    dir: Dir::from_raw(id.dir),
                    entries,
                    kmaddress,
                    encap,
                }
            }
            XfrmMessage::NewPolicy(i, a) => XfrmEvent::PolicyAdded {
                policy: PolicyInfo::from_raw(i, a),
            },
            XfrmMessage::UpdPolicy(i, a) => XfrmEvent::PolicyUpdated {
                policy: PolicyInfo::from_raw(i, a),
            },
            XfrmMessage::DelPolicy(id, _) => XfrmEvent::PolicyDeleted {
                selector: TrafficSelector::from_raw(&id.sel),
                dir: Dir::from_raw(id.dir),
                index: id.index,
            },
            XfrmMessage::FlushPolicy(_) => XfrmEvent::PolicyFlushed,
            XfrmMessage::PolExpire(p, hard, a) => XfrmEvent::PolicyExpire {
                policy: PolicyInfo::from_raw(p, a),
                hard: *hard != 0,
            },
            other => XfrmEvent::Other {
                msg_type: other.message_type(),
            },
        }
    }
}

/// A subscription to XFRM multicast groups.
#[derive(Debug)]
pub struct XfrmMonitor {
    sock: XfrmSocket,
    pending: std::collections::VecDeque<XfrmEvent>,
}

impl XfrmMonitor {
    /// Subscribe to `groups` (see [`ALL_GROUPS`]) in the calling thread's
    /// network namespace. Events that happen after this returns are seen.
    pub fn open(groups: &[u32]) -> Result<Self, Error> {
        Ok(Self {
            sock: XfrmSocket::open(groups).map_err(Error::Open)?,
            pending: Default::default(),
        })
    }

    /// Subscribe in the network namespace at `path`.
    pub fn open_in(path: &std::path::Path, groups: &[u32]) -> Result<Self, Error> {
        Ok(Self {
            sock: XfrmSocket::open_in(path, groups).map_err(Error::Open)?,
            pending: Default::default(),
        })
    }

    /// The next event.
    pub async fn next_event(&mut self) -> Result<XfrmEvent, Error> {
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Ok(e);
            }
            let msgs = match self.sock.recv().await {
                Ok(m) => m,
                Err(NetlinkError::Io(e)) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    return Err(Error::MonitorOverrun);
                }
                Err(e) => return Err(Error::Monitor(e)),
            };
            for m in msgs {
                match m {
                    Ok(m) => {
                        if let NlBody::Xfrm(x) = m.body {
                            self.pending.push_back(XfrmEvent::from_message(&x));
                        }
                    }
                    // One message the codec cannot read costs only itself.
                    Err(u) => tracing::warn!(error = %errchain::chain(&u), "XFRM event skipped"),
                }
            }
        }
    }

    /// The events as a stream (never ends on its own).
    pub fn into_stream(self) -> impl Stream<Item = Result<XfrmEvent, Error>> + Send + 'static {
        futures::stream::unfold(self, |mut m| async move {
            let e = m.next_event().await;
            Some((e, m))
        })
    }
}
