//! Certificates made with openssl for each test run: a root CA (P-256), an
//! intermediate CA (RSA-3072) and end entities with RSA-3072, ECDSA P-256
//! and Ed25519 keys; another root for "unknown CA"; an end entity whose key
//! usage does not allow signatures.

use std::{
    net::IpAddr,
    os::unix::fs::PermissionsExt as _,
    sync::OnceLock,
    time::{Duration, SystemTime},
};

use ring::signature::{self, UnparsedPublicKey};
use x509_parser::prelude::{FromDer as _, X509Certificate};

use super::{
    files::{FileError, read_certificates, read_private_key},
    identity::{describe, matches, subject_id},
    key::{KeyKind, Scheme},
    verify::{Refusal, TrustStore},
};
use crate::proto::{IdType, Identification};

use system_tests::certs::{CA_EXT, Pki};

pub(super) fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let p = Pki::new();
        p.end_entity("rsa", "rsa", "DNS:rsa.test", "digitalSignature");
        p.end_entity(
            "ec",
            "ec",
            "DNS:EC.test,email:vpn@ec.test,IP:192.0.2.1,IP:2001:db8::1",
            "digitalSignature",
        );
        p.end_entity("ed", "ed", "DNS:ed.test", "digitalSignature");
        // P-521: an end entity under the usual chain, and a P-521 root
        // with an end entity of its own (a chain webpki checks through
        // RustCrypto's P-521).
        p.end_entity("p521", "ec521", "DNS:p521.test", "digitalSignature");
        p.key("root521", "ec521");
        p.cert("root521", "/C=CH/O=p521/CN=P-521 CA", None, CA_EXT, "3650");
        p.key("under521", "ec");
        p.cert(
            "under521",
            "/C=CH/O=p521/CN=under521.test",
            Some("root521"),
            "keyUsage=critical,digitalSignature\n",
            "365",
        );
        p.end_entity("enc", "ec", "DNS:enc.test", "keyEncipherment");
        p.key("other", "ec");
        p.cert(
            "other",
            "/C=CH/O=elsewhere/CN=Other CA",
            None,
            CA_EXT,
            "3650",
        );
        p.key("stranger", "ec");
        p.cert(
            "stranger",
            "/C=CH/O=elsewhere/CN=stranger.test",
            Some("other"),
            "keyUsage=critical,digitalSignature\n",
            "365",
        );
        // The same EC key as SEC1 and the RSA key as PKCS#1.
        p.openssl(&["ec", "-in", "ec.key", "-out", "ec.sec1.key"]);
        p.openssl(&[
            "rsa",
            "-in",
            "rsa.key",
            "-traditional",
            "-out",
            "rsa.pkcs1.key",
        ]);
        for k in ["ec.sec1.key", "rsa.pkcs1.key"] {
            std::fs::set_permissions(p.path(k), std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        p
    })
}

pub(super) fn cert_of(p: &Pki, name: &str) -> rustls_pki_types::CertificateDer<'static> {
    read_certificates(&p.path(&format!("{name}.pem")))
        .unwrap()
        .remove(0)
}

fn store_of(p: &Pki) -> TrustStore {
    TrustStore::new(&[cert_of(p, "root")], &[]).unwrap()
}

fn now() -> SystemTime {
    SystemTime::now()
}

#[test]
fn chains_through_the_intermediate_validate_for_each_key_type() {
    let p = pki();
    let store = store_of(p);
    for name in ["rsa", "ec", "ed"] {
        let v = store
            .verify(&cert_of(p, name), &[cert_of(p, "int")], now())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            v.subject.contains(&format!("CN={name}.test")),
            "{}",
            v.subject
        );
        assert!(v.not_after > now() + Duration::from_secs(300 * 86_400));
    }
}

