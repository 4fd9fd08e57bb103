//! Shared pieces of the trigger-db benchmark programs: the release-built
//! daemon started through the test harness's [`Daemon`] (warnings only:
//! logging costs on the measured path), the rows the benches store, a
//! plain SQLite connection through the C API for baselines, and
//! percentiles. Nothing here touches the host's interfaces.

#![allow(dead_code)]

use std::{
    ffi::{CStr, CString},
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail, ensure};
use libsqlite3_sys as ffi;
use prost::Message as _;
use trigger_db::model::{Interface, InterfaceKind, Source, Timestamp, Trigger, TriggerType};
use trigger_proto::v1 as pb;

pub use system_tests::{netns::Netns, trigger_db::Daemon};

/// The daemon binary cargo built for this bench (bench profile = release).
/// `TRIGGER_DB_BIN` overrides it.
pub fn daemon_bin() -> PathBuf {
    std::env::var_os("TRIGGER_DB_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_trigger-db")))
}

/// The schema the daemon's migration creates, for the baselines.
pub const SCHEMA: &str = include_str!("../../migrations/sqlite/0001_triggers.sql");

/// Config that keeps the daemon away from the host's links.
pub const NO_NETLINK: &str = "[sources.rtnetlink]\nenabled = false\n";

/// Starts the daemon for a benchmark (in `netns` if given) with its
/// socket and database under `dir` and exactly `config`, logging warnings
/// only, and waits until it accepts connections.
pub fn start_daemon(dir: &Path, netns: Option<&Netns>, config: &str) -> Daemon {
    Daemon::start_for_bench(daemon_bin(), dir, netns, config)
}

/// SIGTERM and wait for a clean exit (the store is flushed then).
pub fn stop(d: &mut Daemon) -> anyhow::Result<()> {
    let st = d.terminate();
    ensure!(st.success(), "trigger-db exited with {st}");
    Ok(())
}

/// `n` benchmark triggers on `interfaces` interfaces, 1 us apart from now,
/// as Adds of `batch`.
pub fn add_requests(n: usize, interfaces: u64, batch: usize) -> Vec<pb::AddRequest> {
    let t0 = Timestamp::now().0;
    let all: Vec<pb::Trigger> = (0..n as u64)
        .map(|i| wire_trigger(i, interfaces, Timestamp(t0 + i as i64 * 1_000)))
        .collect();
    all.chunks(batch)
        .map(|c| pb::AddRequest {
            triggers: c.to_vec(),
        })
        .collect()
}

