//! The threshold engine: IEEE 802.21 Link_Configure_Thresholds semantics
//! over every parameter report trigger-db sees (clients' and MIH functions'
//! Link_Parameters_Report, NetworkManager's access-point strength).
//!
//! A threshold names a scope (one interface, or every link of a link type),
//! a parameter, a value, a direction (above / below), a hysteresis and an
//! action (normal: fire at every crossing; one-shot: fire once). A crossing
//! emits a Link_Parameters_Report carrying the threshold crossed; a "below"
//! crossing of a signal or quality parameter (signal strength, SINR, data
//! rate, throughput) also emits Link_Going_Down, reason
//! link-parameter-degrading, with a time interval estimated from the recent
//! trend. After firing, a threshold re-arms only once the value is back past
//! the threshold by the hysteresis, so a value hovering around it does not
//! flap. Before the first sample a threshold is neither armed nor fired: a
//! series that starts on the wrong side is not a crossing.
//!
//! This module is pure: no I/O, no clock (times come from the triggers). The
//! writer actor owns one [`Engine`] and persists the configuration.

use std::collections::{HashMap, VecDeque};

use serde::Serialize;

use crate::model::{
    Detail, LinkParameter, LinkParameterType, LinkType, Reason, ReasonSpace, Source, Trigger,
    TriggerType, link_going_down_reason,
};

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scope {
    Interface(String),
    LinkType(LinkType),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    Above,
    Below,
}

/// One configured threshold.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Threshold {
    pub id: u64,
    pub scope: Scope,
    pub parameter: LinkParameterType,
    pub value: f64,
    pub direction: Direction,
    pub hysteresis: f64,
    pub one_shot: bool,
    pub spent: bool,
}

/// What a ConfigureThresholds entry asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Set(Threshold),
    /// Remove the thresholds of this scope and parameter (only the one with
    /// this value, if given).
    Cancel {
        scope: Scope,
        parameter: LinkParameterType,
        value: Option<f64>,
    },
}

impl Threshold {
    fn applies_to(&self, ifname: &str, link_type: Option<LinkType>) -> bool {
        match &self.scope {
            Scope::Interface(i) => i == ifname,
            Scope::LinkType(t) => link_type == Some(*t),
        }
    }
}

/// The crossing state of one threshold for one interface: a small machine
/// over the samples.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Crossing {
    /// `None` before the first sample.
    armed: Option<bool>,
}

impl Crossing {
    /// Feeds one sample; true if it crossed the threshold (fires).
    #[inline]
    pub fn step(&mut self, direction: Direction, threshold: f64, hysteresis: f64, v: f64) -> bool {
        let (beyond, rearm) = match direction {
            Direction::Below => (v < threshold, v > threshold + hysteresis),
            Direction::Above => (v > threshold, v < threshold - hysteresis),
        };
        match self.armed {
            None => {
                self.armed = Some(!beyond);
                false
            }
            Some(true) if beyond => {
                self.armed = Some(false);
                true
            }
            Some(false) if rearm => {
                self.armed = Some(true);
                false
            }
            Some(_) => false,
        }
    }
}

/// Samples kept per interface and parameter for the trend.
const TREND_SAMPLES: usize = 8;
/// Samples older than this do not count for the trend.
const TREND_WINDOW_NS: i64 = 30_000_000_000;
/// Time interval reported when the trend says nothing (flat or rising).
pub const DEFAULT_GOING_DOWN_MS: u32 = 5_000;

/// The engine: thresholds, their crossing state per interface, and recent
/// samples for the trend.
#[derive(Debug, Default, Clone)]
pub struct Engine {
    thresholds: Vec<Threshold>,
    state: HashMap<(u64, String), Crossing>,
    trend: HashMap<(String, LinkParameterType), VecDeque<(i64, f64)>>,
}

impl Engine {
    pub fn new(thresholds: Vec<Threshold>) -> Self {
        Self {
            thresholds,
            ..Default::default()
        }
    }

