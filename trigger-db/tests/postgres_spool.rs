//! The PostgreSQL store's local spool (`store::spool`), against a real
//! server of each test's own (`PgServer::start`; needs root, fails without
//! the server binaries), which the tests stop and start again (`pg_ctl`,
//! fast shutdown), never the shared one: writes while the server is down
//! go to the spool with ids that go on, reads see them, a restart while
//! the server is still down goes on above every id given, shipping sends
//! them in order exactly once (also after a crash between shipping and
//! the spool's delete), a full spool refuses writes; and the test:
//! the daemon ingesting while the server is stopped for 30 s.

use std::{
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use system_tests::{postgres::PgServer, trigger_db::*};
use trigger_db::{
    model::{Filter, Interface, Source, Trigger, TriggerType},
    store::{self, Database, Durability, OpenOptions, Store, StoreError, Writer, spool},
};
use trigger_proto::v1::{self as pb, subscribe_response::Item};

const DAEMON: &str = env!("CARGO_BIN_EXE_trigger-db");
const TRIGGERCTL: &str = env!("CARGO_BIN_EXE_triggerctl");

/// One private server at a time: each test starts (initdb) and stops its
/// own, and the machine is shared.
static ONE_SERVER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const HOST: &str = "gw-spool";

fn database(url: &str) -> Database {
    Database::parse(Path::new(url)).unwrap()
}

fn options(spool_path: &Path, max_bytes: u64) -> OpenOptions {
    OpenOptions {
        durability: Durability::Full,
        readers: 2,
        host_id: HOST.to_owned(),
        host_lock_wait: Duration::from_secs(10),
        spool: Some(spool::SpoolOptions {
            path: spool_path.to_owned(),
            max_bytes,
        }),
    }
}

async fn open(url: &str, spool_path: &Path) -> (Store, Writer) {
    store::open(
        &database(url),
        &options(spool_path, spool::DEFAULT_MAX_BYTES),
    )
    .await
    .unwrap()
}

fn link_up(ifname: &str) -> Trigger {
    let mut t = Trigger::new(Source::Client, TriggerType::LinkUp);
    t.interface = Some(Interface {
        name: ifname.into(),
        ..Default::default()
    });
    t
}

/// Gives `n` triggers the ids after `last` (reserving them as the writer
/// does) and stores them; returns them.
async fn store_n(w: &mut Writer, last: u64, n: u64) -> Result<Vec<Trigger>, StoreError> {
    let mut ts: Vec<Trigger> = (1..=n)
        .map(|i| {
            let mut t = link_up("wlan0");
            t.id = last + i;
            t
        })
        .collect();
    w.reserve_ids(last + n).await?;
    for t in &mut ts {
        // Room for more than one row a page: the size limit is reached by
        // rows, not by the per-statement overhead.
        t.interface.as_mut().unwrap().name = format!("wlan-{:0>50}", t.id);
    }
    w.insert(&ts.iter().collect::<Vec<_>>()).await?;
    Ok(ts)
}

/// The ids of `host`'s rows on the server, in id order, and how many rows
/// there are (each id once if the two lengths agree).
fn server_ids(server: &PgServer, db: &str, host: &str) -> (Vec<u64>, u64) {
    let out = server.psql(
        db,
        &format!("SELECT id FROM triggers WHERE host = '{host}' ORDER BY id"),
    );
    let ids: Vec<u64> = out.lines().map(|l| l.trim().parse().unwrap()).collect();
    let n = server
        .psql(
            db,
            &format!("SELECT COUNT(DISTINCT id) FROM triggers WHERE host = '{host}'"),
        )
        .trim()
        .parse()
        .unwrap();
    (ids, n)
}

/// Ships until the backlog is gone (bounded).
async fn ship_all(w: &mut Writer) -> u64 {
    let mut shipped = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while w.has_backlog() {
        assert!(Instant::now() < deadline, "the backlog never shipped");
        match w.ship().await {
            Ok(n) => shipped += n,
            Err(e) => eprintln!("ship: {}", errchain::chain(&e)),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shipped
}

fn ids(ts: &[Trigger]) -> Vec<u64> {
    ts.iter().map(|t| t.id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_while_the_server_is_down_are_spooled_read_and_shipped_in_order_across_a_restart() {
    let _one = ONE_SERVER.lock().await;
    let server = PgServer::start();
    let url = server.create_database("spool_outage");
    let dir = tempfile::tempdir().unwrap();
    let spool_path = dir.path().join("spool.db");

    let (store, mut w) = open(&url, &spool_path).await;
    let before = store_n(&mut w, 0, 10).await.unwrap();
    assert!(!w.has_backlog());
    assert_eq!(store.spool_status().unwrap().rows, 0);

    server.stop();
    // The write that finds the server gone goes to the spool: committed,
    // same ids.
    let during = store_n(&mut w, 10, 5).await.unwrap();
    assert!(w.has_backlog());
    let st = store.spool_status().unwrap();
    assert!(!st.server_reachable, "{st:?}");
    assert_eq!(st.rows, 5);
    assert!(st.bytes > 0 && st.bytes <= st.max_bytes, "{st:?}");
    assert!(!st.last_error.is_empty());
    // Reads of the recent rows see the spool (the server being down).
    assert_eq!(
        ids(&store
            .after_id(10, None, &Filter::default(), 100)
            .await
            .unwrap()),
        ids(&during)
    );
    let (first, page) = store
        .replay_page(11, None, &Filter::default(), 100)
        .await
        .unwrap();
    assert_eq!(first, Some(11));
    assert_eq!(ids(&page), [12, 13, 14, 15]);
    assert_eq!(store.get(13).await.unwrap().id, 13);
    assert!(store.last_id().await.unwrap() >= 15);
    // Not spooled: it needs the server, and says so.
    let e = w.delete(&[1]).await.unwrap_err();
    assert!(
        matches!(e, StoreError::Unreachable { .. }),
        "{}",
        errchain::chain(&e)
    );
    w.close().await.unwrap();
    store.close().await;

    // A restart while the server is still down: the spool's mark goes on.
    let (store, mut w) = open(&url, &spool_path).await;
    let last = store.last_id().await.unwrap();
    assert!(last >= 15, "{last}");
    let after_restart = store_n(&mut w, last, 5).await.unwrap();
    assert_eq!(store.spool_status().unwrap().rows, 10);

    server.start_again();
    let shipped = ship_all(&mut w).await;
    assert_eq!(shipped, 10);
    let st = store.spool_status().unwrap();
    assert!(st.server_reachable, "{st:?}");
    assert_eq!((st.rows, st.shipped), (0, 10));
    // Writes go to the server again, ids going on.
    let again = store_n(&mut w, last + 5, 3).await.unwrap();
    assert!(!w.has_backlog());
    let want: Vec<u64> = [before, during, after_restart, again]
        .iter()
        .flat_map(|ts| ids(ts))
        .collect();
    let (on_server, distinct) = server_ids(&server, PgServer::db_name(&url), HOST);
    assert_eq!(on_server, want);
    assert_eq!(distinct, want.len() as u64);
    // The server's reservation moved past everything the spool gave.
    assert!(store.last_id().await.unwrap() >= last + 8);
    w.close().await.unwrap();
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_shipped_before_a_crash_that_kept_them_in_the_spool_are_not_duplicated() {
    let _one = ONE_SERVER.lock().await;
    let server = PgServer::start();
    let url = server.create_database("spool_crash");
    let dir = tempfile::tempdir().unwrap();
    let spool_path = dir.path().join("spool.db");

    let (store, mut w) = open(&url, &spool_path).await;
    store_n(&mut w, 0, 3).await.unwrap();
    server.stop();
    let spooled = store_n(&mut w, 3, 20).await.unwrap();
    w.close().await.unwrap();
    store.close().await;
    server.start_again();

    // What a ship that committed on the server but crashed before the
    // spool's delete leaves: the first 12 spooled rows in both places.
    {
        let mut plain = options(&spool_path, 0);
        plain.spool = None;
        let (s, mut pw) = store::open(&database(&url), &plain).await.unwrap();
        pw.insert(&spooled[..12].iter().collect::<Vec<_>>())
            .await
            .unwrap();
        pw.close().await.unwrap();
        s.close().await;
    }

    let (store, mut w) = open(&url, &spool_path).await;
    assert_eq!(store.spool_status().unwrap().rows, 20);
    assert!(w.has_backlog());
    // Reads merge both places, each id once.
    assert_eq!(
        ids(&store
            .after_id(0, None, &Filter::default(), 100)
            .await
            .unwrap()),
        (1..=23).collect::<Vec<u64>>()
    );
    ship_all(&mut w).await;
    assert_eq!(store.spool_status().unwrap().rows, 0);
    let (on_server, distinct) = server_ids(&server, PgServer::db_name(&url), HOST);
    assert_eq!(on_server, (1..=23).collect::<Vec<u64>>());
    assert_eq!(distinct, 23);
    w.close().await.unwrap();
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_refuses_writes_naming_itself_until_shipping_makes_room() {
    let _one = ONE_SERVER.lock().await;
    let server = PgServer::start();
    let url = server.create_database("spool_full");
    let dir = tempfile::tempdir().unwrap();
    let spool_path = dir.path().join("spool.db");
    let opts = options(&spool_path, spool::MIN_MAX_BYTES);

    let (store, mut w) = store::open(&database(&url), &opts).await.unwrap();
    store_n(&mut w, 0, 1).await.unwrap();
    server.stop();
    let mut last = 1;
    let e = loop {
        match store_n(&mut w, last, 50).await {
            Ok(_) => last += 50,
            Err(e) => break e,
        }
        assert!(last < 100_000, "a spool of 256 KiB never filled");
    };
    let text = errchain::chain(&e);
    assert!(matches!(e, StoreError::SpoolFull { .. }), "{text}");
    assert!(
        text.contains(&spool_path.display().to_string()) && text.contains("spool_max_bytes"),
        "{text}"
    );
    assert!(w.check_room().is_err(), "known full: refused up front");
    let st = store.spool_status().unwrap();
    assert!(st.rows > 100, "{st:?}");
    let stored_while_down = st.rows;
    assert!(st.bytes <= st.max_bytes, "{st:?}");
    // Nothing half-stored of the refused batch.
    assert_eq!(
        store
            .after_id(last, None, &Filter::default(), 100)
            .await
            .unwrap()
            .len(),
        0
    );

    server.start_again();
    assert_eq!(ship_all(&mut w).await, stored_while_down);
    assert!(w.check_room().is_ok());
    // Writes are taken again; the refused ids are skipped, never reused.
    let next = store.last_id().await.unwrap();
    store_n(&mut w, next, 5).await.unwrap();
    let (on_server, distinct) = server_ids(&server, PgServer::db_name(&url), HOST);
    assert_eq!(distinct, on_server.len() as u64);
    assert_eq!(on_server.len() as u64, 1 + stored_while_down + 5);
    assert!(on_server.windows(2).all(|p| p[0] < p[1]));
    w.close().await.unwrap();
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spool_of_another_database_or_host_with_rows_is_refused() {
    let _one = ONE_SERVER.lock().await;
    let server = PgServer::start();
    let url = server.create_database("spool_owner");
    let other = server.create_database("spool_owner_other");
    let dir = tempfile::tempdir().unwrap();
    let spool_path = dir.path().join("spool.db");
    let (store, mut w) = open(&url, &spool_path).await;
    store_n(&mut w, 0, 1).await.unwrap();
    server.stop();
    store_n(&mut w, 1, 2).await.unwrap();
    w.close().await.unwrap();
    store.close().await;
    server.start_again();
    let e = store::open(
        &database(&other),
        &options(&spool_path, spool::DEFAULT_MAX_BYTES),
    )
    .await
    .unwrap_err();
    let text = errchain::chain(&e);
    assert!(
        matches!(e, StoreError::SpoolForeign { rows: 2, .. }) && text.contains(HOST),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_start_while_the_server_is_down_is_refused() {
    let _one = ONE_SERVER.lock().await;
    let server = PgServer::start();
    let url = server.create_database("spool_first");
    server.stop();
    let dir = tempfile::tempdir().unwrap();
    let e = store::open(
        &database(&url),
        &options(&dir.path().join("spool.db"), spool::DEFAULT_MAX_BYTES),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(e, StoreError::Open { .. }),
        "{}",
        errchain::chain(&e)
    );
    server.start_again();
}

/// The test: the daemon ingests (gRPC Add, one trigger a call, in
/// a loop) while its server is stopped for 30 s and started again: every
/// acknowledged trigger is on the server exactly once, in id order;
/// a subscriber saw the triggers live during the outage; Stats showed the
/// backlog grow and go back to 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_stopped_for_30_s_during_ingest_loses_and_duplicates_nothing() {
    let _one = ONE_SERVER.lock().await;
    let server = PgServer::start();
    let url = server.create_database("spool_daemon");
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[store]\nhost_id = \"{HOST}\"\nspool_path = \"{}\"\n",
        dir.path().join("spool.db").display()
    );
    let d = Daemon::start_on(DAEMON, dir.path(), &url, Some(&config));

    // A live subscriber from the start.
    let mut c = d.client().await;
    let mut sub = c
        .subscribe(pb::SubscribeRequest::default())
        .await
        .unwrap()
        .into_inner();
    let seen = Arc::new(Mutex::new(Vec::<(u64, Instant)>::new()));
    let watcher = tokio::spawn({
        let seen = seen.clone();
        async move {
            while let Ok(Some(r)) = sub.message().await {
                if let Some(Item::Trigger(t)) = r.item {
                    seen.lock().unwrap().push((t.id, Instant::now()));
                }
            }
        }
    });

    // Ingest until told to stop; every acknowledged id is kept.
    let stop = tokio_util::sync::CancellationToken::new();
    let ingest = tokio::spawn({
        let stop = stop.clone();
        let mut c = d.client().await;
        async move {
            let mut acked = Vec::new();
            while !stop.is_cancelled() {
                let r = c
                    .add(pb::AddRequest {
                        triggers: vec![client_trigger(TriggerType::LinkUp, "wlan0")],
                    })
                    .await
                    .expect("an Add while the server is away is spooled, not refused");
                acked.extend(r.into_inner().ids);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            acked
        }
    });

    let stats = async |c: &mut trigger_client::Client| {
        c.stats(pb::StatsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .spool
            .expect("a PostgreSQL store shows its spool")
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let st = stats(&mut c).await;
    assert!(st.server_reachable && st.backlog_rows == 0, "{st:?}");

    server.stop();
    let down_at = Instant::now();
    let mut peak = 0;
    while down_at.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let st = stats(&mut c).await;
        assert!(!st.server_reachable, "{st:?}");
        assert!(
            st.backlog_rows >= peak,
            "the backlog shrank while down: {st:?}"
        );
        peak = st.backlog_rows;
    }
    assert!(peak > 100, "the backlog did not grow: {peak}");
    // History reads the server only: refused at once, saying why.
    let asked = Instant::now();
    let e = c
        .query(pb::QueryRequest {
            page_size: 10,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
    assert!(e.message().contains("unreachable"), "{}", e.message());
    assert!(asked.elapsed() < Duration::from_secs(2));
    let up_at = Instant::now();
    server.start_again();

    // The backlog ships while ingest goes on.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let st = stats(&mut c).await;
        if st.server_reachable && st.backlog_rows == 0 {
            assert!(st.shipped_total >= peak, "{st:?}");
            assert!(
                !st.last_error.is_empty(),
                "the outage is the last error: {st:?}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "never shipped: {st:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.cancel();
    let acked = ingest.await.unwrap();
    assert!(acked.windows(2).all(|p| p[0] < p[1]), "ids increase");

    // Every acknowledged trigger on the server, exactly once, in order.
    let (on_server, distinct) = server_ids(&server, PgServer::db_name(&url), HOST);
    assert_eq!(distinct, on_server.len() as u64, "duplicates on the server");
    assert_eq!(on_server, acked, "what was acknowledged is what is stored");

    // The subscriber got every one live, those of the outage during it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.lock().unwrap().len() < acked.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seen = seen.lock().unwrap().clone();
    let seen_ids: Vec<u64> = seen.iter().map(|(id, _)| *id).collect();
    assert_eq!(seen_ids, acked);
    let live_during_outage = seen
        .iter()
        .filter(|(_, at)| *at > down_at + Duration::from_secs(1) && *at < up_at)
        .count();
    eprintln!(
        "{} acknowledged, backlog peak {peak}, {live_during_outage} live during the outage",
        acked.len()
    );
    assert!(
        live_during_outage > 100,
        "{live_during_outage} triggers reached the subscriber during the outage"
    );
    drop(c);
    drop(d);
    watcher.abort();
}

/// The daemon with a full spool: Add is RESOURCE_EXHAUSTED naming the
/// spool; triggerctl stats shows it; once the server is back and the
/// spool shipped, subscribers get a RESYNC (cause "store-error") for what
/// they were sent live and the store refused, and Adds work again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_refuses_adds_naming_it_and_subscribers_get_a_resync() {
    let _one = ONE_SERVER.lock().await;
    let server = PgServer::start();
    let url = server.create_database("spool_daemon_full");
    let dir = tempfile::tempdir().unwrap();
    let spool_path = dir.path().join("spool.db");
    let config = format!(
        "[store]\nhost_id = \"{HOST}\"\nspool_path = \"{}\"\nspool_max_bytes = {}\n",
        spool_path.display(),
        spool::MIN_MAX_BYTES
    );
    let d = Daemon::start_on(DAEMON, dir.path(), &url, Some(&config));
    let mut c = d.client().await;
    let mut acked = add_many(&mut c, "wlan0", 5, 5).await;
    let mut sub = c
        .subscribe(pb::SubscribeRequest {
            resume_after_id: Some(acked[4]),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();

    server.stop();
    let refused = loop {
        let triggers = (0..100)
            .map(|_| client_trigger(TriggerType::LinkUp, "wlan0"))
            .collect();
        match c.add(pb::AddRequest { triggers }).await {
            Ok(r) => acked.extend(r.into_inner().ids),
            Err(s) => break s,
        }
        assert!(acked.len() < 100_000, "a spool of 256 KiB never filled");
    };
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );
    assert!(
        refused
            .message()
            .contains(&spool_path.display().to_string())
            && refused.message().contains("spool_max_bytes"),
        "{}",
        refused.message()
    );
    // Refused up front now: no id given, nothing sent live.
    let again = c
        .add(pb::AddRequest {
            triggers: vec![client_trigger(TriggerType::LinkUp, "wlan0")],
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), tonic::Code::ResourceExhausted);
    let out = triggerctl_ok(d.triggerctl(TRIGGERCTL, &["stats"]).output().unwrap());
    assert!(
        out.contains("unreachable") && out.contains("spool backlog rows"),
        "{out}"
    );

    server.start_again();
    // The subscriber: every acknowledged trigger (and those of the batch
    // the spool refused after they were sent), then the RESYNC.
    let mut got = Vec::new();
    let resync = loop {
        match next_item(&mut sub, 60).await {
            Some(Item::Trigger(t)) if t.r#type == pb::TriggerType::Resync as i32 => break t,
            Some(Item::Trigger(t)) => got.push(t.id),
            _ => {}
        }
    };
    assert!(acked[5..].iter().all(|id| got.contains(id)));
    assert_eq!(resync.source, pb::Source::TriggerDb as i32);
    match &resync.detail {
        Some(pb::trigger::Detail::Resync(r)) => assert_eq!(r.cause, "store-error"),
        other => panic!("{other:?}"),
    }
    // Shipped, and writes are taken again.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let st = c
            .stats(pb::StatsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .spool
            .unwrap();
        if st.server_reachable && st.backlog_rows == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "never shipped: {st:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    acked.extend(add_many(&mut c, "eth0", 3, 3).await);
    let (on_server, distinct) = server_ids(&server, PgServer::db_name(&url), HOST);
    assert_eq!(distinct, on_server.len() as u64);
    let mut want = acked.clone();
    want.push(resync.id);
    want.sort_unstable();
    assert_eq!(on_server, want, "the acknowledged triggers and the RESYNC");
    drop(c);
    drop(d);
}

/// A refusal of the server (here a duplicate key) is an error, as before:
/// only an unreachable server sends writes to the spool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_of_the_server_stays_an_error_and_is_not_spooled() {
    let _one = ONE_SERVER.lock().await;
    let server = PgServer::start();
    let url = server.create_database("spool_refusal");
    let dir = tempfile::tempdir().unwrap();
    let (store, mut w) = open(&url, &dir.path().join("spool.db")).await;
    let stored = store_n(&mut w, 0, 3).await.unwrap();
    let e = w
        .insert(&stored[..1].iter().collect::<Vec<_>>())
        .await
        .unwrap_err();
    assert!(
        !matches!(
            e,
            StoreError::Unreachable { .. } | StoreError::SpoolFull { .. }
        ),
        "{}",
        errchain::chain(&e)
    );
    assert!(!w.has_backlog());
    let st = store.spool_status().unwrap();
    assert!(st.server_reachable && st.rows == 0, "{st:?}");
    w.close().await.unwrap();
    store.close().await;
}

/// The daemon killed while the server is down and started again before
/// it is back: ids go on above everything given, a subscriber resumes
/// over rows that are only in the spool, and once the server is back
/// every acknowledged trigger is there exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_killed_and_restarted_while_the_server_is_down_goes_on_from_the_spool() {
    let _one = ONE_SERVER.lock().await;
    let server = PgServer::start();
    let url = server.create_database("spool_daemon_restart");
    let dir = tempfile::tempdir().unwrap();
    let config = format!("[store]\nhost_id = \"{HOST}\"\n");
    let mut d = Daemon::start_on(DAEMON, dir.path(), &url, Some(&config));
    let mut c = d.client().await;
    let mut acked = add_many(&mut c, "wlan0", 5, 5).await;

    server.stop();
    acked.extend(add_many(&mut c, "wlan0", 10, 2).await);
    d.kill9();
    d.restart();
    let mut c = d.client().await;
    let after = add_many(&mut c, "eth0", 3, 3).await;
    assert!(after[0] > acked[14], "{after:?} after {acked:?}");
    acked.extend(&after);

    // Rows only in the spool, resumed over.
    let mut s = c
        .subscribe(pb::SubscribeRequest {
            resume_after_id: Some(acked[4]),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut got = Vec::new();
    while got.len() < acked.len() - 5 {
        if let Some(Item::Trigger(t)) = next_item(&mut s, 10).await {
            got.push(t.id);
        }
    }
    assert_eq!(got, acked[5..]);

    server.start_again();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let st = c
            .stats(pb::StatsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .spool
            .unwrap();
        if st.server_reachable && st.backlog_rows == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "never shipped: {st:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (on_server, distinct) = server_ids(&server, PgServer::db_name(&url), HOST);
    assert_eq!(distinct, on_server.len() as u64);
    assert_eq!(on_server, acked);
    drop(c);
    drop(d);
}
