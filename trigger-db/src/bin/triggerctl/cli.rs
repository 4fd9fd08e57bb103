//! `triggerctl`'s command line: the verbs, their flags and help texts
//! (clap), and the checks clap makes before anything connects. Turning the
//! parsed command into requests is the verbs' business.

use std::{net::IpAddr, path::PathBuf};

use clap::{Args, Parser, Subcommand};
use trigger_db::model::{
    Filter, InterfaceKind, LinkParameter, LinkParameterType, LinkType, Source, Timestamp,
    TriggerType,
};

use crate::{add, add::TriggerFlags, threshold, time, timeline};

const EXIT_HELP: &str = "\
Exit status: 0 success; 1 the daemon is unreachable, refused the request, or \
the input is bad (one line on stderr: `triggerctl: ...`); 2 bad command line.

Times (--since, --until, --before, --observed-at) are UTC: an RFC 3339 time \
(2026-11-27T13:05:00Z, 2026-11-27 13:05), a date, `now`, `@UNIX_SECONDS`, or \
a duration meaning that long ago (10m, 2h, 3days).";

/// Admin CLI of trigger-db, the link-trigger database (PF_TRIGGER over gRPC).
#[derive(Debug, Parser)]
#[command(name = "triggerctl", version, after_help = EXIT_HELP)]
pub(crate) struct Cli {
    /// The daemon's Unix socket [default: $TRIGGER_DB_SOCKET if set, else
    /// /run/trigger-db/trigger.sock as root, else
    /// $XDG_RUNTIME_DIR/trigger-db/trigger.sock].
    #[arg(long, global = true, value_name = "PATH")]
    pub(crate) socket: Option<PathBuf>,
    /// One JSON object per line instead of a table (for scripts).
    #[arg(long, global = true)]
    pub(crate) json: bool,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The whole command line, for man pages and completions (tools/gen-assets
/// includes this file).
#[allow(dead_code, reason = "used by tools/gen-assets only")]
pub(crate) fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

/// Which triggers: lists AND together, entries of one list OR. Each flag
/// repeats or takes a comma-separated list.
#[derive(Debug, Args, Clone, Default)]
pub(crate) struct FilterArgs {
    /// Only triggers of this interface.
    #[arg(
        long = "interface",
        short = 'i',
        value_name = "NAME",
        value_delimiter = ','
    )]
    interfaces: Vec<String>,
    /// Only triggers of this type (e.g. link-down, if-addr-added).
    #[arg(long = "type", short = 't', value_name = "TYPE", value_delimiter = ',')]
    types: Vec<TriggerType>,
    /// Only triggers from this source (rtnetlink, networkmanager, client,
    /// ieee802-21, threshold, trigger-db).
    #[arg(
        long = "source",
        short = 's',
        value_name = "SOURCE",
        value_delimiter = ','
    )]
    sources: Vec<Source>,
}

impl FilterArgs {
    pub(crate) fn is_empty(&self) -> bool {
        self.interfaces.is_empty() && self.types.is_empty() && self.sources.is_empty()
    }

