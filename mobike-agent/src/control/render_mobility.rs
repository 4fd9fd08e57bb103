//! The mobility parts of `mobike-agent status`: the source line, and per
//! IKE SA its candidates with scores and path tests and its moves with
//! their timelines, as text or JSON.

use std::fmt::Write as _;

use serde_json::{Value, json};
use trigger_proto::mobike_v1::{Mobility, Move, SaMobility};

/// `mobility: following trigger-db (synced, 3 interfaces)`.
pub fn source_line(m: &Mobility) -> String {
    let mut s = match m.active.as_str() {
        "trigger-db" => "following trigger-db".to_owned(),
        "netlink" => format!("following the agent's own rtnetlink watch ({})", m.why),
        _ => format!("waiting for trigger-db ({})", m.why),
    };
    let _ = write!(
        s,
        " [source {}; {}, {} interfaces",
        m.source,
        if m.synced { "synced" } else { "not synced" },
        m.interfaces
    );
    if m.rejected > 0 {
        let _ = write!(s, ", {} unusable link events", m.rejected);
    }
    if m.reports_dropped > 0 {
        let _ = write!(
            s,
            ", {} handovers not written to trigger-db",
            m.reports_dropped
        );
    }
    if let Some(n) = m.kernel_hints {
        let _ = write!(s, ", kernel loss hints: {n} ahead of trigger-db");
    }
    s.push(']');
    format!("mobility: {s}\n")
}

fn ms(us: u64) -> String {
    format!("{:.1} ms", us as f64 / 1000.0)
}

/// The lines under an IKE SA.
pub fn sa_lines(m: &SaMobility) -> String {
    let mut out = String::new();
    for c in &m.candidates {
        let test = m
            .tests
            .iter()
            .find(|t| t.local == c.local && t.remote == c.remote)
            .map(|t| match t.rtt_us {
                Some(rtt) => format!(", answered in {} {}s ago", ms(rtt), t.age_ms / 1000),
                None => format!(", unanswered {}s ago", t.age_ms / 1000),
            })
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  {} {} -> {} via {} score {}{}{}",
            if c.current { "*" } else { " " },
            c.local,
            c.remote,
            c.interface,
            c.score,
            if c.last_resort { " (last resort)" } else { "" },
            test
        );
    }
    if let Some(mv) = &m.moving {
        let _ = writeln!(out, "  moving: {}", move_text(mv));
    }
    for mv in m.moves.iter().rev() {
        let _ = writeln!(out, "  moved: {}", move_text(mv));
    }
    out
}

/// `link-down: 192.0.2.1 (eth0) -> 198.51.100.1 (wlan0), trigger 42:
/// decided 0.1 ms, update 0.3 ms, moved 2.0 ms, first ESP 11.2 ms; 5s ago`.
fn move_text(m: &Move) -> String {
    let mut s = format!(
        "{}: {} ({}) -> {}",
        m.reason,
        m.from_local,
        m.from_interface,
        if m.to_local.is_empty() {
            "?"
        } else {
            &m.to_local
        }
    );
    if !m.to_interface.is_empty() {
        let _ = write!(s, " ({})", m.to_interface);
    }
    if m.trigger_id != 0 {
        let _ = write!(s, ", trigger {}", m.trigger_id);
    }
    let stages = [
        ("decided", m.decided_us),
        ("tests", m.tests_sent_us),
        ("answer", m.first_answer_us),
        ("update", m.update_sent_us),
        ("moved", m.moved_us),
        ("first ESP", m.first_esp_us),
    ];
    let parts: Vec<String> = stages
        .iter()
        .filter_map(|(n, v)| v.map(|v| format!("{n} {}", ms(v))))
        .collect();
    if !parts.is_empty() {
        let _ = write!(s, ": {}", parts.join(", "));
    }
    if !m.failed.is_empty() {
        let _ = write!(s, "; not done: {}", m.failed);
    }
    let _ = write!(s, "; {}s ago", m.age_ms / 1000);
    s
}

/// The source as JSON.
pub fn source_json(m: &Mobility) -> Value {
    json!({
        "source": m.source,
        "active": m.active,
        "why": (!m.why.is_empty()).then_some(&m.why),
        "since_unix_ms": m.since_unix_ms,
        "synced": m.synced,
        "interfaces": m.interfaces,
        "rejected": m.rejected,
        "reports_dropped": m.reports_dropped,
        "kernel_hints": m.kernel_hints,
    })
}

fn move_json(m: &Move) -> Value {
    json!({
        "reason": m.reason,
        "from": {"local": m.from_local, "remote": m.from_remote, "interface": m.from_interface},
        "to": {"local": m.to_local, "remote": m.to_remote, "interface": m.to_interface},
        "trigger_id": m.trigger_id,
        "observed_to_received_us": m.observed_to_received_us,
        "decided_us": m.decided_us,
        "tests_sent_us": m.tests_sent_us,
        "first_answer_us": m.first_answer_us,
        "update_sent_us": m.update_sent_us,
        "moved_us": m.moved_us,
        "first_esp_us": m.first_esp_us,
        "age_ms": m.age_ms,
        "failed": (!m.failed.is_empty()).then_some(&m.failed),
    })
}

/// One IKE SA's paths as JSON.
pub fn sa_json(m: &SaMobility) -> Value {
    json!({
        "candidates": m.candidates.iter().map(|c| json!({
            "local": c.local,
            "remote": c.remote,
            "interface": c.interface,
            "score": c.score,
            "last_resort": c.last_resort,
            "current": c.current,
        })).collect::<Vec<_>>(),
        "tests": m.tests.iter().map(|t| json!({
            "local": t.local,
            "remote": t.remote,
            "rtt_us": t.rtt_us,
            "age_ms": t.age_ms,
        })).collect::<Vec<_>>(),
        "moving": m.moving.as_ref().map(move_json),
        "moves": m.moves.iter().map(move_json).collect::<Vec<_>>(),
    })
}
