use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;

use super::*;

fn header(exchange: ExchangeType) -> Header {
    Header {
        spi_i: 0x0102_0304_0506_0708,
        spi_r: 0,
        next_payload: PayloadType::NONE,
        version: 0x20,
        exchange,
        flags: flags::INITIATOR,
        message_id: 0,
        length: 0,
    }
}

fn sample_payloads() -> Vec<Payload> {
    vec![
        Payload::Sa(vec![Proposal {
            number: 1,
            protocol: ProtocolId::IKE,
            spi: vec![],
            transforms: vec![
                Transform {
                    ty: TransformType::ENCR,
                    id: transform_id::ENCR_AES_GCM_16,
                    attributes: vec![TransformAttribute::Tv {
                        ty: transform_id::ATTR_KEY_LENGTH,
                        value: 256,
                    }],
                },
                Transform {
                    ty: TransformType::PRF,
                    id: transform_id::PRF_HMAC_SHA2_256,
                    attributes: vec![],
                },
                Transform {
                    ty: TransformType::DH,
                    id: transform_id::DH_CURVE25519,
                    attributes: vec![],
                },
            ],
        }]),
        Payload::Ke(KeyExchange {
            group: 31,
            data: vec![7; 32],
        }),
        Payload::Nonce(vec![9; 32]),
        Payload::Notify(Notify::new(
            NotifyType::NAT_DETECTION_SOURCE_IP,
            vec![1; 20],
        )),
        Payload::Notify(Notify::new(NotifyType::MOBIKE_SUPPORTED, vec![])),
        Payload::Notify(Notify::for_additional_address(IpAddr::V6(
            Ipv6Addr::LOCALHOST,
        ))),
        Payload::IdI(Identification {
            ty: IdType::ID_FQDN,
            data: b"a.test".to_vec(),
        }),
        Payload::Auth(Authentication {
            method: AuthMethod::SHARED_KEY_MESSAGE_INTEGRITY_CODE,
            data: vec![3; 32],
        }),
        Payload::TsI(vec![TrafficSelector {
            ip_protocol: 0,
            start_port: 0,
            end_port: 65535,
            start_addr: IpAddr::V4(Ipv4Addr::new(10, 1, 0, 0)),
            end_addr: IpAddr::V4(Ipv4Addr::new(10, 1, 0, 255)),
        }]),
        Payload::Delete(Delete {
            protocol: ProtocolId::ESP,
            spi_size: 4,
            spis: vec![vec![1, 2, 3, 4]],
        }),
        Payload::VendorId(b"mobike-agent".to_vec()),
        Payload::Config(Configuration {
            cfg_type: CfgType::CFG_REQUEST,
            attributes: vec![(1, vec![])],
        }),
        Payload::Unknown {
            ty: PayloadType(200),
            critical: false,
            body: vec![1, 2, 3],
        },
    ]
}

#[test]
fn message_with_every_payload_round_trips() {
    let msg = Message {
        header: header(ExchangeType::IKE_SA_INIT),
        payloads: sample_payloads(),
    };
    let bytes = msg.encode();
    let back = Message::decode(&bytes).expect("decodes");
    assert_eq!(back.payloads, msg.payloads);
    assert_eq!(back.header.length as usize, bytes.len());
    assert_eq!(back.encode(), bytes);
}

#[test]
fn encrypted_payload_is_kept_opaque_and_must_be_last() {
    let sk = Payload::Encrypted(Encrypted {
        first_inner: PayloadType::IDI,
        body: vec![0xaa; 40],
        header_offset: 0,
    });
    let msg = Message {
        header: header(ExchangeType::IKE_AUTH),
        payloads: vec![sk],
    };
    let bytes = msg.encode();
    let back = Message::decode(&bytes).expect("decodes");
    let e = back.encrypted().expect("has SK");
    assert_eq!(e.first_inner, PayloadType::IDI);
    assert_eq!(e.header_offset, HEADER_LEN);
    assert_eq!(e.body, vec![0xaa; 40]);

    // SK followed by another payload: the SK's length stops short of the end.
    let mut bad = bytes.clone();
    bad.extend_from_slice(&[0, 0, 0, 4]);
    let len = bad.len() as u32;
    bad[24..28].copy_from_slice(&len.to_be_bytes());
    assert_eq!(Message::decode(&bad), Err(DecodeError::EncryptedNotLast));
}

#[test]
fn short_and_inconsistent_headers_are_rejected_with_the_reason() {
    assert_eq!(
        Message::decode(&[0; 10]),
        Err(DecodeError::ShortHeader { len: 10 })
    );
    let mut bytes = Message {
        header: header(ExchangeType::IKE_SA_INIT),
        payloads: vec![],
    }
    .encode();
    bytes.push(0);
    assert!(matches!(
        Message::decode(&bytes),
        Err(DecodeError::LengthMismatch {
            declared: 28,
            actual: 29
        })
    ));
    bytes.pop();
    bytes[17] = 0x10;
    assert_eq!(
        Message::decode(&bytes),
        Err(DecodeError::UnsupportedMajorVersion(1))
    );
}

