//! Ingest throughput: triggers per second stored durably through gRPC `Add`
//! in batches of 1,000, against plain SQLite inserting the same rows in the
//! same run.
//!
//! The daemon is the release binary as a process, default durability
//! (WAL, `synchronous = FULL`: an acknowledged Add is on disk), on a fresh
//! database in a temporary directory; the rtnetlink source is off. The
//! client pre-encodes every request, then times from the first Add sent to
//! the last reply, with one Add in flight (sequential) and with four
//! connections each keeping one Add in flight (the writer may then
//! group-commit them). Baseline and daemon runs alternate three times; the
//! medians and each round are printed. The baseline inserts the same rows
//! (same schema, same protobuf bodies, same indexes) into a fresh database
//! on the same disk through SQLite's C API: one prepared statement,
//! transactions of 1,000 rows, WAL and `synchronous = FULL`, one thread.
//!
//! A diagnostic line also runs the daemon's own statement shape (one
//! 1,000-row `INSERT .. VALUES .. RETURNING id`) on plain SQLite.
//!
//! Not measured: reads, subscribers (none are connected), retention, the
//! cost of validating Adds apart from the total, or durability = normal.
//!
//! Run: `cargo bench -p trigger-db --bench ingest` (as any user; env
//! `INGEST_ROWS` changes the row count, default 200,000).

mod support;

use std::time::Instant;

use anyhow::ensure;
use support::*;
use trigger_proto::v1 as pb;

const BATCH: usize = 1_000;
const INTERFACES: u64 = 20;
/// Connections each keeping one Add in flight, for the concurrent run.
const CONCURRENT: usize = 4;
/// Baseline and daemon runs alternate this many times; medians are reported.
const ROUNDS: usize = 3;

