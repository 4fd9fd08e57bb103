//! A fleet on one PostgreSQL database (a real server,
//! `system_tests::postgres`; needs root): three daemons, each in a network
//! namespace of its own as a separate host would be, write their hosts'
//! rows at the same time, from the kernel (their rtnetlink sources see
//! their own namespace's links go up and down) and from clients; one
//! host's daemon and `triggerctl` then answer for all three.
//!
//! The store contract runs on both backends in tests/store.rs; one
//! daemon's crash and resume on PostgreSQL in tests/postgres_daemon.rs.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use system_tests::{netns::Netns, postgres::PgServer, trigger_db::*};
use trigger_proto::v1 as pb;

const DAEMON: &str = env!("CARGO_BIN_EXE_trigger-db");
const TRIGGERCTL: &str = env!("CARGO_BIN_EXE_triggerctl");
const HOSTS: usize = 3;

/// One host of the fleet: its namespace (with a veth pair `up0`/`peer0`
/// made before the daemon starts) and its daemon.
struct Host {
    id: String,
    ns: Netns,
    daemon: Daemon,
    _dir: tempfile::TempDir,
}

fn link_downs_on_up0() -> pb::TriggerFilter {
    pb::TriggerFilter {
        interfaces: vec!["up0".into()],
        types: vec![pb::TriggerType::LinkDown as i32],
        ..Default::default()
    }
}

/// Every trigger `filter` matches, of the hosts `all_hosts` or this
/// daemon's own, page by page: (host, trigger).
async fn query_all(
    d: &Daemon,
    filter: pb::TriggerFilter,
    all_hosts: bool,
) -> Vec<(String, pb::Trigger)> {
    let mut c = d.client().await;
    let mut out = Vec::new();
    let mut page_token = String::new();
    loop {
        let r = c
            .query(pb::QueryRequest {
                filter: Some(filter.clone()),
                page_size: 1_000,
                page_token,
                all_hosts,
                ..Default::default()
            })
            .await
            .expect("query")
            .into_inner();
        let hosts = if r.hosts.is_empty() {
            vec![String::new(); r.triggers.len()]
        } else {
            r.hosts
        };
        assert_eq!(hosts.len(), r.triggers.len(), "one host per trigger");
        out.extend(hosts.into_iter().zip(r.triggers));
        if r.next_page_token.is_empty() {
            return out;
        }
        page_token = r.next_page_token;
    }
}

