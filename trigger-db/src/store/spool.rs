//! The local spool of a PostgreSQL store: writes that do not stall the host
//! while the server is unreachable.
//!
//! The spool is a SQLite file of the embedded store's schema
//! ([`super::sqlite`]), bounded in size (`[store] spool_max_bytes`, by
//! SQLite's `max_page_count`; the WAL beside it is checkpointed back into
//! it). The PostgreSQL writer ([`Writer`]) uses it like this:
//!
//! - **Ids.** Every id range the writer reserves is made durable in the
//!   spool first (its `sqlite_sequence`), then on the server. The spool's
//!   mark is therefore never below the server's for this host (only this
//!   daemon moves it: the host lock), and a daemon restarted while the
//!   server is still down goes on above both. At open, a server mark
//!   above the spool's (a new or lost spool file) is copied into it. A
//!   store opened while the server is unreachable needs that mark: without
//!   one (a first start) it refuses to start.
//! - **Diverting.** A write that finds the server unreachable (connection
//!   refused or lost, a timeout; not a refusal such as a constraint or a
//!   permission, which stays an error) goes to the spool instead, the same
//!   batch with the same ids, committed there before the caller hears
//!   "stored" (with `durability = "full"`, fsynced). From then on every
//!   new trigger goes to the spool until the spool is empty again, so the
//!   server receives each host's rows in id order.
//! - **Shipping.** [`Writer::ship`], called by the writer actor about
//!   twice a second while there is a backlog. While the server is
//!   unreachable it only starts and checks a probe, a connection attempt
//!   in a task of its own (1 s after the failure, then backing off up to
//!   8 s), so the actor never waits for a server that does not answer; the
//!   one write that finds the server silent waits up to 10 s before it is
//!   spooled. Once a probe got through, ship moves
//!   the server's reservation up to the spool's mark, then sends the
//!   oldest spooled rows in slices of [`SHIP_BATCH`] (`INSERT ... ON
//!   CONFLICT (host, id) DO NOTHING`, one transaction each) and deletes
//!   each slice from the spool once the server committed it. A crash
//!   between the two leaves rows in both; the next ship skips them on
//!   the server and deletes them from the spool: no loss, no duplicate.
//! - **Full.** A spool at its size refuses writes ([`StoreError::SpoolFull`],
//!   RESOURCE_EXHAUSTED on the wire) until shipping makes room; the writer
//!   actor tells subscribers by its RESYNC after failed writes.
//! - **Reads.** The read side (`spool_read`, attached to
//!   [`super::postgres::Store`]) reads the spool first and the server
//!   second (a row moves from the spool to the server, never back, so it
//!   is seen in one or both, merged by id): Get, resume after an id and
//!   the last id see spooled rows. While the server is unreachable a
//!   resume whose rows are all in the spool is answered by the spool
//!   alone; an older one fails as any read of an unreachable server does.
//!   History (Query), Flaps and the per-source counts of Stats read the
//!   server only: spooled rows appear there once shipped; while the
//!   server is known to be unreachable, Query and Flaps fail at once
//!   ([`StoreError::Unreachable`]) and Stats counts the spool.
//! - **Not spooled.** Modify, Delete, Flush, threshold configuration and
//!   marking one-shot thresholds spent need the server: while it is
//!   unreachable they fail with [`StoreError::Unreachable`] (UNAVAILABLE
//!   on the wire); retention waits. A daemon started while the server is
//!   unreachable has no thresholds until the server is back (the writer
//!   actor loads them then). Modify, Delete and Flush also act on spooled
//!   rows when the server is reachable and the backlog not yet shipped.
//!
//! The spool file records which database and host it belongs to; one with
//! rows of another is refused (they would ship to the wrong place), an
//! empty one is taken over.

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use sqlx::postgres::PgConnectOptions;
use tracing::{info, warn};

use super::{Database, OpenOptions, StoreError, col, postgres, postgres::unreachable, sql, sqlite};
use crate::{
    model::{Filter, Timestamp, Trigger},
    threshold::{Change, Threshold},
};

