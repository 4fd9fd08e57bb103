//! Fuzzes the engine's datagram handling with state to hit: responder B has
//! an established IKE SA with A (MOBIKE, on port 4500, one CHILD_SA) and a
//! half-open one from C. The first input byte picks how the rest arrives:
//! 0: as is on port 500 from A; 1: on port 4500 from A (non-ESP marker
//! added); 2: on 4500 from A with the established SA's SPIs written into
//! its header, so it reaches that SA's exchange handling; 3: on 500 from C
//! with the half-open SA's SPIs written in. Whatever comes, the engine must
//! not panic, must keep the established SA (nothing unauthenticated ends
//! it), and its indexes must still match its SAs.
//!
//! B is prepared once per process, before the first input (three
//! endpoints from their TOML, the IKE_SA_INIT and IKE_AUTH with real
//! crypto: about 1.3 ms, against some 20 us for the input itself), and
//! each input gets its own copy
//! ([`Endpoint::try_clone`]), so every input starts from the same state,
//! alone or after any others: a crashing input replays to the same crash
//! by itself. Within one process the SAs' SPIs and keys are those of that
//! one preparation; randomness drawn during an input (SPIs, nonces) is
//! fresh each time, as before.

#![no_main]

use std::{
    net::SocketAddr,
    sync::OnceLock,
    time::{Duration, Instant},
};

use libfuzzer_sys::fuzz_target;
use mobike_agent::{
    config_file::FileConfig,
    engine::{Command, Endpoint},
    proto::NON_ESP_MARKER,
};

const A: &str = r#"
[connections.ab]
local_addrs = ["192.0.2.1"]
remote_addrs = ["192.0.2.2"]
local_id = "a.test"
remote_id = "b.test"
psk = "fuzz-psk-0123456789"
proposals = ["aes256gcm16-prfsha256-x25519"]
mobike = true
[connections.ab.children.net]
local_ts = ["10.1.0.0/24"]
remote_ts = ["10.2.0.0/24"]
esp_proposals = ["aes256gcm16"]
"#;

const B: &str = r#"
[connections.ab]
local_addrs = ["192.0.2.2"]
local_id = "b.test"
remote_id = "a.test"
psk = "fuzz-psk-0123456789"
proposals = ["aes256gcm16-prfsha256-x25519"]
mobike = true
[connections.ab.children.net]
local_ts = ["10.2.0.0/24"]
remote_ts = ["10.1.0.0/24"]
esp_proposals = ["aes256gcm16"]
"#;

fn endpoint(text: &str) -> Endpoint {
    let cfg = FileConfig::parse(text)
        .and_then(|f| f.to_agent_config())
        .expect("fuzz configuration");
    Endpoint::new(cfg.endpoint).expect("endpoint")
}

fn start() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

/// Delivers what `from` sends to `to`, rewriting `from`'s address as `as_`
/// (C is A's configuration at another address).
fn deliver(now: Instant, from: &mut Endpoint, to: &mut Endpoint, as_: Option<SocketAddr>) -> bool {
    let mut moved = false;
    while let Some(t) = from.poll_transmit() {
        let src = as_.map_or(t.local, |a| SocketAddr::new(a.ip(), t.local.port()));
        to.handle_datagram(now, t.remote, src, &t.payload);
        moved = true;
    }
    moved
}

thread_local! {
    /// [`setup`]'s B, prepared once (libFuzzer runs the target on one
    /// thread).
    static PREPARED: (Endpoint, (u64, u64), (u64, u64)) = setup(start());
}

/// B with an IKE SA established with A and a half-open one from C:
/// (B, established SA's SPIs, half-open SA's SPIs).
fn setup(now: Instant) -> (Endpoint, (u64, u64), (u64, u64)) {
    let (mut a, mut b, mut c) = (endpoint(A), endpoint(B), endpoint(A));
    let init = Command::Initiate {
        connection: "ab".into(),
        local: None,
    };
    a.handle_command(now, init.clone()).expect("initiate");
    while deliver(now, &mut a, &mut b, None) | deliver(now, &mut b, &mut a, None) {}
    c.handle_command(now, init).expect("initiate");
    deliver(now, &mut c, &mut b, Some(c_addr()));
    while b.poll_transmit().is_some() {}
    let sas = b.ike_sas();
    let est = sas
        .iter()
        .find(|s| s.state == "established")
        .expect("established");
    let half = sas.iter().find(|s| s.id != est.id).expect("half-open");
    (b, (est.spi_i, est.spi_r), (half.spi_i, half.spi_r))
}

fn c_addr() -> SocketAddr {
    "198.51.100.7:500".parse().unwrap()
}

fn with_spis(data: &[u8], (i, r): (u64, u64)) -> Vec<u8> {
    let mut d = data.to_vec();
    if d.len() >= 16 {
        d[..8].copy_from_slice(&i.to_be_bytes());
        d[8..16].copy_from_slice(&r.to_be_bytes());
    }
    d
}

// B is prepared before the first input (libFuzzer's initialisation, on the
// thread that runs the inputs), so an input's time, as libFuzzer reports it
// when replaying, is its own.
fuzz_target!(init: PREPARED.with(|_| ()), |input: &[u8]| {
    let Some((&mode, data)) = input.split_first() else {
        return;
    };
    let now = start();
    let (mut b, est, half) = PREPARED.with(|(b, est, half)| {
        let b = b
            .try_clone()
            .expect("B holds no Diffie-Hellman key of its own");
        (b, *est, *half)
    });
    let (b500, b4500): (SocketAddr, SocketAddr) = (
        "192.0.2.2:500".parse().unwrap(),
        "192.0.2.2:4500".parse().unwrap(),
    );
    let (a500, a4500): (SocketAddr, SocketAddr) = (
        "192.0.2.1:500".parse().unwrap(),
        "192.0.2.1:4500".parse().unwrap(),
    );
    let marked = |d: &[u8]| [&NON_ESP_MARKER[..], d].concat();
    match mode % 4 {
        0 => b.handle_datagram(now, b500, a500, data),
        1 => b.handle_datagram(now, b4500, a4500, &marked(data)),
        2 => b.handle_datagram(now, b4500, a4500, &marked(&with_spis(data, est))),
        _ => b.handle_datagram(now, b500, c_addr(), &with_spis(data, half)),
    }
    // And time passes a little: timers run on what the datagram left.
    b.handle_timeout(now + Duration::from_secs(1));
    while b.poll_transmit().is_some() {}
    assert!(
        b.ike_sas()
            .iter()
            .any(|s| s.spi_i == est.0 && s.spi_r == est.1 && s.state == "established"),
        "an unauthenticated datagram ended the established IKE SA"
    );
    assert!(b.indexes_agree(), "engine indexes disagree with its SAs");
});
