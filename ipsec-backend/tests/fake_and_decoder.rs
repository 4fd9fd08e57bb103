//! The in-memory [`FakeBackend`] keeps the kernel's invariants (unique SPI
//! per destination/protocol, migrating a missing SA fails, counters survive
//! a move, events), and the decoder never panics on arbitrary or truncated
//! input.

use std::net::IpAddr;

use futures::StreamExt;
use ipsec_backend::netlink::NlMessage;
use ipsec_backend::types::{Crypto, Dir, Encap, OuterPair, unhex};
use ipsec_backend::{ChildSaBackend, ChildSaSpec, Error, FakeBackend, SelectorPair, XfrmEvent};
use proptest::prelude::*;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

fn spec(spi_out: u32, spi_in: u32, reqid: u32, remote_ts: &str) -> ChildSaSpec {
    ChildSaSpec::tunnel(
        OuterPair {
            local: ip("192.0.2.1"),
            remote: ip("192.0.2.2"),
        },
        vec![SelectorPair::new(
            "10.1.0.0/24".parse().expect("p"),
            remote_ts.parse().expect("p"),
        )],
        reqid,
        (spi_out, spi_in),
        (Crypto::aes_gcm(&[1; 20]), Crypto::aes_gcm(&[2; 20])),
    )
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt")
}

#[test]
fn fake_refuses_a_second_sa_with_the_same_spi_and_destination() {
    rt().block_on(async {
        let f = FakeBackend::new();
        let b: &dyn ChildSaBackend = &f;
        b.install_child_sa(&spec(0x100, 0x200, 1, "10.2.0.0/24"))
            .await
            .expect("first");
        // Same outbound SPI to the same peer, different selectors: EEXIST.
        let e = b
            .install_child_sa(&spec(0x100, 0x300, 2, "10.3.0.0/24"))
            .await
            .expect_err("duplicate SPI");
        assert!(matches!(e, Error::AddSa { spi: 0x100, .. }), "{e:?}");
        assert_eq!(e.errno(), Some(libc::EEXIST));
        assert_eq!(f.len(), (2, 3), "failed install must leave nothing behind");
        // Same SPI value towards a different destination is fine (the key is
        // (dst, proto, spi)): 0x200 is inbound to us, 0x200 outbound to peer.
        b.install_child_sa(&spec(0x200, 0x400, 3, "10.4.0.0/24"))
            .await
            .expect("same spi, other dst");
    });
}

#[test]
fn fake_migrate_moves_the_pair_keeps_counters_and_emits_events() {
    rt().block_on(async {
        let f = FakeBackend::new();
        let mut events = f.events().expect("events");
        let h = f
            .install_child_sa(&spec(0x100, 0x200, 1, "10.2.0.0/24"))
            .await
            .expect("install");
        f.record_traffic(&h, 1000, 500).expect("traffic");
        let before = f.counters(&h).await.expect("counters");
        let to = OuterPair {
            local: ip("2001:db8::1"),
            remote: ip("2001:db8::2"),
        };
        let enc = Some(Encap {
            sport: 4500,
            dport: 4500,
        });
        let h2 = f.migrate_child_sa(&h, to, enc).await.expect("migrate");
        assert_eq!((h2.outer, h2.encap), (to, enc));
        assert_eq!(f.counters(&h2).await.expect("counters"), before);
        let encaps = |f: &FakeBackend| {
            let mut e: Vec<_> = f.sas().iter().map(|s| s.encap).collect();
            e.sort_by_key(|e| e.map(|e| (e.sport, e.dport)));
            e
        };
        assert_eq!(encaps(&f), [enc, enc], "both SAs encapsulated");
        // Leaving the NAT, on the same addresses: no encapsulation given
        // is none after the move.
        let h3 = f.migrate_child_sa(&h2, to, None).await.expect("plain ESP");
        assert_eq!((h3.outer, h3.encap), (to, None));
        assert_eq!(encaps(&f), [None, None]);
        assert_eq!(f.counters(&h3).await.expect("counters"), before);
        let h2 = f
            .migrate_child_sa(&h3, to, enc)
            .await
            .expect("into a NAT again");
        // The old handle names nothing now.
        let e = f.migrate_child_sa(&h, to, None).await.expect_err("stale");
        assert!(matches!(e, Error::Migrate { .. }), "{e:?}");
        assert_eq!(e.errno(), Some(libc::ENOENT));
        assert!(f.counters(&h).await.is_err());

        let mut migrates = Vec::new();
        while let Some(Ok(ev)) = events.next().await {
            if let XfrmEvent::Migrate { dir, entries, .. } = ev {
                migrates.push((dir, entries[0].new_dst));
            }
            if migrates.len() == 3 {
                break;
            }
        }
        assert_eq!(
            migrates,
            vec![
                (Some(Dir::Out), ip("2001:db8::2")),
                (Some(Dir::In), ip("2001:db8::1")),
                (Some(Dir::Fwd), ip("2001:db8::1"))
            ]
        );
        f.delete_child_sa(&h2).await.expect("delete");
        assert!(f.is_empty());
        assert!(f.delete_child_sa(&h2).await.is_err(), "double delete");
    });
}

