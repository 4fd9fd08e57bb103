//! Hostile input: garbage, forged and replayed datagrams, unknown critical
//! payloads change nothing; INITIAL_CONTACT from a restarted peer clears its
//! stale SAs.

use std::time::Duration;

use mobike_agent::{
    engine::{Command, DeleteReason, Event},
    proto::{self, ExchangeType, NotifyType, Payload},
};

use crate::{
    IKE_1, delete_everything, sa_id,
    sim::{self, LinkModel, Sim, configs, ip},
    up,
};

#[test]
fn garbage_datagrams_are_dropped_and_counted_without_touching_the_sa() {
    let mut s = up(51, LinkModel::clean());
    let before = s.nodes[1].ep.ike_sas();
    let mut rng = sim::Rng::new(99);
    let local = sim::sock(ip(sim::B_ADDR), 500);
    let remote = sim::sock(ip(sim::A_ADDR), 500);
    for i in 0..2000 {
        let len = rng.below(200) as usize;
        let junk: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        let d = if i % 2 == 0 {
            // Well-formed messages for the live SA with a random SK payload.
            proto::Message {
                header: proto::Header {
                    spi_i: rng.next(),
                    spi_r: before[0].id,
                    next_payload: proto::PayloadType::NONE,
                    version: 0x20,
                    exchange: ExchangeType(34 + (rng.below(4) as u8)),
                    flags: proto::flags::INITIATOR
                        | if i % 4 == 0 {
                            proto::flags::RESPONSE
                        } else {
                            0
                        },
                    message_id: rng.below(4) as u32,
                    length: 0,
                },
                payloads: vec![Payload::Encrypted(proto::Encrypted {
                    first_inner: proto::PayloadType(rng.next() as u8),
                    body: junk,
                    header_offset: 0,
                })],
            }
            .encode()
        } else {
            junk
        };
        let port = if i % 3 == 0 { 4500 } else { 500 };
        let d = if port == 4500 {
            [&[0u8; 4][..], &d].concat()
        } else {
            d
        };
        s.nodes[1]
            .ep
            .handle_datagram(s.now, sim::sock(local.ip(), port), remote, &d);
    }
    let st = s.nodes[1].ep.stats().clone();
    assert!(st.malformed > 500, "{st:?}");
    assert!(st.integrity_failures > 100, "{st:?}");
    assert!(
        st.integrity_failures + st.unexpected > 0,
        "some junk reached the SA: {st:?}"
    );
    assert_eq!(s.nodes[1].ep.ike_sas(), before);
    // Junk never produces an answer.
    assert!(s.nodes[1].ep.poll_transmit().is_none());
    delete_everything(&mut s);
}

#[test]
fn forged_and_replayed_messages_never_change_an_established_sa() {
    let mut s = up(61, LinkModel::clean());
    // Capture one real request from A to B (a liveness check).
    let sa = sa_id(&s, 0);
    s.delivered.clear();
    s.nodes[0]
        .ep
        .handle_command(s.now, Command::Dpd(sa))
        .unwrap();
    s.run_for(Duration::from_secs(1));
    let (to, dst, src, req) = s
        .delivered
        .iter()
        .find(|d| d.0 == 1)
        .cloned()
        .expect("captured");
    let before = s.nodes[1].ep.ike_sas();
    let integrity_before = s.nodes[1].ep.stats().integrity_failures;
    // Flip every byte of the ciphertext in turn: none verifies.
    for i in (4 + 28 + 4 + 8)..req.len() {
        let mut f = req.clone();
        f[i] ^= 0x55;
        s.nodes[to].ep.handle_datagram(s.now, dst, src, &f);
    }
    assert_eq!(
        s.nodes[1].ep.stats().integrity_failures - integrity_before,
        (req.len() - 44) as u64
    );
    assert_eq!(s.nodes[1].ep.ike_sas(), before);
    // A replay of the already-answered request gets the cached response,
    // and changes nothing.
    let replays = s.nodes[1].ep.stats().replayed_responses;
    s.nodes[to].ep.handle_datagram(s.now, dst, src, &req);
    assert_eq!(s.nodes[1].ep.stats().replayed_responses, replays + 1);
    assert_eq!(s.nodes[1].ep.ike_sas(), before);
    delete_everything(&mut s);
}

#[test]
fn unknown_critical_payload_is_rejected_and_noncritical_skipped() {
    let (a, b) = configs(IKE_1, "aes256gcm16");
    let mut s = Sim::new(a, b, 81, LinkModel::clean());
    // Hand-made IKE_SA_INIT with an unknown critical payload.
    let msg = proto::Message {
        header: proto::Header {
            spi_i: 42,
            spi_r: 0,
            next_payload: proto::PayloadType::NONE,
            version: 0x20,
            exchange: ExchangeType::IKE_SA_INIT,
            flags: proto::flags::INITIATOR,
            message_id: 0,
            length: 0,
        },
        payloads: vec![Payload::Unknown {
            ty: proto::PayloadType(200),
            critical: true,
            body: vec![1],
        }],
    };
    let (b_addr, a_addr) = (
        sim::sock(ip(sim::B_ADDR), 500),
        sim::sock(ip(sim::A_ADDR), 500),
    );
    s.nodes[1]
        .ep
        .handle_datagram(s.now, b_addr, a_addr, &msg.encode());
    let t = s.nodes[1].ep.poll_transmit().expect("answer");
    let answer = proto::Message::decode(&t.payload).unwrap();
    let n = answer.notifies().next().expect("notify");
    assert_eq!(
        (n.ty, n.data.as_slice()),
        (NotifyType::UNSUPPORTED_CRITICAL_PAYLOAD, &[200u8][..])
    );
    assert_eq!(s.nodes[1].ep.ike_sa_count(), 0);
}

#[test]
fn initial_contact_from_a_restarted_peer_clears_its_stale_sas() {
    let mut s = up(91, LinkModel::clean());
    let stale_b = sa_id(&s, 1);
    let stale_children: Vec<u32> = s.nodes[1].kernel.keys().copied().collect();
    // A restarts: a fresh endpoint that knows nothing of the old SA.
    let (a, _) = configs(IKE_1, "aes256gcm16");
    s.nodes[0].ep = mobike_agent::engine::Endpoint::with_entropy(
        a,
        Box::new(sim::SeededEntropy(sim::Rng::new(4242))),
    )
    .unwrap();
    s.nodes[0].kernel.clear();
    s.initiate();
    assert!(s.run_until(Duration::from_secs(10), |s| s.nodes.iter().all(
        |n| n.ep.ike_sa_count() == 1 && n.established() == 1 && n.kernel.len() == 1
    )));
    assert_ne!(sa_id(&s, 1), stale_b);
    assert!(
        !s.nodes[1].kernel.keys().any(|k| stale_children.contains(k)),
        "stale CHILD_SA removed"
    );
    assert!(s.nodes[1].events.contains(&Event::IkeSaDeleted {
        sa: stale_b,
        reason: DeleteReason::PeerRestarted
    }));
    assert!(s.children_pair_up());
    delete_everything(&mut s);
}
