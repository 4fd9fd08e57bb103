//! Against the running (host) kernel, each test in its own fresh network
//! namespace created by `unshare(CLONE_NEWNET)` on a private thread (it
//! vanishes with the thread): policies, policy MIGRATE (v4 -> v6 outer),
//! ALLOCSPI, the monitor (policy and migrate events), typed kernel errors.
//! The host's own XFRM state, interfaces and routes are never touched.
//! Needs root (CI runs as root).

use std::net::IpAddr;
use std::time::Duration;

use ipsec_backend::codec::group;
use ipsec_backend::netns::in_new_netns;
use ipsec_backend::types::{
    Crypto, Dir, Encap, Mark, MigrateEntry, MigrateSpec, Mode, OuterPair, PolicySpec, Proto,
    SaSpec, Template, TrafficSelector,
};
use ipsec_backend::{Error, PolicyKey, SaKey, XfrmEvent, XfrmHandle, XfrmMonitor};

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

fn sel(src: &str, dst: &str) -> TrafficSelector {
    TrafficSelector::new(src.parse().expect("prefix"), src_dst(dst))
}

fn src_dst(s: &str) -> ipsec_backend::types::Prefix {
    s.parse().expect("prefix")
}

fn policy(dir: Dir, s: TrafficSelector, tsrc: &str, tdst: &str, prio: u32) -> PolicySpec {
    PolicySpec {
        selector: s,
        dir,
        priority: prio,
        action: Default::default(),
        templates: vec![Template {
            src: ip(tsrc),
            dst: ip(tdst),
            proto: Proto::Esp,
            mode: Mode::Tunnel,
            reqid: 1,
            spi: 0,
            optional: false,
        }],
        mark: None,
        if_id: None,
    }
}

fn key(p: &PolicySpec) -> PolicyKey {
    PolicyKey {
        selector: p.selector,
        dir: p.dir,
        mark: p.mark,
        if_id: p.if_id,
    }
}

/// Wait (bounded, not a timing assertion) for the next event matching `f`.
async fn next_matching(
    m: &mut XfrmMonitor,
    mut f: impl FnMut(&XfrmEvent) -> bool,
) -> Option<XfrmEvent> {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match m.next_event().await {
                Ok(e) if f(&e) => return Some(e),
                Ok(_) => {}
                Err(e) => panic!("monitor: {e}"),
            }
        }
    })
    .await
    .ok()
    .flatten()
}

#[test]
fn policy_add_get_update_dump_delete_in_fresh_netns() {
    in_new_netns(|| async {
        let h = XfrmHandle::new().expect("socket");
        let out = policy(
            Dir::Out,
            sel("10.1.0.0/24", "10.2.0.0/24"),
            "192.0.2.1",
            "192.0.2.2",
            100,
        );
        let mut inb = policy(
            Dir::In,
            out.selector.reversed(),
            "192.0.2.2",
            "192.0.2.1",
            100,
        );
        inb.mark = Some(Mark {
            value: 7,
            mask: 0xff,
        });
        inb.if_id = Some(42);
        h.policy().add(&out).await.expect("add out");
        h.policy().add(&inb).await.expect("add in");

        let got = h.policy().get(&key(&out)).await.expect("get out");
        assert_eq!(got.selector, Some(out.selector));
        assert_eq!(got.priority, 100);
        assert_eq!(got.templates, out.templates);
        let got_in = h.policy().get(&key(&inb)).await.expect("get in");
        assert_eq!((got_in.mark, got_in.if_id), (inb.mark, inb.if_id));

        // Adding the same policy again is refused with EEXIST, typed.
        let dup = h
            .policy()
            .add(&out)
            .await
            .expect_err("duplicate add must fail");
        assert!(
            matches!(dup, Error::AddPolicy { dir: Dir::Out, .. }),
            "{dup:?}"
        );
        assert_eq!(dup.errno(), Some(libc::EEXIST));

        let mut upd = out.clone();
        upd.priority = 5;
        upd.templates[0].reqid = 9;
        h.policy().update(&upd).await.expect("update");
        let got = h.policy().get(&key(&out)).await.expect("get after update");
        assert_eq!((got.priority, got.templates[0].reqid), (5, 9));

        let dump = h.policy().dump().await.expect("dump");
        assert_eq!(dump.len(), 2, "{dump:?}");
        assert!(
            dump.iter()
                .any(|p| p.dir == Some(Dir::In) && p.if_id == Some(42))
        );

        h.policy().delete(&key(&out)).await.expect("delete");
        let gone = h.policy().get(&key(&out)).await.expect_err("deleted");
        assert_eq!(gone.errno(), Some(libc::ENOENT));
        h.policy().flush().await.expect("flush");
        assert!(h.policy().dump().await.expect("dump").is_empty());
    })
    .expect("netns");
}

