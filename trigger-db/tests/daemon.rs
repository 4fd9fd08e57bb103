//! System tests of the trigger-db daemon as a process: resume, durability,
//! slow subscribers, access control, bad input, shutdown.

use std::time::Duration;

use system_tests::trigger_db::*;
use trigger_db::model::TriggerType;
use trigger_proto::v1::{self as pb, subscribe_response::Item};

const DAEMON: &str = env!("CARGO_BIN_EXE_trigger-db");

fn ids_of(items: &[Item]) -> Vec<u64> {
    items
        .iter()
        .filter_map(|i| match i {
            Item::Trigger(t) => Some(t.id),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_after_id_replays_exactly_the_missed_triggers_also_across_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(DAEMON, dir.path(), None, None);
    let mut c = d.client().await;
    let first = add_many(&mut c, "eth0", 5, 5).await;

    // A subscriber sees the first five live, then goes away.
    let mut s = c
        .subscribe(pb::SubscribeRequest {
            resume_after_id: Some(0),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut seen = Vec::new();
    while seen.len() < 5 {
        seen.push(next_item(&mut s, 5).await.unwrap());
    }
    assert_eq!(ids_of(&seen), first);
    let last_seen = *first.last().unwrap();
    drop(s);

    // It misses three, and a daemon restart, and three more.
    let missed_a = add_many(&mut c, "eth0", 3, 3).await;
    d.restart();
    let mut c = d.client().await;
    let missed_b = add_many(&mut c, "eth1", 3, 3).await;

    let mut s = c
        .subscribe(pb::SubscribeRequest {
            resume_after_id: Some(last_seen),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut got = Vec::new();
    while got.len() < 6 {
        got.push(next_item(&mut s, 5).await.unwrap());
    }
    let expect: Vec<u64> = missed_a.iter().chain(&missed_b).copied().collect();
    assert_eq!(ids_of(&got), expect);
    // Then live, with nothing duplicated in between.
    let live = add_many(&mut c, "eth0", 1, 1).await;
    assert_eq!(ids_of(&[next_item(&mut s, 5).await.unwrap()]), live);
    assert!(live[0] > *expect.last().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_add_of_ten_thousand_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(DAEMON, dir.path(), None, None);
    let mut c = d.client().await;
    let ids = add_many(&mut c, "wlan0", 10_000, 1_000).await;
    d.kill9();
    d.restart();
    let mut c = d.client().await;
    let mut stream = c
        .dump(pb::DumpRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut stored = Vec::new();
    while let Some(t) = stream.message().await.unwrap() {
        stored.push(t.id);
    }
    assert_eq!(stored, ids);
    let stats = c
        .stats(pb::StatsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.stored_triggers, 10_000);
    // Without the store's counts: the in-memory counters only.
    let quick = c
        .stats(pb::StatsRequest { skip_store: true })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(quick.stored_triggers, 0, "{quick:?}");
    assert!(
        quick.by_type.is_empty() && quick.by_source.is_empty(),
        "{quick:?}"
    );
    assert_eq!(quick.last_id, stats.last_id);
    assert_eq!(quick.ingested_total, stats.ingested_total);
}

/// Subscribers get triggers before the store commits them; ids come from a
/// range reserved in the store first, so after a crash (which may lose
/// rows a subscriber was sent) no id is ever given twice: a subscriber
/// resuming after the last id it saw gets exactly what came after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_crash_ids_go_on_above_anything_a_subscriber_was_sent() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(DAEMON, dir.path(), None, None);
    let mut c = d.client().await;
    let before = add_many(&mut c, "wlan0", 3, 3).await;
    d.kill9();
    d.restart();
    let mut c = d.client().await;
    let stats = c
        .stats(pb::StatsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(stats.last_id >= *before.last().unwrap(), "{stats:?}");
    let mut s = c
        .subscribe(pb::SubscribeRequest {
            resume_after_id: Some(*before.last().unwrap()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let after = add_many(&mut c, "eth0", 2, 2).await;
    assert!(
        after[0] > stats.last_id,
        "{after:?} after a crash at {stats:?}"
    );
    let mut got = Vec::new();
    while got.len() < 2 {
        got.push(next_item(&mut s, 5).await.unwrap());
    }
    assert_eq!(ids_of(&got), after);
    // A clean restart gives the rest of the reservation back: ids go on
    // densely.
    d.restart();
    let mut c = d.client().await;
    let next = add_many(&mut c, "eth0", 1, 1).await;
    assert_eq!(next, [after[1] + 1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_subscriber_gets_a_gap_notice_and_never_delays_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(
        DAEMON,
        dir.path(),
        None,
        Some("[sources.rtnetlink]\nenabled = false\n[subscribers]\nqueue = 2048\n"),
    );
    let mut c = d.client().await;
    // The slow one subscribes and then never reads; each has its own
    // connection, as separate processes would.
    let mut slow = small_window_client(&d.socket)
        .await
        .subscribe(pb::SubscribeRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut fast = d
        .client()
        .await
        .subscribe(pb::SubscribeRequest::default())
        .await
        .unwrap()
        .into_inner();
    // Enough to overflow the slow one's queue and its HTTP/2 windows.
    let total = 20_000;
    let reader = tokio::spawn(async move {
        let mut ids = Vec::new();
        while ids.len() < total {
            match next_item(&mut fast, 30).await {
                Some(Item::Trigger(t)) => ids.push(t.id),
                other => panic!("fast subscriber got {other:?}"),
            }
        }
        ids
    });
    let added = add_many(&mut c, "eth0", total, 100).await;
    let fast_ids = reader.await.unwrap();
    assert_eq!(fast_ids, added, "the reading subscriber got everything");

    // Now the slow one reads: what was queued, then the gap notice.
    let mut delivered = Vec::new();
    let gap = loop {
        let item = tokio::time::timeout(Duration::from_secs(10), slow.message()).await;
        let Ok(Ok(Some(pb::SubscribeResponse { item: Some(item) }))) = item else {
            panic!(
                "slow stream: {item:?} after {}: {}",
                delivered.len(),
                d.log_text()
            );
        };
        match Some(item) {
            Some(Item::Trigger(t)) => delivered.push(t.id),
            Some(Item::Gap(g)) => break g,
            other => panic!("slow subscriber got {other:?}"),
        }
    };
    assert!(delivered.len() < total, "the slow one was cut off");
    assert_eq!(delivered, added[..delivered.len()].to_vec());
    assert_eq!(gap.first_missed_id, added[delivered.len()]);
    assert_eq!(gap.resume_after_id, gap.first_missed_id - 1);
    assert!(
        next_item(&mut slow, 10).await.is_none(),
        "stream ends after the notice"
    );

    // Resuming from the notice yields the rest, exactly.
    let mut s = c
        .subscribe(pb::SubscribeRequest {
            resume_after_id: Some(gap.resume_after_id),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut rest = Vec::new();
    while rest.len() < total - delivered.len() {
        match next_item(&mut s, 10).await {
            Some(Item::Trigger(t)) => rest.push(t.id),
            other => panic!("resumed subscriber got {other:?}"),
        }
    }
    assert_eq!(rest, added[delivered.len()..].to_vec());
    let stats = c
        .stats(pb::StatsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(stats.gap_notices >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_invalid_argument_naming_the_field_and_the_daemon_stays_up() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(DAEMON, dir.path(), None, None);
    let mut c = d.client().await;

    async fn expect_invalid<T: std::fmt::Debug>(
        r: Result<tonic::Response<T>, tonic::Status>,
        field: &str,
    ) {
        let e = r.expect_err("must be refused");
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        assert!(e.message().starts_with(field), "{field}: {}", e.message());
    }

    let mut bad = client_trigger(TriggerType::LinkUp, "eth0");
    bad.r#type = 999;
    expect_invalid(
        c.add(pb::AddRequest {
            triggers: vec![client_trigger(TriggerType::LinkUp, "eth0"), bad],
        })
        .await,
        "triggers[1].type",
    )
    .await;
    let mut bad = client_trigger(TriggerType::LinkUp, "eth0");
    bad.interface.as_mut().unwrap().kind = 77;
    expect_invalid(
        c.add(pb::AddRequest {
            triggers: vec![bad],
        })
        .await,
        "triggers[0].interface.kind",
    )
    .await;
    // Missing required fields.
    let mut bad = client_trigger(TriggerType::IfAddrAdded, "eth0");
    bad.address = None;
    expect_invalid(
        c.add(pb::AddRequest {
            triggers: vec![bad],
        })
        .await,
        "triggers[0].address",
    )
    .await;
    let bad = client_trigger(TriggerType::LinkGoingDown, "wlan0");
    expect_invalid(
        c.add(pb::AddRequest {
            triggers: vec![bad],
        })
        .await,
        "triggers[0].going_down",
    )
    .await;
    // Oversized batch.
    let big = vec![client_trigger(TriggerType::LinkUp, "eth0"); 10_001];
    expect_invalid(c.add(pb::AddRequest { triggers: big }).await, "triggers").await;
    // Reversed time range, page sizes.
    let q = |since: i64, until: i64, page_size: u32| pb::QueryRequest {
        since: Some(prost_types::Timestamp {
            seconds: since,
            nanos: 0,
        }),
        until: Some(prost_types::Timestamp {
            seconds: until,
            nanos: 0,
        }),
        page_size,
        ..Default::default()
    };
    expect_invalid(c.query(q(2_000, 1_000, 10)).await, "until").await;
    expect_invalid(c.query(q(1_000, 2_000, 0)).await, "page_size").await;
    expect_invalid(c.query(q(1_000, 2_000, 1_001)).await, "page_size").await;
    let mut bad_filter = q(1_000, 2_000, 10);
    bad_filter.filter = Some(pb::TriggerFilter {
        sources: vec![42],
        ..Default::default()
    });
    expect_invalid(c.query(bad_filter).await, "filter.sources[0]").await;
    let mut bad_token = q(1_000, 2_000, 10);
    bad_token.page_token = "garbage".into();
    expect_invalid(c.query(bad_token).await, "page_token").await;
    // Hosts: each one checked, not both hosts and all_hosts; a SQLite
    // daemon holds only its own host.
    let mut hosts = q(1_000, 2_000, 10);
    hosts.hosts = vec!["gw-1".into(), String::new()];
    expect_invalid(c.query(hosts.clone()).await, "hosts[1]").await;
    hosts.hosts = vec!["gw-1".into()];
    hosts.all_hosts = true;
    expect_invalid(c.query(hosts.clone()).await, "all_hosts").await;
    hosts.all_hosts = false;
    hosts.hosts = vec!["no-such-host-here".into()];
    let e = c.query(hosts).await.expect_err("another host on SQLite");
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(
        e.message()
            .starts_with("hosts: \"no-such-host-here\" is not in this database"),
        "{}",
        e.message()
    );
    let all = q(1_000, 2_000, 10);
    c.query(pb::QueryRequest {
        all_hosts: true,
        ..all
    })
    .await
    .expect("all hosts is this one on SQLite");
    expect_invalid(
        c.flaps(pb::FlapsRequest {
            since: Some(prost_types::Timestamp {
                seconds: 1_000,
                nanos: 0,
            }),
            until: Some(prost_types::Timestamp {
                seconds: 1_600,
                nanos: 0,
            }),
            bucket_s: 60,
            hosts: vec!["gw\t1".into()],
            by_host: true,
            ..Default::default()
        })
        .await,
        "hosts[0]",
    )
    .await;
    expect_invalid(
        c.subscribe(pb::SubscribeRequest {
            filter: Some(pb::TriggerFilter {
                types: vec![-3],
                ..Default::default()
            }),
            ..Default::default()
        })
        .await,
        "filter.types[0]",
    )
    .await;
    expect_invalid(
        c.subscribe(pb::SubscribeRequest {
            resume_after_id: Some(1 << 40),
            ..Default::default()
        })
        .await,
        "resume_after_id",
    )
    .await;
    expect_invalid(c.delete(pb::DeleteRequest { ids: vec![] }).await, "ids").await;
    // Not found is not invalid.
    let e = c.get(pb::GetRequest { id: 12345 }).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);

    // Still up, nothing stored by the refused calls, and counted.
    let stats = c
        .stats(pb::StatsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.stored_triggers, 0);
    assert!(stats.rejected_requests >= 12, "{stats:?}");
    add_many(&mut c, "eth0", 1, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_pages_by_cursor_in_time_order_with_filters() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(DAEMON, dir.path(), None, None);
    let mut c = d.client().await;
    let eth = add_many(&mut c, "eth0", 25, 10).await;
    add_many(&mut c, "wlan0", 10, 10).await;
    let mut token = String::new();
    let mut got = Vec::new();
    loop {
        let page = c
            .query(pb::QueryRequest {
                filter: Some(pb::TriggerFilter {
                    interfaces: vec!["eth0".into()],
                    ..Default::default()
                }),
                page_size: 10,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.triggers.len() <= 10);
        got.extend(page.triggers.iter().map(|t| t.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(got, eth);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_streams_cleanly_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(DAEMON, dir.path(), None, None);
    let mut c = d.client().await;
    let mut s = c
        .subscribe(pb::SubscribeRequest::default())
        .await
        .unwrap()
        .into_inner();
    add_many(&mut c, "eth0", 3, 3).await;
    for _ in 0..3 {
        next_item(&mut s, 5).await.unwrap();
    }
    let st = d.terminate();
    assert!(st.success(), "exit status {st}: {}", d.log_text());
    // The stream ended with OK status, not an error.
    let end = tokio::time::timeout(Duration::from_secs(5), s.message())
        .await
        .expect("stream end");
    assert!(matches!(end, Ok(None)), "{end:?}");
    assert!(!d.socket.exists(), "socket removed on exit");
}

#[test]
fn config_with_unknown_key_fails_naming_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "writer_group = \"root\"\n[store]\nretention = 5\n").unwrap();
    let out = std::process::Command::new(DAEMON)
        .arg("--config")
        .arg(&cfg)
        .arg("--socket")
        .arg(dir.path().join("s"))
        .arg("--database")
        .arg(dir.path().join("d.db"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("retention") && err.contains("line 3"), "{err}");
    std::fs::write(&cfg, "[subscribers]\nqueue = \"lots\"\n").unwrap();
    let out = std::process::Command::new(DAEMON)
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("line 2"), "{err}");
}

/// A `--database` that is no usable database stops the daemon at start
/// with an error saying what is wrong, never showing a password.
#[test]
fn bad_database_values_fail_at_start_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    for (given, says) in [
        ("mysql://u:secret@h/db", "unknown URL scheme \"mysql\""),
        (
            "postgres://u:secret@h:port/db",
            "not a usable PostgreSQL URL",
        ),
        ("sqlite:t.db?mode=ro", "parameters are not supported"),
        (
            "postgres:///db?host=/nonexistent-dir&user=u&password=secret",
            "cannot open the database postgresql://u@socket in /nonexistent-dir database db",
        ),
    ] {
        let out = std::process::Command::new(DAEMON)
            .arg("--socket")
            .arg(dir.path().join("s"))
            .arg("--database")
            .arg(given)
            .env("TRIGGER_DB_LOG", "off")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{given}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{given}: {err}");
        assert!(
            !err.contains("secret"),
            "{given}: the password shows: {err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_modify_delete_flush_and_dump_act_on_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(DAEMON, dir.path(), None, None);
    let mut c = d.client().await;
    let eth = add_many(&mut c, "eth0", 3, 3).await;
    let wlan = add_many(&mut c, "wlan0", 2, 2).await;

    let got = c
        .get(pb::GetRequest { id: eth[0] })
        .await
        .unwrap()
        .into_inner();
    let got = got.trigger.unwrap();
    assert_eq!(got.id, eth[0]);
    assert_eq!(got.interface.as_ref().unwrap().name, "eth0");

    // Modify keeps id, time and source; replaces the rest.
    let mut changed = client_trigger(TriggerType::LinkDown, "eth9");
    changed.id = eth[0];
    let m = c
        .modify(pb::ModifyRequest {
            trigger: Some(changed),
        })
        .await
        .unwrap()
        .into_inner()
        .trigger
        .unwrap();
    assert_eq!(m.id, eth[0]);
    assert_eq!(m.observed_at, got.observed_at);
    assert_eq!(m.r#type, pb::TriggerType::LinkDown as i32);
    let again = c
        .get(pb::GetRequest { id: eth[0] })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.trigger.unwrap().interface.unwrap().name, "eth9");

    let del = c
        .delete(pb::DeleteRequest {
            ids: vec![eth[1], 999_999],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(del.deleted, 1);
    let e = c.get(pb::GetRequest { id: eth[1] }).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);

    let flushed = c
        .flush(pb::FlushRequest {
            filter: Some(pb::TriggerFilter {
                interfaces: vec!["wlan0".into()],
                ..Default::default()
            }),
            before: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(flushed.deleted, wlan.len() as u64);

    let mut dump = c
        .dump(pb::DumpRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut left = Vec::new();
    while let Some(t) = dump.message().await.unwrap() {
        left.push(t.id);
    }
    assert_eq!(left, vec![eth[0], eth[2]]);
    // Ids are never reused after deletes.
    let next = add_many(&mut c, "eth0", 1, 1).await;
    assert!(next[0] > wlan[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_reflection_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(DAEMON, dir.path(), None, None);
    let ch = channel(&d.socket, false).await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(ch.clone());
    let r = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "trigger.v1.TriggerService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        r.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let mut refl = ServerReflectionClient::new(ch);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut resp = refl
        .server_reflection_info(tokio_stream::iter([req]))
        .await
        .unwrap()
        .into_inner();
    let msg = resp.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = msg.message_response else {
        panic!("unexpected reflection answer {msg:?}");
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&"trigger.v1.TriggerService"), "{names:?}");
    assert!(names.contains(&"grpc.health.v1.Health"), "{names:?}");
    // Only what the socket serves: not the agent's service of the same
    // descriptor set.
    assert!(!names.contains(&"mobike.v1.AgentControl"), "{names:?}");

    // v1alpha too (Python's grpcio-reflection and older grpcurl ask it).
    use tonic_reflection::pb::v1alpha as alpha;
    let mut refl = alpha::server_reflection_client::ServerReflectionClient::new(
        channel(&d.socket, false).await,
    );
    let req = alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let mut resp = refl
        .server_reflection_info(tokio_stream::iter([req]))
        .await
        .unwrap()
        .into_inner();
    let msg = resp.message().await.unwrap().unwrap();
    let Some(alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        msg.message_response
    else {
        panic!("unexpected v1alpha reflection answer {msg:?}");
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&"trigger.v1.TriggerService"), "{names:?}");
    assert!(
        names.contains(&"grpc.reflection.v1alpha.ServerReflection"),
        "{names:?}"
    );
}

/// A path no service serves is answered UNIMPLEMENTED (trailers-only), as
/// tonic's router answers it; the connection stays usable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_service_is_unimplemented() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(DAEMON, dir.path(), None, None);
    let io = tokio::net::UnixStream::connect(&d.socket).await.unwrap();
    let (send, conn) = h2::client::handshake(io).await.unwrap();
    tokio::spawn(conn);
    for path in ["/no.such.Service/Method", "/", "/trigger.v1.TriggerService"] {
        let mut send = send.clone().ready().await.unwrap();
        let req = http::Request::post(format!("http://localhost{path}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .unwrap();
        let (resp, mut body) = send.send_request(req, false).unwrap();
        body.send_data(bytes::Bytes::from_static(&[0, 0, 0, 0, 0]), true)
            .unwrap();
        let resp = resp.await.unwrap();
        assert_eq!(resp.status(), http::StatusCode::OK, "{path}");
        assert_eq!(
            resp.headers()["grpc-status"],
            (tonic::Code::Unimplemented as i32).to_string(),
            "{path}"
        );
    }
}

/// A daemon keeping 5 rows, 20 added, once retention has run: the daemon,
/// a client, the 20 ids and the Stats then.
async fn twenty_added_five_kept(
    dir: &std::path::Path,
) -> (Daemon, trigger_client::Client, Vec<u64>, pb::StatsResponse) {
    let d = Daemon::start(
        DAEMON,
        dir,
        None,
        Some(
            "[store]\nretention_max_rows = 5\nretention_interval = \"1s\"\n\
             [sources.rtnetlink]\nenabled = false\n",
        ),
    );
    let mut c = d.client().await;
    let ids = add_many(&mut c, "eth0", 20, 20).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let stats = loop {
        let s = c
            .stats(pb::StatsRequest::default())
            .await
            .unwrap()
            .into_inner();
        if s.stored_triggers <= 5 || std::time::Instant::now() > deadline {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    (d, c, ids, stats)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_keeps_only_the_newest_rows() {
    let dir = tempfile::tempdir().unwrap();
    let (_d, _c, ids, stats) = twenty_added_five_kept(dir.path()).await;
    assert_eq!(stats.stored_triggers, 5, "{stats:?}");
    assert_eq!(stats.first_id, ids[15]);
    assert_eq!(stats.retention_deleted, 15);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_after_an_id_retention_removed_gets_a_gap_notice_first() {
    let dir = tempfile::tempdir().unwrap();
    let (_d, mut c, ids, stats) = twenty_added_five_kept(dir.path()).await;
    assert_eq!(stats.stored_triggers, 5, "retention never ran: {stats:?}");
    // The subscriber last saw ids[0]; ids[1..15] are gone.
    let mut s = c
        .subscribe(pb::SubscribeRequest {
            resume_after_id: Some(ids[0]),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    match next_item(&mut s, 5).await {
        Some(Item::Gap(g)) => {
            assert_eq!(g.first_missed_id, ids[1]);
            assert_eq!(g.resume_after_id, ids[14]);
        }
        other => panic!("expected a gap notice first, got {other:?}"),
    }
    assert!(next_item(&mut s, 5).await.is_none(), "the stream ends");
    // Resuming where the notice says replays the rest, without a gap.
    let mut s = c
        .subscribe(pb::SubscribeRequest {
            resume_after_id: Some(ids[14]),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut got = Vec::new();
    while got.len() < 5 {
        got.push(next_item(&mut s, 5).await.unwrap());
    }
    assert_eq!(ids_of(&got), ids[15..]);
}

/// SIGKILL in the middle of ingest, 100 times: after every restart each
/// acknowledged trigger is stored. An adder keeps Adds in flight while
/// the daemon is killed, so some kills land between commit and ack, or in
/// the middle of a transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_trigger_survives_a_hundred_sigkills_mid_ingest() {
    use std::sync::{Arc, Mutex};
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(DAEMON, dir.path(), None, None);
    let mut all_acked = Vec::new();
    for round in 0..100 {
        let acked = Arc::new(Mutex::new(Vec::<u64>::new()));
        let mut c = d.client().await;
        let adder = {
            let acked = acked.clone();
            tokio::spawn(async move {
                loop {
                    let triggers = (0..20)
                        .map(|_| client_trigger(TriggerType::LinkUp, "eth0"))
                        .collect();
                    match c.add(pb::AddRequest { triggers }).await {
                        Ok(r) => acked.lock().unwrap().extend(r.into_inner().ids),
                        // The daemon was killed under this Add.
                        Err(_) => return,
                    }
                }
            })
        };
        // Kill once this round has at least one acknowledged batch, with
        // the next Add in flight.
        let mut waited = 0;
        while acked.lock().unwrap().is_empty() {
            assert!(waited < 3_000, "round {round}: no Add acknowledged");
            waited += 1;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        d.kill9();
        adder.await.unwrap();
        d.restart();
        let mut c = d.client().await;
        let round_acked = std::mem::take(&mut *acked.lock().unwrap());
        for id in &round_acked {
            let got = c.get(pb::GetRequest { id: *id }).await;
            assert!(
                got.is_ok(),
                "round {round}: acknowledged trigger {id} lost: {got:?}"
            );
        }
        all_acked.extend(round_acked);
    }
    let mut c = d.client().await;
    let mut stream = c
        .dump(pb::DumpRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut stored = std::collections::HashSet::new();
    while let Some(t) = stream.message().await.unwrap() {
        stored.insert(t.id);
    }
    let lost: Vec<_> = all_acked.iter().filter(|id| !stored.contains(id)).collect();
    assert!(lost.is_empty(), "lost after the last restart: {lost:?}");
}

/// Read verbs take small requests: a Query past `[limits]
/// read_request_bytes` is refused with RESOURCE_EXHAUSTED naming the verb,
/// while an Add of the same size (a write verb) is taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_request_past_its_limit_is_resource_exhausted() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(
        DAEMON,
        dir.path(),
        None,
        Some("[limits]\nread_request_bytes = 4096\n"),
    );
    let mut c = d.client().await;
    let names: Vec<String> = (0..1_000).map(|i| format!("if{i}")).collect();
    let e = c
        .query(pb::QueryRequest {
            page_size: 10,
            filter: Some(pb::TriggerFilter {
                interfaces: names,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e}");
    assert!(e.message().contains("Query"), "{e}");
    // Writes have their own, larger limit; the connection still serves.
    let ids = add_many(&mut c, "eth0", 200, 200).await;
    assert_eq!(ids.len(), 200);
}
