//! Validation of a peer's certificate (RFC 7296 §3.6, RFC 5280 §6 as
//! webpki implements it): a path from the end-entity certificate through
//! the intermediates the peer sent (CERT payloads) to one of the
//! configured trust anchors, each signature checked, each certificate
//! within its validity at `now`, CA constraints and name constraints
//! honoured, and, when CRLs are configured, none of the path revoked. The
//! end entity's key usage, if the extension is there, must allow
//! signatures (digitalSignature or nonRepudiation, as strongSwan accepts).
//! Extended key usage is not required: strongSwan does not require one
//! for IKE either (RFC 4945 §5.1.3.12: none is needed).
//!
//! Each refusal names what was wrong ([`Refusal`]) for the log line the
//! agent writes.

use std::time::{Duration, SystemTime};

use rustls_pki_types::{
    CertificateDer, CertificateRevocationListDer, SignatureVerificationAlgorithm, TrustAnchor,
    UnixTime,
};
use webpki::{
    EndEntityCert, Error as WebPkiError, KeyPurposeIdIter, OwnedCertRevocationList,
    RevocationCheckDepth, RevocationOptionsBuilder, UnknownStatusPolicy,
};
use x509_parser::prelude::{FromDer as _, X509Certificate};

/// Why the configured trust anchors or CRLs cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("CA certificate {index} cannot be a trust anchor: {why}")]
    Anchor { index: usize, why: String },
    #[error("CRL {index} cannot be read: {why}")]
    Crl { index: usize, why: String },
}

/// Why a peer's certificate was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("certificate of {subject} expired at {not_after}")]
    Expired { subject: String, not_after: String },
    #[error("certificate of {subject} is not valid before {not_before}")]
    NotYetValid { subject: String, not_before: String },
    #[error("certificate of {subject} issued by {issuer}: no path to a trusted CA")]
    UnknownCa { subject: String, issuer: String },
    #[error("certificate of {subject} is revoked")]
    Revoked { subject: String },
    #[error("certificate of {subject}: a signature in its path does not verify")]
    BadSignature { subject: String },
    #[error("certificate of {subject}: its key usage does not allow signatures")]
    WrongKeyUsage { subject: String },
    #[error("certificate cannot be read: {0}")]
    Malformed(String),
    #[error("certificate of {subject} refused: {why}")]
    Other { subject: String, why: String },
}

/// A peer certificate that validated: what status and the identity check
/// need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The subject DN, as strongSwan prints it ("C=CH, O=..., CN=...").
    pub subject: String,
    /// The issuer DN, the same way.
    pub issuer: String,
    /// Its last valid moment.
    pub not_after: SystemTime,
    /// The end-entity certificate.
    pub der: CertificateDer<'static>,
}

/// The configured trust anchors and CRLs.
#[derive(Debug)]
pub struct TrustStore {
    anchors: Vec<TrustAnchor<'static>>,
    crls: Vec<OwnedCertRevocationList>,
}

/// Every signature algorithm webpki has on ring: RSA PKCS#1 v1.5 and PSS
/// with SHA-2, ECDSA P-256/P-384, Ed25519; and ECDSA P-521 with SHA-2 on
/// RustCrypto's p521.
static ALGS: &[&dyn SignatureVerificationAlgorithm] = &[
    super::p521::WEBPKI_ALGS[0],
    super::p521::WEBPKI_ALGS[1],
    super::p521::WEBPKI_ALGS[2],
    webpki::ring::ECDSA_P256_SHA256,
    webpki::ring::ECDSA_P256_SHA384,
    webpki::ring::ECDSA_P384_SHA256,
    webpki::ring::ECDSA_P384_SHA384,
    webpki::ring::ED25519,
    webpki::ring::RSA_PKCS1_2048_8192_SHA256,
    webpki::ring::RSA_PKCS1_2048_8192_SHA384,
    webpki::ring::RSA_PKCS1_2048_8192_SHA512,
    webpki::ring::RSA_PKCS1_2048_8192_SHA256_ABSENT_PARAMS,
    webpki::ring::RSA_PKCS1_2048_8192_SHA384_ABSENT_PARAMS,
    webpki::ring::RSA_PKCS1_2048_8192_SHA512_ABSENT_PARAMS,
    webpki::ring::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
    webpki::ring::RSA_PSS_2048_8192_SHA384_LEGACY_KEY,
    webpki::ring::RSA_PSS_2048_8192_SHA512_LEGACY_KEY,
];

/// Any extended key usage, or none (see the module doc).
struct AnyEku;

impl webpki::ExtendedKeyUsageValidator for AnyEku {
    fn validate(&self, iter: KeyPurposeIdIter<'_, '_>) -> Result<(), WebPkiError> {
        for k in iter {
            k?;
        }
        Ok(())
    }
}

