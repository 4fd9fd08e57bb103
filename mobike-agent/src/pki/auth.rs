//! The AUTH payload's Digital Signature form (RFC 7427 §3): one octet with
//! the length of an ASN.1 AlgorithmIdentifier, that AlgorithmIdentifier,
//! then the signature; the hash algorithms a SIGNATURE_HASH_ALGORITHMS
//! notify lists (§4; Identity, for Ed25519, from RFC 8420 §2); and the
//! check of a peer's signature with the public key of its certificate.
//!
//! Ours are sent as the fixed DER strings RFC 7427 Appendix A gives (and
//! RFC 8420 for Ed25519); the peer's are parsed with x509-parser, and a
//! PSS one is accepted only with the parameters ring verifies (MGF1 with
//! the same hash, salt as long as the hash).

use ring::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use x509_parser::{
    oid_registry::{
        OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_NIST_EC_P521,
        OID_NIST_HASH_SHA256, OID_NIST_HASH_SHA384, OID_NIST_HASH_SHA512, OID_PKCS1_RSAENCRYPTION,
        OID_PKCS1_RSASSAPSS, OID_PKCS1_SHA256WITHRSA, OID_PKCS1_SHA384WITHRSA,
        OID_PKCS1_SHA512WITHRSA, OID_SIG_ECDSA_WITH_SHA256, OID_SIG_ECDSA_WITH_SHA384,
        OID_SIG_ECDSA_WITH_SHA512, OID_SIG_ED25519,
    },
    prelude::{FromDer as _, X509Certificate},
    signature_algorithm::RsaSsaPssParams,
    x509::AlgorithmIdentifier,
};

use super::key::Scheme;
use crate::proto::AuthMethod;

/// id-mgf1 (RFC 8017 Appendix B.2.1).
const OID_MGF1: &str = "1.2.840.113549.1.1.8";

/// What is wrong with a peer's signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("AUTH data too short for its AlgorithmIdentifier")]
    Truncated,
    #[error("AlgorithmIdentifier cannot be read: {0}")]
    BadAlgorithm(String),
    #[error("signature algorithm {0} is not one we verify")]
    Unsupported(String),
    #[error("a {scheme:?} signature cannot come from a {key} key")]
    WrongKey { scheme: Scheme, key: String },
    #[error("certificate cannot be read: {0}")]
    Certificate(String),
    #[error("the signature does not verify with the certificate's key")]
    Invalid,
    #[error("AUTH method {method} is not one we verify: {why}")]
    Method { method: u8, why: &'static str },
}

/// RFC 7427 §4 (and RFC 8420) hash algorithm numbers.
pub const HASH_SHA1: u16 = 1;
pub const HASH_SHA256: u16 = 2;
pub const HASH_SHA384: u16 = 3;
pub const HASH_SHA512: u16 = 4;
pub const HASH_IDENTITY: u16 = 5;

/// The hash algorithms we list in SIGNATURE_HASH_ALGORITHMS.
pub const OUR_HASHES: [u16; 4] = [HASH_SHA256, HASH_SHA384, HASH_SHA512, HASH_IDENTITY];

/// The notify's data: two octets per algorithm.
pub fn hash_notify_data(hashes: &[u16]) -> Vec<u8> {
    hashes.iter().flat_map(|h| h.to_be_bytes()).collect()
}

/// The algorithms a peer's notify lists (an odd last octet is ignored).
pub fn parse_hash_notify(data: &[u8]) -> Vec<u16> {
    data.chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect()
}

impl Scheme {
    /// The RFC 7427 §4 number of its hash.
    pub fn hash(self) -> u16 {
        use Scheme::*;
        match self {
            RsaPkcs1Sha1 => HASH_SHA1,
            RsaPkcs1Sha256 | RsaPssSha256 | EcdsaP256Sha256 | EcdsaP256Sha256Fixed => HASH_SHA256,
            RsaPkcs1Sha384 | RsaPssSha384 | EcdsaP384Sha384 | EcdsaP384Sha384Fixed => HASH_SHA384,
            RsaPkcs1Sha512 | RsaPssSha512 | EcdsaP521Sha512 | EcdsaP521Sha512Fixed => HASH_SHA512,
            Ed25519 => HASH_IDENTITY,
        }
    }