    pub(crate) fn filter(self) -> Filter {
        Filter {
            interfaces: self.interfaces,
            types: self.types,
            sources: self.sources,
        }
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Follow triggers as they happen (Ctrl-C ends).
    #[command(after_help = WATCH_HELP)]
    Watch {
        #[command(flatten)]
        filter: FilterArgs,
        /// First print the stored triggers from this time, then follow live
        /// ones with no gap.
        #[arg(long, value_name = "TIME", value_parser = time::parse_time, conflicts_with = "resume_after")]
        since: Option<Timestamp>,
        /// First replay the stored triggers after this id (from a previous
        /// watch), then follow live ones.
        #[arg(long, value_name = "ID")]
        resume_after: Option<u64>,
        /// First show the current links and addresses (id `-`), then a
        /// snapshot-complete note.
        #[arg(long)]
        snapshot: bool,
        /// Exit when the daemon goes away (naming the id to resume after)
        /// instead of reconnecting and resuming.
        #[arg(long)]
        no_reconnect: bool,
    },
    /// Show stored triggers, a page at a time.
    #[command(after_help = HISTORY_HELP)]
    History {
        #[command(flatten)]
        filter: FilterArgs,
        /// Observed at or after this time.
        #[arg(long, value_name = "TIME", value_parser = time::parse_time)]
        since: Option<Timestamp>,
        /// Observed before this time.
        #[arg(long, value_name = "TIME", value_parser = time::parse_time)]
        until: Option<Timestamp>,
        /// Triggers per page, 1..=1000 [default: 50, or 1000 with --all].
        #[arg(long, short = 'n', value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: Option<u32>,
        /// Continue from a previous page's cursor (give the same filters).
        #[arg(long, value_name = "TOKEN")]
        cursor: Option<String>,
        /// Follow the cursor to the end instead of printing one page.
        #[arg(long)]
        all: bool,
        /// Newest first.
        #[arg(long)]
        reverse: bool,
        #[command(flatten)]
        hosts: HostArgs,
    },
    /// Add triggers: one from flags, or many from JSON lines.
    #[command(after_help = ADD_HELP)]
    Add(Box<AddArgs>),
    /// Show one stored trigger.
    #[command(after_help = "Example:\n  triggerctl get 42\n  triggerctl --json get 42")]
    Get {
        /// Trigger id.
        id: u64,
    },
    /// Delete stored triggers by id.
    #[command(
        after_help = "Example:\n  triggerctl delete 42 43 44\n\n--json prints {\"deleted\":N}."
    )]
    Delete {
        /// Trigger ids.
        #[arg(required = true, value_name = "ID")]
        ids: Vec<u64>,
    },
    /// Delete every stored trigger that matches.
    #[command(after_help = FLUSH_HELP)]
    Flush {
        #[command(flatten)]
        filter: FilterArgs,
        /// Only triggers observed before this time.
        #[arg(long, value_name = "TIME", value_parser = time::parse_time)]
        before: Option<Timestamp>,
        /// Confirm a flush without --interface/--type/--source.
        #[arg(long)]
        yes: bool,
    },
    /// Show the current interfaces, their state and addresses.
    #[command(after_help = LINKS_HELP)]
    Links,
    /// Show the daemon's counters.
    #[command(after_help = STATS_HELP)]
    Stats,
    /// IEEE 802.21 Link_Configure_Thresholds: set, list or clear thresholds
    /// on link parameters.
    #[command(subcommand)]
    Threshold(ThresholdCommand),
    /// Show stored link-downs per interface over time, in buckets.
    #[command(after_help = FLAPS_HELP)]
    Flaps {
        /// From this time.
        #[arg(long, value_name = "TIME", value_parser = time::parse_time, default_value = "1h")]
        since: Timestamp,
        /// Up to this time [default: now].
        #[arg(long, value_name = "TIME", value_parser = time::parse_time)]
        until: Option<Timestamp>,
        /// Bucket length, whole seconds (30s, 5m, 1h).
        #[arg(long, value_name = "DURATION", value_parser = parse_bucket, default_value = "5m")]
        bucket: u32,
        /// Only this interface (repeat or comma-separate).
        #[arg(
            long = "interface",
            short = 'i',
            value_name = "NAME",
            value_delimiter = ','
        )]
        interfaces: Vec<String>,
        #[command(flatten)]
        hosts: HostArgs,
        /// One row per host, interface and bucket (a HOST column), instead
        /// of the hosts added up.
        #[arg(long)]
        by_host: bool,
    },
    /// Draw the link history of a window as an SVG or HTML timeline.
    #[command(after_help = timeline::TIMELINE_HELP)]
    Timeline(timeline::TimelineArgs),
}

/// Whose triggers: `--host` (repeatable) or `--all-hosts`; neither is this
/// daemon's own host.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct HostArgs {
    /// Only this host's triggers (its [store] host_id; repeat or
    /// comma-separate) [default: the daemon's own host]. A PostgreSQL
    /// database holds many hosts; a SQLite one only its own.
    #[arg(long = "host", value_name = "HOST_ID", value_delimiter = ',')]
    pub hosts: Vec<String>,
    /// Every host in the daemon's database.
    #[arg(long, conflicts_with = "hosts")]
    pub all_hosts: bool,
}

