//! How triggerctl prints: aligned tables for people, or one JSON object per
//! line for scripts (`--json`), always flushed per line so that pipes see
//! each trigger as it arrives.
//!
//! Triggers print as `model::Trigger`'s serde form; links, stats, counts and
//! notes as small objects documented in the subcommands' help. Notes for
//! people (cursor hints, gap notices) go to stderr. This module only formats
//! and writes; it does not talk to the daemon.

use std::io::{self, Write};

use serde_json::{Value, json};
use trigger_db::model::{
    Address, Detail, Handover, Interface, LinkState, Source, Timestamp, Trigger,
};

use crate::time::short;

/// Where and how output goes.
#[derive(Debug, Clone, Copy)]
pub struct Out {
    pub json: bool,
}

impl Out {
    /// Writes one line to stdout and flushes it.
    pub fn line(&self, s: &str) -> io::Result<()> {
        let mut o = io::stdout().lock();
        writeln!(o, "{s}")?;
        o.flush()
    }

    /// Writes one JSON value as one line.
    pub fn json_line(&self, v: &impl serde::Serialize) -> io::Result<()> {
        let s = serde_json::to_string(v).map_err(io::Error::other)?;
        self.line(&s)
    }

    /// A note for people, on stderr.
    pub fn note(&self, s: &str) {
        eprintln!("triggerctl: {s}");
    }

    /// The table header for trigger rows (nothing in JSON mode).
    pub fn trigger_header(&self) -> io::Result<()> {
        if self.json {
            return Ok(());
        }
        self.line(&trigger_header())
    }

    /// One trigger: a table row, or its JSON form.
    pub fn trigger(&self, t: &Trigger) -> io::Result<()> {
        self.hosted_trigger(None, t)
    }

    /// The table header for trigger rows, with a HOST column first if
    /// `with_host`.
    pub fn trigger_header_with(&self, with_host: bool) -> io::Result<()> {
        if self.json {
            return Ok(());
        }
        if with_host {
            self.line(&format!("{:<W_HOST$} {}", "HOST", trigger_header()))
        } else {
            self.line(&trigger_header())
        }
    }

    /// One trigger, and its host if given (rows of several hosts): a
    /// table row with the host first, or the JSON form with a `host` key.
    pub fn hosted_trigger(&self, host: Option<&str>, t: &Trigger) -> io::Result<()> {
        match (self.json, host) {
            (true, None) => self.json_line(t),
            (true, Some(h)) => {
                let mut v = serde_json::to_value(t).map_err(io::Error::other)?;
                if let Value::Object(m) = &mut v {
                    m.insert("host".into(), Value::String(h.to_owned()));
                }
                self.json_line(&v)
            }
            (false, None) => self.line(&trigger_row(t)),
            (false, Some(h)) => self.line(&format!("{:<W_HOST$} {}", h, trigger_row(t))),
        }
    }
}

/// The HOST column (a longer host id pushes the rest of its row right).
const W_HOST: usize = 16;

const W_ID: usize = 7;
const W_TIME: usize = 23;
const W_SOURCE: usize = 10;
const W_TYPE: usize = 22;
const W_IFACE: usize = 10;

pub fn trigger_header() -> String {
    format!(
        "{:>W_ID$} {:<W_TIME$} {:<W_SOURCE$} {:<W_TYPE$} {:<W_IFACE$} ADDRESS/DETAIL",
        "ID", "TIME (UTC)", "SOURCE", "TYPE", "INTERFACE"
    )
}

/// A table row: fixed columns (a longer value pushes the rest of its row
/// right rather than being cut), then the address, if any, and a free-form
/// summary (one column, so that the usual row fits in 120 columns).
pub fn trigger_row(t: &Trigger) -> String {
    let id = if t.id == 0 {
        "-".to_owned()
    } else {
        t.id.to_string()
    };
    let iface = t.interface.as_ref().map(iface_name).unwrap_or_default();
    let last: Vec<String> = [t.address.as_ref().map(Address::to_string), Some(summary(t))]
        .into_iter()
        .flatten()
        .filter(|s| !s.is_empty())
        .collect();
    let row = format!(
        "{id:>W_ID$} {:<W_TIME$} {:<W_SOURCE$} {:<W_TYPE$} {iface:<W_IFACE$} {}",
        short(t.observed_at),
        short_source(t.source),
        t.kind.as_str(),
        last.join(" "),
    );
    row.trim_end().to_owned()
}

