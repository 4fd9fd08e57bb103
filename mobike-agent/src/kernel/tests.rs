use super::*;
use crate::engine::EspSa;
use ipsec_backend::FakeBackend;

fn ts(a: &str, b: &str) -> TrafficSelector {
    TrafficSelector {
        ip_protocol: 0,
        start_port: 0,
        end_port: u16::MAX,
        start_addr: a.parse().unwrap(),
        end_addr: b.parse().unwrap(),
    }
}

fn install(reqid: u32, spi_in: u32, encap: Option<UdpEncap>) -> ChildSaInstall {
    ChildSaInstall {
        ike_sa: 7,
        name: "net".into(),
        reqid,
        mode: Mode::Tunnel,
        local: "192.0.2.1".parse().unwrap(),
        remote: "192.0.2.2".parse().unwrap(),
        encap,
        inbound: EspSa {
            spi: spi_in,
            aead: Aead::AesGcm16_256,
            key: vec![1; 36],
        },
        outbound: EspSa {
            spi: spi_in + 1,
            aead: Aead::ChaCha20Poly1305,
            key: vec![2; 36],
        },
        esn: false,
        local_ts: vec![ts("10.1.0.0", "10.1.0.255")],
        remote_ts: vec![ts("10.2.0.0", "10.2.0.255")],
        limits: ChildLimits::default(),
    }
}

#[test]
fn prefixes() {
    let p = |a, b| prefix_of(&ts(a, b), "local");
    assert_eq!(
        p("10.1.0.0", "10.1.0.255").unwrap().to_string(),
        "10.1.0.0/24"
    );
    assert_eq!(
        p("0.0.0.0", "255.255.255.255").unwrap().to_string(),
        "0.0.0.0/0"
    );
    assert_eq!(
        p("10.1.0.7", "10.1.0.7").unwrap().to_string(),
        "10.1.0.7/32"
    );
    assert_eq!(
        p("fd00::", "fd00::ffff:ffff").unwrap().to_string(),
        "fd00::/96"
    );
    assert_eq!(
        p("::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")
            .unwrap()
            .len,
        0
    );
    assert!(p("10.1.0.1", "10.1.0.255").is_err());
    assert!(p("10.1.0.0", "10.1.0.254").is_err());
    assert!(p("10.1.0.0", "fd00::").is_err());
    let mut t = ts("10.1.0.0", "10.1.0.255");
    t.ip_protocol = 17;
    assert!(prefix_of(&t, "local").is_err());
}

#[test]
fn spec_mapping() {
    let s = child_sa_spec(&install(
        3,
        0xc000_0001,
        Some(UdpEncap {
            local_port: 4500,
            remote_port: 31000,
        }),
    ))
    .unwrap();
    assert_eq!(s.reqid, 3);
    assert_eq!((s.spi_in, s.spi_out), (0xc000_0001, 0xc000_0002));
    assert_eq!(s.selectors.len(), 1);
    assert_eq!(s.selectors[0].local.to_string(), "10.1.0.0/24");
    assert_eq!(s.selectors[0].remote.to_string(), "10.2.0.0/24");
    assert_eq!(s.mode, XfrmMode::Tunnel);
    assert_eq!(s.crypto_in, Crypto::aes_gcm(&[1; 36]));
    assert_eq!(s.crypto_out, Crypto::chacha20_poly1305(&[2; 36]));
    assert_eq!(
        s.encap,
        Some(Encap {
            sport: 4500,
            dport: 31000
        })
    );
    assert_eq!(s.outer.local.to_string(), "192.0.2.1");
    let mut i = install(3, 1, None);
    i.remote_ts.clear();
    assert_eq!(child_sa_spec(&i), Err(MapError::NoSelector("remote")));
    let mut i = install(3, 1, None);
    i.local_ts.clear();
    assert_eq!(child_sa_spec(&i), Err(MapError::NoSelector("local")));
}

fn pairs(s: &ChildSaSpec) -> Vec<String> {
    s.selectors.iter().map(ToString::to_string).collect()
}

