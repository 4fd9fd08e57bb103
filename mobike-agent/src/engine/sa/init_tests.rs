//! IKE_SA_INIT under attack and under refusal: the responder's half-open
//! limits (total, per source, a replay that cannot keep an SA), nonce
//! lengths (RFC 7296 §2.10, §3.9), and the initiator that does not act on
//! an unauthenticated error notify at once (§2.21.1).

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use super::test_pair::{A, b_text, endpoint, shuttle};
use crate::config_file::FileConfig;
use crate::engine::{Command, DeleteReason, Endpoint, EndpointConfig, Event, Transmit};
use crate::proto::{
    self, ExchangeType, Header, Message, Notify, NotifyType, Payload, PayloadType, flags,
};

/// B answering anyone (no `remote_addrs`), its settings changed by `f`.
fn responder(f: impl FnOnce(&mut EndpointConfig)) -> Endpoint {
    let text = b_text().replace("remote_addrs = [\"192.0.2.1\"]\n", "");
    let mut cfg = FileConfig::parse(&text)
        .unwrap()
        .to_agent_config()
        .unwrap()
        .endpoint;
    f(&mut cfg);
    Endpoint::new(cfg).unwrap()
}

/// `n` IKE_SA_INIT requests of A, each of a new IKE SA (its own SPIi).
fn init_requests(a: &mut Endpoint, now: Instant, n: usize) -> Vec<Transmit> {
    for _ in 0..n {
        a.handle_command(
            now,
            Command::Initiate {
                connection: "ab".into(),
                local: None,
            },
        )
        .unwrap();
    }
    let out: Vec<Transmit> = std::iter::from_fn(|| a.poll_transmit()).collect();
    assert_eq!(out.len(), n);
    out
}

fn source(i: u8) -> SocketAddr {
    SocketAddr::from(([198, 51, 100, i], 500))
}

fn b_addr() -> SocketAddr {
    "192.0.2.2:500".parse().unwrap()
}

/// What B sent, decoded.
fn answers(b: &mut Endpoint) -> Vec<Message> {
    std::iter::from_fn(|| b.poll_transmit())
        .map(|t| Message::decode(&t.payload).unwrap())
        .collect()
}

#[test]
fn half_open_sas_are_capped_in_all_and_per_source() {
    let now = Instant::now();
    let mut a = endpoint(A);
    let mut b = responder(|c| {
        c.cookie_threshold = 100;
        c.half_open_limit = 4;
        c.half_open_per_source = 2;
    });
    let reqs = init_requests(&mut a, now, 7);
    for r in &reqs[0..3] {
        b.handle_datagram(now, b_addr(), source(1), &r.payload);
    }
    assert_eq!(b.half_open_from(source(1).ip()), 2);
    assert_eq!(b.stats().half_open_source_drops, 1);
    assert_eq!(answers(&mut b).len(), 2, "the third is dropped unanswered");
    for r in &reqs[3..5] {
        b.handle_datagram(now, b_addr(), source(2), &r.payload);
    }
    b.handle_datagram(now, b_addr(), source(3), &reqs[5].payload);
    assert_eq!(b.half_open_count(), 4);
    assert_eq!(b.half_open_from(source(3).ip()), 0);
    assert_eq!(b.stats().half_open_limit_drops, 1);
    assert!(b.indexes_agree());
    // They expire; then there is room again.
    let later = now + Duration::from_secs(31);
    b.handle_timeout(later);
    assert_eq!(b.half_open_count(), 0);
    assert_eq!(b.init_index_len(), 0);
    b.handle_datagram(later, b_addr(), source(1), &reqs[6].payload);
    assert_eq!(b.half_open_from(source(1).ip()), 1);
    assert!(b.indexes_agree());
}

#[test]
fn cookies_are_demanded_before_the_per_source_limit_counts() {
    // Past the cookie threshold, a request without the cookie is answered
    // with a cookie demand and takes no share of its source's limit.
    let now = Instant::now();
    let mut a = endpoint(A);
    let mut b = responder(|c| {
        c.cookie_threshold = 0;
        c.half_open_per_source = 1;
    });
    let reqs = init_requests(&mut a, now, 3);
    for r in &reqs {
        b.handle_datagram(now, b_addr(), source(1), &r.payload);
    }
    assert_eq!(b.stats().cookies_sent, 3);
    assert_eq!(b.stats().half_open_source_drops, 0);
    assert_eq!(b.half_open_count(), 0);
}