#[test]
fn policy_migrate_v4_to_v6_moves_template_and_monitor_sees_it() {
    in_new_netns(|| async {
        let h = XfrmHandle::new().expect("socket");
        let mut mon = XfrmMonitor::open(&[group::MIGRATE, group::POLICY]).expect("monitor");
        let out = policy(
            Dir::Out,
            sel("10.1.0.0/24", "10.2.0.0/24"),
            "192.0.2.1",
            "192.0.2.2",
            0,
        );
        h.policy().add(&out).await.expect("add");
        let added = next_matching(&mut mon, |e| matches!(e, XfrmEvent::PolicyAdded { .. })).await;
        let Some(XfrmEvent::PolicyAdded { policy }) = added else {
            panic!("no policy-added event")
        };
        assert_eq!(policy.selector, Some(out.selector));

        let spec = MigrateSpec {
            selector: out.selector,
            dir: Dir::Out,
            entries: vec![MigrateEntry {
                old_src: ip("192.0.2.1"),
                old_dst: ip("192.0.2.2"),
                new_src: ip("2001:db8::1"),
                new_dst: ip("2001:db8::2"),
                proto: Proto::Esp,
                mode: Mode::Tunnel,
                reqid: 1,
            }],
            kmaddress: Some(OuterPair {
                local: ip("2001:db8::1"),
                remote: ip("2001:db8::2"),
            }),
            encap: Some(Encap {
                sport: 4500,
                dport: 4501,
            }),
            if_id: None,
        };
        h.migrate(&spec).await.expect("migrate");
        let got = h.policy().get(&key(&out)).await.expect("get");
        assert_eq!(got.templates[0].src, ip("2001:db8::1"));
        assert_eq!(got.templates[0].dst, ip("2001:db8::2"));

        let ev = next_matching(&mut mon, |e| matches!(e, XfrmEvent::Migrate { .. })).await;
        let Some(XfrmEvent::Migrate {
            selector,
            dir,
            entries,
            kmaddress,
            encap,
        }) = ev
        else {
            panic!("no migrate event")
        };
        assert_eq!((selector, dir), (Some(out.selector), Some(Dir::Out)));
        assert_eq!(entries, spec.entries);
        assert_eq!(kmaddress, spec.kmaddress);
        assert_eq!(encap, spec.encap);

        // And back, v6 -> v4.
        let back = MigrateSpec {
            entries: vec![MigrateEntry {
                old_src: ip("2001:db8::1"),
                old_dst: ip("2001:db8::2"),
                new_src: ip("198.51.100.1"),
                new_dst: ip("198.51.100.2"),
                ..spec.entries[0]
            }],
            kmaddress: None,
            encap: None,
            ..spec.clone()
        };
        h.migrate(&back).await.expect("migrate back");
        let got = h.policy().get(&key(&out)).await.expect("get");
        assert_eq!(got.templates[0].dst, ip("198.51.100.2"));
    })
    .expect("netns");
}

#[test]
fn migrate_of_a_missing_policy_is_one_typed_error_and_changes_nothing() {
    in_new_netns(|| async {
        let h = XfrmHandle::new().expect("socket");
        let out = policy(
            Dir::Out,
            sel("10.1.0.0/24", "10.2.0.0/24"),
            "192.0.2.1",
            "192.0.2.2",
            0,
        );
        h.policy().add(&out).await.expect("add");
        let spec = MigrateSpec {
            selector: sel("10.9.0.0/24", "10.8.0.0/24"),
            dir: Dir::Out,
            entries: vec![MigrateEntry {
                old_src: ip("192.0.2.1"),
                old_dst: ip("192.0.2.2"),
                new_src: ip("198.51.100.1"),
                new_dst: ip("198.51.100.2"),
                proto: Proto::Esp,
                mode: Mode::Tunnel,
                reqid: 1,
            }],
            kmaddress: None,
            encap: None,
            if_id: None,
        };
        let e = h.migrate(&spec).await.expect_err("no such policy");
        assert!(matches!(e, Error::Migrate { dir: Dir::Out, .. }), "{e:?}");
        assert_eq!(e.errno(), Some(libc::ENOENT));
        let got = h.policy().get(&key(&out)).await.expect("get");
        assert_eq!(got.templates, out.templates, "unrelated policy changed");
        // Seven entries exceed XFRM_MAX_DEPTH and are refused before sending.
        let too_many = MigrateSpec {
            entries: vec![spec.entries[0]; 7],
            ..spec
        };
        assert!(matches!(h.migrate(&too_many).await, Err(Error::Invalid(_))));
    })
    .expect("netns");
}

