//! Virtual IP addresses through the Configuration payload (RFC 7296
//! §3.15, §2.19): what a client asks for (CFG_REQUEST with
//! INTERNAL_IP4_ADDRESS / INTERNAL_IP6_ADDRESS and the DNS servers), what a
//! gateway hands out from its address pools (CFG_REPLY), and the gateway's
//! leases. Pure data and bookkeeping: installing an address on an
//! interface is the runtime's, and which traffic selectors follow from an
//! address is the SA's.
//!
//! §3.15.1 attribute values: INTERNAL_IP4_ADDRESS is four octets (none in
//! a request for any address), INTERNAL_IP6_ADDRESS sixteen octets and a
//! prefix length (§3.15.1: "the address and the prefix length"),
//! INTERNAL_IP4_DNS four, INTERNAL_IP6_DNS sixteen. Malformed values are
//! skipped, never trusted.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use crate::proto::{CfgType, Configuration};

use super::SaId;

/// §3.15.1 Configuration Attribute types used here.
pub mod attr {
    /// INTERNAL_IP4_ADDRESS.
    pub const INTERNAL_IP4_ADDRESS: u16 = 1;
    /// INTERNAL_IP4_DNS.
    pub const INTERNAL_IP4_DNS: u16 = 3;
    /// INTERNAL_IP6_ADDRESS.
    pub const INTERNAL_IP6_ADDRESS: u16 = 8;
    /// INTERNAL_IP6_DNS.
    pub const INTERNAL_IP6_DNS: u16 = 10;
}

/// A range of addresses a gateway hands out, from a CIDR: an IPv4 /n below
/// /31 leaves out its network and broadcast address, an IPv6 prefix its
/// all-zero one, as strongSwan's pools do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddrPool {
    /// First address handed out.
    pub first: IpAddr,
    /// Last address handed out.
    pub last: IpAddr,
}

/// Why a pool is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("address pool `{0}` is not a CIDR prefix with addresses to hand out, e.g. 10.9.0.0/24")]
pub struct PoolError(pub String);

fn to_u128(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(v) => u128::from(u32::from(v)),
        IpAddr::V6(v) => u128::from(v),
    }
}

fn from_u128(v: u128, v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from(v))
    } else {
        IpAddr::V4(Ipv4Addr::from(u32::try_from(v).unwrap_or(u32::MAX)))
    }
}

impl AddrPool {
    /// Parses `10.9.0.0/24` or `fd09::/120`.
    pub fn parse(s: &str) -> Result<Self, PoolError> {
        let bad = || PoolError(s.to_owned());
        let (a, p) = s.split_once('/').ok_or_else(bad)?;
        let addr: IpAddr = a.parse().map_err(|_| bad())?;
        let prefix: u32 = p.parse().map_err(|_| bad())?;
        let bits = if addr.is_ipv6() { 128 } else { 32 };
        if prefix > bits {
            return Err(bad());
        }
        let host_bits = bits - prefix;
        let size_mask = if host_bits == 128 {
            u128::MAX
        } else {
            (1u128 << host_bits) - 1
        };
        let net = to_u128(addr) & !size_mask;
        let (mut first, mut last) = (net, net | size_mask);
        if addr.is_ipv4() && host_bits >= 2 {
            first += 1;
            last -= 1;
        } else if addr.is_ipv6() && host_bits >= 1 {
            first += 1;
        }
        Ok(Self {
            first: from_u128(first, addr.is_ipv6()),
            last: from_u128(last, addr.is_ipv6()),
        })
    }

    /// Whether it hands out IPv6 addresses.
    pub fn is_ipv6(&self) -> bool {
        self.first.is_ipv6()
    }

    /// Whether `a` is one of its addresses.
    pub fn contains(&self, a: IpAddr) -> bool {
        a.is_ipv6() == self.is_ipv6()
            && (to_u128(self.first)..=to_u128(self.last)).contains(&to_u128(a))
    }
}

/// The CFG_REQUEST for `vips` (an unspecified address asks for any one of
/// its family) and the DNS servers of the same families.
pub fn request(vips: &[IpAddr]) -> Configuration {
    let mut attributes = Vec::new();
    for v in vips {
        match v {
            IpAddr::V4(a) => {
                let val = if a.is_unspecified() {
                    vec![]
                } else {
                    a.octets().to_vec()
                };
                attributes.push((attr::INTERNAL_IP4_ADDRESS, val));
                attributes.push((attr::INTERNAL_IP4_DNS, vec![]));
            }
            IpAddr::V6(a) => {
                let val = if a.is_unspecified() {
                    vec![]
                } else {
                    let mut v = a.octets().to_vec();
                    v.push(128);
                    v
                };
                attributes.push((attr::INTERNAL_IP6_ADDRESS, val));
                attributes.push((attr::INTERNAL_IP6_DNS, vec![]));
            }
        }
    }
    attributes.dedup();
    Configuration {
        cfg_type: CfgType::CFG_REQUEST,
        attributes,
    }
}

