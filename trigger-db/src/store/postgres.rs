//! The PostgreSQL backend of the store: many hosts' histories in one
//! database, each daemon writing its own host's rows (the host id given
//! at open, see [`super::host_id`]).
//!
//! Schema (`migrations/postgres/`): `triggers` keyed by (host, id), with
//! indexes that lead with the host (one host and interface in a time
//! window, in page order, is one index range); `hosts` holds each host's
//! highest id ever given or reserved, which the writer moves ahead in a
//! small transaction before handing out ids from the range
//! ([`Writer::reserve_ids`]); `thresholds` carries the host too.
//!
//! The writer is one connection with `synchronous_commit = on` (with
//! [`Durability::Full`]): a commit that returned is on the server's disk.
//! It holds a session advisory lock on its host id, so a second daemon
//! configured with the same host id is refused instead of giving the same
//! ids. A connection that breaks is dropped and the next write connects
//! (and locks) again; the write that saw the break fails, as a failed
//! commit does on SQLite. The read side is a pool of read-only sessions.
//!
//! Reads of the history and flaps may name other hosts, or all of them
//! ([`super::postgres_read`]); everything else reads and writes only this
//! host's rows.
//!
//! With a spool ([`super::spool`], the daemon's default), the store can
//! open while the server is unreachable: the writer then connects, checks
//! and applies the migrations and locks the host id at its first write
//! that reaches the server; the read side consults the spool for rows
//! not shipped yet (get, resume after an id, the last id).
//!
//! Queries are runtime-checked (no DATABASE_URL at build time).

use std::{sync::Arc, time::Duration};

use sqlx::{
    ConnectOptions, Connection, PgConnection, Postgres, QueryBuilder,
    postgres::{PgConnectOptions, PgPool, PgPoolOptions},
};

use super::{
    Database, Durability, FlapBucket, FlapsQuery, HistoryQuery, HostTrigger, OpenOptions,
    RETENTION_SLICE, ROWS_PER_STATEMENT, StoreError, StoreStats, ThresholdRow,
    check_schema_version, col, direction_column, encode, id_column, refused, scope_column, sql,
    trigger_row,
};
use crate::{
    model::{Filter, Source, Timestamp, Trigger, TriggerType},
    threshold::{Change, Threshold},
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The read side: a pool of read-only sessions, reading one host's rows,
/// and the spool's rows not shipped yet.
#[derive(Debug, Clone)]
pub struct Store {
    pool: PgPool,
    host: Arc<str>,
    pub(super) spool: Option<super::spool_read::Reader>,
}

/// The one write connection, for one host's rows.
pub struct Writer {
    /// `None` after the connection broke; the next write connects again.
    conn: Option<PgConnection>,
    options: Box<PgConnectOptions>,
    host: String,
    lock_wait: Duration,
    /// Whether the schema was checked (and migrated) on this server: not
    /// yet when the store opened while the server was unreachable.
    checked: bool,
}

/// The options hold the password: they never show.
impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("host", &self.host)
            .field("connected", &self.conn.is_some())
            .finish_non_exhaustive()
    }
}

