//! The usual configurations (A initiates to B, PSK, one tunnel-mode child
//! each), their addresses and timers, and the seeds a randomized test runs.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use mobike_agent::{
    engine::{
        ChildConfig, ConnectionConfig, EndpointConfig, Mode, Timers, parse_identity, parse_ts,
    },
    proposal::{EspProposal, IkeProposal, parse_list},
};

/// Seeds for a randomized test: `0..default`, or `MOBIKE_SIM_SEEDS=N`
/// (`0..N`, soak runs) or `=A..B` (replay some).
pub fn seeds(default: u64) -> std::ops::Range<u64> {
    let v = std::env::var("MOBIKE_SIM_SEEDS").unwrap_or_default();
    if let Some((a, b)) = v.split_once("..")
        && let (Ok(a), Ok(b)) = (a.parse(), b.parse())
    {
        return a..b;
    }
    0..v.parse().unwrap_or(default)
}

pub const A_ADDR: &str = "192.0.2.1";
pub const B_ADDR: &str = "192.0.2.2";

pub fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

pub fn sock(a: IpAddr, port: u16) -> SocketAddr {
    SocketAddr::new(a, port)
}

pub fn timers() -> Timers {
    Timers {
        retransmit_timeout: Duration::from_secs(1),
        retransmit_tries: 5,
        dpd_delay: Some(Duration::from_secs(30)),
        ike_rekey_time: None,
        ike_rand_time: None,
        nat_keepalive: Duration::from_secs(20),
    }
}

#[allow(clippy::too_many_arguments)]
pub fn connection(
    name: &str,
    local: Option<SocketAddr>,
    remote: Option<SocketAddr>,
    local_id: &str,
    remote_id: &str,
    psk: &str,
    ike: &str,
    esp: &str,
    local_ts: &str,
    remote_ts: &str,
) -> ConnectionConfig {
    ConnectionConfig {
        name: name.into(),
        local_addr: local,
        remote_addr: remote,
        alt_local_addrs: vec![],
        alt_remote_addrs: vec![],
        local_id: parse_identity(local_id).expect("id"),
        remote_id: parse_identity(remote_id).expect("id"),
        psk: psk.as_bytes().to_vec(),
        ike_proposals: parse_list(ike, IkeProposal::parse).expect("ike proposal"),
        mobike: true,
        children: vec![ChildConfig {
            name: "net".into(),
            local_ts: vec![parse_ts(local_ts).expect("ts")],
            remote_ts: vec![parse_ts(remote_ts).expect("ts")],
            esp_proposals: parse_list(esp, EspProposal::parse).expect("esp proposal"),
            mode: Mode::Tunnel,
            rekey_time: None,
            rand_time: None,
            limits: Default::default(),
        }],
        timers: timers(),
        recovery: Default::default(),
        vips: Vec::new(),
        pools: Vec::new(),
        mobike_verify: Default::default(),
        no_nats: false,
        local_auth: mobike_agent::engine::LocalAuth::Psk,
        remote_auth: mobike_agent::engine::RemoteAuth::Psk,
    }
}

/// The usual pair: A (initiator, 10.1/24) and B (responder, 10.2/24).
pub fn configs(ike: &str, esp: &str) -> (EndpointConfig, EndpointConfig) {
    let a = connection(
        "ab",
        Some(sock(ip(A_ADDR), 500)),
        Some(sock(ip(B_ADDR), 500)),
        "a.test",
        "b.test",
        "sim-psk-0123456789",
        ike,
        esp,
        "10.1.0.0/24",
        "10.2.0.0/24",
    );
    let b = connection(
        "ab",
        None,
        None,
        "b.test",
        "a.test",
        "sim-psk-0123456789",
        ike,
        esp,
        "10.2.0.0/24",
        "10.1.0.0/24",
    );
    (
        EndpointConfig {
            connections: vec![a],
            ..EndpointConfig::default()
        },
        EndpointConfig {
            connections: vec![b],
            ..EndpointConfig::default()
        },
    )
}
