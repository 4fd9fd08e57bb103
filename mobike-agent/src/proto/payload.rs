//! Payload bodies of RFC 7296 §3.3 - §3.16 (everything after the generic
//! payload header).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{
    AuthMethod, CfgType, DecodeError, IdType, NotifyType, PayloadType, ProtocolId, TransformType,
    TsType,
};

/// A bounds-checked cursor over a payload body.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    payload: PayloadType,
}

impl<'a> Reader<'a> {
    fn new(payload: PayloadType, buf: &'a [u8]) -> Self {
        Reader {
            buf,
            pos: 0,
            payload,
        }
    }
    fn err(&self, reason: &'static str) -> DecodeError {
        DecodeError::Malformed {
            payload: self.payload,
            reason,
        }
    }
    fn take(&mut self, n: usize, reason: &'static str) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        match end {
            Some(end) => {
                let s = &self.buf[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(self.err(reason)),
        }
    }
    fn u8(&mut self, reason: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(1, reason)?[0])
    }
    fn u16(&mut self, reason: &'static str) -> Result<u16, DecodeError> {
        let s = self.take(2, reason)?;
        Ok(u16::from_be_bytes([s[0], s[1]]))
    }
    fn rest(&mut self) -> &'a [u8] {
        let s = &self.buf[self.pos..];
        self.pos = self.buf.len();
        s
    }
    fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }
    fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }
}

/// One payload. Unknown types are kept as [`Payload::Unknown`] so the engine
/// can apply RFC 7296 §2.5 (skip if not critical, else answer
/// UNSUPPORTED_CRITICAL_PAYLOAD).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// §3.3 Security Association.
    Sa(Vec<Proposal>),
    /// §3.4 Key Exchange.
    Ke(KeyExchange),
    /// §3.5 Identification - Initiator.
    IdI(Identification),
    /// §3.5 Identification - Responder.
    IdR(Identification),
    /// §3.6 Certificate (kept opaque).
    Cert(CertData),
    /// §3.7 Certificate Request (kept opaque).
    CertReq(CertData),
    /// §3.8 Authentication.
    Auth(Authentication),
    /// §3.9 Nonce (16 to 256 octets).
    Nonce(Vec<u8>),
    /// §3.10 Notify.
    Notify(Notify),
    /// §3.11 Delete.
    Delete(Delete),
    /// §3.12 Vendor ID.
    VendorId(Vec<u8>),
    /// §3.13 Traffic Selector - Initiator.
    TsI(Vec<TrafficSelector>),
    /// §3.13 Traffic Selector - Responder.
    TsR(Vec<TrafficSelector>),
    /// §3.14 Encrypted and Authenticated, still sealed.
    Encrypted(Encrypted),
    /// §3.15 Configuration.
    Config(Configuration),
    /// §3.16 EAP (kept opaque; this endpoint does not do EAP).
    Eap(Vec<u8>),
    /// A payload type this codec does not know (§2.5).
    Unknown {
        /// Its type.
        ty: PayloadType,
        /// The Critical bit of its generic header.
        critical: bool,
        /// Its body.
        body: Vec<u8>,
    },
}

/// §3.3.1 Proposal Substructure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposal {
    /// Proposal Num (1 for the first proposal, then incrementing).
    pub number: u8,
    /// Protocol ID (IKE, AH, ESP).
    pub protocol: ProtocolId,
    /// SPI: empty in an initial IKE_SA_INIT, 8 octets for an IKE rekey,
    /// 4 for ESP.
    pub spi: Vec<u8>,
    /// Transforms.
    pub transforms: Vec<Transform>,
}

/// §3.3.2 Transform Substructure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transform {
    /// Transform Type.
    pub ty: TransformType,
    /// Transform ID.
    pub id: u16,
    /// §3.3.5 Transform Attributes.
    pub attributes: Vec<TransformAttribute>,
}

impl Transform {
    /// The Key Length attribute (§3.3.5), if present.
    pub fn key_length(&self) -> Option<u16> {
        self.attributes.iter().find_map(|a| match a {
            TransformAttribute::Tv {
                ty: super::transform_id::ATTR_KEY_LENGTH,
                value,
            } => Some(*value),
            _ => None,
        })
    }
}

/// §3.3.5 Data Attributes: TV (AF=1) or TLV (AF=0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransformAttribute {
    /// Fixed 2-octet value.
    Tv {
        /// Attribute Type (15 bits).
        ty: u16,
        /// Value.
        value: u16,
    },
    /// Variable-length value.
    Tlv {
        /// Attribute Type (15 bits).
        ty: u16,
        /// Value.
        value: Vec<u8>,
    },
}

