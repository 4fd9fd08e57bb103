//! IKEv2 wire codec (RFC 7296 §3) including the MOBIKE notify types of
//! RFC 4555 §4.
//!
//! Hand-written: there is no maintained IKEv2 crate (`ipsec-parser` has had no
//! release since 2021 and does not know the MOBIKE notify types). This module
//! turns bytes into typed payloads and back, and nothing more: it does not
//! decrypt the Encrypted payload (that is [`crate::crypto`] plus the engine),
//! does not check that a message carries the payloads its exchange needs, and
//! does not interpret notify data beyond the typed accessors on [`Notify`].
//! Decoding never panics; every failure is a [`DecodeError`] naming the
//! payload and what was wrong with it.

mod consts;
mod payload;
#[cfg(test)]
mod tests;

pub use consts::*;
pub use payload::*;

/// Length of the fixed IKE header (RFC 7296 §3.1).
pub const HEADER_LEN: usize = 28;
/// Length of the generic payload header (RFC 7296 §3.2).
pub const GENERIC_HEADER_LEN: usize = 4;
/// IKE over UDP port (RFC 7296 §2).
pub const IKE_PORT: u16 = 500;
/// NAT-T port (RFC 7296 §2.23, RFC 3948).
pub const NAT_T_PORT: u16 = 4500;
/// RFC 3948 §2.2 Non-ESP marker: four zero octets before an IKE message on
/// port 4500.
pub const NON_ESP_MARKER: [u8; 4] = [0; 4];
/// Upper bound on payloads per message; more is treated as garbage.
pub const MAX_PAYLOADS: usize = 64;

/// What went wrong while decoding a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer than 28 bytes (RFC 7296 §3.1).
    #[error("datagram of {len} bytes is shorter than the 28-byte IKE header")]
    ShortHeader {
        /// Bytes received.
        len: usize,
    },
    /// The header's Length field disagrees with the datagram.
    #[error("IKE header length field {declared} does not match the datagram length {actual}")]
    LengthMismatch {
        /// Length field.
        declared: u32,
        /// Bytes received.
        actual: usize,
    },
    /// Major version other than 2 (RFC 7296 §3.1).
    #[error("IKE major version {0} is not 2")]
    UnsupportedMajorVersion(u8),
    /// A payload's generic header is cut off.
    #[error("{ty} payload at offset {offset}: the 4-byte generic header is truncated")]
    TruncatedPayloadHeader {
        /// Type announced by the previous payload.
        ty: PayloadType,
        /// Offset of the payload.
        offset: usize,
    },
    /// A payload length below 4 or past the end of the message.
    #[error(
        "{ty} payload at offset {offset}: length {length} is invalid ({remaining} bytes remain)"
    )]
    BadPayloadLength {
        /// Payload type.
        ty: PayloadType,
        /// Offset of the payload.
        offset: usize,
        /// Payload Length field.
        length: u16,
        /// Bytes left from `offset`.
        remaining: usize,
    },
    /// The payload body does not follow its §3 layout.
    #[error("{payload} payload: {reason}")]
    Malformed {
        /// Which payload.
        payload: PayloadType,
        /// What was wrong.
        reason: &'static str,
    },
    /// RFC 7296 §3.14: the Encrypted payload "MUST be the last payload".
    #[error("Encrypted payload is followed by another payload")]
    EncryptedNotLast,
    /// The chain ended ("Next Payload" 0) but bytes remain.
    #[error("{count} bytes follow the last payload")]
    TrailingBytes {
        /// Bytes left over.
        count: usize,
    },
    /// More than [`MAX_PAYLOADS`] payloads.
    #[error("more than {MAX_PAYLOADS} payloads")]
    TooManyPayloads,
}

/// RFC 7296 §3.1 header flags.
pub mod flags {
    /// Initiator bit: set by the original initiator of the IKE SA.
    pub const INITIATOR: u8 = 0x08;
    /// Version bit: sender can speak a higher major version.
    pub const VERSION: u8 = 0x10;
    /// Response bit.
    pub const RESPONSE: u8 = 0x20;
}

