//! At start the agent removes the XFRM policies of its reqids and the routes
//! of its routing protocol that a killed run left behind, and nothing of
//! another daemon's; against the real kernel in a network namespace of its
//! own. The host kernel has XFRM but no ESP, so SAs cannot be installed
//! here: the SA half is a unit test against the fake backend
//! (`kernel::tests::a_new_run_removes_the_sas_and_policies_of_our_reqids_a_killed_run_left`).
//! Needs root and iproute2; without them the test says so and passes.

use std::net::IpAddr;

use ipsec_backend::{
    Leftovers, SelectorPair, XfrmHandle,
    types::{Dir, Mode, PolicySpec, Prefix, Proto, Template, TrafficSelector},
};
use mobike_agent::{
    engine::REQIDS,
    kernel::Kernel,
    routes::{RouteConfig, Routes},
};
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

/// An out policy for `local` -> `remote` through an ESP tunnel of `reqid`.
fn policy(local: &str, remote: &str, reqid: u32) -> PolicySpec {
    PolicySpec {
        selector: TrafficSelector::new(p(local), p(remote)),
        dir: Dir::Out,
        priority: 0,
        action: Default::default(),
        templates: vec![Template {
            src: a("192.0.2.1"),
            dst: a("198.51.100.2"),
            proto: Proto::Esp,
            mode: Mode::Tunnel,
            reqid,
            spi: 0,
            optional: false,
        }],
        mark: None,
        if_id: None,
    }
}

#[test]
fn a_new_run_removes_the_policies_and_routes_a_killed_run_left_and_only_those() {
    let Some(ns) = Netns::try_new("mbklefA") else {
        eprintln!("skipped: needs root and iproute2 (network namespace)");
        return;
    };
    let peer_ns = Netns::new("mbklefB");
    netns::veth(&ns, "vA", &peer_ns, "vB");
    ns.ip_line("addr add 192.0.2.1/24 dev vA");
    peer_ns.ip_line("addr add 192.0.2.254/24 dev vB");
    ns.up("vA");
    peer_ns.up("vB");
    ns.ip_line("addr add 10.1.0.1/32 dev lo");
    ns.ip_line("route add 198.51.100.0/24 via 192.0.2.254");

    let name = ns.name().to_owned();
    let res = ipsec_backend::netns::in_netns(&ns.path(), move || async move {
        let xfrm = XfrmHandle::new().expect("xfrm socket");
        // The killed run: its policies (ours by reqid) and its routes.
        let ours = *REQIDS.start();
        for spec in [
            policy("10.1.0.0/24", "10.2.0.0/24", ours),
            policy("10.1.0.0/24", "10.4.0.0/16", ours + 1),
        ] {
            xfrm.policy().add(&spec).await.expect("our policy");
        }
        let mut killed = Routes::new(RouteConfig::default()).expect("rtnetlink");
        let pairs = [
            ("10.1.0.0/24", "10.2.0.0/24"),
            ("10.1.0.0/24", "10.4.0.0/16"),
        ]
        .map(|(l, r)| SelectorPair::new(p(l), p(r)));
        let n = killed
            .install(ours, &pairs, a("198.51.100.2"))
            .await
            .expect("routes");
        assert_eq!(n, 2);
        drop(killed);
        // Another daemon's (charon's reqids count up from 1; its routes
        // are `proto static` in the same table).
        xfrm.policy()
            .add(&policy("10.5.0.0/24", "10.6.0.0/24", 1))
            .await
            .expect("other policy");
        process::run(
            "ip",
            &[
                "-n",
                &name,
                "route",
                "add",
                "10.6.0.0/24",
                "dev",
                "lo",
                "table",
                "220",
                "proto",
                "static",
            ],
        );
        let before = process::output("ip", &["-n", &name, "route", "show", "table", "220"]);
        let rules_before = process::output("ip", &["-n", &name, "rule", "show"]);

        // The next run, as the runtime starts it.
        let kernel = Kernel::xfrm().expect("xfrm backend");
        let gone = kernel.remove_leftovers().await.expect("policies");
        let routes = Routes::new(RouteConfig::default()).expect("rtnetlink");
        let routes_gone = routes.remove_leftovers().await.expect("routes");
        let policies: Vec<u32> = xfrm
            .policy()
            .dump()
            .await
            .expect("dump")
            .iter()
            .flat_map(|p| p.templates.iter().map(|t| t.reqid))
            .collect();
        let after = process::output("ip", &["-n", &name, "route", "show", "table", "220"]);
        let rules_after = process::output("ip", &["-n", &name, "rule", "show"]);
        (
            gone,
            routes_gone,
            policies,
            (before, after),
            (rules_before, rules_after),
        )
    })
    .expect("netns");
    let (gone, routes_gone, policies, (before, after), (rules_before, rules_after)) = res;
    assert_eq!(
        gone,
        Leftovers {
            sas: 0,
            policies: 2
        }
    );
    assert_eq!(policies, [1], "the other daemon's policy stays");
    assert!(
        before.contains("10.2.0.0/24") && before.contains("proto 167"),
        "{before}"
    );
    assert_eq!(routes_gone, 2);
    assert!(!after.contains("10.2.0.0/24"), "{after}");
    assert!(!after.contains("10.4.0.0/16"), "{after}");
    assert!(after.contains("10.6.0.0/24 dev lo proto static"), "{after}");
    // The rule the killed run added (marked proto 167) goes as well.
    assert!(
        rules_before.contains("220:\tfrom all lookup 220 proto 167"),
        "{rules_before}"
    );
    assert!(!rules_after.contains("lookup 220"), "{rules_after}");
}
