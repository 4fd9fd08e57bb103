//! The store's contract, run against both backends: every test here runs
//! once on a SQLite file and once on a fresh database of a real PostgreSQL
//! server (`system_tests::postgres`, one server for this test binary; the
//! PostgreSQL half needs root and fails, not skips, without the server
//! binaries). Ids, resume-after-id, history pages, stats, flaps,
//! retention, thresholds, modify/delete/flush, schema versions, and the
//! writer actor over the store. Then what only PostgreSQL has: many hosts
//! in one database, one writer per host.

use std::{sync::Arc, time::Duration};

use system_tests::postgres::PgServer;
use tokio_util::sync::CancellationToken;
use trigger_db::{
    hub::Hub,
    ingest,
    model::{Filter, Interface, LinkParameterType, Source, Timestamp, Trigger, TriggerType},
    store::{self, Database, Durability, HistoryQuery, OpenOptions, Store, StoreError, Writer},
    threshold::{Change, Direction, Scope, Threshold},
    writer::{self, Retention, WriterConfig, WriterStats},
};

const S: i64 = 1_000_000_000;
/// A fixed time the test triggers are observed around.
const T0: i64 = 1_800_000_000 * S;

#[derive(Debug, Clone, Copy)]
enum Backend {
    Sqlite,
    Postgres,
}

/// One test's database, on one backend.
struct Db {
    backend: Backend,
    /// SQLite: the file's directory.
    _dir: Option<tempfile::TempDir>,
    /// The `--database` value.
    given: String,
}

impl Db {
    fn new(backend: Backend, label: &str) -> Self {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let given = dir.path().join("t.db").display().to_string();
                Self {
                    backend,
                    _dir: Some(dir),
                    given,
                }
            }
            Backend::Postgres => Self {
                backend,
                _dir: None,
                given: PgServer::shared().create_database(label),
            },
        }
    }

    fn database(&self) -> Database {
        Database::parse(std::path::Path::new(&self.given)).unwrap()
    }

    async fn try_open_as(&self, host: &str) -> Result<(Store, Writer), StoreError> {
        self.open_waiting(host, Duration::ZERO).await
    }

    async fn open_waiting(
        &self,
        host: &str,
        host_lock_wait: Duration,
    ) -> Result<(Store, Writer), StoreError> {
        store::open(
            &self.database(),
            &OpenOptions {
                durability: Durability::Full,
                readers: 2,
                host_id: host.to_owned(),
                host_lock_wait,
                spool: None,
            },
        )
        .await
    }

    /// Opens as host-a, waiting (as the daemon does) for a writer closed
    /// just before to be gone: the server ends its session, and the host
    /// lock, a moment after the client closed it.
    async fn open(&self) -> (Store, Writer) {
        self.open_waiting("host-a", Duration::from_secs(10))
            .await
            .unwrap()
    }

    /// Runs `sql` behind the store's back.
    async fn raw(&self, sql: &str) {
        use sqlx::Connection as _;
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        match self.backend {
            Backend::Sqlite => {
                let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", self.given))
                    .await
                    .unwrap();
                sqlx::raw_sql(sql).execute(&mut c).await.unwrap();
            }
            Backend::Postgres => {
                let mut c = sqlx::PgConnection::connect(&self.given).await.unwrap();
                sqlx::raw_sql(sql).execute(&mut c).await.unwrap();
            }
        }
    }
}

/// Each test function, once per backend.
macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::Db::new(super::Backend::Sqlite, stringify!($name))).await
            })*
        }
        mod postgres {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::Db::new(super::Backend::Postgres, stringify!($name))).await
            })*
        }
    };
}

both!(
    ids_are_reserved_durably_never_reused_and_the_unused_rest_goes_back,
    resume_after_id_reads_the_rows_after_it_and_the_lowest_stored,
    history_pages_follow_time_then_id_with_filters_and_tokens,
    stats_count_this_stores_rows,
    flaps_count_link_downs_per_interface_and_bucket,
    retention_drops_old_rows_and_all_but_the_newest,
    thresholds_are_kept_replaced_cancelled_and_spent,
    modify_delete_and_flush_act_on_stored_rows,
    a_schema_newer_than_this_binary_is_refused_naming_both_versions,
    a_corrupt_body_is_an_error_naming_the_row,
    the_writer_gives_increasing_ids_across_restarts_and_crashes,
);