/// The spool's size when `[store] spool_max_bytes` is not set.
pub const DEFAULT_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// The smallest spool (the schema and its indexes take some pages).
pub const MIN_MAX_BYTES: u64 = 256 * 1024;
/// Rows one shipping transaction carries.
pub const SHIP_BATCH: u32 = 1_000;
/// Slices one [`Writer::ship`] call sends at most, so the writer actor
/// goes back to new writes between them.
const SHIP_ROUNDS: usize = 10;
/// How long an operation on the server may take before the server counts
/// as unreachable (its connection is dropped).
const SERVER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a shipping attempt waits for the server once a probe reached
/// it: the writer actor waits with it, so it is short.
const REACH_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause after the first failed attempt to reach the server; it doubles
/// with each further one, up to [`RETRY_MAX`].
const RETRY_AFTER: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(8);

/// Where the spool is and how large it may grow.
#[derive(Debug, Clone)]
pub struct SpoolOptions {
    pub path: PathBuf,
    pub max_bytes: u64,
}

/// The default spool file in `state_dir` for `database` and `host`: one
/// per database and host id, so that daemons of different databases or
/// hosts on one machine (tests, containers) never share one.
pub fn default_path(state_dir: &Path, database: &Database, host: &str) -> PathBuf {
    // FNV-1a, hand-written (8 lines): a name that stays the same across
    // builds and Rust versions, which std's hashers do not promise.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in database.to_string().bytes().chain([0]).chain(host.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    state_dir.join(format!("spool-{h:016x}.db"))
}

/// The spool's state, shared by the writer, the read side and Stats.
#[derive(Debug)]
pub struct SpoolStatus {
    pub path: PathBuf,
    pub max_bytes: u64,
    reachable: AtomicBool,
    rows: AtomicU64,
    bytes: AtomicU64,
    /// The lowest spooled id (0: none).
    pub(super) first_id: AtomicU64,
    shipped: AtomicU64,
    /// Set when a write found the spool full; cleared when shipping makes
    /// room.
    full: AtomicBool,
    last_error: Mutex<String>,
}

/// What Stats shows of the spool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolSnapshot {
    pub path: PathBuf,
    pub rows: u64,
    pub bytes: u64,
    pub max_bytes: u64,
    pub server_reachable: bool,
    pub last_error: String,
    pub shipped: u64,
}

impl SpoolStatus {
    pub fn snapshot(&self) -> SpoolSnapshot {
        SpoolSnapshot {
            path: self.path.clone(),
            rows: self.rows.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            max_bytes: self.max_bytes,
            server_reachable: self.reachable(),
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            shipped: self.shipped.load(Ordering::Relaxed),
        }
    }

    /// Whether the last attempt to reach the server succeeded.
    pub fn reachable(&self) -> bool {
        self.reachable.load(Ordering::Relaxed)
    }

    /// Records `e` as the last error; true if it differs from the one
    /// before (worth a log line).
    fn set_error(&self, e: &StoreError) -> bool {
        let text = errchain::chain(e);
        let mut last = self.last_error.lock().unwrap_or_else(|p| p.into_inner());
        let new = *last != text;
        *last = text;
        new
    }
}

/// Whether `e` is SQLite's "database or disk is full" (SQLITE_FULL): the
/// spool reached its `max_page_count`.
fn is_full(e: &StoreError) -> bool {
    let StoreError::Sql {
        source: sqlx::Error::Database(d),
        ..
    } = e
    else {
        return false;
    };
    d.code().as_deref() == Some("13")
}

/// Runs an operation on the server, giving up after [`SERVER_TIMEOUT`]
/// (then it counts as unreachable: an I/O timeout). (A macro: a generic
/// function over the borrowing future, such as `tokio::time::timeout`,
/// trips rustc's higher-ranked `Send` check of the writer actor's task.)
macro_rules! timed {
    ($op:expr, $f:expr) => {
        timed!($op, $f, SERVER_TIMEOUT)
    };
    ($op:expr, $f:expr, $limit:expr) => {
        tokio::select! {
            r = $f => r,
            () = tokio::time::sleep($limit) => Err(timed_out($op, $limit)),
        }
    };
}

fn timed_out(op: &'static str, limit: Duration) -> StoreError {
    StoreError::Sql {
        op,
        source: sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no answer from PostgreSQL within {limit:?}"),
        )),
    }
}

