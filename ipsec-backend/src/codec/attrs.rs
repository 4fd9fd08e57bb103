//! The XFRMA_* attributes: one [`Attr`] per kind this crate reads, with
//! unknown kinds and known ones of an unexpected size kept raw, and runs of
//! attributes parsed and emitted 4-byte aligned.

use super::wire::{Put, Reader, align4};
use super::{
    Algo, DecodeError, EncapTmpl, LifetimeCur, ReplayEsn, UserKmAddress, UserMigrate,
    UserPolicyInfo, UserSaInfo, UserTmpl, XfrmAddress, attr,
};

/// One XFRMA_* attribute. Unknown or uninteresting kinds stay raw in
/// [`Attr::Other`], so parse-then-emit is lossless.
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attr {
    AlgAuth(Algo),
    AlgCrypt(Algo),
    AlgComp(Algo),
    AlgAead(Algo),
    AlgAuthTrunc(Algo),
    Encap(EncapTmpl),
    Tmpl(Vec<UserTmpl>),
    Sa(UserSaInfo),
    Policy(UserPolicyInfo),
    LifetimeVal(LifetimeCur),
    /// `struct xfrm_replay_state`: oseq, seq, bitmap.
    ReplayVal([u32; 3]),
    ReplayThresh(u32),
    EtimerThresh(u32),
    SrcAddr(XfrmAddress),
    CoAddr(XfrmAddress),
    LastUsed(u64),
    /// `struct xfrm_userpolicy_type`: type (0 main, 1 sub).
    PolicyType(u8),
    Migrate(Vec<UserMigrate>),
    KmAddress(UserKmAddress),
    /// `struct xfrm_mark`: value, mask.
    Mark(u32, u32),
    TfcPad(u32),
    ReplayEsnVal(ReplayEsn),
    SaExtraFlags(u32),
    Proto(u8),
    SetMark(u32),
    SetMarkMask(u32),
    IfId(u32),
    Other(u16, Vec<u8>),
}

fn one_u32(p: &[u8], what: &'static str) -> Result<u32, DecodeError> {
    let mut r = Reader::new(p, what);
    r.u32()
}

impl Attr {
    /// The XFRMA_* number.
    pub fn kind(&self) -> u16 {
        match self {
            Attr::AlgAuth(_) => attr::ALG_AUTH,
            Attr::AlgCrypt(_) => attr::ALG_CRYPT,
            Attr::AlgComp(_) => attr::ALG_COMP,
            Attr::AlgAead(_) => attr::ALG_AEAD,
            Attr::AlgAuthTrunc(_) => attr::ALG_AUTH_TRUNC,
            Attr::Encap(_) => attr::ENCAP,
            Attr::Tmpl(_) => attr::TMPL,
            Attr::Sa(_) => attr::SA,
            Attr::Policy(_) => attr::POLICY,
            Attr::LifetimeVal(_) => attr::LTIME_VAL,
            Attr::ReplayVal(_) => attr::REPLAY_VAL,
            Attr::ReplayThresh(_) => attr::REPLAY_THRESH,
            Attr::EtimerThresh(_) => attr::ETIMER_THRESH,
            Attr::SrcAddr(_) => attr::SRCADDR,
            Attr::CoAddr(_) => attr::COADDR,
            Attr::LastUsed(_) => attr::LASTUSED,
            Attr::PolicyType(_) => attr::POLICY_TYPE,
            Attr::Migrate(_) => attr::MIGRATE,
            Attr::KmAddress(_) => attr::KMADDRESS,
            Attr::Mark(..) => attr::MARK,
            Attr::TfcPad(_) => attr::TFCPAD,
            Attr::ReplayEsnVal(_) => attr::REPLAY_ESN_VAL,
            Attr::SaExtraFlags(_) => attr::SA_EXTRA_FLAGS,
            Attr::Proto(_) => attr::PROTO,
            Attr::SetMark(_) => attr::SET_MARK,
            Attr::SetMarkMask(_) => attr::SET_MARK_MASK,
            Attr::IfId(_) => attr::IF_ID,
            Attr::Other(k, _) => *k,
        }
    }

