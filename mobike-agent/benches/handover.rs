//! Trigger received -> update on the wire, in-process: the time from a
//! link event reaching the mobility manager to the engine's
//! UPDATE_SA_ADDRESSES datagram being ready to send (issue target: at most
//! 1 ms), and from the event to the path tests being ready when no
//! alternate was tested recently.
//!
//! Two engines in memory (no sockets, no kernel): A, the initiator with
//! two local addresses on two interfaces (eth0, wlan0), and B, the
//! responder; A's [`Driver`] holds the link table. Each round takes A's
//! current link down (a carrier event) and measures until the first
//! datagram from the other address, then completes the exchange and brings
//! the link back. Two variants: with the alternate path-tested just before
//! (the background probes' case: the update goes at once) and without
//! (a path test goes first; measured to the test's datagram).
//!
//! `cargo bench -p mobike-agent --bench handover [-- ROUNDS]` (default
//! 2000).

use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant, SystemTime},
};

use mobike_agent::{
    config_file::FileConfig,
    engine::{Endpoint, EndpointConfig},
    mobility::{
        LinkEvent,
        driver::Driver,
        links::{AddrFlags, IfaceKind, LocalAddr, OperState},
        manager::Cause,
        policy::RouteAnswer,
    },
};

const A1: &str = "192.0.2.1";
const A2: &str = "198.51.100.1";
const B: &str = "192.0.2.2";

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

fn config(text: &str) -> EndpointConfig {
    FileConfig::parse(text)
        .and_then(|f| f.to_agent_config())
        .expect("config")
        .endpoint
}

