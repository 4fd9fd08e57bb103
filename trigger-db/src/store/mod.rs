//! The store: one interface over two backends, SQLite ([`sqlite`], the
//! embedded default, one host per file) and PostgreSQL ([`postgres`], many
//! hosts in one database, each daemon writing its own host's rows and
//! reading any host's history). The daemon picks one by the `--database` value ([`Database`]).
//!
//! Both keep the same contract, and the same test suite
//! (`tests/store.rs`) runs against both:
//!
//! - ids strictly increase in publish order and are never given twice, even
//!   across a crash: the writer gives them from ranges it first makes
//!   durable here ([`Writer::reserve_ids`]), and gives back the unused rest
//!   at a clean shutdown ([`Writer::release_ids`]);
//! - a write that returned is committed (SQLite `synchronous = FULL`,
//!   PostgreSQL `synchronous_commit = on`, with [`Durability::Full`]);
//! - resume after an id, history pages ordered by (observed_at, host, id)
//!   with the same filters and page tokens (one host: (observed_at, id)),
//!   stats, flaps, retention, thresholds kept across restarts, modify,
//!   delete and flush;
//! - the schema comes from embedded sqlx migrations per backend
//!   (`migrations/sqlite`, `migrations/postgres`), applied at open; a
//!   database whose schema is newer than this binary knows is refused
//!   ([`StoreError::SchemaTooNew`]).
//!
//! [`Store`] is the read side, shared by every request (a small pool of
//! read connections); [`Writer`] is the one write connection, owned by the
//! writer actor ([`crate::writer`]), which batches many triggers into one
//! transaction. Both are enums over the backends rather than trait objects:
//! two implementations, known at compile time, and async methods stay plain.
//!
//! Queries name the hosts whose rows they read ([`query::Hosts`]): this
//! daemon's own (the default), some, or all; PostgreSQL answers for any
//! host in it, SQLite only for its own.
//!
//! With PostgreSQL, writes do not stall the host while the server is
//! unreachable: they go to a bounded local SQLite spool and are shipped
//! in id order when the server is back ([`spool`], which also says what a
//! reader sees meanwhile and which writes are not spooled).
//!
//! This module does not decide ids or fan out.

pub mod postgres;
mod postgres_read;
pub mod query;
pub mod spool;
mod spool_read;
pub mod sqlite;

pub use query::{Cursor, FlapBucket, FlapsQuery, HistoryQuery, HostTrigger, Hosts};

use std::{
    fmt,
    path::{Path, PathBuf},
    str::FromStr,
};

use prost::Message as _;
use serde::Deserialize;
use sqlx::{Row, migrate::Migrator};
use trigger_proto::v1 as pb;

use crate::{
    model::{Filter, LinkParameterType, LinkType, Source, Timestamp, Trigger, ValidationError},
    threshold::{Change, Direction, Scope, Threshold},
};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create the database directory {path}")]
    CreateDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open the database {path}")]
    Open {
        path: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("database {given:?}: {problem}")]
    Url { given: String, problem: String },
    #[error(
        "no host id: set [store] host_id in the configuration (PostgreSQL keeps many hosts' \
         rows apart by it), or provide {path}"
    )]
    NoHostId {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("host id {0:?} is not usable: {1}")]
    BadHostId(String, &'static str),
    #[error(
        "host id {0:?} is in use by another trigger-db on this database (two writers would \
         give the same ids); give each host its own [store] host_id"
    )]
    HostInUse(String),
    #[error("cannot migrate the database schema")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    #[error(
        "the database's schema is version {database}, newer than this trigger-db knows \
         (up to version {known}); run a newer trigger-db, or another database"
    )]
    SchemaTooNew { database: i64, known: i64 },
    #[error("database {op} failed")]
    Sql {
        op: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("stored trigger {id} is corrupt")]
    Corrupt {
        id: u64,
        #[source]
        source: ValidationError,
    },
    #[error("stored trigger {id} cannot be decoded")]
    Decode {
        id: u64,
        #[source]
        source: prost::DecodeError,
    },
    #[error("{table}: {row}: column {column} does not hold what trigger-db writes there")]
    Column {
        table: &'static str,
        /// The row's id, or what the query was ("count").
        row: String,
        column: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("trigger {0} not found")]
    NotFound(u64),
    /// A query named a host this database does not hold (SQLite keeps only
    /// its own host's rows).
    #[error(
        "hosts: {host:?} is not in this database: it is SQLite, which keeps only this host's \
         rows ({own:?}); ask that host's trigger-db, or use a PostgreSQL database of many hosts"
    )]
    HostNotHere { host: String, own: String },
    #[error("the store is shut down")]
    Closed,
    /// The PostgreSQL store's spool reached its size while the server is
    /// unreachable or the backlog is shipping.
    #[error(
        "the spool {path} is full ({max_bytes} bytes, [store] spool_max_bytes): PostgreSQL \
         was unreachable and the backlog is not shipped yet; writes are refused until it is"
    )]
    SpoolFull { path: String, max_bytes: u64 },
    #[error(
        "the spool {path} holds {rows} triggers of database {database:?}, host {host:?}, not \
         this daemon's; start the daemon with that database and host id to ship them, or \
         configure another [store] spool_path"
    )]
    SpoolForeign {
        path: String,
        rows: u64,
        database: String,
        host: String,
    },
    #[error("the spool's directory")]
    SpoolDir(#[source] daemon_support::socket::SocketError),
    /// An operation that is not spooled while PostgreSQL is unreachable.
    #[error(
        "{op}: PostgreSQL is unreachable; new triggers are spooled, but {op} needs the \
         server: try again when it is back"
    )]
    Unreachable {
        op: &'static str,
        #[source]
        source: Option<Box<StoreError>>,
    },
}