#[test]
fn fake_migrate_of_a_missing_sa_is_an_error() {
    rt().block_on(async {
        let f = FakeBackend::new();
        let h = f
            .install_child_sa(&spec(0x100, 0x200, 1, "10.2.0.0/24"))
            .await
            .expect("install");
        f.delete_child_sa(&h).await.expect("delete");
        let to = OuterPair {
            local: ip("198.51.100.1"),
            remote: ip("198.51.100.2"),
        };
        let e = f.migrate_child_sa(&h, to, None).await.expect_err("missing");
        assert!(matches!(e, Error::Migrate { dir: Dir::Out, .. }), "{e:?}");
    });
}

/// The SAs held as (destination, SPI), sorted.
fn sa_keys(f: &FakeBackend) -> Vec<(IpAddr, u32)> {
    let mut v: Vec<_> = f
        .sas()
        .iter()
        .map(|s| (s.dst.expect("dst"), s.spi))
        .collect();
    v.sort();
    v
}

#[test]
fn fake_inbound_copy_takes_over_on_the_move_to_its_address() {
    rt().block_on(async {
        let f = FakeBackend::new();
        let h = f
            .install_child_sa(&spec(0x100, 0x200, 1, "10.2.0.0/24"))
            .await
            .expect("install");
        f.record_traffic(&h, 1000, 500).expect("traffic");
        let before = f.counters(&h).await.expect("counters");
        // Make-before-break: the inbound SA at the new address too.
        let new_local = ip("198.51.100.1");
        let h1 = f.add_inbound_copy(&h, new_local).await.expect("copy");
        assert_eq!(h1.inbound_copy, Some(new_local));
        assert_eq!(
            sa_keys(&f),
            [
                (ip("192.0.2.1"), 0x200),
                (ip("192.0.2.2"), 0x100),
                (new_local, 0x200)
            ]
        );
        // A second copy at the same address is refused as the kernel would.
        let e = f
            .add_inbound_copy(&h, new_local)
            .await
            .expect_err("copy twice");
        assert_eq!(e.errno(), Some(libc::EEXIST), "{e:?}");
        // The move to the copy's address: the copy becomes the inbound SA,
        // the old one goes, counters come along.
        let to = OuterPair {
            local: new_local,
            remote: ip("192.0.2.2"),
        };
        let h2 = f.migrate_child_sa(&h1, to, None).await.expect("migrate");
        assert_eq!((h2.outer, h2.inbound_copy), (to, None));
        assert_eq!(sa_keys(&f), [(ip("192.0.2.2"), 0x100), (new_local, 0x200)]);
        assert_eq!(f.counters(&h2).await.expect("counters"), before);
        // A copy elsewhere is removed by a move to another pair.
        let h3 = f
            .add_inbound_copy(&h2, ip("203.0.113.1"))
            .await
            .expect("copy");
        let back = OuterPair {
            local: ip("192.0.2.1"),
            remote: ip("192.0.2.2"),
        };
        let h4 = f.migrate_child_sa(&h3, back, None).await.expect("back");
        assert_eq!(
            sa_keys(&f),
            [(ip("192.0.2.1"), 0x200), (ip("192.0.2.2"), 0x100)]
        );
        // An abandoned move: the copy goes, the pair stays.
        let h5 = f.add_inbound_copy(&h4, new_local).await.expect("copy");
        let h6 = f.remove_inbound_copy(&h5).await.expect("remove");
        assert_eq!(h6, h4);
        assert_eq!(f.len(), (2, 3));
        // Delete takes a copy along.
        let h7 = f.add_inbound_copy(&h6, new_local).await.expect("copy");
        f.delete_child_sa(&h7).await.expect("delete");
        assert!(f.is_empty());
    });
}