#[test]
fn a_replayed_ike_sa_init_does_not_extend_the_half_open_timeout() {
    let now = Instant::now();
    let mut a = endpoint(A);
    let mut b = responder(|_| {});
    let req = init_requests(&mut a, now, 1).remove(0);
    b.handle_datagram(now, b_addr(), source(1), &req.payload);
    let first = b.ike_sas()[0].id;
    let mut alive = Vec::new();
    for s in [10, 20, 29, 31, 40] {
        let t = now + Duration::from_secs(s);
        b.handle_timeout(t);
        b.handle_datagram(t, b_addr(), source(1), &req.payload);
        alive.push(b.ike_sas().iter().any(|i| i.id == first));
    }
    // 30 s from our first answer, whatever was replayed meanwhile; a copy
    // after that makes a new half-open SA (the old one is gone).
    assert_eq!(alive, [true, true, true, false, false]);
    // At 10, 20 and 29 s from the first SA, at 40 s from the one the copy
    // at 31 s made.
    assert_eq!(b.stats().replayed_responses, 4);
    assert!(b.indexes_agree());
}

/// A's IKE_SA_INIT with its nonce replaced by `len` octets.
fn with_nonce(req: &Transmit, len: usize) -> Vec<u8> {
    let mut m = Message::decode(&req.payload).unwrap();
    for p in &mut m.payloads {
        if let Payload::Nonce(n) = p {
            *n = vec![7; len];
        }
    }
    m.header.length = 0;
    m.encode()
}

