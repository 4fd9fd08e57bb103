//! Two endpoints talking directly for the unit tests of this module's
//! exchanges: A (192.0.2.1, original initiator) and B (192.0.2.2), one
//! MOBIKE IKE SA with one CHILD_SA, every datagram delivered at once.
//! Tests reach into the SAs to seal messages the engine would never send.

use std::time::Instant;

use crate::config_file::FileConfig;
use crate::engine::{Command, Endpoint, Event, KernelAction};

pub(super) const A: &str = r#"
[connections.ab]
local_addrs = ["192.0.2.1"]
remote_addrs = ["192.0.2.2"]
local_id = "a.test"
remote_id = "b.test"
psk = "unit-psk-0123456789"
proposals = ["aes256gcm16-prfsha256-x25519"]
mobike = true
[connections.ab.children.net]
local_ts = ["10.1.0.0/24"]
remote_ts = ["10.2.0.0/24"]
esp_proposals = ["aes256gcm16"]
"#;

pub(super) fn endpoint(text: &str) -> Endpoint {
    let cfg = FileConfig::parse(text).unwrap().to_agent_config().unwrap();
    Endpoint::new(cfg.endpoint).unwrap()
}

/// B's configuration: A's mirrored.
pub(super) fn b_text() -> String {
    A.replace("192.0.2.1", "X")
        .replace("192.0.2.2", "192.0.2.1")
        .replace("X", "192.0.2.2")
        .replace("\"a.test\"", "\"Y\"")
        .replace("\"b.test\"", "\"a.test\"")
        .replace("\"Y\"", "\"b.test\"")
        .replace("10.1.0.0", "Z")
        .replace("10.2.0.0", "10.1.0.0")
        .replace("Z", "10.2.0.0")
}

/// Delivers everything both send until nothing is left.
pub(super) fn shuttle(now: Instant, a: &mut Endpoint, b: &mut Endpoint) {
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

/// A and B with their IKE SA established; events and kernel actions so
/// far are drained.
pub(super) fn established() -> (Instant, Endpoint, Endpoint) {
    let (mut a, mut b) = (endpoint(A), endpoint(&b_text()));
    let now = Instant::now();
    a.handle_command(
        now,
        Command::Initiate {
            connection: "ab".into(),
            local: None,
        },
    )
    .unwrap();
    shuttle(now, &mut a, &mut b);
    assert_eq!(a.ike_sas()[0].state, "established");
    assert!(a.ike_sas()[0].mobike);
    for e in [&mut a, &mut b] {
        while e.poll_event().is_some() {}
        while e.poll_kernel_action().is_some() {}
    }
    (now, a, b)
}

pub(super) fn events(a: &mut Endpoint) -> Vec<Event> {
    std::iter::from_fn(|| a.poll_event()).collect()
}

pub(super) fn kernel_actions(a: &mut Endpoint) -> Vec<KernelAction> {
    std::iter::from_fn(|| a.poll_kernel_action()).collect()
}