impl HostArgs {
    /// Whether rows of more than one host can come back (then the output
    /// shows the host).
    pub fn several(&self) -> bool {
        if self.all_hosts {
            return true;
        }
        let mut h: Vec<&String> = self.hosts.iter().collect();
        h.sort_unstable();
        h.dedup();
        h.len() > 1
    }
}

const FLAPS_HELP: &str = "\
Examples:
  triggerctl flaps                              # last hour, 5-minute buckets
  triggerctl flaps --since 1h --bucket 5m -i wlan0
  triggerctl flaps --since 2026-11-27 --until 2026-11-28 --bucket 1h
  triggerctl flaps --all-hosts --by-host --since 1d --bucket 1h

A flap is a stored link-down (any source). Only buckets with link-downs are \
shown; buckets start at --since. `stats` shows the counts of the last window \
and since the daemon started. --host and --all-hosts choose the hosts \
(a PostgreSQL database of many); their link-downs add up per interface, or \
with --by-host count per host. --json prints one \
{\"interface\",\"start\",\"link_downs\"} per bucket, with \"host\" too with \
--by-host.";

/// `--bucket`: a humantime duration of whole seconds, 1s..=49days.
fn parse_bucket(s: &str) -> Result<u32, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e}"))?;
    if d.subsec_nanos() != 0 || d.as_secs() == 0 {
        return Err(format!("{s:?} is not a whole number of seconds >= 1"));
    }
    u32::try_from(d.as_secs()).map_err(|_| format!("{s:?} is too long"))
}

#[derive(Debug, Subcommand)]
pub(crate) enum ThresholdCommand {
    /// Set a threshold: trigger-db then derives link-parameters-report (and,
    /// for a falling signal, link-going-down) when reports cross it.
    #[command(after_help = THRESHOLD_SET_HELP)]
    Set(ThresholdSetArgs),
    /// Show the configured thresholds.
    #[command(after_help = THRESHOLD_LIST_HELP)]
    List,
    /// Remove the thresholds of a scope and parameter (CANCEL).
    #[command(after_help = THRESHOLD_CLEAR_HELP)]
    Clear(ThresholdClearArgs),
}

/// What a threshold applies to: one of the two.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub(crate) struct ScopeArgs {
    /// One interface.
    #[arg(long, short = 'i', value_name = "NAME")]
    interface: Option<String>,
    /// Every link of this IEEE 802.21 link type (ieee802-11, lte, umts,
    /// ethernet, ...).
    #[arg(long, value_name = "LINK_TYPE")]
    link_type: Option<LinkType>,
}

impl ScopeArgs {
    pub(crate) fn scope(&self) -> threshold::ScopeFlag {
        match (&self.interface, self.link_type) {
            (Some(i), _) => threshold::ScopeFlag::Interface(i.clone()),
            // clap's group makes exactly one of the two present.
            (None, Some(t)) => threshold::ScopeFlag::LinkType(t),
            (None, None) => threshold::ScopeFlag::Interface(String::new()),
        }
    }
}

#[derive(Debug, Args)]
pub(crate) struct ThresholdSetArgs {
    #[command(flatten)]
    scope: ScopeArgs,
    /// The link parameter: data-rate, signal-strength, sinr, throughput,
    /// packet-error-rate.
    #[arg(long, value_name = "PARAM")]
    param: LinkParameterType,
    /// Fire when the value falls below this.
    #[arg(long, value_name = "VALUE", allow_negative_numbers = true,
          value_parser = threshold::parse_finite,
          required_unless_present = "above", conflicts_with = "above")]
    below: Option<f64>,
    /// Fire when the value rises above this.
    #[arg(long, value_name = "VALUE", allow_negative_numbers = true,
          value_parser = threshold::parse_finite)]
    above: Option<f64>,
    /// How far back past the threshold the value must go before it fires
    /// again.
    #[arg(long, value_name = "H", default_value = "0", allow_negative_numbers = true,
          value_parser = threshold::parse_hysteresis)]
    hysteresis: f64,
    /// Fire once, then stay configured but spent.
    #[arg(long)]
    one_shot: bool,
}