/// Opens the database: migrates it, locks the host id for this writer and
/// opens the read pool. With `tolerate_down`, a server that cannot be
/// reached ([`unreachable`]) is no error: the store opens unconnected
/// (the third value is false) and the first write that reaches the server
/// does the rest.
pub async fn open(
    options: &PgConnectOptions,
    opts: &OpenOptions,
    tolerate_down: bool,
) -> Result<(Store, Writer, bool), StoreError> {
    let shown = Database::Postgres(Box::new(options.clone())).to_string();
    let open_err = |source| StoreError::Open {
        path: shown.clone(),
        source,
    };
    // In pg_stat_activity: "trigger-db writer" and "trigger-db" (readers),
    // unless the URL names it.
    let named = |name: &str| {
        let o = options.clone().disable_statement_logging();
        match options.get_application_name() {
            Some(_) => o,
            None => o.application_name(name),
        }
    };
    let base = named("trigger-db");
    let write = named("trigger-db writer").options([(
        "synchronous_commit",
        match opts.durability {
            Durability::Full => "on",
            Durability::Normal => "off",
        },
    )]);
    // Bounded: a server that silently drops packets must not hold the
    // start (with a spool it goes on without the server).
    let connect = tokio::time::timeout(Duration::from_secs(10), PgConnection::connect_with(&write))
        .await
        .unwrap_or_else(|_| {
            Err(sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no answer from PostgreSQL within 10 s",
            )))
        });
    let conn = match connect {
        Ok(mut conn) => {
            prepare(&mut conn, &opts.host_id, opts.host_lock_wait).await?;
            Some(conn)
        }
        Err(e) => {
            let e = sql("connect")(e);
            if !(tolerate_down && unreachable(&e)) {
                return Err(match e {
                    StoreError::Sql { source, .. } => open_err(source),
                    other => other,
                });
            }
            tracing::warn!(error = %errchain::chain(&e), "PostgreSQL is unreachable at start");
            None
        }
    };
    let connected = conn.is_some();
    let pool_options = PgPoolOptions::new()
        .max_connections(opts.readers.max(1))
        .min_connections(0)
        .idle_timeout(Duration::from_secs(60));
    let read_options = base.options([("default_transaction_read_only", "on")]);
    let pool = if connected && !tolerate_down {
        pool_options
            .connect_with(read_options)
            .await
            .map_err(open_err)?
    } else {
        // With a spool, a read of the server gives up sooner than sqlx's
        // 30 s while the server is away (the spool answers meanwhile).
        pool_options
            .acquire_timeout(Duration::from_secs(10))
            .connect_lazy_with(read_options)
    };
    let store = Store {
        pool,
        host: opts.host_id.as_str().into(),
        spool: None,
    };
    let writer = Writer {
        conn,
        options: Box::new(write),
        host: opts.host_id.clone(),
        lock_wait: opts.host_lock_wait,
        checked: connected,
    };
    Ok((store, writer, connected))
}

/// A new write session: the schema checked (refused if newer), migrated
/// if needed, and the host id locked.
async fn prepare(
    conn: &mut PgConnection,
    host: &str,
    lock_wait: Duration,
) -> Result<(), StoreError> {
    let applied = applied_migrations(conn).await?;
    check_schema_version(applied.iter().map(|m| m.0).max(), &MIGRATOR)?;
    // A current schema needs nothing run: the per-host roles have no
    // CREATE right (sqlx's migrator starts with CREATE TABLE IF NOT
    // EXISTS, which PostgreSQL checks that right for).
    if !is_current(&applied) {
        // run_direct, not run: run's `Acquire` bound on a reborrowed
        // connection is not `Send` for every lifetime, which the writer
        // actor's task needs (it prepares a session opened after a start
        // while the server was unreachable); sqlx keeps run_direct public
        // for this.
        MIGRATOR
            .run_direct(None, conn, false)
            .await
            .map_err(StoreError::Migrate)?;
    }
    lock_host(conn, host, lock_wait).await
}

