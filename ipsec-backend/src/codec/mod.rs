//! The XFRM netlink codec: `struct xfrm_*` from `<linux/xfrm.h>`, the XFRMA_*
//! attributes and the XFRM_MSG_* messages, parsed from and emitted to bytes.
//!
//! It does not open sockets or talk to the kernel (see [`crate::netlink`]),
//! and it does not interpret what the fields mean for IPsec (see
//! [`crate::types`]); it is a faithful, lossless mapping: any message parsed
//! here is emitted back byte-identical (golden tests against iproute2's and
//! the kernel's bytes prove it), and unknown attributes, and known ones
//! whose size is not the struct's, are carried as raw bytes. Padding inside
//! structs is not represented: it is emitted as zero, as the kernel and
//! iproute2 send it.
//!
//! Inside: the message types, attribute kinds, multicast groups, netlink
//! header flags and [`XfrmMessage`] (here), the `struct xfrm_*` (`structs`),
//! the attributes (`attrs`), and the bounds-checked reader and writer
//! (`wire`).
//!
//! # Why not netlink-packet-xfrm
//!
//! rust-netlink's `netlink-packet-xfrm` 0.5, checked against the captured
//! bytes and the kernel sources, falls short where this crate needs it most:
//!
//! * `XfrmAttrs::Migrate(UserMigrate)` holds **one** `xfrm_user_migrate`,
//!   but the kernel reads XFRMA_MIGRATE as an *array* of up to
//!   `XFRM_MAX_DEPTH` (6) entries (`copy_from_user_migrate`), which is how a
//!   key manager moves an ESP SA and its companion SAs in one call. A
//!   two-entry MIGRATE parses without error but the second entry is dropped
//!   (checked: re-emitted 144 of 220 bytes), so it can be neither read nor
//!   sent.
//! * `MigrateMessage::parse` slices `&buf[..size_of::<UserPolicyIdBuffer>()]`
//!   and panics on a truncated MIGRATE body (checked: a 10-byte body
//!   panics); this crate must never panic on kernel (or fuzzer) input.
//! * It has no MAPPING/NAT-T port-change view that matches the rest of our
//!   types, and errors are `DecodeError` strings, not a typed cause.
//!
//! The fixed-layout structs are small and stable ABI, so owning them costs
//! little; the netlink framing is equally simple. Socket handling uses
//! `netlink-sys` (see [`crate::netlink`]).

mod attrs;
mod structs;
mod wire;

pub use attrs::{Attr, emit_attrs, parse_attrs};
pub use structs::{
    Algo, EncapTmpl, LifetimeCfg, LifetimeCur, ReplayEsn, Selector, Stats, UserKmAddress,
    UserMigrate, UserPolicyId, UserPolicyInfo, UserSaId, UserSaInfo, UserTmpl, XfrmAddress, XfrmId,
    family_of,
};
pub(crate) use wire::align4;
use wire::{Put, Reader};

// Netlink header flags (`nlmsghdr.nlmsg_flags`, `<linux/netlink.h>`): the
// socket layer sets them, and a dump request's body is parsed by them.

/// `NLM_F_REQUEST`.
pub const NLM_F_REQUEST: u16 = 0x1;
/// `NLM_F_MULTI`.
pub const NLM_F_MULTI: u16 = 0x2;
/// `NLM_F_ACK`.
pub const NLM_F_ACK: u16 = 0x4;
/// `NLM_F_DUMP` (= ROOT | MATCH).
pub const NLM_F_DUMP: u16 = 0x300;
/// `NLM_F_REPLACE`.
pub const NLM_F_REPLACE: u16 = 0x100;
/// `NLM_F_EXCL`.
pub const NLM_F_EXCL: u16 = 0x200;
/// `NLM_F_CREATE`.
pub const NLM_F_CREATE: u16 = 0x400;
/// `NLM_F_CAPPED` (on NLMSG_ERROR: only the header of the request is echoed).
pub const NLM_F_CAPPED: u16 = 0x100;
/// `NLM_F_ACK_TLVS` (on NLMSG_ERROR: extended-ack attributes follow).
pub const NLM_F_ACK_TLVS: u16 = 0x200;

/// A malformed or truncated netlink/XFRM message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input ended before a structure was complete.
    #[error("truncated {what}: need {need} bytes, have {have}")]
    Truncated {
        /// What was being decoded.
        what: &'static str,
        /// Bytes needed.
        need: usize,
        /// Bytes available.
        have: usize,
    },
    /// A length field is inconsistent with the data.
    #[error("bad length in {what}: {len}")]
    BadLength {
        /// What was being decoded.
        what: &'static str,
        /// The offending length.
        len: usize,
    },
}

