//! The gRPC adapter of the control socket: serves `mobike.v1.AgentControl`
//! (and server reflection, v1 and v1alpha) on a Unix socket, each
//! connection read through `daemon_support::h2_authority` so stock clients
//! that send the socket path as `:authority` are served; checks each call
//! into a [`ControlRequest`] for the runtime's loop, and turns the answer
//! back into the reply: a [`StatusSnapshot`] into a `StatusResponse`, a
//! [`Refused`] command into a gRPC status. It holds no agent state and
//! never touches the engine.

use std::{
    fmt::Write as _,
    net::IpAddr,
    path::Path,
    time::{Instant, SystemTime},
};

use daemon_support::h2_authority::AuthorityFix;
use tokio::{
    sync::{mpsc, oneshot},
    task::JoinHandle,
};
use tokio_stream::StreamExt as _;
use trigger_proto::mobike_v1::{
    ChildSa, CommandResponse, IkeSa, IkeSaRef, InitiateRequest, PeerCertificate, RekeyRequest,
    ReturnRoutability, SelectRequest, Stats, StatusRequest, StatusResponse, UpdateAddressesRequest,
    agent_control_server::{AgentControl, AgentControlServer},
};

use super::{
    ControlCommand, ControlError, ControlRequest, Counters, Refused, Selector, StatusSnapshot,
};
use crate::{
    config_file::Backend,
    engine::{CommandError, IkeSaInfo},
    proto::TrafficSelector,
};

/// Binds `path` (creating its directory, private if it is in the shared
/// temporary directory; replacing a stale socket file but never one a live
/// agent serves on; mode 0600 from the start) and serves `AgentControl` on
/// it, forwarding each call to `requests`.
pub async fn serve(
    path: &Path,
    requests: mpsc::Sender<ControlRequest>,
) -> Result<JoinHandle<()>, ControlError> {
    let listener = daemon_support::socket::bind("mobike-agent", path, 0o600, None).await?;
    // Every connection reads through AuthorityFix, so stock clients that
    // send the socket path as `:authority` (grpcio, grpc-java...) are served.
    let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener).map(|s| {
        s.map(|s| {
            let peer = match s.peer_cred() {
                Ok(c) => format!("uid={} pid={}", c.uid(), c.pid().unwrap_or(0)),
                Err(_) => "unknown peer".to_owned(),
            };
            AuthorityFix::new(s, peer)
        })
    });
    // Reflection in both versions: v1, and v1alpha, which clients such as
    // Python's grpcio-reflection and older grpcurl still ask. Only what this
    // socket serves is advertised (the descriptor set holds trigger-db's
    // service too).
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(trigger_proto::FILE_DESCRIPTOR_SET)
            .with_service_name("mobike.v1.AgentControl")
            .with_service_name("grpc.reflection.v1.ServerReflection")
            .with_service_name("grpc.reflection.v1alpha.ServerReflection")
    };
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .map_err(ControlError::Reflection)?;
    let reflection = reflection().build_v1().map_err(ControlError::Reflection)?;
    let svc = AgentControlServer::new(Service { requests });
    Ok(tokio::spawn(async move {
        if let Err(e) = tonic::transport::Server::builder()
            .add_service(svc)
            .add_service(reflection)
            .add_service(reflection_v1alpha)
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
        let acted_on = rx.await.map_err(shutting_down)?.map_err(refused_status)?;
        Ok(tonic::Response::new(CommandResponse {
            ike_sas: acted_on.iter().map(sa_ref).collect(),
        }))
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
        rx.await
            .map(|s| tonic::Response::new(status_response(&s)))
            .map_err(shutting_down)
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
        | CommandError::NoMobike(_)
        | CommandError::NotInitiator(_) => tonic::Status::failed_precondition(e.to_string()),
        CommandError::MixedFamilies { .. } => tonic::Status::invalid_argument(e.to_string()),
        CommandError::Random => tonic::Status::internal(e.to_string()),
    }
}

/// The gRPC status of a refused command, with its message.
fn refused_status(r: Refused) -> tonic::Status {
    match r {
        Refused::NoMatch(_) => tonic::Status::not_found(r.to_string()),
        Refused::Engine(e) => command_status(e),
        Refused::MixedFamilies { .. } => tonic::Status::invalid_argument(r.to_string()),
        Refused::NotListening(_) => tonic::Status::failed_precondition(r.to_string()),
    }
}

/// The status of every IKE SA in `s`, as the control API reports it, with
/// the CHILD_SA counters (backend `xfrm`).
fn status_response(s: &StatusSnapshot) -> StatusResponse {
    StatusResponse {
        ike_sas: s
            .ike_sas
            .iter()
            .map(|i| {
                let mut sa = ike_sa(i, s.backend, &s.counters, s.at, s.wall);
                sa.mobility = s.mobility.as_ref().and_then(|m| {
                    let (_, paths) = m.sas.iter().find(|(id, _)| *id == i.id)?;
                    Some(super::mobility::sa_mobility(paths, s.at))
                });
                sa
            })
            .collect(),
        backend: match s.backend {
            Backend::None => "none",
            Backend::Xfrm => "xfrm",
        }
        .into(),
        mobility: s.mobility.as_ref().map(super::mobility::mobility),
        stats: Some(Stats {
            half_open: s.ike_sas.iter().filter(|i| i.state == "half-open").count() as u64,
            ..stats(&s.stats)
        }),
    }
}

fn stats(s: &crate::engine::Stats) -> Stats {
    Stats {
        datagrams_received: s.datagrams_received,
        malformed: s.malformed,
        unknown_sa: s.unknown_sa,
        integrity_failures: s.integrity_failures,
        unexpected: s.unexpected,
        replayed_responses: s.replayed_responses,
        retransmits: s.retransmits,
        cookies_sent: s.cookies_sent,
        keepalives_received: s.keepalives_received,
        rekey_collisions: s.rekey_collisions,
        ike_rekey_collisions: s.ike_rekey_collisions,
        bad_cookie2: s.bad_cookie2,
        update_from_responder: s.update_from_responder,
        address_lists_refused: s.address_lists_refused,
        return_routability_checks: s.return_routability_checks,
        half_open_limit_drops: s.half_open_limit_drops,
        half_open_source_drops: s.half_open_source_drops,
        bad_nonces: s.bad_nonces,
        init_error_notifies: s.init_error_notifies,
        // A gauge of the snapshot's SAs, not an engine counter.
        half_open: 0,
    }
}

/// Unix seconds of `t` (negative before 1970).
fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_secs()).map_or(i64::MIN, |s| -s),
    }
}