/// Waits until the host's own daemon has stored `want` link-downs of up0.
async fn wait_link_downs(h: &Host, want: usize) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let got = query_all(&h.daemon, link_downs_on_up0(), false).await.len();
        if got == want {
            return;
        }
        assert!(
            got < want && Instant::now() < deadline,
            "{}: {got} link-downs of up0 stored, want {want}; log:\n{}",
            h.id,
            h.daemon.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A host's clients: 1,500 triggers of wan0 in Adds of 100.
async fn ingest(d: &Daemon) -> Vec<u64> {
    let mut c = d.client().await;
    add_many(&mut c, "wan0", 1_500, 100).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hosts_in_three_namespaces_write_one_database_and_are_queried_together() {
    let server = PgServer::shared();
    let url = server.create_database("fleet");
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let fleet: Vec<Host> = (1..=HOSTS)
        .map(|i| {
            let ns = Netns::new("tdbfleet");
            ns.veth("up0", "peer0");
            ns.up("peer0");
            let dir = tempfile::tempdir().unwrap();
            let id = format!("site-{i}");
            let config = format!("[store]\nhost_id = \"{id}\"\n");
            let daemon = Daemon::start_on_in(DAEMON, dir.path(), &ns, &url, Some(&config));
            Host {
                id,
                ns,
                daemon,
                _dir: dir,
            }
        })
        .collect();

    // What each daemon has of up0 before the test moves it (e.g. nothing,
    // or the state it found at start).
    let mut before = Vec::new();
    for h in &fleet {
        before.push(query_all(&h.daemon, link_downs_on_up0(), false).await.len());
    }

    // The kernel: host i's up0 goes up and down i times, while every host's
    // clients add 1,500 triggers of their own at the same time.
    let kernel = async {
        for (i, h) in fleet.iter().enumerate() {
            for k in 1..=i + 1 {
                h.ns.ip(&["link", "set", "up0", "up"]);
                h.ns.ip(&["link", "set", "up0", "down"]);
                wait_link_downs(h, before[i] + k).await;
            }
        }
    };
    let (a1, a2, a3, ()) = tokio::join!(
        ingest(&fleet[0].daemon),
        ingest(&fleet[1].daemon),
        ingest(&fleet[2].daemon),
        kernel
    );
    let added = [a1, a2, a3];

    // Each host's client ids are its own, strictly increasing, per host.
    for (h, ids) in fleet.iter().zip(&added) {
        assert_eq!(ids.len(), 1_500, "{}", h.id);
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{}: {ids:?}", h.id);
    }

    // Host 1's daemon answers for the fleet: the same link-downs each host's
    // own daemon has, named by host.
    let first = &fleet[0].daemon;
    let all = query_all(first, link_downs_on_up0(), true).await;
    let mut per_host: BTreeMap<&str, Vec<&pb::Trigger>> = BTreeMap::new();
    for (host, t) in &all {
        per_host.entry(host.as_str()).or_default().push(t);
    }
    assert_eq!(per_host.len(), HOSTS, "{:?}", per_host.keys());
    for (i, h) in fleet.iter().enumerate() {
        let own: Vec<u64> = query_all(&h.daemon, link_downs_on_up0(), false)
            .await
            .iter()
            .map(|(_, t)| t.id)
            .collect();
        assert_eq!(own.len(), before[i] + i + 1, "{}", h.id);
        let seen: Vec<u64> = per_host[h.id.as_str()].iter().map(|t| t.id).collect();
        assert_eq!(seen, own, "{}: all hosts' query against its own", h.id);
        assert!(
            per_host[h.id.as_str()].iter().all(|t| t
                .interface
                .as_ref()
                .is_some_and(|l| l.name == "up0")
                && t.source == pb::Source::Rtnetlink as i32),
            "{}",
            h.id
        );
    }

    // Every row in the database, per host: the client's 1,500 and the
    // kernel's, ids unique per host (the primary key) and the counts the
    // daemons acknowledged.
    let counts = server.psql(
        PgServer::db_name(&url),
        "SELECT host || ' ' || count(*) FILTER (WHERE if_name = 'wan0') \
         FROM triggers GROUP BY host ORDER BY host",
    );
    assert_eq!(
        counts.trim(),
        "site-1 1500\nsite-2 1500\nsite-3 1500",
        "rows per host"
    );

    // Flaps grouped by host: host i's up0 went down i times in the test.
    let mut c = first.client().await;
    let flaps = c
        .flaps(pb::FlapsRequest {
            bucket_s: 3_600,
            interfaces: vec!["up0".into()],
            all_hosts: true,
            by_host: true,
            since: Some(prost_types::Timestamp {
                seconds: started - 3_600,
                nanos: 0,
            }),
            ..Default::default()
        })
        .await
        .expect("flaps")
        .into_inner();
    let mut downs: BTreeMap<String, u64> = BTreeMap::new();
    for b in &flaps.buckets {
        *downs.entry(b.host.clone()).or_default() += b.link_downs;
    }
    let want: BTreeMap<String, u64> = fleet
        .iter()
        .enumerate()
        .map(|(i, h)| (h.id.clone(), (before[i] + i + 1) as u64))
        .collect();
    assert_eq!(downs, want, "flaps by host: {:?}", flaps.buckets);

    // triggerctl on host 1: the fleet's history with a HOST column, and
    // one other host's alone.
    let ctl = |args: &[&str]| triggerctl_ok(first.triggerctl(TRIGGERCTL, args).output().unwrap());
    let out = ctl(&[
        "history",
        "--all-hosts",
        "--all",
        "--interface",
        "up0",
        "--type",
        "link-down",
    ]);
    assert!(out.starts_with("HOST "), "{out}");
    for (h, n) in &want {
        let rows = out
            .lines()
            .filter(|l| l.starts_with(&format!("{h} ")))
            .count();
        assert_eq!(rows as u64, *n, "{h} in:\n{out}");
    }
    let out = ctl(&[
        "history",
        "--host",
        "site-3",
        "--all",
        "--interface",
        "up0",
        "--type",
        "link-down",
    ]);
    assert_eq!(out.lines().count() as u64 - 1, want["site-3"], "{out}");

    for mut h in fleet {
        assert!(h.daemon.terminate().success(), "{}", h.id);
    }
}
