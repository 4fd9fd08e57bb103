//! `mobike-agent --config FILE`: runs the IKEv2 endpoint until SIGTERM or
//! SIGINT, then deletes its SAs. Logging is filtered by `MOBIKE_AGENT_LOG`
//! (tracing-subscriber syntax, default `info`).

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use mobike_agent::config_file::FileConfig;
use tokio::signal::unix::{SignalKind, signal};
use tracing_subscriber::EnvFilter;

/// IKEv2 + MOBIKE agent.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Configuration file (TOML).
    #[arg(long, short)]
    config: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("MOBIKE_AGENT_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let file = FileConfig::load(&args.config)
        .with_context(|| format!("loading {}", args.config.display()))?;
    let config = file
        .to_agent_config()
        .context("checking the configuration")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
        let shutdown = async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        };
        mobike_agent::runtime::run(config, shutdown)
            .await
            .context("runtime")
    })
}