/// §3.4 Key Exchange Payload body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyExchange {
    /// Diffie-Hellman Group Num.
    pub group: u16,
    /// Key Exchange Data.
    pub data: Vec<u8>,
}

/// §3.5 Identification Payload body.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identification {
    /// ID Type.
    pub ty: IdType,
    /// Identification Data.
    pub data: Vec<u8>,
}

/// §3.6 / §3.7 body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertData {
    /// Cert Encoding.
    pub encoding: u8,
    /// Certificate Data / Certification Authority.
    pub data: Vec<u8>,
}

/// §3.8 Authentication Payload body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authentication {
    /// Auth Method.
    pub method: AuthMethod,
    /// Authentication Data.
    pub data: Vec<u8>,
}

/// §3.10 Notify Payload body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notify {
    /// Protocol ID (0 when not about a specific SA).
    pub protocol: ProtocolId,
    /// SPI (empty unless about a specific SA).
    pub spi: Vec<u8>,
    /// Notify Message Type.
    pub ty: NotifyType,
    /// Notification Data.
    pub data: Vec<u8>,
}

impl Notify {
    /// A notify not about any particular SA.
    pub fn new(ty: NotifyType, data: Vec<u8>) -> Self {
        Notify {
            protocol: ProtocolId::NONE,
            spi: Vec::new(),
            ty,
            data,
        }
    }

    /// RFC 4555 §4: ADDITIONAL_IP4_ADDRESS carries 4 octets,
    /// ADDITIONAL_IP6_ADDRESS 16. `None` for other types or bad lengths.
    pub fn additional_address(&self) -> Option<IpAddr> {
        match (self.ty, self.data.len()) {
            (NotifyType::ADDITIONAL_IP4_ADDRESS, 4) => {
                let b: [u8; 4] = self.data.as_slice().try_into().ok()?;
                Some(IpAddr::V4(Ipv4Addr::from(b)))
            }
            (NotifyType::ADDITIONAL_IP6_ADDRESS, 16) => {
                let b: [u8; 16] = self.data.as_slice().try_into().ok()?;
                Some(IpAddr::V6(Ipv6Addr::from(b)))
            }
            _ => None,
        }
    }

    /// RFC 4555 §4: ADDITIONAL_IP4/IP6_ADDRESS for `addr`.
    pub fn for_additional_address(addr: IpAddr) -> Self {
        match addr {
            IpAddr::V4(a) => Notify::new(NotifyType::ADDITIONAL_IP4_ADDRESS, a.octets().to_vec()),
            IpAddr::V6(a) => Notify::new(NotifyType::ADDITIONAL_IP6_ADDRESS, a.octets().to_vec()),
        }
    }

    /// RFC 7296 §3.10.1: INVALID_KE_PAYLOAD carries the accepted group as
    /// two octets.
    pub fn invalid_ke_group(&self) -> Option<u16> {
        match (self.ty, self.data.as_slice()) {
            (NotifyType::INVALID_KE_PAYLOAD, [a, b]) => Some(u16::from_be_bytes([*a, *b])),
            _ => None,
        }
    }
}

/// §3.11 Delete Payload body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delete {
    /// Protocol ID (IKE: no SPIs; ESP/AH: 4-octet SPIs).
    pub protocol: ProtocolId,
    /// SPI Size.
    pub spi_size: u8,
    /// SPIs, each `spi_size` octets.
    pub spis: Vec<Vec<u8>>,
}

/// §3.13.1 Traffic Selector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TrafficSelector {
    /// IP Protocol ID (0: any).
    pub ip_protocol: u8,
    /// Start Port.
    pub start_port: u16,
    /// End Port.
    pub end_port: u16,
    /// Starting Address; its family gives the TS Type.
    pub start_addr: IpAddr,
    /// Ending Address, same family.
    pub end_addr: IpAddr,
}

/// §3.14 Encrypted and Authenticated Payload, still sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encrypted {
    /// Next Payload of the SK header: type of the first inner payload.
    pub first_inner: PayloadType,
    /// IV | ciphertext (incl. padding and Pad Length) | ICV.
    pub body: Vec<u8>,
    /// Offset of the SK generic header in the message; the AAD of an AEAD
    /// cipher is the message up to `header_offset + 4` (RFC 5282 §5.1).
    pub header_offset: usize,
}

