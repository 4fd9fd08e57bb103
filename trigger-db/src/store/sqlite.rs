//! The SQLite backend of the store: one host's history in one file, the
//! embedded default.
//!
//! One table, `triggers`, with the protobuf body of each trigger (the
//! `trigger.v1` form of [`trigger_model::wire`], read back with
//! `Trigger::from_stored`) and the columns queries filter and order on (see
//! `migrations/sqlite/`). WAL mode, so readers never block the writer;
//! `synchronous = FULL` by default, so a commit that returned is on disk
//! and an acknowledged trigger survives a crash or power loss. Writes are
//! batched by the caller ([`crate::writer`]): many triggers, one
//! transaction, one fsync.
//!
//! The file holds one host, unnamed in it: queries for this host (the
//! daemon's host id, if it has one) or for all hosts read every row; a
//! query naming another host is refused ([`StoreError::HostNotHere`]), so
//! that an empty answer never pretends another host had no events.
//!
//! Ids: the writer reserves ranges durably by moving AUTOINCREMENT's
//! `sqlite_sequence` ahead ([`Writer::reserve_ids`]); AUTOINCREMENT never
//! gives an id at or below it, and it survives deletes.

use std::{path::Path, sync::Arc, time::Duration};

use sqlx::{
    ConnectOptions, Connection, QueryBuilder, Row, Sqlite, SqliteConnection,
    sqlite::{
        SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
    },
};

use super::{
    Durability, FlapBucket, FlapsQuery, HistoryQuery, HostTrigger, Hosts, RETENTION_SLICE,
    ROWS_PER_STATEMENT, StoreError, StoreStats, ThresholdRow, check_schema_version, col,
    direction_column, encode, flap_row, id_column, query::Bound, refused, scope_column, sql,
    trigger_row,
};
use crate::{
    model::{Filter, Source, Timestamp, Trigger, TriggerType},
    threshold::{Change, Threshold},
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// The read side, shared: a small pool of read connections.
#[derive(Debug, Clone)]
pub struct Store {
    pool: SqlitePool,
    /// This host's id, the one host whose rows the file holds (may be
    /// empty: none known).
    host: Arc<str>,
}

fn connect_options(path: &Path, durability: Durability) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(match durability {
            Durability::Full => SqliteSynchronous::Full,
            Durability::Normal => SqliteSynchronous::Normal,
        })
        .busy_timeout(Duration::from_secs(10))
        .pragma("cache_size", "-2000")
        .disable_statement_logging()
}

/// Opens (creating if needed) the database, runs the migrations, and returns
/// the read pool and the one write connection.
pub async fn open(
    path: &Path,
    durability: Durability,
    readers: u32,
    host: &str,
) -> Result<(Store, Writer), StoreError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
            path: dir.display().to_string(),
            source,
        })?;
    }
    let opts = connect_options(path, durability);
    let open_err = |source| StoreError::Open {
        path: path.display().to_string(),
        source,
    };
    let mut conn = SqliteConnection::connect_with(&opts)
        .await
        .map_err(open_err)?;
    check_schema_version(applied_version(&mut conn).await?, &MIGRATOR)?;
    MIGRATOR.run(&mut conn).await.map_err(StoreError::Migrate)?;
    let pool = SqlitePoolOptions::new()
        .max_connections(readers.max(1))
        .min_connections(0)
        .idle_timeout(Duration::from_secs(60))
        .connect_with(opts.read_only(true))
        .await
        .map_err(open_err)?;
    let store = Store {
        pool,
        host: host.into(),
    };
    Ok((store, Writer { conn }))
}

/// The newest migration applied to the database (`None`: a new one).
async fn applied_version(conn: &mut SqliteConnection) -> Result<Option<i64>, StoreError> {
    let exists = sqlx::query(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
    )
    .fetch_optional(&mut *conn)
    .await
    .map_err(sql("read the schema version"))?
    .is_some();
    if !exists {
        return Ok(None);
    }
    let row = sqlx::query("SELECT MAX(version) FROM _sqlx_migrations")
        .fetch_one(&mut *conn)
        .await
        .map_err(sql("read the schema version"))?;
    col(&row, 0, "_sqlx_migrations", "MAX(version)", "version")
}

