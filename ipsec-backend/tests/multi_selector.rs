//! CHILD_SAs with several traffic selector pairs (RFC 7296 §2.9): one
//! out/in/fwd policy set per pair with the same reqid, the SAs' selector
//! (the pair, a family wildcard, or AF_UNSPEC), the JSON forms of the spec
//! and handle, and the [`FakeBackend`]'s invariants for install, migrate
//! and delete of the whole set. Runs without root.

use std::collections::HashSet;
use std::net::IpAddr;

use futures::StreamExt;
use ipsec_backend::types::{
    Crypto, Dir, Encap, Mode, OuterPair, Prefix, TrafficSelector, XFRM_STATE_AF_UNSPEC,
};
use ipsec_backend::{
    ChildSaBackend, ChildSaHandle, ChildSaSpec, Error, FakeBackend, SelectorError, SelectorPair,
    XfrmEvent,
};

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

fn p(s: &str) -> Prefix {
    s.parse().expect("prefix")
}

fn pair(l: &str, r: &str) -> SelectorPair {
    SelectorPair::new(p(l), p(r))
}

const P1: (&str, &str) = ("192.0.2.1", "192.0.2.2");
const P2: (&str, &str) = ("198.51.100.1", "198.51.100.2");

fn outer(x: (&str, &str)) -> OuterPair {
    OuterPair {
        local: ip(x.0),
        remote: ip(x.1),
    }
}

/// 10.1.0.0/24, 10.3.0.0/24 (local) x 10.2.0.0/24, 10.4.0.0/24 (remote).
fn two_by_two() -> Vec<SelectorPair> {
    SelectorPair::product(
        &[p("10.1.0.0/24"), p("10.3.0.0/24")],
        &[p("10.2.0.0/24"), p("10.4.0.0/24")],
    )
}

