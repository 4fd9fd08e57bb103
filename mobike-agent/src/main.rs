//! `mobike-agent --config FILE`: runs the IKEv2 endpoint until SIGTERM or
//! SIGINT, then deletes its SAs, serving its status on the control socket.
//! `mobike-agent status [--json]` asks a running agent on that socket.
//! Logging is filtered by `MOBIKE_AGENT_LOG` (tracing-subscriber syntax,
//! default `info`).

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use mobike_agent::config_file::FileConfig;
use tokio::signal::unix::{SignalKind, signal};
use tracing_subscriber::EnvFilter;

/// IKEv2 + MOBIKE agent.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Configuration file (TOML); needed to run the agent.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    /// Control socket [default: `[control] socket` of the configuration,
    /// else /run/mobike-agent/control.sock as root, else
    /// $XDG_RUNTIME_DIR/mobike-agent/control.sock].
    #[arg(long, global = true)]
    control_socket: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Show the IKE SAs and CHILD_SAs of the running agent.
    Status {
        /// One JSON object per IKE SA and line instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// `mobike-agent status`: one request, a table or JSON lines on stdout, a
/// one-line error naming the socket and exit status 1 if it fails.
fn status(args: &Args, json: bool) -> anyhow::Result<()> {
    let socket = match (&args.control_socket, &args.config) {
        (Some(s), _) => s.clone(),
        (None, Some(c)) => FileConfig::load(c)
            .with_context(|| format!("loading {}", c.display()))?
            .control
            .socket
            .unwrap_or_else(mobike_agent::control::default_socket),
        (None, None) => mobike_agent::control::default_socket(),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match rt.block_on(mobike_agent::control::status(&socket)) {
        Ok(st) => {
            let text = if json {
                mobike_agent::control::json_lines(&st)
            } else {
                mobike_agent::control::table(&st)
            };
            std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes())?;
            Ok(())
        }
        Err(e) => {
            eprintln!("mobike-agent status: {:#}", anyhow::Error::from(e));
            std::process::exit(1);
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(Cmd::Status { json }) = args.cmd {
        return status(&args, json);
    }
    let config_path = args
        .config
        .clone()
        .context("--config FILE is required to run the agent")?;
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("MOBIKE_AGENT_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let file = FileConfig::load(&config_path)
        .with_context(|| format!("loading {}", config_path.display()))?;
    let mut config = file
        .to_agent_config()
        .context("checking the configuration")?;
    config.control_socket = Some(
        args.control_socket
            .clone()
            .or(config.control_socket.take())
            .unwrap_or_else(mobike_agent::control::default_socket),
    );
    // Two workers: the socket tasks keep draining the UDP sockets while the
    // engine loop (one task) computes DH and keys for a burst of requests.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
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
