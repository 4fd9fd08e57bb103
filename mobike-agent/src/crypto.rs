//! IKEv2 cryptography on top of ring: the PRFs and prf+ (RFC 7296 §2.13),
//! the key derivation of §2.14 (IKE SA), §2.18 (IKE SA rekey) and §2.17
//! (CHILD_SA KEYMAT), PSK authentication (§2.15), Diffie-Hellman groups
//! 31/19/20 and the AEAD ciphers of the Encrypted payload (RFC 5282 AES-GCM
//! with a 16-octet ICV, RFC 7634 ChaCha20-Poly1305), plus the NAT detection
//! hash (§2.23).
//!
//! It does not choose algorithms (that is negotiation, [`crate::proposal`]),
//! keep keys across messages or generate IVs: callers pass a unique 8-octet
//! IV per key (the engine uses a per-direction message counter). ring's DH
//! keys are ephemeral and cannot be imported, which is exactly what IKE
//! needs, but it also means the RFC 7748 scalar test vectors cannot be
//! replayed here; agreement is tested end to end instead.

use ring::{aead, agreement, digest, hmac, rand::SecureRandom};

use crate::proto::{self, DecodeError, HEADER_LEN, Header, Payload, PayloadType, transform_id};

/// Length of the explicit IV in the Encrypted payload (RFC 5282 §3, RFC 7634 §2).
pub const IV_LEN: usize = 8;
/// Length of the AEAD salt taken from the key material (RFC 5282 §7.1).
pub const SALT_LEN: usize = 4;
/// ICV length of all supported AEADs.
pub const ICV_LEN: usize = 16;

/// What went wrong in a cryptographic operation.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// Key material of the wrong size for the cipher.
    #[error("{alg:?} needs {need} octets of key material, got {got}")]
    KeyLength {
        /// The cipher.
        alg: Aead,
        /// Octets needed (key plus salt).
        need: usize,
        /// Octets given.
        got: usize,
    },
    /// The ICV did not verify: forged, corrupted or wrong key.
    #[error("integrity check of the Encrypted payload failed")]
    IntegrityCheckFailed,
    /// Encrypted payload too short to hold IV and ICV.
    #[error("Encrypted payload of {0} octets cannot hold IV and ICV")]
    ShortCiphertext(usize),
    /// The Pad Length octet points before the start of the plaintext.
    #[error("Pad Length {pad} exceeds the {len}-octet plaintext")]
    BadPadding {
        /// Pad Length.
        pad: u8,
        /// Plaintext length.
        len: usize,
    },
    /// The message carries no Encrypted payload.
    #[error("message has no Encrypted payload")]
    NotEncrypted,
    /// The decrypted payload chain is malformed.
    #[error("decrypted payloads are malformed")]
    Inner(#[source] DecodeError),
    /// prf+ asked for more than 255 blocks (§2.13).
    #[error("prf+ cannot produce {0} octets")]
    PrfPlusTooLong(usize),
    /// KE data of the wrong length for its group.
    #[error("{group:?} key exchange data is {got} octets, expected {expected}")]
    KeLength {
        /// Group.
        group: DhGroup,
        /// Octets received.
        got: usize,
        /// Octets expected.
        expected: usize,
    },
    /// ring refused the peer's public value (not on the curve, ...).
    #[error("Diffie-Hellman key agreement failed (invalid peer public value)")]
    KeyAgreement,
    /// The system random generator failed.
    #[error("random number generator failed")]
    Random,
}

/// RFC 7296 §3.3.2 transform type 2 (PRF), the ones supported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Prf {
    /// PRF_HMAC_SHA2_256 (RFC 4868).
    HmacSha256,
    /// PRF_HMAC_SHA2_384 (RFC 4868).
    HmacSha384,
    /// PRF_HMAC_SHA2_512 (RFC 4868).
    HmacSha512,
}

impl Prf {
    /// IANA Transform ID.
    pub fn transform_id(self) -> u16 {
        match self {
            Prf::HmacSha256 => transform_id::PRF_HMAC_SHA2_256,
            Prf::HmacSha384 => transform_id::PRF_HMAC_SHA2_384,
            Prf::HmacSha512 => transform_id::PRF_HMAC_SHA2_512,
        }
    }

