//! `triggerctl add`: one trigger from flags, or many from JSON lines, turned
//! into `trigger.v1` wire triggers and checked with the same rules the
//! daemon applies (`Trigger::from_client`) before anything is sent.
//!
//! Errors name the flag, or the line and field (`wlan.jsonl:3:
//! interface.name: ...`). Reading is streaming: [`BatchReader`] yields
//! batches of up to [`BATCH`] checked lines, so a bad line stops the input
//! before its batch is sent. This module does not send anything itself.

use std::net::IpAddr;

use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::io::{AsyncBufRead, AsyncBufReadExt};
use trigger_db::model::{
    Address, Detail, Handover, Interface, InterfaceKind, LinkParameter, LinkParameterType,
    LinkType, ParameterUnit, Reason, ReasonSpace, Source, Timestamp, Trigger, TriggerType,
};
use trigger_proto::v1 as pb;

/// Most triggers per Add call.
pub const BATCH: usize = 1000;

/// Longest input line accepted, in bytes.
pub const MAX_LINE: usize = 1 << 20;

/// The trigger flags of `add` (all optional for clap; [`build`] checks which
/// ones the type needs).
#[derive(Debug, Default, Clone)]
pub struct TriggerFlags {
    pub kind: Option<TriggerType>,
    pub interface: Option<String>,
    pub index: Option<u32>,
    pub iface_kind: Option<InterfaceKind>,
    pub link_type: Option<LinkType>,
    pub address: Option<String>,
    pub reason: Option<String>,
    pub time_interval_ms: Option<u32>,
    pub params: Vec<LinkParameter>,
    pub old_link: Option<String>,
    pub new_link: Option<String>,
    pub moved: MoveFlags,
    pub source: Option<Source>,
    pub origin: Option<String>,
    pub observed_at: Option<Timestamp>,
}

/// What a completed move adds to a handover (`--old-local` ...); all
/// optional, and only for the handover types.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MoveFlags {
    pub old_local: Option<IpAddr>,
    pub old_remote: Option<IpAddr>,
    pub new_local: Option<IpAddr>,
    pub new_remote: Option<IpAddr>,
    pub duration_us: Option<u64>,
    pub move_reason: Option<String>,
    pub cause: Option<u64>,
}

impl MoveFlags {
    fn apply(&self, h: &mut Handover) {
        h.old_local_address = self.old_local;
        h.old_remote_address = self.old_remote;
        h.new_local_address = self.new_local;
        h.new_remote_address = self.new_remote;
        h.duration_us = self.duration_us;
        h.move_reason = self.move_reason.clone().unwrap_or_default();
        h.cause_trigger_id = self.cause.unwrap_or(0);
    }
}

/// Parses `IP` or `IP/LEN` (a bare address is a host route: /32 or /128).
pub fn parse_address(s: &str) -> Result<Address, String> {
    let (ip, len) = match s.split_once('/') {
        Some((ip, len)) => (ip, Some(len)),
        None => (s, None),
    };
    let address: IpAddr = ip
        .trim()
        .parse()
        .map_err(|_| format!("not an IP address: {ip:?}"))?;
    let max: u8 = if address.is_ipv4() { 32 } else { 128 };
    let prefix_len = match len {
        None => max,
        Some(l) => match l.trim().parse::<u8>() {
            Ok(n) if n <= max => n,
            _ => return Err(format!("prefix length {l:?} is not 0..={max}")),
        },
    };
    Ok(Address {
        address,
        prefix_len,
        flags: Vec::new(),
        valid_lifetime_s: None,
        preferred_lifetime_s: None,
        scope: 0,
    })
}

