//! The `trigger-db` daemon's command line (clap): flags only, the wiring
//! is in [`crate::daemon`]. `main.rs` parses it; `tools/gen-assets` writes
//! the man page and shell completions from [`command`].

use std::path::PathBuf;

use clap::{CommandFactory as _, Parser};
use daemon_support::LogFormat;

/// The whole command line, for man pages and completions.
pub fn command() -> clap::Command {
    Args::command()
}

/// The link-trigger database (PF_TRIGGER over gRPC): collects link,
/// address and route events, stores them in SQLite (or PostgreSQL) and
/// notifies subscribers.
///
/// Log filter: TRIGGER_DB_LOG (e.g. "info", "trigger_db=debug").
#[derive(Debug, Parser)]
#[command(version)]
pub struct Args {
    /// Unix socket to serve on [default: /run/trigger-db/trigger.sock as
    /// root, else $XDG_RUNTIME_DIR/trigger-db/trigger.sock].
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// The database: a SQLite file (a path, or sqlite:PATH) [default:
    /// /var/lib/trigger-db/triggers.db as root, else
    /// $XDG_STATE_HOME/trigger-db/triggers.db], or PostgreSQL
    /// (postgres://USER@HOST/DB, or postgres:///DB?host=/run/postgresql
    /// over a Unix socket; password in the URL or PGPASSWORD).
    #[arg(long, value_name = "PATH|URL")]
    pub database: Option<PathBuf>,
    /// TOML configuration file (see the documentation of trigger_db::config).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log lines as text (colour only on a terminal) or JSON, one object
    /// per line.
    #[arg(
        long,
        value_enum,
        value_name = "FORMAT",
        env = "TRIGGER_DB_LOG_FORMAT",
        default_value_t
    )]
    pub log_format: LogFormat,
}
