//! X.509 for public-key authentication (RFC 7296 §2.15 and §3.6-3.8,
//! RFC 7427): certificate and private-key files ([`files`]), our private
//! key and its signatures ([`key`]), the AUTH payload's Digital Signature
//! form and the check of a peer's signature ([`auth`]), validation of a
//! peer's certificate chain against configured trust anchors and optional
//! CRLs ([`verify`]), matching an IKE identity against a certificate
//! ([`identity`]), Distinguished Names as configured ([`dn`]), and ECDSA
//! on P-521, which ring lacks ([`p521`]).
//!
//! Nothing here parses DER by hand: certificates are read with
//! x509-parser (subject, subjectAltName, key usage, validity), paths are
//! built and their signatures, validity times, CA constraints and
//! revocation checked by webpki on ring (plus RustCrypto's P-521), PEM is pki-types' and SEC1 EC
//! keys are read with sec1. Validation takes the time as an argument, so
//! it is sans-IO like the engine; only [`files`] touches the file system.
//!
//! The IKE_AUTH exchange's use of it (CERT, CERTREQ, AUTH payloads) is
//! the engine's `sa::pubkey`.

pub mod auth;
pub mod dn;
pub mod files;
pub mod identity;
pub mod key;
pub mod p521;
pub mod verify;

#[cfg(test)]
mod engine_tests;
#[cfg(test)]
mod tests;