/// `SELECT id, body` of up to `limit` rows with id above `after_id` and at
/// most `upto_id`, matching `filter`, in id order.
fn after_id_query(
    after_id: u64,
    upto_id: Option<u64>,
    filter: &Filter,
    limit: u32,
) -> QueryBuilder<Sqlite> {
    let mut qb = QueryBuilder::<Sqlite>::new("SELECT id, body FROM triggers WHERE id > ");
    qb.push_bind(after_id as i64);
    if let Some(upto) = upto_id {
        qb.push(" AND id <= ").push_bind(upto as i64);
    }
    push_filter(&mut qb, filter);
    qb.push(" ORDER BY id LIMIT ").push_bind(i64::from(limit));
    qb
}

fn push_filter(qb: &mut QueryBuilder<Sqlite>, f: &Filter) {
    fn list<T>(qb: &mut QueryBuilder<Sqlite>, col: &str, items: &[T], bind: impl Fn(&T) -> i64) {
        qb.push(format_args!(" AND {col} IN ("));
        let mut sep = qb.separated(", ");
        for i in items {
            sep.push_bind(bind(i));
        }
        sep.push_unseparated(")");
    }
    if !f.interfaces.is_empty() {
        qb.push(" AND if_name IN (");
        let mut sep = qb.separated(", ");
        for i in &f.interfaces {
            sep.push_bind(i.clone());
        }
        sep.push_unseparated(")");
    }
    if !f.types.is_empty() {
        list(qb, "type", &f.types, |t| i64::from(t.to_wire()));
    }
    if !f.sources.is_empty() {
        list(qb, "source", &f.sources, |s| i64::from(s.to_wire()));
    }
}

impl Store {
    pub async fn get(&self, id: u64) -> Result<Trigger, StoreError> {
        let row = sqlx::query("SELECT id, body FROM triggers WHERE id = ?")
            .bind(id as i64)
            .fetch_optional(&self.pool)
            .await
            .map_err(sql("get"))?
            .ok_or(StoreError::NotFound(id))?;
        trigger_row(&row)
    }

    /// Up to `limit` triggers with id above `after_id` and at most `upto_id`,
    /// matching `filter`, in id order: the replay of a resuming subscriber
    /// and the pages of a dump.
    pub async fn after_id(
        &self,
        after_id: u64,
        upto_id: Option<u64>,
        filter: &Filter,
        limit: u32,
    ) -> Result<Vec<Trigger>, StoreError> {
        let rows = after_id_query(after_id, upto_id, filter, limit)
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(sql("replay"))?;
        rows.iter().map(trigger_row).collect()
    }

    /// Like [`Store::after_id`], and the lowest id stored (`None`: no rows)
    /// as of the same read: a resume can tell whether rows after its id
    /// were removed (retention, Delete, Flush) before it could read them.
    pub async fn replay_page(
        &self,
        after_id: u64,
        upto_id: Option<u64>,
        filter: &Filter,
        limit: u32,
    ) -> Result<(Option<u64>, Vec<Trigger>), StoreError> {
        // One read transaction: in WAL mode both statements see the same
        // snapshot, so no row can vanish between them.
        let mut tx = self.pool.begin().await.map_err(sql("begin replay"))?;
        let row = sqlx::query("SELECT MIN(id) FROM triggers")
            .fetch_one(&mut *tx)
            .await
            .map_err(sql("replay"))?;
        let first: Option<i64> = row.try_get(0).map_err(sql("read the lowest id"))?;
        let rows = after_id_query(after_id, upto_id, filter, limit)
            .build()
            .fetch_all(&mut *tx)
            .await
            .map_err(sql("replay"))?;
        tx.commit().await.map_err(sql("end replay"))?;
        let page = rows.iter().map(trigger_row).collect::<Result<_, _>>()?;
        Ok((first.map(|f| f as u64), page))
    }

    /// Refuses a query naming a host other than this one.
    fn check_hosts(&self, hosts: &Hosts) -> Result<(), StoreError> {
        match hosts {
            Hosts::Own | Hosts::All => Ok(()),
            Hosts::Named(names) => match names.iter().find(|h| **h != *self.host) {
                Some(other) => Err(StoreError::HostNotHere {
                    host: other.clone(),
                    own: self.host.to_string(),
                }),
                None => Ok(()),
            },
        }
    }

