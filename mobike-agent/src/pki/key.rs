//! Our private key and the signatures it makes for the AUTH payload
//! (RFC 7296 §3.8; RFC 7427 §3 Digital Signature; RFC 4754 for the
//! classic ECDSA methods 9-11; RFC 8420 for Ed25519): RSA with PKCS#1
//! v1.5 or PSS padding and SHA-2, ECDSA on P-256 and P-384, Ed25519, on
//! ring; ECDSA on P-521 with SHA-512 on RustCrypto's p521 ([`super::p521`]:
//! ring has no P-521). Keys come as PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
//!
//! ring does not sign with SHA-1 RSA: we always sign with an RSA key in
//! RFC 7427's Digital Signature (method 14), never with the classic
//! method 1; [`Scheme::RsaPkcs1Sha1`] exists for checking a peer's
//! method-1 signature only.

use ring::{
    rand::SystemRandom,
    signature::{
        self, EcdsaKeyPair, EcdsaSigningAlgorithm, Ed25519KeyPair, KeyPair as _, RsaKeyPair,
    },
};
use rustls_pki_types::PrivateKeyDer;

use super::p521::P521Key;
use sec1::der::Decode as _;

/// Why a key cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("not an RSA, ECDSA P-256/P-384/P-521 or Ed25519 key: {0}")]
    Unsupported(String),
    #[error("SEC1 EC key: {0}")]
    Sec1(String),
    #[error("an RSA key of {0} bits is too short (2048 at least)")]
    RsaTooShort(usize),
    #[error("{scheme:?} cannot be made with a {key} key")]
    WrongScheme { scheme: Scheme, key: KeyKind },
    #[error("signing failed")]
    Sign,
}

/// The kind of a key, as status shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Rsa { bits: usize },
    EcdsaP256,
    EcdsaP384,
    EcdsaP521,
    Ed25519,
}

impl std::fmt::Display for KeyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyKind::Rsa { bits } => write!(f, "RSA-{bits}"),
            KeyKind::EcdsaP256 => f.write_str("ECDSA P-256"),
            KeyKind::EcdsaP384 => f.write_str("ECDSA P-384"),
            KeyKind::EcdsaP521 => f.write_str("ECDSA P-521"),
            KeyKind::Ed25519 => f.write_str("Ed25519"),
        }
    }
}

/// A signature scheme: the algorithm and hash of an AUTH signature
/// (RFC 7427 §3's AlgorithmIdentifier; `*Fixed`: the r || s form of the
/// classic methods 9 and 10, RFC 4754 §7, instead of DER).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// PKCS#1 v1.5 with SHA-1: the classic "RSA Digital Signature"
    /// (RFC 7296 §3.8 method 1), checked in a peer's AUTH, never made.
    RsaPkcs1Sha1,
    RsaPkcs1Sha256,
    RsaPkcs1Sha384,
    RsaPkcs1Sha512,
    RsaPssSha256,
    RsaPssSha384,
    RsaPssSha512,
    EcdsaP256Sha256,
    EcdsaP384Sha384,
    EcdsaP256Sha256Fixed,
    EcdsaP384Sha384Fixed,
    /// ECDSA on P-521 with SHA-512 (DER; `ecdsa-with-SHA512`).
    EcdsaP521Sha512,
    /// The r || s form: AUTH method 11 (RFC 4754).
    EcdsaP521Sha512Fixed,
    Ed25519,
}

/// Our private key.
#[derive(Debug)]
pub struct PrivateKey {
    inner: Inner,
    /// The public key as the certificate's SubjectPublicKeyInfo carries it
    /// in its BIT STRING (RSAPublicKey DER, the EC point, the Ed25519 key).
    public: Vec<u8>,
}

#[derive(Debug)]
enum Inner {
    Rsa(RsaKeyPair),
    /// Two ring key pairs: one signs DER, the other r || s.
    Ecdsa(Box<Ecdsa>),
    P521(Box<P521Key>),
    Ed25519(Ed25519KeyPair),
}

#[derive(Debug)]
struct Ecdsa {
    p384: bool,
    der: EcdsaKeyPair,
    fixed: EcdsaKeyPair,
}

const OID_P256: &str = "1.2.840.10045.3.1.7";
const OID_P384: &str = "1.3.132.0.34";
const OID_P521: &str = "1.3.132.0.35";