/// RFC 7296 §3.1 "The IKE Header".
///
/// ```text
///  IKE SA Initiator's SPI (8) | IKE SA Responder's SPI (8)
///  Next Payload (1) | MjVer (4 bits) | MnVer (4 bits) | Exchange Type (1)
///  Flags (1) | Message ID (4) | Length (4)
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// IKE SA Initiator's SPI.
    pub spi_i: u64,
    /// IKE SA Responder's SPI (zero in the first IKE_SA_INIT request).
    pub spi_r: u64,
    /// Type of the first payload.
    pub next_payload: PayloadType,
    /// Major (high nibble) and minor version; 0x20 for IKEv2.
    pub version: u8,
    /// Exchange type.
    pub exchange: ExchangeType,
    /// Flags, see [`flags`].
    pub flags: u8,
    /// Message ID.
    pub message_id: u32,
    /// Total length of the message including the header.
    pub length: u32,
}

impl Header {
    /// Decodes the header and checks its Length against `buf.len()`.
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let h: &[u8; HEADER_LEN] = buf
            .get(..HEADER_LEN)
            .and_then(|s| s.try_into().ok())
            .ok_or(DecodeError::ShortHeader { len: buf.len() })?;
        let be64 = |o: usize| u64::from_be_bytes(h[o..o + 8].try_into().unwrap_or([0; 8]));
        let header = Header {
            spi_i: be64(0),
            spi_r: be64(8),
            next_payload: PayloadType(h[16]),
            version: h[17],
            exchange: ExchangeType(h[18]),
            flags: h[19],
            message_id: u32::from_be_bytes([h[20], h[21], h[22], h[23]]),
            length: u32::from_be_bytes([h[24], h[25], h[26], h[27]]),
        };
        if header.version >> 4 != 2 {
            return Err(DecodeError::UnsupportedMajorVersion(header.version >> 4));
        }
        if header.length as usize != buf.len() {
            return Err(DecodeError::LengthMismatch {
                declared: header.length,
                actual: buf.len(),
            });
        }
        Ok(header)
    }

    /// Encodes the header as is (the caller sets `length`).
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0..8].copy_from_slice(&self.spi_i.to_be_bytes());
        out[8..16].copy_from_slice(&self.spi_r.to_be_bytes());
        out[16] = self.next_payload.0;
        out[17] = self.version;
        out[18] = self.exchange.0;
        out[19] = self.flags;
        out[20..24].copy_from_slice(&self.message_id.to_be_bytes());
        out[24..28].copy_from_slice(&self.length.to_be_bytes());
        out
    }

    /// The R flag.
    pub fn is_response(&self) -> bool {
        self.flags & flags::RESPONSE != 0
    }

    /// The I flag: the sender is the original initiator of the IKE SA.
    pub fn from_initiator(&self) -> bool {
        self.flags & flags::INITIATOR != 0
    }
}

/// A decoded IKE message: header plus the outer payload chain. When the
/// message is encrypted the chain ends with [`Payload::Encrypted`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The header as received (or to be sent; `next_payload` and `length`
    /// are filled in by [`Message::encode`]).
    pub header: Header,
    /// Payloads in wire order.
    pub payloads: Vec<Payload>,
}

impl Message {
    /// Decodes a whole datagram (without the non-ESP marker).
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let header = Header::decode(buf)?;
        let payloads = decode_chain(header.next_payload, &buf[HEADER_LEN..], HEADER_LEN, true)?;
        Ok(Message { header, payloads })
    }

    /// Encodes the message, setting the header's Next Payload and Length.
    pub fn encode(&self) -> Vec<u8> {
        let (first, body) = encode_chain(&self.payloads);
        let mut header = self.header;
        header.next_payload = first;
        header.length = (HEADER_LEN + body.len()) as u32;
        let mut out = header.encode().to_vec();
        out.extend_from_slice(&body);
        out
    }

    /// The Encrypted payload, if the message has one.
    pub fn encrypted(&self) -> Option<&Encrypted> {
        self.payloads.iter().find_map(|p| match p {
            Payload::Encrypted(e) => Some(e),
            _ => None,
        })
    }

    /// All notifies of the message's (outer) payloads.
    pub fn notifies(&self) -> impl Iterator<Item = &Notify> {
        notifies(&self.payloads)
    }
}