fn sql(op: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| StoreError::Sql { op, source }
}

/// An error of `op` that is not the database's (a check of ours).
fn refused(op: &'static str, why: String) -> StoreError {
    StoreError::Sql {
        op,
        source: sqlx::Error::Protocol(why),
    }
}

/// Column `i` (named `column`) of a row of `table` (`row` names it in the
/// error): the database is outside input, so a value of the wrong type is
/// an error naming row and column, never a panic.
fn col<'r, R, T>(
    r: &'r R,
    i: usize,
    table: &'static str,
    row: impl fmt::Display,
    column: &'static str,
) -> Result<T, StoreError>
where
    R: Row,
    usize: sqlx::ColumnIndex<R>,
    T: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    r.try_get(i).map_err(|source| StoreError::Column {
        table,
        row: row.to_string(),
        column,
        source,
    })
}

/// A stored trigger from a `SELECT id, body` row, on either backend. The
/// database is outside input too: a row that is not what the daemon wrote
/// is an error naming the row, never a panic.
fn trigger_row<R>(row: &R) -> Result<Trigger, StoreError>
where
    R: Row,
    usize: sqlx::ColumnIndex<R>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> &'r [u8]: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let id = col::<_, i64>(row, 0, "triggers", "a row", "id")? as u64;
    let body: &[u8] = col(row, 1, "triggers", format_args!("id {id}"), "body")?;
    decode(id, body)
}

/// A stored trigger and its host from a `SELECT id, body, host` row (on
/// PostgreSQL); see [`trigger_row`].
fn host_trigger_row<R>(row: &R) -> Result<HostTrigger, StoreError>
where
    R: Row,
    usize: sqlx::ColumnIndex<R>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> &'r [u8]: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let trigger = trigger_row(row)?;
    let host = col(
        row,
        2,
        "triggers",
        format_args!("id {}", trigger.id),
        "host",
    )?;
    Ok(HostTrigger { host, trigger })
}

/// One `(if_name, bucket, COUNT(*)[, host])` row of the flaps query, on
/// either backend; the host column is there when `by_host`.
fn flap_row<R>(row: &R, q: &FlapsQuery) -> Result<FlapBucket, StoreError>
where
    R: Row,
    usize: sqlx::ColumnIndex<R>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let b: i64 = col(row, 1, "triggers", "flap bucket", "observed_at")?;
    Ok(FlapBucket {
        host: if q.by_host {
            Some(col(row, 3, "triggers", "flap bucket", "host")?)
        } else {
            None
        },
        interface: col(row, 0, "triggers", "flap bucket", "if_name")?,
        start: Timestamp(q.since.0.saturating_add(b.saturating_mul(q.bucket_ns))),
        link_downs: col::<_, i64>(row, 2, "triggers", "flap bucket", "COUNT(*)")? as u64,
    })
}