#[test]
fn two_by_two_selectors_make_four_pairs() {
    let mut i = install(3, 1, None);
    i.local_ts.push(ts("10.3.0.0", "10.3.0.255"));
    i.remote_ts.push(ts("10.4.0.0", "10.4.255.255"));
    let s = child_sa_spec(&i).unwrap();
    assert_eq!(
        pairs(&s),
        [
            "10.1.0.0/24 <-> 10.2.0.0/24",
            "10.1.0.0/24 <-> 10.4.0.0/16",
            "10.3.0.0/24 <-> 10.2.0.0/24",
            "10.3.0.0/24 <-> 10.4.0.0/16",
        ]
    );
    // The same selector twice (e.g. narrowed from two proposals) makes
    // one pair, not two colliding policy sets.
    let mut i = install(3, 1, None);
    i.remote_ts.push(ts("10.2.0.0", "10.2.0.255"));
    assert_eq!(child_sa_spec(&i).unwrap().selectors.len(), 1);
}

#[test]
fn pairs_of_different_families_are_skipped() {
    let mut i = install(3, 1, None);
    i.local_ts.push(ts("fd01::", "fd01::ffff:ffff:ffff:ffff"));
    i.remote_ts.insert(0, ts("fd02::", "fd02::ffff"));
    let s = child_sa_spec(&i).unwrap();
    assert_eq!(
        pairs(&s),
        ["10.1.0.0/24 <-> 10.2.0.0/24", "fd01::/64 <-> fd02::/112"]
    );
    // Only IPv4 on one side, only IPv6 on the other: nothing to install,
    // and the error names the selectors.
    let mut i = install(3, 1, None);
    i.remote_ts = vec![ts("fd02::", "fd02::ffff"), ts("fd03::", "fd03::ff")];
    let e = child_sa_spec(&i).unwrap_err();
    assert_eq!(
        e,
        MapError::NoPairOfOneFamily {
            local: vec!["10.1.0.0/24".parse().unwrap()],
            remote: vec!["fd02::/112".parse().unwrap(), "fd03::/120".parse().unwrap()],
        }
    );
    assert_eq!(
        e.to_string(),
        "no local and remote traffic selectors of one address family: \
             local [10.1.0.0/24], remote [fd02::/112, fd03::/120]"
    );
}

#[test]
fn one_selector_that_is_no_prefix_refuses_the_whole_list() {
    let mut i = install(3, 1, None);
    i.remote_ts.push(ts("10.4.0.1", "10.4.0.9"));
    let e = child_sa_spec(&i).unwrap_err();
    assert_eq!(
        e,
        MapError::NotPrefix {
            side: "remote",
            start: "10.4.0.1".parse().unwrap(),
            end: "10.4.0.9".parse().unwrap(),
        }
    );
    assert!(e.to_string().contains("10.4.0.1-10.4.0.9"), "{e}");
    let mut i = install(3, 1, None);
    let mut tcp = ts("10.3.0.0", "10.3.0.255");
    tcp.ip_protocol = 6;
    i.local_ts.push(tcp);
    assert!(matches!(
        child_sa_spec(&i),
        Err(MapError::NotPrefix { side: "local", .. })
    ));
    let mut i = install(3, 1, None);
    let mut port = ts("10.3.0.0", "10.3.0.255");
    port.start_port = 443;
    port.end_port = 443;
    i.local_ts.insert(0, port);
    assert!(matches!(
        child_sa_spec(&i),
        Err(MapError::NotPrefix { side: "local", .. })
    ));
}

#[tokio::test]
async fn fake_backend_multi_selector_install_migrate_delete() {
    let fake = std::sync::Arc::new(FakeBackend::new());
    let mut k = Kernel::with_backend(Box::new(fake.clone()));
    let mut i = install(3, 100, None);
    i.local_ts.push(ts("10.3.0.0", "10.3.0.255"));
    i.remote_ts.push(ts("10.4.0.0", "10.4.0.255"));
    let ev = k.apply(KernelAction::InstallChildSa(Box::new(i))).await;
    let KernelEvent::Installed { handle, .. } = ev else {
        panic!("{ev:?}");
    };
    assert_eq!(handle.selectors.len(), 4);
    // Two SAs, 4 pairs x out/in/fwd policies.
    assert_eq!(fake.len(), (2, 12));
    let to: (IpAddr, IpAddr) = (
        "198.51.100.1".parse().unwrap(),
        "198.51.100.2".parse().unwrap(),
    );
    let ev = k.apply(migrate_action(3, 100, to)).await;
    assert!(matches!(ev, KernelEvent::Migrated { .. }), "{ev:?}");
    assert_eq!(fake.len(), (2, 12));
    let ev = k
        .apply(KernelAction::DeleteChildSa {
            reqid: 3,
            local: to.0,
            remote: to.1,
            inbound_spi: 100,
            outbound_spi: 101,
            remove_policies: true,
        })
        .await;
    assert!(matches!(ev, KernelEvent::Deleted { .. }), "{ev:?}");
    assert!(fake.is_empty(), "{:?}", fake.len());
}