impl ThresholdSetArgs {
    pub(crate) fn flags(&self) -> threshold::SetFlags {
        let (direction, value) = match (self.below, self.above) {
            (Some(v), _) => (trigger_db::threshold::Direction::Below, v),
            (None, v) => (trigger_db::threshold::Direction::Above, v.unwrap_or(0.0)),
        };
        threshold::SetFlags {
            scope: self.scope.scope(),
            parameter: self.param,
            direction,
            value,
            hysteresis: self.hysteresis,
            one_shot: self.one_shot,
        }
    }
}

#[derive(Debug, Args)]
pub(crate) struct ThresholdClearArgs {
    #[command(flatten)]
    pub(crate) scope: ScopeArgs,
    /// The link parameter.
    #[arg(long, value_name = "PARAM")]
    pub(crate) param: LinkParameterType,
    /// Only the threshold at this value [default: all of the scope and
    /// parameter].
    #[arg(long, value_name = "VALUE", allow_negative_numbers = true,
          value_parser = threshold::parse_finite)]
    pub(crate) value: Option<f64>,
}

const THRESHOLD_SET_HELP: &str = "\
Examples:
  triggerctl threshold set --interface wlan0 --param signal-strength --below 40 --hysteresis 5
  triggerctl threshold set --link-type ieee802-11 --param signal-strength --below -78 --one-shot
  triggerctl threshold set -i wwan0 --param packet-error-rate --above 10

Prints the thresholds now configured for that scope and parameter, as \
`threshold list` does.";

const THRESHOLD_LIST_HELP: &str = "\
Columns: ID, SCOPE (an interface, or link-type=TYPE), PARAMETER, DIRECTION, \
VALUE, HYSTERESIS, ACTION (normal or one-shot), SPENT (a one-shot that fired).

