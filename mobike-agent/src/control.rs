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
    ChildSa, IkeSa, StatusRequest, StatusResponse,
    agent_control_client::AgentControlClient,
    agent_control_server::{AgentControl, AgentControlServer},
};

use crate::{
    config_file::Backend,
    engine::{Endpoint, IkeSaInfo},
    proto::TrafficSelector,
};

/// Pending `Status` calls waiting for the runtime loop.
pub const QUEUE: usize = 16;

/// A `Status` call's reply slot, answered by the runtime loop.
pub type StatusReply = oneshot::Sender<StatusResponse>;

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
    #[error("control socket {path}: status call failed: {status}")]
    Call {
        /// Socket path.
        path: PathBuf,
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
    requests: mpsc::Sender<StatusReply>,
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
    requests: mpsc::Sender<StatusReply>,
}

#[tonic::async_trait]
impl AgentControl for Service {
    async fn status(
        &self,
        _request: tonic::Request<StatusRequest>,
    ) -> Result<tonic::Response<StatusResponse>, tonic::Status> {
        let (tx, rx) = oneshot::channel();
        self.requests
            .send(tx)
            .await
            .map_err(|_| tonic::Status::unavailable("the agent is shutting down"))?;
        rx.await
            .map(tonic::Response::new)
            .map_err(|_| tonic::Status::unavailable("the agent is shutting down"))
    }
}

/// Kernel counters of the installed CHILD_SAs by (reqid, inbound SPI), as
/// [`crate::kernel::Kernel::counters`] reads them.
pub type Counters = HashMap<(u32, u32), Result<ChildSaCounters, ipsec_backend::Error>>;

/// The status of every IKE SA of `ep`, as the control API reports it, with
/// the CHILD_SA counters from `counters` (backend `xfrm`).
pub fn snapshot(ep: &Endpoint, backend: Backend, counters: &Counters) -> StatusResponse {
    StatusResponse {
        ike_sas: ep
            .ike_sas()
            .iter()
            .map(|i| ike_sa(i, backend, counters))
            .collect(),
        backend: match backend {
            Backend::None => "none",
            Backend::Xfrm => "xfrm",
        }
        .into(),
    }
}

fn ike_sa(i: &IkeSaInfo, backend: Backend, counters: &Counters) -> IkeSa {
    IkeSa {
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
                        sa.counters_error = ipsec_backend::error::chain(e);
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

/// Connects to the agent's control socket and asks for its status.
pub async fn status(path: &Path) -> Result<StatusResponse, ControlError> {
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
    AgentControlClient::new(channel)
        .status(StatusRequest {})
        .await
        .map(tonic::Response::into_inner)
        .map_err(|status| ControlError::Call {
            path: path.to_owned(),
            status: Box::new(status),
        })
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
            "{:<12} {:<11} {:<24} {:<24} {:016x}/{:016x} {:<9} {}",
            sa.name,
            sa.state,
            sa.local,
            sa.remote,
            sa.spi_initiator,
            sa.spi_responder,
            nat,
            if sa.mobike { "yes" } else { "no" }
        );
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
                "  {:<10} {:<9} in {:08x} out {:08x}  {} === {}  {}",
                c.name,
                c.state,
                c.spi_in,
                c.spi_out,
                c.local_ts.join(","),
                c.remote_ts.join(","),
                counters
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
        }
    }

    #[test]
    fn counters_are_reported_per_child_and_missing_ones_say_why() {
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
            child_sas: vec![child("net", 0x100), child("net", 0x200)],
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
        let sa = ike_sa(&info, Backend::Xfrm, &counters);
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
        // Backend none: nothing known, no error either.
        let none = ike_sa(&info, Backend::None, &Counters::new());
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