#[tokio::test]
async fn inbound_copy_for_a_move_then_migrate_or_abandon() {
    let fake = std::sync::Arc::new(FakeBackend::new());
    let mut k = Kernel::with_backend(Box::new(fake.clone()));
    let ev = k
        .apply(KernelAction::InstallChildSa(Box::new(install(
            3, 100, None,
        ))))
        .await;
    assert!(matches!(ev, KernelEvent::Installed { .. }), "{ev:?}");
    let new_local: IpAddr = "198.51.100.1".parse().unwrap();
    let prepare = |local| KernelAction::PrepareInbound {
        reqid: 3,
        inbound_spi: 100,
        local,
    };
    // The update goes out: the inbound SA is valid at the new address too.
    let ev = k.apply(prepare(new_local)).await;
    match &ev {
        KernelEvent::InboundCopy { handle, .. } => {
            assert_eq!(handle.inbound_copy, Some(new_local))
        }
        e => panic!("{e:?}"),
    }
    assert_eq!(fake.len().0, 3, "two SAs and the copy");
    // Asked again (the update retransmitted): nothing more.
    let ev = k.apply(prepare(new_local)).await;
    assert!(matches!(ev, KernelEvent::InboundCopy { .. }), "{ev:?}");
    assert_eq!(fake.len().0, 3);
    // Abandoned (back to the current address): the copy goes.
    let ev = k.apply(prepare("192.0.2.1".parse().unwrap())).await;
    match &ev {
        KernelEvent::InboundCopy { handle, .. } => assert_eq!(handle.inbound_copy, None),
        e => panic!("{e:?}"),
    }
    assert_eq!(fake.len().0, 2);
    // Prepared again, then answered: the migrate makes the copy the
    // inbound SA.
    k.apply(prepare(new_local)).await;
    let to = (new_local, "192.0.2.2".parse().unwrap());
    let ev = k.apply(migrate_action(3, 100, to)).await;
    match &ev {
        KernelEvent::Migrated { handle, .. } => {
            assert_eq!((handle.outer.local, handle.inbound_copy), (new_local, None))
        }
        e => panic!("{e:?}"),
    }
    assert_eq!(fake.len().0, 2);
    let mut dsts: Vec<IpAddr> = fake.sas().iter().filter_map(|s| s.dst).collect();
    dsts.sort();
    assert_eq!(dsts, [to.1, new_local]);
    // A copy left when the pair is deleted goes with it.
    k.apply(prepare("203.0.113.1".parse().unwrap())).await;
    let ev = k
        .apply(KernelAction::DeleteChildSa {
            reqid: 3,
            local: to.0,
            remote: to.1,
            inbound_spi: 100,
            outbound_spi: 101,
            remove_policies: true,
        })
        .await;
    assert!(matches!(ev, KernelEvent::Deleted { .. }), "{ev:?}");
    assert!(fake.is_empty(), "{:?}", fake.len());
}

/// Move the pair (reqid, inbound SPI) from 192.0.2.1/2 to `to`.
fn migrate_action(reqid: u32, inbound_spi: u32, to: (IpAddr, IpAddr)) -> KernelAction {
    KernelAction::MigrateChildSa {
        reqid,
        inbound_spi,
        outbound_spi: inbound_spi + 1,
        from: ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap()),
        to,
        encap: None,
    }
}

