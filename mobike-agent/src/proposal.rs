//! strongSwan's proposal syntax (`aes256gcm16-prfsha256-x25519`,
//! `aes128gcm16-prfsha384-ecp384`, `chacha20poly1305-esn`) into typed
//! proposals, their wire form (RFC 7296 §3.3) and the responder's choice.
//!
//! Only what the crypto module implements is accepted: AEAD ciphers (so no
//! integrity algorithm), HMAC-SHA2 PRFs and DH groups 31/19/20. Anything else
//! is an error naming the token, never silently dropped. Several algorithms of
//! one kind in one string are alternatives, as in swanctl.conf. This module
//! does not decide which proposals a connection uses: that is configuration.

use std::fmt;

use crate::{
    crypto::{Aead, DhGroup, Prf},
    proto::{self, ProtocolId, Transform, TransformAttribute, TransformType, transform_id},
};

/// What is wrong with a proposal string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposalError {
    /// A token that names no supported algorithm.
    #[error("unknown or unsupported algorithm `{token}` in proposal `{proposal}`")]
    UnknownAlgorithm {
        /// The token.
        token: String,
        /// The whole proposal string.
        proposal: String,
    },
    /// A non-AEAD cipher or an integrity algorithm.
    #[error(
        "`{token}` in proposal `{proposal}`: only AEAD ciphers (aes*gcm16, chacha20poly1305) are supported"
    )]
    NotAead {
        /// The token.
        token: String,
        /// The whole proposal string.
        proposal: String,
    },
    /// A required algorithm kind is missing.
    #[error("proposal `{proposal}` has no {missing}")]
    Missing {
        /// "encryption algorithm", "PRF", "DH group".
        missing: &'static str,
        /// The whole proposal string.
        proposal: String,
    },
    /// A token only meaningful for the other protocol (e.g. `esn` in IKE).
    #[error("`{token}` is not valid in an {protocol} proposal `{proposal}`")]
    WrongProtocol {
        /// The token.
        token: String,
        /// "IKE" or "ESP".
        protocol: &'static str,
        /// The whole proposal string.
        proposal: String,
    },
    /// Empty string or empty token (`aes256gcm16--x25519`).
    #[error("empty proposal or empty algorithm in `{0}`")]
    Empty(String),
}

/// Extended Sequence Numbers choice (transform type 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Esn {
    /// 32-bit sequence numbers.
    No,
    /// 64-bit extended sequence numbers.
    Yes,
}

/// One IKE proposal with alternatives per transform type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IkeProposal {
    /// Ciphers, preferred first.
    pub encr: Vec<Aead>,
    /// PRFs.
    pub prf: Vec<Prf>,
    /// DH groups; the first is the one the initiator sends a KE for.
    pub dh: Vec<DhGroup>,
}

/// One ESP proposal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EspProposal {
    /// Ciphers.
    pub encr: Vec<Aead>,
    /// DH groups for PFS in CREATE_CHILD_SA (empty: no PFS).
    pub dh: Vec<DhGroup>,
    /// ESN choices (default: no ESN).
    pub esn: Vec<Esn>,
}

/// The algorithms both sides settled on for an IKE SA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IkeSuite {
    /// Cipher.
    pub encr: Aead,
    /// PRF.
    pub prf: Prf,
    /// DH group.
    pub dh: DhGroup,
}

/// The algorithms both sides settled on for a CHILD_SA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EspSuite {
    /// Cipher.
    pub encr: Aead,
    /// PFS group, if any.
    pub dh: Option<DhGroup>,
    /// ESN.
    pub esn: Esn,
}

enum Token {
    Encr(Aead),
    Prf(Prf),
    Dh(DhGroup),
    Esn(Esn),
}

fn token(t: &str) -> Option<Token> {
    Some(match t {
        "aes128gcm16" | "aes128gcm128" | "aes128gcm" => Token::Encr(Aead::AesGcm16_128),
        "aes256gcm16" | "aes256gcm128" | "aes256gcm" => Token::Encr(Aead::AesGcm16_256),
        "chacha20poly1305" => Token::Encr(Aead::ChaCha20Poly1305),
        "prfsha256" => Token::Prf(Prf::HmacSha256),
        "prfsha384" => Token::Prf(Prf::HmacSha384),
        "prfsha512" => Token::Prf(Prf::HmacSha512),
        "x25519" | "curve25519" => Token::Dh(DhGroup::Curve25519),
        "ecp256" => Token::Dh(DhGroup::Ecp256),
        "ecp384" => Token::Dh(DhGroup::Ecp384),
        "esn" => Token::Esn(Esn::Yes),
        "noesn" => Token::Esn(Esn::No),
        _ => return None,
    })
}

