//! The fixed-layout `struct xfrm_*` of `<linux/xfrm.h>`, each read from
//! and written to its exact kernel size (padding as zeros), with the field
//! names the kernel uses.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use super::wire::{Put, Reader};
use super::{AF_INET, AF_INET6, DecodeError};

/// `xfrm_address_t`: 16 raw bytes; IPv4 uses the first four.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct XfrmAddress(pub [u8; 16]);

impl XfrmAddress {
    /// Interpret with the given address family; `None` for unknown families.
    pub fn to_ip(&self, family: u16) -> Option<IpAddr> {
        match family {
            AF_INET => Some(IpAddr::V4(Ipv4Addr::new(
                self.0[0], self.0[1], self.0[2], self.0[3],
            ))),
            AF_INET6 => Some(IpAddr::V6(Ipv6Addr::from(self.0))),
            _ => None,
        }
    }
    pub(super) fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self(r.array()?))
    }
    pub(super) fn emit(&self, b: &mut Vec<u8>) {
        b.extend_from_slice(&self.0);
    }
}

impl From<IpAddr> for XfrmAddress {
    fn from(ip: IpAddr) -> Self {
        let mut a = [0u8; 16];
        match ip {
            IpAddr::V4(v4) => a[..4].copy_from_slice(&v4.octets()),
            IpAddr::V6(v6) => a = v6.octets(),
        }
        Self(a)
    }
}

/// Address family number of an IP address.
pub fn family_of(ip: &IpAddr) -> u16 {
    if ip.is_ipv4() { AF_INET } else { AF_INET6 }
}

/// `struct xfrm_selector` (56 bytes).
#[allow(missing_docs)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Selector {
    pub daddr: XfrmAddress,
    pub saddr: XfrmAddress,
    pub dport: u16,
    pub dport_mask: u16,
    pub sport: u16,
    pub sport_mask: u16,
    pub family: u16,
    pub prefixlen_d: u8,
    pub prefixlen_s: u8,
    pub proto: u8,
    pub ifindex: i32,
    pub user: u32,
}

impl Selector {
    /// Wire size.
    pub const LEN: usize = 56;
    pub(super) fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let daddr = XfrmAddress::read(r)?;
        let saddr = XfrmAddress::read(r)?;
        let dport = r.be16()?;
        let dport_mask = r.be16()?;
        let sport = r.be16()?;
        let sport_mask = r.be16()?;
        let family = r.u16()?;
        let prefixlen_d = r.u8()?;
        let prefixlen_s = r.u8()?;
        let proto = r.u8()?;
        r.skip(3)?;
        Ok(Self {
            daddr,
            saddr,
            dport,
            dport_mask,
            sport,
            sport_mask,
            family,
            prefixlen_d,
            prefixlen_s,
            proto,
            ifindex: r.i32()?,
            user: r.u32()?,
        })
    }
    pub(super) fn emit(&self, b: &mut Vec<u8>) {
        self.daddr.emit(b);
        self.saddr.emit(b);
        b.put_be16(self.dport);
        b.put_be16(self.dport_mask);
        b.put_be16(self.sport);
        b.put_be16(self.sport_mask);
        b.put_u16(self.family);
        b.put_u8(self.prefixlen_d);
        b.put_u8(self.prefixlen_s);
        b.put_u8(self.proto);
        b.put_zeros(3);
        b.put_i32(self.ifindex);
        b.put_u32(self.user);
    }
}

/// `struct xfrm_id` (24 bytes). `spi` is in host order here.
#[allow(missing_docs)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct XfrmId {
    pub daddr: XfrmAddress,
    pub spi: u32,
    pub proto: u8,
}

impl XfrmId {
    pub(super) fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let daddr = XfrmAddress::read(r)?;
        let spi = r.be32()?;
        let proto = r.u8()?;
        r.skip(3)?;
        Ok(Self { daddr, spi, proto })
    }
    pub(super) fn emit(&self, b: &mut Vec<u8>) {
        self.daddr.emit(b);
        b.put_be32(self.spi);
        b.put_u8(self.proto);
        b.put_zeros(3);
    }
}

/// `struct xfrm_lifetime_cfg` (64 bytes).
#[allow(missing_docs)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LifetimeCfg {
    pub soft_byte_limit: u64,
    pub hard_byte_limit: u64,
    pub soft_packet_limit: u64,
    pub hard_packet_limit: u64,
    pub soft_add_expires_seconds: u64,
    pub hard_add_expires_seconds: u64,
    pub soft_use_expires_seconds: u64,
    pub hard_use_expires_seconds: u64,
}