#[test]
fn allocspi_gives_an_spi_in_range_and_a_larval_sa() {
    in_new_netns(|| async {
        let h = XfrmHandle::new().expect("socket");
        let spi = h
            .state()
            .alloc_spi(
                ip("192.0.2.1"),
                ip("192.0.2.2"),
                Proto::Esp,
                Mode::Tunnel,
                5,
                0x1000,
                0x1fff,
            )
            .await
            .expect("allocspi");
        assert!((0x1000..=0x1fff).contains(&spi), "{spi:#x}");
        let spi6 = h
            .state()
            .alloc_spi(
                ip("2001:db8::1"),
                ip("2001:db8::2"),
                Proto::Esp,
                Mode::Tunnel,
                6,
                0x2000,
                0x2000,
            )
            .await
            .expect("allocspi v6");
        assert_eq!(spi6, 0x2000);
        let sas = h.state().dump().await.expect("dump");
        assert_eq!(sas.len(), 2, "{sas:?}");
        let sa = sas
            .iter()
            .find(|s| s.spi == spi)
            .expect("larval SA in dump");
        assert_eq!((sa.reqid, sa.dst), (5, Some(ip("192.0.2.2"))));
        let got = h
            .state()
            .get(&SaKey {
                dst: ip("2001:db8::2"),
                spi: 0x2000,
                proto: Proto::Esp,
                mark: None,
            })
            .await
            .expect("get larval");
        assert_eq!(got.reqid, 6);
        h.state().flush(None).await.expect("flush");
        assert!(h.state().dump().await.expect("dump").is_empty());
    })
    .expect("netns");
}

#[test]
fn esp_sa_add_works_or_fails_with_errno_and_kernel_text() {
    let caps = ipsec_backend::caps::probe().expect("probe");
    assert!(caps.xfrm_netlink && caps.migrate, "{}", caps.summary());
    in_new_netns(move || async move {
        let h = XfrmHandle::new().expect("socket");
        let sa = SaSpec {
            src: ip("192.0.2.1"),
            dst: ip("192.0.2.2"),
            spi: 0x1001,
            proto: Proto::Esp,
            mode: Mode::Tunnel,
            reqid: 1,
            crypto: Crypto::aes_gcm(&[0x11; 20]),
            selector: None,
            selector_af_unspec: false,
            encap: None,
            mark: None,
            if_id: None,
            replay_window: 32,
            esn: false,
            lifetime: None,
        };
        let gcm_ok = caps
            .probes
            .iter()
            .any(|p| p.name.contains("gcm(aes)) 128") && p.ok);
        match h.state().add(&sa).await {
            Ok(()) => {
                assert!(gcm_ok, "probe said no, add worked");
                let got = h
                    .state()
                    .get(&SaKey {
                        dst: sa.dst,
                        spi: sa.spi,
                        proto: Proto::Esp,
                        mark: None,
                    })
                    .await
                    .expect("get");
                assert_eq!(got.algs, vec!["rfc4106(gcm(aes))".to_string()]);
            }
            Err(e) => {
                assert!(!gcm_ok, "probe said yes, add failed: {e}");
                assert!(matches!(e, Error::AddSa { spi: 0x1001, .. }), "{e:?}");
                let k = e.kernel().expect("kernel error");
                assert!(k.errno > 0);
                assert!(k.ext_ack.as_deref().is_some_and(|m| !m.is_empty()), "{k:?}");
            }
        }
    })
    .expect("netns");
}

#[test]
fn capability_summary_names_esp_migrate_and_beet() {
    let caps = ipsec_backend::caps::probe().expect("probe");
    let s = caps.summary();
    for word in ["ESP:", "MIGRATE:", "BEET:", "ESP-in-UDP:"] {
        assert!(s.contains(word), "{s}");
    }
    if !caps.esp {
        assert!(s.contains("cannot create ESP SAs"), "{s}");
    }
}

