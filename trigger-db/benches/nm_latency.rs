//! NetworkManager signal to subscriber: the latency from NetworkManager's
//! D-Bus signal (an access point's Strength PropertiesChanged) to a
//! subscriber holding the LINK_PARAMETERS_REPORT the daemon made of it, with
//! the signal timestamped by a bus monitor in the same run.
//!
//! Per durability the bench starts a private dbus-daemon and
//! python3-dbusmock's NetworkManager template on it (the `nm_support`
//! harness of the tests), the release daemon with its NetworkManager source
//! on that bus (rtnetlink off), a Wi-Fi device `wlan0` associated with an
//! access point, one Subscribe stream (filter source networkmanager), and a
//! bus monitor: a second D-Bus connection of this process that calls
//! org.freedesktop.DBus.Monitoring.BecomeMonitor with a match rule for
//! PropertiesChanged of that access point. A monitor rather than a plain
//! match-rule subscriber because the bus hands a monitor its copy of each
//! message as it routes it, passively: it is not a recipient the daemon's
//! delivery could wait behind, it cannot change what the daemon receives,
//! and it is what `dbus-monitor` is. The monitor and the subscriber each run
//! on a thread of their own (a current-thread runtime each, so a stamp does
//! not wait behind other tasks) and stamp a message the moment their stream
//! yields it; both stamps are CLOCK_MONOTONIC (`Instant`) in this one
//! process. Then,
//! one change at a time, the bench sets the access point's Strength through
//! the mock and waits for both the monitor's copy and the subscriber's
//! trigger, which must carry the value just set (matched by sequence and
//! value; consecutive values differ). Reported: p50/p99/max of subscriber
//! receipt - monitor receipt (kept signed: a negative one means the
//! monitor thread was scheduled late, and they are counted), and, for
//! context, the mock's own time from the SetProperty call to the monitor
//! and a one-row commit on plain SQLite with the daemon's settings on the
//! same disk (the durability floor).
//!
//! The daemon runs with its default durability (fsync per commit; live
//! delivery does not wait for the commit, see `hub`); the
//! bench also runs with `[store] durability = "normal"` (no fsync per commit) to
//! show what the fsync costs. Not measured: real NetworkManager's own
//! latency, bursts (one change in flight at a time), more subscribers (see
//! the notify bench). Touches no host interface or bus; every process is
//! stopped when its guard drops, also on failure.
//!
//! Run: `cargo bench -p trigger-db --bench nm_latency` (env
//! `NM_LATENCY_ITERS`, default 300; `NM_LATENCY_DURABILITY=full`, `normal`
//! or `both`, default both). Needs dbus-daemon (dbus) and python3-dbusmock.

#[path = "../tests/nm_support/mod.rs"]
mod nm_support;
mod support;

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use futures::StreamExt as _;
use nm_support::{AP_IFACE, Bus, NmMock, WIRELESS};
use support::*;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use trigger_proto::v1::{self as pb, subscribe_response::Item};
use zbus::{ObjectPath, OwnedVariant, Variant};

const WARMUP: usize = 10;
const PROPERTIES: &str = "org.freedesktop.DBus.Properties";
const WAIT: Duration = Duration::from_secs(10);
/// The access point's Strength when it is associated.
const INITIAL: u8 = 50;

/// What the subscriber task saw, stamped on receipt.
enum Seen {
    Report(f64, Instant),
    Other(i32),
}

struct Figures {
    /// Subscriber receipt - monitor receipt, ms.
    added: Vec<f64>,
    /// Monitor receipt - SetProperty call, ms.
    mock: Vec<f64>,
    /// A one-row commit on plain SQLite, same settings and disk, ms.
    floor: Vec<f64>,
}

/// `to - from` in ms; negative if `to` came first.
fn signed_ms(from: Instant, to: Instant) -> f64 {
    if to >= from {
        (to - from).as_secs_f64() * 1e3
    } else {
        -((from - to).as_secs_f64() * 1e3)
    }
}

/// Runs `task` on a thread of its own with a current-thread runtime, so
/// that its stamps do not wait behind other tasks; it ends when `stop` is
/// cancelled (or the task ends).
fn on_thread(
    name: &str,
    stop: CancellationToken,
    task: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            rt.block_on(async move {
                tokio::select! {
                    () = stop.cancelled() => {}
                    () = task => {}
                }
            });
        })?;
    Ok(())
}