/// §3.15 Configuration Payload body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Configuration {
    /// CFG Type.
    pub cfg_type: CfgType,
    /// §3.15.1 attributes: (Attribute Type, Value).
    pub attributes: Vec<(u16, Vec<u8>)>,
}

impl Payload {
    /// The payload's type code.
    pub fn payload_type(&self) -> PayloadType {
        match self {
            Payload::Sa(_) => PayloadType::SA,
            Payload::Ke(_) => PayloadType::KE,
            Payload::IdI(_) => PayloadType::IDI,
            Payload::IdR(_) => PayloadType::IDR,
            Payload::Cert(_) => PayloadType::CERT,
            Payload::CertReq(_) => PayloadType::CERTREQ,
            Payload::Auth(_) => PayloadType::AUTH,
            Payload::Nonce(_) => PayloadType::NONCE,
            Payload::Notify(_) => PayloadType::NOTIFY,
            Payload::Delete(_) => PayloadType::DELETE,
            Payload::VendorId(_) => PayloadType::VENDOR_ID,
            Payload::TsI(_) => PayloadType::TSI,
            Payload::TsR(_) => PayloadType::TSR,
            Payload::Encrypted(_) => PayloadType::SK,
            Payload::Config(_) => PayloadType::CP,
            Payload::Eap(_) => PayloadType::EAP,
            Payload::Unknown { ty, .. } => *ty,
        }
    }

    /// The Critical bit to send: set only on unknown payloads that had it.
    pub fn critical(&self) -> bool {
        matches!(self, Payload::Unknown { critical: true, .. })
    }

    /// Decodes the body of a payload of type `ty`.
    pub fn decode(ty: PayloadType, critical: bool, body: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(ty, body);
        let p = match ty {
            PayloadType::SA => Payload::Sa(decode_proposals(&mut r)?),
            PayloadType::KE => {
                let group = r.u16("Diffie-Hellman Group Num truncated")?;
                r.take(2, "RESERVED truncated")?;
                Payload::Ke(KeyExchange {
                    group,
                    data: r.rest().to_vec(),
                })
            }
            PayloadType::IDI | PayloadType::IDR => {
                let id_ty = IdType(r.u8("ID Type missing")?);
                r.take(3, "RESERVED truncated")?;
                let id = Identification {
                    ty: id_ty,
                    data: r.rest().to_vec(),
                };
                if ty == PayloadType::IDI {
                    Payload::IdI(id)
                } else {
                    Payload::IdR(id)
                }
            }
            PayloadType::CERT | PayloadType::CERTREQ => {
                let c = CertData {
                    encoding: r.u8("Cert Encoding missing")?,
                    data: r.rest().to_vec(),
                };
                if ty == PayloadType::CERT {
                    Payload::Cert(c)
                } else {
                    Payload::CertReq(c)
                }
            }
            PayloadType::AUTH => {
                let method = AuthMethod(r.u8("Auth Method missing")?);
                r.take(3, "RESERVED truncated")?;
                Payload::Auth(Authentication {
                    method,
                    data: r.rest().to_vec(),
                })
            }
            PayloadType::NONCE => {
                // §2.10: "Nonces used in IKEv2 MUST be ... at least 128 bits
                // in size"; §3.9: "between 16 and 256 octets".
                if !(16..=256).contains(&body.len()) {
                    return Err(r.err("Nonce Data must be 16 to 256 octets"));
                }
                Payload::Nonce(body.to_vec())
            }
            PayloadType::NOTIFY => {
                let protocol = ProtocolId(r.u8("Protocol ID missing")?);
                let spi_size = r.u8("SPI Size missing")?;
                let nty = NotifyType(r.u16("Notify Message Type truncated")?);
                let spi = r
                    .take(spi_size as usize, "SPI shorter than SPI Size")?
                    .to_vec();
                Payload::Notify(Notify {
                    protocol,
                    spi,
                    ty: nty,
                    data: r.rest().to_vec(),
                })
            }
            PayloadType::DELETE => {
                let protocol = ProtocolId(r.u8("Protocol ID missing")?);
                let spi_size = r.u8("SPI Size missing")?;
                let n = r.u16("Num of SPIs truncated")?;
                // An SPI of size 0 takes no bytes, so Num of SPIs must be
                // bounded by the payload's length before anything is built:
                // ESP and AH SPIs are 4 octets (§3.11), and no protocol has
                // empty SPIs to list.
                if n > 0 && spi_size == 0 {
                    return Err(r.err("Num of SPIs given with SPI Size 0"));
                }
                if matches!(protocol, ProtocolId::ESP | ProtocolId::AH) && spi_size != 4 {
                    return Err(r.err("ESP/AH delete must have SPI Size 4"));
                }
                // §3.11 knows IKE, AH and ESP; an SPI list of another
                // protocol (of any SPI Size, one octet each) is refused
                // rather than kept as many tiny allocations.
                if !matches!(protocol, ProtocolId::IKE | ProtocolId::ESP | ProtocolId::AH) {
                    return Err(r.err("Delete for a protocol other than IKE, AH or ESP"));
                }
                if usize::from(n) * usize::from(spi_size) > r.remaining() {
                    return Err(r.err("fewer SPIs than Num of SPIs"));
                }
                let mut spis = Vec::with_capacity(usize::from(n));
                for _ in 0..n {
                    spis.push(
                        r.take(spi_size as usize, "fewer SPIs than Num of SPIs")?
                            .to_vec(),
                    );
                }
                if !r.is_empty() {
                    return Err(r.err("bytes after the last SPI"));
                }
                if protocol == ProtocolId::IKE && (spi_size != 0 || n != 0) {
                    return Err(r.err("IKE SA delete must have SPI Size 0 and no SPIs"));
                }
                Payload::Delete(Delete {
                    protocol,
                    spi_size,
                    spis,
                })
            }
            PayloadType::VENDOR_ID => Payload::VendorId(body.to_vec()),
            PayloadType::TSI | PayloadType::TSR => {
                let ts = decode_traffic_selectors(&mut r)?;
                if ty == PayloadType::TSI {
                    Payload::TsI(ts)
                } else {
                    Payload::TsR(ts)
                }
            }
            PayloadType::CP => {
                let cfg_type = CfgType(r.u8("CFG Type missing")?);
                r.take(3, "RESERVED truncated")?;
                let mut attributes = Vec::new();
                while !r.is_empty() {
                    let aty = r.u16("Attribute Type truncated")? & 0x7fff;
                    let len = r.u16("attribute Length truncated")?;
                    attributes.push((
                        aty,
                        r.take(len as usize, "attribute Value truncated")?.to_vec(),
                    ));
                }
                Payload::Config(Configuration {
                    cfg_type,
                    attributes,
                })
            }
            PayloadType::EAP => Payload::Eap(body.to_vec()),
            PayloadType::SK => return Err(r.err("Encrypted payload inside an Encrypted payload")),
            _ => Payload::Unknown {
                ty,
                critical,
                body: body.to_vec(),
            },
        };
        Ok(p)
    }

