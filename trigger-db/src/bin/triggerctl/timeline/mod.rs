//! `triggerctl timeline`: a link-history picture an admin opens in a
//! browser. It pages through the stored triggers of a window with Query
//! (like `history --all`), asks for each interface's last link-up or
//! link-down before the window, and writes an SVG file (or an HTML page
//! around it) drawn by the pure [`render`] module from [`lanes`].
//!
//! Suppressed flaps are not in the store (trigger-db's debounce only counts
//! them, in Stats, since the daemon started), so they cannot be placed on
//! the time axis: the picture states the count under the legend instead.
//! A Link_Going_Down observed up to [`GOING_DOWN_LOOKBACK_NS`] (10 minutes) before the
//! window is drawn where its interval reaches into it; an older one is not.

pub mod axis;
pub mod lanes;
pub mod render;
pub mod xml;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, anyhow};
use clap::{Args, ValueEnum};
use trigger_client::Client;
use trigger_db::model::{Filter, Timestamp, Trigger, TriggerType};
use trigger_proto::v1 as pb;

use crate::{
    output::Out,
    time,
    verbs::{decode, status_error},
};

/// Most triggers one timeline reads; more is an error asking for a
/// narrower window (memory stays bounded).
pub const MAX_TRIGGERS: usize = 200_000;
const PAGE: u32 = 1000;
/// How far before the window to look for Link_Going_Downs reaching into
/// it: 10 minutes.
pub const GOING_DOWN_LOOKBACK_NS: i64 = 600 * 1_000_000_000;

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Svg,
    Html,
}

pub const TIMELINE_HELP: &str = "\
Examples:
  triggerctl timeline -o links.svg                       # the last hour
  triggerctl timeline --since 2026-11-27T09:00 --until 2026-11-27T10:00 \\
      -i wlan0,wwan0 -o morning.html
  triggerctl timeline --since 10m -o - --format svg > now.svg

One lane per interface (the --interface order, else by name): up (green) and \
down (red) periods from link-up/link-down, grey until the first one when the \
store has none before the window; link-going-down as a hatched span over its \
predicted interval; address changes and threshold crossings as markers; \
completed handovers (link-handover-complete, written by mobike-agent) as \
arrows from the old link to the new one, labelled with how long the move \
took. Periods too short to draw become a striped 'flapping' span. Hover for \
details. Times are UTC. The format comes from --format, else from the file \
name (.svg, .html, .htm).";

/// `timeline`'s flags.
#[derive(Debug, Args)]
pub struct TimelineArgs {
    /// From this time.
    #[arg(long, value_name = "TIME", value_parser = time::parse_time, default_value = "1h")]
    pub since: Timestamp,
    /// Up to this time [default: now].
    #[arg(long, value_name = "TIME", value_parser = time::parse_time)]
    pub until: Option<Timestamp>,
    /// Only these interfaces, in this order (repeat or comma-separate).
    #[arg(
        long = "interface",
        short = 'i',
        value_name = "NAME",
        value_delimiter = ','
    )]
    pub interfaces: Vec<String>,
    /// The file to write, or `-` for stdout.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: PathBuf,
    /// svg or html [default: from the file name's extension; svg for `-`].
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<Format>,
    /// Width of the picture in pixels.
    #[arg(long, value_name = "PX", default_value_t = 1200,
          value_parser = clap::value_parser!(u32).range(i64::from(render::MIN_WIDTH)..=20_000))]
    pub width: u32,
    /// Title [default: "Link timeline"].
    #[arg(long, value_name = "TEXT")]
    pub title: Option<String>,
}

/// The format: the flag, else the extension, else an error.
pub fn format_for(path: &Path, flag: Option<Format>) -> anyhow::Result<Format> {
    if let Some(f) = flag {
        return Ok(f);
    }
    if path.as_os_str() == "-" {
        return Ok(Format::Svg);
    }
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("svg") => Ok(Format::Svg),
        Some("html" | "htm") => Ok(Format::Html),
        _ => Err(anyhow!(
            "timeline: cannot tell the format from {:?}; name it .svg or .html, or give --format svg|html",
            path.display().to_string()
        )),
    }
}

/// Pages through Query until the end; errors past [`MAX_TRIGGERS`].
async fn query_all(
    c: &mut Client,
    out: &Out,
    since: Timestamp,
    until: Timestamp,
    filter: Filter,
    into: &mut Vec<Trigger>,
) -> anyhow::Result<()> {
    let mut token = String::new();
    loop {
        let page = c
            .query(pb::QueryRequest {
                since: Some(since.to_wire()),
                until: Some(until.to_wire()),
                filter: Some(filter.to_wire()),
                page_size: PAGE,
                page_token: token,
                order: pb::Order::Ascending as i32,
                // This daemon's own host.
                ..Default::default()
            })
            .await
            .map_err(|s| status_error("timeline", &s))?
            .into_inner();
        into.extend(page.triggers.iter().filter_map(|w| decode(out, w)));
        if into.len() > MAX_TRIGGERS {
            anyhow::bail!(
                "timeline: more than {MAX_TRIGGERS} triggers in the window; narrow --since/--until or --interface"
            );
        }
        token = page.next_page_token;
        if token.is_empty() {
            return Ok(());
        }
    }
}

