//! Link_Configure_Thresholds over NetworkManager's Wi-Fi strength, end to
//! end: python3-dbusmock's NetworkManager template on a private system bus
//! (the `nm_support` harness of tests/networkmanager.rs), the daemon with its
//! NetworkManager source on that bus, a "signal strength below 40,
//! hysteresis 5" threshold on the Wi-Fi device's interface configured over
//! gRPC, and the active access point's Strength driven through the mock. A
//! fall from 80 to 20 gives exactly one Link_Going_Down (and the
//! Link_Parameters_Report with the threshold crossed); oscillating 38..42
//! gives none more; rising above 45 re-arms it, and the next fall gives the
//! second one. After a daemon restart with the link still associated, the
//! current strength is reported on first sight of NetworkManager, so the
//! persisted threshold catches the next fall too.
//!
//! No timed assertions: after each Strength the test waits for the source's
//! own report of that value to reach a subscriber. The writer stores the
//! threshold's derived triggers in the same transaction, right after the
//! report that caused them, so once a report is seen everything it caused
//! is stored and published in order.
//!
//! Debian packages: dbus, dbus-bin, python3-dbusmock, python3-dbus,
//! python3-gi.

mod nm_support;

use std::time::Duration;

use nm_support::{AP_IFACE, Bus, NmMock, WIRELESS};
use system_tests::trigger_db::*;
use trigger_proto::v1::{self as pb, subscribe_response::Item};
use zbus::{ObjectPath, Variant};

const DAEMON: &str = env!("CARGO_BIN_EXE_trigger-db");

type Stream = tonic::Streaming<pb::SubscribeResponse>;

const IFNAME: &str = "wlan0";
const LONG: Duration = Duration::from_secs(30);

/// The mock's Wi-Fi device `wlan0`, activated, associated with an access
/// point of Strength `initial`. Returns the access point's object path.
async fn wifi_device(
    conn: &zbus::Connection,
    s: &mut Stream,
    initial: u8,
    log: &dyn Fn() -> String,
) -> String {
    let (dev, ap) = nm_support::add_active_wifi(conn, IFNAME, initial)
        .await
        .expect("Wi-Fi device on the mock");
    // As tests/networkmanager.rs does: associate once the source follows the
    // activated device.
    until_type(s, pb::TriggerType::ConnEstablished, log).await;
    set(
        conn,
        &dev,
        WIRELESS,
        "ActiveAccessPoint",
        Variant::from(ObjectPath::try_from(ap.as_str()).unwrap()),
    )
    .await;
    ap
}

async fn set(conn: &zbus::Connection, path: &str, iface: &str, name: &str, value: Variant<'_>) {
    nm_support::set_property(conn, path, iface, name, value)
        .await
        .unwrap_or_else(|e| panic!("SetProperty {path} {name}: {e}"));
}

/// The signal-strength value of a parameter report, and the threshold it
/// says it crossed.
fn report(t: &pb::Trigger) -> Option<(f64, Option<f64>)> {
    if t.r#type != pb::TriggerType::LinkParametersReport as i32 {
        return None;
    }
    let Some(pb::trigger::Detail::ParametersReport(r)) = &t.detail else {
        panic!("parameters report without its detail: {t:?}");
    };
    assert_eq!(r.parameters.len(), 1, "{r:?}");
    let p = &r.parameters[0];
    assert_eq!(p.r#type, pb::LinkParameterType::SignalStrength as i32);
    assert_eq!(p.unit, pb::ParameterUnit::Percent as i32);
    Some((p.value, p.threshold_crossed))
}

/// Reads the stream up to a trigger of `ty` on wlan0 (a RESYNC marker,
/// which names no interface, wherever it is).
async fn until_type(s: &mut Stream, ty: pb::TriggerType, log: &dyn Fn() -> String) {
    loop {
        let msg = tokio::time::timeout(LONG, s.message()).await;
        let Ok(Ok(Some(pb::SubscribeResponse {
            item: Some(Item::Trigger(t)),
        }))) = msg
        else {
            panic!("no {ty:?} on wlan0 within {LONG:?}: {msg:?}\n{}", log());
        };
        let on_wlan = t.interface.as_ref().is_some_and(|i| i.name == IFNAME);
        let anywhere = ty == pb::TriggerType::Resync;
        if (on_wlan || anywhere) && t.r#type == ty as i32 {
            return;
        }
    }
}