    /// Appends the body (without the generic header).
    pub fn encode_body(&self, out: &mut Vec<u8>) {
        match self {
            Payload::Sa(props) => encode_proposals(props, out),
            Payload::Ke(ke) => {
                out.extend_from_slice(&ke.group.to_be_bytes());
                out.extend_from_slice(&[0, 0]);
                out.extend_from_slice(&ke.data);
            }
            Payload::IdI(id) | Payload::IdR(id) => {
                out.extend_from_slice(&[id.ty.0, 0, 0, 0]);
                out.extend_from_slice(&id.data);
            }
            Payload::Cert(c) | Payload::CertReq(c) => {
                out.push(c.encoding);
                out.extend_from_slice(&c.data);
            }
            Payload::Auth(a) => {
                out.extend_from_slice(&[a.method.0, 0, 0, 0]);
                out.extend_from_slice(&a.data);
            }
            Payload::Nonce(n) => out.extend_from_slice(n),
            Payload::Notify(n) => {
                out.push(n.protocol.0);
                out.push(n.spi.len() as u8);
                out.extend_from_slice(&n.ty.0.to_be_bytes());
                out.extend_from_slice(&n.spi);
                out.extend_from_slice(&n.data);
            }
            Payload::Delete(d) => {
                out.push(d.protocol.0);
                out.push(d.spi_size);
                out.extend_from_slice(&(d.spis.len() as u16).to_be_bytes());
                for s in &d.spis {
                    out.extend_from_slice(s);
                }
            }
            Payload::VendorId(v) | Payload::Eap(v) => out.extend_from_slice(v),
            Payload::TsI(ts) | Payload::TsR(ts) => encode_traffic_selectors(ts, out),
            Payload::Encrypted(e) => out.extend_from_slice(&e.body),
            Payload::Config(c) => {
                out.extend_from_slice(&[c.cfg_type.0, 0, 0, 0]);
                for (ty, v) in &c.attributes {
                    out.extend_from_slice(&(ty & 0x7fff).to_be_bytes());
                    out.extend_from_slice(&(v.len() as u16).to_be_bytes());
                    out.extend_from_slice(v);
                }
            }
            Payload::Unknown { body, .. } => out.extend_from_slice(body),
        }
    }
}

