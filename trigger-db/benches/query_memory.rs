//! History query latency with 1,000,000 rows stored, and the daemon's peak
//! resident memory idle and loaded.
//!
//! 1. Memory idle: the release daemon starts on an empty database (which it
//!    creates and migrates), sits idle for a second, and its VmHWM (peak
//!    RSS, /proc/PID/status) is read; then it stops.
//! 2. Fill: 1,000,000 rows go into that same database through SQLite's C
//!    API while the daemon is stopped (not through gRPC: this is setup, not
//!    measured), with exactly the rows the daemon would store: LINK_UP /
//!    LINK_DOWN on 20 interfaces, spread evenly over 30 days, protobuf bodies
//!    encoded as the daemon encodes them.
//! 3. Query: the daemon starts again; after 20 warm-up calls, 500 Query
//!    calls, each for the first page (page_size 100, ascending) of one
//!    interface (cycling through the 20) within a one-day window (moving
//!    across the 30 days), are timed one at a time from the client (gRPC over
//!    the Unix socket, decoding included). Baseline: the same SQL on a plain
//!    C API connection in the same run (rows stepped, bodies not decoded).
//! 4. Memory loaded: 100 subscribers (no filter, 10 connections) are
//!    connected, 20,000 triggers are added in Adds of 1,000 and delivered to
//!    every subscriber, 500 more queries run, and VmHWM is read again.
//!
//! Not measured: descending pages, later pages (page tokens), type filters,
//! queries concurrent with ingest, a cold OS page cache.
//!
//! Run: `cargo bench -p trigger-db --bench query_memory` (as any user).

mod support;

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, ensure};
use support::*;
use trigger_db::model::Timestamp;
use trigger_proto::v1::{self as pb, subscribe_response::Item};

const ROWS: u64 = 1_000_000;
const INTERFACES: u64 = 20;
const DAY_NS: i64 = 86_400 * 1_000_000_000;
const SPAN_DAYS: i64 = 30;
const QUERIES: usize = 500;
const SUBSCRIBERS: usize = 100;
const TRAFFIC: usize = 20_000;

/// Fills the stopped daemon's database through the C API.
fn fill(db_path: &std::path::Path, t0: i64) -> anyhow::Result<f64> {
    let db = Sqlite::open(db_path)?;
    db.exec(&daemon_pragmas("NORMAL"))?;
    let mut ins = db.prepare(INSERT)?;
    let step = SPAN_DAYS * DAY_NS / ROWS as i64;
    let start = Instant::now();
    let chunk = 50_000u64;
    for c in 0..ROWS / chunk {
        let rows: Vec<Row> = (c * chunk..(c + 1) * chunk)
            .map(|i| {
                Row::of(&wire_trigger(
                    i,
                    INTERFACES,
                    Timestamp(t0 + i as i64 * step),
                ))
            })
            .collect::<anyhow::Result<_>>()?;
        db.insert_tx(&mut ins, &rows)?;
    }
    drop(ins);
    db.exec("PRAGMA wal_checkpoint(TRUNCATE)")?;
    Ok(start.elapsed().as_secs_f64())
}

/// The `k`th query: one interface, a one-day window.
fn query(k: usize, t0: i64) -> pb::QueryRequest {
    let day = (k as i64 * 7) % (SPAN_DAYS - 1);
    let since = t0 + day * DAY_NS;
    pb::QueryRequest {
        since: Some(Timestamp(since).to_wire()),
        until: Some(Timestamp(since + DAY_NS).to_wire()),
        filter: Some(pb::TriggerFilter {
            interfaces: vec![format!("bench{}", k as u64 % INTERFACES)],
            ..Default::default()
        }),
        page_size: 100,
        ..Default::default()
    }
}

async fn query_run(c: &mut trigger_client::Client, t0: i64, n: usize) -> anyhow::Result<Vec<f64>> {
    for k in 0..20 {
        c.query(query(k, t0)).await?;
    }
    let mut lat = Vec::with_capacity(n);
    for k in 0..n {
        let q = query(k, t0);
        let start = Instant::now();
        let page = c.query(q).await?.into_inner();
        lat.push(start.elapsed().as_secs_f64() * 1e3);
        ensure!(
            page.triggers.len() == 100,
            "query {k}: {} rows",
            page.triggers.len()
        );
    }
    Ok(lat)
}

