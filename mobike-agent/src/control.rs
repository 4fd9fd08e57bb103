//! The local control socket: gRPC service `mobike.v1.AgentControl` on a
//! Unix socket, served by the runtime, and its client side for
//! `mobike-agent status` (connection, table and JSON rendering).
//!
//! The server never touches the engine itself: each `Status` call sends a
//! reply slot over a bounded channel to the runtime's loop, which answers
//! with a [`snapshot`] of [`Endpoint::ike_sas`] taken between two engine
//! steps. CHILD_SA counters come from the kernel backend (read for every
//! installed pair when the call arrives); with the backend `none` nothing
//! counts ESP traffic, so they are zero and `counters_known` is false.

use std::{
    collections::HashMap,
    fmt::Write as _,
    net::IpAddr,
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Instant,
};

use hyper_util::rt::TokioIo;
use ipsec_backend::ChildSaCounters;
use tokio::{
    net::{UnixListener, UnixStream},
    sync::{mpsc, oneshot},
    task::JoinHandle,
};
use tonic::transport::{Channel, Endpoint as TonicEndpoint, Uri};
use trigger_proto::mobike_v1::{
    ChildSa, CommandResponse, IkeSa, IkeSaRef, InitiateRequest, RekeyRequest, SelectRequest,
    StatusRequest, StatusResponse, UpdateAddressesRequest,
    agent_control_client::AgentControlClient,
    agent_control_server::{AgentControl, AgentControlServer},
};

use crate::{
    config_file::Backend,
    engine::{Command, CommandError, Endpoint, IkeSaInfo, SaId},
    proto::TrafficSelector,
};

/// Pending calls waiting for the runtime loop.
pub const QUEUE: usize = 16;

/// A `Status` call's reply slot, answered by the runtime loop.
pub type StatusReply = oneshot::Sender<StatusResponse>;

/// A command call's reply slot.
pub type CommandReply = oneshot::Sender<Result<CommandResponse, tonic::Status>>;

/// A call from the control socket, answered by the runtime loop.
#[derive(Debug)]
pub enum ControlRequest {
    /// `Status`.
    Status(StatusReply),
    /// `Initiate`, `Terminate` or `Rekey`, checked already.
    Command(ControlCommand, CommandReply),
}

/// Which IKE SAs a command is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// Every IKE SA of this connection.
    Connection(String),
    /// The IKE SA with this initiator or responder SPI.
    Spi(u64),
}

/// A control command, checked (the wire form has optional fields).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlCommand {
    /// Start the connection as initiator.
    Initiate(String),
    /// Delete the chosen IKE SAs.
    Terminate(Selector),
    /// Rekey the chosen IKE SAs, or one CHILD_SA of them.
    Rekey {
        /// Which IKE SAs.
        select: Selector,
        /// The CHILD_SA's inbound SPI, or `None` for the IKE SAs.
        child_spi_in: Option<u32>,
    },
    /// Move the chosen IKE SAs to another address pair (MOBIKE).
    UpdateAddresses {
        /// Which IKE SAs.
        select: Selector,
        /// Our new address.
        local: IpAddr,
        /// The peer's address to use, `None`: the one in use.
        remote: Option<IpAddr>,
    },
}

fn selector(s: Option<SelectRequest>) -> Result<Selector, tonic::Status> {
    let s = s.ok_or_else(|| tonic::Status::invalid_argument("select: missing"))?;
    match (s.connection.is_empty(), s.ike_spi) {
        (false, 0) => Ok(Selector::Connection(s.connection)),
        (true, spi) if spi != 0 => Ok(Selector::Spi(spi)),
        (true, _) => Err(tonic::Status::invalid_argument(
            "select: one of connection and ike_spi is needed",
        )),
        (false, _) => Err(tonic::Status::invalid_argument(
            "select: connection and ike_spi exclude each other",
        )),
    }
}

fn sa_ref(i: &IkeSaInfo) -> IkeSaRef {
    IkeSaRef {
        name: i.connection.clone(),
        spi_initiator: i.spi_i,
        spi_responder: i.spi_r,
    }
}