    /// From an IANA Transform ID.
    pub fn from_transform_id(id: u16) -> Option<Self> {
        [Prf::HmacSha256, Prf::HmacSha384, Prf::HmacSha512]
            .into_iter()
            .find(|p| p.transform_id() == id)
    }

    fn algorithm(self) -> hmac::Algorithm {
        match self {
            Prf::HmacSha256 => hmac::HMAC_SHA256,
            Prf::HmacSha384 => hmac::HMAC_SHA384,
            Prf::HmacSha512 => hmac::HMAC_SHA512,
        }
    }

    /// Output length, which is also the key length of SK_d, SK_pi and SK_pr
    /// (§2.14: "the preferred key size of the PRF").
    pub fn output_len(self) -> usize {
        match self {
            Prf::HmacSha256 => 32,
            Prf::HmacSha384 => 48,
            Prf::HmacSha512 => 64,
        }
    }

    /// prf(key, data).
    pub fn prf(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        hmac::sign(&hmac::Key::new(self.algorithm(), key), data)
            .as_ref()
            .to_vec()
    }

    fn prf_parts(self, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        let mut ctx = hmac::Context::with_key(&hmac::Key::new(self.algorithm(), key));
        for p in parts {
            ctx.update(p);
        }
        ctx.sign().as_ref().to_vec()
    }

    /// RFC 7296 §2.13: prf+ (K,S) = T1 | T2 | T3 | ..., where
    /// T1 = prf (K, S | 0x01), Tn = prf (K, T(n-1) | S | n); at most 255
    /// blocks.
    pub fn prf_plus(self, key: &[u8], seed: &[u8], len: usize) -> Result<Vec<u8>, CryptoError> {
        if len > 255 * self.output_len() {
            return Err(CryptoError::PrfPlusTooLong(len));
        }
        let mut out = Vec::with_capacity(len + self.output_len());
        let mut t: Vec<u8> = Vec::new();
        let mut n = 1u8;
        while out.len() < len {
            t = self.prf_parts(key, &[&t, seed, &[n]]);
            out.extend_from_slice(&t);
            n = n.wrapping_add(1);
        }
        out.truncate(len);
        Ok(out)
    }
}

/// AEAD ciphers for the Encrypted payload and for ESP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Aead {
    /// ENCR_AES_GCM_16 with a 128-bit key (RFC 5282, RFC 4106).
    AesGcm16_128,
    /// ENCR_AES_GCM_16 with a 256-bit key.
    AesGcm16_256,
    /// ENCR_CHACHA20_POLY1305 (RFC 7634).
    ChaCha20Poly1305,
}

impl Aead {
    /// IANA Transform ID.
    pub fn transform_id(self) -> u16 {
        match self {
            Aead::AesGcm16_128 | Aead::AesGcm16_256 => transform_id::ENCR_AES_GCM_16,
            Aead::ChaCha20Poly1305 => transform_id::ENCR_CHACHA20_POLY1305,
        }
    }

    /// Key Length attribute in bits (none for ChaCha20-Poly1305, RFC 7634 §2:
    /// "MUST NOT" be sent).
    pub fn key_length_attribute(self) -> Option<u16> {
        match self {
            Aead::AesGcm16_128 => Some(128),
            Aead::AesGcm16_256 => Some(256),
            Aead::ChaCha20Poly1305 => None,
        }
    }

    /// From Transform ID and Key Length attribute.
    pub fn from_transform(id: u16, key_bits: Option<u16>) -> Option<Self> {
        match (id, key_bits) {
            (transform_id::ENCR_AES_GCM_16, Some(128)) => Some(Aead::AesGcm16_128),
            (transform_id::ENCR_AES_GCM_16, Some(256)) => Some(Aead::AesGcm16_256),
            (transform_id::ENCR_CHACHA20_POLY1305, None) => Some(Aead::ChaCha20Poly1305),
            _ => None,
        }
    }

    /// Cipher key length in octets, without the salt.
    pub fn key_len(self) -> usize {
        match self {
            Aead::AesGcm16_128 => 16,
            Aead::AesGcm16_256 | Aead::ChaCha20Poly1305 => 32,
        }
    }

