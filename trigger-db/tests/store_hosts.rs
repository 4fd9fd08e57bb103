//! Queries across hosts (issue 15, part 2), against the real backends:
//! on PostgreSQL, three hosts' rows written through the store API and
//! read by one, two and all hosts, paged in both directions, with filters,
//! flaps summed and by host, and the index the all-hosts page uses; on
//! SQLite, its own host and all hosts read the file, another host is
//! refused; and the documented roles and row-level security
//! (`docs/postgresql-roles.sql`, run as written): a host's role writes
//! only its own host's rows, an operator's role only reads.
//!
//! Needs root and Debian's `postgresql` package for the PostgreSQL half
//! (fails, not skips, without them), like `tests/store.rs`.

use std::time::Duration;

use system_tests::postgres::PgServer;
use trigger_db::{
    model::{Filter, Interface, Source, Timestamp, Trigger, TriggerType},
    store::{
        self, Database, Durability, FlapBucket, FlapsQuery, HistoryQuery, HostTrigger, Hosts,
        OpenOptions, Store, StoreError, Writer,
    },
};

const S: i64 = 1_000_000_000;
const T0: i64 = 1_800_000_000 * S;

async fn open(given: &str, host: &str) -> Result<(Store, Writer), StoreError> {
    store::open(
        &Database::parse(std::path::Path::new(given)).unwrap(),
        &OpenOptions {
            durability: Durability::Full,
            readers: 2,
            host_id: host.to_owned(),
            host_lock_wait: Duration::from_secs(10),
            spool: None,
        },
    )
    .await
}

fn trigger(kind: TriggerType, ifname: &str, at: i64) -> Trigger {
    let mut t = Trigger::new(Source::Client, kind);
    t.observed_at = Timestamp(T0 + at * S);
    t.interface = Some(Interface {
        name: ifname.into(),
        index: 3,
        ..Default::default()
    });
    t
}

/// Stores `ts` with ids from 1, as the writer does.
async fn store_all(w: &mut Writer, ts: &mut [Trigger]) {
    w.reserve_ids(ts.len() as u64).await.unwrap();
    for (i, t) in ts.iter_mut().enumerate() {
        t.id = i as u64 + 1;
    }
    let refs: Vec<&Trigger> = ts.iter().collect();
    w.insert(&refs).await.unwrap();
}

/// (host, id) of each row.
fn keys(rows: &[HostTrigger]) -> Vec<(String, u64)> {
    rows.iter()
        .map(|r| (r.host.clone(), r.trigger.id))
        .collect()
}

/// Every page of `q` (page size as given), following the tokens.
async fn all_pages(store: &Store, mut q: HistoryQuery) -> Vec<(String, u64)> {
    let mut seen = Vec::new();
    loop {
        let page = store.history(&q).await.unwrap();
        seen.extend(keys(&page));
        if page.len() < q.page_size as usize {
            return seen;
        }
        let token = q.token_after(page.last().unwrap());
        q.after = Some(q.parse_token(&token).unwrap());
    }
}

fn named(hosts: &[&str]) -> Hosts {
    Hosts::named(hosts.iter().map(|h| (*h).to_owned()).collect())
}

/// Three hosts: each has a link-down on eth0 at 10 s and rows at times
/// shared with the others, so the (observed_at, host, id) order and the
/// cursor's host matter.
async fn three_hosts(given: &str) -> Vec<(Store, Writer)> {
    use TriggerType::*;
    let mut out = Vec::new();
    for (host, extra) in [("gw-b", 0), ("gw-a", 1), ("gw-c", 2)] {
        let (s, mut w) = open(given, host).await.unwrap();
        let mut ts = vec![
            trigger(LinkUp, "eth0", 0),
            trigger(LinkDown, "eth0", 10),
            trigger(LinkDown, "wlan0", 10),
            trigger(LinkUp, "wlan0", 20 + extra),
            trigger(LinkDown, "eth0", 70 + extra),
        ];
        store_all(&mut w, &mut ts).await;
        out.push((s, w));
    }
    out
}

/// The expected order of the rows of `hosts` from [`three_hosts`],
/// ascending: by time, then host, then id.
fn expected(hosts: &[&str]) -> Vec<(String, u64)> {
    let times = |extra: i64| [0, 10, 10, 20 + extra, 70 + extra];
    let mut rows = Vec::new();
    for (host, extra) in [("gw-b", 0), ("gw-a", 1), ("gw-c", 2)] {
        if hosts.contains(&host) {
            for (i, t) in times(extra).into_iter().enumerate() {
                rows.push((t, host.to_owned(), i as u64 + 1));
            }
        }
    }
    rows.sort();
    rows.into_iter().map(|(_, h, id)| (h, id)).collect()
}

