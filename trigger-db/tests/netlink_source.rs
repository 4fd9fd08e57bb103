//! The rtnetlink source against the real kernel. Each test runs on a thread
//! of its own that unshared its network namespace (CLONE_NEWNET) and drives
//! a current-thread runtime; the `ip` processes that thread forks inherit
//! the namespace, which each test checks (only `lo` there) before it
//! changes anything, so the host's interfaces are never touched. The
//! namespace dies with the thread. Needs root.

use std::{
    collections::{BTreeSet, VecDeque},
    net::IpAddr,
    process::{Command, Stdio},
    sync::Arc,
    time::Duration,
};

use std::io::Write as _;

use system_tests::{netns::in_new_netns, process};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use trigger_db::{
    ingest::SourceBatch,
    links::LinkTable,
    model::{
        AddressFlag, Detail, InterfaceKind, ReasonSpace, Source, Trigger, TriggerType,
        link_down_reason,
    },
    source::netlink::{self, NetlinkStats, Options},
};

/// Only so that a broken source fails the test instead of hanging it.
const PATIENCE: Duration = Duration::from_secs(30);

fn ip_out(args: &[&str]) -> String {
    process::output("ip", args)
}

fn ip(cmd: &str) {
    ip_out(&cmd.split_whitespace().collect::<Vec<_>>());
}

/// `ip -batch -` with these lines.
fn ip_batch(lines: &[String]) {
    let mut child = Command::new("ip")
        .args(["-batch", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("running ip -batch");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(lines.join("\n").as_bytes())
        .expect("writing the batch");
    assert!(child.wait().expect("ip -batch").success());
}

fn ifindex(name: &str) -> u32 {
    let out = ip_out(&["-o", "link", "show", "dev", name]);
    out.split(':')
        .next()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no ifindex in {out:?}"))
}

/// What the test has received from the source.
struct Watch {
    rx: mpsc::Receiver<SourceBatch>,
    /// Received and not yet matched by [`Watch::expect`].
    pending: VecDeque<Trigger>,
    /// Everything received, in order.
    log: Vec<Trigger>,
    table: Arc<LinkTable>,
    batches: u64,
}

impl Watch {
    async fn next_batch(&mut self) -> SourceBatch {
        let batch = tokio::time::timeout(PATIENCE, self.rx.recv())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no batch within {PATIENCE:?}; unmatched: {:#?}",
                    self.pending
                )
            })
            .expect("the source stopped");
        self.batches += 1;
        for t in &batch.triggers {
            assert_eq!(t.source, Source::Rtnetlink);
            t.check_complete("trigger")
                .unwrap_or_else(|e| panic!("{e}: {t:?}"));
        }
        self.table = batch.links.clone().expect("every batch carries the table");
        self.pending.extend(batch.triggers.iter().cloned());
        self.log.extend(batch.triggers.iter().cloned());
        batch
    }

    /// Waits for a trigger matching `pred` and takes it out of `pending`.
    async fn expect(&mut self, what: &str, pred: impl Fn(&Trigger) -> bool) -> Trigger {
        loop {
            if let Some(pos) = self.pending.iter().position(&pred) {
                return self.pending.remove(pos).expect("position is in range");
            }
            let _ = tokio::time::timeout(PATIENCE, self.next_batch())
                .await
                .unwrap_or_else(|_| panic!("waiting for {what}: {:#?}", self.pending));
        }
    }
}

fn on(t: &Trigger, kind: TriggerType, name: &str) -> bool {
    t.kind == kind && t.interface_name() == Some(name)
}

fn with_address(t: &Trigger, kind: TriggerType, name: &str, address: &str, prefix: u8) -> bool {
    on(t, kind, name)
        && t.address.as_ref().is_some_and(|a| {
            a.address == address.parse::<IpAddr>().expect("test address") && a.prefix_len == prefix
        })
}

fn down_code(t: &Trigger) -> u32 {
    let r = t.reason.as_ref().expect("LINK_DOWN has a reason");
    assert_eq!(r.space, ReasonSpace::LinkDown);
    r.code
}