fn describe(der: &[u8]) -> Result<(String, String, X509Validity), Refusal> {
    let (_, c) = X509Certificate::from_der(der).map_err(|e| Refusal::Malformed(e.to_string()))?;
    Ok((
        c.subject().to_string(),
        c.issuer().to_string(),
        X509Validity {
            not_before: c.validity().not_before.timestamp(),
            not_after: c.validity().not_after.timestamp(),
        },
    ))
}

struct X509Validity {
    not_before: i64,
    not_after: i64,
}

fn rfc3339(secs: i64) -> String {
    x509_parser::time::ASN1Time::from_timestamp(secs)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| secs.to_string())
}

impl TrustStore {
    /// Trust anchors from CA certificates (each must parse as one) and
    /// CRLs (none: revocation is not checked, strongSwan's default without
    /// CRLs).
    pub fn new(
        cas: &[CertificateDer<'_>],
        crls: &[CertificateRevocationListDer<'_>],
    ) -> Result<Self, TrustError> {
        let mut anchors = Vec::with_capacity(cas.len());
        for (index, c) in cas.iter().enumerate() {
            let a = webpki::anchor_from_trusted_cert(c).map_err(|e| TrustError::Anchor {
                index,
                why: e.to_string(),
            })?;
            anchors.push(a.to_owned());
        }
        let mut owned = Vec::with_capacity(crls.len());
        for (index, c) in crls.iter().enumerate() {
            owned.push(
                OwnedCertRevocationList::from_der(c).map_err(|e| TrustError::Crl {
                    index,
                    why: e.to_string(),
                })?,
            );
        }
        Ok(TrustStore {
            anchors,
            crls: owned,
        })
    }

    /// How many trust anchors there are.
    pub fn anchors(&self) -> usize {
        self.anchors.len()
    }

    /// Validates `end_entity` with the `intermediates` the peer sent, at
    /// `now`.
    pub fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: SystemTime,
    ) -> Result<Verified, Refusal> {
        let (subject, issuer, validity) = describe(end_entity)?;
        let ee =
            EndEntityCert::try_from(end_entity).map_err(|e| Refusal::Malformed(e.to_string()))?;
        let since_epoch = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        let time = UnixTime::since_unix_epoch(since_epoch);
        let crl_refs: Vec<webpki::CertRevocationList<'_>> = self
            .crls
            .iter()
            .map(|c| webpki::CertRevocationList::Owned(c.clone()))
            .collect();
        let crl_refs: Vec<&webpki::CertRevocationList<'_>> = crl_refs.iter().collect();
        let revocation = RevocationOptionsBuilder::new(&crl_refs).ok().map(|b| {
            b.with_depth(RevocationCheckDepth::Chain)
                .with_status_policy(UnknownStatusPolicy::Allow)
                .build()
        });
        ee.verify_for_usage(
            ALGS,
            &self.anchors,
            intermediates,
            time,
            AnyEku,
            revocation,
            None,
        )
        .map_err(|e| self.refusal(e, &subject, &issuer, &validity))?;
        check_key_usage(end_entity, &subject)?;
        Ok(Verified {
            subject,
            issuer,
            not_after: SystemTime::UNIX_EPOCH
                + Duration::from_secs(u64::try_from(validity.not_after).unwrap_or(0)),
            der: end_entity.clone().into_owned(),
        })
    }

    fn refusal(&self, e: WebPkiError, subject: &str, issuer: &str, v: &X509Validity) -> Refusal {
        let subject = subject.to_owned();
        match e {
            WebPkiError::CertExpired { .. } => Refusal::Expired {
                subject,
                not_after: rfc3339(v.not_after),
            },
            WebPkiError::CertNotValidYet { .. } => Refusal::NotYetValid {
                subject,
                not_before: rfc3339(v.not_before),
            },
            WebPkiError::UnknownIssuer => Refusal::UnknownCa {
                subject,
                issuer: issuer.to_owned(),
            },
            WebPkiError::CertRevoked => Refusal::Revoked { subject },
            WebPkiError::InvalidSignatureForPublicKey
            | WebPkiError::UnsupportedSignatureAlgorithmForPublicKeyContext(_) => {
                Refusal::BadSignature { subject }
            }
            other => Refusal::Other {
                subject,
                why: other.to_string(),
            },
        }
    }
}

/// RFC 5280 §4.2.1.3: if the extension is there, it must allow the
/// signature the AUTH payload carries.
fn check_key_usage(der: &[u8], subject: &str) -> Result<(), Refusal> {
    let (_, c) = X509Certificate::from_der(der).map_err(|e| Refusal::Malformed(e.to_string()))?;
    match c.key_usage() {
        Ok(Some(ku)) if !(ku.value.digital_signature() || ku.value.non_repudiation()) => {
            Err(Refusal::WrongKeyUsage {
                subject: subject.to_owned(),
            })
        }
        Ok(_) => Ok(()),
        Err(e) => Err(Refusal::Malformed(e.to_string())),
    }
}
