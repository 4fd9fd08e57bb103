//! The tokio driver around the sans-IO [`Endpoint`]: UDP sockets on ports
//! 500 and 4500 of every configured local address, the engine's timer,
//! and a shutdown signal that deletes all SAs before exiting.
//!
//! Kernel actions go through [`Kernel`] (ipsec-backend's XFRM with
//! `backend = "xfrm"`, only logged with `"none"`); a kernel error is logged
//! with its SA and never stops the agent, and a CHILD_SA the kernel refused
//! to install is deleted with the peer. With `install_routes` the remote
//! selectors of tunnel-mode CHILD_SAs are routed as `crate::routes` says.
//! The kernel's XFRM_MSG_EXPIRE events for our SAs (their byte, packet and
//! age limits) become [`Command::ChildSaExpired`], its XFRM_MSG_MAPPING
//! events (a NAT-T peer's new address or port) [`Command::NatMapping`].
//! The mobility manager follows the host's links through trigger-db or
//! its own rtnetlink watch and moves MOBIKE IKE SAs ([`mobility`]); its
//! actions are handed to the engine in the same loop turn as the event
//! that caused them.
//! The control socket's server (`crate::control::server`) forwards its
//! calls over a bounded channel; the loop answers them between two engine
//! steps as [`commands`] says. Sockets bind to specific addresses (or the
//! wildcards, for connections on any local address) and the engine is
//! always told the local address of a datagram.

use std::{
    collections::HashMap,
    future::Future,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};

use daemon_support::notify::Notifier;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

mod commands;
pub mod mobility;

use crate::{
    config_file::{AgentConfig, Backend},
    control::ControlRequest,
    engine::{Command, CommandError, Endpoint, Event, KernelAction},
    kernel::{Kernel, KernelEvent, KernelOp},
    routes::Routes,
    udp::{Datagram, IkeSocket, wildcard_of},
    vips::VirtualIps,
};
use mobility::{Input, Mobility};

