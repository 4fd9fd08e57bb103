//! Tests of the timeline renderer on the fixed history
//! `trigger-db/tests/data/timeline.jsonl` (shared with the end-to-end test
//! `tests/timeline.rs`): the SVG is parsed with roxmltree and its lanes,
//! spans, markers and arrows are checked against the triggers' times.

use std::{collections::BTreeMap, path::Path};

use roxmltree::{Document, Node};
use trigger_db::model::{Timestamp, Trigger, TriggerType};

use super::{
    Format, format_for,
    lanes::History,
    render::{Options, RenderError, render, render_html, render_svg},
};

const HISTORY: &str = include_str!("../../../../tests/data/timeline.jsonl");
const S: i64 = 1_000_000_000;
/// 2026-11-27T09:00:00Z
const SINCE: i64 = 1_795_770_000 * S;
const UNTIL: i64 = SINCE + 1800 * S;
const ODD: &str = "wl<an>&\"1'";

fn at(secs: f64) -> i64 {
    SINCE + (secs * 1e9).round() as i64
}

/// The fixed history as the timeline verb would fetch it: ids in line
/// order, the window's triggers (and a prediction from before it), and
/// each interface's last state before it.
fn fixed(interfaces: &[&str]) -> History {
    let mut window = Vec::new();
    let mut before = BTreeMap::new();
    let lines = HISTORY
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'));
    for (i, l) in lines.enumerate() {
        let mut t: Trigger = serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}"));
        t.id = i as u64 + 1;
        if t.observed_at.nanos() < SINCE
            && matches!(t.kind, TriggerType::LinkUp | TriggerType::LinkDown)
        {
            before.insert(t.interface_name().unwrap().to_owned(), t);
        } else {
            window.push(t);
        }
    }
    History {
        since: Timestamp(SINCE),
        until: Timestamp(UNTIL),
        triggers: window,
        before,
        interfaces: interfaces.iter().map(|s| s.to_string()).collect(),
    }
}

fn options() -> Options {
    Options {
        width: 1200,
        title: "Link timeline".into(),
        notes: vec![
            "Times are UTC. Hover over a shape for its trigger's details.".into(),
            "Suppressed flaps are not stored, so not drawn: trigger-db's debounce has dropped 0 link-up/link-down triggers of flaps since it started (1h 00m ago).".into(),
        ],
    }
}

fn has_class(n: &Node, c: &str) -> bool {
    n.attribute("class")
        .is_some_and(|v| v.split(' ').any(|x| x == c))
}

fn num(n: &Node, a: &str) -> f64 {
    n.attribute(a)
        .unwrap_or_else(|| panic!("no {a} on {n:?}"))
        .parse()
        .unwrap()
}

struct Svg<'a> {
    doc: &'a Document<'a>,
    left: f64,
    right: f64,
}

impl<'a> Svg<'a> {
    fn new(doc: &'a Document<'a>) -> Self {
        let root = doc.root_element();
        assert_eq!(root.tag_name().name(), "svg");
        Svg {
            doc,
            left: num(&root, "data-plot-left"),
            right: num(&root, "data-plot-right"),
        }
    }

    fn x(&self, t: i64) -> f64 {
        self.left + (t - SINCE) as f64 / (UNTIL - SINCE) as f64 * (self.right - self.left)
    }

    fn lanes(&self) -> Vec<Node<'a, 'a>> {
        self.doc
            .descendants()
            .filter(|n| n.has_tag_name("g") && has_class(n, "lane"))
            .collect()
    }

    fn lane(&self, name: &str) -> Node<'a, 'a> {
        self.lanes()
            .into_iter()
            .find(|n| n.attribute("data-interface") == Some(name))
            .unwrap_or_else(|| panic!("no lane {name}"))
    }
}

fn periods<'a>(lane: Node<'a, 'a>) -> Vec<(String, f64, f64)> {
    lane.children()
        .filter(|n| n.has_tag_name("rect") && has_class(n, "period"))
        .map(|n| {
            let class = n.attribute("class").unwrap().replace("period ", "");
            (class, num(&n, "x"), num(&n, "width"))
        })
        .collect()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 0.02
}