    pub fn thresholds(&self) -> &[Threshold] {
        &self.thresholds
    }

    /// Replaces the configuration (state of thresholds that stay is kept).
    pub fn set_thresholds(&mut self, thresholds: Vec<Threshold>) {
        self.state
            .retain(|(id, _), _| thresholds.iter().any(|t| t.id == *id));
        self.thresholds = thresholds;
    }

    /// Evaluates a trigger; returns the triggers it derives (none unless it
    /// is a parameter report that crosses a threshold) and the ids of
    /// one-shot thresholds it spent.
    pub fn evaluate(&mut self, t: &Trigger, out: &mut Vec<Trigger>) -> Vec<u64> {
        let mut spent = Vec::new();
        if t.kind != TriggerType::LinkParametersReport || t.source == Source::Threshold {
            return spent;
        }
        let (Some(iface), Some(Detail::ParametersReport { parameters })) =
            (&t.interface, &t.detail)
        else {
            return spent;
        };
        for p in parameters {
            let mut tracked = false;
            for th in self.thresholds.iter_mut() {
                if th.parameter != p.kind
                    || th.spent
                    || !th.applies_to(&iface.name, iface.link_type)
                {
                    continue;
                }
                if !tracked {
                    tracked = true;
                    let samples = self.trend.entry((iface.name.clone(), p.kind)).or_default();
                    samples.push_back((t.observed_at.0, p.value));
                    while samples.len() > TREND_SAMPLES
                        || samples
                            .front()
                            .is_some_and(|(ts, _)| t.observed_at.0 - ts > TREND_WINDOW_NS)
                    {
                        samples.pop_front();
                    }
                }
                let crossing = match self.state.get_mut(&(th.id, iface.name.clone())) {
                    Some(c) => c,
                    None => self.state.entry((th.id, iface.name.clone())).or_default(),
                };
                if !crossing.step(th.direction, th.value, th.hysteresis, p.value) {
                    continue;
                }
                if th.one_shot {
                    th.spent = true;
                    spent.push(th.id);
                }
                let mut report = Trigger::new(Source::Threshold, TriggerType::LinkParametersReport);
                report.observed_at = t.observed_at;
                report.interface = t.interface.clone();
                report.origin = format!("threshold {}", th.id);
                report.detail = Some(Detail::ParametersReport {
                    parameters: vec![LinkParameter {
                        threshold_crossed: Some(th.value),
                        ..p.clone()
                    }],
                });
                out.push(report);
                if th.direction == Direction::Below && degrades_link(p.kind) {
                    let samples = self.trend.get(&(iface.name.clone(), p.kind));
                    let floor = th.value - (2.0 * th.hysteresis).max(1.0);
                    let ms = samples.map_or(DEFAULT_GOING_DOWN_MS, |s| time_to_floor(s, floor));
                    let mut gd = Trigger::new(Source::Threshold, TriggerType::LinkGoingDown);
                    gd.observed_at = t.observed_at;
                    gd.interface = t.interface.clone();
                    gd.origin = format!("threshold {}", th.id);
                    gd.reason = Some(Reason::ieee(
                        ReasonSpace::LinkGoingDown,
                        link_going_down_reason::LINK_PARAMETER_DEGRADING,
                    ));
                    gd.detail = Some(Detail::GoingDown {
                        time_interval_ms: ms,
                    });
                    out.push(gd);
                }
            }
        }
        spent
    }
}

/// Parameters whose fall means the link is getting worse.
fn degrades_link(p: LinkParameterType) -> bool {
    matches!(
        p,
        LinkParameterType::SignalStrength
            | LinkParameterType::Sinr
            | LinkParameterType::DataRate
            | LinkParameterType::Throughput
    )
}

