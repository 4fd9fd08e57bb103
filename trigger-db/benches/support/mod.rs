//! Shared pieces of the trigger-db benchmark programs: the release-built
//! daemon as a process (optionally inside a network namespace the bench
//! made), its peak and current RSS from /proc, the rows the benches store,
//! a plain SQLite connection through the C API for baselines, and
//! percentiles. Nothing here touches the host's interfaces.
//!
//! The system tests' `tests/support` starts the daemon too, but with debug
//! logging (a cost on the measured path) and panics instead of errors; this
//! one logs warnings only and also reads the daemon's RSS.

#![allow(dead_code)]

use std::{
    ffi::{CStr, CString},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use libsqlite3_sys as ffi;
use prost::Message as _;
use trigger_db::model::{Interface, InterfaceKind, Source, Timestamp, Trigger, TriggerType};
use trigger_proto::v1 as pb;

/// The daemon binary cargo built for this bench (bench profile = release).
/// `TRIGGER_DB_BIN` overrides it.
pub fn daemon_bin() -> PathBuf {
    std::env::var_os("TRIGGER_DB_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_trigger-db")))
}

/// The schema the daemon's migration creates, for the baselines.
pub const SCHEMA: &str = include_str!("../../migrations/0001_triggers.sql");

/// Config that keeps the daemon away from the host's links.
pub const NO_NETLINK: &str = "[sources.rtnetlink]\nenabled = false\n";

/// The daemon as a process, killed when dropped.
#[derive(Debug)]
pub struct Daemon {
    child: Option<Child>,
    pub socket: PathBuf,
    pub database: PathBuf,
    pub log: PathBuf,
}

impl Daemon {
    /// Starts the daemon (in `netns` if given, via `ip netns exec`) with its
    /// socket and database under `dir` and the config `config`, and waits
    /// until it accepts connections.
    pub fn start(dir: &Path, netns: Option<&str>, config: &str) -> anyhow::Result<Self> {
        let cfg = dir.join("trigger-db.toml");
        std::fs::write(&cfg, config)?;
        let socket = dir.join("trigger.sock");
        let database = dir.join("triggers.db");
        let log = dir.join("daemon.log");
        let bin = daemon_bin();
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        cmd.arg("--socket")
            .arg(&socket)
            .arg("--database")
            .arg(&database)
            .arg("--config")
            .arg(&cfg);
        let logf = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        cmd.env("TRIGGER_DB_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(logf.try_clone()?)
            .stderr(logf);
        let child = cmd
            .spawn()
            .with_context(|| format!("spawn {}", bin.display()))?;
        let mut d = Self {
            child: Some(child),
            socket,
            database,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if std::os::unix::net::UnixStream::connect(&d.socket).is_ok() {
                return Ok(d);
            }
            if let Some(st) = d.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!("trigger-db exited early ({st}): {}", d.log_text());
            }
            ensure!(
                Instant::now() < deadline,
                "trigger-db did not come up: {}",
                d.log_text()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The daemon's pid (with `ip netns exec`, which execs, the same).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// (VmHWM, VmRSS) in KiB: peak and current resident set.
    pub fn rss_kib(&self) -> anyhow::Result<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        let field = |name: &str| -> anyhow::Result<u64> {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .with_context(|| format!("no {name} in /proc status"))
        };
        Ok((field("VmHWM:")?, field("VmRSS:")?))
    }

    pub async fn client(&self) -> anyhow::Result<trigger_client::Client> {
        Ok(trigger_client::connect(&self.socket).await?)
    }

    /// SIGTERM and wait for a clean exit (the store is flushed then).
    pub fn stop(&mut self) -> anyhow::Result<()> {
        let Some(mut c) = self.child.take() else {
            return Ok(());
        };
        // SAFETY: a signal to our own child, which we have not reaped.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = c.try_wait()? {
                ensure!(st.success(), "trigger-db exited with {st}");
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                bail!("trigger-db ignored SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
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
