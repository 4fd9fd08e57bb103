//! Wiring of the daemon: opens the store, starts the writer, the hub, the
//! sources and the gRPC server on the Unix socket, and takes it all down in
//! order on shutdown (stop accepting, drain and flush the store, end the
//! streams). `main` only parses flags and signals; tests and benchmarks can
//! run the same thing in-process.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use daemon_support::{
    notify::Notifier,
    socket::{self, SocketError},
};
use tokio_util::sync::CancellationToken;
use tower::Layer as _;
use tracing::{info, warn};
use trigger_proto::v1::trigger_service_server::TriggerServiceServer;

use crate::{
    config::Config,
    hub::Hub,
    ingest, peer,
    server::{Access, Service, dispatch::Dispatch, limits::RequestLimits},
    source::netlink::{self, NetlinkStats},
    store::{self, StoreError},
    writer::{self, Retention, WriterConfig, WriterStats},
};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The socket's or the database's directory, or binding the socket.
    #[error(transparent)]
    Socket(#[from] SocketError),
    #[error("group {name:?} (config {key})")]
    Group {
        name: String,
        key: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot build the reflection service")]
    Reflection(#[source] tonic_reflection::server::Error),
    #[error("the store writer stopped before shutdown ({0}); nothing can be stored")]
    WriterDied(String),
}

/// Watches the writer task: `died` is cancelled if it ends (returns or
/// panics) before `stopped` was cancelled, i.e. while the daemon still
/// serves. The returned task yields how it ended.
pub fn watch_writer(
    task: tokio::task::JoinHandle<()>,
    stopped: CancellationToken,
    died: CancellationToken,
) -> tokio::task::JoinHandle<Result<(), String>> {
    tokio::spawn(async move {
        let end = match task.await {
            Ok(()) => Ok(()),
            Err(e) if e.is_panic() => Err("it panicked".to_owned()),
            Err(e) => Err(e.to_string()),
        };
        if !stopped.is_cancelled() {
            died.cancel();
            return Err(end.err().unwrap_or_else(|| "it returned".to_owned()));
        }
        end
    })
}

/// How long connections get to close after shutdown began.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Everything the daemon needs, resolved from flags, file and defaults.
#[derive(Debug, Clone)]
pub struct Options {
    pub socket: PathBuf,
    /// A SQLite path or URL, or a PostgreSQL URL ([`store::Database::parse`]).
    pub database: PathBuf,
    pub config: Config,
}

fn group(name: &Option<String>, key: &'static str) -> Result<Option<u32>, DaemonError> {
    name.as_ref()
        .map(|n| {
            peer::resolve_group(n).map_err(|source| DaemonError::Group {
                name: n.clone(),
                key,
                source,
            })
        })
        .transpose()
}

type SourceTasks = (
    Vec<Arc<dyn crate::server::SourceCounters>>,
    Vec<tokio::task::JoinHandle<()>>,
);

impl crate::server::SourceCounters for NetlinkStats {
    fn name(&self) -> &'static str {
        "rtnetlink"
    }
    fn resyncs(&self) -> u64 {
        self.resyncs.load(Ordering::Relaxed)
    }
    fn parse_errors(&self) -> u64 {
        self.parse_errors.load(Ordering::Relaxed)
    }
}

/// Starts the enabled sources, each an actor feeding the writer. A source
/// that fails is logged and restarted after a pause (it re-reads the whole
/// state and marks the resync), so the daemon never runs blind silently.
fn start_sources(cfg: &Config, tx: ingest::SourceSender, stop: CancellationToken) -> SourceTasks {
    let mut counters: Vec<Arc<dyn crate::server::SourceCounters>> = Vec::new();
    let mut tasks = Vec::new();
    if cfg.sources.networkmanager.enabled {
        let stats = Arc::new(crate::source::nm::NmStats::default());
        counters.push(stats.clone());
        let nm_cfg = cfg.sources.networkmanager.clone();
        let (tx, stop) = (tx.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            // It waits out an absent bus or NetworkManager by itself; it
            // fails only when the store's channel is gone.
            if let Err(e) = crate::source::nm::run(nm_cfg, tx, stats, stop).await {
                tracing::error!(error = %errchain::chain(&e), "NetworkManager source stopped");
            }
        }));
    } else {
        info!("NetworkManager source disabled by configuration");
    }
    if cfg.sources.rtnetlink.enabled {
        let stats = Arc::new(NetlinkStats::default());
        counters.push(stats.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                match netlink::run(tx.clone(), stats.clone(), stop.clone()).await {
                    Ok(()) => break,
                    Err(e) => {
                        tracing::error!(error = %errchain::chain(&e), "rtnetlink source failed; restarting in 1 s");
                    }
                }
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }));
    } else {
        info!("rtnetlink source disabled by configuration");
    }
    (counters, tasks)
}