    /// One history page, ordered by (observed_at, id): the one host's.
    pub async fn history(&self, q: &HistoryQuery) -> Result<Vec<HostTrigger>, StoreError> {
        self.check_hosts(&q.hosts)?;
        let mut qb = QueryBuilder::<Sqlite>::new("SELECT id, body FROM triggers WHERE 1");
        if let Some(s) = q.since {
            qb.push(" AND observed_at >= ").push_bind(s.0);
        }
        if let Some(u) = q.until {
            qb.push(" AND observed_at < ").push_bind(u.0);
        }
        push_filter(&mut qb, &q.filter);
        let (cmp, dir) = if q.descending {
            ("<", "DESC")
        } else {
            (">", "ASC")
        };
        match q
            .after
            .as_ref()
            .map(|c| Bound::of(&self.host, c, q.descending))
        {
            None => {}
            Some(Bound::Row(t, id)) => {
                qb.push(format_args!(" AND (observed_at, id) {cmp} ("))
                    .push_bind(t.0)
                    .push(", ")
                    .push_bind(id.min(i64::MAX as u64) as i64)
                    .push(")");
            }
            Some(Bound::Time { t, inclusive }) => {
                let eq = if inclusive { "=" } else { "" };
                qb.push(format_args!(" AND observed_at {cmp}{eq} "))
                    .push_bind(t.0);
            }
        }
        qb.push(format_args!(" ORDER BY observed_at {dir}, id {dir} LIMIT "))
            .push_bind(i64::from(q.page_size));
        let rows = qb
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(sql("history query"))?;
        rows.iter()
            .map(|r| {
                Ok(HostTrigger {
                    host: self.host.to_string(),
                    trigger: trigger_row(r)?,
                })
            })
            .collect()
    }

    pub async fn last_id(&self) -> Result<u64, StoreError> {
        // sqlite_sequence keeps the highest id ever given or reserved
        // (`Writer::reserve_ids`), even after deletes.
        let row = sqlx::query("SELECT seq FROM sqlite_sequence WHERE name = 'triggers'")
            .fetch_optional(&self.pool)
            .await
            .map_err(sql("last id"))?;
        match row {
            None => Ok(0),
            Some(r) => Ok(col::<_, i64>(&r, 0, "sqlite_sequence", "triggers", "seq")? as u64),
        }
    }