#[tokio::test]
async fn fake_backend_install_migrate_delete() {
    let mut k = Kernel::with_backend(Box::new(FakeBackend::new()));
    let ev = k
        .apply(KernelAction::InstallChildSa(Box::new(install(
            3, 100, None,
        ))))
        .await;
    assert!(
        matches!(
            ev,
            KernelEvent::Installed {
                ike_sa: 7,
                with_policies: true,
                ..
            }
        ),
        "{ev:?}"
    );
    // The same SPIs again: the fake refuses like the kernel (EEXIST),
    // reported as an event.
    let mut again = install(4, 100, None);
    again.reqid = 4;
    let ev = k.apply(KernelAction::InstallChildSa(Box::new(again))).await;
    assert!(
        matches!(
            ev,
            KernelEvent::Failed {
                op: KernelOp::Install,
                reqid: 4,
                ..
            }
        ),
        "{ev:?}"
    );
    // Its later migrate and delete have nothing to do, once.
    let migrate_failed = migrate_action(
        4,
        100,
        ("192.0.2.1".parse().unwrap(), "192.0.2.3".parse().unwrap()),
    );
    let ev = k.apply(migrate_failed).await;
    assert!(
        matches!(ev, KernelEvent::NotInstalled { reqid: 4, .. }),
        "{ev:?}"
    );
    let del_failed = || KernelAction::DeleteChildSa {
        reqid: 4,
        local: "192.0.2.1".parse().unwrap(),
        remote: "192.0.2.2".parse().unwrap(),
        inbound_spi: 100,
        outbound_spi: 101,
        remove_policies: true,
    };
    let ev = k.apply(del_failed()).await;
    assert!(
        matches!(ev, KernelEvent::NotInstalled { reqid: 4, .. }),
        "{ev:?}"
    );
    let ev = k.apply(del_failed()).await;
    assert!(
        matches!(
            ev,
            KernelEvent::Failed {
                op: KernelOp::Delete,
                error: KernelActionError::Unknown { .. },
                ..
            }
        ),
        "{ev:?}"
    );
    // The pair of reqid 3 was not touched.
    assert_eq!(k.installed().count(), 1);
    let to: (IpAddr, IpAddr) = (
        "198.51.100.1".parse().unwrap(),
        "198.51.100.2".parse().unwrap(),
    );
    let ev = k.apply(migrate_action(3, 100, to)).await;
    match ev {
        KernelEvent::Migrated { handle, .. } => assert_eq!(handle.outer.local, to.0),
        e => panic!("{e:?}"),
    }
    let del = |spi| KernelAction::DeleteChildSa {
        reqid: 3,
        local: to.0,
        remote: to.1,
        inbound_spi: spi,
        outbound_spi: spi + 1,
        remove_policies: true,
    };
    let ev = k.apply(del(100)).await;
    assert!(
        matches!(ev, KernelEvent::Deleted { ike_sa: 7, .. }),
        "{ev:?}"
    );
    assert_eq!(k.installed().count(), 0);
    let ev = k.apply(del(100)).await;
    assert!(
        matches!(
            ev,
            KernelEvent::Failed {
                error: KernelActionError::Unknown { .. },
                ..
            }
        ),
        "{ev:?}"
    );
}

#[tokio::test]
async fn counters_of_installed_pairs_and_of_vanished_ones() {
    let fake = std::sync::Arc::new(FakeBackend::new());
    let mut k = Kernel::with_backend(Box::new(fake.clone()));
    assert!(k.counters().await.is_empty());
    let ev = k
        .apply(KernelAction::InstallChildSa(Box::new(install(
            3, 100, None,
        ))))
        .await;
    let KernelEvent::Installed { handle, .. } = ev else {
        panic!("{ev:?}");
    };
    fake.record_traffic(&handle, 1400, 84).unwrap();
    fake.record_traffic(&handle, 100, 0).unwrap();
    let c = k.counters().await;
    assert_eq!(c.len(), 1);
    let got = c[&(3, 100)].as_ref().unwrap();
    assert_eq!((got.outbound.bytes, got.outbound.packets), (1500, 2));
    assert_eq!((got.inbound.bytes, got.inbound.packets), (84, 2));
    // Removed behind the agent's back: an error for that pair.
    fake.delete_child_sa(&handle).await.unwrap();
    let c = k.counters().await;
    let err = c[&(3, 100)].as_ref().unwrap_err();
    assert_eq!(err.errno(), Some(libc::ESRCH), "{err}");
}