/// The same query in plain SQLite (the daemon's SQL), rows stepped.
fn baseline(db_path: &std::path::Path, t0: i64) -> anyhow::Result<Vec<f64>> {
    let db = Sqlite::open(db_path)?;
    db.exec(&daemon_pragmas("FULL"))?;
    let mut st = db.prepare(
        "SELECT id, body FROM triggers WHERE 1 AND observed_at >= ?1 AND observed_at < ?2 \
         AND if_name IN (?3) ORDER BY observed_at ASC, id ASC LIMIT ?4",
    )?;
    let mut lat = Vec::with_capacity(QUERIES);
    for k in 0..20 + QUERIES {
        let q = query(k % QUERIES, t0);
        let since = q
            .since
            .as_ref()
            .map_or(0, |t| t.seconds * 1_000_000_000 + i64::from(t.nanos));
        let until = q
            .until
            .as_ref()
            .map_or(0, |t| t.seconds * 1_000_000_000 + i64::from(t.nanos));
        let ifname = q
            .filter
            .as_ref()
            .map(|f| f.interfaces[0].clone())
            .unwrap_or_default();
        let start = Instant::now();
        st.bind_i64(1, since)?;
        st.bind_i64(2, until)?;
        st.bind_text(3, &ifname)?;
        st.bind_i64(4, 100)?;
        let mut rows = 0;
        let mut bytes = 0;
        while st.step()? {
            // Read what the daemon reads: the id and the body.
            rows += usize::from(st.column_i64(0) > 0);
            bytes += st.column_bytes(1);
        }
        st.reset()?;
        if k >= 20 {
            lat.push(start.elapsed().as_secs_f64() * 1e3);
        }
        ensure!(rows == 100 && bytes > 0, "baseline query {k}: {rows} rows");
    }
    Ok(lat)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    println!("query + memory: {ROWS} rows on {INTERFACES} interfaces over {SPAN_DAYS} days");
    println!("machine: {}", machine(dir.path()));

    // 1. Idle, empty database.
    let mut d = start_daemon(dir.path(), None, NO_NETLINK);
    let mut c = d.client().await;
    c.stats(pb::StatsRequest::default()).await?;
    drop(c);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (idle_hwm, idle_rss) = d.rss_kib();
    let db_path = d.database.clone();
    stop(&mut d)?;
    println!(
        "memory idle (empty db): peak RSS {:.1} MiB (current {:.1} MiB); target <= 20 MiB: {}",
        mib(idle_hwm),
        mib(idle_rss),
        if mib(idle_hwm) <= 20.0 {
            "met"
        } else {
            "MISSED"
        }
    );

    // 2. Fill.
    let t0 = Timestamp::now().0 - SPAN_DAYS * DAY_NS;
    let secs = fill(&db_path, t0)?;
    let size = std::fs::metadata(&db_path)?.len();
    println!(
        "fill: {ROWS} rows through the C API in {secs:.1} s; database {:.0} MiB",
        size as f64 / 1048576.0
    );

    // 3. Query.
    let mut d = start_daemon(dir.path(), None, NO_NETLINK);
    let mut c = d.client().await;
    let stats = c.stats(pb::StatsRequest::default()).await?.into_inner();
    ensure!(
        stats.stored_triggers == ROWS,
        "{} rows stored",
        stats.stored_triggers
    );
    let mut lat = query_run(&mut c, t0, QUERIES).await?;
    let (p50, p99, max) = summary(&mut lat);
    let mut base = baseline(&db_path, t0)?;
    let (bp50, bp99, bmax) = summary(&mut base);
    println!("query first page (100 rows), one interface, one-day window, {QUERIES} calls:");
    println!("  daemon Query (gRPC):   p50 {p50:.3} ms  p99 {p99:.3} ms  max {max:.3} ms");
    println!("  plain SQLite same SQL: p50 {bp50:.3} ms  p99 {bp99:.3} ms  max {bmax:.3} ms");
    println!(
        "  target p50 <= 5 ms: {}",
        if p50 <= 5.0 { "met" } else { "MISSED" }
    );
    let (after_query_hwm, _) = d.rss_kib();

    // 4. Loaded: 100 subscribers, traffic, more queries.
    let mut conns = Vec::new();
    for _ in 0..10 {
        conns.push(d.client().await);
    }
    let delivered = Arc::new(AtomicUsize::new(0));
    let mut subs = Vec::new();
    for j in 0..SUBSCRIBERS {
        let mut cc = conns[j % conns.len()].clone();
        let mut s = cc
            .subscribe(pb::SubscribeRequest::default())
            .await?
            .into_inner();
        let delivered = delivered.clone();
        subs.push(tokio::spawn(async move {
            let mut n = 0usize;
            while n < TRAFFIC {
                match s.message().await {
                    Ok(Some(pb::SubscribeResponse {
                        item: Some(Item::Trigger(_)),
                    })) => {
                        n += 1;
                        delivered.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Some(_)) => {}
                    _ => break,
                }
            }
            n
        }));
    }
    let t_live = Timestamp::now().0;
    for b in 0..TRAFFIC / 1_000 {
        let triggers = (0..1_000u64)
            .map(|i| {
                let k = b as u64 * 1_000 + i;
                wire_trigger(k, INTERFACES, Timestamp(t_live + k as i64))
            })
            .collect();
        c.add(pb::AddRequest { triggers }).await?;
        // Pace the traffic to the subscribers: no one falls behind its queue.
        let want = (b + 1) * 1_000 * SUBSCRIBERS;
        let deadline = Instant::now() + Duration::from_secs(30);
        while delivered.load(Ordering::Relaxed) < want && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    let mut total = 0;
    for s in subs {
        total += tokio::time::timeout(Duration::from_secs(60), s)
            .await
            .context("subscribers did not get the traffic")??;
    }
    ensure!(total == SUBSCRIBERS * TRAFFIC, "{total} delivered");
    query_run(&mut c, t0, QUERIES).await?;
    let (hwm, rss) = d.rss_kib();
    println!(
        "memory loaded ({} rows, {SUBSCRIBERS} subscribers, {TRAFFIC} triggers fanned out to each, {} queries): \
         peak RSS {:.1} MiB (current {:.1} MiB; after the first queries {:.1} MiB); target <= 64 MiB: {}",
        ROWS + TRAFFIC as u64,
        2 * QUERIES,
        mib(hwm),
        mib(rss),
        mib(after_query_hwm),
        if mib(hwm) <= 64.0 { "met" } else { "MISSED" }
    );
    drop(conns);
    drop(c);
    stop(&mut d)?;
    Ok(())
}