/// How often the status line for systemd is renewed (at least as often as
/// the watchdog wants its ping).
const STATUS_EVERY: Duration = Duration::from_secs(10);

/// systemd's STATUS= line: what `systemctl status trigger-db` shows.
fn status_line(hub: &Hub, stats: &WriterStats) -> String {
    format!(
        "serving; last id {}, {} triggers stored since start, {} subscribers",
        hub.settled_id(),
        stats.ingested.load(std::sync::atomic::Ordering::Relaxed),
        hub.subscribers()
    )
}

/// Runs the daemon until `shutdown` is cancelled; returns once the store is
/// flushed and closed.
pub async fn run(opts: Options, shutdown: CancellationToken) -> Result<(), DaemonError> {
    let cfg = &opts.config;
    let writer_gid = group(&cfg.writer_group, "writer_group")?;
    let socket_gid = group(&cfg.socket_group, "socket_group")?;

    let database = store::Database::parse(&opts.database)?;
    let host_id = match &database {
        store::Database::Sqlite(path) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                socket::prepare_dir(dir, &std::env::temp_dir())?;
            }
            // One host per file: the host id is not stored, only known
            // to answer queries that name it; without a configured one
            // and without /etc/machine-id, the host has no name.
            match cfg.store.host_id.as_deref() {
                Some(c) => store::host_id(Some(c), Path::new(store::MACHINE_ID))?,
                None => store::host_id(None, Path::new(store::MACHINE_ID)).unwrap_or_default(),
            }
        }
        store::Database::Postgres(_) => {
            store::host_id(cfg.store.host_id.as_deref(), Path::new(store::MACHINE_ID))?
        }
    };
    let spool = match &database {
        store::Database::Sqlite(_) => None,
        store::Database::Postgres(_) => {
            let path = match &cfg.store.spool_path {
                Some(p) => p.clone(),
                None => {
                    let default = crate::paths::default_database();
                    let dir = default.parent().unwrap_or(Path::new("/"));
                    store::spool::default_path(dir, &database, &host_id)
                }
            };
            // Its directory is made (and checked) when the spool is.
            Some(store::spool::SpoolOptions {
                path,
                max_bytes: cfg.store.spool_max_bytes,
            })
        }
    };
    let open = store::OpenOptions {
        durability: cfg.store.durability,
        readers: cfg.store.readers,
        host_id,
        host_lock_wait: Duration::from_secs(10),
        spool,
    };
    let (store, writer_conn) = store::open(&database, &open).await?;
    let last_id = store.last_id().await?;
    if open.host_id.is_empty() {
        info!(%database, last_id, "store open");
    } else {
        info!(%database, host = %open.host_id, last_id, "store open");
    }
    let hub = Arc::new(Hub::new(
        last_id,
        cfg.subscribers.queue,
        cfg.store.batch_max.max(crate::server::MAX_ADD_BATCH),
    ));
    let writer_stats = Arc::new(WriterStats::new(cfg.damping.flap_window));
    let (source_tx, source_rx) = ingest::source_channel();
    // The writer outlives the server: it stops on its own token, after the
    // server has stopped accepting.
    let writer_stop = CancellationToken::new();
    let (writer, writer_task) = writer::spawn(
        writer_conn,
        source_rx,
        hub.clone(),
        writer_stats.clone(),
        WriterConfig {
            batch_max: cfg.store.batch_max,
            retention: Retention {
                max_age: cfg.store.retention_max_age,
                max_rows: cfg.store.retention_max_rows,
                interval: cfg
                    .store
                    .retention_interval
                    .unwrap_or(Duration::from_secs(60)),
            },
            debounce: cfg.damping.debounce.iter().map(|(k, d)| (*k, *d)).collect(),
            source_store_delay: cfg
                .store
                .source_store_delay
                .unwrap_or(writer::SOURCE_STORE_DELAY),
        },
        writer_stop.clone(),
    );
    // Without the writer nothing is stored: the daemon must end (non-zero)
    // so that systemd restarts it, not serve on without a store.
    let writer_died = CancellationToken::new();
    let writer_task = watch_writer(writer_task, writer_stop.clone(), writer_died.clone());
    {
        let (died, shutdown, stop) = (writer_died.clone(), shutdown.clone(), writer_stop.clone());
        tokio::spawn(async move {
            tokio::select! {
                () = died.cancelled() => {
                    tracing::error!("the store writer stopped; shutting down");
                    shutdown.cancel();
                }
                () = stop.cancelled() => {}
            }
        });
    }

    let sources_stop = CancellationToken::new();
    let (counters, source_tasks) = start_sources(cfg, source_tx, sources_stop.clone());

    // Serve only once the kernel's state is in: a first ListLinks or
    // snapshot must not see an empty table.
    if cfg.sources.rtnetlink.enabled
        && tokio::time::timeout(Duration::from_secs(10), hub.wait_for_links())
            .await
            .is_err()
    {
        warn!("no link table from the rtnetlink source after 10 s; serving anyway");
    }

    let listener = socket::bind(
        "trigger-db",
        &opts.socket,
        cfg.socket_mode.unwrap_or(0o666),
        socket_gid,
    )
    .await?;
    info!(socket = %opts.socket.display(), "serving");
    // systemd (Type=notify): ready now that the socket accepts and the
    // sources' first state is in; then a status line (and the watchdog's
    // ping, with WatchdogSec) every STATUS_EVERY or half the watchdog time.
    let notifier = Arc::new(Notifier::from_env());
    notifier.ready(&status_line(&hub, &writer_stats));
    let status_task = tokio::spawn({
        let (notifier, hub, stats, shutdown) = (
            notifier.clone(),
            hub.clone(),
            writer_stats.clone(),
            shutdown.clone(),
        );
        async move {
            let every = notifier
                .watchdog_interval()
                .map_or(STATUS_EVERY, |w| w.min(STATUS_EVERY));
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    _ = tick.tick() => {}
                }
                // Taking the hub's lock for the line is part of the proof
                // of life the watchdog ping gives.
                notifier.status(&status_line(&hub, &stats));
                if notifier.watchdog_interval().is_some() {
                    notifier.watchdog();
                }
            }
        }
    });

    let service = Arc::new(Service {
        store: store.clone(),
        writer,
        hub: hub.clone(),
        writer_stats,
        sources: counters,
        access: Access { writer_gid },
        max_subscribers: cfg.subscribers.max,
        shutdown: shutdown.clone(),
        started: Instant::now(),
        rejected: Default::default(),
    });

    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<TriggerServiceServer<Service>>()
        .await;
    // Reflection in both versions: v1, and v1alpha, which clients such as
    // Python's grpcio-reflection and older grpcurl still ask. Only what this
    // socket serves is advertised (the descriptor set holds the agent's
    // service too).
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(trigger_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .with_service_name("trigger.v1.TriggerService")
            .with_service_name("grpc.health.v1.Health")
            .with_service_name("grpc.reflection.v1.ServerReflection")
            .with_service_name("grpc.reflection.v1alpha.ServerReflection")
    };
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .map_err(DaemonError::Reflection)?;
    let reflection = reflection().build_v1().map_err(DaemonError::Reflection)?;

    // The largest request any verb may send; the per-verb limits are the
    // RequestLimits layer's.
    let limits = &cfg.limits;
    let generated = TriggerServiceServer::from_arc(service.clone())
        .max_decoding_message_size(limits.write_request_bytes)
        .max_encoding_message_size(32 * 1024 * 1024);
    // Subscribe sends the hub's shared frames; the rest is generated.
    let grpc = Dispatch::new(
        service,
        generated,
        limits.read_request_bytes,
        health,
        reflection,
        reflection_v1alpha,
    );
    let admission = peer::Admission::new(peer::ConnectionLimits {
        total: limits.max_connections,
        per_uid: limits.max_connections_per_uid,
    });

    // On shutdown: stop the sources, let the writer drain and close the hub
    // (which ends every live stream), then the server finishes.
    let stop_chain = {
        let notifier = notifier.clone();
        let shutdown = shutdown.clone();
        let writer_stop = writer_stop.clone();
        let sources_stop = sources_stop.clone();
        async move {
            shutdown.cancelled().await;
            notifier.stopping();
            info!("shutting down: no new connections; flushing the store");
            health_reporter
                .set_not_serving::<TriggerServiceServer<Service>>()
                .await;
            sources_stop.cancel();
            writer_stop.cancel();
        }
    };
    let settings = crate::server::http2::Settings {
        // Many subscriber streams share a connection: give the connection
        // room so one stream that stops reading does not stall the others.
        initial_connection_window_size: 4 * 1024 * 1024,
        initial_stream_window_size: 256 * 1024,
        max_concurrent_streams: limits.max_streams_per_connection,
        // Pings keep a live client talking, so the idle timeout only closes
        // peers that answer nothing; a peer that does not answer a ping
        // within 20 s is gone.
        keepalive_interval: limits.idle_timeout / 3,
        keepalive_timeout: Duration::from_secs(20),
    };
    let grpc = RequestLimits {
        read: limits.read_request_bytes,
        write: limits.write_request_bytes,
    }
    .layer(grpc);
    let serve = crate::server::http2::serve(
        grpc,
        peer::incoming(listener, admission, limits.idle_timeout),
        settings,
        stop_chain,
    );
    // A client that never answers (its HTTP/2 PING of the graceful close
    // included) must not keep the daemon from exiting.
    tokio::pin!(serve);
    tokio::select! {
        () = &mut serve => {}
        () = async { shutdown.cancelled().await; tokio::time::sleep(SHUTDOWN_GRACE).await } => {
            warn!("connections still open {SHUTDOWN_GRACE:?} after shutdown began; closing them");
        }
    }
    writer_stop.cancel();
    sources_stop.cancel();
    status_task.abort();
    for t in source_tasks {
        if let Err(e) = t.await {
            warn!(error = %e, "source task ended abnormally");
        }
    }
    let writer_end = match writer_task.await {
        Ok(end) => end,
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = &writer_end {
        warn!(error = %e, "writer task ended abnormally");
    }
    store.close().await;
    let _ = std::fs::remove_file(&opts.socket);
    if writer_died.is_cancelled() {
        return Err(DaemonError::WriterDied(
            writer_end.err().unwrap_or_else(|| "it returned".to_owned()),
        ));
    }
    info!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_writer_that_panics_while_serving_is_reported_dead() {
        let (stopped, died) = (CancellationToken::new(), CancellationToken::new());
        let task = tokio::spawn(async { panic!("writer bug") });
        let end = watch_writer(task, stopped, died.clone()).await.unwrap();
        assert!(died.is_cancelled());
        assert_eq!(end, Err("it panicked".to_owned()));
    }

    #[tokio::test]
    async fn a_writer_that_ends_after_shutdown_is_not_dead() {
        let (stopped, died) = (CancellationToken::new(), CancellationToken::new());
        stopped.cancel();
        let end = watch_writer(tokio::spawn(async {}), stopped, died.clone())
            .await
            .unwrap();
        assert!(!died.is_cancelled());
        assert_eq!(end, Ok(()));
    }
}