#[test]
fn refusals_name_what_was_wrong() {
    let p = pki();
    let store = store_of(p);
    let int = [cert_of(p, "int")];
    let r = store
        .verify(&cert_of(p, "stranger"), &[], now())
        .unwrap_err();
    assert!(matches!(r, Refusal::UnknownCa { .. }), "{r}");
    assert!(r.to_string().contains("Other CA"), "{r}");
    let r = store.verify(&cert_of(p, "ec"), &[], now()).unwrap_err();
    assert!(
        matches!(r, Refusal::UnknownCa { .. }),
        "no intermediate: {r}"
    );
    let later = now() + Duration::from_secs(3 * 365 * 86_400);
    let r = store.verify(&cert_of(p, "ec"), &int, later).unwrap_err();
    assert!(matches!(r, Refusal::Expired { .. }), "{r}");
    assert!(r.to_string().contains("expired at"), "{r}");
    let before = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    let r = store.verify(&cert_of(p, "ec"), &int, before).unwrap_err();
    assert!(matches!(r, Refusal::NotYetValid { .. }), "{r}");
    let r = store.verify(&cert_of(p, "enc"), &int, now()).unwrap_err();
    assert!(matches!(r, Refusal::WrongKeyUsage { .. }), "{r}");
    // A certificate whose signature was changed.
    let mut forged = cert_of(p, "ec").to_vec();
    let last = forged.len() - 3;
    forged[last] ^= 0x55;
    let r = store.verify(&forged.into(), &int, now()).unwrap_err();
    assert!(
        matches!(r, Refusal::BadSignature { .. } | Refusal::Malformed(_)),
        "{r}"
    );
}

#[test]
fn identities_are_described_as_strongswan_prints_them() {
    let id = |ty, data: &[u8]| Identification {
        ty,
        data: data.to_vec(),
    };
    let ec = cert_of(pki(), "ec");
    let (_, c) = X509Certificate::from_der(&ec).unwrap();
    for (i, want) in [
        (id(IdType::ID_FQDN, b"b.test"), "b.test".to_owned()),
        (
            id(IdType::ID_FQDN, b"b.test\nforged line"),
            "b.test\\nforged line".into(),
        ),
        (
            id(IdType::ID_RFC822_ADDR, b"vpn@b.test"),
            "vpn@b.test".into(),
        ),
        (
            id(IdType::ID_IPV4_ADDR, &[192, 0, 2, 1]),
            "192.0.2.1".into(),
        ),
        (
            id(
                IdType::ID_IPV6_ADDR,
                &"2001:db8::1"
                    .parse::<std::net::Ipv6Addr>()
                    .unwrap()
                    .octets(),
            ),
            "2001:db8::1".into(),
        ),
        (subject_id(&ec).unwrap(), c.subject().to_string()),
        // Not what its type says: the octets, not a misleading text.
        (
            id(IdType::ID_IPV4_ADDR, &[1, 2, 3]),
            "ID_IPV4_ADDR 010203".into(),
        ),
        (
            id(IdType::ID_DER_ASN1_DN, b"not a DN"),
            "ID_DER_ASN1_DN 6e6f74206120444e".into(),
        ),
        (
            id(IdType::ID_KEY_ID, &[0xab, 0xcd]),
            "ID_KEY_ID abcd".into(),
        ),
    ] {
        assert_eq!(describe(&i), want, "{i:?}");
    }
    assert!(describe(&subject_id(&ec).unwrap()).contains("CN=ec.test"));
}