fn spec(spi_out: u32, spi_in: u32, reqid: u32, selectors: Vec<SelectorPair>) -> ChildSaSpec {
    ChildSaSpec::tunnel(
        outer(P1),
        selectors,
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

/// (selector, dir) of every policy held, and the outer pair each template
/// names.
fn spd(f: &FakeBackend) -> Vec<(TrafficSelector, Dir, IpAddr, IpAddr, u32)> {
    let mut v: Vec<_> = f
        .policies()
        .into_iter()
        .map(|p| {
            let t = &p.templates[0];
            (p.selector, p.dir, t.src, t.dst, t.reqid)
        })
        .collect();
    v.sort_by_key(|x| format!("{x:?}"));
    v
}

#[test]
fn product_pairs_each_local_with_each_remote_of_its_family() {
    let pairs = SelectorPair::product(
        &[p("10.1.0.0/24"), p("fd01::/64"), p("10.3.0.0/24")],
        &[p("10.2.0.0/24"), p("fd02::/64"), p("10.2.0.0/24")],
    );
    let shown: Vec<String> = pairs.iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        [
            "10.1.0.0/24 <-> 10.2.0.0/24",
            "fd01::/64 <-> fd02::/64",
            "10.3.0.0/24 <-> 10.2.0.0/24",
        ]
    );
    assert!(SelectorPair::product(&[p("10.1.0.0/24")], &[p("fd02::/64")]).is_empty());
}

#[test]
fn policies_one_set_per_pair_with_one_reqid() {
    let s = spec(0x100, 0x200, 7, two_by_two());
    let pols = s.policy_specs(outer(P1));
    assert_eq!(pols.len(), 12);
    let keys: HashSet<_> = pols.iter().map(|p| (p.selector, p.dir)).collect();
    assert_eq!(keys.len(), 12, "every policy is distinct");
    for sp in two_by_two() {
        let out = sp.outbound();
        for (sel, dir, src, dst) in [
            (out, Dir::Out, P1.0, P1.1),
            (out.reversed(), Dir::In, P1.1, P1.0),
            (out.reversed(), Dir::Fwd, P1.1, P1.0),
        ] {
            let pol = pols
                .iter()
                .find(|p| p.selector == sel && p.dir == dir)
                .unwrap_or_else(|| panic!("no {dir} policy for {sp}"));
            let t = &pol.templates[..];
            assert_eq!(t.len(), 1);
            assert_eq!((t[0].src, t[0].dst, t[0].reqid), (ip(src), ip(dst), 7));
        }
    }
    // Transport mode: out and in only.
    let mut tr = spec(0x100, 0x200, 7, two_by_two());
    tr.mode = Mode::Transport;
    let pols = tr.policy_specs(outer(P1));
    assert_eq!(pols.len(), 8);
    assert!(pols.iter().all(|p| p.dir != Dir::Fwd));
    assert_eq!(tr.handle().policy_keys().len(), 8);
}

#[test]
fn sa_selector_is_the_pair_a_family_wildcard_or_af_unspec() {
    // One pair: that pair (reversed on the inbound SA).
    let one = spec(0x100, 0x200, 1, vec![pair("10.1.0.0/24", "10.2.0.0/24")]);
    let [out, inb] = one.sa_specs();
    assert_eq!(out.selector, Some(one.selectors[0].outbound()));
    assert_eq!(inb.selector, Some(one.selectors[0].outbound().reversed()));
    assert!(!out.selector_af_unspec);
    // Several of one family: 0.0.0.0/0 both ways.
    let [out, inb] = spec(0x100, 0x200, 1, two_by_two()).sa_specs();
    let any4 = TrafficSelector::new(p("0.0.0.0/0"), p("0.0.0.0/0"));
    assert_eq!((out.selector, inb.selector), (Some(any4), Some(any4)));
    assert!(!out.selector_af_unspec && !inb.selector_af_unspec);
    let v6 = SelectorPair::product(&[p("fd01::/64"), p("fd03::/64")], &[p("fd02::/64")]);
    let [out, _] = spec(0x100, 0x200, 1, v6).sa_specs();
    let any6 = TrafficSelector::new(p("::/0"), p("::/0"));
    assert_eq!(out.selector, Some(any6));
    // IPv4 and IPv6 pairs: AF_UNSPEC, so the SA carries both families.
    let mixed = SelectorPair::product(
        &[p("10.1.0.0/24"), p("fd01::/64")],
        &[p("10.2.0.0/24"), p("fd02::/64")],
    );
    assert_eq!(mixed.len(), 2);
    let [out, inb] = spec(0x100, 0x200, 1, mixed).sa_specs();
    for sa in [&out, &inb] {
        assert_eq!(sa.selector, None);
        assert!(sa.selector_af_unspec);
        let (info, _) = sa.to_raw().expect("to_raw");
        assert_ne!(info.flags & XFRM_STATE_AF_UNSPEC, 0);
        assert_eq!(info.sel.family, 0);
    }
    // A selector together with the flag is a contradiction, refused.
    let mut bad = out.clone();
    bad.selector = Some(any4);
    assert!(matches!(bad.to_raw(), Err(Error::Invalid(_))));
}

#[test]
fn fake_installs_migrates_and_deletes_every_policy_of_the_set() {
    rt().block_on(async {
        let f = FakeBackend::new();
        let mut events = f.events().expect("events");
        let s = spec(0x100, 0x200, 1, two_by_two());
        let h = f.install_child_sa(&s).await.expect("install");
        assert_eq!(h.selectors, s.selectors);
        assert_eq!(f.len(), (2, 12));
        let sas = f.sas();
        assert!(
            sas.iter().all(|sa| sa
                .selector
                .is_some_and(|x| x.src.len == 0 && x.dst.len == 0)),
            "{sas:?}"
        );
        assert!(spd(&f).iter().all(|(_, d, src, _, reqid)| *reqid == 1
            && *src == ip(if *d == Dir::Out { P1.0 } else { P1.1 })));

        let enc = Some(Encap {
            sport: 4500,
            dport: 4500,
        });
        let h2 = f
            .migrate_child_sa(&h, outer(P2), enc)
            .await
            .expect("migrate");
        assert_eq!((h2.outer, h2.encap), (outer(P2), enc));
        assert_eq!(f.len(), (2, 12));
        for (sel, d, src, dst, _) in spd(&f) {
            let (s, t) = if d == Dir::Out { P2 } else { (P2.1, P2.0) };
            assert_eq!((src, dst), (ip(s), ip(t)), "{d} {sel}: template not moved");
        }
        // One MIGRATE per policy, in order: pair by pair, out/in/fwd.
        let mut migrates = Vec::new();
        while migrates.len() < 12 {
            match events.next().await {
                Some(Ok(XfrmEvent::Migrate { selector, dir, .. })) => {
                    migrates.push((selector, dir))
                }
                Some(Ok(_)) => {}
                other => panic!("{other:?}"),
            }
        }
        let want: Vec<_> = h
            .policy_keys()
            .into_iter()
            .map(|k| (Some(k.selector), Some(k.dir)))
            .collect();
        assert_eq!(migrates, want);

        f.delete_child_sa(&h2).await.expect("delete");
        assert!(f.is_empty(), "{:?}", f.len());
        let e = f.delete_child_sa(&h2).await.expect_err("double delete");
        assert!(matches!(e, Error::DeletePolicy { .. }), "{e:?}");
    });
}

#[test]
fn fake_refuses_an_overlapping_policy_and_leaves_nothing_behind() {
    rt().block_on(async {
        let f = FakeBackend::new();
        f.install_child_sa(&spec(0x100, 0x200, 1, two_by_two()))
            .await
            .expect("first");
        // Other SPIs and reqid, but 10.3.0.0/24 <-> 10.4.0.0/24 again.
        let other = spec(
            0x300,
            0x400,
            2,
            vec![
                pair("10.5.0.0/24", "10.6.0.0/24"),
                pair("10.3.0.0/24", "10.4.0.0/24"),
            ],
        );
        let e = f.install_child_sa(&other).await.expect_err("overlap");
        let Error::AddPolicy { dir, selector, .. } = &e else {
            panic!("{e:?}");
        };
        assert_eq!(
            (*dir, *selector),
            (Dir::Out, pair("10.3.0.0/24", "10.4.0.0/24").outbound())
        );
        assert_eq!(e.errno(), Some(libc::EEXIST));
        assert!(e.to_string().contains("10.3.0.0/24 -> 10.4.0.0/24"), "{e}");
        assert_eq!(f.len(), (2, 12), "failed install must leave nothing behind");
    });
}

#[test]
fn fake_refuses_lists_it_cannot_install() {
    rt().block_on(async {
        let f = FakeBackend::new();
        let cases = [
            (vec![], SelectorError::Empty),
            (
                vec![pair("10.1.0.0/24", "fd02::/64")],
                SelectorError::MixedFamily(pair("10.1.0.0/24", "fd02::/64")),
            ),
            (
                vec![
                    pair("10.1.0.0/24", "10.2.0.0/24"),
                    pair("10.3.0.0/24", "10.4.0.0/24"),
                    pair("10.1.0.0/24", "10.2.0.0/24"),
                ],
                SelectorError::Duplicate(pair("10.1.0.0/24", "10.2.0.0/24")),
            ),
        ];
        for (sels, want) in cases {
            let e = f
                .install_child_sa(&spec(0x100, 0x200, 1, sels))
                .await
                .expect_err("invalid list");
            assert!(matches!(&e, Error::Selectors(got) if *got == want), "{e:?}");
            assert!(f.is_empty());
        }
    });
}

#[test]
fn fake_migrate_with_a_policy_missing_fails_and_moves_nothing() {
    rt().block_on(async {
        let f = FakeBackend::new();
        let h = f
            .install_child_sa(&spec(0x100, 0x200, 1, two_by_two()))
            .await
            .expect("install");
        f.record_traffic(&h, 10, 20).expect("traffic");
        let before = spd(&f);
        // A handle naming one pair more than was installed.
        let mut more = h.clone();
        more.selectors.push(pair("10.7.0.0/24", "10.8.0.0/24"));
        let e = f
            .migrate_child_sa(&more, outer(P2), None)
            .await
            .expect_err("missing policy");
        let Error::Migrate { dir, selector, .. } = &e else {
            panic!("{e:?}");
        };
        assert_eq!(
            (*dir, *selector),
            (Dir::Out, pair("10.7.0.0/24", "10.8.0.0/24").outbound())
        );
        assert_eq!(e.errno(), Some(libc::ENOENT));
        assert_eq!(spd(&f), before, "policies changed by a refused migrate");
        let c = f.counters(&h).await.expect("SAs where they were");
        assert_eq!((c.outbound.bytes, c.inbound.bytes), (10, 20));
        // An empty list is refused before anything is looked at.
        let mut none = h.clone();
        none.selectors.clear();
        let e = f
            .migrate_child_sa(&none, outer(P2), None)
            .await
            .expect_err("no selectors");
        assert!(matches!(e, Error::Selectors(SelectorError::Empty)), "{e:?}");
    });
}

const SPEC_HEAD: &str = r#""outer":{"local":"192.0.2.1","remote":"192.0.2.2"},"mode":"tunnel","reqid":1,"spi_out":256,"spi_in":512,"crypto_out":{"kind":"aead","alg":"rfc4106(gcm(aes))","key":"0101010101010101010101010101010101010101","icv_bits":128},"crypto_in":{"kind":"aead","alg":"rfc4106(gcm(aes))","key":"0202020202020202020202020202020202020202","icv_bits":128}"#;

fn parse_spec(sel: &str) -> Result<ChildSaSpec, serde_json::Error> {
    serde_json::from_str(&format!("{{{SPEC_HEAD},{sel}}}"))
}

#[test]
fn spec_json_accepts_the_single_pair_form_lists_and_selectors() {
    let legacy = parse_spec(r#""local_ts":"10.1.0.0/24","remote_ts":"10.2.0.0/24""#)
        .expect("single-pair form");
    assert_eq!(legacy.selectors, vec![pair("10.1.0.0/24", "10.2.0.0/24")]);
    assert_eq!(legacy, spec(0x100, 0x200, 1, legacy.selectors.clone()));
    let lists = parse_spec(
        r#""local_ts":["10.1.0.0/24","10.3.0.0/24"],"remote_ts":["10.2.0.0/24","10.4.0.0/24"]"#,
    )
    .expect("lists");
    assert_eq!(lists.selectors, two_by_two());
    let explicit = parse_spec(
        r#""selectors":[{"local":"10.1.0.0/24","remote":"10.2.0.0/24"},{"local":"10.3.0.0/24","remote":"10.4.0.0/24"}]"#,
    )
    .expect("selectors");
    assert_eq!(explicit.selectors.len(), 2);
    // Serialization writes `selectors`, and reads back the same.
    let text = serde_json::to_string(&lists).expect("serialize");
    assert!(
        text.contains(r#""selectors":[{"local":"10.1.0.0/24""#),
        "{text}"
    );
    assert!(!text.contains("local_ts"), "{text}");
    let back: ChildSaSpec = serde_json::from_str(&text).expect("round trip");
    assert_eq!(back, lists);
    let h = lists.handle();
    let back: ChildSaHandle =
        serde_json::from_str(&serde_json::to_string(&h).expect("ser")).expect("handle");
    assert_eq!(back, h);
    // A handle written before lists existed still reads.
    let old_handle = r#"{"outer":{"local":"192.0.2.1","remote":"192.0.2.2"},"local_ts":"10.1.0.0/24","remote_ts":"10.2.0.0/24","mode":"tunnel","reqid":1,"spi_out":256,"spi_in":512,"encap":null,"mark":null,"if_id":null}"#;
    let h: ChildSaHandle = serde_json::from_str(old_handle).expect("old handle");
    assert_eq!(h.selectors, vec![pair("10.1.0.0/24", "10.2.0.0/24")]);
}

#[test]
fn spec_json_errors_say_what_is_wrong_with_the_selectors() {
    for (sel, needle) in [
        ("\"x\":1", "missing `selectors`"),
        (
            r#""local_ts":"10.1.0.0/24""#,
            "`local_ts` without `remote_ts`",
        ),
        (
            r#""remote_ts":"10.1.0.0/24""#,
            "`remote_ts` without `local_ts`",
        ),
        (
            r#""selectors":[],"local_ts":"10.1.0.0/24","remote_ts":"10.2.0.0/24""#,
            "not both",
        ),
        (
            r#""local_ts":"10.1.0.0/24","remote_ts":["fd02::/64"]"#,
            "local_ts [10.1.0.0/24] and remote_ts [fd02::/64] have no pair of one address family",
        ),
    ] {
        let e = parse_spec(sel).expect_err(sel).to_string();
        assert!(e.contains(needle), "{sel}: {e}");
    }
}
