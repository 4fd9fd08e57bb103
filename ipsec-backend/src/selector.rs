//! What a policy matches: a direction and a traffic selector between two
//! address prefixes, as the kernel has them (`struct xfrm_selector`), and
//! the CHILD_SA's traffic selector pairs that IKE negotiates (RFC 7296
//! §2.9), with the check every backend makes before installing them.
//!
//! These are values with their conversions to the raw structs of
//! [`crate::codec`]; they sit below the crate's error type, which names a
//! failed policy operation by direction and selector.

use std::collections::HashSet;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::codec::{Selector, family_of};

/// Policy direction (`XFRM_POLICY_IN/OUT/FWD`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dir {
    /// Inbound (0).
    In,
    /// Outbound (1).
    Out,
    /// Forwarded (2).
    Fwd,
}

impl Dir {
    /// Kernel number.
    pub fn to_raw(self) -> u8 {
        match self {
            Dir::In => 0,
            Dir::Out => 1,
            Dir::Fwd => 2,
        }
    }
    /// From the kernel number.
    pub fn from_raw(v: u8) -> Option<Self> {
        match v {
            0 => Some(Dir::In),
            1 => Some(Dir::Out),
            2 => Some(Dir::Fwd),
            _ => None,
        }
    }
}

impl fmt::Display for Dir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Dir::In => "in",
            Dir::Out => "out",
            Dir::Fwd => "fwd",
        })
    }
}

impl FromStr for Dir {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "in" => Ok(Dir::In),
            "out" => Ok(Dir::Out),
            "fwd" => Ok(Dir::Fwd),
            _ => Err(format!("unknown direction {s:?} (in, out, fwd)")),
        }
    }
}

/// An address prefix such as `10.1.0.0/24` (serialized as that string).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Prefix {
    /// Network address.
    pub addr: IpAddr,
    /// Prefix length.
    pub len: u8,
}

impl Prefix {
    /// A host prefix (/32 or /128).
    pub fn host(addr: IpAddr) -> Self {
        Self {
            addr,
            len: if addr.is_ipv4() { 32 } else { 128 },
        }
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl FromStr for Prefix {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, l) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = a.parse().map_err(|e| format!("{s:?}: {e}"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match l {
            Some(l) => l.parse::<u8>().map_err(|e| format!("{s:?}: {e}"))?,
            None => max,
        };
        if len > max {
            return Err(format!("{s:?}: prefix length over {max}"));
        }
        Ok(Self { addr, len })
    }
}

impl Serialize for Prefix {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Prefix {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A traffic selector (`struct xfrm_selector`), the part that matters here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TrafficSelector {
    /// Source prefix.
    pub src: Prefix,
    /// Destination prefix.
    pub dst: Prefix,
    /// Upper-layer protocol (0 = any).
    #[serde(default)]
    pub proto: u8,
    /// Source port (0 = any).
    #[serde(default)]
    pub sport: u16,
    /// Destination port (0 = any).
    #[serde(default)]
    pub dport: u16,
}

impl TrafficSelector {
    /// Selector between two prefixes, any protocol/port.
    pub fn new(src: Prefix, dst: Prefix) -> Self {
        Self {
            src,
            dst,
            proto: 0,
            sport: 0,
            dport: 0,
        }
    }
    /// The reverse direction.
    pub fn reversed(&self) -> Self {
        Self {
            src: self.dst,
            dst: self.src,
            proto: self.proto,
            sport: self.dport,
            dport: self.sport,
        }
    }
    /// To the kernel struct.
    pub fn to_raw(&self) -> Selector {
        Selector {
            daddr: self.dst.addr.into(),
            saddr: self.src.addr.into(),
            dport: self.dport,
            dport_mask: if self.dport != 0 { 0xffff } else { 0 },
            sport: self.sport,
            sport_mask: if self.sport != 0 { 0xffff } else { 0 },
            family: family_of(&self.src.addr),
            prefixlen_d: self.dst.len,
            prefixlen_s: self.src.len,
            proto: self.proto,
            ifindex: 0,
            user: 0,
        }
    }
    /// From the kernel struct (`None` for family 0, i.e. "any").
    pub fn from_raw(s: &Selector) -> Option<Self> {
        Some(Self {
            src: Prefix {
                addr: s.saddr.to_ip(s.family)?,
                len: s.prefixlen_s,
            },
            dst: Prefix {
                addr: s.daddr.to_ip(s.family)?,
                len: s.prefixlen_d,
            },
            proto: s.proto,
            sport: s.sport,
            dport: s.dport,
        })
    }
}

impl fmt::Display for TrafficSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} -> {}", self.src, self.dst)
    }
}

/// One traffic selector pair of a CHILD_SA (RFC 7296 §2.9 "Traffic
/// Selector Negotiation"): traffic from `local` to `remote` leaves through
/// the CHILD_SA, traffic from `remote` to `local` arrives through it, any
/// protocol and port. Both prefixes are of one address family. IKE
/// negotiates a list of selectors per side (TSi, TSr); the kernel's
/// selector is one (source, destination) prefix pair, so N local and M
/// remote selectors make up to N × M pairs ([`SelectorPair::product`]).
/// Serialized as `{"local": "10.1.0.0/24", "remote": "10.2.0.0/24"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SelectorPair {
    /// Our side's prefix.
    pub local: Prefix,
    /// The peer's prefix.
    pub remote: Prefix,
}

impl SelectorPair {
    /// The pair `local` <-> `remote`.
    pub fn new(local: Prefix, remote: Prefix) -> Self {
        Self { local, remote }
    }

    /// Every combination of one `local` and one `remote` prefix of the same
    /// address family, in order (local-major), each once: what strongSwan
    /// installs policies for. Combinations of different families are left
    /// out, so the result may be empty.
    pub fn product(local: &[Prefix], remote: &[Prefix]) -> Vec<SelectorPair> {
        let mut out: Vec<SelectorPair> = Vec::new();
        for l in local {
            for r in remote {
                let p = Self::new(*l, *r);
                if p.same_family() && !out.contains(&p) {
                    out.push(p);
                }
            }
        }
        out
    }

    /// Whether both prefixes are of one address family.
    pub fn same_family(&self) -> bool {
        self.local.addr.is_ipv4() == self.remote.addr.is_ipv4()
    }

    /// The outbound selector (local -> remote, any protocol and port).
    pub fn outbound(&self) -> TrafficSelector {
        TrafficSelector::new(self.local, self.remote)
    }
}

impl fmt::Display for SelectorPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} <-> {}", self.local, self.remote)
    }
}

/// Why a CHILD_SA's list of [`SelectorPair`]s cannot be installed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// The list is empty: no traffic would use the CHILD_SA.
    #[error("no traffic selector pair")]
    Empty,
    /// A pair's prefixes are of different address families.
    #[error("traffic selector pair {0} mixes IPv4 and IPv6")]
    MixedFamily(SelectorPair),
    /// A pair is listed twice (its policies would collide).
    #[error("traffic selector pair {0} is listed twice")]
    Duplicate(SelectorPair),
}

/// Checks what both backends rely on: at least one pair, each of one
/// family, none twice.
pub(crate) fn check_selectors(pairs: &[SelectorPair]) -> Result<(), SelectorError> {
    if pairs.is_empty() {
        return Err(SelectorError::Empty);
    }
    let mut seen = HashSet::with_capacity(pairs.len());
    for p in pairs {
        if !p.same_family() {
            return Err(SelectorError::MixedFamily(*p));
        }
        if !seen.insert(*p) {
            return Err(SelectorError::Duplicate(*p));
        }
    }
    Ok(())
}