/// The peer's certificate, its expiry counted from `wall`.
fn peer_certificate(c: &crate::engine::PeerCertInfo, wall: SystemTime) -> PeerCertificate {
    let not_after = unix_seconds(c.not_after);
    PeerCertificate {
        subject: c.subject.clone(),
        issuer: c.issuer.clone(),
        not_after,
        expires_in_seconds: not_after.saturating_sub(unix_seconds(wall)),
    }
}

/// Whole seconds from `now` to `t` (0 when past).
fn seconds_until(t: Option<Instant>, now: Instant) -> Option<u64> {
    t.map(|t| t.saturating_duration_since(now).as_secs())
}

fn ike_sa(
    i: &IkeSaInfo,
    backend: Backend,
    counters: &Counters,
    now: Instant,
    wall: SystemTime,
) -> IkeSa {
    let strings = |v: &[std::net::IpAddr]| v.iter().map(ToString::to_string).collect();
    IkeSa {
        rekey_in_seconds: seconds_until(i.rekey_at, now),
        virtual_ips: strings(&i.vips),
        dns: strings(&i.dns),
        peer_virtual_ips: strings(&i.peer_vips),
        updating_addresses: i.updating_addresses,
        local_addrs: strings(&i.local_addrs),
        peer_addrs: strings(&i.peer_addrs),
        remote_addrs: strings(&i.remote_addrs),
        mobility: None,
        local_auth: i.local_auth.map(|a| a.to_string()).unwrap_or_default(),
        remote_auth: i.remote_auth.map(|a| a.to_string()).unwrap_or_default(),
        peer_certificate: i.peer_cert.as_ref().map(|c| peer_certificate(c, wall)),
        return_routability: i.return_routability.as_ref().map(|r| ReturnRoutability {
            esp_local: r.esp.local.to_string(),
            esp_remote: r.esp.remote.to_string(),
            candidates: r.candidates.iter().map(ToString::to_string).collect(),
        }),
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
fn ts_string(ts: &TrafficSelector) -> String {
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

#[cfg(test)]
mod tests {
    use ipsec_backend::ChildSaCounters;

    use super::*;
    use crate::control::render::{json_lines, table};

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

    #[tokio::test]
    async fn a_socket_dir_in_the_temporary_directory_that_others_may_write_is_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        // As the fallback /tmp/mobike-agent-UID would be if another user
        // made it first, open to all.
        let top = tempfile::Builder::new()
            .prefix("mobike-agent-test-")
            .tempdir_in(std::env::temp_dir())
            .unwrap();
        std::fs::set_permissions(top.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let (tx, _rx) = mpsc::channel(1);
        let e = serve(&top.path().join("control.sock"), tx.clone())
            .await
            .unwrap_err();
        let chain = errchain::chain(&e).to_string();
        assert!(chain.contains("others may write"), "{chain}");
        // Ours and private: served, mode 0600.
        std::fs::set_permissions(top.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let path = top.path().join("control.sock");
        let task = serve(&path, tx).await.unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        task.abort();
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
            local_addrs: vec!["192.0.2.9".parse().unwrap()],
            peer_addrs: vec!["2001:db8::2".parse().unwrap()],
            remote_addrs: vec!["192.0.2.2".parse().unwrap(), "192.0.2.3".parse().unwrap()],
            return_routability: Some(crate::engine::ReturnRoutabilityInfo {
                esp: crate::engine::Path {
                    local: "192.0.2.1:4500".parse().unwrap(),
                    remote: "192.0.2.2:4500".parse().unwrap(),
                },
                candidates: vec!["192.0.2.7:4500".parse().unwrap()],
            }),
            next_request_id: 0,
            next_peer_request_id: 0,
            local_auth: None,
            remote_auth: None,
            peer_cert: None,
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
        let sa = ike_sa(&info, Backend::Xfrm, &counters, now, SystemTime::now());
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
            mobility: None,
            stats: Some(stats(&crate::engine::Stats {
                bad_cookie2: 2,
                return_routability_checks: 1,
                half_open_source_drops: 7,
                bad_nonces: 1,
                ..Default::default()
            })),
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
        // Both MOBIKE address lists and the configured peer addresses.
        assert!(
            t.contains(
                "addresses: ours 192.0.2.9, the peer's 2001:db8::2, configured peer 192.0.2.2,192.0.2.3"
            ),
            "{t}"
        );
        assert_eq!(j["local_addrs"], serde_json::json!(["192.0.2.9"]));
        assert_eq!(j["peer_addrs"], serde_json::json!(["2001:db8::2"]));
        assert_eq!(
            j["remote_addrs"],
            serde_json::json!(["192.0.2.2", "192.0.2.3"])
        );
        // The check under way and the MOBIKE counters.
        assert!(
            t.contains(
                "return routability check of 192.0.2.7:4500: ESP stays on 192.0.2.1:4500 - 192.0.2.2:4500"
            ),
            "{t}"
        );
        assert!(
            t.contains("MOBIKE: 1 return routability checks, 2 bad COOKIE2"),
            "{t}"
        );
        assert_eq!(
            j["return_routability"]["candidates"],
            serde_json::json!(["192.0.2.7:4500"])
        );
        assert_eq!(j["return_routability"]["esp_remote"], "192.0.2.2:4500");
        assert_eq!(j["stats"]["bad_cookie2"], 2);
        assert_eq!(j["stats"]["return_routability_checks"], 1);
        // The responder's defences (issue 12).
        assert!(
            t.contains(
                "dropped 0 at the half-open limit and 7 at the limit per source; 1 bad nonces"
            ),
            "{t}"
        );
        assert_eq!(j["stats"]["half_open_source_drops"], 7);
        // Backend none: nothing known, no error either.
        let none = ike_sa(
            &info,
            Backend::None,
            &Counters::new(),
            now,
            SystemTime::now(),
        );
        assert!(
            none.child_sas
                .iter()
                .all(|c| !c.counters_known && c.counters_error.is_empty())
        );
    }

    /// How each side authenticated and the peer's certificate, in the
    /// table and in JSON; a PSK IKE SA shows no certificate.
    #[test]
    fn authentication_and_the_peers_certificate_are_shown() {
        use crate::{engine::AuthUsed, pki::key::Scheme};
        let now = Instant::now();
        let wall = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000);
        let info = |local, remote, days: i64| IkeSaInfo {
            id: 1,
            connection: "home".into(),
            initiator: true,
            state: "established",
            path: crate::engine::Path {
                local: "192.0.2.1:500".parse().unwrap(),
                remote: "192.0.2.2:500".parse().unwrap(),
            },
            mobike: false,
            local_behind_nat: false,
            remote_behind_nat: false,
            spi_i: 1,
            spi_r: 2,
            children: vec![],
            child_sas: vec![],
            rekey_at: None,
            vips: vec![],
            dns: vec![],
            peer_vips: vec![],
            updating_addresses: false,
            local_addrs: vec![],
            peer_addrs: vec![],
            remote_addrs: vec![],
            return_routability: None,
            next_request_id: 0,
            next_peer_request_id: 0,
            local_auth: Some(local),
            remote_auth: Some(remote),
            peer_cert: (remote != AuthUsed::Psk).then(|| crate::engine::PeerCertInfo {
                subject: "C=CH, O=mobike test, CN=b.test".into(),
                issuer: "C=CH, O=mobike test, CN=Intermediate CA".into(),
                not_after: if days >= 0 {
                    wall + std::time::Duration::from_secs(days.unsigned_abs() * 86_400 + 5)
                } else {
                    wall - std::time::Duration::from_secs(days.unsigned_abs() * 86_400 - 5)
                },
            }),
        };
        let render = |i: &IkeSaInfo| {
            let st = StatusResponse {
                ike_sas: vec![ike_sa(i, Backend::None, &Counters::new(), now, wall)],
                backend: "none".into(),
                mobility: None,
                stats: None,
            };
            let j: serde_json::Value = serde_json::from_str(json_lines(&st).trim()).unwrap();
            (table(&st), j)
        };
        let (t, j) = render(&info(
            AuthUsed::Signature(Scheme::EcdsaP256Sha256),
            AuthUsed::Signature(Scheme::EcdsaP256Sha256Fixed),
            10,
        ));
        assert!(
            t.contains(
                "  auth: ours ecdsa-p256-sha256 (RFC 7427), the peer's ecdsa-256 (RFC 4754)\n"
            ),
            "{t}"
        );
        assert!(
            t.contains(
                "  peer certificate: C=CH, O=mobike test, CN=b.test, issued by C=CH, O=mobike test, CN=Intermediate CA, expires 2027-01-25T08:00:05Z (in 10 days)\n"
            ),
            "{t}"
        );
        assert_eq!(j["local_auth"], "ecdsa-p256-sha256 (RFC 7427)");
        assert_eq!(j["remote_auth"], "ecdsa-256 (RFC 4754)");
        assert_eq!(j["peer_cert"]["subject"], "C=CH, O=mobike test, CN=b.test");
        assert_eq!(
            j["peer_cert"]["issuer"],
            "C=CH, O=mobike test, CN=Intermediate CA"
        );
        assert_eq!(j["peer_cert"]["not_after"], "2027-01-25T08:00:05Z");
        assert_eq!(j["peer_cert"]["expires_in"], 10 * 86_400 + 5);

        // Expired since (the SA outlived it): said so, a negative count.
        let (t, j) = render(&info(
            AuthUsed::Psk,
            AuthUsed::Signature(Scheme::RsaPkcs1Sha1),
            -2,
        ));
        assert!(
            t.contains("  auth: ours psk, the peer's rsa-sha1 (RFC 7296)\n"),
            "{t}"
        );
        assert!(
            t.contains("expired 2027-01-13T08:00:05Z (1 days ago)"),
            "{t}"
        );
        assert_eq!(j["peer_cert"]["expires_in"], -(2 * 86_400 - 5));

        // Pre-shared keys both ways: no certificate.
        let (t, j) = render(&info(AuthUsed::Psk, AuthUsed::Psk, 0));
        assert!(t.contains("  auth: ours psk, the peer's psk\n"), "{t}");
        assert!(!t.contains("peer certificate"), "{t}");
        assert_eq!(j["local_auth"], "psk");
        assert_eq!(j["remote_auth"], "psk");
        assert_eq!(j["peer_cert"], serde_json::Value::Null);

        // Not authenticated yet: no auth line, null in JSON.
        let mut half = info(AuthUsed::Psk, AuthUsed::Psk, 0);
        (half.local_auth, half.remote_auth) = (None, None);
        let (t, j) = render(&half);
        assert!(!t.contains("auth:"), "{t}");
        assert_eq!(j["local_auth"], serde_json::Value::Null);
    }

    #[test]
    fn refused_commands_keep_their_codes_and_messages() {
        let cases = [
            (
                Refused::NoMatch(Selector::Connection("home".into())),
                tonic::Code::NotFound,
                "no IKE SA of connection `home`",
            ),
            (
                Refused::NoMatch(Selector::Spi(0xab)),
                tonic::Code::NotFound,
                "no IKE SA with SPI 00000000000000ab",
            ),
            (
                Refused::Engine(CommandError::UnknownConnection("nope".into())),
                tonic::Code::NotFound,
                "no connection named `nope`",
            ),
            (
                Refused::Engine(CommandError::NoMobike(1)),
                tonic::Code::FailedPrecondition,
                "MOBIKE was not negotiated on IKE SA 0x0000000000000001",
            ),
            (
                Refused::MixedFamilies {
                    local: "192.0.2.1".parse().unwrap(),
                    remote: "2001:db8::1".parse().unwrap(),
                },
                tonic::Code::InvalidArgument,
                "local 192.0.2.1 and remote 2001:db8::1 are of different address families",
            ),
            (
                Refused::NotListening("192.0.2.9".parse().unwrap()),
                tonic::Code::FailedPrecondition,
                "not listening on 192.0.2.9: add it to the connection's local_addrs (or leave them out for any)",
            ),
        ];
        for (refused, code, message) in cases {
            let st = refused_status(refused);
            assert_eq!((st.code(), st.message()), (code, message));
        }
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
