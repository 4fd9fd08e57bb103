//! Fuzzes what a peer's CERT, AUTH and CERTREQ payloads go through in
//! IKE_AUTH (`crate::engine`'s pubkey checks, on `mobike_agent::pki`):
//! certificate parsing, chain validation against a fixed trust store,
//! identity matching, AUTH data decoding (RFC 7427 and the classic
//! methods) and signature verification, and CERTREQ hash matching.
//! Arbitrary bytes must never panic.
//!
//! The trust store is a fixed PKI made once with openssl (fuzz/pki/make.sh;
//! its DER files are committed, valid until 2126) and validation runs at a
//! fixed time (2030-01-01), so a run does not depend on the clock.
//!
//! Input: a mode octet, then
//! - 0: a chain, each certificate as a 2-octet big-endian length and its
//!   DER, the end entity first: validated, its identities matched;
//! - 1: an AUTH payload body, method octet then data: decoded and checked
//!   against each fixed end-entity certificate over [`MSG`];
//! - 2: CERTREQ data (SHA-1 hashes of CA keys): matched against the
//!   fixed CAs;
//! - 3: one certificate (length and DER) then an AUTH body: the
//!   certificate validated with the fixed intermediate, the AUTH checked
//!   against it.

#![no_main]

use std::{
    sync::OnceLock,
    time::{Duration, SystemTime},
};

use libfuzzer_sys::fuzz_target;
use mobike_agent::{
    pki::{auth, identity, verify::TrustStore},
    proto::{AuthMethod, IdType, Identification},
};
use rustls_pki_types::CertificateDer;

/// The octets the seeds' AUTH signatures cover (fuzz/pki/make.sh).
const MSG: &[u8] = b"mobike-agent cert fuzz: signed octets";

struct Fixed {
    store: TrustStore,
    int: CertificateDer<'static>,
    ees: [&'static [u8]; 3],
    ca_hashes: [[u8; 20]; 2],
    ids: Vec<Identification>,
}

fn fixed() -> &'static Fixed {
    static F: OnceLock<Fixed> = OnceLock::new();
    F.get_or_init(|| {
        let root: &[u8] = include_bytes!("../pki/root.der");
        let int: &[u8] = include_bytes!("../pki/int.der");
        let ees: [&[u8]; 3] = [
            include_bytes!("../pki/ec.der"),
            include_bytes!("../pki/rsa.der"),
            include_bytes!("../pki/ed.der"),
        ];
        let text = |ty, s: &str| Identification {
            ty,
            data: s.as_bytes().to_vec(),
        };
        let mut ids = vec![
            text(IdType::ID_FQDN, "ec.test"),
            text(IdType::ID_RFC822_ADDR, "vpn@ec.test"),
            Identification {
                ty: IdType::ID_IPV4_ADDR,
                data: vec![192, 0, 2, 1],
            },
        ];
        ids.extend(
            ees.iter()
                .map(|c| identity::subject_id(c).expect("fixed certificate")),
        );
        Fixed {
            store: TrustStore::new(&[CertificateDer::from(root)], &[]).expect("fixed root"),
            int: CertificateDer::from(int),
            ees,
            ca_hashes: [
                auth::ca_key_hash(root).expect("fixed root"),
                auth::ca_key_hash(int).expect("fixed intermediate"),
            ],
            ids,
        }
    })
}

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_893_456_000)
}

/// A 2-octet length and that many octets; None when short.
fn item(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, rest) = data.split_first_chunk::<2>()?;
    let len = usize::from(u16::from_be_bytes(*len));
    (rest.len() >= len).then(|| rest.split_at(len))
}

/// As the engine checks the peer's end-entity certificate: the path, then
/// the identity.
fn validate(ee: &[u8], intermediates: &[CertificateDer<'_>]) {
    let f = fixed();
    if let Ok(v) = f
        .store
        .verify(&CertificateDer::from(ee), intermediates, now())
    {
        assert_eq!(v.der.as_ref(), ee);
    }
    for id in &f.ids {
        let _ = identity::matches(id, ee);
    }
    let _ = identity::subject_id(ee);
    let _ = auth::public_key_of(ee);
    let _ = auth::ca_key_hash(ee);
}

/// As the engine checks the peer's AUTH with its certificate.
fn check_auth(body: &[u8], cert: &[u8]) {
    let Some((&method, data)) = body.split_first() else {
        return;
    };
    if let Ok((scheme, sig)) = auth::peer_scheme(AuthMethod(method), data) {
        let _ = scheme.name();
        let _ = auth::verify(scheme, cert, MSG, sig);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, mut rest)) = data.split_first() else {
        return;
    };
    let f = fixed();
    match mode % 4 {
        0 => {
            let mut chain = Vec::new();
            while let Some((der, tail)) = item(rest) {
                chain.push(CertificateDer::from(der));
                rest = tail;
            }
            if let Some((ee, intermediates)) = chain.split_first() {
                validate(ee, intermediates);
            }
        }
        1 => {
            for ee in f.ees {
                check_auth(rest, ee);
            }
        }
        2 => {
            for h in &f.ca_hashes {
                let _ = auth::certreq_names(rest, h);
            }
        }
        _ => {
            if let Some((der, body)) = item(rest) {
                validate(der, std::slice::from_ref(&f.int));
                check_auth(body, der);
            }
        }
    }
});