#[test]
fn one_lane_per_interface_in_a_stable_order() {
    let svg = render(&fixed(&[]), &options()).unwrap();
    let doc = Document::parse(&svg).unwrap();
    let s = Svg::new(&doc);
    let names: Vec<&str> = s
        .lanes()
        .iter()
        .map(|n| n.attribute("data-interface").unwrap())
        .collect();
    assert_eq!(names, ["eth0", ODD, "wlan0", "wwan0"]);
    // The same again: nothing depends on hash order.
    assert_eq!(render(&fixed(&[]), &options()).unwrap(), svg);
    // Named interfaces come in the order given.
    let svg = render(&fixed(&["wwan0", "wlan0", "wwan0"]), &options()).unwrap();
    let doc = Document::parse(&svg).unwrap();
    let names: Vec<String> = Svg::new(&doc)
        .lanes()
        .iter()
        .map(|n| n.attribute("data-interface").unwrap().to_owned())
        .collect();
    assert_eq!(names, ["wwan0", "wlan0"]);
}

#[test]
fn up_and_down_periods_sit_at_the_triggers_times() {
    let svg = render(&fixed(&[]), &options()).unwrap();
    let doc = Document::parse(&svg).unwrap();
    let s = Svg::new(&doc);
    // eth0: down since before the window, up 09:12-09:22, down again.
    let p = periods(s.lane("eth0"));
    let want = [
        ("down", SINCE, at(720.0)),
        ("up", at(720.0), at(1320.0)),
        ("down", at(1320.0), UNTIL),
    ];
    assert_eq!(p.len(), want.len(), "{p:?}");
    for ((class, x, w), (wc, a, b)) in p.iter().zip(want) {
        assert_eq!(class, wc);
        assert!(close(*x, s.x(a)), "{class}: x {x} != {}", s.x(a));
        assert!(close(*w, s.x(b) - s.x(a)), "{class}: width {w}");
    }
    // wwan0 has no state before the window: unknown until its link-up.
    let p = periods(s.lane("wwan0"));
    assert_eq!(p[0].0, "unknown");
    assert!(close(p[0].2, s.x(at(60.0)) - s.x(SINCE)));
    assert_eq!(p[1].0, "up");
    assert!(close(p[1].1, s.x(at(60.0))));
    // The period's tooltip names its trigger and, for the first, that it
    // is from before the window.
    let first = s
        .lane("eth0")
        .children()
        .find(|n| has_class(n, "period"))
        .unwrap();
    let tip = first.first_element_child().unwrap().text().unwrap();
    assert!(tip.contains("before the window"), "{tip}");
}

#[test]
fn flapping_becomes_one_span_with_a_count() {
    let svg = render(&fixed(&[]), &options()).unwrap();
    let doc = Document::parse(&svg).unwrap();
    let s = Svg::new(&doc);
    let lane = s.lane("wlan0");
    let flapping: Vec<Node> = lane
        .children()
        .filter(|n| has_class(n, "flapping"))
        .collect();
    assert_eq!(flapping.len(), 1);
    let f = flapping[0];
    // From the first link-down of the burst to the last link-up's end.
    assert!(close(num(&f, "x"), s.x(at(900.0))));
    let tip = f.first_element_child().unwrap().text().unwrap();
    assert!(tip.contains("60 link-down(s)"), "{tip}");
    // Every other period of wlan0 is wide enough to draw as itself.
    assert!(periods(lane).iter().all(|(_, _, w)| *w >= 2.0));
    // The lane label counts all link-downs: 1 + 60 + 1.
    assert!(svg.contains("62 downs"));
}

#[test]
fn link_going_down_spans_its_interval() {
    let svg = render(&fixed(&[]), &options()).unwrap();
    let doc = Document::parse(&svg).unwrap();
    let s = Svg::new(&doc);
    let lgd: Vec<Node> = s
        .lane("wlan0")
        .children()
        .filter(|n| has_class(n, "going-down"))
        .collect();
    assert_eq!(lgd.len(), 2);
    let rect = lgd[0].children().find(|n| n.has_tag_name("rect")).unwrap();
    assert!(close(num(&rect, "x"), s.x(at(510.0))));
    assert!(close(num(&rect, "width"), s.x(at(530.0)) - s.x(at(510.0))));
    let tip = lgd[0].first_element_child().unwrap().text().unwrap();
    assert!(tip.contains("within 20 s"), "{tip}");
    assert!(tip.contains("link-parameter-degrading"), "{tip}");
}