/// Source names for the table (one is abbreviated to fit).
pub fn short_source(s: Source) -> &'static str {
    match s {
        Source::NetworkManager => "nm",
        other => other.as_str(),
    }
}

/// An interface's name, or `#index` when it has none.
pub fn iface_name(i: &Interface) -> String {
    if i.name.is_empty() {
        format!("#{}", i.index)
    } else {
        i.name.clone()
    }
}

fn link_state_summary(s: &LinkState, long: bool) -> String {
    let mut out = vec![
        if s.admin_up { "up" } else { "down" }.to_owned(),
        if s.carrier { "carrier" } else { "no-carrier" }.to_owned(),
    ];
    if let Some(o) = s.oper_state {
        out.push(format!("oper={o}"));
    }
    if long && s.mtu != 0 {
        out.push(format!("mtu={}", s.mtu));
    }
    if long && !s.mac.is_empty() {
        out.push(format!("mac={}", s.mac));
    }
    out.join(" ")
}

/// The detail column: address flags, reason, and the type's parameters
/// (the link state without MTU and MAC: `get` and `--json` show those).
pub fn summary(t: &Trigger) -> String {
    summary_of(t, false)
}

fn summary_of(t: &Trigger, long: bool) -> String {
    let mut parts = Vec::new();
    if let Some(a) = &t.address
        && !a.flags.is_empty()
    {
        let flags: Vec<&str> = a.flags.iter().map(|f| f.as_str()).collect();
        parts.push(format!("[{}]", flags.join(",")));
    }
    if let Some(r) = &t.reason {
        if r.name.is_empty() {
            parts.push(format!("reason={}:{}", r.space, r.code));
        } else {
            parts.push(format!("reason={}", r.name));
        }
    }
    match &t.detail {
        None => {}
        Some(Detail::LinkState(s)) => parts.push(link_state_summary(s, long)),
        Some(Detail::GoingDown { time_interval_ms }) => {
            parts.push(format!("in {time_interval_ms}ms"));
        }
        Some(Detail::ParametersReport { parameters }) => {
            for p in parameters {
                let unit = p.unit.map(|u| match u.as_str() {
                    "percent" => "%",
                    other => other,
                });
                let mut s = format!("{}={}{}", p.kind, p.value, unit.unwrap_or(""));
                if let Some(th) = p.threshold_crossed {
                    s.push_str(&format!("(crossed {th})"));
                }
                parts.push(s);
            }
        }
        Some(Detail::Handover(h)) => handover_summary(h, &mut parts),
        Some(Detail::DefaultRoute(r)) => {
            let fam = if r.ipv6 { "ipv6" } else { "ipv4" };
            match r.gateway {
                Some(g) => parts.push(format!("{fam} via {g}")),
                None => parts.push(format!("{fam} dev")),
            }
            if r.metric != 0 {
                parts.push(format!("metric={}", r.metric));
            }
            if r.table != 0 && r.table != 254 {
                parts.push(format!("table={}", r.table));
            }
        }
        Some(Detail::Resync(r)) => parts.push(format!(
            "{} links={} addresses={}",
            r.cause, r.links, r.addresses
        )),
        Some(Detail::Connectivity(c)) => parts.push(format!("{}({})", c.state, c.code)),
    }
    parts.join(" ")
}

/// A handover: `eth0 -> eth1`, then what a completed move adds:
/// `local 192.0.2.1 -> 192.0.2.9 peer 198.51.100.7 took 1.234ms
/// why=link-down cause=42` (a peer that did not change is named once).
fn handover_summary(h: &Handover, parts: &mut Vec<String>) {
    parts.push(format!(
        "{} -> {}",
        iface_name(&h.old_link),
        iface_name(&h.new_link)
    ));
    let ip = |a: Option<std::net::IpAddr>| a.map_or_else(|| "?".to_owned(), |a| a.to_string());
    let pair = |label: &str, old, new| match (old, new) {
        (None, None) => None,
        (old, new) if old == new => Some(format!("{label} {}", ip(old))),
        (old, new) => Some(format!("{label} {} -> {}", ip(old), ip(new))),
    };
    parts.extend(pair("local", h.old_local_address, h.new_local_address));
    parts.extend(pair("peer", h.old_remote_address, h.new_remote_address));
    if let Some(us) = h.duration_us {
        parts.push(format!("took {}.{:03}ms", us / 1000, us % 1000));
    }
    if !h.move_reason.is_empty() {
        parts.push(format!("why={}", h.move_reason));
    }
    if h.cause_trigger_id != 0 {
        parts.push(format!("cause={}", h.cause_trigger_id));
    }
}