/// Reads the stream (networkmanager triggers) up to the report of strength
/// `value` on wlan0, which must be the next report there; other triggers
/// (resync, link up, ...) are skipped.
async fn until_report(s: &mut Stream, value: u8, log: &dyn Fn() -> String) -> u64 {
    loop {
        let msg = tokio::time::timeout(LONG, s.message()).await;
        let Ok(Ok(Some(pb::SubscribeResponse {
            item: Some(Item::Trigger(t)),
        }))) = msg
        else {
            panic!(
                "no networkmanager report of {value} within {LONG:?}: {msg:?}\n{}",
                log()
            );
        };
        assert_eq!(t.source, pb::Source::Networkmanager as i32, "{t:?}");
        let on_wlan = t.interface.as_ref().is_some_and(|i| i.name == IFNAME);
        if on_wlan && let Some((v, crossed)) = report(&t) {
            assert_eq!(crossed, None, "the source's own report: {t:?}");
            assert_eq!(v, f64::from(value), "reports out of order: {t:?}");
            return t.id;
        }
    }
}

/// Sets the access point's Strength to each value in turn and waits until
/// the source's report of each is stored (seen by the subscriber). What a
/// report caused is stored in the same transaction, so when this returns
/// the store holds everything the series caused.
async fn drive(
    conn: &zbus::Connection,
    ap: &str,
    s: &mut Stream,
    series: &[u8],
    log: &dyn Fn() -> String,
) -> u64 {
    let mut last = 0;
    for &v in series {
        set(conn, ap, AP_IFACE, "Strength", Variant::from(v)).await;
        last = until_report(s, v, log).await;
    }
    last
}

