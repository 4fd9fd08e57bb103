//! The daemon's NetworkManager source against NetworkManager itself: real
//! NetworkManager 1.42 on a private system bus in a network namespace made
//! for the test (a veth whose peer sits in a second namespace, so the test
//! controls carrier), and python3-dbusmock's NetworkManager template for
//! Wi-Fi (there is no Wi-Fi hardware to drive) and for values of the wrong
//! type. The daemon runs outside the namespaces with rtnetlink off and
//! finds the bus through `[sources.networkmanager] bus_address`; it never
//! sees the host's bus or interfaces.
//!
//! Debian packages: dbus, dbus-bin, network-manager, iproute2, util-linux,
//! python3-dbusmock, python3-dbus, python3-gi.

mod nm_support;

use std::time::Duration;

use nm_support::{AP_IFACE, Bus, MOCK, NM, NM_PATH, NetworkManager, NmMock, WIRELESS};
use system_tests::{
    netns::{self, Netns},
    trigger_db::*,
    wait,
};
use trigger_proto::v1::{self as pb, subscribe_response::Item};
use zbus::{ObjectPath, Variant};

const DAEMON: &str = env!("CARGO_BIN_EXE_trigger-db");

type Stream = tonic::Streaming<pb::SubscribeResponse>;

const NM_SOURCE: i32 = pb::Source::Networkmanager as i32;

fn config(bus_address: &str) -> String {
    format!(
        "[sources.rtnetlink]\nenabled = false\n\n\
         [sources.networkmanager]\nbus_address = \"{bus_address}\"\n"
    )
}

/// All networkmanager triggers from the first one stored on.
async fn subscribe(d: &Daemon) -> Stream {
    let mut c = d.client().await;
    c.subscribe(pb::SubscribeRequest {
        filter: Some(pb::TriggerFilter {
            sources: vec![NM_SOURCE],
            ..Default::default()
        }),
        resume_after_id: Some(0),
        snapshot: false,
    })
    .await
    .expect("subscribe")
    .into_inner()
}