fn command_status(e: CommandError) -> tonic::Status {
    match e {
        CommandError::UnknownConnection(_)
        | CommandError::UnknownSa(_)
        | CommandError::UnknownChild { .. }
        | CommandError::NoChildSa(_) => tonic::Status::not_found(e.to_string()),
        CommandError::NoAddresses(_)
        | CommandError::NotEstablished(_)
        | CommandError::NoMobike(_) => tonic::Status::failed_precondition(e.to_string()),
        CommandError::Random => tonic::Status::internal(e.to_string()),
    }
}

/// Runs a control command on the engine (called by the runtime loop
/// between two engine steps; the datagrams it queues go out with the next
/// flush). Errors are gRPC statuses naming what was not found or not ready.
pub fn execute(
    ep: &mut Endpoint,
    now: Instant,
    cmd: ControlCommand,
) -> Result<CommandResponse, tonic::Status> {
    let before = ep.ike_sas();
    let chosen = |sel: &Selector| -> Result<Vec<IkeSaInfo>, tonic::Status> {
        let v: Vec<IkeSaInfo> = before
            .iter()
            .filter(|i| match sel {
                Selector::Connection(c) => &i.connection == c,
                Selector::Spi(s) => i.spi_i == *s || i.spi_r == *s,
            })
            .cloned()
            .collect();
        if v.is_empty() {
            return Err(tonic::Status::not_found(match sel {
                Selector::Connection(c) => format!("no IKE SA of connection `{c}`"),
                Selector::Spi(s) => format!("no IKE SA with SPI {s:016x}"),
            }));
        }
        Ok(v)
    };
    match cmd {
        ControlCommand::Initiate(connection) => {
            crate::runtime::initiate(ep, now, &connection).map_err(command_status)?;
            let known: Vec<SaId> = before.iter().map(|i| i.id).collect();
            Ok(CommandResponse {
                ike_sas: ep
                    .ike_sas()
                    .iter()
                    .filter(|i| !known.contains(&i.id))
                    .map(sa_ref)
                    .collect(),
            })
        }
        ControlCommand::Terminate(sel) => {
            let v = chosen(&sel)?;
            for i in &v {
                ep.handle_command(now, Command::DeleteIkeSa(i.id))
                    .map_err(command_status)?;
            }
            Ok(CommandResponse {
                ike_sas: v.iter().map(sa_ref).collect(),
            })
        }
        ControlCommand::Rekey {
            select,
            child_spi_in,
        } => {
            let v = chosen(&select)?;
            for i in &v {
                let cmd = match child_spi_in {
                    Some(inbound_spi) => Command::RekeyChildSa {
                        sa: i.id,
                        inbound_spi,
                    },
                    None => Command::RekeyIkeSa(i.id),
                };
                ep.handle_command(now, cmd).map_err(command_status)?;
            }
            Ok(CommandResponse {
                ike_sas: v.iter().map(sa_ref).collect(),
            })
        }
        ControlCommand::UpdateAddresses {
            select,
            local,
            remote,
        } => {
            let v = chosen(&select)?;
            for i in &v {
                let remote = remote.unwrap_or(i.path.remote.ip());
                if local.is_ipv4() != remote.is_ipv4() {
                    return Err(tonic::Status::invalid_argument(format!(
                        "local {local} and remote {remote} are of different address families"
                    )));
                }
                // The ports in use (4500 once floated) stay.
                let cmd = Command::UpdateAddresses {
                    sa: i.id,
                    local: std::net::SocketAddr::new(local, i.path.local.port()),
                    remote: std::net::SocketAddr::new(remote, i.path.remote.port()),
                };
                ep.handle_command(now, cmd).map_err(command_status)?;
            }
            Ok(CommandResponse {
                ike_sas: v.iter().map(sa_ref).collect(),
            })
        }
    }
}

