//! Route lookups for the policy against the real kernel, in a network
//! namespace of the test's own thread: the source address is part of the
//! lookup (a source rule applies; a peer routed out of the other uplink is
//! answered with that uplink), routes that drop packets and missing routes
//! are NoRoute, for IPv4 and IPv6; the cache answers exactly the pairs of
//! its last refresh. Needs root and iproute2 (ignored otherwise).
//!
//!   u1 192.0.2.1/24    2001:db8:1::1/64  (peer end p1)
//!   u2 198.51.100.1/24 2001:db8:2::1/64  (peer end p2)
//!   main: 203.0.113.0/24 and 2001:db8:99::/48 via u2 only; 198.18.5.0/24
//!         via u2; blackhole, unreachable and prohibit prefixes; no default
//!   rule: from 192.0.2.1 lookup 100, where 198.18.5.0/24 is on u1

use std::net::IpAddr;

use mobike_agent::mobility::{
    RouteAnswer, RouteView,
    route_lookup::{RouteCache, RouteLookup},
};
use system_tests::{
    netns::{in_new_netns, ip_here, veth_here},
    process,
};

fn a(s: &str) -> IpAddr {
    s.parse().expect("address")
}

/// From `ip -o link show dev DEV` (`7: u1@p1: <...`); /sys shows the
/// host's namespace, not this thread's.
fn ifindex(dev: &str) -> u32 {
    let line = process::output("ip", &["-o", "link", "show", "dev", dev]);
    line.split(':')
        .next()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no ifindex in {line:?}"))
}

fn set_up() -> (u32, u32) {
    veth_here("u1", "p1");
    veth_here("u2", "p2");
    for line in [
        "addr add 192.0.2.1/24 dev u1",
        "addr add 198.51.100.1/24 dev u2",
        "-6 addr add 2001:db8:1::1/64 dev u1 nodad",
        "-6 addr add 2001:db8:2::1/64 dev u2 nodad",
        "route add 203.0.113.0/24 via 198.51.100.254 dev u2",
        "route add 198.18.5.0/24 via 198.51.100.254 dev u2",
        "route add 198.18.5.0/24 dev u1 table 100",
        "rule add from 192.0.2.1 lookup 100 priority 100",
        "route add blackhole 100.64.1.0/24",
        "route add unreachable 100.64.2.0/24",
        "route add prohibit 100.64.3.0/24",
        "-6 route add 2001:db8:99::/48 via 2001:db8:2::fe dev u2",
        "-6 route add blackhole 2001:db8:b1::/48",
        "-6 route add unreachable 2001:db8:b2::/48",
        "-6 route add prohibit 2001:db8:b3::/48",
    ] {
        ip_here(line);
    }
    (ifindex("u1"), ifindex("u2"))
}

#[test]
#[ignore = "needs root (network namespace)"]
fn lookups_follow_the_source_and_name_dropping_routes_no_route() {
    in_new_netns(|| async {
        let (u1, u2) = set_up();
        let mut lookup = RouteLookup::new().expect("rtnetlink");
        let v4 = a("192.0.2.1");
        let v4b = a("198.51.100.1");
        let v6 = a("2001:db8:1::1");
        let cases = [
            // On-link on the source's own uplink.
            (v4, "192.0.2.77", RouteAnswer::Via(u1)),
            (v6, "2001:db8:1::77", RouteAnswer::Via(u1)),
            // Only routed out of the other uplink: the kernel says so, and
            // the policy drops the pair for u1's address.
            (v4, "203.0.113.9", RouteAnswer::Via(u2)),
            (v6, "2001:db8:99::9", RouteAnswer::Via(u2)),
            // The source selects the table (rule `from 192.0.2.1`).
            (v4, "198.18.5.5", RouteAnswer::Via(u1)),
            (v4b, "198.18.5.5", RouteAnswer::Via(u2)),
            // Routes that drop, and no route at all.
            (v4, "100.64.1.1", RouteAnswer::NoRoute),
            (v4, "100.64.2.1", RouteAnswer::NoRoute),
            (v4, "100.64.3.1", RouteAnswer::NoRoute),
            (v4, "100.64.9.9", RouteAnswer::NoRoute),
            (v6, "2001:db8:b1::1", RouteAnswer::NoRoute),
            (v6, "2001:db8:b2::1", RouteAnswer::NoRoute),
            (v6, "2001:db8:b3::1", RouteAnswer::NoRoute),
            (v6, "2001:db8:ff::1", RouteAnswer::NoRoute),
            // A pair of two families is no pair.
            (v4, "2001:db8:1::77", RouteAnswer::NoRoute),
        ];
        for (local, remote, expect) in cases {
            assert_eq!(
                lookup.route(local, a(remote)).await,
                expect,
                "{local} -> {remote}"
            );
        }

        // The cache: every pair at once, then exactly the next set.
        let mut cache = RouteCache::new();
        cache
            .refresh(&mut lookup, cases.iter().map(|(l, r, _)| (*l, a(r))))
            .await;
        assert_eq!(cache.len(), cases.len());
        for (local, remote, expect) in cases {
            assert_eq!(cache.route(local, a(remote)), expect, "{local} -> {remote}");
        }
        assert_eq!(
            cache.route(v4, a("192.0.2.78")),
            RouteAnswer::Unknown,
            "not looked up"
        );
        cache
            .refresh(
                &mut lookup,
                [(v4, a("203.0.113.9")), (v4, a("203.0.113.9"))],
            )
            .await;
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.route(v4, a("203.0.113.9")), RouteAnswer::Via(u2));
        assert_eq!(cache.route(v4, a("192.0.2.77")), RouteAnswer::Unknown);

        // A route change shows at the next refresh.
        ip_here("route replace 203.0.113.0/24 dev u1");
        cache.refresh(&mut lookup, [(v4, a("203.0.113.9"))]).await;
        assert_eq!(cache.route(v4, a("203.0.113.9")), RouteAnswer::Via(u1));
    });
}