fn trigger(kind: TriggerType, ifname: &str, at: i64, source: Source) -> Trigger {
    let mut t = Trigger::new(source, kind);
    t.observed_at = Timestamp(T0 + at * S);
    t.interface = Some(Interface {
        name: ifname.into(),
        index: 7,
        ..Default::default()
    });
    t
}

/// Stores `ts` with ids from 1 (reserving them first), as the writer does.
async fn store_all(w: &mut Writer, ts: &mut [Trigger]) -> Vec<u64> {
    w.reserve_ids(ts.len() as u64).await.unwrap();
    for (i, t) in ts.iter_mut().enumerate() {
        t.id = i as u64 + 1;
    }
    let refs: Vec<&Trigger> = ts.iter().collect();
    w.insert(&refs).await.unwrap();
    ts.iter().map(|t| t.id).collect()
}

fn ids(ts: &[Trigger]) -> Vec<u64> {
    ts.iter().map(|t| t.id).collect()
}

/// The ids of a history page (whose rows carry their host).
fn hids(ts: &[store::HostTrigger]) -> Vec<u64> {
    ts.iter().map(|t| t.trigger.id).collect()
}

/// Ten triggers on eth0 and wlan0, some observed at the same second.
fn ten() -> Vec<Trigger> {
    use TriggerType::*;
    vec![
        trigger(LinkUp, "eth0", 0, Source::Rtnetlink),
        trigger(LinkDown, "wlan0", 5, Source::Client),
        trigger(LinkDown, "eth0", 5, Source::Rtnetlink),
        trigger(LinkUp, "wlan0", 3, Source::NetworkManager),
        trigger(LinkUp, "eth0", 10, Source::Rtnetlink),
        trigger(LinkDown, "eth0", 10, Source::Client),
        trigger(LinkUp, "wlan0", 20, Source::Client),
        trigger(LinkDown, "wlan0", 30, Source::NetworkManager),
        trigger(LinkUp, "eth0", 40, Source::Rtnetlink),
        trigger(LinkDown, "eth0", 50, Source::Rtnetlink),
    ]
}

async fn ids_are_reserved_durably_never_reused_and_the_unused_rest_goes_back(db: Db) {
    let (store, mut w) = db.open().await;
    assert_eq!(store.last_id().await.unwrap(), 0);
    w.reserve_ids(10).await.unwrap();
    assert_eq!(store.last_id().await.unwrap(), 10);
    // A smaller reservation never moves it back.
    w.reserve_ids(4).await.unwrap();
    assert_eq!(store.last_id().await.unwrap(), 10);
    let mut ts: Vec<Trigger> = ten().into_iter().take(3).collect();
    for (i, t) in ts.iter_mut().enumerate() {
        t.id = i as u64 + 1;
    }
    w.insert(&ts.iter().collect::<Vec<_>>()).await.unwrap();
    // A clean stop gives the unused ids back.
    w.release_ids(3).await.unwrap();
    assert_eq!(store.last_id().await.unwrap(), 3);
    // Deleting rows does not make their ids free again.
    w.reserve_ids(20).await.unwrap();
    assert_eq!(w.delete(&[1, 2, 3]).await.unwrap(), 3);
    w.close().await.unwrap();
    store.close().await;
    // What was reserved survives a restart (here: no release, as after a
    // crash).
    let (store, _w) = db.open().await;
    assert_eq!(store.last_id().await.unwrap(), 20);
}