/// Tokens strongSwan knows that this crate deliberately does not implement.
fn is_non_aead(t: &str) -> bool {
    t.starts_with("aes")
        || t.starts_with("3des")
        || t.starts_with("camellia")
        || t.starts_with("sha")
        || t.starts_with("md5")
        || t == "aesxcbc"
        || t.starts_with("aescmac")
        || t.starts_with("blowfish")
}

fn tokens(s: &str) -> Result<impl Iterator<Item = &str>, ProposalError> {
    if s.is_empty() || s.split('-').any(str::is_empty) {
        return Err(ProposalError::Empty(s.to_owned()));
    }
    Ok(s.split('-'))
}

fn push<T: PartialEq>(v: &mut Vec<T>, x: T) {
    if !v.contains(&x) {
        v.push(x);
    }
}

fn unknown(t: &str, s: &str) -> ProposalError {
    if is_non_aead(t) {
        ProposalError::NotAead {
            token: t.to_owned(),
            proposal: s.to_owned(),
        }
    } else {
        ProposalError::UnknownAlgorithm {
            token: t.to_owned(),
            proposal: s.to_owned(),
        }
    }
}

impl IkeProposal {
    /// Parses e.g. `aes256gcm16-prfsha256-x25519`.
    pub fn parse(s: &str) -> Result<Self, ProposalError> {
        let mut p = IkeProposal {
            encr: vec![],
            prf: vec![],
            dh: vec![],
        };
        for t in tokens(s)? {
            match token(t).ok_or_else(|| unknown(t, s))? {
                Token::Encr(a) => push(&mut p.encr, a),
                Token::Prf(f) => push(&mut p.prf, f),
                Token::Dh(g) => push(&mut p.dh, g),
                Token::Esn(_) => {
                    return Err(ProposalError::WrongProtocol {
                        token: t.into(),
                        protocol: "IKE",
                        proposal: s.into(),
                    });
                }
            }
        }
        let missing = |m| {
            Err(ProposalError::Missing {
                missing: m,
                proposal: s.to_owned(),
            })
        };
        if p.encr.is_empty() {
            return missing("encryption algorithm");
        }
        if p.prf.is_empty() {
            return missing("PRF (an AEAD IKE proposal needs prfsha256/384/512)");
        }
        if p.dh.is_empty() {
            return missing("DH group");
        }
        Ok(p)
    }

    /// Wire form (§3.3.1); `spi` is empty for IKE_SA_INIT, 8 octets for a
    /// rekey.
    pub fn to_wire(&self, number: u8, spi: Vec<u8>) -> proto::Proposal {
        let mut transforms: Vec<Transform> = self.encr.iter().map(|a| encr_transform(*a)).collect();
        transforms.extend(
            self.prf
                .iter()
                .map(|p| plain(TransformType::PRF, p.transform_id())),
        );
        transforms.extend(self.dh.iter().map(|g| plain(TransformType::DH, g.number())));
        proto::Proposal {
            number,
            protocol: ProtocolId::IKE,
            spi,
            transforms,
        }
    }

    /// Whether a received proposal offers a suite this proposal accepts;
    /// picks by our preference order.
    pub fn select(&self, offered: &proto::Proposal) -> Option<IkeSuite> {
        if offered.protocol != ProtocolId::IKE
            || !only_known_types(
                offered,
                &[TransformType::ENCR, TransformType::PRF, TransformType::DH],
            )
        {
            return None;
        }
        let (encr, prf, dh) = offered_sets(offered);
        Some(IkeSuite {
            encr: *self.encr.iter().find(|a| encr.contains(a))?,
            prf: *self.prf.iter().find(|p| prf.contains(p))?,
            dh: *self.dh.iter().find(|g| dh.contains(g))?,
        })
    }
}

impl fmt::Display for IkeProposal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<&str> = self
            .encr
            .iter()
            .map(|a| aead_name(*a))
            .chain(self.prf.iter().map(|p| prf_name(*p)))
            .chain(self.dh.iter().map(|g| dh_name(*g)))
            .collect();
        f.write_str(&parts.join("-"))
    }
}