/// Parses `--param NAME=VALUE[UNIT]`, e.g. `signal-strength=-70dbm`,
/// `signal-strength=20%`, `data-rate=5400kbps`, `sinr=12db`. Without a unit
/// the parameter's natural one is used.
pub fn parse_param(s: &str) -> Result<LinkParameter, String> {
    let (name, value) = s
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=VALUE[UNIT], got {s:?}"))?;
    let kind: LinkParameterType = name.parse()?;
    let v = value.trim().to_ascii_lowercase();
    let (number, unit) = [
        ("dbm", ParameterUnit::Dbm),
        ("db", ParameterUnit::Db),
        ("percent", ParameterUnit::Percent),
        ("%", ParameterUnit::Percent),
        ("kbps", ParameterUnit::Kbps),
        ("kb/s", ParameterUnit::Kbps),
    ]
    .iter()
    .find_map(|(suffix, unit)| v.strip_suffix(suffix).map(|n| (n, Some(*unit))))
    .unwrap_or((v.as_str(), None));
    let value: f64 = number
        .trim()
        .parse()
        .ok()
        .filter(|x: &f64| x.is_finite())
        .ok_or_else(|| {
            format!("{name}: not a number with an optional unit (dbm, db, %, kbps): {value:?}")
        })?;
    let unit = unit.unwrap_or(match kind {
        LinkParameterType::DataRate | LinkParameterType::Throughput => ParameterUnit::Kbps,
        LinkParameterType::SignalStrength => ParameterUnit::Dbm,
        LinkParameterType::Sinr => ParameterUnit::Db,
        LinkParameterType::PacketErrorRate => ParameterUnit::Percent,
    });
    Ok(LinkParameter {
        kind,
        value,
        unit: Some(unit),
        threshold_crossed: None,
    })
}

fn link(name: &str) -> Interface {
    Interface {
        name: name.to_owned(),
        ..Default::default()
    }
}

/// Builds the wire trigger of `add`'s flags, checked as the daemon will.
pub fn build(f: &TriggerFlags) -> Result<pb::Trigger, String> {
    let kind = f.kind.ok_or("--type is required (or --from FILE)")?;
    let mut t = Trigger::new(f.source.unwrap_or(Source::Client), kind);
    if f.interface.is_some() || f.index.is_some() || f.iface_kind.is_some() || f.link_type.is_some()
    {
        t.interface = Some(Interface {
            index: f.index.unwrap_or(0),
            name: f.interface.clone().unwrap_or_default(),
            kind: f.iface_kind,
            driver_kind: String::new(),
            link_type: f.link_type,
        });
    }
    if let Some(a) = &f.address {
        t.address = Some(parse_address(a).map_err(|e| format!("--address: {e}"))?);
    }
    if let Some(r) = &f.reason {
        let space = match kind {
            TriggerType::LinkDown => ReasonSpace::LinkDown,
            TriggerType::LinkGoingDown => ReasonSpace::LinkGoingDown,
            other => {
                return Err(format!(
                    "--reason fits only link-down and link-going-down, not {other}"
                ));
            }
        };
        t.reason = Some(Reason::parse_in(space, r).map_err(|e| format!("--reason: {e}"))?);
    }
    let only = |flag: &str, fits: &str| format!("{flag} fits only {fits}, not {kind}");
    match f.time_interval_ms {
        Some(ms) if kind == TriggerType::LinkGoingDown => {
            t.detail = Some(Detail::GoingDown {
                time_interval_ms: ms,
            });
        }
        Some(_) => return Err(only("--time-interval", "link-going-down")),
        None if kind == TriggerType::LinkGoingDown => {
            return Err("--time-interval is required for link-going-down (e.g. 500ms)".into());
        }
        None => {}
    }
    if !f.params.is_empty() {
        if kind != TriggerType::LinkParametersReport {
            return Err(only("--param", "link-parameters-report"));
        }
        t.detail = Some(Detail::ParametersReport {
            parameters: f.params.clone(),
        });
    } else if kind == TriggerType::LinkParametersReport {
        return Err(
            "--param is required for link-parameters-report (e.g. signal-strength=-70dbm)".into(),
        );
    }
    let handover = matches!(
        kind,
        TriggerType::LinkHandoverImminent | TriggerType::LinkHandoverComplete
    );
    match (&f.old_link, &f.new_link) {
        (None, None) if handover => {
            return Err(format!("--old-link and --new-link are required for {kind}"));
        }
        (None, None) => {}
        (Some(old), Some(new)) if handover => {
            let mut h = Handover::links(link(old), link(new));
            f.moved.apply(&mut h);
            t.detail = Some(Detail::Handover(h));
        }
        _ if handover => {
            return Err(format!("--old-link and --new-link go together for {kind}"));
        }
        _ => {
            return Err(only(
                "--old-link/--new-link",
                "link-handover-imminent and link-handover-complete",
            ));
        }
    }
    if !handover && f.moved != MoveFlags::default() {
        return Err(only(
            "--old-local/--old-remote/--new-local/--new-remote/--duration/--move-reason/--cause",
            "link-handover-imminent and link-handover-complete",
        ));
    }
    if let Some(o) = &f.origin {
        t.origin = o.clone();
    }
    let mut wire = t.to_wire();
    wire.observed_at = f.observed_at.map(Timestamp::to_wire);
    check(&wire)?;
    Ok(wire)
}