fn golden_messages() -> Vec<Vec<u8>> {
    let dir = format!("{}/tests/golden", env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("dir") {
        let p = e.expect("entry").path();
        if p.extension().is_some_and(|x| x == "hex") {
            let text = std::fs::read_to_string(&p).expect("read");
            out.extend(
                text.lines()
                    .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
                    .map(|l| unhex(l.trim()).expect("hex")),
            );
        }
    }
    out
}

#[test]
fn every_truncation_of_a_golden_message_is_an_error_not_a_panic() {
    for raw in golden_messages() {
        for cut in 0..raw.len() {
            // The header still claims the full length: must be rejected.
            assert!(NlMessage::parse_one(&raw[..cut]).is_err(), "cut {cut}");
        }
    }
}

proptest! {
    #[test]
    fn decoder_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = NlMessage::parse_all(&bytes);
    }

    #[test]
    fn decoder_never_panics_on_mutated_golden_messages(idx in 0usize..64, pos in 0usize..2048, val in any::<u8>()) {
        let msgs = golden_messages();
        let mut raw = msgs[idx % msgs.len()].clone();
        let p = pos % raw.len();
        raw[p] = val;
        if let Ok(msgs) = NlMessage::parse_all(&raw) {
            // Whatever parses must re-emit to something that parses the same
            // (emit normalizes padding, so compare bodies, then require the
            // emitted bytes to be a fixed point).
            for m in msgs {
                let bytes = m.emit();
                let again = NlMessage::parse_one(&bytes).map(|x| x.0);
                prop_assert_eq!(again.as_ref().map(|a| &a.body), Ok(&m.body));
                prop_assert_eq!(again.map(|a| a.emit()), Ok(bytes));
            }
        }
    }
}

/// Messages with odd padding or lengths (from the fuzz target): each must
/// parse, and emitting must be a fixed point.
#[test]
fn fuzz_findings_parse_and_re_emit_stably() {
    let cases = [
        // FLUSHSA with 3 padding bytes and no attributes (kept raw).
        "140000001c0000d88d00d88d09100000ff000040",
        // GETSA whose last attribute lacks its alignment padding.
        "3e00000012000100db8d096b00000000c0000202000000000000000000000000000010010200320016000f0000000000000000003e000000000000000000",
    ];
    for c in cases {
        let raw = unhex(c).expect("hex");
        let (m, _) = NlMessage::parse_one(&raw).expect("parses");
        let bytes = m.emit();
        let (again, _) = NlMessage::parse_one(&bytes).expect("re-parses");
        assert_eq!(again.body, m.body);
        assert_eq!(again.emit(), bytes);
    }
    // XFRMA_ENCAP longer than struct xfrm_encap_tmpl is kept raw, not cut.
    let mut b = Vec::new();
    ipsec_backend::codec::emit_attrs(&[ipsec_backend::codec::Attr::Other(4, vec![7; 40])], &mut b);
    let attrs = ipsec_backend::codec::parse_attrs(&b).expect("attrs");
    assert_eq!(
        attrs,
        vec![ipsec_backend::codec::Attr::Other(4, vec![7; 40])]
    );
}