    /// Its name in status output: the signature algorithm and hash, and
    /// for the schemes only a classic AUTH method carries, that method's
    /// name in its RFC.
    pub fn name(self) -> &'static str {
        use Scheme::*;
        match self {
            RsaPkcs1Sha1 => "rsa-sha1 (RFC 7296)",
            RsaPkcs1Sha256 => "rsa-pkcs1-sha256",
            RsaPkcs1Sha384 => "rsa-pkcs1-sha384",
            RsaPkcs1Sha512 => "rsa-pkcs1-sha512",
            RsaPssSha256 => "rsa-pss-sha256",
            RsaPssSha384 => "rsa-pss-sha384",
            RsaPssSha512 => "rsa-pss-sha512",
            EcdsaP256Sha256 => "ecdsa-p256-sha256",
            EcdsaP384Sha384 => "ecdsa-p384-sha384",
            EcdsaP256Sha256Fixed => "ecdsa-256 (RFC 4754)",
            EcdsaP384Sha384Fixed => "ecdsa-384 (RFC 4754)",
            EcdsaP521Sha512 => "ecdsa-p521-sha512",
            EcdsaP521Sha512Fixed => "ecdsa-521 (RFC 4754)",
            Ed25519 => "ed25519",
        }
    }

    /// Its AlgorithmIdentifier in DER (RFC 7427 Appendix A, RFC 8420 §2);
    /// None for the r || s forms, which only the classic methods carry.
    pub fn algorithm_identifier(self) -> Option<&'static [u8]> {
        use Scheme::*;
        Some(match self {
            RsaPkcs1Sha256 => &[
                0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b, 0x05,
                0x00,
            ],
            RsaPkcs1Sha384 => &[
                0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c, 0x05,
                0x00,
            ],
            RsaPkcs1Sha512 => &[
                0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d, 0x05,
                0x00,
            ],
            RsaPssSha256 => &PSS_SHA256,
            RsaPssSha384 => &PSS_SHA384,
            RsaPssSha512 => &PSS_SHA512,
            EcdsaP256Sha256 => &[
                0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02,
            ],
            EcdsaP384Sha384 => &[
                0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03,
            ],
            EcdsaP521Sha512 => &[
                0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04,
            ],
            Ed25519 => &[0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70],
            RsaPkcs1Sha1 | EcdsaP256Sha256Fixed | EcdsaP384Sha384Fixed | EcdsaP521Sha512Fixed => {
                return None;
            }
        })
    }
}

/// RSASSA-PSS with `hash` (its last OID octet: 1, 2, 3 for SHA-256, -384,
/// -512), MGF1 with the same hash, salt as long as the hash (RFC 4055
/// §3.1; RFC 7427 A.4).
const fn pss(hash: u8, salt: u8) -> [u8; 67] {
    [
        0x30, 0x41, // AlgorithmIdentifier
        0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a, // id-RSASSA-PSS
        0x30, 0x34, // RSASSA-PSS-params
        0xa0, 0x0f, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, hash,
        0x05, 0x00, // [0] hashAlgorithm
        0xa1, 0x1c, 0x30, 0x1a, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x08,
        0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, hash, 0x05,
        0x00, // [1] maskGenAlgorithm: MGF1 with the hash
        0xa2, 0x03, 0x02, 0x01, salt, // [2] saltLength
    ]
}
const PSS_SHA256: [u8; 67] = pss(1, 32);
const PSS_SHA384: [u8; 67] = pss(2, 48);
const PSS_SHA512: [u8; 67] = pss(3, 64);

/// AUTH data for method 14 (Digital Signature).
pub fn encode(scheme: Scheme, signature: &[u8]) -> Option<Vec<u8>> {
    let alg = scheme.algorithm_identifier()?;
    let mut out = Vec::with_capacity(1 + alg.len() + signature.len());
    out.push(u8::try_from(alg.len()).ok()?);
    out.extend_from_slice(alg);
    out.extend_from_slice(signature);
    Some(out)
}