#[test]
fn a_prediction_from_before_the_window_is_cut_at_its_start() {
    let mut h = fixed(&["wwan0"]);
    for (ago, id) in [(5.0, 9001), (30.0, 9002)] {
        let mut t: Trigger = serde_json::from_str(
            r#"{"observed_at":"2026-11-27T09:00:00Z","source":"client","type":"link-going-down",
                "interface":{"name":"wwan0"},"detail":{"going-down":{"time_interval_ms":20000}}}"#,
        )
        .unwrap();
        t.id = id;
        t.observed_at = Timestamp(at(-ago));
        h.triggers.push(t);
    }
    let svg = render(&h, &options()).unwrap();
    let doc = Document::parse(&svg).unwrap();
    let s = Svg::new(&doc);
    let lgd: Vec<Node> = s
        .lane("wwan0")
        .children()
        .filter(|n| has_class(n, "going-down"))
        .collect();
    // The history's own (08:59:50, 30 s) and the one from 5 s before;
    // the one from 30 s before ended at 08:59:50.
    assert_eq!(lgd.len(), 2);
    let mine = lgd
        .iter()
        .find(|n| n.attribute("data-at-ns") == Some(&at(-5.0).to_string()))
        .unwrap();
    let rect = mine.children().find(|n| n.has_tag_name("rect")).unwrap();
    assert!(close(num(&rect, "x"), s.left));
    assert!(close(num(&rect, "width"), s.x(at(15.0)) - s.left));
}

#[test]
fn markers_for_addresses_and_threshold_crossings_only() {
    let svg = render(&fixed(&[]), &options()).unwrap();
    let doc = Document::parse(&svg).unwrap();
    let s = Svg::new(&doc);
    let count = |lane: &str, class: &str| {
        s.lane(lane)
            .children()
            .filter(|n| has_class(n, "marker") && has_class(n, class))
            .count()
    };
    // 2001:db8:1::10 goes 10 s before ::20 comes: one marker for both.
    assert_eq!(count("wlan0", "address-added"), 2);
    assert_eq!(count("wlan0", "address-removed"), 1);
    assert!(svg.contains("\u{2212}2001:db8:1::10 \u{d7}2"));
    // The report without a crossing is not drawn.
    assert_eq!(count("wlan0", "threshold"), 1);
    assert_eq!(count("wwan0", "threshold"), 1);
    assert_eq!(count(ODD, "address-changed"), 1);
    // eth0's address goes 0.5 s after its link: one marker counting both.
    let eth: Vec<Node> = s
        .lane("eth0")
        .children()
        .filter(|n| has_class(n, "marker"))
        .collect();
    assert_eq!(eth.len(), 2);
    assert!(svg.contains("+198.51.100.4"));
}

#[test]
fn handovers_connect_the_old_and_the_new_lane() {
    let svg = render(&fixed(&[]), &options()).unwrap();
    let doc = Document::parse(&svg).unwrap();
    let s = Svg::new(&doc);
    let hos: Vec<Node> = doc
        .descendants()
        .filter(|n| has_class(n, "handover"))
        .collect();
    assert_eq!(hos.len(), 3);
    let h = hos[0];
    assert_eq!(h.attribute("data-from"), Some("wlan0"));
    assert_eq!(h.attribute("data-to"), Some("wwan0"));
    let line = h.children().find(|n| n.has_tag_name("line")).unwrap();
    assert!(close(num(&line, "x1"), s.x(at(530.0012))));
    assert_eq!(num(&line, "x1"), num(&line, "x2"));
    let lane_y = |name: &str| num(&s.lane(name), "data-y");
    let (y1, y2) = (num(&line, "y1"), num(&line, "y2"));
    assert!((lane_y("wlan0")..lane_y("wlan0") + 70.0).contains(&y1));
    assert!((lane_y("wwan0")..lane_y("wwan0") + 70.0).contains(&y2));
    let label = h
        .children()
        .find(|n| has_class(n, "handover-label"))
        .unwrap();
    assert_eq!(label.text(), Some("1.2 ms"));
    // The second goes back up.
    let line = hos[1].children().find(|n| n.has_tag_name("line")).unwrap();
    assert!(num(&line, "y2") < num(&line, "y1"));
    // With only wlan0 shown, the arrow to wwan0 is a stub naming it.
    let svg = render(&fixed(&["wlan0"]), &options()).unwrap();
    let doc = Document::parse(&svg).unwrap();
    let labels: Vec<&str> = doc
        .descendants()
        .filter(|n| has_class(n, "handover-label"))
        .filter_map(|n| n.text())
        .collect();
    assert!(labels.contains(&"to wwan0 \u{b7} 1.2 ms"), "{labels:?}");
}

