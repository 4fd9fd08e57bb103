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
    let db = dir.path().join("t.db");
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
    let mut switch = failure_switch(&db).await;
    let hub = Arc::new(Hub::new(0, 64, 64));
    let mut sub = hub.subscribe(Filter::default()).unwrap();
    let stats = Arc::new(WriterStats::default());
    let (source_tx, source_rx) = ingest::source_channel();
    let stop = CancellationToken::new();
    let (handle, task) = spawn(
        conn,
        source_rx,
        hub.clone(),
        stats.clone(),
        WriterConfig {
            batch_max: 100,
            retention: Retention::default(),
            debounce: vec![],
        },
        stop.clone(),
    );
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