--json prints one object per threshold: {\"id\",\"interface\" or \
\"link_type\",\"parameter\",\"direction\",\"value\",\"hysteresis\",\"action\",\
\"spent\"}.";

const THRESHOLD_CLEAR_HELP: &str = "\
Examples:
  triggerctl threshold clear --interface wlan0 --param signal-strength
  triggerctl threshold clear --interface wlan0 --param signal-strength --value 40

Prints how many were removed; --json prints {\"cancelled\":N}.";

const WATCH_HELP: &str = "\
Examples:
  triggerctl watch
  triggerctl watch -i wlan0 -t link-going-down,link-down
  triggerctl watch --since 10m          # last 10 minutes, then live
  triggerctl watch --snapshot           # current links first, then live
  triggerctl --json watch | jq -c 'select(.type == \"link-down\")'

If the watcher falls behind, the daemon says so; triggerctl notes it on stderr \
and resubscribes from the last id it printed, so no trigger is lost or repeated.

--json: one trigger per line (the form `add --from` reads); after --snapshot \
items, one {\"snapshot_complete\":{\"last_id\":N}} line. Notes go to stderr.";

const HISTORY_HELP: &str = "\
Examples:
  triggerctl history                         # oldest 50
  triggerctl history --reverse -n 20         # newest 20
  triggerctl history -i wlan0 --since 2h --all
  triggerctl history --since 2026-11-27 --until 2026-11-28 --cursor TOKEN
  triggerctl history --host gw-paris-1 --host gw-lyon-2 -i wwan0 --since 1d
  triggerctl history --all-hosts --reverse -n 100

Without --all one page is printed; if there are more, the cursor for the next \
page is noted on stderr, and in --json mode also printed as a last line \
{\"next_cursor\":\"TOKEN\"} (every other line is a trigger; `add --from` \
skips it). Pass it with --cursor and the same filters. --json --all prints \
only triggers: use it to export.

--host (repeatable) and --all-hosts read other hosts' triggers from a \
PostgreSQL database of many hosts (a SQLite daemon refuses other hosts). \
Triggers of several hosts come ordered by time, then host, then id, with a \
HOST column (--json: a \"host\" key, which `add --from` ignores).";

const ADD_HELP: &str = "\
Examples:
  triggerctl add --type link-going-down --interface wlan0 --time-interval 500ms \\
      --reason link-parameter-degrading
  triggerctl add --type link-down -i wwan0 --reason packet-timeout
  triggerctl add --type link-parameters-report -i wlan0 \\
      --param signal-strength=-78dbm --param sinr=3db
  triggerctl add --type link-handover-imminent -i wlan0 --old-link wlan0 --new-link wwan0
  triggerctl add --type link-handover-complete -i wwan0 --old-link wlan0 --new-link wwan0 \\
      --old-local 192.0.2.1 --new-local 198.51.100.4 --old-remote 203.0.113.9 \\
      --new-remote 203.0.113.9 --duration 1200us --move-reason link-down --cause 41
  triggerctl add --type if-addr-added -i eth0 --address 192.0.2.10/24
  triggerctl add --from triggers.jsonl
  triggerctl --json history --all -i wlan0 | triggerctl add --from -

--from reads one trigger per line in the JSON form `--json` prints; blank \
lines, lines starting with # and history's {\"next_cursor\":...} lines are \
skipped. `id` is ignored (the database \
assigns ids), `source` defaults to client and `observed_at` to the time the \
daemon receives it. Lines are checked and sent in batches of up to 1000, each \
acknowledged by the daemon; a bad line is reported as FILE:LINE: FIELD: \
problem and stops the input before its batch is sent (earlier batches stay \
added). Only sources client and ieee802-21 can be added.

Output: `added trigger ID` per trigger from flags, a line per batch from \
--from; --json prints {\"id\":ID} (with \"line\":N for --from) per trigger.

Reasons (--reason NAME or number; 128..255 vendor specific):
  link-down:       explicit-disconnect packet-timeout no-resource no-broadcast
                   authentication-failure billing-failure
  link-going-down: explicit-disconnect link-parameter-degrading low-power no-resource
Parameters (--param NAME=VALUE[UNIT], units dbm db % kbps): data-rate, \
signal-strength, sinr, throughput, packet-error-rate.";

const FLUSH_HELP: &str = "\
Examples:
  triggerctl flush -i veth-test
  triggerctl flush --before 30days --yes
  triggerctl flush --yes                      # everything

A flush without --interface/--type/--source needs --yes. Prints the number \
deleted; --json prints {\"deleted\":N}.";

const LINKS_HELP: &str = "\
Columns: INDEX, NAME, KIND, STATE (admin up/down), CARRIER, OPER (RFC 2863 \
operational state), MTU, ADDRESSES (with flags such as [tentative]).

--json prints one object per link: {\"interface\":{...},\"state\":{\"admin_up\",\
\"carrier\",\"oper_state\",\"mtu\",\"mac\"},\"up\":BOOL,\"addresses\":[...],\
\"last_change\":TIME}.";

const STATS_HELP: &str = "\
--json prints one object: stored_triggers, first_id, last_id, database_bytes, \
subscribers, gap_notices, resyncs, ingested_total, retention_deleted, \
rejected_requests, netlink_parse_errors, debounced, suppressed_flaps, \
write_errors, unstored_triggers, uptime_s, by_source / by_type / bad_input_by_source (objects of name -> \
count; bad input: netlink attributes or D-Bus values a source could not \
use), and flaps (a list \
of {\"interface\",\"in_window\",\"total\",\"window_s\"}: link-downs in the \
last window and since the daemon started).

debounced: source triggers replaced by a newer one while the [damping] \
debounce held them; suppressed_flaps: link-downs and link-ups dropped because \
the link came back to its state within the debounce. write_errors: store \
commits that failed (Add callers got the error); unstored_triggers: source \
triggers those failures lost (a RESYNC with cause store-error follows once \
the store works again).";

#[derive(Debug, Args)]
pub(crate) struct AddArgs {
    #[command(flatten)]
    pub(crate) flags: AddFlags,
    /// Read triggers from this file of JSON lines, or `-` for stdin.
    #[arg(long, value_name = "FILE")]
    pub(crate) from: Option<PathBuf>,
}

/// One trigger from flags.
#[derive(Debug, Args)]
#[group(id = "trigger-flags", multiple = true, conflicts_with = "from")]
pub(crate) struct AddFlags {
    /// Trigger type, e.g. link-going-down, link-down, link-up,
    /// link-parameters-report, link-handover-imminent, if-addr-added.
    #[arg(
        long = "type",
        short = 't',
        value_name = "TYPE",
        required_unless_present = "from"
    )]
    kind: Option<TriggerType>,
    /// Interface name.
    #[arg(long, short = 'i', value_name = "NAME")]
    interface: Option<String>,
    /// Interface index (ifindex).
    #[arg(long, value_name = "N")]
    index: Option<u32>,
    /// Interface kind (ethernet, wlan, wwan, tunnel, ...).
    #[arg(long = "kind", value_name = "KIND")]
    iface_kind: Option<InterfaceKind>,
    /// IEEE 802.21 link type (ieee802-11, lte, umts, ethernet, ...).
    #[arg(long, value_name = "LINK_TYPE")]
    link_type: Option<LinkType>,
    /// Address, `IP/LEN` (a bare IP is /32 or /128).
    #[arg(long, value_name = "IP/LEN")]
    address: Option<String>,
    /// Reason, by name or number, in the code book of the type (link-down,
    /// link-going-down only).
    #[arg(long, value_name = "NAME|NUM")]
    reason: Option<String>,
    /// link-going-down: time until the link is expected to go down (500ms, 2s).
    #[arg(long, value_name = "DURATION", value_parser = time::parse_interval_ms)]
    time_interval: Option<u32>,
    /// link-parameters-report: a parameter, NAME=VALUE[UNIT] (repeat).
    #[arg(long = "param", value_name = "NAME=VALUE", value_parser = add::parse_param)]
    params: Vec<LinkParameter>,
    /// Handover: the link being left.
    #[arg(long, value_name = "NAME")]
    old_link: Option<String>,
    /// Handover: the link being moved to.
    #[arg(long, value_name = "NAME")]
    new_link: Option<String>,
    /// Completed move: the local address before it.
    #[arg(long, value_name = "IP")]
    old_local: Option<IpAddr>,
    /// Completed move: the peer's address before it.
    #[arg(long, value_name = "IP")]
    old_remote: Option<IpAddr>,
    /// Completed move: the local address after it.
    #[arg(long, value_name = "IP")]
    new_local: Option<IpAddr>,
    /// Completed move: the peer's address after it.
    #[arg(long, value_name = "IP")]
    new_remote: Option<IpAddr>,
    /// Completed move: how long it took (1500us, 2ms; a bare number is ms).
    #[arg(long, value_name = "DURATION", value_parser = time::parse_duration_us)]
    duration: Option<u64>,
    /// Completed move: why (link-down, address-gone, predicted, better, ...).
    #[arg(long, value_name = "TOKEN")]
    move_reason: Option<String>,
    /// Completed move: the id of the trigger that caused it.
    #[arg(long, value_name = "ID")]
    cause: Option<u64>,
    /// client (default) or ieee802-21.
    #[arg(long, value_name = "SOURCE")]
    source: Option<Source>,
    /// Free text naming the origin (the daemon may record the peer instead).
    #[arg(long, value_name = "TEXT")]
    origin: Option<String>,
    /// When it was observed [default: when the daemon receives it].
    #[arg(long, value_name = "TIME", value_parser = time::parse_time)]
    observed_at: Option<Timestamp>,
}

impl AddFlags {
    pub(crate) fn to_flags(&self) -> TriggerFlags {
        TriggerFlags {
            kind: self.kind,
            interface: self.interface.clone(),
            index: self.index,
            iface_kind: self.iface_kind,
            link_type: self.link_type,
            address: self.address.clone(),
            reason: self.reason.clone(),
            time_interval_ms: self.time_interval,
            params: self.params.clone(),
            old_link: self.old_link.clone(),
            new_link: self.new_link.clone(),
            moved: add::MoveFlags {
                old_local: self.old_local,
                old_remote: self.old_remote,
                new_local: self.new_local,
                new_remote: self.new_remote,
                duration_us: self.duration,
                move_reason: self.move_reason.clone(),
                cause: self.cause,
            },
            source: self.source,
            origin: self.origin.clone(),
            observed_at: self.observed_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("triggerctl").chain(args.iter().copied()))
    }

    #[test]
    fn add_flags_reach_the_wire() {
        let cli = parse(&[
            "--socket",
            "/tmp/s",
            "add",
            "--type",
            "link-going-down",
            "--interface",
            "wlan0",
            "--time-interval",
            "500ms",
            "--reason",
            "link-parameter-degrading",
        ])
        .unwrap();
        assert_eq!(cli.socket, Some(PathBuf::from("/tmp/s")));
        let Command::Add(a) = cli.command else {
            panic!()
        };
        let w = add::build(&a.flags.to_flags()).unwrap();
        assert_eq!(w.r#type, TriggerType::LinkGoingDown.to_wire());
    }

    #[test]
    fn add_needs_type_or_from_but_not_both() {
        assert!(parse(&["add", "-i", "wlan0"]).is_err());
        assert!(parse(&["add", "--from", "-", "--type", "link-up"]).is_err());
        assert!(parse(&["add", "--from", "x.jsonl"]).is_ok());
        assert!(parse(&["add", "--type", "link-upp"]).is_err());
        assert!(
            parse(&[
                "add",
                "--type",
                "link-going-down",
                "--time-interval",
                "soon"
            ])
            .is_err()
        );
    }

    #[test]
    fn filters_repeat_and_split_on_commas() {
        let cli = parse(&[
            "watch",
            "-i",
            "wlan0,wwan0",
            "-t",
            "link-down",
            "--type",
            "LINK_UP",
            "-s",
            "rtnetlink",
            "--since",
            "10m",
        ])
        .unwrap();
        let Command::Watch { filter, since, .. } = cli.command else {
            panic!()
        };
        let f = filter.filter();
        assert_eq!(f.interfaces, ["wlan0", "wwan0"]);
        assert_eq!(f.types, [TriggerType::LinkDown, TriggerType::LinkUp]);
        assert_eq!(f.sources, [Source::Rtnetlink]);
        assert!(since.is_some());
        assert!(parse(&["watch", "--since", "1h", "--resume-after", "5"]).is_err());
    }

    #[test]
    fn threshold_flags_reach_the_wire() {
        let cli = parse(&[
            "threshold",
            "set",
            "--interface",
            "wlan0",
            "--param",
            "signal-strength",
            "--below",
            "-78",
            "--hysteresis",
            "5",
            "--one-shot",
        ])
        .unwrap();
        let Command::Threshold(ThresholdCommand::Set(a)) = cli.command else {
            panic!()
        };
        let w = threshold::set_wire(&a.flags());
        assert_eq!(
            w.scope,
            Some(trigger_proto::v1::threshold::Scope::Interface(
                "wlan0".into()
            ))
        );
        assert_eq!(w.value, Some(-78.0));
        assert_eq!(w.hysteresis, 5.0);
        assert_eq!(
            w.direction,
            trigger_proto::v1::ThresholdDirection::Below as i32
        );
        assert_eq!(w.action, trigger_proto::v1::ThresholdAction::OneShot as i32);

        let cli = parse(&[
            "threshold",
            "set",
            "--link-type",
            "ieee802-11",
            "--param",
            "sinr",
            "--above",
            "20",
        ])
        .unwrap();
        let Command::Threshold(ThresholdCommand::Set(a)) = cli.command else {
            panic!()
        };
        let w = threshold::set_wire(&a.flags());
        assert_eq!(
            w.scope,
            Some(trigger_proto::v1::threshold::Scope::LinkType(
                LinkType::Ieee802_11.to_wire()
            ))
        );
        assert_eq!(
            w.direction,
            trigger_proto::v1::ThresholdDirection::Above as i32
        );
        assert_eq!(w.hysteresis, 0.0);
        assert_eq!(w.action, trigger_proto::v1::ThresholdAction::Normal as i32);

        let cli = parse(&[
            "threshold",
            "clear",
            "-i",
            "wlan0",
            "--param",
            "signal-strength",
            "--value",
            "40",
        ])
        .unwrap();
        let Command::Threshold(ThresholdCommand::Clear(a)) = cli.command else {
            panic!()
        };
        let w = threshold::clear_wire(&a.scope.scope(), a.param, a.value);
        assert_eq!(w.value, Some(40.0));
        assert_eq!(w.action, trigger_proto::v1::ThresholdAction::Cancel as i32);
    }

    #[test]
    fn threshold_flags_are_checked() {
        let base = [
            "threshold",
            "set",
            "-i",
            "wlan0",
            "--param",
            "signal-strength",
        ];
        let with = |extra: &[&str]| {
            let mut v = base.to_vec();
            v.extend_from_slice(extra);
            parse(&v)
        };
        assert!(with(&["--below", "40"]).is_ok());
        // exactly one direction
        assert!(with(&[]).is_err());
        assert!(with(&["--below", "40", "--above", "50"]).is_err());
        // exactly one scope
        assert!(parse(&["threshold", "set", "--param", "sinr", "--below", "3"]).is_err());
        assert!(with(&["--below", "40", "--link-type", "lte"]).is_err());
        assert!(with(&["--below", "nan"]).is_err());
        assert!(with(&["--below", "40", "--hysteresis", "-1"]).is_err());
        assert!(
            parse(&[
                "threshold",
                "set",
                "-i",
                "x",
                "--param",
                "loudness",
                "--below",
                "1"
            ])
            .is_err()
        );
        assert!(parse(&["threshold", "clear", "-i", "wlan0"]).is_err());
        assert!(parse(&["threshold", "list"]).is_ok());
    }

    #[test]
    fn flaps_flags() {
        let cli = parse(&[
            "flaps",
            "--since",
            "2h",
            "--bucket",
            "5m",
            "-i",
            "wlan0,eth0",
        ])
        .unwrap();
        let Command::Flaps {
            bucket,
            interfaces,
            until,
            ..
        } = cli.command
        else {
            panic!()
        };
        assert_eq!(bucket, 300);
        assert_eq!(interfaces, ["wlan0", "eth0"]);
        assert_eq!(until, None);
        let Command::Flaps { bucket, .. } = parse(&["flaps"]).unwrap().command else {
            panic!()
        };
        assert_eq!(bucket, 300);
        assert!(parse(&["flaps", "--bucket", "0s"]).is_err());
        assert!(parse(&["flaps", "--bucket", "1500ms"]).is_err());
        assert!(parse(&["flaps", "--bucket", "often"]).is_err());
    }

    #[test]
    fn hosts_are_repeatable_or_all_but_not_both() {
        let Command::History { hosts, .. } = parse(&["history", "--host", "a", "--host", "b,c"])
            .unwrap()
            .command
        else {
            panic!()
        };
        assert_eq!(hosts.hosts, ["a", "b", "c"]);
        assert!(hosts.several());
        let Command::History { hosts, .. } = parse(&["history", "--host", "a", "--host", "a"])
            .unwrap()
            .command
        else {
            panic!()
        };
        assert!(!hosts.several());
        assert!(parse(&["history", "--host", "a", "--all-hosts"]).is_err());
        let Command::Flaps { hosts, by_host, .. } = parse(&["flaps", "--all-hosts", "--by-host"])
            .unwrap()
            .command
        else {
            panic!()
        };
        assert!(hosts.all_hosts && by_host);
    }

    #[test]
    fn history_limit_is_bounded() {
        assert!(parse(&["history", "--limit", "0"]).is_err());
        assert!(parse(&["history", "--limit", "1001"]).is_err());
        assert!(parse(&["history", "-n", "1000", "--json"]).is_ok());
    }
}