/// The subscriber: one Subscribe stream (source networkmanager, from the
/// first stored trigger on), each trigger stamped as the stream yields it.
async fn subscriber(socket: std::path::PathBuf, tx: mpsc::UnboundedSender<Seen>) {
    let stream = async {
        let mut client = trigger_client::connect(&socket).await?;
        let s = client
            .subscribe(pb::SubscribeRequest {
                filter: Some(pb::TriggerFilter {
                    sources: vec![pb::Source::Networkmanager as i32],
                    ..Default::default()
                }),
                // Nothing the source stores before the stream is set up is
                // missed.
                resume_after_id: Some(0),
                snapshot: false,
            })
            .await?
            .into_inner();
        anyhow::Ok(s)
    };
    let mut stream = match stream.await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("subscriber: {e:#}");
            return;
        }
    };
    while let Ok(Some(m)) = stream.message().await {
        let at = Instant::now();
        let Some(Item::Trigger(t)) = m.item else {
            continue;
        };
        let ev = match &t.detail {
            Some(pb::trigger::Detail::ParametersReport(r)) if r.parameters.len() == 1 => {
                Seen::Report(r.parameters[0].value, at)
            }
            _ => Seen::Other(t.r#type),
        };
        if tx.send(ev).is_err() {
            break;
        }
    }
}