/// Waits until the store holds every trigger up to `id` (Stats.last_id):
/// subscribers get a trigger as soon as it has its id, the store commits
/// it right after.
async fn settled(c: &mut trigger_client::Client, id: u64) {
    let deadline = tokio::time::Instant::now() + LONG;
    loop {
        let s = c
            .stats(pb::StatsRequest::default())
            .await
            .expect("stats")
            .into_inner();
        if s.last_id >= id {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "id {id} not stored within {LONG:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The stored strength reports (networkmanager's and the threshold's) and
/// Link_Going_Downs on wlan0, in id order, as short strings: "nm 35",
/// "threshold report 20 crossed 40", "threshold going-down".
async fn history(c: &mut trigger_client::Client) -> Vec<String> {
    let page = c
        .query(pb::QueryRequest {
            filter: Some(pb::TriggerFilter {
                interfaces: vec![IFNAME.into()],
                types: vec![
                    pb::TriggerType::LinkParametersReport as i32,
                    pb::TriggerType::LinkGoingDown as i32,
                ],
                sources: vec![
                    pb::Source::Networkmanager as i32,
                    pb::Source::Threshold as i32,
                ],
            }),
            page_size: 1000,
            ..Default::default()
        })
        .await
        .expect("query")
        .into_inner();
    assert!(page.next_page_token.is_empty());
    let mut triggers = page.triggers;
    triggers.sort_by_key(|t| t.id);
    triggers
        .iter()
        .map(|t| {
            let from_nm = t.source == pb::Source::Networkmanager as i32;
            match (from_nm, report(t)) {
                (true, Some((v, None))) => format!("nm {v}"),
                (false, Some((v, Some(x)))) => format!("threshold report {v} crossed {x}"),
                (false, None) => {
                    assert_eq!(t.r#type, pb::TriggerType::LinkGoingDown as i32, "{t:?}");
                    let reason = t.reason.as_ref().expect("a reason");
                    assert_eq!(reason.name, "link-parameter-degrading", "{t:?}");
                    assert!(
                        matches!(t.detail, Some(pb::trigger::Detail::GoingDown(_))),
                        "{t:?}"
                    );
                    "threshold going-down".into()
                }
                _ => panic!("unexpected trigger: {t:?}"),
            }
        })
        .collect()
}

fn count(h: &[String], what: &str) -> usize {
    h.iter().filter(|e| *e == what).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wifi_strength_falling_below_a_threshold_gives_one_going_down_and_hysteresis_holds() {
    let dir = tempfile::tempdir().unwrap();
    let bus = Bus::start(dir.path());
    let _mock = NmMock::start(&bus, dir.path());
    let d = Daemon::start(
        DAEMON,
        dir.path(),
        None,
        Some(&format!(
            "[sources.rtnetlink]\nenabled = false\n\n\
             [sources.networkmanager]\nbus_address = \"{}\"\n",
            bus.address
        )),
    );
    let log = || d.log_text();
    let mut c = d.client().await;
    let r = c
        .configure_thresholds(pb::ConfigureThresholdsRequest {
            thresholds: vec![pb::Threshold {
                scope: Some(pb::threshold::Scope::Interface(IFNAME.into())),
                parameter: pb::LinkParameterType::SignalStrength as i32,
                value: Some(40.0),
                direction: pb::ThresholdDirection::Below as i32,
                hysteresis: 5.0,
                action: pb::ThresholdAction::Normal as i32,
                ..Default::default()
            }],
        })
        .await
        .expect("ConfigureThresholds")
        .into_inner();
    assert_eq!(r.thresholds.len(), 1, "{r:?}");
    let mut s = c
        .subscribe(pb::SubscribeRequest {
            filter: Some(pb::TriggerFilter {
                sources: vec![pb::Source::Networkmanager as i32],
                ..Default::default()
            }),
            resume_after_id: Some(0),
            snapshot: false,
        })
        .await
        .expect("subscribe")
        .into_inner();

    let conn = zbus::connection::Builder::address(bus.address.as_str())
        .build()
        .await
        .expect("connect to the private bus");
    // The device must appear after the source's first read of the mock
    // (which reports no transitions, only what is there): its activation
    // is then a transition, CONN_ESTABLISHED, the cue to associate.
    until_type(&mut s, pb::TriggerType::Resync, &log).await;
    // Associating reports the access point's Strength, 80: the first sample.
    let ap = wifi_device(&conn, &mut s, 80, &log).await;
    until_report(&mut s, 80, &log).await;

    // The fall: one crossing, at 35.
    let last = drive(&conn, &ap, &mut s, &[70, 60, 50, 35, 20], &log).await;
    settled(&mut c, last).await;
    let h = history(&mut c).await;
    assert_eq!(
        h,
        [
            "nm 80",
            "nm 70",
            "nm 60",
            "nm 50",
            "nm 35",
            "threshold report 35 crossed 40",
            "threshold going-down",
            "nm 20",
        ],
        "{}",
        log()
    );

    // Hovering around 40 but never back above 45: nothing more.
    let last = drive(&conn, &ap, &mut s, &[38, 42, 39, 41, 38, 42], &log).await;
    settled(&mut c, last).await;
    let h = history(&mut c).await;
    assert_eq!(count(&h, "threshold going-down"), 1, "{h:?}");
    assert_eq!(h.iter().filter(|e| e.starts_with("threshold")).count(), 2);
    assert_eq!(h.len(), 8 + 6, "{h:?}");

    // Above 40 + 5 re-arms it; the next fall is the second crossing.
    let last = drive(&conn, &ap, &mut s, &[46, 30], &log).await;
    settled(&mut c, last).await;
    let h = history(&mut c).await;
    assert_eq!(
        h[14..],
        [
            "nm 46",
            "nm 30",
            "threshold report 30 crossed 40",
            "threshold going-down",
        ],
        "{h:?}"
    );
    assert_eq!(count(&h, "threshold going-down"), 2, "{h:?}");

    // A daemon restart with the Wi-Fi link still associated (at 80, armed
    // again): the persisted threshold starts over, and the first sight of
    // NetworkManager reports the current strength, so the fall that
    // follows is a crossing, not the start of a series.
    let seen = drive(&conn, &ap, &mut s, &[80], &log).await;
    settled(&mut c, seen).await;
    let last = c
        .stats(pb::StatsRequest::default())
        .await
        .expect("stats")
        .into_inner()
        .last_id;
    drop(s);
    drop(c);
    let mut d = d;
    d.restart();
    let log = || d.log_text();
    let mut c = d.client().await;
    let mut s = c
        .subscribe(pb::SubscribeRequest {
            filter: Some(pb::TriggerFilter {
                sources: vec![pb::Source::Networkmanager as i32],
                ..Default::default()
            }),
            resume_after_id: Some(last),
            snapshot: false,
        })
        .await
        .expect("subscribe after the restart")
        .into_inner();
    until_report(&mut s, 80, &log).await;
    let seen = drive(&conn, &ap, &mut s, &[20], &log).await;
    settled(&mut c, seen).await;
    let h = history(&mut c).await;
    assert_eq!(
        h[h.len() - 5..],
        [
            "nm 80",
            "nm 80",
            "nm 20",
            "threshold report 20 crossed 40",
            "threshold going-down",
        ],
        "{h:?}\n{}",
        log()
    );

    let text = d.log_text();
    assert!(!text.contains("panicked"), "{text}");
}