/// The spool file, written by the PostgreSQL writer.
struct Spool {
    w: sqlite::Writer,
    read: sqlite::Store,
    status: Arc<SpoolStatus>,
    /// The highest id reserved in the spool.
    mark: u64,
    /// No attempt to reach the server before this.
    retry_at: Option<Instant>,
    /// Failed attempts to reach the server in a row.
    failures: u32,
    /// While the server is unreachable: a connection attempt in a task of
    /// its own, so that the writer actor never waits for a server that
    /// does not answer (one that silently drops packets).
    probe: Option<tokio::task::JoinHandle<Result<(), StoreError>>>,
}

impl Spool {
    /// Whether writes go to the spool: the server is unreachable, or rows
    /// wait to be shipped (which keeps the server's rows in id order).
    fn diverting(&self) -> bool {
        !self.status.reachable() || self.status.rows.load(Ordering::Relaxed) > 0
    }

    fn full_error(&self) -> StoreError {
        StoreError::SpoolFull {
            path: self.status.path.display().to_string(),
            max_bytes: self.status.max_bytes,
        }
    }

    fn spool_err(&self, e: StoreError) -> StoreError {
        if is_full(&e) {
            self.status.full.store(true, Ordering::Relaxed);
            self.full_error()
        } else {
            e
        }
    }

    async fn reserve(&mut self, up_to: u64) -> Result<(), StoreError> {
        if up_to <= self.mark {
            return Ok(());
        }
        self.w
            .reserve_ids(up_to)
            .await
            .map_err(|e| self.spool_err(e))?;
        self.mark = up_to;
        Ok(())
    }

    async fn insert(&mut self, triggers: &[&Trigger]) -> Result<(), StoreError> {
        if self.status.full.load(Ordering::Relaxed) {
            return Err(self.full_error());
        }
        self.w
            .insert(triggers)
            .await
            .map_err(|e| self.spool_err(e))?;
        if let Some(first) = triggers.first()
            && self.status.rows.load(Ordering::Relaxed) == 0
        {
            self.status.first_id.store(first.id, Ordering::Relaxed);
        }
        self.status
            .rows
            .fetch_add(triggers.len() as u64, Ordering::Relaxed);
        // The batch is committed: a failed size count must not make the
        // caller believe otherwise.
        if let Err(e) = self.refresh_bytes().await {
            warn!(error = %errchain::chain(&e), "cannot read the spool's size");
        }
        Ok(())
    }

    /// The server could not be reached: from now on writes go to the
    /// spool, and shipping tries again after [`RETRY_AFTER`], doubled for
    /// each failure in a row up to [`RETRY_MAX`].
    fn went_down(&mut self, e: &StoreError) {
        if self.status.reachable.swap(false, Ordering::Relaxed) {
            warn!(error = %errchain::chain(e), spool = %self.status.path.display(),
                "PostgreSQL is unreachable; writing to the spool");
        }
        self.status.set_error(e);
        let pause = RETRY_AFTER
            .saturating_mul(1 << self.failures.min(8))
            .min(RETRY_MAX);
        self.failures = self.failures.saturating_add(1);
        self.retry_at = Some(Instant::now() + pause);
    }

    /// After a Delete or Flush of spooled rows: room again, counted anew.
    async fn changed(&mut self) -> Result<(), StoreError> {
        self.status.full.store(false, Ordering::Relaxed);
        self.refresh().await
    }

    /// Counts rows, the first id and the bytes in use again (after
    /// shipping, Delete, Flush).
    async fn refresh(&mut self) -> Result<(), StoreError> {
        let row = sqlx::query("SELECT COUNT(*), COALESCE(MIN(id), 0) FROM triggers")
            .fetch_one(self.w.conn())
            .await
            .map_err(sql("spool count"))?;
        let rows = col::<_, i64>(&row, 0, "triggers", "spool count", "COUNT(*)")?;
        let first = col::<_, i64>(&row, 1, "triggers", "spool count", "MIN(id)")?;
        self.status.rows.store(rows as u64, Ordering::Relaxed);
        self.status.first_id.store(first as u64, Ordering::Relaxed);
        self.refresh_bytes().await
    }

    async fn refresh_bytes(&mut self) -> Result<(), StoreError> {
        let row = sqlx::query(
            "SELECT (page_count - freelist_count) * page_size \
             FROM pragma_page_count(), pragma_freelist_count(), pragma_page_size()",
        )
        .fetch_one(self.w.conn())
        .await
        .map_err(sql("spool size"))?;
        let bytes = col::<_, i64>(&row, 0, "pragma_page_count", "spool size", "page_count")?;
        self.status.bytes.store(bytes as u64, Ordering::Relaxed);
        Ok(())
    }
}