/// The body of an ID payload without the generic header, as used in the
/// AUTH computation (§2.15 "RestOfInitIDPayload").
pub fn id_payload_body(id: &Identification) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + id.data.len());
    Payload::IdI(id.clone()).encode_body(&mut out);
    out
}

fn decode_proposals(r: &mut Reader<'_>) -> Result<Vec<Proposal>, DecodeError> {
    let mut props = Vec::new();
    loop {
        let last = r.u8("Last Substruc of proposal missing")?;
        r.take(1, "proposal RESERVED missing")?;
        let len = r.u16("Proposal Length truncated")? as usize;
        let body = r.take(
            len.checked_sub(4)
                .ok_or_else(|| r.err("Proposal Length below 8"))?,
            "Proposal Length past the end of the SA payload",
        )?;
        let mut p = Reader::new(r.payload, body);
        let number = p.u8("Proposal Num missing")?;
        let protocol = ProtocolId(p.u8("Protocol ID missing")?);
        let spi_size = p.u8("SPI Size missing")?;
        let n = p.u8("Num Transforms missing")?;
        let spi = p
            .take(spi_size as usize, "SPI shorter than SPI Size")?
            .to_vec();
        // Num Transforms is the peer's word; room is made for no more than
        // the bytes left can hold (8 octets each, §3.3.2), so a lie costs
        // nothing.
        let mut transforms = Vec::with_capacity(usize::from(n).min(p.remaining() / 8));
        for i in 0..n {
            let tlast = p.u8("Last Substruc of transform missing")?;
            p.take(1, "transform RESERVED missing")?;
            let tlen = p.u16("Transform Length truncated")? as usize;
            let tbody = p.take(
                tlen.checked_sub(4)
                    .ok_or_else(|| p.err("Transform Length below 8"))?,
                "Transform Length past the end of the proposal",
            )?;
            let mut t = Reader::new(r.payload, tbody);
            let ty = TransformType(t.u8("Transform Type missing")?);
            t.take(1, "transform RESERVED missing")?;
            let id = t.u16("Transform ID truncated")?;
            let mut attributes = Vec::new();
            while !t.is_empty() {
                let a = t.u16("Attribute Type truncated")?;
                let aty = a & 0x7fff;
                if a & 0x8000 != 0 {
                    attributes.push(TransformAttribute::Tv {
                        ty: aty,
                        value: t.u16("attribute Value truncated")?,
                    });
                } else {
                    let alen = t.u16("attribute Length truncated")?;
                    attributes.push(TransformAttribute::Tlv {
                        ty: aty,
                        value: t.take(alen as usize, "attribute Value truncated")?.to_vec(),
                    });
                }
            }
            let expect_last = if i + 1 == n { 0 } else { 3 };
            if tlast != expect_last {
                return Err(p.err("transform Last Substruc disagrees with Num Transforms"));
            }
            transforms.push(Transform { ty, id, attributes });
        }
        if !p.is_empty() {
            return Err(p.err("bytes after the last transform of a proposal"));
        }
        props.push(Proposal {
            number,
            protocol,
            spi,
            transforms,
        });
        match last {
            0 => break,
            2 => continue,
            _ => return Err(r.err("proposal Last Substruc is neither 0 nor 2")),
        }
    }
    if !r.is_empty() {
        return Err(r.err("bytes after the last proposal"));
    }
    Ok(props)
}

