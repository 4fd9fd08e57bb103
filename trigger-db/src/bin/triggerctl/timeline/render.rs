//! The timeline as a self-contained SVG document (and an HTML page around
//! it): one lane per interface with its up/down periods, Link_Going_Down
//! intervals, address and threshold markers, handover arrows between lanes,
//! a UTC time axis, a legend and `<title>` tooltips. No scripts, no fonts or
//! images from elsewhere: a browser opens the file as it is.
//!
//! Pure: [`render`] maps a [`History`] and [`Options`] to a string. Written
//! as plain SVG elements with `format!` (no plotting crate): the drawing is
//! a few rectangles, lines and paths, and writing them directly keeps the
//! output small and under control. Text widths are estimated from the
//! character count (no font metrics), generously, to avoid overlaps.
//!
//! To stay readable with hundreds of triggers: periods narrower than
//! [`MIN_PERIOD_PX`] are merged into one striped "flapping" span (its
//! tooltip counts the link-downs), markers closer than [`CLUSTER_PX`] are
//! drawn as one with a count, and a label is drawn only where it does not
//! overlap the previous one (its tooltip stays).

use std::fmt::Write as _;

use super::{
    axis::{Tick, duration_text, ticks, utc_millis},
    lanes::{self, Event, EventKind, History, Lane, Period, State},
    xml::esc,
};

/// Periods narrower than this many pixels are merged into a flapping span.
pub const MIN_PERIOD_PX: f64 = 3.0;
/// Markers closer than this many pixels are drawn as one.
pub const CLUSTER_PX: f64 = 7.0;

const LANE_H: f64 = 70.0;
const LANES_TOP: f64 = 88.0;
const RIGHT_MARGIN: f64 = 28.0;
/// Estimated width of one character per pixel of font size.
const CHAR_EM: f64 = 0.62;
/// Longest lane label before it is cut (the tooltip has the whole name).
const MAX_LABEL_CHARS: usize = 22;

const UP: &str = "#3a9d5d";
const DOWN: &str = "#d9534f";
const ADDR: &str = "#1f6fb4";
const THRESH: &str = "#8e44ad";
const LGD_STROKE: &str = "#c77800";
const INK: &str = "#222222";
const MUTED: &str = "#666666";

/// How to draw.
#[derive(Debug, Clone)]
pub struct Options {
    /// Width of the picture in pixels.
    pub width: u32,
    pub title: String,
    /// Lines printed under the legend (e.g. what the daemon could not store).
    pub notes: Vec<String>,
}

/// Why a timeline cannot be drawn.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RenderError {
    #[error("the window is empty: --since must be before --until")]
    EmptyWindow,
    #[error("width {0} px is too small (at least {MIN_WIDTH})")]
    TooNarrow(u32),
}

/// Narrowest picture that still has room for labels and a plot.
pub const MIN_WIDTH: u32 = 500;

fn text_w(s: &str, size: f64) -> f64 {
    s.chars().count() as f64 * size * CHAR_EM
}

fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut c: String = s.chars().take(max - 1).collect();
        c.push('\u{2026}');
        c
    }
}

/// Maps times to x.
#[derive(Debug, Clone, Copy)]
struct Scale {
    since: i64,
    until: i64,
    left: f64,
    right: f64,
}

impl Scale {
    fn x(&self, t: i64) -> f64 {
        let span = (self.until - self.since) as f64;
        let f = (t.clamp(self.since, self.until) - self.since) as f64 / span;
        self.left + f * (self.right - self.left)
    }
}

/// The SVG document of a history (with the XML declaration).
pub fn render_svg(h: &History, o: &Options) -> Result<String, RenderError> {
    Ok(format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n{}",
        render(h, o)?
    ))
}

/// An HTML page holding the SVG inline (also well-formed XML).
pub fn render_html(h: &History, o: &Options) -> Result<String, RenderError> {
    let svg = render(h, o)?;
    Ok(format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\"/>\n\
         <title>{}</title>\n<style>body{{margin:16px;background:#fff;font-family:sans-serif}}\
         svg{{max-width:none}}</style>\n</head>\n<body>\n{svg}</body>\n</html>\n",
        esc(&o.title)
    ))
}

