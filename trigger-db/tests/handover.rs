//! LINK_HANDOVER_COMPLETE with a completed move's fields (address pairs,
//! duration, move reason, cause trigger) against the real daemon: stored
//! and given back whole by Get, Query, Dump and across a restart; bad
//! addresses refused naming the field; `triggerctl add` takes them and
//! `history`, `get` and `get --json` show them.

use system_tests::trigger_db::{Daemon, client_trigger};
use trigger_db::model::TriggerType;
use trigger_proto::v1 as pb;

const DAEMON: &str = env!("CARGO_BIN_EXE_trigger-db");

fn link(name: &str, index: u32) -> pb::Interface {
    pb::Interface {
        index,
        name: name.into(),
        kind: pb::InterfaceKind::Ethernet as i32,
        ..Default::default()
    }
}

/// A completed move eth0 -> eth1, IPv4, caused by trigger `cause`.
fn handover_complete(cause: u64) -> pb::Trigger {
    let mut t = client_trigger(TriggerType::LinkHandoverComplete, "eth1");
    t.interface = Some(link("eth1", 3));
    t.detail = Some(pb::trigger::Detail::Handover(pb::Handover {
        old_link: Some(link("eth0", 2)),
        new_link: Some(link("eth1", 3)),
        old_local_address: "192.0.2.1".into(),
        old_remote_address: "198.51.100.7".into(),
        new_local_address: "203.0.113.5".into(),
        new_remote_address: "198.51.100.8".into(),
        duration_us: Some(1_234),
        move_reason: "link-down".into(),
        cause_trigger_id: cause,
    }));
    t
}

fn handover_mut(t: &mut pb::Trigger) -> &mut pb::Handover {
    match t.detail.as_mut() {
        Some(pb::trigger::Detail::Handover(h)) => h,
        other => panic!("no handover: {other:?}"),
    }
}

/// `stored` is `sent` with the id and time the daemon assigned.
fn assert_same_content(stored: &pb::Trigger, sent: &pb::Trigger) {
    let mut expect = sent.clone();
    expect.id = stored.id;
    expect.observed_at = stored.observed_at;
    expect.origin = stored.origin.clone();
    assert_eq!(stored, &expect);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handover_fields_survive_add_get_query_dump_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(DAEMON, dir.path(), None, None);
    let mut c = d.client().await;
    let cause = c
        .add(pb::AddRequest {
            triggers: vec![client_trigger(TriggerType::LinkDown, "eth0")],
        })
        .await
        .unwrap()
        .into_inner()
        .ids[0];
    let sent = handover_complete(cause);
    let id = c
        .add(pb::AddRequest {
            triggers: vec![sent.clone()],
        })
        .await
        .unwrap()
        .into_inner()
        .ids[0];

    let got = c
        .get(pb::GetRequest { id })
        .await
        .unwrap()
        .into_inner()
        .trigger
        .unwrap();
    assert_same_content(&got, &sent);

    let page = c
        .query(pb::QueryRequest {
            filter: Some(pb::TriggerFilter {
                types: vec![pb::TriggerType::LinkHandoverComplete as i32],
                ..Default::default()
            }),
            page_size: 10,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.triggers.len(), 1);
    assert_same_content(&page.triggers[0], &sent);

    d.restart();
    let mut c = d.client().await;
    let mut dump = c
        .dump(pb::DumpRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut all = Vec::new();
    while let Some(t) = dump.message().await.unwrap() {
        all.push(t);
    }
    assert_eq!(all.len(), 2);
    assert_eq!(all[1].id, id);
    assert_same_content(&all[1], &sent);
    let first = all[0].id;
    assert_eq!(handover_mut(&mut all[1]).cause_trigger_id, first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_handover_addresses_are_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(DAEMON, dir.path(), None, None);
    let mut c = d.client().await;
    type Spoil = fn(&mut pb::Handover);
    let cases: [(Spoil, &str); 5] = [
        (
            |h| h.old_local_address = "192.0.2".into(),
            "triggers[1].handover.old_local_address",
        ),
        (
            |h| h.old_remote_address = "peer".into(),
            "triggers[1].handover.old_remote_address",
        ),
        (
            |h| h.new_local_address = "203.0.113.5/24".into(),
            "triggers[1].handover.new_local_address",
        ),
        (
            |h| h.new_remote_address = "2001:db8::8".into(),
            "triggers[1].handover.new_remote_address",
        ),
        (
            |h| h.move_reason = "went away".into(),
            "triggers[1].handover.move_reason",
        ),
    ];
    for (spoil, field) in cases {
        let mut bad = handover_complete(0);
        spoil(handover_mut(&mut bad));
        let e = c
            .add(pb::AddRequest {
                triggers: vec![handover_complete(0), bad],
            })
            .await
            .expect_err(field);
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        assert!(e.message().starts_with(field), "{field}: {}", e.message());
    }
    let stats = c
        .stats(pb::StatsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.stored_triggers, 0, "a refused batch stores nothing");
}