    /// Key material per direction: key plus 4-octet salt (RFC 5282 §7.1,
    /// RFC 4106 §8.1, RFC 7634 §2 and §4).
    pub fn keymat_len(self) -> usize {
        self.key_len() + SALT_LEN
    }

    /// The Linux kernel's name of the ESP algorithm.
    pub fn kernel_name(self) -> &'static str {
        match self {
            Aead::AesGcm16_128 | Aead::AesGcm16_256 => "rfc4106(gcm(aes))",
            Aead::ChaCha20Poly1305 => "rfc7539esp(chacha20,poly1305)",
        }
    }

    fn key(self, keymat: &[u8]) -> Result<(aead::LessSafeKey, [u8; SALT_LEN]), CryptoError> {
        if keymat.len() != self.keymat_len() {
            return Err(CryptoError::KeyLength {
                alg: self,
                need: self.keymat_len(),
                got: keymat.len(),
            });
        }
        let alg = match self {
            Aead::AesGcm16_128 => &aead::AES_128_GCM,
            Aead::AesGcm16_256 => &aead::AES_256_GCM,
            Aead::ChaCha20Poly1305 => &aead::CHACHA20_POLY1305,
        };
        let (key, salt) = keymat.split_at(self.key_len());
        let key = aead::UnboundKey::new(alg, key).map_err(|_| CryptoError::KeyLength {
            alg: self,
            need: self.keymat_len(),
            got: keymat.len(),
        })?;
        let mut s = [0u8; SALT_LEN];
        s.copy_from_slice(salt);
        Ok((aead::LessSafeKey::new(key), s))
    }

    fn nonce(salt: [u8; SALT_LEN], iv: [u8; IV_LEN]) -> aead::Nonce {
        let mut n = [0u8; 12];
        n[..SALT_LEN].copy_from_slice(&salt);
        n[SALT_LEN..].copy_from_slice(&iv);
        aead::Nonce::assume_unique_for_key(n)
    }

    /// Encrypts `plaintext` in place and appends the ICV. The nonce is
    /// salt | iv; `iv` must never repeat under one key.
    pub fn seal(
        self,
        keymat: &[u8],
        iv: [u8; IV_LEN],
        aad: &[u8],
        plaintext: &mut Vec<u8>,
    ) -> Result<(), CryptoError> {
        let (key, salt) = self.key(keymat)?;
        key.seal_in_place_append_tag(Self::nonce(salt, iv), aead::Aad::from(aad), plaintext)
            .map_err(|_| CryptoError::IntegrityCheckFailed)
    }

    /// Verifies and decrypts ciphertext | ICV.
    pub fn open(
        self,
        keymat: &[u8],
        iv: [u8; IV_LEN],
        aad: &[u8],
        sealed: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        let (key, salt) = self.key(keymat)?;
        let mut buf = sealed.to_vec();
        let len = key
            .open_in_place(Self::nonce(salt, iv), aead::Aad::from(aad), &mut buf)
            .map_err(|_| CryptoError::IntegrityCheckFailed)?
            .len();
        buf.truncate(len);
        Ok(buf)
    }
}

/// RFC 7296 §3.3.2 transform type 4, the groups supported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DhGroup {
    /// Group 31, Curve25519 (RFC 8031).
    Curve25519,
    /// Group 19, 256-bit random ECP (RFC 5903).
    Ecp256,
    /// Group 20, 384-bit random ECP (RFC 5903).
    Ecp384,
}

impl DhGroup {
    /// IANA group number.
    pub fn number(self) -> u16 {
        match self {
            DhGroup::Curve25519 => transform_id::DH_CURVE25519,
            DhGroup::Ecp256 => transform_id::DH_ECP_256,
            DhGroup::Ecp384 => transform_id::DH_ECP_384,
        }
    }

    /// From an IANA group number.
    pub fn from_number(n: u16) -> Option<Self> {
        [DhGroup::Curve25519, DhGroup::Ecp256, DhGroup::Ecp384]
            .into_iter()
            .find(|g| g.number() == n)
    }

    /// Length of the Key Exchange Data: 32 for Curve25519 (RFC 8031 §2),
    /// x | y without the 0x04 prefix for ECP (RFC 5903 §7).
    pub fn public_len(self) -> usize {
        match self {
            DhGroup::Curve25519 => 32,
            DhGroup::Ecp256 => 64,
            DhGroup::Ecp384 => 96,
        }
    }