/// The `<svg>` element of a history.
pub fn render(h: &History, o: &Options) -> Result<String, RenderError> {
    let (since, until) = (h.since.nanos(), h.until.nanos());
    if until <= since {
        return Err(RenderError::EmptyWindow);
    }
    if o.width < MIN_WIDTH {
        return Err(RenderError::TooNarrow(o.width));
    }
    let built = lanes::build(h);
    let width = f64::from(o.width);
    // The label column fits the longest (cut) name and summary line.
    let left = built
        .lanes
        .iter()
        .flat_map(|l| {
            // Bold: wider than the estimate for plain text.
            let name = text_w(&cut(&l.name, MAX_LABEL_CHARS), 13.0) * 1.12;
            summary_lines(l)
                .into_iter()
                .map(|line| text_w(&line, 10.0))
                .chain([name])
        })
        .fold(0.0, f64::max);
    let left = (left + 28.0).clamp(96.0, 260.0);
    let sc = Scale {
        since,
        until,
        left,
        right: width - RIGHT_MARGIN,
    };
    let lanes_h = if built.lanes.is_empty() {
        40.0
    } else {
        built.lanes.len() as f64 * LANE_H
    };
    let lanes_bottom = LANES_TOP + lanes_h;
    let ticks = ticks(
        since,
        until,
        ((sc.right - sc.left) / 110.0).max(2.0) as usize,
    );

    let mut body = String::new();
    header(&mut body, h, o, &built);
    axis(&mut body, &ticks, &sc, LANES_TOP - 8.0, true);
    for (i, lane) in built.lanes.iter().enumerate() {
        let y0 = LANES_TOP + i as f64 * LANE_H;
        lane_background(&mut body, lane, i, y0, width);
    }
    grid(&mut body, &ticks, &sc, LANES_TOP, lanes_bottom);
    if built.lanes.is_empty() {
        let _ = writeln!(
            body,
            r#"<text x="{:.2}" y="{:.2}" font-size="13" fill="{MUTED}">no link triggers in this window</text>"#,
            sc.left + 8.0,
            LANES_TOP + 24.0
        );
    }
    // Handovers are placed first (drawn last, on top), so that marker
    // labels keep clear of their arrows and labels.
    let mut arrows = String::new();
    let mut taken = handovers(&mut arrows, &built, &sc);
    for (i, lane) in built.lanes.iter().enumerate() {
        let y0 = LANES_TOP + i as f64 * LANE_H;
        lane_content(&mut body, lane, y0, &sc, &mut taken);
    }
    body.push_str(&arrows);
    axis(&mut body, &ticks, &sc, lanes_bottom + 16.0, false);
    let y = legend(&mut body, lanes_bottom + 48.0, width);
    let mut y = y + 8.0;
    for n in &o.notes {
        let _ = writeln!(
            body,
            r#"<text x="12" y="{y:.2}" font-size="11" fill="{MUTED}">{}</text>"#,
            esc(n)
        );
        y += 16.0;
    }
    let height = y + 4.0;

    let mut s = String::with_capacity(body.len() + 2048);
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{height:.0}" viewBox="0 0 {} {height:.0}" font-family="DejaVu Sans, Verdana, Arial, sans-serif" data-plot-left="{:.2}" data-plot-right="{:.2}" data-since-ns="{since}" data-until-ns="{until}">"#,
        o.width, o.width, sc.left, sc.right
    );
    let _ = writeln!(s, "<title>{}</title>", esc(&o.title));
    s.push_str(DEFS);
    let _ = writeln!(
        s,
        r##"<rect class="background" width="100%" height="100%" fill="#ffffff"/>"##
    );
    s.push_str(&body);
    s.push_str("</svg>\n");
    Ok(s)
}

const DEFS: &str = r##"<defs>
<pattern id="lgd" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><rect width="6" height="6" fill="#fde7c2"/><rect width="2" height="6" fill="#e69a1c"/></pattern>
<pattern id="flap" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><rect width="3" height="6" fill="#d9534f"/><rect x="3" width="3" height="6" fill="#3a9d5d"/></pattern>
<pattern id="unknown" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><rect width="6" height="6" fill="#e4e4e4"/><rect width="2" height="6" fill="#cfcfcf"/></pattern>
<marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#222222"/></marker>
</defs>
"##;