/// How hard a commit waits for the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Durability {
    /// A commit that returned is on disk (SQLite fsyncs every commit;
    /// PostgreSQL `synchronous_commit = on`): an acknowledged trigger
    /// survives power loss.
    #[default]
    Full,
    /// SQLite fsyncs at checkpoints only; PostgreSQL `synchronous_commit =
    /// off`. Survives a crash of the daemon, not of the machine holding the
    /// database.
    Normal,
}

/// Most rows one INSERT statement carries (8 parameters a row at most:
/// well under SQLite's 32,766 and PostgreSQL's 65,535 parameter limits).
const ROWS_PER_STATEMENT: usize = 1_000;

/// Rows one retention DELETE removes at most, so the writer never stalls
/// long.
const RETENTION_SLICE: i64 = 10_000;

/// Most triggers one history page may have.
pub const MAX_PAGE_SIZE: u32 = 1_000;

/// Where the store is: the `--database` value.
#[derive(Clone)]
pub enum Database {
    /// A SQLite file (a path, or a `sqlite:` URL).
    Sqlite(PathBuf),
    /// A PostgreSQL database (`postgres://` or `postgresql://` URL).
    Postgres(Box<sqlx::postgres::PgConnectOptions>),
}

/// The password, if any, never shows (the options' own Debug prints it).
impl fmt::Debug for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Database({self})")
    }
}

/// For logs: the path, or the PostgreSQL user, server and database without
/// the password.
impl fmt::Display for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite(p) => write!(f, "{}", p.display()),
            Self::Postgres(o) => {
                let server = match o.get_socket() {
                    Some(dir) => format!("socket in {}", dir.display()),
                    None => format!("{}:{}", o.get_host(), o.get_port()),
                };
                write!(
                    f,
                    "postgresql://{}@{} database {}",
                    o.get_username(),
                    server,
                    o.get_database().unwrap_or("(the user's)")
                )
            }
        }
    }
}

/// `given` with the password of a URL's user info replaced, for errors.
fn redact(given: &str) -> String {
    let Some((scheme, rest)) = given.split_once("://") else {
        return given.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((user_info, host)) if user_info.contains(':') => {
            let user = user_info.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{host}{tail}")
        }
        _ => given.to_owned(),
    }
}

impl Database {
    /// The `--database` value: a path or a `sqlite:` URL (`sqlite:PATH`,
    /// `sqlite://PATH`), or a `postgres://` / `postgresql://` URL (password
    /// in the URL, or PGPASSWORD, or peer authentication over a Unix socket
    /// with `postgres:///DB?host=/run/postgresql`). Anything that looks like
    /// a URL of another kind is an error, not a file name.
    pub fn parse(given: &Path) -> Result<Self, StoreError> {
        let Some(s) = given.to_str() else {
            // Not UTF-8: not a URL, a file name.
            return Ok(Self::Sqlite(given.to_owned()));
        };
        let bad = |problem: &str| StoreError::Url {
            given: redact(s),
            problem: problem.to_owned(),
        };
        if s.is_empty() {
            return Err(bad("empty; give a file path or a postgres:// URL"));
        }
        let lower = s.to_ascii_lowercase();
        if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
            let o = sqlx::postgres::PgConnectOptions::from_str(s)
                .map_err(|e| bad(&format!("not a usable PostgreSQL URL: {e}")))?;
            return Ok(Self::Postgres(Box::new(o)));
        }
        if let Some(rest) = lower.strip_prefix("sqlite:") {
            let path = &s[s.len() - rest.len()..];
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() {
                return Err(bad("a sqlite: URL needs a file path"));
            }
            if path.contains('?') {
                return Err(bad(
                    "sqlite: URL parameters are not supported (the daemon sets its own; \
                     see [store] durability)",
                ));
            }
            if path == ":memory:" {
                return Err(bad("an in-memory database keeps nothing; give a file path"));
            }
            return Ok(Self::Sqlite(PathBuf::from(path)));
        }
        if let Some((scheme, _)) = s.split_once("://")
            && !scheme.is_empty()
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        {
            return Err(bad(&format!(
                "unknown URL scheme {scheme:?}; give a file path, a sqlite: URL or a \
                 postgres:// URL"
            )));
        }
        Ok(Self::Sqlite(given.to_owned()))
    }

    /// The SQLite file, if that is the backend.
    pub fn sqlite_path(&self) -> Option<&Path> {
        match self {
            Self::Sqlite(p) => Some(p),
            Self::Postgres(_) => None,
        }
    }
}