    fn algorithm(self) -> &'static agreement::Algorithm {
        match self {
            DhGroup::Curve25519 => &agreement::X25519,
            DhGroup::Ecp256 => &agreement::ECDH_P256,
            DhGroup::Ecp384 => &agreement::ECDH_P384,
        }
    }
}

/// Our half of a Diffie-Hellman exchange.
pub struct KeyShare {
    group: DhGroup,
    private: agreement::EphemeralPrivateKey,
    public: Vec<u8>,
}

impl std::fmt::Debug for KeyShare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyShare")
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

impl KeyShare {
    /// Generates a fresh ephemeral key.
    pub fn generate(group: DhGroup, rng: &dyn SecureRandom) -> Result<Self, CryptoError> {
        let private = agreement::EphemeralPrivateKey::generate(group.algorithm(), rng)
            .map_err(|_| CryptoError::Random)?;
        let public = private
            .compute_public_key()
            .map_err(|_| CryptoError::Random)?;
        let public = match group {
            DhGroup::Curve25519 => public.as_ref().to_vec(),
            // Strip the SEC1 uncompressed-point prefix 0x04 (RFC 5903 §7).
            DhGroup::Ecp256 | DhGroup::Ecp384 => {
                public.as_ref().get(1..).unwrap_or_default().to_vec()
            }
        };
        Ok(KeyShare {
            group,
            private,
            public,
        })
    }

    /// The group.
    pub fn group(&self) -> DhGroup {
        self.group
    }

    /// The Key Exchange Data to send.
    pub fn public(&self) -> &[u8] {
        &self.public
    }

    /// Computes g^ir from the peer's Key Exchange Data (for ECP: the x
    /// coordinate, RFC 5903 §9).
    pub fn agree(self, peer: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let expected = self.group.public_len();
        if peer.len() != expected {
            return Err(CryptoError::KeLength {
                group: self.group,
                got: peer.len(),
                expected,
            });
        }
        let peer_bytes = match self.group {
            DhGroup::Curve25519 => peer.to_vec(),
            DhGroup::Ecp256 | DhGroup::Ecp384 => [&[0x04u8][..], peer].concat(),
        };
        let peer_key = agreement::UnparsedPublicKey::new(self.group.algorithm(), peer_bytes);
        agreement::agree_ephemeral(self.private, &peer_key, |s| s.to_vec())
            .map_err(|_| CryptoError::KeyAgreement)
    }
}

/// The keys of an IKE SA (§2.14). SK_ai/SK_ar are absent: only AEAD ciphers
/// are supported, for which they have length zero (RFC 5282 §7).
#[derive(Clone, PartialEq, Eq)]
pub struct IkeKeys {
    /// PRF of the SA.
    pub prf: Prf,
    /// Cipher of the SA.
    pub aead: Aead,
    /// SK_d: for CHILD_SA and rekeyed IKE SA keys.
    pub sk_d: Vec<u8>,
    /// SK_ei: key material (key | salt) protecting initiator -> responder.
    pub sk_ei: Vec<u8>,
    /// SK_er: responder -> initiator.
    pub sk_er: Vec<u8>,
    /// SK_pi: for the initiator's AUTH.
    pub sk_pi: Vec<u8>,
    /// SK_pr: for the responder's AUTH.
    pub sk_pr: Vec<u8>,
}

impl std::fmt::Debug for IkeKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IkeKeys")
            .field("prf", &self.prf)
            .field("aead", &self.aead)
            .finish_non_exhaustive()
    }
}

impl IkeKeys {
    /// RFC 7296 §2.14:
    /// SKEYSEED = prf(Ni | Nr, g^ir);
    /// {SK_d | SK_ai | SK_ar | SK_ei | SK_er | SK_pi | SK_pr}
    ///     = prf+ (SKEYSEED, Ni | Nr | SPIi | SPIr).
    pub fn derive(
        prf: Prf,
        aead: Aead,
        ni: &[u8],
        nr: &[u8],
        shared: &[u8],
        spi_i: u64,
        spi_r: u64,
    ) -> Result<Self, CryptoError> {
        let skeyseed = prf.prf(&[ni, nr].concat(), shared);
        Self::expand(prf, aead, &skeyseed, ni, nr, spi_i, spi_r)
    }

