//! `triggerctl`: the admin CLI of trigger-db. It watches, queries, adds,
//! gets, deletes and flushes triggers, shows links and counters and
//! configures link-parameter thresholds, over the
//! daemon's Unix socket; a table for people, `--json` (one object per line)
//! for scripts.
//!
//! This file runs a parsed command and maps the outcome to the exit code;
//! the command line is `triggerctl/cli.rs`, the verbs are in
//! `triggerctl/verbs.rs`, `triggerctl/watch.rs`, `triggerctl/threshold.rs`
//! and `triggerctl/timeline/` (the SVG timeline),
//! input parsing in `triggerctl/add.rs` and `triggerctl/time.rs`, formatting
//! in `triggerctl/output.rs`. It does not decide anything about triggers: the
//! daemon validates and stores, triggerctl only checks early to give
//! better errors.

#[path = "triggerctl/add.rs"]
mod add;
#[path = "triggerctl/cli.rs"]
mod cli;
#[path = "triggerctl/output.rs"]
mod output;
#[path = "triggerctl/threshold.rs"]
mod threshold;
#[path = "triggerctl/time.rs"]
mod time;
#[path = "triggerctl/timeline/mod.rs"]
mod timeline;
#[path = "triggerctl/verbs.rs"]
mod verbs;
#[path = "triggerctl/watch.rs"]
mod watch;

use std::{process::ExitCode, time::Duration};

use clap::Parser;
use tokio::io::BufReader;

use crate::{
    add::BatchReader,
    cli::{Cli, Command, ThresholdCommand},
    output::Out,
};

/// How long `add --from -` waits for more lines before sending a partial batch.
const STDIN_IDLE_FLUSH: Duration = Duration::from_millis(200);

async fn run(cli: Cli) -> anyhow::Result<()> {
    let out = Out { json: cli.json };
    // Check what can be checked before connecting.
    let add_input = match &cli.command {
        Command::Add(a) => match &a.from {
            None => None,
            Some(p) if p.as_os_str() == "-" => Some(BatchReader::new(
                Box::new(BufReader::new(tokio::io::stdin()))
                    as Box<dyn tokio::io::AsyncBufRead + Unpin + Send>,
                "<stdin>".to_owned(),
                Some(STDIN_IDLE_FLUSH),
            )),
            Some(p) => {
                let f = tokio::fs::File::open(p)
                    .await
                    .map_err(|e| anyhow::anyhow!("add: cannot open {}: {e}", p.display()))?;
                Some(BatchReader::new(
                    Box::new(BufReader::new(f)) as Box<dyn tokio::io::AsyncBufRead + Unpin + Send>,
                    p.display().to_string(),
                    None,
                ))
            }
        },
        _ => None,
    };
    let add_wire = match &cli.command {
        Command::Add(a) if a.from.is_none() => {
            Some(add::build(&a.flags.to_flags()).map_err(|e| anyhow::anyhow!("add: {e}"))?)
        }
        Command::Flush {
            filter,
            before,
            yes,
        } => {
            verbs::flush_check(filter.is_empty(), *before, *yes)?;
            None
        }
        Command::Timeline(a) => {
            timeline::check(a)?;
            None
        }
        _ => None,
    };
    let socket = cli.socket.unwrap_or_else(trigger_client::socket_from_env);
    let mut c = trigger_client::connect(&socket).await?;
    match cli.command {
        Command::Watch {
            filter,
            since,
            resume_after,
            snapshot,
            no_reconnect,
        } => {
            let opts = watch::WatchOpts {
                filter: filter.filter(),
                since,
                resume_after,
                snapshot,
                reconnect: !no_reconnect,
            };
            tokio::select! {
                r = watch::watch(&mut c, &out, opts) => r,
                _ = tokio::signal::ctrl_c() => Ok(()),
            }
        }
        Command::History {
            filter,
            since,
            until,
            limit,
            cursor,
            all,
            reverse,
            hosts,
        } => {
            let opts = verbs::HistoryOpts {
                filter: filter.filter(),
                since,
                until,
                limit: limit.unwrap_or(if all { 1000 } else { 50 }),
                cursor,
                all,
                reverse,
                hosts,
            };
            tokio::select! {
                r = verbs::history(&mut c, &out, opts) => r,
                _ = tokio::signal::ctrl_c() => Ok(()),
            }
        }
        Command::Add(_) => match (add_input, add_wire) {
            (Some(input), _) => verbs::add_from(&mut c, &out, input).await,
            (None, Some(wire)) => verbs::add_one(&mut c, &out, wire).await,
            (None, None) => Ok(()),
        },
        Command::Get { id } => verbs::get(&mut c, &out, id).await,
        Command::Delete { ids } => verbs::delete(&mut c, &out, ids).await,
        Command::Flush { filter, before, .. } => {
            verbs::flush(&mut c, &out, filter.filter(), before).await
        }
        Command::Links => verbs::links(&mut c, &out).await,
        Command::Stats => verbs::stats(&mut c, &out).await,
        Command::Threshold(ThresholdCommand::Set(a)) => {
            threshold::set(&mut c, &out, &a.flags()).await
        }
        Command::Threshold(ThresholdCommand::List) => threshold::list(&mut c, &out).await,
        Command::Flaps {
            since,
            until,
            bucket,
            interfaces,
            hosts,
            by_host,
        } => {
            let opts = verbs::FlapsOpts {
                since,
                until,
                bucket_s: bucket,
                interfaces,
                hosts,
                by_host,
            };
            verbs::flaps(&mut c, &out, opts).await
        }
        Command::Timeline(a) => timeline::timeline(&mut c, &out, a).await,
        Command::Threshold(ThresholdCommand::Clear(a)) => {
            threshold::clear(&mut c, &out, &a.scope.scope(), a.param, a.value).await
        }
    }
}

/// Whether the error is stdout going away (`| head`): not a failure.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("triggerctl: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            let msg = format!("{e:#}").replace('\n', " ");
            eprintln!("triggerctl: {msg}");
            ExitCode::FAILURE
        }
    }
}
