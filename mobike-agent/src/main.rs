//! `mobike-agent --config FILE`: runs the IKEv2 endpoint until SIGTERM or
//! SIGINT, then deletes its SAs, serving its status on the control socket.
//! `mobike-agent status [--json]` asks a running agent on that socket;
//! `initiate`, `terminate`, `rekey` and `move` act on its IKE SAs there.
//! SIGHUP re-reads the configuration file.
//! Logging is filtered by `MOBIKE_AGENT_LOG` (tracing-subscriber syntax,
//! default `info`), as text (colour only on a terminal) or JSON lines
//! (`--log-format json`, `MOBIKE_AGENT_LOG_FORMAT`).

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser as _;
use mobike_agent::{
    cli::{Args, Cmd},
    config_file::{AgentConfig, FileConfig},
    control::{self, ControlCommand, client::Client},
};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info};
use trigger_proto::mobike_v1::CommandResponse;

fn sa_names(r: &CommandResponse) -> String {
    r.ike_sas
        .iter()
        .map(|s| {
            format!(
                "{}[{:016x}/{:016x}]",
                s.name, s.spi_initiator, s.spi_responder
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The state of the IKE SA with initiator SPI `spi_i`, if it exists.
async fn state_of(client: &mut Client, spi_i: u64) -> anyhow::Result<Option<String>> {
    Ok(client
        .status()
        .await?
        .ike_sas
        .into_iter()
        .find(|s| s.spi_initiator == spi_i)
        .map(|s| s.state))
}

/// `initiate`, `terminate`, `rekey` and `move`.
async fn command(socket: &std::path::Path, cmd: Cmd) -> anyhow::Result<()> {
    let mut client = Client::connect(socket).await?;
    let poll = std::time::Duration::from_millis(100);
    match cmd {
        Cmd::Initiate {
            connection,
            timeout,
            no_wait,
        } => {
            let r = client
                .command(ControlCommand::Initiate(connection.clone()))
                .await?;
            let Some(sa) = r.ike_sas.first().cloned() else {
                anyhow::bail!("initiate: the agent started no IKE SA for `{connection}`");
            };
            println!("initiating {}", sa_names(&r));
            if no_wait {
                return Ok(());
            }
            let deadline = tokio::time::Instant::now() + *timeout;
            loop {
                match state_of(&mut client, sa.spi_initiator).await?.as_deref() {
                    Some("ESTABLISHED") => break,
                    None => anyhow::bail!(
                        "IKE SA {}[{:016x}] failed (the agent's log says why)",
                        sa.name,
                        sa.spi_initiator
                    ),
                    Some(_) if tokio::time::Instant::now() >= deadline => anyhow::bail!(
                        "IKE SA {}[{:016x}] not established after {timeout}; the agent keeps trying",
                        sa.name,
                        sa.spi_initiator
                    ),
                    Some(_) => tokio::time::sleep(poll).await,
                }
            }
            let st = client.status().await?;
            if let Some(s) = st
                .ike_sas
                .iter()
                .find(|s| s.spi_initiator == sa.spi_initiator)
            {
                println!(
                    "IKE SA {}[{:016x}/{:016x}] established, {} CHILD_SA(s)",
                    s.name,
                    s.spi_initiator,
                    s.spi_responder,
                    s.child_sas.len()
                );
            }
        }
        Cmd::Terminate { select, timeout } => {
            let r = client
                .command(ControlCommand::Terminate(select.selector()))
                .await?;
            println!("deleting {}", sa_names(&r));
            let deadline = tokio::time::Instant::now() + *timeout;
            for sa in &r.ike_sas {
                while state_of(&mut client, sa.spi_initiator).await?.is_some() {
                    if tokio::time::Instant::now() >= deadline {
                        anyhow::bail!(
                            "IKE SA {}[{:016x}] still there after {timeout}",
                            sa.name,
                            sa.spi_initiator
                        );
                    }
                    tokio::time::sleep(poll).await;
                }
            }
            println!("deleted");
        }
        Cmd::Rekey { select, child } => {
            let r = client
                .command(ControlCommand::Rekey {
                    select: select.selector(),
                    child_spi_in: child,
                })
                .await?;
            match child {
                Some(c) => println!("rekeying CHILD_SA {c:08x} of {}", sa_names(&r)),
                None => println!("rekeying {}", sa_names(&r)),
            }
        }
        Cmd::Move {
            select,
            local,
            remote,
            timeout,
        } => {
            let r = client
                .command(ControlCommand::UpdateAddresses {
                    select: select.selector(),
                    local,
                    remote,
                })
                .await?;
            let deadline = tokio::time::Instant::now() + *timeout;
            for sa in &r.ike_sas {
                loop {
                    let now = client
                        .status()
                        .await?
                        .ike_sas
                        .into_iter()
                        .find(|s| s.spi_initiator == sa.spi_initiator);
                    let Some(now) = now else {
                        anyhow::bail!("IKE SA {}[{:016x}] is gone", sa.name, sa.spi_initiator);
                    };
                    let at = |addr: &str, ip: std::net::IpAddr| {
                        addr.parse::<std::net::SocketAddr>()
                            .is_ok_and(|a| a.ip() == ip)
                    };
                    if !now.updating_addresses
                        && at(&now.local, local)
                        && remote.is_none_or(|r| at(&now.remote, r))
                    {
                        println!(
                            "{}[{:016x}] moved to {} - {}",
                            sa.name, sa.spi_initiator, now.local, now.remote
                        );
                        break;
                    }
                    if tokio::time::Instant::now() >= deadline {
                        anyhow::bail!(
                            "IKE SA {}[{:016x}] still at {} - {} after {timeout}: the peer did not take the move",
                            sa.name,
                            sa.spi_initiator,
                            now.local,
                            now.remote
                        );
                    }
                    tokio::time::sleep(poll).await;
                }
            }
        }
        Cmd::Status { .. } => {}
    }
    Ok(())
}

/// The control socket: `--control-socket`, else the configuration's, else
/// the default.
fn socket(args: &Args) -> anyhow::Result<PathBuf> {
    Ok(match (&args.control_socket, &args.config) {
        (Some(s), _) => s.clone(),
        (None, Some(c)) => FileConfig::load(c)
            .with_context(|| format!("loading {}", c.display()))?
            .control
            .socket
            .unwrap_or_else(control::default_socket),
        (None, None) => control::default_socket(),
    })
}

/// `mobike-agent status`: one request, a table or JSON lines on stdout, a
/// one-line error naming the socket and exit status 1 if it fails.
fn status(args: &Args, json: bool) -> anyhow::Result<()> {
    let socket = socket(args)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match rt.block_on(control::client::status(&socket)) {
        Ok(st) => {
            let text = if json {
                control::render::json_lines(&st)
            } else {
                control::render::table(&st)
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
    let mut args = Args::parse();
    match args.cmd.take() {
        Some(Cmd::Status { json }) => return status(&args, json),
        Some(cmd) => {
            let socket = socket(&args)?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            if let Err(e) = rt.block_on(command(&socket, cmd)) {
                eprintln!("mobike-agent: {e:#}");
                std::process::exit(1);
            }
            return Ok(());
        }
        None => {}
    }
    let config_path = args
        .config
        .clone()
        .context("--config FILE is required to run the agent")?;
    daemon_support::init_logging("MOBIKE_AGENT_LOG", "info", args.log_format);
    let file = FileConfig::load(&config_path)
        .with_context(|| format!("loading {}", config_path.display()))?;
    let mut config = file
        .to_agent_config()
        .context("checking the configuration")?;
    // --control-socket, else the file's, else the default (at start and
    // for every reload, so that a reload compares like with like).
    let cli_socket = args.control_socket.clone();
    let control_socket = move |c: &mut AgentConfig| {
        c.control_socket = Some(
            cli_socket
                .clone()
                .or(c.control_socket.take())
                .unwrap_or_else(control::default_socket),
        );
    };
    control_socket(&mut config);
    // Two workers: the socket tasks keep draining the UDP sockets while the
    // engine loop (one task) computes DH and keys for a burst of requests.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
        let mut hup = signal(SignalKind::hangup()).context("SIGHUP handler")?;
        let shutdown = async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        };
        // SIGHUP: read the file again; a file that does not check out is
        // refused with its error and the running configuration stays.
        let (reload_tx, reloads) = tokio::sync::mpsc::channel(4);
        let path = config_path.clone();
        tokio::spawn(async move {
            // RELOADING=1 here; READY=1 from the runtime once the new
            // configuration is in, or from here when it is refused.
            let notifier = daemon_support::notify::Notifier::from_env();
            while hup.recv().await.is_some() {
                info!(file = %path.display(), "SIGHUP: reloading the configuration");
                notifier.reloading();
                let loaded = FileConfig::load(&path).and_then(|f| f.to_agent_config());
                match loaded {
                    Ok(mut c) => {
                        control_socket(&mut c);
                        if reload_tx.send(c).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        error!(
                            file = %path.display(),
                            error = %errchain::chain(&e),
                            "reload refused; the running configuration stays"
                        );
                        notifier.ready(&format!(
                            "reload refused ({}); the running configuration stays",
                            errchain::chain(&e)
                        ));
                    }
                }
            }
        });
        mobike_agent::runtime::run(config, shutdown, reloads)
            .await
            .context("runtime")
    })
}