/// Datagrams waiting between the socket tasks and the engine.
const QUEUE: usize = 1024;
/// Rounds of engine output per loop turn (see `flush`).
const FLUSH_ROUNDS: usize = 16;
/// How long a shutdown waits for the peers to answer our Deletes.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Why the runtime stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// A socket could not be bound.
    #[error("cannot bind UDP {addr}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The XFRM netlink socket could not be opened (`backend = "xfrm"`).
    #[error("cannot open the kernel backend")]
    Kernel(#[source] ipsec_backend::Error),
    /// The engine refused a start-up command.
    #[error("cannot start connection")]
    Command(#[from] CommandError),
    /// The rtnetlink socket for tunnel routes could not be opened.
    #[error("cannot set up tunnel routes")]
    Routes(#[source] crate::routes::RouteError),
    /// The rtnetlink socket for virtual IPs could not be opened.
    #[error("cannot set up virtual IPs")]
    VirtualIps(#[source] crate::vips::VipError),
    /// The control socket could not be set up.
    #[error(transparent)]
    Control(#[from] crate::control::ControlError),
}

/// Runs the agent until `shutdown` completes, then deletes every IKE SA
/// (waiting up to a few seconds for the answers) and returns.
/// At start it removes the kernel SAs, policies and routes a killed run
/// left behind ([`remove_leftovers`]). Each
/// configuration from `reloads` (SIGHUP) replaces the running one as
/// [`Endpoint::reload`] says.
pub async fn run(
    config: AgentConfig,
    shutdown: impl Future<Output = ()>,
    mut reloads: mpsc::Receiver<AgentConfig>,
) -> Result<(), RuntimeError> {
    let nat_t = config.endpoint.nat_t_port;
    let mut running = config.clone();
    let mut ep = Endpoint::new(config.endpoint)?;
    let mut kernel = match config.backend {
        Backend::None => Kernel::none(),
        Backend::Xfrm => Kernel::xfrm().map_err(RuntimeError::Kernel)?,
    };
    let mut routes = match config.routes {
        Some(c) => Some(Routes::new(c).map_err(RuntimeError::Routes)?),
        None => None,
    };
    // What a killed run left in the kernel goes before this run adds
    // anything (charon does the same with its own state).
    remove_leftovers(&kernel, routes.as_ref()).await;
    let mut vips = match &config.virtual_ip_interface {
        Some(i) => Some(VirtualIps::new(i).map_err(RuntimeError::VirtualIps)?),
        None => None,
    };
    let mut expires = kernel_expires(&kernel);
    let mut mobility = Mobility::start(config.mobility.clone(), config.backend == Backend::Xfrm);
    let (tx, mut rx) = mpsc::channel::<Datagram>(QUEUE);
    let mut sockets: HashMap<SocketAddr, Arc<IkeSocket>> = HashMap::new();
    open_sockets(&running, nat_t, &tx, &mut sockets)?;
    // Calls from the control socket; the sender stays alive (and the
    // arm below pending) even without a socket.
    let (ctl_tx, mut ctl_rx) = mpsc::channel::<ControlRequest>(crate::control::QUEUE);
    let control = match &config.control_socket {
        Some(path) => {
            let server = crate::control::server::serve(path, ctl_tx.clone()).await?;
            info!(socket = %path.display(), "control socket");
            Some((server, path.clone()))
        }
        None => None,
    };
    for name in &config.initiate {
        match commands::initiate(&mut ep, Instant::now(), name) {
            Ok(()) => {}
            // No route towards the peer yet (booting without a network):
            // the engine tries again as the connection's keyingtries allow.
            Err(e @ CommandError::NoAddresses(_)) => warn!(error = %e, "cannot initiate now"),
            Err(e) => return Err(e.into()),
        }
    }
    // systemd (Type=notify): ready once the sockets are up and the
    // configured connections started; then a status line (and the
    // watchdog's ping, with WatchdogSec) from this loop.
    let notifier = Notifier::from_env();
    notifier.ready(&status_line(&ep, &mobility));
    let mut status_tick = tokio::time::interval(
        notifier
            .watchdog_interval()
            .map_or(STATUS_EVERY, |w| w.min(STATUS_EVERY)),
    );
    status_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    let mut stop_at: Option<Instant> = None;
    loop {
        // What the last input (or the start-up) queued goes out first.
        flush(
            &mut ep,
            &mut kernel,
            &mut routes,
            &mut vips,
            &sockets,
            &mut mobility,
        )
        .await;
        if let Some(t) = stop_at
            && (ep.ike_sa_count() == 0 || Instant::now() >= t)
        {
            break;
        }
        let mobility_wake = mobility
            .as_ref()
            .and_then(|m| m.poll_timeout(Instant::now()));
        let wake = [ep.poll_timeout(), stop_at, mobility_wake]
            .into_iter()
            .flatten()
            .min();
        let sleep = async {
            match wake {
                Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            d = rx.recv() => match d {
                Some((local, remote, data)) => ep.handle_datagram(Instant::now(), local, remote, &data),
                None => break,
            },
            () = sleep => {
                ep.handle_timeout(Instant::now());
                if let Some(m) = mobility.as_mut().filter(|m| m.wants_counters()) {
                    let counters = kernel.counters().await;
                    m.on_counters(&ep, &counters, Instant::now());
                }
            }
            input = next_input(&mut mobility) => {
                if let Some(m) = mobility.as_mut() {
                    m.on_input(input, Instant::now());
                    // What else is queued goes in before the evaluation.
                    for _ in 1..mobility::FEED_BURST {
                        let Some(input) = m.try_next() else { break };
                        m.on_input(input, Instant::now());
                    }
                }
            }
            Some(ev) = expires.recv() => match ev {
                Ok(ev) => {
                    if let Some((inbound_spi, hard)) = kernel.expired_child(&ev) {
                        let cmd = Command::ChildSaExpired { inbound_spi, hard };
                        if let Err(e) = ep.handle_command(Instant::now(), cmd) {
                            debug!(error = %e, hard, "kernel limit of a CHILD_SA that is gone");
                        }
                    }
                    if let Some((inbound_spi, remote)) = kernel.mapped_child(&ev) {
                        let cmd = Command::NatMapping { inbound_spi, remote };
                        if let Err(e) = ep.handle_command(Instant::now(), cmd) {
                            debug!(error = %e, %remote, "NAT mapping of a CHILD_SA that is gone");
                        }
                    } else if matches!(ev, ipsec_backend::XfrmEvent::Mapping { .. }) {
                        debug!(event = ?ev, "NAT mapping of an SA that is not one of ours (or has no new address)");
                    }
                }
                Err(ipsec_backend::Error::MonitorOverrun) => {
                    // Expires may be among the lost events: read the SAs
                    // again and act on what expired or vanished meanwhile.
                    let expired = kernel.resync().await;
                    warn!(found = expired.len(),
                          "kernel XFRM events lost (socket overrun); re-read the CHILD_SAs (a peer's NAT mapping change waits for its next message)");
                    for (inbound_spi, hard) in expired {
                        let cmd = Command::ChildSaExpired { inbound_spi, hard };
                        if let Err(e) = ep.handle_command(Instant::now(), cmd) {
                            debug!(error = %e, hard, "kernel limit of a CHILD_SA that is gone");
                        }
                    }
                }
                Err(e) => warn!(
                    error = %errchain::chain(&e),
                    "kernel XFRM events failed: a CHILD_SA's byte or packet limit may pass unnoticed until its rekey_time, a peer's NAT mapping change until its next message"
                ),
            },
            // The caller may have gone away; nothing to do then.
            Some(req) = ctl_rx.recv() => match req {
                ControlRequest::Status(reply) => {
                    let counters = kernel.counters().await;
                    let mut snap = commands::snapshot(&ep, config.backend, counters);
                    snap.mobility = mobility.as_ref().map(Mobility::status);
                    let _ = reply.send(snap);
                }
                ControlRequest::Command(cmd, reply) => {
                    info!(command = ?cmd, "control");
                    let answer = commands::execute(&mut ep, Instant::now(), cmd, |ip| {
                        listening_on(&sockets, ip)
                    });
                    let _ = reply.send(answer);
                }
            },
            Some(new) = reloads.recv(), if stop_at.is_none() => {
                reload(&mut ep, &running, new.clone(), &tx, &mut sockets);
                running.endpoint = ep.config().clone();
                running.initiate = new.initiate;
                running.listen = new.listen;
                running.listen_any = new.listen_any;
                // The SIGHUP handler said RELOADING=1.
                notifier.ready(&status_line(&ep, &mobility));
            },
            _ = status_tick.tick() => {
                notifier.status(&status_line(&ep, &mobility));
                if notifier.watchdog_interval().is_some() {
                    notifier.watchdog();
                }
            }
            () = &mut shutdown, if stop_at.is_none() => {
                notifier.stopping();
                info!("shutting down: deleting all IKE SAs");
                ep.handle_command(Instant::now(), Command::DeleteAll)?;
                stop_at = Some(Instant::now() + SHUTDOWN_GRACE);
            }
        }
    }
    drop(ctl_tx);
    if let Some(m) = &mut mobility {
        m.stop();
    }
    if let Some(r) = &mut routes
        && let Err(e) = r.remove_all().await
    {
        warn!(error = %errchain::chain(&e), "cannot remove all tunnel routes");
    }
    if let Some(v) = &mut vips {
        for e in v.remove_all().await {
            warn!(error = %errchain::chain(&e), "virtual IP");
        }
    }
    if let Some((server, path)) = control {
        server.abort();
        let _ = std::fs::remove_file(&path);
    }
    info!(stats = ?ep.stats(), "stopped");
    Ok(())
}

/// How often systemd's status line is renewed (at least as often as the
/// watchdog wants its ping).
const STATUS_EVERY: Duration = Duration::from_secs(10);

/// systemd's STATUS= line: what `systemctl status mobike-agent` shows.
fn status_line(ep: &Endpoint, mobility: &Option<Mobility>) -> String {
    let sas = ep.ike_sas();
    let children: usize = sas.iter().map(|s| s.child_sas.len()).sum();
    let links = mobility
        .as_ref()
        .map_or("mobility off", Mobility::following);
    format!("{} IKE SAs, {children} CHILD_SAs; {links}", sas.len())
}

/// The next link event for the mobility manager (pending without one).
async fn next_input(mobility: &mut Option<Mobility>) -> Input {
    match mobility {
        Some(m) => m.next().await,
        None => std::future::pending().await,
    }
}

/// The kernel's SA expire events (and monitor errors), read by a task of
/// their own into a bounded queue; a queue that never yields with the
/// backend `none`, or when the subscription failed (logged).
fn kernel_expires(
    kernel: &Kernel,
) -> mpsc::Receiver<Result<ipsec_backend::XfrmEvent, ipsec_backend::Error>> {
    use futures::StreamExt;
    let (tx, rx) = mpsc::channel(QUEUE);
    let mut events = match kernel.events() {
        None => return rx,
        Some(Ok(s)) => s,
        Some(Err(e)) => {
            warn!(error = %errchain::chain(&e),
                  "cannot subscribe to kernel XFRM events: CHILD_SA byte and packet limits will not trigger rekeys");
            return rx;
        }
    };
    tokio::spawn(async move {
        while let Some(ev) = events.next().await {
            let wanted = match &ev {
                Ok(e) => matches!(
                    e,
                    ipsec_backend::XfrmEvent::SaExpire { .. }
                        | ipsec_backend::XfrmEvent::Mapping { .. }
                ),
                Err(ipsec_backend::Error::MonitorOverrun) => true,
                Err(_) => {
                    // Not to spin on a socket that keeps failing.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    true
                }
            };
            if wanted && tx.send(ev).await.is_err() {
                return;
            }
        }
    });
    rx
}

/// The IKE sockets `config` needs, on ports 500 and the NAT-T port, that
/// are not open yet: with a connection on "any" local address the two
/// wildcards (they serve every connection), else one per configured
/// address. Each feeds `tx` from a task of its own.
fn open_sockets(
    config: &AgentConfig,
    nat_t: u16,
    tx: &mpsc::Sender<Datagram>,
    sockets: &mut HashMap<SocketAddr, Arc<IkeSocket>>,
) -> Result<(), RuntimeError> {
    let ips: Vec<IpAddr> = if config.listen_any {
        vec![Ipv4Addr::UNSPECIFIED.into(), Ipv6Addr::UNSPECIFIED.into()]
    } else {
        config.listen.clone()
    };
    for ip in ips {
        for port in [crate::proto::IKE_PORT, nat_t] {
            let addr = SocketAddr::new(ip, port);
            if sockets.contains_key(&addr) {
                continue;
            }
            let sock = match IkeSocket::bind(addr) {
                Ok(s) => Arc::new(s),
                // A host without IPv6 still serves IPv4 on "any".
                Err(e) if config.listen_any && ip.is_ipv6() => {
                    warn!(%addr, error = %e, "no IPv6 wildcard socket: IPv4 only");
                    continue;
                }
                Err(source) => return Err(RuntimeError::Bind { addr, source }),
            };
            match crate::sockopt::set_recv_buffer(sock.socket(), crate::sockopt::RECV_BUFFER) {
                Ok(n) => debug!(%addr, bytes = n, "receive buffer"),
                Err(e) => warn!(%addr, error = %e, "cannot enlarge the receive buffer"),
            }
            // IKE must not go through (or be required to come out of) the
            // CHILD_SAs it negotiates (crate::sockopt).
            if let Err(e) = crate::sockopt::set_ipsec_bypass(sock.socket(), ip.is_ipv6()) {
                warn!(%addr, error = %e, "cannot exempt the IKE socket from IPsec policies: IKE between addresses a CHILD_SA covers will fail");
            }
            // Kernel ESP behind a NAT arrives on the NAT-T port: the kernel
            // must take it there (RFC 3948), not hand it to us.
            if port == nat_t
                && config.backend == Backend::Xfrm
                && let Err(e) = crate::sockopt::set_esp_in_udp(sock.socket())
            {
                warn!(%addr, error = %e, "cannot mark the NAT-T socket for ESP-in-UDP: UDP-encapsulated ESP will not reach the kernel");
            }
            sockets.insert(addr, sock.clone());
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let mut got = Vec::new();
                loop {
                    if let Err(e) = sock.recv(&mut buf, &mut got).await {
                        debug!(%addr, error = %e, "recv failed");
                    }
                    for d in got.drain(..) {
                        if tx.send(d).await.is_err() {
                            return;
                        }
                    }
                }
            });
            info!(%addr, "listening");
        }
    }
    Ok(())
}

/// Whether an IKE socket can send from `ip`: one bound to it, or the
/// wildcard of its family.
fn listening_on(sockets: &HashMap<SocketAddr, Arc<IkeSocket>>, ip: IpAddr) -> bool {
    let any = wildcard_of(ip);
    sockets.keys().any(|a| a.ip() == ip || a.ip() == any)
}

/// A configuration re-read on SIGHUP: the connections are replaced as
/// [`Endpoint::reload`] does, new local addresses are listened on, and the
/// connections to start that are new or changed are initiated. What only
/// a restart changes (kernel backend, routes, virtual IP interface,
/// control socket, NAT-T port) keeps its running value, said in the log.
fn reload(
    ep: &mut Endpoint,
    running: &AgentConfig,
    mut new: AgentConfig,
    tx: &mpsc::Sender<Datagram>,
    sockets: &mut HashMap<SocketAddr, Arc<IkeSocket>>,
) {
    let restart_only = [
        ("[kernel] backend", running.backend != new.backend),
        ("[kernel] routes", running.routes != new.routes),
        (
            "[kernel] virtual IPs",
            running.virtual_ip_interface != new.virtual_ip_interface,
        ),
        (
            "the NAT-T port",
            running.endpoint.nat_t_port != new.endpoint.nat_t_port,
        ),
        (
            "[control] socket",
            running.control_socket != new.control_socket,
        ),
    ];
    for (what, changed) in restart_only {
        if changed {
            warn!(
                setting = what,
                "changed in the file; takes effect at the next restart"
            );
        }
    }
    new.endpoint.nat_t_port = running.endpoint.nat_t_port;
    new.backend = running.backend;
    if let Err(e) = open_sockets(&new, running.endpoint.nat_t_port, tx, sockets) {
        warn!(error = %errchain::chain(&e), "cannot listen on every new local address");
    }
    let report = ep.reload(Instant::now(), new.endpoint);
    info!(
        added = ?report.added,
        changed = ?report.changed,
        removed = ?report.removed,
        unchanged = report.unchanged.len(),
        "configuration reloaded"
    );
    for name in new
        .initiate
        .iter()
        .filter(|n| report.added.contains(n) || report.changed.contains(n))
    {
        if let Err(e) = commands::initiate(ep, Instant::now(), name) {
            warn!(connection = %name, error = %e, "cannot initiate the reloaded connection now");
        }
    }
}

async fn flush(
    ep: &mut Endpoint,
    kernel: &mut Kernel,
    routes: &mut Option<Routes>,
    vips: &mut Option<VirtualIps>,
    sockets: &HashMap<SocketAddr, Arc<IkeSocket>>,
    mobility: &mut Option<Mobility>,
) {
    // Kernel actions and datagrams go first (a CHILD_SA migrated at the
    // peer's answer, an update on the wire; the kernel actions the
    // datagrams do not wait for after them), the mobility manager's route
    // lookups and evaluation after; what it queues (and what the kernel's
    // failures queue) goes round again, a bounded number of times.
    for _ in 0..FLUSH_ROUNDS {
        let mut vips_changed = false;
        take_events(ep, mobility, &mut vips_changed);
        // Before the CHILD_SAs that use them (and their routes) go in.
        if vips_changed && let Some(v) = vips.as_mut() {
            for e in v.sync(&ep.virtual_ips()).await {
                warn!(error = %errchain::chain(&e), "virtual IP");
            }
        }
        apply_kernel_actions(ep, kernel, routes, true).await;
        send_all(ep, sockets).await;
        apply_kernel_actions(ep, kernel, routes, false).await;
        if let Some(m) = mobility.as_mut() {
            let now = Instant::now();
            for (sa, t) in m.drive(ep, now, |ip| listening_on(sockets, ip)).await {
                log_move(sa, &t);
            }
        }
        if !ep.has_output() {
            return;
        }
    }
    // Left for the next turn of the loop (never seen: each round needs new
    // output from the one before).
    debug!("engine output left after {FLUSH_ROUNDS} rounds");
}

/// The engine's kernel actions, applied (`before_send`: only those the
/// queued datagrams wait for); a refused install or migrate goes back to
/// the engine.
async fn apply_kernel_actions(
    ep: &mut Endpoint,
    kernel: &mut Kernel,
    routes: &mut Option<Routes>,
    before_send: bool,
) {
    let next = |ep: &mut Endpoint| {
        if before_send {
            ep.poll_kernel_action_before_send()
        } else {
            ep.poll_kernel_action()
        }
    };
    while let Some(k) = next(ep) {
        let started = Instant::now();
        let ev = kernel.apply(k).await;
        let applied = started.elapsed();
        if let KernelEvent::Failed {
            op: KernelOp::Install,
            ike_sa: Some(sa),
            inbound_spi,
            ..
        } = ev
        {
            // A CHILD_SA the kernel refused carries no traffic: delete it
            // with the peer rather than leave the peer sending into it
            // (its kernel actions come round this loop again).
            let cmd = Command::DeleteChildSa { sa, inbound_spi };
            if let Err(e) = ep.handle_command(Instant::now(), cmd) {
                warn!(error = %e, "cannot delete the CHILD_SA the kernel refused");
            }
        }
        if let KernelEvent::Failed {
            op: KernelOp::Migrate,
            inbound_spi,
            ..
        } = ev
        {
            // A CHILD_SA the kernel did not move stays on the old
            // addresses: the engine replaces or deletes it with the peer.
            let cmd = Command::MigrateFailed { inbound_spi };
            if let Err(e) = ep.handle_command(Instant::now(), cmd) {
                warn!(error = %e, "cannot act on the CHILD_SA the kernel did not move");
            }
        }
        if let Some(r) = routes.as_mut() {
            follow_routes(r, kernel, &ev).await;
        }
        // What a move waits for between the update's send and the tunnel's
        // first packet on the new path.
        debug!(?applied, routes = ?started.elapsed().saturating_sub(applied), "kernel action done");
        log_kernel_event(ev);
    }
}

/// The engine's datagrams, each from the socket of its local address.
async fn send_all(ep: &mut Endpoint, sockets: &HashMap<SocketAddr, Arc<IkeSocket>>) {
    while let Some(t) = ep.poll_transmit() {
        // The socket bound to the address, else the family's wildcard.
        let wildcard = SocketAddr::new(wildcard_of(t.local.ip()), t.local.port());
        match sockets.get(&t.local).or_else(|| sockets.get(&wildcard)) {
            Some(s) => {
                if let Err(e) = s.send(t.local.ip(), t.remote, &t.payload).await {
                    warn!(local = %t.local, remote = %t.remote, error = %e, "send failed");
                }
            }
            None => warn!(local = %t.local, "no socket for this local address"),
        }
    }
}

/// Logs the engine's events (re-establishing connections that are due)
/// and hands them to the mobility manager.
fn take_events(ep: &mut Endpoint, mobility: &mut Option<Mobility>, vips_changed: &mut bool) {
    while let Some(e) = ep.poll_event() {
        *vips_changed |= matches!(e, Event::VirtualIps { .. } | Event::IkeSaDeleted { .. });
        match &e {
            Event::IkeSaDeleted { .. }
            | Event::ChildSaFailed { .. }
            | Event::MigrateFailed { .. } => warn!(event = ?e, "ike"),
            Event::RestartDue { connection } => {
                info!(connection, "re-establishing");
                // A failure (no route towards the peer now) is counted
                // and retried by the engine.
                if let Err(e) = commands::initiate(ep, Instant::now(), connection) {
                    warn!(connection, error = %e, "cannot re-establish the connection now");
                }
            }
            _ => info!(event = ?e, "ike"),
        }
        if let Some(m) = mobility.as_mut() {
            m.on_event(ep, &e, Instant::now());
        }
    }
}

/// How long the trigger took from its source's observation (trigger-db's
/// or the own watch's clock) to the agent's receipt: the wall-clock age
/// now less the time since receipt. None when the clocks say nothing
/// sensible (a source clock ahead of ours).
fn observed_to_received(c: crate::mobility::manager::Cause) -> Option<std::time::Duration> {
    let age = std::time::SystemTime::now()
        .duration_since(c.observed)
        .ok()?;
    age.checked_sub(c.received.elapsed())
}

/// A completed move, in the log.
fn log_move(sa: u64, t: &crate::mobility::manager::Timeline) {
    let since = |i: Option<Instant>| i.map(|i| i.saturating_duration_since(t.decided));
    info!(
        sa = format_args!("{sa:#018x}"),
        reason = t.reason.as_str(),
        from = %t.from.local,
        to = ?t.to.map(|p| p.local),
        trigger = ?t.cause.map(|c| c.id),
        observed_to_received = ?t.cause.and_then(observed_to_received),
        received_to_decided = ?t.cause.map(|c| t.decided.saturating_duration_since(c.received)),
        update_sent = ?since(t.update_sent),
        moved = ?since(t.moved),
        "mobility: moved"
    );
}

/// Keeps the tunnel routes in step with the kernel state: installed with
/// the first tunnel-mode pair of a reqid, moved with it, removed with the
/// last policies of its reqid. A route failure is logged; the
/// CHILD_SA stays.
async fn follow_routes(routes: &mut Routes, kernel: &Kernel, ev: &KernelEvent) {
    let r = match ev {
        // A rekey installs a pair under a reqid that has its routes: keep
        // them (a first install whose routes failed is retried here).
        KernelEvent::Installed {
            handle: h,
            with_policies,
            ..
        } if h.mode == ipsec_backend::types::Mode::Tunnel
            && (*with_policies || !routes.has(h.reqid)) =>
        {
            routes
                .install(h.reqid, &h.selectors, h.outer.remote)
                .await
                .map(drop)
        }
        KernelEvent::Migrated { handle: h, .. } => routes.update(h.reqid, h.outer.remote).await,
        KernelEvent::Deleted { handle: h, .. } if !kernel.has_policies(h.reqid) => {
            routes.remove(h.reqid).await
        }
        KernelEvent::NotInstalled { reqid, .. } if !kernel.has_policies(*reqid) => {
            routes.remove(*reqid).await
        }
        _ => Ok(()),
    };
    if let Err(e) = r {
        warn!(error = %errchain::chain(&e), "tunnel route");
    }
}

/// `10.1.0.0/24 <-> 10.2.0.0/24, 10.3.0.0/24 <-> 10.4.0.0/24`.
fn selector_list(pairs: &[ipsec_backend::SelectorPair]) -> String {
    let items: Vec<String> = pairs.iter().map(ToString::to_string).collect();
    items.join(", ")
}

fn log_kernel_event(ev: KernelEvent) {
    match ev {
        KernelEvent::Logged(k) => match &k {
            KernelAction::InstallChildSa(i) => info!(
                reqid = i.reqid,
                inbound = format_args!("{:#010x}", i.inbound.spi),
                outbound = format_args!("{:#010x}", i.outbound.spi),
                aead = ?i.inbound.aead,
                encap = ?i.encap,
                "kernel (backend none): install CHILD_SA"
            ),
            KernelAction::MigrateChildSa {
                reqid,
                inbound_spi,
                to,
                encap,
                ..
            } => info!(
                reqid,
                inbound = format_args!("{inbound_spi:#010x}"),
                local = %to.0,
                remote = %to.1,
                encap = ?encap,
                "kernel (backend none): migrate CHILD_SA"
            ),
            KernelAction::PrepareInbound {
                reqid,
                inbound_spi,
                local,
            } => info!(
                reqid,
                inbound = format_args!("{inbound_spi:#010x}"),
                local = %local,
                "kernel (backend none): inbound SA valid at this address too"
            ),
            KernelAction::DeleteChildSa {
                reqid, inbound_spi, ..
            } => info!(
                reqid,
                inbound = format_args!("{inbound_spi:#010x}"),
                "kernel (backend none): delete CHILD_SA"
            ),
        },
        KernelEvent::Installed {
            ike_sa,
            handle: h,
            with_policies,
        } => info!(
            ike_sa = format_args!("{ike_sa:#018x}"),
            reqid = h.reqid,
            inbound = format_args!("{:#010x}", h.spi_in),
            outbound = format_args!("{:#010x}", h.spi_out),
            selectors = %selector_list(&h.selectors),
            encap = ?h.encap,
            with_policies,
            "kernel: CHILD_SA installed"
        ),
        KernelEvent::Migrated { ike_sa, handle: h } => info!(
            ike_sa = format_args!("{ike_sa:#018x}"),
            reqid = h.reqid,
            inbound = format_args!("{:#010x}", h.spi_in),
            local = %h.outer.local,
            remote = %h.outer.remote,
            encap = ?h.encap,
            "kernel: CHILD_SA migrated"
        ),
        KernelEvent::InboundCopy { ike_sa, handle: h } => info!(
            ike_sa = format_args!("{ike_sa:#018x}"),
            reqid = h.reqid,
            inbound = format_args!("{:#010x}", h.spi_in),
            local = %h.outer.local,
            also = ?h.inbound_copy,
            "kernel: inbound SA for the move under way"
        ),
        KernelEvent::Deleted { ike_sa, handle: h } => info!(
            ike_sa = format_args!("{ike_sa:#018x}"),
            reqid = h.reqid,
            inbound = format_args!("{:#010x}", h.spi_in),
            "kernel: CHILD_SA deleted"
        ),
        KernelEvent::NotInstalled {
            ike_sa,
            reqid,
            inbound_spi,
        } => debug!(
            ike_sa = format_args!("{ike_sa:#018x}"),
            reqid,
            inbound = format_args!("{inbound_spi:#010x}"),
            "kernel: nothing to do for a CHILD_SA whose install failed"
        ),
        KernelEvent::Failed {
            op,
            ike_sa,
            reqid,
            inbound_spi,
            error,
        } => warn!(
            ike_sa = ?ike_sa.map(|s| format!("{s:#018x}")),
            reqid,
            inbound = format_args!("{inbound_spi:#010x}"),
            ?op,
            error = %errchain::chain(&error),
            "kernel: CHILD_SA action failed"
        ),
    }
}

/// Removes the kernel SAs and policies of our reqids and the routes of our
/// routing protocol that an earlier run left behind (it was killed and
/// could not clean up); a failure is logged, the agent starts anyway.
async fn remove_leftovers(kernel: &Kernel, routes: Option<&Routes>) {
    match kernel.remove_leftovers().await {
        Ok(l) if l.sas + l.policies > 0 => {
            info!(
                sas = l.sas,
                policies = l.policies,
                "removed kernel state an earlier run left behind"
            );
        }
        Ok(_) => {}
        Err(e) => {
            warn!(error = %errchain::chain(&e), "cannot remove kernel state an earlier run left behind")
        }
    }
    if let Some(r) = routes
        && let Err(e) = r.remove_leftovers().await
    {
        warn!(error = %errchain::chain(&e), "cannot remove routes an earlier run left behind");
    }
}