/// One trigger in full, one field a line, for `get`.
pub fn trigger_long(t: &Trigger) -> Vec<String> {
    let mut out = vec![
        format!("id:          {}", t.id),
        format!("observed at: {}", t.observed_at),
        format!("source:      {}", t.source),
        format!("type:        {}", t.kind),
    ];
    if let Some(i) = &t.interface {
        let mut s = iface_name(i);
        if i.index != 0 && !i.name.is_empty() {
            s.push_str(&format!(" (index {})", i.index));
        }
        if let Some(k) = i.kind {
            s.push_str(&format!(" kind={k}"));
        }
        if !i.driver_kind.is_empty() {
            s.push_str(&format!(" driver={}", i.driver_kind));
        }
        if let Some(l) = i.link_type {
            s.push_str(&format!(" link-type={l}"));
        }
        out.push(format!("interface:   {s}"));
    }
    if let Some(a) = &t.address {
        let mut s = a.to_string();
        if !a.flags.is_empty() {
            let flags: Vec<&str> = a.flags.iter().map(|f| f.as_str()).collect();
            s.push_str(&format!(" [{}]", flags.join(",")));
        }
        if let Some(v) = a.valid_lifetime_s {
            s.push_str(&format!(" valid={v}s"));
        }
        if let Some(p) = a.preferred_lifetime_s {
            s.push_str(&format!(" preferred={p}s"));
        }
        if a.scope != 0 {
            s.push_str(&format!(" scope={}", a.scope));
        }
        out.push(format!("address:     {s}"));
    }
    if let Some(r) = &t.reason {
        out.push(format!("reason:      {} {} ({})", r.space, r.code, r.name));
    }
    if !t.origin.is_empty() {
        out.push(format!("origin:      {}", t.origin));
    }
    let mut detail_only = t.clone();
    detail_only.address = None;
    detail_only.reason = None;
    let d = summary_of(&detail_only, true);
    if !d.is_empty() {
        out.push(format!("detail:      {d}"));
    }
    out
}

/// Aligns rows under headers; the last column is not padded.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> Vec<String> {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let fmt = |cells: Vec<&str>| {
        let mut line = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(c);
            if i + 1 < cells.len() {
                line.push_str(&" ".repeat(w.saturating_sub(c.chars().count())));
            }
        }
        line.trim_end().to_owned()
    };
    let mut out = vec![fmt(headers.to_vec())];
    out.extend(
        rows.iter()
            .map(|r| fmt(r.iter().map(String::as_str).collect())),
    );
    out
}

/// An address with its flags, for the links table.
pub fn address_cell(a: &Address) -> String {
    if a.flags.is_empty() {
        a.to_string()
    } else {
        let flags: Vec<&str> = a.flags.iter().map(|f| f.as_str()).collect();
        format!("{}[{}]", a, flags.join(","))
    }
}

/// The JSON object of one link for `links --json`.
pub fn link_json(
    interface: &Interface,
    state: &LinkState,
    addresses: &[Address],
    last_change: Option<Timestamp>,
) -> Value {
    json!({
        "interface": interface,
        "state": state,
        "up": state.is_up(),
        "addresses": addresses,
        "last_change": last_change,
    })
}

#[cfg(test)]
mod tests {
    use trigger_db::model::{
        AddressFlag, LinkParameter, LinkParameterType, ParameterUnit, Reason, ReasonSpace,
        TriggerType,
    };

    use super::*;

    fn going_down() -> Trigger {
        let mut t = Trigger::new(Source::Client, TriggerType::LinkGoingDown);
        t.id = 42;
        t.observed_at = Timestamp(1_700_000_000_123_000_000);
        t.interface = Some(Interface {
            name: "wlan0".into(),
            ..Default::default()
        });
        t.reason = Some(Reason::ieee(ReasonSpace::LinkGoingDown, 1));
        t.detail = Some(Detail::GoingDown {
            time_interval_ms: 500,
        });
        t
    }