/// The last link-up or link-down of `name` before `since`.
async fn state_before(
    c: &mut Client,
    out: &Out,
    name: &str,
    since: Timestamp,
) -> anyhow::Result<Option<Trigger>> {
    let page = c
        .query(pb::QueryRequest {
            since: None,
            until: Some(since.to_wire()),
            filter: Some(
                Filter {
                    interfaces: vec![name.to_owned()],
                    types: vec![TriggerType::LinkUp, TriggerType::LinkDown],
                    sources: vec![],
                }
                .to_wire(),
            ),
            page_size: 1,
            page_token: String::new(),
            order: pb::Order::Descending as i32,
            // This daemon's own host.
            ..Default::default()
        })
        .await
        .map_err(|s| status_error("timeline", &s))?
        .into_inner();
    Ok(page.triggers.first().and_then(|w| decode(out, w)))
}

/// Reads the history of the window from the daemon.
pub async fn fetch(
    c: &mut Client,
    out: &Out,
    since: Timestamp,
    until: Timestamp,
    interfaces: &[String],
) -> anyhow::Result<lanes::History> {
    let mut triggers = Vec::new();
    let lane_types = vec![
        TriggerType::LinkUp,
        TriggerType::LinkDown,
        TriggerType::LinkGoingDown,
        TriggerType::LinkParametersReport,
        TriggerType::IfAddrAdded,
        TriggerType::IfAddrRemoved,
        TriggerType::IfAddrChanged,
    ];
    let mut types = lane_types.clone();
    if interfaces.is_empty() {
        types.push(TriggerType::LinkHandoverComplete);
    }
    let filter = Filter {
        interfaces: interfaces.to_vec(),
        types,
        sources: vec![],
    };
    query_all(c, out, since, until, filter, &mut triggers).await?;
    // Predictions made shortly before the window may reach into it.
    let filter = Filter {
        interfaces: interfaces.to_vec(),
        types: vec![TriggerType::LinkGoingDown],
        sources: vec![],
    };
    let lookback = Timestamp(since.nanos().saturating_sub(GOING_DOWN_LOOKBACK_NS));
    query_all(c, out, lookback, since, filter, &mut triggers).await?;
    if !interfaces.is_empty() {
        // A handover is stored on its new link: ask for all of them, so
        // that one leaving a shown link is drawn too.
        let filter = Filter {
            interfaces: vec![],
            types: vec![TriggerType::LinkHandoverComplete],
            sources: vec![],
        };
        query_all(c, out, since, until, filter, &mut triggers).await?;
    }
    // Whose state before the window to ask for: the named interfaces, else
    // those with triggers in the window and the current links.
    let names: BTreeSet<String> = if interfaces.is_empty() {
        let mut set: BTreeSet<String> = triggers
            .iter()
            .filter_map(|t| t.interface_name())
            .filter(|n| !n.is_empty())
            .map(str::to_owned)
            .collect();
        match c.list_links(pb::ListLinksRequest {}).await {
            Ok(r) => set.extend(
                r.into_inner()
                    .links
                    .into_iter()
                    .filter_map(|l| l.interface.map(|i| i.name))
                    .filter(|n| !n.is_empty()),
            ),
            Err(s) => out.note(&format!("{:#}", status_error("links", &s))),
        }
        set
    } else {
        interfaces.iter().cloned().collect()
    };
    let mut before = BTreeMap::new();
    for n in names {
        if let Some(t) = state_before(c, out, &n, since).await? {
            before.insert(n, t);
        }
    }
    Ok(lanes::History {
        since,
        until,
        triggers,
        before,
        interfaces: interfaces.to_vec(),
    })
}

/// The notes under the legend: what the picture cannot show.
async fn notes(c: &mut Client) -> Vec<String> {
    let mut n = vec!["Times are UTC. Hover over a shape for its trigger's details.".to_owned()];
    if let Ok(s) = c.stats(pb::StatsRequest { skip_store: true }).await {
        let s = s.into_inner();
        n.push(format!(
            "Suppressed flaps are not stored, so not drawn: trigger-db's debounce has dropped {} link-up/link-down trigger{} of flaps since it started ({} ago).",
            s.suppressed_flaps,
            if s.suppressed_flaps == 1 { "" } else { "s" },
            axis::duration_text(i64::try_from(s.uptime_s).unwrap_or(0).saturating_mul(1_000_000_000)),
        ));
    }
    n
}

/// What can be checked before connecting: the format and the window.
pub fn check(a: &TimelineArgs) -> anyhow::Result<(Format, Timestamp)> {
    let format = format_for(&a.output, a.format)?;
    let until = a.until.unwrap_or_else(Timestamp::now);
    if until <= a.since {
        anyhow::bail!(
            "timeline: --since ({}) must be before --until ({until})",
            a.since
        );
    }
    Ok((format, until))
}

pub async fn timeline(c: &mut Client, out: &Out, a: TimelineArgs) -> anyhow::Result<()> {
    let (format, until) = check(&a)?;
    let history = fetch(c, out, a.since, until, &a.interfaces).await?;
    let options = render::Options {
        width: a.width,
        title: a.title.unwrap_or_else(|| "Link timeline".to_owned()),
        notes: notes(c).await,
    };
    let doc = match format {
        Format::Svg => render::render_svg(&history, &options),
        Format::Html => render::render_html(&history, &options),
    }
    .map_err(|e| anyhow!("timeline: {e}"))?;
    if a.output.as_os_str() == "-" {
        use std::io::Write as _;
        let mut o = std::io::stdout().lock();
        o.write_all(doc.as_bytes())?;
        o.flush()?;
    } else {
        tokio::fs::write(&a.output, doc)
            .await
            .with_context(|| format!("timeline: cannot write {}", a.output.display()))?;
        out.note(&format!(
            "wrote {} ({} triggers)",
            a.output.display(),
            history.triggers.len()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