    /// RFC 7296 §2.18 (rekeying an IKE SA):
    /// SKEYSEED = prf(SK_d (old), g^ir (new) | Ni | Nr), with the old SA's
    /// PRF; the new keys then come from the new SA's PRF.
    #[allow(clippy::too_many_arguments)]
    pub fn derive_rekeyed(
        old: &IkeKeys,
        prf: Prf,
        aead: Aead,
        ni: &[u8],
        nr: &[u8],
        shared: &[u8],
        spi_i: u64,
        spi_r: u64,
    ) -> Result<Self, CryptoError> {
        let skeyseed = old.prf.prf_parts(&old.sk_d, &[shared, ni, nr]);
        Self::expand(prf, aead, &skeyseed, ni, nr, spi_i, spi_r)
    }

    fn expand(
        prf: Prf,
        aead: Aead,
        skeyseed: &[u8],
        ni: &[u8],
        nr: &[u8],
        spi_i: u64,
        spi_r: u64,
    ) -> Result<Self, CryptoError> {
        let seed = [ni, nr, &spi_i.to_be_bytes(), &spi_r.to_be_bytes()].concat();
        let (p, e) = (prf.output_len(), aead.keymat_len());
        let km = prf.prf_plus(skeyseed, &seed, 3 * p + 2 * e)?;
        let mut at = 0;
        let mut take = |n: usize| {
            let s = km[at..at + n].to_vec();
            at += n;
            s
        };
        Ok(IkeKeys {
            prf,
            aead,
            sk_d: take(p),
            sk_ei: take(e),
            sk_er: take(e),
            sk_pi: take(p),
            sk_pr: take(p),
        })
    }

    /// RFC 7296 §2.17: KEYMAT = prf+(SK_d, [g^ir (new) |] Ni | Nr); the
    /// initiator-to-responder key is taken first. For the AEAD ESP ciphers
    /// each key includes its 4-octet salt (RFC 4106 §8.1, RFC 7634 §4).
    pub fn child_keys(
        &self,
        esp: Aead,
        shared: Option<&[u8]>,
        ni: &[u8],
        nr: &[u8],
    ) -> Result<ChildKeys, CryptoError> {
        let seed = [shared.unwrap_or_default(), ni, nr].concat();
        let km = self.prf.prf_plus(&self.sk_d, &seed, 2 * esp.keymat_len())?;
        let (i, r) = km.split_at(esp.keymat_len());
        Ok(ChildKeys {
            aead: esp,
            i_to_r: i.to_vec(),
            r_to_i: r.to_vec(),
        })
    }

    /// RFC 7296 §2.15, shared key:
    /// AUTH = prf( prf(Shared Secret, "Key Pad for IKEv2"), `<SignedOctets>`)
    /// with SignedOctets = RealMessage | Nonce(peer) | prf(SK_p, RestOfIDPayload).
    /// `initiator` selects SK_pi (true) or SK_pr.
    /// The octets a signature in AUTH covers (§2.15): the IKE_SA_INIT
    /// message we sent, the peer's nonce, and prf(SK_p, our ID payload
    /// body).
    pub fn signed_octets(
        &self,
        initiator: bool,
        real_message: &[u8],
        peer_nonce: &[u8],
        id_body: &[u8],
    ) -> Vec<u8> {
        let sk_p = if initiator { &self.sk_pi } else { &self.sk_pr };
        let maced_id = self.prf.prf(sk_p, id_body);
        [real_message, peer_nonce, &maced_id].concat()
    }

    pub fn psk_auth(
        &self,
        psk: &[u8],
        initiator: bool,
        real_message: &[u8],
        peer_nonce: &[u8],
        id_body: &[u8],
    ) -> Vec<u8> {
        let sk_p = if initiator { &self.sk_pi } else { &self.sk_pr };
        let maced_id = self.prf.prf(sk_p, id_body);
        let pad = self.prf.prf(psk, b"Key Pad for IKEv2");
        self.prf
            .prf_parts(&pad, &[real_message, peer_nonce, &maced_id])
    }
}

