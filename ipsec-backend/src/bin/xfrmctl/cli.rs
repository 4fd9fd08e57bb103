//! `xfrmctl`'s command line: the verbs, their flags and help texts (clap).
//! Running them is `xfrmctl.rs`'s business. Also compiled into
//! `tools/gen-assets`, which writes the man page and shell completions from
//! [`command`].

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Args, CommandFactory as _, Parser, Subcommand};
use ipsec_backend::types::{Mode, Prefix, Proto};

/// The whole command line, for man pages and completions.
#[allow(
    dead_code,
    reason = "used by tools/gen-assets, which includes this file"
)]
pub(crate) fn command() -> clap::Command {
    Cli::command()
}

/// Linux XFRM admin tool: what `ip xfrm` cannot do (MIGRATE, a monitor
/// that shows MIGRATE events, a capability probe, CHILD_SA pairs).
///
/// Needs CAP_NET_ADMIN (and CAP_SYS_ADMIN for `caps` and `--netns`).
/// Log filter: XFRMCTL_LOG (e.g. XFRMCTL_LOG=debug).
#[derive(Debug, Parser)]
#[command(name = "xfrmctl", version, after_help = EXAMPLES)]
pub(crate) struct Cli {
    /// Work inside the named network namespace (/run/netns/NAME), like
    /// `ip -n NAME`.
    #[arg(long, short = 'n', global = true, value_name = "NAME")]
    pub(crate) netns: Option<String>,
    #[command(subcommand)]
    pub(crate) cmd: Cmd,
}

const EXAMPLES: &str = "Examples:
  xfrmctl caps
  xfrmctl monitor --json
  # move the SAs and policies of 10.1.0.0/24 <-> 10.2.0.0/24, reqid 1, from
  # 192.0.2.1 <-> 192.0.2.2 to an IPv6 outer pair (out, in and fwd):
  xfrmctl migrate --sel-src 10.1.0.0/24 --sel-dst 10.2.0.0/24 --reqid 1 \\
      --old-src 192.0.2.1 --old-dst 192.0.2.2 --new-src 2001:db8::1 --new-dst 2001:db8::2
  # the same, into ESP-in-UDP with new ports (ours 4500, peer 4501):
  xfrmctl migrate ... --encap-sport 4500 --encap-dport 4501
  xfrmctl child install --spec child.json > handle.json
  #   child.json: {\"outer\": {\"local\": \"192.0.2.1\", \"remote\": \"192.0.2.2\"},
  #     \"local_ts\": [\"10.1.0.0/24\", \"10.3.0.0/24\"], \"remote_ts\": \"10.2.0.0/24\",
  #     \"mode\": \"tunnel\", \"reqid\": 1, \"spi_out\": 256, \"spi_in\": 512,
  #     \"crypto_out\": ..., \"crypto_in\": ...}
  xfrmctl child migrate --handle handle.json --new-local 198.51.100.1 --new-remote 198.51.100.2
  xfrmctl child counters --handle handle.json";

