//! Route lookups for the mobility policy (`mobility::route_lookup`): how
//! long one RTM_GETROUTE takes on the lookup's own socket, against the
//! same lookup over an rtnetlink connection (its own task, the way the
//! agent asked before), and a cache refresh of K pairs. On a 2-worker
//! tokio runtime, as the agent runs, in a network namespace (two veth
//! uplinks, a peer prefix behind each, IPv4 and IPv6); needs root and
//! iproute2, else it says so and exits 0.
//!
//! `cargo bench -p mobike-agent --bench route_lookup [-- ROUNDS]`
//! (default 2000 rounds per figure). Figures: docs/benchmarks.md.

use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

use futures::TryStreamExt as _;
use mobike_agent::mobility::route_lookup::{RouteCache, RouteLookup};
use netlink_packet_route::route::{RouteProtocol, RouteType};
use rtnetlink::RouteMessageBuilder;
use system_tests::{
    netns::{in_new_netns, ip_here, veth_here},
    process,
};
fn set_up() {
    veth_here("u1", "p1");
    veth_here("u2", "p2");
    for line in [
        "addr add 192.0.2.1/24 dev u1",
        "addr add 198.51.100.1/24 dev u2",
        "-6 addr add 2001:db8:1::1/64 dev u1 nodad",
        "-6 addr add 2001:db8:2::1/64 dev u2 nodad",
        "route add 203.0.113.0/24 via 198.51.100.254 dev u2",
        "route add 198.18.0.0/16 via 192.0.2.254 dev u1",
        "-6 route add 2001:db8:99::/48 via 2001:db8:2::fe dev u2",
    ] {
        ip_here(line);
    }
}

/// `k` pairs: every local address against peers behind both uplinks.
fn pairs(k: usize) -> Vec<(IpAddr, IpAddr)> {
    let locals: [IpAddr; 2] = [
        "192.0.2.1".parse().unwrap(),
        "198.51.100.1".parse().unwrap(),
    ];
    let locals6: [IpAddr; 2] = [
        "2001:db8:1::1".parse().unwrap(),
        "2001:db8:2::1".parse().unwrap(),
    ];
    (0..k)
        .map(|i| {
            let n = u8::try_from(i / 4 % 250).unwrap() + 1;
            match i % 4 {
                0 => (locals[0], IpAddr::from([203, 0, 113, n])),
                1 => (locals[1], IpAddr::from([198, 18, 0, n])),
                2 => (locals6[0], format!("2001:db8:99::{n:x}").parse().unwrap()),
                _ => (locals6[1], format!("2001:db8:99::{n:x}").parse().unwrap()),
            }
        })
        .collect()
}

/// Median, 99th percentile and maximum of `samples`, in microseconds.
fn summary(mut samples: Vec<Duration>) -> String {
    samples.sort_unstable();
    let at = |q: f64| {
        let i = ((samples.len() - 1) as f64 * q).round() as usize;
        samples[i].as_secs_f64() * 1e6
    };
    format!("{:.1} | {:.1} | {:.1}", at(0.5), at(0.99), at(1.0))
}

async fn time_each(rounds: usize, mut f: impl AsyncFnMut()) -> String {
    for _ in 0..rounds / 10 {
        f().await;
    }
    let mut samples = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let start = Instant::now();
        f().await;
        samples.push(start.elapsed());
    }
    summary(samples)
}

/// The same lookup over an rtnetlink connection (the agent's way before
/// its own socket): the request through the connection's task and back.
async fn over_connection(handle: &rtnetlink::Handle, local: IpAddr, remote: IpAddr) {
    let host = |a: IpAddr| if a.is_ipv4() { 32 } else { 128 };
    let mut m = RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(remote, host(remote))
        .and_then(|b| b.source_prefix(local, host(local)))
        .expect("route request")
        .build();
    m.header.table = 0;
    m.header.protocol = RouteProtocol::Unspec;
    m.header.kind = RouteType::Unspec;
    let mut replies = handle.route().get(m).execute();
    let _ = replies.try_next().await;
}

async fn bench(rounds: usize) {
    let mut lookup = RouteLookup::new().expect("rtnetlink");
    let (conn, handle, _) = rtnetlink::new_connection().expect("rtnetlink connection");
    tokio::spawn(conn);
    println!("| what | pairs | median µs | p99 µs | max µs |");
    println!("|---|---:|---:|---:|---:|");
    let one = pairs(1)[0];
    let s = time_each(rounds, async || {
        lookup.route(one.0, one.1).await;
    })
    .await;
    println!("| one lookup, own socket | 1 | {s} |");
    let s = time_each(rounds, async || {
        over_connection(&handle, one.0, one.1).await
    })
    .await;
    println!("| one lookup, over an rtnetlink connection (before) | 1 | {s} |");
    let s = time_each(rounds / 4, async || {
        let mut fresh = RouteLookup::new().expect("rtnetlink");
        fresh.route(one.0, one.1).await;
    })
    .await;
    println!("| one lookup, new socket each | 1 | {s} |");
    for k in [4, 16, 64] {
        let set = pairs(k);
        // A fresh cache per round, as a refresh replaces it anyway.
        let s = time_each(rounds, async || {
            let mut cache = RouteCache::new();
            cache.refresh(&mut lookup, set.iter().copied()).await;
            assert_eq!(cache.len(), k);
        })
        .await;
        println!("| cache refresh, own socket | {k} | {s} |");
        let s = time_each(rounds, async || {
            futures::future::join_all(set.iter().map(|&(l, r)| over_connection(&handle, l, r)))
                .await;
        })
        .await;
        println!(
            "| the same lookups in flight together over the connection (before) | {k} | {s} |"
        );
    }
}

fn main() {
    let rounds: usize = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with("--"))
        .and_then(|a| a.parse().ok())
        .unwrap_or(2000);
    if !process::is_root() {
        eprintln!("route_lookup: skipped (needs root for a network namespace)");
        return;
    }
    in_new_netns(move || async move {
        set_up();
        // The agent's runtime: 2 workers (their threads share this
        // thread's network namespace).
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("tokio runtime")
                .block_on(bench(rounds));
        })
        .join()
        .expect("bench thread");
    });
}