impl LifetimeCfg {
    /// No limits (what iproute2 sends by default: all ones).
    pub const INFINITE: Self = Self {
        soft_byte_limit: u64::MAX,
        hard_byte_limit: u64::MAX,
        soft_packet_limit: u64::MAX,
        hard_packet_limit: u64::MAX,
        soft_add_expires_seconds: 0,
        hard_add_expires_seconds: 0,
        soft_use_expires_seconds: 0,
        hard_use_expires_seconds: 0,
    };
    pub(super) fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            soft_byte_limit: r.u64()?,
            hard_byte_limit: r.u64()?,
            soft_packet_limit: r.u64()?,
            hard_packet_limit: r.u64()?,
            soft_add_expires_seconds: r.u64()?,
            hard_add_expires_seconds: r.u64()?,
            soft_use_expires_seconds: r.u64()?,
            hard_use_expires_seconds: r.u64()?,
        })
    }
    pub(super) fn emit(&self, b: &mut Vec<u8>) {
        for v in [
            self.soft_byte_limit,
            self.hard_byte_limit,
            self.soft_packet_limit,
            self.hard_packet_limit,
            self.soft_add_expires_seconds,
            self.hard_add_expires_seconds,
            self.soft_use_expires_seconds,
            self.hard_use_expires_seconds,
        ] {
            b.put_u64(v);
        }
    }
}

/// `struct xfrm_lifetime_cur` (32 bytes): the SA's traffic counters.
#[allow(missing_docs)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LifetimeCur {
    pub bytes: u64,
    pub packets: u64,
    pub add_time: u64,
    pub use_time: u64,
}

impl LifetimeCur {
    pub(super) fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            bytes: r.u64()?,
            packets: r.u64()?,
            add_time: r.u64()?,
            use_time: r.u64()?,
        })
    }
    pub(super) fn emit(&self, b: &mut Vec<u8>) {
        b.put_u64(self.bytes);
        b.put_u64(self.packets);
        b.put_u64(self.add_time);
        b.put_u64(self.use_time);
    }
}

/// `struct xfrm_stats` (12 bytes).
#[allow(missing_docs)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Stats {
    pub replay_window: u32,
    pub replay: u32,
    pub integrity_failed: u32,
}

/// `struct xfrm_usersa_info` (224 bytes).
#[allow(missing_docs)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UserSaInfo {
    pub sel: Selector,
    pub id: XfrmId,
    pub saddr: XfrmAddress,
    pub lft: LifetimeCfg,
    pub curlft: LifetimeCur,
    pub stats: Stats,
    pub seq: u32,
    pub reqid: u32,
    pub family: u16,
    pub mode: u8,
    pub replay_window: u8,
    pub flags: u8,
}

impl UserSaInfo {
    /// Wire size.
    pub const LEN: usize = 224;
    pub(super) fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let sel = Selector::read(r)?;
        let id = XfrmId::read(r)?;
        let saddr = XfrmAddress::read(r)?;
        let lft = LifetimeCfg::read(r)?;
        let curlft = LifetimeCur::read(r)?;
        let stats = Stats {
            replay_window: r.u32()?,
            replay: r.u32()?,
            integrity_failed: r.u32()?,
        };
        let v = Self {
            sel,
            id,
            saddr,
            lft,
            curlft,
            stats,
            seq: r.u32()?,
            reqid: r.u32()?,
            family: r.u16()?,
            mode: r.u8()?,
            replay_window: r.u8()?,
            flags: r.u8()?,
        };
        r.skip(7)?;
        Ok(v)
    }
    pub(super) fn emit(&self, b: &mut Vec<u8>) {
        self.sel.emit(b);
        self.id.emit(b);
        self.saddr.emit(b);
        self.lft.emit(b);
        self.curlft.emit(b);
        b.put_u32(self.stats.replay_window);
        b.put_u32(self.stats.replay);
        b.put_u32(self.stats.integrity_failed);
        b.put_u32(self.seq);
        b.put_u32(self.reqid);
        b.put_u16(self.family);
        b.put_u8(self.mode);
        b.put_u8(self.replay_window);
        b.put_u8(self.flags);
        b.put_zeros(7);
    }
}