impl EspProposal {
    /// Parses e.g. `aes256gcm16`, `chacha20poly1305-x25519-esn`.
    pub fn parse(s: &str) -> Result<Self, ProposalError> {
        let mut p = EspProposal {
            encr: vec![],
            dh: vec![],
            esn: vec![],
        };
        for t in tokens(s)? {
            match token(t).ok_or_else(|| unknown(t, s))? {
                Token::Encr(a) => push(&mut p.encr, a),
                Token::Dh(g) => push(&mut p.dh, g),
                Token::Esn(e) => push(&mut p.esn, e),
                Token::Prf(_) => {
                    return Err(ProposalError::WrongProtocol {
                        token: t.into(),
                        protocol: "ESP",
                        proposal: s.into(),
                    });
                }
            }
        }
        if p.encr.is_empty() {
            return Err(ProposalError::Missing {
                missing: "encryption algorithm",
                proposal: s.to_owned(),
            });
        }
        if p.esn.is_empty() {
            p.esn.push(Esn::No);
        }
        Ok(p)
    }

    /// Wire form with our inbound SPI; `with_dh` adds the DH transforms
    /// (CREATE_CHILD_SA with PFS; never in IKE_AUTH, §1.2).
    pub fn to_wire(&self, number: u8, spi: u32, with_dh: bool) -> proto::Proposal {
        let mut transforms: Vec<Transform> = self.encr.iter().map(|a| encr_transform(*a)).collect();
        if with_dh {
            transforms.extend(self.dh.iter().map(|g| plain(TransformType::DH, g.number())));
        }
        transforms.extend(self.esn.iter().map(|e| {
            plain(
                TransformType::ESN,
                if *e == Esn::Yes {
                    transform_id::ESN_YES
                } else {
                    transform_id::ESN_NO
                },
            )
        }));
        proto::Proposal {
            number,
            protocol: ProtocolId::ESP,
            spi: spi.to_be_bytes().to_vec(),
            transforms,
        }
    }

    /// Picks a suite from a received ESP proposal. `with_dh`: whether a DH
    /// group must be agreed (PFS in CREATE_CHILD_SA).
    pub fn select(&self, offered: &proto::Proposal, with_dh: bool) -> Option<EspSuite> {
        if offered.protocol != ProtocolId::ESP
            || offered.spi.len() != 4
            || !only_known_types(
                offered,
                &[TransformType::ENCR, TransformType::DH, TransformType::ESN],
            )
        {
            return None;
        }
        let (encr, _, dh) = offered_sets(offered);
        let esn: Vec<Esn> = offered
            .transforms
            .iter()
            .filter(|t| t.ty == TransformType::ESN)
            .filter_map(|t| match t.id {
                transform_id::ESN_NO => Some(Esn::No),
                transform_id::ESN_YES => Some(Esn::Yes),
                _ => None,
            })
            .collect();
        let dh_choice = match (with_dh, self.dh.is_empty(), dh.is_empty()) {
            // PFS on both sides: agree on a group.
            (true, false, false) => Some(*self.dh.iter().find(|g| dh.contains(g))?),
            // No PFS on either side.
            (_, _, true) if !with_dh || self.dh.is_empty() => None,
            // One side wants PFS, the other does not, or a DH transform
            // where none may be (IKE_AUTH, §1.2).
            _ => return None,
        };
        Some(EspSuite {
            encr: *self.encr.iter().find(|a| encr.contains(a))?,
            dh: dh_choice,
            esn: if esn.is_empty() {
                Esn::No
            } else {
                *self.esn.iter().find(|e| esn.contains(e))?
            },
        })
    }
}

impl fmt::Display for EspProposal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<&str> = self.encr.iter().map(|a| aead_name(*a)).collect();
        parts.extend(self.dh.iter().map(|g| dh_name(*g)));
        parts.extend(
            self.esn
                .iter()
                .map(|e| if *e == Esn::Yes { "esn" } else { "noesn" }),
        );
        f.write_str(&parts.join("-"))
    }
}

/// Parses a comma-separated list of proposals, as in swanctl.conf.
pub fn parse_list<T>(
    s: &str,
    parse: impl Fn(&str) -> Result<T, ProposalError>,
) -> Result<Vec<T>, ProposalError> {
    s.split(',').map(|p| parse(p.trim())).collect()
}

