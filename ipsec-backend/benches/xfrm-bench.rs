//! `xfrm-bench`: ipsec-backend's benchmark, meant to run as root on a kernel
//! with ESP (the VM of `tests/vm/run.sh ipsec-bench`). It creates two
//! network namespaces joined by two veth pairs and measures:
//!
//! 1. Moving N CHILD_SA pairs (N = 1, 100, 1000 by default) between the two
//!    outer address pairs with XFRM_MSG_MIGRATE (3 calls per pair and side)
//!    against the delete-and-re-add method strongSwan uses without MIGRATE
//!    (per SA: GETSA, DELSA, NEWSA at the new addresses; per policy:
//!    UPDPOLICY), same SAs, same run. Both sides move in parallel. A ping
//!    every 10 ms through pair 0 counts the packets lost during each move.
//! 2. Dumping 10,000 SAs: wall time and peak memory of ipsec-backend
//!    (streaming and collecting) and of `ip xfrm state list`.
//!
//! It does not assert anything; the figures go to docs/benchmarks.md.
//! A `[[bench]]` program (harness = false) so that it can use the test
//! harness's namespaces: `cargo bench -p ipsec-backend --bench xfrm-bench
//! -- ARGS` on such a kernel, or in the VM as above.

use std::net::IpAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use ipsec_backend::types::{Crypto, OuterPair, Prefix};
use ipsec_backend::{
    ChildSaBackend, ChildSaHandle, ChildSaSpec, KernelBackend, SaKey, SelectorPair,
};
use system_tests::netns::{self, Netns};

/// Benchmark MIGRATE vs delete-and-re-add, and a 10k-SA dump. Needs root
/// and a kernel with ESP (run it in the VM: tests/vm/run.sh ipsec-bench).
#[derive(Debug, Parser)]
struct Args {
    /// CHILD_SA pair counts to move.
    #[arg(long, value_delimiter = ',', default_value = "1,100,1000")]
    pairs: Vec<usize>,
    /// SAs for the dump benchmark (0 skips it).
    #[arg(long, default_value_t = 10_000)]
    dump_sas: usize,
    /// Quiet time before and after each move, in ms (ping keeps running).
    #[arg(long, default_value_t = 1000)]
    settle_ms: u64,
    /// Passed by `cargo bench` to every benchmark program; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// Namespaces L and R joined by two veth pairs (192.0.2.0/24 on
/// xbl0/xbr0, 198.51.100.0/24 on xbl1/xbr1), each with an inner address on
/// a dummy `d0` (10.1.0.1/24 in L, 10.2.0.1/24 in R) routed over xbl0/xbr0.
fn setup() -> (Netns, Netns) {
    let (l, r) = (Netns::new("xbL"), Netns::new("xbR"));
    for (i, (a, b)) in [
        ("192.0.2.1/24", "192.0.2.2/24"),
        ("198.51.100.1/24", "198.51.100.2/24"),
    ]
    .iter()
    .enumerate()
    {
        let (vl, vr) = (format!("xbl{i}"), format!("xbr{i}"));
        netns::veth(&l, &vl, &r, &vr);
        l.addr_add(&vl, a, &[]);
        r.addr_add(&vr, b, &[]);
        l.up(&vl);
        r.up(&vr);
    }
    for (ns, addr) in [(&l, "10.1.0.1/24"), (&r, "10.2.0.1/24")] {
        ns.ip(&["link", "add", "d0", "type", "dummy"]);
        ns.addr_add("d0", addr, &[]);
        ns.up("d0");
    }
    // Inner routes only; the SA's outer address decides the outer path.
    l.ip_line("route add 10.2.0.0/24 dev xbl0 src 10.1.0.1");
    r.ip_line("route add 10.1.0.0/24 dev xbr0 src 10.2.0.1");
    (l, r)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))
}

const P1: (&str, &str) = ("192.0.2.1", "192.0.2.2");
const P2: (&str, &str) = ("198.51.100.1", "198.51.100.2");

