use sqlx::{Connection as _, SqliteConnection};

use super::*;
use crate::{
    ingest,
    model::{Detail, Interface, LinkParameter, LinkParameterType},
    store::{self, Durability},
    threshold::{Direction, Scope},
};

/// A switch inside the database that makes every insert into
/// `triggers` fail, the way a full disk or a read-only file system
/// fails a commit.
async fn failure_switch(db: &std::path::Path) -> SqliteConnection {
    let mut c = SqliteConnection::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    sqlx::raw_sql(
        "CREATE TABLE fail_switch (failing INTEGER NOT NULL); \
         INSERT INTO fail_switch VALUES (0); \
         CREATE TRIGGER fail_insert BEFORE INSERT ON triggers \
         WHEN (SELECT failing FROM fail_switch) \
         BEGIN SELECT RAISE(ABORT, 'disk full (test)'); END;",
    )
    .execute(&mut c)
    .await
    .unwrap();
    c
}

async fn set_failing(c: &mut SqliteConnection, failing: bool) {
    sqlx::query("UPDATE fail_switch SET failing = ?")
        .bind(i64::from(failing))
        .execute(c)
        .await
        .unwrap();
}

fn report(value: f64) -> Trigger {
    let mut t = Trigger::new(Source::Client, TriggerType::LinkParametersReport);
    t.interface = Some(Interface {
        name: "wlan0".into(),
        ..Default::default()
    });
    t.detail = Some(Detail::ParametersReport {
        parameters: vec![LinkParameter {
            kind: LinkParameterType::SignalStrength,
            value,
            unit: None,
            threshold_crossed: None,
        }],
    });
    t
}

fn link_down(source: Source) -> Trigger {
    let mut t = Trigger::new(source, TriggerType::LinkDown);
    t.interface = Some(Interface {
        name: "eth0".into(),
        ..Default::default()
    });
    t
}