/// The notifies among `payloads`.
pub fn notifies(payloads: &[Payload]) -> impl Iterator<Item = &Notify> {
    payloads.iter().filter_map(|p| match p {
        Payload::Notify(n) => Some(n),
        _ => None,
    })
}

/// Decodes a payload chain starting with type `first`. `base` is the offset
/// of `buf` in the message, for error messages. With `allow_encrypted`, an
/// SK payload is accepted as the last payload and kept opaque.
pub fn decode_chain(
    first: PayloadType,
    buf: &[u8],
    base: usize,
    allow_encrypted: bool,
) -> Result<Vec<Payload>, DecodeError> {
    let mut payloads = Vec::new();
    let mut ty = first;
    let mut pos = 0usize;
    while ty != PayloadType::NONE {
        if payloads.len() >= MAX_PAYLOADS {
            return Err(DecodeError::TooManyPayloads);
        }
        let offset = base + pos;
        let rest = &buf[pos..];
        if rest.len() < GENERIC_HEADER_LEN {
            return Err(DecodeError::TruncatedPayloadHeader { ty, offset });
        }
        let next = PayloadType(rest[0]);
        let critical = rest[1] & 0x80 != 0;
        let length = u16::from_be_bytes([rest[2], rest[3]]);
        if (length as usize) < GENERIC_HEADER_LEN || length as usize > rest.len() {
            return Err(DecodeError::BadPayloadLength {
                ty,
                offset,
                length,
                remaining: rest.len(),
            });
        }
        let body = &rest[GENERIC_HEADER_LEN..length as usize];
        if ty == PayloadType::SK && allow_encrypted {
            if length as usize != rest.len() {
                return Err(DecodeError::EncryptedNotLast);
            }
            payloads.push(Payload::Encrypted(Encrypted {
                first_inner: next,
                body: body.to_vec(),
                header_offset: offset,
            }));
            return Ok(payloads);
        }
        payloads.push(Payload::decode(ty, critical, body)?);
        pos += length as usize;
        ty = next;
    }
    if pos != buf.len() {
        return Err(DecodeError::TrailingBytes {
            count: buf.len() - pos,
        });
    }
    Ok(payloads)
}

/// Encodes a payload chain; returns the type of the first payload (for the
/// header or the SK payload's Next Payload field) and the bytes.
///
/// An [`Payload::Encrypted`] is written as an SK payload whose Next Payload
/// is its `first_inner`; it must be last.
pub fn encode_chain(payloads: &[Payload]) -> (PayloadType, Vec<u8>) {
    let mut out = Vec::new();
    for (i, p) in payloads.iter().enumerate() {
        let next = match p {
            Payload::Encrypted(e) => e.first_inner,
            _ => payloads
                .get(i + 1)
                .map_or(PayloadType::NONE, Payload::payload_type),
        };
        let start = out.len();
        out.extend_from_slice(&[next.0, if p.critical() { 0x80 } else { 0 }, 0, 0]);
        p.encode_body(&mut out);
        let len = (out.len() - start) as u16;
        out[start + 2..start + 4].copy_from_slice(&len.to_be_bytes());
    }
    (
        payloads
            .first()
            .map_or(PayloadType::NONE, Payload::payload_type),
        out,
    )
}

/// What arrived on the NAT-T port (RFC 3948 §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatTDatagram<'a> {
    /// An IKE message after the non-ESP marker.
    Ike(&'a [u8]),
    /// A one-octet 0xFF NAT-keepalive (RFC 3948 §2.3).
    Keepalive,
    /// ESP (non-zero SPI); the kernel handles these, IKE drops them.
    Esp,
    /// Too short to be any of the above.
    Runt,
}

/// Classifies a datagram received on port 4500.
pub fn classify_nat_t(buf: &[u8]) -> NatTDatagram<'_> {
    match buf {
        [0xff] => NatTDatagram::Keepalive,
        [0, 0, 0, 0, rest @ ..] => NatTDatagram::Ike(rest),
        b if b.len() >= 8 => NatTDatagram::Esp,
        _ => NatTDatagram::Runt,
    }
}
