//! The daemon as a process on PostgreSQL (a real server,
//! `system_tests::postgres`; needs root, fails without the server
//! binaries): acknowledged triggers survive SIGKILL, subscribers resume
//! across restarts, rows carry the configured host id or the machine id,
//! and one host's daemon (and triggerctl) reads the others' history.
//! The store contract itself runs on both backends in tests/store.rs.

use system_tests::{postgres::PgServer, trigger_db::*};
use trigger_db::model::TriggerType;
use trigger_proto::v1::{self as pb, subscribe_response::Item};

const DAEMON: &str = env!("CARGO_BIN_EXE_trigger-db");
const TRIGGERCTL: &str = env!("CARGO_BIN_EXE_triggerctl");

async fn dump_ids(d: &Daemon) -> Vec<u64> {
    let mut c = d.client().await;
    let mut stream = c
        .dump(pb::DumpRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut ids = Vec::new();
    while let Some(t) = stream.message().await.unwrap() {
        ids.push(t.id);
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_triggers_survive_sigkill_and_subscribers_resume_across_restarts() {
    let server = PgServer::shared();
    let url = server.create_database("daemon_sigkill");
    let dir = tempfile::tempdir().unwrap();
    let config = "[store]\nhost_id = \"gw-paris-1\"\n";
    let mut d = Daemon::start_on(DAEMON, dir.path(), &url, Some(config));
    let mut c = d.client().await;
    let first = add_many(&mut c, "wlan0", 2_000, 500).await;
    assert_eq!(first, (1..=2_000).collect::<Vec<u64>>());
    d.kill9();
    // Restarted at once: the killed daemon's session (and its host lock)
    // may still be ending; the daemon waits for it.
    d.restart();
    assert_eq!(dump_ids(&d).await, first);
    let mut c = d.client().await;
    let after_crash = add_many(&mut c, "eth0", 3, 3).await;
    assert!(after_crash[0] > 2_000, "{after_crash:?}");

    // A subscriber that saw up to 2,000 resumes after a clean restart.
    d.restart();
    let mut c = d.client().await;
    let more = add_many(&mut c, "eth1", 2, 2).await;
    assert_eq!(
        more[0],
        after_crash[2] + 1,
        "a clean stop gives back the reservation"
    );
    let mut s = c
        .subscribe(pb::SubscribeRequest {
            resume_after_id: Some(2_000),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut got = Vec::new();
    while got.len() < 5 {
        if let Some(Item::Trigger(t)) = next_item(&mut s, 5).await {
            got.push(t.id);
        }
    }
    let want: Vec<u64> = after_crash.iter().chain(&more).copied().collect();
    assert_eq!(got, want);
    let stats = c
        .stats(pb::StatsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.stored_triggers, 2_005);
    // Every row is this host's.
    let hosts = server.psql(
        PgServer::db_name(&url),
        "SELECT host || ' ' || count(*) FROM triggers GROUP BY host",
    );
    assert_eq!(hosts.trim(), "gw-paris-1 2005");
    assert!(d.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_configured_host_id_rows_carry_the_machine_id() {
    let Ok(machine_id) = std::fs::read_to_string("/etc/machine-id") else {
        panic!("this test needs /etc/machine-id (systemd's machine id)");
    };
    let server = PgServer::shared();
    let url = server.create_database("daemon_machine_id");
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start_on(DAEMON, dir.path(), &url, None);
    let mut c = d.client().await;
    add_many(&mut c, "eth0", 1, 1).await;
    let mut t = client_trigger(TriggerType::LinkDown, "eth0");
    t.id = 0;
    c.add(pb::AddRequest { triggers: vec![t] }).await.unwrap();
    let hosts = server.psql(
        PgServer::db_name(&url),
        "SELECT DISTINCT host FROM triggers",
    );
    assert_eq!(hosts.trim(), machine_id.trim());
}

/// docs/postgresql.md's roles: with the schema in place (made by the
/// owner), a per-host role with only the documented grants, and no right
/// to create anything, runs the daemon.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_per_host_role_with_the_documented_grants_is_enough() {
    let server = PgServer::shared();
    let url = server.create_database("daemon_roles");
    let db = PgServer::db_name(&url);
    let dir = tempfile::tempdir().unwrap();
    // The owner (here the superuser) creates the schema.
    let mut owner = Daemon::start_on(
        DAEMON,
        dir.path(),
        &url,
        Some("[store]\nhost_id = \"setup\"\n"),
    );
    assert!(owner.terminate().success());
    drop(owner);
    server.psql(
        db,
        &format!(
            "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'trigger_hosts') THEN \
               CREATE ROLE trigger_hosts NOLOGIN; END IF; \
             IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'trigger_gw_paris_1') THEN \
               CREATE ROLE trigger_gw_paris_1 LOGIN IN ROLE trigger_hosts; END IF; END $$; \
             GRANT CONNECT ON DATABASE \"{db}\" TO trigger_hosts; \
             GRANT USAGE ON SCHEMA public TO trigger_hosts; \
             GRANT SELECT, INSERT, UPDATE, DELETE ON triggers, hosts, thresholds TO trigger_hosts; \
             GRANT SELECT ON _sqlx_migrations TO trigger_hosts;"
        ),
    );
    let as_host = url.replace("user=postgres", "user=trigger_gw_paris_1");
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start_on(
        DAEMON,
        dir.path(),
        &as_host,
        Some("[store]\nhost_id = \"gw-paris-1\"\n"),
    );
    let mut c = d.client().await;
    assert_eq!(add_many(&mut c, "eth0", 3, 3).await, [1, 2, 3]);
    let mut t = client_trigger(TriggerType::LinkDown, "eth0");
    t.id = 2;
    c.modify(pb::ModifyRequest { trigger: Some(t) })
        .await
        .unwrap();
    let r = c
        .configure_thresholds(pb::ConfigureThresholdsRequest {
            thresholds: vec![pb::Threshold {
                scope: Some(pb::threshold::Scope::Interface("wlan0".into())),
                parameter: pb::LinkParameterType::SignalStrength as i32,
                value: Some(40.0),
                direction: pb::ThresholdDirection::Below as i32,
                action: pb::ThresholdAction::Normal as i32,
                ..Default::default()
            }],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.thresholds.len(), 1);
    assert_eq!(dump_ids(&d).await, [1, 2, 3]);
    let stats = c
        .stats(pb::StatsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.stored_triggers, 3);
    assert!(stats.database_bytes > 0);
    let hosts = server.psql(
        db,
        "SELECT host || ' ' || count(*) FROM triggers GROUP BY host",
    );
    assert_eq!(hosts.trim(), "gw-paris-1 3");
}

/// Two hosts' daemons on one database: Query names the host of each
/// trigger; `triggerctl history` and `flaps` read one host, several or
/// all, with a HOST column when more than one host can appear.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_hosts_daemon_and_triggerctl_read_the_other_hosts() {
    let server = PgServer::shared();
    let url = server.create_database("daemon_hosts");
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Daemon::start_on(
        DAEMON,
        dir_a.path(),
        &url,
        Some("[store]\nhost_id = \"gw-a\"\n"),
    );
    let b = Daemon::start_on(
        DAEMON,
        dir_b.path(),
        &url,
        Some("[store]\nhost_id = \"gw-b\"\n"),
    );
    let (mut ca, mut cb) = (a.client().await, b.client().await);
    let down = || client_trigger(TriggerType::LinkDown, "eth0");
    ca.add(pb::AddRequest {
        triggers: vec![down(), down()],
    })
    .await
    .unwrap();
    cb.add(pb::AddRequest {
        triggers: vec![down()],
    })
    .await
    .unwrap();

    // Own host by default; all hosts with the host of each.
    let own = ca
        .query(pb::QueryRequest {
            page_size: 10,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(own.hosts, ["gw-a", "gw-a"]);
    let all = ca
        .query(pb::QueryRequest {
            page_size: 10,
            all_hosts: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.triggers.len(), 3);
    let mut hosts = all.hosts.clone();
    hosts.sort();
    assert_eq!(hosts, ["gw-a", "gw-a", "gw-b"]);

    let ctl = |args: &[&str]| triggerctl_ok(a.triggerctl(TRIGGERCTL, args).output().unwrap());
    let rows_of = |out: &str, host: &str| {
        out.lines()
            .filter(|l| l.starts_with(&format!("{host} ")))
            .count()
    };
    let out = ctl(&["history", "--all-hosts"]);
    assert!(out.starts_with("HOST "), "{out}");
    assert_eq!(
        (rows_of(&out, "gw-a"), rows_of(&out, "gw-b")),
        (2, 1),
        "{out}"
    );
    let out = ctl(&["history", "--host", "gw-b"]);
    assert!(!out.contains("HOST"), "one host, no host column: {out}");
    assert_eq!(out.lines().count(), 2, "{out}");
    let out = ctl(&["--json", "history", "--host", "gw-a,gw-b"]);
    let hosts: Vec<String> = out
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["host"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(hosts.len(), 3, "{out}");
    assert!(hosts.contains(&"gw-b".to_owned()), "{out}");

    let out = ctl(&["flaps", "--all-hosts", "--by-host", "--bucket", "2h"]);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("HOST"), "{out}");
    assert!(
        lines[1].starts_with("gw-a") && lines[1].ends_with(" 2"),
        "{out}"
    );
    assert!(
        lines[2].starts_with("gw-b") && lines[2].ends_with(" 1"),
        "{out}"
    );
    let out = ctl(&["flaps", "--all-hosts", "--bucket", "2h"]);
    assert!(
        out.lines().nth(1).unwrap().ends_with(" 3"),
        "added up: {out}"
    );
    let out = ctl(&[
        "--json",
        "flaps",
        "--host",
        "gw-b",
        "--by-host",
        "--bucket",
        "2h",
    ]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        (v["host"].as_str(), v["link_downs"].as_u64()),
        (Some("gw-b"), Some(1))
    );
}
