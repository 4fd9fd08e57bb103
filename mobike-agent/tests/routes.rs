//! The agent's tunnel routes against the real kernel, in network namespaces
//! of their own (no ESP needed: routes and rules only). Needs root and
//! iproute2; without them the test says so and passes.
//!
//!   netns A: vA 192.0.2.1/24  <->  vB 192.0.2.254/24 in netns B
//!            vC 198.18.0.1/24 <->  vD 198.18.0.254/24 in netns B
//!            10.1.0.1/32 and fd01::1/128 on lo (inner addresses)
//!   peer 198.51.100.2 is routed via 192.0.2.254, 203.0.113.2 via 198.18.0.254

use std::net::IpAddr;

use ipsec_backend::{SelectorPair, types::Prefix};
use mobike_agent::routes::{RouteConfig, Routes};
use system_tests::{
    netns::{self, Netns},
    process,
};

fn p(s: &str) -> Prefix {
    s.parse().expect("prefix")
}
fn a(s: &str) -> IpAddr {
    s.parse().expect("address")
}

#[test]
fn routes_follow_the_child_sa_and_the_peer_and_go_away() {
    let Some(a_ns) = Netns::try_new("mbkrtA") else {
        eprintln!("skipped: needs root and iproute2 (network namespace)");
        return;
    };
    let b_ns = Netns::new("mbkrtB");
    netns::veth(&a_ns, "vA", &b_ns, "vB");
    netns::veth(&a_ns, "vC", &b_ns, "vD");
    a_ns.ip_line("addr add 192.0.2.1/24 dev vA");
    a_ns.ip_line("addr add 198.18.0.1/24 dev vC");
    b_ns.ip_line("addr add 192.0.2.254/24 dev vB");
    b_ns.ip_line("addr add 198.18.0.254/24 dev vD");
    for (ns, dev) in [(&a_ns, "vA"), (&a_ns, "vC"), (&b_ns, "vB"), (&b_ns, "vD")] {
        ns.up(dev);
    }
    a_ns.ip_line("addr add 10.1.0.1/32 dev lo");
    a_ns.ip_line("addr add fd01::1/128 dev lo nodad");
    a_ns.ip_line("route add 198.51.100.0/24 via 192.0.2.254");
    a_ns.ip_line("route add 203.0.113.0/24 via 198.18.0.254");

    let path = a_ns.path();
    let ns = a_ns.name().to_owned();
    let res = ipsec_backend::netns::in_netns(&path, move || async move {
        let mut r = Routes::new(RouteConfig::default()).expect("rtnetlink");
        // A gateway-to-gateway CHILD_SA (no local address in 10.9.0.0/24):
        // no route.
        let n = r
            .install(
                7,
                &[SelectorPair::new(p("10.9.0.0/24"), p("10.8.0.0/24"))],
                a("198.51.100.2"),
            )
            .await
            .expect("install without local address");
        assert_eq!(n, 0);
        let pairs = [
            ("10.1.0.0/24", "10.2.0.0/24"),
            ("10.1.0.0/24", "10.4.0.0/16"),
            ("fd01::/64", "fd02::/64"),
        ]
        .map(|(l, r)| SelectorPair::new(p(l), p(r)));
        let n = r
            .install(1, &pairs, a("198.51.100.2"))
            .await
            .expect("install");
        assert_eq!(n, 3);
        let first = out_in(&ns, "route show table 220");
        let moved = {
            r.update(1, a("203.0.113.2")).await.expect("update");
            out_in(&ns, "route show table 220")
        };
        let v6 = out_in(&ns, "-6 route show table 220");
        let rules = out_in(&ns, "rule show");
        let get = out_in(&ns, "route get 10.2.0.9");
        r.remove(1).await.expect("remove");
        let after_remove = out_in(&ns, "route show table 220");
        r.remove_all().await.expect("remove_all");
        let rules_after = out_in(&ns, "rule show");
        (first, moved, v6, rules, get, after_remove, rules_after)
    })
    .expect("netns");
    let (first, moved, v6, rules, get, after_remove, rules_after) = res;
    assert!(
        first.contains("10.2.0.0/24 via 192.0.2.254 dev vA proto 167 src 10.1.0.1"),
        "{first}"
    );
    assert!(
        first.contains("10.4.0.0/16 via 192.0.2.254 dev vA proto 167 src 10.1.0.1"),
        "{first}"
    );
    assert!(!first.contains("10.8.0.0"), "{first}");
    // The peer moved to a path over vC: the routes follow.
    assert!(
        moved.contains("10.2.0.0/24 via 198.18.0.254 dev vC proto 167 src 10.1.0.1"),
        "{moved}"
    );
    assert!(!moved.contains("dev vA"), "{moved}");
    // IPv6 inside IPv4: the interface only, no IPv4 gateway.
    assert!(
        v6.contains("fd02::/64 dev vC proto 167 src fd01::1"),
        "{v6}"
    );
    assert!(rules.contains("220:\tfrom all lookup 220"), "{rules}");
    assert!(get.contains("src 10.1.0.1"), "{get}");
    assert!(after_remove.trim().is_empty(), "{after_remove}");
    assert!(!rules_after.contains("lookup 220"), "{rules_after}");
}

/// `ip -n NS ARGS` output (run from the namespace thread: `ip -n` enters
/// the namespace by name itself).
fn out_in(ns: &str, args: &str) -> String {
    let mut full = vec!["-n", ns];
    full.extend(args.split_whitespace());
    process::output("ip", &full)
}
