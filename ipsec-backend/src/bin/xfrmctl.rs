//! `xfrmctl`: the admin CLI over ipsec-backend for what iproute2 cannot do:
//! a capability probe, XFRM_MSG_MIGRATE, a monitor that shows MIGRATE
//! events, and CHILD_SA pair install/migrate/counters/delete from JSON.
//! It also lists and flushes SAs and policies. It does not speak IKE.

use std::io::Read;
use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Parser as _;
use futures::StreamExt;
use ipsec_backend::caps;
use ipsec_backend::monitor::{ALL_GROUPS, XfrmMonitor};
use ipsec_backend::types::{
    Dir, Encap, MigrateSpec, Mode, OuterPair, PairMove, Proto, TrafficSelector,
};
use ipsec_backend::{ChildSaBackend, ChildSaHandle, ChildSaSpec, KernelBackend, SaKey, XfrmHandle};

#[path = "xfrmctl/cli.rs"]
mod cli;

use crate::cli::{ChildCmd, Cli, Cmd, MigrateArgs, PolicyCmd, SaCmd};

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