/// Waits (bounded) until `cond` holds.
async fn until(what: &str, cond: impl Fn() -> bool) {
    for _ in 0..1_000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never happened: {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_write_is_counted_reported_by_a_resync_and_leaves_thresholds_as_they_were() {
    let dir = tempfile::tempdir().unwrap();
    let (store, db, mut sub, stats, source_tx, handle, stop, task) =
        held_writer(dir.path(), Duration::ZERO).await;
    let mut switch = failure_switch(&db).await;
    handle
        .configure_thresholds(vec![Change::Set(Threshold {
            id: 0,
            scope: Scope::Interface("wlan0".into()),
            parameter: LinkParameterType::SignalStrength,
            value: 40.0,
            direction: Direction::Below,
            hysteresis: 0.0,
            one_shot: false,
            spent: false,
        })])
        .await
        .unwrap();

    // Above the threshold: arms it.
    let armed = handle.add(vec![report(50.0)]).await.unwrap();
    assert_eq!(sub.rx.recv().await.unwrap().trigger.id, armed[0]);

    set_failing(&mut switch, true).await;
    // A client Add gets the error; the report it carried was not stored.
    assert!(handle.add(vec![report(30.0)]).await.is_err());
    // A source trigger has nobody to tell but the subscribers.
    source_tx
        .send(ingest::SourceBatch {
            triggers: vec![link_down(Source::Rtnetlink)],
            links: None,
        })
        .await
        .unwrap();
    until("the source trigger's failed commit", || {
        stats.unstored_triggers.load(Ordering::Relaxed) == 1
    })
    .await;
    assert!(stats.write_errors.load(Ordering::Relaxed) >= 2);
    // Live delivery does not wait for the commit: what the store then
    // refused was sent already. It is not in the store, and counted.
    let mut live = Vec::new();
    while let Ok(d) = sub.rx.try_recv() {
        live.push(d.trigger.clone());
    }
    assert!(
        live.iter().any(|t| t.kind == TriggerType::LinkDown),
        "{live:?}"
    );
    for t in &live {
        assert!(store.get(t.id).await.is_err(), "{} is not stored", t.id);
    }

    // The store works again: the RESYNC comes without new input.
    set_failing(&mut switch, false).await;
    let resync = sub.rx.recv().await.unwrap().trigger.clone();
    assert_eq!(resync.kind, TriggerType::Resync);
    assert_eq!(resync.source, Source::TriggerDb);
    assert!(resync.id > 0, "the RESYNC is stored");
    match &resync.detail {
        Some(Detail::Resync(r)) => assert_eq!(r.cause, STORE_ERROR_CAUSE),
        other => panic!("RESYNC without its detail: {other:?}"),
    }

    // The failed report did not move the threshold's state: the same
    // report, stored now, crosses it.
    let ids = handle.add(vec![report(30.0)]).await.unwrap();
    let stored = sub.rx.recv().await.unwrap().trigger.clone();
    assert_eq!(stored.id, ids[0]);
    let derived = sub.rx.recv().await.unwrap().trigger.clone();
    assert_eq!(derived.source, Source::Threshold);
    assert_eq!(derived.kind, TriggerType::LinkParametersReport);

    stop.cancel();
    task.await.unwrap();
}

/// A writer on a fresh SQLite store with `source_store_delay`, a
/// subscriber to everything, and the source channel.
async fn held_writer(
    dir: &std::path::Path,
    delay: Duration,
) -> (
    store::Store,
    std::path::PathBuf,
    crate::hub::Subscription,
    Arc<WriterStats>,
    ingest::SourceSender,
    WriterHandle,
    CancellationToken,
    tokio::task::JoinHandle<()>,
) {
    let db = dir.join("t.db");
    let (store, conn) = store::open(
        &store::Database::Sqlite(db.clone()),
        &store::OpenOptions {
            durability: Durability::Normal,
            readers: 1,
            host_id: String::new(),
            host_lock_wait: Duration::ZERO,
            spool: None,
        },
    )
    .await
    .unwrap();
    let hub = Arc::new(Hub::new(0, 64, 64));
    let sub = hub.subscribe(Filter::default()).unwrap();
    let stats = Arc::new(WriterStats::default());
    let (source_tx, source_rx) = ingest::source_channel();
    let stop = CancellationToken::new();
    let (handle, task) = spawn(
        conn,
        source_rx,
        hub,
        stats.clone(),
        WriterConfig {
            batch_max: 100,
            retention: Retention::default(),
            debounce: vec![],
            source_store_delay: delay,
        },
        stop.clone(),
    );
    (store, db, sub, stats, source_tx, handle, stop, task)
}

async fn send_link_down(tx: &ingest::SourceSender) {
    tx.send(ingest::SourceBatch {
        triggers: vec![link_down(Source::Rtnetlink)],
        links: None,
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_source_triggers_go_live_at_once_and_into_the_store_with_the_next_add() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _db, mut sub, stats, source_tx, handle, stop, task) =
        held_writer(dir.path(), Duration::from_secs(60)).await;
    for _ in 0..3 {
        send_link_down(&source_tx).await;
    }
    let mut live = Vec::new();
    for _ in 0..3 {
        live.push(sub.rx.recv().await.unwrap().trigger.id);
    }
    assert_eq!(live, vec![1, 2, 3]);
    for id in &live {
        assert!(store.get(*id).await.is_err(), "{id} is held, not stored");
    }
    assert_eq!(stats.transactions.load(Ordering::Relaxed), 0);
    // An Add stores them first, in the same transaction, and is answered
    // once all of it is committed.
    let ids = handle.add(vec![link_down(Source::Client)]).await.unwrap();
    assert_eq!(ids, vec![4]);
    for id in 1..=4 {
        assert!(store.get(id).await.is_ok(), "{id} is stored");
    }
    assert_eq!(stats.transactions.load(Ordering::Relaxed), 1);
    assert_eq!(stats.ingested.load(Ordering::Relaxed), 4);
    assert_eq!(sub.rx.recv().await.unwrap().trigger.id, 4);
    // Held at shutdown: stored before the writer ends.
    send_link_down(&source_tx).await;
    assert_eq!(sub.rx.recv().await.unwrap().trigger.id, 5);
    stop.cancel();
    task.await.unwrap();
    assert!(store.get(5).await.is_ok(), "held at shutdown, then stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_source_triggers_are_stored_after_the_delay_and_a_failure_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let (store, db, mut sub, stats, source_tx, _handle, stop, task) =
        held_writer(dir.path(), Duration::from_millis(100)).await;
    let mut switch = failure_switch(&db).await;
    send_link_down(&source_tx).await;
    send_link_down(&source_tx).await;
    assert_eq!(sub.rx.recv().await.unwrap().trigger.id, 1);
    assert_eq!(sub.rx.recv().await.unwrap().trigger.id, 2);
    until("the held triggers stored", || {
        stats.ingested.load(Ordering::Relaxed) == 2
    })
    .await;
    assert!(store.get(1).await.is_ok() && store.get(2).await.is_ok());
    // A held batch the store refuses: counted as lost, and subscribers
    // get a RESYNC once the store works again.
    set_failing(&mut switch, true).await;
    send_link_down(&source_tx).await;
    assert_eq!(sub.rx.recv().await.unwrap().trigger.id, 3);
    until("the failed commit of the held trigger", || {
        stats.unstored_triggers.load(Ordering::Relaxed) == 1
    })
    .await;
    assert!(store.get(3).await.is_err());
    set_failing(&mut switch, false).await;
    // (A retry while the store still failed sent a RESYNC too, unstored.)
    until("the RESYNC stored", || {
        stats.ingested.load(Ordering::Relaxed) > 2
    })
    .await;
    let mut last = None;
    while let Ok(d) = sub.rx.try_recv() {
        last = Some(d.trigger.clone());
    }
    let resync = last.expect("a RESYNC");
    assert_eq!(resync.kind, TriggerType::Resync);
    assert!(store.get(resync.id).await.is_ok(), "the RESYNC is stored");
    stop.cancel();
    task.await.unwrap();
}
