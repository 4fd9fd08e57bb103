//! Fuzzes the IKEv2 decoder and the engine's datagram path: arbitrary bytes
//! must never panic; whatever decodes must re-encode to something that
//! decodes the same; the engine must not answer junk with state.

#![no_main]

use std::{sync::OnceLock, time::Instant};

use libfuzzer_sys::fuzz_target;
use mobike_agent::{
    engine::{Endpoint, EndpointConfig},
    proto::{self, Message},
};

fn start() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Message::decode(data) {
        let again = Message::decode(&m.encode()).expect("own encoding decodes");
        assert_eq!(again.payloads, m.payloads);
    }
    let _ = proto::classify_nat_t(data);
    // A responder with no connections: every input is garbage or refused.
    let mut ep = Endpoint::new(EndpointConfig::default()).expect("endpoint");
    let (local, remote) = (
        "192.0.2.2:500".parse().unwrap(),
        "192.0.2.1:500".parse().unwrap(),
    );
    ep.handle_datagram(start(), local, remote, data);
    assert_eq!(ep.ike_sa_count(), 0);
    while ep.poll_transmit().is_some() {}
});