/// What went wrong with the control socket.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Binding or preparing the socket failed.
    #[error("control socket {path}: {what}")]
    Bind {
        /// Socket path.
        path: PathBuf,
        /// Which step.
        what: &'static str,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Another agent is serving on the socket.
    #[error("control socket {0} is in use by a running mobike-agent")]
    InUse(PathBuf),
    /// The socket cannot be reached.
    #[error("cannot connect to the control socket {path}")]
    Connect {
        /// Socket path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The gRPC channel could not be set up.
    #[error("control socket {path}: gRPC channel failed")]
    Channel {
        /// Socket path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: tonic::transport::Error,
    },
    /// The call failed.
    #[error("control socket {path}: {verb}: {} ({:?})", status.message(), status.code())]
    Call {
        /// Socket path.
        path: PathBuf,
        /// Which call.
        verb: &'static str,
        /// gRPC status.
        status: Box<tonic::Status>,
    },
}

/// The default socket: `/run/mobike-agent/control.sock` as root, else
/// `$XDG_RUNTIME_DIR/mobike-agent/control.sock` (or `/tmp/mobike-agent-UID/`
/// when that is unset).
pub fn default_socket() -> PathBuf {
    // The owner of /proc/self is the effective uid (no unsafe getuid call).
    let uid = std::fs::metadata("/proc/self").map(|m| m.uid()).ok();
    if uid == Some(0) {
        return PathBuf::from("/run/mobike-agent/control.sock");
    }
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(d) => PathBuf::from(d).join("mobike-agent/control.sock"),
        None => PathBuf::from(format!(
            "/tmp/mobike-agent-{}/control.sock",
            uid.unwrap_or(u32::MAX)
        )),
    }
}

/// Binds `path` (creating its directory; replacing a stale socket file but
/// never one a live agent serves on, mode 0600) and serves `AgentControl`
/// on it, forwarding each call to `requests`.
pub async fn serve(
    path: &Path,
    requests: mpsc::Sender<ControlRequest>,
) -> Result<JoinHandle<()>, ControlError> {
    let err = |what| {
        let path = path.to_owned();
        move |source| ControlError::Bind { path, what, source }
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(err("cannot create its directory"))?;
    }
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            return Err(ControlError::InUse(path.to_owned()));
        }
        std::fs::remove_file(path).map_err(err("cannot remove the stale socket"))?;
    }
    let listener = UnixListener::bind(path).map_err(err("cannot bind"))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(err("cannot set its mode"))?;
    let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
    let svc = AgentControlServer::new(Service { requests });
    Ok(tokio::spawn(async move {
        if let Err(e) = tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(incoming)
            .await
        {
            tracing::warn!(error = %e, "control socket server stopped");
        }
    }))
}

#[derive(Debug)]
struct Service {
    requests: mpsc::Sender<ControlRequest>,
}

fn shutting_down<T>(_: T) -> tonic::Status {
    tonic::Status::unavailable("the agent is shutting down")
}

impl Service {
    async fn command(
        &self,
        cmd: ControlCommand,
    ) -> Result<tonic::Response<CommandResponse>, tonic::Status> {
        let (tx, rx) = oneshot::channel();
        self.requests
            .send(ControlRequest::Command(cmd, tx))
            .await
            .map_err(shutting_down)?;
        rx.await.map_err(shutting_down)?.map(tonic::Response::new)
    }
}

#[tonic::async_trait]
impl AgentControl for Service {
    async fn status(
        &self,
        _request: tonic::Request<StatusRequest>,
    ) -> Result<tonic::Response<StatusResponse>, tonic::Status> {
        let (tx, rx) = oneshot::channel();
        self.requests
            .send(ControlRequest::Status(tx))
            .await
            .map_err(shutting_down)?;
        rx.await.map(tonic::Response::new).map_err(shutting_down)
    }

    async fn initiate(
        &self,
        request: tonic::Request<InitiateRequest>,
    ) -> Result<tonic::Response<CommandResponse>, tonic::Status> {
        let c = request.into_inner().connection;
        if c.is_empty() {
            return Err(tonic::Status::invalid_argument("connection: missing"));
        }
        self.command(ControlCommand::Initiate(c)).await
    }

    async fn terminate(
        &self,
        request: tonic::Request<SelectRequest>,
    ) -> Result<tonic::Response<CommandResponse>, tonic::Status> {
        let sel = selector(Some(request.into_inner()))?;
        self.command(ControlCommand::Terminate(sel)).await
    }