async fn resume_after_id_reads_the_rows_after_it_and_the_lowest_stored(db: Db) {
    let (store, mut w) = db.open().await;
    store_all(&mut w, &mut ten()).await;
    let all = Filter::default();
    assert_eq!(
        ids(&store.after_id(3, None, &all, 100).await.unwrap()),
        [4, 5, 6, 7, 8, 9, 10]
    );
    assert_eq!(
        ids(&store.after_id(3, Some(6), &all, 100).await.unwrap()),
        [4, 5, 6]
    );
    assert_eq!(
        ids(&store.after_id(0, None, &all, 2).await.unwrap()),
        [1, 2]
    );
    let eth_down = Filter {
        interfaces: vec!["eth0".into()],
        types: vec![TriggerType::LinkDown],
        sources: vec![],
    };
    assert_eq!(
        ids(&store.after_id(0, None, &eth_down, 100).await.unwrap()),
        [3, 6, 10]
    );
    let (first, page) = store.replay_page(2, Some(9), &all, 3).await.unwrap();
    assert_eq!((first, ids(&page)), (Some(1), vec![3, 4, 5]));
    w.delete(&[1, 2, 3, 4]).await.unwrap();
    let (first, page) = store.replay_page(2, None, &all, 100).await.unwrap();
    assert_eq!((first, ids(&page)), (Some(5), vec![5, 6, 7, 8, 9, 10]));
    // Every field survives the round trip.
    let got = store.get(7).await.unwrap();
    let mut want = ten()[6].clone();
    want.id = 7;
    assert_eq!(got, want);
    assert!(matches!(
        store.get(99).await.unwrap_err(),
        StoreError::NotFound(99)
    ));
    w.flush(&all, None).await.unwrap();
    let (first, page) = store.replay_page(0, None, &all, 100).await.unwrap();
    assert_eq!((first, page.len()), (None, 0));
}

async fn history_pages_follow_time_then_id_with_filters_and_tokens(db: Db) {
    let (store, mut w) = db.open().await;
    store_all(&mut w, &mut ten()).await;
    // (observed_at, id): 1@0 4@3 2@5 3@5 5@10 6@10 7@20 8@30 9@40 10@50.
    let mut q = HistoryQuery {
        page_size: 3,
        ..Default::default()
    };
    let mut seen = Vec::new();
    loop {
        let page = store.history(&q).await.unwrap();
        seen.extend(hids(&page));
        assert!(page.iter().all(|r| r.host == "host-a"), "{page:?}");
        let Some(last) = page.last() else { break };
        let token = q.token_after(last);
        q.after = Some(q.parse_token(&token).unwrap());
    }
    assert_eq!(seen, [1, 4, 2, 3, 5, 6, 7, 8, 9, 10]);
    let desc = HistoryQuery {
        page_size: 4,
        descending: true,
        ..Default::default()
    };
    let page = store.history(&desc).await.unwrap();
    assert_eq!(hids(&page), [10, 9, 8, 7]);
    let next = HistoryQuery {
        after: Some(store::Cursor {
            at: page[3].trigger.observed_at,
            host: page[3].host.clone(),
            id: page[3].trigger.id,
        }),
        ..desc.clone()
    };
    assert_eq!(hids(&store.history(&next).await.unwrap()), [6, 5, 3, 2]);
    // A window, one interface, one type, one source; several of each.
    let window = HistoryQuery {
        since: Some(Timestamp(T0 + 5 * S)),
        until: Some(Timestamp(T0 + 40 * S)),
        page_size: 100,
        ..Default::default()
    };
    assert_eq!(
        hids(&store.history(&window).await.unwrap()),
        [2, 3, 5, 6, 7, 8]
    );
    let mut f = window.clone();
    f.filter.interfaces = vec!["wlan0".into()];
    assert_eq!(hids(&store.history(&f).await.unwrap()), [2, 7, 8]);
    f.filter.types = vec![TriggerType::LinkDown];
    assert_eq!(hids(&store.history(&f).await.unwrap()), [2, 8]);
    f.filter.sources = vec![Source::Client];
    assert_eq!(hids(&store.history(&f).await.unwrap()), [2]);
    let mut several = window.clone();
    several.filter.interfaces = vec!["wlan0".into(), "eth0".into()];
    several.filter.sources = vec![Source::Client, Source::NetworkManager];
    assert_eq!(hids(&store.history(&several).await.unwrap()), [2, 6, 7, 8]);
    // A token of another query is refused.
    let token = window.token_after(&page[0]);
    assert!(f.parse_token(&token).is_err());
}

