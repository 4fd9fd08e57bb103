//! `trigger-db`: the trigger database daemon. Flags and signals only; the
//! wiring is in `trigger_db::daemon`.

use anyhow::Context as _;
use clap::Parser as _;
use tokio_util::sync::CancellationToken;
use trigger_db::{cli::Args, config::Config, daemon, paths};

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