    fn parse(kind: u16, p: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(p, "XFRMA attribute");
        Ok(match kind {
            attr::ALG_AUTH => Attr::AlgAuth(Algo::read(&mut r, false)?),
            attr::ALG_CRYPT => Attr::AlgCrypt(Algo::read(&mut r, false)?),
            attr::ALG_COMP => Attr::AlgComp(Algo::read(&mut r, false)?),
            attr::ALG_AEAD => Attr::AlgAead(Algo::read(&mut r, true)?),
            attr::ALG_AUTH_TRUNC => Attr::AlgAuthTrunc(Algo::read(&mut r, true)?),
            attr::ENCAP if p.len() == 24 => {
                let encap_type = r.u16()?;
                let sport = r.be16()?;
                let dport = r.be16()?;
                r.skip(2)?;
                Attr::Encap(EncapTmpl {
                    encap_type,
                    sport,
                    dport,
                    oa: XfrmAddress::read(&mut r)?,
                })
            }
            attr::TMPL => {
                if !p.len().is_multiple_of(UserTmpl::LEN) {
                    return Err(DecodeError::BadLength {
                        what: "XFRMA_TMPL",
                        len: p.len(),
                    });
                }
                let mut v = Vec::with_capacity(p.len() / UserTmpl::LEN);
                while r.remaining() > 0 {
                    v.push(UserTmpl::read(&mut r)?);
                }
                Attr::Tmpl(v)
            }
            attr::MIGRATE => {
                if !p.len().is_multiple_of(UserMigrate::LEN) {
                    return Err(DecodeError::BadLength {
                        what: "XFRMA_MIGRATE",
                        len: p.len(),
                    });
                }
                let mut v = Vec::with_capacity(p.len() / UserMigrate::LEN);
                while r.remaining() > 0 {
                    v.push(UserMigrate::read(&mut r)?);
                }
                Attr::Migrate(v)
            }
            attr::SA if p.len() == UserSaInfo::LEN => Attr::Sa(UserSaInfo::read(&mut r)?),
            attr::POLICY if p.len() == UserPolicyInfo::LEN => {
                Attr::Policy(UserPolicyInfo::read(&mut r)?)
            }
            attr::LTIME_VAL if p.len() == 32 => Attr::LifetimeVal(LifetimeCur::read(&mut r)?),
            attr::REPLAY_VAL if p.len() == 12 => Attr::ReplayVal([r.u32()?, r.u32()?, r.u32()?]),
            attr::REPLAY_THRESH if p.len() == 4 => {
                Attr::ReplayThresh(one_u32(p, "XFRMA_REPLAY_THRESH")?)
            }
            attr::ETIMER_THRESH if p.len() == 4 => {
                Attr::EtimerThresh(one_u32(p, "XFRMA_ETIMER_THRESH")?)
            }
            attr::SRCADDR if p.len() == 16 => Attr::SrcAddr(XfrmAddress::read(&mut r)?),
            attr::COADDR if p.len() == 16 => Attr::CoAddr(XfrmAddress::read(&mut r)?),
            attr::LASTUSED if p.len() == 8 => Attr::LastUsed(r.u64()?),
            attr::POLICY_TYPE if p.len() == 6 && p[1..].iter().all(|b| *b == 0) => {
                Attr::PolicyType(p[0])
            }
            attr::KMADDRESS if p.len() == 40 && p[32..36] == [0; 4] && p[38..] == [0; 2] => {
                let local = XfrmAddress::read(&mut r)?;
                let remote = XfrmAddress::read(&mut r)?;
                r.skip(4)?;
                Attr::KmAddress(UserKmAddress {
                    local,
                    remote,
                    family: r.u16()?,
                })
            }
            attr::MARK if p.len() == 8 => Attr::Mark(r.u32()?, r.u32()?),
            attr::TFCPAD if p.len() == 4 => Attr::TfcPad(r.u32()?),
            attr::REPLAY_ESN_VAL => {
                let bmp_len = r.u32()?;
                let mut e = ReplayEsn {
                    bmp_len,
                    oseq: r.u32()?,
                    seq: r.u32()?,
                    oseq_hi: r.u32()?,
                    seq_hi: r.u32()?,
                    replay_window: r.u32()?,
                    bmp: Vec::new(),
                };
                let n = bmp_len as usize;
                let have = r.remaining();
                if have != 0 && have != n.saturating_mul(4) {
                    return Err(DecodeError::BadLength {
                        what: "XFRMA_REPLAY_ESN_VAL bitmap",
                        len: r.remaining(),
                    });
                }
                while r.remaining() >= 4 {
                    e.bmp.push(r.u32()?);
                }
                Attr::ReplayEsnVal(e)
            }
            attr::SA_EXTRA_FLAGS if p.len() == 4 => Attr::SaExtraFlags(r.u32()?),
            attr::PROTO if p.len() == 1 => Attr::Proto(p[0]),
            attr::SET_MARK if p.len() == 4 => Attr::SetMark(r.u32()?),
            attr::SET_MARK_MASK if p.len() == 4 => Attr::SetMarkMask(r.u32()?),
            attr::IF_ID if p.len() == 4 => Attr::IfId(r.u32()?),
            _ => Attr::Other(kind, p.to_vec()),
        })
    }

