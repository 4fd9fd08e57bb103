//! Fuzzes the daemon's request conversion: arbitrary bytes decoded as the
//! request messages of the write and read verbs, then checked into the
//! model the way the gRPC adapter does. Nothing may panic; a trigger the
//! checks accept must survive its own wire form unchanged.

#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message as _;
use trigger_db::{
    model::{Filter, Timestamp, Trigger},
    peer::PeerCred,
    server::{check_flaps, check_query, client_triggers, wire::change_from_wire},
};
use trigger_proto::v1 as pb;

fuzz_target!(|data: &[u8]| {
    let now = Timestamp(1_800_000_000_000_000_000);
    let peer = PeerCred {
        uid: 1000,
        gid: 1000,
        pid: Some(1),
        groups: vec![],
    };
    if let Ok(add) = pb::AddRequest::decode(data)
        && let Ok(triggers) = client_triggers(&add.triggers, &peer, now)
    {
        for t in triggers {
            let again = Trigger::from_client(&t.to_wire(), "t", now).expect("own wire form checks");
            assert_eq!(again.kind, t.kind);
            assert_eq!(again.interface, t.interface);
        }
    }
    if let Ok(q) = pb::QueryRequest::decode(data) {
        let _ = check_query(&q);
    }
    if let Ok(f) = pb::FlapsRequest::decode(data) {
        let _ = check_flaps(&f, now);
    }
    if let Ok(s) = pb::SubscribeRequest::decode(data) {
        let _ = Filter::from_wire(s.filter.as_ref(), "filter");
    }
    if let Ok(c) = pb::ConfigureThresholdsRequest::decode(data) {
        for t in &c.thresholds {
            let _ = change_from_wire(t, "t");
        }
    }
});
