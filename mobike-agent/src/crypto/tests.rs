//! Known-answer tests. RFC 4231 gives the HMAC vectors; everything else is
//! recomputed independently by `testdata/crypto_vectors.py` (Python hmac and
//! pyca/cryptography), whose output is pasted here.

use ring::rand::SystemRandom;

use super::*;
use crate::proto::{ExchangeType, IdType, Identification, Message, Notify, NotifyType, flags};

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

#[test]
fn hmac_prfs_match_rfc4231_test_case_2() {
    let (k, d) = (b"Jefe", b"what do ya want for nothing?");
    assert_eq!(
        Prf::HmacSha256.prf(k, d),
        hex("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
    );
    assert_eq!(
        Prf::HmacSha384.prf(k, d),
        hex(
            "af45d2e376484031617f78d2b58a6b1b9c7ef464f5a01b47e42ec3736322445e8e2240ca5e69e2c78b3239ecfab21649"
        )
    );
    assert_eq!(
        Prf::HmacSha512.prf(k, d),
        hex(
            "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea2505549758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737"
        )
    );
}

#[test]
fn prf_plus_matches_the_reference_over_several_blocks() {
    let key: Vec<u8> = (1..=32).collect();
    assert_eq!(
        Prf::HmacSha256.prf_plus(&key, b"seed", 100).unwrap(),
        hex(
            "a45bf10697235cc29d7dfa4e151c94ad63aaf530f2d1b781dd16a0516c33125be8a59e7a7b27cab1739e0916672479d82481814ed24050478bdefb2668bc1ed02cda2f865b4cc369fcf2561ce82fa0a937139e29c7f4da397cdcbfd6b2cc357c317e36ef"
        )
    );
}

#[test]
fn prf_plus_refuses_more_than_255_blocks() {
    assert!(Prf::HmacSha256.prf_plus(b"k", b"s", 255 * 32).is_ok());
    assert!(matches!(
        Prf::HmacSha256.prf_plus(b"k", b"s", 255 * 32 + 1),
        Err(CryptoError::PrfPlusTooLong(_))
    ));
}

fn reference_keys() -> IkeKeys {
    IkeKeys::derive(
        Prf::HmacSha256,
        Aead::AesGcm16_256,
        &[0x11; 32],
        &[0x22; 32],
        &[0x33; 32],
        0x0102030405060708,
        0x1112131415161718,
    )
    .unwrap()
}

#[test]
fn ike_sa_keys_follow_rfc7296_section_2_14() {
    let k = reference_keys();
    assert_eq!(
        k.sk_d,
        hex("df4ad28668da8188ce5defec720ccf0c251f31cdf3a882fd5f855743dc144686")
    );
    assert_eq!(
        k.sk_ei,
        hex("c9ae3d42239d6c8bbf6a6ef5a1caf7cec80ea790d4d352afa83b76ce6f5c3c6c00689060")
    );
    assert_eq!(
        k.sk_er,
        hex("bbd7e4453dc5195c4a1f27d7ac0c4e52418349c6934c39421ea57ca39d64b919ac44bb5b")
    );
    assert_eq!(
        k.sk_pi,
        hex("1ebdedbf7e79b38d87ef01ed4d08143494d703625c83cebcade673827ec93a64")
    );
    assert_eq!(
        k.sk_pr,
        hex("3559b414b4091b801552e64a534781e0a73af40d90e9386412738b2b053adc5a")
    );
}

#[test]
fn psk_auth_follows_rfc7296_section_2_15() {
    let k = reference_keys();
    let id_body = id_body_of(&Identification {
        ty: IdType::ID_FQDN,
        data: b"a.test".to_vec(),
    });
    assert_eq!(
        k.psk_auth(b"secret", true, &[0x44; 50], &[0x22; 32], &id_body),
        hex("ee1aac69e82d9023ca16348aed8ff1de8f4bc7f5354c83968b81e74231cd56be")
    );
    // The responder's AUTH uses SK_pr and differs.
    assert_ne!(
        k.psk_auth(b"secret", false, &[0x44; 50], &[0x22; 32], &id_body),
        k.psk_auth(b"secret", true, &[0x44; 50], &[0x22; 32], &id_body)
    );
}

fn id_body_of(id: &Identification) -> Vec<u8> {
    crate::proto::id_payload_body(id)
}

#[test]
fn child_keymat_follows_rfc7296_section_2_17() {
    let c = reference_keys()
        .child_keys(Aead::ChaCha20Poly1305, None, &[0x11; 32], &[0x22; 32])
        .unwrap();
    assert_eq!(
        c.i_to_r,
        hex("f0e4d386b43427f8cb05c2858604f7046dd5ffd9afc07cb74e76051330ff1407d7155cc8")
    );
    assert_eq!(
        c.r_to_i,
        hex("514928ab12edd66c8564d70b0ee9afe48ba7510c1729d1c4f54e3387ceedb26a48bf146a")
    );
}

#[test]
fn rekeyed_ike_keys_use_old_prf_for_skeyseed_and_new_prf_for_prf_plus() {
    let k = IkeKeys::derive_rekeyed(
        &reference_keys(),
        Prf::HmacSha384,
        Aead::AesGcm16_128,
        &[0x55; 32],
        &[0x66; 32],
        &[0x77; 32],
        5,
        6,
    )
    .unwrap();
    assert_eq!(
        k.sk_d,
        hex(
            "8191785cd1fe024be390023b36fdd265e9b9bafafeb19da557ec0b77baff172f08d2bb042228bd596327a9b44d887f15"
        )
    );
    assert_eq!(
        k.sk_pr,
        hex(
            "ca8611eb7e45085871ff9691d37de631af7baad084bc558de711c0695548cf9bf69be744f9d2c64992608c4862dc8540"
        )
    );
    assert_eq!(k.sk_ei.len(), 20);
}

#[test]
fn aeads_match_reference_ciphertexts_and_reject_tampering() {
    let iv = [1, 2, 3, 4, 5, 6, 7, 8];
    let k128: Vec<u8> = (0..20).collect();
    let k256: Vec<u8> = (0..36).collect();
    for (alg, key, expect) in [
        (
            Aead::AesGcm16_128,
            &k128,
            "f8333bccbf1d8e9a78a0f47593991380e693fc71230c7a2e70",
        ),
        (
            Aead::AesGcm16_256,
            &k256,
            "17af942350f891e576189cbe7c461932c34e84566788f3203b",
        ),
        (
            Aead::ChaCha20Poly1305,
            &k256,
            "3d49cfafea514962b82fe9f7f198c16233a10b20625721206d",
        ),
    ] {
        let mut buf = b"hello ike".to_vec();
        alg.seal(key, iv, b"aad", &mut buf).unwrap();
        assert_eq!(buf, hex(expect), "{alg:?}");
        assert_eq!(alg.open(key, iv, b"aad", &buf).unwrap(), b"hello ike");
        assert!(matches!(
            alg.open(key, iv, b"aaX", &buf),
            Err(CryptoError::IntegrityCheckFailed)
        ));
        buf[0] ^= 1;
        assert!(matches!(
            alg.open(key, iv, b"aad", &buf),
            Err(CryptoError::IntegrityCheckFailed)
        ));
    }
    assert!(matches!(
        Aead::AesGcm16_128.seal(&k256, iv, b"", &mut vec![]),
        Err(CryptoError::KeyLength { .. })
    ));
}

#[test]
fn every_dh_group_agrees_on_the_shared_secret() {
    let rng = SystemRandom::new();
    for g in [DhGroup::Curve25519, DhGroup::Ecp256, DhGroup::Ecp384] {
        let a = KeyShare::generate(g, &rng).unwrap();
        let b = KeyShare::generate(g, &rng).unwrap();
        assert_eq!(a.public().len(), g.public_len());
        let (pa, pb) = (a.public().to_vec(), b.public().to_vec());
        let s1 = a.agree(&pb).unwrap();
        let s2 = b.agree(&pa).unwrap();
        assert_eq!(s1, s2, "{g:?}");
        let expected_len = match g {
            DhGroup::Curve25519 | DhGroup::Ecp256 => 32,
            DhGroup::Ecp384 => 48,
        };
        assert_eq!(s1.len(), expected_len);
    }
}

#[test]
fn dh_rejects_wrong_length_and_off_curve_points() {
    let rng = SystemRandom::new();
    let a = KeyShare::generate(DhGroup::Ecp256, &rng).unwrap();
    assert!(matches!(
        a.agree(&[1; 63]),
        Err(CryptoError::KeLength {
            expected: 64,
            got: 63,
            ..
        })
    ));
    let a = KeyShare::generate(DhGroup::Ecp256, &rng).unwrap();
    assert!(matches!(a.agree(&[1; 64]), Err(CryptoError::KeyAgreement)));
}

#[test]
fn sealed_message_opens_to_the_same_payloads_and_detects_header_tampering() {
    let header = Header {
        spi_i: 1,
        spi_r: 2,
        next_payload: PayloadType::NONE,
        version: 0x20,
        exchange: ExchangeType::INFORMATIONAL,
        flags: flags::INITIATOR,
        message_id: 7,
        length: 0,
    };
    let inner = vec![Payload::Notify(Notify::new(
        NotifyType::UPDATE_SA_ADDRESSES,
        vec![],
    ))];
    let key = [9u8; 36];
    let bytes = seal_message(
        header,
        &inner,
        Aead::ChaCha20Poly1305,
        &key,
        [0, 0, 0, 0, 0, 0, 0, 1],
    )
    .unwrap();
    let msg = Message::decode(&bytes).unwrap();
    assert_eq!(msg.header.message_id, 7);
    assert_eq!(
        open_message(&bytes, &msg, Aead::ChaCha20Poly1305, &key).unwrap(),
        inner
    );

    // The header is authenticated: a changed Message ID fails.
    let mut forged = bytes.clone();
    forged[23] = 8;
    let msg = Message::decode(&forged).unwrap();
    assert!(matches!(
        open_message(&forged, &msg, Aead::ChaCha20Poly1305, &key),
        Err(CryptoError::IntegrityCheckFailed)
    ));
}

#[test]
fn nat_detection_hash_covers_spis_address_and_port() {
    let a: std::net::SocketAddr = "192.0.2.1:500".parse().unwrap();
    let b: std::net::SocketAddr = "192.0.2.1:4500".parse().unwrap();
    assert_eq!(nat_detection_hash(1, 2, a).len(), 20);
    assert_ne!(nat_detection_hash(1, 2, a), nat_detection_hash(1, 2, b));
    assert_ne!(nat_detection_hash(1, 2, a), nat_detection_hash(1, 3, a));
}