/// Sends `reqs` to `d` over `conns` connections, each with one Add in
/// flight (after one small Add to warm the connections and the writer);
/// triggers per second from the first send to the last reply.
pub async fn add_all(d: &Daemon, reqs: &[pb::AddRequest], conns: usize) -> anyhow::Result<f64> {
    let mut clients = Vec::new();
    for _ in 0..conns {
        clients.push(d.client().await);
    }
    let warm = pb::AddRequest {
        triggers: vec![wire_trigger(0, 1, Timestamp::now())],
    };
    clients[0].add(warm).await?;
    let per: Vec<Vec<pb::AddRequest>> = (0..conns)
        .map(|c| reqs.iter().skip(c).step_by(conns).cloned().collect())
        .collect();
    let start = std::time::Instant::now();
    let mut tasks = Vec::new();
    for (mut c, mine) in clients.into_iter().zip(per) {
        tasks.push(tokio::spawn(async move {
            let mut n = 0usize;
            for r in mine {
                let k = r.triggers.len();
                let ids = c.add(r).await?.into_inner().ids;
                ensure!(ids.len() == k, "{} ids for {k} triggers", ids.len());
                n += k;
            }
            Ok::<_, anyhow::Error>(n)
        }));
    }
    let mut n = 0;
    for t in tasks {
        n += t.await??;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// The `i`th benchmark trigger as a client sends it: LINK_UP or LINK_DOWN on
/// one of `interfaces` interfaces ("bench0".."benchN"), observed at `at`,
/// with an origin set so the daemon stores the body unchanged.
pub fn wire_trigger(i: u64, interfaces: u64, at: Timestamp) -> pb::Trigger {
    let kind = if i.is_multiple_of(2) {
        TriggerType::LinkUp
    } else {
        TriggerType::LinkDown
    };
    let ifn = i % interfaces;
    let mut t = Trigger::new(Source::Client, kind);
    t.observed_at = at;
    t.interface = Some(Interface {
        index: 10 + ifn as u32,
        name: format!("bench{ifn}"),
        kind: Some(InterfaceKind::Ethernet),
        driver_kind: "veth".into(),
        link_type: None,
    });
    t.origin = "uid=0 gid=0 pid=1".into();
    t.to_wire()
}

/// One row exactly as the daemon stores a trigger: the indexed columns and
/// the protobuf body without the id.
#[derive(Debug, Clone)]
pub struct Row {
    pub observed_at: i64,
    pub source: i64,
    pub kind: i64,
    pub if_name: String,
    pub if_index: i64,
    pub body: Vec<u8>,
}

impl Row {
    pub fn of(w: &pb::Trigger) -> anyhow::Result<Self> {
        let t = Trigger::from_client(w, "bench", Timestamp::now())?;
        let mut body = t.to_wire();
        body.id = 0;
        let iface = t.interface.as_ref().context("no interface")?;
        Ok(Self {
            observed_at: t.observed_at.0,
            source: i64::from(t.source.to_wire()),
            kind: i64::from(t.kind.to_wire()),
            if_name: iface.name.clone(),
            if_index: i64::from(iface.index),
            body: body.encode_to_vec(),
        })
    }
}

/// A plain SQLite connection through the C API (the same libsqlite3 the
/// daemon links through sqlx).
#[derive(Debug)]
pub struct Sqlite {
    db: *mut ffi::sqlite3,
}

// SAFETY: the connection is used by one thread at a time (SQLite is built
// serialized by default anyway).
unsafe impl Send for Sqlite {}

fn errmsg(db: *mut ffi::sqlite3) -> String {
    // SAFETY: db is an open connection; sqlite3_errmsg returns a valid C string.
    unsafe { CStr::from_ptr(ffi::sqlite3_errmsg(db)) }
        .to_string_lossy()
        .into_owned()
}

impl Sqlite {
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let c = CString::new(path.as_os_str().as_encoded_bytes())?;
        let mut db = std::ptr::null_mut();
        // SAFETY: valid C string and out pointer.
        let rc = unsafe {
            ffi::sqlite3_open_v2(
                c.as_ptr(),
                &mut db,
                ffi::SQLITE_OPEN_READWRITE | ffi::SQLITE_OPEN_CREATE,
                std::ptr::null(),
            )
        };
        let s = Self { db };
        ensure!(rc == ffi::SQLITE_OK, "sqlite3_open_v2: {}", errmsg(db));
        Ok(s)
    }

    pub fn exec(&self, sql: &str) -> anyhow::Result<()> {
        let c = CString::new(sql)?;
        // SAFETY: open connection, valid SQL string, no callback.
        let rc = unsafe {
            ffi::sqlite3_exec(
                self.db,
                c.as_ptr(),
                None,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
        ensure!(rc == ffi::SQLITE_OK, "{sql}: {}", errmsg(self.db));
        Ok(())
    }

    pub fn prepare(&self, sql: &str) -> anyhow::Result<Stmt<'_>> {
        let c = CString::new(sql)?;
        let mut st = std::ptr::null_mut();
        // SAFETY: open connection, valid SQL, out pointer.
        let rc = unsafe {
            ffi::sqlite3_prepare_v2(self.db, c.as_ptr(), -1, &mut st, std::ptr::null_mut())
        };
        ensure!(rc == ffi::SQLITE_OK, "prepare {sql}: {}", errmsg(self.db));
        Ok(Stmt { db: self, st })
    }

    /// Inserts the rows in one transaction with one prepared statement.
    pub fn insert_tx(&self, ins: &mut Stmt<'_>, rows: &[Row]) -> anyhow::Result<()> {
        self.exec("BEGIN")?;
        for r in rows {
            ins.bind_i64(1, r.observed_at)?;
            ins.bind_i64(2, r.source)?;
            ins.bind_i64(3, r.kind)?;
            ins.bind_text(4, &r.if_name)?;
            ins.bind_i64(5, r.if_index)?;
            ins.bind_blob(6, &r.body)?;
            ensure!(!ins.step()?, "insert returned a row");
            ins.reset()?;
        }
        self.exec("COMMIT")
    }
}

impl Drop for Sqlite {
    fn drop(&mut self) {
        // SAFETY: open connection; statements are finalized by their Drop
        // (they borrow self, so they are gone).
        unsafe { ffi::sqlite3_close(self.db) };
    }
}

/// The insert the daemon's writer does, as one prepared statement.
pub const INSERT: &str = "INSERT INTO triggers (observed_at, source, type, if_name, if_index, body) \
                          VALUES (?1, ?2, ?3, ?4, ?5, ?6)";

#[derive(Debug)]
pub struct Stmt<'a> {
    db: &'a Sqlite,
    st: *mut ffi::sqlite3_stmt,
}

impl Stmt<'_> {
    fn check(&self, rc: i32, what: &str) -> anyhow::Result<()> {
        ensure!(rc == ffi::SQLITE_OK, "{what}: {}", errmsg(self.db.db));
        Ok(())
    }

    pub fn bind_i64(&mut self, i: i32, v: i64) -> anyhow::Result<()> {
        // SAFETY: prepared statement, index within its parameters.
        let rc = unsafe { ffi::sqlite3_bind_int64(self.st, i, v) };
        self.check(rc, "bind")
    }

    pub fn bind_text(&mut self, i: i32, v: &str) -> anyhow::Result<()> {
        // SAFETY: SQLITE_TRANSIENT makes SQLite copy the bytes.
        let rc = unsafe {
            ffi::sqlite3_bind_text(
                self.st,
                i,
                v.as_ptr().cast(),
                v.len() as i32,
                ffi::SQLITE_TRANSIENT(),
            )
        };
        self.check(rc, "bind")
    }

    pub fn bind_blob(&mut self, i: i32, v: &[u8]) -> anyhow::Result<()> {
        // SAFETY: SQLITE_TRANSIENT makes SQLite copy the bytes.
        let rc = unsafe {
            ffi::sqlite3_bind_blob(
                self.st,
                i,
                v.as_ptr().cast(),
                v.len() as i32,
                ffi::SQLITE_TRANSIENT(),
            )
        };
        self.check(rc, "bind")
    }

    /// One step: `true` if it produced a row, `false` when done.
    pub fn step(&mut self) -> anyhow::Result<bool> {
        // SAFETY: prepared statement.
        match unsafe { ffi::sqlite3_step(self.st) } {
            ffi::SQLITE_ROW => Ok(true),
            ffi::SQLITE_DONE => Ok(false),
            _ => bail!("step: {}", errmsg(self.db.db)),
        }
    }

    pub fn column_i64(&self, i: i32) -> i64 {
        // SAFETY: after a step that returned a row.
        unsafe { ffi::sqlite3_column_int64(self.st, i) }
    }

    /// Length of a blob column of the current row.
    pub fn column_bytes(&self, i: i32) -> usize {
        // SAFETY: after a step that returned a row.
        unsafe { ffi::sqlite3_column_bytes(self.st, i) as usize }
    }

    pub fn reset(&mut self) -> anyhow::Result<()> {
        // SAFETY: prepared statement.
        let rc = unsafe { ffi::sqlite3_reset(self.st) };
        self.check(rc, "reset")
    }
}