    async fn update_addresses(
        &self,
        request: tonic::Request<UpdateAddressesRequest>,
    ) -> Result<tonic::Response<CommandResponse>, tonic::Status> {
        let r = request.into_inner();
        let select = selector(r.select)?;
        let local = r.local.parse().map_err(|_| {
            tonic::Status::invalid_argument(format!("local: `{}` is no IP address", r.local))
        })?;
        let remote = match r.remote.as_str() {
            "" => None,
            s => Some(s.parse().map_err(|_| {
                tonic::Status::invalid_argument(format!("remote: `{s}` is no IP address"))
            })?),
        };
        self.command(ControlCommand::UpdateAddresses {
            select,
            local,
            remote,
        })
        .await
    }

    async fn rekey(
        &self,
        request: tonic::Request<RekeyRequest>,
    ) -> Result<tonic::Response<CommandResponse>, tonic::Status> {
        let r = request.into_inner();
        let select = selector(r.select)?;
        let child_spi_in = (r.child_spi_in != 0).then_some(r.child_spi_in);
        self.command(ControlCommand::Rekey {
            select,
            child_spi_in,
        })
        .await
    }
}

/// Kernel counters of the installed CHILD_SAs by (reqid, inbound SPI), as
/// [`crate::kernel::Kernel::counters`] reads them.
pub type Counters = HashMap<(u32, u32), Result<ChildSaCounters, ipsec_backend::Error>>;

/// The status of every IKE SA of `ep`, as the control API reports it, with
/// the CHILD_SA counters from `counters` (backend `xfrm`).
pub fn snapshot(ep: &Endpoint, backend: Backend, counters: &Counters) -> StatusResponse {
    let now = Instant::now();
    StatusResponse {
        ike_sas: ep
            .ike_sas()
            .iter()
            .map(|i| ike_sa(i, backend, counters, now))
            .collect(),
        backend: match backend {
            Backend::None => "none",
            Backend::Xfrm => "xfrm",
        }
        .into(),
    }
}

/// Whole seconds from `now` to `t` (0 when past).
fn seconds_until(t: Option<Instant>, now: Instant) -> Option<u64> {
    t.map(|t| t.saturating_duration_since(now).as_secs())
}

fn ike_sa(i: &IkeSaInfo, backend: Backend, counters: &Counters, now: Instant) -> IkeSa {
    let strings = |v: &[std::net::IpAddr]| v.iter().map(ToString::to_string).collect();
    IkeSa {
        rekey_in_seconds: seconds_until(i.rekey_at, now),
        virtual_ips: strings(&i.vips),
        dns: strings(&i.dns),
        peer_virtual_ips: strings(&i.peer_vips),
        updating_addresses: i.updating_addresses,
        name: i.connection.clone(),
        state: match i.state {
            "established" => "ESTABLISHED",
            "IKE_SA_INIT sent" | "IKE_AUTH sent" => "CONNECTING",
            "half-open" => "HALF_OPEN",
            "rekeyed" => "REKEYED",
            "deleting" => "DELETING",
            other => other,
        }
        .into(),
        initiator: i.initiator,
        local: i.path.local.to_string(),
        remote: i.path.remote.to_string(),
        spi_initiator: i.spi_i,
        spi_responder: i.spi_r,
        local_behind_nat: i.local_behind_nat,
        remote_behind_nat: i.remote_behind_nat,
        mobike: i.mobike,
        child_sas: i
            .child_sas
            .iter()
            .map(|c| {
                let mut sa = ChildSa {
                    name: c.name.clone(),
                    state: c.state.to_uppercase(),
                    reqid: c.reqid,
                    spi_in: c.inbound_spi,
                    spi_out: c.outbound_spi,
                    local_ts: c.local_ts.iter().map(ts_string).collect(),
                    remote_ts: c.remote_ts.iter().map(ts_string).collect(),
                    rekey_in_seconds: seconds_until(c.rekey_at, now),
                    mode: match c.mode {
                        crate::engine::Mode::Tunnel => "TUNNEL",
                        crate::engine::Mode::Transport => "TRANSPORT",
                    }
                    .into(),
                    ..ChildSa::default()
                };
                match (backend, counters.get(&(c.reqid, c.inbound_spi))) {
                    (Backend::None, _) => {}
                    (Backend::Xfrm, Some(Ok(k))) => {
                        sa.counters_known = true;
                        sa.bytes_in = k.inbound.bytes;
                        sa.bytes_out = k.outbound.bytes;
                        sa.packets_in = k.inbound.packets;
                        sa.packets_out = k.outbound.packets;
                        sa.last_used_in = k.inbound.use_time;
                        sa.last_used_out = k.outbound.use_time;
                        sa.installed_at = k.inbound.add_time;
                        sa.replay_errors = k.inbound_stats.replay;
                        sa.integrity_failures = k.inbound_stats.integrity_failed;
                    }
                    (Backend::Xfrm, Some(Err(e))) => {
                        sa.counters_error = errchain::chain(e);
                    }
                    (Backend::Xfrm, None) => {
                        sa.counters_error =
                            "not installed in the kernel (its install failed: see the log)".into();
                    }
                }
                sa
            })
            .collect(),
    }
}

