//! `triggerctl threshold set|list|clear`: IEEE 802.21
//! Link_Configure_Thresholds from the command line.
//!
//! Flags become `ConfigureThresholds` entries (set: a normal or one-shot
//! threshold; clear: a CANCEL of a scope and parameter, optionally of one
//! value); `list` prints `ListThresholds` as a table or one JSON object per
//! threshold. The daemon validates and persists; this module only builds
//! the request, checks numbers early and formats the replies.

use serde_json::{Value, json};
use trigger_client::Client;
use trigger_db::{
    model::{LinkParameterType, LinkType},
    server::wire::change_from_wire,
    threshold::{Change, Direction, Scope, Threshold},
};
use trigger_proto::v1 as pb;

use crate::{
    output::{Out, table},
    verbs::status_error,
};

/// What a threshold applies to, from `--interface` or `--link-type`.
#[derive(Debug, Clone, PartialEq)]
pub enum ScopeFlag {
    Interface(String),
    LinkType(LinkType),
}

impl ScopeFlag {
    fn to_wire(&self) -> pb::threshold::Scope {
        match self {
            ScopeFlag::Interface(i) => pb::threshold::Scope::Interface(i.clone()),
            ScopeFlag::LinkType(t) => pb::threshold::Scope::LinkType(t.to_wire()),
        }
    }
}

/// `threshold set`'s flags, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct SetFlags {
    pub scope: ScopeFlag,
    pub parameter: LinkParameterType,
    pub direction: Direction,
    pub value: f64,
    pub hysteresis: f64,
    pub one_shot: bool,
}

/// A number flag that must be finite (`nan`, `inf` are refused).
pub fn parse_finite(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number"))?;
    if v.is_finite() {
        Ok(v)
    } else {
        Err(format!("{s:?} is not a finite number"))
    }
}

/// `--hysteresis`: a finite number >= 0.
pub fn parse_hysteresis(s: &str) -> Result<f64, String> {
    let v = parse_finite(s)?;
    if v < 0.0 {
        return Err(format!("{s} is negative; the hysteresis is >= 0"));
    }
    Ok(v)
}

/// The ConfigureThresholds entry of `threshold set`.
pub fn set_wire(f: &SetFlags) -> pb::Threshold {
    pb::Threshold {
        id: 0,
        scope: Some(f.scope.to_wire()),
        parameter: f.parameter.to_wire(),
        value: Some(f.value),
        direction: match f.direction {
            Direction::Above => pb::ThresholdDirection::Above,
            Direction::Below => pb::ThresholdDirection::Below,
        } as i32,
        hysteresis: f.hysteresis,
        action: if f.one_shot {
            pb::ThresholdAction::OneShot
        } else {
            pb::ThresholdAction::Normal
        } as i32,
        spent: false,
    }
}

/// The CANCEL entry of `threshold clear`.
pub fn clear_wire(
    scope: &ScopeFlag,
    parameter: LinkParameterType,
    value: Option<f64>,
) -> pb::Threshold {
    pb::Threshold {
        scope: Some(scope.to_wire()),
        parameter: parameter.to_wire(),
        value,
        action: pb::ThresholdAction::Cancel as i32,
        ..Default::default()
    }
}

/// A threshold from the daemon, decoded with the daemon's own checks; the
/// id and spent flag are taken as sent.
fn decode(w: &pb::Threshold, i: usize) -> Result<Threshold, String> {
    match change_from_wire(w, &format!("thresholds[{i}]")) {
        Ok(Change::Set(mut t)) => {
            t.id = w.id;
            t.spent = w.spent;
            Ok(t)
        }
        Ok(Change::Cancel { .. }) => Err(format!("thresholds[{i}].action: cancel in a listing")),
        Err(e) => Err(e.to_string()),
    }
}

fn scope_cell(s: &Scope) -> String {
    match s {
        Scope::Interface(i) => i.clone(),
        Scope::LinkType(t) => format!("link-type={t}"),
    }
}

fn direction_str(d: Direction) -> &'static str {
    match d {
        Direction::Above => "above",
        Direction::Below => "below",
    }
}

fn action_str(t: &Threshold) -> &'static str {
    if t.one_shot { "one-shot" } else { "normal" }
}

/// The `--json` object of one threshold.
pub fn threshold_json(t: &Threshold) -> Value {
    let mut v = json!({
        "id": t.id,
        "parameter": t.parameter.as_str(),
        "direction": direction_str(t.direction),
        "value": t.value,
        "hysteresis": t.hysteresis,
        "action": action_str(t),
        "spent": t.spent,
    });
    match &t.scope {
        Scope::Interface(i) => v["interface"] = json!(i),
        Scope::LinkType(l) => v["link_type"] = json!(l.as_str()),
    }
    v
}