#[test]
fn kernel_backend_events_report_policy_changes() {
    use futures::StreamExt;
    use ipsec_backend::{ChildSaBackend, KernelBackend};
    in_new_netns(|| async {
        let b = KernelBackend::new().expect("backend");
        let mut ev = b.events().expect("events");
        let p = policy(Dir::Fwd, sel("10.3.0.0/16", "10.4.0.0/16"), "192.0.2.2", "192.0.2.1", 7);
        b.handle().policy().add(&p).await.expect("add");
        b.handle().policy().delete(&key(&p)).await.expect("delete");
        let mut seen = Vec::new();
        while seen.len() < 2 {
            let e = tokio::time::timeout(Duration::from_secs(10), ev.next())
                .await
                .expect("event within 10 s")
                .expect("stream open")
                .expect("event");
            seen.push(e);
        }
        assert!(
            matches!(&seen[0], XfrmEvent::PolicyAdded { policy } if policy.priority == 7 && policy.dir == Some(Dir::Fwd)),
            "{seen:?}"
        );
        assert!(
            matches!(&seen[1], XfrmEvent::PolicyDeleted { dir: Some(Dir::Fwd), selector, .. } if *selector == Some(p.selector)),
            "{seen:?}"
        );
    })
    .expect("netns");
}

#[test]
fn kernel_install_child_sa_is_all_or_nothing() {
    use ipsec_backend::{ChildSaBackend, ChildSaSpec, KernelBackend, SelectorPair};
    in_new_netns(|| async {
        let b = KernelBackend::new().expect("backend");
        let spec = ChildSaSpec::tunnel(
            OuterPair {
                local: ip("192.0.2.1"),
                remote: ip("192.0.2.2"),
            },
            vec![SelectorPair::new(
                "10.1.0.0/24".parse().expect("p"),
                "10.2.0.0/24".parse().expect("p"),
            )],
            1,
            (0x100, 0x200),
            (Crypto::aes_gcm(&[1; 20]), Crypto::aes_gcm(&[2; 20])),
        );
        // Occupy the fwd policy so that the last step fails even where ESP
        // works; everything done before it must be undone.
        let fwd = policy(
            Dir::Fwd,
            sel("10.2.0.0/24", "10.1.0.0/24"),
            "192.0.2.2",
            "192.0.2.1",
            0,
        );
        b.handle()
            .policy()
            .add(&fwd)
            .await
            .expect("pre-existing fwd policy");
        let e = b.install_child_sa(&spec).await.expect_err("must fail");
        assert!(
            matches!(
                e,
                Error::AddSa { .. } | Error::AddPolicy { dir: Dir::Fwd, .. }
            ),
            "{e:?}"
        );
        assert!(b.handle().state().dump().await.expect("dump").is_empty());
        let left = b.handle().policy().dump().await.expect("dump");
        assert_eq!(
            left.len(),
            1,
            "only the pre-existing policy may remain: {left:?}"
        );
        assert_eq!(left[0].dir, Some(Dir::Fwd));
    })
    .expect("netns");
}

/// The CHILD_SA of the multi-selector tests: 10.1.0.0/24 and 10.3.0.0/24
/// (ours) x 10.2.0.0/24 and 10.4.0.0/24 (the peer's), plus fd01::/64 <->
/// fd02::/64 (the IPv6 x IPv4 combinations are left out): 5 pairs.
fn multi_spec() -> ipsec_backend::ChildSaSpec {
    use ipsec_backend::{ChildSaSpec, SelectorPair};
    let p = |s: &str| s.parse::<ipsec_backend::types::Prefix>().expect("prefix");
    ChildSaSpec::tunnel(
        OuterPair {
            local: ip("192.0.2.1"),
            remote: ip("192.0.2.2"),
        },
        SelectorPair::product(
            &[p("10.1.0.0/24"), p("10.3.0.0/24"), p("fd01::/64")],
            &[p("10.2.0.0/24"), p("10.4.0.0/24"), p("fd02::/64")],
        ),
        5,
        (0x100, 0x200),
        (Crypto::aes_gcm(&[1; 20]), Crypto::aes_gcm(&[2; 20])),
    )
}

/// (selector, dir) -> (template src, template dst, reqid) of every policy.
async fn spd(
    h: &XfrmHandle,
) -> std::collections::HashMap<(TrafficSelector, Dir), (IpAddr, IpAddr, u32)> {
    h.policy()
        .dump()
        .await
        .expect("dump")
        .into_iter()
        .map(|p| {
            let t = p.templates[0];
            (
                (p.selector.expect("selector"), p.dir.expect("dir")),
                (t.src, t.dst, t.reqid),
            )
        })
        .collect()
}