#[test]
fn payload_length_past_the_end_is_named() {
    let mut bytes = Message {
        header: header(ExchangeType::IKE_SA_INIT),
        payloads: vec![Payload::Nonce(vec![1; 16])],
    }
    .encode();
    bytes[HEADER_LEN + 3] = 200;
    assert!(matches!(
        Message::decode(&bytes),
        Err(DecodeError::BadPayloadLength {
            ty: PayloadType::NONCE,
            offset: HEADER_LEN,
            length: 200,
            ..
        })
    ));
}

#[test]
fn short_nonce_is_malformed() {
    let err = Payload::decode(PayloadType::NONCE, false, &[0; 15]).unwrap_err();
    assert_eq!(
        err,
        DecodeError::Malformed {
            payload: PayloadType::NONCE,
            reason: "Nonce Data must be 16 to 256 octets"
        }
    );
}

#[test]
fn delete_spi_count_is_bounded_by_the_payload_length() {
    let malformed = |body: &[u8]| match Payload::decode(PayloadType::DELETE, false, body) {
        Err(DecodeError::Malformed { reason, .. }) => reason,
        other => panic!("{body:?} decoded as {other:?}"),
    };
    // 65,535 SPIs of size 0 in four bytes of body: nothing may be built.
    assert_eq!(
        malformed(&[3, 0, 0xff, 0xff]),
        "Num of SPIs given with SPI Size 0"
    );
    assert_eq!(
        malformed(&[9, 0, 0xff, 0xff]),
        "Num of SPIs given with SPI Size 0"
    );
    assert_eq!(
        malformed(&[3, 8, 0, 1, 1, 2, 3, 4, 5, 6, 7, 8]),
        "ESP/AH delete must have SPI Size 4"
    );
    // A count larger than the bytes present is refused before allocating.
    assert_eq!(
        malformed(&[3, 4, 0xff, 0xff, 1, 2, 3, 4]),
        "fewer SPIs than Num of SPIs"
    );
    // The well-formed forms still decode: IKE (no SPIs) and ESP.
    assert!(Payload::decode(PayloadType::DELETE, false, &[1, 0, 0, 0]).is_ok());
    assert!(Payload::decode(PayloadType::DELETE, false, &[3, 4, 0, 1, 1, 2, 3, 4]).is_ok());
}

#[test]
fn unknown_critical_payload_keeps_its_critical_bit() {
    let p = Payload::Unknown {
        ty: PayloadType(222),
        critical: true,
        body: vec![5],
    };
    let (first, bytes) = encode_chain(std::slice::from_ref(&p));
    assert_eq!(first, PayloadType(222));
    assert_eq!(bytes[1] & 0x80, 0x80);
    assert_eq!(decode_chain(first, &bytes, 0, false).unwrap(), vec![p]);
}

#[test]
fn mobike_notify_types_have_rfc4555_numbers() {
    assert_eq!(NotifyType::MOBIKE_SUPPORTED.0, 16396);
    assert_eq!(NotifyType::UPDATE_SA_ADDRESSES.0, 16400);
    assert_eq!(NotifyType::COOKIE2.0, 16401);
    assert_eq!(NotifyType::NO_NATS_ALLOWED.0, 16402);
    assert_eq!(NotifyType::UNACCEPTABLE_ADDRESSES.0, 40);
    assert_eq!(NotifyType::UNEXPECTED_NAT_DETECTED.0, 41);
    assert_eq!(
        format!("{:?}", NotifyType::NO_ADDITIONAL_ADDRESSES),
        "NO_ADDITIONAL_ADDRESSES"
    );
    assert_eq!(format!("{:?}", NotifyType(60000)), "NotifyType(60000)");
    let n = Notify::for_additional_address(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)));
    assert_eq!(n.ty, NotifyType::ADDITIONAL_IP4_ADDRESS);
    assert_eq!(
        n.additional_address(),
        Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)))
    );
}

#[test]
fn nat_t_port_datagrams_are_classified() {
    assert_eq!(classify_nat_t(&[0xff]), NatTDatagram::Keepalive);
    assert_eq!(
        classify_nat_t(&[0, 0, 0, 0, 1, 2]),
        NatTDatagram::Ike(&[1, 2])
    );
    assert_eq!(classify_nat_t(&[0, 0, 0, 1, 0, 0, 0, 1]), NatTDatagram::Esp);
    assert_eq!(classify_nat_t(&[1, 2]), NatTDatagram::Runt);
}

// ---------- property tests ----------

fn arb_ip_pair() -> impl Strategy<Value = (IpAddr, IpAddr)> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<[u8; 4]>()).prop_map(|(a, b)| (IpAddr::from(a), IpAddr::from(b))),
        (any::<[u8; 16]>(), any::<[u8; 16]>())
            .prop_map(|(a, b)| (IpAddr::from(a), IpAddr::from(b))),
    ]
}