/// Starts the source and takes its start batch.
async fn start(
    options: Options,
    capacity: usize,
) -> (
    Watch,
    Arc<NetlinkStats>,
    CancellationToken,
    tokio::task::JoinHandle<Result<(), netlink::NetlinkError>>,
) {
    let (tx, rx) = mpsc::channel(capacity);
    let stats = Arc::new(NetlinkStats::default());
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(netlink::run_with(
        options,
        tx,
        stats.clone(),
        shutdown.clone(),
    ));
    let mut w = Watch {
        rx,
        pending: VecDeque::new(),
        log: Vec::new(),
        table: Arc::new(LinkTable::default()),
        batches: 0,
    };
    let first = w.next_batch().await;
    assert_eq!(first.triggers.len(), 1, "{:?}", first.triggers);
    let marker = w.pending.pop_front().expect("start marker");
    assert_eq!(marker.kind, TriggerType::Resync);
    let Some(Detail::Resync(r)) = &marker.detail else {
        panic!("{marker:?}")
    };
    assert_eq!(r.cause, "start");
    assert_eq!(r.links as usize, w.table.links.len());
    (w, stats, shutdown, task)
}

#[test]
fn follows_links_addresses_and_default_routes() {
    in_new_netns(|| async {
        let (mut w, stats, shutdown, task) = start(Options::default(), 64).await;
        let lo = &w.table.links[&1];
        assert_eq!(lo.interface.name, "lo");
        assert_eq!(lo.interface.kind, Some(InterfaceKind::Loopback));
        assert_eq!(w.table.links.len(), 1);

        ip("link add vA type veth peer name vB");
        let (a_index, b_index) = (ifindex("vA"), ifindex("vB"));
        let t = w
            .expect("IF_ADDED vA", |t| on(t, TriggerType::IfAdded, "vA"))
            .await;
        let i = t.interface.as_ref().expect("interface");
        assert_eq!(i.index, a_index);
        assert_eq!(i.kind, Some(InterfaceKind::Veth));
        assert_eq!(i.driver_kind, "veth");
        let t = w
            .expect("IF_ADDED vB", |t| on(t, TriggerType::IfAdded, "vB"))
            .await;
        assert_eq!(t.interface.as_ref().map(|i| i.index), Some(b_index));

        ip("addr add 10.9.0.1/24 dev vA");
        let t = w
            .expect("IF_ADDRADDED 10.9.0.1/24", |t| {
                with_address(t, TriggerType::IfAddrAdded, "vA", "10.9.0.1", 24)
            })
            .await;
        assert_eq!(t.interface.as_ref().map(|i| i.index), Some(a_index));

        ip("link set vA up");
        ip("link set vB up");
        for name in ["vA", "vB"] {
            let t = w
                .expect("LINK_UP", |t| on(t, TriggerType::LinkUp, name))
                .await;
            let Some(Detail::LinkState(s)) = &t.detail else {
                panic!("{t:?}")
            };
            assert!(s.admin_up && s.carrier && s.is_up(), "{s:?}");
        }

        ip("addr add fd00::1/64 dev vA nodad");
        let t = w
            .expect("IF_ADDRADDED fd00::1/64", |t| {
                with_address(t, TriggerType::IfAddrAdded, "vA", "fd00::1", 64)
            })
            .await;
        let a = t.address.expect("address");
        assert!(
            a.has(AddressFlag::NoDad) && !a.has(AddressFlag::Tentative),
            "{a:?}"
        );

        // Duplicate address detection: tentative, then cleared...
        ip("addr add fd00::2/64 dev vA");
        let t = w
            .expect("IF_ADDRADDED fd00::2 tentative", |t| {
                with_address(t, TriggerType::IfAddrAdded, "vA", "fd00::2", 64)
            })
            .await;
        assert!(t.address.expect("address").has(AddressFlag::Tentative));
        let t = w
            .expect("IF_ADDRCHANGED fd00::2 DAD done", |t| {
                with_address(t, TriggerType::IfAddrChanged, "vA", "fd00::2", 64)
            })
            .await;
        assert!(!t.address.expect("address").has(AddressFlag::Tentative));
        // ... or failed, when vB already has the address.
        ip("addr add fd00::3/64 dev vB nodad");
        ip("addr add fd00::3/64 dev vA");
        w.expect("IF_ADDRADDED fd00::3 on vB", |t| {
            with_address(t, TriggerType::IfAddrAdded, "vB", "fd00::3", 64)
        })
        .await;
        w.expect("IF_ADDRADDED fd00::3 on vA", |t| {
            with_address(t, TriggerType::IfAddrAdded, "vA", "fd00::3", 64)
        })
        .await;
        let t = w
            .expect("IF_ADDRCHANGED fd00::3 dadfailed", |t| {
                with_address(t, TriggerType::IfAddrChanged, "vA", "fd00::3", 64)
            })
            .await;
        assert!(t.address.expect("address").has(AddressFlag::DadFailed));

        // Lifetimes: finite, then refreshed with preferred 0 (deprecated).
        ip("addr add fd00::4/64 dev vA nodad valid_lft 600 preferred_lft 300");
        let t = w
            .expect("IF_ADDRADDED fd00::4", |t| {
                with_address(t, TriggerType::IfAddrAdded, "vA", "fd00::4", 64)
            })
            .await;
        let a = t.address.expect("address");
        assert!(matches!(a.valid_lifetime_s, Some(1..=600)), "{a:?}");
        assert!(matches!(a.preferred_lifetime_s, Some(1..=300)), "{a:?}");
        assert!(!a.has(AddressFlag::Deprecated));
        ip("addr change fd00::4/64 dev vA nodad valid_lft 900 preferred_lft 0");
        let t = w
            .expect("IF_ADDRCHANGED fd00::4", |t| {
                with_address(t, TriggerType::IfAddrChanged, "vA", "fd00::4", 64)
            })
            .await;
        let a = t.address.expect("address");
        assert!(matches!(a.valid_lifetime_s, Some(601..=900)), "{a:?}");
        assert_eq!(a.preferred_lifetime_s, Some(0));
        assert!(a.has(AddressFlag::Deprecated), "{a:?}");

        ip("route add default via 10.9.0.254 dev vA");
        let t = w
            .expect("DEFAULT_ROUTE_ADDED v4", |t| {
                on(t, TriggerType::DefaultRouteAdded, "vA")
                    && matches!(&t.detail, Some(Detail::DefaultRoute(r)) if !r.ipv6)
            })
            .await;
        let Some(Detail::DefaultRoute(r)) = t.detail else {
            panic!("{t:?}")
        };
        assert_eq!(r.gateway, Some("10.9.0.254".parse().expect("ip")));
        assert_eq!((r.metric, r.table), (0, 254));

        ip("-6 route add default via fd00::fe dev vA metric 5");
        let t = w
            .expect("DEFAULT_ROUTE_ADDED v6", |t| {
                on(t, TriggerType::DefaultRouteAdded, "vA")
                    && matches!(&t.detail, Some(Detail::DefaultRoute(r)) if r.ipv6)
            })
            .await;
        let Some(Detail::DefaultRoute(r)) = t.detail else {
            panic!("{t:?}")
        };
        assert_eq!(r.gateway, Some("fd00::fe".parse().expect("ip")));
        assert_eq!((r.metric, r.table), (5, 254));
        assert_eq!(w.table.default_routes.len(), 2);

        // vB set down: admin down there, carrier lost on vA.
        ip("link set vB down");
        let t = w
            .expect("LINK_DOWN vB", |t| on(t, TriggerType::LinkDown, "vB"))
            .await;
        assert_eq!(down_code(&t), link_down_reason::EXPLICIT_DISCONNECT);
        let t = w
            .expect("LINK_DOWN vA", |t| on(t, TriggerType::LinkDown, "vA"))
            .await;
        assert_eq!(down_code(&t), link_down_reason::PACKET_TIMEOUT);
        let Some(Detail::LinkState(s)) = &t.detail else {
            panic!("{t:?}")
        };
        assert!(s.admin_up && !s.carrier, "{s:?}");

        ip("-6 route del default via fd00::fe dev vA metric 5");
        w.expect("DEFAULT_ROUTE_REMOVED v6", |t| {
            on(t, TriggerType::DefaultRouteRemoved, "vA")
                && matches!(&t.detail, Some(Detail::DefaultRoute(r)) if r.ipv6)
        })
        .await;
        ip("addr del fd00::1/64 dev vA");
        w.expect("IF_ADDRREMOVED fd00::1/64", |t| {
            with_address(t, TriggerType::IfAddrRemoved, "vA", "fd00::1", 64)
        })
        .await;

        // Admin down: IPv4 flushes the default route without telling.
        ip("link set vA down");
        w.expect("DEFAULT_ROUTE_REMOVED v4", |t| {
            on(t, TriggerType::DefaultRouteRemoved, "vA")
                && matches!(&t.detail, Some(Detail::DefaultRoute(r)) if !r.ipv6)
        })
        .await;
        assert!(w.table.default_routes.is_empty());
        assert_eq!(ip_out(&["route", "show", "default"]), "");

        ip("link set vA up");
        ip("link set vB up");
        w.expect("LINK_UP vA again", |t| on(t, TriggerType::LinkUp, "vA"))
            .await;
        w.expect("LINK_UP vB again", |t| on(t, TriggerType::LinkUp, "vB"))
            .await;

        ip("link del vA");
        w.expect("IF_REMOVED vA", |t| on(t, TriggerType::IfRemoved, "vA"))
            .await;
        w.expect("IF_REMOVED vB", |t| on(t, TriggerType::IfRemoved, "vB"))
            .await;
        let pos =
            |pred: &dyn Fn(&Trigger) -> bool| w.log.iter().rposition(pred).expect("in the log");
        let down = pos(&|t| on(t, TriggerType::LinkDown, "vA"));
        let addr_gone = pos(&|t| with_address(t, TriggerType::IfAddrRemoved, "vA", "10.9.0.1", 24));
        let removed = pos(&|t| on(t, TriggerType::IfRemoved, "vA"));
        assert!(
            down < addr_gone && addr_gone < removed,
            "{down} {addr_gone} {removed}"
        );
        assert_eq!(
            down_code(&w.log[down]),
            link_down_reason::EXPLICIT_DISCONNECT
        );
        assert_eq!(
            w.table
                .links
                .values()
                .map(|l| l.interface.name.as_str())
                .collect::<Vec<_>>(),
            vec!["lo"]
        );

        let s = stats.snapshot();
        assert_eq!(s.parse_errors, 0);
        assert_eq!(s.resyncs, 0);
        assert_eq!(s.batches, w.batches);
        assert!(s.events >= w.log.len() as u64 / 2, "{s:?}");
        assert!(
            !w.log
                .iter()
                .any(|t| t.kind == TriggerType::Resync && w.log[0] != *t)
        );

        shutdown.cancel();
        let result = tokio::time::timeout(PATIENCE, task)
            .await
            .expect("the source stops on shutdown")
            .expect("the source task did not panic");
        assert!(result.is_ok(), "{result:?}");
    });
}