async fn stats_count_this_stores_rows(db: Db) {
    let (store, mut w) = db.open().await;
    let s = store.stats().await.unwrap();
    assert_eq!((s.rows, s.first_id, s.last_id), (0, 0, 0));
    store_all(&mut w, &mut ten()).await;
    w.reserve_ids(15).await.unwrap();
    w.delete(&[1]).await.unwrap();
    let s = store.stats().await.unwrap();
    assert_eq!((s.rows, s.first_id, s.last_id), (9, 2, 15));
    assert!(s.database_bytes > 0);
    let mut by_source = s.by_source.clone();
    by_source.sort_by_key(|(src, _)| src.to_wire());
    let mut want = vec![
        (Source::Rtnetlink, 4),
        (Source::Client, 3),
        (Source::NetworkManager, 2),
    ];
    want.sort_by_key(|(src, _)| src.to_wire());
    assert_eq!(by_source, want);
    let mut by_type = s.by_type.clone();
    by_type.sort_by_key(|(t, _)| t.to_wire());
    let mut want = vec![(TriggerType::LinkUp, 4), (TriggerType::LinkDown, 5)];
    want.sort_by_key(|(t, _)| t.to_wire());
    assert_eq!(by_type, want);
}

/// The Flaps buckets: only link-downs, only the range, bucket edges belong
/// to the later bucket, interfaces filter.
async fn flaps_count_link_downs_per_interface_and_bucket(db: Db) {
    let (store, mut w) = db.open().await;
    let mk = |kind, ifname: &str, at: i64| trigger(kind, ifname, at, Source::Client);
    let mut ts = [
        mk(TriggerType::LinkDown, "eth0", 0),
        mk(TriggerType::LinkDown, "eth0", 59),
        mk(TriggerType::LinkDown, "eth0", 60),
        mk(TriggerType::LinkUp, "eth0", 61),
        mk(TriggerType::LinkDown, "wlan0", 299),
        mk(TriggerType::LinkDown, "wlan0", 300), // until is exclusive
        mk(TriggerType::LinkDown, "eth0", -1),   // before since
    ];
    store_all(&mut w, &mut ts).await;
    let at = |s: i64| Timestamp(T0 + s * S);
    let flaps = |since: i64, until: i64, bucket_s: i64, interfaces: &[&str]| {
        let q = store::FlapsQuery {
            since: at(since),
            until: at(until),
            bucket_ns: bucket_s * S,
            interfaces: interfaces.iter().map(|i| (*i).to_owned()).collect(),
            hosts: store::Hosts::Own,
            by_host: false,
        };
        let store = store.clone();
        async move {
            let rows = store.flaps(&q).await.unwrap();
            assert!(rows.iter().all(|b| b.host.is_none()), "{rows:?}");
            rows.into_iter()
                .map(|b| (b.interface, b.start, b.link_downs))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        flaps(0, 300, 60, &[]).await,
        [
            ("eth0".to_owned(), at(0), 2),
            ("eth0".to_owned(), at(60), 1),
            ("wlan0".to_owned(), at(240), 1),
        ]
    );
    assert_eq!(
        flaps(0, 301, 300, &["wlan0"]).await,
        [
            ("wlan0".to_owned(), at(0), 1),
            ("wlan0".to_owned(), at(300), 1)
        ]
    );
    assert_eq!(
        flaps(0, 301, 600, &["wlan0", "eth0"]).await,
        [
            ("eth0".to_owned(), at(0), 3),
            ("wlan0".to_owned(), at(0), 2)
        ]
    );
}

async fn retention_drops_old_rows_and_all_but_the_newest(db: Db) {
    let (store, mut w) = db.open().await;
    store_all(&mut w, &mut ten()).await;
    // Observed before T0+10s: ids 1, 2, 3, 4.
    let n = w.retain(Some(Timestamp(T0 + 10 * S)), None).await.unwrap();
    assert_eq!(n, 4);
    // All but the newest 3 by id.
    let n = w.retain(None, Some(3)).await.unwrap();
    assert_eq!(n, 3);
    let left = store
        .after_id(0, None, &Filter::default(), 100)
        .await
        .unwrap();
    assert_eq!(ids(&left), [8, 9, 10]);
    assert_eq!(w.retain(None, Some(3)).await.unwrap(), 0);
}

fn threshold(ifname: &str, value: f64, one_shot: bool) -> Threshold {
    Threshold {
        id: 0,
        scope: Scope::Interface(ifname.into()),
        parameter: LinkParameterType::SignalStrength,
        value,
        direction: Direction::Below,
        hysteresis: 1.5,
        one_shot,
        spent: false,
    }
}

async fn thresholds_are_kept_replaced_cancelled_and_spent(db: Db) {
    let (_store, mut w) = db.open().await;
    assert!(w.load_thresholds().await.unwrap().is_empty());
    w.configure_thresholds(&[
        Change::Set(threshold("wlan0", 40.0, true)),
        Change::Set(threshold("wlan0", 30.0, false)),
        Change::Set(threshold("eth0", 10.0, false)),
    ])
    .await
    .unwrap();
    let all = w.load_thresholds().await.unwrap();
    assert_eq!(all.len(), 3);
    let one_shot = all.iter().find(|t| t.value == 40.0).unwrap().id;
    w.mark_spent(&[one_shot]).await.unwrap();
    w.close().await.unwrap();
    // Kept across a restart, spent included.
    let (_store, mut w) = db.open().await;
    let all = w.load_thresholds().await.unwrap();
    let t = all.iter().find(|t| t.id == one_shot).unwrap();
    assert!(t.spent && t.one_shot);
    assert_eq!(t.hysteresis, 1.5);
    assert_eq!(t.scope, Scope::Interface("wlan0".into()));
    // Set again: replaced in place and re-armed.
    let mut again = threshold("wlan0", 40.0, true);
    again.hysteresis = 3.0;
    w.configure_thresholds(&[Change::Set(again)]).await.unwrap();
    let all = w.load_thresholds().await.unwrap();
    assert_eq!(all.len(), 3);
    let t = all.iter().find(|t| t.value == 40.0).unwrap();
    assert!(!t.spent);
    assert_eq!(t.hysteresis, 3.0);
    // Cancel one value, then every value of a scope and parameter.
    let cancel = |ifname: &str, value| Change::Cancel {
        scope: Scope::Interface(ifname.into()),
        parameter: LinkParameterType::SignalStrength,
        value,
    };
    assert_eq!(
        w.configure_thresholds(&[cancel("wlan0", Some(30.0))])
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        w.configure_thresholds(&[cancel("eth0", None), cancel("wlan0", None)])
            .await
            .unwrap(),
        2
    );
    assert!(w.load_thresholds().await.unwrap().is_empty());
}

async fn modify_delete_and_flush_act_on_stored_rows(db: Db) {
    let (store, mut w) = db.open().await;
    store_all(&mut w, &mut ten()).await;
    let mut change = trigger(TriggerType::LinkGoingDown, "ppp0", 999, Source::Client);
    change.id = 2;
    let stored = w.modify(&change).await.unwrap();
    assert_eq!(stored.id, 2);
    assert_eq!(stored.kind, TriggerType::LinkGoingDown);
    // Time and source are the stored ones.
    assert_eq!(stored.observed_at, Timestamp(T0 + 5 * S));
    assert_eq!(stored.source, Source::Client);
    assert_eq!(store.get(2).await.unwrap(), stored);
    let ppp = Filter {
        interfaces: vec!["ppp0".into()],
        ..Default::default()
    };
    assert_eq!(ids(&store.after_id(0, None, &ppp, 10).await.unwrap()), [2]);
    change.id = 99;
    assert!(matches!(
        w.modify(&change).await.unwrap_err(),
        StoreError::NotFound(99)
    ));
    assert_eq!(w.delete(&[2, 3, 99, u64::MAX]).await.unwrap(), 2);
    // Flush: by filter and time.
    let eth = Filter {
        interfaces: vec!["eth0".into()],
        ..Default::default()
    };
    assert_eq!(
        w.flush(&eth, Some(Timestamp(T0 + 40 * S))).await.unwrap(),
        3
    );
    let left = store
        .after_id(0, None, &Filter::default(), 100)
        .await
        .unwrap();
    assert_eq!(ids(&left), [4, 7, 8, 9, 10]);
    assert_eq!(w.flush(&Filter::default(), None).await.unwrap(), 5);
}

async fn a_schema_newer_than_this_binary_is_refused_naming_both_versions(db: Db) {
    let (store, w) = db.open().await;
    w.close().await.unwrap();
    store.close().await;
    db.raw(match db.backend {
        Backend::Sqlite => {
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (999, 'from the future', 1, X'00', 0)"
        }
        Backend::Postgres => {
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (999, 'from the future', true, '\\x00'::bytea, 0)"
        }
    })
    .await;
    let e = db.try_open_as("host-a").await.unwrap_err();
    // PostgreSQL has the cross-host index (0003) too.
    let newest = match db.backend {
        Backend::Sqlite => 2,
        Backend::Postgres => 3,
    };
    assert!(
        matches!(
            e,
            StoreError::SchemaTooNew {
                database: 999,
                known
            } if known == newest
        ),
        "{e:?}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains("999") && msg.contains(&format!("version {newest}")),
        "{msg}"
    );
}

async fn a_corrupt_body_is_an_error_naming_the_row(db: Db) {
    let (store, _w) = db.open().await;
    db.raw(match db.backend {
        Backend::Sqlite => {
            "INSERT INTO triggers (id, observed_at, source, type, body) VALUES (5, 1, 1, 1, X'FFFF')"
        }
        Backend::Postgres => {
            "INSERT INTO triggers (host, id, observed_at, source, type, body) \
             VALUES ('host-a', 5, 1, 1, 1, '\\xffff'::bytea)"
        }
    })
    .await;
    let e = store.get(5).await.unwrap_err();
    assert!(matches!(e, StoreError::Decode { id: 5, .. }), "{e:?}");
    let e = store
        .after_id(0, None, &Filter::default(), 10)
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Decode { id: 5, .. }), "{e:?}");
}