fn header(s: &mut String, h: &History, o: &Options, built: &lanes::Lanes) {
    let (since, until) = (h.since.nanos(), h.until.nanos());
    let n_events: usize = built
        .lanes
        .iter()
        .map(|l| l.periods.len() - 1 + l.going_down.len() + l.events.len())
        .sum::<usize>()
        + built.handovers.len();
    let _ = writeln!(
        s,
        r#"<text class="title" x="12" y="24" font-size="17" font-weight="bold" fill="{INK}">{}</text>"#,
        esc(&o.title)
    );
    let sub = format!(
        "{} \u{2013} {} UTC ({}) \u{b7} {} interface{} \u{b7} {} event{} drawn",
        utc_millis(since),
        utc_millis(until),
        duration_text(until - since),
        built.lanes.len(),
        if built.lanes.len() == 1 { "" } else { "s" },
        n_events,
        if n_events == 1 { "" } else { "s" },
    );
    let _ = writeln!(
        s,
        r#"<text class="window" x="12" y="44" font-size="12" fill="{MUTED}">{}</text>"#,
        esc(&sub)
    );
    let _ = writeln!(
        s,
        r#"<text x="12" y="{:.2}" font-size="11" font-weight="bold" fill="{MUTED}">time (UTC)</text>"#,
        LANES_TOP - 14.0
    );
}