/// The transform list of a suite as the single-proposal answer (§2.7: the
/// responder returns exactly one transform of each type).
pub fn ike_suite_to_wire(suite: IkeSuite, number: u8, spi: Vec<u8>) -> proto::Proposal {
    IkeProposal {
        encr: vec![suite.encr],
        prf: vec![suite.prf],
        dh: vec![suite.dh],
    }
    .to_wire(number, spi)
}

/// Single-proposal answer for ESP.
pub fn esp_suite_to_wire(suite: EspSuite, number: u8, spi: u32) -> proto::Proposal {
    EspProposal {
        encr: vec![suite.encr],
        dh: suite.dh.into_iter().collect(),
        esn: vec![suite.esn],
    }
    .to_wire(number, spi, suite.dh.is_some())
}

/// Reads back a responder's single-transform IKE answer.
pub fn ike_suite_from_wire(p: &proto::Proposal) -> Option<IkeSuite> {
    let (encr, prf, dh) = offered_sets(p);
    match (encr.as_slice(), prf.as_slice(), dh.as_slice()) {
        ([e], [f], [g]) if p.transforms.len() == 3 => Some(IkeSuite {
            encr: *e,
            prf: *f,
            dh: *g,
        }),
        _ => None,
    }
}

fn only_known_types(p: &proto::Proposal, allowed: &[TransformType]) -> bool {
    // An unknown transform type makes the whole proposal unacceptable
    // (§3.3.6); unknown attributes make the transform unacceptable, which
    // `offered_sets` handles by not recognising it.
    p.transforms.iter().all(|t| allowed.contains(&t.ty))
}

fn offered_sets(p: &proto::Proposal) -> (Vec<Aead>, Vec<Prf>, Vec<DhGroup>) {
    let mut encr = vec![];
    let mut prf = vec![];
    let mut dh = vec![];
    for t in &p.transforms {
        let attrs_ok = t.attributes.iter().all(|a| {
            matches!(
                a,
                TransformAttribute::Tv {
                    ty: transform_id::ATTR_KEY_LENGTH,
                    ..
                }
            )
        });
        if !attrs_ok {
            continue;
        }
        match t.ty {
            TransformType::ENCR => encr.extend(Aead::from_transform(t.id, t.key_length())),
            TransformType::PRF if t.attributes.is_empty() => {
                prf.extend(Prf::from_transform_id(t.id))
            }
            TransformType::DH if t.attributes.is_empty() => dh.extend(DhGroup::from_number(t.id)),
            _ => {}
        }
    }
    (encr, prf, dh)
}

fn encr_transform(a: Aead) -> Transform {
    Transform {
        ty: TransformType::ENCR,
        id: a.transform_id(),
        attributes: a
            .key_length_attribute()
            .map(|bits| TransformAttribute::Tv {
                ty: transform_id::ATTR_KEY_LENGTH,
                value: bits,
            })
            .into_iter()
            .collect(),
    }
}

fn plain(ty: TransformType, id: u16) -> Transform {
    Transform {
        ty,
        id,
        attributes: vec![],
    }
}

fn aead_name(a: Aead) -> &'static str {
    match a {
        Aead::AesGcm16_128 => "aes128gcm16",
        Aead::AesGcm16_256 => "aes256gcm16",
        Aead::ChaCha20Poly1305 => "chacha20poly1305",
    }
}

fn prf_name(p: Prf) -> &'static str {
    match p {
        Prf::HmacSha256 => "prfsha256",
        Prf::HmacSha384 => "prfsha384",
        Prf::HmacSha512 => "prfsha512",
    }
}