/// Milliseconds until the value reaches `floor` at the least-squares slope
/// of the samples, clamped to 100 ms ..= 60 s; the default when the trend is
/// flat or rising or there is only one sample.
pub fn time_to_floor(samples: &VecDeque<(i64, f64)>, floor: f64) -> u32 {
    let n = samples.len();
    if n < 2 {
        return DEFAULT_GOING_DOWN_MS;
    }
    let t0 = samples[0].0;
    let nf = n as f64;
    let (mut sx, mut sy, mut sxx, mut sxy) = (0.0, 0.0, 0.0, 0.0);
    for (t, v) in samples {
        let x = (t - t0) as f64 / 1e9;
        sx += x;
        sy += v;
        sxx += x * x;
        sxy += x * v;
    }
    let denom = nf * sxx - sx * sx;
    if denom.abs() < f64::EPSILON {
        return DEFAULT_GOING_DOWN_MS;
    }
    let slope = (nf * sxy - sx * sy) / denom; // units per second
    let last = samples[n - 1].1;
    if slope >= 0.0 || last <= floor {
        return if last <= floor {
            100
        } else {
            DEFAULT_GOING_DOWN_MS
        };
    }
    let secs = (last - floor) / -slope;
    (secs * 1000.0).clamp(100.0, 60_000.0) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Interface, ParameterUnit, Timestamp};
    use proptest::prelude::*;

    fn th(id: u64, value: f64, direction: Direction, hysteresis: f64, one_shot: bool) -> Threshold {
        Threshold {
            id,
            scope: Scope::Interface("wlan0".into()),
            parameter: LinkParameterType::SignalStrength,
            value,
            direction,
            hysteresis,
            one_shot,
            spent: false,
        }
    }

    fn report(ms: i64, v: f64) -> Trigger {
        let mut t = Trigger::new(Source::NetworkManager, TriggerType::LinkParametersReport);
        t.observed_at = Timestamp(ms * 1_000_000);
        t.interface = Some(Interface {
            name: "wlan0".into(),
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
        t
    }

    fn run(engine: &mut Engine, series: &[f64]) -> Vec<Trigger> {
        let mut out = Vec::new();
        for (i, v) in series.iter().enumerate() {
            engine.evaluate(&report(i as i64 * 500, *v), &mut out);
        }
        out
    }

    #[test]
    fn falling_signal_gives_one_going_down_and_hovering_gives_none_more() {
        let mut e = Engine::new(vec![th(1, 40.0, Direction::Below, 5.0, false)]);
        let out = run(&mut e, &[80.0, 70.0, 60.0, 50.0, 35.0, 20.0]);
        let gd: Vec<_> = out
            .iter()
            .filter(|t| t.kind == TriggerType::LinkGoingDown)
            .collect();
        assert_eq!(gd.len(), 1);
        let Some(Detail::GoingDown { time_interval_ms }) = gd[0].detail else {
            panic!()
        };
        // falling ~15 %/s from 35 towards the floor 30: about a third of a second
        assert!(
            (100..2_000).contains(&time_interval_ms),
            "{time_interval_ms}"
        );
        assert_eq!(
            gd[0].reason.as_ref().unwrap().name,
            "link-parameter-degrading"
        );
        let report = out
            .iter()
            .find(|t| t.kind == TriggerType::LinkParametersReport)
            .unwrap();
        let Some(Detail::ParametersReport { parameters }) = &report.detail else {
            panic!()
        };
        assert_eq!(parameters[0].threshold_crossed, Some(40.0));
        assert_eq!(parameters[0].value, 35.0);
        // 38..42 hovering: nothing more.
        assert!(run(&mut e, &[38.0, 42.0, 39.0, 41.0, 38.0, 42.0]).is_empty());
        // Above 45 re-arms; the next fall fires again.
        assert!(run(&mut e, &[46.0]).is_empty());
        assert_eq!(run(&mut e, &[30.0]).len(), 2);
    }

    #[test]
    fn one_shot_fires_once_and_is_spent() {
        let mut e = Engine::new(vec![th(7, 40.0, Direction::Below, 0.0, true)]);
        let mut out = Vec::new();
        let mut spent = Vec::new();
        for (i, v) in [50.0, 30.0, 50.0, 30.0].iter().enumerate() {
            spent.extend(e.evaluate(&report(i as i64, *v), &mut out));
        }
        assert_eq!(spent, vec![7]);
        assert_eq!(out.len(), 2); // one report + one going-down
        assert!(e.thresholds()[0].spent);
    }

    #[test]
    fn above_thresholds_and_other_scopes() {
        let mut above = th(2, 10.0, Direction::Above, 2.0, false);
        above.parameter = LinkParameterType::SignalStrength;
        let mut other_if = th(3, 40.0, Direction::Below, 0.0, false);
        other_if.scope = Scope::Interface("eth0".into());
        let mut by_type = th(4, 40.0, Direction::Below, 0.0, false);
        by_type.scope = Scope::LinkType(LinkType::Ieee802_11);
        let mut e = Engine::new(vec![above, other_if, by_type]);
        let out = run(&mut e, &[5.0, 12.0, 9.0, 11.0, 7.0, 11.0, 30.0]);
        let by = |id: &str| out.iter().filter(|t| t.origin == id).count();
        // above 10: 5 -> 12 fires, 9 (not < 8) no re-arm, 7 re-arms, 11 fires
        assert_eq!(by("threshold 2"), 2);
        assert_eq!(by("threshold 3"), 0);
        // link-type scope: 5 starts beyond (below 40): no crossing until re-armed
        assert_eq!(by("threshold 4"), 0);
    }

    #[test]
    fn trend_estimate_is_clamped_and_defaults_when_flat() {
        let s: VecDeque<_> = [(0, 50.0), (1_000_000_000, 50.0)].into();
        assert_eq!(time_to_floor(&s, 30.0), DEFAULT_GOING_DOWN_MS);
        let s: VecDeque<_> = [(0, 50.0), (1_000_000_000, 40.0)].into();
        assert_eq!(time_to_floor(&s, 30.0), 1_000);
        let s: VecDeque<_> = [(0, 50.0), (1_000_000, 10.0)].into();
        assert_eq!(time_to_floor(&s, 30.0), 100);
    }

    /// The reference count, written independently of [`Crossing`]: walk the
    /// series remembering only the index of the last firing and whether the
    /// series has been back beyond the re-arm level since.
    fn reference_crossings(series: &[f64], t: f64, h: f64, below: bool) -> usize {
        let beyond = |v: f64| if below { v < t } else { v > t };
        let rearmed = |v: f64| if below { v > t + h } else { v < t - h };
        let Some(first) = series.first() else {
            return 0;
        };
        let mut count = 0;
        let mut ready = !beyond(*first);
        for &v in &series[1..] {
            if ready && beyond(v) {
                count += 1;
                ready = false;
            } else if !ready && rearmed(v) {
                ready = true;
            }
        }
        count
    }

    proptest! {
        #[test]
        fn crossings_match_the_reference(
            series in prop::collection::vec(0.0f64..100.0, 0..200),
            t in 10.0f64..90.0,
            h in 0.0f64..10.0,
            below in any::<bool>(),
        ) {
            let dir = if below { Direction::Below } else { Direction::Above };
            let mut e = Engine::new(vec![th(1, t, dir, h, false)]);
            let out = run(&mut e, &series);
            let reports = out.iter().filter(|x| x.kind == TriggerType::LinkParametersReport).count();
            prop_assert_eq!(reports, reference_crossings(&series, t, h, below));
        }

        #[test]
        fn one_shot_fires_at_most_once(
            series in prop::collection::vec(0.0f64..100.0, 0..200),
            t in 10.0f64..90.0,
        ) {
            let mut e = Engine::new(vec![th(1, t, Direction::Below, 0.0, true)]);
            let out = run(&mut e, &series);
            let reports = out.iter().filter(|x| x.kind == TriggerType::LinkParametersReport).count();
            prop_assert_eq!(reports, reference_crossings(&series, t, 0.0, true).min(1));
        }
    }
}