/// XFRM message types (`XFRM_MSG_*`).
#[allow(missing_docs)]
pub mod msg {
    pub const NEWSA: u16 = 0x10;
    pub const DELSA: u16 = 0x11;
    pub const GETSA: u16 = 0x12;
    pub const NEWPOLICY: u16 = 0x13;
    pub const DELPOLICY: u16 = 0x14;
    pub const GETPOLICY: u16 = 0x15;
    pub const ALLOCSPI: u16 = 0x16;
    pub const ACQUIRE: u16 = 0x17;
    pub const EXPIRE: u16 = 0x18;
    pub const UPDPOLICY: u16 = 0x19;
    pub const UPDSA: u16 = 0x1a;
    pub const POLEXPIRE: u16 = 0x1b;
    pub const FLUSHSA: u16 = 0x1c;
    pub const FLUSHPOLICY: u16 = 0x1d;
    pub const NEWAE: u16 = 0x1e;
    pub const GETAE: u16 = 0x1f;
    pub const REPORT: u16 = 0x20;
    pub const MIGRATE: u16 = 0x21;
    pub const MAPPING: u16 = 0x26;
}

/// XFRM attribute types (`XFRMA_*`).
#[allow(missing_docs)]
pub mod attr {
    pub const ALG_AUTH: u16 = 1;
    pub const ALG_CRYPT: u16 = 2;
    pub const ALG_COMP: u16 = 3;
    pub const ENCAP: u16 = 4;
    pub const TMPL: u16 = 5;
    pub const SA: u16 = 6;
    pub const POLICY: u16 = 7;
    pub const LTIME_VAL: u16 = 9;
    pub const REPLAY_VAL: u16 = 10;
    pub const REPLAY_THRESH: u16 = 11;
    pub const ETIMER_THRESH: u16 = 12;
    pub const SRCADDR: u16 = 13;
    pub const COADDR: u16 = 14;
    pub const LASTUSED: u16 = 15;
    pub const POLICY_TYPE: u16 = 16;
    pub const MIGRATE: u16 = 17;
    pub const ALG_AEAD: u16 = 18;
    pub const KMADDRESS: u16 = 19;
    pub const ALG_AUTH_TRUNC: u16 = 20;
    pub const MARK: u16 = 21;
    pub const TFCPAD: u16 = 22;
    pub const REPLAY_ESN_VAL: u16 = 23;
    pub const SA_EXTRA_FLAGS: u16 = 24;
    pub const PROTO: u16 = 25;
    pub const SET_MARK: u16 = 29;
    pub const SET_MARK_MASK: u16 = 30;
    pub const IF_ID: u16 = 31;
}

/// Netlink multicast groups of NETLINK_XFRM (`XFRMNLGRP_*`).
#[allow(missing_docs)]
pub mod group {
    pub const ACQUIRE: u32 = 1;
    pub const EXPIRE: u32 = 2;
    pub const SA: u32 = 3;
    pub const POLICY: u32 = 4;
    pub const AEVENTS: u32 = 5;
    pub const REPORT: u32 = 6;
    pub const MIGRATE: u32 = 7;
    pub const MAPPING: u32 = 8;
}

/// `AF_INET` as the kernel spells it in XFRM structs.
pub const AF_INET: u16 = 2;
/// `AF_INET6`.
pub const AF_INET6: u16 = 10;

/// An XFRM message body, by type. Dump replies and notifications reuse the
/// request layouts (e.g. a dumped SA is an [`XfrmMessage::NewSa`]).
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XfrmMessage {
    NewSa(UserSaInfo, Vec<Attr>),
    UpdSa(UserSaInfo, Vec<Attr>),
    DelSa(UserSaId, Vec<Attr>),
    GetSa(UserSaId, Vec<Attr>),
    NewPolicy(UserPolicyInfo, Vec<Attr>),
    UpdPolicy(UserPolicyInfo, Vec<Attr>),
    DelPolicy(UserPolicyId, Vec<Attr>),
    GetPolicy(UserPolicyId, Vec<Attr>),
    /// `xfrm_userspi_info`: the larval SA template, min, max.
    AllocSpi(UserSaInfo, u32, u32, Vec<Attr>),
    /// `xfrm_user_acquire`: id, saddr, sel, policy, then aalgos/ealgos/calgos/seq.
    Acquire(
        XfrmId,
        XfrmAddress,
        Selector,
        UserPolicyInfo,
        [u32; 4],
        Vec<Attr>,
    ),
    /// `xfrm_user_expire`: state, hard.
    Expire(UserSaInfo, u8, Vec<Attr>),
    /// `xfrm_user_polexpire`: policy, hard.
    PolExpire(UserPolicyInfo, u8, Vec<Attr>),
    /// `xfrm_usersa_flush`: proto (0 = all).
    FlushSa(u8, Vec<Attr>),
    FlushPolicy(Vec<Attr>),
    Migrate(UserPolicyId, Vec<Attr>),
    /// `xfrm_user_mapping`: id, reqid, old/new saddr, old/new sport.
    Mapping(UserSaId, u32, XfrmAddress, XfrmAddress, u16, u16, Vec<Attr>),
    /// A dump request or any other message kept raw.
    Raw(u16, Vec<u8>),
}

