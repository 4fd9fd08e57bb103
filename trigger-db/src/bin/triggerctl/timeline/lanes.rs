//! What the timeline shows, per interface, before any pixel: the up/down
//! periods of each link, its Link_Going_Down predictions, its address
//! changes and threshold crossings, and the handovers between links.
//!
//! Pure: it takes the triggers of the window (and, per interface, the last
//! link-up or link-down before it) and returns times in nanoseconds; the
//! renderer turns them into SVG. It does not fetch anything and does not
//! know about pixels.
//!
//! A link's state at the start of the window is the state its last link-up
//! or link-down before the window said; without one it is unknown until the
//! first link-up or link-down in the window. A Link_Going_Down from before
//! the window whose interval reaches into it is shown (cut at the start).
//! Triggers without an interface name, and parameter reports that crossed
//! no threshold, are not shown.

use std::collections::{BTreeMap, BTreeSet};

use trigger_db::model::{Detail, LinkParameterType, Timestamp, Trigger, TriggerType};

use crate::time::short;

use super::axis::duration_text;

/// What the timeline is drawn from.
#[derive(Debug, Clone)]
pub struct History {
    /// Start of the window (inclusive).
    pub since: Timestamp,
    /// End of the window (exclusive).
    pub until: Timestamp,
    /// The triggers observed in the window, in any order, and
    /// Link_Going_Downs from before it (drawn if their interval reaches
    /// into the window).
    pub triggers: Vec<Trigger>,
    /// Per interface name: its last link-up or link-down before `since`.
    pub before: BTreeMap<String, Trigger>,
    /// The lanes to draw, in this order; empty: every interface with a
    /// trigger in the window or a state before it, by name.
    pub interfaces: Vec<String>,
}

/// A link's state over a period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Up,
    Down,
    Unknown,
}

/// One period of one state, `[start, end)` in ns since the epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct Period {
    pub start: i64,
    pub end: i64,
    pub state: State,
    /// Which trigger began it (None for the unknown start).
    pub cause: Option<Cause>,
}

/// The trigger that began a period.
#[derive(Debug, Clone, PartialEq)]
pub struct Cause {
    pub id: u64,
    pub at: Timestamp,
    /// The trigger is from before the window.
    pub before_window: bool,
}

/// A Link_Going_Down: from `at` the link is expected down within `interval_ms`.
#[derive(Debug, Clone, PartialEq)]
pub struct GoingDown {
    pub at: i64,
    pub interval_ms: u32,
    pub tooltip: String,
}

/// Kinds of point events on a lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum EventKind {
    AddressAdded,
    AddressRemoved,
    AddressChanged,
    /// A parameter fell below a threshold.
    ThresholdBelow,
    /// A parameter rose above a threshold.
    ThresholdAbove,
}

/// A point event: an address change or a threshold crossing.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub at: i64,
    pub kind: EventKind,
    /// Short text drawn beside the marker when there is room.
    pub label: String,
    pub tooltip: String,
}

/// Everything drawn in one interface's lane.
#[derive(Debug, Clone, PartialEq)]
pub struct Lane {
    pub name: String,
    /// Contiguous, covering the window.
    pub periods: Vec<Period>,
    pub going_down: Vec<GoingDown>,
    pub events: Vec<Event>,
    /// Link-downs in the window.
    pub link_downs: usize,
}

/// A completed handover from one link to another.
#[derive(Debug, Clone, PartialEq)]
pub struct Handover {
    /// When the move completed.
    pub at: i64,
    pub from: String,
    pub to: String,
    pub duration_us: Option<u64>,
    pub tooltip: String,
}

/// The lanes and the handovers between them.
#[derive(Debug, Clone, PartialEq)]
pub struct Lanes {
    pub lanes: Vec<Lane>,
    pub handovers: Vec<Handover>,
}

fn name_of(t: &Trigger) -> Option<&str> {
    t.interface_name().filter(|n| !n.is_empty())
}

fn state_of(kind: TriggerType) -> Option<State> {
    match kind {
        TriggerType::LinkUp => Some(State::Up),
        TriggerType::LinkDown => Some(State::Down),
        _ => None,
    }
}

fn source_text(t: &Trigger) -> String {
    let origin = if t.origin.is_empty() {
        String::new()
    } else {
        format!(", {}", t.origin)
    };
    format!("#{} {}{origin}", t.id, t.source)
}