    #[test]
    fn handover_shows_links_addresses_duration_reason_and_cause() {
        let link = |name: &str| Interface {
            name: name.into(),
            ..Default::default()
        };
        let mut h = Handover::links(link("eth0"), link("wlan0"));
        let mut t = Trigger::new(Source::Client, TriggerType::LinkHandoverComplete);
        t.detail = Some(Detail::Handover(h.clone()));
        assert_eq!(summary(&t), "eth0 -> wlan0");
        h.old_local_address = Some("192.0.2.1".parse().unwrap());
        h.new_local_address = Some("192.0.2.9".parse().unwrap());
        h.old_remote_address = Some("198.51.100.7".parse().unwrap());
        h.new_remote_address = h.old_remote_address;
        h.duration_us = Some(1_234);
        h.move_reason = "link-down".into();
        h.cause_trigger_id = 42;
        t.detail = Some(Detail::Handover(h));
        assert_eq!(
            summary(&t),
            "eth0 -> wlan0 local 192.0.2.1 -> 192.0.2.9 peer 198.51.100.7 took 1.234ms \
             why=link-down cause=42"
        );
        let long = trigger_long(&t).join("\n");
        assert!(
            long.contains("detail:      eth0 -> wlan0 local 192.0.2.1"),
            "{long}"
        );
    }

    #[test]
    fn row_is_aligned_under_the_header() {
        let h = trigger_header();
        let r = trigger_row(&going_down());
        assert_eq!(
            r,
            "     42 2023-11-14 22:13:20.123 client     link-going-down        wlan0      \
             reason=link-parameter-degrading in 500ms"
        );
        for col in ["TIME", "SOURCE", "TYPE", "INTERFACE", "ADDRESS/DETAIL"] {
            let at = h.find(col).unwrap();
            assert_eq!(&r[at - 1..at], " ", "{col} not aligned:\n{h}\n{r}");
            assert_ne!(&r[at..at + 1], " ", "{col} column empty:\n{h}\n{r}");
        }
        assert!(r.len() <= 120, "{r}");
    }

    #[test]
    fn snapshot_rows_have_no_id_and_show_address_flags() {
        let mut t = Trigger::new(Source::Rtnetlink, TriggerType::IfAddrAdded);
        t.interface = Some(Interface {
            index: 3,
            ..Default::default()
        });
        t.address = Some(Address {
            address: "2001:db8::1".parse().unwrap(),
            prefix_len: 64,
            flags: vec![AddressFlag::Tentative],
            valid_lifetime_s: None,
            preferred_lifetime_s: None,
            scope: 0,
        });
        let r = trigger_row(&t);
        assert!(r.starts_with("      - "), "{r}");
        assert!(r.contains(" #3 "), "{r}");
        assert!(r.ends_with("#3         2001:db8::1/64 [tentative]"), "{r}");
    }

    #[test]
    fn parameters_summary_uses_units() {
        let mut t = Trigger::new(Source::Client, TriggerType::LinkParametersReport);
        t.detail = Some(Detail::ParametersReport {
            parameters: vec![
                LinkParameter {
                    kind: LinkParameterType::SignalStrength,
                    value: 20.0,
                    unit: Some(ParameterUnit::Percent),
                    threshold_crossed: None,
                },
                LinkParameter {
                    kind: LinkParameterType::Sinr,
                    value: -3.5,
                    unit: Some(ParameterUnit::Db),
                    threshold_crossed: Some(0.0),
                },
            ],
        });
        assert_eq!(summary(&t), "signal-strength=20% sinr=-3.5db(crossed 0)");
    }

    #[test]
    fn table_pads_all_but_the_last_column() {
        let rows = vec![
            vec!["1".into(), "lo".into(), "127.0.0.1/8".into()],
            vec!["12".into(), "wlan0".into(), "".into()],
        ];
        assert_eq!(
            table(&["INDEX", "NAME", "ADDRESSES"], &rows),
            vec![
                "INDEX  NAME   ADDRESSES",
                "1      lo     127.0.0.1/8",
                "12     wlan0",
            ]
        );
    }
}