fn writer_config() -> WriterConfig {
    WriterConfig {
        batch_max: 100,
        retention: Retention {
            interval: Duration::from_secs(3_600),
            ..Default::default()
        },
        debounce: vec![],
        source_store_delay: Duration::ZERO,
    }
}

/// The writer actor over the store, as the daemon runs it.
struct Running {
    store: Store,
    handle: writer::WriterHandle,
    task: tokio::task::JoinHandle<()>,
    stop: CancellationToken,
    _sources: ingest::SourceSender,
}

async fn run_writer(db: &Db) -> Running {
    let (store, w) = db.open().await;
    let last = store.last_id().await.unwrap();
    let hub = Arc::new(Hub::new(last, 64, 100));
    let (sources, source_rx) = ingest::source_channel();
    let stop = CancellationToken::new();
    let (handle, task) = writer::spawn(
        w,
        source_rx,
        hub,
        Arc::new(WriterStats::default()),
        writer_config(),
        stop.clone(),
    );
    Running {
        store,
        handle,
        task,
        stop,
        _sources: sources,
    }
}

async fn the_writer_gives_increasing_ids_across_restarts_and_crashes(db: Db) {
    let add = |r: &Running, n: usize| {
        let ts = vec![trigger(TriggerType::LinkUp, "eth0", 0, Source::Client); n];
        let h = r.handle.clone();
        async move { h.add(ts).await.unwrap() }
    };
    let r = run_writer(&db).await;
    assert_eq!(add(&r, 3).await, [1, 2, 3]);
    assert_eq!(add(&r, 2).await, [4, 5]);
    // A reply means committed: another reader sees it at once.
    assert_eq!(r.store.get(5).await.unwrap().id, 5);
    r.stop.cancel();
    r.task.await.unwrap();
    // A clean stop gave back the reservation: ids go on densely.
    let r = run_writer(&db).await;
    assert_eq!(r.store.last_id().await.unwrap(), 5);
    assert_eq!(add(&r, 1).await, [6]);
    // A crash (no clean stop) skips the rest of the reservation, never
    // gives an id twice.
    r.task.abort();
    let _ = r.task.await;
    drop(r.handle);
    r.store.close().await;
    // The aborted writer's connection (and PostgreSQL host lock) goes with
    // its task; the server may take a moment to see the session end.
    let (s, w) = db
        .open_waiting("host-a", Duration::from_secs(10))
        .await
        .unwrap();
    w.close().await.unwrap();
    s.close().await;
    let r = run_writer(&db).await;
    let next = add(&r, 1).await[0];
    assert!(next > 6, "{next}");
    let stored = r
        .store
        .after_id(0, None, &Filter::default(), 100)
        .await
        .unwrap();
    assert_eq!(ids(&stored), [1, 2, 3, 4, 5, 6, next]);
    r.stop.cancel();
    r.task.await.unwrap();
}