/// The PostgreSQL writer with its spool (none: writes fail while the
/// server is unreachable, as without this module).
pub struct Writer {
    pg: postgres::Writer,
    spool: Option<Spool>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("pg", &self.pg)
            .field("spool", &self.spool.as_ref().map(|s| &s.status))
            .finish()
    }
}

/// Opens the PostgreSQL store and, if configured, its spool (see the
/// module docs).
pub(super) async fn open(
    options: &PgConnectOptions,
    opts: &OpenOptions,
) -> Result<(postgres::Store, Writer), StoreError> {
    let Some(so) = &opts.spool else {
        let (store, pg, _) = postgres::open(options, opts, false).await?;
        return Ok((store, Writer { pg, spool: None }));
    };
    let database = Database::Postgres(Box::new(options.clone())).to_string();
    // A spool not there yet has no id mark: the server must answer first
    // (and a start that fails leaves no spool file behind).
    let first = if so.path.exists() {
        None
    } else {
        Some(postgres::open(options, opts, false).await?)
    };
    // Checked as the database's directory is: one of ours in the shared
    // temporary directory must be ours alone.
    if let Some(dir) = so.path.parent().filter(|d| !d.as_os_str().is_empty()) {
        daemon_support::socket::prepare_dir(dir, &std::env::temp_dir())
            .map_err(StoreError::SpoolDir)?;
    }
    let (read, mut w) = sqlite::open(&so.path, opts.durability, 2, &opts.host_id).await?;
    let max_pages = so.max_bytes.max(MIN_MAX_BYTES) / 4096;
    // A number the daemon computed, not input: safe to put in the text.
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "PRAGMA max_page_count = {max_pages}; \
         CREATE TABLE IF NOT EXISTS spool_owner (database TEXT NOT NULL, host TEXT NOT NULL);"
    )))
    .execute(w.conn())
    .await
    .map_err(sql("set up the spool"))?;
    let status = Arc::new(SpoolStatus {
        path: so.path.clone(),
        max_bytes: max_pages * 4096,
        reachable: AtomicBool::new(true),
        rows: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
        first_id: AtomicU64::new(0),
        shipped: AtomicU64::new(0),
        full: AtomicBool::new(false),
        last_error: Mutex::new(String::new()),
    });
    let mark = read.last_id().await?;
    let mut spool = Spool {
        w,
        read: read.clone(),
        status: status.clone(),
        mark,
        retry_at: None,
        failures: 0,
        probe: None,
    };
    spool.refresh().await?;
    claim(&mut spool, &database, &opts.host_id).await?;
    let (mut store, pg, connected) = match first {
        Some(opened) => opened,
        None => postgres::open(options, opts, mark > 0).await?,
    };
    if connected {
        let on_server = store.pg_last_id().await?;
        spool.reserve(on_server).await?;
    } else {
        let e = StoreError::Sql {
            op: "connect",
            source: sqlx::Error::Protocol("PostgreSQL unreachable at start".into()),
        };
        spool.went_down(&e);
        spool.retry_at = None;
    }
    let rows = status.rows.load(Ordering::Relaxed);
    if rows > 0 || !connected {
        info!(spool = %so.path.display(), rows, connected,
            "spool in use: new triggers go there until the backlog is shipped");
    }
    store.attach_spool(super::spool_read::Reader {
        store: read,
        status,
    });
    Ok((
        store,
        Writer {
            pg,
            spool: Some(spool),
        },
    ))
}

/// Connects to the server and leaves (bounded by [`SERVER_TIMEOUT`]):
/// whether it can be reached.
async fn probe(options: PgConnectOptions) -> Result<(), StoreError> {
    use sqlx::{ConnectOptions as _, Connection as _};
    let c = timed!("probe", async {
        options.connect().await.map_err(sql("connect"))
    })?;
    // Closing is courtesy: the server ends the session either way.
    let _ = c.close().await;
    Ok(())
}