#[test]
fn odd_interface_names_are_escaped() {
    let svg = render(&fixed(&[]), &options()).unwrap();
    assert!(svg.contains("wl&lt;an&gt;&amp;&quot;1&apos;"));
    assert!(!svg.contains(ODD));
    let doc = Document::parse(&svg).unwrap();
    let names: Vec<&str> = doc
        .descendants()
        .filter(|n| has_class(n, "lane-name"))
        .filter_map(|n| n.text())
        .collect();
    assert!(names.contains(&ODD), "{names:?}");
    // Control characters cannot reach the document.
    let mut h = fixed(&[]);
    h.triggers[0].interface.as_mut().unwrap().name = "bad\u{1}name".into();
    Document::parse(&render(&h, &options()).unwrap()).unwrap();
}

#[test]
fn html_wraps_the_same_svg_and_both_parse() {
    let h = fixed(&[]);
    let svg = render_svg(&h, &options()).unwrap();
    assert!(svg.starts_with("<?xml"));
    Document::parse(&svg).unwrap();
    let html = render_html(&h, &options()).unwrap();
    let opt = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..Default::default()
    };
    let doc = Document::parse_with_options(&html, opt).unwrap();
    assert_eq!(doc.root_element().tag_name().name(), "html");
    assert!(doc.descendants().any(|n| n.has_tag_name("svg")));
    assert!(!html.contains("<script"));
    assert!(!svg.contains("href=\"http"));
}

#[test]
fn bad_windows_and_widths_are_errors() {
    let mut h = fixed(&[]);
    h.until = h.since;
    assert_eq!(render(&h, &options()), Err(RenderError::EmptyWindow));
    let o = Options {
        width: 100,
        ..options()
    };
    assert_eq!(render(&fixed(&[]), &o), Err(RenderError::TooNarrow(100)));
    // An empty window still draws.
    let mut h = fixed(&[]);
    h.triggers.clear();
    h.before.clear();
    let svg = render(&h, &options()).unwrap();
    assert!(svg.contains("no link triggers in this window"));
}

#[test]
fn thousands_of_flaps_stay_small() {
    let mut h = fixed(&["flappy"]);
    h.triggers.clear();
    for i in 0..5000i64 {
        for (k, kind) in [(0, TriggerType::LinkDown), (1, TriggerType::LinkUp)] {
            let mut t = Trigger::new(trigger_db::model::Source::Rtnetlink, kind);
            t.id = (2 * i + k + 1) as u64;
            t.observed_at = Timestamp(SINCE + i * 300_000_000 + k * 100_000_000);
            t.interface = Some(trigger_db::model::Interface {
                name: "flappy".into(),
                ..Default::default()
            });
            h.triggers.push(t);
        }
    }
    let svg = render(&h, &options()).unwrap();
    let doc = Document::parse(&svg).unwrap();
    let n = doc.descendants().filter(|n| has_class(n, "period")).count();
    assert!(n <= 3, "{n} period shapes");
    assert!(svg.len() < 50_000, "{} bytes", svg.len());
}

#[test]
fn format_from_flag_or_extension() {
    assert_eq!(format_for(Path::new("a.svg"), None).unwrap(), Format::Svg);
    assert_eq!(format_for(Path::new("a.HTML"), None).unwrap(), Format::Html);
    assert_eq!(format_for(Path::new("a.htm"), None).unwrap(), Format::Html);
    assert_eq!(format_for(Path::new("-"), None).unwrap(), Format::Svg);
    assert_eq!(
        format_for(Path::new("a.png"), Some(Format::Html)).unwrap(),
        Format::Html
    );
    let e = format_for(Path::new("a.png"), None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("--format"), "{e}");
}

/// `docs/timeline-example.svg` is this history's rendering; run with
/// `TIMELINE_BLESS=1` to rewrite it after a change to the renderer.
#[test]
fn docs_example_is_current() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/timeline-example.svg");
    let svg = render_svg(&fixed(&[]), &options()).unwrap();
    if std::env::var_os("TIMELINE_BLESS").is_some() {
        std::fs::write(&path, &svg).unwrap();
    }
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        on_disk == svg,
        "{} is not the current rendering; rerun with TIMELINE_BLESS=1",
        path.display()
    );
}