/// PostgreSQL only: many hosts in one database.
mod hosts {
    use super::*;

    #[tokio::test]
    async fn each_host_has_its_own_rows_ids_and_thresholds() {
        let db = Db::new(Backend::Postgres, "hosts");
        let (a, mut wa) = db.try_open_as("host-a").await.unwrap();
        let (b, mut wb) = db.try_open_as("host-b").await.unwrap();
        store_all(&mut wa, &mut ten()).await;
        let mut bs: Vec<Trigger> = ten().into_iter().take(2).collect();
        store_all(&mut wb, &mut bs).await;
        // Both have ids from 1; each reads its own.
        assert_eq!(a.stats().await.unwrap().rows, 10);
        assert_eq!(b.stats().await.unwrap().rows, 2);
        assert_eq!(
            ids(&b.after_id(0, None, &Filter::default(), 100).await.unwrap()),
            [1, 2]
        );
        assert_eq!(a.last_id().await.unwrap(), 10);
        assert_eq!(b.last_id().await.unwrap(), 2);
        // A delete, flush or retention on one host leaves the other's rows.
        assert_eq!(wb.flush(&Filter::default(), None).await.unwrap(), 2);
        assert_eq!(wb.retain(None, Some(1)).await.unwrap(), 0);
        assert_eq!(a.stats().await.unwrap().rows, 10);
        wb.configure_thresholds(&[Change::Set(threshold("wlan0", 1.0, false))])
            .await
            .unwrap();
        assert!(wa.load_thresholds().await.unwrap().is_empty());
        assert_eq!(wb.load_thresholds().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_second_writer_for_the_same_host_is_refused_until_the_first_closes() {
        let db = Db::new(Backend::Postgres, "host_lock");
        let (_a, wa) = db.try_open_as("gw-1").await.unwrap();
        let e = db.try_open_as("gw-1").await.unwrap_err();
        assert!(
            matches!(e, StoreError::HostInUse(ref h) if h == "gw-1"),
            "{e:?}"
        );
        assert!(e.to_string().contains("host_id"), "{e}");
        // Waiting for it: refused after the wait, then taken once it goes.
        let t = std::time::Instant::now();
        let e = db
            .open_waiting("gw-1", Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(matches!(e, StoreError::HostInUse(_)), "{e:?}");
        assert!(t.elapsed() >= Duration::from_millis(300));
        let (taken, ()) = tokio::join!(db.open_waiting("gw-1", Duration::from_secs(10)), async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            wa.close().await.unwrap();
        });
        taken.unwrap();
    }

    #[tokio::test]
    async fn the_writer_connects_again_after_losing_its_connection() {
        let db = Db::new(Backend::Postgres, "reconnect");
        let (store, mut w) = db.open().await;
        let mut ts = ten();
        store_all(&mut w, &mut ts[..2]).await;
        let name = PgServer::db_name(&db.given);
        let killed = PgServer::shared().psql(
            name,
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE application_name = 'trigger-db writer' AND datname = current_database()",
        );
        assert_eq!(killed.trim(), "1");
        // The write that finds the connection gone fails, as a failed
        // commit does; the next one connects (and locks the host) again.
        ts[2].id = 3;
        let mut failed = 0;
        while w.insert(&[&ts[2]]).await.is_err() {
            failed += 1;
            assert!(failed < 3, "the writer does not reconnect");
        }
        assert_eq!(failed, 1);
        assert_eq!(store.get(3).await.unwrap().id, 3);
        assert!(matches!(
            db.try_open_as("host-a").await.unwrap_err(),
            StoreError::HostInUse(_)
        ));
    }

    #[tokio::test]
    async fn one_host_and_interface_in_a_window_is_an_index_range_in_page_order() {
        let db = Db::new(Backend::Postgres, "plan");
        let _open = db.open().await;
        let server = PgServer::shared();
        let name = PgServer::db_name(&db.given);
        // 20 hosts, 5 interfaces, 60,000 rows over a day; statistics.
        server.psql(
            name,
            "INSERT INTO triggers (host, id, observed_at, source, type, if_name, body) \
             SELECT 'h' || (i % 20), i, (i * 1440000000000)::bigint, 1, 1, 'if' || (i % 5), '\\x' \
             FROM generate_series(1, 60000) i; ANALYZE triggers",
        );
        let plan = server.psql(
            name,
            "EXPLAIN SELECT id, body FROM triggers \
             WHERE host = 'h3' AND if_name = 'if3' AND observed_at >= 0 \
             AND observed_at < 86400000000000000 ORDER BY observed_at, id LIMIT 100",
        );
        assert!(plan.contains("triggers_host_if_time"), "{plan}");
        assert!(!plan.contains("Sort"), "no sort needed: {plan}");
    }
}