#[test]
fn kernel_backend_moves_and_deletes_the_policies_of_every_selector_pair() {
    use ipsec_backend::{ChildSaBackend, KernelBackend};
    in_new_netns(|| async {
        let b = KernelBackend::new().expect("backend");
        let spec = multi_spec();
        assert_eq!(spec.selectors.len(), 5);
        // The host kernel may have no ESP, so the SAs are left out: the
        // policies are added as install_child_sa adds them. MIGRATE moves
        // a policy's template whether or not an SA matches.
        for p in spec.policy_specs(spec.outer) {
            b.handle().policy().add(&p).await.expect("add policy");
        }
        let h = spec.handle();
        let keys = h.policy_keys();
        assert_eq!(keys.len(), 15);
        let got = spd(b.handle()).await;
        assert_eq!(got.len(), 15, "{got:?}");
        for k in &keys {
            let (src, dst, reqid) = got[&(k.selector, k.dir)];
            let want = if k.dir == Dir::Out {
                ("192.0.2.1", "192.0.2.2")
            } else {
                ("192.0.2.2", "192.0.2.1")
            };
            assert_eq!((src, dst, reqid), (ip(want.0), ip(want.1), 5), "{k:?}");
        }

        let to = OuterPair {
            local: ip("198.51.100.1"),
            remote: ip("198.51.100.2"),
        };
        let h2 = b.migrate_child_sa(&h, to, None).await.expect("migrate");
        assert_eq!(h2.outer, to);
        let moved = spd(b.handle()).await;
        for k in &keys {
            let (src, dst, _) = moved[&(k.selector, k.dir)];
            let want = if k.dir == Dir::Out {
                (to.local, to.remote)
            } else {
                (to.remote, to.local)
            };
            assert_eq!((src, dst), want, "{k:?} not moved");
        }

        // The last policy (fwd of fd02::/64 -> fd01::/64) vanishes: moving
        // back is refused at it, and the 14 moved before it are moved
        // forward again, so the set is never split over two outer pairs.
        let last = *keys.last().expect("keys");
        assert_eq!(last.dir, Dir::Fwd);
        b.handle().policy().delete(&last).await.expect("delete last");
        let e = b
            .migrate_child_sa(&h2, spec.outer, None)
            .await
            .expect_err("missing policy");
        assert!(
            matches!(&e, Error::Migrate { dir: Dir::Fwd, selector, .. } if *selector == last.selector),
            "{e:?}"
        );
        assert_eq!(e.errno(), Some(libc::ENOENT));
        let after = spd(b.handle()).await;
        assert_eq!(after.len(), 14);
        for (k, (src, dst, _)) in &after {
            let want = if k.1 == Dir::Out {
                (to.local, to.remote)
            } else {
                (to.remote, to.local)
            };
            assert_eq!((*src, *dst), want, "{k:?} not rolled back");
        }

        // Delete removes every policy; the SAs were never there, which is
        // the error returned.
        let last_spec = spec.policy_specs(to).pop().expect("specs");
        b.handle().policy().add(&last_spec).await.expect("re-add");
        let e = b.delete_child_sa(&h2).await.expect_err("no SAs");
        assert!(matches!(e, Error::DeleteSa { .. }), "{e:?}");
        let left = b.handle().policy().dump().await.expect("dump");
        assert!(left.is_empty(), "{left:?}");
    })
    .expect("netns");
}

#[test]
fn kernel_install_of_several_pairs_is_all_or_nothing() {
    use ipsec_backend::{ChildSaBackend, KernelBackend};
    in_new_netns(|| async {
        let b = KernelBackend::new().expect("backend");
        let spec = multi_spec();
        // Occupy the last policy, so that install fails at its last step
        // even where ESP works (on a kernel without ESP, at the first SA).
        let last = spec.policy_specs(spec.outer).pop().expect("specs");
        b.handle().policy().add(&last).await.expect("pre-existing");
        let e = b.install_child_sa(&spec).await.expect_err("must fail");
        assert!(
            matches!(
                &e,
                Error::AddSa { .. } | Error::AddPolicy { dir: Dir::Fwd, .. }
            ),
            "{e:?}"
        );
        if let Error::AddPolicy { selector, .. } = &e {
            assert_eq!(*selector, last.selector);
        }
        assert!(b.handle().state().dump().await.expect("dump").is_empty());
        let left = b.handle().policy().dump().await.expect("dump");
        assert_eq!(
            left.len(),
            1,
            "only the pre-existing policy may remain: {left:?}"
        );
        assert_eq!(left[0].selector, Some(last.selector));
    })
    .expect("netns");
}