/// `10.1.0.0/24` when the range is a prefix, else `start-end`; protocol and
/// ports as `[proto/start-end]` when they restrict anything.
pub fn ts_string(ts: &TrafficSelector) -> String {
    let (s, e, bits) = match (ts.start_addr, ts.end_addr) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (u128::from(u32::from(a)), u128::from(u32::from(b)), 32),
        (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), 128),
        _ => (1, 0, 0),
    };
    let diff = s ^ e;
    let mut out = if bits > 0 && s <= e && diff & diff.wrapping_add(1) == 0 && s & diff == 0 {
        format!("{}/{}", ts.start_addr, bits - diff.count_ones())
    } else {
        format!("{}-{}", ts.start_addr, ts.end_addr)
    };
    if ts.ip_protocol != 0 || ts.start_port != 0 || ts.end_port != u16::MAX {
        let _ = write!(
            out,
            "[{}/{}-{}]",
            ts.ip_protocol, ts.start_port, ts.end_port
        );
    }
    out
}

/// A connection to a running agent's control socket.
#[derive(Debug)]
pub struct Client {
    path: PathBuf,
    inner: AgentControlClient<Channel>,
}

impl Client {
    /// Connects to the socket at `path`.
    pub async fn connect(path: &Path) -> Result<Self, ControlError> {
        let first = UnixStream::connect(path)
            .await
            .map_err(|source| ControlError::Connect {
                path: path.to_owned(),
                source,
            })?;
        let first = Arc::new(Mutex::new(Some(first)));
        let dial = Arc::new(path.to_owned());
        let channel_err = |source| ControlError::Channel {
            path: path.to_owned(),
            source,
        };
        // The URI is required by the API but never dialled.
        let channel: Channel = TonicEndpoint::try_from("http://[::]:50051")
            .map_err(channel_err)?
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let first = Arc::clone(&first);
                let dial = Arc::clone(&dial);
                async move {
                    let ready = first.lock().ok().and_then(|mut f| f.take());
                    let stream = match ready {
                        Some(s) => s,
                        None => UnixStream::connect(dial.as_path()).await?,
                    };
                    Ok::<_, std::io::Error>(TokioIo::new(stream))
                }
            }))
            .await
            .map_err(channel_err)?;
        Ok(Self {
            path: path.to_owned(),
            inner: AgentControlClient::new(channel),
        })
    }

    fn call_err(&self, verb: &'static str) -> impl FnOnce(tonic::Status) -> ControlError + use<> {
        let path = self.path.clone();
        move |status| ControlError::Call {
            path,
            verb,
            status: Box::new(status),
        }
    }

    /// `Status`.
    pub async fn status(&mut self) -> Result<StatusResponse, ControlError> {
        let err = self.call_err("status");
        self.inner
            .status(StatusRequest {})
            .await
            .map(tonic::Response::into_inner)
            .map_err(err)
    }

    /// `Initiate`, `Terminate` or `Rekey`.
    pub async fn command(&mut self, cmd: ControlCommand) -> Result<CommandResponse, ControlError> {
        let sel = |s: Selector| match s {
            Selector::Connection(connection) => SelectRequest {
                connection,
                ike_spi: 0,
            },
            Selector::Spi(ike_spi) => SelectRequest {
                connection: String::new(),
                ike_spi,
            },
        };
        let (verb, r) = match cmd {
            ControlCommand::Initiate(connection) => (
                "initiate",
                self.inner.initiate(InitiateRequest { connection }).await,
            ),
            ControlCommand::Terminate(s) => ("terminate", self.inner.terminate(sel(s)).await),
            ControlCommand::Rekey {
                select,
                child_spi_in,
            } => (
                "rekey",
                self.inner
                    .rekey(RekeyRequest {
                        select: Some(sel(select)),
                        child_spi_in: child_spi_in.unwrap_or(0),
                    })
                    .await,
            ),
            ControlCommand::UpdateAddresses {
                select,
                local,
                remote,
            } => (
                "update-addresses",
                self.inner
                    .update_addresses(UpdateAddressesRequest {
                        select: Some(sel(select)),
                        local: local.to_string(),
                        remote: remote.map(|r| r.to_string()).unwrap_or_default(),
                    })
                    .await,
            ),
        };
        r.map(tonic::Response::into_inner)
            .map_err(self.call_err(verb))
    }
}