/// Builds the lanes of a history (see the module documentation).
pub fn build(h: &History) -> Lanes {
    let (since, until) = (h.since.nanos(), h.until.nanos());
    let mut triggers: Vec<&Trigger> = h
        .triggers
        .iter()
        .filter(|t| (since..until).contains(&t.observed_at.nanos()) || reaches_into(t, since))
        .collect();
    triggers.sort_by_key(|t| (t.observed_at, t.id));

    let names: Vec<String> = if h.interfaces.is_empty() {
        let mut set: BTreeSet<String> = h.before.keys().cloned().collect();
        for t in &triggers {
            match (t.kind, &t.detail) {
                (TriggerType::LinkHandoverComplete, _) => {}
                (TriggerType::LinkParametersReport, _) if crossings(t).is_empty() => {}
                _ => {
                    if let Some(n) = name_of(t) {
                        set.insert(n.to_owned());
                    }
                }
            }
        }
        // A handover's links get lanes too.
        for t in &triggers {
            if let Some(Detail::Handover(ho)) = &t.detail
                && t.kind == TriggerType::LinkHandoverComplete
            {
                for n in [&ho.old_link.name, &ho.new_link.name] {
                    if !n.is_empty() {
                        set.insert(n.clone());
                    }
                }
            }
        }
        set.into_iter().collect()
    } else {
        let mut seen = BTreeSet::new();
        h.interfaces
            .iter()
            .filter(|n| seen.insert(n.as_str()))
            .cloned()
            .collect()
    };

    let mut lanes: Vec<Lane> = names
        .iter()
        .map(|n| new_lane(n, h.before.get(n), since, until))
        .collect();
    let index: BTreeMap<&str, usize> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();
    let mut handovers = Vec::new();

    for t in triggers {
        let at = t.observed_at.nanos();
        if t.kind == TriggerType::LinkHandoverComplete {
            if let Some(Detail::Handover(ho)) = &t.detail
                && (index.contains_key(ho.old_link.name.as_str())
                    || index.contains_key(ho.new_link.name.as_str()))
            {
                handovers.push(handover(t, ho, at));
            }
            continue;
        }
        let Some(lane) = name_of(t)
            .and_then(|n| index.get(n))
            .map(|&i| &mut lanes[i])
        else {
            continue;
        };
        if let Some(state) = state_of(t.kind) {
            if state == State::Down {
                lane.link_downs += 1;
            }
            if let Some(last) = lane.periods.last_mut() {
                if last.state == state {
                    continue;
                }
                last.end = at;
            }
            lane.periods.push(Period {
                start: at,
                end: until,
                state,
                cause: Some(Cause {
                    id: t.id,
                    at: t.observed_at,
                    before_window: false,
                }),
            });
            continue;
        }
        match (t.kind, &t.detail) {
            (TriggerType::LinkGoingDown, Some(Detail::GoingDown { time_interval_ms })) => {
                let reason = t
                    .reason
                    .as_ref()
                    .map(|r| {
                        if r.name.is_empty() {
                            format!(", reason {}", r.code)
                        } else {
                            format!(", reason {}", r.name)
                        }
                    })
                    .unwrap_or_default();
                lane.going_down.push(GoingDown {
                    at,
                    interval_ms: *time_interval_ms,
                    tooltip: format!(
                        "{}: link-going-down at {}: expected down within {}{reason} ({})",
                        lane.name,
                        short(t.observed_at),
                        duration_text(i64::from(*time_interval_ms) * 1_000_000),
                        source_text(t),
                    ),
                });
            }
            (
                TriggerType::IfAddrAdded | TriggerType::IfAddrRemoved | TriggerType::IfAddrChanged,
                _,
            ) => {
                let Some(a) = &t.address else { continue };
                let (kind, sign, verb) = match t.kind {
                    TriggerType::IfAddrAdded => (EventKind::AddressAdded, "+", "added"),
                    TriggerType::IfAddrRemoved => {
                        (EventKind::AddressRemoved, "\u{2212}", "removed")
                    }
                    _ => (EventKind::AddressChanged, "~", "changed"),
                };
                let flags = if a.flags.is_empty() {
                    String::new()
                } else {
                    let f: Vec<&str> = a.flags.iter().map(|f| f.as_str()).collect();
                    format!(" [{}]", f.join(" "))
                };
                lane.events.push(Event {
                    at,
                    kind,
                    label: format!("{sign}{}", a.address),
                    tooltip: format!(
                        "{}: address {}/{}{flags} {verb} at {} ({})",
                        lane.name,
                        a.address,
                        a.prefix_len,
                        short(t.observed_at),
                        source_text(t),
                    ),
                });
            }
            (TriggerType::LinkParametersReport, _) => {
                for c in crossings(t) {
                    lane.events.push(Event {
                        at,
                        kind: c.kind,
                        label: c.label,
                        tooltip: format!(
                            "{}: {} at {} ({})",
                            lane.name,
                            c.text,
                            short(t.observed_at),
                            source_text(t)
                        ),
                    });
                }
            }
            _ => {}
        }
    }
    Lanes { lanes, handovers }
}