/// The table (or JSON lines) of thresholds.
fn print(out: &Out, wire: &[pb::Threshold]) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    for (i, w) in wire.iter().enumerate() {
        match decode(w, i) {
            Ok(t) => rows.push(t),
            Err(e) => out.note(&format!("skipping a threshold the daemon sent: {e}")),
        }
    }
    if out.json {
        for t in &rows {
            out.json_line(&threshold_json(t))?;
        }
        return Ok(());
    }
    if rows.is_empty() {
        out.note("no thresholds configured");
        return Ok(());
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|t| {
            vec![
                t.id.to_string(),
                scope_cell(&t.scope),
                t.parameter.to_string(),
                direction_str(t.direction).into(),
                t.value.to_string(),
                t.hysteresis.to_string(),
                action_str(t).into(),
                if t.spent { "yes" } else { "no" }.into(),
            ]
        })
        .collect();
    for line in table(
        &[
            "ID",
            "SCOPE",
            "PARAMETER",
            "DIRECTION",
            "VALUE",
            "HYSTERESIS",
            "ACTION",
            "SPENT",
        ],
        &cells,
    ) {
        out.line(&line)?;
    }
    Ok(())
}

pub async fn set(c: &mut Client, out: &Out, f: &SetFlags) -> anyhow::Result<()> {
    let r = c
        .configure_thresholds(pb::ConfigureThresholdsRequest {
            thresholds: vec![set_wire(f)],
        })
        .await
        .map_err(|s| status_error("threshold set", &s))?
        .into_inner();
    print(out, &r.thresholds)
}

pub async fn clear(
    c: &mut Client,
    out: &Out,
    scope: &ScopeFlag,
    parameter: LinkParameterType,
    value: Option<f64>,
) -> anyhow::Result<()> {
    let r = c
        .configure_thresholds(pb::ConfigureThresholdsRequest {
            thresholds: vec![clear_wire(scope, parameter, value)],
        })
        .await
        .map_err(|s| status_error("threshold clear", &s))?
        .into_inner();
    if out.json {
        out.json_line(&json!({ "cancelled": r.cancelled }))?;
    } else {
        out.line(&format!("cancelled {} thresholds", r.cancelled))?;
    }
    Ok(())
}

pub async fn list(c: &mut Client, out: &Out) -> anyhow::Result<()> {
    let r = c
        .list_thresholds(pb::ListThresholdsRequest {})
        .await
        .map_err(|s| status_error("threshold list", &s))?
        .into_inner();
    print(out, &r.thresholds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_flags_reach_the_wire_and_pass_the_daemons_check() {
        let f = SetFlags {
            scope: ScopeFlag::Interface("wlan0".into()),
            parameter: LinkParameterType::SignalStrength,
            direction: Direction::Below,
            value: -78.0,
            hysteresis: 5.0,
            one_shot: true,
        };
        let w = set_wire(&f);
        assert_eq!(
            w.scope,
            Some(pb::threshold::Scope::Interface("wlan0".into()))
        );
        assert_eq!(w.parameter, pb::LinkParameterType::SignalStrength as i32);
        assert_eq!(w.value, Some(-78.0));
        assert_eq!(w.direction, pb::ThresholdDirection::Below as i32);
        assert_eq!(w.hysteresis, 5.0);
        assert_eq!(w.action, pb::ThresholdAction::OneShot as i32);
        let Ok(Change::Set(t)) = change_from_wire(&w, "t") else {
            panic!("the daemon would refuse {w:?}")
        };
        assert!(t.one_shot);
        assert_eq!(t.direction, Direction::Below);
    }

    #[test]
    fn clear_is_a_cancel_of_scope_and_parameter() {
        let scope = ScopeFlag::LinkType(LinkType::Ieee802_11);
        let w = clear_wire(&scope, LinkParameterType::Sinr, None);
        assert_eq!(w.action, pb::ThresholdAction::Cancel as i32);
        assert_eq!(
            w.scope,
            Some(pb::threshold::Scope::LinkType(
                pb::LinkType::Ieee80211 as i32
            ))
        );
        assert_eq!(w.value, None);
        let Ok(Change::Cancel { value, .. }) =
            change_from_wire(&clear_wire(&scope, LinkParameterType::Sinr, Some(3.0)), "t")
        else {
            panic!()
        };
        assert_eq!(value, Some(3.0));
    }

    #[test]
    fn numbers_are_checked() {
        assert_eq!(parse_finite("-78"), Ok(-78.0));
        assert!(parse_finite("nan").is_err());
        assert!(parse_finite("inf").is_err());
        assert!(parse_finite("forty").is_err());
        assert_eq!(parse_hysteresis("0"), Ok(0.0));
        assert!(parse_hysteresis("-1").unwrap_err().contains(">= 0"));
    }

    #[test]
    fn listing_decodes_and_formats() {
        let mut w = set_wire(&SetFlags {
            scope: ScopeFlag::LinkType(LinkType::Lte),
            parameter: LinkParameterType::Sinr,
            direction: Direction::Above,
            value: 3.5,
            hysteresis: 0.0,
            one_shot: false,
        });
        w.id = 9;
        w.spent = true;
        let t = decode(&w, 0).unwrap();
        let j = threshold_json(&t);
        assert_eq!(j["id"], 9);
        assert_eq!(j["link_type"], "lte");
        assert_eq!(j["direction"], "above");
        assert_eq!(j["action"], "normal");
        assert_eq!(j["spent"], true);
        assert_eq!(scope_cell(&t.scope), "link-type=lte");
        w.parameter = 99;
        assert!(
            decode(&w, 2)
                .unwrap_err()
                .contains("thresholds[2].parameter")
        );
    }
}
