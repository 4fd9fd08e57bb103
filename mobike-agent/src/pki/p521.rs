//! ECDSA on P-521 (FIPS 186-4; RFC 4754 §3 for IKEv2's AUTH method 11
//! with SHA-512, RFC 7427 with `ecdsa-with-SHA*` for method 14), on
//! RustCrypto's `p521`: ring, which makes every other signature here, has
//! no P-521. strongSwan signs with it whenever its key is a P-521 one.
//!
//! Here: our P-521 private key and its SHA-512 signatures in both forms
//! (DER for method 14, the r || s octets of RFC 4754 §7 for method 11),
//! the check of a peer's with SHA-256, -384 or -512 (ring hashes, p521
//! checks the digest), and the certificate signature algorithms webpki is
//! given for chains through a P-521 CA ([`WEBPKI_ALGS`]; openssl signs
//! with SHA-256 by default whatever the curve). Not here: key generation.

use p521::{
    SecretKey,
    ecdsa::{
        Signature, SigningKey, VerifyingKey,
        signature::{Signer as _, hazmat::PrehashVerifier as _},
    },
    pkcs8::DecodePrivateKey as _,
};
use ring::digest;
use rustls_pki_types::{
    AlgorithmIdentifier, InvalidSignature, SignatureVerificationAlgorithm, alg_id,
};

/// Why a P-521 key cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("P-521 key: {0}")]
pub struct P521KeyError(String);

/// Our P-521 private key.
pub struct P521Key {
    signing: SigningKey,
    /// The public key as a certificate carries it: the uncompressed point.
    public: Vec<u8>,
}

impl std::fmt::Debug for P521Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("P521Key").finish_non_exhaustive()
    }
}

impl P521Key {
    /// From PKCS#8 DER; None when it is not a P-521 key.
    pub fn from_pkcs8(der: &[u8]) -> Option<Self> {
        SecretKey::from_pkcs8_der(der)
            .ok()
            .and_then(|k| Self::from_secret(&k).ok())
    }

    /// From the private key octets of a SEC1 ECPrivateKey whose curve is
    /// P-521.
    pub fn from_sec1_scalar(scalar: &[u8]) -> Result<Self, P521KeyError> {
        let k = SecretKey::from_slice(scalar).map_err(|e| P521KeyError(e.to_string()))?;
        Self::from_secret(&k)
    }

    fn from_secret(k: &SecretKey) -> Result<Self, P521KeyError> {
        let signing =
            SigningKey::from_bytes(&k.to_bytes()).map_err(|e| P521KeyError(e.to_string()))?;
        let public = VerifyingKey::from(&signing)
            .to_encoded_point(false)
            .as_bytes()
            .to_vec();
        Ok(Self { signing, public })
    }

    /// The uncompressed public point (what a certificate's
    /// SubjectPublicKeyInfo BIT STRING holds).
    pub fn public_key(&self) -> &[u8] {
        &self.public
    }

    /// Signs `msg` with SHA-512: DER (`fixed` false) or r || s, 66 octets
    /// each (`fixed` true). Each nonce is random, from the OS.
    pub fn sign(&self, msg: &[u8], fixed: bool) -> Vec<u8> {
        let sig: Signature = self.signing.sign(msg);
        if fixed {
            sig.to_bytes().to_vec()
        } else {
            sig.to_der().as_bytes().to_vec()
        }
    }
}

/// The hash a P-521 signature was made over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hash {
    Sha256,
    Sha384,
    Sha512,
}

/// Checks an ECDSA signature (`fixed`: r || s, else DER) over `msg` hashed
/// with `hash`, with a P-521 public point.
pub fn verify(
    public: &[u8],
    msg: &[u8],
    sig: &[u8],
    hash: Hash,
    fixed: bool,
) -> Result<(), InvalidSignature> {
    let key = VerifyingKey::from_sec1_bytes(public).map_err(|_| InvalidSignature)?;
    let sig = if fixed {
        Signature::from_slice(sig)
    } else {
        Signature::from_der(sig)
    }
    .map_err(|_| InvalidSignature)?;
    let alg = match hash {
        Hash::Sha256 => &digest::SHA256,
        Hash::Sha384 => &digest::SHA384,
        Hash::Sha512 => &digest::SHA512,
    };
    // The digest as the integer ECDSA signs (SEC1 §4.1.3: a hash shorter
    // than the order is taken whole), left-padded to the field's 66
    // octets: p521 refuses a prehash shorter than half the field, as a
    // SHA-256 one is.
    let d = digest::digest(alg, msg);
    let mut z = [0u8; 66];
    z[66 - d.as_ref().len()..].copy_from_slice(d.as_ref());
    key.verify_prehash(&z, &sig).map_err(|_| InvalidSignature)
}

/// `ecdsa-with-SHA256`, `-SHA384` and `-SHA512` by a P-521 key, for
/// webpki's chain validation.
pub static WEBPKI_ALGS: [&dyn SignatureVerificationAlgorithm; 3] = [
    &EcdsaP521(Hash::Sha256),
    &EcdsaP521(Hash::Sha384),
    &EcdsaP521(Hash::Sha512),
];

#[derive(Debug)]
struct EcdsaP521(Hash);

impl SignatureVerificationAlgorithm for EcdsaP521 {
    fn verify_signature(
        &self,
        public_key: &[u8],
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), InvalidSignature> {
        verify(public_key, message, signature, self.0, false)
    }

    fn public_key_alg_id(&self) -> AlgorithmIdentifier {
        alg_id::ECDSA_P521
    }

    fn signature_alg_id(&self) -> AlgorithmIdentifier {
        match self.0 {
            Hash::Sha256 => alg_id::ECDSA_SHA256,
            Hash::Sha384 => alg_id::ECDSA_SHA384,
            Hash::Sha512 => alg_id::ECDSA_SHA512,
        }
    }
}