#[test]
fn identities_match_subject_alt_names_and_the_subject() {
    let p = pki();
    let ec = cert_of(p, "ec");
    let id = |ty, data: &[u8]| Identification {
        ty,
        data: data.to_vec(),
    };
    let ip = |s: &str| match s.parse::<IpAddr>().unwrap() {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    for (i, want) in [
        (id(IdType::ID_FQDN, b"ec.test"), true),
        (id(IdType::ID_FQDN, b"Ec.Test."), true),
        (id(IdType::ID_FQDN, b"rsa.test"), false),
        (id(IdType::ID_RFC822_ADDR, b"vpn@ec.test"), true),
        (id(IdType::ID_RFC822_ADDR, b"other@ec.test"), false),
        (id(IdType::ID_IPV4_ADDR, &ip("192.0.2.1")), true),
        (id(IdType::ID_IPV4_ADDR, &ip("192.0.2.2")), false),
        (id(IdType::ID_IPV6_ADDR, &ip("2001:db8::1")), true),
        (id(IdType::ID_KEY_ID, b"ec.test"), false),
        (subject_id(&ec).unwrap(), true),
        (subject_id(&cert_of(p, "rsa")).unwrap(), false),
    ] {
        assert_eq!(matches(&i, &ec).unwrap(), want, "{i:?}");
    }
}

fn spki(der: &[u8]) -> Vec<u8> {
    let (_, c) = X509Certificate::from_der(der).unwrap();
    c.public_key().subject_public_key.data.to_vec()
}

#[test]
fn keys_in_every_format_sign_what_their_certificate_verifies() {
    let p = pki();
    let msg = b"octets to sign (RFC 7296 section 2.15)";
    for (file, cert, kind) in [
        ("rsa.key", "rsa", KeyKind::Rsa { bits: 3072 }),
        ("rsa.pkcs1.key", "rsa", KeyKind::Rsa { bits: 3072 }),
        ("ec.key", "ec", KeyKind::EcdsaP256),
        ("ec.sec1.key", "ec", KeyKind::EcdsaP256),
        ("ed.key", "ed", KeyKind::Ed25519),
    ] {
        let key = read_private_key(&p.path(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(key.kind(), kind, "{file}");
        let public = spki(&cert_of(p, cert));
        assert_eq!(
            key.public_key(),
            public.as_slice(),
            "{file}: not its certificate's key"
        );
        for &scheme in key.schemes() {
            let alg: &dyn signature::VerificationAlgorithm = match scheme {
                Scheme::RsaPkcs1Sha1 => &signature::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
                Scheme::RsaPkcs1Sha256 => &signature::RSA_PKCS1_2048_8192_SHA256,
                Scheme::RsaPkcs1Sha384 => &signature::RSA_PKCS1_2048_8192_SHA384,
                Scheme::RsaPkcs1Sha512 => &signature::RSA_PKCS1_2048_8192_SHA512,
                Scheme::RsaPssSha256 => &signature::RSA_PSS_2048_8192_SHA256,
                Scheme::RsaPssSha384 => &signature::RSA_PSS_2048_8192_SHA384,
                Scheme::RsaPssSha512 => &signature::RSA_PSS_2048_8192_SHA512,
                Scheme::EcdsaP256Sha256 => &signature::ECDSA_P256_SHA256_ASN1,
                Scheme::EcdsaP384Sha384 => &signature::ECDSA_P384_SHA384_ASN1,
                Scheme::EcdsaP256Sha256Fixed => &signature::ECDSA_P256_SHA256_FIXED,
                Scheme::EcdsaP384Sha384Fixed => &signature::ECDSA_P384_SHA384_FIXED,
                Scheme::Ed25519 => &signature::ED25519,
                // Not ring's; p521_keys_sign_and_verify_in_both_forms.
                Scheme::EcdsaP521Sha512 | Scheme::EcdsaP521Sha512Fixed => continue,
            };
            let sig = key.sign(scheme, msg).unwrap();
            UnparsedPublicKey::new(alg, &public)
                .verify(msg, &sig)
                .unwrap_or_else(|_| panic!("{file} {scheme:?}"));
        }
        assert!(key.sign(Scheme::Ed25519, msg).is_err() || kind == KeyKind::Ed25519);
    }
}

#[test]
fn a_private_key_every_user_can_read_is_refused() {
    let p = pki();
    let exposed = p.path("exposed.key");
    std::fs::copy(p.path("ec.key"), &exposed).unwrap();
    std::fs::set_permissions(&exposed, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = read_private_key(&exposed).unwrap_err();
    assert!(
        matches!(e, FileError::KeyExposed { mode: 0o644, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("chmod 600"), "{e}");
    let e = read_private_key(&p.path("root.pem")).unwrap_err();
    assert!(
        matches!(e, FileError::NoKey { .. } | FileError::KeyExposed { .. }),
        "{e}"
    );
}

#[test]
fn a_ca_file_that_is_no_certificate_is_refused_by_name() {
    let p = pki();
    let junk = p.path("junk.pem");
    std::fs::write(
        &junk,
        b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let e = read_certificates(&junk).unwrap_err();
    assert!(e.to_string().contains("junk.pem"), "{e}");
}

proptest::proptest! {
    /// Arbitrary bytes as a peer's certificate or intermediates (CERT
    /// payloads) are refused with an error, never a panic; so are a valid
    /// certificate's bytes cut short or with one byte changed.
    #[test]
    fn malformed_certificates_are_refused_not_panicked_on(
        junk in proptest::collection::vec(proptest::num::u8::ANY, 0..600),
        cut in 0usize..2000,
        flip in 0usize..2000,
    ) {
        let p = pki();
        let store = store_of(p);
        let _ = store.verify(&junk.clone().into(), &[junk.clone().into()], now());
        let id = Identification { ty: IdType::ID_FQDN, data: b"ec.test".to_vec() };
        let _ = matches(&id, &junk);
        let _ = subject_id(&junk);
        let good = cert_of(p, "ec").to_vec();
        let short = good[..cut.min(good.len())].to_vec();
        proptest::prop_assert!(cut >= good.len() || store.verify(&short.into(), &[cert_of(p, "int")], now()).is_err());
        let mut changed = good.clone();
        let i = flip % changed.len();
        changed[i] ^= 0x01;
        let _ = store.verify(&changed.clone().into(), &[cert_of(p, "int")], now());
        let _ = matches(&id, &changed);
    }
}

mod auth {
    use super::*;
    use crate::pki::{
        auth::{self, AuthError, HASH_IDENTITY, HASH_SHA256, HASH_SHA384},
        key::Scheme,
    };

    const ALL: [Scheme; 9] = [
        Scheme::RsaPkcs1Sha256,
        Scheme::RsaPkcs1Sha384,
        Scheme::RsaPkcs1Sha512,
        Scheme::RsaPssSha256,
        Scheme::RsaPssSha384,
        Scheme::RsaPssSha512,
        Scheme::EcdsaP256Sha256,
        Scheme::EcdsaP384Sha384,
        Scheme::Ed25519,
    ];

    /// Each AlgorithmIdentifier we send parses, and reads back as its
    /// scheme (for PSS: hash, MGF1 hash and salt as ring verifies them).
    #[test]
    fn our_algorithm_identifiers_read_back() {
        for s in ALL {
            let data = auth::encode(s, b"sig").unwrap();
            assert_eq!(auth::decode(&data).unwrap(), (s, &b"sig"[..]), "{s:?}");
        }
        assert_eq!(auth::encode(Scheme::EcdsaP256Sha256Fixed, b"x"), None);
    }

    #[test]
    fn signatures_verify_with_the_signers_certificate_only() {
        let p = pki();
        let msg = b"InitiatorSignedOctets";
        for (key, cert, other) in [
            ("rsa.key", "rsa", "ec"),
            ("ec.key", "ec", "rsa"),
            ("ed.key", "ed", "ec"),
        ] {
            let k = read_private_key(&p.path(key)).unwrap();
            let (c, o) = (cert_of(p, cert), cert_of(p, other));
            for &s in k.schemes() {
                let sig = k.sign(s, msg).unwrap();
                let sig = match auth::encode(s, &sig) {
                    Some(data) => {
                        let (scheme, sig) = auth::decode(&data).unwrap();
                        assert_eq!(scheme, s);
                        sig.to_vec()
                    }
                    None => sig,
                };
                auth::verify(s, &c, msg, &sig).unwrap_or_else(|e| panic!("{key} {s:?}: {e}"));
                let e = auth::verify(s, &o, msg, &sig).unwrap_err();
                assert!(
                    matches!(e, AuthError::Invalid | AuthError::WrongKey { .. }),
                    "{e}"
                );
                let e = auth::verify(s, &c, b"other octets", &sig).unwrap_err();
                assert_eq!(e, AuthError::Invalid);
            }
        }
    }

    #[test]
    fn the_scheme_follows_the_hashes_the_peer_lists() {
        let p = pki();
        let rsa = read_private_key(&p.path("rsa.key")).unwrap();
        let ed = read_private_key(&p.path("ed.key")).unwrap();
        let ec = read_private_key(&p.path("ec.key")).unwrap();
        assert_eq!(
            auth::choose(rsa.schemes(), &[HASH_SHA256]),
            Some(Scheme::RsaPssSha256)
        );
        assert_eq!(
            auth::choose(rsa.schemes(), &[HASH_SHA384]),
            Some(Scheme::RsaPssSha384)
        );
        assert_eq!(auth::choose(rsa.schemes(), &[]), None);
        assert_eq!(
            auth::choose(ed.schemes(), &[HASH_SHA256, HASH_IDENTITY]),
            Some(Scheme::Ed25519)
        );
        assert_eq!(auth::choose(ed.schemes(), &[HASH_SHA256]), None);
        assert_eq!(auth::choose(ec.schemes(), &[HASH_SHA384]), None);
        let listed = auth::parse_hash_notify(&auth::hash_notify_data(&auth::OUR_HASHES));
        assert_eq!(listed, auth::OUR_HASHES);
    }

    /// Method 1 (RFC 7296 §3.8, PKCS#1 v1.5 with SHA-1): openssl's
    /// signature verifies through the functions the engine uses; we never
    /// make one.
    #[test]
    fn a_classic_rsa_sha1_signature_made_by_openssl_verifies() {
        use crate::proto::AuthMethod;
        let p = pki();
        let msg = b"ResponderSignedOctets, method 1";
        std::fs::write(p.path("m1.data"), msg).unwrap();
        p.openssl(&[
            "dgst", "-sha1", "-sign", "rsa.key", "-out", "m1.sig", "m1.data",
        ]);
        p.openssl(&[
            "dgst",
            "-sha256",
            "-sign",
            "rsa.key",
            "-out",
            "m1.sha256",
            "m1.data",
        ]);
        let sig = std::fs::read(p.path("m1.sig")).unwrap();
        let (scheme, s) = auth::peer_scheme(AuthMethod::RSA_DIGITAL_SIGNATURE, &sig).unwrap();
        assert_eq!((scheme, s), (Scheme::RsaPkcs1Sha1, &sig[..]));
        let rsa = cert_of(p, "rsa");
        auth::verify(scheme, &rsa, msg, s).unwrap();
        assert_eq!(
            auth::verify(scheme, &rsa, b"other octets", s),
            Err(AuthError::Invalid)
        );
        let sha256 = std::fs::read(p.path("m1.sha256")).unwrap();
        assert_eq!(
            auth::verify(scheme, &rsa, msg, &sha256),
            Err(AuthError::Invalid),
            "a SHA-256 signature is not method 1's"
        );
        assert!(matches!(
            auth::verify(scheme, &cert_of(p, "ec"), msg, s),
            Err(AuthError::WrongKey { .. })
        ));
        let key = read_private_key(&p.path("rsa.key")).unwrap();
        assert!(!key.schemes().contains(&Scheme::RsaPkcs1Sha1));
        assert!(key.sign(Scheme::RsaPkcs1Sha1, msg).is_err());
        assert_eq!(Scheme::RsaPkcs1Sha1.algorithm_identifier(), None);
        let e = auth::peer_scheme(AuthMethod::DSS_DIGITAL_SIGNATURE, &sig).unwrap_err();
        assert!(e.to_string().contains("AUTH method 3"), "{e}");
        assert_eq!(
            auth::peer_scheme(AuthMethod::ECDSA_SHA256_P256, b"rs").unwrap(),
            (Scheme::EcdsaP256Sha256Fixed, &b"rs"[..])
        );
    }

    /// ECDSA on P-521 with SHA-512 (ring has none; RustCrypto's p521):
    /// an openssl key signs in both forms, method 14 (DER) and method 11
    /// (r || s, RFC 4754), each checked against the certificate; openssl's
    /// own DER signature verifies; the other forms and keys are refused.
    #[test]
    fn p521_keys_sign_and_verify_in_both_forms() {
        use crate::proto::AuthMethod;
        let p = pki();
        let key = read_private_key(&p.path("p521.key")).unwrap();
        assert_eq!(key.kind(), KeyKind::EcdsaP521);
        let cert = cert_of(p, "p521");
        assert_eq!(auth::public_key_of(&cert).unwrap(), key.public_key());
        let msg = b"InitiatorSignedOctets, P-521";
        for scheme in [Scheme::EcdsaP521Sha512, Scheme::EcdsaP521Sha512Fixed] {
            let sig = key.sign(scheme, msg).unwrap();
            auth::verify(scheme, &cert, msg, &sig).unwrap();
            assert_eq!(
                auth::verify(scheme, &cert, b"other octets", &sig),
                Err(AuthError::Invalid),
                "{scheme:?}"
            );
            assert!(matches!(
                auth::verify(scheme, &cert_of(p, "ec"), msg, &sig),
                Err(AuthError::WrongKey { .. })
            ));
        }
        // Method 14: the AlgorithmIdentifier round trip.
        let sig = key.sign(Scheme::EcdsaP521Sha512, msg).unwrap();
        let data = auth::encode(Scheme::EcdsaP521Sha512, &sig).unwrap();
        assert_eq!(
            auth::decode(&data).unwrap(),
            (Scheme::EcdsaP521Sha512, &sig[..])
        );
        // Method 11: 66 + 66 octets.
        let fixed = key.sign(Scheme::EcdsaP521Sha512Fixed, msg).unwrap();
        assert_eq!(fixed.len(), 132);
        let (scheme, s) = auth::peer_scheme(AuthMethod::ECDSA_SHA512_P521, &fixed).unwrap();
        auth::verify(scheme, &cert, msg, s).unwrap();
        assert_eq!(
            auth::verify(Scheme::EcdsaP521Sha512, &cert, msg, &fixed),
            Err(AuthError::Invalid),
            "r || s is not DER"
        );
        assert!(matches!(
            auth::verify(Scheme::RsaPssSha256, &cert, msg, &sig),
            Err(AuthError::WrongKey { .. })
        ));
        assert_eq!(
            auth::verify(Scheme::EcdsaP256Sha256, &cert, msg, &sig),
            Err(AuthError::Invalid),
            "a SHA-512 signature is not a SHA-256 one"
        );
        // openssl's signature, as charon's openssl plugin makes it.
        std::fs::write(p.path("p521.data"), msg).unwrap();
        p.openssl(&[
            "dgst",
            "-sha512",
            "-sign",
            "p521.key",
            "-out",
            "p521.sig",
            "p521.data",
        ]);
        let theirs = std::fs::read(p.path("p521.sig")).unwrap();
        auth::verify(Scheme::EcdsaP521Sha512, &cert, msg, &theirs).unwrap();
        p.openssl(&[
            "dgst",
            "-sha256",
            "-sign",
            "p521.key",
            "-out",
            "p521.256",
            "p521.data",
        ]);
        let sha256 = std::fs::read(p.path("p521.256")).unwrap();
        auth::verify(Scheme::EcdsaP256Sha256, &cert, msg, &sha256).unwrap();
        // The same key as SEC1.
        p.openssl(&["ec", "-in", "p521.key", "-out", "p521.sec1.key"]);
        let sec1 = read_private_key(&p.path("p521.sec1.key")).unwrap();
        assert_eq!(sec1.public_key(), key.public_key());
        let sig = sec1.sign(Scheme::EcdsaP521Sha512, msg).unwrap();
        auth::verify(Scheme::EcdsaP521Sha512, &cert, msg, &sig).unwrap();
    }

    /// A chain through a P-521 root validates (its signature on the end
    /// entity is ecdsa-with-SHA256 by a P-521 key, openssl's default; the
    /// SHA-512 one below); a P-521 end entity under the P-256 root does
    /// too.
    #[test]
    fn chains_with_p521_keys_validate() {
        let p = pki();
        let now = SystemTime::now();
        let store = TrustStore::new(&[cert_of(p, "root521")], &[]).unwrap();
        let v = store.verify(&cert_of(p, "under521"), &[], now).unwrap();
        assert!(v.subject.contains("under521.test"), "{}", v.subject);
        assert!(matches!(
            store.verify(&cert_of(p, "ec"), &[], now),
            Err(Refusal::UnknownCa { .. })
        ));
        p.openssl(&[
            "req",
            "-new",
            "-key",
            "under521.key",
            "-subj",
            "/CN=under521.test",
            "-out",
            "under521.csr",
        ]);
        std::fs::write(
            p.path("under521.ext"),
            "keyUsage=critical,digitalSignature\n",
        )
        .unwrap();
        p.openssl(&[
            "x509",
            "-req",
            "-in",
            "under521.csr",
            "-CA",
            "root521.pem",
            "-CAkey",
            "root521.key",
            "-sha512",
            "-days",
            "30",
            "-out",
            "under521.sha512.pem",
            "-extfile",
            "under521.ext",
        ]);
        let sha512 = cert_of(p, "under521.sha512");
        let (_, c) = X509Certificate::from_der(&sha512).unwrap();
        assert_eq!(
            c.signature_algorithm.algorithm.to_id_string(),
            "1.2.840.10045.4.3.4"
        );
        store.verify(&sha512, &[], now).unwrap();
        store_of(p)
            .verify(&cert_of(p, "p521"), &[cert_of(p, "int")], now)
            .unwrap();
    }

    proptest::proptest! {
        /// A peer's AUTH data of any form is read or refused, never a
        /// panic; verification of anything against a real certificate too.
        #[test]
        fn arbitrary_auth_data_is_refused_not_panicked_on(
            data in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
        ) {
            if let Ok((s, sig)) = auth::decode(&data) {
                proptest::prop_assert!(auth::verify(s, &cert_of(pki(), "ec"), b"m", sig).is_err());
            }
        }
    }
}