/// The daemon's Add rules, applied here first.
fn check(wire: &pb::Trigger) -> Result<(), String> {
    Trigger::from_client(wire, "", Timestamp::now())
        .map(drop)
        .map_err(|e| e.to_string())
}

const FIELDS: &[&str] = &[
    "id",
    "host",
    "observed_at",
    "source",
    "type",
    "interface",
    "address",
    "reason",
    "origin",
    "detail",
];

fn field<T: DeserializeOwned>(key: &str, v: Value) -> Result<T, String> {
    serde_json::from_value(v).map_err(|e| format!("{key}: {e}"))
}

/// Parses one line of `--from`: a trigger in the JSON form `--json` prints.
/// `id` and `host` are ignored (the database assigns ids, and the daemon
/// adds under its own host, so `history --json` output can be added again); `source` defaults to client, `observed_at` to the
/// daemon's now. Errors name the field.
pub fn parse_line(text: &str) -> Result<pb::Trigger, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| {
        let msg = e.to_string();
        let msg = msg
            .rsplit_once(" at line ")
            .map_or(msg.as_str(), |(m, _)| m);
        format!("not JSON: {msg} (column {})", e.column())
    })?;
    let Value::Object(map) = value else {
        return Err("expected a JSON object (one trigger per line)".into());
    };
    let mut kind = None;
    let mut source = None;
    let mut observed_at = None;
    let mut t = Trigger::new(Source::Client, TriggerType::Resync);
    for (key, v) in map {
        match key.as_str() {
            // The database gives the id, and the daemon's host is its own.
            "id" | "host" => {}
            "observed_at" => observed_at = Some(field::<Timestamp>(&key, v)?),
            "source" => source = Some(field::<Source>(&key, v)?),
            "type" => kind = Some(field::<TriggerType>(&key, v)?),
            "interface" => t.interface = Some(field(&key, v)?),
            "address" => t.address = Some(field(&key, v)?),
            "reason" => t.reason = Some(field(&key, v)?),
            "origin" => t.origin = field(&key, v)?,
            "detail" => t.detail = Some(field(&key, v)?),
            other => {
                return Err(format!(
                    "unknown field `{other}`, expected one of {}",
                    FIELDS.join(", ")
                ));
            }
        }
    }
    t.kind = kind.ok_or("type: missing")?;
    if let Some(s) = source {
        t.source = s;
    }
    let mut wire = t.to_wire();
    wire.observed_at = observed_at.map(Timestamp::to_wire);
    check(&wire)?;
    Ok(wire)
}

/// Whether a line is the `{"next_cursor": ...}` that `history --json`
/// prints after a page, rather than a trigger.
fn is_cursor_line(text: &str) -> bool {
    matches!(
        serde_json::from_str::<Value>(text),
        Ok(Value::Object(m)) if m.len() == 1 && m.contains_key("next_cursor")
    )
}

/// One checked batch of `--from` input.
#[derive(Debug)]
pub struct Batch {
    /// Line numbers (1-based) of the triggers, in order.
    pub lines: Vec<usize>,
    pub triggers: Vec<pb::Trigger>,
}

/// A bad input line.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("{name}:{line}: {problem}")]
    Line {
        name: String,
        line: usize,
        problem: String,
    },
    #[error("reading {name}")]
    Read {
        name: String,
        #[source]
        source: std::io::Error,
    },
}