/// Connection `c` with CHILD_SA `net` from `ours` to `theirs` (10.x.0.0/24
/// each); `addrs` are the address lines of the connection.
fn side(addrs: &str, me: &str, peer: &str, ours: u8, theirs: u8) -> EndpointConfig {
    config(&format!(
        "[connections.c]
{addrs}
local_id = \"{me}.test\"
remote_id = \"{peer}.test\"
psk = \"bench-psk-0123456789\"
proposals = [\"aes256gcm16-prfsha256-x25519\"]
mobike = true
[connections.c.children.net]
local_ts = [\"10.{ours}.0.0/24\"]
remote_ts = [\"10.{theirs}.0.0/24\"]
esp_proposals = [\"aes256gcm16\"]
"
    ))
}

fn configs() -> (EndpointConfig, EndpointConfig) {
    let a = format!("local_addrs = [\"{A1}\", \"{A2}\"]\nremote_addrs = [\"{B}\"]");
    let b = format!("local_addrs = [\"{B}\"]");
    (side(&a, "a", "b", 1, 2), side(&b, "b", "a", 2, 1))
}

/// A and B, with A's driver; datagrams are delivered at once.
struct Pair {
    a: Endpoint,
    b: Endpoint,
    driver: Driver,
}

impl Pair {
    /// Delivers every queued datagram both ways (handing A's events to the
    /// driver and driving it) until nothing moves.
    fn settle(&mut self) {
        loop {
            let mut moved = false;
            self.drive_a();
            while let Some(t) = self.a.poll_transmit() {
                moved = true;
                self.b
                    .handle_datagram(Instant::now(), t.remote, t.local, &t.payload);
            }
            while let Some(t) = self.b.poll_transmit() {
                moved = true;
                self.a
                    .handle_datagram(Instant::now(), t.remote, t.local, &t.payload);
            }
            while self.b.poll_event().is_some() {}
            while self.b.poll_kernel_action().is_some() {}
            while self.a.poll_kernel_action().is_some() {}
            if !moved {
                return;
            }
        }
    }

    fn drive_a(&mut self) {
        loop {
            let now = Instant::now();
            let mut n = 0;
            while let Some(e) = self.a.poll_event() {
                n += 1;
                self.driver.on_event(&self.a, &e, now);
            }
            let table = self.driver.manager().table().clone();
            let routes = move |local: IpAddr, _: IpAddr| match table.owner_of(local) {
                Some(i) => RouteAnswer::Via(i.index),
                None => RouteAnswer::NoRoute,
            };
            self.driver.drive(&mut self.a, &routes, now, |_| true);
            if n == 0 {
                return;
            }
        }
    }

    /// A's IKE SA's local address.
    fn local(&self) -> IpAddr {
        self.a.ike_sas()[0].path.local.ip()
    }
}

fn link(index: u32, name: &str, kind: IfaceKind, up: bool) -> LinkEvent {
    LinkEvent::Link {
        index,
        name: name.into(),
        kind,
        driver_kind: String::new(),
        admin_up: true,
        carrier: up,
        oper: if up { OperState::Up } else { OperState::Down },
    }
}

fn addr(index: u32, a: &str) -> LinkEvent {
    LinkEvent::Addr {
        index,
        addr: LocalAddr {
            addr: ip(a),
            prefix_len: 24,
            flags: AddrFlags::default(),
        },
    }
}

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// One variant: `tested` says whether the alternate is path-tested just
/// before each trigger. Returns the times from the trigger to A's first
/// datagram from the other address.
fn run(rounds: usize, tested: bool) -> Vec<Duration> {
    let (ca, cb) = configs();
    let mut cfg = mobike_agent::mobility::config::MobilityConfig {
        probe_interval: None,
        ..Default::default()
    };
    // Both links equal: no voluntary moves back.
    cfg.policy.hysteresis = 1000;
    if !tested {
        // No earlier answer counts: every move tests first.
        cfg.policy.test_valid_for = Duration::ZERO;
    }
    let mut p = Pair {
        a: Endpoint::new(ca).expect("A"),
        b: Endpoint::new(cb).expect("B"),
        driver: Driver::new(cfg),
    };
    let now = Instant::now();
    for ev in [
        link(1, "eth0", IfaceKind::Ethernet, true),
        addr(1, A1),
        link(2, "wlan0", IfaceKind::Ethernet, true),
        addr(2, A2),
    ] {
        p.driver.manager_mut().on_link_event(ev, None, now);
    }
    p.a.handle_command(
        now,
        mobike_agent::engine::Command::Initiate {
            connection: "c".into(),
            local: None,
        },
    )
    .expect("initiate");
    p.settle();
    assert_eq!(p.a.ike_sa_count(), 1, "IKE SA up");
    let mut out = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let from = p.local();
        let (down, other) = if from == ip(A1) {
            (1, ip(A2))
        } else {
            (2, ip(A1))
        };
        let name = if down == 1 { "eth0" } else { "wlan0" };
        if tested {
            let sa = p.a.ike_sas()[0].id;
            let cmd = mobike_agent::engine::Command::TestPaths {
                sa,
                paths: vec![mobike_agent::engine::Path {
                    local: SocketAddr::new(other, 4500),
                    remote: SocketAddr::new(ip(B), 4500),
                }],
            };
            p.a.handle_command(Instant::now(), cmd).expect("test");
            p.settle();
        }
        let t0 = Instant::now();
        let cause = Cause {
            id: 1,
            observed: SystemTime::now(),
            received: t0,
        };
        p.driver.manager_mut().on_link_event(
            link(down, name, IfaceKind::Ethernet, false),
            Some(cause),
            t0,
        );
        p.drive_a();
        let t = p.a.poll_transmit().expect("a datagram");
        let dt = t0.elapsed();
        assert_eq!(t.local.ip(), other, "sent from the other link");
        p.b.handle_datagram(Instant::now(), t.remote, t.local, &t.payload);
        p.settle();
        assert_eq!(p.local(), other, "moved");
        out.push(dt);
        p.driver.manager_mut().on_link_event(
            link(down, name, IfaceKind::Ethernet, true),
            None,
            Instant::now(),
        );
        p.settle();
    }
    out
}

fn main() {
    let rounds: usize = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with("--"))
        .and_then(|a| a.parse().ok())
        .unwrap_or(2000);
    for (tested, what) in [
        (
            true,
            "trigger -> UPDATE_SA_ADDRESSES ready (alternate tested)",
        ),
        (false, "trigger -> path test ready (nothing tested)"),
    ] {
        let mut v = run(rounds, tested);
        let p50 = percentile(&mut v, 0.5);
        let p99 = percentile(&mut v, 0.99);
        let max = *v.last().expect("rounds");
        println!("{what}: {rounds} rounds, median {p50:?}, p99 {p99:?}, max {max:?}");
    }
}