fn dh_name(g: DhGroup) -> &'static str {
    match g {
        DhGroup::Curve25519 => "x25519",
        DhGroup::Ecp256 => "ecp256",
        DhGroup::Ecp384 => "ecp384",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_issue_ike_proposals() {
        let p = IkeProposal::parse("aes256gcm16-prfsha256-x25519").unwrap();
        assert_eq!(p.encr, vec![Aead::AesGcm16_256]);
        assert_eq!(p.prf, vec![Prf::HmacSha256]);
        assert_eq!(p.dh, vec![DhGroup::Curve25519]);
        let p = IkeProposal::parse("aes128gcm16-prfsha384-ecp384").unwrap();
        assert_eq!(
            (p.encr[0], p.prf[0], p.dh[0]),
            (Aead::AesGcm16_128, Prf::HmacSha384, DhGroup::Ecp384)
        );
        assert_eq!(p.to_string(), "aes128gcm16-prfsha384-ecp384");
    }

    #[test]
    fn parses_esp_proposals_with_esn_options() {
        let p = EspProposal::parse("aes256gcm16").unwrap();
        assert_eq!(
            (p.encr.as_slice(), p.esn.as_slice()),
            (&[Aead::AesGcm16_256][..], &[Esn::No][..])
        );
        let p = EspProposal::parse("chacha20poly1305-esn-noesn").unwrap();
        assert_eq!(p.esn, vec![Esn::Yes, Esn::No]);
        let p = EspProposal::parse("aes128gcm16-ecp256-noesn").unwrap();
        assert_eq!(p.dh, vec![DhGroup::Ecp256]);
    }

    #[test]
    fn errors_name_the_offending_token() {
        assert_eq!(
            IkeProposal::parse("aes256gcm16-prfsha256-modp1024").unwrap_err(),
            ProposalError::UnknownAlgorithm {
                token: "modp1024".into(),
                proposal: "aes256gcm16-prfsha256-modp1024".into()
            }
        );
        assert!(matches!(
            IkeProposal::parse("aes128-sha256-x25519"),
            Err(ProposalError::NotAead { token, .. }) if token == "aes128"
        ));
        assert!(matches!(
            IkeProposal::parse("aes256gcm16-x25519"),
            Err(ProposalError::Missing { .. })
        ));
        assert!(matches!(
            IkeProposal::parse("aes256gcm16-prfsha256-x25519-esn"),
            Err(ProposalError::WrongProtocol { .. })
        ));
        assert!(matches!(
            EspProposal::parse("aes256gcm16-prfsha256"),
            Err(ProposalError::WrongProtocol { .. })
        ));
        assert!(matches!(
            EspProposal::parse("aes256gcm16--esn"),
            Err(ProposalError::Empty(_))
        ));
        assert!(matches!(
            EspProposal::parse(""),
            Err(ProposalError::Empty(_))
        ));
    }

    #[test]
    fn responder_picks_a_common_suite_in_its_own_preference_order() {
        let ours = IkeProposal::parse("aes128gcm16-aes256gcm16-prfsha384-prfsha256-ecp384-x25519")
            .unwrap();
        let theirs = IkeProposal::parse("aes256gcm16-prfsha256-x25519")
            .unwrap()
            .to_wire(1, vec![]);
        assert_eq!(
            ours.select(&theirs),
            Some(IkeSuite {
                encr: Aead::AesGcm16_256,
                prf: Prf::HmacSha256,
                dh: DhGroup::Curve25519
            })
        );
        let other = IkeProposal::parse("chacha20poly1305-prfsha512-ecp256")
            .unwrap()
            .to_wire(1, vec![]);
        assert_eq!(ours.select(&other), None);
        let answer = ike_suite_to_wire(ours.select(&theirs).unwrap(), 1, vec![]);
        assert_eq!(ike_suite_from_wire(&answer), ours.select(&theirs));
    }

    #[test]
    fn esp_selection_respects_pfs_and_esn() {
        let ours = EspProposal::parse("aes256gcm16-x25519-esn").unwrap();
        let theirs = EspProposal::parse("aes256gcm16-x25519-noesn-esn").unwrap();
        let s = ours.select(&theirs.to_wire(1, 7, true), true).unwrap();
        assert_eq!(
            s,
            EspSuite {
                encr: Aead::AesGcm16_256,
                dh: Some(DhGroup::Curve25519),
                esn: Esn::Yes
            }
        );
        // In IKE_AUTH no DH is negotiated.
        let s = ours.select(&theirs.to_wire(1, 7, false), false).unwrap();
        assert_eq!(s.dh, None);
        // A DH transform offered where none may be is declined.
        assert_eq!(ours.select(&theirs.to_wire(1, 7, true), false), None);
        // ESP SPIs are 4 octets.
        let mut bad = theirs.to_wire(1, 7, false);
        bad.spi = vec![1, 2];
        assert_eq!(ours.select(&bad, false), None);
    }

    #[test]
    fn proposal_lists_are_comma_separated() {
        let l = parse_list(
            "aes256gcm16-prfsha256-x25519, aes128gcm16-prfsha384-ecp384",
            IkeProposal::parse,
        )
        .unwrap();
        assert_eq!(l.len(), 2);
        assert!(parse_list("aes256gcm16,bogus", EspProposal::parse).is_err());
    }
}