/// The address an attribute value carries, if well formed; None for an
/// empty one (a request for any address) or a malformed one.
fn addr_of(ty: u16, v: &[u8]) -> Option<IpAddr> {
    match (ty, v.len()) {
        (attr::INTERNAL_IP4_ADDRESS | attr::INTERNAL_IP4_DNS, 4) => {
            <[u8; 4]>::try_from(v).ok().map(IpAddr::from)
        }
        (attr::INTERNAL_IP6_ADDRESS, 17) | (attr::INTERNAL_IP6_DNS, 16) => {
            <[u8; 16]>::try_from(&v[..16]).ok().map(IpAddr::from)
        }
        _ => None,
    }
}

/// What a CFG_REQUEST asks for: one entry per address attribute, the family
/// (true: IPv6) and the address wanted, if any.
pub fn requested(c: &Configuration) -> Vec<(bool, Option<IpAddr>)> {
    if c.cfg_type != CfgType::CFG_REQUEST {
        return Vec::new();
    }
    c.attributes
        .iter()
        .filter_map(|(ty, v)| match *ty {
            attr::INTERNAL_IP4_ADDRESS => Some((false, addr_of(*ty, v))),
            attr::INTERNAL_IP6_ADDRESS => Some((true, addr_of(*ty, v))),
            _ => None,
        })
        .collect()
}

/// The CFG_REPLY handing out `addrs` (IPv6 ones with prefix 128).
pub fn reply(addrs: &[IpAddr]) -> Configuration {
    let attributes = addrs
        .iter()
        .map(|a| match a {
            IpAddr::V4(v) => (attr::INTERNAL_IP4_ADDRESS, v.octets().to_vec()),
            IpAddr::V6(v) => {
                let mut o = v.octets().to_vec();
                o.push(128);
                (attr::INTERNAL_IP6_ADDRESS, o)
            }
        })
        .collect();
    Configuration {
        cfg_type: CfgType::CFG_REPLY,
        attributes,
    }
}

/// The addresses (the first of each family; we ask for one) and DNS
/// servers a CFG_REPLY assigns. Unspecified, multicast and malformed values
/// are left out.
pub fn assigned(c: &Configuration) -> (Vec<IpAddr>, Vec<IpAddr>) {
    let (mut addrs, mut dns) = (Vec::new(), Vec::new());
    if c.cfg_type != CfgType::CFG_REPLY {
        return (addrs, dns);
    }
    for (ty, v) in &c.attributes {
        let Some(a) = addr_of(*ty, v).filter(|a| !a.is_unspecified() && !a.is_multicast()) else {
            continue;
        };
        let is_addr = matches!(*ty, attr::INTERNAL_IP4_ADDRESS | attr::INTERNAL_IP6_ADDRESS);
        if is_addr && !addrs.iter().any(|x: &IpAddr| x.is_ipv6() == a.is_ipv6()) {
            addrs.push(a);
        } else if !is_addr && !dns.contains(&a) {
            dns.push(a);
        }
    }
    (addrs, dns)
}

/// A gateway's leases: which peer identity an address was handed to (kept
/// after the IKE SA ends, so that the peer gets it again), and which IKE SA
/// holds it now.
#[derive(Debug, Clone, Default)]
pub struct Leases {
    owner: HashMap<IpAddr, Vec<u8>>,
    online: HashMap<IpAddr, SaId>,
}

impl Leases {
    /// An address of `pool` for the peer `owner` (its identity, type and
    /// data) on IKE SA `sa`: the one it asked for if that is free or its
    /// own, else the one it had before, else the first never handed out,
    /// else the first offline one (whose owner loses it). None when every
    /// address is online.
    pub fn acquire(
        &mut self,
        pool: &AddrPool,
        wanted: Option<IpAddr>,
        owner: &[u8],
        sa: SaId,
    ) -> Option<IpAddr> {
        let free_for_owner = |s: &Self, a: IpAddr| {
            !s.online.contains_key(&a) && s.owner.get(&a).is_none_or(|o| o.as_slice() == owner)
        };
        let pick = wanted
            .filter(|w| pool.contains(*w) && free_for_owner(self, *w))
            .or_else(|| {
                self.owner
                    .iter()
                    .filter(|(a, o)| {
                        o.as_slice() == owner && pool.contains(**a) && !self.online.contains_key(*a)
                    })
                    .map(|(a, _)| *a)
                    .min()
            })
            .or_else(|| self.first_where(pool, |s, a| !s.owner.contains_key(&a)))
            .or_else(|| self.first_where(pool, |s, a| !s.online.contains_key(&a)))?;
        self.owner.insert(pick, owner.to_vec());
        self.online.insert(pick, sa);
        Some(pick)
    }

