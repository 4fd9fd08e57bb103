//! `xfrmctl`: the admin CLI over ipsec-backend for what iproute2 cannot do:
//! a capability probe, XFRM_MSG_MIGRATE, a monitor that shows MIGRATE
//! events, and CHILD_SA pair install/migrate/counters/delete from JSON.
//! It also lists and flushes SAs and policies. It does not speak IKE.

use std::io::Read;
use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use futures::StreamExt;
use ipsec_backend::caps;
use ipsec_backend::monitor::{ALL_GROUPS, XfrmMonitor};
use ipsec_backend::types::{
    Dir, Encap, MigrateSpec, Mode, OuterPair, PairMove, Prefix, Proto, TrafficSelector,
};
use ipsec_backend::{ChildSaBackend, ChildSaHandle, ChildSaSpec, KernelBackend, SaKey, XfrmHandle};

/// Linux XFRM admin tool: what `ip xfrm` cannot do (MIGRATE, a monitor
/// that shows MIGRATE events, a capability probe, CHILD_SA pairs).
///
/// Needs CAP_NET_ADMIN (and CAP_SYS_ADMIN for `caps` and `--netns`).
/// Log filter: XFRMCTL_LOG (e.g. XFRMCTL_LOG=debug).
#[derive(Debug, Parser)]
#[command(name = "xfrmctl", version, after_help = EXAMPLES)]
struct Cli {
    /// Work inside the named network namespace (/run/netns/NAME), like
    /// `ip -n NAME`.
    #[arg(long, short = 'n', global = true, value_name = "NAME")]
    netns: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
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
enum Cmd {
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
struct MigrateArgs {
    /// Selector source prefix (outbound view), e.g. 10.1.0.0/24.
    #[arg(long)]
    sel_src: Prefix,
    /// Selector destination prefix (outbound view).
    #[arg(long)]
    sel_dst: Prefix,
    /// Request id of the SAs/templates to move.
    #[arg(long)]
    reqid: u32,
    /// Current outer source (ours).
    #[arg(long)]
    old_src: IpAddr,
    /// Current outer destination (the peer's).
    #[arg(long)]
    old_dst: IpAddr,
    /// New outer source.
    #[arg(long)]
    new_src: IpAddr,
    /// New outer destination.
    #[arg(long)]
    new_dst: IpAddr,
    /// Which policies: out, in, fwd or all (out + in + fwd, fwd skipped in
    /// transport mode).
    #[arg(long, default_value = "all")]
    dir: String,
    #[arg(long, default_value = "esp")]
    proto: Proto,
    #[arg(long, default_value = "tunnel")]
    mode: Mode,
    /// Our UDP port for ESP-in-UDP after the move (with --encap-dport).
    #[arg(long, requires = "encap_dport")]
    encap_sport: Option<u16>,
    /// The peer's UDP port for ESP-in-UDP after the move.
    #[arg(long, requires = "encap_sport")]
    encap_dport: Option<u16>,
    /// Also send XFRMA_KMADDRESS (= the new pair) for listeners.
    #[arg(long)]
    kmaddress: bool,
}

#[derive(Debug, Subcommand)]
enum SaCmd {
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
enum PolicyCmd {
    /// List policies.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Delete every policy.
    Flush,
}

#[derive(Debug, Subcommand)]
enum ChildCmd {
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

fn parse_u32(s: &str) -> Result<u32, String> {
    match s.strip_prefix("0x") {
        Some(h) => u32::from_str_radix(h, 16),
        None => s.parse(),
    }
    .map_err(|e| e.to_string())
}

fn read_input(p: &PathBuf) -> Result<String> {
    let mut s = String::new();
    if p.as_os_str() == "-" {
        std::io::stdin().read_to_string(&mut s)?;
    } else {
        s = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
    }
    Ok(s)
}

fn read_handle(p: &PathBuf) -> Result<ChildSaHandle> {
    serde_json::from_str(&read_input(p)?).context("parsing the handle JSON")
}

fn encap(sport: Option<u16>, dport: Option<u16>) -> Option<Encap> {
    Some(Encap {
        sport: sport?,
        dport: dport?,
    })
}

fn migrate_specs(a: &MigrateArgs) -> Result<Vec<MigrateSpec>> {
    let dirs: Vec<Dir> = match a.dir.as_str() {
        "all" if a.mode == Mode::Transport => vec![Dir::Out, Dir::In],
        "all" => vec![Dir::Out, Dir::In, Dir::Fwd],
        d => vec![d.parse().map_err(anyhow::Error::msg)?],
    };
    let mv = PairMove {
        selector: TrafficSelector::new(a.sel_src, a.sel_dst),
        from: OuterPair {
            local: a.old_src,
            remote: a.old_dst,
        },
        to: OuterPair {
            local: a.new_src,
            remote: a.new_dst,
        },
        proto: a.proto,
        mode: a.mode,
        reqid: a.reqid,
        encap: encap(a.encap_sport, a.encap_dport),
        kmaddress: a.kmaddress,
        if_id: None,
    };
    Ok(mv.specs(&dirs))
}

fn print_json<T: serde::Serialize>(v: &T) -> Result<()> {
    println!("{}", serde_json::to_string(v)?);
    Ok(())
}

async fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Caps { json } => {
            let c = caps::probe().context("probing the kernel")?;
            if json {
                print_json(&c)?;
            } else {
                print!("{}", c.summary());
            }
            if !c.xfrm_netlink {
                bail!("XFRM netlink does not work on this kernel");
            }
        }
        Cmd::Monitor { json } => {
            let mut s = XfrmMonitor::open(ALL_GROUPS)?.into_stream().boxed();
            while let Some(ev) = s.next().await {
                match ev {
                    Ok(e) if json => print_json(&e)?,
                    Ok(e) => println!("{e:?}"),
                    Err(ipsec_backend::Error::MonitorOverrun) => {
                        eprintln!("xfrmctl: events lost (kernel queue overflow)");
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Cmd::Migrate(a) => {
            let h = XfrmHandle::new()?;
            for m in migrate_specs(&a)? {
                h.migrate(&m).await?;
                tracing::info!(dir = %m.dir, "migrated");
            }
        }
        Cmd::Sa(SaCmd::List { json }) => {
            let h = XfrmHandle::new()?;
            for s in h.state().dump().await? {
                if json {
                    print_json(&s)?;
                } else {
                    println!(
                        "src {} dst {} proto {} spi {:#010x} reqid {} mode {} {} bytes {} packets {}",
                        opt(s.src),
                        opt(s.dst),
                        s.proto,
                        s.spi,
                        s.reqid,
                        s.mode
                            .map(|m| format!("{m:?}").to_lowercase())
                            .unwrap_or_default(),
                        s.algs.join("+"),
                        s.current.bytes,
                        s.current.packets
                    );
                }
            }
        }
        Cmd::Sa(SaCmd::Get {
            dst,
            spi,
            proto,
            json,
        }) => {
            let h = XfrmHandle::new()?;
            let s = h
                .state()
                .get(&SaKey {
                    dst,
                    spi,
                    proto,
                    mark: None,
                })
                .await?;
            if json {
                print_json(&s)?;
            } else {
                println!("{s:#?}");
            }
        }
        Cmd::Sa(SaCmd::Flush) => XfrmHandle::new()?.state().flush(None).await?,
        Cmd::Policy(PolicyCmd::List { json }) => {
            let h = XfrmHandle::new()?;
            for p in h.policy().dump().await? {
                if json {
                    print_json(&p)?;
                } else {
                    let sel = p.selector.map(|s| s.to_string()).unwrap_or_default();
                    let dir = p.dir.map(|d| d.to_string()).unwrap_or_else(|| "?".into());
                    let t: Vec<String> = p
                        .templates
                        .iter()
                        .map(|t| {
                            format!("tmpl {} -> {} reqid {} {:?}", t.src, t.dst, t.reqid, t.mode)
                        })
                        .collect();
                    println!("{sel} dir {dir} priority {} {}", p.priority, t.join(", "));
                }
            }
        }
        Cmd::Policy(PolicyCmd::Flush) => XfrmHandle::new()?.policy().flush().await?,
        Cmd::Child(c) => {
            let b = KernelBackend::new()?;
            match c {
                ChildCmd::Install { spec } => {
                    let spec: ChildSaSpec = serde_json::from_str(&read_input(&spec)?)
                        .context("parsing the spec JSON")?;
                    print_json(&b.install_child_sa(&spec).await?)?;
                }
                ChildCmd::Migrate {
                    handle,
                    new_local,
                    new_remote,
                    encap_sport,
                    encap_dport,
                } => {
                    let h = read_handle(&handle)?;
                    let to = OuterPair {
                        local: new_local,
                        remote: new_remote,
                    };
                    let n = b
                        .migrate_child_sa(&h, to, encap(encap_sport, encap_dport))
                        .await?;
                    print_json(&n)?;
                }
                ChildCmd::Counters { handle } => {
                    print_json(&b.counters(&read_handle(&handle)?).await?)?;
                }
                ChildCmd::Delete { handle } => b.delete_child_sa(&read_handle(&handle)?).await?,
            }
        }
        Cmd::Allocspi {
            src,
            dst,
            reqid,
            mode,
            min,
            max,
        } => {
            let h = XfrmHandle::new()?;
            let spi = h
                .state()
                .alloc_spi(src, dst, Proto::Esp, mode, reqid, min, max)
                .await?;
            println!("{spi:#010x}");
        }
    }
    Ok(())
}

fn opt(a: Option<IpAddr>) -> String {
    a.map(|a| a.to_string()).unwrap_or_else(|| "?".into())
}

fn main() -> Result<()> {
    daemon_support::init_logging("XFRMCTL_LOG", "warn", daemon_support::LogFormat::Text);
    let cli = Cli::parse();
    if let Some(ns) = &cli.netns {
        // Single-threaded from here on: the whole process moves.
        ipsec_backend::netns::enter_netns(&PathBuf::from("/run/netns").join(ns))
            .with_context(|| format!("entering network namespace {ns}"))?;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(cli)).map_err(|e| {
        // Print the whole cause chain (errno + kernel ext-ack included).
        match e.downcast_ref::<ipsec_backend::Error>() {
            Some(x) => anyhow::anyhow!(errchain::chain(x)),
            None => e,
        }
    })
}