/// Tick labels above (`top`) or below the lanes; `y` is the time label's baseline.
fn axis(s: &mut String, ticks: &[Tick], sc: &Scale, y: f64, top: bool) {
    let _ = writeln!(s, r#"<g class="axis" font-size="11" fill="{INK}">"#);
    for t in ticks {
        let x = sc.x(t.at);
        let _ = writeln!(
            s,
            r#"<text class="tick" x="{x:.2}" y="{y:.2}" text-anchor="middle">{}</text>"#,
            esc(&t.label)
        );
        if let Some(d) = &t.date {
            let dy = if top { y - 14.0 } else { y + 13.0 };
            let _ = writeln!(
                s,
                r#"<text class="date" x="{x:.2}" y="{dy:.2}" text-anchor="middle" fill="{MUTED}" font-size="10">{}</text>"#,
                esc(d)
            );
        }
    }
    s.push_str("</g>\n");
}

fn grid(s: &mut String, ticks: &[Tick], sc: &Scale, top: f64, bottom: f64) {
    let _ = writeln!(s, r##"<g class="grid" stroke="#dddddd" stroke-width="1">"##);
    for t in ticks {
        let x = sc.x(t.at);
        let _ = writeln!(
            s,
            r#"<line x1="{x:.2}" y1="{:.2}" x2="{x:.2}" y2="{:.2}"/>"#,
            top - 4.0,
            bottom + 4.0
        );
    }
    let _ = writeln!(
        s,
        r##"<line x1="{l:.2}" y1="{top:.2}" x2="{l:.2}" y2="{bottom:.2}" stroke="#999999"/><line x1="{r:.2}" y1="{top:.2}" x2="{r:.2}" y2="{bottom:.2}" stroke="#999999"/>"##,
        l = sc.left,
        r = sc.right
    );
    s.push_str("</g>\n");
}

fn lane_background(s: &mut String, lane: &Lane, i: usize, y0: f64, width: f64) {
    let fill = if i.is_multiple_of(2) {
        "#f6f7f9"
    } else {
        "#ffffff"
    };
    let _ = writeln!(
        s,
        r#"<rect class="lane-bg" x="0" y="{y0:.2}" width="{width:.0}" height="{LANE_H}" fill="{fill}"/>"#
    );
    let (addrs, crossings) = event_counts(lane);
    let mut summary = String::new();
    for (k, line) in summary_lines(lane).iter().enumerate() {
        let _ = write!(
            summary,
            r#"<text x="12" y="{:.2}" font-size="10" fill="{MUTED}">{}</text>"#,
            y0 + 47.0 + 12.0 * k as f64,
            esc(line)
        );
    }
    let _ = writeln!(
        s,
        r#"<g class="lane-label"><title>{name}: {summary_long}</title><text class="lane-name" x="12" y="{:.2}" font-size="13" font-weight="bold" fill="{INK}">{short}</text>{summary}</g>"#,
        y0 + 30.0,
        name = esc(&lane.name),
        short = esc(&cut(&lane.name, MAX_LABEL_CHARS)),
        summary_long = esc(&format!(
            "{} link-down(s), {} link-going-down, {addrs} address change(s), {crossings} threshold crossing(s) in the window",
            lane.link_downs,
            lane.going_down.len()
        )),
    );
}

/// Address changes and threshold crossings of a lane.
fn event_counts(lane: &Lane) -> (usize, usize) {
    let addrs = lane
        .events
        .iter()
        .filter(|e| {
            matches!(
                e.kind,
                EventKind::AddressAdded | EventKind::AddressRemoved | EventKind::AddressChanged
            )
        })
        .count();
    (addrs, lane.events.len() - addrs)
}

/// The counts under a lane's name, two to a line.
fn summary_lines(lane: &Lane) -> Vec<String> {
    let (addrs, crossings) = event_counts(lane);
    let mut parts = vec![format!(
        "{} down{}",
        lane.link_downs,
        if lane.link_downs == 1 { "" } else { "s" }
    )];
    if !lane.going_down.is_empty() {
        parts.push(format!("{} lgd", lane.going_down.len()));
    }
    if addrs > 0 {
        parts.push(format!("{addrs} addr"));
    }
    if crossings > 0 {
        parts.push(format!("{crossings} thr"));
    }
    parts.chunks(2).map(|c| c.join(" \u{b7} ")).collect()
}

fn state_word(s: State) -> &'static str {
    match s {
        State::Up => "up",
        State::Down => "down",
        State::Unknown => "unknown",
    }
}

fn period_tooltip(lane: &Lane, p: &Period, until: i64) -> String {
    let end = if p.end >= until {
        "the end of the window".to_owned()
    } else {
        utc_millis(p.end)
    };
    let mut t = format!(
        "{}: {} from {} to {} ({})",
        lane.name,
        state_word(p.state),
        utc_millis(p.start),
        end,
        duration_text(p.end - p.start)
    );
    match &p.cause {
        Some(c) => {
            let what = if p.state == State::Up {
                "link-up"
            } else {
                "link-down"
            };
            let _ = write!(t, "; {what} #{} at {}", c.id, utc_millis(c.at.nanos()));
            if c.before_window {
                t.push_str(" (before the window)");
            }
        }
        None => t.push_str("; no link-up or link-down before this in the store"),
    }
    t
}

fn lane_content(s: &mut String, lane: &Lane, y0: f64, sc: &Scale, taken: &mut Vec<Box>) {
    let _ = writeln!(
        s,
        r#"<g class="lane" data-interface="{}" data-y="{y0:.2}">"#,
        esc(&lane.name)
    );
    periods(s, lane, y0, sc);
    for g in &lane.going_down {
        let end = g.at.saturating_add(i64::from(g.interval_ms) * 1_000_000);
        let x0 = sc.x(g.at);
        let w = (sc.x(end) - x0).max(3.0);
        let _ = writeln!(
            s,
            r#"<g class="going-down" data-at-ns="{}" data-interval-ms="{}"><title>{}</title><rect x="{x0:.2}" y="{:.2}" width="{w:.2}" height="12" fill="url(#lgd)" stroke="{LGD_STROKE}" stroke-width="1"/><line x1="{x0:.2}" y1="{:.2}" x2="{x0:.2}" y2="{:.2}" stroke="{LGD_STROKE}" stroke-width="2"/></g>"#,
            g.at,
            g.interval_ms,
            esc(&g.tooltip),
            y0 + 5.0,
            y0 + 3.0,
            y0 + 20.0,
        );
    }
    markers(s, &lane.events, y0, sc, taken);
    s.push_str("</g>\n");
}

fn period_rect(s: &mut String, class: &str, fill: &str, x: f64, w: f64, y0: f64, tip: &str) {
    let _ = writeln!(
        s,
        r#"<rect class="period {class}" x="{x:.2}" y="{:.2}" width="{w:.2}" height="16" fill="{fill}"><title>{}</title></rect>"#,
        y0 + 20.0,
        esc(tip)
    );
}

fn periods(s: &mut String, lane: &Lane, y0: f64, sc: &Scale) {
    // Runs of narrow periods become one flapping span.
    let mut run: Vec<&Period> = Vec::new();
    let flush = |s: &mut String, run: &mut Vec<&Period>| {
        match run.as_slice() {
            [] => {}
            [p] => draw_period(s, lane, p, y0, sc, 1.5),
            ps => {
                let (a, b) = (ps[0].start, ps[ps.len() - 1].end);
                let downs = ps
                    .iter()
                    .filter(|p| {
                        p.state == State::Down && p.cause.as_ref().is_some_and(|c| !c.before_window)
                    })
                    .count();
                let ups = ps
                    .iter()
                    .filter(|p| {
                        p.state == State::Up && p.cause.as_ref().is_some_and(|c| !c.before_window)
                    })
                    .count();
                let x = sc.x(a);
                let w = (sc.x(b) - x).max(2.0);
                let tip = format!(
                    "{}: flapping from {} to {} ({}): {downs} link-down(s) and {ups} link-up(s), too close together to draw one by one at this width; narrow the window to see each",
                    lane.name,
                    utc_millis(a),
                    utc_millis(b),
                    duration_text(b - a)
                );
                period_rect(s, "flapping", "url(#flap)", x, w, y0, &tip);
            }
        }
        run.clear();
    };
    for p in &lane.periods {
        let w = sc.x(p.end) - sc.x(p.start);
        if w < MIN_PERIOD_PX {
            run.push(p);
        } else {
            flush(s, &mut run);
            draw_period(s, lane, p, y0, sc, 0.0);
        }
    }
    flush(s, &mut run);
}

fn draw_period(s: &mut String, lane: &Lane, p: &Period, y0: f64, sc: &Scale, min_w: f64) {
    let x = sc.x(p.start);
    let w = (sc.x(p.end) - x).max(min_w);
    let (class, fill) = match p.state {
        State::Up => ("up", UP),
        State::Down => ("down", DOWN),
        State::Unknown => ("unknown", "url(#unknown)"),
    };
    period_rect(s, class, fill, x, w, y0, &period_tooltip(lane, p, sc.until));
}

/// A marker's shape centred on `(x, y)`.
fn shape(kind: EventKind, x: f64, y: f64) -> String {
    match kind {
        EventKind::AddressAdded => {
            format!(r#"<circle cx="{x:.2}" cy="{y:.2}" r="4.5" fill="{ADDR}"/>"#)
        }
        EventKind::AddressRemoved => format!(
            r##"<circle cx="{x:.2}" cy="{y:.2}" r="4" fill="#ffffff" stroke="{ADDR}" stroke-width="2"/>"##
        ),
        EventKind::AddressChanged => format!(
            r##"<path d="M{x:.2},{:.2} L{:.2},{y:.2} L{x:.2},{:.2} L{:.2},{y:.2} z" fill="#9cc5ea" stroke="{ADDR}" stroke-width="1.5"/>"##,
            y - 5.0,
            x + 5.0,
            y + 5.0,
            x - 5.0
        ),
        EventKind::ThresholdBelow => format!(
            r#"<path d="M{:.2},{:.2} L{:.2},{:.2} L{x:.2},{:.2} z" fill="{THRESH}"/>"#,
            x - 5.0,
            y - 4.5,
            x + 5.0,
            y - 4.5,
            y + 4.5
        ),
        EventKind::ThresholdAbove => format!(
            r#"<path d="M{:.2},{:.2} L{:.2},{:.2} L{x:.2},{:.2} z" fill="{THRESH}"/>"#,
            x - 5.0,
            y + 4.5,
            x + 5.0,
            y + 4.5,
            y - 4.5
        ),
    }
}

fn kind_class(k: EventKind) -> &'static str {
    match k {
        EventKind::AddressAdded => "address-added",
        EventKind::AddressRemoved => "address-removed",
        EventKind::AddressChanged => "address-changed",
        EventKind::ThresholdBelow | EventKind::ThresholdAbove => "threshold",
    }
}

/// Most lines a cluster's tooltip lists.
const TOOLTIP_LINES: usize = 12;

/// A rectangle already drawn on: `(x0, y0, x1, y1)`.
type Box = (f64, f64, f64, f64);

fn overlaps(a: &Box, b: &Box) -> bool {
    a.0 < b.2 && b.0 < a.2 && a.1 < b.3 && b.1 < a.3
}

/// The first of `candidates` that overlaps nothing taken, now taken.
fn place(taken: &mut Vec<Box>, candidates: &[Box]) -> Option<Box> {
    let free = candidates
        .iter()
        .find(|c| taken.iter().all(|t| !overlaps(c, t)))
        .copied()?;
    taken.push(free);
    Some(free)
}

fn markers(s: &mut String, events: &[Event], y0: f64, sc: &Scale, taken: &mut Vec<Box>) {
    let y = y0 + 47.0;
    let label_y = y0 + 63.0;
    // Clusters of nearby events, each drawn as one marker.
    let mut clusters: Vec<(f64, &[Event])> = Vec::new();
    let mut i = 0;
    while i < events.len() {
        let x = sc.x(events[i].at);
        let mut j = i + 1;
        while j < events.len() && sc.x(events[j].at) - x < CLUSTER_PX {
            j += 1;
        }
        clusters.push((x, &events[i..j]));
        i = j;
    }
    // Labels keep clear of the markers.
    taken.extend(
        clusters
            .iter()
            .map(|(x, _)| (x - 5.0, y - 5.0, x + 5.0, y + 5.0)),
    );
    for (x, cluster) in clusters {
        let first = &cluster[0];
        let mut tip: Vec<&str> = cluster
            .iter()
            .take(TOOLTIP_LINES)
            .map(|e| e.tooltip.as_str())
            .collect();
        let more = cluster.len().saturating_sub(TOOLTIP_LINES);
        let more_line = format!("\u{2026} and {more} more");
        if more > 0 {
            tip.push(&more_line);
        }
        let label = if cluster.len() > 1 {
            format!("{} \u{d7}{}", first.label, cluster.len())
        } else {
            first.label.clone()
        };
        let _ = write!(
            s,
            r#"<g class="marker {}" data-at-ns="{}" data-count="{}"><title>{}</title>{}"#,
            kind_class(first.kind),
            first.at,
            cluster.len(),
            esc(&tip.join("\n")),
            shape(first.kind, x, y)
        );
        // The label under the marker and to its right, else to its left;
        // left out where both would overlap something (the tooltip stays).
        let w = text_w(&label, 10.0);
        let (top, bottom) = (label_y - 9.0, label_y + 2.0);
        let right = (x - 4.0, top, x - 4.0 + w, bottom);
        let left = (x + 4.0 - w, top, x + 4.0, bottom);
        // Beside the marker, in its row.
        let beside = (x + 8.0, y - 6.0, x + 8.0 + w, y + 5.0);
        let mut candidates = Vec::with_capacity(3);
        for c in [right, beside, left] {
            if c.0 >= 2.0 && c.2 <= sc.right + RIGHT_MARGIN - 2.0 {
                candidates.push(c);
            }
        }
        if let Some(b) = place(taken, &candidates) {
            let color = if matches!(
                first.kind,
                EventKind::ThresholdBelow | EventKind::ThresholdAbove
            ) {
                THRESH
            } else {
                ADDR
            };
            let _ = write!(
                s,
                r#"<text x="{:.2}" y="{:.2}" font-size="10" fill="{color}">{}</text>"#,
                b.0,
                b.3 - 2.0,
                esc(&label)
            );
        }
        s.push_str("</g>\n");
    }
}

/// Draws the handover arrows; returns the boxes they and their labels take.
fn handovers(s: &mut String, built: &lanes::Lanes, sc: &Scale) -> Vec<Box> {
    let lane_y = |name: &str| {
        built
            .lanes
            .iter()
            .position(|l| l.name == name)
            .map(|i| LANES_TOP + i as f64 * LANE_H)
    };
    let mut taken: Vec<Box> = built
        .handovers
        .iter()
        .map(|ho| {
            let x = sc.x(ho.at);
            let ys = [lane_y(&ho.from), lane_y(&ho.to)];
            let lo = ys.iter().flatten().fold(f64::INFINITY, |a, &b| a.min(b));
            let hi = ys
                .iter()
                .flatten()
                .fold(f64::NEG_INFINITY, |a, &b| a.max(b));
            (x - 5.0, lo + 2.0, x + 5.0, hi + LANE_H - 4.0)
        })
        .collect();
    for ho in &built.handovers {
        let x = sc.x(ho.at);
        let (y1, y2, stub) = match (lane_y(&ho.from), lane_y(&ho.to)) {
            (Some(a), Some(b)) if a < b => (a + 28.0, b + 19.0, None),
            (Some(a), Some(b)) if a > b => (a + 28.0, b + 37.0, None),
            (Some(a), Some(_)) => (a + 10.0, a + 19.0, None),
            (None, Some(b)) => (b + 2.0, b + 19.0, Some(format!("from {}", ho.from))),
            (Some(a), None) => (a + 28.0, a + 66.0, Some(format!("to {}", ho.to))),
            (None, None) => continue,
        };
        let mut label = ho
            .duration_us
            .map(|us| {
                duration_text(
                    i64::try_from(us)
                        .unwrap_or(i64::MAX / 1000)
                        .saturating_mul(1000),
                )
            })
            .unwrap_or_default();
        if let Some(stub) = stub {
            label = if label.is_empty() {
                stub
            } else {
                format!("{stub} \u{b7} {label}")
            };
        }
        let _ = write!(
            s,
            r#"<g class="handover" data-from="{}" data-to="{}" data-at-ns="{}"><title>{}</title><circle cx="{x:.2}" cy="{y1:.2}" r="3" fill="{INK}"/><line x1="{x:.2}" y1="{y1:.2}" x2="{x:.2}" y2="{y2:.2}" stroke="{INK}" stroke-opacity="0.8" stroke-width="1.5" marker-end="url(#arrow)"/>"#,
            esc(&ho.from),
            esc(&ho.to),
            ho.at,
            esc(&ho.tooltip),
        );
        if !label.is_empty() {
            // Beside the arrow, right then left, in its middle or near its ends.
            let w = text_w(&label, 10.0) + 4.0;
            let mid = (y1 + y2) / 2.0 + 4.0;
            let mut candidates = Vec::new();
            for ly in [mid, y1.min(y2) + 10.0, y1.max(y2) - 2.0] {
                candidates.push((x + 6.0, ly - 9.0, x + 6.0 + w, ly + 2.0));
                candidates.push((x - 6.0 - w, ly - 9.0, x - 6.0, ly + 2.0));
            }
            candidates.retain(|c| c.0 >= 2.0 && c.2 <= sc.right + RIGHT_MARGIN);
            if let Some(b) = place(&mut taken, &candidates) {
                let _ = write!(
                    s,
                    r##"<text class="handover-label" x="{:.2}" y="{:.2}" font-size="10" font-weight="bold" fill="{INK}" stroke="#ffffff" stroke-width="3" paint-order="stroke">{}</text>"##,
                    b.0 + 2.0,
                    b.3 - 2.0,
                    esc(&label)
                );
            }
        }
        s.push_str("</g>\n");
    }
    taken
}

/// The legend from `y`; returns the y below it.
fn legend(s: &mut String, y: f64, width: f64) -> f64 {
    let bar = |fill: &str| format!(r#"<rect x="0" y="-6" width="22" height="12" fill="{fill}"/>"#);
    let items: Vec<(String, &str)> = vec![
        (bar(UP), "link up"),
        (bar(DOWN), "link down"),
        (bar("url(#unknown)"), "state unknown (no link-up/down yet)"),
        (bar("url(#flap)"), "flapping (too dense to draw)"),
        (
            format!(
                r#"<rect x="0" y="-6" width="22" height="12" fill="url(#lgd)" stroke="{LGD_STROKE}"/>"#
            ),
            "link going down: predicted interval",
        ),
        (shape(EventKind::AddressAdded, 11.0, 0.0), "address added"),
        (
            shape(EventKind::AddressRemoved, 11.0, 0.0),
            "address removed",
        ),
        (
            shape(EventKind::AddressChanged, 11.0, 0.0),
            "address changed",
        ),
        (
            shape(EventKind::ThresholdBelow, 11.0, 0.0),
            "threshold crossed (\u{25bc} below, \u{25b2} above)",
        ),
        (
            format!(
                r#"<line x1="2" y1="0" x2="20" y2="0" stroke="{INK}" stroke-width="1.8" marker-end="url(#arrow)"/>"#
            ),
            "handover old \u{2192} new link (duration)",
        ),
    ];
    let _ = writeln!(s, r#"<g class="legend" font-size="11" fill="{INK}">"#);
    let (mut x, mut y) = (12.0, y);
    for (sym, text) in items {
        let w = 30.0 + text_w(text, 11.0) + 18.0;
        if x + w > width - 12.0 && x > 12.0 {
            x = 12.0;
            y += 20.0;
        }
        let _ = writeln!(
            s,
            r#"<g transform="translate({x:.2},{y:.2})">{sym}<text x="30" y="4">{}</text></g>"#,
            esc(text)
        );
        x += w;
    }
    s.push_str("</g>\n");
    y + 22.0
}