/// Records that the spool belongs to `database` and `host`; refuses a
/// spool holding rows of another.
async fn claim(spool: &mut Spool, database: &str, host: &str) -> Result<(), StoreError> {
    let row = sqlx::query("SELECT database, host FROM spool_owner")
        .fetch_optional(spool.w.conn())
        .await
        .map_err(sql("read the spool's owner"))?;
    if let Some(r) = &row {
        let (d, h): (String, String) = (
            col(r, 0, "spool_owner", "owner", "database")?,
            col(r, 1, "spool_owner", "owner", "host")?,
        );
        if d == database && h == host {
            return Ok(());
        }
        let rows = spool.status.rows.load(Ordering::Relaxed);
        if rows > 0 {
            return Err(StoreError::SpoolForeign {
                path: spool.status.path.display().to_string(),
                rows,
                database: d,
                host: h,
            });
        }
    }
    let mut tx = sqlx::Connection::begin(spool.w.conn())
        .await
        .map_err(sql("begin"))?;
    sqlx::query("DELETE FROM spool_owner")
        .execute(&mut *tx)
        .await
        .map_err(sql("claim the spool"))?;
    sqlx::query("INSERT INTO spool_owner (database, host) VALUES (?, ?)")
        .bind(database)
        .bind(host)
        .execute(&mut *tx)
        .await
        .map_err(sql("claim the spool"))?;
    tx.commit().await.map_err(sql("commit"))
}

/// Runs `$call` (with `$pg` the server's writer) as an operation that is
/// not spooled: refused at once while the server is known to be
/// unreachable, else timed ([`SERVER_TIMEOUT`]) and its result classified
/// by `Writer::server_result`. (A macro: an async closure borrowing the
/// arguments would not be `Send`.)
macro_rules! on_server {
    ($self:ident, $op:expr, $pg:ident => $call:expr) => {{
        let op: &'static str = $op;
        let down = $self.spool.as_ref().is_some_and(|s| !s.status.reachable());
        if down {
            Err(StoreError::Unreachable { op, source: None })
        } else {
            let $pg = &mut $self.pg;
            let r = timed!(op, $call);
            $self.server_result(op, r)
        }
    }};
}

impl Writer {
    /// Drops the server connection if `r` shows it is gone.
    pub fn after<T>(&mut self, r: &Result<T, StoreError>) {
        self.pg.after(r);
    }

    pub fn spool_status(&self) -> Option<&Arc<SpoolStatus>> {
        self.spool.as_ref().map(|s| &s.status)
    }

    /// Whether there is something for [`Writer::ship`] to do.
    pub fn has_backlog(&self) -> bool {
        self.spool.as_ref().is_some_and(Spool::diverting)
    }

    /// The spool is known to be full: a batch would be refused (checked
    /// before its triggers go to subscribers).
    pub fn check_room(&self) -> Result<(), StoreError> {
        match &self.spool {
            Some(s) if s.diverting() && s.status.full.load(Ordering::Relaxed) => {
                Err(s.full_error())
            }
            _ => Ok(()),
        }
    }

    /// The result of an operation that is not spooled, on the server:
    /// unreachable, it is [`StoreError::Unreachable`] (and later writes go
    /// to the spool).
    fn server_result<T>(
        &mut self,
        op: &'static str,
        r: Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        match r {
            Err(e) if self.spool.is_some() && unreachable(&e) => {
                self.pg.disconnect();
                if let Some(s) = &mut self.spool {
                    s.went_down(&e);
                }
                Err(StoreError::Unreachable {
                    op,
                    source: Some(Box::new(e)),
                })
            }
            other => other,
        }
    }

    pub async fn reserve_ids(&mut self, up_to: u64) -> Result<(), StoreError> {
        let Some(s) = &mut self.spool else {
            return self.pg.reserve_ids(up_to).await;
        };
        s.reserve(up_to).await?;
        if s.diverting() {
            return Ok(());
        }
        match timed!("reserve ids", self.pg.reserve_ids(up_to)) {
            Err(e) if unreachable(&e) => {
                self.pg.disconnect();
                s.went_down(&e);
                Ok(())
            }
            other => other,
        }
    }

    pub async fn release_ids(&mut self, last_given: u64) -> Result<(), StoreError> {
        let Some(s) = &mut self.spool else {
            return self.pg.release_ids(last_given).await;
        };
        s.w.release_ids(last_given).await?;
        s.mark = s.mark.min(last_given);
        if !s.status.reachable() {
            return Ok(());
        }
        match timed!("release ids", self.pg.release_ids(last_given)) {
            // The server keeps the higher mark: the next start skips ids.
            Err(e) if unreachable(&e) => Ok(()),
            other => other,
        }
    }