    fn first_where(&self, pool: &AddrPool, ok: impl Fn(&Self, IpAddr) -> bool) -> Option<IpAddr> {
        let (lo, hi) = (to_u128(pool.first), to_u128(pool.last));
        // Leases are few; a pool is scanned only up to the first free one
        // past them.
        (lo..=hi)
            .take(self.owner.len() + 1)
            .map(|v| from_u128(v, pool.is_ipv6()))
            .find(|a| ok(self, *a))
    }

    /// IKE SA `sa` holds `addrs` (again: after an IKE SA rekey the new SA
    /// takes them over).
    pub fn hold(&mut self, sa: SaId, addrs: &[IpAddr]) {
        for a in addrs {
            self.online.insert(*a, sa);
        }
    }

    /// IKE SA `sa` ended: its addresses go offline, unless another SA
    /// holds them by now.
    pub fn release(&mut self, sa: SaId, addrs: &[IpAddr]) {
        for a in addrs {
            if self.online.get(a) == Some(&sa) {
                self.online.remove(a);
            }
        }
    }

    /// Addresses held by an IKE SA now.
    pub fn online(&self) -> usize {
        self.online.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn pools_leave_out_network_and_broadcast() {
        let p = AddrPool::parse("10.9.0.0/24").unwrap();
        assert_eq!((p.first, p.last), (ip("10.9.0.1"), ip("10.9.0.254")));
        let p = AddrPool::parse("10.9.0.7/32").unwrap();
        assert_eq!((p.first, p.last), (ip("10.9.0.7"), ip("10.9.0.7")));
        let p = AddrPool::parse("fd09::/120").unwrap();
        assert_eq!((p.first, p.last), (ip("fd09::1"), ip("fd09::ff")));
        assert!(p.contains(ip("fd09::80")) && !p.contains(ip("fd09::100")));
        for bad in ["10.9.0.0", "10.9.0.0/33", "x/24", "fd09::/129"] {
            assert!(AddrPool::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn request_reply_and_assigned_round_trip() {
        let r = request(&[ip("0.0.0.0"), ip("::")]);
        assert_eq!(requested(&r), vec![(false, None), (true, None)]);
        let r = request(&[ip("10.9.0.5")]);
        assert_eq!(requested(&r), vec![(false, Some(ip("10.9.0.5")))]);
        let mut rep = reply(&[ip("10.9.0.1"), ip("fd09::1")]);
        rep.attributes
            .push((attr::INTERNAL_IP4_DNS, ip_octets("10.9.0.53")));
        // Malformed and unspecified values are left out.
        rep.attributes
            .push((attr::INTERNAL_IP4_ADDRESS, vec![1, 2, 3]));
        rep.attributes
            .push((attr::INTERNAL_IP4_ADDRESS, vec![0, 0, 0, 0]));
        // A second address of a family we asked one of is left out.
        rep.attributes
            .push((attr::INTERNAL_IP4_ADDRESS, ip_octets("10.9.0.2")));
        let (addrs, dns) = assigned(&rep);
        assert_eq!(addrs, vec![ip("10.9.0.1"), ip("fd09::1")]);
        assert_eq!(dns, vec![ip("10.9.0.53")]);
        // A request is no reply and the other way round.
        assert!(assigned(&request(&[ip("10.9.0.5")])).0.is_empty());
        assert_eq!(requested(&rep), vec![]);
    }

    fn ip_octets(s: &str) -> Vec<u8> {
        match ip(s) {
            IpAddr::V4(a) => a.octets().to_vec(),
            IpAddr::V6(a) => a.octets().to_vec(),
        }
    }

    #[test]
    fn leases_follow_identities() {
        let p = AddrPool::parse("10.9.0.0/30").unwrap(); // .1 and .2
        let mut l = Leases::default();
        let a = l.acquire(&p, None, b"alice", 1).unwrap();
        let b = l.acquire(&p, None, b"bob", 2).unwrap();
        assert_eq!((a, b), (ip("10.9.0.1"), ip("10.9.0.2")));
        // Full: nothing for carol while both are online.
        assert_eq!(l.acquire(&p, None, b"carol", 3), None);
        // Alice's SA ends; she comes back and gets her address again.
        l.release(1, &[a]);
        assert_eq!(l.acquire(&p, None, b"alice", 4), Some(a));
        // An IKE SA rekey: SA 5 takes over bob's address; the old SA's end
        // does not free it.
        l.hold(5, &[b]);
        l.release(2, &[b]);
        assert_eq!(l.online(), 2);
        // Alice again offline; carol takes her (offline) address, and
        // cannot ask for bob's.
        l.release(4, &[a]);
        assert_eq!(l.acquire(&p, Some(b), b"carol", 6), Some(a));
        assert_eq!(l.online(), 2);
    }
}