#[tokio::test]
async fn postgres_queries_read_one_several_or_all_hosts_in_one_order() {
    let given = PgServer::shared().create_database("hosts_query");
    let hosts = three_hosts(&given).await;
    let a = &hosts[1].0;
    assert_eq!(a.last_id().await.unwrap(), 5);
    let q = |hosts: Hosts, page_size: u32| HistoryQuery {
        page_size,
        hosts,
        ..Default::default()
    };
    // Own host: as before.
    assert_eq!(
        keys(&a.history(&q(Hosts::Own, 100)).await.unwrap()),
        expected(&["gw-a"])
    );
    // One other host, two, all; paged by 2 (pages end inside groups of
    // rows at one time) and by 100.
    for (which, names) in [
        (named(&["gw-b"]), vec!["gw-b"]),
        (named(&["gw-c", "gw-a"]), vec!["gw-a", "gw-c"]),
        (Hosts::All, vec!["gw-a", "gw-b", "gw-c"]),
    ] {
        let want = expected(&names);
        assert_eq!(
            keys(&a.history(&q(which.clone(), 100)).await.unwrap()),
            want,
            "{which:?}"
        );
        assert_eq!(all_pages(a, q(which.clone(), 2)).await, want, "{which:?}");
        let mut desc = q(which.clone(), 2);
        desc.descending = true;
        let mut rev = want.clone();
        rev.reverse();
        assert_eq!(all_pages(a, desc).await, rev, "{which:?} descending");
    }
    // Filters and a window still apply across hosts.
    let mut f = q(Hosts::All, 100);
    f.since = Some(Timestamp(T0 + 10 * S));
    f.until = Some(Timestamp(T0 + 72 * S)); // gw-c's at 72 s is out
    f.filter = Filter {
        interfaces: vec!["eth0".into()],
        types: vec![TriggerType::LinkDown],
        sources: vec![],
    };
    assert_eq!(
        keys(&a.history(&f).await.unwrap()),
        [
            ("gw-a".to_owned(), 2),
            ("gw-b".to_owned(), 2),
            ("gw-c".to_owned(), 2),
            ("gw-b".to_owned(), 5),
            ("gw-a".to_owned(), 5),
        ]
    );
    // A host with no rows has none.
    assert!(
        a.history(&q(named(&["gw-z"]), 100))
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn postgres_flaps_add_up_hosts_or_count_each() {
    let given = PgServer::shared().create_database("hosts_flaps");
    let hosts = three_hosts(&given).await;
    let b = &hosts[0].0;
    let at = |s: i64| Timestamp(T0 + s * S);
    let fq = |hosts: Hosts, by_host: bool| FlapsQuery {
        since: at(0),
        until: at(120),
        bucket_ns: 60 * S,
        interfaces: vec![],
        hosts,
        by_host,
    };
    let bucket = |host: Option<&str>, interface: &str, start: i64, link_downs: u64| FlapBucket {
        host: host.map(str::to_owned),
        interface: interface.into(),
        start: at(start),
        link_downs,
    };
    assert_eq!(
        b.flaps(&fq(Hosts::Own, false)).await.unwrap(),
        [
            bucket(None, "eth0", 0, 1),
            bucket(None, "eth0", 60, 1),
            bucket(None, "wlan0", 0, 1),
        ]
    );
    assert_eq!(
        b.flaps(&fq(Hosts::All, false)).await.unwrap(),
        [
            bucket(None, "eth0", 0, 3),
            bucket(None, "eth0", 60, 3),
            bucket(None, "wlan0", 0, 3),
        ]
    );
    let mut by_host = fq(named(&["gw-c", "gw-a"]), true);
    by_host.interfaces = vec!["eth0".into()];
    assert_eq!(
        b.flaps(&by_host).await.unwrap(),
        [
            bucket(Some("gw-a"), "eth0", 0, 1),
            bucket(Some("gw-a"), "eth0", 60, 1),
            bucket(Some("gw-c"), "eth0", 0, 1),
            bucket(Some("gw-c"), "eth0", 60, 1),
        ]
    );
}

#[tokio::test]
async fn postgres_a_page_of_all_or_named_hosts_in_a_window_is_index_ranges() {
    let given = PgServer::shared().create_database("hosts_plan");
    let _open = open(&given, "h1").await.unwrap();
    let server = PgServer::shared();
    let name = PgServer::db_name(&given);
    server.psql(
        name,
        "INSERT INTO triggers (host, id, observed_at, source, type, if_name, body) \
         SELECT 'h' || (i % 20), i, (i * 1440000000000)::bigint, 1, 1, 'if' || (i % 5), '\\x' \
         FROM generate_series(1, 60000) i; ANALYZE triggers",
    );
    // The all-hosts page as the store asks for it, after a cursor.
    let plan = server.psql(
        name,
        "EXPLAIN SELECT id, body, host FROM triggers WHERE true \
         AND observed_at >= 0 AND observed_at < 86400000000000000 \
         AND (observed_at, host COLLATE \"C\", id) > (1000, 'h3', 7) \
         ORDER BY observed_at ASC, host COLLATE \"C\" ASC, id ASC LIMIT 100",
    );
    assert!(plan.contains("triggers_time_host"), "{plan}");
    assert!(!plan.contains("Sort"), "no sort needed: {plan}");
    // Two named hosts and one interface, as the store asks: each host's
    // page is a range of its (host, interface, time) index, merged.
    let one = |h: &str| {
        format!(
            "(SELECT id, body, host, observed_at FROM triggers WHERE host = '{h}' \
             AND observed_at >= 0 AND observed_at < 86400000000000000 AND if_name = 'if3' \
             ORDER BY observed_at ASC, id ASC LIMIT 100)"
        )
    };
    let plan = server.psql(
        name,
        &format!(
            "EXPLAIN SELECT id, body, host FROM ({} UNION ALL {}) AS page \
             ORDER BY observed_at ASC, host COLLATE \"C\" ASC, id ASC LIMIT 100",
            one("h3"),
            one("h7")
        ),
    );
    assert_eq!(plan.matches("triggers_host_if_time").count(), 2, "{plan}");
    assert!(!plan.contains("Seq Scan"), "{plan}");
}

#[tokio::test]
async fn sqlite_answers_for_its_own_host_and_all_and_refuses_others() {
    let dir = tempfile::tempdir().unwrap();
    let given = dir.path().join("t.db").display().to_string();
    let (s, mut w) = open(&given, "gw-a").await.unwrap();
    let mut ts = vec![
        trigger(TriggerType::LinkDown, "eth0", 0),
        trigger(TriggerType::LinkUp, "eth0", 5),
    ];
    store_all(&mut w, &mut ts).await;
    let q = |hosts: Hosts| HistoryQuery {
        page_size: 1,
        hosts,
        ..Default::default()
    };
    for which in [Hosts::Own, named(&["gw-a"]), Hosts::All] {
        assert_eq!(all_pages(&s, q(which.clone())).await, expected_sqlite());
    }
    for which in [named(&["gw-b"]), named(&["gw-a", "gw-b"])] {
        let e = s.history(&q(which)).await.unwrap_err();
        assert!(
            matches!(&e, StoreError::HostNotHere { host, own } if host == "gw-b" && own == "gw-a"),
            "{e:?}"
        );
        assert!(e.to_string().starts_with("hosts: \"gw-b\""), "{e}");
    }
    let fq = |hosts: Hosts, by_host: bool| FlapsQuery {
        since: Timestamp(T0),
        until: Timestamp(T0 + 60 * S),
        bucket_ns: 60 * S,
        interfaces: vec![],
        hosts,
        by_host,
    };
    assert_eq!(
        s.flaps(&fq(Hosts::All, true)).await.unwrap(),
        [FlapBucket {
            host: Some("gw-a".into()),
            interface: "eth0".into(),
            start: Timestamp(T0),
            link_downs: 1
        }]
    );
    assert_eq!(s.flaps(&fq(Hosts::Own, false)).await.unwrap()[0].host, None);
    assert!(matches!(
        s.flaps(&fq(named(&["gw-b"]), true)).await.unwrap_err(),
        StoreError::HostNotHere { .. }
    ));
}

fn expected_sqlite() -> Vec<(String, u64)> {
    vec![("gw-a".to_owned(), 1), ("gw-a".to_owned(), 2)]
}

/// The URL of `given`'s database for login role `role`.
fn as_role(given: &str, role: &str) -> String {
    given.replace("user=postgres", &format!("user={role}"))
}

#[tokio::test]
async fn the_documented_roles_let_a_host_write_only_its_own_rows() {
    use sqlx::Connection as _;
    let server = PgServer::shared();
    let given = server.create_database("hosts_rls");
    // The owner (here the superuser) creates the schema: one start.
    let (owner_store, owner_writer) = open(&given, "setup").await.unwrap();
    owner_writer.close().await.unwrap();
    owner_store.close().await;
    // The documented SQL, as written; twice (it is meant to be re-run).
    let roles = include_str!("../../docs/postgresql-roles.sql");
    let mut c = sqlx::PgConnection::connect(&given).await.unwrap();
    for _ in 0..2 {
        sqlx::raw_sql(roles).execute(&mut c).await.unwrap();
    }
    sqlx::raw_sql(
        "CREATE ROLE rls_gw_a LOGIN IN ROLE trigger_hosts; \
         CREATE ROLE rls_gw_b LOGIN IN ROLE trigger_hosts; \
         CREATE ROLE rls_alice LOGIN IN ROLE trigger_readers; \
         INSERT INTO host_roles (host, role) VALUES ('gw-a', 'rls_gw_a'), ('gw-b', 'rls_gw_b')",
    )
    .execute(&mut c)
    .await
    .unwrap();

    // Each host's daemon, as its own role, writes its rows and thresholds
    // and reads every host's.
    let (a, mut wa) = open(&as_role(&given, "rls_gw_a"), "gw-a").await.unwrap();
    let (_b, mut wb) = open(&as_role(&given, "rls_gw_b"), "gw-b").await.unwrap();
    store_all(&mut wa, &mut [trigger(TriggerType::LinkDown, "eth0", 1)]).await;
    store_all(&mut wb, &mut [trigger(TriggerType::LinkDown, "eth0", 2)]).await;
    use trigger_db::threshold::{Change, Direction, Scope, Threshold};
    let th = Threshold {
        id: 0,
        scope: Scope::Interface("eth0".into()),
        parameter: trigger_db::model::LinkParameterType::SignalStrength,
        value: -70.0,
        direction: Direction::Below,
        hysteresis: 1.0,
        one_shot: false,
        spent: false,
    };
    wa.configure_thresholds(&[Change::Set(th)]).await.unwrap();
    assert_eq!(wa.load_thresholds().await.unwrap().len(), 1);
    let all = a
        .history(&HistoryQuery {
            page_size: 10,
            hosts: Hosts::All,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(keys(&all), [("gw-a".to_owned(), 1), ("gw-b".to_owned(), 1)]);

    // A host's role configured with another host's id cannot write there.
    wa.close().await.unwrap();
    let (_, mut wrong) = open(&as_role(&given, "rls_gw_a"), "gw-b-2").await.unwrap();
    let e = wrong.reserve_ids(10).await.unwrap_err();
    assert!(
        errchain::chain(&e).contains("row-level security"),
        "{}",
        errchain::chain(&e)
    );

    // By hand with its credentials: no insert, update or delete of
    // another host's rows.
    let mut ca = sqlx::PgConnection::connect(&as_role(&given, "rls_gw_a"))
        .await
        .unwrap();
    let e = sqlx::raw_sql(
        "INSERT INTO triggers (host, id, observed_at, source, type, body) \
         VALUES ('gw-b', 99, 1, 1, 1, '\\x')",
    )
    .execute(&mut ca)
    .await
    .unwrap_err();
    assert!(e.to_string().contains("row-level security"), "{e}");
    for sql in [
        "UPDATE triggers SET observed_at = 0 WHERE host = 'gw-b'",
        "DELETE FROM triggers WHERE host = 'gw-b'",
        "DELETE FROM hosts WHERE host = 'gw-b'",
        "UPDATE triggers SET host = 'gw-b' WHERE host = 'gw-a'",
    ] {
        match sqlx::raw_sql(sql).execute(&mut ca).await {
            Ok(done) => assert_eq!(done.rows_affected(), 0, "{sql}"),
            Err(e) => assert!(e.to_string().contains("row-level security"), "{sql}: {e}"),
        }
    }
    let e = sqlx::raw_sql("INSERT INTO host_roles VALUES ('gw-x', 'rls_gw_a')")
        .execute(&mut ca)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("permission denied"), "{e}");

    // An operator reads everything and writes nothing.
    let mut alice = sqlx::PgConnection::connect(&as_role(&given, "rls_alice"))
        .await
        .unwrap();
    let row: (i64,) = sqlx::query_as("SELECT COUNT(*) FROM triggers")
        .fetch_one(&mut alice)
        .await
        .unwrap();
    assert_eq!(row.0, 2);
    let e = sqlx::raw_sql("DELETE FROM triggers")
        .execute(&mut alice)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("permission denied"), "{e}");
}