#[test]
fn tunnels_give_tunnel_triggers_and_bridge_ports_stay_links() {
    in_new_netns(|| async {
        let (mut w, stats, shutdown, task) = start(Options::default(), 64).await;

        ip("tuntap add tun0 mode tun");
        let t = w
            .expect("TUNNEL_ADDED tun0", |t| {
                on(t, TriggerType::TunnelAdded, "tun0")
            })
            .await;
        let i = t.interface.as_ref().expect("interface");
        assert_eq!(i.kind, Some(InterfaceKind::Tunnel));
        assert_eq!(i.driver_kind, "tun");
        assert_eq!(i.index, ifindex("tun0"));
        ip("addr add 10.66.0.1/24 dev tun0");
        let t = w
            .expect("TUNNEL_CHANGED with the address", |t| {
                with_address(t, TriggerType::TunnelChanged, "tun0", "10.66.0.1", 24)
            })
            .await;
        assert!(matches!(t.detail, Some(Detail::LinkState(_))), "{t:?}");
        ip("link set tun0 mtu 1400");
        w.expect("TUNNEL_CHANGED mtu", |t| {
            on(t, TriggerType::TunnelChanged, "tun0")
                && matches!(&t.detail, Some(Detail::LinkState(s)) if s.mtu == 1400)
        })
        .await;
        ip("link set tun0 up");
        w.expect("TUNNEL_CHANGED admin up", |t| {
            on(t, TriggerType::TunnelChanged, "tun0")
                && matches!(&t.detail, Some(Detail::LinkState(s)) if s.admin_up)
        })
        .await;

        // Bridge ports: enslaving and releasing vB sends AF_BRIDGE
        // RTM_NEWLINK/RTM_DELLINK, which are not vB's existence.
        ip("link add br0 type bridge");
        let t = w
            .expect("IF_ADDED br0", |t| on(t, TriggerType::IfAdded, "br0"))
            .await;
        assert_eq!(
            t.interface.as_ref().and_then(|i| i.kind),
            Some(InterfaceKind::Bridge)
        );
        ip("link add vA type veth peer name vB");
        ip("link set vB master br0");
        ip("link set vB nomaster");
        ip("addr add 10.5.0.1/24 dev vA"); // a trigger after all of the above
        w.expect("IF_ADDRADDED vA", |t| {
            with_address(t, TriggerType::IfAddrAdded, "vA", "10.5.0.1", 24)
        })
        .await;
        let vb = ifindex("vB");
        assert_eq!(
            w.table.links.get(&vb).map(|l| l.interface.name.as_str()),
            Some("vB")
        );
        assert!(
            !w.log.iter().any(|t| on(t, TriggerType::IfRemoved, "vB")),
            "{:#?}",
            w.log
        );

        ip("link del tun0");
        w.expect("TUNNEL_REMOVED tun0", |t| {
            on(t, TriggerType::TunnelRemoved, "tun0")
        })
        .await;
        let tunnel_kinds = [
            TriggerType::TunnelAdded,
            TriggerType::TunnelChanged,
            TriggerType::TunnelRemoved,
        ];
        for t in w.log.iter().filter(|t| t.interface_name() == Some("tun0")) {
            assert!(tunnel_kinds.contains(&t.kind), "{t:?}");
        }
        assert_eq!(stats.snapshot().parse_errors, 0);

        shutdown.cancel();
        let result = tokio::time::timeout(PATIENCE, task)
            .await
            .expect("the source stops on shutdown")
            .expect("the source task did not panic");
        assert!(result.is_ok(), "{result:?}");
    });
}