/// Where a daemon's host id comes from when `[store] host_id` is not set.
pub const MACHINE_ID: &str = "/etc/machine-id";

/// Longest host id.
const MAX_HOST_ID: usize = 255;

/// The host id rows are written under in a database of many hosts:
/// `configured` (`[store] host_id`), else the contents of `machine_id`
/// (normally [`MACHINE_ID`]), trimmed.
pub fn host_id(configured: Option<&str>, machine_id: &Path) -> Result<String, StoreError> {
    let id = match configured {
        Some(c) => c.to_owned(),
        None => std::fs::read_to_string(machine_id)
            .map_err(|source| StoreError::NoHostId {
                path: machine_id.display().to_string(),
                source,
            })?
            .trim()
            .to_owned(),
    };
    match check_host_id(&id) {
        Ok(()) => Ok(id),
        Err(why) => Err(StoreError::BadHostId(id, why)),
    }
}

/// Whether `id` can be a host id (configured, or asked for in a query):
/// not empty, at most 255 bytes, no control characters.
pub fn check_host_id(id: &str) -> Result<(), &'static str> {
    if id.is_empty() {
        return Err("it is empty");
    }
    if id.len() > MAX_HOST_ID {
        return Err("it is longer than 255 bytes");
    }
    if id.chars().any(char::is_control) {
        return Err("it has control characters");
    }
    Ok(())
}

/// How to open the store.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    pub durability: Durability,
    /// Read connections.
    pub readers: u32,
    /// The host the rows are written under (PostgreSQL). SQLite keeps one
    /// host per file and does not store it: it only answers queries for
    /// it (it may be empty there: no host id known).
    pub host_id: String,
    /// PostgreSQL: how long to wait for another writer of the same host id
    /// to go (a daemon restarted right after a crash, whose old session
    /// the server has not ended yet) before refusing to start.
    pub host_lock_wait: std::time::Duration,
    /// PostgreSQL: the local spool for writes while the server is
    /// unreachable ([`spool`]); `None`: such writes fail. (SQLite: unused.)
    pub spool: Option<spool::SpoolOptions>,
}

/// Opens (creating if needed) the database, runs the migrations, and
/// returns the read side and the one writer.
pub async fn open(db: &Database, opts: &OpenOptions) -> Result<(Store, Writer), StoreError> {
    match db {
        Database::Sqlite(path) => {
            let (s, w) = sqlite::open(path, opts.durability, opts.readers, &opts.host_id).await?;
            Ok((Store::Sqlite(s), Writer::Sqlite(w)))
        }
        Database::Postgres(o) => {
            let (s, w) = spool::open(o, opts).await?;
            Ok((Store::Postgres(s), Writer::Postgres(w)))
        }
    }
}

/// Refuses a database whose newest applied migration (`applied`) is one
/// this binary's `migrator` does not have.
fn check_schema_version(applied: Option<i64>, migrator: &Migrator) -> Result<(), StoreError> {
    let known = migrator.iter().map(|m| m.version).max().unwrap_or(0);
    match applied {
        Some(database) if database > known => Err(StoreError::SchemaTooNew { database, known }),
        _ => Ok(()),
    }
}

/// Encodes a trigger for the `body` column (the id lives in its own column).
fn encode(t: &Trigger) -> Vec<u8> {
    let mut w = t.to_wire();
    w.id = 0;
    w.encode_to_vec()
}

/// A stored trigger from its id and body: the database is outside input,
/// so a body that is not what the daemon wrote is an error naming the row.
fn decode(id: u64, body: &[u8]) -> Result<Trigger, StoreError> {
    let mut w = pb::Trigger::decode(body).map_err(|source| StoreError::Decode { id, source })?;
    w.id = id;
    Trigger::from_stored(&w).map_err(|source| StoreError::Corrupt { id, source })
}