fn ecdsa_algs(
    p384: bool,
) -> (
    &'static EcdsaSigningAlgorithm,
    &'static EcdsaSigningAlgorithm,
) {
    if p384 {
        (
            &signature::ECDSA_P384_SHA384_ASN1_SIGNING,
            &signature::ECDSA_P384_SHA384_FIXED_SIGNING,
        )
    } else {
        (
            &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        )
    }
}

impl PrivateKey {
    /// A key from its DER form (as [`super::files`] reads it).
    pub fn from_der(key: &PrivateKeyDer<'_>) -> Result<Self, KeyError> {
        let rng = SystemRandom::new();
        match key {
            PrivateKeyDer::Pkcs8(k) => Self::from_pkcs8(k.secret_pkcs8_der(), &rng),
            PrivateKeyDer::Pkcs1(k) => {
                let rsa = RsaKeyPair::from_der(k.secret_pkcs1_der())
                    .map_err(|e| KeyError::Unsupported(e.to_string()))?;
                Self::rsa(rsa)
            }
            PrivateKeyDer::Sec1(k) => Self::from_sec1(k.secret_sec1_der(), &rng),
            _ => Err(KeyError::Unsupported("unknown key format".into())),
        }
    }

    fn from_pkcs8(der: &[u8], rng: &SystemRandom) -> Result<Self, KeyError> {
        if let Ok(k) = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der) {
            let public = k.public_key().as_ref().to_vec();
            return Ok(PrivateKey {
                inner: Inner::Ed25519(k),
                public,
            });
        }
        for p384 in [false, true] {
            let (asn1, fixed) = ecdsa_algs(p384);
            if let (Ok(d), Ok(f)) = (
                EcdsaKeyPair::from_pkcs8(asn1, der, rng),
                EcdsaKeyPair::from_pkcs8(fixed, der, rng),
            ) {
                let public = d.public_key().as_ref().to_vec();
                return Ok(PrivateKey {
                    inner: Inner::Ecdsa(Box::new(Ecdsa {
                        p384,
                        der: d,
                        fixed: f,
                    })),
                    public,
                });
            }
        }
        if let Some(k) = P521Key::from_pkcs8(der) {
            let public = k.public_key().to_vec();
            return Ok(PrivateKey {
                inner: Inner::P521(Box::new(k)),
                public,
            });
        }
        let rsa = RsaKeyPair::from_pkcs8(der).map_err(|e| KeyError::Unsupported(e.to_string()))?;
        Self::rsa(rsa)
    }

    fn from_sec1(der: &[u8], rng: &SystemRandom) -> Result<Self, KeyError> {
        let k = sec1::EcPrivateKey::from_der(der).map_err(|e| KeyError::Sec1(e.to_string()))?;
        let curve = k
            .parameters
            .and_then(|p| p.named_curve())
            .ok_or_else(|| KeyError::Sec1("no named curve in the key".into()))?
            .to_string();
        let p384 = match curve.as_str() {
            OID_P256 => false,
            OID_P384 => true,
            OID_P521 => {
                let k = P521Key::from_sec1_scalar(k.private_key)
                    .map_err(|e| KeyError::Sec1(e.to_string()))?;
                let public = k.public_key().to_vec();
                return Ok(PrivateKey {
                    inner: Inner::P521(Box::new(k)),
                    public,
                });
            }
            other => {
                return Err(KeyError::Sec1(format!(
                    "curve {other} (P-256, P-384 or P-521 only)"
                )));
            }
        };
        let public = k
            .public_key
            .ok_or_else(|| KeyError::Sec1("no public key in the key".into()))?;
        let (asn1, fixed) = ecdsa_algs(p384);
        let make = |alg| {
            EcdsaKeyPair::from_private_key_and_public_key(alg, k.private_key, public, rng)
                .map_err(|e| KeyError::Sec1(e.to_string()))
        };
        Ok(PrivateKey {
            inner: Inner::Ecdsa(Box::new(Ecdsa {
                p384,
                der: make(asn1)?,
                fixed: make(fixed)?,
            })),
            public: public.to_vec(),
        })
    }

    fn rsa(rsa: RsaKeyPair) -> Result<Self, KeyError> {
        let bits = rsa.public().modulus_len() * 8;
        if bits < 2048 {
            return Err(KeyError::RsaTooShort(bits));
        }
        let public = rsa.public_key().as_ref().to_vec();
        Ok(PrivateKey {
            inner: Inner::Rsa(rsa),
            public,
        })
    }

    /// What kind of key it is.
    pub fn kind(&self) -> KeyKind {
        match &self.inner {
            Inner::Rsa(k) => KeyKind::Rsa {
                bits: k.public().modulus_len() * 8,
            },
            Inner::Ecdsa(e) if e.p384 => KeyKind::EcdsaP384,
            Inner::Ecdsa(_) => KeyKind::EcdsaP256,
            Inner::P521(_) => KeyKind::EcdsaP521,
            Inner::Ed25519(_) => KeyKind::Ed25519,
        }
    }

    /// The public key, as in a certificate's SubjectPublicKeyInfo BIT
    /// STRING: a certificate is ours only if it carries this.
    pub fn public_key(&self) -> &[u8] {
        &self.public
    }

    /// The schemes this key can sign with, the preferred first.
    pub fn schemes(&self) -> &'static [Scheme] {
        use Scheme::*;
        match self.kind() {
            KeyKind::Rsa { .. } => &[
                RsaPssSha256,
                RsaPssSha384,
                RsaPssSha512,
                RsaPkcs1Sha256,
                RsaPkcs1Sha384,
                RsaPkcs1Sha512,
            ],
            KeyKind::EcdsaP256 => &[EcdsaP256Sha256, EcdsaP256Sha256Fixed],
            KeyKind::EcdsaP384 => &[EcdsaP384Sha384, EcdsaP384Sha384Fixed],
            KeyKind::EcdsaP521 => &[EcdsaP521Sha512, EcdsaP521Sha512Fixed],
            KeyKind::Ed25519 => &[Ed25519],
        }
    }

    /// Signs `msg` (the octets RFC 7296 §2.15 defines) with `scheme`.
    pub fn sign(&self, scheme: Scheme, msg: &[u8]) -> Result<Vec<u8>, KeyError> {
        let rng = SystemRandom::new();
        let wrong = || KeyError::WrongScheme {
            scheme,
            key: self.kind(),
        };
        match &self.inner {
            Inner::Rsa(k) => {
                let enc: &'static dyn signature::RsaEncoding = match scheme {
                    Scheme::RsaPkcs1Sha256 => &signature::RSA_PKCS1_SHA256,
                    Scheme::RsaPkcs1Sha384 => &signature::RSA_PKCS1_SHA384,
                    Scheme::RsaPkcs1Sha512 => &signature::RSA_PKCS1_SHA512,
                    Scheme::RsaPssSha256 => &signature::RSA_PSS_SHA256,
                    Scheme::RsaPssSha384 => &signature::RSA_PSS_SHA384,
                    Scheme::RsaPssSha512 => &signature::RSA_PSS_SHA512,
                    _ => return Err(wrong()),
                };
                let mut sig = vec![0; k.public().modulus_len()];
                k.sign(enc, &rng, msg, &mut sig)
                    .map_err(|_| KeyError::Sign)?;
                Ok(sig)
            }
            Inner::Ecdsa(e) => {
                let k = match (scheme, e.p384) {
                    (Scheme::EcdsaP256Sha256, false) | (Scheme::EcdsaP384Sha384, true) => &e.der,
                    (Scheme::EcdsaP256Sha256Fixed, false)
                    | (Scheme::EcdsaP384Sha384Fixed, true) => &e.fixed,
                    _ => return Err(wrong()),
                };
                Ok(k.sign(&rng, msg)
                    .map_err(|_| KeyError::Sign)?
                    .as_ref()
                    .to_vec())
            }
            Inner::P521(k) => match scheme {
                Scheme::EcdsaP521Sha512 => Ok(k.sign(msg, false)),
                Scheme::EcdsaP521Sha512Fixed => Ok(k.sign(msg, true)),
                _ => Err(wrong()),
            },
            Inner::Ed25519(k) => match scheme {
                Scheme::Ed25519 => Ok(k.sign(msg).as_ref().to_vec()),
                _ => Err(wrong()),
            },
        }
    }
}