    pub async fn insert(&mut self, triggers: &[&Trigger]) -> Result<(), StoreError> {
        let Some(s) = &mut self.spool else {
            return self.pg.insert(triggers).await;
        };
        if !s.diverting() {
            match timed!("insert", self.pg.insert(triggers)) {
                Err(e) if unreachable(&e) => {
                    // The commit may have reached the server and only its
                    // answer been lost: the batch is spooled anyway, and
                    // shipping skips what the server has.
                    self.pg.disconnect();
                    s.went_down(&e);
                }
                other => return other,
            }
        }
        s.insert(triggers).await
    }

    /// Ships the oldest spooled triggers (see the module docs); returns
    /// how many went to the server. An error is also kept for Stats.
    pub async fn ship(&mut self) -> Result<u64, StoreError> {
        let Some(s) = &mut self.spool else {
            return Ok(0);
        };
        if !s.diverting() || s.retry_at.is_some_and(|t| Instant::now() < t) {
            return Ok(0);
        }
        let was_reachable = s.status.reachable();
        if !was_reachable {
            // Ship only once a probe in the background got through.
            match s.probe.take() {
                None => {
                    s.probe = Some(tokio::spawn(probe(self.pg.connect_options())));
                    return Ok(0);
                }
                Some(p) if !p.is_finished() => {
                    s.probe = Some(p);
                    return Ok(0);
                }
                Some(p) => {
                    let reached = p.await.unwrap_or_else(|e| {
                        Err(StoreError::Sql {
                            op: "probe",
                            source: sqlx::Error::Protocol(format!("the probe task failed: {e}")),
                        })
                    });
                    if let Err(e) = reached {
                        return Err(Self::ship_failed(&mut self.pg, s, e));
                    }
                }
            }
        }
        // Reaching the server moves its reservation past every spooled id.
        if let Err(e) = timed!("reserve ids", self.pg.reserve_ids(s.mark), REACH_TIMEOUT) {
            return Err(Self::ship_failed(&mut self.pg, s, e));
        }
        if !was_reachable {
            s.status.reachable.store(true, Ordering::Relaxed);
            info!(
                backlog = s.status.rows.load(Ordering::Relaxed),
                "PostgreSQL is reachable again; shipping the spool"
            );
        }
        s.retry_at = None;
        s.failures = 0;
        let mut shipped = 0;
        for _ in 0..SHIP_ROUNDS {
            let rows = s
                .read
                .after_id(0, None, &Filter::default(), SHIP_BATCH)
                .await?;
            if rows.is_empty() {
                break;
            }
            let refs: Vec<&Trigger> = rows.iter().collect();
            if let Err(e) = timed!("ship", self.pg.insert_shipped(&refs)) {
                return Err(Self::ship_failed(&mut self.pg, s, e));
            }
            let ids: Vec<u64> = rows.iter().map(|t| t.id).collect();
            s.w.delete(&ids).await?;
            shipped += ids.len() as u64;
            s.status
                .shipped
                .fetch_add(ids.len() as u64, Ordering::Relaxed);
            s.status.full.store(false, Ordering::Relaxed);
            s.refresh().await?;
            if rows.len() < SHIP_BATCH as usize {
                break;
            }
        }
        if shipped > 0 && s.status.rows.load(Ordering::Relaxed) == 0 {
            info!("spool shipped; writing to PostgreSQL again");
        }
        Ok(shipped)
    }

    /// Records a failed ship; an unreachable server is tried again after
    /// [`RETRY_AFTER`], a refusal after a few of them.
    fn ship_failed(pg: &mut postgres::Writer, s: &mut Spool, e: StoreError) -> StoreError {
        if unreachable(&e) {
            pg.disconnect();
            s.went_down(&e);
        } else {
            if s.status.set_error(&e) {
                warn!(error = %errchain::chain(&e), "shipping the spool to PostgreSQL failed");
            }
            s.retry_at = Some(Instant::now() + RETRY_AFTER * 5);
        }
        e
    }