/// Reads `--from` input as checked batches of up to [`BATCH`] triggers.
/// Blank lines and lines starting with `#` are skipped. When `idle_flush`
/// is set (stdin), a partial batch is handed out after that long without
/// input, so that a live producer's triggers are not held back.
#[derive(Debug)]
pub struct BatchReader<R> {
    reader: R,
    name: String,
    line: usize,
    buf: Vec<u8>,
    eof: bool,
    idle_flush: Option<std::time::Duration>,
}

impl<R: AsyncBufRead + Unpin> BatchReader<R> {
    pub fn new(reader: R, name: String, idle_flush: Option<std::time::Duration>) -> Self {
        Self {
            reader,
            name,
            line: 0,
            buf: Vec::new(),
            eof: false,
            idle_flush,
        }
    }

    /// Reads one line into `self.buf` (without the newline); `false` at EOF.
    /// Cancel safe: a partial line stays in `buf`.
    async fn read_line(&mut self) -> Result<bool, InputError> {
        loop {
            let chunk = match self.reader.fill_buf().await {
                Ok(c) => c,
                Err(source) => {
                    return Err(InputError::Read {
                        name: self.name.clone(),
                        source,
                    });
                }
            };
            if chunk.is_empty() {
                return Ok(!self.buf.is_empty());
            }
            let (take, done) = match chunk.iter().position(|b| *b == b'\n') {
                Some(i) => (i + 1, true),
                None => (chunk.len(), false),
            };
            if self.buf.len() + take <= MAX_LINE + 1 {
                self.buf.extend_from_slice(&chunk[..take]);
            } else {
                // Keep counting toward the limit without storing the rest.
                self.buf.resize(MAX_LINE + 2, 0);
            }
            self.reader.consume(take);
            if done {
                return Ok(true);
            }
        }
    }