    pub async fn stats(&self) -> Result<StoreStats, StoreError> {
        let mut s = StoreStats::default();
        let row = sqlx::query(
            "SELECT COUNT(*), COALESCE(MIN(id), 0), COALESCE(MAX(id), 0) FROM triggers",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(sql("stats"))?;
        s.rows = col::<_, i64>(&row, 0, "triggers", "COUNT(*)", "id")? as u64;
        s.first_id = col::<_, i64>(&row, 1, "triggers", "MIN(id)", "id")? as u64;
        s.last_id = self.last_id().await?;
        let row = sqlx::query(
            "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(sql("stats"))?;
        s.database_bytes =
            col::<_, i64>(&row, 0, "pragma_page_count", "size", "page_count")? as u64;
        for r in sqlx::query("SELECT source, COUNT(*) FROM triggers GROUP BY source")
            .fetch_all(&self.pool)
            .await
            .map_err(sql("stats"))?
        {
            let n = col::<_, i64>(&r, 1, "triggers", "count by source", "COUNT(*)")? as u64;
            // A source number this build does not know is left out.
            if let Ok(src) = col::<_, i64>(&r, 0, "triggers", "count by source", "source")
                .map(|v| Source::from_wire(v as i32, "source"))?
            {
                s.by_source.push((src, n));
            }
        }
        for r in sqlx::query("SELECT type, COUNT(*) FROM triggers GROUP BY type")
            .fetch_all(&self.pool)
            .await
            .map_err(sql("stats"))?
        {
            let n = col::<_, i64>(&r, 1, "triggers", "count by type", "COUNT(*)")? as u64;
            if let Ok(t) = col::<_, i64>(&r, 0, "triggers", "count by type", "type")
                .map(|v| TriggerType::from_wire(v as i32, "type"))?
            {
                s.by_type.push((t, n));
            }
        }
        Ok(s)
    }

    /// Stored LINK_DOWN triggers per interface in buckets of `bucket_ns`
    /// from `since` up to `until`: only non-empty buckets, by interface
    /// then start (by host: all of this host).
    pub async fn flaps(&self, q: &FlapsQuery) -> Result<Vec<FlapBucket>, StoreError> {
        self.check_hosts(&q.hosts)?;
        let mut qb = QueryBuilder::<Sqlite>::new("SELECT if_name, (observed_at - ");
        qb.push_bind(q.since.0)
            .push(") / ")
            .push_bind(q.bucket_ns)
            .push(" AS bucket, COUNT(*), ")
            .push_bind(self.host.to_string())
            .push(" FROM triggers WHERE type = ")
            .push_bind(i64::from(TriggerType::LinkDown.to_wire()))
            .push(" AND observed_at >= ")
            .push_bind(q.since.0)
            .push(" AND observed_at < ")
            .push_bind(q.until.0)
            .push(" AND if_name IS NOT NULL");
        if !q.interfaces.is_empty() {
            qb.push(" AND if_name IN (");
            let mut sep = qb.separated(", ");
            for i in &q.interfaces {
                sep.push_bind(i.clone());
            }
            sep.push_unseparated(")");
        }
        qb.push(" GROUP BY if_name, bucket ORDER BY if_name, bucket");
        let rows = qb
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(sql("flaps"))?;
        rows.iter().map(|r| flap_row(r, q)).collect()
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// The one write connection. Owned by the writer actor.
#[derive(Debug)]
pub struct Writer {
    conn: SqliteConnection,
}

impl Writer {
    /// The write connection, for the spool's own statements (its size
    /// limit and owner, see [`super::spool`]).
    pub(super) fn conn(&mut self) -> &mut SqliteConnection {
        &mut self.conn
    }

    /// Makes every id up to `up_to` taken for good, before any of them is
    /// handed out: AUTOINCREMENT never gives an id at or below
    /// `sqlite_sequence`'s value, so after a crash the ids continue above
    /// it whether or not their rows were stored. One small transaction.
    pub async fn reserve_ids(&mut self, up_to: u64) -> Result<(), StoreError> {
        let up_to = id_column("reserve ids", up_to)?;
        let mut tx = self.conn.begin().await.map_err(sql("begin"))?;
        let updated =
            sqlx::query("UPDATE sqlite_sequence SET seq = MAX(seq, ?) WHERE name = 'triggers'")
                .bind(up_to)
                .execute(&mut *tx)
                .await
                .map_err(sql("reserve ids"))?;
        if updated.rows_affected() == 0 {
            // No row was ever stored: the table has no sequence yet.
            sqlx::query("INSERT INTO sqlite_sequence (name, seq) VALUES ('triggers', ?)")
                .bind(up_to)
                .execute(&mut *tx)
                .await
                .map_err(sql("reserve ids"))?;
        }
        tx.commit().await.map_err(sql("commit"))?;
        Ok(())
    }

    /// Gives back the reserved ids above `last_given` (none of them was
    /// handed out): at a clean shutdown, so that ids go on densely.
    pub async fn release_ids(&mut self, last_given: u64) -> Result<(), StoreError> {
        let last_given = id_column("release ids", last_given)?;
        sqlx::query("UPDATE sqlite_sequence SET seq = ? WHERE name = 'triggers' AND seq > ?")
            .bind(last_given)
            .bind(last_given)
            .execute(&mut self.conn)
            .await
            .map_err(sql("release ids"))?;
        Ok(())
    }

    /// Inserts the triggers in one transaction with the ids they carry
    /// (given by the writer from a range [`Writer::reserve_ids`] made
    /// durable, increasing).
    pub async fn insert(&mut self, triggers: &[&Trigger]) -> Result<(), StoreError> {
        if triggers.is_empty() {
            return Ok(());
        }
        let mut tx = self.conn.begin().await.map_err(sql("begin"))?;
        for chunk in triggers.chunks(ROWS_PER_STATEMENT) {
            let mut qb = QueryBuilder::<Sqlite>::new(
                "INSERT INTO triggers (id, observed_at, source, type, if_name, if_index, body) ",
            );
            qb.push_values(chunk.iter(), |mut b, t| {
                b.push_bind(t.id as i64)
                    .push_bind(t.observed_at.0)
                    .push_bind(i64::from(t.source.to_wire()))
                    .push_bind(i64::from(t.kind.to_wire()))
                    .push_bind(t.interface.as_ref().map(|i| i.name.clone()))
                    .push_bind(t.interface.as_ref().map(|i| i64::from(i.index)))
                    .push_bind(encode(t));
            });
            let done = qb.build().execute(&mut *tx).await.map_err(sql("insert"))?;
            let n = chunk.len() as u64;
            if done.rows_affected() != n {
                return Err(refused(
                    "insert",
                    format!("{n} rows sent, {} inserted", done.rows_affected()),
                ));
            }
        }
        tx.commit().await.map_err(sql("commit"))?;
        Ok(())
    }

    /// Replaces the content of a stored trigger, keeping its id, time and
    /// source. Returns the stored result.
    pub async fn modify(&mut self, t: &Trigger) -> Result<Trigger, StoreError> {
        let mut tx = self.conn.begin().await.map_err(sql("begin"))?;
        let row = sqlx::query("SELECT id, body FROM triggers WHERE id = ?")
            .bind(t.id as i64)
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
            "UPDATE triggers SET type = ?, if_name = ?, if_index = ?, body = ? WHERE id = ?",
        )
        .bind(i64::from(new.kind.to_wire()))
        .bind(new.interface.as_ref().map(|i| i.name.clone()))
        .bind(new.interface.as_ref().map(|i| i64::from(i.index)))
        .bind(encode(&new))
        .bind(new.id as i64)
        .execute(&mut *tx)
        .await
        .map_err(sql("modify"))?;
        tx.commit().await.map_err(sql("commit"))?;
        Ok(new)
    }

    pub async fn delete(&mut self, ids: &[u64]) -> Result<u64, StoreError> {
        let mut tx = self.conn.begin().await.map_err(sql("begin"))?;
        let mut deleted = 0;
        for chunk in ids.chunks(ROWS_PER_STATEMENT) {
            let mut qb = QueryBuilder::<Sqlite>::new("DELETE FROM triggers WHERE id IN (");
            let mut sep = qb.separated(", ");
            for id in chunk {
                sep.push_bind(*id as i64);
            }
            sep.push_unseparated(")");
            deleted += qb
                .build()
                .execute(&mut *tx)
                .await
                .map_err(sql("delete"))?
                .rows_affected();
        }
        tx.commit().await.map_err(sql("commit"))?;
        Ok(deleted)
    }

    pub async fn flush(
        &mut self,
        filter: &Filter,
        before: Option<Timestamp>,
    ) -> Result<u64, StoreError> {
        let mut qb = QueryBuilder::<Sqlite>::new("DELETE FROM triggers WHERE 1");
        if let Some(b) = before {
            qb.push(" AND observed_at < ").push_bind(b.0);
        }
        push_filter(&mut qb, filter);
        Ok(qb
            .build()
            .execute(&mut self.conn)
            .await
            .map_err(sql("flush"))?
            .rows_affected())
    }

    /// Retention: drops rows observed before `older_than` and all but the
    /// newest `max_rows`. Deletes in slices so the writer never stalls long.
    pub async fn retain(
        &mut self,
        older_than: Option<Timestamp>,
        max_rows: Option<u64>,
    ) -> Result<u64, StoreError> {
        let mut deleted = 0;
        if let Some(t) = older_than {
            loop {
                let n = sqlx::query(
                    "DELETE FROM triggers WHERE id IN \
                     (SELECT id FROM triggers WHERE observed_at < ? LIMIT ?)",
                )
                .bind(t.0)
                .bind(RETENTION_SLICE)
                .execute(&mut self.conn)
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
            let row = sqlx::query("SELECT COUNT(*), COALESCE(MIN(id), 0) FROM triggers")
                .fetch_one(&mut self.conn)
                .await
                .map_err(sql("retention"))?;
            let count = col::<_, i64>(&row, 0, "triggers", "retention count", "COUNT(*)")? as u64;
            if count > max {
                // The oldest (count - max) rows by id.
                let excess = (count - max) as i64;
                let n = sqlx::query(
                    "DELETE FROM triggers WHERE id IN \
                     (SELECT id FROM triggers ORDER BY id LIMIT ?)",
                )
                .bind(excess)
                .execute(&mut self.conn)
                .await
                .map_err(sql("retention"))?
                .rows_affected();
                deleted += n;
            }
        }
        Ok(deleted)
    }

    /// Every configured threshold, in id order.
    pub async fn load_thresholds(&mut self) -> Result<Vec<Threshold>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, scope, parameter, value, direction, hysteresis, one_shot, spent \
             FROM thresholds ORDER BY id",
        )
        .fetch_all(&mut self.conn)
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
                    parameter: col(&r, 2, T, &row, "parameter")?,
                    value: col(&r, 3, T, &row, "value")?,
                    direction: col(&r, 4, T, &row, "direction")?,
                    hysteresis: col(&r, 5, T, &row, "hysteresis")?,
                    one_shot: col::<_, i64>(&r, 6, T, &row, "one_shot")? != 0,
                    spent: col::<_, i64>(&r, 7, T, &row, "spent")? != 0,
                }
                .check()?,
            );
        }
        Ok(out)
    }

    /// Applies ConfigureThresholds entries in one transaction: a Set replaces
    /// a threshold of the same scope, parameter, value and direction (and
    /// re-arms a spent one); a Cancel removes. Returns how many were removed.
    pub async fn configure_thresholds(&mut self, changes: &[Change]) -> Result<u64, StoreError> {
        let mut tx = self.conn.begin().await.map_err(sql("begin"))?;
        let mut cancelled = 0;
        for c in changes {
            match c {
                Change::Set(t) => {
                    sqlx::query(
                        "INSERT INTO thresholds (scope, parameter, value, direction, hysteresis, one_shot, spent) \
                         VALUES (?, ?, ?, ?, ?, ?, 0) \
                         ON CONFLICT (scope, parameter, value, direction) DO UPDATE SET \
                         hysteresis = excluded.hysteresis, one_shot = excluded.one_shot, spent = 0",
                    )
                    .bind(scope_column(&t.scope))
                    .bind(i64::from(t.parameter.to_wire()))
                    .bind(t.value)
                    .bind(direction_column(t.direction))
                    .bind(t.hysteresis)
                    .bind(i64::from(t.one_shot))
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
                        QueryBuilder::<Sqlite>::new("DELETE FROM thresholds WHERE scope = ");
                    qb.push_bind(scope_column(scope))
                        .push(" AND parameter = ")
                        .push_bind(i64::from(parameter.to_wire()));
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

    /// Marks one-shot thresholds as fired.
    pub async fn mark_spent(&mut self, ids: &[u64]) -> Result<(), StoreError> {
        for id in ids {
            sqlx::query("UPDATE thresholds SET spent = 1 WHERE id = ?")
                .bind(*id as i64)
                .execute(&mut self.conn)
                .await
                .map_err(sql("mark threshold spent"))?;
        }
        Ok(())
    }

    /// Checkpoints the WAL into the main file and closes the connection.
    pub async fn close(mut self) -> Result<(), StoreError> {
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&mut self.conn)
            .await
            .map_err(sql("checkpoint"))?;
        self.conn.close().await.map_err(sql("close"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Opens a fresh store and runs `sql` on it behind the daemon's back.
    async fn tampered(sql_text: &'static str) -> (tempfile::TempDir, Store, Writer) {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("t.db");
        let (store, mut writer) = open(&db, Durability::Normal, 1, "h").await.unwrap();
        sqlx::raw_sql(sql_text)
            .execute(&mut writer.conn)
            .await
            .unwrap();
        (dir, store, writer)
    }

    fn column_of(e: &StoreError) -> (&'static str, &'static str, String) {
        match e {
            StoreError::Column {
                table, column, row, ..
            } => (*table, *column, row.clone()),
            other => panic!("expected a column error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_threshold_row_of_the_wrong_type_is_an_error_naming_row_and_column() {
        let (_dir, _store, mut writer) = tampered(
            "INSERT INTO thresholds (id, scope, parameter, value, direction, hysteresis, one_shot) \
             VALUES (7, 'if:wlan0', 1, 'forty', 2, 0.0, 0)",
        )
        .await;
        let e = writer.load_thresholds().await.unwrap_err();
        assert_eq!(
            column_of(&e),
            ("thresholds", "value", "id 7".to_owned()),
            "{e}"
        );
    }

    #[tokio::test]
    async fn trigger_rows_of_the_wrong_type_are_errors_for_every_reader() {
        let (_dir, store, _writer) = tampered(
            "INSERT INTO triggers (id, observed_at, source, type, body) VALUES (3, 1, 'x', 1, 42)",
        )
        .await;
        let e = store.stats().await.unwrap_err();
        assert_eq!(column_of(&e).1, "source", "{e}");
        let e = store.get(3).await.unwrap_err();
        assert_eq!(
            column_of(&e),
            ("triggers", "body", "id 3".to_owned()),
            "{e}"
        );
    }
}