/// ESP key material of a CHILD_SA, each `key | salt`.
#[derive(Clone, PartialEq, Eq)]
pub struct ChildKeys {
    /// ESP cipher.
    pub aead: Aead,
    /// Initiator -> responder.
    pub i_to_r: Vec<u8>,
    /// Responder -> initiator.
    pub r_to_i: Vec<u8>,
}

impl std::fmt::Debug for ChildKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildKeys")
            .field("aead", &self.aead)
            .finish_non_exhaustive()
    }
}

/// Compares two MACs in constant time.
pub fn verify_mac(expected: &[u8], got: &[u8]) -> bool {
    expected.len() == got.len()
        && expected
            .iter()
            .zip(got)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// RFC 7296 §2.23: SHA-1(SPIi | SPIr | IP | Port) for the NAT_DETECTION
/// notifies.
pub fn nat_detection_hash(spi_i: u64, spi_r: u64, addr: std::net::SocketAddr) -> Vec<u8> {
    let mut ctx = digest::Context::new(&digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(&spi_i.to_be_bytes());
    ctx.update(&spi_r.to_be_bytes());
    match addr.ip() {
        std::net::IpAddr::V4(a) => ctx.update(&a.octets()),
        std::net::IpAddr::V6(a) => ctx.update(&a.octets()),
    }
    ctx.update(&addr.port().to_be_bytes());
    ctx.finish().as_ref().to_vec()
}

/// SHA-256, for stateless cookies and duplicate detection.
pub fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    for p in parts {
        ctx.update(p);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// Builds a message whose payloads all go into an Encrypted payload
/// (RFC 7296 §3.14, AEAD layout of RFC 5282 §3): header | SK header | IV |
/// ciphertext | ICV, the plaintext being payloads | Pad Length (0, AEADs
/// need no padding). The AAD is the header and the SK generic header
/// (RFC 5282 §5.1). `header.next_payload` and `length` are filled in.
pub fn seal_message(
    mut header: Header,
    inner: &[Payload],
    aead: Aead,
    keymat: &[u8],
    iv: [u8; IV_LEN],
) -> Result<Vec<u8>, CryptoError> {
    let (first_inner, mut plaintext) = proto::encode_chain(inner);
    plaintext.push(0);
    let sk_len = proto::GENERIC_HEADER_LEN + IV_LEN + plaintext.len() + ICV_LEN;
    header.next_payload = PayloadType::SK;
    header.length = (HEADER_LEN + sk_len) as u32;
    let mut out = header.encode().to_vec();
    out.extend_from_slice(&[first_inner.0, 0]);
    out.extend_from_slice(&(sk_len as u16).to_be_bytes());
    aead.seal(keymat, iv, &out, &mut plaintext)?;
    out.extend_from_slice(&iv);
    out.extend_from_slice(&plaintext);
    Ok(out)
}

/// Verifies and decrypts the Encrypted payload of `datagram` (already
/// decoded as `msg`) and decodes the inner payloads.
pub fn open_message(
    datagram: &[u8],
    msg: &proto::Message,
    aead: Aead,
    keymat: &[u8],
) -> Result<Vec<Payload>, CryptoError> {
    let sk = msg.encrypted().ok_or(CryptoError::NotEncrypted)?;
    let aad_end = sk.header_offset + proto::GENERIC_HEADER_LEN;
    let aad = datagram.get(..aad_end).ok_or(CryptoError::NotEncrypted)?;
    if sk.body.len() < IV_LEN + ICV_LEN + 1 {
        return Err(CryptoError::ShortCiphertext(sk.body.len()));
    }
    let (iv, sealed) = sk.body.split_at(IV_LEN);
    let mut ivb = [0u8; IV_LEN];
    ivb.copy_from_slice(iv);
    let mut plain = aead.open(keymat, ivb, aad, sealed)?;
    let pad = plain.last().copied().unwrap_or(0);
    if pad as usize + 1 > plain.len() {
        return Err(CryptoError::BadPadding {
            pad,
            len: plain.len(),
        });
    }
    plain.truncate(plain.len() - pad as usize - 1);
    proto::decode_chain(sk.first_inner, &plain, 0, false).map_err(CryptoError::Inner)
}

#[cfg(test)]
mod tests;