fn arb_ts() -> impl Strategy<Value = TrafficSelector> {
    (any::<u8>(), any::<u16>(), any::<u16>(), arb_ip_pair()).prop_map(|(p, s, e, (a, b))| {
        TrafficSelector {
            ip_protocol: p,
            start_port: s,
            end_port: e,
            start_addr: a,
            end_addr: b,
        }
    })
}

fn arb_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..max)
}

fn arb_transform() -> impl Strategy<Value = Transform> {
    (
        1u8..6,
        any::<u16>(),
        proptest::collection::vec(
            prop_oneof![
                (0u16..0x8000, any::<u16>())
                    .prop_map(|(ty, value)| TransformAttribute::Tv { ty, value }),
                (0u16..0x8000, arb_bytes(8))
                    .prop_map(|(ty, value)| TransformAttribute::Tlv { ty, value }),
            ],
            0..3,
        ),
    )
        .prop_map(|(ty, id, attributes)| Transform {
            ty: TransformType(ty),
            id,
            attributes,
        })
}

fn arb_payload() -> impl Strategy<Value = Payload> {
    prop_oneof![
        proptest::collection::vec(
            (
                any::<u8>(),
                0u8..4,
                arb_bytes(9),
                proptest::collection::vec(arb_transform(), 0..5)
            )
                .prop_map(|(number, protocol, spi, transforms)| Proposal {
                    number,
                    protocol: ProtocolId(protocol),
                    spi,
                    transforms
                }),
            1..3
        )
        .prop_map(Payload::Sa),
        (any::<u16>(), arb_bytes(97))
            .prop_map(|(group, data)| Payload::Ke(KeyExchange { group, data })),
        (any::<u8>(), arb_bytes(30)).prop_map(|(t, data)| Payload::IdI(Identification {
            ty: IdType(t),
            data
        })),
        (any::<u8>(), arb_bytes(30)).prop_map(|(t, data)| Payload::IdR(Identification {
            ty: IdType(t),
            data
        })),
        (any::<u8>(), arb_bytes(30)).prop_map(|(m, data)| Payload::Auth(Authentication {
            method: AuthMethod(m),
            data
        })),
        proptest::collection::vec(any::<u8>(), 16..=256).prop_map(Payload::Nonce),
        (any::<u8>(), arb_bytes(9), any::<u16>(), arb_bytes(20)).prop_map(|(p, spi, t, data)| {
            Payload::Notify(Notify {
                protocol: ProtocolId(p),
                spi,
                ty: NotifyType(t),
                data,
            })
        }),
        proptest::collection::vec(any::<[u8; 4]>(), 0..4).prop_map(|spis| Payload::Delete(
            Delete {
                protocol: ProtocolId::ESP,
                spi_size: 4,
                spis: spis.into_iter().map(|s| s.to_vec()).collect()
            }
        )),
        arb_bytes(20).prop_map(Payload::VendorId),
        proptest::collection::vec(arb_ts(), 0..3).prop_map(Payload::TsI),
        proptest::collection::vec(arb_ts(), 0..3).prop_map(Payload::TsR),
        (
            any::<u8>(),
            proptest::collection::vec((0u16..0x8000, arb_bytes(16)), 0..3)
        )
            .prop_map(|(t, attributes)| Payload::Config(Configuration {
                cfg_type: CfgType(t),
                attributes
            })),
        (49u8..=255, any::<bool>(), arb_bytes(20)).prop_map(|(ty, critical, body)| {
            Payload::Unknown {
                ty: PayloadType(ty),
                critical,
                body,
            }
        }),
    ]
}

proptest! {
    #[test]
    fn any_encoded_message_decodes_to_itself(
        payloads in proptest::collection::vec(arb_payload(), 0..8),
        spi_i in any::<u64>(), spi_r in any::<u64>(), mid in any::<u32>(), fl in any::<u8>(), ex in any::<u8>(),
    ) {
        let msg = Message {
            header: Header { spi_i, spi_r, next_payload: PayloadType::NONE, version: 0x20,
                exchange: ExchangeType(ex), flags: fl, message_id: mid, length: 0 },
            payloads,
        };
        let bytes = msg.encode();
        let back = Message::decode(&bytes).expect("own encoding decodes");
        prop_assert_eq!(&back.payloads, &msg.payloads);
        prop_assert_eq!(back.encode(), bytes);
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in arb_bytes(300)) {
        let _ = Message::decode(&bytes);
    }

    #[test]
    fn decoding_mutated_valid_messages_never_panics(
        payloads in proptest::collection::vec(arb_payload(), 1..6),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let msg = Message { header: header(ExchangeType::IKE_AUTH), payloads };
        let mut bytes = msg.encode();
        for (i, v) in flips {
            let i = i.index(bytes.len());
            bytes[i] = v;
        }
        if let Ok(m) = Message::decode(&bytes) {
            // Whatever decodes re-encodes to something that decodes the same.
            let again = Message::decode(&m.encode()).expect("re-encoding decodes");
            prop_assert_eq!(again.payloads, m.payloads);
        }
    }
}