impl XfrmMessage {
    /// The XFRM_MSG_* type.
    pub fn message_type(&self) -> u16 {
        match self {
            XfrmMessage::NewSa(..) => msg::NEWSA,
            XfrmMessage::UpdSa(..) => msg::UPDSA,
            XfrmMessage::DelSa(..) => msg::DELSA,
            XfrmMessage::GetSa(..) => msg::GETSA,
            XfrmMessage::NewPolicy(..) => msg::NEWPOLICY,
            XfrmMessage::UpdPolicy(..) => msg::UPDPOLICY,
            XfrmMessage::DelPolicy(..) => msg::DELPOLICY,
            XfrmMessage::GetPolicy(..) => msg::GETPOLICY,
            XfrmMessage::AllocSpi(..) => msg::ALLOCSPI,
            XfrmMessage::Acquire(..) => msg::ACQUIRE,
            XfrmMessage::Expire(..) => msg::EXPIRE,
            XfrmMessage::PolExpire(..) => msg::POLEXPIRE,
            XfrmMessage::FlushSa(..) => msg::FLUSHSA,
            XfrmMessage::FlushPolicy(..) => msg::FLUSHPOLICY,
            XfrmMessage::Migrate(..) => msg::MIGRATE,
            XfrmMessage::Mapping(..) => msg::MAPPING,
            XfrmMessage::Raw(t, _) => *t,
        }
    }

    /// Parse a message body of type `ty`. Dump requests (`NLM_F_DUMP`) are
    /// kept raw because their body is optional.
    pub fn parse(ty: u16, flags: u16, p: &[u8]) -> Result<Self, DecodeError> {
        if flags & NLM_F_DUMP == NLM_F_DUMP && flags & NLM_F_REQUEST != 0 {
            return Ok(XfrmMessage::Raw(ty, p.to_vec()));
        }
        let mut r = Reader::new(p, "XFRM message body");
        let m = match ty {
            msg::NEWSA | msg::UPDSA => {
                let info = UserSaInfo::read(&mut r)?;
                let a = parse_attrs(r.rest())?;
                if ty == msg::NEWSA {
                    XfrmMessage::NewSa(info, a)
                } else {
                    XfrmMessage::UpdSa(info, a)
                }
            }
            msg::DELSA | msg::GETSA => {
                let id = UserSaId::read(&mut r)?;
                let a = parse_attrs(r.rest())?;
                if ty == msg::DELSA {
                    XfrmMessage::DelSa(id, a)
                } else {
                    XfrmMessage::GetSa(id, a)
                }
            }
            msg::NEWPOLICY | msg::UPDPOLICY => {
                let info = UserPolicyInfo::read(&mut r)?;
                let a = parse_attrs(r.rest())?;
                if ty == msg::NEWPOLICY {
                    XfrmMessage::NewPolicy(info, a)
                } else {
                    XfrmMessage::UpdPolicy(info, a)
                }
            }
            msg::DELPOLICY | msg::GETPOLICY | msg::MIGRATE => {
                let id = UserPolicyId::read(&mut r)?;
                let a = parse_attrs(r.rest())?;
                match ty {
                    msg::DELPOLICY => XfrmMessage::DelPolicy(id, a),
                    msg::GETPOLICY => XfrmMessage::GetPolicy(id, a),
                    _ => XfrmMessage::Migrate(id, a),
                }
            }
            msg::ALLOCSPI => {
                let info = UserSaInfo::read(&mut r)?;
                let min = r.u32()?;
                let max = r.u32()?;
                // struct xfrm_userspi_info is 8-aligned: 224 + 8 = 232, no tail pad.
                XfrmMessage::AllocSpi(info, min, max, parse_attrs(r.rest())?)
            }
            msg::ACQUIRE => {
                let id = XfrmId::read(&mut r)?;
                let saddr = XfrmAddress::read(&mut r)?;
                let sel = Selector::read(&mut r)?;
                let pol = UserPolicyInfo::read(&mut r)?;
                let algs = [r.u32()?, r.u32()?, r.u32()?, r.u32()?];
                XfrmMessage::Acquire(id, saddr, sel, pol, algs, parse_attrs(r.rest())?)
            }
            msg::EXPIRE => {
                let st = UserSaInfo::read(&mut r)?;
                let hard = r.u8()?;
                r.skip(7)?;
                XfrmMessage::Expire(st, hard, parse_attrs(r.rest())?)
            }
            msg::POLEXPIRE => {
                let pol = UserPolicyInfo::read(&mut r)?;
                let hard = r.u8()?;
                r.skip(7)?;
                XfrmMessage::PolExpire(pol, hard, parse_attrs(r.rest())?)
            }
            msg::FLUSHSA => {
                let proto = r.u8()?;
                // NLMSG_ALIGN(1) = 4: attributes (if any) start at offset 4.
                let rest = r.rest();
                match rest.len() {
                    0 => XfrmMessage::FlushSa(proto, Vec::new()),
                    n if n > 3 => XfrmMessage::FlushSa(proto, parse_attrs(&rest[3..])?),
                    _ => XfrmMessage::Raw(ty, p.to_vec()),
                }
            }
            msg::FLUSHPOLICY => XfrmMessage::FlushPolicy(parse_attrs(r.rest())?),
            msg::MAPPING => {
                let id = UserSaId::read(&mut r)?;
                let reqid = r.u32()?;
                let old = XfrmAddress::read(&mut r)?;
                let new = XfrmAddress::read(&mut r)?;
                let osp = r.be16()?;
                let nsp = r.be16()?;
                XfrmMessage::Mapping(id, reqid, old, new, osp, nsp, parse_attrs(r.rest())?)
            }
            _ => XfrmMessage::Raw(ty, p.to_vec()),
        };
        Ok(m)
    }