/// The migrations applied to the database: (version, succeeded,
/// checksum), in version order; none for a new database.
async fn applied_migrations(
    conn: &mut PgConnection,
) -> Result<Vec<(i64, bool, Vec<u8>)>, StoreError> {
    let row = sqlx::query("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(&mut *conn)
        .await
        .map_err(sql("read the schema version"))?;
    if !col::<_, bool>(&row, 0, "_sqlx_migrations", "exists", "to_regclass")? {
        return Ok(Vec::new());
    }
    let rows =
        sqlx::query("SELECT version, success, checksum FROM _sqlx_migrations ORDER BY version")
            .fetch_all(&mut *conn)
            .await
            .map_err(sql("read the schema version"))?;
    rows.iter()
        .map(|r| {
            const T: &str = "_sqlx_migrations";
            let version: i64 = col(r, 0, T, "a row", "version")?;
            Ok((
                version,
                col(r, 1, T, version, "success")?,
                col(r, 2, T, version, "checksum")?,
            ))
        })
        .collect()
}

/// Whether `applied` is exactly this binary's migrations, all succeeded,
/// unchanged.
fn is_current(applied: &[(i64, bool, Vec<u8>)]) -> bool {
    let known: Vec<_> = MIGRATOR
        .iter()
        .filter(|m| !m.migration_type.is_down_migration())
        .collect();
    known.len() == applied.len()
        && known
            .iter()
            .zip(applied)
            .all(|(m, (version, success, checksum))| {
                m.version == *version && *success && *m.checksum == **checksum
            })
}

/// Takes the session advisory lock of `host` (one writer per host id),
/// waiting up to `wait` for another session to give it up.
async fn lock_host(conn: &mut PgConnection, host: &str, wait: Duration) -> Result<(), StoreError> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let row = sqlx::query("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
            .bind(format!("trigger-db host {host}"))
            .fetch_one(&mut *conn)
            .await
            .map_err(sql("lock the host id"))?;
        if col::<_, bool>(&row, 0, "pg_locks", "host lock", "pg_try_advisory_lock")? {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(StoreError::HostInUse(host.to_owned()));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The write connection, connected (and the host locked) again if it
/// broke.
async fn ready<'c>(
    conn: &'c mut Option<PgConnection>,
    options: &PgConnectOptions,
    host: &str,
    lock_wait: Duration,
    checked: &mut bool,
) -> Result<&'c mut PgConnection, StoreError> {
    let c = match conn.take() {
        Some(c) => c,
        None => {
            let mut c = PgConnection::connect_with(options)
                .await
                .map_err(sql("reconnect"))?;
            if *checked {
                // The lost session may still hold the lock for a moment.
                lock_host(&mut c, host, lock_wait).await?;
            } else {
                // Opened while the server was unreachable: the first
                // session checks the schema as an open does.
                prepare(&mut c, host, lock_wait).await?;
                *checked = true;
            }
            tracing::info!(host, "connected to PostgreSQL");
            c
        }
    };
    Ok(conn.insert(c))
}

/// Whether `e` means the connection is gone (not merely that a statement
/// failed): I/O, or the server's "connection exception" (08) and "operator
/// intervention" (57P) classes.
fn connection_lost(e: &StoreError) -> bool {
    let (StoreError::Sql { source, .. } | StoreError::Column { source, .. }) = e else {
        return false;
    };
    match source {
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(d) => d
            .code()
            .is_some_and(|c| c.starts_with("08") || c.starts_with("57P")),
        _ => false,
    }
}

/// Whether `e` means the server cannot be reached (a lost or refused
/// connection, a read that timed out waiting for one) rather than that it
/// refused what was asked (a constraint, a permission): what the spool
/// takes over for.
pub(super) fn unreachable(e: &StoreError) -> bool {
    if connection_lost(e) {
        return true;
    }
    let (StoreError::Sql { source, .. } | StoreError::Column { source, .. }) = e else {
        return false;
    };
    matches!(source, sqlx::Error::PoolTimedOut)
}

/// `AND column = value` for one value, `= ANY(values)` for several: one
/// value keeps the index order (the page order) usable.
pub(super) fn push_any<T>(qb: &mut QueryBuilder<Postgres>, column: &str, values: Vec<T>)
where
    T: for<'q> sqlx::Encode<'q, Postgres> + sqlx::Type<Postgres> + sqlx::postgres::PgHasArrayType,
{
    match values.len() {
        0 => {}
        1 => {
            if let Some(v) = values.into_iter().next() {
                qb.push(format_args!(" AND {column} = ")).push_bind(v);
            }
        }
        _ => {
            qb.push(format_args!(" AND {column} = ANY("))
                .push_bind(values)
                .push(")");
        }
    }
}

pub(super) fn push_filter(qb: &mut QueryBuilder<Postgres>, f: &Filter) {
    push_any(qb, "if_name", f.interfaces.clone());
    push_any(
        qb,
        "type",
        f.types.iter().map(|t| t.to_wire()).collect::<Vec<i32>>(),
    );
    push_any(
        qb,
        "source",
        f.sources.iter().map(|s| s.to_wire()).collect::<Vec<i32>>(),
    );
}

/// `SELECT id, body` of up to `limit` rows of `host` with id above
/// `after_id` and at most `upto_id`, matching `filter`, in id order.
fn after_id_query(
    host: &str,
    after_id: u64,
    upto_id: Option<u64>,
    filter: &Filter,
    limit: u32,
) -> Result<QueryBuilder<Postgres>, StoreError> {
    let mut qb = QueryBuilder::<Postgres>::new("SELECT id, body FROM triggers WHERE host = ");
    qb.push_bind(host.to_owned())
        .push(" AND id > ")
        .push_bind(id_column("replay", after_id.min(i64::MAX as u64))?);
    if let Some(upto) = upto_id {
        qb.push(" AND id <= ")
            .push_bind(id_column("replay", upto.min(i64::MAX as u64))?);
    }
    push_filter(&mut qb, filter);
    qb.push(" ORDER BY id LIMIT ").push_bind(i64::from(limit));
    Ok(qb)
}

impl Store {
    /// Reads consult `spool` too from now on.
    pub(super) fn attach_spool(&mut self, spool: super::spool_read::Reader) {
        self.spool = Some(spool);
    }

    pub(super) fn spool(&self) -> Option<&super::spool_read::Reader> {
        self.spool.as_ref()
    }

    pub(super) async fn pg_get(&self, id: u64) -> Result<Trigger, StoreError> {
        let Ok(key) = i64::try_from(id) else {
            return Err(StoreError::NotFound(id));
        };
        let row = sqlx::query("SELECT id, body FROM triggers WHERE host = $1 AND id = $2")
            .bind(&*self.host)
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(sql("get"))?
            .ok_or(StoreError::NotFound(id))?;
        trigger_row(&row)
    }

    pub(super) async fn pg_after_id(
        &self,
        after_id: u64,
        upto_id: Option<u64>,
        filter: &Filter,
        limit: u32,
    ) -> Result<Vec<Trigger>, StoreError> {
        let rows = after_id_query(&self.host, after_id, upto_id, filter, limit)?
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(sql("replay"))?;
        rows.iter().map(trigger_row).collect()
    }

    pub(super) async fn pg_replay_page(
        &self,
        after_id: u64,
        upto_id: Option<u64>,
        filter: &Filter,
        limit: u32,
    ) -> Result<(Option<u64>, Vec<Trigger>), StoreError> {
        // Both statements see one snapshot: no row can vanish between them.
        let mut tx = self
            .pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .map_err(sql("begin replay"))?;
        let row = sqlx::query("SELECT MIN(id) FROM triggers WHERE host = $1")
            .bind(&*self.host)
            .fetch_one(&mut *tx)
            .await
            .map_err(sql("replay"))?;
        let first: Option<i64> = col(&row, 0, "triggers", "MIN(id)", "id")?;
        let rows = after_id_query(&self.host, after_id, upto_id, filter, limit)?
            .build()
            .fetch_all(&mut *tx)
            .await
            .map_err(sql("replay"))?;
        tx.commit().await.map_err(sql("end replay"))?;
        let page = rows.iter().map(trigger_row).collect::<Result<_, _>>()?;
        Ok((first.map(|f| f as u64), page))
    }

    /// One history page of the query's hosts ([`super::postgres_read`]).
    pub async fn history(&self, q: &HistoryQuery) -> Result<Vec<HostTrigger>, StoreError> {
        self.server_read("query")?;
        super::postgres_read::history(&self.pool, &self.host, q).await
    }

    /// A read of the server alone (history, flaps): refused at once while
    /// the spool knows the server is unreachable, rather than after the
    /// pool's wait for a connection.
    fn server_read(&self, op: &'static str) -> Result<(), StoreError> {
        match &self.spool {
            Some(sp) if !sp.status.reachable() => Err(StoreError::Unreachable { op, source: None }),
            _ => Ok(()),
        }
    }

    pub(super) async fn pg_last_id(&self) -> Result<u64, StoreError> {
        let row = sqlx::query("SELECT reserved_id FROM hosts WHERE host = $1")
            .bind(&*self.host)
            .fetch_optional(&self.pool)
            .await
            .map_err(sql("last id"))?;
        match row {
            None => Ok(0),
            Some(r) => Ok(col::<_, i64>(&r, 0, "hosts", &*self.host, "reserved_id")? as u64),
        }
    }

    pub(super) async fn pg_stats(&self) -> Result<StoreStats, StoreError> {
        let mut s = StoreStats::default();
        let row = sqlx::query(
            "SELECT COUNT(*), COALESCE(MIN(id), 0), COALESCE(MAX(id), 0), \
             pg_total_relation_size('triggers'::regclass) FROM triggers WHERE host = $1",
        )
        .bind(&*self.host)
        .fetch_one(&self.pool)
        .await
        .map_err(sql("stats"))?;
        s.rows = col::<_, i64>(&row, 0, "triggers", "COUNT(*)", "id")? as u64;
        s.first_id = col::<_, i64>(&row, 1, "triggers", "MIN(id)", "id")? as u64;
        s.database_bytes =
            col::<_, i64>(&row, 3, "triggers", "size", "pg_total_relation_size")?.max(0) as u64;
        s.last_id = self.pg_last_id().await?;
        for r in
            sqlx::query("SELECT source, COUNT(*) FROM triggers WHERE host = $1 GROUP BY source")
                .bind(&*self.host)
                .fetch_all(&self.pool)
                .await
                .map_err(sql("stats"))?
        {
            let n = col::<_, i64>(&r, 1, "triggers", "count by source", "COUNT(*)")? as u64;
            // A source number this build does not know is left out.
            if let Ok(src) = col::<_, i32>(&r, 0, "triggers", "count by source", "source")
                .map(|v| Source::from_wire(v, "source"))?
            {
                s.by_source.push((src, n));
            }
        }
        for r in sqlx::query("SELECT type, COUNT(*) FROM triggers WHERE host = $1 GROUP BY type")
            .bind(&*self.host)
            .fetch_all(&self.pool)
            .await
            .map_err(sql("stats"))?
        {
            let n = col::<_, i64>(&r, 1, "triggers", "count by type", "COUNT(*)")? as u64;
            if let Ok(t) = col::<_, i32>(&r, 0, "triggers", "count by type", "type")
                .map(|v| TriggerType::from_wire(v, "type"))?
            {
                s.by_type.push((t, n));
            }
        }
        Ok(s)
    }

    /// The link-down buckets of the query's hosts
    /// ([`super::postgres_read`]).
    pub async fn flaps(&self, q: &FlapsQuery) -> Result<Vec<FlapBucket>, StoreError> {
        self.server_read("flaps")?;
        super::postgres_read::flaps(&self.pool, &self.host, q).await
    }

    pub async fn close(&self) {
        self.pool.close().await;
        if let Some(sp) = &self.spool {
            sp.store.close().await;
        }
    }
}

impl Writer {
    /// Drops the connection if `r` shows it is gone; the next write
    /// connects again.
    pub fn after<T>(&mut self, r: &Result<T, StoreError>) {
        if let Err(e) = r
            && connection_lost(e)
        {
            tracing::warn!(host = %self.host, "the PostgreSQL connection is lost; the next write connects again");
            self.conn = None;
        }
    }

    async fn conn(&mut self) -> Result<&mut PgConnection, StoreError> {
        ready(
            &mut self.conn,
            &self.options,
            &self.host,
            self.lock_wait,
            &mut self.checked,
        )
        .await
    }

    /// The write session's connection options (for a probe of the server).
    pub(super) fn connect_options(&self) -> PgConnectOptions {
        (*self.options).clone()
    }

    /// Drops the connection (after a timeout, whose connection is in an
    /// unknown state); the next write connects again.
    pub(super) fn disconnect(&mut self) {
        self.conn = None;
    }

    /// Inserts triggers shipped from the spool, in one transaction; rows
    /// already there (shipped before a crash that kept them in the spool)
    /// are left as they are. Returns how many were new.
    pub(super) async fn insert_shipped(
        &mut self,
        triggers: &[&Trigger],
    ) -> Result<u64, StoreError> {
        self.insert_rows(triggers, true).await
    }

    pub async fn reserve_ids(&mut self, up_to: u64) -> Result<(), StoreError> {
        let up_to = id_column("reserve ids", up_to)?;
        let host = self.host.clone();
        sqlx::query(
            "INSERT INTO hosts (host, reserved_id) VALUES ($1, $2) \
             ON CONFLICT (host) DO UPDATE SET \
             reserved_id = GREATEST(hosts.reserved_id, excluded.reserved_id)",
        )
        .bind(host)
        .bind(up_to)
        .execute(self.conn().await?)
        .await
        .map_err(sql("reserve ids"))?;
        Ok(())
    }

    pub async fn release_ids(&mut self, last_given: u64) -> Result<(), StoreError> {
        let last_given = id_column("release ids", last_given)?;
        let host = self.host.clone();
        sqlx::query("UPDATE hosts SET reserved_id = $2 WHERE host = $1 AND reserved_id > $2")
            .bind(host)
            .bind(last_given)
            .execute(self.conn().await?)
            .await
            .map_err(sql("release ids"))?;
        Ok(())
    }

    /// One INSERT of arrays per chunk (UNNEST): the statement text is the
    /// same for every batch size, so it is prepared once.
    pub async fn insert(&mut self, triggers: &[&Trigger]) -> Result<(), StoreError> {
        self.insert_rows(triggers, false).await.map(|_| ())
    }

    /// `idempotent`: ON CONFLICT DO NOTHING, and fewer rows inserted than
    /// sent is no error.
    async fn insert_rows(
        &mut self,
        triggers: &[&Trigger],
        idempotent: bool,
    ) -> Result<u64, StoreError> {
        let host = self.host.clone();
        let mut inserted = 0;
        let conn = self.conn().await?;
        let mut tx = conn.begin().await.map_err(sql("begin"))?;
        for chunk in triggers.chunks(ROWS_PER_STATEMENT) {
            let mut ids = Vec::with_capacity(chunk.len());
            for t in chunk {
                ids.push(id_column("insert", t.id)?);
            }
            let done = sqlx::query(if idempotent {
                "INSERT INTO triggers (host, id, observed_at, source, type, if_name, if_index, body) \
                 SELECT $1, * FROM UNNEST($2::bigint[], $3::bigint[], $4::integer[], \
                 $5::integer[], $6::text[], $7::bigint[], $8::bytea[]) \
                 ON CONFLICT (host, id) DO NOTHING"
            } else {
                "INSERT INTO triggers (host, id, observed_at, source, type, if_name, if_index, body) \
                 SELECT $1, * FROM UNNEST($2::bigint[], $3::bigint[], $4::integer[], \
                 $5::integer[], $6::text[], $7::bigint[], $8::bytea[])"
            })
            .bind(&host)
            .bind(ids)
            .bind(chunk.iter().map(|t| t.observed_at.0).collect::<Vec<i64>>())
            .bind(chunk.iter().map(|t| t.source.to_wire()).collect::<Vec<i32>>())
            .bind(chunk.iter().map(|t| t.kind.to_wire()).collect::<Vec<i32>>())
            .bind(
                chunk
                    .iter()
                    .map(|t| t.interface.as_ref().map(|i| i.name.clone()))
                    .collect::<Vec<Option<String>>>(),
            )
            .bind(
                chunk
                    .iter()
                    .map(|t| t.interface.as_ref().map(|i| i64::from(i.index)))
                    .collect::<Vec<Option<i64>>>(),
            )
            .bind(chunk.iter().map(|t| encode(t)).collect::<Vec<Vec<u8>>>())
            .execute(&mut *tx)
            .await
            .map_err(sql("insert"))?;
            let n = chunk.len() as u64;
            if !idempotent && done.rows_affected() != n {
                return Err(refused(
                    "insert",
                    format!("{n} rows sent, {} inserted", done.rows_affected()),
                ));
            }
            inserted += done.rows_affected();
        }
        tx.commit().await.map_err(sql("commit"))?;
        Ok(inserted)
    }

    pub async fn modify(&mut self, t: &Trigger) -> Result<Trigger, StoreError> {
        let Ok(key) = i64::try_from(t.id) else {
            return Err(StoreError::NotFound(t.id));
        };
        let host = self.host.clone();
        let conn = self.conn().await?;
        let mut tx = conn.begin().await.map_err(sql("begin"))?;
        let row =
            sqlx::query("SELECT id, body FROM triggers WHERE host = $1 AND id = $2 FOR UPDATE")
                .bind(&host)
                .bind(key)
                .fetch_optional(&mut *tx)
                .await
                .map_err(sql("modify"))?
                .ok_or(StoreError::NotFound(t.id))?;
        let old = trigger_row(&row)?;
        let new = Trigger {
            id: old.id,
            observed_at: old.observed_at,
            source: old.source,
            ..t.clone()
        };
        sqlx::query(
            "UPDATE triggers SET type = $3, if_name = $4, if_index = $5, body = $6 \
             WHERE host = $1 AND id = $2",
        )
        .bind(&host)
        .bind(key)
        .bind(new.kind.to_wire())
        .bind(new.interface.as_ref().map(|i| i.name.clone()))
        .bind(new.interface.as_ref().map(|i| i64::from(i.index)))
        .bind(encode(&new))
        .execute(&mut *tx)
        .await
        .map_err(sql("modify"))?;
        tx.commit().await.map_err(sql("commit"))?;
        Ok(new)
    }

    pub async fn delete(&mut self, ids: &[u64]) -> Result<u64, StoreError> {
        // An id beyond the column's range is not stored.
        let keys: Vec<i64> = ids.iter().filter_map(|i| i64::try_from(*i).ok()).collect();
        let host = self.host.clone();
        let done = sqlx::query("DELETE FROM triggers WHERE host = $1 AND id = ANY($2)")
            .bind(host)
            .bind(keys)
            .execute(self.conn().await?)
            .await
            .map_err(sql("delete"))?;
        Ok(done.rows_affected())
    }

    pub async fn flush(
        &mut self,
        filter: &Filter,
        before: Option<Timestamp>,
    ) -> Result<u64, StoreError> {
        let mut qb = QueryBuilder::<Postgres>::new("DELETE FROM triggers WHERE host = ");
        qb.push_bind(self.host.clone());
        if let Some(b) = before {
            qb.push(" AND observed_at < ").push_bind(b.0);
        }
        push_filter(&mut qb, filter);
        Ok(qb
            .build()
            .execute(self.conn().await?)
            .await
            .map_err(sql("flush"))?
            .rows_affected())
    }

    pub async fn retain(
        &mut self,
        older_than: Option<Timestamp>,
        max_rows: Option<u64>,
    ) -> Result<u64, StoreError> {
        let host = self.host.clone();
        let conn = self.conn().await?;
        let mut deleted = 0;
        if let Some(t) = older_than {
            loop {
                let n = sqlx::query(
                    "DELETE FROM triggers WHERE host = $1 AND id = ANY(ARRAY(\
                     SELECT id FROM triggers WHERE host = $1 AND observed_at < $2 LIMIT $3))",
                )
                .bind(&host)
                .bind(t.0)
                .bind(RETENTION_SLICE)
                .execute(&mut *conn)
                .await
                .map_err(sql("retention"))?
                .rows_affected();
                deleted += n;
                if n < RETENTION_SLICE as u64 {
                    break;
                }
            }
        }
        if let Some(max) = max_rows {
            let row = sqlx::query("SELECT COUNT(*) FROM triggers WHERE host = $1")
                .bind(&host)
                .fetch_one(&mut *conn)
                .await
                .map_err(sql("retention"))?;
            let count = col::<_, i64>(&row, 0, "triggers", "retention count", "COUNT(*)")? as u64;
            if count > max {
                // The oldest (count - max) rows by id.
                let n = sqlx::query(
                    "DELETE FROM triggers WHERE host = $1 AND id = ANY(ARRAY(\
                     SELECT id FROM triggers WHERE host = $1 ORDER BY id LIMIT $2))",
                )
                .bind(&host)
                .bind((count - max) as i64)
                .execute(&mut *conn)
                .await
                .map_err(sql("retention"))?
                .rows_affected();
                deleted += n;
            }
        }
        Ok(deleted)
    }

    pub async fn load_thresholds(&mut self) -> Result<Vec<Threshold>, StoreError> {
        let host = self.host.clone();
        let rows = sqlx::query(
            "SELECT id, scope, parameter, value, direction, hysteresis, one_shot, spent \
             FROM thresholds WHERE host = $1 ORDER BY id",
        )
        .bind(host)
        .fetch_all(self.conn().await?)
        .await
        .map_err(sql("load thresholds"))?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            const T: &str = "thresholds";
            let id = col::<_, i64>(&r, 0, T, "a row", "id")? as u64;
            let row = format!("id {id}");
            out.push(
                ThresholdRow {
                    id,
                    scope: col(&r, 1, T, &row, "scope")?,
                    parameter: i64::from(col::<_, i32>(&r, 2, T, &row, "parameter")?),
                    value: col(&r, 3, T, &row, "value")?,
                    direction: i64::from(col::<_, i32>(&r, 4, T, &row, "direction")?),
                    hysteresis: col(&r, 5, T, &row, "hysteresis")?,
                    one_shot: col(&r, 6, T, &row, "one_shot")?,
                    spent: col(&r, 7, T, &row, "spent")?,
                }
                .check()?,
            );
        }
        Ok(out)
    }

    pub async fn configure_thresholds(&mut self, changes: &[Change]) -> Result<u64, StoreError> {
        let host = self.host.clone();
        let conn = self.conn().await?;
        let mut tx = conn.begin().await.map_err(sql("begin"))?;
        let mut cancelled = 0;
        for c in changes {
            match c {
                Change::Set(t) => {
                    sqlx::query(
                        "INSERT INTO thresholds \
                         (host, scope, parameter, value, direction, hysteresis, one_shot, spent) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, false) \
                         ON CONFLICT (host, scope, parameter, value, direction) DO UPDATE SET \
                         hysteresis = excluded.hysteresis, one_shot = excluded.one_shot, \
                         spent = false",
                    )
                    .bind(&host)
                    .bind(scope_column(&t.scope))
                    .bind(t.parameter.to_wire())
                    .bind(t.value)
                    .bind(direction_column(t.direction))
                    .bind(t.hysteresis)
                    .bind(t.one_shot)
                    .execute(&mut *tx)
                    .await
                    .map_err(sql("configure thresholds"))?;
                }
                Change::Cancel {
                    scope,
                    parameter,
                    value,
                } => {
                    let mut qb =
                        QueryBuilder::<Postgres>::new("DELETE FROM thresholds WHERE host = ");
                    qb.push_bind(host.clone())
                        .push(" AND scope = ")
                        .push_bind(scope_column(scope))
                        .push(" AND parameter = ")
                        .push_bind(parameter.to_wire());
                    if let Some(v) = value {
                        qb.push(" AND value = ").push_bind(*v);
                    }
                    cancelled += qb
                        .build()
                        .execute(&mut *tx)
                        .await
                        .map_err(sql("cancel thresholds"))?
                        .rows_affected();
                }
            }
        }
        tx.commit().await.map_err(sql("commit"))?;
        Ok(cancelled)
    }

    pub async fn mark_spent(&mut self, ids: &[u64]) -> Result<(), StoreError> {
        let keys: Vec<i64> = ids.iter().filter_map(|i| i64::try_from(*i).ok()).collect();
        let host = self.host.clone();
        sqlx::query("UPDATE thresholds SET spent = true WHERE host = $1 AND id = ANY($2)")
            .bind(host)
            .bind(keys)
            .execute(self.conn().await?)
            .await
            .map_err(sql("mark threshold spent"))?;
        Ok(())
    }

    /// Releases the host's lock and closes the connection. (Closing alone
    /// releases the lock too, but only once the server has ended the
    /// session, a moment later: a daemon restarted at once would wait.)
    pub async fn close(self) -> Result<(), StoreError> {
        let Some(mut c) = self.conn else {
            return Ok(());
        };
        sqlx::query("SELECT pg_advisory_unlock_all()")
            .execute(&mut c)
            .await
            .map_err(sql("unlock the host id"))?;
        c.close().await.map_err(sql("close"))
    }
}