fn describe(t: &pb::Trigger) -> String {
    format!(
        "{:?} {} {:?}",
        pb::TriggerType::try_from(t.r#type),
        t.interface.as_ref().map(|i| i.name.as_str()).unwrap_or("-"),
        t.reason.as_ref().map(|r| r.name.as_str())
    )
}

/// Reads the stream until a trigger of `ty` (on `ifname`, if given)
/// arrives; fails if none does within `within`. Every trigger must have
/// source networkmanager.
async fn expect(
    s: &mut Stream,
    ty: pb::TriggerType,
    ifname: Option<&str>,
    within: Duration,
    log: &dyn Fn() -> String,
) -> pb::Trigger {
    expect_trigger(
        s,
        within,
        &format!("{ty:?} on {ifname:?}"),
        |t| {
            assert_eq!(t.source, NM_SOURCE, "{t:?}");
            let name = t.interface.as_ref().map(|i| i.name.as_str());
            t.r#type == ty as i32 && (ifname.is_none() || name == ifname)
        },
        describe,
        log,
    )
    .await
}

/// The next trigger, which must come within `within`.
async fn next(s: &mut Stream, within: Duration) -> pb::Trigger {
    match tokio::time::timeout(within, s.message()).await {
        Ok(Ok(Some(pb::SubscribeResponse {
            item: Some(Item::Trigger(t)),
        }))) => t,
        other => panic!("no trigger within {within:?}: {other:?}"),
    }
}

fn resync_cause(t: &pb::Trigger) -> String {
    match &t.detail {
        Some(pb::trigger::Detail::Resync(r)) => r.cause.clone(),
        other => panic!("resync without its detail: {other:?}"),
    }
}

fn strength(t: &pb::Trigger) -> f64 {
    let Some(pb::trigger::Detail::ParametersReport(r)) = &t.detail else {
        panic!("no parameters report: {t:?}");
    };
    assert_eq!(r.parameters.len(), 1, "{r:?}");
    let p = &r.parameters[0];
    assert_eq!(p.r#type, pb::LinkParameterType::SignalStrength as i32);
    assert_eq!(p.unit, pb::ParameterUnit::Percent as i32);
    p.value
}

const LONG: Duration = Duration::from_secs(30);
/// How often a wait polls.
const POLL: Duration = Duration::from_millis(50);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_networkmanager_activation_carrier_and_restart_reach_subscribers() {
    use pb::TriggerType as T;
    let dir = tempfile::tempdir().unwrap();
    let bus = Bus::start(dir.path());
    let ns = Netns::new("nm");
    let peer = Netns::new("nmpeer");
    netns::veth(&ns, "nmA", &peer, "nmB");
    peer.ip(&["addr", "add", "192.0.2.2/24", "dev", "nmB"]);
    peer.ip(&["link", "set", "nmB", "up"]);
    let ifindex = ns.ifindex("nmA");

    // In NetworkManager's namespace: NetworkManager 1.42 has no Ifindex
    // property, and the source looks the index up by name there.
    let d = Daemon::start(DAEMON, dir.path(), Some(&ns), Some(&config(&bus.address)));
    let mut s = subscribe(&d).await;
    let mut nm = NetworkManager::start(&bus, ns.name(), &dir.path().join("nm"));
    let nm_log = || nm_support_log(dir.path());

    let t = expect(&mut s, T::Resync, None, LONG, &nm_log).await;
    assert_eq!(resync_cause(&t), "nm-appeared");

    // A static profile activates at once.
    nm.nmcli(&[
        "con",
        "add",
        "type",
        "ethernet",
        "ifname",
        "nmA",
        "con-name",
        "t1",
        "autoconnect",
        "yes",
        "ipv4.method",
        "manual",
        "ipv4.addresses",
        "192.0.2.1/24",
        "ipv6.method",
        "disabled",
    ]);
    let up = expect(&mut s, T::LinkUp, Some("nmA"), LONG, &nm_log).await;
    let iface = up.interface.as_ref().unwrap();
    assert_eq!(iface.index, ifindex, "{up:?}\n{}", nm_log());
    assert_eq!(iface.link_type, pb::LinkType::Ethernet as i32);
    assert!(
        up.origin
            .starts_with("/org/freedesktop/NetworkManager/Devices/"),
        "{up:?}"
    );
    let reason = up.reason.as_ref().unwrap();
    assert_eq!(reason.space, pb::ReasonSpace::NmDevice as i32);
    expect(&mut s, T::ConnEstablished, Some("nmA"), LONG, &nm_log).await;

    // The peer loses carrier: NetworkManager deactivates (after its ~6 s
    // carrier grace time) with reason CARRIER.
    peer.ip(&["link", "set", "nmB", "down"]);
    let down = expect(&mut s, T::LinkDown, Some("nmA"), LONG, &nm_log).await;
    let reason = down.reason.as_ref().unwrap();
    assert_eq!(reason.space, pb::ReasonSpace::NmDevice as i32);
    assert_eq!(reason.code, 40, "{down:?}");
    assert_eq!(reason.name, "NM_DEVICE_STATE_REASON_CARRIER");
    let lost = expect(&mut s, T::ConnLost, Some("nmA"), LONG, &nm_log).await;
    assert_eq!(lost.reason.as_ref().unwrap().code, 40);

    // Carrier back: autoconnect activates again.
    peer.ip(&["link", "set", "nmB", "up"]);
    expect(&mut s, T::LinkUp, Some("nmA"), LONG, &nm_log).await;
    expect(&mut s, T::ConnEstablished, Some("nmA"), LONG, &nm_log).await;

    // NetworkManager stops and a new instance starts: the daemon keeps
    // running, resynchronises and follows the new instance.
    nm.stop();
    let mut c = d.client().await;
    c.stats(pb::StatsRequest::default())
        .await
        .expect("daemon answers while NetworkManager is away");
    nm.restart(&bus);
    let t = expect(&mut s, T::Resync, None, LONG, &nm_log).await;
    assert_eq!(resync_cause(&t), "nm-appeared");
    wait::until(
        "nmA activated by the new NetworkManager",
        LONG,
        POLL,
        || nm.device_state("nmA") == Some(100),
    );
    nm.nmcli(&["device", "disconnect", "nmA"]);
    let down = expect(&mut s, T::LinkDown, Some("nmA"), LONG, &nm_log).await;
    let reason = down.reason.as_ref().unwrap();
    assert_eq!(
        reason.name, "NM_DEVICE_STATE_REASON_USER_REQUESTED",
        "{down:?}"
    );
    assert_eq!(reason.code, 39);

    let log = d.log_text();
    assert!(log.contains("NetworkManager left the bus"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
    // Real NetworkManager says nothing the source finds unexpected.
    assert!(!log.contains("unexpected value"), "{log}");
    assert!(!log.contains("does not describe"), "{log}");
}

fn nm_support_log(dir: &std::path::Path) -> String {
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
    format!(
        "--- daemon.log:\n{}\n--- nm.log (tail):\n{}",
        read("daemon.log"),
        read("nm/nm.log")
            .lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    )
}

const DEVICE: &str = "org.freedesktop.NetworkManager.Device";

async fn mock_set(
    conn: &zbus::Connection,
    path: &str,
    iface: &str,
    name: &str,
    value: Variant<'_>,
) {
    nm_support::set_property(conn, path, iface, name, value)
        .await
        .unwrap_or_else(|e| panic!("SetProperty {path} {name}: {e}"));
}

async fn mock_emit(
    conn: &zbus::Connection,
    path: &str,
    iface: &str,
    name: &str,
    signature: &str,
    args: Vec<Variant<'_>>,
) {
    conn.call_method(
        Some(NM),
        path,
        Some(MOCK),
        "EmitSignal",
        &(iface, name, signature, args),
    )
    .await
    .unwrap_or_else(|e| panic!("EmitSignal {path} {name}: {e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wifi_strength_becomes_parameter_reports_and_bad_values_are_counted() {
    use pb::TriggerType as T;
    let dir = tempfile::tempdir().unwrap();
    // The daemon first: neither the bus nor NetworkManager is there yet.
    let d = Daemon::start(
        DAEMON,
        dir.path(),
        None,
        Some(&config(&Bus::address_in(dir.path()))),
    );
    let log = || d.log_text();
    let mut s = subscribe(&d).await;
    let bus = Bus::start(dir.path());
    let mut mock = NmMock::start(&bus, dir.path());
    let t = expect(&mut s, T::Resync, None, LONG, &log).await;
    assert_eq!(resync_cause(&t), "nm-appeared");

    let conn = zbus::connection::Builder::address(bus.address.as_str())
        .build()
        .await
        .expect("connect to the private bus");
    let (dev, ap) = nm_support::add_active_wifi(&conn, "wlan0", 60)
        .await
        .expect("Wi-Fi device on the mock");
    let up = expect(&mut s, T::LinkUp, Some("wlan0"), LONG, &log).await;
    assert_eq!(
        up.interface.as_ref().unwrap().link_type,
        pb::LinkType::Ieee80211 as i32
    );
    assert_eq!(
        up.interface.as_ref().unwrap().kind,
        pb::InterfaceKind::Wlan as i32
    );
    expect(&mut s, T::ConnEstablished, Some("wlan0"), LONG, &log).await;

    // Associating reports the access point's strength.
    let ap_path = ObjectPath::try_from(ap.as_str()).unwrap();
    mock_set(
        &conn,
        &dev,
        WIRELESS,
        "ActiveAccessPoint",
        Variant::from(ap_path),
    )
    .await;
    let t = expect(&mut s, T::LinkParametersReport, Some("wlan0"), LONG, &log).await;
    assert_eq!(strength(&t), 60.0);
    assert_eq!(
        t.interface.as_ref().unwrap().link_type,
        pb::LinkType::Ieee80211 as i32
    );

    // Strength changes of the active access point.
    mock_set(&conn, &ap, AP_IFACE, "Strength", Variant::from(35u8)).await;
    let t = next(&mut s, LONG).await;
    assert_eq!(t.r#type, T::LinkParametersReport as i32, "{t:?}");
    assert_eq!(t.interface.as_ref().unwrap().name, "wlan0");
    assert_eq!(strength(&t), 35.0);

    // Bad input: Strength of the wrong type and out of range, a device
    // StateChanged with the wrong signature, one from an object that is
    // no device. None makes a trigger; the next good value does.
    mock_set(&conn, &ap, AP_IFACE, "Strength", Variant::from("strong")).await;
    mock_set(&conn, &ap, AP_IFACE, "Strength", Variant::from(150u8)).await;
    mock_emit(
        &conn,
        &dev,
        DEVICE,
        "StateChanged",
        "ss",
        vec![Variant::from("up"), Variant::from("down")],
    )
    .await;
    mock_emit(
        &conn,
        NM_PATH,
        DEVICE,
        "StateChanged",
        "uuu",
        vec![
            Variant::from(100u32),
            Variant::from(30u32),
            Variant::from(0u32),
        ],
    )
    .await;
    mock_set(&conn, &ap, AP_IFACE, "Strength", Variant::from(20u8)).await;
    let t = next(&mut s, LONG).await;
    assert_eq!(t.r#type, T::LinkParametersReport as i32, "{t:?}");
    assert_eq!(strength(&t), 20.0);
    let mut c = d.client().await;
    let stats = c
        .stats(pb::StatsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let nm_bad = stats
        .bad_input_by_source
        .iter()
        .find(|c| c.name == "networkmanager")
        .map_or(0, |c| c.count);
    assert!(
        nm_bad >= 4,
        "bad values not counted: {stats:?}\n{}",
        d.log_text()
    );
    assert_eq!(stats.netlink_parse_errors, 0, "not netlink's: {stats:?}");
    let text = d.log_text();
    assert!(
        text.contains("skipping an unexpected value from NetworkManager"),
        "{text}"
    );
    assert!(text.contains("does not describe"), "{text}");

    // The mock goes away and a fresh one (no devices) comes: a resync, and
    // wlan0, which was up, is reported down as removed.
    mock.stop();
    let _mock = NmMock::start(&bus, dir.path());
    let t = next(&mut s, LONG).await;
    assert_eq!(t.r#type, T::Resync as i32, "{t:?}");
    let down = next(&mut s, LONG).await;
    assert_eq!(down.r#type, T::LinkDown as i32, "{down:?}");
    assert_eq!(
        down.reason.as_ref().unwrap().name,
        "NM_DEVICE_STATE_REASON_REMOVED"
    );
    let text = d.log_text();
    assert!(text.contains("D-Bus system bus unreachable"), "{text}");
    assert!(text.contains("NetworkManager left the bus"), "{text}");
    assert!(!text.contains("panicked"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connectivity_changes_give_conn_triggers_and_a_bus_restart_is_followed() {
    use pb::TriggerType as T;
    let dir = tempfile::tempdir().unwrap();
    let bus = Bus::start(dir.path());
    let _mock = NmMock::start(&bus, dir.path());
    let d = Daemon::start(DAEMON, dir.path(), None, Some(&config(&bus.address)));
    let log = || d.log_text();
    let mut s = subscribe(&d).await;
    expect(&mut s, T::Resync, None, LONG, &log).await;
    let conn = zbus::connection::Builder::address(bus.address.as_str())
        .build()
        .await
        .expect("connect to the private bus");
    // The template starts at FULL; a captive portal, then FULL again.
    for code in [2u32, 4] {
        conn.call_method(Some(NM), NM_PATH, Some(MOCK), "SetConnectivity", &(code,))
            .await
            .expect("SetConnectivity");
    }
    let lost = next(&mut s, LONG).await;
    assert_eq!(lost.r#type, T::ConnLost as i32, "{lost:?}");
    assert!(lost.interface.is_none());
    assert_eq!(
        lost.detail,
        Some(pb::trigger::Detail::Connectivity(pb::Connectivity {
            state: "portal".into(),
            code: 2
        }))
    );
    let back = next(&mut s, LONG).await;
    assert_eq!(back.r#type, T::ConnEstablished as i32, "{back:?}");
    assert_eq!(
        back.detail,
        Some(pb::trigger::Detail::Connectivity(pb::Connectivity {
            state: "full".into(),
            code: 4
        }))
    );

    // The bus itself goes away and comes back: the source reconnects,
    // finds NetworkManager again and resynchronises; nothing changed, so
    // the marker is all.
    drop(conn);
    drop(_mock);
    drop(bus);
    let bus = Bus::start(dir.path());
    let _mock = NmMock::start(&bus, dir.path());
    let t = next(&mut s, LONG).await;
    assert_eq!(t.r#type, T::Resync as i32, "{t:?}\n{}", d.log_text());
    let text = d.log_text();
    assert!(text.contains("lost the D-Bus system bus"), "{text}");
    assert!(!text.contains("panicked"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vpn_active_connection_states_give_conn_triggers_with_their_reason() {
    use std::collections::HashMap;

    use pb::TriggerType as T;
    let dir = tempfile::tempdir().unwrap();
    let bus = Bus::start(dir.path());
    let _mock = NmMock::start(&bus, dir.path());
    let d = Daemon::start(DAEMON, dir.path(), None, Some(&config(&bus.address)));
    let log = || d.log_text();
    let mut s = subscribe(&d).await;
    expect(&mut s, T::Resync, None, LONG, &log).await;
    let conn = zbus::connection::Builder::address(bus.address.as_str())
        .build()
        .await
        .expect("connect to the private bus");

    let dev: String = conn
        .call_method(
            Some(NM),
            NM_PATH,
            Some(MOCK),
            "AddEthernetDevice",
            &("eth0dev", "eth0", 30i32),
        )
        .await
        .expect("AddEthernetDevice")
        .body()
        .deserialize()
        .unwrap();
    let settings: HashMap<&str, HashMap<&str, Variant<'_>>> = HashMap::from([(
        "connection",
        HashMap::from([
            ("id", Variant::from("office-vpn")),
            ("type", Variant::from("vpn")),
        ]),
    )]);
    let profile: zbus::OwnedObjectPath = conn
        .call_method(
            Some(NM),
            NM_PATH,
            Some("org.freedesktop.NetworkManager.Settings"),
            "SettingsAddConnection",
            &(settings,),
        )
        .await
        .expect("SettingsAddConnection")
        .body()
        .deserialize()
        .unwrap();
    // ACTIVATING; the template marks eth0 activated on the way.
    let active: String = conn
        .call_method(
            Some(NM),
            NM_PATH,
            Some(MOCK),
            "AddActiveConnection",
            &(vec![dev.as_str()], profile.as_str(), "/", "vpn0", 1u32),
        )
        .await
        .expect("AddActiveConnection")
        .body()
        .deserialize()
        .unwrap();
    expect(&mut s, T::LinkUp, Some("eth0"), LONG, &log).await;
    let dev_up = expect(&mut s, T::ConnEstablished, Some("eth0"), LONG, &log).await;
    assert_eq!(
        dev_up.reason.as_ref().unwrap().space,
        pb::ReasonSpace::NmDevice as i32
    );

    let active_iface = "org.freedesktop.NetworkManager.Connection.Active";
    mock_emit(
        &conn,
        &active,
        active_iface,
        "StateChanged",
        "uu",
        vec![Variant::from(2u32), Variant::from(1u32)],
    )
    .await;
    let up = next(&mut s, LONG).await;
    assert_eq!(up.r#type, T::ConnEstablished as i32, "{up:?}");
    assert_eq!(up.origin, active);
    assert_eq!(up.interface.as_ref().unwrap().name, "eth0");
    let reason = up.reason.as_ref().unwrap();
    assert_eq!(reason.space, pb::ReasonSpace::NmActiveConnection as i32);
    assert_eq!(reason.name, "NM_ACTIVE_CONNECTION_STATE_REASON_NONE");

    mock_emit(
        &conn,
        &active,
        active_iface,
        "StateChanged",
        "uu",
        vec![Variant::from(4u32), Variant::from(4u32)],
    )
    .await;
    let down = next(&mut s, LONG).await;
    assert_eq!(down.r#type, T::ConnLost as i32, "{down:?}");
    let reason = down.reason.as_ref().unwrap();
    assert_eq!(reason.code, 4);
    assert_eq!(
        reason.name,
        "NM_ACTIVE_CONNECTION_STATE_REASON_SERVICE_STOPPED"
    );
}