/// Counters over the stored rows (PostgreSQL: this host's rows; the size
/// is the whole table's, all hosts).
#[derive(Debug, Clone, Default)]
pub struct StoreStats {
    pub rows: u64,
    pub first_id: u64,
    pub last_id: u64,
    pub database_bytes: u64,
    pub by_source: Vec<(Source, u64)>,
    pub by_type: Vec<(crate::model::TriggerType, u64)>,
}

fn scope_column(s: &Scope) -> String {
    match s {
        Scope::Interface(i) => format!("if:{i}"),
        Scope::LinkType(t) => format!("lt:{}", t.to_wire()),
    }
}

fn scope_from_column(s: &str) -> Option<Scope> {
    if let Some(i) = s.strip_prefix("if:") {
        return Some(Scope::Interface(i.to_owned()));
    }
    let n = s.strip_prefix("lt:")?.parse::<i32>().ok()?;
    LinkType::from_wire(n, "link_type")
        .ok()
        .map(Scope::LinkType)
}

fn direction_column(d: Direction) -> i32 {
    match d {
        Direction::Above => 1,
        Direction::Below => 2,
    }
}

/// The columns of a `thresholds` row, as read.
struct ThresholdRow<'a> {
    id: u64,
    scope: &'a str,
    parameter: i64,
    value: f64,
    direction: i64,
    hysteresis: f64,
    one_shot: bool,
    spent: bool,
}

impl ThresholdRow<'_> {
    fn check(self) -> Result<Threshold, StoreError> {
        let id = self.id;
        let corrupt = |what: &str| StoreError::Corrupt {
            id,
            source: ValidationError::new("thresholds", what.to_owned()),
        };
        let scope = scope_from_column(self.scope).ok_or_else(|| corrupt("bad scope"))?;
        let parameter = i32::try_from(self.parameter)
            .ok()
            .and_then(|p| LinkParameterType::from_wire(p, "parameter").ok())
            .ok_or_else(|| corrupt("bad parameter"))?;
        let direction = match self.direction {
            1 => Direction::Above,
            2 => Direction::Below,
            _ => return Err(corrupt("bad direction")),
        };
        Ok(Threshold {
            id,
            scope,
            parameter,
            value: self.value,
            direction,
            hysteresis: self.hysteresis,
            one_shot: self.one_shot,
            spent: self.spent,
        })
    }
}

/// `id` as the databases' signed 64-bit integer.
fn id_column(op: &'static str, id: u64) -> Result<i64, StoreError> {
    i64::try_from(id).map_err(|_| refused(op, format!("id {id} is beyond 64-bit integers")))
}

/// The read side, shared by every request.
#[derive(Debug, Clone)]
pub enum Store {
    Sqlite(sqlite::Store),
    Postgres(postgres::Store),
}

/// The one write connection, owned by the writer actor.
#[derive(Debug)]
pub enum Writer {
    Sqlite(sqlite::Writer),
    /// With its spool, if configured.
    Postgres(spool::Writer),
}

/// Calls the same method on whichever backend `$on` is.
macro_rules! dispatch {
    ($on:expr, $b:ident => $call:expr) => {
        match $on {
            Self::Sqlite($b) => $call,
            Self::Postgres($b) => $call,
        }
    };
}

/// Like `dispatch!` for the writer: a PostgreSQL write that finds the
/// connection gone drops it, and the next one connects again.
macro_rules! dispatch_write {
    ($on:expr, $w:ident => $call:expr) => {
        match $on {
            Self::Sqlite($w) => $call,
            Self::Postgres($w) => {
                let r = $call;
                $w.after(&r);
                r
            }
        }
    };
}

impl Store {
    pub async fn get(&self, id: u64) -> Result<Trigger, StoreError> {
        dispatch!(self, s => s.get(id).await)
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
        dispatch!(self, s => s.after_id(after_id, upto_id, filter, limit).await)
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
        dispatch!(self, s => s.replay_page(after_id, upto_id, filter, limit).await)
    }

    /// One history page of the query's hosts, ordered by (observed_at,
    /// host, id) (see [`query`]).
    pub async fn history(&self, q: &HistoryQuery) -> Result<Vec<HostTrigger>, StoreError> {
        dispatch!(self, s => s.history(q).await)
    }