fn encode_proposals(props: &[Proposal], out: &mut Vec<u8>) {
    for (i, p) in props.iter().enumerate() {
        let start = out.len();
        out.extend_from_slice(&[if i + 1 == props.len() { 0 } else { 2 }, 0, 0, 0]);
        out.extend_from_slice(&[
            p.number,
            p.protocol.0,
            p.spi.len() as u8,
            p.transforms.len() as u8,
        ]);
        out.extend_from_slice(&p.spi);
        for (j, t) in p.transforms.iter().enumerate() {
            let tstart = out.len();
            out.extend_from_slice(&[if j + 1 == p.transforms.len() { 0 } else { 3 }, 0, 0, 0]);
            out.extend_from_slice(&[t.ty.0, 0]);
            out.extend_from_slice(&t.id.to_be_bytes());
            for a in &t.attributes {
                match a {
                    TransformAttribute::Tv { ty, value } => {
                        out.extend_from_slice(&(0x8000 | ty).to_be_bytes());
                        out.extend_from_slice(&value.to_be_bytes());
                    }
                    TransformAttribute::Tlv { ty, value } => {
                        out.extend_from_slice(&(ty & 0x7fff).to_be_bytes());
                        out.extend_from_slice(&(value.len() as u16).to_be_bytes());
                        out.extend_from_slice(value);
                    }
                }
            }
            let tlen = (out.len() - tstart) as u16;
            out[tstart + 2..tstart + 4].copy_from_slice(&tlen.to_be_bytes());
        }
        let len = (out.len() - start) as u16;
        out[start + 2..start + 4].copy_from_slice(&len.to_be_bytes());
    }
}

fn decode_traffic_selectors(r: &mut Reader<'_>) -> Result<Vec<TrafficSelector>, DecodeError> {
    let n = r.u8("Number of TSs missing")?;
    r.take(3, "RESERVED truncated")?;
    // At most as many as the bytes left can hold (16 octets each, §3.13.1).
    let mut out = Vec::with_capacity(usize::from(n).min(r.remaining() / 16));
    for _ in 0..n {
        let ty = TsType(r.u8("TS Type missing")?);
        let ip_protocol = r.u8("IP Protocol ID missing")?;
        let len = r.u16("Selector Length truncated")?;
        let start_port = r.u16("Start Port truncated")?;
        let end_port = r.u16("End Port truncated")?;
        let (start_addr, end_addr) = match (ty, len) {
            (TsType::TS_IPV4_ADDR_RANGE, 16) => {
                let a: [u8; 4] = r
                    .take(4, "Starting Address truncated")?
                    .try_into()
                    .unwrap_or_default();
                let b: [u8; 4] = r
                    .take(4, "Ending Address truncated")?
                    .try_into()
                    .unwrap_or_default();
                (IpAddr::from(a), IpAddr::from(b))
            }
            (TsType::TS_IPV6_ADDR_RANGE, 40) => {
                let a: [u8; 16] = r
                    .take(16, "Starting Address truncated")?
                    .try_into()
                    .unwrap_or_default();
                let b: [u8; 16] = r
                    .take(16, "Ending Address truncated")?
                    .try_into()
                    .unwrap_or_default();
                (IpAddr::from(a), IpAddr::from(b))
            }
            (TsType::TS_IPV4_ADDR_RANGE | TsType::TS_IPV6_ADDR_RANGE, _) => {
                return Err(r.err("Selector Length does not match the TS Type"));
            }
            _ => return Err(r.err("unsupported TS Type")),
        };
        out.push(TrafficSelector {
            ip_protocol,
            start_port,
            end_port,
            start_addr,
            end_addr,
        });
    }
    if !r.is_empty() {
        return Err(r.err("bytes after the last traffic selector"));
    }
    Ok(out)
}

fn encode_traffic_selectors(ts: &[TrafficSelector], out: &mut Vec<u8>) {
    out.extend_from_slice(&[ts.len() as u8, 0, 0, 0]);
    for t in ts {
        let (ty, len) = match t.start_addr {
            IpAddr::V4(_) => (TsType::TS_IPV4_ADDR_RANGE, 16u16),
            IpAddr::V6(_) => (TsType::TS_IPV6_ADDR_RANGE, 40u16),
        };
        out.extend_from_slice(&[ty.0, t.ip_protocol]);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&t.start_port.to_be_bytes());
        out.extend_from_slice(&t.end_port.to_be_bytes());
        for a in [t.start_addr, t.end_addr] {
            match (t.start_addr, a) {
                (IpAddr::V4(_), IpAddr::V4(a)) => out.extend_from_slice(&a.octets()),
                (IpAddr::V6(_), IpAddr::V6(a)) => out.extend_from_slice(&a.octets()),
                // Mixed families cannot be expressed; map to the start's family.
                (IpAddr::V4(_), IpAddr::V6(a)) => out
                    .extend_from_slice(&a.to_ipv4_mapped().unwrap_or(Ipv4Addr::BROADCAST).octets()),
                (IpAddr::V6(_), IpAddr::V4(a)) => {
                    out.extend_from_slice(&a.to_ipv6_mapped().octets())
                }
            }
        }
    }
}
