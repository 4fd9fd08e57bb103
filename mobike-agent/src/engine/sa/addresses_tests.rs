use super::*;

fn n(ty: NotifyType, data: Vec<u8>) -> Payload {
    notify(ty, data)
}

#[test]
fn lists_parse_and_bad_ones_are_refused() {
    let a4: IpAddr = "192.0.2.7".parse().unwrap();
    let a6: IpAddr = "2001:db8::7".parse().unwrap();
    let good = list_payloads(&[a4, a6], true);
    assert_eq!(parse_list(&good), Ok(Some(vec![a4, a6])));
    assert_eq!(parse_list(&[]), Ok(None));
    let none = list_payloads(&[], true);
    assert_eq!(
        none,
        vec![n(NotifyType::NO_ADDITIONAL_ADDRESSES, vec![])],
        "§3.6: NO_ADDITIONAL_ADDRESSES in INFORMATIONAL"
    );
    assert_eq!(parse_list(&none), Ok(Some(vec![])));
    assert!(
        list_payloads(&[], false).is_empty(),
        "§3.4: nothing in IKE_AUTH"
    );
    for bad in [
        vec![n(NotifyType::ADDITIONAL_IP4_ADDRESS, vec![192, 0, 2])],
        vec![n(NotifyType::ADDITIONAL_IP4_ADDRESS, vec![0; 16])],
        vec![n(NotifyType::ADDITIONAL_IP6_ADDRESS, vec![1; 4])],
        vec![n(NotifyType::ADDITIONAL_IP4_ADDRESS, vec![0; 4])],
        vec![n(NotifyType::NO_ADDITIONAL_ADDRESSES, vec![1])],
        [none.clone(), good.clone()].concat(),
    ] {
        assert!(parse_list(&bad).is_err(), "{bad:?}");
    }
}

// Two endpoints talking directly: lists in protected messages the engine
// itself would never send, sealed with the sender's keys.

mod protected {
    use std::{
        net::{IpAddr, SocketAddr},
        time::Instant,
    };

    use crate::engine::{
        ChildConfig, Command, ConnectionConfig, Endpoint, EndpointConfig, Event, Mode, Timers,
        parse_identity, parse_ts,
    };
    use crate::proposal::{EspProposal, IkeProposal, parse_list};
    use crate::proto::{ExchangeType, Notify, NotifyType, Payload};

    use super::n;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn conn(local: Option<&str>, remote: Option<&str>, me: &str, peer: &str) -> ConnectionConfig {
        let sock = |a: &str| SocketAddr::new(ip(a), 500);
        ConnectionConfig {
            name: "ab".into(),
            local_addr: local.map(sock),
            remote_addr: remote.map(sock),
            alt_local_addrs: vec![],
            alt_remote_addrs: vec![],
            local_id: parse_identity(me).unwrap(),
            remote_id: parse_identity(peer).unwrap(),
            psk: b"unit-psk-0123456789".to_vec(),
            ike_proposals: parse_list("aes256gcm16-prfsha256-x25519", IkeProposal::parse).unwrap(),
            mobike: true,
            mobike_verify: Default::default(),
            no_nats: false,
            local_auth: crate::engine::LocalAuth::Psk,
            remote_auth: crate::engine::RemoteAuth::Psk,
            children: vec![ChildConfig {
                name: "net".into(),
                local_ts: vec![parse_ts("10.1.0.0/16").unwrap()],
                remote_ts: vec![parse_ts("10.1.0.0/16").unwrap()],
                esp_proposals: parse_list("aes256gcm16", EspProposal::parse).unwrap(),
                mode: Mode::Tunnel,
                rekey_time: None,
                rand_time: None,
                limits: Default::default(),
            }],
            timers: Timers {
                dpd_delay: None,
                ike_rekey_time: None,
                ike_rand_time: None,
                ..Timers::default()
            },
            recovery: Default::default(),
            vips: vec![],
            pools: vec![],
        }
    }

    /// Delivers every datagram both ways until nothing moves.
    fn pump(eps: &mut [Endpoint; 2], now: Instant) {
        loop {
            let mut moved = false;
            for i in 0..2 {
                while let Some(t) = eps[i].poll_transmit() {
                    moved = true;
                    eps[1 - i].handle_datagram(now, t.remote, t.local, &t.payload);
                }
            }
            if !moved {
                return;
            }
        }
    }

    /// A (initiator, 192.0.2.1) and B (192.0.2.2) with one IKE SA.
    fn established() -> ([Endpoint; 2], Instant) {
        let cfg = |c| EndpointConfig {
            connections: vec![c],
            ..EndpointConfig::default()
        };
        let a = cfg(conn(
            Some("192.0.2.1"),
            Some("192.0.2.2"),
            "a.test",
            "b.test",
        ));
        let b = cfg(conn(None, None, "b.test", "a.test"));
        let mut eps = [Endpoint::new(a).unwrap(), Endpoint::new(b).unwrap()];
        let now = Instant::now();
        eps[0]
            .handle_command(
                now,
                Command::Initiate {
                    connection: "ab".into(),
                    local: None,
                },
            )
            .unwrap();
        pump(&mut eps, now);
        for e in &eps {
            assert_eq!(e.ike_sas()[0].state, "established");
            assert!(e.ike_sas()[0].mobike);
        }
        (eps, now)
    }