/// Connects to the agent's control socket and asks for its status.
pub async fn status(path: &Path) -> Result<StatusResponse, ControlError> {
    Client::connect(path).await?.status().await
}

/// One JSON object per IKE SA, each on its own line (CHILD_SAs nested).
pub fn json_lines(st: &StatusResponse) -> String {
    let mut out = String::new();
    for sa in &st.ike_sas {
        let children: Vec<_> = sa
            .child_sas
            .iter()
            .map(|c| {
                serde_json::json!({
                    "name": c.name,
                    "state": c.state,
                    "mode": c.mode,
                    "reqid": c.reqid,
                    "spi_in": format!("{:08x}", c.spi_in),
                    "spi_out": format!("{:08x}", c.spi_out),
                    "local_ts": c.local_ts,
                    "remote_ts": c.remote_ts,
                    "counters_known": c.counters_known,
                    "bytes_in": c.bytes_in,
                    "bytes_out": c.bytes_out,
                    "packets_in": c.packets_in,
                    "packets_out": c.packets_out,
                    "last_used_in": c.last_used_in,
                    "last_used_out": c.last_used_out,
                    "installed_at": c.installed_at,
                    "replay_errors": c.replay_errors,
                    "integrity_failures": c.integrity_failures,
                    "counters_error": (!c.counters_error.is_empty()).then_some(&c.counters_error),
                    "rekey_in": c.rekey_in_seconds,
                })
            })
            .collect();
        let v = serde_json::json!({
            "name": sa.name,
            "state": sa.state,
            "initiator": sa.initiator,
            "local": sa.local,
            "remote": sa.remote,
            "spi_i": format!("{:016x}", sa.spi_initiator),
            "spi_r": format!("{:016x}", sa.spi_responder),
            "local_behind_nat": sa.local_behind_nat,
            "remote_behind_nat": sa.remote_behind_nat,
            "mobike": sa.mobike,
            "rekey_in": sa.rekey_in_seconds,
            "virtual_ips": sa.virtual_ips,
            "dns": sa.dns,
            "peer_virtual_ips": sa.peer_virtual_ips,
            "updating_addresses": sa.updating_addresses,
            "backend": st.backend,
            "child_sas": children,
        });
        out.push_str(&v.to_string());
        out.push('\n');
    }
    out
}

/// ` (3s ago)` for a use time in Unix seconds, nothing when never used.
fn ago(t: u64, now: u64) -> String {
    if t == 0 {
        String::new()
    } else {
        format!(" ({}s ago)", now.saturating_sub(t))
    }
}

fn list_or_none(v: &[String]) -> String {
    if v.is_empty() {
        "none".into()
    } else {
        v.join(",")
    }
}

/// `, rekey in 52m10s` (to the second), nothing when there is no rekey due.
fn rekey_in(s: Option<u64>) -> String {
    s.map_or_else(String::new, |s| {
        format!(
            ", rekey in {}",
            humantime::format_duration(std::time::Duration::from_secs(s))
        )
    })
}