#[test]
fn limits_become_the_kernels_lifetime_configuration() {
    assert_eq!(lifetime_of(&ChildLimits::default()), None);
    let l = lifetime_of(&ChildLimits {
        life_time: Some(std::time::Duration::from_secs(3960)),
        rekey_bytes: Some(1000),
        life_bytes: Some(1100),
        rekey_packets: None,
        life_packets: Some(50),
    })
    .unwrap();
    assert_eq!(
        l,
        LifetimeCfg {
            soft_byte_limit: 1000,
            hard_byte_limit: 1100,
            soft_packet_limit: u64::MAX,
            hard_packet_limit: 50,
            // Rekeys by time are the engine's.
            soft_add_expires_seconds: 0,
            hard_add_expires_seconds: 3960,
            soft_use_expires_seconds: 0,
            hard_use_expires_seconds: 0,
        }
    );
    // Under a second is still a limit.
    let l = lifetime_of(&ChildLimits {
        life_time: Some(std::time::Duration::from_millis(300)),
        ..ChildLimits::default()
    })
    .unwrap();
    assert_eq!(l.hard_add_expires_seconds, 1);
}

#[tokio::test]
async fn expire_events_of_our_sas_name_their_child_and_others_nothing() {
    let fake = std::sync::Arc::new(FakeBackend::new());
    let mut k = Kernel::with_backend(Box::new(fake.clone()));
    let mut i = install(3, 100, None);
    i.limits.rekey_bytes = Some(5000);
    let ev = k.apply(KernelAction::InstallChildSa(Box::new(i))).await;
    assert!(matches!(ev, KernelEvent::Installed { .. }), "{ev:?}");
    let sas = fake.sas();
    assert_eq!(sas.len(), 2);
    for sa in &sas {
        // The limits went to the kernel with both SAs.
        assert_eq!(sa.limits.soft_byte_limit, 5000, "{sa:?}");
        assert_eq!(sa.limits.hard_byte_limit, u64::MAX, "{sa:?}");
        for hard in [false, true] {
            let e = XfrmEvent::SaExpire {
                sa: sa.clone(),
                hard,
            };
            assert_eq!(k.expired_child(&e), Some((100, hard)), "{sa:?}");
        }
    }
    // Another SPI, another destination, another protocol, or no
    // expire at all: not ours to act on.
    let mut other = sas[0].clone();
    other.spi ^= 1;
    let mut elsewhere = sas[0].clone();
    elsewhere.dst = Some("203.0.113.9".parse().unwrap());
    let mut ah = sas[0].clone();
    ah.proto = 51;
    for sa in [other, elsewhere, ah] {
        let e = XfrmEvent::SaExpire { sa, hard: false };
        assert_eq!(k.expired_child(&e), None, "{e:?}");
    }
    let added = XfrmEvent::SaAdded { sa: sas[0].clone() };
    assert_eq!(k.expired_child(&added), None);
}

#[tokio::test]
async fn mapping_events_of_our_inbound_sas_name_their_child_and_the_new_peer() {
    let fake = std::sync::Arc::new(FakeBackend::new());
    let mut k = Kernel::with_backend(Box::new(fake.clone()));
    let ev = k
        .apply(KernelAction::InstallChildSa(Box::new(install(
            3, 100, None,
        ))))
        .await;
    assert!(matches!(ev, KernelEvent::Installed { .. }), "{ev:?}");
    let inbound = fake
        .sas()
        .into_iter()
        .find(|sa| sa.spi == 100)
        .expect("inbound SA");
    let new: IpAddr = "198.51.100.9".parse().unwrap();
    let mapping = |spi: u32, dst: Option<IpAddr>, new_src: Option<IpAddr>| XfrmEvent::Mapping {
        dst,
        spi,
        reqid: 3,
        old_src: None,
        new_src,
        old_sport: 4500,
        new_sport: 40000,
    };
    assert_eq!(
        k.mapped_child(&mapping(100, inbound.dst, Some(new))),
        Some((100, SocketAddr::new(new, 40000)))
    );
    // Another SPI, another destination, no new address: not ours.
    for e in [
        mapping(101, inbound.dst, Some(new)),
        mapping(100, Some("203.0.113.9".parse().unwrap()), Some(new)),
        mapping(100, inbound.dst, None),
    ] {
        assert_eq!(k.mapped_child(&e), None, "{e:?}");
    }
}