/// Pair `i` as seen from L (`left`) or R.
fn spec(i: usize, left: bool) -> ChildSaSpec {
    let (l_ts, r_ts): (Prefix, Prefix) = if i == 0 {
        (
            "10.1.0.0/24"
                .parse()
                .unwrap_or(Prefix::host(ip("10.1.0.0"))),
            "10.2.0.0/24"
                .parse()
                .unwrap_or(Prefix::host(ip("10.2.0.0"))),
        )
    } else {
        let (hi, lo) = ((i >> 8) as u8, (i & 0xff) as u8);
        (
            Prefix::host(IpAddr::from([10, 128, hi, lo])),
            Prefix::host(IpAddr::from([10, 129, hi, lo])),
        )
    };
    let spi_lr = 0x10000 + i as u32;
    let spi_rl = 0x20000 + i as u32;
    let key = |b: u8| Crypto::aes_gcm(&[b; 20]);
    let (outer, lts, rts, so, si) = if left {
        (
            OuterPair {
                local: ip(P1.0),
                remote: ip(P1.1),
            },
            l_ts,
            r_ts,
            spi_lr,
            spi_rl,
        )
    } else {
        (
            OuterPair {
                local: ip(P1.1),
                remote: ip(P1.0),
            },
            r_ts,
            l_ts,
            spi_rl,
            spi_lr,
        )
    };
    ChildSaSpec::tunnel(
        outer,
        vec![SelectorPair::new(lts, rts)],
        i as u32 + 1,
        (so, si),
        (key(if left { 1 } else { 2 }), key(if left { 2 } else { 1 })),
    )
}

fn pair(p: (&str, &str), left: bool) -> OuterPair {
    if left {
        OuterPair {
            local: ip(p.0),
            remote: ip(p.1),
        }
    } else {
        OuterPair {
            local: ip(p.1),
            remote: ip(p.0),
        }
    }
}

struct Ping(Child);