impl Drop for Stmt<'_> {
    fn drop(&mut self) {
        // SAFETY: prepared statement, finalized once.
        unsafe { ffi::sqlite3_finalize(self.st) };
    }
}

/// The daemon's connection settings (store.rs `connect_options`) for a
/// durability: WAL, synchronous FULL or NORMAL, 2 MB page cache.
pub fn daemon_pragmas(sync: &str) -> String {
    format!(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = {sync}; \
         PRAGMA cache_size = -2000; PRAGMA busy_timeout = 10000;"
    )
}

/// The `p`th percentile (0..=100) of sorted values, nearest rank.
pub fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The middle value of the rounds (the upper one of an even count).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Sorts and returns (p50, p99, max).
pub fn summary(v: &mut [f64]) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (
        pct(v, 50.0),
        pct(v, 99.0),
        v.last().copied().unwrap_or(f64::NAN),
    )
}

pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// A line describing where the bench runs: cores, memory, the filesystem of
/// `dir`.
pub fn machine(dir: &Path) -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map_or(0.0, |k| k as f64 / 1024.0 / 1024.0);
    let fs = Command::new("findmnt")
        .args(["-n", "-o", "SOURCE,FSTYPE,OPTIONS", "-T"])
        .arg(dir)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    format!("{cores} cores, {mem:.1} GiB RAM, {} on {fs}", dir.display())
}