    /// Emit the body (everything after the 16-byte netlink header).
    pub fn emit(&self, b: &mut Vec<u8>) {
        match self {
            XfrmMessage::NewSa(i, a) | XfrmMessage::UpdSa(i, a) => {
                i.emit(b);
                emit_attrs(a, b);
            }
            XfrmMessage::DelSa(i, a) | XfrmMessage::GetSa(i, a) => {
                i.emit(b);
                emit_attrs(a, b);
            }
            XfrmMessage::NewPolicy(i, a) | XfrmMessage::UpdPolicy(i, a) => {
                i.emit(b);
                emit_attrs(a, b);
            }
            XfrmMessage::DelPolicy(i, a)
            | XfrmMessage::GetPolicy(i, a)
            | XfrmMessage::Migrate(i, a) => {
                i.emit(b);
                emit_attrs(a, b);
            }
            XfrmMessage::AllocSpi(i, min, max, a) => {
                i.emit(b);
                b.put_u32(*min);
                b.put_u32(*max);
                emit_attrs(a, b);
            }
            XfrmMessage::Acquire(id, saddr, sel, pol, algs, a) => {
                id.emit(b);
                saddr.emit(b);
                sel.emit(b);
                pol.emit(b);
                algs.iter().for_each(|x| b.put_u32(*x));
                emit_attrs(a, b);
            }
            XfrmMessage::Expire(st, hard, a) => {
                st.emit(b);
                b.put_u8(*hard);
                b.put_zeros(7);
                emit_attrs(a, b);
            }
            XfrmMessage::PolExpire(p, hard, a) => {
                p.emit(b);
                b.put_u8(*hard);
                b.put_zeros(7);
                emit_attrs(a, b);
            }
            XfrmMessage::FlushSa(proto, a) => {
                b.put_u8(*proto);
                if !a.is_empty() {
                    b.put_zeros(3);
                    emit_attrs(a, b);
                }
            }
            XfrmMessage::FlushPolicy(a) => emit_attrs(a, b),
            XfrmMessage::Mapping(id, reqid, old, new, osp, nsp, a) => {
                id.emit(b);
                b.put_u32(*reqid);
                old.emit(b);
                new.emit(b);
                b.put_be16(*osp);
                b.put_be16(*nsp);
                emit_attrs(a, b);
            }
            XfrmMessage::Raw(_, p) => b.extend_from_slice(p),
        }
    }

    /// The attributes of this message (empty for raw messages).
    pub fn attrs(&self) -> &[Attr] {
        match self {
            XfrmMessage::NewSa(_, a)
            | XfrmMessage::UpdSa(_, a)
            | XfrmMessage::DelSa(_, a)
            | XfrmMessage::GetSa(_, a)
            | XfrmMessage::NewPolicy(_, a)
            | XfrmMessage::UpdPolicy(_, a)
            | XfrmMessage::DelPolicy(_, a)
            | XfrmMessage::GetPolicy(_, a)
            | XfrmMessage::AllocSpi(_, _, _, a)
            | XfrmMessage::Acquire(_, _, _, _, _, a)
            | XfrmMessage::Expire(_, _, a)
            | XfrmMessage::PolExpire(_, _, a)
            | XfrmMessage::FlushSa(_, a)
            | XfrmMessage::FlushPolicy(a)
            | XfrmMessage::Migrate(_, a)
            | XfrmMessage::Mapping(_, _, _, _, _, _, a) => a,
            XfrmMessage::Raw(..) => &[],
        }
    }
}