    /// `from`'s IKE SA seals `payloads` as a request (or, with `answer`, as
    /// the response to that message ID) and `to` takes it; `to`'s answer
    /// is dropped.
    fn inject(
        eps: &mut [Endpoint; 2],
        now: Instant,
        from: usize,
        exchange: ExchangeType,
        answer: Option<u32>,
        payloads: &[Payload],
    ) {
        let id = eps[from].ike_sas()[0].id;
        let sa = eps[from].sas.get_mut(&id).unwrap();
        let msg_id = answer.unwrap_or(sa.window.next_msg_id);
        if answer.is_none() {
            // The peer expects the next request to use the next ID.
            sa.window.next_msg_id += 1;
        }
        let path = sa.path;
        let h = sa.header(exchange, msg_id, answer.is_some());
        let mut bytes = sa.seal(h, payloads).unwrap();
        if path.local.port() == crate::proto::NAT_T_PORT {
            bytes.splice(0..0, crate::proto::NON_ESP_MARKER);
        }
        eps[1 - from].handle_datagram(now, path.remote, path.local, &bytes);
        while eps[1 - from].poll_transmit().is_some() {}
    }

    fn peer_events(e: &mut Endpoint) -> Vec<Vec<IpAddr>> {
        std::iter::from_fn(|| e.poll_event())
            .filter_map(|ev| match ev {
                Event::PeerAddresses { addrs, .. } => Some(addrs),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_good_list_in_an_informational_request_is_taken() {
        let (mut eps, now) = established();
        let a2 = ip("198.51.100.1");
        peer_events(&mut eps[1]);
        inject(
            &mut eps,
            now,
            0,
            ExchangeType::INFORMATIONAL,
            None,
            &[Payload::Notify(Notify::for_additional_address(a2))],
        );
        assert_eq!(eps[1].ike_sas()[0].peer_addrs, vec![a2]);
        assert_eq!(peer_events(&mut eps[1]), vec![vec![a2]]);
        assert_eq!(eps[1].stats().address_lists_refused, 0);
    }

    #[test]
    fn bad_lengths_are_refused_counted_and_change_nothing() {
        let (mut eps, now) = established();
        let a2 = ip("198.51.100.1");
        inject(
            &mut eps,
            now,
            0,
            ExchangeType::INFORMATIONAL,
            None,
            &[Payload::Notify(Notify::for_additional_address(a2))],
        );
        peer_events(&mut eps[1]);
        let bad = [
            n(NotifyType::ADDITIONAL_IP4_ADDRESS, vec![198, 51, 100]),
            n(NotifyType::ADDITIONAL_IP6_ADDRESS, vec![0x20; 15]),
            n(NotifyType::NO_ADDITIONAL_ADDRESSES, vec![0]),
        ];
        for (k, b) in bad.into_iter().enumerate() {
            let before = eps[1].ike_sas()[0].next_peer_request_id;
            inject(&mut eps, now, 0, ExchangeType::INFORMATIONAL, None, &[b]);
            let info = &eps[1].ike_sas()[0];
            // Answered (the exchange goes on), the list left as it was.
            assert_eq!(info.next_peer_request_id, before + 1);
            assert_eq!(info.peer_addrs, vec![a2]);
            assert_eq!(eps[1].stats().address_lists_refused, k as u64 + 1);
        }
        assert!(peer_events(&mut eps[1]).is_empty());
    }

    #[test]
    fn lists_in_the_wrong_exchange_are_refused_and_counted() {
        let (mut eps, now) = established();
        let list = [Payload::Notify(Notify::for_additional_address(ip(
            "198.51.100.1",
        )))];
        peer_events(&mut eps[1]);
        // In CREATE_CHILD_SA.
        inject(&mut eps, now, 0, ExchangeType::CREATE_CHILD_SA, None, &list);
        assert_eq!(eps[1].stats().address_lists_refused, 1);
        assert!(eps[1].ike_sas()[0].peer_addrs.is_empty());
        // In the answer to B's own INFORMATIONAL request.
        let b_sa = eps[1].ike_sas()[0].id;
        eps[1].handle_command(now, Command::Dpd(b_sa)).unwrap();
        let req_id = eps[1].ike_sas()[0].next_request_id - 1;
        while eps[1].poll_transmit().is_some() {}
        inject(
            &mut eps,
            now,
            0,
            ExchangeType::INFORMATIONAL,
            Some(req_id),
            &list,
        );
        assert_eq!(eps[1].stats().address_lists_refused, 2);
        assert!(eps[1].ike_sas()[0].peer_addrs.is_empty());
        assert!(peer_events(&mut eps[1]).is_empty());
        // The answer itself was taken: B's request is done.
        assert!(!eps[1].ike_sas()[0].updating_addresses);
        assert_eq!(eps[1].ike_sas()[0].state, "established");
    }
}