/// `struct xfrm_usersa_id` (24 bytes).
#[allow(missing_docs)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UserSaId {
    pub daddr: XfrmAddress,
    pub spi: u32,
    pub family: u16,
    pub proto: u8,
}

impl UserSaId {
    pub(super) fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let v = Self {
            daddr: XfrmAddress::read(r)?,
            spi: r.be32()?,
            family: r.u16()?,
            proto: r.u8()?,
        };
        r.skip(1)?;
        Ok(v)
    }
    pub(super) fn emit(&self, b: &mut Vec<u8>) {
        self.daddr.emit(b);
        b.put_be32(self.spi);
        b.put_u16(self.family);
        b.put_u8(self.proto);
        b.put_zeros(1);
    }
}

/// `struct xfrm_userpolicy_info` (168 bytes).
#[allow(missing_docs)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UserPolicyInfo {
    pub sel: Selector,
    pub lft: LifetimeCfg,
    pub curlft: LifetimeCur,
    pub priority: u32,
    pub index: u32,
    pub dir: u8,
    pub action: u8,
    pub flags: u8,
    pub share: u8,
}

impl UserPolicyInfo {
    /// Wire size.
    pub const LEN: usize = 168;
    pub(super) fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let v = Self {
            sel: Selector::read(r)?,
            lft: LifetimeCfg::read(r)?,
            curlft: LifetimeCur::read(r)?,
            priority: r.u32()?,
            index: r.u32()?,
            dir: r.u8()?,
            action: r.u8()?,
            flags: r.u8()?,
            share: r.u8()?,
        };
        r.skip(4)?;
        Ok(v)
    }
    /// The struct as the kernel takes it on its own, e.g. as the value of
    /// the IP_XFRM_POLICY / IPV6_XFRM_POLICY socket option.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(Self::LEN);
        self.emit(&mut b);
        b
    }
    pub(super) fn emit(&self, b: &mut Vec<u8>) {
        self.sel.emit(b);
        self.lft.emit(b);
        self.curlft.emit(b);
        b.put_u32(self.priority);
        b.put_u32(self.index);
        b.put_u8(self.dir);
        b.put_u8(self.action);
        b.put_u8(self.flags);
        b.put_u8(self.share);
        b.put_zeros(4);
    }
}

/// `struct xfrm_userpolicy_id` (64 bytes).
#[allow(missing_docs)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UserPolicyId {
    pub sel: Selector,
    pub index: u32,
    pub dir: u8,
}

impl UserPolicyId {
    pub(super) fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let v = Self {
            sel: Selector::read(r)?,
            index: r.u32()?,
            dir: r.u8()?,
        };
        r.skip(3)?;
        Ok(v)
    }
    pub(super) fn emit(&self, b: &mut Vec<u8>) {
        self.sel.emit(b);
        b.put_u32(self.index);
        b.put_u8(self.dir);
        b.put_zeros(3);
    }
}

/// `struct xfrm_user_tmpl` (64 bytes).
#[allow(missing_docs)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UserTmpl {
    pub id: XfrmId,
    pub family: u16,
    pub saddr: XfrmAddress,
    pub reqid: u32,
    pub mode: u8,
    pub share: u8,
    pub optional: u8,
    pub aalgos: u32,
    pub ealgos: u32,
    pub calgos: u32,
}

impl UserTmpl {
    pub(super) const LEN: usize = 64;
    pub(super) fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let id = XfrmId::read(r)?;
        let family = r.u16()?;
        r.skip(2)?;
        let saddr = XfrmAddress::read(r)?;
        let reqid = r.u32()?;
        let mode = r.u8()?;
        let share = r.u8()?;
        let optional = r.u8()?;
        r.skip(1)?;
        Ok(Self {
            id,
            family,
            saddr,
            reqid,
            mode,
            share,
            optional,
            aalgos: r.u32()?,
            ealgos: r.u32()?,
            calgos: r.u32()?,
        })
    }
    pub(super) fn emit(&self, b: &mut Vec<u8>) {
        self.id.emit(b);
        b.put_u16(self.family);
        b.put_zeros(2);
        self.saddr.emit(b);
        b.put_u32(self.reqid);
        b.put_u8(self.mode);
        b.put_u8(self.share);
        b.put_u8(self.optional);
        b.put_zeros(1);
        b.put_u32(self.aalgos);
        b.put_u32(self.ealgos);
        b.put_u32(self.calgos);
    }
}

