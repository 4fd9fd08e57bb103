//! End-to-end test of `triggerctl timeline` against the real daemon
//! (rtnetlink source off, socket and database in a temporary directory):
//! the fixed history `tests/data/timeline.jsonl` goes in with `triggerctl
//! add --from`, and the SVG and HTML files written parse as XML with the
//! expected lanes, the state from before the window, and the handovers;
//! then a flapping link's 1,100 triggers (more than one Query page) all
//! count.

use std::{path::Path, process::Output};

use system_tests::trigger_db::{Daemon, triggerctl_ok as ok};

const DAEMON: &str = env!("CARGO_BIN_EXE_trigger-db");
const TRIGGERCTL: &str = env!("CARGO_BIN_EXE_triggerctl");
const ODD: &str = "wl<an>&\"1'";

fn ctl(d: &Daemon, args: &[&str]) -> Output {
    d.triggerctl(TRIGGERCTL, args)
        .output()
        .expect("run triggerctl")
}

fn lanes(doc: &roxmltree::Document) -> Vec<String> {
    doc.descendants()
        .filter(|n| {
            n.has_tag_name("g")
                && n.attribute("class")
                    .is_some_and(|c| c.split(' ').any(|x| x == "lane"))
        })
        .map(|n| n.attribute("data-interface").unwrap().to_owned())
        .collect()
}

fn count_class(doc: &roxmltree::Document, class: &str) -> usize {
    doc.descendants()
        .filter(|n| {
            n.attribute("class")
                .is_some_and(|c| c.split(' ').any(|x| x == class))
        })
        .count()
}

#[test]
fn timeline_of_a_stored_history() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(DAEMON, dir.path(), None, None);
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/timeline.jsonl");
    ok(ctl(&d, &["add", "--from", data.to_str().unwrap()]));

    let window = [
        "--since",
        "2026-11-27T09:00:00Z",
        "--until",
        "2026-11-27T09:30:00Z",
    ];
    let svg_path = dir.path().join("links.svg");
    let mut args = vec!["timeline", "-o", svg_path.to_str().unwrap()];
    args.extend(window);
    ok(ctl(&d, &args));
    let svg = std::fs::read_to_string(&svg_path).unwrap();
    let doc = roxmltree::Document::parse(&svg).unwrap();
    assert_eq!(lanes(&doc), ["eth0", ODD, "wlan0", "wwan0"]);
    assert_eq!(count_class(&doc, "handover"), 3);
    // wlan0's two, and wwan0's from 10 s before the window.
    assert_eq!(count_class(&doc, "going-down"), 3);
    assert_eq!(count_class(&doc, "flapping"), 1);
    // eth0's down state comes from its link-down before the window.
    let eth0 = doc
        .descendants()
        .find(|n| n.attribute("data-interface") == Some("eth0"))
        .unwrap();
    let first = eth0
        .children()
        .find(|n| n.attribute("class") == Some("period down"))
        .expect("eth0 starts down");
    let tip = first.first_element_child().unwrap().text().unwrap();
    assert!(tip.contains("before the window"), "{tip}");
    // The daemon's counter of suppressed flaps is stated.
    assert!(svg.contains("Suppressed flaps are not stored"));

    // HTML by extension, only two interfaces, in the order given; the
    // handovers (stored on their new link) still come.
    let html_path = dir.path().join("links.html");
    let mut args = vec![
        "timeline",
        "-o",
        html_path.to_str().unwrap(),
        "-i",
        "wwan0,wlan0",
    ];
    args.extend(window);
    ok(ctl(&d, &args));
    let html = std::fs::read_to_string(&html_path).unwrap();
    let opt = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..Default::default()
    };
    let doc = roxmltree::Document::parse_with_options(&html, opt).unwrap();
    assert_eq!(doc.root_element().tag_name().name(), "html");
    assert_eq!(lanes(&doc), ["wwan0", "wlan0"]);
    assert_eq!(count_class(&doc, "handover"), 3);

    // 550 flaps: more than one Query page, all of them read.
    let mut flaps = String::new();
    for i in 0..550 {
        for (k, kind) in [(0, "link-down"), (1, "link-up")] {
            let secs = 1200 + i;
            flaps.push_str(&format!(
                "{{\"observed_at\":\"2026-11-27T09:{:02}:{:02}.{}Z\",\"type\":\"{kind}\",\"interface\":{{\"name\":\"flappy0\"}}}}\n",
                secs / 60,
                secs % 60,
                k * 5
            ));
        }
    }
    let flaps_path = dir.path().join("flaps.jsonl");
    std::fs::write(&flaps_path, flaps).unwrap();
    ok(ctl(&d, &["add", "--from", flaps_path.to_str().unwrap()]));
    let mut args = vec!["timeline", "-o", "-", "-i", "flappy0"];
    args.extend(window);
    let out = ok(ctl(&d, &args));
    let doc = roxmltree::Document::parse(&out).unwrap();
    assert_eq!(lanes(&doc), ["flappy0"]);
    assert!(out.contains("550 downs"));
    assert!(out.contains("550 link-down(s)"));

    // To stdout; an unknown extension without --format is refused.
    let mut args = vec!["timeline", "-o", "-"];
    args.extend(window);
    let out = ok(ctl(&d, &args));
    roxmltree::Document::parse(&out).unwrap();
    let o = ctl(&d, &["timeline", "-o", "x.png"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--format"));
    let o = ctl(
        &d,
        &[
            "timeline", "-o", "x.svg", "--since", "10m", "--until", "20m",
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("must be before"));
}