/// The bus monitor: a connection that becomes a monitor for the access
/// point's PropertiesChanged and stamps each as its stream yields it. Its
/// stream exists before BecomeMonitor, so nothing after that is missed.
async fn monitor(
    address: String,
    ap: String,
    ready: tokio::sync::oneshot::Sender<anyhow::Result<()>>,
    tx: mpsc::UnboundedSender<(u8, Instant)>,
) {
    let setup = async {
        let mon = zbus::connection::Builder::address(address.as_str())
            .build()
            .await
            .context("connect the monitor")?;
        let stream = zbus::MessageStream::from(&mon);
        let rule = zbus::MatchRule::builder()
            .msg_type(zbus::message::Type::Signal)
            .interface(PROPERTIES)
            .member("PropertiesChanged")
            .path(ap.as_str())
            .build()?;
        zbus::fdo::MonitoringProxy::new(&mon)
            .await?
            .become_monitor(&[rule], 0)
            .await
            .context("BecomeMonitor")?;
        anyhow::Ok((mon, stream))
    };
    let (_mon, mut stream) = match setup.await {
        Ok(m) => {
            let _ = ready.send(Ok(()));
            m
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    while let Some(Ok(msg)) = stream.next().await {
        let at = Instant::now();
        let h = msg.header();
        let ours = h.message_type() == zbus::message::Type::Signal
            && h.member()
                .is_some_and(|m| m.as_str() == "PropertiesChanged")
            && h.path().is_some_and(|p| p.as_str() == ap);
        if ours
            && let Some(v) = strength_of(&msg)
            && tx.send((v, at)).is_err()
        {
            break;
        }
    }
}

async fn set(
    conn: &zbus::Connection,
    path: &str,
    iface: &str,
    name: &str,
    value: Variant<'_>,
) -> anyhow::Result<()> {
    nm_support::set_property(conn, path, iface, name, value)
        .await
        .with_context(|| format!("SetProperty {name} on {path}"))
}

/// The next subscriber event, within [`WAIT`].
async fn seen(rx: &mut mpsc::UnboundedReceiver<Seen>) -> anyhow::Result<Seen> {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .context("subscriber: nothing within 10 s")?
        .context("subscriber stream ended")
}

/// Reads subscriber events up to a trigger of type `ty`.
async fn until(rx: &mut mpsc::UnboundedReceiver<Seen>, ty: pb::TriggerType) -> anyhow::Result<()> {
    loop {
        let ev = seen(rx)
            .await
            .with_context(|| format!("waiting for {ty:?}"))?;
        if matches!(ev, Seen::Other(t) if t == ty as i32) {
            return Ok(());
        }
    }
}

/// Reads subscriber events up to a report; fails on another report value.
async fn report(rx: &mut mpsc::UnboundedReceiver<Seen>, want: u8) -> anyhow::Result<Instant> {
    loop {
        if let Seen::Report(v, at) = seen(rx).await? {
            ensure!(v == f64::from(want), "subscriber got {v}, expected {want}");
            return Ok(at);
        }
    }
}

/// The Strength a PropertiesChanged body carries, if any.
fn strength_of(msg: &zbus::Message) -> Option<u8> {
    let (_, changed, _): (
        String,
        std::collections::HashMap<String, OwnedVariant>,
        Vec<String>,
    ) = msg.body().deserialize().ok()?;
    u8::try_from(changed.get("Strength")?).ok()
}

async fn run(iters: usize, durability: &str) -> anyhow::Result<Figures> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    let bus = Bus::start(dir);
    let _mock = NmMock::start(&bus, dir);
    let daemon = start_daemon(
        dir,
        None,
        &format!(
            "{NO_NETLINK}\n[sources.networkmanager]\nbus_address = \"{}\"\n\n\
             [store]\ndurability = \"{durability}\"\n",
            bus.address
        ),
    );
    let (sub_tx, mut sub_rx) = mpsc::unbounded_channel();
    let stop = CancellationToken::new();
    // Cancels both stamping threads when run returns, also on error.
    let _stop = stop.clone().drop_guard();
    on_thread(
        "nm-subscriber",
        stop.clone(),
        subscriber(daemon.socket.clone(), sub_tx),
    )?;

    // The source has read NetworkManager's state (a resync marker).
    until(&mut sub_rx, pb::TriggerType::Resync).await?;

    // wlan0, activated, then associated with an access point.
    let conn = zbus::connection::Builder::address(bus.address.as_str())
        .build()
        .await
        .context("connect to the private bus")?;
    let (dev, ap) = nm_support::add_active_wifi(&conn, "wlan0", INITIAL)
        .await
        .context("Wi-Fi device on the mock")?;
    until(&mut sub_rx, pb::TriggerType::ConnEstablished).await?;
    set(
        &conn,
        &dev,
        WIRELESS,
        "ActiveAccessPoint",
        Variant::from(ObjectPath::try_from(ap.as_str())?),
    )
    .await?;
    report(&mut sub_rx, INITIAL)
        .await
        .context("waiting for the association's report")?;

    let (mon_tx, mut mon_rx) = mpsc::unbounded_channel();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    on_thread(
        "nm-monitor",
        stop.clone(),
        monitor(bus.address.clone(), ap.clone(), ready_tx, mon_tx),
    )?;
    ready_rx
        .await
        .context("the monitor thread ended")?
        .context("becoming a bus monitor")?;

    // The durability floor: a one-row commit on plain SQLite with the
    // daemon's settings for this durability, on the same disk, timed once
    // per change while nothing else of the bench runs.
    let floor_db = Sqlite::open(&dir.join("floor.db"))?;
    floor_db.exec(&daemon_pragmas(&durability.to_uppercase()))?;
    floor_db.exec(SCHEMA)?;
    let mut floor_ins = floor_db.prepare(INSERT)?;
    let floor_row = Row::of(&wire_trigger(0, 1, trigger_db::model::Timestamp::now()))?;

    let mut f = Figures {
        added: Vec::with_capacity(iters),
        mock: Vec::with_capacity(iters),
        floor: Vec::with_capacity(iters),
    };
    for i in 0..WARMUP + iters {
        // 37 is prime to 101: consecutive values differ and are in 0..=100.
        let v = u8::try_from((i + 1) * 37 % 101)?;
        let sent = Instant::now();
        set(&conn, &ap, AP_IFACE, "Strength", Variant::from(v)).await?;
        let (mv, mon_at) = tokio::time::timeout(WAIT, mon_rx.recv())
            .await
            .context("monitor: nothing within 10 s")?
            .context("monitor stream ended")?;
        ensure!(mv == v, "monitor saw {mv}, expected {v}");
        let sub_at = report(&mut sub_rx, v)
            .await
            .with_context(|| format!("change {i}: the report of {v}"))?;
        let c0 = Instant::now();
        floor_db.insert_tx(&mut floor_ins, std::slice::from_ref(&floor_row))?;
        let commit = c0.elapsed();
        if i >= WARMUP {
            f.added.push(signed_ms(mon_at, sub_at));
            f.mock.push(signed_ms(sent, mon_at));
            f.floor.push(commit.as_secs_f64() * 1e3);
        }
    }
    let log = daemon.log_text();
    ensure!(!log.contains("panicked"), "daemon: {log}");
    Ok(f)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let iters: usize = std::env::var("NM_LATENCY_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300)
        .clamp(1, 10_000);
    let which = std::env::var("NM_LATENCY_DURABILITY").unwrap_or_else(|_| "both".into());
    let durabilities: &[&str] = match which.as_str() {
        "both" => &["full", "normal"],
        "full" => &["full"],
        "normal" => &["normal"],
        _ => bail!("NM_LATENCY_DURABILITY must be full, normal or both"),
    };
    let tmp = tempfile::tempdir()?;
    println!(
        "nm_latency: dbusmock NetworkManager AP Strength PropertiesChanged (bus monitor) -> \
         subscriber holding LINK_PARAMETERS_REPORT; {iters} changes (+{WARMUP} warm-up), \
         one in flight"
    );
    println!("machine: {}", machine(tmp.path()));
    println!(
        "{:>10} | {:>33} | {:>8} | {:>23} | {:>23}",
        "durability",
        "signal->subscriber p50/p99/max ms",
        "negative",
        "SetProperty->signal p50/p99 ms",
        "SQLite 1-row commit p50/p99 ms"
    );
    for d in durabilities {
        let mut f = run(iters, d).await?;
        // A negative difference: the monitor's stamp came after the
        // subscriber's (the monitor thread was not scheduled in time).
        let negative = f.added.iter().filter(|v| **v < 0.0).count();
        let (p50, p99, max) = summary(&mut f.added);
        let (m50, m99, _) = summary(&mut f.mock);
        let (c50, c99, _) = summary(&mut f.floor);
        println!(
            "{d:>10} | {p50:>9.3} {p99:>11.3} {max:>11.3} | {negative:>8} | {m50:>11.3} {m99:>11.3} | {c50:>11.3} {c99:>11.3}"
        );
        if *d == "full" {
            println!(
                "target (default durability): p50 <= 2 ms: {}",
                if p50 <= 2.0 { "met" } else { "MISSED" }
            );
        }
    }
    Ok(())
}