    /// The highest id ever given or reserved (0: none), even after deletes.
    pub async fn last_id(&self) -> Result<u64, StoreError> {
        dispatch!(self, s => s.last_id().await)
    }

    pub async fn stats(&self) -> Result<StoreStats, StoreError> {
        dispatch!(self, s => s.stats().await)
    }

    /// Stored LINK_DOWN triggers of the query's hosts per interface (and
    /// host, if `by_host`) in buckets of `bucket_ns` from `since` up to
    /// `until`: only non-empty buckets, by (host,) interface, then start.
    pub async fn flaps(&self, q: &FlapsQuery) -> Result<Vec<FlapBucket>, StoreError> {
        dispatch!(self, s => s.flaps(q).await)
    }

    pub async fn close(&self) {
        dispatch!(self, s => s.close().await)
    }

    /// The PostgreSQL store's spool, if it has one.
    pub fn spool_status(&self) -> Option<spool::SpoolSnapshot> {
        match self {
            Self::Sqlite(_) => None,
            Self::Postgres(s) => s.spool().map(|sp| sp.status().snapshot()),
        }
    }
}

impl Writer {
    /// Whether spooled triggers wait to be shipped ([`Writer::ship`]).
    pub fn has_backlog(&self) -> bool {
        match self {
            Self::Sqlite(_) => false,
            Self::Postgres(w) => w.has_backlog(),
        }
    }

    /// Ships spooled triggers to PostgreSQL (see [`spool`]); returns how
    /// many went.
    pub async fn ship(&mut self) -> Result<u64, StoreError> {
        match self {
            Self::Sqlite(_) => Ok(0),
            Self::Postgres(w) => w.ship().await,
        }
    }

