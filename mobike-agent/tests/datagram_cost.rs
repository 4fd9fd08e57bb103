//! The work of one datagram does not grow with the number of IKE SAs
//! (issue 12: the taken-SPI set was rebuilt on every call, half-open SAs
//! counted by a scan, deadlines found by a scan). Measured as the bytes
//! the engine allocates (a per-thread counting global allocator) while it
//! handles one liveness check of one IKE SA, with 8 and with 256
//! established IKE SAs (each with a CHILD_SA) beside it: the same.

use std::time::Instant;

use mobike_agent::{
    config_file::FileConfig,
    engine::{Command, Endpoint},
};

#[path = "support/counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::allocated;

const A: &str = r#"
[connections.ab]
local_addrs = ["192.0.2.1"]
remote_addrs = ["192.0.2.2"]
local_id = "a.test"
remote_id = "b.test"
psk = "cost-psk-0123456789"
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
remote_addrs = ["192.0.2.1"]
local_id = "b.test"
remote_id = "a.test"
psk = "cost-psk-0123456789"
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
        .expect("config");
    Endpoint::new(cfg.endpoint).expect("endpoint")
}

fn shuttle(now: Instant, a: &mut Endpoint, b: &mut Endpoint) {
    loop {
        let mut moved = false;
        while let Some(t) = a.poll_transmit() {
            b.handle_datagram(now, t.remote, t.local, &t.payload);
            moved = true;
        }
        while let Some(t) = b.poll_transmit() {
            a.handle_datagram(now, t.remote, t.local, &t.payload);
            moved = true;
        }
        if !moved {
            return;
        }
    }
}

/// Bytes B allocates handling A's liveness check of one of their IKE SAs
/// when they have `n` IKE SAs.
fn cost_with(n: usize) -> usize {
    let now = Instant::now();
    let (mut a, mut b) = (endpoint(A), endpoint(B));
    for _ in 0..n {
        a.handle_command(
            now,
            Command::Initiate {
                connection: "ab".into(),
                local: None,
            },
        )
        .expect("initiate");
        shuttle(now, &mut a, &mut b);
    }
    assert_eq!(b.ike_sa_count(), n);
    assert!(
        b.ike_sas()
            .iter()
            .all(|s| s.state == "established" && s.children.len() == 1)
    );
    while b.poll_event().is_some() {}
    while b.poll_kernel_action().is_some() {}
    // The least of three checks on three IKE SAs: a hash table that
    // happens to be full grows on one of them (amortized, and when it
    // happens depends on the random SPIs), never on all three.
    let mut least = usize::MAX;
    for sa in a.ike_sas().iter().take(3).map(|s| s.id) {
        a.handle_command(now, Command::Dpd(sa))
            .expect("liveness check");
        let t = a.poll_transmit().expect("the check");
        let ((), cost) = allocated(|| {
            b.handle_datagram(now, t.remote, t.local, &t.payload);
            let _ = b.poll_timeout();
        });
        let answer = b.poll_transmit().expect("B answered");
        a.handle_datagram(now, answer.remote, answer.local, &answer.payload);
        least = least.min(cost);
    }
    least
}

#[test]
fn a_liveness_check_costs_the_same_beside_8_or_256_ike_sas() {
    let few = cost_with(8);
    let many = cost_with(256);
    // A few bytes of slack for hash-map growth that depends on the keys.
    assert!(
        many <= few + 64,
        "{few} bytes beside 8 IKE SAs, {many} beside 256"
    );
}