/// A readable table: one line per IKE SA, its CHILD_SAs indented below.
pub fn table(st: &StatusResponse) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut out = String::new();
    if st.ike_sas.is_empty() {
        out.push_str("no IKE SAs\n");
        return out;
    }
    let _ = writeln!(
        out,
        "{:<12} {:<11} {:<24} {:<24} {:<33} {:<9} MOBIKE",
        "IKE SA", "STATE", "LOCAL", "REMOTE", "SPI_I/SPI_R", "NAT"
    );
    for sa in &st.ike_sas {
        let nat = match (sa.local_behind_nat, sa.remote_behind_nat) {
            (false, false) => "-",
            (true, false) => "local",
            (false, true) => "remote",
            (true, true) => "both",
        };
        let _ = writeln!(
            out,
            "{:<12} {:<11} {:<24} {:<24} {:016x}/{:016x} {:<9} {}{}",
            sa.name,
            sa.state,
            sa.local,
            sa.remote,
            sa.spi_initiator,
            sa.spi_responder,
            nat,
            if sa.mobike { "yes" } else { "no" },
            rekey_in(sa.rekey_in_seconds)
        );
        if !sa.virtual_ips.is_empty() || !sa.peer_virtual_ips.is_empty() {
            let _ = writeln!(
                out,
                "  virtual IPs: ours {}, the peer's {}{}",
                list_or_none(&sa.virtual_ips),
                list_or_none(&sa.peer_virtual_ips),
                if sa.dns.is_empty() {
                    String::new()
                } else {
                    format!(", DNS {}", sa.dns.join(","))
                }
            );
        }
        for c in &sa.child_sas {
            let counters = if c.counters_known {
                let mut t = format!(
                    "{} B/{} pkts in{}, {} B/{} pkts out{}",
                    c.bytes_in,
                    c.packets_in,
                    ago(c.last_used_in, now),
                    c.bytes_out,
                    c.packets_out,
                    ago(c.last_used_out, now)
                );
                if c.replay_errors > 0 || c.integrity_failures > 0 {
                    let _ = write!(
                        t,
                        ", dropped {} replayed, {} bad ICV",
                        c.replay_errors, c.integrity_failures
                    );
                }
                t
            } else if !c.counters_error.is_empty() {
                format!("counters unreadable: {}", c.counters_error)
            } else {
                format!("counters n/a (backend {})", st.backend)
            };
            let _ = writeln!(
                out,
                "  {:<10} {:<9} {:<9} in {:08x} out {:08x}  {} === {}  {}{}",
                c.name,
                c.state,
                c.mode,
                c.spi_in,
                c.spi_out,
                c.local_ts.join(","),
                c.remote_ts.join(","),
                counters,
                rekey_in(c.rekey_in_seconds)
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(a: &str, b: &str) -> TrafficSelector {
        TrafficSelector {
            ip_protocol: 0,
            start_port: 0,
            end_port: u16::MAX,
            start_addr: a.parse().unwrap(),
            end_addr: b.parse().unwrap(),
        }
    }

    fn child(name: &str, spi: u32) -> crate::engine::ChildSaInfo {
        crate::engine::ChildSaInfo {
            name: name.into(),
            state: "installed",
            reqid: 1,
            inbound_spi: spi,
            outbound_spi: spi + 1,
            local_ts: vec![ts("10.1.0.0", "10.1.0.255")],
            remote_ts: vec![ts("10.2.0.0", "10.2.0.255")],
            rekey_at: None,
            mode: crate::engine::Mode::Tunnel,
        }
    }

    #[test]
    fn counters_are_reported_per_child_and_missing_ones_say_why() {
        let now = Instant::now();
        let info = IkeSaInfo {
            id: 1,
            connection: "home".into(),
            initiator: true,
            state: "established",
            path: crate::engine::Path {
                local: "192.0.2.1:500".parse().unwrap(),
                remote: "192.0.2.2:500".parse().unwrap(),
            },
            mobike: true,
            local_behind_nat: false,
            remote_behind_nat: false,
            spi_i: 1,
            spi_r: 2,
            children: vec![(0x100, 0x101), (0x200, 0x201)],
            child_sas: vec![
                crate::engine::ChildSaInfo {
                    rekey_at: Some(now + std::time::Duration::from_secs(3130)),
                    ..child("net", 0x100)
                },
                child("net", 0x200),
            ],
            rekey_at: Some(now + std::time::Duration::from_secs(4 * 3600 - 1)),
            vips: vec!["10.9.0.1".parse().unwrap()],
            dns: vec!["10.9.0.53".parse().unwrap()],
            peer_vips: vec![],
            updating_addresses: false,
            next_request_id: 0,
            next_peer_request_id: 0,
        };
        let mut k = ChildSaCounters::default();
        k.inbound.bytes = 840;
        k.inbound.packets = 10;
        k.inbound.use_time = 1_700_000_000;
        k.inbound.add_time = 1_699_999_000;
        k.outbound.bytes = 1200;
        k.outbound.packets = 12;
        k.inbound_stats.replay = 3;
        let mut counters = Counters::new();
        counters.insert((1, 0x100), Ok(k));
        let sa = ike_sa(&info, Backend::Xfrm, &counters, now);
        let (a, b) = (&sa.child_sas[0], &sa.child_sas[1]);
        assert!(a.counters_known);
        assert_eq!(
            (a.bytes_in, a.packets_in, a.bytes_out, a.packets_out),
            (840, 10, 1200, 12)
        );
        assert_eq!(
            (a.last_used_in, a.installed_at, a.replay_errors),
            (1_700_000_000, 1_699_999_000, 3)
        );
        assert!(a.counters_error.is_empty());
        assert!(!b.counters_known);
        assert!(
            b.counters_error.contains("not installed"),
            "{}",
            b.counters_error
        );
        let st = StatusResponse {
            ike_sas: vec![sa.clone()],
            backend: "xfrm".into(),
        };
        let t = table(&st);
        assert!(t.contains("840 B/10 pkts in ("), "{t}");
        assert!(t.contains("dropped 3 replayed"), "{t}");
        assert!(t.contains("counters unreadable: not installed"), "{t}");
        let j: serde_json::Value = serde_json::from_str(json_lines(&st).trim()).unwrap();
        assert_eq!(j["child_sas"][0]["packets_in"], 10);
        assert_eq!(j["child_sas"][0]["counters_error"], serde_json::Value::Null);
        assert_eq!(j["child_sas"][1]["counters_known"], false);
        // When the rekeys are due, where there is one.
        assert_eq!(j["rekey_in"], 4 * 3600 - 1);
        assert_eq!(j["child_sas"][0]["rekey_in"], 3130);
        assert_eq!(j["child_sas"][1]["rekey_in"], serde_json::Value::Null);
        assert!(
            t.contains("MOBIKE") && t.contains("yes, rekey in 3h 59m 59s"),
            "{t}"
        );
        assert!(t.contains(", rekey in 52m 10s"), "{t}");
        assert!(
            t.contains("virtual IPs: ours 10.9.0.1, the peer's none, DNS 10.9.0.53"),
            "{t}"
        );
        assert_eq!(j["virtual_ips"], serde_json::json!(["10.9.0.1"]));
        // Backend none: nothing known, no error either.
        let none = ike_sa(&info, Backend::None, &Counters::new(), now);
        assert!(
            none.child_sas
                .iter()
                .all(|c| !c.counters_known && c.counters_error.is_empty())
        );
    }

    #[test]
    fn selectors_render_as_prefixes_when_they_are() {
        assert_eq!(ts_string(&ts("10.1.0.0", "10.1.0.255")), "10.1.0.0/24");
        assert_eq!(ts_string(&ts("10.1.0.7", "10.1.0.7")), "10.1.0.7/32");
        assert_eq!(ts_string(&ts("0.0.0.0", "255.255.255.255")), "0.0.0.0/0");
        assert_eq!(ts_string(&ts("10.1.0.1", "10.1.0.5")), "10.1.0.1-10.1.0.5");
        assert_eq!(ts_string(&ts("fd00::", "fd00::ffff")), "fd00::/112");
        let mut t = ts("10.0.0.1", "10.0.0.1");
        t.ip_protocol = 6;
        t.start_port = 443;
        t.end_port = 443;
        assert_eq!(ts_string(&t), "10.0.0.1/32[6/443-443]");
        assert_eq!(ts_string(&ts("10.0.0.1", "::1")), "10.0.0.1-::1");
    }
}
