//! Certificate and private-key files as strongSwan users keep them: PEM
//! (one or more "CERTIFICATE" blocks; a private key as PKCS#8 "PRIVATE
//! KEY", SEC1 "EC PRIVATE KEY" or PKCS#1 "RSA PRIVATE KEY") or DER (one
//! certificate, or a PKCS#8 key). A private key file that every local user
//! can read (or write) is refused: its key would be no secret.

use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
};

use rustls_pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, PrivatePkcs8KeyDer,
    pem::PemObject as _,
};

use super::key::{KeyError, PrivateKey};

/// What is wrong with a certificate, CRL or key file.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: no certificate in it (PEM \"CERTIFICATE\" blocks or one DER certificate)")]
    NoCertificate { path: PathBuf },
    #[error("{path}: certificate {index} cannot be read: {why}")]
    BadCertificate {
        path: PathBuf,
        index: usize,
        why: String,
    },
    #[error("{path}: no CRL in it (PEM \"X509 CRL\" blocks or one DER CRL)")]
    NoCrl { path: PathBuf },
    #[error(
        "{path}: the private key can be {what} by every local user (mode {mode:03o}); \
         make it readable by its owner only (chmod 600)"
    )]
    KeyExposed {
        path: PathBuf,
        what: &'static str,
        mode: u32,
    },
    #[error(
        "{path}: no private key in it (PEM \"PRIVATE KEY\", \"EC PRIVATE KEY\" or \
         \"RSA PRIVATE KEY\", or PKCS#8 DER)"
    )]
    NoKey { path: PathBuf },
    #[error("{path}: the private key cannot be used")]
    Key {
        path: PathBuf,
        #[source]
        source: KeyError,
    },
}

fn read(path: &Path) -> Result<Vec<u8>, FileError> {
    std::fs::read(path).map_err(|source| FileError::Read {
        path: path.to_owned(),
        source,
    })
}

fn is_pem(bytes: &[u8]) -> bool {
    bytes.windows(11).any(|w| w == b"-----BEGIN ")
}

/// The certificates in a file, in file order (a chain file: ours first,
/// then its intermediates). Each one is checked to parse as X.509.
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, FileError> {
    let bytes = read(path)?;
    let certs: Vec<CertificateDer<'static>> = if is_pem(&bytes) {
        CertificateDer::pem_slice_iter(&bytes)
            .enumerate()
            .map(|(index, c)| {
                c.map_err(|e| FileError::BadCertificate {
                    path: path.to_owned(),
                    index,
                    why: e.to_string(),
                })
            })
            .collect::<Result<_, _>>()?
    } else {
        vec![CertificateDer::from(bytes)]
    };
    if certs.is_empty() {
        return Err(FileError::NoCertificate {
            path: path.to_owned(),
        });
    }
    for (index, c) in certs.iter().enumerate() {
        x509_parser::parse_x509_certificate(c).map_err(|e| FileError::BadCertificate {
            path: path.to_owned(),
            index,
            why: e.to_string(),
        })?;
    }
    Ok(certs)
}

/// The certificates of every file in a directory (CA certificates kept as
/// strongSwan keeps them in /etc/swanctl/x509ca), in file-name order.
pub fn read_certificate_dir(dir: &Path) -> Result<Vec<CertificateDer<'static>>, FileError> {
    let entries = std::fs::read_dir(dir).map_err(|source| FileError::Read {
        path: dir.to_owned(),
        source,
    })?;
    let mut paths = Vec::new();
    for e in entries {
        let e = e.map_err(|source| FileError::Read {
            path: dir.to_owned(),
            source,
        })?;
        if e.file_type().is_ok_and(|t| t.is_file()) {
            paths.push(e.path());
        }
    }
    paths.sort();
    let mut out = Vec::new();
    for p in paths {
        out.extend(read_certificates(&p)?);
    }
    Ok(out)
}

/// The CRLs in a file (PEM "X509 CRL" blocks or one DER CRL).
pub fn read_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, FileError> {
    let bytes = read(path)?;
    let crls: Vec<_> = if is_pem(&bytes) {
        CertificateRevocationListDer::pem_slice_iter(&bytes)
            .filter_map(Result::ok)
            .collect()
    } else {
        vec![CertificateRevocationListDer::from(bytes)]
    };
    if crls.is_empty() {
        return Err(FileError::NoCrl {
            path: path.to_owned(),
        });
    }
    Ok(crls)
}

/// Our private key from a file that only its owner (and group) can read.
pub fn read_private_key(path: &Path) -> Result<PrivateKey, FileError> {
    let meta = std::fs::metadata(path).map_err(|source| FileError::Read {
        path: path.to_owned(),
        source,
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o006 != 0 {
        return Err(FileError::KeyExposed {
            path: path.to_owned(),
            what: if mode & 0o004 != 0 { "read" } else { "changed" },
            mode,
        });
    }
    let bytes = read(path)?;
    let der = if is_pem(&bytes) {
        PrivateKeyDer::from_pem_slice(&bytes).map_err(|_| FileError::NoKey {
            path: path.to_owned(),
        })?
    } else {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(bytes))
    };
    PrivateKey::from_der(&der).map_err(|source| FileError::Key {
        path: path.to_owned(),
        source,
    })
}
