//! Golden bytes from strongSwan 5.9.8 (charon) talking to itself, captured
//! by `testdata/capture-charon.sh` (IKE_SA_INIT, IKE_AUTH over 4500 with
//! the non-ESP marker, INFORMATIONAL Delete). Our codec must decode them,
//! name what is in them, and re-encode them byte for byte; our responder
//! must answer charon's IKE_SA_INIT.

use std::time::Instant;

use mobike_agent::{
    engine::{Endpoint, EndpointConfig, parse_identity},
    proposal::{EspProposal, IkeProposal},
    proto::{
        self, ExchangeType, Message, NatTDatagram, NotifyType, Payload, ProtocolId, TransformType,
        transform_id,
    },
};

fn hex(s: &str) -> Vec<u8> {
    let s = s.trim();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

const INIT_REQ: &str = include_str!("../testdata/charon-5.9/01-500-500.hex");
const INIT_RESP: &str = include_str!("../testdata/charon-5.9/02-500-500.hex");
const NAT_T: [&str; 4] = [
    include_str!("../testdata/charon-5.9/03-4500-4500.hex"),
    include_str!("../testdata/charon-5.9/04-4500-4500.hex"),
    include_str!("../testdata/charon-5.9/05-4500-4500.hex"),
    include_str!("../testdata/charon-5.9/06-4500-4500.hex"),
];

#[test]
fn charon_ike_sa_init_request_decodes_and_reencodes_identically() {
    let bytes = hex(INIT_REQ);
    let m = Message::decode(&bytes).expect("decodes");
    assert_eq!(m.header.exchange, ExchangeType::IKE_SA_INIT);
    assert!(m.header.from_initiator() && !m.header.is_response());
    assert_eq!((m.header.spi_r, m.header.message_id), (0, 0));
    let Payload::Sa(props) = &m.payloads[0] else {
        panic!("SA first: {:?}", m.payloads[0])
    };
    assert_eq!(props.len(), 1);
    assert_eq!(props[0].protocol, ProtocolId::IKE);
    let t = &props[0].transforms;
    assert!(t.iter().any(|t| t.ty == TransformType::ENCR
        && t.id == transform_id::ENCR_AES_GCM_16
        && t.key_length() == Some(256)));
    assert!(
        t.iter()
            .any(|t| t.ty == TransformType::PRF && t.id == transform_id::PRF_HMAC_SHA2_256)
    );
    assert!(
        t.iter()
            .any(|t| t.ty == TransformType::DH && t.id == transform_id::DH_CURVE25519)
    );
    assert!(matches!(&m.payloads[1], Payload::Ke(k) if k.group == 31 && k.data.len() == 32));
    assert!(matches!(&m.payloads[2], Payload::Nonce(n) if n.len() == 32));
    let notifies: Vec<NotifyType> = m.notifies().map(|n| n.ty).collect();
    assert_eq!(
        &notifies[..4],
        &[
            NotifyType::NAT_DETECTION_SOURCE_IP,
            NotifyType::NAT_DETECTION_DESTINATION_IP,
            NotifyType::IKEV2_FRAGMENTATION_SUPPORTED,
            NotifyType::SIGNATURE_HASH_ALGORITHMS
        ]
    );
    assert_eq!(m.encode(), bytes);
    // Our proposal syntax selects charon's offer.
    let ours = IkeProposal::parse("aes256gcm16-prfsha256-x25519").unwrap();
    assert!(ours.select(&props[0]).is_some());
}

#[test]
fn charon_ike_sa_init_response_decodes_and_reencodes_identically() {
    let bytes = hex(INIT_RESP);
    let m = Message::decode(&bytes).expect("decodes");
    assert!(m.header.is_response() && !m.header.from_initiator());
    assert_ne!(m.header.spi_r, 0);
    let Payload::Sa(props) = &m.payloads[0] else {
        panic!()
    };
    assert_eq!(m.header.exchange, ExchangeType::IKE_SA_INIT);
    assert_eq!(props.len(), 1, "the responder answers with one proposal");
    assert_eq!(
        mobike_agent::proposal::ike_suite_from_wire(&props[0]).map(|s| s.dh.number()),
        Some(31)
    );
    assert_eq!(m.encode(), bytes);
}

#[test]
fn charon_nat_t_messages_carry_the_marker_and_reencode_identically() {
    let expected = [
        (ExchangeType::IKE_AUTH, false, 1),
        (ExchangeType::IKE_AUTH, true, 1),
        (ExchangeType::INFORMATIONAL, false, 2),
        (ExchangeType::INFORMATIONAL, true, 2),
    ];
    for (h, (exchange, response, mid)) in NAT_T.iter().zip(expected) {
        let bytes = hex(h);
        let NatTDatagram::Ike(ike) = proto::classify_nat_t(&bytes) else {
            panic!("non-ESP marker")
        };
        let m = Message::decode(ike).expect("decodes");
        assert_eq!(
            (
                m.header.exchange,
                m.header.is_response(),
                m.header.message_id
            ),
            (exchange, response, mid)
        );
        let sk = m.encrypted().expect("SK payload");
        assert_eq!(sk.header_offset, proto::HEADER_LEN);
        // IV (8) + at least the pad length octet + ICV (16).
        assert!(sk.body.len() >= 8 + 1 + 16);
        assert_eq!(m.encode(), ike);
    }
}

#[test]
fn our_responder_answers_charons_ike_sa_init() {
    let conn = mobike_agent::engine::ConnectionConfig {
        name: "c".into(),
        local_addr: None,
        remote_addr: None,
        alt_local_addrs: vec![],
        alt_remote_addrs: vec![],
        local_id: parse_identity("b.test").unwrap(),
        remote_id: parse_identity("a.test").unwrap(),
        psk: b"capture-psk-0123456789".to_vec(),
        ike_proposals: vec![IkeProposal::parse("aes256gcm16-prfsha256-x25519").unwrap()],
        mobike: true,
        children: vec![mobike_agent::engine::ChildConfig {
            name: "net".into(),
            local_ts: vec![mobike_agent::engine::parse_ts("10.2.0.0/24").unwrap()],
            remote_ts: vec![mobike_agent::engine::parse_ts("10.1.0.0/24").unwrap()],
            esp_proposals: vec![EspProposal::parse("aes256gcm16").unwrap()],
            mode: mobike_agent::engine::Mode::Tunnel,
            rekey_time: None,
            rand_time: None,
            limits: Default::default(),
        }],
        timers: mobike_agent::engine::Timers::default(),
        recovery: Default::default(),
        vips: Vec::new(),
        pools: Vec::new(),
        mobike_verify: Default::default(),
        no_nats: false,
        local_auth: mobike_agent::engine::LocalAuth::Psk,
        remote_auth: mobike_agent::engine::RemoteAuth::Psk,
    };
    let mut ep = Endpoint::new(EndpointConfig {
        connections: vec![conn],
        ..EndpointConfig::default()
    })
    .unwrap();
    let (local, remote) = (
        "192.0.2.2:500".parse().unwrap(),
        "192.0.2.1:500".parse().unwrap(),
    );
    ep.handle_datagram(Instant::now(), local, remote, &hex(INIT_REQ));
    let t = ep.poll_transmit().expect("answer");
    let m = Message::decode(&t.payload).unwrap();
    assert!(m.header.is_response());
    let kinds: Vec<_> = m.payloads.iter().map(Payload::payload_type).collect();
    assert_eq!(
        &kinds[..3],
        &[
            proto::PayloadType::SA,
            proto::PayloadType::KE,
            proto::PayloadType::NONCE
        ]
    );
    assert_eq!(ep.half_open_count(), 1);
    // Same request again (a retransmission): the same answer, no new SA.
    ep.handle_datagram(Instant::now(), local, remote, &hex(INIT_REQ));
    assert_eq!(ep.poll_transmit().expect("replay").payload, t.payload);
    assert_eq!(ep.ike_sa_count(), 1);
}