fn refused_with(b: &mut Endpoint) -> Vec<NotifyType> {
    answers(b)
        .iter()
        .flat_map(|m| {
            proto::notifies(&m.payloads)
                .map(|n| n.ty)
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn a_nonce_outside_16_to_256_octets_is_refused() {
    let now = Instant::now();
    let mut a = endpoint(A);
    let mut b = responder(|_| {});
    let reqs = init_requests(&mut a, now, 3);
    b.handle_datagram(now, b_addr(), source(1), &with_nonce(&reqs[0], 15));
    b.handle_datagram(now, b_addr(), source(2), &with_nonce(&reqs[1], 257));
    // The decoder refuses them (§3.9): dropped as malformed, no answer.
    assert_eq!(refused_with(&mut b), []);
    assert_eq!(b.stats().malformed, 2);
    assert_eq!(b.half_open_count(), 0);
    // 16 octets are enough for PRF_HMAC_SHA2_256 (half its 32).
    b.handle_datagram(now, b_addr(), source(3), &with_nonce(&reqs[2], 16));
    assert_eq!(b.half_open_count(), 1);
}

#[test]
fn a_nonce_shorter_than_half_the_prf_key_is_refused() {
    let text = A.replace("prfsha256", "prfsha512");
    let now = Instant::now();
    let mut a = endpoint(&text);
    let mut b = responder(|c| {
        for conn in &mut c.connections {
            conn.ike_proposals =
                vec![crate::proposal::IkeProposal::parse("aes256gcm16-prfsha512-x25519").unwrap()];
        }
    });
    let reqs = init_requests(&mut a, now, 2);
    // HMAC-SHA-512 takes a 64-octet key: 32 octets of nonce at least.
    b.handle_datagram(now, b_addr(), source(1), &with_nonce(&reqs[0], 31));
    assert_eq!(refused_with(&mut b), [NotifyType::INVALID_SYNTAX]);
    assert_eq!(b.stats().bad_nonces, 1);
    assert_eq!(b.half_open_count(), 0);
    b.handle_datagram(now, b_addr(), source(1), &with_nonce(&reqs[1], 32));
    assert_eq!(b.half_open_count(), 1);
}

/// An unauthenticated IKE_SA_INIT answer to `req` carrying only `ty`.
fn error_answer(req: &Transmit, ty: NotifyType) -> Vec<u8> {
    let h = Message::decode(&req.payload).unwrap().header;
    Message {
        header: Header {
            spi_i: h.spi_i,
            spi_r: 0,
            next_payload: PayloadType::NONE,
            version: 0x20,
            exchange: ExchangeType::IKE_SA_INIT,
            flags: flags::RESPONSE,
            message_id: 0,
            length: 0,
        },
        payloads: vec![Payload::Notify(Notify::new(ty, vec![]))],
    }
    .encode()
}

fn deleted(a: &mut Endpoint) -> Vec<DeleteReason> {
    std::iter::from_fn(|| a.poll_event())
        .filter_map(|e| match e {
            Event::IkeSaDeleted { reason, .. } => Some(reason),
            _ => None,
        })
        .collect()
}

#[test]
fn an_error_notify_in_the_ike_sa_init_answer_does_not_end_the_attempt_at_once() {
    let now = Instant::now();
    let mut a = endpoint(A);
    let mut b = endpoint(&b_text());
    let req = init_requests(&mut a, now, 1).remove(0);
    // Someone on the path answers first with NO_PROPOSAL_CHOSEN.
    a.handle_datagram(
        now,
        req.local,
        req.remote,
        &error_answer(&req, NotifyType::NO_PROPOSAL_CHOSEN),
    );
    assert_eq!(a.ike_sa_count(), 1);
    assert_eq!(deleted(&mut a), []);
    assert_eq!(a.stats().init_error_notifies, 1);
    // The real responder's answer follows and is taken.
    b.handle_datagram(now, req.remote, req.local, &req.payload);
    shuttle(now, &mut b, &mut a);
    assert_eq!(a.ike_sas()[0].state, "established");
}

#[test]
fn an_attempt_that_drew_only_an_error_notify_ends_with_it_and_is_retried() {
    // dpd_action = restart is about established SAs; an attempt's failure
    // is retried as keyingtries allow (0: for ever).
    let text = A.replace("mobike = true", "mobike = true\nkeyingtries = 0");
    let now = Instant::now();
    let mut a = endpoint(&text);
    let req = init_requests(&mut a, now, 1).remove(0);
    let refusal = error_answer(&req, NotifyType::NO_PROPOSAL_CHOSEN);
    let mut t = now;
    a.handle_datagram(t, req.local, req.remote, &refusal);
    let mut reasons = Vec::new();
    let mut restarted = false;
    // Retransmissions run out (the default timers: 2 s doubling, 5 tries).
    for _ in 0..20 {
        let Some(next) = a.poll_timeout() else { break };
        t = next;
        a.handle_timeout(t);
        while a.poll_transmit().is_some() {}
        for e in std::iter::from_fn(|| a.poll_event()) {
            match e {
                Event::IkeSaDeleted { reason, .. } => reasons.push(reason),
                Event::RestartDue { .. } => restarted = true,
                _ => {}
            }
        }
        if restarted {
            break;
        }
    }
    assert_eq!(
        reasons,
        [DeleteReason::PeerError(NotifyType::NO_PROPOSAL_CHOSEN)]
    );
    assert!(
        t >= now + Duration::from_secs(60),
        "after the retransmissions"
    );
    assert!(restarted, "the connection is to be tried again");
}

#[test]
fn child_sa_reqids_come_from_the_agents_own_range() {
    let now = Instant::now();
    let mut a = endpoint(A);
    let mut b = endpoint(&b_text());
    a.handle_command(
        now,
        Command::Initiate {
            connection: "ab".into(),
            local: None,
        },
    )
    .unwrap();
    shuttle(now, &mut a, &mut b);
    for e in [&mut a, &mut b] {
        let reqids: Vec<u32> = std::iter::from_fn(|| e.poll_kernel_action())
            .filter_map(|k| match k {
                crate::engine::KernelAction::InstallChildSa(i) => Some(i.reqid),
                _ => None,
            })
            .collect();
        assert_eq!(reqids, [*crate::engine::REQIDS.start()]);
    }
}

/// A's answer to B's CREATE_CHILD_SA carrying only a nonce of `len`
/// octets, on an IKE SA with PRF_HMAC_SHA2_512: the notifies in it.
fn create_child_answer_to_nonce_of(len: usize) -> Vec<NotifyType> {
    let now = Instant::now();
    let mut a = endpoint(&A.replace("prfsha256", "prfsha512"));
    let mut b = endpoint(&b_text().replace("prfsha256", "prfsha512"));
    a.handle_command(
        now,
        Command::Initiate {
            connection: "ab".into(),
            local: None,
        },
    )
    .unwrap();
    shuttle(now, &mut a, &mut b);
    assert_eq!(a.ike_sas()[0].state, "established");
    let path = b.ike_sas()[0].path;
    let b_sa = b.sas.values_mut().next().unwrap();
    let id = b_sa.window.next_msg_id;
    let h = b_sa.header(ExchangeType::CREATE_CHILD_SA, id, false);
    // A whole request for a new CHILD_SA (§1.3.1), B's side of the selectors.
    let esp = crate::proposal::EspProposal::parse("aes256gcm16").unwrap();
    let ts = |t: &str| crate::engine::parse_ts(t).unwrap();
    let payloads = [
        Payload::Sa(vec![esp.to_wire(1, 0x4242_4242, false)]),
        Payload::Nonce(vec![5; len]),
        Payload::TsI(vec![ts("10.2.0.0/24")]),
        Payload::TsR(vec![ts("10.1.0.0/24")]),
    ];
    let req = b_sa.seal(h, &payloads).unwrap();
    let d = [&[0u8; 4][..], &req].concat();
    a.handle_datagram(now, path.remote, path.local, &d);
    let answer = a.poll_transmit().expect("an answer");
    let bytes = &answer.payload[4..];
    let msg = Message::decode(bytes).unwrap();
    let b_sa = b.sas.values().next().unwrap();
    let payloads = b_sa.open(bytes, &msg).expect("opens");
    proto::notifies(&payloads).map(|n| n.ty).collect()
}

#[test]
fn a_create_child_sa_nonce_shorter_than_half_the_prf_key_is_refused() {
    assert_eq!(
        create_child_answer_to_nonce_of(24),
        [NotifyType::INVALID_SYNTAX]
    );
    // 32 octets are enough: the CHILD_SA is made.
    assert_eq!(create_child_answer_to_nonce_of(32), []);
}
