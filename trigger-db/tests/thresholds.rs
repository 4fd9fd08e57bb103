//! Link_Configure_Thresholds through the daemon: parameter reports added by
//! a client cross a configured threshold and trigger-db derives
//! Link_Parameters_Report and Link_Going_Down; hysteresis stops flapping;
//! the configuration (and spent one-shots) survive a restart.

use system_tests::trigger_db::*;
use trigger_db::model::{
    Detail, Interface, LinkParameter, LinkParameterType, LinkType, ParameterUnit, Source, Trigger,
    TriggerType,
};
use trigger_proto::v1::{self as pb, subscribe_response::Item};

const DAEMON: &str = env!("CARGO_BIN_EXE_trigger-db");

fn strength(ifname: &str, v: f64) -> pb::Trigger {
    let mut t = Trigger::new(Source::Client, TriggerType::LinkParametersReport);
    t.interface = Some(Interface {
        name: ifname.into(),
        link_type: Some(LinkType::Ieee802_11),
        ..Default::default()
    });
    t.detail = Some(Detail::ParametersReport {
        parameters: vec![LinkParameter {
            kind: LinkParameterType::SignalStrength,
            value: v,
            unit: Some(ParameterUnit::Percent),
            threshold_crossed: None,
        }],
    });
    t.to_wire()
}

fn below(ifname: &str, value: f64, hysteresis: f64, action: pb::ThresholdAction) -> pb::Threshold {
    pb::Threshold {
        scope: Some(pb::threshold::Scope::Interface(ifname.into())),
        parameter: pb::LinkParameterType::SignalStrength as i32,
        value: Some(value),
        direction: pb::ThresholdDirection::Below as i32,
        hysteresis,
        action: action as i32,
        ..Default::default()
    }
}

async fn report_series(c: &mut trigger_client::Client, ifname: &str, series: &[f64]) {
    for v in series {
        c.add(pb::AddRequest {
            triggers: vec![strength(ifname, *v)],
        })
        .await
        .unwrap();
    }
}

/// Counts derived triggers of `ty` in the store.
async fn derived(c: &mut trigger_client::Client, ty: pb::TriggerType) -> usize {
    let page = c
        .query(pb::QueryRequest {
            filter: Some(pb::TriggerFilter {
                types: vec![ty as i32],
                sources: vec![pb::Source::Threshold as i32],
                ..Default::default()
            }),
            page_size: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    page.triggers.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn falling_strength_gives_one_going_down_and_hysteresis_stops_flapping() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(DAEMON, dir.path(), None, None);
    let mut c = d.client().await;
    let r = c
        .configure_thresholds(pb::ConfigureThresholdsRequest {
            thresholds: vec![below("wlan0", 40.0, 5.0, pb::ThresholdAction::Normal)],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.thresholds.len(), 1);
    let mut s = c
        .subscribe(pb::SubscribeRequest {
            filter: Some(pb::TriggerFilter {
                sources: vec![pb::Source::Threshold as i32],
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();

    report_series(&mut c, "wlan0", &[80.0, 70.0, 60.0, 50.0, 35.0, 20.0]).await;
    let first = next_item(&mut s, 5).await.unwrap();
    let second = next_item(&mut s, 5).await.unwrap();
    let (Item::Trigger(rep), Item::Trigger(gd)) = (first, second) else {
        panic!("expected two triggers");
    };
    assert_eq!(rep.r#type, pb::TriggerType::LinkParametersReport as i32);
    let Some(pb::trigger::Detail::ParametersReport(p)) = &rep.detail else {
        panic!("{rep:?}");
    };
    assert_eq!(p.parameters[0].threshold_crossed, Some(40.0));
    assert_eq!(gd.r#type, pb::TriggerType::LinkGoingDown as i32);
    assert_eq!(gd.reason.as_ref().unwrap().name, "link-parameter-degrading");
    assert!(matches!(gd.detail, Some(pb::trigger::Detail::GoingDown(_))));

    report_series(&mut c, "wlan0", &[38.0, 42.0, 39.0, 41.0, 38.0, 42.0]).await;
    assert_eq!(derived(&mut c, pb::TriggerType::LinkGoingDown).await, 1);
    report_series(&mut c, "wlan0", &[46.0, 30.0]).await;
    assert_eq!(derived(&mut c, pb::TriggerType::LinkGoingDown).await, 2);

    // The configuration survives a restart.
    d.restart();
    let mut c = d.client().await;
    let list = c
        .list_thresholds(pb::ListThresholdsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.thresholds.len(), 1);
    assert_eq!(list.thresholds[0].value, Some(40.0));
    // Cancel removes it.
    let mut cancel = below("wlan0", 40.0, 0.0, pb::ThresholdAction::Cancel);
    cancel.value = None;
    let r = c
        .configure_thresholds(pb::ConfigureThresholdsRequest {
            thresholds: vec![cancel],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.cancelled, 1);
    assert!(
        c.list_thresholds(pb::ListThresholdsRequest {})
            .await
            .unwrap()
            .into_inner()
            .thresholds
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_shot_stays_spent_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(DAEMON, dir.path(), None, None);
    let mut c = d.client().await;
    c.configure_thresholds(pb::ConfigureThresholdsRequest {
        thresholds: vec![below("lte0", 30.0, 0.0, pb::ThresholdAction::OneShot)],
    })
    .await
    .unwrap();
    report_series(&mut c, "lte0", &[50.0, 20.0, 50.0, 20.0]).await;
    assert_eq!(
        derived(&mut c, pb::TriggerType::LinkParametersReport).await,
        1
    );
    d.restart();
    let mut c = d.client().await;
    let list = c
        .list_thresholds(pb::ListThresholdsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(list.thresholds[0].spent);
    report_series(&mut c, "lte0", &[50.0, 20.0]).await;
    assert_eq!(
        derived(&mut c, pb::TriggerType::LinkParametersReport).await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_thresholds_and_unknown_parameter_types_are_invalid_argument() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(DAEMON, dir.path(), None, None);
    let mut c = d.client().await;
    let mut bad = below("wlan0", 40.0, -2.0, pb::ThresholdAction::Normal);
    let e = c
        .configure_thresholds(pb::ConfigureThresholdsRequest {
            thresholds: vec![bad.clone()],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(
        e.message().starts_with("thresholds[0].hysteresis"),
        "{}",
        e.message()
    );
    bad.hysteresis = 1.0;
    bad.direction = 9;
    let e = c
        .configure_thresholds(pb::ConfigureThresholdsRequest {
            thresholds: vec![bad],
        })
        .await
        .unwrap_err();
    assert!(
        e.message().starts_with("thresholds[0].direction"),
        "{}",
        e.message()
    );

    let mut t = strength("wlan0", 10.0);
    if let Some(pb::trigger::Detail::ParametersReport(p)) = &mut t.detail {
        p.parameters[0].r#type = 42;
    }
    let e = c
        .add(pb::AddRequest { triggers: vec![t] })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(
        e.message()
            .starts_with("triggers[0].parameters_report.parameters[0].type"),
        "{}",
        e.message()
    );
}