#[tokio::test]
async fn none_only_logs() {
    let mut k = Kernel::none();
    let ev = k
        .apply(KernelAction::InstallChildSa(Box::new(install(
            3, 100, None,
        ))))
        .await;
    assert!(matches!(ev, KernelEvent::Logged(_)));
}

#[tokio::test]
async fn a_new_run_removes_the_sas_and_policies_of_our_reqids_a_killed_run_left() {
    let fake = std::sync::Arc::new(FakeBackend::new());
    // The killed run: a CHILD_SA of ours, never deleted.
    let ours = *crate::engine::REQIDS.start();
    let mut killed = Kernel::with_backend(Box::new(fake.clone()));
    let ev = killed
        .apply(KernelAction::InstallChildSa(Box::new(install(
            ours, 100, None,
        ))))
        .await;
    assert!(matches!(ev, KernelEvent::Installed { .. }), "{ev:?}");
    drop(killed);
    // Another daemon's (charon counts reqids up from 1) on other selectors.
    let mut other = install(1, 300, None);
    other.local_ts = vec![ts("10.5.0.0", "10.5.0.255")];
    other.remote_ts = vec![ts("10.6.0.0", "10.6.0.255")];
    let mut charon = Kernel::with_backend(Box::new(fake.clone()));
    let ev = charon
        .apply(KernelAction::InstallChildSa(Box::new(other)))
        .await;
    assert!(matches!(ev, KernelEvent::Installed { .. }), "{ev:?}");
    assert_eq!(fake.len(), (4, 6));

    let next = Kernel::with_backend(Box::new(fake.clone()));
    let gone = next.remove_leftovers().await.expect("remove leftovers");
    assert_eq!(
        gone,
        ipsec_backend::Leftovers {
            sas: 2,
            policies: 3
        }
    );
    assert_eq!(fake.len(), (2, 3), "the other daemon's state stays");
    assert!(fake.sas().iter().all(|s| s.reqid == 1));
    assert!(
        fake.policies()
            .iter()
            .all(|p| p.templates.iter().all(|t| t.reqid == 1))
    );
    // Nothing is left the second time; the backend `none` has nothing.
    assert_eq!(
        next.remove_leftovers().await.expect("again"),
        ipsec_backend::Leftovers::default()
    );
    assert_eq!(
        Kernel::none().remove_leftovers().await.expect("none"),
        ipsec_backend::Leftovers::default()
    );
}

#[tokio::test]
async fn resync_after_lost_events_finds_vanished_and_soft_expired_pairs() {
    let fake = std::sync::Arc::new(FakeBackend::new());
    let mut k = Kernel::with_backend(Box::new(fake.clone()));
    let mut handles = Vec::new();
    for (n, reqid) in [(100u32, 3u32), (200, 4), (300, 5)] {
        let mut i = install(reqid, n, None);
        i.limits.rekey_bytes = Some(1000);
        i.limits.life_bytes = Some(2000);
        i.local_ts = vec![ts(&format!("10.{reqid}.0.0"), &format!("10.{reqid}.0.255"))];
        let ev = k.apply(KernelAction::InstallChildSa(Box::new(i))).await;
        let KernelEvent::Installed { handle, .. } = ev else {
            panic!("{ev:?}");
        };
        handles.push(handle);
    }
    assert_eq!(k.resync().await, vec![], "nothing expired yet");
    // Pair 200 passed its soft byte limit; pair 300 vanished (its hard
    // expire, whose event was lost).
    fake.record_traffic(&handles[1], 1500, 10).expect("traffic");
    fake.delete_child_sa(&handles[2]).await.expect("gone");
    let mut got = k.resync().await;
    got.sort();
    assert_eq!(got, vec![(200, false), (300, true)]);
    assert!(Kernel::none().resync().await.is_empty());
}