    /// A spooled row is modified in the spool, any other on the server.
    pub async fn modify(&mut self, t: &Trigger) -> Result<Trigger, StoreError> {
        if let Some(s) = &mut self.spool
            && s.status.rows.load(Ordering::Relaxed) > 0
            && s.status.reachable()
        {
            match s.w.modify(t).await {
                Err(StoreError::NotFound(_)) => {}
                other => return other,
            }
        }
        on_server!(self, "modify", pg => pg.modify(t))
    }

    pub async fn delete(&mut self, ids: &[u64]) -> Result<u64, StoreError> {
        let stored = on_server!(self, "delete", pg => pg.delete(ids))?;
        let Some(s) = self.spooled() else {
            return Ok(stored);
        };
        let n = s.w.delete(ids).await?;
        s.changed().await?;
        Ok(stored + n)
    }

    pub async fn flush(
        &mut self,
        filter: &Filter,
        before: Option<Timestamp>,
    ) -> Result<u64, StoreError> {
        let stored = on_server!(self, "flush", pg => pg.flush(filter, before))?;
        let Some(s) = self.spooled() else {
            return Ok(stored);
        };
        let n = s.w.flush(filter, before).await?;
        s.changed().await?;
        Ok(stored + n)
    }

    /// The spool, if it holds rows (which Delete and Flush apply to too).
    fn spooled(&mut self) -> Option<&mut Spool> {
        self.spool
            .as_mut()
            .filter(|s| s.status.rows.load(Ordering::Relaxed) > 0)
    }

    /// Retention runs on the server only (spooled rows are the newest);
    /// while it is unreachable it waits.
    pub async fn retain(
        &mut self,
        older_than: Option<Timestamp>,
        max_rows: Option<u64>,
    ) -> Result<u64, StoreError> {
        if self.spool.as_ref().is_some_and(|s| s.diverting()) {
            return Ok(0);
        }
        on_server!(self, "retention", pg => pg.retain(older_than, max_rows))
    }

    pub async fn load_thresholds(&mut self) -> Result<Vec<Threshold>, StoreError> {
        on_server!(self, "load thresholds", pg => pg.load_thresholds())
    }

    pub async fn configure_thresholds(&mut self, changes: &[Change]) -> Result<u64, StoreError> {
        on_server!(self, "configure thresholds", pg => pg.configure_thresholds(changes))
    }

    pub async fn mark_spent(&mut self, ids: &[u64]) -> Result<(), StoreError> {
        on_server!(self, "mark thresholds spent", pg => pg.mark_spent(ids))
    }

    pub async fn close(self) -> Result<(), StoreError> {
        let spooled = match self.spool {
            Some(s) => s.w.close().await,
            None => Ok(()),
        };
        let server = self.pg.close().await;
        spooled.and(server)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_server_out_of_reach_counts_as_unreachable() {
        let err = |source| StoreError::Sql {
            op: "insert",
            source,
        };
        let io = |kind| sqlx::Error::Io(std::io::Error::new(kind, "x"));
        for reachable_not in [
            io(std::io::ErrorKind::ConnectionRefused),
            io(std::io::ErrorKind::NotFound),
            io(std::io::ErrorKind::UnexpectedEof),
            sqlx::Error::PoolTimedOut,
        ] {
            assert!(unreachable(&err(reachable_not)));
        }
        assert!(unreachable(&timed_out("insert", SERVER_TIMEOUT)));
        for refused in [
            sqlx::Error::RowNotFound,
            sqlx::Error::Protocol("bad".into()),
        ] {
            assert!(!unreachable(&err(refused)));
        }
        assert!(!unreachable(&StoreError::NotFound(3)));
        assert!(!unreachable(&StoreError::HostInUse("h".into())));
    }

    #[test]
    fn default_spool_paths_differ_per_database_and_host_and_stay_put() {
        let db = |u: &str| Database::parse(Path::new(u)).unwrap();
        let dir = Path::new("/var/lib/trigger-db");
        let a = default_path(dir, &db("postgres://w@h/fleet"), "gw-1");
        assert_eq!(a, default_path(dir, &db("postgres://w@h/fleet"), "gw-1"));
        assert_ne!(a, default_path(dir, &db("postgres://w@h/fleet"), "gw-2"));
        assert_ne!(a, default_path(dir, &db("postgres://w@h/other"), "gw-1"));
        assert!(a.starts_with(dir), "{}", a.display());
        assert!(a.to_string_lossy().ends_with(".db"));
    }
}