#[test]
fn fake_migrate_onto_an_existing_sa_fails_like_the_kernel_and_moves_nothing() {
    rt().block_on(async {
        let f = FakeBackend::new();
        let h = f
            .install_child_sa(&spec(0x100, 0x200, 1, "10.2.0.0/24"))
            .await
            .expect("install");
        // A second pair already owns (2001:db8::2, esp, 0x100).
        let mut blocker = spec(0x100, 0x300, 2, "10.3.0.0/24");
        blocker.outer = OuterPair {
            local: ip("2001:db8::1"),
            remote: ip("2001:db8::2"),
        };
        f.install_child_sa(&blocker).await.expect("blocker");
        f.record_traffic(&h, 10, 10).expect("traffic");
        let e = f
            .migrate_child_sa(&h, blocker.outer, None)
            .await
            .expect_err("target SA exists");
        assert!(matches!(e, Error::Migrate { dir: Dir::Out, .. }), "{e:?}");
        assert_eq!(e.errno(), Some(libc::ENODATA));
        // The pair is where it was, with its counters.
        assert_eq!(
            f.counters(&h).await.expect("still there").outbound.bytes,
            10
        );
    });
}

#[test]
fn an_undecodable_message_costs_only_itself_in_a_datagram() {
    use ipsec_backend::netlink::Undecodable;
    let goods: Vec<Vec<u8>> = golden_messages()
        .into_iter()
        .filter(|m| NlMessage::parse_all(m).is_ok_and(|v| v.len() == 1))
        .take(2)
        .collect();
    assert_eq!(goods.len(), 2);
    // An XFRM_MSG_NEWSA whose body is 4 bytes of a 200-odd byte struct.
    let mut bad = Vec::new();
    bad.extend_from_slice(&20u32.to_ne_bytes());
    bad.extend_from_slice(&0x10u16.to_ne_bytes());
    bad.extend_from_slice(&0u16.to_ne_bytes());
    bad.extend_from_slice(&77u32.to_ne_bytes());
    bad.extend_from_slice(&0u32.to_ne_bytes());
    bad.extend_from_slice(&[0; 4]);
    let mut datagram = Vec::new();
    for part in [&goods[0], &bad, &goods[1]] {
        datagram.extend_from_slice(part);
        while datagram.len() % 4 != 0 {
            datagram.push(0);
        }
    }
    assert!(
        NlMessage::parse_all(&datagram).is_err(),
        "the strict parse fails"
    );
    let each = NlMessage::parse_each(&datagram);
    assert_eq!(each.len(), 3, "{each:?}");
    assert_eq!(
        each[0].as_ref().ok(),
        NlMessage::parse_all(&goods[0])
            .ok()
            .as_ref()
            .and_then(|v| v.first())
    );
    assert!(
        matches!(&each[1], Err(Undecodable { header: Some(h), .. }) if h.seq == 77 && h.ty == 0x10),
        "{:?}",
        each[1]
    );
    assert!(
        each[1]
            .as_ref()
            .unwrap_err()
            .to_string()
            .contains("type 16, seq 77")
    );
    assert_eq!(
        each[2].as_ref().ok(),
        NlMessage::parse_all(&goods[1])
            .ok()
            .as_ref()
            .and_then(|v| v.first())
    );
    // Broken framing (a length past the end) ends the datagram there.
    let mut cut = goods[0].clone();
    cut.extend_from_slice(&[0xff, 0xff, 0, 0, 0x10, 0, 0, 0]);
    let each = NlMessage::parse_each(&cut);
    assert_eq!(each.len(), 2);
    assert!(matches!(&each[1], Err(Undecodable { header: None, .. })));
}