/// The scheme and signature of a peer's method-14 AUTH data.
pub fn decode(data: &[u8]) -> Result<(Scheme, &[u8]), AuthError> {
    let (&len, rest) = data.split_first().ok_or(AuthError::Truncated)?;
    let len = usize::from(len);
    if rest.len() < len {
        return Err(AuthError::Truncated);
    }
    let (alg, sig) = rest.split_at(len);
    let (_, alg) =
        AlgorithmIdentifier::from_der(alg).map_err(|e| AuthError::BadAlgorithm(e.to_string()))?;
    let oid = &alg.algorithm;
    let scheme = if *oid == OID_PKCS1_SHA256WITHRSA {
        Scheme::RsaPkcs1Sha256
    } else if *oid == OID_PKCS1_SHA384WITHRSA {
        Scheme::RsaPkcs1Sha384
    } else if *oid == OID_PKCS1_SHA512WITHRSA {
        Scheme::RsaPkcs1Sha512
    } else if *oid == OID_SIG_ECDSA_WITH_SHA256 {
        Scheme::EcdsaP256Sha256
    } else if *oid == OID_SIG_ECDSA_WITH_SHA384 {
        Scheme::EcdsaP384Sha384
    } else if *oid == OID_SIG_ECDSA_WITH_SHA512 {
        Scheme::EcdsaP521Sha512
    } else if *oid == OID_SIG_ED25519 {
        Scheme::Ed25519
    } else if *oid == OID_PKCS1_RSASSAPSS {
        let params = alg
            .parameters
            .as_ref()
            .ok_or_else(|| AuthError::BadAlgorithm("RSASSA-PSS without parameters".into()))?;
        let p = RsaSsaPssParams::try_from(params)
            .map_err(|e| AuthError::BadAlgorithm(e.to_string()))?;
        let hash = p.hash_algorithm_oid().clone();
        let (scheme, salt) = if hash == OID_NIST_HASH_SHA256 {
            (Scheme::RsaPssSha256, 32)
        } else if hash == OID_NIST_HASH_SHA384 {
            (Scheme::RsaPssSha384, 48)
        } else if hash == OID_NIST_HASH_SHA512 {
            (Scheme::RsaPssSha512, 64)
        } else {
            return Err(AuthError::Unsupported(format!(
                "RSASSA-PSS with hash {hash}"
            )));
        };
        let mgf = p
            .mask_gen_algorithm()
            .map_err(|e| AuthError::BadAlgorithm(e.to_string()))?;
        if mgf.mgf.to_id_string() != OID_MGF1 || mgf.hash != hash || p.salt_length() != salt {
            return Err(AuthError::Unsupported(format!(
                "RSASSA-PSS with {hash}, MGF {} with {}, salt {}",
                mgf.mgf,
                mgf.hash,
                p.salt_length()
            )));
        }
        scheme
    } else {
        return Err(AuthError::Unsupported(oid.to_id_string()));
    };
    Ok((scheme, sig))
}

/// The scheme and signature of a peer's AUTH data with a signature
/// `method` (RFC 7296 §3.8): method 14's AlgorithmIdentifier (RFC 7427),
/// or the scheme a classic method implies: 1 is RSA PKCS#1 v1.5 with
/// SHA-1, 9-11 ECDSA in the r || s form (RFC 4754); the rest are refused
/// by name.
pub fn peer_scheme(method: AuthMethod, data: &[u8]) -> Result<(Scheme, &[u8]), AuthError> {
    match method {
        AuthMethod::DIGITAL_SIGNATURE => decode(data),
        AuthMethod::RSA_DIGITAL_SIGNATURE => Ok((Scheme::RsaPkcs1Sha1, data)),
        AuthMethod::ECDSA_SHA256_P256 => Ok((Scheme::EcdsaP256Sha256Fixed, data)),
        AuthMethod::ECDSA_SHA384_P384 => Ok((Scheme::EcdsaP384Sha384Fixed, data)),
        AuthMethod::ECDSA_SHA512_P521 => Ok((Scheme::EcdsaP521Sha512Fixed, data)),
        AuthMethod::SHARED_KEY_MESSAGE_INTEGRITY_CODE => Err(AuthError::Method {
            method: method.0,
            why: "a pre-shared key where a certificate is required",
        }),
        AuthMethod::DSS_DIGITAL_SIGNATURE => Err(AuthError::Method {
            method: method.0,
            why: "DSS (DSA with SHA-1) is not supported",
        }),
        other => Err(AuthError::Method {
            method: other.0,
            why: "unknown or unsupported method",
        }),
    }
}

