//! The subcommands' work: one function per verb that calls trigger-db and
//! prints the reply with [`Out`].
//!
//! gRPC failures become one-line errors `VERB refused|failed: CODE:
//! message`; replies that do not decode (a newer or broken daemon) are
//! reported on stderr and skipped, never a panic. Argument parsing is in
//! `main`, formatting in `output`.

use std::collections::BTreeMap;

use anyhow::{Context as _, anyhow};
use serde_json::json;
use tonic::{Code, Status};
use trigger_client::Client;
use trigger_db::model::{Address, Filter, Interface, LinkState, Timestamp, Trigger};
use trigger_proto::v1 as pb;

use crate::{
    add::BatchReader,
    cli::HostArgs,
    output::{Out, address_cell, iface_name, link_json, table, trigger_long},
};

/// The protocol name of a status code, e.g. `PERMISSION_DENIED`.
pub fn code_name(c: Code) -> &'static str {
    match c {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// One line for a failed call: `add refused: PERMISSION_DENIED: ...`.
pub fn status_error(verb: &str, s: &Status) -> anyhow::Error {
    let how = match s.code() {
        Code::InvalidArgument
        | Code::PermissionDenied
        | Code::Unauthenticated
        | Code::FailedPrecondition
        | Code::AlreadyExists
        | Code::OutOfRange
        | Code::ResourceExhausted => "refused",
        _ => "failed",
    };
    let msg: String = s
        .message()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    anyhow!("{verb} {how}: {}: {msg}", code_name(s.code()))
}

/// Decodes a trigger from the daemon; a bad one is reported and skipped.
pub fn decode(out: &Out, w: &pb::Trigger) -> Option<Trigger> {
    match Trigger::from_stored(w) {
        Ok(t) => Some(t),
        Err(e) => {
            out.note(&format!("skipping trigger {} the daemon sent: {e}", w.id));
            None
        }
    }
}

/// `history`'s options.
#[derive(Debug, Clone)]
pub struct HistoryOpts {
    pub filter: Filter,
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
    pub limit: u32,
    pub cursor: Option<String>,
    pub all: bool,
    pub reverse: bool,
    pub hosts: HostArgs,
}

pub async fn history(c: &mut Client, out: &Out, o: HistoryOpts) -> anyhow::Result<()> {
    let mut token = o.cursor.unwrap_or_default();
    let mut printed = 0usize;
    // Rows of several hosts show theirs.
    let several = o.hosts.several();
    loop {
        let req = pb::QueryRequest {
            since: o.since.map(Timestamp::to_wire),
            until: o.until.map(Timestamp::to_wire),
            filter: Some(o.filter.to_wire()),
            page_size: o.limit,
            page_token: token,
            order: if o.reverse {
                pb::Order::Descending
            } else {
                pb::Order::Ascending
            } as i32,
            hosts: o.hosts.hosts.clone(),
            all_hosts: o.hosts.all_hosts,
        };
        let page = c
            .query(req)
            .await
            .map_err(|s| status_error("history", &s))?
            .into_inner();
        if several && page.hosts.len() != page.triggers.len() {
            out.note(&format!(
                "the daemon sent {} hosts for {} triggers (an older trigger-db?): the HOST \
                 column is left empty",
                page.hosts.len(),
                page.triggers.len()
            ));
        }
        for (i, w) in page.triggers.iter().enumerate() {
            if let Some(t) = decode(out, w) {
                let host = several.then(|| page.hosts.get(i).map_or("", String::as_str));
                if printed == 0 {
                    out.trigger_header_with(host.is_some())?;
                }
                out.hosted_trigger(host, &t)?;
                printed += 1;
            }
        }
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
        if !o.all {
            if out.json {
                out.json_line(&json!({ "next_cursor": token }))?;
            }
            out.note(&format!(
                "more: repeat with --cursor {token} (same filters), or use --all"
            ));
            break;
        }
    }
    if printed == 0 && !out.json {
        out.note("no triggers match");
    }
    Ok(())
}

pub async fn get(c: &mut Client, out: &Out, id: u64) -> anyhow::Result<()> {
    let r = c
        .get(pb::GetRequest { id })
        .await
        .map_err(|s| status_error(&format!("get {id}"), &s))?
        .into_inner();
    let w = r
        .trigger
        .ok_or_else(|| anyhow!("get {id}: the daemon answered without a trigger"))?;
    let t = Trigger::from_stored(&w)
        .with_context(|| format!("get {id}: the daemon sent a trigger that does not decode"))?;
    if out.json {
        out.json_line(&t)?;
    } else {
        for l in trigger_long(&t) {
            out.line(&l)?;
        }
    }
    Ok(())
}

pub async fn delete(c: &mut Client, out: &Out, ids: Vec<u64>) -> anyhow::Result<()> {
    let asked = ids.len();
    let r = c
        .delete(pb::DeleteRequest { ids })
        .await
        .map_err(|s| status_error("delete", &s))?
        .into_inner();
    if out.json {
        out.json_line(&json!({ "deleted": r.deleted }))?;
    } else {
        out.line(&format!("deleted {} of {asked} triggers", r.deleted))?;
    }
    Ok(())
}

/// A flush without a filter needs `--yes`.
pub fn flush_check(no_filter: bool, before: Option<Timestamp>, yes: bool) -> anyhow::Result<()> {
    if no_filter && !yes {
        let what = match before {
            Some(t) => format!("every stored trigger observed before {t}"),
            None => "every stored trigger".to_owned(),
        };
        anyhow::bail!(
            "flush without --interface/--type/--source removes {what}; add --yes to confirm"
        );
    }
    Ok(())
}

pub async fn flush(
    c: &mut Client,
    out: &Out,
    filter: Filter,
    before: Option<Timestamp>,
) -> anyhow::Result<()> {
    let r = c
        .flush(pb::FlushRequest {
            filter: Some(filter.to_wire()),
            before: before.map(Timestamp::to_wire),
        })
        .await
        .map_err(|s| status_error("flush", &s))?
        .into_inner();
    if out.json {
        out.json_line(&json!({ "deleted": r.deleted }))?;
    } else {
        out.line(&format!("flushed {} triggers", r.deleted))?;
    }
    Ok(())
}

/// A link from the daemon, decoded.
struct LinkRow {
    interface: Interface,
    state: LinkState,
    addresses: Vec<Address>,
    last_change: Option<Timestamp>,
}

fn decode_link(l: &pb::Link, i: usize) -> Result<LinkRow, String> {
    let f = format!("links[{i}]");
    let interface = l
        .interface
        .as_ref()
        .ok_or_else(|| format!("{f}.interface: missing"))
        .and_then(|w| {
            Interface::from_wire(w, &format!("{f}.interface")).map_err(|e| e.to_string())
        })?;
    let state = match &l.state {
        None => LinkState::default(),
        Some(s) => LinkState::from_wire(s, &format!("{f}.state")).map_err(|e| e.to_string())?,
    };
    let addresses = l
        .addresses
        .iter()
        .enumerate()
        .map(|(j, a)| Address::from_wire(a, &format!("{f}.addresses[{j}]")))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let last_change = l
        .last_change
        .as_ref()
        .map(|t| Timestamp::from_wire(t, &format!("{f}.last_change")))
        .transpose()
        .map_err(|e| e.to_string())?;
    Ok(LinkRow {
        interface,
        state,
        addresses,
        last_change,
    })
}

pub async fn links(c: &mut Client, out: &Out) -> anyhow::Result<()> {
    let r = c
        .list_links(pb::ListLinksRequest {})
        .await
        .map_err(|s| status_error("links", &s))?
        .into_inner();
    let mut rows = Vec::new();
    for (i, l) in r.links.iter().enumerate() {
        match decode_link(l, i) {
            Ok(row) => rows.push(row),
            Err(e) => out.note(&format!("skipping a link the daemon sent: {e}")),
        }
    }
    if out.json {
        for l in &rows {
            out.json_line(&link_json(
                &l.interface,
                &l.state,
                &l.addresses,
                l.last_change,
            ))?;
        }
        return Ok(());
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|l| {
            vec![
                l.interface.index.to_string(),
                iface_name(&l.interface),
                l.interface
                    .kind
                    .map(|k| k.to_string())
                    .unwrap_or_else(|| "-".into()),
                if l.state.admin_up { "up" } else { "down" }.into(),
                if l.state.carrier { "yes" } else { "no" }.into(),
                l.state
                    .oper_state
                    .map(|o| o.to_string())
                    .unwrap_or_else(|| "-".into()),
                l.state.mtu.to_string(),
                l.addresses
                    .iter()
                    .map(address_cell)
                    .collect::<Vec<_>>()
                    .join(" "),
            ]
        })
        .collect();
    for line in table(
        &[
            "INDEX",
            "NAME",
            "KIND",
            "STATE",
            "CARRIER",
            "OPER",
            "MTU",
            "ADDRESSES",
        ],
        &cells,
    ) {
        out.line(&line)?;
    }
    Ok(())
}

pub async fn stats(c: &mut Client, out: &Out) -> anyhow::Result<()> {
    let s = c
        .stats(pb::StatsRequest::default())
        .await
        .map_err(|s| status_error("stats", &s))?
        .into_inner();
    let counts = |v: &[pb::Count]| -> BTreeMap<String, u64> {
        v.iter().map(|c| (c.name.clone(), c.count)).collect()
    };
    let by_source = counts(&s.by_source);
    let by_type = counts(&s.by_type);
    let bad_input = counts(&s.bad_input_by_source);
    let scalars: [(&str, u64); 16] = [
        ("stored_triggers", s.stored_triggers),
        ("first_id", s.first_id),
        ("last_id", s.last_id),
        ("database_bytes", s.database_bytes),
        ("subscribers", s.subscribers),
        ("gap_notices", s.gap_notices),
        ("resyncs", s.resyncs),
        ("ingested_total", s.ingested_total),
        ("retention_deleted", s.retention_deleted),
        ("rejected_requests", s.rejected_requests),
        ("netlink_parse_errors", s.netlink_parse_errors),
        ("debounced", s.debounced),
        ("suppressed_flaps", s.suppressed_flaps),
        ("write_errors", s.write_errors),
        ("unstored_triggers", s.unstored_triggers),
        ("uptime_s", s.uptime_s),
    ];
    let flaps: Vec<serde_json::Value> = s
        .flaps
        .iter()
        .map(|f| {
            json!({
                "interface": f.interface,
                "in_window": f.in_window,
                "total": f.total,
                "window_s": f.window_s,
            })
        })
        .collect();
    if out.json {
        let mut obj = serde_json::Map::new();
        for (k, v) in scalars {
            obj.insert(k.into(), v.into());
        }
        obj.insert("by_source".into(), json!(by_source));
        obj.insert("by_type".into(), json!(by_type));
        obj.insert("bad_input_by_source".into(), json!(bad_input));
        obj.insert("flaps".into(), json!(flaps));
        if let Some(sp) = &s.spool {
            obj.insert(
                "spool".into(),
                json!({
                    "path": sp.path,
                    "backlog_rows": sp.backlog_rows,
                    "backlog_bytes": sp.backlog_bytes,
                    "max_bytes": sp.max_bytes,
                    "server_reachable": sp.server_reachable,
                    "last_error": sp.last_error,
                    "shipped_total": sp.shipped_total,
                }),
            );
        }
        return Ok(out.json_line(&obj)?);
    }
    let mut rows: Vec<Vec<String>> = scalars
        .iter()
        .map(|(k, v)| vec![k.replace('_', " "), v.to_string()])
        .collect();
    for (label, m) in [
        ("by source", &by_source),
        ("by type", &by_type),
        ("bad input by source", &bad_input),
    ] {
        let v = m
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ");
        rows.push(vec![
            label.into(),
            if v.is_empty() { "-".into() } else { v },
        ]);
    }
    // Flaps: link-downs in the window / since the start, per interface.
    let window = s.flaps.first().map_or(0, |f| f.window_s);
    let v = s
        .flaps
        .iter()
        .map(|f| format!("{}={}/{}", f.interface, f.in_window, f.total))
        .collect::<Vec<_>>()
        .join(" ");
    rows.push(vec![
        format!("flaps ({window}s/total)"),
        if v.is_empty() { "-".into() } else { v },
    ]);
    // The PostgreSQL store's local spool.
    if let Some(sp) = &s.spool {
        rows.push(vec![
            "postgresql".into(),
            if sp.server_reachable {
                "reachable".into()
            } else {
                "unreachable (writes go to the spool)".into()
            },
        ]);
        rows.push(vec!["spool".into(), sp.path.clone()]);
        rows.push(vec![
            "spool backlog rows".into(),
            sp.backlog_rows.to_string(),
        ]);
        rows.push(vec![
            "spool backlog bytes".into(),
            format!("{} of {}", sp.backlog_bytes, sp.max_bytes),
        ]);
        rows.push(vec!["spool shipped".into(), sp.shipped_total.to_string()]);
        rows.push(vec![
            "spool last error".into(),
            if sp.last_error.is_empty() {
                "-".into()
            } else {
                sp.last_error.clone()
            },
        ]);
    }
    for line in table(&["COUNTER", "VALUE"], &rows) {
        out.line(&line)?;
    }
    Ok(())
}

/// `flaps`' options.
#[derive(Debug, Clone)]
pub struct FlapsOpts {
    pub since: Timestamp,
    pub until: Option<Timestamp>,
    pub bucket_s: u32,
    pub interfaces: Vec<String>,
    pub hosts: HostArgs,
    pub by_host: bool,
}

/// `flaps`: stored link-downs per interface (and host) in buckets.
pub async fn flaps(c: &mut Client, out: &Out, o: FlapsOpts) -> anyhow::Result<()> {
    let r = c
        .flaps(pb::FlapsRequest {
            since: Some(o.since.to_wire()),
            until: o.until.map(Timestamp::to_wire),
            bucket_s: o.bucket_s,
            interfaces: o.interfaces,
            hosts: o.hosts.hosts,
            all_hosts: o.hosts.all_hosts,
            by_host: o.by_host,
        })
        .await
        .map_err(|s| status_error("flaps", &s))?
        .into_inner();
    let mut rows = Vec::new();
    for (i, b) in r.buckets.iter().enumerate() {
        let start = b
            .start
            .as_ref()
            .ok_or_else(|| format!("buckets[{i}].start: missing"))
            .and_then(|t| {
                Timestamp::from_wire(t, &format!("buckets[{i}].start")).map_err(|e| e.to_string())
            });
        match start {
            Ok(start) => rows.push((b.host.clone(), b.interface.clone(), start, b.link_downs)),
            Err(e) => out.note(&format!("skipping a bucket the daemon sent: {e}")),
        }
    }
    if out.json {
        for (host, interface, start, n) in &rows {
            if o.by_host {
                out.json_line(&json!({
                    "host": host, "interface": interface, "start": start, "link_downs": n
                }))?;
            } else {
                out.json_line(&json!({ "interface": interface, "start": start, "link_downs": n }))?;
            }
        }
        return Ok(());
    }
    if rows.is_empty() {
        out.note("no link-downs in that range");
        return Ok(());
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|(host, interface, start, n)| {
            let mut row = vec![interface.clone(), start.to_string(), n.to_string()];
            if o.by_host {
                row.insert(0, host.clone());
            }
            row
        })
        .collect();
    let header: &[&str] = if o.by_host {
        &["HOST", "INTERFACE", "BUCKET START (UTC)", "LINK-DOWNS"]
    } else {
        &["INTERFACE", "BUCKET START (UTC)", "LINK-DOWNS"]
    };
    for line in table(header, &cells) {
        out.line(&line)?;
    }
    Ok(())
}

/// Sends one batch; checks the acknowledgement.
async fn add_batch(c: &mut Client, triggers: Vec<pb::Trigger>) -> anyhow::Result<Vec<u64>> {
    let n = triggers.len();
    let ids = c
        .add(pb::AddRequest { triggers })
        .await
        .map_err(|s| status_error("add", &s))?
        .into_inner()
        .ids;
    if ids.len() != n {
        anyhow::bail!(
            "add: the daemon acknowledged {} ids for {n} triggers",
            ids.len()
        );
    }
    Ok(ids)
}

pub async fn add_one(c: &mut Client, out: &Out, wire: pb::Trigger) -> anyhow::Result<()> {
    let ids = add_batch(c, vec![wire]).await?;
    for id in ids {
        if out.json {
            out.json_line(&json!({ "id": id }))?;
        } else {
            out.line(&format!("added trigger {id}"))?;
        }
    }
    Ok(())
}

pub async fn add_from<R>(c: &mut Client, out: &Out, mut input: BatchReader<R>) -> anyhow::Result<()>
where
    R: tokio::io::AsyncBufRead + Unpin,
{
    let mut total = 0usize;
    loop {
        let batch = match input.next_batch().await {
            Ok(Some(b)) => b,
            Ok(None) => break,
            Err(e) => {
                if total > 0 {
                    out.note(&format!(
                        "{total} triggers of earlier batches were added; nothing after them"
                    ));
                }
                return Err(anyhow!("add: {e:#}"));
            }
        };
        let (first, last) = (
            batch.lines.first().copied().unwrap_or(0),
            batch.lines.last().copied().unwrap_or(0),
        );
        let ids = match add_batch(c, batch.triggers).await {
            Ok(ids) => ids,
            Err(e) => {
                if total > 0 {
                    out.note(&format!(
                        "{total} triggers of earlier batches were added; lines {first}-{last} were not"
                    ));
                }
                return Err(e);
            }
        };
        total += ids.len();
        if out.json {
            for (line, id) in batch.lines.iter().zip(&ids) {
                out.json_line(&json!({ "line": line, "id": id }))?;
            }
        } else {
            let (a, b) = (
                ids.first().copied().unwrap_or(0),
                ids.last().copied().unwrap_or(0),
            );
            out.line(&format!(
                "added {} triggers from lines {first}-{last}: ids {a}..{b}",
                ids.len()
            ))?;
        }
    }
    if total == 0 && !out.json {
        out.note("the input held no triggers");
    }
    Ok(())
}