    fn emit_payload(&self, b: &mut Vec<u8>) {
        match self {
            Attr::AlgAuth(a) | Attr::AlgCrypt(a) | Attr::AlgComp(a) => a.emit(b, false),
            Attr::AlgAead(a) | Attr::AlgAuthTrunc(a) => a.emit(b, true),
            Attr::Encap(e) => {
                b.put_u16(e.encap_type);
                b.put_be16(e.sport);
                b.put_be16(e.dport);
                b.put_zeros(2);
                e.oa.emit(b);
            }
            Attr::Tmpl(v) => v.iter().for_each(|t| t.emit(b)),
            Attr::Migrate(v) => v.iter().for_each(|m| m.emit(b)),
            Attr::Sa(s) => s.emit(b),
            Attr::Policy(p) => p.emit(b),
            Attr::LifetimeVal(l) => l.emit(b),
            Attr::ReplayVal(v) => v.iter().for_each(|x| b.put_u32(*x)),
            Attr::ReplayThresh(v)
            | Attr::EtimerThresh(v)
            | Attr::TfcPad(v)
            | Attr::SaExtraFlags(v)
            | Attr::SetMark(v)
            | Attr::SetMarkMask(v)
            | Attr::IfId(v) => b.put_u32(*v),
            Attr::SrcAddr(a) | Attr::CoAddr(a) => a.emit(b),
            Attr::LastUsed(v) => b.put_u64(*v),
            Attr::PolicyType(t) => {
                b.put_u8(*t);
                b.put_zeros(5);
            }
            Attr::KmAddress(k) => {
                k.local.emit(b);
                k.remote.emit(b);
                b.put_u32(0);
                b.put_u16(k.family);
                b.put_zeros(2);
            }
            Attr::Mark(v, m) => {
                b.put_u32(*v);
                b.put_u32(*m);
            }
            Attr::ReplayEsnVal(e) => {
                b.put_u32(e.bmp_len);
                for v in [e.oseq, e.seq, e.oseq_hi, e.seq_hi, e.replay_window] {
                    b.put_u32(v);
                }
                e.bmp.iter().for_each(|x| b.put_u32(*x));
            }
            Attr::Proto(p) => b.put_u8(*p),
            Attr::Other(_, d) => b.extend_from_slice(d),
        }
    }

    fn emit(&self, b: &mut Vec<u8>) {
        let start = b.len();
        b.put_u16(0);
        b.put_u16(self.kind());
        self.emit_payload(b);
        let len = b.len() - start;
        let l = u16::try_from(len).unwrap_or(u16::MAX).to_ne_bytes();
        b[start..start + 2].copy_from_slice(&l);
        b.put_zeros(align4(len) - len);
    }
}

/// Parse a run of attributes (the tail of an XFRM message).
pub fn parse_attrs(buf: &[u8]) -> Result<Vec<Attr>, DecodeError> {
    let mut out = Vec::new();
    let mut off = 0usize;
    while off < buf.len() {
        let rest = &buf[off..];
        let mut r = Reader::new(rest, "attribute header");
        let len = r.u16()? as usize;
        let kind = r.u16()?;
        if len < 4 || len > rest.len() {
            return Err(DecodeError::BadLength {
                what: "attribute",
                len,
            });
        }
        // NLA_F_NESTED / NLA_F_NET_BYTEORDER are not used by XFRM; keep them
        // in the raw kind so Other round-trips.
        out.push(Attr::parse(kind, &rest[4..len])?);
        off += align4(len);
    }
    Ok(out)
}

/// Emit attributes, each padded to 4 bytes.
pub fn emit_attrs(attrs: &[Attr], b: &mut Vec<u8>) {
    attrs.iter().for_each(|a| a.emit(b));
}
