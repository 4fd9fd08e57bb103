//! trigger-db on PostgreSQL (issue 15's figures): ingest through gRPC
//! against plain PostgreSQL, and a history query among 10 million rows of
//! 100 hosts.
//!
//! One PostgreSQL server of the bench's own (`system_tests::postgres`,
//! Debian's binaries, a Unix socket in a temporary directory), durable:
//! `fsync = on`, `full_page_writes = on`, `synchronous_commit = on`, with
//! `shared_buffers = 512MB` as an operator of a fleet database would give
//! it. The daemon is the release binary as a process, rtnetlink source off.
//!
//! **Ingest**: 200,000 LINK_UP/LINK_DOWN triggers on 20 interfaces, built
//! before the clock starts, sent as gRPC `Add` of 1,000 each, timed from
//! the first send to the last reply; one Add in flight, and four
//! connections with one Add in flight each. Baseline, in the same run on
//! the same server: one client with the same driver (sqlx) inserting the
//! same rows (same schema from the daemon's migrations, same protobuf
//! bodies, same host column and ids) into a fresh database, one
//! transaction of one `INSERT .. SELECT .. FROM UNNEST(arrays)` per 1,000
//! rows, the fastest plain shape sqlx offers short of COPY. Baseline and
//! daemon alternate over 3 rounds; medians.
//!
//! **Query**: 10,000,000 rows of 100 hosts (100,000 each, 10 interfaces
//! per host, one row per host every 26 s over 30 days, loaded by COPY in
//! time order so that a host's rows are spread over the table as a live
//! fleet writes them; then the daemon's indexes and ANALYZE). The daemon,
//! one of the hosts, answers `Query` for the first 100 rows of a random
//! other host and interface in a random day (`hosts = [h]`, an interface
//! filter, since/until one day): 500 queries after 50 to warm, each timed
//! from the client's send to the response; p50, p90, p99. The same SQL
//! the store runs, sent directly through sqlx, is printed beside it (what
//! the server itself costs).
//!
//! Not measured: the SQLite spool, subscribers, retention, queries across
//! all hosts (`all_hosts`), a server on another machine (the socket is
//! local).
//!
//! Run (as root: the server runs as an unprivileged user the bench picks):
//! `cargo bench -p trigger-db --bench postgres`; env `PG_BENCH=ingest` or
//! `query` runs one part, `INGEST_ROWS` and `QUERY_ROWS` change the counts.

mod support;

use std::{
    fmt::Write as _,
    time::{Duration, Instant},
};

use anyhow::{Context as _, ensure};
use prost::Message as _;
use sqlx::{Connection as _, PgConnection, Row as _};
use support::*;
use system_tests::postgres::PgServer;
use trigger_db::model::Timestamp;
use trigger_proto::v1 as pb;

const BATCH: usize = 1_000;
const INTERFACES: u64 = 20;
const CONCURRENT: usize = 4;
const ROUNDS: usize = 3;
const HOST: &str = "bench-host";

const QUERY_HOSTS: u64 = 100;
const QUERY_INTERFACES: u64 = 10;
const DAYS: i64 = 30;
const DAY_NS: i64 = 86_400 * 1_000_000_000;
const PAGE: u32 = 100;
const WARM_QUERIES: usize = 50;
const QUERIES: usize = 500;

/// The server's settings over the test defaults: durable, and buffers an
/// operator would give a fleet database.
const SETTINGS: &[&str] = &[
    "fsync=on",
    "full_page_writes=on",
    "synchronous_commit=on",
    "shared_buffers=512MB",
    "maintenance_work_mem=512MB",
    "max_wal_size=4GB",
];

fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// A fresh database with the daemon's schema.
async fn fresh_database(server: &PgServer, label: &str) -> anyhow::Result<(String, PgConnection)> {
    let url = server.create_database(label);
    let mut conn = PgConnection::connect(&url)
        .await
        .with_context(|| format!("connect {url}"))?;
    MIGRATOR.run(&mut conn).await.context("migrations")?;
    Ok((url, conn))
}

/// The daemon's configuration as host `host`, its spool (used only while
/// the server is unreachable, i.e. never here) in `dir`.
fn host_config(host: &str, dir: &std::path::Path) -> String {
    format!(
        "{NO_NETLINK}\n[store]\nhost_id = \"{host}\"\nspool_path = {:?}\n",
        dir.join("spool.db").display().to_string()
    )
}