impl Ping {
    fn start(ns: &Netns) -> Result<Self> {
        let c = ns
            .command("ping")
            .args([
                "-q", "-n", "-i", "0.01", "-W", "1", "-I", "10.1.0.1", "10.2.0.1",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting ping")?;
        Ok(Self(c))
    }
    /// Stop and return (transmitted, received).
    fn stop(self) -> Result<(u64, u64)> {
        let pid = libc::pid_t::try_from(self.0.id()).context("pid")?;
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(pid, libc::SIGINT) };
        let out = self.0.wait_with_output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .find(|l| l.contains("packets transmitted"))
            .with_context(|| format!("no ping summary in {text:?}"))?;
        let nums: Vec<u64> = line
            .split(|c: char| !c.is_ascii_digit())
            .filter(|s| !s.is_empty())
            .take(2)
            .filter_map(|s| s.parse().ok())
            .collect();
        match nums.as_slice() {
            [t, r] => Ok((*t, *r)),
            _ => bail!("cannot parse {line:?}"),
        }
    }
}

/// Move one side's pairs with MIGRATE; returns the new handles.
async fn move_migrate(
    b: &KernelBackend,
    hs: Vec<ChildSaHandle>,
    to: OuterPair,
) -> Result<(Vec<ChildSaHandle>, Duration)> {
    let t = Instant::now();
    let mut out = Vec::with_capacity(hs.len());
    for h in &hs {
        out.push(b.migrate_child_sa(h, to, None).await?);
    }
    Ok((out, t.elapsed()))
}

/// Move one side's pairs the strongSwan way without MIGRATE: per SA read it,
/// delete it, add it at the new addresses; then update the policies.
async fn move_readd(
    b: &KernelBackend,
    specs: &[ChildSaSpec],
    from: OuterPair,
    to: OuterPair,
) -> Result<Duration> {
    let t = Instant::now();
    let st = b.handle().state();
    let pol = b.handle().policy();
    for s in specs {
        let mut at_new = s.clone();
        at_new.outer = to;
        let mut at_old = s.clone();
        at_old.outer = from;
        for (old, new) in at_old.sa_specs().iter().zip(at_new.sa_specs().iter()) {
            let key = SaKey::of(old);
            st.get(&key).await?;
            st.delete(&key).await?;
            st.add(new).await?;
        }
        for p in at_new.policy_specs(to) {
            pol.update(&p).await?;
        }
    }
    Ok(t.elapsed())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn bench_moves(args: &Args, l: &Netns, r: &Netns) -> Result<()> {
    let bl = KernelBackend::in_netns(l.path())?;
    let br = KernelBackend::in_netns(r.path())?;
    println!(
        "| pairs | MIGRATE L / R (ms) | re-add L / R (ms) | re-add / MIGRATE | pings lost MIGRATE | pings lost re-add |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    for &n in &args.pairs {
        let sl: Vec<ChildSaSpec> = (0..n).map(|i| spec(i, true)).collect();
        let sr: Vec<ChildSaSpec> = (0..n).map(|i| spec(i, false)).collect();
        let mut hl = Vec::new();
        let mut hr = Vec::new();
        for (a, b) in sl.iter().zip(&sr) {
            hl.push(bl.install_child_sa(a).await?);
            hr.push(br.install_child_sa(b).await?);
        }
        let settle = Duration::from_millis(args.settle_ms);

        // A: MIGRATE pair 1 -> pair 2, both sides in parallel.
        let ping = Ping::start(l)?;
        tokio::time::sleep(settle).await;
        let (bl2, br2) = (bl.clone(), br.clone());
        let ja = tokio::spawn(async move { move_migrate(&bl2, hl, pair(P2, true)).await });
        let jb = tokio::spawn(async move { move_migrate(&br2, hr, pair(P2, false)).await });
        let (ra, rb) = (ja.await??, jb.await??);
        tokio::time::sleep(settle).await;
        let (ta, ra_rx) = ping.stop()?;
        let lost_a = ta.saturating_sub(ra_rx);
        let (mig_l, mig_r) = (ra.1, rb.1);

        // B: delete-and-re-add pair 2 -> pair 1, same SAs, same run.
        let ping = Ping::start(l)?;
        tokio::time::sleep(settle).await;
        let (bl2, br2, sl2, sr2) = (bl.clone(), br.clone(), sl.clone(), sr.clone());
        let ja =
            tokio::spawn(
                async move { move_readd(&bl2, &sl2, pair(P2, true), pair(P1, true)).await },
            );
        let jb =
            tokio::spawn(
                async move { move_readd(&br2, &sr2, pair(P2, false), pair(P1, false)).await },
            );
        let (rea_l, rea_r) = (ja.await??, jb.await??);
        tokio::time::sleep(settle).await;
        let (tb, rb_rx) = ping.stop()?;
        let lost_b = tb.saturating_sub(rb_rx);

        let ratio = (ms(rea_l) + ms(rea_r)) / (ms(mig_l) + ms(mig_r)).max(1e-9);
        println!(
            "| {n} | {:.1} / {:.1} | {:.1} / {:.1} | {ratio:.2}x | {lost_a} of {ta} | {lost_b} of {tb} |",
            ms(mig_l),
            ms(mig_r),
            ms(rea_l),
            ms(rea_r)
        );
        for b in [&bl, &br] {
            b.handle().policy().flush().await?;
            b.handle().state().flush(None).await?;
        }
    }
    Ok(())
}

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to clear_refs).
fn reset_hwm() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

async fn bench_dump(n: usize, l: &Netns) -> Result<()> {
    let b = KernelBackend::in_netns(l.path())?;
    let st = b.handle().state();
    let t = Instant::now();
    for i in 0..n {
        let s = spec(i, true).sa_specs();
        st.add(&s[0]).await?;
    }
    println!("\ninstalled {n} SAs in {:.0} ms", ms(t.elapsed()));
    println!("\n| dump of {n} SAs | wall time (ms) | peak memory |");
    println!("|---|---:|---:|");
    for round in [
        "streaming (`dump_with`)",
        "collecting (`dump` -> Vec<SaInfo>)",
    ] {
        reset_hwm();
        let rss0 = status_kib("VmRSS:");
        let t = Instant::now();
        let count = if round.starts_with("streaming") {
            let mut c = 0usize;
            st.dump_with(|_| c += 1).await?;
            c
        } else {
            st.dump().await?.len()
        };
        let el = t.elapsed();
        let hwm = status_kib("VmHWM:");
        if count != n {
            bail!("dump returned {count} SAs, expected {n}");
        }
        println!(
            "| ipsec-backend, {round} | {:.0} | +{} KiB over RSS {} KiB |",
            ms(el),
            hwm.saturating_sub(rss0),
            rss0
        );
    }
    let t = Instant::now();
    let out = Command::new("ip")
        .args(["-n", l.name(), "xfrm", "state", "list"])
        .stdout(Stdio::null())
        .status()?;
    let el = t.elapsed();
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage fills the struct we own.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    println!(
        "| iproute2 `ip xfrm state list > /dev/null` ({out}) | {:.0} | max RSS {} KiB (largest child so far) |",
        ms(el),
        ru.ru_maxrss
    );
    st.flush(None).await?;
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = Args::parse();
    let (l, r) = setup();
    println!(
        "kernel {}, {} CPUs",
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim(),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    if !args.pairs.is_empty() {
        bench_moves(&args, &l, &r).await?;
    }
    if args.dump_sas > 0 {
        bench_dump(args.dump_sas, &l).await?;
    }
    Ok(())
}