/// A Link_Going_Down from before `since` whose interval reaches past it.
fn reaches_into(t: &Trigger, since: i64) -> bool {
    let at = t.observed_at.nanos();
    match (t.kind, &t.detail) {
        (TriggerType::LinkGoingDown, Some(Detail::GoingDown { time_interval_ms })) => {
            at < since && at.saturating_add(i64::from(*time_interval_ms) * 1_000_000) > since
        }
        _ => false,
    }
}

fn new_lane(name: &str, before: Option<&Trigger>, since: i64, until: i64) -> Lane {
    let (state, cause) = match before.and_then(|t| state_of(t.kind).map(|s| (s, t))) {
        Some((s, t)) => (
            s,
            Some(Cause {
                id: t.id,
                at: t.observed_at,
                before_window: true,
            }),
        ),
        None => (State::Unknown, None),
    };
    Lane {
        name: name.to_owned(),
        periods: vec![Period {
            start: since,
            end: until,
            state,
            cause,
        }],
        going_down: Vec::new(),
        events: Vec::new(),
        link_downs: 0,
    }
}

/// One threshold crossing of a parameter report.
struct Crossing {
    kind: EventKind,
    label: String,
    text: String,
}

fn crossings(t: &Trigger) -> Vec<Crossing> {
    let Some(Detail::ParametersReport { parameters }) = &t.detail else {
        return Vec::new();
    };
    parameters
        .iter()
        .filter_map(|p| {
            let th = p.threshold_crossed?;
            let unit = p.unit.map(|u| u.as_str()).unwrap_or_default();
            let below = p.value < th;
            let (kind, rel) = if below {
                (EventKind::ThresholdBelow, "below")
            } else {
                (EventKind::ThresholdAbove, "above")
            };
            Some(Crossing {
                kind,
                label: format!(
                    "{} {}{th}",
                    short_param(p.kind),
                    if below { "<" } else { ">" }
                ),
                text: format!(
                    "{} {}{unit} crossed {rel} threshold {th}{unit}",
                    p.kind, p.value
                ),
            })
        })
        .collect()
}

/// A parameter's name for a marker label (the tooltip has the full one).
fn short_param(p: LinkParameterType) -> &'static str {
    match p {
        LinkParameterType::DataRate => "rate",
        LinkParameterType::SignalStrength => "signal",
        LinkParameterType::Sinr => "SINR",
        LinkParameterType::Throughput => "tput",
        LinkParameterType::PacketErrorRate => "PER",
    }
}

fn handover(t: &Trigger, ho: &trigger_db::model::Handover, at: i64) -> Handover {
    let mut text = format!(
        "handover {} \u{2192} {} completed at {}",
        ho.old_link.name,
        ho.new_link.name,
        short(t.observed_at)
    );
    if let Some(us) = ho.duration_us {
        text.push_str(&format!(
            ", took {}",
            duration_text(
                i64::try_from(us)
                    .unwrap_or(i64::MAX / 1000)
                    .saturating_mul(1000)
            )
        ));
    }
    if !ho.move_reason.is_empty() {
        text.push_str(&format!(", reason {}", ho.move_reason));
    }
    let pair = |l: Option<std::net::IpAddr>, r: Option<std::net::IpAddr>| match (l, r) {
        (Some(l), Some(r)) => Some(format!("{l} \u{2194} {r}")),
        (Some(l), None) => Some(l.to_string()),
        _ => None,
    };
    if let (Some(old), Some(new)) = (
        pair(ho.old_local_address, ho.old_remote_address),
        pair(ho.new_local_address, ho.new_remote_address),
    ) {
        text.push_str(&format!("; {old} \u{2192} {new}"));
    }
    if ho.cause_trigger_id != 0 {
        text.push_str(&format!("; caused by #{}", ho.cause_trigger_id));
    }
    text.push_str(&format!(" ({})", source_text(t)));
    Handover {
        at,
        from: ho.old_link.name.clone(),
        to: ho.new_link.name.clone(),
        duration_us: ho.duration_us,
        tooltip: text,
    }
}