/// Checks that `sig` over `msg` (RFC 7296 §2.15's octets) was made with
/// the key of the certificate `cert` in `scheme`.
pub fn verify(scheme: Scheme, cert: &[u8], msg: &[u8], sig: &[u8]) -> Result<(), AuthError> {
    let (_, c) =
        X509Certificate::from_der(cert).map_err(|e| AuthError::Certificate(e.to_string()))?;
    let spki = c.public_key();
    let key_alg = &spki.algorithm.algorithm;
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok());
    let (key, alg): (&str, Option<&'static dyn VerificationAlgorithm>) =
        if *key_alg == OID_PKCS1_RSAENCRYPTION {
            use Scheme::*;
            let alg: Option<&'static dyn VerificationAlgorithm> = match scheme {
                // Method 1 (RFC 7296 §3.8); 2048 bits at least, as for
                // the others.
                RsaPkcs1Sha1 => Some(&signature::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY),
                RsaPkcs1Sha256 => Some(&signature::RSA_PKCS1_2048_8192_SHA256),
                RsaPkcs1Sha384 => Some(&signature::RSA_PKCS1_2048_8192_SHA384),
                RsaPkcs1Sha512 => Some(&signature::RSA_PKCS1_2048_8192_SHA512),
                RsaPssSha256 => Some(&signature::RSA_PSS_2048_8192_SHA256),
                RsaPssSha384 => Some(&signature::RSA_PSS_2048_8192_SHA384),
                RsaPssSha512 => Some(&signature::RSA_PSS_2048_8192_SHA512),
                _ => None,
            };
            ("RSA", alg)
        } else if *key_alg == OID_KEY_TYPE_EC_PUBLIC_KEY && curve == Some(OID_EC_P256) {
            let alg: Option<&'static dyn VerificationAlgorithm> = match scheme {
                Scheme::EcdsaP256Sha256 => Some(&signature::ECDSA_P256_SHA256_ASN1),
                Scheme::EcdsaP384Sha384 => Some(&signature::ECDSA_P256_SHA384_ASN1),
                Scheme::EcdsaP256Sha256Fixed => Some(&signature::ECDSA_P256_SHA256_FIXED),
                _ => None,
            };
            ("ECDSA P-256", alg)
        } else if *key_alg == OID_KEY_TYPE_EC_PUBLIC_KEY && curve == Some(OID_NIST_EC_P384) {
            let alg: Option<&'static dyn VerificationAlgorithm> = match scheme {
                Scheme::EcdsaP384Sha384 => Some(&signature::ECDSA_P384_SHA384_ASN1),
                Scheme::EcdsaP256Sha256 => Some(&signature::ECDSA_P384_SHA256_ASN1),
                Scheme::EcdsaP384Sha384Fixed => Some(&signature::ECDSA_P384_SHA384_FIXED),
                _ => None,
            };
            ("ECDSA P-384", alg)
        } else if *key_alg == OID_KEY_TYPE_EC_PUBLIC_KEY && curve == Some(OID_NIST_EC_P521) {
            // Not ring's: RustCrypto's P-521 (super::p521). The DER
            // schemes are named by their hash (ecdsa-with-SHA256 ...).
            use super::p521::Hash;
            let (hash, fixed) = match scheme {
                Scheme::EcdsaP256Sha256 => (Hash::Sha256, false),
                Scheme::EcdsaP384Sha384 => (Hash::Sha384, false),
                Scheme::EcdsaP521Sha512 => (Hash::Sha512, false),
                Scheme::EcdsaP521Sha512Fixed => (Hash::Sha512, true),
                _ => {
                    return Err(AuthError::WrongKey {
                        scheme,
                        key: "ECDSA P-521".to_owned(),
                    });
                }
            };
            return super::p521::verify(&spki.subject_public_key.data, msg, sig, hash, fixed)
                .map_err(|_| AuthError::Invalid);
        } else if *key_alg == OID_SIG_ED25519 {
            let alg: Option<&'static dyn VerificationAlgorithm> =
                (scheme == Scheme::Ed25519).then_some(&signature::ED25519);
            ("Ed25519", alg)
        } else {
            return Err(AuthError::Unsupported(format!(
                "public key {}",
                key_alg.to_id_string()
            )));
        };
    let alg = alg.ok_or_else(|| AuthError::WrongKey {
        scheme,
        key: key.to_owned(),
    })?;
    UnparsedPublicKey::new(alg, &spki.subject_public_key.data)
        .verify(msg, sig)
        .map_err(|_| AuthError::Invalid)
}

/// The scheme we sign with for a peer that listed `peer_hashes` (RFC 7427
/// §4): the key's preferred one whose hash the peer knows; None if the
/// peer listed none we can use (then only a classic method is left).
pub fn choose(schemes: &[Scheme], peer_hashes: &[u16]) -> Option<Scheme> {
    schemes
        .iter()
        .copied()
        .find(|s| s.algorithm_identifier().is_some() && peer_hashes.contains(&s.hash()))
}

/// The public key of a certificate as its SubjectPublicKeyInfo BIT STRING
/// holds it (what [`super::key::PrivateKey::public_key`] gives for ours).
pub fn public_key_of(cert: &[u8]) -> Result<Vec<u8>, AuthError> {
    let (_, c) =
        X509Certificate::from_der(cert).map_err(|e| AuthError::Certificate(e.to_string()))?;
    Ok(c.public_key().subject_public_key.data.to_vec())
}

/// Whether CERTREQ data (RFC 7296 §3.7: SHA-1 hashes of CA public keys,
/// 20 octets each; a short tail is no hash) names the CA of `hash`.
pub fn certreq_names(data: &[u8], hash: &[u8; 20]) -> bool {
    data.chunks_exact(20).any(|x| x == hash)
}

/// A CA's entry in a CERTREQ (RFC 7296 §3.7): the SHA-1 hash of its
/// certificate's SubjectPublicKeyInfo.
pub fn ca_key_hash(cert: &[u8]) -> Result<[u8; 20], AuthError> {
    let (_, c) =
        X509Certificate::from_der(cert).map_err(|e| AuthError::Certificate(e.to_string()))?;
    let d = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, c.public_key().raw);
    let mut out = [0; 20];
    out.copy_from_slice(d.as_ref());
    Ok(out)
}