/// `struct xfrm_user_migrate` (76 bytes): one SA/template to move.
#[allow(missing_docs)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UserMigrate {
    pub old_daddr: XfrmAddress,
    pub old_saddr: XfrmAddress,
    pub new_daddr: XfrmAddress,
    pub new_saddr: XfrmAddress,
    pub proto: u8,
    pub mode: u8,
    pub reqid: u32,
    pub old_family: u16,
    pub new_family: u16,
}

impl UserMigrate {
    pub(super) const LEN: usize = 76;
    pub(super) fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let old_daddr = XfrmAddress::read(r)?;
        let old_saddr = XfrmAddress::read(r)?;
        let new_daddr = XfrmAddress::read(r)?;
        let new_saddr = XfrmAddress::read(r)?;
        let proto = r.u8()?;
        let mode = r.u8()?;
        r.skip(2)?;
        Ok(Self {
            old_daddr,
            old_saddr,
            new_daddr,
            new_saddr,
            proto,
            mode,
            reqid: r.u32()?,
            old_family: r.u16()?,
            new_family: r.u16()?,
        })
    }
    pub(super) fn emit(&self, b: &mut Vec<u8>) {
        self.old_daddr.emit(b);
        self.old_saddr.emit(b);
        self.new_daddr.emit(b);
        self.new_saddr.emit(b);
        b.put_u8(self.proto);
        b.put_u8(self.mode);
        b.put_zeros(2);
        b.put_u32(self.reqid);
        b.put_u16(self.old_family);
        b.put_u16(self.new_family);
    }
}

/// `struct xfrm_user_kmaddress` (40 bytes): the key manager's own addresses.
#[allow(missing_docs)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UserKmAddress {
    pub local: XfrmAddress,
    pub remote: XfrmAddress,
    pub family: u16,
}

/// `struct xfrm_encap_tmpl` (24 bytes). Ports in host order here.
#[allow(missing_docs)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EncapTmpl {
    pub encap_type: u16,
    pub sport: u16,
    pub dport: u16,
    pub oa: XfrmAddress,
}

/// `struct xfrm_algo` / `xfrm_algo_auth` / `xfrm_algo_aead`: name, key
/// length in bits, key; `extra` is `alg_trunc_len` / `alg_icv_len` (bits)
/// for the auth-trunc and AEAD variants and unused for the plain one.
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Algo {
    pub name: [u8; 64],
    pub key_len_bits: u32,
    pub extra: u32,
    pub key: Vec<u8>,
}

impl Algo {
    /// Build from an algorithm name, key and extra (truncation/ICV bits).
    pub fn new(name: &str, key: &[u8], extra: u32) -> Self {
        let mut n = [0u8; 64];
        let b = name.as_bytes();
        let l = b.len().min(63);
        n[..l].copy_from_slice(&b[..l]);
        Self {
            name: n,
            key_len_bits: u32::try_from(key.len() * 8).unwrap_or(u32::MAX),
            extra,
            key: key.to_vec(),
        }
    }
    /// The name up to the first NUL.
    pub fn name_str(&self) -> String {
        let end = self.name.iter().position(|c| *c == 0).unwrap_or(64);
        String::from_utf8_lossy(&self.name[..end]).into_owned()
    }
    pub(super) fn read(r: &mut Reader<'_>, with_extra: bool) -> Result<Self, DecodeError> {
        let name = r.array::<64>()?;
        let key_len_bits = r.u32()?;
        let extra = if with_extra { r.u32()? } else { 0 };
        let key = r.rest().to_vec();
        Ok(Self {
            name,
            key_len_bits,
            extra,
            key,
        })
    }
    pub(super) fn emit(&self, b: &mut Vec<u8>, with_extra: bool) {
        b.extend_from_slice(&self.name);
        b.put_u32(self.key_len_bits);
        if with_extra {
            b.put_u32(self.extra);
        }
        b.extend_from_slice(&self.key);
    }
}

/// `struct xfrm_replay_state_esn` (24 bytes + bitmap). Requests may carry
/// the header only (iproute2 does: `bmp_len` set, no bitmap words; the
/// kernel accepts exactly `sizeof(struct xfrm_replay_state_esn)`), so the
/// words present are kept apart from `bmp_len`.
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReplayEsn {
    pub bmp_len: u32,
    pub oseq: u32,
    pub seq: u32,
    pub oseq_hi: u32,
    pub seq_hi: u32,
    pub replay_window: u32,
    pub bmp: Vec<u32>,
}
