//! `mobike-agent`'s command line (clap): running the agent, and the
//! `status`, `initiate`, `terminate`, `rekey` and `move` commands that talk
//! to a running agent over its control socket. `main.rs` acts on it;
//! `tools/gen-assets` writes the man page and shell completions from
//! [`command`].

use std::path::PathBuf;

use clap::{CommandFactory as _, Parser, Subcommand};
use daemon_support::LogFormat;

use crate::control::Selector;

/// The whole command line, for man pages and completions.
pub fn command() -> clap::Command {
    Args::command()
}

/// IKEv2 + MOBIKE agent.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Args {
    /// Configuration file (TOML); needed to run the agent.
    #[arg(long, short, global = true)]
    pub config: Option<PathBuf>,
    /// Control socket [default: `[control] socket` of the configuration,
    /// else /run/mobike-agent/control.sock as root, else
    /// $XDG_RUNTIME_DIR/mobike-agent/control.sock].
    #[arg(long, global = true)]
    pub control_socket: Option<PathBuf>,
    /// Log lines as text (colour only on a terminal) or JSON, one object
    /// per line.
    #[arg(
        long,
        value_enum,
        value_name = "FORMAT",
        env = "MOBIKE_AGENT_LOG_FORMAT",
        default_value_t
    )]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub cmd: Option<Cmd>,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Show the IKE SAs and CHILD_SAs of the running agent.
    Status {
        /// One JSON object per IKE SA and line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Start a configured connection as initiator and wait until its IKE
    /// SA is established.
    Initiate {
        /// Connection name.
        connection: String,
        /// Give up waiting after this long (the agent keeps trying).
        #[arg(long, default_value = "30s")]
        timeout: humantime::Duration,
        /// Return once the first request is out.
        #[arg(long)]
        no_wait: bool,
    },
    /// Delete IKE SAs (and their CHILD_SAs) with the peer and wait until
    /// they are gone.
    Terminate {
        #[command(flatten)]
        select: Select,
        /// Give up waiting after this long.
        #[arg(long, default_value = "30s")]
        timeout: humantime::Duration,
    },
    /// Rekey IKE SAs, or one CHILD_SA of them.
    Rekey {
        #[command(flatten)]
        select: Select,
        /// Rekey the CHILD_SA with this inbound SPI (hex, as `status`
        /// shows it) instead of the IKE SA.
        #[arg(long, value_parser = parse_spi32)]
        child: Option<u32>,
    },
    /// Move IKE SAs and their CHILD_SAs to another address pair (MOBIKE,
    /// UPDATE_SA_ADDRESSES) and wait until the peer took it.
    Move {
        #[command(flatten)]
        select: Select,
        /// Our new address.
        #[arg(long)]
        local: std::net::IpAddr,
        /// The peer's address to use (default: the one in use).
        #[arg(long)]
        remote: Option<std::net::IpAddr>,
        /// Give up waiting after this long.
        #[arg(long, default_value = "30s")]
        timeout: humantime::Duration,
    },
}

/// Which IKE SAs: by connection name or by SPI.
#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
pub struct Select {
    /// Every IKE SA of this connection.
    pub connection: Option<String>,
    /// The IKE SA with this initiator or responder SPI (hex).
    #[arg(long, value_parser = parse_spi64)]
    pub ike_spi: Option<u64>,
}

impl Select {
    pub fn selector(&self) -> Selector {
        match (&self.connection, self.ike_spi) {
            (_, Some(spi)) => Selector::Spi(spi),
            (Some(c), None) => Selector::Connection(c.clone()),
            // clap's group makes one of them present.
            (None, None) => Selector::Connection(String::new()),
        }
    }
}

pub fn parse_spi64(s: &str) -> Result<u64, String> {
    u64::from_str_radix(s.trim_start_matches("0x"), 16)
        .map_err(|e| format!("`{s}` is not a hex SPI: {e}"))
}

pub fn parse_spi32(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s.trim_start_matches("0x"), 16)
        .map_err(|e| format!("`{s}` is not a hex SPI: {e}"))
}