    /// Refuses a batch before it goes anywhere when the spool is known to
    /// be full ([`StoreError::SpoolFull`]).
    pub fn check_room(&self) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(_) => Ok(()),
            Self::Postgres(w) => w.check_room(),
        }
    }

    /// Makes every id up to `up_to` taken for good, before any of them is
    /// handed out: after a crash the ids continue above it whether or not
    /// their rows were stored. One small transaction.
    pub async fn reserve_ids(&mut self, up_to: u64) -> Result<(), StoreError> {
        dispatch_write!(self, w => w.reserve_ids(up_to).await)
    }

    /// Gives back the reserved ids above `last_given` (none of them was
    /// handed out): at a clean shutdown, so that ids go on densely.
    pub async fn release_ids(&mut self, last_given: u64) -> Result<(), StoreError> {
        dispatch_write!(self, w => w.release_ids(last_given).await)
    }

    /// Inserts the triggers in one transaction with the ids they carry
    /// (given by the writer from a reserved range, increasing).
    pub async fn insert(&mut self, triggers: &[&Trigger]) -> Result<(), StoreError> {
        if triggers.is_empty() {
            return Ok(());
        }
        dispatch_write!(self, w => w.insert(triggers).await)
    }

    /// Replaces the content of a stored trigger, keeping its id, time and
    /// source. Returns the stored result.
    pub async fn modify(&mut self, t: &Trigger) -> Result<Trigger, StoreError> {
        dispatch_write!(self, w => w.modify(t).await)
    }

    /// Deletes the triggers with these ids; returns how many there were.
    pub async fn delete(&mut self, ids: &[u64]) -> Result<u64, StoreError> {
        dispatch_write!(self, w => w.delete(ids).await)
    }

    /// Deletes the triggers matching `filter` observed before `before`.
    pub async fn flush(
        &mut self,
        filter: &Filter,
        before: Option<Timestamp>,
    ) -> Result<u64, StoreError> {
        dispatch_write!(self, w => w.flush(filter, before).await)
    }

    /// Retention: drops rows observed before `older_than` and all but the
    /// newest `max_rows` (by id). Deletes in slices so the writer never
    /// stalls long.
    pub async fn retain(
        &mut self,
        older_than: Option<Timestamp>,
        max_rows: Option<u64>,
    ) -> Result<u64, StoreError> {
        dispatch_write!(self, w => w.retain(older_than, max_rows).await)
    }

    /// Every configured threshold, in id order.
    pub async fn load_thresholds(&mut self) -> Result<Vec<Threshold>, StoreError> {
        dispatch_write!(self, w => w.load_thresholds().await)
    }

    /// Applies ConfigureThresholds entries in one transaction: a Set replaces
    /// a threshold of the same scope, parameter, value and direction (and
    /// re-arms a spent one); a Cancel removes. Returns how many were removed.
    pub async fn configure_thresholds(&mut self, changes: &[Change]) -> Result<u64, StoreError> {
        dispatch_write!(self, w => w.configure_thresholds(changes).await)
    }

    /// Marks one-shot thresholds as fired.
    pub async fn mark_spent(&mut self, ids: &[u64]) -> Result<(), StoreError> {
        dispatch_write!(self, w => w.mark_spent(ids).await)
    }

    /// Finishes writing (SQLite: checkpoints the WAL) and closes.
    pub async fn close(self) -> Result<(), StoreError> {
        dispatch!(self, w => w.close().await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Database, StoreError> {
        Database::parse(Path::new(s))
    }

    #[test]
    fn paths_and_sqlite_urls_are_sqlite_files() {
        for (given, path) in [
            (
                "/var/lib/trigger-db/triggers.db",
                "/var/lib/trigger-db/triggers.db",
            ),
            ("triggers.db", "triggers.db"),
            ("sqlite:/tmp/t.db", "/tmp/t.db"),
            ("sqlite:///tmp/t.db", "/tmp/t.db"),
            ("sqlite://t.db", "t.db"),
            ("SQLite:t.db", "t.db"),
            ("./odd:name.db", "./odd:name.db"),
        ] {
            match parse(given) {
                Ok(Database::Sqlite(p)) => assert_eq!(p, Path::new(path), "{given}"),
                other => panic!("{given}: {other:?}"),
            }
        }
    }

    #[test]
    fn postgres_urls_are_postgres_and_never_show_the_password() {
        let db = parse("postgres://writer:s3cret@db.example:5433/fleet").unwrap();
        let Database::Postgres(o) = &db else {
            panic!("{db:?}")
        };
        assert_eq!(o.get_host(), "db.example");
        assert_eq!(o.get_port(), 5433);
        assert_eq!(o.get_database(), Some("fleet"));
        assert!(!format!("{db} {db:?}").contains("s3cret"), "{db:?}");
        let db = parse("postgresql:///fleet?host=/run/postgresql&user=trigger").unwrap();
        let Database::Postgres(o) = &db else {
            panic!("{db:?}")
        };
        assert_eq!(o.get_socket(), Some(&PathBuf::from("/run/postgresql")));
        assert_eq!(o.get_username(), "trigger");
    }

    #[test]
    fn bad_database_values_are_clear_errors() {
        for (given, says) in [
            ("", "empty"),
            ("sqlite:", "needs a file path"),
            ("sqlite:t.db?mode=ro", "parameters are not supported"),
            ("sqlite::memory:", "in-memory"),
            ("mysql://u@h/db", "unknown URL scheme \"mysql\""),
            (
                "postgres://u:pw@h:notaport/db",
                "not a usable PostgreSQL URL",
            ),
        ] {
            let e = parse(given).unwrap_err().to_string();
            assert!(e.contains(says), "{given}: {e}");
            assert!(!e.contains(":pw@"), "the password shows: {e}");
        }
    }

    #[test]
    fn the_host_id_is_configured_or_the_machine_id() {
        let dir = tempfile::tempdir().unwrap();
        let mid = dir.path().join("machine-id");
        assert_eq!(host_id(Some("gw-7"), &mid).unwrap(), "gw-7");
        let e = host_id(None, &mid).unwrap_err().to_string();
        assert!(
            e.contains("[store] host_id") && e.contains("machine-id"),
            "{e}"
        );
        std::fs::write(&mid, "0123456789abcdef0123456789abcdef\n").unwrap();
        assert_eq!(
            host_id(None, &mid).unwrap(),
            "0123456789abcdef0123456789abcdef"
        );
        std::fs::write(&mid, "\n").unwrap();
        assert!(
            host_id(None, &mid)
                .unwrap_err()
                .to_string()
                .contains("empty")
        );
        assert!(host_id(Some("a\nb"), &mid).is_err());
        assert!(host_id(Some(&"x".repeat(256)), &mid).is_err());
    }
}