fn rows_env() -> usize {
    std::env::var("INGEST_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000)
}

/// Plain SQLite: the same rows, transactions of 1,000, WAL + FULL.
fn baseline(dir: &std::path::Path, reqs: &[pb::AddRequest]) -> anyhow::Result<f64> {
    let rows: Vec<Vec<Row>> = reqs
        .iter()
        .map(|r| r.triggers.iter().map(Row::of).collect())
        .collect::<anyhow::Result<_>>()?;
    let db = Sqlite::open(&dir.join("baseline.db"))?;
    db.exec(&daemon_pragmas("FULL"))?;
    db.exec(SCHEMA)?;
    let mut ins = db.prepare(INSERT)?;
    let start = Instant::now();
    for tx in &rows {
        db.insert_tx(&mut ins, tx)?;
    }
    let secs = start.elapsed().as_secs_f64();
    let n: usize = rows.iter().map(Vec::len).sum();
    Ok(n as f64 / secs)
}

/// Diagnostic, not the baseline: plain SQLite running the daemon's own
/// statement shape, one multi-row `INSERT ... VALUES (..) x 1,000 ...
/// RETURNING id` per transaction, ids stepped out. Separates what SQLite
/// costs for that shape from what the rest of the daemon costs.
fn daemon_shaped_sql(dir: &std::path::Path, reqs: &[pb::AddRequest]) -> anyhow::Result<f64> {
    let rows: Vec<Vec<Row>> = reqs
        .iter()
        .map(|r| r.triggers.iter().map(Row::of).collect())
        .collect::<anyhow::Result<_>>()?;
    let db = Sqlite::open(&dir.join("shaped.db"))?;
    db.exec(&daemon_pragmas("FULL"))?;
    db.exec(SCHEMA)?;
    let sql = |k: usize| {
        let values: Vec<String> = (0..k)
            .map(|r| {
                let b = r * 6;
                format!(
                    "(?{}, ?{}, ?{}, ?{}, ?{}, ?{})",
                    b + 1,
                    b + 2,
                    b + 3,
                    b + 4,
                    b + 5,
                    b + 6
                )
            })
            .collect();
        format!(
            "INSERT INTO triggers (observed_at, source, type, if_name, if_index, body) VALUES {} RETURNING id",
            values.join(", ")
        )
    };
    let mut ins = db.prepare(&sql(BATCH))?;
    let start = Instant::now();
    let mut n = 0;
    for tx in &rows {
        if tx.len() != BATCH {
            continue;
        }
        db.exec("BEGIN")?;
        for (r, row) in tx.iter().enumerate() {
            let b = (r * 6) as i32;
            ins.bind_i64(b + 1, row.observed_at)?;
            ins.bind_i64(b + 2, row.source)?;
            ins.bind_i64(b + 3, row.kind)?;
            ins.bind_text(b + 4, &row.if_name)?;
            ins.bind_i64(b + 5, row.if_index)?;
            ins.bind_blob(b + 6, &row.body)?;
        }
        let mut ids = 0;
        while ins.step()? {
            ids += usize::from(ins.column_i64(0) > 0);
        }
        ins.reset()?;
        db.exec("COMMIT")?;
        ensure!(ids == BATCH, "{ids} ids returned");
        n += ids;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// Through the daemon: `conns` connections, each with one Add in flight.
async fn daemon_run(
    dir: &std::path::Path,
    reqs: &[pb::AddRequest],
    conns: usize,
) -> anyhow::Result<(f64, u64)> {
    let mut d = start_daemon(dir, None, NO_NETLINK);
    let rate = add_all(&d, reqs, conns).await?;
    let (hwm, _) = d.rss_kib();
    stop(&mut d)?;
    Ok((rate, hwm))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let n = rows_env();
    let reqs = add_requests(n, INTERFACES, BATCH);
    let dir = tempfile::tempdir()?;
    println!("ingest: {n} triggers in Adds of {BATCH}, durability full (WAL, synchronous=FULL)");
    println!("machine: {}", machine(dir.path()));

    // Alternate baseline and daemon so that both see the same disk and load.
    let mut base = Vec::new();
    let mut seq = Vec::new();
    let mut shaped = Vec::new();
    let mut conc = Vec::new();
    for round in 0..ROUNDS {
        let b = tempfile::tempdir_in(dir.path())?;
        base.push(baseline(b.path(), &reqs)?);
        let sh = tempfile::tempdir_in(dir.path())?;
        shaped.push(daemon_shaped_sql(sh.path(), &reqs)?);
        let s = tempfile::tempdir_in(dir.path())?;
        seq.push(daemon_run(s.path(), &reqs, 1).await?);
        let c = tempfile::tempdir_in(dir.path())?;
        conc.push(daemon_run(c.path(), &reqs, CONCURRENT).await?);
        println!(
            "round {round}: sqlite {:.0}/s, daemon 1 in flight {:.0}/s (ratio {:.2}), \
             daemon {CONCURRENT} in flight {:.0}/s (ratio {:.2})",
            base[round],
            seq[round].0,
            seq[round].0 / base[round],
            conc[round].0,
            conc[round].0 / base[round]
        );
    }
    let b = median(base.clone());
    let s = median(seq.iter().map(|x| x.0).collect());
    let c = median(conc.iter().map(|x| x.0).collect());
    let hwm = seq.iter().chain(&conc).map(|x| x.1).max().unwrap_or(0);
    println!("median of {ROUNDS} rounds:");
    println!("  plain SQLite (C API, tx of 1,000, WAL+FULL): {b:>9.0} triggers/s");
    println!(
        "  (diagnostic) plain SQLite, the daemon's 1,000-row INSERT .. RETURNING id: {:.0} triggers/s",
        median(shaped.clone())
    );
    println!(
        "  daemon Add x1000, 1 in flight:               {s:>9.0} triggers/s  ratio {:.2}",
        s / b
    );
    println!(
        "  daemon Add x1000, {CONCURRENT} in flight:               {c:>9.0} triggers/s  ratio {:.2}",
        c / b
    );
    println!("  daemon peak RSS while ingesting: {:.1} MiB", mib(hwm));
    println!(
        "target >= 100000/s (1 in flight): {}; ratio >= 0.5 (1 in flight): {}",
        if s >= 100_000.0 { "met" } else { "MISSED" },
        if s / b >= 0.5 { "met" } else { "MISSED" }
    );
    Ok(())
}
