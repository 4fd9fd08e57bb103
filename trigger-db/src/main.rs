//! `trigger-db`: the trigger database daemon. Flags and signals only; the
//! wiring is in `trigger_db::daemon`.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use daemon_support::LogFormat;
use tokio_util::sync::CancellationToken;
use trigger_db::{config::Config, daemon, paths};

/// The link-trigger database (PF_TRIGGER over gRPC): collects link,
/// address and route events, stores them in SQLite and notifies subscribers.
///
/// Log filter: TRIGGER_DB_LOG (e.g. "info", "trigger_db=debug").
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Unix socket to serve on [default: /run/trigger-db/trigger.sock as
    /// root, else $XDG_RUNTIME_DIR/trigger-db/trigger.sock].
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// SQLite database [default: /var/lib/trigger-db/triggers.db as root,
    /// else $XDG_STATE_HOME/trigger-db/triggers.db].
    #[arg(long, value_name = "PATH")]
    database: Option<PathBuf>,
    /// TOML configuration file (see the documentation of trigger_db::config).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Log lines as text (colour only on a terminal) or JSON, one object
    /// per line.
    #[arg(
        long,
        value_enum,
        value_name = "FORMAT",
        env = "TRIGGER_DB_LOG_FORMAT",
        default_value_t
    )]
    log_format: LogFormat,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    daemon_support::init_logging("TRIGGER_DB_LOG", "info", args.log_format);
    let config = match &args.config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    let opts = daemon::Options {
        socket: args
            .socket
            .or_else(|| config.socket.clone())
            .unwrap_or_else(trigger_client::default_socket),
        database: args
            .database
            .or_else(|| config.database.clone())
            .unwrap_or_else(paths::default_database),
        config,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(async {
        let shutdown = CancellationToken::new();
        let signals = {
            let shutdown = shutdown.clone();
            async move {
                use tokio::signal::unix::{SignalKind, signal};
                let mut term = signal(SignalKind::terminate())?;
                let mut int = signal(SignalKind::interrupt())?;
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM"),
                    _ = int.recv() => tracing::info!("SIGINT"),
                }
                shutdown.cancel();
                Ok::<_, std::io::Error>(())
            }
        };
        let sig = tokio::spawn(signals);
        let r = daemon::run(opts, shutdown).await;
        sig.abort();
        r.map_err(|e| anyhow::anyhow!(errchain::chain(&e)))
    })
}