#[derive(Debug, Subcommand)]
pub(crate) enum Cmd {
    /// Probe what the running kernel can do (ESP? MIGRATE? BEET? algorithms)
    /// in a private network namespace; exit 0 if XFRM netlink works.
    Caps {
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print kernel XFRM events (SA/policy changes, expire, acquire,
    /// mapping, MIGRATE) until interrupted.
    Monitor {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// XFRM_MSG_MIGRATE: move the SAs and policies of a selector and reqid
    /// from an old outer address pair to a new one (IPv4 or IPv6, either
    /// way), optionally with UDP encapsulation. Addresses and selector are
    /// given from the outbound point of view; with --dir all (default) the
    /// in and fwd policies and the inbound SA move too.
    Migrate(MigrateArgs),
    /// SA database.
    #[command(subcommand)]
    Sa(SaCmd),
    /// Policy database.
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// CHILD_SA pairs (two SAs + policies) as the MOBIKE agent uses them.
    #[command(subcommand)]
    Child(ChildCmd),
    /// XFRM_MSG_ALLOCSPI: reserve an SPI (creates a larval SA); prints it.
    Allocspi {
        #[arg(long)]
        src: IpAddr,
        #[arg(long)]
        dst: IpAddr,
        #[arg(long, default_value_t = 0)]
        reqid: u32,
        #[arg(long, default_value = "tunnel")]
        mode: Mode,
        #[arg(long, default_value_t = 0x100, value_parser = parse_u32)]
        min: u32,
        #[arg(long, default_value_t = 0x0fff_ffff, value_parser = parse_u32)]
        max: u32,
    },
}

#[derive(Debug, Args)]
pub(crate) struct MigrateArgs {
    /// Selector source prefix (outbound view), e.g. 10.1.0.0/24.
    #[arg(long)]
    pub(crate) sel_src: Prefix,
    /// Selector destination prefix (outbound view).
    #[arg(long)]
    pub(crate) sel_dst: Prefix,
    /// Request id of the SAs/templates to move.
    #[arg(long)]
    pub(crate) reqid: u32,
    /// Current outer source (ours).
    #[arg(long)]
    pub(crate) old_src: IpAddr,
    /// Current outer destination (the peer's).
    #[arg(long)]
    pub(crate) old_dst: IpAddr,
    /// New outer source.
    #[arg(long)]
    pub(crate) new_src: IpAddr,
    /// New outer destination.
    #[arg(long)]
    pub(crate) new_dst: IpAddr,
    /// Which policies: out, in, fwd or all (out + in + fwd, fwd skipped in
    /// transport mode).
    #[arg(long, default_value = "all")]
    pub(crate) dir: String,
    #[arg(long, default_value = "esp")]
    pub(crate) proto: Proto,
    #[arg(long, default_value = "tunnel")]
    pub(crate) mode: Mode,
    /// Our UDP port for ESP-in-UDP after the move (with --encap-dport).
    #[arg(long, requires = "encap_dport")]
    pub(crate) encap_sport: Option<u16>,
    /// The peer's UDP port for ESP-in-UDP after the move.
    #[arg(long, requires = "encap_sport")]
    pub(crate) encap_dport: Option<u16>,
    /// Also send XFRMA_KMADDRESS (= the new pair) for listeners.
    #[arg(long)]
    pub(crate) kmaddress: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum SaCmd {
    /// List SAs with counters (`ip -s xfrm state`).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show one SA.
    Get {
        #[arg(long)]
        dst: IpAddr,
        #[arg(long, value_parser = parse_u32)]
        spi: u32,
        #[arg(long, default_value = "esp")]
        proto: Proto,
        #[arg(long)]
        json: bool,
    },
    /// Delete every SA.
    Flush,
}

#[derive(Debug, Subcommand)]
pub(crate) enum PolicyCmd {
    /// List policies.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Delete every policy.
    Flush,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ChildCmd {
    /// Install a pair from a JSON ChildSaSpec (file or - for stdin); prints
    /// the handle JSON to use with the other child commands.
    ///
    /// Traffic selectors: `"selectors": [{"local": "10.1.0.0/24", "remote":
    /// "10.2.0.0/24"}, ...]`, or `"local_ts"` and `"remote_ts"`, each a
    /// prefix or a list of prefixes (every local x remote combination of
    /// one address family). Each pair gets out, in and fwd policies (out
    /// and in in transport mode); the SAs' selector is the pair when there
    /// is one, else a wildcard.
    Install {
        #[arg(long)]
        spec: PathBuf,
    },
    /// Move a pair to a new outer address pair; prints the new handle.
    /// Without --encap-* the pair is plain ESP afterwards (a UDP
    /// encapsulation it had is taken off).
    Migrate {
        #[arg(long)]
        handle: PathBuf,
        #[arg(long)]
        new_local: IpAddr,
        #[arg(long)]
        new_remote: IpAddr,
        /// Our UDP port for ESP-in-UDP after the move.
        #[arg(long, requires = "encap_dport")]
        encap_sport: Option<u16>,
        /// The peer's UDP port.
        #[arg(long, requires = "encap_sport")]
        encap_dport: Option<u16>,
    },
    /// Print both SAs' counters as JSON.
    Counters {
        #[arg(long)]
        handle: PathBuf,
    },
    /// Remove the pair's SAs and policies.
    Delete {
        #[arg(long)]
        handle: PathBuf,
    },
}

pub(crate) fn parse_u32(s: &str) -> Result<u32, String> {
    match s.strip_prefix("0x") {
        Some(h) => u32::from_str_radix(h, 16),
        None => s.parse(),
    }
    .map_err(|e| e.to_string())
}