/// The addresses of vA in the table.
fn addresses_of(table: &LinkTable, index: u32) -> BTreeSet<IpAddr> {
    table
        .links
        .get(&index)
        .map(|l| l.addresses.iter().map(|a| a.address).collect())
        .unwrap_or_default()
}

#[test]
fn overrun_is_resynced_with_a_marker_and_no_state_is_lost() {
    in_new_netns(|| async {
        ip("link add vA type veth peer name vB");
        let a_index = ifindex("vA");
        // A receive buffer of a few notifications: while this thread runs
        // `ip` the source cannot read, so a burst overflows it for sure.
        let options = Options { receive_buffer: 1 };
        let (mut w, stats, shutdown, task) = start(options, 4).await;
        assert!(w.table.links.contains_key(&a_index));

        let wanted: BTreeSet<IpAddr> = (1..=200u32)
            .map(|i| IpAddr::from([10, 77, (i / 250) as u8, (i % 250) as u8]))
            .collect();
        let burst = |verb: &str| -> Vec<String> {
            wanted
                .iter()
                .map(|a| format!("addr {verb} {a}/32 dev vA"))
                .collect()
        };

        for (verb, kind) in [
            ("add", TriggerType::IfAddrAdded),
            ("del", TriggerType::IfAddrRemoved),
        ] {
            let mut reported = BTreeSet::new();
            let mut markers = 0;
            ip_batch(&burst(verb));
            let want_present = verb == "add";
            loop {
                let batch = w.next_batch().await;
                w.pending.clear();
                for t in &batch.triggers {
                    if t.kind == kind && t.interface_name() == Some("vA") {
                        reported.insert(t.address.as_ref().expect("address").address);
                    }
                    if let Some(Detail::Resync(r)) = &t.detail {
                        assert_eq!(r.cause, "overrun");
                        assert_eq!(t.kind, TriggerType::Resync);
                        assert_eq!(
                            batch.triggers.first(),
                            Some(t),
                            "the marker opens its batch"
                        );
                        assert_eq!(r.addresses as usize, w.table.address_count());
                        markers += 1;
                    }
                }
                let present = addresses_of(&w.table, a_index);
                let done = if want_present {
                    wanted.is_subset(&present)
                } else {
                    wanted.is_disjoint(&present)
                };
                if done {
                    break;
                }
            }
            assert!(
                markers >= 1,
                "{verb}: the burst overflowed the buffer, a resync must say so"
            );
            // Every change is reported: live, or by the resync's diff.
            assert_eq!(reported, wanted, "{verb}: reported changes");
        }
        let s = stats.snapshot();
        assert!(s.resyncs >= 2, "{s:?}");
        assert_eq!(s.parse_errors, 0);

        shutdown.cancel();
        let result = tokio::time::timeout(PATIENCE, task)
            .await
            .expect("the source stops on shutdown")
            .expect("the source task did not panic");
        assert!(result.is_ok(), "{result:?}");
    });
}