#[test]
fn a_reply_counts_only_with_our_sequence_number_and_our_port_id() {
    use ipsec_backend::codec::{XfrmMessage, msg};
    use ipsec_backend::netlink::{NLM_F_DUMP, NlBody, NlHeader, NlMessage, XfrmSocket};
    in_new_netns(|| async {
        let h = XfrmHandle::new().expect("handle");
        let p = policy(
            Dir::Out,
            sel("10.7.0.0/16", "10.8.0.0/16"),
            "192.0.2.1",
            "192.0.2.2",
            3,
        );
        h.policy().add(&p).await.expect("add");
        let mut sock = XfrmSocket::open(&[]).expect("socket");
        // Another socket sends ours an NLMSG_DONE with the sequence number
        // our next request will have, before we ask: taken as the answer,
        // it would end our dump empty.
        let mut forger =
            netlink_sys::Socket::new(netlink_sys::protocols::NETLINK_XFRM).expect("forger");
        let mut fa = netlink_sys::SocketAddr::new(0, 0);
        forger.bind(&fa).expect("bind");
        forger.get_address(&mut fa).expect("address");
        let done = NlMessage {
            header: NlHeader {
                len: 0,
                ty: 3,
                flags: 0,
                seq: 1,
                pid: fa.port_number(),
            },
            body: NlBody::Control(3, 0i32.to_ne_bytes().to_vec()),
        };
        forger
            .send_to(
                &done.emit(),
                &netlink_sys::SocketAddr::new(sock.port(), 0),
                0,
            )
            .expect("forged reply sent");
        let replies = sock
            .request(XfrmMessage::Raw(msg::GETPOLICY, Vec::new()), NLM_F_DUMP)
            .await
            .expect("dump");
        assert_eq!(
            replies
                .iter()
                .filter(|m| matches!(m, XfrmMessage::NewPolicy(..)))
                .count(),
            1,
            "the kernel's dump, not the forged end: {replies:?}"
        );
    })
    .expect("netns");
}

#[test]
fn an_undecodable_dump_entry_is_skipped_and_the_rest_of_the_dump_kept() {
    use ipsec_backend::codec::{XfrmMessage, msg};
    use ipsec_backend::netlink::{NLM_F_DUMP, NLM_F_MULTI, XfrmSocket};
    in_new_netns(|| async {
        let h = XfrmHandle::new().expect("handle");
        let p = policy(
            Dir::Out,
            sel("10.7.0.0/16", "10.8.0.0/16"),
            "192.0.2.1",
            "192.0.2.2",
            3,
        );
        h.policy().add(&p).await.expect("add");
        let mut sock = XfrmSocket::open(&[]).expect("socket");
        // An XFRM_MSG_NEWPOLICY of our dump (our seq and port) whose body is
        // 4 bytes of a 168-byte struct, queued before the kernel's answer.
        let mut other =
            netlink_sys::Socket::new(netlink_sys::protocols::NETLINK_XFRM).expect("socket");
        other
            .bind(&netlink_sys::SocketAddr::new(0, 0))
            .expect("bind");
        let mut bad = Vec::new();
        bad.extend_from_slice(&20u32.to_ne_bytes());
        bad.extend_from_slice(&msg::NEWPOLICY.to_ne_bytes());
        bad.extend_from_slice(&NLM_F_MULTI.to_ne_bytes());
        bad.extend_from_slice(&1u32.to_ne_bytes());
        bad.extend_from_slice(&sock.port().to_ne_bytes());
        bad.extend_from_slice(&[0; 4]);
        other
            .send_to(&bad, &netlink_sys::SocketAddr::new(sock.port(), 0), 0)
            .expect("sent");
        let replies = sock
            .request(XfrmMessage::Raw(msg::GETPOLICY, Vec::new()), NLM_F_DUMP)
            .await
            .expect("the dump, without the bad entry");
        assert_eq!(
            replies
                .iter()
                .filter(|m| matches!(m, XfrmMessage::NewPolicy(..)))
                .count(),
            1,
            "{replies:?}"
        );
    })
    .expect("netns");
}