// ---------------------------------------------------------------- ingest

/// Plain PostgreSQL through sqlx: the same rows, one UNNEST insert per
/// transaction of 1,000.
async fn baseline(server: &PgServer, reqs: &[pb::AddRequest]) -> anyhow::Result<f64> {
    let rows: Vec<Vec<Row>> = reqs
        .iter()
        .map(|r| r.triggers.iter().map(Row::of).collect())
        .collect::<anyhow::Result<_>>()?;
    let (_, mut conn) = fresh_database(server, "ingest_plain").await?;
    let start = Instant::now();
    let mut next_id = 1i64;
    for batch in &rows {
        let k = batch.len() as i64;
        let mut tx = conn.begin().await?;
        let done = sqlx::query(
            "INSERT INTO triggers (host, id, observed_at, source, type, if_name, if_index, body) \
             SELECT $1, * FROM UNNEST($2::bigint[], $3::bigint[], $4::integer[], \
             $5::integer[], $6::text[], $7::bigint[], $8::bytea[])",
        )
        .bind(HOST)
        .bind((next_id..next_id + k).collect::<Vec<i64>>())
        .bind(batch.iter().map(|r| r.observed_at).collect::<Vec<i64>>())
        .bind(batch.iter().map(|r| r.source as i32).collect::<Vec<i32>>())
        .bind(batch.iter().map(|r| r.kind as i32).collect::<Vec<i32>>())
        .bind(
            batch
                .iter()
                .map(|r| r.if_name.clone())
                .collect::<Vec<String>>(),
        )
        .bind(batch.iter().map(|r| r.if_index).collect::<Vec<i64>>())
        .bind(
            batch
                .iter()
                .map(|r| r.body.clone())
                .collect::<Vec<Vec<u8>>>(),
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        ensure!(
            done.rows_affected() == k as u64,
            "{} rows",
            done.rows_affected()
        );
        next_id += k;
    }
    let n: usize = rows.iter().map(Vec::len).sum();
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// Through the daemon on a fresh database: `conns` connections, each with
/// one Add in flight.
async fn daemon_ingest(
    server: &PgServer,
    reqs: &[pb::AddRequest],
    conns: usize,
) -> anyhow::Result<(f64, u64)> {
    let url = server.create_database("ingest_daemon");
    let dir = tempfile::tempdir()?;
    let mut d = Daemon::start_for_bench_on(
        daemon_bin(),
        dir.path(),
        &url,
        &host_config(HOST, dir.path()),
    );
    let rate = add_all(&d, reqs, conns).await?;
    let (hwm, _) = d.rss_kib();
    stop(&mut d)?;
    Ok((rate, hwm))
}

async fn ingest(server: &PgServer) -> anyhow::Result<()> {
    let n = env_count("INGEST_ROWS", 200_000);
    let reqs = add_requests(n, INTERFACES, BATCH);
    println!("ingest: {n} triggers in Adds of {BATCH} into PostgreSQL");
    let (mut base, mut seq, mut conc) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        base.push(baseline(server, &reqs).await?);
        seq.push(daemon_ingest(server, &reqs, 1).await?);
        conc.push(daemon_ingest(server, &reqs, CONCURRENT).await?);
        println!(
            "round {round}: plain {:.0}/s, daemon 1 in flight {:.0}/s (ratio {:.2}), \
             {CONCURRENT} in flight {:.0}/s (ratio {:.2})",
            base[round],
            seq[round].0,
            seq[round].0 / base[round],
            conc[round].0,
            conc[round].0 / base[round]
        );
    }
    let b = median(base);
    let s = median(seq.iter().map(|x| x.0).collect());
    let c = median(conc.iter().map(|x| x.0).collect());
    let hwm = seq.iter().chain(&conc).map(|x| x.1).max().unwrap_or(0);
    println!("median of {ROUNDS} rounds:");
    println!("  plain PostgreSQL (sqlx, UNNEST x1,000 per tx): {b:>9.0} triggers/s");
    println!(
        "  daemon Add x1000, 1 in flight:                 {s:>9.0} triggers/s  ratio {:.2}",
        s / b
    );
    println!(
        "  daemon Add x1000, {CONCURRENT} in flight:                 {c:>9.0} triggers/s  ratio {:.2}",
        c / b
    );
    println!("  daemon peak RSS while ingesting: {:.1} MiB", mib(hwm));
    println!(
        "target ratio >= 0.5 (1 in flight): {}",
        if s / b >= 0.5 { "met" } else { "MISSED" }
    );
    Ok(())
}

// ---------------------------------------------------------------- query

fn host_name(h: u64) -> String {
    format!("host-{h:03}")
}

/// The `k`th row of host `h` (ids from 1): interface `wlan{k % 10}`,
/// observed `k * step` after `t0`.
fn fleet_body(k: u64, at: i64) -> Vec<u8> {
    let mut w = wire_trigger(k, QUERY_INTERFACES, Timestamp(at));
    if let Some(i) = w.interface.as_mut() {
        i.name = format!("wlan{}", k % QUERY_INTERFACES);
    }
    w.id = 0;
    w.encode_to_vec()
}

/// Loads `rows` rows of [`QUERY_HOSTS`] hosts by COPY, in time order
/// (host after host at each step), with the secondary indexes dropped
/// during the load and built after it, as a bulk load is done.
async fn load_fleet(conn: &mut PgConnection, rows: u64, t0: i64) -> anyhow::Result<i64> {
    let per_host = rows / QUERY_HOSTS;
    let step = DAYS * DAY_NS / per_host as i64;
    let indexes: Vec<(String, String)> = sqlx::query(
        "SELECT indexname, indexdef FROM pg_indexes \
         WHERE tablename = 'triggers' AND indexname <> 'triggers_pkey'",
    )
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect();
    for (name, _) in &indexes {
        // The names and definitions come from the catalogue of the
        // bench's own database.
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP INDEX {name}")))
            .execute(&mut *conn)
            .await?;
    }
    let start = Instant::now();
    let mut copy = conn
        .copy_in_raw(
            "COPY triggers (host, id, observed_at, source, type, if_name, if_index, body) \
             FROM STDIN",
        )
        .await?;
    let mut buf = String::with_capacity(4 << 20);
    for k in 0..per_host {
        let at = t0 + k as i64 * step;
        for h in 0..QUERY_HOSTS {
            let body = fleet_body(k, at);
            let kind = if k.is_multiple_of(2) {
                pb::TriggerType::LinkUp
            } else {
                pb::TriggerType::LinkDown
            };
            write!(
                buf,
                "{}\t{}\t{at}\t{}\t{}\twlan{}\t{}\t\\\\x",
                host_name(h),
                k + 1,
                pb::Source::Client as i32,
                kind as i32,
                k % QUERY_INTERFACES,
                10 + k % QUERY_INTERFACES,
            )?;
            for b in body {
                write!(buf, "{b:02x}")?;
            }
            buf.push('\n');
        }
        if buf.len() > 4 << 20 {
            copy.send(buf.as_bytes()).await?;
            buf.clear();
        }
    }
    copy.send(buf.as_bytes()).await?;
    let copied = copy.finish().await?;
    ensure!(copied == per_host * QUERY_HOSTS, "{copied} rows copied");
    println!(
        "  loaded {copied} rows in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    let start = Instant::now();
    for (_, def) in &indexes {
        sqlx::query(sqlx::AssertSqlSafe(def.as_str()))
            .execute(&mut *conn)
            .await?;
    }
    sqlx::query(
        "INSERT INTO hosts (host, reserved_id) \
         SELECT 'host-' || lpad(h::text, 3, '0'), $1 FROM generate_series(0, $2) AS h",
    )
    .bind(per_host as i64)
    .bind(QUERY_HOSTS as i64 - 1)
    .execute(&mut *conn)
    .await?;
    sqlx::query("ANALYZE triggers").execute(&mut *conn).await?;
    println!(
        "  {} indexes built and analysed in {:.1} s",
        indexes.len(),
        start.elapsed().as_secs_f64()
    );
    Ok(step)
}

/// The i-th query: a host other than the daemon's, an interface, a day.
fn pick(i: usize) -> (u64, u64, i64) {
    // A fixed walk over (host, interface, day), spread by large strides.
    let i = i as u64;
    (
        1 + (i * 37) % (QUERY_HOSTS - 1),
        (i * 7) % QUERY_INTERFACES,
        ((i * 11) % DAYS as u64) as i64,
    )
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

async fn query(server: &PgServer) -> anyhow::Result<()> {
    let rows = env_count("QUERY_ROWS", 10_000_000) as u64;
    println!(
        "query: first {PAGE} rows of one host and interface in a day, among {rows} rows of \
         {QUERY_HOSTS} hosts"
    );
    let (url, mut conn) = fresh_database(server, "query").await?;
    let t0 = Timestamp::now().0 - (DAYS + 1) * DAY_NS;
    load_fleet(&mut conn, rows, t0).await?;
    let size: String =
        sqlx::query_scalar("SELECT pg_size_pretty(pg_total_relation_size('triggers'))")
            .fetch_one(&mut conn)
            .await?;
    println!("  table with indexes: {size}");

    // The store's statement for one host, an interface and a window, sent
    // directly: what PostgreSQL itself costs.
    let mut direct = Vec::with_capacity(QUERIES);
    let mut counts = Vec::with_capacity(WARM_QUERIES + QUERIES);
    for i in 0..WARM_QUERIES + QUERIES {
        let (h, ifn, day) = pick(i);
        let start = Instant::now();
        let got = sqlx::query(
            "SELECT id, body FROM triggers WHERE host = $1 AND if_name = $2 \
             AND observed_at >= $3 AND observed_at < $4 ORDER BY observed_at, id LIMIT $5",
        )
        .bind(host_name(h))
        .bind(format!("wlan{ifn}"))
        .bind(t0 + day * DAY_NS)
        .bind(t0 + (day + 1) * DAY_NS)
        .bind(i64::from(PAGE))
        .fetch_all(&mut conn)
        .await?;
        let took = start.elapsed();
        ensure!(!got.is_empty(), "no rows for query {i}");
        counts.push(got.len());
        if i >= WARM_QUERIES {
            direct.push(ms(took));
        }
    }

    let dir = tempfile::tempdir()?;
    let config = host_config(&host_name(0), dir.path());
    let mut d = Daemon::start_for_bench_on(daemon_bin(), dir.path(), &url, &config);
    let mut c = d.client().await;
    let request = |i: usize| {
        let (h, ifn, day) = pick(i);
        let since = Timestamp(t0 + day * DAY_NS);
        let until = Timestamp(t0 + (day + 1) * DAY_NS);
        pb::QueryRequest {
            since: Some(since.to_wire()),
            until: Some(until.to_wire()),
            filter: Some(pb::TriggerFilter {
                interfaces: vec![format!("wlan{ifn}")],
                ..Default::default()
            }),
            page_size: PAGE,
            hosts: vec![host_name(h)],
            ..Default::default()
        }
    };
    let mut through_daemon = Vec::with_capacity(QUERIES);
    for (i, &want) in counts.iter().enumerate() {
        let req = request(i);
        let want_if = req.filter.as_ref().map(|f| f.interfaces[0].clone());
        let start = Instant::now();
        let r = c.query(req).await?.into_inner();
        let took = start.elapsed();
        ensure!(
            r.triggers.len() == want,
            "query {i}: {} rows through the daemon, {want} by SQL",
            r.triggers.len(),
        );
        ensure!(
            r.triggers
                .iter()
                .all(|t| t.interface.as_ref().map(|i| &i.name) == want_if.as_ref()),
            "a row of another interface"
        );
        if i >= WARM_QUERIES {
            through_daemon.push(ms(took));
        }
    }
    stop(&mut d)?;

    let line = |label: &str, v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        println!(
            "  {label}: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} queries)",
            pct(v, 50.0),
            pct(v, 90.0),
            pct(v, 99.0),
            v.last().copied().unwrap_or(f64::NAN),
            v.len()
        );
    };
    line("daemon Query (gRPC)        ", &mut through_daemon);
    line("the same SQL, sqlx directly", &mut direct);
    println!(
        "target p50 <= 5 ms through the daemon: {}",
        if pct(&through_daemon, 50.0) <= 5.0 {
            "met"
        } else {
            "MISSED"
        }
    );
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let part = std::env::var("PG_BENCH").unwrap_or_default();
    let server = PgServer::start_with(SETTINGS);
    let dir = tempfile::tempdir()?;
    println!("machine: {}", machine(dir.path()));
    println!(
        "server: {} ({})",
        server.psql("postgres", "SELECT version()").trim(),
        SETTINGS.join(", ")
    );
    if part.is_empty() || part == "ingest" {
        ingest(&server).await?;
    }
    if part.is_empty() || part == "query" {
        query(&server).await?;
    }
    Ok(())
}