    /// The next batch, or `None` at the end of the input.
    pub async fn next_batch(&mut self) -> Result<Option<Batch>, InputError> {
        let mut batch = Batch {
            lines: Vec::new(),
            triggers: Vec::new(),
        };
        while !self.eof && batch.triggers.len() < BATCH {
            let got = match (self.idle_flush, batch.triggers.is_empty()) {
                (Some(idle), false) => match tokio::time::timeout(idle, self.read_line()).await {
                    Ok(r) => r?,
                    Err(_) => break,
                },
                _ => self.read_line().await?,
            };
            if !got {
                self.eof = true;
                break;
            }
            self.line += 1;
            let raw = std::mem::take(&mut self.buf);
            let line_err = |problem: String| InputError::Line {
                name: self.name.clone(),
                line: self.line,
                problem,
            };
            if raw.len() > MAX_LINE + 1 {
                return Err(line_err(format!("longer than {MAX_LINE} bytes")));
            }
            let text = std::str::from_utf8(&raw).map_err(|_| line_err("not UTF-8".into()))?;
            let text = text.trim();
            if text.is_empty() || text.starts_with('#') {
                continue;
            }
            if is_cursor_line(text) {
                eprintln!(
                    "triggerctl: {}:{}: skipping a next_cursor line (history without --all \
                     exports one page only)",
                    self.name, self.line
                );
                continue;
            }
            let wire = parse_line(text).map_err(line_err)?;
            batch.lines.push(self.line);
            batch.triggers.push(wire);
        }
        Ok((!batch.triggers.is_empty()).then_some(batch))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(kind: TriggerType) -> TriggerFlags {
        TriggerFlags {
            kind: Some(kind),
            interface: Some("wlan0".into()),
            ..Default::default()
        }
    }

    #[test]
    fn going_down_flags_make_the_wire_trigger() {
        let f = TriggerFlags {
            time_interval_ms: Some(500),
            reason: Some("link-parameter-degrading".into()),
            ..flags(TriggerType::LinkGoingDown)
        };
        let w = build(&f).unwrap();
        assert_eq!(w.id, 0);
        assert_eq!(w.observed_at, None, "the daemon stamps the time");
        assert_eq!(w.source, pb::Source::Client as i32);
        assert_eq!(w.r#type, pb::TriggerType::LinkGoingDown as i32);
        assert_eq!(w.interface.as_ref().unwrap().name, "wlan0");
        let r = w.reason.unwrap();
        assert_eq!(
            (r.space, r.code),
            (pb::ReasonSpace::LinkGoingDown as i32, 1)
        );
        assert_eq!(
            w.detail,
            Some(pb::trigger::Detail::GoingDown(pb::GoingDown {
                time_interval_ms: 500
            }))
        );
    }

    #[test]
    fn reason_is_looked_up_in_the_code_book_of_the_type() {
        let f = TriggerFlags {
            reason: Some("4".into()),
            ..flags(TriggerType::LinkDown)
        };
        let r = build(&f).unwrap().reason.unwrap();
        assert_eq!(
            (r.space, r.code, r.name.as_str()),
            (1, 4, "authentication-failure")
        );
        let f = TriggerFlags {
            reason: Some("low-power".into()),
            ..flags(TriggerType::LinkDown)
        };
        assert!(build(&f).unwrap_err().contains("--reason"));
        let f = TriggerFlags {
            reason: Some("0".into()),
            ..flags(TriggerType::LinkUp)
        };
        assert!(build(&f).unwrap_err().contains("not link-up"));
        let f = TriggerFlags {
            reason: Some("17".into()),
            ..flags(TriggerType::LinkDown)
        };
        assert!(build(&f).unwrap_err().contains("reason.code"));
    }

    #[test]
    fn type_specific_flags_are_required_and_rejected_elsewhere() {
        let e = build(&flags(TriggerType::LinkGoingDown)).unwrap_err();
        assert!(e.contains("--time-interval is required"), "{e}");
        let f = TriggerFlags {
            time_interval_ms: Some(5),
            ..flags(TriggerType::LinkUp)
        };
        assert!(build(&f).unwrap_err().contains("--time-interval fits only"));
        let e = build(&flags(TriggerType::LinkParametersReport)).unwrap_err();
        assert!(e.contains("--param is required"), "{e}");
        let e = build(&flags(TriggerType::LinkHandoverImminent)).unwrap_err();
        assert!(e.contains("--old-link"), "{e}");
        let f = TriggerFlags {
            old_link: Some("wlan0".into()),
            ..flags(TriggerType::LinkHandoverImminent)
        };
        assert!(build(&f).unwrap_err().contains("go together"));
        let e = build(&TriggerFlags {
            kind: Some(TriggerType::IfAddrAdded),
            interface: Some("eth0".into()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.starts_with("address: is required"), "{e}");
        let e = build(&TriggerFlags {
            kind: Some(TriggerType::LinkUp),
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.starts_with("interface: is required"), "{e}");
        let e = build(&TriggerFlags {
            source: Some(Source::Rtnetlink),
            ..flags(TriggerType::LinkUp)
        })
        .unwrap_err();
        assert!(e.starts_with("source:"), "{e}");
    }

    #[test]
    fn handover_and_parameters_and_address_flags() {
        let w = build(&TriggerFlags {
            old_link: Some("wlan0".into()),
            new_link: Some("wwan0".into()),
            source: Some(Source::Ieee802_21),
            ..flags(TriggerType::LinkHandoverImminent)
        })
        .unwrap();
        assert_eq!(w.source, pb::Source::Ieee80221 as i32);
        let Some(pb::trigger::Detail::Handover(h)) = w.detail else {
            panic!("{w:?}")
        };
        assert_eq!(h.new_link.unwrap().name, "wwan0");
        let w = build(&TriggerFlags {
            params: vec![parse_param("signal-strength=20%").unwrap()],
            ..flags(TriggerType::LinkParametersReport)
        })
        .unwrap();
        assert!(matches!(
            w.detail,
            Some(pb::trigger::Detail::ParametersReport(_))
        ));
        let w = build(&TriggerFlags {
            kind: Some(TriggerType::IfAddrAdded),
            interface: Some("eth0".into()),
            index: Some(2),
            iface_kind: Some(InterfaceKind::Ethernet),
            address: Some("2001:db8::5/64".into()),
            observed_at: Some(Timestamp(1_700_000_000_000_000_000)),
            origin: Some("test".into()),
            ..Default::default()
        })
        .unwrap();
        let a = w.address.unwrap();
        assert_eq!(
            (a.address.as_str(), a.prefix_len, a.family),
            ("2001:db8::5", 64, 2)
        );
        assert_eq!(w.interface.unwrap().index, 2);
        assert_eq!(w.observed_at.unwrap().seconds, 1_700_000_000);
        assert_eq!(w.origin, "test");
    }

    #[test]
    fn handover_complete_carries_the_move() {
        let moved = MoveFlags {
            old_local: Some("192.0.2.1".parse().unwrap()),
            old_remote: Some("198.51.100.7".parse().unwrap()),
            new_local: Some("192.0.2.9".parse().unwrap()),
            new_remote: Some("198.51.100.7".parse().unwrap()),
            duration_us: Some(2_500),
            move_reason: Some("link-down".into()),
            cause: Some(17),
        };
        let w = build(&TriggerFlags {
            old_link: Some("eth0".into()),
            new_link: Some("wlan0".into()),
            moved: moved.clone(),
            ..flags(TriggerType::LinkHandoverComplete)
        })
        .unwrap();
        let Some(pb::trigger::Detail::Handover(h)) = w.detail else {
            panic!("{w:?}")
        };
        assert_eq!(
            (
                h.old_local_address.as_str(),
                h.new_remote_address.as_str(),
                h.duration_us,
                h.move_reason.as_str(),
                h.cause_trigger_id
            ),
            ("192.0.2.1", "198.51.100.7", Some(2_500), "link-down", 17)
        );
        let e = build(&TriggerFlags {
            moved,
            ..flags(TriggerType::LinkUp)
        })
        .unwrap_err();
        assert!(e.contains("fits only link-handover"), "{e}");
        let e = build(&TriggerFlags {
            old_link: Some("eth0".into()),
            new_link: Some("wlan0".into()),
            moved: MoveFlags {
                old_local: Some("192.0.2.1".parse().unwrap()),
                old_remote: Some("2001:db8::7".parse().unwrap()),
                ..Default::default()
            },
            ..flags(TriggerType::LinkHandoverComplete)
        })
        .unwrap_err();
        assert!(e.starts_with("handover.old_remote_address:"), "{e}");
    }

    #[test]
    fn params_parse_units() {
        let p = parse_param("signal-strength=-70dBm").unwrap();
        assert_eq!((p.value, p.unit), (-70.0, Some(ParameterUnit::Dbm)));
        let p = parse_param("signal-strength=20%").unwrap();
        assert_eq!((p.value, p.unit), (20.0, Some(ParameterUnit::Percent)));
        let p = parse_param("sinr=12.5").unwrap();
        assert_eq!((p.value, p.unit), (12.5, Some(ParameterUnit::Db)));
        let p = parse_param("data_rate=5400kbps").unwrap();
        assert_eq!(p.kind, LinkParameterType::DataRate);
        for bad in [
            "signal-strength",
            "bogus=1",
            "sinr=NaN",
            "sinr=inf",
            "sinr=abc",
            "sinr=",
        ] {
            assert!(parse_param(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn addresses_default_to_host_prefix() {
        assert_eq!(parse_address("192.0.2.1").unwrap().prefix_len, 32);
        assert_eq!(parse_address("2001:db8::1").unwrap().prefix_len, 128);
        assert_eq!(parse_address("192.0.2.1/24").unwrap().prefix_len, 24);
        assert!(parse_address("192.0.2.1/33").is_err());
        assert!(parse_address("wlan0").is_err());
    }

    #[test]
    fn json_lines_round_trip_what_json_output_prints() {
        let f = TriggerFlags {
            time_interval_ms: Some(500),
            reason: Some("1".into()),
            observed_at: Some(Timestamp(1_700_000_000_000_000_000)),
            ..flags(TriggerType::LinkGoingDown)
        };
        let w = build(&f).unwrap();
        let mut stored = Trigger::from_client(&w, "", Timestamp(0)).unwrap();
        stored.id = 77;
        let line = serde_json::to_string(&stored).unwrap();
        assert!(line.contains(r#""id":77"#));
        let back = parse_line(&line).unwrap();
        assert_eq!(back, w, "id dropped, everything else kept");
    }

    #[test]
    fn json_lines_need_only_type_and_what_it_needs() {
        let w = parse_line(r#"{"type":"link-up","interface":{"name":"eth1"}}"#).unwrap();
        assert_eq!(w.source, pb::Source::Client as i32);
        assert_eq!(w.observed_at, None);
    }

    #[test]
    fn json_line_errors_name_the_field() {
        let cases = [
            (
                r#"{"type":"link-upp","interface":{"name":"x"}}"#,
                "type: unknown variant",
            ),
            (
                r#"{"type":"link-up","interface":{"nme":"x"}}"#,
                "interface: unknown field `nme`",
            ),
            (
                r#"{"type":"link-up","interface":{"name":"x"},"colour":1}"#,
                "unknown field `colour`",
            ),
            (r#"{"interface":{"name":"x"}}"#, "type: missing"),
            (r#"{"type":"link-up"}"#, "interface: is required"),
            (
                r#"{"type":"link-up","interface":{"name":"a b"}}"#,
                "interface.name: contains",
            ),
            (
                r#"{"type":"link-up","interface":{"name":"x"},"observed_at":"yesterday"}"#,
                "observed_at: not an RFC 3339",
            ),
            (
                r#"{"type":"link-up","interface":{"name":"x"},"source":"rtnetlink"}"#,
                "source: rtnetlink cannot",
            ),
            (
                r#"{"type":"if-addr-added","interface":{"name":"x"},"address":{"address":"1.2.3.4","prefix_len":40}}"#,
                "address.prefix_len",
            ),
            (r#"[1,2]"#, "expected a JSON object"),
            (r#"{"type":"#, "not JSON: EOF while parsing"),
        ];
        for (line, want) in cases {
            let e = parse_line(line).unwrap_err();
            assert!(
                e.starts_with(want) || e.contains(want),
                "{line}\n  got {e}\n  want {want}"
            );
        }
    }

    async fn batches(input: &str) -> Result<Vec<Batch>, InputError> {
        let mut r = BatchReader::new(input.as_bytes(), "t.jsonl".into(), None);
        let mut out = Vec::new();
        while let Some(b) = r.next_batch().await? {
            out.push(b);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn batches_hold_at_most_a_thousand_and_keep_line_numbers() {
        let line = r#"{"type":"link-up","interface":{"name":"eth1"}}"#;
        let mut input = String::from("# comment\n\n");
        for _ in 0..2500 {
            input.push_str(line);
            input.push('\n');
        }
        let b = batches(&input).await.unwrap();
        let sizes: Vec<usize> = b.iter().map(|b| b.triggers.len()).collect();
        assert_eq!(sizes, [1000, 1000, 500]);
        assert_eq!(b[0].lines[0], 3);
        assert_eq!(*b[2].lines.last().unwrap(), 2502);
    }

    #[tokio::test]
    async fn cursor_lines_of_history_output_are_skipped() {
        let input = "{\"type\":\"link-up\",\"interface\":{\"name\":\"eth1\"}}\n\
                     {\"next_cursor\":\"abc\"}\n";
        let b = batches(input).await.unwrap();
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].lines, [1]);
        assert!(batches("{\"next_cursor\":\"abc\",\"x\":1}").await.is_err());
    }

    #[tokio::test]
    async fn a_bad_line_is_named_by_number() {
        let input = "{\"type\":\"link-up\",\"interface\":{\"name\":\"eth1\"}}\n\
                     {\"type\":\"link-up\",\"interface\":{\"name\":\"eth1\"},\"address\":{\"address\":\"x\",\"prefix_len\":1}}";
        let e = batches(input).await.unwrap_err();
        assert!(e.to_string().starts_with("t.jsonl:2: address"), "{e}");
    }

    #[tokio::test]
    async fn overlong_and_non_utf8_lines_are_errors() {
        let long = "x".repeat(MAX_LINE + 10);
        let e = batches(&long).await.unwrap_err();
        assert!(e.to_string().contains("t.jsonl:1: longer than"), "{e}");
        let mut r = BatchReader::new(&b"\xff\xfe\n"[..], "b".into(), None);
        let e = r.next_batch().await.unwrap_err();
        assert_eq!(e.to_string(), "b:1: not UTF-8");
    }
}
